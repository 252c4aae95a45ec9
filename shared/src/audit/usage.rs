//! Token usage read from provider responses as they pass, for the audit trail and chargeback.
//!
//! Where usage sits differs per provider; that difference is data ([`UsageShape`], from
//! [`crate::providers::ProviderApi::usage_shapes`]). How to find JSON documents in a response differs per
//! framing: a JSON body, SSE `data:` lines, or AWS event-stream frames (Bedrock, whose `chunk` payloads
//! wrap the model's JSON in base64). Nothing is buffered beyond a bounded window: a JSON body up to
//! [`MAX_JSON_BODY`], one partial SSE line, one partial event-stream frame.

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::eventstream::FrameDecoder;

pub const MAX_JSON_BODY: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Usage {
    /// Every input token, the cached and cache-written ones included (providers that report those
    /// beside their input count, as Anthropic does, are summed up to this).
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub total_tokens: u64,
    /// Of `input_tokens`, those read from the provider's prompt cache (priced at the cached rate).
    #[serde(default)]
    pub cached_input_tokens: u64,
    /// Of `input_tokens`, those written to the provider's prompt cache (priced at the cache-write rate).
    #[serde(default)]
    pub cache_write_tokens: u64,
    /// The provider did not report usage (an Azure stream without `stream_options.include_usage`), so
    /// the counts are estimated from the bytes that passed ([`estimate_tokens`]): never left empty,
    /// never silently free, and marked so chargeback can tell.
    #[serde(default)]
    pub estimated: bool,
}

impl Usage {
    /// Input tokens at the plain input rate: neither read from nor written to a cache.
    pub fn uncached_input_tokens(&self) -> u64 {
        self.input_tokens
            .saturating_sub(self.cached_input_tokens)
            .saturating_sub(self.cache_write_tokens)
    }
}

/// Keys whose string values are model-generated text in every provider's responses (OpenAI
/// `delta.content` / `message.content`, tool-call `arguments`; Gemini `parts[].text`; Anthropic and
/// Converse `text`).
const GENERATED_TEXT_KEYS: &[&str] = &["content", "text", "arguments", "refusal"];

/// A token estimate for text, in the manner of the providers' own rules of thumb: about four
/// characters per token for ASCII text, about one token per character otherwise (CJK scripts).
pub fn estimate_tokens(ascii_chars: u64, other_chars: u64) -> u64 {
    ascii_chars.div_ceil(4) + other_chars
}

/// One place a provider reports usage: the object at `path`, with its counter names.
#[derive(Debug, Clone, Copy)]
pub struct UsageShape {
    pub path: &'static [&'static str],
    pub input: &'static str,
    pub output: &'static str,
    pub total: Option<&'static str>,
    /// A counter billed as output that `output` leaves out (Gemini's thinking tokens).
    pub more_output: Option<&'static str>,
    pub cache: CacheCounts,
}

/// How a usage object reports prompt caching.
#[derive(Debug, Clone, Copy)]
pub enum CacheCounts {
    None,
    /// The cached part of the input, already counted in `input` (OpenAI, Gemini), at this path
    /// inside the usage object.
    WithinInput {
        read: &'static [&'static str],
    },
    /// Cache reads and writes counted beside `input`, which leaves them out (Anthropic, Converse).
    BesideInput {
        read: &'static str,
        write: &'static str,
    },
}

/// The largest value seen of each counter, as reported (before cache counts are folded into input).
#[derive(Debug, Default, Clone, Copy)]
struct Reported {
    input: u64,
    output: u64,
    more_output: u64,
    total: u64,
    cache_read: u64,
    cache_write: u64,
    /// The cache counters are beside the input count, not inside it.
    cache_beside_input: bool,
}

