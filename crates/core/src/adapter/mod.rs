//! Declarative adapters: a YAML file per legacy format (`adapters/<system>/<name>.yaml`) is
//! checked completely at start-up and compiled once; mapping a record is then a pure function
//! from a source record to a canonical record or the full list of what is wrong with it.
//!
//! Compiling an adapter also resolves the record members its paths read to slots
//! ([`view::Slots`]): a JSON record is parsed straight into them, and the mapping reads each
//! value where it lies in the request text ([`view`]) and builds the canonical record as a
//! [`Canonical`] tree that borrows whatever needs no conversion.

pub mod convert;
pub mod format;
pub mod path;
pub mod spec;
pub mod view;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use path::{Scope, SourcePath};
use serde_json::{Map, Value};
use view::{Slots, Src};

use crate::mask::mask;
use crate::schema::canonical::{self, Canonical};
use crate::schema::{RecordKind, Schemas};
use convert::{scalar_text, Convert, Unit};
use format::{CsvOptions, Format, XlsxOptions, XmlOptions};
use spec::{AdapterSpec, ConditionSpec, FieldSpec, TableSpec};

/// Fields the gateway fills itself; an adapter may not map them.
const RESERVED: [&str; 3] = ["record_id", "kind", "source"];

/// A problem found in an adapter file, with where to look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LintError {
    pub file: String,
    pub line: Option<usize>,
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for LintError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Why one source record could not be mapped.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    /// The source JSONPath (or the target field when no source is involved).
    pub path: String,
    /// The canonical field being produced.
    pub field: String,
    /// What is wrong; personal data masked.
    pub reason: String,
}

/// The result of mapping one source record: the mapped fields in order, borrowing the source
/// and the adapter where no conversion changed a value.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped<'a> {
    pub business_key: String,
    pub data: Vec<(&'a str, Canonical<'a>)>,
}

struct Table {
    name: String,
    values: HashMap<String, Value>,
    default: Option<Value>,
}

enum Source {
    Path(String, SourcePath),
    Value(Value),
    Concat(Vec<Piece>),
}

enum Piece {
    Path(SourcePath),
    Text(String),
}

enum Subject {
    Source(SourcePath),
    Field(Vec<String>),
}

enum Test {
    Equals(String),
    NotEquals(String),
    OneOf(Vec<String>),
    NotOneOf(Vec<String>),
    Exists(bool),
}

struct Field {
    to: String,
    parts: Vec<String>,
    source: Source,
    convert: Convert,
    unit: Unit,
    table: Option<Arc<Table>>,
    default: Option<Value>,
    when: Option<(Subject, Test)>,
    required: bool,
    multiple: bool,
    /// Separators splitting one source text into several list values.
    split: Option<Vec<char>>,
    /// Sub-fields mapped from each selected element (a list of objects).
    nested: Option<Vec<Field>>,
}

/// A compiled adapter.
pub struct Adapter {
    pub name: String,
    pub system: String,
    pub kind: RecordKind,
    pub format: Format,
    pub csv: CsvOptions,
    pub xml: XmlOptions,
    pub xlsx: XlsxOptions,
    /// Declared default charset.
    pub charset: &'static encoding_rs::Encoding,
    pub file: PathBuf,
    records: Option<SourcePath>,
    key: Vec<(String, SourcePath)>,
    fields: Vec<Field>,
    reject_when: Vec<(Subject, Test, String)>,
    /// Every record member a path of this adapter reads, with its slot; `None` when some path
    /// may read anything (records are then parsed whole).
    slots: Option<Slots>,
}

impl fmt::Debug for Adapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Adapter")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish()
    }
}

