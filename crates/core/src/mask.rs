//! Masking of personal data (个人信息保护法): 居民身份证号码, phone numbers and the names of natural
//! persons are masked wherever text leaves the gateway for people to read — logs, DLQ previews,
//! error messages. Everything else stays readable: an operator must be able to tell a source
//! system which record to fix, so a 办件编号 such as `640200202601050010`, which merely has the
//! shape of an ID number, is left alone.
//!
//! [`mask`] needs no knowledge of the text. It looks at maximal runs of ASCII digits (an ID number
//! may end in `X`) so that it also finds numbers glued to Chinese text
//! ("身份证号360426199101010071"), where a regex `\b` would not see a word boundary, and masks:
//! - an 18-character run that is a 居民身份证号码 by GB 11643: a real birth date at positions
//!   7–14 and a valid check digit, or a final `X` (no other number ends in one);
//! - a 15-digit run with a real `YYMMDD` birth date (the first-generation ID number, which has no
//!   check digit);
//! - either length, whatever its digits, when the text labels it as an identity number — the
//!   word right before it is a key, column or label such as `APPLY_CARDNUMBER`, `XK_XDR_ZJHM`,
//!   `身份证号` or the cell `身份证` of a CSV row — so a mistyped ID number, which fails its check
//!   digit and is exactly what lands in the DLQ, stays masked;
//! - 11-digit mobile numbers and landline numbers written with an area code.
//!
//! About one 18-digit case number in eleven has a valid check digit by chance and a date-like
//! middle; those are masked (wrongly, but safely) unless a label says what they are.
//!
//! [`mask_with`] also masks values the caller knows are personal — the personal data a record
//! holds by its canonical fields ([`personal_values`]): the name of a counterpart who is a
//! 自然人, identity numbers whatever their digits, contact phones.

use chrono::NaiveDate;
use serde_json::Value;

/// Returns `text` with ID numbers and phone numbers masked.
pub fn mask(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut copied = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() || (i > 0 && is_alnum(bytes[i - 1])) {
            i += 1;
            continue;
        }
        let start = i;
        let mut end = i;
        while end < bytes.len() && bytes[end].is_ascii_digit() {
            end += 1;
        }
        // An 18-character ID number may end in X.
        let mut run_end = end;
        if end - start == 17 && end < bytes.len() && matches!(bytes[end], b'X' | b'x') {
            run_end = end + 1;
        }
        // A landline: 0AA(A)-NNNNNNN(N).
        if bytes[start] == b'0'
            && (3..=4).contains(&(end - start))
            && end + 1 < bytes.len()
            && bytes[end] == b'-'
        {
            let mut tail = end + 1;
            while tail < bytes.len() && bytes[tail].is_ascii_digit() {
                tail += 1;
            }
            if (7..=8).contains(&(tail - end - 1)) && !(tail < bytes.len() && is_alnum(bytes[tail]))
            {
                out.push_str(&text[copied..start]);
                out.push_str(&text[start..end + 1]);
                out.push_str("****");
                out.push_str(&text[tail - 2..tail]);
                copied = tail;
                i = tail;
                continue;
            }
        }
        let followed_by_alnum = run_end < bytes.len() && is_alnum(bytes[run_end]);
        let run = &bytes[start..run_end];
        let keep = if followed_by_alnum {
            None
        } else if (run.len() == 18 || run.len() == 15)
            && is_id_number(run, || labelled_as_identity(&text[..start]))
        {
            Some((6, 4))
        } else if run.len() == 11 && run[0] == b'1' && (b'3'..=b'9').contains(&run[1]) {
            Some((3, 4))
        } else {
            None
        };
        if let Some((head, tail)) = keep {
            out.push_str(&text[copied..start]);
            out.push_str(&text[start..start + head]);
            out.extend(std::iter::repeat_n('*', run.len() - head - tail));
            out.push_str(&text[run_end - tail..run_end]);
            copied = run_end;
        }
        i = run_end.max(start + 1);
    }
    out.push_str(&text[copied..]);
    out
}

/// Masks `text` like [`mask`], and first every occurrence of the `personal` values (see
/// [`personal_values`]): a name keeps its first character (the surname: `李*`), a number its
/// first and last digits.
pub fn mask_with(text: &str, personal: &[String]) -> String {
    let mut values: Vec<&str> = personal
        .iter()
        .map(|v| v.trim())
        .filter(|v| v.chars().count() >= 2)
        .collect();
    // The longest first, so a value that contains another is masked whole.
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    values.dedup();
    let mut out = text.to_string();
    for v in values {
        if out.contains(v) {
            out = out.replace(v, &mask_value(v));
        }
    }
    mask(&out)
}

