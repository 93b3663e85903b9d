//! What server replicas on one PostgreSQL share besides the data: change
//! notifications, so that a change made through one replica wakes the
//! agents' long polls held by the others, and the per-key request limit.
//!
//! Every transaction that raises an agent's revision also sends
//! `NOTIFY pakkt_changes, '<agent id>'`, and changes to keys or accounts
//! send `'keys'`. PostgreSQL delivers a notification to every listening
//! connection when the sending transaction commits, and never for one
//! that rolls back, so a replica woken by it reads the committed change.
//! A listener whose connection drops, or goes silent, may miss
//! notifications: it connects again and then says so ([`Change::Missed`]),
//! and the replica wakes every held poll, each of which reads its state
//! again. Since the listener listens again before it says so, a change is
//! either announced or read by that re-read.
//!
//! SQLite has neither: one server process owns an SQLite file, and its
//! in-process feed and limiter are exact.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use pakkt_core::id::{AgentId, ApiKeyId};
use pakkt_core::ratelimit::{RateDecision, RateLimiter};
use pakkt_core::store::StoreError;
use sqlx::postgres::PgListener;
use sqlx::{AnyPool, Row};

use crate::codec::{backend, us};
use crate::open::{Backend, Database};

/// The PostgreSQL channel changes are announced on.
pub(crate) const CHANGES_CHANNEL: &str = "pakkt_changes";

/// The payload that announces a change to keys or accounts.
pub(crate) const KEYS_CHANGED: &str = "keys";

/// The payload a listener sends itself to check that its connection is
/// alive.
const PING: &str = "ping";

/// A listener that has heard nothing for this long checks its connection.
const PING_AFTER: Duration = Duration::from_secs(10);

/// How long connecting, listening or a check may take before the
/// connection counts as dead.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Rows of expired requests deleted per step of a sweep, and steps at
/// most per sweep.
const SWEEP_ROWS: u64 = 10_000;
const SWEEP_STEPS: usize = 20;

/// How the listener's connection shows in `pg_stat_activity`.
const APPLICATION_NAME: &str = "pakkt-listen";

/// A change announced by some replica (this one included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The agent's desired state changed, or the agent was deleted.
    Agent(AgentId),
    /// API keys or accounts changed: cached key lookups are stale.
    Keys,
    /// The listener (re)connected: any change before this may have gone
    /// unannounced, and every change after it is announced.
    Missed,
}

/// Changes announced by every replica on the database, in order.
///
/// It keeps one connection of its own and watches it: after
/// 10 s of quiet it sends itself a notification over that very
/// connection, and a connection that is lost, fails, or does not answer
/// within 10 s is replaced; the first answer on the new
/// one, once it listens, is [`Change::Missed`].
pub struct ChangeListener {
    url: String,
    inner: Option<PgListener>,
    /// Told when the connection is lost: the pool's may be broken too.
    suspect: crate::open::Suspect,
}

impl std::fmt::Debug for ChangeListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeListener").field("connected", &self.inner.is_some()).finish_non_exhaustive()
    }
}

fn timed_out() -> StoreError {
    StoreError::Backend("the database did not answer the change listener in time".into())
}

impl ChangeListener {
    async fn connect(url: &str) -> Result<PgListener, StoreError> {
        let sep = if url.contains('?') { '&' } else { '?' };
        let named = format!("{url}{sep}application_name={APPLICATION_NAME}");
        tokio::time::timeout(CONNECTION_TIMEOUT, async {
            let mut inner = PgListener::connect(&named).await.map_err(backend)?;
            // A lost connection is reported at once (`Ok(None)`), not made
            // again inside `try_recv`: `next` replaces it and listens
            // before it says `Missed`.
            inner.eager_reconnect(false);
            inner.listen(CHANGES_CHANNEL).await.map_err(backend)?;
            Ok(inner)
        })
        .await
        .map_err(|_| timed_out())?
    }

