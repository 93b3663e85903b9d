//! The [`Store`](pakkt_core::store::Store) implementation, written once
//! for both backends: one file per role, plus the transactions and row
//! codecs they share ([`rows`]) and the grouped writes of syncs and metrics
//! reports ([`batch`]).

mod accounts;
mod agents;
mod batch;
mod items;
mod metrics;
mod rows;
mod sessions;
mod sync;

pub(crate) use batch::Writes;
use batch::{ReportJob, SyncJob, database_error, write_batch};
use rows::{
    ACCOUNT_COLUMNS, AGENT_COLUMNS, ENTRY_COLUMNS, FIREWALL_COLUMNS, RULE_COLUMNS, account_from, agent_from,
    egress_str, entry_from, firewall_from, insert_firewall, mode_str, rule_from,
};
use std::sync::Arc;

use pakkt_core::id::{AccountId, AgentId};
use pakkt_core::store::StoreError;
use sqlx::any::AnyRow;
use sqlx::any::{AnyArguments, AnyQueryResult};
use sqlx::{Any, AnyConnection, AnyPool, Row, Transaction};

use crate::codec::backend;
use crate::open::{Backend, Database};
use crate::replica::{CHANGES_CHANNEL, KEYS_CHANGED};

/// A statement in a write transaction of its own, so that on SQLite it
/// queues with the process's other writers (see [`Tx`]). The outer error
/// is the transaction's, the inner one the statement's, for the caller to
/// classify.
trait WriteOn {
    async fn write_on(self, db: &Database) -> Result<std::result::Result<AnyQueryResult, sqlx::Error>>;
}

impl WriteOn for sqlx::query::Query<'_, Any, AnyArguments> {
    async fn write_on(self, db: &Database) -> Result<std::result::Result<AnyQueryResult, sqlx::Error>> {
        let mut tx = db.write().await?;
        let done = self.execute(&mut *tx).await;
        if done.is_ok() {
            Database::commit(tx).await?;
        }
        Ok(done)
    }
}

/// A write transaction. On SQLite it also holds this process's writer
/// lock: SQLite admits one writer at a time, and a writer that finds the
/// database locked sleeps in steps of up to 100 ms before trying again, so
/// writers of one process queue here instead, and each starts the moment
/// the previous one commits.
pub(crate) struct Tx {
    inner: Transaction<'static, Any>,
    backend: Backend,
    _writer: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl std::ops::Deref for Tx {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        &self.inner
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.inner
    }
}

/// SQL assembled from this module's own constants (table and column names,
/// placeholder lists), never from input: values always go through binds.
fn dynamic(sql: String) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(sql)
}
type Result<T, E = StoreError> = std::result::Result<T, E>;

fn get<'r, T>(row: &'r AnyRow, column: &str) -> Result<T>
where
    T: sqlx::Decode<'r, Any> + sqlx::Type<Any>,
{
    row.try_get(column).map_err(backend)
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

impl Database {
    /// A write transaction: SQLite takes the write lock at once, so two
    /// writers never deadlock upgrading read locks.
    pub(super) async fn write(&self) -> Result<Tx> {
        begin_write(&self.pool, self.backend, &self.writer).await
    }

    /// Locks `agent` for the rest of `tx` (PostgreSQL; SQLite's write
    /// transaction already excludes other writers). `NotFound` if absent.
    pub(super) async fn lock_agent(&self, tx: &mut Tx, agent: AgentId) -> Result<()> {
        let sql = match self.backend {
            Backend::Sqlite => "SELECT id FROM agents WHERE id = $1",
            Backend::Postgres => "SELECT id FROM agents WHERE id = $1 FOR UPDATE",
        };
        let found = sqlx::query(sql).bind(agent.to_string()).fetch_optional(&mut **tx).await.map_err(backend)?;
        found.map(|_| ()).ok_or(StoreError::NotFound)
    }

    /// Locks `account` for the rest of `tx`, so that creates counted
    /// against its quotas queue behind each other (PostgreSQL; SQLite's
    /// write transaction already excludes other writers). `NotFound` if
    /// absent. `NO KEY UPDATE` rather than `UPDATE`: it excludes the other
    /// quota checks but not inserts elsewhere that merely reference the
    /// account (they take `KEY SHARE`).
    pub(super) async fn lock_account(&self, tx: &mut Tx, account: AccountId) -> Result<()> {
        let sql = match self.backend {
            Backend::Sqlite => "SELECT id FROM accounts WHERE id = $1",
            Backend::Postgres => "SELECT id FROM accounts WHERE id = $1 FOR NO KEY UPDATE",
        };
        let found = sqlx::query(sql).bind(account.to_string()).fetch_optional(&mut **tx).await.map_err(backend)?;
        found.map(|_| ()).ok_or(StoreError::NotFound)
    }

    /// Raises `agent`'s revision. On PostgreSQL this also notifies every
    /// replica listening (see [`crate::replica`]); PostgreSQL delivers the
    /// notification when, and only if, the transaction commits.
    pub(super) async fn bump(tx: &mut Tx, agent: AgentId) -> Result<()> {
        sqlx::query("UPDATE agents SET revision = revision + 1 WHERE id = $1")
            .bind(agent.to_string())
            .execute(&mut **tx)
            .await
            .map_err(backend)?;
        if tx.backend == Backend::Postgres {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANGES_CHANNEL)
                .bind(agent.to_string())
                .execute(&mut **tx)
                .await
                .map_err(backend)?;
        }
        Ok(())
    }

    /// Tells the other replicas that keys or accounts changed, so that they
    /// drop cached key lookups (PostgreSQL; best effort: their cache also
    /// expires on its own).
    pub(super) async fn notify_keys_changed(&self) {
        self.notify(KEYS_CHANGED).await;
    }

    /// Announces `payload` on the changes channel after a committed write
    /// (PostgreSQL; best effort).
    pub(super) async fn notify(&self, payload: &str) {
        if self.backend == Backend::Postgres {
            let _ =
                sqlx::query("SELECT pg_notify($1, $2)").bind(CHANGES_CHANNEL).bind(payload).execute(&self.pool).await;
        }
    }

    pub(super) async fn commit(tx: Tx) -> Result<()> {
        tx.inner.commit().await.map_err(backend)
    }
}

/// A write transaction: SQLite takes the write lock at once, so two
/// writers never deadlock upgrading read locks.
async fn begin_write(pool: &AnyPool, kind: Backend, writer: &Arc<tokio::sync::Mutex<()>>) -> Result<Tx> {
    match kind {
        Backend::Sqlite => {
            let guard = Arc::clone(writer).lock_owned().await;
            let tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(backend)?;
            Ok(Tx { inner: tx, backend: kind, _writer: Some(guard) })
        }
        Backend::Postgres => Ok(Tx { inner: pool.begin().await.map_err(backend)?, backend: kind, _writer: None }),
    }
}
