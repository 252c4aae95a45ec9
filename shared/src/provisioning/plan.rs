//! What applying a file changes, decided before anything is changed: each good row against the
//! directory's current state, on a given day. Planning against the state an apply produced yields no
//! change (the same file twice changes nothing), and a dry run is this plan, reported.

use std::collections::BTreeMap;

use super::rows::{Date, Status, UserRecord};

/// A user as the directory (Cognito) holds them, in the gateway's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryUser {
    /// The sign-in name: the employee user_id.
    pub username: String,
    pub attributes: Attributes,
    /// The department the user's `dept-` group names (None: in no department group).
    pub department: Option<String>,
    pub enabled: bool,
}

/// The attributes provisioning owns, by Cognito attribute name.
pub type Attributes = BTreeMap<String, String>;

/// The user pool's custom attributes (`custom:<name>`), which the pool must declare: the CDK app's
/// `identity.ts` and the local stack create them (`tests/test_deployment_parity.py` compares the two).
pub const CUSTOM_ATTRIBUTES: &[&str] = &[
    "user_id",
    "department",
    "job_title",
    "phone",
    "start_date",
    "end_date",
    "status",
];

/// Custom attributes the pool declares that provisioning never writes: the admin API sets them.
pub const ADMIN_ATTRIBUTES: &[&str] = &["alias_id"];

/// Every custom attribute the pool declares.
pub fn pool_custom_attributes() -> impl Iterator<Item = &'static str> {
    CUSTOM_ATTRIBUTES.iter().chain(ADMIN_ATTRIBUTES).copied()
}

/// The standard attributes provisioning writes besides its custom ones.
pub const STANDARD_ATTRIBUTES: &[&str] = &["email", "email_verified", "name"];

/// Whether `name` is an attribute provisioning writes (and so reads back to plan against).
pub fn is_owned(name: &str) -> bool {
    STANDARD_ATTRIBUTES.contains(&name)
        || name
            .strip_prefix("custom:")
            .is_some_and(|custom| CUSTOM_ATTRIBUTES.contains(&custom))
}

/// One row's change. `Create` and `Update` carry every attribute to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Create {
        attributes: Attributes,
        department: String,
        /// Active and started: enabled at once; else created disabled (a future starter, or a row
        /// that arrives already inactive or past its end).
        enabled: bool,
    },
    Update {
        /// Only the attributes that differ.
        attributes: Attributes,
        /// The department group to move to, when it changes (and the one left).
        move_department: Option<(Option<String>, String)>,
        /// Enable or disable, when that changes.
        set_enabled: Option<bool>,
    },
    Unchanged,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedRow {
    pub line: usize,
    pub user_id: String,
    pub change: Change,
    /// Why the account ends up enabled or disabled (for the report).
    pub why: &'static str,
}

/// Whether a row's account should be enabled on `today`, and why.
pub fn should_be_enabled(record: &UserRecord, today: Date) -> (bool, &'static str) {
    enabled_on(record.status, record.start_date, record.end_date, today)
}

/// The one rule for whether an account is enabled on `today`, and why: provisioning applies it to a
/// file's rows, the daily date job to the directory's attributes, the admin API to its edits.
pub fn enabled_on(
    status: Status,
    start_date: Date,
    end_date: Option<Date>,
    today: Date,
) -> (bool, &'static str) {
    if status == Status::Inactive {
        return (false, "status inactive");
    }
    if start_date > today {
        return (false, "start_date not reached: enabled on that day");
    }
    if end_date.is_some_and(|end| end < today) {
        return (false, "end_date passed");
    }
    (true, "active")
}

/// The HR dates and status a provisioned account carries in its attributes; `None` for accounts
/// provisioning does not manage (no `custom:start_date`: the bootstrap administrator, service users),
/// which the date job leaves alone.
pub fn lifecycle(attributes: &Attributes) -> Option<(Status, Date, Option<Date>)> {
    let start = Date::parse(attributes.get("custom:start_date")?)?;
    let end = match attributes.get("custom:end_date").map(String::as_str) {
        None | Some("") => None,
        Some(text) => Some(Date::parse(text)?),
    };
    let status = match attributes.get("custom:status").map(String::as_str) {
        Some("inactive") => Status::Inactive,
        _ => Status::Active,
    };
    Some((status, start, end))
}

