//! `usage-plans` (every fifteen minutes): puts each department's API Gateway usage plan to what its
//! settings say (the admin API's `usage_plan`, else the deployment's limits). The admin API applies a
//! change at once; this job mends what happened to a plan since: an `UpdateUsagePlan` API Gateway
//! refused at the time, a deploy that put a department's configured limits back, a change by hand.
//! Every plan it changes is audited.

use std::sync::Arc;

use gateway_shared::audit::{AdminAction, AuditEvent, AuditSink};
use gateway_shared::budgets::SettingsStore;
use gateway_shared::usage_plans::UsagePlans;
use serde_json::{json, Value};

pub struct PlanSync {
    pub plans: UsagePlans,
    pub settings: SettingsStore,
    pub audit: Arc<dyn AuditSink>,
}

impl PlanSync {
    pub async fn run(&self, now_millis: u64) -> Result<Value, String> {
        let stored = self.settings.list().await.map_err(|e| e.to_string())?;
        let run = format!("usage-plans-{now_millis}");
        let (mut applied, mut failed, mut checked) = (Vec::new(), Vec::new(), 0);
        for (department, deployed) in self.plans.departments() {
            checked += 1;
            let own = stored
                .iter()
                .find(|s| &s.department == department)
                .and_then(|s| s.usage_plan);
            let Some(wanted) = self.plans.wanted(department, own) else {
                continue;
            };
            match self.plans.reconcile(&deployed.id, &wanted).await {
                Ok(false) => {}
                Ok(true) => {
                    tracing::warn!(
                        department,
                        plan = deployed.id,
                        "usage plan put back to its settings"
                    );
                    let mut event = AuditEvent::admin(
                        &run,
                        AdminAction {
                            actor: "scheduler".into(),
                            action: "departments.usage_plan.apply".into(),
                            target: Some(department.clone()),
                            changed: vec!["usage_plan".into()],
                            source: Some("usage-plans".into()),
                        },
                        200,
                    );
                    event.reason = Some(format!(
                        "the plan differed from the department's {} limits",
                        if own.is_some() {
                            "settings'"
                        } else {
                            "deployment's"
                        }
                    ));
                    self.audit.record(event);
                    applied.push(department.clone());
                }
                Err(error) => {
                    tracing::error!(%error, department, "usage plan not applied");
                    failed.push(format!("{department}: {error}"));
                }
            }
        }
        if !failed.is_empty() {
            return Err(failed.join("; "));
        }
        Ok(json!({"job": "usage-plans", "checked": checked, "applied": applied}))
    }
}
