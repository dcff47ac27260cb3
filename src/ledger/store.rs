//! The ledger store: SQLite for one gateway (the default), PostgreSQL when several gateway
//! instances share the ledger. One implementation over the two dialects ([`super::exec`]): the
//! core's [`apply_batch`](shenguan_core::ledger::port::apply_batch) runs over [`SqlPort`] inside
//! one transaction, and every query below is written once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, FixedOffset};
use futures::future::BoxFuture;
use serde_json::Value;

pub use super::error::LedgerError;
use super::exec::{json_list, json_numbers, DbError, Dialect, Exec, Insert, Param, Row, Rows};
use super::pg::PgDb;
use super::shared::Shared;
use super::sql::{self, COUNTERS, ENTRIES, EVENTS, HISTORY, IDS, OUTBOX, POSITIONS, RECORDS};
use super::sqlite::SqliteDb;
use super::{flow_of, AlertLevel, DueEntry, Entry, EntryState, HistoryRow, RecordKeys, RecordRow};
use crate::bus::{Delivery, Positions};
use crate::ledger::event::{decode, DecodeError, Decoded};
use crate::ledger::machine::RecordState;
use crate::ledger::port::{
    self, Counter, HistoryWrite, Input, LedgerPort, Outcome, Stored, StoredEvent, Writes,
};
use crate::ledger::EventOrd;
use crate::schema::RecordKind;

/// The gauges of one department and kind: unclaimed, of those raised overdue, and the oldest
/// unclaimed push.
#[derive(Debug, Clone, PartialEq)]
pub struct GaugeRow {
    pub department: String,
    pub kind: String,
    pub unclaimed: i64,
    pub overdue: i64,
    pub oldest: Option<DateTime<FixedOffset>>,
}

/// A record with its entries and its history.
pub type RecordView = (RecordRow, Vec<Entry>, Vec<HistoryRow>);

/// A department's daily digest counts (see [`LedgerStore::digest_counts`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DigestRow {
    pub department: String,
    /// Waiting for the department to claim (or reply, or confirm attendance).
    pub to_claim: i64,
    /// Claimed since the start of the day.
    pub claimed_today: i64,
    /// Pushed this month and still not claimed.
    pub unclaimed_this_month: i64,
    /// Open and past the deadline of the obligation open now.
    pub overdue: i64,
    /// 告知承诺 verifications not done yet.
    pub open_verifications: i64,
    /// Inquiries not answered yet.
    pub open_inquiries: i64,
}

/// Which of a department's entries an inbox page lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InboxStatus {
    /// Waiting for the department to claim (待认领).
    Unclaimed,
    /// Claimed, with or without feedback since, or closed (已认领).
    Claimed,
    /// Unclaimed and past the claim deadline at `now` (已逾期).
    Overdue,
    /// Given back as 非本部门 (已退回).
    Returned,
}

/// The order of an inbox page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InboxOrder {
    /// Most recently pushed first.
    #[default]
    Newest,
    /// Soonest deadline of the open obligation first (a claim while unclaimed, the follow-up
    /// after); entries with nothing due come last.
    Urgency,
}

/// One page of a department's inbox.
#[derive(Debug, Clone, Default)]
pub struct InboxQuery {
    pub status: Option<InboxStatus>,
    /// A part of the record id, the 办件编号 (`case_no`), the 事项名称 or the 相对人 name.
    pub search: Option<String>,
    pub order: InboxOrder,
    /// The `next` of the previous page; `None` for the first.
    pub cursor: Option<String>,
    pub limit: usize,
}

/// A page of the inbox: the rows, how many rows the whole filter matches, and the cursor of the
/// next page (`None` on the last).
#[derive(Debug, Clone, Default)]
pub struct InboxPage {
    pub rows: Vec<(Entry, RecordRow)>,
    pub total: u64,
    pub next: Option<String>,
}

/// An inbox cursor: the sort key and record id of the last row of a page, opaque to clients.
pub fn encode_cursor(key: &str, record_id: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{key}\n{record_id}"))
}

/// The (sort key, record id) of a cursor, or why it is not one.
pub fn decode_cursor(cursor: &str) -> Result<(String, String), String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| format!("cursor '{cursor}' is not one this gateway gave out"))?;
    let text = String::from_utf8(bytes).map_err(|_| format!("cursor '{cursor}' is damaged"))?;
    text.split_once('\n')
        .map(|(k, r)| (k.to_string(), r.to_string()))
        .ok_or_else(|| format!("cursor '{cursor}' is damaged"))
}

/// A `LIKE` pattern matching `term` anywhere, with `%`, `_` and `\` in it taken literally.
pub fn like_pattern(term: &str) -> String {
    let mut p = String::from("%");
    for c in term.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// An outbox alert: (alert id, record id, CloudEvent payload).
pub type OutboxRow = (String, String, Vec<u8>);

/// A bus message for the ledger with the kind of record its topic carries, decoded when it was
/// received: decoding is pure, so the projector does it while the previous batch is written.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub delivery: Delivery,
    pub kind: RecordKind,
    pub decoded: Result<Decoded, DecodeError>,
}

impl Prepared {
    pub fn new(delivery: Delivery, kind: RecordKind) -> Prepared {
        let decoded = decode(kind, &delivery.payload);
        Prepared {
            delivery,
            kind,
            decoded,
        }
    }

    /// The record the event is about, when the message is one.
    pub fn record_id(&self) -> Option<&str> {
        match &self.decoded {
            Ok(Decoded::Event(e)) => Some(e.record_id()),
            _ => None,
        }
    }

    /// The CloudEvents id of the event, when the message is one.
    pub fn event_id(&self) -> Option<&str> {
        match &self.decoded {
            Ok(Decoded::Event(e)) => Some(e.event_id()),
            _ => None,
        }
    }
}

/// Bus messages to apply together; shared, so a retry after a failed transaction copies
/// nothing.
#[derive(Debug, Clone)]
pub struct Batch(Arc<[Prepared]>);

impl std::ops::Deref for Batch {
    type Target = [Prepared];
    fn deref(&self) -> &[Prepared] {
        &self.0
    }
}

impl From<Vec<Prepared>> for Batch {
    fn from(items: Vec<Prepared>) -> Batch {
        Batch(items.into())
    }
}

impl From<Vec<(Delivery, RecordKind)>> for Batch {
    fn from(items: Vec<(Delivery, RecordKind)>) -> Batch {
        items
            .into_iter()
            .map(|(d, kind)| Prepared::new(d, kind))
            .collect::<Vec<_>>()
            .into()
    }
}

