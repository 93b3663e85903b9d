//! What server replicas on one PostgreSQL share besides the data: change
//! notifications, so that a change made through one replica wakes the
//! agents' long polls held by the others, and the per-key request limit.
//!
//! Every transaction that raises an agent's revision also sends
//! `NOTIFY pakkt_changes, '<agent id>'`, and changes to keys or accounts
//! send `'keys'`. PostgreSQL delivers a notification to every listening
//! connection when the sending transaction commits, and never for one
//! that rolls back, so a replica woken by it reads the committed change.
//! A listener whose connection drops may miss notifications; it says so
//! ([`Change::Missed`]) and the replica then wakes every held poll, which
//! reads its state again.
//!
//! SQLite has neither: one server process owns an SQLite file, and its
//! in-process feed and limiter are exact.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use pakkt_core::id::{AgentId, ApiKeyId};
use pakkt_core::ratelimit::{RateDecision, RateLimiter};
use pakkt_core::store::StoreError;
use sqlx::postgres::PgListener;
use sqlx::{AnyPool, Row};

use crate::codec::{backend, narrow, us};
use crate::open::{Backend, Database};

/// The PostgreSQL channel changes are announced on.
pub(crate) const CHANGES_CHANNEL: &str = "pakkt_changes";

/// The payload that announces a change to keys or accounts.
pub(crate) const KEYS_CHANGED: &str = "keys";

/// A change announced by some replica (this one included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The agent's desired state changed.
    Agent(AgentId),
    /// API keys or accounts changed: cached key lookups are stale.
    Keys,
    /// The connection was lost and has been made again: any change in
    /// between may have gone unannounced.
    Missed,
}

/// Changes announced by every replica on the database, in order.
pub struct ChangeListener {
    inner: PgListener,
}

impl std::fmt::Debug for ChangeListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeListener").finish_non_exhaustive()
    }
}

impl ChangeListener {
    /// The next change. On a lost connection this reconnects and answers
    /// [`Change::Missed`]; an error means reconnecting failed, and the next
    /// call tries again.
    ///
    /// # Errors
    /// The database cannot be reached.
    pub async fn next(&mut self) -> Result<Change, StoreError> {
        loop {
            let Some(notification) = self.inner.try_recv().await.map_err(backend)? else {
                return Ok(Change::Missed);
            };
            let payload = notification.payload();
            if payload == KEYS_CHANGED {
                return Ok(Change::Keys);
            }
            // Anything else on the channel is not ours to act on.
            if let Ok(agent) = payload.parse() {
                return Ok(Change::Agent(agent));
            }
        }
    }
}

impl Database {
    /// Listens for the changes every replica announces: `None` on SQLite,
    /// where there is only one server process.
    ///
    /// The listener holds one connection of its own, outside the pool.
    ///
    /// # Errors
    /// The database cannot be reached.
    pub async fn listen_for_changes(&self) -> Result<Option<ChangeListener>, StoreError> {
        if self.backend != Backend::Postgres {
            return Ok(None);
        }
        let mut inner = PgListener::connect(&self.url).await.map_err(backend)?;
        inner.listen(CHANGES_CHANNEL).await.map_err(backend)?;
        Ok(Some(ChangeListener { inner }))
    }

    /// The per-key request limit shared by every replica on this database:
    /// `None` on SQLite, where the in-process limiter is exact.
    pub fn shared_rate_limiter(&self, per_minute: u32) -> Option<SharedRateLimiter> {
        (self.backend == Backend::Postgres).then(|| SharedRateLimiter {
            pool: self.pool.clone(),
            limit: per_minute,
            window: chrono::Duration::minutes(1),
            last_sweep: AtomicI64::new(i64::MIN),
        })
    }
}

/// An exact rolling-window limit kept in PostgreSQL, so that it holds for
/// all replicas together: each allowed request is a row, and one function
/// call per request (`pakkt_take_request`, under a per-key advisory lock)
/// prunes the key's expired rows, counts the rest and adds the request if
/// there is room — one round trip, atomic across replicas.
pub struct SharedRateLimiter {
    pool: AnyPool,
    limit: u32,
    window: chrono::Duration,
    /// Unix seconds of this process's last sweep of every key's expired
    /// rows.
    last_sweep: AtomicI64,
}

impl std::fmt::Debug for SharedRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedRateLimiter").field("limit", &self.limit).finish_non_exhaustive()
    }
}

impl SharedRateLimiter {
    /// Deletes every key's expired rows, at most once a minute per process
    /// (keys that stop sending would otherwise keep theirs).
    async fn sweep_now_and_then(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        let at = now.timestamp();
        let last = self.last_sweep.load(Ordering::Relaxed);
        if at.saturating_sub(last) < 60
            || self.last_sweep.compare_exchange(last, at, Ordering::Relaxed, Ordering::Relaxed).is_err()
        {
            return Ok(());
        }
        sqlx::query("DELETE FROM api_requests WHERE at <= $1")
            .bind(us(now - self.window))
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }
}

#[async_trait]
impl RateLimiter for SharedRateLimiter {
    async fn check(&self, key: ApiKeyId, now: DateTime<Utc>) -> Result<RateDecision, StoreError> {
        if self.limit == 0 {
            return Ok(RateDecision::unlimited());
        }
        self.sweep_now_and_then(now).await?;
        let row = sqlx::query("SELECT allowed, remaining, reset_after FROM pakkt_take_request($1, $2, $3, $4)")
            .bind(key.to_string())
            .bind(us(now))
            .bind(self.window.num_microseconds().unwrap_or(i64::MAX))
            .bind(i64::from(self.limit))
            .fetch_one(&self.pool)
            .await
            .map_err(backend)?;
        let allowed: i64 = row.try_get("allowed").map_err(backend)?;
        let remaining: u32 = narrow(row.try_get("remaining").map_err(backend)?, "remaining")?;
        let reset_after: u64 = narrow(row.try_get("reset_after").map_err(backend)?, "reset_after")?;
        Ok(RateDecision {
            allowed: allowed == 1,
            limit: self.limit,
            remaining,
            reset_after: Duration::from_micros(reset_after),
        })
    }
}