impl Adapter {
    /// Selects the records of a parsed payload: the `records:` path, else each element of a
    /// top-level array, else the payload itself.
    pub fn select_records<'a>(&self, payload: &'a Value) -> Vec<&'a Value> {
        match (&self.records, payload) {
            (Some(path), _) => path.all(payload),
            (None, Value::Array(items)) => items.iter().collect(),
            (None, other) => vec![other],
        }
    }

    /// The record members the adapter reads, with their slots; `None` when a path may read any
    /// member (the record is then parsed whole, as a `serde_json::Value`).
    pub fn slots(&self) -> Option<&Slots> {
        self.slots.as_ref()
    }

    /// Parses one JSON record as a `serde_json::Value`. An object keeps only the members the
    /// adapter's paths read: the others are checked for syntax and skipped without building
    /// them. The mapping is the same as from the full record. (The pipeline reads records
    /// through [`view::RecordSeed`]; this is its reference, and the parse that words a
    /// malformed record's error.)
    pub fn parse_record(&self, text: &str) -> Result<Value, serde_json::Error> {
        match &self.slots {
            Some(slots) if text.trim_start().starts_with('{') => {
                use serde::de::DeserializeSeed as _;
                let mut de = serde_json::Deserializer::from_str(text);
                let value = Projection(slots.names()).deserialize(&mut de)?;
                de.end()?;
                Ok(value)
            }
            _ => serde_json::from_str(text),
        }
    }

    /// Whether the adapter selects records with an explicit path.
    pub fn has_records_path(&self) -> bool {
        self.records.is_some()
    }

    /// Maps one source record: a record parsed into this adapter's slots, or a value (XML,
    /// CSV and Excel rows, records selected by `records:`). Every problem is reported, not just
    /// the first.
    pub fn map<'a>(&'a self, record: Scope<'a>) -> Result<Mapped<'a>, Vec<FieldError>> {
        if let Scope::Element(src) = record {
            if !src.is_object() {
                return Err(vec![FieldError {
                    path: "$".into(),
                    field: "record".into(),
                    reason: format!(
                        "a record must be a JSON object, found {}",
                        src.type_phrase()
                    ),
                }]);
            }
        }
        for (subject, test, reason) in &self.reject_when {
            if let Subject::Source(path) = subject {
                if test.holds(path.first_in(record).and_then(Src::text).as_deref()) {
                    return Err(vec![FieldError {
                        path: "$".into(),
                        field: "record".into(),
                        reason: reason.clone(),
                    }]);
                }
            }
        }
        let mut errors = Vec::new();
        let mut business_key = String::with_capacity(64);
        for (i, (text, path)) in self.key.iter().enumerate() {
            match path.first_in(record).and_then(Src::text) {
                Some(v) => {
                    if i > 0 {
                        business_key.push('|');
                    }
                    business_key.push_str(&v);
                }
                None => errors.push(FieldError {
                    path: text.clone(),
                    field: "business key".into(),
                    reason: "business key value is missing".into(),
                }),
            }
        }
        let mut data = Vec::with_capacity(8);
        for field in &self.fields {
            if let Some((subject, test)) = &field.when {
                let holds = match subject {
                    Subject::Source(path) => {
                        test.holds(path.first_in(record).and_then(Src::text).as_deref())
                    }
                    Subject::Field(parts) => test.holds(
                        canonical::get(&data, parts)
                            .and_then(convert::canonical_text)
                            .as_deref(),
                    ),
                };
                if !holds {
                    continue;
                }
            }
            match field.produce(record) {
                Ok(Some(v)) => canonical::set(&mut data, &field.parts, v),
                Ok(None) => {}
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(Mapped { business_key, data })
        } else {
            Err(errors)
        }
    }
}

impl Test {
    fn holds(&self, value: Option<&str>) -> bool {
        match self {
            Test::Equals(x) => value == Some(x.as_str()),
            Test::NotEquals(x) => value != Some(x.as_str()),
            Test::OneOf(xs) => value.is_some_and(|v| xs.iter().any(|x| x == v)),
            Test::NotOneOf(xs) => !value.is_some_and(|v| xs.iter().any(|x| x == v)),
            Test::Exists(want) => value.is_some() == *want,
        }
    }
}

impl Field {
    fn source_label(&self) -> String {
        match &self.source {
            Source::Path(text, _) => text.clone(),
            _ => self.to.clone(),
        }
    }

    fn error(&self, reason: String) -> FieldError {
        FieldError {
            path: self.source_label(),
            field: self.to.clone(),
            reason: mask(&reason),
        }
    }

