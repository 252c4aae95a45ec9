//! API keys for departments and applications: the credential a program uses where a person would
//! sign in.
//!
//! A key reads `gwk_<id>_<secret>`: `id` is 16 lowercase hex digits (64 random bits, the table's key,
//! safe to show), `secret` 43 base64url characters (256 random bits). A JWT's compact form starts with
//! its base64url-encoded JSON header, always `e` (`{` -> `ey...`), so the `gwk_` prefix tells a key
//! from a token without guessing, and a token is never looked up as a key nor a key verified as a JWT.
//!
//! The table keeps only the SHA-256 of the whole key. A slow password hash protects guessable secrets;
//! 256 random bits are not guessable, and a fast hash keeps the authorizer's check in microseconds.
//! The key is shown once, when issued (or rotated), and never again.
//!
//! Invariant: a request is let through as a key's principal only if the presented text parses as a
//! key, the table lists its id, the SHA-256 of the whole text equals the stored hash (compared in
//! constant time), and the key is neither revoked nor past `expires_at`; its scopes and department
//! are the ones stored, never the request's. The authorizer reads the table through a [`Mirror`]:
//! a revocation takes effect within the mirror's `ttl`, the same staleness bound as a user's.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::mirror::{self, Entry, Item, Mirror};

pub const KEY_PREFIX: &str = "gwk_";
const ID_HEX_DIGITS: usize = 16;
const SECRET_CHARS: usize = 43;
/// The whole key's length: prefix, id, separator, secret.
pub const KEY_LEN: usize = KEY_PREFIX.len() + ID_HEX_DIGITS + 1 + SECRET_CHARS;
/// The subject a key's requests are audited under (`apikey:<id>`): never a user's `sub`.
pub const SUBJECT_PREFIX: &str = "apikey:";
/// The principal's `auth_method` for a key.
pub const AUTH_METHOD: &str = "api-key";

/// Whether a presented credential is meant as an API key (see the module documentation).
pub fn is_api_key(token: &str) -> bool {
    token.starts_with(KEY_PREFIX)
}

/// A key id: 16 lowercase hex digits.
pub fn valid_id(id: &str) -> bool {
    id.len() == ID_HEX_DIGITS && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The id of a well-formed key, or None.
pub fn parse(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_').filter(|_| key.len() == KEY_LEN)?;
    let secret_ok = secret.len() == SECRET_CHARS
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
    (valid_id(id) && secret_ok).then_some(id)
}

/// The stored form of a key: lowercase hex SHA-256 of its whole text.
pub fn hash(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `key` hashes to `stored`, in time independent of where they differ.
pub fn matches(key: &str, stored: &str) -> bool {
    let presented = hash(key);
    presented.len() == stored.len()
        && presented
            .bytes()
            .zip(stored.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// A new key from the system's random source: (the key, its id).
pub fn generate() -> Result<(String, String), ApiKeyError> {
    use aws_lc_rs::rand::SecureRandom;
    let random = aws_lc_rs::rand::SystemRandom::new();
    let mut id = [0u8; ID_HEX_DIGITS / 2];
    let mut secret = [0u8; 32];
    random
        .fill(&mut id)
        .and_then(|()| random.fill(&mut secret))
        .map_err(|_| ApiKeyError::Store("no random bytes from the system".into()))?;
    let id = hex(&id);
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    Ok((format!("{KEY_PREFIX}{id}_{secret}"), id))
}

/// One key as the table keeps it (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: String,
    pub hash: String,
    /// What the key is for, as its issuer named it.
    pub name: String,
    pub department: String,
    pub scopes: Vec<String>,
    pub created_at: String,
    pub created_by: String,
    /// Epoch seconds; the key is refused from then on.
    pub expires_at: u64,
    pub revoked_at: Option<String>,
    pub revoked_by: Option<String>,
    /// The key this one replaced, when issued by a rotation.
    pub rotated_from: Option<String>,
    /// The key that replaced this one.
    pub replaced_by: Option<String>,
    pub last_used_at: Option<String>,
}

/// A key's state at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Active,
    Revoked,
    Expired,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Revoked => "revoked",
            Status::Expired => "expired",
        }
    }
}

impl ApiKeyRecord {
    pub fn status(&self, now_secs: u64) -> Status {
        if self.revoked_at.is_some() {
            Status::Revoked
        } else if now_secs >= self.expires_at {
            Status::Expired
        } else {
            Status::Active
        }
    }

    pub fn subject(&self) -> String {
        format!("{SUBJECT_PREFIX}{}", self.id)
    }

