//! Token revocation the authorizer can see.
//!
//! Cognito access tokens are self-contained JWTs, valid until they expire (up to a day): disabling a
//! user or signing them out globally revokes their refresh tokens only. This table keeps, per user
//! (`sub`, never reused, unlike a user_id a returning employee gets again), whether the account is
//! enabled and the time before which its tokens are refused. The provisioner, the scheduler and the
//! admin API write it whenever they disable a user or sign one out; the authorizer reads it through
//! [`RevocationCache`], whose time to live is the documented staleness bound.
//!
//! Invariant: a token is refused when its user's record says disabled, or when it was issued before
//! the record's `revoked_before` (a token without `iat` counts as issued at 0).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use tokio::sync::RwLock;

/// The longest an access token lives in Cognito: a record that only revokes tokens older than itself
/// is moot after this, so it carries a DynamoDB time to live.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevocationRecord {
    pub enabled: bool,
    /// Epoch seconds; tokens issued earlier are refused.
    pub revoked_before: u64,
}

impl RevocationRecord {
    /// Why a token issued at `issued_at` is refused, if it is.
    pub fn refusal(&self, issued_at: Option<u64>) -> Option<&'static str> {
        if !self.enabled {
            return Some("the account is disabled");
        }
        if issued_at.unwrap_or(0) < self.revoked_before {
            return Some("the token was revoked (the user was signed out)");
        }
        None
    }
}

#[derive(Debug, thiserror::Error)]
#[error("revocation table {table}: {message}")]
pub struct RevocationError {
    pub table: String,
    pub message: String,
}

/// What a write is for; kept in the record for whoever reads the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    /// The account is disabled (or deleted): every token is refused until it is enabled again.
    Disable,
    /// The account is enabled again; tokens from before the disable stay refused.
    Enable,
    /// Signed out everywhere: tokens issued until now are refused; the account stays as it is.
    SignOut,
}

/// The table, for writers and for the cache.
#[derive(Clone)]
pub struct Revocations {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl Revocations {
    pub fn new(client: aws_sdk_dynamodb::Client, table: String) -> Self {
        Revocations { client, table }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    fn failed<E: std::error::Error + 'static>(&self) -> impl FnOnce(E) -> RevocationError + '_ {
        move |e| RevocationError {
            table: self.table.clone(),
            message: aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string(),
        }
    }

    /// The user's record (a strongly consistent read: the cache in front of it bounds staleness).
    pub async fn get(&self, sub: &str) -> Result<Option<RevocationRecord>, RevocationError> {
        let item = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("sub", AttributeValue::S(sub.to_string()))
            .consistent_read(true)
            .projection_expression("enabled, revoked_before")
            .send()
            .await
            .map_err(self.failed())?;
        Ok(item.item.map(|item| RevocationRecord {
            // A record without the flag was written by a sign-out of an enabled account.
            enabled: item
                .get("enabled")
                .and_then(|v| v.as_bool().ok())
                .copied()
                .unwrap_or(true),
            revoked_before: item
                .get("revoked_before")
                .and_then(|v| v.as_n().ok())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
        }))
    }

    /// Records a disable, an enable or a sign-out of `sub` at `now_secs`; answers the new
    /// `revoked_before` (tokens issued before it are refused).
    pub async fn record(
        &self,
        sub: &str,
        username: &str,
        what: Revocation,
        now_secs: u64,
    ) -> Result<u64, RevocationError> {
        // Tokens issued in the current second may predate the revocation: they go too (a user signing
        // in again within that second tries once more).
        let revoked_before = now_secs + 1;
        let expires_at = revoked_before + MAX_TOKEN_LIFETIME.as_secs();
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("sub", AttributeValue::S(sub.to_string()))
            .expression_attribute_values(":u", AttributeValue::S(username.to_string()))
            .expression_attribute_values(
                ":t",
                AttributeValue::S(crate::audit::clock::rfc3339_now()),
            )
            .expression_attribute_values(":rb", AttributeValue::N(revoked_before.to_string()));
        let result = match what {
            // No time to live: the account stays refused until enabled, however long that takes.
            Revocation::Disable => {
                update
                    .update_expression(
                        "SET enabled = :f, revoked_before = :rb, username = :u, reason = :r, updated_at = :t REMOVE expires_at",
                    )
                    .expression_attribute_values(":f", AttributeValue::Bool(false))
                    .expression_attribute_values(":r", AttributeValue::S("disabled".into()))
                    .send()
                    .await
            }
            // The tokens the disable refused expire within a day; so does the record.
            Revocation::Enable => {
                update
                    .update_expression(
                        "SET enabled = :e, revoked_before = :rb, username = :u, reason = :r, updated_at = :t, expires_at = :x",
                    )
                    .expression_attribute_values(":e", AttributeValue::Bool(true))
                    .expression_attribute_values(":r", AttributeValue::S("enabled".into()))
                    .expression_attribute_values(":x", AttributeValue::N(expires_at.to_string()))
                    .send()
                    .await
            }
            // A disabled account's record keeps no time to live (and stays disabled).
            Revocation::SignOut => {
                update
                    .update_expression(
                        "SET revoked_before = :rb, username = :u, reason = :r, updated_at = :t, expires_at = :x",
                    )
                    .condition_expression("attribute_not_exists(enabled) OR enabled = :e")
                    .expression_attribute_values(":e", AttributeValue::Bool(true))
                    .expression_attribute_values(":r", AttributeValue::S("signed out".into()))
                    .expression_attribute_values(":x", AttributeValue::N(expires_at.to_string()))
                    .send()
                    .await
            }
        };
        match result {
            Ok(_) => Ok(revoked_before),
            Err(error)
                if what == Revocation::SignOut
                    && error
                        .as_service_error()
                        .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                // Signing out a disabled account: move the time, keep it disabled and without expiry.
                self.client
                    .update_item()
                    .table_name(&self.table)
                    .key("sub", AttributeValue::S(sub.to_string()))
                    .update_expression("SET revoked_before = :rb, updated_at = :t")
                    .expression_attribute_values(
                        ":t",
                        AttributeValue::S(crate::audit::clock::rfc3339_now()),
                    )
                    .expression_attribute_values(
                        ":rb",
                        AttributeValue::N(revoked_before.to_string()),
                    )
                    .send()
                    .await
                    .map_err(self.failed())?;
                Ok(revoked_before)
            }
            Err(error) => Err(self.failed()(error)),
        }
    }

