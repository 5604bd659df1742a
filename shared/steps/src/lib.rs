//! Sluice's built-in step types (SPEC §8): `echo`, `http_request`, `sql` and `cache`.
//!
//! Each is a [`TypedStep`](sluice_core::step::TypedStep) with a typed parameter struct
//! whose doc comments become the published parameter schema. A step value is built once
//! and reused for every invocation (a warm Lambda keeps its HTTP client and database
//! pools), so the structs hold the long-lived clients.

mod cache;
mod echo;
mod http;
mod sql;

pub use cache::{CacheAction, CacheParams, CacheStep};
pub use echo::{Echo, EchoParams};
pub use http::{Auth, BasicAuth, HttpRequest, HttpRequestParams, ResponseMode, Scalar};
pub use sql::{Sql, SqlMode, SqlParams};

use sluice_core::step::StepRegistry;

/// A registry holding every built-in step type.
pub fn builtin_registry() -> StepRegistry {
    let mut registry = StepRegistry::new();
    registry
        .register(Echo)
        .register(HttpRequest::new())
        .register(Sql::new())
        .register(CacheStep);
    registry
}
