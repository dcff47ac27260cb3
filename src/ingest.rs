//! The ingest service: runs a request through the pure pipeline, drops duplicates, publishes the
//! accepted records and the rejections (to the DLQ) in one acknowledged batch, and only then
//! remembers what it published. Shared by the HTTP API, the sources and `shenguan dlq replay`.
//!
//! A record is a duplicate when the content last published for its business key (of its
//! adapter) is the same. The de-duplication table that knows the last content has two forms
//! ([`dedup::Table`]): in the state store, written by group commit (the embedded bus), or in
//! memory with a snapshot in the state store, a log its changes are appended to every second
//! (an ingest process on Kafka: no database round trip per request). Two requests with a record in common run one
//! after the other ([`dedup::Reservations`]); requests without one run side by side, and their
//! publishes and commits are grouped.
//!
//! The table lives beside the bus, the records on it: a crash between the bus acknowledgement
//! and `remember`, a process that stopped before its snapshot was written, or a publish that
//! failed after the bus had stored part of it (a Kafka send that timed out while the broker went
//! away), leaves records on the bus that the table does not know. The client was not answered
//! 202 and sends them again, and they would be published twice. So the table is treated as a
//! projection of the record topics with a scan position of its own (a checkpoint in the state
//! store): before the first ingest of a process (and before its `/readyz` says ready) and after
//! any failed publish, it catches up by reading the record topics from that position to their
//! end. The position moves up every few seconds (every second for the table in memory), to an
//! end that every in-flight request of this process has remembered — and, for the table in
//! memory, that the snapshot holds (see
//! [`Ingestor::checkpoint`] and [`Ingestor::flush`]).
//!
//! Several ingest processes each keep their own table and know what the others published only
//! from what was on the topics when they caught up. The same record sent to two of them at the
//! same moment (or sent again to another one) can be published by both: the bus then holds it
//! twice, as two messages with the same CloudEvents `id` (derived from the record id and its
//! content), and every consumer of the record topics applies it once by that id — the ledger
//! keeps each record's event ids and ignores one it has (`tests/roles.rs` shows it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::adapter::convert::now_shanghai;
use crate::adapter::format::Format;
use crate::adapter::Adapter;
use crate::bus::{Bus, BusError, Message, Positions, Topics};
use crate::pipeline::{self, BodyRejection, Outcome, RecordError, Rejection, Unit};
use crate::schema::{RecordKind, Schemas};
use crate::state::{Seen, StateError, StateStore};
use crate::telemetry::events;

pub mod dedup;

use dedup::{GroupCommit, MemoryTable, Reservations, Table};
/// The state-store checkpoint holding the de-duplication table's scan position on the bus.
pub const DEDUP_CHECKPOINT: &str = "shenguan:ingest-dedup";
/// How often the scan position of the table in the state store moves up to the end of the
/// record topics.
const DEDUP_CHECKPOINT_EVERY: Duration = Duration::from_secs(5);
/// How often the in-memory table's changes are appended to its snapshot's log: each second's
/// worth is 16 bytes a record published.
const DEDUP_FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Pieces of the in-memory table's log read at a time (a piece a second holds a second's
/// changes, 1 MiB at 65,000 records/s).
const LOG_PAGE: usize = 4;
/// Entries a piece holds when the log is replaced by the table (4 MiB).
const PIECE_ENTRIES: usize = 1 << 18;
/// Entries the log may hold beyond twice the table's records before a start replaces it.
const COMPACT_SLACK: usize = 1_000_000;
/// Rows per page when the in-memory table loads its snapshot.
const SNAPSHOT_PAGE: usize = 10_000;
/// A catch-up scan that reached the reported ends still reads until the topics are quiet this
/// long: some Kafka-protocol brokers report a high watermark at the start of the last batch.
const SCAN_QUIET: Duration = Duration::from_millis(300);
/// A catch-up scan fails (and the request is answered 503) when the bus delivers nothing for
/// this long while it is still behind.
const SCAN_STALL: Duration = Duration::from_secs(30);

