//! The local stack's own settings, from environment variables with defaults that work out of the box.

use std::collections::BTreeMap;
use std::path::PathBuf;

use gateway_local::deployment::{DeploymentConfig, Resolved};
use gateway_shared::providers::TransportKind;
use gateway_shared::Provider;

use crate::resources::BoxError;

pub struct LocalSettings {
    /// Where the state file, TLS certificate and moto log go (`GATEWAY_LOCAL_DIR`, default `.local`).
    pub dir: PathBuf,
    pub host: String,
    pub http_port: u16,
    pub https_port: u16,
    /// The local-only control endpoints' port (`GATEWAY_LOCAL_CONTROL_PORT`, default 4099), always on
    /// 127.0.0.1 whatever `GATEWAY_LOCAL_HOST` says: never reachable through the gateway's client ports.
    pub control_port: u16,
    pub moto_port: u16,
    /// `GATEWAY_LOCAL_MOTO_BIN`: a moto server program taking `-H host -p port`, instead of the bundled
    /// launcher (`local/moto_server.py`) run by `python`.
    pub moto_bin: Option<String>,
    /// The Python with moto and waitress (`GATEWAY_LOCAL_PYTHON`, default `.venv/bin/python`).
    pub python: String,
    /// `AWS_ENDPOINT_URL`: use this AWS endpoint instead of starting moto.
    pub aws_endpoint_url: Option<String>,
    pub region: String,
    /// Each provider's bundled mock port (see [`LocalProvider::mock_port_setting`]).
    pub mock_ports: BTreeMap<Provider, u16>,
    /// Providers with a configured upstream (the spec's endpoint setting) instead of the bundled mock.
    pub endpoints: BTreeMap<Provider, String>,
    /// Upstream keys given for key-taking providers ([`LocalProvider::key_setting`]); random otherwise.
    pub keys: BTreeMap<Provider, String>,
    pub policy_file: Option<String>,
    /// The deployment configuration (`config/gateway.json`, its `dev` environment): providers'
    /// transports, departments, function settings, resource names.
    pub deployment: Resolved,
    /// `GATEWAY_TRANSPORT` for every route; unset: each provider's configured transport.
    pub transport: Option<TransportKind>,
    /// Request queues' visibility timeout (`GATEWAY_LOCAL_DISPATCH_VISIBILITY_SECS`, default the
    /// configuration's `dispatchVisibilitySecs`).
    pub dispatch_visibility_secs: u32,
    /// The route functions' timeout (`GATEWAY_LOCAL_FUNCTION_TIMEOUT_SECS`, default 900, Lambda's
    /// maximum): streams still running near it are ended cleanly, as in Lambda.
    pub function_timeout: std::time::Duration,
    /// Receives before a request message goes to its DLQ (`GATEWAY_LOCAL_DISPATCH_MAX_RECEIVES`,
    /// default the configuration's `dispatchMaxReceives`).
    pub dispatch_max_receives: u32,
    /// The audit bucket's Object Lock default retention, COMPLIANCE mode
    /// (`GATEWAY_LOCAL_AUDIT_RETENTION_DAYS`, default the `dev` environment's `auditRetentionDays`).
    pub audit_retention_days: u16,
    /// Whether the usage plans are emulated (`GATEWAY_LOCAL_USAGE_PLANS`, `on` or `off`; default on).
    /// Benchmarks turn them off: they measure the gateway's time, not a plan's limits.
    pub usage_plans: bool,
}

/// What the local stack alone knows about a provider (where it is and how it authenticates is the
/// provider's `UpstreamSpec`, shared with the functions).
pub struct LocalProvider {
    /// The setting that moves the bundled mock's port.
    pub mock_port_setting: &'static str,
    pub default_mock_port: u16,
    /// The setting giving a real upstream key to store in the local secret (key-taking providers).
    pub key_setting: Option<&'static str>,
}

pub fn local_provider(provider: Provider) -> LocalProvider {
    match provider {
        Provider::AzureOpenAi => LocalProvider {
            mock_port_setting: "GATEWAY_LOCAL_MOCK_AZURE_PORT",
            default_mock_port: 4091,
            key_setting: Some("GATEWAY_AZURE_OPENAI_API_KEY"),
        },
        Provider::BedrockClaude => LocalProvider {
            mock_port_setting: "GATEWAY_LOCAL_MOCK_BEDROCK_PORT",
            default_mock_port: 4092,
            key_setting: None,
        },
        Provider::Gemini => LocalProvider {
            mock_port_setting: "GATEWAY_LOCAL_MOCK_GEMINI_PORT",
            default_mock_port: 4093,
            key_setting: Some("GATEWAY_GEMINI_API_KEY"),
        },
    }
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// A small unsigned setting (ports, seconds, counts).
fn port(name: &str, default: u16) -> Result<u16, BoxError> {
    match var(name) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|e| format!("{name}={v:?} is not a port: {e}").into()),
    }
}

