//! The data plane's one path invariant: **the request line that leaves for a provider names exactly the
//! operation that was authorized.**
//!
//! It is held in two steps, both here:
//! 1. [`RequestPath::parse`] reads the client's path (below the route prefix) into decoded segments, and
//!    refuses everything an upstream or an HTTP client could read differently from us: backslashes (a
//!    path separator for http(s) URLs), dot segments in any encoding, encoded `%` (double encoding),
//!    `;` path parameters, control and non-ASCII bytes (full-width dots among them), empty segments.
//!    An encoded `/` survives only as a byte inside one segment; the provider grammars accept it in no
//!    parameter but a Bedrock model ARN.
//! 2. The upstream URL is rebuilt from the classified segments ([`UpstreamPath`], which only a provider
//!    grammar can make) with a URL type, and [`upstream_url`] refuses it if the path the HTTP client
//!    will send differs from the classified one by a single byte.
//!
//! Every transport (the route calling a provider directly, and the dispatcher behind the queue) sends
//! through [`upstream_url`].

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Longest path accepted below a route prefix; real API paths are far shorter.
pub const MAX_PATH_BYTES: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path must start with '/'")]
    NotAbsolute,
    #[error("the path is longer than {MAX_PATH_BYTES} bytes")]
    TooLong,
    #[error("the path has an empty segment ('//' or a trailing '/')")]
    EmptySegment,
    #[error("the path contains a character the gateway does not relay ({0})")]
    ForbiddenCharacter(&'static str),
    #[error("the path contains a malformed percent-escape")]
    BadEscape,
    #[error("the path encodes a character the gateway does not relay ({0})")]
    ForbiddenEscape(&'static str),
    #[error("the path contains a dot segment")]
    DotSegment,
    #[error("the upstream URL could not be built")]
    BadBaseUrl,
    #[error("the upstream URL would not carry the authorized path")]
    Mismatch,
}

/// A client path that passed the gateway's path rules, as decoded segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestPath {
    segments: Vec<String>,
}

/// Raw characters a path segment may carry (RFC 3986 `pchar` without `;`, and without `%`, which
/// introduces an escape).
fn raw_allowed(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
        || matches!(
            byte,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b':'
                | b'@'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b'='
        )
}

fn describe(byte: u8) -> &'static str {
    match byte {
        b'\\' => "backslash",
        b'%' => "percent sign",
        b'.' => "dot",
        b';' => "semicolon",
        b'?' => "question mark",
        b'#' => "number sign",
        0 => "NUL",
        b if b < 0x20 || b == 0x7f => "control character",
        b if b >= 0x80 => "non-ASCII byte",
        b' ' => "space",
        _ => "reserved character",
    }
}

/// Whether a percent-escape may decode to `byte`: only characters that clients legitimately encode in
/// the provider APIs' paths (`:` in Bedrock model ids, `/` in Bedrock model ARNs, sub-delimiters).
/// Everything that could turn into a separator, a dot segment or a second round of decoding is refused.
fn escape_allowed(byte: u8) -> bool {
    (raw_allowed(byte) && byte != b'.') || byte == b'/'
}

impl RequestPath {
    /// Reads a path such as `/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke`.
    pub fn parse(raw: &str) -> Result<RequestPath, PathError> {
        if raw.len() > MAX_PATH_BYTES {
            return Err(PathError::TooLong);
        }
        let body = raw.strip_prefix('/').ok_or(PathError::NotAbsolute)?;
        let mut segments = Vec::new();
        for segment in body.split('/') {
            segments.push(decode_segment(segment)?);
        }
        Ok(RequestPath { segments })
    }

    pub fn segments(&self) -> &[String] {
        &self.segments
    }
}

fn decode_segment(raw: &str) -> Result<String, PathError> {
    if raw.is_empty() {
        return Err(PathError::EmptySegment);
    }
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(PathError::BadEscape)?;
            let value = std::str::from_utf8(hex)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or(PathError::BadEscape)?;
            if !escape_allowed(value) {
                return Err(PathError::ForbiddenEscape(describe(value)));
            }
            i += 3;
        } else if raw_allowed(byte) {
            i += 1;
        } else {
            return Err(PathError::ForbiddenCharacter(describe(byte)));
        }
    }
    // Every escape decodes to ASCII (checked above), so this is lossless.
    let decoded = percent_decode_str(raw).decode_utf8_lossy().into_owned();
    if decoded.bytes().all(|b| b == b'.') {
        return Err(PathError::DotSegment);
    }
    Ok(decoded)
}

/// How a provider's path segments are written upstream: everything but RFC 3986's unreserved characters
/// is percent-encoded, and `:` too unless the provider's own clients send it raw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentEncoding {
    /// `:` stays raw (Gemini's `models/{model}:{method}`, Azure OpenAI).
    KeepColon,
    /// `:` and `/` inside a segment are encoded, as botocore does for Bedrock model ids and ARNs.
    EncodeColon,
}

const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
const UNRESERVED_AND_COLON: &AsciiSet = &UNRESERVED.remove(b':');

/// The path of an authorized request as it goes upstream, built from classified segments. Only a
/// provider grammar constructs one, so a transport cannot send a path that was not classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamPath(String);

