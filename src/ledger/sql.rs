//! The ledger's tables and the conditions on them, once for both dialects. The state predicates
//! are built from the core's state sets ([`EntryState::UNCLAIMED`] …), never written out twice.

use super::exec::{DbError, Dialect, Exec, Param, Table, Ty};
use crate::ledger::EntryState;

/// The ledger schema this version writes. A ledger of an earlier schema is rebuilt from the bus
/// when the gateway opens it (see `migrate`).
pub const SCHEMA_VERSION: &str = "5";

/// The records' numbers (`seq`, given in the order the ledger meets the records) by record id:
/// see [`ddl`]. SQLite's writer gives them itself.
pub const IDS: Table = Table {
    name: "ledger_ids",
    columns: &[("seq", Ty::Int), ("record_id", Ty::Text)],
};

/// The rows of SQLite's id index [`ID_KEYS`]: the record's number and the [`id_term`] of its id.
pub const ID_KEY_ROWS: Table = Table {
    name: ID_KEYS,
    columns: &[("rowid", Ty::Int), ("terms", Ty::Text)],
};

pub const RECORDS: Table = Table {
    name: "ledger_records",
    columns: &[
        ("seq", Ty::Int),
        ("record_id", Ty::Text),
        ("kind", Ty::Text),
        ("event_id", Ty::Text),
        ("published_at", Ty::Int),
        ("decided_at", Ty::Int),
        ("adapter", Ty::Text),
        ("push_rule", Ty::Text),
        ("push_due_at", Ty::Int),
        ("push_late", Ty::Int),
        ("unrouted", Ty::Text),
        ("source_department", Ty::Text),
        ("link_license_no", Ty::Text),
        ("link_document_no", Ty::Text),
        ("link_uscc", Ty::Text),
        ("case_no", Ty::Text),
        ("title", Ty::Text),
        ("counterpart", Ty::Text),
        ("pusher", Ty::Text),
        ("pushed_at", Ty::Int),
        ("push_hours", Ty::Real),
        ("version", Ty::Int),
    ],
};

pub const ENTRIES: Table = Table {
    name: "ledger_entries",
    columns: &[
        ("seq", Ty::Int),
        ("record_id", Ty::Text),
        ("department", Ty::Text),
        ("kind", Ty::Text),
        ("state", Ty::Text),
        ("pushed_at", Ty::Int),
        ("delivered_at", Ty::Int),
        ("claimed_at", Ty::Int),
        ("returned_at", Ty::Int),
        ("feedback_at", Ty::Int),
        ("closed_at", Ty::Int),
        ("policy", Ty::Text),
        ("claim_rule", Ty::Text),
        ("claim_due_at", Ty::Int),
        ("feedback_rule", Ty::Text),
        ("feedback_due_at", Ty::Int),
        ("calendar_version", Ty::Text),
        ("deadline_problem", Ty::Text),
        ("alert_level", Ty::Int),
        ("note", Ty::Text),
        ("outcome", Ty::Text),
        ("via", Ty::Text),
        ("flow", Ty::Text),
        ("due_rule", Ty::Text),
        ("due_at", Ty::Int),
        ("version", Ty::Int),
        ("claim_hours", Ty::Real),
    ],
};

pub const HISTORY: Table = Table {
    name: "ledger_history",
    columns: &[
        ("seq", Ty::Int),
        ("record_id", Ty::Text),
        ("n", Ty::Int),
        ("department", Ty::Text),
        ("action", Ty::Text),
        ("actor", Ty::Text),
        ("channel", Ty::Text),
        ("at", Ty::Int),
        ("event_id", Ty::Text),
        ("detail", Ty::Text),
    ],
};

pub const EVENTS: Table = Table {
    name: "ledger_events",
    columns: &[
        ("seq", Ty::Int),
        ("record_id", Ty::Text),
        ("event_id", Ty::Text),
        ("at_ms", Ty::Int),
        ("rank", Ty::Int),
        ("kind", Ty::Text),
        ("topic", Ty::Text),
        ("part", Ty::Int),
        ("pos", Ty::Int),
        ("payload", Ty::Text),
    ],
};

pub const POSITIONS: Table = Table {
    name: "ledger_positions",
    columns: &[
        ("topic", Ty::Text),
        ("part", Ty::Int),
        ("next_offset", Ty::Int),
    ],
};

