//! The ledger does not depend on the order it reads its topics in. Generated streams of
//! records (approvals with commitments, supervision requests the bureau decides on, notices to
//! claim or attend, new versions of each), claims, returns, forwards, routings, deliveries,
//! feedback (dispositions that deliver a decision to the requester, attendance, verifications),
//! alert levels and purges
//! are applied in the order they happened and in random interleavings of their topics (each
//! topic's own order kept, messages redelivered, bursts of random size), through the one
//! `apply_batch` over an in-memory store; the resulting ledgers are the same.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, FixedOffset, TimeZone};
use proptest::prelude::*;
use serde_json::{json, Value};
use shenguan_core::deadline::{Calendar, Policies};
use shenguan_core::ledger::event::decode;
use shenguan_core::ledger::machine::RecordState;
use shenguan_core::ledger::port::{
    apply_batch, Counter, HistoryWrite, Input, LedgerPort, Stored, StoredEvent, Writes,
};
use shenguan_core::ledger::{alert_id, rfc3339, Context, Entry, HistoryRow, RecordRow};
use shenguan_core::route::Catalog;
use shenguan_core::schema::RecordKind;

/// A store in memory: the port's contract and nothing else.
#[derive(Debug, Clone, Default, PartialEq)]
struct Memory {
    positions: HashMap<(String, i32), i64>,
    records: BTreeMap<String, RecordRow>,
    entries: BTreeMap<(String, String), Entry>,
    history: BTreeMap<(String, u32), HistoryRow>,
    events: BTreeMap<(String, String), StoredEvent>,
    counters: BTreeMap<(Counter, String, RecordKind), i64>,
}

impl Memory {
    /// What must not depend on the order: everything but the positions, counters at zero
    /// being the same as none.
    fn ledger(&self) -> impl PartialEq + std::fmt::Debug {
        let counters: BTreeMap<_, _> = self
            .counters
            .iter()
            .filter(|(_, v)| **v != 0)
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        (
            self.records.clone(),
            self.entries.clone(),
            self.history.clone(),
            self.events.clone(),
            counters,
        )
    }
}

impl LedgerPort for Memory {
    type Error = std::convert::Infallible;

    async fn lock_positions(
        &mut self,
        partitions: Vec<(String, i32)>,
    ) -> Result<HashMap<(String, i32), i64>, Self::Error> {
        Ok(partitions
            .into_iter()
            .filter_map(|k| self.positions.get(&k).map(|v| (k, *v)))
            .collect())
    }

    async fn load(&mut self, record_ids: Vec<String>) -> Result<Vec<Stored>, Self::Error> {
        let mut out = Vec::new();
        for id in record_ids {
            let record = self.records.get(&id).cloned();
            let entries: Vec<Entry> = self
                .entries
                .range((id.clone(), String::new())..)
                .take_while(|((r, _), _)| *r == id)
                .map(|(_, e)| e.clone())
                .collect();
            let mut logged: Vec<_> = self
                .events
                .range((id.clone(), String::new())..)
                .take_while(|((r, _), _)| *r == id)
                .map(|(_, e)| (e.ord.clone(), e.kind))
                .collect();
            logged.sort();
            let history_len = self
                .history
                .range((id.clone(), 0)..)
                .take_while(|((r, _), _)| *r == id)
                .count() as u32;
            if record.is_none() && logged.is_empty() {
                continue;
            }
            out.push(Stored {
                record_id: id,
                state: RecordState { record, entries },
                logged,
                history_len,
            });
        }
        Ok(out)
    }

    async fn load_events(&mut self, record_id: String) -> Result<Vec<StoredEvent>, Self::Error> {
        Ok(self
            .events
            .range((record_id.clone(), String::new())..)
            .take_while(|((r, _), _)| *r == record_id)
            .map(|(_, e)| e.clone())
            .collect())
    }

