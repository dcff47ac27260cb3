//! Database table poll (PostgreSQL, and PostgreSQL-compatible databases such as 人大金仓
//! KingbaseES): reads rows changed since a composite cursor (change time, id) in bounded batches,
//! ordered by (time, id); each poll starts `overlap_seconds` before the cursor so rows committed
//! late with an earlier time are not missed, and rows read twice are duplicates. Rows become JSON
//! through PostgreSQL's own `row_to_json`, so every column type arrives as its JSON form.
//! The cursor moves only after the bus acknowledged the batch.
//!
//! MySQL and 达梦 need their own row-to-JSON query and driver; the cursor rules are the same.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{pause, SourceContext};
use crate::ingest::Payload;

fn d30() -> u64 {
    30
}
fn d500() -> i64 {
    500
}
fn d300() -> u64 {
    300
}

/// `[[sources]] type = "postgres"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PgPollConfig {
    pub name: String,
    pub adapter: String,
    /// `postgres://user:${PASSWORD}@host:port/db`; `${ENV}` is expanded.
    pub url: String,
    /// The table or view, optionally schema-qualified.
    pub table: String,
    /// Column with the row's change time (timestamp or timestamptz).
    pub cursor_time_column: String,
    /// Column that orders rows with the same time (a key).
    pub cursor_id_column: String,
    /// Rows per batch. Default 500.
    #[serde(default = "d500")]
    pub batch_size: i64,
    /// Seconds between polls. Default 30.
    #[serde(default = "d30")]
    pub interval_seconds: u64,
    /// Seconds before the cursor each poll starts. Default 300.
    #[serde(default = "d300")]
    pub overlap_seconds: u64,
}

fn identifier(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|p| {
            let mut chars = p.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

fn quoted(s: &str) -> String {
    s.split('.')
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join(".")
}

impl PgPollConfig {
    pub fn check(&self) -> Vec<String> {
        let mut errors = Vec::new();
        for (k, v) in [
            ("table", &self.table),
            ("cursor_time_column", &self.cursor_time_column),
            ("cursor_id_column", &self.cursor_id_column),
        ] {
            if !identifier(v) {
                errors.push(format!("{k} '{v}' must be a plain SQL identifier (letters, digits, _; schema.table allowed)"));
            }
        }
        if self.batch_size < 1 {
            errors.push("batch_size must be at least 1".into());
        }
        errors
    }
}

/// The checkpoint: the newest (time, id) acknowledged.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Cursor {
    pub time: Option<DateTime<Utc>>,
    pub id: Option<String>,
}

pub async fn run(
    config: PgPollConfig,
    ctx: SourceContext,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), String> {
    let url = super::expand_env(&config.url)?;
    let mut client: Option<tokio_postgres::Client> = None;
    loop {
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                Ok((c, connection)) => {
                    tokio::spawn(connection);
                    // Timestamps reach the adapter in China Standard Time, as legacy exports write them.
                    match c
                        .batch_execute("SET TIME ZONE INTERVAL '+08:00' HOUR TO MINUTE")
                        .await
                    {
                        Ok(()) => client = Some(c),
                        Err(e) => {
                            tracing::warn!(source = %config.name, error = %e, "cannot set the session time zone")
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(source = %config.name, error = %e, "cannot connect to the source database")
                }
            }
        }
        if let Some(c) = &client {
            match poll_once(&config, &ctx, c).await {
                Ok(n) if n > 0 => tracing::info!(source = %config.name, rows = n, "poll done"),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(source = %config.name, error = %crate::mask::mask(&e), "poll failed; the cursor stays")
                }
            }
        }
        if pause(Duration::from_secs(config.interval_seconds), &mut stop).await {
            return Ok(());
        }
    }
}

async fn poll_once(
    config: &PgPollConfig,
    ctx: &SourceContext,
    client: &tokio_postgres::Client,
) -> Result<usize, String> {
    let cursor: Cursor = ctx.checkpoint(&config.name).await?.unwrap_or_default();
    let (table, time_col, id_col) = (
        quoted(&config.table),
        quoted(&config.cursor_time_column),
        quoted(&config.cursor_id_column),
    );
    let sql = format!(
        "SELECT row_to_json(t)::text, t.{time_col}::timestamptz, t.{id_col}::text FROM {table} t
         WHERE (t.{time_col}::timestamptz, t.{id_col}::text) > ($1::timestamptz, $2::text)
         ORDER BY t.{time_col}::timestamptz, t.{id_col}::text LIMIT $3"
    );
    // Start the overlap window before the cursor, then page by (time, id).
    let mut position: (DateTime<Utc>, String) = match cursor.time {
        Some(t) => (
            t - chrono::Duration::seconds(config.overlap_seconds as i64),
            String::new(),
        ),
        // PostgreSQL timestamps start in 4713 BC; 1900 is before any record here.
        None => (
            DateTime::parse_from_rfc3339("1900-01-01T00:00:00Z")
                .expect("valid")
                .with_timezone(&Utc),
            String::new(),
        ),
    };
    let mut newest = cursor.clone();
    let mut total = 0;
    loop {
        let rows = client
            .query(&sql, &[&position.0, &position.1, &config.batch_size])
            .await
            .map_err(|e| format!("query failed: {e}"))?;
        if rows.is_empty() {
            break;
        }
        let mut batch = String::from("[");
        for (i, row) in rows.iter().enumerate() {
            if i > 0 {
                batch.push(',');
            }
            batch.push_str(&row.get::<_, String>(0));
            let time: DateTime<Utc> = row.get(1);
            let id: String = row.get(2);
            if newest
                .time
                .is_none_or(|t| (time, id.as_str()) > (t, newest.id.as_deref().unwrap_or("")))
            {
                newest = Cursor {
                    time: Some(time),
                    id: Some(id.clone()),
                };
            }
            position = (time, id);
        }
        batch.push(']');
        match ctx
            .ingest(&config.adapter, Payload::body(batch.into_bytes()))
            .await?
        {
            Ok(report) => total += report.accepted.len(),
            Err(reason) => {
                tracing::warn!(source = %config.name, reason = %reason, "batch rejected")
            }
        }
        ctx.save_checkpoint(&config.name, &newest).await?;
        if (rows.len() as i64) < config.batch_size {
            break;
        }
    }
    Ok(total)
}
