//! Masking of personal data (个人信息保护法): 居民身份证号码 and phone numbers are masked wherever
//! text leaves the gateway for people to read — logs, DLQ previews, error messages.
//!
//! The scanner looks at maximal runs of ASCII digits (an ID number may end in `X`) so that it also
//! finds numbers glued to Chinese text ("身份证号360426199101010071"), where a regex `\b` would not
//! see a word boundary. It masks conservatively: any 15- or 18-character ID-shaped run (this also
//! masks all-digit 统一社会信用代码, which costs little), any 11-digit mobile number, and landline
//! numbers written with an area code.

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
        let len = run_end - start;
        let keep = if followed_by_alnum {
            None
        } else if len == 18 || len == 15 {
            Some((6, 4))
        } else if len == 11 && bytes[start] == b'1' && (b'3'..=b'9').contains(&bytes[start + 1]) {
            Some((3, 4))
        } else {
            None
        };
        if let Some((head, tail)) = keep {
            out.push_str(&text[copied..start]);
            out.push_str(&text[start..start + head]);
            out.extend(std::iter::repeat_n('*', len - head - tail));
            out.push_str(&text[run_end - tail..run_end]);
            copied = run_end;
        }
        i = run_end.max(start + 1);
    }
    out.push_str(&text[copied..]);
    out
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

#[cfg(test)]
mod tests {
    use super::mask;

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
            let expected = if s.starts_with("办件编号") {
                "办件编号 640000********0001".to_string()
            } else {
                s.to_string()
            };
            assert_eq!(mask(s), expected, "{s}");
        }
    }
}