    async fn write(&mut self, writes: Writes) -> Result<(), Self::Error> {
        for w in writes.records {
            let id = w.record_id.clone();
            let only = |k: &(String, String)| k.0 == id;
            if w.purge {
                self.records.remove(&id);
                self.entries.retain(|k, _| !only(k));
                self.history.retain(|k, _| k.0 != id);
                self.events.retain(|k, _| !only(k));
            }
            if let Some(r) = w.record {
                self.records.insert(id.clone(), r);
            }
            for e in w.entries {
                self.entries.insert((id.clone(), e.department.clone()), e);
            }
            for e in w.events {
                self.events
                    .entry((id.clone(), e.ord.event_id.clone()))
                    .or_insert(e);
            }
            let (from, rows) = match w.history {
                HistoryWrite::Append { from, rows } => (from, rows),
                HistoryWrite::Replace(rows) => {
                    self.history.retain(|k, _| k.0 != id);
                    (0, rows)
                }
            };
            for (i, h) in rows.into_iter().enumerate() {
                self.history.insert((id.clone(), from + i as u32), h);
            }
        }
        for c in writes.counters {
            *self
                .counters
                .entry((c.name, c.department, c.kind))
                .or_default() += c.delta;
        }
        for (k, v) in writes.positions {
            self.positions.insert(k, v);
        }
        Ok(())
    }
}

/// A message: its topic's kind and its CloudEvent.
#[derive(Debug, Clone)]
struct Message {
    kind: RecordKind,
    at: DateTime<FixedOffset>,
    payload: Vec<u8>,
}

/// A small deterministic generator, so a failing seed is a reproducible case.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const ITEMS: [&str; 3] = ["000117006000", "000118002000", "999"];
const DEPARTMENTS: [&str; 5] = ["szs-scjg", "szs-wjw", "szs-zjj", "nx-scjg", "szs-xzsp"];

fn envelope(
    kind: RecordKind,
    id: &str,
    subject: &str,
    time: DateTime<FixedOffset>,
    data: Value,
) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "specversion": "1.0", "id": id, "source": "/test",
        "type": format!("cn.shenguan.{}", kind.versioned()), "subject": subject,
        "time": rfc3339(time), "datacontenttype": "application/json", "data": data,
    }))
    .unwrap()
}

