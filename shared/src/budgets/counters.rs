//! The `usage` table: one item per counter, keyed `counter`:
//! - `d#<department>#m#<YYYY-MM>`, `u#<subject>#m#<YYYY-MM>`: a month's tokens, cost and requests;
//! - `d#<department>#t#<minute>`, `u#<subject>#t#<minute>`: one minute's tokens (minutes since the
//!   epoch), kept two hours;
//! - `s#<request id>`: the marker of a settled request, kept two weeks.
//!
//! Each counter holds settled usage plus open reservations, so one conditional `ADD` both checks a
//! limit and takes the request's share atomically. A request takes its share of every counter a
//! limit applies to at once; if one refuses, the shares taken are given back (meanwhile they only
//! make the counters stricter). No transactions: they would make a department's concurrent requests
//! conflict on its counters.

use aws_sdk_dynamodb::types::AttributeValue;

use super::demand::Demand;
use super::settings::{DepartmentSettings, Limits};

const MONTH_KEEP_SECS: u64 = 400 * 86_400;
const MINUTE_KEEP_SECS: u64 = 2 * 3600;
const MARKER_KEEP_SECS: u64 = 14 * 86_400;

/// What a request reserved, carried in its audit records so the audit writer can settle it.
pub use crate::audit::BudgetReservation as Reservation;

/// Why a request is refused, in words for the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// A limit would be passed: 429, the caller may retry later.
    #[error("{0}")]
    OverBudget(String),
    /// A cost budget applies and the model has no price: 403, retrying does not help.
    #[error("{0}")]
    Unpriced(String),
}

#[derive(Debug, thiserror::Error)]
pub enum CounterError {
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error("usage counters: {0}")]
    Store(String),
}

fn store_error<E: std::error::Error + 'static>(e: E) -> CounterError {
    CounterError::Store(aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string())
}

/// One counter a limit applies to, for one request.
struct Counter {
    key: String,
    /// Words for a refusal: "department sales's monthly", "your per-minute".
    whose: String,
    span: Span,
    tokens: Option<u64>,
    cost_micros: Option<u64>,
    keep_secs: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Span {
    Month,
    Minute,
}

/// `YYYY-MM` and the minute since the epoch of a time.
fn periods(now_ms: u64) -> (String, u64) {
    let hour = crate::audit::clock::Hour::containing_millis(now_ms as i64);
    let partition = hour.month_partition();
    // `year=2026/month=11/`
    let digits: String = partition.chars().filter(char::is_ascii_digit).collect();
    let month = format!("{}-{}", &digits[..4], &digits[4..6]);
    (month, now_ms / 60_000)
}

pub fn month_key(scope: &str, id: &str, month: &str) -> String {
    format!("{scope}#{id}#m#{month}")
}

fn counters(settings: &DepartmentSettings, subject: &str, now_ms: u64) -> Vec<Counter> {
    let (month, minute) = periods(now_ms);
    let mut found = Vec::new();
    let department = &settings.department;
    let mut add = |scope: &str, id: &str, whose: String, limits: &Limits| {
        if limits.monthly_tokens.is_some() || limits.monthly_cost_usd.is_some() {
            found.push(Counter {
                key: month_key(scope, id, &month),
                whose: format!("{whose} monthly"),
                span: Span::Month,
                tokens: limits.monthly_tokens,
                cost_micros: limits.monthly_cost_usd.map(super::micros),
                keep_secs: MONTH_KEEP_SECS,
            });
        }
        if let Some(tpm) = limits.tokens_per_minute {
            found.push(Counter {
                key: format!("{scope}#{id}#t#{minute}"),
                whose: format!("{whose} per-minute"),
                span: Span::Minute,
                tokens: Some(tpm),
                cost_micros: None,
                keep_secs: MINUTE_KEEP_SECS,
            });
        }
    };
    add(
        "d",
        department,
        format!("department {department}'s"),
        &settings.budget,
    );
    add(
        "u",
        subject,
        format!("your (in department {department})"),
        &settings.user_budget,
    );
    found
}

impl Counter {
    fn refusal(&self, demand: &Demand) -> String {
        let limit = match (self.tokens, self.cost_micros) {
            (Some(tokens), _) if demand.tokens > 0 => format!("{tokens} tokens"),
            (_, Some(cost)) => format!("{:.2} USD", super::usd(cost)),
            (Some(tokens), None) => format!("{tokens} tokens"),
            (None, None) => "limit".into(),
        };
        let when = match self.span {
            Span::Month => "it resets on the 1st of next month (UTC); ask the department's budget owner to raise it",
            Span::Minute => "retry in the next minute",
        };
        format!(
            "Too many tokens: this request (up to {} tokens{}) would pass {} budget of {limit}; {when}",
            demand.tokens,
            demand
                .cost_micros
                .map(|c| format!(", {:.4} USD", super::usd(c)))
                .unwrap_or_default(),
            self.whose,
        )
    }
}

/// The table, for the route functions (reserve) and the audit writer (settle).
#[derive(Clone)]
pub struct UsageCounters {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl UsageCounters {
    pub fn new(client: aws_sdk_dynamodb::Client, table: String) -> Self {
        UsageCounters { client, table }
    }

