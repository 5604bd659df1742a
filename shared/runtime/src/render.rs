//! The template work of operators and conditions: references bound as values, in the
//! scope without secrets, rendered in the sandbox (`sandbox.rs`). Pure functions of a
//! scope; they call nothing else of the runtime.

use std::time::Duration;

use serde_json::Value;
use sluice_core::condition;
use sluice_core::operators::{TransformOutput, TransformParams};
use sluice_core::reference::RunScope;
use sluice_core::step::StepError;
use sluice_core::template;

use crate::sandbox;

/// Renders a `transform`: its references bound as values, in the scope without secrets,
/// in a bounded child process on a blocking thread.
pub(crate) async fn transform(
    params: Value,
    scope: &RunScope,
    predecessors: &[String],
    time: Duration,
) -> Result<Value, StepError> {
    let params: TransformParams = sluice_core::json::from_value(params)
        .map_err(|e| StepError::InvalidParameters(e.to_string()))?;
    let public = scope.public();
    let bound = template::bind(&params.template, template::SourceKind::Template, &public)
        .map_err(|e| StepError::Fatal(e.to_string()))?;
    let context = public.template_context(predecessors);
    let rendered = tokio::task::spawn_blocking(move || {
        sandbox::isolated(time, move || bound.render(context).map_err(|e| e.0))
    })
    .await
    .map_err(|e| StepError::Fatal(format!("template: {e}")))?
    .map_err(|e| StepError::Fatal(format!("template: {e}")))?;
    let value = match params.output {
        TransformOutput::Text => Value::String(rendered),
        TransformOutput::Json => serde_json::from_str(rendered.trim()).map_err(|e| {
            StepError::Fatal(format!(
                "the rendering is not JSON ({e}); set \"output\": \"text\" to keep text. Rendering starts: {}",
                rendered.chars().take(120).collect::<String>()
            ))
        })?,
    };
    Ok(value)
}

/// Evaluates a template condition: references bound as values, in the scope without
/// secrets, in a bounded child process (the caller is on a blocking thread).
pub(crate) fn template_condition(
    expression: &str,
    scope: &RunScope,
    predecessors: &[String],
    time: Duration,
) -> Result<bool, condition::ConditionError> {
    let public = scope.public();
    let bound = template::bind(expression, template::SourceKind::Expression, &public)?;
    let context = public.template_context(predecessors);
    let truth = sandbox::isolated(time, move || {
        bound
            .evaluate_truth(context)
            .map(|holds| holds.to_string())
            .map_err(|e| e.0)
    })
    .map_err(|e| condition::ConditionError::template(e.0))?;
    Ok(truth == "true")
}