/// The Cognito attributes a row sets. Dates are written ISO.
pub fn attributes_of(record: &UserRecord, department: &str) -> Attributes {
    let mut attributes = Attributes::from([
        ("email".to_string(), record.email.clone()),
        ("email_verified".to_string(), "true".to_string()),
        ("name".to_string(), record.name.clone()),
        ("custom:user_id".to_string(), record.user_id.clone()),
        ("custom:department".to_string(), department.to_string()),
        (
            "custom:start_date".to_string(),
            record.start_date.to_string(),
        ),
    ]);
    // Empty cells clear the attribute (Cognito keeps "" as "no value").
    attributes.insert(
        "custom:job_title".into(),
        record.job_title.clone().unwrap_or_default(),
    );
    attributes.insert(
        "custom:phone".into(),
        record.phone.clone().unwrap_or_default(),
    );
    attributes.insert(
        "custom:end_date".into(),
        record.end_date.map(|d| d.to_string()).unwrap_or_default(),
    );
    // The HR status is kept apart from the enabled flag: the daily date job must not enable an
    // `inactive` account whose dates say it could be.
    attributes.insert(
        "custom:status".into(),
        match record.status {
            Status::Active => "active",
            Status::Inactive => "inactive",
        }
        .into(),
    );
    debug_assert!(attributes.keys().all(|name| is_owned(name)));
    attributes
}

/// Plans one row. `department` is the configured department the row's cell names.
pub fn plan_row(
    record: &UserRecord,
    department: &str,
    existing: Option<&DirectoryUser>,
    today: Date,
) -> PlannedRow {
    let (enabled, why) = should_be_enabled(record, today);
    let wanted = attributes_of(record, department);
    let change = match existing {
        None => Change::Create {
            attributes: wanted,
            department: department.to_string(),
            enabled,
        },
        Some(user) => {
            let attributes: Attributes = wanted
                .into_iter()
                .filter(|(name, value)| {
                    let current = user.attributes.get(name).map(String::as_str).unwrap_or("");
                    current != value
                })
                .collect();
            let move_department = (user.department.as_deref() != Some(department))
                .then(|| (user.department.clone(), department.to_string()));
            let set_enabled = (user.enabled != enabled).then_some(enabled);
            if attributes.is_empty() && move_department.is_none() && set_enabled.is_none() {
                Change::Unchanged
            } else {
                Change::Update {
                    attributes,
                    move_department,
                    set_enabled,
                }
            }
        }
    };
    PlannedRow {
        line: record.line,
        user_id: record.user_id.clone(),
        change,
        why,
    }
}

/// The audit action a planned row is (`users.create`, `users.disable`, ...) and the names of what it
/// writes; `None` for an unchanged row.
pub fn action_of(row: &PlannedRow) -> Option<(&'static str, Vec<String>)> {
    match &row.change {
        Change::Unchanged => None,
        Change::Create {
            attributes,
            enabled,
            ..
        } => {
            let mut changed: Vec<String> = attributes.keys().cloned().collect();
            changed.push("department".into());
            if !enabled {
                changed.push("enabled".into());
            }
            Some(("users.create", changed))
        }
        Change::Update {
            attributes,
            move_department,
            set_enabled,
        } => {
            let mut changed: Vec<String> = attributes.keys().cloned().collect();
            if move_department.is_some() {
                changed.push("department".into());
            }
            if set_enabled.is_some() {
                changed.push("enabled".into());
            }
            let action = match set_enabled {
                Some(false) => "users.disable",
                Some(true) => "users.enable",
                None if attributes.is_empty() => "users.move",
                None => "users.update",
            };
            Some((action, changed))
        }
    }
}

