//! The Appendix 2 rows, checked: `user_id,name,email,department,job_title,phone,start_date,end_date,
//! status`. Each row becomes a [`UserRecord`] or a [`Rejection`] naming its spreadsheet row and every
//! rule it breaks; good rows are never held back by bad ones.

use std::collections::HashMap;
use std::fmt;

use super::csv::{records, Record};
use super::encoding::{decode, SourceEncoding};
use super::FileError;

pub const COLUMNS: [&str; 9] = [
    "user_id",
    "name",
    "email",
    "department",
    "job_title",
    "phone",
    "start_date",
    "end_date",
    "status",
];
pub const MAX_USER_ID_CHARS: usize = 32;
pub const MAX_EMAIL_CHARS: usize = 64;
pub const MAX_TEXT_CHARS: usize = 128;
pub const MAX_ROWS: usize = 50_000;
pub const MAX_FILE_BYTES: usize = 16 * 1024 * 1024;

/// A calendar date, read from `YYYY/M/D`, `YYYY/MM/DD` or `YYYY-MM-DD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    pub year: u16,
    pub month: u8,
    pub day: u8,
}

impl Date {
    pub fn parse(text: &str) -> Option<Date> {
        let separator = if text.contains('/') { '/' } else { '-' };
        let mut parts = text.split(separator);
        let (year, month, day) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some()
            || year.len() != 4
            || !(1..=2).contains(&month.len())
            || !(1..=2).contains(&day.len())
            // ISO dates are zero-padded; Excel's slashed ones need not be.
            || (separator == '-' && (month.len() != 2 || day.len() != 2))
            || ![year, month, day].iter().all(|p| p.bytes().all(|b| b.is_ascii_digit()))
        {
            return None;
        }
        let date = Date {
            year: year.parse().ok()?,
            month: month.parse().ok()?,
            day: day.parse().ok()?,
        };
        (date.year >= 1900
            && (1..=12).contains(&date.month)
            && date.day >= 1
            && date.day <= date.days_in_month())
        .then_some(date)
    }

    /// The civil date of a day counted from 1970-01-01 (proleptic Gregorian).
    pub fn from_days_since_epoch(days: i64) -> Date {
        let (year, month, day) = crate::audit::clock::civil_from_days(days);
        Date {
            year: year as u16,
            month: month as u8,
            day: day as u8,
        }
    }

    /// Today where the HR dates are meant: `utc_offset_minutes` east of UTC (Japan: 540).
    pub fn today(now_millis: u64, utc_offset_minutes: i32) -> Date {
        let local_millis = now_millis as i64 + i64::from(utc_offset_minutes) * 60_000;
        Date::from_days_since_epoch(local_millis.div_euclid(86_400_000))
    }

