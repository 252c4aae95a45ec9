//! Upstream API keys from Secrets Manager, cached per execution environment.
//!
//! A [`Secret`] never prints its value (Debug and Display are redacted), so it cannot leak through a log
//! line or an error message by accident.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::RwLock;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret {0} holds no API key (plain string or {{\"api_key\": ...}})")]
    NoApiKey(String),
    #[error("secret {secret_id} could not be read: {reason}")]
    Fetch { secret_id: String, reason: String },
    #[error("secret {0} has no string value")]
    Empty(String),
}

/// Reads a secret's string at most once per `ttl` (keys rotate; Lambda environments live for hours).
pub struct SecretCache {
    client: aws_sdk_secretsmanager::Client,
    secret_id: String,
    ttl: Duration,
    cached: RwLock<Option<(Arc<Secret>, Instant)>>,
}

impl SecretCache {
    pub fn new(client: aws_sdk_secretsmanager::Client, secret_id: String, ttl: Duration) -> Self {
        SecretCache {
            client,
            secret_id,
            ttl,
            cached: RwLock::new(None),
        }
    }

    pub fn secret_id(&self) -> &str {
        &self.secret_id
    }

    pub async fn get(&self) -> Result<Arc<Secret>, SecretError> {
        if let Some((secret, at)) = self.cached.read().await.as_ref() {
            if at.elapsed() < self.ttl {
                return Ok(secret.clone());
            }
        }
        let mut slot = self.cached.write().await;
        if let Some((secret, at)) = slot.as_ref() {
            if at.elapsed() < self.ttl {
                return Ok(secret.clone());
            }
        }
        let output = self
            .client
            .get_secret_value()
            .secret_id(&self.secret_id)
            .send()
            .await
            .map_err(|e| SecretError::Fetch {
                secret_id: self.secret_id.clone(),
                reason: aws_sdk_secretsmanager::error::DisplayErrorContext(&e).to_string(),
            })?;
        let raw = output
            .secret_string()
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| SecretError::Empty(self.secret_id.clone()))?;
        let secret = Arc::new(Secret::new(raw));
        *slot = Some((secret.clone(), Instant::now()));
        Ok(secret)
    }
}

/// An API key stored either as the plain string or as JSON `{"api_key": "..."}` (the shape the console's
/// key/value editor produces).
pub fn api_key(raw: &str) -> Option<Secret> {
    let trimmed = raw.trim();
    if trimmed.starts_with('{') {
        let value: serde_json::Value = serde_json::from_str(trimmed).ok()?;
        return value
            .get("api_key")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(Secret::new);
    }
    (!trimmed.is_empty()).then(|| Secret::new(trimmed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_redacted_in_debug() {
        let s = Secret::new("sk-very-secret");
        assert!(!format!("{s:?}").contains("sk-very"));
    }

    #[test]
    fn parses_plain_and_json_values() {
        assert_eq!(api_key(" k1 \n").unwrap().expose(), "k1");
        assert_eq!(api_key(r#"{"api_key":"k2"}"#).unwrap().expose(), "k2");
        assert!(api_key(r#"{"other":"x"}"#).is_none());
        assert!(api_key("  ").is_none());
    }
}
