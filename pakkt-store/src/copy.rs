//! Copying a whole PAKKT database into an empty one: what
//! `pakkt-server migrate-to` runs to move from SQLite to PostgreSQL (or
//! back, or from one SQLite file to another).
//!
//! Both schemas hold the same tables and columns, and every column is one
//! of three kinds (64-bit integer, text, bytes), so the copy is plain rows:
//! table by table in foreign-key order, with the column list written once
//! in [`TABLES`].
//!
//! - **All or nothing.** The target is written in one transaction that
//!   first checks every copied table is empty (and on PostgreSQL locks
//!   them against other writers until the commit); the source is read in
//!   one read transaction, so the copy is one consistent snapshot even if
//!   a server still writes to the source meanwhile.
//! - **Bounded memory.** The source is read in pages in primary-key order
//!   (keyset: each page starts after the previous page's last key), and
//!   each page is written in multi-row `INSERT`s of at most [`MAX_BINDS`]
//!   parameters, far below SQLite's 32 766 and PostgreSQL's 65 535.
//! - **Only PAKKT's own data.** Tables a backend keeps for itself (sqlx's
//!   `_sqlx_migrations`, which `Database::open` fills on both sides, or
//!   PostgreSQL-only working state) are not copied, nor are web panel
//!   sessions (`panel_sessions`): they last hours, the copy is made with
//!   the servers stopped, and signing in again is all it costs.

use std::fmt::Write as _;

use sqlx::any::{AnyArguments, AnyRow};
use sqlx::{Any, AnyConnection, Row, Transaction};

use crate::open::{Backend, Database};

/// The kind of a column's values (every one of them may be NULL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `INTEGER` / `BIGINT`.
    Int,
    /// `TEXT`.
    Text,
    /// `BLOB` / `BYTEA`.
    Bytes,
}

/// A copied table: its columns with their kinds, and its primary key.
#[derive(Debug)]
struct Table {
    name: &'static str,
    columns: &'static [(&'static str, Kind)],
    /// The primary key's columns, in the key's order (each is in
    /// `columns`): pages are read in this order.
    key: &'static [&'static str],
}

use Kind::{Bytes, Int, Text};

const METRIC_COLUMNS: &[(&str, Kind)] = &[
    ("agent_id", Text),
    ("bucket", Int),
    ("port", Int),
    ("packets_passed", Int),
    ("packets_dropped", Int),
    ("bytes_passed", Int),
    ("bytes_dropped", Int),
    ("dropped_blacklist", Int),
    ("dropped_rule", Int),
    ("dropped_rate", Int),
    ("dropped_size", Int),
    ("dropped_unverified", Int),
    ("dropped_reflection", Int),
    ("dropped_out_of_state", Int),
    ("dropped_fragment", Int),
    ("dropped_malformed", Int),
];
const METRIC_KEY: &[&str] = &["agent_id", "bucket", "port"];

/// Every table the copy moves, parents before children (foreign keys are
/// enforced on both backends while the target is written). A migration
/// that adds a table or column of PAKKT's data adds it here too; tests
/// compare this list with the migrated SQLite schema, and PostgreSQL's
/// columns of these tables with SQLite's.
const TABLES: &[Table] = &[
    Table {
        name: "accounts",
        columns: &[("id", Text), ("name", Text), ("suspended", Int), ("created_at", Int)],
        key: &["id"],
    },
    Table {
        name: "api_keys",
        columns: &[("id", Text), ("account_id", Text), ("hash", Bytes), ("created_at", Int)],
        key: &["id"],
    },
    Table {
        name: "agents",
        columns: &[
            ("id", Text),
            ("account_id", Text),
            ("name", Text),
            ("token_hash", Bytes),
            ("hostname", Text),
            ("iface", Text),
            ("version", Text),
            ("mode", Text),
            ("last_seen_at", Int),
            ("created_at", Int),
            ("revision", Int),
            ("egress_mode", Text),
        ],
        key: &["id"],
    },
    Table {
        name: "engine_rules",
        columns: &[
            ("id", Text),
            ("agent_id", Text),
            ("name", Text),
            ("protocol", Int),
            ("port_start", Int),
            ("port_end", Int),
            ("rule_type", Int),
            ("max_pps", Int),
            ("max_port_pps", Int),
            ("min_pkt_size", Int),
            ("max_pkt_size", Int),
            ("slot", Int),
            ("status", Text),
            ("status_message", Text),
            ("created_at", Int),
            ("loaded_at", Int),
        ],
        key: &["id"],
    },
    Table {
        name: "ip_entries",
        columns: &[
            ("id", Text),
            ("agent_id", Text),
            ("list_type", Text),
            ("cidr", Text),
            ("reason", Text),
            ("expires_at", Int),
            ("status", Text),
            ("status_message", Text),
            ("created_at", Int),
        ],
        key: &["id"],
    },
    Table {
        name: "firewall_rules",
        columns: &[
            ("id", Text),
            ("agent_id", Text),
            ("name", Text),
            ("chain", Text),
            ("protocol", Text),
            ("port_start", Int),
            ("port_end", Int),
            ("action", Text),
            ("limit_rate", Int),
            ("limit_unit", Text),
            ("conntrack", Text),
            ("system_role", Text),
            ("position", Int),
            ("status", Text),
            ("status_message", Text),
            ("created_at", Int),
            ("packets_total", Int),
            ("bytes_total", Int),
        ],
        key: &["id"],
    },
    Table {
        name: "metric_reports",
        columns: &[("agent_id", Text), ("report_id", Text), ("received_at", Int)],
        key: &["agent_id", "report_id"],
    },
    Table { name: "metrics_1m", columns: METRIC_COLUMNS, key: METRIC_KEY },
    Table { name: "metrics_5m", columns: METRIC_COLUMNS, key: METRIC_KEY },
    Table { name: "metrics_1h", columns: METRIC_COLUMNS, key: METRIC_KEY },
];

