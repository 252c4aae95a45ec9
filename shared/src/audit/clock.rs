//! UTC timestamps for audit events and their S3 partitions, without a date-time dependency.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

const MILLIS_PER_HOUR: i64 = 3_600_000;

/// (year, month, day) from days since 1970-01-01 (Howard Hinnant's `civil_from_days`).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
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

/// Days since 1970-01-01 of a (year, month, day) (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let month = i64::from(month);
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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

/// Milliseconds since the epoch of a UTC time as [`rfc3339_from_millis`] writes it
/// (`YYYY-MM-DDTHH:MM:SS[.fff]Z`, a fraction of any length); None for anything else.
pub fn millis_from_rfc3339(text: &str) -> Option<u64> {
    let (date, rest) = text.strip_suffix('Z')?.split_once('T')?;
    let (clock, fraction) = rest.split_once('.').unwrap_or((rest, ""));
    let number = |part: &str, len: usize| -> Option<u32> {
        (part.len() == len && part.bytes().all(|b| b.is_ascii_digit()))
            .then(|| part.parse().ok())
            .flatten()
    };
    let mut d = date.split('-');
    let (year, month, day) = (
        number(d.next()?, 4)?,
        number(d.next()?, 2)?,
        number(d.next()?, 2)?,
    );
    let mut c = clock.split(':');
    let (hour, minute, second) = (
        number(c.next()?, 2)?,
        number(c.next()?, 2)?,
        number(c.next()?, 2)?,
    );
    if d.next().is_some() || c.next().is_some() || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let leap = |y: u32| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [
        31,
        if leap(year) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&month)
        || day == 0
        || day > month_days[month as usize - 1]
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let millis_part: u64 = format!("{fraction:0<3}").get(..3)?.parse().ok()?;
    let days = days_from_civil(i64::from(year), month, day);
    let secs = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
    u64::try_from(secs).ok().map(|s| s * 1000 + millis_part)
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

/// One UTC hour: the unit of the audit trail's partitions, digests and incomplete reports. Written
/// `2026-11-25T03` (the form the verify command takes) and laid out in S3 as
/// `year=2026/month=11/day=25/hour=03`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hour(i64);

impl Hour {
    /// The hour holding an instant (milliseconds since the epoch).
    pub fn containing_millis(millis: i64) -> Hour {
        Hour(millis.div_euclid(MILLIS_PER_HOUR))
    }

    pub fn now() -> Hour {
        Hour::containing_millis(now_millis() as i64)
    }

    /// `YYYY-MM-DDTHH`, with a real calendar date.
    pub fn parse(text: &str) -> Option<Hour> {
        let bytes = text.as_bytes();
        let shape_ok = bytes.len() == 13
            && bytes[4] == b'-'
            && bytes[7] == b'-'
            && bytes[10] == b'T'
            && [0..4, 5..7, 8..10, 11..13]
                .into_iter()
                .all(|r| bytes[r].iter().all(u8::is_ascii_digit));
        if !shape_ok {
            return None;
        }
        Hour::from_parts(
            text.get(0..4)?.parse().ok()?,
            text.get(5..7)?.parse().ok()?,
            text.get(8..10)?.parse().ok()?,
            text.get(11..13)?.parse().ok()?,
        )
    }

    /// The hour of a Hive-style partition, `year=2026/month=11/day=25/hour=03`.
    pub fn from_partition(partition: &str) -> Option<Hour> {
        let mut parts = partition.split('/');
        let mut field = |name: &str| -> Option<u32> {
            let value = parts.next()?.strip_prefix(name)?.strip_prefix('=')?;
            value
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| value.parse().ok())?
        };
        let (year, month, day, hour) = (
            field("year")?,
            field("month")?,
            field("day")?,
            field("hour")?,
        );
        if parts.next().is_some() {
            return None;
        }
        Hour::from_parts(i64::from(year), month, day, hour)
    }

    fn from_parts(year: i64, month: u32, day: u32, hour: u32) -> Option<Hour> {
        if !(1..=12).contains(&month) || day == 0 || hour > 23 {
            return None;
        }
        let days = days_from_civil(year, month, day);
        // Rejects 2026-02-30 and the like: the day must come back as written.
        if civil_from_days(days) != (year, month, day) {
            return None;
        }
        Some(Hour(days * 24 + i64::from(hour)))
    }

    pub fn start_millis(self) -> i64 {
        self.0 * MILLIS_PER_HOUR
    }

    /// The first millisecond after the hour.
    pub fn end_millis(self) -> i64 {
        self.start_millis() + MILLIS_PER_HOUR
    }

    pub fn plus(self, hours: i64) -> Hour {
        Hour(self.0 + hours)
    }

    pub fn next(self) -> Hour {
        self.plus(1)
    }

    pub fn previous(self) -> Hour {
        self.plus(-1)
    }

    /// Hours from `self` to `later` (negative if `later` is earlier).
    pub fn hours_until(self, later: Hour) -> i64 {
        later.0 - self.0
    }

    fn civil(self) -> (i64, u32, u32, u32) {
        let (year, month, day) = civil_from_days(self.0.div_euclid(24));
        (year, month, day, self.0.rem_euclid(24) as u32)
    }

    pub fn year(self) -> i64 {
        self.civil().0
    }

    /// `year=2026/month=11/day=25/hour=03`
    pub fn partition(self) -> String {
        let (year, month, day, hour) = self.civil();
        format!("year={year:04}/month={month:02}/day={day:02}/hour={hour:02}")
    }

    /// `year=2026/month=11/day=25/` (the day's partitions, for listing).
    pub fn day_partition(self) -> String {
        let (year, month, day, _) = self.civil();
        format!("year={year:04}/month={month:02}/day={day:02}/")
    }

    /// `year=2026/month=11/` (the month's partitions, for listing).
    pub fn month_partition(self) -> String {
        let (year, month, _, _) = self.civil();
        format!("year={year:04}/month={month:02}/")
    }

    /// The first hour of the month before this hour's (for walking back month by month).
    pub fn first_of_previous_month(self) -> Hour {
        let (year, month, _, _) = self.civil();
        let (year, month) = if month == 1 {
            (year - 1, 12)
        } else {
            (year, month - 1)
        };
        Hour(days_from_civil(year, month, 1) * 24)
    }
}

