//! Payload formats: JSON, XML (SOAP envelopes included), CSV with a header and Excel `.xlsx`
//! exports, each turned into JSON values so one adapter language (JSONPath + conversions) serves
//! them all. Pure functions over bytes that have already been decoded to text (except XLSX, a
//! binary format).
//!
//! Each record keeps its own original bytes for the DLQ: the element's JSON text, the CSV header
//! and row (so a rejected row can be replayed on its own), or for XLSX the row written as CSV.
//!
//! XML security: a document with a DOCTYPE is refused, so there are no external entities and no
//! entity-expansion bombs; only the five predefined entities and character references are
//! resolved; nesting deeper than [`MAX_DEPTH`] is refused.

use serde::Deserialize;
use serde_json::{Map, Value};

/// Payload formats an adapter reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Json,
    Xml,
    Csv,
    Xlsx,
}

impl Format {
    /// The media type the DLQ records for bytes of this format.
    pub fn media_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Xml => "application/xml",
            Format::Csv => "text/csv",
            Format::Xlsx => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        }
    }

    /// The format of a media type (`Content-Type` without parameters), if it is one.
    pub fn from_media_type(media: &str) -> Option<Format> {
        let m = media.trim().to_ascii_lowercase();
        match m.as_str() {
            "application/json" | "text/json" => Some(Format::Json),
            "application/xml" | "text/xml" | "application/soap+xml" => Some(Format::Xml),
            "text/csv" | "application/csv" | "text/comma-separated-values" => Some(Format::Csv),
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" => {
                Some(Format::Xlsx)
            }
            _ if m.starts_with("application/") && m.ends_with("+json") => Some(Format::Json),
            _ if m.starts_with("application/") && m.ends_with("+xml") => Some(Format::Xml),
            _ => None,
        }
    }

    /// The format of a file name's extension.
    pub fn from_extension(name: &str) -> Option<Format> {
        let ext = name.rsplit('.').next()?.to_ascii_lowercase();
        match ext.as_str() {
            "json" => Some(Format::Json),
            "xml" => Some(Format::Xml),
            "csv" | "txt" => Some(Format::Csv),
            "xlsx" => Some(Format::Xlsx),
            _ => None,
        }
    }

    /// The charset a file name declares as `<name>.<charset>.<ext>` (e.g. `rows.gb18030.csv`),
    /// if the label is one `encoding_rs` knows.
    pub fn charset_from_name(name: &str) -> Option<String> {
        let parts: Vec<&str> = name.split('.').collect();
        (parts.len() >= 3)
            .then(|| parts[parts.len() - 2].to_string())
            .filter(|c| encoding_rs::Encoding::for_label(c.as_bytes()).is_some())
    }

    /// Whether this format is text (decoded with a charset before parsing).
    pub fn is_text(self) -> bool {
        self != Format::Xlsx
    }
}

/// `csv:` options of an adapter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvOptions {
    /// Field delimiter, one character. Default `,`.
    #[serde(default = "comma")]
    pub delimiter: char,
}

fn comma() -> char {
    ','
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions { delimiter: ',' }
    }
}

/// `xml:` options of an adapter.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct XmlOptions {
    /// Element names that are always lists, even when a document has only one of them (e.g.
    /// `record`), so `records: $..record[*]` works for one record as for many.
    #[serde(default)]
    pub lists: Vec<String>,
}

/// `xlsx:` options of an adapter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XlsxOptions {
    /// The worksheet; default the first.
    #[serde(default)]
    pub sheet: Option<String>,
    /// The 1-based row holding the column names; rows after it are records. Default 1.
    #[serde(default = "one")]
    pub header_row: usize,
}

fn one() -> usize {
    1
}

impl Default for XlsxOptions {
    fn default() -> Self {
        XlsxOptions {
            sheet: None,
            header_row: 1,
        }
    }
}

/// A record split from a payload: its own original bytes, and its value or why it could not be
/// read.
pub type Split = (Vec<u8>, Result<Value, String>);

/// The deepest XML nesting accepted.
pub const MAX_DEPTH: usize = 64;

