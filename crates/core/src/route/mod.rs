//! Routing: the 划转事项清单 (catalog of transferred licensing items) decides which departments a
//! record goes to. Approval records go to the item's supervision departments; supervision records
//! go to the approval bureau; notices go to the parties they name (or to every department). A
//! record the catalog cannot place is never dropped: it is `Unrouted` and waits, visibly, for an
//! admin. Pure: a catalog is data, routing is a function.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::schema::RecordKind;

/// The routing catalog file (`catalog/routing.yaml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// Version of the 划转事项清单 this file reflects, stored with every routing decision.
    pub version: String,
    /// Code of the approval bureau (行政审批局), which receives supervision information.
    pub bureau: String,
    /// Default deadline policy profile, e.g. `yuanqu-2022`.
    pub policy: String,
    /// Every party: the bureau and the supervision departments.
    pub departments: Vec<Department>,
    /// The transferred items.
    #[serde(default)]
    pub items: Vec<Item>,
}

/// A party on the platform.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Department {
    /// Stable code, used in tokens, the ledger and metric labels.
    pub code: String,
    /// Full name, e.g. 石嘴山市市场监督管理局.
    pub name: String,
    /// Upper-level department (for forwarding), if any.
    #[serde(default)]
    pub parent: Option<String>,
    /// Signed webhook delivery, if the department's system receives pushes.
    #[serde(default)]
    pub webhook: Option<Webhook>,
    /// Adapters through which this department's own system sends records (e.g. the 市场监管
    /// system's supervision adapter): records from them are the department's, and the bureau's
    /// feedback on them is visible to it.
    #[serde(default)]
    pub adapters: Vec<String>,
}

/// Where and how to push records to a department system.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// HTTPS (or, inside a trusted network, HTTP) URL receiving POSTed CloudEvents.
    pub url: String,
    /// Name of the environment variable holding the HMAC-SHA256 secret (never the secret itself).
    pub secret_env: String,
}

/// One transferred item (划转事项).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Item {
    /// 事项编码 (the basic catalog code, e.g. 000117006000); also matches implementation codes
    /// (实施清单编码) that end with it.
    pub code: String,
    /// 事项名称; records without a code are matched by exact name.
    pub name: String,
    /// Responsible supervision department(s).
    pub departments: Vec<String>,
    /// Per-item deadline rule overrides in working days, e.g. `{ claim_approval: 2 }`.
    #[serde(default)]
    pub overrides: BTreeMap<String, u32>,
}

/// Where a record goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// The departments, with the matched item's rule overrides.
    To {
        departments: Vec<String>,
        overrides: BTreeMap<String, u32>,
    },
    /// Nobody is known to be responsible; the reason says why.
    Unrouted(String),
}

/// A problem in the catalog file.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{file}: {message}")]
pub struct CatalogError {
    pub file: String,
    pub message: String,
}

