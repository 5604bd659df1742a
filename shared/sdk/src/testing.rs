//! Run a step type the way the runtime runs one attempt, without a store, a queue or an
//! application: references in the parameters resolve against the predecessor outputs,
//! app variables, configuration and secrets given here; the step's logs are collected at
//! DEBUG level; secrets are redacted from the output, the warnings, the error and the
//! logs exactly as a run redacts them; the attempt is abandoned at its timeout.
//!
//! ```
//! use sluice_sdk::prelude::*;
//! use sluice_sdk::testing::TestRun;
//!
//! struct Shout;
//!
//! #[derive(Deserialize, JsonSchema)]
//! #[serde(deny_unknown_fields)]
//! struct ShoutParams {
//!     text: String,
//! }
//!
//! #[async_trait]
//! impl TypedStep for Shout {
//!     const NAME: &'static str = "shout";
//!     const DESCRIPTION: &'static str = "Upper-cases a text.";
//!     const VERSION: &'static str = "0.1.0";
//!     type Params = ShoutParams;
//!
//!     async fn run(&self, p: ShoutParams, _: &StepContext) -> Result<StepOutput, StepError> {
//!         Ok(StepOutput::value(json!(p.text.to_uppercase())))
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let outcome = TestRun::new(Shout).params(json!({"text": "hi ${vars.who}"}))
//!     .var("who", json!("ada"))
//!     .run()
//!     .await;
//! assert_eq!(outcome.output(), &json!("HI ADA"));
//!
//! // Parameters that do not fit the type fail as the platform fails them.
//! let outcome = TestRun::new(Shout).params(json!({"txt": "hi"})).run().await;
//! assert!(matches!(outcome.error(), Some(StepError::InvalidParameters(_))));
//! # });
//! ```

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{json, Map, Value};
use sluice_core::model::LogEntry;
use sluice_core::ports::{Cache, CacheKeys, StoreError, MAX_CACHE_PAGE};
use sluice_core::redact::Redactor;
use sluice_core::reference::{self, ConfigValues, RunScope};
use sluice_core::report::{prepare_sections, ReportSection};
use sluice_core::step::{StepContext, StepError, StepLogger, StepOutput, StepType};

/// The timeout of a [`TestRun`] unless [`TestRun::timeout`] says otherwise: the
/// platform's default `timeout_seconds`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// One attempt of a step type, described by its builder methods and run by
/// [`TestRun::run`].
pub struct TestRun<S> {
    step: S,
    params: Value,
    steps: BTreeMap<String, Value>,
    vars: Map<String, Value>,
    config: BTreeMap<String, Value>,
    secrets: BTreeMap<String, Value>,
    attempt: u32,
    unit: u32,
    item: Option<Value>,
    timeout: Duration,
    cache: Arc<dyn Cache>,
}

impl<S: StepType> TestRun<S> {
    /// An attempt of `step` with no parameters (`{}`), attempt 1, a fresh
    /// [`MemoryCache`] and the [`DEFAULT_TIMEOUT`].
    ///
    /// ```
    /// # use sluice_sdk::testing::TestRun;
    /// # use sluice_sdk::prelude::*;
    /// # struct Noop;
    /// # #[async_trait] impl TypedStep for Noop {
    /// #     const NAME: &'static str = "noop"; const DESCRIPTION: &'static str = "";
    /// #     const VERSION: &'static str = "0.1.0"; type Params = Value;
    /// #     async fn run(&self, p: Value, _: &StepContext) -> Result<StepOutput, StepError> {
    /// #         Ok(StepOutput::value(p)) } }
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// assert_eq!(TestRun::new(Noop).run().await.output(), &json!({}));
    /// # });
    /// ```
    pub fn new(step: S) -> Self {
        Self {
            step,
            params: json!({}),
            steps: BTreeMap::new(),
            vars: Map::new(),
            config: BTreeMap::new(),
            secrets: BTreeMap::new(),
            attempt: 1,
            unit: 0,
            item: None,
            timeout: DEFAULT_TIMEOUT,
            cache: Arc::new(MemoryCache::default()),
        }
    }

