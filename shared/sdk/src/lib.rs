//! Write Sluice step types.
//!
//! A step type is a struct implementing [`TypedStep`]: a name, a description, a semver
//! version, a parameter struct and an async `run`. The parameter struct derives
//! [`serde::Deserialize`] and [`JsonSchema`]; its JSON Schema is what `sluice schema step`
//! and `GET /steps` publish and what stored applications are validated against, and its
//! doc comments become the schema's descriptions. Everything a step sees while it runs is
//! in its [`StepContext`] (identity, logger, cache, deadline, and
//! [`StepContext::report`] for sections of the run's report); how it fails is a
//! [`StepError`] kind; [`testing`] runs it without a store.
//!
//! The crate exposes only what a step needs: the engine, the stores and the queues stay
//! behind the runtime that calls the step.
//!
//! ```
//! use sluice_sdk::prelude::*;
//!
//! /// Greets someone.
//! #[derive(Deserialize, JsonSchema)]
//! #[serde(deny_unknown_fields)]
//! pub struct GreetParams {
//!     /// Who to greet.
//!     pub name: String,
//! }
//!
//! pub struct Greet;
//!
//! #[async_trait]
//! impl TypedStep for Greet {
//!     const NAME: &'static str = "greet";
//!     const DESCRIPTION: &'static str = "Greets someone by name.";
//!     const VERSION: &'static str = "1.0.0";
//!     type Params = GreetParams;
//!
//!     async fn run(&self, params: GreetParams, ctx: &StepContext) -> Result<StepOutput, StepError> {
//!         if params.name.is_empty() {
//!             return Err(StepError::InvalidParameters("name: must not be empty".into()));
//!         }
//!         ctx.log.info(format!("greeting {}", params.name));
//!         // A section of the run's report (`sluice reports get report-<app>-<run>`).
//!         ctx.report(ReportSection::new("Greetings").table(
//!             ReportTable::new(["name"]).row(RowStatus::New, [json!(params.name)]),
//!         ));
//!         Ok(StepOutput::value(json!({"greeting": format!("Hello, {}!", params.name)})))
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let outcome = sluice_sdk::testing::TestRun::new(Greet)
//!     .params(json!({"name": "${Lookup.user}"}))
//!     .predecessor("Lookup", json!({"user": "Ada"}))
//!     .run()
//!     .await;
//! assert_eq!(outcome.output(), &json!({"greeting": "Hello, Ada!"}));
//! assert_eq!(outcome.log_messages(), ["greeting Ada"]);
//! assert_eq!(outcome.reports[0].tables[0].rows[0].status, RowStatus::New);
//! # });
//! ```

pub mod testing;

pub use async_trait::async_trait;
pub use schemars::{self, JsonSchema};
pub use serde;
pub use serde_json::{self, json, Value};
pub use sluice_core::model::{LogEntry, LogLevel};
pub use sluice_core::ports::{Cache, CacheKeys, StoreError, MAX_CACHE_PAGE};
pub use sluice_core::report::{ReportRow, ReportSection, ReportTable, RowStatus};
pub use sluice_core::step::{
    StepContext, StepError, StepLogger, StepOutput, StepRegistry, StepType, TypedStep,
};

/// The names a step type's module needs, in one `use`:
///
/// ```
/// use sluice_sdk::prelude::*;
///
/// let output = StepOutput::value(json!({"ok": true}));
/// assert!(output.warnings.is_empty());
/// ```
pub mod prelude {
    pub use crate::{
        async_trait, json, JsonSchema, ReportSection, ReportTable, RowStatus, StepContext,
        StepError, StepOutput, TypedStep, Value,
    };
    pub use serde::{Deserialize, Serialize};
}
