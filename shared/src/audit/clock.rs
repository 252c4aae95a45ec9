//! UTC timestamps for audit events and their S3 partitions, without a date-time dependency.

use std::time::{SystemTime, UNIX_EPOCH};

/// (year, month, day) from days since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `2026-11-25T03:04:05.678Z` for a number of milliseconds since the epoch.
pub fn rfc3339_from_millis(millis: u64) -> String {
    let secs = (millis / 1000) as i64;
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let of_day = secs.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3600,
        (of_day % 3600) / 60,
        of_day % 60,
        millis % 1000
    )
}

pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

pub fn rfc3339_now() -> String {
    rfc3339_from_millis(now_millis())
}

/// The Hive-style partition of an RFC 3339 UTC time: `year=2026/month=11/day=25/hour=03`.
pub fn partition(time: &str) -> Option<String> {
    let (year, month, day, hour) = (
        time.get(0..4)?,
        time.get(5..7)?,
        time.get(8..10)?,
        time.get(11..13)?,
    );
    let all_digits = [year, month, day, hour]
        .iter()
        .all(|p| p.bytes().all(|b| b.is_ascii_digit()));
    all_digits.then(|| format!("year={year}/month={month}/day={day}/hour={hour}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339_from_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339_from_millis(951_782_400_000),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(
            rfc3339_from_millis(1_795_577_738_123),
            "2026-11-25T03:35:38.123Z"
        );
    }

    #[test]
    fn partitions_by_hour() {
        assert_eq!(
            partition("2026-11-25T03:35:38.123Z").as_deref(),
            Some("year=2026/month=11/day=25/hour=03")
        );
        assert_eq!(partition("garbage"), None);
    }
}