/// Parses XML into JSON: an element is an object of its attributes (`@name`) and children
/// (repeated names become lists), its text alone becomes a string, mixed text is `#text`.
/// Namespace prefixes are dropped (`soap:Body` → `Body`).
pub fn xml_to_json(text: &str, options: &XmlOptions) -> Result<Value, String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(text);
    // Text is trimmed per element at its end tag, not per event: `宁夏 &amp; 公司` keeps its spaces.
    reader.config_mut().trim_text(false);
    // (name, children, text)
    let mut stack: Vec<(String, Map<String, Value>, String)> = Vec::new();
    let mut root: Option<(String, Value)> = None;
    let name_of = |raw: &[u8]| String::from_utf8_lossy(raw).into_owned();
    let at = |reader: &quick_xml::Reader<&[u8]>| reader.buffer_position();
    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("XML error at byte {}: {e}", at(&reader)))?;
        match event {
            Event::DocType(_) => {
                return Err("XML with a DOCTYPE is not accepted (no DTDs, no entities)".into())
            }
            Event::Start(e) | Event::Empty(e) if stack.len() >= MAX_DEPTH => {
                let _ = e;
                return Err(format!("XML nested deeper than {MAX_DEPTH} elements"));
            }
            Event::Start(e) => {
                let attrs = attributes(&e, at(&reader))?;
                stack.push((name_of(e.local_name().as_ref()), attrs, String::new()));
            }
            Event::Empty(e) => {
                let attrs = attributes(&e, at(&reader))?;
                let value = if attrs.is_empty() {
                    Value::Null
                } else {
                    Value::Object(attrs)
                };
                let name = name_of(e.local_name().as_ref());
                match stack.last_mut() {
                    Some(parent) => attach(&mut parent.1, name, value, options),
                    None => root = Some((name, value)),
                }
            }
            Event::Text(t) => {
                let s = t.decode().map_err(|e| format!("XML text error: {e}"))?;
                if let Some(top) = stack.last_mut() {
                    top.2.push_str(&s);
                }
            }
            Event::CData(c) => {
                let s = c.decode().map_err(|e| format!("XML CDATA error: {e}"))?;
                if let Some(top) = stack.last_mut() {
                    top.2.push_str(&s);
                }
            }
            Event::GeneralRef(r) => {
                let resolved = match r
                    .resolve_char_ref()
                    .map_err(|e| format!("XML character reference error: {e}"))?
                {
                    Some(c) => c.to_string(),
                    None => match r.decode().map_err(|e| format!("XML error: {e}"))?.as_ref() {
                        "amp" => "&".into(),
                        "lt" => "<".into(),
                        "gt" => ">".into(),
                        "quot" => "\"".into(),
                        "apos" => "'".into(),
                        other => {
                            return Err(format!(
                            "XML entity &{other}; is not accepted (only the predefined entities)"
                        ))
                        }
                    },
                };
                if let Some(top) = stack.last_mut() {
                    top.2.push_str(&resolved);
                }
            }
            Event::End(_) => {
                let (name, children, text) =
                    stack.pop().ok_or("XML end tag without a start tag")?;
                let text = text.trim().to_string();
                let value = match (children.is_empty(), text.is_empty()) {
                    (true, true) => Value::Null,
                    (true, false) => Value::String(text),
                    (false, true) => Value::Object(children),
                    (false, false) => {
                        let mut children = children;
                        children.insert("#text".into(), Value::String(text));
                        Value::Object(children)
                    }
                };
                match stack.last_mut() {
                    Some(parent) => attach(&mut parent.1, name, value, options),
                    None => root = Some((name, value)),
                }
            }
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) => {}
        }
    }
    if !stack.is_empty() {
        return Err(format!(
            "XML ends inside <{}>",
            stack.last().map(|s| s.0.as_str()).unwrap_or("")
        ));
    }
    let (name, value) = root.ok_or("XML document has no root element")?;
    let mut doc = Map::new();
    doc.insert(name, value);
    Ok(Value::Object(doc))
}

/// An element's attributes as `@name` keys.
fn attributes(
    e: &quick_xml::events::BytesStart<'_>,
    at: u64,
) -> Result<Map<String, Value>, String> {
    let mut attrs = Map::new();
    for a in e.attributes() {
        let a = a.map_err(|err| format!("XML attribute error at byte {at}: {err}"))?;
        let v = a
            .unescape_value()
            .map_err(|err| format!("XML attribute error: {err}"))?;
        let name = String::from_utf8_lossy(a.key.local_name().as_ref()).into_owned();
        attrs.insert(format!("@{name}"), Value::String(v.into_owned()));
    }
    Ok(attrs)
}

