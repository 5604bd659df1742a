//! The step-type SDK: implement [`TypedStep`] with a typed parameter struct, register it,
//! and it becomes a step type with a published parameter schema.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::model::{LogEntry, LogLevel};
use crate::ports::Cache;
use crate::redact::Redactor;
use crate::report::ReportSection;

/// What a step produced: its output value (the JSON its successors reference as
/// `${StepId…}`) and its warnings.
///
/// ```
/// use serde_json::json;
/// use sluice_core::step::StepOutput;
///
/// let output = StepOutput::value(json!({"rows": 0})).with_warning("the table is empty");
/// assert_eq!(output.warnings, ["the table is empty"]);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutput {
    /// The output value.
    pub value: Value,
    /// Non-empty: the step ends in `warning` (it succeeded, with something to say).
    pub warnings: Vec<String>,
}

impl StepOutput {
    /// An output without warnings.
    pub fn value(value: Value) -> Self {
        Self {
            value,
            warnings: Vec::new(),
        }
    }

    /// The same output with one more warning.
    pub fn with_warning(mut self, warning: impl Into<String>) -> Self {
        self.warnings.push(warning.into());
        self
    }
}

/// Why a step attempt failed. The kind decides what happens next: a retryable failure
/// is retried while the step has attempts left; the others end the step at once.
///
/// ```
/// use sluice_core::step::StepError;
///
/// let timeout = StepError::Retryable("GET https://example.test: timed out".into());
/// assert!(timeout.is_retryable());
/// let bad = StepError::InvalidParameters("url: relative URL without a base".into());
/// assert!(!bad.is_retryable());
/// assert_eq!(bad.to_string(), "invalid parameters: url: relative URL without a base");
/// ```
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StepError {
    /// A failure worth retrying (network, timeout, an unexpected status, a busy server…).
    #[error("{0}")]
    Retryable(String),
    /// A failure no retry can fix (a refused request, a missing record, a reference to
    /// nothing…).
    #[error("{0}")]
    Fatal(String),
    /// The parameters do not fit the step type: the message names the field. Never
    /// retried; `POST /steps/run` answers it with 422.
    #[error("invalid parameters: {0}")]
    InvalidParameters(String),
}

impl StepError {
    /// Whether another attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Retryable(_))
    }

    /// The message a run records and shows: the error's text, with the
    /// `invalid parameters: ` prefix for [`StepError::InvalidParameters`].
    pub fn message(&self) -> String {
        self.to_string()
    }
}

/// Collects a step attempt's log entries, filtered by the run's `loglevel`, with every
/// secret of the run redacted. The entries are kept with the run and shown by `sluice runs
/// logs`, `GET /tasks/{id}/logs` and the console.
///
/// ```
/// use sluice_core::redact::Redactor;
/// use sluice_core::step::StepLogger;
/// use serde_json::json;
///
/// let log = StepLogger::new("Fetch", 1, 20, Redactor::new([&json!("s3cret")]));
/// log.debug("not kept at loglevel 20 (info)");
/// log.info("token s3cret accepted");
/// let entries = log.drain();
/// assert_eq!(entries.len(), 1);
/// assert!(!entries[0].message.contains("s3cret"));
/// ```
#[derive(Clone)]
pub struct StepLogger {
    step: String,
    attempt: u32,
    loglevel: u8,
    redactor: Redactor,
    entries: Arc<Mutex<Vec<LogEntry>>>,
}

impl StepLogger {
    /// A logger for `attempt` of step `step` keeping entries at `loglevel` (10 debug,
    /// 20 info, 30 warning, 40 error) and up, redacting what `redactor` knows.
    pub fn new(step: &str, attempt: u32, loglevel: u8, redactor: Redactor) -> Self {
        Self {
            step: step.to_string(),
            attempt,
            loglevel,
            redactor,
            entries: Arc::default(),
        }
    }

    /// Whether entries at `level` are kept (so that a costly message is built only then).
    pub fn enabled(&self, level: LogLevel) -> bool {
        level.enabled_at(self.loglevel)
    }

    /// Logs `message` at `level`.
    pub fn log(&self, level: LogLevel, message: impl AsRef<str>) {
        if !level.enabled_at(self.loglevel) {
            return;
        }
        let entry = LogEntry {
            ts: Utc::now(),
            level,
            step: self.step.clone(),
            attempt: self.attempt,
            message: self.redactor.redact_str(message.as_ref()),
        };
        self.entries.lock().expect("log buffer").push(entry);
    }