impl Reported {
    fn usage(self) -> Usage {
        let (mut input, mut cache_read, mut cache_write) =
            (self.input, self.cache_read, self.cache_write);
        if self.cache_beside_input {
            input = input.saturating_add(cache_read).saturating_add(cache_write);
        } else {
            // Within the input count: never more than it, whatever a provider says.
            cache_read = cache_read.min(input);
            cache_write = cache_write.min(input - cache_read);
        }
        let output = self.output.saturating_add(self.more_output);
        Usage {
            input_tokens: input,
            output_tokens: output,
            total_tokens: self.total.max(input.saturating_add(output)),
            cached_input_tokens: cache_read,
            cache_write_tokens: cache_write,
            estimated: false,
        }
    }
}

enum Framing {
    Json(Vec<u8>),
    Sse(Vec<u8>),
    EventStream(FrameDecoder),
    Opaque,
}

pub struct UsageScanner {
    shapes: &'static [UsageShape],
    framing: Framing,
    found: Option<Reported>,
    /// Generated text seen in the documents, for an estimate when no usage is reported.
    text: TextCount,
    documents: u64,
    /// An SSE stream's `data: [DONE]` was seen: the OpenAI family's last event, after which the openai
    /// SDK closes without reading on.
    done_marker: bool,
}

#[derive(Default)]
struct TextCount {
    ascii: u64,
    other: u64,
}

impl TextCount {
    fn add(&mut self, text: &str) {
        let ascii = text.bytes().filter(u8::is_ascii).count() as u64;
        self.ascii += ascii;
        self.other += text.chars().count() as u64 - ascii;
    }

