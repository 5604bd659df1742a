//! The runtime core: transitions (load, apply, compare-and-swap) and effects.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{SubsecRound, Utc};
use serde_json::{json, Map, Value};
use sluice_core::engine::{self, Applied, AttemptResult, Effect, Event, Plan};
use sluice_core::logs;
use sluice_core::model::{LogEntry, Run, RunState, StepState};
use sluice_core::operators;
use sluice_core::ports::{
    Cache, DefinitionStore, OutputKey, Queue, QueueError, RunStore, SecretError, SecretStore,
    StoreError, TaskMessage,
};
use sluice_core::step::StepRegistry;
use sluice_core::validate::StepCatalog;
use sluice_core::Invalid;
use tokio::sync::broadcast;

/// The ports a runtime works through.
#[derive(Clone)]
pub struct Backend {
    pub definitions: Arc<dyn DefinitionStore>,
    pub runs: Arc<dyn RunStore>,
    pub queue: Arc<dyn Queue>,
    pub secrets: Arc<dyn SecretStore>,
    pub cache: Arc<dyn Cache>,
}

/// Settings of a runtime.
#[derive(Clone)]
pub struct RuntimeConfig {
    /// Queue of a step type (one queue for all when embedded, one per type on AWS).
    pub queue_for: Arc<dyn Fn(&str) -> String + Send + Sync>,
    /// How long runs, outputs and logs are kept.
    pub result_expires: chrono::Duration,
    /// How long decrypted secrets are reused before they are read again.
    pub secret_ttl: Duration,
    /// Outputs of at most this many bytes of JSON are kept in the run record, so that
    /// finishing a step is one write and successors read them with the run...
    pub inline_output_bytes: usize,
    /// ...while the run's inline outputs stay within this many bytes in total (the run
    /// record is rewritten by every transition; on DynamoDB each started KiB of it is a
    /// write unit).
    pub inline_outputs_per_run_bytes: usize,
    /// How long past its step's timeout a worker keeps a received message invisible, so
    /// that the attempt of a worker that died is retried at about timeout + margin. More
    /// than the claim's lease grace (`sluice_core::engine::LEASE_GRACE_MS`), so that the
    /// redelivered message finds the dead holder's lease expired.
    pub visibility_margin: Duration,
    /// The time transitions are stamped with and leases are judged by (tests move it).
    pub clock: Arc<dyn Fn() -> chrono::DateTime<Utc> + Send + Sync>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            queue_for: Arc::new(|_| "steps".to_string()),
            result_expires: chrono::Duration::seconds(
                sluice_core::model::DEFAULT_RESULT_EXPIRES_SECONDS,
            ),
            secret_ttl: Duration::from_secs(30),
            inline_output_bytes: 256,
            inline_outputs_per_run_bytes: 2048,
            visibility_margin: DEFAULT_VISIBILITY_MARGIN,
            clock: Arc::new(Utc::now),
        }
    }
}

/// The default [`RuntimeConfig::visibility_margin`]: the lease grace plus time for the
/// claim and for recording the result.
pub const DEFAULT_VISIBILITY_MARGIN: Duration = Duration::from_secs(45);

/// Failures of the runtime itself (not of steps, which end in their run record).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(#[from] Invalid),
}

/// A change of a run, broadcast to local watchers (live progress, `--follow`, `?wait`).
#[derive(Debug, Clone)]
pub struct Progress {
    pub run: Arc<Run>,
}

/// Decrypted values of one configuration.
pub(crate) type Secrets = Arc<std::collections::BTreeMap<String, Value>>;

/// Drives runs through the engine.
pub struct Runtime {
    pub(crate) backend: Backend,
    pub(crate) registry: StepRegistry,
    pub(crate) catalog: StepCatalog,
    pub(crate) config: RuntimeConfig,
    plans: PlanCache,
    pub(crate) secret_cache: Mutex<HashMap<String, (Instant, Secrets)>>,
    progress: broadcast::Sender<Progress>,
}

