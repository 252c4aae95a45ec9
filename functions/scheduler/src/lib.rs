//! Scheduled jobs. Each EventBridge rule names its job in the event (`{"job": "sweep-reply-queues"}`);
//! an event naming no known job fails loudly instead of doing nothing.
//!
//! - `sweep-reply-queues` (hourly): deletes the reply queues of execution environments that are gone,
//!   i.e. queues under the reply prefix whose heartbeat tag is older than the idle limit. A live
//!   environment whose queue was swept anyway makes a new one.
//!
//! - `user-dates` (daily, just after midnight where HR dates are meant): keeps accounts in step with
//!   their HR dates, by the rule provisioning applies (`plan::enabled_on`): disables (and signs out,
//!   and revokes the tokens of) users whose end_date has passed, enables (and invites) users whose
//!   start_date has come. Accounts provisioning does not manage (no start_date) are left alone.
//!   Idempotent: a second run the same day finds nothing to change. Every change is audited.
//!
//! - `budget-alerts` (every five minutes): mails a department's contacts when its month's usage
//!   passes an alert threshold of its budget ([`budget_alerts`]).
//! - `usage-rollup` (daily, for yesterday; `"day"` names another) and `chargeback` (monthly, for the
//!   month before; `"month"` names another): usage per department, user, provider and model from the
//!   audit trail, into the reports bucket ([`chargeback`]).
//! - `usage-plans` (every fifteen minutes): puts each department's API Gateway usage plan back to
//!   what its settings say ([`usage_plans`]).

pub mod budget_alerts;
pub mod chargeback;
pub mod usage_plans;

use std::sync::Arc;
use std::time::Duration;

use gateway_shared::audit::{AdminAction, AuditEvent, AuditSink};
use gateway_shared::config::{self, ConfigError, Settings};
use gateway_shared::directory::{Directory, DirectorySettings};
use gateway_shared::provisioning::plan;
use gateway_shared::transport::queue::{sweep_reply_queues, MessageQueue};
use serde::Deserialize;
use serde_json::{json, Value};

/// Reply queues' name prefix, as the routes and the dispatcher use it.
pub const DEFAULT_REPLY_PREFIX: &str = "llm-gateway-reply-";
/// A reply queue unused this long belongs to an environment that is gone: environments refresh the
/// heartbeat far more often, and Lambda keeps an idle environment for well under an hour.
pub const DEFAULT_REPLY_IDLE: Duration = Duration::from_secs(3600);
/// Below this, a live but quiet environment could lose its queue on every sweep.
const MIN_REPLY_IDLE: Duration = Duration::from_secs(600);

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    pub reply_prefix: String,
    pub reply_idle: Duration,
    /// The user pool and its settings, for the date job (present when `COGNITO_USER_POOL_ID` is).
    pub directory: Option<DirectorySettings>,
    /// The budget tables (departments' settings, usage counters), for the alerts job.
    pub budget_tables: Option<(String, String)>,
    /// The audit bucket and its prefix, and the reports bucket, for the rollups.
    pub rollups: Option<RollupBuckets>,
    /// The departments' usage plans (`GATEWAY_USAGE_PLANS`), for the usage-plans job.
    pub usage_plans:
        Option<std::collections::BTreeMap<String, gateway_shared::usage_plans::DeployedPlan>>,
}

#[derive(Debug, Clone)]
pub struct RollupBuckets {
    pub audit_bucket: String,
    pub audit_prefix: String,
    pub reports_bucket: String,
}

