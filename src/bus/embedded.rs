//! The embedded bus: topics as SQLite tables, for a single gateway on one machine.
//!
//! One writer thread owns the write connection and commits whatever batches are waiting in a
//! single transaction (group commit): a burst of small publishes costs one fsync, not one each.
//! `synchronous=FULL` in WAL mode makes an acknowledged publish survive power loss. Offsets are
//! assigned inside the write transaction from the table itself, so another process (the `dlq
//! replay` command) can publish to the same file safely. Readers use their own connections and
//! are woken by the writer; they also poll, which picks up other processes' writes.
//!
//! Messages are rows of an ordinary (rowid) table, found by their `(topic, offset)` key in an
//! index of its own. A canonical event is 1.5–2 KB, more than a row of a `WITHOUT ROWID` table
//! keeps in its page (about 1,000 bytes on 4 KiB pages): there each message put its tail in an
//! overflow page of its own, and the bus wrote 4.7 KB for an event of 1.8 KB (100,000 such
//! messages: 468 MB against 209 MB, written in 2.2 times the time). A bus file written before
//! keeps its layout, which reads and writes the same way.
//!
//! A new bus file has pages of 16 KiB. A row keeps its whole message in its page, so on pages of
//! 4 KiB an event of 2.0–2.2 KB took a page of its own (the peer job's 1.3 KB records: 4.9 GB of
//! bus for 1.2 million); 16 KiB pages hold seven. A file made before keeps the page size it
//! was made with (SQLite sets it when the file is created).
//!
//! Each message row keeps its headers as a JSON array of `[name, value]` pairs. A bus file from
//! before headers were kept gets the column when it is opened (its old rows read back with no
//! headers), so an existing data directory opens as it is.

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::{oneshot, Notify};

use super::{Bus, BusError, Delivery, Message, Positions, Subscription};

type Reply = oneshot::Sender<Result<(), BusError>>;
/// A publish waiting for the writer: the messages and where to send the outcome.
type Pending = (Vec<Message>, Reply);

/// The most batches one transaction commits together.
const GROUP_COMMIT_MAX: usize = 256;
/// How often a waiting subscription looks for messages written by another process.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Messages a subscription fetches per query.
const FETCH: i64 = 512;
/// The page size of a new bus file, in bytes (see the module's notes on pages).
const PAGE_SIZE: i64 = 16_384;

pub struct EmbeddedBus {
    path: PathBuf,
    writer: Mutex<Option<mpsc::Sender<Pending>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    notify: Arc<Notify>,
    _checkpointer: crate::db::Checkpointer,
}

fn unavailable(e: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(e.to_string())
}

fn connect(path: &Path) -> Result<Connection, BusError> {
    let conn =
        Connection::open(path).map_err(|e| BusError::Fatal(format!("{}: {e}", path.display())))?;
    crate::db::wait_when_busy(&conn).map_err(unavailable)?;
    // Takes effect only when the file is created (see the module's notes on pages).
    conn.pragma_update(None, "page_size", PAGE_SIZE)
        .map_err(unavailable)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(unavailable)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(unavailable)?;
    // The bus's `Checkpointer` checkpoints; commits do not.
    conn.pragma_update(None, "wal_autocheckpoint", 0)
        .map_err(unavailable)?;
    Ok(conn)
}

