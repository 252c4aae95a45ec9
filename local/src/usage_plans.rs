//! API Gateway usage plans, emulated: each department's plan (rate, burst, daily quota from
//! `config/gateway.json`) and the `default` plan (the stage's throttle) are selected, as in the stack,
//! by the usage-plan key the authorizer returns (`usageIdentifierKey`). A request the plan refuses
//! gets API Gateway's 429 (THROTTLED or QUOTA_EXCEEDED), in the provider's shape; one without a known
//! key its 403 (INVALID_API_KEY). As in API Gateway, this happens after the authorizer allowed the
//! request and before the route runs: the audit trail has the allow, and the digest reports the
//! request incomplete.
//!
//! Throttling is a token bucket (capacity `burst`, refilled at `rate` per second); the quota counts
//! admitted requests per UTC day. Throttled requests do not use quota.
//!
//! The departments' limits follow the local API Gateway's usage plans (moto), read every second
//! ([`follow`]): a change the admin API makes with `UpdateUsagePlan` applies here as it would in API
//! Gateway.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One plan's limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub rate_per_sec: f64,
    pub burst: u32,
    pub quota_per_day: Option<u64>,
}

/// What the plan says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Admitted,
    Throttled,
    QuotaExceeded,
    /// No key, or one no plan has: API Gateway refuses it (INVALID_API_KEY).
    NoPlan,
}

impl From<&gateway_shared::budgets::settings::PlanLimits> for Limits {
    fn from(plan: &gateway_shared::budgets::settings::PlanLimits) -> Self {
        Limits {
            rate_per_sec: f64::from(plan.rate_limit),
            burst: plan.burst_limit,
            quota_per_day: Some(plan.quota_per_day),
        }
    }
}

struct Plan {
    state: Mutex<Bucket>,
}

struct Bucket {
    limits: Limits,
    tokens: f64,
    refilled: Instant,
    /// Days since the epoch (UTC) the count is for.
    day: u64,
    used: u64,
}

/// Every plan, by usage-plan key value; `None`: the emulation is off (`GATEWAY_LOCAL_USAGE_PLANS=off`,
/// for benchmarks that measure the gateway's own time rather than a plan's limits).
#[derive(Clone)]
pub struct UsagePlans {
    by_key: Option<Arc<HashMap<String, Plan>>>,
}

impl UsagePlans {
    pub fn new(plans: impl IntoIterator<Item = (String, Limits)>, now: Instant) -> Self {
        let by_key = plans
            .into_iter()
            .map(|(key, limits)| {
                let bucket = Bucket {
                    limits,
                    tokens: f64::from(limits.burst),
                    refilled: now,
                    day: 0,
                    used: 0,
                };
                (
                    key,
                    Plan {
                        state: Mutex::new(bucket),
                    },
                )
            })
            .collect();
        UsagePlans {
            by_key: Some(Arc::new(by_key)),
        }
    }

    /// Sets the limits of the plan `key` selects (a bucket holds no more than the new burst).
    pub fn set_limits(&self, key: &str, limits: Limits) {
        let Some(plan) = self.by_key.as_ref().and_then(|plans| plans.get(key)) else {
            return;
        };
        let mut bucket = plan.state.lock().unwrap_or_else(|e| e.into_inner());
        if bucket.limits != limits {
            bucket.tokens = bucket.tokens.min(f64::from(limits.burst));
            bucket.limits = limits;
        }
    }

    pub fn off() -> Self {
        UsagePlans { by_key: None }
    }

    /// Admits (or not) one request that came with `key`.
    pub fn admit(&self, key: Option<&str>) -> Verdict {
        let day = gateway_shared::audit::clock::now_millis() / 86_400_000;
        self.admit_at(key, Instant::now(), day)
    }