impl SchedulerConfig {
    /// `GATEWAY_REPLY_QUEUE_PREFIX` (`llm-gateway-reply-`), `GATEWAY_REPLY_QUEUE_IDLE_SECS` (3600, at
    /// least 600), for the date job [`DirectorySettings`] (when `COGNITO_USER_POOL_ID` is set), and
    /// for the alerts job `GATEWAY_DEPARTMENT_TABLE` and `GATEWAY_USAGE_TABLE` (both or neither),
    /// for the rollups `GATEWAY_AUDIT_BUCKET` and `GATEWAY_REPORTS_BUCKET` (both or neither) and
    /// `GATEWAY_AUDIT_PREFIX` (`audit/`), for the usage-plans job `GATEWAY_USAGE_PLANS` (with the
    /// department table).
    pub fn from_settings(settings: &dyn Settings) -> Result<Self, ConfigError> {
        let reply_idle = config::duration_secs(
            settings,
            "GATEWAY_REPLY_QUEUE_IDLE_SECS",
            DEFAULT_REPLY_IDLE,
        )?;
        if reply_idle < MIN_REPLY_IDLE {
            return Err(ConfigError::Invalid {
                name: "GATEWAY_REPLY_QUEUE_IDLE_SECS",
                reason: format!(
                    "{} s would sweep the queues of quiet but live environments; at least {} s",
                    reply_idle.as_secs(),
                    MIN_REPLY_IDLE.as_secs()
                ),
            });
        }
        let reply_prefix = settings
            .get("GATEWAY_REPLY_QUEUE_PREFIX")
            .unwrap_or_else(|| DEFAULT_REPLY_PREFIX.into());
        if reply_prefix.len() < 4 {
            return Err(ConfigError::Invalid {
                name: "GATEWAY_REPLY_QUEUE_PREFIX",
                reason: "too short: a sweep must not reach queues that are not reply queues".into(),
            });
        }
        let directory = settings
            .get("COGNITO_USER_POOL_ID")
            .map(|_| DirectorySettings::from_settings(settings))
            .transpose()?;
        let budget_tables =
            match (
                settings.get("GATEWAY_DEPARTMENT_TABLE"),
                settings.get("GATEWAY_USAGE_TABLE"),
            ) {
                (Some(departments), Some(usage)) => Some((departments, usage)),
                (None, None) => None,
                _ => return Err(ConfigError::Invalid {
                    name: "GATEWAY_USAGE_TABLE",
                    reason:
                        "the alerts job needs both GATEWAY_DEPARTMENT_TABLE and GATEWAY_USAGE_TABLE"
                            .into(),
                }),
            };
        let rollups = match (
            settings.get("GATEWAY_AUDIT_BUCKET"),
            settings.get("GATEWAY_REPORTS_BUCKET"),
        ) {
            (Some(audit_bucket), Some(reports_bucket)) => Some(RollupBuckets {
                audit_bucket,
                reports_bucket,
                audit_prefix: settings
                    .get("GATEWAY_AUDIT_PREFIX")
                    .unwrap_or_else(|| "audit/".into()),
            }),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Invalid {
                    name: "GATEWAY_REPORTS_BUCKET",
                    reason: "the rollups need both GATEWAY_AUDIT_BUCKET and GATEWAY_REPORTS_BUCKET"
                        .into(),
                })
            }
        };
        let usage_plans = gateway_shared::usage_plans::deployed_plans(settings)?;
        if usage_plans.is_some() && budget_tables.is_none() {
            return Err(ConfigError::Invalid {
                name: gateway_shared::usage_plans::SETTING,
                reason:
                    "the usage-plans job reads the plans' settings from GATEWAY_DEPARTMENT_TABLE"
                        .into(),
            });
        }
        Ok(SchedulerConfig {
            reply_prefix,
            reply_idle,
            directory,
            budget_tables,
            rollups,
            usage_plans,
        })
    }
}

/// The jobs a rule can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Job {
    SweepReplyQueues,
    UserDates,
    BudgetAlerts,
    UsageRollup,
    Chargeback,
    UsagePlans,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JobEvent {
    job: Job,
    /// `usage-rollup`: the day (`YYYY-MM-DD`; default yesterday, UTC).
    #[serde(default)]
    day: Option<String>,
    /// `chargeback`: the month (`YYYY-MM`; default the month before).
    #[serde(default)]
    month: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("the event names no known job ({0}); expected {{\"job\": ...}} with one of sweep-reply-queues, user-dates, budget-alerts, usage-rollup, chargeback, usage-plans")]
    UnknownJob(String),
    #[error("sweeping reply queues failed: {0}")]
    Sweep(String),
    #[error("the date job is not configured (COGNITO_USER_POOL_ID and the directory settings)")]
    NoDirectory,
    #[error("the date job: {0}")]
    Directory(#[from] gateway_shared::directory::DirectoryError),
    #[error("the date job could not change {} user(s): {}", .0.len(), .0.join("; "))]
    Failed(Vec<String>),
    #[error("the alerts job is not configured (GATEWAY_DEPARTMENT_TABLE and GATEWAY_USAGE_TABLE)")]
    NoBudgets,
    #[error("the alerts job: {0}")]
    Alerts(String),
    #[error("the rollups are not configured (GATEWAY_AUDIT_BUCKET and GATEWAY_REPORTS_BUCKET)")]
    NoRollups,
    #[error("the rollup: {0}")]
    Rollup(String),
    #[error(
        "the usage-plans job is not configured (GATEWAY_USAGE_PLANS and GATEWAY_DEPARTMENT_TABLE)"
    )]
    NoUsagePlans,
    #[error("the usage-plans job: {0}")]
    UsagePlans(String),
}

