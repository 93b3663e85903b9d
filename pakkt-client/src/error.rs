//! What a call can end in besides success.

use std::time::Duration;

pub use pakkt_core::ErrorKind;

/// Why a call failed: one variant per error code of the API ([`ErrorKind`],
/// defined once in `pakkt-core` for the server and this SDK alike), each
/// carrying the server's message, plus transport and decoding.
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
    /// 405: the path exists, but not with this method.
    #[error("method not allowed: {message}")]
    MethodNotAllowed {
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
    #[error("transport error")]
    Transport(#[source] reqwest::Error),
    /// The answer was not the JSON this SDK expects.
    #[error("cannot decode the server's answer")]
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
            Self::MethodNotAllowed { .. } => 405,
            Self::Conflict { .. } => 409,
            Self::ValidationFailed { .. } => 422,
            Self::RateLimited { .. } => 429,
            Self::Internal { .. } => 500,
            Self::UnexpectedStatus { status, .. } => *status,
            Self::Transport(_) | Self::Decode(_) | Self::Config(_) => return None,
        })
    }

    /// The API's error code behind this error, when the server answered
    /// with one.
    pub fn kind(&self) -> Option<ErrorKind> {
        Some(match self {
            Self::BadRequest { .. } => ErrorKind::BadRequest,
            Self::Unauthorized { .. } => ErrorKind::Unauthorized,
            Self::AccountSuspended { .. } => ErrorKind::AccountSuspended,
            Self::NotFound { .. } => ErrorKind::NotFound,
            Self::MethodNotAllowed { .. } => ErrorKind::MethodNotAllowed,
            Self::Conflict { .. } => ErrorKind::Conflict,
            Self::ValidationFailed { .. } => ErrorKind::ValidationFailed,
            Self::RateLimited { .. } => ErrorKind::RateLimited,
            Self::Internal { .. } => ErrorKind::Internal,
            Self::UnexpectedStatus { .. } | Self::Transport(_) | Self::Decode(_) | Self::Config(_) => return None,
        })
    }

    /// The error of `kind` with the server's `message`.
    fn of_kind(kind: ErrorKind, message: String, retry_after: Duration) -> Self {
        match kind {
            ErrorKind::BadRequest => Self::BadRequest { message },
            ErrorKind::Unauthorized => Self::Unauthorized { message },
            ErrorKind::AccountSuspended => Self::AccountSuspended { message },
            ErrorKind::NotFound => Self::NotFound { message },
            ErrorKind::MethodNotAllowed => Self::MethodNotAllowed { message },
            ErrorKind::Conflict => Self::Conflict { message },
            ErrorKind::ValidationFailed => Self::ValidationFailed { message },
            ErrorKind::RateLimited => Self::RateLimited { message, retry_after },
            ErrorKind::Internal => Self::Internal { message },
        }
    }

    /// The error for a non-success `status` with `body`: by the body's
    /// error code when it has one this SDK knows, else by the status (a
    /// proxy in between may answer without PAKKT's body).
    pub(crate) fn from_response(status: u16, body: &str, retry_after: Duration) -> Self {
        let parsed = serde_json::from_str::<pakkt_core::wire::ErrorBody>(body).ok();
        let kind = parsed.as_ref().and_then(|b| ErrorKind::from_code(&b.error)).or_else(|| {
            ErrorKind::ALL
                .into_iter()
                .find(|kind| Self::of_kind(*kind, String::new(), retry_after).status() == Some(status))
        });
        let message = parsed.map_or_else(|| body.chars().take(500).collect(), |b| b.message);
        match kind {
            Some(kind) => Self::of_kind(kind, message, retry_after),
            None => Self::UnexpectedStatus { status, body: body.chars().take(500).collect() },
        }
    }
}

/// Results of this SDK.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_s_code_picks_the_variant_and_the_status_is_the_fallback() {
        let none = Duration::ZERO;
        let body = r#"{"error": "not_found", "message": "agent not found"}"#;
        let err = Error::from_response(404, body, none);
        assert!(matches!(&err, Error::NotFound { message } if message == "agent not found"), "{err:?}");
        assert_eq!(err.kind(), Some(ErrorKind::NotFound));
        assert_eq!(err.status(), Some(404));
        let proxied = Error::from_response(429, "<html>slow down</html>", Duration::from_secs(3));
        assert!(
            matches!(&proxied, Error::RateLimited { retry_after, .. } if *retry_after == Duration::from_secs(3)),
            "{proxied:?}"
        );
        assert!(matches!(Error::from_response(418, "teapot", none), Error::UnexpectedStatus { status: 418, .. }));
    }
}