impl EmbeddedBus {
    pub fn open(path: &Path) -> Result<EmbeddedBus, BusError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| BusError::Fatal(format!("{}: {e}", dir.display())))?;
        }
        let conn = connect(path)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS bus_topics (topic TEXT PRIMARY KEY, next_offset INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS bus_messages (
                 topic TEXT NOT NULL, offset INTEGER NOT NULL, key TEXT, payload BLOB NOT NULL,
                 ts INTEGER NOT NULL, headers TEXT, PRIMARY KEY (topic, offset));
             CREATE TABLE IF NOT EXISTS bus_group_offsets (
                 group_id TEXT NOT NULL, topic TEXT NOT NULL, next_offset INTEGER NOT NULL,
                 PRIMARY KEY (group_id, topic)) WITHOUT ROWID;",
        )
        .map_err(|e| BusError::Fatal(format!("{}: {e}", path.display())))?;
        add_headers_column(&conn).map_err(|e| {
            BusError::Fatal(format!(
                "{}: adding the headers column: {e}",
                path.display()
            ))
        })?;
        let (tx, rx) = mpsc::channel::<Pending>();
        let notify = Arc::new(Notify::new());
        let wake = notify.clone();
        let thread = std::thread::Builder::new()
            .name("embedded-bus-writer".into())
            .spawn(move || writer_loop(conn, rx, wake))
            .map_err(|e| BusError::Fatal(e.to_string()))?;
        Ok(EmbeddedBus {
            path: path.to_path_buf(),
            writer: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            notify,
            _checkpointer: crate::db::Checkpointer::start(path)
                .map_err(|e| BusError::Fatal(format!("{}: {e}", path.display())))?,
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, BusError> + Send + 'static,
    ) -> Result<T, BusError> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || f(&connect(&path)?))
            .await
            .map_err(|e| BusError::Fatal(e.to_string()))?
    }
}

impl Drop for EmbeddedBus {
    fn drop(&mut self) {
        // Closing the channel lets the writer finish what is queued and stop.
        self.writer.lock().expect("writer lock").take();
        if let Some(t) = self.thread.lock().expect("thread lock").take() {
            let _ = t.join();
        }
    }
}

/// Migrates a bus file written before messages kept their headers. The check and the change run
/// in one write transaction, so two processes opening the same old file do not both add it.
fn add_headers_column(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let result = (|| {
        let has: bool = conn.query_row(
            "SELECT COUNT(*) > 0 FROM pragma_table_info('bus_messages') WHERE name = 'headers'",
            [],
            |r| r.get(0),
        )?;
        if !has {
            conn.execute_batch("ALTER TABLE bus_messages ADD COLUMN headers TEXT")?;
        }
        Ok(())
    })();
    conn.execute_batch(if result.is_ok() { "COMMIT" } else { "ROLLBACK" })?;
    result
}

fn encode_headers(headers: &super::Headers) -> String {
    serde_json::to_string(headers).expect("headers serialise")
}

fn decode_headers(text: Option<String>) -> rusqlite::Result<super::Headers> {
    match text {
        None => Ok(Vec::new()),
        Some(t) => serde_json::from_str(&t).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(
                5,
                rusqlite::types::Type::Text,
                format!("unreadable message headers {t:?}: {e}").into(),
            )
        }),
    }
}

fn writer_loop(mut conn: Connection, rx: mpsc::Receiver<Pending>, notify: Arc<Notify>) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < GROUP_COMMIT_MAX {
            match rx.try_recv() {
                Ok(more) => group.push(more),
                Err(_) => break,
            }
        }
        let result = write_group(&mut conn, &group).map_err(unavailable);
        for (_, reply) in group {
            let _ = reply.send(result.clone());
        }
        notify.notify_waiters();
    }
}

fn write_group(conn: &mut Connection, group: &[Pending]) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        let now = chrono::Utc::now().timestamp_millis();
        let mut next_of = tx.prepare_cached(
            "SELECT COALESCE((SELECT next_offset FROM bus_topics WHERE topic = ?1),
                             (SELECT MAX(offset) + 1 FROM bus_messages WHERE topic = ?1), 0)",
        )?;
        let mut insert =
            tx.prepare_cached("INSERT INTO bus_messages (topic, offset, key, payload, ts, headers) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?;
        let mut next: std::collections::HashMap<&str, i64> = std::collections::HashMap::new();
        for (batch, _) in group {
            for m in batch {
                let offset = match next.get_mut(m.topic.as_str()) {
                    Some(o) => o,
                    None => {
                        let start: i64 = next_of.query_row([&m.topic], |r| r.get(0))?;
                        next.entry(m.topic.as_str()).or_insert(start)
                    }
                };
                insert.execute(params![
                    m.topic,
                    *offset,
                    m.key,
                    m.payload,
                    now,
                    encode_headers(&m.headers())
                ])?;
                *offset += 1;
            }
        }
        let mut save = tx.prepare_cached(
            "INSERT INTO bus_topics (topic, next_offset) VALUES (?1, ?2)
             ON CONFLICT (topic) DO UPDATE SET next_offset = excluded.next_offset",
        )?;
        for (topic, offset) in next {
            save.execute(params![topic, offset])?;
        }
    }
    tx.commit()
}

