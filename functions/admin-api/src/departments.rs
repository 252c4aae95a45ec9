//! `/departments`: each department's budget settings (read and replace) and its month's usage, from
//! the usage counters the audit writer settles (`gateway_shared::budgets`).

use gateway_shared::budgets::counters::{month_key, month_of};
use gateway_shared::budgets::settings::{SettingsError, SettingsUpdate};
use gateway_shared::budgets::{self, DepartmentSettings, UsageCounters};
use serde_json::{json, Value};

use crate::ApiError;

impl From<SettingsError> for ApiError {
    fn from(error: SettingsError) -> Self {
        ApiError::internal(error)
    }
}

impl From<budgets::counters::CounterError> for ApiError {
    fn from(error: budgets::counters::CounterError) -> Self {
        ApiError::internal(error)
    }
}

/// A department's settings as shown: never set means no budget (and the default thresholds).
pub fn view(department: &str, settings: Option<DepartmentSettings>) -> Value {
    let settings = settings.unwrap_or_else(|| DepartmentSettings {
        department: department.to_string(),
        alert_thresholds_percent: budgets::settings::default_thresholds(),
        ..Default::default()
    });
    serde_json::to_value(settings).unwrap_or(Value::Null)
}

/// Reads a `PUT /departments/{id}` body, naming every broken rule at once.
pub fn update(body: Value) -> Result<SettingsUpdate, ApiError> {
    // serde would also read a struct from an array (`"budget": [1, 2, 3]`): limits are objects only.
    let not_objects: Vec<(String, String)> = ["budget", "user_budget"]
        .into_iter()
        .filter(|field| body.get(*field).is_some_and(|v| !v.is_object()))
        .map(|field| (field.to_string(), format!("{field} is an object of limits")))
        .collect();
    if !not_objects.is_empty() {
        return Err(ApiError::invalid(not_objects));
    }
    let update: SettingsUpdate = serde_json::from_value(body).map_err(|e| {
        ApiError::invalid(vec![(
            "body".into(),
            format!("not department settings: {e}"),
        )])
    })?;
    let details = update.check();
    if details.is_empty() {
        Ok(update)
    } else {
        Err(ApiError::invalid(details))
    }
}

/// `YYYY-MM`, checked; the current month when absent.
pub fn month(query: Option<String>, now_ms: u64) -> Result<String, ApiError> {
    match query {
        None => Ok(month_of(now_ms)),
        Some(m) => {
            let ok = m.len() == 7
                && m.as_bytes()[4] == b'-'
                && m.bytes()
                    .enumerate()
                    .all(|(i, b)| i == 4 || b.is_ascii_digit())
                && m[5..].parse::<u8>().is_ok_and(|n| (1..=12).contains(&n));
            if ok {
                Ok(m)
            } else {
                Err(ApiError::bad_request("month is YYYY-MM"))
            }
        }
    }
}

/// One counter's month as shown: tokens, cost, requests, and the share of each limit used.
pub async fn usage(
    counters: &UsageCounters,
    scope: &str,
    id: &str,
    month: &str,
    limits: Option<&budgets::Limits>,
) -> Result<Value, ApiError> {
    let (tokens, cost_micros, requests) = counters.read(&month_key(scope, id, month)).await?;
    let cost_usd = budgets::usd(cost_micros.max(0) as u64);
    let percent = |used: f64, limit: Option<f64>| {
        limit
            .filter(|l| *l > 0.0)
            .map(|l| ((used / l) * 1000.0).round() / 10.0)
    };
    Ok(json!({
        "month": month,
        "tokens": tokens.max(0),
        "cost_usd": cost_usd,
        "requests": requests.max(0),
        "monthly_tokens_limit": limits.and_then(|l| l.monthly_tokens),
        "monthly_cost_usd_limit": limits.and_then(|l| l.monthly_cost_usd),
        "percent_of_monthly_tokens": percent(tokens as f64, limits.and_then(|l| l.monthly_tokens).map(|t| t as f64)),
        "percent_of_monthly_cost": percent(cost_usd, limits.and_then(|l| l.monthly_cost_usd)),
        "note": "tokens and cost include the worst case of requests still running",
    }))
}