/// Rows read from the source per query.
const PAGE_ROWS: usize = 1000;

/// Most bind parameters in one `INSERT`: far below both backends' limits
/// (SQLite 32 766, PostgreSQL 65 535), and statements stay small.
const MAX_BINDS: usize = 4096;

/// The names of the tables a copy moves, in the order it moves them.
pub fn copied_tables() -> impl Iterator<Item = &'static str> {
    TABLES.iter().map(|t| t.name)
}

/// How many rows of one table were copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableCount {
    /// The table.
    pub table: &'static str,
    /// Rows copied.
    pub rows: u64,
}

/// What a copy moved: one count per table, in the order copied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// Rows per table (every copied table, also empty ones).
    pub tables: Vec<TableCount>,
}

impl CopyReport {
    /// Rows copied into `table` (`None` for a table the copy does not move).
    pub fn rows(&self, table: &str) -> Option<u64> {
        self.tables.iter().find(|t| t.table == table).map(|t| t.rows)
    }

    /// Rows copied in all.
    pub fn total(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }
}

/// Why a copy failed. Whatever the cause, the target is left as it was.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The target already holds data: a copy only fills an empty database.
    #[error(
        "the target database is not empty (table {table} has rows): a copy only fills an empty database, \
         so nothing was written"
    )]
    TargetNotEmpty {
        /// The first table found with rows.
        table: &'static str,
    },
    /// Reading a table of the source failed.
    #[error("cannot read table {table} of the source database")]
    Read {
        /// The table.
        table: &'static str,
        /// The backend's error.
        #[source]
        source: sqlx::Error,
    },
    /// Writing a table of the target failed (the target is rolled back).
    #[error("cannot write table {table} of the target database")]
    Write {
        /// The table.
        table: &'static str,
        /// The backend's error.
        #[source]
        source: sqlx::Error,
    },
    /// Beginning or committing a transaction failed.
    #[error("cannot {step}")]
    Transaction {
        /// What was being done.
        step: &'static str,
        /// The backend's error.
        #[source]
        source: sqlx::Error,
    },
}

/// One column value.
#[derive(Debug, Clone)]
enum Value {
    Int(Option<i64>),
    Text(Option<String>),
    Bytes(Option<Vec<u8>>),
}

impl Value {
    fn read(row: &AnyRow, index: usize, kind: Kind) -> Result<Self, sqlx::Error> {
        Ok(match kind {
            Int => Self::Int(row.try_get(index)?),
            Text => Self::Text(row.try_get(index)?),
            Bytes => Self::Bytes(row.try_get(index)?),
        })
    }

    fn bind(self, query: sqlx::query::Query<'_, Any, AnyArguments>) -> sqlx::query::Query<'_, Any, AnyArguments> {
        match self {
            Self::Int(v) => query.bind(v),
            Self::Text(v) => query.bind(v),
            Self::Bytes(v) => query.bind(v),
        }
    }
}

/// SQL assembled from this module's constants (table and column names,
/// placeholder lists), never from data: values always go through binds.
fn dynamic(sql: String) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(sql)
}

