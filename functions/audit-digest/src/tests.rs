//! The job against the in-memory bucket and key: digests, catching up, the completeness rule,
//! incomplete requests and reruns.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use gateway_shared::audit::clock::Hour;
use gateway_shared::audit::digest::memory::{FakeKey, MemoryStore};
use gateway_shared::audit::digest::{verify_range, DigestDocument, FindingKind, Layout};
use gateway_shared::audit::{AuditEvent, Decision, Outcome, Record};

use super::*;

fn hour(n: i64) -> Hour {
    Hour::parse("2026-11-25T03").unwrap().plus(n)
}

fn config() -> DigestConfig {
    DigestConfig {
        bucket: "audit".into(),
        layout: Layout::default(),
        key_id: "test-key".into(),
        grace: DEFAULT_GRACE,
        function_timeout: DEFAULT_FUNCTION_TIMEOUT,
        max_hours_per_run: DEFAULT_MAX_HOURS_PER_RUN,
    }
}

struct World {
    store: Arc<MemoryStore>,
    key: Arc<FakeKey>,
    job: Job,
}

impl World {
    fn new() -> World {
        World::with(config())
    }

    fn with(config: DigestConfig) -> World {
        let store = Arc::new(MemoryStore::new());
        let key = Arc::new(FakeKey::new("arn:aws:kms:test", "secret"));
        let job = Job::new(store.clone(), key.clone(), config);
        World { store, key, job }
    }

    /// What the audit writer would write in hour `at`: one object of these records.
    fn write(&self, at: Hour, name: &str, records: &[(&str, Record)]) -> String {
        let events: Vec<AuditEvent> = records
            .iter()
            .map(|(request_id, record)| {
                let mut event = AuditEvent::new(request_id, Decision::Allow, 200);
                event.record = *record;
                if *record != Record::Final {
                    event.status = 0;
                    event.outcome = Outcome::Pending;
                }
                if *record == Record::Accepted {
                    event.provider = Some("azure-openai".into());
                }
                event
            })
            .collect();
        let key = format!("{}{name}.jsonl.gz", Layout::default().hour_prefix(at));
        self.store.put(
            &key,
            incomplete::encode(&events).unwrap(),
            Default::default(),
        );
        key
    }

    /// A scheduled run just after hour `n` ended plus the grace period.
    async fn run_after(&self, n: i64) -> RunSummary {
        let now = hour(n).end_millis() + DEFAULT_GRACE.as_millis() as i64 + 1_000;
        self.job.run_scheduled(now).await.unwrap()
    }

    async fn verify(&self, from: i64, to: i64) -> gateway_shared::audit::digest::Report {
        verify_range(
            self.store.as_ref(),
            self.key.as_ref(),
            &Layout::default(),
            hour(from),
            hour(to),
        )
        .await
        .unwrap()
    }

    fn digest(&self, n: i64) -> DigestDocument {
        let stored = self
            .store
            .current(&Layout::default().digest_key(hour(n)))
            .unwrap();
        DigestDocument::parse(&stored.bytes).unwrap()
    }

    /// Every event in the bucket's current audit objects, by request id.
    fn events(&self) -> HashMap<String, Vec<AuditEvent>> {
        let mut by_request: HashMap<String, Vec<AuditEvent>> = HashMap::new();
        for key in self.store.current_keys("audit/") {
            let (events, unreadable) =
                incomplete::read_events(&self.store.current(&key).unwrap().bytes);
            assert_eq!(unreadable, 0);
            for event in events {
                by_request
                    .entry(event.request_id.clone())
                    .or_default()
                    .push(event);
            }
        }
        by_request
    }

    fn incomplete_of(&self, request_id: &str) -> Vec<AuditEvent> {
        self.events()
            .remove(request_id)
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e.record == Record::Incomplete)
            .collect()
    }
}

#[tokio::test]
async fn the_scheduled_event_is_taken_as_it_comes() {
    let world = World::new();
    let event: serde_json::Value =
        serde_json::from_str(include_str!("../../../events/audit-digest.json")).unwrap();
    let summary = world.job.handle(event).await.unwrap();
    assert!(summary.through.is_some());
    assert!(summary.digested.is_empty());
}

