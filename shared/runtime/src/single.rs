//! One attempt outside any application: `POST /steps/run` and `sluice steps run`. A step
//! type runs with the given parameters as they are (no references resolve: there is no
//! run to resolve them in); a `transform` (or `template_render`) renders its template in
//! the same sandbox as in a run, with `input` as its single predecessor's output. Nothing
//! is stored: the result, its warnings and its logs are returned.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Map, Value};
use sluice_core::logs::LogDocument;
use sluice_core::operators;
use sluice_core::redact::Redactor;
use sluice_core::reference::RunScope;
use sluice_core::step::{StepContext, StepError, StepLogger};

use crate::render;
use crate::runtime::Runtime;

/// What to run.
#[derive(Debug, Clone)]
pub struct SingleStepRequest {
    /// A registered step type, `transform` or `template_render`.
    pub name: String,
    pub parameters: Map<String, Value>,
    /// A transform's `input` (and `${input…}`): what its predecessor would have output.
    pub input: Option<Value>,
    pub timeout: Duration,
    /// 10 debug, 20 info, 30 warning, 40 error.
    pub loglevel: u8,
}

/// Why a single step could not be run at all.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SingleStepError {
    #[error("step type \"{0}\" not found")]
    UnknownType(String),
    /// `trigger_application` starts a run: it is run through its application.
    #[error("name: \"{0}\" starts a run of an application; start that run instead")]
    NotSingle(String),
    /// The parameters do not fit the step type (the message names the field).
    #[error("{0}")]
    InvalidParameters(String),
}

/// The result document (`POST /steps/run`'s body).
#[derive(Debug, Clone, Serialize)]
pub struct SingleStepOutcome {
    pub name: String,
    /// `success`, `warning` or `failed`.
    pub state: &'static str,
    pub output: Value,
    pub warnings: Vec<String>,
    pub error: Option<String>,
    pub seconds: f64,
    pub logs: Vec<LogDocument>,
}

impl Runtime {
    /// Runs one attempt of `request` and returns what it produced.
    pub async fn run_single_step(
        &self,
        request: SingleStepRequest,
    ) -> Result<SingleStepOutcome, SingleStepError> {
        let logger = StepLogger::new(&request.name, 1, request.loglevel, Redactor::default());
        let started = Instant::now();
        let result = match request.name.as_str() {
            operators::TRANSFORM | operators::TEMPLATE_RENDER => {
                let scope = RunScope {
                    run: json!({"id": "steprun", "application": null}),
                    steps: request
                        .input
                        .iter()
                        .map(|input| ("input".to_string(), input.clone()))
                        .collect::<BTreeMap<_, _>>(),
                    ..RunScope::default()
                };
                let predecessors: Vec<String> = scope.steps.keys().cloned().collect();
                render::transform(
                    Value::Object(request.parameters.clone()),
                    &scope,
                    &predecessors,
                    request.timeout,
                )
                .await
                .map(sluice_core::step::StepOutput::value)
            }
            operators::TRIGGER_APPLICATION => {
                return Err(SingleStepError::NotSingle(request.name));
            }
            // Nothing is stored: the output is the section the run would report.
            operators::REPORT => {
                let section = sluice_core::report::section_from_parameters(Value::Object(
                    request.parameters.clone(),
                ))
                .map_err(SingleStepError::InvalidParameters)?;
                let (sections, warnings) = sluice_core::report::bound_sections(vec![section]);
                Ok(sluice_core::step::StepOutput {
                    value: json!({ "sections": sections }),
                    warnings,
                })
            }
            name => {
                let step_type = self
                    .registry
                    .get(name)
                    .cloned()
                    .ok_or_else(|| SingleStepError::UnknownType(name.to_string()))?;
                let ctx = StepContext::new(
                    format!("steprun-{}", uuid::Uuid::now_v7().simple()),
                    name,
                    1,
                    0,
                    logger.clone(),
                    self.backend.cache.clone(),
                    Instant::now() + request.timeout,
                );
                tokio::time::timeout(
                    request.timeout,
                    step_type.execute(Value::Object(request.parameters), &ctx),
                )
                .await
                .unwrap_or_else(|_| {
                    Err(StepError::Retryable(format!(
                        "timed out after {}s",
                        request.timeout.as_secs()
                    )))
                })
            }
        };
        let seconds = started.elapsed().as_secs_f64();
        let logs = logger
            .drain()
            .iter()
            .map(|entry| LogDocument::new(0, entry))
            .collect();
        Ok(match result {
            Ok(output) => SingleStepOutcome {
                name: request.name,
                state: if output.warnings.is_empty() {
                    "success"
                } else {
                    "warning"
                },
                output: output.value,
                warnings: output.warnings,
                error: None,
                seconds,
                logs,
            },
            Err(e @ StepError::InvalidParameters(_)) => {
                return Err(SingleStepError::InvalidParameters(e.message()))
            }
            Err(e) => SingleStepOutcome {
                name: request.name,
                state: "failed",
                output: Value::Null,
                warnings: Vec::new(),
                error: Some(e.message()),
                seconds,
                logs,
            },
        })
    }
}
