//! Check-digit validation for the two national identifiers every approval and supervision record
//! carries: the 统一社会信用代码 (GB 32100-2015) and the 居民身份证号码 (GB 11643-1999).
//!
//! These are pure functions; the schema module registers them as the JSON Schema custom formats
//! `uscc` and `resident-id`, and uses [`uscc_problem`] / [`resident_id_problem`] to turn a bare
//! "format mismatch" into a reason an operator can act on.

const USCC_ALPHABET: &[u8; 31] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";
const USCC_WEIGHTS: [u32; 17] = [
    1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28,
];

const ID_WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const ID_CHECK: &[u8; 11] = b"10X98765432";

/// Why a 统一社会信用代码 is not valid, or `None` when it is.
pub fn uscc_problem(code: &str) -> Option<String> {
    let bytes = code.as_bytes();
    if bytes.len() != 18 {
        return Some(format!(
            "统一社会信用代码 must have 18 characters, has {}",
            code.chars().count()
        ));
    }
    let mut sum = 0u32;
    for (i, &b) in bytes.iter().enumerate() {
        let Some(value) = USCC_ALPHABET.iter().position(|&c| c == b) else {
            return Some(format!(
                "统一社会信用代码 character {} ('{}') is not in the GB 32100 alphabet",
                i + 1,
                char::from(b).escape_default()
            ));
        };
        if i < 17 {
            sum += value as u32 * USCC_WEIGHTS[i];
        }
    }
    let expected = USCC_ALPHABET[((31 - sum % 31) % 31) as usize];
    if bytes[17] != expected {
        return Some(format!(
            "统一社会信用代码 check digit is '{}', expected '{}'",
            char::from(bytes[17]),
            char::from(expected)
        ));
    }
    None
}

/// The check character completing the first 17 characters of a 统一社会信用代码, or `None` when
/// they are not 17 characters of the GB 32100 alphabet.
pub fn uscc_check_char(first17: &str) -> Option<char> {
    let bytes = first17.as_bytes();
    if bytes.len() != 17 {
        return None;
    }
    let mut sum = 0u32;
    for (i, &b) in bytes.iter().enumerate() {
        sum += USCC_ALPHABET.iter().position(|&c| c == b)? as u32 * USCC_WEIGHTS[i];
    }
    Some(char::from(USCC_ALPHABET[((31 - sum % 31) % 31) as usize]))
}

/// Whether `code` is a valid 统一社会信用代码.
pub fn is_uscc(code: &str) -> bool {
    uscc_problem(code).is_none()
}

/// Why a 18-digit 居民身份证号码 is not valid, or `None` when it is. The number itself never
/// appears in the message: it is personal data.
pub fn resident_id_problem(id: &str) -> Option<String> {
    let bytes = id.as_bytes();
    if bytes.len() != 18 {
        return Some(format!(
            "居民身份证号码 must have 18 characters, has {}",
            id.chars().count()
        ));
    }
    if !bytes[..17].iter().all(u8::is_ascii_digit) {
        return Some("居民身份证号码 must start with 17 digits".to_string());
    }
    let sum: u32 = bytes[..17]
        .iter()
        .zip(ID_WEIGHTS)
        .map(|(&b, w)| u32::from(b - b'0') * w)
        .sum();
    let expected = ID_CHECK[(sum % 11) as usize];
    let got = bytes[17].to_ascii_uppercase();
    if got != expected {
        return Some(format!(
            "居民身份证号码 check digit is '{}', expected '{}'",
            char::from(bytes[17]),
            char::from(expected)
        ));
    }
    let (year, month, day) = (
        digits(&bytes[6..10]),
        digits(&bytes[10..12]),
        digits(&bytes[12..14]),
    );
    if chrono::NaiveDate::from_ymd_opt(year as i32, month, day).is_none() || year < 1850 {
        return Some("居民身份证号码 has no valid date of birth in digits 7-14".to_string());
    }
    None
}

/// Whether `id` is a valid 18-digit 居民身份证号码 (lower-case `x` accepted).
pub fn is_resident_id(id: &str) -> bool {
    resident_id_problem(id).is_none()
}

fn digits(b: &[u8]) -> u32 {
    b.iter().fold(0, |acc, &d| acc * 10 + u32::from(d - b'0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uscc_vectors_from_the_standard() {
        for valid in [
            "91110000600037341L",
            "121200004013590816",
            "91310115MA1K3BTP2B",
        ] {
            assert_eq!(uscc_problem(valid), None, "{valid}");
        }
        assert_eq!(
            uscc_problem("91110000600037341N").as_deref(),
            Some("统一社会信用代码 check digit is 'N', expected 'L'")
        );
    }

    #[test]
    fn the_check_character_completes_a_code() {
        assert_eq!(uscc_check_char("91110000600037341"), Some('L'));
        assert_eq!(uscc_check_char("9111000060003734"), None);
        assert_eq!(uscc_check_char("9111000060003734I"), None);
    }

    #[test]
    fn uscc_rejects_wrong_length_and_alphabet() {
        assert!(uscc_problem("9111000060003734")
            .unwrap()
            .contains("18 characters"));
        // I, O, S, V and Z are not in the alphabet; lower case is not either.
        assert!(uscc_problem("91110000600037341I")
            .unwrap()
            .contains("alphabet"));
        assert!(uscc_problem("91310115ma1k3btp2b")
            .unwrap()
            .contains("alphabet"));
        assert!(uscc_problem("９１１１００００６０００３７３４１Ｌ").is_some());
    }

    #[test]
    fn every_single_character_change_of_a_valid_code_is_caught() {
        let valid = b"91310115MA1K3BTP2B";
        for pos in 0..18 {
            for &c in USCC_ALPHABET {
                if c == valid[pos] {
                    continue;
                }
                let mut changed = *valid;
                changed[pos] = c;
                let s = std::str::from_utf8(&changed).unwrap();
                assert!(!is_uscc(s), "{s} should be invalid");
            }
        }
    }

    #[test]
    fn resident_id_vectors_from_the_standard() {
        assert!(is_resident_id("11010519491231002X"));
        assert!(is_resident_id("11010519491231002x"));
        assert!(is_resident_id("360426199101010071"));
        let problem = resident_id_problem("36042619910102009X").unwrap();
        assert!(problem.contains("check digit"), "{problem}");
        assert!(
            !problem.contains("360426"),
            "the number must not leak: {problem}"
        );
    }

    #[test]
    fn resident_id_rejects_impossible_birth_dates_and_shapes() {
        // 1991-02-30 does not exist; check digit recomputed so only the date is wrong.
        let base = "36042619910230001";
        let sum: u32 = base
            .bytes()
            .zip(ID_WEIGHTS)
            .map(|(b, w)| u32::from(b - b'0') * w)
            .sum();
        let id = format!("{base}{}", char::from(ID_CHECK[(sum % 11) as usize]));
        assert!(resident_id_problem(&id).unwrap().contains("date of birth"));
        assert!(resident_id_problem("3604261991010100")
            .unwrap()
            .contains("18 characters"));
        assert!(resident_id_problem("36042619910101007A").is_some());
        assert!(resident_id_problem("3604261991O101007I")
            .unwrap()
            .contains("17 digits"));
    }
}
