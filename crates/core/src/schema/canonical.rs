//! The canonical record as the mapping produces it: a small tree whose strings borrow the source
//! text or the adapter wherever no conversion changed them, written straight out as the JSON
//! bytes that are published, and validated in place by the compiled JSON Schema (it is a JSON
//! representation the `jsonschema` crate reads through [`CanonicalJson`]). No `serde_json::Value`
//! is built for an accepted record.
//!
//! The bytes are exactly what `serde_json` writes for the same value (compact, members in order,
//! the same string escapes and number forms), so a record read back from the bus and serialised
//! again gives the same bytes and the same content hash.

use std::borrow::Cow;

use jsonschema::json::{cmp, Array, Json, Node, NodeIdentity, Object};
use jsonschema::types::JsonType;
use serde_json::{Map, Number, Value};

/// One value of a canonical record.
#[derive(Debug, Clone, PartialEq)]
pub enum Canonical<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'a, str>),
    List(Vec<Canonical<'a>>),
    /// Members in order; names are unique (see [`set`]).
    Object(Vec<(&'a str, Canonical<'a>)>),
}

impl<'a> Canonical<'a> {
    /// A canonical value from a JSON value (an adapter's constants and code tables), borrowing
    /// its strings.
    pub fn of(value: &'a Value) -> Canonical<'a> {
        match value {
            Value::Null => Canonical::Null,
            Value::Bool(b) => Canonical::Bool(*b),
            Value::Number(n) => Canonical::Number(n.clone()),
            Value::String(s) => Canonical::String(Cow::Borrowed(s)),
            Value::Array(items) => Canonical::List(items.iter().map(Canonical::of).collect()),
            Value::Object(map) => Canonical::Object(
                map.iter()
                    .map(|(k, v)| (k.as_str(), Canonical::of(v)))
                    .collect(),
            ),
        }
    }

    /// The same value as a `serde_json::Value`: for error reports and tests, never on the path
    /// of an accepted record.
    pub fn to_value(&self) -> Value {
        match self {
            Canonical::Null => Value::Null,
            Canonical::Bool(b) => Value::Bool(*b),
            Canonical::Number(n) => Value::Number(n.clone()),
            Canonical::String(s) => Value::String(s.to_string()),
            Canonical::List(items) => Value::Array(items.iter().map(Canonical::to_value).collect()),
            Canonical::Object(members) => {
                let mut map = Map::with_capacity(members.len());
                for (k, v) in members {
                    map.insert((*k).to_string(), v.to_value());
                }
                Value::Object(map)
            }
        }
    }

    /// Appends the value's JSON, as `serde_json::to_writer` writes it.
    pub fn write(&self, out: &mut Vec<u8>) {
        match self {
            Canonical::Null => out.extend_from_slice(b"null"),
            Canonical::Bool(true) => out.extend_from_slice(b"true"),
            Canonical::Bool(false) => out.extend_from_slice(b"false"),
            Canonical::Number(n) => write_number(n, out),
            Canonical::String(s) => write_str(s, out),
            Canonical::List(items) => {
                out.push(b'[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    v.write(out);
                }
                out.push(b']');
            }
            Canonical::Object(members) => write_members(members, out),
        }
    }
}

/// Appends `{"name":value,…}`.
pub fn write_members(members: &[(&str, Canonical<'_>)], out: &mut Vec<u8>) {
    out.push(b'{');
    for (i, (k, v)) in members.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(k, out);
        out.push(b':');
        v.write(out);
    }
    out.push(b'}');
}

fn write_number(n: &Number, out: &mut Vec<u8>) {
    if let Some(u) = n.as_u64() {
        out.extend_from_slice(itoa::Buffer::new().format(u).as_bytes());
    } else if let Some(i) = n.as_i64() {
        out.extend_from_slice(itoa::Buffer::new().format(i).as_bytes());
    } else {
        // Floats are rare in a record (amounts); serde_json's own formatting keeps them exact.
        serde_json::to_writer(&mut *out, n).expect("a number serialises");
    }
}

/// Appends a JSON string literal with serde_json's escapes: `"` `\` and the control characters
/// (`\b \t \n \f \r`, the others as `\u00XX`); everything else as UTF-8.
pub fn write_str(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    loop {
        let i = next_escape(bytes, start);
        out.extend_from_slice(&bytes[start..i]);
        let Some(&b) = bytes.get(i) else {
            break;
        };
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\x08' => out.extend_from_slice(b"\\b"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\x0c' => out.extend_from_slice(b"\\f"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 0xF) as usize],
            ]),
        }
        start = i + 1;
    }
    out.push(b'"');
}