fn attach(parent: &mut Map<String, Value>, name: String, value: Value, options: &XmlOptions) {
    let always_list = options.lists.contains(&name);
    match parent.get_mut(&name) {
        Some(Value::Array(items)) => items.push(value),
        Some(existing) => {
            let first = existing.take();
            *existing = Value::Array(vec![first, value]);
        }
        None if always_list => {
            parent.insert(name, Value::Array(vec![value]));
        }
        None => {
            parent.insert(name, value);
        }
    }
}

/// The XML declaration's encoding (`<?xml version="1.0" encoding="GBK"?>`), if any.
pub fn xml_declared_encoding(bytes: &[u8]) -> Option<String> {
    let head = &bytes[..bytes.len().min(200)];
    let head = String::from_utf8_lossy(head);
    let decl = head.strip_prefix('\u{feff}').unwrap_or(&head).trim_start();
    if !decl.starts_with("<?xml") {
        return None;
    }
    let end = decl.find("?>")?;
    let decl = &decl[..end];
    let i = decl.find("encoding")?;
    let rest = decl[i + "encoding".len()..]
        .trim_start()
        .strip_prefix('=')?
        .trim_start();
    let quote = rest.chars().next().filter(|q| *q == '"' || *q == '\'')?;
    let rest = &rest[quote.len_utf8()..];
    Some(rest[..rest.find(quote)?].to_string())
}

fn header_name(s: &str) -> String {
    crate::adapter::convert::normalize_text(s.trim_start_matches('\u{feff}'))
}

/// Splits CSV text with a header row into records: one object per row, keyed by the header.
/// A row that cannot be read is rejected alone; the others go on.
pub fn csv_records(text: &str, options: &CsvOptions) -> Result<Vec<Split>, String> {
    let delimiter = u8::try_from(u32::from(options.delimiter))
        .map_err(|_| "the CSV delimiter must be an ASCII character".to_string())?;
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .from_reader(text.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| format!("CSV header cannot be read: {e}"))?
        .iter()
        .map(header_name)
        .collect();
    if headers.iter().all(String::is_empty) {
        return Err("CSV has no header row".into());
    }
    let mut seen = std::collections::HashSet::new();
    for h in &headers {
        if !h.is_empty() && !seen.insert(h) {
            return Err(format!("CSV header names column '{h}' twice"));
        }
    }
    let mut positions = Vec::new();
    let mut rows = Vec::new();
    let mut record = csv::StringRecord::new();
    loop {
        let start = reader.position().byte() as usize;
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                positions.push(start);
                rows.push(Ok(record.clone()));
            }
            Err(e) => {
                positions.push(start);
                rows.push(Err(format!("CSV row cannot be read: {e}")));
                // Skip the rest of the broken line.
                if reader.is_done() {
                    break;
                }
            }
        }
    }
    let header_end = positions.first().copied().unwrap_or(text.len());
    let header_text = &text[..header_end.min(text.len())];
    let mut out = Vec::with_capacity(rows.len());
    for (i, row) in rows.into_iter().enumerate() {
        let start = positions[i].min(text.len());
        let end = positions
            .get(i + 1)
            .copied()
            .unwrap_or(text.len())
            .min(text.len());
        let own = &text[start..end];
        if own.trim().is_empty() {
            continue;
        }
        let mut raw = header_text.as_bytes().to_vec();
        if !header_text.ends_with('\n') {
            raw.push(b'\n');
        }
        raw.extend_from_slice(own.as_bytes());
        let value = row.and_then(|r| {
            if r.len() != headers.len() {
                return Err(format!(
                    "CSV row has {} fields, the header has {}",
                    r.len(),
                    headers.len()
                ));
            }
            let mut obj = Map::new();
            for (h, v) in headers.iter().zip(r.iter()) {
                if !h.is_empty() {
                    obj.insert(h.clone(), Value::String(v.to_string()));
                }
            }
            Ok(Value::Object(obj))
        });
        out.push((raw, value));
    }
    Ok(out)
}