    fn produce<'a>(&'a self, scope: Scope<'a>) -> Result<Option<Canonical<'a>>, FieldError> {
        // The common case — one plain member path to one scalar — without intermediate lists.
        if let (Source::Path(_, path), false, None) = (&self.source, self.multiple, &self.nested) {
            if path.is_plain() {
                return match path.first_in(scope) {
                    None => self.missing(),
                    Some(v) if v.is_array() => {
                        Err(self.error("path matched a list; expected one value".into()))
                    }
                    // One pass over the text: empty once normalised is missing.
                    Some(v) => match v.text() {
                        Some(text) => self.convert_text(Some(text)).map(Some),
                        None if v.is_object() => self.convert_text(None).map(Some),
                        None => self.missing(),
                    },
                };
            }
        }
        let raw: Vec<Src<'a>> = match &self.source {
            Source::Value(v) => return Ok(Some(Canonical::of(v))),
            Source::Path(_, path) => path.all_in(scope),
            Source::Concat(pieces) => {
                let mut joined = String::new();
                for piece in pieces {
                    match piece {
                        Piece::Text(t) => joined.push_str(t),
                        Piece::Path(p) => {
                            if let Some(t) = p.first_in(scope).and_then(Src::text) {
                                joined.push_str(&t);
                            }
                        }
                    }
                }
                let joined = convert::normalize_text(&joined);
                return if joined.is_empty() {
                    self.missing()
                } else {
                    self.convert_text(Some(Cow::Owned(joined))).map(Some)
                };
            }
        };
        if let Some(nested) = &self.nested {
            return self.produce_nested(nested, raw);
        }
        let present: Vec<Src<'a>> = raw
            .into_iter()
            .flat_map(|v| match v.items() {
                Some(items) if self.multiple => items,
                _ => vec![v],
            })
            .filter(|v| !v.is_empty())
            .collect();
        if present.is_empty() {
            return self.missing();
        }
        if self.multiple {
            let mut items = Vec::with_capacity(present.len());
            for v in present {
                match (&self.split, v.text()) {
                    (Some(separators), Some(text)) => {
                        for piece in text
                            .split(separators.as_slice())
                            .map(str::trim)
                            .filter(|p| !p.is_empty())
                        {
                            let piece = convert::normalize_text(piece);
                            items.push(
                                self.convert_text(
                                    (!piece.is_empty()).then_some(Cow::Owned(piece)),
                                )?,
                            );
                        }
                    }
                    _ => items.push(self.convert(v)?),
                }
            }
            return Ok(Some(Canonical::List(items)));
        }
        if present.len() > 1 {
            return Err(self.error(format!(
                "path matched {} values; expected one",
                present.len()
            )));
        }
        self.convert(present[0]).map(Some)
    }

    fn produce_nested<'a>(
        &'a self,
        nested: &'a [Field],
        raw: Vec<Src<'a>>,
    ) -> Result<Option<Canonical<'a>>, FieldError> {
        let elements: Vec<Src<'a>> = raw
            .into_iter()
            .flat_map(|v| v.items().unwrap_or_else(|| vec![v]))
            .filter(|v| v.is_object())
            .collect();
        let mut items = Vec::with_capacity(elements.len());
        for (i, element) in elements.into_iter().enumerate() {
            let mut object = Vec::with_capacity(nested.len());
            for sub in nested {
                match sub.produce(Scope::Element(element)) {
                    Ok(Some(v)) => canonical::set(&mut object, &sub.parts, v),
                    Ok(None) => {}
                    Err(e) => {
                        return Err(FieldError {
                            path: format!(
                                "{}[{i}]{}",
                                self.source_label(),
                                e.path.trim_start_matches('$')
                            ),
                            field: format!("{}[{i}].{}", self.to, e.field),
                            reason: e.reason,
                        })
                    }
                }
            }
            if !object.is_empty() {
                items.push(Canonical::Object(object));
            }
        }
        if items.is_empty() {
            return self.missing();
        }
        Ok(Some(Canonical::List(items)))
    }

    fn missing(&self) -> Result<Option<Canonical<'_>>, FieldError> {
        match (&self.default, self.required) {
            (Some(d), _) => Ok(Some(Canonical::of(d))),
            (None, true) => Err(self.error("required source value is missing or empty".into())),
            (None, false) => Ok(None),
        }
    }

    fn convert<'a>(&'a self, v: Src<'a>) -> Result<Canonical<'a>, FieldError> {
        self.convert_text(v.text())
    }

    /// Converts the normalised text of a source value (`None` when it is not a non-empty
    /// scalar) through the field's code table or conversion.
    fn convert_text<'a>(&'a self, text: Option<Cow<'a, str>>) -> Result<Canonical<'a>, FieldError> {
        if let Some(table) = &self.table {
            let code = text.ok_or_else(|| self.error("expected a code".into()))?;
            return match table.values.get(code.as_ref()).or(table.default.as_ref()) {
                Some(mapped) => Ok(Canonical::of(mapped)),
                None => Err(self.error(format!(
                    "code '{code}' is not in code table '{}'",
                    table.name
                ))),
            };
        }
        convert::apply_text(self.convert, self.unit, text).map_err(|reason| self.error(reason))
    }

    /// Whether a general JSONPath is read under the elements this field selects: the member
    /// they come from is then kept as a `serde_json::Value` for the query.
    fn reads_general_below(&self) -> bool {
        self.nested.as_ref().is_some_and(|subs| {
            subs.iter().any(|s| {
                s.paths().into_iter().any(SourcePath::is_general) || s.reads_general_below()
            })
        })
    }

    /// The record paths of the field: its source and its condition.
    fn paths(&self) -> Vec<&SourcePath> {
        let mut out = Vec::new();
        match &self.source {
            Source::Path(_, p) => out.push(p),
            Source::Concat(pieces) => out.extend(pieces.iter().filter_map(|piece| match piece {
                Piece::Path(p) => Some(p),
                Piece::Text(_) => None,
            })),
            Source::Value(_) => {}
        }
        if let Some((Subject::Source(p), _)) = &self.when {
            out.push(p);
        }
        out
    }

    fn paths_mut(&mut self) -> Vec<&mut SourcePath> {
        let mut out = Vec::new();
        match &mut self.source {
            Source::Path(_, p) => out.push(p),
            Source::Concat(pieces) => {
                out.extend(pieces.iter_mut().filter_map(|piece| match piece {
                    Piece::Path(p) => Some(p),
                    Piece::Text(_) => None,
                }))
            }
            Source::Value(_) => {}
        }
        if let Some((Subject::Source(p), _)) = &mut self.when {
            out.push(p);
        }
        out
    }
}

