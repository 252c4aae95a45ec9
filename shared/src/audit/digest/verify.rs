//! Walking the digest chain over a range of hours: what the verify command reports.
//!
//! For every hour of the range it checks the hour's digest (present, signed by the auditor's key,
//! canonical, for that hour), the link to the previous hour's digest (key, SHA-256, signature), and the
//! hour's audit objects against the digest's list: each listed object must still be the current version
//! at its key with the listed SHA-256, and every current object in the hour must be listed. An object
//! found where no valid digest lists it, but with the bytes of an object listed elsewhere, was moved.
//! A digest that fails its checks vouches for nothing: its objects count as unlisted.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use base64::Engine;

use super::store::{AuditStore, DigestVerifier, SignError, StoreError, Stored};
use super::{hex, sha256, DigestDocument, Layout, META_SIGNATURE};
use crate::audit::clock::Hour;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FindingKind {
    /// No digest for an hour of the range.
    MissingDigest,
    /// A digest whose signature is absent or not the key's.
    BadSignature,
    /// A digest that is not a canonical digest document, or lists objects outside its hour.
    MalformedDigest,
    /// A digest stored under another hour's key (digests swapped or copied).
    MisplacedDigest,
    /// A link to the previous digest that does not match it (replaced, reordered, restarted chain).
    BrokenChain,
    /// Listed in a digest, no longer there (deleted: a delete marker hides it).
    MissingObject,
    /// Listed in a digest, now with other bytes (a new version at the same key).
    AlteredObject,
    /// Not listed where it is, but has the bytes of an object a digest lists at another key.
    MovedObject,
    /// Present in an hour of the range, listed in no valid digest.
    UnlistedObject,
}

impl FindingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::MissingDigest => "missing-digest",
            FindingKind::BadSignature => "bad-signature",
            FindingKind::MalformedDigest => "malformed-digest",
            FindingKind::MisplacedDigest => "misplaced-digest",
            FindingKind::BrokenChain => "broken-chain",
            FindingKind::MissingObject => "missing-object",
            FindingKind::AlteredObject => "altered-object",
            FindingKind::MovedObject => "moved-object",
            FindingKind::UnlistedObject => "unlisted-object",
        }
    }
}

impl fmt::Display for FindingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    /// The object or digest key the finding is about.
    pub key: String,
    pub kind: FindingKind,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub from: Hour,
    pub to: Hour,
    /// Digests found in the range.
    pub digests: usize,
    /// Audit objects read in the range.
    pub objects: usize,
    /// Sorted by key, then kind.
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn intact(&self) -> bool {
        self.findings.is_empty()
    }

    pub fn of_kind(&self, kind: FindingKind) -> Vec<&Finding> {
        self.findings.iter().filter(|f| f.kind == kind).collect()
    }
}

/// One line per finding, `<kind>\t<key>\t<detail>`, then a summary line starting `intact:` or
/// `NOT INTACT:`.
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for finding in &self.findings {
            writeln!(f, "{}\t{}\t{}", finding.kind, finding.key, finding.detail)?;
        }
        let scope = format!(
            "hours {}..{}, {} digests, {} objects",
            self.from, self.to, self.digests, self.objects
        );
        if self.intact() {
            write!(f, "intact: {scope}")
        } else {
            write!(f, "NOT INTACT: {} findings; {scope}", self.findings.len())
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("the range ends ({to}) before it starts ({from})")]
    Range { from: Hour, to: Hour },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Sign(#[from] SignError),
}

fn signature_of(stored: &Stored) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(stored.metadata.get(META_SIGNATURE)?)
        .ok()
}

struct Findings(Vec<Finding>);

impl Findings {
    fn add(&mut self, kind: FindingKind, key: &str, detail: String) {
        self.0.push(Finding {
            key: key.to_string(),
            kind,
            detail,
        });
    }
}