    /// Logs at DEBUG (kept when the run's `loglevel` is 10).
    pub fn debug(&self, message: impl AsRef<str>) {
        self.log(LogLevel::Debug, message)
    }
    /// Logs at INFO.
    pub fn info(&self, message: impl AsRef<str>) {
        self.log(LogLevel::Info, message)
    }
    /// Logs at WARNING (a log entry; a step that should end in `warning` returns
    /// [`StepOutput::with_warning`]).
    pub fn warning(&self, message: impl AsRef<str>) {
        self.log(LogLevel::Warning, message)
    }
    /// Logs at ERROR.
    pub fn error(&self, message: impl AsRef<str>) {
        self.log(LogLevel::Error, message)
    }

    /// Takes the buffered entries.
    pub fn drain(&self) -> Vec<LogEntry> {
        std::mem::take(&mut *self.entries.lock().expect("log buffer"))
    }
}

/// What a step sees while it executes: who it is (run, step, unit, attempt), its
/// logger, the cache, when its attempt's time runs out, and the run's report it may add
/// sections to ([`StepContext::report`]).
///
/// ```
/// use std::sync::Arc;
/// use std::time::{Duration, Instant};
/// use sluice_core::step::{StepContext, StepLogger};
/// # use sluice_core::ports::{Cache, CacheKeys, StoreError};
/// # use serde_json::Value;
/// # struct NoCache;
/// # #[async_trait::async_trait]
/// # impl Cache for NoCache {
/// #     async fn get(&self, _: &str) -> Result<Option<Value>, StoreError> { Ok(None) }
/// #     async fn put(&self, _: &str, _: &Value, _: Option<Duration>) -> Result<(), StoreError> { Ok(()) }
/// #     async fn delete(&self, _: &str) -> Result<bool, StoreError> { Ok(false) }
/// #     async fn list(&self, _: &str, _: usize, _: Option<&str>) -> Result<CacheKeys, StoreError> { Ok(CacheKeys::default()) }
/// #     async fn delete_prefix(&self, _: &str) -> Result<u64, StoreError> { Ok(0) }
/// # }
///
/// let log = StepLogger::new("Fetch", 1, 20, Default::default());
/// let ctx = StepContext::new("run-1", "Fetch", 1, 0, log, Arc::new(NoCache),
///                            Instant::now() + Duration::from_secs(30));
/// assert_eq!(ctx.attempt, 1);
/// assert!(ctx.remaining() <= Duration::from_secs(30));
/// ```
#[derive(Clone)]
pub struct StepContext {
    /// The run's id.
    pub run_id: String,
    /// The step's id in its application (`Fetch`).
    pub step_id: String,
    /// The attempt, from 1; a retry is the next attempt.
    pub attempt: u32,
    /// The unit of a `for_each` fan-out, from 0 (0 for a step without `for_each`).
    pub unit: u32,
    /// The step's log, filtered by the run's `loglevel`, secrets redacted.
    pub log: StepLogger,
    /// The deployment's cache (entries shared by every run).
    pub cache: Arc<dyn Cache>,
    deadline: Instant,
    /// Sections added with [`StepContext::report`], until the runtime takes them.
    reports: Arc<Mutex<Vec<ReportSection>>>,
}

impl StepContext {
    /// The context of one attempt; `deadline` is when the step's `timeout_seconds` end.
    pub fn new(
        run_id: impl Into<String>,
        step_id: impl Into<String>,
        attempt: u32,
        unit: u32,
        log: StepLogger,
        cache: Arc<dyn Cache>,
        deadline: Instant,
    ) -> Self {
        Self {
            run_id: run_id.into(),
            step_id: step_id.into(),
            attempt,
            unit,
            log,
            cache,
            deadline,
            reports: Arc::default(),
        }
    }