/// What happened, in time order: a few records and what departments, the tracker and
/// retention did about them.
fn history_of(seed: u64) -> Vec<Message> {
    let mut rng = Rng(seed);
    let start = FixedOffset::east_opt(8 * 3600)
        .unwrap()
        .with_ymd_and_hms(2026, 3, 2, 9, 0, 0)
        .unwrap();
    let mut out = Vec::new();
    let records = 1 + rng.below(3);
    for r in 0..records {
        let id = format!("r{r}");
        let published = start + Duration::minutes(rng.below(600) as i64);
        let item = *rng.pick(&ITEMS);
        let decided = published - Duration::hours(rng.below(30) as i64);
        // An approval (with a commitment now and then), a request from a supervision department
        // the bureau decides on (its decision goes back to the requester), or a notice (a
        // training to attend, a meeting, a policy document forwarded after its receipt).
        let (kind, data) = match rng.below(6) {
            0 => (
                RecordKind::Supervision,
                json!({
                    "record_id": id, "kind": "supervision",
                    "action": *rng.pick(&["撤销许可", "变更许可", "审批结果异议", "行政处罚"]),
                    "source": {"system": "test", "adapter": "nx-scjg-supervision", "business_key": id},
                    "decided_at": rfc3339(decided),
                }),
            ),
            1 => {
                let starts = rfc3339(published + Duration::hours(rng.below(96) as i64));
                let extra = match rng.below(3) {
                    0 => json!({"training": {"starts_at": starts}}),
                    1 => json!({"meeting": {"kind": "联席会议", "starts_at": starts}}),
                    _ => json!({"received_at": rfc3339(decided)}),
                };
                let mut d = json!({
                    "record_id": id, "kind": "notice", "notice_type": "业务培训信息",
                    "source": {"system": "test", "adapter": "notice", "business_key": id},
                    "title": "通知", "issuer": "x", "issuer_code": "szs-xzsp",
                    "issued_at": rfc3339(decided), "audience": ["szs-scjg", "szs-wjw"],
                });
                for (k, v) in extra.as_object().unwrap() {
                    d[k] = v.clone();
                }
                (RecordKind::Notice, d)
            }
            n => {
                let mut d = json!({
                    "record_id": id, "kind": "approval",
                    "source": {"system": "test", "adapter": "nx-zwfw-approval", "business_key": id},
                    "item": {"code": item, "name": "事项"},
                    "decided_at": rfc3339(decided),
                });
                if n == 2 {
                    d["commitment"] = json!({"is_commitment": true, "period_end": "2026-03-20",
                                             "verification": if rng.below(2) == 0 { json!({"exempt": true}) } else { json!({"due_date": "2026-03-25"}) }});
                }
                (RecordKind::Approval, d)
            }
        };
        out.push(Message {
            kind,
            at: published,
            payload: envelope(kind, &format!("ev-{id}"), &id, published, data.clone()),
        });
        if rng.below(4) == 0 {
            // A new version, later.
            let at = published + Duration::hours(1 + rng.below(48) as i64);
            let mut v2 = data.clone();
            v2["title"] = json!("变更后");
            v2["decided_at"] = json!(rfc3339(at));
            out.push(Message {
                kind,
                at,
                payload: envelope(kind, &format!("ev-{id}-2"), &id, at, v2),
            });
        }
        // Claim-topic and feedback events, sometimes stamped a little before the record.
        for n in 0..rng.below(6) {
            let at = published + Duration::minutes(rng.below(5 * 24 * 60) as i64 - 30);
            let department = *rng.pick(&DEPARTMENTS);
            let choice = rng.below(10);
            let (kind, data) = match choice {
                0..=5 => {
                    let action =
                        *rng.pick(&["claim", "claim", "return", "forward", "route", "deliver"]);
                    let mut d = json!({"record_id": id, "department": department, "action": action,
                                       "at": rfc3339(at), "reason": "非本部门监管事项"});
                    if action == "forward" {
                        d["to"] = json!(*rng.pick(&DEPARTMENTS));
                    }
                    (RecordKind::Claim, d)
                }
                6..=7 => {
                    let t = *rng.pick(&[
                        "supervision_started",
                        "rectification",
                        "other",
                        "disposition",
                        "attendance",
                        "commitment_verified",
                    ]);
                    (
                        RecordKind::Feedback,
                        json!({"record_id": id, "department": department, "feedback_type": t,
                               "at": rfc3339(at), "content": "已开展监管"}),
                    )
                }
                _ => {
                    let level = *rng.pick(&["due_soon", "overdue", "escalated"]);
                    let rule = *rng.pick(&[
                        "claim_approval",
                        "claim_supervision",
                        "claim_notice",
                        "confirm_attendance",
                        "claim_decision",
                        "disposition_feedback",
                        "verify_commitment",
                    ]);
                    (
                        RecordKind::Alert,
                        json!({"record_id": id, "department": department, "kind": "approval",
                               "level": level, "rule": rule, "policy": "yuanqu-2022",
                               "at": rfc3339(at), "message": "tracker"}),
                    )
                }
            };
            let event_id = match kind {
                RecordKind::Alert => alert_id(
                    &id,
                    Some(department),
                    data["rule"].as_str().unwrap(),
                    data["level"].as_str().unwrap(),
                ),
                _ => format!("{}-{id}-{n}", kind.as_str()),
            };
            out.push(Message {
                kind,
                at,
                payload: envelope(kind, &event_id, &id, at, data),
            });
        }
        // Notifications on the alert topic, which the ledger reads past.
        if rng.below(3) == 0 {
            let at = published + Duration::hours(2);
            out.push(Message {
                kind: RecordKind::Alert,
                at,
                payload: envelope(
                    RecordKind::Alert,
                    &format!("closed-{id}"),
                    &id,
                    at,
                    json!({"record_id": id, "department": "szs-scjg", "kind": "approval",
                           "level": "closed", "rule": "claim_approval", "at": rfc3339(at)}),
                ),
            });
        }
        if rng.below(6) == 0 {
            let at = published + Duration::days(60);
            out.push(Message {
                kind: RecordKind::Claim,
                at,
                payload: envelope(
                    RecordKind::Claim,
                    &format!("purge-{id}"),
                    &id,
                    at,
                    json!({"record_id": id, "department": "szs-xzsp", "action": "purge",
                           "at": rfc3339(at), "actor": "shenguan"}),
                ),
            });
        }
    }
    // A claim about a record that never arrives.
    if rng.below(3) == 0 {
        let at = start + Duration::hours(3);
        out.push(Message {
            kind: RecordKind::Claim,
            at,
            payload: envelope(
                RecordKind::Claim,
                "claim-ghost",
                "ghost",
                at,
                json!({"record_id": "ghost", "department": "szs-scjg", "action": "claim", "at": rfc3339(at)}),
            ),
        });
    }
    out.sort_by_key(|m| m.at);
    out
}

/// One topic's messages in the order the bus holds them, each with its offset; now and then a
/// message is there twice (at-least-once publishing).
type Topic = Vec<(i64, Message)>;