/// The index of the first byte from `i` on that needs an escape, or the length: eight bytes at
/// a time while none does (most text never does).
fn next_escape(bytes: &[u8], mut i: usize) -> usize {
    loop {
        while let Some(word) = bytes.get(i..i + 8) {
            if needs_escape(u64::from_le_bytes(word.try_into().expect("eight bytes"))) {
                break;
            }
            i += 8;
        }
        let end = (i + 8).min(bytes.len());
        while i < end {
            let b = bytes[i];
            if b < 0x20 || b == b'"' || b == b'\\' {
                return i;
            }
            i += 1;
        }
        if i == bytes.len() {
            return i;
        }
    }
}

/// Whether any of eight bytes is a control character, `"` or `\` (exact: a byte's borrow
/// only reaches bytes above one that already matched).
fn needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below = |v: u64, n: u8| v.wrapping_sub(ONES * u64::from(n)) & !v & HIGH;
    below(word, 0x20) | below(word ^ (ONES * 0x22), 1) | below(word ^ (ONES * 0x5C), 1) != 0
}

/// The value at a dotted path of an object's members.
pub fn get<'v, 'a>(
    members: &'v [(&'a str, Canonical<'a>)],
    parts: &[String],
) -> Option<&'v Canonical<'a>> {
    let (last, parents) = parts.split_last()?;
    let mut members = members;
    for p in parents {
        match members.iter().find(|(k, _)| k == p)?.1 {
            Canonical::Object(ref inner) => members = inner,
            _ => return None,
        }
    }
    members.iter().find(|(k, _)| k == last).map(|(_, v)| v)
}

/// Sets the value at a dotted path, as `serde_json::Map::insert` does with `preserve_order`: a
/// name already there keeps its place and takes the new value; a parent that is missing or not
/// an object becomes an empty object.
pub fn set<'a>(
    members: &mut Vec<(&'a str, Canonical<'a>)>,
    parts: &'a [String],
    value: Canonical<'a>,
) {
    let Some((last, parents)) = parts.split_last() else {
        return;
    };
    let mut members = members;
    for p in parents {
        let i = match members.iter().position(|(k, _)| k == p) {
            Some(i) => {
                if !matches!(members[i].1, Canonical::Object(_)) {
                    members[i].1 = Canonical::Object(Vec::new());
                }
                i
            }
            None => {
                // Room for the members a record's objects usually have, so they do not grow it.
                members.push((p.as_str(), Canonical::Object(Vec::with_capacity(16))));
                members.len() - 1
            }
        };
        let Canonical::Object(inner) = &mut members[i].1 else {
            unreachable!("just made an object")
        };
        members = inner;
    }
    match members.iter_mut().find(|(k, _)| k == last) {
        Some(slot) => slot.1 = value,
        None => members.push((last.as_str(), value)),
    }
}

/// The canonical record as a JSON representation of the `jsonschema` crate: the compiled schema
/// validates the record where it is, without converting it.
pub struct CanonicalJson;

impl Json for CanonicalJson {
    type Node<'a> = &'a Canonical<'a>;
    type PreparedKey = String;
    type StringBuffer = ();

    // Objects are short vectors: a pass over the members costs about one lookup per member.
    const KEYS_PER_LOOKUP: usize = 1;
    const ACYCLIC: bool = true;

