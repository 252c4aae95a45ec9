//! Users as the admin API shows and takes them. Writes go through the provisioning file's own rules
//! (`rows::check_cells`): a user the API creates or edits is one an HR file could have held.

use std::collections::BTreeMap;

use gateway_shared::directory::UserView;
use gateway_shared::provisioning::rows::{self, UserRecord};
use serde_json::{json, Value};

use crate::ApiError;

/// The user as every endpoint answers it (schemas/admin-api.openapi.yaml `User`).
pub fn user_json(user: &UserView) -> Value {
    let attribute = |name: &str| user.attributes.get(name).filter(|v| !v.is_empty()).cloned();
    json!({
        "user_id": user.username,
        "sub": user.sub,
        "alias_id": attribute("custom:alias_id"),
        "name": attribute("name"),
        "email": attribute("email"),
        "email_verified": user.attributes.get("email_verified").map(String::as_str) == Some("true"),
        "department": user.department.clone().or_else(|| attribute("custom:department")),
        "job_title": attribute("custom:job_title"),
        "phone": attribute("custom:phone"),
        "start_date": attribute("custom:start_date"),
        "end_date": attribute("custom:end_date"),
        "hr_status": attribute("custom:status").unwrap_or_else(|| "active".into()),
        "enabled": user.enabled,
        "status": user.status(),
        "created_at": user.created_at,
        "updated_at": user.updated_at,
    })
}

/// `POST /users`.
#[derive(Debug)]
pub struct NewUser {
    pub user_id: String,
    pub name: String,
    pub email: String,
    pub department: String,
    pub job_title: Option<String>,
    pub phone: Option<String>,
    pub start_date: String,
    pub end_date: Option<String>,
    pub status: Option<String>,
    pub alias_id: Option<String>,
}

/// A body's fields as strings, nulls as `None`; every problem (unknown field, a required one
/// missing or null, a value not a string) is named in the error's details at once.
fn read_fields(
    body: &Value,
    required: &[&str],
    optional: &[&str],
) -> Result<BTreeMap<String, Option<String>>, ApiError> {
    let Value::Object(fields) = body else {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    };
    let mut details = Vec::new();
    let mut read = BTreeMap::new();
    for (name, value) in fields {
        if !required.contains(&name.as_str()) && !optional.contains(&name.as_str()) {
            details.push((name.clone(), format!("{name} is not a field here")));
            continue;
        }
        match value {
            Value::String(text) => {
                read.insert(name.clone(), Some(text.clone()));
            }
            Value::Null => {
                read.insert(name.clone(), None);
            }
            _ => details.push((name.clone(), format!("{name} must be a string"))),
        }
    }
    for name in required {
        if !matches!(read.get(*name), Some(Some(_))) && !details.iter().any(|(f, _)| f == name) {
            details.push((name.to_string(), format!("{name} is required")));
        }
    }
    if details.is_empty() {
        Ok(read)
    } else {
        Err(ApiError::invalid(details))
    }
}

impl NewUser {
    pub fn from_json(body: &Value) -> Result<NewUser, ApiError> {
        let mut fields = read_fields(
            body,
            &["user_id", "name", "email", "department", "start_date"],
            &["job_title", "phone", "end_date", "status", "alias_id"],
        )?;
        let mut take = |name: &str| fields.remove(name).flatten();
        Ok(NewUser {
            user_id: take("user_id").unwrap_or_default(),
            name: take("name").unwrap_or_default(),
            email: take("email").unwrap_or_default(),
            department: take("department").unwrap_or_default(),
            start_date: take("start_date").unwrap_or_default(),
            job_title: take("job_title"),
            phone: take("phone"),
            end_date: take("end_date"),
            status: take("status"),
            alias_id: take("alias_id"),
        })
    }
    pub fn cells(&self) -> [String; 9] {
        [
            self.user_id.clone(),
            self.name.clone(),
            self.email.clone(),
            self.department.clone(),
            self.job_title.clone().unwrap_or_default(),
            self.phone.clone().unwrap_or_default(),
            self.start_date.clone(),
            self.end_date.clone().unwrap_or_default(),
            self.status.clone().unwrap_or_else(|| "active".into()),
        ]
    }
}

