//! The [`Store`] implementation, written once for both backends.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use chrono::{DateTime, Duration, DurationRound, Utc};
use pakkt_core::account::{Account, AccountName, ApiKeyRecord, SecretHash};
use pakkt_core::agent::{Agent, DataplaneMode, HostInfo};
use pakkt_core::firewall::{FirewallRule, FirewallSpec, Limit, SystemRole};
use pakkt_core::id::{AccountId, AgentId, ApiKeyId, EngineRuleId, FirewallRuleId, IpEntryId};
use pakkt_core::ip_list::{EntrySpec, EntryStatus, IpEntry, ListType};
use pakkt_core::lifecycle::{self, AfterReport, Deletion, Lifecycle, Phase};
use pakkt_core::metrics::{Counters, Interval, MetricBucket, MetricsReport};
use pakkt_core::rule::{EngineRule, EngineRuleStatus, Protocol, RateLimits, RuleSpec, RuleType};
use pakkt_core::slot::{self, Slot};
use pakkt_core::store::{DeleteResult, Store, StoreError};
use pakkt_core::sync::{DesiredState, ItemRef, SyncReport};
use sqlx::any::AnyRow;
use sqlx::any::{AnyArguments, AnyQueryResult};
use sqlx::{Any, AnyConnection, AnyPool, Row, Transaction};

use crate::codec::{backend, corrupt, count, from_us, from_us_opt, narrow, parse, uncount, us};
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

const ACCOUNT_COLUMNS: &str = "id, name, suspended, created_at";
const AGENT_COLUMNS: &str = "id, account_id, name, hostname, iface, version, mode, last_seen_at, created_at, revision";
const RULE_COLUMNS: &str = "id, agent_id, name, protocol, port_start, port_end, rule_type, max_pps, max_port_pps, \
     min_pkt_size, max_pkt_size, slot, status, status_message, created_at, loaded_at";
const ENTRY_COLUMNS: &str = "id, agent_id, list_type, cidr, reason, expires_at, status, status_message, created_at";
const FIREWALL_COLUMNS: &str = "id, agent_id, name, chain, protocol, port_start, port_end, action, limit_rate, \
     limit_unit, conntrack, system_role, status, status_message, created_at, packets_total, bytes_total";

/// Rows per multi-row `INSERT` when storing metrics.
const METRIC_BATCH: usize = 32;

fn get<'r, T>(row: &'r AnyRow, column: &str) -> Result<T>
where
    T: sqlx::Decode<'r, Any> + sqlx::Type<Any>,
{
    row.try_get(column).map_err(backend)
}

fn account_from(row: &AnyRow) -> Result<Account> {
    Ok(Account {
        id: parse(&get::<String>(row, "id")?, "account id")?,
        name: parse::<AccountName>(&get::<String>(row, "name")?, "account name")?,
        suspended: get::<i64>(row, "suspended")? != 0,
        created_at: from_us(get(row, "created_at")?)?,
    })
}

fn mode_str(mode: DataplaneMode) -> &'static str {
    match mode {
        DataplaneMode::Native => "native",
        DataplaneMode::Generic => "generic",
        DataplaneMode::Memory => "memory",
    }
}

fn agent_from(row: &AnyRow) -> Result<Agent> {
    let mode: Option<String> = get(row, "mode")?;
    Ok(Agent {
        id: parse(&get::<String>(row, "id")?, "agent id")?,
        account_id: parse(&get::<String>(row, "account_id")?, "account id")?,
        name: get(row, "name")?,
        host: HostInfo {
            hostname: get(row, "hostname")?,
            iface: get(row, "iface")?,
            version: get(row, "version")?,
            mode: mode.map(|m| parse(&m, "mode")).transpose()?,
        },
        last_seen_at: from_us_opt(get(row, "last_seen_at")?)?,
        created_at: from_us(get(row, "created_at")?)?,
        revision: narrow(get(row, "revision")?, "revision")?,
    })
}

fn rule_from(row: &AnyRow) -> Result<EngineRule> {
    let protocol =
        Protocol::try_from(narrow::<u8>(get(row, "protocol")?, "protocol")?).map_err(|e| corrupt(e.to_string()))?;
    let rule_type =
        RuleType::try_from(narrow::<u8>(get(row, "rule_type")?, "rule_type")?).map_err(|e| corrupt(e.to_string()))?;
    let limits = RateLimits {
        max_pps: narrow(get(row, "max_pps")?, "max_pps")?,
        max_port_pps: narrow(get(row, "max_port_pps")?, "max_port_pps")?,
        min_pkt_size: narrow(get(row, "min_pkt_size")?, "min_pkt_size")?,
        max_pkt_size: narrow(get(row, "max_pkt_size")?, "max_pkt_size")?,
    };
    let spec = RuleSpec::new(
        protocol,
        narrow(get(row, "port_start")?, "port_start")?,
        narrow(get(row, "port_end")?, "port_end")?,
        rule_type,
        limits,
    )
    .map_err(|e| corrupt(e.to_string()))?;
    let slot: Option<i64> = get(row, "slot")?;
    Ok(EngineRule {
        id: parse(&get::<String>(row, "id")?, "rule id")?,
        agent_id: parse(&get::<String>(row, "agent_id")?, "agent id")?,
        name: get(row, "name")?,
        spec,
        slot: slot.map(|s| narrow::<u8>(s, "slot").map(Slot::new)).transpose()?,
        status: parse(&get::<String>(row, "status")?, "status")?,
        status_message: get(row, "status_message")?,
        created_at: from_us(get(row, "created_at")?)?,
        loaded_at: from_us_opt(get(row, "loaded_at")?)?,
    })
}

fn entry_from(row: &AnyRow) -> Result<IpEntry> {
    Ok(IpEntry {
        id: parse(&get::<String>(row, "id")?, "entry id")?,
        agent_id: parse(&get::<String>(row, "agent_id")?, "agent id")?,
        spec: EntrySpec {
            list_type: parse(&get::<String>(row, "list_type")?, "list_type")?,
            cidr: parse(&get::<String>(row, "cidr")?, "cidr")?,
            reason: get(row, "reason")?,
            expires_at: from_us_opt(get(row, "expires_at")?)?,
        },
        status: parse(&get::<String>(row, "status")?, "status")?,
        status_message: get(row, "status_message")?,
        created_at: from_us(get(row, "created_at")?)?,
    })
}