fn cell_text(cell: &calamine::Data) -> Result<Option<String>, String> {
    use calamine::Data;
    Ok(match cell {
        Data::Empty => None,
        Data::String(s) => Some(s.clone()),
        Data::Int(i) => Some(i.to_string()),
        Data::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => Some(format!("{}", *f as i64)),
        Data::Float(f) => Some(f.to_string()),
        Data::Bool(b) => Some(b.to_string()),
        Data::DateTime(d) => {
            let dt = d.as_datetime().ok_or("a date cell is out of range")?;
            Some(if dt.time() == chrono::NaiveTime::MIN {
                dt.format("%Y-%m-%d").to_string()
            } else {
                dt.format("%Y-%m-%d %H:%M:%S").to_string()
            })
        }
        Data::DateTimeIso(s) | Data::DurationIso(s) => Some(s.clone()),
        Data::Error(e) => return Err(format!("cell holds the spreadsheet error {e}")),
    })
}

/// Splits an `.xlsx` workbook's sheet into records, one object per row after the header row.
/// Each record's original bytes are its header and row written as CSV.
pub fn xlsx_records(bytes: &[u8], options: &XlsxOptions) -> Result<Vec<Split>, String> {
    // The xlsx reader can panic on a damaged workbook (an arithmetic overflow on an absurd cell
    // reference, found by fuzzing); that is a malformed file, not a crash.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        read_xlsx_records(bytes, options)
    }))
    .unwrap_or_else(|_| Err("the workbook is damaged: the .xlsx reader could not read it".into()))
}