/// The record members read by the key, the `reject_when` rules and the fields (their sources
/// and `when` conditions), as slots, and each path resolved to its slot; `None` if any path may
/// read anything. A member a general JSONPath reads (itself or under the elements a field with
/// sub-fields selects) is parsed as a `serde_json::Value`.
fn record_slots(
    key: &mut [(String, SourcePath)],
    fields: &mut [Field],
    reject_when: &mut [(Subject, Test, String)],
) -> Option<Slots> {
    let mut general: Vec<&str> = Vec::new();
    let mut paths: Vec<&SourcePath> = key.iter().map(|(_, p)| p).collect();
    for (subject, _, _) in reject_when.iter() {
        if let Subject::Source(p) = subject {
            paths.push(p);
        }
    }
    for f in fields.iter() {
        let own = f.paths();
        if f.reads_general_below() {
            if let Source::Path(_, p) = &f.source {
                general.extend(p.root_member());
            }
        }
        paths.extend(own);
    }
    for p in &paths {
        if p.is_general() {
            general.extend(p.root_member());
        }
    }
    let mut names = paths
        .iter()
        .map(|p| p.root_member().map(str::to_string))
        .collect::<Option<Vec<String>>>()?;
    names.sort();
    names.dedup();
    let json = names
        .iter()
        .map(|n| general.contains(&n.as_str()))
        .collect();
    for (_, p) in key.iter_mut() {
        p.resolve(&names);
    }
    for (subject, _, _) in reject_when.iter_mut() {
        if let Subject::Source(p) = subject {
            p.resolve(&names);
        }
    }
    for f in fields.iter_mut() {
        for p in f.paths_mut() {
            p.resolve(&names);
        }
    }
    Some(Slots::new(names, json))
}

/// Deserialises a JSON object keeping only the named members (sorted); anything else as a whole.
struct Projection<'a>(&'a [String]);

/// A member name, borrowed from the input when it has no escapes.
struct Key<'de>(std::borrow::Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(s.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Projection<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Projection<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::with_capacity(self.0.len());
        while let Some(Key(name)) = map.next_key::<Key<'de>>()? {
            if self.0.binary_search_by(|m| m.as_str().cmp(&name)).is_ok() {
                out.insert(name.into_owned(), map.next_value::<Value>()?);
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(Value::Object(out))
    }
}

/// All adapters of a site, by name.
#[derive(Default)]
pub struct AdapterSet {
    by_name: BTreeMap<String, Arc<Adapter>>,
}

impl AdapterSet {
    /// Loads every `adapters/<system>/*.yaml`, checking all of them; returns every error found.
    pub fn load(dir: &Path, schemas: &Schemas) -> Result<AdapterSet, Vec<LintError>> {
        let mut errors = Vec::new();
        let mut set = AdapterSet::default();
        let mut origins: BTreeMap<String, String> = BTreeMap::new();
        for file in adapter_files(dir, &mut errors) {
            match compile_file(&file, schemas) {
                Ok(adapter) => {
                    let shown = file.display().to_string();
                    if let Some(first) = origins.insert(adapter.name.clone(), shown.clone()) {
                        errors.push(LintError {
                            file: shown,
                            line: None,
                            field: Some("adapter".into()),
                            message: format!(
                                "adapter name '{}' is already used by {first}",
                                adapter.name
                            ),
                        });
                    }
                    set.by_name.insert(adapter.name.clone(), Arc::new(adapter));
                }
                Err(mut e) => errors.append(&mut e),
            }
        }
        if errors.is_empty() {
            Ok(set)
        } else {
            Err(errors)
        }
    }

