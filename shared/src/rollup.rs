//! Usage rollups and chargeback, from the audit trail: every request's outcome (its final record, or
//! the incomplete record the digest job made for it) summed per department, user, provider and model.
//!
//! The audit trail is the source of truth: a rollup reads the events of one UTC day (by their own
//! time, from the partitions they were written in: that day's hours and the first hours after it),
//! counts each event once (by `event_id`: a retried write may store an event twice), and keeps its
//! totals beside the rows, so a report's totals are the events' totals. A month's chargeback is the
//! sum of its days' rollups.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::audit::{AuditEvent, Decision, Record};
use crate::provisioning::export;
use crate::Provider;

/// Who and what one row is for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RowKey {
    /// `(none)` for callers in no department.
    pub department: String,
    /// The principal's subject: a user's `sub`, or `apikey:<id>`.
    pub subject: String,
    pub username: String,
    pub provider: String,
    pub model: String,
}

/// Counts of one row, or of a whole report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Requests let through (their outcome: completed, failed upstream, cut, incomplete).
    pub requests: u64,
    /// Requests the gateway refused (policy, budget, bad input): charged nothing.
    pub refused: u64,
    pub input_tokens: u64,
    /// Of `input_tokens`, those read from a provider's prompt cache (billed at the cached rate).
    #[serde(default)]
    pub cached_input_tokens: u64,
    pub output_tokens: u64,
    pub total_tokens: u64,
    /// Micro-dollars, each event's cost rounded to the nearest micro-dollar.
    pub cost_micros: u64,
    /// Requests with usage the price table does not price: their tokens count, their cost is unknown.
    pub unpriced_requests: u64,
    /// Requests whose usage the gateway estimated (the provider reported none).
    pub estimated_requests: u64,
    /// Requests whose outcome never came (the digest job's incomplete records).
    pub incomplete_requests: u64,
}

impl Totals {
    fn add_event(&mut self, event: &AuditEvent) {
        if event.decision != Decision::Allow && event.usage.is_none() {
            self.refused += 1;
            return;
        }
        self.requests += 1;
        if event.record == Record::Incomplete {
            self.incomplete_requests += 1;
        }
        if let Some(usage) = &event.usage {
            self.input_tokens += usage.input_tokens;
            self.cached_input_tokens += usage.cached_input_tokens;
            self.output_tokens += usage.output_tokens;
            self.total_tokens += usage
                .total_tokens
                .max(usage.input_tokens + usage.output_tokens);
            if usage.estimated {
                self.estimated_requests += 1;
            }
            match event.cost_usd {
                Some(cost) => self.cost_micros += (cost * 1_000_000.0).round().max(0.0) as u64,
                None => self.unpriced_requests += 1,
            }
        }
    }

    pub fn add(&mut self, other: &Totals) {
        self.requests += other.requests;
        self.refused += other.refused;
        self.input_tokens += other.input_tokens;
        self.cached_input_tokens += other.cached_input_tokens;
        self.output_tokens += other.output_tokens;
        self.total_tokens += other.total_tokens;
        self.cost_micros += other.cost_micros;
        self.unpriced_requests += other.unpriced_requests;
        self.estimated_requests += other.estimated_requests;
        self.incomplete_requests += other.incomplete_requests;
    }

    pub fn cost_usd(&self) -> f64 {
        self.cost_micros as f64 / 1_000_000.0
    }
}

/// One period's rollup: rows and their totals, and what it was made from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rollup {
    /// `YYYY-MM-DD` or `YYYY-MM`.
    pub period: String,
    pub rows: BTreeMap<String, (RowKey, Totals)>,
    pub totals: Totals,
    /// Events counted (each once).
    pub events: u64,
    /// Lines in the read objects that were not audit events.
    pub unreadable: u64,
}

const NO_DEPARTMENT: &str = "(none)";

