//! The catalogue: every built-in step type's name, description and parameter JSON
//! Schema as data (`catalogue.json`, generated from [`builtin_registry`] and embedded),
//! so that a function which validates applications or lists step types knows them all
//! without linking their code. A unit test fails when the file is stale; regenerate it
//! with `SLUICE_WRITE_CATALOGUE=1 cargo test -p sluice-steps catalogue`.
//!
//! [`builtin_registry`]: crate::builtin_registry

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_core::step::{StepContext, StepError, StepOutput, StepRegistry, StepType};

/// The generated catalogue (a JSON array of [`CatalogueEntry`], by name).
pub const CATALOGUE_JSON: &str = include_str!("../catalogue.json");

/// One step type as the catalogue describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogueEntry {
    pub name: String,
    /// Semver version of the step type.
    pub version: String,
    pub description: String,
    /// JSON Schema of the parameters object.
    pub parameters: Value,
}

/// Every entry of the embedded catalogue.
pub fn entries() -> Vec<CatalogueEntry> {
    serde_json::from_str(CATALOGUE_JSON).expect("catalogue.json is generated valid")
}

/// The catalogue of a registry (what `catalogue.json` holds for the built-in one).
pub fn entries_of(registry: &StepRegistry) -> Vec<CatalogueEntry> {
    registry
        .iter()
        .map(|t| CatalogueEntry {
            name: t.name().to_string(),
            version: t.version().to_string(),
            description: t.description().to_string(),
            parameters: t.parameter_schema(),
        })
        .collect()
}

/// A step type known by its name and schema only: applications using it validate and
/// dispatch, but executing it here is refused (it runs in its own function).
#[derive(Debug, Clone)]
pub struct CatalogueStep(pub CatalogueEntry);

#[async_trait]
impl StepType for CatalogueStep {
    fn name(&self) -> &str {
        &self.0.name
    }

    fn description(&self) -> &str {
        &self.0.description
    }

    fn version(&self) -> &str {
        &self.0.version
    }

    fn parameter_schema(&self) -> Value {
        self.0.parameters.clone()
    }

    async fn execute(&self, _: Value, _: &StepContext) -> Result<StepOutput, StepError> {
        Err(StepError::Fatal(format!(
            "step type \"{}\" is not executed by this function (it runs in its own)",
            self.0.name
        )))
    }
}

/// Every built-in step type, known by name and schema only.
pub fn catalogue_registry() -> StepRegistry {
    let mut registry = StepRegistry::new();
    for entry in entries() {
        registry.register(CatalogueStep(entry));
    }
    registry
}

#[cfg(all(
    test,
    feature = "echo",
    feature = "http_request",
    feature = "sql",
    feature = "cache"
))]
mod tests {
    use super::*;

    #[test]
    fn catalogue_matches_the_builtin_step_types() {
        let generated = entries_of(&crate::builtin_registry());
        let text = serde_json::to_string_pretty(&generated).unwrap() + "\n";
        if std::env::var_os("SLUICE_WRITE_CATALOGUE").is_some() {
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/catalogue.json");
            std::fs::write(path, &text).unwrap();
        }
        assert!(
            text == CATALOGUE_JSON,
            "shared/steps/catalogue.json is stale: regenerate it with \
             SLUICE_WRITE_CATALOGUE=1 cargo test -p sluice-steps catalogue"
        );
        let known = catalogue_registry();
        assert_eq!(
            known.names().collect::<Vec<_>>(),
            ["cache", "echo", "http_request", "sql"]
        );
        // The stand-ins report the versions of the step types they stand for.
        for builtin in crate::builtin_registry().iter() {
            let stand_in = known.get(builtin.name()).unwrap();
            assert_eq!(stand_in.version(), builtin.version(), "{}", builtin.name());
            assert_eq!(stand_in.version(), "1.0.0", "{}", builtin.name());
        }
    }

    #[tokio::test]
    async fn a_catalogue_step_refuses_to_execute() {
        let registry = catalogue_registry();
        let echo = registry.get("echo").unwrap();
        let ctx = StepContext {
            run_id: "r".into(),
            step_id: "S".into(),
            attempt: 1,
            unit: 0,
            log: sluice_core::step::StepLogger::new(
                "S",
                1,
                20,
                sluice_core::redact::Redactor::default(),
            ),
            cache: std::sync::Arc::new(NoCache),
        };
        let error = echo
            .execute(serde_json::json!({"value": 1}), &ctx)
            .await
            .unwrap_err();
        assert!(!error.retryable());
        assert!(error.message().contains("not executed by this function"));
    }

    struct NoCache;

    #[async_trait]
    impl sluice_core::ports::Cache for NoCache {
        async fn get(&self, _: &str) -> Result<Option<Value>, sluice_core::ports::StoreError> {
            Ok(None)
        }
        async fn put(
            &self,
            _: &str,
            _: &Value,
            _: Option<std::time::Duration>,
        ) -> Result<(), sluice_core::ports::StoreError> {
            Ok(())
        }
        async fn delete(&self, _: &str) -> Result<bool, sluice_core::ports::StoreError> {
            Ok(false)
        }
    }
}