    /// Adds a section to the run's report (`report-<application>-<run>`). The sections
    /// of an attempt are stored, with secrets redacted and within the bounds of
    /// [`crate::report`] (what exceeds them is cut, with a warning on the step), when
    /// the attempt succeeds; they replace whatever an earlier attempt of this unit
    /// stored, so a retried or redelivered attempt never duplicates a section.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use std::time::{Duration, Instant};
    /// # use sluice_core::step::{StepContext, StepLogger};
    /// # use sluice_core::ports::{Cache, CacheKeys, StoreError};
    /// # use serde_json::{json, Value};
    /// # struct NoCache;
    /// # #[async_trait::async_trait]
    /// # impl Cache for NoCache {
    /// #     async fn get(&self, _: &str) -> Result<Option<Value>, StoreError> { Ok(None) }
    /// #     async fn put(&self, _: &str, _: &Value, _: Option<Duration>) -> Result<(), StoreError> { Ok(()) }
    /// #     async fn delete(&self, _: &str) -> Result<bool, StoreError> { Ok(false) }
    /// #     async fn list(&self, _: &str, _: usize, _: Option<&str>) -> Result<CacheKeys, StoreError> { Ok(CacheKeys::default()) }
    /// #     async fn delete_prefix(&self, _: &str) -> Result<u64, StoreError> { Ok(0) }
    /// # }
    /// # let ctx = StepContext::new("run-1", "Sync", 1, 0, StepLogger::new("Sync", 1, 20, Default::default()),
    /// #                           Arc::new(NoCache), Instant::now() + Duration::from_secs(30));
    /// use sluice_core::report::{ReportSection, ReportTable, RowStatus};
    ///
    /// ctx.report(
    ///     ReportSection::new("Users")
    ///         .detail("directory", "ldap://example.test")
    ///         .table(ReportTable::new(["login"]).row(RowStatus::New, [json!("ada")])),
    /// );
    /// assert_eq!(ctx.take_reports().len(), 1);
    /// ```
    pub fn report(&self, section: ReportSection) {
        self.reports.lock().expect("report buffer").push(section);
    }

    /// Takes the sections added so far (the runtime stores them; a test harness shows
    /// them).
    pub fn take_reports(&self) -> Vec<ReportSection> {
        std::mem::take(&mut *self.reports.lock().expect("report buffer"))
    }

    /// When the attempt's time runs out: the runtime abandons the attempt then (a
    /// retryable "timed out" failure). A step that calls out can give its clients this
    /// deadline so that they fail with a clearer error first.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The time left until [`StepContext::deadline`] (zero once it has passed).
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

/// A step type as the runtime sees it: parameters as JSON. Implement [`TypedStep`]
/// instead: every `TypedStep` is a `StepType`, which deserializes the parameters into
/// its parameter struct (failing with [`StepError::InvalidParameters`] naming the field).
#[async_trait]
pub trait StepType: Send + Sync + 'static {
    /// The name applications use in a step's `type`.
    fn name(&self) -> &str;
    /// One sentence for `sluice schema step` and `GET /steps`.
    fn description(&self) -> &str;
    /// The step type's semver version, recorded in the runs that use it. Hand
    /// written implementations (test doubles) that declare none report
    /// [`UNVERSIONED`]; [`TypedStep`] requires one.
    fn version(&self) -> &str {
        UNVERSIONED
    }
    /// JSON Schema of the parameters object.
    fn parameter_schema(&self) -> Value;
    /// Runs one attempt with fully resolved parameters.
    async fn execute(&self, parameters: Value, ctx: &StepContext) -> Result<StepOutput, StepError>;
}

/// A step type with a typed parameter struct (use `#[serde(deny_unknown_fields)]`, and
/// doc comments on its fields: they become the published schema's descriptions). The
/// crate `sluice-sdk` has a complete example and a test harness.
///
/// ```
/// use async_trait::async_trait;
/// use serde_json::{json, Value};
/// use sluice_core::step::{StepContext, StepError, StepOutput, StepRegistry, StepType, TypedStep};
///
/// struct Identity;
///
/// #[async_trait]
/// impl TypedStep for Identity {
///     const NAME: &'static str = "identity";
///     const DESCRIPTION: &'static str = "Outputs its parameters.";
///     const VERSION: &'static str = "1.0.0";
///     type Params = Value;
///
///     async fn run(&self, params: Value, _: &StepContext) -> Result<StepOutput, StepError> {
///         Ok(StepOutput::value(params))
///     }
/// }
///
/// let mut registry = StepRegistry::new();
/// registry.register(Identity);
/// assert_eq!(registry.get("identity").unwrap().version(), "1.0.0");
/// ```
#[async_trait]
pub trait TypedStep: Send + Sync + 'static {
    /// The step type's name (lowercase letters, digits and `_`: it names its queue and
    /// its function).
    const NAME: &'static str;
    /// One sentence describing what it does.
    const DESCRIPTION: &'static str;
    /// Semver version of the step type; bump it when its behaviour or parameters change.
    const VERSION: &'static str;
    /// The parameters, deserialized from the step's resolved `parameters` object.
    type Params: DeserializeOwned + JsonSchema + Send;

    /// Runs one attempt. Return [`StepError::Retryable`] when another attempt may
    /// succeed (a timeout, a busy server), [`StepError::Fatal`] or
    /// [`StepError::InvalidParameters`] when it cannot.
    async fn run(&self, params: Self::Params, ctx: &StepContext) -> Result<StepOutput, StepError>;
}