/// The personal data a canonical record (approval or supervision data) holds: the identity
/// numbers of the counterpart and its legal representative, whatever their check digits, the
/// contact phone, and — when the record says the counterpart is a 自然人 — the counterpart's and
/// the legal representative's names.
pub fn personal_values(record: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let Some(c) = record.get("counterpart") else {
        return out;
    };
    let mut take = |key: &str| {
        if let Some(v) = c.get(key).and_then(Value::as_str) {
            if !v.trim().is_empty() {
                out.push(v.trim().to_string());
            }
        }
    };
    for key in ["id_number", "legal_rep_id_number", "contact_phone"] {
        take(key);
    }
    if c.get("category").and_then(Value::as_str) == Some("自然人") {
        take("name");
        take("legal_rep");
    }
    out
}

/// One personal value masked: numbers keep their first and last digits, names their first
/// character.
fn mask_value(v: &str) -> String {
    let chars: Vec<char> = v.chars().collect();
    let n = chars.len();
    let digits = chars.iter().filter(|c| c.is_ascii_digit()).count();
    let (head, tail) = if digits * 2 >= n {
        match n {
            15.. => (6, 4),
            11..=14 => (3, 4),
            5..=10 => (0, 2),
            _ => (0, 0),
        }
    } else {
        (1, 0)
    };
    let mut out: String = chars[..head].iter().collect();
    out.extend(std::iter::repeat_n('*', n - head - tail));
    out.extend(&chars[n - tail..]);
    out
}

/// Whether an 18- or 15-character run is an ID number; `labelled` says whether the text names
/// it as one (asked only when its digits do not already say so).
fn is_id_number(run: &[u8], labelled: impl FnOnce() -> bool) -> bool {
    if run.len() == 18 {
        if matches!(run[17], b'X' | b'x') {
            return true;
        }
        let date = std::str::from_utf8(&run[6..14]).unwrap_or("");
        if real_date(date, "%Y%m%d") && check_digit_valid(run) {
            return true;
        }
    } else {
        let date = std::str::from_utf8(&run[6..12]).unwrap_or("");
        if real_date(&format!("19{date}"), "%Y%m%d") {
            return true;
        }
    }
    labelled()
}

fn real_date(text: &str, format: &str) -> bool {
    NaiveDate::parse_from_str(text, format)
        .is_ok_and(|d| (1890..=2099).contains(&chrono::Datelike::year(&d)))
}

/// The GB 11643-1999 check digit of an 18-character ID number.
fn check_digit_valid(run: &[u8]) -> bool {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = run[..17]
        .iter()
        .zip(WEIGHTS)
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    b"10X98765432"[(sum % 11) as usize] == run[17].to_ascii_uppercase()
}

/// Characters between a label and its value: JSON and XML punctuation, CSV and text separators.
const SEPARATORS: &[char] = &[
    ' ', '\t', '"', '\'', ':', '：', '=', '>', ',', '，', '、', '|', ';', '；', '(', '（', '[',
    '【',
];