/// Checks one digest; returns its document when it can be trusted.
async fn check_digest(
    layout: &Layout,
    verifier: &dyn DigestVerifier,
    hour: Hour,
    key: &str,
    stored: &Stored,
    findings: &mut Findings,
) -> Result<Option<DigestDocument>, VerifyError> {
    let signed = match signature_of(stored) {
        None => {
            findings.add(
                FindingKind::BadSignature,
                key,
                "no signature in its metadata (x-amz-meta-signature)".into(),
            );
            false
        }
        Some(signature) => {
            let valid = verifier.verify(sha256(&stored.bytes), &signature).await?;
            if !valid {
                findings.add(
                    FindingKind::BadSignature,
                    key,
                    "the signature is not the digest key's over these bytes".into(),
                );
            }
            valid
        }
    };
    let document = match DigestDocument::parse(&stored.bytes) {
        Ok(document) => document,
        Err(error) => {
            findings.add(FindingKind::MalformedDigest, key, error.to_string());
            return Ok(None);
        }
    };
    if document.hour != hour {
        findings.add(
            FindingKind::MisplacedDigest,
            key,
            format!(
                "holds the digest of hour {} (stored as hour {hour})",
                document.hour
            ),
        );
        return Ok(None);
    }
    if document.audit_prefix != layout.audit_prefix {
        findings.add(
            FindingKind::MalformedDigest,
            key,
            format!(
                "lists objects under {:?}, not {:?}",
                document.audit_prefix, layout.audit_prefix
            ),
        );
        return Ok(None);
    }
    let prefix = layout.hour_prefix(hour);
    if let Some(outside) = document
        .objects
        .iter()
        .find(|o| !o.key.starts_with(&prefix))
    {
        findings.add(
            FindingKind::MalformedDigest,
            key,
            format!("lists {}, outside its hour", outside.key),
        );
        return Ok(None);
    }
    Ok(signed.then_some(document))
}

/// The link from `hour`'s digest to the previous hour's.
fn check_link(
    layout: &Layout,
    hour: Hour,
    from: Hour,
    document: &DigestDocument,
    previous: Option<&Stored>,
    findings: &mut Findings,
) {
    let key = layout.digest_key(hour);
    let expected = layout.digest_key(hour.previous());
    match (&document.previous, previous) {
        // The first digest of the chain.
        (None, None) => {}
        (None, Some(_)) => findings.add(
            FindingKind::BrokenChain,
            &key,
            format!("starts a new chain although {expected} exists"),
        ),
        (Some(link), _) if link.key != expected => findings.add(
            FindingKind::BrokenChain,
            &key,
            format!(
                "links to {}, not to the previous hour's {expected}",
                link.key
            ),
        ),
        (Some(_), None) => {
            // Inside the range the missing digest is reported on its own.
            if hour == from {
                findings.add(
                    FindingKind::BrokenChain,
                    &key,
                    format!("links to {expected}, which is missing"),
                );
            }
        }
        (Some(link), Some(stored)) => {
            let actual = hex(&sha256(&stored.bytes));
            if link.sha256 != actual {
                findings.add(
                    FindingKind::BrokenChain,
                    &key,
                    format!(
                        "links to {expected} with sha256 {}, but its bytes now hash to {actual}",
                        link.sha256
                    ),
                );
            } else if stored.metadata.get(META_SIGNATURE) != Some(&link.signature) {
                findings.add(
                    FindingKind::BrokenChain,
                    &key,
                    format!("links to {expected} with another signature than it now carries"),
                );
            }
        }
    }
}

