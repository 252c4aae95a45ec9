//! `usage-rollup` (daily) and `chargeback` (monthly): the audit trail's request outcomes summed per
//! department, user, provider and model (`gateway_shared::rollup`), written to the reports bucket.
//!
//! - A day's rollup reads the audit objects of the partitions its events can be in (the day's hours
//!   and the first hours after it: events land in the hour they are written, seconds to minutes
//!   after they happen) and writes `reports/usage/daily/<YYYY-MM-DD>.json`.
//! - A month's chargeback rolls up each of its days again (late objects included) and writes
//!   `reports/chargeback/<YYYY-MM>/chargeback.json` and `chargeback.csv`, whose totals are the sum of
//!   the events'.
//!
//! The audit bucket is read the way the digest job reads it (a month in one listing, each object once);
//! in a deployment with more traffic than a function can read in its 15 minutes, the same sums by the
//! same rules run in Athena over the same layout: `docs/athena/chargeback.sql`.

use futures_util::stream::{self, StreamExt};
use gateway_shared::audit::clock::{self, Hour};
use gateway_shared::audit::digest::AuditStore;
use gateway_shared::provisioning::rows::Date;
use gateway_shared::rollup::Rollup;
use serde_json::{json, Value};

/// Hours after a day whose partitions may still hold its events.
const LATE_HOURS: i64 = 3;

/// Audit objects read at once.
const PARALLEL_READS: usize = 16;

pub struct Chargeback {
    pub audit: Box<dyn AuditStore>,
    pub audit_prefix: String,
    pub s3: aws_sdk_s3::Client,
    pub reports_bucket: String,
}

pub fn daily_key(day: &str) -> String {
    format!("reports/usage/daily/{day}.json")
}

pub fn chargeback_key(month: &str, extension: &str) -> String {
    format!("reports/chargeback/{month}/chargeback.{extension}")
}

/// The days of `YYYY-MM`.
pub fn days_of(month: &str) -> Option<Vec<String>> {
    let first = Date::parse(&format!("{month}-01")).filter(|_| month.len() == 7)?;
    let start = clock::millis_from_rfc3339(&format!("{first}T00:00:00Z"))?;
    Some(
        (0..31)
            .map(|d| clock::rfc3339_from_millis(start + d * 86_400_000)[..10].to_string())
            .filter(|day| day.starts_with(month))
            .collect(),
    )
}

impl Chargeback {
    async fn put(&self, key: &str, body: Vec<u8>, content_type: &str) -> Result<(), String> {
        self.s3
            .put_object()
            .bucket(&self.reports_bucket)
            .key(key)
            .content_type(content_type)
            .body(body.into())
            .send()
            .await
            .map_err(|e| format!("{key}: {}", aws_sdk_s3::error::DisplayErrorContext(e)))?;
        Ok(())
    }

    async fn put_daily(&self, rollup: &Rollup) -> Result<(), String> {
        let body = serde_json::to_vec(rollup).map_err(|e| e.to_string())?;
        self.put(&daily_key(&rollup.period), body, "application/json")
            .await?;
        tracing::info!(
            day = rollup.period,
            events = rollup.events,
            "daily usage rolled up"
        );
        Ok(())
    }

    /// Rolls up `day` (`YYYY-MM-DD`) from the audit trail and writes its daily report.
    pub async fn daily(&self, day: &str) -> Result<Rollup, String> {
        let mut rollups =
            rollup_days(self.audit.as_ref(), &self.audit_prefix, &[day.to_string()]).await?;
        let rollup = rollups.pop().ok_or("no rollup")?;
        self.put_daily(&rollup).await?;
        Ok(rollup)
    }

    /// Rolls up every day of `month` (`YYYY-MM`) again, from one reading of the month's audit
    /// objects, rewrites their daily reports and writes the month's chargeback report.
    pub async fn monthly(&self, month: &str) -> Result<Value, String> {
        let days = days_of(month).ok_or_else(|| format!("{month:?} is not a month (YYYY-MM)"))?;
        let mut total = Rollup::new(month);
        for rollup in rollup_days(self.audit.as_ref(), &self.audit_prefix, &days).await? {
            self.put_daily(&rollup).await?;
            total.merge(&rollup);
        }
        let generated_at = clock::rfc3339_now();
        let report = total.report_json(&generated_at);
        let json_key = chargeback_key(month, "json");
        let csv_key = chargeback_key(month, "csv");
        self.put(
            &json_key,
            serde_json::to_vec_pretty(&report).map_err(|e| e.to_string())?,
            "application/json",
        )
        .await?;
        self.put(
            &csv_key,
            total.report_csv().into_bytes(),
            "text/csv; charset=utf-8",
        )
        .await?;
        tracing::info!(month, events = total.events, "chargeback report written");
        Ok(json!({
            "job": "chargeback",
            "month": month,
            "events": total.events,
            "totals": report["totals"],
            "reports": [json_key, csv_key],
        }))
    }
}

