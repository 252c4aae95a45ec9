//! Verifying gateway tokens (OIDC access tokens) against their issuer's JWKS.
//!
//! - RS256 only: `none`, HMAC (a classic key-confusion attack when the public key is used as the secret)
//!   and anything else are refused before a key is even looked up.
//! - Keys are fetched once per execution environment and cached; an unknown `kid` triggers one refetch
//!   (key rotation), at most once per [`REFRESH_COOLDOWN`] so forged kids cannot hammer the issuer.
//! - The JWKS URL is its own setting and never derived from the token (a token must not choose where its
//!   key comes from).
//! - Claims differ per issuer (Cognito: `token_use` + `client_id`; Entra: `aud`/`azp`/`scp`), so the claim
//!   names are configuration in [`IssuerConfig`], not code.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine;
use jsonwebtoken::{jwk::JwkSet, Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::RwLock;

pub const REFRESH_COOLDOWN: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct IssuerConfig {
    /// Exact `iss` claim value.
    pub issuer: String,
    pub jwks_url: String,
    /// Accepted app clients (value of `client_id_claim`); empty accepts none.
    pub client_ids: Vec<String>,
    pub client_id_claim: String,
    /// Required `token_use` value (Cognito: `access`), if the issuer has that claim.
    pub required_token_use: Option<String>,
    /// Required audiences (Entra); empty skips the `aud` check (Cognito access tokens have no `aud`).
    pub audiences: Vec<String>,
    pub groups_claim: String,
    /// Space-separated scopes (Cognito `scope`, Entra `scp`).
    pub scope_claim: String,
    pub username_claim: String,
    /// Label for audit and context, e.g. `cognito`.
    pub auth_method: String,
}

impl IssuerConfig {
    /// A Cognito user pool's access tokens.
    pub fn cognito(
        region: &str,
        user_pool_id: &str,
        jwks_url: Option<String>,
        client_ids: Vec<String>,
    ) -> Self {
        let issuer = format!("https://cognito-idp.{region}.amazonaws.com/{user_pool_id}");
        IssuerConfig {
            jwks_url: jwks_url.unwrap_or_else(|| format!("{issuer}/.well-known/jwks.json")),
            issuer,
            client_ids,
            client_id_claim: "client_id".into(),
            required_token_use: Some("access".into()),
            audiences: Vec::new(),
            groups_claim: "cognito:groups".into(),
            scope_claim: "scope".into(),
            username_claim: "username".into(),
            auth_method: "cognito".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is not a well-formed JWT")]
    Malformed,
    #[error("token algorithm {0} is not accepted (RS256 only)")]
    UnsupportedAlgorithm(String),
    #[error("token has no key id")]
    MissingKeyId,
    #[error("token issuer is not trusted")]
    UnknownIssuer,
    #[error("token key id is not in the issuer's key set")]
    UnknownKey,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    /// `iat` later than now (beyond the clock-skew leeway): a forged or mis-minted token, and one a
    /// revocation check (tokens issued before a sign-out are refused) could not order.
    #[error("token claims to be issued in the future")]
    IssuedInFuture,
    #[error("token is not an access token")]
    WrongTokenUse,
    #[error("token was issued to another client")]
    WrongClient,
    #[error("token audience is not accepted")]
    WrongAudience,
    #[error("token lacks required claim {0}")]
    MissingClaim(String),
    #[error("issuer key set unavailable: {0}")]
    JwksUnavailable(String),
}

impl TokenError {
    /// Whether the failure is the gateway's (its issuer's keys could not be read) rather than the token's.
    pub fn is_internal(&self) -> bool {
        matches!(self, TokenError::JwksUnavailable(_))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    pub subject: String,
    pub username: Option<String>,
    pub client_id: Option<String>,
    pub groups: Vec<String>,
    pub scopes: Vec<String>,
    pub issuer: String,
    pub issued_at: Option<u64>,
    pub expires_at: u64,
    pub auth_method: String,
}

#[derive(Default)]
struct KeyCache {
    keys: HashMap<String, DecodingKey>,
    /// When an unknown `kid` last caused a refetch; such refetches are rate-limited, the first is not.
    unknown_kid_refetch_at: Option<Instant>,
}

struct TrustedIssuer {
    config: IssuerConfig,
    keys: RwLock<KeyCache>,
}

pub struct Verifier {
    issuers: Vec<TrustedIssuer>,
    http: reqwest::Client,
    leeway_secs: u64,
}

#[derive(Deserialize)]
struct PeekClaims {
    iss: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    iat: Option<u64>,
    #[serde(flatten)]
    other: serde_json::Map<String, Value>,
}

impl Verifier {
    pub fn new(issuers: Vec<IssuerConfig>, http: reqwest::Client) -> Self {
        Verifier {
            issuers: issuers
                .into_iter()
                .map(|config| TrustedIssuer {
                    config,
                    keys: RwLock::new(KeyCache::default()),
                })
                .collect(),
            http,
            // Small clock skew between the issuer and Lambda; tokens live 15 minutes.
            leeway_secs: 30,
        }
    }

    /// Fetches every issuer's keys now, so the first request does not pay for it (called at init).
    pub async fn prefetch(&self) -> Result<(), TokenError> {
        for issuer in &self.issuers {
            self.refresh(issuer, true).await?;
        }
        Ok(())
    }

    pub async fn verify(&self, token: &str) -> Result<VerifiedToken, TokenError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| match algorithm_name(token) {
                Some(alg) if alg != "RS256" => TokenError::UnsupportedAlgorithm(alg),
                _ => TokenError::Malformed,
            })?;
        if header.alg != Algorithm::RS256 {
            return Err(TokenError::UnsupportedAlgorithm(format!(
                "{:?}",
                header.alg
            )));
        }
        let kid = header.kid.ok_or(TokenError::MissingKeyId)?;
        let issuer_claim = peek_issuer(token)?;
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.config.issuer == issuer_claim)
            .ok_or(TokenError::UnknownIssuer)?;
        let key = self.key(issuer, &kid).await?;

        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = self.leeway_secs;
        validation.set_issuer(&[&issuer.config.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.validate_nbf = true;
        if issuer.config.audiences.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&issuer.config.audiences);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::ExpiredSignature => TokenError::Expired,
                K::ImmatureSignature => TokenError::NotYetValid,
                K::InvalidSignature => TokenError::BadSignature,
                K::InvalidIssuer => TokenError::UnknownIssuer,
                K::InvalidAudience => TokenError::WrongAudience,
                K::MissingRequiredClaim(c) => TokenError::MissingClaim(c.clone()),
                _ => TokenError::Malformed,
            }
        })?;
        self.check_claims(&issuer.config, data.claims)
    }

    fn check_claims(
        &self,
        config: &IssuerConfig,
        claims: Claims,
    ) -> Result<VerifiedToken, TokenError> {
        if let Some(issued_at) = claims.iat {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            if issued_at > now.saturating_add(self.leeway_secs) {
                return Err(TokenError::IssuedInFuture);
            }
        }
        let text = |name: &str| {
            claims
                .other
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        if let Some(required) = &config.required_token_use {
            if text("token_use").as_deref() != Some(required.as_str()) {
                return Err(TokenError::WrongTokenUse);
            }
        }
        let client_id = text(&config.client_id_claim);
        match &client_id {
            Some(id) if config.client_ids.iter().any(|c| c == id) => {}
            _ => return Err(TokenError::WrongClient),
        }
        let groups = match claims.other.get(&config.groups_claim) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        };
        let scopes = text(&config.scope_claim)
            .map(|s| s.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        Ok(VerifiedToken {
            subject: claims.sub,
            username: text(&config.username_claim),
            client_id,
            groups,
            scopes,
            issuer: config.issuer.clone(),
            issued_at: claims.iat,
            expires_at: claims.exp,
            auth_method: config.auth_method.clone(),
        })
    }

    async fn key(&self, issuer: &TrustedIssuer, kid: &str) -> Result<DecodingKey, TokenError> {
        if let Some(key) = issuer.keys.read().await.keys.get(kid) {
            return Ok(key.clone());
        }
        self.refresh(issuer, false).await?;
        issuer
            .keys
            .read()
            .await
            .keys
            .get(kid)
            .cloned()
            .ok_or(TokenError::UnknownKey)
    }

    async fn refresh(&self, issuer: &TrustedIssuer, force: bool) -> Result<(), TokenError> {
        let mut cache = issuer.keys.write().await;
        if !force {
            if let Some(at) = cache.unknown_kid_refetch_at {
                if at.elapsed() < REFRESH_COOLDOWN {
                    return Ok(());
                }
            }
        }
        let unavailable =
            |e: reqwest::Error| TokenError::JwksUnavailable(e.without_url().to_string());
        let body = self
            .http
            .get(&issuer.config.jwks_url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(unavailable)?
            .error_for_status()
            .map_err(unavailable)?
            .bytes()
            .await
            .map_err(unavailable)?;
        let set: JwkSet = serde_json::from_slice(&body)
            .map_err(|e| TokenError::JwksUnavailable(format!("not a JWKS document: {e}")))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = &jwk.common.key_id else {
                continue;
            };
            if let Ok(key) = DecodingKey::from_jwk(jwk) {
                keys.insert(kid.clone(), key);
            }
        }
        tracing::info!(issuer = %issuer.config.issuer, keys = keys.len(), "fetched issuer key set");
        cache.keys = keys;
        if !force {
            // Only a successful refetch starts the cooldown: while the issuer is unreachable every
            // request keeps trying (and answers 500), rather than failing as an unknown key.
            cache.unknown_kid_refetch_at = Some(Instant::now());
        }
        Ok(())
    }
}