impl UpstreamPath {
    pub(crate) fn from_segments(segments: &[String], encoding: SegmentEncoding) -> UpstreamPath {
        let set = match encoding {
            SegmentEncoding::KeepColon => UNRESERVED_AND_COLON,
            SegmentEncoding::EncodeColon => UNRESERVED,
        };
        let mut path = String::new();
        for segment in segments {
            path.push('/');
            path.extend(utf8_percent_encode(segment, set));
        }
        UpstreamPath(path)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for UpstreamPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The URL a transport sends: the configured base (scheme, host, optional base path) plus the
/// classified path and the re-encoded query. Refused if the URL type would change the path in any way
/// (normalization, separators, dot segments), so what leaves is exactly what was authorized.
pub fn upstream_url(
    base: &str,
    path: &UpstreamPath,
    query: &str,
) -> Result<reqwest::Url, PathError> {
    let base = reqwest::Url::parse(base).map_err(|_| PathError::BadBaseUrl)?;
    if base.cannot_be_a_base() || base.query().is_some() {
        return Err(PathError::BadBaseUrl);
    }
    let expected = format!("{}{}", base.path().trim_end_matches('/'), path.as_str());
    let mut url = base;
    url.set_path(&expected);
    url.set_query((!query.is_empty()).then_some(query));
    if url.path() != expected {
        return Err(PathError::Mismatch);
    }
    Ok(url)
}

/// Whether the URL an HTTP request carries still names `expected` (checked again after the request
/// was converted for the HTTP client, which re-parses it).
pub fn same_path(url: &reqwest::Url, expected: &reqwest::Url) -> bool {
    url.path() == expected.path() && url.query() == expected.query()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segments(raw: &str) -> Result<Vec<String>, PathError> {
        RequestPath::parse(raw).map(|p| p.segments().to_vec())
    }

    #[test]
    fn decodes_what_clients_legitimately_encode() {
        assert_eq!(
            segments("/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke").unwrap(),
            ["model", "anthropic.claude-3-haiku-20240307-v1:0", "invoke"]
        );
        assert_eq!(
            segments("/v1beta/models/gemini-2.0-flash:generateContent").unwrap(),
            ["v1beta", "models", "gemini-2.0-flash:generateContent"]
        );
        assert_eq!(
            segments("/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A%3Afoundation-model%2Fx/invoke")
                .unwrap()[1],
            "arn:aws:bedrock:us-east-1::foundation-model/x"
        );
    }

    #[test]
    fn refuses_what_an_upstream_could_read_differently() {
        let cases = [
            ("openai/x", PathError::NotAbsolute),
            ("/a//b", PathError::EmptySegment),
            ("/a/b/", PathError::EmptySegment),
            ("/a/b\\..\\c", PathError::ForbiddenCharacter("backslash")),
            ("/a/%5c", PathError::ForbiddenEscape("backslash")),
            ("/a/%5C..", PathError::ForbiddenEscape("backslash")),
            ("/a/..", PathError::DotSegment),
            ("/a/.", PathError::DotSegment),
            ("/a/...", PathError::DotSegment),
            ("/a/%2e%2e", PathError::ForbiddenEscape("dot")),
            ("/a/.%2E", PathError::ForbiddenEscape("dot")),
            ("/a/%252e", PathError::ForbiddenEscape("percent sign")),
            ("/a/b;x=1", PathError::ForbiddenCharacter("semicolon")),
            ("/a/b%3bx", PathError::ForbiddenEscape("semicolon")),
            ("/a/b%00", PathError::ForbiddenEscape("NUL")),
            ("/a/b\u{0}", PathError::ForbiddenCharacter("NUL")),
            ("/a/b%0a", PathError::ForbiddenEscape("control character")),
            (
                "/a/\u{ff0e}\u{ff0e}",
                PathError::ForbiddenCharacter("non-ASCII byte"),
            ),
            ("/a/%ef%bc%8e", PathError::ForbiddenEscape("non-ASCII byte")),
            ("/a/%2", PathError::BadEscape),
            ("/a/%zz", PathError::BadEscape),
            ("/a/b c", PathError::ForbiddenCharacter("space")),
            ("/a/b%3Fc", PathError::ForbiddenEscape("question mark")),
            ("/a/b%23c", PathError::ForbiddenEscape("number sign")),
        ];
        for (raw, expected) in cases {
            assert_eq!(RequestPath::parse(raw), Err(expected), "{raw:?}");
        }
        assert_eq!(
            RequestPath::parse(&format!("/{}", "a".repeat(MAX_PATH_BYTES))),
            Err(PathError::TooLong)
        );
    }

    #[test]
    fn upstream_url_keeps_the_classified_path() {
        let path = UpstreamPath::from_segments(
            &[
                "model".into(),
                "anthropic.claude-v2:1".into(),
                "invoke".into(),
            ],
            SegmentEncoding::EncodeColon,
        );
        let url = upstream_url("https://bedrock.example:8443/base/", &path, "a=1").unwrap();
        assert_eq!(
            url.as_str(),
            "https://bedrock.example:8443/base/model/anthropic.claude-v2%3A1/invoke?a=1"
        );
        let gemini = UpstreamPath::from_segments(
            &["v1beta".into(), "models".into(), "g:generateContent".into()],
            SegmentEncoding::KeepColon,
        );
        assert_eq!(
            upstream_url("http://127.0.0.1:1", &gemini, "")
                .unwrap()
                .as_str(),
            "http://127.0.0.1:1/v1beta/models/g:generateContent"
        );
    }

    #[test]
    fn upstream_url_refuses_paths_the_url_type_would_rewrite() {
        // Only a grammar makes an UpstreamPath from checked segments; these could not come from one,
        // and the builder still refuses them.
        for bad in ["/a/../b", "/a/./b", "/a\\..\\b", "/a/%2e%2e/b"] {
            let path = UpstreamPath(bad.to_string());
            assert_eq!(
                upstream_url("https://h", &path, ""),
                Err(PathError::Mismatch),
                "{bad}"
            );
        }
        assert_eq!(
            upstream_url("not a url", &UpstreamPath("/a".into()), ""),
            Err(PathError::BadBaseUrl)
        );
    }
}
