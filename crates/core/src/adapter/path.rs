//! Source paths: JSONPath (RFC 9535) through `serde_json_path`, with a fast path for the plain
//! member chains — `$.APPLYNAME`, `$.data.rows`, `$['办件编号']` — that nearly every adapter
//! field uses: those are walked member by member instead of a general query, and their first
//! member is resolved to a record slot when the adapter is compiled (see [`super::view`]).
//!
//! Lists and simple filters — `$.ITEMS[*]`, `$.ATTRS[?@.ISTAKE == '0']`, `$.a[0]` — are
//! evaluated on the borrowed view too ([`Step`]), with `serde_json_path`'s semantics; any other
//! query runs in `serde_json_path` on the member parsed as a `serde_json::Value`.

use serde_json::{Number, Value};
use serde_json_path::JsonPath;

use super::view::{Src, View};

/// A compiled source path.
pub struct SourcePath {
    form: Form,
    /// The record member the path reads under, if it starts with one.
    root: Option<String>,
    /// The slot of `root` among the members the adapter reads, once the adapter is compiled.
    slot: Option<usize>,
}

enum Form {
    /// `$` followed by member names only.
    Members(Vec<String>),
    /// Member names, wildcards, indexes and comparison filters, evaluated on either
    /// representation.
    Steps(Vec<Step>),
    /// Anything else: wildcards, filters, indexes, descendants. `member` is the same query
    /// relative to the value of `root` (`$.ATTRS[?@.ISTAKE == '0']` → `$[?@.ISTAKE == '0']`).
    General {
        whole: JsonPath,
        member: Option<JsonPath>,
    },
}

/// Where a path is evaluated: a record parsed into slots, or one value (a record that is a
/// `serde_json::Value` already, or an element selected by a field with sub-fields).
#[derive(Clone, Copy)]
pub enum Scope<'a> {
    Record(&'a [Option<View<'a>>]),
    Element(Src<'a>),
}

impl SourcePath {
    /// Parses a JSONPath; every path is checked by the general parser, so both forms accept
    /// exactly the RFC 9535 syntax.
    pub fn parse(text: &str) -> Result<SourcePath, String> {
        let whole = JsonPath::parse(text).map_err(|e| e.to_string())?;
        Ok(match members(text) {
            Some(names) => SourcePath {
                root: names.first().cloned(),
                form: Form::Members(names),
                slot: None,
            },
            None if steps(text).is_some() => {
                let steps = steps(text).expect("just parsed");
                SourcePath {
                    root: match steps.first() {
                        Some(Step::Name(name)) => Some(name.clone()),
                        _ => None,
                    },
                    form: Form::Steps(steps),
                    slot: None,
                }
            }
            None => {
                let root = first_member(text);
                let member = root
                    .as_ref()
                    .and_then(|(_, rest)| JsonPath::parse(&format!("${rest}")).ok());
                SourcePath {
                    root: root.map(|(name, _)| name),
                    form: Form::General { whole, member },
                    slot: None,
                }
            }
        })
    }

    /// The member of the record this path reads under, or `None` when it may read anything
    /// (`$`, `$.*`, `$..x`): what a record parser must keep for the path to select the same.
    pub fn root_member(&self) -> Option<&str> {
        self.root.as_deref()
    }

    /// Whether this is a plain member chain (walked without a general query).
    pub fn is_plain(&self) -> bool {
        matches!(self.form, Form::Members(_))
    }

    /// Whether a general query reads the value of the root member (which a record parser must
    /// then keep as a `serde_json::Value`).
    pub fn is_general(&self) -> bool {
        matches!(self.form, Form::General { .. })
    }

    /// Resolves the root member to its slot among `names` (sorted).
    pub fn resolve(&mut self, names: &[String]) {
        self.slot = self.root.as_ref().and_then(|r| names.binary_search(r).ok());
    }

