//! In-process benchmarks (criterion): the pipeline on realistic 政务服务网 batches, parsing,
//! mapping and schema validation alone, and the working-day calendar.
//! `cargo bench --bench pipeline`; the whole-system table is `shenguan bench`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shenguan::adapter::path::Scope;
use shenguan::adapter::view::{Parsed, RecordSeed, RecordsSeed};
use shenguan::adapter::AdapterSet;
use shenguan::pipeline::{self, Outcome, Unit};
use shenguan::schema::canonical::Canonical;
use shenguan::schema::{RecordKind, Schemas};

fn pipeline(c: &mut Criterion) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let schemas = Schemas::load(Some(&root.join("schemas"))).expect("schemas");
    let adapters = AdapterSet::load(&root.join("adapters"), &schemas).expect("adapters");
    let adapter = adapters.get("nx-zwfw-approval").expect("adapter");
    let body = shenguan::bench::bodies(500, 500).remove(0);
    let received = shenguan::adapter::convert::now_shanghai();

    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(500));
    group.sample_size(20);
    group.bench_function("parse+map+validate, batch of 500", |b| {
        b.iter(|| {
            let out = pipeline::process(
                &adapter,
                &schemas,
                black_box(&body),
                None,
                None,
                Unit::Body,
                received,
                usize::MAX,
            )
            .expect("ok");
            assert!(matches!(out[0], Outcome::Accepted(_)));
            out
        })
    });
    // The stages on their own: parsing the batch into the adapter's record slots, mapping the
    // parsed records, and validating the mapped records (as the pipeline does, in place, and as
    // `serde_json::Value`s for comparison).
    let text = std::str::from_utf8(&body).unwrap();
    let slots = adapter.slots().expect("the adapter reads named members");
    let parse = || {
        use serde::de::DeserializeSeed as _;
        let mut de = serde_json::Deserializer::from_str(text);
        RecordsSeed(RecordSeed {
            slots,
            strict: false,
        })
        .deserialize(&mut de)
        .expect("records")
    };
    group.bench_function("parse only, 500 records", |b| b.iter(|| parse().len()));
    let parsed = parse();
    let scopes: Vec<Scope> = parsed
        .iter()
        .map(|p| match p {
            Parsed::Slots(s) => Scope::Record(s),
            Parsed::Other(_) => panic!("a record is an object"),
        })
        .collect();
    group.bench_function("map only, 500 records", |b| {
        b.iter(|| {
            scopes
                .iter()
                .filter(|r| adapter.map(*black_box(*r)).is_ok())
                .count()
        })
    });
    let received_text = received.to_rfc3339_opts(chrono::SecondsFormat::Millis, false);
    let records: Vec<Canonical> = scopes
        .iter()
        .map(|r| {
            let mapped = adapter.map(*r).expect("mapped");
            let text = |s: &str| Canonical::String(s.to_string().into());
            let mut members = vec![
                (
                    "record_id",
                    text(&pipeline::record_id(&adapter.name, &mapped.business_key)),
                ),
                ("kind", text("approval")),
                (
                    "source",
                    Canonical::Object(vec![
                        ("system", text(&adapter.system)),
                        ("adapter", text(&adapter.name)),
                        ("business_key", text(&mapped.business_key)),
                        ("received_at", text(&received_text)),
                    ]),
                ),
            ];
            members.extend(mapped.data);
            Canonical::Object(members)
        })
        .collect();
    group.bench_function("validate only, 500 records", |b| {
        b.iter(|| {
            records
                .iter()
                .filter(|d| {
                    schemas
                        .validate_canonical(RecordKind::Approval, black_box(d))
                        .is_empty()
                })
                .count()
        })
    });
    let values: Vec<serde_json::Value> = records.iter().map(Canonical::to_value).collect();
    group.bench_function("validate as serde_json values, 500 records", |b| {
        b.iter(|| {
            values
                .iter()
                .filter(|d| {
                    schemas
                        .validate(RecordKind::Approval, black_box(d))
                        .is_empty()
                })
                .count()
        })
    });
    group.finish();

    let calendar = shenguan::deadline::Calendar::builtin();
    let event = chrono::DateTime::parse_from_rfc3339("2026-09-30T16:00:00+08:00").unwrap();
    c.bench_function("calendar: deadline 3 working days after an event", |b| {
        b.iter(|| calendar.deadline_after(black_box(event), 3))
    });
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