    /// The step's `parameters` object as an application holds it: `${…}` references
    /// in it resolve against what the other builder methods give.
    pub fn params(mut self, params: Value) -> Self {
        self.params = params;
        self
    }

    /// The output of a step this one references as `${ID…}` (a predecessor).
    pub fn predecessor(mut self, id: &str, output: Value) -> Self {
        self.steps.insert(id.to_string(), output);
        self
    }

    /// An app variable (`${vars.NAME}`), after run overrides.
    pub fn var(mut self, name: &str, value: Value) -> Self {
        self.vars.insert(name.to_string(), value);
        self
    }

    /// A plain configuration variable (`${config.NAME}`).
    pub fn config(mut self, name: &str, value: Value) -> Self {
        self.config.insert(name.to_string(), value);
        self
    }

    /// An encrypted configuration variable (`${config.NAME}`): the step receives its
    /// value, and every form of it is redacted from what the attempt produces.
    pub fn secret(mut self, name: &str, value: Value) -> Self {
        self.secrets.insert(name.to_string(), value);
        self
    }

    /// The attempt number (from 1): a retry of the step is attempt 2.
    pub fn attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt;
        self
    }

    /// A unit of a `for_each` fan-out: its number and its `${item}`.
    pub fn item(mut self, unit: u32, item: Value) -> Self {
        self.unit = unit;
        self.item = Some(item);
        self
    }

    /// The step's `timeout_seconds`: the attempt fails, retryable, when it runs longer.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The cache the step reads and writes (to prepare entries or inspect them after).
    pub fn cache(mut self, cache: Arc<dyn Cache>) -> Self {
        self.cache = cache;
        self
    }

    /// Resolves the parameters and runs the attempt.
    pub async fn run(self) -> TestOutcome {
        let redactor = Redactor::new(self.secrets.values());
        let logger = StepLogger::new("Step", self.attempt, 10, redactor.clone());
        let mut config = ConfigValues {
            values: self.config,
            ..ConfigValues::default()
        };
        for (name, value) in self.secrets {
            config.values.insert(name.clone(), value);
            config.decrypted.push(name);
        }
        let scope = RunScope {
            config,
            vars: self.vars,
            run: json!({"id": "test-run", "application": "test"}),
            steps: self.steps,
            item: self.item,
        };
        let mut sections = Vec::new();
        let result = match reference::resolve_value(&self.params, &scope) {
            Err(e) => Err(StepError::Fatal(e.to_string())),
            Ok(params) => {
                let ctx = StepContext::new(
                    "test-run",
                    "Step",
                    self.attempt,
                    self.unit,
                    logger.clone(),
                    self.cache,
                    Instant::now() + self.timeout,
                );
                let result = tokio::time::timeout(self.timeout, self.step.execute(params, &ctx))
                    .await
                    .unwrap_or_else(|_| {
                        Err(StepError::Retryable(format!(
                            "timed out after {} seconds",
                            self.timeout.as_secs()
                        )))
                    });
                sections = ctx.take_reports();
                result
            }
        };
        let mut reports = Vec::new();
        let result = match result {
            Ok(output) => {
                let mut warnings: Vec<String> = output
                    .warnings
                    .iter()
                    .map(|w| redactor.redact_str(w))
                    .collect();
                // As a run stores them: redacted, bounded, a cut is a warning.
                let (prepared, cuts) = prepare_sections(sections, &redactor);
                reports = prepared;
                warnings.extend(cuts);
                Ok(StepOutput {
                    value: redactor.redact_value(&output.value),
                    warnings,
                })
            }
            Err(e) => Err(redact_error(&redactor, e)),
        };
        TestOutcome {
            result,
            logs: logger.drain(),
            reports,
        }
    }
}

fn redact_error(redactor: &Redactor, error: StepError) -> StepError {
    match error {
        StepError::Retryable(m) => StepError::Retryable(redactor.redact_str(&m)),
        StepError::Fatal(m) => StepError::Fatal(redactor.redact_str(&m)),
        StepError::InvalidParameters(m) => StepError::InvalidParameters(redactor.redact_str(&m)),
    }
}

