//! What a call can end in besides success.

use std::time::Duration;

/// Why a call failed: one variant per status code of the API reference,
/// each carrying the server's message, plus transport and decoding.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 400: the request does not fit the API (bad JSON, wrong type, bad query value).
    #[error("bad request: {message}")]
    BadRequest {
        /// The server's message.
        message: String,
    },
    /// 401: the API key is missing, malformed, unknown or revoked.
    #[error("unauthorized: {message}")]
    Unauthorized {
        /// The server's message.
        message: String,
    },
    /// 402: the account is suspended.
    #[error("account suspended: {message}")]
    AccountSuspended {
        /// The server's message.
        message: String,
    },
    /// 404: no such item (or another account's).
    #[error("not found: {message}")]
    NotFound {
        /// The server's message.
        message: String,
    },
    /// 409: the item would duplicate one that exists (an active rule on the
    /// same port range, the same address on the same list).
    #[error("conflict: {message}")]
    Conflict {
        /// The server's message (it names the existing item).
        message: String,
    },
    /// 422: the request breaks a domain rule (invalid ports, agent not yet
    /// connected, all 256 slots in use, a system rule …).
    #[error("validation failed: {message}")]
    ValidationFailed {
        /// The server's message.
        message: String,
    },
    /// 429: the key's requests per minute are used up (after the
    /// configured automatic retries, if any).
    #[error("rate limited: {message} (retry after {retry_after:?})")]
    RateLimited {
        /// The server's message.
        message: String,
        /// How long until a request is allowed again.
        retry_after: Duration,
    },
    /// 500: the server failed.
    #[error("internal server error: {message}")]
    Internal {
        /// The server's message.
        message: String,
    },
    /// Any other status.
    #[error("unexpected HTTP status {status}: {body}")]
    UnexpectedStatus {
        /// The status code.
        status: u16,
        /// The body (shortened).
        body: String,
    },
    /// The server could not be reached, or the connection broke.
    #[error("transport error: {0}")]
    Transport(#[source] reqwest::Error),
    /// The answer was not the JSON this SDK expects.
    #[error("cannot decode the server's answer: {0}")]
    Decode(#[source] serde_json::Error),
    /// The client was configured wrongly (bad base URL, bad key format).
    #[error("client configuration: {0}")]
    Config(String),
}

impl Error {
    /// The HTTP status this error stands for, when it came from one.
    pub fn status(&self) -> Option<u16> {
        Some(match self {
            Self::BadRequest { .. } => 400,
            Self::Unauthorized { .. } => 401,
            Self::AccountSuspended { .. } => 402,
            Self::NotFound { .. } => 404,
            Self::Conflict { .. } => 409,
            Self::ValidationFailed { .. } => 422,
            Self::RateLimited { .. } => 429,
            Self::Internal { .. } => 500,
            Self::UnexpectedStatus { status, .. } => *status,
            Self::Transport(_) | Self::Decode(_) | Self::Config(_) => return None,
        })
    }

    /// The error for a non-success `status` with `body`.
    pub(crate) fn from_response(status: u16, body: &str, retry_after: Duration) -> Self {
        let message = serde_json::from_str::<pakkt_core::wire::ErrorBody>(body)
            .map_or_else(|_| body.chars().take(500).collect(), |b| b.message);
        match status {
            400 => Self::BadRequest { message },
            401 => Self::Unauthorized { message },
            402 => Self::AccountSuspended { message },
            404 => Self::NotFound { message },
            409 => Self::Conflict { message },
            422 => Self::ValidationFailed { message },
            429 => Self::RateLimited { message, retry_after },
            500 => Self::Internal { message },
            status => Self::UnexpectedStatus { status, body: body.chars().take(500).collect() },
        }
    }
}

/// Results of this SDK.
pub type Result<T, E = Error> = std::result::Result<T, E>;
