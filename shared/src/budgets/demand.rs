//! What a budget makes of a request, read from it before it is forwarded.
//!
//! - Reads, lists, deletes and token counting use no tokens: unmetered. So do the stored objects'
//!   writes that generate nothing (file uploads, cancelling a batch).
//! - Work the provider does out of the gateway's sight, whose usage never passes through it (batch
//!   jobs, fine-tuning, background responses), can be neither reserved nor settled: under a budget
//!   it is refused, never let through unmetered.
//! - Everything else reserves its worst case:
//!   - Input tokens: at most the body's bytes (every tokenizer's token is at least one byte). A
//!     multipart upload to an operation that takes one (audio, image edits) counts no input tokens:
//!     its bytes are media, not text. Any other body counts its bytes, JSON or not: a body the
//!     gateway cannot read as JSON is not one the provider reads as free.
//!   - Output tokens: the largest value of any of the provider's output-limit fields
//!     ([`crate::Provider::output_limit_fields`]) wherever the body gives it, duplicates included (a
//!     body naming `max_tokens` twice is read as the provider reading either); none given, one that
//!     is not a whole number, or a body that is not JSON, means the model's default limit (the price
//!     table's `max_output_tokens`, else [`DEFAULT_MAX_OUTPUT_TOKENS`]). Embeddings produce none.
//!   - Cost: both at the price table's dearest input rate and its output rate for the model, region
//!     and day; `None` when the model has no price (a cost budget then cannot be enforced, and the
//!     request is refused under one).

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::pricing::PriceTable;
use crate::providers::{Access, Operation};
use crate::provisioning::rows::Date;
use crate::Provider;

/// The output reserved for a model the price table gives no limit for.
pub const DEFAULT_MAX_OUTPUT_TOKENS: u64 = 65_536;

/// Inference operations that use no tokens worth a budget.
const UNMETERED: &[&str] = &["count-tokens", "countTokens"];
/// Operations that answer with no generated tokens.
const NO_OUTPUT: &[&str] = &[
    "embeddings",
    "embedContent",
    "batchEmbedContents",
    "cachedContents.create",
];
/// Operations whose body is a multipart upload of media.
const MEDIA_UPLOADS: &[&str] = &["audio.transcriptions", "audio.translations", "images.edits"];
/// Stored-object writes that make the provider generate tokens later, out of the gateway's sight.
const OFFLINE_GENERATION: &[&str] = &[
    "batches.create",
    "fine_tuning.jobs.create",
    "tunedModels.create",
];
/// Stored-object writes that are billed by the token, like inference (a prompt cache's content).
const METERED_STORED: &[&str] = &["cachedContents.create"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Demand {
    pub tokens: u64,
    /// Micro-dollars; `None`: the model has no price.
    pub cost_micros: Option<u64>,
}

/// What a budget makes of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metering {
    Unmetered,
    Metered(Demand),
    /// Its usage would escape the budget: refused under one, with this reason.
    Unbudgetable(&'static str),
}

/// One request as the budgets see it.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub provider: Provider,
    pub method: &'a http::Method,
    pub operation: &'a Operation,
    pub region: Option<&'a str>,
    pub body: &'a [u8],
}

