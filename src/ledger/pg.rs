//! The ledger and the gateway state in PostgreSQL, for several gateway instances sharing one
//! database (also PostgreSQL-compatible databases such as 人大金仓 KingbaseES).
//!
//! Every instance consumes every ledger topic; the position row of a topic partition is locked
//! (`SELECT … FOR UPDATE`) in the transaction that applies a message, so exactly one instance
//! applies each message and the others skip it. Alerts are decided by a conditional `UPDATE` of
//! the entry's alert level — one instance wins — and queued in an outbox that instances claim
//! with a lease (`FOR UPDATE SKIP LOCKED`) before publishing.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, FixedOffset, Utc};
use deadpool_postgres::Pool;
use serde_json::Value;
use tokio_postgres::Row;

use super::projector::Shared;
use super::store::{
    decode_cursor, encode_cursor, Batch, DigestRow, GaugeRow, InboxOrder, InboxPage, InboxQuery,
    InboxStatus, LedgerError, LedgerStore, OutboxRow, RecordView,
};
use super::{
    Alert, AlertLevel, Changes, DueEntry, Entry, EntryState, HistoryRow, Loaded, RecordRow,
    DUE_INDEXES, DUE_SCAN, SUPERSEDED_INDEXES,
};
use crate::adapter::convert::shanghai;
use crate::bus::Positions;
use crate::db::{chain, pg_pool, redact};
use crate::schema::RecordKind;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS ledger_records (
    record_id TEXT PRIMARY KEY, kind TEXT NOT NULL, event_id TEXT NOT NULL, published_at TIMESTAMPTZ NOT NULL,
    decided_at TIMESTAMPTZ, adapter TEXT NOT NULL, push_rule TEXT, push_due_at TIMESTAMPTZ, push_late BOOLEAN NOT NULL,
    unrouted TEXT, data JSONB NOT NULL, linked_record_id TEXT, source_department TEXT,
    link_license_no TEXT, link_document_no TEXT, link_uscc TEXT);
CREATE INDEX IF NOT EXISTS records_by_license_no ON ledger_records (link_license_no) WHERE link_license_no IS NOT NULL;
CREATE INDEX IF NOT EXISTS records_by_document_no ON ledger_records (link_document_no) WHERE link_document_no IS NOT NULL;
CREATE INDEX IF NOT EXISTS records_by_uscc ON ledger_records (link_uscc) WHERE link_uscc IS NOT NULL;
CREATE INDEX IF NOT EXISTS records_unrouted ON ledger_records (unrouted) WHERE unrouted IS NOT NULL;
CREATE TABLE IF NOT EXISTS ledger_entries (
    record_id TEXT NOT NULL, department TEXT NOT NULL, kind TEXT NOT NULL, state TEXT NOT NULL,
    pushed_at TIMESTAMPTZ NOT NULL, delivered_at TIMESTAMPTZ, claimed_at TIMESTAMPTZ, returned_at TIMESTAMPTZ,
    feedback_at TIMESTAMPTZ, closed_at TIMESTAMPTZ, policy TEXT NOT NULL, claim_rule TEXT, claim_due_at TIMESTAMPTZ,
    feedback_rule TEXT, feedback_due_at TIMESTAMPTZ, calendar_version TEXT NOT NULL, deadline_problem TEXT,
    alert_level INTEGER NOT NULL, note TEXT, PRIMARY KEY (record_id, department));
ALTER TABLE ledger_entries ADD COLUMN IF NOT EXISTS outcome TEXT;
ALTER TABLE ledger_entries ADD COLUMN IF NOT EXISTS via TEXT;
CREATE INDEX IF NOT EXISTS entries_by_department ON ledger_entries (department, state);
CREATE INDEX IF NOT EXISTS entries_open ON ledger_entries (state, claim_due_at);
CREATE INDEX IF NOT EXISTS entries_pushed ON ledger_entries (pushed_at);
CREATE TABLE IF NOT EXISTS ledger_history (
    seq BIGSERIAL PRIMARY KEY, record_id TEXT NOT NULL, department TEXT, action TEXT NOT NULL, actor TEXT,
    channel TEXT, at TIMESTAMPTZ NOT NULL, event_id TEXT NOT NULL, detail JSONB NOT NULL);
CREATE INDEX IF NOT EXISTS history_by_record ON ledger_history (record_id);
CREATE INDEX IF NOT EXISTS history_by_event ON ledger_history (event_id);
CREATE TABLE IF NOT EXISTS ledger_positions (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, next_offset BIGINT NOT NULL, PRIMARY KEY (topic, partition));
CREATE TABLE IF NOT EXISTS deliveries (
    record_id TEXT NOT NULL, department TEXT NOT NULL, attempts INTEGER NOT NULL, status TEXT NOT NULL,
    next_attempt_at TIMESTAMPTZ, last_error TEXT, PRIMARY KEY (record_id, department));
CREATE TABLE IF NOT EXISTS alert_outbox (
    id TEXT PRIMARY KEY, record_id TEXT NOT NULL, payload TEXT NOT NULL, created_at TIMESTAMPTZ NOT NULL,
    claimed_by TEXT, claimed_until TIMESTAMPTZ);
