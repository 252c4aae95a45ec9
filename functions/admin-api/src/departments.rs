//! `/departments`: each department's budget settings (read and replace) and its month's usage, from
//! the usage counters the audit writer settles (`gateway_shared::budgets`).

use gateway_shared::budgets::counters::{month_key, month_of};
use gateway_shared::budgets::settings::{PlanLimits, SettingsError, SettingsUpdate};
use gateway_shared::budgets::{self, DepartmentSettings, UsageCounters};
use gateway_shared::usage_plans::{DeployedPlan, UsagePlans};
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

/// A department's settings as shown: never set means no budget (and the default thresholds); with
/// usage plans managed here, the plan in force and whether the settings or the deployment set it.
pub fn view(
    department: &str,
    settings: Option<DepartmentSettings>,
    plans: Option<&UsagePlans>,
) -> Value {
    let settings = settings.unwrap_or_else(|| DepartmentSettings {
        department: department.to_string(),
        alert_thresholds_percent: budgets::settings::default_thresholds(),
        ..Default::default()
    });
    let own_plan = settings.usage_plan;
    let mut view = serde_json::to_value(settings).unwrap_or(Value::Null);
    let in_force = plans.and_then(|p| p.wanted(department, own_plan));
    view["usage_plan"] = json!(in_force);
    view["usage_plan_source"] = match (in_force, own_plan) {
        (None, _) => Value::Null,
        (Some(_), Some(_)) => json!("settings"),
        (Some(_), None) => json!("deployment"),
    };
    view
}

/// The plan a settings update is for: `None` when it names none and this deployment manages no plans;
/// an error when it names one the deployment has no plan to take it.
pub fn plan_of<'a>(
    plans: Option<&'a UsagePlans>,
    department: &str,
    update: &SettingsUpdate,
) -> Result<Option<(&'a UsagePlans, &'a DeployedPlan)>, ApiError> {
    let deployed = plans.and_then(|p| p.deployed(department).map(|d| (p, d)));
    if update.usage_plan.is_some() && deployed.is_none() {
        return Err(ApiError::invalid(vec![(
            "usage_plan".into(),
            format!("this deployment has no API Gateway usage plan for department {department} to change"),
        )]));
    }
    Ok(deployed)
}

/// Puts the department's plan to the settings' (or back to the deployment's). The settings are saved
/// first: should API Gateway refuse now, the scheduler's `usage-plans` job applies them later.
pub async fn apply_plan(
    plan: Option<(&UsagePlans, &DeployedPlan)>,
    own: Option<PlanLimits>,
) -> Result<(), ApiError> {
    let Some((plans, deployed)) = plan else {
        return Ok(());
    };
    let wanted = own.unwrap_or_else(|| deployed.limits());
    plans.apply(&deployed.id, &wanted).await.map_err(|error| {
        tracing::error!(%error, "usage plan not applied");
        ApiError::new(
            502,
            "usage_plan_not_applied",
            "the settings are saved, but API Gateway did not take the usage plan now; the scheduler's usage-plans job applies it within minutes",
        )
    })
}

