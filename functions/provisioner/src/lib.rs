//! The provisioner (S3 "Object Created" events from the provisioning bucket, through EventBridge): an
//! age-encrypted HR file under
//! `incoming/` is applied to the user pool, one under `dry-run/` is only planned; either way a per-row
//! report (JSON and CSV) goes to the reports bucket. A file refused whole (not encrypted, another key,
//! damaged, not the Appendix 2 columns, undecodable) applies nothing and says why in its report.
//!
//! Runs are idempotent: each row is planned against the directory as it is now, so the same file twice
//! changes nothing, and a run cut off by the timeout is finished by the retry without duplicates.

pub mod config;
pub mod decrypt;
pub mod report;

use std::collections::BTreeMap;
use std::sync::Arc;

use gateway_shared::audit::{AdminAction, AuditEvent, AuditSink};
use gateway_shared::directory::{self, Directory};
use gateway_shared::provisioning::plan::{self, DirectoryUser, PlannedRow};
use gateway_shared::provisioning::{self as provisioning, Rejection};
use serde::Deserialize;
use serde_json::{json, Value};

pub use config::{ProvisionerConfig, APPLY_PREFIX, DRY_RUN_PREFIX, REPORT_PREFIX};
use decrypt::ProvisioningKey;
use report::{Counts, Report};

#[derive(Debug, thiserror::Error)]
pub enum ProvisionerError {
    #[error("reading the provisioning key: {0}")]
    Key(String),
    #[error("the event is not an S3 notification: {0}")]
    Event(String),
    #[error("s3: {0}")]
    S3(String),
    #[error(transparent)]
    Directory(#[from] directory::DirectoryError),
}

pub struct Provisioner {
    config: ProvisionerConfig,
    s3: aws_sdk_s3::Client,
    directory: Directory,
    key: ProvisioningKey,
    audit: Arc<dyn AuditSink>,
}

/// The EventBridge event S3 sends for a new object (the bucket has EventBridge notifications on).
#[derive(Deserialize)]
struct ObjectCreated {
    source: String,
    #[serde(rename = "detail-type")]
    detail_type: String,
    detail: ObjectCreatedDetail,
}

#[derive(Deserialize)]
struct ObjectCreatedDetail {
    bucket: Named,
    object: ObjectKey,
}

#[derive(Deserialize)]
struct Named {
    name: String,
}

#[derive(Deserialize)]
struct ObjectKey {
    key: String,
}

/// The key as S3 may have written it into the event, form-encoded (`+` for a space, `%xx`).
fn form_decoded(raw: &str) -> Option<String> {
    if !raw.contains(['%', '+']) {
        return None;
    }
    let spaced = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .map(|k| k.into_owned())
        .filter(|k| k != raw)
}

impl Provisioner {
    /// Reads the age identity from Secrets Manager once, at init.
    pub async fn from_config(
        config: ProvisionerConfig,
        sdk: &aws_config::SdkConfig,
        audit: Arc<dyn AuditSink>,
    ) -> Result<Self, ProvisionerError> {
        let secret = aws_sdk_secretsmanager::Client::new(sdk)
            .get_secret_value()
            .secret_id(&config.identity_secret_id)
            .send()
            .await
            .map_err(|e| {
                ProvisionerError::Key(
                    aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string(),
                )
            })?;
        let key = ProvisioningKey::parse(secret.secret_string().unwrap_or_default())
            .map_err(|e| ProvisionerError::Key(e.to_string()))?;
        Ok(Provisioner {
            directory: config.directory.directory(sdk),
            s3: aws_sdk_s3::Client::new(sdk),
            key,
            config,
            audit,
        })
    }

    /// The recipient HR encrypts files to.
    pub fn recipient(&self) -> String {
        self.key.recipient()
    }

    /// Handles one "Object Created" event: the object is run and reported.
    pub async fn handle(&self, event: Value, now_millis: u64) -> Result<Value, ProvisionerError> {
        let event: ObjectCreated =
            serde_json::from_value(event).map_err(|e| ProvisionerError::Event(e.to_string()))?;
        if event.source != "aws.s3" || event.detail_type != "Object Created" {
            return Err(ProvisionerError::Event(format!(
                "{} / {} is not an S3 Object Created event",
                event.source, event.detail_type
            )));
        }
        let bucket = event.detail.bucket.name;
        let key = event.detail.object.key;
        if bucket != self.config.bucket {
            tracing::warn!(%bucket, "event for another bucket ignored");
            return Ok(json!({"ignored": "another bucket"}));
        }
        let dry_run = if key.starts_with(DRY_RUN_PREFIX) {
            true
        } else if key.starts_with(APPLY_PREFIX) {
            false
        } else {
            tracing::info!(%key, "object outside incoming/ and dry-run/ ignored");
            return Ok(json!({"ignored": "outside incoming/ and dry-run/"}));
        };
        let report = self.run(&key, dry_run, now_millis).await;
        // What was applied is audited whether or not the run got to its end.
        self.audit.send_now();
        let report = report?;
        let report_key = self.store(&report, &key, now_millis).await?;
        tracing::info!(source = %key, report = %report_key, counts = ?report.counts, dry_run, "provisioning run");
        Ok(json!({"source": key, "report": report_key, "counts": report.counts}))
    }