    fn days_in_month(self) -> u8 {
        match self.month {
            4 | 6 | 9 | 11 => 30,
            2 if self.year % 4 == 0 && (self.year % 100 != 0 || self.year % 400 == 0) => 29,
            2 => 28,
            _ => 31,
        }
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Active,
    Inactive,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// The row a spreadsheet shows (header = 1).
    pub line: usize,
    /// The employee number as written (`001` keeps its zeros).
    pub user_id: String,
    pub name: String,
    pub email: String,
    pub department: String,
    pub job_title: Option<String>,
    pub phone: Option<String>,
    pub start_date: Date,
    pub end_date: Option<Date>,
    pub status: Status,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub line: usize,
    /// The row's user_id cell, when it was readable (reports name rows by it too).
    pub user_id: Option<String>,
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedFile {
    pub encoding: SourceEncoding,
    pub records: Vec<UserRecord>,
    pub rejected: Vec<Rejection>,
}

/// Reads a whole file: a [`FileError`] refuses it, else every row is a record or a rejection.
pub fn parse(bytes: &[u8]) -> Result<ParsedFile, FileError> {
    if bytes.is_empty() {
        return Err(FileError::Empty);
    }
    if bytes.len() > MAX_FILE_BYTES {
        return Err(FileError::TooLarge {
            max: MAX_FILE_BYTES,
        });
    }
    let (text, encoding) = decode(bytes)?;
    let all = records(&text)?;
    let Some((header, rows)) = all.split_first() else {
        return Err(FileError::Empty);
    };
    let found: Vec<&str> = header.fields.iter().map(|f| f.trim()).collect();
    if found != COLUMNS {
        return Err(FileError::Header {
            expected: COLUMNS.join(","),
            found: header.fields.join(","),
        });
    }
    if rows.len() > MAX_ROWS {
        return Err(FileError::TooManyRows { max: MAX_ROWS });
    }
    let mut parsed = ParsedFile {
        encoding,
        records: Vec::new(),
        rejected: Vec::new(),
    };
    let mut seen_ids: HashMap<String, usize> = HashMap::new();
    let mut seen_emails: HashMap<String, usize> = HashMap::new();
    for row in rows {
        match check(row) {
            Ok(record) => {
                let mut reasons = Vec::new();
                if let Some(first) = seen_ids.get(&record.user_id) {
                    reasons.push(format!("user_id {} repeats row {first}", record.user_id));
                }
                if let Some(first) = seen_emails.get(&record.email.to_lowercase()) {
                    reasons.push(format!("email repeats row {first}"));
                }
                if reasons.is_empty() {
                    seen_ids.insert(record.user_id.clone(), record.line);
                    seen_emails.insert(record.email.to_lowercase(), record.line);
                    parsed.records.push(record);
                } else {
                    parsed.rejected.push(Rejection {
                        line: record.line,
                        user_id: Some(record.user_id),
                        reasons,
                    });
                }
            }
            Err(rejection) => parsed.rejected.push(rejection),
        }
    }
    Ok(parsed)
}

/// A cell a spreadsheet would run as a formula, or that carries control characters.
fn unsafe_cell(cell: &str) -> Option<&'static str> {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        return Some("starts with a formula character (= + - @ tab CR)");
    }
    if cell.chars().any(|c| c.is_control()) {
        return Some("contains a control character");
    }
    None
}

/// Checks one user given as the Appendix 2 cells (in [`COLUMNS`] order) by the file's rules: the admin
/// API's single-user writes go through the very checks a file's rows do. `line` names it in a rejection.
pub fn check_cells(line: usize, cells: [&str; 9]) -> Result<UserRecord, Rejection> {
    check(&Record {
        line,
        fields: cells.iter().map(|c| c.to_string()).collect(),
    })
}

