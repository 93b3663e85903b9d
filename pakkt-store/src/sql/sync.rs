//! Revisions and agents' reports.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use pakkt_core::id::AgentId;
use pakkt_core::ip_list::EntryStatus;
use pakkt_core::lifecycle::{self, AfterReport, Lifecycle, Phase};
use pakkt_core::rule::EngineRuleStatus;
use pakkt_core::store::{StoreError, SyncStore};
use pakkt_core::sync::{ItemRef, SyncReport};

use super::{Result, dynamic, get};
use crate::codec::{backend, count, narrow, parse, us};
use crate::open::Database;

#[async_trait]
impl SyncStore for Database {
    async fn revision(&self, agent: AgentId) -> Result<u64> {
        let revision: Option<i64> = sqlx::query_scalar("SELECT revision FROM agents WHERE id = $1")
            .bind(agent.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        narrow(revision.ok_or(StoreError::NotFound)?, "revision")
    }

    async fn apply_report(&self, agent: AgentId, report: &SyncReport, now: DateTime<Utc>) -> Result<()> {
        let mut tx = self.write().await?;
        self.lock_agent(&mut tx, agent).await?;
        let agent_text = agent.to_string();

        // The agent's items and their phases, read under the lock.
        let mut items = Vec::new();
        for (table, kind) in
            [("engine_rules", Kind::Rule), ("ip_entries", Kind::Entry), ("firewall_rules", Kind::Firewall)]
        {
            let rows = sqlx::query(dynamic(format!("SELECT id, status FROM {table} WHERE agent_id = $1")))
                .bind(&agent_text)
                .fetch_all(&mut *tx)
                .await
                .map_err(backend)?;
            for row in &rows {
                let id: String = get(row, "id")?;
                let status: String = get(row, "status")?;
                items.push(kind.item(&id, &status)?);
            }
        }
        let plan = lifecycle::plan_report(items, report);

        for (item, outcome) in &plan.moves {
            let (table, id) = match item {
                ItemRef::EngineRule(id) => ("engine_rules", id.to_string()),
                ItemRef::IpEntry(id) => ("ip_entries", id.to_string()),
                ItemRef::FirewallRule(id) => ("firewall_rules", id.to_string()),
            };
            let rule = matches!(item, ItemRef::EngineRule(_));
            let query = match outcome {
                AfterReport::Keep => continue,
                AfterReport::InForce if rule => sqlx::query(
                    "UPDATE engine_rules SET status = 'loaded', loaded_at = COALESCE(loaded_at, $1) WHERE id = $2",
                )
                .bind(us(now)),
                AfterReport::InForce => {
                    sqlx::query(dynamic(format!("UPDATE {table} SET status = 'active' WHERE id = $1")))
                }
                AfterReport::Failed(message) if rule => sqlx::query(
                    "UPDATE engine_rules SET status = 'failed', slot = NULL, status_message = $1 WHERE id = $2",
                )
                .bind(message.clone()),
                AfterReport::Failed(message) => sqlx::query(dynamic(format!(
                    "UPDATE {table} SET status = 'failed', status_message = $1 WHERE id = $2"
                )))
                .bind(message.clone()),
                AfterReport::Remove => sqlx::query(dynamic(format!("DELETE FROM {table} WHERE id = $1"))),
            };
            query.bind(id).execute(&mut *tx).await.map_err(backend)?;
        }

        // Counters are totals: each named rule of the agent takes the
        // report's figures.
        for counter in &report.firewall_counters {
            sqlx::query(
                "UPDATE firewall_rules SET packets_total = $1, bytes_total = $2 WHERE id = $3 AND agent_id = $4",
            )
            .bind(count(counter.packets))
            .bind(count(counter.bytes))
            .bind(counter.id.to_string())
            .bind(&agent_text)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        if plan.bump {
            Self::bump(&mut tx, agent).await?;
        }
        Self::commit(tx).await
    }
}

/// Which table a row came from.
#[derive(Clone, Copy)]
enum Kind {
    Rule,
    Entry,
    Firewall,
}

impl Kind {
    /// A row's item and phase.
    fn item(self, id: &str, status: &str) -> Result<(ItemRef, Phase)> {
        Ok(match self {
            Self::Rule => {
                (ItemRef::EngineRule(parse(id, "rule id")?), parse::<EngineRuleStatus>(status, "status")?.phase())
            }
            Self::Entry => (ItemRef::IpEntry(parse(id, "entry id")?), parse::<EntryStatus>(status, "status")?.phase()),
            Self::Firewall => {
                (ItemRef::FirewallRule(parse(id, "firewall rule id")?), parse::<EntryStatus>(status, "status")?.phase())
            }
        })
    }
}
