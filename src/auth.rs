//! Bearer tokens per adapter, department and admin. Tokens are random 256-bit strings shown once
//! when issued; only their SHA-256 is stored. A presented token is hashed and compared with every
//! known hash in constant time (`subtle`), so timing reveals nothing about which hash was close.
//! A high-entropy token needs no slow password hash: there is nothing to brute-force.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::RwLock;

use crate::config::TokenEntry;
use crate::state::{StateStore, TokenRow};

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Adapter(String),
    Department(String),
    Admin,
}

impl Principal {
    fn from_row(row: &TokenRow) -> Option<Principal> {
        match row.role.as_str() {
            "adapter" => Some(Principal::Adapter(row.subject.clone())),
            "department" => Some(Principal::Department(row.subject.clone())),
            "admin" => Some(Principal::Admin),
            _ => None,
        }
    }
}

/// Roles a token can have.
pub const ROLES: [&str; 3] = ["adapter", "department", "admin"];

/// A fresh token: `sg_` and 64 hex digits (256 bits from the OS random source via UUID v4).
pub fn new_token() -> String {
    let a = uuid::Uuid::new_v4();
    let b = uuid::Uuid::new_v4();
    format!(
        "sg_{}{}",
        hex::encode(a.as_bytes()),
        hex::encode(b.as_bytes())
    )
}

pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A stored token time (RFC 3339, any offset, any precision) as the CLI shows times: Asia/Shanghai
/// (+08:00), whole seconds. `None` for a value that is not RFC 3339.
pub fn local_time(stored: &str) -> Option<String> {
    let t = chrono::DateTime::parse_from_rfc3339(stored).ok()?;
    let shanghai = chrono::FixedOffset::east_opt(8 * 3600).expect("+08:00");
    Some(
        t.with_timezone(&shanghai)
            .format("%Y-%m-%dT%H:%M:%S%:z")
            .to_string(),
    )
}

/// Issues a token: stores its hash, writes the audit log, returns (id, token) — the token is
/// shown this once.
pub async fn issue(
    store: &dyn StateStore,
    role: &str,
    subject: &str,
    actor: &str,
) -> Result<(String, String), crate::state::StateError> {
    let token = new_token();
    let id = uuid::Uuid::new_v4().to_string();
    store
        .add_token(TokenRow {
            id: id.clone(),
            role: role.into(),
            subject: subject.into(),
            sha256: hash_token(&token),
        })
        .await?;
    store
        .audit(
            actor,
            "token_issued",
            &id,
            serde_json::json!({"role": role, "subject": subject}),
        )
        .await?;
    tracing::info!(token_id = %id, role, subject, actor, "token issued");
    Ok((id, token))
}

/// Revokes a token and writes the audit log; `false` when no active token has that id.
pub async fn revoke(
    store: &dyn StateStore,
    id: &str,
    actor: &str,
) -> Result<bool, crate::state::StateError> {
    let done = store.revoke_token(id).await?;
    if done {
        store
            .audit(actor, "token_revoked", id, serde_json::json!({}))
            .await?;
        tracing::info!(token_id = %id, actor, "token revoked");
    }
    Ok(done)
}

/// A token bucket per token: `rate` requests per second on average, `burst` at once.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: std::sync::Mutex<std::collections::HashMap<[u8; 32], (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(rate: f64, burst: f64) -> RateLimiter {
        RateLimiter {
            rate,
            burst: burst.max(1.0),
            buckets: Default::default(),
        }
    }

    /// `Ok` to go on, or `Err(seconds to wait)`.
    pub fn check(&self, token: &str) -> Result<(), u64> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("rate limiter lock");
        let (tokens, last) = buckets
            .entry(hash_token(token))
            .or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.rate).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / self.rate).ceil() as u64)
        }
    }
}

/// How often at most the token list is re-read from the store after an unknown token.
const REFRESH_AFTER: Duration = Duration::from_millis(50);
/// How old the cached token list may get before it is re-read anyway.
const MAX_AGE: Duration = Duration::from_secs(5);

pub struct Authenticator {
    configured: Vec<TokenRow>,
    store: Arc<dyn StateStore>,
    cache: RwLock<(Vec<TokenRow>, Instant)>,
}

impl Authenticator {
    pub async fn new(
        entries: &[TokenEntry],
        store: Arc<dyn StateStore>,
    ) -> anyhow::Result<Authenticator> {
        let mut configured = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            anyhow::ensure!(
                ROLES.contains(&e.role.as_str()),
                "auth.tokens[{i}]: unknown role '{}'",
                e.role
            );
            let bytes = hex::decode(e.sha256.trim())
                .ok()
                .filter(|b| b.len() == 32)
                .ok_or_else(|| anyhow::anyhow!("auth.tokens[{i}]: sha256 must be 64 hex digits"))?;
            let mut sha256 = [0u8; 32];
            sha256.copy_from_slice(&bytes);
            configured.push(TokenRow {
                id: format!("config-{i}"),
                role: e.role.clone(),
                subject: e.subject.clone(),
                sha256,
            });
        }
        let stored = store.tokens().await?;
        Ok(Authenticator {
            configured,
            store,
            cache: RwLock::new((stored, Instant::now())),
        })
    }

    /// The principal a bearer token stands for, if any.
    pub async fn authenticate(&self, token: &str) -> Option<Principal> {
        let hash = hash_token(token);
        // Revocations reach the cache within MAX_AGE.
        if self.cache.read().await.1.elapsed() >= MAX_AGE {
            self.refresh().await;
        }
        if let Some(p) = self.find(&hash).await {
            return Some(p);
        }
        // Perhaps a token issued since the last read: re-read, at most once per interval (an
        // unknown token waits for the next one, which also slows down guessing).
        let missed_at = Instant::now();
        let age = self.cache.read().await.1.elapsed();
        if age < REFRESH_AFTER {
            tokio::time::sleep(REFRESH_AFTER - age).await;
        }
        if self.cache.read().await.1 < missed_at {
            self.refresh().await;
        }
        self.find(&hash).await
    }

    async fn refresh(&self) {
        match self.store.tokens().await {
            Ok(rows) => *self.cache.write().await = (rows, Instant::now()),
            Err(e) => tracing::error!(error = %e, "cannot read tokens; keeping the cached list"),
        }
    }

    async fn find(&self, hash: &[u8; 32]) -> Option<Principal> {
        let cache = self.cache.read().await;
        // Compare against every hash without stopping early.
        let mut found = None;
        for row in self.configured.iter().chain(cache.0.iter()) {
            if bool::from(row.sha256.ct_eq(hash)) && found.is_none() {
                found = Principal::from_row(row);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_hash_stably() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 3 + 64);
        assert_eq!(hash_token(&a), hash_token(&a));
        assert_ne!(hash_token(&a), hash_token(&b));
    }
}
