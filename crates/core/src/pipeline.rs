//! The pure core of ingestion: raw bytes from a legacy system → decoded text → records → mapped
//! canonical data → validated CloudEvents, or precise rejections that keep the original bytes.
//! No I/O here: the ingest service de-duplicates and publishes what this returns.
//!
//! No JSON tree is built for an accepted record: a JSON body is read through a borrowed view of
//! the members its adapter reads, the mapping builds a [`Canonical`] record that borrows what no
//! conversion changed, the compiled schema validates it where it is, and its bytes are written
//! once, straight into the CloudEvent. The content hash is taken over those same bytes.

use std::borrow::Cow;

use chrono::{DateTime, FixedOffset};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::adapter::format::{self, Format};
use crate::adapter::path::Scope;
use crate::adapter::view::{Parsed, RecordSeed, RecordsSeed, Slots, Src};
use crate::adapter::Adapter;
use crate::schema::canonical::{self, Canonical};
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
    /// SHA-256 (first 16 bytes, hex) of the mapped fields as they are published: the event's
    /// `data` without the `record_id`, `kind` and `source` the gateway fills, written as one
    /// JSON object. The same content gives the same hash whenever it is received.
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
    name_based_id(adapter, business_key)
}

/// Derives the event id from the record id and its content: the same content gives the same id.
pub fn event_id(record_id: &str, content_hash: &str) -> String {
    name_based_id(record_id, content_hash)
}

/// The v5 UUID of `first\nsecond` in the gateway's namespace, hyphenated in lower case.
fn name_based_id(first: &str, second: &str) -> String {
    let len = first.len() + second.len() + 1;
    let mut short = [0u8; 256];
    let mut long = Vec::new();
    let name: &mut [u8] = if len <= short.len() {
        &mut short[..len]
    } else {
        long.resize(len, 0);
        &mut long
    };
    name[..first.len()].copy_from_slice(first.as_bytes());
    name[first.len()] = b'\n';
    name[first.len() + 1..].copy_from_slice(second.as_bytes());
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    Uuid::new_v5(&NAMESPACE, name)
        .hyphenated()
        .encode_lower(&mut text)
        .to_string()
}

/// Runs a request body through decoding, parsing, mapping and validation. `format` is the
/// request's (from its `Content-Type`), default the adapter's; `unit` says whether the bytes are
/// a whole body or one record as the DLQ stored it (replay).
///
/// A JSON record is read through a borrowed view of the body that holds only the members its
/// adapter reads ([`RecordSeed`]), mapped into a [`Canonical`] record, validated where it is,
/// and written straight out as the bytes that are published. Should that parse fail, the body
/// is parsed again the way a whole value is, so every rejection keeps its exact message.
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
    let mut run = Run::new(adapter, schemas, received_at);
    if format == Format::Xlsx {
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
        check_count(rows.len(), max_records, body, format)?;
        return Ok(run.rows(rows));
    }
    let (text, charset) = decode(adapter, body, format, request_charset)?;
    let media = format.media_type();
    let unreadable = |reason: &'static str, title: &'static str, e: String| {
        body_rejection(400, title, Stage::Parse, reason, e, body, &charset, media)
    };
    let malformed = |e: serde_json::Error| {
        unreadable(
            "malformed_json",
            "Malformed JSON",
            format!("body is not valid JSON: {e}"),
        )
    };
    match format {
        Format::Csv => {
            let rows = format::csv_records(&text, &adapter.csv)
                .map_err(|e| unreadable("malformed_csv", "Malformed CSV", e))?;
            check_count(rows.len(), max_records, body, format)?;
            Ok(run.rows(rows))
        }
        Format::Xml => {
            let doc = format::xml_to_json(&text, &adapter.xml)
                .map_err(|e| unreadable("malformed_xml", "Malformed XML", e))?;
            let selected = if adapter.has_records_path() {
                adapter.select_records(&doc)
            } else {
                vec![&doc]
            };
            check_count(selected.len(), max_records, body, format)?;
            Ok(run.values(&selected))
        }
        Format::Json | Format::Xlsx => {
            let text: &str = &text;
            if unit == Unit::Record {
                let record = match adapter.slots().and_then(|s| parse_one(text, s, false)) {
                    Some(parsed) => Record::Parsed(parsed),
                    None => Record::Value(adapter.parse_record(text).map_err(malformed)?),
                };
                check_count(1, max_records, body, format)?;
                let original = || text.as_bytes().to_vec();
                return Ok(vec![run.record(0, record.scope(), &original, JSON)]);
            }
            if !adapter.has_records_path() && text.trim_start().starts_with('[') {
                let (records, raws) = json_records(adapter, text).map_err(malformed)?;
                check_count(records.len(), max_records, body, format)?;
                // A record's own text is what the DLQ keeps when it is rejected: found only then.
                let known = raws;
                let raws = std::cell::OnceCell::new();
                if let Some(known) = known {
                    raws.get_or_init(|| Some(known));
                }
                let original = |index: usize| -> Vec<u8> {
                    let raws = raws.get_or_init(|| serde_json::from_str(text).ok());
                    let own = raws.as_ref().and_then(|r| r.get(index));
                    own.map_or(text, |r| r.get()).as_bytes().to_vec()
                };
                return Ok(records
                    .iter()
                    .enumerate()
                    .map(|(i, r)| run.record(i, r.scope(), &|| original(i), JSON))
                    .collect());
            }
            if adapter.has_records_path() {
                let payload: Value = serde_json::from_str(text).map_err(malformed)?;
                let selected = adapter.select_records(&payload);
                check_count(selected.len(), max_records, body, format)?;
                return Ok(run.values(&selected));
            }
            // One record: parsed as strictly as a whole value (numbers range-checked even where
            // the adapter does not read them).
            let record = match adapter.slots().and_then(|s| parse_one(text, s, true)) {
                Some(parsed) => Record::Parsed(parsed),
                None => Record::Value(serde_json::from_str(text).map_err(malformed)?),
            };
            check_count(1, max_records, body, format)?;
            let original = || text.as_bytes().to_vec();
            Ok(vec![run.record(0, record.scope(), &original, JSON)])
        }
    }
}