fn decode_segment(token: &str, index: usize) -> Option<Vec<u8>> {
    let segment = token.split('.').nth(index)?;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment.trim_end_matches('='))
        .ok()
}

/// The issuer claim, read before verification only to pick which issuer's keys verify the token.
fn peek_issuer(token: &str) -> Result<String, TokenError> {
    let payload = decode_segment(token, 1).ok_or(TokenError::Malformed)?;
    let claims: PeekClaims = serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)?;
    claims.iss.ok_or(TokenError::MissingClaim("iss".into()))
}

/// The `alg` a token's header claims (e.g. `none`), for refusing it by name.
fn algorithm_name(token: &str) -> Option<String> {
    decode_segment(token, 0)
        .and_then(|h| serde_json::from_slice::<Value>(&h).ok())
        .and_then(|h| h.get("alg").and_then(Value::as_str).map(str::to_string))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use serde_json::json;

    use super::*;
    use crate::testing::{serve_jwks, TestIssuer};

    const ISSUER: &str = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_test";

    async fn setup() -> (
        TestIssuer,
        Verifier,
        Arc<std::sync::atomic::AtomicUsize>,
        Arc<std::sync::Mutex<Vec<Value>>>,
    ) {
        let issuer = TestIssuer::new(ISSUER, "k1");
        let (url, fetches, keys) = serve_jwks(vec![issuer.jwk()]).await;
        let config =
            IssuerConfig::cognito("us-east-1", "us-east-1_test", Some(url), vec!["app".into()]);
        (
            issuer,
            Verifier::new(vec![config], reqwest::Client::new()),
            fetches,
            keys,
        )
    }
    use std::sync::Arc;

    #[tokio::test]
    async fn accepts_a_valid_access_token_and_caches_keys() {
        let (issuer, verifier, fetches, _) = setup().await;
        let token = issuer.sign(&issuer.access_claims("app", &["gateway-all", "dept-eng"]));
        for _ in 0..3 {
            let verified = verifier.verify(&token).await.unwrap();
            assert_eq!(verified.subject, "user-sub-1");
            assert_eq!(verified.groups, ["gateway-all", "dept-eng"]);
            assert_eq!(verified.client_id.as_deref(), Some("app"));
        }
        assert_eq!(
            fetches.load(Ordering::SeqCst),
            1,
            "keys fetched once and cached"
        );
    }

    #[tokio::test]
    async fn refetches_on_unknown_kid_once_per_cooldown() {
        let (issuer, verifier, fetches, keys) = setup().await;
        verifier.prefetch().await.unwrap();
        let rotated = TestIssuer::new(ISSUER, "k2");
        keys.lock().unwrap().push(rotated.jwk());
        let token = rotated.sign(&rotated.access_claims("app", &[]));
        assert!(
            verifier.verify(&token).await.is_ok(),
            "rotated key found by refetch"
        );
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
        let stranger = TestIssuer::new(ISSUER, "k3");
        let forged = stranger.sign(&stranger.access_claims("app", &[]));
        assert_eq!(verifier.verify(&forged).await, Err(TokenError::UnknownKey));
        assert_eq!(
            fetches.load(Ordering::SeqCst),
            2,
            "no refetch inside the cooldown"
        );
        drop(issuer);
    }

    #[tokio::test]
    async fn refuses_each_bad_token() {
        let (issuer, verifier, _, _) = setup().await;
        let mut expired = issuer.access_claims("app", &[]);
        expired["exp"] = json!(1_000_000_000);
        assert_eq!(
            verifier.verify(&issuer.sign(&expired)).await,
            Err(TokenError::Expired)
        );

        let mut from_the_future = issuer.access_claims("app", &[]);
        let later = from_the_future["iat"].as_u64().unwrap() + 3600;
        from_the_future["iat"] = json!(later);
        assert_eq!(
            verifier.verify(&issuer.sign(&from_the_future)).await,
            Err(TokenError::IssuedInFuture)
        );
        let mut within_leeway = issuer.access_claims("app", &[]);
        let skewed = within_leeway["iat"].as_u64().unwrap() + 10;
        within_leeway["iat"] = json!(skewed);
        assert!(verifier.verify(&issuer.sign(&within_leeway)).await.is_ok());

        let mut id_token = issuer.access_claims("app", &[]);
        id_token["token_use"] = json!("id");
        assert_eq!(
            verifier.verify(&issuer.sign(&id_token)).await,
            Err(TokenError::WrongTokenUse)
        );

        let other_client = issuer.access_claims("someone-else", &[]);
        assert_eq!(
            verifier.verify(&issuer.sign(&other_client)).await,
            Err(TokenError::WrongClient)
        );

        let mut foreign = issuer.access_claims("app", &[]);
        foreign["iss"] = json!("https://evil.example.com");
        assert_eq!(
            verifier.verify(&issuer.sign(&foreign)).await,
            Err(TokenError::UnknownIssuer)
        );

        // Same kid, another key: the signature check must fail.
        let impostor = TestIssuer::new(ISSUER, "k1");
        let forged = impostor.sign(&impostor.access_claims("app", &[]));
        assert_eq!(
            verifier.verify(&forged).await,
            Err(TokenError::BadSignature)
        );

        let b64 =
            |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let claims = issuer.access_claims("app", &[]);
        let none = format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT"})),
            b64(&claims)
        );
        assert!(
            matches!(verifier.verify(&none).await, Err(TokenError::UnsupportedAlgorithm(a)) if a == "none")
        );
        let hs = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"public key as secret"),
        )
        .unwrap();
        assert!(matches!(
            verifier.verify(&hs).await,
            Err(TokenError::UnsupportedAlgorithm(_))
        ));
        assert_eq!(
            verifier.verify("not-a-jwt").await,
            Err(TokenError::Malformed)
        );
    }

    #[tokio::test]
    async fn unreachable_jwks_is_an_internal_error() {
        let issuer = TestIssuer::new(ISSUER, "k1");
        let config = IssuerConfig::cognito(
            "us-east-1",
            "us-east-1_test",
            Some("http://127.0.0.1:9/jwks".into()),
            vec!["app".into()],
        );
        let verifier = Verifier::new(vec![config], reqwest::Client::new());
        let result = verifier
            .verify(&issuer.sign(&issuer.access_claims("app", &[])))
            .await;
        assert!(matches!(&result, Err(e) if e.is_internal()), "{result:?}");
    }
}
