//! The order of a record's events. The topics are read in no particular order relative to each
//! other — a rebuild may replay every claim before the first approval, a department's own Kafka
//! client may claim a record before the ledger applied it — so the ledger never depends on the
//! order it reads them in: a record's state is its events folded in [`EventOrd`] order (business
//! time, topic rank, id), and an event about a record that has not arrived yet waits, kept with
//! the record's other events, until the record arrives; then it is applied right after it.
//!
//! [`fold`] computes a record's state from all its events; [`Folded::step`] adds one event that
//! sorts after every event already folded, which is what live traffic almost always is. The
//! store keeps the events, so when one arrives out of order the record is folded again from its
//! events: both ways give the same state, so any interleaving of the topics gives the ledger the
//! order in which things happened would.

use super::event::{Event, EventOrd};
use super::machine::{self, RecordState};
use super::{Changes, Context, HistoryRow};

/// A record's event with its place in the record's order.
#[derive(Debug, Clone, PartialEq)]
pub struct Logged {
    pub ord: EventOrd,
    pub event: Event,
}

impl Logged {
    /// An event and its offset on the bus.
    pub fn new(event: Event, pos: i64) -> Logged {
        Logged {
            ord: event.ord(pos),
            event,
        }
    }
}

/// A record's state after folding its events.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Folded {
    pub state: RecordState,
    /// The history, in order.
    pub history: Vec<HistoryRow>,
    /// Events kept until the record arrives, in order.
    pub waiting: Vec<Logged>,
    /// Retention deleted the record: nothing about it applies any more.
    pub purged: bool,
}

/// What adding one event did.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Applied, with what it changed (and, when it was the record, what the events that waited
    /// for it changed).
    Applied(Box<Changes>),
    /// Kept until its record arrives.
    Waiting,
    /// The record was purged by retention; the event changes nothing.
    Purged,
}

impl Folded {
    /// Adds an event that sorts after every event folded so far.
    pub fn step(&mut self, logged: Logged, ctx: &Context) -> Step {
        if self.purged {
            return Step::Purged;
        }
        if logged.event.is_purge() {
            *self = Folded {
                purged: true,
                ..Folded::default()
            };
            return Step::Applied(Box::default());
        }
        match (&self.state.record, &logged.event) {
            (Some(_), _) => Step::Applied(Box::new(self.apply(&logged.event, ctx))),
            (None, Event::Record(_)) => {
                let mut changes = self.apply(&logged.event, ctx);
                for w in std::mem::take(&mut self.waiting) {
                    merge(&mut changes, self.apply(&w.event, ctx));
                }
                Step::Applied(Box::new(changes))
            }
            (None, _) => {
                self.waiting.push(logged);
                Step::Waiting
            }
        }
    }

    fn apply(&mut self, event: &Event, ctx: &Context) -> Changes {
        let changes = machine::apply(&self.state, event, ctx);
        self.state.absorb(&changes);
        self.history.extend(changes.history.iter().cloned());
        changes
    }
}

/// Folds a record's events from nothing, in [`EventOrd`] order whatever order they are given in.
pub fn fold(mut events: Vec<Logged>, ctx: &Context) -> Folded {
    events.sort_by(|a, b| a.ord.cmp(&b.ord));
    let mut folded = Folded::default();
    for e in events {
        folded.step(e, ctx);
    }
    folded
}

/// Adds `more` to `into` (the changes of the events that waited for their record).
pub fn merge(into: &mut Changes, more: Changes) {
    if more.record.is_some() {
        into.record = more.record;
    }
    for e in more.entries {
        match into
            .entries
            .iter_mut()
            .find(|x| x.department == e.department)
        {
            Some(x) => *x = e,
            None => into.entries.push(e),
        }
    }
    into.history.extend(more.history);
    into.alerts.extend(more.alerts);
    into.claimed.extend(more.claimed);
    into.breaches.extend(more.breaches);
}
