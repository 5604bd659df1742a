//! `sluice serve` over HTTP: every endpoint, bad inputs, secrets, the role matrix,
//! schedules firing (and never twice across a restart), graceful shutdown and resumption.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{repo, Auth, Behaviour, Scratch, TestServer};

const SECRET: &str = "s3cr3t-e2e-value";

fn app_doc() -> Value {
    json!({"name": "hello", "author": "e2e", "configuration": "cfg",
    "app_variables": [{"name": "who", "value": "world"}],
    "steps": [
        {"id": "Greet", "type": "echo", "parameters": {"value": {"greeting": "hi ${vars.who}"}, "log": "greeting ${vars.who}"}},
        {"id": "Save", "type": "cache", "depends_on": ["Greet"],
         "parameters": {"action": "save", "key": "hello:last", "value": "${Greet}"}},
        {"id": "Shape", "type": "transform", "depends_on": ["Save"],
         "parameters": {"template": "{{ {'saved': Save.key} | tojson }}"}}
    ]})
}

fn config_doc(token: Value) -> Value {
    json!({"name": "cfg", "author": "e2e", "data": [
        {"name": "host", "value": "example.test"},
        {"name": "token", "value": token, "encrypted": true}
    ]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_over_http() {
    let s = Scratch::new();
    let serve = s.serve().await;
    let admin = Auth::Admin;

    // Unauthenticated: only the health checks and /about.
    assert_eq!(
        serve.get("/healthcheck", &Auth::None).await,
        (200, json!({"status": "ok"}))
    );
    assert_eq!(serve.get("/api/v1/healthcheck", &Auth::None).await.0, 200);
    let (status, about) = serve.get("/api/v1/about", &Auth::None).await;
    assert_eq!((status, about["name"].as_str()), (200, Some("sluice")));
    let (status, body) = serve.get("/api/v1/applications", &Auth::None).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthorized");
    assert_eq!(
        serve
            .get("/api/v1/applications", &Auth::Token("slc_nope".into()))
            .await
            .0,
        401
    );
    let bad_basic = serve
        .http
        .get(format!("{}/api/v1/applications", serve.base))
        .basic_auth("admin", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_basic.status().as_u16(), 401);

    // Deep health reports each component.
    let (status, health) = serve.get("/api/v1/health", &admin).await;
    assert_eq!(status, 200, "{health}");
    for component in [
        "definitions",
        "runs",
        "cache",
        "secrets",
        "schedules",
        "access",
    ] {
        assert_eq!(
            health["components"][component]["status"], "ok",
            "{component}"
        );
    }

    // The served OpenAPI document is the checked-in one.
    let (_, served) = serve.get("/api/v1/openapi.json", &admin).await;
    let stored: Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("docs/openapi.json")).unwrap())
            .unwrap();
    assert_eq!(
        served, stored,
        "docs/openapi.json differs from the served document"
    );

    // Configurations: encrypted values never come back; null keeps the stored secret.
    let (status, stored) = serve
        .post("/api/v1/configurations", &admin, &config_doc(json!(SECRET)))
        .await;
    assert_eq!(status, 200, "{stored}");
    assert_eq!(stored["data"][1]["value"], Value::Null);
    let (status, _) = serve
        .post("/api/v1/configurations", &admin, &config_doc(Value::Null))
        .await;
    assert_eq!(status, 200);
    let (_, listed) = serve.get("/api/v1/configurations", &admin).await;
    assert_eq!(listed[0]["data"][1]["value"], Value::Null);
    let (_, one) = serve.get("/api/v1/configurations/cfg", &admin).await;
    assert_eq!(one["data"][0]["value"], "example.test");
    assert!(!one.to_string().contains(SECRET));
    let fresh = json!({"name": "other", "data": [{"name": "t", "value": null, "encrypted": true}]});
    let (status, body) = serve.post("/api/v1/configurations", &admin, &fresh).await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("data[0].value")),
        "{body}"
    );

    // Applications, validated as the CLI validates them.
    let (status, body) = serve.post("/api/v1/applications", &admin, &app_doc()).await;
    assert_eq!(status, 200, "{body}");
    let (_, apps) = serve.get("/api/v1/applications", &admin).await;
    assert_eq!(apps[0]["name"], "hello");
    assert_eq!(
        serve.get("/api/v1/applications/hello", &admin).await.1["author"],
        "e2e"
    );
    assert_eq!(serve.get("/api/v1/applications/nope", &admin).await.0, 404);
    let cycle = json!({"name": "bad", "author": "x", "steps": [
        {"id": "A", "type": "echo", "depends_on": ["B"], "parameters": {"value": 1}},
        {"id": "B", "type": "echo", "depends_on": ["A"], "parameters": {"value": 1}}]});
    let (status, body) = serve.post("/api/v1/applications", &admin, &cycle).await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("steps")),
        "{body}"
    );

    // Bad inputs: malformed JSON (with its line), unknown fields, wrong types, too big.
    let (status, body) = serve
        .call(
            "POST",
            "/api/v1/applications",
            &admin,
            Some("{\n \"name\": \"x\",\n ]".into()),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("line 3, column"),
        "{body}"
    );
    let mut unknown = app_doc();
    unknown["steps"][0]["bogus"] = json!(1);
    let (status, body) = serve.post("/api/v1/applications", &admin, &unknown).await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (400, Some("steps[0].bogus")),
        "{body}"
    );
    let (status, body) = serve
        .post(
            "/api/v1/applications/hello/run",
            &admin,
            &json!({"params": []}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (400, Some("params")),
        "{body}"
    );
    let huge =
        json!({"name": "big", "author": "x", "description": "x".repeat(100_000), "steps": []});
    let (status, body) = serve.post("/api/v1/applications", &admin, &huge).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("payload_too_large")),
        "{body}"
    );
    let (status, body) = serve
        .post("/api/v1/applications/run", &admin, &json!({"params": {}}))
        .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (400, Some("name"))
    );
    assert_eq!(
        serve
            .post("/api/v1/applications/nope/run", &admin, &json!({}))
            .await
            .0,
        404
    );
    let (status, body) = serve.get("/api/v1/tasks?state=bogus", &admin).await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (400, Some("state"))
    );
    let (status, body) = serve.get("/api/v1/tasks?since=yesterday", &admin).await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (400, Some("since"))
    );

    // Runs: by name in the body, and by path, waiting for the end.
    let (status, task) = serve
        .post(
            "/api/v1/applications/run?wait=25",
            &admin,
            &json!({"name": "hello", "params": {"who": "e2e", "queue": "q1"}}),
        )
        .await;
    assert_eq!(status, 200, "{task}");
    assert_eq!(task["state"], "success", "{task}");
    assert_eq!(task["queue"], "q1");
    let id = task["task_id"].as_str().unwrap().to_string();
    assert!(id.starts_with("isapp-"));
    assert_eq!(task["href"], format!("/api/v1/tasks/{id}"));
    let (_, second) = serve
        .post(
            "/api/v1/applications/hello/run?wait=25",
            &admin,
            &json!({"params": {"who": "two"}}),
        )
        .await;
    assert_eq!(second["state"], "success");
    let second_id = second["task_id"].as_str().unwrap().to_string();

    // Tasks: get (with outputs), output, logs, snapshot.
    let (_, got) = serve
        .get(&format!("/api/v1/tasks/{id}?outputs=true"), &admin)
        .await;
    assert_eq!(
        got["steps"]["Greet"]["output"],
        json!({"greeting": "hi e2e"})
    );
    assert_eq!(
        got["steps"]["Shape"]["output"],
        json!({"saved": "hello:last"})
    );
    // Each step records the version of its type (an operator's is the engine's).
    assert_eq!(got["steps"]["Greet"]["version"], "1.0.0", "{got}");
    assert_eq!(got["steps"]["Shape"]["version"], env!("CARGO_PKG_VERSION"));
    let data_href = got["steps"]["Greet"]["data_href"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        serve.get(&data_href, &admin).await,
        (200, json!({"greeting": "hi e2e"}))
    );
    let logs_href = got["steps"]["Greet"]["logs_href"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, logs) = serve.get(&logs_href, &admin).await;
    let messages: Vec<&str> = logs["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert!(messages.contains(&"greeting e2e"), "{logs}");
    assert!(logs["logs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["step"] == "Greet"));
    let after = logs["next_after"].as_u64().unwrap();
    let (_, rest) = serve
        .get(&format!("/api/v1/tasks/{id}/logs?after={after}"), &admin)
        .await;
    assert!(rest["logs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["seq"].as_u64().unwrap() > after));
    let (_, app_logs) = serve.get("/api/v1/applications/hello/logs", &admin).await;
    assert_eq!(
        app_logs["task_id"],
        second_id.as_str(),
        "the latest run's logs"
    );
    assert_eq!(
        serve
            .get(&format!("/api/v1/tasks/{id}/application"), &admin)
            .await
            .1["name"],
        "hello"
    );
    assert_eq!(
        serve
            .get(&format!("/api/v1/tasks/{id}/steps/Nope/output"), &admin)
            .await
            .0,
        404
    );
    assert_eq!(serve.get("/api/v1/tasks/isapp-nope", &admin).await.0, 404);

    // Listing: newest first, filtered, paginated.
    let (_, page) = serve
        .get("/api/v1/tasks?application=hello&limit=1", &admin)
        .await;
    assert_eq!(page["tasks"][0]["task_id"], second_id.as_str());
    let cursor = page["next_cursor"].as_str().unwrap().to_string();
    let (_, page2) = serve
        .get(
            &format!("/api/v1/tasks?application=hello&limit=1&cursor={cursor}"),
            &admin,
        )
        .await;
    assert_eq!(page2["tasks"][0]["task_id"], id.as_str());
    assert_eq!(page2["next_cursor"], Value::Null);
    let (_, by_queue) = serve
        .get("/api/v1/tasks?queue=q1&state=success", &admin)
        .await;
    assert_eq!(by_queue["count"], 1);
    let (_, none) = serve.get("/api/v1/tasks?application=nope", &admin).await;
    assert_eq!(none["tasks"], json!([]));

    // Replay and revoke.
    let (status, replay) = serve
        .post(
            &format!("/api/v1/tasks/{id}/replay?wait=25"),
            &admin,
            &json!({}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(replay["replay_of"], id.as_str());
    assert_eq!(replay["params"]["who"], "e2e");
    let (status, revoked) = serve
        .post(&format!("/api/v1/tasks/{id}/revoke"), &admin, &json!({}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(revoked["state"], "success", "a finished run stays finished");

    // Steps.
    let (_, steps) = serve.get("/api/v1/steps", &admin).await;
    let names: Vec<&str> = steps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    for name in [
        "echo",
        "http_request",
        "sql",
        "cache",
        "transform",
        "trigger_application",
    ] {
        assert!(names.contains(&name), "{name}");
    }
    let (_, echo) = serve.get("/api/v1/steps/echo", &admin).await;
    assert_eq!(echo["version"], "1.0.0", "{echo}");
    assert!(echo["description"].is_string(), "{echo}");
    assert!(
        echo["parameters"]["properties"]["value"].is_object(),
        "{echo}"
    );
    let (status, ran) = serve
        .post(
            "/api/v1/steps/run",
            &admin,
            &json!({"name": "echo", "parameters": {"value": [1, 2], "warning": "careful"}}),
        )
        .await;
    assert_eq!(status, 200, "{ran}");
    assert_eq!(
        (ran["state"].as_str(), &ran["output"]),
        (Some("warning"), &json!([1, 2]))
    );
    let (status, body) = serve
        .post(
            "/api/v1/steps/run",
            &admin,
            &json!({"name": "echo", "parameters": {"nope": 1}}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("parameters")),
        "{body}"
    );
    // A template renders alone, with what its predecessor would have given as `input`.
    let (status, rendered) = serve
        .post(
            "/api/v1/steps/run",
            &admin,
            &json!({"name": "transform", "input": {"devices": [{"name": "a"}, {"name": "b"}]},
                    "parameters": {"template": "{{ input.devices | map(attribute='name') | list | tojson }}"}}),
        )
        .await;
    assert_eq!(
        (status, &rendered["state"], &rendered["output"]),
        (200, &json!("success"), &json!(["a", "b"])),
        "{rendered}"
    );
    let (status, body) = serve
        .post("/api/v1/steps/run", &admin, &json!({"name": "transform"}))
        .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("parameters")),
        "{body}"
    );
    let (status, body) = serve
        .post(
            "/api/v1/steps/run",
            &admin,
            &json!({"name": "trigger_application", "parameters": {"application": "x"}}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (400, Some("name")),
        "{body}"
    );
    assert_eq!(serve.get("/api/v1/steps/nope", &admin).await.0, 404);

    // Cache.
    let (status, entry) = serve.get("/api/v1/cache/hello:last", &admin).await;
    assert_eq!(
        (status, &entry["value"]),
        (200, &json!({"greeting": "hi e2e"})),
        "{entry}"
    );
    assert_eq!(
        serve
            .call("DELETE", "/api/v1/cache/hello:last", &admin, None)
            .await
            .0,
        200
    );
    assert_eq!(serve.get("/api/v1/cache/hello:last", &admin).await.0, 404);

    // Schedules: a bad cron field is named.
    let bad = json!({"application_id": "hello", "entry_id": "nightly",
        "schedule": {"schedule_type": "crontab", "schedule_info": {"minute": "0", "hour": "25"}}});
    let (status, body) = serve.post("/api/v1/schedule", &admin, &bad).await;
    assert_eq!(status, 422);
    assert_eq!(body["error"]["field"], "schedule.schedule_info.hour");
    assert_eq!(
        body["error"]["message"],
        "schedule.schedule_info.hour: 25 is out of range 0-23"
    );
    let too_often = json!({"application_id": "hello", "entry_id": "fast",
        "schedule": {"schedule_type": "frequency", "schedule_info": {"run_every": 10}}});
    assert_eq!(
        serve.post("/api/v1/schedule", &admin, &too_often).await.1["error"]["field"],
        "schedule.schedule_info.run_every"
    );
    let no_app = json!({"application_id": "ghost", "entry_id": "g", "schedule": {"schedule_type": "frequency", "schedule_info": {"run_every": 60}}});
    assert_eq!(
        serve.post("/api/v1/schedule", &admin, &no_app).await.1["error"]["field"],
        "application_id"
    );
    let nightly = json!({"application_id": "hello", "entry_id": "nightly", "params": {"who": "night"},
        "schedule": {"schedule_type": "crontab", "schedule_info": {"minute": "0", "hour": "2", "day_of_month": "*", "month_of_year": "*", "day_of_week": "*"}},
        "enabled": true});
    let (status, entry) = serve.post("/api/v1/schedule", &admin, &nightly).await;
    assert_eq!(status, 200, "{entry}");
    assert_eq!(entry["total_runs"], 0);
    assert_eq!(entry["last_run"], Value::Null);
    assert!(
        entry["next_run"]
            .as_str()
            .unwrap()
            .ends_with("T02:00:00.000Z"),
        "{entry}"
    );
    let (_, list) = serve.get("/api/v1/schedule", &admin).await;
    assert_eq!(list[0]["entry_id"], "nightly");
    let mut disabled = nightly.clone();
    disabled["enabled"] = json!(false);
    assert_eq!(
        serve.post("/api/v1/schedule", &admin, &disabled).await.1["next_run"],
        Value::Null
    );
    assert_eq!(
        serve
            .call(
                "DELETE",
                "/api/v1/schedule",
                &admin,
                Some(json!({"entry_id": "nightly"}).to_string())
            )
            .await
            .0,
        200
    );
    assert_eq!(
        serve
            .call("DELETE", "/api/v1/schedule/nightly", &admin, None)
            .await
            .0,
        404
    );

    // Roles and bindings.
    let (_, roles) = serve.get("/api/v1/roles", &admin).await;
    assert_eq!(roles.as_array().unwrap().len(), 5);
    assert_eq!(
        roles[4]["includes"],
        json!(["view", "execute", "configuration", "developer"])
    );
    let binding = json!({"owner": "ops", "owner_type": "group", "role": "developer"});
    assert_eq!(
        serve.post("/api/v1/roles/owner", &admin, &binding).await,
        (200, binding.clone())
    );
    let (status, body) = serve
        .post(
            "/api/v1/roles/owner",
            &admin,
            &json!({"owner": "x", "role": "root"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (400, Some("role"))
    );
    assert_eq!(
        serve
            .get("/api/v1/roles/owner?owner_type=group", &admin)
            .await
            .1,
        json!([binding])
    );
    assert_eq!(
        serve
            .call(
                "DELETE",
                "/api/v1/roles/owner?owner=ops&owner_type=group",
                &admin,
                None
            )
            .await
            .0,
        200
    );
    assert_eq!(
        serve
            .call(
                "DELETE",
                "/api/v1/roles/owner",
                &admin,
                Some(json!({"owner": "ops", "owner_type": "group"}).to_string())
            )
            .await
            .0,
        404
    );

    // Tokens over the API: shown once, usable at once, revocable.
    let (status, created) = serve
        .post(
            "/api/v1/tokens",
            &admin,
            &json!({"name": "api-made", "role": "view"}),
        )
        .await;
    assert_eq!(status, 200);
    let token = Auth::Token(created["token"].as_str().unwrap().to_string());
    assert_eq!(serve.get("/api/v1/applications", &token).await.0, 200);
    assert_eq!(
        serve
            .post(
                "/api/v1/tokens",
                &admin,
                &json!({"name": "api-made", "role": "view"})
            )
            .await
            .0,
        409
    );
    let (_, tokens) = serve.get("/api/v1/tokens", &admin).await;
    assert!(!tokens
        .to_string()
        .contains(created["token"].as_str().unwrap()));
    assert_eq!(
        serve
            .call("DELETE", "/api/v1/tokens/api-made", &admin, None)
            .await
            .0,
        200
    );
    assert_eq!(serve.get("/api/v1/applications", &token).await.0, 401);

    // Deleting.
    assert_eq!(
        serve
            .call("DELETE", "/api/v1/configurations/other", &admin, None)
            .await
            .0,
        404
    );
    assert_eq!(
        serve
            .call("DELETE", "/api/v1/applications/hello", &admin, None)
            .await
            .0,
        200
    );
    assert_eq!(
        serve
            .call("DELETE", "/api/v1/configurations/cfg", &admin, None)
            .await
            .0,
        200
    );

    // Unknown endpoints and methods are JSON errors too.
    assert_eq!(
        serve.get("/api/v1/nope", &admin).await.1["error"]["code"],
        "not_found"
    );
    assert_eq!(
        serve
            .call("PUT", "/api/v1/applications", &admin, None)
            .await
            .0,
        405
    );

    // No response or stored byte outside the secret store carries the secret.
    assert_eq!(serve.stop().await, 0);
    let bytes = s.data_dir_bytes();
    assert!(
        !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
        "the secret is stored in clear"
    );
}

/// Every route of the served OpenAPI document (generated from the route table the
/// authorization layer reads) × every identity: no route answers a caller below its
/// role with anything but 401/403, and every caller at or above it gets through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_matrix_covers_every_route() {
    let s = Scratch::new();
    let mut tokens = Vec::new();
    for role in [
        "view",
        "execute",
        "configuration",
        "developer",
        "administrator",
    ] {
        tokens.push((role, Auth::Token(s.token(&format!("t-{role}"), role).await)));
    }
    let serve = s.serve().await;
    let (_, doc) = serve.get("/api/v1/openapi.json", &Auth::Admin).await;
    let order = [
        "view",
        "execute",
        "configuration",
        "developer",
        "administrator",
    ];
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let url = path
                .replace("{name}", "zz")
                .replace("{id}", "isapp-zz")
                .replace("{step}", "zz")
                .replace("{entry_id}", "zz")
                .replace("{key}", "zz");
            let method = method.to_uppercase();
            let body = (method != "GET").then(|| "{}".to_string());
            let required = op["x-sluice-role"].as_str();
            let (status, _) = serve.call(&method, &url, &Auth::None, body.clone()).await;
            match required {
                None => assert!(status < 400, "public {method} {path}: {status}"),
                Some(_) => assert_eq!(status, 401, "anonymous {method} {path}"),
            }
            let Some(required) = required else { continue };
            let rank = order.iter().position(|r| *r == required).unwrap();
            for (i, (role, auth)) in tokens.iter().enumerate() {
                let (status, body_out) = serve.call(&method, &url, auth, body.clone()).await;
                if i < rank {
                    assert_eq!(status, 403, "{role} on {method} {path}: {body_out}");
                } else {
                    assert!(
                        status != 401 && status != 403,
                        "{role} on {method} {path}: {status} {body_out}"
                    );
                }
                checked += 1;
            }
            let (status, _) = serve.call(&method, &url, &Auth::Admin, body).await;
            assert!(status != 401 && status != 403, "admin on {method} {path}");
        }
    }
    assert!(
        checked >= 5 * 35,
        "only {checked} checks: routes missing from the document?"
    );
}

fn quick_app() -> Value {
    json!({"name": "tick", "author": "e2e", "steps": [{"id": "A", "type": "echo", "parameters": {"value": "${run.id}"}}]})
}

/// `sluice serve` runs the scheduler: a schedule whose last handled tick is three
/// minutes old (the server was down) fires its latest due tick on start, once, counted,
/// and a restart never fires it again. Time is driven through the stored tick rather than
/// waited for; the timing itself (due ticks, no bursts, disabled schedules) is
/// `shared/api/tests/scheduler.rs` on a fake clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_fire_when_due_and_never_twice() {
    use chrono::{DurationRound, Utc};

    let s = Scratch::new();
    let serve = s.serve().await;
    let admin = Auth::Admin;
    assert_eq!(
        serve
            .post("/api/v1/applications", &admin, &quick_app())
            .await
            .0,
        200
    );
    let every_minute = json!({"application_id": "tick", "entry_id": "minutely", "params": {"queue": "sched"},
        "schedule": {"schedule_type": "crontab", "schedule_info": {"minute": "*"}}});
    let (status, entry) = serve.post("/api/v1/schedule", &admin, &every_minute).await;
    assert_eq!(status, 200, "{entry}");
    assert_eq!(entry["total_runs"], 0, "{entry}");
    assert_eq!(serve.stop().await, 0);

    // Down for three minutes: the last tick the schedule handled is that old.
    let stopped_at = Utc::now();
    {
        let store = sluice_embedded::EmbeddedStore::open(&s.data_dir()).unwrap();
        let stats = store.schedule_stats();
        stats.delete_stats("minutely").await.unwrap();
        assert!(stats
            .claim_tick("minutely", stopped_at - chrono::Duration::minutes(3))
            .await
            .unwrap());
    }

    let serve = s.serve().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let entry = loop {
        let (_, entry) = serve.get("/api/v1/schedule/minutely", &admin).await;
        if entry["total_runs"].as_u64().unwrap() >= 1 {
            break entry;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the scheduler loop did not fire the due tick: {entry}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        entry["total_runs"], 1,
        "one missed tick fires, not three: {entry}"
    );
    let started: chrono::DateTime<Utc> = entry["last_run"]["start_time"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(started >= stopped_at, "{entry}");
    // The latest due tick: the minute the pass ran in (or the one before, at a boundary).
    let minute = started
        .duration_trunc(chrono::Duration::minutes(1))
        .unwrap();
    let task_id = entry["last_run"]["task_id"].as_str().unwrap();
    assert!(
        [minute, minute - chrono::Duration::minutes(1)]
            .iter()
            .any(|tick| sluice_api::schedules::tick_run_id("minutely", *tick) == task_id),
        "{entry}"
    );
    let task = entry["last_run"]["href"].as_str().unwrap().to_string();
    let (_, run) = serve.get(&format!("{task}?wait=20"), &admin).await;
    assert_eq!(
        (run["state"].as_str(), run["queue"].as_str()),
        (Some("success"), Some("sched")),
        "{run}"
    );

    // Restart: the fired tick stays fired.
    assert_eq!(serve.stop().await, 0);
    let serve = s.serve().await;
    let (_, entry) = serve.get("/api/v1/schedule/minutely", &admin).await;
    let (_, runs) = serve.get("/api/v1/tasks?application=tick", &admin).await;
    assert_eq!(
        entry["total_runs"], runs["count"],
        "one counted run per run started: {entry} {runs}"
    );
    assert_eq!(serve.stop().await, 0);
}

/// SIGTERM lets a running step finish and record its result; the next `serve` resumes
/// the run without running that step again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_then_resume_on_start() {
    let web = TestServer::start().await;
    web.on(
        "slow",
        Behaviour::Slow(Duration::from_secs(2), json!({"ok": true})),
    );
    let s = Scratch::new();
    let serve = s.serve().await;
    let admin = Auth::Admin;
    let app = json!({"name": "slowpoke", "author": "e2e", "steps": [
        {"id": "Slow", "type": "http_request", "parameters": {"url": format!("{}/slow", web.base)}},
        {"id": "After", "type": "echo", "depends_on": ["Slow"], "parameters": {"value": "${Slow.ok}"}}]});
    assert_eq!(
        serve.post("/api/v1/applications", &admin, &app).await.0,
        200
    );
    let (_, task) = serve
        .post("/api/v1/applications/slowpoke/run", &admin, &json!({}))
        .await;
    let id = task["task_id"].as_str().unwrap().to_string();
    assert!(crate::support::eventually(Duration::from_secs(10), || web.hits("slow") == 1).await);
    assert_eq!(serve.stop().await, 0, "a graceful stop exits 0");

    let serve = s.serve().await;
    let (_, run) = serve
        .get(&format!("/api/v1/tasks/{id}?wait=20&outputs=true"), &admin)
        .await;
    assert_eq!(run["state"], "success", "{run}");
    assert_eq!(
        run["steps"]["Slow"]["attempts"], 1,
        "the finished step did not run again"
    );
    assert_eq!(run["steps"]["After"]["output"], true);
    assert_eq!(web.hits("slow"), 1);
    assert_eq!(serve.stop().await, 0);
}
