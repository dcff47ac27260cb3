//! The SQLite dialect of the ledger (the default, `sqlite:<data_dir>/ledger.db`): one connection
//! for writes, one read-only connection for queries (in WAL mode it reads the last commit while
//! a write is in progress, so a department's inbox does not wait for the projector's next
//! batch), both used from blocking threads, and a thread of its own that checkpoints the
//! write-ahead log.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::future::BoxFuture;
use rusqlite::functions::FunctionFlags;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::Connection;

use super::error::LedgerError;
use super::exec::{sqlite_placeholders, Cell, DbError, Dialect, Exec, Insert, Param, Rows};
use super::known::KnownIds;

impl rusqlite::ToSql for Param {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Param::Int(Some(i)) => ToSqlOutput::from(*i),
            Param::Text(Some(t)) => ToSqlOutput::Borrowed(ValueRef::Text(t.as_bytes())),
            Param::Real(Some(r)) => ToSqlOutput::from(*r),
            _ => ToSqlOutput::Borrowed(ValueRef::Null),
        })
    }
}

fn db(e: rusqlite::Error) -> DbError {
    DbError::Db(e.to_string())
}

/// Statements on one SQLite connection.
pub struct SqliteExec<'a> {
    pub conn: &'a mut Connection,
    pub known: &'a KnownIds,
}

impl SqliteExec<'_> {
    fn query_now(&mut self, sql: &str, params: &[Param]) -> Result<Rows, DbError> {
        let sql = sqlite_placeholders(sql);
        let mut stmt = self.conn.prepare_cached(&sql).map_err(db)?;
        let columns: Arc<[String]> = stmt.column_names().into_iter().map(String::from).collect();
        let n = columns.len();
        let mut rows = stmt
            .query(rusqlite::params_from_iter(params.iter()))
            .map_err(db)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(db)? {
            let mut cells = Vec::with_capacity(n);
            for i in 0..n {
                cells.push(match r.get_ref(i).map_err(db)? {
                    ValueRef::Null => Cell::Null,
                    ValueRef::Integer(v) => Cell::Int(v),
                    ValueRef::Real(v) => Cell::Real(v),
                    ValueRef::Text(t) | ValueRef::Blob(t) => Cell::Text(
                        String::from_utf8(t.to_vec())
                            .map_err(|_| DbError::Db(format!("column {i} is not UTF-8")))?,
                    ),
                });
            }
            out.push(cells);
        }
        Ok(Rows { columns, rows: out })
    }

    fn execute_now(&mut self, sql: &str, params: &[Param]) -> Result<u64, DbError> {
        let sql = sqlite_placeholders(sql);
        let mut stmt = self.conn.prepare_cached(&sql).map_err(db)?;
        stmt.execute(rusqlite::params_from_iter(params.iter()))
            .map(|n| n as u64)
            .map_err(db)
    }
}

#[async_trait]
impl Exec for SqliteExec<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    async fn query(&mut self, sql: &str, params: Vec<Param>) -> Result<Rows, DbError> {
        self.query_now(sql, &params)
    }

    async fn execute(&mut self, sql: &str, params: Vec<Param>) -> Result<u64, DbError> {
        self.execute_now(sql, &params)
    }

    async fn insert_rows(&mut self, inserts: Vec<Insert>) -> Result<(), DbError> {
        for Insert { table, rows, tail } in inserts {
            if rows.is_empty() {
                continue;
            }
            let placeholders: Vec<String> =
                (1..=table.columns.len()).map(|i| format!("?{i}")).collect();
            let sql = format!(
                "INSERT INTO {} ({}) VALUES ({}) {tail}",
                table.name,
                table.column_list(),
                placeholders.join(", ")
            );
            let mut stmt = self.conn.prepare_cached(&sql).map_err(db)?;
            for row in &rows {
                stmt.execute(rusqlite::params_from_iter(row.iter()))
                    .map_err(db)?;
            }
        }
        Ok(())
    }

    async fn script(&mut self, sql: &str) -> Result<(), DbError> {
        self.conn.execute_batch(sql).map_err(db)
    }

    fn known_ids(&self) -> Option<&KnownIds> {
        Some(self.known)
    }
}

/// Adds to `known` the ids numbered after the last it holds (all of them when the ledger is
/// opened; those another process numbered, in a write transaction), in pieces
/// ([`super::sql::PIECE`]).
async fn catch_up(ex: &mut dyn Exec, known: &KnownIds) -> Result<(), DbError> {
    let Some(mut after) = known.numbered() else {
        return Ok(());
    };
    let last = ex
        .query("SELECT COALESCE(MAX(seq), 0) AS n FROM ledger_ids", vec![])
        .await?
        .first_int("ledger_ids", "n")?;
    // Below it: numbers given in a transaction that was rolled back, given again from here.
    if last <= after {
        known.set_numbered(last);
        return Ok(());
    }
    loop {
        let rows = ex
            .query(
                &format!(
                    "SELECT seq, record_id FROM ledger_ids WHERE seq > $1 ORDER BY seq LIMIT {}",
                    super::sql::PIECE
                ),
                vec![after.into()],
            )
            .await?;
        let mut ids = Vec::new();
        for row in rows.iter("ledger_ids") {
            after = row.int("seq")?;
            ids.push(row.text("record_id")?);
        }
        if ids.is_empty() {
            break;
        }
        known.add(ids.iter().map(String::as_str));
    }
    known.set_numbered(after);
    Ok(())
}