    pub fn from_sdk(sdk: &aws_config::SdkConfig, table: String) -> Self {
        UsageCounters::new(aws_sdk_dynamodb::Client::new(sdk), table)
    }

    /// Reserves `demand` on every counter of `settings` that has a limit for this department and
    /// `subject`, or refuses: `Ok(None)` when no limit applies (and no table is touched).
    pub async fn reserve(
        &self,
        settings: &DepartmentSettings,
        subject: &str,
        demand: Demand,
        now_ms: u64,
    ) -> Result<Option<Reservation>, CounterError> {
        let counters = counters(settings, subject, now_ms);
        if counters.is_empty() {
            return Ok(None);
        }
        let cost_limited = counters.iter().any(|c| c.cost_micros.is_some());
        let cost = match demand.cost_micros {
            Some(cost) => cost,
            None if cost_limited => {
                return Err(Refused::Unpriced(format!(
                    "Forbidden: department {}'s cost budget cannot be enforced for this model, which the gateway's price table does not price; ask the platform team to add its price",
                    settings.department
                ))
                .into())
            }
            None => 0,
        };
        // A request larger than a whole limit is refused without asking the table.
        if let Some(counter) = counters.iter().find(|c| {
            c.tokens.is_some_and(|t| demand.tokens > t) || c.cost_micros.is_some_and(|m| cost > m)
        }) {
            return Err(Refused::OverBudget(counter.refusal(&demand)).into());
        }
        let now_secs = now_ms / 1000;
        // One conditional update per counter, all at once: each is atomic on its own item (no
        // transaction, so no conflicts between concurrent requests on a department's counters).
        // If any refuses, the shares the others took are given back.
        let takes = counters.iter().map(|counter| {
            let mut conditions = Vec::new();
            let mut update = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("counter", AttributeValue::S(counter.key.clone()))
                .update_expression(
                    "ADD tokens :t, cost_micros :c, requests :one SET expires_at = if_not_exists(expires_at, :x)",
                )
                .expression_attribute_values(":t", number(demand.tokens))
                .expression_attribute_values(":c", number(cost))
                .expression_attribute_values(":one", number(1))
                .expression_attribute_values(":x", number(now_secs + counter.keep_secs));
            if let Some(limit) = counter.tokens {
                conditions.push("(attribute_not_exists(tokens) OR tokens <= :tmax)");
                update =
                    update.expression_attribute_values(":tmax", number(limit - demand.tokens));
            }
            if let Some(limit) = counter.cost_micros {
                conditions.push("(attribute_not_exists(cost_micros) OR cost_micros <= :cmax)");
                update = update.expression_attribute_values(":cmax", number(limit - cost));
            }
            update.condition_expression(conditions.join(" AND ")).send()
        });
        let results = futures_util::future::join_all(takes).await;
        let mut refused = None;
        let mut failed = None;
        let mut taken = Vec::new();
        for (counter, result) in counters.iter().zip(results) {
            match result {
                Ok(_) => taken.push(counter.key.clone()),
                Err(error)
                    if error
                        .as_service_error()
                        .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
                {
                    refused.get_or_insert(counter);
                }
                Err(error) => {
                    failed.get_or_insert(store_error(error));
                }
            }
        }
        if refused.is_none() && failed.is_none() {
            return Ok(Some(Reservation {
                counters: taken,
                tokens: demand.tokens,
                cost_micros: cost,
            }));
        }
        let shares = Reservation {
            counters: taken,
            tokens: demand.tokens,
            cost_micros: cost,
        };
        if let Err(error) = self
            .apply(&shares.counters, Delta::release(&shares), now_secs)
            .await
        {
            // Left taken, the shares only make the counters stricter (never let more through).
            tracing::error!(%error, "a refused reservation's shares were not all given back");
        }
        match refused {
            Some(counter) => Err(Refused::OverBudget(counter.refusal(&demand)).into()),
            None => Err(failed
                .unwrap_or_else(|| CounterError::Store("the reservation was not taken".into()))),
        }
    }

