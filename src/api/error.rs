//! The one place where everything a handler can fail with becomes an RFC 9457 problem: who is
//! calling (401, 403, 429), what was asked for (404), the request itself (400, 413, 415), the
//! refusals of the ledger's rules (409), and the stores and the bus behind the API (503 with
//! `Retry-After`). Handlers return `Result<_, ApiError>` and use `?`; the status, the problem
//! `type` (`urn:shenguan:problem:<slug>`) and the title of each case are chosen here and nowhere
//! else, and the detail is the error's message (personal data masked by [`Problem::new`]).

use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::problem::Problem;
use crate::bus::BusError;
use crate::ingest::IngestError;
use crate::ledger::checks::DomainError;
use crate::ledger::store::LedgerError;
use crate::schema::Violation;
use crate::state::StateError;

/// Why a request was not done.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    // --- Who is calling.
    #[error("send 'Authorization: Bearer <token>'")]
    NoToken,
    #[error("the Authorization header must use the Bearer scheme")]
    NotBearer,
    #[error("the bearer token is not known or was revoked")]
    UnknownToken,
    #[error("this token is over its request rate; retry later")]
    RateLimited { retry_after: u64 },
    /// The caller's token does not allow this; the message says which token would.
    #[error("{0}")]
    Forbidden(String),

    // --- What was asked for.
    #[error("no such endpoint")]
    NoEndpoint,
    /// A path that instances of another role serve.
    #[error("this is a {role} instance (--role {role}); this path is served by {served_by} instances (or --role all): send it there")]
    WrongRole {
        role: crate::role::Role,
        served_by: crate::role::Role,
    },
    #[error("no adapter named '{0}' is loaded")]
    UnknownAdapter(String),
    #[error("no active token with id {0}")]
    UnknownTokenId(String),
    #[error("no DLQ entry {0}")]
    UnknownDlqEntry(String),

    // --- The request itself.
    /// A query parameter that cannot be read.
    #[error("{0}")]
    BadQuery(String),
    #[error("{0}")]
    BadPath(String),
    #[error("limit {limit} is over the maximum of {max}; ask for at most {max} and follow next_cursor for the rest")]
    LimitTooLarge { limit: usize, max: usize },
    #[error("{0}; start again from the first page (no cursor)")]
    BadCursor(String),
    #[error("{0}")]
    BadMonth(String),
    /// A body that is not the JSON the endpoint reads.
    #[error("{0}")]
    MalformedBody(String),
    /// A body read as JSON whose event would break its schema; the first violation.
    #[error("{}", .0.first().map(|e| e.reason.as_str()).unwrap_or("the request body breaks the schema"))]
    InvalidBody(Vec<Violation>),
    /// A field the endpoint needs is missing or wrong: `slug` names the problem type.
    #[error("{detail}")]
    Invalid {
        slug: &'static str,
        title: &'static str,
        detail: String,
    },
    #[error("Content-Type '{got}' is not accepted by adapter {adapter}; send {expected} (with charset=utf-8 or gb18030 for text)")]
    UnsupportedMediaType {
        got: String,
        adapter: String,
        expected: &'static str,
    },
    #[error("the body exceeds {limit} bytes; split the batch")]
    BodyTooLarge {
        limit: usize,
        content_length: Option<usize>,
    },
    #[error("{0}")]
    BodyUnreadable(String),
    /// A refused request whose bytes were kept in the dead-letter queue.
    #[error("{cause}")]
    DeadLettered {
        cause: Box<ApiError>,
        dlq_id: String,
    },

    // --- The ledger's rules: may this caller do this to this record now? The core decides
    // (`crate::ledger::checks`); its refusals become problems in `domain_problem`.
    #[error(transparent)]
    Domain(#[from] DomainError),

    // --- What the API stands on.
    #[error("ledger unavailable: {0}")]
    Ledger(#[from] LedgerError),
    #[error("state store unavailable: {0}")]
    State(#[from] StateError),
    /// Publishing an event failed: nothing was recorded.
    #[error("{0}; nothing was recorded, send the request again")]
    Publish(#[from] BusError),
    /// The bus is not reachable (readiness).
    #[error("{0}")]
    NotReady(BusError),
    /// Something this instance's role needs is not ready yet (readiness).
    #[error("{0}")]
    Starting(String),
    #[error("{0}")]
    Ingest(#[from] IngestError),
}

impl ApiError {
    /// A 400 with its own problem type.
    pub fn invalid(slug: &'static str, title: &'static str, detail: impl Into<String>) -> Self {
        ApiError::Invalid {
            slug,
            title,
            detail: detail.into(),
        }
    }

    /// The problem document this error is answered with.
    pub fn problem(&self) -> Problem {
        use ApiError::*;
        let detail = self.to_string();
        let status_of =
            |s: u16| StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let new = |status: StatusCode, slug: &str, title: &str| {
            Problem::new(status, slug, title, detail.clone())
        };
        match self {
            NoToken | NotBearer | UnknownToken => {
                let mut p = new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "Missing or unknown bearer token",
                );
                p.authenticate = true;
                p
            }
            RateLimited { retry_after } => {
                let mut p = new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate-limited",
                    "Too many requests",
                );
                p.retry_after = Some((*retry_after).max(1));
                p
            }
            Forbidden(_) => new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "Not allowed for this token",
            ),
            NoEndpoint => new(StatusCode::NOT_FOUND, "not-found", "Not found"),
            WrongRole { role, served_by } => new(
                StatusCode::NOT_FOUND,
                "wrong-role",
                "Served by instances of another role",
            )
            .with("role", role.as_str())
            .with("served_by", served_by.as_str()),
            UnknownAdapter(_) => new(StatusCode::NOT_FOUND, "unknown-adapter", "Unknown adapter"),
            UnknownTokenId(_) => new(StatusCode::NOT_FOUND, "unknown-token", "Unknown token"),
            UnknownDlqEntry(_) => new(
                StatusCode::NOT_FOUND,
                "unknown-dlq-entry",
                "Unknown DLQ entry",
            ),
            BadQuery(_) => new(StatusCode::BAD_REQUEST, "bad-query", "Bad query"),
            BadPath(_) => new(StatusCode::BAD_REQUEST, "bad-path", "Bad path"),
            LimitTooLarge { max, .. } => new(
                StatusCode::BAD_REQUEST,
                "limit-too-large",
                "Page size over the maximum",
            )
            .with("max_limit", max),
            BadCursor(_) => new(StatusCode::BAD_REQUEST, "bad-cursor", "Bad cursor"),
            BadMonth(_) => new(StatusCode::BAD_REQUEST, "bad-month", "Bad month"),
            MalformedBody(_) => new(StatusCode::BAD_REQUEST, "malformed-body", "Malformed JSON"),
            InvalidBody(errors) => new(
                StatusCode::BAD_REQUEST,
                "invalid-body",
                "Invalid request body",
            )
            .with("errors", errors),
            Invalid { slug, title, .. } => new(StatusCode::BAD_REQUEST, slug, title),
            UnsupportedMediaType { .. } => new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            ),
            BodyTooLarge { content_length, .. } => {
                let p = new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body-too-large",
                    "Request body too large",
                );
                match content_length {
                    Some(len) => p.with("content_length", len),
                    None => p,
                }
            }
            BodyUnreadable(_) => new(
                StatusCode::BAD_REQUEST,
                "body-unreadable",
                "Request body unreadable",
            ),
            DeadLettered { cause, dlq_id } => cause.problem().with("dlq_id", dlq_id),
            Domain(refusal) => {
                let (status, slug, title) = domain_problem(refusal);
                new(status, slug, title)
            }
            Ledger(_) | State(_) | Publish(_) | NotReady(_) | Starting(_) => unavailable(detail),
            Ingest(IngestError::Body(rejection, dlq_id)) => {
                let slug = match rejection.rejection.reason {
                    "too_many_records" => "too-many-records",
                    "malformed_json" | "malformed_xml" | "malformed_csv" | "malformed_xlsx" => {
                        "malformed-body"
                    }
                    "unsupported_format" => "unsupported-media-type",
                    _ => "undecodable-body",
                };
                let detail = rejection
                    .rejection
                    .errors
                    .first()
                    .map(|e| e.reason.clone())
                    .unwrap_or_default();
                Problem::new(status_of(rejection.status), slug, rejection.title, detail)
                    .with("dlq_id", dlq_id)
                    .with("stage", rejection.rejection.stage)
                    .with("reason", rejection.rejection.reason)
            }
            Ingest(e @ (IngestError::Bus(_) | IngestError::State(_))) => {
                unavailable(format!("{e}; nothing was accepted, send the request again"))
            }
        }
    }
}

