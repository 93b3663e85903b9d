//! Errors at the HTTP edge.
//!
//! Every condition of `pakkt-core` has one [`ErrorKind`], and every kind one
//! status ([`status_of`]): the mapping is this one `match`. Each operation
//! answers a typed poem-openapi response enum listing exactly the errors it
//! can produce, so that each appears in the generated spec with the common
//! body `{"error": "<code>", "message": "..."}`.
//!
//! Errors raised outside the handlers (poem-openapi's parse errors, unknown
//! paths, oversized bodies) are turned into the same body by the gate
//! ([`crate::gate`]) with [`foreign_error_response`].

use pakkt_core::wire::ErrorBody;
use pakkt_core::{Error, ErrorKind};
use poem::http::StatusCode;
use poem::{IntoResponse, Response};
use poem_openapi::ApiResponse;

use crate::payload::Json;

/// The status each error code answers with.
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
        ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorKind::AccountSuspended => StatusCode::PAYMENT_REQUIRED,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::ValidationFailed => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A core error as the client sees it. Internal causes are logged here and
/// never shown.
#[derive(Debug)]
pub struct Answer {
    /// Its code.
    pub kind: ErrorKind,
    /// The body.
    pub body: ErrorBody,
    /// Whole seconds until a request is allowed again (429 only).
    pub retry_after: u64,
}

impl From<&Error> for Answer {
    fn from(e: &Error) -> Self {
        let kind = e.kind();
        if kind == ErrorKind::Internal {
            tracing::error!(error = %pakkt_core::Report(e), "internal error");
        }
        let retry_after = match e {
            Error::RateLimited { retry_after, .. } | Error::AgentRateLimited { retry_after, .. } => {
                whole_seconds(*retry_after)
            }
            _ => 0,
        };
        Self { kind, body: ErrorBody::from(e), retry_after }
    }
}

