//! What the projector, the tracker and the store share: the routing catalog, the calendar, the
//! policy profiles and the topic names — the context the state machine runs in.

use std::sync::Arc;

use super::Context;
use crate::bus::Topics;
use crate::deadline::{Calendar, Policies};
use crate::route::Catalog;
use crate::schema::RecordKind;

/// The topics the ledger is a projection of.
pub const LEDGER_KINDS: [RecordKind; 6] = [
    RecordKind::Approval,
    RecordKind::Supervision,
    RecordKind::Notice,
    RecordKind::Claim,
    RecordKind::Feedback,
    RecordKind::Alert,
];

/// What the projector and the tracker share: routing, calendar, policies, topics.
pub struct Shared {
    pub catalog: Arc<Catalog>,
    pub calendar: Arc<Calendar>,
    pub policies: Arc<Policies>,
    /// The policy profile in force.
    pub policy: String,
    pub topics: Topics,
}

impl Shared {
    pub fn context(&self) -> Context<'_> {
        Context {
            catalog: &self.catalog,
            calendar: &self.calendar,
            policies: &self.policies,
            policy: &self.policy,
        }
    }

    /// The topics the ledger is built from.
    pub fn ledger_topics(&self) -> Vec<String> {
        LEDGER_KINDS.iter().map(|k| self.topics.name(*k)).collect()
    }
}
