//! Configuration read once at init from environment variables into typed structs.
//!
//! Settings are read through a lookup function rather than `std::env` directly, so the local stack can host
//! several functions in one process with their own settings, and tests need not mutate the environment.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("missing required setting {0}")]
    Missing(&'static str),
    #[error("missing required setting: one of {}", .0.join(", "))]
    MissingOneOf(&'static [&'static str]),
    #[error("invalid setting {name}: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// A source of settings: the process environment in Lambda, a map in the local stack and tests.
pub trait Settings {
    fn get(&self, name: &str) -> Option<String>;
}

/// Reads the process environment; empty values count as unset.
pub struct Env;

impl Settings for Env {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.trim().is_empty())
    }
}

impl Settings for std::collections::HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        self.get(name).filter(|v| !v.trim().is_empty()).cloned()
    }
}

pub fn required(settings: &dyn Settings, name: &'static str) -> Result<String, ConfigError> {
    settings.get(name).ok_or(ConfigError::Missing(name))
}

pub fn duration_ms(
    settings: &dyn Settings,
    name: &'static str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    duration(
        settings,
        name,
        default,
        Duration::from_millis,
        "milliseconds",
    )
}

pub fn duration_secs(
    settings: &dyn Settings,
    name: &'static str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    duration(settings, name, default, Duration::from_secs, "seconds")
}

/// A whole number of `unit`s, or `default` when unset.
fn duration(
    settings: &dyn Settings,
    name: &'static str,
    default: Duration,
    from: fn(u64) -> Duration,
    unit: &str,
) -> Result<Duration, ConfigError> {
    match settings.get(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .map(from)
            .map_err(|e| ConfigError::Invalid {
                name,
                reason: format!("expected {unit}, got {v:?}: {e}"),
            }),
    }
}

pub fn usize_setting(
    settings: &dyn Settings,
    name: &'static str,
    default: usize,
) -> Result<usize, ConfigError> {
    match settings.get(name) {
        None => Ok(default),
        Some(v) => v.trim().parse::<usize>().map_err(|e| ConfigError::Invalid {
            name,
            reason: format!("expected a positive integer, got {v:?}: {e}"),
        }),
    }
}

/// An `http(s)://host[:port][/base]` URL without a trailing slash.
pub fn base_url(name: &'static str, value: String) -> Result<String, ConfigError> {
    let trimmed = value.trim().trim_end_matches('/').to_string();
    let has_scheme = trimmed.starts_with("https://") || trimmed.starts_with("http://");
    if !has_scheme || trimmed.parse::<http::Uri>().is_err() {
        return Err(ConfigError::Invalid {
            name,
            reason: format!("expected an http(s) URL, got {value:?}"),
        });
    }
    Ok(trimmed)
}