/// The first hour of `day` (`YYYY-MM-DD`).
fn day_start(day: &str) -> Result<Hour, String> {
    Date::parse(day)
        .filter(|_| day.len() == 10)
        .and_then(|d| clock::millis_from_rfc3339(&format!("{d}T00:00:00Z")))
        .map(|ms| Hour::containing_millis(ms as i64))
        .ok_or_else(|| format!("{day:?} is not a day (YYYY-MM-DD)"))
}

/// The partitions (below the audit prefix) the events of `days` (consecutive, ascending) can be in:
/// their whole month when they are all of it, else each day; and the late hours after the last day
/// that those leave out.
fn partitions_of(days: &[String]) -> Result<Vec<String>, String> {
    let (Some(first), Some(last)) = (days.first(), days.last()) else {
        return Ok(Vec::new());
    };
    let whole_month = first
        .get(..7)
        .and_then(days_of)
        .is_some_and(|month| month == days);
    let mut prefixes: Vec<String> = if whole_month {
        vec![day_start(first)?.month_partition()]
    } else {
        days.iter()
            .map(|d| day_start(d).map(Hour::day_partition))
            .collect::<Result<_, _>>()?
    };
    let after = day_start(last)?;
    for late in (24..24 + LATE_HOURS).map(|h| format!("{}/", after.plus(h).partition())) {
        if !prefixes.iter().any(|p| late.starts_with(p.as_str())) {
            prefixes.push(late);
        }
    }
    Ok(prefixes)
}

/// Each of `days`' rollup (in order), from the audit objects of the partitions their events can be
/// in, each object read once: a month is one listing, not one per hour.
pub async fn rollup_days(
    audit: &dyn AuditStore,
    audit_prefix: &str,
    days: &[String],
) -> Result<Vec<Rollup>, String> {
    let mut keys = Vec::new();
    for partition in partitions_of(days)? {
        let listed = audit
            .list_latest(&format!("{audit_prefix}{partition}"))
            .await
            .map_err(|e| e.to_string())?;
        keys.extend(
            listed
                .into_iter()
                .filter(|o| !o.delete_marker)
                .map(|o| o.key),
        );
    }
    let index: std::collections::HashMap<&str, usize> = days
        .iter()
        .enumerate()
        .map(|(i, d)| (d.as_str(), i))
        .collect();
    let mut rollups: Vec<(Rollup, std::collections::HashSet<String>)> = days
        .iter()
        .map(|d| (Rollup::new(d), Default::default()))
        .collect();
    // Objects are small and many: read them a few at a time, each event going to its day's rollup in
    // whatever order they arrive (events are counted once by id, so the order changes nothing).
    // (Collected first: a closure inside the stream's type defeats the spawned futures' Send proof.)
    let reads: Vec<_> = keys.iter().map(|key| audit.get(key)).collect();
    let mut reads = stream::iter(reads).buffer_unordered(PARALLEL_READS);
    while let Some(stored) = reads.next().await {
        let Some(stored) = stored.map_err(|e| e.to_string())? else {
            continue;
        };
        let (events, unreadable) = gateway_shared::audit::read_events(&stored.bytes);
        if let Some((rollup, _)) = rollups.last_mut() {
            // Lines that cannot be read have no day: the range's last day carries them.
            rollup.unreadable += unreadable as u64;
        }
        for event in events {
            let Some(&i) = event.time.get(..10).and_then(|d| index.get(d)) else {
                continue;
            };
            let (rollup, seen) = &mut rollups[i];
            rollup.add_events(std::iter::once(event), seen);
        }
    }
    Ok(rollups.into_iter().map(|(rollup, _)| rollup).collect())
}

/// Yesterday (UTC) of `now_ms`, and the month before `now_ms`'s.
pub fn yesterday(now_ms: u64) -> String {
    clock::rfc3339_from_millis(now_ms.saturating_sub(86_400_000))[..10].to_string()
}