    /// The object's bytes. Should the event carry the key form-encoded, as S3's own notifications do,
    /// the decoded key is tried when the key as given does not exist.
    async fn fetch(&self, key: &str) -> Result<Vec<u8>, ProvisionerError> {
        let get = |key: String| {
            self.s3
                .get_object()
                .bucket(&self.config.bucket)
                .key(key)
                .send()
        };
        let object = match get(key.to_string()).await {
            Ok(object) => object,
            Err(error) => {
                let missing = error.as_service_error().is_some_and(|e| e.is_no_such_key());
                match form_decoded(key) {
                    Some(decoded) if missing => get(decoded).await.map_err(|e| {
                        ProvisionerError::S3(aws_sdk_s3::error::DisplayErrorContext(e).to_string())
                    })?,
                    _ => {
                        return Err(ProvisionerError::S3(
                            aws_sdk_s3::error::DisplayErrorContext(error).to_string(),
                        ))
                    }
                }
            }
        };
        Ok(object
            .body
            .collect()
            .await
            .map_err(|e| ProvisionerError::S3(e.to_string()))?
            .into_bytes()
            .to_vec())
    }

    async fn run(
        &self,
        key: &str,
        dry_run: bool,
        now_millis: u64,
    ) -> Result<Report, ProvisionerError> {
        let today = self.config.directory.today(now_millis);
        let mut report = Report {
            source_key: key.to_string(),
            dry_run,
            encoding: None,
            file_error: None,
            today: today.to_string(),
            counts: Counts::default(),
            rows: Vec::new(),
        };
        let bytes = self.fetch(key).await?;
        let plaintext = match self.key.decrypt(&bytes) {
            Ok(plaintext) => plaintext,
            Err(error) => {
                report.file_error = Some(error.to_string());
                return Ok(report);
            }
        };
        let parsed = match provisioning::parse(&plaintext) {
            Ok(parsed) => parsed,
            Err(error) => {
                report.file_error = Some(error.to_string());
                return Ok(report);
            }
        };
        drop(plaintext);
        report.encoding = Some(parsed.encoding.as_str());
        for rejection in &parsed.rejected {
            report.add_rejected(rejection);
        }
        let departments = self.config.directory.department_ids();
        let mut users: BTreeMap<String, DirectoryUser> = self
            .directory
            .users(departments.into_iter())
            .await?
            .into_iter()
            .map(|(name, user)| (name, user.planning()))
            .collect();
        for record in &parsed.records {
            let Some(department) = self.config.directory.department(&record.department) else {
                report.add_rejected(&Rejection {
                    line: record.line,
                    user_id: Some(record.user_id.clone()),
                    reasons: vec![format!(
                        "department {:?} is not configured (config/gateway.json departments)",
                        record.department
                    )],
                });
                continue;
            };
            let existing: Option<DirectoryUser> = users.get(&record.user_id).cloned();
            let planned = plan::plan_row(record, department, existing.as_ref(), today);
            let failure = if dry_run {
                None
            } else {
                let failure = self
                    .directory
                    .apply(&planned, now_millis / 1000)
                    .await
                    .err()
                    .map(|e| e.to_string());
                self.audit_row(&planned, key, now_millis, failure.as_deref());
                failure
            };
            if failure.is_none() {
                if let Some(after) = plan::after(&planned, existing.as_ref()) {
                    users.insert(record.user_id.clone(), after);
                }
            }
            report.add_planned(&planned, failure);
        }
        Ok(report)
    }

    /// One audit event per applied row: the action, the user and the attribute names, never values.
    fn audit_row(&self, row: &PlannedRow, source: &str, run: u64, failure: Option<&str>) {
        let Some((action, changed)) = plan::action_of(row) else {
            return;
        };
        let mut event = AuditEvent::admin(
            &format!("provisioning-{run}"),
            AdminAction {
                actor: "provisioner".into(),
                action: action.into(),
                target: Some(row.user_id.clone()),
                changed,
                source: Some(source.to_string()),
            },
            if failure.is_some() { 500 } else { 200 },
        );
        event.reason = failure.map(str::to_string);
        self.audit.record(event);
    }

    async fn store(
        &self,
        report: &Report,
        source: &str,
        now_millis: u64,
    ) -> Result<String, ProvisionerError> {
        let name = source.rsplit('/').next().unwrap_or(source);
        let base = format!("{REPORT_PREFIX}{now_millis}-{name}");
        let json =
            serde_json::to_vec_pretty(report).map_err(|e| ProvisionerError::S3(e.to_string()))?;
        for (key, body, content_type) in [
            (format!("{base}.json"), json, "application/json"),
            (
                format!("{base}.csv"),
                report.csv(),
                "text/csv; charset=utf-8",
            ),
        ] {
            self.s3
                .put_object()
                .bucket(&self.config.reports_bucket)
                .key(&key)
                .content_type(content_type)
                .body(body.into())
                .send()
                .await
                .map_err(|e| {
                    ProvisionerError::S3(aws_sdk_s3::error::DisplayErrorContext(e).to_string())
                })?;
        }
        Ok(format!("{base}.json"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_encoded_keys_decode_and_plain_ones_stay() {
        assert_eq!(
            form_decoded("incoming/hr+file%E2%91%A0.csv.age").as_deref(),
            Some("incoming/hr file①.csv.age")
        );
        assert_eq!(form_decoded("incoming/plain.csv.age"), None);
        assert_eq!(form_decoded("incoming/bad%FF.csv"), None);
    }
}
