//! The hourly audit job: tamper evidence and the incomplete-request report.
//!
//! Each run digests, in order, every hour not yet digested that ended more than the grace period
//! ago, from the hour after the latest digest (or the hour of the first audit object) on: it lists the
//! hour's audit objects, hashes each, signs the digest with the KMS key and stores it under the
//! digest prefix with a conditional put, chained to the previous hour's digest. Format, layout and the
//! completeness rule: `gateway_shared::audit::digest`. A run that is behind catches up, at most
//! `GATEWAY_AUDIT_DIGEST_MAX_HOURS` hours per run; a run that finds a digest already written by another
//! stops. Runs are idempotent: what is digested is never digested again.
//!
//! # Incomplete requests
//! Before digesting hour `D`, the job checks hour `H = D - L`, where `L` (the lag) is the function
//! timeout plus the grace period, rounded up to whole hours (at least 1). Every request with an
//! `authorized` or `accepted` record in `H`'s objects must have a `final` (or already an `incomplete`)
//! record in the objects of `H-1 ..= D`: `H-1` because records travel separately and a final can be
//! written before its request's authorized record; up to `D` because a request runs at most the
//! function timeout after its first record and its final reaches S3 within the grace period. For each
//! request that has none, the job writes one `incomplete` record ([`incomplete`]) into an object of
//! hour `D` (`incomplete-<H>.jsonl.gz`), just before digesting `D`, so the digest lists it. A rerun
//! finds those records in the window and writes none again; their event ids are derived from the
//! request id, so even a copy would be one event to `COUNT(DISTINCT event_id)`.

pub mod incomplete;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use gateway_shared::audit::clock::{self, Hour};
use gateway_shared::audit::digest::{
    self, AuditStore, DigestDocument, DigestSigner, IncompleteCheck, KmsDigestKey, Layout,
    NewObject, PutOutcome, S3AuditStore, SealError, SealedDigest, StoreError, DIGEST_VERSION,
};
use gateway_shared::config::{self, ConfigError, Settings};
use serde::Serialize;

pub const DEFAULT_GRACE: Duration = Duration::from_secs(600);
pub const DEFAULT_FUNCTION_TIMEOUT: Duration = Duration::from_secs(900);
pub const DEFAULT_MAX_HOURS_PER_RUN: usize = 72;
const HOUR: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
pub struct DigestConfig {
    pub bucket: String,
    pub layout: Layout,
    /// The asymmetric KMS key that signs digests.
    pub key_id: String,
    /// How long after an hour ends its objects may still be landing (the writer's timeout and SQS
    /// redelivery of its batch must fit in it); at most one hour.
    pub grace: Duration,
    /// The longest a request can run: the route functions' timeout.
    pub function_timeout: Duration,
    pub max_hours_per_run: usize,
}

impl DigestConfig {
    /// `GATEWAY_AUDIT_BUCKET` and `GATEWAY_AUDIT_DIGEST_KEY_ID` (required), `GATEWAY_AUDIT_PREFIX`
    /// (`audit/`), `GATEWAY_AUDIT_DIGEST_PREFIX` (`digests/`), `GATEWAY_AUDIT_DIGEST_GRACE_SECS` (600,
    /// at most 3600), `GATEWAY_AUDIT_FUNCTION_TIMEOUT_SECS` (900), `GATEWAY_AUDIT_DIGEST_MAX_HOURS` (72).
    pub fn from_settings(settings: &dyn Settings) -> Result<Self, ConfigError> {
        let grace =
            config::duration_secs(settings, "GATEWAY_AUDIT_DIGEST_GRACE_SECS", DEFAULT_GRACE)?;
        if grace > HOUR {
            return Err(ConfigError::Invalid {
                name: "GATEWAY_AUDIT_DIGEST_GRACE_SECS",
                reason: format!(
                    "{} s is more than an hour; the incomplete check looks one hour back for finals written early",
                    grace.as_secs()
                ),
            });
        }
        let max_hours_per_run = config::usize_setting(
            settings,
            "GATEWAY_AUDIT_DIGEST_MAX_HOURS",
            DEFAULT_MAX_HOURS_PER_RUN,
        )?;
        if max_hours_per_run == 0 {
            return Err(ConfigError::Invalid {
                name: "GATEWAY_AUDIT_DIGEST_MAX_HOURS",
                reason: "must be at least 1".into(),
            });
        }
        Ok(DigestConfig {
            bucket: config::required(settings, "GATEWAY_AUDIT_BUCKET")?,
            layout: Layout::from_settings(settings)?,
            key_id: config::required(settings, "GATEWAY_AUDIT_DIGEST_KEY_ID")?,
            grace,
            function_timeout: config::duration_secs(
                settings,
                "GATEWAY_AUDIT_FUNCTION_TIMEOUT_SECS",
                DEFAULT_FUNCTION_TIMEOUT,
            )?,
            max_hours_per_run,
        })
    }

