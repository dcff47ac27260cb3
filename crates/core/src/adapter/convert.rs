//! Value conversions an adapter applies to legacy fields: text normalisation, the date forms
//! legacy systems write, numbers with 元/万元 units, booleans. Pure functions, exhaustively tested.

use std::borrow::Cow;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeZone};
use serde::Deserialize;
use serde_json::Value;

use crate::schema::canonical::Canonical;

/// China Standard Time. China has had no daylight saving since 1991, so a fixed offset is exact
/// for every date the gateway handles and needs no time-zone database.
pub fn shanghai() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("valid offset")
}

/// The current time in Asia/Shanghai.
pub fn now_shanghai() -> DateTime<FixedOffset> {
    chrono::Utc::now().with_timezone(&shanghai())
}

/// A conversion named by `convert:` in an adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Convert {
    /// Normalised text (the default).
    String,
    /// A calendar date, `YYYY-MM-DD`.
    Date,
    /// An instant, RFC 3339 with offset; times without offset are Asia/Shanghai.
    Datetime,
    /// A decimal number.
    Number,
    /// A whole number.
    Integer,
    /// A boolean from `true/false`, `1/0`, `是/否`, `Y/N`.
    Bool,
    /// An amount in 万元 (the 双公示 unit). Text with a `元` or `万元` suffix is converted; a bare
    /// number is read in the field's `unit:` (default 万元).
    AmountWan,
}

impl Convert {
    /// The JSON Schema `type` this conversion produces.
    pub fn json_type(self) -> &'static str {
        match self {
            Convert::String | Convert::Date | Convert::Datetime => "string",
            Convert::Number | Convert::AmountWan => "number",
            Convert::Integer => "integer",
            Convert::Bool => "boolean",
        }
    }

    /// The JSON Schema `format` this conversion produces, if any.
    pub fn json_format(self) -> Option<&'static str> {
        match self {
            Convert::Date => Some("date"),
            Convert::Datetime => Some("date-time"),
            _ => None,
        }
    }
}

/// The unit of a bare number read by [`Convert::AmountWan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum Unit {
    #[serde(rename = "元")]
    Yuan,
    #[default]
    #[serde(rename = "万元")]
    Wan,
}

/// Full-width digits and Latin letters (Ａ１) become half-width, the ideographic space becomes a
/// space, and runs of white space collapse; leading and trailing space is trimmed. Full-width
/// punctuation (：（）；) is left alone: it is correct in Chinese text.
pub fn normalize_text(s: &str) -> String {
    normalize(s, false).into_owned()
}

/// Like [`normalize_text`], borrowing the text when it needs no change (most values).
pub fn normalize_cow(s: &str) -> std::borrow::Cow<'_, str> {
    normalize(s, false)
}

/// Whether a text is empty once normalised, without building the normalised text.
pub fn is_blank(s: &str) -> bool {
    normalize(s, false).is_empty()
}

/// Like [`normalize_text`], and also full-width punctuation (－／：．，) becomes ASCII: for
/// dates and numbers, never for prose.
pub fn normalize_all(s: &str) -> String {
    normalize(s, true).into_owned()
}

fn normalize(s: &str, punctuation: bool) -> std::borrow::Cow<'_, str> {
    // Most values need no change, and stay borrowed.
    if !changes(s.as_bytes(), punctuation) {
        return std::borrow::Cow::Borrowed(s);
    }
    std::borrow::Cow::Owned(rewrite(s, punctuation))
}

