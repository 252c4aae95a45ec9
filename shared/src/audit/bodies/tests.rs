use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::*;
use crate::audit::{Decision, Record};

fn key(byte: u8) -> DataKey {
    DataKey::new(
        Zeroizing::new(vec![byte; 32]),
        format!("encrypted-{byte}").into_bytes(),
        "arn:aws:kms:us-east-1:000000000000:key/test".into(),
    )
}

fn event_with(request_id: &str, request: &[u8], response: &[&[u8]], limit: usize) -> AuditEvent {
    let mut event = AuditEvent::new(request_id, Decision::Allow, 200);
    event.time = "2026-11-25T03:04:05.678Z".into();
    let mut captured = CapturedBodies::of_request(&Bytes::copy_from_slice(request), limit);
    for chunk in response {
        captured.response.push(&Bytes::copy_from_slice(chunk));
    }
    event.captured = Some(captured);
    event
}

fn sealed(request_id: &str, request: &[u8], response: &[u8], key: &DataKey) -> BodiesObject {
    let event = event_with(request_id, request, &[response], 1024);
    seal(key, &event, event.captured.as_ref().unwrap()).unwrap()
}

fn open_both(
    object: &BodiesObject,
    request_id: &str,
    key_byte: u8,
) -> Result<(Vec<u8>, Vec<u8>), OpenError> {
    let key = [key_byte; 32];
    Ok((
        open_part(&key, request_id, object, Part::Request)?.bytes,
        open_part(&key, request_id, object, Part::Response)?.bytes,
    ))
}

fn is_auth_failure(result: Result<(Vec<u8>, Vec<u8>), OpenError>) -> bool {
    matches!(result, Err(OpenError::Authentication { .. }))
}