pub fn previous_month(now_ms: u64) -> String {
    let this = &clock::rfc3339_from_millis(now_ms)[..8];
    let first = clock::millis_from_rfc3339(&format!("{this}01T00:00:00Z")).unwrap_or(now_ms);
    clock::rfc3339_from_millis(first.saturating_sub(1))[..7].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_shared::audit::digest::memory::MemoryStore;
    use gateway_shared::audit::{AuditEvent, Decision, Principal, Record, Usage};
    use std::io::Write;

    fn gz(events: &[AuditEvent]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        for e in events {
            gz.write_all(serde_json::to_string(e).unwrap().as_bytes())
                .unwrap();
            gz.write_all(b"\n").unwrap();
        }
        gz.finish().unwrap()
    }

    fn outcome(n: u64, time: &str, department: &str) -> AuditEvent {
        let mut e = AuditEvent::new(&format!("r{n}"), Decision::Allow, 200);
        e.event_id = format!("e{n}");
        e.time = time.into();
        e.record = Record::Final;
        e.provider = Some("gemini".into());
        e.model = Some("gemini-2.0-flash".into());
        e.principal = Some(Principal {
            subject: format!("s{}", n % 3),
            username: Some(format!("u{}", n % 3)),
            department: Some(department.into()),
            client_id: None,
            auth_method: Some("cognito".into()),
        });
        e.usage = Some(Usage {
            input_tokens: n,
            output_tokens: 2 * n,
            total_tokens: 3 * n,
            estimated: false,
            ..Default::default()
        });
        e.cost_usd = Some(n as f64 / 1000.0);
        e
    }

    /// A month of events, two a day, written in their hour or the next; the last day's late events
    /// in the next month's first hour; one object written twice; other records and months around.
    #[tokio::test]
    async fn a_generated_month_rolls_up_to_its_events_totals() {
        let store = MemoryStore::new();
        let days = days_of("2026-10").unwrap();
        let (mut tokens, mut cost_micros, mut count) = (0u64, 0u64, 0u64);
        for (i, day) in days.iter().enumerate() {
            let n = i as u64 + 1;
            let early = outcome(n, &format!("{day}T05:10:00.000Z"), "sales");
            let late = outcome(100 + n, &format!("{day}T23:59:30.000Z"), "hr");
            let mut authorized = outcome(500 + n, &format!("{day}T05:09:00.000Z"), "sales");
            authorized.record = Record::Authorized;
            for e in [&early, &late] {
                tokens += e.usage.unwrap().total_tokens;
                cost_micros += (e.cost_usd.unwrap() * 1e6).round() as u64;
                count += 1;
            }
            let hour = |t: &str| Hour::parse(&t[..13]).unwrap();
            store.put(
                &format!("audit/{}/a{n}.jsonl.gz", hour(&early.time).partition()),
                gz(&[early.clone(), authorized]),
                Default::default(),
            );
            // Written after midnight: in the next day's first hour.
            store.put(
                &format!(
                    "audit/{}/b{n}.jsonl.gz",
                    hour(&late.time).next().partition()
                ),
                gz(&[late]),
                Default::default(),
            );
            if n == 3 {
                store.put(
                    &format!("audit/{}/again.jsonl.gz", hour(&early.time).partition()),
                    gz(&[early]),
                    Default::default(),
                );
            }
        }
        // The months around: not counted.
        store.put(
            "audit/year=2026/month=09/day=30/hour=23/x.jsonl.gz",
            gz(&[outcome(900, "2026-09-30T23:00:00.000Z", "sales")]),
            Default::default(),
        );
        store.put(
            "audit/year=2026/month=11/day=01/hour=00/y.jsonl.gz",
            gz(&[outcome(901, "2026-11-01T00:00:01.000Z", "sales")]),
            Default::default(),
        );
        // A month read at once, and day by day: the same sums.
        let mut month = Rollup::new("2026-10");
        for day in &days {
            let one = rollup_days(&store, "audit/", std::slice::from_ref(day))
                .await
                .unwrap();
            month.merge(&one[0]);
        }
        let mut at_once = Rollup::new("2026-10");
        for rollup in rollup_days(&store, "audit/", &days).await.unwrap() {
            at_once.merge(&rollup);
        }
        assert_eq!(at_once.totals, month.totals);
        assert_eq!(at_once.rows, month.rows);
        assert_eq!(month.events, count);
        assert_eq!(month.totals.total_tokens, tokens);
        assert_eq!(month.totals.cost_micros, cost_micros);
        assert_eq!(month.totals.requests, count);
        let departments = month.departments();
        assert_eq!(
            departments["sales"].requests + departments["hr"].requests,
            count
        );
        let report = month.report_json("t");
        assert_eq!(report["totals"]["total_tokens"], tokens);
    }

    #[test]
    fn a_month_is_listed_once_and_a_day_with_its_late_hours() {
        let october = days_of("2026-10").unwrap();
        assert_eq!(
            partitions_of(&october).unwrap(),
            [
                "year=2026/month=10/",
                "year=2026/month=11/day=01/hour=00/",
                "year=2026/month=11/day=01/hour=01/",
                "year=2026/month=11/day=01/hour=02/"
            ]
        );
        assert_eq!(
            partitions_of(&["2026-10-05".to_string()]).unwrap(),
            [
                "year=2026/month=10/day=05/",
                "year=2026/month=10/day=06/hour=00/",
                "year=2026/month=10/day=06/hour=01/",
                "year=2026/month=10/day=06/hour=02/"
            ]
        );
        assert!(partitions_of(&["2026-10-32".to_string()]).is_err());
    }

    #[test]
    fn months_have_their_days_and_defaults_look_back() {
        assert_eq!(days_of("2026-02").unwrap().len(), 28);
        assert_eq!(days_of("2028-02").unwrap().len(), 29);
        let october = days_of("2026-10").unwrap();
        assert_eq!(
            (october[0].as_str(), october[30].as_str()),
            ("2026-10-01", "2026-10-31")
        );
        assert_eq!(days_of("2026-13"), None);
        assert_eq!(days_of("2026-1"), None);
        let now = clock::millis_from_rfc3339("2026-11-01T00:30:00Z").unwrap();
        assert_eq!(yesterday(now), "2026-10-31");
        assert_eq!(previous_month(now), "2026-10");
        let january = clock::millis_from_rfc3339("2027-01-15T00:00:00Z").unwrap();
        assert_eq!(previous_month(january), "2026-12");
    }
}
