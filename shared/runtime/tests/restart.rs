//! Restarts: resume after a crash never re-sends an attempt that a live worker of the new
//! process has claimed, and the plan cache stays bounded however many runs start.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};
use sluice_core::model::{Application, RunState};
use sluice_core::step::{StepContext, StepError, StepOutput, StepRegistry, StepType};
use sluice_embedded::EmbeddedStore;
use sluice_runtime::{Runtime, RuntimeConfig, StartRequest, VISIBILITY};
use tokio::sync::Notify;

/// A step that counts executions in flight and waits until it is released.
#[derive(Clone, Default)]
struct Gate {
    running: Arc<AtomicUsize>,
    most_at_once: Arc<AtomicUsize>,
    executions: Arc<AtomicUsize>,
    started: Arc<Notify>,
    release: Arc<Notify>,
}

#[async_trait]
impl StepType for Gate {
    fn name(&self) -> &str {
        "gate"
    }
    fn description(&self) -> &str {
        "waits for the test"
    }
    fn parameter_schema(&self) -> Value {
        json!({"type": "object"})
    }
    async fn execute(&self, _: Value, _: &StepContext) -> Result<StepOutput, StepError> {
        self.executions.fetch_add(1, Ordering::SeqCst);
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_at_once.fetch_max(now, Ordering::SeqCst);
        self.started.notify_one();
        self.release.notified().await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        Ok(StepOutput::value(json!("done")))
    }
}

fn runtime(dir: &std::path::Path, gate: &Gate) -> (EmbeddedStore, Arc<Runtime>) {
    let store = EmbeddedStore::open(dir).unwrap();
    let backend = store.backend();
    let mut registry = StepRegistry::new();
    registry.register(gate.clone());
    (
        store,
        Runtime::new(backend, registry, RuntimeConfig::default()),
    )
}

fn app(name: &str) -> Application {
    serde_json::from_value(json!({
        "name": name,
        "friendly_name": name,
        "description": "restart test",
        "author": "tests",
        "version": "1",
        "steps": [{"id": "A", "type": "gate"}]
    }))
    .unwrap()
}

#[tokio::test]
async fn resume_leaves_attempts_claimed_since_the_takeover_alone() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Gate::default();
    let (store, runtime) = runtime(dir.path(), &gate);
    runtime.put_application(&app("one")).await.unwrap();
    let taken_over_at = chrono::Utc::now();
    let run = runtime
        .start(StartRequest {
            application: "one".into(),
            ..StartRequest::default()
        })
        .await
        .unwrap();

    // A worker of the new process claims A and is executing it...
    let queue = store.queue();
    let queue_name = runtime.queues().remove(0);
    let first =
        sluice_core::ports::Queue::receive(&queue, &queue_name, 1, VISIBILITY, Duration::ZERO)
            .await
            .unwrap()
            .remove(0);
    let worker = {
        let runtime = runtime.clone();
        tokio::spawn(async move {
            runtime
                .handle_message(&first.message, first.receive_count, false)
                .await
        })
    };
    gate.started.notified().await;

    // ...when resume, late, recovers what the dead process had claimed.
    runtime.resume_all(Some(taken_over_at)).await.unwrap();
    let unit = runtime.get_run(&run.id).await.unwrap().steps[0].units[0].clone();
    assert_eq!(unit.state, sluice_core::model::UnitState::Running);

    // Whatever resume sent is handled by other workers while A still runs.
    let resent =
        sluice_core::ports::Queue::receive(&queue, &queue_name, 10, VISIBILITY, Duration::ZERO)
            .await
            .unwrap();
    for delivery in resent {
        runtime
            .handle_message(&delivery.message, delivery.receive_count, false)
            .await;
    }
    gate.release.notify_one();
    worker.await.unwrap();
    assert_eq!(gate.most_at_once.load(Ordering::SeqCst), 1);
    assert_eq!(gate.executions.load(Ordering::SeqCst), 1);
    let run = runtime.get_run(&run.id).await.unwrap();
    assert_eq!(run.state, RunState::Success);
}

#[tokio::test]
async fn resume_requeues_attempts_a_dead_process_claimed() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Gate::default();
    let (_store, runtime) = runtime(dir.path(), &gate);
    runtime.put_application(&app("one")).await.unwrap();
    let run = runtime
        .start(StartRequest {
            application: "one".into(),
            ..StartRequest::default()
        })
        .await
        .unwrap();
    // The dead process claimed A (its claim is recorded, its worker is gone).
    let claim = sluice_core::engine::Event::Claim {
        step: "A".into(),
        unit: 0,
        attempt: 1,
    };
    runtime.process(&run.id, claim).await.unwrap();
    let taken_over_at = chrono::Utc::now() + chrono::Duration::milliseconds(1);
    runtime.resume_all(Some(taken_over_at)).await.unwrap();
    let unit = runtime.get_run(&run.id).await.unwrap().steps[0].units[0].clone();
    assert_eq!(unit.state, sluice_core::model::UnitState::Queued);
    assert_eq!(unit.attempt, 1);
}

#[tokio::test]
async fn the_plan_cache_stays_bounded_however_many_runs_start() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Gate::default();
    let (_store, runtime) = runtime(dir.path(), &gate);
    runtime.put_application(&app("many")).await.unwrap();
    let limit = 1_000;
    for _ in 0..limit + 200 {
        runtime
            .start(StartRequest {
                application: "many".into(),
                ..StartRequest::default()
            })
            .await
            .unwrap();
    }
    assert!(
        runtime.cached_plans() <= limit,
        "{} plans cached",
        runtime.cached_plans()
    );
}
