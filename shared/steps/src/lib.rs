//! Sluice's built-in step types (SPEC §8): `echo`, `http_request`, `graphql`, `sql`,
//! `ssh_command` and `cache`.
//!
//! Each is a [`TypedStep`](sluice_core::step::TypedStep) with a typed parameter struct
//! whose doc comments become the published parameter schema. A step value is built once
//! and reused for every invocation (a warm Lambda keeps its HTTP client and database
//! pools), so the structs hold the long-lived clients.
//!
//! Each type sits behind a cargo feature of its name (all on by default), so a step
//! type's Lambda function links that type alone. Functions that only need to *know* the
//! types (the API, the schedule start, the dead letters) use the [`catalogue`] instead:
//! names and parameter schemas as data, without any type's code.

#[cfg(feature = "cache")]
mod cache;
pub mod catalogue;
#[cfg(any(feature = "http_request", feature = "graphql", feature = "ssh_command"))]
mod common;
#[cfg(feature = "echo")]
mod echo;
#[cfg(feature = "graphql")]
mod graphql;
#[cfg(any(feature = "http_request", feature = "graphql"))]
mod http;
#[cfg(feature = "sql")]
mod sql;
#[cfg(feature = "ssh_command")]
mod ssh;

#[cfg(feature = "cache")]
pub use cache::{CacheAction, CacheParams, CacheStep};
pub use catalogue::catalogue_registry;
#[cfg(feature = "echo")]
pub use echo::{Echo, EchoParams};
#[cfg(feature = "graphql")]
pub use graphql::{Graphql, GraphqlParams, MAX_RESPONSE_BYTES as GRAPHQL_MAX_RESPONSE_BYTES};
#[cfg(any(feature = "http_request", feature = "graphql"))]
pub use http::{Auth, BasicAuth, Scalar, MAX_RESPONSE_BYTES as HTTP_MAX_RESPONSE_BYTES};
#[cfg(feature = "http_request")]
pub use http::{HttpRequest, HttpRequestParams, ResponseMode};
#[cfg(feature = "sql")]
pub use sql::{Sql, SqlMode, SqlParams};
#[cfg(feature = "ssh_command")]
pub use ssh::{SshCommand, SshCommandParams, MAX_STREAM_BYTES as SSH_MAX_STREAM_BYTES};

use sluice_core::step::StepRegistry;

/// A registry holding every built-in step type compiled in (all of them with the
/// default features).
pub fn builtin_registry() -> StepRegistry {
    #[allow(unused_mut)]
    let mut registry = StepRegistry::new();
    #[cfg(feature = "echo")]
    registry.register(Echo);
    #[cfg(feature = "http_request")]
    registry.register(HttpRequest::new());
    #[cfg(feature = "graphql")]
    registry.register(Graphql::new());
    #[cfg(feature = "sql")]
    registry.register(Sql::new());
    #[cfg(feature = "ssh_command")]
    registry.register(SshCommand::new());
    #[cfg(feature = "cache")]
    registry.register(CacheStep);
    registry
}
