//! Database plumbing shared by every store of the gateway: how a SQLite file is opened and
//! checkpointed, and how a PostgreSQL pool is opened, its schema created and its errors worded.

use std::path::Path;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use rusqlite::Connection;
use tokio_postgres::NoTls;

/// Opens a SQLite database the way every store of the gateway does: parent directory created,
/// WAL journal, `synchronous=FULL` (a committed transaction survives power loss; the ledger,
/// which the bus can restore, relaxes it), a busy timeout so the CLI and the gateway can share
/// the file, a 64 MiB page cache and memory-mapped reads (the ledger's indexes are keyed by
/// random record ids: with SQLite's 2 MiB default nearly every insert read its pages back from
/// the kernel), and no automatic checkpoint (see [`Checkpointer`]). `page_size`, in bytes, is
/// that of a file this creates (SQLite's 4,096 when `None`); a file made before keeps its own.
pub fn sqlite_connect(
    path: &Path,
    page_size: Option<i64>,
) -> Result<Connection, Box<dyn std::error::Error + Send + Sync>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let conn = Connection::open(path)?;
    wait_when_busy(&conn)?;
    // Before the journal mode: a file in WAL mode keeps the page size it has.
    if let Some(bytes) = page_size {
        conn.pragma_update(None, "page_size", bytes)?;
    }
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "cache_size", -65536)?;
    conn.pragma_update(None, "mmap_size", 268_435_456)?;
    // Checkpoints run on a thread of their own (`Checkpointer`), not inside a commit.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    Ok(conn)
}

/// Makes a connection that finds the database locked try again every millisecond, for up to
/// about 10 s. SQLite's busy timeout sleeps 1, 2, 5, 10, … up to 100 ms between tries, so a
/// writer held back for a moment by a restart of the log ([`Checkpointer`]) could sleep on for
/// tens of milliseconds after the lock was free.
pub fn wait_when_busy(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_handler(Some(|tries| retry_within(tries, 10_000)))
}

std::thread_local! {
    /// How many milliseconds the restart of the log on this checkpoint thread may wait.
    static RESTART_WAIT_MS: std::cell::Cell<i32> = const { std::cell::Cell::new(0) };
}

/// The busy handler of a restart of the log that did not get its turn `refused` times in a
/// row: at most [`RESTART_WAIT`], doubled each time up to a second (a writer that commits in
/// long transactions must not keep the log from ever restarting), polled every millisecond.
fn wait_for_restart(conn: &Connection, refused: u32) -> rusqlite::Result<()> {
    let ms = (RESTART_WAIT.as_millis() as i32)
        .saturating_mul(1 << refused.min(6))
        .min(1000);
    RESTART_WAIT_MS.with(|w| w.set(ms));
    conn.busy_handler(Some(|tries| {
        retry_within(tries, RESTART_WAIT_MS.with(|w| w.get()))
    }))
}

/// Whether to try again after `tries` tries, sleeping a millisecond first: at most `most` tries.
fn retry_within(tries: i32, most: i32) -> bool {
    if tries >= most {
        return false;
    }
    std::thread::sleep(Duration::from_millis(1));
    true
}

/// How often a [`Checkpointer`] copies the write-ahead log back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// The write-ahead log a [`Checkpointer`] lets grow before it restarts the log: 256 MiB (65,536
/// pages of 4 KiB, 16,384 of the 16 KiB of a new bus or ledger file). A restart holds the
/// writer back while it copies what is left and syncs the database file, so it is kept rare:
/// with a limit of 64 MiB the ledger applied a burst of 40,000 records 8–14% slower.
const WAL_LIMIT_BYTES: i64 = 256 << 20;

/// The page size of a new ledger file (the SQLite ledger's tables and the gateway state's), in
/// bytes: 16 KiB. A row keeps its payload in its page, and on SQLite's 4 KiB pages the
/// ledger's largest rows left much of theirs empty: a logged record's event (1.3–1.8 KB) fits
/// two to a page with a quarter left over, and each leaf of the two FTS5 indexes of keys (4,050
/// bytes) takes a page of its own, which a merge visits one by one when it deletes the segment
/// — those deletes were 7.6% of the gateway's CPU taking 10,000 records/s. On 16 KiB pages the
/// ledger applies bursts of 300 records about a quarter faster (README, *Ledger pages of 16
/// KiB*). A file made before keeps its pages (docs/operations.md says how to convert one).
pub const LEDGER_PAGE_SIZE: i64 = 16_384;