impl fmt::Display for Hour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (year, month, day, hour) = self.civil();
        write!(f, "{year:04}-{month:02}-{day:02}T{hour:02}")
    }
}

/// Serialized as its `YYYY-MM-DDTHH` text.
impl serde::Serialize for Hour {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Hour {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Hour::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!("not an hour (YYYY-MM-DDTHH): {text:?}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_and_refuses_other_shapes() {
        for millis in [0, 1_764_124_800_123, 951_782_400_000, 4_102_444_799_999] {
            assert_eq!(
                millis_from_rfc3339(&rfc3339_from_millis(millis)),
                Some(millis)
            );
        }
        assert_eq!(
            millis_from_rfc3339("2026-11-26T01:02:03Z"),
            Some(1_795_654_923_000)
        );
        assert_eq!(
            millis_from_rfc3339("2026-11-26T01:02:03.5Z"),
            Some(1_795_654_923_500)
        );
        for bad in [
            "",
            "2026-02-29T00:00:00Z",
            "2026-11-26T24:00:00Z",
            "2026-11-26 01:02:03Z",
            "2026-11-26T01:02:03+09:00",
            "2026-11-26T01:02:03.x1Z",
            "2026-1-26T01:02:03Z",
        ] {
            assert_eq!(millis_from_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn hours_parse_print_and_lay_out() {
        let hour = Hour::parse("2026-11-25T03").unwrap();
        assert_eq!(hour.to_string(), "2026-11-25T03");
        assert_eq!(hour.partition(), "year=2026/month=11/day=25/hour=03");
        assert_eq!(Hour::from_partition(&hour.partition()), Some(hour));
        assert_eq!(
            rfc3339_from_millis(hour.start_millis() as u64),
            "2026-11-25T03:00:00.000Z"
        );
        assert_eq!(Hour::containing_millis(1_795_577_738_123), hour);
        assert_eq!(hour.plus(21).to_string(), "2026-11-26T00");
        assert_eq!(
            Hour::parse("2000-03-01T00").unwrap().previous().to_string(),
            "2000-02-29T23"
        );
        assert_eq!(
            Hour::parse("2027-01-01T00").unwrap().previous().to_string(),
            "2026-12-31T23"
        );
        assert_eq!(hour.first_of_previous_month().to_string(), "2026-10-01T00");
        assert_eq!(
            Hour::parse("2026-01-15T07")
                .unwrap()
                .first_of_previous_month()
                .to_string(),
            "2025-12-01T00"
        );
        for bad in [
            "2026-11-25",
            "2026-11-25T24",
            "2026-02-29T00",
            "2026-13-01T00",
            "2026-11-25 03",
            "+026-11-25T03",
            "2026-11-25T03Z",
        ] {
            assert_eq!(Hour::parse(bad), None, "{bad}");
        }
        for bad in [
            "year=2026/month=11/day=25",
            "year=2026/month=11/day=25/hour=03/x",
            "year=2026/month=11/day=31/hour=03",
            "year=2026/month=+1/day=25/hour=03",
        ] {
            assert_eq!(Hour::from_partition(bad), None, "{bad}");
        }
    }

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
