//! Token revocation the authorizer can see.
//!
//! Cognito access tokens are self-contained JWTs, valid until they expire (up to a day): disabling a
//! user or signing them out globally revokes their refresh tokens only. This table keeps, per user
//! (`sub`, never reused, unlike a user_id a returning employee gets again), whether the account is
//! enabled and the time before which its tokens are refused. The provisioner, the scheduler and the
//! admin API write it whenever they disable a user or sign one out.
//!
//! The authorizer never reads it on a request's path: [`RevocationList`] is a [`Mirror`] of the table,
//! answered from memory and never older than its `ttl`, the documented staleness bound (fail closed).
//!
//! Invariant: a token is refused when its user's record says disabled, or when it was issued before
//! the record's `revoked_before` (a token without `iat` counts as issued at 0).

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;

pub use crate::mirror::UPDATE_INDEX;
use crate::mirror::{self, Entry, Item, Mirror, UPDATE_PARTITION as PARTITION};

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
        let item = crate::mirror::get_consistent(&self.client, &self.table, ("sub", sub))
            .await
            .map_err(self.failed())?;
        Ok(item.as_ref().map(|item| listed(item).record))
    }

    /// Every record updated at or after `since_ms` (epoch milliseconds), through the update index.
    pub async fn changed_since(
        &self,
        since_ms: u64,
    ) -> Result<Vec<Entry<RevocationRecord>>, RevocationError> {
        let items = mirror::query_changed_since(&self.client, &self.table, since_ms)
            .await
            .map_err(self.failed())?;
        Ok(items.iter().map(listed).collect())
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

fn listed(item: &Item) -> Entry<RevocationRecord> {
    Entry {
        key: mirror::text(item, "sub").unwrap_or_default(),
        record: RevocationRecord {
            // A record without the flag was written by a sign-out of an enabled account.
            enabled: item
                .get("enabled")
                .and_then(|v| v.as_bool().ok())
                .copied()
                .unwrap_or(true),
            revoked_before: mirror::number(item, "revoked_before").unwrap_or(0),
        },
        expires_at: mirror::number(item, "expires_at"),
        updated_ms: mirror::number(item, "updated_ms").unwrap_or(0),
    }
}

fn updated_ms() -> u64 {
    crate::audit::clock::now_millis()
}

/// The authorizer's copy of the table (see the module documentation and [`Mirror`]).
pub type RevocationList = Mirror<Revocations>;

impl mirror::Source for Revocations {
    type Record = RevocationRecord;
    type Error = RevocationError;
    async fn changed_since(
        &self,
        since_ms: u64,
    ) -> Result<Vec<Entry<RevocationRecord>>, RevocationError> {
        Revocations::changed_since(self, since_ms).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
