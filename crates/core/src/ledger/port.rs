//! The ledger's storage port and the one [`apply_batch`] every store runs.
//!
//! A store implements [`LedgerPort`] over one open transaction: lock and read the consumer
//! positions, load what it holds about some records, load a record's logged events, write the
//! changes. [`apply_batch`] does everything else — decoding, skipping what was applied before,
//! ordering each record's events, running the state machine, counting the gauges — so the
//! SQLite and PostgreSQL stores differ only in how they run statements.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;

use super::event::{decode, logged_payload, DecodeError, Decoded, Event, EventOrd};
use super::fold::{fold, merge, Folded, Logged, Step};
use super::machine::RecordState;
use super::{Alert, Changes, Context, Entry, HistoryRow};
use crate::schema::RecordKind;

/// A bus message to apply, decoded already: [`decode`] is pure, so a caller runs it while the
/// previous batch is being written.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// The kind of record the topic carries.
    pub kind: RecordKind,
    pub payload: &'a [u8],
    /// What [`decode`] made of `payload`.
    pub decoded: &'a Result<Decoded, DecodeError>,
}

/// A logged event as the store keeps it: where it sorts, where it came from, its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub record_id: String,
    pub ord: EventOrd,
    pub kind: RecordKind,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The bytes [`logged_payload`] keeps (JSON: only events that decoded are logged).
    pub payload: String,
}

/// What the store holds about one record (without its events' bytes and its history, which a
/// store reads only when needed).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stored {
    pub record_id: String,
    /// The record (latest version, with its data) and its entries, by department.
    pub state: RecordState,
    /// Every logged event's order and topic kind, sorted.
    pub logged: Vec<(EventOrd, RecordKind)>,
    /// How many history lines the record has.
    pub history_len: u32,
}

impl Stored {
    fn purged(&self) -> bool {
        self.logged
            .iter()
            .any(|(ord, kind)| *kind == RecordKind::Claim && ord.rank == PURGE_RANK)
    }
}

/// The rank [`EventOrd`] gives a purge.
const PURGE_RANK: u8 = 9;

/// How a record's history is written.
#[derive(Debug, Clone, PartialEq)]
pub enum HistoryWrite {
    /// New lines after the `from` lines the record has.
    Append { from: u32, rows: Vec<HistoryRow> },
    /// The whole history again (the record was folded again from its events).
    Replace(Vec<HistoryRow>),
}

/// What to write for one record.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordWrite {
    pub record_id: String,
    /// The record to insert or update (its data is the logged event `record.event_id`).
    pub record: Option<super::RecordRow>,
    /// Entries to insert or update.
    pub entries: Vec<Entry>,
    /// Events to log.
    pub events: Vec<StoredEvent>,
    pub history: HistoryWrite,
    /// Retention: delete everything the store holds about the record first; only `events` (the
    /// purge) stays, so later events about it are recognised and dropped.
    pub purge: bool,
}

/// A change of one gauge counter.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct CounterDelta {
    pub name: Counter,
    /// The department (empty for counters that have none).
    pub department: String,
    pub kind: RecordKind,
    pub delta: i64,
}

/// The counters kept in the same transaction as the entries, so the gauges cost the same
/// whatever the number of open items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Counter {
    /// Entries waiting to be claimed, per department and kind.
    Unclaimed,
    /// Of those, raised overdue by the tracker.
    Overdue,
    /// Records waiting in the unrouted queue, per kind.
    Unrouted,
    /// Events waiting for their record, per topic kind.
    Waiting,
}

impl Counter {
    pub fn as_str(self) -> &'static str {
        match self {
            Counter::Unclaimed => "unclaimed",
            Counter::Overdue => "overdue",
            Counter::Unrouted => "unrouted",
            Counter::Waiting => "waiting",
        }
    }

    pub fn parse(s: &str) -> Option<Counter> {
        [
            Counter::Unclaimed,
            Counter::Overdue,
            Counter::Unrouted,
            Counter::Waiting,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }
}

/// Everything one batch writes, in one transaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Writes {
    pub records: Vec<RecordWrite>,
    pub counters: Vec<CounterDelta>,
    /// The next offset to read, per topic partition.
    pub positions: Vec<((String, i32), i64)>,
    /// Alerts the changes raise, to publish (live only).
    pub outbox: Vec<Alert>,
}

/// What became of one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Applied, with what it changed.
    Applied(Box<Changes>),
    /// An event about a record the ledger has not seen yet: kept until the record arrives.
    Waiting,
    /// Applied before (its position or its event id says so), or about a purged record.
    Duplicate,
    /// Not a ledger event (an alert that is a notification); read past.
    Skipped,
    /// Not readable as a ledger event: the message goes to the dead-letter queue.
    Rejected(DecodeError),
}