/// Seconds, rounded up, and at least 1 for a non-zero duration.
pub fn whole_seconds(d: std::time::Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The body of a plain 500.
pub fn internal_body() -> ErrorBody {
    ErrorBody { error: ErrorKind::Internal.code().to_owned(), message: "internal error".to_owned() }
}

/// A plain 500 answer.
pub fn internal_response() -> Response {
    error_response(StatusCode::INTERNAL_SERVER_ERROR, &internal_body())
}

/// An error answer with the common body.
pub fn error_response(status: StatusCode, body: &ErrorBody) -> Response {
    let json =
        serde_json::to_vec(body).unwrap_or_else(|_| br#"{"error":"internal","message":"internal error"}"#.to_vec());
    Response::builder().status(status).content_type("application/json; charset=utf-8").body(json)
}

/// The answer to a core error.
pub fn core_error_response(e: &Error) -> Response {
    let answer = Answer::from(e);
    let mut response = error_response(status_of(answer.kind), &answer.body);
    if answer.retry_after > 0 {
        response.headers_mut().insert(poem::http::header::RETRY_AFTER, answer.retry_after.into());
    }
    response
}

/// The answer to an error raised by poem or poem-openapi before or around a
/// handler (a parse error, an unknown path, a body too large): its status
/// folded into the API's codes, and its message kept.
pub fn foreign_error_response(status: StatusCode, message: &str) -> Response {
    let (status, kind) = match status {
        StatusCode::NOT_FOUND => (status, ErrorKind::NotFound),
        StatusCode::METHOD_NOT_ALLOWED => (status, ErrorKind::MethodNotAllowed),
        StatusCode::UNAUTHORIZED => (status, ErrorKind::Unauthorized),
        s if s.is_client_error() => (StatusCode::BAD_REQUEST, ErrorKind::BadRequest),
        _ => {
            tracing::error!(%status, message, "internal error outside a handler");
            return internal_response();
        }
    };
    let message = if message.is_empty() { status.canonical_reason().unwrap_or("error") } else { message };
    error_response(status, &ErrorBody { error: kind.code().to_owned(), message: message.to_owned() })
}

/// A request that does not fit the schema, found while reading it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadRequest(pub String);

impl poem::error::ResponseError for BadRequest {
    fn status(&self) -> StatusCode {
        StatusCode::BAD_REQUEST
    }

    fn as_response(&self) -> Response {
        foreign_error_response(StatusCode::BAD_REQUEST, &self.0)
    }
}

/// Builds one error-response enum per set of errors an operation can
/// produce, with a conversion from core errors. A core error outside the
/// set would be a bug in the mapping; it is logged and answered 500.
macro_rules! error_responses {
    ($($(#[$doc:meta])* $name:ident { $($kind:ident),+ $(,)? })*) => {$(
        error_responses!(@enum [$(#[$doc])*] $name [] $($kind),+);

        impl From<Error> for $name {
            #[allow(unreachable_patterns)]
            fn from(e: Error) -> Self {
                let answer = Answer::from(&e);
                match answer.kind {
                    $(ErrorKind::$kind => error_responses!(@make $kind answer),)+
                    other => {
                        tracing::error!(code = other.code(), error = %pakkt_core::Report(&e), "error not documented for this operation");
                        Self::Internal(Json(internal_body()))
                    }
                }
            }
        }
    )*};

    (@make RateLimited $answer:ident) => { Self::RateLimited(Json($answer.body), $answer.retry_after) };
    (@make $kind:ident $answer:ident) => { Self::$kind(Json($answer.body)) };

    (@enum [$($doc:tt)*] $name:ident [$($out:tt)*]) => {
        $($doc)*
        #[derive(ApiResponse, Debug)]
        pub enum $name { $($out)* }
    };
    (@enum $doc:tt $name:ident [$($out:tt)*] BadRequest $(, $rest:ident)*) => {
        error_responses!(@enum $doc $name [$($out)*
            /// The request does not fit the schema: malformed JSON, a missing
            /// field, a wrong type, a value outside the schema's enum or range,
            /// a malformed ID or query value.
            #[oai(status = 400)]
            BadRequest(Json<ErrorBody>),
        ] $($rest),*);
    };
    (@enum $doc:tt $name:ident [$($out:tt)*] Unauthorized $(, $rest:ident)*) => {
        error_responses!(@enum $doc $name [$($out)*
            /// Missing or invalid credentials.
            #[oai(status = 401)]
            Unauthorized(Json<ErrorBody>),
        ] $($rest),*);
    };
    (@enum $doc:tt $name:ident [$($out:tt)*] AccountSuspended $(, $rest:ident)*) => {
        error_responses!(@enum $doc $name [$($out)*
            /// The account is suspended (overdue payment).
            #[oai(status = 402)]
            AccountSuspended(Json<ErrorBody>),
        ] $($rest),*);
    };
    (@enum $doc:tt $name:ident [$($out:tt)*] NotFound $(, $rest:ident)*) => {
        error_responses!(@enum $doc $name [$($out)*
            /// Not found, or it belongs to another account.
            #[oai(status = 404)]
            NotFound(Json<ErrorBody>),
        ] $($rest),*);
    };
    (@enum $doc:tt $name:ident [$($out:tt)*] Conflict $(, $rest:ident)*) => {
        error_responses!(@enum $doc $name [$($out)*
            /// It would duplicate an item that exists.
            #[oai(status = 409)]
            Conflict(Json<ErrorBody>),
        ] $($rest),*);
    };
    (@enum $doc:tt $name:ident [$($out:tt)*] ValidationFailed $(, $rest:ident)*) => {
        error_responses!(@enum $doc $name [$($out)*
            /// The request fits the schema but breaks a domain rule.
            #[oai(status = 422)]
            ValidationFailed(Json<ErrorBody>),
        ] $($rest),*);
    };
    (@enum $doc:tt $name:ident [$($out:tt)*] RateLimited $(, $rest:ident)*) => {
        error_responses!(@enum $doc $name [$($out)*
            /// The key has used its requests for the rolling minute.
            #[oai(status = 429)]
            RateLimited(
                Json<ErrorBody>,
                /// Seconds until a request is allowed again.
                #[oai(header = "Retry-After")]
                u64,
            ),
        ] $($rest),*);
    };
    (@enum $doc:tt $name:ident [$($out:tt)*] Internal $(, $rest:ident)*) => {
        error_responses!(@enum $doc $name [$($out)*
            /// Internal error (the cause is in the server's log).
            #[oai(status = 500)]
            Internal(Json<ErrorBody>),
        ] $($rest),*);
    };
}

error_responses! {
    /// Errors of an operation on the account as a whole.
    AccountError { BadRequest, Unauthorized, AccountSuspended, RateLimited, Internal }
    /// Errors of creating an agent.
    CreateAgentError { BadRequest, Unauthorized, AccountSuspended, ValidationFailed, RateLimited, Internal }
    /// Errors of reading or deleting an item.
    ItemError { BadRequest, Unauthorized, AccountSuspended, NotFound, RateLimited, Internal }
    /// Errors of an operation on an item that a domain rule can refuse.
    DomainError { BadRequest, Unauthorized, AccountSuspended, NotFound, ValidationFailed, RateLimited, Internal }
    /// Errors of a create that deduplicates.
    CreateError { BadRequest, Unauthorized, AccountSuspended, NotFound, ValidationFailed, Conflict, RateLimited, Internal }
    /// Errors of the agent endpoints.
    AgentError { BadRequest, Unauthorized, ValidationFailed, RateLimited, Internal }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        error_response(status_of(self.kind), &self.body)
    }
}
