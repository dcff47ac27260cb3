//! The canonical schemas: loading, checking at start-up, compiled validation with the custom
//! formats `uscc` (统一社会信用代码) and `resident-id` (居民身份证号码), and the field lookup the
//! adapter linter uses to check that every mapped target exists with the right type.
//!
//! Schemas are read from the configured directory when it exists (so a site can review them next
//! to its adapters), otherwise from the copies compiled into the binary. Every schema is checked
//! against the JSON Schema 2020-12 meta-schema and compiled once; any error stops start-up.
//!
//! Each record schema is compiled twice from the same document with the same options: for
//! `serde_json::Value`s, and for the [`canonical::Canonical`] records the pipeline builds, which
//! it validates where they are (no conversion to a `Value`), with the same rules and messages.

pub mod canonical;
pub mod formats;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use canonical::{Canonical, CanonicalJson};
use jsonschema::{Retrieve, Uri, Validator};
use serde_json::Value;

use crate::mask::mask;

/// The kinds of canonical record, one schema and one topic each.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    Approval,
    Supervision,
    Notice,
    Claim,
    Feedback,
    Alert,
    Dlq,
}

impl RecordKind {
    pub const ALL: [RecordKind; 7] = [
        RecordKind::Approval,
        RecordKind::Supervision,
        RecordKind::Notice,
        RecordKind::Claim,
        RecordKind::Feedback,
        RecordKind::Alert,
        RecordKind::Dlq,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Approval => "approval",
            RecordKind::Supervision => "supervision",
            RecordKind::Notice => "notice",
            RecordKind::Claim => "claim",
            RecordKind::Feedback => "feedback",
            RecordKind::Alert => "alert",
            RecordKind::Dlq => "dlq",
        }
    }

    /// The versioned name, used for the schema file, the topic and the CloudEvents type.
    pub fn versioned(self) -> &'static str {
        match self {
            RecordKind::Approval => "approval.v1",
            RecordKind::Supervision => "supervision.v1",
            RecordKind::Notice => "notice.v1",
            RecordKind::Claim => "claim.v1",
            RecordKind::Feedback => "feedback.v1",
            RecordKind::Alert => "alert.v1",
            RecordKind::Dlq => "dlq.v1",
        }
    }

    /// The `$id` of the schema of this kind's data.
    pub fn schema_id(self) -> String {
        format!("urn:shenguan:schema:{}", self.versioned())
    }

    /// Kinds an adapter may produce.
    pub fn is_source_kind(self) -> bool {
        matches!(
            self,
            RecordKind::Approval | RecordKind::Supervision | RecordKind::Notice
        )
    }
}

impl std::str::FromStr for RecordKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        RecordKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown record kind '{s}'"))
    }
}

const ENVELOPE: &str = "cloudevent.v1";
const COMMON: &str = "common.v1";

/// The schema files compiled into the binary, used when no schema directory is present.
const BUILTIN: &[(&str, &str)] = &[
    (
        "common.v1",
        include_str!("../../../../schemas/common.v1.schema.json"),
    ),
    (
        "cloudevent.v1",
        include_str!("../../../../schemas/cloudevent.v1.schema.json"),
    ),
    (
        "approval.v1",
        include_str!("../../../../schemas/approval.v1.schema.json"),
    ),
    (
        "supervision.v1",
        include_str!("../../../../schemas/supervision.v1.schema.json"),
    ),
    (
        "notice.v1",
        include_str!("../../../../schemas/notice.v1.schema.json"),
    ),
    (
        "claim.v1",
        include_str!("../../../../schemas/claim.v1.schema.json"),
    ),
    (
        "feedback.v1",
        include_str!("../../../../schemas/feedback.v1.schema.json"),
    ),
    (
        "alert.v1",
        include_str!("../../../../schemas/alert.v1.schema.json"),
    ),
    (
        "dlq.v1",
        include_str!("../../../../schemas/dlq.v1.schema.json"),
    ),
];

/// A problem with a schema file, reported at start-up.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{file}: {message}")]
pub struct SchemaError {
    pub file: String,
    pub message: String,
}

/// One reason a record does not match its schema.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Violation {
    /// JSON pointer into the canonical record, e.g. `/counterpart/uscc`.
    pub path: String,
    /// What is wrong, with personal data masked.
    pub reason: String,
}

/// What the linter needs to know about a target field.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldInfo {
    pub types: Vec<String>,
    pub format: Option<String>,
    pub enum_values: Option<Vec<Value>>,
    pub is_array: bool,
}

/// The loaded and compiled schemas.
pub struct Schemas {
    documents: BTreeMap<String, Value>,
    validators: BTreeMap<RecordKind, Validator>,
    /// The same schemas, compiled for canonical records as the pipeline builds them.
    canonical: BTreeMap<RecordKind, Validator<CanonicalJson>>,
    envelope: Validator,
    /// Where the schemas came from, for the start-up log.
    pub origin: String,
}