/// A count setting (seconds, receives).
fn count(name: &str, default: u32) -> Result<u32, BoxError> {
    match var(name) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|e| format!("{name}={v:?} is not a count: {e}").into()),
    }
}

impl LocalSettings {
    pub fn from_env() -> Result<Self, BoxError> {
        let deployment = DeploymentConfig::load(&DeploymentConfig::default_path())?;
        let functions = &deployment.config.functions;
        let dispatch_visibility_secs = functions.dispatch_visibility_secs;
        let dispatch_max_receives = functions.dispatch_max_receives;
        let audit_retention_days = deployment.environment.audit_retention_days;
        Ok(LocalSettings {
            dir: PathBuf::from(var("GATEWAY_LOCAL_DIR").unwrap_or_else(|| ".local".into())),
            host: var("GATEWAY_LOCAL_HOST").unwrap_or_else(|| "127.0.0.1".into()),
            http_port: port("GATEWAY_LOCAL_HTTP_PORT", 4080)?,
            https_port: port("GATEWAY_LOCAL_HTTPS_PORT", 4443)?,
            control_port: port("GATEWAY_LOCAL_CONTROL_PORT", 4099)?,
            moto_port: port("GATEWAY_LOCAL_MOTO_PORT", 5055)?,
            moto_bin: var("GATEWAY_LOCAL_MOTO_BIN"),
            python: var("GATEWAY_LOCAL_PYTHON").unwrap_or_else(|| ".venv/bin/python".into()),
            aws_endpoint_url: var("AWS_ENDPOINT_URL").map(|u| u.trim_end_matches('/').to_string()),
            region: var("AWS_REGION").unwrap_or_else(|| "us-east-1".into()),
            mock_ports: Provider::ALL
                .into_iter()
                .map(|p| {
                    let local = local_provider(p);
                    Ok((p, port(local.mock_port_setting, local.default_mock_port)?))
                })
                .collect::<Result<_, BoxError>>()?,
            endpoints: Provider::ALL
                .into_iter()
                .filter_map(|p| Some((p, var(p.upstream().endpoint_setting)?)))
                .collect(),
            keys: Provider::ALL
                .into_iter()
                .filter_map(|p| Some((p, var(local_provider(p).key_setting?)?)))
                .collect(),
            policy_file: var("GATEWAY_SCOPE_POLICY_FILE"),
            transport: var(TransportKind::SETTING)
                .map(|v| TransportKind::parse(&v))
                .transpose()?,
            dispatch_visibility_secs: count(
                "GATEWAY_LOCAL_DISPATCH_VISIBILITY_SECS",
                dispatch_visibility_secs,
            )?,
            function_timeout: std::time::Duration::from_secs(
                port("GATEWAY_LOCAL_FUNCTION_TIMEOUT_SECS", 900)?.into(),
            ),
            dispatch_max_receives: count(
                "GATEWAY_LOCAL_DISPATCH_MAX_RECEIVES",
                dispatch_max_receives,
            )?,
            audit_retention_days: match port(
                "GATEWAY_LOCAL_AUDIT_RETENTION_DAYS",
                audit_retention_days,
            )? {
                0 => return Err("GATEWAY_LOCAL_AUDIT_RETENTION_DAYS must be at least 1".into()),
                days => days,
            },
            usage_plans: match var("GATEWAY_LOCAL_USAGE_PLANS").as_deref() {
                None | Some("on") => true,
                Some("off") => false,
                Some(other) => {
                    return Err(format!("GATEWAY_LOCAL_USAGE_PLANS={other:?}: on or off").into())
                }
            },
            deployment,
        })
    }

    pub fn aws_endpoint(&self) -> String {
        self.aws_endpoint_url
            .clone()
            .unwrap_or_else(|| format!("http://{}:{}", self.host, self.moto_port))
    }

    pub fn transport_for(&self, provider: Provider) -> TransportKind {
        self.transport
            .unwrap_or(self.deployment.transports[&provider])
    }

    /// The providers whose routes use the queue transport in this stack.
    pub fn queued(&self) -> Vec<Provider> {
        Provider::ALL
            .into_iter()
            .filter(|p| self.transport_for(*p) == TransportKind::Queue)
            .collect()
    }

    pub fn state_file(&self) -> PathBuf {
        self.dir.join("stack.json")
    }
}
