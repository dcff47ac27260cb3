//! Ledger and deadline scenarios with a controlled clock, each run against SQLite and against a
//! real PostgreSQL server, with the shipped calendar, policies and routing catalog; every instant
//! is given explicitly.

mod common;

use std::sync::Arc;

use chrono::{DateTime, FixedOffset};
use serde_json::{json, Value};
use shenguan::bus::{Delivery, Topics};
use shenguan::deadline::{Calendar, Policies};
use shenguan::ledger::port::Outcome;
use shenguan::ledger::projector::Shared;
use shenguan::ledger::store::{Batch, LedgerStore, SqlLedger};
use shenguan::ledger::{report, tracker, AlertLevel, EntryState};
use shenguan::route::Catalog;
use shenguan::schema::RecordKind;

fn t(s: &str) -> DateTime<FixedOffset> {
    DateTime::parse_from_rfc3339(s).unwrap()
}

fn shared(policy: &str) -> Arc<Shared> {
    let catalog = Catalog::load(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("catalog/routing.yaml"),
    )
    .unwrap();
    Arc::new(Shared {
        catalog: Arc::new(catalog),
        calendar: Arc::new(Calendar::builtin()),
        policies: Arc::new(Policies::builtin()),
        policy: policy.to_string(),
        topics: Topics::default(),
    })
}

/// Feeds events to a ledger the way the projector does, numbering offsets per topic.
struct Feed {
    ledger: Arc<dyn LedgerStore>,
    url: String,
    shared: Arc<Shared>,
    offsets: std::collections::HashMap<String, i64>,
    log: Vec<(Delivery, RecordKind)>,
    /// The alerts the tracker published (the levels it raised), in order.
    raised: Vec<shenguan::ledger::Alert>,
    _dir: tempfile::TempDir,
}

impl Feed {
    async fn new(backend: Backend, policy: &str) -> Feed {
        let dir = tempfile::tempdir().unwrap();
        let (ledger, url) = backend.open(&dir).await;
        Feed {
            ledger,
            url,
            shared: shared(policy),
            offsets: Default::default(),
            log: Vec::new(),
            raised: Vec::new(),
            _dir: dir,
        }
    }

    /// Applies one delivery; what it changed (nothing, when it was not applied now).
    async fn apply(&self, d: Delivery, kind: RecordKind) -> shenguan::ledger::Changes {
        let mut outcomes = self
            .ledger
            .apply_batch(vec![(d, kind)].into(), self.shared.clone(), true)
            .await
            .unwrap();
        match outcomes.pop() {
            Some(Outcome::Applied(c)) => *c,
            _ => Default::default(),
        }
    }

    /// Every alert published so far: the levels the tracker raised, then what the ledger
    /// derived (claims closing alerts, late pushes, deemed agreements) from its outbox.
    async fn alerts(&self) -> Vec<Value> {
        let mut out: Vec<Value> = self.raised.iter().map(|a| a.data()).collect();
        out.extend(
            common::ledger_outbox(&self.url)
                .await
                .into_iter()
                .map(|mut e| e["data"].take()),
        );
        out
    }

    async fn send(&mut self, kind: RecordKind, event: Value) -> shenguan::ledger::Changes {
        let topic = self.shared.topics.name(kind);
        let offset = self.offsets.entry(topic.clone()).or_insert(0);
        let d = Delivery {
            topic,
            partition: 0,
            offset: *offset,
            key: None,
            payload: serde_json::to_vec(&event).unwrap(),
            timestamp_ms: 0,
            headers: Vec::new(),
        };
        *offset += 1;
        self.log.push((d.clone(), kind));
        self.apply(d, kind).await
    }

    async fn approval(&mut self, id: &str, item_code: &str, decided: &str, published: &str) {
        let event = json!({
            "specversion": "1.0", "id": format!("ev-{id}"), "source": "/test", "type": "cn.shenguan.approval.v1",
            "subject": id, "time": published, "datacontenttype": "application/json",
            "data": {
                "record_id": id, "kind": "approval",
                "source": {"system": "test", "adapter": "nx-zwfw-approval", "business_key": id, "received_at": published},
                "item": {"code": item_code, "name": "事项"},
                "decided_at": decided,
            }
        });
        self.send(RecordKind::Approval, event).await;
    }

    async fn claim(
        &mut self,
        id: &str,
        department: &str,
        action: &str,
        at: &str,
    ) -> shenguan::ledger::Changes {
        let event = json!({
            "specversion": "1.0", "id": format!("claim-{id}-{department}-{action}-{at}"), "source": "/test",
            "type": "cn.shenguan.claim.v1", "subject": id, "time": at, "datacontenttype": "application/json",
            "data": {"record_id": id, "department": department, "action": action, "at": at, "reason": "非本部门监管事项", "channel": "rest"}
        });
        self.send(RecordKind::Claim, event).await
    }

    /// A notice from `from` to `to`, with `extra` fields (inquiry, inspection, offline_push …).
    async fn notice(
        &mut self,
        id: &str,
        from: &str,
        to: &[&str],
        extra: Value,
        published: &str,
    ) -> shenguan::ledger::Changes {
        let mut data = json!({
            "record_id": id, "kind": "notice",
            "source": {"system": "shenguan", "adapter": "inquiry", "business_key": id, "received_at": published},
            "notice_type": "其他", "title": format!("函 {id}"), "issuer": from, "issuer_code": from,
            "issued_at": published, "audience": to,
        });
        for (k, v) in extra.as_object().unwrap() {
            data[k] = v.clone();
        }
        let event = json!({
            "specversion": "1.0", "id": format!("ev-{id}"), "source": "/test", "type": "cn.shenguan.notice.v1",
            "subject": id, "time": published, "datacontenttype": "application/json", "data": data,
        });
        self.send(RecordKind::Notice, event).await
    }

    async fn feedback(
        &mut self,
        id: &str,
        department: &str,
        feedback_type: &str,
        at: &str,
        extra: Value,
    ) -> shenguan::ledger::Changes {
        let mut data = json!({"record_id": id, "department": department, "feedback_type": feedback_type, "at": at});
        for (k, v) in extra.as_object().unwrap() {
            data[k] = v.clone();
        }
        let event = json!({
            "specversion": "1.0", "id": format!("fb-{id}-{department}-{feedback_type}-{at}"), "source": "/test",
            "type": "cn.shenguan.feedback.v1", "subject": id, "time": at, "datacontenttype": "application/json",
            "data": data,
        });
        self.send(RecordKind::Feedback, event).await
    }

    async fn forward(
        &mut self,
        id: &str,
        from: &str,
        to: &str,
        at: &str,
    ) -> shenguan::ledger::Changes {
        let event = json!({
            "specversion": "1.0", "id": format!("fwd-{id}-{from}-{to}"), "source": "/test",
            "type": "cn.shenguan.claim.v1", "subject": id, "time": at, "datacontenttype": "application/json",
            "data": {"record_id": id, "department": from, "action": "forward", "to": to, "at": at,
                     "reason": "属上级部门监管事项", "channel": "rest"}
        });
        self.send(RecordKind::Claim, event).await
    }

    /// What the tracker publishes for lapsed inquiries at `now`, fed back as the projector would.
    async fn deem_lapsed(&mut self, now: &str) -> usize {
        let messages = tracker::deemed_agreed(self.ledger.as_ref(), &self.shared, t(now))
            .await
            .unwrap();
        for m in &messages {
            let event: Value = serde_json::from_slice(&m.payload).unwrap();
            self.send(RecordKind::Feedback, event).await;
        }
        messages.len()
    }

    /// The monthly report of `month` as the store computes it at `now`.
    async fn report(&self, month: &str, now: &str) -> report::Report {
        let (from, to) = report::month_bounds(month).unwrap();
        self.ledger
            .report_month(
                from,
                to,
                report::Monthly::new(
                    month,
                    self.shared.calendar.version(),
                    t(now),
                    report::department_names(&self.shared.catalog),
                ),
            )
            .await
            .unwrap()
            .finish()
    }

    async fn entry(&self, id: &str, department: &str) -> shenguan::ledger::Entry {
        let (_, entries, _) = self.ledger.record(id).await.unwrap().expect("record");
        entries
            .into_iter()
            .find(|e| e.department == department)
            .expect("entry")
    }

    /// What the tracker raises at `now`, published and applied as the projector would.
    async fn levels_at(&mut self, now: &str) -> Vec<(String, String)> {
        let alerts = tracker::due_alerts(
            self.ledger.as_ref(),
            &self.shared,
            t(now),
            &Default::default(),
        )
        .await
        .unwrap();
        for a in &alerts {
            let m = tracker::alert_message(&self.shared, a);
            self.send(
                RecordKind::Alert,
                serde_json::from_slice(&m.payload).unwrap(),
            )
            .await;
            self.raised.push(a.clone());
        }
        alerts.into_iter().map(|a| (a.record_id, a.level)).collect()
    }
}

const FOOD: &str = "000117006000"; // 食品经营许可 → szs-scjg

#[derive(Clone, Copy, PartialEq)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// A fresh ledger and its URL.
    async fn open(self, dir: &tempfile::TempDir) -> (Arc<dyn LedgerStore>, String) {
        let url = match self {
            Backend::Sqlite => format!("sqlite:{}", dir.path().join("ledger.db").display()),
            Backend::Postgres => common::postgres_database().await,
        };
        (shenguan::ledger::store::open(&url).await.unwrap(), url)
    }
}