fn read(conn: &Connection, topic: &str, from: i64, limit: i64) -> Result<Vec<Delivery>, BusError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT offset, key, payload, ts, headers FROM bus_messages WHERE topic = ?1 AND offset >= ?2 ORDER BY offset LIMIT ?3",
        )
        .map_err(unavailable)?;
    let rows = stmt
        .query_map(params![topic, from, limit], |r| {
            Ok(Delivery {
                topic: topic.to_string(),
                partition: 0,
                offset: r.get(0)?,
                key: r.get(1)?,
                payload: r.get(2)?,
                timestamp_ms: r.get(3)?,
                headers: decode_headers(r.get(4)?)?,
            })
        })
        .map_err(unavailable)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)
}

#[async_trait]
impl Bus for EmbeddedBus {
    fn describe(&self) -> String {
        format!("embedded ({})", self.path.display())
    }

    async fn ensure_topics(&self, topics: &[String]) -> Result<(), BusError> {
        let topics = topics.to_vec();
        self.blocking(move |conn| {
            for t in topics {
                conn.execute(
                    "INSERT INTO bus_topics (topic, next_offset) VALUES (?1,
                        COALESCE((SELECT MAX(offset) + 1 FROM bus_messages WHERE topic = ?1), 0))
                     ON CONFLICT (topic) DO NOTHING",
                    [t],
                )
                .map_err(unavailable)?;
            }
            Ok(())
        })
        .await
    }

    async fn publish(&self, batch: Vec<Message>) -> Result<(), BusError> {
        if batch.is_empty() {
            return Ok(());
        }
        let (reply, done) = oneshot::channel();
        {
            let writer = self.writer.lock().expect("writer lock");
            let tx = writer
                .as_ref()
                .ok_or_else(|| BusError::Unavailable("bus is closed".into()))?;
            tx.send((batch, reply))
                .map_err(|_| BusError::Unavailable("bus writer stopped".into()))?;
        }
        done.await
            .map_err(|_| BusError::Unavailable("bus writer stopped".into()))?
    }

    async fn retain(&self, topic: &str, max_age: Duration) -> Result<u64, BusError> {
        let topic = topic.to_string();
        let cutoff = chrono::Utc::now().timestamp_millis()
            - i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
        self.blocking(move |conn| {
            conn.execute(
                "DELETE FROM bus_messages WHERE topic = ?1 AND ts < ?2",
                params![topic, cutoff],
            )
            .map(|n| n as u64)
            .map_err(unavailable)
        })
        .await
    }

    async fn read_all(&self, topic: &str) -> Result<Vec<Delivery>, BusError> {
        let topic = topic.to_string();
        self.blocking(move |conn| read(conn, &topic, 0, i64::MAX))
            .await
    }

    async fn subscribe(
        &self,
        group: &str,
        topics: &[String],
    ) -> Result<Box<dyn Subscription>, BusError> {
        let path = self.path.clone();
        let group_id = group.to_string();
        let topic_list = topics.to_vec();
        let (conn, positions) = tokio::task::spawn_blocking(move || -> Result<_, BusError> {
            let conn = connect(&path)?;
            let mut positions = Vec::new();
            for t in &topic_list {
                let pos: Option<i64> = conn
                    .query_row(
                        "SELECT next_offset FROM bus_group_offsets WHERE group_id = ?1 AND topic = ?2",
                        params![group_id, t],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(unavailable)?;
                positions.push((t.clone(), pos.unwrap_or(0)));
            }
            Ok((conn, positions))
        })
        .await
        .map_err(|e| BusError::Fatal(e.to_string()))??;
        Ok(Box::new(EmbeddedSubscription {
            conn: Arc::new(Mutex::new(conn)),
            group: group.to_string(),
            positions,
            buffer: std::collections::VecDeque::new(),
            notify: self.notify.clone(),
        }))
    }

    async fn assign(
        &self,
        topics: &[String],
        positions: &Positions,
    ) -> Result<Box<dyn Subscription>, BusError> {
        let path = self.path.clone();
        let conn = tokio::task::spawn_blocking(move || connect(&path))
            .await
            .map_err(|e| BusError::Fatal(e.to_string()))??;
        Ok(Box::new(EmbeddedSubscription {
            conn: Arc::new(Mutex::new(conn)),
            group: String::new(),
            positions: topics
                .iter()
                .map(|t| {
                    (
                        t.clone(),
                        positions.get(&(t.clone(), 0)).copied().unwrap_or(0),
                    )
                })
                .collect(),
            buffer: std::collections::VecDeque::new(),
            notify: self.notify.clone(),
        }))
    }

    async fn end_offsets(&self, topics: &[String]) -> Result<Positions, BusError> {
        let topics = topics.to_vec();
        self.blocking(move |conn| {
            let mut out = Positions::new();
            for t in topics {
                let next: i64 = conn
                    .query_row(
                        "SELECT COALESCE((SELECT next_offset FROM bus_topics WHERE topic = ?1),
                                         (SELECT MAX(offset) + 1 FROM bus_messages WHERE topic = ?1), 0)",
                        [&t],
                        |r| r.get(0),
                    )
                    .map_err(unavailable)?;
                out.insert((t, 0), next);
            }
            Ok(out)
        })
        .await
    }

    async fn ready(&self) -> Result<(), BusError> {
        if self.writer.lock().expect("writer lock").is_some() {
            Ok(())
        } else {
            Err(BusError::Unavailable("bus is closed".into()))
        }
    }

    async fn flush(&self, _timeout: Duration) -> Result<(), BusError> {
        // Every publish already waited for its commit.
        Ok(())
    }
}

