//! Departments' API Gateway usage plans (rate, burst, daily quota), changed through the admin API.
//!
//! The deployment creates one plan per department from `config/gateway.json` and names them, with the
//! limits it gave them, in `GATEWAY_USAGE_PLANS` (`{"<department>": {"id": "<plan id>", "rate_limit":
//! .., "burst_limit": .., "quota_per_day": ..}}`). A department's settings may carry its own
//! `usage_plan` ([`PlanLimits`]): the admin API applies it at once (`UpdateUsagePlan`), and the
//! scheduler's `usage-plans` job puts every plan back to what its settings say when something else
//! changed it (a deploy puts the configured limits back on a plan whose configuration changed).

use std::collections::BTreeMap;

use aws_sdk_apigateway::types::{Op, PatchOperation};
use serde::{Deserialize, Serialize};

use crate::budgets::settings::PlanLimits;
use crate::config::{ConfigError, Settings};

pub const SETTING: &str = "GATEWAY_USAGE_PLANS";

/// A department's plan as deployed: its id, and the limits the configuration gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployedPlan {
    pub id: String,
    rate_limit: u32,
    burst_limit: u32,
    quota_per_day: u64,
}

impl DeployedPlan {
    pub fn new(id: String, limits: PlanLimits) -> Self {
        DeployedPlan {
            id,
            rate_limit: limits.rate_limit,
            burst_limit: limits.burst_limit,
            quota_per_day: limits.quota_per_day,
        }
    }