const JSON: &str = "application/json";

/// A record as parsed: into the adapter's slots (or a non-object value), or a whole value.
enum Record<'t> {
    Parsed(Parsed<'t>),
    Value(Value),
}

impl Record<'_> {
    fn scope(&self) -> Scope<'_> {
        match self {
            Record::Parsed(Parsed::Slots(slots)) => Scope::Record(slots),
            Record::Parsed(Parsed::Other(view)) => Scope::Element(Src::of(view)),
            Record::Value(v) => Scope::Element(Src::Value(v)),
        }
    }
}

/// Parses one JSON record into the adapter's slots; `None` when that fails (the caller then
/// parses it the reference way, for the error).
fn parse_one<'t>(text: &'t str, slots: &Slots, strict: bool) -> Option<Parsed<'t>> {
    use serde::de::DeserializeSeed as _;
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = RecordSeed { slots, strict }.deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(parsed)
}

/// Each record of a top-level JSON array, and each one's own text if it was needed to read them.
type Records<'t> = (Vec<Record<'t>>, Option<Vec<&'t RawValue>>);

/// The records of a top-level JSON array: in one pass over the body when the adapter reads
/// named members, otherwise (or should that pass fail) split into each record's own text and
/// parsed one by one, as before, which words any error exactly as it always was (positions are
/// those of the record's text) and reads nesting that only the whole array exceeds.
fn json_records<'t>(adapter: &Adapter, text: &'t str) -> Result<Records<'t>, serde_json::Error> {
    if let Some(slots) = adapter.slots() {
        use serde::de::DeserializeSeed as _;
        let mut de = serde_json::Deserializer::from_str(text);
        let seed = RecordsSeed(RecordSeed {
            slots,
            strict: false,
        });
        if let Ok(records) = seed.deserialize(&mut de) {
            if de.end().is_ok() {
                return Ok((records.into_iter().map(Record::Parsed).collect(), None));
            }
        }
    }
    let raws: Vec<&RawValue> = serde_json::from_str(text)?;
    let mut records = Vec::with_capacity(raws.len());
    for raw in &raws {
        let parsed = adapter.slots().and_then(|s| parse_one(raw.get(), s, false));
        records.push(match parsed {
            Some(parsed) => Record::Parsed(parsed),
            None => Record::Value(adapter.parse_record(raw.get())?),
        });
    }
    Ok((records, Some(raws)))
}

