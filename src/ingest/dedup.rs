//! The de-duplication table and what keeps concurrent requests from syncing to disk one by one.
//!
//! A record is a duplicate when the content last published for its record id (its adapter and
//! business key) is the same. The table has two forms ([`Table`]):
//!
//! - in the state store ([`GroupCommit`]), for the embedded setup: each request's published
//!   records are written by the next commit, which takes the records of every request waiting at
//!   that moment — one transaction (one disk sync) for all of them instead of one per request;
//! - in memory ([`MemoryTable`]), for an ingest process on Kafka: 16 bytes of id and 8 bytes of
//!   content fingerprint per record (30–60 bytes with the hash table's slack), no database round
//!   trip per request. What changed since the
//!   last snapshot is written to the state store in the background; at start the table loads the
//!   snapshot, then reads the record topics from the snapshot's scan position to their end
//!   (`Ingestor::catch_up`), so what was published but not yet in the snapshot is known again.
//!
//! [`Reservations`] makes two requests with a record in common run one after the other, so the
//! second sees what the first published; requests without one run side by side.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};

use crate::state::{Seen, StateError, StateStore};

/// The content of a record as the table compares it: the first 8 bytes of its content hash (a
/// hex SHA-256 prefix); a hash that is not hex is hashed again.
pub fn fingerprint(content_hash: &str) -> u64 {
    match content_hash.get(..16).map(|h| u64::from_str_radix(h, 16)) {
        Some(Ok(v)) => v,
        _ => {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            content_hash.hash(&mut h);
            h.finish()
        }
    }
}

/// A record id (a name-based UUID of the adapter and business key) as 16 bytes (two words, so a
/// table entry is 24 bytes); an id of another form by a hash of it, with the upper word all ones.
fn id_key(record_id: &str) -> (u64, u64) {
    match uuid::Uuid::try_parse(record_id) {
        Ok(u) => u.as_u64_pair(),
        Err(_) => {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            record_id.hash(&mut h);
            (u64::MAX, h.finish())
        }
    }
}

/// Where the de-duplication table is kept.
pub enum Table {
    /// In the state store, written by group commit.
    Store(GroupCommit),
    /// In memory, with a snapshot in the state store.
    Memory(MemoryTable),
}

impl Table {
    /// The fingerprint of the content last published for each `(business key, record id)` of
    /// `adapter`, in order.
    pub async fn last(
        &self,
        state: &dyn StateStore,
        adapter: &str,
        keys: &[(&str, &str)],
    ) -> Result<Vec<Option<u64>>, StateError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            Table::Store(_) => {
                let business_keys = keys.iter().map(|(k, _)| k.to_string()).collect();
                let hashes = state.last_hashes(adapter, business_keys).await?;
                Ok(hashes
                    .into_iter()
                    .map(|h| h.as_deref().map(fingerprint))
                    .collect())
            }
            Table::Memory(table) => Ok(table.last(keys.iter().map(|(_, id)| *id))),
        }
    }
}

/// A request's records waiting for the next commit, and where to tell it the outcome.
type Waiting = (Vec<Seen>, tokio::sync::oneshot::Sender<Result<(), String>>);

/// Writes the published records of concurrent requests to the state store in one transaction.
///
/// A request adds its records to the queue and waits for the committer. Whoever gets the
/// committer takes the whole queue — its own records and those of every request that arrived
/// while the previous commit ran — writes it in one transaction and tells each request the
/// outcome. Under load a commit carries the records of many requests; alone, a request commits
/// at once as before.
pub struct GroupCommit {
    state: Arc<dyn StateStore>,
    queue: Mutex<Vec<Waiting>>,
    committer: tokio::sync::Mutex<()>,
}

impl GroupCommit {
    pub fn new(state: Arc<dyn StateStore>) -> GroupCommit {
        GroupCommit {
            state,
            queue: Mutex::new(Vec::new()),
            committer: tokio::sync::Mutex::new(()),
        }
    }

    /// Remembers `seen`, returning once a commit that holds it has succeeded or failed.
    pub async fn remember(&self, seen: Vec<Seen>) -> Result<(), StateError> {
        if seen.is_empty() {
            return Ok(());
        }
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        self.queue.lock().expect("queue lock").push((seen, tx));
        let committer = self.committer.lock().await;
        // A commit that ran while this request waited for the committer may have taken its
        // records: the outcome was sent before that commit let the committer go.
        let outcome = match rx.try_recv() {
            Ok(outcome) => outcome,
            Err(_) => {
                let waiting = std::mem::take(&mut *self.queue.lock().expect("queue lock"));
                let mut records = Vec::with_capacity(waiting.iter().map(|(s, _)| s.len()).sum());
                let mut senders = Vec::with_capacity(waiting.len());
                for (seen, tx) in waiting {
                    records.extend(seen);
                    senders.push(tx);
                }
                let result = self
                    .state
                    .remember(records)
                    .await
                    .map_err(|e| e.to_string());
                for tx in senders {
                    let _ = tx.send(result.clone());
                }
                drop(committer);
                rx.await
                    .unwrap_or_else(|_| Err("the commit was dropped".to_string()))
            }
        };
        outcome.map_err(|message| StateError {
            path: "de-duplication table".to_string(),
            message,
        })
    }
}

/// Hashes a table key by its own bits. A key is a name-based UUID (SHA-1 output) or, for an id
/// of another form, a hash already: hashing it again (SipHash, the standard map's default) was
/// a tenth of what the table cost per record.
#[derive(Default, Clone, Copy)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = self.0.rotate_left(29) ^ n;
    }
}