pub const COUNTERS: Table = Table {
    name: "ledger_counters",
    columns: &[
        ("name", Ty::Text),
        ("department", Ty::Text),
        ("kind", Ty::Text),
        ("value", Ty::Int),
    ],
};

pub const OUTBOX: Table = Table {
    name: "alert_outbox",
    columns: &[
        ("id", Ty::Text),
        ("record_id", Ty::Text),
        ("payload", Ty::Text),
        ("created_at", Ty::Int),
        ("claimed_by", Ty::Text),
        ("claimed_until", Ty::Int),
    ],
};

/// `'a', 'b'` for a set of states.
pub fn states(set: &[EntryState]) -> String {
    set.iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `{prefix}state IN ('a', 'b')`: the entry's state is one of `set`.
pub fn state_in(prefix: &str, set: &[EntryState]) -> String {
    format!("{prefix}state IN ({})", states(set))
}

/// The alert level below which the tracker still has something to raise (escalated is last).
pub const NOT_ESCALATED: &str = "alert_level < 3";

/// `ON CONFLICT (key) DO UPDATE SET` every other column of `table`.
pub fn upsert(table: &Table, key: &[&str]) -> String {
    let set: Vec<String> = table
        .columns
        .iter()
        .filter(|(c, _)| !key.contains(c))
        .map(|(c, _)| format!("{c} = excluded.{c}"))
        .collect();
    format!(
        "ON CONFLICT ({}) DO UPDATE SET {}",
        key.join(", "),
        set.join(", ")
    )
}

/// The tables and indexes, in a dialect: the integer type, SQLite's `WITHOUT ROWID` for the small
/// tables keyed by their primary key, and the covering index the tracker reads (SQLite has no
/// `INCLUDE`: the columns join the key).
///
/// Record ids are name-based UUIDs, random in every index they key. `ledger_ids` gives each
/// record, the first time the ledger meets it, the next number (`seq`), and the records,
/// entries, history and events are keyed and joined by that number. A burst of records then
/// appends its rows and keys to the last pages of those tables; keyed by record id, every
/// table's index wrote a page of its own for nearly every record once the ledger outgrew the
/// burst. The number belongs to this ledger only: a rebuild numbers the records in the order it
/// reads them.
///
/// The one index by record id left is the one that finds a record's number. On SQLite it is an
/// FTS5 index too (`ledger_id_keys`, see [`id_term`]), for the same reason as the link keys
/// below: as a `UNIQUE` B-tree it cost 20–25 µs a record once the ledger held a million
/// records. Numbers are given by the ledger's one writer, which knows which ids are new (see
/// `ledger::known`). PostgreSQL keeps the `UNIQUE` index.
///
/// The look-up keys that link a supervision to its approval (许可编号, 许可决定文书号, 统一社会信用代码)
/// are random too, and only read when a record is shown. On SQLite they are kept in an FTS5
/// index (`ledger_link_keys`, see [`link_term`]): its writes are sorted runs merged in the
/// background of later writes, so a burst's keys cost a few pages whatever the ledger's size,
/// where a B-tree keyed by them rewrote about one page per key once the ledger outgrew the
/// burst. PostgreSQL keeps them in partial indexes of `ledger_records`, with each row.
pub fn ddl(dialect: Dialect) -> String {
    let unclaimed = state_in("", &EntryState::UNCLAIMED);
    let (int, real, without_rowid, serial) = match dialect {
        Dialect::Sqlite => ("INTEGER", "REAL", " WITHOUT ROWID", "INTEGER PRIMARY KEY"),
        Dialect::Postgres => (
            "BIGINT",
            "DOUBLE PRECISION",
            "",
            "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
        ),
    };
    let due_index = match dialect {
        Dialect::Sqlite => format!(
            "CREATE INDEX IF NOT EXISTS entries_due ON ledger_entries (due_at, seq, {}) WHERE due_at IS NOT NULL AND {NOT_ESCALATED};",
            DUE_COLUMNS.replace("due_at, ", "")
        ),
        Dialect::Postgres => format!(
            "CREATE INDEX IF NOT EXISTS entries_due ON ledger_entries (due_at) INCLUDE ({}) WHERE due_at IS NOT NULL AND {NOT_ESCALATED};",
            DUE_COLUMNS.replace("due_at, ", "")
        ),
    };
    let ids = match dialect {
        Dialect::Sqlite => format!(
            "CREATE TABLE IF NOT EXISTS ledger_ids (seq INTEGER PRIMARY KEY, record_id TEXT NOT NULL);
CREATE VIRTUAL TABLE IF NOT EXISTS {ID_KEYS} USING fts5(terms, content='', contentless_delete=1, detail='none', tokenize='ascii');"
        ),
        Dialect::Postgres => {
            format!("CREATE TABLE IF NOT EXISTS ledger_ids (seq {serial}, record_id TEXT NOT NULL UNIQUE);")
        }
    };
    let link_indexes = match dialect {
        Dialect::Sqlite => format!(
            "CREATE VIRTUAL TABLE IF NOT EXISTS {LINK_KEYS} USING fts5(terms, content='', contentless_delete=1, detail='none', tokenize='ascii');"
        ),
        Dialect::Postgres => LINKS
            .iter()
            .map(|c| {
                format!(
                    "CREATE INDEX IF NOT EXISTS records_by_{} ON ledger_records ({c}) WHERE {c} IS NOT NULL;",
                    c.trim_start_matches("link_")
                )
            })
            .collect::<Vec<_>>()
            .join("\n"),
    };
    format!(
        "
CREATE TABLE IF NOT EXISTS ledger_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
{ids}
CREATE TABLE IF NOT EXISTS ledger_records (
    seq {int} PRIMARY KEY, record_id TEXT NOT NULL, kind TEXT NOT NULL, event_id TEXT NOT NULL, published_at {int} NOT NULL,
    decided_at {int}, adapter TEXT NOT NULL, push_rule TEXT, push_due_at {int}, push_late {int} NOT NULL,
    unrouted TEXT, source_department TEXT, link_license_no TEXT, link_document_no TEXT, link_uscc TEXT,
    case_no TEXT, title TEXT, counterpart TEXT, pusher TEXT, pushed_at {int} NOT NULL, push_hours {real},
    version {int} NOT NULL);
CREATE INDEX IF NOT EXISTS records_pushed ON ledger_records (pushed_at);
CREATE INDEX IF NOT EXISTS records_decided ON ledger_records (kind, decided_at);
{link_indexes}
CREATE INDEX IF NOT EXISTS records_unrouted ON ledger_records (published_at) WHERE unrouted IS NOT NULL;
CREATE TABLE IF NOT EXISTS ledger_entries (
    seq {int} NOT NULL, record_id TEXT NOT NULL, department TEXT NOT NULL, kind TEXT NOT NULL, state TEXT NOT NULL,
    pushed_at {int} NOT NULL, delivered_at {int}, claimed_at {int}, returned_at {int}, feedback_at {int},
    closed_at {int}, policy TEXT NOT NULL, claim_rule TEXT, claim_due_at {int}, feedback_rule TEXT,
    feedback_due_at {int}, calendar_version TEXT NOT NULL, deadline_problem TEXT,
    alert_level {int} NOT NULL, note TEXT, outcome TEXT, via TEXT, flow TEXT NOT NULL, due_rule TEXT,
    due_at {int}, version {int} NOT NULL, claim_hours {real},
    PRIMARY KEY (seq, department));
CREATE INDEX IF NOT EXISTS entries_by_department ON ledger_entries (department, pushed_at);
CREATE INDEX IF NOT EXISTS entries_by_department_state ON ledger_entries (department, state, due_at);
CREATE INDEX IF NOT EXISTS entries_pushed ON ledger_entries (pushed_at);
{due_index}
CREATE INDEX IF NOT EXISTS entries_unclaimed ON ledger_entries (department, kind, pushed_at) WHERE {unclaimed};
CREATE TABLE IF NOT EXISTS ledger_history (
    seq {int} NOT NULL, record_id TEXT NOT NULL, n {int} NOT NULL, department TEXT, action TEXT NOT NULL,
    actor TEXT, channel TEXT, at {int} NOT NULL, event_id TEXT NOT NULL, detail TEXT NOT NULL,
    PRIMARY KEY (seq, n));
CREATE TABLE IF NOT EXISTS ledger_events (
    seq {int} NOT NULL, record_id TEXT NOT NULL, event_id TEXT NOT NULL, at_ms {int} NOT NULL, rank {int} NOT NULL,
    kind TEXT NOT NULL, topic TEXT NOT NULL, part {int} NOT NULL, pos {int} NOT NULL, payload TEXT NOT NULL,
    PRIMARY KEY (seq, event_id));
CREATE TABLE IF NOT EXISTS ledger_positions (
    topic TEXT NOT NULL, part {int} NOT NULL, next_offset {int} NOT NULL,
    PRIMARY KEY (topic, part)){without_rowid};
CREATE TABLE IF NOT EXISTS ledger_counters (
    name TEXT NOT NULL, department TEXT NOT NULL, kind TEXT NOT NULL, value {int} NOT NULL,
    PRIMARY KEY (name, department, kind)){without_rowid};
CREATE TABLE IF NOT EXISTS deliveries (
    record_id TEXT NOT NULL, department TEXT NOT NULL, attempts {int} NOT NULL, status TEXT NOT NULL,
    next_attempt_at {int}, last_error TEXT, version {int} NOT NULL DEFAULT 1,
    PRIMARY KEY (record_id, department)){without_rowid};
CREATE TABLE IF NOT EXISTS ledger_leases (
    name TEXT PRIMARY KEY, owner TEXT NOT NULL, until_ms {int} NOT NULL);
CREATE TABLE IF NOT EXISTS alert_outbox (
    id TEXT PRIMARY KEY, record_id TEXT NOT NULL, payload TEXT NOT NULL, created_at {int} NOT NULL,
    claimed_by TEXT, claimed_until {int});
"
    )
}

/// The columns the tracker's scan reads, all in the covering index `entries_due`; `due_at`
/// first, as the SQLite index's key. There the record's number follows it: deadlines fall at
/// the end of a working day, so the entries pushed in a day share one `due_at`, and ordered
/// next by record id (random) each new entry went to a page of its own — 1,058 of the 1,774
/// pages a burst wrote to the log at 10,000 records/s. By number, a burst's entries go at the
/// end of their deadline's run (see [`migrate_due_index`]).
pub const DUE_COLUMNS: &str =
    "due_at, record_id, department, kind, policy, due_rule, pushed_at, calendar_version, alert_level";

/// The tracker's scan: open obligations due before `$1` whose alerts are not all raised yet. It
/// reads the covering partial index `entries_due` only.
pub fn due_scan() -> String {
    format!(
        "SELECT {DUE_COLUMNS} FROM ledger_entries WHERE due_at IS NOT NULL AND {NOT_ESCALATED} AND due_at < $1"
    )
}

/// The projection's tables: everything in them is rebuilt from the bus when the schema changes
/// (webhook delivery state and queued alerts are not projection and stay).
pub const PROJECTION: [&str; 7] = [
    "ledger_ids",
    "ledger_records",
    "ledger_entries",
    "ledger_history",
    "ledger_events",
    "ledger_positions",
    "ledger_counters",
];

/// The projection's tables in `dialect`: [`PROJECTION`], and on SQLite the id and link
/// indexes.
pub fn projection(dialect: Dialect) -> Vec<&'static str> {
    let mut tables = PROJECTION.to_vec();
    if dialect == Dialect::Sqlite {
        tables.extend(FTS_INDEXES);
    }
    tables
}