/// Most plans kept in memory (a plan is about the size of its application document).
pub(crate) const PLAN_CACHE_LIMIT: usize = 1_000;

/// The plans of recently active runs, least recently used evicted first, so that memory
/// stays flat however many runs start. A plan evicted too early only costs a read of the
/// run's snapshot.
pub(crate) struct PlanCache {
    plans: Mutex<lru::LruCache<String, Arc<Plan>>>,
}

impl PlanCache {
    pub(crate) fn new(limit: usize) -> Self {
        let limit = std::num::NonZeroUsize::new(limit).unwrap_or(std::num::NonZeroUsize::MIN);
        Self {
            plans: Mutex::new(lru::LruCache::new(limit)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, lru::LruCache<String, Arc<Plan>>> {
        // A panic while holding it leaves a consistent map: take it over.
        self.plans.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn get(&self, run_id: &str) -> Option<Arc<Plan>> {
        self.lock().get(run_id).cloned()
    }

    pub(crate) fn insert(&self, run_id: &str, plan: Arc<Plan>) {
        self.lock().put(run_id.to_string(), plan);
    }

    /// Drops the plan of a run that ended (late duplicates reload it from the store).
    pub(crate) fn forget(&self, run_id: &str) {
        self.lock().pop(run_id);
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

impl Runtime {
    pub fn new(backend: Backend, registry: StepRegistry, config: RuntimeConfig) -> Arc<Self> {
        let catalog = StepCatalog::new(&registry);
        let (progress, _) = broadcast::channel(4096);
        Arc::new(Self {
            backend,
            registry,
            catalog,
            config,
            plans: PlanCache::new(PLAN_CACHE_LIMIT),
            secret_cache: Mutex::default(),
            progress,
        })
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    pub fn registry(&self) -> &StepRegistry {
        &self.registry
    }

    pub fn catalog(&self) -> &StepCatalog {
        &self.catalog
    }

    /// Every queue this runtime's step types (and delayed operators) use.
    pub fn queues(&self) -> Vec<String> {
        let mut queues: Vec<String> = self
            .registry
            .names()
            .chain([operators::TRANSFORM])
            .map(|name| (self.config.queue_for)(name))
            .collect();
        queues.sort();
        queues.dedup();
        queues
    }

    /// Local run changes, for watchers.
    pub fn subscribe(&self) -> broadcast::Receiver<Progress> {
        self.progress.subscribe()
    }

    /// The plan (application snapshot and graph) a run executes.
    pub(crate) async fn plan(&self, run_id: &str) -> Result<Arc<Plan>, RuntimeError> {
        if let Some(plan) = self.plans.get(run_id) {
            return Ok(plan);
        }
        let app = self
            .backend
            .runs
            .get_snapshot(run_id)
            .await?
            .ok_or_else(|| {
                RuntimeError::NotFound(format!("run \"{run_id}\" has no application snapshot"))
            })?;
        let plan = Arc::new(Plan::new(app));
        self.plans.insert(run_id, plan.clone());
        Ok(plan)
    }

    /// The plan a run executes (its application snapshot with the graph).
    pub async fn plan_of(&self, run: &Run) -> Result<Arc<Plan>, RuntimeError> {
        self.plan(&run.id).await
    }

    pub(crate) fn remember_plan(&self, run_id: &str, plan: Arc<Plan>) {
        self.plans.insert(run_id, plan);
    }

    /// Plans held in memory (for tests of the bound).
    #[doc(hidden)]
    pub fn cached_plans(&self) -> usize {
        self.plans.len()
    }

    pub async fn get_run(&self, run_id: &str) -> Result<Run, RuntimeError> {
        self.backend
            .runs
            .get_run(run_id)
            .await?
            .ok_or_else(|| RuntimeError::NotFound(format!("run \"{run_id}\" not found")))
    }

    /// Loads a run, applies an event and stores the result with a compare-and-swap,
    /// retrying on conflicts with concurrent transitions.
    pub(crate) async fn transition(
        &self,
        run_id: &str,
        event: &Event,
    ) -> Result<(Run, Applied), RuntimeError> {
        self.transition_from(run_id, event, None).await
    }

    /// Like [`Runtime::transition`], starting from `hint`, the run as this process last
    /// stored it: it saves a read when nobody else changed the run since, and a stale
    /// hint only costs a compare-and-swap conflict and a fresh read.
    pub(crate) async fn transition_from(
        &self,
        run_id: &str,
        event: &Event,
        mut hint: Option<Run>,
    ) -> Result<(Run, Applied), RuntimeError> {
        loop {
            let (mut run, from_hint) = match hint.take() {
                Some(run) => (run, true),
                None => (self.get_run(run_id).await?, false),
            };
            let plan = self.plan(run_id).await?;
            let expected = run.version;
            // Microseconds are all the logs need (`sluice_core::logs::sequence`), and
            // fewer random digits keep the compressed record small.
            let now = (self.config.clock)().trunc_subsecs(6);
            let applied = engine::apply(&plan, &mut run, event, now);
            if !applied.changed && from_hint {
                // A stale hint can make a real event look like a duplicate (e.g. the
                // finish of an inline operator claimed after the hint was taken); no
                // compare-and-swap catches that, so decide "no change" on a fresh read.
                continue;
            }
            if applied.changed {
                run.version = expected + 1;
                match self.backend.runs.update_run(&run, expected).await {
                    Ok(()) => {
                        if run.state.is_terminal() {
                            self.plans.forget(run_id);
                        }
                        self.publish(&run)
                    }
                    Err(StoreError::Conflict) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            return Ok((run, applied));
        }
    }

    pub(crate) fn publish(&self, run: &Run) {
        if self.progress.receiver_count() > 0 {
            let _ = self.progress.send(Progress {
                run: Arc::new(run.clone()),
            });
        }
    }

    /// Applies an event and carries out every effect, including the events effects lead
    /// to (evaluations, inline operators, parent notifications), until none is left.
    pub async fn process(&self, run_id: &str, event: Event) -> Result<(), RuntimeError> {
        self.process_from(run_id, event, None).await
    }

    /// Like [`Runtime::process`], starting from `hint`, the run as this process last
    /// stored it.
    pub(crate) async fn process_from(
        &self,
        run_id: &str,
        event: Event,
        hint: Option<Run>,
    ) -> Result<(), RuntimeError> {
        let mut latest: HashMap<String, Run> = HashMap::new();
        if let Some(run) = hint {
            latest.insert(run.id.clone(), run);
        }
        let mut work = VecDeque::from([(run_id.to_string(), event)]);
        while let Some((run_id, event)) = work.pop_front() {
            let hint = latest.remove(&run_id);
            let (run, applied) = self.transition_from(&run_id, &event, hint).await?;
            self.carry_out(&run, applied.effects, &mut work).await?;
            latest.insert(run_id, run);
        }
        Ok(())
    }

    pub(crate) async fn carry_out(
        &self,
        run: &Run,
        effects: Vec<Effect>,
        work: &mut VecDeque<(String, Event)>,
    ) -> Result<(), RuntimeError> {
        for effect in effects {
            match effect {
                Effect::Evaluate { step } => {
                    let decision = self.evaluate(run, &step).await?;
                    work.push_back((run.id.clone(), Event::Evaluated { step, decision }));
                }
                Effect::Dispatch {
                    step,
                    unit,
                    attempt,
                    delay_ms,
                } => {
                    let plan = self.plan(&run.id).await?;
                    let step_type = plan
                        .app
                        .step(&step)
                        .map(|s| s.step_type.clone())
                        .unwrap_or_default();
                    let message = TaskMessage {
                        run_id: run.id.clone(),
                        step_id: step,
                        unit,
                        attempt,
                    };
                    if operators::is_operator(&step_type) && delay_ms == 0 {
                        // Operators run here, not as a function; no message needed.
                        if let Some(event) = self.run_claimed(&message, work).await? {
                            work.push_back((run.id.clone(), event));
                        }
                    } else {
                        let queue = (self.config.queue_for)(&step_type);
                        self.backend
                            .queue
                            .send(&queue, &message, Duration::from_millis(delay_ms))
                            .await?;
                    }
                }
                Effect::RevokeChild { run_id } => work.push_back((run_id, Event::Revoke)),
                Effect::RunFinished { state } => {
                    if let Some(parent) = run.parent.as_ref().filter(|p| p.blocking) {
                        if let Some(event) = self.child_finished(run, state, parent).await? {
                            // The child may end before its parent recorded starting it.
                            if let Event::Finished {
                                step,
                                unit,
                                attempt,
                                ..
                            } = &event
                            {
                                let started = Event::ChildStarted {
                                    step: step.clone(),
                                    unit: *unit,
                                    attempt: *attempt,
                                    child_run: run.id.clone(),
                                };
                                work.push_back((parent.run_id.clone(), started));
                            }
                            work.push_back((parent.run_id.clone(), event));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The end of a blocking child: store the parent step's output, then finish it.
    async fn child_finished(
        &self,
        child: &Run,
        state: RunState,
        parent: &sluice_core::model::ParentRef,
    ) -> Result<Option<Event>, RuntimeError> {
        let Some(parent_run) = self.backend.runs.get_run(&parent.run_id).await? else {
            return Ok(None);
        };
        let Some(step) = parent_run.step(&parent.step_id) else {
            return Ok(None);
        };
        let Some(unit) = step.units.first() else {
            return Ok(None);
        };
        if step.state.is_terminal() || step.child_run.as_deref().is_some_and(|c| c != child.id) {
            return Ok(None);
        }
        let mut outputs = Map::new();
        for s in &child.steps {
            outputs.insert(s.id.clone(), self.read_output(child, &s.id).await?);
        }
        let output = json!({"run_id": child.id, "state": state.as_str(), "outputs": outputs});
        let key = OutputKey {
            run_id: parent_run.id.clone(),
            step_id: parent.step_id.clone(),
            unit: 0,
        };
        self.backend
            .runs
            .put_output(&key, &output, parent_run.expires_at)
            .await?;
        let result = if state == RunState::Success {
            AttemptResult::Success { warnings: vec![] }
        } else {
            AttemptResult::Failure {
                error: format!("child run {} ended {}", child.id, state.as_str()),
                retryable: true,
            }
        };
        Ok(Some(Event::Finished {
            step: parent.step_id.clone(),
            unit: 0,
            attempt: unit.attempt,
            result,
            output: None,
        }))
    }

    /// A step's output as successors see it: `null` when skipped or absent, the list of
    /// item outputs for a fan-out.
    pub async fn read_output(&self, run: &Run, step_id: &str) -> Result<Value, RuntimeError> {
        let Some(step) = run.step(step_id) else {
            return Ok(Value::Null);
        };
        if !step.state.succeeded() && step.state != StepState::Failed {
            return Ok(Value::Null);
        }
        let output_of = |unit: u32| async move {
            if let Some(inline) = step.units.get(unit as usize).and_then(|u| u.output.clone()) {
                return Ok::<_, RuntimeError>(inline);
            }
            let key = OutputKey {
                run_id: run.id.clone(),
                step_id: step_id.to_string(),
                unit,
            };
            Ok(self
                .backend
                .runs
                .get_output(&key)
                .await?
                .unwrap_or(Value::Null))
        };
        match step.fan_out {
            Some(n) => {
                let mut items = Vec::with_capacity(n as usize);
                for unit in 0..n {
                    items.push(output_of(unit).await?);
                }
                Ok(Value::Array(items))
            }
            None => output_of(0).await,
        }
    }

    /// Whether a successful attempt's `output` goes into the run record (see
    /// [`RuntimeConfig::inline_output_bytes`]) rather than to the output store.
    pub(crate) fn keeps_inline(&self, run: &Run, output: &Value) -> bool {
        let Some(own) = json_len_within(output, self.config.inline_output_bytes) else {
            return false;
        };
        let budget = self.config.inline_outputs_per_run_bytes;
        let mut kept = own;
        for inline in run
            .steps
            .iter()
            .flat_map(|s| &s.units)
            .filter_map(|u| u.output.as_ref())
        {
            match json_len_within(inline, budget - kept.min(budget)) {
                Some(len) => kept += len,
                None => return false,
            }
        }
        kept <= budget
    }

    /// Up to `limit` (0: 1000) log entries of `run` after sequence number `after`: the
    /// stored ones merged with the `FLOW` entries derived from this record of the run
    /// (see [`sluice_core::logs`]). Read the run before its logs.
    pub async fn logs(
        &self,
        run: &Run,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, LogEntry)>, RuntimeError> {
        let limit = if limit == 0 { 1000 } else { limit };
        let stored = self.backend.runs.get_logs(&run.id, after, limit).await?;
        Ok(logs::merge(stored, logs::derived_flow(run), after, limit))
    }

    /// Every step's output, by id (for `--output json` and the API).
    pub async fn outputs(&self, run: &Run) -> Result<Map<String, Value>, RuntimeError> {
        let mut outputs = Map::new();
        for step in &run.steps {
            outputs.insert(step.id.clone(), self.read_output(run, &step.id).await?);
        }
        Ok(outputs)
    }

    /// Re-issues the outstanding work of every unfinished run. `taken_over_at` (embedded:
    /// the time this process took the data-directory lock, so every earlier claim was
    /// made by a process that is now dead) also re-queues the attempts that were running
    /// when the previous process died. Call it before this process's workers poll; claims
    /// made at or after `taken_over_at` are never reset, so a live worker's attempt is
    /// never sent a second time.
    pub async fn resume_all(
        &self,
        taken_over_at: Option<chrono::DateTime<Utc>>,
    ) -> Result<Vec<String>, RuntimeError> {
        let ids = self.backend.runs.unfinished_runs().await?;
        for id in &ids {
            self.resume(id, taken_over_at).await?;
        }
        Ok(ids)
    }

    /// [`Runtime::resume_all`] for one run.
    pub async fn resume(
        &self,
        run_id: &str,
        taken_over_at: Option<chrono::DateTime<Utc>>,
    ) -> Result<(), RuntimeError> {
        let run = self.get_run(run_id).await?;
        let event = match (run.state, taken_over_at) {
            (RunState::Pending, _) => Event::Start,
            (_, Some(claimed_before)) => Event::Recover { claimed_before },
            (_, None) => Event::Resend,
        };
        self.process(run_id, event).await
    }
}

/// The length of `value` as compact JSON, or `None` once it exceeds `limit`: a large
/// output is not serialized whole just to learn that it is too large to keep inline.
fn json_len_within(value: &Value, limit: usize) -> Option<usize> {
    struct Bounded {
        len: usize,
        limit: usize,
    }
    impl std::io::Write for Bounded {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.len += bytes.len();
            if self.len > self.limit {
                return Err(std::io::Error::other("over the limit"));
            }
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Bounded { len: 0, limit };
    serde_json::to_writer(&mut counter, value).ok()?;
    Some(counter.len)
}

#[cfg(test)]
mod tests {
    use super::json_len_within;
    use serde_json::json;

    #[test]
    fn json_length_is_exact_within_the_limit_and_none_beyond() {
        let value = json!({"a": [1, 2, "three"]});
        let len = serde_json::to_vec(&value).unwrap().len();
        assert_eq!(json_len_within(&value, len), Some(len));
        assert_eq!(json_len_within(&value, len - 1), None);
        assert_eq!(json_len_within(&json!(null), 4), Some(4));
    }
}
