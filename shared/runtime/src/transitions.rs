//! Transitions, the lowest layer that acts: load a run (or take this process's copy of
//! it) and its plan, apply an engine event, store the result with a compare-and-swap,
//! keep it as the run's copy, publish it, and carry out the
//! effects that need no step execution (queue sends, child revocations, a blocking
//! child's end). Effects that do need execution (evaluating `when` / `for_each`, an
//! inline operator) are handed back as a [`FollowUp`] to the caller, which drives them
//! (`execute.rs`): nothing here calls a layer above.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::SubsecRound;
use serde_json::{json, Map};
use sluice_core::alert::{self, AlertStart};
use sluice_core::engine::{self, Applied, AttemptResult, Effect, Event, Plan};
use sluice_core::model::{ParentRef, Run, RunState};
use sluice_core::operators;
use sluice_core::ports::{OutputKey, StoreError, TaskMessage};

use crate::runtime::{Progress, Runtime, RuntimeError};

/// What an effect leaves to the caller once this layer carried out its part.
#[derive(Debug)]
pub(crate) enum FollowUp {
    /// Apply these events next, in order, each to the run it names.
    Apply(Vec<(String, Event)>),
    /// Evaluate this ready step's `when` and `for_each`, then apply the decision.
    Evaluate { step: String },
    /// Execute this operator attempt here and now, with no queue hop.
    Inline(TaskMessage),
    /// Send this message to `queue` after `delay`, with the transition's other sends.
    Send {
        queue: String,
        message: TaskMessage,
        delay: Duration,
    },
    /// The run ended: apply these events (a blocking parent's), then start this alert
    /// run (`on_failure` / `on_warning`), which needs run creation, a layer above.
    Ended {
        events: Vec<(String, Event)>,
        alert: Option<Box<AlertStart>>,
    },
}

/// A run's own fields with only the named steps (whole, units included): what an
/// attempt or an evaluation reads, without copying the rest of a large run. A view
/// lacks the other steps, so it is only ever read (by step id), never applied to or
/// stored.
pub(crate) fn view(run: &Run, plan: &Plan, steps: &BTreeSet<String>) -> Run {
    let mut view = run.header();
    view.steps = steps
        .iter()
        .filter_map(|id| plan.index_of(id).and_then(|i| run.steps.get(i)))
        .cloned()
        .collect();
    view
}

/// Most runs a [`RunCopies`] keeps, and most steps plus units over all of them.
const COPIES_RUNS: usize = 256;
const COPIES_PARTS: usize = 400_000;

/// The runs this process stored last, as stored, by id: the next transition of a run
/// starts from its copy and changes it in place, instead of reading (and copying) the
/// whole run from the store. A transition takes the copy out and puts the result back
/// once stored, so a failed or conflicting write leaves no copy behind; a stale copy
/// (another process wrote the run) costs a compare-and-swap conflict and a fresh read.
/// Ended runs are not kept; memory is bounded in runs and in steps plus units.
pub(crate) struct RunCopies {
    inner: Mutex<CopiesInner>,
}

struct CopiesInner {
    runs: lru::LruCache<String, Arc<Run>>,
    parts: usize,
}

fn parts_of(run: &Run) -> usize {
    run.steps.len() + run.steps.iter().map(|s| s.units.len()).sum::<usize>()
}

impl Default for RunCopies {
    fn default() -> Self {
        let limit = std::num::NonZeroUsize::new(COPIES_RUNS).unwrap_or(std::num::NonZeroUsize::MIN);
        Self {
            inner: Mutex::new(CopiesInner {
                runs: lru::LruCache::new(limit),
                parts: 0,
            }),
        }
    }
}

impl RunCopies {
    fn lock(&self) -> std::sync::MutexGuard<'_, CopiesInner> {
        // A panic while holding it leaves a consistent map: take it over.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the copy of a run out (the caller puts back what it stored).
    pub(crate) fn take(&self, run_id: &str) -> Option<Arc<Run>> {
        let mut inner = self.lock();
        let run = inner.runs.pop(run_id)?;
        inner.parts -= parts_of(&run);
        Some(run)
    }

    /// The copy of a run, left in place (to read; a transition takes it).
    pub(crate) fn peek(&self, run_id: &str) -> Option<Arc<Run>> {
        self.lock().runs.peek(run_id).cloned()
    }

    /// Forgets the copy of a run (created again, or changed elsewhere).
    pub(crate) fn forget(&self, run_id: &str) {
        drop(self.take(run_id));
    }