/// SQLite's full-text indexes of the projection, emptied by their own command.
pub const FTS_INDEXES: [&str; 2] = [ID_KEYS, LINK_KEYS];

/// The tables of the first ledger schema (times as text or `timestamptz`), which an upgrade
/// replaces; the bus holds everything they were built from.
pub const OLD_PROJECTION: [&str; 4] = [
    "ledger_records",
    "ledger_entries",
    "ledger_history",
    "ledger_positions",
];

/// Creates the schema, or brings an earlier one up to date. A ledger of the first schema (times
/// as text or `timestamptz`, no event log) is replaced: its projection tables are dropped and its
/// positions with them, so the projector replays the topics from their beginning and the ledger
/// is rebuilt from the bus, which holds everything it was built from. Webhook delivery state and
/// queued alerts are carried over. The link index of an earlier version is brought up to date in
/// place ([`migrate_links`]).
pub async fn migrate(ex: &mut dyn Exec) -> Result<(), DbError> {
    let dialect = ex.dialect();
    let exists = |table: &str| {
        match dialect {
        Dialect::Sqlite => (
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = $1".to_string(),
            vec![Param::from(table)],
        ),
        Dialect::Postgres => (
            "SELECT table_name::text AS name FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = $1".to_string(),
            vec![Param::from(table)],
        ),
    }
    };
    let (q, p) = exists("ledger_meta");
    let has_meta = !ex.query(&q, p).await?.is_empty();
    let (q, p) = exists("ledger_records");
    let has_records = !ex.query(&q, p).await?.is_empty();
    let old = has_records && !has_meta;
    // A later schema of the projection: its tables are rebuilt from the bus the same way.
    let version = if has_meta {
        ex.query(
            "SELECT value FROM ledger_meta WHERE key = 'schema_version'",
            vec![],
        )
        .await?
        .iter("ledger_meta")
        .next()
        .map(|r| r.text("value"))
        .transpose()?
    } else {
        None
    };
    if has_meta && version.as_deref() != Some(SCHEMA_VERSION) {
        tracing::warn!(
            from = version.as_deref().unwrap_or("none"),
            to = SCHEMA_VERSION,
            "the ledger's schema changed: it is rebuilt from the bus topics"
        );
        for table in projection(dialect) {
            ex.script(&format!("DROP TABLE IF EXISTS {table}")).await?;
        }
    }
    if old {
        tracing::warn!(
            "the ledger has the schema of an earlier version: it is rebuilt from the bus topics"
        );
        for table in OLD_PROJECTION {
            ex.script(&format!("DROP TABLE IF EXISTS {table}")).await?;
        }
        for table in ["deliveries", "alert_outbox"] {
            let (q, p) = exists(table);
            if !ex.query(&q, p).await?.is_empty() {
                ex.script(&format!("ALTER TABLE {table} RENAME TO {table}_v1"))
                    .await?;
            }
        }
    }
    migrate_due_index(ex).await?;
    ex.script(&ddl(dialect)).await?;
    migrate_ids(ex).await?;
    migrate_links(ex).await?;
    if old {
        let ms = |column: &str| match dialect {
            Dialect::Sqlite => format!("CAST(strftime('%s', {column}) AS INTEGER) * 1000"),
            Dialect::Postgres => format!("CAST(EXTRACT(EPOCH FROM {column}) * 1000 AS BIGINT)"),
        };
        for (table, copy) in [
            (
                "deliveries",
                format!(
                    "INSERT INTO deliveries (record_id, department, attempts, status, next_attempt_at, last_error) SELECT record_id, department, attempts, status, {}, last_error FROM deliveries_v1",
                    ms("next_attempt_at")
                ),
            ),
            (
                "alert_outbox",
                format!(
                    "INSERT INTO alert_outbox (id, record_id, payload, created_at) SELECT id, record_id, payload, {} FROM alert_outbox_v1",
                    ms("created_at")
                ),
            ),
        ] {
            let (q, p) = exists(&format!("{table}_v1"));
            if !ex.query(&q, p).await?.is_empty() {
                ex.script(&copy).await?;
                ex.script(&format!("DROP TABLE {table}_v1")).await?;
            }
        }
    }
    // Deliveries are not projection and stay across schema changes: the version of the record
    // a delivery was for (so an update is delivered again) is added to a table without it.
    let (q, p) = match dialect {
        Dialect::Sqlite => (
            "SELECT name FROM pragma_table_info('deliveries') WHERE name = $1".to_string(),
            vec![Param::from("version")],
        ),
        Dialect::Postgres => (
            "SELECT column_name::text AS name FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = 'deliveries' AND column_name = $1".to_string(),
            vec![Param::from("version")],
        ),
    };
    if ex.query(&q, p).await?.is_empty() {
        let int = match dialect {
            Dialect::Sqlite => "INTEGER",
            Dialect::Postgres => "BIGINT",
        };
        ex.script(&format!(
            "ALTER TABLE deliveries ADD COLUMN version {int} NOT NULL DEFAULT 1"
        ))
        .await?;
    }
    ex.execute(
        "INSERT INTO ledger_meta (key, value) VALUES ('schema_version', $1) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        vec![Param::from(SCHEMA_VERSION)],
    )
    .await?;
    Ok(())
}

