//! Source paths: JSONPath (RFC 9535) through `serde_json_path`, with a fast path for the plain
//! member chains — `$.APPLYNAME`, `$.data.rows`, `$['办件编号']` — that nearly every adapter
//! field uses: those are walked as map lookups instead of a general query, which is most of the
//! mapping cost on the hot path.

use serde_json::Value;
use serde_json_path::JsonPath;

/// A compiled source path.
pub enum SourcePath {
    /// `$` followed by member names only.
    Members(Vec<String>),
    /// Anything else: wildcards, filters, indexes, descendants; with the record member it
    /// starts from (`ATTRS` of `$.ATTRS[?@.ISTAKE == '0']`), if it starts from one.
    General(JsonPath, Option<String>),
}

impl SourcePath {
    /// Parses a JSONPath; every path is checked by the general parser, so both forms accept
    /// exactly the RFC 9535 syntax.
    pub fn parse(text: &str) -> Result<SourcePath, String> {
        let general = JsonPath::parse(text).map_err(|e| e.to_string())?;
        Ok(match members(text) {
            Some(names) => SourcePath::Members(names),
            None => SourcePath::General(general, first_member(text)),
        })
    }

    /// The member of the record this path reads under, or `None` when it may read anything
    /// (`$`, `$.*`, `$..x`): what a record parser must keep for the path to select the same.
    pub fn root_member(&self) -> Option<&str> {
        match self {
            SourcePath::Members(names) => names.first().map(String::as_str),
            SourcePath::General(_, member) => member.as_deref(),
        }
    }

    /// Every value the path selects.
    pub fn all<'a>(&self, value: &'a Value) -> Vec<&'a Value> {
        match self {
            SourcePath::Members(_) => self.first(value).into_iter().collect(),
            SourcePath::General(p, _) => p.query(value).all(),
        }
    }

    /// The first value the path selects.
    pub fn first<'a>(&self, value: &'a Value) -> Option<&'a Value> {
        match self {
            SourcePath::Members(names) => names
                .iter()
                .try_fold(value, |v, name| v.as_object()?.get(name)),
            SourcePath::General(p, _) => p.query(value).all().into_iter().next(),
        }
    }
}

/// The first member name of a path that starts with one (`$.a[*]`, `$['a'][0]`).
fn first_member(text: &str) -> Option<String> {
    let rest = text.strip_prefix('$')?;
    if let Some(r) = rest.strip_prefix("['") {
        let name = &r[..r.find("']")?];
        return (!name.contains(['\\', '\''])).then(|| name.to_string());
    }
    let r = rest.strip_prefix('.')?;
    let name = &r[..r.find(['.', '[']).unwrap_or(r.len())];
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-' || !c.is_ascii());
    plain.then(|| name.to_string())
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
            assert_eq!(matches!(p, SourcePath::Members(_)), fast, "{text}");
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
}
