//! The de-duplication table and what keeps concurrent requests from syncing to disk one by one.
//!
//! A record is a duplicate when the content last published for its record id (its adapter and
//! business key) is the same. The table has two forms ([`Table`]):
//!
//! - in memory ([`MemoryTable`]), for the gateway: 8 bytes of record key and 8 bytes of content
//!   fingerprint per record (about 18 bytes measured, with the chunks' slack), no database round
//!   trip per request. What changed since the last snapshot is appended to a log in the state
//!   store in the background (16 bytes a change); at start the table loads the log, then reads
//!   the record topics from the snapshot's scan position to their end (`Ingestor::catch_up`), so
//!   what was published but not yet in the snapshot is known again;
//! - in the state store ([`GroupCommit`]), for `shenguan dlq replay`, a command that runs once
//!   and has no table to load: each request's published records are written by the next commit,
//!   which takes the records of every request waiting at that moment — one transaction (one disk
//!   sync) for all of them instead of one per request.
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
/// Entries in a chunk: 128 bytes.
const CHUNK: usize = 8;
/// Chunks in a block of the pool: 512 KiB.
const BLOCK_CHUNKS: usize = 4096;
/// No chunk.
const NO_CHUNK: u32 = u32::MAX;

type Chunk = [(u64, u64); CHUNK];

/// A bucket: its chain of chunks and how many entries it holds.
#[derive(Clone, Copy)]
struct Bucket {
    first: u32,
    last: u32,
    len: u32,
}

/// Record key → content fingerprint, 16 bytes a record: 65,536 buckets chosen by the top bits
/// of the key (the keys are hashes, so the buckets fill evenly), each a chain of chunks of 8
/// entries taken from one pool of 512 KiB blocks. A record added to a full chunk takes a new
/// chunk: nothing is moved or freed as the table grows, so the memory is the entries, half a
/// chunk per bucket (4 MiB) and 4 bytes a chunk for the chains — about 18 bytes a record at 2
/// million. (Sorted arrays per bucket, grown by an eighth at a time, measured 30 bytes a record:
/// the allocator's size classes and what it kept of the arrays' moves. One hash table would
/// need a second copy of itself to grow.) A look-up reads the bucket's chunks, about 4 at 2
/// million records.
struct Keys {
    buckets: Vec<Bucket>,
    /// The chunks; a chunk's index is its block times [`BLOCK_CHUNKS`] plus its place in it.
    blocks: Vec<Box<[Chunk]>>,
    /// The chunk after each chunk in its bucket's chain.
    next: Vec<u32>,
    len: usize,
}

impl Default for Keys {
    fn default() -> Keys {
        Keys {
            buckets: vec![
                Bucket {
                    first: NO_CHUNK,
                    last: NO_CHUNK,
                    len: 0,
                };
                1usize << BUCKET_BITS
            ],
            blocks: Vec::new(),
            next: Vec::new(),
            len: 0,
        }
    }
}

impl Keys {
    fn bucket(key: u64) -> usize {
        (key >> (64 - BUCKET_BITS)) as usize
    }

    fn chunk(&self, index: u32) -> &Chunk {
        let i = index as usize;
        &self.blocks[i / BLOCK_CHUNKS][i % BLOCK_CHUNKS]
    }

    fn chunk_mut(&mut self, index: u32) -> &mut Chunk {
        let i = index as usize;
        &mut self.blocks[i / BLOCK_CHUNKS][i % BLOCK_CHUNKS]
    }

    /// The entries of bucket `b`, chunk by chunk: (chunk index, entries used in it).
    fn chain(&self, b: usize) -> impl Iterator<Item = (u32, usize)> + '_ {
        let bucket = self.buckets[b];
        let mut at = bucket.first;
        let mut left = bucket.len as usize;
        std::iter::from_fn(move || {
            if at == NO_CHUNK || left == 0 {
                return None;
            }
            let here = (at, left.min(CHUNK));
            left -= here.1;
            at = self.next[at as usize];
            Some(here)
        })
    }

    /// Where `key` is: (chunk index, place in it).
    fn find(&self, key: u64) -> Option<(u32, usize)> {
        self.chain(Keys::bucket(key)).find_map(|(c, used)| {
            self.chunk(c)[..used]
                .iter()
                .position(|e| e.0 == key)
                .map(|i| (c, i))
        })
    }

    fn get(&self, key: u64) -> Option<u64> {
        self.find(key).map(|(c, i)| self.chunk(c)[i].1)
    }

    /// Sets the fingerprint of `key`; `true` when the key is new.
    fn insert(&mut self, key: u64, fingerprint: u64) -> bool {
        if let Some((c, i)) = self.find(key) {
            self.chunk_mut(c)[i].1 = fingerprint;
            return false;
        }
        let b = Keys::bucket(key);
        let bucket = self.buckets[b];
        let place = bucket.len as usize % CHUNK;
        let last = if place == 0 {
            let new = self.new_chunk();
            match bucket.last {
                NO_CHUNK => self.buckets[b].first = new,
                last => self.next[last as usize] = new,
            }
            self.buckets[b].last = new;
            new
        } else {
            bucket.last
        };
        self.chunk_mut(last)[place] = (key, fingerprint);
        self.buckets[b].len += 1;
        self.len += 1;
        true
    }

    /// A chunk at the end of the pool, which takes a new block when the last one is full.
    fn new_chunk(&mut self) -> u32 {
        let index = self.next.len();
        if index == self.blocks.len() * BLOCK_CHUNKS {
            self.blocks
                .push(vec![[(0, 0); CHUNK]; BLOCK_CHUNKS].into_boxed_slice());
        }
        self.next.push(NO_CHUNK);
        u32::try_from(index).expect("fewer than 2^32 chunks (34 billion records)")
    }

    fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        (0..self.buckets.len()).flat_map(move |b| {
            self.chain(b)
                .flat_map(move |(c, used)| self.chunk(c)[..used].iter().copied())
        })
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
    fn the_keys_hold_every_record_once_in_close_to_sixteen_bytes_a_record() {
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
        assert_eq!(keys.get(0x1234), None);
        let mut listed: Vec<(u64, u64)> = keys.iter().collect();
        listed.sort_unstable();
        all.sort_unstable();
        assert_eq!(listed, all, "every record once, with its last fingerprint");
        // The chunks in use: the entries and at most one part-filled chunk per bucket.
        let chunks = keys.next.len();
        assert!(
            chunks * CHUNK <= all.len() + keys.buckets.len() * (CHUNK - 1),
            "{chunks} chunks for {} records",
            all.len()
        );
        assert_eq!(keys.blocks.len(), chunks.div_ceil(BLOCK_CHUNKS));
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
