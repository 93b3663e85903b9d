//! Engine rules, IP list entries and firewall rules: what an agent enforces.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use pakkt_core::firewall::FirewallRule;
use pakkt_core::id::{AgentId, EngineRuleId, FirewallRuleId, IpEntryId};
use pakkt_core::ip_list::{EntrySpec, EntryStatus, IpEntry, ListType};
use pakkt_core::lifecycle::{self, Deletion, Lifecycle, Phase};
use pakkt_core::quota::Quota;
use pakkt_core::rule::{EngineRule, EngineRuleStatus, RuleSpec};
use pakkt_core::store::{DeleteResult, FirewallStore, IpListStore, RuleStore, StoreError};

use super::{
    ENTRY_COLUMNS, FIREWALL_COLUMNS, RULE_COLUMNS, Result, Tx, dynamic, entry_from, firewall_from, get,
    insert_firewall, rule_from,
};
use crate::codec::{backend, from_us_opt, parse, uncount, us};
use crate::open::Database;

/// How an entry or firewall rule being removed is spelled: such items no
/// longer count against a quota ([`pakkt_core::quota::charges`]).
fn removing() -> &'static str {
    EntryStatus::of_phase(Phase::Removing).as_str()
}

impl Database {
    /// The IP list entries charged to `agent`'s quota at `now`, as
    /// [`pakkt_core::quota::charges_entry`] counts them: not being removed,
    /// not expired. Today these are the agent's own entries; entries that
    /// reach it otherwise (account-wide, automatic) are to be counted here
    /// too, so that every create path checks the same figure.
    async fn ip_entries_held(tx: &mut Tx, agent: AgentId, now: DateTime<Utc>) -> Result<u64> {
        let held: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM ip_entries WHERE agent_id = $1 AND status <> $2 \
             AND (expires_at IS NULL OR expires_at > $3)",
        )
        .bind(agent.to_string())
        .bind(removing())
        .bind(us(now))
        .fetch_one(&mut **tx)
        .await
        .map_err(backend)?;
        Ok(uncount(held))
    }

    /// The firewall rules charged to `agent`'s quota, as
    /// [`pakkt_core::quota::charges_firewall_rule`] counts them: the
    /// customer's (not system) rules that are not being removed.
    async fn firewall_rules_held(tx: &mut Tx, agent: AgentId) -> Result<u64> {
        let held: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM firewall_rules WHERE agent_id = $1 AND system_role IS NULL AND status <> $2",
        )
        .bind(agent.to_string())
        .bind(removing())
        .fetch_one(&mut **tx)
        .await
        .map_err(backend)?;
        Ok(uncount(held))
    }

    /// Deletes or marks an item of `table` per the lifecycle, bumping the
    /// revision when anything changed.
    pub(super) async fn delete_item<S: Lifecycle + serde::de::DeserializeOwned>(
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
}

#[async_trait]
impl RuleStore for Database {
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
        let slot = lifecycle::admit_rule(&existing, spec)?;
        let rule = lifecycle::admitted_rule(agent, name, spec, slot, now);
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
}

#[async_trait]
impl IpListStore for Database {
    async fn create_ip_entry(&self, agent: AgentId, spec: &EntrySpec, now: DateTime<Utc>, max: u32) -> Result<IpEntry> {
        let mut tx = self.write().await?;
        self.lock_agent(&mut tx, agent).await?;
        Quota::IpEntries.admit(max, Self::ip_entries_held(&mut tx, agent, now).await?, 1)?;
        // Only entries of the same list and prefix can be duplicates.
        let same = sqlx::query(dynamic(format!(
            "SELECT {ENTRY_COLUMNS} FROM ip_entries WHERE agent_id = $1 AND list_type = $2 AND cidr = $3"
        )))
        .bind(agent.to_string())
        .bind(spec.list_type.as_str())
        .bind(spec.cidr.to_string())
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        let same = same.iter().map(entry_from).collect::<Result<Vec<_>>>()?;
        lifecycle::admit_entry(&same, spec, now)?;
        let entry = lifecycle::admitted_entry(agent, spec, now);
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
}

#[async_trait]
impl FirewallStore for Database {
    async fn create_firewall_rule(&self, rule: &FirewallRule, max: u32) -> Result<()> {
        let mut tx = self.write().await?;
        self.lock_agent(&mut tx, rule.agent_id).await?;
        let adding = u64::from(pakkt_core::quota::charges_firewall_rule(rule));
        Quota::FirewallRules.admit(max, Self::firewall_rules_held(&mut tx, rule.agent_id).await?, adding)?;
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
}
