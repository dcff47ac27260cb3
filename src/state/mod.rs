//! The gateway's own state, next to the ledger: which business keys were published with which
//! content (ingest de-duplication), the hashes of issued tokens, and the console's accounts for
//! people with their sessions (only argon2 hashes of passwords and SHA-256 hashes of session
//! secrets are stored).
//!
//! A record is remembered only after the bus acknowledged it, so a crash between the two can
//! publish a record twice (at-least-once) but never lose one; consumers de-duplicate on the
//! CloudEvents `id`, which is derived from the record id and its content.

use async_trait::async_trait;

pub mod pg;
pub mod sqlite;

pub use sqlite::SqliteState;

/// State store failures.
#[derive(Debug, thiserror::Error)]
#[error("state store {path}: {message}")]
pub struct StateError {
    pub path: String,
    pub message: String,
}

/// A published record, remembered for de-duplication.
#[derive(Debug, Clone)]
pub struct Seen {
    pub adapter: String,
    pub business_key: String,
    pub content_hash: String,
    pub record_id: String,
}

/// An issued token (only its hash is stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub id: String,
    pub role: String,
    pub subject: String,
    pub sha256: [u8; 32],
}

/// An issued token as listed for an admin (its hash is never shown).
#[derive(Debug, Clone, serde::Serialize)]
pub struct TokenInfo {
    pub id: String,
    pub role: String,
    pub subject: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

/// One audit log entry.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditEntry {
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: serde_json::Value,
}

/// A person's account for the console (`shenguan user add`, the admin page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub id: String,
    /// The name the person logs in with; unique.
    pub login: String,
    /// The person's name, as it appears in the audit log and the ledger history.
    pub name: String,
    /// `clerk` (a department's 联络员) or `admin` (an operator of the platform).
    pub role: String,
    /// The department a clerk works for; `None` for an admin.
    pub department: Option<String>,
    /// The argon2id hash of the password, as a PHC string.
    pub password_hash: String,
    /// The password is a one-time password that must be changed at the next login.
    pub must_change: bool,
    /// Failed logins since the last success or lock-out.
    pub failed_logins: u32,
    /// Unix seconds until which logins are refused after repeated failures.
    pub locked_until: Option<i64>,
    pub disabled: bool,
    /// Unix seconds.
    pub created_at: i64,
}

/// A console session. The cookie holds `id.secret`; only the SHA-256 of the secret is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub id: String,
    pub secret_sha256: [u8; 32],
    pub user_id: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds: the session ends then, however active.
    pub expires_at: i64,
    /// Unix seconds: the session ends then unless it is used before.
    pub idle_until: i64,
}

/// What arrived from one adapter, as the de-duplication table remembers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterActivity {
    pub adapter: String,
    /// Distinct business keys published.
    pub records: u64,
    /// When the last new or changed record was published (RFC 3339).
    pub last_at: Option<String>,
}

