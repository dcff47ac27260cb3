//! The ledger's events, typed: the structs the producers (the HTTP API, the tracker, the
//! deliverer) serialise into CloudEvents and the projector decodes back, so both sides share one
//! definition. Departments with a Kafka client produce the same `claim.v1` and `feedback.v1` data.
//!
//! Every event has an [`EventOrd`]: its business time, then a rank by topic, then its id. The
//! ledger applies a record's events in that order whatever order the topics are read in, which is
//! what makes a rebuild equal to the live ledger (see `fold`).

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::Arc;

use crate::schema::RecordKind;

/// RFC 3339 with milliseconds (`2026-11-23T09:00:00.123+08:00`), as events write the time
/// they happened (to the millisecond, so events of one record sort as they happened); any RFC
/// 3339 time is read.
pub mod rfc3339 {
    use chrono::{DateTime, FixedOffset};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<FixedOffset>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::super::event_time(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<FixedOffset>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text)
            .map_err(|e| serde::de::Error::custom(format!("'{text}' is not an RFC 3339 time: {e}")))
    }

    /// The same for an optional time.
    pub mod option {
        use chrono::{DateTime, FixedOffset};
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(
            t: &Option<DateTime<FixedOffset>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => super::serialize(t, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<DateTime<FixedOffset>>, D::Error> {
            match Option::<std::borrow::Cow<'de, str>>::deserialize(d)? {
                None => Ok(None),
                Some(text) => DateTime::parse_from_rfc3339(&text).map(Some).map_err(|e| {
                    serde::de::Error::custom(format!("'{text}' is not an RFC 3339 time: {e}"))
                }),
            }
        }
    }
}

/// What a `claim.v1` event does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimAction {
    /// 认领: the department accepts the record.
    Claim,
    /// 退回: not the department's business (非本部门); the record goes back to routing.
    Return,
    /// 转交: passed on to the department in `to`.
    Forward,
    /// 分派: an admin routes the record to the department.
    Route,
    /// 送达: the record reached the department's system (webhook acknowledged).
    Deliver,
    /// 清理: retention — the record is finished and past its retention period; the ledger deletes
    /// it and ignores anything about it that arrives later.
    Purge,
}

impl ClaimAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ClaimAction::Claim => "claim",
            ClaimAction::Return => "return",
            ClaimAction::Forward => "forward",
            ClaimAction::Route => "route",
            ClaimAction::Deliver => "deliver",
            ClaimAction::Purge => "purge",
        }
    }
}

/// How a claim reached the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Rest,
    Kafka,
    Offline,
    /// Through the web console.
    Console,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Rest => "rest",
            Channel::Kafka => "kafka",
            Channel::Offline => "offline",
            Channel::Console => "console",
        }
    }
}

/// `shenguan.claim.v1` data: claim, return, forward, route, deliver, purge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimEvent {
    /// The CloudEvent id (not part of the data).
    #[serde(skip)]
    pub event_id: String,
    pub record_id: String,
    pub department: String,
    pub action: ClaimAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(with = "rfc3339")]
    pub at: DateTime<FixedOffset>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<Channel>,
    /// For `forward`: the receiving department.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// For a claim entered after an offline acknowledgement: its reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document_ref: Option<String>,
}

impl ClaimEvent {
    /// A claim-topic event with the required fields; the rest is set by the caller.
    pub fn new(
        record_id: &str,
        department: &str,
        action: ClaimAction,
        at: DateTime<FixedOffset>,
    ) -> ClaimEvent {
        ClaimEvent {
            event_id: String::new(),
            record_id: record_id.to_string(),
            department: department.to_string(),
            action,
            reason: None,
            actor: None,
            at,
            channel: None,
            to: None,
            document_ref: None,
        }
    }
}

/// The kinds of `feedback.v1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedbackType {
    SupervisionStarted,
    Rectification,
    Disposition,
    Reply,
    DeemedAgreed,
    InspectionAttendance,
    InspectionResult,
    CommitmentVerified,
    /// Who attends a meeting or training the department is invited to.
    Attendance,
    Other,
}