/// Whether [`normalize`] may change a text: it holds ASCII white space (other than one space
/// between two other characters) or a control character, a
/// Unicode white space (U+0085, U+00A0, U+1680, U+2000–U+200A, U+2028, U+2029, U+202F, U+205F,
/// U+3000), a full-width digit or Latin letter, or with `punctuation` any full-width form
/// (U+FF01–U+FF5E). Read from the UTF-8 bytes: Chinese punctuation such as ，、。 is left alone
/// and so does not need the rewrite.
fn changes(b: &[u8], punctuation: bool) -> bool {
    let at = |i: usize| b.get(i).copied().unwrap_or(0);
    let mut i = 0;
    while i < b.len() {
        // Eight bytes at a time past those that cannot start such a character.
        if let Some(word) = b.get(i..i + 8) {
            if !may_change(u64::from_le_bytes(word.try_into().expect("eight bytes"))) {
                i += 8;
                continue;
            }
        }
        let c = b[i];
        let change = match c {
            // One space between two other characters stays as it is.
            b' ' => i == 0 || i + 1 == b.len() || b[i - 1] == b' ' || b[i + 1] <= b' ',
            0..=0x20 => true,
            0xC2 => matches!(at(i + 1), 0x85 | 0xA0),
            0xE1 => at(i + 1) == 0x9A && at(i + 2) == 0x80,
            0xE2 => matches!(
                (at(i + 1), at(i + 2)),
                (0x80, 0x80..=0x8A | 0xA8 | 0xA9 | 0xAF) | (0x81, 0x9F)
            ),
            0xE3 => at(i + 1) == 0x80 && at(i + 2) == 0x80,
            0xEF => match (at(i + 1), at(i + 2)) {
                (0xBC, t) => matches!(t, 0x90..=0x99 | 0xA1..=0xBA) || (punctuation && t >= 0x81),
                (0xBD, t) => matches!(t, 0x81..=0x9A) || (punctuation && t <= 0x9E),
                _ => false,
            },
            // Other bytes (ASCII, continuation and other lead bytes) are characters it keeps.
            _ => false,
        };
        if change {
            return true;
        }
        i += 1;
    }
    false
}

/// Whether one of eight bytes is ASCII white space or a control character, or a UTF-8 lead byte
/// of the characters [`changes`] looks for (0xC2, 0xE0–0xE3, 0xEF). Exact for the word: a
/// byte's borrow only reaches bytes above one that already matched.
fn may_change(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let space_or_control = word.wrapping_sub(ONES * 0x21) & !word & HIGH;
    space_or_control
        | zero(word ^ (ONES * 0xC2))
        | zero((word & (ONES * 0xFC)) ^ (ONES * 0xE0))
        | zero(word ^ (ONES * 0xEF))
        != 0
}

fn rewrite(s: &str, punctuation: bool) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending_space = false;
    for c in s.chars() {
        let c = match c {
            '\u{3000}' => ' ',
            '\u{FF10}'..='\u{FF19}' | '\u{FF21}'..='\u{FF3A}' | '\u{FF41}'..='\u{FF5A}' => {
                char::from_u32(c as u32 - 0xFEE0).unwrap_or(c)
            }
            '\u{FF01}'..='\u{FF5E}' if punctuation => {
                char::from_u32(c as u32 - 0xFEE0).unwrap_or(c)
            }
            _ => c,
        };
        if c.is_whitespace() {
            pending_space = !out.is_empty();
            continue;
        }
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        out.push(c);
    }
    out
}

/// The text of a canonical scalar, normalised; `None` for null, empty text, lists and objects.
pub fn canonical_text<'a>(v: &'a Canonical<'a>) -> Option<Cow<'a, str>> {
    let s = match v {
        Canonical::String(s) => normalize_cow(s),
        Canonical::Number(n) => Cow::Owned(n.to_string()),
        Canonical::Bool(b) => Cow::Owned(b.to_string()),
        _ => return None,
    };
    (!s.is_empty()).then_some(s)
}

/// The text of a scalar JSON value, normalised; `None` for null, empty text, arrays and objects.
pub fn scalar_text(v: &Value) -> Option<String> {
    let s = match v {
        Value::String(s) => normalize_text(s),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => return None,
    };
    (!s.is_empty()).then_some(s)
}