/// A request body as received.
#[derive(Debug, Clone)]
pub struct Payload {
    pub body: Vec<u8>,
    /// The format named by the request's `Content-Type`; default the adapter's.
    pub format: Option<Format>,
    /// The charset named by the request; default the adapter's.
    pub charset: Option<String>,
    /// A whole body, or one record as kept by the DLQ.
    pub unit: Unit,
}

impl Payload {
    /// A request body in the adapter's own format and charset.
    pub fn body(body: Vec<u8>) -> Payload {
        Payload {
            body,
            format: None,
            charset: None,
            unit: Unit::Body,
        }
    }
}

/// The answer to an ingest request.
#[derive(Debug, Default, Serialize)]
pub struct IngestReport {
    pub adapter: String,
    pub received: usize,
    pub accepted: Vec<AcceptedRecord>,
    pub duplicates: Vec<AcceptedRecord>,
    pub rejected: Vec<RejectedRecord>,
}

#[derive(Debug, Serialize)]
pub struct AcceptedRecord {
    pub index: usize,
    pub id: String,
    pub event_id: String,
    pub business_key: String,
}

#[derive(Debug, Serialize)]
pub struct RejectedRecord {
    pub index: Option<usize>,
    pub stage: &'static str,
    pub reason: &'static str,
    pub dlq_id: String,
    pub errors: Vec<RecordError>,
}

/// Why a request could not be handled.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The body could not be split into records; it is in the DLQ.
    #[error("{}", .0.title)]
    Body(Box<BodyRejection>, String),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    State(#[from] StateError),
}

pub struct Ingestor {
    pub schemas: Arc<Schemas>,
    pub bus: Arc<dyn Bus>,
    pub state: Arc<dyn StateStore>,
    pub topics: Topics,
    pub max_records: usize,
    /// The de-duplication table.
    table: Table,
    /// Record ids of the requests in flight.
    reservations: Reservations,
    /// Held shared from a publish until its records are remembered; exclusive while the
    /// de-duplication table catches up with the bus or its scan position moves.
    window: tokio::sync::RwLock<()>,
    /// The table may miss records the bus has: true at start-up and after a failed publish or
    /// remember, until a catch-up scan succeeded.
    stale: AtomicBool,
    /// The table caught up with the bus at least once: the process is ready to ingest.
    warm: AtomicBool,
    catching_up: tokio::sync::Mutex<()>,
    /// Held from taking the in-memory table's changes until they are in its log, so that the
    /// log's pieces follow each other in the order the changes were taken (taken only while
    /// holding `window` exclusively).
    snapshot: tokio::sync::Mutex<()>,
    last_checkpoint: std::sync::Mutex<Instant>,
    /// The policy profile in force: the canonical fields it requires beyond the schema (垣曲
    /// 第二十二条（二）, 济宁 第二十条（二）). `None` requires nothing more.
    pub policy: Option<Arc<crate::deadline::Policy>>,
}

impl Ingestor {
    pub fn new(
        schemas: Arc<Schemas>,
        bus: Arc<dyn Bus>,
        state: Arc<dyn StateStore>,
        topics: Topics,
        max_records: usize,
    ) -> Ingestor {
        Ingestor {
            schemas,
            bus,
            table: Table::Store(GroupCommit::new(state.clone())),
            state,
            topics,
            max_records,
            reservations: Reservations::default(),
            window: tokio::sync::RwLock::new(()),
            stale: AtomicBool::new(true),
            warm: AtomicBool::new(false),
            catching_up: tokio::sync::Mutex::new(()),
            snapshot: tokio::sync::Mutex::new(()),
            last_checkpoint: std::sync::Mutex::new(Instant::now()),
            policy: None,
        }
    }

    /// The same, keeping the de-duplication table in memory (see [`dedup`]): for a process that
    /// ingests at rate on Kafka. [`Ingestor::run_table`] loads it and writes its snapshot.
    pub fn with_table_in_memory(mut self) -> Ingestor {
        self.table = Table::Memory(MemoryTable::default());
        self
    }

    /// Whether the de-duplication table is ready for traffic: the table in memory has loaded its
    /// snapshot and caught up with the bus since the process started (until then a request waits
    /// for it, and `/readyz` of an ingesting instance says so, so that a load balancer sends the
    /// requests to the other instances). The table in the state store needs no loading.
    pub fn is_warm(&self) -> bool {
        matches!(self.table, Table::Store(_)) || self.warm.load(Ordering::SeqCst)
    }