#[test]
fn sealed_bodies_open_to_exactly_what_was_captured() {
    let object = sealed(
        "r1",
        br#"{"prompt":"secret question"}"#,
        b"secret answer",
        &key(7),
    );
    assert_eq!(object.format, FORMAT);
    assert_eq!(object.algorithm, "AES-256-GCM");
    assert_eq!(object.request.bytes, 28);
    assert_eq!(object.response.bytes, 13);
    assert!(!object.request.truncated && !object.response.truncated);
    assert_eq!(
        object.encryption_context["purpose"],
        "llm-gateway-audit-bodies"
    );
    let (request, response) = open_both(&object, "r1", 7).unwrap();
    assert_eq!(request, br#"{"prompt":"secret question"}"#);
    assert_eq!(response, b"secret answer");
    let json = serde_json::to_string(&object).unwrap();
    assert!(
        !json.contains("secret"),
        "no plaintext in the object: {json}"
    );
    assert_ne!(
        object.request.nonce, object.response.nonce,
        "a nonce per part"
    );
}

#[test]
fn empty_bodies_round_trip_too() {
    let object = sealed("r-empty", b"", b"", &key(1));
    assert_eq!(open_both(&object, "r-empty", 1).unwrap(), (vec![], vec![]));
}

#[test]
fn every_altered_ciphertext_or_nonce_byte_fails_authentication() {
    let object = sealed("r1", b"request body", b"response body", &key(7));
    for part in Part::BOTH {
        for field in ["ciphertext", "nonce"] {
            let original = {
                let sealed = object.part(part);
                b64()
                    .decode(if field == "nonce" {
                        &sealed.nonce
                    } else {
                        &sealed.ciphertext
                    })
                    .unwrap()
            };
            for index in 0..original.len() {
                let mut altered = original.clone();
                altered[index] ^= 0x01;
                let mut tampered = object.clone();
                let sealed = tampered.part_mut(part);
                let encoded = b64().encode(&altered);
                if field == "nonce" {
                    sealed.nonce = encoded;
                } else {
                    sealed.ciphertext = encoded;
                }
                assert!(
                    is_auth_failure(open_both(&tampered, "r1", 7)),
                    "{} {field} byte {index} altered and still opened",
                    part.name()
                );
            }
        }
        // A cut ciphertext (the tag gone) fails too.
        let mut cut = object.clone();
        cut.part_mut(part).ciphertext = b64().encode(b"short");
        assert!(is_auth_failure(open_both(&cut, "r1", 7)));
    }
}

#[test]
fn sizes_and_truncated_flags_are_authenticated() {
    let object = sealed("r1", b"request body", b"response body", &key(7));
    let mut flag = object.clone();
    flag.response.truncated = true;
    assert!(is_auth_failure(open_both(&flag, "r1", 7)));
    let mut size = object.clone();
    size.request.bytes += 1;
    assert!(is_auth_failure(open_both(&size, "r1", 7)));
}

#[test]
fn parts_swapped_between_requests_or_directions_fail() {
    // Same batch, same data key: only the AAD tells the parts apart.
    let batch_key = key(9);
    let a = sealed("request-a", b"a asks", b"a hears", &batch_key);
    let b = sealed("request-b", b"b asks", b"b hears", &batch_key);

    let mut a_with_b_request = a.clone();
    a_with_b_request.request = b.request.clone();
    assert!(is_auth_failure(open_both(
        &a_with_b_request,
        "request-a",
        9
    )));

    let mut directions_swapped = a.clone();
    std::mem::swap(
        &mut directions_swapped.request,
        &mut directions_swapped.response,
    );
    assert!(is_auth_failure(open_both(
        &directions_swapped,
        "request-a",
        9
    )));

    // B's whole object stored under A's key: the id asked for decides, not the id the object names.
    let mut renamed = b.clone();
    renamed.request_id = "request-a".into();
    assert!(is_auth_failure(open_both(&renamed, "request-a", 9)));
    assert!(open_both(&b, "request-b", 9).is_ok());
}

#[test]
fn the_wrong_data_key_fails() {
    let object = sealed("r1", b"request body", b"response body", &key(7));
    assert!(is_auth_failure(open_both(&object, "r1", 8)));
    assert!(matches!(
        open_part(&[7u8; 16], "r1", &object, Part::Request),
        Err(OpenError::Key)
    ));
}

#[test]
fn capture_keeps_up_to_the_bound_and_flags_the_cut() {
    let mut capture = Capture::new(7);
    for chunk in [&b"abc"[..], b"", b"def", b"ghi"] {
        capture.push(&Bytes::copy_from_slice(chunk));
    }
    assert_eq!(capture.len(), 7);
    assert!(capture.truncated());
    assert_eq!(&capture.joined()[..], b"abcdefg");

    let exact = Capture::of(&Bytes::from_static(b"1234567"), 7);
    assert!(!exact.truncated(), "exactly the bound is whole");
    let mut after = exact.clone();
    after.push(&Bytes::new());
    assert!(!after.truncated(), "an empty frame cuts nothing");
    after.push(&Bytes::from_static(b"8"));
    assert!(after.truncated());
    assert_eq!(&after.joined()[..], b"1234567");

    let event = event_with("r-cut", b"0123456789", &[b"abcdef", b"ghijkl"], 8);
    let object = seal(&key(3), &event, event.captured.as_ref().unwrap()).unwrap();
    assert!(object.request.truncated && object.response.truncated);
    assert_eq!(
        open_both(&object, "r-cut", 3).unwrap(),
        (b"01234567".to_vec(), b"abcdefgh".to_vec())
    );
}

#[test]
fn plaintext_never_reaches_debug_or_serialized_events() {
    let event = event_with("r1", b"PLAINTEXT-REQUEST", &[b"PLAINTEXT-RESPONSE"], 1024);
    let debug = format!("{event:?} {:?}", key(5));
    assert!(!debug.contains("PLAINTEXT"), "{debug}");
    assert!(!debug.contains("[5, 5"), "no key bytes: {debug}");
    let json = serde_json::to_string(&event).unwrap();
    assert!(!json.contains("PLAINTEXT"), "{json}");
    assert!(!json.contains("captured"), "{json}");
    let back: AuditEvent = serde_json::from_str(&json).unwrap();
    assert!(back.captured.is_none());
}

#[test]
fn the_accepted_record_carries_no_bodies() {
    let event = event_with("r1", b"question", &[], 1024);
    let accepted = event.as_record(Record::Accepted);
    assert!(accepted.captured.is_none() && accepted.bodies.is_none());
    assert!(event.as_record(Record::Final).captured.is_some());
}

#[test]
fn object_keys_are_partitioned_by_the_events_hour_and_one_name_each() {
    assert_eq!(
        object_key_for("2026-11-25T03:04:05.678Z", "6f1c-Ab_9.x").as_deref(),
        Some("bodies/year=2026/month=11/day=25/hour=03/6f1c-Ab_9.x.json")
    );
    assert_eq!(
        object_key("year=2026/month=11/day=25/hour=03", "../a/b c"),
        "bodies/year=2026/month=11/day=25/hour=03/..%2Fa%2Fb%20c.json"
    );
    assert_eq!(object_key_for("garbage", "r"), None);
}

// ---- settings

use crate::testing::settings;

#[test]
fn bodies_are_on_by_default_and_need_a_bucket_and_a_key() {
    let full = settings(&[
        ("GATEWAY_AUDIT_BUCKET", "audit"),
        ("GATEWAY_AUDIT_BODY_KEY_ID", "alias/audit-bodies"),
    ]);
    assert_eq!(
        BodiesConfig::from_settings(&full).unwrap(),
        BodiesConfig::On(BodiesOn {
            max_bytes: DEFAULT_MAX_BYTES,
            bucket: "audit".into(),
            key_id: "alias/audit-bodies".into(),
        })
    );
    let error = BodiesConfig::from_settings(&settings(&[("GATEWAY_AUDIT_BUCKET", "audit")]))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("GATEWAY_AUDIT_BODY_KEY_ID") && error.contains("GATEWAY_AUDIT_BODIES=off"),
        "{error}"
    );
    let error = BodiesConfig::from_settings(&settings(&[]))
        .unwrap_err()
        .to_string();
    assert!(error.contains("GATEWAY_AUDIT_BUCKET"), "{error}");

    let mut small = full.clone();
    small.insert("GATEWAY_AUDIT_BODY_MAX_BYTES".into(), "4096".into());
    assert_eq!(
        BodiesConfig::from_settings(&small).unwrap().capture_limit(),
        Some(4096)
    );
    for bad in ["0", "-1", "1MiB"] {
        small.insert("GATEWAY_AUDIT_BODY_MAX_BYTES".into(), bad.into());
        let error = BodiesConfig::from_settings(&small).unwrap_err().to_string();
        assert!(
            error.contains("GATEWAY_AUDIT_BODY_MAX_BYTES"),
            "{bad}: {error}"
        );
    }
}

