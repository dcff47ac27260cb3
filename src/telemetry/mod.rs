//! Observability: every metric name and label key is defined here, once; every observable
//! occurrence is one function in [`events`] that logs and counts together. Labels come only from
//! bounded sets (configured adapter names, topic names, fixed stage and reason codes) — never a
//! record id or an error string.

pub mod events;

use std::sync::LazyLock;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub const INGESTED: &str = "shenguan_records_ingested_total";
pub const PUBLISHED: &str = "shenguan_records_published_total";
pub const DLQ: &str = "shenguan_dlq_records_total";
pub const PIPELINE_LATENCY: &str = "shenguan_pipeline_latency_seconds";
pub const BUS_ERRORS: &str = "shenguan_bus_errors_total";
pub const PUSH_LATENCY: &str = "shenguan_push_latency_seconds";
pub const CLAIM_LATENCY: &str = "shenguan_claim_latency_seconds";
pub const UNCLAIMED: &str = "shenguan_unclaimed_records";
pub const OVERDUE: &str = "shenguan_overdue_records";
pub const OLDEST_UNCLAIMED: &str = "shenguan_oldest_unclaimed_age_seconds";
pub const BREACHES: &str = "shenguan_deadline_breaches_total";
pub const UNROUTED: &str = "shenguan_unrouted_records";
pub const WAITING: &str = "shenguan_ledger_waiting_events";
pub const DELIVERY_ATTEMPTS: &str = "shenguan_delivery_attempts_total";
pub const CALENDAR_DAYS_REMAINING: &str = "shenguan_calendar_days_remaining";
pub const DEADLINE_UNCOMPUTABLE: &str = "shenguan_deadline_uncomputable_total";
pub const POLICY_OUT_OF_PERIOD: &str = "shenguan_policy_out_of_period";
pub const BUS_UP: &str = "shenguan_bus_up";
pub const CONSUMER_LAG: &str = "shenguan_consumer_lag_messages";
pub const BUILD_INFO: &str = "shenguan_build_info";

/// Pipeline latency (received → acknowledged by the bus) is milliseconds, with a tail for a
/// slow broker.
const PIPELINE_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Push and claim latency run from minutes to working weeks.
const BUSINESS_BUCKETS: [f64; 14] = [
    60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0, 172800.0, 259200.0,
    432000.0, 604800.0, 1209600.0,
];

/// The record kinds that are routed to departments (the `kind` label).
pub const KINDS: [&str; 3] = ["approval", "supervision", "notice"];
/// Outcomes of a source record (`shenguan_records_ingested_total`).
pub const INGEST_OUTCOMES: [&str; 3] = ["accepted", "rejected", "duplicate"];
/// Outcomes of a webhook delivery (`shenguan_delivery_attempts_total`).
pub const DELIVERY_OUTCOMES: [&str; 3] = ["ok", "failed", "dead_lettered"];
/// Bus operations that can fail (`shenguan_bus_errors_total`).
pub const BUS_OPERATIONS: [&str; 4] = ["publish", "consume", "subscribe", "commit"];
/// Every (stage, reason) a request to an adapter can be dead-lettered with: the reason codes of
/// the pipeline (`crate::pipeline`: decode, parse, map, validate) and of the ingest endpoint's
/// refusals before decoding (`unsupported_media_type`, `body_too_large`). A code missing here
/// still counts, from its first event on.
pub const INGEST_REJECTIONS: [(&str, &str); 16] = [
    ("decode", "unsupported_format"),
    ("decode", "unknown_charset"),
    ("decode", "invalid_encoding"),
    ("decode", "unsupported_media_type"),
    ("decode", "body_too_large"),
    ("parse", "malformed_json"),
    ("parse", "malformed_xml"),
    ("parse", "malformed_csv"),
    ("parse", "malformed_xlsx"),
    ("parse", "malformed_row"),
    ("parse", "too_many_records"),
    ("map", "not_a_record"),
    ("map", "refused_by_adapter"),
    ("map", "mapping_failed"),
    ("validate", "invalid_identifier"),
    ("validate", "schema_violation"),
];

