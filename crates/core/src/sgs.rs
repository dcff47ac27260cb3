//! 双公示 export: the approval (行政许可, `XK_*`) and penalty (行政处罚, `CF_*`) decisions that
//! passed through the gateway, in the national 双公示 columns a 信用信息共享平台 imports — the same
//! columns the `nx-credit` adapters read, so a round trip through them gives back the same
//! canonical records. 石嘴山 一（五） (纳入信用记录), 济宁 第二十四条（二） (纳入信用记录) and 安康 22
//! (依托信用信息共享平台…纳入信用记录) ask that outcomes reach the credit record.
//!
//! Pure: canonical records in, a table out, written as CSV (UTF-8 with a byte-order mark and
//! CRLF, as Excel writes it) or as an .xlsx workbook. The CSV is an exchange file for the credit
//! platform's importer and keeps every value exactly as recorded (a value such as `=1+1` is not
//! altered, or the platform would receive something else than what was decided); for people, the
//! .xlsx is the file to open — every cell in it is text, so nothing is ever run as a formula.

use serde_json::Value;

/// Which 双公示 table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SgsKind {
    /// 行政许可 (`XK_*`): approval records.
    Xk,
    /// 行政处罚 (`CF_*`): supervision records carrying a penalty decision.
    Cf,
}

impl SgsKind {
    /// `xk` or `cf`.
    pub fn parse(s: &str) -> Result<SgsKind, String> {
        match s {
            "xk" => Ok(SgsKind::Xk),
            "cf" => Ok(SgsKind::Cf),
            other => Err(format!(
                "kind '{other}' is not a 双公示 table: xk (行政许可) or cf (行政处罚)"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SgsKind::Xk => "xk",
            SgsKind::Cf => "cf",
        }
    }

    /// The header row: the column codes, in the template's order.
    pub fn columns(self) -> &'static [&'static str] {
        match self {
            SgsKind::Xk => &XK,
            SgsKind::Cf => &CF,
        }
    }

    /// Whether a canonical record belongs in this table: an approval with its licence, or
    /// supervision information with a penalty decision.
    pub fn includes(self, kind: &str, data: &Value) -> bool {
        match self {
            SgsKind::Xk => kind == "approval" && data.get("license").is_some(),
            SgsKind::Cf => kind == "supervision" && data.get("penalty").is_some(),
        }
    }

    /// One record's row, in [`columns`](Self::columns) order; empty text where the record has
    /// nothing.
    pub fn row(self, data: &Value) -> Vec<String> {
        let text = |p: &str| -> String {
            match data.pointer(p) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                Some(Value::Bool(b)) => b.to_string(),
                Some(Value::Array(items)) => items
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(";"),
                _ => String::new(),
            }
        };
        let first = |paths: &[&str]| -> String {
            paths
                .iter()
                .map(|p| text(p))
                .find(|s| !s.is_empty())
                .unwrap_or_default()
        };
        let counterpart = |field: &str| text(&format!("/counterpart/{field}"));
        let party = [
            counterpart("name"),
            counterpart("category"),
            counterpart("uscc"),
            counterpart("business_reg_no"),
            counterpart("org_code"),
            counterpart("tax_reg_no"),
            counterpart("institution_cert_no"),
            counterpart("social_org_cert_no"),
            counterpart("legal_rep"),
            counterpart("legal_rep_id_type"),
            counterpart("legal_rep_id_number"),
            counterpart("id_type"),
            counterpart("id_number"),
        ];
        let mut row: Vec<String> = party.to_vec();
        match self {
            SgsKind::Xk => row.extend([
                text("/license/document_name"),
                text("/license/document_no"),
                text("/license/category"),
                text("/license/certificate_name"),
                text("/license/license_no"),
                text("/license/content"),
                first(&["/license/decision_date", "/decided_at"])
                    .chars()
                    .take(10)
                    .collect(),
                text("/license/valid_from"),
                text("/license/valid_to"),
                text("/license/authority"),
                text("/license/authority_code"),
                text("/license/status"),
                text("/license/data_source"),
                text("/license/data_source_code"),
                text("/license/remark"),
                text("/item/name"),
                text("/region_code"),
            ]),
            SgsKind::Cf => row.extend([
                first(&["/penalty/document_no", "/document_no"]),
                text("/penalty/violation_type"),
                text("/penalty/facts"),
                text("/penalty/basis"),
                text("/penalty/categories"),
                text("/penalty/content"),
                text("/penalty/fine_wan"),
                text("/penalty/confiscated_wan"),
                text("/penalty/license_affected"),
                first(&["/penalty/decision_date", "/decision_date"]),
                text("/penalty/valid_until"),
                text("/penalty/publicity_until"),
                first(&["/penalty/authority", "/authority"]),
                first(&["/penalty/authority_code", "/authority_code"]),
                text("/penalty/data_source"),
                text("/penalty/data_source_code"),
                text("/region_code"),
            ]),
        }
        row
    }
}

