//! The harness runs an attempt as the runtime does: references resolve, secrets are
//! redacted from everything the attempt produces, the timeout holds, errors keep their
//! kind.

use std::sync::Arc;
use std::time::Duration;

use sluice_sdk::prelude::*;
use sluice_sdk::testing::{MemoryCache, TestRun};
use sluice_sdk::Cache;

/// Calls a pretend API with a token: logs and echoes what it got.
struct Login;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct LoginParams {
    user: String,
    token: String,
    #[serde(default)]
    behave: Option<String>,
}

#[async_trait]
impl TypedStep for Login {
    const NAME: &'static str = "login";
    const DESCRIPTION: &'static str = "Pretends to log in.";
    const VERSION: &'static str = "0.2.0";
    type Params = LoginParams;

    async fn run(&self, p: LoginParams, ctx: &StepContext) -> Result<StepOutput, StepError> {
        ctx.log
            .debug(format!("logging in {} with {}", p.user, p.token));
        match p.behave.as_deref() {
            Some("busy") => Err(StepError::Retryable(format!("{} is busy", p.token))),
            Some("refused") => Err(StepError::Fatal(format!("{} refused", p.token))),
            Some("slow") => {
                tokio::time::sleep(ctx.remaining() + Duration::from_secs(5)).await;
                unreachable!("the harness abandons the attempt at its deadline")
            }
            Some("cache") => {
                ctx.cache
                    .put("session", &json!(p.user), None)
                    .await
                    .map_err(|e| StepError::Retryable(e.to_string()))?;
                Ok(StepOutput::value(
                    json!({"attempt": ctx.attempt, "unit": ctx.unit}),
                ))
            }
            _ => Ok(StepOutput::value(json!({"user": p.user, "sent": p.token}))
                .with_warning(format!("token {} expires soon", p.token))),
        }
    }
}

fn login(behave: &str) -> TestRun<Login> {
    TestRun::new(Login)
        .params(json!({"user": "${Lookup.name}", "token": "${config.token}", "behave": behave}))
        .predecessor("Lookup", json!({"name": "ada"}))
        .secret("token", json!("tok-123456"))
}

#[tokio::test]
async fn references_resolve_and_secrets_are_redacted_everywhere() {
    let outcome = login("fine").run().await;
    assert_eq!(outcome.output()["user"], "ada");
    assert_ne!(outcome.output()["sent"], "tok-123456");
    assert!(!outcome.warnings()[0].contains("tok-123456"));
    let logs = outcome.log_messages();
    assert!(logs[0].starts_with("logging in ada with "), "{logs:?}");
    assert!(!logs[0].contains("tok-123456"));
}

#[tokio::test]
async fn errors_keep_their_kind_and_lose_their_secrets() {
    let busy = login("busy").run().await;
    let error = busy.error().unwrap();
    assert!(error.is_retryable());
    assert!(!error.message().contains("tok-123456"));
    let refused = login("refused").run().await;
    assert!(matches!(refused.error(), Some(StepError::Fatal(_))));
    let invalid = TestRun::new(Login)
        .params(json!({"user": "ada"}))
        .run()
        .await;
    let Some(StepError::InvalidParameters(message)) = invalid.error() else {
        panic!("{:?}", invalid.result)
    };
    assert!(message.contains("token"), "{message}");
}

#[tokio::test]
async fn a_missing_reference_fails_naming_it() {
    let outcome = TestRun::new(Login)
        .params(json!({"user": "${Nobody.name}", "token": "t"}))
        .run()
        .await;
    let error = outcome.error().unwrap();
    assert!(!error.is_retryable());
    assert!(error.message().contains("Nobody"), "{error}");
}

#[tokio::test]
async fn the_attempt_ends_at_its_timeout() {
    let outcome = login("slow").timeout(Duration::from_millis(50)).run().await;
    let error = outcome.error().unwrap();
    assert!(error.is_retryable());
    assert!(error.message().contains("timed out"), "{error}");
}

#[tokio::test]
async fn attempt_unit_and_cache_are_what_the_run_gives() {
    let cache = Arc::new(MemoryCache::default());
    let outcome = login("cache")
        .attempt(3)
        .item(2, json!("x"))
        .cache(cache.clone())
        .run()
        .await;
    assert_eq!(outcome.output(), &json!({"attempt": 3, "unit": 2}));
    assert_eq!(cache.get("session").await.unwrap(), Some(json!("ada")));
}
