//! The task document (SPEC §4): the PowerFlow-compatible view of a run returned by the API
//! and by `sluice run --output json`.

use serde_json::{json, Map, Value};

use crate::model::Run;

/// Base path of the REST API; hrefs in task documents are relative to the server.
pub const API_BASE: &str = "/api/v1";

/// Renders a run as a task document. `outputs`, when given, adds each step's `output`.
pub fn task_document(run: &Run, outputs: Option<&Map<String, Value>>) -> Value {
    let mut steps = Map::new();
    for step in &run.steps {
        let mut doc = json!({
            "state": step.state.as_str(),
            "attempts": step.attempts,
            "started_at": step.started_at.map(|t| rfc3339(&t)),
            "finished_at": step.finished_at.map(|t| rfc3339(&t)),
            "error": step.error,
            "child_run": step.child_run,
            "logs_href": format!("{API_BASE}/tasks/{}/logs?step={}", run.id, step.id),
            "data_href": format!("{API_BASE}/tasks/{}/steps/{}/output", run.id, step.id),
        });
        if !step.warnings.is_empty() {
            doc["warnings"] = json!(step.warnings);
        }
        if let Some(version) = &step.type_version {
            doc["version"] = json!(version);
        }
        if let Some(n) = step.fan_out {
            doc["items"] = json!(n);
            // Each unit of a fanned-out trigger_application starts its own child run.
            let children: Vec<&str> = step
                .units
                .iter()
                .filter_map(|u| u.child_run.as_deref())
                .collect();
            if !children.is_empty() {
                doc["child_runs"] = json!(children);
            }
        }
        if let Some(outputs) = outputs {
            doc["output"] = outputs.get(&step.id).cloned().unwrap_or(Value::Null);
        }
        steps.insert(step.id.clone(), doc);
    }
    let mut doc = json!({
        "task_id": run.id,
        "href": format!("{API_BASE}/tasks/{}", run.id),
        "application": run.application,
        "state": run.state.as_str(),
        "configuration": run.configuration,
        "queue": run.queue,
        "params": run.params,
        "created_at": rfc3339(&run.created_at),
        "started_at": run.started_at.map(|t| rfc3339(&t)),
        "finished_at": run.finished_at.map(|t| rfc3339(&t)),
        "parent": run.parent.as_ref().map(|p| json!({"task_id": p.run_id, "step": p.step_id})),
        "steps": steps,
    });
    if let Some(alert_of) = &run.alert_of {
        // The run whose failure (or warnings) this alert run handles.
        doc["alert_of"] = json!(alert_of);
    }
    if let Some(version) = run.application_version {
        // The stored application version the run executes.
        doc["application_version"] = json!(version);
    }
    if let Some(replay_of) = &run.replay_of {
        doc["replay_of"] = json!(replay_of);
    }
    doc
}

/// RFC 3339 UTC with millisecond precision and a `Z`.
pub fn rfc3339(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
