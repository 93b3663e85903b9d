//! Change notification: wakes an agent's pending long poll when its desired
//! state changes.
//!
//! Each agent has its own channel, created when someone waits on it and
//! dropped when nobody does, so a change wakes only that agent's poll.
//! Replicas feed changes made elsewhere into [`ChangeFeed::publish`] (for
//! example from PostgreSQL `LISTEN`).

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

use crate::id::AgentId;

/// Per-agent change signals.
#[derive(Debug, Default)]
pub struct ChangeFeed {
    channels: Mutex<HashMap<AgentId, watch::Sender<u64>>>,
}

impl ChangeFeed {
    /// A feed with no subscribers.
    pub fn new() -> Self {
        Self::default()
    }

    /// A receiver that sees every change to `agent` published after this
    /// call. Subscribe *before* reading the state you compare against, so
    /// that no change can slip between the read and the wait.
    pub fn subscribe(&self, agent: AgentId) -> watch::Receiver<u64> {
        let mut channels = self.channels.lock().expect("feed lock");
        channels.entry(agent).or_insert_with(|| watch::channel(0).0).subscribe()
    }

    /// Signals that `agent`'s desired state changed.
    pub fn publish(&self, agent: AgentId) {
        let mut channels = self.channels.lock().expect("feed lock");
        if let Some(sender) = channels.get(&agent) {
            if sender.receiver_count() == 0 {
                channels.remove(&agent);
            } else {
                sender.send_modify(|n| *n = n.wrapping_add(1));
            }
        }
    }

    /// Signals every agent with a waiting subscriber, for when changes may
    /// have been missed (a replica's notification connection was lost):
    /// each woken poll reads its state again and waits on if nothing
    /// changed.
    pub fn publish_all(&self) {
        let mut channels = self.channels.lock().expect("feed lock");
        channels.retain(|_, sender| sender.receiver_count() > 0);
        for sender in channels.values() {
            sender.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// How many agents have a waiting subscriber (for metrics and tests).
    pub fn watched(&self) -> usize {
        let mut channels = self.channels.lock().expect("feed lock");
        channels.retain(|_, s| s.receiver_count() > 0);
        channels.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn publish_wakes_only_that_agent() {
        let feed = ChangeFeed::new();
        let (a, b) = (AgentId::generate(), AgentId::generate());
        let mut rx_a = feed.subscribe(a);
        let mut rx_b = feed.subscribe(b);
        feed.publish(a);
        tokio::time::timeout(Duration::from_millis(100), rx_a.changed()).await.expect("woken").expect("open");
        assert!(tokio::time::timeout(Duration::from_millis(50), rx_b.changed()).await.is_err());
        drop((rx_a, rx_b));
        assert_eq!(feed.watched(), 0);
    }

    #[tokio::test]
    async fn publish_all_wakes_every_waiting_agent() {
        let feed = ChangeFeed::new();
        let mut waiting: Vec<_> = (0..3).map(|_| feed.subscribe(AgentId::generate())).collect();
        drop(feed.subscribe(AgentId::generate()));
        feed.publish_all();
        for rx in &mut waiting {
            tokio::time::timeout(Duration::from_millis(100), rx.changed()).await.expect("woken").expect("open");
        }
        assert_eq!(feed.watched(), 3);
    }
}
