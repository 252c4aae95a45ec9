//! Property tests of the data plane's path invariant (see `gateway_shared::paths`): for every path an
//! attacker can write, the gateway either refuses it, or the operation it authorized and the request
//! line the provider receives agree.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use gateway_shared::paths::upstream_url;
use gateway_shared::Provider;
use http::Method;
use proptest::prelude::*;

/// Pieces an attacker would combine: separators, dots and their encodings (single, double, full-width),
/// path parameters, control bytes, and the words of the real APIs so that many paths come close to valid.
const PIECES: &[&str] = &[
    "/",
    "/",
    "/",
    "\\",
    ".",
    "..",
    "%",
    ";",
    ":",
    "?",
    "#",
    "%2e",
    "%2E",
    "%2f",
    "%2F",
    "%5c",
    "%5C",
    "%25",
    "%252e",
    "%3A",
    "%3a",
    "%00",
    "\u{0}",
    "\t",
    "\n",
    "\u{ff0e}",
    "%ef%bc%8e",
    "\u{2215}",
    "~",
    "a",
    "x",
    "openai",
    "deployments",
    "gpt-4o-mini",
    "chat",
    "completions",
    "audio",
    "speech",
    "files",
    "v1",
    "v1beta",
    "models",
    "gemini-2.0-flash",
    ":generateContent",
    ":predictLongRunning",
    "veo-3.0-generate-001",
    "model",
    "anthropic.claude-3-haiku-20240307-v1:0",
    "amazon.nova-pro-v1:0",
    "arn:aws:bedrock:us-east-1::foundation-model",
    "invoke",
    "converse-stream",
    "responses",
    "upload",
];

fn path_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(PIECES), 1..14).prop_map(|pieces| {
        let mut path = String::from("/");
        for piece in pieces {
            path.push_str(piece);
        }
        path
    })
}

/// Near-valid paths: a real API path with one adversarial piece spliced in somewhere.
fn spliced_strategy() -> impl Strategy<Value = String> {
    let valid = prop::sample::select(
        &[
            "/openai/deployments/gpt-4o-mini/chat/completions",
            "/openai/v1/chat/completions",
            "/openai/responses",
            "/v1beta/models/gemini-2.0-flash:generateContent",
            "/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke",
        ][..],
    );
    (valid, 0usize..60, prop::sample::select(PIECES), 1usize..4).prop_map(
        |(base, at, piece, times)| {
            let at = at.min(base.len());
            let at = (0..=at)
                .rev()
                .find(|i| base.is_char_boundary(*i))
                .unwrap_or(0);
            format!("{}{}{}", &base[..at], piece.repeat(times), &base[at..])
        },
    )
}

fn method_strategy() -> impl Strategy<Value = Method> {
    prop::sample::select(vec![
        Method::GET,
        Method::POST,
        Method::DELETE,
        Method::PUT,
        Method::PATCH,
    ])
}

fn check(provider: Provider, method: &Method, path: &str) -> Result<(), TestCaseError> {
    let Ok(classified) = provider.classify(method, path) else {
        return Ok(());
    };
    // What the HTTP client will send: the URL type's path, through reqwest's own request conversion.
    let url = upstream_url("https://provider.example/base", &classified.path, "a=1")
        .map_err(|e| TestCaseError::fail(format!("{path}: classified but not buildable: {e}")))?;
    let request = http::Request::builder()
        .method(method.clone())
        .uri(url.as_str())
        .body(Vec::<u8>::new())
        .unwrap();
    let sent = reqwest::Request::try_from(request.map(reqwest::Body::from)).unwrap();
    let sent_path = sent.url().path().to_string();
    prop_assert_eq!(&sent_path, &format!("/base{}", classified.path.as_str()));
    for forbidden in [
        "\\", "%5c", "%5C", "%2e", "%2E", "%25", "//", "/./", "/../", ";",
    ] {
        prop_assert!(
            !sent_path.contains(forbidden),
            "{} sent as {}",
            path,
            sent_path
        );
    }
    // The provider reads the request line it received; it must name the operation that was authorized.
    let upstream_view = sent_path.strip_prefix("/base").unwrap();
    let again = provider.classify(method, upstream_view).map_err(|e| {
        TestCaseError::fail(format!(
            "{path} -> {upstream_view} no longer classifies: {e}"
        ))
    })?;
    prop_assert_eq!(
        &again.operation,
        &classified.operation,
        "{} -> {}",
        path,
        upstream_view
    );
    prop_assert_eq!(again.path, classified.path);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn adversarial_paths_are_refused_or_relayed_as_authorized(
        path in path_strategy(),
        method in method_strategy(),
    ) {
        for provider in Provider::ALL {
            check(provider, &method, &path)?;
        }
    }

    #[test]
    fn spliced_paths_are_refused_or_relayed_as_authorized(
        path in spliced_strategy(),
        method in method_strategy(),
    ) {
        for provider in Provider::ALL {
            check(provider, &method, &path)?;
        }
    }

    #[test]
    fn long_runs_never_classify_as_something_else(
        piece in prop::sample::select(PIECES),
        times in 1usize..600,
    ) {
        let path = format!("/openai/deployments/gpt-4o-mini/chat/completions/{}", piece.repeat(times));
        for method in [Method::GET, Method::POST] {
            check(Provider::AzureOpenAi, &method, &path)?;
        }
    }
}

#[test]
fn every_rule_of_every_grammar_relays_its_own_example() {
    // One concrete path per rule, with its placeholders filled: each classifies as its own operation
    // and survives the URL type unchanged.
    for provider in Provider::ALL {
        for rule in provider.grammar().rules {
            let model = match provider {
                Provider::BedrockClaude => "anthropic.claude-3-haiku-20240307-v1:0",
                _ => "gpt-4o-mini",
            };
            let path = rule
                .shape
                .replace("{version?}", "v1")
                .replace(
                    "{version}",
                    provider.grammar().versions.first().copied().unwrap_or("v1"),
                )
                .replace("{model}", model)
                .replace("{id}", "obj-1");
            let method = Method::from_bytes(rule.method.as_bytes()).unwrap();
            let classified = provider.classify(&method, &path).unwrap();
            assert_eq!(classified.operation.name, rule.operation, "{path}");
            check(provider, &method, &path).unwrap();
        }
    }
}

#[test]
fn the_readme_lists_every_relayed_and_refused_operation() {
    let readme =
        std::fs::read_to_string(format!("{}/../README.md", env!("CARGO_MANIFEST_DIR"))).unwrap();
    for provider in Provider::ALL {
        for rule in provider.grammar().rules {
            let listed = match rule.access {
                gateway_shared::providers::Access::Relay => {
                    format!(
                        "| {} | `{}` | `{}`",
                        rule.method, rule.shape, rule.operation
                    )
                }
                gateway_shared::providers::Access::Stored => {
                    format!("`{} {}` (`{}`)", rule.method, rule.shape, rule.operation)
                }
            };
            assert!(
                readme.contains(&listed),
                "README does not list {listed} of /{}",
                provider.route_prefix()
            );
        }
    }
}
