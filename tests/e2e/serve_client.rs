//! The CLI in client mode (`SLUICE_ENDPOINT` + `SLUICE_TOKEN`) against `sluice serve`:
//! the same output and exit codes as on the data directory, a run followed to its end,
//! logs `--follow`, schedules and tokens.

use serde_json::json;

use crate::support::{Auth, Scratch};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_mode_matches_local_mode() {
    let s = Scratch::new();
    let admin_token = s.token("admin-cli", "administrator").await;
    let view_token = s.token("viewer", "view").await;
    let listed = s.sluice(&["tokens", "list"]).await.expect(0).stdout();
    assert!(
        listed.contains("admin-cli") && listed.contains("viewer") && !listed.contains(&admin_token),
        "{listed}"
    );
    let serve = s.serve().await;

    let app = s.write(
        "app.json",
        &json!({"name": "client_app", "author": "e2e", "friendly_name": "Client app",
            "app_variables": [{"name": "n", "type": "number", "value": 2}],
            "steps": [
                {"id": "First", "type": "echo", "parameters": {"value": {"n": "${vars.n}"}, "log": "first ${vars.n}"}},
                {"id": "Second", "type": "transform", "depends_on": ["First"],
                 "parameters": {"template": "{{ (First.n * 10) | tojson }}"}},
                {"id": "Save", "type": "cache", "depends_on": ["Second"],
                 "parameters": {"action": "save", "key": "client:last", "value": "${Second}"}}
            ]})
        .to_string(),
    );
    let config = s.write(
        "config.json",
        &json!({"name": "client_cfg", "data": [{"name": "pw", "value": "hunter2-secret", "encrypted": true}]}).to_string(),
    );
    let bad = s.write("bad.json", "{\n  \"name\": \"x\",\n  \"steps\": [,]\n}");

    // Writes through the server.
    let pushed = s
        .client(
            &serve,
            &admin_token,
            &["apps", "push", app.to_str().unwrap()],
        )
        .await
        .expect(0);
    assert_eq!(pushed.stdout(), "Stored application client_app (3 steps)\n");
    let pushed = s
        .client(
            &serve,
            &admin_token,
            &["configs", "push", config.to_str().unwrap()],
        )
        .await
        .expect(0);
    assert_eq!(
        pushed.stdout(),
        "Stored configuration client_cfg (1 variables, 1 encrypted)\n"
    );

    // A run followed to its end, then the same reads in both modes.
    let run = s
        .client(&serve, &admin_token, &["run", "client_app", "-p", "n=3"])
        .await
        .expect(0);
    assert!(
        run.stdout()
            .contains("Output of Save: {\"key\":\"client:last\"}"),
        "{}",
        run.stdout()
    );
    assert!(
        run.stderr().contains("✔ Second"),
        "live progress: {}",
        run.stderr()
    );
    let id = run.stdout().split_whitespace().nth(1).unwrap().to_string();
    let json_run = s
        .client(
            &serve,
            &admin_token,
            &["run", "client_app", "--output", "json"],
        )
        .await
        .expect(0)
        .json();
    assert_eq!(json_run["steps"]["Second"]["output"], 20);

    for args in [
        vec!["apps", "list"],
        vec!["apps", "get", "client_app"],
        vec!["configs", "list"],
        vec!["configs", "get", "client_cfg"],
        vec!["runs", "get", &id],
        vec!["runs", "logs", &id],
        vec!["runs", "logs", &id, "--step", "First", "--follow"],
        vec!["runs", "list", "--application", "client_app"],
        vec!["runs", "list", "--output", "json"],
        vec!["cache", "get", "client:last"],
    ] {
        let local = s.sluice(&args).await.expect(0);
        let remote = s.client(&serve, &view_token, &args).await.expect(0);
        assert_eq!(local.stdout(), remote.stdout(), "stdout of {args:?}");
        assert!(!remote.stdout().contains("hunter2-secret"));
    }
    let logs = s
        .client(&serve, &view_token, &["runs", "logs", &id])
        .await
        .stdout();
    assert!(logs.contains("INFO    First[1] first 3"), "{logs}");

    // Errors: same messages and exit codes.
    for (args, code) in [
        (vec!["apps", "get", "nope"], 2),
        (vec!["runs", "get", "isapp-nope"], 2),
        (vec!["cache", "get", "nope"], 2),
        (vec!["apps", "push", bad.to_str().unwrap()], 2),
        (vec!["runs", "list", "--state", "bogus"], 2),
    ] {
        let local = s.sluice(&args).await.expect(code);
        let remote = s.client(&serve, &admin_token, &args).await.expect(code);
        assert_eq!(local.stderr(), remote.stderr(), "stderr of {args:?}");
    }
    // (Locally `run` needs the data directory's lock, which the server holds.)
    let missing = s
        .client(&serve, &admin_token, &["run", "nope"])
        .await
        .expect(2);
    assert_eq!(missing.stderr(), "application \"nope\" not found\n");
    // A viewer may not write: exit 3 with the server's reason.
    let denied = s
        .client(&serve, &view_token, &["apps", "delete", "client_app"])
        .await
        .expect(3);
    assert!(denied.stderr().contains("403"), "{}", denied.stderr());
    let anonymous = s.client(&serve, "", &["apps", "list"]).await.expect(3);
    assert!(anonymous.stderr().contains("401"), "{}", anonymous.stderr());

    // A failing run exits 1; replay and revoke work remotely.
    let failing = s.write(
        "fail.json",
        &json!({"name": "failing", "author": "e2e", "steps": [{"id": "Boom", "type": "http_request", "parameters": {"url": "http://127.0.0.1:9/x", "timeout_seconds": 2}}]}).to_string(),
    );
    s.client(&serve, &admin_token, &["run", failing.to_str().unwrap()])
        .await
        .expect(1);
    let replayed = s
        .client(
            &serve,
            &admin_token,
            &["runs", "replay", &id, "--output", "json"],
        )
        .await
        .expect(0)
        .json();
    assert_eq!(replayed["replay_of"], id.as_str());
    let revoked = s
        .client(&serve, &admin_token, &["runs", "revoke", &id])
        .await
        .expect(0);
    assert_eq!(revoked.stdout(), format!("Run {id} is success\n"));

    // Schedules in both modes, the same listing.
    let schedule = s.write(
        "schedule.json",
        &json!({"application_id": "client_app", "entry_id": "nightly",
            "schedule": {"schedule_type": "crontab", "schedule_info": {"minute": "0", "hour": "2"}}})
        .to_string(),
    );
    let bad_schedule = s.write(
        "bad_schedule.json",
        &json!({"application_id": "client_app", "entry_id": "bad",
            "schedule": {"schedule_type": "crontab", "schedule_info": {"minute": "61"}}})
        .to_string(),
    );
    let stored = s
        .client(
            &serve,
            &admin_token,
            &["schedules", "push", schedule.to_str().unwrap()],
        )
        .await
        .expect(0);
    assert!(
        stored
            .stdout()
            .starts_with("Stored schedule nightly (enabled, 0 2 * * *; next run "),
        "{}",
        stored.stdout()
    );
    let local_bad = s
        .sluice(&["schedules", "push", bad_schedule.to_str().unwrap()])
        .await
        .expect(2);
    let remote_bad = s
        .client(
            &serve,
            &admin_token,
            &["schedules", "push", bad_schedule.to_str().unwrap()],
        )
        .await
        .expect(2);
    assert_eq!(local_bad.stderr(), remote_bad.stderr());
    assert!(
        remote_bad
            .stderr()
            .contains("schedule.schedule_info.minute: 61 is out of range 0-59"),
        "{}",
        remote_bad.stderr()
    );
    s.client(&serve, &admin_token, &["schedules", "disable", "nightly"])
        .await
        .expect(0);
    let local_list = s.sluice(&["schedules", "list"]).await.expect(0).stdout();
    assert_eq!(
        local_list,
        s.client(&serve, &view_token, &["schedules", "list"])
            .await
            .expect(0)
            .stdout()
    );
    assert!(local_list.contains("disabled"), "{local_list}");
    s.sluice(&["schedules", "delete", "nightly"])
        .await
        .expect(0);
    s.client(&serve, &admin_token, &["schedules", "get", "nightly"])
        .await
        .expect(2);

    // Tokens through the server: a new one works at once; a revoked one stops working.
    let created = s
        .client(
            &serve,
            &admin_token,
            &["tokens", "create", "made-remotely", "--role", "execute"],
        )
        .await
        .expect(0);
    let token = created.stdout().trim().to_string();
    assert_eq!(
        serve
            .get("/api/v1/tasks", &Auth::Token(token.clone()))
            .await
            .0,
        200
    );
    s.client(&serve, &admin_token, &["tokens", "revoke", "made-remotely"])
        .await
        .expect(0);
    assert_eq!(serve.get("/api/v1/tasks", &Auth::Token(token)).await.0, 401);
    s.sluice(&["tokens", "revoke", "made-remotely"])
        .await
        .expect(2);

    assert_eq!(serve.stop().await, 0);
}
