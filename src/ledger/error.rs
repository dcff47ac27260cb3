//! What the ledger's store reports when it fails: which store, and what went wrong.

/// Ledger failures: which store, and what went wrong.
#[derive(Debug, thiserror::Error)]
#[error("ledger {path}: {message}")]
pub struct LedgerError {
    pub path: String,
    pub message: String,
}

impl LedgerError {
    pub fn new(path: impl std::fmt::Display, message: impl Into<String>) -> LedgerError {
        LedgerError {
            path: path.to_string(),
            message: message.into(),
        }
    }
}
