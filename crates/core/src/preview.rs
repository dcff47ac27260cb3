//! Previews of inputs an operator looks at (the dead-letter queue): one masked line of the
//! original bytes, personal data masked by the text rules of [`crate::mask`] and by what the
//! adapter's mapping says is personal.

use serde_json::Value;

use crate::adapter::path::Scope;
use crate::adapter::view::Src;
use crate::adapter::Adapter;
use crate::mask::mask_with;
use crate::pipeline::{Rejection, Unit};

/// Characters of the original input a preview shows.
const PREVIEW_CHARS: usize = 240;

/// A masked, shortened text preview of original bytes; `personal` are values the input is
/// known to hold that must be masked too (see [`record_preview`]).
pub fn preview(original: &[u8], charset: &str, personal: &[String]) -> String {
    let encoding =
        encoding_rs::Encoding::for_label(charset.as_bytes()).unwrap_or(encoding_rs::UTF_8);
    let (text, _, _) = encoding.decode(original);
    shorten(&mask_with(&flatten(&text), personal))
}

/// Control characters (line breaks, tabs) as spaces: a preview is one line.
fn flatten(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The first [`PREVIEW_CHARS`] characters; masked before it is cut, so that no number is cut in
/// half and left readable.
fn shorten(masked: &str) -> String {
    let mut out: String = masked.chars().take(PREVIEW_CHARS).collect();
    if masked.chars().count() > PREVIEW_CHARS {
        out.push('…');
    }
    out
}

/// The preview of a rejected record, masked with what its adapter's mapping says is personal
/// ([`personal_values`]). A CSV or spreadsheet row (kept as its header and row) is shown as
/// `column=value` pairs of its non-empty cells, so that the preview shows the row's values
/// rather than only its long header, and each value stands next to its column name.
pub fn record_preview(adapter: &Adapter, r: &Rejection) -> String {
    let parsed = parse_rejected(adapter, r);
    let personal = personal_values(adapter, parsed.as_ref());
    match &parsed {
        Some(Value::Object(row)) if r.unit == Unit::Record && r.content_type == "text/csv" => {
            let pairs: Vec<String> = row
                .iter()
                .filter_map(|(k, v)| {
                    let v = v.as_str().map(str::trim).unwrap_or_default();
                    (!v.is_empty()).then(|| format!("{k}={v}"))
                })
                .collect();
            shorten(&mask_with(&flatten(&pairs.join(" | ")), &personal))
        }
        _ => preview(&r.original, &r.charset, &personal),
    }
}

/// A rejected record as its adapter reads it: one JSON record (an XML element is kept as
/// JSON), or the row of a kept CSV header and row. `None` for a whole body, or bytes that
/// cannot be read.
fn parse_rejected(adapter: &Adapter, r: &Rejection) -> Option<Value> {
    if r.unit != Unit::Record {
        return None;
    }
    let text = std::str::from_utf8(&r.original).ok()?;
    if r.content_type == "text/csv" {
        let rows = crate::adapter::format::csv_records(text, &adapter.csv).ok()?;
        rows.into_iter().next()?.1.ok()
    } else {
        adapter.parse_record(text).ok()
    }
}

/// The personal data a rejected record holds, by the adapter's mapping of it: the name of a
/// counterpart who is a 自然人, identity numbers whatever their check digit, contact phones
/// ([`crate::mask::personal_values`]). Empty for a record the adapter cannot map — the text
/// masking of [`crate::mask::mask`] still applies to it.
fn personal_values(adapter: &Adapter, record: Option<&Value>) -> Vec<String> {
    let Some(record) = record else {
        return Vec::new();
    };
    match adapter.map(Scope::Element(Src::Value(record))) {
        Ok(mapped) => {
            let data = mapped
                .data
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_value()))
                .collect();
            crate::mask::personal_values(&Value::Object(data))
        }
        Err(_) => Vec::new(),
    }
}