/// SQLite's index of the record ids: one row per record (its `seq` as the rowid), whose text is
/// the [`id_term`] of its id.
pub const ID_KEYS: &str = "ledger_id_keys";

/// The term under which [`ID_KEYS`] indexes a record id: `i` and 16 hexadecimal digits of its
/// SHA-256. SQLite's statements compute it as the function `id_term` (registered on each
/// connection). Two ids with the same term only cost a look-up a number it then compares and
/// leaves.
pub fn id_term(record_id: &str) -> String {
    use sha2::Digest as _;
    format!(
        "i{}",
        hex::encode(&sha2::Sha256::digest(record_id.as_bytes())[..8])
    )
}

/// `= (…)`: the number of the record whose id is the parameter `param`.
pub fn seq_of(dialect: Dialect, param: &str) -> String {
    match dialect {
        Dialect::Sqlite => format!(
            "= (SELECT seq FROM ledger_ids WHERE seq IN (SELECT rowid FROM {ID_KEYS} WHERE {ID_KEYS} MATCH id_term({param})) AND record_id = {param})"
        ),
        Dialect::Postgres => format!("= (SELECT seq FROM ledger_ids WHERE record_id = {param})"),
    }
}

/// The numbers of the records whose ids are `$1`, a JSON array, and on SQLite `$2` the
/// [`id_term`]s of the ids joined by `OR`: `seq, record_id` for each that has one.
pub fn numbers_of(dialect: Dialect) -> String {
    match dialect {
        Dialect::Sqlite => format!(
            "SELECT seq, record_id FROM ledger_ids WHERE seq IN (SELECT rowid FROM {ID_KEYS} WHERE {ID_KEYS} MATCH $2) AND record_id {}",
            dialect.in_list("$1")
        ),
        Dialect::Postgres => format!(
            "SELECT seq, record_id FROM ledger_ids WHERE record_id {}",
            dialect.in_list("$1")
        ),
    }
}

