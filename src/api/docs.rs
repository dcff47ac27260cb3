//! Schema types for answers serialized from types outside the API layer — the ingest report
//! ([`crate::ingest::IngestReport`]), the monthly report ([`crate::ledger::report::Report`]) and
//! the problem document ([`super::problem::Problem`], whose extension members are open) — of the
//! same shape, for the OpenAPI document. `tests/api.rs` validates real answers against these
//! schemas, so a change of shape fails there.

use serde::Serialize;
use utoipa::ToSchema;

/// An RFC 9457 problem document (`application/problem+json`). Extension members name what the
/// problem is about: `dlq_id` (the DLQ entry of a refused body), `stage` and `reason` (why it was
/// refused), `errors` (each violation: index, path, reason), `content_length`, `max_limit`.
#[derive(Serialize, ToSchema)]
#[schema(as = Problem)]
pub struct ProblemResponse {
    /// `urn:shenguan:problem:<slug>`, e.g. `urn:shenguan:problem:forbidden`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong and what to do, personal data masked.
    pub detail: String,
    /// The DLQ entry that keeps the refused input.
    pub dlq_id: Option<String>,
    /// Pipeline stage of a refused body (`decode`, `parse` …).
    pub stage: Option<String>,
    /// Machine-readable reason of a refused body (`malformed_json`, `invalid_encoding` …).
    pub reason: Option<String>,
    #[schema(value_type = Option<Vec<RecordErrorDoc>>)]
    pub errors: Option<serde_json::Value>,
    /// The declared size of a body refused unread.
    pub content_length: Option<u64>,
    /// The largest `limit` a paginated endpoint takes.
    pub max_limit: Option<u64>,
}

/// One error of one record.
#[derive(Serialize, ToSchema)]
#[schema(as = RecordError)]
pub struct RecordErrorDoc {
    /// Index of the record in the request (null for the whole body).
    pub index: Option<u64>,
    /// A JSONPath into the source record, or a JSON pointer into the canonical record.
    pub path: String,
    /// What is wrong, personal data masked.
    pub reason: String,
}

/// An accepted (or duplicate) record.
#[derive(Serialize, ToSchema)]
#[schema(as = AcceptedRecord)]
pub struct AcceptedRecordDoc {
    /// Index of the record in the request.
    pub index: u64,
    /// The record id (stable for the adapter and business key).
    pub id: String,
    /// The CloudEvent id (record id + content).
    pub event_id: String,
    pub business_key: String,
}

/// A rejected record, kept in the DLQ.
#[derive(Serialize, ToSchema)]
#[schema(as = RejectedRecord)]
pub struct RejectedRecordDoc {
    pub index: Option<u64>,
    /// `decode`, `parse`, `map`, `validate` …
    pub stage: String,
    /// `invalid_identifier`, `schema_violation`, `unknown_code` …
    pub reason: String,
    pub dlq_id: String,
    pub errors: Vec<RecordErrorDoc>,
}

/// The answer to an ingest request.
#[derive(Serialize, ToSchema)]
#[schema(as = IngestReport)]
pub struct IngestAnswer {
    pub adapter: String,
    /// Records in the request.
    pub received: u64,
    pub accepted: Vec<AcceptedRecordDoc>,
    /// Sent before with the same content: not published again.
    pub duplicates: Vec<AcceptedRecordDoc>,
    pub rejected: Vec<RejectedRecordDoc>,
}

/// A receiving department's line of the monthly report: a department, a kind and a flow.
#[derive(Serialize, ToSchema)]
#[schema(as = ReportClaimLine)]
pub struct ClaimLineDoc {
    pub department: String,
    /// The catalog's name for the department.
    pub department_name: Option<String>,
    /// `approval`, `supervision` or `notice`.
    pub kind: String,
    /// `claim`, `commitment`, `decision`, `notice`, `attendance`, `inquiry` or `inspection`.
    pub flow: String,
    /// Entries pushed to the department in the month (an update of a record is a push).
    pub pushed: u64,
    pub claimed: u64,
    /// Claimed by the deadline; null when the flow has no deadline.
    pub claimed_on_time: Option<u64>,
    pub claimed_late: Option<u64>,
    /// Not claimed yet.
    pub open: u64,
    /// Not claimed and past the deadline at the report time; null without deadlines.
    pub open_overdue: Option<u64>,
    pub returned: u64,
    pub forwarded: u64,
    pub offline: u64,
    pub updates: u64,
    /// Entries that were due (claimed, or past the deadline); null without deadlines.
    pub due: Option<u64>,
    /// claimed_on_time ÷ due, 0..1; null when nothing was due or there is no deadline.
    pub on_time_rate: Option<f64>,
    /// Median working hours from push to claim.
    pub median_claim_hours: Option<f64>,
    pub p90_claim_hours: Option<f64>,
    pub replied: u64,
    pub deemed_agreed: u64,
    pub attending: u64,
    pub signed_off: u64,
    pub verified: u64,
    pub unfulfilled: u64,
    pub follow_up_overdue: u64,
}

/// A pushing party's line of the monthly report.
#[derive(Serialize, ToSchema)]
#[schema(as = ReportPushLine)]
pub struct PushLineDoc {
    /// The pushing party's code (`unknown` when the ledger cannot tell).
    pub pusher: String,
    pub pusher_name: Option<String>,
    pub kind: String,
    pub pushed: u64,
    /// Of those, with a push deadline.
    pub with_deadline: u64,
    pub on_time: Option<u64>,
    pub late: Option<u64>,
    /// on_time ÷ with_deadline; null without deadlines.
    pub on_time_rate: Option<f64>,
    /// Median working hours from the decision (or receipt) to the push.
    pub median_push_hours: Option<f64>,
    pub p90_push_hours: Option<f64>,
}

/// The monthly report (每月通报): the push side per pushing party, the claim side per receiving
/// department, and how each figure is counted.
#[derive(Serialize, ToSchema)]
#[schema(as = MonthlyReport)]
pub struct MonthlyReport {
    /// `YYYY-MM`.
    pub month: String,
    pub generated_at: String,
    /// The calendar data the working days were counted with.
    pub calendar_version: String,
    pub pushes: Vec<PushLineDoc>,
    pub claims: Vec<ClaimLineDoc>,
    /// How each figure is counted.
    pub notes: String,
}