/// `$first, $first+1, …` for `n` placeholders.
fn placeholders(first: usize, n: usize) -> String {
    let mut out = String::new();
    for i in 0..n {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "${}", first + i);
    }
    out
}

impl Table {
    fn column_list(&self) -> String {
        self.columns.iter().map(|(c, _)| *c).collect::<Vec<_>>().join(", ")
    }

    /// Positions of the key's columns in `columns`.
    fn key_positions(&self) -> Vec<usize> {
        self.key.iter().filter_map(|k| self.columns.iter().position(|(c, _)| c == k)).collect()
    }

    /// The query for the page after `after` (the previous page's last key;
    /// `None`: the first page).
    fn page_sql(&self, after: bool) -> String {
        let key = self.key.join(", ");
        let filter =
            if after { format!(" WHERE ({key}) > ({})", placeholders(1, self.key.len())) } else { String::new() };
        format!("SELECT {} FROM {}{filter} ORDER BY {key} LIMIT {PAGE_ROWS}", self.column_list(), self.name)
    }

    fn insert_sql(&self, rows: usize) -> String {
        let n = self.columns.len();
        let mut sql = format!("INSERT INTO {} ({}) VALUES ", self.name, self.column_list());
        for r in 0..rows {
            if r > 0 {
                sql.push_str(", ");
            }
            let _ = write!(sql, "({})", placeholders(r * n + 1, n));
        }
        sql
    }

    /// Rows per `INSERT`.
    fn rows_per_insert(&self) -> usize {
        (MAX_BINDS / self.columns.len()).clamp(1, PAGE_ROWS)
    }
}

/// Copies every PAKKT table of `from` into `to`, which must hold no row
/// in any of them (its schema is already current: [`Database::open`]
/// migrates). Either every row lands or, on any error, none does.
///
/// Writes that reach `from` while the copy runs are not in the copy: stop
/// the servers using it first.
pub async fn copy_database(from: &Database, to: &Database) -> Result<CopyReport, CopyError> {
    // The target first: a refusal costs no read of the source.
    let _writer = match to.backend {
        Backend::Sqlite => Some(std::sync::Arc::clone(&to.writer).lock_owned().await),
        Backend::Postgres => None,
    };
    let mut target = match to.backend {
        // Takes SQLite's write lock at once: no other writer until the end.
        Backend::Sqlite => to.pool.begin_with("BEGIN IMMEDIATE").await,
        Backend::Postgres => to.pool.begin().await,
    }
    .map_err(|source| CopyError::Transaction { step: "begin writing the target database", source })?;
    if to.backend == Backend::Postgres {
        // Other writers wait until the commit, so the target stays empty
        // but for the copy; readers are not held up.
        let names = copied_tables().collect::<Vec<_>>().join(", ");
        sqlx::query(dynamic(format!("LOCK TABLE {names} IN EXCLUSIVE MODE")))
            .execute(&mut *target)
            .await
            .map_err(|source| CopyError::Transaction { step: "lock the target database's tables", source })?;
    }
    for table in TABLES {
        let found = sqlx::query(dynamic(format!("SELECT 1 FROM {} LIMIT 1", table.name)))
            .fetch_optional(&mut *target)
            .await
            .map_err(|source| CopyError::Read { table: table.name, source })?;
        if found.is_some() {
            return Err(CopyError::TargetNotEmpty { table: table.name });
        }
    }

    let mut source = match from.backend {
        // WAL: the snapshot is taken at the first read and kept to the end.
        Backend::Sqlite => from.pool.begin().await,
        Backend::Postgres => from.pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await,
    }
    .map_err(|source| CopyError::Transaction { step: "begin reading the source database", source })?;

    let mut report = CopyReport::default();
    for table in TABLES {
        let rows = copy_table(table, &mut source, &mut target).await?;
        report.tables.push(TableCount { table: table.name, rows });
    }
    target.commit().await.map_err(|source| CopyError::Transaction { step: "commit the target database", source })?;
    // Read only: ending it cannot lose anything.
    let _ = source.rollback().await;
    Ok(report)
}