    /// Keeps `run`, as stored, for its next transition.
    pub(crate) fn put(&self, run: Arc<Run>) {
        let mut inner = self.lock();
        if let Some(old) = inner.runs.pop(&run.id) {
            inner.parts -= parts_of(&old);
        }
        if run.state.is_terminal() {
            return;
        }
        inner.parts += parts_of(&run);
        if let Some((_, evicted)) = inner.runs.push(run.id.clone(), run) {
            inner.parts -= parts_of(&evicted);
        }
        while inner.parts > COPIES_PARTS {
            let Some((_, evicted)) = inner.runs.pop_lru() else {
                break;
            };
            inner.parts -= parts_of(&evicted);
        }
    }
}

/// Stripes of turns: a run's transitions in this process take turns on the stripe of its
/// id. Concurrent transitions of one run would all but one lose the compare-and-swap and
/// start over (each a read and an engine step wasted), which in a wide fan-out is most
/// of them; taking turns costs nothing else (the store commits one write at a time
/// anyway). A fixed number of stripes keeps memory flat however many runs there are.
pub(crate) struct RunTurns {
    stripes: Vec<tokio::sync::Mutex<()>>,
}

const RUN_TURN_STRIPES: usize = 256;

impl Default for RunTurns {
    fn default() -> Self {
        Self {
            stripes: (0..RUN_TURN_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }
    }
}

impl RunTurns {
    async fn take(&self, run_id: &str) -> tokio::sync::MutexGuard<'_, ()> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        run_id.hash(&mut hasher);
        let stripe = (hasher.finish() % self.stripes.len() as u64) as usize;
        self.stripes[stripe].lock().await
    }
}

/// Waits a random time before a transition that lost a compare-and-swap tries again:
/// up to 4 ms after the first loss, doubling to at most 128 ms. Workers of other
/// processes (Lambda containers of a wide fan-out) write the same run; retrying at once
/// would have them collide again and again, each collision a wasted read and write.
async fn conflict_backoff(lost: u32) {
    use std::hash::{BuildHasher, Hasher};
    let ceiling_ms = 4u64 << lost.saturating_sub(1).min(5);
    // A fresh `RandomState` is randomly keyed: jitter without a random-number crate.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    tokio::time::sleep(Duration::from_micros(random % (ceiling_ms * 1000))).await;
}

