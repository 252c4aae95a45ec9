//! Where each provider's API is and how the gateway authenticates to it, as data.
//!
//! One [`UpstreamSpec`] per provider (an exhaustive match in [`super::Provider::upstream`]) is the only
//! place these facts are written: the direct transport resolves it against the function's settings, the
//! local stack wires its mocks and secrets from it, and the benchmarks configure the function binaries
//! from it. A new provider does not compile until it has one.

use http::HeaderName;

use crate::config::{self, ConfigError, Settings};

/// A provider's upstream: the setting that names its endpoint, the credential it takes, and the
/// transport its route uses unless `GATEWAY_TRANSPORT` says otherwise.
#[derive(Debug)]
pub struct UpstreamSpec {
    /// The setting holding the API's base URL (`https://host[:port][/base]`).
    pub endpoint_setting: &'static str,
    pub default_endpoint: DefaultEndpoint,
    pub credential: CredentialSpec,
    pub default_transport: TransportKind,
    /// The settings naming the region requests go to, the first that is set: the audit event's
    /// `region`, which regional prices match. Unset: no region (prices for every region apply).
    pub region_settings: &'static [&'static str],
}

/// The endpoint used when [`UpstreamSpec::endpoint_setting`] is unset.
#[derive(Debug)]
pub enum DefaultEndpoint {
    /// None: every customer has their own resource (Azure OpenAI), so the setting is required.
    Required,
    /// One public endpoint for everyone (Gemini).
    Fixed(&'static str),
    /// The AWS regional endpoint `https://{service}.{region}.amazonaws.com` (Bedrock runtime).
    AwsRegional { service: &'static str },
}

/// How the gateway proves itself to the provider; the client's own credential never goes upstream.
#[derive(Debug)]
pub enum CredentialSpec {
    /// An API key read from Secrets Manager (the secret id is in `secret_id_setting`) and sent in
    /// `header`.
    ApiKey {
        header: HeaderName,
        secret_id_setting: &'static str,
    },
    /// SigV4 with the function's own role; the region is the first of `region_settings` that is set.
    SigV4 {
        service: &'static str,
        region_settings: &'static [&'static str],
    },
}

/// How a route reaches its provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportKind {
    /// The route function calls the provider itself.
    Direct,
    /// Through the provider's request queue and the dispatcher in the VPC.
    Queue,
}

impl TransportKind {
    pub const SETTING: &'static str = "GATEWAY_TRANSPORT";

    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::Direct => "direct",
            TransportKind::Queue => "queue",
        }
    }

    pub fn parse(value: &str) -> Result<Self, ConfigError> {
        match value.trim() {
            "direct" => Ok(TransportKind::Direct),
            "queue" => Ok(TransportKind::Queue),
            other => Err(ConfigError::Invalid {
                name: Self::SETTING,
                reason: format!("{other:?} is not a transport (direct, queue)"),
            }),
        }
    }
}

/// A credential with its settings read: which secret, or which signing region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolvedCredential {
    ApiKey {
        header: HeaderName,
        secret_id: String,
    },
    SigV4 {
        service: &'static str,
        region: String,
    },
}

impl UpstreamSpec {
    /// The region this deployment's requests go to ([`UpstreamSpec::region_settings`]).
    pub fn region(&self, settings: &dyn Settings) -> Option<String> {
        self.region_settings
            .iter()
            .find_map(|name| settings.get(name))
            .map(|region| region.trim().to_string())
            .filter(|region| !region.is_empty())
    }

    /// The base URL and credential this deployment's settings give, with a message naming the setting
    /// that is missing or wrong.
    pub fn resolve(
        &self,
        settings: &dyn Settings,
    ) -> Result<(String, ResolvedCredential), ConfigError> {
        let configured = settings.get(self.endpoint_setting);
        if configured.is_none() && matches!(self.default_endpoint, DefaultEndpoint::Required) {
            return Err(ConfigError::Missing(self.endpoint_setting));
        }
        let credential = match &self.credential {
            CredentialSpec::ApiKey {
                header,
                secret_id_setting,
            } => ResolvedCredential::ApiKey {
                header: header.clone(),
                secret_id: config::required(settings, secret_id_setting)?,
            },
            CredentialSpec::SigV4 {
                service,
                region_settings,
            } => ResolvedCredential::SigV4 {
                service,
                region: region_settings
                    .iter()
                    .find_map(|name| settings.get(name))
                    .ok_or(ConfigError::MissingOneOf(region_settings))?,
            },
        };
        let endpoint = match (configured, &self.default_endpoint) {
            (Some(url), _) => url,
            (None, DefaultEndpoint::Required) => {
                return Err(ConfigError::Missing(self.endpoint_setting))
            }
            (None, DefaultEndpoint::Fixed(url)) => url.to_string(),
            (None, DefaultEndpoint::AwsRegional { service }) => match &credential {
                ResolvedCredential::SigV4 { region, .. } => {
                    format!("https://{service}.{region}.amazonaws.com")
                }
                ResolvedCredential::ApiKey { .. } => {
                    return Err(ConfigError::Missing(self.endpoint_setting))
                }
            },
        };
        Ok((
            config::base_url(self.endpoint_setting, endpoint)?,
            credential,
        ))
    }