/// The ledger: what the projector, the tracker, the deliverer and the API read and write.
#[async_trait]
pub trait LedgerStore: Send + Sync + 'static {
    /// For logs: `sqlite (./data/ledger.db)`, `postgres (host/db)`.
    fn describe(&self) -> String;
    /// The consumer positions stored with the ledger.
    async fn positions(&self) -> Result<Positions, LedgerError>;
    /// Applies bus messages in order — decode, fold into their records, write, positions — in
    /// one transaction, and returns what became of each; all or none are applied. `live`
    /// queues the alerts the changes raise for publishing (a rebuild does not).
    async fn apply_batch(
        &self,
        batch: Batch,
        shared: Arc<Shared>,
        live: bool,
    ) -> Result<Vec<Outcome>, LedgerError>;
    /// Works a batch out on the reading connection, outside any transaction, so it can be done
    /// while the previous batch is written. The caller makes sure no record of `batch` is in a
    /// batch written meanwhile (the plan would not see its changes); positions written meanwhile
    /// are checked by [`LedgerStore::write_planned`]. A plan that cannot be made is left to the
    /// write.
    async fn plan_batch(&self, batch: Batch, shared: Arc<Shared>, live: bool) -> Planned;
    /// Writes a planned batch in one transaction: the plan as it is when nothing it applies was
    /// applied since it was made, else the batch worked out again inside the transaction, as
    /// [`LedgerStore::apply_batch`] does.
    async fn write_planned(
        &self,
        planned: Planned,
        shared: Arc<Shared>,
        live: bool,
    ) -> Result<Vec<Outcome>, LedgerError>;
    /// A record with its entries and history (with its links to the licence it concerns, or to
    /// the supervision that concerns it, looked up now).
    async fn record(&self, record_id: &str) -> Result<Option<RecordView>, LedgerError>;
    /// How many events about `record_id` wait for the record to arrive.
    async fn waiting(&self, record_id: &str) -> Result<u64, LedgerError>;
    /// One page of a department's entries with their records, filtered, searched and ordered as
    /// `query` says, with the total the filter matches. A bad cursor is an error naming it.
    async fn inbox_page(
        &self,
        department: &str,
        query: &InboxQuery,
        now: DateTime<FixedOffset>,
    ) -> Result<InboxPage, LedgerError>;
    /// Records waiting in the unrouted queue.
    async fn unrouted(&self) -> Result<Vec<RecordRow>, LedgerError>;
    /// Entries whose open obligation (claim, or the follow-up after it) is due before `before`
    /// and whose alerts are not all raised yet — the only ones the tracker can have news about.
    async fn entries_due_before(
        &self,
        before: DateTime<FixedOffset>,
    ) -> Result<Vec<DueEntry>, LedgerError>;
    /// Open entries (not closed, returned or forwarded) of a flow rule — `claim_rule` or
    /// `feedback_rule` equal to `rule` — for one department or all, soonest deadline of that
    /// rule first, with their records.
    async fn obligations(
        &self,
        rule: &str,
        department: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(Entry, RecordRow)>, LedgerError>;
    /// Per department with anything open or claimed today: the daily digest's counts at `now`.
    async fn digest_counts(
        &self,
        day_start: DateTime<FixedOffset>,
        month_start: DateTime<FixedOffset>,
        now: DateTime<FixedOffset>,
    ) -> Result<Vec<DigestRow>, LedgerError>;
    /// Retention: records with nothing left to do — routed, every entry finished (no claim or
    /// follow-up open) — and no activity since `before`, at most `limit`.
    async fn finished_before(
        &self,
        before: DateTime<FixedOffset>,
        limit: usize,
    ) -> Result<Vec<String>, LedgerError>;
    /// The monthly report over the entries pushed in `[from, to)`, read as a stream.
    async fn report_month(
        &self,
        from: DateTime<FixedOffset>,
        to: DateTime<FixedOffset>,
        report: super::report::Monthly,
    ) -> Result<super::report::Monthly, LedgerError>;
    /// The records of `kind` decided in `[from, to)` (their decision time, else their
    /// publication), oldest first — for a department, those routed to it or pushed by it — for the
    /// 双公示 export.
    async fn decided_between(
        &self,
        kind: RecordKind,
        from: DateTime<FixedOffset>,
        to: DateTime<FixedOffset>,
        department: Option<&str>,
    ) -> Result<Vec<RecordRow>, LedgerError>;
    /// Claims up to `limit` queued alerts for `lease` on behalf of `owner`: no other instance
    /// publishes them meanwhile; if the owner dies, the lease runs out and another one does.
    async fn claim_outbox(
        &self,
        owner: &str,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<OutboxRow>, LedgerError>;
    /// Removes published alerts from the outbox.
    async fn outbox_done(&self, ids: Vec<String>) -> Result<(), LedgerError>;
    /// Deletes the projection and the positions, so it can be rebuilt from the topics.
    async fn clear(&self) -> Result<(), LedgerError>;
    /// Takes or renews the lease `name` for `owner` until `ttl` from now; false while another
    /// owner holds it. Several gateways on one ledger elect the one that runs the tracker so.
    async fn lease(&self, name: &str, owner: &str, ttl: Duration) -> Result<bool, LedgerError>;
    /// The gauges per department and kind, from the counters kept with the entries.
    async fn gauges(&self) -> Result<Vec<GaugeRow>, LedgerError>;
    /// Records waiting unrouted, by kind.
    async fn unrouted_counts(&self) -> Result<Vec<(String, i64)>, LedgerError>;
    /// Events waiting for their record, by topic kind.
    async fn waiting_counts(&self) -> Result<Vec<(String, i64)>, LedgerError>;
    /// Entries of webhook departments due for a delivery attempt at `now`, with attempts so far.
    async fn due_deliveries(
        &self,
        departments: Vec<String>,
        now: DateTime<FixedOffset>,
        limit: usize,
    ) -> Result<Vec<(Entry, RecordRow, u32)>, LedgerError>;
    /// Records a failed attempt and when to try again.
    async fn delivery_retry(
        &self,
        record_id: String,
        department: String,
        attempts: u32,
        next: DateTime<FixedOffset>,
        error: String,
    ) -> Result<(), LedgerError>;
    /// Puts a record's dead-lettered deliveries back to be tried from `now` (a DLQ replay);
    /// returns how many.
    async fn delivery_reset(
        &self,
        record_id: String,
        now: DateTime<FixedOffset>,
    ) -> Result<u64, LedgerError>;
    /// Records the end of deliveries for an entry: `ok`, or `dead` (sent to the DLQ).
    async fn delivery_done(
        &self,
        record_id: String,
        department: String,
        attempts: u32,
        status: &'static str,
    ) -> Result<(), LedgerError>;
}

/// Opens the ledger named by a URL: `sqlite:PATH` or `postgres://…`, creating or migrating its
/// schema.
pub async fn open(url: &str) -> Result<Arc<dyn LedgerStore>, LedgerError> {
    Ok(Arc::new(SqlLedger::open(url).await?))
}

impl SqlLedger {
    /// See [`open`].
    pub async fn open(url: &str) -> Result<SqlLedger, LedgerError> {
        let db = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let db = PgDb::connect(url).await?;
            db.prepare().await?;
            Db::Pg(db)
        } else {
            let path = url
                .strip_prefix("sqlite:")
                .map(|p| p.trim_start_matches("//"))
                .ok_or_else(|| LedgerError::new(url, "expected sqlite:PATH or postgres://…"))?;
            let db = SqliteDb::open(std::path::Path::new(path))?;
            db.prepare().await?;
            Db::Sqlite(db)
        };
        Ok(SqlLedger { db })
    }

    /// Writes a batch of changes straight through the storage port, in one transaction (data
    /// loaded in bulk, e.g. the benchmark's millions of open items).
    pub async fn write_through(&self, writes: Writes) -> Result<(), LedgerError> {
        self.write(move |ex| {
            Box::pin(async move {
                let mut port = SqlPort { ex };
                port.write(writes).await
            })
        })
        .await
    }
}

enum Db {
    Sqlite(SqliteDb),
    Pg(PgDb),
}

/// The ledger over either dialect.
pub struct SqlLedger {
    db: Db,
}

