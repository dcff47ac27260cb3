//! What a `shenguan run` process does: everything (`all`, the single-machine setup), or one side
//! of the gateway so that each side scales on its own.
//!
//! - `ingest`: the pull sources, `POST /v1/ingest/{adapter}` and publishing to the bus, with the
//!   de-duplication table. Instances share nothing but the bus (and the state store for tokens,
//!   when it is PostgreSQL): a site runs as many as the traffic needs behind a load balancer.
//! - `ledger`: the projector, the tracker, webhook delivery and notifications, the department
//!   API and the console. One instance applies the record topics to the ledger.
//!
//! Both serve `/healthz`, `/readyz`, `/metrics` and `/openapi.json`. A path of the other role is
//! answered 404 with the problem type `wrong-role`, which names the role that serves it
//! (`api::served::served_by`). Split roles meet only on the bus, so they need Kafka: the embedded bus lives
//! inside one process ([`Role::check_bus`]).

use std::fmt;

/// The role of a `shenguan run` process.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Deserialize,
    serde::Serialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything in one process (the embedded setup).
    #[default]
    All,
    /// Sources, `/v1/ingest` and publishing.
    Ingest,
    /// Projector, tracker, delivery, department API and console.
    Ledger,
}

impl Role {
    /// The name used on the command line, in the configuration and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Ingest => "ingest",
            Role::Ledger => "ledger",
        }
    }

    /// Whether the process runs the sources and `/v1/ingest`.
    pub fn ingests(self) -> bool {
        matches!(self, Role::All | Role::Ingest)
    }

    /// Whether the process keeps the ledger: projector, tracker, delivery, department API and
    /// console.
    pub fn keeps_ledger(self) -> bool {
        matches!(self, Role::All | Role::Ledger)
    }

    /// Refuses a split role on a bus that only one process can see (`bus_url` not `kafka://`).
    pub fn check_bus(self, bus_url: &str) -> Result<(), String> {
        if self == Role::All || bus_url.starts_with("kafka://") {
            return Ok(());
        }
        Err(format!(
            "--role {self} needs a Kafka bus (--bus kafka://HOST:PORT): the bus '{bus_url}' is \
             embedded in one process, so an ingest and a ledger instance could not share it; \
             run --role all for a single-machine gateway"
        ))
    }
}

impl Role {
    /// Sets up the C library's allocator for the process, before its threads start. An ingest
    /// process keeps its own data in the Rust allocator; what uses the C library's `malloc` is
    /// librdkafka, whose threads each get an arena of their own and keep its pages. Two arenas
    /// for the whole process: under the peer benchmark (`bash scripts/bench.sh --only peer
    /// --peer-args "--role ingest"`) 167 MiB resident instead of 191 MiB, at 17.6 µs of CPU a
    /// record instead of 18.2. The other roles keep the default: their SQLite connections
    /// allocate from several threads at once. An ingest process also has mimalloc give freed
    /// memory back after 100 ms instead of 1 s (with [`Role::max_blocking_threads`]: 155–158 →
    /// 133–136 MiB under the same benchmark, for 1–2 µs of CPU a record).
    pub fn tune_allocator(self) {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        if self == Role::Ingest {
            // SAFETY: `mallopt` only sets a limit of the allocator for arenas created later;
            // it is called before the process starts any thread.
            unsafe {
                libc::mallopt(libc::M_ARENA_MAX, 2);
            }
        }
        if self == Role::Ingest {
            // SAFETY: sets one of mimalloc's options, a plain integer it reads when it
            // schedules a purge.
            unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
        }
    }

    /// The most blocking threads of the process's runtime, where it is not the runtime's
    /// default: an ingest process runs each request's pipeline on one, and more threads than
    /// twice the cores only hold more memory (each has a heap of its own).
    pub fn max_blocking_threads(self) -> Option<usize> {
        (self == Role::Ingest)
            .then(|| std::thread::available_parallelism().map_or(2, |n| n.get()) * 2)
    }
}

/// mimalloc's `mi_option_purge_delay`: its place in mimalloc 3's `mi_option_t` (the bindings
/// name only mimalloc 2's options).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// How long mimalloc keeps freed memory before it gives it back to the system, in an ingest
/// process (mimalloc's default is 1,000 ms).
const PURGE_DELAY_MS: std::ffi::c_long = 100;

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_the_ingest_role_sets_is_mimallocs_option() {
        // SAFETY: reads one of mimalloc's options.
        let (delay, stats) = unsafe {
            (
                libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY),
                libmimalloc_sys::mi_option_get(libmimalloc_sys::mi_option_show_stats),
            )
        };
        // mimalloc 3's defaults: a purge delay of 1,000 ms, no statistics at exit.
        assert_eq!((delay, stats), (1000, 0));
    }

    #[test]
    fn split_roles_need_kafka() {
        assert!(Role::All.check_bus("embedded").is_ok());
        assert!(Role::Ingest.check_bus("kafka://localhost:9092").is_ok());
        let e = Role::Ledger.check_bus("embedded").unwrap_err();
        assert!(e.contains("--role ledger needs a Kafka bus") && e.contains("--role all"));
    }
}
