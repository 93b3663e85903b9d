//! Held polls: the agent syncs a server process is holding open.
//!
//! An agent holds one long poll at a time; a second one is normal while
//! the first is being answered, but more mean a misbehaving or duplicated
//! agent tying up the server. At most [`HeldPolls::MAX_PER_AGENT`] are held
//! per agent: a new one releases the oldest, which answers at once with
//! the current state. At shutdown every held poll is released, so that the
//! process can exit without making agents wait for their poll's deadline.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::id::AgentId;

/// The polls one process holds, by agent.
#[derive(Debug, Default)]
pub struct HeldPolls {
    held: Mutex<Held>,
    draining: AtomicBool,
}

#[derive(Debug, Default)]
struct Held {
    next_ticket: u64,
    by_agent: HashMap<AgentId, VecDeque<(u64, Arc<Notify>)>>,
}

impl HeldPolls {
    /// How many polls of one agent are held at once.
    pub const MAX_PER_AGENT: usize = 2;

    /// No poll held.
    pub fn new() -> Self {
        Self::default()
    }

    /// Holds a poll of `agent`, releasing its oldest held poll if it now
    /// has more than [`Self::MAX_PER_AGENT`]. The hold ends when dropped.
    pub fn hold(self: &Arc<Self>, agent: AgentId) -> Hold {
        let released = Arc::new(Notify::new());
        let mut held = self.lock();
        let ticket = held.next_ticket;
        held.next_ticket = held.next_ticket.wrapping_add(1);
        let queue = held.by_agent.entry(agent).or_default();
        queue.push_back((ticket, Arc::clone(&released)));
        while queue.len() > Self::MAX_PER_AGENT {
            if let Some((_, oldest)) = queue.pop_front() {
                oldest.notify_one();
            }
        }
        drop(held);
        if self.draining() {
            released.notify_one();
        }
        Hold { polls: Arc::clone(self), agent, ticket, released }
    }

    /// Releases every held poll, now and from now on: the process is
    /// shutting down.
    pub fn release_all(&self) {
        self.draining.store(true, Ordering::SeqCst);
        for queue in self.lock().by_agent.values() {
            for (_, released) in queue {
                released.notify_one();
            }
        }
    }

    /// Whether [`Self::release_all`] was called.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// How many polls of `agent` are held.
    pub fn held(&self, agent: AgentId) -> usize {
        self.lock().by_agent.get(&agent).map_or(0, VecDeque::len)
    }

    fn lock(&self) -> MutexGuard<'_, Held> {
        // Plain maps: still consistent after a panic elsewhere.
        self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One held poll; dropping it ends the hold.
#[derive(Debug)]
pub struct Hold {
    polls: Arc<HeldPolls>,
    agent: AgentId,
    ticket: u64,
    released: Arc<Notify>,
}

impl Hold {
    /// Completes when the poll must answer at once: a newer poll of the
    /// same agent took its place, or the process is shutting down.
    pub async fn released(&self) {
        self.released.notified().await;
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut held = self.polls.lock();
        if let Some(queue) = held.by_agent.get_mut(&self.agent) {
            queue.retain(|(ticket, _)| *ticket != self.ticket);
            if queue.is_empty() {
                held.by_agent.remove(&self.agent);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn released_soon(hold: &Hold) -> bool {
        tokio::time::timeout(Duration::from_millis(50), hold.released()).await.is_ok()
    }

    #[tokio::test]
    async fn a_third_poll_releases_the_oldest_and_others_stay_held() {
        let polls = Arc::new(HeldPolls::new());
        let (agent, other) = (AgentId::generate(), AgentId::generate());
        let first = polls.hold(agent);
        let second = polls.hold(agent);
        let elsewhere = polls.hold(other);
        assert!(!released_soon(&first).await, "two polls of one agent are held");
        let third = polls.hold(agent);
        assert!(released_soon(&first).await, "the third releases the oldest");
        assert!(!released_soon(&second).await && !released_soon(&third).await);
        assert!(!released_soon(&elsewhere).await, "another agent's poll is its own");
        assert_eq!(polls.held(agent), 2);
        drop((first, second, third));
        assert_eq!(polls.held(agent), 0, "ended holds are forgotten");
    }

    #[tokio::test]
    async fn shutdown_releases_every_poll_and_every_later_one() {
        let polls = Arc::new(HeldPolls::new());
        let held: Vec<Hold> = (0..3).map(|_| polls.hold(AgentId::generate())).collect();
        polls.release_all();
        for hold in &held {
            assert!(released_soon(hold).await);
        }
        let late = polls.hold(AgentId::generate());
        assert!(released_soon(&late).await, "a poll that arrives while shutting down is not held");
    }
}
