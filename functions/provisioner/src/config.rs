//! The provisioner's settings, read once at init.

use gateway_shared::config::{self, ConfigError, Settings};
use gateway_shared::directory::DirectorySettings;

/// Objects under this prefix are applied.
pub const APPLY_PREFIX: &str = "incoming/";
/// Objects under this prefix are planned and reported, never applied (a dry run).
pub const DRY_RUN_PREFIX: &str = "dry-run/";
/// Reports go under this prefix of the reports bucket.
pub const REPORT_PREFIX: &str = "reports/provisioning/";

#[derive(Debug, Clone)]
pub struct ProvisionerConfig {
    /// The pool, departments, dates, revocations and mail, as every user-managing function has them.
    pub directory: DirectorySettings,
    /// The bucket HR files arrive in; events for any other bucket are refused.
    pub bucket: String,
    pub reports_bucket: String,
    /// Secrets Manager id of the age identity (`AGE-SECRET-KEY-1...`).
    pub identity_secret_id: String,
}

impl ProvisionerConfig {
    /// [`DirectorySettings`], `GATEWAY_PROVISIONING_BUCKET`, `GATEWAY_REPORTS_BUCKET`,
    /// `GATEWAY_PROVISIONING_IDENTITY_SECRET_ID` (all required).
    pub fn from_settings(settings: &dyn Settings) -> Result<Self, ConfigError> {
        Ok(ProvisionerConfig {
            directory: DirectorySettings::from_settings(settings)?,
            bucket: config::required(settings, "GATEWAY_PROVISIONING_BUCKET")?,
            reports_bucket: config::required(settings, "GATEWAY_REPORTS_BUCKET")?,
            identity_secret_id: config::required(
                settings,
                "GATEWAY_PROVISIONING_IDENTITY_SECRET_ID",
            )?,
        })
    }
}
