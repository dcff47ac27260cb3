//! May this caller do this to this record now? The questions the HTTP API and the console ask
//! before they publish an event, answered from what the ledger holds, with typed refusals. The
//! state machine applies the event whatever a check said (a department's own Kafka client asks
//! nobody); these keep people from sending what would be ignored, and tell them why.

use super::event::{FeedbackType, Verification};
use super::machine::feedback_step;
use super::{Entry, EntryState, RecordRow};
use crate::route::Catalog;

/// Why an action is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("no record {record_id}")]
    UnknownRecord { record_id: String },
    /// Not here yet, but events about it are (a department's own client claimed it before the
    /// ledger read it, or the record's topic is behind the others): they apply when it arrives.
    #[error("no record {record_id} yet; {waiting} events about it wait for it to arrive")]
    NotArrived { record_id: String, waiting: u64 },
    #[error("record {record_id} was not routed to {department}")]
    NotRouted {
        record_id: String,
        department: String,
    },
    #[error("{department} returned record {record_id}; it cannot be claimed any more")]
    Returned {
        record_id: String,
        department: String,
    },
    #[error("{department} forwarded record {record_id}: {note}")]
    Forwarded {
        record_id: String,
        department: String,
        note: String,
    },
    #[error("record {record_id} is {state}{} for {department}", outcome.as_ref().map(|o| format!(" ({o})")).unwrap_or_default())]
    AlreadyHandled {
        record_id: String,
        department: String,
        state: &'static str,
        outcome: Option<String>,
    },
    #[error("record {record_id} is {state} for {department}: claim it first")]
    NotClaimed {
        record_id: String,
        department: String,
        state: &'static str,
    },
    #[error("say why: a {action} needs a reason")]
    ReasonRequired { action: &'static str },
    #[error("{feedback_type} is recorded by the gateway when a reply deadline passes; reply with feedback_type reply")]
    ReservedFeedback { feedback_type: &'static str },
    #[error("{why}")]
    FeedbackNotApplicable { why: String },
    #[error("cannot forward record {record_id}: {why}")]
    ForwardRefused { record_id: String, why: String },
    #[error("record {record_id} is routed to {department} already")]
    AlreadyRouted {
        record_id: String,
        department: String,
    },
    #[error("{department} is not a department in the routing catalog")]
    UnknownDepartment { department: String },
}

/// What the caller's request comes to, when it is not refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Publish the event.
    Publish,
    /// The same was done before: answer with the entry as it stands, publish nothing.
    AlreadyDone,
}

/// The record and its entries, as the ledger shows them.
pub struct View<'a> {
    pub record: &'a RecordRow,
    pub entries: &'a [Entry],
}

impl View<'_> {
    /// The department's entry, or why it has none.
    pub fn entry(&self, department: &str) -> Result<&Entry, DomainError> {
        self.entries
            .iter()
            .find(|e| e.department == department)
            .ok_or_else(|| DomainError::NotRouted {
                record_id: self.record.record_id.clone(),
                department: department.to_string(),
            })
    }
}

/// 认领: a department claims a record routed to it; again is no change.
pub fn may_claim(view: &View, department: &str) -> Result<Decision, DomainError> {
    let e = view.entry(department)?;
    match e.state {
        EntryState::Pushed | EntryState::Delivered => Ok(Decision::Publish),
        EntryState::Claimed | EntryState::Feedback | EntryState::Closed => {
            Ok(Decision::AlreadyDone)
        }
        EntryState::Returned => Err(DomainError::Returned {
            record_id: e.record_id.clone(),
            department: department.to_string(),
        }),
        EntryState::Forwarded => Err(DomainError::Forwarded {
            record_id: e.record_id.clone(),
            department: department.to_string(),
            note: e.note.clone().unwrap_or_default(),
        }),
    }
}