    /// Adds `delta` to each of `keys` at once; the first failure, if any (after the SDK's retries).
    async fn apply(
        &self,
        keys: &[String],
        delta: Delta,
        now_secs: u64,
    ) -> Result<(), CounterError> {
        let writes = keys.iter().map(|key| {
            let keep = if key.contains("#t#") {
                MINUTE_KEEP_SECS
            } else {
                MONTH_KEEP_SECS
            };
            self.client
                .update_item()
                .table_name(&self.table)
                .key("counter", AttributeValue::S(key.clone()))
                .update_expression(
                    "ADD tokens :t, cost_micros :c, requests :r SET expires_at = if_not_exists(expires_at, :x)",
                )
                .expression_attribute_values(":t", AttributeValue::N(delta.tokens.to_string()))
                .expression_attribute_values(":c", AttributeValue::N(delta.cost_micros.to_string()))
                .expression_attribute_values(":r", AttributeValue::N(delta.requests.to_string()))
                .expression_attribute_values(":x", number(now_secs + keep))
                .send()
        });
        for result in futures_util::future::join_all(writes).await {
            result.map_err(store_error)?;
        }
        Ok(())
    }

    /// Settles one request once: adds `used - reserved` to each counter it reserved on, and `used`
    /// to each of `also` it did not (the month's counters of its department and subject, so usage is
    /// counted even while no limit applies). `Ok(false)`: settled before (a retried batch).
    ///
    /// Once: for a request that reserved, a marker item is written first, on the condition that
    /// there is none. The counters' updates follow (each retried by the SDK); if one still fails, the
    /// error is returned and alarmed, and that counter keeps the request's reservation (stricter,
    /// never looser) or misses its usage.
    pub async fn settle(
        &self,
        request_id: &str,
        reservation: Option<&Reservation>,
        also: &[String],
        used_tokens: u64,
        used_cost_micros: u64,
        now_ms: u64,
    ) -> Result<bool, CounterError> {
        let now_secs = now_ms / 1000;
        // Exactly once where it matters: a reservation given back twice would loosen its limits.
        // Usage of a request that reserved nothing is only added (a retried batch counts it twice,
        // which is stricter, never looser), so it needs no marker item per request.
        if reservation.is_some()
            && !self
                .claim_for(&format!("s#{request_id}"), now_secs + MARKER_KEEP_SECS)
                .await?
        {
            return Ok(false);
        }
        let reserved: &[String] = reservation.map(|r| r.counters.as_slice()).unwrap_or(&[]);
        let (reserved_tokens, reserved_cost) =
            reservation.map_or((0, 0), |r| (r.tokens, r.cost_micros));
        let unreserved: Vec<String> = also
            .iter()
            .filter(|k| !reserved.contains(k))
            .cloned()
            .collect();
        let release = Delta {
            tokens: i128::from(used_tokens) - i128::from(reserved_tokens),
            cost_micros: i128::from(used_cost_micros) - i128::from(reserved_cost),
            requests: 0,
        };
        let usage = Delta {
            tokens: i128::from(used_tokens),
            cost_micros: i128::from(used_cost_micros),
            requests: 1,
        };
        let (settled, counted) = futures_util::future::join(
            self.apply(reserved, release, now_secs),
            self.apply(&unreserved, usage, now_secs),
        )
        .await;
        settled.and(counted).map(|()| true)
    }

    /// Adds usage that nothing reserved to one counter: the writer sums a batch's requests per counter
    /// first, so a department's traffic is one write per counter and batch, not one per request.
    /// Added, never given back: a retried batch counts it twice, which is stricter, never looser.
    pub async fn add(
        &self,
        key: &str,
        (tokens, cost_micros, requests): (u64, u64, u64),
        now_ms: u64,
    ) -> Result<(), CounterError> {
        let delta = Delta {
            tokens: i128::from(tokens),
            cost_micros: i128::from(cost_micros),
            requests: i128::from(requests),
        };
        self.apply(&[key.to_string()], delta, now_ms / 1000).await
    }