/// How long a restart of the log waits for the writer and for the readers that still use it;
/// writers wait as long (at most this, once per [`WAL_LIMIT_BYTES`] of log), and a restart that
/// cannot get its turn is tried again at the next tick. The ledger's reads take milliseconds.
const RESTART_WAIT: Duration = Duration::from_millis(20);

/// Checkpoints a WAL database from a thread of its own, so that no commit waits for the log to
/// be copied back into the database file and that file to be synced: with SQLite's automatic
/// checkpoint, the commit that crosses 1,000 pages of log does it, and at 1,000 records/s those
/// commits were the slowest 1% of the path from ingest to a department's inbox. A passive
/// checkpoint works alongside writers and readers, but SQLite writes the log from its start
/// again only at a moment when no reader uses it, and under steady load (the projector, the
/// API, the tracker reading all the time) that moment may never come: at 10,000 records/s the
/// ledger's log grew to 8 GiB in a minute. So once the log is past a limit, the thread restarts it
/// itself (`wal_checkpoint(TRUNCATE)`, which waits briefly for the readers
/// of the old log). The connections that write to the file turn the automatic checkpoint off;
/// the thread stops when this is dropped.
pub struct Checkpointer {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    pub fn start(path: &Path) -> Result<Checkpointer, Box<dyn std::error::Error + Send + Sync>> {
        let page: i64 = Connection::open(path)?.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        Checkpointer::with_limit(path, WAL_LIMIT_BYTES / page.max(512))
    }

    fn with_limit(
        path: &Path,
        limit_pages: i64,
    ) -> Result<Checkpointer, Box<dyn std::error::Error + Send + Sync>> {
        let conn = Connection::open(path)?;
        wait_when_busy(&conn)?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let name = path.display().to_string();
        let wal = std::path::PathBuf::from(format!("{name}-wal"));
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                let (mut failing, mut ticks) = (false, Ticks::default());
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(CHECKPOINT_EVERY)
                {
                    match checkpoint(&conn, &wal, limit_pages, &mut ticks) {
                        Ok(()) => failing = false,
                        Err(e) if !failing => {
                            failing = true;
                            tracing::warn!(database = %name, error = %e, "WAL checkpoint failed; retrying");
                        }
                        Err(_) => {}
                    }
                }
            })?;
        Ok(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// What a [`Checkpointer`] remembers from one tick to the next.
#[derive(Default)]
struct Ticks {
    /// Ticks in a row whose restart of the log did not get its turn.
    refused: u32,
    /// The frames in the log and the frames copied back, after the last passive checkpoint.
    last: (i64, i64),
}

/// A log file left larger than this is cut back to nothing once the database is idle.
const IDLE_TRUNCATE_BYTES: u64 = 64 << 20;

/// One tick: a passive checkpoint, then, when the log is past `limit_pages`, a full one that
/// restarts the log, waiting at most [`RESTART_WAIT`] (more after ticks in a row whose restart
/// did not get its turn, see [`wait_for_restart`]) for the writer and the log's readers. The
/// restart leaves the file as it is, and writers write it again from its start: cutting a
/// 256 MiB file back (`TRUNCATE`) while holding the writer back made the restarts the slowest
/// 1% of the path from ingest to a department's inbox at 1,000 records/s (p99 56–127 ms against
/// 17–19 ms). The file is cut back instead when nothing was written since the last tick and
/// everything is copied back, if it is over [`IDLE_TRUNCATE_BYTES`].
fn checkpoint(
    conn: &Connection,
    wal: &Path,
    limit_pages: i64,
    ticks: &mut Ticks,
) -> rusqlite::Result<()> {
    let now: (i64, i64) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get(1)?, r.get(2)?))
    })?;
    let idle = now.0 == now.1 && now == ticks.last;
    ticks.last = now;
    if now.0 > limit_pages {
        wait_for_restart(conn, ticks.refused)?;
        // The first column is 1 when the writer or a reader kept the checkpoint from finishing.
        let busy = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get::<_, i64>(0));
        wait_when_busy(conn)?;
        if busy? == 0 {
            ticks.refused = 0;
        } else {
            ticks.refused = ticks.refused.saturating_add(1);
        }
    } else if idle && std::fs::metadata(wal).is_ok_and(|m| m.len() > IDLE_TRUNCATE_BYTES) {
        wait_for_restart(conn, 0)?;
        let cut = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        wait_when_busy(conn)?;
        cut?;
    }
    Ok(())
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Opens a connection pool and runs `schema` (idempotent DDL) (under an advisory lock, so instances
/// starting together do not race).
pub async fn pg_pool(url: &str, schema: &str) -> Result<Pool, String> {
    let config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| format!("bad PostgreSQL URL: {e}"))?;
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(8)
        .build()
        .map_err(|e| e.to_string())?;
    let mut client = pool
        .get()
        .await
        .map_err(|e| format!("cannot connect: {}", chain(&e)))?;
    let tx = client.transaction().await.map_err(|e| chain(&e))?;
    tx.execute("SELECT pg_advisory_xact_lock(7368656775)", &[])
        .await
        .map_err(|e| chain(&e))?;
    tx.batch_execute(schema).await.map_err(|e| chain(&e))?;
    tx.commit().await.map_err(|e| chain(&e))?;
    Ok(pool)
}

