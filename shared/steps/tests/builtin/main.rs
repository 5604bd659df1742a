//! Tests of the built-in step types through the same entry point the runtime uses
//! (`StepType::execute` with JSON parameters), against real servers and files.

mod cache;
mod echo;
mod graphql;
mod http;
mod mysql;
mod postgres;
mod registry;
mod sqlite;
mod ssh;
mod validation;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sluice_core::model::{LogEntry, LogLevel};
use sluice_core::ports::{Cache, CacheKeys, StoreError, MAX_CACHE_PAGE};
use sluice_core::redact::Redactor;
use sluice_core::step::{StepContext, StepError, StepLogger, StepOutput, StepType};

/// An in-memory cache that remembers the TTL it was given.
#[derive(Default)]
pub struct MemoryCache {
    pub entries: Mutex<HashMap<String, (Value, Option<Duration>)>>,
}

#[async_trait]
impl Cache for MemoryCache {
    async fn get(&self, key: &str) -> Result<Option<Value>, StoreError> {
        Ok(self
            .entries
            .lock()
            .unwrap()
            .get(key)
            .map(|(v, _)| v.clone()))
    }
    async fn put(&self, key: &str, value: &Value, ttl: Option<Duration>) -> Result<(), StoreError> {
        self.entries
            .lock()
            .unwrap()
            .insert(key.to_string(), (value.clone(), ttl));
        Ok(())
    }
    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.entries.lock().unwrap().remove(key).is_some())
    }
    async fn list(
        &self,
        prefix: &str,
        limit: usize,
        after: Option<&str>,
    ) -> Result<CacheKeys, StoreError> {
        let limit = limit.clamp(1, MAX_CACHE_PAGE);
        let mut keys: Vec<String> = self
            .entries
            .lock()
            .unwrap()
            .keys()
            .filter(|key| key.starts_with(prefix) && after.is_none_or(|a| key.as_str() > a))
            .cloned()
            .collect();
        keys.sort();
        let more = keys.len() > limit;
        keys.truncate(limit);
        let next_after = if more { keys.last().cloned() } else { None };
        Ok(CacheKeys { keys, next_after })
    }
    async fn delete_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        let mut entries = self.entries.lock().unwrap();
        let before = entries.len();
        entries.retain(|key, _| !key.starts_with(prefix));
        Ok((before - entries.len()) as u64)
    }
}

/// A context at DEBUG level with a redactor that knows `secret`.
pub fn context(cache: Arc<dyn Cache>, secrets: &[Value]) -> StepContext {
    StepContext::new(
        "isapp-test",
        "Step",
        1,
        0,
        StepLogger::new("Step", 1, 10, Redactor::new(secrets.iter())),
        cache,
        std::time::Instant::now() + std::time::Duration::from_secs(60),
    )
}

/// Runs one attempt as the runtime does and returns its result and its log.
pub async fn run(
    step: &dyn StepType,
    parameters: Value,
) -> (Result<StepOutput, StepError>, Vec<LogEntry>) {
    run_in(
        step,
        parameters,
        &context(Arc::new(MemoryCache::default()), &[]),
    )
    .await
}

pub async fn run_in(
    step: &dyn StepType,
    parameters: Value,
    ctx: &StepContext,
) -> (Result<StepOutput, StepError>, Vec<LogEntry>) {
    let result = step.execute(parameters, ctx).await;
    (result, ctx.log.drain())
}

/// The output value of a successful attempt without warnings.
pub async fn ok(step: &dyn StepType, parameters: Value) -> Value {
    match run(step, parameters).await.0 {
        Ok(output) => {
            assert!(
                output.warnings.is_empty(),
                "warnings: {:?}",
                output.warnings
            );
            output.value
        }
        Err(e) => panic!("step failed: {e:?}"),
    }
}

/// The error of a failed attempt.
pub async fn err(step: &dyn StepType, parameters: Value) -> StepError {
    match run(step, parameters).await.0 {
        Ok(output) => panic!("step succeeded: {output:?}"),
        Err(e) => e,
    }
}

pub fn messages(logs: &[LogEntry], level: LogLevel) -> Vec<&str> {
    logs.iter()
        .filter(|e| e.level == level)
        .map(|e| e.message.as_str())
        .collect()
}
