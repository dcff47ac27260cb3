//! The ledger store seam: SQLite for one gateway (the default), PostgreSQL when several gateway
//! instances share the ledger. Both run the same pure state machine ([`super::apply`]) inside one
//! transaction per bus message, and the same scenario tests run against both.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, FixedOffset};

use super::projector::Shared;
use super::{Alert, AlertLevel, Changes, DueEntry, Entry, HistoryRow, RecordRow};
use crate::bus::{Delivery, Positions};
use crate::schema::RecordKind;

/// Ledger failures.
#[derive(Debug, thiserror::Error)]
#[error("ledger {path}: {message}")]
pub struct LedgerError {
    pub path: String,
    pub message: String,
}

/// (department, kind, unclaimed, overdue, oldest push) for the gauges.
pub type GaugeRow = (String, String, i64, i64, Option<DateTime<FixedOffset>>);
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

/// An outbox alert: (alert id, record id, CloudEvent payload).
pub type OutboxRow = (String, String, Vec<u8>);

/// Bus messages to apply together, with the kind of record each topic carries; shared, so a
/// retry after a failed transaction copies nothing.
pub type Batch = Arc<[(Delivery, RecordKind)]>;

#[async_trait]
pub trait LedgerStore: Send + Sync + 'static {
    /// For logs: `sqlite (./data/ledger.db)`, `postgres (host/db)`.
    fn describe(&self) -> String;
    /// The consumer positions stored with the ledger.
    async fn positions(&self) -> Result<Positions, LedgerError>;
    /// Applies bus messages in order — decode, state machine, changes, alerts to the outbox, new
    /// positions — in one transaction, and returns the changes of each in the same order; all or
    /// none are applied. A message at or before the stored position of its partition (another
    /// instance or an earlier run applied it) changes nothing.
    async fn apply_batch(
        &self,
        batch: Batch,
        shared: Arc<Shared>,
    ) -> Result<Vec<Changes>, LedgerError>;
    /// [`LedgerStore::apply_batch`] of one message.
    async fn apply(
        &self,
        delivery: Delivery,
        kind: RecordKind,
        shared: Arc<Shared>,
    ) -> Result<Changes, LedgerError> {
        let mut changes = self
            .apply_batch(Arc::from(vec![(delivery, kind)]), shared)
            .await?;
        Ok(changes.pop().unwrap_or_default())
    }
    /// A record with its entries and history.
    async fn record(&self, record_id: &str) -> Result<Option<RecordView>, LedgerError>;
    /// A department's entries with their records, newest first, filtered by status
    /// (`unclaimed`, `claimed`, `overdue` at `now`, or all).
    async fn inbox(
        &self,
        department: &str,
        status: Option<&str>,
        now: DateTime<FixedOffset>,
        limit: usize,
    ) -> Result<Vec<(Entry, RecordRow)>, LedgerError>;
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
    /// Retention: deletes records with nothing left to do — routed, every entry finished (no
    /// claim or follow-up open) — and no activity since `before`, with their entries, history
    /// and deliveries. Returns how many records went.
    async fn purge_finished(&self, before: DateTime<FixedOffset>) -> Result<u64, LedgerError>;
    /// The monthly report over the entries pushed in `[from, to)`, read as a stream.
    async fn report_month(
        &self,
        from: DateTime<FixedOffset>,
        to: DateTime<FixedOffset>,
        report: super::report::Monthly,
    ) -> Result<super::report::Monthly, LedgerError>;
    /// Every entry pushed in `[from, to)`.
    async fn entries_pushed_between(
        &self,
        from: DateTime<FixedOffset>,
        to: DateTime<FixedOffset>,
    ) -> Result<Vec<Entry>, LedgerError>;
    /// Raises an unclaimed entry's alert level to `level` if it is lower, queuing the alert in
    /// the same transaction. Returns whether this call raised it: with several gateways on one
    /// database exactly one wins, so each alert is decided once.
    async fn raise_alert(&self, alert: Alert, level: AlertLevel) -> Result<bool, LedgerError>;
    /// Queued alerts, oldest first, without claiming them.
    async fn outbox(&self, limit: usize) -> Result<Vec<OutboxRow>, LedgerError>;
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
    /// The whole projection as comparable text lines, for the rebuild check.
    async fn snapshot(&self) -> Result<Vec<String>, LedgerError>;
    /// Deletes the projection and the positions, so it can be rebuilt from the topics.
    async fn clear(&self) -> Result<(), LedgerError>;
    /// Open entries per department and kind: counts, overdue at `now`, oldest push.
    async fn gauges(&self, now: DateTime<FixedOffset>) -> Result<Vec<GaugeRow>, LedgerError>;
    /// Records waiting unrouted, by kind.
    async fn unrouted_counts(&self) -> Result<Vec<(String, i64)>, LedgerError>;
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

/// Opens the ledger named by a URL: `sqlite:PATH` or `postgres://…`.
pub async fn open(url: &str) -> Result<Arc<dyn LedgerStore>, LedgerError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Arc::new(super::pg::PgLedger::connect(url).await?));
    }
    let path = url
        .strip_prefix("sqlite:")
        .map(|p| p.trim_start_matches("//"))
        .ok_or_else(|| LedgerError {
            path: url.to_string(),
            message: "expected sqlite:PATH or postgres://…".into(),
        })?;
    Ok(Arc::new(super::sqlite::SqliteLedger::open(
        std::path::Path::new(path),
    )?))
}