    /// Catches the de-duplication table up with the bus (retrying until it can, or `stop`), then,
    /// for the table in memory, appends its changes to its snapshot every second and once more
    /// at `stop`.
    pub async fn run_table(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut wait = Duration::from_millis(500);
        loop {
            match self.catch_up().await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "the de-duplication table cannot catch up with the bus yet");
                    if crate::stop::pause(wait, &mut stop).await {
                        return;
                    }
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
            }
        }
        if !matches!(self.table, Table::Memory(_)) {
            return;
        }
        while !crate::stop::pause(DEDUP_FLUSH_EVERY, &mut stop).await {
            self.flush().await;
        }
        self.flush().await;
    }

    /// The same, checking what `policy` requires of every accepted record.
    pub fn with_policy(mut self, policy: Option<crate::deadline::Policy>) -> Ingestor {
        if let Some(p) = policy
            .as_ref()
            .filter(|p| !p.required_fields.relaxed.is_empty())
        {
            tracing::warn!(
                policy = %p.name,
                relaxed = %p.required_fields.relaxed.join(", "),
                reason = p.required_fields.relaxed_reason.as_deref().unwrap_or(""),
                "the site profile relaxes fields its regulation requires"
            );
        }
        self.policy = policy.map(Arc::new);
        self
    }

    /// Ingests one request body for `adapter`. `replay_of` names the DLQ entry being replayed.
    pub async fn ingest(
        &self,
        adapter: Arc<Adapter>,
        payload: Payload,
        replay_of: Option<String>,
    ) -> Result<IngestReport, IngestError> {
        let Payload {
            body,
            format,
            charset,
            unit,
        } = payload;
        let started = Instant::now();
        let received_at = now_shanghai();
        // A DLQ entry of a body keeps the charset only when the request named one, so that a
        // replay decodes an undeclared body with the adapter's charset of its own time.
        let charset_declared = charset.is_some();
        let schemas = self.schemas.clone();
        let max = self.max_records;
        let a = adapter.clone();
        let request_charset = charset.clone();
        // Parsing, mapping and validating a large batch is CPU work: keep it off the I/O threads.
        let processed = tokio::task::spawn_blocking(move || {
            let result = pipeline::process(
                &a,
                &schemas,
                &body,
                format,
                charset.as_deref(),
                unit,
                received_at,
                max,
            );
            (result, body)
        })
        .await
        .expect("pipeline does not panic");
        let (outcomes, body) = match processed {
            (Ok(outcomes), body) => (outcomes, body),
            (Err(body_rejection), _) => {
                let (dlq_id, message) = self.dlq_event(
                    &adapter.name,
                    &body_rejection.rejection,
                    received_at,
                    replay_of.as_deref(),
                    charset_declared,
                    None,
                );
                self.publish(vec![message]).await?;
                let r = &body_rejection.rejection;
                events::record_rejected(
                    &adapter.name,
                    r.stage.as_str(),
                    r.reason,
                    None,
                    &r.errors[0].reason,
                    &dlq_id,
                );
                return Err(IngestError::Body(body_rejection, dlq_id));
            }
        };
        let mut report = IngestReport {
            adapter: adapter.name.clone(),
            received: outcomes.len(),
            ..Default::default()
        };
        let mut candidates = Vec::new();
        let mut messages = Vec::new();
        for outcome in outcomes {
            let outcome = match &self.policy {
                Some(p) => {
                    required_fields(p, outcome, &body, format, &request_charset, unit, &adapter)
                }
                None => outcome,
            };
            match outcome {
                Outcome::Accepted(c) => candidates.push(c),
                Outcome::Rejected(r) => {
                    let preview = crate::preview::record_preview(&adapter, &r);
                    let (dlq_id, message) = self.dlq_event(
                        &adapter.name,
                        &r,
                        received_at,
                        replay_of.as_deref(),
                        true,
                        Some(preview),
                    );
                    messages.push(message);
                    report.rejected.push(RejectedRecord {
                        index: r.index,
                        stage: r.stage.as_str(),
                        reason: r.reason,
                        dlq_id,
                        errors: r.errors,
                    });
                }
            }
        }
        // Reserve the batch's records until they are remembered: a concurrent request with one
        // of them waits, so it sees what this one published.
        let reserved = self
            .reservations
            .reserve(candidates.iter().map(|c| c.record_id.clone()).collect())
            .await;
        if !candidates.is_empty() {
            self.catch_up().await?;
        }
        let window = self.window.read().await;
        let keys: Vec<(&str, &str)> = candidates
            .iter()
            .map(|c| (c.business_key.as_str(), c.record_id.as_str()))
            .collect();
        let last = self
            .table
            .last(self.state.as_ref(), &adapter.name, &keys)
            .await?;
        let mut latest: HashMap<&str, Option<u64>> = HashMap::new();
        let mut to_remember = Vec::new();
        let mut fresh = Vec::new();
        for (c, stored) in candidates.iter().zip(last) {
            let previous = latest.entry(c.business_key.as_str()).or_insert(stored);
            let record = AcceptedRecord {
                index: c.index,
                id: c.record_id.clone(),
                event_id: c.event_id.clone(),
                business_key: c.business_key.clone(),
            };
            let content = dedup::fingerprint(&c.content_hash);
            if *previous == Some(content) {
                report.duplicates.push(record);
                continue;
            }
            *previous = Some(content);
            messages.push(Message {
                topic: self.topics.name(c.kind),
                key: c.record_id.clone(),
                payload: c.event.clone(),
            });
            to_remember.push(c);
            fresh.push((c.kind, record));
        }
        let mut per_topic: HashMap<String, usize> = HashMap::new();
        for m in &messages {
            *per_topic.entry(m.topic.clone()).or_default() += 1;
        }
        if let Err(e) = self.publish(messages).await {
            // Part of the batch may be stored all the same: look before the next publish.
            self.stale.store(true, Ordering::SeqCst);
            return Err(e.into());
        }
        match &self.table {
            Table::Store(commits) => {
                let seen = to_remember
                    .iter()
                    .map(|c| Seen {
                        adapter: adapter.name.clone(),
                        business_key: c.business_key.clone(),
                        content_hash: c.content_hash.clone(),
                        record_id: c.record_id.clone(),
                    })
                    .collect();
                if let Err(e) = commits.remember(seen).await {
                    // Published but not remembered: the next request first catches up from the bus.
                    self.stale.store(true, Ordering::SeqCst);
                    tracing::error!(adapter = %adapter.name, error = %e, "published records could not be remembered for de-duplication");
                }
            }
            Table::Memory(table) => table.published(
                &adapter.name,
                to_remember
                    .iter()
                    .map(|c| (c.record_id.as_str(), c.content_hash.as_str())),
            ),
        }
        drop(window);
        drop(reserved);
        if let Table::Store(_) = self.table {
            self.checkpoint().await;
        }
        for (topic, n) in per_topic {
            events::published(&topic, n);
        }
        events::pipeline_latency(&adapter.name, started.elapsed(), fresh.len());
        for (_, r) in &fresh {
            events::record_accepted(&adapter.name, &r.id, r.index);
        }
        for r in &report.duplicates {
            events::record_duplicate(&adapter.name, &r.id, r.index);
        }
        for r in &report.rejected {
            let detail = r
                .errors
                .iter()
                .map(|e| format!("{} {}", e.path, e.reason))
                .collect::<Vec<_>>()
                .join("; ");
            events::record_rejected(
                &adapter.name,
                r.stage,
                r.reason,
                r.index,
                &detail,
                &r.dlq_id,
            );
        }
        report.accepted = fresh.into_iter().map(|(_, r)| r).collect();
        Ok(report)
    }

    /// The topics of canonical records, which the de-duplication table mirrors.
    fn record_topics(&self) -> Vec<String> {
        [
            RecordKind::Approval,
            RecordKind::Supervision,
            RecordKind::Notice,
        ]
        .into_iter()
        .map(|k| self.topics.name(k))
        .collect()
    }

    /// Brings the de-duplication table up to the bus when it may be behind (first use, or a
    /// failed publish or remember): the table in memory first loads its snapshot. No request of
    /// this process publishes meanwhile.
    async fn catch_up(&self) -> Result<(), IngestError> {
        if !self.stale.load(Ordering::SeqCst) {
            return Ok(());
        }
        let _one = self.catching_up.lock().await;
        if !self.stale.load(Ordering::SeqCst) {
            return Ok(());
        }
        let _exclusive = self.window.write().await;
        let started = Instant::now();
        if let Table::Memory(table) = &self.table {
            if !table.is_loaded() {
                self.load_table(table).await?;
                tracing::info!(
                    records = table.len(),
                    ms = started.elapsed().as_millis() as u64,
                    "de-duplication table loaded from its snapshot"
                );
            }
        }
        let (scanned, recovered) = self.scan().await?;
        // Cleared while no publish runs: a failure after this sets it again.
        self.stale.store(false, Ordering::SeqCst);
        self.warm.store(true, Ordering::SeqCst);
        if scanned > 0 {
            tracing::info!(
                messages = scanned,
                records = recovered,
                ms = started.elapsed().as_millis() as u64,
                "de-duplication table caught up with the bus"
            );
        }
        Ok(())
    }

    /// Reads the record topics from the table's scan position to their end, remembers the last
    /// content of every business key found, and moves the position. Returns (messages read,
    /// records remembered).
    async fn scan(&self) -> Result<(usize, usize), IngestError> {
        let topics = self.record_topics();
        let mut position = self.scan_position().await?;
        let ends = self.bus.end_offsets(&topics).await?;
        let mut behind: HashMap<(String, i32), i64> = ends
            .iter()
            .filter(|(tp, end)| **end > position.get(*tp).copied().unwrap_or(0))
            .map(|(tp, end)| (tp.clone(), *end))
            .collect();
        let mut latest: HashMap<(String, String), Seen> = HashMap::new();
        let mut scanned = 0;
        if !behind.is_empty() {
            let mut sub = self.bus.assign(&topics, &position).await?;
            let mut last_progress = Instant::now();
            loop {
                let wait = if behind.is_empty() {
                    SCAN_QUIET
                } else {
                    Duration::from_millis(500)
                };
                match sub.next(wait).await? {
                    Some(d) => {
                        scanned += 1;
                        last_progress = Instant::now();
                        let tp = (d.topic.clone(), d.partition);
                        if behind.get(&tp).is_some_and(|&end| d.offset + 1 >= end) {
                            behind.remove(&tp);
                        }
                        let next = position.entry(tp).or_insert(0);
                        *next = (*next).max(d.offset + 1);
                        match seen_from_event(&d.payload) {
                            Some(seen) => {
                                latest.insert(
                                    (seen.adapter.clone(), seen.business_key.clone()),
                                    seen,
                                );
                            }
                            None => tracing::warn!(
                                topic = %d.topic, partition = d.partition, offset = d.offset,
                                "a record on the bus cannot be matched to its content hash; a resend of it may be published again"
                            ),
                        }
                    }
                    None if behind.is_empty() => break,
                    None if last_progress.elapsed() > SCAN_STALL => {
                        return Err(BusError::Unavailable(format!(
                            "the de-duplication scan got nothing for {} s; {} partitions still behind",
                            SCAN_STALL.as_secs(),
                            behind.len()
                        ))
                        .into());
                    }
                    None => {}
                }
            }
        }
        for (tp, end) in ends {
            let next = position.entry(tp).or_insert(0);
            *next = (*next).max(end);
        }
        let recovered: Vec<Seen> = latest.into_values().collect();
        let n = recovered.len();
        match &self.table {
            Table::Memory(table) => {
                let _writing = self.snapshot.lock().await;
                table.scanned(&recovered);
                let changes = table.take_changes();
                if let Err(e) = self.write_changes(&changes).await {
                    table.put_back(changes);
                    return Err(e.into());
                }
            }
            Table::Store(_) => self.state.remember(recovered).await?,
        }
        self.save_scan_position(&position).await?;
        Ok((scanned, n))
    }

    /// Moves the scan position up to the current end of the record topics, at most every few
    /// seconds. The end is read first; then the exclusive window waits for every request that
    /// published before that read to remember its records, so everything below the new
    /// position is in the table. A failure only leaves the position where it was.
    async fn checkpoint(&self) {
        {
            let mut last = self.last_checkpoint.lock().expect("checkpoint clock");
            if last.elapsed() < DEDUP_CHECKPOINT_EVERY || self.stale.load(Ordering::SeqCst) {
                return;
            }
            *last = Instant::now();
        }
        let ends = match self.bus.end_offsets(&self.record_topics()).await {
            Ok(ends) => ends,
            Err(e) => {
                tracing::debug!(error = %e, "de-duplication scan position not moved");
                return;
            }
        };
        let _exclusive = self.window.write().await;
        if self.stale.load(Ordering::SeqCst) {
            return;
        }
        let result = match self.scan_position().await {
            Ok(mut position) => {
                for (tp, end) in ends {
                    let next = position.entry(tp).or_insert(0);
                    *next = (*next).max(end);
                }
                self.save_scan_position(&position).await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "de-duplication scan position not moved");
        }
    }

    /// Writes the in-memory table's changes to its snapshot in the state store and moves the
    /// scan position up, as [`Ingestor::checkpoint`] does: the end is read first, the exclusive
    /// window waits for every request that published before that read to put its records in
    /// the table, and the changes taken then are written before the position moves. A failed
    /// write puts the changes back and leaves the position where it was.
    pub async fn flush(&self) {
        let Table::Memory(table) = &self.table else {
            return;
        };
        if self.stale.load(Ordering::SeqCst) {
            return;
        }
        let ends = match self.bus.end_offsets(&self.record_topics()).await {
            Ok(ends) => ends,
            Err(e) => {
                tracing::debug!(error = %e, "de-duplication snapshot not written");
                return;
            }
        };
        let (changes, _writing) = {
            let _exclusive = self.window.write().await;
            if self.stale.load(Ordering::SeqCst) {
                return;
            }
            let writing = self.snapshot.lock().await;
            (table.take_changes(), writing)
        };
        if let Err(e) = self.write_changes(&changes).await {
            let n = changes.entries.len();
            table.put_back(changes);
            tracing::warn!(error = %e, records = n, "de-duplication snapshot not written; retrying");
            return;
        }
        let result = match self.scan_position().await {
            Ok(mut position) => {
                for (tp, end) in ends {
                    let next = position.entry(tp).or_insert(0);
                    *next = (*next).max(end);
                }
                self.save_scan_position(&position).await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "de-duplication scan position not moved");
        }
    }

    /// Appends the in-memory table's changes to its snapshot's log, with the activity of each
    /// adapter they carry.
    async fn write_changes(&self, changes: &dedup::Changes) -> Result<(), StateError> {
        if changes.is_empty() {
            return Ok(());
        }
        let now = chrono::Utc::now().to_rfc3339();
        let activity = changes
            .new_records
            .iter()
            .map(|(adapter, records)| crate::state::AdapterActivity {
                adapter: adapter.clone(),
                records: *records,
                last_at: Some(now.clone()),
            })
            .collect();
        self.state
            .dedup_append(dedup::encode(changes.entries.iter().copied()), activity)
            .await
    }

    /// Loads the in-memory table from its snapshot's log. A log much longer than the table (a
    /// record changed many times) is replaced by the table. Without a log, the table in the
    /// state store (written by a gateway on the embedded bus, or before the log) is read
    /// instead, and written as the log by the catch-up that follows.
    async fn load_table(&self, table: &MemoryTable) -> Result<(), IngestError> {
        let (mut after, mut logged) = (i64::MIN, 0usize);
        loop {
            let pieces = self.state.dedup_log(after, LOG_PAGE).await?;
            for (seq, piece) in &pieces {
                if !table.load(piece) {
                    return Err(IngestError::State(StateError {
                        path: format!("de-duplication log piece {seq}"),
                        message: format!(
                            "{} bytes, not a whole number of 16-byte entries",
                            piece.len()
                        ),
                    }));
                }
                logged += piece.len() / dedup::ENTRY;
                after = *seq;
            }
            if pieces.len() < LOG_PAGE {
                break;
            }
        }
        if after == i64::MIN {
            let mut from = (String::new(), String::new());
            loop {
                let page = self.state.seen_page(from.clone(), SNAPSHOT_PAGE).await?;
                table.scanned(&page);
                match page.last() {
                    Some(last) if page.len() == SNAPSHOT_PAGE => {
                        from = (last.adapter.clone(), last.business_key.clone())
                    }
                    _ => break,
                }
            }
        } else if logged > 2 * table.len() + COMPACT_SLACK {
            self.state
                .dedup_compact(after, table.pieces(PIECE_ENTRIES))
                .await?;
            tracing::info!(
                entries = logged,
                records = table.len(),
                "de-duplication log replaced by the table"
            );
        }
        table.loaded.store(true, Ordering::SeqCst);
        Ok(())
    }

    async fn scan_position(&self) -> Result<Positions, IngestError> {
        let Some(text) = self.state.checkpoint(DEDUP_CHECKPOINT).await? else {
            return Ok(Positions::new());
        };
        let rows: Vec<(String, i32, i64)> = serde_json::from_str(&text).map_err(|e| {
            IngestError::State(StateError {
                path: DEDUP_CHECKPOINT.into(),
                message: format!("unreadable scan position: {e}"),
            })
        })?;
        Ok(rows.into_iter().map(|(t, p, o)| ((t, p), o)).collect())
    }

    async fn save_scan_position(&self, position: &Positions) -> Result<(), IngestError> {
        let mut rows: Vec<(&str, i32, i64)> = position
            .iter()
            .map(|((t, p), o)| (t.as_str(), *p, *o))
            .collect();
        rows.sort();
        let text = serde_json::to_string(&rows).expect("positions serialise");
        Ok(self.state.save_checkpoint(DEDUP_CHECKPOINT, text).await?)
    }

    async fn publish(&self, messages: Vec<Message>) -> Result<(), BusError> {
        self.bus
            .publish(messages)
            .await
            .inspect_err(|e| events::bus_error("publish", e))
    }

    /// The DLQ CloudEvent for a rejection.
    pub fn dlq_message(
        &self,
        adapter: &str,
        r: &Rejection,
        received_at: chrono::DateTime<chrono::FixedOffset>,
        replay_of: Option<&str>,
    ) -> (String, Message) {
        self.dlq_event(adapter, r, received_at, replay_of, true, None)
    }

    /// The DLQ CloudEvent for a rejection: `charset_declared` false leaves the charset out (the
    /// request named none); `preview` is the record's own (masked with what its adapter knows),
    /// else one is made from the bytes.
    fn dlq_event(
        &self,
        adapter: &str,
        r: &Rejection,
        received_at: chrono::DateTime<chrono::FixedOffset>,
        replay_of: Option<&str>,
        charset_declared: bool,
        preview: Option<String>,
    ) -> (String, Message) {
        let id = uuid::Uuid::new_v4().to_string();
        let mut data = json!({
            "adapter": adapter,
            "stage": r.stage.as_str(),
            "reason": r.reason,
            "errors": r.errors,
            "record_index": r.index,
            "original_base64": base64::engine::general_purpose::STANDARD.encode(&r.original),
            "content_type": r.content_type,
            "unit": r.unit,
            "preview": preview.unwrap_or_else(|| crate::preview::preview(&r.original, &r.charset, &[])),
            "received_at": received_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, false),
        });
        if let Some(k) = &r.business_key {
            data["business_key"] = json!(k);
        }
        if charset_declared {
            data["charset"] = json!(r.charset);
        }
        if let Some(original) = replay_of {
            data["replay_of"] = json!(original);
        }
        let event = pipeline::envelope(
            RecordKind::Dlq,
            &id,
            &format!("/shenguan/adapters/{adapter}"),
            &id,
            received_at,
            data,
        );
        let payload = serde_json::to_vec(&event).expect("a JSON value serialises");
        (
            id.clone(),
            Message {
                topic: self.topics.name(RecordKind::Dlq),
                key: id,
                payload,
            },
        )
    }
}