impl SqlLedger {
    async fn read<T, F>(&self, f: F) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: for<'e> FnOnce(&'e mut dyn Exec) -> BoxFuture<'e, Result<T, DbError>> + Send + 'static,
    {
        match &self.db {
            Db::Sqlite(db) => db.read(f).await,
            Db::Pg(db) => db.read(f).await,
        }
    }

    async fn write<T, F>(&self, f: F) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: for<'e> FnOnce(&'e mut dyn Exec) -> BoxFuture<'e, Result<T, DbError>> + Send + 'static,
    {
        match &self.db {
            Db::Sqlite(db) => db.write(f).await,
            Db::Pg(db) => db.write(f).await,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rows, both ways.

/// The cell of a record's number (`seq`) or change number (`changed`) in a row built ahead: the
/// burst's write fills it in ([`numbered`]).
const UNNUMBERED: Param = Param::Int(None);

/// The row of `ledger_records`, in its columns' order.
fn record_params(r: RecordRow) -> Vec<Param> {
    let RecordKeys {
        license_no,
        document_no,
        uscc,
        case_no,
        title,
        counterpart,
    } = r.keys;
    vec![
        UNNUMBERED,
        r.record_id.into(),
        r.kind.as_str().into(),
        r.event_id.into(),
        r.published_at.into(),
        r.decided_at.into(),
        r.adapter.into(),
        r.push_rule.into(),
        r.push_due_at.into(),
        r.push_late.into(),
        r.unrouted.into(),
        r.source_department.into(),
        license_no.into(),
        document_no.into(),
        uscc.into(),
        case_no.into(),
        title.into(),
        counterpart.into(),
        r.pusher.into(),
        r.pushed_at.into(),
        Param::Real(r.push_hours),
        i64::from(r.version).into(),
    ]
}

fn entry_params(e: Entry) -> Vec<Param> {
    let (due_rule, due_at) = match e.obligation() {
        Some((rule, due)) => (Some(rule.to_string()), Some(due)),
        None => (None, None),
    };
    let flow = flow_of(&e);
    vec![
        UNNUMBERED,
        e.record_id.into(),
        e.department.into(),
        e.kind.as_str().into(),
        e.state.as_str().into(),
        e.pushed_at.into(),
        e.delivered_at.into(),
        e.claimed_at.into(),
        e.returned_at.into(),
        e.feedback_at.into(),
        e.closed_at.into(),
        e.policy.into(),
        e.claim_rule.into(),
        e.claim_due_at.into(),
        e.feedback_rule.into(),
        e.feedback_due_at.into(),
        e.calendar_version.into(),
        e.deadline_problem.into(),
        e.alert_level.rank().into(),
        e.note.into(),
        e.outcome.into(),
        e.via.into(),
        flow.into(),
        due_rule.into(),
        due_at.into(),
        i64::from(e.version).into(),
        Param::Real(e.claim_hours),
    ]
}

fn history_params(h: HistoryRow, n: u32) -> Vec<Param> {
    let detail = h.detail.to_string();
    vec![
        UNNUMBERED,
        h.record_id.into(),
        i64::from(n).into(),
        h.department.into(),
        h.action.into(),
        h.actor.into(),
        h.channel.into(),
        h.at.into(),
        h.event_id.into(),
        detail.into(),
    ]
}

fn event_params(e: StoredEvent) -> Vec<Param> {
    vec![
        UNNUMBERED,
        e.record_id.into(),
        e.ord.event_id.into(),
        e.ord.at_ms.into(),
        i64::from(e.ord.rank).into(),
        e.kind.as_str().into(),
        e.topic.into(),
        i64::from(e.partition).into(),
        e.offset.into(),
        e.payload.into(),
    ]
}

/// The canonical record of a logged record event (its CloudEvent's `data`).
fn data_of(row: &Row, column: &str) -> Result<Value, DbError> {
    let mut event = row.json(column)?;
    match event.get_mut("data") {
        Some(data) => Ok(data.take()),
        None => Err(row.bad(column, "the logged event has no data".into())),
    }
}

fn record_from(row: &Row) -> Result<RecordRow, DbError> {
    Ok(RecordRow {
        record_id: row.text("record_id")?,
        kind: row.parse("kind")?,
        event_id: row.text("event_id")?,
        published_at: row.time("published_at")?,
        decided_at: row.opt_time("decided_at")?,
        adapter: row.text("adapter")?,
        push_rule: row.opt_text("push_rule")?,
        push_due_at: row.opt_time("push_due_at")?,
        push_late: row.int("push_late")? != 0,
        unrouted: row.opt_text("unrouted")?,
        linked_record_id: None,
        source_department: row.opt_text("source_department")?,
        pusher: row.opt_text("pusher")?,
        pushed_at: row.time("pushed_at")?,
        push_hours: row.opt_real("push_hours")?,
        version: version(row, "version")?,
        data: Arc::new(data_of(row, "payload")?),
        keys: RecordKeys {
            license_no: row.opt_text("link_license_no")?,
            document_no: row.opt_text("link_document_no")?,
            uscc: row.opt_text("link_uscc")?,
            case_no: row.opt_text("case_no")?,
            title: row.opt_text("title")?,
            counterpart: row.opt_text("counterpart")?,
        },
    })
}

/// A version number as stored.
fn version(row: &Row, column: &str) -> Result<u32, DbError> {
    let v = row.int(column)?;
    u32::try_from(v)
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(|| row.bad(column, format!("{v} is not a version")))
}

fn entry_from(row: &Row) -> Result<Entry, DbError> {
    let level = row.int("alert_level")?;
    Ok(Entry {
        record_id: row.text("record_id")?,
        department: row.text("department")?,
        kind: row.parse("kind")?,
        state: row.parse("state")?,
        pushed_at: row.time("pushed_at")?,
        delivered_at: row.opt_time("delivered_at")?,
        claimed_at: row.opt_time("claimed_at")?,
        returned_at: row.opt_time("returned_at")?,
        feedback_at: row.opt_time("feedback_at")?,
        closed_at: row.opt_time("closed_at")?,
        policy: row.text("policy")?,
        claim_rule: row.opt_text("claim_rule")?,
        claim_due_at: row.opt_time("claim_due_at")?,
        feedback_rule: row.opt_text("feedback_rule")?,
        feedback_due_at: row.opt_time("feedback_due_at")?,
        calendar_version: row.text("calendar_version")?,
        deadline_problem: row.opt_text("deadline_problem")?,
        alert_level: AlertLevel::from_rank(level)
            .ok_or_else(|| row.bad("alert_level", format!("{level} is not a level")))?,
        note: row.opt_text("note")?,
        outcome: row.opt_text("outcome")?,
        via: row.opt_text("via")?,
        version: version(row, "version")?,
        claim_hours: row.opt_real("claim_hours")?,
    })
}

fn history_from(row: &Row) -> Result<HistoryRow, DbError> {
    Ok(HistoryRow {
        record_id: row.text("record_id")?,
        department: row.opt_text("department")?,
        action: row.text("action")?,
        actor: row.opt_text("actor")?,
        channel: row.opt_text("channel")?,
        at: row.time("at")?,
        event_id: row.text("event_id")?,
        detail: row.json("detail")?,
    })
}

fn stored_event_from(row: &Row) -> Result<StoredEvent, DbError> {
    let rank = row.int("rank")?;
    Ok(StoredEvent {
        record_id: row.text("record_id")?,
        ord: EventOrd {
            at_ms: row.int("at_ms")?,
            rank: u8::try_from(rank).map_err(|_| row.bad("rank", format!("{rank}")))?,
            pos: row.int("pos")?,
            event_id: row.text("event_id")?,
        },
        kind: row.parse("kind")?,
        topic: row.text("topic")?,
        partition: i32::try_from(row.int("part")?)
            .map_err(|_| row.bad("part", "out of range".into()))?,
        offset: row.int("pos")?,
        payload: row.text("payload")?,
    })
}

/// Records with their data: `SELECT {RECORD_SELECT} FROM ledger_records r {RECORD_JOIN}`.
fn record_select() -> String {
    format!("{}, ev.payload AS payload", RECORDS.prefixed("r"))
}

const RECORD_JOIN: &str = "JOIN ledger_events ev ON ev.seq = r.seq AND ev.event_id = r.event_id";

/// Entry and record columns of one joined row: the record's are prefixed `r_`.
fn entry_record_select() -> String {
    let record: Vec<String> = RECORDS
        .columns
        .iter()
        .map(|(c, _)| format!("r.{c} AS r_{c}"))
        .collect();
    format!(
        "{}, {}, ev.payload AS r_payload",
        ENTRIES.prefixed("e"),
        record.join(", ")
    )
}

/// The record of a joined entry-and-record row.
fn joined_record(row: &Row) -> Result<RecordRow, DbError> {
    Ok(RecordRow {
        record_id: row.text("r_record_id")?,
        kind: row.parse("r_kind")?,
        event_id: row.text("r_event_id")?,
        published_at: row.time("r_published_at")?,
        decided_at: row.opt_time("r_decided_at")?,
        adapter: row.text("r_adapter")?,
        push_rule: row.opt_text("r_push_rule")?,
        push_due_at: row.opt_time("r_push_due_at")?,
        push_late: row.int("r_push_late")? != 0,
        unrouted: row.opt_text("r_unrouted")?,
        linked_record_id: None,
        source_department: row.opt_text("r_source_department")?,
        pusher: row.opt_text("r_pusher")?,
        pushed_at: row.time("r_pushed_at")?,
        push_hours: row.opt_real("r_push_hours")?,
        version: version(row, "r_version")?,
        data: Arc::new(data_of(row, "r_payload")?),
        keys: RecordKeys {
            license_no: row.opt_text("r_link_license_no")?,
            document_no: row.opt_text("r_link_document_no")?,
            uscc: row.opt_text("r_link_uscc")?,
            case_no: row.opt_text("r_case_no")?,
            title: row.opt_text("r_title")?,
            counterpart: row.opt_text("r_counterpart")?,
        },
    })
}

/// A count of a report row.
fn count(row: &Row, column: &str) -> Result<u64, DbError> {
    let v = row.int(column)?;
    u64::try_from(v).map_err(|_| row.bad(column, format!("{v} is not a count")))
}

fn entries_with_records(
    rows: &Rows,
    what: &'static str,
) -> Result<Vec<(Entry, RecordRow)>, DbError> {
    rows.iter(what)
        .map(|r| Ok((entry_from(&r)?, joined_record(&r)?)))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The port the core's apply_batch runs over.

/// The core's storage port over one transaction.
pub struct SqlPort<'e> {
    pub ex: &'e mut dyn Exec,
}

impl LedgerPort for SqlPort<'_> {
    type Error = DbError;

    async fn lock_positions(
        &mut self,
        partitions: Vec<(String, i32)>,
    ) -> Result<HashMap<(String, i32), i64>, DbError> {
        let lock = self.ex.dialect().for_update();
        let mut out = HashMap::new();
        // In one order (sorted by the caller), so two instances cannot deadlock.
        for (topic, part) in partitions {
            self.ex
                .execute(
                    "INSERT INTO ledger_positions (topic, part, next_offset) VALUES ($1, $2, 0) ON CONFLICT (topic, part) DO NOTHING",
                    vec![topic.clone().into(), i64::from(part).into()],
                )
                .await?;
            let rows = self
                .ex
                .query(
                    &format!("SELECT topic, part, next_offset FROM ledger_positions WHERE topic = $1 AND part = $2{lock}"),
                    vec![topic.clone().into(), i64::from(part).into()],
                )
                .await?;
            for row in rows.iter("ledger_positions") {
                out.insert((topic.clone(), part), row.int("next_offset")?);
            }
        }
        Ok(out)
    }

    async fn load(&mut self, record_ids: Vec<String>) -> Result<Vec<Stored>, DbError> {
        if record_ids.is_empty() {
            return Ok(Vec::new());
        }
        let d = self.ex.dialect();
        // The records' numbers, once: a record without one is not in the ledger at all.
        let numbers: Vec<i64> = numbers_of(self.ex, &record_ids)
            .await?
            .into_values()
            .collect();
        if numbers.is_empty() {
            return Ok(Vec::new());
        }
        let mut stored: HashMap<String, Stored> = HashMap::new();
        let rows = self
            .ex
            .query(
                &format!(
                    "SELECT {} FROM ledger_records r {RECORD_JOIN} WHERE r.seq {}",
                    record_select(),
                    d.in_numbers("$1")
                ),
                vec![json_numbers(&numbers)],
            )
            .await?;
        let mut known = Vec::new();
        for row in rows.iter("ledger_records") {
            known.push(row.int("seq")?);
            let record = record_from(&row)?;
            stored.insert(
                record.record_id.clone(),
                Stored {
                    record_id: record.record_id.clone(),
                    state: RecordState {
                        record: Some(record),
                        entries: Vec::new(),
                    },
                    ..Stored::default()
                },
            );
        }
        if !known.is_empty() {
            let rows = self
                .ex
                .query(
                    &format!(
                        "SELECT {} FROM ledger_entries WHERE seq {} ORDER BY record_id, department",
                        ENTRIES.column_list(),
                        d.in_numbers("$1")
                    ),
                    vec![json_numbers(&known)],
                )
                .await?;
            for row in rows.iter("ledger_entries") {
                let e = entry_from(&row)?;
                if let Some(s) = stored.get_mut(&e.record_id) {
                    s.state.entries.push(e);
                }
            }
            let rows = self
                .ex
                .query(
                    &format!(
                        "SELECT record_id, MAX(n) AS last FROM ledger_history WHERE seq {} GROUP BY record_id",
                        d.in_numbers("$1")
                    ),
                    vec![json_numbers(&known)],
                )
                .await?;
            for row in rows.iter("ledger_history") {
                let id = row.text("record_id")?;
                let last = row.int("last")?;
                if let Some(s) = stored.get_mut(&id) {
                    s.history_len =
                        u32::try_from(last + 1).map_err(|_| row.bad("n", format!("{last}")))?;
                }
            }
        }
        let rows = self
            .ex
            .query(
                &format!(
                    "SELECT record_id, event_id, at_ms, rank, pos, kind FROM ledger_events WHERE seq {}",
                    d.in_numbers("$1")
                ),
                vec![json_numbers(&numbers)],
            )
            .await?;
        for row in rows.iter("ledger_events") {
            let id = row.text("record_id")?;
            let rank = row.int("rank")?;
            let ord = EventOrd {
                at_ms: row.int("at_ms")?,
                rank: u8::try_from(rank).map_err(|_| row.bad("rank", format!("{rank}")))?,
                pos: row.int("pos")?,
                event_id: row.text("event_id")?,
            };
            let kind: RecordKind = row.parse("kind")?;
            stored
                .entry(id.clone())
                .or_insert_with(|| Stored {
                    record_id: id,
                    ..Stored::default()
                })
                .logged
                .push((ord, kind));
        }
        let mut out: Vec<Stored> = stored.into_values().collect();
        for s in &mut out {
            s.logged.sort();
        }
        Ok(out)
    }

    async fn load_events(&mut self, record_id: String) -> Result<Vec<StoredEvent>, DbError> {
        let rows = self
            .ex
            .query(
                &format!(
                    "SELECT {} FROM ledger_events WHERE seq {} ORDER BY at_ms, rank, pos, event_id",
                    EVENTS.column_list(),
                    sql::seq_of(self.ex.dialect(), "$1")
                ),
                vec![record_id.into()],
            )
            .await?;
        rows.iter("ledger_events")
            .map(|r| stored_event_from(&r))
            .collect()
    }

    async fn write(&mut self, writes: Writes) -> Result<(), DbError> {
        let (rows, positions) = WriteRows::from(writes);
        rows.write(self.ex, positions).await
    }
}

/// The next offset to read of each partition a batch moves.
type NextOffsets = Vec<((String, i32), i64)>;

/// A batch's writes as statement parameters. Built from [`Writes`] by moving their strings, not
/// copying them; a batch worked out ahead ([`Planned`]) builds them outside the transaction.
pub struct WriteRows {
    /// Records whose rows are deleted first: everything (a purge) or only the history (folded
    /// again).
    deletes: Vec<(String, bool)>,
    records: Vec<Vec<Param>>,
    entries: Vec<Vec<Param>>,
    events: Vec<Vec<Param>>,
    history: Vec<Vec<Param>>,
    counters: Vec<Vec<Param>>,
    outbox: Vec<Vec<Param>>,
}

impl WriteRows {
    /// The rows, and the positions apart (a plan settles them when it is written).
    fn from(writes: Writes) -> (WriteRows, NextOffsets) {
        let mut rows = WriteRows {
            deletes: Vec::new(),
            records: Vec::new(),
            entries: Vec::new(),
            events: Vec::new(),
            history: Vec::new(),
            counters: Vec::new(),
            outbox: Vec::new(),
        };
        let Writes {
            records: record_writes,
            counters: counter_deltas,
            positions,
            outbox: alerts,
        } = writes;
        for w in record_writes {
            let (from, history, replaced) = match w.history {
                HistoryWrite::Append { from, rows } => (from, rows, false),
                HistoryWrite::Replace(rows) => (0, rows, true),
            };
            if w.purge || replaced {
                rows.deletes.push((w.record_id.clone(), w.purge));
            }
            if let Some(r) = w.record {
                rows.records.push(record_params(r));
            }
            rows.entries.extend(w.entries.into_iter().map(entry_params));
            rows.events.extend(w.events.into_iter().map(event_params));
            rows.history.extend(
                history
                    .into_iter()
                    .enumerate()
                    .map(|(i, h)| history_params(h, from + i as u32)),
            );
        }
        rows.counters = counter_deltas
            .into_iter()
            .map(|c| {
                vec![
                    c.name.as_str().into(),
                    c.department.into(),
                    c.kind.as_str().into(),
                    c.delta.into(),
                ]
            })
            .collect();
        rows.outbox = alerts
            .iter()
            .map(|a| {
                let event = crate::pipeline::envelope(
                    RecordKind::Alert,
                    &a.id,
                    "/shenguan/tracker",
                    &a.record_id,
                    a.at,
                    a.data(),
                );
                vec![
                    a.id.clone().into(),
                    a.record_id.clone().into(),
                    event.to_string().into(),
                    a.at.into(),
                    Param::Text(None),
                    Param::Int(None),
                ]
            })
            .collect();
        (rows, positions)
    }

    /// Runs the statements, in the transaction `ex` is in.
    async fn write(self, ex: &mut dyn Exec, positions: NextOffsets) -> Result<(), DbError> {
        for (record_id, purge) in self.deletes {
            let tables: &[&str] = if purge {
                &[
                    "ledger_records",
                    "ledger_entries",
                    "ledger_history",
                    "ledger_events",
                    "deliveries",
                ]
            } else {
                &["ledger_history"]
            };
            if purge && ex.dialect() == Dialect::Sqlite {
                // The record's link keys go with it.
                ex.execute(
                    &format!(
                        "DELETE FROM {} WHERE rowid {}",
                        sql::LINK_KEYS,
                        sql::seq_of(Dialect::Sqlite, "$1")
                    ),
                    vec![record_id.clone().into()],
                )
                .await?;
            }
            for table in tables {
                ex.execute(
                    &format!(
                        "DELETE FROM {table} WHERE {}",
                        of_record(ex.dialect(), table)
                    ),
                    vec![record_id.clone().into()],
                )
                .await?;
            }
        }
        let positions = positions
            .into_iter()
            .map(|((topic, part), next)| vec![topic.into(), i64::from(part).into(), next.into()])
            .collect();
        // On SQLite, the numbers the ledger gave before this burst: a record numbered before may
        // have link keys indexed already, which its new row replaces.
        let numbered_before = match ex.dialect() {
            Dialect::Sqlite if !self.records.is_empty() => last_number(ex).await?,
            _ => 0,
        };
        let [events, records, entries, history] =
            numbered(ex, [self.events, self.records, self.entries, self.history]).await?;
        if ex.dialect() == Dialect::Sqlite {
            index_links(ex, &records, numbered_before).await?;
        }
        ex.insert_rows(vec![
            Insert::new(&EVENTS, events, "ON CONFLICT (seq, event_id) DO NOTHING"),
            Insert::new(&RECORDS, records, sql::upsert(&RECORDS, &["seq"])),
            Insert::new(
                &ENTRIES,
                entries,
                sql::upsert(&ENTRIES, &["seq", "department"]),
            ),
            Insert::new(&HISTORY, history, ""),
            Insert::new(
                &COUNTERS,
                self.counters,
                "ON CONFLICT (name, department, kind) DO UPDATE SET value = ledger_counters.value + excluded.value",
            ),
            Insert::new(
                &POSITIONS,
                positions,
                "ON CONFLICT (topic, part) DO UPDATE SET next_offset = excluded.next_offset",
            ),
            Insert::new(&OUTBOX, self.outbox, "ON CONFLICT (id) DO NOTHING"),
        ])
        .await?;
        Ok(())
    }
}

/// Indexes the link keys of a burst's record rows (numbered) in SQLite's [`sql::LINK_KEYS`]: a
/// record numbered at most `numbered_before` has its earlier keys taken out first.
async fn index_links(
    ex: &mut dyn Exec,
    records: &[Vec<Param>],
    numbered_before: i64,
) -> Result<(), DbError> {
    let at = |column: &str| {
        RECORDS
            .columns
            .iter()
            .position(|(c, _)| *c == column)
            .expect("a link column of ledger_records")
    };
    let columns = sql::LINKS.map(at);
    let delete = format!("DELETE FROM {} WHERE rowid = $1", sql::LINK_KEYS);
    let insert = format!(
        "INSERT INTO {} (rowid, terms) VALUES ($1, $2)",
        sql::LINK_KEYS
    );
    for row in records {
        let Param::Int(Some(seq)) = row[0] else {
            return Err(DbError::Db("a record row without its number".into()));
        };
        if seq <= numbered_before {
            ex.execute(&delete, vec![seq.into()]).await?;
        }
        let terms = sql::link_terms(columns.map(|i| match &row[i] {
            Param::Text(Some(t)) => Some(t.as_str()),
            _ => None,
        }));
        if !terms.is_empty() {
            ex.execute(&insert, vec![seq.into(), terms.into()]).await?;
        }
    }
    Ok(())
}

/// The condition on `table`'s rows of the record whose id is `$1`: by its number, but in
/// `deliveries`, which is not projection, by its id.
fn of_record(dialect: Dialect, table: &str) -> String {
    if table == "deliveries" {
        "record_id = $1".into()
    } else {
        format!("seq {}", sql::seq_of(dialect, "$1"))
    }
}

/// The rows of records, entries, history and events (each row's first cell is its record's
/// number, [`UNNUMBERED`], and its second the record id) with that number filled in. A record the
/// ledger meets for the first time gets the next number, in the order of the rows.
async fn numbered<const N: usize>(
    ex: &mut dyn Exec,
    tables: [Vec<Vec<Param>>; N],
) -> Result<[Vec<Vec<Param>>; N], DbError> {
    let id_of = |row: &[Param]| match row.get(1) {
        Some(Param::Text(Some(id))) => Ok(id.clone()),
        _ => Err(DbError::Db("a ledger row without its record id".into())),
    };
    let mut ids = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for row in tables.iter().flatten() {
        let id = id_of(row)?;
        if seen.insert(id.clone()) {
            ids.push(id);
        }
    }
    if ids.is_empty() {
        return Ok(tables);
    }
    let rows = match ex.dialect() {
        // The ledger's one writer numbers the ids it does not find, after the last number.
        Dialect::Sqlite => {
            let mut seqs = numbers_of(ex, &ids).await?;
            let fresh: Vec<&String> = ids.iter().filter(|id| !seqs.contains_key(*id)).collect();
            if !fresh.is_empty() {
                let last = last_number(ex).await?;
                let (mut rows, mut keys) = (Vec::new(), Vec::new());
                for (seq, id) in (last + 1..).zip(&fresh) {
                    rows.push(vec![seq.into(), (*id).clone().into()]);
                    keys.push(vec![seq.into(), sql::id_term(id).into()]);
                    seqs.insert((*id).clone(), seq);
                }
                if let Some(known) = ex.known_ids() {
                    known.add(fresh.iter().map(|id| id.as_str()));
                    known.set_numbered(last + fresh.len() as i64);
                }
                ex.insert_rows(vec![
                    Insert::new(&IDS, rows, ""),
                    Insert::new(&sql::ID_KEY_ROWS, keys, ""),
                ])
                .await?;
            }
            return renumbered(tables, &seqs, id_of);
        }
        // One round trip: the numbers given now (the statement's own snapshot does not see
        // them in the table) and those given before.
        Dialect::Postgres => {
            ex.query(
                "WITH given AS (
                   SELECT value AS record_id, n FROM jsonb_array_elements_text(CAST($1 AS TEXT)::jsonb) WITH ORDINALITY AS t(value, n)),
                 new AS (
                   INSERT INTO ledger_ids (record_id) SELECT record_id FROM given ORDER BY n
                   ON CONFLICT (record_id) DO NOTHING RETURNING seq, record_id)
                 SELECT seq, record_id FROM new
                 UNION ALL SELECT i.seq, i.record_id FROM ledger_ids i JOIN given g ON g.record_id = i.record_id",
                vec![json_list(&ids)],
            )
            .await?
        }
    };
    let mut seqs = HashMap::with_capacity(ids.len());
    for row in rows.iter("ledger_ids") {
        seqs.insert(row.text("record_id")?, row.int("seq")?);
    }
    renumbered(tables, &seqs, id_of)
}