    pub fn get(&self, name: &str) -> Option<Arc<Adapter>> {
        self.by_name.get(name).cloned()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Adapter>> {
        self.by_name.values()
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// The adapter files under `dir`: `*.yaml` one level down (`adapters/<system>/<name>.yaml`).
pub fn adapter_files(dir: &Path, errors: &mut Vec<LintError>) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let systems = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) => {
            errors.push(LintError {
                file: dir.display().to_string(),
                line: None,
                field: None,
                message: format!("cannot read the adapter directory: {e}"),
            });
            return files;
        }
    };
    for system in systems.flatten() {
        let path = system.path();
        // Hidden entries (Kubernetes ConfigMap mounts keep `..data` links) are not systems.
        if !path.is_dir() || system.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if let Ok(rd) = std::fs::read_dir(&path) {
            for entry in rd.flatten() {
                let p = entry.path();
                if p.is_file()
                    && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
                {
                    files.push(p);
                }
            }
        }
    }
    files.sort();
    files
}

/// Reads and compiles one adapter file.
pub fn compile_file(file: &Path, schemas: &Schemas) -> Result<Adapter, Vec<LintError>> {
    let shown = file.display().to_string();
    let text = std::fs::read_to_string(file).map_err(|e| {
        vec![LintError {
            file: shown.clone(),
            line: None,
            field: None,
            message: format!("cannot read: {e}"),
        }]
    })?;
    compile_text(&text, file, schemas)
}

/// Compiles adapter text; `file` names it in errors and anchors relative table files.
pub fn compile_text(text: &str, file: &Path, schemas: &Schemas) -> Result<Adapter, Vec<LintError>> {
    let shown = file.display().to_string();
    let spec: AdapterSpec = serde_norway::from_str(text).map_err(|e| {
        vec![LintError {
            file: shown.clone(),
            line: e.location().map(|l| l.line()),
            field: None,
            message: e.to_string(),
        }]
    })?;
    let mut lint = Linter {
        file: shown,
        text,
        errors: Vec::new(),
    };
    let adapter = lint.compile(spec, file, schemas);
    match adapter {
        Some(a) if lint.errors.is_empty() => Ok(a),
        _ => Err(lint.errors),
    }
}

struct Linter<'t> {
    file: String,
    text: &'t str,
    errors: Vec<LintError>,
}

