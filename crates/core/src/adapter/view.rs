//! A borrowed view of a source record: what the mapping reads, without a `serde_json::Value` tree.
//!
//! A JSON record is parsed once, straight from the request text, with only the members its
//! adapter reads: each member name is looked up in the adapter's [`Slots`] (resolved when the
//! adapter was compiled), its value kept as a [`View`] whose strings borrow the text wherever it
//! has no escapes, and every other member is checked for syntax and skipped. Records that come
//! from XML, CSV, Excel or a `records:` selection are `serde_json::Value`s already; [`Src`] reads
//! both the same way, so one mapping serves every format.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize as _;
use serde_json::{Map, Number, Value};

/// A JSON value whose strings borrow the text they were parsed from.
#[derive(Debug, Clone, PartialEq)]
pub enum View<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'a, str>),
    Array(Vec<View<'a>>),
    /// Members in document order. A repeated name keeps every occurrence and the last one
    /// counts, as it does in a `serde_json::Map`.
    Object(Vec<(Cow<'a, str>, View<'a>)>),
    /// A member a general JSONPath reads, parsed as the `serde_json::Value` the query runs on.
    Json(Value),
}

impl<'a> View<'a> {
    /// The same value as a `serde_json::Value` (for the general JSONPath queries).
    pub fn to_value(&self) -> Value {
        match self {
            View::Null => Value::Null,
            View::Bool(b) => Value::Bool(*b),
            View::Number(n) => Value::Number(n.clone()),
            View::String(s) => Value::String(s.to_string()),
            View::Array(items) => Value::Array(items.iter().map(View::to_value).collect()),
            View::Object(members) => {
                let mut map = Map::new();
                for (k, v) in members {
                    map.insert(k.to_string(), v.to_value());
                }
                Value::Object(map)
            }
            View::Json(v) => v.clone(),
        }
    }

    /// A view of a `serde_json::Value`, borrowing its strings.
    pub fn of(value: &'a Value) -> View<'a> {
        match value {
            Value::Null => View::Null,
            Value::Bool(b) => View::Bool(*b),
            Value::Number(n) => View::Number(n.clone()),
            Value::String(s) => View::String(Cow::Borrowed(s)),
            Value::Array(items) => View::Array(items.iter().map(View::of).collect()),
            Value::Object(map) => View::Object(
                map.iter()
                    .map(|(k, v)| (Cow::Borrowed(k.as_str()), View::of(v)))
                    .collect(),
            ),
        }
    }
}

/// One source value, from either representation.
#[derive(Debug, Clone, Copy)]
pub enum Src<'a> {
    View(&'a View<'a>),
    Value(&'a Value),
}

impl<'a> Src<'a> {
    /// The source value a view holds.
    pub fn of(view: &'a View<'a>) -> Src<'a> {
        match view {
            View::Json(v) => Src::Value(v),
            other => Src::View(other),
        }
    }

