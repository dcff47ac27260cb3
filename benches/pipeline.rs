//! In-process benchmarks (criterion): the pipeline on realistic 政务服务网 batches, the adapter
//! mapping alone, schema validation alone, and the working-day calendar.
//! `cargo bench --bench pipeline`; the whole-system table is `shenguan bench`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shenguan::adapter::AdapterSet;
use shenguan::pipeline::{self, Outcome, Unit};
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
    let records: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
    group.bench_function("map only, 500 records", |b| {
        b.iter(|| {
            records
                .iter()
                .filter(|r| adapter.map(black_box(r)).is_ok())
                .count()
        })
    });
    let mapped: Vec<serde_json::Value> = match pipeline::process(
        &adapter,
        &schemas,
        &body,
        None,
        None,
        Unit::Body,
        received,
        usize::MAX,
    ) {
        Ok(outcomes) => outcomes
            .into_iter()
            .filter_map(|o| match o {
                Outcome::Accepted(c) => Some(
                    serde_json::from_slice::<serde_json::Value>(&c.event).unwrap()["data"].take(),
                ),
                Outcome::Rejected(_) => None,
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    group.bench_function("validate only, 500 records", |b| {
        b.iter(|| {
            mapped
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
