//! The records the incomplete check reads, hour by hour, and the `incomplete` records it writes.
//!
//! An incomplete record is the request's `accepted` record (else its `authorized` one) with
//! `record: incomplete`, `decision: allow` (the gateway had let it through), `outcome: unknown`,
//! `status: 0` (no status is known to have reached the client), `reason` naming the records that were
//! seen (`no final record within the function timeout; seen: authorized, accepted`), the time of the
//! last millisecond of the hour it is written in, and an event id derived from the request id. Every
//! field is a function of the records read, so a rerun writes the same bytes.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;

use flate2::write::GzEncoder;
use gateway_shared::audit::clock::{rfc3339_from_millis, Hour};
use gateway_shared::audit::digest::{AuditStore, Layout, ObjectEntry, StoreError};
use gateway_shared::audit::{AuditEvent, Decision, Outcome, Record, SCHEMA_VERSION};
use sha2::Digest as _;

/// The name ending of the objects of audit events (the writer's and the incomplete records').
pub const EVENTS_SUFFIX: &str = ".jsonl.gz";

/// A request's records before its outcome, as seen in one hour.
#[derive(Debug, Clone, PartialEq)]
pub struct Started {
    pub authorized: bool,
    pub accepted: bool,
    /// The record an incomplete record is made from: the accepted record if there is one (it knows
    /// the provider, operation and model), else the authorized record.
    pub template: AuditEvent,
}

/// What one hour's objects hold.
#[derive(Debug, Default)]
struct HourRecords {
    /// Sorted by key.
    objects: Vec<ObjectEntry>,
    finals: HashSet<String>,
    incompletes: HashSet<String>,
    started: BTreeMap<String, Started>,
}

impl HourRecords {
    fn add_event(&mut self, event: AuditEvent) {
        match event.record {
            Record::Final => {
                self.finals.insert(event.request_id);
            }
            Record::Incomplete => {
                self.incompletes.insert(event.request_id);
            }
            Record::Authorized | Record::Accepted => {
                let accepted = event.record == Record::Accepted;
                match self.started.get_mut(&event.request_id) {
                    Some(started) => {
                        started.authorized |= !accepted;
                        if accepted && !started.accepted {
                            started.accepted = true;
                            started.template = event;
                        }
                    }
                    None => {
                        self.started.insert(
                            event.request_id.clone(),
                            Started {
                                authorized: !accepted,
                                accepted,
                                template: event,
                            },
                        );
                    }
                }
            }
        }
    }
}

/// The outcome of checking one hour.
#[derive(Debug, Default)]
pub struct Check {
    /// Requests of the checked hour with neither a final nor an incomplete record in the window, by
    /// request id: those to write an incomplete record for.
    pub pending: Vec<(String, Started)>,
    /// Requests of the checked hour without a final in the window (the pending ones and those an
    /// earlier attempt of this check already reported).
    pub without_final: usize,
}

/// Hours read so far in a run (a run that catches up reads each hour once).
#[derive(Debug, Default)]
pub struct Cache {
    hours: BTreeMap<Hour, HourRecords>,
}

impl Cache {
    /// Drops the hours before `from`, which no later check of the run reads.
    pub fn retain_from(&mut self, from: Hour) {
        self.hours = self.hours.split_off(&from);
    }

    pub fn forget(&mut self, hour: Hour) {
        self.hours.remove(&hour);
    }