fn role_str(role: SystemRole) -> &'static str {
    match role {
        SystemRole::Loopback => "loopback",
        SystemRole::EstablishedRelated => "established_related",
        SystemRole::ControlPlane => "control_plane",
    }
}

/// Where a firewall rule sorts: system rules in install order, then users'.
fn position(role: Option<SystemRole>) -> i64 {
    role.and_then(|r| SystemRole::ALL.iter().position(|x| *x == r))
        .and_then(|p| i64::try_from(p).ok())
        .unwrap_or(i64::try_from(SystemRole::ALL.len()).unwrap_or(3))
}

fn firewall_from(row: &AnyRow) -> Result<FirewallRule> {
    let port_start: Option<i64> = get(row, "port_start")?;
    let port_end: Option<i64> = get(row, "port_end")?;
    let ports = match (port_start, port_end) {
        (Some(s), Some(e)) => Some((narrow(s, "port_start")?, narrow(e, "port_end")?)),
        _ => None,
    };
    let limit_rate: Option<i64> = get(row, "limit_rate")?;
    let limit_unit: Option<String> = get(row, "limit_unit")?;
    let limit = match (limit_rate, limit_unit) {
        (Some(rate), Some(unit)) => {
            Some(Limit { rate: narrow(rate, "limit_rate")?, unit: parse(&unit, "limit_unit")? })
        }
        _ => None,
    };
    let conntrack: Option<String> = get(row, "conntrack")?;
    let role: Option<String> = get(row, "system_role")?;
    Ok(FirewallRule {
        id: parse(&get::<String>(row, "id")?, "firewall rule id")?,
        agent_id: parse(&get::<String>(row, "agent_id")?, "agent id")?,
        name: get(row, "name")?,
        spec: FirewallSpec {
            chain: parse(&get::<String>(row, "chain")?, "chain")?,
            protocol: parse(&get::<String>(row, "protocol")?, "protocol")?,
            ports,
            action: parse(&get::<String>(row, "action")?, "action")?,
            limit,
            conntrack: conntrack.map(|c| parse(&c, "conntrack")).transpose()?,
        },
        system: role.map(|r| parse(&r, "system_role")).transpose()?,
        status: parse(&get::<String>(row, "status")?, "status")?,
        status_message: get(row, "status_message")?,
        created_at: from_us(get(row, "created_at")?)?,
        packets_total: uncount(get(row, "packets_total")?),
        bytes_total: uncount(get(row, "bytes_total")?),
    })
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

impl Database {
    /// A write transaction: SQLite takes the write lock at once, so two
    /// writers never deadlock upgrading read locks.
    async fn write(&self) -> Result<Tx> {
        begin_write(&self.pool, self.backend, &self.writer).await
    }

    /// Locks `agent` for the rest of `tx` (PostgreSQL; SQLite's write
    /// transaction already excludes other writers). `NotFound` if absent.
    async fn lock_agent(&self, tx: &mut Tx, agent: AgentId) -> Result<()> {
        let sql = match self.backend {
            Backend::Sqlite => "SELECT id FROM agents WHERE id = $1",
            Backend::Postgres => "SELECT id FROM agents WHERE id = $1 FOR UPDATE",
        };
        let found = sqlx::query(sql).bind(agent.to_string()).fetch_optional(&mut **tx).await.map_err(backend)?;
        found.map(|_| ()).ok_or(StoreError::NotFound)
    }

    /// One attempt of [`Store::replace_api_keys`].
    async fn replace_api_keys_once(&self, key: &ApiKeyRecord) -> Result<()> {
        let mut tx = self.write().await?;
        let owner = sqlx::query("SELECT account_id FROM api_keys WHERE hash = $1")
            .bind(key.hash.as_bytes().to_vec())
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
        if let Some(row) = owner {
            if get::<String>(&row, "account_id")? != key.account_id.to_string() {
                return Err(StoreError::Duplicate { existing: key.hash.to_hex() });
            }
            sqlx::query("DELETE FROM api_keys WHERE account_id = $1 AND hash <> $2")
                .bind(key.account_id.to_string())
                .bind(key.hash.as_bytes().to_vec())
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        } else {
            sqlx::query("DELETE FROM api_keys WHERE account_id = $1")
                .bind(key.account_id.to_string())
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
            let inserted =
                sqlx::query("INSERT INTO api_keys (id, account_id, hash, created_at) VALUES ($1, $2, $3, $4)")
                    .bind(key.id.to_string())
                    .bind(key.account_id.to_string())
                    .bind(key.hash.as_bytes().to_vec())
                    .bind(us(key.created_at))
                    .execute(&mut *tx)
                    .await;
            match inserted {
                Ok(_) => {}
                Err(sqlx::Error::Database(db)) if db.is_foreign_key_violation() => return Err(StoreError::NotFound),
                Err(e) => return Err(backend(e)),
            }
        }
        Self::commit(tx).await?;
        self.notify_keys_changed().await;
        Ok(())
    }

    /// Raises `agent`'s revision. On PostgreSQL this also notifies every
    /// replica listening (see [`crate::replica`]); PostgreSQL delivers the
    /// notification when, and only if, the transaction commits.
    async fn bump(tx: &mut Tx, agent: AgentId) -> Result<()> {
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
    async fn notify_keys_changed(&self) {
        self.notify(KEYS_CHANGED).await;
    }

    /// Announces `payload` on the changes channel after a committed write
    /// (PostgreSQL; best effort).
    async fn notify(&self, payload: &str) {
        if self.backend == Backend::Postgres {
            let _ =
                sqlx::query("SELECT pg_notify($1, $2)").bind(CHANGES_CHANNEL).bind(payload).execute(&self.pool).await;
        }
    }

    async fn commit(tx: Tx) -> Result<()> {
        tx.inner.commit().await.map_err(backend)
    }

    /// Deletes or marks an item of `table` per the lifecycle, bumping the
    /// revision when anything changed.
    async fn delete_item<S: Lifecycle + serde::de::DeserializeOwned>(
        &self,
        table: &str,
        agent: AgentId,
        id: String,
        spell: fn(S) -> &'static str,
    ) -> DeleteResult {
        let mut tx = self.write().await?;
        self.lock_agent(&mut tx, agent).await?;
        let row = sqlx::query(dynamic(format!("SELECT status FROM {table} WHERE id = $1 AND agent_id = $2")))
            .bind(&id)
            .bind(agent.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?
            .ok_or(StoreError::NotFound)?;
        let status: S = parse(&get::<String>(&row, "status")?, "status")?;
        let outcome = lifecycle::on_delete(status.phase());
        match outcome {
            Deletion::Removed => {
                sqlx::query(dynamic(format!("DELETE FROM {table} WHERE id = $1")))
                    .bind(&id)
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
            }
            Deletion::Pending => {
                sqlx::query(dynamic(format!("UPDATE {table} SET status = $1 WHERE id = $2")))
                    .bind(spell(S::of_phase(Phase::Removing)))
                    .bind(&id)
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
            }
            Deletion::AlreadyPending => return Ok(outcome),
        }
        Self::bump(&mut tx, agent).await?;
        Self::commit(tx).await?;
        Ok(outcome)
    }

    /// Adds `rows` (agent, bucket, port, increments; each key once) to one
    /// metrics table, in multi-row upserts.
    async fn add_metrics(tx: &mut Tx, table: &str, rows: &[(&str, i64, u16, Counters)]) -> Result<()> {
        for chunk in rows.chunks(METRIC_BATCH) {
            let mut sql = format!(
                "INSERT INTO {table} (agent_id, bucket, port, packets_passed, packets_dropped, bytes_passed, bytes_dropped) VALUES "
            );
            for i in 0..chunk.len() {
                let b = i * 7;
                if i > 0 {
                    sql.push(',');
                }
                let _ =
                    write!(sql, "(${}, ${}, ${}, ${}, ${}, ${}, ${})", b + 1, b + 2, b + 3, b + 4, b + 5, b + 6, b + 7);
            }
            // Sums saturate at the largest BIGINT, as the counters
            // themselves do: no report can make the upsert fail (and with it
            // the other reports of its group) or wrap.
            sql.push_str(" ON CONFLICT (agent_id, bucket, port) DO UPDATE SET ");
            for (i, column) in ["packets_passed", "packets_dropped", "bytes_passed", "bytes_dropped"].iter().enumerate()
            {
                if i > 0 {
                    sql.push_str(", ");
                }
                let _ = write!(
                    sql,
                    "{column} = CASE WHEN {table}.{column} > {max} - excluded.{column} THEN {max} \
                     ELSE {table}.{column} + excluded.{column} END",
                    max = i64::MAX
                );
            }
            let mut query = sqlx::query(dynamic(sql));
            for (agent, bucket, port, c) in chunk {
                query = query
                    .bind(*agent)
                    .bind(*bucket)
                    .bind(i64::from(*port))
                    .bind(count(c.packets_passed))
                    .bind(count(c.packets_dropped))
                    .bind(count(c.bytes_passed))
                    .bind(count(c.bytes_dropped));
            }
            query.execute(&mut **tx).await.map_err(backend)?;
        }
        Ok(())
    }

    /// Prunes at most once a minute of real time per process.
    async fn prune_now_and_then(&self, now: DateTime<Utc>) -> Result<()> {
        let elapsed = i64::try_from(self.opened.elapsed().as_secs()).unwrap_or(i64::MAX);
        let last = self.last_prune.load(Ordering::Relaxed);
        if (last >= 0 && elapsed - last < 60)
            || self.last_prune.compare_exchange(last, elapsed, Ordering::Relaxed, Ordering::Relaxed).is_err()
        {
            return Ok(());
        }
        self.prune_metrics(now).await
    }

    /// Deletes metric buckets and report IDs older than their retention at
    /// `now`. Ingestion calls this about once a minute; call it yourself
    /// to prune at a moment of your choosing.
    pub async fn prune_metrics(&self, now: DateTime<Utc>) -> Result<()> {
        let r = self.retention;
        for (table, keep) in [("metrics_1m", r.minute), ("metrics_5m", r.five_minutes), ("metrics_1h", r.hour)] {
            sqlx::query(dynamic(format!("DELETE FROM {table} WHERE bucket < $1")))
                .bind((now - keep).timestamp())
                .write_on(self)
                .await?
                .map_err(backend)?;
        }
        sqlx::query("DELETE FROM metric_reports WHERE received_at < $1")
            .bind(us(now - r.minute))
            .write_on(self)
            .await?
            .map_err(backend)?;
        Ok(())
    }

    async fn sum_by_port(
        &self,
        table: &str,
        agent: AgentId,
        from: i64,
        to: i64,
        into: &mut BTreeMap<u16, Counters>,
    ) -> Result<()> {
        if from >= to {
            return Ok(());
        }
        let rows = sqlx::query(dynamic(format!(
            "SELECT port, CAST(SUM(packets_passed) AS BIGINT) AS pp, CAST(SUM(packets_dropped) AS BIGINT) AS pd, \
             CAST(SUM(bytes_passed) AS BIGINT) AS bp, CAST(SUM(bytes_dropped) AS BIGINT) AS bd FROM {table} WHERE agent_id = $1 AND bucket >= $2 AND bucket < $3 GROUP BY port"
        )))
        .bind(agent.to_string())
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        for row in &rows {
            let port: u16 = narrow(get(row, "port")?, "port")?;
            into.entry(port).or_default().add(Counters {
                packets_passed: uncount(get(row, "pp")?),
                packets_dropped: uncount(get(row, "pd")?),
                bytes_passed: uncount(get(row, "bp")?),
                bytes_dropped: uncount(get(row, "bd")?),
            });
        }
        Ok(())
    }
}

fn hour_floor(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(Duration::hours(1)).unwrap_or(at)
}

/// The first whole second at or after `at`: buckets are stored in whole
/// seconds, so a bucket starts before `at` exactly when its second is
/// below this (a bare `timestamp()` would drop the bucket that starts in
/// `at`'s own second).
fn secs_ceil(at: DateTime<Utc>) -> i64 {
    at.timestamp() + i64::from(at.timestamp_subsec_nanos() > 0)
}

fn hour_ceil(at: DateTime<Utc>) -> DateTime<Utc> {
    let floor = hour_floor(at);
    if floor == at { at } else { floor + Duration::hours(1) }
}

#[async_trait]
impl Store for Database {
    async fn create_account(&self, name: &AccountName, now: DateTime<Utc>) -> Result<Account> {
        let account = Account { id: AccountId::generate(), name: name.clone(), suspended: false, created_at: now };
        let inserted = sqlx::query("INSERT INTO accounts (id, name, suspended, created_at) VALUES ($1, $2, 0, $3)")
            .bind(account.id.to_string())
            .bind(name.as_str())
            .bind(us(now))
            .write_on(self)
            .await?;
        match inserted {
            Ok(_) => Ok(account),
            Err(e) if is_unique_violation(&e) => Err(StoreError::Duplicate { existing: name.to_string() }),
            Err(e) => Err(backend(e)),
        }
    }

    async fn account_by_name(&self, name: &AccountName) -> Result<Option<Account>> {
        let row = sqlx::query(dynamic(format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE name = $1")))
            .bind(name.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.as_ref().map(account_from).transpose()
    }

    async fn set_suspended(&self, name: &AccountName, suspended: bool) -> Result<Account> {
        let done = sqlx::query("UPDATE accounts SET suspended = $1 WHERE name = $2")
            .bind(i64::from(suspended))
            .bind(name.as_str())
            .write_on(self)
            .await?
            .map_err(backend)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.notify_keys_changed().await;
        self.account_by_name(name).await?.ok_or(StoreError::NotFound)
    }

    async fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<()> {
        let inserted = sqlx::query("INSERT INTO api_keys (id, account_id, hash, created_at) VALUES ($1, $2, $3, $4)")
            .bind(key.id.to_string())
            .bind(key.account_id.to_string())
            .bind(key.hash.as_bytes().to_vec())
            .bind(us(key.created_at))
            .write_on(self)
            .await?;
        match inserted {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(StoreError::Duplicate { existing: key.hash.to_hex() }),
            Err(sqlx::Error::Database(db)) if db.is_foreign_key_violation() => Err(StoreError::NotFound),
            Err(e) => Err(backend(e)),
        }
    }

    async fn replace_api_keys(&self, key: &ApiKeyRecord) -> Result<()> {
        // Replicas starting at once with one bootstrap key race to insert
        // it: the loser's insert violates the unique hash and is rolled
        // back; once more, it finds the key in place.
        match self.replace_api_keys_once(key).await {
            Err(e) if database_error(&e).is_some_and(sqlx::error::DatabaseError::is_unique_violation) => {
                self.replace_api_keys_once(key).await
            }
            outcome => outcome,
        }
    }

    async fn revoke_api_key(&self, id: ApiKeyId) -> Result<()> {
        let done = sqlx::query("DELETE FROM api_keys WHERE id = $1")
            .bind(id.to_string())
            .write_on(self)
            .await?
            .map_err(backend)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.notify_keys_changed().await;
        Ok(())
    }

    async fn key_by_hash(&self, hash: &SecretHash) -> Result<Option<(ApiKeyRecord, Account)>> {
        let row = sqlx::query(
            "SELECT k.id AS key_id, k.created_at AS key_created_at, a.id, a.name, a.suspended, a.created_at \
             FROM api_keys k JOIN accounts a ON a.id = k.account_id WHERE k.hash = $1",
        )
        .bind(hash.as_bytes().to_vec())
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        let Some(row) = row else { return Ok(None) };
        let account = account_from(&row)?;
        let key = ApiKeyRecord {
            id: parse(&get::<String>(&row, "key_id")?, "key id")?,
            account_id: account.id,
            hash: *hash,
            created_at: from_us(get(&row, "key_created_at")?)?,
        };
        Ok(Some((key, account)))
    }

    async fn list_api_keys(&self, account: AccountId) -> Result<Vec<ApiKeyRecord>> {
        let rows =
            sqlx::query("SELECT id, hash, created_at FROM api_keys WHERE account_id = $1 ORDER BY created_at, id")
                .bind(account.to_string())
                .fetch_all(&self.pool)
                .await
                .map_err(backend)?;
        rows.iter()
            .map(|row| {
                let hash: [u8; 32] =
                    get::<Vec<u8>>(row, "hash")?.try_into().map_err(|_| corrupt("an API key hash is not 32 bytes"))?;
                Ok(ApiKeyRecord {
                    id: parse(&get::<String>(row, "id")?, "key id")?,
                    account_id: account,
                    hash: SecretHash::from_bytes(hash),
                    created_at: from_us(get(row, "created_at")?)?,
                })
            })
            .collect()
    }

    async fn insert_agent(&self, agent: &Agent, token: &SecretHash, system_rules: &[FirewallRule]) -> Result<()> {
        let mut tx = self.write().await?;
        let inserted = sqlx::query(
            "INSERT INTO agents (id, account_id, name, token_hash, created_at, revision) VALUES ($1, $2, $3, $4, $5, 1)",
        )
        .bind(agent.id.to_string())
        .bind(agent.account_id.to_string())
        .bind(&agent.name)
        .bind(token.as_bytes().to_vec())
        .bind(us(agent.created_at))
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => return Err(StoreError::Duplicate { existing: "agent token".into() }),
            Err(sqlx::Error::Database(db)) if db.is_foreign_key_violation() => return Err(StoreError::NotFound),
            Err(e) => return Err(backend(e)),
        }
        for rule in system_rules {
            insert_firewall(&mut tx, rule).await?;
        }
        Self::commit(tx).await
    }

    async fn list_agents(&self, account: AccountId) -> Result<Vec<Agent>> {
        let rows = sqlx::query(dynamic(format!(
            "SELECT {AGENT_COLUMNS} FROM agents WHERE account_id = $1 ORDER BY created_at, id"
        )))
        .bind(account.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(agent_from).collect()
    }

    async fn get_agent(&self, account: AccountId, id: AgentId) -> Result<Option<Agent>> {
        let row = sqlx::query(dynamic(format!("SELECT {AGENT_COLUMNS} FROM agents WHERE id = $1 AND account_id = $2")))
            .bind(id.to_string())
            .bind(account.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.as_ref().map(agent_from).transpose()
    }

    async fn delete_agent(&self, account: AccountId, id: AgentId) -> Result<()> {
        let done = sqlx::query("DELETE FROM agents WHERE id = $1 AND account_id = $2")
            .bind(id.to_string())
            .bind(account.to_string())
            .write_on(self)
            .await?
            .map_err(backend)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        // A poll the agent holds on another replica ends (401) at once.
        self.notify(&id.to_string()).await;
        Ok(())
    }

    async fn agent_by_token(&self, token: &SecretHash) -> Result<Option<Agent>> {
        let row = sqlx::query(dynamic(format!("SELECT {AGENT_COLUMNS} FROM agents WHERE token_hash = $1")))
            .bind(token.as_bytes().to_vec())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.as_ref().map(agent_from).transpose()
    }

    async fn record_sync(&self, agent: AgentId, host: &HostInfo, now: DateTime<Utc>) -> Result<()> {
        let (pool, kind, writer) = (self.pool.clone(), self.backend, Arc::clone(&self.writer));
        let job = WriteJob::Sync(agent, host.clone(), now);
        match self.writes.submit(job, move |jobs| write_batch(pool, kind, writer, jobs)).await? {
            Written::Synced => Ok(()),
            Written::Report(_) => Err(mismatched()),
        }
    }

    async fn create_engine_rule(
        &self,
        agent: AgentId,
        name: &str,
        spec: &RuleSpec,
        now: DateTime<Utc>,
    ) -> Result<EngineRule> {
        let mut tx = self.write().await?;
        self.lock_agent(&mut tx, agent).await?;
        let rows = sqlx::query(dynamic(format!("SELECT {RULE_COLUMNS} FROM engine_rules WHERE agent_id = $1")))
            .bind(agent.to_string())
            .fetch_all(&mut *tx)
            .await
            .map_err(backend)?;
        let existing = rows.iter().map(rule_from).collect::<Result<Vec<_>>>()?;
        if let Some(dup) = existing.iter().find(|r| r.status.is_active() && r.spec.duplicates(spec)) {
            return Err(StoreError::Duplicate { existing: dup.id.to_string() });
        }
        let held = existing.iter().filter(|r| r.status.holds_slot()).filter_map(|r| r.slot);
        let slot = slot::lowest_free(held).ok_or(StoreError::SlotsExhausted)?;
        let rule = EngineRule {
            id: EngineRuleId::generate(),
            agent_id: agent,
            name: name.to_owned(),
            spec: *spec,
            slot: Some(slot),
            status: EngineRuleStatus::PendingLoad,
            status_message: None,
            created_at: now,
            loaded_at: None,
        };
        sqlx::query(dynamic(format!(
            "INSERT INTO engine_rules ({RULE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, NULL, $14, NULL)"
        )))
        .bind(rule.id.to_string())
        .bind(agent.to_string())
        .bind(name)
        .bind(i64::from(spec.protocol.number()))
        .bind(i64::from(spec.ports.start()))
        .bind(i64::from(spec.ports.end()))
        .bind(i64::from(u8::from(spec.rule_type)))
        .bind(i64::from(spec.limits.max_pps))
        .bind(i64::from(spec.limits.max_port_pps))
        .bind(i64::from(spec.limits.min_pkt_size))
        .bind(i64::from(spec.limits.max_pkt_size))
        .bind(i64::from(slot.get()))
        .bind(rule.status.as_str())
        .bind(us(now))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        Self::bump(&mut tx, agent).await?;
        Self::commit(tx).await?;
        Ok(rule)
    }

    async fn list_engine_rules(&self, agent: AgentId) -> Result<Vec<EngineRule>> {
        let rows = sqlx::query(dynamic(format!(
            "SELECT {RULE_COLUMNS} FROM engine_rules WHERE agent_id = $1 ORDER BY created_at, id"
        )))
        .bind(agent.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(rule_from).collect()
    }

    async fn delete_engine_rule(&self, agent: AgentId, id: EngineRuleId) -> DeleteResult {
        self.delete_item::<EngineRuleStatus>("engine_rules", agent, id.to_string(), EngineRuleStatus::as_str).await
    }

    async fn create_ip_entry(&self, agent: AgentId, spec: &EntrySpec, now: DateTime<Utc>) -> Result<IpEntry> {
        let mut tx = self.write().await?;
        self.lock_agent(&mut tx, agent).await?;
        let dup = sqlx::query(
            "SELECT id FROM ip_entries WHERE agent_id = $1 AND list_type = $2 AND cidr = $3 \
             AND status IN ('pending_add', 'active') AND (expires_at IS NULL OR expires_at > $4)",
        )
        .bind(agent.to_string())
        .bind(spec.list_type.as_str())
        .bind(spec.cidr.to_string())
        .bind(us(now))
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?;
        if let Some(row) = dup {
            return Err(StoreError::Duplicate { existing: get(&row, "id")? });
        }
        let entry = IpEntry {
            id: IpEntryId::generate(),
            agent_id: agent,
            spec: spec.clone(),
            status: EntryStatus::PendingAdd,
            status_message: None,
            created_at: now,
        };
        sqlx::query(dynamic(format!(
            "INSERT INTO ip_entries ({ENTRY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, $8)"
        )))
        .bind(entry.id.to_string())
        .bind(agent.to_string())
        .bind(spec.list_type.as_str())
        .bind(spec.cidr.to_string())
        .bind(spec.reason.clone())
        .bind(spec.expires_at.map(us))
        .bind(entry.status.as_str())
        .bind(us(now))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        Self::bump(&mut tx, agent).await?;
        Self::commit(tx).await?;
        Ok(entry)
    }

    async fn list_ip_entries(
        &self,
        agent: AgentId,
        list: Option<ListType>,
        now: DateTime<Utc>,
    ) -> Result<Vec<IpEntry>> {
        let rows = sqlx::query(dynamic(format!(
            "SELECT {ENTRY_COLUMNS} FROM ip_entries WHERE agent_id = $1 AND (expires_at IS NULL OR expires_at > $2) \
             AND ($3 = '' OR list_type = $3) ORDER BY created_at, id"
        )))
        .bind(agent.to_string())
        .bind(us(now))
        .bind(list.map_or("", ListType::as_str))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(entry_from).collect()
    }

    async fn delete_ip_entry(&self, agent: AgentId, id: IpEntryId) -> DeleteResult {
        self.delete_item::<EntryStatus>("ip_entries", agent, id.to_string(), EntryStatus::as_str).await
    }

    async fn purge_expired(&self, agent: AgentId, now: DateTime<Utc>) -> Result<usize> {
        // A cheap read first: most syncs find nothing to purge and take no
        // write lock.
        let any: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM ip_entries WHERE agent_id = $1 AND expires_at <= $2 LIMIT 1")
                .bind(agent.to_string())
                .bind(us(now))
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?;
        if any.is_none() {
            return Ok(0);
        }
        let mut tx = self.write().await?;
        self.lock_agent(&mut tx, agent).await?;
        let done = sqlx::query("DELETE FROM ip_entries WHERE agent_id = $1 AND expires_at <= $2")
            .bind(agent.to_string())
            .bind(us(now))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        let purged = usize::try_from(done.rows_affected()).unwrap_or(usize::MAX);
        if purged > 0 {
            Self::bump(&mut tx, agent).await?;
        }
        Self::commit(tx).await?;
        Ok(purged)
    }

    async fn next_expiry(&self, agent: AgentId, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>> {
        let next: Option<i64> =
            sqlx::query_scalar("SELECT MIN(expires_at) FROM ip_entries WHERE agent_id = $1 AND expires_at > $2")
                .bind(agent.to_string())
                .bind(us(now))
                .fetch_one(&self.pool)
                .await
                .map_err(backend)?;
        from_us_opt(next)
    }

    async fn create_firewall_rule(&self, rule: &FirewallRule) -> Result<()> {
        let mut tx = self.write().await?;
        self.lock_agent(&mut tx, rule.agent_id).await?;
        insert_firewall(&mut tx, rule).await?;
        Self::bump(&mut tx, rule.agent_id).await?;
        Self::commit(tx).await
    }

    async fn list_firewall_rules(&self, agent: AgentId) -> Result<Vec<FirewallRule>> {
        let rows = sqlx::query(dynamic(format!(
            "SELECT {FIREWALL_COLUMNS} FROM firewall_rules WHERE agent_id = $1 ORDER BY position, created_at, id"
        )))
        .bind(agent.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(firewall_from).collect()
    }

    async fn delete_firewall_rule(&self, agent: AgentId, id: FirewallRuleId) -> DeleteResult {
        self.delete_item::<EntryStatus>("firewall_rules", agent, id.to_string(), EntryStatus::as_str).await
    }

    async fn revision(&self, agent: AgentId) -> Result<u64> {
        let revision: Option<i64> = sqlx::query_scalar("SELECT revision FROM agents WHERE id = $1")
            .bind(agent.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        narrow(revision.ok_or(StoreError::NotFound)?, "revision")
    }

    async fn desired_state(&self, agent: AgentId, now: DateTime<Utc>) -> Result<DesiredState> {
        // The revision is read before the items: items at least as new as
        // the revision can only make an agent sync once more, never miss a
        // change.
        let revision = self.revision(agent).await?;
        let rules = self.list_engine_rules(agent).await?;
        let entries = self.list_ip_entries(agent, None, now).await?;
        let firewall = self.list_firewall_rules(agent).await?;
        Ok(DesiredState::from_items(revision, &rules, &entries, &firewall, now))
    }

    async fn apply_report(&self, agent: AgentId, report: &SyncReport, now: DateTime<Utc>) -> Result<()> {
        let failures: HashMap<ItemRef, &str> = report.failures.iter().map(|f| (f.item, f.message.as_str())).collect();
        let has_rule: HashSet<EngineRuleId> = report.applied.engine_rules.iter().copied().collect();
        let has_entry: HashSet<IpEntryId> = report.applied.ip_entries.iter().copied().collect();
        let has_fw: HashSet<FirewallRuleId> = report.applied.firewall_rules.iter().copied().collect();
        let counters: HashMap<FirewallRuleId, (u64, u64)> =
            report.firewall_counters.iter().map(|c| (c.id, (c.packets, c.bytes))).collect();

        let mut tx = self.write().await?;
        self.lock_agent(&mut tx, agent).await?;
        let mut failed_any = false;
        let agent_text = agent.to_string();

        let rows = sqlx::query("SELECT id, status FROM engine_rules WHERE agent_id = $1")
            .bind(&agent_text)
            .fetch_all(&mut *tx)
            .await
            .map_err(backend)?;
        for row in &rows {
            let id: EngineRuleId = parse(&get::<String>(row, "id")?, "rule id")?;
            let status: EngineRuleStatus = parse(&get::<String>(row, "status")?, "status")?;
            let failure = failures.get(&ItemRef::EngineRule(id)).copied();
            let query = match lifecycle::after_report(status.phase(), has_rule.contains(&id), failure) {
                AfterReport::Keep => continue,
                AfterReport::InForce => sqlx::query(
                    "UPDATE engine_rules SET status = 'loaded', loaded_at = COALESCE(loaded_at, $1) WHERE id = $2",
                )
                .bind(us(now)),
                AfterReport::Failed(message) => {
                    failed_any = true;
                    sqlx::query(
                        "UPDATE engine_rules SET status = 'failed', slot = NULL, status_message = $1 WHERE id = $2",
                    )
                    .bind(message)
                }
                AfterReport::Remove => sqlx::query("DELETE FROM engine_rules WHERE id = $1"),
            };
            query.bind(id.to_string()).execute(&mut *tx).await.map_err(backend)?;
        }

        for (table, fw) in [("ip_entries", false), ("firewall_rules", true)] {
            let rows = sqlx::query(dynamic(format!("SELECT id, status FROM {table} WHERE agent_id = $1")))
                .bind(&agent_text)
                .fetch_all(&mut *tx)
                .await
                .map_err(backend)?;
            for row in &rows {
                let id_text: String = get(row, "id")?;
                let status: EntryStatus = parse(&get::<String>(row, "status")?, "status")?;
                let (item, in_force) = if fw {
                    let id: FirewallRuleId = parse(&id_text, "firewall rule id")?;
                    if let Some((packets, bytes)) = counters.get(&id) {
                        sqlx::query("UPDATE firewall_rules SET packets_total = $1, bytes_total = $2 WHERE id = $3")
                            .bind(count(*packets))
                            .bind(count(*bytes))
                            .bind(&id_text)
                            .execute(&mut *tx)
                            .await
                            .map_err(backend)?;
                    }
                    (ItemRef::FirewallRule(id), has_fw.contains(&id))
                } else {
                    let id: IpEntryId = parse(&id_text, "entry id")?;
                    (ItemRef::IpEntry(id), has_entry.contains(&id))
                };
                let failure = failures.get(&item).copied();
                let query = match lifecycle::after_report(status.phase(), in_force, failure) {
                    AfterReport::Keep => continue,
                    AfterReport::InForce => {
                        sqlx::query(dynamic(format!("UPDATE {table} SET status = 'active' WHERE id = $1")))
                    }
                    AfterReport::Failed(message) => {
                        failed_any = true;
                        sqlx::query(dynamic(format!(
                            "UPDATE {table} SET status = 'failed', status_message = $1 WHERE id = $2"
                        )))
                        .bind(message)
                    }
                    AfterReport::Remove => sqlx::query(dynamic(format!("DELETE FROM {table} WHERE id = $1"))),
                };
                query.bind(&id_text).execute(&mut *tx).await.map_err(backend)?;
            }
        }
        if failed_any {
            Self::bump(&mut tx, agent).await?;
        }
        Self::commit(tx).await
    }

    async fn ingest_metrics(&self, agent: AgentId, report: &MetricsReport, now: DateTime<Utc>) -> Result<bool> {
        let (pool, kind, writer) = (self.pool.clone(), self.backend, Arc::clone(&self.writer));
        let job = WriteJob::Report(agent, report.clone(), now);
        let fresh = match self.writes.submit(job, move |jobs| write_batch(pool, kind, writer, jobs)).await? {
            Written::Report(fresh) => fresh,
            Written::Synced => return Err(mismatched()),
        };
        self.prune_now_and_then(now).await?;
        Ok(fresh)
    }

    async fn metrics_by_port(
        &self,
        agent: AgentId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<BTreeMap<u16, Counters>> {
        let mut per_port = BTreeMap::new();
        let (whole_from, whole_to) = (hour_ceil(from), hour_floor(to));
        if whole_from < whole_to {
            self.sum_by_port("metrics_1m", agent, secs_ceil(from), whole_from.timestamp(), &mut per_port).await?;
            self.sum_by_port("metrics_1h", agent, whole_from.timestamp(), whole_to.timestamp(), &mut per_port).await?;
            self.sum_by_port("metrics_1m", agent, whole_to.timestamp(), secs_ceil(to), &mut per_port).await?;
        } else {
            self.sum_by_port("metrics_1m", agent, secs_ceil(from), secs_ceil(to), &mut per_port).await?;
        }
        Ok(per_port)
    }

    async fn metrics_history(
        &self,
        agent: AgentId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        interval: Interval,
        port: Option<u16>,
    ) -> Result<Vec<MetricBucket>> {
        let table = match interval {
            Interval::Minute => "metrics_1m",
            Interval::FiveMinutes => "metrics_5m",
            Interval::Hour => "metrics_1h",
        };
        let rows = sqlx::query(dynamic(format!(
            "SELECT bucket, port, packets_passed, packets_dropped, bytes_passed, bytes_dropped FROM {table} \
             WHERE agent_id = $1 AND bucket >= $2 AND bucket < $3 AND ($4 < 0 OR port = $4) ORDER BY bucket, port"
        )))
        .bind(agent.to_string())
        .bind(interval.bucket_of(from).timestamp())
        .bind(secs_ceil(to))
        .bind(port.map_or(-1, i64::from))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|row| {
                Ok(MetricBucket {
                    bucket: DateTime::from_timestamp(get(row, "bucket")?, 0).ok_or_else(|| corrupt("bucket"))?,
                    port: narrow(get(row, "port")?, "port")?,
                    counters: Counters {
                        packets_passed: uncount(get(row, "packets_passed")?),
                        packets_dropped: uncount(get(row, "packets_dropped")?),
                        bytes_passed: uncount(get(row, "bytes_passed")?),
                        bytes_dropped: uncount(get(row, "bytes_dropped")?),
                    },
                })
            })
            .collect()
    }
}

async fn insert_firewall(tx: &mut Tx, rule: &FirewallRule) -> Result<()> {
    let spec = &rule.spec;
    let inserted = sqlx::query(dynamic(format!(
        "INSERT INTO firewall_rules ({FIREWALL_COLUMNS}, position) VALUES \
         ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)"
    )))
    .bind(rule.id.to_string())
    .bind(rule.agent_id.to_string())
    .bind(&rule.name)
    .bind(spec.chain.as_str())
    .bind(spec.protocol.as_str())
    .bind(spec.ports.map(|p| i64::from(p.0)))
    .bind(spec.ports.map(|p| i64::from(p.1)))
    .bind(spec.action.as_str())
    .bind(spec.limit.map(|l| i64::from(l.rate)))
    .bind(spec.limit.map(|l| l.unit.as_str()))
    .bind(spec.conntrack.as_ref().map(ToString::to_string))
    .bind(rule.system.map(role_str))
    .bind(rule.status.as_str())
    .bind(rule.status_message.clone())
    .bind(us(rule.created_at))
    .bind(count(rule.packets_total))
    .bind(count(rule.bytes_total))
    .bind(position(rule.system))
    .execute(&mut **tx)
    .await;
    match inserted {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(db)) if db.is_foreign_key_violation() => Err(StoreError::NotFound),
        Err(e) => Err(backend(e)),
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

/// A small write of the kind many agents make all the time; they are
/// committed in groups (see [`crate::group`]).
pub(crate) enum WriteJob {
    /// Record a sync: the agent's host details and when.
    Sync(AgentId, HostInfo, DateTime<Utc>),
    /// Store a metrics report that arrived then.
    Report(AgentId, MetricsReport, DateTime<Utc>),
}

impl WriteJob {
    /// Where the job comes in the one order every batch locks rows in:
    /// by agent, then syncs before reports, reports by ID.
    fn lock_order(&self) -> (AgentId, u8, &str) {
        match self {
            Self::Sync(agent, ..) => (*agent, 0, ""),
            Self::Report(agent, report, _) => (*agent, 1, report.report_id.as_str()),
        }
    }
}

/// Writes a batch, once more if PostgreSQL broke a deadlock or a
/// serialization conflict by aborting it (nothing of it was written).
async fn write_batch(
    pool: AnyPool,
    kind: Backend,
    writer: Arc<tokio::sync::Mutex<()>>,
    jobs: Vec<WriteJob>,
) -> Result<Vec<Result<Written>>> {
    match write_batch_once(&pool, kind, &writer, &jobs).await {
        Err(e) if is_retryable(&e) => write_batch_once(&pool, kind, &writer, &jobs).await,
        outcome => outcome,
    }
}

/// A deadlock (40P01) or serialization failure (40001).
fn is_retryable(e: &StoreError) -> bool {
    database_error(e).and_then(sqlx::error::DatabaseError::code).is_some_and(|code| code == "40P01" || code == "40001")
}

/// The database's own error behind a store error, if that is what it is.
fn database_error(e: &StoreError) -> Option<&dyn sqlx::error::DatabaseError> {
    let StoreError::Backend(cause) = e else { return None };
    cause.downcast_ref::<sqlx::Error>().and_then(sqlx::Error::as_database_error)
}

/// The outcome of a [`WriteJob`].
pub(crate) enum Written {
    /// The sync is recorded.
    Synced,
    /// The report is stored (`false`: a retry of one already stored).
    Report(bool),
}

fn mismatched() -> StoreError {
    StoreError::Backend("a grouped write was not answered as asked".into())
}

/// Writes a batch in one transaction: syncs recorded, then each report's
/// ID stored once per agent, the increments of the fresh ones summed per
/// bucket and port into each resolution, and their firewall counters set.
/// One outcome per job, in order; a job for an unknown agent fails alone.
async fn write_batch_once(
    pool: &AnyPool,
    kind: Backend,
    writer: &Arc<tokio::sync::Mutex<()>>,
    jobs: &[WriteJob],
) -> Result<Vec<Result<Written>>> {
    let mut tx = begin_write(pool, kind, writer).await?;
    // Rows are locked in one order (agents, then metric buckets, then
    // firewall counters, each sorted), so that concurrent batches, of one
    // replica or several on one PostgreSQL, cannot deadlock on each other.
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    order.sort_by_key(|&i| jobs[i].lock_order());
    let mut outcomes: Vec<Option<Result<Written>>> = (0..jobs.len()).map(|_| None).collect();
    let mut fresh_jobs = Vec::new();
    for i in order {
        let outcome = match &jobs[i] {
            WriteJob::Sync(agent, host, now) => {
                let done = sqlx::query(
                    // Two replicas' batches may commit out of order: the
                    // later sync wins, unless the stored one is more than a
                    // minute ahead (a replica whose clock ran fast).
                    "UPDATE agents SET hostname = $1, iface = $2, version = $3, mode = $4, last_seen_at = $5 \
                     WHERE id = $6 AND (last_seen_at IS NULL OR last_seen_at <= $5 OR last_seen_at > $5 + 60000000)",
                )
                .bind(host.hostname.clone())
                .bind(host.iface.clone())
                .bind(host.version.clone())
                .bind(host.mode.map(mode_str))
                .bind(us(*now))
                .bind(agent.to_string())
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
                if done.rows_affected() > 0 {
                    Ok(Written::Synced)
                } else {
                    // A newer sync is already recorded, or the agent is gone.
                    let exists = sqlx::query("SELECT id FROM agents WHERE id = $1")
                        .bind(agent.to_string())
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(backend)?;
                    if exists.is_some() { Ok(Written::Synced) } else { Err(StoreError::NotFound) }
                }
            }
            WriteJob::Report(agent, report, now) => {
                let agent_text = agent.to_string();
                let inserted = sqlx::query(
                    "INSERT INTO metric_reports (agent_id, report_id, received_at) \
                     SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM agents WHERE id = $1) \
                     ON CONFLICT (agent_id, report_id) DO NOTHING",
                )
                .bind(&agent_text)
                .bind(&report.report_id)
                .bind(us(*now))
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
                if inserted.rows_affected() > 0 {
                    fresh_jobs.push((agent_text, report, *now));
                    Ok(Written::Report(true))
                } else {
                    let exists = sqlx::query("SELECT id FROM agents WHERE id = $1")
                        .bind(&agent_text)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(backend)?;
                    if exists.is_some() { Ok(Written::Report(false)) } else { Err(StoreError::NotFound) }
                }
            }
        };
        outcomes[i] = Some(outcome);
    }
    for (table, interval) in
        [("metrics_1m", Interval::Minute), ("metrics_5m", Interval::FiveMinutes), ("metrics_1h", Interval::Hour)]
    {
        let mut sums: BTreeMap<(&str, i64, u16), Counters> = BTreeMap::new();
        for (agent, report, now) in &fresh_jobs {
            let bucket = interval.bucket_of(*now).timestamp();
            for sample in report.ports.iter().filter(|s| !s.counters.is_zero()) {
                sums.entry((agent.as_str(), bucket, sample.port)).or_default().add(sample.counters);
            }
        }
        let rows: Vec<(&str, i64, u16, Counters)> =
            sums.into_iter().map(|((agent, bucket, port), c)| (agent, bucket, port, c)).collect();
        Database::add_metrics(&mut tx, table, &rows).await?;
    }
    // Counters are totals: per rule, the last report (by ID) wins; rules
    // are updated in sorted order.
    let mut counters: BTreeMap<(&str, String), (u64, u64)> = BTreeMap::new();
    for (agent, report, _) in &fresh_jobs {
        for counter in &report.firewall_counters {
            counters.insert((agent.as_str(), counter.id.to_string()), (counter.packets, counter.bytes));
        }
    }
    for ((agent, rule), (packets, bytes)) in counters {
        sqlx::query("UPDATE firewall_rules SET packets_total = $1, bytes_total = $2 WHERE id = $3 AND agent_id = $4")
            .bind(count(packets))
            .bind(count(bytes))
            .bind(rule)
            .bind(agent)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
    }
    Database::commit(tx).await?;
    Ok(outcomes.into_iter().map(|o| o.unwrap_or_else(|| Err(mismatched()))).collect())
}