    /// A `View::Json` read as the value it holds.
    fn norm(self) -> Src<'a> {
        match self {
            Src::View(View::Json(v)) => Src::Value(v),
            other => other,
        }
    }

    pub fn is_object(self) -> bool {
        matches!(
            self.norm(),
            Src::View(View::Object(_)) | Src::Value(Value::Object(_))
        )
    }

    pub fn is_array(self) -> bool {
        matches!(
            self.norm(),
            Src::View(View::Array(_)) | Src::Value(Value::Array(_))
        )
    }

    /// A member of an object (the last of a repeated name).
    pub fn get(self, name: &str) -> Option<Src<'a>> {
        match self.norm() {
            Src::View(View::Object(members)) => members
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| Src::of(v)),
            Src::Value(Value::Object(map)) => map.get(name).map(Src::Value),
            _ => None,
        }
    }

    /// The elements of an array.
    pub fn items(self) -> Option<Vec<Src<'a>>> {
        match self.norm() {
            Src::View(View::Array(items)) => Some(items.iter().map(Src::of).collect()),
            Src::Value(Value::Array(items)) => Some(items.iter().map(Src::Value).collect()),
            _ => None,
        }
    }

    /// Null, or a text that is empty once normalised.
    pub fn is_empty(self) -> bool {
        match self.norm() {
            Src::View(View::Null) | Src::Value(Value::Null) => true,
            Src::View(View::String(s)) => super::convert::is_blank(s),
            Src::Value(Value::String(s)) => super::convert::is_blank(s),
            _ => false,
        }
    }

    /// The text of a scalar, normalised; `None` for null, empty text, arrays and objects.
    pub fn text(self) -> Option<Cow<'a, str>> {
        let s = match self.norm() {
            Src::View(View::String(s)) => super::convert::normalize_cow(s),
            Src::Value(Value::String(s)) => super::convert::normalize_cow(s),
            Src::View(View::Number(n)) | Src::Value(Value::Number(n)) => Cow::Owned(n.to_string()),
            Src::View(View::Bool(b)) | Src::Value(Value::Bool(b)) => Cow::Owned(b.to_string()),
            _ => return None,
        };
        (!s.is_empty()).then_some(s)
    }

    /// "a string", "an object" …: for a person reading why a record is not one.
    pub fn type_phrase(self) -> &'static str {
        match self.norm() {
            Src::View(View::Null) | Src::Value(Value::Null) => "null",
            Src::View(View::Bool(_)) | Src::Value(Value::Bool(_)) => "a boolean",
            Src::View(View::Number(_)) | Src::Value(Value::Number(_)) => "a number",
            Src::View(View::String(_)) | Src::Value(Value::String(_)) => "a string",
            Src::View(View::Array(_)) | Src::Value(Value::Array(_)) => "an array",
            Src::View(View::Object(_)) | Src::Value(Value::Object(_)) => "an object",
            Src::View(View::Json(_)) => unreachable!("read as the value it holds"),
        }
    }

    /// The value as a `serde_json::Value`, borrowed when it is one.
    pub fn to_value(self) -> Cow<'a, Value> {
        match self {
            Src::View(View::Json(v)) | Src::Value(v) => Cow::Borrowed(v),
            Src::View(v) => Cow::Owned(v.to_value()),
        }
    }
}

/// The member names an adapter reads from a record, each with its slot: a small open-addressing
/// table built once when the adapter is compiled, so a record's members are placed by one hash
/// and compare each.
#[derive(Debug, Clone, Default)]
pub struct Slots {
    names: Vec<String>,
    /// Slots parsed as `serde_json::Value` ([`View::Json`]): the members general JSONPaths read.
    json: Vec<bool>,
    /// Index + 1 into `names`, 0 for an empty bucket; the length is a power of two.
    table: Vec<u32>,
}

impl Slots {
    /// A table of `names` (sorted, without repeats): slot `i` is `names[i]`, parsed as a
    /// `serde_json::Value` where `json[i]`.
    pub fn new(names: Vec<String>, json: Vec<bool>) -> Slots {
        assert_eq!(names.len(), json.len(), "a flag per slot");
        let size = (names.len() * 2).next_power_of_two().max(8);
        let mut table = vec![0u32; size];
        for (i, name) in names.iter().enumerate() {
            let mut b = hash(name) & (size - 1);
            while table[b] != 0 {
                b = (b + 1) & (size - 1);
            }
            table[b] = i as u32 + 1;
        }
        Slots { names, json, table }
    }