/// What `call` counts against a budget, priced from `prices` on `day`.
pub fn metering(call: Call<'_>, prices: &PriceTable, day: Date) -> Metering {
    let name = call.operation.name;
    let writes = !matches!(
        *call.method,
        http::Method::GET | http::Method::HEAD | http::Method::DELETE | http::Method::OPTIONS
    );
    if !writes || UNMETERED.contains(&name) {
        return Metering::Unmetered;
    }
    if OFFLINE_GENERATION.contains(&name) {
        return Metering::Unbudgetable(
            "a job the provider runs later (batch, fine-tuning) is not held to a budget, so it cannot be started under one",
        );
    }
    if call.operation.access == Access::Stored && !METERED_STORED.contains(&name) {
        return Metering::Unmetered;
    }
    let tree: Option<Json> = serde_json::from_slice(call.body).ok();
    if tree.as_ref().is_some_and(|tree| {
        tree.at(&["background"])
            .iter()
            .any(|v| matches!(v, Json::True))
    }) {
        return Metering::Unbudgetable(
            "a background response finishes out of the gateway's sight, so it cannot be held to a budget; send it without background",
        );
    }
    let media = MEDIA_UPLOADS.contains(&name) && tree.is_none();
    let input = if media { 0 } else { call.body.len() as u64 };
    let price = call
        .operation
        .model
        .as_deref()
        .and_then(|m| prices.price(call.provider, m, call.region, day));
    let output = if NO_OUTPUT.contains(&name) {
        0
    } else {
        let default = price
            .and_then(|p| p.max_output_tokens)
            .unwrap_or(DEFAULT_MAX_OUTPUT_TOKENS);
        tree.as_ref()
            .and_then(|tree| output_limit(tree, call.provider.output_limit_fields()))
            .unwrap_or(default)
    };
    Metering::Metered(Demand {
        tokens: input.saturating_add(output),
        cost_micros: price.map(|p| super::micros(p.worst_case_cost(input, output))),
    })
}

/// The largest limit the body sets at any of `pointers` (every duplicate counts); `None` when it
/// sets none, or sets one that is not a whole number (the provider would then use its default).
fn output_limit(tree: &Json, pointers: &[&str]) -> Option<u64> {
    let mut found: Option<u64> = None;
    for pointer in pointers {
        let path: Vec<&str> = pointer.split('/').skip(1).collect();
        for value in tree.at(&path) {
            match value {
                Json::Integer(n) => found = Some(found.map_or(*n, |f| f.max(*n))),
                _ => return None,
            }
        }
    }
    found
}

/// A JSON document that keeps every member of an object, duplicates included, and only the
/// numbers a limit can be (arrays and other values are checked, then dropped).
#[derive(Debug)]
enum Json {
    Object(Vec<(String, Json)>),
    Integer(u64),
    True,
    Other,
}