/// One scenario body, run against every ledger backend.
macro_rules! scenario {
    ($name:ident, |$backend:ident| $body:block) => {
        mod $name {
            use super::*;
            async fn run($backend: Backend) $body
            #[tokio::test(flavor = "multi_thread")]
            async fn sqlite() {
                run(Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread")]
            async fn postgres() {
                run(Backend::Postgres).await
            }
        }
    };
}

scenario!(
    a_decision_before_national_day_2026_is_due_after_the_holiday_and_alerts_once_per_level,
    |backend| {
        let mut f = Feed::new(backend, "yuanqu-2022").await;
        f.approval(
            "r1",
            FOOD,
            "2026-09-30T10:00:00+08:00",
            "2026-09-30T16:00:00+08:00",
        )
        .await;
        let e = f.entry("r1", "szs-scjg").await;
        assert_eq!(e.state, EntryState::Pushed);
        // 中秋 and 国庆 2026: 10-01..10-07 are off; the next working day after 09-30 is 10-08.
        assert_eq!(
            e.claim_due_at.unwrap().to_rfc3339(),
            "2026-10-08T23:59:59+08:00"
        );
        assert_eq!(e.claim_rule.as_deref(), Some("claim_approval"));
        assert_eq!(e.calendar_version, Calendar::builtin().version());

        assert!(
            f.levels_at("2026-10-05T12:00:00+08:00").await.is_empty(),
            "a holiday is not a working hour"
        );
        assert!(
            f.levels_at("2026-10-08T10:00:00+08:00").await.is_empty(),
            "14 working hours left"
        );
        assert_eq!(
            f.levels_at("2026-10-08T16:30:00+08:00").await,
            vec![("r1".into(), "due_soon".into())]
        );
        assert!(
            f.levels_at("2026-10-08T17:00:00+08:00").await.is_empty(),
            "each level once"
        );
        assert_eq!(
            f.levels_at("2026-10-09T09:00:00+08:00").await,
            vec![("r1".into(), "overdue".into())]
        );
        // Escalation after 2 further working days: 10-09 (Fri) and 10-10 (补班 Saturday).
        assert!(f.levels_at("2026-10-10T23:00:00+08:00").await.is_empty());
        assert_eq!(
            f.levels_at("2026-10-11T08:00:00+08:00").await,
            vec![("r1".into(), "escalated".into())]
        );
        assert!(f.levels_at("2026-10-12T08:00:00+08:00").await.is_empty());
        assert_eq!(
            f.entry("r1", "szs-scjg").await.alert_level,
            AlertLevel::Escalated
        );

        // The claim closes the alert with a closing event.
        let changes = f
            .claim("r1", "szs-scjg", "claim", "2026-10-12T09:00:00+08:00")
            .await;
        assert_eq!(changes.alerts.len(), 1);
        assert_eq!(changes.alerts[0].level, "closed");
        let levels: Vec<String> = f
            .alerts()
            .await
            .iter()
            .map(|a| a["level"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(levels.len(), 4);
        for l in ["due_soon", "overdue", "escalated", "closed"] {
            assert!(levels.contains(&l.to_string()), "{levels:?}");
        }
    }
);

scenario!(
    a_push_on_the_friday_before_spring_festival_is_due_on_the_make_up_saturday,
    |backend| {
        let mut f = Feed::new(backend, "yuanqu-2022").await;
        f.approval(
            "r2",
            FOOD,
            "2026-02-13T09:00:00+08:00",
            "2026-02-13T17:00:00+08:00",
        )
        .await;
        let e = f.entry("r2", "szs-scjg").await;
        assert_eq!(
            e.claim_due_at.unwrap().to_rfc3339(),
            "2026-02-14T23:59:59+08:00"
        );
        // On the 补班 Saturday morning 16 working hours remain: no alert yet.
        assert!(f.levels_at("2026-02-14T08:00:00+08:00").await.is_empty());
        f.claim("r2", "szs-scjg", "claim", "2026-02-14T10:00:00+08:00")
            .await;
        let e = f.entry("r2", "szs-scjg").await;
        assert_eq!(e.state, EntryState::Claimed);
        assert!(e.claimed_at.unwrap() <= e.claim_due_at.unwrap());
        assert!(
            f.levels_at("2026-02-24T08:00:00+08:00").await.is_empty(),
            "claimed entries raise nothing"
        );
    }
);

scenario!(
    jining_gives_three_working_days_and_pushes_immediately,
    |backend| {
        let mut f = Feed::new(backend, "jining-2022").await;
        // Decided on Saturday 2026-03-07 (a day off): "immediately" means by the end of Monday.
        f.approval(
            "r3",
            FOOD,
            "2026-03-07T10:00:00+08:00",
            "2026-03-09T09:00:00+08:00",
        )
        .await;
        let (record, entries, _) = f.ledger.record("r3").await.unwrap().unwrap();
        assert_eq!(
            record.push_due_at.unwrap().to_rfc3339(),
            "2026-03-09T23:59:59+08:00"
        );
        assert!(!record.push_late);
        assert_eq!(
            entries[0].claim_due_at.unwrap().to_rfc3339(),
            "2026-03-12T23:59:59+08:00"
        );
    }
);

scenario!(a_late_push_is_recorded_counted_and_alerted, |backend| {
    let mut f = Feed::new(backend, "yuanqu-2022").await;
    f.approval(
        "r4",
        FOOD,
        "2026-09-29T10:00:00+08:00",
        "2026-10-09T10:00:00+08:00",
    )
    .await;
    let (record, _, history) = f.ledger.record("r4").await.unwrap().unwrap();
    assert!(record.push_late);
    assert_eq!(
        record.push_due_at.unwrap().to_rfc3339(),
        "2026-09-30T23:59:59+08:00"
    );
    assert!(history.iter().any(|h| h.action == "late_push"));
    let alert = f.alerts().await.remove(0);
    assert_eq!(alert["level"], "late_push");
    assert_eq!(alert["rule"], "push_approval");
});

scenario!(
    claims_are_idempotent_and_only_for_the_routed_department,
    |backend| {
        let mut f = Feed::new(backend, "yuanqu-2022").await;
        f.approval(
            "r5",
            FOOD,
            "2026-03-02T10:00:00+08:00",
            "2026-03-02T11:00:00+08:00",
        )
        .await;
        let first = f
            .claim("r5", "szs-scjg", "claim", "2026-03-02T15:00:00+08:00")
            .await;
        assert_eq!(first.entries.len(), 1);
        // The same claim event again: nothing changes.
        let (delivery, kind) = f.log.last().unwrap().clone();
        let next = f.offsets.get_mut(&delivery.topic).unwrap();
        let redelivered = Delivery {
            offset: *next,
            ..delivery
        };
        *next += 1;
        let again = f.apply(redelivered, kind).await;
        assert!(again.entries.is_empty() && again.history.is_empty());
        // A second claim later by the same department: ignored, the first claim time stays.
        f.claim("r5", "szs-scjg", "claim", "2026-03-03T09:00:00+08:00")
            .await;
        assert_eq!(
            f.entry("r5", "szs-scjg")
                .await
                .claimed_at
                .unwrap()
                .to_rfc3339(),
            "2026-03-02T15:00:00+08:00"
        );
        // Another department cannot claim it.
        let other = f
            .claim("r5", "szs-wjw", "claim", "2026-03-02T16:00:00+08:00")
            .await;
        assert!(other.entries.is_empty());
        let (_, entries, history) = f.ledger.record("r5").await.unwrap().unwrap();
        assert_eq!(entries.len(), 1);
        assert!(history
            .iter()
            .any(|h| h.action == "ignored" && h.department.as_deref() == Some("szs-wjw")));
    }
);

scenario!(
    a_returned_record_goes_back_to_routing_and_an_admin_routes_it,
    |backend| {
        let mut f = Feed::new(backend, "yuanqu-2022").await;
        f.approval(
            "r6",
            FOOD,
            "2026-03-02T10:00:00+08:00",
            "2026-03-02T11:00:00+08:00",
        )
        .await;
        f.claim("r6", "szs-scjg", "return", "2026-03-02T12:00:00+08:00")
            .await;
        let unrouted = f.ledger.unrouted().await.unwrap();
        assert_eq!(unrouted.len(), 1);
        assert!(
            unrouted[0]
                .unrouted
                .as_deref()
                .unwrap()
                .contains("非本部门"),
            "{:?}",
            unrouted[0].unrouted
        );
        f.claim("r6", "szs-wjw", "route", "2026-03-03T09:00:00+08:00")
            .await;
        assert!(f.ledger.unrouted().await.unwrap().is_empty());
        let e = f.entry("r6", "szs-wjw").await;
        assert_eq!(e.state, EntryState::Pushed);
        assert_eq!(
            e.claim_due_at.unwrap().to_rfc3339(),
            "2026-03-04T23:59:59+08:00",
            "the deadline counts from the routing"
        );
        assert_eq!(f.entry("r6", "szs-scjg").await.state, EntryState::Returned);
    }
);

scenario!(an_item_missing_from_the_catalog_waits_unrouted, |backend| {
    let mut f = Feed::new(backend, "yuanqu-2022").await;
    f.approval(
        "r7",
        "999999999999",
        "2026-03-02T10:00:00+08:00",
        "2026-03-02T11:00:00+08:00",
    )
    .await;
    let (record, entries, _) = f.ledger.record("r7").await.unwrap().unwrap();
    assert!(entries.is_empty());
    assert!(record
        .unrouted
        .unwrap()
        .contains("not in routing catalog 2026-01"));
    assert_eq!(
        f.ledger.unrouted_counts().await.unwrap(),
        vec![("approval".to_string(), 1)]
    );
});

scenario!(
    a_year_without_calendar_data_is_an_explicit_condition,
    |backend| {
        let mut f = Feed::new(backend, "yuanqu-2022").await;
        f.approval(
            "r8",
            FOOD,
            "2026-12-31T10:00:00+08:00",
            "2026-12-31T11:00:00+08:00",
        )
        .await;
        let e = f.entry("r8", "szs-scjg").await;
        assert_eq!(e.claim_due_at, None);
        assert!(e.deadline_problem.unwrap().contains("2027"));
    }
);

scenario!(
    the_monthly_report_matches_numbers_computed_by_hand,
    |backend| {
        // 垣曲 第二十一条: 每月通报审批信息、监管信息上传认领情况 — both sides, computed by hand.
        // A working day counts 24 working hours; weekends and holidays none.
        let mut f = Feed::new(backend, "yuanqu-2022").await;
        // March 2026, 食品经营许可 → szs-scjg; claim due = end of the next working day; the bureau's
        // push is due the working day after the decision.
        // a: decided 03-02 10:00, pushed 11:00 (1 h), claimed 15:00 → on time, 4 working hours.
        f.approval(
            "a",
            FOOD,
            "2026-03-02T10:00:00+08:00",
            "2026-03-02T11:00:00+08:00",
        )
        .await;
        f.claim("a", "szs-scjg", "claim", "2026-03-02T15:00:00+08:00")
            .await;
        // b: pushed Fri 03-06 18:00 (1 h), claimed Mon 03-09 10:00 → on time, 6 + 10 = 16 h.
        f.approval(
            "b",
            FOOD,
            "2026-03-06T17:00:00+08:00",
            "2026-03-06T18:00:00+08:00",
        )
        .await;
        f.claim("b", "szs-scjg", "claim", "2026-03-09T10:00:00+08:00")
            .await;
        // c: pushed Tue 03-10 12:00 (1 h), claimed Thu 03-12 12:00 → late (due 03-11), 48 h.
        f.approval(
            "c",
            FOOD,
            "2026-03-10T11:00:00+08:00",
            "2026-03-10T12:00:00+08:00",
        )
        .await;
        f.claim("c", "szs-scjg", "claim", "2026-03-12T12:00:00+08:00")
            .await;
        // d: decided Thu 03-12 08:00, pushed Mon 03-16 09:00: the push was due 03-13 → late,
        // 16 + 24 + 9 = 49 h; never claimed (due 03-17) → open and past its deadline.
        f.approval(
            "d",
            FOOD,
            "2026-03-12T08:00:00+08:00",
            "2026-03-16T09:00:00+08:00",
        )
        .await;
        // e: pushed 03-20 (1 h), returned → neither due nor open.
        f.approval(
            "e",
            FOOD,
            "2026-03-20T08:00:00+08:00",
            "2026-03-20T09:00:00+08:00",
        )
        .await;
        f.claim("e", "szs-scjg", "return", "2026-03-20T10:00:00+08:00")
            .await;
        // g: pushed Tue 03-31 10:00 (1 h), due 04-01 23:59:59: open but not due at the report
        // time, so it does not count against the department.
        f.approval(
            "g",
            FOOD,
            "2026-03-31T09:00:00+08:00",
            "2026-03-31T10:00:00+08:00",
        )
        .await;
        // f: pushed in April → not in the March report.
        f.approval(
            "f",
            FOOD,
            "2026-04-01T08:00:00+08:00",
            "2026-04-01T09:00:00+08:00",
        )
        .await;
        // s: supervision information from szs-scjg (its 市场监管 system's adapter): decided Thu
        // 03-05 09:00, pushed Mon 03-09 10:00 — due 03-06, late; 15 + 24 + 10 = 49 h. The bureau
        // claims it at 15:00: 5 h, on time.
        let s = json!({
            "specversion": "1.0", "id": "ev-s", "source": "/test", "type": "cn.shenguan.supervision.v1",
            "subject": "s", "time": "2026-03-09T10:00:00+08:00", "datacontenttype": "application/json",
            "data": {"record_id": "s", "kind": "supervision", "action": "行政处罚",
                     "source": {"adapter": "nx-scjg-supervision"}, "decided_at": "2026-03-05T09:00:00+08:00"}
        });
        f.send(RecordKind::Supervision, s).await;
        f.claim("s", "szs-xzsp", "claim", "2026-03-09T15:00:00+08:00")
            .await;

        let r = f.report("2026-03", "2026-04-01T12:00:00+08:00").await;
        // The push side: the bureau pushed 6 approvals (d late), szs-scjg 1 supervision (late).
        assert_eq!(r.pushes.len(), 2, "{:?}", r.pushes);
        let bureau = &r.pushes[1];
        assert_eq!(
            (
                bureau.pusher.as_str(),
                bureau.pusher_name.as_deref(),
                bureau.kind.as_str()
            ),
            ("szs-xzsp", Some("石嘴山市行政审批服务局"), "approval")
        );
        assert_eq!(
            (
                bureau.pushed,
                bureau.with_deadline,
                bureau.on_time,
                bureau.late
            ),
            (6, 6, Some(5), Some(1))
        );
        assert_eq!(bureau.on_time_rate, Some(0.83));
        // Push hours 1, 1, 1, 1, 1, 49: median 1, p90 the 6th of 6 (nearest rank).
        assert_eq!(
            (bureau.median_push_hours, bureau.p90_push_hours),
            (Some(1.0), Some(49.0))
        );
        let scjg_push = &r.pushes[0];
        assert_eq!(
            (
                scjg_push.pusher.as_str(),
                scjg_push.kind.as_str(),
                scjg_push.late
            ),
            ("szs-scjg", "supervision", Some(1))
        );
        assert_eq!(scjg_push.median_push_hours, Some(49.0));

        // The claim side.
        assert_eq!(r.claims.len(), 2);
        let l = &r.claims[0];
        assert_eq!(
            (
                l.department.as_str(),
                l.department_name.as_deref(),
                l.kind.as_str(),
                l.flow.as_str()
            ),
            (
                "szs-scjg",
                Some("石嘴山市市场监督管理局"),
                "approval",
                "claim"
            )
        );
        assert_eq!((l.pushed, l.claimed), (6, 3));
        assert_eq!((l.claimed_on_time, l.claimed_late), (Some(2), Some(1)));
        assert_eq!(
            (l.open, l.open_overdue),
            (2, Some(1)),
            "d and g open; only d past its deadline"
        );
        assert_eq!(l.returned, 1);
        assert_eq!(
            l.due,
            Some(4),
            "a, b, c claimed and d missed; g not due yet, e returned"
        );
        assert_eq!(l.on_time_rate, Some(0.5));
        assert_eq!(l.median_claim_hours, Some(16.0), "claim hours 4, 16, 48");
        assert_eq!(l.p90_claim_hours, Some(48.0));
        let bureau_claims = &r.claims[1];
        assert_eq!(
            (
                bureau_claims.department.as_str(),
                bureau_claims.kind.as_str(),
                bureau_claims.claimed_on_time,
                bureau_claims.median_claim_hours
            ),
            ("szs-xzsp", "supervision", Some(1), Some(5.0))
        );

        let csv = report::to_csv(&r);
        assert!(
            csv.starts_with("\u{FEFF}月份,方向,单位代码,单位名称,信息类别,流程,推送数"),
            "{csv}"
        );
        assert!(
            csv.contains("2026-03,推送,szs-xzsp,石嘴山市行政审批服务局,审批信息,推送,6,,5,1,,,,,83%,1.00,49.00,,6"),
            "{csv}"
        );
        assert!(
            csv.contains("2026-03,认领,szs-scjg,石嘴山市市场监督管理局,审批信息,认领,6,3,2,1,2,1,1,0,50%,16.00,48.00,,6"),
            "{csv}"
        );
        assert!(
            csv.contains("按时率＝按时认领÷已到期"),
            "the footnote says how: {csv}"
        );
        let table = report::to_table(&r);
        assert!(table.contains("| 部门 | 信息类别 | 流程 | 推送数 | 已认领 | 按时认领 | 逾期认领 | 未认领 | 逾期未认领 |"), "{table}");
        assert!(
            table.contains("石嘴山市市场监督管理局（szs-scjg）"),
            "{table}"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json["claims"][0]["claimed_on_time"], 2,
            "stable English keys in JSON"
        );
        assert_eq!(json["pushes"][1]["late"], 1);
    }
);

scenario!(a_rebuilt_ledger_equals_the_live_one, |backend| {
    let mut f = Feed::new(backend, "yuanqu-2022").await;
    f.approval(
        "a",
        FOOD,
        "2026-03-02T10:00:00+08:00",
        "2026-03-02T11:00:00+08:00",
    )
    .await;
    f.approval(
        "b",
        "000118002000",
        "2026-03-02T10:00:00+08:00",
        "2026-03-02T11:00:00+08:00",
    )
    .await;
    f.approval(
        "c",
        "999",
        "2026-03-02T10:00:00+08:00",
        "2026-03-02T11:00:00+08:00",
    )
    .await;
    f.claim("a", "szs-scjg", "claim", "2026-03-02T15:00:00+08:00")
        .await;
    f.claim("b", "szs-wjw", "return", "2026-03-02T15:00:00+08:00")
        .await;
    f.claim("c", "szs-zjj", "route", "2026-03-03T15:00:00+08:00")
        .await;
    f.claim("c", "szs-zjj", "deliver", "2026-03-03T15:01:00+08:00")
        .await;
    // The other flows: a forward, an inquiry deemed agreed, an inspection confirmed.
    f.forward("a", "szs-scjg", "nx-scjg", "2026-03-03T09:00:00+08:00")
        .await;
    f.notice(
        "q",
        "szs-xzsp",
        &["szs-wjw"],
        inquiry(Some(1)),
        "2026-03-02T11:00:00+08:00",
    )
    .await;
    assert_eq!(f.deem_lapsed("2026-03-04T09:00:00+08:00").await, 1);
    f.notice(
        "i",
        "szs-xzsp",
        &["szs-scjg"],
        joint_inspection("2026-03-06T09:00:00+08:00"),
        "2026-03-02T11:00:00+08:00",
    )
    .await;
    f.feedback(
        "i",
        "szs-scjg",
        "inspection_attendance",
        "2026-03-03T10:00:00+08:00",
        json!({"attendees": ["王某"]}),
    )
    .await;
    // Escalations are events too: the tracker raises b's and i's alerts, a claim made before
    // its record reached the ledger waits for it.
    f.approval(
        "late",
        FOOD,
        "2026-03-02T10:00:00+08:00",
        "2026-03-02T11:00:00+08:00",
    )
    .await;
    assert!(!f.levels_at("2026-03-05T09:00:00+08:00").await.is_empty());
    f.claim("early", "szs-scjg", "claim", "2026-03-05T10:00:00+08:00")
        .await;
    assert_eq!(f.ledger.waiting("early").await.unwrap(), 1);
    assert_eq!(
        f.ledger.waiting_counts().await.unwrap(),
        [("claim".to_string(), 1)],
        "the gauge of events waiting for their record counts the claim"
    );
    f.approval(
        "early",
        FOOD,
        "2026-03-05T09:00:00+08:00",
        "2026-03-05T09:30:00+08:00",
    )
    .await;
    assert_eq!(
        f.entry("early", "szs-scjg").await.state,
        EntryState::Claimed,
        "the claim that arrived first is applied when its record arrives"
    );
    assert_eq!(f.ledger.waiting("early").await.unwrap(), 0);
    assert!(f
        .ledger
        .waiting_counts()
        .await
        .unwrap()
        .iter()
        .all(|(_, n)| *n == 0));
    let live = common::ledger_snapshot(&f.url).await;
    assert!(live
        .iter()
        .any(|l| l.contains("escalated") || l.contains("overdue")));

    // Rebuilt from the topics in four orders — as it happened, each topic whole with the
    // claims first, the topics in reverse, the topics interleaved one message at a time —
    // in bursts as the projector applies them: the same ledger each time, and applying
    // everything again changes nothing.
    let mut by_topic: Vec<Vec<(Delivery, RecordKind)>> = Vec::new();
    for (d, kind) in &f.log {
        match by_topic.iter_mut().find(|t| t[0].0.topic == d.topic) {
            Some(t) => t.push((d.clone(), *kind)),
            None => by_topic.push(vec![(d.clone(), *kind)]),
        }
    }
    let claims_first: Vec<_> = {
        let mut topics = by_topic.clone();
        topics.sort_by_key(|t| t[0].1 != RecordKind::Claim);
        topics.concat()
    };
    let reversed: Vec<_> = by_topic.iter().rev().flatten().cloned().collect();
    let interleaved: Vec<_> = {
        let longest = by_topic.iter().map(Vec::len).max().unwrap_or(0);
        (0..longest)
            .flat_map(|i| by_topic.iter().filter_map(move |t| t.get(i).cloned()))
            .collect()
    };
    for (name, order) in [
        ("as it happened", f.log.clone()),
        ("claims first", claims_first),
        ("topics reversed", reversed),
        ("interleaved", interleaved),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (rebuilt, url) = backend.open(&dir).await;
        for round in 0..2 {
            for burst in order.chunks(5) {
                rebuilt
                    .apply_batch(burst.to_vec().into(), f.shared.clone(), false)
                    .await
                    .unwrap();
            }
            assert_eq!(
                common::ledger_snapshot(&url).await,
                live,
                "rebuilt {name}, round {round}"
            );
        }
    }
});

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_on_one_postgres_elect_one_tracker_and_publish_every_alert_exactly_once() {
    let url = common::postgres_database().await;
    let a = shenguan::ledger::store::open(&url).await.unwrap();
    let b = shenguan::ledger::store::open(&url).await.unwrap();
    let shared = shared("yuanqu-2022");
    // 40 approvals pushed on Monday 2026-03-02, fed to both instances as two gateways would
    // consume them: each message is applied once.
    for i in 0..40 {
        let d = approval_delivery(&format!("m{i}"), 0, i);
        let one = |d: Delivery| Batch::from(vec![(d, RecordKind::Approval)]);
        let (ra, rb) = tokio::join!(
            a.apply_batch(one(d.clone()), shared.clone(), true),
            b.apply_batch(one(d), shared.clone(), true)
        );
        let applied = ra
            .unwrap()
            .into_iter()
            .chain(rb.unwrap())
            .filter(|o| matches!(o, Outcome::Applied(c) if !c.entries.is_empty()))
            .count();
        assert_eq!(applied, 1, "message {i} applied by exactly one instance");
    }
    // Both trackers tick at the same instants; one holds the lease and raises, the other
    // stands by. The raised levels come back through the alert topic.
    let mut ids = Vec::new();
    let mut offset = 0;
    for now in [
        "2026-03-03T16:30:00+08:00",
        "2026-03-04T09:00:00+08:00",
        "2026-03-06T09:00:00+08:00",
    ] {
        let ttl = std::time::Duration::from_secs(60);
        let (la, lb) = tokio::join!(a.lease("tracker", "a", ttl), b.lease("tracker", "b", ttl));
        let (la, lb) = (la.unwrap(), lb.unwrap());
        assert!(la ^ lb, "exactly one tracker holds the lease");
        let leader = if la { &a } else { &b };
        let alerts = tracker::due_alerts(leader.as_ref(), &shared, t(now), &Default::default())
            .await
            .unwrap();
        for al in &alerts {
            let m = tracker::alert_message(&shared, al);
            let d = Delivery {
                topic: m.topic,
                partition: 0,
                offset,
                key: Some(m.key),
                payload: m.payload,
                timestamp_ms: 0,
                headers: Vec::new(),
            };
            offset += 1;
            let (_, _) = tokio::join!(
                a.apply_batch(
                    vec![(d.clone(), RecordKind::Alert)].into(),
                    shared.clone(),
                    true
                ),
                b.apply_batch(vec![(d, RecordKind::Alert)].into(), shared.clone(), true)
            );
        }
        ids.extend(alerts.into_iter().map(|al| al.id));
    }
    assert_eq!(
        ids.len(),
        120,
        "due soon, overdue and escalated for each of 40 entries"
    );
    let unique: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), 120, "no alert raised twice");
    // The claims that close them queue alerts both instances may publish.
    for i in 0..40 {
        let d = claim_delivery(&format!("m{i}"), i, "2026-03-07T09:00:00+08:00");
        a.apply_batch(vec![(d, RecordKind::Claim)].into(), shared.clone(), true)
            .await
            .unwrap();
    }
    // Both publish the outbox at once: every alert is claimed by exactly one of them.
    let lease = std::time::Duration::from_secs(30);
    let (x, y) = tokio::join!(
        a.claim_outbox("a", lease, 1000),
        b.claim_outbox("b", lease, 1000)
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(x.len() + y.len(), 40, "one closing alert per claimed entry");
    let xs: std::collections::HashSet<&String> = x.iter().map(|r| &r.0).collect();
    assert!(
        y.iter().all(|r| !xs.contains(&r.0)),
        "no alert claimed by both"
    );
    // Published and removed: nothing is claimed again.
    a.outbox_done(x.iter().map(|r| r.0.clone()).collect())
        .await
        .unwrap();
    b.outbox_done(y.iter().map(|r| r.0.clone()).collect())
        .await
        .unwrap();
    assert!(a.claim_outbox("a", lease, 1000).await.unwrap().is_empty());
}

/// An approval of 食品经营许可 with its licence's numbers, as the bus delivers it.
fn licensed_approval(id: &str, license_no: &str, version: &str, offset: i64) -> Delivery {
    let event = json!({
        "specversion": "1.0", "id": format!("ev-{id}-{license_no}"), "source": "/test", "type": "cn.shenguan.approval.v1",
        "subject": id, "time": "2026-03-02T11:00:00+08:00", "datacontenttype": "application/json",
        "data": {"record_id": id, "kind": "approval", "item": {"code": FOOD, "name": "x"},
                 "source": {"adapter": "nx-zwfw-approval", "updated_at": version},
                 "decided_at": "2026-03-02T10:00:00+08:00",
                 "license": {"license_no": license_no, "document_no": format!("石审服食经许字〔2026〕第{offset}号")}}
    });
    Delivery {
        topic: "shenguan.approval.v1".into(),
        partition: 0,
        offset,
        key: None,
        payload: serde_json::to_vec(&event).unwrap(),
        timestamp_ms: 0,
        headers: Vec::new(),
    }
}

/// A request of 市场监管局 to revoke the licence `license_no`.
fn revocation(id: &str, license_no: &str) -> Value {
    json!({
        "specversion": "1.0", "id": format!("ev-{id}"), "source": "/test", "type": "cn.shenguan.supervision.v1", "subject": id,
        "time": "2026-03-10T09:00:00+08:00", "datacontenttype": "application/json",
        "data": {"record_id": id, "kind": "supervision", "action": "撤销许可",
                 "source": {"adapter": "nx-scjg-supervision"},
                 "decision_date": "2026-03-09", "decided_at": "2026-03-09T16:00:00+08:00",
                 "affected_license": {"license_no": license_no},
                 "request": {"type": "撤销", "reason": "以欺骗手段取得许可", "evidence": [{"name": "现场检查笔录"}]}}
    })
}

/// On SQLite, how many records the link index holds under `value` of the link column `column`
/// (PostgreSQL keeps no index of its own: `None`).
async fn link_index_count(f: &Feed, backend: Backend, column: &str, value: &str) -> Option<i64> {
    match backend {
        Backend::Sqlite => {
            let sql = format!(
                "SELECT COUNT(*) FROM ledger_link_keys WHERE ledger_link_keys MATCH '{}'",
                shenguan::ledger::sql::link_term(column, value)
            );
            Some(common::ledger_scalar(&f.url, &sql).await)
        }
        Backend::Postgres => None,
    }
}

/// How many records SQLite's id index holds under the term of `record_id`.
async fn id_index_count(f: &Feed, record_id: &str) -> i64 {
    let sql = format!(
        "SELECT COUNT(*) FROM ledger_id_keys WHERE ledger_id_keys MATCH '{}'",
        shenguan::ledger::sql::id_term(record_id)
    );
    common::ledger_scalar(&f.url, &sql).await
}

/// Applies `n` licensed approvals, `ap0`/`JY0` … , in bursts of 2,000.
async fn licensed_approvals(f: &Feed, n: i64) {
    for start in (0..n).step_by(2000) {
        let burst: Vec<(Delivery, RecordKind)> = (start..(start + 2000).min(n))
            .map(|i| {
                (
                    licensed_approval(&format!("ap{i}"), &format!("JY{i}"), "1", i),
                    RecordKind::Approval,
                )
            })
            .collect();
        f.ledger
            .apply_batch(burst.into(), f.shared.clone(), true)
            .await
            .unwrap();
    }
}

scenario!(
    links_are_found_through_the_key_index_which_follows_a_corrected_and_a_purged_licence,
    |backend| {
        let mut f = Feed::new(backend, "yuanqu-2022").await;
        let n = 5_000;
        licensed_approvals(&f, n).await;
        let indexed = |v: i64| match backend {
            Backend::Sqlite => Some(v),
            Backend::Postgres => None,
        };
        for (column, value) in [
            ("link_license_no", "JY0".to_string()),
            ("link_license_no", format!("JY{}", n - 1)),
            (
                "link_document_no",
                "石审服食经许字〔2026〕第17号".to_string(),
            ),
        ] {
            assert_eq!(
                link_index_count(&f, backend, column, &value).await,
                indexed(1),
                "{value}"
            );
        }
        // The same value under another column is another key.
        assert_eq!(
            link_index_count(&f, backend, "link_uscc", "JY0").await,
            indexed(0)
        );
        // Retention purges a record: its keys go with it.
        let last = format!("ap{}", n - 1);
        let at = t("2026-04-01T00:00:00+08:00");
        let m = tracker::purge_message(&f.shared, &last, at, at);
        f.send(
            RecordKind::Claim,
            serde_json::from_slice(&m.payload).unwrap(),
        )
        .await;
        assert!(f.ledger.record(&last).await.unwrap().is_none());
        assert_eq!(
            link_index_count(&f, backend, "link_license_no", &format!("JY{}", n - 1)).await,
            indexed(0),
            "the purged record's keys went with it"
        );
        for (sv, license, approval) in [("sv0", "JY0", "ap0"), ("sv7", "JY7", "ap7")] {
            f.send(RecordKind::Supervision, revocation(sv, license))
                .await;
            let (record, _, _) = f.ledger.record(sv).await.unwrap().unwrap();
            assert_eq!(record.linked_record_id.as_deref(), Some(approval), "{sv}");
            let (_, _, history) = f.ledger.record(approval).await.unwrap().unwrap();
            assert!(
                history
                    .iter()
                    .any(|h| h.action == "supervision" && h.detail["supervision_record_id"] == sv),
                "{approval} shows {sv}"
            );
        }
        // A revocation of the purged licence links to nothing.
        f.send(
            RecordKind::Supervision,
            revocation("sv-gone", &format!("JY{}", n - 1)),
        )
        .await;
        let (record, _, _) = f.ledger.record("sv-gone").await.unwrap().unwrap();
        assert_eq!(record.linked_record_id, None);
        // ap3's licence number is corrected: the index takes the new number for the old (no
        // supervision names JY3, whose keys would be indexed too).
        f.apply(
            licensed_approval("ap3", "JY-FIXED", "2", n + 1),
            RecordKind::Approval,
        )
        .await;
        assert_eq!(
            link_index_count(&f, backend, "link_license_no", "JY3").await,
            indexed(0)
        );
        assert_eq!(
            link_index_count(&f, backend, "link_license_no", "JY-FIXED").await,
            indexed(1)
        );
        f.send(RecordKind::Supervision, revocation("sv3", "JY3"))
            .await;
        let (record, _, _) = f.ledger.record("sv3").await.unwrap().unwrap();
        assert_eq!(record.linked_record_id, None, "JY3 names no licence now");
        f.send(RecordKind::Supervision, revocation("sv-fixed", "JY-FIXED"))
            .await;
        let (record, _, _) = f.ledger.record("sv-fixed").await.unwrap().unwrap();
        assert_eq!(record.linked_record_id.as_deref(), Some("ap3"));
    }
);

/// Runs `sql` (several statements) on the ledger at `url`.
async fn ledger_script(url: &str, sql: &str) {
    if let Some(path) = url.strip_prefix("sqlite:") {
        let conn = rusqlite::Connection::open(path.trim_start_matches("//")).unwrap();
        conn.execute_batch(sql).unwrap();
    } else {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client.batch_execute(sql).await.unwrap();
    }
}

scenario!(
    a_ledger_of_the_earlier_id_and_link_indexes_is_migrated_in_place,
    |backend| {
        // The earlier layout, as that version left it: the records' change numbers and, on
        // SQLite, their keys in a sorted table (PostgreSQL had the tables, empty), their ids
        // in a `UNIQUE` index and the deadlines' index keyed by record id after `due_at`.
        let f = Feed::new(backend, "yuanqu-2022").await;
        licensed_approvals(&f, 3).await;
        let far = chrono::DateTime::parse_from_rfc3339("2100-01-01T00:00:00+08:00").unwrap();
        let due = f.ledger.entries_due_before(far).await.unwrap();
        assert!(!due.is_empty(), "the approvals have deadlines");
        let earlier = match backend {
            Backend::Sqlite => {
                "DROP INDEX entries_due;
                 CREATE INDEX entries_due ON ledger_entries (due_at, record_id, department, kind, policy, due_rule, pushed_at, calendar_version, alert_level)
                     WHERE due_at IS NOT NULL AND alert_level < 3;
                 DROP TABLE ledger_id_keys;
                 CREATE TABLE ledger_ids_earlier (seq INTEGER PRIMARY KEY, record_id TEXT NOT NULL UNIQUE);
                 INSERT INTO ledger_ids_earlier SELECT seq, record_id FROM ledger_ids;
                 DROP TABLE ledger_ids;
                 ALTER TABLE ledger_ids_earlier RENAME TO ledger_ids;
                 DROP TABLE ledger_link_keys;
                 ALTER TABLE ledger_records ADD COLUMN changed INTEGER NOT NULL DEFAULT 1;
                 CREATE INDEX records_changed ON ledger_records (changed);
                 CREATE TABLE ledger_links (link TEXT NOT NULL, value TEXT NOT NULL, seq INTEGER NOT NULL,
                     PRIMARY KEY (link, value, seq)) WITHOUT ROWID;
                 CREATE TABLE ledger_links_through (changed INTEGER NOT NULL);
                 INSERT INTO ledger_links SELECT 'link_license_no', link_license_no, seq FROM ledger_records;"
            }
            Backend::Postgres => {
                "ALTER TABLE ledger_records ADD COLUMN changed BIGINT NOT NULL DEFAULT 1;
                 CREATE TABLE ledger_links (link TEXT NOT NULL, value TEXT NOT NULL, seq BIGINT NOT NULL,
                     PRIMARY KEY (link, value, seq));
                 CREATE TABLE ledger_links_through (changed BIGINT NOT NULL);"
            }
        };
        ledger_script(&f.url, earlier).await;
        let positions = f.ledger.positions().await.unwrap();
        // Opened again: brought up to date, not rebuilt.
        let ledger = shenguan::ledger::store::open(&f.url).await.unwrap();
        assert_eq!(ledger.positions().await.unwrap(), positions, "not rebuilt");
        let url = f.url.clone();
        let count = |sql: &'static str| common::ledger_scalar(&url, sql);
        assert_eq!(count("SELECT COUNT(*) FROM ledger_records").await, 3);
        let (tables, column) = match backend {
            Backend::Sqlite => (
                "SELECT COUNT(*) FROM sqlite_master WHERE name IN ('ledger_links', 'ledger_links_through', 'records_changed')",
                "SELECT COUNT(*) FROM pragma_table_info('ledger_records') WHERE name = 'changed'",
            ),
            Backend::Postgres => (
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name IN ('ledger_links', 'ledger_links_through')",
                "SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = 'ledger_records' AND column_name = 'changed'",
            ),
        };
        assert_eq!(count(tables).await, 0, "the earlier link tables are gone");
        assert_eq!(count(column).await, 0, "the change numbers are gone");
        let mut f = Feed { ledger, ..f };
        for i in 0..3 {
            let expected = match backend {
                Backend::Sqlite => Some(1),
                Backend::Postgres => None,
            };
            assert_eq!(
                link_index_count(&f, backend, "link_license_no", &format!("JY{i}")).await,
                expected
            );
        }
        f.send(RecordKind::Supervision, revocation("sv1", "JY1"))
            .await;
        let (record, _, _) = f.ledger.record("sv1").await.unwrap().unwrap();
        assert_eq!(record.linked_record_id.as_deref(), Some("ap1"));
        // A record written after the migration is indexed with the others.
        f.apply(
            licensed_approval("ap9", "JY9", "1", 9),
            RecordKind::Approval,
        )
        .await;
        f.send(RecordKind::Supervision, revocation("sv9", "JY9"))
            .await;
        let (record, _, _) = f.ledger.record("sv9").await.unwrap().unwrap();
        assert_eq!(record.linked_record_id.as_deref(), Some("ap9"));
        if backend == Backend::Sqlite {
            // The deadlines' index built again, by record number after `due_at`, and read by
            // the tracker's scan as before.
            assert_eq!(
                count("SELECT COUNT(*) FROM pragma_index_info('entries_due') WHERE seqno = 1 AND name = 'seq'").await,
                1
            );
            assert_eq!(
                count("SELECT COUNT(*) FROM sqlite_master WHERE name = 'entries_due'").await,
                1
            );
        }
        let mut again = f.ledger.entries_due_before(far).await.unwrap();
        again.retain(|e| due.iter().any(|d| d.record_id == e.record_id));
        assert_eq!(again.len(), due.len(), "the same entries are due");
        if backend == Backend::Sqlite {
            // The ids in the full-text index, the `UNIQUE` one gone.
            assert_eq!(
                count("SELECT COUNT(*) FROM pragma_index_list('ledger_ids')").await,
                0
            );
            for id in ["ap0", "ap1", "ap2", "sv1", "ap9", "sv9"] {
                assert_eq!(id_index_count(&f, id).await, 1, "{id} indexed once");
            }
        }
        // A record of before the migration, written again, keeps its number.
        f.apply(
            licensed_approval("ap1", "JY1-2", "2", 10),
            RecordKind::Approval,
        )
        .await;
        assert_eq!(
            count("SELECT COUNT(*) FROM ledger_ids WHERE record_id = 'ap1'").await,
            1
        );
        f.send(RecordKind::Supervision, revocation("sv12", "JY1-2"))
            .await;
        let (record, _, _) = f.ledger.record("sv12").await.unwrap().unwrap();
        assert_eq!(record.linked_record_id.as_deref(), Some("ap1"));
    }
);

scenario!(
    a_record_written_through_two_ledgers_on_one_database_keeps_one_number,
    |backend| {
        // A second process on the same database, opened before the record exists: on SQLite
        // its filters of the numbered ids do not hold it until its next write reads it.
        let mut f = Feed::new(backend, "yuanqu-2022").await;
        let other = shenguan::ledger::store::open(&f.url).await.unwrap();
        f.apply(
            licensed_approval("ap1", "JY1", "1", 0),
            RecordKind::Approval,
        )
        .await;
        other
            .apply_batch(
                vec![(
                    licensed_approval("ap1", "JY1-2", "2", 1),
                    RecordKind::Approval,
                )]
                .into(),
                f.shared.clone(),
                true,
            )
            .await
            .unwrap();
        assert_eq!(
            common::ledger_scalar(
                &f.url,
                "SELECT COUNT(*) FROM ledger_ids WHERE record_id = 'ap1'"
            )
            .await,
            1
        );
        // The correction is the record's, found by its new licence number.
        f.send(RecordKind::Supervision, revocation("sv1", "JY1-2"))
            .await;
        let (record, _, _) = f.ledger.record("sv1").await.unwrap().unwrap();
        assert_eq!(record.linked_record_id.as_deref(), Some("ap1"));
        let (_, _, history) = f.ledger.record("ap1").await.unwrap().unwrap();
        assert!(history.iter().any(|h| h.action == "supervision"));
    }
);

scenario!(
    a_revocation_request_is_linked_to_its_licence_and_needs_a_disposition_in_time,
    |backend| {
        let mut f = Feed::new(backend, "yuanqu-2022").await;
        // The licence: 食品经营许可 JY26402000000011 for 91640200MA76C3K57X.
        let approval = json!({
            "specversion": "1.0", "id": "ev-ap1", "source": "/test", "type": "cn.shenguan.approval.v1", "subject": "ap1",
            "time": "2026-03-02T11:00:00+08:00", "datacontenttype": "application/json",
            "data": {"record_id": "ap1", "kind": "approval", "source": {"adapter": "nx-zwfw-approval"},
                     "item": {"code": FOOD, "name": "食品经营许可"}, "decided_at": "2026-03-02T10:00:00+08:00",
                     "counterpart": {"uscc": "91640200MA76C3K57X"},
                     "license": {"license_no": "JY26402000000011", "document_no": "石审服食经许字〔2026〕第0001号"}}
        });
        f.send(RecordKind::Approval, approval).await;
        // 市场监管局 asks the bureau to revoke it (撤销许可), with evidence, through its own system.
        let request = json!({
            "specversion": "1.0", "id": "ev-sv1", "source": "/test", "type": "cn.shenguan.supervision.v1", "subject": "sv1",
            "time": "2026-03-10T09:00:00+08:00", "datacontenttype": "application/json",
            "data": {"record_id": "sv1", "kind": "supervision", "action": "撤销许可",
                     "source": {"adapter": "nx-scjg-supervision"},
                     "decision_date": "2026-03-09", "decided_at": "2026-03-09T16:00:00+08:00",
                     "affected_license": {"license_no": "JY26402000000011"},
                     "request": {"type": "撤销", "reason": "以欺骗手段取得许可", "evidence": [{"name": "现场检查笔录"}]}}
        });
        f.send(RecordKind::Supervision, request).await;
        let (sv, entries, history) = f.ledger.record("sv1").await.unwrap().unwrap();
        assert_eq!(sv.linked_record_id.as_deref(), Some("ap1"));
        assert_eq!(sv.source_department.as_deref(), Some("szs-scjg"));
        assert!(history.iter().any(|h| h.action == "linked"));
        let (_, _, ap_history) = f.ledger.record("ap1").await.unwrap().unwrap();
        assert!(ap_history
            .iter()
            .any(|h| h.action == "supervision" && h.detail["supervision_record_id"] == "sv1"));
        // It goes to the bureau, which claims within 1 working day and decides within 20 working
        // days counted from its claim (the disposition's deadline is set when it claims).
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].department, "szs-xzsp");
        assert_eq!(entries[0].claim_rule.as_deref(), Some("claim_supervision"));
        assert_eq!(
            entries[0].claim_due_at.unwrap().to_rfc3339(),
            "2026-03-11T23:59:59+08:00"
        );
        assert_eq!(
            entries[0].feedback_rule.as_deref(),
            Some("disposition_feedback")
        );
        assert_eq!(entries[0].feedback_due_at, None, "not claimed yet");
        f.claim("sv1", "szs-xzsp", "claim", "2026-03-12T09:00:00+08:00")
            .await;
        // 20 working days after Thu 03-12: 03-13 … 03-31 (13), 04-01 … 04-03 (16), 清明 04-04 …
        // 04-06 off, 04-07 … 04-10 (20).
        assert_eq!(
            f.entry("sv1", "szs-xzsp")
                .await
                .feedback_due_at
                .unwrap()
                .to_rfc3339(),
            "2026-04-10T23:59:59+08:00"
        );
        // The disposition comes late: the entry closes and the breach is counted.
        let feedback = json!({
            "specversion": "1.0", "id": "ev-fb1", "source": "/test", "type": "cn.shenguan.feedback.v1", "subject": "sv1",
            "time": "2026-04-13T10:00:00+08:00", "datacontenttype": "application/json",
            "data": {"record_id": "sv1", "department": "szs-xzsp", "feedback_type": "disposition",
                     "disposition": "撤销许可", "document_no": "石审服撤字〔2026〕2号",
                     "content": "撤销食品经营许可", "at": "2026-04-13T10:00:00+08:00"}
        });
        let changes = f.send(RecordKind::Feedback, feedback).await;
        assert_eq!(
            changes.breaches,
            vec![(
                "szs-xzsp".to_string(),
                RecordKind::Supervision,
                "disposition_feedback".to_string()
            )]
        );
        let e = f.entry("sv1", "szs-xzsp").await;
        assert_eq!(e.state, EntryState::Closed);
        // 垣曲 第二十三条末段 同时推送至监管部门: the decision reaches szs-scjg, which asked, as a
        // record routed to it, due by claim_decision (1 working day).
        let d = f.entry("sv1", "szs-scjg").await;
        assert_eq!(d.state, EntryState::Pushed);
        assert_eq!(d.claim_rule.as_deref(), Some("claim_decision"));
        assert_eq!(
            d.claim_due_at.unwrap().to_rfc3339(),
            "2026-04-14T23:59:59+08:00"
        );
        assert!(d.note.unwrap().contains("撤销许可"));
        let page = f
            .ledger
            .inbox_page(
                "szs-scjg",
                &shenguan::ledger::store::InboxQuery {
                    limit: 10,
                    ..Default::default()
                },
                t("2026-04-13T11:00:00+08:00"),
            )
            .await
            .unwrap();
        assert!(
            page.rows.iter().any(|(e, _)| e.record_id == "sv1"),
            "in the requester's inbox"
        );
        let (_, _, history) = f.ledger.record("sv1").await.unwrap().unwrap();
        let delivered = history
            .iter()
            .find(|h| h.action == "decision_delivered")
            .unwrap();
        assert_eq!(delivered.department.as_deref(), Some("szs-scjg"));
        assert_eq!(delivered.detail["document_no"], "石审服撤字〔2026〕2号");
        f.claim("sv1", "szs-scjg", "claim", "2026-04-14T09:00:00+08:00")
            .await;
        let r = f.report("2026-04", "2026-04-20T00:00:00+08:00").await;
        let line = r.claims.iter().find(|l| l.flow == "decision").unwrap();
        assert_eq!(
            (line.department.as_str(), line.claimed_on_time),
            ("szs-scjg", Some(1))
        );
    }
);

/// The outbox alerts' (department, level) pairs.
async fn outbox_levels(f: &Feed) -> Vec<(String, String)> {
    f.alerts()
        .await
        .iter()
        .map(|v| {
            (
                v["department"].as_str().unwrap_or("").to_string(),
                v["level"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn inquiry(days: Option<u32>) -> Value {
    let mut v = json!({"notice_type": "业务函询", "inquiry": {"subject_type": "行政许可事项办理标准", "question": "食品经营许可现场核查标准是否按2026版执行？"}});
    if let Some(d) = days {
        v["inquiry"]["reply_within_working_days"] = json!(d);
    }
    v
}

scenario!(
    an_inquiry_left_unanswered_over_national_day_is_deemed_agreed_under_yuanqu,
    |backend| {
        let mut f = Feed::new(backend, "yuanqu-2022").await;
        // Sent on Tuesday 2026-09-29; 5 working days: 09-30, 10-08, 10-09, 10-10 (补班), 10-12.
        f.notice(
            "q1",
            "szs-xzsp",
            &["szs-scjg"],
            inquiry(None),
            "2026-09-29T10:00:00+08:00",
        )
        .await;
        let e = f.entry("q1", "szs-scjg").await;
        assert_eq!(e.claim_rule.as_deref(), Some("reply_inquiry"));
        assert_eq!(
            e.claim_due_at.unwrap().to_rfc3339(),
            "2026-10-12T23:59:59+08:00"
        );
        let (record, _, _) = f.ledger.record("q1").await.unwrap().unwrap();
        assert_eq!(record.source_department.as_deref(), Some("szs-xzsp"));
        assert!(
            record.push_rule.is_none(),
            "an inquiry has no push deadline"
        );

        // During the holiday and on the last day nothing lapses.
        assert_eq!(f.deem_lapsed("2026-10-05T12:00:00+08:00").await, 0);
        assert_eq!(f.deem_lapsed("2026-10-12T23:00:00+08:00").await, 0);
        assert_eq!(
            f.levels_at("2026-10-13T08:00:00+08:00").await,
            vec![("q1".into(), "overdue".into())]
        );
        // The next morning silence counts as agreement, recorded once.
        assert_eq!(f.deem_lapsed("2026-10-13T08:00:30+08:00").await, 1);
        let e = f.entry("q1", "szs-scjg").await;
        assert_eq!(e.state, EntryState::Closed);
        assert_eq!(e.outcome.as_deref(), Some("deemed_agreed"));
        assert_eq!(
            e.closed_at.unwrap().to_rfc3339(),
            "2026-10-12T23:59:59+08:00"
        );
        assert!(e.claimed_at.is_none(), "silence is not an answer");
        assert_eq!(f.deem_lapsed("2026-10-14T08:00:00+08:00").await, 0);
        let (_, _, history) = f.ledger.record("q1").await.unwrap().unwrap();
        assert_eq!(
            history
                .iter()
                .filter(|h| h.action == "deemed_agreed")
                .count(),
            1
        );
        // Both sides are told.
        let levels = outbox_levels(&f).await;
        for side in ["szs-scjg", "szs-xzsp"] {
            assert!(
                levels.contains(&(side.to_string(), "deemed_agreed".to_string())),
                "{levels:?}"
            );
        }
        // A reply after the lapse changes nothing.
        let changes = f
            .feedback(
                "q1",
                "szs-scjg",
                "reply",
                "2026-10-14T09:00:00+08:00",
                json!({"content": "同意"}),
            )
            .await;
        assert_eq!(changes.history[0].action, "ignored");
        assert!(changes.entries.is_empty());
        // The report shows it next to the claims.
        let r = f.report("2026-09", "2026-10-20T00:00:00+08:00").await;
        let line = r
            .claims
            .iter()
            .find(|l| l.flow == "inquiry")
            .expect("an inquiry line");
        assert_eq!(
            (
                line.department.as_str(),
                line.pushed,
                line.deemed_agreed,
                line.open_overdue,
                line.open
            ),
            ("szs-scjg", 1, 1, Some(1), 0)
        );
        assert!(report::to_csv(&r).contains(",函询答复,"));
    }
);

scenario!(
    under_jining_silence_is_not_agreement_and_a_letter_sets_its_own_period,
    |backend| {
        let mut f = Feed::new(backend, "jining-2022").await;
        f.notice(
            "q2",
            "szs-scjg",
            &["szs-xzsp"],
            inquiry(Some(2)),
            "2026-09-29T10:00:00+08:00",
        )
        .await;
        let e = f.entry("q2", "szs-xzsp").await;
        assert_eq!(
            e.claim_due_at.unwrap().to_rfc3339(),
            "2026-10-08T23:59:59+08:00",
            "2 working days from the letter: 09-30, 10-08"
        );
        assert_eq!(f.deem_lapsed("2026-10-20T08:00:00+08:00").await, 0);
        assert_eq!(f.entry("q2", "szs-xzsp").await.state, EntryState::Pushed);
        // A reply, late: recorded as replied, counted as a breach.
        let changes = f
            .feedback(
                "q2",
                "szs-xzsp",
                "reply",
                "2026-10-09T10:00:00+08:00",
                json!({"content": "按2026版执行", "agreed": true}),
            )
            .await;
        assert_eq!(changes.breaches.len(), 1);
        let e = f.entry("q2", "szs-xzsp").await;
        assert_eq!(
            (e.state, e.outcome.as_deref()),
            (EntryState::Closed, Some("replied"))
        );
        assert!(e.claimed_at.is_some());
    }
);

fn joint_inspection(at: &str) -> Value {
    json!({"notice_type": "踏勘通知", "inspection": {"mode": "联合踏勘评审", "scheduled_at": at,
        "location": "石嘴山市大武口区某食品厂", "matter": "食品生产许可 现场核查"}})
}

scenario!(
    a_joint_inspection_is_notified_ahead_confirmed_and_signed_off,
    |backend| {
        let mut f = Feed::new(backend, "yuanqu-2022").await;
        // Inspection on Friday 2026-10-09: the notice is due by the end of Thursday 10-08.
        f.notice(
            "i1",
            "szs-xzsp",
            &["szs-scjg", "szs-wjw"],
            joint_inspection("2026-10-09T09:00:00+08:00"),
            "2026-10-08T10:00:00+08:00",
        )
        .await;
        let (record, _, _) = f.ledger.record("i1").await.unwrap().unwrap();
        assert_eq!(record.push_rule.as_deref(), Some("inspection_notice"));
        assert_eq!(
            record.push_due_at.unwrap().to_rfc3339(),
            "2026-10-08T23:59:59+08:00"
        );
        assert!(!record.push_late);
        let e = f.entry("i1", "szs-scjg").await;
        assert_eq!(e.claim_rule.as_deref(), Some("confirm_inspection"));
        assert_eq!(
            e.claim_due_at.unwrap().to_rfc3339(),
            "2026-10-09T09:00:00+08:00"
        );
        // Sign-off: 3 working days from the inspection: 10-10 (补班), 10-12, 10-13.
        assert_eq!(
            e.feedback_due_at.unwrap().to_rfc3339(),
            "2026-10-13T23:59:59+08:00"
        );
        f.feedback(
            "i1",
            "szs-scjg",
            "inspection_attendance",
            "2026-10-08T15:00:00+08:00",
            json!({"attendees": ["王某 食品生产监管科科长"]}),
        )
        .await;
        let e = f.entry("i1", "szs-scjg").await;
        assert_eq!(
            (e.state, e.outcome.as_deref()),
            (EntryState::Claimed, Some("attending"))
        );
        // szs-wjw never confirms: the missing confirmation is visible when the inspection starts.
        let levels = f.levels_at("2026-10-09T09:30:00+08:00").await;
        assert_eq!(levels, vec![("i1".into(), "overdue".into())]);
        let open = f
            .ledger
            .obligations("confirm_inspection", None, 100)
            .await
            .unwrap();
        let waiting: Vec<_> = open
            .iter()
            .filter(|(e, _)| e.state.is_unclaimed())
            .map(|(e, _)| e.department.as_str())
            .collect();
        assert_eq!(waiting, ["szs-wjw"]);
        // szs-scjg signs off late: alerted overdue first, then closed. szs-wjw's missing
        // confirmation is escalated 2 working days after the inspection (10-10, 10-12).
        let mut levels = f.levels_at("2026-10-14T09:00:00+08:00").await;
        levels.sort();
        assert_eq!(
            levels,
            vec![
                ("i1".into(), "escalated".into()),
                ("i1".into(), "overdue".into())
            ]
        );
        let scjg_entry = f.entry("i1", "szs-scjg").await;
        assert_eq!(scjg_entry.alert_level, AlertLevel::Overdue);
        f.feedback(
            "i1",
            "szs-scjg",
            "inspection_result",
            "2026-10-14T10:00:00+08:00",
            json!({"content": "现场核查符合要求，已签字确认"}),
        )
        .await;
        let e = f.entry("i1", "szs-scjg").await;
        assert_eq!(
            (e.state, e.outcome.as_deref()),
            (EntryState::Closed, Some("signed_off"))
        );
        let r = f.report("2026-10", "2026-10-20T00:00:00+08:00").await;
        let scjg = r
            .claims
            .iter()
            .find(|l| l.department == "szs-scjg")
            .unwrap();
        assert_eq!(
            (
                scjg.flow.as_str(),
                scjg.claimed_on_time,
                scjg.signed_off,
                scjg.follow_up_overdue
            ),
            ("inspection", Some(1), 1, 1)
        );
        let wjw = r.claims.iter().find(|l| l.department == "szs-wjw").unwrap();
        assert_eq!((wjw.open, wjw.open_overdue), (1, Some(1)));

        // A notice sent on the morning of the inspection is late.
        f.notice(
            "i2",
            "szs-xzsp",
            &["szs-scjg"],
            joint_inspection("2026-10-16T09:00:00+08:00"),
            "2026-10-16T08:00:00+08:00",
        )
        .await;
        let (record, _, _) = f.ledger.record("i2").await.unwrap().unwrap();
        assert!(record.push_late);
        assert!(outbox_levels(&f)
            .await
            .contains(&("szs-xzsp".to_string(), "late_push".to_string())));
    }
);

scenario!(
    a_commitment_is_verified_by_its_due_date_and_listed_while_open,
    |backend| {
        let mut f = Feed::new(backend, "yuanqu-2022").await;
        let event = json!({
            "specversion": "1.0", "id": "ev-c1", "source": "/test", "type": "cn.shenguan.approval.v1",
            "subject": "c1", "time": "2026-09-01T10:00:00+08:00", "datacontenttype": "application/json",
            "data": {
                "record_id": "c1", "kind": "approval",
                "source": {"system": "test", "adapter": "nx-zwfw-approval", "business_key": "c1", "received_at": "2026-09-01T10:00:00+08:00"},
                "item": {"code": FOOD, "name": "食品经营许可"},
                "decided_at": "2026-09-01T09:00:00+08:00",
                "counterpart": {"uscc": "91640200MA76C3K57X"},
                "license": {"license_no": "JY26402000000099"},
                "commitment": {"is_commitment": true, "items": ["3个月内取得排污登记"], "period_end": "2026-09-30"},
            }
        });
        f.send(RecordKind::Approval, event).await;
        let e = f.entry("c1", "szs-scjg").await;
        assert_eq!(e.feedback_rule.as_deref(), Some("verify_commitment"));
        // 10 working days after 2026-09-30: 10-08, 09, 10 (补班), 12, 13, 14, 15, 16, 19, 20.
        assert_eq!(
            e.feedback_due_at.unwrap().to_rfc3339(),
            "2026-10-20T23:59:59+08:00"
        );
        let open = f
            .ledger
            .obligations("verify_commitment", Some("szs-scjg"), 100)
            .await
            .unwrap();
        assert_eq!(open.len(), 1);
        assert!(f
            .ledger
            .obligations("verify_commitment", Some("szs-wjw"), 100)
            .await
            .unwrap()
            .is_empty());
        f.claim("c1", "szs-scjg", "claim", "2026-09-01T15:00:00+08:00")
            .await;
        // The verification is tracked after the claim: due soon on its last afternoon.
        assert!(f.levels_at("2026-10-19T12:00:00+08:00").await.is_empty());
        assert_eq!(
            f.levels_at("2026-10-20T17:00:00+08:00").await,
            vec![("c1".into(), "due_soon".into())]
        );
        let changes = f
            .feedback(
                "c1",
                "szs-scjg",
                "commitment_verified",
                "2026-10-20T18:00:00+08:00",
                json!({"verification": "unfulfilled", "content": "未取得排污登记"}),
            )
            .await;
        assert!(changes.breaches.is_empty(), "verified in time");
        let e = f.entry("c1", "szs-scjg").await;
        assert_eq!(
            (e.state, e.outcome.as_deref()),
            (EntryState::Closed, Some("commitment_unfulfilled"))
        );
        assert!(f
            .ledger
            .obligations("verify_commitment", None, 100)
            .await
            .unwrap()
            .is_empty());
        // The failure goes back to the bureau, linked to the approval, within 10 working days
        // after the period (垣曲 第二十四条第三款) ...
        let failure = json!({
            "specversion": "1.0", "id": "ev-cf1", "source": "/test", "type": "cn.shenguan.supervision.v1", "subject": "cf1",
            "time": "2026-10-21T09:00:00+08:00", "datacontenttype": "application/json",
            "data": {"record_id": "cf1", "kind": "supervision", "action": "告知承诺未履行",
                     "source": {"adapter": "nx-scjg-supervision"},
                     "affected_license": {"license_no": "JY26402000000099"},
                     "commitment_check": {"approval_record_id": "c1", "period_end": "2026-09-30", "unmet_items": ["3个月内取得排污登记"]}}
        });
        f.send(RecordKind::Supervision, failure).await;
        let (cf, cf_entries, _) = f.ledger.record("cf1").await.unwrap().unwrap();
        assert_eq!(cf.linked_record_id.as_deref(), Some("c1"));
        assert_eq!(cf.push_rule.as_deref(), Some("push_commitment_failure"));
        assert_eq!(
            cf.push_due_at.unwrap().to_rfc3339(),
            "2026-10-20T23:59:59+08:00"
        );
        assert!(cf.push_late, "pushed the day after its deadline");
        assert_eq!(cf_entries[0].department, "szs-xzsp");
        assert_eq!(
            cf_entries[0].feedback_rule.as_deref(),
            Some("disposition_feedback")
        );
        // ... and the bureau's disposition flows back, visible to the department that sent it.
        f.claim("cf1", "szs-xzsp", "claim", "2026-10-21T10:00:00+08:00")
            .await;
        f.feedback(
            "cf1",
            "szs-xzsp",
            "disposition",
            "2026-10-23T10:00:00+08:00",
            json!({"disposition": "整改", "content": "责令3个月内整改"}),
        )
        .await;
        let e = f.entry("cf1", "szs-xzsp").await;
        assert_eq!(e.state, EntryState::Closed);
        let (_, _, history) = f.ledger.record("cf1").await.unwrap().unwrap();
        assert!(history
            .iter()
            .any(|h| h.action == "feedback" && h.detail["disposition"] == "整改"));
        let r = f.report("2026-09", "2026-10-21T00:00:00+08:00").await;
        let line = &r.claims[0];
        assert_eq!(
            (
                line.flow.as_str(),
                line.verified,
                line.unfulfilled,
                line.follow_up_overdue
            ),
            ("commitment", 1, 1, 0)
        );
    }
);

scenario!(
    a_forwarded_record_keeps_its_chain_and_the_receiver_gets_its_own_deadline,
    |backend| {
        let mut f = Feed::new(backend, "yuanqu-2022").await;
        f.approval(
            "f1",
            FOOD,
            "2026-03-02T09:00:00+08:00",
            "2026-03-02T10:00:00+08:00",
        )
        .await;
        let changes = f
            .forward("f1", "szs-scjg", "nx-scjg", "2026-03-03T16:00:00+08:00")
            .await;
        assert_eq!(changes.entries.len(), 2);
        let from = f.entry("f1", "szs-scjg").await;
        assert_eq!(from.state, EntryState::Forwarded);
        let to = f.entry("f1", "nx-scjg").await;
        assert_eq!(to.state, EntryState::Pushed);
        assert_eq!(
            to.pushed_at.to_rfc3339(),
            "2026-03-03T16:00:00+08:00",
            "the receiver's deadline counts from the hand-over"
        );
        assert_eq!(
            to.claim_due_at.unwrap().to_rfc3339(),
            "2026-03-04T23:59:59+08:00"
        );
        let (_, _, history) = f.ledger.record("f1").await.unwrap().unwrap();
        let chain: Vec<(&str, Option<&str>)> = history
            .iter()
            .filter(|h| h.action.starts_with("forward"))
            .map(|h| (h.action.as_str(), h.department.as_deref()))
            .collect();
        assert_eq!(
            chain,
            [
                ("forwarded", Some("szs-scjg")),
                ("forwarded_in", Some("nx-scjg"))
            ]
        );
        // Forwarding again, or to a department that already has it, changes nothing.
        let again = f
            .forward("f1", "nx-scjg", "nx-scjg", "2026-03-03T17:00:00+08:00")
            .await;
        assert!(again.entries.is_empty());
        // The receiver claims; the forwarder's entry raises no alerts.
        assert!(f.levels_at("2026-03-05T09:00:00+08:00").await.len() == 1);
        f.claim("f1", "nx-scjg", "claim", "2026-03-05T10:00:00+08:00")
            .await;
        let r = f.report("2026-03", "2026-03-10T00:00:00+08:00").await;
        let scjg = r
            .claims
            .iter()
            .find(|l| l.department == "szs-scjg")
            .unwrap();
        assert_eq!(
            (scjg.forwarded, scjg.open, scjg.open_overdue, scjg.due),
            (1, 0, Some(0), Some(0)),
            "forwarded before claiming: not due for the forwarder"
        );
        let nx = r.claims.iter().find(|l| l.department == "nx-scjg").unwrap();
        assert_eq!((nx.claimed, nx.claimed_late), (1, Some(1)));
    }
);

scenario!(
    an_offline_push_counts_from_its_letter_and_an_offline_claim_keeps_its_reference,
    |backend| {
        let mut f = Feed::new(backend, "yuanqu-2022").await;
        let event = json!({
            "specversion": "1.0", "id": "ev-o1", "source": "/test", "type": "cn.shenguan.approval.v1",
            "subject": "o1", "time": "2026-03-05T10:00:00+08:00", "datacontenttype": "application/json",
            "data": {
                "record_id": "o1", "kind": "approval",
                "source": {"system": "线下推送", "adapter": "offline", "business_key": "书面公函/石审管函〔2026〕15号", "received_at": "2026-03-05T10:00:00+08:00"},
                "item": {"code": FOOD, "name": "食品经营许可"},
                "decided_at": "2026-03-02T09:00:00+08:00",
                "offline_push": {"channel": "书面公函", "document_ref": "石审管函〔2026〕15号", "pushed_at": "2026-03-02T15:00:00+08:00"},
            }
        });
        f.send(RecordKind::Approval, event).await;
        let (record, _, _) = f.ledger.record("o1").await.unwrap().unwrap();
        assert!(
            !record.push_late,
            "the letter went out the day of the decision"
        );
        let e = f.entry("o1", "szs-scjg").await;
        assert_eq!(e.pushed_at.to_rfc3339(), "2026-03-02T15:00:00+08:00");
        assert_eq!(
            e.claim_due_at.unwrap().to_rfc3339(),
            "2026-03-03T23:59:59+08:00"
        );
        assert_eq!(e.via.as_deref(), Some("书面公函"));
        // Entered three days later, it is already overdue.
        assert_eq!(
            f.levels_at("2026-03-05T10:00:01+08:00").await,
            vec![("o1".into(), "overdue".into())]
        );
        let claim = json!({
            "specversion": "1.0", "id": "claim-o1", "source": "/test", "type": "cn.shenguan.claim.v1",
            "subject": "o1", "time": "2026-03-03T11:00:00+08:00", "datacontenttype": "application/json",
            "data": {"record_id": "o1", "department": "szs-scjg", "action": "claim", "at": "2026-03-03T11:00:00+08:00",
                     "channel": "offline", "document_ref": "石市监回执〔2026〕3号"}
        });
        f.send(RecordKind::Claim, claim).await;
        let (_, _, history) = f.ledger.record("o1").await.unwrap().unwrap();
        let c = history.iter().find(|h| h.action == "claim").unwrap();
        assert_eq!(c.channel.as_deref(), Some("offline"));
        assert_eq!(c.detail["document_ref"], "石市监回执〔2026〕3号");
        let r = f.report("2026-03", "2026-03-10T00:00:00+08:00").await;
        assert_eq!(
            (r.claims[0].offline, r.claims[0].claimed_on_time),
            (1, Some(1)),
            "claimed on 03-03 per the written acknowledgement"
        );
    }
);

scenario!(
    the_daily_digest_goes_out_on_working_days_with_each_departments_counts,
    |backend| {
        let mut f = Feed::new(backend, "yuanqu-2022").await;
        f.approval(
            "d1",
            FOOD,
            "2026-10-09T09:00:00+08:00",
            "2026-10-09T10:00:00+08:00",
        )
        .await;
        f.approval(
            "d2",
            FOOD,
            "2026-10-09T09:00:00+08:00",
            "2026-10-09T10:00:00+08:00",
        )
        .await;
        f.claim("d2", "szs-scjg", "claim", "2026-10-12T08:00:00+08:00")
            .await;
        // Sunday 2026-10-11 is a day off: no digest.
        assert!(
            tracker::digests(f.ledger.as_ref(), &f.shared, t("2026-10-11T08:30:00+08:00"))
                .await
                .unwrap()
                .is_empty()
        );
        let digests =
            tracker::digests(f.ledger.as_ref(), &f.shared, t("2026-10-12T08:30:00+08:00"))
                .await
                .unwrap();
        assert_eq!(digests.len(), f.shared.catalog.departments.len());
        let schemas = shenguan::schema::Schemas::builtin().unwrap();
        let scjg = digests
            .iter()
            .map(|m| serde_json::from_slice::<Value>(&m.payload).unwrap())
            .find(|v| v["data"]["department"] == "szs-scjg")
            .unwrap();
        assert!(
            schemas
                .validate(RecordKind::Alert, &scjg["data"])
                .is_empty(),
            "{:?}",
            schemas.validate(RecordKind::Alert, &scjg["data"])
        );
        let d = &scjg["data"]["digest"];
        assert_eq!(d["date"], "2026-10-12");
        assert_eq!(
            (
                d["to_claim"].as_i64(),
                d["claimed_today"].as_i64(),
                d["unclaimed_this_month"].as_i64(),
                d["overdue"].as_i64()
            ),
            (Some(1), Some(1), Some(1), Some(1)),
            "d1 unclaimed and past its 10-10 deadline, d2 claimed this morning"
        );
        let quiet = digests
            .iter()
            .map(|m| serde_json::from_slice::<Value>(&m.payload).unwrap())
            .find(|v| v["data"]["department"] == "szs-wjw")
            .unwrap();
        assert_eq!(quiet["data"]["digest"]["to_claim"], 0);
    }
);

scenario!(
    retention_deletes_finished_records_and_keeps_open_ones,
    |backend| {
        let mut f = Feed::new(backend, "yuanqu-2022").await;
        for id in ["done", "open", "returned"] {
            f.approval(
                id,
                FOOD,
                "2026-03-02T09:00:00+08:00",
                "2026-03-02T10:00:00+08:00",
            )
            .await;
        }
        f.claim("done", "szs-scjg", "claim", "2026-03-02T15:00:00+08:00")
            .await;
        // Returned by its only department: back in the unrouted queue, still waiting.
        f.claim(
            "returned",
            "szs-scjg",
            "return",
            "2026-03-02T15:00:00+08:00",
        )
        .await;
        f.notice(
            "q",
            "szs-xzsp",
            &["szs-wjw"],
            inquiry(Some(1)),
            "2026-03-02T11:00:00+08:00",
        )
        .await;
        assert_eq!(f.deem_lapsed("2026-03-04T09:00:00+08:00").await, 1);
        // Nothing is old enough yet.
        assert!(f
            .ledger
            .finished_before(t("2026-03-02T00:00:00+08:00"), 100)
            .await
            .unwrap()
            .is_empty());
        let finished = f
            .ledger
            .finished_before(t("2026-04-01T00:00:00+08:00"), 100)
            .await
            .unwrap();
        assert_eq!(
            finished,
            vec!["done".to_string(), "q".to_string()],
            "the claimed record and the inquiry deemed agreed"
        );
        // Retention purges them with events, as the tracker publishes them.
        let now = t("2026-04-01T00:00:00+08:00");
        for id in &finished {
            let m = tracker::purge_message(&f.shared, id, now, now);
            f.send(
                RecordKind::Claim,
                serde_json::from_slice(&m.payload).unwrap(),
            )
            .await;
        }
        assert!(f.ledger.record("done").await.unwrap().is_none());
        assert!(f.ledger.record("q").await.unwrap().is_none());
        assert!(f.ledger.record("open").await.unwrap().is_some());
        assert!(f.ledger.record("returned").await.unwrap().is_some());
        let snapshot = common::ledger_snapshot(&f.url).await;
        assert!(
            snapshot
                .iter()
                .filter(|l| l.contains("\"done\"")
                    || l.contains("\"done")
                    || l.contains("String(\"done\")"))
                .all(|l| l.starts_with("ledger_events") && l.contains("purge")),
            "only the purge of done is left: {snapshot:#?}"
        );
        // A late claim about a purged record changes nothing.
        f.claim("done", "szs-scjg", "return", "2026-04-02T10:00:00+08:00")
            .await;
        assert!(f.ledger.record("done").await.unwrap().is_none());
    }
);

/// The tracker's scan at `now` with its parameter written out, for `EXPLAIN`.
fn due_scan_at(before: &str) -> String {
    let ms = t(before).timestamp_millis();
    shenguan::ledger::sql::due_scan().replace("$1", &ms.to_string())
}

const BULK_NOW: &str = "2026-11-23T12:00:00+08:00";

/// What the tracker asks for over a bulk-loaded ledger: the 1 in 100 entries loaded past their
/// claim deadline, none of the rest (due in 30 days or more).
async fn assert_due_of_bulk(ledger: &dyn LedgerStore, n: usize) {
    let now = t(BULK_NOW);
    let due = ledger
        .entries_due_before(now + tracker::DUE_SOON_HORIZON)
        .await
        .unwrap();
    assert_eq!(due.len(), n / 100);
    assert!(due.iter().all(|e| e.due_at < now
        && e.rule == "claim_approval"
        && e.policy == "yuanqu-2022"
        && e.alert_level == AlertLevel::None));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_trackers_scan_reads_only_its_covering_indexes_in_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let ledger = SqlLedger::open(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    shenguan::bench::bulk_entries(&ledger, 20_000, t(BULK_NOW))
        .await
        .unwrap();
    assert_due_of_bulk(&ledger, 20_000).await;

    let conn = rusqlite::Connection::open(&path).unwrap();
    let sql = format!(
        "EXPLAIN QUERY PLAN {}",
        due_scan_at("2026-12-14T12:00:00+08:00")
    );
    let mut stmt = conn.prepare(&sql).unwrap();
    let plan: Vec<String> = stmt
        .query_map([], |r| r.get(3))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let plan = plan.join("\n");
    assert!(
        plan.contains("USING COVERING INDEX entries_due"),
        "entries_due not read as a covering index:\n{plan}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_trackers_scan_reads_only_its_covering_indexes_in_postgres() {
    let url = common::postgres_database().await;
    let ledger = SqlLedger::open(&url).await.unwrap();
    shenguan::bench::bulk_entries(&ledger, 20_000, t(BULK_NOW))
        .await
        .unwrap();
    assert_due_of_bulk(&ledger, 20_000).await;

    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    // As autovacuum would after a bulk insert: statistics, and the visibility map an
    // index-only scan needs.
    client
        .batch_execute("VACUUM ANALYZE ledger_entries")
        .await
        .unwrap();
    let rows = client
        .query(
            &format!(
                "EXPLAIN (ANALYZE, COSTS OFF) {}",
                due_scan_at("2026-12-14T12:00:00+08:00")
            ),
            &[],
        )
        .await
        .unwrap();
    let plan: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    let plan = plan.join("\n");
    assert!(
        plan.contains("Index Only Scan using entries_due"),
        "entries_due not read by an index-only scan:\n{plan}"
    );
    assert!(
        plan.contains("Heap Fetches: 0"),
        "the scan visited the table:\n{plan}"
    );
}

/// An approval of 食品经营许可 pushed Monday 2026-03-02, as the bus delivers it.
fn approval_delivery(id: &str, partition: i32, offset: i64) -> Delivery {
    let event = json!({
        "specversion": "1.0", "id": format!("ev-{id}"), "source": "/test", "type": "cn.shenguan.approval.v1",
        "subject": id, "time": "2026-03-02T11:00:00+08:00", "datacontenttype": "application/json",
        "data": {"record_id": id, "kind": "approval", "item": {"code": FOOD, "name": "x"},
                 "source": {"adapter": "nx-zwfw-approval"}, "decided_at": "2026-03-02T10:00:00+08:00"}
    });
    Delivery {
        topic: "shenguan.approval.v1".into(),
        partition,
        offset,
        key: None,
        payload: serde_json::to_vec(&event).unwrap(),
        timestamp_ms: 0,
        headers: Vec::new(),
    }
}

/// Message `i` of a burst spread over two partitions.
fn burst_delivery(i: i64) -> Delivery {
    approval_delivery(&format!("b{i}"), (i % 2) as i32, i / 2)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_on_one_postgres_apply_overlapping_bursts_once_each() {
    let url = common::postgres_database().await;
    let a = shenguan::ledger::store::open(&url).await.unwrap();
    let b = shenguan::ledger::store::open(&url).await.unwrap();
    let shared = shared("yuanqu-2022");
    // 80 messages on two partitions. Instance a receives its bursts partition 0 first, b
    // partition 1 first, as two consumers of the same topic may: neither may deadlock, and
    // every message is applied by exactly one of them.
    let bursts = |first: i32| -> Vec<shenguan::ledger::store::Batch> {
        (0..8)
            .map(|burst| {
                let mut batch: Vec<(Delivery, RecordKind)> = (burst * 10..burst * 10 + 10)
                    .map(|i| (burst_delivery(i), RecordKind::Approval))
                    .collect();
                batch.sort_by_key(|(d, _)| (d.partition != first, d.offset));
                batch.into()
            })
            .collect()
    };
    let run = |ledger: Arc<dyn LedgerStore>, bursts: Vec<shenguan::ledger::store::Batch>| {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut applied = 0;
            for batch in bursts {
                let outcomes = ledger
                    .apply_batch(batch, shared.clone(), true)
                    .await
                    .unwrap();
                applied += outcomes
                    .iter()
                    .filter(|o| matches!(o, Outcome::Applied(c) if !c.entries.is_empty()))
                    .count();
            }
            applied
        })
    };
    let (x, y) = tokio::join!(run(a.clone(), bursts(0)), run(b.clone(), bursts(1)));
    assert_eq!(x.unwrap() + y.unwrap(), 80, "each message applied once");
    let positions = a.positions().await.unwrap();
    for partition in [0, 1] {
        assert_eq!(
            positions.get(&("shenguan.approval.v1".to_string(), partition)),
            Some(&40)
        );
    }
    for i in [0, 41, 79] {
        let (_, entries, _) = b.record(&format!("b{i}")).await.unwrap().expect("record");
        assert_eq!(entries.len(), 1);
    }
}

/// A new SQLite ledger in `dir`, and the path of its file.
async fn sqlite_ledger_in(dir: &std::path::Path) -> (std::path::PathBuf, Arc<dyn LedgerStore>) {
    let path = dir.join("ledger.db");
    let ledger = shenguan::ledger::store::open(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    (path, ledger)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sqlite_ledger_checkpoints_its_write_ahead_log_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let (path, ledger) = sqlite_ledger_in(dir.path()).await;
    let shared = shared("yuanqu-2022");
    let batch: Vec<(Delivery, RecordKind)> = (0..100)
        .map(|i| (burst_delivery(i), RecordKind::Approval))
        .collect();
    ledger
        .apply_batch(batch.into(), shared, true)
        .await
        .unwrap();
    // Commits do not checkpoint; within a second the checkpointer has copied them into the
    // database file itself, which a copy without its -wal file shows.
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    let copy = dir.path().join("copy.db");
    std::fs::copy(&path, &copy).unwrap();
    let records: i64 = rusqlite::Connection::open(&copy)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM ledger_records", [], |r| r.get(0))
        .unwrap();
    assert_eq!(records, 100);
    drop(ledger);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sqlite_ledger_logs_records_of_two_kilobytes_without_their_envelope_and_shows_them_whole()
{
    let dir = tempfile::tempdir().unwrap();
    let (path, ledger) = sqlite_ledger_in(dir.path()).await;
    // 1,000 approvals of 1.7 KB of data, as the bus delivers them: 2.0 KB CloudEvents.
    let content = "许可项目：住宿（宾馆），沐浴，美容美发；".repeat(25);
    let data = |id: &str| {
        json!({"record_id": id, "kind": "approval", "item": {"code": FOOD, "name": "x"},
               "source": {"adapter": "nx-zwfw-approval", "system": "宁夏政务服务网"},
               "decided_at": "2026-03-02T10:00:00+08:00", "license": {"content": content}})
    };
    let batch: Vec<(Delivery, RecordKind)> = (0..1000)
        .map(|i| {
            let id = format!("big-{i}");
            let event = json!({
                "specversion": "1.0", "id": format!("ev-{id}"), "type": "cn.shenguan.approval.v1",
                "source": "/shenguan/adapters/nx-zwfw-approval", "subject": id, "partitionkey": id,
                "time": "2026-03-02T11:00:00.000+08:00", "datacontenttype": "application/json",
                "dataschema": "urn:shenguan:schema:approval.v1", "data": data(&id),
            });
            let payload = serde_json::to_vec(&event).unwrap();
            assert!((1900..2100).contains(&payload.len()), "{}", payload.len());
            let delivery = Delivery {
                topic: "shenguan.approval.v1".into(),
                partition: 0,
                offset: i,
                key: None,
                payload,
                timestamp_ms: 0,
                headers: Vec::new(),
            };
            (delivery, RecordKind::Approval)
        })
        .collect();
    ledger
        .apply_batch(batch.into(), shared("yuanqu-2022"), true)
        .await
        .unwrap();
    // The record's data, as the API shows it, is the data published.
    let (record, _, _) = ledger.record("big-7").await.unwrap().expect("record");
    assert_eq!(*record.data, data("big-7"));
    // The log of events keeps a record's `id`, `time` and `data`: 2.06 MB of pages for these
    // (2.34 MB with their whole CloudEvents; 2.13 MB on 4 KiB pages, 4.1 MB with whole events).
    let bytes: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row(
            "SELECT SUM(pgsize) FROM dbstat WHERE name = 'ledger_events'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        bytes <= 2_150_000,
        "{bytes} bytes of pages for the events of 1,000 records"
    );
    drop(ledger);
}

/// Applies 50 approvals to the SQLite ledger in `dir` and returns its file's page size and how
/// many records it holds.
async fn page_size_after_a_burst_in(dir: &std::path::Path) -> (i64, i64) {
    let (path, ledger) = sqlite_ledger_in(dir).await;
    let batch: Vec<(Delivery, RecordKind)> = (0..50)
        .map(|i| (burst_delivery(i), RecordKind::Approval))
        .collect();
    ledger
        .apply_batch(batch.into(), shared("yuanqu-2022"), true)
        .await
        .unwrap();
    drop(ledger);
    let url = format!("sqlite:{}", path.display());
    let records = common::ledger_scalar(&url, "SELECT COUNT(*) FROM ledger_records").await;
    (common::sqlite_page_size(&path), records)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_sqlite_ledger_file_has_pages_of_sixteen_kib_and_an_older_file_keeps_its_own() {
    // A new file, whether the ledger or the gateway state opens it first.
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(page_size_after_a_burst_in(dir.path()).await, (16_384, 50));
    let state_first = dir.path().join("state-first.db");
    drop(shenguan::state::sqlite::SqliteState::open(&state_first).unwrap());
    assert_eq!(common::sqlite_page_size(&state_first), 16_384);
    // A file made with 4 KiB pages (an earlier version's) keeps them and works as before.
    let old = tempfile::tempdir().unwrap();
    rusqlite::Connection::open(old.path().join("ledger.db"))
        .unwrap()
        .execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE earlier (x INTEGER);")
        .unwrap();
    assert_eq!(page_size_after_a_burst_in(old.path()).await, (4096, 50));
}

/// A supervision record from szs-scjg's system (its adapter is in the catalog's list for it).
fn request(id: &str, action: &str, request_type: &str, at: &str) -> Value {
    json!({
        "specversion": "1.0", "id": format!("ev-{id}"), "source": "/test", "type": "cn.shenguan.supervision.v1",
        "subject": id, "time": at, "datacontenttype": "application/json",
        "data": {"record_id": id, "kind": "supervision", "action": action,
                 "source": {"adapter": "nx-scjg-supervision"}, "decided_at": at,
                 "affected_license": {"license_no": "JY26402000000011"},
                 "request": {"type": request_type, "reason": "依法应当变更", "evidence": [{"name": "证明材料"}]}}
    })
}

scenario!(
    a_change_request_is_decided_within_twenty_working_days_of_the_bureaus_claim,
    |backend| {
        // 济宁 第二十一条（三）: 变更 requests; the profile documents disposition_feedback as counted
        // from the bureau's claim: pushed 11-02, claimed 11-16 → due 12-14, not 11-30.
        let mut f = Feed::new(backend, "yuanqu-2022").await;
        f.send(
            RecordKind::Supervision,
            request("ch1", "变更许可", "变更", "2026-11-02T10:00:00+08:00"),
        )
        .await;
        let e = f.entry("ch1", "szs-xzsp").await;
        assert_eq!(
            (e.feedback_rule.as_deref(), e.feedback_due_at),
            (Some("disposition_feedback"), None)
        );
        f.claim("ch1", "szs-xzsp", "claim", "2026-11-16T10:00:00+08:00")
            .await;
        let e = f.entry("ch1", "szs-xzsp").await;
        assert_eq!(
            e.feedback_due_at.unwrap().to_rfc3339(),
            "2026-12-14T23:59:59+08:00"
        );
        // Due soon on its last afternoon, not on 11-30.
        assert!(f.levels_at("2026-11-30T17:00:00+08:00").await.is_empty());
        assert_eq!(
            f.levels_at("2026-12-14T17:00:00+08:00").await,
            vec![("ch1".into(), "due_soon".into())]
        );
        f.feedback(
            "ch1",
            "szs-xzsp",
            "disposition",
            "2026-12-14T18:00:00+08:00",
            json!({"disposition": "变更许可", "content": "变更经营场所门牌号"}),
        )
        .await;
        let d = f.entry("ch1", "szs-scjg").await;
        assert_eq!(d.claim_rule.as_deref(), Some("claim_decision"));
        // 1 working day after Mon 12-14.
        assert_eq!(
            d.claim_due_at.unwrap().to_rfc3339(),
            "2026-12-15T23:59:59+08:00"
        );
    }
);

scenario!(
    an_objection_is_reviewed_and_a_decision_for_an_unknown_requester_is_said_not_delivered,
    |backend| {
        // 安康 15: 对审批结果有异议的…由审批部门…复核…并及时反馈给行业监管部门.
        let mut f = Feed::new(backend, "generic").await;
        f.send(
            RecordKind::Supervision,
            request("ob1", "审批结果异议", "复核", "2026-03-02T10:00:00+08:00"),
        )
        .await;
        f.claim("ob1", "szs-xzsp", "claim", "2026-03-02T11:00:00+08:00")
            .await;
        f.feedback(
            "ob1",
            "szs-xzsp",
            "disposition",
            "2026-03-05T10:00:00+08:00",
            json!({"disposition": "维持原审批决定", "content": "经复核，审批程序合法"}),
        )
        .await;
        let d = f.entry("ob1", "szs-scjg").await;
        assert_eq!(
            (d.state, d.claim_rule.as_deref()),
            (EntryState::Pushed, Some("claim_decision"))
        );
        assert_eq!(
            d.claim_due_at.unwrap().to_rfc3339(),
            "2026-03-06T23:59:59+08:00",
            "generic: 1 working day, a labelled default"
        );
        // A request whose sender the ledger cannot tell: the decision is not lost silently.
        let mut unknown = request("ob2", "审批结果异议", "复核", "2026-03-02T10:00:00+08:00");
        unknown["data"]["source"]["adapter"] = json!("nx-credit-cf");
        f.send(RecordKind::Supervision, unknown).await;
        f.claim("ob2", "szs-xzsp", "claim", "2026-03-02T11:00:00+08:00")
            .await;
        f.feedback(
            "ob2",
            "szs-xzsp",
            "disposition",
            "2026-03-05T10:00:00+08:00",
            json!({"disposition": "维持原审批决定"}),
        )
        .await;
        let (_, entries, history) = f.ledger.record("ob2").await.unwrap().unwrap();
        assert_eq!(entries.len(), 1);
        assert!(history.iter().any(|h| h.action == "decision_not_delivered"));
    }
);

scenario!(
    an_independent_inspection_gets_no_advance_notice_deadline,
    |backend| {
        // 垣曲 第二十五条: 至少提前1个工作日 is for 联合踏勘评审 only. An 独立 notice for tomorrow,
        // sent this morning, is not late.
        let mut f = Feed::new(backend, "yuanqu-2022").await;
        for (id, mode) in [("in1", "独立踏勘评审"), ("in2", "委托踏勘评审")] {
            f.notice(
                id,
                "szs-xzsp",
                &["szs-scjg"],
                json!({"notice_type": "踏勘通知", "inspection": {"mode": mode, "scheduled_at": "2026-10-16T09:00:00+08:00",
                        "location": "大武口区", "matter": "食品经营许可 现场核查"}}),
                "2026-10-16T08:00:00+08:00",
            )
            .await;
            let (record, entries, _) = f.ledger.record(id).await.unwrap().unwrap();
            assert_eq!((record.push_rule, record.push_late), (None, false));
            assert_eq!(entries[0].claim_rule, None, "nothing to confirm");
        }
        assert!(outbox_levels(&f).await.is_empty(), "no late_push");
    }
);

scenario!(
    the_bureau_sets_a_commitments_verification_date_or_exempts_it,
    |backend| {
        // 济宁 第二十四条（一）: 明确核查时间……以及是否免予核查.
        let mut f = Feed::new(backend, "jining-2022").await;
        let approval = |id: &str, verification: Value| {
            json!({
                "specversion": "1.0", "id": format!("ev-{id}"), "source": "/test", "type": "cn.shenguan.approval.v1",
                "subject": id, "time": "2026-03-02T10:00:00+08:00", "datacontenttype": "application/json",
                "data": {"record_id": id, "kind": "approval", "source": {"adapter": "nx-zwfw-approval"},
                         "item": {"code": FOOD, "name": "食品经营许可"}, "decided_at": "2026-03-02T09:00:00+08:00",
                         "commitment": {"is_commitment": true, "items": ["补交健康证明"], "period_end": "2026-03-31",
                                        "verification": verification}}
            })
        };
        f.send(
            RecordKind::Approval,
            approval("v1", json!({"due_date": "2026-04-03"})),
        )
        .await;
        let e = f.entry("v1", "szs-scjg").await;
        assert_eq!(
            (
                e.feedback_rule.as_deref(),
                e.feedback_due_at.unwrap().to_rfc3339()
            ),
            (
                Some("verify_commitment"),
                "2026-04-03T23:59:59+08:00".into()
            ),
            "the bureau's date, not 10 working days after the period"
        );
        f.send(
            RecordKind::Approval,
            approval("v2", json!({"exempt": true})),
        )
        .await;
        let e = f.entry("v2", "szs-scjg").await;
        assert_eq!(
            (e.feedback_rule, e.feedback_due_at),
            (None, None),
            "免予核查"
        );
        assert!(e.note.unwrap().contains("免予核查"));
        assert!(f
            .ledger
            .obligations("verify_commitment", None, 10)
            .await
            .unwrap()
            .iter()
            .all(|(e, _)| e.record_id == "v1"));
    }
);

scenario!(
    a_licence_changed_after_its_push_is_pushed_again_as_an_update,
    |backend| {
        let mut f = Feed::new(backend, "yuanqu-2022").await;
        let version = |status: &str, at: &str, n: u32| {
            json!({
                "specversion": "1.0", "id": format!("ev-u1-{n}"), "source": "/test", "type": "cn.shenguan.approval.v1",
                "subject": "u1", "time": at, "datacontenttype": "application/json",
                "data": {"record_id": "u1", "kind": "approval", "source": {"adapter": "nx-zwfw-approval"},
                         "item": {"code": FOOD, "name": "食品经营许可"}, "decided_at": "2026-03-02T09:00:00+08:00",
                         "license": {"license_no": "JY1", "status": status}}
            })
        };
        f.send(
            RecordKind::Approval,
            version("有效", "2026-03-02T10:00:00+08:00", 1),
        )
        .await;
        f.claim("u1", "szs-scjg", "claim", "2026-03-02T11:00:00+08:00")
            .await;
        // Its webhook delivery of the first version is done.
        let now = t("2026-03-06T17:00:00+08:00");
        f.ledger
            .delivery_done("u1".into(), "szs-scjg".into(), 1, "ok")
            .await
            .unwrap();
        assert!(f
            .ledger
            .due_deliveries(vec!["szs-scjg".into()], now, 10)
            .await
            .unwrap()
            .is_empty());
        // The licence is cancelled (注销) on Friday 03-06: a new version under the same key.
        let changes = f
            .send(
                RecordKind::Approval,
                version("注销", "2026-03-06T16:00:00+08:00", 2),
            )
            .await;
        assert_eq!(changes.entries.len(), 1);
        let e = f.entry("u1", "szs-scjg").await;
        assert_eq!((e.state, e.version), (EntryState::Pushed, 2));
        // The update goes to the department's webhook again, once.
        let due = f
            .ledger
            .due_deliveries(vec!["szs-scjg".into()], now, 10)
            .await
            .unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].0.version, due[0].1.version), (2, 2));
        f.ledger
            .delivery_done("u1".into(), "szs-scjg".into(), 1, "ok")
            .await
            .unwrap();
        assert!(f
            .ledger
            .due_deliveries(vec!["szs-scjg".into()], now, 10)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(e.pushed_at.to_rfc3339(), "2026-03-06T16:00:00+08:00");
        assert_eq!(
            e.claim_due_at.unwrap().to_rfc3339(),
            "2026-03-09T23:59:59+08:00",
            "its own claim deadline: the next working day after the update"
        );
        assert!(e.note.unwrap().contains("license.status"));
        let (record, _, history) = f.ledger.record("u1").await.unwrap().unwrap();
        assert_eq!(record.version, 2);
        assert_eq!(record.data["license"]["status"], "注销");
        let updated = history.iter().find(|h| h.action == "updated").unwrap();
        assert_eq!(updated.detail["changed"], json!(["license.status"]));
        assert_eq!(updated.detail["previous_event_id"], "ev-u1-1");
        // Both versions are kept: the first claim stays in the history.
        let actions: Vec<&str> = history.iter().map(|h| h.action.as_str()).collect();
        assert_eq!(
            actions,
            ["published", "routed", "claim", "updated", "update_pushed"]
        );
        // Unclaimed, it is alerted on like any push; claimed, it is done.
        assert_eq!(
            f.levels_at("2026-03-10T08:00:00+08:00").await,
            vec![("u1".into(), "overdue".into())]
        );
        f.claim("u1", "szs-scjg", "claim", "2026-03-10T09:00:00+08:00")
            .await;
        let r = f.report("2026-03", "2026-03-20T00:00:00+08:00").await;
        assert_eq!(
            (r.claims[0].updates, r.claims[0].claimed_late),
            (1, Some(1))
        );
    }
);

scenario!(
    notices_are_claimed_forwarded_from_receipt_and_attendance_is_confirmed,
    |backend| {
        let mut f = Feed::new(backend, "zichuan-2019").await;
        // 淄川 三（二）2: szs-scjg received a policy document from its upper level on Friday 03-06
        // and forwards it on Tuesday 03-10: due the next working day after receipt (03-09), late.
        f.notice(
            "n1",
            "szs-scjg",
            &["szs-xzsp"],
            json!({"notice_type": "法律法规政策调整信息", "received_at": "2026-03-06T15:00:00+08:00",
                   "issued_at": "2026-03-02T09:00:00+08:00"}),
            "2026-03-10T09:00:00+08:00",
        )
        .await;
        let (record, entries, _) = f.ledger.record("n1").await.unwrap().unwrap();
        assert_eq!(record.push_rule.as_deref(), Some("forward_notice"));
        assert_eq!(
            record.push_due_at.unwrap().to_rfc3339(),
            "2026-03-09T23:59:59+08:00",
            "counted from the receipt, not from the issue date"
        );
        assert!(record.push_late);
        // The bureau claims it by the profile's claim_notice deadline.
        assert_eq!(entries[0].claim_rule.as_deref(), Some("claim_notice"));
        assert_eq!(
            entries[0].claim_due_at.unwrap().to_rfc3339(),
            "2026-03-11T23:59:59+08:00"
        );
        // A notice that does not say when it was received is not judged late.
        f.notice(
            "n2",
            "szs-scjg",
            &["szs-xzsp"],
            json!({"notice_type": "业务培训信息"}),
            "2026-03-10T09:00:00+08:00",
        )
        .await;
        let (record, _, _) = f.ledger.record("n2").await.unwrap().unwrap();
        assert_eq!((record.push_due_at, record.push_late), (None, false));

        // A training: each invited department confirms who attends by the time it starts.
        f.notice(
            "t1",
            "szs-xzsp",
            &["szs-scjg", "szs-wjw"],
            json!({"notice_type": "业务培训信息", "training": {"starts_at": "2026-03-13T14:30:00+08:00", "location": "市民大厅"}}),
            "2026-03-10T10:00:00+08:00",
        )
        .await;
        let e = f.entry("t1", "szs-scjg").await;
        assert_eq!(
            (
                e.claim_rule.as_deref(),
                e.claim_due_at.unwrap().to_rfc3339()
            ),
            (
                Some("confirm_attendance"),
                "2026-03-13T14:30:00+08:00".into()
            )
        );
        f.feedback(
            "t1",
            "szs-scjg",
            "attendance",
            "2026-03-11T09:00:00+08:00",
            json!({"attendees": ["马丽 食品经营科"]}),
        )
        .await;
        let e = f.entry("t1", "szs-scjg").await;
        assert_eq!(
            (e.state, e.outcome.as_deref()),
            (EntryState::Closed, Some("attending"))
        );
        let levels = f.levels_at("2026-03-13T15:00:00+08:00").await;
        assert_eq!(
            levels
                .iter()
                .filter(|(id, _)| id == "t1")
                .collect::<Vec<_>>(),
            [&("t1".to_string(), "overdue".to_string())],
            "szs-wjw did not confirm"
        );
        let r = f.report("2026-03", "2026-03-20T00:00:00+08:00").await;
        let wjw = r
            .claims
            .iter()
            .find(|l| l.department == "szs-wjw" && l.flow == "attendance")
            .unwrap();
        assert_eq!((wjw.open, wjw.open_overdue), (1, Some(1)));
    }
);

scenario!(
    a_joint_meetings_materials_are_due_one_working_day_before_it,
    |backend| {
        // 垣曲 附件 三（四）: 联席会议召开前1个工作日 the materials reach the member units.
        let mut f = Feed::new(backend, "yuanqu-2022").await;
        let meeting = json!({"notice_type": "会议通知", "meeting": {"kind": "联席会议",
            "starts_at": "2026-10-09T09:00:00+08:00", "topics": ["审管联动平台运行情况"]}});
        // Sent on Thursday 10-08 at 18:00 for a meeting on Friday 10-09: due by the end of the
        // working day before it, 10-08.
        f.notice(
            "m1",
            "szs-xzsp",
            &["szs-scjg"],
            meeting,
            "2026-10-08T18:00:00+08:00",
        )
        .await;
        let (record, _, _) = f.ledger.record("m1").await.unwrap().unwrap();
        assert_eq!(record.push_rule.as_deref(), Some("meeting_materials"));
        assert_eq!(
            record.push_due_at.unwrap().to_rfc3339(),
            "2026-10-08T23:59:59+08:00"
        );
        assert!(!record.push_late);
        let e = f.entry("m1", "szs-scjg").await;
        assert_eq!(e.claim_rule.as_deref(), Some("confirm_attendance"));
        // The same notice on the morning of the meeting is late.
        f.notice(
            "m2",
            "szs-xzsp",
            &["szs-scjg"],
            json!({"notice_type": "会议通知", "meeting": {"kind": "联席会议", "starts_at": "2026-10-16T09:00:00+08:00"}}),
            "2026-10-16T08:00:00+08:00",
        )
        .await;
        let (record, _, _) = f.ledger.record("m2").await.unwrap().unwrap();
        assert!(record.push_late);
    }
);

scenario!(
    a_record_decided_under_a_profile_out_of_its_period_says_so,
    |backend| {
        // 济宁 第三十七条: in force 2022-12-10 to 2024-12-09. A site still running jining-2022 in
        // 2026 decides under a regulation no longer in force: its records say so.
        let mut f = Feed::new(backend, "jining-2022").await;
        f.approval(
            "p1",
            FOOD,
            "2026-03-02T09:00:00+08:00",
            "2026-03-02T10:00:00+08:00",
        )
        .await;
        let (_, _, history) = f.ledger.record("p1").await.unwrap().unwrap();
        let routed = history.iter().find(|h| h.action == "routed").unwrap();
        assert_eq!(
            routed.detail["policy_out_of_period"],
            "jining-2022 is in force 2022-12-10 to 2024-12-09 (济宁 2022 第三十七条), not on 2026-03-02"
        );
        // Inside the period, nothing is said.
        f.approval(
            "p2",
            FOOD,
            "2024-03-04T09:00:00+08:00",
            "2024-03-04T10:00:00+08:00",
        )
        .await;
        let (_, _, history) = f.ledger.record("p2").await.unwrap().unwrap();
        let routed = history.iter().find(|h| h.action == "routed").unwrap();
        assert!(routed.detail.get("policy_out_of_period").is_none());
    }
);

/// The projector receives and decodes the next burst while it writes one: records published
/// while bursts are written all arrive, once each, with the positions at the topic's end; a
/// message that is not a ledger event among them is read past and leaves the others alone; a
/// rebuild of the same topics gives the same ledger. The live projector takes bursts of the
/// default size; the rebuild, bursts of 7 messages (`[ledger] burst`).
#[tokio::test(flavor = "multi_thread")]
async fn the_projector_applies_what_arrives_while_it_writes_once_each() {
    use shenguan::bus::{Bus, Message};
    use shenguan::config::DEFAULT_BURST as MAX_BATCH;
    use shenguan::ledger::projector::ProjectorStatus;
    let dir = tempfile::tempdir().unwrap();
    let bus: Arc<dyn Bus> =
        Arc::new(shenguan::bus::embedded::EmbeddedBus::open(&dir.path().join("bus.db")).unwrap());
    let ledger = shenguan::ledger::store::open(&format!(
        "sqlite:{}",
        dir.path().join("ledger.db").display()
    ))
    .await
    .unwrap();
    let projector = |ledger: Arc<dyn LedgerStore>, burst| shenguan::ledger::projector::Projector {
        ledger,
        bus: bus.clone(),
        shared: shared("yuanqu-2022"),
        applied: tokio::sync::broadcast::channel(16).0,
        status: Arc::new(ProjectorStatus::default()),
        burst,
    };
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let live = {
        let p = projector(ledger.clone(), MAX_BATCH);
        tokio::spawn(async move { p.run(stop, None, true).await })
    };
    // More than two bursts, published in pieces while the projector writes.
    let total = 2 * MAX_BATCH + 500;
    let messages: Vec<Message> = (0..total)
        .map(|i| {
            let d = approval_delivery(&format!("p{i}"), 0, 0);
            let payload = if i == 777 {
                b"{not a cloud event".to_vec()
            } else {
                d.payload
            };
            Message {
                topic: "shenguan.approval.v1".into(),
                key: format!("p{i}"),
                payload,
            }
        })
        .collect();
    for piece in messages.chunks(300) {
        bus.publish(piece.to_vec()).await.unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let applied_to_end = |positions: &shenguan::bus::Positions| {
        positions
            .iter()
            .filter(|((topic, _), _)| topic == "shenguan.approval.v1")
            .map(|(_, next)| *next)
            .sum::<i64>()
    };
    while applied_to_end(&ledger.positions().await.unwrap()) < total as i64 {
        assert!(
            std::time::Instant::now() < deadline,
            "the projector did not reach the topic's end"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    stop_tx.send(true).unwrap();
    live.await.unwrap().unwrap();
    for i in [0, 776, 778, MAX_BATCH, total - 1] {
        let (record, entries, history) = ledger
            .record(&format!("p{i}"))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("record p{i}"));
        assert_eq!(record.record_id, format!("p{i}"));
        assert_eq!(entries.len(), 1, "p{i}: {entries:?}");
        assert_eq!(
            history.iter().filter(|h| h.action == "published").count(),
            1,
            "p{i}: {history:?}"
        );
    }
    assert!(ledger.record("p777").await.unwrap().is_none());
    let live_report = ledger
        .gauges()
        .await
        .unwrap()
        .into_iter()
        .map(|g| (g.department, g.unclaimed))
        .collect::<Vec<_>>();
    assert_eq!(
        live_report.iter().map(|(_, n)| n).sum::<i64>(),
        total as i64 - 1
    );
    // A rebuild of a fresh ledger from the same topics, until idle.
    let rebuilt = shenguan::ledger::store::open(&format!(
        "sqlite:{}",
        dir.path().join("rebuilt.db").display()
    ))
    .await
    .unwrap();
    let (_keep, stop) = tokio::sync::watch::channel(false);
    let n = projector(rebuilt.clone(), 7)
        .run(stop, Some(std::time::Duration::from_millis(500)), false)
        .await
        .unwrap();
    assert_eq!(n, total as u64);
    let rebuilt_report = rebuilt
        .gauges()
        .await
        .unwrap()
        .into_iter()
        .map(|g| (g.department, g.unclaimed))
        .collect::<Vec<_>>();
    assert_eq!(rebuilt_report, live_report);
}

/// A claim by szs-scjg of record `id` at `at`, at `offset` on the claim topic.
fn claim_delivery(id: &str, offset: i64, at: &str) -> Delivery {
    Delivery {
        topic: "shenguan.claim.v1".into(),
        partition: 0,
        offset,
        key: Some(id.to_string()),
        payload: serde_json::to_vec(&json!({
            "specversion": "1.0", "id": format!("claim-{id}"), "source": "/test",
            "type": "cn.shenguan.claim.v1", "subject": id, "time": at,
            "data": {"record_id": id, "department": "szs-scjg", "action": "claim", "at": at}
        }))
        .unwrap(),
        timestamp_ms: 0,
        headers: Vec::new(),
    }
}

scenario!(
    bursts_worked_out_while_the_one_before_is_written_give_the_serial_ledger,
    |backend| {
        use shenguan::ledger::applier::Applier;
        let shared = shared("yuanqu-2022");
        // Approvals, the same burst delivered again (its plan is made before the first is
        // written, so it must not hold), claims of records in the burst being written (worked
        // out only after it), claims that arrive before their records, and those records.
        let approvals = |from: i64, n: i64| -> Vec<(Delivery, RecordKind)> {
            (from..from + n)
                .map(|i| {
                    (
                        approval_delivery(&format!("q{i}"), 0, i),
                        RecordKind::Approval,
                    )
                })
                .collect()
        };
        let claims =
            |ids: std::ops::Range<i64>, first_offset: i64| -> Vec<(Delivery, RecordKind)> {
                ids.enumerate()
                    .map(|(n, i)| {
                        (
                            claim_delivery(
                                &format!("q{i}"),
                                first_offset + n as i64,
                                "2026-03-03T09:00:00+08:00",
                            ),
                            RecordKind::Claim,
                        )
                    })
                    .collect()
            };
        let bursts: Vec<Vec<(Delivery, RecordKind)>> = vec![
            approvals(0, 60),
            approvals(0, 60),
            claims(0..30, 0),
            claims(100..110, 30),
            approvals(60, 60),
            approvals(120, 20),
            claims(30..60, 40),
        ];
        let dir = tempfile::tempdir().unwrap();
        let (pipelined, _) = backend.open(&dir).await;
        let (_keep, stop) = tokio::sync::watch::channel(false);
        let mut applier = Applier::new(pipelined.clone(), shared.clone(), true, stop);
        let mut outcomes = Vec::new();
        for burst in &bursts {
            if let Some((_, o)) = applier.push(burst.clone().into()).await.unwrap() {
                outcomes.push(o);
            }
        }
        outcomes.push(applier.finish().await.unwrap().unwrap().1);
        assert_eq!(outcomes.len(), bursts.len());
        assert!(
            outcomes[1].iter().all(|o| matches!(o, Outcome::Duplicate)),
            "the burst delivered again changes nothing: {:?}",
            &outcomes[1][..2]
        );
        assert!(outcomes[3].iter().all(|o| matches!(o, Outcome::Waiting)));
        // The same bursts one after the other, each in its own transaction.
        let dir2 = tempfile::tempdir().unwrap();
        let serial = match backend {
            Backend::Sqlite => backend.open(&dir2).await.0,
            Backend::Postgres => backend.open(&dir2).await.0,
        };
        for burst in &bursts {
            serial
                .apply_batch(burst.clone().into(), shared.clone(), true)
                .await
                .unwrap();
        }
        assert_eq!(
            pipelined.positions().await.unwrap(),
            serial.positions().await.unwrap()
        );
        let gauges = |l: Arc<dyn LedgerStore>| async move {
            let mut g: Vec<(String, String, i64)> = l
                .gauges()
                .await
                .unwrap()
                .into_iter()
                .map(|g| (g.department, g.kind, g.unclaimed))
                .collect();
            g.sort();
            g
        };
        let (a, b) = (
            gauges(pipelined.clone()).await,
            gauges(serial.clone()).await,
        );
        assert_eq!(a, b);
        assert_eq!(a.iter().map(|g| g.2).sum::<i64>(), 140 - 70);
        for i in [0, 29, 30, 59, 60, 100, 109, 139] {
            let id = format!("q{i}");
            let (p, s) = (
                pipelined.record(&id).await.unwrap().expect("record"),
                serial.record(&id).await.unwrap().expect("record"),
            );
            assert_eq!(p.1, s.1, "{id}: entries");
            let actions = |h: &[shenguan::ledger::HistoryRow]| {
                h.iter().map(|h| h.action.clone()).collect::<Vec<_>>()
            };
            assert_eq!(actions(&p.2), actions(&s.2), "{id}: history");
            let claimed = p.1[0].claimed_at.is_some();
            assert_eq!(claimed, i < 60 || (100..110).contains(&i), "{id}");
        }
        // A plan made before another writer (a second instance) applied the same messages does
        // not hold when it is written: the batch is worked out again and changes nothing.
        let burst: shenguan::ledger::store::Batch = approvals(140, 10).into();
        let planned = pipelined
            .plan_batch(burst.clone(), shared.clone(), true)
            .await;
        let first = pipelined
            .apply_batch(burst.clone(), shared.clone(), true)
            .await
            .unwrap();
        assert!(first.iter().all(|o| matches!(o, Outcome::Applied(_))));
        let again = pipelined
            .write_planned(planned, shared.clone(), true)
            .await
            .unwrap();
        assert!(
            again.iter().all(|o| matches!(o, Outcome::Duplicate)),
            "{:?}",
            &again[..1]
        );
        let (_, entries, history) = pipelined.record("q145").await.unwrap().unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(
            history.iter().filter(|h| h.action == "published").count(),
            1
        );
        assert_eq!(
            pipelined.positions().await.unwrap()[&("shenguan.approval.v1".to_string(), 0)],
            150
        );
    }
);
