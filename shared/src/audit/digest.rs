//! Tamper evidence for the audit trail, in the manner of CloudTrail's log file integrity validation:
//! every hour gets a signed digest object that lists every audit object of that hour and chains to the
//! previous hour's digest. The verify command ([`verify_range`]) walks the chain.
//!
//! # Layout
//! - Audit objects: `<audit prefix>year=YYYY/month=MM/day=DD/hour=HH/<name>.jsonl.gz` (prefix `audit/`).
//! - Digests: `<digest prefix>year=YYYY/month=MM/day=DD/hour=HH.json` (prefix `digests/`), one per hour,
//!   empty hours included, from the hour of the first audit object on. Outside the audit prefix, so
//!   the Athena table never reads them.
//!
//! # Completeness by construction
//! An hour's objects are final once the hour has ended plus a grace period:
//! - the audit writer names an object after the hour in which it *writes* it (not the events' times),
//!   so nothing it writes later can land in an hour that has ended; a put that started in the hour
//!   ends within the writer's timeout, which the grace period exceeds;
//! - the digest job writes into an hour only the one object of `incomplete` records it reports there,
//!   just before it digests that hour ([`Layout::incomplete_key`]);
//! - a digest is made only for an hour that ended more than the grace period ago.
//!
//! Any object that appears in a digested hour afterwards is therefore not the gateway's, and the
//! verify command reports it as unlisted.
//!
//! # Format and canonicalization
//! The digest object's bytes are a [`DigestDocument`] serialized as compact JSON (serde_json: fields in
//! the struct's order, no whitespace, no trailing newline, `null` for an absent option, strings in
//! UTF-8 with JSON's mandatory escapes only), objects sorted by key. The same inputs always give the
//! same bytes. The SHA-256 of exactly those bytes is what is signed and what the next digest records;
//! a reader checks the bytes it fetched, never a re-serialization, and refuses bytes that are not
//! canonical ([`DigestDocument::parse`]).
//!
//! # Signature
//! KMS `Sign` with an asymmetric key (KeySpec RSA_2048 or RSA_3072, KeyUsage SIGN_VERIFY), algorithm
//! RSASSA_PSS_SHA_256, MessageType DIGEST over the SHA-256 of the digest's bytes (the digest can exceed
//! KMS's 4 KiB limit on raw messages). The signature travels as the object's user metadata
//! (`x-amz-meta-signature`, base64), with the key's ARN and the algorithm
//! (`x-amz-meta-signing-key-id`, `x-amz-meta-signing-algorithm`), as CloudTrail does: the signed
//! bytes are the whole object. Verification calls KMS `Verify` with the key the auditor names (never
//! the key a digest claims), which needs `kms:Verify` on that key.
//!
//! # Chain
//! Each digest's `previous` names the previous hour's digest: its key, the SHA-256 of its bytes and
//! its signature (`null` only in the first digest). Moving, replacing or dropping a digest breaks
//! the link of the one after it; forging one needs the signing key.

mod store;
mod verify;

#[cfg(any(test, feature = "test-util"))]
pub mod memory;

use std::collections::BTreeMap;

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

pub use store::{
    AuditStore, DigestSigner, DigestVerifier, KmsDigestKey, Listed, NewObject, PutOutcome,
    S3AuditStore, SignError, Signature, StoreError, Stored,
};
pub use verify::{verify_range, Finding, FindingKind, Report, VerifyError};

use super::clock::Hour;
use crate::config::{ConfigError, Settings};

/// The version of [`DigestDocument`]'s format.
pub const DIGEST_VERSION: u32 = 1;
/// The one signing algorithm digests use (KMS's name for it).
pub const SIGNING_ALGORITHM: &str = "RSASSA_PSS_SHA_256";
/// User metadata of a digest object (S3 sends them as `x-amz-meta-<name>`).
pub const META_SIGNATURE: &str = "signature";
pub const META_KEY_ID: &str = "signing-key-id";
pub const META_ALGORITHM: &str = "signing-algorithm";

pub const DEFAULT_AUDIT_PREFIX: &str = "audit/";
pub const DEFAULT_DIGEST_PREFIX: &str = "digests/";

