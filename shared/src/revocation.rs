//! Token revocation the authorizer can see.
//!
//! Cognito access tokens are self-contained JWTs, valid until they expire (up to a day): disabling a
//! user or signing them out globally revokes their refresh tokens only. This table keeps, per user
//! (`sub`, never reused, unlike a user_id a returning employee gets again), whether the account is
//! enabled and the time before which its tokens are refused. The provisioner, the scheduler and the
//! admin API write it whenever they disable a user or sign one out.
//!
//! The authorizer never reads it on a request's path: [`RevocationList`] keeps the whole (small) set
//! of records in memory and polls the table's `by-update` index for what changed, every half of its
//! `ttl`, in the background. A request is answered from memory; only when the list is older than
//! `ttl` (an execution environment thawed after a pause, or polls failing) does a request wait for a
//! poll, and if that fails it is refused (fail closed). `ttl` is the documented staleness bound.
//!
//! Invariant: a token is refused when its user's record says disabled, or when it was issued before
//! the record's `revoked_before` (a token without `iat` counts as issued at 0).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use tokio::sync::RwLock;

/// The index by update time, and its one partition (every record; writes are rare).
pub const UPDATE_INDEX: &str = "by-update";
const PARTITION: &str = "r";
/// Polls read this far back again: index updates are eventually consistent, and writers' clocks differ.
const POLL_OVERLAP_MS: u64 = 60_000;

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

    /// The user's record (a strongly consistent read).
    pub async fn get(&self, sub: &str) -> Result<Option<RevocationRecord>, RevocationError> {
        let item = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("sub", AttributeValue::S(sub.to_string()))
            .consistent_read(true)
            .send()
            .await
            .map_err(self.failed())?;
        Ok(item.item.as_ref().map(|item| listed(item).record))
    }

    /// Every record updated at or after `since_ms` (epoch milliseconds), through the update index.
    pub async fn changed_since(&self, since_ms: u64) -> Result<Vec<Listed>, RevocationError> {
        let mut found = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(UPDATE_INDEX)
                .key_condition_expression("rev = :p AND updated_ms >= :since")
                .expression_attribute_values(":p", AttributeValue::S(PARTITION.into()))
                .expression_attribute_values(":since", AttributeValue::N(since_ms.to_string()))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(self.failed())?;
            found.extend(page.items().iter().map(listed));
            match page.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => break,
            }
        }
        Ok(found)
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
            .expression_attribute_values(":rb", AttributeValue::N(revoked_before.to_string()))
            .expression_attribute_values(":p", AttributeValue::S(PARTITION.into()))
            .expression_attribute_values(":ms", AttributeValue::N(updated_ms().to_string()));
        let result = match what {
            // No time to live: the account stays refused until enabled, however long that takes.
            Revocation::Disable => {
                update
                    .update_expression(
                        "SET enabled = :f, revoked_before = :rb, username = :u, reason = :r, updated_at = :t, rev = :p, updated_ms = :ms REMOVE expires_at",
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
                        "SET enabled = :e, revoked_before = :rb, username = :u, reason = :r, updated_at = :t, expires_at = :x, rev = :p, updated_ms = :ms",
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
                        "SET revoked_before = :rb, username = :u, reason = :r, updated_at = :t, expires_at = :x, rev = :p, updated_ms = :ms",
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
                    .update_expression(
                        "SET revoked_before = :rb, updated_at = :t, rev = :p, updated_ms = :ms",
                    )
                    .expression_attribute_values(":p", AttributeValue::S(PARTITION.into()))
                    .expression_attribute_values(":ms", AttributeValue::N(updated_ms().to_string()))
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

/// One record as the update index lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub sub: String,
    pub record: RevocationRecord,
    /// Epoch seconds after which the record no longer matters (None: kept, a disabled account).
    pub expires_at: Option<u64>,
    pub updated_ms: u64,
}

fn number(item: &HashMap<String, AttributeValue>, name: &str) -> Option<u64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok())
}

fn listed(item: &HashMap<String, AttributeValue>) -> Listed {
    Listed {
        sub: item
            .get("sub")
            .and_then(|v| v.as_s().ok())
            .cloned()
            .unwrap_or_default(),
        record: RevocationRecord {
            // A record without the flag was written by a sign-out of an enabled account.
            enabled: item
                .get("enabled")
                .and_then(|v| v.as_bool().ok())
                .copied()
                .unwrap_or(true),
            revoked_before: number(item, "revoked_before").unwrap_or(0),
        },
        expires_at: number(item, "expires_at"),
        updated_ms: number(item, "updated_ms").unwrap_or(0),
    }
}

fn updated_ms() -> u64 {
    crate::audit::clock::now_millis()
}

/// The authorizer's copy of the table (see the module documentation): answered from memory, polled
/// for changes in the background every `ttl / 2`, never older than `ttl` when it answers.
#[derive(Clone)]
pub struct RevocationList {
    inner: Arc<Inner>,
}

