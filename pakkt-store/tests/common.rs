//! Fresh databases for tests: SQLite files in a temporary directory, and
//! PostgreSQL schemas on the server named by `PAKKT_TEST_POSTGRES_URL`
//! (the repository's test command starts a throw-away server and sets it).

#![allow(dead_code)] // each test file uses part of this module

use std::path::PathBuf;

use pakkt_store::{Database, StoreOptions};
use sqlx::Connection;

/// A temporary directory removed on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("pakkt-store-test-{}", ulid::Ulid::new()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }

    pub fn db(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A new SQLite database in `dir`.
pub async fn sqlite(dir: &TempDir) -> Database {
    Database::open(&dir.db(&format!("{}.db", ulid::Ulid::new()))).await.expect("open sqlite")
}

/// The PostgreSQL server for tests, or `None` (with a printed reason) when
/// none is configured. Under `PAKKT_REQUIRE_ALL=1` a missing server fails
/// the test instead.
pub fn postgres_url() -> Option<String> {
    match std::env::var("PAKKT_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            let reason = "PAKKT_TEST_POSTGRES_URL is not set (./scripts/test-all starts a server and sets it)";
            assert!(std::env::var("PAKKT_REQUIRE_ALL").as_deref() != Ok("1"), "PostgreSQL required: {reason}");
            eprintln!("skipped: {reason}");
            None
        }
    }
}

/// A new, empty schema on the test server, and the URL that uses it.
pub async fn postgres_schema(base: &str) -> String {
    let schema = format!("t_{}", ulid::Ulid::new().to_string().to_lowercase());
    let mut conn = sqlx::PgConnection::connect(base).await.expect("connect to test postgres");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut conn)
        .await
        .expect("create schema");
    conn.close().await.expect("close");
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-c%20search_path%3D{schema}")
}

/// A new PostgreSQL database (a fresh schema) on the test server.
pub async fn postgres(base: &str) -> Database {
    let options = StoreOptions { max_connections: 4, ..StoreOptions::default() };
    Database::open_with(&postgres_schema(base).await, options).await.expect("open postgres")
}
