//! Writing bursts of ledger messages one after another, each worked out while the one before it
//! is written.
//!
//! A burst is worked out ([`LedgerStore::plan_batch`]: load what the store holds about its
//! records, fold the events, build the rows) on the store's reading connection, while the burst
//! before it is written on the writing one; then it is written once that one is committed
//! ([`LedgerStore::write_planned`]). The plan cannot see what the burst being written changes,
//! so a burst with a record in common with it waits for it to be committed before it is worked
//! out; positions moved meanwhile are checked when the plan is written. A burst handed over
//! while nothing is written has nothing to overlap with and is worked out in the transaction
//! that writes it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::port::Outcome;
use super::shared::Shared;
use super::store::{Batch, LedgerError, LedgerStore, Planned};

/// A burst being written.
struct Writing {
    batch: Batch,
    records: HashSet<String>,
    task: JoinHandle<Result<Vec<Outcome>, LedgerError>>,
}

/// A burst with what became of each of its messages, in order.
pub type Written = (Batch, Vec<Outcome>);

/// Writes bursts in order, each worked out while the one before it is written.
pub struct Applier {
    ledger: Arc<dyn LedgerStore>,
    shared: Arc<Shared>,
    live: bool,
    stop: watch::Receiver<bool>,
    writing: Option<Writing>,
}

impl Applier {
    /// `live` as in [`LedgerStore::apply_batch`]; a write that fails is retried every second
    /// until it succeeds or `stop` turns true.
    pub fn new(
        ledger: Arc<dyn LedgerStore>,
        shared: Arc<Shared>,
        live: bool,
        stop: watch::Receiver<bool>,
    ) -> Applier {
        Applier {
            ledger,
            shared,
            live,
            stop,
            writing: None,
        }
    }

    /// Whether a burst is being written.
    pub fn is_writing(&self) -> bool {
        self.writing.is_some()
    }

    /// Hands over the next burst: it is worked out now, while the burst before it is written
    /// (after it, when the two have a record in common), and written once that one is
    /// committed. Returns the burst before it, written, if there was one.
    pub async fn push(&mut self, batch: Batch) -> Result<Option<Written>, LedgerError> {
        let records: HashSet<String> = batch
            .iter()
            .filter_map(|p| p.record_id().map(str::to_string))
            .collect();
        let mut written = None;
        if self
            .writing
            .as_ref()
            .is_some_and(|w| !w.records.is_disjoint(&records))
        {
            written = self.written().await?;
        }
        // With nothing being written there is nothing to overlap: the write works the burst out
        // in its own transaction.
        let planned = if self.writing.is_some() {
            let planned = self
                .ledger
                .plan_batch(batch.clone(), self.shared.clone(), self.live)
                .await;
            written = self.written().await?;
            planned
        } else {
            Planned::later(batch.clone())
        };
        let (ledger, shared, live, stop, retry) = (
            self.ledger.clone(),
            self.shared.clone(),
            self.live,
            self.stop.clone(),
            batch.clone(),
        );
        let task = tokio::spawn(async move {
            let mut result = ledger.write_planned(planned, shared.clone(), live).await;
            while let Err(e) = &result {
                tracing::error!(error = %e, "ledger update failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                if *stop.borrow() {
                    break;
                }
                result = ledger
                    .apply_batch(retry.clone(), shared.clone(), live)
                    .await;
            }
            result
        });
        self.writing = Some(Writing {
            batch,
            records,
            task,
        });
        Ok(written)
    }

    /// Waits until the burst being written is committed and returns it; without one, waits
    /// forever (for a `select!` beside other work: nothing is lost when it is cancelled).
    pub async fn written(&mut self) -> Result<Option<Written>, LedgerError> {
        let Some(writing) = self.writing.as_mut() else {
            return std::future::pending().await;
        };
        let result = (&mut writing.task).await;
        let writing = self.writing.take().expect("a burst being written");
        let outcomes = result.map_err(|e| {
            LedgerError::new(
                self.ledger.describe(),
                format!("the ledger write failed: {e}"),
            )
        })??;
        Ok(Some((writing.batch, outcomes)))
    }

    /// Waits for the burst being written, if there is one, and returns it.
    pub async fn finish(&mut self) -> Result<Option<Written>, LedgerError> {
        if self.writing.is_none() {
            return Ok(None);
        }
        self.written().await
    }
}
