//! Agents.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use pakkt_core::account::SecretHash;
use pakkt_core::agent::{Agent, HostInfo};
use pakkt_core::firewall::FirewallRule;
use pakkt_core::id::{AccountId, AgentId};
use pakkt_core::quota::Quota;
use pakkt_core::store::{AgentStore, StoreError};

use super::{
    AGENT_COLUMNS, Result, SyncJob, WriteOn, agent_from, dynamic, insert_firewall, is_unique_violation, write_batch,
};
use crate::codec::{backend, uncount, us};
use crate::open::Database;

#[async_trait]
impl AgentStore for Database {
    async fn insert_agent(
        &self,
        agent: &Agent,
        token: &SecretHash,
        system_rules: &[FirewallRule],
        max: u32,
    ) -> Result<()> {
        let mut tx = self.write().await?;
        self.lock_account(&mut tx, agent.account_id).await?;
        let held: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM agents WHERE account_id = $1")
            .bind(agent.account_id.to_string())
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?;
        Quota::Agents.admit(max, uncount(held), 1)?;
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
        let job = SyncJob(agent, host.clone(), now);
        self.writes.submit_a(job, move |syncs, reports| write_batch(pool, kind, writer, syncs, reports)).await
    }
}