struct LocalRetriever(Arc<BTreeMap<String, Value>>);

impl Retrieve for LocalRetriever {
    fn retrieve(
        &self,
        uri: &Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let name = uri.as_str().trim_start_matches("urn:shenguan:schema:");
        self.0.get(name).cloned().ok_or_else(|| {
            format!("no schema '{}' among the canonical schemas", uri.as_str()).into()
        })
    }
}

impl Schemas {
    /// Loads the schemas from `dir` if it exists, otherwise the built-in copies.
    pub fn load(dir: Option<&Path>) -> Result<Schemas, Vec<SchemaError>> {
        match dir {
            Some(dir) if dir.is_dir() => {
                let mut sources = Vec::new();
                let mut errors = Vec::new();
                for (name, _) in BUILTIN {
                    let path: PathBuf = dir.join(format!("{name}.schema.json"));
                    match std::fs::read_to_string(&path) {
                        Ok(text) => {
                            sources.push((path.display().to_string(), (*name).to_string(), text))
                        }
                        Err(e) => errors.push(SchemaError {
                            file: path.display().to_string(),
                            message: format!("cannot read: {e}"),
                        }),
                    }
                }
                if !errors.is_empty() {
                    return Err(errors);
                }
                Self::compile(sources, dir.display().to_string())
            }
            _ => Self::builtin(),
        }
    }

    /// The schemas compiled into the binary.
    pub fn builtin() -> Result<Schemas, Vec<SchemaError>> {
        let sources = BUILTIN
            .iter()
            .map(|(name, text)| {
                (
                    format!("(built-in) {name}.schema.json"),
                    (*name).to_string(),
                    (*text).to_string(),
                )
            })
            .collect();
        Self::compile(sources, "built-in".to_string())
    }