    /// Reads an hour's current objects, unless already read.
    pub async fn load(
        &mut self,
        store: &dyn AuditStore,
        layout: &Layout,
        hour: Hour,
    ) -> Result<(), StoreError> {
        if self.hours.contains_key(&hour) {
            return Ok(());
        }
        let mut records = HourRecords::default();
        for listed in store.list_latest(&layout.hour_prefix(hour)).await? {
            if listed.delete_marker {
                continue;
            }
            // Deleted since the listing: it is not an object of the hour any more.
            let Some(stored) = store.get(&listed.key).await? else {
                continue;
            };
            // Only the JSON-lines objects hold events; anything else under the prefix is digested as
            // stored, without a count.
            let (events, unreadable) = if listed.key.ends_with(EVENTS_SUFFIX) {
                read_events(&stored.bytes)
            } else {
                (Vec::new(), 0)
            };
            if unreadable > 0 {
                tracing::error!(key = %listed.key, unreadable, "audit object holds lines that are not audit events; digested as stored");
            }
            records.objects.push(ObjectEntry::of(
                &listed.key,
                stored.version_id,
                &stored.bytes,
                events.len() as u64,
            ));
            for event in events {
                records.add_event(event);
            }
        }
        records.objects.sort_by(|a, b| a.key.cmp(&b.key));
        self.hours.insert(hour, records);
        Ok(())
    }

    /// Adds the object of incomplete records this run wrote into `hour`.
    pub fn add_written(
        &mut self,
        hour: Hour,
        key: &str,
        version_id: Option<String>,
        bytes: &[u8],
        events: &[AuditEvent],
    ) {
        let records = self.hours.entry(hour).or_default();
        records.objects.retain(|o| o.key != key);
        records
            .objects
            .push(ObjectEntry::of(key, version_id, bytes, events.len() as u64));
        records.objects.sort_by(|a, b| a.key.cmp(&b.key));
        for event in events {
            records.add_event(event.clone());
        }
    }

    /// The objects of a loaded hour, sorted by key.
    pub fn objects(&self, hour: Hour) -> Vec<ObjectEntry> {
        self.hours
            .get(&hour)
            .map(|r| r.objects.clone())
            .unwrap_or_default()
    }

    /// The requests of `checked` against the finals and incompletes of the loaded hours
    /// `from..=to`.
    pub fn check(&self, checked: Hour, from: Hour, to: Hour) -> Check {
        let Some(started) = self.hours.get(&checked).map(|r| &r.started) else {
            return Check::default();
        };
        let window: Vec<&HourRecords> = self.hours.range(from..=to).map(|(_, r)| r).collect();
        let mut check = Check::default();
        for (request_id, seen) in started {
            if window.iter().any(|r| r.finals.contains(request_id)) {
                continue;
            }
            check.without_final += 1;
            if !window.iter().any(|r| r.incompletes.contains(request_id)) {
                check.pending.push((request_id.clone(), seen.clone()));
            }
        }
        check
    }
}

/// The incomplete records for the pending requests, written into hour `written_in`.
pub fn records(pending: &[(String, Started)], written_in: Hour) -> Vec<AuditEvent> {
    let time = rfc3339_from_millis((written_in.end_millis() - 1).max(0) as u64);
    pending
        .iter()
        .map(|(request_id, started)| {
            let seen: Vec<&str> = [
                (started.authorized, "authorized"),
                (started.accepted, "accepted"),
            ]
            .into_iter()
            .filter_map(|(was, name)| was.then_some(name))
            .collect();
            AuditEvent {
                schema_version: SCHEMA_VERSION,
                event_id: incomplete_event_id(request_id),
                time: time.clone(),
                record: Record::Incomplete,
                decision: Decision::Allow,
                reason: Some(format!(
                    "no final record within the function timeout; seen: {}",
                    seen.join(", ")
                )),
                status: 0,
                outcome: Outcome::Unknown,
                ..started.template.clone()
            }
        })
        .collect()
}

/// A UUID (version 8, "custom") from the request id: the same request always gets the same id.
pub fn incomplete_event_id(request_id: &str) -> String {
    let digest = sha2::Sha256::digest(format!("incomplete\n{request_id}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// Gzip JSON lines, as the audit writer writes them.
pub fn encode(events: &[AuditEvent]) -> std::io::Result<Vec<u8>> {
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
    for event in events {
        let line = serde_json::to_string(event)?;
        gz.write_all(line.as_bytes())?;
        gz.write_all(b"\n")?;
    }
    gz.finish()
}

pub use gateway_shared::audit::read_events;
