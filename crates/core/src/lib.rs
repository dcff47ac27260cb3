//! The sans-I/O core of shenguan.
//!
//! Everything the gateway decides lives here as synchronous functions over owned data: how a
//! legacy payload is decoded and mapped (`adapter`, `pipeline`), whether the canonical record is
//! valid (`schema`), which department it goes to (`route`), when its deadlines fall (`deadline`),
//! what every event does to the ledger (`ledger`), and how decisions are written for the credit
//! platform (`sgs`, 双公示). The crate depends on no async runtime, no
//! database and no network client; the gateway crate around it moves the bytes.

pub mod adapter;
pub mod deadline;
pub mod golden;
pub mod ledger;
pub mod mask;
pub mod pipeline;
pub mod preview;
pub mod route;
pub mod schema;
pub mod sgs;
