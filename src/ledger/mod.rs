//! The ledger's I/O: its store (one implementation over SQLite and PostgreSQL), the projector
//! that applies the bus topics to it, and the deadline tracker. The state machine, the order of
//! a record's events and the storage port are pure and live in `shenguan_core::ledger`,
//! re-exported here.

pub use shenguan_core::ledger::*;

pub mod applier;
pub mod error;
pub mod exec;
pub mod export;
pub mod known;
pub mod pg;
pub mod projector;
pub mod shared;
pub mod sql;
pub mod sqlite;
pub mod store;
pub mod tracker;