#[test]
fn bodies_can_be_switched_off_per_route() {
    let off = BodiesConfig::from_settings(&settings(&[("GATEWAY_AUDIT_BODIES", "OFF")])).unwrap();
    assert_eq!(off, BodiesConfig::Off);
    assert_eq!(off.capture_limit(), None);
    let error = BodiesConfig::from_settings(&settings(&[("GATEWAY_AUDIT_BODIES", "yes")]))
        .unwrap_err()
        .to_string();
    assert!(error.contains("expected on or off"), "{error}");
}

// ---- the flush stage, against fakes

#[derive(Default)]
struct FakeKeys {
    calls: AtomicUsize,
    fail: bool,
}

impl DataKeys for FakeKeys {
    fn generate(&self) -> BoxFuture<'_, Result<DataKey, BodiesError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let result = if self.fail {
            Err(BodiesError::GenerateDataKey(
                "AccessDeniedException: not allowed".into(),
            ))
        } else {
            Ok(key(42))
        };
        async move { result }.boxed()
    }
}

#[derive(Default)]
struct FakeStore {
    objects: Mutex<HashMap<String, Vec<u8>>>,
    fail: bool,
}

impl BodyStore for FakeStore {
    fn put(&self, key: String, body: Vec<u8>) -> BoxFuture<'_, Result<(), BodiesError>> {
        let result = if self.fail {
            Err(BodiesError::Put {
                key,
                message: "ServiceUnavailable".into(),
            })
        } else {
            self.objects.lock().unwrap().insert(key, body);
            Ok(())
        };
        async move { result }.boxed()
    }
}

#[derive(Clone, Default)]
struct Delivered(Arc<Mutex<Vec<AuditEvent>>>);

impl Deliver for Delivered {
    fn deliver(&self, events: Vec<AuditEvent>) -> BoxFuture<'_, ()> {
        self.0.lock().unwrap().extend(events);
        async {}.boxed()
    }
}

fn stage(
    keys: FakeKeys,
    store: FakeStore,
) -> (
    SealingDelivery<Delivered>,
    Delivered,
    Arc<FakeKeys>,
    Arc<FakeStore>,
) {
    let delivered = Delivered::default();
    let (keys, store) = (Arc::new(keys), Arc::new(store));
    (
        SealingDelivery::new(delivered.clone(), keys.clone(), store.clone()),
        delivered,
        keys,
        store,
    )
}

