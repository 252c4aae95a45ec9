use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use gateway_shared::audit::bodies::{seal, CapturedBodies, DataKey};
use gateway_shared::audit::{AuditEvent, Decision};

use super::*;

const KEY_ARN: &str = "arn:aws:kms:us-east-1:000000000000:key/bodies";
const TIME: &str = "2026-11-25T03:04:05.678Z";

#[derive(Default)]
struct FakeBucket {
    objects: Mutex<HashMap<String, Vec<u8>>>,
    lists: Mutex<usize>,
}

impl ObjectSource for FakeBucket {
    fn get(&self, key: &str) -> BoxFuture<'_, Result<Option<Vec<u8>>, BodiesCliError>> {
        let found = self.objects.lock().unwrap().get(key).cloned();
        async move { Ok(found) }.boxed()
    }

    fn list(&self, prefix: &str) -> BoxFuture<'_, Result<Vec<String>, BodiesCliError>> {
        *self.lists.lock().unwrap() += 1;
        let keys = self
            .objects
            .lock()
            .unwrap()
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        async move { Ok(keys) }.boxed()
    }
}

/// KMS as far as this command sees it: the one data key, or a refusal.
struct FakeKms {
    denied: bool,
}

impl KeyOpener for FakeKms {
    fn decrypt(
        &self,
        key_id: &str,
        encrypted: Vec<u8>,
    ) -> BoxFuture<'_, Result<Zeroizing<Vec<u8>>, BodiesCliError>> {
        let result = if self.denied {
            Err(BodiesCliError::Denied {
                permission: "kms:Decrypt",
                resource: key_id.to_string(),
                message: "AccessDeniedException: not authorized to perform kms:Decrypt".into(),
            })
        } else {
            assert_eq!(key_id, KEY_ARN);
            assert_eq!(encrypted, b"wrapped-key");
            Ok(Zeroizing::new(vec![0x42; 32]))
        };
        async move { result }.boxed()
    }
}

fn store(bucket: &FakeBucket, request_id: &str, request: &[u8], response: &[u8]) -> String {
    let mut event = AuditEvent::new(request_id, Decision::Allow, 200);
    event.time = TIME.into();
    let mut captured = CapturedBodies::of_request(&Bytes::copy_from_slice(request), 1024);
    captured.response.push(&Bytes::copy_from_slice(response));
    let key = DataKey::new(
        Zeroizing::new(vec![0x42; 32]),
        b"wrapped-key".to_vec(),
        KEY_ARN.into(),
    );
    let object = seal(&key, &event, &captured).unwrap();
    let object_key = bodies::object_key_for(TIME, request_id).unwrap();
    bucket
        .objects
        .lock()
        .unwrap()
        .insert(object_key.clone(), serde_json::to_vec(&object).unwrap());
    object_key
}

