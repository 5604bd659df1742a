//! Operators: control flow run inside the engine's runtime rather than as a step function
//! (SPEC §2): `transform` (alias `template_render`), `trigger_application` and
//! `report` (a section of the run's report, see [`crate::report`]).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::step::parameter_schema_of;

pub const TRANSFORM: &str = "transform";
pub const TEMPLATE_RENDER: &str = "template_render";
pub const TRIGGER_APPLICATION: &str = "trigger_application";
pub const REPORT: &str = "report";

/// Whether `step_type` names an operator.
pub fn is_operator(step_type: &str) -> bool {
    matches!(
        step_type,
        TRANSFORM | TEMPLATE_RENDER | TRIGGER_APPLICATION | REPORT
    )
}

/// Whether `step_type` renders a Jinja2 template (it then sees every predecessor and
/// the scope without secrets, and its `template` is bound, not resolved).
pub fn renders_template(step_type: &str) -> bool {
    matches!(step_type, TRANSFORM | TEMPLATE_RENDER)
}

/// How a `transform` treats its rendering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TransformOutput {
    /// Parse the rendering as JSON (the default).
    #[default]
    Json,
    /// Keep the rendering as a string.
    Text,
}

/// Parameters of `transform` / `template_render`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TransformParams {
    /// A Jinja2 template. It sees every predecessor by id, `input` (one predecessor),
    /// `config`, `vars`, `run` and, inside `for_each`, `item`.
    pub template: String,
    /// `json` (default) parses the rendering as JSON; `text` keeps it as a string.
    #[serde(default)]
    pub output: TransformOutput,
}

/// Parameters of `trigger_application`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerParams {
    /// Name of the application to start.
    pub application: String,
    /// Params of the child run (app variable overrides and reserved params).
    #[serde(default)]
    pub params: Map<String, Value>,
    /// Configuration of the child run (default: the child application's own).
    #[serde(default)]
    pub configuration: Option<String>,
    /// Wait for the child run to end (holding no compute) and end with its state.
    #[serde(default)]
    pub blocking: bool,
}

/// `(name, description, parameter schema)` of every operator.
pub fn operator_catalog() -> Vec<(&'static str, &'static str, Value)> {
    let transform = parameter_schema_of::<TransformParams>();
    vec![
        (
            TRANSFORM,
            "Renders a Jinja2 template over the predecessors' outputs; the result is parsed as JSON unless output is text.",
            transform.clone(),
        ),
        (TEMPLATE_RENDER, "Alias of transform.", transform),
        (
            TRIGGER_APPLICATION,
            "Starts another application; blocking waits for it and ends with its state.",
            parameter_schema_of::<TriggerParams>(),
        ),
        (
            REPORT,
            "Adds a section (title, details, tables of New/Updated/Removed/Unchanged/Failed rows built from lists) to the run's report.",
            parameter_schema_of::<crate::report::ReportParams>(),
        ),
    ]
}
