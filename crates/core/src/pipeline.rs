//! The pure core of ingestion: raw bytes from a legacy system → decoded text → records → mapped
//! canonical data → validated CloudEvents, or precise rejections that keep the original bytes.
//! No I/O here: the ingest service de-duplicates and publishes what this returns.

use chrono::{DateTime, FixedOffset};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::adapter::format::{self, Format};
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
    /// The media type of `original` (a CSV row for spreadsheet rows, JSON for XML elements).
    pub content_type: &'static str,
    /// Whether `original` is one record (replayed as such) or a whole request body.
    pub unit: Unit,
    pub business_key: Option<String>,
}

/// What a payload holds: a whole request body, or one record as the DLQ keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Body,
    Record,
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

/// Runs a request body through decoding, parsing, mapping and validation. `format` is the
/// request's (from its `Content-Type`), default the adapter's; `unit` says whether the bytes are
/// a whole body or one record as the DLQ stored it (replay).
#[allow(clippy::too_many_arguments)]
pub fn process(
    adapter: &Adapter,
    schemas: &Schemas,
    body: &[u8],
    format: Option<Format>,
    request_charset: Option<&str>,
    unit: Unit,
    received_at: DateTime<FixedOffset>,
    max_records: usize,
) -> Result<Vec<Outcome>, Box<BodyRejection>> {
    let format = format.unwrap_or(adapter.format);
    let acceptable = format == adapter.format
        || (adapter.format == Format::Xlsx && format == Format::Csv)
        || (unit == Unit::Record && format == Format::Json && adapter.format == Format::Xml);
    if !acceptable {
        return Err(body_rejection(
            415,
            "Unsupported media type for this adapter",
            Stage::Decode,
            "unsupported_format",
            format!(
                "adapter {} reads {:?}, not {:?}",
                adapter.name, adapter.format, format
            )
            .to_lowercase(),
            body,
            "utf-8",
            format.media_type(),
        ));
    }
    let records = if format == Format::Xlsx {
        if !body.is_empty() && !body.starts_with(b"PK") {
            return Err(body_rejection(
                400,
                "Not an .xlsx workbook",
                Stage::Parse,
                "malformed_xlsx",
                "the body is not an .xlsx (zip) file".into(),
                body,
                "binary",
                format.media_type(),
            ));
        }
        let rows = format::xlsx_records(body, &adapter.xlsx).map_err(|e| {
            body_rejection(
                400,
                "Not a readable .xlsx workbook",
                Stage::Parse,
                "malformed_xlsx",
                e,
                body,
                "binary",
                format.media_type(),
            )
        })?;
        rows.into_iter()
            .map(|(raw, v)| (raw, v, "text/csv"))
            .collect()
    } else {
        let (text, charset) = decode(adapter, body, format, request_charset)?;
        split(adapter, &text, body, format, unit, &charset)?
    };
    if records.len() > max_records {
        return Err(too_many(
            records.len(),
            max_records,
            body,
            format.media_type(),
        ));
    }
    Ok(records
        .into_iter()
        .enumerate()
        .map(|(index, (raw, value, content_type))| {
            process_record(
                adapter,
                schemas,
                index,
                raw,
                value,
                content_type,
                received_at,
            )
        })
        .collect())
}

#[allow(clippy::too_many_arguments)]
fn body_rejection(
    status: u16,
    title: &'static str,
    stage: Stage,
    reason: &'static str,
    detail: String,
    body: &[u8],
    charset: &str,
    content_type: &'static str,
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
            content_type,
            unit: Unit::Body,
            business_key: None,
        },
    })
}

fn decode(
    adapter: &Adapter,
    body: &[u8],
    format: Format,
    request_charset: Option<&str>,
) -> Result<(String, String), Box<BodyRejection>> {
    let media = format.media_type();
    let declared = if format == Format::Xml {
        format::xml_declared_encoding(body)
    } else {
        None
    };
    let label = request_charset.map(str::to_string).or(declared);
    let encoding = match &label {
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
                    media,
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
                format!(
                    "body is not valid UTF-8 at byte {}; declare the charset (e.g. charset=gb18030) if it is not UTF-8",
                    e.valid_up_to()
                ),
                body,
                &name,
                media,
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
            media,
        )),
    }
}

