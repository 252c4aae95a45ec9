//! Cells on the way out (user downloads, row reports): a value a spreadsheet would run as a formula is
//! written with a leading `'`, which spreadsheets show as text; a value with a separator, quote or line
//! break is quoted. Control characters other than line breaks are dropped: a report names them, it
//! does not reproduce them.

pub fn cell(value: &str) -> String {
    let mut text: String = value
        .chars()
        .filter(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t'))
        .collect();
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        text.insert(0, '\'');
    }
    if text.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

/// One CSV line (CRLF, as spreadsheets write it) from values.
pub fn line<S: AsRef<str>>(values: &[S]) -> String {
    let mut out = values
        .iter()
        .map(|v| cell(v.as_ref()))
        .collect::<Vec<_>>()
        .join(",");
    if out.is_empty() {
        // A record of one empty cell, not a blank line (which readers skip).
        out.push_str("\"\"");
    }
    out.push_str("\r\n");
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::provisioning::csv::records;

    #[test]
    fn formulas_are_neutralised_and_separators_quoted() {
        assert_eq!(cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(cell("+81 3 1234"), "'+81 3 1234");
        assert_eq!(cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(cell("山田, 太郎"), "\"山田, 太郎\"");
        assert_eq!(cell("plain"), "plain");
        assert_eq!(cell("a\u{7}b"), "ab");
    }

    proptest! {
        /// Whatever a cell holds, the exported line reads back as one record whose cells a
        /// spreadsheet would not run as formulas.
        #[test]
        fn exported_cells_read_back_and_never_start_a_formula(
            values in prop::collection::vec("[=+@\\-\t\r\n,\"a-z\u{3042}\u{7}]{0,10}", 1..8),
        ) {
            let parsed = records(&line(&values)).unwrap();
            prop_assert_eq!(parsed.len(), 1);
            prop_assert_eq!(parsed[0].fields.len(), values.len());
            for field in &parsed[0].fields {
                prop_assert!(!field.starts_with(['=', '+', '-', '@', '\t', '\r']), "{:?}", field);
            }
        }
    }
}