/// An accepted record that lacks a field the policy profile requires becomes a rejection (stage
/// `validate`, reason `required_by_policy`) with a reason per field. The pipeline keeps no bytes
/// of an accepted record, so the DLQ keeps the request's bytes: replaying them answers the
/// request's other records as duplicates and checks this one again.
fn required_fields(
    policy: &crate::deadline::Policy,
    outcome: Outcome,
    body: &[u8],
    format: Option<crate::adapter::format::Format>,
    charset: &Option<String>,
    unit: pipeline::Unit,
    adapter: &Adapter,
) -> Outcome {
    let Outcome::Accepted(c) = outcome else {
        return outcome;
    };
    let missing = policy
        .required_fields
        .missing_in_event(&policy.name, c.kind.as_str(), &c.event);
    if missing.is_empty() {
        return Outcome::Accepted(c);
    }
    Outcome::Rejected(pipeline::Rejection {
        index: Some(c.index),
        stage: pipeline::Stage::Validate,
        reason: "required_by_policy",
        errors: missing
            .into_iter()
            .map(|m| pipeline::RecordError {
                index: Some(c.index),
                path: m.pointer,
                reason: m.reason,
            })
            .collect(),
        original: body.to_vec(),
        charset: charset
            .clone()
            .unwrap_or_else(|| adapter.charset.name().to_ascii_lowercase()),
        content_type: format.unwrap_or(adapter.format).media_type(),
        unit,
        business_key: Some(c.business_key),
    })
}