    fn prepare_key(key: &str) -> String {
        key.to_owned()
    }

    fn with_string_node<T>(
        (): &mut (),
        string: &str,
        f: impl FnOnce(<Self as Json>::Node<'_>) -> T,
    ) -> T {
        f(&Canonical::String(Cow::Borrowed(string)))
    }
}

/// The members of a canonical object.
#[derive(Clone, Copy)]
pub struct Members<'a>(&'a [(&'a str, Canonical<'a>)]);

/// The elements of a canonical list.
#[derive(Clone, Copy)]
pub struct Elements<'a>(&'a [Canonical<'a>]);

pub struct MembersIter<'a>(std::slice::Iter<'a, (&'a str, Canonical<'a>)>);

impl<'a> Iterator for MembersIter<'a> {
    type Item = (&'a str, &'a Canonical<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|(k, v)| (*k, v))
    }
}

impl<'a> Node<'a, CanonicalJson> for &'a Canonical<'a> {
    type Object = Members<'a>;
    type Array = Elements<'a>;
    type Number = &'a Number;

    fn as_object(&self) -> Option<Members<'a>> {
        match self {
            Canonical::Object(m) => Some(Members(m)),
            _ => None,
        }
    }

    fn as_array(&self) -> Option<Elements<'a>> {
        match self {
            Canonical::List(items) => Some(Elements(items)),
            _ => None,
        }
    }

    fn as_string(&self) -> Option<Cow<'a, str>> {
        match self {
            Canonical::String(s) => Some(Cow::Borrowed(s.as_ref())),
            _ => None,
        }
    }

    fn as_number(&self) -> Option<&'a Number> {
        match self {
            Canonical::Number(n) => Some(n),
            _ => None,
        }
    }

    fn as_boolean(&self) -> Option<bool> {
        match self {
            Canonical::Bool(b) => Some(*b),
            _ => None,
        }
    }

    fn is_null(&self) -> bool {
        matches!(self, Canonical::Null)
    }

    fn json_type(&self) -> JsonType {
        match self {
            Canonical::Null => JsonType::Null,
            Canonical::Bool(_) => JsonType::Boolean,
            Canonical::Number(_) => JsonType::Number,
            Canonical::String(_) => JsonType::String,
            Canonical::List(_) => JsonType::Array,
            Canonical::Object(_) => JsonType::Object,
        }
    }

    fn string_length(&self) -> Option<u64> {
        match self {
            Canonical::String(s) => Some(s.chars().count() as u64),
            _ => None,
        }
    }

    fn string_length_within(&self, min: u64, max: u64) -> Option<bool> {
        let Canonical::String(s) = self else {
            return None;
        };
        // A code point takes one to four bytes, so the count lies in `ceil(bytes / 4)..=bytes`.
        let bytes = s.len() as u64;
        let fewest = bytes.div_ceil(4);
        if bytes < min || fewest > max {
            return Some(false);
        }
        if min <= fewest && bytes <= max {
            return Some(true);
        }
        Some((min..=max).contains(&(s.chars().count() as u64)))
    }

    fn equals_value(&self, expected: &Value) -> bool {
        match (self, expected) {
            (Canonical::String(s), Value::String(e)) => s == e,
            (Canonical::String(_), _) | (_, Value::String(_)) => false,
            (Canonical::Bool(b), Value::Bool(e)) => b == e,
            (Canonical::Null, Value::Null) => true,
            _ => cmp::equal(&self.to_value(), expected),
        }
    }

    fn to_value(&self) -> Cow<'a, Value> {
        Cow::Owned(Canonical::to_value(self))
    }

    fn identity(&self) -> Option<NodeIdentity> {
        Some(NodeIdentity::new(
            std::ptr::from_ref::<Canonical<'a>>(self) as usize
        ))
    }
}