/// Drops a SQLite `entries_due` whose key after `due_at` is not the record's number (as
/// versions before this one made it, see [`DUE_COLUMNS`]); [`ddl`], run next, builds it again
/// from the entries, in place.
async fn migrate_due_index(ex: &mut dyn Exec) -> Result<(), DbError> {
    if ex.dialect() != Dialect::Sqlite {
        return Ok(());
    }
    let second = ex
        .query(
            "SELECT name FROM pragma_index_info('entries_due') WHERE seqno = 1",
            vec![],
        )
        .await?;
    let Some(row) = second.iter("entries_due").next() else {
        return Ok(());
    };
    if row.text("name")? != "seq" {
        ex.script("DROP INDEX entries_due").await?;
        tracing::info!("the ledger's index of deadlines is built again, by record number");
    }
    Ok(())
}

/// Brings the id index of a SQLite ledger opened by an earlier version up to date: its
/// `UNIQUE` B-tree of record ids becomes [`ID_KEYS`], filled from `ledger_ids`, in the
/// transaction `ex` is in. Runs after [`ddl`].
async fn migrate_ids(ex: &mut dyn Exec) -> Result<(), DbError> {
    if ex.dialect() != Dialect::Sqlite
        || ex
            .query(
                "SELECT name FROM pragma_index_list('ledger_ids') WHERE origin = 'u'",
                vec![],
            )
            .await?
            .is_empty()
    {
        return Ok(());
    }
    ex.script(
        "CREATE TABLE ledger_ids_numbered (seq INTEGER PRIMARY KEY, record_id TEXT NOT NULL);
         INSERT INTO ledger_ids_numbered (seq, record_id) SELECT seq, record_id FROM ledger_ids ORDER BY seq;
         DROP TABLE ledger_ids;
         ALTER TABLE ledger_ids_numbered RENAME TO ledger_ids;",
    )
    .await?;
    // One statement: the terms are computed by SQLite (`id_term`), nothing is held in memory.
    let indexed = ex
        .execute(
            &format!("INSERT INTO {ID_KEYS} (rowid, terms) SELECT seq, id_term(record_id) FROM ledger_ids"),
            vec![],
        )
        .await?;
    tracing::info!(
        records = indexed,
        "the ledger's record ids are indexed again"
    );
    Ok(())
}