    /// Adds the generated text in `doc`: string values under [`GENERATED_TEXT_KEYS`], at any depth.
    fn add_generated(&mut self, doc: &Value) {
        match doc {
            Value::Object(map) => {
                for (key, value) in map {
                    match value {
                        Value::String(text) if GENERATED_TEXT_KEYS.contains(&key.as_str()) => {
                            self.add(text)
                        }
                        _ => self.add_generated(value),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| self.add_generated(item)),
            _ => {}
        }
    }
}

impl UsageScanner {
    pub fn new(shapes: &'static [UsageShape], content_type: Option<&str>) -> Self {
        let content_type = content_type.unwrap_or_default().to_ascii_lowercase();
        let framing = if content_type.starts_with("text/event-stream") {
            Framing::Sse(Vec::new())
        } else if content_type.starts_with("application/vnd.amazon.eventstream") {
            Framing::EventStream(FrameDecoder::default())
        } else if content_type.contains("json") {
            Framing::Json(Vec::new())
        } else {
            Framing::Opaque
        };
        UsageScanner {
            shapes,
            framing,
            found: None,
            text: TextCount::default(),
            documents: 0,
            done_marker: false,
        }
    }

    /// Whether the stream's own end marker (`data: [DONE]`) has passed: the client has the whole
    /// answer even if the upstream's end of body has not arrived yet.
    pub fn saw_end_marker(&self) -> bool {
        self.done_marker
    }

    /// Whether the response is a stream (SSE or event stream).
    pub fn is_stream(&self) -> bool {
        matches!(self.framing, Framing::Sse(_) | Framing::EventStream(_))
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        let mut documents = Vec::new();
        match &mut self.framing {
            Framing::Json(buffer) => {
                if buffer.len() + chunk.len() <= MAX_JSON_BODY {
                    buffer.extend_from_slice(chunk);
                } else {
                    self.framing = Framing::Opaque;
                }
            }
            Framing::Sse(pending) => {
                pending.extend_from_slice(chunk);
                while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    let line = String::from_utf8_lossy(&line);
                    if let Some(data) = line.trim_end().strip_prefix("data:") {
                        if data.trim() == "[DONE]" {
                            self.done_marker = true;
                        } else if let Ok(doc) = serde_json::from_str::<Value>(data.trim()) {
                            documents.push(doc);
                        }
                    }
                }
            }
            Framing::EventStream(decoder) => {
                for frame in decoder.feed(chunk).into_iter().flatten() {
                    let Ok(doc) = serde_json::from_slice::<Value>(&frame.payload) else {
                        continue;
                    };
                    // invoke-with-response-stream wraps each model event in base64 under `bytes`.
                    let inner = doc
                        .get("bytes")
                        .and_then(Value::as_str)
                        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                        .and_then(|raw| serde_json::from_slice::<Value>(&raw).ok());
                    documents.push(inner.unwrap_or(doc));
                }
            }
            Framing::Opaque => {}
        }
        for doc in documents {
            self.absorb(&doc);
        }
    }

    /// The usage seen, once the response has ended. When the provider reported none but the response
    /// carried documents, and `estimate_input_bytes` is given (a successful response, and the size of
    /// the request that produced it), the usage is estimated: input from the request's bytes, output
    /// from the generated text that passed.
    pub fn finish(mut self, estimate_input_bytes: Option<u64>) -> Option<Usage> {
        if let Framing::Json(buffer) = std::mem::replace(&mut self.framing, Framing::Opaque) {
            if let Ok(doc) = serde_json::from_slice::<Value>(&buffer) {
                self.absorb(&doc);
            }
        }
        if let Some(reported) = self.found {
            return Some(reported.usage());
        }
        let request_bytes = estimate_input_bytes.filter(|_| self.documents > 0)?;
        // The request's JSON is mostly its text (keys and roles are a small share of a prompt).
        let input_tokens = request_bytes.div_ceil(4);
        let output_tokens = estimate_tokens(self.text.ascii, self.text.other);
        Some(Usage {
            input_tokens,
            output_tokens,
            total_tokens: input_tokens + output_tokens,
            estimated: true,
            ..Usage::default()
        })
    }

    /// Streams report usage piecewise (input at the start, output at the end) or cumulatively; the
    /// largest value seen for each counter is the final one.
    fn absorb(&mut self, doc: &Value) {
        self.documents += 1;
        self.text.add_generated(doc);
        for shape in self.shapes {
            let Some(object) = shape.path.iter().try_fold(doc, |v, key| v.get(key)) else {
                continue;
            };
            let count = |name: &str| object.get(name).and_then(Value::as_u64);
            let (input, output) = (count(shape.input), count(shape.output));
            let total = shape.total.and_then(count);
            if input.is_none() && output.is_none() && total.is_none() {
                continue;
            }
            let (cache_read, cache_write) = match shape.cache {
                CacheCounts::None => (None, None),
                CacheCounts::WithinInput { read } => (
                    read.iter()
                        .try_fold(object, |v, key| v.get(key))
                        .and_then(Value::as_u64),
                    None,
                ),
                CacheCounts::BesideInput { read, write } => (count(read), count(write)),
            };
            let seen = self.found.get_or_insert_with(Reported::default);
            seen.cache_beside_input |= matches!(shape.cache, CacheCounts::BesideInput { .. });
            for (counter, value) in [
                (&mut seen.input, input),
                (&mut seen.output, output),
                (&mut seen.more_output, shape.more_output.and_then(count)),
                (&mut seen.total, total),
                (&mut seen.cache_read, cache_read),
                (&mut seen.cache_write, cache_write),
            ] {
                *counter = (*counter).max(value.unwrap_or(0));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventstream::encode;
    use crate::Provider;

    fn scan(provider: Provider, content_type: &str, chunks: &[&[u8]]) -> Option<Usage> {
        let mut scanner = UsageScanner::new(provider.usage_shapes(), Some(content_type));
        for chunk in chunks {
            scanner.feed(chunk);
        }
        scanner.finish(None)
    }

    #[test]
    fn azure_json_and_sse() {
        let body = br#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}"#;
        let (a, b) = body.split_at(20);
        let usage = scan(Provider::AzureOpenAi, "application/json", &[a, b]).unwrap();
        assert_eq!(
            (usage.input_tokens, usage.output_tokens, usage.total_tokens),
            (5, 7, 12)
        );
        let sse: &[&[u8]] = &[
            b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: {\"choices\":[],\"usa",
            b"ge\":{\"prompt_tokens\":2,\"completion_tokens\":3,\"total_tokens\":5}}\n\ndata: [DONE]\n\n",
        ];
        assert_eq!(
            scan(
                Provider::AzureOpenAi,
                "text/event-stream; charset=utf-8",
                sse
            )
            .unwrap()
            .total_tokens,
            5
        );
        assert_eq!(
            scan(
                Provider::AzureOpenAi,
                "text/event-stream",
                &[b"data: [DONE]\n\n"]
            ),
            None
        );
    }

    #[test]
    fn bedrock_invoke_converse_and_streams() {
        let invoke = br#"{"content":[],"usage":{"input_tokens":4,"output_tokens":6}}"#;
        let usage = scan(Provider::BedrockClaude, "application/json", &[invoke]).unwrap();
        assert_eq!(
            (usage.input_tokens, usage.output_tokens, usage.total_tokens),
            (4, 6, 10)
        );

        let b64 = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
        let start = format!(
            r#"{{"bytes":"{}"}}"#,
            b64(
                r#"{"type":"message_start","message":{"usage":{"input_tokens":9,"output_tokens":1}}}"#
            )
        );
        let delta = format!(
            r#"{{"bytes":"{}"}}"#,
            b64(r#"{"type":"message_delta","usage":{"output_tokens":14}}"#)
        );
        let mut stream = encode("chunk", start.as_bytes());
        stream.extend(encode("chunk", delta.as_bytes()));
        let usage = scan(
            Provider::BedrockClaude,
            "application/vnd.amazon.eventstream",
            &[&stream],
        )
        .unwrap();
        assert_eq!((usage.input_tokens, usage.output_tokens), (9, 14));

        let metadata = encode(
            "metadata",
            br#"{"usage":{"inputTokens":3,"outputTokens":8,"totalTokens":11},"metrics":{}}"#,
        );
        let usage = scan(
            Provider::BedrockClaude,
            "application/vnd.amazon.eventstream",
            &[&metadata],
        )
        .unwrap();
        assert_eq!(usage.total_tokens, 11);
    }

    #[test]
    fn gemini_usage_metadata_is_cumulative() {
        let sse: &[&[u8]] = &[
            b"data: {\"usageMetadata\":{\"promptTokenCount\":4,\"candidatesTokenCount\":1,\"totalTokenCount\":5}}\r\n\r\n",
            b"data: {\"usageMetadata\":{\"promptTokenCount\":4,\"candidatesTokenCount\":6,\"totalTokenCount\":10}}\r\n\r\n",
        ];
        let usage = scan(Provider::Gemini, "text/event-stream", sse).unwrap();
        assert_eq!(
            (usage.input_tokens, usage.output_tokens, usage.total_tokens),
            (4, 6, 10)
        );
    }

    #[test]
    fn a_stream_without_usage_is_estimated_and_marked() {
        // An Azure stream without stream_options.include_usage: no usage chunk at all.
        let sse = "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n\
                   data: {\"choices\":[{\"delta\":{\"content\":\"Hello there, \"}}]}\n\n\
                   data: {\"choices\":[{\"delta\":{\"content\":\"こんにちは\"}}]}\n\ndata: [DONE]\n\n";
        let mut scanner = UsageScanner::new(
            Provider::AzureOpenAi.usage_shapes(),
            Some("text/event-stream"),
        );
        for chunk in sse.as_bytes().chunks(7) {
            scanner.feed(chunk);
        }
        let usage = scanner.finish(Some(400)).unwrap();
        assert!(usage.estimated);
        assert_eq!(usage.input_tokens, 100, "400 request bytes");
        // "Hello there, " is 13 ASCII characters (4 tokens), then 5 Japanese characters (5 tokens).
        assert_eq!(usage.output_tokens, 9);
        assert_eq!(usage.total_tokens, 109);
    }

    #[test]
    fn reported_usage_is_never_replaced_by_an_estimate_and_errors_are_not_estimated() {
        let body = br#"{"choices":[{"message":{"content":"a long answer"}}],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}"#;
        let mut scanner = UsageScanner::new(
            Provider::AzureOpenAi.usage_shapes(),
            Some("application/json"),
        );
        scanner.feed(body);
        let usage = scanner.finish(Some(10_000)).unwrap();
        assert!(!usage.estimated);
        assert_eq!(usage.total_tokens, 12);

        let error = br#"{"error":{"code":"429","message":"slow down"}}"#;
        let mut scanner = UsageScanner::new(
            Provider::AzureOpenAi.usage_shapes(),
            Some("application/json"),
        );
        scanner.feed(error);
        assert_eq!(
            scanner.finish(None),
            None,
            "an error response is not billed"
        );
        let mut audio = UsageScanner::new(Provider::AzureOpenAi.usage_shapes(), Some("audio/mpeg"));
        audio.feed(b"ID3...");
        assert_eq!(audio.finish(Some(100)), None, "nothing to estimate from");
    }

    #[test]
    fn cached_input_is_part_of_the_input_whichever_way_the_provider_counts_it() {
        let counts = |u: Usage| {
            (
                u.input_tokens,
                u.cached_input_tokens,
                u.cache_write_tokens,
                u.output_tokens,
                u.total_tokens,
            )
        };
        // OpenAI counts cached tokens inside prompt_tokens.
        let chat = br#"{"usage":{"prompt_tokens":1000,"completion_tokens":10,"total_tokens":1010,"prompt_tokens_details":{"cached_tokens":768}}}"#;
        let usage = scan(Provider::AzureOpenAi, "application/json", &[chat]).unwrap();
        assert_eq!(counts(usage), (1000, 768, 0, 10, 1010));
        assert_eq!(usage.uncached_input_tokens(), 232);

        // The Responses API, as a body and as its stream's completed event.
        let responses = br#"{"object":"response","usage":{"input_tokens":50,"output_tokens":5,"total_tokens":55,"input_tokens_details":{"cached_tokens":20}}}"#;
        let usage = scan(Provider::AzureOpenAi, "application/json", &[responses]).unwrap();
        assert_eq!(counts(usage), (50, 20, 0, 5, 55));
        let stream: &[&[u8]] = &[
            b"event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"hi\"}\n\n",
            b"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":7,\"output_tokens\":3,\"total_tokens\":10}}}\n\n",
        ];
        let usage = scan(Provider::AzureOpenAi, "text/event-stream", stream).unwrap();
        assert_eq!((counts(usage), usage.estimated), ((7, 0, 0, 3, 10), false));

        // Anthropic counts cache reads and writes beside input_tokens: the input is their sum.
        let invoke = br#"{"usage":{"input_tokens":10,"cache_creation_input_tokens":200,"cache_read_input_tokens":3000,"output_tokens":40}}"#;
        let usage = scan(Provider::BedrockClaude, "application/json", &[invoke]).unwrap();
        assert_eq!(counts(usage), (3210, 3000, 200, 40, 3250));
        let converse = br#"{"usage":{"inputTokens":5,"outputTokens":6,"totalTokens":111,"cacheReadInputTokens":100}}"#;
        let usage = scan(Provider::BedrockClaude, "application/json", &[converse]).unwrap();
        assert_eq!(counts(usage), (105, 100, 0, 6, 111));

        // Gemini: cached content inside the prompt count, thoughts beside the candidates.
        let gemini = br#"{"usageMetadata":{"promptTokenCount":400,"cachedContentTokenCount":300,"candidatesTokenCount":20,"thoughtsTokenCount":80,"totalTokenCount":500}}"#;
        let usage = scan(Provider::Gemini, "application/json", &[gemini]).unwrap();
        assert_eq!(counts(usage), (400, 300, 0, 100, 500));

        // A cached count larger than the input it is part of is capped at the input.
        let odd = br#"{"usage":{"prompt_tokens":5,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":9}}}"#;
        let usage = scan(Provider::AzureOpenAi, "application/json", &[odd]).unwrap();
        assert_eq!(
            (usage.cached_input_tokens, usage.uncached_input_tokens()),
            (5, 0)
        );
    }

    #[test]
    fn non_json_bodies_have_no_usage() {
        assert_eq!(
            scan(Provider::AzureOpenAi, "audio/mpeg", &[b"ID3..."]),
            None
        );
    }
}
