//! Transitions, the lowest layer that acts: load a run and its plan, apply an engine
//! event, store the result with a compare-and-swap, publish it, and carry out the
//! effects that need no step execution (queue sends, child revocations, a blocking
//! child's end). Effects that do need execution (evaluating `when` / `for_each`, an
//! inline operator) are handed back as a [`FollowUp`] to the caller, which drives them
//! (`execute.rs`): nothing here calls a layer above.

use std::sync::Arc;
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
    /// The run ended: apply these events (a blocking parent's), then start this alert
    /// run (`on_failure` / `on_warning`), which needs run creation, a layer above.
    Ended {
        events: Vec<(String, Event)>,
        alert: Option<Box<AlertStart>>,
    },
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
        let _turn = self.run_turns.take(run_id).await;
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
                self.backend
                    .queue
                    .send(&queue, &message, Duration::from_millis(delay_ms))
                    .await?;
                Ok(FollowUp::Apply(Vec::new()))
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
    use std::time::Duration;

    use async_trait::async_trait;
    use serde_json::{json, Value};
    use sluice_core::engine::Event;
    use sluice_core::model::{Application, UnitState};
    use sluice_core::step::{StepContext, StepError, StepOutput, StepRegistry, StepType};

    use super::FollowUp;
    use crate::{Runtime, RuntimeConfig, StartRequest, VISIBILITY};

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

    /// Transitions carry out what needs no execution and hand the rest back: an inline
    /// operator is not executed, a `for_each` is not evaluated, a step type is queued.
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
        let queued = runtime
            .backend
            .queue
            .receive("steps", 10, VISIBILITY, Duration::ZERO)
            .await
            .unwrap();
        let queued: Vec<_> = queued.iter().map(|d| d.message.step_id.as_str()).collect();
        assert_eq!(queued, ["N"], "only the step type went to the queue");
    }
}