    /// Every value the path selects.
    pub fn all<'a>(&self, value: &'a Value) -> Vec<&'a Value> {
        match &self.form {
            Form::Members(_) => self.first(value).into_iter().collect(),
            Form::Steps(steps) => evaluate(steps, Src::Value(value))
                .into_iter()
                .filter_map(|s| match s {
                    Src::Value(v) => Some(v),
                    Src::View(_) => None,
                })
                .collect(),
            Form::General { whole, .. } => whole.query(value).all(),
        }
    }

    /// The first value the path selects.
    pub fn first<'a>(&self, value: &'a Value) -> Option<&'a Value> {
        match &self.form {
            Form::Members(names) => names
                .iter()
                .try_fold(value, |v, name| v.as_object()?.get(name)),
            _ => self.all(value).into_iter().next(),
        }
    }

    /// The first value the path selects in `scope`.
    pub fn first_in<'a>(&self, scope: Scope<'a>) -> Option<Src<'a>> {
        match &self.form {
            Form::Members(names) => match scope {
                Scope::Record(slots) => {
                    let start = Src::of(slots.get(self.slot?)?.as_ref()?);
                    names[1..].iter().try_fold(start, |v, name| v.get(name))
                }
                Scope::Element(src) => names.iter().try_fold(src, |v, name| v.get(name)),
            },
            _ => self.all_in(scope).into_iter().next(),
        }
    }

    /// Every value the path selects in `scope`.
    pub fn all_in<'a>(&self, scope: Scope<'a>) -> Vec<Src<'a>> {
        match &self.form {
            Form::Members(_) => self.first_in(scope).into_iter().collect(),
            Form::Steps(steps) => match scope {
                Scope::Record(slots) => match self.slot.and_then(|i| slots.get(i)) {
                    Some(Some(v)) => evaluate(&steps[1..], Src::of(v)),
                    _ => Vec::new(),
                },
                Scope::Element(src) => evaluate(steps, src),
            },
            Form::General { .. } => self.query(scope),
        }
    }

    fn query<'a>(&self, scope: Scope<'a>) -> Vec<Src<'a>> {
        let Form::General { whole, member } = &self.form else {
            return Vec::new();
        };
        let results = match scope {
            // The adapter parses the member a general path reads as a `serde_json::Value`
            // (`View::Json`), so the query runs on it where it is.
            Scope::Record(slots) => match (self.slot.and_then(|i| slots.get(i)), member) {
                (Some(Some(View::Json(v))), Some(member)) => member.query(v).all(),
                _ => Vec::new(),
            },
            Scope::Element(Src::Value(v)) | Scope::Element(Src::View(View::Json(v))) => {
                whole.query(v).all()
            }
            // Elements a general path reads under are parsed as `serde_json::Value`s too (the
            // adapter marks the slot they come from), so no query runs on a view.
            Scope::Element(Src::View(_)) => Vec::new(),
        };
        results.into_iter().map(Src::Value).collect()
    }
}

/// One segment of a path evaluated on the borrowed view.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    /// `.name` or `['name']`.
    Name(String),
    /// `[*]` or `.*`.
    Wildcard,
    /// `[n]`, from the end when negative.
    Index(i64),
    /// `[?@.a.b <op> literal]`.
    Filter(Filter),
}

#[derive(Debug, Clone, PartialEq)]
struct Filter {
    /// The member names of the relative singular query (`@.a.b`).
    query: Vec<String>,
    op: Op,
    literal: Value,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// The nodes `steps` select from `start`, in order, as `serde_json_path` selects them.
fn evaluate<'a>(steps: &[Step], start: Src<'a>) -> Vec<Src<'a>> {
    let mut nodes = vec![start];
    for step in steps {
        let mut next = Vec::new();
        for node in nodes {
            match step {
                Step::Name(name) => next.extend(node.get(name)),
                Step::Wildcard => next.extend(children(node)),
                Step::Index(i) => {
                    if let Some(items) = node.items() {
                        let at = if *i < 0 {
                            usize::try_from(i.unsigned_abs())
                                .ok()
                                .and_then(|k| items.len().checked_sub(k))
                        } else {
                            usize::try_from(*i).ok()
                        };
                        next.extend(at.and_then(|k| items.get(k).copied()));
                    }
                }
                Step::Filter(f) => next.extend(children(node).into_iter().filter(|c| f.holds(*c))),
            }
        }
        nodes = next;
    }
    nodes
}

