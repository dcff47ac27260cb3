//! Source paths: JSONPath (RFC 9535) through `serde_json_path`, with a fast path for the plain
//! member chains — `$.APPLYNAME`, `$.data.rows`, `$['办件编号']` — that nearly every adapter
//! field uses: those are walked member by member instead of a general query, and their first
//! member is resolved to a record slot when the adapter is compiled (see [`super::view`]).

use serde_json::Value;
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
        !self.is_plain()
    }

    /// Resolves the root member to its slot among `names` (sorted).
    pub fn resolve(&mut self, names: &[String]) {
        self.slot = self.root.as_ref().and_then(|r| names.binary_search(r).ok());
    }

    /// Every value the path selects.
    pub fn all<'a>(&self, value: &'a Value) -> Vec<&'a Value> {
        match &self.form {
            Form::Members(_) => self.first(value).into_iter().collect(),
            Form::General { whole, .. } => whole.query(value).all(),
        }
    }

    /// The first value the path selects.
    pub fn first<'a>(&self, value: &'a Value) -> Option<&'a Value> {
        match &self.form {
            Form::Members(names) => names
                .iter()
                .try_fold(value, |v, name| v.as_object()?.get(name)),
            Form::General { whole, .. } => whole.query(value).all().into_iter().next(),
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
            Form::General { .. } => self.query(scope).into_iter().next(),
        }
    }

    /// Every value the path selects in `scope`.
    pub fn all_in<'a>(&self, scope: Scope<'a>) -> Vec<Src<'a>> {
        match &self.form {
            Form::Members(_) => self.first_in(scope).into_iter().collect(),
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