fn check(row: &Record) -> Result<UserRecord, Rejection> {
    let mut reasons = Vec::new();
    if row.fields.len() != COLUMNS.len() {
        return Err(Rejection {
            line: row.line,
            user_id: row
                .fields
                .first()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty()),
            reasons: vec![format!(
                "has {} cells, the header has {}",
                row.fields.len(),
                COLUMNS.len()
            )],
        });
    }
    // Spaces around a cell are the spreadsheet's, not the value's.
    let cells: Vec<&str> = row.fields.iter().map(|f| f.trim_matches(' ')).collect();
    let [user_id, name, email, department, job_title, phone, start_date, end_date, status] =
        cells[..]
    else {
        unreachable!("the cell count was checked above")
    };
    for (column, cell) in COLUMNS.iter().zip(&cells) {
        // A phone number in international form starts with `+`: allowed when the rest is a number.
        if *column == "phone" && phone_ok(cell) {
            continue;
        }
        if let Some(why) = unsafe_cell(cell) {
            reasons.push(format!("{column} {why}"));
        }
    }
    let required = |column: &str, cell: &str, reasons: &mut Vec<String>| {
        if cell.is_empty() {
            reasons.push(format!("{column} is empty"));
        }
    };
    required("user_id", user_id, &mut reasons);
    if user_id.chars().count() > MAX_USER_ID_CHARS {
        reasons.push(format!(
            "user_id is longer than {MAX_USER_ID_CHARS} characters"
        ));
    } else if !user_id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        reasons.push("user_id may hold only letters, digits, '-', '_' and '.'".into());
    }
    required("name", name, &mut reasons);
    required("department", department, &mut reasons);
    for (column, cell) in [
        ("name", name),
        ("department", department),
        ("job_title", job_title),
    ] {
        if cell.chars().count() > MAX_TEXT_CHARS {
            reasons.push(format!(
                "{column} is longer than {MAX_TEXT_CHARS} characters"
            ));
        }
    }
    required("email", email, &mut reasons);
    if email.chars().count() > MAX_EMAIL_CHARS {
        reasons.push(format!("email is longer than {MAX_EMAIL_CHARS} characters"));
    } else if !email.is_empty() && !email_ok(email) {
        reasons.push("email is not an address (name@domain.tld)".into());
    }
    if !phone.is_empty() && !phone_ok(phone) && unsafe_cell(phone).is_none() {
        reasons.push("phone may hold only digits, '-', ' ', '(', ')' and a leading '+'".into());
    }
    let start = Date::parse(start_date);
    if start.is_none() {
        reasons.push(format!(
            "start_date {:?} is not a date (YYYY/M/D, YYYY/MM/DD or YYYY-MM-DD)",
            start_date
        ));
    }
    let end = if end_date.is_empty() {
        None
    } else {
        let end = Date::parse(end_date);
        if end.is_none() {
            reasons.push(format!(
                "end_date {:?} is not a date (YYYY/M/D, YYYY/MM/DD or YYYY-MM-DD)",
                end_date
            ));
        }
        end
    };
    if let (Some(start), Some(end)) = (start, end) {
        if end < start {
            reasons.push(format!("end_date {end} is before start_date {start}"));
        }
    }
    let status = match status.to_ascii_lowercase().as_str() {
        "active" => Some(Status::Active),
        "inactive" => Some(Status::Inactive),
        _ => {
            reasons.push(format!(
                "status {:?} is neither active nor inactive",
                status
            ));
            None
        }
    };
    match (reasons.is_empty(), start, status) {
        (true, Some(start_date), Some(status)) => Ok(UserRecord {
            line: row.line,
            user_id: user_id.to_string(),
            name: name.to_string(),
            email: email.to_string(),
            department: department.to_string(),
            job_title: (!job_title.is_empty()).then(|| job_title.to_string()),
            phone: (!phone.is_empty()).then(|| phone.to_string()),
            start_date,
            end_date: end,
            status,
        }),
        _ => Err(Rejection {
            line: row.line,
            user_id: (!user_id.is_empty()).then(|| user_id.to_string()),
            reasons,
        }),
    }
}

fn phone_ok(phone: &str) -> bool {
    let digits = phone.strip_prefix('+').unwrap_or(phone);
    digits.starts_with(|c: char| c.is_ascii_digit())
        && digits.len() <= 32
        && digits
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b' ' | b'(' | b')'))
}

/// An e-mail address as the HR file's rules accept one (at most 64 characters).
pub fn is_email(email: &str) -> bool {
    email.len() <= MAX_EMAIL_CHARS && email_ok(email)
}