/// What the date job needs: the directory, its settings, and where changes are audited.
pub struct Users {
    pub directory: Directory,
    pub settings: DirectorySettings,
    pub audit: Arc<dyn AuditSink>,
}

pub struct Scheduler {
    config: SchedulerConfig,
    sqs: Arc<dyn MessageQueue>,
    users: Option<Users>,
    alerts: Option<budget_alerts::BudgetAlerts>,
    chargeback: Option<chargeback::Chargeback>,
    plans: Option<usage_plans::PlanSync>,
}

impl Scheduler {
    pub fn new(config: SchedulerConfig, sqs: Arc<dyn MessageQueue>) -> Self {
        Scheduler {
            config,
            sqs,
            users: None,
            alerts: None,
            chargeback: None,
            plans: None,
        }
    }

    /// With the departments' usage plans, auditing what the job changes to `audit`.
    pub fn with_usage_plans(
        mut self,
        sdk: &aws_config::SdkConfig,
        audit: Arc<dyn AuditSink>,
    ) -> Self {
        self.plans = match (&self.config.usage_plans, &self.config.budget_tables) {
            (Some(plans), Some((departments, _))) => Some(usage_plans::PlanSync {
                plans: gateway_shared::usage_plans::UsagePlans::from_sdk(sdk, plans.clone()),
                settings: gateway_shared::budgets::SettingsStore::from_sdk(
                    sdk,
                    departments.clone(),
                ),
                audit,
            }),
            _ => None,
        };
        self
    }

    /// With the rollups' buckets.
    pub fn with_rollups(mut self, sdk: &aws_config::SdkConfig) -> Self {
        self.chargeback = self.config.rollups.clone().map(|b| chargeback::Chargeback {
            audit: Box::new(gateway_shared::audit::digest::S3AuditStore::new(
                aws_sdk_s3::Client::new(sdk),
                b.audit_bucket,
            )),
            audit_prefix: b.audit_prefix,
            s3: aws_sdk_s3::Client::new(sdk),
            reports_bucket: b.reports_bucket,
        });
        self
    }

    /// With the alerts job's tables, mailing from the directory settings' SES identity if any.
    pub fn with_budget_alerts(mut self, sdk: &aws_config::SdkConfig) -> Self {
        self.alerts = self
            .config
            .budget_tables
            .clone()
            .map(|(departments, usage)| budget_alerts::BudgetAlerts {
                settings: gateway_shared::budgets::SettingsStore::from_sdk(sdk, departments),
                counters: gateway_shared::budgets::UsageCounters::from_sdk(sdk, usage),
                mailer: self
                    .config
                    .directory
                    .as_ref()
                    .and_then(|d| d.mail_from.clone())
                    .map(|from| gateway_shared::mail::Mailer::new(sdk, from, None)),
            });
        self
    }

    /// With the date job's directory (built from the configuration's directory settings).
    pub fn with_users(mut self, sdk: &aws_config::SdkConfig, audit: Arc<dyn AuditSink>) -> Self {
        self.users = self.config.directory.clone().map(|settings| Users {
            directory: settings.directory(sdk),
            settings,
            audit,
        });
        self
    }

    /// Where HR dates are meant (minutes east of UTC), for the daily rule's time.
    pub fn utc_offset_minutes(&self) -> i32 {
        self.config
            .directory
            .as_ref()
            .map(|d| d.utc_offset_minutes)
            .unwrap_or(540)
    }

