//! Where the gateway token can arrive: the places the stock SDKs put their own key.
//!
//! | SDK | place |
//! |---|---|
//! | openai `AzureOpenAI(api_key=)` | `api-key` header |
//! | openai `AzureOpenAI(azure_ad_token=)`, boto3 `AWS_BEARER_TOKEN_BEDROCK` | `Authorization: Bearer` |
//! | google-genai | `x-goog-api-key` header, or `?key=` |
//! | anthropic-style clients | `x-api-key` header |

use http::HeaderMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialSource {
    AuthorizationBearer,
    ApiKeyHeader,
    GoogApiKeyHeader,
    XApiKeyHeader,
    KeyQueryParameter,
}

impl CredentialSource {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialSource::AuthorizationBearer => "authorization-bearer",
            CredentialSource::ApiKeyHeader => "api-key-header",
            CredentialSource::GoogApiKeyHeader => "x-goog-api-key-header",
            CredentialSource::XApiKeyHeader => "x-api-key-header",
            CredentialSource::KeyQueryParameter => "key-query-parameter",
        }
    }
}

/// The client's token as received. It has no `Display` and a redacted `Debug`, so it cannot end up in
/// a log line, an audit event or an error message by accident; [`ClientToken::expose`] is the one way
/// to read it (for verification).
#[derive(Clone, PartialEq, Eq)]
pub struct ClientToken(String);

impl ClientToken {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ClientToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientToken(<{} bytes, redacted>)", self.0.len())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub token: ClientToken,
    pub source: CredentialSource,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("no credential in any supported place")]
    Missing,
    #[error("the Authorization header is not a Bearer token")]
    NotBearer,
    #[error("different credentials in {0} and {1}")]
    Conflicting(&'static str, &'static str),
}

/// Finds the one credential of a request. The same token in several places is fine (some SDKs send both
/// a key header and a bearer); two different tokens are refused rather than guessing which one counts.
pub fn extract_credential(
    headers: &HeaderMap,
    key_query: Option<&str>,
) -> Result<Credential, CredentialError> {
    let mut found: Option<Credential> = None;
    let mut consider = |token: &str, source: CredentialSource| -> Result<(), CredentialError> {
        let token = token.trim();
        if token.is_empty() {
            return Ok(());
        }
        match &found {
            None => {
                found = Some(Credential {
                    token: ClientToken(token.to_string()),
                    source,
                });
                Ok(())
            }
            Some(existing) if existing.token.expose() == token => Ok(()),
            Some(existing) => Err(CredentialError::Conflicting(
                existing.source.as_str(),
                source.as_str(),
            )),
        }
    };

    for value in headers.get_all(http::header::AUTHORIZATION) {
        let text = value
            .to_str()
            .map_err(|_| CredentialError::NotBearer)?
            .trim();
        if text.is_empty() {
            continue;
        }
        let (scheme, token) = text.split_once(' ').ok_or(CredentialError::NotBearer)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(CredentialError::NotBearer);
        }
        consider(token, CredentialSource::AuthorizationBearer)?;
    }
    for (header, source) in [
        ("api-key", CredentialSource::ApiKeyHeader),
        ("x-goog-api-key", CredentialSource::GoogApiKeyHeader),
        ("x-api-key", CredentialSource::XApiKeyHeader),
    ] {
        for value in headers.get_all(header) {
            if let Ok(text) = value.to_str() {
                consider(text, source)?;
            }
        }
    }
    if let Some(key) = key_query {
        consider(key, CredentialSource::KeyQueryParameter)?;
    }
    found.ok_or(CredentialError::Missing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn finds_each_sdk_place() {
        let cases = [
            (
                headers(&[("authorization", "Bearer abc")]),
                None,
                CredentialSource::AuthorizationBearer,
            ),
            (
                headers(&[("api-key", "abc")]),
                None,
                CredentialSource::ApiKeyHeader,
            ),
            (
                headers(&[("x-goog-api-key", "abc")]),
                None,
                CredentialSource::GoogApiKeyHeader,
            ),
            (
                headers(&[("x-api-key", "abc")]),
                None,
                CredentialSource::XApiKeyHeader,
            ),
            (
                HeaderMap::new(),
                Some("abc"),
                CredentialSource::KeyQueryParameter,
            ),
        ];
        for (h, q, source) in cases {
            let c = extract_credential(&h, q).unwrap();
            assert_eq!(c.token.expose(), "abc");
            assert!(!format!("{c:?}").contains("abc"), "the token never prints");
            assert_eq!(c.source, source);
        }
    }

    #[test]
    fn refuses_missing_conflicting_and_non_bearer() {
        assert_eq!(
            extract_credential(&HeaderMap::new(), None),
            Err(CredentialError::Missing)
        );
        assert_eq!(
            extract_credential(&headers(&[("api-key", "  ")]), None),
            Err(CredentialError::Missing)
        );
        assert!(matches!(
            extract_credential(&headers(&[("api-key", "a"), ("x-goog-api-key", "b")]), None),
            Err(CredentialError::Conflicting(..))
        ));
        assert_eq!(
            extract_credential(&headers(&[("authorization", "Basic dXNlcjpwYXNz")]), None),
            Err(CredentialError::NotBearer)
        );
        let same = extract_credential(
            &headers(&[("authorization", "Bearer a"), ("api-key", "a")]),
            Some("a"),
        );
        assert_eq!(same.unwrap().source, CredentialSource::AuthorizationBearer);
    }
}
