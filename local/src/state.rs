//! The local stack's state file (`.local/stack.json`): what a running stack offers and where, for the
//! start banner, the end-to-end tests and the benchmarks. Written last and atomically, so its presence
//! means the stack is ready; removed at shutdown.
//!
//! Providers are keyed by their one spelling ([`Provider`]'s route prefix: `azure-openai`,
//! `bedrock-claude`, `gemini`). Unknown fields are refused on read, so a reader built against another
//! version of the stack fails loudly instead of reading a default.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use gateway_shared::Provider;
use serde::{Deserialize, Serialize};

/// The settings that locate the state file: `GATEWAY_LOCAL_STATE`, else `<GATEWAY_LOCAL_DIR>/stack.json`.
pub const STATE_SETTING: &str = "GATEWAY_LOCAL_STATE";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackState {
    /// The gateway's client port, plain HTTP: `http://127.0.0.1:4080`.
    pub base_url: String,
    /// The same gateway over TLS (boto3 sends bearer tokens over HTTPS only).
    pub https_base_url: String,
    /// The local-only control endpoints (`/_local/metrics`, `/_local/sweep-reply-queues`,
    /// `/_local/audit-digest`).
    pub control_url: String,
    /// The self-signed certificate the HTTPS port presents.
    pub ca_bundle: String,
    /// moto (or the configured AWS endpoint).
    pub aws_endpoint_url: String,
    pub region: String,
    pub user_pool_id: String,
    pub app_client_id: String,
    /// The `iss` of the pool's tokens.
    pub issuer: String,
    pub jwks_url: String,
    pub demo_user: DemoUser,
    /// Every Cognito group the stack created: the policy's groups and the departments'.
    pub groups: Vec<String>,
    /// Secrets Manager ids of the upstream keys, for providers that take one.
    pub secrets: BTreeMap<Provider, String>,
    /// Where each route sends its requests: a bundled mock or a configured endpoint.
    pub upstreams: BTreeMap<Provider, String>,
    /// The bundled mocks that run (their `/_mock/*` journal and fault endpoints).
    pub mocks: BTreeMap<Provider, String>,
    pub upstream_response_timeout_ms: u64,
    pub buckets: Buckets,
    /// How the routes record request and response bodies (encrypted, in the audit bucket).
    pub audit_bodies: AuditBodies,
    /// Each route's transport (`direct` or `queue`): the configuration's, or `GATEWAY_TRANSPORT`'s.
    pub transports: BTreeMap<Provider, String>,
    pub queues: Queues,
    pub keys: Keys,
    pub provisioning: Provisioning,
    pub identity: Identity,
    /// Each function's environment, by function name (`authorizer`, a route prefix, `dispatcher` when
    /// some route is queued, `audit-writer`, `audit-digest`): what the CDK stack sets in Lambda, with
    /// this stack's values. Names of secrets only, never their values.
    pub functions: BTreeMap<String, BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoUser {
    pub username: String,
    pub password: String,
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Buckets {
    pub audit: String,
    pub payloads: String,
}

/// KMS keys, by ARN.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keys {
    /// The asymmetric key that signs the hourly audit digests (what `gateway-audit verify` checks
    /// signatures against: `GATEWAY_AUDIT_DIGEST_KEY_ID`).
    pub audit_digest: String,
    /// The symmetric key the routes generate the audit bodies' data keys under
    /// (`GATEWAY_AUDIT_BODY_KEY_ID`; `gateway-audit bodies` needs kms:Decrypt on it).
    pub audit_bodies: String,
}

/// Identity's own resources besides the pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// The DynamoDB table of revoked users the authorizer reads.
    pub revocation_table: String,
    /// The DynamoDB table of API keys (hashes only).
    pub apikey_table: String,
    /// The departments' budget settings, and the usage counters budgets reserve on.
    pub department_table: String,
    pub usage_table: String,
    /// The SES identity invitations come from.
    pub mail_from: String,
    /// Where the local moto lists every mail SES accepted (a JSON list of `{id, source, subject, body,
    /// destinations}`).
    pub mail_messages_url: String,
}

