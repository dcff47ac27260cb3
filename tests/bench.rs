//! `shenguan bench` as an operator runs it: every workload against a real broker and a real
//! PostgreSQL server, small sizes, one table at the end.

mod common;

use common::{Broker, BIN};

/// The figures of a table line: the first number before `unit`.
fn figure(line: &str, unit: &str) -> f64 {
    let before = &line[..line
        .find(unit)
        .unwrap_or_else(|| panic!("no '{unit}' in: {line}"))];
    before
        .trim_end()
        .rsplit(|c: char| !(c.is_ascii_digit() || c == '.'))
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number before '{unit}' in: {line}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn one_command_runs_every_workload_and_prints_the_table() {
    let broker = Broker::start();
    let pg = common::postgres_database().await;
    let out = std::process::Command::new(BIN)
        .args([
            "bench",
            "--records",
            "1000",
            "--ledger-items",
            "2000",
            "--latency-seconds",
            "2",
            "--latency-rate",
            "2000",
            "--peer-warmup",
            "1",
            "--peer-seconds",
            "2",
            "--postgres",
            &pg,
            "--kafka",
            &broker.bootstrap(),
        ])
        .current_dir(common::repo())
        .env_remove("RUST_LOG")
        .output()
        .expect("run shenguan bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table: Vec<&str> = stdout
        .split("| workload | figure | target | peak RSS |")
        .nth(1)
        .unwrap_or_else(|| panic!("no table:\n{stdout}"))
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("|---"))
        .collect();
    let line = |start: &str| -> &str {
        table
            .iter()
            .find(|l| l.contains(start))
            .unwrap_or_else(|| panic!("no line '{start}' in the table:\n{stdout}"))
    };
    for threads in ["1 core", "2 threads"] {
        let l = line(&format!(
            "pipeline: parse+map+validate+route, {threads}, 1000 records"
        ));
        assert!(figure(l, "records/s") > 0.0, "{l}");
        assert!(l.ends_with(" MiB |"), "peak memory: {l}");
    }
    assert!(figure(line("embedded bus"), "records/s durable") > 0.0);
    for store in ["SQLite", "PostgreSQL"] {
        // The bulk load puts 1 in 100 open items a day past their deadline.
        let due = line(&format!(
            "tracker: find what is due among 2000 open items ({store})"
        ));
        assert!(
            due.contains("(20 near or past their deadline, 20 overdue)"),
            "{due}"
        );
        line(&format!(
            "tracker: refresh the gauges over 2000 open items ({store})"
        ));
        let report = line(&format!("of the month ({store})"));
        assert!(figure(report, " s (") >= 0.0, "{report}");
    }
    let latency = line("end to end: ingested → claimable");
    assert!(figure(latency, "samples") > 0.0, "{latency}");
    assert!(latency.contains("2000 records/s for 2 s"), "{latency}");
    assert!(figure(latency, "records/s sent") > 0.0, "{latency}");
    for partitions in [1, 6] {
        let kafka = line(&format!("{partitions} partition(s) per topic"));
        assert!(figure(kafka, "records/s; raw") > 0.0, "{kafka}");
        assert!(figure(kafka, "records/s; ratio") > 0.0, "{kafka}");
        assert!(kafka.contains("all projected into the ledger"), "{kafka}");
    }
    for l in [line("peer job: plain rdkafka producer"), line("(role all)")] {
        assert!(figure(l, "records/s") > 0.0, "{l}");
    }
}

/// The figures of a peer job line: records/s, request p50 and p99, CPU µs per record.
fn peer_figures(line: &str) -> (f64, f64, f64, f64) {
    (
        figure(line, "records/s"),
        figure(line, "ms, p99"),
        figure(&line[line.find("p99").expect("p99")..], "ms;"),
        figure(line, "µs/record"),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_peer_job_reports_throughput_latency_and_cpu_against_kafka_and_embedded() {
    let broker = Broker::start();
    // Extra arguments reach the gateway's `run` (here the bus it already has, given again).
    let extra = format!("--bus kafka://{}", broker.bootstrap());
    let out = std::process::Command::new(BIN)
        .args([
            "bench",
            "--only",
            "peer",
            "--peer-warmup",
            "1",
            "--peer-seconds",
            "3",
            "--peer-args",
            &extra,
            "--kafka",
            &broker.bootstrap(),
        ])
        .current_dir(common::repo())
        .env_remove("RUST_LOG")
        .output()
        .expect("run shenguan bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let table: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("| peer job"))
        .collect();
    assert_eq!(table.len(), 3, "{stdout}");
    let kafka = table
        .iter()
        .find(|l| l.contains(&format!(", Kafka, shenguan run {extra} |")))
        .unwrap_or_else(|| panic!("no Kafka line with the extra arguments:\n{stdout}"));
    let embedded = table
        .iter()
        .find(|l| l.contains("embedded bus + SQLite ledger (role all)"))
        .unwrap_or_else(|| panic!("no embedded line:\n{stdout}"));
    for l in [kafka, embedded] {
        assert!(
            l.contains(
                "B 双公示 records, 100 a request, 8 keep-alive connections, 3 s after 1 s warm-up"
            ),
            "{l}"
        );
        let (rate, p50, p99, cpu) = peer_figures(l);
        assert!(rate > 0.0, "{l}");
        assert!(p50 > 0.0 && p99 >= p50, "{l}");
        assert!(cpu > 0.0, "{l}");
        assert!(
            l.ends_with(" MiB |") && figure(l, " MiB |") > 0.0,
            "gateway memory: {l}"
        );
    }
    let plain = table
        .iter()
        .find(|l| l.contains("plain rdkafka producer, same"))
        .unwrap_or_else(|| panic!("no plain producer line:\n{stdout}"));
    assert!(figure(plain, "records/s;") > 0.0, "{plain}");
    assert!(figure(plain, "% of it") > 0.0, "{plain}");
    // The ledger caught up with every record the job sent.
    let (projected, sent) = (
        figure(embedded, " of "),
        figure(embedded, " projected at the end"),
    );
    assert!(sent > 0.0 && projected <= sent, "{embedded}");
    assert!(embedded.contains("caught up"), "{embedded}");
}

#[test]
fn an_unknown_workload_or_kafka_without_a_broker_is_refused() {
    let out = common::shenguan(&["bench", "--only", "pipeline,nonsense"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "unknown workload 'nonsense'; the workloads are pipeline, bus, ledger, latency, kafka, peer"
        ),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = common::shenguan(&["bench", "--only", "kafka"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the kafka workload needs a broker"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = common::shenguan(&["bench", "--only", "latency", "--latency-rate", "150"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--latency-rate 150: give a multiple of 100"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_peer_job_without_a_broker_runs_its_embedded_line_only() {
    let out = common::shenguan(&[
        "bench",
        "--only",
        "peer",
        "--peer-warmup",
        "0",
        "--peer-seconds",
        "2",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("| peer job"))
        .collect();
    assert_eq!(table.len(), 1, "{stdout}");
    assert!(
        table[0].contains("embedded bus + SQLite ledger (role all)")
            && table[0].contains("caught up"),
        "{stdout}"
    );
}