/// The storage a ledger runs on, over one open transaction.
pub trait LedgerPort: Send {
    type Error: Send;
    /// The next offset to apply of each partition, locked against other instances applying the
    /// same partitions until the transaction ends (absent: the beginning).
    fn lock_positions(
        &mut self,
        partitions: Vec<(String, i32)>,
    ) -> impl Future<Output = Result<HashMap<(String, i32), i64>, Self::Error>> + Send;
    /// What the store holds about these records (those it holds nothing about are left out).
    fn load(
        &mut self,
        record_ids: Vec<String>,
    ) -> impl Future<Output = Result<Vec<Stored>, Self::Error>> + Send;
    /// Every logged event of a record.
    fn load_events(
        &mut self,
        record_id: String,
    ) -> impl Future<Output = Result<Vec<StoredEvent>, Self::Error>> + Send;
    /// Writes a batch's changes.
    fn write(&mut self, writes: Writes) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// One record while a batch is applied.
struct Working {
    stored: Stored,
    folded: Folded,
    /// The order of every event logged so far, stored and new.
    ords: Vec<EventOrd>,
    /// The events' bytes, once a fold from the events needed them.
    events: Option<Vec<StoredEvent>>,
    new_events: Vec<StoredEvent>,
    record_dirty: bool,
    new_history: Vec<HistoryRow>,
    history_replaced: bool,
    purge: bool,
}

impl Working {
    fn new(stored: Stored) -> Working {
        let purged = stored.purged();
        let waiting = if stored.state.record.is_none() && !purged {
            stored.logged.len()
        } else {
            0
        };
        Working {
            ords: stored.logged.iter().map(|(o, _)| o.clone()).collect(),
            folded: Folded {
                state: stored.state.clone(),
                history: Vec::new(),
                // Their bytes are read if the record arrives; the count is what matters now.
                waiting: Vec::with_capacity(waiting),
                purged,
            },
            stored,
            events: None,
            new_events: Vec::new(),
            record_dirty: false,
            new_history: Vec::new(),
            history_replaced: false,
            purge: false,
        }
    }

