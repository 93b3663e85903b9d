//! The bench's own PostgreSQL database, and the statistics it samples.

use std::io::Write;

use sqlx::Connection;

/// The bench's own PostgreSQL database.
pub struct ScratchDatabase {
    /// The URL the user gave, to connect to for `CREATE` and `DROP`.
    admin_url: String,
    pub name: String,
}

impl ScratchDatabase {
    /// Creates a fresh database next to the one `admin_url` names; returns
    /// it and the URL that uses it.
    pub async fn create(admin_url: &str) -> Result<(Self, String), String> {
        let name = format!("pakkt_bench_{}", ulid::Ulid::new().to_string().to_lowercase());
        let url = with_database(admin_url, &name).ok_or("cannot read PAKKT_BENCH_DATABASE as a URL")?;
        let mut conn = sqlx::PgConnection::connect(admin_url).await.map_err(|e| format!("connect: {e}"))?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .map_err(|e| format!("CREATE DATABASE {name}: {e}"))?;
        let _ = conn.close().await;
        Ok((Self { admin_url: admin_url.to_owned(), name }, url))
    }

    /// Drops the database, closing whatever is still connected to it. Runs
    /// on a thread of its own, so that it works from `Drop`, inside or
    /// outside the runtime, and while unwinding.
    pub fn drop_now(&self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let outcome = std::thread::spawn(move || -> Result<(), String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("runtime: {e}"))?;
            runtime.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&admin_url).await.map_err(|e| format!("connect: {e}"))?;
                sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                    .execute(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = conn.close().await;
                Ok(())
            })
        })
        .join()
        .unwrap_or_else(|_| Err("the dropping thread panicked".into()));
        // Not `println!`: this may run while unwinding, with stdout gone.
        let _ = match outcome {
            Ok(()) => writeln!(std::io::stdout(), "dropped database {}", self.name),
            Err(e) => writeln!(std::io::stderr(), "could not drop database {} (drop it by hand): {e}", self.name),
        };
    }
}

/// `url` with its database replaced by `name` (user, host, port and query
/// kept).
fn with_database(url: &str, name: &str) -> Option<String> {
    let scheme_end = url.find("://")? + 3;
    let rest = &url[scheme_end..];
    let (path, query) = rest.split_once('?').map_or((rest, None), |(p, q)| (p, Some(q)));
    let authority = path.split_once('/').map_or(path, |(a, _)| a);
    if authority.is_empty() {
        return None;
    }
    let mut out = format!("{}{authority}/{name}", &url[..scheme_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    Some(out)
}

/// PostgreSQL's counters for the bench's database.
#[derive(Clone, Copy)]
pub struct PgCounters {
    /// Transactions committed (`pg_stat_database.xact_commit`).
    pub commits: u64,
    /// Rows of `agents` updated (`pg_stat_user_tables.n_tup_upd`).
    pub agent_updates: u64,
    /// Transaction IDs handed out (`pg_current_xact_id()`): only a
    /// transaction that writes takes one, so this counts write
    /// transactions (of the whole server, this bench's own sample included).
    pub write_xids: u64,
}

/// A connection to the bench's database that reads its statistics.
pub struct PgStats(sqlx::PgConnection);

impl PgStats {
    /// Connects, or says why not and returns `None`.
    pub async fn connect(url: &str) -> Option<Self> {
        match sqlx::PgConnection::connect(url).await {
            Ok(conn) => Some(Self(conn)),
            Err(e) => {
                eprintln!("no PostgreSQL statistics: {e}");
                None
            }
        }
    }

    /// The counters so far, or `None` (with a printed reason).
    pub async fn counters(&mut self) -> Option<PgCounters> {
        let commits =
            sqlx::query_scalar::<_, i64>("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
                .fetch_one(&mut self.0)
                .await;
        let updates = sqlx::query_scalar::<_, i64>(
            "SELECT COALESCE(SUM(n_tup_upd), 0)::bigint FROM pg_stat_user_tables WHERE relname = 'agents'",
        )
        .fetch_one(&mut self.0)
        .await;
        let xids =
            sqlx::query_scalar::<_, i64>("SELECT pg_current_xact_id()::text::bigint").fetch_one(&mut self.0).await;
        match (commits, updates, xids) {
            (Ok(commits), Ok(updates), Ok(xids)) => Some(PgCounters {
                commits: u64::try_from(commits).unwrap_or_default(),
                agent_updates: u64::try_from(updates).unwrap_or_default(),
                write_xids: u64::try_from(xids).unwrap_or_default(),
            }),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                eprintln!("no PostgreSQL statistics: {e}");
                None
            }
        }
    }

    pub async fn close(self) {
        let _ = self.0.close().await;
    }
}
