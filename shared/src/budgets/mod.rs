//! Budgets enforced before a request is forwarded: tokens per minute, and monthly tokens and cost,
//! per department and per user (an API key counts as a user), on DynamoDB atomic counters.
//!
//! - [`settings`]: each department's limits and contacts (the `departments` table, written through
//!   the admin API). The route functions keep it in memory (a [`crate::mirror::Mirror`]), so reading
//!   the limits costs no round trip.
//! - [`demand`]: a request's worst case, from its body before it is forwarded: input tokens at most
//!   its bytes (a token is at least one byte), output tokens its `max_tokens` (each provider's field)
//!   or the model's default limit, and their cost at the price table's rates.
//! - [`counters`]: the `usage` table. A request under a budget *reserves* its worst case on every
//!   counter a limit applies to, with one conditional update per counter, all at once, each refusing
//!   if its counter would pass its limit (the one round trip a budget adds to a request's path); if
//!   one refuses, the others' shares are given back. The audit writer *settles* each reservation to
//!   the real usage from the request's final audit record, off the request path, once (a marker
//!   item makes a retried batch change nothing).
//!
//! Invariant: the sum over counters of settled usage plus open reservations never passes a limit
//! because of a reservation; it passes it only by what requests used beyond their reserved worst
//! case (a provider reporting more than `max_tokens`), never by concurrency. A request that never
//! ends keeps its worst case counted.

pub mod counters;
pub mod demand;
pub mod gate;
pub mod settings;

pub use counters::{Refused, Reservation, UsageCounters};
pub use demand::Demand;
pub use gate::Gate;
pub use settings::{DepartmentSettings, Limits, SettingsList, SettingsStore};

/// Micro-dollars: costs are counted in integers so that sums do not drift.
pub fn micros(usd: f64) -> u64 {
    if usd.is_finite() && usd > 0.0 {
        (usd * 1_000_000.0).ceil() as u64
    } else {
        0
    }
}

pub fn usd(micros: u64) -> f64 {
    micros as f64 / 1_000_000.0
}