impl<'a> Object<'a, CanonicalJson> for Members<'a> {
    type Node = &'a Canonical<'a>;
    type MemberName = &'a str;
    type MembersIter = MembersIter<'a>;

    fn len(&self) -> usize {
        self.0.len()
    }

    fn get(&self, key: &String) -> Option<&'a Canonical<'a>> {
        self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    fn members(&self) -> MembersIter<'a> {
        MembersIter(self.0.iter())
    }
}

impl<'a> Array<'a, CanonicalJson> for Elements<'a> {
    type Node = &'a Canonical<'a>;
    type ElementsIter = std::slice::Iter<'a, Canonical<'a>>;

    fn len(&self) -> usize {
        self.0.len()
    }

    fn elements(&self) -> std::slice::Iter<'a, Canonical<'a>> {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::format::Format;
    use crate::adapter::AdapterSet;
    use crate::pipeline::{self, Outcome, Unit};
    use crate::schema::{RecordKind, Schemas};
    use proptest::prelude::*;
    use serde_json::json;
    use std::sync::OnceLock;

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            any::<String>().prop_map(Value::String),
            "[\\x00-\\x7f\u{2028}宁夏]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((any::<String>(), inner), 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn a_canonical_value_writes_the_bytes_serde_json_writes(v in json_value()) {
            let c = Canonical::of(&v);
            let mut out = Vec::new();
            c.write(&mut out);
            prop_assert_eq!(&out, &serde_json::to_vec(&v).unwrap());
            prop_assert_eq!(c.to_value(), v);
        }
    }

    /// The accepted records of every shipped fixture, with their kind.
    fn records() -> &'static (Schemas, Vec<(RecordKind, Value)>) {
        static RECORDS: OnceLock<(Schemas, Vec<(RecordKind, Value)>)> = OnceLock::new();
        RECORDS.get_or_init(|| {
            let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
            let schemas = Schemas::load(Some(&root.join("schemas"))).unwrap();
            let adapters = AdapterSet::load(&root.join("adapters"), &schemas).unwrap();
            let received =
                chrono::DateTime::parse_from_rfc3339("2026-01-05T09:00:00+08:00").unwrap();
            let mut out = Vec::new();
            for adapter in adapters.iter() {
                for file in crate::golden::fixture_inputs(adapter) {
                    let name = file.file_name().unwrap().to_string_lossy().to_string();
                    let body = std::fs::read(&file).unwrap();
                    let Ok(outcomes) = pipeline::process(
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
                        if let Outcome::Accepted(c) = o {
                            let event: Value = serde_json::from_slice(&c.event).unwrap();
                            out.push((adapter.kind, event["data"].clone()));
                        }
                    }
                }
            }
            assert!(out.len() > 30, "{} records", out.len());
            (schemas, out)
        })
    }

    /// Values an edit puts into a record: what the schemas check (identifiers, dates, enums,
    /// lengths, types) right and wrong.
    fn replacement() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            Just(json!("")),
            Just(json!(" ")),
            Just(json!("91110000600037341L")),
            Just(json!("91110000600037341N")),
            Just(json!("11010519491231002X")),
            Just(json!("36042619910102009X")),
            Just(json!("2026-02-29")),
            Just(json!("2024-02-29")),
            Just(json!("2026-01-05T09:00:00+08:00")),
            Just(json!("2026-01-05 09:00:00")),
            Just(json!("自然人")),
            Just(json!("法人及非法人组织")),
            Just(json!("个体工商户")),
            Just(json!("居民身份证")),
            Just(json!("普通")),
            Just(json!("罚款")),
            Just(json!("640200")),
            Just(json!("64020")),
            Just(json!(["警告", "罚款"])),
            Just(json!(["警告", "警告"])),
            Just(json!([])),
            Just(json!({})),
            Just(json!({"name": "x"})),
            Just(json!(true)),
            Just(json!(1)),
            Just(json!(1.0)),
            Just(json!(-0.5)),
            Just(json!(100000001)),
            "[a-z0-9\u{4e00}-\u{4e10}]{0,40}".prop_map(Value::String),
            "x{190,320}".prop_map(Value::String),
            json_value(),
        ]
    }

    /// Changes the member reached by `pick` (a walk over the record's objects and lists): removes
    /// it, replaces it, or adds an unknown member next to it.
    fn edit(node: &mut Value, pick: &[usize], action: u8, new: Value) {
        let Some((&p, rest)) = pick.split_first() else {
            *node = new;
            return;
        };
        match node {
            Value::Object(map) if !map.is_empty() => {
                let key = map.keys().nth(p % map.len()).unwrap().clone();
                if rest.is_empty() || !matches!(map[&key], Value::Object(_) | Value::Array(_)) {
                    match action % 4 {
                        0 => {
                            map.shift_remove(&key);
                        }
                        1 => {
                            map.insert(format!("{key}_extra"), new);
                        }
                        _ => {
                            map.insert(key, new);
                        }
                    }
                } else {
                    edit(map.get_mut(&key).unwrap(), rest, action, new);
                }
            }
            Value::Array(items) if !items.is_empty() => {
                let i = p % items.len();
                if rest.is_empty() || !matches!(items[i], Value::Object(_) | Value::Array(_)) {
                    match action % 3 {
                        0 => {
                            items.remove(i);
                        }
                        1 => items.push(new),
                        _ => items[i] = new,
                    }
                } else {
                    edit(&mut items[i], rest, action, new);
                }
            }
            _ => *node = new,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512)
        ))]

        /// The schema compiled for canonical records judges every record, and words every
        /// violation, exactly as the schema compiled for `serde_json` values (the reference).
        #[test]
        fn canonical_validation_agrees_with_the_value_validator(
            which in any::<prop::sample::Index>(),
            edits in prop::collection::vec(
                (prop::collection::vec(any::<usize>(), 1..4), any::<u8>(), replacement()),
                0..5,
            ),
        ) {
            let (schemas, records) = records();
            let (kind, base) = &records[which.index(records.len())];
            let mut record = base.clone();
            for (pick, action, new) in edits {
                edit(&mut record, &pick, action, new);
            }
            let expected = schemas.validate(*kind, &record);
            let actual = schemas.validate_canonical(*kind, &Canonical::of(&record));
            prop_assert_eq!(actual, expected);
        }
    }

    proptest! {
        #[test]
        fn a_word_needs_an_escape_when_one_of_its_bytes_does(word in any::<u64>(), at in 0usize..8, byte in any::<u8>()) {
            let mut bytes = word.to_le_bytes();
            bytes[at] = byte;
            let expected = bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
            prop_assert_eq!(needs_escape(u64::from_le_bytes(bytes)), expected);
        }
    }

    #[test]
    fn paths_are_set_as_a_serde_json_map_inserts_them() {
        let parts = |s: &str| s.split('.').map(str::to_string).collect::<Vec<_>>();
        let (a, ab, ac, b) = (parts("a"), parts("a.b"), parts("a.c"), parts("b"));
        let mut members = Vec::new();
        set(&mut members, &ab, Canonical::Bool(true));
        set(&mut members, &b, Canonical::Null);
        set(&mut members, &ac, Canonical::Number(1.into()));
        set(&mut members, &ab, Canonical::Bool(false));
        let mut out = Vec::new();
        write_members(&members, &mut out);
        assert_eq!(out, br#"{"a":{"b":false,"c":1},"b":null}"#);
        assert_eq!(get(&members, &ac), Some(&Canonical::Number(1.into())));
        // A parent that is not an object becomes one, in its place.
        set(&mut members, &a, Canonical::Null);
        set(&mut members, &ac, Canonical::Bool(true));
        out.clear();
        write_members(&members, &mut out);
        assert_eq!(out, br#"{"a":{"c":true},"b":null}"#);
        assert_eq!(get(&members, &parts("b.c")), None);
    }
}