#[tokio::test]
async fn nothing_to_digest_before_the_first_audit_object() {
    let world = World::new();
    let summary = world.run_after(0).await;
    assert!(summary.digested.is_empty());
    assert!(summary.note.unwrap().contains("no audit objects"));
}

#[tokio::test]
async fn every_closed_hour_is_digested_in_a_chain_that_verifies_and_reruns_change_nothing() {
    let world = World::new();
    world.write(hour(0), "a", &[("r1", Record::Final)]);
    world.write(
        hour(0),
        "b",
        &[("r2", Record::Final), ("r3", Record::Final)],
    );
    world.write(hour(2), "c", &[("r4", Record::Final)]);
    let summary = world.run_after(2).await;
    assert_eq!(summary.digested, [hour(0), hour(1), hour(2)]);
    assert!(summary.incomplete.is_empty());

    let first = world.digest(0);
    assert_eq!(first.previous, None);
    assert_eq!(first.objects.len(), 2);
    assert_eq!(first.objects[1].events, 2);
    assert!(
        world.digest(1).objects.is_empty(),
        "an empty hour has a digest too"
    );
    assert_eq!(
        world.digest(1).previous.unwrap().key,
        Layout::default().digest_key(hour(0))
    );
    let report = world.verify(0, 2).await;
    assert!(report.intact(), "{report}");

    let signed = world.key.signed.load(std::sync::atomic::Ordering::Relaxed);
    let again = world.run_after(2).await;
    assert!(again.digested.is_empty(), "{again:?}");
    assert_eq!(
        world.key.signed.load(std::sync::atomic::Ordering::Relaxed),
        signed
    );
    assert_eq!(
        world
            .store
            .version_count(&Layout::default().digest_key(hour(0))),
        1
    );
}

#[tokio::test]
async fn objects_other_than_event_lines_are_digested_without_a_count() {
    let world = World::new();
    world.write(hour(0), "a", &[("r1", Record::Final)]);
    let other = format!("{}a.bodies.bin", Layout::default().hour_prefix(hour(0)));
    world
        .store
        .put(&other, b"ciphertext".to_vec(), Default::default());
    world.run_after(0).await;
    let digest = world.digest(0);
    let listed = digest.objects.iter().find(|o| o.key == other).unwrap();
    assert_eq!((listed.events, listed.bytes), (0, 10));
    assert!(world.verify(0, 0).await.intact());
}

#[tokio::test]
async fn an_hour_is_digested_only_once_it_ended_more_than_the_grace_period_ago() {
    let world = World::new();
    world.write(hour(0), "a", &[("r1", Record::Final)]);
    world.write(hour(1), "b", &[("r2", Record::Final)]);
    // Just before hour 1 ended plus the grace: only hour 0 is closed.
    let now = hour(1).end_millis() + DEFAULT_GRACE.as_millis() as i64 - 1;
    let summary = world.job.run_scheduled(now).await.unwrap();
    assert_eq!(summary.digested, [hour(0)]);
    // A write into a digested hour is what the rule says cannot be the gateway's: it is reported.
    let late = world.write(hour(0), "late", &[("r9", Record::Final)]);
    world.run_after(1).await;
    let report = world.verify(0, 1).await;
    assert_eq!(report.findings.len(), 1, "{report}");
    assert_eq!(report.findings[0].kind, FindingKind::UnlistedObject);
    assert_eq!(report.findings[0].key, late);
}

#[tokio::test]
async fn a_run_behind_catches_up_at_most_the_limit_per_run() {
    let mut config = config();
    config.max_hours_per_run = 2;
    let world = World::with(config);
    world.write(hour(0), "a", &[("r1", Record::Final)]);
    let first = world.run_after(4).await;
    assert_eq!(first.digested, [hour(0), hour(1)]);
    assert!(first.remaining);
    let second = world.run_after(4).await;
    assert_eq!(second.digested, [hour(2), hour(3)]);
    let third = world.run_after(4).await;
    assert_eq!(third.digested, [hour(4)]);
    assert!(!third.remaining);
    assert!(world.verify(0, 4).await.intact());
}

