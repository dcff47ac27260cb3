//! The ledger's I/O: its stores (SQLite, PostgreSQL), the projector that applies the bus topics
//! to them, and the deadline tracker. The state machine itself is pure and lives in
//! `shenguan_core::ledger`, re-exported here.

pub use shenguan_core::ledger::*;

pub mod pg;
pub mod projector;
pub mod sqlite;
pub mod store;
pub mod tracker;