/// A field of `PATCH /users/{id}`: absent (unchanged), null (cleared) or a value.
#[derive(Debug, Default)]
pub enum Edit {
    #[default]
    Keep,
    Clear,
    Set(String),
}

/// `PATCH /users/{id}`.
#[derive(Debug, Default)]
pub struct UserPatch {
    pub name: Edit,
    pub email: Edit,
    pub department: Edit,
    pub job_title: Edit,
    pub phone: Edit,
    pub start_date: Edit,
    pub end_date: Edit,
    pub status: Edit,
    pub alias_id: Edit,
}

impl UserPatch {
    pub fn from_json(body: &Value) -> Result<UserPatch, ApiError> {
        let mut fields = read_fields(
            body,
            &[],
            &[
                "name",
                "email",
                "department",
                "job_title",
                "phone",
                "start_date",
                "end_date",
                "status",
                "alias_id",
            ],
        )?;
        let mut edit = |name: &str| match fields.remove(name) {
            None => Edit::Keep,
            Some(None) => Edit::Clear,
            Some(Some(value)) => Edit::Set(value),
        };
        Ok(UserPatch {
            name: edit("name"),
            email: edit("email"),
            department: edit("department"),
            job_title: edit("job_title"),
            phone: edit("phone"),
            start_date: edit("start_date"),
            end_date: edit("end_date"),
            status: edit("status"),
            alias_id: edit("alias_id"),
        })
    }

    pub fn is_empty(&self) -> bool {
        [
            &self.name,
            &self.email,
            &self.department,
            &self.job_title,
            &self.phone,
            &self.start_date,
            &self.end_date,
            &self.status,
            &self.alias_id,
        ]
        .iter()
        .all(|e| matches!(e, Edit::Keep))
    }

    /// The user's cells after the patch, from their cells now. Required fields cannot be cleared.
    pub fn apply(&self, current: [String; 9]) -> Result<[String; 9], ApiError> {
        let mut cells = current;
        let edits = [
            (1, "name", &self.name, false),
            (2, "email", &self.email, false),
            (3, "department", &self.department, false),
            (4, "job_title", &self.job_title, true),
            (5, "phone", &self.phone, true),
            (6, "start_date", &self.start_date, false),
            (7, "end_date", &self.end_date, true),
            (8, "status", &self.status, false),
        ];
        let mut details = Vec::new();
        for (index, field, edit, clearable) in edits {
            match edit {
                Edit::Keep => {}
                Edit::Set(value) => cells[index] = value.clone(),
                Edit::Clear if clearable => cells[index] = String::new(),
                Edit::Clear => details.push((
                    field.to_string(),
                    "is required; it cannot be null".to_string(),
                )),
            }
        }
        if details.is_empty() {
            Ok(cells)
        } else {
            Err(ApiError::invalid(details))
        }
    }
}

/// A directory user's cells in the Appendix 2 order, dates ISO, as provisioning wrote them.
pub fn current_cells(user: &UserView) -> [String; 9] {
    let attribute = |name: &str| user.attributes.get(name).cloned().unwrap_or_default();
    [
        user.username.clone(),
        attribute("name"),
        attribute("email"),
        user.department
            .clone()
            .unwrap_or_else(|| attribute("custom:department")),
        attribute("custom:job_title"),
        attribute("custom:phone"),
        attribute("custom:start_date"),
        attribute("custom:end_date"),
        user.attributes
            .get("custom:status")
            .cloned()
            .unwrap_or_else(|| "active".into()),
    ]
}

