//! The changes made through the API while the agents are measured.

use std::time::{Duration, Instant};

use pakkt_core::account::ApiKey;
use pakkt_core::id::{AgentId, IpEntryId};
use pakkt_core::wire::CreatedIpEntry;
use rand::Rng;
use serde_json::json;

use crate::failures::{checked, transport};
use crate::samples::{Change, Shared};

/// How many changes the API client made.
#[derive(Default)]
pub struct Changes {
    pub attempted: u64,
    pub created: u64,
    pub deleted: u64,
}

/// Ten changes a second for `measure`, each through a random replica,
/// alternately adding a blacklist entry to a random agent and deleting an
/// entry added earlier (whichever is possible).
pub async fn make_changes(
    measure: Duration,
    tokens: &[(AgentId, String)],
    bases: &[String],
    key: &ApiKey,
    client: &reqwest::Client,
    shared: &Shared,
) -> Changes {
    let began = Instant::now();
    let mut changes = Changes::default();
    let mut entries: Vec<(AgentId, IpEntryId)> = Vec::new();
    let mut adds = 0u64;
    while began.elapsed() < measure {
        let replica = rand::rng().random_range(0..bases.len());
        let base = &bases[replica];
        let delete = changes.attempted % 2 == 1 && !entries.is_empty();
        let (id, outcome) = if delete {
            let (id, entry) = entries.swap_remove(rand::rng().random_range(0..entries.len()));
            shared.pending.lock().await.insert(id, Change { at: Instant::now(), replica });
            let result = client
                .delete(format!("{base}/agents/{id}/ip-list/{entry}"))
                .header("X-API-Key", key.expose())
                .send()
                .await;
            let outcome = checked("delete entry", result).await.map(|_| changes.deleted += 1);
            (id, outcome)
        } else {
            let (id, _) = &tokens[rand::rng().random_range(0..tokens.len())];
            let address = format!("198.51.{}.{}", adds / 250 % 250, adds % 250 + 1);
            adds += 1;
            shared.pending.lock().await.insert(*id, Change { at: Instant::now(), replica });
            let result = client
                .post(format!("{base}/agents/{id}/ip-list"))
                .header("X-API-Key", key.expose())
                .json(&json!({"list_type": "blacklist", "ip_address": address}))
                .send()
                .await;
            let outcome = match checked("add entry", result).await {
                Ok(response) => match response.json::<CreatedIpEntry>().await {
                    Ok(created) => {
                        entries.push((*id, created.id));
                        changes.created += 1;
                        Ok(())
                    }
                    // Added, though: the agent's revision moved.
                    Err(e) => Err(transport("add entry", &e)),
                },
                Err(failure) => Err(failure),
            };
            (*id, outcome)
        };
        changes.attempted += 1;
        if let Err(failure) = outcome {
            // A change that failed wakes no one.
            if !failure.kind.ends_with("undecodable answer") {
                shared.pending.lock().await.remove(&id);
            }
            shared.samples.lock().await.errors.add(failure);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    changes
}