/// The elements of an array, or the member values of an object (each name once, in the place
/// of its first occurrence with the value of its last, as in a `serde_json::Map`).
fn children(node: Src<'_>) -> Vec<Src<'_>> {
    if let Some(items) = node.items() {
        return items;
    }
    match node {
        Src::View(View::Object(members)) if members.len() <= 16 => members
            .iter()
            .enumerate()
            .filter(|(i, (k, _))| !members[..*i].iter().any(|(earlier, _)| earlier == k))
            .filter_map(|(_, (k, _))| node.get(k))
            .collect(),
        Src::View(View::Object(members)) => {
            let mut last = std::collections::HashMap::with_capacity(members.len());
            for (i, (k, _)) in members.iter().enumerate() {
                last.insert(k.as_ref(), i);
            }
            let mut seen = std::collections::HashSet::with_capacity(members.len());
            members
                .iter()
                .filter(|(k, _)| seen.insert(k.as_ref()))
                .map(|(k, _)| Src::of(&members[last[k.as_ref()]].1))
                .collect()
        }
        Src::View(View::Json(Value::Object(map))) | Src::Value(Value::Object(map)) => {
            map.values().map(Src::Value).collect()
        }
        _ => Vec::new(),
    }
}

impl Filter {
    /// The comparison as `serde_json_path` makes it: a missing member is Nothing, equal only
    /// to Nothing; order only between numbers and between strings.
    fn holds(&self, current: Src<'_>) -> bool {
        let left = self
            .query
            .iter()
            .try_fold(current, |node, name| node.get(name));
        let equal = left.is_some_and(|l| equal(l, &self.literal));
        let typed = left.is_some_and(|l| same_type(l, &self.literal));
        let less = || left.is_some_and(|l| less(l, &self.literal));
        match self.op {
            Op::Eq => equal,
            Op::Ne => !equal,
            Op::Lt => typed && less(),
            Op::Gt => typed && !less() && !equal,
            Op::Le => typed && (less() || equal),
            Op::Ge => typed && !less(),
        }
    }
}

fn number(node: Src<'_>) -> Option<&Number> {
    match node {
        Src::View(View::Number(n)) | Src::Value(Value::Number(n)) => Some(n),
        Src::View(View::Json(Value::Number(n))) => Some(n),
        _ => None,
    }
}

fn text(node: Src<'_>) -> Option<&str> {
    match node {
        Src::View(View::String(s)) => Some(s),
        Src::Value(Value::String(s)) | Src::View(View::Json(Value::String(s))) => Some(s),
        _ => None,
    }
}

fn equal(node: Src<'_>, literal: &Value) -> bool {
    match literal {
        Value::Number(r) => number(node).is_some_and(|l| number_equal(l, r)),
        Value::String(r) => text(node) == Some(r.as_str()),
        Value::Bool(r) => match node {
            Src::View(View::Bool(l)) | Src::Value(Value::Bool(l)) => l == r,
            Src::View(View::Json(Value::Bool(l))) => l == r,
            _ => false,
        },
        Value::Null => matches!(
            node,
            Src::View(View::Null) | Src::Value(Value::Null) | Src::View(View::Json(Value::Null))
        ),
        Value::Array(_) | Value::Object(_) => false,
    }
}

fn same_type(node: Src<'_>, literal: &Value) -> bool {
    match literal {
        Value::Number(_) => number(node).is_some(),
        Value::String(_) => text(node).is_some(),
        Value::Bool(_) => matches!(
            node,
            Src::View(View::Bool(_))
                | Src::Value(Value::Bool(_))
                | Src::View(View::Json(Value::Bool(_)))
        ),
        Value::Null => equal(node, literal),
        Value::Array(_) | Value::Object(_) => false,
    }
}

fn less(node: Src<'_>, literal: &Value) -> bool {
    match literal {
        Value::Number(r) => number(node).is_some_and(|l| number_less(l, r)),
        Value::String(r) => text(node).is_some_and(|l| l < r.as_str()),
        _ => false,
    }
}

fn number_equal(l: &Number, r: &Number) -> bool {
    if let (Some(l), Some(r)) = (l.as_f64(), r.as_f64()) {
        l == r
    } else if let (Some(l), Some(r)) = (l.as_i64(), r.as_i64()) {
        l == r
    } else if let (Some(l), Some(r)) = (l.as_u64(), r.as_u64()) {
        l == r
    } else {
        false
    }
}

fn number_less(l: &Number, r: &Number) -> bool {
    if let (Some(l), Some(r)) = (l.as_f64(), r.as_f64()) {
        l < r
    } else if let (Some(l), Some(r)) = (l.as_i64(), r.as_i64()) {
        l < r
    } else if let (Some(l), Some(r)) = (l.as_u64(), r.as_u64()) {
        l < r
    } else {
        false
    }
}

/// The steps of a path in the subset [`evaluate`] handles: `$`, then `.name`, `['name']`,
/// `.*`, `[*]`, `[n]` and `[?@.a.b <op> literal]` with a string, integer, `true`, `false` or
/// `null` literal (names and strings without escapes, spaces only around the operator and
/// inside the brackets). `None` for anything else, which runs in `serde_json_path`; the path has
/// been checked by its parser already.
fn steps(text: &str) -> Option<Vec<Step>> {
    let mut rest = text.strip_prefix('$')?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix(".*") {
            out.push(Step::Wildcard);
            rest = r;
        } else if let Some(r) = rest.strip_prefix('.') {
            let (name, r) = shorthand(r)?;
            out.push(Step::Name(name.to_string()));
            rest = r;
        } else if let Some(r) = rest.strip_prefix('[') {
            let r = r.trim_start_matches(' ');
            let end = r.find(']')?;
            let (inside, after) = (r[..end].trim_end_matches(' '), &r[end + 1..]);
            out.push(selector(inside)?);
            rest = after;
        } else {
            return None;
        }
    }
    Some(out)
}

