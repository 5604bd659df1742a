//! `cache`: saves, reads and deletes values in the key/value cache that steps share
//! across runs (DynamoDB with TTL on AWS, SQLite when embedded).

use std::time::Duration;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};
use sluice_sdk::{StepContext, StepError, StepOutput, TypedStep};

/// Longest cache entry lifetime (ten years): a longer one would overflow expiry dates.
const MAX_TTL_SECONDS: u64 = 315_360_000;

/// What the `cache` step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CacheAction {
    /// Store `value` under `key` (replacing any value), for `ttl_seconds` if given.
    Save,
    /// Return the value under `key`, or `default` when there is none.
    Read,
    /// Remove `key` (succeeds when it was already absent).
    Delete,
}

/// Parameters of `cache`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CacheParams {
    /// `save`, `read` or `delete`.
    pub action: CacheAction,
    /// The cache key.
    pub key: String,
    /// `save` only: the value to store (any JSON, `null` included).
    #[serde(default, deserialize_with = "present")]
    pub value: Option<Value>,
    /// `save` only: seconds after which the entry expires; without it, it never does.
    #[serde(default)]
    #[schemars(range(min = 1, max = 315_360_000))]
    pub ttl_seconds: Option<u64>,
    /// `read` only: returned when the key is absent (`null` included); without it a
    /// missing key fails the step.
    #[serde(default, deserialize_with = "present")]
    pub default: Option<Value>,
}

/// A field that is present is `Some`, even when it is `null`: `"default": null` means
/// "return null when absent", which is not the same as giving no default.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

/// The `cache` step type.
#[derive(Debug, Clone, Copy, Default)]
pub struct CacheStep;

#[async_trait]
impl TypedStep for CacheStep {
    const NAME: &'static str = "cache";
    const DESCRIPTION: &'static str =
        "Saves, reads or deletes a value in the cache shared by every run.";
    const VERSION: &'static str = "1.0.0";
    type Params = CacheParams;

    async fn run(&self, params: CacheParams, ctx: &StepContext) -> Result<StepOutput, StepError> {
        let CacheParams {
            action,
            key,
            value,
            ttl_seconds,
            default,
        } = params;
        if key.is_empty() {
            return Err(StepError::InvalidParameters(
                "cache: \"key\" must not be empty".into(),
            ));
        }
        let refuse = |name: &str| {
            Err(StepError::InvalidParameters(format!(
                "cache: \"{name}\" does not apply to action \"{}\"",
                action_name(action)
            )))
        };
        if action != CacheAction::Save {
            if value.is_some() {
                return refuse("value");
            }
            if ttl_seconds.is_some() {
                return refuse("ttl_seconds");
            }
        }
        if action != CacheAction::Read && default.is_some() {
            return refuse("default");
        }
        let backend = |e: sluice_core::ports::StoreError| {
            StepError::Retryable(format!(
                "cache {} of key \"{key}\" failed: {e}",
                action_name(action)
            ))
        };

        match action {
            CacheAction::Save => {
                let Some(value) = value else {
                    return Err(StepError::InvalidParameters(
                        "cache: action \"save\" needs a \"value\"".into(),
                    ));
                };
                let ttl = match ttl_seconds {
                    Some(s) if !(1..=MAX_TTL_SECONDS).contains(&s) => {
                        return Err(StepError::InvalidParameters(format!(
                            "cache: \"ttl_seconds\" must be between 1 and {MAX_TTL_SECONDS} (got {s})"
                        )))
                    }
                    other => other.map(Duration::from_secs),
                };
                ctx.cache.put(&key, &value, ttl).await.map_err(backend)?;
                match ttl_seconds {
                    Some(s) => ctx.log.info(format!("saved cache key \"{key}\" for {s} s")),
                    None => ctx.log.info(format!("saved cache key \"{key}\"")),
                }
                Ok(StepOutput::value(json!({ "key": key })))
            }
            CacheAction::Read => match ctx.cache.get(&key).await.map_err(backend)? {
                Some(value) => {
                    ctx.log.info(format!("read cache key \"{key}\""));
                    Ok(StepOutput::value(value))
                }
                None => match default {
                    Some(default) => {
                        ctx.log
                            .info(format!("cache key \"{key}\" is absent: using the default"));
                        Ok(StepOutput::value(default))
                    }
                    None => Err(StepError::Fatal(format!(
                        "cache key \"{key}\" not found (give \"default\" to read a missing key)"
                    ))),
                },
            },
            CacheAction::Delete => {
                let existed = ctx.cache.delete(&key).await.map_err(backend)?;
                if existed {
                    ctx.log.info(format!("deleted cache key \"{key}\""));
                } else {
                    ctx.log
                        .info(format!("cache key \"{key}\" was already absent"));
                }
                Ok(StepOutput::value(json!({ "key": key })))
            }
        }
    }
}

fn action_name(action: CacheAction) -> &'static str {
    match action {
        CacheAction::Save => "save",
        CacheAction::Read => "read",
        CacheAction::Delete => "delete",
    }
}