/// The last number the SQLite ledger gave: the filters' ([`Exec::known_ids`]), which each write
/// transaction brings up to date as it begins (`sqlite::catch_up`), or read before they are
/// filled.
async fn last_number(ex: &mut dyn Exec) -> Result<i64, DbError> {
    if let Some(n) = ex.known_ids().and_then(|k| k.numbered()) {
        return Ok(n);
    }
    ex.query("SELECT COALESCE(MAX(seq), 0) AS n FROM ledger_ids", vec![])
        .await?
        .first_int("ledger_ids", "n")
}

/// `tables` with each row's record number filled in from `seqs`.
fn renumbered<const N: usize>(
    mut tables: [Vec<Vec<Param>>; N],
    seqs: &HashMap<String, i64>,
    id_of: impl Fn(&[Param]) -> Result<String, DbError>,
) -> Result<[Vec<Vec<Param>>; N], DbError> {
    for rows in &mut tables {
        for row in rows.iter_mut() {
            let id = id_of(row)?;
            let seq = *seqs
                .get(&id)
                .ok_or_else(|| DbError::Db(format!("record {id} was not numbered")))?;
            row[0] = seq.into();
        }
    }
    Ok(tables)
}

/// The numbers the ledger gave the record ids `ids`, by id; an id without one is left out. On
/// SQLite, the ids the ledger certainly has not numbered ([`Exec::known_ids`]) are not looked
/// up.
async fn numbers_of(ex: &mut dyn Exec, ids: &[String]) -> Result<HashMap<String, i64>, DbError> {
    let dialect = ex.dialect();
    let mut params = vec![json_list(ids)];
    if dialect == Dialect::Sqlite {
        let maybe = match ex.known_ids() {
            Some(known) => known.maybe(ids.iter().map(String::as_str)),
            None => ids.iter().map(String::as_str).collect(),
        };
        if maybe.is_empty() {
            return Ok(HashMap::new());
        }
        let terms: Vec<String> = maybe.iter().map(|id| sql::id_term(id)).collect();
        params = vec![json_list(&maybe), terms.join(" OR ").into()];
    }
    let rows = ex.query(&sql::numbers_of(dialect), params).await?;
    let mut seqs = HashMap::new();
    for row in rows.iter("ledger_ids") {
        seqs.insert(row.text("record_id")?, row.int("seq")?);
    }
    Ok(seqs)
}

