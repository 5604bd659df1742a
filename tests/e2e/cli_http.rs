//! `http_request` against a local server: retries, encrypted bearer tokens that never
//! leak, and a killed run resumed without rerunning finished steps.

use std::time::Duration;

use serde_json::json;

use crate::support::{eventually, Behaviour, Scratch, TestServer};

const SECRET: &str = "tok-9f8e7d6c5b4a";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_on_503_and_uses_an_encrypted_bearer_token_without_leaking_it() {
    let server = TestServer::start().await;
    server.on(
        "flaky",
        Behaviour::FailFirst(
            2,
            json!({"devices": [{"name": "a"}, {"name": "b"}], "total": 2}),
        ),
    );
    server.on(
        "secure",
        Behaviour::Bearer(SECRET.into(), json!({"ok": true})),
    );
    server.on("echo", Behaviour::Echo);
    let s = Scratch::new();
    let config = s.write(
        "config.json",
        &json!({"name": "local", "data": [
            {"name": "base", "value": server.base},
            {"name": "token", "value": SECRET, "encrypted": true},
            {"name": "auth_header", "value": "Bearer ${config.token}"}
        ]})
        .to_string(),
    );
    let app = s.write(
        "app.json",
        &json!({"name": "http_app", "author": "me", "configuration": "local", "steps": [
            {"id": "Get", "type": "http_request",
             "parameters": {"url": "${config.base}/flaky"},
             "retry": {"max_attempts": 3, "backoff_seconds": 0.1, "backoff_rate": 2.0}},
            {"id": "Secure", "type": "http_request", "depends_on": ["Get"],
             "parameters": {"url": "${config.base}/secure", "auth": {"bearer": "${config.token}"}}},
            {"id": "Leaky", "type": "http_request", "depends_on": ["Get"],
             "parameters": {"url": "${config.base}/echo", "method": "POST",
                            "headers": {"X-Token": "${config.auth_header}"},
                            "body": {"token": "${config.token}", "names": "${Get.devices}"}}},
            {"id": "Shape", "type": "transform", "depends_on": ["Leaky"],
             "parameters": {"template": "{{ {'seen': input.body, 'cfg': config.token} | tojson }}"}}
        ]})
        .to_string(),
    );
    let done = s
        .sluice(&[
            "run",
            app.to_str().unwrap(),
            "-c",
            config.to_str().unwrap(),
            "-p",
            "loglevel=10",
            "--output",
            "json",
        ])
        .await
        .expect(0);
    let doc = done.json();
    assert_eq!(doc["steps"]["Get"]["attempts"], 3, "two 503s, then success");
    assert_eq!(doc["steps"]["Get"]["output"]["total"], 2);
    assert_eq!(doc["steps"]["Secure"]["output"], json!({"ok": true}));
    assert_eq!(server.hits("flaky"), 3);

    // The server really received the secret...
    let echoed = &doc["steps"]["Leaky"]["output"];
    assert_eq!(
        echoed["headers"]["x-token"], "Bearer ***",
        "outputs are redacted"
    );
    // ...but no output, log, CLI output or stored byte shows it.
    let id = doc["task_id"].as_str().unwrap().to_string();
    let logs = s.sluice(&["runs", "logs", &id]).await.expect(0);
    let get = s.sluice(&["runs", "get", &id]).await.expect(0);
    for (what, text) in [
        ("run --output json", done.stdout()),
        ("run stderr", done.stderr()),
        ("runs logs", logs.stdout()),
        ("runs get", get.stdout()),
    ] {
        assert!(!text.contains(SECRET), "{what} shows the secret:\n{text}");
    }
    assert!(
        logs.stdout().contains("DEBUG"),
        "loglevel=10 logged debug entries"
    );
    let stored = s.data_dir_bytes();
    assert!(
        !stored.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
        "the plaintext secret is stored in the data directory"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_outside_expected_fails_with_status_and_body() {
    let server = TestServer::start().await;
    let s = Scratch::new();
    let app = s.write(
        "app.json",
        &json!({"name": "missing", "author": "me", "steps": [
            {"id": "Get", "type": "http_request", "parameters": {"url": format!("{}/nowhere", server.base)}}
        ]})
        .to_string(),
    );
    let doc = s
        .sluice(&["run", app.to_str().unwrap(), "--output", "json"])
        .await
        .expect(1)
        .json();
    let error = doc["steps"]["Get"]["error"].as_str().unwrap();
    assert!(
        error.contains("404") && error.contains("no route nowhere"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_run_resumes_without_rerunning_finished_steps() {
    let server = TestServer::start().await;
    server.on("first", Behaviour::Echo);
    server.on(
        "slow",
        Behaviour::Slow(Duration::from_secs(2), json!({"slow": true})),
    );
    server.on("last", Behaviour::Echo);
    let s = Scratch::new();
    let app = s.write(
        "app.json",
        &json!({"name": "resumable", "author": "me", "steps": [
            {"id": "First", "type": "http_request", "parameters": {"url": format!("{}/first", server.base)}},
            {"id": "Slow", "type": "http_request", "depends_on": ["First"], "parameters": {"url": format!("{}/slow", server.base)}},
            {"id": "Last", "type": "http_request", "depends_on": ["Slow"], "parameters": {"url": format!("{}/last", server.base)}}
        ]})
        .to_string(),
    );
    let mut child = s.command(&["run", app.to_str().unwrap()]).spawn().unwrap();
    let srv = server.clone();
    assert!(
        eventually(Duration::from_secs(30), || srv.hits("slow") == 1).await,
        "the slow step never started"
    );
    child.start_kill().unwrap(); // SIGKILL
    child.wait().await.unwrap();
    assert_eq!(server.hits("last"), 0);

    let listed = s
        .sluice(&["runs", "list", "--output", "json"])
        .await
        .expect(0)
        .json();
    assert_eq!(
        listed[0]["state"], "running",
        "the killed run is left unfinished"
    );

    let resumed = s
        .sluice(&["resume", "--output", "json"])
        .await
        .expect(0)
        .json();
    assert_eq!(resumed["state"], "success");
    assert_eq!(resumed["steps"]["Slow"]["output"], json!({"slow": true}));
    assert_eq!(
        server.hits("first"),
        1,
        "a finished step is never run again"
    );
    assert_eq!(server.hits("slow"), 2, "the interrupted step ran again");
    assert_eq!(server.hits("last"), 1);
    assert_eq!(
        resumed["steps"]["Slow"]["attempts"], 1,
        "a crash does not consume an attempt"
    );

    let nothing = s.sluice(&["resume"]).await.expect(0);
    assert!(nothing.stderr().contains("No unfinished runs"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_cancels_a_running_run() {
    let server = TestServer::start().await;
    server.on("slow", Behaviour::Slow(Duration::from_secs(3), json!(1)));
    let s = Scratch::new();
    let app = s.write(
        "app.json",
        &json!({"name": "revocable", "author": "me", "steps": [
            {"id": "Slow", "type": "http_request", "parameters": {"url": format!("{}/slow", server.base)}},
            {"id": "Never", "type": "echo", "depends_on": ["Slow"], "parameters": {"value": 1}}
        ]})
        .to_string(),
    );
    let run = s
        .command(&["run", app.to_str().unwrap(), "--output", "json"])
        .output();
    let revoker = async {
        let srv = server.clone();
        assert!(eventually(Duration::from_secs(30), || srv.hits("slow") == 1).await);
        let id = s.newest_run_id().await;
        s.sluice(&["runs", "revoke", &id]).await.expect(0);
    };
    let (output, ()) = tokio::join!(run, revoker);
    let output = crate::support::Done(output.unwrap()).expect(1);
    let doc = output.json();
    assert_eq!(doc["state"], "revoked");
    assert_eq!(doc["steps"]["Never"]["state"], "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_timeout_fails_the_attempt_and_is_retried() {
    let server = TestServer::start().await;
    server.on("stuck", Behaviour::Slow(Duration::from_secs(30), json!(1)));
    let s = Scratch::new();
    let app = s.write(
        "app.json",
        &json!({"name": "stuck", "author": "me", "steps": [
            {"id": "Stuck", "type": "http_request", "timeout_seconds": 1,
             "retry": {"max_attempts": 2, "backoff_seconds": 0.1},
             "parameters": {"url": format!("{}/stuck", server.base), "timeout_seconds": 60}}
        ]})
        .to_string(),
    );
    let doc = s
        .sluice(&["run", app.to_str().unwrap(), "--output", "json"])
        .await
        .expect(1)
        .json();
    let step = &doc["steps"]["Stuck"];
    assert_eq!(step["state"], "failed");
    assert_eq!(step["attempts"], 2);
    assert_eq!(step["error"], "timed out after 1 seconds");
    assert_eq!(server.hits("stuck"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_a_live_run_to_its_end() {
    let server = TestServer::start().await;
    server.on(
        "slow",
        Behaviour::Slow(Duration::from_millis(1500), json!({"done": true})),
    );
    let s = Scratch::new();
    let app = s.write(
        "app.json",
        &json!({"name": "followed", "author": "me", "steps": [
            {"id": "Slow", "type": "http_request", "parameters": {"url": format!("{}/slow", server.base)}},
            {"id": "After", "type": "echo", "depends_on": ["Slow"], "parameters": {"value": 1, "log": "after the slow one"}}
        ]})
        .to_string(),
    );
    let run = s.command(&["run", app.to_str().unwrap()]).output();
    let follow = async {
        let srv = server.clone();
        assert!(eventually(Duration::from_secs(30), || srv.hits("slow") == 1).await);
        let id = s.newest_run_id().await;
        s.sluice(&["runs", "logs", &id, "--follow"]).await.expect(0)
    };
    let (run, logs) = tokio::join!(run, follow);
    crate::support::Done(run.unwrap()).expect(0);
    let text = logs.stdout();
    assert!(text.contains("FLOW    Slow[1] Start Slow"), "{text}");
    assert!(
        text.contains("INFO    After[1] after the slow one"),
        "{text}"
    );
    assert!(
        text.contains("FLOW    After[1] stop After|"),
        "following ends after the last entry: {text}"
    );
}
