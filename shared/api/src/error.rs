//! JSON errors (SPEC §6): `{"error": {"code", "message", "field"?}}` with the status that
//! says whose fault it is.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sluice_core::ports::{SecretError, StoreError};
use sluice_core::Invalid;
use sluice_runtime::{RuntimeError, StartError};

/// An error response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable, machine-readable (`not_found`, `invalid`, `forbidden`, …).
    pub code: &'static str,
    pub message: String,
    /// Path of the offending field, when one is to blame.
    pub field: Option<String>,
    /// Seconds for a `Retry-After` header (429 answers).
    pub retry_after: Option<u64>,
}

/// What a 500 answer really was about: kept in the response's extensions for the
/// request-id layer to log (see [`crate::router`]), never sent to the client.
#[derive(Debug, Clone)]
pub struct InternalDetail(pub String);

/// The message of every 500 answer; the request id (header `x-request-id`, and in the
/// message) finds the logged detail.
pub const INTERNAL_MESSAGE: &str = "internal error";

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// A failure of the server or a backend. `detail` is logged with the request id;
    /// the client reads only [`INTERNAL_MESSAGE`] and the request id.
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", detail)
    }

    /// 429: the caller went over a limit; it may retry after `wait`.
    pub fn too_many_requests(message: impl Into<String>, wait: std::time::Duration) -> Self {
        let mut error = Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message);
        error.retry_after = Some(crate::limits::retry_after_seconds(wait));
        error
    }

    /// A document problem: 400 when the body could not be read as the expected shape
    /// (malformed JSON, unknown field, wrong type — the issue has a line), 422 when it
    /// was read but does not validate.
    pub fn invalid(e: &Invalid) -> Self {
        let parse = e.issues.first().is_some_and(|i| i.line.is_some());
        let (status, code) = if parse {
            (StatusCode::BAD_REQUEST, "bad_request")
        } else {
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid")
        };
        let mut error = Self::new(status, code, e.to_string());
        error.field = e.field().map(str::to_string);
        error
    }
}

impl ApiError {
    /// The body of the answer: `{"error": {"code", "message", "field"?}}`.
    pub fn to_json(&self) -> serde_json::Value {
        let message = if self.status == StatusCode::INTERNAL_SERVER_ERROR {
            INTERNAL_MESSAGE
        } else {
            self.message.as_str()
        };
        let mut error = json!({"code": self.code, "message": message});
        if let Some(field) = &self.field {
            error["field"] = json!(field);
        }
        json!({ "error": error })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let internal = self.status == StatusCode::INTERNAL_SERVER_ERROR;
        let mut response = (self.status, axum::Json(self.to_json())).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        if internal {
            response
                .extensions_mut()
                .insert(InternalDetail(self.message));
        }
        response
    }
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> Self {
        Self::invalid(&e)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict => Self::conflict(e.to_string()),
            StoreError::Backend(message) => Self::internal(format!("store error: {message}")),
        }
    }
}

impl From<SecretError> for ApiError {
    fn from(e: SecretError) -> Self {
        Self::internal(format!("secret store error: {e}"))
    }
}

impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> Self {
        match e {
            RuntimeError::NotFound(message) => Self::not_found(message),
            RuntimeError::Conflict(message) => Self::conflict(message),
            RuntimeError::Invalid(invalid) => Self::invalid(&invalid),
            RuntimeError::Store(e) => e.into(),
            RuntimeError::Secret(e) => e.into(),
            RuntimeError::Queue(e) => Self::internal(format!("queue error: {e}")),
        }
    }
}

impl From<StartError> for ApiError {
    fn from(e: StartError) -> Self {
        match e {
            StartError::NotFound(message) => Self::not_found(message),
            StartError::Invalid(invalid) => Self::invalid(&invalid),
            StartError::Runtime(e) => e.into(),
            StartError::Overloaded { retry_after, .. } => {
                let mut error = Self::too_many_requests(e.to_string(), retry_after);
                error.code = "overloaded";
                error
            }
        }
    }
}
