//! The ledger in SQLite (the default, `sqlite:<data_dir>/ledger.db`, next to the state store).
//!
//! Each bus message is applied in one `BEGIN IMMEDIATE` transaction that loads the record,
//! runs the pure state machine, writes the changes, queues alerts in an outbox and advances the
//! consumer position — so a crash anywhere leaves either all of it or none of it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, FixedOffset};
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction};
use serde_json::Value;

use super::store::{
    decode_cursor, encode_cursor, Batch, DigestRow, GaugeRow, InboxOrder, InboxPage, InboxQuery,
    InboxStatus, LedgerError, LedgerStore, OutboxRow, RecordView,
};
use super::{
    AlertLevel, Changes, DueEntry, Entry, EntryState, HistoryRow, Loaded, RecordRow, DUE_INDEXES,
    DUE_SCAN, SUPERSEDED_INDEXES,
};
use crate::adapter::convert::shanghai;
use crate::bus::{Delivery, Positions};
use crate::schema::RecordKind;
use async_trait::async_trait;

pub struct SqliteLedger {
    path: PathBuf,
    /// The connection every write goes through.
    conn: Arc<Mutex<Connection>>,
    /// A second, read-only connection for the queries (inbox, record views, the tracker's
    /// scans, reports): in WAL mode it reads the last commit while a write is in progress, so a
    /// department's inbox does not wait for the projector's next batch.
    reader: Arc<Mutex<Connection>>,
    _checkpointer: crate::db::Checkpointer,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS ledger_records (
    record_id TEXT PRIMARY KEY, kind TEXT NOT NULL, event_id TEXT NOT NULL, published_at TEXT NOT NULL,
    decided_at TEXT, adapter TEXT NOT NULL, push_rule TEXT, push_due_at TEXT, push_late INTEGER NOT NULL,
    unrouted TEXT, data TEXT NOT NULL, linked_record_id TEXT, source_department TEXT,
    link_license_no TEXT, link_document_no TEXT, link_uscc TEXT);
CREATE INDEX IF NOT EXISTS records_by_license_no ON ledger_records (link_license_no) WHERE link_license_no IS NOT NULL;
CREATE INDEX IF NOT EXISTS records_by_document_no ON ledger_records (link_document_no) WHERE link_document_no IS NOT NULL;
CREATE INDEX IF NOT EXISTS records_by_uscc ON ledger_records (link_uscc) WHERE link_uscc IS NOT NULL;
CREATE INDEX IF NOT EXISTS records_unrouted ON ledger_records (unrouted) WHERE unrouted IS NOT NULL;
CREATE TABLE IF NOT EXISTS ledger_entries (
    record_id TEXT NOT NULL, department TEXT NOT NULL, kind TEXT NOT NULL, state TEXT NOT NULL,
    pushed_at TEXT NOT NULL, delivered_at TEXT, claimed_at TEXT, returned_at TEXT, feedback_at TEXT,
    closed_at TEXT, policy TEXT NOT NULL, claim_rule TEXT, claim_due_at TEXT, feedback_rule TEXT,
    feedback_due_at TEXT, calendar_version TEXT NOT NULL, deadline_problem TEXT,
    alert_level INTEGER NOT NULL, note TEXT, outcome TEXT, via TEXT,
    PRIMARY KEY (record_id, department)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entries_by_department ON ledger_entries (department, state);
CREATE INDEX IF NOT EXISTS entries_open ON ledger_entries (state, claim_due_at);
CREATE INDEX IF NOT EXISTS entries_pushed ON ledger_entries (pushed_at);
CREATE TABLE IF NOT EXISTS ledger_history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, record_id TEXT NOT NULL, department TEXT, action TEXT NOT NULL,
    actor TEXT, channel TEXT, at TEXT NOT NULL, event_id TEXT NOT NULL, detail TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS history_by_record ON ledger_history (record_id);
CREATE INDEX IF NOT EXISTS history_by_event ON ledger_history (event_id);
CREATE TABLE IF NOT EXISTS ledger_positions (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS deliveries (
    record_id TEXT NOT NULL, department TEXT NOT NULL, attempts INTEGER NOT NULL, status TEXT NOT NULL,
    next_attempt_at TEXT, last_error TEXT, PRIMARY KEY (record_id, department)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS alert_outbox (
    id TEXT PRIMARY KEY, record_id TEXT NOT NULL, payload TEXT NOT NULL, created_at TEXT NOT NULL,
    claimed_by TEXT, claimed_until TEXT);
";

/// Times are stored as RFC 3339 in Asia/Shanghai with milliseconds, so text order is time order.
pub fn ts(t: DateTime<FixedOffset>) -> String {
    t.with_timezone(&shanghai())
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, false)
}

fn parse_ts(s: Option<String>) -> Option<DateTime<FixedOffset>> {
    s.and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
}

fn rank(level: AlertLevel) -> i64 {
    level as i64
}

fn level_of(rank: i64) -> AlertLevel {
    match rank {
        1 => AlertLevel::DueSoon,
        2 => AlertLevel::Overdue,
        3 => AlertLevel::Escalated,
        _ => AlertLevel::None,
    }
}

const ENTRY_COLUMNS: &str = "record_id, department, kind, state, pushed_at, delivered_at, claimed_at, returned_at, feedback_at, closed_at, policy, claim_rule, claim_due_at, feedback_rule, feedback_due_at, calendar_version, deadline_problem, alert_level, note, outcome, via";
/// How many columns [`ENTRY_COLUMNS`] has: where the record's columns start in a joined row.
const ENTRY_WIDTH: usize = 21;

fn entry_from(r: &Row) -> rusqlite::Result<Entry> {
    let kind: String = r.get(2)?;
    let state: String = r.get(3)?;
    Ok(Entry {
        record_id: r.get(0)?,
        department: r.get(1)?,
        kind: kind.parse().unwrap_or(RecordKind::Approval),
        state: EntryState::parse(&state).unwrap_or(EntryState::Pushed),
        pushed_at: parse_ts(r.get(4)?).unwrap_or_default(),
        delivered_at: parse_ts(r.get(5)?),
        claimed_at: parse_ts(r.get(6)?),
        returned_at: parse_ts(r.get(7)?),
        feedback_at: parse_ts(r.get(8)?),
        closed_at: parse_ts(r.get(9)?),
        policy: r.get(10)?,
        claim_rule: r.get(11)?,
        claim_due_at: parse_ts(r.get(12)?),
        feedback_rule: r.get(13)?,
        feedback_due_at: parse_ts(r.get(14)?),
        calendar_version: r.get(15)?,
        deadline_problem: r.get(16)?,
        alert_level: level_of(r.get(17)?),
        note: r.get(18)?,
        outcome: r.get(19)?,
        via: r.get(20)?,
    })
}

const RECORD_COLUMNS: &str = "record_id, kind, event_id, published_at, decided_at, adapter, push_rule, push_due_at, push_late, unrouted, data, linked_record_id, source_department";

fn record_from(r: &Row) -> rusqlite::Result<RecordRow> {
    record_at(r, 0)
}

/// A record from the columns starting at `o` (after an entry's in a join).
fn record_at(r: &Row, o: usize) -> rusqlite::Result<RecordRow> {
    let kind: String = r.get(o + 1)?;
    let data: String = r.get(o + 10)?;
    Ok(RecordRow {
        record_id: r.get(o)?,
        kind: kind.parse().unwrap_or(RecordKind::Approval),
        event_id: r.get(o + 2)?,
        published_at: parse_ts(r.get(o + 3)?).unwrap_or_default(),
        decided_at: parse_ts(r.get(o + 4)?),
        adapter: r.get(o + 5)?,
        push_rule: r.get(o + 6)?,
        push_due_at: parse_ts(r.get(o + 7)?),
        push_late: r.get::<_, i64>(o + 8)? != 0,
        unrouted: r.get(o + 9)?,
        data: serde_json::from_str(&data).unwrap_or(Value::Null),
        linked_record_id: r.get(o + 11)?,
        source_department: r.get(o + 12)?,
    })
}

fn history_from(r: &Row) -> rusqlite::Result<HistoryRow> {
    let detail: String = r.get(7)?;
    Ok(HistoryRow {
        record_id: r.get(0)?,
        department: r.get(1)?,
        action: r.get(2)?,
        actor: r.get(3)?,
        channel: r.get(4)?,
        at: parse_ts(r.get(5)?).unwrap_or_default(),
        event_id: r.get(6)?,
        detail: serde_json::from_str(&detail).unwrap_or(Value::Null),
    })
}

type LinkKeys = (Option<String>, Option<String>, Option<String>);

/// The approval record a supervision record's affected licence names: by 许可编号, else by
/// 许可决定文书号, else by the holder's 统一社会信用代码 when exactly one approval has it.
fn find_approval(tx: &Transaction, keys: &LinkKeys) -> rusqlite::Result<Option<String>> {
    for (column, key) in [("link_license_no", &keys.0), ("link_document_no", &keys.1)] {
        if let Some(k) = key {
            let found = tx
                .prepare_cached(&format!("SELECT record_id FROM ledger_records WHERE {column} = ?1 ORDER BY published_at DESC LIMIT 1"))?
                .query_row([k], |r| r.get(0))
                .optional()?;
            if found.is_some() {
                return Ok(found);
            }
        }
    }
    if let Some(uscc) = &keys.2 {
        let ids: Vec<String> = tx
            .prepare_cached("SELECT record_id FROM ledger_records WHERE link_uscc = ?1 LIMIT 2")?
            .query_map([uscc], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        if ids.len() == 1 {
            return Ok(ids.into_iter().next());
        }
    }
    Ok(None)
}

/// One bus message inside a transaction: skipped when the position says it was applied, else
/// decoded, run through the state machine and written, and the position moved past it.
fn apply_one(
    tx: &rusqlite::Transaction,
    delivery: &Delivery,
    kind: RecordKind,
    context: &super::Context<'_>,
) -> rusqlite::Result<Changes> {
    let position: Option<i64> = tx
        .prepare_cached(
            "SELECT next_offset FROM ledger_positions WHERE topic = ?1 AND partition = ?2",
        )?
        .query_row(params![delivery.topic, delivery.partition], |r| r.get(0))
        .optional()?;
    if position.is_some_and(|p| delivery.offset < p) {
        // Another instance (or an earlier run) already applied it.
        return Ok(Changes::default());
    }
    let changes = match super::decode(kind, &delivery.payload) {
        Ok(event) => {
            let affected = event.affected();
            let loaded = load(tx, event.record_id(), event.event_id(), affected.as_ref())?;
            let changes = super::apply(&loaded, &event, context);
            write(tx, &changes)?;
            changes
        }
        Err(e) => {
            tracing::error!(topic = %delivery.topic, offset = delivery.offset, error = %e, "undecodable ledger event skipped");
            Changes::default()
        }
    };
    tx.prepare_cached(
        "INSERT INTO ledger_positions (topic, partition, next_offset) VALUES (?1, ?2, ?3)
         ON CONFLICT (topic, partition) DO UPDATE SET next_offset = excluded.next_offset",
    )?
    .execute(params![
        delivery.topic,
        delivery.partition,
        delivery.offset + 1
    ])?;
    Ok(changes)
}

fn load(
    tx: &Transaction,
    record_id: &str,
    event_id: &str,
    affected: Option<&LinkKeys>,
) -> rusqlite::Result<Loaded> {
    let seen = tx
        .prepare_cached("SELECT 1 FROM ledger_history WHERE event_id = ?1 LIMIT 1")?
        .query_row([event_id], |_| Ok(()))
        .optional()?
        .is_some();
    let record = tx
        .prepare_cached(&format!(
            "SELECT {RECORD_COLUMNS} FROM ledger_records WHERE record_id = ?1"
        ))?
        .query_row([record_id], record_from)
        .optional()?;
    let entries = tx
        .prepare_cached(&format!(
            "SELECT {ENTRY_COLUMNS} FROM ledger_entries WHERE record_id = ?1 ORDER BY department"
        ))?
        .query_map([record_id], entry_from)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let linked_approval = match affected {
        Some(keys) if record.is_none() => find_approval(tx, keys)?,
        _ => None,
    };
    Ok(Loaded {
        record,
        entries,
        seen,
        linked_approval,
    })
}

fn write(tx: &Transaction, changes: &Changes) -> rusqlite::Result<()> {
    if let Some(r) = &changes.record {
        let links = r.link_keys();
        tx.prepare_cached(&format!(
            "INSERT INTO ledger_records ({RECORD_COLUMNS}, link_license_no, link_document_no, link_uscc)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
             ON CONFLICT (record_id) DO UPDATE SET event_id = excluded.event_id, unrouted = excluded.unrouted,
               data = excluded.data, link_license_no = excluded.link_license_no,
               link_document_no = excluded.link_document_no, link_uscc = excluded.link_uscc"
        ))?
        .execute(params![
            r.record_id,
            r.kind.as_str(),
            r.event_id,
            ts(r.published_at),
            r.decided_at.map(ts),
            r.adapter,
            r.push_rule,
            r.push_due_at.map(ts),
            r.push_late as i64,
            r.unrouted,
            r.data.to_string(),
            r.linked_record_id,
            r.source_department,
            links.0,
            links.1,
            links.2,
        ])?;
    }
    for e in &changes.entries {
        tx.prepare_cached(&format!(
            "INSERT OR REPLACE INTO ledger_entries ({ENTRY_COLUMNS})
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)"
        ))?
        .execute(params![
            e.record_id,
            e.department,
            e.kind.as_str(),
            e.state.as_str(),
            ts(e.pushed_at),
            e.delivered_at.map(ts),
            e.claimed_at.map(ts),
            e.returned_at.map(ts),
            e.feedback_at.map(ts),
            e.closed_at.map(ts),
            e.policy,
            e.claim_rule,
            e.claim_due_at.map(ts),
            e.feedback_rule,
            e.feedback_due_at.map(ts),
            e.calendar_version,
            e.deadline_problem,
            rank(e.alert_level),
            e.note,
            e.outcome,
            e.via,
        ])?;
    }
    for h in &changes.history {
        tx.prepare_cached(
            "INSERT INTO ledger_history (record_id, department, action, actor, channel, at, event_id, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![h.record_id, h.department, h.action, h.actor, h.channel, ts(h.at), h.event_id, h.detail.to_string()])?;
    }
    for a in &changes.alerts {
        queue_alert(tx, a)?;
    }
    Ok(())
}

fn queue_alert(tx: &Transaction, a: &super::Alert) -> rusqlite::Result<()> {
    let event = crate::pipeline::envelope(
        RecordKind::Alert,
        &a.id,
        "/shenguan/tracker",
        &a.record_id,
        a.at,
        a.data(),
    );
    tx.prepare_cached("INSERT OR IGNORE INTO alert_outbox (id, record_id, payload, created_at) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![a.id, a.record_id, event.to_string(), ts(a.at)])?;
    Ok(())
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

/// `table.column, …` for a column list.
fn prefixed(columns: &str, table: &str) -> String {
    columns
        .split(", ")
        .map(|c| format!("{table}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The daily digest's counts per department (?1 start of day, ?2 start of month, ?3 now).
const DIGEST_SQL: &str = "
SELECT department,
  SUM(CASE WHEN state IN ('pushed', 'delivered') THEN 1 ELSE 0 END),
  SUM(CASE WHEN claimed_at >= ?1 THEN 1 ELSE 0 END),
  SUM(CASE WHEN state IN ('pushed', 'delivered') AND pushed_at >= ?2 THEN 1 ELSE 0 END),
  SUM(CASE WHEN (state IN ('pushed', 'delivered') AND claim_due_at < ?3)
            OR (state IN ('claimed', 'feedback') AND feedback_due_at < ?3) THEN 1 ELSE 0 END),
  SUM(CASE WHEN feedback_rule = 'verify_commitment' AND state IN ('pushed', 'delivered', 'claimed', 'feedback') THEN 1 ELSE 0 END),
  SUM(CASE WHEN claim_rule = 'reply_inquiry' AND state IN ('pushed', 'delivered', 'claimed', 'feedback') THEN 1 ELSE 0 END)
FROM ledger_entries
WHERE state IN ('pushed', 'delivered', 'claimed', 'feedback') OR claimed_at >= ?1
GROUP BY department ORDER BY department";

/// Columns added after the first release, added to ledgers created before them.
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info('ledger_entries')")?;
    let columns: Vec<String> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for column in ["outcome", "via"] {
        if !columns.iter().any(|c| c == column) {
            conn.execute_batch(&format!(
                "ALTER TABLE ledger_entries ADD COLUMN {column} TEXT"
            ))?;
        }
    }
    // The tracker's covering indexes replace the narrower ones of earlier versions.
    for name in SUPERSEDED_INDEXES {
        conn.execute_batch(&format!("DROP INDEX IF EXISTS {name}"))?;
    }
    for (name, key, include, predicate) in DUE_INDEXES {
        conn.execute_batch(&format!(
            "CREATE INDEX IF NOT EXISTS {name} ON ledger_entries ({key}, {include}) WHERE {predicate}"
        ))?;
    }
    Ok(())
}

impl SqliteLedger {
    pub fn open(path: &Path) -> Result<SqliteLedger, LedgerError> {
        let err = |e: &dyn std::fmt::Display| LedgerError {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        let conn = crate::db::sqlite_connect(path).map_err(|e| err(&e))?;
        // The ledger is a projection of the bus: its read positions commit in the same
        // transaction as what they applied. A commit that power loss takes back takes its
        // positions with it, and the projector applies those messages again; so a commit does
        // not wait for the disk (an application crash loses nothing in WAL mode either way).
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| err(&e))?;
        conn.execute_batch(SCHEMA).map_err(|e| err(&e))?;
        migrate(&conn).map_err(|e| err(&e))?;
        // Refreshes the planner's statistics where they are stale (bounded work), so the
        // tracker's scan reads its covering index once the ledger has grown.
        conn.execute_batch("PRAGMA optimize=0x10002")
            .map_err(|e| err(&e))?;
        let reader = crate::db::sqlite_connect(path).map_err(|e| err(&e))?;
        reader
            .pragma_update(None, "query_only", true)
            .map_err(|e| err(&e))?;
        Ok(SqliteLedger {
            path: path.to_path_buf(),
            conn: Arc::new(Mutex::new(conn)),
            reader: Arc::new(Mutex::new(reader)),
            _checkpointer: crate::db::Checkpointer::start(path).map_err(|e| err(&e))?,
        })
    }

    /// Runs a query on the read-only connection.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, LedgerError> {
        Self::on(self.reader.clone(), &self.path, f).await
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, LedgerError> {
        Self::on(self.conn.clone(), &self.path, f).await
    }

    async fn on<T: Send + 'static>(
        conn: Arc<Mutex<Connection>>,
        path: &Path,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, LedgerError> {
        let path = path.display().to_string();
        tokio::task::spawn_blocking(move || f(&mut conn.lock().expect("ledger connection")))
            .await
            .map_err(|e| LedgerError {
                path: path.clone(),
                message: e.to_string(),
            })?
            .map_err(|e| LedgerError {
                path,
                message: e.to_string(),
            })
    }
}

#[async_trait]
impl LedgerStore for SqliteLedger {
    fn describe(&self) -> String {
        format!("sqlite ({})", self.path.display())
    }

    /// The consumer positions stored with the ledger.
    async fn positions(&self) -> Result<Positions, LedgerError> {
        self.with(|conn| {
            let mut stmt =
                conn.prepare("SELECT topic, partition, next_offset FROM ledger_positions")?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    (r.get::<_, String>(0)?, r.get::<_, i32>(1)?),
                    r.get::<_, i64>(2)?,
                ))
            })?;
            rows.collect()
        })
        .await
    }

    /// Applies bus messages in order in one transaction (one commit, one fsync for all).
    async fn apply_batch(
        &self,
        batch: Batch,
        ctx: Arc<super::projector::Shared>,
    ) -> Result<Vec<Changes>, LedgerError> {
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let context = ctx.context();
            let mut all = Vec::with_capacity(batch.len());
            for (delivery, kind) in batch.iter() {
                all.push(apply_one(&tx, delivery, *kind, &context)?);
            }
            tx.commit()?;
            Ok(all)
        })
        .await
    }

    /// A record with its entries and history.
    async fn record(&self, record_id: &str) -> Result<Option<RecordView>, LedgerError> {
        let id = record_id.to_string();
        self.read(move |conn| {
            let tx = conn.transaction()?;
            let Some(record) = tx
                .prepare_cached(&format!("SELECT {RECORD_COLUMNS} FROM ledger_records WHERE record_id = ?1"))?
                .query_row([&id], record_from)
                .optional()?
            else {
                return Ok(None);
            };
            let entries = tx
                .prepare_cached(&format!("SELECT {ENTRY_COLUMNS} FROM ledger_entries WHERE record_id = ?1 ORDER BY department"))?
                .query_map([&id], entry_from)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let history = tx
                .prepare_cached("SELECT record_id, department, action, actor, channel, at, event_id, detail FROM ledger_history WHERE record_id = ?1 ORDER BY seq")?
                .query_map([&id], history_from)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Some((record, entries, history)))
        })
        .await
    }

    /// A department's entries with their records, newest first, filtered by status
    /// (`unclaimed`, `claimed`, `overdue` at `now`, or all).
    async fn inbox(
        &self,
        department: &str,
        status: Option<&str>,
        now: DateTime<FixedOffset>,
        limit: usize,
    ) -> Result<Vec<(Entry, RecordRow)>, LedgerError> {
        let department = department.to_string();
        let filter = match status {
            Some("unclaimed") => "AND e.state IN ('pushed', 'delivered')",
            Some("claimed") => "AND e.state IN ('claimed', 'feedback', 'closed')",
            Some("overdue") => "AND e.state IN ('pushed', 'delivered') AND e.claim_due_at < ?2",
            _ => "",
        };
        let uses_now = status == Some("overdue");
        let now = ts(now);
        let cols: String = ENTRY_COLUMNS
            .split(", ")
            .map(|c| format!("e.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let rcols: String = RECORD_COLUMNS
            .split(", ")
            .map(|c| format!("r.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT {cols}, {rcols} FROM ledger_entries e JOIN ledger_records r ON r.record_id = e.record_id
             WHERE e.department = ?1 {filter} ORDER BY e.pushed_at DESC LIMIT {limit}"
        );
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let map = |r: &Row| -> rusqlite::Result<(Entry, RecordRow)> {
                Ok((entry_from(r)?, record_at(r, ENTRY_WIDTH)?))
            };
            let rows = if uses_now {
                stmt.query_map(params![department, now], map)?
            } else {
                stmt.query_map(params![department], map)?
            };
            rows.collect()
        })
        .await
    }

    async fn inbox_page(
        &self,
        department: &str,
        query: &InboxQuery,
        now: DateTime<FixedOffset>,
    ) -> Result<InboxPage, LedgerError> {
        let mut params: Vec<String> = vec![department.to_string()];
        let mut filter = String::new();
        match query.status {
            Some(InboxStatus::Unclaimed) => filter += " AND e.state IN ('pushed', 'delivered')",
            Some(InboxStatus::Claimed) => {
                filter += " AND e.state IN ('claimed', 'feedback', 'closed')"
            }
            Some(InboxStatus::Returned) => filter += " AND e.state = 'returned'",
            Some(InboxStatus::Overdue) => {
                params.push(ts(now));
                filter += &format!(
                    " AND e.state IN ('pushed', 'delivered') AND e.claim_due_at < ?{}",
                    params.len()
                );
            }
            None => {}
        }
        if let Some(term) = query.search.as_deref().filter(|t| !t.trim().is_empty()) {
            params.push(like_pattern(term.trim()));
            let n = params.len();
            filter += &format!(
                " AND (e.record_id LIKE ?{n} ESCAPE '\\' OR json_extract(r.data, '$.case_no') LIKE ?{n} ESCAPE '\\'
                   OR json_extract(r.data, '$.item.name') LIKE ?{n} ESCAPE '\\'
                   OR json_extract(r.data, '$.counterpart.name') LIKE ?{n} ESCAPE '\\'
                   OR json_extract(r.data, '$.title') LIKE ?{n} ESCAPE '\\')"
            );
        }
        let count_sql = format!(
            "SELECT COUNT(*) FROM ledger_entries e JOIN ledger_records r ON r.record_id = e.record_id WHERE e.department = ?1{filter}"
        );
        let (key, dir, cmp) = match query.order {
            InboxOrder::Newest => ("e.pushed_at".to_string(), "DESC", "<"),
            InboxOrder::Urgency => (
                "COALESCE(CASE WHEN e.state IN ('pushed', 'delivered') THEN e.claim_due_at WHEN e.state IN ('claimed', 'feedback') THEN e.feedback_due_at END, '9999')".to_string(),
                "ASC",
                ">",
            ),
        };
        let mut page_filter = filter.clone();
        let mut page_params = params.clone();
        if let Some(cursor) = &query.cursor {
            let (k, id) = decode_cursor(cursor).map_err(|message| LedgerError {
                path: self.path.display().to_string(),
                message,
            })?;
            page_params.push(k);
            page_params.push(id);
            let (a, b) = (page_params.len() - 1, page_params.len());
            page_filter +=
                &format!(" AND ({key} {cmp} ?{a} OR ({key} = ?{a} AND e.record_id {cmp} ?{b}))");
        }
        let limit = query.limit.max(1);
        let sql = format!(
            "SELECT {}, {}, {key} FROM ledger_entries e JOIN ledger_records r ON r.record_id = e.record_id
             WHERE e.department = ?1{page_filter} ORDER BY {key} {dir}, e.record_id {dir} LIMIT {}",
            prefixed(ENTRY_COLUMNS, "e"),
            prefixed(RECORD_COLUMNS, "r"),
            limit + 1
        );
        self.read(move |conn| {
            let total: i64 = conn
                .prepare_cached(&count_sql)?
                .query_row(rusqlite::params_from_iter(params.iter()), |r| r.get(0))?;
            let mut stmt = conn.prepare_cached(&sql)?;
            let mut rows = Vec::new();
            let mut keys = Vec::new();
            let mut q = stmt.query(rusqlite::params_from_iter(page_params.iter()))?;
            while let Some(r) = q.next()? {
                rows.push((entry_from(r)?, record_at(r, ENTRY_WIDTH)?));
                keys.push(r.get::<_, String>(ENTRY_WIDTH + 13)?);
            }
            let next = if rows.len() > limit {
                rows.truncate(limit);
                let last = &rows[limit - 1].0;
                Some(encode_cursor(&keys[limit - 1], &last.record_id))
            } else {
                None
            };
            Ok(InboxPage {
                rows,
                total: total as u64,
                next,
            })
        })
        .await
    }

    /// Records waiting in the unrouted queue.
    async fn unrouted(&self) -> Result<Vec<RecordRow>, LedgerError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {RECORD_COLUMNS} FROM ledger_records WHERE unrouted IS NOT NULL ORDER BY published_at"
            ))?;
            let rows = stmt.query_map([], record_from)?;
            rows.collect()
        })
        .await
    }

    async fn entries_due_before(
        &self,
        before: DateTime<FixedOffset>,
    ) -> Result<Vec<DueEntry>, LedgerError> {
        let before = ts(before);
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(DUE_SCAN)?;
            let rows = stmt.query_map([before], |r| {
                let kind: String = r.get(2)?;
                Ok(DueEntry {
                    record_id: r.get(0)?,
                    department: r.get(1)?,
                    kind: kind.parse().unwrap_or(RecordKind::Approval),
                    policy: r.get(3)?,
                    rule: r.get(4)?,
                    due_at: parse_ts(r.get(5)?).unwrap_or_default(),
                    pushed_at: parse_ts(r.get(6)?).unwrap_or_default(),
                    calendar_version: r.get(7)?,
                    alert_level: level_of(r.get(8)?),
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn obligations(
        &self,
        rule: &str,
        department: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(Entry, RecordRow)>, LedgerError> {
        let (rule, department) = (rule.to_string(), department.map(str::to_string));
        let sql = format!(
            "SELECT {}, {} FROM ledger_entries e JOIN ledger_records r ON r.record_id = e.record_id
             WHERE (e.claim_rule = ?1 OR e.feedback_rule = ?1) AND e.state IN ('pushed', 'delivered', 'claimed', 'feedback')
               AND (?2 IS NULL OR e.department = ?2)
             ORDER BY COALESCE(CASE WHEN e.feedback_rule = ?1 THEN e.feedback_due_at END, e.claim_due_at), e.record_id
             LIMIT {limit}",
            prefixed(ENTRY_COLUMNS, "e"),
            prefixed(RECORD_COLUMNS, "r"),
        );
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(params![rule, department], |r| {
                Ok((entry_from(r)?, record_at(r, ENTRY_WIDTH)?))
            })?;
            rows.collect()
        })
        .await
    }

    async fn digest_counts(
        &self,
        day_start: DateTime<FixedOffset>,
        month_start: DateTime<FixedOffset>,
        now: DateTime<FixedOffset>,
    ) -> Result<Vec<DigestRow>, LedgerError> {
        let (day, month, now) = (ts(day_start), ts(month_start), ts(now));
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(DIGEST_SQL)?;
            let rows = stmt.query_map(params![day, month, now], |r| {
                Ok(DigestRow {
                    department: r.get(0)?,
                    to_claim: r.get(1)?,
                    claimed_today: r.get(2)?,
                    unclaimed_this_month: r.get(3)?,
                    overdue: r.get(4)?,
                    open_verifications: r.get(5)?,
                    open_inquiries: r.get(6)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn purge_finished(&self, before: DateTime<FixedOffset>) -> Result<u64, LedgerError> {
        let before = ts(before);
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.execute("CREATE TEMP TABLE IF NOT EXISTS purge_ids (record_id TEXT PRIMARY KEY)", [])?;
            tx.execute("DELETE FROM purge_ids", [])?;
            let n = tx.execute(
                "INSERT INTO purge_ids SELECT r.record_id FROM ledger_records r  WHERE r.unrouted IS NULL    AND EXISTS (SELECT 1 FROM ledger_entries e WHERE e.record_id = r.record_id)    AND NOT EXISTS (SELECT 1 FROM ledger_entries e WHERE e.record_id = r.record_id          AND (e.state IN ('pushed', 'delivered')               OR (e.state IN ('claimed', 'feedback') AND e.feedback_due_at IS NOT NULL)))    AND NOT EXISTS (SELECT 1 FROM ledger_history h WHERE h.record_id = r.record_id AND h.at >= ?1)",
                [&before],
            )?;
            for table in ["ledger_history", "ledger_entries", "deliveries", "ledger_records"] {
                tx.execute(
                    &format!("DELETE FROM {table} WHERE record_id IN (SELECT record_id FROM purge_ids)"),
                    [],
                )?;
            }
            tx.commit()?;
            Ok(n as u64)
        })
        .await
    }

    async fn report_month(
        &self,
        from: DateTime<FixedOffset>,
        to: DateTime<FixedOffset>,
        mut report: super::report::Monthly,
    ) -> Result<super::report::Monthly, LedgerError> {
        let (from, to) = (ts(from), ts(to));
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {ENTRY_COLUMNS} FROM ledger_entries WHERE pushed_at >= ?1 AND pushed_at < ?2"
            ))?;
            let mut rows = stmt.query(params![from, to])?;
            while let Some(row) = rows.next()? {
                report.add(&entry_from(row)?);
            }
            Ok(report)
        })
        .await
    }

    /// Every entry pushed in `[from, to)` (for the monthly report).
    async fn entries_pushed_between(
        &self,
        from: DateTime<FixedOffset>,
        to: DateTime<FixedOffset>,
    ) -> Result<Vec<Entry>, LedgerError> {
        let (from, to) = (ts(from), ts(to));
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {ENTRY_COLUMNS} FROM ledger_entries WHERE pushed_at >= ?1 AND pushed_at < ?2 ORDER BY department, kind"
            ))?;
            let rows = stmt.query_map(params![from, to], entry_from)?;
            rows.collect()
        })
        .await
    }

    /// Raises an entry's alert level if it is below `level`, queuing the alert in the same
    /// transaction. Returns whether this call raised it: with several gateways on one database,
    /// exactly one wins.
    async fn raise_alert(
        &self,
        alert: super::Alert,
        level: AlertLevel,
    ) -> Result<bool, LedgerError> {
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let changed = tx.execute(
                "UPDATE ledger_entries SET alert_level = ?3
                 WHERE record_id = ?1 AND department = ?2 AND alert_level < ?3 AND state IN ('pushed', 'delivered', 'claimed', 'feedback')",
                params![alert.record_id, alert.department, rank(level)],
            )?;
            if changed == 1 {
                queue_alert(&tx, &alert)?;
            }
            tx.commit()?;
            Ok(changed == 1)
        })
        .await
    }

    /// Alerts waiting to be published, oldest first.
    async fn outbox(&self, limit: usize) -> Result<Vec<OutboxRow>, LedgerError> {
        self.with(move |conn| {
            let mut stmt = conn.prepare_cached(&format!("SELECT id, record_id, payload FROM alert_outbox ORDER BY created_at, id LIMIT {limit}"))?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, String>(2)?.into_bytes())))?;
            rows.collect()
        })
        .await
    }

    async fn claim_outbox(
        &self,
        owner: &str,
        lease: std::time::Duration,
        limit: usize,
    ) -> Result<Vec<OutboxRow>, LedgerError> {
        let owner = owner.to_string();
        let now = chrono::Utc::now();
        let until = ts(
            (now + chrono::Duration::from_std(lease).unwrap_or_default())
                .with_timezone(&shanghai()),
        );
        let now = ts(now.with_timezone(&shanghai()));
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let rows: Vec<OutboxRow> = tx
                .prepare_cached(&format!(
                    "SELECT id, record_id, payload FROM alert_outbox WHERE claimed_until IS NULL OR claimed_until < ?1
                     ORDER BY created_at, id LIMIT {limit}"
                ))?
                .query_map([&now], |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, String>(2)?.into_bytes())))?
                .collect::<rusqlite::Result<_>>()?;
            for (id, _, _) in &rows {
                tx.execute("UPDATE alert_outbox SET claimed_by = ?2, claimed_until = ?3 WHERE id = ?1", params![id, owner, until])?;
            }
            tx.commit()?;
            Ok(rows)
        })
        .await
    }

    /// Removes published alerts from the outbox.
    async fn outbox_done(&self, ids: Vec<String>) -> Result<(), LedgerError> {
        self.with(move |conn| {
            let tx = conn.transaction()?;
            for id in &ids {
                tx.execute("DELETE FROM alert_outbox WHERE id = ?1", [id])?;
            }
            tx.commit()
        })
        .await
    }

    /// The whole ledger as comparable text (records, entries, history), for the rebuild check.
    async fn snapshot(&self) -> Result<Vec<String>, LedgerError> {
        self.read(|conn| {
            let mut out = Vec::new();
            for sql in [
                format!("SELECT {RECORD_COLUMNS} FROM ledger_records ORDER BY record_id"),
                format!("SELECT {ENTRY_COLUMNS} FROM ledger_entries ORDER BY record_id, department"),
                "SELECT record_id, department, action, actor, channel, at, event_id, detail FROM ledger_history ORDER BY record_id, seq".to_string(),
            ] {
                let mut stmt = conn.prepare(&sql)?;
                let n = stmt.column_count();
                let rows = stmt.query_map([], |r| {
                    let mut cells = Vec::with_capacity(n);
                    for i in 0..n {
                        let v: rusqlite::types::Value = r.get(i)?;
                        cells.push(format!("{v:?}"));
                    }
                    Ok(cells.join("|"))
                })?;
                for row in rows {
                    out.push(row?);
                }
            }
            Ok(out)
        })
        .await
    }

    /// Deletes the projection (records, entries, history, positions) so it can be rebuilt.
    async fn clear(&self) -> Result<(), LedgerError> {
        self.with(|conn| {
            conn.execute_batch(
                "BEGIN IMMEDIATE; DELETE FROM ledger_records; DELETE FROM ledger_entries; DELETE FROM ledger_history;
                 DELETE FROM ledger_positions; COMMIT;",
            )
        })
        .await
    }

    /// Counts of open entries for the gauges: (department, kind) → (unclaimed, overdue, oldest push).
    async fn gauges(&self, now: DateTime<FixedOffset>) -> Result<Vec<GaugeRow>, LedgerError> {
        let now = ts(now);
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT department, kind, COUNT(*), SUM(CASE WHEN claim_due_at < ?1 THEN 1 ELSE 0 END), MIN(pushed_at)
                 FROM ledger_entries WHERE state IN ('pushed', 'delivered') GROUP BY department, kind",
            )?;
            let rows = stmt.query_map([now], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, parse_ts(r.get(4)?))))?;
            rows.collect()
        })
        .await
    }

    /// How many records wait unrouted, by kind.
    async fn unrouted_counts(&self) -> Result<Vec<(String, i64)>, LedgerError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached("SELECT kind, COUNT(*) FROM ledger_records WHERE unrouted IS NOT NULL GROUP BY kind")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
        .await
    }

    /// Entries of webhook departments due for a delivery attempt at `now`, with the attempts so far.
    async fn due_deliveries(
        &self,
        departments: Vec<String>,
        now: DateTime<FixedOffset>,
        limit: usize,
    ) -> Result<Vec<(Entry, RecordRow, u32)>, LedgerError> {
        let now = ts(now);
        self.with(move |conn| {
            let mut out = Vec::new();
            let sql = format!(
                "SELECT e.record_id, COALESCE(d.attempts, 0) FROM ledger_entries e
                 LEFT JOIN deliveries d ON d.record_id = e.record_id AND d.department = e.department
                 WHERE e.department = ?1 AND e.state = 'pushed'
                   AND (d.status IS NULL OR (d.status = 'retry' AND d.next_attempt_at <= ?2))
                 ORDER BY e.pushed_at LIMIT {limit}"
            );
            for dep in &departments {
                let ids: Vec<(String, u32)> = conn
                    .prepare_cached(&sql)?
                    .query_map(params![dep, now], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<_>>()?;
                for (id, attempts) in ids {
                    let tx = conn.transaction()?;
                    let loaded = load(&tx, &id, "", None)?;
                    tx.commit()?;
                    if let (Some(record), Some(entry)) = (
                        loaded.record,
                        loaded.entries.into_iter().find(|e| &e.department == dep),
                    ) {
                        out.push((entry, record, attempts));
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    /// Records a failed attempt and when to try again.
    async fn delivery_retry(
        &self,
        record_id: String,
        department: String,
        attempts: u32,
        next: DateTime<FixedOffset>,
        error: String,
    ) -> Result<(), LedgerError> {
        let next = ts(next);
        self.with(move |conn| {
            conn.execute(
                "INSERT INTO deliveries (record_id, department, attempts, status, next_attempt_at, last_error) VALUES (?1, ?2, ?3, 'retry', ?4, ?5)
                 ON CONFLICT (record_id, department) DO UPDATE SET attempts = excluded.attempts, status = 'retry',
                   next_attempt_at = excluded.next_attempt_at, last_error = excluded.last_error",
                params![record_id, department, attempts, next, crate::mask::mask(&error)],
            )
            .map(|_| ())
        })
        .await
    }

    /// Records the end of deliveries for an entry: `ok` or `dead` (sent to the DLQ).
    async fn delivery_reset(
        &self,
        record_id: String,
        now: DateTime<FixedOffset>,
    ) -> Result<u64, LedgerError> {
        let now = ts(now);
        self.with(move |conn| {
            conn.execute(
                "UPDATE deliveries SET status = 'retry', attempts = 0, next_attempt_at = ?2, last_error = NULL
                 WHERE record_id = ?1 AND status = 'dead'",
                params![record_id, now],
            )
            .map(|n| n as u64)
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
        self.with(move |conn| {
            conn.execute(
                "INSERT INTO deliveries (record_id, department, attempts, status) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (record_id, department) DO UPDATE SET attempts = excluded.attempts, status = excluded.status, next_attempt_at = NULL",
                params![record_id, department, attempts, status],
            )
            .map(|_| ())
        })
        .await
    }
}

/// Benchmark data: `n` open entries straight into the table (1 in 100 overdue, the others due
/// in one to three months, pushed over the last 30 days), in one transaction.
pub fn bulk_load(path: &Path, n: usize, now: DateTime<FixedOffset>) -> rusqlite::Result<()> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "synchronous", "OFF")?;
    let base = now.timestamp();
    conn.execute_batch("BEGIN")?;
    conn.execute(
        "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < ?1)
         INSERT INTO ledger_entries (record_id, department, kind, state, pushed_at, policy, claim_rule, claim_due_at,
                                     calendar_version, alert_level)
         SELECT 'bench-' || i, 'dep-' || (i % 5), 'approval', 'pushed',
                strftime('%Y-%m-%dT%H:%M:%S.000+08:00', ?2 - (i % 720) * 3600 + 8 * 3600, 'unixepoch'),
                'yuanqu-2022', 'claim_approval',
                strftime('%Y-%m-%dT%H:%M:%S.000+08:00',
                         CASE WHEN i % 100 = 0 THEN ?2 - 86400 ELSE ?2 + 2592000 + (i % 5000) * 1000 END + 8 * 3600, 'unixepoch'),
                'bench', 0
         FROM s",
        params![n as i64, base],
    )?;
    conn.execute_batch("COMMIT; ANALYZE;")
}