impl Linter<'_> {
    /// The first line `key: value` (optionally a list item), to point errors at.
    fn line_of(&self, key: &str, value: &str) -> Option<usize> {
        self.text
            .lines()
            .position(|line| {
                let l = line.trim_start().trim_start_matches("- ").trim_start();
                let Some(rest) = l.strip_prefix(key).and_then(|r| r.strip_prefix(':')) else {
                    return false;
                };
                let rest = rest
                    .split(" #")
                    .next()
                    .unwrap_or("")
                    .trim()
                    .trim_matches(['"', '\'']);
                value.is_empty() || rest == value
            })
            .map(|i| i + 1)
    }

    fn error(&mut self, line: Option<usize>, field: Option<&str>, message: impl Into<String>) {
        self.errors.push(LintError {
            file: self.file.clone(),
            line,
            field: field.map(str::to_string),
            message: message.into(),
        });
    }

    fn path(&mut self, text: &str, line: Option<usize>, field: Option<&str>) -> Option<SourcePath> {
        match SourcePath::parse(text) {
            Ok(p) => Some(p),
            Err(e) => {
                self.error(line, field, format!("invalid JSONPath '{text}': {e}"));
                None
            }
        }
    }

    fn compile(&mut self, spec: AdapterSpec, file: &Path, schemas: &Schemas) -> Option<Adapter> {
        let name_ok = !spec.adapter.is_empty()
            && spec.adapter.len() <= 63
            && spec
                .adapter
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !name_ok {
            let line = self.line_of("adapter", "");
            self.error(
                line,
                Some("adapter"),
                "adapter name must be 1-63 characters of a-z, 0-9 and '-'",
            );
        }
        if !spec.kind.is_source_kind() {
            let line = self.line_of("kind", "");
            self.error(
                line,
                Some("kind"),
                "kind must be approval, supervision or notice",
            );
        }
        let charset = match spec.charset.as_deref() {
            None => encoding_rs::UTF_8,
            Some(label) => {
                encoding_rs::Encoding::for_label(label.as_bytes()).unwrap_or_else(|| {
                    let line = self.line_of("charset", "");
                    self.error(line, Some("charset"), format!("unknown charset '{label}'"));
                    encoding_rs::UTF_8
                })
            }
        };
        for (key, given, fmt) in [
            ("csv", spec.csv.is_some(), Format::Csv),
            ("xml", spec.xml.is_some(), Format::Xml),
            ("xlsx", spec.xlsx.is_some(), Format::Xlsx),
        ] {
            if given && spec.format != fmt {
                let line = self.line_of(key, "");
                self.error(
                    line,
                    Some(key),
                    format!("`{key}` options need `format: {key}`"),
                );
            }
        }
        if spec.records.is_some() && matches!(spec.format, Format::Csv | Format::Xlsx) {
            let line = self.line_of("records", "");
            self.error(
                line,
                Some("records"),
                "every row is a record in CSV and Excel; `records` applies to JSON and XML",
            );
        }
        if spec.csv.as_ref().is_some_and(|c| !c.delimiter.is_ascii()) {
            let line = self.line_of("csv", "");
            self.error(
                line,
                Some("csv"),
                "the CSV delimiter must be an ASCII character",
            );
        }
        let records = spec.records.as_deref().and_then(|r| {
            let line = self.line_of("records", "");
            self.path(r, line, Some("records"))
        });
        if spec.key.is_empty() {
            let line = self.line_of("key", "");
            self.error(
                line,
                Some("key"),
                "at least one business-key path is needed for de-duplication",
            );
        }
        let mut key: Vec<(String, SourcePath)> = spec
            .key
            .iter()
            .filter_map(|k| {
                let line = self.line_of("key", "").map(|l| {
                    self.text
                        .lines()
                        .skip(l)
                        .position(|x| x.contains(k.as_str()))
                        .map_or(l, |i| l + i + 1)
                });
                self.path(k, line, Some("key")).map(|p| (k.clone(), p))
            })
            .collect();
        let base = file.parent().unwrap_or(Path::new("."));
        let mut tables = HashMap::new();
        for (name, t) in &spec.tables {
            if let Some(table) = self.table(name, t, base) {
                tables.insert(name.clone(), Arc::new(table));
            }
        }
        let mut fields = Vec::new();
        let mut mapped: Vec<String> = Vec::new();
        for f in &spec.fields {
            if let Some(field) = self.field(f, "", spec.kind, schemas, &tables, &mapped) {
                fields.push(field);
            }
            mapped.push(f.to.clone());
        }
        self.check_required(spec.kind, schemas, &mapped);
        let mut reject_when = Vec::new();
        for r in &spec.reject_when {
            let line = self
                .line_of("reason", &r.reason)
                .or_else(|| self.line_of("reject_when", ""));
            if r.when.field.is_some() {
                self.error(
                    line,
                    Some("reject_when"),
                    "`reject_when` conditions test source values (`source:`)",
                );
                continue;
            }
            if let Some((subject, test)) = self.condition(&r.when, line, Some("reject_when"), &[]) {
                reject_when.push((subject, test, r.reason.clone()));
            }
        }
        let slots = record_slots(&mut key, &mut fields, &mut reject_when);
        Some(Adapter {
            name: spec.adapter,
            system: spec.system,
            kind: spec.kind,
            format: spec.format,
            csv: spec.csv.unwrap_or_default(),
            xml: spec.xml.unwrap_or_default(),
            xlsx: spec.xlsx.unwrap_or_default(),
            charset,
            file: file.to_path_buf(),
            records,
            key,
            fields,
            reject_when,
            slots,
        })
    }

    fn table(&mut self, name: &str, t: &TableSpec, base: &Path) -> Option<Table> {
        let line = self.line_of(name, "");
        let values: BTreeMap<String, Value> = match (&t.file, &t.values) {
            (Some(f), None) => {
                let path = base.join(f);
                let text = match std::fs::read_to_string(&path) {
                    Ok(text) => text,
                    Err(e) => {
                        self.error(
                            line,
                            Some(name),
                            format!("code table file {}: {e}", path.display()),
                        );
                        return None;
                    }
                };
                match serde_norway::from_str::<BTreeMap<String, Value>>(&text) {
                    Ok(v) => v,
                    Err(e) => {
                        let at = e
                            .location()
                            .map(|l| format!(":{}", l.line()))
                            .unwrap_or_default();
                        self.error(
                            line,
                            Some(name),
                            format!("code table file {}{at}: {e}", path.display()),
                        );
                        return None;
                    }
                }
            }
            (None, Some(values)) => values.clone(),
            _ => {
                self.error(
                    line,
                    Some(name),
                    "a code table needs exactly one of `file` or `values`",
                );
                return None;
            }
        };
        Some(Table {
            name: name.to_string(),
            values: values
                .into_iter()
                .map(|(k, v)| (convert::normalize_text(&k), v))
                .collect(),
            default: t.default.clone(),
        })
    }

    fn field(
        &mut self,
        f: &FieldSpec,
        prefix: &str,
        kind: RecordKind,
        schemas: &Schemas,
        tables: &HashMap<String, Arc<Table>>,
        mapped: &[String],
    ) -> Option<Field> {
        let line = self.line_of("to", &f.to);
        let full = format!("{prefix}{}", f.to);
        let to = Some(full.as_str());
        let before = self.errors.len();
        let parts: Vec<String> = f.to.split('.').map(str::to_string).collect();
        if prefix.is_empty() && RESERVED.contains(&parts[0].as_str()) {
            self.error(
                line,
                to,
                format!(
                    "'{}' is filled by the gateway and cannot be mapped",
                    parts[0]
                ),
            );
        }
        let info = schemas.field(kind, &full);
        if info.is_none() && !(prefix.is_empty() && RESERVED.contains(&parts[0].as_str())) {
            self.error(
                line,
                to,
                format!("the {} schema has no field '{full}'", kind.versioned()),
            );
        }
        if mapped.contains(&f.to) && f.when.is_none() {
            self.error(
                line,
                to,
                "field is mapped more than once; give the alternatives a `when` condition",
            );
        }
        let source = match (&f.from, &f.value, &f.concat) {
            (Some(p), None, None) => self.path(p, line, to).map(|jp| Source::Path(p.clone(), jp)),
            (None, Some(v), None) => Some(Source::Value(v.clone())),
            (None, None, Some(pieces)) => {
                let mut out = Vec::new();
                for piece in pieces {
                    if piece.starts_with('$') {
                        if let Some(p) = self.path(piece, line, to) {
                            out.push(Piece::Path(p));
                        }
                    } else {
                        out.push(Piece::Text(piece.clone()));
                    }
                }
                Some(Source::Concat(out))
            }
            _ => {
                self.error(
                    line,
                    to,
                    "a field needs exactly one of `from`, `value` or `concat`",
                );
                None
            }
        };
        let convert = f.convert.unwrap_or(Convert::String);
        if f.unit.is_some() && convert != Convert::AmountWan {
            self.error(line, to, "`unit` applies only to `convert: amount_wan`");
        }
        if f.table.is_some() && f.convert.is_some() {
            self.error(line, to, "use either `table` or `convert`, not both");
        }
        let table = match &f.table {
            Some(name) => match tables.get(name) {
                Some(t) => Some(t.clone()),
                None => {
                    self.error(line, to, format!("unknown code table '{name}'"));
                    None
                }
            },
            None => None,
        };
        let nested = match &f.fields {
            None => {
                if let Some(info) = &info {
                    self.check_type(f, line, convert, table.as_deref(), info);
                }
                None
            }
            Some(subs) => {
                if f.from.is_none() {
                    self.error(
                        line,
                        to,
                        "`fields` needs `from` selecting the source elements",
                    );
                }
                if info.as_ref().is_some_and(|i| !i.is_array) {
                    self.error(
                        line,
                        to,
                        "`fields` applies to a target that is a list of objects",
                    );
                }
                let child_prefix = format!("{full}.");
                let mut out = Vec::new();
                let mut seen = Vec::new();
                for sub in subs {
                    if let Some(c) = self.field(sub, &child_prefix, kind, schemas, tables, &seen) {
                        out.push(c);
                    }
                    seen.push(sub.to.clone());
                }
                Some(out)
            }
        };
        if f.split.as_ref().is_some_and(|s| s.is_empty())
            || (f.split.is_some() && info.as_ref().is_some_and(|i| !i.is_array))
        {
            self.error(
                line,
                to,
                "`split` needs separator characters and a target that is a list",
            );
        }
        let when = f
            .when
            .as_ref()
            .and_then(|c| self.condition(c, line, to, mapped));
        if self.errors.len() > before {
            return None;
        }
        Some(Field {
            to: f.to.clone(),
            parts,
            source: source?,
            convert,
            unit: f.unit.unwrap_or_default(),
            table,
            default: f.default.clone(),
            when,
            required: f.required,
            multiple: info.as_ref().is_some_and(|i| i.is_array),
            split: f.split.as_ref().map(|s| s.chars().collect()),
            nested,
        })
    }

    fn check_type(
        &mut self,
        f: &FieldSpec,
        line: Option<usize>,
        convert: Convert,
        table: Option<&Table>,
        info: &crate::schema::FieldInfo,
    ) {
        let to = Some(f.to.as_str());
        let accepts = |t: &str| {
            info.types.is_empty()
                || info
                    .types
                    .iter()
                    .any(|x| x == t || (x == "number" && t == "integer"))
        };
        let mut produced: Vec<Value> = Vec::new();
        if let Some(v) = &f.value {
            produced.push(v.clone());
        }
        if let Some(d) = &f.default {
            produced.push(d.clone());
        }
        if let Some(t) = table {
            produced.extend(t.values.values().cloned());
            produced.extend(t.default.clone());
        } else if f.value.is_none() {
            if !accepts(convert.json_type()) {
                self.error(
                    line,
                    to,
                    format!(
                        "type mismatch: `convert: {}` produces a {}, the schema wants {}",
                        serde_json::to_value(convert)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default(),
                        convert.json_type(),
                        info.types.join(" or ")
                    ),
                );
            }
            if let Some(format) = info.format.as_deref() {
                if matches!(format, "date" | "date-time") && convert.json_format() != Some(format) {
                    let want = if format == "date" { "date" } else { "datetime" };
                    self.error(
                        line,
                        to,
                        format!(
                            "type mismatch: the schema wants a {format}; add `convert: {want}`"
                        ),
                    );
                }
            }
        }
        for v in produced {
            let t = match &v {
                Value::String(_) => "string",
                Value::Bool(_) => "boolean",
                Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
                Value::Number(_) => "number",
                Value::Array(_) => "array",
                Value::Object(_) => "object",
                Value::Null => "null",
            };
            if !accepts(t) {
                self.error(
                    line,
                    to,
                    format!(
                        "type mismatch: value {v} is a {t}, the schema wants {}",
                        info.types.join(" or ")
                    ),
                );
            } else if let Some(allowed) = &info.enum_values {
                if !allowed.contains(&v) {
                    self.error(
                        line,
                        to,
                        format!(
                            "value {v} is not one the schema allows ({})",
                            allowed
                                .iter()
                                .map(Value::to_string)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    );
                }
            }
        }
    }

    fn condition(
        &mut self,
        c: &ConditionSpec,
        line: Option<usize>,
        to: Option<&str>,
        mapped: &[String],
    ) -> Option<(Subject, Test)> {
        let subject = match (&c.source, &c.field) {
            (Some(p), None) => Subject::Source(self.path(p, line, to)?),
            (None, Some(f)) => {
                if !mapped.contains(f) {
                    self.error(
                        line,
                        to,
                        format!(
                            "condition refers to '{f}', which is not mapped earlier in the list"
                        ),
                    );
                    return None;
                }
                Subject::Field(f.split('.').map(str::to_string).collect())
            }
            _ => {
                self.error(
                    line,
                    to,
                    "a condition needs exactly one of `source` or `field`",
                );
                return None;
            }
        };
        let text = |v: &Value| scalar_text(v).unwrap_or_default();
        let test = match (&c.equals, &c.not_equals, &c.one_of, &c.not_one_of, c.exists) {
            (Some(v), None, None, None, None) => Test::Equals(text(v)),
            (None, Some(v), None, None, None) => Test::NotEquals(text(v)),
            (None, None, Some(vs), None, None) => Test::OneOf(vs.iter().map(text).collect()),
            (None, None, None, Some(vs), None) => Test::NotOneOf(vs.iter().map(text).collect()),
            (None, None, None, None, Some(b)) => Test::Exists(b),
            _ => {
                self.error(
                    line,
                    to,
                    "a condition needs exactly one of `equals`, `not_equals`, `one_of`, `not_one_of` or `exists`",
                );
                return None;
            }
        };
        Some((subject, test))
    }

    /// Required fields no mapping produces: at the top, and inside every mapped object.
    fn check_required(&mut self, kind: RecordKind, schemas: &Schemas, mapped: &[String]) {
        let covers = |name: &str| {
            mapped
                .iter()
                .any(|m| m == name || m.starts_with(&format!("{name}.")))
        };
        let line = self.line_of("fields", "");
        for required in schemas.required(kind, "") {
            if RESERVED.contains(&required.as_str()) {
                continue;
            }
            if !covers(&required) {
                self.error(
                    line,
                    Some(&required),
                    format!(
                        "the {} schema requires '{required}' but no field maps it",
                        kind.versioned()
                    ),
                );
                continue;
            }
            for child in schemas.required(kind, &required) {
                let full = format!("{required}.{child}");
                if !covers(&full) {
                    self.error(
                        line,
                        Some(&full),
                        format!(
                            "the {} schema requires '{full}' but no field maps it",
                            kind.versioned()
                        ),
                    );
                }
            }
        }
    }
}