/// Verifies the hours `from..=to` of the audit trail.
pub async fn verify_range(
    store: &dyn AuditStore,
    verifier: &dyn DigestVerifier,
    layout: &Layout,
    from: Hour,
    to: Hour,
) -> Result<Report, VerifyError> {
    if to < from {
        return Err(VerifyError::Range { from, to });
    }
    let mut findings = Findings(Vec::new());
    let hours: Vec<Hour> = (0..=from.hours_until(to)).map(|n| from.plus(n)).collect();

    // The stored digests, and the one before the range for the first link.
    let mut stored: BTreeMap<Hour, Option<Stored>> = BTreeMap::new();
    for hour in std::iter::once(from.previous()).chain(hours.iter().copied()) {
        stored.insert(hour, store.get(&layout.digest_key(hour)).await?);
    }

    let mut documents: BTreeMap<Hour, DigestDocument> = BTreeMap::new();
    let mut digests = 0;
    for &hour in &hours {
        let key = layout.digest_key(hour);
        let Some(Some(digest)) = stored.get(&hour) else {
            findings.add(
                FindingKind::MissingDigest,
                &key,
                format!("no digest for hour {hour}"),
            );
            continue;
        };
        digests += 1;
        if let Some(document) =
            check_digest(layout, verifier, hour, &key, digest, &mut findings).await?
        {
            documents.insert(hour, document);
        }
    }
    for (&hour, document) in &documents {
        let previous = stored.get(&hour.previous()).and_then(Option::as_ref);
        check_link(layout, hour, from, document, previous, &mut findings);
    }

    // Where every listed object is listed, and by which digest; listed objects by content.
    let mut listed_by_sha: HashMap<&str, Vec<(&str, String)>> = HashMap::new();
    for (&hour, document) in &documents {
        for entry in &document.objects {
            listed_by_sha
                .entry(entry.sha256.as_str())
                .or_default()
                .push((entry.key.as_str(), layout.digest_key(hour)));
        }
    }

    let mut objects = 0;
    // Listed objects that are gone, and objects no digest lists (key, sha256).
    let mut missing: BTreeMap<String, String> = BTreeMap::new();
    let mut unlisted: Vec<(String, String)> = Vec::new();
    for &hour in &hours {
        let current: BTreeMap<String, bool> = store
            .list_latest(&layout.hour_prefix(hour))
            .await?
            .into_iter()
            .map(|l| (l.key, l.delete_marker))
            .collect();
        let document = documents.get(&hour);
        let listed: BTreeSet<&str> = document
            .map(|d| d.objects.iter().map(|o| o.key.as_str()).collect())
            .unwrap_or_default();
        if let Some(document) = document {
            let digest_key = layout.digest_key(hour);
            for entry in &document.objects {
                let present = match current.get(&entry.key) {
                    Some(false) => store.get(&entry.key).await?,
                    _ => None,
                };
                let Some(object) = present else {
                    let how = match current.get(&entry.key) {
                        Some(true) => "a delete marker hides it",
                        _ => "no such key",
                    };
                    missing.insert(entry.key.clone(), format!("listed in {digest_key}; {how}"));
                    continue;
                };
                objects += 1;
                let actual = hex(&sha256(&object.bytes));
                if actual != entry.sha256 {
                    findings.add(
                        FindingKind::AlteredObject,
                        &entry.key,
                        format!(
                            "sha256 {actual} (version {}), {digest_key} lists {} (version {})",
                            object.version_id.as_deref().unwrap_or("null"),
                            entry.sha256,
                            entry.version_id.as_deref().unwrap_or("null"),
                        ),
                    );
                }
            }
        }
        for (key, delete_marker) in &current {
            if *delete_marker || listed.contains(key.as_str()) {
                continue;
            }
            // Read to tell a moved object from a foreign one.
            if let Some(object) = store.get(key).await? {
                objects += 1;
                unlisted.push((key.clone(), hex(&sha256(&object.bytes))));
            }
        }
    }
    for (key, sha) in unlisted {
        let elsewhere = listed_by_sha
            .get(sha.as_str())
            .and_then(|places| places.iter().find(|(listed_key, _)| *listed_key != key));
        match elsewhere {
            Some((listed_key, digest_key)) => {
                missing.remove(*listed_key);
                findings.add(
                    FindingKind::MovedObject,
                    &key,
                    format!("has the bytes {digest_key} lists for {listed_key}"),
                );
            }
            None => findings.add(
                FindingKind::UnlistedObject,
                &key,
                "listed in no valid digest".into(),
            ),
        }
    }
    for (key, detail) in missing {
        findings.add(FindingKind::MissingObject, &key, detail);
    }

    let mut findings = findings.0;
    findings.sort();
    Ok(Report {
        from,
        to,
        digests,
        objects,
        findings,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::audit::digest::memory::{FakeKey, MemoryStore};
    use crate::audit::digest::{seal, DigestSigner, ObjectEntry, SealedDigest, DIGEST_VERSION};

    const KEY: &str = "arn:aws:kms:us-east-1:123456789012:key/test";

    struct Trail {
        store: MemoryStore,
        key: FakeKey,
        layout: Layout,
        hours: Vec<Hour>,
    }

    fn hour(n: i64) -> Hour {
        Hour::parse("2026-11-25T03").unwrap().plus(n)
    }

    fn object_key(layout: &Layout, at: Hour, name: &str) -> String {
        format!("{}{name}.jsonl.gz", layout.hour_prefix(at))
    }

    impl Trail {
        /// Three hours with two, zero and one objects, each digested and chained.
        async fn new() -> Trail {
            let trail = Trail {
                store: MemoryStore::new(),
                key: FakeKey::new(KEY, "secret"),
                layout: Layout::default(),
                hours: vec![hour(0), hour(1), hour(2)],
            };
            trail.put_object(hour(0), "a", "events of a");
            trail.put_object(hour(0), "b", "events of b");
            trail.put_object(hour(2), "c", "events of c");
            let mut previous: Option<SealedDigest> = None;
            for &at in &trail.hours {
                let sealed = trail.digest(at, previous.as_ref()).await;
                trail
                    .store
                    .put(&sealed.key, sealed.bytes.clone(), sealed.metadata.clone());
                previous = Some(sealed);
            }
            trail
        }

        fn put_object(&self, at: Hour, name: &str, content: &str) -> String {
            let key = object_key(&self.layout, at, name);
            self.store
                .put(&key, content.as_bytes().to_vec(), BTreeMap::new());
            key
        }

        /// The digest of an hour as it stands, linked to `previous`.
        async fn digest(&self, at: Hour, previous: Option<&SealedDigest>) -> SealedDigest {
            let objects = self
                .store
                .current_keys(&self.layout.hour_prefix(at))
                .into_iter()
                .map(|key| {
                    let stored = self.store.current(&key).unwrap();
                    ObjectEntry::of(&key, stored.version_id, &stored.bytes, 1)
                })
                .collect();
            let document = DigestDocument {
                digest_version: DIGEST_VERSION,
                hour: at,
                audit_prefix: self.layout.audit_prefix.clone(),
                objects,
                previous: previous.map(SealedDigest::link),
                incomplete_check: None,
            };
            seal(&document, self.layout.digest_key(at), &self.key)
                .await
                .unwrap()
        }

        async fn verify(&self) -> Report {
            self.verify_hours(hour(0), hour(2)).await
        }

        async fn verify_hours(&self, from: Hour, to: Hour) -> Report {
            verify_range(&self.store, &self.key, &self.layout, from, to)
                .await
                .unwrap()
        }

        fn digest_key(&self, n: i64) -> String {
            self.layout.digest_key(hour(n))
        }

        fn kinds(report: &Report) -> Vec<(FindingKind, String)> {
            report
                .findings
                .iter()
                .map(|f| (f.kind, f.key.clone()))
                .collect()
        }
    }

    #[tokio::test]
    async fn an_untouched_range_is_intact() {
        let trail = Trail::new().await;
        let report = trail.verify().await;
        assert!(report.intact(), "{report}");
        assert_eq!((report.digests, report.objects), (3, 3));
        assert_eq!(
            report.to_string(),
            "intact: hours 2026-11-25T03..2026-11-25T05, 3 digests, 3 objects"
        );
        // A range that starts inside the chain checks its first link against the digest before it.
        assert!(trail.verify_hours(hour(1), hour(2)).await.intact());
    }

    #[tokio::test]
    async fn a_new_version_with_other_bytes_is_an_altered_object() {
        let trail = Trail::new().await;
        let key = trail.put_object(hour(0), "a", "forged events");
        let report = trail.verify().await;
        assert_eq!(Trail::kinds(&report), [(FindingKind::AlteredObject, key)]);
        assert!(report.to_string().starts_with("altered-object\taudit/"));
        assert!(report.to_string().ends_with(
            "NOT INTACT: 1 findings; hours 2026-11-25T03..2026-11-25T05, 3 digests, 3 objects"
        ));
    }

    #[tokio::test]
    async fn a_delete_marker_is_a_missing_object() {
        let trail = Trail::new().await;
        let key = object_key(&trail.layout, hour(2), "c");
        trail.store.delete(&key);
        let report = trail.verify().await;
        assert_eq!(Trail::kinds(&report), [(FindingKind::MissingObject, key)]);
        assert!(report.findings[0].detail.contains("delete marker"));
    }

    #[tokio::test]
    async fn an_object_moved_to_another_hour_is_reported_where_it_is() {
        let trail = Trail::new().await;
        let from = object_key(&trail.layout, hour(0), "b");
        let to = trail.put_object(hour(1), "b", "events of b");
        trail.store.delete(&from);
        let report = trail.verify().await;
        assert_eq!(Trail::kinds(&report), [(FindingKind::MovedObject, to)]);
        assert!(report.findings[0].detail.contains(&from), "{report}");
    }

    #[tokio::test]
    async fn an_object_no_digest_lists_is_unlisted() {
        let trail = Trail::new().await;
        let key = trail.put_object(hour(1), "late", "a late write");
        let report = trail.verify().await;
        assert_eq!(Trail::kinds(&report), [(FindingKind::UnlistedObject, key)]);
    }

    #[tokio::test]
    async fn an_edited_digest_fails_its_signature_and_breaks_the_next_link() {
        let trail = Trail::new().await;
        let key = trail.digest_key(0);
        let stored = trail.store.current(&key).unwrap();
        // Drop object b from the list, keep the signature: what an intruder without the key can do.
        let mut document = DigestDocument::parse(&stored.bytes).unwrap();
        document.objects.pop();
        let bytes = document.canonical_bytes().unwrap();
        trail.store.put(&key, bytes, stored.metadata);
        let report = trail.verify().await;
        let kinds = Trail::kinds(&report);
        assert!(
            kinds.contains(&(FindingKind::BadSignature, key.clone())),
            "{report}"
        );
        assert!(
            kinds.contains(&(FindingKind::BrokenChain, trail.digest_key(1))),
            "{report}"
        );
        // Nothing in that hour is vouched for any more.
        assert_eq!(
            report.of_kind(FindingKind::UnlistedObject).len(),
            2,
            "{report}"
        );
    }

    #[tokio::test]
    async fn a_digest_signed_with_another_key_fails() {
        let trail = Trail::new().await;
        let intruder = FakeKey::new(KEY, "not the secret");
        let key = trail.digest_key(2);
        let stored = trail.store.current(&key).unwrap();
        let document = DigestDocument::parse(&stored.bytes).unwrap();
        let forged = seal(&document, key.clone(), &intruder).await.unwrap();
        trail.store.put(&key, forged.bytes, forged.metadata);
        let report = trail.verify().await;
        assert_eq!(
            Trail::kinds(&report),
            [
                (
                    FindingKind::UnlistedObject,
                    object_key(&trail.layout, hour(2), "c")
                ),
                (FindingKind::BadSignature, key)
            ]
        );
    }

    #[tokio::test]
    async fn a_digest_without_signature_metadata_fails() {
        let trail = Trail::new().await;
        let key = trail.digest_key(1);
        let stored = trail.store.current(&key).unwrap();
        trail.store.put(&key, stored.bytes, BTreeMap::new());
        let report = trail.verify().await;
        let kinds = Trail::kinds(&report);
        assert!(
            kinds.contains(&(FindingKind::BadSignature, key)),
            "{report}"
        );
        // The next digest recorded the signature that was there.
        assert!(
            kinds.contains(&(FindingKind::BrokenChain, trail.digest_key(2))),
            "{report}"
        );
    }

    #[tokio::test]
    async fn swapped_digests_are_misplaced_and_break_the_chain() {
        let trail = Trail::new().await;
        let (first, second) = (trail.digest_key(0), trail.digest_key(1));
        let a = trail.store.current(&first).unwrap();
        let b = trail.store.current(&second).unwrap();
        trail.store.put(&first, b.bytes, b.metadata);
        trail.store.put(&second, a.bytes, a.metadata);
        let report = trail.verify().await;
        let kinds = Trail::kinds(&report);
        assert!(
            kinds.contains(&(FindingKind::MisplacedDigest, first)),
            "{report}"
        );
        assert!(
            kinds.contains(&(FindingKind::MisplacedDigest, second)),
            "{report}"
        );
        assert!(
            kinds.contains(&(FindingKind::BrokenChain, trail.digest_key(2))),
            "{report}"
        );
        assert!(
            report.of_kind(FindingKind::BadSignature).is_empty(),
            "{report}"
        );
    }

    #[tokio::test]
    async fn a_chain_restarted_midway_is_broken_even_when_well_signed() {
        let trail = Trail::new().await;
        // What a job that lost track of the chain would write: a valid digest with no link.
        let restarted = trail.digest(hour(1), None).await;
        trail
            .store
            .put(&restarted.key, restarted.bytes, restarted.metadata);
        let report = trail.verify().await;
        let kinds = Trail::kinds(&report);
        assert!(
            kinds.contains(&(FindingKind::BrokenChain, trail.digest_key(1))),
            "{report}"
        );
        assert!(
            kinds.contains(&(FindingKind::BrokenChain, trail.digest_key(2))),
            "{report}"
        );
    }

    #[tokio::test]
    async fn a_deleted_digest_is_missing_and_its_first_link_is_checked() {
        let trail = Trail::new().await;
        trail.store.delete(&trail.digest_key(0));
        let report = trail.verify().await;
        let kinds = Trail::kinds(&report);
        assert!(
            kinds.contains(&(FindingKind::MissingDigest, trail.digest_key(0))),
            "{report}"
        );
        assert_eq!(
            report.of_kind(FindingKind::UnlistedObject).len(),
            2,
            "{report}"
        );
        // Verifying from the next hour: its link points at a digest that is gone.
        let later = trail.verify_hours(hour(1), hour(2)).await;
        assert_eq!(
            Trail::kinds(&later),
            [(FindingKind::BrokenChain, trail.digest_key(1))]
        );
    }

    #[tokio::test]
    async fn hours_without_digests_and_non_canonical_digests_are_reported() {
        let trail = Trail::new().await;
        let report = trail.verify_hours(hour(0), hour(3)).await;
        assert_eq!(
            Trail::kinds(&report),
            [(FindingKind::MissingDigest, trail.digest_key(3))]
        );
        // Re-serialized with whitespace and properly signed: still not a digest this verifier takes.
        let key = trail.digest_key(1);
        let stored = trail.store.current(&key).unwrap();
        let document = DigestDocument::parse(&stored.bytes).unwrap();
        let pretty = serde_json::to_vec_pretty(&document).unwrap();
        let signature = trail.key.sign(sha256(&pretty)).await.unwrap();
        let mut metadata = stored.metadata.clone();
        metadata.insert(
            META_SIGNATURE.into(),
            crate::audit::digest::base64(&signature.bytes),
        );
        trail.store.put(&key, pretty, metadata);
        let report = trail.verify().await;
        assert!(
            Trail::kinds(&report).contains(&(FindingKind::MalformedDigest, key)),
            "{report}"
        );
    }

    #[tokio::test]
    async fn a_range_ending_before_it_starts_is_refused() {
        let trail = Trail::new().await;
        let result = verify_range(&trail.store, &trail.key, &trail.layout, hour(2), hour(1)).await;
        assert!(matches!(result, Err(VerifyError::Range { .. })));
    }
}
