//! Each provider's relayed API as an explicit table: (method, path shape) -> operation.
//!
//! A shape is written the way the provider documents its paths, one segment per `/`:
//! - a literal (`chat`, `completions`) matches itself;
//! - `{model}` is the model (deployment, model id, inference profile or ARN) and must pass the
//!   provider's model-id syntax;
//! - `{model}:method` is Gemini's `models/{model}:generateContent` (the method is a literal);
//! - `{id}` names an object stored upstream (a file, a response, a batch) and must pass [`id_syntax`];
//! - `{version}` is one of the provider's API versions; `{version?}` may also be absent.
//!
//! There is no fallback: a request that matches no rule is not relayed. Rules marked
//! [`Access::Stored`] list, read or change objects kept upstream under the gateway's one shared key
//! (other users' files, stored completions, caches): they exist so the refusal can say what they are,
//! and the scope policy must grant them by name.

use http::Method;

use super::Operation;
use crate::paths::RequestPath;

/// Where an operation names its model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelAt {
    /// In the path (`{model}` in the shape).
    Path,
    /// In the JSON body's `model` field (Azure OpenAI's `/openai/v1/*`, `/openai/responses`); only the
    /// route sees it, so the route checks the model allow-list against it.
    Body,
    /// Nowhere (model listings).
    Nowhere,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Inference: the request carries its own input and the answer goes only to the caller.
    Relay,
    /// Lists, reads or changes objects stored upstream under the shared key.
    Stored,
}

#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub method: &'static str,
    pub shape: &'static str,
    pub operation: &'static str,
    pub model_at: ModelAt,
    pub access: Access,
}

impl Rule {
    /// An inference operation; the model is where the shape puts it, or nowhere.
    pub const fn relay(method: &'static str, shape: &'static str, operation: &'static str) -> Rule {
        Rule {
            method,
            shape,
            operation,
            model_at: if shape_names_model(shape) {
                ModelAt::Path
            } else {
                ModelAt::Nowhere
            },
            access: Access::Relay,
        }
    }

    /// An inference operation whose model is named in the JSON body.
    pub const fn body_model(
        method: &'static str,
        shape: &'static str,
        operation: &'static str,
    ) -> Rule {
        Rule {
            model_at: ModelAt::Body,
            ..Rule::relay(method, shape, operation)
        }
    }

    /// An operation on objects stored upstream under the shared key.
    pub const fn stored(
        method: &'static str,
        shape: &'static str,
        operation: &'static str,
    ) -> Rule {
        Rule {
            access: Access::Stored,
            ..Rule::relay(method, shape, operation)
        }
    }
}

const fn shape_names_model(shape: &str) -> bool {
    let bytes = shape.as_bytes();
    let needle = b"{model}";
    let mut i = 0;
    while i + needle.len() <= bytes.len() {
        let mut j = 0;
        while j < needle.len() && bytes[i + j] == needle[j] {
            j += 1;
        }
        if j == needle.len() {
            return true;
        }
        i += 1;
    }
    false
}

/// What a provider's grammar needs besides its table.
pub struct Grammar {
    pub rules: &'static [Rule],
    pub versions: &'static [&'static str],
    pub model_syntax: fn(&str) -> bool,
}

impl Grammar {
    /// The rule a request matches, with the model it names in its path.
    pub fn classify(&self, method: &Method, path: &RequestPath) -> Option<Operation> {
        self.rules
            .iter()
            .filter(|rule| rule.method == method.as_str())
            .find_map(|rule| self.matches(rule, path.segments()))
    }

    /// Whether any rule (of any method) names `operation`, for checking policies against the grammar.
    pub fn knows(&self, operation: &str) -> bool {
        self.rules.iter().any(|rule| rule.operation == operation)
    }

    fn matches(&self, rule: &Rule, segments: &[String]) -> Option<Operation> {
        let shape = rule.shape.strip_prefix('/')?;
        // `{version?}` (Azure OpenAI's `/openai/files` and `/openai/v1/files`) matches with or without
        // its segment.
        let optional = shape.split('/').any(|p| p == "{version?}");
        let model = self.match_segments(shape, segments, false).or_else(|| {
            optional
                .then(|| self.match_segments(shape, segments, true))
                .flatten()
        })?;
        Some(Operation {
            name: rule.operation,
            model,
            model_at: rule.model_at,
            access: rule.access,
        })
    }

    /// Matches one reading of a shape; `Some(model)` on a match.
    fn match_segments(
        &self,
        shape: &str,
        segments: &[String],
        skip_optional: bool,
    ) -> Option<Option<String>> {
        let patterns = shape
            .split('/')
            .filter(|p| !(skip_optional && *p == "{version?}"));
        if patterns.clone().count() != segments.len() {
            return None;
        }
        let mut model = None;
        for (pattern, segment) in patterns.zip(segments) {
            match pattern {
                "{model}" => {
                    if !(self.model_syntax)(segment) {
                        return None;
                    }
                    model = Some(segment.clone());
                }
                "{id}" => {
                    if !id_syntax(segment) {
                        return None;
                    }
                }
                "{version}" | "{version?}" => {
                    if !self.versions.contains(&segment.as_str()) {
                        return None;
                    }
                }
                _ => match pattern.strip_prefix("{model}:") {
                    Some(method) => {
                        let (name, called) = segment.split_once(':')?;
                        if called != method || !(self.model_syntax)(name) {
                            return None;
                        }
                        model = Some(name.to_string());
                    }
                    None if pattern == segment => {}
                    None => return None,
                },
            }
        }
        Some(model)
    }
}

/// Ids of stored objects (`file-abc123`, `resp_67c…`, `batch_…`, `cachedContents` names): letters,
/// digits, `-`, `_`, `.`, at most 256 bytes, never only dots.
pub fn id_syntax(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 256
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !id.bytes().all(|b| b == b'.')
}

/// Model and deployment names that are plain tokens (Azure deployments, Gemini models): starts with a
/// letter or digit, then letters, digits, `-`, `_`, `.`, at most 128 bytes, no `..`.
pub fn token_model_syntax(model: &str) -> bool {
    model.len() <= 128
        && model
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && model
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !model.contains("..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_names_model_finds_the_placeholder() {
        assert!(shape_names_model("/model/{model}/invoke"));
        assert!(shape_names_model(
            "/{version}/models/{model}:generateContent"
        ));
        assert!(!shape_names_model("/openai/v1/chat/completions"));
    }

    #[test]
    fn ids_and_tokens() {
        assert!(id_syntax("file-abc_123.jsonl"));
        assert!(!id_syntax(".."));
        assert!(!id_syntax("a/b"));
        assert!(!id_syntax(""));
        assert!(token_model_syntax("gpt-4o-mini"));
        assert!(token_model_syntax("gemini-2.5-flash-preview-05-20"));
        assert!(!token_model_syntax("a..b"));
        assert!(!token_model_syntax("-x"));
        assert!(!token_model_syntax("a:b"));
    }
}