    /// Claims `marker` (a once-only item, such as an alert sent): true for the first claim only.
    pub async fn claim(&self, marker: &str, now_ms: u64) -> Result<bool, CounterError> {
        self.claim_for(marker, now_ms / 1000 + MONTH_KEEP_SECS)
            .await
    }

    async fn claim_for(&self, marker: &str, expires_at: u64) -> Result<bool, CounterError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("counter", AttributeValue::S(marker.to_string()))
            .item("expires_at", number(expires_at))
            .condition_expression("attribute_not_exists(#k)")
            .expression_attribute_names("#k", "counter")
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(error) => Err(store_error(error)),
        }
    }

    /// Gives a claim back (what it was for did not happen, so the next run tries again).
    pub async fn release(&self, marker: &str) -> Result<(), CounterError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("counter", AttributeValue::S(marker.to_string()))
            .send()
            .await
            .map_err(store_error)?;
        Ok(())
    }

    /// A counter's (tokens, cost in micro-dollars, requests); zeros when it was never written.
    pub async fn read(&self, key: &str) -> Result<(i64, i64, i64), CounterError> {
        let item = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("counter", AttributeValue::S(key.to_string()))
            .consistent_read(true)
            .send()
            .await
            .map_err(store_error)?;
        let field = |name: &str| {
            item.item()
                .and_then(|i| i.get(name))
                .and_then(|v| v.as_n().ok())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        Ok((field("tokens"), field("cost_micros"), field("requests")))
    }
}

/// What one settlement or give-back adds to a counter.
#[derive(Clone, Copy)]
struct Delta {
    tokens: i128,
    cost_micros: i128,
    requests: i128,
}

impl Delta {
    /// Gives a reservation's share back.
    fn release(reservation: &Reservation) -> Delta {
        Delta {
            tokens: -i128::from(reservation.tokens),
            cost_micros: -i128::from(reservation.cost_micros),
            requests: -1,
        }
    }
}

fn number(n: u64) -> AttributeValue {
    AttributeValue::N(n.to_string())
}

/// The month counters a request's usage always goes to: its department's (if any) and its subject's.
pub fn month_counters(department: Option<&str>, subject: &str, at_ms: u64) -> Vec<String> {
    let (month, _) = periods(at_ms);
    department
        .map(|d| month_key("d", d, &month))
        .into_iter()
        .chain([month_key("u", subject, &month)])
        .collect()
}

/// `YYYY-MM` of a time.
pub fn month_of(at_ms: u64) -> String {
    periods(at_ms).0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> DepartmentSettings {
        DepartmentSettings {
            department: "sales".into(),
            budget: Limits {
                tokens_per_minute: Some(1000),
                monthly_tokens: None,
                monthly_cost_usd: Some(5.0),
            },
            user_budget: Limits::default(),
            ..Default::default()
        }
    }

    #[test]
    fn only_limited_counters_are_reserved_on_with_their_periods() {
        let at = crate::audit::clock::millis_from_rfc3339("2026-11-26T03:04:05Z").unwrap();
        let found = counters(&settings(), "sub-1", at);
        let keys: Vec<&str> = found.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "d#sales#m#2026-11".to_string(),
                format!("d#sales#t#{}", at / 60_000)
            ]
        );
        assert_eq!(found[0].cost_micros, Some(5_000_000));
        assert!(counters(&DepartmentSettings::default(), "s", at).is_empty());
        assert_eq!(
            month_counters(Some("sales"), "sub-1", at),
            ["d#sales#m#2026-11", "u#sub-1#m#2026-11"]
        );
    }

    #[test]
    fn refusals_say_whose_budget_and_when_it_recovers() {
        let found = counters(&settings(), "sub-1", 0);
        let demand = Demand {
            tokens: 2000,
            cost_micros: Some(10),
        };
        let minute = found
            .iter()
            .find(|c| c.span == Span::Minute)
            .unwrap()
            .refusal(&demand);
        assert!(
            minute.contains("department sales's per-minute budget of 1000 tokens"),
            "{minute}"
        );
        assert!(minute.contains("next minute"));
    }
}