/// Bulk provisioning: HR files go into `bucket` (`incoming/` applies, `dry-run/` plans), encrypted with
/// age to `recipient`; reports appear in `reports_bucket` under `reports/provisioning/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provisioning {
    pub bucket: String,
    pub reports_bucket: String,
    /// The age recipient (`age1...`) HR encrypts files to.
    pub recipient: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditBodies {
    /// `GATEWAY_AUDIT_BODIES` is on (the default).
    pub enabled: bool,
    /// `GATEWAY_AUDIT_BODY_MAX_BYTES`: kept per direction, beyond it a part is `truncated`.
    pub max_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Queues {
    pub audit: String,
    pub audit_dlq: String,
    /// The request queues of the queued routes only.
    pub requests: BTreeMap<Provider, RequestQueue>,
    /// Name prefix of the per-environment reply queues.
    pub reply_prefix: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestQueue {
    pub url: String,
    pub dlq: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read the stack state file {path}: {source} (is the local stack running? ./local/run.sh)")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the stack state file {path} is not this version's: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write the stack state file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl StackState {
    /// Where a reader finds the running stack's state.
    pub fn default_path() -> PathBuf {
        match std::env::var(STATE_SETTING) {
            Ok(path) if !path.trim().is_empty() => PathBuf::from(path),
            _ => {
                let dir = std::env::var("GATEWAY_LOCAL_DIR")
                    .ok()
                    .filter(|d| !d.trim().is_empty())
                    .unwrap_or_else(|| ".local".into());
                Path::new(&dir).join("stack.json")
            }
        }
    }

    pub fn load(path: &Path) -> Result<Self, StateError> {
        let text = std::fs::read_to_string(path).map_err(|source| StateError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| StateError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Writes through a temporary file and a rename, so a reader never sees half a file.
    pub fn write_atomically(&self, path: &Path) -> Result<(), StateError> {
        let write_error = |source| StateError::Write {
            path: path.to_path_buf(),
            source,
        };
        let text = serde_json::to_string_pretty(self).map_err(|source| StateError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text).map_err(write_error)?;
        std::fs::rename(&tmp, path).map_err(write_error)
    }

    /// The request queue of a provider's route, if the stack made one.
    pub fn request_queue(&self, provider: Provider) -> Option<&RequestQueue> {
        self.queues.requests.get(&provider)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StackState {
        let per_provider =
            |f: &dyn Fn(Provider) -> String| Provider::ALL.into_iter().map(|p| (p, f(p))).collect();
        StackState {
            base_url: "http://127.0.0.1:4080".into(),
            https_base_url: "https://localhost:4443".into(),
            control_url: "http://127.0.0.1:4099".into(),
            ca_bundle: "/tmp/ca.pem".into(),
            aws_endpoint_url: "http://127.0.0.1:5055".into(),
            region: "us-east-1".into(),
            user_pool_id: "us-east-1_x".into(),
            app_client_id: "c".into(),
            issuer: "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_x".into(),
            jwks_url: "http://127.0.0.1:5055/us-east-1_x/.well-known/jwks.json".into(),
            demo_user: DemoUser {
                username: "demo".into(),
                password: "p".into(),
                groups: vec!["gateway-all".into()],
            },
            groups: vec!["gateway-all".into()],
            secrets: per_provider(&|p| format!("secret-{}", p.route_prefix())),
            upstreams: per_provider(&|p| format!("http://mock/{}", p.route_prefix())),
            mocks: BTreeMap::new(),
            upstream_response_timeout_ms: 6000,
            buckets: Buckets {
                audit: "a".into(),
                payloads: "p".into(),
            },
            audit_bodies: AuditBodies {
                enabled: true,
                max_bytes: 1024,
            },
            transports: per_provider(&|_| "queue".into()),
            queues: Queues {
                audit: "q".into(),
                audit_dlq: "d".into(),
                requests: Provider::ALL
                    .into_iter()
                    .map(|p| {
                        (
                            p,
                            RequestQueue {
                                url: format!("u-{}", p.route_prefix()),
                                dlq: "d".into(),
                            },
                        )
                    })
                    .collect(),
                reply_prefix: "llm-gateway-reply-".into(),
            },
            keys: Keys {
                audit_digest: "arn:aws:kms:us-east-1:123456789012:key/k".into(),
                audit_bodies: "arn:aws:kms:us-east-1:123456789012:key/b".into(),
            },
            provisioning: Provisioning {
                bucket: "p".into(),
                reports_bucket: "r".into(),
                recipient: "age1x".into(),
            },
            identity: Identity {
                revocation_table: "t".into(),
                apikey_table: "k".into(),
                department_table: "d".into(),
                usage_table: "u".into(),
                mail_from: "m@example.com".into(),
                mail_messages_url: "http://127.0.0.1:1/moto-api/data.json".into(),
            },
            functions: BTreeMap::from([(
                "audit-writer".to_string(),
                BTreeMap::from([("GATEWAY_AUDIT_BUCKET".to_string(), "a".to_string())]),
            )]),
        }
    }

    #[test]
    fn providers_are_keyed_by_their_route_prefix_and_round_trip() {
        let state = sample();
        let json = serde_json::to_value(&state).unwrap();
        assert_eq!(json["secrets"]["bedrock-claude"], "secret-bedrock-claude");
        assert_eq!(
            json["queues"]["requests"]["azure-openai"]["url"],
            "u-azure-openai"
        );
        let dir = std::env::temp_dir().join(format!("stack-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("stack.json");
        state.write_atomically(&path).unwrap();
        assert_eq!(StackState::load(&path).unwrap(), state);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_state_file_of_another_shape_is_refused() {
        let mut json = serde_json::to_value(sample()).unwrap();
        json["queues"]["requests"]["bedrock"] =
            json["queues"]["requests"]["bedrock-claude"].clone();
        assert!(serde_json::from_value::<StackState>(json.clone()).is_err());
        json["queues"]["requests"]
            .as_object_mut()
            .unwrap()
            .remove("bedrock");
        json["surprise"] = true.into();
        assert!(serde_json::from_value::<StackState>(json).is_err());
    }
}