struct EmbeddedSubscription {
    conn: Arc<Mutex<Connection>>,
    group: String,
    /// Next offset to read per topic.
    positions: Vec<(String, i64)>,
    buffer: std::collections::VecDeque<Delivery>,
    notify: Arc<Notify>,
}

impl EmbeddedSubscription {
    async fn fill(&mut self) -> Result<(), BusError> {
        let conn = self.conn.clone();
        let positions = self.positions.clone();
        let fetched = tokio::task::spawn_blocking(move || -> Result<Vec<Delivery>, BusError> {
            let conn = conn.lock().expect("subscription connection");
            let mut out = Vec::new();
            for (topic, from) in &positions {
                out.extend(read(&conn, topic, *from, FETCH)?);
            }
            Ok(out)
        })
        .await
        .map_err(|e| BusError::Fatal(e.to_string()))??;
        for d in fetched {
            if let Some(p) = self.positions.iter_mut().find(|(t, _)| *t == d.topic) {
                p.1 = p.1.max(d.offset + 1);
            }
            self.buffer.push_back(d);
        }
        Ok(())
    }
}

#[async_trait]
impl Subscription for EmbeddedSubscription {
    async fn next(&mut self, wait: Duration) -> Result<Option<Delivery>, BusError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(d) = self.buffer.pop_front() {
                return Ok(Some(d));
            }
            // Register for the wake-up before looking, so a write in between is not missed.
            let notify = self.notify.clone();
            let notified = notify.notified();
            self.fill().await?;
            if !self.buffer.is_empty() {
                continue;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let nap = (deadline - now).min(POLL_INTERVAL);
            let _ = tokio::time::timeout(nap, notified).await;
        }
    }

    async fn commit(&mut self, delivery: &Delivery) -> Result<(), BusError> {
        if self.group.is_empty() {
            // An assigned subscription: the caller keeps the positions.
            return Ok(());
        }
        let conn = self.conn.clone();
        let (group, topic, next) = (
            self.group.clone(),
            delivery.topic.clone(),
            delivery.offset + 1,
        );
        tokio::task::spawn_blocking(move || {
            conn.lock()
                .expect("subscription connection")
                .execute(
                    "INSERT INTO bus_group_offsets (group_id, topic, next_offset) VALUES (?1, ?2, ?3)
                     ON CONFLICT (group_id, topic) DO UPDATE SET next_offset = MAX(next_offset, excluded.next_offset)",
                    params![group, topic, next],
                )
                .map(|_| ())
                .map_err(unavailable)
        })
        .await
        .map_err(|e| BusError::Fatal(e.to_string()))?
    }
}