impl FeedbackType {
    pub fn as_str(self) -> &'static str {
        match self {
            FeedbackType::SupervisionStarted => "supervision_started",
            FeedbackType::Rectification => "rectification",
            FeedbackType::Disposition => "disposition",
            FeedbackType::Reply => "reply",
            FeedbackType::DeemedAgreed => "deemed_agreed",
            FeedbackType::InspectionAttendance => "inspection_attendance",
            FeedbackType::InspectionResult => "inspection_result",
            FeedbackType::CommitmentVerified => "commitment_verified",
            FeedbackType::Attendance => "attendance",
            FeedbackType::Other => "other",
        }
    }
}

/// The outcome of a 告知承诺 verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verification {
    Fulfilled,
    Unfulfilled,
}

/// `shenguan.feedback.v1` data. The fields the ledger acts on are typed; the rest (content,
/// document numbers, attendees, attachments …) is kept as given and shown in the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedbackEvent {
    #[serde(skip)]
    pub event_id: String,
    pub record_id: String,
    pub department: String,
    pub feedback_type: FeedbackType,
    #[serde(with = "rfc3339")]
    pub at: DateTime<FixedOffset>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    /// Everything else the feedback says.
    #[serde(flatten)]
    pub details: Map<String, Value>,
}

impl FeedbackEvent {
    pub fn new(
        record_id: &str,
        department: &str,
        feedback_type: FeedbackType,
        at: DateTime<FixedOffset>,
    ) -> FeedbackEvent {
        FeedbackEvent {
            event_id: String::new(),
            record_id: record_id.to_string(),
            department: department.to_string(),
            feedback_type,
            at,
            actor: None,
            verification: None,
            details: Map::new(),
        }
    }

    /// The whole data as JSON (for the history).
    pub fn data(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// A record published on `approval.v1`, `supervision.v1` or `notice.v1`: its CloudEvent id and
/// time and the canonical record.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordEvent {
    pub kind: RecordKind,
    pub event_id: String,
    pub record_id: String,
    pub time: DateTime<FixedOffset>,
    /// Shared with the record row the fold builds from it.
    pub data: Arc<Value>,
    /// What the record is looked up by, read from `data` when it was decoded.
    pub keys: super::RecordKeys,
}

/// A ledger event decoded from a bus message.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Record(RecordEvent),
    Claim(ClaimEvent),
    Feedback(FeedbackEvent),
    /// An alert level the tracker raised on an entry (due soon, overdue, escalated).
    Level(super::Alert),
}

/// Where a ledger event sorts among the events of its record: business time, then the topic's
/// rank (a record before a claim before feedback before an alert at the same instant), then its
/// offset in its topic (a record's events of one topic share a partition: the bus's own order),
/// then the event id. A total order that depends only on the events and where the bus keeps
/// them, so every interleaving of the topics folds the same way.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventOrd {
    /// Milliseconds since the epoch.
    pub at_ms: i64,
    pub rank: u8,
    /// The offset of the message in its topic partition.
    pub pos: i64,
    pub event_id: String,
}

impl Event {
    pub fn record_id(&self) -> &str {
        match self {
            Event::Record(r) => &r.record_id,
            Event::Claim(c) => &c.record_id,
            Event::Feedback(f) => &f.record_id,
            Event::Level(a) => &a.record_id,
        }
    }

    pub fn event_id(&self) -> &str {
        match self {
            Event::Record(r) => &r.event_id,
            Event::Claim(c) => &c.event_id,
            Event::Feedback(f) => &f.event_id,
            Event::Level(a) => &a.id,
        }
    }

    /// The topic's kind.
    pub fn kind(&self) -> RecordKind {
        match self {
            Event::Record(r) => r.kind,
            Event::Claim(_) => RecordKind::Claim,
            Event::Feedback(_) => RecordKind::Feedback,
            Event::Level(_) => RecordKind::Alert,
        }
    }

