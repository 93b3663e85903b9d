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
    /// A query or path value is not one the API accepts.
    #[error("{0}")]
    BadRequest(String),
    /// The item does not exist, or belongs to another account.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for (`agent`, `rule` …).
        what: &'static str,
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
    /// The `error` field of the API's error body.
    pub fn code(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::AccountSuspended => "account_suspended",
            Self::NotFound => "not_found",
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
            Self::RateLimited { .. } => ErrorKind::RateLimited,
            Self::BadRequest(_) => ErrorKind::BadRequest,
            Self::NotFound { .. } => ErrorKind::NotFound,
            Self::Invalid(_) | Self::AgentNotConnected | Self::SlotsExhausted | Self::SystemRule => {
                ErrorKind::ValidationFailed
            }
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

/// A shorthand for use-case results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
