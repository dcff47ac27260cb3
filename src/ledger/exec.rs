//! The few ways the ledger talks to a database — run a query, run a statement, insert many rows
//! — behind one trait, with one SQL text for both dialects. Statements are written with `$1`
//! placeholders; SQLite's executor reads them as `?1`. Values are text, 64-bit integers and
//! doubles (times are milliseconds since the epoch), so the same statement means the same thing
//! on both. Rows come back owned and are read by column name, each cell with a typed error that
//! names the table, the row and the column: a row that cannot be read is an error, never a
//! default.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, FixedOffset, TimeZone};

use crate::adapter::convert::shanghai;

/// A value bound to a statement. Nulls are typed, because PostgreSQL needs to know.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Int(Option<i64>),
    Text(Option<String>),
    Real(Option<f64>),
}

impl From<i64> for Param {
    fn from(v: i64) -> Param {
        Param::Int(Some(v))
    }
}

impl From<Option<i64>> for Param {
    fn from(v: Option<i64>) -> Param {
        Param::Int(v)
    }
}

impl From<&str> for Param {
    fn from(v: &str) -> Param {
        Param::Text(Some(v.to_string()))
    }
}

impl From<String> for Param {
    fn from(v: String) -> Param {
        Param::Text(Some(v))
    }
}

impl From<&String> for Param {
    fn from(v: &String) -> Param {
        Param::Text(Some(v.clone()))
    }
}

impl From<Option<String>> for Param {
    fn from(v: Option<String>) -> Param {
        Param::Text(v)
    }
}

impl From<Option<&str>> for Param {
    fn from(v: Option<&str>) -> Param {
        Param::Text(v.map(str::to_string))
    }
}

impl From<bool> for Param {
    fn from(v: bool) -> Param {
        Param::Int(Some(i64::from(v)))
    }
}

impl From<DateTime<FixedOffset>> for Param {
    fn from(v: DateTime<FixedOffset>) -> Param {
        Param::Int(Some(v.timestamp_millis()))
    }
}

impl From<Option<DateTime<FixedOffset>>> for Param {
    fn from(v: Option<DateTime<FixedOffset>>) -> Param {
        Param::Int(v.map(|t| t.timestamp_millis()))
    }
}

/// The type of a column, for inserting many rows at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    Int,
    Text,
    Real,
}

/// A table's columns, in insert order.
#[derive(Debug)]
pub struct Table {
    pub name: &'static str,
    pub columns: &'static [(&'static str, Ty)],
}