#[tokio::test]
async fn a_flush_seals_each_requests_bodies_under_one_data_key_and_references_them() {
    let (stage, delivered, keys, store) = stage(FakeKeys::default(), FakeStore::default());
    let accepted = event_with("r1", b"PROMPT-ONE", &[], 64).as_record(Record::Accepted);
    let batch = vec![
        accepted,
        event_with("r1", b"PROMPT-ONE", &[b"REPLY-", b"ONE"], 64),
        event_with("r2", b"PROMPT-TWO", &[b"REPLY-TWO"], 64),
        AuditEvent::new("r3", Decision::Unauthorized, 401),
    ];
    stage.deliver(batch).await;
    assert_eq!(
        keys.calls.load(Ordering::SeqCst),
        1,
        "one data key per flushed batch"
    );
    let events = delivered.0.lock().unwrap().clone();
    assert_eq!(events.len(), 4, "every event delivered, in order");
    assert_eq!(
        events
            .iter()
            .map(|e| e.request_id.as_str())
            .collect::<Vec<_>>(),
        ["r1", "r1", "r2", "r3"]
    );
    assert!(
        events[0].bodies.is_none(),
        "the accepted record has no bodies"
    );
    assert!(events[3].bodies.is_none());
    let objects = store.objects.lock().unwrap().clone();
    assert_eq!(objects.len(), 2);
    for (event, prompt, reply) in [
        (&events[1], &b"PROMPT-ONE"[..], &b"REPLY-ONE"[..]),
        (&events[2], b"PROMPT-TWO", b"REPLY-TWO"),
    ] {
        assert!(
            event.captured.is_none(),
            "plaintext dropped before delivery"
        );
        let reference = event.bodies.clone().unwrap();
        assert_eq!(reference.error, None);
        assert_eq!(
            reference.request,
            PartRef {
                bytes: prompt.len() as u64,
                truncated: false
            }
        );
        let object_key = reference.key.unwrap();
        assert_eq!(
            object_key,
            format!(
                "bodies/year=2026/month=11/day=25/hour=03/{}.json",
                event.request_id
            )
        );
        let stored = &objects[&object_key];
        let text = String::from_utf8_lossy(stored);
        assert!(
            !text.contains("PROMPT") && !text.contains("REPLY"),
            "{text}"
        );
        let object: BodiesObject = serde_json::from_slice(stored).unwrap();
        assert_eq!(object.event_id, event.event_id);
        assert_eq!(
            b64().decode(&object.encrypted_data_key).unwrap(),
            b"encrypted-42"
        );
        assert_eq!(
            open_both(&object, &event.request_id, 42).unwrap(),
            (prompt.to_vec(), reply.to_vec())
        );
        let json = serde_json::to_string(event).unwrap();
        assert!(
            !json.contains("PROMPT") && !json.contains("REPLY"),
            "{json}"
        );
    }
}

#[tokio::test]
async fn a_batch_without_bodies_asks_kms_nothing() {
    let (stage, delivered, keys, store) = stage(FakeKeys::default(), FakeStore::default());
    stage
        .deliver(vec![
            AuditEvent::new("r1", Decision::Allow, 200),
            event_with("r2", b"x", &[], 8).as_record(Record::Accepted),
        ])
        .await;
    assert_eq!(keys.calls.load(Ordering::SeqCst), 0);
    assert!(store.objects.lock().unwrap().is_empty());
    assert_eq!(delivered.0.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn a_kms_failure_still_delivers_the_event_without_a_reference() {
    let (stage, delivered, _, store) = stage(
        FakeKeys {
            fail: true,
            ..FakeKeys::default()
        },
        FakeStore::default(),
    );
    stage
        .deliver(vec![event_with("r1", b"PROMPT", &[b"REPLY"], 1024)])
        .await;
    assert!(store.objects.lock().unwrap().is_empty());
    let events = delivered.0.lock().unwrap().clone();
    assert_eq!(events.len(), 1, "the event is never held back");
    let reference = events[0].bodies.clone().unwrap();
    assert_eq!(reference.key, None);
    let error = reference.error.unwrap();
    assert!(error.contains("GenerateDataKey"), "{error}");
    assert_eq!(
        reference.response,
        PartRef {
            bytes: 5,
            truncated: false
        }
    );
    assert!(events[0].captured.is_none());
    assert!(!serde_json::to_string(&events[0])
        .unwrap()
        .contains("PROMPT"));
}

#[tokio::test]
async fn an_s3_failure_still_delivers_the_event_without_a_reference() {
    let (stage, delivered, _, _) = stage(
        FakeKeys::default(),
        FakeStore {
            fail: true,
            ..FakeStore::default()
        },
    );
    stage
        .deliver(vec![event_with("r1", b"PROMPT", &[b"REPLY"], 1024)])
        .await;
    let events = delivered.0.lock().unwrap().clone();
    assert_eq!(events.len(), 1);
    let reference = events[0].bodies.clone().unwrap();
    assert_eq!(reference.key, None);
    assert!(reference.error.unwrap().contains("PutObject"));
}
