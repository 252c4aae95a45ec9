//! An execution environment's in-memory copy of a small DynamoDB table the authorizer consults on
//! every request (revocations, API keys), so that no request waits on DynamoDB.
//!
//! Each such table carries a `by-update` index: one partition (`rev`, a constant) sorted by
//! `updated_ms`, the writer's clock at its last change. A [`Mirror`] loads the whole index once, then
//! polls it for what changed, every half of its `ttl`, in the background. A lookup answers from
//! memory while the copy is younger than `ttl`; an older copy (an environment thawed after a pause, or
//! polls failing) is polled first, and if that fails the lookup fails, so callers fail closed. `ttl`
//! is therefore the staleness bound of any change to the table.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use tokio::sync::RwLock;

/// The index by update time, and the value of its one partition.
pub const UPDATE_INDEX: &str = "by-update";
pub const UPDATE_PARTITION_ATTRIBUTE: &str = "rev";
pub const UPDATE_PARTITION: &str = "r";
pub const UPDATED_MS_ATTRIBUTE: &str = "updated_ms";
/// Polls read this far back again: index updates are eventually consistent, and writers' clocks differ.
const POLL_OVERLAP_MS: u64 = 60_000;

pub type Item = HashMap<String, AttributeValue>;

/// One record as the index lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<R> {
    pub key: String,
    pub record: R,
    /// Epoch seconds after which the record no longer matters (None: kept).
    pub expires_at: Option<u64>,
    pub updated_ms: u64,
}

/// Where a mirror reads its changes from.
pub trait Source: Send + Sync + 'static {
    type Record: Clone + Send + Sync + 'static;
    type Error: std::fmt::Display + Send + 'static;
    fn changed_since(
        &self,
        since_ms: u64,
    ) -> impl Future<Output = Result<Vec<Entry<Self::Record>>, Self::Error>> + Send;
}

/// Every item of `table` updated at or after `since_ms`, through its update index.
pub async fn query_changed_since(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    since_ms: u64,
) -> Result<
    Vec<Item>,
    aws_sdk_dynamodb::error::SdkError<aws_sdk_dynamodb::operation::query::QueryError>,
> {
    let mut found = Vec::new();
    let mut start = None;
    loop {
        let page = client
            .query()
            .table_name(table)
            .index_name(UPDATE_INDEX)
            .key_condition_expression("#p = :p AND #u >= :since")
            .expression_attribute_names("#p", UPDATE_PARTITION_ATTRIBUTE)
            .expression_attribute_names("#u", UPDATED_MS_ATTRIBUTE)
            .expression_attribute_values(":p", AttributeValue::S(UPDATE_PARTITION.into()))
            .expression_attribute_values(":since", AttributeValue::N(since_ms.to_string()))
            .set_exclusive_start_key(start.take())
            .send()
            .await?;
        found.extend(page.items().iter().cloned());
        match page.last_evaluated_key() {
            Some(key) if !key.is_empty() => start = Some(key.clone()),
            _ => break,
        }
    }
    Ok(found)
}

/// One item of a mirrored table by its key, read strongly consistent: the admin API and a mirror's
/// refresh on an unknown id must see a write that just happened, not the index's view of it.
pub async fn get_consistent(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    (key_name, key): (&str, &str),
) -> Result<
    Option<Item>,
    aws_sdk_dynamodb::error::SdkError<aws_sdk_dynamodb::operation::get_item::GetItemError>,
> {
    let answer = client
        .get_item()
        .table_name(table)
        .key(key_name, AttributeValue::S(key.to_string()))
        .consistent_read(true)
        .send()
        .await?;
    Ok(answer.item)
}

/// The attributes every write of a mirrored table sets, so the index lists the item as changed now.
pub fn update_marks() -> [(&'static str, AttributeValue); 2] {
    [
        (
            UPDATE_PARTITION_ATTRIBUTE,
            AttributeValue::S(UPDATE_PARTITION.into()),
        ),
        (
            UPDATED_MS_ATTRIBUTE,
            AttributeValue::N(crate::audit::clock::now_millis().to_string()),
        ),
    ]
}

pub fn number(item: &Item, name: &str) -> Option<u64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok())
}

pub fn text(item: &Item, name: &str) -> Option<String> {
    item.get(name).and_then(|v| v.as_s().ok()).cloned()
}

