//! `echo`: returns its `value`, optionally logging and warning. Useful to shape data,
//! to test references, and as a placeholder while an application is being built.

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use sluice_sdk::{StepContext, StepError, StepOutput, TypedStep};

/// Parameters of `echo`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EchoParams {
    /// The value to return as the step's output (any JSON, `null` included).
    pub value: Value,
    /// A message logged at INFO.
    #[serde(default)]
    pub log: Option<String>,
    /// A warning: the step ends in `warning` with this message.
    #[serde(default)]
    pub warning: Option<String>,
}

/// The `echo` step type.
#[derive(Debug, Clone, Copy, Default)]
pub struct Echo;

#[async_trait]
impl TypedStep for Echo {
    const NAME: &'static str = "echo";
    const DESCRIPTION: &'static str =
        "Returns `value` as its output; optionally logs `log` and ends in warning with `warning`.";
    const VERSION: &'static str = "1.0.0";
    type Params = EchoParams;

    async fn run(&self, params: EchoParams, ctx: &StepContext) -> Result<StepOutput, StepError> {
        if let Some(message) = &params.log {
            ctx.log.info(message);
        }
        let mut output = StepOutput::value(params.value);
        // The runtime records and logs the step's warnings; logging here would repeat it.
        output.warnings.extend(params.warning);
        Ok(output)
    }
}