/// Every stored position, read without locking it.
async fn stored_positions(ex: &mut dyn Exec) -> Result<Positions, DbError> {
    let rows = ex
        .query(
            "SELECT topic, part, next_offset FROM ledger_positions",
            vec![],
        )
        .await?;
    rows.iter("ledger_positions")
        .map(|r| {
            let part = r.int("part")?;
            Ok((
                (
                    r.text("topic")?,
                    i32::try_from(part).map_err(|_| r.bad("part", format!("{part}")))?,
                ),
                r.int("next_offset")?,
            ))
        })
        .collect()
}

/// A batch worked out on the reading connection ([`LedgerStore::plan_batch`]), to be written by
/// [`LedgerStore::write_planned`].
pub struct Planned {
    batch: Batch,
    /// The plan and its rows; `None` when it could not be made (the write works it out again).
    work: Option<(port::Plan, WriteRows)>,
}

impl Planned {
    /// A batch not worked out ahead: the write works it out in its transaction.
    pub fn later(batch: Batch) -> Planned {
        Planned { batch, work: None }
    }
}

/// The core's inputs over a batch's messages.
fn inputs(batch: &Batch) -> Vec<Input<'_>> {
    batch
        .iter()
        .map(|p| Input {
            topic: &p.delivery.topic,
            partition: p.delivery.partition,
            offset: p.delivery.offset,
            kind: p.kind,
            payload: &p.delivery.payload,
            decoded: &p.decoded,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Queries.

/// The approval a supervision record's keys name: by 许可编号, else by 许可决定文书号, else by the
/// holder's 统一社会信用代码 when exactly one approval has it.
async fn linked_approval(
    ex: &mut dyn Exec,
    keys: &super::LinkKeys,
) -> Result<Option<String>, DbError> {
    for (column, key) in [("link_license_no", &keys.0), ("link_document_no", &keys.1)] {
        if let Some(k) = key {
            let rows = ex
                .query(
                    &format!(
                        "SELECT record_id FROM ledger_records WHERE kind = 'approval' AND {column} = $1 AND {}
                         ORDER BY published_at DESC, record_id LIMIT 1",
                        sql::linked(ex.dialect(), &[(column, Some(k.as_str()))])
                    ),
                    vec![k.clone().into()],
                )
                .await?;
            let found = rows
                .iter("ledger_records")
                .next()
                .map(|r| r.text("record_id"));
            if let Some(id) = found {
                return id.map(Some);
            }
        }
    }
    if let Some(uscc) = &keys.2 {
        let rows = ex
            .query(
                &format!(
                    "SELECT record_id FROM ledger_records WHERE kind = 'approval' AND link_uscc = $1 AND {} LIMIT 2",
                    sql::linked(ex.dialect(), &[("link_uscc", Some(uscc.as_str()))])
                ),
                vec![uscc.clone().into()],
            )
            .await?;
        if rows.rows.len() == 1 {
            return Ok(Some(
                rows.iter("ledger_records")
                    .next()
                    .expect("one row")
                    .text("record_id")?,
            ));
        }
    }
    Ok(None)
}

async fn record_view(ex: &mut dyn Exec, id: String) -> Result<Option<RecordView>, DbError> {
    let rows = ex
        .query(
            &format!(
                "SELECT {} FROM ledger_records r {RECORD_JOIN} WHERE r.seq {}",
                record_select(),
                sql::seq_of(ex.dialect(), "$1")
            ),
            vec![id.clone().into()],
        )
        .await?;
    let Some(row) = rows.iter("ledger_records").next() else {
        return Ok(None);
    };
    let mut record = record_from(&row)?;
    let entries = ex
        .query(
            &format!(
                "SELECT {} FROM ledger_entries WHERE seq {} ORDER BY department",
                ENTRIES.column_list(),
                sql::seq_of(ex.dialect(), "$1")
            ),
            vec![id.clone().into()],
        )
        .await?
        .iter("ledger_entries")
        .map(|r| entry_from(&r))
        .collect::<Result<Vec<_>, _>>()?;
    let mut history = ex
        .query(
            &format!(
                "SELECT {} FROM ledger_history WHERE seq {} ORDER BY n",
                HISTORY.column_list(),
                sql::seq_of(ex.dialect(), "$1")
            ),
            vec![id.clone().into()],
        )
        .await?
        .iter("ledger_history")
        .map(|r| history_from(&r))
        .collect::<Result<Vec<_>, _>>()?;
    // Links are looked up now, not kept: whichever of an approval and the supervision about
    // it arrived first, they meet here.
    let keys = record.link_keys();
    let mut links = Vec::new();
    match record.kind {
        RecordKind::Supervision => {
            if let Some(approval) = linked_approval(ex, &keys).await? {
                links.push(HistoryRow {
                    record_id: record.record_id.clone(),
                    department: None,
                    action: "linked".into(),
                    actor: None,
                    channel: None,
                    at: record.published_at,
                    event_id: record.event_id.clone(),
                    detail: serde_json::json!({"approval_record_id": approval}),
                });
                record.linked_record_id = Some(approval);
            }
        }
        RecordKind::Approval if keys != (None, None, None) => {
            let rows = ex
                .query(
                    &format!(
                        "SELECT record_id, published_at, event_id, link_license_no, link_document_no, link_uscc FROM ledger_records
                         WHERE kind = 'supervision' AND (link_license_no = $1 OR link_document_no = $2 OR link_uscc = $3) AND {}
                         ORDER BY published_at, record_id",
                        sql::linked(ex.dialect(), &[("link_license_no", keys.0.as_deref()), ("link_document_no", keys.1.as_deref()), ("link_uscc", keys.2.as_deref())])
                    ),
                    vec![keys.0.clone().into(), keys.1.clone().into(), keys.2.clone().into()],
                )
                .await?;
            for row in rows.iter("ledger_records") {
                let theirs = (
                    row.opt_text("link_license_no")?,
                    row.opt_text("link_document_no")?,
                    row.opt_text("link_uscc")?,
                );
                if linked_approval(ex, &theirs).await?.as_deref() == Some(&id) {
                    links.push(HistoryRow {
                        record_id: id.clone(),
                        department: None,
                        action: "supervision".into(),
                        actor: None,
                        channel: None,
                        at: row.time("published_at")?,
                        event_id: row.text("event_id")?,
                        detail: serde_json::json!({"supervision_record_id": row.text("record_id")?}),
                    });
                }
            }
        }
        _ => {}
    }
    // Each link line goes where its time falls; the stored lines keep their order.
    for line in links {
        let at = history
            .iter()
            .position(|h| h.at > line.at)
            .unwrap_or(history.len());
        history.insert(at, line);
    }
    Ok(Some((record, entries, history)))
}

async fn inbox_page(
    ex: &mut dyn Exec,
    department: String,
    query: InboxQuery,
    now: DateTime<FixedOffset>,
) -> Result<InboxPage, DbError> {
    let d = ex.dialect();
    let mut params: Vec<Param> = vec![department.into()];
    let mut filter = String::new();
    match query.status {
        Some(InboxStatus::Unclaimed) => {
            filter += &format!(" AND {}", sql::state_in("e.", &EntryState::UNCLAIMED))
        }
        Some(InboxStatus::Claimed) => {
            filter += &format!(
                " AND {}",
                sql::state_in("e.", &EntryState::CLAIMED_OR_CLOSED)
            )
        }
        Some(InboxStatus::Returned) => {
            filter += &format!(" AND {}", sql::state_in("e.", &[EntryState::Returned]))
        }
        Some(InboxStatus::Overdue) => {
            params.push(now.into());
            filter += &format!(
                " AND {} AND e.claim_due_at < ${}",
                sql::state_in("e.", &EntryState::UNCLAIMED),
                params.len()
            );
        }
        None => {}
    }
    if let Some(term) = query.search.as_deref().filter(|t| !t.trim().is_empty()) {
        params.push(like_pattern(term.trim()).into());
        let n = params.len();
        let like = d.ilike();
        filter += &format!(
            " AND (e.record_id {like} ${n} ESCAPE '\\' OR r.case_no {like} ${n} ESCAPE '\\' OR r.title {like} ${n} ESCAPE '\\' OR r.counterpart {like} ${n} ESCAPE '\\')"
        );
    }
    let total = ex
        .query(
            &format!(
                "SELECT COUNT(*) AS n FROM ledger_entries e JOIN ledger_records r ON r.seq = e.seq WHERE e.department = $1{filter}"
            ),
            params.clone(),
        )
        .await?
        .first_int("ledger_entries", "n")?;
    // Entries with nothing due sort after every deadline.
    let (key, dir, cmp) = match query.order {
        InboxOrder::Newest => ("e.pushed_at", "DESC", "<"),
        InboxOrder::Urgency => ("COALESCE(e.due_at, 9000000000000000)", "ASC", ">"),
    };
    if let Some(cursor) = &query.cursor {
        let (k, id) = decode_cursor(cursor).map_err(DbError::Db)?;
        let k: i64 = k
            .parse()
            .map_err(|_| DbError::Db(format!("cursor '{cursor}' is damaged")))?;
        params.push(k.into());
        params.push(id.into());
        let (a, b) = (params.len() - 1, params.len());
        filter += &format!(" AND ({key} {cmp} ${a} OR ({key} = ${a} AND e.record_id {cmp} ${b}))");
    }
    let limit = query.limit.max(1);
    let rows = ex
        .query(
            &format!(
                "SELECT {}, {key} AS sort_key FROM ledger_entries e JOIN ledger_records r ON r.seq = e.seq
                 {RECORD_JOIN}
                 WHERE e.department = $1{filter} ORDER BY {key} {dir}, e.record_id {dir} LIMIT {}",
                entry_record_select(),
                limit + 1
            ),
            params,
        )
        .await?;
    let mut page = Vec::new();
    let mut keys = Vec::new();
    for row in rows.iter("ledger_entries") {
        page.push((entry_from(&row)?, joined_record(&row)?));
        keys.push(row.int("sort_key")?);
    }
    let next = if page.len() > limit {
        page.truncate(limit);
        Some(encode_cursor(
            &keys[limit - 1].to_string(),
            &page[limit - 1].0.record_id,
        ))
    } else {
        None
    };
    Ok(InboxPage {
        rows: page,
        total: total as u64,
        next,
    })
}

#[async_trait]
impl LedgerStore for SqlLedger {
    fn describe(&self) -> String {
        match &self.db {
            Db::Sqlite(db) => format!("sqlite ({})", db.path.display()),
            Db::Pg(db) => format!("postgres ({})", db.url),
        }
    }

    async fn positions(&self) -> Result<Positions, LedgerError> {
        self.read(|ex| Box::pin(stored_positions(ex))).await
    }

    async fn apply_batch(
        &self,
        batch: Batch,
        shared: Arc<Shared>,
        live: bool,
    ) -> Result<Vec<Outcome>, LedgerError> {
        self.write(move |ex| {
            Box::pin(async move {
                let inputs = inputs(&batch);
                let ctx = shared.context();
                let mut port = SqlPort { ex };
                port::apply_batch(&mut port, &inputs, &ctx, live).await
            })
        })
        .await
    }

    async fn plan_batch(&self, batch: Batch, shared: Arc<Shared>, live: bool) -> Planned {
        let read = batch.clone();
        let work = self
            .read(move |ex| {
                Box::pin(async move {
                    let inputs = inputs(&read);
                    let ctx = shared.context();
                    let positions = stored_positions(ex).await?;
                    let mut port = SqlPort { ex };
                    let mut plan = port::plan(&mut port, &positions, &inputs, &ctx, live).await?;
                    let (rows, positions) = WriteRows::from(std::mem::take(&mut plan.writes));
                    plan.writes.positions = positions;
                    Ok((plan, rows))
                })
            })
            .await;
        match work {
            Ok(work) => Planned {
                batch,
                work: Some(work),
            },
            Err(e) => {
                tracing::warn!(error = %e, "working a ledger batch out ahead failed; it is worked out again when written");
                Planned::later(batch)
            }
        }
    }

    async fn write_planned(
        &self,
        planned: Planned,
        shared: Arc<Shared>,
        live: bool,
    ) -> Result<Vec<Outcome>, LedgerError> {
        self.write(move |ex| {
            Box::pin(async move {
                let Planned { batch, work } = planned;
                let inputs = inputs(&batch);
                let mut port = SqlPort { ex };
                let locked = port.lock_positions(port::partitions(&inputs)).await?;
                match work {
                    Some((mut plan, rows)) if plan.holds(&locked) => {
                        plan.settle(&locked);
                        rows.write(port.ex, plan.writes.positions).await?;
                        Ok(plan.outcomes)
                    }
                    _ => {
                        let ctx = shared.context();
                        let plan = port::plan(&mut port, &locked, &inputs, &ctx, live).await?;
                        port.write(plan.writes).await?;
                        Ok(plan.outcomes)
                    }
                }
            })
        })
        .await
    }

    async fn record(&self, record_id: &str) -> Result<Option<RecordView>, LedgerError> {
        let id = record_id.to_string();
        self.read(move |ex| Box::pin(record_view(ex, id))).await
    }

    async fn waiting(&self, record_id: &str) -> Result<u64, LedgerError> {
        let id = record_id.to_string();
        self.read(move |ex| {
            Box::pin(async move {
                let rows = ex
                    .query(
                        &format!(
                            "SELECT COUNT(*) AS n FROM ledger_events ev WHERE ev.seq {}
                             AND NOT EXISTS (SELECT 1 FROM ledger_records r WHERE r.seq = ev.seq)",
                            sql::seq_of(ex.dialect(), "$1")
                        ),
                        vec![id.into()],
                    )
                    .await?;
                Ok(rows.first_int("ledger_events", "n")? as u64)
            })
        })
        .await
    }

    async fn inbox_page(
        &self,
        department: &str,
        query: &InboxQuery,
        now: DateTime<FixedOffset>,
    ) -> Result<InboxPage, LedgerError> {
        let (department, query) = (department.to_string(), query.clone());
        self.read(move |ex| Box::pin(inbox_page(ex, department, query, now)))
            .await
    }

    async fn unrouted(&self) -> Result<Vec<RecordRow>, LedgerError> {
        self.read(|ex| {
            Box::pin(async move {
                let rows = ex
                    .query(
                        &format!(
                            "SELECT {} FROM ledger_records r {RECORD_JOIN} WHERE r.unrouted IS NOT NULL ORDER BY r.published_at, r.record_id",
                            record_select()
                        ),
                        vec![],
                    )
                    .await?;
                rows.iter("ledger_records").map(|r| record_from(&r)).collect()
            })
        })
        .await
    }

    async fn entries_due_before(
        &self,
        before: DateTime<FixedOffset>,
    ) -> Result<Vec<DueEntry>, LedgerError> {
        self.read(move |ex| {
            Box::pin(async move {
                let rows = ex.query(&sql::due_scan(), vec![before.into()]).await?;
                rows.iter("ledger_entries")
                    .map(|r| {
                        let level = r.int("alert_level")?;
                        Ok(DueEntry {
                            record_id: r.text("record_id")?,
                            department: r.text("department")?,
                            kind: r.parse("kind")?,
                            policy: r.text("policy")?,
                            rule: r.text("due_rule")?,
                            due_at: r.time("due_at")?,
                            pushed_at: r.time("pushed_at")?,
                            calendar_version: r.text("calendar_version")?,
                            alert_level: AlertLevel::from_rank(level).ok_or_else(|| {
                                r.bad("alert_level", format!("{level} is not a level"))
                            })?,
                        })
                    })
                    .collect()
            })
        })
        .await
    }

    async fn obligations(
        &self,
        rule: &str,
        department: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(Entry, RecordRow)>, LedgerError> {
        let (rule, department) = (rule.to_string(), department.unwrap_or("").to_string());
        self.read(move |ex| {
            Box::pin(async move {
                let rows = ex
                    .query(
                        &format!(
                            "SELECT {} FROM ledger_entries e JOIN ledger_records r ON r.seq = e.seq {}
                             WHERE (e.claim_rule = $1 OR e.feedback_rule = $1) AND {}
                               AND ($2 = '' OR e.department = $2)
                             ORDER BY COALESCE(CASE WHEN e.feedback_rule = $1 THEN e.feedback_due_at END, e.claim_due_at), e.record_id
                             LIMIT {limit}",
                            entry_record_select(),
                            RECORD_JOIN,
                            sql::state_in("e.", &EntryState::OPEN),
                        ),
                        vec![rule.into(), department.into()],
                    )
                    .await?;
                entries_with_records(&rows, "ledger_entries")
            })
        })
        .await
    }

    async fn digest_counts(
        &self,
        day_start: DateTime<FixedOffset>,
        month_start: DateTime<FixedOffset>,
        now: DateTime<FixedOffset>,
    ) -> Result<Vec<DigestRow>, LedgerError> {
        let unclaimed = sql::state_in("", &EntryState::UNCLAIMED);
        let claimed = sql::state_in("", &EntryState::CLAIMED);
        let open = sql::state_in("", &EntryState::OPEN);
        let query = format!(
            "SELECT department,
               CAST(SUM(CASE WHEN {unclaimed} THEN 1 ELSE 0 END) AS BIGINT) AS to_claim,
               CAST(SUM(CASE WHEN claimed_at >= $1 THEN 1 ELSE 0 END) AS BIGINT) AS claimed_today,
               CAST(SUM(CASE WHEN {unclaimed} AND pushed_at >= $2 THEN 1 ELSE 0 END) AS BIGINT) AS unclaimed_this_month,
               CAST(SUM(CASE WHEN ({unclaimed} AND claim_due_at < $3) OR ({claimed} AND feedback_due_at < $3) THEN 1 ELSE 0 END) AS BIGINT) AS overdue,
               CAST(SUM(CASE WHEN feedback_rule = '{verify}' AND {open} THEN 1 ELSE 0 END) AS BIGINT) AS open_verifications,
               CAST(SUM(CASE WHEN claim_rule = '{reply}' AND {open} THEN 1 ELSE 0 END) AS BIGINT) AS open_inquiries
             FROM ledger_entries WHERE {open} OR claimed_at >= $1
             GROUP BY department ORDER BY department",
            verify = super::rules::VERIFY_COMMITMENT,
            reply = super::rules::REPLY_INQUIRY,
        );
        self.read(move |ex| {
            Box::pin(async move {
                let rows = ex
                    .query(
                        &query,
                        vec![day_start.into(), month_start.into(), now.into()],
                    )
                    .await?;
                rows.iter("ledger_entries")
                    .map(|r| {
                        Ok(DigestRow {
                            department: r.text("department")?,
                            to_claim: r.int("to_claim")?,
                            claimed_today: r.int("claimed_today")?,
                            unclaimed_this_month: r.int("unclaimed_this_month")?,
                            overdue: r.int("overdue")?,
                            open_verifications: r.int("open_verifications")?,
                            open_inquiries: r.int("open_inquiries")?,
                        })
                    })
                    .collect()
            })
        })
        .await
    }

    async fn finished_before(
        &self,
        before: DateTime<FixedOffset>,
        limit: usize,
    ) -> Result<Vec<String>, LedgerError> {
        let unclaimed = sql::state_in("e.", &EntryState::UNCLAIMED);
        let claimed = sql::state_in("e.", &EntryState::CLAIMED);
        let query = format!(
            "SELECT r.record_id FROM ledger_records r WHERE r.unrouted IS NULL
               AND EXISTS (SELECT 1 FROM ledger_entries e WHERE e.seq = r.seq)
               AND NOT EXISTS (SELECT 1 FROM ledger_entries e WHERE e.seq = r.seq
                     AND ({unclaimed} OR ({claimed} AND e.feedback_due_at IS NOT NULL)))
               AND NOT EXISTS (SELECT 1 FROM ledger_history h WHERE h.seq = r.seq AND h.at >= $1)
             ORDER BY r.seq LIMIT {limit}"
        );
        self.read(move |ex| {
            Box::pin(async move {
                let rows = ex.query(&query, vec![before.into()]).await?;
                rows.iter("ledger_records")
                    .map(|r| r.text("record_id"))
                    .collect()
            })
        })
        .await
    }

    async fn report_month(
        &self,
        from: DateTime<FixedOffset>,
        to: DateTime<FixedOffset>,
        mut report: super::report::Monthly,
    ) -> Result<super::report::Monthly, LedgerError> {
        let now = report.now();
        self.read(move |ex| {
            Box::pin(async move {
                let rows = ex
                    .query(
                        &sql::report_claims(),
                        vec![from.into(), to.into(), now.into()],
                    )
                    .await?;
                for r in rows.iter("ledger_entries") {
                    let n = |c: &str| count(&r, c);
                    report.claim_counts(super::report::ClaimCounts {
                        department: r.text("department")?,
                        kind: r.text("kind")?,
                        flow: r.text("flow")?,
                        pushed: n("pushed")?,
                        with_deadline: n("with_deadline")?,
                        claimed: n("claimed")?,
                        claimed_on_time: n("claimed_on_time")?,
                        claimed_late: n("claimed_late")?,
                        open: n("open")?,
                        missed: n("missed")?,
                        returned: n("returned")?,
                        forwarded: n("forwarded")?,
                        offline: n("offline")?,
                        updates: n("updates")?,
                        replied: n("replied")?,
                        deemed_agreed: n("deemed_agreed")?,
                        attending: n("attending")?,
                        signed_off: n("signed_off")?,
                        verified: n("verified")?,
                        unfulfilled: n("unfulfilled")?,
                        follow_up_overdue: n("follow_up_overdue")?,
                    });
                }
                // One number per entry, sorted by the database.
                let rows = ex
                    .query(
                        "SELECT department, kind, flow, claim_hours FROM ledger_entries
                         WHERE pushed_at >= $1 AND pushed_at < $2 AND claim_hours IS NOT NULL
                         ORDER BY department, kind, flow, claim_hours",
                        vec![from.into(), to.into()],
                    )
                    .await?;
                for r in rows.iter("ledger_entries") {
                    let hours = r
                        .opt_real("claim_hours")?
                        .ok_or_else(|| r.bad("claim_hours", "is empty (NULL)".into()))?;
                    report.claim_hours(
                        &r.text("department")?,
                        &r.text("kind")?,
                        &r.text("flow")?,
                        hours,
                    );
                }
                let rows = ex
                    .query(&sql::report_pushes(), vec![from.into(), to.into()])
                    .await?;
                for r in rows.iter("ledger_records") {
                    let n = |c: &str| count(&r, c);
                    report.push_counts(super::report::PushCounts {
                        pusher: r.text("pusher")?,
                        kind: r.text("kind")?,
                        pushed: n("pushed")?,
                        with_deadline: n("with_deadline")?,
                        late: n("late")?,
                    });
                }
                let rows = ex
                    .query(
                        "SELECT COALESCE(pusher, '') AS pusher, kind, push_hours FROM ledger_records
                         WHERE pushed_at >= $1 AND pushed_at < $2 AND push_hours IS NOT NULL
                         ORDER BY COALESCE(pusher, ''), kind, push_hours",
                        vec![from.into(), to.into()],
                    )
                    .await?;
                for r in rows.iter("ledger_records") {
                    let hours = r
                        .opt_real("push_hours")?
                        .ok_or_else(|| r.bad("push_hours", "is empty (NULL)".into()))?;
                    report.push_hours(&r.text("pusher")?, &r.text("kind")?, hours);
                }
                Ok(report)
            })
        })
        .await
    }

    async fn decided_between(
        &self,
        kind: RecordKind,
        from: DateTime<FixedOffset>,
        to: DateTime<FixedOffset>,
        department: Option<&str>,
    ) -> Result<Vec<RecordRow>, LedgerError> {
        let department = department.unwrap_or("").to_string();
        let query = format!(
            "SELECT {} FROM ledger_records r {RECORD_JOIN}
             WHERE r.kind = $1 AND COALESCE(r.decided_at, r.published_at) >= $2
               AND COALESCE(r.decided_at, r.published_at) < $3
               AND ($4 = '' OR r.pusher = $4 OR EXISTS (SELECT 1 FROM ledger_entries e
                     WHERE e.seq = r.seq AND e.department = $4 AND e.flow <> 'decision'))
             ORDER BY COALESCE(r.decided_at, r.published_at), r.record_id",
            record_select()
        );
        self.read(move |ex| {
            Box::pin(async move {
                let rows = ex
                    .query(
                        &query,
                        vec![
                            kind.as_str().into(),
                            from.into(),
                            to.into(),
                            department.into(),
                        ],
                    )
                    .await?;
                rows.iter("ledger_records")
                    .map(|r| record_from(&r))
                    .collect()
            })
        })
        .await
    }

    async fn claim_outbox(
        &self,
        owner: &str,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<OutboxRow>, LedgerError> {
        let owner = owner.to_string();
        let now = chrono::Utc::now().timestamp_millis();
        let until = now + lease.as_millis() as i64;
        self.write(move |ex| {
            Box::pin(async move {
                let lock = ex.dialect().for_update();
                let rows = ex
                    .query(
                        &format!(
                            "SELECT id, record_id, payload FROM alert_outbox WHERE claimed_until IS NULL OR claimed_until < $1
                             ORDER BY created_at, id LIMIT {limit}{}",
                            if lock.is_empty() { String::new() } else { format!("{lock} SKIP LOCKED") }
                        ),
                        vec![now.into()],
                    )
                    .await?;
                let mut out = Vec::new();
                for r in rows.iter("alert_outbox") {
                    let id = r.text("id")?;
                    ex.execute(
                        "UPDATE alert_outbox SET claimed_by = $2, claimed_until = $3 WHERE id = $1",
                        vec![id.clone().into(), owner.clone().into(), until.into()],
                    )
                    .await?;
                    out.push((id, r.text("record_id")?, r.text("payload")?.into_bytes()));
                }
                Ok(out)
            })
        })
        .await
    }

    async fn outbox_done(&self, ids: Vec<String>) -> Result<(), LedgerError> {
        self.write(move |ex| {
            Box::pin(async move {
                let d = ex.dialect();
                ex.execute(
                    &format!("DELETE FROM alert_outbox WHERE id {}", d.in_list("$1")),
                    vec![json_list(&ids)],
                )
                .await?;
                Ok(())
            })
        })
        .await
    }

    async fn clear(&self) -> Result<(), LedgerError> {
        self.write(|ex| {
            Box::pin(async move {
                let tables = sql::PROJECTION;
                match ex.dialect() {
                    // SQLite empties a table deleted without a condition as a whole; the id
                    // and link indexes are emptied by their own command.
                    Dialect::Sqlite => {
                        for table in tables {
                            ex.execute(&format!("DELETE FROM {table}"), vec![]).await?;
                        }
                        for index in sql::FTS_INDEXES {
                            ex.execute(
                                &format!("INSERT INTO {index} ({index}) VALUES ('delete-all')"),
                                vec![],
                            )
                            .await?;
                        }
                    }
                    // A new, empty file for each table: no dead rows and index entries left
                    // for the rebuild to wade through until a vacuum.
                    Dialect::Postgres => {
                        ex.script(&format!("TRUNCATE {} RESTART IDENTITY", tables.join(", ")))
                            .await?;
                    }
                }
                Ok(())
            })
        })
        .await?;
        // Once committed: until then the ids are still numbered.
        if let Db::Sqlite(db) = &self.db {
            db.known.clear();
        }
        Ok(())
    }

    async fn lease(&self, name: &str, owner: &str, ttl: Duration) -> Result<bool, LedgerError> {
        let (name, owner) = (name.to_string(), owner.to_string());
        let now = chrono::Utc::now().timestamp_millis();
        let until = now + ttl.as_millis() as i64;
        self.write(move |ex| {
            Box::pin(async move {
                let n = ex
                    .execute(
                        "INSERT INTO ledger_leases (name, owner, until_ms) VALUES ($1, $2, $3)
                         ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, until_ms = excluded.until_ms
                         WHERE ledger_leases.owner = excluded.owner OR ledger_leases.until_ms < $4",
                        vec![name.into(), owner.into(), until.into(), now.into()],
                    )
                    .await?;
                Ok(n == 1)
            })
        })
        .await
    }

    async fn gauges(&self) -> Result<Vec<GaugeRow>, LedgerError> {
        let oldest = format!(
            "SELECT MIN(pushed_at) AS oldest FROM ledger_entries WHERE department = $1 AND kind = $2 AND {}",
            sql::state_in("", &EntryState::UNCLAIMED)
        );
        self.read(move |ex| {
            Box::pin(async move {
                let rows = ex
                    .query(
                        "SELECT name, department, kind, value FROM ledger_counters WHERE name IN ('unclaimed', 'overdue') ORDER BY department, kind",
                        vec![],
                    )
                    .await?;
                let mut out: Vec<GaugeRow> = Vec::new();
                for r in rows.iter("ledger_counters") {
                    let (name, department, kind) =
                        (r.text("name")?, r.text("department")?, r.text("kind")?);
                    let value = r.int("value")?;
                    let row = match out
                        .iter_mut()
                        .find(|g| g.department == department && g.kind == kind)
                    {
                        Some(g) => g,
                        None => {
                            out.push(GaugeRow {
                                department,
                                kind,
                                unclaimed: 0,
                                overdue: 0,
                                oldest: None,
                            });
                            out.last_mut().expect("pushed")
                        }
                    };
                    match Counter::parse(&name) {
                        Some(Counter::Unclaimed) => row.unclaimed = value,
                        Some(Counter::Overdue) => row.overdue = value,
                        _ => return Err(r.bad("name", format!("'{name}' is not a gauge"))),
                    }
                }
                // The oldest unclaimed push: one index seek per department and kind.
                for g in out.iter_mut().filter(|g| g.unclaimed > 0) {
                    let rows = ex
                        .query(
                            &oldest,
                            vec![g.department.clone().into(), g.kind.clone().into()],
                        )
                        .await?;
                    let oldest = rows.iter("ledger_entries").next().map(|r| r.opt_time("oldest"));
                    if let Some(t) = oldest {
                        g.oldest = t?;
                    }
                }
                Ok(out)
            })
        })
        .await
    }

    async fn unrouted_counts(&self) -> Result<Vec<(String, i64)>, LedgerError> {
        self.counters(Counter::Unrouted).await
    }

    async fn waiting_counts(&self) -> Result<Vec<(String, i64)>, LedgerError> {
        self.counters(Counter::Waiting).await
    }

    async fn due_deliveries(
        &self,
        departments: Vec<String>,
        now: DateTime<FixedOffset>,
        limit: usize,
    ) -> Result<Vec<(Entry, RecordRow, u32)>, LedgerError> {
        let query = format!(
            "SELECT {}, COALESCE(d.attempts, 0) AS attempts FROM ledger_entries e
             JOIN ledger_records r ON r.seq = e.seq {RECORD_JOIN}
             LEFT JOIN deliveries d ON d.record_id = e.record_id AND d.department = e.department
             WHERE e.department = $1 AND {}
               AND (d.status IS NULL OR (d.status = 'retry' AND d.next_attempt_at <= $2) OR d.version < e.version)
             ORDER BY e.pushed_at, e.record_id LIMIT {limit}",
            entry_record_select(),
            sql::state_in("e.", &[EntryState::Pushed]),
        );
        self.read(move |ex| {
            Box::pin(async move {
                let mut out = Vec::new();
                for dep in departments {
                    let rows = ex.query(&query, vec![dep.into(), now.into()]).await?;
                    for r in rows.iter("ledger_entries") {
                        let attempts = r.int("attempts")?;
                        out.push((
                            entry_from(&r)?,
                            joined_record(&r)?,
                            u32::try_from(attempts)
                                .map_err(|_| r.bad("attempts", format!("{attempts}")))?,
                        ));
                    }
                }
                Ok(out)
            })
        })
        .await
    }

    async fn delivery_retry(
        &self,
        record_id: String,
        department: String,
        attempts: u32,
        next: DateTime<FixedOffset>,
        error: String,
    ) -> Result<(), LedgerError> {
        self.write(move |ex| {
            Box::pin(async move {
                ex.execute(
                    &format!(
                        "INSERT INTO deliveries (record_id, department, attempts, status, next_attempt_at, last_error, version)
                         VALUES ($1, $2, $3, 'retry', $4, $5, {})
                         ON CONFLICT (record_id, department) DO UPDATE SET attempts = excluded.attempts, status = 'retry',
                           next_attempt_at = excluded.next_attempt_at, last_error = excluded.last_error, version = excluded.version",
                        entry_version(ex.dialect())
                    ),
                    vec![
                        record_id.into(),
                        department.into(),
                        i64::from(attempts).into(),
                        next.into(),
                        crate::mask::mask(&error).into(),
                    ],
                )
                .await?;
                Ok(())
            })
        })
        .await
    }

    async fn delivery_reset(
        &self,
        record_id: String,
        now: DateTime<FixedOffset>,
    ) -> Result<u64, LedgerError> {
        self.write(move |ex| {
            Box::pin(async move {
                ex.execute(
                    "UPDATE deliveries SET status = 'retry', attempts = 0, next_attempt_at = $2, last_error = NULL
                     WHERE record_id = $1 AND status = 'dead'",
                    vec![record_id.into(), now.into()],
                )
                .await
            })
        })
        .await
    }

    async fn delivery_done(
        &self,
        record_id: String,
        department: String,
        attempts: u32,
        status: &'static str,
    ) -> Result<(), LedgerError> {
        self.write(move |ex| {
            Box::pin(async move {
                ex.execute(
                    &format!(
                        "INSERT INTO deliveries (record_id, department, attempts, status, version)
                         VALUES ($1, $2, $3, $4, {})
                         ON CONFLICT (record_id, department) DO UPDATE SET attempts = excluded.attempts, status = excluded.status,
                           next_attempt_at = NULL, version = excluded.version",
                        entry_version(ex.dialect())
                    ),
                    vec![
                        record_id.into(),
                        department.into(),
                        i64::from(attempts).into(),
                        status.into(),
                    ],
                )
                .await?;
                Ok(())
            })
        })
        .await
    }
}

/// The version of the entry of the record `$1` for the department `$2` (1 without one): the
/// version a delivery is for.
fn entry_version(dialect: Dialect) -> String {
    format!(
        "COALESCE((SELECT version FROM ledger_entries WHERE seq {} AND department = $2), 1)",
        sql::seq_of(dialect, "$1")
    )
}

impl SqlLedger {
    /// One counter's values by kind (counters without a department).
    async fn counters(&self, name: Counter) -> Result<Vec<(String, i64)>, LedgerError> {
        self.read(move |ex| {
            Box::pin(async move {
                let rows = ex
                    .query(
                        "SELECT kind, value FROM ledger_counters WHERE name = $1 AND department = '' ORDER BY kind",
                        vec![name.as_str().into()],
                    )
                    .await?;
                rows.iter("ledger_counters")
                    .map(|r| Ok((r.text("kind")?, r.int("value")?)))
                    .collect()
            })
        })
        .await
    }
}
