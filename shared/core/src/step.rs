//! The step-type SDK: implement [`TypedStep`] with a typed parameter struct, register it,
//! and it becomes a step type with a published parameter schema.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::Utc;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::model::{LogEntry, LogLevel};
use crate::ports::Cache;
use crate::redact::Redactor;

/// What a step produced.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutput {
    pub value: Value,
    /// Non-empty: the step ends in `warning`.
    pub warnings: Vec<String>,
}

impl StepOutput {
    pub fn value(value: Value) -> Self {
        Self {
            value,
            warnings: Vec::new(),
        }
    }
}

/// Why a step attempt failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StepError {
    /// A failure worth retrying (network, timeout, unexpected status, …).
    #[error("{0}")]
    Failed(String),
    /// A failure no retry can fix (bad parameters, missing reference, …).
    #[error("{0}")]
    Fatal(String),
}

impl StepError {
    pub fn retryable(&self) -> bool {
        matches!(self, Self::Failed(_))
    }

    pub fn message(&self) -> &str {
        match self {
            Self::Failed(m) | Self::Fatal(m) => m,
        }
    }
}

/// Collects a step attempt's log entries, filtered by the run's `loglevel`, with every
/// secret of the run redacted.
#[derive(Clone)]
pub struct StepLogger {
    step: String,
    attempt: u32,
    loglevel: u8,
    redactor: Redactor,
    entries: Arc<Mutex<Vec<LogEntry>>>,
}

impl StepLogger {
    pub fn new(step: &str, attempt: u32, loglevel: u8, redactor: Redactor) -> Self {
        Self {
            step: step.to_string(),
            attempt,
            loglevel,
            redactor,
            entries: Arc::default(),
        }
    }

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

    pub fn debug(&self, message: impl AsRef<str>) {
        self.log(LogLevel::Debug, message)
    }
    pub fn info(&self, message: impl AsRef<str>) {
        self.log(LogLevel::Info, message)
    }
    pub fn warning(&self, message: impl AsRef<str>) {
        self.log(LogLevel::Warning, message)
    }
    pub fn error(&self, message: impl AsRef<str>) {
        self.log(LogLevel::Error, message)
    }

    /// Takes the buffered entries.
    pub fn drain(&self) -> Vec<LogEntry> {
        std::mem::take(&mut *self.entries.lock().expect("log buffer"))
    }
}

/// What a step sees while it executes.
#[derive(Clone)]
pub struct StepContext {
    pub run_id: String,
    pub step_id: String,
    pub attempt: u32,
    pub unit: u32,
    pub log: StepLogger,
    pub cache: Arc<dyn Cache>,
}

/// A step type as the runtime sees it. Implement [`TypedStep`] instead: it derives this.
#[async_trait]
pub trait StepType: Send + Sync + 'static {
    fn name(&self) -> &str;
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

/// A step type with a typed parameter struct (use `#[serde(deny_unknown_fields)]`).
#[async_trait]
pub trait TypedStep: Send + Sync + 'static {
    const NAME: &'static str;
    const DESCRIPTION: &'static str;
    /// Semver version of the step type; bump it when its behaviour or parameters change.
    const VERSION: &'static str;
    type Params: DeserializeOwned + JsonSchema + Send;

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
            .map_err(|e| StepError::Fatal(format!("invalid parameters: {e}")))?;
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

/// The registered step types, by name.
#[derive(Clone, Default)]
pub struct StepRegistry {
    types: BTreeMap<String, Arc<dyn StepType>>,
}

impl StepRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(&mut self, step_type: impl StepType) -> &mut Self {
        self.types
            .insert(step_type.name().to_string(), Arc::new(step_type));
        self
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn StepType>> {
        self.types.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn StepType>> {
        self.types.values()
    }

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
