//! The route functions' budget check ([`crate::proxy::Admission`]): the caller's department
//! settings from memory, the request's worst case from its body, one round of conditional updates reserving it.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::counters::{CounterError, Refused};
use super::demand::{metering, Call, Metering};
use super::{SettingsList, SettingsStore, UsageCounters};
use crate::audit::BudgetReservation;
use crate::config::{self, ConfigError, Settings};
use crate::error::{ErrorKind, GatewayError};
use crate::pricing::PriceTable;
use crate::provisioning::rows::Date;
use crate::proxy::{Admission, AdmissionRequest};

/// How old the routes' copy of the department settings may be, by default: a changed budget
/// applies within this long.
pub const DEFAULT_SETTINGS_CACHE: Duration = Duration::from_secs(30);

pub struct Gate {
    settings: SettingsList,
    counters: UsageCounters,
    prices: Arc<PriceTable>,
}

impl Gate {
    pub fn new(settings: SettingsList, counters: UsageCounters, prices: Arc<PriceTable>) -> Self {
        Gate {
            settings,
            counters,
            prices,
        }
    }

    /// `GATEWAY_USAGE_TABLE` and `GATEWAY_DEPARTMENT_TABLE` (both, or neither: no budgets),
    /// `GATEWAY_SETTINGS_CACHE_SECS` (30, 1 to 300), `GATEWAY_PRICE_FILE` (optional). Loads the
    /// settings once before the first request (a failure is retried by the first request).
    pub async fn from_settings(
        settings: &dyn Settings,
        sdk: &aws_config::SdkConfig,
    ) -> Result<Option<Gate>, ConfigError> {
        let (usage, departments) = match (
            settings.get("GATEWAY_USAGE_TABLE"),
            settings.get("GATEWAY_DEPARTMENT_TABLE"),
        ) {
            (None, None) => return Ok(None),
            (Some(usage), Some(departments)) => (usage, departments),
            _ => {
                return Err(ConfigError::Invalid {
                    name: "GATEWAY_USAGE_TABLE",
                    reason: "budgets need both GATEWAY_USAGE_TABLE and GATEWAY_DEPARTMENT_TABLE"
                        .into(),
                })
            }
        };
        let ttl = config::duration_secs(
            settings,
            "GATEWAY_SETTINGS_CACHE_SECS",
            DEFAULT_SETTINGS_CACHE,
        )?;
        if ttl.is_zero() || ttl > Duration::from_secs(300) {
            return Err(ConfigError::Invalid {
                name: "GATEWAY_SETTINGS_CACHE_SECS",
                reason: "between 1 and 300 seconds".into(),
            });
        }
        let list = SettingsList::new(SettingsStore::from_sdk(sdk, departments), ttl);
        if let Err(error) = list.start("department settings").await {
            tracing::warn!(%error, "department settings not loaded at init");
        }
        Ok(Some(Gate::new(
            list,
            UsageCounters::from_sdk(sdk, usage),
            Arc::new(PriceTable::from_settings(settings)?),
        )))
    }

    async fn check(
        &self,
        request: AdmissionRequest<'_>,
    ) -> Result<Option<BudgetReservation>, GatewayError> {
        let Some(department) = request.principal.department.as_deref() else {
            return Ok(None);
        };
        let unavailable = |error: &dyn std::fmt::Display| {
            tracing::error!(%error, "budgets could not be checked");
            // Fails closed: a department with a budget never spends unchecked.
            GatewayError::new(
                ErrorKind::Internal,
                "the gateway could not check your department's budget; try again",
            )
        };
        let settings = match self.settings.get(department).await {
            Ok(Some(settings)) => settings,
            Ok(None) => return Ok(None),
            Err(error) => return Err(unavailable(&error)),
        };
        if settings.budget.is_empty() && settings.user_budget.is_empty() {
            return Ok(None);
        }
        let now = crate::audit::clock::now_millis();
        let day = Date::from_days_since_epoch((now / 86_400_000) as i64);
        let call = Call {
            provider: request.provider,
            method: request.method,
            operation: request.operation,
            region: request.region,
            body: request.body,
        };
        let demand = match metering(call, &self.prices, day) {
            Metering::Unmetered => return Ok(None),
            Metering::Unbudgetable(reason) => {
                return Err(GatewayError::new(
                    ErrorKind::Forbidden,
                    format!("Forbidden: department {department} has a budget, and {reason}"),
                ))
            }
            Metering::Metered(demand) => demand,
        };
        match self
            .counters
            .reserve(&settings, &request.principal.subject, demand, now)
            .await
        {
            Ok(reservation) => Ok(reservation),
            Err(CounterError::Refused(Refused::OverBudget(message))) => {
                Err(GatewayError::new(ErrorKind::RateLimited, message))
            }
            Err(CounterError::Refused(Refused::Unpriced(message))) => {
                Err(GatewayError::new(ErrorKind::Forbidden, message))
            }
            Err(error @ CounterError::Store(_)) => Err(unavailable(&error)),
        }
    }
}

impl Admission for Gate {
    fn admit<'a>(
        &'a self,
        request: AdmissionRequest<'a>,
    ) -> BoxFuture<'a, Result<Option<BudgetReservation>, GatewayError>> {
        Box::pin(self.check(request))
    }
}