/// Whether the word right before a number (skipping the separators between a key or label and
/// its value) names an identity document: `身份证号`, `证件号码`, a CSV cell `身份证`, a key like
/// `APPLY_CARDNUMBER`, `XK_XDR_ZJHM`, `id_number`, `<SFZH>`.
fn labelled_as_identity(before: &str) -> bool {
    let mut chars = before.chars().rev().peekable();
    let mut skipped = 0;
    while chars.peek().is_some_and(|c| SEPARATORS.contains(c)) && skipped < 6 {
        chars.next();
        skipped += 1;
    }
    let word: String = chars
        .take_while(|c| !SEPARATORS.contains(c) && !matches!(c, '<' | '{' | '}') && !c.is_control())
        .take(40)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    if word.contains("身份") || word.contains("证件") {
        return true;
    }
    let upper = word.to_ascii_uppercase();
    [
        "IDCARD",
        "ID_CARD",
        "IDNO",
        "ID_NO",
        "IDNUMBER",
        "ID_NUMBER",
        "RESIDENT_ID",
        "CARDNO",
        "CARD_NO",
        "CARDNUMBER",
        "CARD_NUMBER",
        "CERTNO",
        "CERT_NO",
        "ZJHM",
        "SFZ",
    ]
    .iter()
    .any(|label| upper.contains(label))
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

#[cfg(test)]
mod tests {
    use super::{mask, mask_with, personal_values};

    #[test]
    fn masks_id_numbers_even_inside_chinese_text() {
        assert_eq!(
            mask("身份证号360426199101010071，"),
            "身份证号360426********0071，"
        );
        assert_eq!(
            mask("id 11010519491231002X end"),
            "id 110105********002X end"
        );
        assert_eq!(mask("\"11010519491231002x\""), "\"110105********002x\"");
        assert_eq!(mask("old 130503670401001"), "old 130503*****1001");
    }

    #[test]
    fn masks_mobile_and_landline_numbers() {
        assert_eq!(mask("联系电话13912345678"), "联系电话139****5678");
        assert_eq!(mask("tel: 0951-5012345."), "tel: 0951-****45.");
        assert_eq!(mask("+86 13812345678"), "+86 138****5678");
    }

    #[test]
    fn leaves_other_numbers_alone() {
        for s in [
            "办件编号 640000202204260001",
            "2022-04-26",
            "amount 12345678901234",
            "91310115MA1K3BTP2B",
            "10986543210 not a mobile",
            "ABC13912345678",
        ] {
            assert_eq!(mask(s), s, "{s}");
        }
    }

    #[test]
    fn case_numbers_that_look_like_id_numbers_stay_readable() {
        // 办件编号 of 政务服务网: region code, a date, a sequence — an ID number's shape, but its
        // last digit is not the GB 11643 check digit.
        for s in [
            "\"PROJID\": \"640200202601050010\"",
            "{\"PROJID\":\"640200202601050001\",\"TELPHONE\":\"x\"}",
            "办件编号640200202601050011",
            "乡字第640205202600002号",
            "<BJBH>640200202601050010</BJBH>",
        ] {
            assert_eq!(mask(s), s, "{s}");
        }
    }

    #[test]
    fn a_mistyped_id_number_is_masked_where_the_text_labels_it() {
        // 640205198306171216 fails its check digit (a typo in the source system): the label
        // before it still says what it is.
        for (text, masked) in [
            (
                "\"APPLY_CARDNUMBER\": \"640205198306171216\"",
                "\"APPLY_CARDNUMBER\": \"640205********1216\"",
            ),
            (
                "海明,自然人,,,身份证,640205198306171216,乡村建设规划许可决定书",
                "海明,自然人,,,身份证,640205********1216,乡村建设规划许可决定书",
            ),
            (
                "<XK_XDR_ZJHM>640205198306171216</XK_XDR_ZJHM>",
                "<XK_XDR_ZJHM>640205********1216</XK_XDR_ZJHM>",
            ),
            (
                "公民身份号码：640205198306171216",
                "公民身份号码：640205********1216",
            ),
        ] {
            assert_eq!(mask(text), masked, "{text}");
        }
        // The same digits as a case number are left alone.
        assert_eq!(
            mask("\"PROJID\":\"640205198306171216\""),
            "\"PROJID\":\"640205198306171216\""
        );
    }

    #[test]
    fn a_natural_persons_name_and_numbers_are_masked_from_the_record() {
        let record = serde_json::json!({"counterpart": {
            "name": "李明", "category": "自然人", "id_type": "居民身份证",
            "id_number": "36042619910102009X", "contact_phone": "5012345"
        }});
        let personal = personal_values(&record);
        let text = "{\"APPLYNAME\":\"李明\",\"PROJID\":\"640200202601050011\",\"TEL\":\"5012345\",\"NO\":\"36042619910102009X\"}";
        assert_eq!(
            mask_with(text, &personal),
            "{\"APPLYNAME\":\"李*\",\"PROJID\":\"640200202601050011\",\"TEL\":\"*****45\",\"NO\":\"360426********009X\"}"
        );
        // An organisation's name is not personal data.
        let company = serde_json::json!({"counterpart": {
            "name": "宁夏塞上人家餐饮管理有限公司", "category": "法人及非法人组织", "legal_rep": "马建国"
        }});
        assert!(personal_values(&company).is_empty());
        assert_eq!(
            mask_with("宁夏塞上人家餐饮管理有限公司", &personal_values(&company)),
            "宁夏塞上人家餐饮管理有限公司"
        );
    }
}
