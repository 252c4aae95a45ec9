//! A request's worst case, read from its body before it is forwarded.
//!
//! - Input tokens: at most the JSON body's bytes (every tokenizer's token is at least one byte). A
//!   body that is not JSON (multipart audio, an image upload) is not billed by the token: 0 input
//!   and 0 output tokens, and only the per-request price.
//! - Output tokens: the largest value of any of the provider's output-limit fields
//!   ([`crate::Provider::output_limit_fields`]) wherever the body gives it, duplicates included (a
//!   body naming `max_tokens` twice is read as the provider reading either); none given, or one that
//!   is not a whole number, means the model's default limit (the price table's
//!   `max_output_tokens`, else [`DEFAULT_MAX_OUTPUT_TOKENS`]). Embeddings produce none.
//! - Cost: both at the price table's rates for the model on the day; `None` when the model has no
//!   price (a cost budget then cannot be enforced, and the request is refused under one).

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::pricing::PriceTable;
use crate::provisioning::rows::Date;
use crate::Provider;

/// The output reserved for a model the price table gives no limit for.
pub const DEFAULT_MAX_OUTPUT_TOKENS: u64 = 65_536;

/// Operations that use no tokens worth a budget (counting, listing).
const UNMETERED: &[&str] = &["count-tokens", "countTokens", "models.list", "models.get"];
/// Operations that answer with no generated tokens.
const NO_OUTPUT: &[&str] = &["embeddings", "embedContent", "batchEmbedContents"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Demand {
    pub tokens: u64,
    /// Micro-dollars; `None`: the model has no price.
    pub cost_micros: Option<u64>,
}

/// The worst case of one request, or `None` for an operation no budget counts.
pub fn demand(
    provider: Provider,
    operation: &str,
    model: Option<&str>,
    body: &[u8],
    prices: &PriceTable,
    day: Date,
) -> Option<Demand> {
    if UNMETERED.contains(&operation) {
        return None;
    }
    let tree: Option<Json> = serde_json::from_slice(body).ok();
    let input = if tree.is_some() { body.len() as u64 } else { 0 };
    let price = model.and_then(|m| prices.price(provider, m, day));
    // Not JSON: an upload (audio, images) billed by the request, not by the token.
    let output = if NO_OUTPUT.contains(&operation) || tree.is_none() {
        0
    } else {
        let default = price
            .and_then(|p| p.max_output_tokens)
            .unwrap_or(DEFAULT_MAX_OUTPUT_TOKENS);
        tree.as_ref()
            .and_then(|tree| output_limit(tree, provider.output_limit_fields()))
            .unwrap_or(default)
    };
    Some(Demand {
        tokens: input.saturating_add(output),
        cost_micros: price.map(|p| super::micros(p.cost(input, output))),
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
            fn visit_bool<E>(self, _: bool) -> Result<Json, E> {
                Ok(Json::Other)
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

    fn chat(body: &str) -> Demand {
        demand(
            Provider::AzureOpenAi,
            "chat.completions",
            Some("gpt-4o-mini"),
            body.as_bytes(),
            &prices(),
            day(),
        )
        .unwrap()
    }

    #[test]
    fn input_is_the_bodys_bytes_and_output_its_limit() {
        let body = r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":100}"#;
        let d = chat(body);
        assert_eq!(d.tokens, body.len() as u64 + 100);
        let price = prices()
            .price(Provider::AzureOpenAi, "gpt-4o-mini", day())
            .unwrap()
            .clone();
        assert_eq!(
            d.cost_micros,
            Some(crate::budgets::micros(price.cost(body.len() as u64, 100)))
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
            .price(Provider::AzureOpenAi, "gpt-4o-mini", day())
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
            &prices(),
            day(),
        )
        .unwrap();
        assert_eq!(d.tokens, converse.len() as u64 + 300);
        let gemini = br#"{"contents":[],"generationConfig":{"maxOutputTokens":40},"generation_config":{"max_output_tokens":400}}"#;
        let d = demand(
            Provider::Gemini,
            "generateContent",
            Some("gemini-2.0-flash"),
            gemini,
            &prices(),
            day(),
        )
        .unwrap();
        assert_eq!(d.tokens, gemini.len() as u64 + 400);
    }

    #[test]
    fn unmetered_embeddings_multipart_and_unpriced() {
        assert_eq!(
            demand(
                Provider::Gemini,
                "countTokens",
                Some("gemini-2.0-flash"),
                b"{}",
                &prices(),
                day()
            ),
            None
        );
        let e = demand(
            Provider::AzureOpenAi,
            "embeddings",
            Some("text-embedding-3-small"),
            br#"{"input":"x"}"#,
            &prices(),
            day(),
        )
        .unwrap();
        assert_eq!(e.tokens, 13);
        let audio = demand(
            Provider::AzureOpenAi,
            "audio.transcriptions",
            Some("whisper"),
            b"--boundary\r\n...",
            &prices(),
            day(),
        )
        .unwrap();
        assert_eq!(audio.tokens, 0);
        assert_eq!(audio.cost_micros, None, "whisper has no price");
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