    /// The settings that point a function at `endpoint` with the key in `secret_id` (the inverse of
    /// [`Self::resolve`]; a SigV4 upstream takes no secret): what the local stack and the benchmarks
    /// give the functions they start.
    pub fn settings_for(
        &self,
        endpoint: Option<&str>,
        secret_id: Option<&str>,
    ) -> Vec<(&'static str, String)> {
        let mut settings = Vec::new();
        if let Some(url) = endpoint {
            settings.push((self.endpoint_setting, url.to_string()));
        }
        if let (
            CredentialSpec::ApiKey {
                secret_id_setting, ..
            },
            Some(secret_id),
        ) = (&self.credential, secret_id)
        {
            settings.push((*secret_id_setting, secret_id.to_string()));
        }
        settings
    }

    /// The settings a deployment must (or may) set for this upstream, for messages and documentation.
    pub fn settings(&self) -> Vec<&'static str> {
        let mut names = vec![self.endpoint_setting];
        match &self.credential {
            CredentialSpec::ApiKey {
                secret_id_setting, ..
            } => names.push(secret_id_setting),
            CredentialSpec::SigV4 {
                region_settings, ..
            } => names.extend(region_settings.iter()),
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::settings;
    use crate::Provider;

    #[test]
    fn azure_needs_its_endpoint_and_key_secret() {
        let spec = Provider::AzureOpenAi.upstream();
        let err = spec.resolve(&settings(&[])).unwrap_err();
        assert!(err.to_string().contains("GATEWAY_AZURE_OPENAI_ENDPOINT"));
        let err = spec
            .resolve(&settings(&[(
                "GATEWAY_AZURE_OPENAI_ENDPOINT",
                "https://x.openai.azure.com",
            )]))
            .unwrap_err();
        assert!(err
            .to_string()
            .contains("GATEWAY_AZURE_OPENAI_KEY_SECRET_ID"));
        let (url, credential) = spec
            .resolve(&settings(&[
                ("GATEWAY_AZURE_OPENAI_KEY_SECRET_ID", "s"),
                (
                    "GATEWAY_AZURE_OPENAI_ENDPOINT",
                    "https://x.openai.azure.com/",
                ),
            ]))
            .unwrap();
        assert_eq!(url, "https://x.openai.azure.com");
        assert_eq!(
            credential,
            ResolvedCredential::ApiKey {
                header: HeaderName::from_static("api-key"),
                secret_id: "s".into()
            }
        );
    }

    #[test]
    fn gemini_defaults_to_googles_endpoint() {
        let (url, credential) = Provider::Gemini
            .upstream()
            .resolve(&settings(&[("GATEWAY_GEMINI_KEY_SECRET_ID", "g")]))
            .unwrap();
        assert_eq!(url, "https://generativelanguage.googleapis.com");
        assert!(
            matches!(credential, ResolvedCredential::ApiKey { header, .. } if header == "x-goog-api-key")
        );
    }

    #[test]
    fn bedrock_signs_for_the_configured_region_and_defaults_to_its_regional_endpoint() {
        let spec = Provider::BedrockClaude.upstream();
        assert!(spec.resolve(&settings(&[])).is_err());
        let (url, credential) = spec
            .resolve(&settings(&[
                ("AWS_REGION", "us-east-1"),
                ("GATEWAY_BEDROCK_REGION", "eu-central-1"),
            ]))
            .unwrap();
        assert_eq!(url, "https://bedrock-runtime.eu-central-1.amazonaws.com");
        assert_eq!(
            credential,
            ResolvedCredential::SigV4 {
                service: "bedrock",
                region: "eu-central-1".into()
            }
        );
        let (url, _) = spec
            .resolve(&settings(&[
                ("AWS_REGION", "us-west-2"),
                ("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "http://127.0.0.1:9"),
            ]))
            .unwrap();
        assert_eq!(url, "http://127.0.0.1:9");
    }

    #[test]
    fn an_endpoint_that_is_not_a_url_is_refused_by_name() {
        let err = Provider::Gemini
            .upstream()
            .resolve(&settings(&[
                ("GATEWAY_GEMINI_KEY_SECRET_ID", "g"),
                (
                    "GATEWAY_GEMINI_ENDPOINT",
                    "generativelanguage.googleapis.com",
                ),
            ]))
            .unwrap_err();
        assert!(err.to_string().contains("GATEWAY_GEMINI_ENDPOINT"), "{err}");
    }

    #[test]
    fn the_settings_for_an_upstream_resolve_back_to_it() {
        for provider in Provider::ALL {
            let spec = provider.upstream();
            let mut pairs = spec.settings_for(Some("http://127.0.0.1:4091/base"), Some("secret-1"));
            pairs.push(("AWS_REGION", "eu-west-1".into()));
            let map = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect::<std::collections::HashMap<_, _>>();
            let (url, credential) = spec.resolve(&map).unwrap();
            assert_eq!(url, "http://127.0.0.1:4091/base", "{provider:?}");
            match credential {
                ResolvedCredential::ApiKey { secret_id, .. } => assert_eq!(secret_id, "secret-1"),
                ResolvedCredential::SigV4 { region, .. } => assert_eq!(region, "eu-west-1"),
            }
        }
    }

    #[test]
    fn transports_parse_by_name_only() {
        assert_eq!(TransportKind::parse("queue").unwrap(), TransportKind::Queue);
        assert_eq!(
            TransportKind::parse(" direct ").unwrap(),
            TransportKind::Direct
        );
        assert!(TransportKind::parse("carrier-pigeon").is_err());
    }
}