    /// The next change. After a lost, failed or silent connection it
    /// connects again and answers [`Change::Missed`] once it listens; an
    /// error means connecting failed, and the next call tries again.
    ///
    /// # Errors
    /// The database cannot be reached.
    pub async fn next(&mut self) -> Result<Change, StoreError> {
        loop {
            let Some(listener) = self.inner.as_mut() else {
                self.inner = Some(Self::connect(&self.url).await?);
                return Ok(Change::Missed);
            };
            // With eager reconnection off, `try_recv` awaits nothing but
            // the socket, where it is cancel-safe: a timeout loses nothing.
            match tokio::time::timeout(PING_AFTER, listener.try_recv()).await {
                Ok(Ok(Some(notification))) => match notification.payload() {
                    PING => {}
                    KEYS_CHANGED => return Ok(Change::Keys),
                    // Anything else on the channel is not ours to act on.
                    other => {
                        if let Ok(agent) = other.parse() {
                            return Ok(Change::Agent(agent));
                        }
                    }
                },
                // Lost: replaced at the top of the loop, then `Missed`.
                Ok(Ok(None)) => {
                    self.inner = None;
                    self.suspect.raise();
                }
                Ok(Err(e)) => {
                    self.inner = None;
                    self.suspect.raise();
                    return Err(backend(e));
                }
                Err(_quiet) => {
                    // Over this very connection: an answer proves the path
                    // alive (a path can die without a reset). Notifications
                    // that arrive meanwhile are kept for `try_recv`.
                    let ping = sqlx::query::<sqlx::Postgres>("SELECT pg_notify($1, $2)")
                        .bind(CHANGES_CHANNEL)
                        .bind(PING)
                        .execute(&mut *listener);
                    if !matches!(tokio::time::timeout(CONNECTION_TIMEOUT, ping).await, Ok(Ok(_))) {
                        self.inner = None;
                        self.suspect.raise();
                    }
                }
            }
        }
    }
}

impl Database {
    /// Listens for the changes every replica announces: `None` on SQLite,
    /// where there is only one server process.
    ///
    /// The listener holds one connection of its own, outside the pool,
    /// named `pakkt-listen` in `pg_stat_activity`.
    ///
    /// # Errors
    /// The database cannot be reached.
    pub async fn listen_for_changes(&self) -> Result<Option<ChangeListener>, StoreError> {
        if self.backend != Backend::Postgres {
            return Ok(None);
        }
        let inner = ChangeListener::connect(&self.url).await?;
        Ok(Some(ChangeListener { url: self.url.clone(), inner: Some(inner), suspect: self.suspect.clone() }))
    }

    /// The per-key request limit shared by every replica on this database:
    /// `None` on SQLite, where the in-process limiter is exact.
    pub fn shared_rate_limiter(&self, per_minute: u32) -> Option<SharedRateLimiter> {
        (self.backend == Backend::Postgres).then(|| SharedRateLimiter {
            pool: self.pool.clone(),
            limit: per_minute,
            window: chrono::Duration::minutes(1),
            database_clock: true,
            local: Mutex::new(HashMap::new()),
            last_sweep: AtomicI64::new(i64::MIN),
        })
    }
}

/// An exact rolling-window limit kept in PostgreSQL, so that it holds for
/// all replicas together: each allowed request is a row, and one function
/// call per request (`pakkt_take_request`, under a per-key advisory lock)
/// prunes the key's expired rows, counts the rest and adds the request if
/// there is room — one round trip, atomic across replicas, timed by the
/// database's clock.
///
/// A key that this process alone has already allowed the limit within the
/// window is refused without asking the database, so that a key flooding
/// one replica does not hold its database connections.
pub struct SharedRateLimiter {
    pool: AnyPool,
    limit: u32,
    window: chrono::Duration,
    /// Time requests by the database's clock (the default) rather than the
    /// caller's `now`.
    database_clock: bool,
    /// The times of the requests this process had allowed, per key, within
    /// the window (by this process's clock).
    local: Mutex<HashMap<ApiKeyId, VecDeque<DateTime<Utc>>>>,
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
    /// Times requests by the `now` each check is given instead of the
    /// database's clock (for tests that step time themselves).
    #[must_use]
    pub fn with_caller_clock(mut self) -> Self {
        self.database_clock = false;
        self
    }