#[tokio::test]
async fn requests_without_a_final_get_exactly_one_incomplete_record() {
    let world = World::new();
    // r5's final was written before its authorized record (they travel separately).
    world.write(hour(-1), "early", &[("r5", Record::Final)]);
    world.write(
        hour(0),
        "a",
        &[
            ("r1", Record::Authorized),
            ("r1", Record::Accepted),
            ("r2", Record::Authorized),
            ("r2", Record::Final),
            ("r3", Record::Authorized),
            ("r5", Record::Accepted),
        ],
    );
    // r3 is a long stream whose final lands in the next hour; r4 never reached its route.
    world.write(
        hour(1),
        "b",
        &[("r3", Record::Final), ("r4", Record::Authorized)],
    );
    let summary = world.run_after(3).await;
    assert_eq!(summary.digested.first(), Some(&hour(-1)));
    let layout = Layout::default();
    assert_eq!(
        summary.incomplete,
        BTreeMap::from([
            (layout.incomplete_key(hour(1), hour(0)), 1),
            (layout.incomplete_key(hour(2), hour(1)), 1),
        ])
    );

    let r1 = world.incomplete_of("r1");
    assert_eq!(r1.len(), 1);
    assert_eq!(r1[0].decision, Decision::Allow);
    assert_eq!(r1[0].outcome, Outcome::Unknown);
    assert_eq!(r1[0].status, 0);
    assert_eq!(
        r1[0].reason.as_deref(),
        Some("no final record within the function timeout; seen: authorized, accepted")
    );
    // Made from the accepted record, which knows the provider.
    assert_eq!(r1[0].provider.as_deref(), Some("azure-openai"));
    assert_eq!(r1[0].time, "2026-11-25T04:59:59.999Z");
    assert_eq!(r1[0].event_id, incomplete::incomplete_event_id("r1"));
    let r4 = world.incomplete_of("r4");
    assert_eq!(r4.len(), 1);
    assert_eq!(
        r4[0].reason.as_deref(),
        Some("no final record within the function timeout; seen: authorized")
    );
    for done in ["r2", "r3", "r5"] {
        assert!(world.incomplete_of(done).is_empty(), "{done}");
    }
    // Every request has exactly one final-or-incomplete outcome.
    for (request_id, events) in world.events() {
        let outcomes = events
            .iter()
            .filter(|e| matches!(e.record, Record::Final | Record::Incomplete))
            .count();
        assert_eq!(outcomes, 1, "{request_id}");
    }

    let check = world.digest(1).incomplete_check.unwrap();
    assert_eq!(
        (
            check.hour,
            check.window_from,
            check.window_to,
            check.incomplete
        ),
        (hour(0), hour(-1), hour(1), 1)
    );
    assert!(world.verify(-1, 3).await.intact());

    let again = world.run_after(4).await;
    assert_eq!(again.digested, [hour(4)]);
    assert!(again.incomplete.is_empty());
    assert_eq!(world.incomplete_of("r1").len(), 1);
}

#[tokio::test]
async fn a_run_that_failed_after_writing_incomplete_records_does_not_write_them_again() {
    let world = World::new();
    world.write(hour(0), "a", &[("r1", Record::Accepted)]);
    let layout = Layout::default();
    // The digest of hour 1 cannot be written: the run fails after the incomplete records.
    *world.store.fail_on.lock().unwrap() = Some(layout.digest_key(hour(1)));
    let now = hour(1).end_millis() + DEFAULT_GRACE.as_millis() as i64 + 1;
    assert!(world.job.run_scheduled(now).await.is_err());
    let incomplete_key = layout.incomplete_key(hour(1), hour(0));
    assert_eq!(world.store.version_count(&incomplete_key), 1);

    *world.store.fail_on.lock().unwrap() = None;
    let summary = world.run_after(1).await;
    assert_eq!(summary.digested, [hour(1)]);
    assert!(summary.incomplete.is_empty());
    assert_eq!(world.store.version_count(&incomplete_key), 1);
    assert_eq!(world.incomplete_of("r1").len(), 1);
    let digest = world.digest(1);
    assert_eq!(digest.incomplete_check.unwrap().incomplete, 1);
    assert!(digest.objects.iter().any(|o| o.key == incomplete_key));
    assert!(world.verify(0, 1).await.intact());
}

