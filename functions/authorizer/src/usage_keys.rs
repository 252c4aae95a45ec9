//! Department -> API Gateway usage-plan key, read from a Secrets Manager secret holding a JSON object
//! (`{"engineering": "<api key value>", ...}`). The key only selects the department's throttling and quota;
//! it is not a credential of the caller, and it is never logged.

use gateway_shared::secrets::SecretCache;

/// The plan of callers in no configured department (and in none at all).
pub const DEFAULT_PLAN: &str = "default";

pub struct UsageKeys {
    secret: SecretCache,
}

impl UsageKeys {
    pub fn new(secret: SecretCache) -> Self {
        UsageKeys { secret }
    }

    /// The department's key, or the `default` entry; `None` if neither exists or the secret is unreadable
    /// (the request then falls under the API's default throttling instead of failing).
    pub async fn for_department(&self, department: &str) -> Option<String> {
        let secret = match self.secret.get().await {
            Ok(secret) => secret,
            Err(error) => {
                tracing::warn!(%error, "usage keys unavailable");
                return None;
            }
        };
        let map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(secret.expose()).ok()?;
        map.get(department)
            .or_else(|| map.get(DEFAULT_PLAN))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    }
}