/// 退回 (非本部门): with a reason, while nothing was done about the record but claiming it.
pub fn may_return(
    view: &View,
    department: &str,
    reason: Option<&str>,
) -> Result<Decision, DomainError> {
    if reason.is_none_or(|r| r.trim().is_empty()) {
        return Err(DomainError::ReasonRequired { action: "return" });
    }
    let e = view.entry(department)?;
    match e.state {
        EntryState::Returned => Ok(Decision::AlreadyDone),
        EntryState::Pushed | EntryState::Delivered | EntryState::Claimed => Ok(Decision::Publish),
        state => Err(DomainError::AlreadyHandled {
            record_id: e.record_id.clone(),
            department: department.to_string(),
            state: state.as_str(),
            outcome: e.outcome.clone(),
        }),
    }
}

/// 反馈: feedback the entry is at the step for (a reply or an attendance confirmation answers an
/// unclaimed record; everything else follows a claim).
pub fn may_feedback(
    view: &View,
    department: &str,
    feedback_type: FeedbackType,
    verification: Option<Verification>,
) -> Result<Decision, DomainError> {
    if feedback_type == FeedbackType::DeemedAgreed {
        return Err(DomainError::ReservedFeedback {
            feedback_type: feedback_type.as_str(),
        });
    }
    let e = view.entry(department)?;
    let first_answer = matches!(
        feedback_type,
        FeedbackType::Reply | FeedbackType::InspectionAttendance | FeedbackType::Attendance
    );
    let open = EntryState::CLAIMED.contains(&e.state) || (first_answer && e.state.is_unclaimed());
    if !open {
        return Err(if e.state.is_unclaimed() {
            DomainError::NotClaimed {
                record_id: e.record_id.clone(),
                department: department.to_string(),
                state: e.state.as_str(),
            }
        } else {
            DomainError::AlreadyHandled {
                record_id: e.record_id.clone(),
                department: department.to_string(),
                state: e.state.as_str(),
                outcome: e.outcome.clone(),
            }
        });
    }
    feedback_step(e, view.record.kind, feedback_type, verification)
        .map(|_| Decision::Publish)
        .map_err(|why| DomainError::FeedbackNotApplicable { why })
}

/// 转交: to another catalog department, with a reason, while unclaimed or claimed.
pub fn may_forward(
    view: &View,
    catalog: &Catalog,
    from: &str,
    to: &str,
    reason: Option<&str>,
) -> Result<Decision, DomainError> {
    if reason.is_none_or(|r| r.trim().is_empty()) {
        return Err(DomainError::ReasonRequired { action: "forward" });
    }
    let e = view.entry(from)?;
    let refuse = |why: String| DomainError::ForwardRefused {
        record_id: e.record_id.clone(),
        why,
    };
    if catalog.department(to).is_none() {
        return Err(DomainError::UnknownDepartment {
            department: to.to_string(),
        });
    }
    if to == from {
        return Err(refuse("a department cannot forward to itself".into()));
    }
    if !(e.state.is_unclaimed() || e.state == EntryState::Claimed) {
        return Err(refuse(format!("it is {} for {from}", e.state.as_str())));
    }
    if view
        .entries
        .iter()
        .any(|o| o.department == to && o.state != EntryState::Returned)
    {
        return Err(refuse(format!("it is routed to {to} already")));
    }
    Ok(Decision::Publish)
}

/// 分派: an admin routes a record to a catalog department that does not hold it (or returned
/// it).
pub fn may_route(
    view: &View,
    catalog: &Catalog,
    department: &str,
) -> Result<Decision, DomainError> {
    if catalog.department(department).is_none() {
        return Err(DomainError::UnknownDepartment {
            department: department.to_string(),
        });
    }
    match view.entries.iter().find(|e| e.department == department) {
        Some(e) if e.state != EntryState::Returned => Err(DomainError::AlreadyRouted {
            record_id: e.record_id.clone(),
            department: department.to_string(),
        }),
        _ => Ok(Decision::Publish),
    }
}
