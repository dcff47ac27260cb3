//! The pure core of ingestion: raw bytes from a legacy system → decoded text → records → mapped
//! canonical data → validated CloudEvents, or precise rejections that keep the original bytes.
//! No I/O here: the ingest service de-duplicates and publishes what this returns.

use chrono::{DateTime, FixedOffset};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::adapter::Adapter;
use crate::schema::{RecordKind, Schemas};

/// Namespace of the name-based (v5) UUIDs the gateway derives record and event ids from.
const NAMESPACE: Uuid = Uuid::from_u128(0x7368_656e_6775_5a6e_8000_5347_4157_0001);

/// Where in the pipeline an input was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Decode,
    Parse,
    Map,
    Validate,
    Publish,
    Deliver,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Decode => "decode",
            Stage::Parse => "parse",
            Stage::Map => "map",
            Stage::Validate => "validate",
            Stage::Publish => "publish",
            Stage::Deliver => "deliver",
        }
    }
}

/// One reason a record was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordError {
    /// Index of the record in the request (None for the whole body).
    pub index: Option<usize>,
    /// A JSONPath into the source record, or a JSON pointer into the canonical record.
    pub path: String,
    /// What is wrong, personal data masked.
    pub reason: String,
}

/// A record ready to publish.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub index: usize,
    pub kind: RecordKind,
    pub record_id: String,
    pub event_id: String,
    pub business_key: String,
    pub content_hash: String,
    /// The CloudEvent, serialised.
    pub event: Vec<u8>,
}

/// A rejected input, with what the DLQ keeps.
#[derive(Debug, Clone)]
pub struct Rejection {
    pub index: Option<usize>,
    pub stage: Stage,
    /// A short, bounded reason code (a metric label).
    pub reason: &'static str,
    pub errors: Vec<RecordError>,
    /// The original bytes: the whole body for decode/parse failures, else the record's own text.
    pub original: Vec<u8>,
    pub charset: String,
    pub business_key: Option<String>,
}

/// What happened to one record of a request.
#[derive(Debug, Clone)]
pub enum Outcome {
    Accepted(Candidate),
    Rejected(Rejection),
}

/// A request that could not be split into records at all.
#[derive(Debug, Clone)]
pub struct BodyRejection {
    /// HTTP status: 400 for undecodable or malformed bodies, 413 for too many records.
    pub status: u16,
    pub title: &'static str,
    pub rejection: Rejection,
}

/// Derives the stable record id from the adapter and business key.
pub fn record_id(adapter: &str, business_key: &str) -> String {
    Uuid::new_v5(&NAMESPACE, format!("{adapter}\n{business_key}").as_bytes()).to_string()
}

/// Derives the event id from the record id and its content: the same content gives the same id.
pub fn event_id(record_id: &str, content_hash: &str) -> String {
    Uuid::new_v5(
        &NAMESPACE,
        format!("{record_id}\n{content_hash}").as_bytes(),
    )
    .to_string()
}

/// Runs a request body through decoding, parsing, mapping and validation.
pub fn process(
    adapter: &Adapter,
    schemas: &Schemas,
    body: &[u8],
    request_charset: Option<&str>,
    received_at: DateTime<FixedOffset>,
    max_records: usize,
) -> Result<Vec<Outcome>, Box<BodyRejection>> {
    let (text, charset) = decode(adapter, body, request_charset)?;
    let records = split(adapter, &text, body, &charset, max_records)?;
    Ok(records
        .into_iter()
        .enumerate()
        .map(|(index, (raw, value))| {
            process_record(adapter, schemas, index, raw, &value, received_at)
        })
        .collect())
}

fn body_rejection(
    status: u16,
    title: &'static str,
    stage: Stage,
    reason: &'static str,
    detail: String,
    body: &[u8],
    charset: &str,
) -> Box<BodyRejection> {
    Box::new(BodyRejection {
        status,
        title,
        rejection: Rejection {
            index: None,
            stage,
            reason,
            errors: vec![RecordError {
                index: None,
                path: "$".into(),
                reason: crate::mask::mask(&detail),
            }],
            original: body.to_vec(),
            charset: charset.to_string(),
            business_key: None,
        },
    })
}

fn decode(
    adapter: &Adapter,
    body: &[u8],
    request_charset: Option<&str>,
) -> Result<(String, String), Box<BodyRejection>> {
    let encoding = match request_charset {
        Some(label) => encoding_rs::Encoding::for_label(label.trim().trim_matches('"').as_bytes())
            .ok_or_else(|| {
                body_rejection(
                    400,
                    "Unknown charset",
                    Stage::Decode,
                    "unknown_charset",
                    format!("unknown charset '{label}'"),
                    body,
                    label,
                )
            })?,
        None => adapter.charset,
    };
    let name = encoding.name().to_ascii_lowercase();
    if encoding == encoding_rs::UTF_8 {
        let body_no_bom = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
        return match std::str::from_utf8(body_no_bom) {
            Ok(s) => Ok((s.to_string(), name)),
            Err(e) => Err(body_rejection(
                400,
                "Body is not valid UTF-8",
                Stage::Decode,
                "invalid_encoding",
                format!("body is not valid UTF-8 at byte {}; declare the charset (e.g. charset=gb18030) if it is not UTF-8", e.valid_up_to()),
                body,
                &name,
            )),
        };
    }
    match encoding.decode_without_bom_handling_and_without_replacement(body) {
        Some(text) => Ok((text.into_owned(), name)),
        None => Err(body_rejection(
            400,
            "Body does not match its charset",
            Stage::Decode,
            "invalid_encoding",
            format!("body is not valid {}", encoding.name()),
            body,
            &name,
        )),
    }
}