impl Table {
    /// `a, b, c`.
    pub fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|(c, _)| *c)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `t.a, t.b, t.c`.
    pub fn prefixed(&self, alias: &str) -> String {
        self.columns
            .iter()
            .map(|(c, _)| format!("{alias}.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Rows for `table` (all its columns, in order), inserted with `tail` (`ON CONFLICT …`) after
/// the values.
#[derive(Debug)]
pub struct Insert {
    pub table: &'static Table,
    pub rows: Vec<Vec<Param>>,
    pub tail: String,
}

impl Insert {
    pub fn new(table: &'static Table, rows: Vec<Vec<Param>>, tail: impl Into<String>) -> Insert {
        Insert {
            table,
            rows,
            tail: tail.into(),
        }
    }
}

/// A cell of a result row.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

/// A query's result: column names once, then the rows.
#[derive(Debug, Clone, Default)]
pub struct Rows {
    pub columns: Arc<[String]>,
    pub rows: Vec<Vec<Cell>>,
}

impl Rows {
    /// Each row, to be read by column name; `what` names the table or query in errors.
    pub fn iter<'a>(&'a self, what: &'static str) -> impl Iterator<Item = Row<'a>> + 'a {
        self.rows.iter().map(move |cells| Row {
            columns: &self.columns,
            cells,
            what,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The integer `column` of the first row (a `COUNT(*)`, a `MAX`), 0 when there is no row.
    pub fn first_int(&self, what: &'static str, column: &str) -> Result<i64, DbError> {
        Ok(self
            .iter(what)
            .next()
            .map(|r| r.int(column))
            .transpose()?
            .unwrap_or(0))
    }
}

/// Why a database call failed, or why a row could not be read.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DbError {
    /// The database refused or could not be reached.
    #[error("{0}")]
    Db(String),
    /// A row holds what the ledger cannot have written.
    #[error("{what} row {key}: column {column}: {problem}")]
    BadRow {
        what: &'static str,
        key: String,
        column: String,
        problem: String,
    },
}

/// One row of a result, read by column name.
#[derive(Clone, Copy)]
pub struct Row<'a> {
    columns: &'a [String],
    cells: &'a [Cell],
    what: &'static str,
}

impl<'a> Row<'a> {
    fn cell(&self, column: &str) -> Result<&'a Cell, DbError> {
        self.columns
            .iter()
            .position(|c| c == column)
            .map(|i| &self.cells[i])
            .ok_or_else(|| self.bad(column, "no such column in the result".into()))
    }

    /// The row's key for errors: its `record_id` (and `department`) where it has them.
    fn key(&self) -> String {
        let text = |c: &str| match self
            .columns
            .iter()
            .position(|x| x == c)
            .map(|i| &self.cells[i])
        {
            Some(Cell::Text(t)) => Some(t.clone()),
            Some(Cell::Int(i)) => Some(i.to_string()),
            _ => None,
        };
        let mut parts = Vec::new();
        for c in ["record_id", "department", "n", "event_id", "id", "topic"] {
            if let Some(v) = text(c) {
                parts.push(format!("{c}={v}"));
            }
        }
        if parts.is_empty() {
            "(without a key)".into()
        } else {
            parts.join(", ")
        }
    }

    pub fn bad(&self, column: &str, problem: String) -> DbError {
        DbError::BadRow {
            what: self.what,
            key: self.key(),
            column: column.to_string(),
            problem,
        }
    }

    pub fn opt_text(&self, column: &str) -> Result<Option<String>, DbError> {
        match self.cell(column)? {
            Cell::Null => Ok(None),
            Cell::Text(t) => Ok(Some(t.clone())),
            other => Err(self.bad(column, format!("expected text, found {other:?}"))),
        }
    }

    pub fn text(&self, column: &str) -> Result<String, DbError> {
        self.opt_text(column)?
            .ok_or_else(|| self.bad(column, "is empty (NULL)".into()))
    }

    pub fn opt_int(&self, column: &str) -> Result<Option<i64>, DbError> {
        match self.cell(column)? {
            Cell::Null => Ok(None),
            Cell::Int(i) => Ok(Some(*i)),
            Cell::Real(r) if r.fract() == 0.0 => Ok(Some(*r as i64)),
            other => Err(self.bad(column, format!("expected an integer, found {other:?}"))),
        }
    }

    pub fn int(&self, column: &str) -> Result<i64, DbError> {
        self.opt_int(column)?
            .ok_or_else(|| self.bad(column, "is empty (NULL)".into()))
    }

    pub fn opt_real(&self, column: &str) -> Result<Option<f64>, DbError> {
        match self.cell(column)? {
            Cell::Null => Ok(None),
            Cell::Int(i) => Ok(Some(*i as f64)),
            Cell::Real(r) => Ok(Some(*r)),
            other => Err(self.bad(column, format!("expected a number, found {other:?}"))),
        }
    }

    /// A time stored as milliseconds since the epoch, in Asia/Shanghai.
    pub fn opt_time(&self, column: &str) -> Result<Option<DateTime<FixedOffset>>, DbError> {
        match self.opt_int(column)? {
            None => Ok(None),
            Some(ms) => shanghai()
                .timestamp_millis_opt(ms)
                .single()
                .map(Some)
                .ok_or_else(|| self.bad(column, format!("{ms} is not a time"))),
        }
    }

    pub fn time(&self, column: &str) -> Result<DateTime<FixedOffset>, DbError> {
        self.opt_time(column)?
            .ok_or_else(|| self.bad(column, "is empty (NULL)".into()))
    }

    /// A text column parsed into `T`.
    pub fn parse<T: std::str::FromStr>(&self, column: &str) -> Result<T, DbError>
    where
        T::Err: std::fmt::Display,
    {
        let text = self.text(column)?;
        text.parse()
            .map_err(|e: T::Err| self.bad(column, format!("'{text}': {e}")))
    }

    /// A JSON text column.
    pub fn json(&self, column: &str) -> Result<serde_json::Value, DbError> {
        let text = self.text(column)?;
        serde_json::from_str(&text).map_err(|e| self.bad(column, format!("not JSON: {e}")))
    }
}

/// The two dialects, for the few fragments that differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// `IN (…)` over a JSON array of texts bound at `param` (e.g. `$1`).
    pub fn in_list(self, param: &str) -> String {
        match self {
            Dialect::Sqlite => format!("IN (SELECT value FROM json_each({param}))"),
            Dialect::Postgres => {
                format!(
                    "= ANY(ARRAY(SELECT jsonb_array_elements_text(CAST({param} AS TEXT)::jsonb)))"
                )
            }
        }
    }

    /// `IN (…)` over a JSON array of 64-bit integers bound at `param` ([`json_numbers`]).
    pub fn in_numbers(self, param: &str) -> String {
        match self {
            Dialect::Sqlite => format!("IN (SELECT value FROM json_each({param}))"),
            Dialect::Postgres => format!(
                "= ANY(ARRAY(SELECT CAST(jsonb_array_elements_text(CAST({param} AS TEXT)::jsonb) AS BIGINT)))"
            ),
        }
    }

    /// What locks the rows a `SELECT` reads until the transaction ends (SQLite's write
    /// transaction holds the whole database already).
    pub fn for_update(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE",
        }
    }

    /// Case-insensitive `LIKE`.
    pub fn ilike(self) -> &'static str {
        match self {
            Dialect::Sqlite => "LIKE",
            Dialect::Postgres => "ILIKE",
        }
    }
}