pub fn redact(url: &str) -> String {
    // postgres://user:password@host/db → postgres://user@host/db
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{}@{}", &url[..s + 3], user, &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

/// An error with its causes: tokio-postgres says only "db error" and keeps the server's message
/// in the source.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database in `dir` with a table `t (n, b)`, its log's path and a writer that does not
    /// sync.
    fn table_t(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, Connection) {
        let path = dir.join("t.db");
        let writer = sqlite_connect(&path, None).unwrap();
        writer.pragma_update(None, "synchronous", "OFF").unwrap();
        writer
            .execute_batch("CREATE TABLE t (n INTEGER PRIMARY KEY, b BLOB NOT NULL)")
            .unwrap();
        (path, dir.join("t.db-wal"), writer)
    }

    /// Readers that take turns, so that at every moment one of them holds a snapshot, while a
    /// writer commits 12 MiB over a few seconds: the log still stays near its limit.
    #[test]
    fn the_log_stays_bounded_while_readers_always_hold_it() {
        let dir = tempfile::tempdir().unwrap();
        let (path, wal, writer) = table_t(dir.path());
        let _checkpointer = Checkpointer::with_limit(&path, 256).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..2u64)
            .map(|i| {
                let (path, stop) = (path.clone(), stop.clone());
                std::thread::spawn(move || {
                    let conn = sqlite_connect(&path, None).unwrap();
                    std::thread::sleep(Duration::from_millis(3 * i));
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        conn.execute_batch("BEGIN").unwrap();
                        let _: i64 = conn
                            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
                            .unwrap();
                        std::thread::sleep(Duration::from_millis(6));
                        conn.execute_batch("COMMIT").unwrap();
                    }
                })
            })
            .collect();
        let mut largest = 0;
        for n in 0..3000 {
            writer
                .execute("INSERT INTO t VALUES (?1, zeroblob(4096))", [n])
                .unwrap();
            largest = largest.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
            if n % 2 == 0 {
                // A steady writer, over several of the checkpointer's ticks.
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for r in readers {
            r.join().unwrap();
        }
        // 3,000 rows of 4 KiB are over 36 MiB of log when nothing restarts it; restarted once
        // past 256 pages (1 MiB), it holds what a few of the checkpointer's ticks add.
        assert!(largest < 12 << 20, "the log grew to {largest} bytes");
    }

    /// A log left larger than 64 MiB by a burst is cut back to nothing once nothing is written,
    /// and not while the writer goes on.
    #[test]
    fn a_large_log_is_cut_back_once_the_database_is_idle() {
        let dir = tempfile::tempdir().unwrap();
        let (path, wal, writer) = table_t(dir.path());
        let _checkpointer = Checkpointer::with_limit(&path, i64::MAX).unwrap();
        writer.execute_batch("BEGIN").unwrap();
        for n in 0..18_000 {
            writer
                .execute("INSERT INTO t VALUES (?1, zeroblob(4096))", [n])
                .unwrap();
        }
        writer.execute_batch("COMMIT").unwrap();
        let size = || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        assert!(size() > IDLE_TRUNCATE_BYTES, "{} bytes of log", size());
        // Still written to: a row every 50 ms, more often than the checkpointer's ticks.
        for n in 0..20 {
            writer
                .execute("INSERT INTO t VALUES (?1, x'00')", [100_000 + n])
                .unwrap();
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(size() > IDLE_TRUNCATE_BYTES, "cut back while written to");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while size() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "{} bytes of log left",
                size()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let rows: i64 = writer
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 18_020);
    }
}
