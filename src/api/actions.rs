//! What departments, the bureau and operators do to records — claim, return, feed back,
//! forward, route — once, for the JSON API and the console: the core says whether the caller may
//! ([`crate::ledger::checks`]), the typed event is built ([`crate::ledger::event`]), published,
//! and waited for until the ledger's projector applied it. A department's own Kafka client
//! produces the same events without asking; the state machine applies them either way.

use serde_json::{Map, Value};

use super::error::ApiError;
use super::AppState;
use crate::bus::Message;
use crate::ledger::checks::{
    may_claim, may_feedback, may_forward, may_return, may_route, Decision, DomainError, View,
};
use crate::ledger::event::{Channel, Verification};
use crate::ledger::{ClaimAction, ClaimEvent, Entry, FeedbackEvent, FeedbackType, RecordRow};
use crate::schema::RecordKind;

/// Who acts: the department (for an operator entering something on a department's behalf,
/// that department), the person or system named in the history, and how it reached the
/// gateway.
#[derive(Debug, Clone)]
pub struct Actor {
    pub department: String,
    pub name: Option<String>,
    pub channel: Channel,
}

/// What became of an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    /// Published and applied by the ledger.
    Applied,
    /// Published; the ledger has not applied it within the wait (it will).
    Published,
    /// Done before: nothing was published.
    AlreadyDone,
}

impl Done {
    /// Whether the ledger shows the action now.
    pub fn shown(self) -> bool {
        self != Done::Published
    }
}

/// The record and its entries as the ledger holds them, or that there is no such record.
pub async fn view(state: &AppState, id: &str) -> Result<(RecordRow, Vec<Entry>), ApiError> {
    match state.ledger()?.record(id).await? {
        Some((record, entries, _)) => Ok((record, entries)),
        None => Err(DomainError::UnknownRecord {
            record_id: id.to_string(),
        }
        .into()),
    }
}

/// Publishes an event's data on its topic and waits (up to the configured wait) until the
/// ledger applied it; `false` when it was published but not applied yet. The data is checked
/// against the topic's schema first.
pub async fn publish(
    state: &AppState,
    kind: RecordKind,
    record_id: &str,
    data: Value,
) -> Result<bool, ApiError> {
    let violations = state.ingestor.schemas.validate(kind, &data);
    if !violations.is_empty() {
        return Err(ApiError::InvalidBody(violations));
    }
    let id = uuid::Uuid::new_v4().to_string();
    let now = state.clock.now();
    let event = crate::pipeline::envelope(kind, &id, "/shenguan/api", record_id, now, data);
    let mut applied = state.applied.subscribe();
    let message = Message {
        topic: state.shared.topics.name(kind),
        key: record_id.to_string(),
        payload: serde_json::to_vec(&event).expect("JSON"),
    };
    state.ingestor.bus.publish(vec![message]).await?;
    let wait = tokio::time::timeout(state.apply_wait, async {
        loop {
            match applied.recv().await {
                Ok(x) if x == id => return true,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return false,
            }
        }
    })
    .await;
    Ok(matches!(wait, Ok(true)))
}

async fn publish_claim(state: &AppState, claim: ClaimEvent) -> Result<Done, ApiError> {
    let id = claim.record_id.clone();
    let data = serde_json::to_value(&claim).expect("a claim serialises");
    Ok(if publish(state, RecordKind::Claim, &id, data).await? {
        Done::Applied
    } else {
        Done::Published
    })
}

fn claim_event(state: &AppState, id: &str, who: &Actor, action: ClaimAction) -> ClaimEvent {
    let mut c = ClaimEvent::new(id, &who.department, action, state.clock.now());
    c.actor = who.name.clone();
    c.channel = Some(who.channel);
    c
}

/// A claim acknowledged in writing outside the platform, entered by an operator.
#[derive(Debug, Clone)]
pub struct OfflineAck {
    pub document_ref: String,
    pub at: Option<chrono::DateTime<chrono::FixedOffset>>,
}

/// 认领: idempotent for the department; refused once returned or forwarded.
pub async fn claim(
    state: &AppState,
    id: &str,
    who: &Actor,
    offline: Option<OfflineAck>,
) -> Result<Done, ApiError> {
    let (record, entries) = view(state, id).await?;
    let v = View {
        record: &record,
        entries: &entries,
    };
    if may_claim(&v, &who.department)? == Decision::AlreadyDone {
        return Ok(Done::AlreadyDone);
    }
    let mut c = claim_event(state, id, who, ClaimAction::Claim);
    if let Some(ack) = offline {
        c.channel = Some(Channel::Offline);
        c.document_ref = Some(ack.document_ref);
        if let Some(at) = ack.at {
            c.at = at;
        }
    }
    publish_claim(state, c).await
}

