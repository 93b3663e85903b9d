//! Opening a database: choosing the backend, connecting, migrating.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use chrono::Duration as Span;
use pakkt_core::store::StoreError;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Connection, Executor};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

/// A pooled connection idle at least this long is checked before use.
const IDLE_PING_AFTER: Duration = Duration::from_secs(10);

/// Which database a [`Database`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An SQLite file (WAL, foreign keys on, busy timeout).
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// How long metric buckets are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// One-minute buckets (default 48 h).
    pub minute: Span,
    /// Five-minute buckets (default 14 days).
    pub five_minutes: Span,
    /// One-hour buckets (default 400 days).
    pub hour: Span,
}

impl Default for Retention {
    fn default() -> Self {
        Self { minute: Span::hours(48), five_minutes: Span::days(14), hour: Span::days(400) }
    }
}

/// Connection and retention settings.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Pool size (SQLite readers share it with the one writer at a time).
    pub max_connections: u32,
    /// How long a statement waits for a lock or a connection.
    pub busy_timeout: Duration,
    /// Metric retention.
    pub retention: Retention,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self { max_connections: 8, busy_timeout: Duration::from_secs(10), retention: Retention::default() }
    }
}

/// Why a database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The URL names no backend PAKKT supports.
    #[error("unsupported database URL {0:?}: use a file path, sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
    /// Connecting failed.
    #[error("cannot connect to the database")]
    Connect(#[source] sqlx::Error),
    /// The database was written by a newer PAKKT.
    #[error(
        "the database schema (version {found}) is newer than this PAKKT supports (version {supported}); upgrade PAKKT"
    )]
    SchemaTooNew {
        /// The database's newest migration.
        found: i64,
        /// This build's newest migration.
        supported: i64,
    },
    /// Applying migrations failed.
    #[error("cannot migrate the database")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

impl From<OpenError> for StoreError {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::SchemaTooNew { found, supported } => StoreError::SchemaTooNew { found, supported },
            other => StoreError::Backend(Box::new(other)),
        }
    }
}

/// A PAKKT database: an SQLite file or a PostgreSQL server.
pub struct Database {
    pub(crate) pool: AnyPool,
    pub(crate) backend: Backend,
    pub(crate) retention: Retention,
    /// When the database was opened: the clock of the pruning schedule.
    pub(crate) opened: std::time::Instant,
    /// Seconds after `opened` of the last pruning (negative: never), so
    /// pruning runs at most once a minute per process.
    pub(crate) last_prune: AtomicI64,
    /// Agents' syncs (`last_seen_at`, host details) and metrics reports,
    /// committed in groups (one at a time on SQLite, a few at once on
    /// PostgreSQL).
    pub(crate) writes: crate::sql::Writes,
    /// SQLite's writers of this process queue on this lock (see `sql::Tx`).
    pub(crate) writer: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// The URL connected to, for the change listener's own connection
    /// (PostgreSQL). Never printed: it may hold a password.
    pub(crate) url: String,
    /// Set when the change listener lost its connection: pooled
    /// connections are then checked before use for a while.
    pub(crate) suspect: Suspect,
}

/// Until when pooled connections are suspect (checked before every use):
/// milliseconds after `since`, 0 for never.
#[derive(Debug, Clone)]
pub(crate) struct Suspect {
    since: std::time::Instant,
    until_ms: std::sync::Arc<AtomicU64>,
}

impl Default for Suspect {
    fn default() -> Self {
        Self { since: std::time::Instant::now(), until_ms: std::sync::Arc::default() }
    }
}

impl Suspect {
    /// How long connections stay suspect after a loss: every connection in
    /// use gets checked once in that time, and one idle for longer is
    /// checked anyway.
    const FOR: Duration = Duration::from_secs(30);

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The database connection was seen to break.
    pub(crate) fn raise(&self) {
        let until = self.elapsed_ms().saturating_add(u64::try_from(Self::FOR.as_millis()).unwrap_or(u64::MAX));
        self.until_ms.fetch_max(until, Ordering::Relaxed);
    }

    fn now(&self) -> bool {
        self.elapsed_ms() < self.until_ms.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database").field("backend", &self.backend).finish_non_exhaustive()
    }
}

