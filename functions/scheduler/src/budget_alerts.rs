//! `budget-alerts` (every few minutes): tells a department's contacts when its month's usage passes
//! one of its alert thresholds (80 %, 100 % by default) of a monthly budget, once per threshold and
//! month. The usage is the department's month counter (settled usage plus requests in flight).
//!
//! Once only: the job claims a marker item per (department, month, threshold) before it sends; if the
//! mail fails the claim is given back, so the next run tries again.

use gateway_shared::budgets::counters::{month_key, month_of};
use gateway_shared::budgets::{self, DepartmentSettings, SettingsStore, UsageCounters};
use gateway_shared::mail::Mailer;
use serde_json::{json, Value};

/// What the job needs: the settings, the counters and (optionally) a mailer.
pub struct BudgetAlerts {
    pub settings: SettingsStore,
    pub counters: UsageCounters,
    /// None: no SES identity; alerts are logged, not mailed.
    pub mailer: Option<Mailer>,
}

/// One threshold a department passed.
#[derive(Debug, Clone, PartialEq)]
pub struct Crossed {
    pub threshold: u32,
    /// The share of the budget used (the larger of tokens and cost), in percent.
    pub percent: f64,
}

/// The thresholds `settings` has passed with `tokens` and `cost_micros` used this month.
pub fn crossed(settings: &DepartmentSettings, tokens: i64, cost_micros: i64) -> Vec<Crossed> {
    let share =
        |used: f64, limit: Option<f64>| limit.filter(|l| *l > 0.0).map(|l| 100.0 * used / l);
    let percent = [
        share(
            tokens as f64,
            settings.budget.monthly_tokens.map(|t| t as f64),
        ),
        share(
            budgets::usd(cost_micros.max(0) as u64),
            settings.budget.monthly_cost_usd,
        ),
    ]
    .into_iter()
    .flatten()
    .fold(None::<f64>, |max, p| Some(max.map_or(p, |m| m.max(p))));
    let Some(percent) = percent else {
        return Vec::new();
    };
    settings
        .alert_thresholds_percent
        .iter()
        .filter(|t| percent >= f64::from(**t))
        .map(|t| Crossed {
            threshold: *t,
            percent,
        })
        .collect()
}

fn message(settings: &DepartmentSettings, month: &str, crossed: &Crossed) -> (String, String) {
    let subject = format!(
        "LLM Gateway: 部門 {} が予算の {}% に達しました / department {} reached {}% of its budget",
        settings.department, crossed.threshold, settings.department, crossed.threshold
    );
    let limits = format!(
        "monthly tokens: {}, monthly cost (USD): {}",
        settings
            .budget
            .monthly_tokens
            .map_or("-".into(), |t| t.to_string()),
        settings
            .budget
            .monthly_cost_usd
            .map_or("-".into(), |c| format!("{c:.2}")),
    );
    let body = format!(
        "部門 {dept} の {month} の利用が予算の {used:.1}% になりました（通知のしきい値 {t}%）。\n\
         予算を超えるリクエストはゲートウェイが拒否します（HTTP 429）。\n\
         予算: {limits}\n\n\
         ---\n\
         Department {dept} has used {used:.1}% of its budget for {month} (alert threshold {t}%).\n\
         Requests past the budget are refused by the gateway (HTTP 429).\n\
         Budget: {limits}\n",
        dept = settings.department,
        used = crossed.percent,
        t = crossed.threshold,
    );
    (subject, body)
}

impl BudgetAlerts {
    /// Runs once at `now_ms`: answers the alerts sent; fails if any could not be sent (after giving
    /// their claims back), so the rule's retries and error alarm see it.
    pub async fn run(&self, now_ms: u64) -> Result<Value, String> {
        let month = month_of(now_ms);
        let all = self.settings.list().await.map_err(|e| e.to_string())?;
        let mut sent = Vec::new();
        let mut failed = Vec::new();
        for settings in all.iter().filter(|s| !s.contacts.is_empty()) {
            let (tokens, cost, _) = self
                .counters
                .read(&month_key("d", &settings.department, &month))
                .await
                .map_err(|e| e.to_string())?;
            for crossed in crossed(settings, tokens, cost) {
                let marker = format!("a#{}#{month}#{}", settings.department, crossed.threshold);
                if !self
                    .counters
                    .claim(&marker, now_ms)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    continue;
                }
                let (subject, body) = message(settings, &month, &crossed);
                let to: Vec<&str> = settings.contacts.iter().map(String::as_str).collect();
                let result = match &self.mailer {
                    Some(mailer) => mailer.send(&to, &subject, &body).await,
                    None => Ok(()),
                };
                match result {
                    Ok(()) => {
                        tracing::warn!(department = %settings.department, month, threshold = crossed.threshold, percent = crossed.percent, "budget threshold passed");
                        sent.push(json!({
                            "department": settings.department,
                            "threshold": crossed.threshold,
                            "percent": crossed.percent,
                            "mailed": self.mailer.is_some(),
                        }));
                    }
                    Err(error) => {
                        tracing::error!(department = %settings.department, %error, "budget alert not sent; the next run retries");
                        if let Err(release) = self.counters.release(&marker).await {
                            tracing::error!(%release, marker, "alert claim not given back");
                        }
                        failed.push(format!("{}: {error}", settings.department));
                    }
                }
            }
        }
        if failed.is_empty() {
            Ok(json!({"job": "budget-alerts", "month": month, "sent": sent}))
        } else {
            Err(failed.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_shared::budgets::Limits;

    fn settings(tokens: Option<u64>, cost: Option<f64>) -> DepartmentSettings {
        DepartmentSettings {
            department: "sales".into(),
            budget: Limits {
                tokens_per_minute: None,
                monthly_tokens: tokens,
                monthly_cost_usd: cost,
            },
            alert_thresholds_percent: vec![50, 80, 100],
            contacts: vec!["lead@example.com".into()],
            ..Default::default()
        }
    }

    #[test]
    fn the_larger_share_of_tokens_and_cost_decides() {
        let thresholds = |s: &DepartmentSettings, t, c| -> Vec<u32> {
            crossed(s, t, c).into_iter().map(|c| c.threshold).collect()
        };
        assert_eq!(thresholds(&settings(Some(1000), None), 799, 0), [50]);
        assert_eq!(thresholds(&settings(Some(1000), None), 800, 0), [50, 80]);
        // 10 USD budget, 10.5 USD used; tokens well under.
        assert_eq!(
            thresholds(&settings(Some(1000), Some(10.0)), 1, 10_500_000),
            [50, 80, 100]
        );
        assert!(
            crossed(&settings(None, None), 10, 10).is_empty(),
            "no monthly budget, no alert"
        );
    }

    #[test]
    fn the_message_names_the_department_the_share_and_the_budget() {
        let s = settings(Some(1000), Some(12.5));
        let (subject, body) = message(
            &s,
            "2026-11",
            &Crossed {
                threshold: 80,
                percent: 83.4,
            },
        );
        assert!(
            subject.contains("sales") && subject.contains("80%"),
            "{subject}"
        );
        assert!(
            body.contains("83.4%") && body.contains("2026-11") && body.contains("12.50"),
            "{body}"
        );
    }
}
