//! Bulk operations from the command line, on the data directory and through `sluice
//! serve`: `runs revoke --application APP` / `--all`, `cache list [--prefix]` and
//! `cache delete --prefix`, with the administrator role for the bulk forms remotely.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{eventually, Auth, Behaviour, Done, Scratch, TestServer};

/// An application whose only step waits on the test server's `path`, so its runs stay
/// running until revoked.
fn slow_app(name: &str, server: &TestServer, path: &str) -> Value {
    json!({"name": name, "author": "e2e", "steps": [
        {"id": "Slow", "type": "http_request", "parameters": {"url": format!("{}/{path}", server.base)}},
        {"id": "Never", "type": "echo", "depends_on": ["Slow"], "parameters": {"value": 1}}
    ]})
}

fn cache_app() -> Value {
    json!({"name": "fill_cache", "author": "e2e", "steps": [
        {"id": "A", "type": "cache", "parameters": {"action": "save", "key": "sync:a", "value": 1}},
        {"id": "B", "type": "cache", "parameters": {"action": "save", "key": "sync:b", "value": 2}},
        {"id": "C", "type": "cache", "parameters": {"action": "save", "key": "other", "value": 3}}
    ]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_revoke_and_cache_prefix_commands_on_the_data_directory() {
    let server = TestServer::start().await;
    server.on("slow", Behaviour::Slow(Duration::from_secs(3), json!(1)));
    let s = Scratch::new();
    let app = s.write(
        "app.json",
        &slow_app("revocable", &server, "slow").to_string(),
    );
    let run = s
        .command(&["run", app.to_str().unwrap(), "--output", "json"])
        .output();
    let revoker = async {
        let srv = server.clone();
        assert!(eventually(Duration::from_secs(30), || srv.hits("slow") == 1).await);
        let done = s
            .sluice(&["runs", "revoke", "--application", "revocable"])
            .await
            .expect(0);
        assert_eq!(done.stdout().trim(), "Revoked 1 run of revocable");
    };
    let (output, ()) = tokio::join!(run, revoker);
    let doc = Done(output.unwrap()).expect(1).json();
    assert_eq!(doc["state"], "revoked");
    assert_eq!(doc["steps"]["Never"]["state"], "cancelled");

    let done = s.sluice(&["runs", "revoke", "--all"]).await.expect(0);
    assert_eq!(done.stdout().trim(), "Revoked 0 runs");
    let done = s
        .sluice(&["runs", "revoke", "--application", "nosuch"])
        .await
        .expect(2);
    assert!(
        done.stderr().contains("application \"nosuch\" not found"),
        "{}",
        done.stderr()
    );
    // Exactly one of a run id, --application, --all.
    s.sluice(&["runs", "revoke"]).await.expect(2);
    s.sluice(&["runs", "revoke", "x", "--all"]).await.expect(2);

    let fill = s.write("cache.json", &cache_app().to_string());
    s.sluice(&["run", fill.to_str().unwrap()]).await.expect(0);
    let listed = s.sluice(&["cache", "list"]).await.expect(0).stdout();
    assert_eq!(listed, "other\nsync:a\nsync:b\n");
    let listed = s
        .sluice(&["cache", "list", "--prefix", "sync:", "--limit", "1"])
        .await
        .expect(0)
        .stdout();
    assert_eq!(listed, "sync:a\n");
    let done = s
        .sluice(&["cache", "delete", "--prefix", "sync:"])
        .await
        .expect(0);
    assert_eq!(
        done.stdout().trim(),
        "Deleted 2 cache entries with prefix \"sync:\""
    );
    let listed = s.sluice(&["cache", "list"]).await.expect(0).stdout();
    assert_eq!(listed, "other\n");
    s.sluice(&["cache", "delete", "other"]).await.expect(0);
    s.sluice(&["cache", "delete"]).await.expect(2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_revoke_and_cache_prefix_commands_through_the_server() {
    let server = TestServer::start().await;
    server.on("held", Behaviour::Slow(Duration::from_secs(3), json!(1)));
    let s = Scratch::new();
    let admin = s.token("bulk-admin", "administrator").await;
    let execute = s.token("bulk-exec", "execute").await;
    let view = s.token("bulk-view", "view").await;
    let serve = s.serve().await;
    let root = Auth::Admin;
    for app in [slow_app("held", &server, "held"), cache_app()] {
        let (status, doc) = serve.post("/api/v1/applications", &root, &app).await;
        assert_eq!(status, 200, "{doc}");
    }
    let mut runs = Vec::new();
    for _ in 0..2 {
        let (status, doc) = serve
            .post("/api/v1/applications/held/run", &root, &json!({}))
            .await;
        assert_eq!(status, 200, "{doc}");
        runs.push(doc["task_id"].as_str().unwrap().to_string());
    }
    let srv = server.clone();
    assert!(eventually(Duration::from_secs(30), || srv.hits("held") == 2).await);

    // The bulk forms need the administrator: 403 exits 3.
    s.client(
        &serve,
        &execute,
        &["runs", "revoke", "--application", "held"],
    )
    .await
    .expect(3);
    s.client(&serve, &execute, &["runs", "revoke", "--all"])
        .await
        .expect(3);
    for id in &runs {
        let (_, doc) = serve.get(&format!("/api/v1/tasks/{id}"), &root).await;
        assert_eq!(doc["state"], "running", "{doc}");
    }
    let done = s
        .client(&serve, &admin, &["runs", "revoke", "--application", "held"])
        .await
        .expect(0);
    assert_eq!(done.stdout().trim(), "Revoked 2 runs of held");
    for id in &runs {
        let (_, doc) = serve.get(&format!("/api/v1/tasks/{id}"), &root).await;
        assert_eq!(doc["state"], "revoked", "{doc}");
    }
    let done = s
        .client(&serve, &admin, &["runs", "revoke", "--all"])
        .await
        .expect(0);
    assert_eq!(done.stdout().trim(), "Revoked 0 runs");
    s.client(
        &serve,
        &admin,
        &["runs", "revoke", "--application", "nosuch"],
    )
    .await
    .expect(2);

    let (status, doc) = serve
        .post(
            "/api/v1/applications/fill_cache/run?wait=25",
            &root,
            &json!({}),
        )
        .await;
    assert_eq!(
        (status, doc["state"].as_str()),
        (200, Some("success")),
        "{doc}"
    );
    let listed = s
        .client(&serve, &view, &["cache", "list", "--prefix", "sync:"])
        .await
        .expect(0)
        .stdout();
    assert_eq!(listed, "sync:a\nsync:b\n");
    s.client(&serve, &view, &["cache", "delete", "--prefix", "sync:"])
        .await
        .expect(3);
    let done = s
        .client(&serve, &admin, &["cache", "delete", "--prefix", "sync:"])
        .await
        .expect(0);
    assert_eq!(
        done.stdout().trim(),
        "Deleted 2 cache entries with prefix \"sync:\""
    );
    let listed = s
        .client(&serve, &view, &["cache", "list"])
        .await
        .expect(0)
        .stdout();
    assert_eq!(listed, "other\n");
    assert_eq!(serve.stop().await, 0);
}