/// Where audit objects and digests live in the audit bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub audit_prefix: String,
    pub digest_prefix: String,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            audit_prefix: DEFAULT_AUDIT_PREFIX.into(),
            digest_prefix: DEFAULT_DIGEST_PREFIX.into(),
        }
    }
}

fn with_slash(mut prefix: String) -> String {
    if !prefix.ends_with('/') {
        prefix.push('/');
    }
    prefix
}

impl Layout {
    /// `GATEWAY_AUDIT_PREFIX` (default `audit/`), `GATEWAY_AUDIT_DIGEST_PREFIX` (default `digests/`).
    /// Neither may contain the other: a digest must never be read as an audit object, nor the reverse.
    pub fn from_settings(settings: &dyn Settings) -> Result<Self, ConfigError> {
        let layout = Layout {
            audit_prefix: with_slash(
                settings
                    .get("GATEWAY_AUDIT_PREFIX")
                    .unwrap_or_else(|| DEFAULT_AUDIT_PREFIX.into()),
            ),
            digest_prefix: with_slash(
                settings
                    .get("GATEWAY_AUDIT_DIGEST_PREFIX")
                    .unwrap_or_else(|| DEFAULT_DIGEST_PREFIX.into()),
            ),
        };
        if layout.audit_prefix.starts_with(&layout.digest_prefix)
            || layout.digest_prefix.starts_with(&layout.audit_prefix)
        {
            return Err(ConfigError::Invalid {
                name: "GATEWAY_AUDIT_DIGEST_PREFIX",
                reason: format!(
                    "{:?} and the audit prefix {:?} overlap; digests need a prefix of their own",
                    layout.digest_prefix, layout.audit_prefix
                ),
            });
        }
        Ok(layout)
    }

    /// `audit/year=2026/month=11/day=25/hour=03/`
    pub fn hour_prefix(&self, hour: Hour) -> String {
        format!("{}{}/", self.audit_prefix, hour.partition())
    }

    /// `digests/year=2026/month=11/day=25/hour=03.json`
    pub fn digest_key(&self, hour: Hour) -> String {
        format!("{}{}.json", self.digest_prefix, hour.partition())
    }

    /// The hour a digest key is for.
    pub fn digest_hour(&self, key: &str) -> Option<Hour> {
        Hour::from_partition(
            key.strip_prefix(&self.digest_prefix)?
                .strip_suffix(".json")?,
        )
    }

    /// The hour partition an audit object's key is in.
    pub fn object_hour(&self, key: &str) -> Option<Hour> {
        let rest = key.strip_prefix(&self.audit_prefix)?;
        let (partition, name) = rest.rsplit_once('/')?;
        if name.is_empty() {
            return None;
        }
        Hour::from_partition(partition)
    }

    /// The object of `incomplete` records that the digest job writes into hour `written_in` (just
    /// before digesting it) for the requests of hour `checked` whose final never came.
    pub fn incomplete_key(&self, written_in: Hour, checked: Hour) -> String {
        format!(
            "{}incomplete-{checked}.jsonl.gz",
            self.hour_prefix(written_in)
        )
    }
}

/// One hour's digest: what the bytes of a digest object say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestDocument {
    pub digest_version: u32,
    /// The hour whose objects are listed.
    pub hour: Hour,
    /// The audit prefix the objects' keys start with.
    pub audit_prefix: String,
    /// Every audit object of the hour (keys under `<audit_prefix><hour partition>/`), sorted by key.
    pub objects: Vec<ObjectEntry>,
    /// The previous hour's digest; `None` only in the first digest of the chain.
    pub previous: Option<PreviousDigest>,
    /// The incomplete-request check this run made (see the audit-digest function).
    pub incomplete_check: Option<IncompleteCheck>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectEntry {
    pub key: String,
    /// The S3 version digested (`None` in a bucket without versioning).
    pub version_id: Option<String>,
    /// SHA-256 of the object's bytes as stored (the gzip bytes), hex.
    pub sha256: String,
    pub bytes: u64,
    /// Audit events (JSON lines) in the object.
    pub events: u64,
}

