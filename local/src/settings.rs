//! The local stack's own settings, from environment variables with defaults that work out of the box.

use std::path::PathBuf;

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
    pub moto_bin: String,
    /// `AWS_ENDPOINT_URL`: use this AWS endpoint instead of starting moto.
    pub aws_endpoint_url: Option<String>,
    pub region: String,
    pub mock_ports: [u16; 3],
    pub azure_endpoint: Option<String>,
    pub azure_key: Option<String>,
    pub bedrock_endpoint: Option<String>,
    pub gemini_endpoint: Option<String>,
    pub gemini_key: Option<String>,
    pub policy_file: Option<String>,
    /// `GATEWAY_TRANSPORT` for every route; unset: the design's defaults (queue for Azure OpenAI and
    /// Gemini, direct for Bedrock).
    pub transport: Option<String>,
    /// Request queues' visibility timeout (`GATEWAY_LOCAL_DISPATCH_VISIBILITY_SECS`, default 30).
    pub dispatch_visibility_secs: u32,
    /// Receives before a request message goes to its DLQ (`GATEWAY_LOCAL_DISPATCH_MAX_RECEIVES`, 3).
    pub dispatch_max_receives: u32,
}

/// The settings that move the mock providers' ports, in `LocalSettings::mock_ports` order.
pub const MOCK_PORT_SETTINGS: [&str; 3] = [
    "GATEWAY_LOCAL_MOCK_AZURE_PORT",
    "GATEWAY_LOCAL_MOCK_BEDROCK_PORT",
    "GATEWAY_LOCAL_MOCK_GEMINI_PORT",
];

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

impl LocalSettings {
    pub fn from_env() -> Result<Self, BoxError> {
        Ok(LocalSettings {
            dir: PathBuf::from(var("GATEWAY_LOCAL_DIR").unwrap_or_else(|| ".local".into())),
            host: var("GATEWAY_LOCAL_HOST").unwrap_or_else(|| "127.0.0.1".into()),
            http_port: port("GATEWAY_LOCAL_HTTP_PORT", 4080)?,
            https_port: port("GATEWAY_LOCAL_HTTPS_PORT", 4443)?,
            control_port: port("GATEWAY_LOCAL_CONTROL_PORT", 4099)?,
            moto_port: port("GATEWAY_LOCAL_MOTO_PORT", 5055)?,
            moto_bin: var("GATEWAY_LOCAL_MOTO_BIN")
                .unwrap_or_else(|| ".venv/bin/moto_server".into()),
            aws_endpoint_url: var("AWS_ENDPOINT_URL").map(|u| u.trim_end_matches('/').to_string()),
            region: var("AWS_REGION").unwrap_or_else(|| "us-east-1".into()),
            mock_ports: [
                port(MOCK_PORT_SETTINGS[0], 4091)?,
                port(MOCK_PORT_SETTINGS[1], 4092)?,
                port(MOCK_PORT_SETTINGS[2], 4093)?,
            ],
            azure_endpoint: var("GATEWAY_AZURE_OPENAI_ENDPOINT"),
            azure_key: var("GATEWAY_AZURE_OPENAI_API_KEY"),
            bedrock_endpoint: var("AWS_ENDPOINT_URL_BEDROCK_RUNTIME"),
            gemini_endpoint: var("GATEWAY_GEMINI_ENDPOINT"),
            gemini_key: var("GATEWAY_GEMINI_API_KEY"),
            policy_file: var("GATEWAY_SCOPE_POLICY_FILE"),
            transport: var("GATEWAY_TRANSPORT"),
            dispatch_visibility_secs: port("GATEWAY_LOCAL_DISPATCH_VISIBILITY_SECS", 30)?.into(),
            dispatch_max_receives: port("GATEWAY_LOCAL_DISPATCH_MAX_RECEIVES", 3)?.into(),
        })
    }

    pub fn aws_endpoint(&self) -> String {
        self.aws_endpoint_url
            .clone()
            .unwrap_or_else(|| format!("http://{}:{}", self.host, self.moto_port))
    }

    pub fn transport_for(&self, provider: gateway_shared::Provider) -> &str {
        match (&self.transport, provider) {
            (Some(transport), _) => transport,
            (None, gateway_shared::Provider::BedrockClaude) => "direct",
            (None, gateway_shared::Provider::AzureOpenAi | gateway_shared::Provider::Gemini) => {
                "queue"
            }
        }
    }

    pub fn state_file(&self) -> PathBuf {
        self.dir.join("stack.json")
    }
}