/// The status, problem type and title of each of the core's refusals. Exhaustive: a new refusal
/// in the core is decided here before it compiles.
fn domain_problem(e: &DomainError) -> (StatusCode, &'static str, &'static str) {
    use DomainError::*;
    match e {
        UnknownRecord { .. } | NotArrived { .. } => {
            (StatusCode::NOT_FOUND, "unknown-record", "Unknown record")
        }
        NotRouted { .. } => (
            StatusCode::FORBIDDEN,
            "forbidden",
            "Not allowed for this token",
        ),
        Returned { .. } => (StatusCode::CONFLICT, "returned", "Record was returned"),
        Forwarded { .. } => (StatusCode::CONFLICT, "forwarded", "Record was forwarded"),
        AlreadyHandled { .. } => (
            StatusCode::CONFLICT,
            "already-handled",
            "Record already handled",
        ),
        NotClaimed { .. } => (
            StatusCode::CONFLICT,
            "not-claimed",
            "Claim the record first",
        ),
        ReasonRequired { .. } => (
            StatusCode::BAD_REQUEST,
            "reason-required",
            "A reason is required",
        ),
        ReservedFeedback { .. } => (
            StatusCode::BAD_REQUEST,
            "reserved-feedback-type",
            "Recorded by the gateway",
        ),
        FeedbackNotApplicable { .. } => (
            StatusCode::CONFLICT,
            "feedback-not-applicable",
            "Feedback does not apply to this record now",
        ),
        ForwardRefused { .. } => (StatusCode::CONFLICT, "forward-refused", "Cannot forward"),
        AlreadyRouted { .. } => (
            StatusCode::CONFLICT,
            "already-routed",
            "Already routed there",
        ),
        UnknownDepartment { .. } => (
            StatusCode::BAD_REQUEST,
            "unknown-department",
            "Unknown department",
        ),
    }
}