impl ObjectEntry {
    /// The entry of an object read from the bucket.
    pub fn of(key: &str, version_id: Option<String>, bytes: &[u8], events: u64) -> ObjectEntry {
        ObjectEntry {
            key: key.to_string(),
            version_id,
            sha256: hex(&sha256(bytes)),
            bytes: bytes.len() as u64,
            events,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviousDigest {
    pub key: String,
    /// SHA-256 of the previous digest object's bytes, hex.
    pub sha256: String,
    /// Its signature, base64 (as in its `x-amz-meta-signature`).
    pub signature: String,
}

/// Which requests were checked for a missing final: those with an `authorized` or `accepted` record in
/// the objects of `hour`, against the final and incomplete records in the objects of
/// `window_from..=window_to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncompleteCheck {
    pub hour: Hour,
    pub window_from: Hour,
    pub window_to: Hour,
    /// How many incomplete records the check wrote.
    pub incomplete: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestFormatError {
    #[error("not a digest document: {0}")]
    Json(String),
    #[error("digest_version {0} is not one this build reads ({DIGEST_VERSION})")]
    Version(u32),
    #[error("objects are not sorted by key without repeats")]
    Unsorted,
    #[error("the bytes are not the document's canonical serialization")]
    NotCanonical,
}

impl DigestDocument {
    /// The canonical bytes: what is stored, hashed and signed.
    pub fn canonical_bytes(&self) -> Result<Vec<u8>, DigestFormatError> {
        if !self.objects.windows(2).all(|w| w[0].key < w[1].key) {
            return Err(DigestFormatError::Unsorted);
        }
        serde_json::to_vec(self).map_err(|e| DigestFormatError::Json(e.to_string()))
    }

    /// Reads a digest object's bytes, refusing anything but the canonical form of a known version.
    pub fn parse(bytes: &[u8]) -> Result<DigestDocument, DigestFormatError> {
        let document: DigestDocument =
            serde_json::from_slice(bytes).map_err(|e| DigestFormatError::Json(e.to_string()))?;
        if document.digest_version != DIGEST_VERSION {
            return Err(DigestFormatError::Version(document.digest_version));
        }
        if document.canonical_bytes()? != bytes {
            return Err(DigestFormatError::NotCanonical);
        }
        Ok(document)
    }
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    sha2::Sha256::digest(bytes).into()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A digest ready to store: its bytes and the metadata carrying its signature.
#[derive(Debug, Clone)]
pub struct SealedDigest {
    pub key: String,
    pub bytes: Vec<u8>,
    pub metadata: BTreeMap<String, String>,
}

impl SealedDigest {
    /// The link the next hour's digest records.
    pub fn link(&self) -> PreviousDigest {
        PreviousDigest {
            key: self.key.clone(),
            sha256: hex(&sha256(&self.bytes)),
            signature: self
                .metadata
                .get(META_SIGNATURE)
                .cloned()
                .unwrap_or_default(),
        }
    }

    /// A stored digest as the chain sees it (whatever it holds).
    pub fn from_stored(key: &str, stored: Stored) -> SealedDigest {
        SealedDigest {
            key: key.to_string(),
            bytes: stored.bytes,
            metadata: stored.metadata,
        }
    }

    pub fn object(&self) -> NewObject {
        NewObject {
            key: self.key.clone(),
            bytes: self.bytes.clone(),
            content_type: "application/json",
            content_encoding: None,
            metadata: self.metadata.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error(transparent)]
    Format(#[from] DigestFormatError),
    #[error(transparent)]
    Sign(#[from] SignError),
}

/// Serializes and signs a digest for `key`.
pub async fn seal(
    document: &DigestDocument,
    key: String,
    signer: &dyn DigestSigner,
) -> Result<SealedDigest, SealError> {
    let bytes = document.canonical_bytes()?;
    let signature = signer.sign(sha256(&bytes)).await?;
    let metadata = BTreeMap::from([
        (META_SIGNATURE.to_string(), base64(&signature.bytes)),
        (META_KEY_ID.to_string(), signature.key_id),
        (META_ALGORITHM.to_string(), signature.algorithm),
    ]);
    Ok(SealedDigest {
        key,
        bytes,
        metadata,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use std::collections::HashMap;

    fn document() -> DigestDocument {
        DigestDocument {
            digest_version: DIGEST_VERSION,
            hour: Hour::parse("2026-11-25T03").unwrap(),
            audit_prefix: "audit/".into(),
            objects: vec![
                ObjectEntry {
                    key: "audit/year=2026/month=11/day=25/hour=03/a.jsonl.gz".into(),
                    version_id: Some("v1".into()),
                    sha256: "00".repeat(32),
                    bytes: 10,
                    events: 2,
                },
                ObjectEntry {
                    key: "audit/year=2026/month=11/day=25/hour=03/b.jsonl.gz".into(),
                    version_id: None,
                    sha256: "11".repeat(32),
                    bytes: 11,
                    events: 1,
                },
            ],
            previous: None,
            incomplete_check: None,
        }
    }

    #[test]
    fn canonical_bytes_are_compact_ordered_and_round_trip() {
        let document = document();
        let bytes = document.canonical_bytes().unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with(
            r#"{"digest_version":1,"hour":"2026-11-25T03","audit_prefix":"audit/","objects":[{"key":"#
        ));
        assert!(text.ends_with(r#""previous":null,"incomplete_check":null}"#));
        assert_eq!(DigestDocument::parse(&bytes).unwrap(), document);
    }

    #[test]
    fn parse_refuses_anything_but_the_canonical_form() {
        let bytes = document().canonical_bytes().unwrap();
        let pretty = serde_json::to_vec_pretty(&document()).unwrap();
        assert_eq!(
            DigestDocument::parse(&pretty),
            Err(DigestFormatError::NotCanonical)
        );
        let mut spaced = bytes.clone();
        spaced.push(b'\n');
        assert_eq!(
            DigestDocument::parse(&spaced),
            Err(DigestFormatError::NotCanonical)
        );
        let mut swapped = document();
        swapped.objects.reverse();
        let unsorted = serde_json::to_vec(&swapped).unwrap();
        assert_eq!(
            DigestDocument::parse(&unsorted),
            Err(DigestFormatError::Unsorted)
        );
        let extra = String::from_utf8(bytes)
            .unwrap()
            .replacen('{', r#"{"extra":1,"#, 1);
        assert!(matches!(
            DigestDocument::parse(extra.as_bytes()),
            Err(DigestFormatError::Json(_))
        ));
        let mut future = document();
        future.digest_version = 2;
        assert_eq!(
            DigestDocument::parse(&serde_json::to_vec(&future).unwrap()),
            Err(DigestFormatError::Version(2))
        );
    }

    #[test]
    fn layout_names_hours_digests_and_incomplete_objects() {
        let layout = Layout::default();
        let hour = Hour::parse("2026-11-25T03").unwrap();
        assert_eq!(
            layout.digest_key(hour),
            "digests/year=2026/month=11/day=25/hour=03.json"
        );
        assert_eq!(layout.digest_hour(&layout.digest_key(hour)), Some(hour));
        assert_eq!(
            layout.hour_prefix(hour),
            "audit/year=2026/month=11/day=25/hour=03/"
        );
        let incomplete = layout.incomplete_key(hour.next(), hour);
        assert_eq!(
            incomplete,
            "audit/year=2026/month=11/day=25/hour=04/incomplete-2026-11-25T03.jsonl.gz"
        );
        assert_eq!(layout.object_hour(&incomplete), Some(hour.next()));
        assert_eq!(
            layout.object_hour("audit/year=2026/month=11/day=25/hour=03/"),
            None
        );
        assert_eq!(
            layout.object_hour("other/year=2026/month=11/day=25/hour=03/x"),
            None
        );
    }

    #[test]
    fn overlapping_prefixes_are_refused() {
        let settings: HashMap<String, String> = [
            ("GATEWAY_AUDIT_PREFIX".to_string(), "audit".to_string()),
            (
                "GATEWAY_AUDIT_DIGEST_PREFIX".to_string(),
                "audit/digests".to_string(),
            ),
        ]
        .into();
        assert!(Layout::from_settings(&settings).is_err());
        let fine: HashMap<String, String> = HashMap::new();
        assert_eq!(
            Layout::from_settings(&fine as &dyn Settings).unwrap(),
            Layout::default()
        );
    }
}
