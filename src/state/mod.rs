//! The gateway's own state, next to the ledger: which business keys were published with which
//! content (ingest de-duplication) and the hashes of issued tokens.
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

/// The state store seam.
#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// The content hash last published for each of `keys` of `adapter`.
    async fn last_hashes(
        &self,
        adapter: &str,
        keys: Vec<String>,
    ) -> Result<Vec<Option<String>>, StateError>;
    /// Remembers published records.
    async fn remember(&self, seen: Vec<Seen>) -> Result<(), StateError>;
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
}