/// Applies `convert` to a source value. The error is a reason for a person, without the value.
pub fn apply(convert: Convert, unit: Unit, v: &Value) -> Result<Value, String> {
    apply_text(convert, unit, scalar_text(v).map(Cow::Owned)).map(|c| c.to_value())
}

/// Applies `convert` to the normalised text of a source value (`None` when the value is not a
/// non-empty scalar), giving the canonical value; plain text stays borrowed.
pub fn apply_text(
    convert: Convert,
    unit: Unit,
    text: Option<Cow<'_, str>>,
) -> Result<Canonical<'_>, String> {
    let text = text.ok_or_else(|| "expected a text or number value".to_string())?;
    if convert == Convert::String {
        return Ok(Canonical::String(text));
    }
    let text = normalize(&text, true);
    let owned = |s: String| Canonical::String(Cow::Owned(s));
    match convert {
        Convert::String => Ok(owned(text.into_owned())),
        Convert::Date => parse_date(&text).map(|d| owned(format_date(d))),
        Convert::Datetime => parse_datetime(&text).map(|d| owned(format_datetime(d))),
        Convert::Number => parse_number(&text).map(number),
        Convert::Integer => text
            .replace(',', "")
            .parse::<i64>()
            .map(|i| Canonical::Number(i.into()))
            .map_err(|_| "not a whole number".to_string()),
        Convert::Bool => parse_bool(&text).map(Canonical::Bool),
        Convert::AmountWan => parse_amount_wan(&text, unit).map(number),
    }
}

/// `YYYY-MM-DD`, as chrono's `%Y-%m-%d` writes it, without going through its formatter.
fn format_date(date: NaiveDate) -> String {
    use chrono::Datelike;
    let Ok(y @ 0..=9999) = u32::try_from(date.year()) else {
        return date.format("%Y-%m-%d").to_string();
    };
    let (m, d) = (date.month(), date.day());
    let digit = |n: u32| char::from(b'0' + n as u8);
    let mut out = String::with_capacity(10);
    out.extend([
        digit(y / 1000),
        digit(y / 100 % 10),
        digit(y / 10 % 10),
        digit(y % 10),
        '-',
        digit(m / 10),
        digit(m % 10),
        '-',
        digit(d / 10),
        digit(d % 10),
    ]);
    out
}

fn number(x: f64) -> Canonical<'static> {
    // Round to 6 decimals (1 分 is 0.000001 万元) so 2000元 becomes exactly 0.2.
    let rounded = (x * 1e6).round() / 1e6;
    serde_json::Number::from_f64(rounded).map_or(Canonical::Null, Canonical::Number)
}

fn parse_number(s: &str) -> Result<f64, String> {
    let cleaned = s.replace([',', '，'], "");
    let x: f64 = cleaned
        .trim()
        .parse()
        .map_err(|_| "not a number".to_string())?;
    if !x.is_finite() || x.abs() > 1e15 {
        return Err("number out of range".to_string());
    }
    Ok(x)
}

fn parse_amount_wan(s: &str, unit: Unit) -> Result<f64, String> {
    let s = s.trim();
    let (digits, unit) = if let Some(d) = s.strip_suffix("万元") {
        (d, Unit::Wan)
    } else if let Some(d) = s.strip_suffix('元') {
        (d, Unit::Yuan)
    } else {
        (s, unit)
    };
    let x = parse_number(digits)?;
    if x < 0.0 {
        return Err("amount is negative".to_string());
    }
    Ok(match unit {
        Unit::Wan => x,
        Unit::Yuan => x / 10_000.0,
    })
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "y" | "yes" | "是" | "t" => Ok(true),
        "false" | "0" | "n" | "no" | "否" | "f" => Ok(false),
        _ => Err("not a boolean (true/false, 1/0, 是/否, Y/N)".to_string()),
    }
}

/// Parses the date forms legacy systems write: `2022-04-26`, `2022/4/26`, `2022.4.26`,
/// `2022年4月26日`, `20220426`, any of them followed by a time, RFC 3339, and epoch milliseconds
/// (13 digits) or seconds (10 digits), read in Asia/Shanghai.
pub fn parse_date(s: &str) -> Result<NaiveDate, String> {
    parse_datetime_parts(s).map(|(date, _, _)| date)
}

