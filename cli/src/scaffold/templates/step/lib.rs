//! The `greet` step type: says hello to someone.
//!
//! A step type is a struct implementing [`TypedStep`]: its name (what applications write
//! in a step's `type`), a description and a version (both shown by `sluice schema step`
//! and `GET /steps`), a parameter struct and `run`. The parameter struct's doc comments
//! become the descriptions of its published JSON Schema, which every application using
//! the step type is validated against before it runs.

use sluice_sdk::prelude::*;

/// Parameters of `greet`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GreetParams {
    /// Who to say hello to.
    pub name: String,
    /// Say it in capitals.
    #[serde(default)]
    pub shout: bool,
}

/// The `greet` step type. One value serves every attempt of a process: hold what is
/// built once here (HTTP clients, database pools), and build it in `Default`.
#[derive(Debug)]
pub struct Greet {
    salutation: String,
}

impl Default for Greet {
    fn default() -> Self {
        Self {
            salutation: "Hello".into(),
        }
    }
}

#[async_trait]
impl TypedStep for Greet {
    const NAME: &'static str = "greet";
    const DESCRIPTION: &'static str = "Says hello to `name`; the output is `{\"message\"}`.";
    /// Semver: bump it when the step's behaviour or parameters change (each run records
    /// the version of every step type it executed).
    const VERSION: &'static str = "0.1.0";
    type Params = GreetParams;

    async fn run(&self, params: GreetParams, ctx: &StepContext) -> Result<StepOutput, StepError> {
        let name = params.name.trim();
        if name.is_empty() {
            // Never retried: the application must change.
            return Err(StepError::InvalidParameters(
                "name: must not be empty".into(),
            ));
        }
        let mut message = format!("{}, {name}!", self.salutation);
        if params.shout {
            message = message.to_uppercase();
        }
        ctx.log.info(format!("said hello to {name}"));
        Ok(StepOutput::value(json!({ "message": message })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing::TestRun;

    #[tokio::test]
    async fn says_hello_to_the_name_given() {
        let outcome = TestRun::new(Greet::default())
            .params(json!({"name": "${vars.who}", "shout": true}))
            .var("who", json!("Ada"))
            .run()
            .await;
        assert_eq!(outcome.output(), &json!({"message": "HELLO, ADA!"}));
        assert_eq!(outcome.log_messages(), ["said hello to Ada"]);
    }

    #[tokio::test]
    async fn an_empty_name_or_an_unknown_parameter_is_refused() {
        let outcome = TestRun::new(Greet::default())
            .params(json!({"name": " "}))
            .run()
            .await;
        assert!(matches!(
            outcome.error(),
            Some(StepError::InvalidParameters(m)) if m.contains("name")
        ));
        let outcome = TestRun::new(Greet::default())
            .params(json!({"name": "Ada", "loud": true}))
            .run()
            .await;
        assert!(matches!(
            outcome.error(),
            Some(StepError::InvalidParameters(m)) if m.contains("loud")
        ));
    }
}