type RawRecord = (Vec<u8>, Value);

fn split(
    adapter: &Adapter,
    text: &str,
    body: &[u8],
    charset: &str,
    max_records: usize,
) -> Result<Vec<RawRecord>, Box<BodyRejection>> {
    let malformed = |e: serde_json::Error| {
        body_rejection(
            400,
            "Malformed JSON",
            Stage::Parse,
            "malformed_json",
            format!("body is not valid JSON: {e}"),
            body,
            charset,
        )
    };
    let trimmed = text.trim_start();
    let records: Vec<RawRecord> = if !adapter.has_records_path() && trimmed.starts_with('[') {
        // Keep each element's own text: that is what the DLQ stores for a rejected record.
        let raws: Vec<&RawValue> = serde_json::from_str(text).map_err(malformed)?;
        if raws.len() > max_records {
            return Err(too_many(raws.len(), max_records, body, charset));
        }
        let mut out = Vec::with_capacity(raws.len());
        for raw in raws {
            let value: Value = serde_json::from_str(raw.get()).map_err(malformed)?;
            out.push((raw.get().as_bytes().to_vec(), value));
        }
        out
    } else {
        let payload: Value = serde_json::from_str(text).map_err(malformed)?;
        if adapter.has_records_path() {
            let selected = adapter.select_records(&payload);
            if selected.len() > max_records {
                return Err(too_many(selected.len(), max_records, body, charset));
            }
            selected
                .into_iter()
                .map(|v| (serde_json::to_vec(v).unwrap_or_default(), v.clone()))
                .collect()
        } else {
            vec![(text.as_bytes().to_vec(), payload)]
        }
    };
    Ok(records)
}

fn too_many(n: usize, max: usize, body: &[u8], charset: &str) -> Box<BodyRejection> {
    body_rejection(
        413,
        "Too many records",
        Stage::Parse,
        "too_many_records",
        format!("the request holds {n} records; at most {max} are accepted per request"),
        body,
        charset,
    )
}

fn process_record(
    adapter: &Adapter,
    schemas: &Schemas,
    index: usize,
    raw: Vec<u8>,
    value: &Value,
    received_at: DateTime<FixedOffset>,
) -> Outcome {
    let reject = |stage, reason, errors: Vec<RecordError>, key: Option<String>, raw: Vec<u8>| {
        Outcome::Rejected(Rejection {
            index: Some(index),
            stage,
            reason,
            errors,
            original: raw,
            charset: "utf-8".into(),
            business_key: key,
        })
    };
    let mapped = match adapter.map(value) {
        Ok(m) => m,
        Err(errors) => {
            let reason = if value.is_object() {
                "mapping_failed"
            } else {
                "not_a_record"
            };
            let errors = errors
                .into_iter()
                .map(|e| RecordError {
                    index: Some(index),
                    path: e.path,
                    reason: format!("{}: {}", e.field, e.reason),
                })
                .collect();
            return reject(Stage::Map, reason, errors, None, raw);
        }
    };
    let content_hash =
        hex::encode(&Sha256::digest(serde_json::to_vec(&mapped.data).unwrap_or_default())[..16]);
    let record_id = record_id(&adapter.name, &mapped.business_key);
    let event_id = event_id(&record_id, &content_hash);
    let mut data = Map::with_capacity(mapped.data.len() + 3);
    data.insert("record_id".into(), Value::String(record_id.clone()));
    data.insert("kind".into(), Value::String(adapter.kind.as_str().into()));
    data.insert(
        "source".into(),
        json!({
            "system": adapter.system,
            "adapter": adapter.name,
            "business_key": mapped.business_key,
            "received_at": received_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, false),
        }),
    );
    data.extend(mapped.data);
    let data = Value::Object(data);
    let violations = schemas.validate(adapter.kind, &data);
    if !violations.is_empty() {
        let identifier = violations.iter().any(|v| {
            v.reason.starts_with("统一社会信用代码") || v.reason.starts_with("居民身份证号码")
        });
        let reason = if identifier {
            "invalid_identifier"
        } else {
            "schema_violation"
        };
        let errors = violations
            .into_iter()
            .map(|v| RecordError {
                index: Some(index),
                path: v.path,
                reason: v.reason,
            })
            .collect();
        return reject(
            Stage::Validate,
            reason,
            errors,
            Some(mapped.business_key),
            raw,
        );
    }
    let event = envelope(
        adapter.kind,
        &event_id,
        &format!("/shenguan/adapters/{}", adapter.name),
        &record_id,
        received_at,
        data,
    );
    Outcome::Accepted(Candidate {
        index,
        kind: adapter.kind,
        record_id,
        event_id,
        business_key: mapped.business_key,
        content_hash,
        event: serde_json::to_vec(&event).expect("a JSON value serialises"),
    })
}

/// A CloudEvents 1.0 structured-mode envelope around `data`.
pub fn envelope(
    kind: RecordKind,
    id: &str,
    source: &str,
    subject: &str,
    time: DateTime<FixedOffset>,
    data: Value,
) -> Value {
    json!({
        "specversion": "1.0",
        "id": id,
        "source": source,
        "type": format!("cn.shenguan.{}", kind.versioned()),
        "subject": subject,
        "time": time.to_rfc3339_opts(chrono::SecondsFormat::Millis, false),
        "datacontenttype": "application/json",
        "dataschema": kind.schema_id(),
        "partitionkey": subject,
        "data": data,
    })
}
