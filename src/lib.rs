//! shenguan — the data-exchange gateway for 审管联动.
//!
//! Legacy approval and supervision systems feed records in; declarative adapters map them to one
//! canonical schema; validated records are published as CloudEvents on the bus (Kafka or the
//! embedded default); everything rejected lands in the DLQ with its original bytes.
//!
//! Layout: `pipeline` (pure: decode, map, validate), `adapter` and `schema` (definitions checked
//! at start-up), `ingest` (de-duplicate and publish), `bus` and `state` (I/O seams), `api`
//! (HTTP), `dlq`, `telemetry`, and `app`, the composition root.

pub use shenguan_core::{adapter, deadline, golden, mask, pipeline, preview, route, schema, sgs};

pub mod api;
pub mod app;
pub mod auth;
pub mod bench;
pub mod bus;
pub mod cmd;
pub mod config;
pub mod console;
pub mod datadir;
pub mod db;
pub mod deliver;
pub mod demo;
pub mod dlq;
pub mod ingest;
pub mod ledger;
pub mod role;
pub mod soak;
pub mod source;
pub mod state;
pub mod stop;
pub mod telemetry;