/// See the module documentation.
pub struct Mirror<S: Source> {
    inner: Arc<Inner<S>>,
}

impl<S: Source> Clone for Mirror<S> {
    fn clone(&self) -> Self {
        Mirror {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<S: Source> {
    source: S,
    ttl: Duration,
    snapshot: RwLock<Snapshot<S::Record>>,
    /// One poll at a time; a lookup that finds the copy too old waits for the poll under way.
    polling: tokio::sync::Mutex<()>,
}

struct Snapshot<R> {
    records: HashMap<String, Entry<R>>,
    /// The latest `updated_ms` seen: the next poll reads from a little before it.
    high_water_ms: u64,
    /// When the last successful poll started (None: never polled).
    polled: Option<Instant>,
}

impl<R> Default for Snapshot<R> {
    fn default() -> Self {
        Snapshot {
            records: HashMap::new(),
            high_water_ms: 0,
            polled: None,
        }
    }
}

impl<S: Source> Mirror<S> {
    /// Loads nothing yet: the first lookup (or [`Self::start`]) polls.
    pub fn new(source: S, ttl: Duration) -> Self {
        Mirror {
            inner: Arc::new(Inner {
                source,
                ttl,
                snapshot: RwLock::new(Snapshot::default()),
                polling: tokio::sync::Mutex::new(()),
            }),
        }
    }

    pub fn source(&self) -> &S {
        &self.inner.source
    }

    /// Polls now, then every `ttl / 2` in the background, for the life of the execution environment
    /// (a frozen environment's timer resumes with it; the age check in [`Self::get`] covers the gap).
    pub async fn start(&self, what: &'static str) -> Result<(), S::Error> {
        let first = self.poll().await;
        let mirror = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(mirror.inner.ttl / 2);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if let Err(error) = mirror.poll().await {
                    tracing::warn!(%error, what, "poll failed; the copy ages until the next one");
                }
            }
        });
        first
    }

    /// The record under `key`, from a copy at most `ttl` old.
    pub async fn get(&self, key: &str) -> Result<Option<S::Record>, S::Error> {
        let fresh = |snapshot: &Snapshot<S::Record>| {
            snapshot
                .polled
                .is_some_and(|at| at.elapsed() < self.inner.ttl)
        };
        {
            let snapshot = self.inner.snapshot.read().await;
            if fresh(&snapshot) {
                return Ok(lookup(&snapshot, key));
            }
        }
        let _turn = self.inner.polling.lock().await;
        // Another lookup's poll may have finished while this one waited.
        if !fresh(&*self.inner.snapshot.read().await) {
            self.poll_locked().await?;
        }
        Ok(lookup(&*self.inner.snapshot.read().await, key))
    }

    /// Like [`Self::get`], but a key the copy does not hold polls again first when the last poll
    /// started more than `min_interval` ago: for tables whose new records must work soon (a key just
    /// issued). Unknown keys cost at most one poll per `min_interval` per environment, however many
    /// requests name them.
    pub async fn get_or_refresh(
        &self,
        key: &str,
        min_interval: Duration,
    ) -> Result<Option<S::Record>, S::Error> {
        if let Some(found) = self.get(key).await? {
            return Ok(Some(found));
        }
        let stale = |snapshot: &Snapshot<S::Record>| {
            snapshot
                .polled
                .is_none_or(|at| at.elapsed() >= min_interval)
        };
        if !stale(&*self.inner.snapshot.read().await) {
            return Ok(None);
        }
        let _turn = self.inner.polling.lock().await;
        // Another lookup's poll may have finished while this one waited.
        if stale(&*self.inner.snapshot.read().await) {
            self.poll_locked().await?;
        }
        Ok(lookup(&*self.inner.snapshot.read().await, key))
    }

    async fn poll(&self) -> Result<(), S::Error> {
        let _turn = self.inner.polling.lock().await;
        self.poll_locked().await
    }