/// Checks cells by the file's rules; a failure names each field and why.
pub fn check(cells: &[String; 9]) -> Result<UserRecord, ApiError> {
    let refs: [&str; 9] = std::array::from_fn(|i| cells[i].as_str());
    rows::check_cells(1, refs).map_err(|rejection| {
        ApiError::invalid(
            rejection
                .reasons
                .into_iter()
                .map(|reason| {
                    let field = reason
                        .split_whitespace()
                        .next()
                        .filter(|w| rows::COLUMNS.contains(w))
                        .unwrap_or("body")
                        .to_string();
                    (field, reason)
                })
                .collect(),
        )
    })
}

/// An alias beside the employee number: 1 to 64 letters, digits, `.`, `_`, `-` or `@`.
pub fn check_alias(alias: &str) -> Result<(), ApiError> {
    let ok = !alias.is_empty()
        && alias.chars().count() <= 64
        && alias
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
        && !alias.starts_with(['-', '@']);
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(vec![(
            "alias_id".into(),
            "alias_id is 1 to 64 letters, digits, '.', '_', '-' or '@', not starting with '-' or '@'"
                .into(),
        )]))
    }
}

/// The names of the attributes whose values differ between two attribute sets.
pub fn changed_names(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> Vec<String> {
    after
        .iter()
        .filter(|(name, value)| before.get(*name) != Some(value))
        .map(|(name, _)| name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a panic is the failure report"
    )]

    use super::*;

    fn cells(values: [&str; 9]) -> [String; 9] {
        values.map(str::to_string)
    }

    #[test]
    fn file_rules_name_each_failing_field() {
        let error = check(&cells([
            "123456789012345678901234567890123",
            "=cmd|' /C calc'!A0",
            "a@example.com",
            "sales",
            "",
            "",
            "2026/13/01",
            "",
            "active",
        ]))
        .unwrap_err();
        let fields: Vec<&str> = error.details.iter().map(|(f, _)| f.as_str()).collect();
        assert!(fields.contains(&"user_id"), "{fields:?}");
        assert!(fields.contains(&"name"), "{fields:?}");
        assert!(fields.contains(&"start_date"), "{fields:?}");
        assert_eq!(error.status, 400);
    }

    #[test]
    fn a_patch_sets_clears_and_refuses_to_clear_required_fields() {
        let current = cells([
            "001",
            "A",
            "a@example.com",
            "sales",
            "Lead",
            "",
            "2024-04-01",
            "",
            "active",
        ]);
        let patch = UserPatch::from_json(&json!({"name": "B", "job_title": null})).unwrap();
        let after = patch.apply(current.clone()).unwrap();
        assert_eq!(after[1], "B");
        assert_eq!(after[4], "");
        assert_eq!(after[2], "a@example.com");
        let patch = UserPatch::from_json(&json!({"email": null})).unwrap();
        assert_eq!(patch.apply(current).unwrap_err().details[0].0, "email");
        let error = UserPatch::from_json(&json!({"password": "x", "name": 1})).unwrap_err();
        let fields: Vec<&str> = error.details.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["name", "password"]);
        assert!(UserPatch::from_json(&json!({})).unwrap().is_empty());
    }

    #[test]
    fn a_new_user_names_every_missing_or_mistyped_field() {
        let error =
            NewUser::from_json(&json!({"user_id": "1", "name": null, "phone": 3})).unwrap_err();
        let fields: Vec<&str> = error.details.iter().map(|(f, _)| f.as_str()).collect();
        for field in ["name", "phone", "email", "department", "start_date"] {
            assert!(fields.contains(&field), "{field} in {fields:?}");
        }
    }

    #[test]
    fn aliases_are_plain_identifiers() {
        assert!(check_alias("t.yamada").is_ok());
        assert!(check_alias("=1+1").is_err());
        assert!(check_alias("").is_err());
        assert!(check_alias(&"a".repeat(65)).is_err());
        assert!(check_alias("@home").is_err());
    }
}