/// Whether an event is a request's outcome on a provider route (what chargeback counts).
pub fn is_outcome(event: &AuditEvent) -> bool {
    matches!(event.record, Record::Final | Record::Incomplete)
        && event.admin.is_none()
        && event
            .provider
            .as_deref()
            .is_some_and(|p| Provider::ALL.iter().any(|x| x.route_prefix() == p))
}

impl Rollup {
    pub fn new(period: &str) -> Rollup {
        Rollup {
            period: period.to_string(),
            ..Default::default()
        }
    }

    /// Adds `events` whose time falls in this rollup's period, each once: `seen` holds the event
    /// ids already counted.
    pub fn add_events(
        &mut self,
        events: impl IntoIterator<Item = AuditEvent>,
        seen: &mut std::collections::HashSet<String>,
    ) {
        for event in events {
            if !is_outcome(&event)
                || !event.time.starts_with(&self.period)
                || !seen.insert(event.event_id.clone())
            {
                continue;
            }
            let principal = event.principal.as_ref();
            let key = RowKey {
                department: principal
                    .and_then(|p| p.department.clone())
                    .unwrap_or_else(|| NO_DEPARTMENT.into()),
                subject: principal.map(|p| p.subject.clone()).unwrap_or_default(),
                username: principal
                    .and_then(|p| p.username.clone())
                    .unwrap_or_default(),
                provider: event.provider.clone().unwrap_or_default(),
                model: event.model.clone().unwrap_or_default(),
            };
            let id = row_id(&key);
            let row = self
                .rows
                .entry(id)
                .or_insert_with(|| (key, Totals::default()));
            row.1.add_event(&event);
            self.totals.add_event(&event);
            self.events += 1;
        }
    }

    /// Adds another period's rollup (a day's, into its month's).
    pub fn merge(&mut self, other: &Rollup) {
        for (id, (key, totals)) in &other.rows {
            self.rows
                .entry(id.clone())
                .or_insert_with(|| (key.clone(), Totals::default()))
                .1
                .add(totals);
        }
        self.totals.add(&other.totals);
        self.events += other.events;
        self.unreadable += other.unreadable;
    }

    /// Totals per department.
    pub fn departments(&self) -> BTreeMap<String, Totals> {
        let mut by = BTreeMap::<String, Totals>::new();
        for (key, totals) in self.rows.values() {
            by.entry(key.department.clone()).or_default().add(totals);
        }
        by
    }

    /// The report as JSON: totals, per department, and rows.
    pub fn report_json(&self, generated_at: &str) -> serde_json::Value {
        let totals = |t: &Totals| {
            let mut value = serde_json::to_value(t).unwrap_or_default();
            value["cost_usd"] = serde_json::json!(t.cost_usd());
            value
        };
        serde_json::json!({
            "period": self.period,
            "currency": "USD",
            "generated_at": generated_at,
            "events": self.events,
            "unreadable_lines": self.unreadable,
            "totals": totals(&self.totals),
            "departments": self.departments().iter().map(|(d, t)| {
                let mut v = totals(t);
                v["department"] = d.clone().into();
                v
            }).collect::<Vec<_>>(),
            "rows": self.rows.values().map(|(key, t)| {
                let mut v = totals(t);
                for (name, value) in [("department", &key.department), ("subject", &key.subject),
                                      ("username", &key.username), ("provider", &key.provider),
                                      ("model", &key.model)] {
                    v[name] = value.clone().into();
                }
                v
            }).collect::<Vec<_>>(),
        })
    }

    /// The report as CSV (UTF-8 with BOM, CRLF; cells a spreadsheet would run as formulas are
    /// written as text).
    pub fn report_csv(&self) -> String {
        let mut out = String::from("\u{feff}");
        out.push_str(&export::line(&[
            "period",
            "department",
            "username",
            "subject",
            "provider",
            "model",
            "requests",
            "refused",
            "input_tokens",
            "cached_input_tokens",
            "output_tokens",
            "total_tokens",
            "cost_usd",
            "unpriced_requests",
            "estimated_requests",
            "incomplete_requests",
        ]));
        for (key, t) in self.rows.values() {
            out.push_str(&export::line(&[
                self.period.clone(),
                key.department.clone(),
                key.username.clone(),
                key.subject.clone(),
                key.provider.clone(),
                key.model.clone(),
                t.requests.to_string(),
                t.refused.to_string(),
                t.input_tokens.to_string(),
                t.cached_input_tokens.to_string(),
                t.output_tokens.to_string(),
                t.total_tokens.to_string(),
                format!("{:.6}", t.cost_usd()),
                t.unpriced_requests.to_string(),
                t.estimated_requests.to_string(),
                t.incomplete_requests.to_string(),
            ]));
        }
        out
    }
}