impl Runtime {
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
        // A new run: a copy kept under its id (an earlier run of the same id) is not it.
        self.copies.forget(run_id);
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
    /// retrying on conflicts with concurrent transitions. Starts from this process's
    /// copy of the run when it holds one ([`RunCopies`]; kept across pieces of work only
    /// on a store this process is normally the only writer of, see
    /// [`Runtime::end_of_work`]); the stored version decides whether that copy was
    /// current. Returns the run as stored, shared
    /// with the copy: drop it soon, or the next transition has to copy the run to change
    /// it.
    pub(crate) async fn transition(
        &self,
        run_id: &str,
        event: &Event,
    ) -> Result<(Arc<Run>, Applied), RuntimeError> {
        let _turn = self.run_turns.take(run_id).await;
        let mut copy = self.copies.take(run_id);
        let mut lost = 0;
        loop {
            let (mut run, from_copy) = match copy.take() {
                Some(run) => (run, true),
                None => (Arc::new(self.get_run(run_id).await?), false),
            };
            let plan = self.plan(run_id).await?;
            let expected = run.version;
            // Microseconds are all the logs need (`sluice_core::logs::sequence`), and
            // fewer random digits keep the compressed record small.
            let now = (self.config.clock)().trunc_subsecs(6);
            // In place unless someone still holds the run (a watcher, an attempt).
            let changing = Arc::make_mut(&mut run);
            let applied = engine::apply(&plan, changing, event, now);
            if !applied.changed && from_copy {
                // A stale copy (another process changed the run) can make a real event
                // look like a duplicate; no compare-and-swap catches that, so decide
                // "no change" on a fresh read.
                continue;
            }
            if applied.changed {
                changing.version = expected + 1;
                // Computed (and kept in the steps' tallies) while the run can change.
                changing.inline_output_bytes();
                let stored = self
                    .backend
                    .runs
                    .update_run_delta(&run, expected, &applied.delta)
                    .await;
                match stored {
                    Ok(()) => {
                        if run.state.is_terminal() {
                            self.plans.forget(run_id);
                        }
                        self.publish_shared(&run)
                    }
                    // A stale copy is no contention: read again at once.
                    Err(StoreError::Conflict) if from_copy => continue,
                    Err(StoreError::Conflict) => {
                        lost += 1;
                        conflict_backoff(lost).await;
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            self.copies.put(run.clone());
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

    /// Ends a piece of work (a delivery, an event from outside) that changed these
    /// runs: on a store that other processes write as well (`RunStore::sole_writer` is
    /// false: Lambda containers), the copies this work kept are let go, since by the
    /// next piece of work another process has likely changed the run, and a stale copy
    /// costs a failed conditional write where a read is cheaper. Within one piece of
    /// work (a claim, the attempt, its end) the copy saves a read per transition.
    pub(crate) fn end_of_work(&self, runs: &[String]) {
        if !self.backend.runs.sole_writer() {
            for run_id in runs {
                self.copies.forget(run_id);
            }
        }
    }

    /// Like [`Runtime::publish`] without a copy (a watcher that keeps it makes the next
    /// transition copy the run instead).
    fn publish_shared(&self, run: &Arc<Run>) {
        if self.progress.receiver_count() > 0 {
            let _ = self.progress.send(Progress { run: run.clone() });
        }
    }

    /// What carrying out `effects` reads of `run`: the whole run when it ended (its
    /// end notice and alert read every step), otherwise a [`view`] with the steps the
    /// evaluations among them see. Taken so that the stored run can be let go before
    /// the effects' I/O, while other transitions of the run change the copy in place.
    pub(crate) async fn run_for_effects(
        &self,
        run: Arc<Run>,
        effects: &[Effect],
    ) -> Result<Run, RuntimeError> {
        if run.state.is_terminal()
            || effects
                .iter()
                .any(|e| matches!(e, Effect::RunFinished { .. }))
        {
            return Ok(Arc::unwrap_or_clone(run));
        }
        let plan = self.plan(&run.id).await?;
        let mut steps = BTreeSet::new();
        for effect in effects {
            if let Effect::Evaluate { step } = effect {
                if let Some(spec) = plan.app.step(step) {
                    steps.extend(crate::resolve::visible_steps(&plan, spec, true));
                }
            }
        }
        Ok(view(&run, &plan, &steps))
    }

    /// Carries out one effect of a stored transition as far as it needs no execution.
    pub(crate) async fn carry_out_effect(
        &self,
        run: &Run,
        effect: Effect,
    ) -> Result<FollowUp, RuntimeError> {
        match effect {
            Effect::Evaluate { step } => Ok(FollowUp::Evaluate { step }),
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
                    lane: Some(sluice_core::ports::run_lane(run)),
                };
                if operators::is_operator(&step_type) && delay_ms == 0 {
                    // Operators run here, not as a function; no message needed.
                    return Ok(FollowUp::Inline(message));
                }
                // A delayed operator waits on the transform queue, whose worker runs every
                // operator (on AWS only the transform function has a queue among them).
                let queue = if operators::is_operator(&step_type) {
                    (self.config.queue_for)(operators::TRANSFORM)
                } else {
                    (self.config.queue_for)(&step_type)
                };
                // A step type this process executes: a local worker may take it itself.
                if delay_ms == 0
                    && self.registry.get(&step_type).is_some()
                    && self.hand_off(&queue, &message).await?
                {
                    return Ok(FollowUp::Apply(Vec::new()));
                }
                Ok(FollowUp::Send {
                    queue,
                    message,
                    delay: Duration::from_millis(delay_ms),
                })
            }
            Effect::RevokeChild { run_id } => Ok(FollowUp::Apply(vec![(run_id, Event::Revoke)])),
            Effect::RunFinished { state } => {
                let mut events = Vec::new();
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
                            events.push((parent.run_id.clone(), started));
                        }
                        events.push((parent.run_id.clone(), event));
                    }
                }
                let alert = self.alert_of_ended(run).await?.map(Box::new);
                Ok(FollowUp::Ended { events, alert })
            }
        }
    }

    /// The alert an ended run's application asks for, if any. The snapshot is read only
    /// for a run that may alert (failed, or succeeded with warnings), and not cached:
    /// the run has ended.
    async fn alert_of_ended(&self, run: &Run) -> Result<Option<AlertStart>, RuntimeError> {
        if !alert::may_alert(run) {
            return Ok(None);
        }
        let app = match self.plans.get(&run.id) {
            Some(plan) => plan.app.clone(),
            None => match self.backend.runs.get_snapshot(&run.id).await? {
                Some(app) => app,
                None => return Ok(None),
            },
        };
        Ok(alert::alert_for(&app, run))
    }

