//! Agents: the protected hosts, and how their status follows their syncs.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::id::{AccountId, AgentId};

/// How long after its last sync an agent still counts as online.
pub const ONLINE_FOR: Duration = Duration::seconds(30);

/// How far an agent's `last_seen_at` may lag its latest sync. A server
/// process records an agent's sync only when its host details changed or
/// its last record is at least this old, so agents that sync often (many
/// changes, restarts) cost at most one write per agent per this interval.
///
/// A sync not recorded may then be held for the longest poll (25 s), so
/// an agent's record can be this plus 25 s old when its next sync comes;
/// 2 s leaves 3 s of [`ONLINE_FOR`] for the agent to apply a change and
/// send that sync before it would show `offline`.
pub const LAST_SEEN_RESOLUTION: Duration = Duration::seconds(2);

/// An agent's connection status, derived from its last sync and the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Enum), oai(rename_all = "snake_case"))]
pub enum AgentStatus {
    /// Never synced.
    Pending,
    /// Synced within the last 30 s.
    Online,
    /// Synced once, but not within the last 30 s.
    Offline,
}

impl AgentStatus {
    /// The status at `now` of an agent last seen at `last_seen`.
    pub fn at(last_seen: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Self {
        match last_seen {
            None => Self::Pending,
            Some(seen) if now - seen <= ONLINE_FOR => Self::Online,
            Some(_) => Self::Offline,
        }
    }

    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Online => "online",
            Self::Offline => "offline",
        }
    }
}

/// How the agent's engine is attached to its interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Enum), oai(rename_all = "snake_case"))]
pub enum DataplaneMode {
    /// XDP in the driver.
    Native,
    /// XDP in the generic (skb) path.
    Generic,
    /// No kernel dataplane: the agent's in-memory model (demos and tests).
    Memory,
}

/// How the engine's egress observer (the TC program that verifies whom the
/// host answers, for `protect` rules) is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Enum), oai(rename_all = "snake_case"))]
pub enum EgressMode {
    /// A tcx link (Linux 6.6 and later), first in the interface's chain.
    Tcx,
    /// A filter on the interface's clsact qdisc (older kernels).
    Clsact,
}

/// What an agent tells about itself on each sync.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct HostInfo {
    /// The host's name.
    #[cfg_attr(feature = "openapi", oai(nullable))]
    pub hostname: Option<String>,
    /// The interface the engine is attached to.
    #[cfg_attr(feature = "openapi", oai(nullable))]
    pub iface: Option<String>,
    /// The agent's version.
    #[cfg_attr(feature = "openapi", oai(nullable))]
    pub version: Option<String>,
    /// How the engine is attached.
    #[cfg_attr(feature = "openapi", oai(nullable))]
    pub mode: Option<DataplaneMode>,
    /// How the engine's egress observer is attached (`None` from agents
    /// without the XDP engine, and from agents older than this field).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", oai(nullable))]
    pub egress: Option<EgressMode>,
}

impl HostInfo {
    /// Keeps each field to at most 255 printable characters, so that an agent
    /// cannot store arbitrary data through them.
    #[must_use]
    pub fn sanitised(self) -> Self {
        fn clean(value: Option<String>) -> Option<String> {
            value
                .map(|v| v.chars().filter(|c| !c.is_control()).take(255).collect::<String>())
                .filter(|v| !v.trim().is_empty())
        }
        Self {
            hostname: clean(self.hostname),
            iface: clean(self.iface),
            version: clean(self.version),
            mode: self.mode,
            egress: self.egress,
        }
    }
}

/// An agent as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    /// Its ID.
    pub id: AgentId,
    /// The owner.
    pub account_id: AccountId,
    /// Display name.
    pub name: String,
    /// What the agent last reported about its host.
    pub host: HostInfo,
    /// When it last synced.
    pub last_seen_at: Option<DateTime<Utc>>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// The revision of its desired state: bumped by every change to it.
    pub revision: u64,
}

impl Agent {
    /// Its status at `now`.
    pub fn status(&self, now: DateTime<Utc>) -> AgentStatus {
        AgentStatus::at(self.last_seen_at, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_follows_last_sync() {
        let now: DateTime<Utc> = "2026-03-16T12:00:00Z".parse().expect("time");
        assert_eq!(AgentStatus::at(None, now), AgentStatus::Pending);
        assert_eq!(AgentStatus::at(Some(now), now), AgentStatus::Online);
        assert_eq!(AgentStatus::at(Some(now - Duration::seconds(30)), now), AgentStatus::Online);
        assert_eq!(AgentStatus::at(Some(now - Duration::seconds(31)), now), AgentStatus::Offline);
        assert_eq!(serde_json::to_string(&AgentStatus::Offline).expect("json"), "\"offline\"");
    }

    #[test]
    fn host_info_is_bounded() {
        let info = HostInfo {
            hostname: Some(format!("host\u{1b}[31m{}", "x".repeat(400))),
            iface: Some("  ".into()),
            version: None,
            mode: Some(DataplaneMode::Generic),
            egress: Some(EgressMode::Clsact),
        }
        .sanitised();
        assert_eq!(info.hostname.as_deref().map(str::len), Some(255));
        assert!(!info.hostname.unwrap_or_default().contains('\u{1b}'));
        assert_eq!(info.iface, None);
        assert_eq!((info.mode, info.egress), (Some(DataplaneMode::Generic), Some(EgressMode::Clsact)));
    }

    #[test]
    fn host_info_from_an_older_agent_has_no_egress_mode() {
        let old: HostInfo = serde_json::from_str(r#"{"hostname": "debian", "mode": "native"}"#).expect("json");
        assert_eq!((old.mode, old.egress), (Some(DataplaneMode::Native), None));
        let new: HostInfo = serde_json::from_str(r#"{"mode": "native", "egress": "tcx"}"#).expect("json");
        assert_eq!(new.egress, Some(EgressMode::Tcx));
        assert_eq!(serde_json::to_value(EgressMode::Clsact).expect("json"), serde_json::json!("clsact"));
    }
}