    /// Hours between an hour and the digest run that checks its requests for a missing final.
    pub fn lag_hours(&self) -> i64 {
        let span = (self.function_timeout + self.grace).as_secs();
        span.div_ceil(HOUR.as_secs()).max(1) as i64
    }

    /// The last hour a scheduled run at `now_millis` may digest: it ended more than the grace ago.
    pub fn last_closed_hour(&self, now_millis: i64) -> Hour {
        Hour::containing_millis(now_millis - self.grace.as_millis() as i64).previous()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error("encoding the incomplete records failed: {0}")]
    Encode(#[from] std::io::Error),
    #[error("the latest digest {key} has been deleted (a delete marker hides it); the chain does not go on past a deleted digest: restore it by deleting the delete marker, then run again")]
    DigestDeleted { key: String },
    #[error("audit object key {key} is not in an hour partition")]
    ForeignKey { key: String },
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RunSummary {
    /// The last hour the run was allowed to digest.
    pub through: Option<Hour>,
    /// Digests written, in order.
    pub digested: Vec<Hour>,
    /// Incomplete records written, by the object that holds them.
    pub incomplete: BTreeMap<String, usize>,
    /// Hours that remain for the next run (the per-run limit was reached).
    pub remaining: bool,
    /// Why the run stopped early or did nothing, when it did.
    pub note: Option<String>,
}

pub struct Job {
    store: Arc<dyn AuditStore>,
    signer: Arc<dyn DigestSigner>,
    config: DigestConfig,
    /// One run at a time in this process (the function's reserved concurrency is 1 in AWS; the local
    /// stack runs its schedule and its control endpoint in one process).
    running: tokio::sync::Mutex<()>,
}

impl Job {
    pub fn new(
        store: Arc<dyn AuditStore>,
        signer: Arc<dyn DigestSigner>,
        config: DigestConfig,
    ) -> Self {
        Job {
            store,
            signer,
            config,
            running: tokio::sync::Mutex::new(()),
        }
    }

    pub fn from_config(config: DigestConfig, sdk: &aws_config::SdkConfig) -> Self {
        let store = S3AuditStore::new(aws_sdk_s3::Client::new(sdk), config.bucket.clone());
        let key = KmsDigestKey::new(aws_sdk_kms::Client::new(sdk), config.key_id.clone());
        Job::new(Arc::new(store), Arc::new(key), config)
    }

    pub fn config(&self) -> &DigestConfig {
        &self.config
    }

    /// The scheduled invocation: the event (EventBridge's) is not read; the clock decides which hours
    /// have ended.
    pub async fn handle(&self, _event: serde_json::Value) -> Result<RunSummary, JobError> {
        let summary = self.run_scheduled(clock::now_millis() as i64).await?;
        tracing::info!(summary = ?summary, "audit digest run");
        Ok(summary)
    }

    /// Digests every hour that ended more than the grace period before `now_millis`.
    pub async fn run_scheduled(&self, now_millis: i64) -> Result<RunSummary, JobError> {
        self.run_through(self.config.last_closed_hour(now_millis))
            .await
    }

    /// Digests every hour not yet digested up to and including `through`, which the caller vouches
    /// has ended more than the grace period ago (the scheduled run computes it; the local stack's
    /// control endpoint may name the current hour to close it early).
    pub async fn run_through(&self, through: Hour) -> Result<RunSummary, JobError> {
        let _one_run = self.running.lock().await;
        let mut summary = RunSummary {
            through: Some(through),
            ..RunSummary::default()
        };
        let Some(genesis) = self.genesis().await? else {
            summary.note = Some("no audit objects yet: nothing to digest".into());
            return Ok(summary);
        };
        let (mut previous, start) = match self.latest_digest(through, genesis).await? {
            Some((hour, sealed)) => (Some(sealed), hour.next()),
            None => (None, genesis),
        };
        let mut records = incomplete::Cache::default();
        let mut hour = start;
        while hour <= through {
            if summary.digested.len() == self.config.max_hours_per_run {
                summary.remaining = true;
                break;
            }
            let sealed = self
                .digest_hour(hour, previous.as_ref(), &mut records, &mut summary)
                .await?;
            match self.store.put_if_absent(sealed.object()).await? {
                PutOutcome::Created { .. } => {
                    tracing::info!(key = %sealed.key, "audit digest written");
                    summary.digested.push(hour);
                    previous = Some(sealed);
                }
                PutOutcome::AlreadyExists => {
                    summary.note = Some(format!(
                        "{} was written by another run; stopping",
                        sealed.key
                    ));
                    break;
                }
            }
            hour = hour.next();
        }
        if summary.digested.is_empty() && summary.note.is_none() {
            summary.note = Some(format!("no hour through {through} is left to digest"));
        }
        Ok(summary)
    }

    /// The hour of the first audit object: where the chain starts.
    async fn genesis(&self) -> Result<Option<Hour>, JobError> {
        let prefix = format!("{}year=", self.config.layout.audit_prefix);
        let Some(key) = self.store.first_key(&prefix).await? else {
            return Ok(None);
        };
        match self.config.layout.object_hour(&key) {
            Some(hour) => Ok(Some(hour)),
            None => Err(JobError::ForeignKey { key }),
        }
    }

    /// The chain's head: the latest digest, found month by month back from `through`'s month.
    async fn latest_digest(
        &self,
        through: Hour,
        genesis: Hour,
    ) -> Result<Option<(Hour, SealedDigest)>, JobError> {
        let layout = &self.config.layout;
        let mut month = through;
        loop {
            let prefix = format!("{}{}", layout.digest_prefix, month.month_partition());
            let latest = self
                .store
                .list_latest(&prefix)
                .await?
                .into_iter()
                .filter_map(|listed| Some((layout.digest_hour(&listed.key)?, listed)))
                .max_by_key(|(hour, _)| *hour);
            if let Some((hour, listed)) = latest {
                if listed.delete_marker {
                    return Err(JobError::DigestDeleted { key: listed.key });
                }
                let Some(stored) = self.store.get(&listed.key).await? else {
                    return Err(JobError::DigestDeleted { key: listed.key });
                };
                if !stored.metadata.contains_key(digest::META_SIGNATURE) {
                    // Chained as it is (the next digest records what is there); verify reports it.
                    tracing::error!(key = %listed.key, "the latest digest carries no signature");
                }
                return Ok(Some((hour, SealedDigest::from_stored(&listed.key, stored))));
            }
            if month.month_partition() <= genesis.month_partition() {
                return Ok(None);
            }
            month = month.first_of_previous_month();
        }
    }

    /// Checks the lagging hour for incomplete requests (writing their records into `hour`), then
    /// builds and signs `hour`'s digest.
    async fn digest_hour(
        &self,
        hour: Hour,
        previous: Option<&SealedDigest>,
        records: &mut incomplete::Cache,
        summary: &mut RunSummary,
    ) -> Result<SealedDigest, JobError> {
        let layout = &self.config.layout;
        let checked = hour.plus(-self.config.lag_hours());
        let (window_from, window_to) = (checked.previous(), hour);
        records.retain_from(window_from);
        let mut at = window_from;
        while at <= window_to {
            records.load(self.store.as_ref(), layout, at).await?;
            at = at.next();
        }
        let check = records.check(checked, window_from, window_to);
        if !check.pending.is_empty() {
            let key = layout.incomplete_key(hour, checked);
            let events = incomplete::records(&check.pending, hour);
            let bytes = incomplete::encode(&events)?;
            let object = NewObject {
                key: key.clone(),
                bytes: bytes.clone(),
                content_type: "application/x-ndjson",
                content_encoding: Some("gzip"),
                metadata: BTreeMap::new(),
            };
            match self.store.put_if_absent(object).await? {
                PutOutcome::Created { version_id } => {
                    tracing::warn!(%key, requests = events.len(), checked = %checked, "incomplete requests reported");
                    records.add_written(hour, &key, version_id, &bytes, &events);
                    summary.incomplete.insert(key, events.len());
                }
                // Written between the listing and now (another run): read the hour again.
                PutOutcome::AlreadyExists => {
                    records.forget(hour);
                    records.load(self.store.as_ref(), layout, hour).await?;
                }
            }
        }
        let document = DigestDocument {
            digest_version: DIGEST_VERSION,
            hour,
            audit_prefix: layout.audit_prefix.clone(),
            objects: records.objects(hour),
            previous: previous.map(SealedDigest::link),
            incomplete_check: Some(IncompleteCheck {
                hour: checked,
                window_from,
                window_to,
                incomplete: check.without_final as u64,
            }),
        };
        Ok(digest::seal(&document, layout.digest_key(hour), self.signer.as_ref()).await?)
    }
}

#[cfg(test)]
mod tests;