/// A record's own bytes, its value (or why it could not be read) and the media type of the bytes.
type RawRecord = (Vec<u8>, Result<Value, String>, &'static str);

fn split(
    adapter: &Adapter,
    text: &str,
    body: &[u8],
    format: Format,
    unit: Unit,
    charset: &str,
) -> Result<Vec<RawRecord>, Box<BodyRejection>> {
    let media = format.media_type();
    let unreadable = |reason: &'static str, title: &'static str, e: String| {
        body_rejection(400, title, Stage::Parse, reason, e, body, charset, media)
    };
    match format {
        Format::Csv => {
            let rows = format::csv_records(text, &adapter.csv)
                .map_err(|e| unreadable("malformed_csv", "Malformed CSV", e))?;
            Ok(rows
                .into_iter()
                .map(|(raw, v)| (raw, v, "text/csv"))
                .collect())
        }
        Format::Xml => {
            let doc = format::xml_to_json(text, &adapter.xml)
                .map_err(|e| unreadable("malformed_xml", "Malformed XML", e))?;
            let selected = if adapter.has_records_path() {
                adapter.select_records(&doc)
            } else {
                vec![&doc]
            };
            // An XML element is kept as its JSON form, which replays as one record.
            Ok(selected
                .into_iter()
                .map(|v| {
                    (
                        serde_json::to_vec(v).unwrap_or_default(),
                        Ok(v.clone()),
                        "application/json",
                    )
                })
                .collect())
        }
        Format::Json | Format::Xlsx => {
            let malformed = |e: serde_json::Error| {
                unreadable(
                    "malformed_json",
                    "Malformed JSON",
                    format!("body is not valid JSON: {e}"),
                )
            };
            if unit == Unit::Record {
                let value = adapter.parse_record(text).map_err(malformed)?;
                return Ok(vec![(
                    text.as_bytes().to_vec(),
                    Ok(value),
                    "application/json",
                )]);
            }
            let trimmed = text.trim_start();
            if !adapter.has_records_path() && trimmed.starts_with('[') {
                // Keep each element's own text: that is what the DLQ stores for a rejected record.
                let raws: Vec<&RawValue> = serde_json::from_str(text).map_err(malformed)?;
                let mut out = Vec::with_capacity(raws.len());
                for raw in raws {
                    let value = adapter.parse_record(raw.get()).map_err(malformed)?;
                    out.push((raw.get().as_bytes().to_vec(), Ok(value), "application/json"));
                }
                return Ok(out);
            }
            let payload: Value = serde_json::from_str(text).map_err(malformed)?;
            if adapter.has_records_path() {
                Ok(adapter
                    .select_records(&payload)
                    .into_iter()
                    .map(|v| {
                        (
                            serde_json::to_vec(v).unwrap_or_default(),
                            Ok(v.clone()),
                            "application/json",
                        )
                    })
                    .collect())
            } else {
                Ok(vec![(
                    text.as_bytes().to_vec(),
                    Ok(payload),
                    "application/json",
                )])
            }
        }
    }
}

fn too_many(n: usize, max: usize, body: &[u8], content_type: &'static str) -> Box<BodyRejection> {
    body_rejection(
        413,
        "Too many records",
        Stage::Parse,
        "too_many_records",
        format!("the request holds {n} records; at most {max} are accepted per request"),
        body,
        "utf-8",
        content_type,
    )
}

fn process_record(
    adapter: &Adapter,
    schemas: &Schemas,
    index: usize,
    raw: Vec<u8>,
    value: Result<Value, String>,
    content_type: &'static str,
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
            content_type,
            unit: Unit::Record,
            business_key: key,
        })
    };
    let value = match value {
        Ok(v) => v,
        Err(e) => {
            let errors = vec![RecordError {
                index: Some(index),
                path: "$".into(),
                reason: crate::mask::mask(&e),
            }];
            return reject(Stage::Parse, "malformed_row", errors, None, raw);
        }
    };
    let value = &value;
    let mapped = match adapter.map(value) {
        Ok(m) => m,
        Err(errors) => {
            let reason = if !value.is_object() {
                "not_a_record"
            } else if errors.len() == 1 && errors[0].field == "record" {
                // A `reject_when` rule of the adapter.
                "refused_by_adapter"
            } else {
                "mapping_failed"
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
    let content_hash = {
        let mut hasher = HashWriter(Sha256::new());
        serde_json::to_writer(&mut hasher, &mapped.data).expect("a JSON value serialises");
        hex::encode(&hasher.0.finalize()[..16])
    };
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
    let event = Envelope {
        specversion: "1.0",
        id: &event_id,
        source: &format!("/shenguan/adapters/{}", adapter.name),
        kind: &format!("cn.shenguan.{}", adapter.kind.versioned()),
        subject: &record_id,
        time: &received_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, false),
        datacontenttype: "application/json",
        dataschema: &adapter.kind.schema_id(),
        partitionkey: &record_id,
        data: &data,
    };
    let event = serde_json::to_vec(&event).expect("a JSON value serialises");
    Outcome::Accepted(Candidate {
        index,
        kind: adapter.kind,
        record_id,
        event_id,
        business_key: mapped.business_key,
        content_hash,
        event,
    })
}

/// Feeds serialised JSON straight into the hash, without an intermediate buffer.
struct HashWriter(Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The envelope of [`envelope`], borrowed, for serialising an accepted record without building
/// a second JSON tree; the fields are in the same order, so the bytes are the same.
#[derive(Serialize)]
struct Envelope<'a> {
    specversion: &'static str,
    id: &'a str,
    source: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    subject: &'a str,
    time: &'a str,
    datacontenttype: &'static str,
    dataschema: &'a str,
    partitionkey: &'a str,
    data: &'a Value,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_borrowed_envelope_serialises_to_the_same_bytes_as_the_json_one() {
        let time = DateTime::parse_from_rfc3339("2026-11-23T09:00:00.123+08:00").unwrap();
        let data = json!({"record_id": "r", "kind": "approval", "n": [1, 2, {"z": 1, "a": 2}]});
        let kind = RecordKind::Approval;
        let borrowed = Envelope {
            specversion: "1.0",
            id: "e",
            source: "/shenguan/adapters/x",
            kind: &format!("cn.shenguan.{}", kind.versioned()),
            subject: "r",
            time: &time.to_rfc3339_opts(chrono::SecondsFormat::Millis, false),
            datacontenttype: "application/json",
            dataschema: &kind.schema_id(),
            partitionkey: "r",
            data: &data,
        };
        assert_eq!(
            serde_json::to_vec(&borrowed).unwrap(),
            serde_json::to_vec(&envelope(
                kind,
                "e",
                "/shenguan/adapters/x",
                "r",
                time,
                data.clone()
            ))
            .unwrap()
        );
    }
}