fn topics(messages: &[Message], rng: &mut Rng) -> Vec<Topic> {
    let mut by: Vec<(RecordKind, Topic)> = Vec::new();
    for m in messages {
        let topic = match by.iter_mut().find(|(k, _)| *k == m.kind) {
            Some((_, v)) => v,
            None => {
                by.push((m.kind, Vec::new()));
                &mut by.last_mut().unwrap().1
            }
        };
        let copies = if rng.below(8) == 0 { 2 } else { 1 };
        for _ in 0..copies {
            let offset = topic.len() as i64;
            topic.push((offset, m.clone()));
        }
    }
    by.into_iter().map(|(_, v)| v).collect()
}

/// The topics read in the order things happened: always the message with the earliest time
/// next (each topic's own order kept).
fn as_it_happened(topics: &[Topic]) -> Vec<(usize, i64, Message)> {
    let mut next = vec![0usize; topics.len()];
    let mut out = Vec::new();
    while let Some(t) = (0..topics.len())
        .filter(|t| next[*t] < topics[*t].len())
        .min_by_key(|t| (topics[*t][next[*t]].1.at, *t))
    {
        let (offset, m) = topics[t][next[t]].clone();
        out.push((t, offset, m));
        next[t] += 1;
    }
    out
}

/// A random interleaving of the topics, each topic's own order kept.
fn interleave(topics: &[Topic], rng: &mut Rng) -> Vec<(usize, i64, Message)> {
    let mut next = vec![0usize; topics.len()];
    let mut out = Vec::new();
    loop {
        let open: Vec<usize> = (0..topics.len())
            .filter(|t| next[*t] < topics[*t].len())
            .collect();
        if open.is_empty() {
            return out;
        }
        let t = *rng.pick(&open);
        let (offset, m) = topics[t][next[t]].clone();
        out.push((t, offset, m));
        next[t] += 1;
    }
}

/// Applies `stream` to `memory` in bursts of random size.
fn run(stream: &[(usize, i64, Message)], rng: &mut Rng, mut memory: Memory) -> Memory {
    let catalog = Catalog::load(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../catalog/routing.yaml"),
    )
    .unwrap();
    let (calendar, policies) = (Calendar::builtin(), Policies::builtin());
    let ctx = Context {
        catalog: &catalog,
        calendar: &calendar,
        policies: &policies,
        policy: "yuanqu-2022",
    };
    let topic_names: Vec<String> = (0..8).map(|t| format!("topic-{t}")).collect();
    let mut i = 0;
    while i < stream.len() {
        let n = 1 + rng.below(6) as usize;
        let burst = &stream[i..(i + n).min(stream.len())];
        let decoded: Vec<_> = burst
            .iter()
            .map(|(_, _, m)| decode(m.kind, &m.payload))
            .collect();
        let inputs: Vec<Input> = burst
            .iter()
            .zip(&decoded)
            .map(|((t, offset, m), decoded)| Input {
                topic: &topic_names[*t],
                partition: 0,
                offset: *offset,
                kind: m.kind,
                payload: &m.payload,
                decoded,
            })
            .collect();
        futures_lite_block_on(apply_batch(&mut memory, &inputs, &ctx, true)).unwrap();
        i += n;
    }
    memory
}

/// Runs a future that never waits (the in-memory port completes at once).
fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::task::{Context as TaskContext, Poll, RawWaker, RawWakerVTable, Waker};
    fn noop(_: *const ()) {}
    fn clone(p: *const ()) -> RawWaker {
        RawWaker::new(p, &VTABLE)
    }
    static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, noop, noop, noop);
    let waker = unsafe { Waker::from_raw(RawWaker::new(std::ptr::null(), &VTABLE)) };
    let mut cx = TaskContext::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the in-memory port never waits"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256)
    ))]

    #[test]
    fn any_interleaving_of_the_topics_gives_the_ledger_of_the_order_things_happened(
        seed in any::<u64>(),
        order in any::<u64>(),
    ) {
        let happened = history_of(seed);
        let topics = topics(&happened, &mut Rng(seed ^ 0x5eed));
        let mut rng = Rng(order);
        let reference = run(&as_it_happened(&topics), &mut rng, Memory::default());
        prop_assert!(!reference.events.is_empty(), "every event is logged with its record");
        let shuffled = interleave(&topics, &mut rng);
        let other = run(&shuffled, &mut rng, Memory::default());
        prop_assert_eq!(reference.ledger(), other.ledger());
        // Everything read again from the beginning (positions lost) changes nothing.
        let mut again = other.clone();
        again.positions.clear();
        let again = run(&interleave(&topics, &mut rng), &mut rng, again);
        prop_assert_eq!(other.ledger(), again.ledger());
    }
}