/// Parses an instant; a time without offset is Asia/Shanghai, a date without time is midnight.
pub fn parse_datetime(s: &str) -> Result<DateTime<FixedOffset>, String> {
    let (date, time, offset) = parse_datetime_parts(s)?;
    let naive = NaiveDateTime::new(date, time.unwrap_or(NaiveTime::MIN));
    let offset = offset.unwrap_or_else(shanghai);
    offset
        .from_local_datetime(&naive)
        .single()
        .ok_or_else(|| "time does not exist".to_string())
}

type Parts = (NaiveDate, Option<NaiveTime>, Option<FixedOffset>);

fn parse_datetime_parts(s: &str) -> Result<Parts, String> {
    let s = s.trim();
    if let Some(parts) = plain_datetime(s) {
        return check_range(parts);
    }
    let unrecognised = || {
        "unrecognised date; expected e.g. 2022-04-26, 2022/4/26, 2022年4月26日, 20220426 or epoch milliseconds".to_string()
    };
    if s.is_empty() {
        return Err(unrecognised());
    }
    // 双公示 convention: an open-ended validity (长期) is written as 2099-12-31.
    if matches!(s, "长期" | "长期有效" | "永久" | "永久有效") {
        return Ok((
            NaiveDate::from_ymd_opt(2099, 12, 31).expect("valid date"),
            None,
            None,
        ));
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return check_range((dt.date_naive(), Some(dt.time()), Some(*dt.offset())));
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return match s.len() {
            8 => NaiveDate::parse_from_str(s, "%Y%m%d")
                .map_err(|_| unrecognised())
                .and_then(|d| check_range((d, None, None))),
            14 => NaiveDateTime::parse_from_str(s, "%Y%m%d%H%M%S")
                .map_err(|_| unrecognised())
                .and_then(|d| check_range((d.date(), Some(d.time()), None))),
            10 | 13 => {
                let n: i64 = s.parse().map_err(|_| unrecognised())?;
                let millis = if s.len() == 10 { n * 1000 } else { n };
                let dt = shanghai()
                    .timestamp_millis_opt(millis)
                    .single()
                    .ok_or_else(unrecognised)?;
                check_range((dt.date_naive(), Some(dt.time()), Some(shanghai())))
            }
            _ => Err(unrecognised()),
        };
    }
    // Split the date part from an optional time part.
    let (date_part, time_part) = match s.find([' ', 'T']) {
        Some(i) => (&s[..i], Some(s[i + 1..].trim())),
        None => (s, None),
    };
    let date_part = date_part.trim_end_matches('日');
    let fields: Vec<&str> = date_part
        .split(['-', '/', '.', '年', '月'])
        .filter(|p| !p.is_empty())
        .collect();
    if fields.len() != 3 || !fields.iter().all(|f| f.bytes().all(|b| b.is_ascii_digit())) {
        return Err(unrecognised());
    }
    let (y, m, d) = (
        fields[0].parse::<i32>().map_err(|_| unrecognised())?,
        fields[1].parse::<u32>().map_err(|_| unrecognised())?,
        fields[2].parse::<u32>().map_err(|_| unrecognised())?,
    );
    if fields[0].len() != 4 {
        return Err(unrecognised());
    }
    let date = NaiveDate::from_ymd_opt(y, m, d)
        .ok_or_else(|| format!("{y}-{m}-{d} is not a calendar date"))?;
    let time = match time_part {
        None | Some("") => None,
        Some(t) => Some(parse_time(t).ok_or_else(unrecognised)?),
    };
    check_range((date, time, None))
}