    /// Events waiting for the record, by topic kind.
    fn waiting_kinds(&self) -> Vec<RecordKind> {
        if self.folded.purged || self.folded.state.record.is_some() {
            return Vec::new();
        }
        let mut kinds: Vec<RecordKind> = self.stored.logged.iter().map(|(_, k)| *k).collect();
        kinds.extend(self.new_events.iter().map(|e| e.kind));
        kinds
    }
}

/// The partitions a batch reads, sorted (the order positions are locked in, so two instances
/// cannot deadlock).
pub fn partitions(batch: &[Input<'_>]) -> Vec<(String, i32)> {
    let mut partitions: Vec<(String, i32)> = batch
        .iter()
        .map(|i| (i.topic.to_string(), i.partition))
        .collect();
    partitions.sort();
    partitions.dedup();
    partitions
}

/// Applies bus messages in order and writes the result through `port`, all in the port's one
/// transaction: a message at or before its partition's stored position changes nothing, each
/// event is logged with its record and folded in its record's order, and the positions move past
/// the batch. `live` queues the alerts the changes raise for publishing (a rebuild does not:
/// they are on the bus already). Returns what became of each message, in order.
pub async fn apply_batch<P: LedgerPort>(
    port: &mut P,
    batch: &[Input<'_>],
    ctx: &Context<'_>,
    live: bool,
) -> Result<Vec<Outcome>, P::Error> {
    let positions = port.lock_positions(partitions(batch)).await?;
    let plan = plan(port, &positions, batch, ctx, live).await?;
    port.write(plan.writes).await?;
    Ok(plan.outcomes)
}

/// A batch worked out against what the store held when `port` read it: what became of each
/// message and what to write. [`apply_batch`] writes it at once, in the transaction it was read
/// in. A store may also work a batch out before the transaction that writes it — while the
/// previous batch is being written — provided no record of the batch is written in between:
/// then the plan still holds if [`Plan::holds`] against the positions that transaction locks,
/// and [`Plan::settle`] moves its positions past what was written meanwhile.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub outcomes: Vec<Outcome>,
    pub writes: Writes,
    /// Per partition, the lowest offset the plan applies as new.
    first_new: BTreeMap<(String, i32), i64>,
}

impl Plan {
    /// Whether nothing the plan applies as new has been applied since its positions were read:
    /// every partition's locked position is at or before the first offset it applies.
    pub fn holds(&self, locked: &HashMap<(String, i32), i64>) -> bool {
        self.first_new
            .iter()
            .all(|(key, first)| locked.get(key).copied().unwrap_or(0) <= *first)
    }

    /// Takes each partition's position to at least `locked`, where a batch written since the
    /// plan's positions were read moved it.
    pub fn settle(&mut self, locked: &HashMap<(String, i32), i64>) {
        for (key, next) in &mut self.writes.positions {
            if let Some(at) = locked.get(key) {
                *next = (*next).max(*at);
            }
        }
    }
}

/// Works a batch out against the store behind `port`, given the partitions' positions: see
/// [`apply_batch`], which is this and the write.
pub async fn plan<P: LedgerPort>(
    port: &mut P,
    positions: &HashMap<(String, i32), i64>,
    batch: &[Input<'_>],
    ctx: &Context<'_>,
    live: bool,
) -> Result<Plan, P::Error> {
    let mut first_new: BTreeMap<(String, i32), i64> = BTreeMap::new();
    // Take what is new; keep the order.
    let mut decoded: Vec<Option<Result<Decoded, DecodeError>>> = Vec::with_capacity(batch.len());
    let mut ids: Vec<String> = Vec::new();
    let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for input in batch {
        let key = (input.topic.to_string(), input.partition);
        let at = positions.get(&key).copied().unwrap_or(0);
        let n = next.entry(key).or_insert(at);
        *n = (*n).max(input.offset + 1);
        if input.offset < at {
            decoded.push(None);
            continue;
        }
        let first = first_new
            .entry((input.topic.to_string(), input.partition))
            .or_insert(input.offset);
        *first = (*first).min(input.offset);
        let d = input.decoded.clone();
        if let Ok(Decoded::Event(e)) = &d {
            ids.push(e.record_id().to_string());
        }
        decoded.push(Some(d));
    }
    ids.sort();
    ids.dedup();
    let mut working: HashMap<String, Working> = HashMap::with_capacity(ids.len());
    for stored in port.load(ids.clone()).await? {
        working.insert(stored.record_id.clone(), Working::new(stored));
    }
    let mut outcomes = Vec::with_capacity(batch.len());
    for (input, d) in batch.iter().zip(decoded) {
        let event = match d {
            None => {
                outcomes.push(Outcome::Duplicate);
                continue;
            }
            Some(Err(e)) => {
                outcomes.push(Outcome::Rejected(e));
                continue;
            }
            Some(Ok(Decoded::Skip)) => {
                outcomes.push(Outcome::Skipped);
                continue;
            }
            Some(Ok(Decoded::Event(e))) => *e,
        };
        let record_id = event.record_id().to_string();
        let w = working.entry(record_id.clone()).or_insert_with(|| {
            Working::new(Stored {
                record_id: record_id.clone(),
                ..Stored::default()
            })
        });
        let ord = event.ord(input.offset);
        if w.folded.purged || w.ords.iter().any(|o| o.event_id == ord.event_id) {
            outcomes.push(Outcome::Duplicate);
            continue;
        }
        let stored_event = StoredEvent {
            record_id: record_id.clone(),
            ord: ord.clone(),
            kind: input.kind,
            topic: input.topic.to_string(),
            partition: input.partition,
            offset: input.offset,
            payload: logged_payload(input.kind, input.payload),
        };
        let in_order = w.ords.iter().all(|o| *o < ord)
            && (w.folded.state.record.is_some() || w.ords.is_empty() || event.is_purge());
        w.ords.push(ord.clone());
        w.new_events.push(stored_event);
        let outcome = if in_order {
            let before = w.folded.history.len();
            let step = w.folded.step(Logged { ord, event }, ctx);
            // A purge empties the history; otherwise the step appended to it.
            let added: Vec<HistoryRow> = w
                .folded
                .history
                .drain(before.min(w.folded.history.len())..)
                .collect();
            w.new_history.extend(added);
            match step {
                Step::Applied(changes) => {
                    if w.folded.purged {
                        w.purge = true;
                        w.new_events.retain(|e| e.ord.rank == PURGE_RANK);
                    }
                    if changes.record.is_some() {
                        w.record_dirty = true;
                    }
                    Outcome::Applied(changes)
                }
                Step::Waiting => Outcome::Waiting,
                Step::Purged => Outcome::Duplicate,
            }
        } else {
            refold(port, w, &event, ctx).await?
        };
        outcomes.push(outcome);
    }
    let mut writes = Writes {
        positions: next.into_iter().collect(),
        ..Writes::default()
    };
    if live {
        for o in &outcomes {
            if let Outcome::Applied(c) = o {
                writes.outbox.extend(c.alerts.iter().cloned());
            }
        }
    }
    let mut counters: BTreeMap<(Counter, String, RecordKind), i64> = BTreeMap::new();
    let mut records: Vec<(String, Working)> = working.into_iter().collect();
    records.sort_by(|a, b| a.0.cmp(&b.0));
    for (record_id, w) in records {
        if w.new_events.is_empty() && !w.purge {
            continue;
        }
        count(&mut counters, &w);
        let entries: Vec<Entry> = if w.purge {
            Vec::new()
        } else {
            w.folded
                .state
                .entries
                .iter()
                .filter(|e| {
                    !w.stored
                        .state
                        .entries
                        .iter()
                        .any(|o| o.department == e.department && o == *e)
                })
                .cloned()
                .collect()
        };
        let record = if w.purge || !(w.record_dirty || w.history_replaced) {
            None
        } else {
            w.folded.state.record.clone()
        };
        let history = if w.history_replaced || w.purge {
            HistoryWrite::Replace(if w.purge { Vec::new() } else { w.new_history })
        } else {
            HistoryWrite::Append {
                from: w.stored.history_len,
                rows: w.new_history,
            }
        };
        writes.records.push(RecordWrite {
            record_id,
            record,
            entries,
            events: w.new_events,
            history,
            purge: w.purge,
        });
    }
    writes.counters = counters
        .into_iter()
        .filter(|(_, d)| *d != 0)
        .map(|((name, department, kind), delta)| CounterDelta {
            name,
            department,
            kind,
            delta,
        })
        .collect();
    Ok(Plan {
        outcomes,
        writes,
        first_new,
    })
}

/// Folds a record again from all its events, because `event` sorts before one already folded
/// (or the record arrives after events that waited for it).
async fn refold<P: LedgerPort>(
    port: &mut P,
    w: &mut Working,
    event: &Event,
    ctx: &Context<'_>,
) -> Result<Outcome, P::Error> {
    if w.events.is_none() {
        w.events = Some(port.load_events(w.stored.record_id.clone()).await?);
    }
    let mut all: Vec<Logged> = Vec::new();
    for e in w.events.iter().flatten().chain(w.new_events.iter()) {
        // What was logged decoded once; it decodes again.
        if let Ok(Decoded::Event(ev)) = decode(e.kind, e.payload.as_bytes()) {
            all.push(Logged::new(*ev, e.offset));
        }
    }
    let had_record = w.folded.state.record.is_some();
    // The changes of the new event, and of the events that waited for their record if it just
    // arrived: the others were applied before and their effects are out already.
    let folded = fold(all.clone(), ctx);
    let outcome = if folded.purged {
        w.purge = true;
        w.new_events.retain(|e| e.ord.rank == PURGE_RANK);
        Outcome::Applied(Box::default())
    } else if folded.state.record.is_none() {
        Outcome::Waiting
    } else {
        let mut changes = Changes::default();
        let mut replay = Folded::default();
        let target = event.event_id();
        let mut sorted = all;
        sorted.sort_by(|a, b| a.ord.cmp(&b.ord));
        for l in sorted {
            let new = l.ord.event_id == target;
            let was_waiting = !had_record;
            if let Step::Applied(c) = replay.step(l, ctx) {
                if new || was_waiting {
                    merge(&mut changes, *c);
                }
            }
        }
        Outcome::Applied(Box::new(changes))
    };
    w.history_replaced = true;
    w.record_dirty = true;
    w.new_history = folded.history.clone();
    w.folded = folded;
    Ok(outcome)
}

/// The gauge counters' changes of one record: what its entries, its place in the unrouted
/// queue and its waiting events counted before the batch, against after.
fn count(counters: &mut BTreeMap<(Counter, String, RecordKind), i64>, w: &Working) {
    let mut add = |name: Counter, department: &str, kind: RecordKind, d: i64| {
        *counters
            .entry((name, department.to_string(), kind))
            .or_default() += d;
    };
    let sides: [(&RecordState, i64); 2] = [(&w.stored.state, -1), (&w.folded.state, 1)];
    for (state, sign) in sides {
        if w.purge && sign == 1 {
            continue;
        }
        for e in &state.entries {
            if e.counts_unclaimed() {
                add(Counter::Unclaimed, &e.department, e.kind, sign);
            }
            if e.counts_overdue() {
                add(Counter::Overdue, &e.department, e.kind, sign);
            }
        }
        if let Some(r) = &state.record {
            if r.unrouted.is_some() {
                add(Counter::Unrouted, "", r.kind, sign);
            }
        }
    }
    if !w.stored.purged() && w.stored.state.record.is_none() {
        for (_, kind) in &w.stored.logged {
            add(Counter::Waiting, "", *kind, -1);
        }
    }
    if !w.purge {
        for kind in w.waiting_kinds() {
            add(Counter::Waiting, "", kind, 1);
        }
    }
}