/// 双公示 行政许可 template 2.0 columns, plus XK_XMMC (事项名称) and DFBM (地方编码) of the 2016
/// template, which the `nx-credit-xk` adapter reads.
const XK: [&str; 30] = [
    "XK_XDR_MC",
    "XK_XDR_LB",
    "XK_XDR_SHXYM",
    "XK_XDR_GSZC",
    "XK_XDR_ZZJG",
    "XK_XDR_SWDJ",
    "XK_XDR_SYDW",
    "XK_XDR_SHZZ",
    "XK_FRDB",
    "XK_FR_ZJLX",
    "XK_FR_ZJHM",
    "XK_XDR_ZJLX",
    "XK_XDR_ZJHM",
    "XK_XKWS",
    "XK_WSH",
    "XK_XKLB",
    "XK_XKZS",
    "XK_XKBH",
    "XK_NR",
    "XK_JDRQ",
    "XK_YXQZ",
    "XK_YXQZI",
    "XK_XKJG",
    "XK_XKJGDM",
    "XK_ZT",
    "XK_LYDW",
    "XK_LYDWDM",
    "BZ",
    "XK_XMMC",
    "DFBM",
];

/// 双公示 行政处罚 template columns, plus DFBM, which the `nx-credit-cf` adapter reads.
const CF: [&str; 30] = [
    "CF_XDR_MC",
    "CF_XDR_LB",
    "CF_XDR_SHXYM",
    "CF_XDR_GSZC",
    "CF_XDR_ZZJG",
    "CF_XDR_SWDJ",
    "CF_XDR_SYDW",
    "CF_XDR_SHZZ",
    "CF_FRDB",
    "CF_FR_ZJLX",
    "CF_FR_ZJHM",
    "CF_XDR_ZJLX",
    "CF_XDR_ZJHM",
    "CF_WSH",
    "CF_WFXW",
    "CF_SY",
    "CF_YJ",
    "CF_CFLB",
    "CF_NR",
    "CF_NR_FK",
    "CF_NR_WFFF",
    "CF_NR_ZKDX",
    "CF_JDRQ",
    "CF_YXQ",
    "CF_GSJZQ",
    "CF_CFJG",
    "CF_CFJGDM",
    "CF_SJLY",
    "CF_SJLYDM",
    "DFBM",
];

/// The table of `records` (canonical data of the table's kind), one row each.
pub fn table(kind: SgsKind, records: &[Value]) -> Vec<Vec<String>> {
    records.iter().map(|r| kind.row(r)).collect()
}

fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// CSV: a byte-order mark, the column codes, one row per record, CRLF line ends.
pub fn to_csv(kind: SgsKind, rows: &[Vec<String>]) -> String {
    let mut out = String::from("\u{FEFF}");
    out.push_str(&kind.columns().join(","));
    out.push_str("\r\n");
    for row in rows {
        let cells: Vec<String> = row.iter().map(|c| csv_cell(c)).collect();
        out.push_str(&cells.join(","));
        out.push_str("\r\n");
    }
    out
}

/// An .xlsx workbook with one sheet (行政许可 or 行政处罚): the column codes in the first row,
/// then one row per record, every cell text.
pub fn to_xlsx(kind: SgsKind, rows: &[Vec<String>]) -> Result<Vec<u8>, String> {
    let mut book = rust_xlsxwriter::Workbook::new();
    let sheet = book.add_worksheet();
    let name = match kind {
        SgsKind::Xk => "行政许可",
        SgsKind::Cf => "行政处罚",
    };
    let fail = |e: rust_xlsxwriter::XlsxError| format!("cannot write the .xlsx: {e}");
    sheet.set_name(name).map_err(fail)?;
    for (c, code) in kind.columns().iter().enumerate() {
        sheet.write_string(0, c as u16, *code).map_err(fail)?;
    }
    for (r, row) in rows.iter().enumerate() {
        for (c, cell) in row.iter().enumerate() {
            if !cell.is_empty() {
                sheet
                    .write_string(r as u32 + 1, c as u16, cell)
                    .map_err(fail)?;
            }
        }
    }
    book.save_to_buffer().map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_penalty_row_names_every_column_and_joins_categories() {
        let data = json!({
            "action": "行政处罚", "document_no": "石环罚〔2025〕31号", "decision_date": "2025-12-26",
            "authority": "石嘴山市生态环境局", "region_code": "640200",
            "counterpart": {"name": "宁夏贺兰山矿业有限公司", "category": "法人及非法人组织", "uscc": "91640200MA76P9AG3A"},
            "penalty": {"document_no": "石环罚〔2025〕31号", "violation_type": "扬尘", "facts": "露天堆放", "basis": "大气法",
                        "categories": ["警告", "罚款"], "content": "罚款4.5万元", "fine_wan": 4.5, "decision_date": "2025-12-26"}
        });
        assert!(SgsKind::Cf.includes("supervision", &data));
        assert!(!SgsKind::Xk.includes("supervision", &data));
        let row = SgsKind::Cf.row(&data);
        assert_eq!(row.len(), SgsKind::Cf.columns().len());
        let at = |code: &str| &row[CF.iter().position(|c| *c == code).unwrap()];
        assert_eq!(at("CF_CFLB"), "警告;罚款");
        assert_eq!(at("CF_NR_FK"), "4.5");
        assert_eq!(at("CF_CFJG"), "石嘴山市生态环境局");
        assert_eq!(at("DFBM"), "640200");
        let csv = to_csv(SgsKind::Cf, &[row]);
        assert!(csv.starts_with("\u{FEFF}CF_XDR_MC,CF_XDR_LB,"));
        assert!(csv.ends_with("\r\n"));
    }

    #[test]
    fn the_kind_is_xk_or_cf() {
        assert_eq!(SgsKind::parse("xk"), Ok(SgsKind::Xk));
        assert!(SgsKind::parse("xzxk")
            .unwrap_err()
            .contains("xk (行政许可)"));
        assert!(to_xlsx(SgsKind::Xk, &[]).unwrap().starts_with(b"PK"));
    }
}