    /// Reads what changed since the high-water mark (less the overlap) and merges it.
    async fn poll_locked(&self) -> Result<(), S::Error> {
        let started = Instant::now();
        let since = self
            .inner
            .snapshot
            .read()
            .await
            .high_water_ms
            .saturating_sub(POLL_OVERLAP_MS);
        let changed = self.inner.source.changed_since(since).await?;
        let now_secs = crate::audit::clock::now_millis() / 1000;
        let mut snapshot = self.inner.snapshot.write().await;
        for entry in changed {
            snapshot.high_water_ms = snapshot.high_water_ms.max(entry.updated_ms);
            let newer = snapshot
                .records
                .get(&entry.key)
                .is_none_or(|known| known.updated_ms <= entry.updated_ms);
            if newer && !entry.key.is_empty() {
                snapshot.records.insert(entry.key.clone(), entry);
            }
        }
        // Records past their time to live matter no more (DynamoDB deletes them in its own time).
        snapshot
            .records
            .retain(|_, entry| entry.expires_at.is_none_or(|at| at > now_secs));
        snapshot.polled = Some(started);
        Ok(())
    }

    #[cfg(test)]
    pub(crate) async fn seed(&self, entry: Entry<S::Record>, age: Duration) {
        let mut snapshot = self.inner.snapshot.write().await;
        snapshot.records.insert(entry.key.clone(), entry);
        snapshot.polled = Some(Instant::now() - age);
    }
}

fn lookup<R: Clone>(snapshot: &Snapshot<R>, key: &str) -> Option<R> {
    snapshot.records.get(key).map(|entry| entry.record.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A source that answers from a fixed list, or fails when told to.
    struct Fixed {
        entries: Vec<Entry<u32>>,
        failing: AtomicBool,
    }

    impl Source for Arc<Fixed> {
        type Record = u32;
        type Error = String;
        async fn changed_since(&self, since_ms: u64) -> Result<Vec<Entry<u32>>, String> {
            if self.failing.load(Ordering::SeqCst) {
                return Err("unreachable".into());
            }
            Ok(self
                .entries
                .iter()
                .filter(|e| e.updated_ms >= since_ms)
                .cloned()
                .collect())
        }
    }

    fn entry(key: &str, record: u32, updated_ms: u64, expires_at: Option<u64>) -> Entry<u32> {
        Entry {
            key: key.into(),
            record,
            expires_at,
            updated_ms,
        }
    }

    #[tokio::test]
    async fn a_fresh_copy_answers_from_memory_an_old_one_must_poll_and_fails_closed() {
        let source = Arc::new(Fixed {
            entries: vec![
                entry("a", 1, 10, None),
                entry("a", 2, 20, None),
                entry("gone", 3, 5, Some(1)),
            ],
            failing: AtomicBool::new(true),
        });
        let mirror = Mirror::new(source.clone(), Duration::from_secs(10));
        assert!(
            mirror.get("a").await.is_err(),
            "never polled: nothing is assumed"
        );
        source.failing.store(false, Ordering::SeqCst);
        assert_eq!(
            mirror.get("a").await.unwrap(),
            Some(2),
            "the newest update wins"
        );
        assert_eq!(
            mirror.get("gone").await.unwrap(),
            None,
            "expired records are dropped"
        );
        source.failing.store(true, Ordering::SeqCst);
        assert_eq!(
            mirror.get("a").await.unwrap(),
            Some(2),
            "fresh: from memory"
        );
        mirror
            .seed(entry("b", 7, 30, None), Duration::from_secs(11))
            .await;
        assert!(
            mirror.get("a").await.is_err(),
            "past the bound the table must answer"
        );
    }

    #[tokio::test]
    async fn a_miss_polls_again_at_most_once_per_interval() {
        let source = Arc::new(Fixed {
            entries: vec![entry("a", 1, 10, None)],
            failing: AtomicBool::new(false),
        });
        let mirror = Mirror::new(source.clone(), Duration::from_secs(60));
        assert_eq!(mirror.get("new").await.unwrap(), None);
        // Within the interval a miss answers from memory: a failing table is not asked.
        source.failing.store(true, Ordering::SeqCst);
        assert_eq!(
            mirror
                .get_or_refresh("new", Duration::from_secs(5))
                .await
                .unwrap(),
            None
        );
        // Past it, the miss polls (and here fails, so the caller fails closed).
        assert!(mirror.get_or_refresh("new", Duration::ZERO).await.is_err());
        assert_eq!(
            mirror.get_or_refresh("a", Duration::ZERO).await.unwrap(),
            Some(1),
            "hits never poll"
        );
    }
}
