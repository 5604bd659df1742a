//! Versions of definitions from the outside: history after three pushes (one of them
//! identical), diff, rollback, and the run recording the version it executed, embedded
//! and against `sluice serve` (`--endpoint`).

use serde_json::{json, Value};

use crate::support::Scratch;

fn app(description: &str) -> String {
    json!({
        "name": "versioned", "author": "e2e", "description": description,
        "steps": [{"id": "A", "type": "echo", "parameters": {"value": 1}}]
    })
    .to_string()
}

fn numbers(history: &Value) -> Vec<u64> {
    history
        .as_array()
        .expect("a list of versions")
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_diff_rollback_and_the_run_version_embedded() {
    let s = Scratch::new();
    for (i, description) in ["one", "one", "two"].iter().enumerate() {
        let file = s.write(&format!("app{i}.json"), &app(description));
        let output = s
            .command(&["apps", "push", file.to_str().unwrap()])
            .env("USER", "alice")
            .output()
            .await
            .unwrap();
        assert!(output.status.success(), "{output:?}");
    }
    let history = s
        .sluice(&["apps", "history", "versioned", "--output", "json"])
        .await
        .expect(0)
        .json();
    assert_eq!(
        numbers(&history),
        [2, 1],
        "the identical push stored nothing"
    );
    assert_eq!(history[0]["author"], "alice");
    let text = s.sluice(&["apps", "history", "versioned"]).await.expect(0);
    assert!(text.stdout().starts_with("v2 "), "{}", text.stdout());

    let diff = s
        .sluice(&["apps", "diff", "versioned", "1", "2"])
        .await
        .expect(0);
    assert_eq!(diff.stdout().trim(), r#"~ description: "one" -> "two""#);
    let json_diff = s
        .sluice(&["apps", "diff", "versioned", "1", "2", "--output", "json"])
        .await
        .expect(0)
        .json();
    assert_eq!(json_diff[0]["op"], "changed");

    let rolled = s
        .sluice(&["apps", "rollback", "versioned", "1"])
        .await
        .expect(0);
    assert!(
        rolled.stdout().contains("stored as version 3"),
        "{}",
        rolled.stdout()
    );
    let current = s
        .sluice(&["apps", "get", "versioned"])
        .await
        .expect(0)
        .json();
    assert_eq!(current["description"], "one");

    s.sluice(&["run", "versioned"]).await.expect(0);
    let id = s.newest_run_id().await;
    let listed = s
        .sluice(&["runs", "list", "--output", "json"])
        .await
        .expect(0)
        .json();
    assert_eq!(listed[0]["task_id"], id.as_str());
    assert_eq!(listed[0]["application_version"], 3, "{listed}");

    // Bad input exits 2 naming what is wrong.
    let bad = s
        .sluice(&["apps", "diff", "versioned", "0", "2"])
        .await
        .expect(2);
    assert!(bad.stderr().contains("from"), "{}", bad.stderr());
    let missing = s
        .sluice(&["apps", "diff", "versioned", "1", "9"])
        .await
        .expect(2);
    assert!(
        missing.stderr().contains("no version 9"),
        "{}",
        missing.stderr()
    );
    s.sluice(&["apps", "history", "never"]).await.expect(2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_and_rollback_through_the_api() {
    let s = Scratch::new();
    let serve = s.serve().await;
    let token = s.token("deployer", "developer").await;
    for (i, description) in ["one", "one", "two"].iter().enumerate() {
        let file = s.write(&format!("app{i}.json"), &app(description));
        s.client(&serve, &token, &["apps", "push", file.to_str().unwrap()])
            .await
            .expect(0);
    }
    let history = s
        .client(
            &serve,
            &token,
            &["apps", "history", "versioned", "--output", "json"],
        )
        .await
        .expect(0)
        .json();
    assert_eq!(numbers(&history), [2, 1]);
    assert_eq!(history[0]["author"], "token:deployer");
    let diff = s
        .client(&serve, &token, &["apps", "diff", "versioned", "2", "1"])
        .await
        .expect(0);
    assert_eq!(diff.stdout().trim(), r#"~ description: "two" -> "one""#);
    let rolled = s
        .client(&serve, &token, &["apps", "rollback", "versioned", "1"])
        .await
        .expect(0);
    assert!(rolled.stdout().contains("version 3"), "{}", rolled.stdout());

    let config = s.write(
        "config.json",
        &json!({"name": "acme", "data": [
            {"name": "host", "value": "h.example"},
            {"name": "token", "value": "s3cr3t-e2e", "encrypted": true}
        ]})
        .to_string(),
    );
    let admin = s.token("configurer", "administrator").await;
    s.client(
        &serve,
        &admin,
        &["configs", "push", config.to_str().unwrap()],
    )
    .await
    .expect(0);
    let configs = s
        .client(&serve, &admin, &["configs", "history", "acme"])
        .await
        .expect(0);
    assert!(
        configs.stdout().contains("encrypted: token") && !configs.stdout().contains("s3cr3t"),
        "{}",
        configs.stdout()
    );
    let viewer = s.token("viewer", "view").await;
    s.client(&serve, &viewer, &["configs", "history", "acme"])
        .await
        .expect(0);
    let refused = s
        .client(&serve, &viewer, &["configs", "rollback", "acme", "1"])
        .await;
    assert_ne!(refused.code(), 0, "a viewer may not roll back");
    assert_eq!(serve.stop().await, 0);
}