fn row_id(key: &RowKey) -> String {
    // Unit separators cannot occur in the parts (ids, names and model names are printable).
    [
        &key.department,
        &key.subject,
        &key.username,
        &key.provider,
        &key.model,
    ]
    .map(|s| s.as_str())
    .join("\u{1f}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Principal, Usage};

    fn event(
        id: &str,
        time: &str,
        dept: Option<&str>,
        tokens: (u64, u64),
        cost: Option<f64>,
    ) -> AuditEvent {
        let mut e = AuditEvent::new("r", Decision::Allow, 200);
        e.event_id = id.into();
        e.time = time.into();
        e.record = Record::Final;
        e.provider = Some("azure-openai".into());
        e.model = Some("gpt-4o-mini".into());
        e.principal = Some(Principal {
            subject: "s1".into(),
            username: Some("=cmd|' /C calc'!A0".into()),
            department: dept.map(str::to_string),
            client_id: None,
            auth_method: Some("cognito".into()),
        });
        e.usage = Some(Usage {
            input_tokens: tokens.0,
            output_tokens: tokens.1,
            total_tokens: tokens.0 + tokens.1,
            estimated: false,
            ..Default::default()
        });
        e.cost_usd = cost;
        e
    }

    #[test]
    fn each_event_of_the_period_counts_once_and_totals_equal_rows() {
        let mut day = Rollup::new("2026-10-05");
        let mut seen = Default::default();
        day.add_events(
            [
                event(
                    "e1",
                    "2026-10-05T01:00:00.000Z",
                    Some("sales"),
                    (10, 5),
                    Some(0.000123),
                ),
                event(
                    "e1",
                    "2026-10-05T01:00:00.000Z",
                    Some("sales"),
                    (10, 5),
                    Some(0.000123),
                ),
                event("e2", "2026-10-05T23:59:59.999Z", None, (1, 1), None),
                event(
                    "e3",
                    "2026-10-06T00:00:00.000Z",
                    Some("sales"),
                    (7, 7),
                    Some(1.0),
                ),
            ],
            &mut seen,
        );
        assert_eq!(
            day.events, 2,
            "the duplicate and the next day's event are not counted"
        );
        assert_eq!(day.totals.total_tokens, 17);
        assert_eq!(day.totals.cost_micros, 123);
        assert_eq!(day.totals.unpriced_requests, 1);
        let sum: u64 = day.rows.values().map(|(_, t)| t.total_tokens).sum();
        assert_eq!(sum, day.totals.total_tokens);
        assert_eq!(
            day.departments().keys().cloned().collect::<Vec<_>>(),
            ["(none)", "sales"]
        );
        let mut month = Rollup::new("2026-10");
        month.merge(&day);
        month.merge(&day);
        assert_eq!(month.totals.total_tokens, 34);
    }

    #[test]
    fn the_csv_never_starts_a_formula() {
        let mut day = Rollup::new("2026-10-05");
        day.add_events(
            [event(
                "e1",
                "2026-10-05T01:00:00.000Z",
                Some("sales"),
                (1, 1),
                Some(0.5),
            )],
            &mut Default::default(),
        );
        let csv = day.report_csv();
        assert!(csv.starts_with('\u{feff}'));
        assert!(csv.contains(",'=cmd|' /C calc'!A0,"), "{csv}");
        assert!(csv.contains(",0.500000,"), "{csv}");
    }
}