impl Json {
    /// Every value at `path` (object members by name, every duplicate).
    fn at<'a>(&'a self, path: &[&str]) -> Vec<&'a Json> {
        let Some((first, rest)) = path.split_first() else {
            return vec![self];
        };
        match self {
            Json::Object(members) => members
                .iter()
                .filter(|(name, _)| name == first)
                .flat_map(|(_, value)| value.at(rest))
                .collect(),
            _ => Vec::new(),
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct JsonVisitor;
        impl<'de> Visitor<'de> for JsonVisitor {
            type Value = Json;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
                Ok(Json::Integer(v))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Json, E> {
                Ok(Json::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Json, E> {
                Ok(Json::Other)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
                Ok(if v { Json::True } else { Json::Other })
            }
            fn visit_str<E>(self, _: &str) -> Result<Json, E> {
                Ok(Json::Other)
            }
            fn visit_unit<E>(self) -> Result<Json, E> {
                Ok(Json::Other)
            }
            // No limit field sits in an array: its items are checked as JSON, then dropped.
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Json::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
                let mut members = Vec::new();
                while let Some((name, value)) = map.next_entry::<String, Json>()? {
                    members.push((name, value));
                }
                Ok(Json::Object(members))
            }
        }
        deserializer.deserialize_any(JsonVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn day() -> Date {
        Date::parse("2026-11-26").unwrap()
    }

    fn prices() -> PriceTable {
        PriceTable::built_in().unwrap()
    }

    fn meter(
        provider: Provider,
        method: http::Method,
        (name, model, access): (&'static str, Option<&str>, Access),
        body: &[u8],
    ) -> Metering {
        let operation = Operation {
            name,
            model: model.map(str::to_string),
            model_at: crate::providers::ModelAt::Path,
            access,
        };
        let call = Call {
            provider,
            method: &method,
            operation: &operation,
            region: None,
            body,
        };
        metering(call, &prices(), day())
    }

    /// The demand of an inference POST.
    fn demand(provider: Provider, name: &'static str, model: Option<&str>, body: &[u8]) -> Demand {
        match meter(
            provider,
            http::Method::POST,
            (name, model, Access::Relay),
            body,
        ) {
            Metering::Metered(demand) => demand,
            other => panic!("{name} is {other:?}"),
        }
    }

    fn chat(body: &str) -> Demand {
        demand(
            Provider::AzureOpenAi,
            "chat.completions",
            Some("gpt-4o-mini"),
            body.as_bytes(),
        )
    }

    #[test]
    fn input_is_the_bodys_bytes_and_output_its_limit() {
        let body = r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":100}"#;
        let d = chat(body);
        assert_eq!(d.tokens, body.len() as u64 + 100);
        let price = prices()
            .price(Provider::AzureOpenAi, "gpt-4o-mini", None, day())
            .unwrap()
            .clone();
        assert_eq!(
            d.cost_micros,
            Some(crate::budgets::micros(
                price.worst_case_cost(body.len() as u64, 100)
            ))
        );
    }

    #[test]
    fn duplicates_and_several_fields_reserve_the_largest() {
        let first_small = chat(r#"{"max_tokens":1,"max_tokens":5000}"#);
        let last_small = chat(r#"{"max_tokens":5000,"max_tokens":1}"#);
        assert_eq!(first_small.tokens, last_small.tokens);
        let body = r#"{"max_completion_tokens":10,"max_tokens":7000}"#;
        assert_eq!(chat(body).tokens, body.len() as u64 + 7000);
        // An escaped key is the same key to any JSON parser.
        let escaped = chat(r#"{"max_tokens":1,"max\u005ftokens":9000}"#);
        assert!(escaped.tokens >= 9000);
    }

    #[test]
    fn no_limit_or_a_bad_one_means_the_models_default() {
        let default = prices()
            .price(Provider::AzureOpenAi, "gpt-4o-mini", None, day())
            .and_then(|p| p.max_output_tokens)
            .unwrap_or(DEFAULT_MAX_OUTPUT_TOKENS);
        for body in [
            r#"{}"#,
            r#"{"max_tokens":"5"}"#,
            r#"{"max_tokens":-1}"#,
            r#"{"max_tokens":1.5}"#,
        ] {
            assert_eq!(chat(body).tokens, body.len() as u64 + default, "{body}");
        }
    }

    #[test]
    fn nested_fields_per_provider() {
        let converse = br#"{"messages":[],"inferenceConfig":{"maxTokens":300}}"#;
        let d = demand(
            Provider::BedrockClaude,
            "converse",
            Some("anthropic.claude-3-5-sonnet-20240620-v1:0"),
            converse,
        );
        assert_eq!(d.tokens, converse.len() as u64 + 300);
        let gemini = br#"{"contents":[],"generationConfig":{"maxOutputTokens":40},"generation_config":{"max_output_tokens":400}}"#;
        let d = demand(
            Provider::Gemini,
            "generateContent",
            Some("gemini-2.0-flash"),
            gemini,
        );
        assert_eq!(d.tokens, gemini.len() as u64 + 400);
    }

    #[test]
    fn embeddings_media_uploads_and_unpriced_models() {
        let e = demand(
            Provider::AzureOpenAi,
            "embeddings",
            Some("text-embedding-3-small"),
            br#"{"input":"x"}"#,
        );
        assert_eq!(e.tokens, 13);
        let audio = demand(
            Provider::AzureOpenAi,
            "audio.transcriptions",
            Some("whisper"),
            b"--boundary\r\n...",
        );
        assert_eq!(
            audio.tokens, DEFAULT_MAX_OUTPUT_TOKENS,
            "no text input; its output"
        );
        assert_eq!(audio.cost_micros, None, "whisper has no price");
    }

    #[test]
    fn a_body_that_is_not_json_reserves_its_bytes_and_the_models_limit() {
        // A provider's parser may read what serde refuses (comments, trailing commas, NaN): that
        // body must not pass as free.
        let lenient = br#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":90000,}"#;
        let d = demand(
            Provider::AzureOpenAi,
            "chat.completions",
            Some("gpt-4o-mini"),
            lenient,
        );
        let default = prices()
            .price(Provider::AzureOpenAi, "gpt-4o-mini", None, day())
            .and_then(|p| p.max_output_tokens)
            .unwrap();
        assert_eq!(d.tokens, lenient.len() as u64 + default);
        assert!(d.cost_micros.unwrap() > 0);
    }

    #[test]
    fn reads_and_stored_objects_are_unmetered_and_offline_work_is_refused() {
        use http::Method;
        let relay = |name| (name, None, Access::Relay);
        let stored = |name| (name, None, Access::Stored);
        for (provider, method, op) in [
            (
                Provider::Gemini,
                Method::POST,
                ("countTokens", Some("gemini-2.0-flash"), Access::Relay),
            ),
            (Provider::BedrockClaude, Method::POST, relay("count-tokens")),
            (Provider::AzureOpenAi, Method::GET, relay("models.list")),
            (
                Provider::AzureOpenAi,
                Method::GET,
                relay("responses.retrieve"),
            ),
            (
                Provider::AzureOpenAi,
                Method::DELETE,
                relay("chat.completions.delete"),
            ),
            (Provider::AzureOpenAi, Method::GET, stored("files.list")),
            (Provider::AzureOpenAi, Method::POST, stored("files.create")),
            (Provider::Gemini, Method::POST, stored("files.upload")),
            (
                Provider::AzureOpenAi,
                Method::POST,
                stored("batches.cancel"),
            ),
        ] {
            assert_eq!(
                meter(provider, method, op, b"{}"),
                Metering::Unmetered,
                "{op:?}"
            );
        }
        for (provider, name) in [
            (Provider::AzureOpenAi, "batches.create"),
            (Provider::AzureOpenAi, "fine_tuning.jobs.create"),
            (Provider::Gemini, "tunedModels.create"),
        ] {
            assert!(matches!(
                meter(provider, Method::POST, stored(name), b"{}"),
                Metering::Unbudgetable(_)
            ));
        }
        let batch = ("batches.create", Some("gemini-2.0-flash"), Access::Stored);
        assert!(matches!(
            meter(Provider::Gemini, Method::POST, batch, b"{}"),
            Metering::Unbudgetable(_)
        ));
        // A prompt cache's content is billed by the token.
        let cache = ("cachedContents.create", None, Access::Stored);
        let body = br#"{"model":"models/gemini-2.0-flash","contents":[]}"#;
        assert_eq!(
            meter(Provider::Gemini, Method::POST, cache, body),
            Metering::Metered(Demand {
                tokens: body.len() as u64,
                cost_micros: None
            })
        );
        // A background response, however the flag is spelled twice.
        for body in [
            &br#"{"model":"gpt-4o-mini","input":"x","background":true}"#[..],
            br#"{"model":"gpt-4o-mini","background":false,"background":true}"#,
        ] {
            assert!(matches!(
                meter(
                    Provider::AzureOpenAi,
                    Method::POST,
                    ("responses", Some("gpt-4o-mini"), Access::Relay),
                    body
                ),
                Metering::Unbudgetable(_)
            ));
        }
        assert!(matches!(
            meter(
                Provider::AzureOpenAi,
                Method::POST,
                ("responses", Some("gpt-4o-mini"), Access::Relay),
                br#"{"model":"gpt-4o-mini","background":false}"#
            ),
            Metering::Metered(_)
        ));
    }

    proptest! {
        /// Whatever limit fields a body carries, in whatever order and number, the reservation covers
        /// each of them.
        #[test]
        fn the_reservation_covers_every_limit_given(limits in proptest::collection::vec((0usize..3, 0u64..200_000), 0..6)) {
            let names = ["max_completion_tokens", "max_tokens", "max_output_tokens"];
            let members: Vec<String> = limits.iter().map(|(i, n)| format!("\"{}\":{n}", names[*i])).collect();
            let body = format!("{{{}}}", members.join(","));
            let d = chat(&body);
            for (_, n) in &limits {
                prop_assert!(d.tokens >= body.len() as u64 + n);
            }
        }
    }
}