/// A member-name shorthand (RFC 9535 `name-first *name-char`) and what follows it.
fn shorthand(text: &str) -> Option<(&str, &str)> {
    let end = text
        .char_indices()
        .find(|&(i, c)| {
            !(c.is_ascii_alphabetic() || c == '_' || !c.is_ascii() || (i > 0 && c.is_ascii_digit()))
        })
        .map_or(text.len(), |(i, _)| i);
    (end > 0).then(|| (&text[..end], &text[end..]))
}

/// A quoted name or string without escapes.
fn quoted(text: &str) -> Option<&str> {
    let q = text.chars().next().filter(|q| *q == '\'' || *q == '"')?;
    let inner = text.strip_prefix(q)?.strip_suffix(q)?;
    (!inner.contains(['\\', '\'', '"']) && !inner.chars().any(|c| c < ' ')).then_some(inner)
}

fn selector(inside: &str) -> Option<Step> {
    if inside == "*" {
        return Some(Step::Wildcard);
    }
    if let Some(name) = quoted(inside) {
        return Some(Step::Name(name.to_string()));
    }
    if let Some(filter) = inside.strip_prefix('?') {
        return filter_of(filter.trim_start_matches(' ')).map(Step::Filter);
    }
    integer(inside).map(Step::Index)
}

/// An RFC 9535 `int`: `0`, or an optional `-` and digits without a leading zero.
fn integer(text: &str) -> Option<i64> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let plain = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && text != "-0";
    if !plain {
        return None;
    }
    text.parse().ok()
}

fn filter_of(text: &str) -> Option<Filter> {
    let mut rest = text.strip_prefix('@')?;
    let mut query = Vec::new();
    loop {
        if let Some(r) = rest.strip_prefix('.') {
            let (name, r) = shorthand(r)?;
            query.push(name.to_string());
            rest = r;
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            query.push(quoted(&r[..end])?.to_string());
            rest = &r[end + 1..];
        } else {
            break;
        }
    }
    if query.is_empty() {
        return None;
    }
    let rest = rest.trim_start_matches(' ');
    let (op, rest) = [
        ("==", Op::Eq),
        ("!=", Op::Ne),
        ("<=", Op::Le),
        (">=", Op::Ge),
        ("<", Op::Lt),
        (">", Op::Gt),
    ]
    .into_iter()
    .find_map(|(token, op)| rest.strip_prefix(token).map(|r| (op, r)))?;
    let literal = rest.trim_start_matches(' ');
    let literal = match literal {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        "null" => Value::Null,
        other => match quoted(other) {
            Some(s) => Value::String(s.to_string()),
            None => Value::Number(integer(other)?.into()),
        },
    };
    Some(Filter { query, op, literal })
}

/// The first member name of a path that starts with one (`$.a[*]`, `$['a'][0]`), and the rest
/// of the path after it.
fn first_member(text: &str) -> Option<(String, &str)> {
    let rest = text.strip_prefix('$')?;
    if let Some(r) = rest.strip_prefix("['") {
        let end = r.find("']")?;
        let name = &r[..end];
        return (!name.contains(['\\', '\''])).then(|| (name.to_string(), &r[end + 2..]));
    }
    let r = rest.strip_prefix('.')?;
    let end = r.find(['.', '[']).unwrap_or(r.len());
    let name = &r[..end];
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-' || !c.is_ascii());
    plain.then(|| (name.to_string(), &r[end..]))
}

