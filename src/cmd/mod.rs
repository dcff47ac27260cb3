//! The commands of the `shenguan` binary besides `run` (which is `app::run`), one module each.
//! Each opens what it needs through the composition root (`app`) and prints for a person.

pub mod adapters;
pub mod calendar;
pub mod dlq;
pub mod export;
pub mod ledger;
pub mod liaison;
pub mod report;
pub mod token;
pub mod user;
