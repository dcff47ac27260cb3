//! The record ids a SQLite ledger has numbered, kept in memory as Bloom filters: a record the
//! ledger meets for the first time (nearly every record of a feed) is then known to be new
//! without a look-up in the id index, and only a "maybe" is looked up.
//!
//! The filters only ever answer "certainly not" for an id they were not given. They are filled
//! from `ledger_ids` when the ledger is opened and given every id as it is numbered (before its
//! transaction commits: an id of a transaction rolled back stays a harmless "maybe"); each write
//! transaction first reads the ids another process numbered since (`sqlite::catch_up`), so they
//! stay whole when two processes write to one ledger file.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use bloomfilter::Bloom;

/// The ids the first filter is made for; each filter added when the last is full is made for
/// twice as many as the one before, so a ledger of n ids has about log₂(n / FIRST) filters.
const FIRST: usize = 1 << 20;

/// The false-positive rate of each filter (about 1.8 bytes an id).
const FALSE_POSITIVES: f64 = 0.001;

/// The seed of the filters' hashes: fixed, the filters live in one process.
const SEED: [u8; 32] = *b"shenguan ledger record ids, v1.\0";

/// The record ids a ledger has numbered.
pub struct KnownIds {
    /// The ids the first filter is made for.
    first: usize,
    filters: Mutex<Filters>,
    /// The last number whose id the filters hold; -1 before they are filled.
    numbered: AtomicI64,
}

struct Filters {
    /// Oldest first; ids are added to the last.
    blooms: Vec<Bloom<str>>,
    /// The ids the last filter holds and the ids it is made for.
    held: usize,
    room: usize,
}

impl Filters {
    fn new(first: usize) -> Filters {
        Filters {
            blooms: vec![bloom(first)],
            held: 0,
            room: first,
        }
    }
}

fn bloom(items: usize) -> Bloom<str> {
    Bloom::new_for_fp_rate_with_seed(items, FALSE_POSITIVES, &SEED)
        .expect("a Bloom filter for a positive number of ids")
}

impl Default for KnownIds {
    fn default() -> KnownIds {
        KnownIds::with_first(FIRST)
    }
}

impl KnownIds {
    /// Filters whose first is made for `first` ids.
    fn with_first(first: usize) -> KnownIds {
        let first = first.max(1);
        KnownIds {
            first,
            filters: Mutex::new(Filters::new(first)),
            numbered: AtomicI64::new(-1),
        }
    }

    /// The last number whose id the filters hold, `None` before they are filled.
    pub fn numbered(&self) -> Option<i64> {
        Some(self.numbered.load(Ordering::Acquire)).filter(|n| *n >= 0)
    }

    /// The filters hold the ids up to the number `n`.
    pub fn set_numbered(&self, n: i64) {
        self.numbered.store(n, Ordering::Release);
    }

    fn filters(&self) -> std::sync::MutexGuard<'_, Filters> {
        // A panic while holding the lock cannot leave the bits half-set in a way that loses an
        // id already added: the filters stay usable.
        self.filters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds ids the ledger numbers.
    pub fn add<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        let mut f = self.filters();
        for id in ids {
            if f.held == f.room {
                f.room *= 2;
                let next = bloom(f.room);
                f.blooms.push(next);
                f.held = 0;
            }
            f.blooms.last_mut().expect("at least one filter").set(id);
            f.held += 1;
        }
    }

    /// The ids of `ids` the ledger may have numbered; any other it certainly has not.
    pub fn maybe<'a>(&self, ids: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
        let f = self.filters();
        ids.into_iter()
            .filter(|id| f.blooms.iter().any(|b| b.check(id)))
            .collect()
    }

    /// Forgets every id (the ledger was emptied).
    pub fn clear(&self) {
        *self.filters() = Filters::new(self.first);
        self.set_numbered(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_id_added_is_a_maybe_across_filters_added_as_they_fill() {
        let known = KnownIds::with_first(100);
        let ids: Vec<String> = (0..10_000).map(|i| format!("record-{i}")).collect();
        known.add(ids.iter().map(String::as_str));
        assert!(
            known.filters().blooms.len() >= 7,
            "filters added as they fill"
        );
        let maybe = known.maybe(ids.iter().map(String::as_str));
        assert_eq!(maybe.len(), ids.len(), "no id added is ever missed");
        let others: Vec<String> = (0..10_000).map(|i| format!("other-{i}")).collect();
        let false_positives = known.maybe(others.iter().map(String::as_str)).len();
        assert!(
            false_positives < 100,
            "{false_positives} of 10,000 ids never added were a maybe"
        );
        known.clear();
        assert!(known.maybe(ids.iter().map(String::as_str)).is_empty());
    }
}
