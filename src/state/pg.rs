//! The gateway state (de-duplication, tokens, DLQ replays, checkpoints, liaisons, audit) in
//! PostgreSQL, shared by every gateway instance.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde_json::Value;

use super::*;
use crate::db::{chain, pg_pool, redact};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS ingest_seen (
    adapter TEXT NOT NULL, business_key TEXT NOT NULL, content_hash TEXT NOT NULL, record_id TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL, PRIMARY KEY (adapter, business_key));
CREATE TABLE IF NOT EXISTS auth_tokens (
    id TEXT PRIMARY KEY, role TEXT NOT NULL, subject TEXT NOT NULL, sha256 BYTEA NOT NULL UNIQUE,
    created_at TIMESTAMPTZ NOT NULL, revoked_at TIMESTAMPTZ);
CREATE TABLE IF NOT EXISTS dlq_replays (dlq_id TEXT PRIMARY KEY, outcome TEXT NOT NULL, replayed_at TIMESTAMPTZ NOT NULL);
CREATE TABLE IF NOT EXISTS source_checkpoints (source TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at TIMESTAMPTZ NOT NULL);
CREATE TABLE IF NOT EXISTS liaisons (department TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at TIMESTAMPTZ NOT NULL);
CREATE TABLE IF NOT EXISTS audit_log (
    seq BIGSERIAL PRIMARY KEY, at TIMESTAMPTZ NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
    target TEXT NOT NULL, detail JSONB NOT NULL);