    pub fn at(&self) -> DateTime<FixedOffset> {
        match self {
            Event::Record(r) => r.time,
            Event::Claim(c) => c.at,
            Event::Feedback(f) => f.at,
            Event::Level(a) => a.at,
        }
    }

    /// Its place among its record's events, given its offset on the bus.
    pub fn ord(&self, pos: i64) -> EventOrd {
        let rank = match self {
            Event::Record(_) => 0,
            Event::Claim(c) if c.action == ClaimAction::Purge => 9,
            Event::Claim(_) => 1,
            Event::Feedback(_) => 2,
            Event::Level(_) => 3,
        };
        EventOrd {
            at_ms: self.at().timestamp_millis(),
            rank,
            pos,
            event_id: self.event_id().to_string(),
        }
    }

    /// A purge (retention) event.
    pub fn is_purge(&self) -> bool {
        matches!(self, Event::Claim(c) if c.action == ClaimAction::Purge)
    }
}

/// Why a message on a ledger topic is not a ledger event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not a CloudEvent in JSON: {0}")]
    Envelope(String),
    #[error("{topic} data: {reason}")]
    Data { topic: &'static str, reason: String },
    #[error("{0} events are not ledger events")]
    NotLedger(&'static str),
}

/// What decoding a message of a ledger topic gives.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    Event(Box<Event>),
    /// A message the ledger reads past: an alert that is a notification (a claim closing an
    /// alert, a late push, a digest, a deemed agreement), not a level raised on an entry.
    Skip,
}

#[derive(Deserialize)]
struct Envelope<T> {
    id: String,
    #[serde(default, with = "rfc3339::option")]
    time: Option<DateTime<FixedOffset>>,
    data: T,
}

#[derive(Deserialize)]
struct LevelOnly {
    level: String,
}

/// The levels the tracker raises on entries; other alerts are notifications.
pub const RAISED_LEVELS: [&str; 3] = ["due_soon", "overdue", "escalated"];

/// Parses JSON from bytes checked as UTF-8 once, in one pass over the whole message: parsing
/// from a `&str`, serde_json reads strings without checking each one, which on a record of
/// Chinese text was about a tenth of its parse. Bytes that are not UTF-8 are parsed as bytes, for
/// serde_json's own error with its place.
fn parse<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> serde_json::Result<T> {
    match simdutf8::basic::from_utf8(payload) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(payload),
    }
}

/// Decodes a CloudEvent from the topic that carries `kind`.
pub fn decode(kind: RecordKind, payload: &[u8]) -> Result<Decoded, DecodeError> {
    let topic = kind.versioned();
    let data_error = |e: serde_json::Error| DecodeError::Data {
        topic,
        reason: e.to_string(),
    };
    match kind {
        RecordKind::Approval | RecordKind::Supervision | RecordKind::Notice => {
            let env: Envelope<Value> =
                parse(payload).map_err(|e| DecodeError::Envelope(e.to_string()))?;
            let record_id = match env.data.get("record_id") {
                Some(Value::String(id)) if !id.is_empty() => id.clone(),
                Some(other) => {
                    return Err(DecodeError::Data {
                        topic,
                        reason: format!("record_id {other} is not a record id"),
                    })
                }
                None => {
                    return Err(DecodeError::Data {
                        topic,
                        reason: "missing field `record_id`".into(),
                    })
                }
            };
            let time = env.time.ok_or_else(|| DecodeError::Data {
                topic,
                reason: "the CloudEvent has no time".into(),
            })?;
            Ok(Decoded::Event(Box::new(Event::Record(RecordEvent {
                kind,
                event_id: env.id,
                record_id,
                time,
                keys: super::RecordKeys::of(kind, &env.data),
                data: Arc::new(env.data),
            }))))
        }
        RecordKind::Claim => {
            let env: Envelope<ClaimEvent> = parse(payload).map_err(data_error)?;
            let mut c = env.data;
            c.event_id = env.id;
            Ok(Decoded::Event(Box::new(Event::Claim(c))))
        }
        RecordKind::Feedback => {
            let env: Envelope<FeedbackEvent> = parse(payload).map_err(data_error)?;
            let mut f = env.data;
            f.event_id = env.id;
            Ok(Decoded::Event(Box::new(Event::Feedback(f))))
        }
        RecordKind::Alert => {
            let env: Envelope<LevelOnly> = parse(payload).map_err(data_error)?;
            if !RAISED_LEVELS.contains(&env.data.level.as_str()) {
                return Ok(Decoded::Skip);
            }
            let env: Envelope<super::Alert> = parse(payload).map_err(data_error)?;
            let mut a = env.data;
            a.id = env.id;
            Ok(Decoded::Event(Box::new(Event::Level(a))))
        }
        RecordKind::Dlq => Err(DecodeError::NotLedger("dlq")),
    }
}