";

/// `table.column, …` for a column list.
fn prefix(columns: &str, table: &str) -> String {
    columns
        .split(", ")
        .map(|c| format!("{table}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The tracker's covering indexes, replacing the narrower ones of earlier versions (building
/// them over an existing ledger takes about 25 s per 10 million open entries, once).
fn due_indexes() -> String {
    let mut sql: String = SUPERSEDED_INDEXES
        .iter()
        .map(|name| format!("DROP INDEX IF EXISTS {name};\n"))
        .collect();
    for (name, key, include, predicate) in DUE_INDEXES {
        sql += &format!(
            "CREATE INDEX IF NOT EXISTS {name} ON ledger_entries ({key}) INCLUDE ({include}) WHERE {predicate};\n"
        );
    }
    sql
}

fn local(t: DateTime<Utc>) -> DateTime<FixedOffset> {
    t.with_timezone(&shanghai())
}

fn opt_local(t: Option<DateTime<Utc>>) -> Option<DateTime<FixedOffset>> {
    t.map(local)
}

fn level_of(rank: i32) -> AlertLevel {
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
const RECORD_COLUMNS: &str = "record_id, kind, event_id, published_at, decided_at, adapter, push_rule, push_due_at, push_late, unrouted, data, linked_record_id, source_department";

fn entry_from(r: &Row, o: usize) -> Entry {
    let kind: String = r.get(o + 2);
    let state: String = r.get(o + 3);
    Entry {
        record_id: r.get(o),
        department: r.get(o + 1),
        kind: kind.parse().unwrap_or(RecordKind::Approval),
        state: EntryState::parse(&state).unwrap_or(EntryState::Pushed),
        pushed_at: local(r.get(o + 4)),
        delivered_at: opt_local(r.get(o + 5)),
        claimed_at: opt_local(r.get(o + 6)),
        returned_at: opt_local(r.get(o + 7)),
        feedback_at: opt_local(r.get(o + 8)),
        closed_at: opt_local(r.get(o + 9)),
        policy: r.get(o + 10),
        claim_rule: r.get(o + 11),
        claim_due_at: opt_local(r.get(o + 12)),
        feedback_rule: r.get(o + 13),
        feedback_due_at: opt_local(r.get(o + 14)),
        calendar_version: r.get(o + 15),
        deadline_problem: r.get(o + 16),
        alert_level: level_of(r.get(o + 17)),
        note: r.get(o + 18),
        outcome: r.get(o + 19),
        via: r.get(o + 20),
    }
}

fn record_from(r: &Row, o: usize) -> RecordRow {
    let kind: String = r.get(o + 1);
    RecordRow {
        record_id: r.get(o),
        kind: kind.parse().unwrap_or(RecordKind::Approval),
        event_id: r.get(o + 2),
        published_at: local(r.get(o + 3)),
        decided_at: opt_local(r.get(o + 4)),
        adapter: r.get(o + 5),
        push_rule: r.get(o + 6),
        push_due_at: opt_local(r.get(o + 7)),
        push_late: r.get(o + 8),
        unrouted: r.get(o + 9),
        data: r.get::<_, Value>(o + 10),
        linked_record_id: r.get(o + 11),
        source_department: r.get(o + 12),
    }
}

fn history_from(r: &Row) -> HistoryRow {
    HistoryRow {
        record_id: r.get(0),
        department: r.get(1),
        action: r.get(2),
        actor: r.get(3),
        channel: r.get(4),
        at: local(r.get(5)),
        event_id: r.get(6),
        detail: r.get::<_, Value>(7),
    }
}

pub struct PgLedger {
    url: String,
    pool: Pool,
}

impl PgLedger {
    /// Benchmark data: `n` open entries generated in the database (1 in 100 overdue, the others
    /// due in one to three months, pushed over the last 30 days), replacing earlier ones.
    pub async fn bulk_load(&self, n: usize, now: DateTime<FixedOffset>) -> Result<(), LedgerError> {
        let c = self.client().await?;
        c.batch_execute("DELETE FROM ledger_entries WHERE record_id LIKE 'bench-%'")
            .await
            .map_err(|e| self.err(e))?;
        c.execute(
            "INSERT INTO ledger_entries (record_id, department, kind, state, pushed_at, policy, claim_rule, claim_due_at,
                                         calendar_version, alert_level)
             SELECT 'bench-' || i, 'dep-' || (i % 5), 'approval', 'pushed', $2::timestamptz - (i % 720) * interval '1 hour',
                    'yuanqu-2022', 'claim_approval',
                    CASE WHEN i % 100 = 0 THEN $2::timestamptz - interval '1 day'
                         ELSE $2::timestamptz + interval '30 days' + (i % 5000) * interval '1000 seconds' END,
                    'bench', 0
             FROM generate_series(1, $1::bigint) AS i",
            &[&(n as i64), &now],
        )
        .await
        .map_err(|e| self.err(e))?;
        // As autovacuum leaves a table between bursts: dead rows gone, hint bits and the
        // visibility map set, so index-only scans need no visit to the table.
        c.batch_execute("VACUUM ANALYZE ledger_entries")
            .await
            .map_err(|e| self.err(e))
    }

    pub async fn connect(url: &str) -> Result<PgLedger, LedgerError> {
        let pool = pg_pool(url, &format!("{SCHEMA}{}", due_indexes()))
            .await
            .map_err(|message| LedgerError {
                path: redact(url),
                message,
            })?;
        Ok(PgLedger {
            url: redact(url),
            pool,
        })
    }

    fn err<E: std::error::Error>(&self, e: E) -> LedgerError {
        LedgerError {
            path: self.url.clone(),
            message: chain(&e),
        }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, LedgerError> {
        self.pool.get().await.map_err(|e| self.err(e))
    }
}

type LinkKeys = (Option<String>, Option<String>, Option<String>);

/// The approval record a supervision record's affected licence names: by 许可编号, else by
/// 许可决定文书号, else by the holder's 统一社会信用代码 when exactly one approval has it.
async fn find_approval(
    tx: &deadpool_postgres::Transaction<'_>,
    keys: &LinkKeys,
) -> Result<Option<String>, tokio_postgres::Error> {
    for (column, key) in [("link_license_no", &keys.0), ("link_document_no", &keys.1)] {
        if let Some(k) = key {
            let sql = format!("SELECT record_id FROM ledger_records WHERE {column} = $1 ORDER BY published_at DESC LIMIT 1");
            if let Some(row) = tx.query_opt(&sql, &[k]).await? {
                return Ok(Some(row.get(0)));
            }
        }
    }
    if let Some(uscc) = &keys.2 {
        let rows = tx
            .query(
                "SELECT record_id FROM ledger_records WHERE link_uscc = $1 LIMIT 2",
                &[uscc],
            )
            .await?;
        if rows.len() == 1 {
            return Ok(Some(rows[0].get(0)));
        }
    }
    Ok(None)
}

async fn load(
    tx: &deadpool_postgres::Transaction<'_>,
    record_id: &str,
    event_id: &str,
    affected: Option<&LinkKeys>,
) -> Result<Loaded, tokio_postgres::Error> {
    let seen = tx
        .query_opt(
            "SELECT 1 FROM ledger_history WHERE event_id = $1 LIMIT 1",
            &[&event_id],
        )
        .await?
        .is_some();
    let record = tx
        .query_opt(
            &format!("SELECT {RECORD_COLUMNS} FROM ledger_records WHERE record_id = $1"),
            &[&record_id],
        )
        .await?
        .map(|r| record_from(&r, 0));
    let entries = tx
        .query(&format!("SELECT {ENTRY_COLUMNS} FROM ledger_entries WHERE record_id = $1 ORDER BY department"), &[&record_id])
        .await?
        .iter()
        .map(|r| entry_from(r, 0))
        .collect();
    let linked_approval = match affected {
        Some(keys) if record.is_none() => find_approval(tx, keys).await?,
        _ => None,
    };
    Ok(Loaded {
        record,
        entries,
        seen,
        linked_approval,
    })
}

async fn queue_alert(
    tx: &deadpool_postgres::Transaction<'_>,
    a: &Alert,
) -> Result<(), tokio_postgres::Error> {
    let event = crate::pipeline::envelope(
        RecordKind::Alert,
        &a.id,
        "/shenguan/tracker",
        &a.record_id,
        a.at,
        a.data(),
    );
    tx.execute(
        "INSERT INTO alert_outbox (id, record_id, payload, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING",
        &[&a.id, &a.record_id, &event.to_string(), &a.at],
    )
    .await?;
    Ok(())
}

async fn write(
    tx: &deadpool_postgres::Transaction<'_>,
    changes: &Changes,
) -> Result<(), tokio_postgres::Error> {
    if let Some(r) = &changes.record {
        let links = r.link_keys();
        tx.execute(
            &format!(
                "INSERT INTO ledger_records ({RECORD_COLUMNS}, link_license_no, link_document_no, link_uscc)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
                 ON CONFLICT (record_id) DO UPDATE SET event_id = excluded.event_id, unrouted = excluded.unrouted,
                   data = excluded.data, link_license_no = excluded.link_license_no,
                   link_document_no = excluded.link_document_no, link_uscc = excluded.link_uscc"
            ),
            &[
                &r.record_id,
                &r.kind.as_str(),
                &r.event_id,
                &r.published_at,
                &r.decided_at,
                &r.adapter,
                &r.push_rule,
                &r.push_due_at,
                &r.push_late,
                &r.unrouted,
                &r.data,
                &r.linked_record_id,
                &r.source_department,
                &links.0,
                &links.1,
                &links.2,
            ],
        )
        .await?;
    }
    for e in &changes.entries {
        let level = e.alert_level as i32;
        tx.execute(
            &format!(
                "INSERT INTO ledger_entries ({ENTRY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)
                 ON CONFLICT (record_id, department) DO UPDATE SET kind = excluded.kind, state = excluded.state,
                   pushed_at = excluded.pushed_at, delivered_at = excluded.delivered_at, claimed_at = excluded.claimed_at,
                   returned_at = excluded.returned_at, feedback_at = excluded.feedback_at, closed_at = excluded.closed_at,
                   policy = excluded.policy, claim_rule = excluded.claim_rule, claim_due_at = excluded.claim_due_at,
                   feedback_rule = excluded.feedback_rule, feedback_due_at = excluded.feedback_due_at,
                   calendar_version = excluded.calendar_version, deadline_problem = excluded.deadline_problem,
                   alert_level = excluded.alert_level, note = excluded.note, outcome = excluded.outcome,
                   via = excluded.via"
            ),
            &[
                &e.record_id,
                &e.department,
                &e.kind.as_str(),
                &e.state.as_str(),
                &e.pushed_at,
                &e.delivered_at,
                &e.claimed_at,
                &e.returned_at,
                &e.feedback_at,
                &e.closed_at,
                &e.policy,
                &e.claim_rule,
                &e.claim_due_at,
                &e.feedback_rule,
                &e.feedback_due_at,
                &e.calendar_version,
                &e.deadline_problem,
                &level,
                &e.note,
                &e.outcome,
                &e.via,
            ],
        )
        .await?;
    }
    for h in &changes.history {
        tx.execute(
            "INSERT INTO ledger_history (record_id, department, action, actor, channel, at, event_id, detail)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[&h.record_id, &h.department, &h.action, &h.actor, &h.channel, &h.at, &h.event_id, &h.detail],
        )
        .await?;
    }
    for a in &changes.alerts {
        queue_alert(tx, a).await?;
    }
    Ok(())
}

fn cell(r: &Row, i: usize) -> String {
    use tokio_postgres::types::Type;
    let t = r.columns()[i].type_().clone();
    match t {
        Type::TEXT | Type::VARCHAR => format!("{:?}", r.get::<_, Option<String>>(i)),
        Type::INT4 => format!("{:?}", r.get::<_, Option<i32>>(i)),
        Type::INT8 => format!("{:?}", r.get::<_, Option<i64>>(i)),
        Type::BOOL => format!("{:?}", r.get::<_, Option<bool>>(i)),
        Type::TIMESTAMPTZ => format!("{:?}", r.get::<_, Option<DateTime<Utc>>>(i)),
        Type::JSONB | Type::JSON => {
            format!("{:?}", r.get::<_, Option<Value>>(i).map(|v| v.to_string()))
        }
        other => format!("<{other}>"),
    }
}

#[async_trait]
impl LedgerStore for PgLedger {
    fn describe(&self) -> String {
        format!("postgres ({})", self.url)
    }

    async fn positions(&self) -> Result<Positions, LedgerError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT topic, partition, next_offset FROM ledger_positions",
                &[],
            )
            .await
            .map_err(|e| self.err(e))?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    (r.get::<_, String>(0), r.get::<_, i32>(1)),
                    r.get::<_, i64>(2),
                )
            })
            .collect())
    }

    /// One transaction for the whole batch. The position row of every partition in it is locked
    /// first, in (topic, partition) order, so instances applying overlapping bursts wait for
    /// each other instead of deadlocking, and the one that waited skips what the other applied.
    async fn apply_batch(
        &self,
        batch: Batch,
        shared: Arc<Shared>,
    ) -> Result<Vec<Changes>, LedgerError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(|e| self.err(e))?;
        let context = shared.context();
        let run = async {
            let mut partitions: Vec<(&str, i32)> = batch
                .iter()
                .map(|(d, _)| (d.topic.as_str(), d.partition))
                .collect();
            partitions.sort_unstable();
            partitions.dedup();
            // (topic, partition) → (stored position, position after this batch)
            let mut positions = std::collections::HashMap::new();
            for (topic, partition) in partitions {
                tx.execute(
                    "INSERT INTO ledger_positions (topic, partition, next_offset) VALUES ($1, $2, 0) ON CONFLICT DO NOTHING",
                    &[&topic, &partition],
                )
                .await?;
                let stored: i64 = tx
                    .query_one(
                        "SELECT next_offset FROM ledger_positions WHERE topic = $1 AND partition = $2 FOR UPDATE",
                        &[&topic, &partition],
                    )
                    .await?
                    .get(0);
                positions.insert((topic, partition), (stored, stored));
            }
            let mut all = Vec::with_capacity(batch.len());
            for (delivery, kind) in batch.iter() {
                let next = &mut positions
                    .get_mut(&(delivery.topic.as_str(), delivery.partition))
                    .expect("every partition of the batch is locked above")
                    .1;
                if delivery.offset < *next {
                    all.push(Changes::default());
                    continue;
                }
                let changes = match super::decode(*kind, &delivery.payload) {
                    Ok(event) => {
                        let affected = event.affected();
                        let loaded =
                            load(&tx, event.record_id(), event.event_id(), affected.as_ref())
                                .await?;
                        let changes = super::apply(&loaded, &event, &context);
                        write(&tx, &changes).await?;
                        changes
                    }
                    Err(e) => {
                        tracing::error!(topic = %delivery.topic, offset = delivery.offset, error = %e, "undecodable ledger event skipped");
                        Changes::default()
                    }
                };
                *next = delivery.offset + 1;
                all.push(changes);
            }
            for ((topic, partition), (stored, next)) in &positions {
                if next != stored {
                    tx.execute(
                        "UPDATE ledger_positions SET next_offset = $3 WHERE topic = $1 AND partition = $2",
                        &[topic, partition, next],
                    )
                    .await?;
                }
            }
            Ok::<_, tokio_postgres::Error>(all)
        };
        let all = run.await.map_err(|e| self.err(e))?;
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(all)
    }

    async fn record(&self, record_id: &str) -> Result<Option<RecordView>, LedgerError> {
        let c = self.client().await?;
        let Some(r) = c
            .query_opt(
                &format!("SELECT {RECORD_COLUMNS} FROM ledger_records WHERE record_id = $1"),
                &[&record_id],
            )
            .await
            .map_err(|e| self.err(e))?
        else {
            return Ok(None);
        };
        let entries = c
            .query(&format!("SELECT {ENTRY_COLUMNS} FROM ledger_entries WHERE record_id = $1 ORDER BY department"), &[&record_id])
            .await
            .map_err(|e| self.err(e))?
            .iter()
            .map(|r| entry_from(r, 0))
            .collect();
        let history = c
            .query(
                "SELECT record_id, department, action, actor, channel, at, event_id, detail FROM ledger_history WHERE record_id = $1 ORDER BY seq",
                &[&record_id],
            )
            .await
            .map_err(|e| self.err(e))?
            .iter()
            .map(history_from)
            .collect();
        Ok(Some((record_from(&r, 0), entries, history)))
    }

    async fn inbox(
        &self,
        department: &str,
        status: Option<&str>,
        now: DateTime<FixedOffset>,
        limit: usize,
    ) -> Result<Vec<(Entry, RecordRow)>, LedgerError> {
        let filter = match status {
            Some("unclaimed") => "AND e.state IN ('pushed', 'delivered')",
            Some("claimed") => "AND e.state IN ('claimed', 'feedback', 'closed')",
            Some("overdue") => "AND e.state IN ('pushed', 'delivered') AND e.claim_due_at < $2",
            _ => "AND $2::timestamptz IS NOT NULL",
        };
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
             WHERE e.department = $1 {filter} ORDER BY e.pushed_at DESC LIMIT {limit}"
        );
        let c = self.client().await?;
        let rows = c
            .query(&sql, &[&department, &now])
            .await
            .map_err(|e| self.err(e))?;
        Ok(rows
            .iter()
            .map(|r| (entry_from(r, 0), record_from(r, ENTRY_WIDTH)))
            .collect())
    }

    async fn inbox_page(
        &self,
        department: &str,
        query: &InboxQuery,
        now: DateTime<FixedOffset>,
    ) -> Result<InboxPage, LedgerError> {
        use tokio_postgres::types::ToSql;
        let mut params: Vec<Box<dyn ToSql + Sync + Send>> = vec![Box::new(department.to_string())];
        let mut filter = String::new();
        match query.status {
            Some(InboxStatus::Unclaimed) => filter += " AND e.state IN ('pushed', 'delivered')",
            Some(InboxStatus::Claimed) => {
                filter += " AND e.state IN ('claimed', 'feedback', 'closed')"
            }
            Some(InboxStatus::Returned) => filter += " AND e.state = 'returned'",
            Some(InboxStatus::Overdue) => {
                params.push(Box::new(now));
                filter += &format!(
                    " AND e.state IN ('pushed', 'delivered') AND e.claim_due_at < ${}",
                    params.len()
                );
            }
            None => {}
        }
        if let Some(term) = query.search.as_deref().filter(|t| !t.trim().is_empty()) {
            params.push(Box::new(super::sqlite::like_pattern(term.trim())));
            let n = params.len();
            filter += &format!(
                " AND (e.record_id ILIKE ${n} OR r.data->>'case_no' ILIKE ${n} OR r.data->'item'->>'name' ILIKE ${n}
                   OR r.data->'counterpart'->>'name' ILIKE ${n} OR r.data->>'title' ILIKE ${n})"
            );
        }
        let count_sql = format!(
            "SELECT COUNT(*) FROM ledger_entries e JOIN ledger_records r ON r.record_id = e.record_id WHERE e.department = $1{filter}"
        );
        let (key, dir, cmp) = match query.order {
            InboxOrder::Newest => ("e.pushed_at".to_string(), "DESC", "<"),
            InboxOrder::Urgency => (
                "COALESCE(CASE WHEN e.state IN ('pushed', 'delivered') THEN e.claim_due_at WHEN e.state IN ('claimed', 'feedback') THEN e.feedback_due_at END, '9999-12-31T00:00:00Z'::timestamptz)".to_string(),
                "ASC",
                ">",
            ),
        };
        let c = self.client().await?;
        let refs: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let total: i64 = c
            .query_one(&count_sql, &refs)
            .await
            .map_err(|e| self.err(e))?
            .try_get(0)
            .map_err(|e| self.err(e))?;
        let mut page_filter = filter;
        if let Some(cursor) = &query.cursor {
            let bad = |message: String| LedgerError {
                path: self.url.clone(),
                message,
            };
            let (k, id) = decode_cursor(cursor).map_err(bad)?;
            let k = DateTime::parse_from_rfc3339(&k)
                .map_err(|_| bad(format!("cursor '{cursor}' is damaged")))?;
            params.push(Box::new(k));
            params.push(Box::new(id));
            let (a, b) = (params.len() - 1, params.len());
            page_filter +=
                &format!(" AND ({key} {cmp} ${a} OR ({key} = ${a} AND e.record_id {cmp} ${b}))");
        }
        let limit = query.limit.max(1);
        let sql = format!(
            "SELECT {}, {}, {key} FROM ledger_entries e JOIN ledger_records r ON r.record_id = e.record_id
             WHERE e.department = $1{page_filter} ORDER BY {key} {dir}, e.record_id {dir} LIMIT {}",
            prefix(ENTRY_COLUMNS, "e"),
            prefix(RECORD_COLUMNS, "r"),
            limit + 1
        );
        let refs: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let found = c.query(&sql, &refs).await.map_err(|e| self.err(e))?;
        let mut rows = Vec::new();
        let mut keys = Vec::new();
        for r in &found {
            rows.push((entry_from(r, 0), record_from(r, ENTRY_WIDTH)));
            let k: DateTime<Utc> = r.try_get(ENTRY_WIDTH + 13).map_err(|e| self.err(e))?;
            keys.push(k);
        }
        let next = if rows.len() > limit {
            rows.truncate(limit);
            Some(encode_cursor(
                &local(keys[limit - 1]).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false),
                &rows[limit - 1].0.record_id,
            ))
        } else {
            None
        };
        Ok(InboxPage {
            rows,
            total: total as u64,
            next,
        })
    }

    async fn unrouted(&self) -> Result<Vec<RecordRow>, LedgerError> {
        let c = self.client().await?;
        let rows = c
            .query(&format!("SELECT {RECORD_COLUMNS} FROM ledger_records WHERE unrouted IS NOT NULL ORDER BY published_at"), &[])
            .await
            .map_err(|e| self.err(e))?;
        Ok(rows.iter().map(|r| record_from(r, 0)).collect())
    }

    async fn entries_due_before(
        &self,
        before: DateTime<FixedOffset>,
    ) -> Result<Vec<DueEntry>, LedgerError> {
        let c = self.client().await?;
        let rows = c
            .query(DUE_SCAN, &[&before])
            .await
            .map_err(|e| self.err(e))?;
        Ok(rows
            .iter()
            .map(|r| {
                let kind: String = r.get(2);
                DueEntry {
                    record_id: r.get(0),
                    department: r.get(1),
                    kind: kind.parse().unwrap_or(RecordKind::Approval),
                    policy: r.get(3),
                    rule: r.get(4),
                    due_at: local(r.get(5)),
                    pushed_at: local(r.get(6)),
                    calendar_version: r.get(7),
                    alert_level: level_of(r.get(8)),
                }
            })
            .collect())
    }

    async fn obligations(
        &self,
        rule: &str,
        department: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(Entry, RecordRow)>, LedgerError> {
        let cols = |list: &str, t: &str| {
            list.split(", ")
                .map(|c| format!("{t}.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let sql = format!(
            "SELECT {}, {} FROM ledger_entries e JOIN ledger_records r ON r.record_id = e.record_id
             WHERE (e.claim_rule = $1 OR e.feedback_rule = $1) AND e.state IN ('pushed', 'delivered', 'claimed', 'feedback')
               AND ($2::text IS NULL OR e.department = $2)
             ORDER BY COALESCE(CASE WHEN e.feedback_rule = $1 THEN e.feedback_due_at END, e.claim_due_at), e.record_id
             LIMIT {limit}",
            cols(ENTRY_COLUMNS, "e"),
            cols(RECORD_COLUMNS, "r"),
        );
        let c = self.client().await?;
        let rows = c
            .query(&sql, &[&rule, &department])
            .await
            .map_err(|e| self.err(e))?;
        Ok(rows
            .iter()
            .map(|r| (entry_from(r, 0), record_from(r, ENTRY_WIDTH)))
            .collect())
    }

    async fn digest_counts(
        &self,
        day_start: DateTime<FixedOffset>,
        month_start: DateTime<FixedOffset>,
        now: DateTime<FixedOffset>,
    ) -> Result<Vec<DigestRow>, LedgerError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT department,
                   COUNT(*) FILTER (WHERE state IN ('pushed', 'delivered')),
                   COUNT(*) FILTER (WHERE claimed_at >= $1),
                   COUNT(*) FILTER (WHERE state IN ('pushed', 'delivered') AND pushed_at >= $2),
                   COUNT(*) FILTER (WHERE (state IN ('pushed', 'delivered') AND claim_due_at < $3)
                                       OR (state IN ('claimed', 'feedback') AND feedback_due_at < $3)),
                   COUNT(*) FILTER (WHERE feedback_rule = 'verify_commitment' AND state IN ('pushed', 'delivered', 'claimed', 'feedback')),
                   COUNT(*) FILTER (WHERE claim_rule = 'reply_inquiry' AND state IN ('pushed', 'delivered', 'claimed', 'feedback'))
                 FROM ledger_entries
                 WHERE state IN ('pushed', 'delivered', 'claimed', 'feedback') OR claimed_at >= $1
                 GROUP BY department ORDER BY department",
                &[&day_start, &month_start, &now],
            )
            .await
            .map_err(|e| self.err(e))?;
        Ok(rows
            .iter()
            .map(|r| DigestRow {
                department: r.get(0),
                to_claim: r.get(1),
                claimed_today: r.get(2),
                unclaimed_this_month: r.get(3),
                overdue: r.get(4),
                open_verifications: r.get(5),
                open_inquiries: r.get(6),
            })
            .collect())
    }

    async fn purge_finished(&self, before: DateTime<FixedOffset>) -> Result<u64, LedgerError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(|e| self.err(e))?;
        let ids: Vec<String> = tx
            .query("SELECT r.record_id FROM ledger_records r  WHERE r.unrouted IS NULL    AND EXISTS (SELECT 1 FROM ledger_entries e WHERE e.record_id = r.record_id)    AND NOT EXISTS (SELECT 1 FROM ledger_entries e WHERE e.record_id = r.record_id          AND (e.state IN ('pushed', 'delivered')               OR (e.state IN ('claimed', 'feedback') AND e.feedback_due_at IS NOT NULL)))    AND NOT EXISTS (SELECT 1 FROM ledger_history h WHERE h.record_id = r.record_id AND h.at >= $1)", &[&before])
            .await
            .map_err(|e| self.err(e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for table in [
            "ledger_history",
            "ledger_entries",
            "deliveries",
            "ledger_records",
        ] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE record_id = ANY($1)"),
                &[&ids],
            )
            .await
            .map_err(|e| self.err(e))?;
        }
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(ids.len() as u64)
    }

    async fn report_month(
        &self,
        from: DateTime<FixedOffset>,
        to: DateTime<FixedOffset>,
        mut report: super::report::Monthly,
    ) -> Result<super::report::Monthly, LedgerError> {
        use futures::TryStreamExt;
        let c = self.client().await?;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&from, &to];
        let rows = c
            .query_raw(
                &format!("SELECT {ENTRY_COLUMNS} FROM ledger_entries WHERE pushed_at >= $1 AND pushed_at < $2"),
                params,
            )
            .await
            .map_err(|e| self.err(e))?;
        futures::pin_mut!(rows);
        while let Some(row) = rows.try_next().await.map_err(|e| self.err(e))? {
            report.add(&entry_from(&row, 0));
        }
        Ok(report)
    }

    async fn entries_pushed_between(
        &self,
        from: DateTime<FixedOffset>,
        to: DateTime<FixedOffset>,
    ) -> Result<Vec<Entry>, LedgerError> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!("SELECT {ENTRY_COLUMNS} FROM ledger_entries WHERE pushed_at >= $1 AND pushed_at < $2 ORDER BY department, kind"),
                &[&from, &to],
            )
            .await
            .map_err(|e| self.err(e))?;
        Ok(rows.iter().map(|r| entry_from(r, 0)).collect())
    }

    async fn raise_alert(&self, alert: Alert, level: AlertLevel) -> Result<bool, LedgerError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(|e| self.err(e))?;
        let rank = level as i32;
        let changed = tx
            .execute(
                "UPDATE ledger_entries SET alert_level = $3
                 WHERE record_id = $1 AND department = $2 AND alert_level < $3 AND state IN ('pushed', 'delivered', 'claimed', 'feedback')",
                &[&alert.record_id, &alert.department, &rank],
            )
            .await
            .map_err(|e| self.err(e))?;
        if changed == 1 {
            queue_alert(&tx, &alert).await.map_err(|e| self.err(e))?;
        }
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(changed == 1)
    }

    async fn outbox(&self, limit: usize) -> Result<Vec<OutboxRow>, LedgerError> {
        let c = self.client().await?;
        let rows = c
            .query(&format!("SELECT id, record_id, payload FROM alert_outbox ORDER BY created_at, id LIMIT {limit}"), &[])
            .await
            .map_err(|e| self.err(e))?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get::<_, String>(2).into_bytes()))
            .collect())
    }

    async fn claim_outbox(
        &self,
        owner: &str,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<OutboxRow>, LedgerError> {
        let c = self.client().await?;
        let seconds = lease.as_secs_f64();
        let rows = c
            .query(
                &format!(
                    "UPDATE alert_outbox SET claimed_by = $1, claimed_until = now() + make_interval(secs => $2)
                     WHERE id IN (SELECT id FROM alert_outbox WHERE claimed_until IS NULL OR claimed_until < now()
                                  ORDER BY created_at, id LIMIT {limit} FOR UPDATE SKIP LOCKED)
                     RETURNING id, record_id, payload, created_at"
                ),
                &[&owner, &seconds],
            )
            .await
            .map_err(|e| self.err(e))?;
        let mut out: Vec<(DateTime<Utc>, OutboxRow)> = rows
            .iter()
            .map(|r| {
                (
                    r.get(3),
                    (r.get(0), r.get(1), r.get::<_, String>(2).into_bytes()),
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1 .0.cmp(&b.1 .0)));
        Ok(out.into_iter().map(|(_, row)| row).collect())
    }

    async fn outbox_done(&self, ids: Vec<String>) -> Result<(), LedgerError> {
        let c = self.client().await?;
        c.execute("DELETE FROM alert_outbox WHERE id = ANY($1)", &[&ids])
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn snapshot(&self) -> Result<Vec<String>, LedgerError> {
        let c = self.client().await?;
        let mut out = Vec::new();
        for sql in [
            format!("SELECT {RECORD_COLUMNS} FROM ledger_records ORDER BY record_id"),
            format!("SELECT {ENTRY_COLUMNS} FROM ledger_entries ORDER BY record_id, department"),
            "SELECT record_id, department, action, actor, channel, at, event_id, detail FROM ledger_history ORDER BY record_id, seq".to_string(),
        ] {
            for r in c.query(&sql, &[]).await.map_err(|e| self.err(e))? {
                out.push((0..r.len()).map(|i| cell(&r, i)).collect::<Vec<_>>().join("|"));
            }
        }
        Ok(out)
    }

    async fn clear(&self) -> Result<(), LedgerError> {
        let c = self.client().await?;
        c.batch_execute("BEGIN; DELETE FROM ledger_records; DELETE FROM ledger_entries; DELETE FROM ledger_history; DELETE FROM ledger_positions; COMMIT;")
            .await
            .map_err(|e| self.err(e))
    }

    async fn gauges(&self, now: DateTime<FixedOffset>) -> Result<Vec<GaugeRow>, LedgerError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT department, kind, COUNT(*)::BIGINT, SUM(CASE WHEN claim_due_at < $1 THEN 1 ELSE 0 END)::BIGINT, MIN(pushed_at)
                 FROM ledger_entries WHERE state IN ('pushed', 'delivered') GROUP BY department, kind",
                &[&now],
            )
            .await
            .map_err(|e| self.err(e))?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), opt_local(r.get(4))))
            .collect())
    }

    async fn unrouted_counts(&self) -> Result<Vec<(String, i64)>, LedgerError> {
        let c = self.client().await?;
        let rows = c
            .query("SELECT kind, COUNT(*)::BIGINT FROM ledger_records WHERE unrouted IS NOT NULL GROUP BY kind", &[])
            .await
            .map_err(|e| self.err(e))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn due_deliveries(
        &self,
        departments: Vec<String>,
        now: DateTime<FixedOffset>,
        limit: usize,
    ) -> Result<Vec<(Entry, RecordRow, u32)>, LedgerError> {
        let c = self.client().await?;
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
        let rows = c
            .query(
                &format!(
                    "SELECT {cols}, {rcols}, COALESCE(d.attempts, 0) FROM ledger_entries e
                     JOIN ledger_records r ON r.record_id = e.record_id
                     LEFT JOIN deliveries d ON d.record_id = e.record_id AND d.department = e.department
                     WHERE e.department = ANY($1) AND e.state = 'pushed'
                       AND (d.status IS NULL OR (d.status = 'retry' AND d.next_attempt_at <= $2))
                     ORDER BY e.pushed_at LIMIT {limit}"
                ),
                &[&departments, &now],
            )
            .await
            .map_err(|e| self.err(e))?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    entry_from(r, 0),
                    record_from(r, ENTRY_WIDTH),
                    r.get::<_, i32>(32) as u32,
                )
            })
            .collect())
    }

    async fn delivery_retry(
        &self,
        record_id: String,
        department: String,
        attempts: u32,
        next: DateTime<FixedOffset>,
        error: String,
    ) -> Result<(), LedgerError> {
        let c = self.client().await?;
        let attempts = attempts as i32;
        let error = crate::mask::mask(&error);
        c.execute(
            "INSERT INTO deliveries (record_id, department, attempts, status, next_attempt_at, last_error) VALUES ($1, $2, $3, 'retry', $4, $5)
             ON CONFLICT (record_id, department) DO UPDATE SET attempts = excluded.attempts, status = 'retry',
               next_attempt_at = excluded.next_attempt_at, last_error = excluded.last_error",
            &[&record_id, &department, &attempts, &next, &error],
        )
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn delivery_reset(
        &self,
        record_id: String,
        now: DateTime<FixedOffset>,
    ) -> Result<u64, LedgerError> {
        let c = self.client().await?;
        c.execute(
            "UPDATE deliveries SET status = 'retry', attempts = 0, next_attempt_at = $2, last_error = NULL
             WHERE record_id = $1 AND status = 'dead'",
            &[&record_id, &now],
        )
        .await
        .map_err(|e| self.err(e))
    }

    async fn delivery_done(
        &self,
        record_id: String,
        department: String,
        attempts: u32,
        status: &'static str,
    ) -> Result<(), LedgerError> {
        let c = self.client().await?;
        let attempts = attempts as i32;
        c.execute(
            "INSERT INTO deliveries (record_id, department, attempts, status) VALUES ($1, $2, $3, $4)
             ON CONFLICT (record_id, department) DO UPDATE SET attempts = excluded.attempts, status = excluded.status, next_attempt_at = NULL",
            &[&record_id, &department, &attempts, &status],
        )
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }
}
