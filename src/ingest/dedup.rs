//! The de-duplication table and what keeps concurrent requests from syncing to disk one by one.
//!
//! A record is a duplicate when the content last published for its record id (its adapter and
//! business key) is the same. The table has two forms ([`Table`]):
//!
//! - in the state store ([`GroupCommit`]), for the embedded setup: each request's published
//!   records are written by the next commit, which takes the records of every request waiting at
//!   that moment — one transaction (one disk sync) for all of them instead of one per request;
//! - in memory ([`MemoryTable`]), for an ingest process on Kafka: 8 bytes of record key and 8
//!   bytes of content fingerprint per record (about 30 bytes measured, with the buckets' slack
//!   and the allocator's), no database round trip per request. What changed since the last snapshot is appended to a log
//!   in the state store in the background (16 bytes a change); at start the table loads the log,
//!   then reads the record topics from the snapshot's scan position to their end
//!   (`Ingestor::catch_up`), so what was published but not yet in the snapshot is known again.
//!
//! [`Reservations`] makes two requests with a record in common run one after the other, so the
//! second sees what the first published; requests without one run side by side.

use std::collections::HashSet;
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

/// A record id (a name-based UUID of the adapter and business key) as the table's 8-byte key:
/// its two halves folded together (SHA-1 output, so every bit is as good as any other); an id of
/// another form by a hash of it.
///
/// Two ids may share a key (about one pair in 2^64): then the table holds the content of the one
/// published last, and a resend of the other is published again — never dropped, since a
/// record counts as a duplicate only when its 8-byte content fingerprint matches too.
fn id_key(record_id: &str) -> u64 {
    match uuid::Uuid::try_parse(record_id) {
        Ok(u) => {
            let (hi, lo) = u.as_u64_pair();
            hi ^ lo
        }
        Err(_) => {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            record_id.hash(&mut h);
            h.finish()
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

/// Keys in a bucket are found by the top bits of the key.
const BUCKET_BITS: u32 = 16;

/// Record key → content fingerprint, 16 bytes a record: 65,536 sorted arrays chosen by the top
/// bits of the key (the keys are hashes, so the buckets fill evenly). A bucket grows by an
/// eighth at a time, so the whole stays within a few percent of 16 bytes a record and never
/// needs a second copy of itself to grow, as one hash table would (at 2 million records a
/// standard hash map of the same pairs holds 4 million slots and, while it grows, both).
struct Keys {
    buckets: Vec<Vec<(u64, u64)>>,
    len: usize,
}

impl Default for Keys {
    fn default() -> Keys {
        Keys {
            buckets: (0..1usize << BUCKET_BITS).map(|_| Vec::new()).collect(),
            len: 0,
        }
    }
}

impl Keys {
    fn bucket(key: u64) -> usize {
        (key >> (64 - BUCKET_BITS)) as usize
    }

    fn get(&self, key: u64) -> Option<u64> {
        let b = &self.buckets[Keys::bucket(key)];
        b.binary_search_by_key(&key, |e| e.0).ok().map(|i| b[i].1)
    }

    /// Sets the fingerprint of `key`; `true` when the key is new.
    fn insert(&mut self, key: u64, fingerprint: u64) -> bool {
        let b = &mut self.buckets[Keys::bucket(key)];
        match b.binary_search_by_key(&key, |e| e.0) {
            Ok(i) => {
                b[i].1 = fingerprint;
                false
            }
            Err(i) => {
                if b.len() == b.capacity() {
                    b.reserve_exact(b.len() / 8 + 2);
                }
                b.insert(i, (key, fingerprint));
                self.len += 1;
                true
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.buckets.iter().flatten().copied()
    }
}

/// Bytes of one entry in a piece of the table's log: the key and the fingerprint, little-endian.
pub const ENTRY: usize = 16;

/// Entries as a piece of the log.
pub fn encode(entries: impl ExactSizeIterator<Item = (u64, u64)>) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * ENTRY);
    for (k, f) in entries {
        out.extend_from_slice(&k.to_le_bytes());
        out.extend_from_slice(&f.to_le_bytes());
    }
    out
}

/// The entries of a piece of the log; a piece whose length is not a whole number of entries
/// was not written by this table.
pub fn decode(piece: &[u8]) -> Option<impl Iterator<Item = (u64, u64)> + '_> {
    if !piece.len().is_multiple_of(ENTRY) {
        return None;
    }
    Some(piece.chunks_exact(ENTRY).map(|e| {
        let (k, f) = e.split_at(8);
        (
            u64::from_le_bytes(k.try_into().expect("8 bytes")),
            u64::from_le_bytes(f.try_into().expect("8 bytes")),
        )
    }))
}

/// What changed since the last snapshot write: the log entries in the order they happened, and
/// per adapter that published some of them how many were new records.
#[derive(Default)]
pub struct Changes {
    pub entries: Vec<(u64, u64)>,
    pub new_records: std::collections::BTreeMap<String, u64>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.new_records.is_empty()
    }
}

/// The de-duplication table in memory: record key → fingerprint of the content last published
/// (16 bytes a record, [`Keys`]), and the changes not yet in its snapshot.
///
/// The snapshot in the state store is a log: every snapshot write appends one piece holding the
/// changes since the one before (16 bytes a change, whatever the size of the table), and a start
/// that finds the log much longer than the table replaces it by the table ([`MemoryTable::pieces`]).
#[derive(Default)]
pub struct MemoryTable {
    keys: RwLock<Keys>,
    changes: Mutex<Changes>,
    /// The snapshot has been loaded.
    pub loaded: AtomicBool,
}

impl MemoryTable {
    /// The fingerprint last published for each record id.
    pub fn last<'a>(&self, ids: impl Iterator<Item = &'a str>) -> Vec<Option<u64>> {
        let keys = self.keys.read().expect("table lock");
        ids.map(|id| keys.get(id_key(id))).collect()
    }

    pub fn is_loaded(&self) -> bool {
        self.loaded.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Records in the table.
    pub fn len(&self) -> usize {
        self.keys.read().expect("table lock").len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Puts `(record id, content hash)` pairs in the table and among the changes; with an
    /// adapter, they count in its activity (new records, and when the last new or changed one
    /// was published).
    fn put<'a>(&self, adapter: Option<&str>, seen: impl Iterator<Item = (&'a str, &'a str)>) {
        let mut keys = self.keys.write().expect("table lock");
        let mut changes = self.changes.lock().expect("changes lock");
        let before = changes.entries.len();
        let mut new = 0;
        for (id, hash) in seen {
            let (k, f) = (id_key(id), fingerprint(hash));
            new += u64::from(keys.insert(k, f));
            changes.entries.push((k, f));
        }
        if let Some(adapter) = adapter.filter(|_| changes.entries.len() > before) {
            *changes.new_records.entry(adapter.to_string()).or_default() += new;
        }
    }

    /// Records this process published: `(record id, content hash)` of `adapter`.
    pub fn published<'a>(&self, adapter: &str, seen: impl Iterator<Item = (&'a str, &'a str)>) {
        self.put(Some(adapter), seen);
    }

    /// Records found elsewhere: by a catch-up scan on the bus, or as rows of the table in the
    /// state store (a snapshot written before the table had a log of its own). They join the
    /// changes after those already there, so an older change not yet written cannot overwrite
    /// them. They do not count in the adapters' activity: the process that published them
    /// counted them, and the rows count as rows.
    pub fn scanned(&self, seen: &[Seen]) {
        self.put(
            None,
            seen.iter()
                .map(|s| (s.record_id.as_str(), s.content_hash.as_str())),
        );
    }

    /// A piece of the snapshot's log; `false` when it is not one.
    pub fn load(&self, piece: &[u8]) -> bool {
        let Some(entries) = decode(piece) else {
            return false;
        };
        let mut keys = self.keys.write().expect("table lock");
        for (k, f) in entries {
            keys.insert(k, f);
        }
        true
    }

    /// The whole table as pieces of at most `per` entries, to replace a long log.
    pub fn pieces(&self, per: usize) -> Vec<Vec<u8>> {
        let keys = self.keys.read().expect("table lock");
        let per = per.max(1);
        let mut pieces = Vec::with_capacity(keys.len.div_ceil(per));
        let mut entries = keys.iter().peekable();
        while entries.peek().is_some() {
            let piece: Vec<(u64, u64)> = entries.by_ref().take(per).collect();
            pieces.push(encode(piece.into_iter()));
        }
        pieces
    }

    /// The changes since the last snapshot write, for writing.
    pub fn take_changes(&self) -> Changes {
        std::mem::take(&mut *self.changes.lock().expect("changes lock"))
    }

    /// Changes whose write failed: they go back before those made meanwhile.
    pub fn put_back(&self, mut earlier: Changes) {
        let mut changes = self.changes.lock().expect("changes lock");
        let later = std::mem::take(&mut *changes);
        earlier.entries.extend(later.entries);
        for (adapter, n) in later.new_records {
            *earlier.new_records.entry(adapter).or_default() += n;
        }
        *changes = earlier;
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
        let other = uuid::Uuid::new_v4().to_string();
        assert_eq!(t.last([id.as_str()].into_iter()), vec![None]);
        t.published("a", [(id.as_str(), "0000000000000001")].into_iter());
        t.published(
            "a",
            [(id.as_str(), "0000000000000002"), (other.as_str(), "03")].into_iter(),
        );
        assert_eq!(t.last([id.as_str()].into_iter()), vec![Some(2)]);
        assert_eq!(t.len(), 2);
        let changes = t.take_changes();
        assert_eq!(changes.entries.len(), 3, "every change, in order");
        assert_eq!(changes.entries[1].1, 2);
        assert_eq!(changes.new_records.get("a"), Some(&2));
        t.published("b", [(id.as_str(), "0000000000000004")].into_iter());
        t.put_back(changes);
        let again = t.take_changes();
        assert_eq!(again.entries.len(), 4);
        assert_eq!(
            again.entries.last().unwrap().1,
            4,
            "the later change stays last"
        );
        assert_eq!(
            again.new_records.get("b"),
            Some(&0),
            "a changed record is not new"
        );

        // The log written from the changes, or the table as pieces, gives the same table.
        let from_log = MemoryTable::default();
        assert!(from_log.load(&encode(again.entries.iter().copied())));
        let from_pieces = MemoryTable::default();
        for p in t.pieces(1) {
            assert!(from_pieces.load(&p));
        }
        for table in [&from_log, &from_pieces] {
            assert_eq!(
                table.last([id.as_str(), other.as_str()].into_iter()),
                t.last([id.as_str(), other.as_str()].into_iter())
            );
        }
        assert!(!from_log.load(b"not sixteen"), "not a piece of the log");
    }

    #[test]
    fn the_keys_stay_sorted_and_close_to_sixteen_bytes_a_record() {
        let mut keys = Keys::default();
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut all = Vec::new();
        for i in 0..200_000u64 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            assert!(keys.insert(rng, i));
            all.push((rng, i));
        }
        assert!(!keys.insert(all[7].0, 1), "an existing key is updated");
        all[7].1 = 1;
        assert_eq!(keys.len, all.len());
        for (k, f) in &all {
            assert_eq!(keys.get(*k), Some(*f));
        }
        let listed: Vec<u64> = keys.iter().map(|(k, _)| k).collect();
        assert!(listed.windows(2).all(|w| w[0] < w[1]), "in key order");
        let slots: usize = keys.buckets.iter().map(Vec::capacity).sum();
        assert!(
            slots < all.len() * 5 / 4,
            "{slots} slots for {} records",
            all.len()
        );
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