    /// Runs the job the event names at `now_millis`; answers what it did.
    pub async fn handle(&self, event: Value, now_millis: u64) -> Result<Value, SchedulerError> {
        let job: JobEvent = serde_json::from_value(event.clone())
            .map_err(|e| SchedulerError::UnknownJob(format!("{e}")))?;
        match job.job {
            Job::SweepReplyQueues => {
                let deleted = self
                    .sweep(&self.config.reply_prefix, self.config.reply_idle)
                    .await?;
                tracing::info!(
                    job = "sweep-reply-queues",
                    deleted = deleted.len(),
                    "job done"
                );
                Ok(json!({"job": "sweep-reply-queues", "deleted": deleted}))
            }
            Job::UserDates => self.user_dates(now_millis).await,
            Job::BudgetAlerts => {
                let alerts = self.alerts.as_ref().ok_or(SchedulerError::NoBudgets)?;
                alerts.run(now_millis).await.map_err(SchedulerError::Alerts)
            }
            Job::UsageRollup => {
                let rollups = self.chargeback.as_ref().ok_or(SchedulerError::NoRollups)?;
                let day = job.day.unwrap_or_else(|| chargeback::yesterday(now_millis));
                let rollup = rollups.daily(&day).await.map_err(SchedulerError::Rollup)?;
                Ok(
                    json!({"job": "usage-rollup", "day": day, "events": rollup.events,
                          "report": chargeback::daily_key(&day)}),
                )
            }
            Job::UsagePlans => {
                let plans = self.plans.as_ref().ok_or(SchedulerError::NoUsagePlans)?;
                plans
                    .run(now_millis)
                    .await
                    .map_err(SchedulerError::UsagePlans)
            }
            Job::Chargeback => {
                let rollups = self.chargeback.as_ref().ok_or(SchedulerError::NoRollups)?;
                let month = job
                    .month
                    .unwrap_or_else(|| chargeback::previous_month(now_millis));
                rollups
                    .monthly(&month)
                    .await
                    .map_err(SchedulerError::Rollup)
            }
        }
    }

    /// Enables and disables accounts whose HR dates say so today.
    pub async fn user_dates(&self, now_millis: u64) -> Result<Value, SchedulerError> {
        let users = self.users.as_ref().ok_or(SchedulerError::NoDirectory)?;
        let today = users.settings.today(now_millis);
        let run = format!("user-dates-{now_millis}");
        let (mut enabled, mut disabled, mut failed) = (Vec::new(), Vec::new(), Vec::new());
        let all = users
            .directory
            .users(users.settings.department_ids().into_iter())
            .await?;
        for user in all.values() {
            let Some((status, start, end)) = plan::lifecycle(&user.attributes) else {
                continue;
            };
            let (wanted, why) = plan::enabled_on(status, start, end, today);
            if wanted == user.enabled {
                continue;
            }
            let result = users
                .directory
                .set_enabled(&user.username, wanted, now_millis / 1000)
                .await;
            let mut event = AuditEvent::admin(
                &run,
                AdminAction {
                    actor: "scheduler".into(),
                    action: if wanted {
                        "users.enable"
                    } else {
                        "users.disable"
                    }
                    .into(),
                    target: Some(user.username.clone()),
                    changed: vec!["enabled".into()],
                    source: Some("user-dates".into()),
                },
                if result.is_ok() { 200 } else { 500 },
            );
            match result {
                Ok(()) => {
                    event.reason = Some(why.into());
                    if wanted {
                        enabled.push(user.username.clone());
                    } else {
                        disabled.push(user.username.clone());
                    }
                }
                Err(error) => {
                    event.reason = Some(error.to_string());
                    failed.push(format!("{}: {error}", user.username));
                }
            }
            users.audit.record(event);
        }
        tracing::info!(job = "user-dates", %today, enabled = enabled.len(), disabled = disabled.len(), failed = failed.len(), "job done");
        if !failed.is_empty() {
            // The invocation fails: the rule retries (the job is idempotent) and the errors alarm fires.
            return Err(SchedulerError::Failed(failed));
        }
        Ok(
            json!({"job": "user-dates", "today": today.to_string(), "enabled": enabled, "disabled": disabled}),
        )
    }

