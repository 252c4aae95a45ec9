//! The deployment configuration (`config/gateway.json`) as the local stack reads it: the one file the
//! CDK app deploys from (`cdk/lib/config.ts` is its typed, validating loader), so the local stack's
//! providers, transports, departments and function settings cannot drift from a deployment's.
//!
//! The local stack mirrors the `dev` environment. Only the parts it uses are read here; the CDK loader
//! validates the whole file (`cdk/test.sh`), and this reader refuses what it cannot use.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use gateway_shared::providers::TransportKind;
use gateway_shared::Provider;
use serde::Deserialize;

/// `GATEWAY_LOCAL_CONFIG_FILE` names another configuration file.
pub const CONFIG_FILE_SETTING: &str = "GATEWAY_LOCAL_CONFIG_FILE";
/// The environment of the configuration the local stack mirrors.
pub const MIRRORED_ENVIRONMENT: &str = "dev";
/// What stands for the environment's name in resource names (`<project>-local-audit`).
pub const LOCAL_ENVIRONMENT: &str = "local";

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentConfig {
    pub project: String,
    environments: BTreeMap<String, EnvironmentConfig>,
    providers: BTreeMap<String, ProviderConfig>,
    pub departments: BTreeMap<String, DepartmentConfig>,
    pub functions: FunctionsConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentConfig {
    pub log_level: String,
    pub audit_retention_days: u16,
    pub payload_expiry_days: u16,
    #[serde(default)]
    pub identity: IdentityConfig,
    pub api: ApiConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiConfig {
    /// The stage's throttle: the `default` usage plan's limits.
    pub throttle: Throttle,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Throttle {
    pub rate_limit: u32,
    pub burst_limit: u32,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct IdentityConfig {
    /// How long the authorizer trusts a user's revocation record (the staleness bound).
    pub revocation_cache_seconds: Option<u64>,
    /// The first administrator, created with the stack.
    pub bootstrap_admin: Option<BootstrapAdmin>,
    /// Where HR dates are meant, minutes east of UTC.
    pub provisioning_utc_offset_minutes: Option<i32>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BootstrapAdmin {
    pub username: String,
    pub email: String,
}

#[derive(Debug, Clone, Deserialize)]
struct ProviderConfig {
    transport: String,
    /// Where the provider serves this deployment's requests (not Bedrock's: its region is the
    /// deployment's own): the audit events' `region`, which regional prices match.
    #[serde(default)]
    region: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DepartmentConfig {
    /// The names HR files may use for the department (`営業部`), besides its id.
    #[serde(default)]
    pub names: Vec<String>,
    pub rate_limit: u32,
    pub burst_limit: u32,
    pub quota_per_day: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionsConfig {
    pub route_timeout_secs: u32,
    pub upstream_connect_timeout_ms: u64,
    pub upstream_response_timeout_ms: u64,
    pub dispatch_visibility_secs: u32,
    pub dispatch_max_receives: u32,
    pub audit_writer_timeout_secs: u32,
    pub audit_digest_grace_secs: u32,
    pub audit_digest_max_hours: u32,
    pub audit_bodies: bool,
    pub audit_body_max_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum DeploymentConfigError {
    #[error("cannot read the deployment configuration {path}: {source} (set {CONFIG_FILE_SETTING} to another file)")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the deployment configuration {path} is malformed: {source} (cd cdk && ./test.sh validates it)")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("the deployment configuration {path}: {problem}")]
    Invalid { path: PathBuf, problem: String },
}

/// The resolved transport and names of one provider, as the CDK stack derives them.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub config: DeploymentConfig,
    pub environment: EnvironmentConfig,
    pub transports: BTreeMap<Provider, TransportKind>,
    /// The configured provider regions (`providers.<name>.region`).
    pub regions: BTreeMap<Provider, String>,
}

impl DeploymentConfig {
    /// The repository's configuration (`config/gateway.json`), unless `GATEWAY_LOCAL_CONFIG_FILE` names
    /// another.
    pub fn default_path() -> PathBuf {
        std::env::var_os(CONFIG_FILE_SETTING)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/gateway.json"))
    }

    pub fn load(path: &Path) -> Result<Resolved, DeploymentConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| DeploymentConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config: DeploymentConfig =
            serde_json::from_str(&text).map_err(|source| DeploymentConfigError::Parse {
                path: path.to_path_buf(),
                source,
            })?;
        config.resolve(path)
    }

    fn resolve(self, path: &Path) -> Result<Resolved, DeploymentConfigError> {
        let invalid = |problem: String| DeploymentConfigError::Invalid {
            path: path.to_path_buf(),
            problem,
        };
        let environment = self
            .environments
            .get(MIRRORED_ENVIRONMENT)
            .cloned()
            .ok_or_else(|| invalid(format!("no {MIRRORED_ENVIRONMENT} environment")))?;
        let mut transports = BTreeMap::new();
        let mut regions = BTreeMap::new();
        for provider in Provider::ALL {
            let name = provider.route_prefix();
            let configured = self
                .providers
                .get(name)
                .ok_or_else(|| invalid(format!("providers.{name} is missing")))?;
            let transport = TransportKind::parse(&configured.transport)
                .map_err(|e| invalid(format!("providers.{name}.transport: {e}")))?;
            transports.insert(provider, transport);
            if let Some(region) = &configured.region {
                if provider == Provider::BedrockClaude {
                    return Err(invalid(format!(
                        "providers.{name}.region: Bedrock is called in the deployment's own region"
                    )));
                }
                regions.insert(provider, region.clone());
            }
        }
        if let Some(unknown) = self
            .providers
            .keys()
            .find(|k| !Provider::ALL.iter().any(|p| p.route_prefix() == k.as_str()))
        {
            return Err(invalid(format!("providers.{unknown} is not a provider")));
        }
        if self.departments.is_empty() {
            return Err(invalid("needs at least one department".into()));
        }
        Ok(Resolved {
            config: self,
            environment,
            transports,
            regions,
        })
    }
}

impl Resolved {
    /// `<project>-local-<what>`: the CDK stack's `<project>-<env>-<what>` with the local stack's name
    /// for its environment.
    pub fn resource_name(&self, what: &str) -> String {
        format!("{}-{what}", self.prefix())
    }

    /// `<project>-local`, as the CDK stack's `<project>-<env>` (the user pool's name, for one).
    pub fn prefix(&self) -> String {
        format!("{}-{LOCAL_ENVIRONMENT}", self.config.project)
    }

    /// The API key table (the authorizer, the admin API and the audit writer use it).
    pub fn apikey_table_name(&self) -> String {
        self.resource_name("apikeys")
    }

    /// The departments' budget settings (the routes, the admin API).
    pub fn department_table_name(&self) -> String {
        self.resource_name("departments")
    }

    /// The usage counters (the routes reserve, the audit writer settles, the admin API reads).
    pub fn usage_table_name(&self) -> String {
        self.resource_name("usage")
    }

    pub fn audit_queue_name(&self) -> String {
        self.resource_name("audit")
    }

    pub fn request_queue_name(&self, provider: Provider) -> String {
        self.resource_name(&format!("requests-{}", provider.route_prefix()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_configuration_resolves() {
        let resolved = DeploymentConfig::load(&DeploymentConfig::default_path()).unwrap();
        assert_eq!(resolved.transports.len(), Provider::ALL.len());
        assert!(!resolved.config.departments.is_empty());
        assert_eq!(
            resolved.request_queue_name(Provider::Gemini),
            format!("{}-local-requests-gemini", resolved.config.project)
        );
    }

    fn write(text: &str) -> tempfile_path::TempPath {
        tempfile_path::TempPath::with(text)
    }

    #[test]
    fn unknown_providers_and_transports_are_refused() {
        let base: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(DeploymentConfig::default_path()).unwrap(),
        )
        .unwrap();
        let mut bad = base.clone();
        bad["providers"]["gemini"]["transport"] = "pigeon".into();
        let file = write(&bad.to_string());
        let error = DeploymentConfig::load(file.path()).unwrap_err().to_string();
        assert!(error.contains("providers.gemini.transport"), "{error}");

        let mut bad = base.clone();
        bad["providers"]["openai"] = serde_json::json!({"transport": "direct"});
        let file = write(&bad.to_string());
        let error = DeploymentConfig::load(file.path()).unwrap_err().to_string();
        assert!(
            error.contains("providers.openai is not a provider"),
            "{error}"
        );

        let mut bad = base;
        bad["environments"].as_object_mut().unwrap().remove("dev");
        let file = write(&bad.to_string());
        let error = DeploymentConfig::load(file.path()).unwrap_err().to_string();
        assert!(error.contains("no dev environment"), "{error}");
    }

    #[test]
    fn provider_regions_are_read_and_bedrock_takes_none() {
        let base: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(DeploymentConfig::default_path()).unwrap(),
        )
        .unwrap();
        let mut good = base.clone();
        good["providers"]["azure-openai"]["region"] = "japaneast".into();
        let file = write(&good.to_string());
        let resolved = DeploymentConfig::load(file.path()).unwrap();
        assert_eq!(
            resolved
                .regions
                .get(&Provider::AzureOpenAi)
                .map(String::as_str),
            Some("japaneast")
        );
        assert_eq!(resolved.regions.get(&Provider::Gemini), None);

        let mut bad = base;
        bad["providers"]["bedrock-claude"]["region"] = "us-east-1".into();
        let file = write(&bad.to_string());
        let error = DeploymentConfig::load(file.path()).unwrap_err().to_string();
        assert!(error.contains("providers.bedrock-claude.region"), "{error}");
    }

    /// A file in the system's temporary folder, removed when dropped.
    mod tempfile_path {
        use std::path::{Path, PathBuf};

        pub struct TempPath(PathBuf);

        impl TempPath {
            pub fn with(text: &str) -> Self {
                let path = std::env::temp_dir().join(format!(
                    "gateway-config-{}.json",
                    uuid::Uuid::new_v4().simple()
                ));
                std::fs::write(&path, text).unwrap();
                TempPath(path)
            }

            pub fn path(&self) -> &Path {
                &self.0
            }
        }

        impl Drop for TempPath {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }
}
