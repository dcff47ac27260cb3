//! The adapter file format, as written by a site's IT department. `deny_unknown_fields`
//! everywhere: a misspelt key is an error at start-up, not a silently ignored line.
//! `adapters/README.md` documents every key with examples.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::convert::{Convert, Unit};
use super::format::{CsvOptions, Format, XlsxOptions, XmlOptions};
use crate::schema::RecordKind;

/// One adapter: how records of one legacy format become canonical records of one kind.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdapterSpec {
    /// Name in `/v1/ingest/{adapter}`, metrics and the DLQ: `[a-z0-9-]`, unique.
    pub adapter: String,
    /// The legacy system this adapter reads (来源系统), copied into every record's `source.system`.
    pub system: String,
    /// The canonical kind it produces: `approval`, `supervision` or `notice`.
    pub kind: RecordKind,
    /// Free text for people: what the source is, what a site changes.
    #[serde(default)]
    pub description: Option<String>,
    /// The payload format: `json` (default), `xml`, `csv` or `xlsx`.
    #[serde(default)]
    pub format: Format,
    /// CSV options (`delimiter`).
    #[serde(default)]
    pub csv: Option<CsvOptions>,
    /// XML options (`lists`: element names that are always lists).
    #[serde(default)]
    pub xml: Option<XmlOptions>,
    /// Excel options (`sheet`, `header_row`).
    #[serde(default)]
    pub xlsx: Option<XlsxOptions>,
    /// Character set when the request does not declare one: `utf-8` (default), `gb18030`, `gbk`.
    #[serde(default)]
    pub charset: Option<String>,
    /// JSONPath (RFC 9535) selecting the records inside one payload, e.g. `$.data.rows[*]`.
    /// Without it, a top-level array is a batch and an object is one record.
    #[serde(default)]
    pub records: Option<String>,
    /// JSONPaths whose values, joined with `|`, form the business key used for de-duplication.
    pub key: Vec<String>,
    /// Code tables by name.
    #[serde(default)]
    pub tables: BTreeMap<String, TableSpec>,
    /// The field mappings, applied in order.
    pub fields: Vec<FieldSpec>,
    /// Records the adapter refuses on purpose, each with the reason the DLQ shows (e.g. a
    /// deletion in a change feed, which the platform does not forward).
    #[serde(default)]
    pub reject_when: Vec<RejectSpec>,
}

/// A record to refuse: a condition and the reason.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RejectSpec {
    pub when: ConditionSpec,
    pub reason: String,
}

/// A code table: a legacy system's codes → canonical values.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSpec {
    /// A YAML file of `code: value` lines, relative to the adapter file.
    #[serde(default)]
    pub file: Option<String>,
    /// Inline `code: value` pairs.
    #[serde(default)]
    pub values: Option<BTreeMap<String, Value>>,
    /// The value for a code the table does not list; without it an unknown code rejects the record.
    #[serde(default)]
    pub default: Option<Value>,
}

/// One target field of the canonical record and where its value comes from.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    /// Dotted path of the canonical field, e.g. `counterpart.uscc`.
    pub to: String,
    /// JSONPath of the source value, e.g. `$.APPLY_CARDNUMBER`.
    #[serde(default)]
    pub from: Option<String>,
    /// A constant value.
    #[serde(default)]
    pub value: Option<Value>,
    /// Pieces joined into one text: JSONPaths (starting with `$`) and literal text.
    #[serde(default)]
    pub concat: Option<Vec<String>>,
    /// The conversion; default `string`.
    #[serde(default)]
    pub convert: Option<Convert>,
    /// Unit of bare numbers for `convert: amount_wan`: `元` or `万元` (default).
    #[serde(default)]
    pub unit: Option<Unit>,
    /// Name of a code table that maps the source value.
    #[serde(default)]
    pub table: Option<String>,
    /// Used when the source value is missing or empty.
    #[serde(default)]
    pub default: Option<Value>,
    /// Map this field only when the condition holds.
    #[serde(default)]
    pub when: Option<ConditionSpec>,
    /// A missing source value rejects the record with a mapping error naming the source path.
    #[serde(default)]
    pub required: bool,
    /// For a list target: separators that split one source text into several values, e.g.
    /// `";；,，、"` for `警告;罚款` (every character is a separator; pieces are trimmed).
    #[serde(default)]
    pub split: Option<String>,
    /// For a target that is a list of objects: the fields of each element, with `from` paths
    /// relative to each element that `from` selects (`$` is the element).
    #[serde(default)]
    pub fields: Option<Vec<FieldSpec>>,
}

/// A condition on a source value or an already mapped field.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionSpec {
    /// JSONPath of a source value.
    #[serde(default)]
    pub source: Option<String>,
    /// Dotted path of a field mapped earlier in the list.
    #[serde(default)]
    pub field: Option<String>,
    #[serde(default)]
    pub equals: Option<Value>,
    #[serde(default)]
    pub not_equals: Option<Value>,
    #[serde(default)]
    pub one_of: Option<Vec<Value>>,
    /// The value is missing, or none of these.
    #[serde(default)]
    pub not_one_of: Option<Vec<Value>>,
    /// `true`: the value is present and not empty; `false`: it is missing or empty.
    #[serde(default)]
    pub exists: Option<bool>,
}
