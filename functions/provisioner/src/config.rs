//! The provisioner's settings, read once at init.

use std::collections::BTreeMap;

use gateway_shared::config::{self, ConfigError, Settings};

/// Objects under this prefix are applied.
pub const APPLY_PREFIX: &str = "incoming/";
/// Objects under this prefix are planned and reported, never applied (a dry run).
pub const DRY_RUN_PREFIX: &str = "dry-run/";
/// Reports go under this prefix of the reports bucket.
pub const REPORT_PREFIX: &str = "reports/provisioning/";

#[derive(Debug, Clone)]
pub struct ProvisionerConfig {
    pub user_pool_id: String,
    /// The bucket HR files arrive in; events for any other bucket are refused.
    pub bucket: String,
    pub reports_bucket: String,
    /// Secrets Manager id of the age identity (`AGE-SECRET-KEY-1...`).
    pub identity_secret_id: String,
    /// A department cell's text (the configured id or one of its names) -> the department id.
    pub departments: BTreeMap<String, String>,
    /// Cognito group of a department: this prefix and its id (`dept-sales`).
    pub department_group_prefix: String,
    /// Where the file's dates are meant: minutes east of UTC (540, Japan).
    pub utc_offset_minutes: i32,
}

impl ProvisionerConfig {
    /// `COGNITO_USER_POOL_ID`, `GATEWAY_PROVISIONING_BUCKET`, `GATEWAY_REPORTS_BUCKET`,
    /// `GATEWAY_PROVISIONING_IDENTITY_SECRET_ID`, `GATEWAY_DEPARTMENTS` (JSON object: id -> list of
    /// names a file may use for it) (all required), `GATEWAY_DEPARTMENT_GROUP_PREFIX` (`dept-`),
    /// `GATEWAY_PROVISIONING_UTC_OFFSET_MINUTES` (540).
    pub fn from_settings(settings: &dyn Settings) -> Result<Self, ConfigError> {
        let raw = config::required(settings, "GATEWAY_DEPARTMENTS")?;
        let invalid = |reason: String| ConfigError::Invalid {
            name: "GATEWAY_DEPARTMENTS",
            reason,
        };
        let by_id: BTreeMap<String, Vec<String>> = serde_json::from_str(&raw)
            .map_err(|e| invalid(format!("not a JSON object of id -> [names]: {e}")))?;
        if by_id.is_empty() {
            return Err(invalid("no department".into()));
        }
        let mut departments = BTreeMap::new();
        for (id, names) in &by_id {
            for name in std::iter::once(id).chain(names) {
                if let Some(other) = departments.insert(name.clone(), id.clone()) {
                    if &other != id {
                        return Err(invalid(format!("{name:?} names both {other} and {id}")));
                    }
                }
            }
        }
        let utc_offset_minutes = match settings.get("GATEWAY_PROVISIONING_UTC_OFFSET_MINUTES") {
            None => 540,
            Some(v) => v
                .parse::<i32>()
                .ok()
                .filter(|m| (-720..=840).contains(m))
                .ok_or_else(|| ConfigError::Invalid {
                    name: "GATEWAY_PROVISIONING_UTC_OFFSET_MINUTES",
                    reason: format!("{v:?} is not minutes between -720 and 840"),
                })?,
        };
        Ok(ProvisionerConfig {
            user_pool_id: config::required(settings, "COGNITO_USER_POOL_ID")?,
            bucket: config::required(settings, "GATEWAY_PROVISIONING_BUCKET")?,
            reports_bucket: config::required(settings, "GATEWAY_REPORTS_BUCKET")?,
            identity_secret_id: config::required(
                settings,
                "GATEWAY_PROVISIONING_IDENTITY_SECRET_ID",
            )?,
            departments,
            department_group_prefix: settings
                .get("GATEWAY_DEPARTMENT_GROUP_PREFIX")
                .unwrap_or_else(|| "dept-".into()),
            utc_offset_minutes,
        })
    }
}
