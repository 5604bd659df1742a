//! Request bodies and query strings, read so that every problem becomes a JSON error
//! naming the field (and line, for malformed JSON), and an oversized body a 413.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, Query, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use sluice_core::json::parse_document;

use crate::error::ApiError;

/// The raw request body, limited by the router's body limit.
pub struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Bytes::from_request(request, state).await {
            Ok(bytes) => Ok(Body(bytes)),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body is larger than the server accepts",
            )),
            Err(e) => Err(ApiError::bad_request(e.body_text())),
        }
    }
}

impl Body {
    pub fn text(&self) -> Result<&str, ApiError> {
        std::str::from_utf8(&self.0)
            .map_err(|_| ApiError::bad_request("the request body is not UTF-8"))
    }

    /// Whether the body is empty (or whitespace only).
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(u8::is_ascii_whitespace)
    }

    /// Parses the body as a `T`, naming the field or the line of any problem.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        if self.is_empty() {
            return Err(ApiError::bad_request("a JSON request body is required"));
        }
        parse_document(self.text()?).map_err(|e| ApiError::invalid(&e))
    }

    /// Like [`Body::parse`], with an empty body read as `{}`.
    pub fn parse_or_empty<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        if self.is_empty() {
            return parse_document("{}").map_err(|e| ApiError::invalid(&e));
        }
        self.parse()
    }
}

/// Query parameters, each read with a field-naming error.
pub struct Params(pub HashMap<String, String>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map(|q| Params(q.0))
            .map_err(|e| ApiError::bad_request(e.body_text()))
    }
}

impl Params {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn parse<T: std::str::FromStr>(
        &self,
        name: &str,
        expected: &str,
    ) -> Result<Option<T>, ApiError> {
        self.get(name)
            .map(|v| {
                v.parse::<T>().map_err(|_| {
                    ApiError::bad_request(format!("{name}: \"{v}\" is not {expected}"))
                        .with_field(name)
                })
            })
            .transpose()
    }

    pub fn flag(&self, name: &str) -> Result<bool, ApiError> {
        Ok(self.parse::<bool>(name, "true or false")?.unwrap_or(false))
    }

    pub fn time(&self, name: &str) -> Result<Option<chrono::DateTime<chrono::Utc>>, ApiError> {
        self.get(name)
            .map(|v| {
                chrono::DateTime::parse_from_rfc3339(v)
                    .map(|t| t.with_timezone(&chrono::Utc))
                    .map_err(|e| {
                        ApiError::bad_request(format!(
                            "{name}: \"{v}\" is not an RFC 3339 time: {e}"
                        ))
                        .with_field(name)
                    })
            })
            .transpose()
    }
}
