//! A runtime keeps the runs it stored last and starts their next transitions from
//! those copies; the stored version decides: a copy made stale by another process on
//! the same data is never written over what that process stored. And a fan-out's units
//! take their items from the list evaluated once, whatever else their parameters read.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};
use sluice_core::engine::Event;
use sluice_core::model::{Application, RunState, StepState};
use sluice_core::step::{StepContext, StepError, StepOutput, StepRegistry, StepType};
use sluice_embedded::EmbeddedStore;
use sluice_runtime::{Runtime, RuntimeConfig, StartRequest};

/// Outputs its `value` parameter.
struct Echo;

#[async_trait]
impl StepType for Echo {
    fn name(&self) -> &str {
        "echo"
    }
    fn description(&self) -> &str {
        "outputs its value"
    }
    fn parameter_schema(&self) -> Value {
        json!({"type": "object"})
    }
    async fn execute(&self, params: Value, _: &StepContext) -> Result<StepOutput, StepError> {
        Ok(StepOutput::value(params["value"].clone()))
    }
}

/// A runtime on the store's data: two of them on one store are two processes sharing
/// a data directory (each with its own copies of runs).
fn runtime(store: &EmbeddedStore) -> Arc<Runtime> {
    let mut registry = StepRegistry::new();
    registry.register(Echo);
    Runtime::new(store.backend(), registry, RuntimeConfig::default())
}

fn app(value: Value) -> Application {
    serde_json::from_value(value).unwrap()
}

async fn start(runtime: &Runtime, application: &str) -> String {
    runtime
        .start(StartRequest {
            application: application.into(),
            ..StartRequest::default()
        })
        .await
        .unwrap()
        .id
}

#[tokio::test]
async fn a_copy_made_stale_by_another_process_never_overwrites_what_it_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let first = runtime(&store);
    let second = runtime(&store);
    first
        .put_application(&app(json!({
            "name": "pair", "author": "tests", "steps": [
                {"id": "A", "type": "echo", "parameters": {"value": 1}},
                {"id": "B", "type": "echo", "depends_on": ["A"], "parameters": {"value": 2}}]})))
        .await
        .unwrap();
    // The first process started the run and keeps its copy; the second revokes it.
    let id = start(&first, "pair").await;
    second.process(&id, Event::Revoke).await.unwrap();

    // On its stale copy the claim would be granted; the stored run refuses it.
    let claim = Event::Claim {
        step: "A".into(),
        unit: 0,
        attempt: 1,
    };
    first.process(&id, claim).await.unwrap();
    let run = first.get_run(&id).await.unwrap();
    assert_eq!(run.state, RunState::Revoked);
    let a = run.step("A").unwrap();
    assert_eq!(a.state, StepState::Cancelled);
    assert!(a.units[0].claimed_at.is_none(), "the claim was not stored");
    assert_eq!(store.backend().runs.get_run(&id).await.unwrap(), Some(run));
}

#[tokio::test]
async fn fan_out_units_take_their_own_item_and_still_read_what_they_reference() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let runtime = runtime(&store);
    runtime
        .put_application(&app(json!({
            "name": "fan", "author": "tests", "steps": [
                {"id": "Source", "type": "echo", "parameters": {"value": [10, 20, 30, 40, 50]}},
                {"id": "Each", "type": "echo", "depends_on": ["Source"],
                 "for_each": {"items": "${Source}", "max_concurrency": 2},
                 "parameters": {"value": {"item": "${item}", "first": "${Source.0}"}}},
                {"id": "Pairs", "type": "echo", "depends_on": ["Source"],
                 "for_each": {"items": "${Source}", "batch_size": 2},
                 "parameters": {"value": "${item}"}}]})))
        .await
        .unwrap();
    let id = start(&runtime, "fan").await;
    runtime.deliver_queued(2).await.unwrap();

    let run = runtime.get_run(&id).await.unwrap();
    assert_eq!(run.state, RunState::Success);
    let outputs = runtime.outputs(&run).await.unwrap();
    let each: Vec<Value> = [10, 20, 30, 40, 50]
        .iter()
        .map(|item| json!({"item": item, "first": 10}))
        .collect();
    assert_eq!(outputs["Each"], Value::Array(each));
    assert_eq!(outputs["Pairs"], json!([[10, 20], [30, 40], [50]]));
}