/// Opens a connection to the ledger's file, with the function `id_term` its statements use
/// ([`super::sql::id_term`]).
fn connect(path: &Path) -> Result<Connection, Box<dyn std::error::Error + Send + Sync>> {
    let conn = crate::db::sqlite_connect(path, Some(crate::db::LEDGER_PAGE_SIZE))?;
    conn.create_scalar_function(
        "id_term",
        1,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| Ok(super::sql::id_term(&ctx.get::<String>(0)?)),
    )?;
    Ok(conn)
}

/// The SQLite ledger's connections.
pub struct SqliteDb {
    pub path: PathBuf,
    writer: Arc<Mutex<Connection>>,
    reader: Arc<Mutex<Connection>>,
    /// The record ids numbered, filled when the schema is prepared.
    pub known: Arc<KnownIds>,
    _checkpointer: crate::db::Checkpointer,
}

impl SqliteDb {
    /// Opens (creating when `create`) the database file; the schema is the caller's.
    pub fn open(path: &Path) -> Result<SqliteDb, LedgerError> {
        let err = |e: &dyn std::fmt::Display| LedgerError::new(path.display(), e.to_string());
        let conn = connect(path).map_err(|e| err(&e))?;
        // A projection: positions commit with what they applied, so what a power loss takes
        // back the projector applies again from the bus.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| err(&e))?;
        let reader = connect(path).map_err(|e| err(&e))?;
        reader
            .pragma_update(None, "query_only", true)
            .map_err(|e| err(&e))?;
        Ok(SqliteDb {
            path: path.to_path_buf(),
            writer: Arc::new(Mutex::new(conn)),
            reader: Arc::new(Mutex::new(reader)),
            known: Arc::default(),
            _checkpointer: crate::db::Checkpointer::start(path).map_err(|e| err(&e))?,
        })
    }

    fn error(&self, e: DbError) -> LedgerError {
        LedgerError::new(self.path.display(), e.to_string())
    }

    async fn on<T, F>(&self, conn: Arc<Mutex<Connection>>, tx: bool, f: F) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: for<'e> FnOnce(&'e mut dyn Exec) -> BoxFuture<'e, Result<T, DbError>> + Send + 'static,
    {
        let known = self.known.clone();
        let result = tokio::task::spawn_blocking(move || -> Result<T, DbError> {
            let mut conn = conn
                .lock()
                .map_err(|_| DbError::Db("connection lock poisoned".into()))?;
            if tx {
                conn.execute_batch("BEGIN IMMEDIATE").map_err(db)?;
            }
            let mut exec = SqliteExec {
                conn: &mut conn,
                known: &known,
            };
            let result = futures::executor::block_on(async {
                if tx && known.numbered().is_some() {
                    catch_up(&mut exec, &known).await?;
                }
                f(&mut exec).await
            });
            if tx {
                let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
                if let Err(e) = conn.execute_batch(end) {
                    if result.is_ok() {
                        return Err(db(e));
                    }
                }
            }
            result
        })
        .await
        .map_err(|e| self.error(DbError::Db(format!("ledger task failed: {e}"))))?;
        result.map_err(|e| self.error(e))
    }

    /// Runs `f` in one write transaction.
    pub async fn write<T, F>(&self, f: F) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: for<'e> FnOnce(&'e mut dyn Exec) -> BoxFuture<'e, Result<T, DbError>> + Send + 'static,
    {
        self.on(self.writer.clone(), true, f).await
    }

    /// Runs `f` on the read-only connection.
    pub async fn read<T, F>(&self, f: F) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: for<'e> FnOnce(&'e mut dyn Exec) -> BoxFuture<'e, Result<T, DbError>> + Send + 'static,
    {
        self.on(self.reader.clone(), false, f).await
    }

    /// The schema: created, or migrated from an earlier version (see `store::migrate`), and
    /// the record ids numbered read into [`SqliteDb::known`]. Runs on the write connection,
    /// outside a transaction for the DDL that needs it.
    pub async fn prepare(&self) -> Result<(), LedgerError> {
        self.write(|ex| Box::pin(super::sql::migrate(ex))).await?;
        let known = self.known.clone();
        self.on(self.writer.clone(), false, move |ex| {
            Box::pin(async move {
                known.set_numbered(0);
                catch_up(ex, &known).await
            })
        })
        .await?;
        // Keep the planner's statistics fresh for the partial indexes.
        self.on(self.writer.clone(), false, |ex| {
            Box::pin(async move { ex.script("PRAGMA optimize=0x10002").await })
        })
        .await
    }
}
