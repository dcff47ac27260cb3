//! shenguan — the data-exchange gateway for 审管联动.
//!
//! Legacy approval and supervision systems feed records in; declarative adapters map them to one
//! canonical schema; validated records are published as CloudEvents on the bus (Kafka or the
//! embedded default); everything rejected lands in the DLQ with its original bytes.
//!
//! Layout: `pipeline` (pure: decode, map, validate), `adapter` and `schema` (definitions checked
//! at start-up), `ingest` (de-duplicate and publish), `bus` and `state` (I/O seams), `api`
//! (HTTP), `dlq`, `telemetry`, and `app`, the composition root.

pub mod adapter;
pub mod api;
pub mod app;
pub mod auth;
pub mod bench;
pub mod bus;
pub mod config;
pub mod deadline;
pub mod deliver;
pub mod demo;
pub mod dlq;
pub mod golden;
pub mod ingest;
pub mod ledger;
pub mod mask;
pub mod pipeline;
pub mod route;
pub mod schema;
pub mod soak;
pub mod source;
pub mod state;
pub mod telemetry;