/// 退回 (非本部门) with a reason: the record goes back to routing.
pub async fn give_back(
    state: &AppState,
    id: &str,
    who: &Actor,
    reason: Option<&str>,
) -> Result<Done, ApiError> {
    let (record, entries) = view(state, id).await?;
    let v = View {
        record: &record,
        entries: &entries,
    };
    if may_return(&v, &who.department, reason)? == Decision::AlreadyDone {
        return Ok(Done::AlreadyDone);
    }
    let mut c = claim_event(state, id, who, ClaimAction::Return);
    c.reason = reason.map(|r| r.trim().to_string());
    publish_claim(state, c).await
}

/// What a feedback says: its type, the verification of a commitment if it is one, and the rest
/// (content, document number, disposition, attendees, attachments, agreement …) as given.
#[derive(Debug, Clone)]
pub struct Feedback {
    pub feedback_type: FeedbackType,
    pub verification: Option<Verification>,
    pub details: Map<String, Value>,
}

/// 反馈: supervision started, rectification, a disposition, a reply, an inspection's attendance
/// or result, a commitment verification — what the entry is at the step for.
pub async fn feedback(
    state: &AppState,
    id: &str,
    who: &Actor,
    input: Feedback,
) -> Result<Done, ApiError> {
    let (record, entries) = view(state, id).await?;
    let v = View {
        record: &record,
        entries: &entries,
    };
    may_feedback(&v, &who.department, input.feedback_type, input.verification)?;
    let mut f = FeedbackEvent::new(id, &who.department, input.feedback_type, state.clock.now());
    f.actor = who.name.clone();
    f.verification = input.verification;
    f.details = input.details;
    let applied = publish(state, RecordKind::Feedback, id, f.data()).await?;
    Ok(if applied {
        Done::Applied
    } else {
        Done::Published
    })
}

/// 转交 to another catalog department (by default the department's upper level in the
/// catalog), with a reason; a retry of a forward changes nothing.
pub async fn forward(
    state: &AppState,
    id: &str,
    who: &Actor,
    to: Option<&str>,
    reason: Option<&str>,
) -> Result<Done, ApiError> {
    // Whose record it is comes first: a department it was not routed to learns nothing more.
    let (record, entries) = view(state, id).await?;
    let v = View {
        record: &record,
        entries: &entries,
    };
    let entry = v.entry(&who.department)?;
    let to = match to.filter(|t| !t.trim().is_empty()) {
        Some(to) => to.to_string(),
        None => state
            .shared
            .catalog
            .department(&who.department)
            .and_then(|d| d.parent.clone())
            .ok_or_else(|| {
                ApiError::invalid(
                    "receiver-required",
                    "Receiver required",
                    format!(
                        "{} has no upper-level department in the catalog; name one in \"to\"",
                        who.department
                    ),
                )
            })?,
    };
    if to == who.department {
        return Err(ApiError::invalid(
            "receiver-is-sender",
            "Receiver is the sender",
            "a department does not send to itself",
        ));
    }
    if entry.state == crate::ledger::EntryState::Forwarded {
        return Ok(Done::AlreadyDone);
    }
    may_forward(&v, &state.shared.catalog, &who.department, &to, reason)?;
    let mut c = claim_event(state, id, who, ClaimAction::Forward);
    c.to = Some(to);
    c.reason = reason.map(|r| r.trim().to_string());
    publish_claim(state, c).await
}

/// 分派: an operator routes a record to catalog departments (the unrouted queue, or a department
/// more). Every department is checked before anything is published.
pub async fn route(
    state: &AppState,
    id: &str,
    departments: &[String],
    actor: Option<&str>,
    channel: Channel,
) -> Result<Done, ApiError> {
    if departments.is_empty() {
        return Err(ApiError::invalid(
            "departments-required",
            "Departments required",
            "{\"departments\": [\"code\", …]}",
        ));
    }
    let (record, entries) = view(state, id).await?;
    let v = View {
        record: &record,
        entries: &entries,
    };
    for d in departments {
        may_route(&v, &state.shared.catalog, d)?;
    }
    let mut done = Done::Applied;
    for d in departments {
        let who = Actor {
            department: d.clone(),
            name: actor.map(str::to_string),
            channel,
        };
        if publish_claim(state, claim_event(state, id, &who, ClaimAction::Route)).await?
            == Done::Published
        {
            done = Done::Published;
        }
    }
    Ok(done)
}