/// The bytes the ledger logs for a message it applied: what [`decode`] reads again when the
/// record is folded anew, and the record's data the API shows. A record's CloudEvent is logged
/// as its `id`, `time` and `data` only — the attributes the bus's copy keeps (`specversion`,
/// `source`, `type`, `subject`, `partitionkey` …) are about 300 of its bytes, and a logged
/// record of 1.3–1.7 KB of data with them no longer fitted two to a 4 KiB page: each took a
/// page of its own in the table and in the log. Other events are logged as they came; so is
/// anything that is not an envelope of that shape (bytes that are not UTF-8, which no event
/// that decoded has, with U+FFFD in their place).
pub fn logged_payload(kind: RecordKind, payload: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Parts<'a> {
        #[serde(borrow)]
        id: &'a serde_json::value::RawValue,
        #[serde(borrow, default)]
        time: Option<&'a serde_json::value::RawValue>,
        #[serde(borrow)]
        data: &'a serde_json::value::RawValue,
    }
    let as_came = || String::from_utf8_lossy(payload).into_owned();
    if !matches!(
        kind,
        RecordKind::Approval | RecordKind::Supervision | RecordKind::Notice
    ) {
        return as_came();
    }
    let Ok(parts) = parse::<Parts>(payload) else {
        return as_came();
    };
    let (id, data) = (parts.id.get(), parts.data.get());
    let time = parts.time.map(|t| t.get());
    let mut out = String::with_capacity(id.len() + data.len() + 64);
    out.push_str("{\"id\":");
    out.push_str(id);
    if let Some(time) = time {
        out.push_str(",\"time\":");
        out.push_str(time);
    }
    out.push_str(",\"data\":");
    out.push_str(data);
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(s).unwrap()
    }

    #[test]
    fn a_claim_written_by_a_producer_decodes_to_the_same_event() {
        let mut c = ClaimEvent::new(
            "r1",
            "szs-scjg",
            ClaimAction::Claim,
            t("2026-11-23T09:00:00+08:00"),
        );
        c.actor = Some("张三".into());
        c.channel = Some(Channel::Rest);
        let payload = serde_json::json!({
            "specversion": "1.0", "id": "ev-1", "type": "cn.shenguan.claim.v1",
            "data": serde_json::to_value(&c).unwrap(),
        });
        let Decoded::Event(event) =
            decode(RecordKind::Claim, payload.to_string().as_bytes()).unwrap()
        else {
            panic!("not an event")
        };
        let Event::Claim(back) = *event else {
            panic!("not a claim")
        };
        c.event_id = "ev-1".into();
        assert_eq!(back, c);
    }

    #[test]
    fn an_unknown_claim_action_is_an_error_that_says_so() {
        let payload = r#"{"id":"e","data":{"record_id":"r","department":"d","action":"grab","at":"2026-11-23T09:00:00+08:00"}}"#;
        let e = decode(RecordKind::Claim, payload.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("grab"), "{e}");
    }

    #[test]
    fn bytes_that_are_not_utf8_get_serde_jsons_error_with_its_place() {
        let payload = b"{\"id\":\"ev-1\",\"time\":\"2026-03-02T11:00:00+08:00\",\"data\":{\"record_id\":\"r\xff\"}}";
        let err = decode(RecordKind::Approval, payload).unwrap_err();
        let expected = serde_json::from_slice::<Value>(payload)
            .unwrap_err()
            .to_string();
        assert_eq!(err, DecodeError::Envelope(expected.clone()));
        assert!(expected.contains("line 1 column"), "{expected}");
        // The same message as text decodes: the check as UTF-8 is only where it parses from.
        let text = "{\"id\":\"ev-1\",\"time\":\"2026-03-02T11:00:00+08:00\",\"data\":{\"record_id\":\"r许\"}}";
        let Decoded::Event(event) = decode(RecordKind::Approval, text.as_bytes()).unwrap() else {
            panic!("an event");
        };
        assert_eq!(event.record_id(), "r许");
    }

    #[test]
    fn a_logged_record_decodes_as_the_message_it_was_logged_from() {
        let message = serde_json::json!({
            "specversion": "1.0", "id": "ev-7", "source": "/shenguan/adapters/nx-zwfw-approval",
            "type": "cn.shenguan.approval.v1", "subject": "r-7", "partitionkey": "r-7",
            "time": "2026-11-23T09:00:00.123+08:00", "datacontenttype": "application/json",
            "data": {"record_id": "r-7", "kind": "approval", "title": "食品经营许可 \"新办\"",
                     "item": {"code": "1164", "name": "食品经营许可"}, "tags": [1, 2.5, null]},
        })
        .to_string();
        let logged = logged_payload(RecordKind::Approval, message.as_bytes());
        assert!(logged.len() + 150 < message.len(), "{logged}");
        assert_eq!(
            decode(RecordKind::Approval, logged.as_bytes()).unwrap(),
            decode(RecordKind::Approval, message.as_bytes()).unwrap()
        );
        // A message without a time decodes to the same error either way.
        let untimed = r#"{"id":"e","data":{"record_id":"r"}}"#;
        assert_eq!(
            decode(
                RecordKind::Approval,
                logged_payload(RecordKind::Approval, untimed.as_bytes()).as_bytes()
            ),
            decode(RecordKind::Approval, untimed.as_bytes())
        );
        // Other events, and what is not an envelope, are logged as they came.
        let claim = r#"{"specversion":"1.0","id":"e","data":{"record_id":"r"}}"#;
        assert_eq!(logged_payload(RecordKind::Claim, claim.as_bytes()), claim);
        assert_eq!(
            logged_payload(RecordKind::Approval, b"not json"),
            "not json"
        );
    }

    #[test]
    fn alerts_that_are_notifications_are_read_past() {
        let payload = r#"{"id":"e","data":{"record_id":"r","level":"closed","rule":"claim_approval","at":"2026-11-23T09:00:00+08:00"}}"#;
        assert_eq!(
            decode(RecordKind::Alert, payload.as_bytes()).unwrap(),
            Decoded::Skip
        );
    }

    #[test]
    fn events_order_by_time_then_topic_then_id() {
        let at = t("2026-11-23T09:00:00+08:00");
        let claim = Event::Claim(ClaimEvent::new("r", "d", ClaimAction::Claim, at));
        let purge = Event::Claim(ClaimEvent::new("r", "d", ClaimAction::Purge, at));
        let record = Event::Record(RecordEvent {
            kind: RecordKind::Approval,
            event_id: "z".into(),
            record_id: "r".into(),
            time: at,
            data: Arc::new(Value::Null),
            keys: Default::default(),
        });
        assert!(record.ord(5) < claim.ord(0));
        assert!(claim.ord(0) < purge.ord(0));
        assert!(
            claim.ord(0) < claim.ord(1),
            "the bus's order within a topic"
        );
    }
}