    /// The sweep with an explicit prefix and idle limit (the local stack's control endpoint narrows
    /// them for tests); the scheduled job uses the configured ones.
    pub async fn sweep(&self, prefix: &str, idle: Duration) -> Result<Vec<String>, SchedulerError> {
        sweep_reply_queues(self.sqs.as_ref(), prefix, idle)
            .await
            .map_err(SchedulerError::Sweep)
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a panic is the failure report"
    )]

    use std::collections::HashMap;

    use gateway_shared::testing::FakeQueue;
    use gateway_shared::transport::queue::{HEARTBEAT_TAG, REPLY_QUEUE_TAG};

    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn settings_default_and_refuse_a_sweep_that_would_reach_live_queues() {
        let config = SchedulerConfig::from_settings(&settings(&[])).unwrap();
        assert_eq!(config.reply_prefix, DEFAULT_REPLY_PREFIX);
        assert_eq!(config.reply_idle, DEFAULT_REPLY_IDLE);
        let error =
            SchedulerConfig::from_settings(&settings(&[("GATEWAY_REPLY_QUEUE_IDLE_SECS", "60")]))
                .unwrap_err();
        assert!(error.to_string().contains("at least 600"), "{error}");
        assert!(
            SchedulerConfig::from_settings(&settings(&[("GATEWAY_REPLY_QUEUE_PREFIX", "l")]))
                .is_err()
        );
    }

    #[tokio::test]
    async fn the_sweep_job_deletes_only_idle_reply_queues_under_the_prefix() {
        let sqs = Arc::new(FakeQueue::default());
        let now = (gateway_shared::audit::clock::now_millis() / 1000).to_string();
        let queues: [(&str, &[(&str, &str)]); 4] = [
            (
                "llm-gateway-reply-gone",
                &[(REPLY_QUEUE_TAG, "true"), (HEARTBEAT_TAG, "1")],
            ),
            (
                "llm-gateway-reply-live",
                &[(REPLY_QUEUE_TAG, "true"), (HEARTBEAT_TAG, &now)],
            ),
            ("llm-gateway-reply-untagged", &[]),
            (
                "another-prefix-gone",
                &[(REPLY_QUEUE_TAG, "true"), (HEARTBEAT_TAG, "1")],
            ),
        ];
        for (name, tags) in queues {
            let tags = tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            sqs.create_queue(name, Vec::new(), tags).await.unwrap();
        }
        let scheduler = Scheduler::new(
            SchedulerConfig::from_settings(&settings(&[])).unwrap(),
            sqs.clone(),
        );
        let answer = scheduler
            .handle(json!({"job": "sweep-reply-queues"}), 0)
            .await
            .unwrap();
        let deleted: Vec<String> = serde_json::from_value(answer["deleted"].clone()).unwrap();
        assert_eq!(deleted, [FakeQueue::url_of("llm-gateway-reply-gone")]);
    }

    #[tokio::test]
    async fn the_date_job_refuses_to_run_without_a_directory() {
        let scheduler = Scheduler::new(
            SchedulerConfig::from_settings(&settings(&[])).unwrap(),
            Arc::new(FakeQueue::default()),
        );
        let error = scheduler
            .handle(json!({"job": "user-dates"}), 0)
            .await
            .unwrap_err();
        assert!(matches!(error, SchedulerError::NoDirectory), "{error}");
    }

    #[test]
    fn a_pool_without_the_directory_settings_is_a_configuration_error() {
        let error = SchedulerConfig::from_settings(&settings(&[("COGNITO_USER_POOL_ID", "p")]))
            .unwrap_err();
        assert!(error.to_string().contains("GATEWAY_DEPARTMENTS"), "{error}");
    }

    #[tokio::test]
    async fn an_event_naming_no_known_job_fails() {
        let scheduler = Scheduler::new(
            SchedulerConfig::from_settings(&settings(&[])).unwrap(),
            Arc::new(FakeQueue::default()),
        );
        for event in [
            json!({}),
            json!({"job": "delete-everything"}),
            json!({"job": "sweep-reply-queues", "prefix": ""}),
        ] {
            let error = scheduler.handle(event.clone(), 0).await.unwrap_err();
            assert!(matches!(error, SchedulerError::UnknownJob(_)), "{event}");
        }
    }
}
