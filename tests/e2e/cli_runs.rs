//! Runs from the outside: the examples, failures and exit codes, logs, child runs,
//! replay and revoke.

use serde_json::json;

use crate::support::Scratch;

fn inventory(s: &Scratch) -> (String, String) {
    let dir = s.copy_example("inventory-sync");
    (
        dir.join("app.json").display().to_string(),
        dir.join("config.json").display().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_sync_reports_new_updated_removed_unchanged_and_is_idempotent() {
    inventory_sync_reports_new_updated_removed_unchanged_and_is_idempotent_on(Scratch::new()).await
}

/// Also run with `--backend aws` (tests/e2e/aws.rs).
pub async fn inventory_sync_reports_new_updated_removed_unchanged_and_is_idempotent_on(s: Scratch) {
    let (app, config) = inventory(&s);
    let first = s.sluice(&["run", &app, "-c", &config]).await.expect(0);
    assert!(
        first.stdout().contains(r#"Output of Summary: {"New":2,"Updated":2,"Removed":1,"Unchanged":6,"dry_run":false,"previous_sync":null}"#),
        "{}",
        first.stdout()
    );
    assert!(
        first.stderr().contains("✔ Diff"),
        "live progress on stderr: {}",
        first.stderr()
    );

    let second = s
        .sluice(&["run", "inventory_sync", "--output", "json"])
        .await
        .expect(0);
    let doc = second.json();
    assert_eq!(doc["state"], "success");
    let summary = &doc["steps"]["Summary"]["output"];
    assert_eq!(summary["Unchanged"], 10);
    assert_eq!(summary["New"], 0);
    assert_eq!(
        summary["previous_sync"],
        json!(first_run_id(&first.stdout()))
    );
    assert_eq!(
        doc["steps"]["Insert"]["output"],
        json!([]),
        "an empty for_each gives []"
    );
    assert!(doc["started_at"].as_str().unwrap().ends_with('Z'));

    // The cache remembers the last sync across runs.
    let cached = s
        .sluice(&["cache", "get", "inventory_sync:last"])
        .await
        .expect(0)
        .json();
    assert_eq!(cached["run"], doc["task_id"]);
}

fn first_run_id(stdout: &str) -> String {
    stdout.split_whitespace().nth(1).unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_skips_writes_and_reserved_params_are_recorded() {
    dry_run_skips_writes_and_reserved_params_are_recorded_on(Scratch::new()).await
}

/// Also run with `--backend aws` (tests/e2e/aws.rs).
pub async fn dry_run_skips_writes_and_reserved_params_are_recorded_on(s: Scratch) {
    let (app, config) = inventory(&s);
    let done = s
        .sluice(&[
            "run",
            &app,
            "-c",
            &config,
            "-p",
            "dry_run=true",
            "-p",
            "queue=nightly",
            "-p",
            "loglevel=10",
            "--output",
            "json",
        ])
        .await
        .expect(0);
    let doc = done.json();
    for step in ["Insert", "Update", "Remove"] {
        assert_eq!(doc["steps"][step]["state"], "skipped", "{step}");
    }
    assert_eq!(doc["queue"], "nightly");
    assert_eq!(doc["params"]["dry_run"], true);
    assert_eq!(doc["steps"]["Summary"]["output"]["New"], 2);
    // loglevel=10 keeps debug entries.
    let id = doc["task_id"].as_str().unwrap();
    let logs = s.sluice(&["runs", "logs", id]).await.expect(0).stdout();
    assert!(logs.contains("DEBUG   ReadSource[1] parameters:"), "{logs}");
    assert!(
        logs.contains("FLOW    ReadSource[1] Start ReadSource"),
        "{logs}"
    );
    assert!(
        logs.contains("FLOW    ReadSource[1] stop ReadSource|"),
        "{logs}"
    );
    // Nothing was written: a real run still finds the same diff.
    let real = s
        .sluice(&["run", "inventory_sync", "--output", "json"])
        .await
        .expect(0)
        .json();
    assert_eq!(real["steps"]["Summary"]["output"]["Updated"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn branching_and_fan_out_examples() {
    branching_and_fan_out_examples_on(Scratch::new()).await
}

/// Also run with `--backend aws` (tests/e2e/aws.rs).
pub async fn branching_and_fan_out_examples_on(s: Scratch) {
    let branching = crate::support::repo().join("examples/branching/app.json");
    let doc = s
        .sluice(&["run", branching.to_str().unwrap(), "--output", "json"])
        .await
        .expect(0)
        .json();
    assert_eq!(doc["steps"]["AutoApprove"]["state"], "skipped");
    assert_eq!(
        doc["steps"]["Label"]["state"], "skipped",
        "all predecessors skipped"
    );
    assert_eq!(
        doc["steps"]["Route"]["output"],
        json!({"route": "approval", "expedited": false, "carrier": "standard"})
    );
    let rush = s
        .sluice(&[
            "run",
            "order_routing",
            "-p",
            "priority=rush",
            "-p",
            "order_total=10",
            "--output",
            "json",
        ])
        .await
        .expect(0)
        .json();
    assert_eq!(
        rush["steps"]["Route"]["output"],
        json!({"route": "auto", "expedited": true, "carrier": "express"})
    );
    assert_eq!(rush["steps"]["Label"]["output"], "express label for 10 EUR");

    let fan = crate::support::repo().join("examples/fan-out-join/app.json");
    let doc = s
        .sluice(&["run", fan.to_str().unwrap(), "--output", "json"])
        .await
        .expect(0)
        .json();
    let join = &doc["steps"]["Join"]["output"];
    assert_eq!(
        join["regions"],
        json!(["ams", "fra", "lon", "nyc", "sfo", "sin", "syd"]),
        "item order kept"
    );
    assert_eq!(
        join["batches"],
        json!([["AMS", "FRA", "LON"], ["NYC", "SFO", "SIN"], ["SYD"]])
    );
    assert_eq!(join["empty"], json!([]));
    assert_eq!(doc["steps"]["PerRegion"]["items"], 7);
    // Each unit executed exactly once: a re-execution after a lease takeover (a lost
    // completion) would log a second start.
    let id = doc["task_id"].as_str().unwrap();
    let logs = s.sluice(&["runs", "logs", id]).await.expect(0).stdout();
    assert_eq!(logs.matches("Start PerRegion").count(), 7, "{logs}");
    assert_eq!(logs.matches("Start Batches").count(), 3, "{logs}");
    assert_eq!(logs.matches("Start Join").count(), 1, "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_step_fails_the_run_with_exit_1_and_cancels_successors() {
    a_failed_step_fails_the_run_with_exit_1_and_cancels_successors_on(Scratch::new()).await
}

/// Also run with `--backend aws` (tests/e2e/aws.rs).
pub async fn a_failed_step_fails_the_run_with_exit_1_and_cancels_successors_on(s: Scratch) {
    let app = s.write(
        "fail.json",
        &json!({"name": "fails", "author": "me", "steps": [
            {"id": "Start", "type": "echo", "parameters": {"value": {"n": 1}}},
            {"id": "Broken", "type": "transform", "depends_on": ["Start"], "parameters": {"template": "not json {{ input.n }}"}},
            {"id": "After", "type": "echo", "depends_on": ["Broken"], "parameters": {"value": 1}},
            {"id": "Sibling", "type": "echo", "depends_on": ["Start"], "parameters": {"value": 2}}
        ]})
        .to_string(),
    );
    let done = s.sluice(&["run", app.to_str().unwrap()]).await.expect(1);
    let out = done.stdout();
    assert!(out.contains("FAILURE"), "{out}");
    assert!(
        out.contains("Broken        failed") || out.contains("Broken   failed"),
        "{out}"
    );
    assert!(out.contains("the rendering is not JSON"), "{out}");
    assert!(
        out.contains("cancelled: predecessor Broken failed"),
        "{out}"
    );
    let doc = s
        .sluice(&["runs", "list", "--output", "json"])
        .await
        .expect(0)
        .json();
    let id = doc[0]["task_id"].as_str().unwrap().to_string();
    assert_eq!(doc[0]["steps"]["Sibling"]["state"], "success");
    let logs = s
        .sluice(&["runs", "logs", &id, "--step", "Broken"])
        .await
        .expect(0)
        .stdout();
    assert!(logs.contains("ERROR   Broken[1] Error executing the step: Broken. Details: the rendering is not JSON"), "{logs}");
    let failed = s
        .sluice(&["runs", "list", "--state", "failure"])
        .await
        .expect(0)
        .stdout();
    assert!(failed.contains(&id));

    // Which items of a fan-out failed: `runs units`, filtered by state.
    let app = s.write(
        "odd.json",
        &json!({"name": "odd_items", "author": "me", "steps": [
            {"id": "Each", "type": "transform", "for_each": {"items": [0, 1, 2, 3, 4]},
             "parameters": {"template": "{% if item % 2 %}not json{% else %}{{ item }}{% endif %}"}}
        ]})
        .to_string(),
    );
    let doc = s
        .sluice(&["run", app.to_str().unwrap(), "--output", "json"])
        .await
        .expect(1)
        .json();
    let id = doc["task_id"].as_str().unwrap();
    let units = s
        .sluice(&["runs", "units", id, "Each", "--output", "json"])
        .await
        .expect(0)
        .json();
    let states: Vec<&str> = units
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["done", "failed", "done", "failed", "done"]);
    let failed = s
        .sluice(&["runs", "units", id, "Each", "--state", "failed"])
        .await
        .expect(0)
        .stdout();
    let lines: Vec<&str> = failed.lines().collect();
    assert_eq!(lines.len(), 2, "{failed}");
    assert!(lines[0].trim_start().starts_with("1  failed"), "{failed}");
    assert!(lines[1].contains("the rendering is not JSON"), "{failed}");
    s.sluice(&["runs", "units", id, "Each", "--state", "lost"])
        .await
        .expect(2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_application_blocking_and_not_and_replay() {
    trigger_application_blocking_and_not_and_replay_on(Scratch::new()).await
}

/// Also run with `--backend aws` (tests/e2e/aws.rs).
pub async fn trigger_application_blocking_and_not_and_replay_on(s: Scratch) {
    let child = s.write(
        "child.json",
        &json!({"name": "child", "author": "me",
            "app_variables": [{"name": "who", "type": "string", "value": "nobody"}],
            "steps": [{"id": "Hello", "type": "echo", "parameters": {"value": "hello ${vars.who}"}}]})
        .to_string(),
    );
    s.sluice(&["apps", "push", child.to_str().unwrap()])
        .await
        .expect(0);
    let parent = s.write(
        "parent.json",
        &json!({"name": "parent", "author": "me", "steps": [
            {"id": "Wait", "type": "trigger_application", "parameters": {"application": "child", "blocking": true, "params": {"who": "parent"}}},
            {"id": "Fire", "type": "trigger_application", "parameters": {"application": "child"}},
            {"id": "Fan", "type": "trigger_application", "for_each": {"items": ["a", "b", "c"]},
             "parameters": {"application": "child", "params": {"who": "${item}"}}},
            {"id": "Use", "type": "echo", "depends_on": ["Wait"], "parameters": {"value": "${Wait.outputs.Hello}"}}
        ]})
        .to_string(),
    );
    let doc = s
        .sluice(&["run", parent.to_str().unwrap(), "--output", "json"])
        .await
        .expect(0)
        .json();
    let wait = &doc["steps"]["Wait"];
    assert_eq!(wait["output"]["state"], "success");
    assert_eq!(wait["output"]["outputs"]["Hello"], "hello parent");
    let child_id = wait["child_run"].as_str().unwrap();
    assert_eq!(wait["output"]["run_id"], child_id);
    assert_eq!(doc["steps"]["Use"]["output"], "hello parent");
    let fired = doc["steps"]["Fire"]["output"]["run_id"].as_str().unwrap();
    let child_doc = s.sluice(&["runs", "get", child_id]).await.expect(0).json();
    assert_eq!(
        child_doc["parent"],
        json!({"task_id": doc["task_id"], "step": "Wait"})
    );
    let fired_doc = s.sluice(&["runs", "get", fired]).await.expect(0).json();
    assert_eq!(
        fired_doc["state"], "success",
        "sluice run waits for the children it started"
    );
    assert_eq!(fired_doc["steps"]["Hello"]["output"], "hello nobody");
    // Each unit of a fanned-out trigger starts, and records, its own child.
    let fan = &doc["steps"]["Fan"];
    let children: Vec<&str> = fan["child_runs"]
        .as_array()
        .unwrap_or_else(|| panic!("{fan}"))
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(children.len(), 3, "{fan}");
    for (child, who) in children.iter().zip(["a", "b", "c"]) {
        assert_eq!(
            fan["output"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|o| o["run_id"] == *child)
                .count(),
            1
        );
        let child_doc = s.sluice(&["runs", "get", child]).await.expect(0).json();
        assert_eq!(
            child_doc["steps"]["Hello"]["output"],
            format!("hello {who}")
        );
    }

    let replay = s
        .sluice(&[
            "runs",
            "replay",
            doc["task_id"].as_str().unwrap(),
            "--output",
            "json",
        ])
        .await
        .expect(0)
        .json();
    assert_eq!(replay["replay_of"], doc["task_id"]);
    assert_ne!(replay["task_id"], doc["task_id"]);
    assert_eq!(replay["steps"]["Use"]["output"], "hello parent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_blocking_child_fails_the_parent_step() {
    a_failed_blocking_child_fails_the_parent_step_on(Scratch::new()).await
}

/// Also run with `--backend aws` (tests/e2e/aws.rs).
pub async fn a_failed_blocking_child_fails_the_parent_step_on(s: Scratch) {
    let child = s.write(
        "child.json",
        &json!({"name": "bad_child", "author": "me",
            "steps": [{"id": "Oops", "type": "transform", "parameters": {"template": "{{ nope( }}"}}]})
        .to_string(),
    );
    // The child's template is invalid only at render time when it has references, so
    // make it fail at run time instead: a template that does not render JSON.
    std::fs::write(
        &child,
        json!({"name": "bad_child", "author": "me",
            "steps": [{"id": "Oops", "type": "transform", "parameters": {"template": "plain text"}}]})
        .to_string(),
    )
    .unwrap();
    s.sluice(&["apps", "push", child.to_str().unwrap()])
        .await
        .expect(0);
    let parent = s.write(
        "parent.json",
        &json!({"name": "waits", "author": "me", "steps": [
            {"id": "Wait", "type": "trigger_application", "parameters": {"application": "bad_child", "blocking": true}}
        ]})
        .to_string(),
    );
    let doc = s
        .sluice(&["run", parent.to_str().unwrap(), "--output", "json"])
        .await
        .expect(1)
        .json();
    assert_eq!(doc["steps"]["Wait"]["state"], "failed");
    assert!(doc["steps"]["Wait"]["error"]
        .as_str()
        .unwrap()
        .contains("ended failure"));
    assert_eq!(doc["steps"]["Wait"]["output"]["state"], "failure");
}