    /// Whether the table answers (the admin API's health check).
    pub async fn check(&self) -> Result<(), RevocationError> {
        self.get("health-check").await.map(|_| ())
    }
}

/// The authorizer's view of the table: each user's record (or its absence) is trusted for `ttl`, so a
/// revocation takes effect everywhere within `ttl`.
///
/// Requests do not wait for DynamoDB while a user keeps calling: once an entry is half its `ttl` old,
/// the next request starts one refresh in the background and is answered from the entry, which the
/// refresh replaces well before it expires. A request waits for DynamoDB only for a user not seen
/// within `ttl` (or whose background refresh failed).
#[derive(Clone)]
pub struct RevocationCache {
    inner: Arc<Inner>,
}

struct Inner {
    store: Revocations,
    ttl: Duration,
    entries: RwLock<HashMap<String, Entry>>,
}

#[derive(Clone, Copy)]
struct Entry {
    record: Option<RevocationRecord>,
    fetched: Instant,
    /// When a background refresh started; one at a time per user (a refresh frozen with its Lambda
    /// environment for longer than `ttl` counts as abandoned).
    refreshing: Option<Instant>,
}

/// More users than this in one execution environment's cache: expired entries are dropped first,
/// everything if that is not enough (memory stays bounded under a flood of distinct subjects).
const MAX_CACHED_USERS: usize = 50_000;

impl RevocationCache {
    pub fn new(store: Revocations, ttl: Duration) -> Self {
        RevocationCache {
            inner: Arc::new(Inner {
                store,
                ttl,
                entries: RwLock::new(HashMap::new()),
            }),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.inner.ttl
    }

    /// The record of `sub`, at most `ttl` old.
    pub async fn get(&self, sub: &str) -> Result<Option<RevocationRecord>, RevocationError> {
        let inner = &self.inner;
        let now = Instant::now();
        let cached = inner.entries.read().await.get(sub).copied();
        if let Some(entry) = cached {
            let age = now.duration_since(entry.fetched);
            if age < inner.ttl {
                if age >= inner.ttl / 2 && self.claim_refresh(sub, now).await {
                    let cache = self.clone();
                    let sub = sub.to_string();
                    tokio::spawn(async move {
                        if let Err(error) = cache.refresh(&sub).await {
                            tracing::warn!(%error, "revocation refresh failed; the next request reads again");
                        }
                    });
                }
                return Ok(entry.record);
            }
        }
        self.refresh(sub).await
    }

    /// Marks `sub` as being refreshed unless a live refresh is under way; whether this caller won.
    async fn claim_refresh(&self, sub: &str, now: Instant) -> bool {
        let mut entries = self.inner.entries.write().await;
        match entries.get_mut(sub) {
            Some(entry)
                if entry
                    .refreshing
                    .is_none_or(|started| now.duration_since(started) >= self.inner.ttl) =>
            {
                entry.refreshing = Some(now);
                true
            }
            _ => false,
        }
    }

    /// Reads `sub`'s record and keeps it. A failed read leaves the entry to expire (and clears the
    /// refresh mark, so the next request tries again).
    async fn refresh(&self, sub: &str) -> Result<Option<RevocationRecord>, RevocationError> {
        let inner = &self.inner;
        let read = inner.store.get(sub).await;
        let now = Instant::now();
        let mut entries = inner.entries.write().await;
        let record = match read {
            Ok(record) => record,
            Err(error) => {
                if let Some(entry) = entries.get_mut(sub) {
                    entry.refreshing = None;
                }
                return Err(error);
            }
        };
        if entries.len() >= MAX_CACHED_USERS && !entries.contains_key(sub) {
            let ttl = inner.ttl;
            entries.retain(|_, entry| now.duration_since(entry.fetched) < ttl);
            if entries.len() >= MAX_CACHED_USERS {
                entries.clear();
            }
        }
        entries.insert(
            sub.to_string(),
            Entry {
                record,
                fetched: now,
                refreshing: None,
            },
        );
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache over a table nobody serves: any read fails, so a passing lookup came from the cache.
    fn unreachable_cache(ttl: Duration) -> RevocationCache {
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
            .endpoint_url("http://127.0.0.1:9")
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                "test", "test", None, None, "test",
            ))
            .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
            .build();
        RevocationCache::new(
            Revocations::new(aws_sdk_dynamodb::Client::from_conf(config), "t".into()),
            ttl,
        )
    }

