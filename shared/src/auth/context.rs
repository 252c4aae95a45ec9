//! The principal as the authorizer hands it to the route functions through API Gateway's
//! `requestContext.authorizer`. API Gateway allows only strings, numbers and booleans there, so scopes
//! travel as one space-separated string.

use std::collections::HashMap;

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthContext {
    pub subject: String,
    pub username: Option<String>,
    pub department: Option<String>,
    pub scopes: Vec<String>,
    pub auth_method: String,
    pub client_id: Option<String>,
    /// Where the client put its credential (`api-key-header`, `authorization-bearer`, ...), so the
    /// route's final audit record names it as the authorizer's refusals do.
    pub credential_source: Option<String>,
}

const SUBJECT: &str = "sub";
const USERNAME: &str = "username";
const DEPARTMENT: &str = "department";
const SCOPES: &str = "scopes";
const AUTH_METHOD: &str = "authMethod";
const CLIENT_ID: &str = "clientId";
const CREDENTIAL_SOURCE: &str = "credentialSource";

impl AuthContext {
    pub fn to_fields(&self) -> Map<String, Value> {
        let mut map = Map::new();
        map.insert(SUBJECT.into(), self.subject.clone().into());
        map.insert(SCOPES.into(), self.scopes.join(" ").into());
        map.insert(AUTH_METHOD.into(), self.auth_method.clone().into());
        for (key, value) in [
            (USERNAME, &self.username),
            (DEPARTMENT, &self.department),
            (CLIENT_ID, &self.client_id),
            (CREDENTIAL_SOURCE, &self.credential_source),
        ] {
            if let Some(v) = value {
                map.insert(key.into(), v.clone().into());
            }
        }
        map
    }

    /// Reads the context; `None` when the authorizer did not run (a misconfigured route must fail closed).
    pub fn from_fields(fields: &HashMap<String, Value>) -> Option<AuthContext> {
        let text = |key: &str| fields.get(key).and_then(Value::as_str).map(str::to_string);
        Some(AuthContext {
            subject: text(SUBJECT)?,
            username: text(USERNAME),
            department: text(DEPARTMENT),
            scopes: text(SCOPES)?
                .split_whitespace()
                .map(str::to_string)
                .collect(),
            auth_method: text(AUTH_METHOD)?,
            client_id: text(CLIENT_ID),
            credential_source: text(CREDENTIAL_SOURCE),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_string_fields() {
        let ctx = AuthContext {
            subject: "s".into(),
            username: Some("u".into()),
            department: None,
            scopes: vec!["text".into(), "audio:stt".into()],
            auth_method: "cognito".into(),
            client_id: Some("c".into()),
            credential_source: Some("api-key-header".into()),
        };
        let fields: HashMap<String, Value> = ctx.to_fields().into_iter().collect();
        assert!(fields.values().all(Value::is_string));
        assert_eq!(AuthContext::from_fields(&fields), Some(ctx));
        assert_eq!(AuthContext::from_fields(&HashMap::new()), None);
    }
}