    fn from_item(item: &Item) -> Option<ApiKeyRecord> {
        let text = |name| mirror::text(item, name);
        Some(ApiKeyRecord {
            id: text("key_id")?,
            hash: text("hash")?,
            name: text("name").unwrap_or_default(),
            department: text("department")?,
            scopes: item
                .get("scopes")
                .and_then(|v| v.as_l().ok())
                .map(|list| list.iter().filter_map(|v| v.as_s().ok().cloned()).collect())
                .unwrap_or_default(),
            created_at: text("created_at").unwrap_or_default(),
            created_by: text("created_by").unwrap_or_default(),
            expires_at: mirror::number(item, "expires_at")?,
            revoked_at: text("revoked_at"),
            revoked_by: text("revoked_by"),
            rotated_from: text("rotated_from"),
            replaced_by: text("replaced_by"),
            last_used_at: text("last_used_at"),
        })
    }

    fn to_item(&self) -> Item {
        let mut item: Item = HashMap::new();
        let s = |v: &str| AttributeValue::S(v.to_string());
        item.insert("key_id".into(), s(&self.id));
        item.insert("hash".into(), s(&self.hash));
        item.insert("name".into(), s(&self.name));
        item.insert("department".into(), s(&self.department));
        item.insert(
            "scopes".into(),
            AttributeValue::L(self.scopes.iter().map(|x| s(x)).collect()),
        );
        item.insert("created_at".into(), s(&self.created_at));
        item.insert("created_by".into(), s(&self.created_by));
        item.insert(
            "expires_at".into(),
            AttributeValue::N(self.expires_at.to_string()),
        );
        for (name, value) in [
            ("revoked_at", &self.revoked_at),
            ("revoked_by", &self.revoked_by),
            ("rotated_from", &self.rotated_from),
            ("replaced_by", &self.replaced_by),
        ] {
            if let Some(v) = value {
                item.insert(name.into(), s(v));
            }
        }
        for (name, value) in mirror::update_marks() {
            item.insert(name.into(), value);
        }
        item
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiKeyError {
    #[error("no API key {0}")]
    NoSuchKey(String),
    #[error("API key {0} is {1}")]
    NotActive(String, &'static str),
    #[error("API key table: {0}")]
    Store(String),
}

/// The table, for the admin API, the audit writer (last use) and the authorizer's mirror.
#[derive(Clone)]
pub struct ApiKeys {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

fn store_error<E: std::error::Error + 'static>(e: E) -> ApiKeyError {
    ApiKeyError::Store(aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string())
}

fn condition_failed<E>(error: &aws_sdk_dynamodb::error::SdkError<E>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    error
        .as_service_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "ConditionalCheckFailedException")
}

impl ApiKeys {
    pub fn new(client: aws_sdk_dynamodb::Client, table: String) -> Self {
        ApiKeys { client, table }
    }

    pub fn from_sdk(sdk: &aws_config::SdkConfig, table: String) -> Self {
        ApiKeys::new(aws_sdk_dynamodb::Client::new(sdk), table)
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Stores a new key; refuses an id already taken (64 random bits: only ever by a retried write).
    pub async fn create(&self, record: &ApiKeyRecord) -> Result<(), ApiKeyError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(record.to_item()))
            .condition_expression("attribute_not_exists(key_id)")
            .send()
            .await
            .map_err(store_error)?;
        Ok(())
    }

    /// The key's record (a strongly consistent read).
    pub async fn get(&self, id: &str) -> Result<ApiKeyRecord, ApiKeyError> {
        let item = mirror::get_consistent(&self.client, &self.table, ("key_id", id))
            .await
            .map_err(store_error)?;
        item.as_ref()
            .and_then(ApiKeyRecord::from_item)
            .ok_or_else(|| ApiKeyError::NoSuchKey(id.to_string()))
    }

    /// Every key, through the update index (keys are few: one per department or application).
    pub async fn list(&self) -> Result<Vec<ApiKeyRecord>, ApiKeyError> {
        let items = mirror::query_changed_since(&self.client, &self.table, 0)
            .await
            .map_err(store_error)?;
        let mut keys: Vec<ApiKeyRecord> =
            items.iter().filter_map(ApiKeyRecord::from_item).collect();
        keys.sort_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)));
        Ok(keys)
    }

    /// Revokes the key; revoking a revoked key keeps the first revocation's time and actor.
    pub async fn revoke(
        &self,
        id: &str,
        by: &str,
        now_rfc3339: &str,
    ) -> Result<ApiKeyRecord, ApiKeyError> {
        let [(p_name, p_value), (u_name, u_value)] = mirror::update_marks();
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("key_id", AttributeValue::S(id.to_string()))
            .update_expression(format!(
                "SET revoked_at = if_not_exists(revoked_at, :t), revoked_by = if_not_exists(revoked_by, :b), {p_name} = :p, {u_name} = :u"
            ))
            .condition_expression("attribute_exists(key_id)")
            .expression_attribute_values(":t", AttributeValue::S(now_rfc3339.to_string()))
            .expression_attribute_values(":b", AttributeValue::S(by.to_string()))
            .expression_attribute_values(":p", p_value)
            .expression_attribute_values(":u", u_value)
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(output) => output
                .attributes
                .as_ref()
                .and_then(ApiKeyRecord::from_item)
                .ok_or_else(|| ApiKeyError::Store("the revoked key did not read back".into())),
            Err(error) if condition_failed(&error) => Err(ApiKeyError::NoSuchKey(id.to_string())),
            Err(error) => Err(store_error(error)),
        }
    }

    /// Marks `id` replaced by `successor`, refused from `expires_at` on (sooner than it was): the old
    /// key's grace period after a rotation. Only an active key may be replaced, once.
    pub async fn replace(
        &self,
        id: &str,
        successor: &str,
        expires_at: u64,
        now_secs: u64,
    ) -> Result<(), ApiKeyError> {
        let [(p_name, p_value), (u_name, u_value)] = mirror::update_marks();
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("key_id", AttributeValue::S(id.to_string()))
            .update_expression(format!(
                "SET replaced_by = :s, expires_at = :x, {p_name} = :p, {u_name} = :u"
            ))
            .condition_expression(
                "attribute_exists(key_id) AND attribute_not_exists(revoked_at) AND attribute_not_exists(replaced_by) AND expires_at > :now AND expires_at >= :x",
            )
            .expression_attribute_values(":s", AttributeValue::S(successor.to_string()))
            .expression_attribute_values(":x", AttributeValue::N(expires_at.to_string()))
            .expression_attribute_values(":now", AttributeValue::N(now_secs.to_string()))
            .expression_attribute_values(":p", p_value)
            .expression_attribute_values(":u", u_value)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if condition_failed(&error) => {
                let record = self.get(id).await?;
                let state = if record.replaced_by.is_some() {
                    "already rotated"
                } else {
                    record.status(now_secs).as_str()
                };
                Err(ApiKeyError::NotActive(id.to_string(), state))
            }
            Err(error) => Err(store_error(error)),
        }
    }

    /// Undoes [`Self::replace`] after the successor could not be stored.
    pub async fn unreplace(&self, id: &str, expires_at: u64) -> Result<(), ApiKeyError> {
        let [(p_name, p_value), (u_name, u_value)] = mirror::update_marks();
        self.client
            .update_item()
            .table_name(&self.table)
            .key("key_id", AttributeValue::S(id.to_string()))
            .update_expression(format!(
                "SET expires_at = :x, {p_name} = :p, {u_name} = :u REMOVE replaced_by"
            ))
            .condition_expression("attribute_exists(key_id)")
            .expression_attribute_values(":x", AttributeValue::N(expires_at.to_string()))
            .expression_attribute_values(":p", p_value)
            .expression_attribute_values(":u", u_value)
            .send()
            .await
            .map_err(store_error)?;
        Ok(())
    }

    /// Records a use of the key at `at_ms`, unless a later one is recorded. Not an update of the
    /// index: the authorizer does not need it, so its mirror does not read the key again.
    pub async fn touch(&self, id: &str, at_ms: u64) -> Result<(), ApiKeyError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("key_id", AttributeValue::S(id.to_string()))
            .update_expression("SET last_used_ms = :ms, last_used_at = :t")
            .condition_expression(
                "attribute_exists(key_id) AND (attribute_not_exists(last_used_ms) OR last_used_ms < :ms)",
            )
            .expression_attribute_values(":ms", AttributeValue::N(at_ms.to_string()))
            .expression_attribute_values(
                ":t",
                AttributeValue::S(crate::audit::clock::rfc3339_from_millis(at_ms)),
            )
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if condition_failed(&error) => Ok(()),
            Err(error) => Err(store_error(error)),
        }
    }

    /// Whether the table answers (the admin API's health check).
    pub async fn check(&self) -> Result<(), ApiKeyError> {
        match self.get("0000000000000000").await {
            Ok(_) | Err(ApiKeyError::NoSuchKey(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The authorizer's copy of the table.
pub type ApiKeyList = Mirror<ApiKeys>;

impl mirror::Source for ApiKeys {
    type Record = ApiKeyRecord;
    type Error = ApiKeyError;
    async fn changed_since(&self, since_ms: u64) -> Result<Vec<Entry<ApiKeyRecord>>, ApiKeyError> {
        let items = mirror::query_changed_since(&self.client, &self.table, since_ms)
            .await
            .map_err(store_error)?;
        Ok(items
            .iter()
            .filter_map(|item| {
                let record = ApiKeyRecord::from_item(item)?;
                Some(Entry {
                    key: record.id.clone(),
                    // Expired keys stay listed, so a caller learns its key expired rather than
                    // that it is unknown.
                    expires_at: None,
                    updated_ms: mirror::number(item, mirror::UPDATED_MS_ATTRIBUTE).unwrap_or(0),
                    record,
                })
            })
            .collect())
    }
}

/// Why a presented key is refused.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("the API key is malformed")]
    Malformed,
    #[error("the API key is not known")]
    Unknown,
    #[error("the API key was revoked")]
    Revoked,
    #[error("the API key has expired")]
    Expired,
    /// The table could not be read: the caller fails closed (500).
    #[error("API keys could not be checked: {0}")]
    Unavailable(ApiKeyError),
}

/// A key the mirror does not hold yet (issued since its last poll) makes it poll again, at most this
/// often: a new key works within about this long (plus the index's own propagation).
pub const NEW_KEY_REFRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// The key's record if `presented` is a valid, active key (the module's invariant).
pub async fn authenticate(
    keys: &ApiKeyList,
    presented: &str,
    now_secs: u64,
) -> Result<ApiKeyRecord, Refusal> {
    let id = parse(presented).ok_or(Refusal::Malformed)?;
    let record = keys
        .get_or_refresh(id, NEW_KEY_REFRESH)
        .await
        .map_err(Refusal::Unavailable)?
        .ok_or(Refusal::Unknown)?;
    if !matches(presented, &record.hash) {
        return Err(Refusal::Unknown);
    }
    match record.status(now_secs) {
        Status::Active => Ok(record),
        Status::Revoked => Err(Refusal::Revoked),
        Status::Expired => Err(Refusal::Expired),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_keys_parse_and_hash_to_themselves_only() {
        let (key, id) = generate().unwrap();
        assert_eq!(key.len(), KEY_LEN);
        assert!(is_api_key(&key));
        assert_eq!(parse(&key), Some(id.as_str()));
        let stored = hash(&key);
        assert!(matches(&key, &stored));
        let (other, _) = generate().unwrap();
        assert_ne!(key, other);
        assert!(!matches(&other, &stored));
        assert!(!stored.contains(&key[KEY_PREFIX.len() + ID_HEX_DIGITS + 1..]));
    }

    #[test]
    fn malformed_keys_do_not_parse() {
        let (key, _) = generate().unwrap();
        let secret = &key[KEY_PREFIX.len() + ID_HEX_DIGITS + 1..];
        for bad in [
            String::new(),
            "gwk_".into(),
            key[..key.len() - 1].to_string(),
            format!("{key}a"),
            format!("gwk_ABCDEF0123456789_{secret}"),
            format!("gwk_0123456789abcdeg_{secret}"),
            format!("gwk_0123456789abcdef-{secret}"),
            format!(
                "gwk_0123456789abcdef_{}",
                secret.replacen(&secret[..1], "+", 1)
            ),
            format!("gwk_0123456789abcde_f{secret}"),
            key.replacen("gwk_", "GWK_", 1),
        ] {
            assert_eq!(parse(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn status_follows_revocation_then_expiry() {
        let mut record = ApiKeyRecord {
            id: "0123456789abcdef".into(),
            hash: String::new(),
            name: "n".into(),
            department: "sales".into(),
            scopes: vec!["text".into()],
            created_at: String::new(),
            created_by: String::new(),
            expires_at: 100,
            revoked_at: None,
            revoked_by: None,
            rotated_from: None,
            replaced_by: None,
            last_used_at: None,
        };
        assert_eq!(record.status(99), Status::Active);
        assert_eq!(record.status(100), Status::Expired);
        record.revoked_at = Some("t".into());
        assert_eq!(record.status(0), Status::Revoked);
        assert_eq!(ApiKeyRecord::from_item(&record.to_item()), Some(record));
    }

    proptest! {
        /// No JWT's compact form (a base64url JSON header first) is taken for a key, and nothing but
        /// the exact grammar parses.
        #[test]
        fn jwts_are_never_keys(header in "[a-zA-Z0-9 :\",]{0,40}", rest in "[A-Za-z0-9_.-]{0,80}") {
            let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{{{header}}}"));
            let jwt = format!("{encoded}.{rest}");
            prop_assert!(!is_api_key(&jwt));
        }

        #[test]
        fn only_the_grammar_parses(text in "gwk_[0-9a-f_A-Z-]{0,70}") {
            if let Some(id) = parse(&text) {
                prop_assert_eq!(text.len(), KEY_LEN);
                prop_assert!(valid_id(id));
                prop_assert_eq!(&text[4..20], id);
            }
        }
    }
}