impl Catalog {
    /// Reads and checks a catalog file; every problem is reported.
    pub fn load(path: &Path) -> Result<Catalog, Vec<CatalogError>> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            vec![CatalogError {
                file: file.clone(),
                message: format!("cannot read: {e}"),
            }]
        })?;
        Catalog::parse(&text, &file)
    }

    pub fn parse(text: &str, file: &str) -> Result<Catalog, Vec<CatalogError>> {
        let catalog: Catalog = serde_norway::from_str(text).map_err(|e| {
            let at = e
                .location()
                .map(|l| format!(":{}", l.line()))
                .unwrap_or_default();
            vec![CatalogError {
                file: format!("{file}{at}"),
                message: e.to_string(),
            }]
        })?;
        let mut errors = Vec::new();
        let mut err = |m: String| {
            errors.push(CatalogError {
                file: file.to_string(),
                message: m,
            })
        };
        let mut codes = std::collections::BTreeSet::new();
        for d in &catalog.departments {
            if d.code.is_empty()
                || d.code.len() > 64
                || !d
                    .code
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                err(format!(
                    "department code '{}' must be 1-64 characters of A-Z, a-z, 0-9, '-', '_', '.'",
                    d.code
                ));
            }
            if !codes.insert(d.code.clone()) {
                err(format!("department '{}' is listed twice", d.code));
            }
        }
        if !codes.contains(&catalog.bureau) {
            err(format!(
                "bureau '{}' is not among the departments",
                catalog.bureau
            ));
        }
        for d in &catalog.departments {
            if let Some(p) = &d.parent {
                if !codes.contains(p) {
                    err(format!(
                        "department '{}': parent '{p}' is not among the departments",
                        d.code
                    ));
                }
            }
        }
        for item in &catalog.items {
            if item.departments.is_empty() {
                err(format!(
                    "item {} {}: no responsible department",
                    item.code, item.name
                ));
            }
            for d in &item.departments {
                if !codes.contains(d) {
                    err(format!(
                        "item {} {}: department '{d}' is not among the departments",
                        item.code, item.name
                    ));
                }
            }
        }
        if errors.is_empty() {
            Ok(catalog)
        } else {
            Err(errors)
        }
    }

    pub fn department(&self, code: &str) -> Option<&Department> {
        self.departments.iter().find(|d| d.code == code)
    }

    /// Routes a canonical record (its `data`).
    pub fn route(&self, kind: RecordKind, data: &Value) -> Route {
        match kind {
            RecordKind::Approval => self.route_approval(data),
            RecordKind::Supervision => Route::To {
                departments: vec![self.bureau.clone()],
                overrides: BTreeMap::new(),
            },
            RecordKind::Notice => self.route_notice(data),
            other => Route::Unrouted(format!("{} records are not routed", other.as_str())),
        }
    }

    fn route_approval(&self, data: &Value) -> Route {
        let item = &data["item"];
        let text = |k: &str| {
            item.get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        let by_code = self.items.iter().find(|i| {
            text("catalog_code") == Some(i.code.as_str())
                || text("code") == Some(i.code.as_str())
                || text("implement_code").is_some_and(|c| c.ends_with(&i.code))
                || text("code").is_some_and(|c| c.ends_with(&i.code))
        });
        let found = by_code.or_else(|| {
            self.items
                .iter()
                .find(|i| text("name") == Some(i.name.as_str()))
        });
        match found {
            Some(i) => Route::To {
                departments: i.departments.clone(),
                overrides: i.overrides.clone(),
            },
            None => Route::Unrouted(format!(
                "item {} {} is not in routing catalog {}",
                text("code").or(text("catalog_code")).unwrap_or("(no code)"),
                text("name").unwrap_or("(no name)"),
                self.version
            )),
        }
    }

    fn route_notice(&self, data: &Value) -> Route {
        let issuer = data.get("issuer_code").and_then(Value::as_str);
        let audience: Vec<String> = data
            .get("audience")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        if audience.is_empty() {
            let all = self
                .departments
                .iter()
                .map(|d| d.code.clone())
                .filter(|c| Some(c.as_str()) != issuer)
                .collect();
            return Route::To {
                departments: all,
                overrides: BTreeMap::new(),
            };
        }
        let unknown: Vec<&String> = audience
            .iter()
            .filter(|a| self.department(a).is_none())
            .collect();
        if !unknown.is_empty() {
            return Route::Unrouted(format!(
                "audience {} not in routing catalog {}",
                unknown
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                self.version
            ));
        }
        Route::To {
            departments: audience,
            overrides: BTreeMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CATALOG: &str = r#"
version: "2026-01"
bureau: szs-xzsp
policy: yuanqu-2022
departments:
  - { code: szs-xzsp, name: 石嘴山市行政审批服务局 }
  - { code: szs-scjg, name: 石嘴山市市场监督管理局, parent: nx-scjg }
  - { code: nx-scjg, name: 宁夏回族自治区市场监督管理厅 }
  - { code: szs-wjw, name: 石嘴山市卫生健康委员会 }
items:
  - { code: "000117006000", name: 食品经营许可, departments: [szs-scjg], overrides: { claim_approval: 2 } }
  - { code: "000118002000", name: 公共场所卫生许可, departments: [szs-wjw] }
"#;

    fn catalog() -> Catalog {
        Catalog::parse(CATALOG, "test").unwrap()
    }

    #[test]
    fn approvals_route_by_code_implementation_code_or_name() {
        let c = catalog();
        let to = |item| c.route(RecordKind::Approval, &json!({ "item": item }));
        let scjg = Route::To {
            departments: vec!["szs-scjg".into()],
            overrides: [("claim_approval".to_string(), 2)].into(),
        };
        assert_eq!(to(json!({"code": "000117006000", "name": "x"})), scjg);
        assert_eq!(
            to(json!({"implement_code": "11640200MB1A28063W4000117006000", "name": "x"})),
            scjg
        );
        assert_eq!(to(json!({"name": "食品经营许可"})), scjg);
        match to(json!({"code": "999", "name": "烟草专卖零售许可"})) {
            Route::Unrouted(reason) => assert!(
                reason.contains("烟草专卖零售许可") && reason.contains("2026-01"),
                "{reason}"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn supervision_goes_to_the_bureau_and_notices_to_their_audience() {
        let c = catalog();
        assert_eq!(
            c.route(RecordKind::Supervision, &json!({})),
            Route::To {
                departments: vec!["szs-xzsp".into()],
                overrides: BTreeMap::new()
            }
        );
        let everyone = c.route(RecordKind::Notice, &json!({"issuer_code": "szs-xzsp"}));
        assert_eq!(
            everyone,
            Route::To {
                departments: vec!["szs-scjg".into(), "nx-scjg".into(), "szs-wjw".into()],
                overrides: BTreeMap::new()
            }
        );
        assert!(matches!(
            c.route(RecordKind::Notice, &json!({"audience": ["nobody"]})),
            Route::Unrouted(_)
        ));
    }

    #[test]
    fn catalog_errors_are_all_reported() {
        let bad = r#"
version: "x"
bureau: missing
policy: yuanqu-2022
departments:
  - { code: a, name: A }
  - { code: a, name: A again }
  - { code: "b c", name: B, parent: zz }
items:
  - { code: "1", name: one, departments: [] }
  - { code: "2", name: two, departments: [nope] }
"#;
        let errors = Catalog::parse(bad, "bad.yaml").unwrap_err();
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(errors.len(), 6, "{text:#?}");
    }
}