/// The member names of a plain chain (`$.a.b`, `$['a']['b']`), or `None` for anything else.
fn members(text: &str) -> Option<Vec<String>> {
    let mut rest = text.strip_prefix('$')?;
    let mut names = Vec::new();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("['") {
            let end = r.find("']")?;
            let name = &r[..end];
            if name.contains(['\\', '\'']) {
                return None;
            }
            names.push(name.to_string());
            rest = &r[end + 2..];
        } else if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let name = &r[..end];
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '-' || !c.is_ascii())
            {
                return None;
            }
            names.push(name.to_string());
            rest = &r[end..];
        } else {
            return None;
        }
    }
    Some(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn plain_chains_take_the_fast_path_and_agree_with_jsonpath() {
        let doc = json!({"a": {"b": 1, "中文": "x", "c-d": [1, 2]}, "rows": [{"n": 1}, {"n": 2}]});
        for (text, fast) in [
            ("$.a.b", true),
            ("$['a']['中文']", true),
            ("$.a.中文", true),
            ("$.missing.b", true),
            ("$.rows[*]", false),
            ("$.rows[0].n", false),
            ("$..n", false),
            ("$.rows[?@.n == 2]", false),
            ("$", true),
        ] {
            let p = SourcePath::parse(text).unwrap();
            assert_eq!(p.is_plain(), fast, "{text}");
            let general = JsonPath::parse(text).unwrap().query(&doc).all();
            assert_eq!(p.all(&doc), general, "{text}");
        }
        assert!(SourcePath::parse("$.[broken").is_err());
        for (text, root) in [
            ("$.a.b", Some("a")),
            ("$['中文'][0]", Some("中文")),
            ("$.rows[?@.n == 2]", Some("rows")),
            ("$.rows[*].n", Some("rows")),
            ("$", None),
            ("$..n", None),
            ("$.*", None),
            ("$[0]", None),
        ] {
            assert_eq!(
                SourcePath::parse(text).unwrap().root_member(),
                root,
                "{text}"
            );
        }
    }

    /// Paths of the subset evaluated on the view, and a few that are not.
    const PATHS: &[&str] = &[
        "$.a[*]",
        "$.a.*",
        "$.*",
        "$[*]",
        "$.a[0]",
        "$.a[-1]",
        "$.a[2]",
        "$.a[-9]",
        "$.a[*].b",
        "$.a[*][*]",
        "$['a'][*]['b']",
        "$[ 'a' ][ * ]",
        "$.a[?@.b == '0']",
        "$.a[?@.b != '0']",
        "$.a[?@.b == 0]",
        "$.a[?@.b==1]",
        "$.a[?@.b < 1]",
        "$.a[?@.b <= 1]",
        "$.a[?@.b > 1]",
        "$.a[?@.b >= 1]",
        "$.a[?@.b < 'b']",
        "$.a[?@.b >= 'a']",
        "$.a[?@.b == true]",
        "$.a[?@.b != false]",
        "$.a[?@.b == null]",
        "$.a[?@.b.c == 'x']",
        "$.a[?@['b'] == \"0\"]",
        "$.a[? @.b == -1 ]",
        "$[?@.b == '0'][*]",
        "$.a[?@.b == 1.0]",
        "$.a[?@.b]",
        "$..b",
        "$.a[0:2]",
    ];

    fn document() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            Just("false".to_string()),
            Just("0".to_string()),
            Just("1".to_string()),
            Just("1.0".to_string()),
            Just("-1".to_string()),
            Just("2.5".to_string()),
            Just("\"0\"".to_string()),
            Just("\"1\"".to_string()),
            Just("\"a\"".to_string()),
            Just("\"b\"".to_string()),
            Just("\"x\"".to_string()),
        ];
        leaf.prop_recursive(4, 40, 5, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5)
                    .prop_map(|items| format!("[{}]", items.join(","))),
                // Repeated names on purpose: the last value counts, in the first place.
                proptest::collection::vec(
                    (proptest::sample::select(vec!["a", "b", "c", "d"]), inner),
                    0..6
                )
                .prop_map(|members| {
                    let members: Vec<String> = members
                        .into_iter()
                        .map(|(k, v)| format!("\"{k}\":{v}"))
                        .collect();
                    format!("{{{}}}", members.join(","))
                }),
            ]
        })
    }

    proptest::proptest! {
        /// Every path selects the same values, in the same order, from a view of a document (with
        /// repeated member names) and from the document as a `serde_json::Value` as
        /// `serde_json_path` does.
        #[test]
        fn the_view_selects_what_serde_json_path_selects(doc in document()) {
            let value: Value = serde_json::from_str(&doc).unwrap();
            let view: View = serde_json::from_str(&doc).unwrap();
            for text in PATHS {
                let expected: Vec<Value> = JsonPath::parse(text).unwrap().query(&value).all().into_iter().cloned().collect();
                let p = SourcePath::parse(text).unwrap();
                let from_view: Vec<Value> = p
                    .all_in(Scope::Element(Src::of(&view)))
                    .into_iter()
                    .map(|s| s.to_value().into_owned())
                    .collect();
                let from_value: Vec<Value> = p.all(&value).into_iter().cloned().collect();
                // A general query runs on `serde_json::Value`s only: the adapter parses what it
                // reads as one.
                if !p.is_general() {
                    proptest::prop_assert_eq!(&from_view, &expected, "{} on {}", text, doc);
                }
                proptest::prop_assert_eq!(&from_value, &expected, "{} on {}", text, doc);
            }
        }
    }

    #[test]
    fn the_subset_is_what_the_view_evaluates() {
        for (text, native) in [
            ("$.a[*]", true),
            ("$.ATTRS[?@.ISTAKE == '0']", true),
            ("$.a[?@.b == 1.0]", false),
            ("$.a[?@.b]", false),
            ("$..b", false),
            ("$.a[0:2]", false),
            ("$.a[?@.b == 'x' && @.c == 'y']", false),
            ("$.a[?@['b]'] == 'x']", false),
        ] {
            let p = SourcePath::parse(text).unwrap();
            assert_eq!(matches!(p.form, Form::Steps(_)), native, "{text}");
        }
        // A large object is read as a `serde_json::Map` would keep it.
        let members: Vec<String> = (0..40).map(|i| format!("\"k{}\":{i}", i % 25)).collect();
        let doc = format!("{{{}}}", members.join(","));
        let value: Value = serde_json::from_str(&doc).unwrap();
        let view: View = serde_json::from_str(&doc).unwrap();
        let p = SourcePath::parse("$.*").unwrap();
        let from_view: Vec<Value> = p
            .all_in(Scope::Element(Src::of(&view)))
            .into_iter()
            .map(|s| s.to_value().into_owned())
            .collect();
        assert_eq!(
            from_view,
            JsonPath::parse("$.*")
                .unwrap()
                .query(&value)
                .all()
                .into_iter()
                .cloned()
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_path_selects_the_same_from_record_slots_as_from_the_whole_record() {
        let doc = json!({
            "a": {"b": 1, "中文": "x"},
            "rows": [{"n": 1, "m": "p"}, {"n": 2}, 3],
            "z": [1, [2, 3]],
        });
        let texts = [
            "$.a.b",
            "$['a']['中文']",
            "$.a",
            "$.missing.b",
            "$.rows[*]",
            "$.rows[0].n",
            "$.rows[?@.n == 2]",
            "$.rows..n",
            "$['rows'][*]['m']",
            "$.z[*]",
            "$.z[1][0]",
        ];
        let mut paths: Vec<SourcePath> = texts
            .iter()
            .map(|t| SourcePath::parse(t).unwrap())
            .collect();
        let mut names: Vec<String> = paths
            .iter()
            .filter_map(|p| p.root_member().map(str::to_string))
            .collect();
        names.sort();
        names.dedup();
        for p in &mut paths {
            p.resolve(&names);
        }
        let slots: Vec<Option<View>> = names
            .iter()
            .map(|n| {
                let general = paths
                    .iter()
                    .any(|p| p.is_general() && p.root_member() == Some(n));
                doc.get(n).map(|v| {
                    if general {
                        View::Json(v.clone())
                    } else {
                        View::of(v)
                    }
                })
            })
            .collect();
        for (text, p) in texts.iter().zip(&paths) {
            let expected: Vec<Value> = p.all(&doc).into_iter().cloned().collect();
            let from_slots: Vec<Value> = p
                .all_in(Scope::Record(&slots))
                .into_iter()
                .map(|s| s.to_value().into_owned())
                .collect();
            let from_value: Vec<Value> = p
                .all_in(Scope::Element(Src::Value(&doc)))
                .into_iter()
                .map(|s| s.to_value().into_owned())
                .collect();
            assert_eq!(from_slots, expected, "{text}");
            assert_eq!(from_value, expected, "{text}");
            assert_eq!(
                p.first_in(Scope::Record(&slots))
                    .map(|s| s.to_value().into_owned()),
                expected.first().cloned(),
                "{text}"
            );
        }
    }
}