/// A 503 with `Retry-After`: what the API stands on is down for now; nothing was done.
fn unavailable(detail: String) -> Problem {
    let mut p = Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "Temporarily unavailable; retry",
        detail,
    );
    p.retry_after = Some(5);
    p
}

impl From<ApiError> for Problem {
    fn from(e: ApiError) -> Problem {
        e.problem()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.problem().into_response()
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::BadQuery(r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::BadPath(r.body_text())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        ApiError::BodyUnreadable(r.body_text())
    }
}

impl From<serde_json::Error> for ApiError {
    fn from(e: serde_json::Error) -> Self {
        ApiError::MalformedBody(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_names_its_type_and_masks_personal_data() {
        let p = ApiError::invalid(
            "bad-liaison",
            "Invalid request",
            "phone 13995027788 is not allowed",
        )
        .problem();
        assert_eq!(p.status, 400);
        assert_eq!(p.kind, "urn:shenguan:problem:bad-liaison");
        assert!(!p.detail.contains("13995027788"), "{}", p.detail);
        let p = ApiError::RateLimited { retry_after: 0 }.problem();
        assert_eq!((p.status, p.retry_after), (429, Some(1)));
        let p = ApiError::LimitTooLarge {
            limit: 5000,
            max: 1000,
        }
        .problem();
        assert!(p.detail.contains("maximum of 1000"), "{}", p.detail);
        assert_eq!(p.extensions["max_limit"], 1000);
        let p = ApiError::DeadLettered {
            cause: Box::new(ApiError::BodyTooLarge {
                limit: 10,
                content_length: Some(11),
            }),
            dlq_id: "d1".into(),
        }
        .problem();
        assert_eq!(p.status, 413);
        assert_eq!(p.extensions["dlq_id"], "d1");
        assert_eq!(p.extensions["content_length"], 11);
    }
}
