//! Which headers cross the gateway. Requests lose every client credential (the gateway injects its own
//! upstream credential), hop-by-hop headers, and what API Gateway or CloudFront added about the client or
//! the edge; everything else (content type, SDK metadata, provider-specific headers) passes unchanged.

use http::{HeaderMap, HeaderName};

/// Client credentials, in every place a stock SDK or a browser could put one.
const CREDENTIAL_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "api-key",
    "x-api-key",
    "x-goog-api-key",
    "cookie",
    "x-amz-security-token",
    "x-amz-date",
    "x-amz-content-sha256",
];

/// Hop-by-hop (RFC 9110 7.6.1) plus framing headers the HTTP client recomputes.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "expect",
];

/// Added by API Gateway / CloudFront / load balancers; upstream need not learn client addresses.
const EDGE_PREFIXES: &[&str] = &["x-forwarded-", "x-amzn-", "cloudfront-", "x-amz-cf-", "cf-"];
/// Provider API headers that share an edge prefix and must pass (Bedrock guardrails, trace, latency tier).
const PROVIDER_PREFIXES: &[&str] = &["x-amzn-bedrock-"];
const EDGE_HEADERS: &[&str] = &["forwarded", "via", "x-real-ip"];
/// Headers some front ends (Google's among them) read as the request's real method: the method the
/// gateway authorized is the one that leaves, so a client cannot turn an authorized POST into another
/// operation on the same path.
const METHOD_OVERRIDES: &[&str] = &[
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

fn is_dropped_request_header(name: &HeaderName) -> bool {
    let name = name.as_str();
    CREDENTIAL_HEADERS.contains(&name)
        || HOP_BY_HOP.contains(&name)
        || EDGE_HEADERS.contains(&name)
        || METHOD_OVERRIDES.contains(&name)
        || (EDGE_PREFIXES.iter().any(|p| name.starts_with(p))
            && !PROVIDER_PREFIXES.iter().any(|p| name.starts_with(p)))
        || name.starts_with("x-gateway-")
}

/// The headers to send upstream for a client request.
pub fn upstream_request_headers(client: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(client.len());
    for (name, value) in client {
        if !is_dropped_request_header(name) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// The headers to return to the client from an upstream response: hop-by-hop and cookies never cross.
pub fn client_response_headers(upstream: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(upstream.len());
    for (name, value) in upstream {
        let n = name.as_str();
        if HOP_BY_HOP.contains(&n) || n == "set-cookie" || n == "alt-svc" {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn strips_credentials_hop_by_hop_and_edge_headers() {
        let mut client = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer t"),
            ("api-key", "t"),
            ("x-goog-api-key", "t"),
            ("cookie", "session=1"),
            ("connection", "keep-alive"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-amzn-trace-id", "Root=1"),
            ("content-type", "application/json"),
            ("anthropic-beta", "tools"),
            ("amz-sdk-invocation-id", "abc"),
            ("x-amzn-bedrock-guardrailidentifier", "gr-1"),
            ("x-http-method-override", "DELETE"),
            ("x-http-method", "GET"),
            ("x-method-override", "PATCH"),
        ] {
            client.append(k, HeaderValue::from_static(v));
        }
        let out = upstream_request_headers(&client);
        let names: Vec<&str> = out.keys().map(HeaderName::as_str).collect();
        assert_eq!(
            names,
            [
                "content-type",
                "anthropic-beta",
                "amz-sdk-invocation-id",
                "x-amzn-bedrock-guardrailidentifier"
            ]
        );
    }

    #[test]
    fn response_loses_cookies_and_framing() {
        let mut upstream = HeaderMap::new();
        upstream.append("set-cookie", HeaderValue::from_static("a=b"));
        upstream.append("transfer-encoding", HeaderValue::from_static("chunked"));
        upstream.append(
            "content-type",
            HeaderValue::from_static("text/event-stream"),
        );
        let out = client_response_headers(&upstream);
        assert_eq!(out.len(), 1);
        assert_eq!(out["content-type"], "text/event-stream");
    }
}
