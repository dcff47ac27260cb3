//! HTTP poll: asks a legacy system's API for records changed since a cursor, page by page.
//!
//! Request: `GET <url>?<since_param>=<RFC 3339>&<page_param>=<n>&<page_size_param>=<size>`; the
//! server answers the records whose cursor time is at or after `since`, ordered by (time, id),
//! in the adapter's format. The cursor is (time, id) of the newest record the bus acknowledged;
//! each poll starts `overlap_seconds` before it, so a record committed late with an earlier time
//! is still seen, and what is seen twice is a duplicate. Errors, timeouts and 5xx/429 answers are
//! retried with exponential backoff; the cursor never moves past what was not acknowledged.

use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json_path::JsonPath;

use super::{pause, Headers, SourceContext};
use crate::adapter::convert::{parse_datetime, scalar_text};
use crate::ingest::Payload;

fn d60() -> u64 {
    60
}
fn d30() -> u64 {
    30
}
fn d100() -> usize {
    100
}
fn d300() -> u64 {
    300
}
fn d5() -> u32 {
    5
}
fn d1000() -> u64 {
    1000
}
fn since() -> String {
    "since".into()
}
fn page() -> String {
    "page".into()
}
fn page_size() -> String {
    "page_size".into()
}

/// `[[sources]] type = "http_poll"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpPollConfig {
    /// Unique source name (the checkpoint's key).
    pub name: String,
    /// The adapter that maps the answers.
    pub adapter: String,
    /// The API URL; `${ENV}` is expanded.
    pub url: String,
    /// Seconds between polls. Default 60.
    #[serde(default = "d60")]
    pub interval_seconds: u64,
    /// Seconds one request may take. Default 30.
    #[serde(default = "d30")]
    pub timeout_seconds: u64,
    /// Records per page; a shorter page is the last. Default 100.
    #[serde(default = "d100")]
    pub page_size: usize,
    /// Seconds before the cursor each poll starts, for records committed late. Default 300.
    #[serde(default = "d300")]
    pub overlap_seconds: u64,
    /// Attempts per request before the poll gives up until the next interval. Default 5.
    #[serde(default = "d5")]
    pub max_retries: u32,
    /// Milliseconds before the first retry, doubled each time. Default 1000.
    #[serde(default = "d1000")]
    pub initial_backoff_ms: u64,
    /// Query parameter names. Defaults `since`, `page`, `page_size`.
    #[serde(default = "since")]
    pub since_param: String,
    #[serde(default = "page")]
    pub page_param: String,
    #[serde(default = "page_size")]
    pub page_size_param: String,
    /// JSONPath of a record's change time, e.g. `$.UPDATE_TIME`.
    pub cursor_time: String,
    /// JSONPath of a record's id, e.g. `$.PROJID` (orders records with the same time).
    pub cursor_id: String,
    /// Extra request headers (e.g. `Authorization = "Bearer ${ZWFW_TOKEN}"`).
    #[serde(default)]
    pub headers: Headers,
}

impl HttpPollConfig {
    pub fn check(&self) -> Vec<String> {
        let mut errors = Vec::new();
        for (k, p) in [
            ("cursor_time", &self.cursor_time),
            ("cursor_id", &self.cursor_id),
        ] {
            if let Err(e) = JsonPath::parse(p) {
                errors.push(format!("{k}: invalid JSONPath '{p}': {e}"));
            }
        }
        if self.page_size == 0 {
            errors.push("page_size must be at least 1".into());
        }
        errors
    }
}

/// The checkpoint: the newest (time, id) acknowledged.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Cursor {
    pub time: Option<DateTime<FixedOffset>>,
    pub id: Option<String>,
}

impl Cursor {
    fn advance(&mut self, time: DateTime<FixedOffset>, id: String) {
        let newer = match (&self.time, &self.id) {
            (None, _) => true,
            (Some(t), current) => {
                time > *t || (time == *t && current.as_deref().is_none_or(|c| id.as_str() > c))
            }
        };
        if newer {
            self.time = Some(time);
            self.id = Some(id);
        }
    }
}

pub async fn run(
    config: HttpPollConfig,
    ctx: SourceContext,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(config.timeout_seconds))
        .build()
        .map_err(|e| e.to_string())?;
    let time_path = JsonPath::parse(&config.cursor_time).map_err(|e| e.to_string())?;
    let id_path = JsonPath::parse(&config.cursor_id).map_err(|e| e.to_string())?;
    loop {
        match poll_once(&config, &ctx, &client, &time_path, &id_path, &mut stop).await {
            Ok(n) if n > 0 => tracing::info!(source = %config.name, records = n, "poll done"),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(source = %config.name, error = %crate::mask::mask(&e), "poll failed; the cursor stays")
            }
        }
        if pause(Duration::from_secs(config.interval_seconds), &mut stop).await {
            return Ok(());
        }
    }
}