/// The directory state a planned row leaves behind (what an apply writes), for idempotency checks
/// and for the next row's view of the directory.
pub fn after(row: &PlannedRow, before: Option<&DirectoryUser>) -> Option<DirectoryUser> {
    match (&row.change, before) {
        (
            Change::Create {
                attributes,
                department,
                enabled,
            },
            _,
        ) => Some(DirectoryUser {
            username: row.user_id.clone(),
            attributes: attributes.clone(),
            department: Some(department.clone()),
            enabled: *enabled,
        }),
        (
            Change::Update {
                attributes,
                move_department,
                set_enabled,
            },
            Some(user),
        ) => {
            let mut user = user.clone();
            user.attributes.extend(attributes.clone());
            if let Some((_, to)) = move_department {
                user.department = Some(to.clone());
            }
            if let Some(enabled) = set_enabled {
                user.enabled = *enabled;
            }
            Some(user)
        }
        (_, before) => before.cloned(),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn date(year: u16, month: u8, day: u8) -> Date {
        Date { year, month, day }
    }

    fn record(user_id: &str, start: Date, end: Option<Date>, status: Status) -> UserRecord {
        UserRecord {
            line: 2,
            user_id: user_id.into(),
            name: "山田太郎".into(),
            email: format!("{user_id}@example.com"),
            department: "営業部".into(),
            job_title: Some("主任".into()),
            phone: None,
            start_date: start,
            end_date: end,
            status,
        }
    }

    const TODAY: Date = Date {
        year: 2026,
        month: 11,
        day: 25,
    };

    #[test]
    fn new_users_are_created_enabled_or_disabled_by_status_and_dates() {
        let cases = [
            (record("1", date(2023, 4, 1), None, Status::Active), true),
            (
                record(
                    "2",
                    date(2023, 4, 1),
                    Some(date(2023, 6, 30)),
                    Status::Inactive,
                ),
                false,
            ),
            (record("3", date(2027, 1, 1), None, Status::Active), false),
            (
                record(
                    "4",
                    date(2023, 4, 1),
                    Some(date(2026, 11, 24)),
                    Status::Active,
                ),
                false,
            ),
            (
                record("5", date(2023, 4, 1), Some(TODAY), Status::Active),
                true,
            ),
        ];
        for (row, expected) in cases {
            let planned = plan_row(&row, "sales", None, TODAY);
            let Change::Create {
                enabled,
                department,
                ..
            } = planned.change
            else {
                panic!("{planned:?}")
            };
            assert_eq!(
                (enabled, department.as_str()),
                (expected, "sales"),
                "{}",
                row.user_id
            );
        }
    }

    #[test]
    fn only_what_differs_is_updated() {
        let row = record("1", date(2023, 4, 1), None, Status::Active);
        let created = after(&plan_row(&row, "sales", None, TODAY), None).unwrap();
        let mut moved = row.clone();
        moved.job_title = Some("課長".into());
        let planned = plan_row(&moved, "hr", Some(&created), TODAY);
        assert_eq!(
            planned.change,
            Change::Update {
                attributes: Attributes::from([
                    ("custom:department".into(), "hr".into()),
                    ("custom:job_title".into(), "課長".into()),
                ]),
                move_department: Some((Some("sales".into()), "hr".into())),
                set_enabled: None,
            }
        );
    }

    #[test]
    fn a_returning_user_is_enabled_and_a_leaver_disabled() {
        let row = record("1", date(2023, 4, 1), None, Status::Active);
        let mut user = after(&plan_row(&row, "sales", None, TODAY), None).unwrap();
        user.enabled = false;
        let Change::Update { set_enabled, .. } = plan_row(&row, "sales", Some(&user), TODAY).change
        else {
            panic!()
        };
        assert_eq!(set_enabled, Some(true));
        let mut leaver = row.clone();
        leaver.status = Status::Inactive;
        user.enabled = true;
        let Change::Update { set_enabled, .. } =
            plan_row(&leaver, "sales", Some(&user), TODAY).change
        else {
            panic!()
        };
        assert_eq!(set_enabled, Some(false));
    }

    proptest! {
        /// Applying a row and planning it again changes nothing: the same file twice is a no-op,
        /// whatever the row and whatever state the user was in before.
        #[test]
        fn planning_after_applying_changes_nothing(
            start in (2020u16..2030, 1u8..13, 1u8..29),
            end in prop::option::of((2020u16..2030, 1u8..13, 1u8..29)),
            inactive in any::<bool>(),
            existed in any::<bool>(),
            was_enabled in any::<bool>(),
            was_in in prop::option::of("[a-z]{1,4}"),
            department in "[a-z]{1,4}",
        ) {
            let status = if inactive { Status::Inactive } else { Status::Active };
            let row = record("7", date(start.0, start.1, start.2), end.map(|e| date(e.0, e.1, e.2)), status);
            let before = existed.then(|| DirectoryUser {
                username: "7".into(),
                attributes: Attributes::from([("name".into(), "old".into())]),
                department: was_in,
                enabled: was_enabled,
            });
            let planned = plan_row(&row, &department, before.as_ref(), TODAY);
            let applied = after(&planned, before.as_ref());
            let again = plan_row(&row, &department, applied.as_ref(), TODAY);
            prop_assert_eq!(again.change, Change::Unchanged);
            prop_assert_eq!(applied.map(|u| u.enabled), Some(should_be_enabled(&row, TODAY).0));
        }
    }
}