    /// Deletes every key's expired rows, at most once a minute per process
    /// and in the background (keys that stop sending would otherwise keep
    /// theirs). It takes only rows no check holds, so it never waits on one
    /// and cannot deadlock with one; errors are left for the next sweep.
    fn sweep_now_and_then(&self, now: DateTime<Utc>) {
        let at = now.timestamp();
        let last = self.last_sweep.load(Ordering::Relaxed);
        if at.saturating_sub(last) < 60
            || self.last_sweep.compare_exchange(last, at, Ordering::Relaxed, Ordering::Relaxed).is_err()
        {
            return;
        }
        // Rows two windows old: expired by any clock within a window of
        // the database's. The rows carry the database's time unless the
        // caller's clock is in use.
        let keep = self.window.num_microseconds().unwrap_or(i64::MAX).saturating_mul(2);
        let caller_now = (!self.database_clock).then(|| us(now));
        let pool = self.pool.clone();
        tokio::spawn(async move {
            // In bounded steps, so that a backlog is caught up.
            for _ in 0..SWEEP_STEPS {
                let swept = sqlx::query(
                    "DELETE FROM api_requests WHERE ctid = ANY(ARRAY(\
                     SELECT ctid FROM api_requests \
                     WHERE at <= COALESCE($1, (EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::BIGINT) - $2 \
                     LIMIT 10000 FOR UPDATE SKIP LOCKED))",
                )
                .bind(caller_now)
                .bind(keep)
                .execute(&pool)
                .await;
                if !swept.is_ok_and(|done| done.rows_affected() == SWEEP_ROWS) {
                    break;
                }
            }
        });
    }

    fn lock_local(&self) -> std::sync::MutexGuard<'_, HashMap<ApiKeyId, VecDeque<DateTime<Utc>>>> {
        // Only whole pushes and pops happen under this lock.
        self.local.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Refuses without the database if this process alone allowed the
    /// limit within the window (then the shared count is at least that).
    fn refused_locally(&self, key: ApiKeyId, now: DateTime<Utc>) -> Option<RateDecision> {
        let mut local = self.lock_local();
        if local.len() > 100_000 {
            local.retain(|_, times| times.back().is_some_and(|t| *t > now - self.window));
        }
        let times = local.get_mut(&key)?;
        // The clock stepped back: what was noted cannot be placed.
        if times.back().is_some_and(|t| *t > now) {
            times.clear();
        }
        while times.front().is_some_and(|t| *t <= now - self.window) {
            times.pop_front();
        }
        if times.len() < self.limit as usize {
            return None;
        }
        let oldest = *times.front()?;
        Some(RateDecision {
            allowed: false,
            limit: self.limit,
            remaining: 0,
            reset_after: (oldest + self.window - now).to_std().unwrap_or(Duration::ZERO),
        })
    }

    fn note_allowed(&self, key: ApiKeyId, now: DateTime<Utc>) {
        let mut local = self.lock_local();
        let times = local.entry(key).or_default();
        times.push_back(now);
        while times.len() > self.limit as usize {
            times.pop_front();
        }
    }
}

#[async_trait]
impl RateLimiter for SharedRateLimiter {
    async fn check(&self, key: ApiKeyId, now: DateTime<Utc>) -> Result<RateDecision, StoreError> {
        if self.limit == 0 {
            return Ok(RateDecision::unlimited());
        }
        if let Some(refused) = self.refused_locally(key, now) {
            return Ok(refused);
        }
        self.sweep_now_and_then(now);
        let row = sqlx::query("SELECT allowed, remaining, reset_after FROM pakkt_take_request($1, $2, $3, $4)")
            .bind(key.to_string())
            .bind((!self.database_clock).then(|| us(now)))
            .bind(self.window.num_microseconds().unwrap_or(i64::MAX))
            .bind(i64::from(self.limit))
            .fetch_one(&self.pool)
            .await
            .map_err(backend)?;
        let allowed = row.try_get::<i64, _>("allowed").map_err(backend)? == 1;
        // The function keeps both within range; saturate all the same.
        let remaining = row.try_get::<i64, _>("remaining").map_err(backend)?;
        let reset_after = row.try_get::<i64, _>("reset_after").map_err(backend)?;
        if allowed {
            self.note_allowed(key, now);
        }
        Ok(RateDecision {
            allowed,
            limit: self.limit,
            remaining: u32::try_from(remaining.max(0)).unwrap_or(u32::MAX),
            reset_after: Duration::from_micros(u64::try_from(reset_after.max(0)).unwrap_or(0)),
        })
    }
}
