//! What a request cost: a price table as data (`config/prices.json`, built in; `GATEWAY_PRICE_FILE`
//! replaces it) and the cost of an audit event's usage on the day it happened.
//!
//! Rules: an entry applies to its provider's models matching its pattern (`*` matches any run of
//! characters, as in the scope policy's model patterns), from its `effective_from` day (UTC) on, and,
//! when it names a `region` (a pattern too), only to requests that went to a matching region (the
//! event's `region`: Bedrock's signing region, `GATEWAY_<PROVIDER>_REGION` for the others). Of the
//! entries in force, the most specific model pattern wins (most literal characters), then a regional
//! entry over one for every region (the more specific region first), then the latest
//! `effective_from`. A model no entry prices is never free: its event keeps `cost_usd` empty and says
//! why in `cost_status`, so chargeback can flag it.
//!
//! Cached input: input tokens read from a provider's prompt cache are priced at
//! `cached_input_per_mtok`, and those written to it at `cache_write_per_mtok`; either left out costs
//! the plain input rate (never less than the provider could charge for an entry that forgot it).

use serde::Deserialize;

use crate::audit::{AuditEvent, Decision, Record, Usage};
use crate::provisioning::rows::Date;
use crate::Provider;

pub const DEFAULT_PRICES_JSON: &str = include_str!("../../config/prices.json");

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PriceError {
    #[error("the price table is not JSON of the expected shape: {0}")]
    Shape(String),
    #[error("price entry {index}: {reason}")]
    Entry { index: usize, reason: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Price {
    pub provider: Provider,
    pub pattern: String,
    /// The regions the entry applies to; `None`: every region.
    pub region: Option<String>,
    pub effective_from: Date,
    pub input_per_mtok: f64,
    pub cached_input_per_mtok: f64,
    pub cache_write_per_mtok: f64,
    pub output_per_mtok: f64,
    pub per_request: f64,
    /// The model's default cap on output tokens: what a budget reserves when a request sets none.
    pub max_output_tokens: Option<u64>,
}

impl Price {
    /// USD for a request's usage: uncached, cached and cache-written input at their rates, output,
    /// and the request fee.
    pub fn cost(&self, usage: &Usage) -> f64 {
        (usage.uncached_input_tokens() as f64 * self.input_per_mtok
            + usage.cached_input_tokens as f64 * self.cached_input_per_mtok
            + usage.cache_write_tokens as f64 * self.cache_write_per_mtok
            + usage.output_tokens as f64 * self.output_per_mtok)
            / 1_000_000.0
            + self.per_request
    }

    /// The most `input_tokens` and `output_tokens` can cost, however the input turns out to be
    /// cached: every input token at the dearest of the input rates (a cache write costs more than a
    /// plain read).
    pub fn worst_case_cost(&self, input_tokens: u64, output_tokens: u64) -> f64 {
        let input_rate = self
            .input_per_mtok
            .max(self.cached_input_per_mtok)
            .max(self.cache_write_per_mtok);
        (input_tokens as f64 * input_rate + output_tokens as f64 * self.output_per_mtok)
            / 1_000_000.0
            + self.per_request
    }

    fn literal_chars(pattern: &str) -> usize {
        pattern.chars().filter(|c| *c != '*').count()
    }

    /// Model pattern first, then region pattern (an entry for every region last).
    fn specificity(&self) -> (usize, usize) {
        (
            Self::literal_chars(&self.pattern),
            self.region
                .as_deref()
                .map_or(0, |r| 1 + Self::literal_chars(r)),
        )
    }

    fn applies_in(&self, region: Option<&str>) -> bool {
        match (&self.region, region) {
            (None, _) => true,
            (Some(pattern), Some(region)) => crate::scopes::glob_match(pattern, region),
            (Some(_), None) => false,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceFile {
    #[allow(
        dead_code,
        reason = "the file's format version, checked by serde's presence only"
    )]
    version: u32,
    currency: String,
    #[serde(default)]
    #[allow(dead_code, reason = "documentation inside the data file")]
    note: Option<String>,
    prices: Vec<PriceEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceEntry {
    provider: String,
    model: String,
    #[serde(default)]
    region: Option<String>,
    effective_from: String,
    input_per_mtok: f64,
    #[serde(default)]
    cached_input_per_mtok: Option<f64>,
    #[serde(default)]
    cache_write_per_mtok: Option<f64>,
    output_per_mtok: f64,
    #[serde(default)]
    per_request: f64,
    #[serde(default)]
    max_output_tokens: Option<u64>,
}

/// Why an event has the cost it has (`cost_status` in the audit event).
pub const PRICED: &str = "priced";
pub const UNKNOWN_MODEL: &str = "unknown_model";
pub const NO_MODEL: &str = "no_model";
pub const NO_USAGE: &str = "no_usage";

#[derive(Debug, Clone)]
pub struct PriceTable {
    prices: Vec<Price>,
}

impl PriceTable {
    pub fn from_json(text: &str) -> Result<PriceTable, PriceError> {
        let file: PriceFile =
            serde_json::from_str(text).map_err(|e| PriceError::Shape(e.to_string()))?;
        if file.currency != "USD" {
            return Err(PriceError::Shape(format!(
                "currency {:?}: audit events carry cost_usd, so prices are in USD",
                file.currency
            )));
        }
        let mut prices = Vec::new();
        for (index, entry) in file.prices.into_iter().enumerate() {
            let bad = |reason: String| PriceError::Entry { index, reason };
            let provider = Provider::ALL
                .into_iter()
                .find(|p| p.route_prefix() == entry.provider)
                .ok_or_else(|| {
                    bad(format!(
                        "provider {:?} is not a gateway route",
                        entry.provider
                    ))
                })?;
            let effective_from = Date::parse(&entry.effective_from).ok_or_else(|| {
                bad(format!(
                    "effective_from {:?} is not a date",
                    entry.effective_from
                ))
            })?;
            let cached_input_per_mtok = entry.cached_input_per_mtok.unwrap_or(entry.input_per_mtok);
            let cache_write_per_mtok = entry.cache_write_per_mtok.unwrap_or(entry.input_per_mtok);
            for (name, value) in [
                ("input_per_mtok", entry.input_per_mtok),
                ("cached_input_per_mtok", cached_input_per_mtok),
                ("cache_write_per_mtok", cache_write_per_mtok),
                ("output_per_mtok", entry.output_per_mtok),
                ("per_request", entry.per_request),
            ] {
                if !value.is_finite() || value < 0.0 {
                    return Err(bad(format!("{name} {value} is not a price")));
                }
            }
            let names_something = |p: &str| !p.is_empty() && !p.chars().all(|c| c == '*');
            if !names_something(&entry.model) {
                return Err(bad("a model pattern names at least one character".into()));
            }
            if entry.region.as_deref().is_some_and(|r| !names_something(r)) {
                return Err(bad(
                    "a region pattern names at least one character (leave region out for every region)"
                        .into(),
                ));
            }
            let price = Price {
                provider,
                pattern: entry.model,
                region: entry.region,
                effective_from,
                input_per_mtok: entry.input_per_mtok,
                cached_input_per_mtok,
                cache_write_per_mtok,
                output_per_mtok: entry.output_per_mtok,
                per_request: entry.per_request,
                max_output_tokens: entry.max_output_tokens,
            };
            if prices.iter().any(|p: &Price| {
                p.provider == price.provider
                    && p.pattern == price.pattern
                    && p.region == price.region
                    && p.effective_from == price.effective_from
            }) {
                return Err(bad(format!(
                    "{} {} {}from {} is priced twice",
                    price.provider.route_prefix(),
                    price.pattern,
                    price
                        .region
                        .as_deref()
                        .map(|r| format!("in {r} "))
                        .unwrap_or_default(),
                    price.effective_from
                )));
            }
            prices.push(price);
        }
        Ok(PriceTable { prices })
    }

    pub fn built_in() -> Result<PriceTable, PriceError> {
        PriceTable::from_json(DEFAULT_PRICES_JSON)
    }

    /// `GATEWAY_PRICE_FILE` (a price table replacing the built-in `config/prices.json`), or the
    /// built-in table.
    pub fn from_settings(
        settings: &dyn crate::config::Settings,
    ) -> Result<PriceTable, crate::config::ConfigError> {
        let invalid = |reason: String| crate::config::ConfigError::Invalid {
            name: "GATEWAY_PRICE_FILE",
            reason,
        };
        match settings.get("GATEWAY_PRICE_FILE") {
            None => PriceTable::built_in().map_err(|e| invalid(format!("the built-in table: {e}"))),
            Some(path) => PriceTable::from_json(
                &std::fs::read_to_string(&path).map_err(|e| invalid(format!("{path}: {e}")))?,
            )
            .map_err(|e| invalid(format!("{path}: {e}"))),
        }
    }

    /// The price of `model` on `provider`, for a request that went to `region`, on `day`.
    pub fn price(
        &self,
        provider: Provider,
        model: &str,
        region: Option<&str>,
        day: Date,
    ) -> Option<&Price> {
        self.prices
            .iter()
            .filter(|p| p.provider == provider && p.effective_from <= day && p.applies_in(region))
            .filter(|p| crate::scopes::glob_match(&p.pattern, model))
            .max_by_key(|p| (p.specificity(), p.effective_from))
    }

    /// Sets `cost_usd` and `cost_status` on a request's outcome (final and incomplete records of a
    /// provider route); leaves other records (authorized, accepted, directory changes) alone.
    pub fn apply(&self, event: &mut AuditEvent) {
        if !matches!(event.record, Record::Final | Record::Incomplete) {
            return;
        }
        let Some(provider) = event
            .provider
            .as_deref()
            .and_then(|p| Provider::ALL.into_iter().find(|x| x.route_prefix() == p))
        else {
            return;
        };
        if event.decision != Decision::Allow && event.usage.is_none() {
            // Refused without reaching the provider: nothing to price.
            return;
        }
        let (cost, status) = match (&event.usage, event.model.as_deref()) {
            (None, _) => (None, NO_USAGE),
            (Some(_), None) => (None, NO_MODEL),
            (Some(usage), Some(model)) => {
                let region = event.region.as_deref();
                match event_day(&event.time)
                    .and_then(|day| self.price(provider, model, region, day))
                {
                    Some(price) => (Some(price.cost(usage)), PRICED),
                    None => (None, UNKNOWN_MODEL),
                }
            }
        };
        event.cost_usd = cost;
        event.cost_status = Some(status.to_string());
    }
}

/// The UTC day of an event's RFC 3339 time.
fn event_day(time: &str) -> Option<Date> {
    Date::parse(time.get(..10)?)
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a panic is the failure report"
    )]

    use proptest::prelude::*;

    use super::*;

    fn table(prices: &str) -> Result<PriceTable, PriceError> {
        PriceTable::from_json(&format!(
            r#"{{"version": 1, "currency": "USD", "prices": [{prices}]}}"#
        ))
    }

    fn day(text: &str) -> Date {
        Date::parse(text).unwrap()
    }

    #[test]
    fn the_built_in_table_reads_and_prices_the_models_the_gateway_serves() {
        let prices = PriceTable::built_in().unwrap();
        let on = day("2026-11-25");
        let mini = prices
            .price(Provider::AzureOpenAi, "gpt-4o-mini", None, on)
            .unwrap();
        assert_eq!(
            mini.input_per_mtok, 0.15,
            "the more specific pattern wins over gpt-4o*"
        );
        assert!(prices
            .price(
                Provider::BedrockClaude,
                "us.anthropic.claude-3-5-sonnet-20240620-v1:0",
                None,
                on
            )
            .is_some());
        assert!(prices
            .price(Provider::Gemini, "gemini-2.0-flash", None, on)
            .is_some());
        assert!(
            prices
                .price(Provider::Gemini, "gpt-4o-mini", None, on)
                .is_none(),
            "per provider"
        );
    }

    #[test]
    fn the_latest_entry_in_force_applies_and_none_before_the_first() {
        let prices = table(
            r#"{"provider": "gemini", "model": "m*", "effective_from": "2025-01-01", "input_per_mtok": 1, "output_per_mtok": 2},
               {"provider": "gemini", "model": "m*", "effective_from": "2025-06-01", "input_per_mtok": 3, "output_per_mtok": 4}"#,
        )
        .unwrap();
        assert!(prices
            .price(Provider::Gemini, "m1", None, day("2024-12-31"))
            .is_none());
        assert_eq!(
            prices
                .price(Provider::Gemini, "m1", None, day("2025-05-31"))
                .unwrap()
                .input_per_mtok,
            1.0
        );
        assert_eq!(
            prices
                .price(Provider::Gemini, "m1", None, day("2025-06-01"))
                .unwrap()
                .input_per_mtok,
            3.0
        );
    }

    #[test]
    fn bad_tables_are_refused_naming_the_entry() {
        let entry = |field: &str| {
            table(&format!(
                r#"{{"provider": "gemini", "model": "m", "effective_from": "2025-01-01", "input_per_mtok": 1, "output_per_mtok": 1, {field}}}"#
            ))
        };
        assert!(matches!(
            entry(r#""per_request": -1"#),
            Err(PriceError::Entry { index: 0, .. })
        ));
        assert!(matches!(entry(r#""extra": 1"#), Err(PriceError::Shape(_))));
        assert!(table(r#"{"provider": "openai", "model": "m", "effective_from": "2025-01-01", "input_per_mtok": 1, "output_per_mtok": 1}"#).is_err());
        assert!(table(r#"{"provider": "gemini", "model": "*", "effective_from": "2025-01-01", "input_per_mtok": 1, "output_per_mtok": 1}"#).is_err());
        let twice = r#"{"provider": "gemini", "model": "m", "effective_from": "2025-01-01", "input_per_mtok": 1, "output_per_mtok": 1}"#;
        assert!(table(&format!("{twice},{twice}")).is_err());
        assert!(
            PriceTable::from_json(r#"{"version": 1, "currency": "JPY", "prices": []}"#).is_err()
        );
    }

    fn final_event(provider: &str, model: Option<&str>, usage: Option<(u64, u64)>) -> AuditEvent {
        let mut event = AuditEvent::new("r", Decision::Allow, 200);
        event.time = "2026-11-25T03:00:00.000Z".into();
        event.provider = Some(provider.into());
        event.model = model.map(str::to_string);
        event.usage = usage.map(|(input, output)| Usage {
            input_tokens: input,
            output_tokens: output,
            total_tokens: input + output,
            estimated: false,
            ..Default::default()
        });
        event
    }

    #[test]
    fn events_are_priced_or_say_why_not_never_silently_free() {
        let prices = PriceTable::built_in().unwrap();
        let mut priced = final_event(
            "azure-openai",
            Some("gpt-4o-mini"),
            Some((1_000_000, 1_000_000)),
        );
        prices.apply(&mut priced);
        assert_eq!(priced.cost_status.as_deref(), Some(PRICED));
        assert!((priced.cost_usd.unwrap() - 0.75).abs() < 1e-9);

        let mut unknown = final_event("azure-openai", Some("mystery-model"), Some((10, 10)));
        prices.apply(&mut unknown);
        assert_eq!(
            (unknown.cost_usd, unknown.cost_status.as_deref()),
            (None, Some(UNKNOWN_MODEL))
        );

        let mut no_usage = final_event("gemini", Some("gemini-2.0-flash"), None);
        prices.apply(&mut no_usage);
        assert_eq!(
            (no_usage.cost_usd, no_usage.cost_status.as_deref()),
            (None, Some(NO_USAGE))
        );

        let mut authorized = final_event("gemini", Some("gemini-2.0-flash"), Some((1, 1)));
        authorized.record = Record::Authorized;
        prices.apply(&mut authorized);
        assert_eq!(authorized.cost_status, None);

        let mut admin = final_event("admin", None, None);
        prices.apply(&mut admin);
        assert_eq!(admin.cost_status, None);
    }

    #[test]
    fn a_regional_entry_prices_its_region_and_the_general_entry_the_others() {
        let prices = table(
            r#"{"provider": "bedrock-claude", "model": "*claude-x*", "effective_from": "2025-01-01", "input_per_mtok": 3, "output_per_mtok": 15},
               {"provider": "bedrock-claude", "model": "*claude-x*", "region": "ap-northeast-1", "effective_from": "2025-01-01", "input_per_mtok": 4, "output_per_mtok": 20},
               {"provider": "bedrock-claude", "model": "*claude-x*", "region": "eu-*", "effective_from": "2025-01-01", "input_per_mtok": 3.5, "output_per_mtok": 16},
               {"provider": "bedrock-claude", "model": "*claude-x*", "region": "eu-central-1", "effective_from": "2025-01-01", "input_per_mtok": 3.6, "output_per_mtok": 17}"#,
        )
        .unwrap();
        let input_rate = |region: Option<&str>| {
            prices
                .price(
                    Provider::BedrockClaude,
                    "anthropic.claude-x-v1",
                    region,
                    day("2026-01-01"),
                )
                .unwrap()
                .input_per_mtok
        };
        assert_eq!(input_rate(Some("ap-northeast-1")), 4.0);
        assert_eq!(input_rate(Some("eu-west-1")), 3.5, "the region pattern");
        assert_eq!(
            input_rate(Some("eu-central-1")),
            3.6,
            "the more specific region"
        );
        assert_eq!(input_rate(Some("us-east-1")), 3.0, "every other region");
        assert_eq!(input_rate(None), 3.0, "a request of no known region");
        // A regional entry alone prices nothing outside its region: never silently free.
        let regional_only = table(
            r#"{"provider": "gemini", "model": "g", "region": "europe-west4", "effective_from": "2025-01-01", "input_per_mtok": 1, "output_per_mtok": 1}"#,
        )
        .unwrap();
        assert!(regional_only
            .price(
                Provider::Gemini,
                "g",
                Some("us-central1"),
                day("2026-01-01")
            )
            .is_none());
        assert!(regional_only
            .price(Provider::Gemini, "g", None, day("2026-01-01"))
            .is_none());
        let mut event = final_event("gemini", Some("g"), Some((10, 10)));
        event.region = Some("us-central1".into());
        regional_only.apply(&mut event);
        assert_eq!(event.cost_status.as_deref(), Some(UNKNOWN_MODEL));
        event.region = Some("europe-west4".into());
        regional_only.apply(&mut event);
        assert_eq!(event.cost_status.as_deref(), Some(PRICED));
        // Bad region patterns are refused, naming the entry.
        assert!(matches!(
            table(
                r#"{"provider": "gemini", "model": "g", "region": "*", "effective_from": "2025-01-01", "input_per_mtok": 1, "output_per_mtok": 1}"#
            ),
            Err(PriceError::Entry { index: 0, .. })
        ));
    }

    #[test]
    fn cached_and_cache_written_input_cost_their_rates_and_default_to_the_input_rate() {
        let prices = table(
            r#"{"provider": "bedrock-claude", "model": "c", "effective_from": "2025-01-01", "input_per_mtok": 3, "cached_input_per_mtok": 0.3, "cache_write_per_mtok": 3.75, "output_per_mtok": 15},
               {"provider": "gemini", "model": "g", "effective_from": "2025-01-01", "input_per_mtok": 1, "output_per_mtok": 2}"#,
        )
        .unwrap();
        let on = day("2026-01-01");
        let usage = Usage {
            input_tokens: 3_000_000,
            cached_input_tokens: 1_000_000,
            cache_write_tokens: 1_000_000,
            output_tokens: 1_000_000,
            total_tokens: 4_000_000,
            estimated: false,
        };
        let claude = prices
            .price(Provider::BedrockClaude, "c", None, on)
            .unwrap();
        assert!((claude.cost(&usage) - (3.0 + 0.3 + 3.75 + 15.0)).abs() < 1e-9);
        assert!((claude.worst_case_cost(1_000_000, 0) - 3.75).abs() < 1e-9);
        let gemini = prices.price(Provider::Gemini, "g", None, on).unwrap();
        assert!(
            (gemini.cost(&usage) - (3.0 + 2.0)).abs() < 1e-9,
            "no cache rates: the input rate"
        );
        assert!(matches!(
            table(
                r#"{"provider": "gemini", "model": "g", "effective_from": "2025-01-01", "input_per_mtok": 1, "cached_input_per_mtok": -1, "output_per_mtok": 1}"#
            ),
            Err(PriceError::Entry { index: 0, .. })
        ));
    }

    proptest! {
        /// More tokens never cost less, and a priced request never costs less than its request fee.
        #[test]
        fn cost_is_monotonic_in_tokens(a in 0u64..10_000_000, b in 0u64..10_000_000, extra in 0u64..1_000_000) {
            let price = Price {
                provider: Provider::Gemini,
                pattern: "m".into(),
                region: None,
                effective_from: day("2025-01-01"),
                input_per_mtok: 0.1,
                cached_input_per_mtok: 0.025,
                cache_write_per_mtok: 0.125,
                output_per_mtok: 0.4,
                per_request: 0.001,
                max_output_tokens: None,
            };
            let usage = |input: u64, output: u64, cached: u64, written: u64| Usage {
                input_tokens: input,
                output_tokens: output,
                total_tokens: input + output,
                cached_input_tokens: cached.min(input),
                cache_write_tokens: written.min(input - cached.min(input)),
                estimated: false,
            };
            let cost = |u: Usage| price.cost(&u);
            prop_assert!(cost(usage(a + extra, b, 0, 0)) >= cost(usage(a, b, 0, 0)));
            prop_assert!(cost(usage(a, b + extra, 0, 0)) >= cost(usage(a, b, 0, 0)));
            prop_assert!(cost(usage(a, b, 0, 0)) >= price.per_request);
            // Whatever share of the input was cached or written, the reservation covered it.
            let (cached, written) = (extra % (a + 1), (extra / 2) % (a + 1));
            prop_assert!(price.worst_case_cost(a, b) >= cost(usage(a, b, cached, written)) - 1e-12);
        }
    }
}