fn read_xlsx_records(bytes: &[u8], options: &XlsxOptions) -> Result<Vec<Split>, String> {
    use calamine::Reader as _;
    let mut workbook: calamine::Xlsx<_> =
        calamine::open_workbook_from_rs(std::io::Cursor::new(bytes))
            .map_err(|e| format!("not a readable .xlsx workbook: {e}"))?;
    let sheet = match &options.sheet {
        Some(s) => s.clone(),
        None => workbook
            .sheet_names()
            .first()
            .cloned()
            .ok_or("the workbook has no worksheet")?,
    };
    let range = workbook
        .worksheet_range(&sheet)
        .map_err(|e| format!("worksheet '{sheet}' cannot be read: {e}"))?;
    let mut rows = range.rows().skip(options.header_row.saturating_sub(1));
    let headers: Vec<String> = match rows.next() {
        Some(h) => h
            .iter()
            .map(|c| {
                cell_text(c)
                    .ok()
                    .flatten()
                    .map(|s| header_name(&s))
                    .unwrap_or_default()
            })
            .collect(),
        None => {
            return Err(format!(
                "worksheet '{sheet}' has no header row {}",
                options.header_row
            ))
        }
    };
    let mut out = Vec::new();
    for row in rows {
        if row.iter().all(|c| matches!(c, calamine::Data::Empty)) {
            continue;
        }
        let mut obj = Map::new();
        let mut texts = Vec::with_capacity(headers.len());
        let mut problem = None;
        for (i, h) in headers.iter().enumerate() {
            let text = match row.get(i).map(cell_text).transpose() {
                Ok(t) => t.flatten(),
                Err(e) => {
                    problem.get_or_insert(format!("column '{h}': {e}"));
                    None
                }
            };
            texts.push(text.clone().unwrap_or_default());
            if let (false, Some(t)) = (h.is_empty(), text) {
                obj.insert(h.clone(), Value::String(t));
            }
        }
        let mut w = csv::Writer::from_writer(Vec::new());
        let _ = w.write_record(&headers);
        let _ = w.write_record(&texts);
        let raw = w.into_inner().unwrap_or_default();
        out.push((raw, problem.map_or(Ok(Value::Object(obj)), Err)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn xml_elements_attributes_lists_and_namespaces() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">
  <soap:Body><ns:queryResponse xmlns:ns="urn:x"><return>
    <record id="1"><NAME>宁夏 &amp; 公司</NAME><CODE><![CDATA[A<B]]></CODE><EMPTY/></record>
  </return></ns:queryResponse></soap:Body>
</soap:Envelope>"#;
        let v = xml_to_json(
            xml,
            &XmlOptions {
                lists: vec!["record".into()],
            },
        )
        .unwrap();
        let rec = &v["Envelope"]["Body"]["queryResponse"]["return"]["record"][0];
        assert_eq!(rec["@id"], json!("1"));
        assert_eq!(rec["NAME"], json!("宁夏 & 公司"));
        assert_eq!(rec["CODE"], json!("A<B"));
        assert_eq!(rec["EMPTY"], Value::Null);
        let two = xml_to_json("<r><a>1</a><a>2</a></r>", &XmlOptions::default()).unwrap();
        assert_eq!(two, json!({"r": {"a": ["1", "2"]}}));
        assert_eq!(
            xml_to_json("<r>&#x5B81;&#22799;</r>", &XmlOptions::default()).unwrap(),
            json!({"r": "宁夏"})
        );
    }

    #[test]
    fn hostile_xml_is_refused() {
        let bomb = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]><r>&lol2;</r>"#;
        assert!(xml_to_json(bomb, &XmlOptions::default())
            .unwrap_err()
            .contains("DOCTYPE"));
        let xxe = r#"<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>"#;
        assert!(xml_to_json(xxe, &XmlOptions::default())
            .unwrap_err()
            .contains("DOCTYPE"));
        assert!(xml_to_json("<r>&nbsp;</r>", &XmlOptions::default())
            .unwrap_err()
            .contains("entity"));
        let deep = "<a>".repeat(100) + &"</a>".repeat(100);
        assert!(xml_to_json(&deep, &XmlOptions::default())
            .unwrap_err()
            .contains("deeper"));
        assert!(xml_to_json("<a><b></a>", &XmlOptions::default()).is_err());
        assert!(xml_to_json("", &XmlOptions::default()).is_err());
    }

    #[test]
    fn the_xml_declaration_names_the_encoding() {
        assert_eq!(
            xml_declared_encoding(br#"<?xml version="1.0" encoding="GBK"?><r/>"#).as_deref(),
            Some("GBK")
        );
        assert_eq!(xml_declared_encoding(b"<r/>"), None);
        // Found by the fuzz test: a multi-byte character where the quote should be.
        assert_eq!(
            xml_declared_encoding("<?xml version=\"1.0\" encoding=\u{fffd}GB18030\"?>".as_bytes()),
            None
        );
    }

    #[test]
    fn csv_rows_become_records_with_their_own_bytes() {
        let text = "\u{feff}名称,代码\n宁夏公司,\"9164,X\"\n\n坏行\n石嘴山店,9264\n";
        let rows = csv_records(text, &CsvOptions::default()).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(
            rows[0].1.as_ref().unwrap(),
            &json!({"名称": "宁夏公司", "代码": "9164,X"})
        );
        assert_eq!(
            String::from_utf8(rows[0].0.clone()).unwrap(),
            "\u{feff}名称,代码\n宁夏公司,\"9164,X\"\n"
        );
        assert!(rows[1].1.as_ref().unwrap_err().contains("1 fields"));
        assert_eq!(rows[2].1.as_ref().unwrap()["代码"], json!("9264"));
        let replayed = csv_records(
            std::str::from_utf8(&rows[2].0).unwrap(),
            &CsvOptions::default(),
        )
        .unwrap();
        assert_eq!(
            replayed[0].1, rows[2].1,
            "a row's own bytes parse to the same record"
        );
        assert!(csv_records("a,a\n1,2\n", &CsvOptions::default())
            .unwrap_err()
            .contains("twice"));
        let tabs = csv_records("a\tb\n1\t2\n", &CsvOptions { delimiter: '\t' }).unwrap();
        assert_eq!(tabs[0].1.as_ref().unwrap(), &json!({"a": "1", "b": "2"}));
    }

    #[test]
    fn media_types_and_extensions() {
        assert_eq!(Format::from_media_type("text/xml"), Some(Format::Xml));
        assert_eq!(
            Format::from_media_type("application/soap+xml"),
            Some(Format::Xml)
        );
        assert_eq!(
            Format::from_media_type("application/cloudevents+json"),
            Some(Format::Json)
        );
        assert_eq!(Format::from_media_type("TEXT/CSV"), Some(Format::Csv));
        assert_eq!(Format::from_media_type("image/png"), None);
        assert_eq!(Format::from_extension("x.gb18030.csv"), Some(Format::Csv));
        assert_eq!(Format::from_extension("导出.xlsx"), Some(Format::Xlsx));
        assert_eq!(
            Format::charset_from_name("rows.gb18030.csv").as_deref(),
            Some("gb18030")
        );
        assert_eq!(Format::charset_from_name("01-company.json"), None);
        assert_eq!(Format::charset_from_name("a.b.json"), None);
    }
}