/// The label values a gateway knows when it starts, from its definitions.
#[derive(Debug, Default, Clone)]
pub struct Known {
    /// Every loaded adapter with the kind it maps to (`approval` …).
    pub adapters: Vec<(String, String)>,
    /// Every topic the gateway publishes to.
    pub topics: Vec<String>,
    /// Whether this instance keeps the ledger (roles `all` and `ledger`): its gauges exist from
    /// the start.
    pub ledger: bool,
    /// The topics the ledger consumes (the `topic` label of the ledger's lag).
    pub ledger_topics: Vec<String>,
    /// Every catalog department, with whether it takes webhooks.
    pub departments: Vec<(String, bool)>,
    /// The deadline rules of the policy profile in force.
    pub rules: Vec<String>,
}

pub struct Metrics {
    pub registry: Registry,
    pub push_latency: HistogramVec,
    pub claim_latency: HistogramVec,
    pub unclaimed: IntGaugeVec,
    pub overdue: IntGaugeVec,
    pub oldest_unclaimed: prometheus::GaugeVec,
    pub breaches: IntCounterVec,
    pub unrouted: IntGaugeVec,
    /// Ledger events kept until their record arrives, by the kind of topic they came from.
    pub waiting: IntGaugeVec,
    pub delivery_attempts: IntCounterVec,
    pub calendar_days_remaining: prometheus::Gauge,
    pub deadline_uncomputable: prometheus::IntCounter,
    /// 1 while the policy profile in force is outside the period its regulation is in force.
    pub policy_out_of_period: IntGaugeVec,
    pub bus_up: prometheus::IntGauge,
    pub consumer_lag: IntGaugeVec,
    pub ingested: IntCounterVec,
    pub published: IntCounterVec,
    pub dlq: IntCounterVec,
    pub pipeline_latency: HistogramVec,
    pub bus_errors: IntCounterVec,
    pub build_info: IntGaugeVec,
}

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new();
        let ingested = IntCounterVec::new(
            Opts::new(
                INGESTED,
                "Source records received, by adapter and outcome (accepted, rejected, duplicate).",
            ),
            &["adapter", "outcome"],
        )
        .expect("valid metric");
        let published = IntCounterVec::new(
            Opts::new(PUBLISHED, "Messages acknowledged by the bus, by topic."),
            &["topic"],
        )
        .expect("valid metric");
        let dlq = IntCounterVec::new(
            Opts::new(
                DLQ,
                "Rejected inputs written to the dead-letter topic, by adapter, stage and reason.",
            ),
            &["adapter", "stage", "reason"],
        )
        .expect("valid metric");
        let pipeline_latency = HistogramVec::new(
            HistogramOpts::new(
                PIPELINE_LATENCY,
                "Seconds from receiving a record to its acknowledgement by the bus.",
            )
            .buckets(PIPELINE_BUCKETS.to_vec()),
            &["adapter"],
        )
        .expect("valid metric");
        let bus_errors = IntCounterVec::new(
            Opts::new(
                BUS_ERRORS,
                "Failed bus operations, by operation (publish, consume).",
            ),
            &["operation"],
        )
        .expect("valid metric");
        let build_info = IntGaugeVec::new(
            Opts::new(
                BUILD_INFO,
                "Always 1; the labels tell the running version and the instance's role (all, ingest, ledger).",
            ),
            &["version", "role"],
        )
        .expect("valid metric");
        let push_latency = HistogramVec::new(
            HistogramOpts::new(
                PUSH_LATENCY,
                "Seconds from the business decision to publication, by adapter and kind.",
            )
            .buckets(BUSINESS_BUCKETS.to_vec()),
            &["adapter", "kind"],
        )
        .expect("valid metric");
        let claim_latency = HistogramVec::new(
            HistogramOpts::new(
                CLAIM_LATENCY,
                "Seconds from publication to claim, by department and kind.",
            )
            .buckets(BUSINESS_BUCKETS.to_vec()),
            &["department", "kind"],
        )
        .expect("valid metric");
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric")
        };
        let unclaimed = gauge(
            UNCLAIMED,
            "Records routed to a department and not yet claimed.",
            &["department", "kind"],
        );
        let overdue = gauge(
            OVERDUE,
            "Unclaimed records past their claim deadline.",
            &["department", "kind"],
        );
        let oldest_unclaimed = prometheus::GaugeVec::new(
            Opts::new(
                OLDEST_UNCLAIMED,
                "Age in seconds of the oldest unclaimed record.",
            ),
            &["department", "kind"],
        )
        .expect("valid metric");
        let breaches = IntCounterVec::new(
            Opts::new(BREACHES, "Deadlines missed, by department, kind and rule."),
            &["department", "kind", "rule"],
        )
        .expect("valid metric");
        let unrouted = gauge(
            UNROUTED,
            "Records waiting in the unrouted queue.",
            &["kind"],
        );
        let waiting = gauge(
            WAITING,
            "Ledger events (claims, feedback, alert levels) kept until the record they are about arrives, by kind.",
            &["kind"],
        );
        let delivery_attempts = IntCounterVec::new(
            Opts::new(
                DELIVERY_ATTEMPTS,
                "Webhook delivery attempts, by department and outcome (ok, failed, dead_lettered).",
            ),
            &["department", "outcome"],
        )
        .expect("valid metric");
        let calendar_days_remaining = prometheus::Gauge::new(
            CALENDAR_DAYS_REMAINING,
            "Days of holiday data left from today; add next year's calendar before this reaches 0.",
        )
        .expect("valid metric");
        let deadline_uncomputable = prometheus::IntCounter::new(
            DEADLINE_UNCOMPUTABLE,
            "Deadlines that could not be computed because the calendar has no data for the year.",
        )
        .expect("valid metric");
        let policy_out_of_period = gauge(
            POLICY_OUT_OF_PERIOD,
            "1 while records are decided under a policy profile outside the period its regulation is in force (e.g. jining-2022 after 2024-12-09), else 0.",
            &["policy"],
        );
        registry
            .register(Box::new(policy_out_of_period.clone()))
            .expect("unique metric");
        let bus_up = prometheus::IntGauge::new(
            BUS_UP,
            "1 when the bus answered the last readiness check, else 0.",
        )
        .expect("valid metric");
        let consumer_lag = gauge(
            CONSUMER_LAG,
            "Messages on a topic not yet applied by one of the gateway's own consumers.",
            &["consumer", "topic"],
        );
        registry
            .register(Box::new(bus_up.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(consumer_lag.clone()))
            .expect("unique metric");
        for h in [&push_latency, &claim_latency] {
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
        }
        for g in [&unclaimed, &overdue, &unrouted, &waiting] {
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
        }
        registry
            .register(Box::new(oldest_unclaimed.clone()))
            .expect("unique metric");
        // The calendar's series are the ledger's: registered by `register_known` for a process
        // that keeps the ledger.
        for c in [
            &ingested,
            &published,
            &dlq,
            &bus_errors,
            &breaches,
            &delivery_attempts,
        ] {
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
        }
        registry
            .register(Box::new(pipeline_latency.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(build_info.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("unique metric");
        // Series that exist from the start, so rate() and increase() see their first event.
        for operation in BUS_OPERATIONS {
            bus_errors.with_label_values(&[operation]);
        }
        Metrics {
            registry,
            push_latency,
            claim_latency,
            unclaimed,
            overdue,
            oldest_unclaimed,
            breaches,
            unrouted,
            waiting,
            delivery_attempts,
            calendar_days_remaining,
            deadline_uncomputable,
            policy_out_of_period,
            bus_up,
            consumer_lag,
            ingested,
            published,
            dlq,
            pipeline_latency,
            bus_errors,
            build_info,
        }
    }

    /// `shenguan_build_info` of this process, with the role it runs.
    pub fn build_info(&self, role: &str) {
        self.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), role])
            .set(1);
    }

    /// Creates a catalog department's series at zero: deliveries (when it takes webhooks) and
    /// the open-record gauges, so dashboards show 0, not "no data", and alerts see first events.
    pub fn register_department(&self, department: &str, webhook: bool) {
        if webhook {
            for outcome in DELIVERY_OUTCOMES {
                self.delivery_attempts
                    .with_label_values(&[department, outcome]);
            }
        }
        for kind in KINDS {
            self.unclaimed.with_label_values(&[department, kind]).set(0);
            self.overdue.with_label_values(&[department, kind]).set(0);
            self.oldest_unclaimed
                .with_label_values(&[department, kind])
                .set(0.0);
        }
    }

    /// Creates the series of a known adapter at zero, so dashboards and `rate()` see it before
    /// its first record: its outcomes, its pipeline and push latency (for the kind it maps to)
    /// and every DLQ stage and reason a request for it can end in.
    pub fn register_adapter(&self, adapter: &str, kind: &str) {
        for outcome in INGEST_OUTCOMES {
            self.ingested.with_label_values(&[adapter, outcome]);
        }
        self.pipeline_latency.with_label_values(&[adapter]);
        self.push_latency.with_label_values(&[adapter, kind]);
        for (stage, reason) in INGEST_REJECTIONS {
            self.dlq.with_label_values(&[adapter, stage, reason]);
        }
    }

    /// Exports every series whose label values are known at start-up, at zero — as the
    /// Prometheus instrumentation guidelines advise — so that a fresh gateway's scrape has every
    /// family with its `# TYPE` line, dashboards show 0 rather than "no data", and `increase()`
    /// sees the first event. The prometheus crate leaves a labelled family out of the exposition
    /// until one of its series exists; a family whose values are not known yet (a new adapter
    /// hot-loaded later) gains its series on its first event.
    pub fn register_known(&self, known: &Known) {
        for (adapter, kind) in &known.adapters {
            self.register_adapter(adapter, kind);
        }
        for topic in &known.topics {
            self.published.with_label_values(&[topic]);
        }
        for (department, webhook) in &known.departments {
            self.register_department(department, *webhook);
            // Every department, with a webhook or not, so the family exists on every site; a
            // department without one stays at 0 attempts, which is the truth.
            for outcome in DELIVERY_OUTCOMES {
                self.delivery_attempts
                    .with_label_values(&[department, outcome]);
            }
            for kind in KINDS {
                self.claim_latency.with_label_values(&[department, kind]);
                for rule in &known.rules {
                    self.breaches.with_label_values(&[department, kind, rule]);
                }
            }
        }
        if known.departments.iter().any(|(_, webhook)| *webhook) {
            // A delivery that never succeeds is dead-lettered under the record's adapter, under
            // `delivery` for records the API created, and under `notification` for digests.
            let senders = known
                .adapters
                .iter()
                .map(|(a, _)| a.as_str())
                .chain(["delivery", "notification"]);
            for adapter in senders {
                self.dlq
                    .with_label_values(&[adapter, "deliver", "webhook_failed"]);
            }
        }
        if known.ledger {
            // Registered once per process (a second gateway in the same process finds them).
            let _ = (self.registry).register(Box::new(self.calendar_days_remaining.clone()));
            let _ = (self.registry).register(Box::new(self.deadline_uncomputable.clone()));
            for kind in KINDS {
                self.unrouted.with_label_values(&[kind]).set(0);
            }
        }
        for kind in ["claim", "feedback", "alert"] {
            self.waiting.with_label_values(&[kind]).set(0);
        }
        for topic in &known.ledger_topics {
            self.consumer_lag.with_label_values(&["ledger", topic]);
        }
        for operation in BUS_OPERATIONS {
            self.bus_errors.with_label_values(&[operation]);
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        String::from_utf8(buf).expect("exposition is UTF-8")
    }
}

/// The process-wide metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// Sets up logging: `text` or `json`, filter from `RUST_LOG` or the configured level.
pub fn init_logging(format: &str, level: &str) {
    use tracing_subscriber::EnvFilter;
    // PostgreSQL's notices ("relation already exists, skipping") are not the operator's concern.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},tokio_postgres=warn")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if format == "json" {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}
