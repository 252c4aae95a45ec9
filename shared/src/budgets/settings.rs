//! Each department's budget settings: its own limits, the limits of each of its users, the alert
//! thresholds and who is told, and its API Gateway usage plan when the admin API sets one
//! (`crate::usage_plans` applies it). One item per department in the `departments` table (the settings as
//! one JSON document, so the admin API's answer and the stored form are the same shape); the route
//! functions read it through a [`Mirror`], so a change takes effect within the mirror's `ttl`.

use aws_sdk_dynamodb::types::AttributeValue;
use serde::{Deserialize, Serialize};

use crate::mirror::{self, Entry, Item, Mirror};

/// Limits over one counter's span; `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
    #[serde(default)]
    pub monthly_tokens: Option<u64>,
    #[serde(default)]
    pub monthly_cost_usd: Option<f64>,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        self.tokens_per_minute.is_none()
            && self.monthly_tokens.is_none()
            && self.monthly_cost_usd.is_none()
    }

    /// The limits' own rules, by field name.
    fn check(&self, prefix: &str, details: &mut Vec<(String, String)>) {
        if let Some(cost) = self.monthly_cost_usd {
            if !cost.is_finite() || cost < 0.0 {
                details.push((
                    format!("{prefix}.monthly_cost_usd"),
                    "monthly_cost_usd is a non-negative number of US dollars".into(),
                ));
            }
        }
    }
}

/// A usage plan's throttle and quota, as API Gateway takes them (and `config/gateway.json` gives them:
/// the same bounds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanLimits {
    /// Requests per second, steady.
    pub rate_limit: u32,
    /// Requests at once above the steady rate.
    pub burst_limit: u32,
    /// Requests per day (UTC).
    pub quota_per_day: u64,
}

impl PlanLimits {
    fn check(&self, details: &mut Vec<(String, String)>) {
        for (field, value, max) in [
            ("rate_limit", u64::from(self.rate_limit), 10_000),
            ("burst_limit", u64::from(self.burst_limit), 5_000),
            ("quota_per_day", self.quota_per_day, 1_000_000_000),
        ] {
            if !(1..=max).contains(&value) {
                details.push((
                    format!("usage_plan.{field}"),
                    format!("{field} is a whole number from 1 to {max}"),
                ));
            }
        }
    }
}

/// What the admin API shows and takes for a department (`PUT /departments/{id}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DepartmentSettings {
    pub department: String,
    /// The department's own totals.
    #[serde(default)]
    pub budget: Limits,
    /// Each user's (and API key's) totals within the department.
    #[serde(default)]
    pub user_budget: Limits,
    /// Percentages of a monthly budget at which the contacts are told, once a month each.
    #[serde(default = "default_thresholds")]
    pub alert_thresholds_percent: Vec<u32>,
    /// Who is told: e-mail addresses.
    #[serde(default)]
    pub contacts: Vec<String>,
    /// The department's usage plan, replacing the deployment's (`config/gateway.json`); `None`: the
    /// deployment's.
    #[serde(default)]
    pub usage_plan: Option<PlanLimits>,
    #[serde(default)]
    pub updated_at: Option<String>,
    #[serde(default)]
    pub updated_by: Option<String>,
}

pub fn default_thresholds() -> Vec<u32> {
    vec![80, 100]
}

/// The fields a settings update may carry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsUpdate {
    #[serde(default)]
    pub budget: Limits,
    #[serde(default)]
    pub user_budget: Limits,
    #[serde(default = "default_thresholds")]
    pub alert_thresholds_percent: Vec<u32>,
    #[serde(default)]
    pub contacts: Vec<String>,
    #[serde(default)]
    pub usage_plan: Option<PlanLimits>,
}

const MAX_CONTACTS: usize = 20;

impl SettingsUpdate {
    /// Every broken rule at once, by field.
    pub fn check(&self) -> Vec<(String, String)> {
        let mut details = Vec::new();
        self.budget.check("budget", &mut details);
        self.user_budget.check("user_budget", &mut details);
        if let Some(plan) = &self.usage_plan {
            plan.check(&mut details);
        }
        let distinct: std::collections::BTreeSet<&u32> =
            self.alert_thresholds_percent.iter().collect();
        if distinct.len() > 10
            || self
                .alert_thresholds_percent
                .iter()
                .any(|p| !(1..=1000).contains(p))
        {
            details.push((
                "alert_thresholds_percent".into(),
                "at most 10 percentages, each from 1 to 1000".into(),
            ));
        }
        if self.contacts.len() > MAX_CONTACTS {
            details.push((
                "contacts".into(),
                format!("at most {MAX_CONTACTS} contacts"),
            ));
        }
        for contact in &self.contacts {
            if !crate::provisioning::rows::is_email(contact) {
                details.push((
                    "contacts".into(),
                    format!("{contact:?} is not an e-mail address"),
                ));
            }
        }
        details
    }