/// A JSON array of texts, for [`Dialect::in_list`].
pub fn json_list<S: AsRef<str>>(items: &[S]) -> Param {
    Param::Text(Some(
        serde_json::to_string(&items.iter().map(AsRef::as_ref).collect::<Vec<&str>>())
            .expect("texts serialise"),
    ))
}

/// A JSON array of 64-bit integers, for [`Dialect::in_numbers`].
pub fn json_numbers(items: &[i64]) -> Param {
    Param::Text(Some(
        serde_json::to_string(items).expect("numbers serialise"),
    ))
}

/// Runs statements. The SQLite and PostgreSQL executors are the two dialects.
#[async_trait]
pub trait Exec: Send {
    fn dialect(&self) -> Dialect;
    /// Runs a query.
    async fn query(&mut self, sql: &str, params: Vec<Param>) -> Result<Rows, DbError>;
    /// Runs a statement; returns the number of rows it changed.
    async fn execute(&mut self, sql: &str, params: Vec<Param>) -> Result<u64, DbError>;
    /// Runs the inserts, in order. PostgreSQL's executor sends them one after another without
    /// waiting for each answer (pipelining), so the server works on one while the next is built.
    async fn insert_rows(&mut self, inserts: Vec<Insert>) -> Result<(), DbError>;
    /// Runs a script of statements without parameters (schema changes).
    async fn script(&mut self, sql: &str) -> Result<(), DbError>;
    /// The record ids the ledger may have numbered, where the store keeps them in memory
    /// (SQLite); without them every id is looked up.
    fn known_ids(&self) -> Option<&crate::ledger::known::KnownIds> {
        None
    }
}

/// `$1`, `$2` … as SQLite's `?1`, `?2` … (outside quoted text).
pub fn sqlite_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quoted = false;
    for c in sql.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.push(c);
            }
            '$' if !quoted => out.push('?'),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_sqlite_ones_outside_quoted_text() {
        assert_eq!(
            sqlite_placeholders("SELECT '$1' , x FROM t WHERE a = $1 AND b = $12"),
            "SELECT '$1' , x FROM t WHERE a = ?1 AND b = ?12"
        );
    }

    #[test]
    fn a_row_that_cannot_be_read_names_its_key_and_column() {
        let rows = Rows {
            columns: vec!["record_id".to_string(), "state".to_string()].into(),
            rows: vec![vec![Cell::Text("r1".into()), Cell::Int(7)]],
        };
        let row = rows.iter("ledger_entries").next().unwrap();
        let e = row.text("state").unwrap_err().to_string();
        assert!(e.contains("ledger_entries row record_id=r1"), "{e}");
        assert!(e.contains("column state"), "{e}");
    }
}