/// The link columns of a record.
pub const LINKS: [&str; 3] = ["link_license_no", "link_document_no", "link_uscc"];

/// SQLite's index of the link keys: one row per record (its `seq` as the rowid), whose text is
/// the [`link_term`]s of its keys.
pub const LINK_KEYS: &str = "ledger_link_keys";

/// How many rows a pass over a whole table reads at a time ([`migrate_links`], and the record
/// ids read into memory when a SQLite ledger is opened), so the memory it takes does not grow
/// with the ledger.
pub const PIECE: i64 = 50_000;

/// The tables of the link index before it was [`LINK_KEYS`], dropped when a ledger is opened.
const OLD_LINK_TABLES: [&str; 2] = ["ledger_links", "ledger_links_through"];

/// The term under which [`LINK_KEYS`] indexes the value of the link column `column`: `k` and 16
/// hexadecimal digits of a SHA-256 of both, one token whatever the characters of the value
/// (`〔2026〕第12号`). Two values with the same term only cost a look-up a record it then
/// compares and leaves.
pub fn link_term(column: &str, value: &str) -> String {
    use sha2::Digest as _;
    let mut hash = sha2::Sha256::new();
    hash.update(column.as_bytes());
    hash.update([0]);
    hash.update(value.as_bytes());
    format!("k{}", hex::encode(&hash.finalize()[..8]))
}

