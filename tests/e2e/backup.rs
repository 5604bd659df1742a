//! The restore drill: `sluice backup` of a data directory while `sluice serve` runs and
//! writes, `sluice restore` into a new directory, and a server on the restored copy that
//! has every run, output and secret the backup saw. Prints how long the drill took
//! (docs/benchmarks.md records it).

use std::time::Instant;

use serde_json::json;

use crate::support::{Auth, Scratch};

const SECRET: &str = "restore-drill-s3cret";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_drill_backup_while_serving_then_restore_and_serve_the_copy() {
    let s = Scratch::new();
    let admin = Auth::Admin;
    let serve = s.serve().await;
    let config = json!({"name": "drill", "author": "e2e", "data": [
        {"name": "token", "value": SECRET, "encrypted": true}]});
    assert_eq!(
        serve
            .post("/api/v1/configurations", &admin, &config)
            .await
            .0,
        200
    );
    // A large output (kept as a file under outputs/) and a secret the step uses.
    let app = json!({"name": "drill", "author": "e2e", "configuration": "drill", "steps": [
        {"id": "Big", "type": "transform", "parameters": {"template": "{{ {'blob': 'x' * 307200} | tojson }}"}},
        {"id": "Uses", "type": "echo", "depends_on": ["Big"], "parameters": {"value": {"len": "${config.token}"}}}
    ]});
    assert_eq!(
        serve.post("/api/v1/applications", &admin, &app).await.0,
        200
    );
    let mut finished = Vec::new();
    for _ in 0..5 {
        let (status, task) = serve
            .post("/api/v1/applications/drill/run?wait=25", &admin, &json!({}))
            .await;
        assert_eq!(
            (status, task["state"].as_str()),
            (200, Some("success")),
            "{task}"
        );
        finished.push(task["task_id"].as_str().unwrap().to_string());
    }

    // Back up while the server keeps starting runs.
    let writer = {
        let base = serve.base.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            for _ in 0..10 {
                let _ = http
                    .post(format!("{base}/api/v1/applications/drill/run"))
                    .basic_auth("admin", Some(crate::support::ADMIN_PASSWORD))
                    .json(&json!({}))
                    .send()
                    .await;
            }
        })
    };
    let archive = s.path().join("drill.tar");
    let archive_arg = archive.display().to_string();
    let drill = Instant::now();
    let backed_up = s.sluice(&["backup", &archive_arg]).await.expect(0);
    let backup_seconds = drill.elapsed().as_secs_f64();
    writer.await.unwrap();
    assert!(
        backed_up.stderr().contains("secret key included"),
        "{}",
        backed_up.stderr()
    );
    // Never over an existing archive.
    s.sluice(&["backup", &archive_arg]).await.expect(2);

    // Restore into a new data directory (never over the live one) and serve it.
    let restored = Scratch::new();
    let started = Instant::now();
    restored.sluice(&["restore", &archive_arg]).await.expect(0);
    let restore_seconds = started.elapsed().as_secs_f64();
    let over_live = s.sluice(&["restore", &archive_arg]).await.expect(2);
    assert!(
        over_live.stderr().contains("not empty"),
        "{}",
        over_live.stderr()
    );
    assert_eq!(serve.stop().await, 0);

    let copy = restored.serve().await;
    for id in &finished {
        let (status, task) = copy
            .get(&format!("/api/v1/tasks/{id}?outputs=true"), &admin)
            .await;
        assert_eq!(status, 200, "{task}");
        assert_eq!(task["state"], "success");
        assert_eq!(
            task["steps"]["Big"]["output"]["blob"]
                .as_str()
                .map(str::len),
            Some(300 * 1024),
            "the large output came back from outputs/"
        );
    }
    // The secret still decrypts: a new run on the copy uses it.
    let (status, task) = copy
        .post("/api/v1/applications/drill/run?wait=25", &admin, &json!({}))
        .await;
    assert_eq!(
        (status, task["state"].as_str()),
        (200, Some("success")),
        "{task}"
    );
    assert_eq!(copy.stop().await, 0);
    println!(
        "restore drill: backup {backup_seconds:.2}s, restore {restore_seconds:.2}s, \
         archive {} bytes",
        std::fs::metadata(&archive).unwrap().len()
    );
}