struct Inner {
    store: Revocations,
    ttl: Duration,
    snapshot: RwLock<Snapshot>,
    /// One poll at a time; a request that finds the list too old waits for the poll under way.
    polling: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Snapshot {
    records: HashMap<String, Listed>,
    /// The latest `updated_ms` seen: the next poll reads from a little before it.
    high_water_ms: u64,
    /// When the last successful poll started (None: never polled).
    polled: Option<Instant>,
}

impl RevocationList {
    /// Loads nothing yet: the first request (or [`Self::start`]) polls.
    pub fn new(store: Revocations, ttl: Duration) -> Self {
        RevocationList {
            inner: Arc::new(Inner {
                store,
                ttl,
                snapshot: RwLock::new(Snapshot::default()),
                polling: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Polls now, then every `ttl / 2` in the background, for the life of the execution environment
    /// (a frozen environment's timer resumes with it; the age check below covers the gap).
    pub async fn start(&self) -> Result<(), RevocationError> {
        let first = self.poll().await;
        let list = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(list.inner.ttl / 2);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if let Err(error) = list.poll().await {
                    tracing::warn!(%error, "revocation poll failed; the list ages until the next one");
                }
            }
        });
        first
    }

    /// The record of `sub`, from a list at most `ttl` old.
    pub async fn get(&self, sub: &str) -> Result<Option<RevocationRecord>, RevocationError> {
        let fresh = |snapshot: &Snapshot| {
            snapshot
                .polled
                .is_some_and(|at| at.elapsed() < self.inner.ttl)
        };
        {
            let snapshot = self.inner.snapshot.read().await;
            if fresh(&snapshot) {
                return Ok(lookup(&snapshot, sub));
            }
        }
        let _turn = self.inner.polling.lock().await;
        // Another request's poll may have finished while this one waited.
        if !fresh(&*self.inner.snapshot.read().await) {
            self.poll_locked().await?;
        }
        Ok(lookup(&*self.inner.snapshot.read().await, sub))
    }

    async fn poll(&self) -> Result<(), RevocationError> {
        let _turn = self.inner.polling.lock().await;
        self.poll_locked().await
    }

    /// Reads what changed since the high-water mark (less the overlap) and merges it.
    async fn poll_locked(&self) -> Result<(), RevocationError> {
        let started = Instant::now();
        let since = self
            .inner
            .snapshot
            .read()
            .await
            .high_water_ms
            .saturating_sub(POLL_OVERLAP_MS);
        let changed = self.inner.store.changed_since(since).await?;
        let now_secs = crate::audit::clock::now_millis() / 1000;
        let mut snapshot = self.inner.snapshot.write().await;
        for listed in changed {
            snapshot.high_water_ms = snapshot.high_water_ms.max(listed.updated_ms);
            let newer = snapshot
                .records
                .get(&listed.sub)
                .is_none_or(|known| known.updated_ms <= listed.updated_ms);
            if newer && !listed.sub.is_empty() {
                snapshot.records.insert(listed.sub.clone(), listed);
            }
        }
        // Records past their time to live matter no more (DynamoDB deletes them in its own time).
        snapshot
            .records
            .retain(|_, listed| listed.expires_at.is_none_or(|at| at > now_secs));
        snapshot.polled = Some(started);
        Ok(())
    }
}

fn lookup(snapshot: &Snapshot, sub: &str) -> Option<RevocationRecord> {
    snapshot.records.get(sub).map(|listed| listed.record)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A list over a table nobody serves: any poll fails, so a passing lookup came from memory.
    fn unreachable_list(ttl: Duration) -> RevocationList {
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
            .endpoint_url("http://127.0.0.1:9")
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                "test", "test", None, None, "test",
            ))
            .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
            .build();
        RevocationList::new(
            Revocations::new(aws_sdk_dynamodb::Client::from_conf(config), "t".into()),
            ttl,
        )
    }

    #[tokio::test]
    async fn a_fresh_list_answers_from_memory_an_old_one_must_poll_and_fails_closed() {
        let ttl = Duration::from_secs(10);
        let list = unreachable_list(ttl);
        let disabled = RevocationRecord {
            enabled: false,
            revoked_before: 5,
        };
        assert!(
            list.get("anyone").await.is_err(),
            "never polled: nothing is assumed"
        );
        {
            let mut snapshot = list.inner.snapshot.write().await;
            snapshot.records.insert(
                "gone".into(),
                Listed {
                    sub: "gone".into(),
                    record: disabled,
                    expires_at: None,
                    updated_ms: 1,
                },
            );
            snapshot.polled = Some(Instant::now() - Duration::from_secs(9));
        }
        assert_eq!(list.get("gone").await.unwrap(), Some(disabled));
        assert_eq!(list.get("someone").await.unwrap(), None);
        list.inner.snapshot.write().await.polled = Some(Instant::now() - Duration::from_secs(11));
        assert!(
            list.get("gone").await.is_err(),
            "past the bound the table must answer"
        );
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