    async fn seed(
        cache: &RevocationCache,
        sub: &str,
        record: Option<RevocationRecord>,
        age: Duration,
    ) {
        cache.inner.entries.write().await.insert(
            sub.into(),
            Entry {
                record,
                fetched: Instant::now() - age,
                refreshing: None,
            },
        );
    }

    #[tokio::test]
    async fn fresh_and_half_stale_entries_answer_without_waiting_expired_ones_read_again() {
        let ttl = Duration::from_secs(10);
        let cache = unreachable_cache(ttl);
        let disabled = Some(RevocationRecord {
            enabled: false,
            revoked_before: 5,
        });
        seed(&cache, "fresh", disabled, Duration::from_secs(1)).await;
        seed(&cache, "half", None, Duration::from_secs(6)).await;
        seed(&cache, "expired", None, Duration::from_secs(11)).await;
        assert_eq!(cache.get("fresh").await.unwrap(), disabled);
        // Answered from the entry; the background refresh (which fails here) is claimed once.
        assert_eq!(cache.get("half").await.unwrap(), None);
        assert!(
            !cache.claim_refresh("half", Instant::now()).await,
            "one refresh at a time"
        );
        // Past the bound the table must be read: an unreachable table is an error, never a pass.
        assert!(cache.get("expired").await.is_err());
        assert!(cache.get("unknown").await.is_err());
    }

    #[test]
    fn disabled_accounts_refuse_every_token() {
        let record = RevocationRecord {
            enabled: false,
            revoked_before: 0,
        };
        assert!(record.refusal(Some(u64::MAX)).is_some());
        assert!(record.refusal(None).is_some());
    }

    #[test]
    fn tokens_issued_before_the_revocation_are_refused_later_ones_pass() {
        let record = RevocationRecord {
            enabled: true,
            revoked_before: 1_000,
        };
        assert!(record.refusal(Some(999)).is_some());
        assert!(
            record.refusal(None).is_some(),
            "no iat: counted as issued at 0"
        );
        assert_eq!(record.refusal(Some(1_000)), None);
        assert_eq!(record.refusal(Some(5_000)), None);
    }
}