/// What an attempt of a [`TestRun`] produced.
#[derive(Debug, Clone)]
pub struct TestOutcome {
    /// The step's output (its value and warnings), or how it failed.
    pub result: Result<StepOutput, StepError>,
    /// Its log entries, DEBUG and up.
    pub logs: Vec<LogEntry>,
    /// The report sections the run would store (redacted and bounded as a run stores
    /// them; none when the attempt failed, as a run keeps only a successful attempt's).
    pub reports: Vec<ReportSection>,
}

impl TestOutcome {
    /// The output value; panics, naming the error, when the attempt failed.
    pub fn output(&self) -> &Value {
        match &self.result {
            Ok(output) => &output.value,
            Err(e) => panic!("the step failed: {e:?}"),
        }
    }

    /// The warnings of a successful attempt (none when it failed).
    pub fn warnings(&self) -> &[String] {
        self.result.as_ref().map_or(&[], |o| o.warnings.as_slice())
    }

    /// How the attempt failed, if it did.
    pub fn error(&self) -> Option<&StepError> {
        self.result.as_ref().err()
    }

    /// The log messages, in order.
    pub fn log_messages(&self) -> Vec<String> {
        self.logs.iter().map(|e| e.message.clone()).collect()
    }
}

/// A [`Cache`] in memory, honouring time-to-live, for tests.
///
/// ```
/// use sluice_sdk::testing::MemoryCache;
/// use sluice_sdk::{json, Cache};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let cache = MemoryCache::default();
/// cache.put("token", &json!("abc"), None).await.unwrap();
/// assert_eq!(cache.get("token").await.unwrap(), Some(json!("abc")));
/// assert_eq!(cache.list("to", 10, None).await.unwrap().keys, ["token"]);
/// # });
/// ```
#[derive(Default)]
pub struct MemoryCache {
    // Ordered, so that listings come out in key order as from the real stores.
    entries: Mutex<BTreeMap<String, (Value, Option<Instant>)>>,
}

fn is_live(expires: &Option<Instant>, now: Instant) -> bool {
    expires.is_none_or(|at| at > now)
}

#[async_trait]
impl Cache for MemoryCache {
    async fn get(&self, key: &str) -> Result<Option<Value>, StoreError> {
        let mut entries = self.entries.lock().expect("cache");
        match entries.get(key) {
            Some((_, expires)) if !is_live(expires, Instant::now()) => {
                entries.remove(key);
                Ok(None)
            }
            Some((value, _)) => Ok(Some(value.clone())),
            None => Ok(None),
        }
    }

    async fn put(&self, key: &str, value: &Value, ttl: Option<Duration>) -> Result<(), StoreError> {
        let expires = ttl.map(|ttl| Instant::now() + ttl);
        self.entries
            .lock()
            .expect("cache")
            .insert(key.to_string(), (value.clone(), expires));
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let removed = self.entries.lock().expect("cache").remove(key);
        Ok(removed.is_some_and(|(_, expires)| is_live(&expires, Instant::now())))
    }

    async fn list(
        &self,
        prefix: &str,
        limit: usize,
        after: Option<&str>,
    ) -> Result<CacheKeys, StoreError> {
        let limit = limit.clamp(1, MAX_CACHE_PAGE);
        let now = Instant::now();
        let entries = self.entries.lock().expect("cache");
        let mut keys: Vec<String> = entries
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .filter(|(key, (_, expires))| {
                after.is_none_or(|after| key.as_str() > after) && is_live(expires, now)
            })
            .map(|(key, _)| key.clone())
            .take(limit + 1)
            .collect();
        let more = keys.len() > limit;
        keys.truncate(limit);
        let next_after = if more { keys.last().cloned() } else { None };
        Ok(CacheKeys { keys, next_after })
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        let now = Instant::now();
        let mut entries = self.entries.lock().expect("cache");
        let mut deleted = 0;
        entries.retain(|key, (_, expires)| {
            if !key.starts_with(prefix) {
                return true;
            }
            deleted += u64::from(is_live(expires, now));
            false
        });
        Ok(deleted)
    }
}