CREATE TABLE IF NOT EXISTS console_users (
    id TEXT PRIMARY KEY, login TEXT NOT NULL UNIQUE, name TEXT NOT NULL, role TEXT NOT NULL,
    department TEXT, password_hash TEXT NOT NULL, must_change BOOLEAN NOT NULL,
    failed_logins INTEGER NOT NULL DEFAULT 0, locked_until BIGINT, disabled BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS console_sessions (
    id TEXT PRIMARY KEY, secret_sha256 BYTEA NOT NULL, user_id TEXT NOT NULL,
    created_at BIGINT NOT NULL, expires_at BIGINT NOT NULL, idle_until BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS console_sessions_user ON console_sessions (user_id);
";

const USER_COLUMNS: &str = "id, login, name, role, department, password_hash, must_change, \
     failed_logins, locked_until, disabled, created_at";

fn user_row(r: &tokio_postgres::Row, at: usize) -> Result<UserRow, tokio_postgres::Error> {
    Ok(UserRow {
        id: r.try_get(at)?,
        login: r.try_get(at + 1)?,
        name: r.try_get(at + 2)?,
        role: r.try_get(at + 3)?,
        department: r.try_get(at + 4)?,
        password_hash: r.try_get(at + 5)?,
        must_change: r.try_get(at + 6)?,
        failed_logins: r.try_get::<_, i32>(at + 7)?.max(0) as u32,
        locked_until: r.try_get(at + 8)?,
        disabled: r.try_get(at + 9)?,
        created_at: r.try_get(at + 10)?,
    })
}

/// The gateway state (de-duplication, tokens, DLQ replays) in PostgreSQL.
pub struct PgState {
    url: String,
    pool: Pool,
}

impl PgState {
    pub async fn connect(url: &str) -> Result<PgState, StateError> {
        let pool = pg_pool(url, SCHEMA).await.map_err(|message| StateError {
            path: redact(url),
            message,
        })?;
        Ok(PgState {
            url: redact(url),
            pool,
        })
    }

    fn err<E: std::error::Error>(&self, e: E) -> StateError {
        StateError {
            path: self.url.clone(),
            message: chain(&e),
        }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StateError> {
        self.pool.get().await.map_err(|e| self.err(e))
    }
}

#[async_trait]
impl StateStore for PgState {
    async fn last_hashes(
        &self,
        adapter: &str,
        keys: Vec<String>,
    ) -> Result<Vec<Option<String>>, StateError> {
        let c = self.client().await?;
        let rows = c
            .query("SELECT business_key, content_hash FROM ingest_seen WHERE adapter = $1 AND business_key = ANY($2)", &[&adapter, &keys])
            .await
            .map_err(|e| self.err(e))?;
        let found: std::collections::HashMap<String, String> =
            rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        Ok(keys.iter().map(|k| found.get(k).cloned()).collect())
    }

    async fn remember(&self, seen: Vec<Seen>) -> Result<(), StateError> {
        if seen.is_empty() {
            return Ok(());
        }
        // One statement for the whole batch: a row per key (the last given), since one INSERT …
        // ON CONFLICT may not change a row twice.
        let mut last: std::collections::HashMap<(&str, &str), &Seen> =
            std::collections::HashMap::with_capacity(seen.len());
        for s in &seen {
            last.insert((s.adapter.as_str(), s.business_key.as_str()), s);
        }
        let rows: Vec<&Seen> = last.into_values().collect();
        let column = |f: fn(&Seen) -> &str| rows.iter().map(|s| f(s)).collect::<Vec<&str>>();
        let (adapters, keys, hashes, ids) = (
            column(|s| &s.adapter),
            column(|s| &s.business_key),
            column(|s| &s.content_hash),
            column(|s| &s.record_id),
        );
        let c = self.client().await?;
        c.execute(
            "INSERT INTO ingest_seen (adapter, business_key, content_hash, record_id, updated_at)
             SELECT a, k, h, r, $5 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS t(a, k, h, r)
             ON CONFLICT (adapter, business_key) DO UPDATE SET content_hash = excluded.content_hash, updated_at = excluded.updated_at",
            &[&adapters, &keys, &hashes, &ids, &Utc::now()],
        )
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn seen_page(
        &self,
        after: (String, String),
        limit: usize,
    ) -> Result<Vec<Seen>, StateError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT adapter, business_key, content_hash, record_id FROM ingest_seen
                 WHERE (adapter, business_key) > ($1, $2) ORDER BY adapter, business_key LIMIT $3",
                &[&after.0, &after.1, &(limit as i64)],
            )
            .await
            .map_err(|e| self.err(e))?;
        Ok(rows
            .iter()
            .map(|r| Seen {
                adapter: r.get(0),
                business_key: r.get(1),
                content_hash: r.get(2),
                record_id: r.get(3),
            })
            .collect())
    }

    async fn tokens(&self) -> Result<Vec<TokenRow>, StateError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT id, role, subject, sha256 FROM auth_tokens WHERE revoked_at IS NULL",
                &[],
            )
            .await
            .map_err(|e| self.err(e))?;
        Ok(rows
            .iter()
            .map(|r| {
                let hash: Vec<u8> = r.get(3);
                let mut sha256 = [0u8; 32];
                if hash.len() == 32 {
                    sha256.copy_from_slice(&hash);
                }
                TokenRow {
                    id: r.get(0),
                    role: r.get(1),
                    subject: r.get(2),
                    sha256,
                }
            })
            .collect())
    }

    async fn audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        detail: Value,
    ) -> Result<(), StateError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO audit_log (at, actor, action, target, detail) VALUES (now(), $1, $2, $3, $4)",
            &[&actor, &action, &target, &detail],
        )
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>, StateError> {
        let c = self.client().await?;
        let rows = c
            .query(&format!("SELECT at, actor, action, target, detail FROM audit_log ORDER BY seq DESC LIMIT {limit}"), &[])
            .await
            .map_err(|e| self.err(e))?;
        Ok(rows
            .iter()
            .map(|r| AuditEntry {
                at: r.get::<_, DateTime<Utc>>(0).to_rfc3339(),
                actor: r.get(1),
                action: r.get(2),
                target: r.get(3),
                detail: r.get(4),
            })
            .collect())
    }

    async fn token_list(&self) -> Result<Vec<TokenInfo>, StateError> {
        let c = self.client().await?;
        let rows = c
            .query("SELECT id, role, subject, created_at, revoked_at FROM auth_tokens ORDER BY created_at", &[])
            .await
            .map_err(|e| self.err(e))?;
        Ok(rows
            .iter()
            .map(|r| TokenInfo {
                id: r.get(0),
                role: r.get(1),
                subject: r.get(2),
                created_at: r.get::<_, DateTime<Utc>>(3).to_rfc3339(),
                revoked_at: r.get::<_, Option<DateTime<Utc>>>(4).map(|t| t.to_rfc3339()),
            })
            .collect())
    }

    async fn revoke_token(&self, id: &str) -> Result<bool, StateError> {
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE auth_tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
                &[&id],
            )
            .await
            .map_err(|e| self.err(e))?;
        Ok(n == 1)
    }

    async fn add_token(&self, row: TokenRow) -> Result<(), StateError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO auth_tokens (id, role, subject, sha256, created_at) VALUES ($1, $2, $3, $4, now())",
            &[&row.id, &row.role, &row.subject, &row.sha256.to_vec()],
        )
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn replay_outcomes(
        &self,
    ) -> Result<std::collections::HashMap<String, String>, StateError> {
        let c = self.client().await?;
        let rows = c
            .query("SELECT dlq_id, outcome FROM dlq_replays", &[])
            .await
            .map_err(|e| self.err(e))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn mark_replayed(&self, entries: Vec<(String, String)>) -> Result<(), StateError> {
        let c = self.client().await?;
        for (id, outcome) in entries {
            c.execute(
                "INSERT INTO dlq_replays (dlq_id, outcome, replayed_at) VALUES ($1, $2, now())
                 ON CONFLICT (dlq_id) DO UPDATE SET outcome = excluded.outcome, replayed_at = excluded.replayed_at",
                &[&id, &outcome],
            )
            .await
            .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    async fn checkpoint(&self, source: &str) -> Result<Option<String>, StateError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT value FROM source_checkpoints WHERE source = $1",
                &[&source],
            )
            .await
            .map_err(|e| self.err(e))?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn save_checkpoint(&self, source: &str, value: String) -> Result<(), StateError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO source_checkpoints (source, value, updated_at) VALUES ($1, $2, now())
             ON CONFLICT (source) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            &[&source, &value],
        )
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn liaisons(&self) -> Result<Vec<(String, serde_json::Value)>, StateError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT department, value FROM liaisons ORDER BY department",
                &[],
            )
            .await
            .map_err(|e| self.err(e))?;
        Ok(rows
            .iter()
            .map(|r| {
                let value: String = r.get(1);
                (r.get(0), serde_json::from_str(&value).unwrap_or_default())
            })
            .collect())
    }

    async fn set_liaison(
        &self,
        department: &str,
        value: serde_json::Value,
    ) -> Result<(), StateError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO liaisons (department, value, updated_at) VALUES ($1, $2, now())
             ON CONFLICT (department) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            &[&department, &value.to_string()],
        )
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn add_user(&self, row: UserRow) -> Result<bool, StateError> {
        let c = self.client().await?;
        let n = c
            .execute(
                &format!("INSERT INTO console_users ({USER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                 ON CONFLICT (login) DO NOTHING"),
                &[&row.id, &row.login, &row.name, &row.role, &row.department, &row.password_hash,
                  &row.must_change, &(row.failed_logins as i32), &row.locked_until, &row.disabled, &row.created_at],
            )
            .await
            .map_err(|e| self.err(e))?;
        Ok(n == 1)
    }

    async fn user(&self, login: &str) -> Result<Option<UserRow>, StateError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                &format!("SELECT {USER_COLUMNS} FROM console_users WHERE login = $1"),
                &[&login],
            )
            .await
            .map_err(|e| self.err(e))?;
        row.map(|r| user_row(&r, 0).map_err(|e| self.err(e)))
            .transpose()
    }

    async fn users(&self) -> Result<Vec<UserRow>, StateError> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!("SELECT {USER_COLUMNS} FROM console_users ORDER BY login"),
                &[],
            )
            .await
            .map_err(|e| self.err(e))?;
        rows.iter()
            .map(|r| user_row(r, 0).map_err(|e| self.err(e)))
            .collect()
    }

    async fn set_password(
        &self,
        login: &str,
        password_hash: &str,
        must_change: bool,
    ) -> Result<bool, StateError> {
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE console_users SET password_hash = $2, must_change = $3, failed_logins = 0,
                 locked_until = NULL WHERE login = $1",
                &[&login, &password_hash, &must_change],
            )
            .await
            .map_err(|e| self.err(e))?;
        Ok(n == 1)
    }

    async fn disable_user(&self, login: &str) -> Result<bool, StateError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(|e| self.err(e))?;
        let n = tx
            .execute(
                "UPDATE console_users SET disabled = TRUE WHERE login = $1 AND NOT disabled",
                &[&login],
            )
            .await
            .map_err(|e| self.err(e))?;
        tx.execute(
            "DELETE FROM console_sessions WHERE user_id IN (SELECT id FROM console_users WHERE login = $1)",
            &[&login],
        )
        .await
        .map_err(|e| self.err(e))?;
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(n == 1)
    }

    async fn login_failed(
        &self,
        login: &str,
        max_failures: u32,
        lock_until: i64,
    ) -> Result<bool, StateError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "UPDATE console_users SET
                     locked_until = CASE WHEN failed_logins + 1 >= $2 THEN $3 ELSE locked_until END,
                     failed_logins = CASE WHEN failed_logins + 1 >= $2 THEN 0 ELSE failed_logins + 1 END
                 WHERE login = $1 RETURNING locked_until IS NOT DISTINCT FROM $3",
                &[&login, &(max_failures as i32), &lock_until],
            )
            .await
            .map_err(|e| self.err(e))?;
        Ok(row.is_some_and(|r| r.get::<_, bool>(0)))
    }

    async fn login_succeeded(&self, login: &str) -> Result<(), StateError> {
        let c = self.client().await?;
        c.execute(
            "UPDATE console_users SET failed_logins = 0 WHERE login = $1 AND failed_logins > 0",
            &[&login],
        )
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn add_session(&self, row: SessionRow) -> Result<(), StateError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO console_sessions (id, secret_sha256, user_id, created_at, expires_at, idle_until)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[&row.id, &row.secret_sha256.to_vec(), &row.user_id, &row.created_at, &row.expires_at, &row.idle_until],
        )
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn session(&self, id: &str) -> Result<Option<(SessionRow, UserRow)>, StateError> {
        let c = self.client().await?;
        let columns = USER_COLUMNS
            .split(", ")
            .map(|c| format!("u.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let row = c
            .query_opt(
                &format!(
                    "SELECT s.id, s.secret_sha256, s.user_id, s.created_at, s.expires_at, s.idle_until, {columns}
                     FROM console_sessions s JOIN console_users u ON u.id = s.user_id WHERE s.id = $1"
                ),
                &[&id],
            )
            .await
            .map_err(|e| self.err(e))?;
        let Some(r) = row else { return Ok(None) };
        let hash: Vec<u8> = r.get(1);
        let secret_sha256: [u8; 32] = hash.try_into().map_err(|b: Vec<u8>| StateError {
            path: self.url.clone(),
            message: format!(
                "session {id}: a 32-byte hash expected, found {} bytes",
                b.len()
            ),
        })?;
        Ok(Some((
            SessionRow {
                id: r.get(0),
                secret_sha256,
                user_id: r.get(2),
                created_at: r.get(3),
                expires_at: r.get(4),
                idle_until: r.get(5),
            },
            user_row(&r, 6).map_err(|e| self.err(e))?,
        )))
    }

    async fn touch_session(&self, id: &str, idle_until: i64) -> Result<(), StateError> {
        let c = self.client().await?;
        c.execute(
            "UPDATE console_sessions SET idle_until = $2 WHERE id = $1",
            &[&id, &idle_until],
        )
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn delete_session(&self, id: &str) -> Result<(), StateError> {
        let c = self.client().await?;
        c.execute("DELETE FROM console_sessions WHERE id = $1", &[&id])
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn delete_sessions_of(
        &self,
        user_id: &str,
        keep: Option<&str>,
    ) -> Result<(), StateError> {
        let c = self.client().await?;
        c.execute(
            "DELETE FROM console_sessions WHERE user_id = $1 AND id <> $2",
            &[&user_id, &keep.unwrap_or("")],
        )
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn purge_sessions(&self, now: i64) -> Result<(), StateError> {
        let c = self.client().await?;
        c.execute(
            "DELETE FROM console_sessions WHERE expires_at < $1 OR idle_until < $1",
            &[&now],
        )
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn adapter_activity(&self) -> Result<Vec<AdapterActivity>, StateError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT adapter, COUNT(*), MAX(updated_at) FROM ingest_seen GROUP BY adapter ORDER BY adapter",
                &[],
            )
            .await
            .map_err(|e| self.err(e))?;
        Ok(rows
            .iter()
            .map(|r| AdapterActivity {
                adapter: r.get(0),
                records: r.get::<_, i64>(1).max(0) as u64,
                last_at: r.get::<_, Option<DateTime<Utc>>>(2).map(|t| t.to_rfc3339()),
            })
            .collect())
    }
}