    fn compile(
        sources: Vec<(String, String, String)>,
        origin: String,
    ) -> Result<Schemas, Vec<SchemaError>> {
        let mut errors = Vec::new();
        let mut documents = BTreeMap::new();
        let mut files = BTreeMap::new();
        for (file, name, text) in sources {
            let doc: Value = match serde_json::from_str(&text) {
                Ok(v) => v,
                Err(e) => {
                    errors.push(SchemaError {
                        file,
                        message: format!("not JSON: {e}"),
                    });
                    continue;
                }
            };
            if let Err(e) = jsonschema::meta::validate(&doc) {
                errors.push(SchemaError {
                    file: file.clone(),
                    message: format!("not a valid JSON Schema at {}: {}", e.instance_path(), e),
                });
            }
            let expected_id = format!("urn:shenguan:schema:{name}");
            if doc.get("$id").and_then(Value::as_str) != Some(expected_id.as_str()) {
                errors.push(SchemaError {
                    file: file.clone(),
                    message: format!("\"$id\" must be \"{expected_id}\""),
                });
            }
            files.insert(name.clone(), file);
            documents.insert(name, doc);
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let shared = Arc::new(documents.clone());
        let build = |name: &str| -> Result<Validator, SchemaError> {
            jsonschema::options()
                .with_draft(jsonschema::Draft::Draft202012)
                .should_validate_formats(true)
                .with_format("uscc", formats::is_uscc)
                .with_format("resident-id", formats::is_resident_id)
                .with_retriever(LocalRetriever(shared.clone()))
                .build(&documents[name])
                .map_err(|e| SchemaError {
                    file: files[name].clone(),
                    message: format!("does not compile: {e}"),
                })
        };
        let build_canonical = |name: &str| -> Result<Validator<CanonicalJson>, SchemaError> {
            jsonschema::options_for::<CanonicalJson>()
                .with_draft(jsonschema::Draft::Draft202012)
                .should_validate_formats(true)
                .with_format("uscc", formats::is_uscc)
                .with_format("resident-id", formats::is_resident_id)
                .with_retriever(LocalRetriever(shared.clone()))
                .build(&documents[name])
                .map_err(|e| SchemaError {
                    file: files[name].clone(),
                    message: format!("does not compile: {e}"),
                })
        };
        let mut validators = BTreeMap::new();
        let mut canonical = BTreeMap::new();
        for kind in RecordKind::ALL {
            match build(kind.versioned()) {
                Ok(v) => {
                    validators.insert(kind, v);
                }
                Err(e) => errors.push(e),
            }
            if kind.is_source_kind() {
                match build_canonical(kind.versioned()) {
                    Ok(v) => {
                        canonical.insert(kind, v);
                    }
                    Err(e) => errors.push(e),
                }
            }
        }
        let envelope = build(ENVELOPE);
        if let Err(e) = &envelope {
            errors.push(e.clone());
        }
        let _ = COMMON;
        match envelope {
            Ok(envelope) if errors.is_empty() => Ok(Schemas {
                documents,
                validators,
                canonical,
                envelope,
                origin,
            }),
            _ => Err(errors),
        }
    }

    /// Every reason `data` is not a valid record of `kind`; empty when it is valid.
    pub fn validate(&self, kind: RecordKind, data: &Value) -> Vec<Violation> {
        let validator = &self.validators[&kind];
        if validator.is_valid(data) {
            return Vec::new();
        }
        validator.iter_errors(data).map(|e| violation(&e)).collect()
    }

    /// Every reason a canonical record of `kind` (approval, supervision or notice) is not valid;
    /// empty when it is. The same rules and messages as [`Schemas::validate`] on the record as a
    /// `serde_json::Value`.
    pub fn validate_canonical(&self, kind: RecordKind, record: &Canonical<'_>) -> Vec<Violation> {
        let Some(validator) = self.canonical.get(&kind) else {
            return self.validate(kind, &record.to_value());
        };
        if validator.is_valid(record) {
            return Vec::new();
        }
        validator
            .iter_errors(record)
            .map(|e| violation(&e))
            .collect()
    }

    /// Every reason `event` is not a valid CloudEvents envelope.
    pub fn validate_envelope(&self, event: &Value) -> Vec<Violation> {
        self.envelope
            .iter_errors(event)
            .map(|e| violation(&e))
            .collect()
    }

    /// The schema of a dotted target field (`counterpart.uscc`) of `kind`, following `$ref`s;
    /// `None` when the schema has no such field.
    pub fn field(&self, kind: RecordKind, dotted: &str) -> Option<FieldInfo> {
        let mut node = self.resolve(self.documents.get(kind.versioned())?)?;
        for part in dotted.split('.') {
            // Fields of array elements are addressed through the array: `a.items_field`.
            if node.get("type").and_then(Value::as_str) == Some("array") {
                node = self.resolve(node.get("items")?)?;
            }
            node = self.resolve(node.get("properties")?.get(part)?)?;
        }
        let types: Vec<String> = match node.get("type") {
            Some(Value::String(t)) => vec![t.clone()],
            Some(Value::Array(ts)) => ts
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        };
        let is_array = types.iter().any(|t| t == "array");
        let scalar = if is_array {
            node.get("items")
                .and_then(|i| self.resolve(i))
                .unwrap_or(node)
        } else {
            node
        };
        let scalar_types: Vec<String> = match scalar.get("type") {
            Some(Value::String(t)) => vec![t.clone()],
            Some(Value::Array(ts)) => ts
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            _ if scalar.get("const").is_some() || scalar.get("enum").is_some() => {
                vec!["string".into()]
            }
            _ => Vec::new(),
        };
        Some(FieldInfo {
            types: scalar_types,
            format: scalar
                .get("format")
                .and_then(Value::as_str)
                .map(str::to_string),
            enum_values: scalar.get("enum").and_then(Value::as_array).cloned(),
            is_array,
        })
    }

    /// The names of the properties `kind` requires at a dotted object path (`""` for the top).
    pub fn required(&self, kind: RecordKind, dotted: &str) -> Vec<String> {
        let Some(mut node) = self
            .documents
            .get(kind.versioned())
            .and_then(|d| self.resolve(d))
        else {
            return Vec::new();
        };
        for part in dotted.split('.').filter(|p| !p.is_empty()) {
            match node
                .get("properties")
                .and_then(|p| p.get(part))
                .and_then(|n| self.resolve(n))
            {
                Some(n) => node = n,
                None => return Vec::new(),
            }
        }
        node.get("required")
            .and_then(Value::as_array)
            .map(|r| {
                r.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn resolve<'a>(&'a self, node: &'a Value) -> Option<&'a Value> {
        let mut node = node;
        for _ in 0..8 {
            let Some(reference) = node.get("$ref").and_then(Value::as_str) else {
                return Some(node);
            };
            let (doc, pointer) = reference.split_once('#').unwrap_or((reference, ""));
            let doc = doc.trim_start_matches("urn:shenguan:schema:");
            node = self.documents.get(doc)?.pointer(pointer)?;
        }
        None
    }
}

fn violation(e: &jsonschema::ValidationError<'_>) -> Violation {
    let path = e.instance_path().to_string();
    let reason = match e.kind() {
        jsonschema::error::ValidationErrorKind::Format { format } => {
            let value = e.instance().as_str().unwrap_or_default();
            let specific = match format.as_str() {
                "uscc" => formats::uscc_problem(value),
                "resident-id" => formats::resident_id_problem(value),
                _ => None,
            };
            specific.unwrap_or_else(|| format!("value is not a valid \"{format}\""))
        }
        _ => e.masked().to_string(),
    };
    Violation {
        path: if path.is_empty() { "/".into() } else { path },
        reason: mask(&reason),
    }
}