/// Reads a `PUT /departments/{id}` body, naming every broken rule at once.
pub fn update(body: Value) -> Result<SettingsUpdate, ApiError> {
    // serde would also read a struct from an array (`"budget": [1, 2, 3]`): limits are objects only.
    let not_objects: Vec<(String, String)> = ["budget", "user_budget", "usage_plan"]
        .into_iter()
        .filter(|field| {
            // `"usage_plan": null` asks for the deployment's plan again.
            let allowed = |v: &Value| v.is_object() || (*field == "usage_plan" && v.is_null());
            body.get(*field).is_some_and(|v| !allowed(v))
        })
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

/// The longest range `from`..`to` reads (days of daily rollups).
const MAX_RANGE_DAYS: usize = 92;

/// `GET /departments/{id}/usage?from=YYYY-MM-DD&to=YYYY-MM-DD&group_by=model|provider|user|day`: the
/// department's usage over whole days, from the scheduler's daily rollups of the audit trail (a day
/// not rolled up yet is named in `missing_days`, never counted as zero).
pub async fn usage_range(
    api: &crate::AdminApi,
    department: &str,
    from: &str,
    to: &str,
    group_by: Option<&str>,
) -> Result<Value, ApiError> {
    let group_by = group_by.unwrap_or("model");
    if !matches!(group_by, "model" | "provider" | "user" | "day") {
        return Err(ApiError::bad_request(
            "group_by is one of: model, provider, user, day",
        ));
    }
    let days = day_range(from, to)?;
    let mut groups: std::collections::BTreeMap<String, gateway_shared::rollup::Totals> =
        Default::default();
    let mut totals = gateway_shared::rollup::Totals::default();
    let mut missing = Vec::new();
    for day in &days {
        let Some(rollup) = daily_rollup(api, day).await? else {
            missing.push(day.clone());
            continue;
        };
        for (key, row) in rollup.rows.values() {
            if key.department != department {
                continue;
            }
            let group = match group_by {
                "model" => format!("{}/{}", key.provider, key.model),
                "provider" => key.provider.clone(),
                "user" => key.subject.clone(),
                _ => day.clone(),
            };
            groups.entry(group).or_default().add(row);
            totals.add(row);
        }
    }
    let shown = |t: &gateway_shared::rollup::Totals| {
        let mut v = serde_json::to_value(t).unwrap_or_default();
        v["cost_usd"] = json!(t.cost_usd());
        v
    };
    Ok(json!({
        "department": department,
        "from": from,
        "to": to,
        "group_by": group_by,
        "groups": groups.iter().map(|(key, t)| {
            let mut v = shown(t);
            v["key"] = json!(key);
            v
        }).collect::<Vec<_>>(),
        "totals": shown(&totals),
        "missing_days": missing,
    }))
}

/// The days from `from` to `to`, both included.
fn day_range(from: &str, to: &str) -> Result<Vec<String>, ApiError> {
    let start = |text: &str| {
        gateway_shared::provisioning::rows::Date::parse(text)
            .filter(|_| text.len() == 10 && text.as_bytes()[4] == b'-')
            .and_then(|d| {
                gateway_shared::audit::clock::millis_from_rfc3339(&format!("{d}T00:00:00Z"))
            })
            .ok_or_else(|| ApiError::bad_request(format!("{text:?} is not a day (YYYY-MM-DD)")))
    };
    let (first, last) = (start(from)?, start(to)?);
    if last < first {
        return Err(ApiError::bad_request("to is before from"));
    }
    let count = ((last - first) / 86_400_000) as usize + 1;
    if count > MAX_RANGE_DAYS {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_RANGE_DAYS} days at once"
        )));
    }
    Ok((0..count as u64)
        .map(|d| {
            gateway_shared::audit::clock::rfc3339_from_millis(first + d * 86_400_000)[..10]
                .to_string()
        })
        .collect())
}

/// The scheduler's rollup of `day`, if it made one.
async fn daily_rollup(
    api: &crate::AdminApi,
    day: &str,
) -> Result<Option<gateway_shared::rollup::Rollup>, ApiError> {
    match crate::files::report_object(api, &format!("reports/usage/daily/{day}.json")).await? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(ApiError::internal),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_whole_days_bounded_and_ordered() {
        let days = day_range("2026-10-30", "2026-11-02").unwrap();
        assert_eq!(
            days,
            ["2026-10-30", "2026-10-31", "2026-11-01", "2026-11-02"]
        );
        assert!(day_range("2026-11-02", "2026-11-01").is_err());
        assert!(day_range("2026-01-01", "2026-12-31").is_err());
        assert!(day_range("2026/11/01", "2026-11-02").is_err());
        assert!(month(Some("2026-+1".into()), 0).is_err());
        assert!(month(Some("2026-11".into()), 0).is_ok());
    }
}
