//! `/apikeys`: issuing, listing, rotating and revoking department and application API keys
//! (`gateway_shared::apikeys` keeps them; the authorizer accepts them).
//!
//! A key is shown once, in the answer that issues it; every other answer shows its id and prefix
//! only. A key may hold only scopes the policy defines and no admin scope: a program's credential
//! reaches the provider routes, never the admin API.

use gateway_shared::apikeys::{self, ApiKeyError, ApiKeyRecord, Status};
use gateway_shared::audit::clock;
use gateway_shared::scopes::Policy;
use serde_json::{json, Map, Value};

use crate::ApiError;

/// A key's life when the request names none, and the longest it may have.
pub const DEFAULT_LIFETIME_DAYS: u64 = 90;
pub const MAX_LIFETIME_DAYS: u64 = 365;
/// How long a rotated key keeps working beside its successor, when the request names no grace.
pub const DEFAULT_GRACE_SECS: u64 = 24 * 3600;
pub const MAX_GRACE_SECS: u64 = 7 * 24 * 3600;
const MAX_NAME_CHARS: usize = 64;

impl From<ApiKeyError> for ApiError {
    fn from(error: ApiKeyError) -> Self {
        match error {
            ApiKeyError::NoSuchKey(id) => {
                ApiError::new(404, "not_found", format!("API key {id} does not exist"))
            }
            ApiKeyError::NotActive(id, state) => ApiError::new(
                409,
                "conflict",
                format!("API key {id} is {state}; only an active key can be rotated"),
            ),
            other @ ApiKeyError::Store(_) => ApiError::internal(other),
        }
    }
}

/// What a new key is for, as the request asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKey {
    pub name: String,
    pub department: String,
    pub scopes: Vec<String>,
    pub lifetime_days: u64,
}

/// Reads and checks an issue request, naming every broken rule at once.
pub fn new_key(
    body: &Value,
    departments: &std::collections::BTreeSet<String>,
    policy: &Policy,
) -> Result<NewKey, ApiError> {
    let mut details: Vec<(String, String)> = Vec::new();
    let object = body.as_object().cloned().unwrap_or_default();
    for field in object.keys() {
        if !matches!(
            field.as_str(),
            "name" | "department" | "scopes" | "expires_in_days"
        ) {
            details.push((
                field.clone(),
                format!("{field} is not a field of an API key"),
            ));
        }
    }
    let name = match object.get("name").and_then(Value::as_str).map(str::trim) {
        Some(name)
            if !name.is_empty()
                && name.chars().count() <= MAX_NAME_CHARS
                && !name.chars().any(char::is_control) =>
        {
            name.to_string()
        }
        _ => {
            details.push((
                "name".into(),
                format!(
                    "name is required: 1 to {MAX_NAME_CHARS} characters, no control characters"
                ),
            ));
            String::new()
        }
    };
    let department = match object.get("department").and_then(Value::as_str) {
        Some(d) if departments.contains(d) => d.to_string(),
        _ => {
            let known: Vec<&str> = departments.iter().map(String::as_str).collect();
            details.push((
                "department".into(),
                format!("department is required, one of: {}", known.join(", ")),
            ));
            String::new()
        }
    };
    let scopes = scopes(object.get("scopes"), policy, &mut details);
    let lifetime_days = lifetime_days(&object, &mut details);
    if !details.is_empty() {
        return Err(ApiError::invalid(details));
    }
    Ok(NewKey {
        name,
        department,
        scopes,
        lifetime_days,
    })
}

fn scopes(
    value: Option<&Value>,
    policy: &Policy,
    details: &mut Vec<(String, String)>,
) -> Vec<String> {
    let Some(list) = value.and_then(Value::as_array).filter(|l| !l.is_empty()) else {
        details.push((
            "scopes".into(),
            "scopes is required: a non-empty list of the scope policy's scopes".into(),
        ));
        return Vec::new();
    };
    let mut scopes = Vec::new();
    for item in list {
        match item.as_str() {
            Some(scope) if gateway_shared::scopes::is_admin_scope(scope) => details.push((
                "scopes".into(),
                format!("{scope} is an admin scope; an API key cannot hold one"),
            )),
            Some(scope) if policy.knows(scope) => {
                if !scopes.iter().any(|s| s == scope) {
                    scopes.push(scope.to_string());
                }
            }
            _ => details.push((
                "scopes".into(),
                format!("{item} is not a scope of the scope policy"),
            )),
        }
    }
    scopes
}

fn lifetime_days(object: &Map<String, Value>, details: &mut Vec<(String, String)>) -> u64 {
    match object.get("expires_in_days") {
        None => DEFAULT_LIFETIME_DAYS,
        Some(v) => match v.as_u64().filter(|d| (1..=MAX_LIFETIME_DAYS).contains(d)) {
            Some(days) => days,
            None => {
                details.push((
                    "expires_in_days".into(),
                    format!("expires_in_days is a whole number from 1 to {MAX_LIFETIME_DAYS}"),
                ));
                DEFAULT_LIFETIME_DAYS
            }
        },
    }
}

/// The grace of a rotation request (`{"grace_seconds": n}`, optional; an empty body is none).
pub fn grace_secs(body: &Value) -> Result<u64, ApiError> {
    let object = body.as_object().cloned().unwrap_or_default();
    let mut details = Vec::new();
    for field in object.keys().filter(|f| *f != "grace_seconds") {
        details.push((
            field.clone(),
            format!("{field} is not a field of a rotation"),
        ));
    }
    let grace = match object.get("grace_seconds") {
        None => DEFAULT_GRACE_SECS,
        Some(v) => v
            .as_u64()
            .filter(|g| *g <= MAX_GRACE_SECS)
            .unwrap_or_else(|| {
                details.push((
                    "grace_seconds".into(),
                    format!("grace_seconds is a whole number from 0 to {MAX_GRACE_SECS}"),
                ));
                0
            }),
    };
    if details.is_empty() {
        Ok(grace)
    } else {
        Err(ApiError::invalid(details))
    }
}