fn args(list: &[&str]) -> Args {
    let args = list.iter().map(|a| a.to_string()).collect();
    parse_args(args, Some("audit-bucket".into()))
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn bodies_are_found_by_request_id_and_written_byte_for_byte() {
    let bucket = FakeBucket::default();
    store(
        &bucket,
        "req-1",
        b"{\"q\":\"why\"}",
        b"\x00\xffbinary reply",
    );
    store(&bucket, "req-2", b"other", b"other");
    let dir = std::env::temp_dir().join(format!("gateway-audit-{}", uuid::Uuid::new_v4()));
    let dir_arg = dir.display().to_string();
    let args = args(&["--request-id", "req-1", "--out", &dir_arg]);
    let opened = open(&args, &bucket, &FakeKms { denied: false })
        .await
        .unwrap();
    assert_eq!(
        *bucket.lists.lock().unwrap(),
        1,
        "no hour: the prefix is listed"
    );
    let summary = report(&args, &opened).unwrap();
    assert_eq!(summary["request"]["truncated"], false);
    assert_eq!(summary["response"]["bytes"], 14);
    assert_eq!(
        std::fs::read(dir.join("req-1.request")).unwrap(),
        b"{\"q\":\"why\"}"
    );
    assert_eq!(
        std::fs::read(dir.join("req-1.response")).unwrap(),
        b"\x00\xffbinary reply"
    );
    std::fs::remove_dir_all(&dir).unwrap();

    // Printed: text as text, anything else as base64.
    let printed = report(&super::tests::args(&["--request-id", "req-1"]), &opened).unwrap();
    assert_eq!(printed["request"]["text"], "{\"q\":\"why\"}");
    assert!(printed["response"]["base64"].is_string());
}

#[tokio::test]
async fn an_hour_or_a_key_goes_straight_to_the_object() {
    let bucket = FakeBucket::default();
    let key = store(&bucket, "req-1", b"q", b"a");
    let by_hour = args(&["--request-id", "req-1", "--hour", "2026-11-25T03"]);
    assert!(open(&by_hour, &bucket, &FakeKms { denied: false })
        .await
        .is_ok());
    let by_key = args(&["--request-id", "req-1", "--key", &key]);
    assert!(open(&by_key, &bucket, &FakeKms { denied: false })
        .await
        .is_ok());
    assert_eq!(*bucket.lists.lock().unwrap(), 0);
    let wrong_hour = args(&["--request-id", "req-1", "--hour", "2026-11-25T04"]);
    let error = open(&wrong_hour, &bucket, &FakeKms { denied: false })
        .await
        .unwrap_err();
    assert!(matches!(error, BodiesCliError::NotFound { .. }), "{error}");
    assert_eq!(error.exit_code(), 1);
}

#[tokio::test]
async fn without_kms_decrypt_the_command_refuses_and_names_the_permission() {
    let bucket = FakeBucket::default();
    store(&bucket, "req-1", b"q", b"a");
    let error = open(
        &args(&["--request-id", "req-1"]),
        &bucket,
        &FakeKms { denied: true },
    )
    .await
    .unwrap_err();
    assert_eq!(error.exit_code(), 3);
    let message = error.to_string();
    assert!(
        message.starts_with("refused") && message.contains("kms:Decrypt"),
        "{message}"
    );
    assert!(message.contains(KEY_ARN), "{message}");
}

#[tokio::test]
async fn a_tampered_object_fails_loudly_and_writes_nothing() {
    let bucket = FakeBucket::default();
    let key = store(&bucket, "req-1", b"the question", b"the answer");
    let mut object: BodiesObject =
        serde_json::from_slice(&bucket.objects.lock().unwrap()[&key]).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut ciphertext = b64.decode(&object.response.ciphertext).unwrap();
    ciphertext[3] ^= 0x80;
    object.response.ciphertext = b64.encode(ciphertext);
    bucket
        .objects
        .lock()
        .unwrap()
        .insert(key, serde_json::to_vec(&object).unwrap());
    let error = open(
        &args(&["--request-id", "req-1"]),
        &bucket,
        &FakeKms { denied: false },
    )
    .await
    .unwrap_err();
    assert_eq!(error.exit_code(), 4);
    let message = error.to_string();
    assert!(
        message.contains("AUTHENTICATION FAILED") && message.contains("response"),
        "{message}"
    );
}

#[tokio::test]
async fn another_requests_object_under_this_requests_name_fails_authentication() {
    let bucket = FakeBucket::default();
    let other = store(&bucket, "req-2", b"q2", b"a2");
    let raw = bucket.objects.lock().unwrap()[&other].clone();
    let here = bodies::object_key_for(TIME, "req-1").unwrap();
    bucket.objects.lock().unwrap().insert(here, raw);
    let error = open(
        &args(&["--request-id", "req-1", "--hour", "2026-11-25T03"]),
        &bucket,
        &FakeKms { denied: false },
    )
    .await
    .unwrap_err();
    assert_eq!(error.exit_code(), 4, "{error}");
}

#[test]
fn failures_exit_with_what_they_mean() {
    let rejected = BodiesCliError::KeyRejected {
        key_id: KEY_ARN.into(),
        message: "InvalidCiphertextException".into(),
    };
    assert_eq!(rejected.exit_code(), 4);
    assert!(rejected.to_string().starts_with("AUTHENTICATION FAILED"));
    assert_eq!(BodiesCliError::Kms("throttled".into()).exit_code(), 1);
    assert_eq!(BodiesCliError::S3("unavailable".into()).exit_code(), 1);
}

#[test]
fn arguments_are_checked_before_anything_is_fetched() {
    let parse = |list: &[&str], bucket: Option<&str>| {
        parse_args(
            list.iter().map(|a| a.to_string()).collect(),
            bucket.map(str::to_string),
        )
    };
    assert!(matches!(parse(&["--help"], None), Ok(None)));
    for (list, bucket) in [
        (&["--hour", "2026-11-25T03"][..], Some("b")),
        (&["--request-id", "r"][..], None),
        (&["--request-id"][..], Some("b")),
        (
            &["--request-id", "r", "--hour", "2026-11-25"][..],
            Some("b"),
        ),
        (
            &["--request-id", "r", "--hour", "2026-11-25T03", "--key", "k"][..],
            Some("b"),
        ),
        (&["--request-id", "r", "--verbose"][..], Some("b")),
    ] {
        let error = parse(list, bucket).unwrap_err();
        assert_eq!(error.exit_code(), 2, "{list:?}: {error}");
    }
    let parsed = parse(&["--request-id", "r", "--bucket", "mine"], Some("env"))
        .unwrap()
        .unwrap();
    assert_eq!(parsed.bucket, "mine");
}