    pub fn into_settings(self, department: &str, by: &str, at: &str) -> DepartmentSettings {
        let mut thresholds = self.alert_thresholds_percent;
        thresholds.sort_unstable();
        thresholds.dedup();
        DepartmentSettings {
            department: department.to_string(),
            budget: self.budget,
            user_budget: self.user_budget,
            alert_thresholds_percent: thresholds,
            contacts: self.contacts,
            usage_plan: self.usage_plan,
            updated_at: Some(at.to_string()),
            updated_by: Some(by.to_string()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("department settings table: {0}")]
pub struct SettingsError(pub String);

fn store_error<E: std::error::Error + 'static>(e: E) -> SettingsError {
    SettingsError(aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string())
}

/// The `departments` table.
#[derive(Clone)]
pub struct SettingsStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

fn from_item(item: &Item) -> Option<DepartmentSettings> {
    serde_json::from_str(&mirror::text(item, "settings")?).ok()
}

impl SettingsStore {
    pub fn new(client: aws_sdk_dynamodb::Client, table: String) -> Self {
        SettingsStore { client, table }
    }

    pub fn from_sdk(sdk: &aws_config::SdkConfig, table: String) -> Self {
        SettingsStore::new(aws_sdk_dynamodb::Client::new(sdk), table)
    }

    /// The department's settings (None: never set, so no budget applies).
    pub async fn get(&self, department: &str) -> Result<Option<DepartmentSettings>, SettingsError> {
        let item = mirror::get_consistent(&self.client, &self.table, ("department", department))
            .await
            .map_err(store_error)?;
        Ok(item.as_ref().and_then(from_item))
    }

    pub async fn put(&self, settings: &DepartmentSettings) -> Result<(), SettingsError> {
        let json = serde_json::to_string(settings).map_err(|e| SettingsError(e.to_string()))?;
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("department", AttributeValue::S(settings.department.clone()))
            .item("settings", AttributeValue::S(json));
        for (name, value) in mirror::update_marks() {
            put = put.item(name, value);
        }
        put.send().await.map_err(store_error)?;
        Ok(())
    }

    /// Every department's settings.
    pub async fn list(&self) -> Result<Vec<DepartmentSettings>, SettingsError> {
        let items = mirror::query_changed_since(&self.client, &self.table, 0)
            .await
            .map_err(store_error)?;
        Ok(items.iter().filter_map(from_item).collect())
    }
}

impl mirror::Source for SettingsStore {
    type Record = DepartmentSettings;
    type Error = SettingsError;
    async fn changed_since(
        &self,
        since_ms: u64,
    ) -> Result<Vec<Entry<DepartmentSettings>>, SettingsError> {
        let items = mirror::query_changed_since(&self.client, &self.table, since_ms)
            .await
            .map_err(store_error)?;
        Ok(items
            .iter()
            .filter_map(|item| {
                let settings = from_item(item)?;
                Some(Entry {
                    key: settings.department.clone(),
                    expires_at: None,
                    updated_ms: mirror::number(item, mirror::UPDATED_MS_ATTRIBUTE).unwrap_or(0),
                    record: settings,
                })
            })
            .collect())
    }
}

/// The route functions' copy of the table.
pub type SettingsList = Mirror<SettingsStore>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_name_every_broken_rule_and_refuse_unknown_fields() {
        let update: SettingsUpdate = serde_json::from_value(serde_json::json!({
            "budget": {"monthly_cost_usd": -1.0},
            "alert_thresholds_percent": [0, 80],
            "contacts": ["not-mail", "lead@example.com"],
            "usage_plan": {"rate_limit": 0, "burst_limit": 10, "quota_per_day": 2_000_000_000u64},
        }))
        .unwrap();
        let fields: Vec<String> = update.check().into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            [
                "budget.monthly_cost_usd",
                "usage_plan.rate_limit",
                "usage_plan.quota_per_day",
                "alert_thresholds_percent",
                "contacts"
            ]
        );
        assert!(
            serde_json::from_value::<SettingsUpdate>(
                serde_json::json!({"usage_plan": {"rate_limit": 1, "burst_limit": 1}})
            )
            .is_err(),
            "a plan names all three"
        );
        assert!(serde_json::from_value::<SettingsUpdate>(
            serde_json::json!({"budget": {"monthly_tokens": 1, "daily": 2}})
        )
        .is_err());
    }

    #[test]
    fn thresholds_are_sorted_once_each() {
        let update: SettingsUpdate = serde_json::from_value(serde_json::json!({
            "alert_thresholds_percent": [100, 80, 100],
        }))
        .unwrap();
        let settings = update.into_settings("sales", "admin", "t");
        assert_eq!(settings.alert_thresholds_percent, [80, 100]);
        assert!(settings.budget.is_empty());
    }
}
