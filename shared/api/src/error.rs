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
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
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

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(field) = self.field {
            error["field"] = json!(field);
        }
        (self.status, axum::Json(json!({ "error": error }))).into_response()
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
            StoreError::Backend(message) => {
                tracing::error!(error = %message, "store failure");
                Self::internal(format!("store error: {message}"))
            }
        }
    }
}

impl From<SecretError> for ApiError {
    fn from(e: SecretError) -> Self {
        tracing::error!(error = %e, "secret store failure");
        Self::internal(e.to_string())
    }
}

impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> Self {
        match e {
            RuntimeError::NotFound(message) => Self::not_found(message),
            RuntimeError::Invalid(invalid) => Self::invalid(&invalid),
            RuntimeError::Store(e) => e.into(),
            RuntimeError::Secret(e) => e.into(),
            RuntimeError::Queue(e) => Self::internal(e.to_string()),
        }
    }
}

impl From<StartError> for ApiError {
    fn from(e: StartError) -> Self {
        match e {
            StartError::NotFound(message) => Self::not_found(message),
            StartError::Invalid(invalid) => Self::invalid(&invalid),
            StartError::Runtime(e) => e.into(),
        }
    }
}
