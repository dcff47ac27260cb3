//! The gateway state in SQLite, the single-machine default: tables of their own in the ledger's
//! file (`<data_dir>/ledger.db`), whose pages are the ledger's ([`crate::db::LEDGER_PAGE_SIZE`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

use super::*;
use crate::db::{sqlite_connect, Checkpointer, LEDGER_PAGE_SIZE};

/// SQLite implementation (the default, `sqlite:<data_dir>/ledger.db`).
pub struct SqliteState {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
    _checkpointer: Checkpointer,
}

impl SqliteState {
    pub fn open(path: &Path) -> Result<SqliteState, StateError> {
        let err = |e: &dyn std::fmt::Display| StateError {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        let conn = sqlite_connect(path, Some(LEDGER_PAGE_SIZE)).map_err(|e| err(&e))?;
        // Small tables and an append-only log: the ledger's 64 MiB page cache would only hold
        // the log's pages, written once, in the process's memory (4 MiB).
        conn.pragma_update(None, "cache_size", -4096)
            .map_err(|e| err(&e))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS ingest_seen (
                 adapter TEXT NOT NULL, business_key TEXT NOT NULL, content_hash TEXT NOT NULL,
                 record_id TEXT NOT NULL, updated_at TEXT NOT NULL,
                 PRIMARY KEY (adapter, business_key)) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS ingest_dedup (seq INTEGER PRIMARY KEY, entries BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS ingest_activity (
                 adapter TEXT PRIMARY KEY, records INTEGER NOT NULL, last_at TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS auth_tokens (
                 id TEXT PRIMARY KEY, role TEXT NOT NULL, subject TEXT NOT NULL,
                 sha256 BLOB NOT NULL UNIQUE, created_at TEXT NOT NULL, revoked_at TEXT);
             CREATE TABLE IF NOT EXISTS audit_log (
                 seq INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, actor TEXT NOT NULL,
                 action TEXT NOT NULL, target TEXT NOT NULL, detail TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS source_checkpoints (
                 source TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS dlq_replays (
                 dlq_id TEXT PRIMARY KEY, outcome TEXT NOT NULL, replayed_at TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS liaisons (
                 department TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS console_users (
                 id TEXT PRIMARY KEY, login TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
                 role TEXT NOT NULL, department TEXT, password_hash TEXT NOT NULL,
                 must_change INTEGER NOT NULL, failed_logins INTEGER NOT NULL DEFAULT 0,
                 locked_until INTEGER, disabled INTEGER NOT NULL DEFAULT 0,
                 created_at INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS console_sessions (
                 id TEXT PRIMARY KEY, secret_sha256 BLOB NOT NULL, user_id TEXT NOT NULL,
                 created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL,
                 idle_until INTEGER NOT NULL);
             CREATE INDEX IF NOT EXISTS console_sessions_user ON console_sessions (user_id);",
        )
        .map_err(|e| err(&e))?;
        Ok(SqliteState {
            path: path.to_path_buf(),
            conn: Arc::new(Mutex::new(conn)),
            _checkpointer: Checkpointer::start(path).map_err(|e| err(&e))?,
        })
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StateError> {
        let conn = self.conn.clone();
        let path = self.path.display().to_string();
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().expect("state connection");
            f(&mut conn)
        })
        .await
        .map_err(|e| StateError {
            path: path.clone(),
            message: e.to_string(),
        })?
        .map_err(|e| StateError {
            path,
            message: e.to_string(),
        })
    }
}

const USER_COLUMNS: &str = "id, login, name, role, department, password_hash, must_change, \
     failed_logins, locked_until, disabled, created_at";

fn user_row(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<UserRow> {
    Ok(UserRow {
        id: r.get(at)?,
        login: r.get(at + 1)?,
        name: r.get(at + 2)?,
        role: r.get(at + 3)?,
        department: r.get(at + 4)?,
        password_hash: r.get(at + 5)?,
        must_change: r.get(at + 6)?,
        failed_logins: r.get(at + 7)?,
        locked_until: r.get(at + 8)?,
        disabled: r.get(at + 9)?,
        created_at: r.get(at + 10)?,
    })
}

fn hash32(bytes: Vec<u8>, column: usize) -> rusqlite::Result<[u8; 32]> {
    bytes.try_into().map_err(|b: Vec<u8>| {
        rusqlite::Error::FromSqlConversionFailure(
            column,
            rusqlite::types::Type::Blob,
            format!("a 32-byte hash, found {} bytes", b.len()).into(),
        )
    })
}

#[async_trait]
impl StateStore for SqliteState {
    async fn last_hashes(
        &self,
        adapter: &str,
        keys: Vec<String>,
    ) -> Result<Vec<Option<String>>, StateError> {
        let adapter = adapter.to_string();
        self.with(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT content_hash FROM ingest_seen WHERE adapter = ?1 AND business_key = ?2",
            )?;
            keys.iter()
                .map(|k| stmt.query_row(params![adapter, k], |r| r.get(0)).optional())
                .collect()
        })
        .await
    }

    async fn remember(&self, seen: Vec<Seen>) -> Result<(), StateError> {
        if seen.is_empty() {
            return Ok(());
        }
        self.with(move |conn| {
            let tx = conn.transaction()?;
            {
                let now = chrono::Utc::now().to_rfc3339();
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO ingest_seen (adapter, business_key, content_hash, record_id, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (adapter, business_key) DO UPDATE
                     SET content_hash = excluded.content_hash, updated_at = excluded.updated_at",
                )?;
                for s in &seen {
                    stmt.execute(params![s.adapter, s.business_key, s.content_hash, s.record_id, now])?;
                }
            }
            tx.commit()
        })
        .await
    }

    async fn seen_page(
        &self,
        after: (String, String),
        limit: usize,
    ) -> Result<Vec<Seen>, StateError> {
        self.with(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT adapter, business_key, content_hash, record_id FROM ingest_seen
                 WHERE (adapter, business_key) > (?1, ?2) ORDER BY adapter, business_key LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![after.0, after.1, limit as i64], |r| {
                Ok(Seen {
                    adapter: r.get(0)?,
                    business_key: r.get(1)?,
                    content_hash: r.get(2)?,
                    record_id: r.get(3)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn dedup_append(
        &self,
        entries: Vec<u8>,
        activity: Vec<AdapterActivity>,
    ) -> Result<(), StateError> {
        self.with(move |conn| {
            let tx = conn.transaction()?;
            tx.execute("INSERT INTO ingest_dedup (entries) VALUES (?1)", [&entries])?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO ingest_activity (adapter, records, last_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (adapter) DO UPDATE SET records = records + excluded.records,
                     last_at = MAX(last_at, excluded.last_at)",
                )?;
                for a in &activity {
                    stmt.execute(params![a.adapter, a.records as i64, a.last_at])?;
                }
            }
            tx.commit()
        })
        .await
    }

    async fn dedup_log(&self, after: i64, limit: usize) -> Result<Vec<(i64, Vec<u8>)>, StateError> {
        self.with(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, entries FROM ingest_dedup WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows =
                stmt.query_map(params![after, limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
        .await
    }

    async fn dedup_compact(&self, upto: i64, pieces: Vec<Vec<u8>>) -> Result<(), StateError> {
        self.with(move |conn| {
            let tx = conn.transaction()?;
            tx.execute("DELETE FROM ingest_dedup WHERE seq <= ?1", [upto])?;
            let first = upto - pieces.len() as i64 + 1;
            for (i, p) in pieces.iter().enumerate() {
                tx.execute(
                    "INSERT INTO ingest_dedup (seq, entries) VALUES (?1, ?2)",
                    params![first + i as i64, p],
                )?;
            }
            tx.commit()
        })
        .await
    }

    async fn tokens(&self) -> Result<Vec<TokenRow>, StateError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, role, subject, sha256 FROM auth_tokens WHERE revoked_at IS NULL",
            )?;
            let rows = stmt.query_map([], |r| {
                let hash: Vec<u8> = r.get(3)?;
                let mut sha256 = [0u8; 32];
                if hash.len() == 32 {
                    sha256.copy_from_slice(&hash);
                }
                Ok(TokenRow {
                    id: r.get(0)?,
                    role: r.get(1)?,
                    subject: r.get(2)?,
                    sha256,
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        detail: serde_json::Value,
    ) -> Result<(), StateError> {
        let (actor, action, target) = (actor.to_string(), action.to_string(), target.to_string());
        self.with(move |conn| {
            conn.execute(
                "INSERT INTO audit_log (at, actor, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![chrono::Utc::now().to_rfc3339(), actor, action, target, detail.to_string()],
            )
            .map(|_| ())
        })
        .await
    }

    async fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>, StateError> {
        self.with(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT at, actor, action, target, detail FROM audit_log ORDER BY seq DESC LIMIT {limit}"
            ))?;
            let rows = stmt.query_map([], |r| {
                let detail: String = r.get(4)?;
                Ok(AuditEntry {
                    at: r.get(0)?,
                    actor: r.get(1)?,
                    action: r.get(2)?,
                    target: r.get(3)?,
                    detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn token_list(&self) -> Result<Vec<TokenInfo>, StateError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached("SELECT id, role, subject, created_at, revoked_at FROM auth_tokens ORDER BY created_at")?;
            let rows = stmt.query_map([], |r| {
                Ok(TokenInfo { id: r.get(0)?, role: r.get(1)?, subject: r.get(2)?, created_at: r.get(3)?, revoked_at: r.get(4)? })
            })?;
            rows.collect()
        })
        .await
    }

    async fn revoke_token(&self, id: &str) -> Result<bool, StateError> {
        let id = id.to_string();
        self.with(move |conn| {
            conn.execute(
                "UPDATE auth_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                params![id, chrono::Utc::now().to_rfc3339()],
            )
            .map(|n| n == 1)
        })
        .await
    }

    async fn add_token(&self, row: TokenRow) -> Result<(), StateError> {
        self.with(move |conn| {
            conn.execute(
                "INSERT INTO auth_tokens (id, role, subject, sha256, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![row.id, row.role, row.subject, row.sha256.to_vec(), chrono::Utc::now().to_rfc3339()],
            )
            .map(|_| ())
        })
        .await
    }

    async fn replay_outcomes(
        &self,
    ) -> Result<std::collections::HashMap<String, String>, StateError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached("SELECT dlq_id, outcome FROM dlq_replays")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
        .await
    }

    async fn mark_replayed(&self, entries: Vec<(String, String)>) -> Result<(), StateError> {
        self.with(move |conn| {
            let tx = conn.transaction()?;
            {
                let now = chrono::Utc::now().to_rfc3339();
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO dlq_replays (dlq_id, outcome, replayed_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (dlq_id) DO UPDATE SET outcome = excluded.outcome, replayed_at = excluded.replayed_at",
                )?;
                for (id, outcome) in &entries {
                    stmt.execute(params![id, outcome, now])?;
                }
            }
            tx.commit()
        })
        .await
    }

    async fn checkpoint(&self, source: &str) -> Result<Option<String>, StateError> {
        let source = source.to_string();
        self.with(move |conn| {
            conn.query_row(
                "SELECT value FROM source_checkpoints WHERE source = ?1",
                [source],
                |r| r.get(0),
            )
            .optional()
        })
        .await
    }

    async fn save_checkpoint(&self, source: &str, value: String) -> Result<(), StateError> {
        let source = source.to_string();
        self.with(move |conn| {
            conn.execute(
                "INSERT INTO source_checkpoints (source, value, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (source) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                params![source, value, chrono::Utc::now().to_rfc3339()],
            )
            .map(|_| ())
        })
        .await
    }

    async fn liaisons(&self) -> Result<Vec<(String, serde_json::Value)>, StateError> {
        self.with(|conn| {
            let mut stmt =
                conn.prepare("SELECT department, value FROM liaisons ORDER BY department")?;
            let rows = stmt.query_map([], |r| {
                let value: String = r.get(1)?;
                Ok((r.get(0)?, serde_json::from_str(&value).unwrap_or_default()))
            })?;
            rows.collect()
        })
        .await
    }

    async fn set_liaison(
        &self,
        department: &str,
        value: serde_json::Value,
    ) -> Result<(), StateError> {
        let department = department.to_string();
        self.with(move |conn| {
            conn.execute(
                "INSERT INTO liaisons (department, value, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (department) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                params![department, value.to_string(), chrono::Utc::now().to_rfc3339()],
            )
            .map(|_| ())
        })
        .await
    }

    async fn add_user(&self, row: UserRow) -> Result<bool, StateError> {
        self.with(move |conn| {
            conn.execute(
                &format!("INSERT INTO console_users ({USER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT (login) DO NOTHING"),
                params![row.id, row.login, row.name, row.role, row.department, row.password_hash,
                        row.must_change, row.failed_logins, row.locked_until, row.disabled, row.created_at],
            )
            .map(|n| n == 1)
        })
        .await
    }

    async fn user(&self, login: &str) -> Result<Option<UserRow>, StateError> {
        let login = login.to_string();
        self.with(move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {USER_COLUMNS} FROM console_users WHERE login = ?1"
            ))?
            .query_row([login], |r| user_row(r, 0))
            .optional()
        })
        .await
    }

    async fn users(&self) -> Result<Vec<UserRow>, StateError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {USER_COLUMNS} FROM console_users ORDER BY login"
            ))?;
            let rows = stmt.query_map([], |r| user_row(r, 0))?;
            rows.collect()
        })
        .await
    }

    async fn set_password(
        &self,
        login: &str,
        password_hash: &str,
        must_change: bool,
    ) -> Result<bool, StateError> {
        let (login, hash) = (login.to_string(), password_hash.to_string());
        self.with(move |conn| {
            conn.execute(
                "UPDATE console_users SET password_hash = ?2, must_change = ?3, failed_logins = 0,
                 locked_until = NULL WHERE login = ?1",
                params![login, hash, must_change],
            )
            .map(|n| n == 1)
        })
        .await
    }

    async fn disable_user(&self, login: &str) -> Result<bool, StateError> {
        let login = login.to_string();
        self.with(move |conn| {
            let tx = conn.transaction()?;
            let n = tx.execute(
                "UPDATE console_users SET disabled = 1 WHERE login = ?1 AND disabled = 0",
                [&login],
            )?;
            tx.execute(
                "DELETE FROM console_sessions WHERE user_id IN (SELECT id FROM console_users WHERE login = ?1)",
                [&login],
            )?;
            tx.commit()?;
            Ok(n == 1)
        })
        .await
    }

    async fn login_failed(
        &self,
        login: &str,
        max_failures: u32,
        lock_until: i64,
    ) -> Result<bool, StateError> {
        let login = login.to_string();
        self.with(move |conn| {
            conn.query_row(
                "UPDATE console_users SET
                     locked_until = CASE WHEN failed_logins + 1 >= ?2 THEN ?3 ELSE locked_until END,
                     failed_logins = CASE WHEN failed_logins + 1 >= ?2 THEN 0 ELSE failed_logins + 1 END
                 WHERE login = ?1 RETURNING locked_until = ?3",
                params![login, max_failures, lock_until],
                |r| r.get::<_, Option<bool>>(0),
            )
            .optional()
            .map(|locked| locked.flatten().unwrap_or(false))
        })
        .await
    }

    async fn login_succeeded(&self, login: &str) -> Result<(), StateError> {
        let login = login.to_string();
        self.with(move |conn| {
            conn.execute(
                "UPDATE console_users SET failed_logins = 0 WHERE login = ?1 AND failed_logins > 0",
                [login],
            )
            .map(|_| ())
        })
        .await
    }

    async fn add_session(&self, row: SessionRow) -> Result<(), StateError> {
        self.with(move |conn| {
            conn.execute(
                "INSERT INTO console_sessions (id, secret_sha256, user_id, created_at, expires_at, idle_until)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![row.id, row.secret_sha256.to_vec(), row.user_id, row.created_at, row.expires_at, row.idle_until],
            )
            .map(|_| ())
        })
        .await
    }

    async fn session(&self, id: &str) -> Result<Option<(SessionRow, UserRow)>, StateError> {
        let id = id.to_string();
        self.with(move |conn| {
            let columns = USER_COLUMNS
                .split(", ")
                .map(|c| format!("u.{c}"))
                .collect::<Vec<_>>()
                .join(", ");
            conn.prepare_cached(&format!(
                "SELECT s.id, s.secret_sha256, s.user_id, s.created_at, s.expires_at, s.idle_until, {columns}
                 FROM console_sessions s JOIN console_users u ON u.id = s.user_id WHERE s.id = ?1"
            ))?
            .query_row([id], |r| {
                Ok((
                    SessionRow {
                        id: r.get(0)?,
                        secret_sha256: hash32(r.get(1)?, 1)?,
                        user_id: r.get(2)?,
                        created_at: r.get(3)?,
                        expires_at: r.get(4)?,
                        idle_until: r.get(5)?,
                    },
                    user_row(r, 6)?,
                ))
            })
            .optional()
        })
        .await
    }

    async fn touch_session(&self, id: &str, idle_until: i64) -> Result<(), StateError> {
        let id = id.to_string();
        self.with(move |conn| {
            conn.execute(
                "UPDATE console_sessions SET idle_until = ?2 WHERE id = ?1",
                params![id, idle_until],
            )
            .map(|_| ())
        })
        .await
    }

    async fn delete_session(&self, id: &str) -> Result<(), StateError> {
        let id = id.to_string();
        self.with(move |conn| {
            conn.execute("DELETE FROM console_sessions WHERE id = ?1", [id])
                .map(|_| ())
        })
        .await
    }

    async fn delete_sessions_of(
        &self,
        user_id: &str,
        keep: Option<&str>,
    ) -> Result<(), StateError> {
        let (user_id, keep) = (user_id.to_string(), keep.unwrap_or("").to_string());
        self.with(move |conn| {
            conn.execute(
                "DELETE FROM console_sessions WHERE user_id = ?1 AND id <> ?2",
                [user_id, keep],
            )
            .map(|_| ())
        })
        .await
    }

    async fn purge_sessions(&self, now: i64) -> Result<(), StateError> {
        self.with(move |conn| {
            conn.execute(
                "DELETE FROM console_sessions WHERE expires_at < ?1 OR idle_until < ?1",
                [now],
            )
            .map(|_| ())
        })
        .await
    }

    async fn adapter_activity(&self) -> Result<Vec<AdapterActivity>, StateError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT adapter, SUM(records), MAX(last_at) FROM (
                     SELECT adapter, COUNT(*) AS records, MAX(updated_at) AS last_at FROM ingest_seen GROUP BY adapter
                     UNION ALL SELECT adapter, records, last_at FROM ingest_activity)
                 GROUP BY adapter ORDER BY adapter",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(AdapterActivity {
                    adapter: r.get(0)?,
                    records: r.get(1)?,
                    last_at: r.get(2)?,
                })
            })?;
            rows.collect()
        })
        .await
    }
}