    pub fn limits(&self) -> PlanLimits {
        PlanLimits {
            rate_limit: self.rate_limit,
            burst_limit: self.burst_limit,
            quota_per_day: self.quota_per_day,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("API Gateway usage plan {plan_id}: {message}")]
pub struct PlanError {
    pub plan_id: String,
    pub message: String,
}

/// The departments' plans and the client that changes them.
#[derive(Clone)]
pub struct UsagePlans {
    client: aws_sdk_apigateway::Client,
    plans: BTreeMap<String, DeployedPlan>,
}

/// Reads [`SETTING`]: `None` when unset (no plans to manage).
pub fn deployed_plans(
    settings: &dyn Settings,
) -> Result<Option<BTreeMap<String, DeployedPlan>>, ConfigError> {
    let Some(text) = settings.get(SETTING) else {
        return Ok(None);
    };
    let invalid = |reason: String| ConfigError::Invalid {
        name: SETTING,
        reason,
    };
    let plans: BTreeMap<String, DeployedPlan> = serde_json::from_str(&text).map_err(|e| {
        invalid(format!(
            "not {{department: {{id, rate_limit, burst_limit, quota_per_day}}}}: {e}"
        ))
    })?;
    if let Some((department, _)) = plans.iter().find(|(_, p)| p.id.trim().is_empty()) {
        return Err(invalid(format!("department {department}'s plan has no id")));
    }
    Ok(Some(plans))
}

impl UsagePlans {
    pub fn new(client: aws_sdk_apigateway::Client, plans: BTreeMap<String, DeployedPlan>) -> Self {
        UsagePlans { client, plans }
    }

    pub fn from_sdk(sdk: &aws_config::SdkConfig, plans: BTreeMap<String, DeployedPlan>) -> Self {
        UsagePlans::new(aws_sdk_apigateway::Client::new(sdk), plans)
    }

    /// From [`SETTING`]; `None` when unset.
    pub fn from_settings(
        settings: &dyn Settings,
        sdk: &aws_config::SdkConfig,
    ) -> Result<Option<Self>, ConfigError> {
        Ok(deployed_plans(settings)?.map(|plans| UsagePlans::from_sdk(sdk, plans)))
    }

    pub fn deployed(&self, department: &str) -> Option<&DeployedPlan> {
        self.plans.get(department)
    }

    pub fn departments(&self) -> impl Iterator<Item = (&String, &DeployedPlan)> {
        self.plans.iter()
    }

    /// What `department`'s plan should be: its settings' plan, else the deployment's.
    pub fn wanted(
        &self,
        department: &str,
        settings_plan: Option<PlanLimits>,
    ) -> Option<PlanLimits> {
        settings_plan.or_else(|| self.deployed(department).map(DeployedPlan::limits))
    }

    /// The plan's limits as API Gateway has them now (0 for a limit it has none of).
    pub async fn current(&self, plan_id: &str) -> Result<PlanLimits, PlanError> {
        let plan = self
            .client
            .get_usage_plan()
            .usage_plan_id(plan_id)
            .send()
            .await
            .map_err(|e| plan_error(plan_id, e))?;
        let throttle = plan.throttle();
        let quota = plan.quota();
        Ok(PlanLimits {
            rate_limit: throttle
                .map(|t| t.rate_limit())
                .filter(|r| r.is_finite() && *r >= 0.0)
                .map(|r| r.round() as u32)
                .unwrap_or(0),
            burst_limit: throttle.map(|t| t.burst_limit()).unwrap_or(0).max(0) as u32,
            quota_per_day: match quota {
                Some(q) if q.period().is_some_and(|p| p.as_str() == "DAY") => {
                    q.limit().max(0) as u64
                }
                _ => 0,
            },
        })
    }

    /// Sets the plan's throttle and a daily quota.
    pub async fn apply(&self, plan_id: &str, limits: &PlanLimits) -> Result<(), PlanError> {
        let replace = |path: &str, value: String| {
            PatchOperation::builder()
                .op(Op::Replace)
                .path(path)
                .value(value)
                .build()
        };
        self.client
            .update_usage_plan()
            .usage_plan_id(plan_id)
            .patch_operations(replace(
                "/throttle/rateLimit",
                limits.rate_limit.to_string(),
            ))
            .patch_operations(replace(
                "/throttle/burstLimit",
                limits.burst_limit.to_string(),
            ))
            .patch_operations(replace("/quota/limit", limits.quota_per_day.to_string()))
            .patch_operations(replace("/quota/period", "DAY".into()))
            .send()
            .await
            .map_err(|e| plan_error(plan_id, e))?;
        Ok(())
    }

    /// Puts `department`'s plan to `wanted` unless it is there already; whether it changed it.
    pub async fn reconcile(&self, plan_id: &str, wanted: &PlanLimits) -> Result<bool, PlanError> {
        if self.current(plan_id).await? == *wanted {
            return Ok(false);
        }
        self.apply(plan_id, wanted).await?;
        Ok(true)
    }
}

fn plan_error<E: std::error::Error + 'static>(plan_id: &str, error: E) -> PlanError {
    PlanError {
        plan_id: plan_id.to_string(),
        message: aws_sdk_apigateway::error::DisplayErrorContext(error).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(value: &str) -> HashMap<String, String> {
        HashMap::from([(SETTING.to_string(), value.to_string())])
    }

    #[test]
    fn the_deployed_plans_are_read_with_their_limits() {
        let plans = deployed_plans(&settings(
            r#"{"sales": {"id": "abc123", "rate_limit": 10, "burst_limit": 20, "quota_per_day": 20000}}"#,
        ))
        .unwrap()
        .unwrap();
        assert_eq!(plans["sales"].id, "abc123");
        assert_eq!(
            plans["sales"].limits(),
            PlanLimits {
                rate_limit: 10,
                burst_limit: 20,
                quota_per_day: 20000
            }
        );
        assert!(deployed_plans(&HashMap::<String, String>::new())
            .unwrap()
            .is_none());
        for bad in [
            "[]",
            r#"{"sales": {"id": "", "rate_limit": 1, "burst_limit": 1, "quota_per_day": 1}}"#,
            r#"{"sales": {"id": "x", "rate_limit": 1}}"#,
        ] {
            assert!(deployed_plans(&settings(bad)).is_err(), "{bad}");
        }
    }
}