    /// The slot of a member name.
    pub fn find(&self, name: &str) -> Option<usize> {
        let mask = self.table.len() - 1;
        let mut b = hash(name) & mask;
        loop {
            match self.table[b] {
                0 => return None,
                i if self.names[i as usize - 1] == name => return Some(i as usize - 1),
                _ => b = (b + 1) & mask,
            }
        }
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// The first and last eight bytes of a name and its length, mixed: member names are short, and
/// the table is built by the adapter, not by senders (a collision costs one more comparison).
fn hash(name: &str) -> usize {
    let b = name.as_bytes();
    let word = |part: &[u8]| {
        let mut w = [0u8; 8];
        w[..part.len()].copy_from_slice(part);
        u64::from_le_bytes(w)
    };
    let (head, tail) = if b.len() >= 8 {
        (word(&b[..8]), word(&b[b.len() - 8..]))
    } else {
        (word(b), 0)
    };
    let h = (head ^ tail.rotate_left(29) ^ b.len() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (h ^ (h >> 32)) as usize
}

/// A parsed JSON record.
#[derive(Debug)]
pub enum Parsed<'a> {
    /// An object: the value of each member the adapter reads, by slot.
    Slots(Vec<Option<View<'a>>>),
    /// Anything that is not an object.
    Other(View<'a>),
}

/// Parses one record into [`Parsed`]. `strict` parses the members the adapter does not read as
/// fully as `serde_json::Value` would (numbers range-checked), for a body that is one record and
/// used to be parsed whole; otherwise they are skipped as `serde::de::IgnoredAny` does.
#[derive(Clone, Copy)]
pub struct RecordSeed<'s> {
    pub slots: &'s Slots,
    pub strict: bool,
}

impl<'de> DeserializeSeed<'de> for RecordSeed<'_> {
    type Value = Parsed<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Parsed<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

macro_rules! other {
    ($name:ident, $t:ty, $make:expr) => {
        fn $name<E: de::Error>(self, v: $t) -> Result<Parsed<'de>, E> {
            #[allow(clippy::redundant_closure_call)]
            Ok(Parsed::Other(($make)(v)))
        }
    };
}

impl<'de> Visitor<'de> for RecordSeed<'_> {
    type Value = Parsed<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    other!(visit_bool, bool, View::Bool);
    other!(visit_i64, i64, |v: i64| View::Number(v.into()));
    other!(visit_u64, u64, |v: u64| View::Number(v.into()));
    other!(visit_f64, f64, |v: f64| Number::from_f64(v)
        .map_or(View::Null, View::Number));
    other!(visit_str, &str, |v: &str| View::String(Cow::Owned(
        v.to_string()
    )));
    other!(visit_string, String, |v: String| View::String(Cow::Owned(
        v
    )));
    other!(visit_borrowed_str, &'de str, |v: &'de str| View::String(
        Cow::Borrowed(v)
    ));

    fn visit_none<E: de::Error>(self) -> Result<Parsed<'de>, E> {
        Ok(Parsed::Other(View::Null))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Parsed<'de>, E> {
        Ok(Parsed::Other(View::Null))
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Parsed<'de>, D::Error> {
        View::deserialize(d).map(Parsed::Other)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Parsed<'de>, A::Error> {
        ViewVisitor.visit_seq(seq).map(Parsed::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Parsed<'de>, A::Error> {
        let mut slots: Vec<Option<View<'de>>> = (0..self.slots.len()).map(|_| None).collect();
        while let Some(Key(name)) = map.next_key::<Key<'de>>()? {
            match self.slots.find(&name) {
                Some(i) if self.slots.json[i] => {
                    slots[i] = Some(View::Json(map.next_value::<Value>()?));
                }
                Some(i) => slots[i] = Some(map.next_value::<View<'de>>()?),
                None if self.strict => {
                    map.next_value::<Skip>()?;
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Parsed::Slots(slots))
    }
}

/// The records of a top-level JSON array, each parsed with [`RecordSeed`].
pub struct RecordsSeed<'s>(pub RecordSeed<'s>);

impl<'de> DeserializeSeed<'de> for RecordsSeed<'_> {
    type Value = Vec<Parsed<'de>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<Parsed<'de>>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for RecordsSeed<'_> {
    type Value = Vec<Parsed<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of records")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Parsed<'de>>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(16));
        while let Some(p) = seq.next_element_seed(self.0)? {
            out.push(p);
        }
        Ok(out)
    }
}

/// A member name, borrowed from the input when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_string())))
            }
            fn visit_string<E>(self, s: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

/// A value parsed as fully as a `serde_json::Value` would be, and dropped.
struct Skip;

impl<'de> serde::Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Skip;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any valid JSON value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_none<E>(self) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_unit<E>(self) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Skip, D::Error> {
                Skip::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
                while seq.next_element::<Skip>()?.is_some() {}
                Ok(Skip)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
                while map.next_key::<Skip>()?.is_some() {
                    map.next_value::<Skip>()?;
                }
                Ok(Skip)
            }
        }
        d.deserialize_any(V)
    }
}

struct ViewVisitor;

