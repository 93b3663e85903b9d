//! The simulated agents: created directly in the database, then each
//! syncing and reporting as the real agent does.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use pakkt_core::account::{AccountName, AgentToken, ApiKey, ApiKeyRecord};
use pakkt_core::agent::{Agent, HostInfo};
use pakkt_core::firewall::{FirewallRule, SystemRole};
use pakkt_core::id::{AgentId, ApiKeyId};
use pakkt_core::store::prelude::*;
use pakkt_core::sync::{DesiredState, SyncReport};
use pakkt_store::StoreOptions;
use rand::Rng;
use serde_json::json;

use crate::config::Config;
use crate::failures::{checked, transport};
use crate::samples::Shared;

/// How long each simulated poll may be held. Real agents ask for 25 s and
/// report metrics on a second connection; here each agent keeps to one
/// connection (metrics go out between polls) and polls every 10 s, so that
/// 10,000 agents fit in 20,000 file descriptors per process while the
/// server answers at least as many syncs and reports as real agents cause.
const HOLD_SECS: u64 = 10;

/// Agents created at once in PostgreSQL (SQLite takes them one by one: it
/// has one writer anyway).
const POSTGRES_CREATORS: usize = 16;

/// Creates the account, its API key `key` and the agents directly in the
/// database; returns each agent's ID and token, in order of creation.
pub async fn create_agents(url: &str, config: &Config, key: &ApiKey) -> Vec<(AgentId, String)> {
    let (options, creators) = match config.postgres {
        Some(_) => {
            (StoreOptions { max_connections: POSTGRES_CREATORS as u32, ..StoreOptions::default() }, POSTGRES_CREATORS)
        }
        None => (StoreOptions::default(), 1),
    };
    let db = Arc::new(pakkt_store::Database::open_with(url, options).await.expect("database"));
    let now = chrono::Utc::now();
    let account = db.create_account(&"default".parse::<AccountName>().expect("name"), now).await.expect("account");
    db.insert_api_key(
        &ApiKeyRecord { id: ApiKeyId::generate(), account_id: account.id, hash: key.hash(), created_at: now },
        u32::MAX,
    )
    .await
    .expect("key");
    let mut creating = tokio::task::JoinSet::new();
    for first in 0..creators {
        let db = Arc::clone(&db);
        let agents = config.agents;
        creating.spawn(async move {
            let mut made = Vec::new();
            for n in (first..agents).step_by(creators) {
                let agent = Agent {
                    id: AgentId::generate(),
                    account_id: account.id,
                    name: format!("sim-{n}"),
                    host: HostInfo::default(),
                    last_seen_at: None,
                    created_at: now,
                    revision: 1,
                };
                let token = AgentToken::generate();
                let system: Vec<_> = SystemRole::ALL.iter().map(|r| FirewallRule::system(agent.id, *r, now)).collect();
                db.insert_agent(&agent, &token.hash(), &system, u32::MAX).await.expect("agent");
                made.push((n, agent.id, token.expose().to_owned()));
            }
            made
        });
    }
    let mut made: Vec<_> = creating.join_all().await.into_iter().flatten().collect();
    made.sort_unstable_by_key(|(n, _, _)| *n);
    db.close().await;
    made.into_iter().map(|(_, id, token)| (id, token)).collect()
}

/// One simulated agent, syncing and reporting through `base` (replica
/// `replica`) until told to stop.
pub async fn agent(
    i: usize,
    id: AgentId,
    token: String,
    replica: usize,
    base: String,
    client: reqwest::Client,
    shared: Arc<Shared>,
) {
    // Spread the agents' start over the ramp-up.
    tokio::time::sleep(Duration::from_millis(i as u64 / 5)).await;
    let metrics_offset = Duration::from_millis(rand::rng().random_range(0..10_000));
    let mut next_metrics = Instant::now() + metrics_offset;
    let mut revision = 0u64;
    let mut wait = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        let report = SyncReport { revision, ..SyncReport::default() };
        let sent = Instant::now();
        let answer = client
            .post(format!("{base}/agent/sync?wait={wait}"))
            .bearer_auth(&token)
            .json(&report)
            .timeout(Duration::from_mins(1))
            .send()
            .await;
        let took = sent.elapsed();
        match checked("sync", answer).await {
            Ok(response) => match response.json::<DesiredState>().await {
                Ok(desired) => {
                    let changed = desired.revision != revision;
                    if shared.measuring.load(Ordering::Relaxed) {
                        let mut s = shared.samples.lock().await;
                        s.syncs += 1;
                        if wait == 0 {
                            s.immediate.push(took);
                        }
                        if changed && let Some(change) = shared.pending.lock().await.remove(&id) {
                            let woke = change.at.elapsed();
                            if change.replica == replica {
                                s.wake_same.push(woke);
                            } else {
                                s.wake_cross.push(woke);
                            }
                        }
                    }
                    revision = desired.revision;
                    // A change answered: the next sync reports it at once.
                    wait = if changed && wait != 0 { 0 } else { HOLD_SECS };
                }
                Err(e) => shared.samples.lock().await.errors.add(transport("sync", &e)),
            },
            Err(failure) => {
                shared.samples.lock().await.errors.add(failure);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        if Instant::now() >= next_metrics {
            next_metrics += Duration::from_secs(10);
            let body = json!({"report_id": ulid::Ulid::new().to_string(),
                              "ports": [{"port": 30120, "packets_passed": 1000, "packets_dropped": 10,
                                         "bytes_passed": 64000, "bytes_dropped": 640}]});
            let sent = Instant::now();
            let result = client.post(format!("{base}/agent/metrics")).bearer_auth(&token).json(&body).send().await;
            let took = sent.elapsed();
            match checked("metrics", result).await {
                Ok(_) => {
                    if shared.measuring.load(Ordering::Relaxed) {
                        shared.samples.lock().await.metrics.push(took);
                    }
                }
                Err(failure) => shared.samples.lock().await.errors.add(failure),
            }
        }
    }
}