fn check_count(
    n: usize,
    max: usize,
    body: &[u8],
    format: Format,
) -> Result<(), Box<BodyRejection>> {
    if n > max {
        return Err(too_many(n, max, body, format.media_type()));
    }
    Ok(())
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

/// The body as text (borrowed when it is UTF-8 already) and the name of its charset.
fn decode<'b>(
    adapter: &Adapter,
    body: &'b [u8],
    format: Format,
    request_charset: Option<&str>,
) -> Result<(Cow<'b, str>, String), Box<BodyRejection>> {
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
        // Checked with SIMD; the standard library's check says where it fails.
        if let Ok(s) = simdutf8::basic::from_utf8(body_no_bom) {
            return Ok((Cow::Borrowed(s), name));
        }
        return match std::str::from_utf8(body_no_bom) {
            Ok(s) => Ok((Cow::Borrowed(s), name)),
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
        Some(text) => Ok((text, name)),
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

/// What one request's records share: the adapter, the schemas, the receive time as written in
/// every record and event, and a buffer the mapped fields are written into.
struct Run<'r> {
    adapter: &'r Adapter,
    schemas: &'r Schemas,
    /// `received_at`, RFC 3339 with milliseconds.
    received: String,
    /// The CloudEvents `source`, `type` and `dataschema`.
    source: String,
    event_type: String,
    dataschema: String,
    /// The mapped fields of the record being written (`{…}`, the bytes the content hash covers).
    fields: Vec<u8>,
}

impl<'r> Run<'r> {
    fn new(adapter: &'r Adapter, schemas: &'r Schemas, received_at: DateTime<FixedOffset>) -> Self {
        Run {
            adapter,
            schemas,
            received: received_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, false),
            source: format!("/shenguan/adapters/{}", adapter.name),
            event_type: format!("cn.shenguan.{}", adapter.kind.versioned()),
            dataschema: adapter.kind.schema_id(),
            fields: Vec::with_capacity(4096),
        }
    }

    /// CSV and Excel rows: each with its own bytes (header and row) and its value, or why the
    /// row could not be read.
    fn rows(&mut self, rows: Vec<format::Split>) -> Vec<Outcome> {
        rows.into_iter()
            .enumerate()
            .map(|(index, (raw, value))| match value {
                Ok(v) => self.record(
                    index,
                    Scope::Element(Src::Value(&v)),
                    &|| raw.clone(),
                    "text/csv",
                ),
                Err(e) => Outcome::Rejected(Rejection {
                    index: Some(index),
                    stage: Stage::Parse,
                    reason: "malformed_row",
                    errors: vec![RecordError {
                        index: Some(index),
                        path: "$".into(),
                        reason: crate::mask::mask(&e),
                    }],
                    original: raw,
                    charset: "utf-8".into(),
                    content_type: "text/csv",
                    unit: Unit::Record,
                    business_key: None,
                }),
            })
            .collect()
    }

    /// Records selected from a parsed document (XML, or JSON with a `records:` path): a rejected
    /// one is kept as its JSON form, which replays as one record.
    fn values(&mut self, values: &[&Value]) -> Vec<Outcome> {
        values
            .iter()
            .enumerate()
            .map(|(index, v)| {
                let original = || serde_json::to_vec(v).unwrap_or_default();
                self.record(index, Scope::Element(Src::Value(v)), &original, JSON)
            })
            .collect()
    }

    /// Maps, validates and writes one record; `original` gives its own bytes when it is
    /// rejected.
    fn record(
        &mut self,
        index: usize,
        record: Scope<'_>,
        original: &dyn Fn() -> Vec<u8>,
        content_type: &'static str,
    ) -> Outcome {
        let adapter = self.adapter;
        let reject = |stage, reason, errors: Vec<RecordError>, key: Option<String>| {
            Outcome::Rejected(Rejection {
                index: Some(index),
                stage,
                reason,
                errors,
                original: original(),
                charset: "utf-8".into(),
                content_type,
                unit: Unit::Record,
                business_key: key,
            })
        };
        let mapped = match adapter.map(record) {
            Ok(m) => m,
            Err(errors) => {
                let is_object = match record {
                    Scope::Record(_) => true,
                    Scope::Element(src) => src.is_object(),
                };
                let reason = if !is_object {
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
                return reject(Stage::Map, reason, errors, None);
            }
        };
        let crate::adapter::Mapped {
            business_key,
            data: fields,
        } = mapped;
        let record_id = record_id(&adapter.name, &business_key);
        // The record as published: what the gateway fills, then the mapped fields.
        let mut members: Vec<(&str, Canonical<'_>)> = Vec::with_capacity(fields.len() + 3);
        fn text(s: &str) -> Canonical<'_> {
            Canonical::String(Cow::Borrowed(s))
        }
        members.push(("record_id", text(&record_id)));
        members.push(("kind", text(adapter.kind.as_str())));
        members.push((
            "source",
            Canonical::Object(vec![
                ("system", text(&adapter.system)),
                ("adapter", text(&adapter.name)),
                ("business_key", text(&business_key)),
                ("received_at", text(&self.received)),
            ]),
        ));
        members.extend(fields);
        let data = Canonical::Object(members);
        let violations = self.schemas.validate_canonical(adapter.kind, &data);
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
            return reject(Stage::Validate, reason, errors, Some(business_key.clone()));
        }
        let Canonical::Object(members) = &data else {
            unreachable!("built as an object")
        };
        // The content hash covers the mapped fields exactly as they are published (the record
        // without what the gateway fills, which changes with every delivery of it).
        self.fields.clear();
        canonical::write_members(&members[3..], &mut self.fields);
        let content_hash = hex::encode(&Sha256::digest(&self.fields)[..16]);
        let event_id = event_id(&record_id, &content_hash);
        let event = self.event(&event_id, &record_id, &members[..3]);
        drop(data);
        Outcome::Accepted(Candidate {
            index,
            kind: adapter.kind,
            record_id,
            event_id,
            business_key,
            content_hash,
            event,
        })
    }

    /// The CloudEvent around the record: the members of [`envelope`] in its order, `data` the
    /// gateway's members and then the mapped fields written for the hash.
    fn event(&self, event_id: &str, record_id: &str, filled: &[(&str, Canonical<'_>)]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.fields.len() + 640);
        let mut attribute = |name: &str, value: &str| {
            out.push(if out.is_empty() { b'{' } else { b',' });
            canonical::write_str(name, &mut out);
            out.push(b':');
            canonical::write_str(value, &mut out);
        };
        attribute("specversion", "1.0");
        attribute("id", event_id);
        attribute("source", &self.source);
        attribute("type", &self.event_type);
        attribute("subject", record_id);
        attribute("time", &self.received);
        attribute("datacontenttype", JSON);
        attribute("dataschema", &self.dataschema);
        attribute("partitionkey", record_id);
        out.extend_from_slice(b",\"data\":");
        canonical::write_members(filled, &mut out);
        if self.fields.len() > 2 {
            // `{…}` of the gateway's members, then `,` and the mapped fields without their `{`.
            out.pop();
            out.push(b',');
            out.extend_from_slice(&self.fields[1..]);
        }
        out.push(b'}');
        out
    }
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
    use crate::adapter::AdapterSet;
    use serde_json::Map;

    fn shipped() -> (Schemas, AdapterSet) {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let schemas = Schemas::load(Some(&root.join("schemas"))).unwrap();
        let adapters = AdapterSet::load(&root.join("adapters"), &schemas).unwrap();
        (schemas, adapters)
    }

    /// Every accepted record of every shipped fixture: the event is the envelope of the record
    /// as `serde_json` writes it, and the content hash is that of the mapped fields as
    /// `serde_json` writes them — what a reader of the bus recomputes.
    #[test]
    fn the_written_event_is_the_envelope_serde_json_writes_and_the_hash_covers_its_fields() {
        let (schemas, adapters) = shipped();
        let received = DateTime::parse_from_rfc3339("2026-01-05T09:00:00.123+08:00").unwrap();
        let mut checked = 0;
        for adapter in adapters.iter() {
            for file in crate::golden::fixture_inputs(adapter) {
                let name = file.file_name().unwrap().to_string_lossy().to_string();
                let body = std::fs::read(&file).unwrap();
                let Ok(outcomes) = process(
                    adapter,
                    &schemas,
                    &body,
                    Format::from_extension(&name),
                    Format::charset_from_name(&name).as_deref(),
                    Unit::Body,
                    received,
                    usize::MAX,
                ) else {
                    continue;
                };
                for o in outcomes {
                    let Outcome::Accepted(c) = o else { continue };
                    let event: Value = serde_json::from_slice(&c.event).unwrap();
                    let data = event["data"].clone();
                    let expected = envelope(
                        adapter.kind,
                        &c.event_id,
                        &format!("/shenguan/adapters/{}", adapter.name),
                        &c.record_id,
                        received,
                        data.clone(),
                    );
                    assert_eq!(c.event, serde_json::to_vec(&expected).unwrap(), "{name}");
                    let mapped: Map<String, Value> = data
                        .as_object()
                        .unwrap()
                        .iter()
                        .filter(|(k, _)| !matches!(k.as_str(), "record_id" | "kind" | "source"))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    let hash =
                        hex::encode(&Sha256::digest(serde_json::to_vec(&mapped).unwrap())[..16]);
                    assert_eq!(c.content_hash, hash, "{name}");
                    assert_eq!(c.event_id, event_id(&c.record_id, &hash));
                    assert!(schemas.validate(adapter.kind, &data).is_empty(), "{name}");
                    checked += 1;
                }
            }
        }
        assert!(
            checked > 30,
            "only {checked} accepted records among the fixtures"
        );
    }

    #[test]
    fn ids_are_the_name_based_uuids_of_their_parts() {
        let id =
            |a: &str, b: &str| Uuid::new_v5(&NAMESPACE, format!("{a}\n{b}").as_bytes()).to_string();
        assert_eq!(
            record_id("nx-zwfw-approval", "640200-1"),
            id("nx-zwfw-approval", "640200-1")
        );
        assert_eq!(event_id("r", "宁夏"), id("r", "宁夏"));
    }

    #[test]
    fn a_rejected_record_of_a_batch_keeps_its_own_text_and_nesting_only_the_batch_exceeds_is_read()
    {
        let (schemas, adapters) = shipped();
        let adapter = adapters.get("nx-zwfw-approval").unwrap();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let good = std::fs::read_to_string(
            root.join("adapters/nx-zwfw/fixtures/nx-zwfw-approval/01-company.json"),
        )
        .unwrap();
        let bad = r#"{"PROJID": "640200-1", "APPLYNAME": "宁夏公司"}"#;
        // Nested as deep as one record may be on its own, which the batch around it exceeds.
        let depth = (1..200)
            .find(|n| {
                let deep = format!("{{\"XKNR\": {}1{}}}", "[".repeat(*n), "]".repeat(*n));
                serde_json::from_str::<Value>(&format!("[{deep}]")).is_err()
            })
            .unwrap();
        let deep = format!(
            "{{\"PROJID\": \"640200-2\", \"XKNR\": {}1{}}}",
            "[".repeat(depth),
            "]".repeat(depth)
        );
        assert!(serde_json::from_str::<Value>(&deep).is_ok());
        let body = format!("[{good},\n  {bad} , {deep}]");
        let time = DateTime::parse_from_rfc3339("2026-01-05T09:00:00+08:00").unwrap();
        let outcomes = process(
            adapter.as_ref(),
            &schemas,
            body.as_bytes(),
            None,
            None,
            Unit::Body,
            time,
            10,
        )
        .unwrap();
        assert!(matches!(outcomes[0], Outcome::Accepted(_)));
        let Outcome::Rejected(r) = &outcomes[1] else {
            panic!("the second record lacks required fields")
        };
        assert_eq!(r.original, bad.as_bytes());
        assert_eq!(r.reason, "mapping_failed");
        let Outcome::Rejected(r) = &outcomes[2] else {
            panic!("the third record's content is a list")
        };
        assert_eq!(r.original, deep.as_bytes());
        assert!(r
            .errors
            .iter()
            .any(|e| e.reason == "license.content: path matched a list; expected one value"));
    }
}