/// A record for a new key, and the key (shown once).
pub fn issue(
    new: &NewKey,
    created_by: &str,
    now_ms: u64,
    rotated_from: Option<&str>,
) -> Result<(ApiKeyRecord, String), ApiError> {
    let (key, id) = apikeys::generate().map_err(ApiError::internal)?;
    let record = ApiKeyRecord {
        hash: apikeys::hash(&key),
        id,
        name: new.name.clone(),
        department: new.department.clone(),
        scopes: new.scopes.clone(),
        created_at: clock::rfc3339_from_millis(now_ms),
        created_by: created_by.to_string(),
        expires_at: now_ms / 1000 + new.lifetime_days * 86_400,
        revoked_at: None,
        revoked_by: None,
        rotated_from: rotated_from.map(str::to_string),
        replaced_by: None,
        last_used_at: None,
    };
    Ok((record, key))
}

/// A key as the admin API shows it: never the key, never its hash.
pub fn view(record: &ApiKeyRecord, now_secs: u64) -> Value {
    json!({
        "id": record.id,
        "prefix": format!("{}{}", apikeys::KEY_PREFIX, record.id),
        "name": record.name,
        "department": record.department,
        "scopes": record.scopes,
        "status": record.status(now_secs).as_str(),
        "created_at": record.created_at,
        "created_by": record.created_by,
        "expires_at": clock::rfc3339_from_millis(record.expires_at.saturating_mul(1000)),
        "revoked_at": record.revoked_at,
        "revoked_by": record.revoked_by,
        "rotated_from": record.rotated_from,
        "replaced_by": record.replaced_by,
        "last_used_at": record.last_used_at,
    })
}

/// The answer that shows a key once.
pub fn issued(record: &ApiKeyRecord, key: &str, now_secs: u64) -> Value {
    json!({ "key": key, "api_key": view(record, now_secs) })
}

/// The list filters: `department`, `status` (active, revoked, expired).
pub fn filter(
    keys: Vec<ApiKeyRecord>,
    department: Option<&str>,
    status: Option<&str>,
    now_secs: u64,
) -> Result<Vec<ApiKeyRecord>, ApiError> {
    let status = match status {
        None => None,
        Some(s) => Some(
            [Status::Active, Status::Revoked, Status::Expired]
                .into_iter()
                .find(|candidate| candidate.as_str() == s)
                .ok_or_else(|| {
                    ApiError::bad_request("status is one of: active, revoked, expired")
                })?,
        ),
    };
    Ok(keys
        .into_iter()
        .filter(|k| department.is_none_or(|d| k.department == d))
        .filter(|k| status.is_none_or(|s| k.status(now_secs) == s))
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a panic is the failure report"
    )]

    use super::*;

    fn policy() -> Policy {
        gateway_shared::proxy::load_policy(None).unwrap()
    }

    fn departments() -> std::collections::BTreeSet<String> {
        ["sales".to_string(), "hr".to_string()]
            .into_iter()
            .collect()
    }

    #[test]
    fn a_good_request_reads_with_defaults() {
        let new = new_key(
            &json!({"name": "billing bot", "department": "sales", "scopes": ["text", "text"]}),
            &departments(),
            &policy(),
        )
        .unwrap();
        assert_eq!(new.scopes, vec!["text".to_string()]);
        assert_eq!(new.lifetime_days, DEFAULT_LIFETIME_DAYS);
    }

    #[test]
    fn every_broken_rule_is_named_and_admin_scopes_are_refused() {
        let error = new_key(
            &json!({"name": "", "department": "nowhere", "scopes": ["admin:users", "nope"],
                    "expires_in_days": 400, "owner": "x"}),
            &departments(),
            &policy(),
        )
        .unwrap_err();
        let fields: Vec<&str> = error.details.iter().map(|(f, _)| f.as_str()).collect();
        for field in ["owner", "name", "department", "scopes", "expires_in_days"] {
            assert!(fields.contains(&field), "{field} in {fields:?}");
        }
        assert!(error.message.contains("admin scope"));
        assert!(
            error.message.contains("nope is not a scope")
                || error.message.contains("\"nope\" is not a scope")
        );
    }

    #[test]
    fn an_issued_key_verifies_against_its_record_and_its_view_hides_it() {
        let new = NewKey {
            name: "n".into(),
            department: "hr".into(),
            scopes: vec!["text:openai".into()],
            lifetime_days: 1,
        };
        let (record, key) = issue(&new, "admin", 1_000_000, None).unwrap();
        assert!(apikeys::matches(&key, &record.hash));
        assert_eq!(record.expires_at, 1_000 + 86_400);
        let shown = view(&record, 1_000).to_string();
        assert!(!shown.contains(&key) && !shown.contains(&record.hash));
        assert_eq!(view(&record, 1_000)["status"], "active");
        assert_eq!(view(&record, 1_000 + 86_400)["status"], "expired");
    }

    #[test]
    fn grace_is_bounded() {
        assert_eq!(grace_secs(&json!({})).unwrap(), DEFAULT_GRACE_SECS);
        assert_eq!(grace_secs(&json!({"grace_seconds": 0})).unwrap(), 0);
        assert!(grace_secs(&json!({"grace_seconds": MAX_GRACE_SECS + 1})).is_err());
        assert!(grace_secs(&json!({"grace_seconds": -1})).is_err());
        assert!(grace_secs(&json!({"other": 1})).is_err());
    }
}