/// The state store seam.
#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// The content hash last published for each of `keys` of `adapter`.
    async fn last_hashes(
        &self,
        adapter: &str,
        keys: Vec<String>,
    ) -> Result<Vec<Option<String>>, StateError>;
    /// Remembers published records, in one transaction; for a key given twice the later wins.
    async fn remember(&self, seen: Vec<Seen>) -> Result<(), StateError>;
    /// Up to `limit` remembered records after the key `after` (adapter, business key), in key
    /// order: the whole de-duplication table a page at a time, for an ingest instance that keeps
    /// it in memory (`("", "")` starts at the beginning).
    async fn seen_page(
        &self,
        after: (String, String),
        limit: usize,
    ) -> Result<Vec<Seen>, StateError>;
    /// Appends one piece of the log of an ingest process's in-memory de-duplication table
    /// (packed record keys and content fingerprints, see `crate::ingest::dedup`), and adds what
    /// it carries to each adapter's activity, in one transaction.
    async fn dedup_append(
        &self,
        entries: Vec<u8>,
        activity: Vec<AdapterActivity>,
    ) -> Result<(), StateError>;
    /// Up to `limit` pieces of that log after sequence number `after`, in order.
    async fn dedup_log(&self, after: i64, limit: usize) -> Result<Vec<(i64, Vec<u8>)>, StateError>;
    /// Replaces the log's pieces numbered up to `upto` by `pieces`, which take the numbers just
    /// below and up to `upto` (so that pieces appended since keep their place after them).
    async fn dedup_compact(&self, upto: i64, pieces: Vec<Vec<u8>>) -> Result<(), StateError>;
    /// Every active token.
    async fn tokens(&self) -> Result<Vec<TokenRow>, StateError>;
    /// Stores a new token hash.
    async fn add_token(&self, row: TokenRow) -> Result<(), StateError>;
    /// Every token ever issued: (id, role, subject, created_at, revoked_at), without hashes.
    async fn token_list(&self) -> Result<Vec<TokenInfo>, StateError>;
    /// Revokes a token; `false` when there is no active token with that id.
    async fn revoke_token(&self, id: &str) -> Result<bool, StateError>;
    /// Appends to the audit log (tokens issued and revoked, DLQ replays). There is no way to
    /// change or delete an entry.
    async fn audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        detail: serde_json::Value,
    ) -> Result<(), StateError>;
    /// The newest audit entries first.
    async fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>, StateError>;
    /// The outcome of the last replay of every replayed DLQ entry, by entry id: `accepted`,
    /// `duplicate` (its records were already published) or `rejected` (it failed again, and the
    /// failure is a new entry). An entry's status follows from it (`crate::dlq::with_status`).
    async fn replay_outcomes(
        &self,
    ) -> Result<std::collections::HashMap<String, String>, StateError>;
    /// Records that DLQ entries were replayed, with the outcome (`accepted`, `duplicate`, `rejected`).
    async fn mark_replayed(&self, entries: Vec<(String, String)>) -> Result<(), StateError>;
    /// A source's durable checkpoint (its own JSON), if it has one.
    async fn checkpoint(&self, source: &str) -> Result<Option<String>, StateError>;
    /// Moves a source's checkpoint; called only after the bus acknowledged what it covers.
    async fn save_checkpoint(&self, source: &str, value: String) -> Result<(), StateError>;
    /// The liaison registry: each department's liaison officer and contact (JSON), by code.
    async fn liaisons(&self) -> Result<Vec<(String, serde_json::Value)>, StateError>;
    /// Sets a department's liaison entry.
    async fn set_liaison(
        &self,
        department: &str,
        value: serde_json::Value,
    ) -> Result<(), StateError>;
    /// Adds an account; `false` when the login is taken.
    async fn add_user(&self, row: UserRow) -> Result<bool, StateError>;
    /// The account with this login.
    async fn user(&self, login: &str) -> Result<Option<UserRow>, StateError>;
    /// Every account, by login.
    async fn users(&self) -> Result<Vec<UserRow>, StateError>;
    /// Sets a password hash (and whether it is a one-time one); clears failed logins and any
    /// lock-out. `false` when there is no such login.
    async fn set_password(
        &self,
        login: &str,
        password_hash: &str,
        must_change: bool,
    ) -> Result<bool, StateError>;
    /// Disables an account and ends its sessions; `false` when there is no enabled account with
    /// that login.
    async fn disable_user(&self, login: &str) -> Result<bool, StateError>;
    /// Counts a failed login in one statement; at `max_failures` the account is locked until
    /// `lock_until` (Unix seconds) and the count starts again. Returns whether this failure locked it.
    async fn login_failed(
        &self,
        login: &str,
        max_failures: u32,
        lock_until: i64,
    ) -> Result<bool, StateError>;
    /// Clears the failed-login count after a successful login.
    async fn login_succeeded(&self, login: &str) -> Result<(), StateError>;
    /// Stores a new session.
    async fn add_session(&self, row: SessionRow) -> Result<(), StateError>;
    /// A session with its account.
    async fn session(&self, id: &str) -> Result<Option<(SessionRow, UserRow)>, StateError>;
    /// Moves a session's idle deadline.
    async fn touch_session(&self, id: &str, idle_until: i64) -> Result<(), StateError>;
    /// Ends a session (logout).
    async fn delete_session(&self, id: &str) -> Result<(), StateError>;
    /// Ends every session of an account but `keep` (after a password change or reset).
    async fn delete_sessions_of(&self, user_id: &str, keep: Option<&str>)
        -> Result<(), StateError>;
    /// Deletes sessions past their deadlines at `now` (Unix seconds).
    async fn purge_sessions(&self, now: i64) -> Result<(), StateError>;
    /// Per adapter: distinct business keys published and when the last one was. Reads the
    /// whole de-duplication table: for the operator's page, not for a hot path.
    async fn adapter_activity(&self) -> Result<Vec<AdapterActivity>, StateError>;
}