impl<'de> Visitor<'de> for ViewVisitor {
    type Value = View<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<View<'de>, E> {
        Ok(View::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<View<'de>, E> {
        Ok(View::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<View<'de>, E> {
        Ok(View::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<View<'de>, E> {
        // As `serde_json::Value` does: a float JSON cannot hold is null.
        Ok(Number::from_f64(v).map_or(View::Null, View::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<View<'de>, E> {
        Ok(View::String(Cow::Owned(v.to_string())))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<View<'de>, E> {
        Ok(View::String(Cow::Borrowed(v)))
    }

    fn visit_string<E>(self, v: String) -> Result<View<'de>, E> {
        Ok(View::String(Cow::Owned(v)))
    }

    fn visit_none<E>(self) -> Result<View<'de>, E> {
        Ok(View::Null)
    }

    fn visit_unit<E>(self) -> Result<View<'de>, E> {
        Ok(View::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<View<'de>, D::Error> {
        View::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<View<'de>, A::Error> {
        // serde_json gives no size hint: room for a few, so short lists are not grown.
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(4));
        while let Some(v) = seq.next_element::<View<'de>>()? {
            items.push(v);
        }
        Ok(View::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<View<'de>, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
            members.push((k, map.next_value::<View<'de>>()?));
        }
        Ok(View::Object(members))
    }
}

impl<'de> serde::Deserialize<'de> for View<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ViewVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_view_reads_as_the_value_it_was_parsed_from() {
        let text = r#"{"a": "x", "b": [1, -2, 2.5, true, null], "c": {"d": "e\"f", "d": "g"}, "n": 1e300}"#;
        let view: View = serde_json::from_str(text).unwrap();
        let value: Value = serde_json::from_str(text).unwrap();
        assert_eq!(view.to_value(), value);
        assert_eq!(View::of(&value).to_value(), value);
        // The last of a repeated name counts, as in serde_json.
        assert_eq!(
            Src::View(&view)
                .get("c")
                .and_then(|c| c.get("d"))
                .and_then(Src::text),
            Some(Cow::Borrowed("g"))
        );
        let View::Object(members) = &view else {
            panic!()
        };
        assert!(matches!(members[0].1, View::String(Cow::Borrowed("x"))));
    }

    #[test]
    fn the_slot_table_finds_every_name_and_nothing_else() {
        let names: Vec<String> = (0..100).map(|i| format!("名称{i}")).collect();
        let slots = Slots::new(names.clone(), vec![false; 100]);
        for (i, n) in names.iter().enumerate() {
            assert_eq!(slots.find(n), Some(i));
        }
        assert_eq!(slots.find("名称100"), None);
        assert_eq!(slots.find(""), None);
        assert_eq!(Slots::new(Vec::new(), Vec::new()).find("x"), None);
    }

    #[test]
    fn a_record_keeps_only_the_members_its_adapter_reads() {
        let slots = Slots::new(
            vec!["a".into(), "b".into(), "c".into()],
            vec![false, true, false],
        );
        let seed = RecordSeed {
            slots: &slots,
            strict: false,
        };
        let mut de = serde_json::Deserializer::from_str(
            r#"{"a": 1, "b": {"x": [1]}, "d": [1e999], "c": "z", "a": 2}"#,
        );
        let Parsed::Slots(s) = seed.deserialize(&mut de).unwrap() else {
            panic!()
        };
        assert_eq!(s[0], Some(View::Number(2.into())));
        assert_eq!(s[1], Some(View::Json(json!({"x": [1]}))));
        assert_eq!(s[2], Some(View::String(Cow::Borrowed("z"))));
        // Strict parsing range-checks what it skips, as a whole-value parse does.
        let strict = RecordSeed {
            slots: &slots,
            strict: true,
        };
        let mut de = serde_json::Deserializer::from_str(r#"{"a": 1, "d": {"x": [1e999]}}"#);
        assert!(strict.deserialize(&mut de).is_err());
        let mut de = serde_json::Deserializer::from_str(r#"[1, {"a": "b"}]"#);
        let all = RecordsSeed(seed).deserialize(&mut de).unwrap();
        assert!(matches!(all[0], Parsed::Other(View::Number(_))));
        assert!(matches!(all[1], Parsed::Slots(_)));
        assert_eq!(json!(null), View::Null.to_value());
    }
}