/// What the de-duplication table would have remembered for a canonical record event read back
/// from the bus: the content hash is recomputed the way the pipeline computes it (the mapped
/// fields, without the `record_id`, `kind` and `source` the pipeline adds) and checked against
/// the event id derived from it. `None` for anything else.
pub fn seen_from_event(payload: &[u8]) -> Option<Seen> {
    let event: serde_json::Value = serde_json::from_slice(payload).ok()?;
    let record_id = event.get("subject")?.as_str()?;
    let event_id = event.get("id")?.as_str()?;
    let data = event.get("data")?.as_object()?;
    let source = data.get("source")?;
    let adapter = source.get("adapter")?.as_str()?;
    let business_key = source.get("business_key")?.as_str()?;
    let mapped: serde_json::Map<String, serde_json::Value> = data
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "record_id" | "kind" | "source"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // The pipeline's formula (`pipeline::process`); the event-id check below catches any drift.
    let content_hash = hex::encode(&Sha256::digest(serde_json::to_vec(&mapped).ok()?)[..16]);
    if pipeline::event_id(record_id, &content_hash) != event_id
        || pipeline::record_id(adapter, business_key) != record_id
    {
        return None;
    }
    Some(Seen {
        adapter: adapter.to_string(),
        business_key: business_key.to_string(),
        content_hash,
        record_id: record_id.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::AdapterSet;

    /// Every shipped fixture's accepted records, as the pipeline builds them: the catch-up scan
    /// must find the very content hash the pipeline computed, or a resend after a crash would be
    /// published again.
    #[test]
    fn a_record_read_back_from_the_bus_gives_the_pipelines_content_hash() {
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let schemas = Schemas::load(Some(&repo.join("schemas"))).unwrap();
        let adapters = AdapterSet::load(&repo.join("adapters"), &schemas).unwrap();
        let adapter = adapters.get("nx-zwfw-approval").unwrap();
        let dir = repo.join("adapters/nx-zwfw/fixtures/nx-zwfw-approval");
        let mut checked = 0;
        for name in ["01-company.json", "02-batch.json"] {
            let body = std::fs::read(dir.join(name)).unwrap();
            let outcomes = pipeline::process(
                &adapter,
                &schemas,
                &body,
                None,
                None,
                pipeline::Unit::Body,
                now_shanghai(),
                100,
            )
            .unwrap();
            for o in outcomes {
                let Outcome::Accepted(c) = o else { continue };
                let seen = seen_from_event(&c.event).expect("a canonical record event");
                assert_eq!(seen.content_hash, c.content_hash);
                assert_eq!(seen.record_id, c.record_id);
                assert_eq!(seen.business_key, c.business_key);
                assert_eq!(seen.adapter, "nx-zwfw-approval");
                checked += 1;
            }
        }
        assert_eq!(checked, 3);
        // Anything else on a record topic is not mistaken for a record.
        assert!(seen_from_event(b"{\"id\":\"x\"}").is_none());
        assert!(seen_from_event(b"not json").is_none());
    }
}