async fn poll_once(
    config: &HttpPollConfig,
    ctx: &SourceContext,
    client: &reqwest::Client,
    time_path: &JsonPath,
    id_path: &JsonPath,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<usize, String> {
    let mut cursor: Cursor = ctx.checkpoint(&config.name).await?.unwrap_or_default();
    let since = cursor
        .time
        .map(|t| t - chrono::Duration::seconds(config.overlap_seconds as i64));
    let url = super::expand_env(&config.url)?;
    let mut total = 0;
    for page in 1.. {
        let mut query: Vec<(String, String)> = vec![
            (config.page_param.clone(), page.to_string()),
            (config.page_size_param.clone(), config.page_size.to_string()),
        ];
        if let Some(s) = since {
            query.push((config.since_param.clone(), s.to_rfc3339()));
        }
        let body = fetch(config, client, &url, &query, stop).await?;
        let adapter = ctx.adapter(&config.adapter)?;
        let payload: Value =
            serde_json::from_slice(&body).map_err(|e| format!("page {page} is not JSON: {e}"))?;
        let records = adapter.select_records(&payload);
        let count = records.len();
        let mut page_cursor = cursor.clone();
        for r in &records {
            let time = time_path
                .query(r)
                .all()
                .into_iter()
                .next()
                .and_then(scalar_text)
                .and_then(|t| parse_datetime(&t).ok());
            let id = id_path
                .query(r)
                .all()
                .into_iter()
                .next()
                .and_then(scalar_text);
            if let (Some(t), Some(i)) = (time, id) {
                page_cursor.advance(t, i);
            }
        }
        if count == 0 {
            break;
        }
        match ctx.ingest(&config.adapter, Payload::body(body)).await? {
            Ok(report) => total += report.accepted.len(),
            // An unreadable page is in the DLQ; go on, or the source would stop here forever.
            Err(reason) => {
                tracing::warn!(source = %config.name, page, reason = %reason, "page rejected")
            }
        }
        cursor = page_cursor;
        ctx.save_checkpoint(&config.name, &cursor).await?;
        if count < config.page_size {
            break;
        }
    }
    Ok(total)
}

async fn fetch(
    config: &HttpPollConfig,
    client: &reqwest::Client,
    url: &str,
    query: &[(String, String)],
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<Vec<u8>, String> {
    let mut backoff = Duration::from_millis(config.initial_backoff_ms);
    let mut last = String::new();
    for attempt in 1..=config.max_retries.max(1) {
        let mut request = client.get(url).query(query);
        for (k, v) in &config.headers {
            request = request.header(k, super::expand_env(v)?);
        }
        match request.send().await {
            Ok(r) if r.status().is_success() => {
                return r
                    .bytes()
                    .await
                    .map(|b| b.to_vec())
                    .map_err(|e| e.to_string())
            }
            Ok(r) if r.status().is_server_error() || r.status().as_u16() == 429 => {
                last = format!("answered {}", r.status())
            }
            Ok(r) => return Err(format!("answered {}; not retried", r.status())),
            Err(e) if e.is_timeout() => {
                last = format!("no answer within {} s", config.timeout_seconds)
            }
            Err(e) => last = format!("cannot connect: {e}"),
        }
        tracing::debug!(source = %config.name, attempt, error = %last, "poll request failed; retrying");
        if attempt < config.max_retries && pause(backoff, stop).await {
            break;
        }
        backoff = (backoff * 2).min(Duration::from_secs(300));
    }
    Err(format!("{url}: {last}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_only_moves_forward_by_time_then_id() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap();
        let mut c = Cursor::default();
        c.advance(t("2026-01-05T10:00:00+08:00"), "b".into());
        c.advance(t("2026-01-05T09:00:00+08:00"), "z".into());
        assert_eq!(c.id.as_deref(), Some("b"));
        c.advance(t("2026-01-05T10:00:00+08:00"), "c".into());
        assert_eq!(c.id.as_deref(), Some("c"));
        c.advance(t("2026-01-05T10:00:00+08:00"), "a".into());
        assert_eq!(c.id.as_deref(), Some("c"));
    }
}
