//! Failure alerting in the runtime: the end of a failed run starts its `on_failure`
//! application once, however often its end notice is redelivered; an alert run never
//! alerts, nor do the runs it triggers, so alerts cannot loop.

use std::sync::Arc;

use serde_json::{json, Value};
use sluice_core::engine::Event;
use sluice_core::model::{AlertEvent, Application, Run, RunState};
use sluice_core::ports::RunQuery;
use sluice_core::step::StepRegistry;
use sluice_embedded::EmbeddedStore;
use sluice_runtime::{Runtime, RuntimeConfig, StartRequest};

fn runtime(dir: &std::path::Path) -> Arc<Runtime> {
    let backend = EmbeddedStore::open(dir).unwrap().backend();
    Runtime::new(backend, StepRegistry::new(), RuntimeConfig::default())
}

async fn put(runtime: &Runtime, doc: Value) {
    let app: Application = serde_json::from_value(doc).unwrap();
    runtime.put_application(&app).await.unwrap();
}

/// Operators run inline, so a run of transforms and triggers ends within `start`.
async fn start(runtime: &Runtime, application: &str) -> Run {
    runtime
        .start(StartRequest {
            application: application.into(),
            ..StartRequest::default()
        })
        .await
        .unwrap()
}

async fn runs_of(runtime: &Runtime, application: &str) -> Vec<Run> {
    runtime
        .backend()
        .runs
        .list_runs(&RunQuery {
            application: Some(application.into()),
            limit: 100,
            ..RunQuery::default()
        })
        .await
        .unwrap()
}

const FAILING_STEP: &str =
    r#"{"id": "Broken", "type": "transform", "parameters": {"template": "not json"}}"#;

#[tokio::test]
async fn an_application_alerting_itself_alerts_once_and_redelivery_starts_nothing_more() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let step: Value = serde_json::from_str(FAILING_STEP).unwrap();
    put(
        &runtime,
        json!({"name": "selfish", "author": "t",
        "app_variables": [{"name": "alert_run_id", "type": "string"}],
        "on_failure": {"application": "selfish"}, "steps": [step]}),
    )
    .await;

    let failed = start(&runtime, "selfish").await;
    assert_eq!(failed.state, RunState::Failure);
    let runs = runs_of(&runtime, "selfish").await;
    assert_eq!(runs.len(), 2, "the run and one alert run");
    let alert = runs.iter().find(|r| r.id != failed.id).unwrap();
    assert_eq!(
        alert.state,
        RunState::Failure,
        "the alert run failed too..."
    );
    let of = alert.alert_of.as_ref().unwrap();
    assert_eq!(
        (of.run_id.as_str(), of.event),
        (failed.id.as_str(), AlertEvent::Failure)
    );
    assert_eq!(alert.params["alert_run_id"], json!(failed.id));

    // ...and started nothing. Redelivered end notices (a duplicate event on the ended
    // run re-issues its end) and an explicit start find the same alert run.
    runtime.process(&failed.id, Event::Resend).await.unwrap();
    runtime.process(&failed.id, Event::Start).await.unwrap();
    runtime.process(&alert.id, Event::Resend).await.unwrap();
    let again = runtime.start_alert(&failed).await.unwrap();
    assert_eq!(again.as_deref(), Some(alert.id.as_str()));
    assert_eq!(runtime.start_alert(alert).await.unwrap(), None);
    assert_eq!(runs_of(&runtime, "selfish").await.len(), 2);
}

#[tokio::test]
async fn runs_an_alert_run_triggers_never_alert_so_a_chain_ends() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let step: Value = serde_json::from_str(FAILING_STEP).unwrap();
    // fails --on_failure--> alerter --trigger--> fails --on_failure--> (nothing)
    put(
        &runtime,
        json!({"name": "fails", "author": "t",
        "on_failure": {"application": "alerter"}, "steps": [step]}),
    )
    .await;
    put(
        &runtime,
        json!({"name": "alerter", "author": "t", "steps": [
        {"id": "Again", "type": "trigger_application",
         "parameters": {"application": "fails", "blocking": true}}]}),
    )
    .await;

    let failed = start(&runtime, "fails").await;
    assert_eq!(failed.state, RunState::Failure);
    let alerts = runs_of(&runtime, "alerter").await;
    assert_eq!(alerts.len(), 1, "one alert run");
    let fails = runs_of(&runtime, "fails").await;
    assert_eq!(
        fails.len(),
        2,
        "the first run and the one the alert triggered"
    );
    let triggered = fails.iter().find(|r| r.id != failed.id).unwrap();
    assert_eq!(triggered.state, RunState::Failure);
    assert_eq!(
        triggered.alert_of.as_ref().map(|a| a.run_id.as_str()),
        Some(failed.id.as_str()),
        "part of handling the first failure"
    );
    assert_eq!(
        alerts[0].state,
        RunState::Failure,
        "its blocking child failed"
    );
}

#[tokio::test]
async fn a_successful_run_starts_no_alert() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    put(
        &runtime,
        json!({"name": "alerter", "author": "t", "steps": [
        {"id": "T", "type": "transform", "parameters": {"template": "1"}}]}),
    )
    .await;
    put(
        &runtime,
        json!({"name": "fine", "author": "t",
        "on_failure": {"application": "alerter"}, "on_warning": {"application": "alerter"},
        "steps": [{"id": "T", "type": "transform", "parameters": {"template": "1"}}]}),
    )
    .await;
    assert_eq!(start(&runtime, "fine").await.state, RunState::Success);
    assert!(runs_of(&runtime, "alerter").await.is_empty());
}