/// The text a record's row in [`LINK_KEYS`] holds: the terms of its link keys (in [`LINKS`]'
/// order, `None` for a key it does not have).
pub fn link_terms(keys: [Option<&str>; 3]) -> String {
    terms(LINKS.iter().copied().zip(keys)).join(" ")
}

/// The [`link_term`]s of the keys `(column, value)` that have a value.
fn terms<'a>(keys: impl IntoIterator<Item = (&'a str, Option<&'a str>)>) -> Vec<String> {
    keys.into_iter()
        .filter_map(|(column, value)| value.map(|v| link_term(column, v)))
        .collect()
}

/// `seq IN (…)`: the records that may have one of the link keys `(column, value)`, from
/// [`LINK_KEYS`]. The caller still compares the record's own columns. On PostgreSQL, `TRUE`:
/// the caller's comparison reads the partial indexes. The terms are hexadecimal, written into
/// the statement as they are.
pub fn linked(dialect: Dialect, keys: &[(&str, Option<&str>)]) -> String {
    if dialect == Dialect::Postgres {
        return "TRUE".into();
    }
    let terms = terms(keys.iter().copied());
    if terms.is_empty() {
        return "FALSE".into();
    }
    format!(
        "seq IN (SELECT rowid FROM {LINK_KEYS} WHERE {LINK_KEYS} MATCH '{}')",
        terms.join(" OR ")
    )
}

/// Brings the link index of a ledger opened by an earlier version up to date: its sorted
/// B-tree of keys (`ledger_links`, with the records' change numbers) becomes [`LINK_KEYS`],
/// filled from the records, in the transaction `ex` is in. Runs after [`ddl`].
async fn migrate_links(ex: &mut dyn Exec) -> Result<(), DbError> {
    let dialect = ex.dialect();
    for table in OLD_LINK_TABLES {
        ex.script(&format!("DROP TABLE IF EXISTS {table}")).await?;
    }
    let has_changed = match dialect {
        Dialect::Sqlite => "SELECT name FROM pragma_table_info('ledger_records') WHERE name = 'changed'",
        Dialect::Postgres => "SELECT column_name::text AS name FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = 'ledger_records' AND column_name = 'changed'",
    };
    if ex.query(has_changed, vec![]).await?.is_empty() {
        return Ok(());
    }
    ex.script("DROP INDEX IF EXISTS records_changed").await?;
    ex.script("ALTER TABLE ledger_records DROP COLUMN changed")
        .await?;
    if dialect == Dialect::Sqlite {
        // In pieces of the records in the order of their numbers, so the memory it takes does
        // not grow with the ledger.
        let (mut after, mut indexed) = (0i64, 0usize);
        loop {
            let rows = ex
                .query(
                    &format!(
                        "SELECT seq, {} FROM ledger_records WHERE seq > $1 ORDER BY seq LIMIT {PIECE}",
                        LINKS.join(", ")
                    ),
                    vec![after.into()],
                )
                .await?;
            if rows.is_empty() {
                break;
            }
            for row in rows.iter("ledger_records") {
                after = row.int("seq")?;
                let terms = link_terms([
                    row.opt_text(LINKS[0])?.as_deref(),
                    row.opt_text(LINKS[1])?.as_deref(),
                    row.opt_text(LINKS[2])?.as_deref(),
                ]);
                if !terms.is_empty() {
                    ex.execute(
                        &format!("INSERT INTO {LINK_KEYS} (rowid, terms) VALUES ($1, $2)"),
                        vec![after.into(), terms.into()],
                    )
                    .await?;
                    indexed += 1;
                }
            }
        }
        tracing::info!(
            records = indexed,
            "the ledger's link keys are indexed again"
        );
    }
    Ok(())
}