#[async_trait]
impl<T: TypedStep> StepType for T {
    fn name(&self) -> &str {
        T::NAME
    }

    fn description(&self) -> &str {
        T::DESCRIPTION
    }

    fn version(&self) -> &str {
        T::VERSION
    }

    fn parameter_schema(&self) -> Value {
        parameter_schema_of::<T::Params>()
    }

    async fn execute(&self, parameters: Value, ctx: &StepContext) -> Result<StepOutput, StepError> {
        let params: T::Params = crate::json::from_value(parameters)
            .map_err(|e| StepError::InvalidParameters(e.to_string()))?;
        self.run(params, ctx).await
    }
}

/// The version a step type that declares none reports.
pub const UNVERSIONED: &str = "0.0.0";

/// The version of the operators (`transform`, `trigger_application`): the engine's.
pub const OPERATOR_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The version of the step type `step_type` names: an operator's is the engine's; a
/// step type not in `registry` has none.
pub fn version_of(registry: &StepRegistry, step_type: &str) -> Option<String> {
    if crate::operators::is_operator(step_type) {
        return Some(OPERATOR_VERSION.to_string());
    }
    registry.get(step_type).map(|t| t.version().to_string())
}

/// The JSON Schema of a parameter struct, as published by step types.
pub fn parameter_schema_of<P: JsonSchema>() -> Value {
    schemars::schema_for!(P).to_value()
}

/// The registered step types, by name: what a `sluice` binary runs and validates
/// against, and what a function executes.
///
/// ```
/// use sluice_core::step::StepRegistry;
///
/// let registry = StepRegistry::new();
/// assert_eq!(registry.names().count(), 0);
/// ```
#[derive(Clone, Default)]
pub struct StepRegistry {
    types: BTreeMap<String, Arc<dyn StepType>>,
}

impl StepRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `step_type` (replacing one of the same name).
    pub fn register(&mut self, step_type: impl StepType) -> &mut Self {
        self.types
            .insert(step_type.name().to_string(), Arc::new(step_type));
        self
    }

    /// The step type named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn StepType>> {
        self.types.get(name)
    }

    /// Every step type, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn StepType>> {
        self.types.values()
    }

    /// Every name, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.types.keys().map(String::as_str)
    }
}

/// Every step type of `registry` and every operator, as `GET /steps` and
/// `sluice schema step` list them: name, kind (`step` or `operator`), version,
/// description and parameter schema.
pub fn step_type_listing(registry: &StepRegistry) -> Vec<Value> {
    let mut types: Vec<Value> = registry
        .iter()
        .map(|t| {
            serde_json::json!({
                "name": t.name(), "kind": "step", "version": t.version(),
                "description": t.description(), "parameters": t.parameter_schema(),
            })
        })
        .collect();
    for (name, description, schema) in crate::operators::operator_catalog() {
        types.push(serde_json::json!({
            "name": name, "kind": "operator", "version": OPERATOR_VERSION,
            "description": description, "parameters": schema,
        }));
    }
    types
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Versioned;

    #[async_trait]
    impl TypedStep for Versioned {
        const NAME: &'static str = "versioned";
        const DESCRIPTION: &'static str = "A test step.";
        const VERSION: &'static str = "2.1.0";
        type Params = Value;

        async fn run(&self, params: Value, _: &StepContext) -> Result<StepOutput, StepError> {
            Ok(StepOutput::value(params))
        }
    }

    #[test]
    fn step_types_and_operators_carry_their_versions() {
        let mut registry = StepRegistry::new();
        registry.register(Versioned);
        assert_eq!(registry.get("versioned").unwrap().version(), "2.1.0");
        assert_eq!(version_of(&registry, "versioned").as_deref(), Some("2.1.0"));
        assert_eq!(
            version_of(&registry, "transform").as_deref(),
            Some(env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(version_of(&registry, "missing"), None);
        let listing = step_type_listing(&registry);
        assert_eq!(listing[0]["version"], "2.1.0");
        assert_eq!(listing[0]["description"], "A test step.");
        let transform = listing.iter().find(|t| t["name"] == "transform").unwrap();
        assert_eq!(transform["kind"], "operator");
        assert_eq!(transform["version"], env!("CARGO_PKG_VERSION"));
    }
}