/// The form most systems write, `2022-04-26` or `2022-04-26 10:30:00` (or with `T`), read
/// without the general parsers; `None` for anything else, including impossible dates and times,
/// which the general parsers word.
fn plain_datetime(s: &str) -> Option<Parts> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b.get(r)?.iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    if !(b.len() == 10 || b.len() == 19) || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)?;
    if b.len() == 10 {
        return Some((date, None, None));
    }
    if !matches!(b[10], b' ' | b'T') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (h, m, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if h > 23 || m > 59 || sec > 59 {
        return None;
    }
    Some((date, Some(NaiveTime::from_hms_opt(h, m, sec)?), None))
}

/// RFC 3339 to the second, as chrono's `to_rfc3339_opts(SecondsFormat::Secs, false)` writes it.
fn format_datetime(d: DateTime<FixedOffset>) -> String {
    use chrono::Timelike;
    let offset = d.offset().local_minus_utc();
    if offset % 60 != 0 || d.nanosecond() >= 1_000_000_000 {
        return d.to_rfc3339_opts(chrono::SecondsFormat::Secs, false);
    }
    let mut out = String::with_capacity(25);
    out.push_str(&format_date(d.date_naive()));
    let two = |out: &mut String, n: u32| {
        out.push(char::from(b'0' + (n / 10) as u8));
        out.push(char::from(b'0' + (n % 10) as u8));
    };
    out.push('T');
    two(&mut out, d.hour());
    out.push(':');
    two(&mut out, d.minute());
    out.push(':');
    two(&mut out, d.second());
    out.push(if offset < 0 { '-' } else { '+' });
    let minutes = offset.unsigned_abs() / 60;
    two(&mut out, minutes / 60);
    out.push(':');
    two(&mut out, minutes % 60);
    out
}

fn parse_time(t: &str) -> Option<NaiveTime> {
    let t = t.trim_end_matches('秒');
    let t = t.replace(['时', '点', '分'], ":");
    let t = t.trim_end_matches(':');
    for fmt in ["%H:%M:%S%.f", "%H:%M:%S", "%H:%M"] {
        if let Ok(time) = NaiveTime::parse_from_str(t, fmt) {
            return Some(time);
        }
    }
    None
}