#[tokio::test]
async fn the_check_waits_the_function_timeout_plus_grace_rounded_up_to_hours() {
    let mut config = config();
    config.function_timeout = Duration::from_secs(3600);
    assert_eq!(config.lag_hours(), 2);
    let world = World::with(config);
    world.write(hour(0), "a", &[("r1", Record::Accepted)]);
    // A final up to two hours later still counts.
    world.write(hour(2), "b", &[("r1", Record::Final)]);
    world.write(hour(0), "c", &[("r2", Record::Accepted)]);
    let summary = world.run_after(2).await;
    assert_eq!(
        summary.incomplete,
        BTreeMap::from([(Layout::default().incomplete_key(hour(2), hour(0)), 1)])
    );
    assert!(world.incomplete_of("r1").is_empty());
    assert_eq!(world.incomplete_of("r2").len(), 1);
}

#[tokio::test]
async fn a_deleted_latest_digest_stops_the_chain() {
    let world = World::new();
    world.write(hour(0), "a", &[("r1", Record::Final)]);
    world.run_after(1).await;
    world.store.delete(&Layout::default().digest_key(hour(1)));
    let error = world
        .job
        .run_scheduled(hour(3).end_millis() + DEFAULT_GRACE.as_millis() as i64 + 1)
        .await
        .unwrap_err();
    assert!(matches!(error, JobError::DigestDeleted { .. }), "{error}");
}

#[tokio::test]
async fn the_chain_is_found_across_months() {
    let world = World::new();
    let last_of_month = Hour::parse("2026-11-30T23").unwrap();
    world.write(last_of_month, "a", &[("r1", Record::Final)]);
    world.job.run_through(last_of_month).await.unwrap();
    let next = world
        .job
        .run_through(Hour::parse("2026-12-01T01").unwrap())
        .await
        .unwrap();
    assert_eq!(
        next.digested,
        [
            Hour::parse("2026-12-01T00").unwrap(),
            Hour::parse("2026-12-01T01").unwrap()
        ]
    );
    let report = verify_range(
        world.store.as_ref(),
        world.key.as_ref(),
        &Layout::default(),
        last_of_month,
        Hour::parse("2026-12-01T01").unwrap(),
    )
    .await
    .unwrap();
    assert!(report.intact(), "{report}");
}

#[test]
fn settings_are_read_once_with_clear_errors() {
    let settings = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let base = [
        ("GATEWAY_AUDIT_BUCKET", "b"),
        ("GATEWAY_AUDIT_DIGEST_KEY_ID", "k"),
    ];
    let config = DigestConfig::from_settings(&settings(&base)).unwrap();
    assert_eq!(config.lag_hours(), 1);
    assert_eq!(config.grace, DEFAULT_GRACE);
    let missing = DigestConfig::from_settings(&settings(&base[..1])).unwrap_err();
    assert_eq!(
        missing.to_string(),
        "missing required setting GATEWAY_AUDIT_DIGEST_KEY_ID"
    );
    let mut long = base.to_vec();
    long.push(("GATEWAY_AUDIT_DIGEST_GRACE_SECS", "7200"));
    assert!(DigestConfig::from_settings(&settings(&long))
        .unwrap_err()
        .to_string()
        .contains("GATEWAY_AUDIT_DIGEST_GRACE_SECS"));
    let mut zero = base.to_vec();
    zero.push(("GATEWAY_AUDIT_DIGEST_MAX_HOURS", "0"));
    assert!(DigestConfig::from_settings(&settings(&zero)).is_err());
    let mut bad = base.to_vec();
    bad.push(("GATEWAY_AUDIT_FUNCTION_TIMEOUT_SECS", "15m"));
    assert!(DigestConfig::from_settings(&settings(&bad))
        .unwrap_err()
        .to_string()
        .contains("expected seconds"));
}

#[test]
fn incomplete_event_ids_are_stable_uuids() {
    let id = incomplete::incomplete_event_id("r1");
    assert_eq!(id, incomplete::incomplete_event_id("r1"));
    assert_ne!(id, incomplete::incomplete_event_id("r2"));
    let parsed = uuid::Uuid::parse_str(&id).unwrap();
    assert_eq!(parsed.get_version_num(), 8);
}