/// The URL sqlx understands for what the user wrote: a bare path is an
/// SQLite file, created if missing.
fn normalise(url: &str) -> Result<(Backend, String), OpenError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok((Backend::Postgres, url.to_owned()));
    }
    let (path, query) = match url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
        Some(rest) => rest.split_once('?').map_or((rest, None), |(p, q)| (p, Some(q))),
        None if !url.contains("://") && !url.is_empty() => (url, None),
        None => return Err(OpenError::UnsupportedUrl(url.chars().take(80).collect())),
    };
    if path.is_empty() {
        return Err(OpenError::UnsupportedUrl(url.chars().take(80).collect()));
    }
    let query = match query {
        Some(q) if q.contains("mode=") => q.to_owned(),
        Some(q) => format!("{q}&mode=rwc"),
        None => "mode=rwc".to_owned(),
    };
    Ok((Backend::Sqlite, format!("sqlite://{path}?{query}")))
}

impl Database {
    /// Opens (and for SQLite creates) the database at `url` with default
    /// options, applying any pending migration.
    pub async fn open(url: &str) -> Result<Self, OpenError> {
        Self::open_with(url, StoreOptions::default()).await
    }

    /// Opens the database at `url` with `options`.
    pub async fn open_with(url: &str, options: StoreOptions) -> Result<Self, OpenError> {
        sqlx::any::install_default_drivers();
        let (backend, url) = normalise(url)?;
        let connect: AnyConnectOptions = url.parse().map_err(OpenError::Connect)?;
        let kept_url = url.clone();
        let busy_ms = options.busy_timeout.as_millis();
        let suspect = Suspect::default();
        let pool = AnyPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.busy_timeout)
            // sqlx pings every connection it takes from the pool, a round
            // trip before each statement; ping only one that sat idle, or
            // every one for a while after the change listener lost its
            // connection (the server restarted or failed over: a broken
            // connection fails its ping and the pool takes another). (sqlx
            // still pings each connection it takes back, off the request's
            // path.)
            .test_before_acquire(false)
            .before_acquire({
                let suspect = suspect.clone();
                move |conn, meta| {
                    let check = meta.idle_for >= IDLE_PING_AFTER || suspect.now();
                    Box::pin(async move {
                        if check {
                            conn.ping().await?;
                        }
                        Ok(true)
                    })
                }
            })
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        let pragmas = format!(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                             PRAGMA foreign_keys = ON; PRAGMA busy_timeout = {busy_ms};"
                        );
                        conn.execute(sqlx::AssertSqlSafe(pragmas)).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(connect)
            .await
            .map_err(OpenError::Connect)?;
        let migrator = match backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        refuse_newer(&pool, migrator).await?;
        migrator.run(&pool).await.map_err(OpenError::Migrate)?;
        Ok(Self {
            pool,
            backend,
            retention: options.retention,
            opened: std::time::Instant::now(),
            last_prune: AtomicI64::new(-1),
            // SQLite has one writer; on PostgreSQL up to half the pool
            // (at most 4) may write batches while the rest serve reads.
            writes: crate::sql::Writes::with_writers(match backend {
                Backend::Sqlite => 1,
                Backend::Postgres => usize::try_from(options.max_connections / 2).unwrap_or(1).clamp(1, 4),
            }),
            writer: std::sync::Arc::default(),
            url: kept_url,
            suspect,
        })
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes every connection (waiting for those in use).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Refuses a database that has a migration this build does not know.
async fn refuse_newer(pool: &AnyPool, migrator: &Migrator) -> Result<(), OpenError> {
    let supported = migrator.iter().map(|m| m.version).max().unwrap_or(0);
    // No migrations table yet (an error here) means a new database.
    let found: Option<i64> =
        sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations").fetch_one(pool).await.unwrap_or_default();
    match found {
        Some(found) if found > supported => Err(OpenError::SchemaTooNew { found, supported }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_choose_the_backend() {
        assert_eq!(normalise("pakkt.db").expect("path"), (Backend::Sqlite, "sqlite://pakkt.db?mode=rwc".into()));
        assert_eq!(
            normalise("sqlite:///var/lib/pakkt/pakkt.db").expect("url"),
            (Backend::Sqlite, "sqlite:///var/lib/pakkt/pakkt.db?mode=rwc".into())
        );
        assert_eq!(normalise("sqlite://x.db?mode=ro").expect("mode kept").1, "sqlite://x.db?mode=ro");
        assert_eq!(normalise("postgres://u@localhost/pakkt").expect("pg").0, Backend::Postgres);
        assert_eq!(normalise("postgresql://u@localhost/pakkt").expect("pg").0, Backend::Postgres);
        for bad in ["", "mysql://localhost/x", "sqlite://", "http://x"] {
            assert!(matches!(normalise(bad), Err(OpenError::UnsupportedUrl(_))), "{bad:?}");
        }
    }
}