fn email_ok(email: &str) -> bool {
    let Some((local, domain)) = email.rsplit_once('@') else {
        return false;
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    !local.is_empty()
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._%+-'".contains(&b))
        && domain.contains('.')
        && domain.split('.').all(label_ok)
        && domain
            .rsplit('.')
            .next()
            .is_some_and(|tld| tld.len() >= 2 && tld.bytes().all(|b| b.is_ascii_alphabetic()))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const HEADER: &str =
        "user_id,name,email,department,job_title,phone,start_date,end_date,status\r\n";
    /// Seed 000, Appendix 2.
    pub const APPENDIX_2: &str = "user_id,name,email,department,job_title,phone,start_date,end_date,status\r\n\
        001,山田太郎,taro.yamada@example.com,営業部,主任,03-1234-5678,2023/04/01,,active\r\n\
        002,鈴木花子,hanako.suzuki@example.com,人事部,課長,03-2345-6789,2023/04/01,,active\r\n\
        003,佐藤一郎,ichiro.sato@example.com,システム部,部長,03-3456-7890,2023/04/01,,active\r\n\
        004,田中裕子,yuko.tanaka@example.com,経理部,担当,03-4567-8901,2023/04/01,2023/06/30,inactive\r\n\
        005,高橋健一,kenichi.takahashi@example.com,営業部,課長代理,03-5678-9012,2023/04/01,,active\r\n";

    fn one_row(row: &str) -> Result<UserRecord, Vec<String>> {
        let parsed = parse(format!("{HEADER}{row}\r\n").as_bytes()).unwrap();
        match (parsed.records.first(), parsed.rejected.first()) {
            (Some(record), None) => Ok(record.clone()),
            (None, Some(rejection)) => Err(rejection.reasons.clone()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_appendix_2_sample_reads_in_every_encoding_excel_writes() {
        let (cp932, _, unmappable) = encoding_rs::SHIFT_JIS.encode(APPENDIX_2);
        assert!(!unmappable);
        let mut bom = b"\xEF\xBB\xBF".to_vec();
        bom.extend_from_slice(APPENDIX_2.replace("\r\n", "\n").as_bytes());
        let expected = parse(APPENDIX_2.as_bytes()).unwrap();
        assert_eq!(expected.records.len(), 5);
        assert!(expected.rejected.is_empty());
        let first = &expected.records[0];
        assert_eq!((first.user_id.as_str(), first.line), ("001", 2));
        assert_eq!(
            first.start_date,
            Date {
                year: 2023,
                month: 4,
                day: 1
            }
        );
        assert_eq!(expected.records[3].status, Status::Inactive);
        assert_eq!(
            expected.records[3].end_date.unwrap().to_string(),
            "2023-06-30"
        );
        for bytes in [cp932.into_owned(), bom] {
            let parsed = parse(&bytes).unwrap();
            assert_eq!(parsed.records, expected.records);
        }
    }

    #[test]
    fn each_rule_of_design_8_rejects_its_row_with_the_reason() {
        for (row, reason) in [
            ("=1+1,a,a@example.com,d,,,2024/1/1,,active", "user_id starts with a formula character"),
            ("1,@SUM(A1),a@example.com,d,,,2024/1/1,,active", "name starts with a formula character"),
            ("1,a,a@example.com,-d,,,2024/1/1,,active", "department starts with a formula character"),
            ("1,a,a@example.com,d,\"\tx\",,2024/1/1,,active", "job_title starts with a formula character"),
            ("1,a\u{1},a@example.com,d,,,2024/1/1,,active", "name contains a control character"),
            ("123456789012345678901234567890123,a,a@example.com,d,,,2024/1/1,,active", "longer than 32"),
            ("1,a,averyveryveryveryveryveryveryveryveryveryveryverylongname@example.com,d,,,2024/1/1,,active", "longer than 64"),
            ("1,a,not-an-address,d,,,2024/1/1,,active", "email is not an address"),
            ("1,a,a@example.com,d,,03-1234-abcd,2024/1/1,,active", "phone may hold only"),
            ("1,a,a@example.com,d,,,2024/13/1,,active", "start_date \"2024/13/1\" is not a date"),
            ("1,a,a@example.com,d,,,2023/2/29,,active", "is not a date"),
            ("1,a,a@example.com,d,,,2024/4/1,2024/3/31,inactive", "end_date 2024-03-31 is before start_date 2024-04-01"),
            ("1,a,a@example.com,d,,,2024/4/1,,retired", "neither active nor inactive"),
            ("1,a,a@example.com,d,,,2024/4/1,active", "has 8 cells"),
            (",a,a@example.com,d,,,2024/4/1,,active", "user_id is empty"),
        ] {
            let reasons = one_row(row).expect_err(row);
            assert!(reasons.iter().any(|r| r.contains(reason)), "{row}: {reasons:?}");
        }
    }

    #[test]
    fn what_the_rules_allow() {
        let record = one_row("00042,\"Smith, Jo\",jo+hr@Example.co.jp,sales,,+81 3-1234-5678,2024-02-29,2024/12/31,Active").unwrap();
        assert_eq!(record.user_id, "00042");
        assert_eq!(record.name, "Smith, Jo");
        assert_eq!(record.phone.as_deref(), Some("+81 3-1234-5678"));
        assert_eq!(record.start_date.to_string(), "2024-02-29");
        assert_eq!(record.job_title, None);
    }

    #[test]
    fn duplicates_within_the_file_are_rejected_after_the_first() {
        let parsed = parse(
            format!(
                "{HEADER}1,a,a@example.com,d,,,2024/1/1,,active\r\n1,b,b@example.com,d,,,2024/1/1,,active\r\n2,c,A@EXAMPLE.com,d,,,2024/1/1,,active\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(parsed.records.len(), 1);
        let reasons: Vec<(usize, String)> = parsed
            .rejected
            .iter()
            .map(|r| (r.line, r.reasons.join("; ")))
            .collect();
        assert_eq!(
            reasons,
            [
                (3, "user_id 1 repeats row 2".to_string()),
                (4, "email repeats row 2".to_string())
            ]
        );
    }

    #[test]
    fn today_is_the_civil_date_at_the_offset() {
        assert_eq!(Date::from_days_since_epoch(0).to_string(), "1970-01-01");
        assert_eq!(
            Date::from_days_since_epoch(19_782).to_string(),
            "2024-02-29"
        );
        // 2026-11-25T20:00:00Z is already the 26th in Tokyo.
        let millis = 1_795_636_800_000;
        assert_eq!(Date::today(millis, 0).to_string(), "2026-11-25");
        assert_eq!(Date::today(millis, 540).to_string(), "2026-11-26");
    }

    #[test]
    fn whole_file_errors_apply_nothing() {
        assert_eq!(parse(b""), Err(FileError::Empty));
        assert!(matches!(
            parse(b"id,name\r\n1,a\r\n"),
            Err(FileError::Header { .. })
        ));
        assert!(matches!(
            parse(format!("{HEADER}1,\"open\r\n").as_bytes()),
            Err(FileError::UnterminatedQuote { line: 2 })
        ));
    }

    proptest! {
        /// Whatever a row's cells hold, no accepted record carries a cell a spreadsheet would run as a
        /// formula or a control character (a phone's leading `+` followed by digits excepted).
        #[test]
        fn no_accepted_cell_is_a_formula_or_carries_control_characters(
            cells in prop::collection::vec("[=+@\\-\t\u{1}a-z0-9 ./]{0,12}", 9),
        ) {
            let row = cells.iter().map(|c| format!("\"{}\"", c.replace('"', "\"\""))).collect::<Vec<_>>().join(",");
            let parsed = parse(format!("{HEADER}{row}\r\n").as_bytes()).unwrap();
            for record in &parsed.records {
                let text = [&record.user_id, &record.name, &record.email, &record.department];
                for value in text.into_iter().chain(record.job_title.as_ref()) {
                    prop_assert!(unsafe_cell(value).is_none(), "{:?}", value);
                }
                if let Some(phone) = &record.phone {
                    prop_assert!(phone_ok(phone), "{:?}", phone);
                }
            }
            prop_assert_eq!(parsed.records.len() + parsed.rejected.len(), 1);
        }

        /// Dates round-trip through their ISO text, and only real calendar dates parse.
        #[test]
        fn dates_parse_only_real_days(year in 1900u16..2200, month in 0u8..14, day in 0u8..33) {
            let text = format!("{year}/{month}/{day}");
            match Date::parse(&text) {
                Some(date) => {
                    prop_assert!((1..=12).contains(&month) && day >= 1 && day <= date.days_in_month());
                    prop_assert_eq!(Date::parse(&date.to_string()), Some(date));
                }
                None => {
                    let month_days = Date { year, month, day: 1 }.days_in_month();
                    prop_assert!(!(1..=12).contains(&month) || day == 0 || day > month_days);
                }
            }
        }
    }
}
