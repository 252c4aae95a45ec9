//! RFC 4180 records as spreadsheets write them: fields separated by `,`, records by CRLF or LF; a field
//! in double quotes may hold commas, line breaks and `""` (one quote). A quote inside an unquoted field,
//! or a quoted field never closed, refuses the whole file: the rows after it could not be read the way
//! the sender's spreadsheet shows them. Blank lines are skipped (Excel leaves one at the end).

use super::FileError;

/// One record and the row number a spreadsheet shows for it (header = 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub line: usize,
    pub fields: Vec<String>,
}

pub fn records(text: &str) -> Result<Vec<Record>, FileError> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 0;
    loop {
        // Skip blank lines between records.
        while matches!(chars.peek(), Some('\r' | '\n')) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        line += 1;
        let mut fields = Vec::new();
        let mut field = String::new();
        let mut quoted_field = false;
        loop {
            match chars.next() {
                None => {
                    fields.push(std::mem::take(&mut field));
                    out.push(Record { line, fields });
                    return Ok(out);
                }
                Some('"') if field.is_empty() && !quoted_field => {
                    quoted_field = true;
                    loop {
                        match chars.next() {
                            None => return Err(FileError::UnterminatedQuote { line }),
                            Some('"') if chars.peek() == Some(&'"') => {
                                chars.next();
                                field.push('"');
                            }
                            Some('"') => break,
                            Some(c) => field.push(c),
                        }
                    }
                    // After the closing quote: a separator, the record's end, or the file's end.
                    match chars.peek() {
                        None | Some(',' | '\r' | '\n') => {}
                        Some(_) => return Err(FileError::StrayQuote { line }),
                    }
                }
                Some('"') => return Err(FileError::StrayQuote { line }),
                Some(',') => {
                    fields.push(std::mem::take(&mut field));
                    quoted_field = false;
                }
                Some('\r') if chars.peek() == Some(&'\n') => {}
                Some('\n' | '\r') => {
                    fields.push(std::mem::take(&mut field));
                    break;
                }
                Some(c) => {
                    if quoted_field {
                        return Err(FileError::StrayQuote { line });
                    }
                    field.push(c);
                }
            }
        }
        out.push(Record { line, fields });
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn fields(text: &str) -> Vec<Vec<String>> {
        records(text)
            .unwrap()
            .into_iter()
            .map(|r| r.fields)
            .collect()
    }

    #[test]
    fn quoted_fields_keep_commas_quotes_and_line_breaks() {
        assert_eq!(
            fields("a,b\r\n\"x,1\",\"say \"\"hi\"\"\"\r\n\"two\nlines\",\r\n"),
            vec![
                vec!["a".to_string(), "b".into()],
                vec!["x,1".into(), "say \"hi\"".into()],
                vec!["two\nlines".into(), "".into()],
            ]
        );
    }

    #[test]
    fn rows_are_numbered_as_a_spreadsheet_shows_them() {
        let lines: Vec<usize> = records("h\n\"a\nb\"\n\nc\n")
            .unwrap()
            .iter()
            .map(|r| r.line)
            .collect();
        assert_eq!(lines, [1, 2, 3]);
    }

    #[test]
    fn malformed_quoting_refuses_the_file() {
        assert_eq!(
            records("h\n\"open,x\n"),
            Err(FileError::UnterminatedQuote { line: 2 })
        );
        assert_eq!(
            records("h\nab\"c\n"),
            Err(FileError::StrayQuote { line: 2 })
        );
        assert_eq!(
            records("h\n\"a\"b\n"),
            Err(FileError::StrayQuote { line: 2 })
        );
    }

    /// A spreadsheet's way of writing a cell: quoted when it must be.
    fn write_cell(cell: &str) -> String {
        if cell.contains([',', '"', '\r', '\n']) || cell.is_empty() {
            format!("\"{}\"", cell.replace('"', "\"\""))
        } else {
            cell.to_string()
        }
    }

    proptest! {
        /// Whatever the cells hold, writing them as a spreadsheet does and reading them back gives the
        /// same cells, in the same rows.
        #[test]
        fn what_a_spreadsheet_writes_reads_back_unchanged(
            rows in prop::collection::vec(prop::collection::vec("[a-z0-9 ,\"\r\n=+@\u{3042}-\u{3093}]{0,8}", 1..6), 1..6),
            crlf in any::<bool>(),
        ) {
            let eol = if crlf { "\r\n" } else { "\n" };
            let text: String = rows.iter()
                .map(|r| r.iter().map(|c| write_cell(c)).collect::<Vec<_>>().join(",") + eol)
                .collect();
            prop_assert_eq!(fields(&text), rows);
        }

        /// Any text either parses or is refused with a row number; it never panics.
        #[test]
        fn any_text_is_parsed_or_refused(text in "[a,\"\r\n]{0,40}") {
            let _ = records(&text);
        }
    }
}