/// Copies one table page by page; returns how many rows.
async fn copy_table(
    table: &'static Table,
    source: &mut Transaction<'static, Any>,
    target: &mut Transaction<'static, Any>,
) -> Result<u64, CopyError> {
    let key_positions = table.key_positions();
    let first_page = table.page_sql(false);
    let next_page = table.page_sql(true);
    let mut after: Option<Vec<Value>> = None;
    let mut copied = 0u64;
    loop {
        let read = |source| CopyError::Read { table: table.name, source };
        let rows = match &after {
            None => sqlx::query(dynamic(first_page.clone())).fetch_all(&mut **source).await,
            Some(key) => {
                let query = key.iter().cloned().fold(sqlx::query(dynamic(next_page.clone())), |q, v| v.bind(q));
                query.fetch_all(&mut **source).await
            }
        }
        .map_err(read)?;
        let page: Vec<Vec<Value>> = rows
            .iter()
            .map(|row| table.columns.iter().enumerate().map(|(i, (_, kind))| Value::read(row, i, *kind)).collect())
            .collect::<Result<_, _>>()
            .map_err(read)?;
        let Some(last) = page.last() else { break };
        after = Some(key_positions.iter().map(|&i| last[i].clone()).collect());
        let full = page.len() == PAGE_ROWS;
        copied += page.len() as u64;
        write_rows(table, page, target).await?;
        if !full {
            break;
        }
    }
    Ok(copied)
}

/// Inserts `rows` in statements of at most [`MAX_BINDS`] parameters.
async fn write_rows(table: &'static Table, rows: Vec<Vec<Value>>, target: &mut AnyConnection) -> Result<(), CopyError> {
    let per_insert = table.rows_per_insert();
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<Vec<Value>> = rows.by_ref().take(per_insert).collect();
        let mut query = sqlx::query(dynamic(table.insert_sql(chunk.len())));
        for value in chunk.into_iter().flatten() {
            query = value.bind(query);
        }
        query.execute(&mut *target).await.map_err(|source| CopyError::Write { table: table.name, source })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tables of both schemas that the copy leaves behind on purpose: web
    /// panel sessions (people sign in again on the new database).
    const NOT_COPIED: &[&str] = &["panel_sessions"];

    #[test]
    fn every_table_has_its_key_among_its_columns() {
        for table in TABLES {
            assert_eq!(table.key_positions().len(), table.key.len(), "{}", table.name);
            assert!(table.rows_per_insert() * table.columns.len() <= MAX_BINDS, "{}", table.name);
        }
    }

    #[test]
    fn statements_number_their_placeholders_in_order() {
        let reports = TABLES.iter().find(|t| t.name == "metric_reports").expect("table");
        assert_eq!(
            reports.page_sql(true),
            "SELECT agent_id, report_id, received_at FROM metric_reports WHERE (agent_id, report_id) > ($1, $2) \
             ORDER BY agent_id, report_id LIMIT 1000"
        );
        assert_eq!(
            reports.insert_sql(2),
            "INSERT INTO metric_reports (agent_id, report_id, received_at) VALUES ($1, $2, $3), ($4, $5, $6)"
        );
    }

    /// The list above, with the tables left behind on purpose, is the
    /// whole migrated schema: every table (but sqlx's own), every column,
    /// with its kind and key.
    #[tokio::test]
    async fn the_table_list_is_the_schema() {
        let dir = std::env::temp_dir().join(format!("pakkt-copy-schema-{}", ulid::Ulid::new()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let db = Database::open(&dir.join("schema.db").display().to_string()).await.expect("open");
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
             AND name <> '_sqlx_migrations' ORDER BY name",
        )
        .fetch_all(&db.pool)
        .await
        .expect("tables");
        let mut listed: Vec<&str> = copied_tables().chain(NOT_COPIED.iter().copied()).collect();
        listed.sort_unstable();
        assert_eq!(names, listed);
        for table in TABLES {
            let rows = sqlx::query(dynamic(format!("SELECT name, type, pk FROM pragma_table_info('{}')", table.name)))
                .fetch_all(&db.pool)
                .await
                .expect("columns");
            let mut columns = Vec::new();
            let mut key = Vec::new();
            for row in &rows {
                let name: String = row.try_get("name").expect("name");
                let kind = match row.try_get::<String, _>("type").expect("type").as_str() {
                    "INTEGER" => Int,
                    "TEXT" => Text,
                    "BLOB" => Bytes,
                    other => panic!("{}.{name}: a column kind the copy does not know: {other}", table.name),
                };
                let pk: i64 = row.try_get("pk").expect("pk");
                if pk > 0 {
                    key.push((pk, name.clone()));
                }
                columns.push((name, kind));
            }
            key.sort();
            let want: Vec<(String, Kind)> = table.columns.iter().map(|(c, k)| ((*c).to_owned(), *k)).collect();
            assert_eq!(columns, want, "{}", table.name);
            assert_eq!(key.into_iter().map(|(_, k)| k).collect::<Vec<_>>(), table.key, "{}", table.name);
        }
        db.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