/// The receiving side of the monthly report: the month's entries (`$1` ≤ pushed_at < `$2`)
/// counted per department, kind and flow, in one `GROUP BY`; `$3` is the report time, against
/// which "past the deadline" is measured. Each figure is defined here once, for both dialects.
pub fn report_claims() -> String {
    let unclaimed = state_in("", &EntryState::UNCLAIMED);
    let following = state_in("", &EntryState::CLAIMED);
    let count = |cond: &str| format!("CAST(SUM(CASE WHEN {cond} THEN 1 ELSE 0 END) AS BIGINT)");
    let figures = [
        ("with_deadline", "claim_due_at IS NOT NULL".to_string()),
        ("claimed", "claimed_at IS NOT NULL".to_string()),
        ("claimed_on_time", "claimed_at IS NOT NULL AND claim_due_at IS NOT NULL AND claimed_at <= claim_due_at".to_string()),
        ("claimed_late", "claimed_at IS NOT NULL AND claimed_at > claim_due_at".to_string()),
        ("open", unclaimed.clone()),
        // Not claimed and past the deadline: still open, or closed unanswered (deemed agreed).
        ("missed", "claimed_at IS NULL AND state NOT IN ('returned', 'forwarded') AND claim_due_at < $3".to_string()),
        ("returned", "state = 'returned'".to_string()),
        ("forwarded", "state = 'forwarded'".to_string()),
        ("offline", "via IS NOT NULL".to_string()),
        ("updates", "version > 1".to_string()),
        ("replied", "outcome = 'replied'".to_string()),
        ("deemed_agreed", "outcome = 'deemed_agreed'".to_string()),
        ("attending", "outcome = 'attending'".to_string()),
        ("signed_off", "outcome = 'signed_off'".to_string()),
        ("verified", "outcome IN ('commitment_fulfilled', 'commitment_unfulfilled')".to_string()),
        ("unfulfilled", "outcome = 'commitment_unfulfilled'".to_string()),
        // The follow-up after a claim done late, or still open past its deadline. For an
        // inquiry the reply is both, and counted once, as the claim.
        ("follow_up_overdue", format!(
            "flow <> 'inquiry' AND claimed_at IS NOT NULL AND feedback_due_at IS NOT NULL
             AND ((state = 'closed' AND closed_at > feedback_due_at) OR ({following} AND feedback_due_at < $3))"
        )),
    ];
    let columns: Vec<String> = figures
        .iter()
        .map(|(name, cond)| format!("{} AS {name}", count(cond)))
        .collect();
    format!(
        "SELECT department, kind, flow, COUNT(*) AS pushed, {}
         FROM ledger_entries WHERE pushed_at >= $1 AND pushed_at < $2
         GROUP BY department, kind, flow ORDER BY department, kind, flow",
        columns.join(",\n  ")
    )
}

/// The pushing side of the monthly report: the month's records (`$1` ≤ pushed_at < `$2`)
/// counted per pushing party and kind, in one `GROUP BY`.
pub fn report_pushes() -> String {
    "SELECT COALESCE(pusher, '') AS pusher, kind, COUNT(*) AS pushed,
       CAST(SUM(CASE WHEN push_due_at IS NOT NULL THEN 1 ELSE 0 END) AS BIGINT) AS with_deadline,
       CAST(SUM(CASE WHEN push_due_at IS NOT NULL AND push_late = 1 THEN 1 ELSE 0 END) AS BIGINT) AS late
     FROM ledger_records WHERE pushed_at >= $1 AND pushed_at < $2
     GROUP BY COALESCE(pusher, ''), kind ORDER BY COALESCE(pusher, ''), kind"
        .to_string()
}