    fn admit_at(&self, key: Option<&str>, now: Instant, day: u64) -> Verdict {
        let Some(plans) = &self.by_key else {
            return Verdict::Admitted;
        };
        let Some(plan) = key.and_then(|k| plans.get(k)) else {
            return Verdict::NoPlan;
        };
        // A poisoned lock only means another request panicked mid-update; the numbers stay usable.
        let mut bucket = plan.state.lock().unwrap_or_else(|e| e.into_inner());
        if bucket.day != day {
            bucket.day = day;
            bucket.used = 0;
        }
        let limits = bucket.limits;
        if limits.quota_per_day.is_some_and(|q| bucket.used >= q) {
            return Verdict::QuotaExceeded;
        }
        let elapsed = now.saturating_duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens =
            (bucket.tokens + elapsed * limits.rate_per_sec).min(f64::from(limits.burst));
        bucket.refilled = now;
        if bucket.tokens < 1.0 {
            return Verdict::Throttled;
        }
        bucket.tokens -= 1.0;
        bucket.used += 1;
        Verdict::Admitted
    }
}

/// Keeps each followed plan's limits (`(plan id, usage-plan key)`) in step with the local API
/// Gateway's, every second; a plan that cannot be read keeps its last limits.
pub async fn follow(
    plans: UsagePlans,
    apigateway: aws_sdk_apigateway::Client,
    followed: Vec<(String, String)>,
) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for (plan_id, key) in &followed {
            let Ok(plan) = apigateway
                .get_usage_plan()
                .usage_plan_id(plan_id)
                .send()
                .await
            else {
                continue;
            };
            let (Some(throttle), quota) = (plan.throttle(), plan.quota()) else {
                continue;
            };
            plans.set_limits(
                key,
                Limits {
                    rate_per_sec: throttle.rate_limit(),
                    burst: throttle.burst_limit().max(0) as u32,
                    quota_per_day: quota.map(|q| q.limit().max(0) as u64),
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn plans(quota: Option<u64>, start: Instant) -> UsagePlans {
        UsagePlans::new(
            [(
                "k".to_string(),
                Limits {
                    rate_per_sec: 2.0,
                    burst: 3,
                    quota_per_day: quota,
                },
            )],
            start,
        )
    }

    #[test]
    fn a_burst_passes_then_the_rate_refills() {
        let start = Instant::now();
        let plans = plans(None, start);
        let verdicts: Vec<Verdict> = (0..4)
            .map(|_| plans.admit_at(Some("k"), start, 1))
            .collect();
        assert_eq!(
            verdicts,
            [
                Verdict::Admitted,
                Verdict::Admitted,
                Verdict::Admitted,
                Verdict::Throttled
            ]
        );
        // Half a second at 2 per second: one more.
        let later = start + Duration::from_millis(500);
        assert_eq!(plans.admit_at(Some("k"), later, 1), Verdict::Admitted);
        assert_eq!(plans.admit_at(Some("k"), later, 1), Verdict::Throttled);
        // Never more than the burst, however long the pause.
        let much_later = start + Duration::from_secs(3600);
        let admitted = (0..10)
            .filter(|_| plans.admit_at(Some("k"), much_later, 1) == Verdict::Admitted)
            .count();
        assert_eq!(admitted, 3);
    }

    #[test]
    fn the_quota_counts_admitted_requests_per_day() {
        let start = Instant::now();
        let plans = plans(Some(2), start);
        assert_eq!(plans.admit_at(Some("k"), start, 1), Verdict::Admitted);
        assert_eq!(plans.admit_at(Some("k"), start, 1), Verdict::Admitted);
        assert_eq!(plans.admit_at(Some("k"), start, 1), Verdict::QuotaExceeded);
        let next_day = start + Duration::from_secs(10);
        assert_eq!(plans.admit_at(Some("k"), next_day, 2), Verdict::Admitted);
    }

    #[test]
    fn unknown_or_missing_keys_have_no_plan_unless_the_emulation_is_off() {
        let start = Instant::now();
        let plans = plans(None, start);
        assert_eq!(plans.admit_at(Some("other"), start, 1), Verdict::NoPlan);
        assert_eq!(plans.admit_at(None, start, 1), Verdict::NoPlan);
        assert_eq!(
            UsagePlans::off().admit_at(None, start, 1),
            Verdict::Admitted
        );
    }
}
