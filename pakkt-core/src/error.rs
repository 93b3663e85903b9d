//! The conditions a use case can end in.
//!
//! Each [`Error`] names a domain condition, never an HTTP status; its
//! [`ErrorKind`] is the one API error code the condition maps to, so the
//! server's mapping is a single `match` and no condition can map to two.

use std::time::Duration;

use crate::store::StoreError;
use crate::validation::Invalid;

/// Why a use case did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No credential, a malformed one, or one that matches nothing.
    #[error("missing or invalid credentials")]
    Unauthenticated,
    /// The account behind the key is suspended.
    #[error("account suspended: settle the overdue payment to resume")]
    AccountSuspended,
    /// The key has used its requests for the rolling minute.
    #[error("rate limit of {limit} requests per minute reached; retry in {}s", retry_after.as_secs())]
    RateLimited {
        /// Requests allowed per rolling minute.
        limit: u32,
        /// How long until a request is allowed again.
        retry_after: Duration,
    },
    /// The agent has used its requests of this kind for now (per-agent
    /// limits on the agent endpoints).
    #[error("agent limit of {per_second} {what} per second reached; retry in {}s", retry_after.as_secs_f64().ceil())]
    AgentRateLimited {
        /// What was limited: `syncs` or `metrics reports`.
        what: &'static str,
        /// Requests of this kind allowed per second on average.
        per_second: u32,
        /// How long until one is allowed again.
        retry_after: Duration,
    },
    /// A query or path value is not one the API accepts.
    #[error("{0}")]
    BadRequest(String),
    /// The item does not exist, or belongs to another account.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for.
        what: Entity,
    },
    /// The request fits the schema but breaks a domain rule.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// Engine rules need the agent's interface, known after its first sync.
    #[error("agent not yet connected: start the agent once so that its interface is known")]
    AgentNotConnected,
    /// All 256 engine slots of the agent's interface are held.
    #[error("all 256 engine slots on this interface are in use; delete a rule first")]
    SlotsExhausted,
    /// System firewall rules keep the host reachable and cannot be deleted.
    #[error("system rules cannot be deleted")]
    SystemRule,
    /// The account (or agent) holds all that one of its quotas allows.
    #[error(transparent)]
    QuotaExceeded(#[from] crate::quota::QuotaExceeded),
    /// The item would duplicate one that exists.
    #[error("{what} already exists ({existing})")]
    Conflict {
        /// What kind of item.
        what: &'static str,
        /// The existing item's ID or name.
        existing: String,
    },
    /// The store failed; details are for the logs, not the caller.
    #[error("internal error")]
    Internal(#[source] StoreError),
}

/// The kinds of item a request can name, for [`Error::NotFound`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Entity {
    /// An account, by name.
    Account,
    /// An API key.
    ApiKey,
    /// An agent.
    Agent,
    /// An engine rule.
    EngineRule,
    /// An IP list entry.
    IpEntry,
    /// A firewall rule.
    FirewallRule,
    /// A marketplace template.
    Template,
}

impl std::fmt::Display for Entity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Account => "account",
            Self::ApiKey => "key",
            Self::Agent => "agent",
            Self::EngineRule => "rule",
            Self::IpEntry => "entry",
            Self::FirewallRule => "firewall rule",
            Self::Template => "template",
        })
    }
}

/// The API error codes (DESIGN §2), one per condition class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// `bad_request` (400).
    BadRequest,
    /// `unauthorized` (401).
    Unauthorized,
    /// `account_suspended` (402).
    AccountSuspended,
    /// `not_found` (404).
    NotFound,
    /// `method_not_allowed` (405): the path exists, not with this method.
    /// HTTP's alone: no use case answers it.
    MethodNotAllowed,
    /// `conflict` (409).
    Conflict,
    /// `validation_failed` (422).
    ValidationFailed,
    /// `rate_limited` (429).
    RateLimited,
    /// `internal` (500).
    Internal,
}

impl ErrorKind {
    /// Every kind.
    pub const ALL: [Self; 9] = [
        Self::BadRequest,
        Self::Unauthorized,
        Self::AccountSuspended,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::Conflict,
        Self::ValidationFailed,
        Self::RateLimited,
        Self::Internal,
    ];

    /// The kind whose [`Self::code`] is `code`, for clients reading an
    /// error body.
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.code() == code)
    }

    /// The `error` field of the API's error body.
    pub fn code(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::AccountSuspended => "account_suspended",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Conflict => "conflict",
            Self::ValidationFailed => "validation_failed",
            Self::RateLimited => "rate_limited",
            Self::Internal => "internal",
        }
    }
}

impl Error {
    /// The code this condition answers with.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Unauthenticated => ErrorKind::Unauthorized,
            Self::AccountSuspended => ErrorKind::AccountSuspended,
            Self::RateLimited { .. } | Self::AgentRateLimited { .. } => ErrorKind::RateLimited,
            Self::BadRequest(_) => ErrorKind::BadRequest,
            Self::NotFound { .. } => ErrorKind::NotFound,
            Self::Invalid(_)
            | Self::AgentNotConnected
            | Self::SlotsExhausted
            | Self::SystemRule
            | Self::QuotaExceeded(_) => ErrorKind::ValidationFailed,
            Self::Conflict { .. } => ErrorKind::Conflict,
            Self::Internal(_) => ErrorKind::Internal,
        }
    }
}

impl From<crate::id::MalformedId> for Error {
    fn from(e: crate::id::MalformedId) -> Self {
        Self::BadRequest(e.to_string())
    }
}

impl From<crate::metrics::BadQueryValue> for Error {
    fn from(e: crate::metrics::BadQueryValue) -> Self {
        Self::BadRequest(e.to_string())
    }
}

/// An error with its causes, `outer: cause: root cause`: what logs and
/// messages that must say why show. Error messages never repeat their
/// `#[source]`; this walks the chain instead.
#[derive(Debug, Clone, Copy)]
pub struct Report<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(e) = cause {
            write!(f, ": {e}")?;
            cause = e.source();
        }
        Ok(())
    }
}

/// A shorthand for use-case results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_read_back_as_their_kinds() {
        for kind in ErrorKind::ALL {
            assert_eq!(ErrorKind::from_code(kind.code()), Some(kind));
        }
        assert_eq!(ErrorKind::from_code("teapot"), None);
    }

    #[test]
    fn a_report_names_every_cause_once() {
        let io = std::io::Error::other("disk full");
        let store = StoreError::Backend(Box::new(io));
        let error = Error::Internal(store);
        assert_eq!(error.to_string(), "internal error", "the message never repeats its source");
        assert_eq!(Report(&error).to_string(), "internal error: storage backend failed: disk full");
    }

    #[test]
    fn an_exceeded_quota_is_a_validation_failure_naming_the_quota() {
        use crate::quota::{Quota, QuotaExceeded};
        let e = Error::from(QuotaExceeded { quota: Quota::FirewallRules, limit: 3 });
        assert_eq!(e.kind(), ErrorKind::ValidationFailed);
        assert_eq!(e.to_string(), "quota exceeded: at most 3 firewall rules per agent (--max-firewall-rules)");
    }

    #[test]
    fn not_found_names_what_was_looked_for() {
        assert_eq!(Error::NotFound { what: Entity::FirewallRule }.to_string(), "firewall rule not found");
        assert_eq!(Error::NotFound { what: Entity::ApiKey }.to_string(), "key not found");
    }
}