/// A map keyed by a record id's 16 bytes.
type IdMap<V> = HashMap<(u64, u64), V, std::hash::BuildHasherDefault<IdHasher>>;

/// The de-duplication table in memory: record id → fingerprint of the content last published,
/// and the entries changed since the last snapshot.
#[derive(Default)]
pub struct MemoryTable {
    last: RwLock<IdMap<u64>>,
    /// Changed since the last snapshot, by record id (which the adapter and business key
    /// determine): written by `flush`.
    dirty: Mutex<IdMap<Seen>>,
    /// The snapshot has been loaded.
    pub loaded: AtomicBool,
}

impl MemoryTable {
    /// The fingerprint last published for each record id.
    pub fn last<'a>(&self, ids: impl Iterator<Item = &'a str>) -> Vec<Option<u64>> {
        let last = self.last.read().expect("table lock");
        ids.map(|id| last.get(&id_key(id)).copied()).collect()
    }

    pub fn is_loaded(&self) -> bool {
        self.loaded.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Records in the table.
    pub fn len(&self) -> usize {
        self.last.read().expect("table lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn put(&self, seen: &[Seen]) {
        let mut last = self.last.write().expect("table lock");
        for s in seen {
            last.insert(id_key(&s.record_id), fingerprint(&s.content_hash));
        }
    }

    /// A page of the snapshot.
    pub fn load(&self, page: &[Seen]) {
        self.put(page);
    }

    /// What a catch-up scan found on the bus (already written to the snapshot by the scan).
    pub fn scanned(&self, seen: &[Seen]) {
        self.put(seen);
        // The bus is the truth: an older change not yet written must not overwrite it.
        let mut dirty = self.dirty.lock().expect("dirty lock");
        for s in seen {
            dirty.remove(&id_key(&s.record_id));
        }
    }

    /// Records this process published.
    pub fn published(&self, seen: Vec<Seen>) {
        if seen.is_empty() {
            return;
        }
        self.put(&seen);
        let mut dirty = self.dirty.lock().expect("dirty lock");
        for s in seen {
            dirty.insert(id_key(&s.record_id), s);
        }
    }

    /// The changes since the last snapshot, for writing.
    pub fn take_dirty(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.dirty.lock().expect("dirty lock"))
            .into_values()
            .collect()
    }

    /// Changes whose write failed, unless a newer change of the same record arrived meanwhile.
    pub fn put_back(&self, changes: Vec<Seen>) {
        let mut dirty = self.dirty.lock().expect("dirty lock");
        for s in changes {
            dirty.entry(id_key(&s.record_id)).or_insert(s);
        }
    }
}

/// The record ids of the requests in flight.
#[derive(Default)]
pub struct Reservations {
    held: Mutex<HashSet<String>>,
    released: tokio::sync::Notify,
}

/// Record ids reserved until dropped.
pub struct Reserved<'a> {
    owner: &'a Reservations,
    ids: Vec<String>,
}

impl Reservations {
    /// Reserves every id of `ids` at once, waiting while another request holds any of them.
    pub async fn reserve(&self, mut ids: Vec<String>) -> Reserved<'_> {
        ids.sort_unstable();
        ids.dedup();
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            // Registered before looking, so a release between the look and the wait is seen.
            released.as_mut().enable();
            {
                let mut held = self.held.lock().expect("reservations lock");
                if !ids.iter().any(|id| held.contains(id)) {
                    held.extend(ids.iter().cloned());
                    return Reserved { owner: self, ids };
                }
            }
            released.await;
        }
    }
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        if self.ids.is_empty() {
            return;
        }
        let mut held = self.owner.held.lock().expect("reservations lock");
        for id in &self.ids {
            held.remove(id);
        }
        drop(held);
        self.owner.released.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_fingerprint_is_the_hash_prefix() {
        assert_eq!(fingerprint("00000000000000ff0123"), 255);
        assert_ne!(
            fingerprint("not hex at all, no"),
            fingerprint("not hex at all, no!")
        );
    }

    #[test]
    fn the_memory_table_keeps_the_last_content_and_what_changed() {
        let t = MemoryTable::default();
        let id = uuid::Uuid::new_v4().to_string();
        let seen = |hash: &str| Seen {
            adapter: "a".into(),
            business_key: "k".into(),
            content_hash: hash.into(),
            record_id: id.clone(),
        };
        assert_eq!(t.last([id.as_str()].into_iter()), vec![None]);
        t.published(vec![seen("0000000000000001")]);
        t.published(vec![seen("0000000000000002")]);
        assert_eq!(t.last([id.as_str()].into_iter()), vec![Some(2)]);
        let changes = t.take_dirty();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].content_hash, "0000000000000002");
        t.published(vec![seen("0000000000000003")]);
        t.put_back(changes);
        assert_eq!(t.take_dirty()[0].content_hash, "0000000000000003");
    }

    #[tokio::test]
    async fn requests_with_a_record_in_common_take_turns() {
        let r = Arc::new(Reservations::default());
        let first = r.reserve(vec!["x".into(), "y".into()]).await;
        // No record in common: at once.
        let other = r.reserve(vec!["z".into()]).await;
        let r2 = r.clone();
        let waiting = tokio::spawn(async move {
            let _g = r2.reserve(vec!["y".into()]).await;
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "waits while y is reserved");
        drop(other);
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("runs once y is released")
            .unwrap();
    }
}
