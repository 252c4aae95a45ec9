//! Tracing setup: JSON lines in Lambda (CloudWatch parses them), human-readable text elsewhere.
//! Log fields must never carry tokens, keys or bodies; callers log ids, decisions and sizes only.

use tracing_subscriber::{fmt, EnvFilter};

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let in_lambda = std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some();
    let result = if in_lambda {
        fmt()
            .json()
            .with_env_filter(filter)
            .with_current_span(false)
            .with_ansi(false)
            .without_time()
            .try_init()
    } else {
        fmt().with_env_filter(filter).with_target(false).try_init()
    };
    // A second init (tests, the local stack hosting several functions) keeps the first subscriber.
    drop(result);
}