    /// The end of a blocking child: store the parent step's output, then finish it.
    async fn child_finished(
        &self,
        child: &Run,
        state: RunState,
        parent: &ParentRef,
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
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;
    use serde_json::{json, Value};
    use sluice_core::engine::Event;
    use sluice_core::model::{Application, UnitState};
    use sluice_core::step::{StepContext, StepError, StepOutput, StepRegistry, StepType};

    use super::FollowUp;
    use crate::{Runtime, RuntimeConfig, StartRequest};

    struct Noop;

    #[async_trait]
    impl StepType for Noop {
        fn name(&self) -> &str {
            "noop"
        }
        fn description(&self) -> &str {
            "does nothing"
        }
        fn parameter_schema(&self) -> Value {
            json!({"type": "object"})
        }
        async fn execute(&self, _: Value, _: &StepContext) -> Result<StepOutput, StepError> {
            Ok(StepOutput::value(Value::Null))
        }
    }

    /// The copies of runs stay within their bound, hand a run out once, and never keep
    /// an ended run.
    #[test]
    fn run_copies_are_bounded_taken_once_and_drop_ended_runs() {
        use std::sync::Arc;

        use sluice_core::engine::Plan;
        use sluice_core::model::RunState;

        use super::{RunCopies, COPIES_RUNS};

        let app: Application = serde_json::from_value(json!({
            "name": "app", "author": "tests", "steps": [{"id": "N", "type": "noop"}]}))
        .unwrap();
        let plan = Plan::new(app);
        let now = chrono::Utc::now();
        let run = |i: usize| Arc::new(plan.new_run(format!("run-{i}"), now, now));
        let copies = RunCopies::default();
        for i in 0..COPIES_RUNS + 10 {
            copies.put(run(i));
        }
        assert_eq!(copies.lock().runs.len(), COPIES_RUNS);
        assert!(copies.take("run-0").is_none(), "the oldest were evicted");
        let last = format!("run-{}", COPIES_RUNS + 9);
        assert!(copies.take(&last).is_some());
        assert!(copies.take(&last).is_none(), "taken out, not copied");
        let mut ended = plan.new_run("ended".into(), now, now);
        ended.state = RunState::Success;
        copies.put(Arc::new(ended));
        assert!(copies.take("ended").is_none());
        let parts: usize = copies
            .lock()
            .runs
            .iter()
            .map(|(_, r)| super::parts_of(r))
            .sum();
        assert_eq!(
            copies.lock().parts,
            parts,
            "the parts count is kept exactly"
        );
    }

    /// Transitions carry out what needs no execution and hand the rest back: an inline
    /// operator is not executed, a `for_each` is not evaluated, a step type's message is
    /// handed back to be sent with the others.
    #[tokio::test]
    async fn effects_that_need_execution_are_handed_back_not_executed() {
        let dir = tempfile::tempdir().unwrap();
        let store = sluice_embedded::EmbeddedStore::open(dir.path()).unwrap();
        let backend = store.backend();
        let mut registry = StepRegistry::new();
        registry.register(Noop);
        let runtime = Runtime::new(backend, registry, RuntimeConfig::default());
        let app: Application = serde_json::from_value(json!({
            "name": "app", "author": "tests", "steps": [
                {"id": "T", "type": "transform",
                 "parameters": {"template": "hi", "output": "text"}},
                {"id": "N", "type": "noop"},
                {"id": "E", "type": "noop", "for_each": {"items": [1, 2]}}]}))
        .unwrap();
        runtime.put_application(&app).await.unwrap();
        let id = runtime
            .create_run(StartRequest {
                application: "app".into(),
                ..StartRequest::default()
            })
            .await
            .unwrap();

        let (run, applied) = runtime.transition(&id, &Event::Start).await.unwrap();
        let mut follow_ups = Vec::new();
        for effect in applied.effects {
            follow_ups.push(runtime.carry_out_effect(&run, effect).await.unwrap());
        }

        let inline: Vec<_> = follow_ups
            .iter()
            .filter_map(|f| match f {
                FollowUp::Inline(message) => Some(message.step_id.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(inline, ["T"]);
        assert!(follow_ups
            .iter()
            .any(|f| matches!(f, FollowUp::Evaluate { step } if step == "E")));
        let run = runtime.get_run(&id).await.unwrap();
        let unit = &run.step("T").unwrap().units[0];
        assert_eq!(
            unit.state,
            UnitState::Queued,
            "the operator was not claimed"
        );
        assert!(unit.claimed_at.is_none());
        let sends: Vec<_> = follow_ups
            .iter()
            .filter_map(|f| match f {
                FollowUp::Send { message, .. } => Some(message.step_id.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(sends, ["N"], "only the step type goes to the queue");
    }
}
