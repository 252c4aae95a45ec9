//! The per-row report of a run, as JSON and as CSV (formula-safe, UTF-8 with BOM so Excel in Japan
//! opens it as UTF-8). It names rows by their spreadsheet row and user_id; it never holds a cell's
//! content beyond the user_id, so no personal data of a rejected row is copied.

use gateway_shared::provisioning::export;
use gateway_shared::provisioning::plan::{Change, PlannedRow};
use gateway_shared::provisioning::Rejection;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct RowResult {
    pub line: usize,
    pub user_id: Option<String>,
    /// created | updated | unchanged | rejected | failed
    pub result: &'static str,
    /// What changed, or why the row was refused or failed.
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub source_key: String,
    pub dry_run: bool,
    /// The file's encoding, or null when the file was refused whole.
    pub encoding: Option<&'static str>,
    /// Why the whole file was refused (nothing applied); null otherwise.
    pub file_error: Option<String>,
    pub today: String,
    pub counts: Counts,
    pub rows: Vec<RowResult>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub rejected: usize,
    pub failed: usize,
}

impl Report {
    pub fn add_planned(&mut self, row: &PlannedRow, failure: Option<String>) {
        let (result, detail) = match (&row.change, failure) {
            (_, Some(error)) => ("failed", error),
            (
                Change::Create {
                    enabled,
                    department,
                    ..
                },
                None,
            ) => (
                "created",
                format!(
                    "department {department}, {} ({})",
                    if *enabled { "enabled" } else { "disabled" },
                    row.why
                ),
            ),
            (
                Change::Update {
                    attributes,
                    move_department,
                    set_enabled,
                },
                None,
            ) => {
                let mut parts: Vec<String> = Vec::new();
                if !attributes.is_empty() {
                    parts.push(format!(
                        "attributes {}",
                        attributes.keys().cloned().collect::<Vec<_>>().join(" ")
                    ));
                }
                if let Some((_, to)) = move_department {
                    parts.push(format!("moved to department {to}"));
                }
                match set_enabled {
                    Some(true) => parts.push(format!("enabled ({})", row.why)),
                    Some(false) => parts.push(format!("disabled ({})", row.why)),
                    None => {}
                }
                ("updated", parts.join("; "))
            }
            (Change::Unchanged, None) => ("unchanged", String::new()),
        };
        match result {
            "created" => self.counts.created += 1,
            "updated" => self.counts.updated += 1,
            "unchanged" => self.counts.unchanged += 1,
            _ => self.counts.failed += 1,
        }
        self.rows.push(RowResult {
            line: row.line,
            user_id: Some(row.user_id.clone()),
            result,
            detail,
        });
    }

    pub fn add_rejected(&mut self, rejection: &Rejection) {
        self.counts.rejected += 1;
        self.rows.push(RowResult {
            line: rejection.line,
            user_id: rejection.user_id.clone(),
            result: "rejected",
            detail: rejection.reasons.join("; "),
        });
    }

    pub fn csv(&self) -> Vec<u8> {
        let mut out = "\u{FEFF}".to_string();
        out.push_str(&export::line(&["line", "user_id", "result", "detail"]));
        if let Some(error) = &self.file_error {
            out.push_str(&export::line(&["", "", "file refused", error.as_str()]));
        }
        let mut rows = self.rows.clone();
        rows.sort_by_key(|r| r.line);
        for row in rows {
            out.push_str(&export::line(&[
                row.line.to_string().as_str(),
                row.user_id.as_deref().unwrap_or(""),
                row.result,
                row.detail.as_str(),
            ]));
        }
        out.into_bytes()
    }
}