/// Dates before 1949 or after 2099-12-31 are data errors in this domain (2099-12-31 is how 长期
/// validity is written), not dates to carry forward.
fn check_range(parts: Parts) -> Result<Parts, String> {
    let year = chrono::Datelike::year(&parts.0);
    if !(1949..=2099).contains(&year) {
        return Err(format!("year {year} is out of range (1949-2099)"));
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn date(s: &str) -> String {
        parse_date(s).map(|d| d.to_string()).unwrap_or_else(|e| e)
    }

    #[test]
    fn dates_in_every_legacy_form() {
        for s in [
            "2022-04-26",
            "2022/4/26",
            "2022/04/26",
            "2022.4.26",
            "2022年4月26日",
            "2022年04月26日",
            "20220426",
            "2022-04-26 10:30:00",
            "2022-04-26T10:30:00",
            "2022/4/26 9:05",
            "2022年4月26日 10时30分",
            "２０２２－０４－２６",
        ] {
            let normalised = normalize_all(s);
            assert_eq!(date(&normalised), "2022-04-26", "{s}");
        }
    }

    proptest::proptest! {
        /// A text is kept as it is exactly when rewriting it would not change it.
        #[test]
        fn a_text_is_rewritten_only_when_that_changes_it(
            s in "[a-zA-Z0-9 \t\n\x01\u{85}\u{a0}\u{1680}\u{2000}-\u{2030}\u{205f}\u{3000}-\u{3003}\u{ff00}-\u{ff60}宁夏，、。：（）]{0,12}",
            punctuation in proptest::bool::ANY,
        ) {
            let kept = !changes(s.as_bytes(), punctuation);
            proptest::prop_assert!(!kept || rewrite(&s, punctuation) == s, "{:?}", s);
        }
    }

    proptest::proptest! {
        #[test]
        fn a_word_may_change_when_one_of_its_bytes_may(
            word in proptest::num::u64::ANY,
            at in 0usize..8,
            byte in proptest::num::u8::ANY,
        ) {
            let mut bytes = word.to_le_bytes();
            bytes[at] = byte;
            let expected = bytes
                .iter()
                .any(|&b| b <= 0x20 || matches!(b, 0xC2 | 0xE0..=0xE3 | 0xEF));
            proptest::prop_assert_eq!(may_change(u64::from_le_bytes(bytes)), expected);
        }
    }

    #[test]
    fn every_character_that_normalising_changes_is_seen_in_the_bytes() {
        for c in (0..0x11_0000).filter_map(char::from_u32) {
            let s = format!("a{c}b");
            for punctuation in [false, true] {
                if rewrite(&s, punctuation) != s {
                    assert!(changes(s.as_bytes(), punctuation), "U+{:04X}", c as u32);
                }
            }
        }
    }

    proptest::proptest! {
        /// The plain forms read the same with and without the general parsers.
        #[test]
        fn plain_dates_and_times_read_as_the_general_parsers_read_them(
            y in 1940i32..2110, m in 0u32..14, d in 0u32..33,
            h in 0u32..26, min in 0u32..62, sec in 0u32..62,
            sep in proptest::sample::select(vec![' ', 'T']),
            with_time in proptest::bool::ANY,
        ) {
            let s = if with_time {
                format!("{y:04}-{m:02}-{d:02}{sep}{h:02}:{min:02}:{sec:02}")
            } else {
                format!("{y:04}-{m:02}-{d:02}")
            };
            let general = || -> Result<Parts, String> {
                // The general path, as it reads a text the plain path passes over.
                let (date_part, time_part) = match s.find([' ', 'T']) {
                    Some(i) => (&s[..i], Some(s[i + 1..].trim())),
                    None => (s.as_str(), None),
                };
                let f: Vec<u32> = date_part.split('-').map(|x| x.parse().unwrap()).collect();
                let date = NaiveDate::from_ymd_opt(f[0] as i32, f[1], f[2])
                    .ok_or_else(|| format!("{}-{}-{} is not a calendar date", f[0], f[1], f[2]))?;
                let time = match time_part {
                    None => None,
                    Some(t) => Some(parse_time(t).ok_or("unrecognised")?),
                };
                check_range((date, time, None))
            };
            if let Some(parts) = plain_datetime(&s) {
                proptest::prop_assert_eq!(check_range(parts), general());
            }
            proptest::prop_assert_eq!(
                parse_datetime_parts(&s).is_ok(),
                general().is_ok(),
                "{}", s
            );
        }

        #[test]
        fn instants_are_written_as_chrono_writes_them(
            secs in -2_000_000_000i64..5_000_000_000,
            offset_minutes in -900i32..900,
        ) {
            let offset = FixedOffset::east_opt(offset_minutes * 60).unwrap();
            let d = DateTime::from_timestamp(secs, 0).unwrap().with_timezone(&offset);
            proptest::prop_assert_eq!(
                format_datetime(d),
                d.to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
            );
        }
    }

    #[test]
    fn dates_are_written_as_chrono_writes_them() {
        let mut d = NaiveDate::from_ymd_opt(1949, 1, 1).unwrap();
        while d <= NaiveDate::from_ymd_opt(2099, 12, 31).unwrap() {
            assert_eq!(format_date(d), d.format("%Y-%m-%d").to_string());
            d += chrono::Duration::days(1);
        }
        let far = NaiveDate::from_ymd_opt(-5, 3, 4).unwrap();
        assert_eq!(format_date(far), far.format("%Y-%m-%d").to_string());
    }

    #[test]
    fn epoch_milliseconds_are_read_in_shanghai() {
        // 2022-04-25T16:30:00Z is 2022-04-26 00:30 in Shanghai.
        assert_eq!(date("1650904200000"), "2022-04-26");
        let dt = parse_datetime("1650904200000").unwrap();
        assert_eq!(dt.to_rfc3339(), "2022-04-26T00:30:00+08:00");
        assert_eq!(
            parse_datetime("1650904200").unwrap().to_rfc3339(),
            "2022-04-26T00:30:00+08:00"
        );
    }

    #[test]
    fn datetimes_keep_an_explicit_offset_and_default_to_shanghai() {
        assert_eq!(
            parse_datetime("2022-04-26 10:30").unwrap().to_rfc3339(),
            "2022-04-26T10:30:00+08:00"
        );
        assert_eq!(
            parse_datetime("2022-04-26T02:30:00Z").unwrap().to_rfc3339(),
            "2022-04-26T02:30:00+00:00"
        );
        assert_eq!(
            parse_datetime("20220426").unwrap().to_rfc3339(),
            "2022-04-26T00:00:00+08:00"
        );
        assert_eq!(
            parse_datetime("20220426103000").unwrap().to_rfc3339(),
            "2022-04-26T10:30:00+08:00"
        );
    }

    #[test]
    fn impossible_and_out_of_range_dates_are_rejected() {
        assert!(date("2022-02-30").contains("not a calendar date"));
        assert!(date("1900-01-01").contains("out of range"));
        assert!(date("9999-12-31").contains("out of range"));
        assert!(date("26/04/2022").contains("unrecognised"));
        assert!(date("yesterday").contains("unrecognised"));
        assert!(date("").contains("unrecognised"));
        assert_eq!(date("长期"), "2099-12-31");
        assert!(date("2022-04-26 25:00").contains("unrecognised"));
    }

    #[test]
    fn full_width_text_and_spaces_are_normalised() {
        assert_eq!(
            normalize_text("　宁夏　ＡＢＣ  公司１２３ "),
            "宁夏 ABC 公司123"
        );
        assert_eq!(
            normalize_text("主体业态：餐饮（小型）"),
            "主体业态：餐饮（小型）"
        );
        assert_eq!(normalize_all("２０２６－０１－０５"), "2026-01-05");
        assert_eq!(normalize_text("\t\n"), "");
        assert_eq!(scalar_text(&json!("  ")), None);
        assert_eq!(scalar_text(&json!(12)), Some("12".into()));
        assert_eq!(scalar_text(&json!(null)), None);
    }

    #[test]
    fn amounts_in_yuan_become_wan() {
        let wan = |s: &str, u| apply(Convert::AmountWan, u, &json!(s));
        assert_eq!(wan("2000元", Unit::Wan).unwrap(), json!(0.2));
        assert_eq!(wan("1.5万元", Unit::Yuan).unwrap(), json!(1.5));
        assert_eq!(wan("2000", Unit::Yuan).unwrap(), json!(0.2));
        assert_eq!(wan("3", Unit::Wan).unwrap(), json!(3.0));
        assert_eq!(wan("１２，０００元", Unit::Wan).unwrap(), json!(1.2));
        assert!(wan("-5元", Unit::Wan).unwrap_err().contains("negative"));
        assert!(wan("1e400", Unit::Wan).is_err());
        assert!(wan("lots", Unit::Wan).is_err());
    }

    #[test]
    fn booleans_integers_numbers() {
        assert_eq!(
            apply(Convert::Bool, Unit::Wan, &json!("是")).unwrap(),
            json!(true)
        );
        assert_eq!(
            apply(Convert::Bool, Unit::Wan, &json!(0)).unwrap(),
            json!(false)
        );
        assert!(apply(Convert::Bool, Unit::Wan, &json!("maybe")).is_err());
        assert_eq!(
            apply(Convert::Integer, Unit::Wan, &json!("1,024")).unwrap(),
            json!(1024)
        );
        assert_eq!(
            apply(Convert::Number, Unit::Wan, &json!("3.25")).unwrap(),
            json!(3.25)
        );
        assert!(apply(Convert::String, Unit::Wan, &json!({"a": 1})).is_err());
    }
}
