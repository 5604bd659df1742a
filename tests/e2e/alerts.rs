//! Failure alerting on the embedded CLI: `sluice run` of an application that fails (or
//! ends with warnings) starts its `on_failure` (`on_warning`) application with the run's
//! id, application and failed steps as params, waits for it, and keeps its own exit
//! code; secrets in a step's warning reach the alert redacted.

use serde_json::{json, Value};

use crate::support::Scratch;

/// An alert application that echoes what it was given.
fn push_alert_app(s: &Scratch) -> impl std::future::Future<Output = ()> + '_ {
    let alert = s.write(
        "alert.json",
        &json!({"name": "alert-app", "author": "me",
            "app_variables": [
                {"name": "alert_event", "type": "string"},
                {"name": "alert_run_id", "type": "string"},
                {"name": "alert_application", "type": "string"},
                {"name": "alert_steps", "type": "json"},
                {"name": "alert_message", "type": "string"},
                {"name": "channel", "type": "string", "value": "default"}],
            "steps": [{"id": "Notify", "type": "echo", "parameters": {"value": {
                "event": "${vars.alert_event}", "run": "${vars.alert_run_id}",
                "app": "${vars.alert_application}", "steps": "${vars.alert_steps}",
                "text": "${vars.alert_message}", "channel": "${vars.channel}"}}}]})
        .to_string(),
    );
    async move {
        s.sluice(&["apps", "push", alert.to_str().unwrap()])
            .await
            .expect(0);
    }
}

/// The only run of `application`, as `runs get --output json` shows it.
async fn only_run_of(s: &Scratch, application: &str) -> Value {
    let listed = s
        .sluice(&[
            "runs",
            "list",
            "--application",
            application,
            "--output",
            "json",
        ])
        .await
        .expect(0)
        .json();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    let id = listed[0]["task_id"].as_str().unwrap().to_string();
    s.sluice(&["runs", "get", &id]).await.expect(0).json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_starts_its_on_failure_application_with_the_failure() {
    let s = Scratch::new();
    push_alert_app(&s).await;
    let app = s.write(
        "fail.json",
        &json!({"name": "fails", "author": "me",
            "on_failure": {"application": "alert-app", "params": {"channel": "ops"}},
            "steps": [
                {"id": "Start", "type": "echo", "parameters": {"value": {"n": 1}}},
                {"id": "Broken", "type": "transform", "depends_on": ["Start"],
                 "parameters": {"template": "not json {{ input.n }}"}}]})
        .to_string(),
    );
    let done = s.sluice(&["run", app.to_str().unwrap()]).await.expect(1);
    assert!(
        done.stderr().contains("started alert run"),
        "{}",
        done.stderr()
    );

    let failed = only_run_of(&s, "fails").await;
    let failed_id = failed["task_id"].as_str().unwrap();
    let alert = only_run_of(&s, "alert-app").await;
    assert_eq!(alert["state"], "success", "{alert}");
    assert_eq!(
        alert["alert_of"],
        json!({"run_id": failed_id, "event": "failure"}),
        "{alert}"
    );
    assert_eq!(alert["params"]["alert_run_id"], failed_id, "{alert}");
    assert_eq!(alert["params"]["alert_application"], "fails");
    assert_eq!(alert["params"]["channel"], "ops");
    assert!(
        alert["params"].get("alert_state").is_none(),
        "undeclared params are left out"
    );
    let steps = &alert["params"]["alert_steps"];
    assert_eq!(steps.as_array().map(Vec::len), Some(1), "{steps}");
    assert_eq!(steps[0]["step"], "Broken");
    assert!(
        steps[0]["error"]
            .as_str()
            .unwrap()
            .contains("the rendering is not JSON"),
        "{steps}"
    );
    let logs = s
        .sluice(&["runs", "logs", failed_id, "--step", "on_failure"])
        .await
        .expect(0)
        .stdout();
    assert!(logs.contains("on_failure: started run"), "{logs}");

    // The alert ran once: running the failed application's end again starts nothing new.
    s.sluice(&["resume"]).await.expect(0);
    only_run_of(&s, "alert-app").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warnings_start_on_warning_with_secrets_redacted_and_a_missing_alert_app_is_logged() {
    let s = Scratch::new();
    push_alert_app(&s).await;
    let config = s.write(
        "config.json",
        &json!({"name": "prod", "author": "me",
            "data": [{"name": "token", "value": "s3cr3t-token-value", "encrypted": true}]})
        .to_string(),
    );
    let app = s.write(
        "warns.json",
        &json!({"name": "warns", "author": "me", "configuration": "prod",
            "on_warning": {"application": "alert-app"},
            "on_failure": {"application": "no-such-app"},
            "steps": [{"id": "Leaky", "type": "echo",
                       "parameters": {"value": 1, "warning": "token is ${config.token}"}}]})
        .to_string(),
    );
    s.sluice(&["run", app.to_str().unwrap(), "-c", config.to_str().unwrap()])
        .await
        .expect(0);
    let alert = only_run_of(&s, "alert-app").await;
    assert_eq!(alert["params"]["alert_event"], "warning", "{alert}");
    let text = alert.to_string();
    assert!(!text.contains("s3cr3t-token-value"), "{text}");
    assert_eq!(
        alert["params"]["alert_steps"][0]["warnings"],
        json!(["token is ***"]),
        "{alert}"
    );

    // A failing run whose on_failure names no application says so in its log.
    let fails = s.write(
        "fails2.json",
        &json!({"name": "fails2", "author": "me",
            "on_failure": {"application": "no-such-app"},
            "steps": [{"id": "Broken", "type": "transform",
                       "parameters": {"template": "not json"}}]})
        .to_string(),
    );
    s.sluice(&["run", fails.to_str().unwrap()]).await.expect(1);
    let failed = only_run_of(&s, "fails2").await;
    let logs = s
        .sluice(&["runs", "logs", failed["task_id"].as_str().unwrap()])
        .await
        .expect(0)
        .stdout();
    assert!(
        logs.contains("on_failure: cannot start application \"no-such-app\": application \"no-such-app\" not found"),
        "{logs}"
    );
}
