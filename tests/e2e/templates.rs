//! Templates under `sluice serve`: a template that would loop for hours or exhaust memory
//! fails its own step while the server keeps answering and stops on SIGTERM, and a run
//! param holding template code is printed, never executed (docs/semantics.md,
//! "Template limits", "References are data").

use serde_json::json;

use crate::support::{Auth, Scratch};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_templates_fail_alone_and_the_server_keeps_answering() {
    let s = Scratch::new();
    let serve = s.serve().await;
    let admin = Auth::Admin;
    let nested = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
    let doubling = "{% set ns = namespace(s='0123456789abcdef') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}";
    let app = json!({"name": "heavy", "author": "e2e",
    "app_variables": [{"name": "who", "value": "world"}],
    "steps": [
        {"id": "Loops", "type": "transform", "timeout_seconds": 3,
         "parameters": {"template": nested, "output": "text"}},
        {"id": "Grow", "type": "transform",
         "parameters": {"template": doubling, "output": "text"}},
        {"id": "Hello", "type": "transform",
         "parameters": {"template": "Hello ${vars.who} {{ 7*7 }}", "output": "text"}}
    ]});
    let (status, body) = serve.post("/api/v1/applications", &admin, &app).await;
    assert_eq!(status, 200, "{body}");

    // More heavy runs than the server has async workers.
    let mut ids = Vec::new();
    for _ in 0..4 {
        let (status, task) = serve
            .post(
                "/api/v1/applications/heavy/run",
                &admin,
                &json!({"params": {"who": "{{ 6*7 }}"}}),
            )
            .await;
        assert_eq!(status, 200, "{task}");
        ids.push(task["task_id"].as_str().unwrap().to_string());
    }
    // The server answers while they render.
    for _ in 0..5 {
        assert_eq!(serve.get("/healthcheck", &Auth::None).await.0, 200);
    }
    for id in &ids {
        let (status, task) = serve
            .get(&format!("/api/v1/tasks/{id}?wait=25&outputs=true"), &admin)
            .await;
        assert_eq!(status, 200, "{task}");
        let mut state = task["state"].clone();
        let mut task = task;
        while state == "running" || state == "pending" {
            let (_, again) = serve
                .get(&format!("/api/v1/tasks/{id}?wait=25&outputs=true"), &admin)
                .await;
            state = again["state"].clone();
            task = again;
        }
        assert_eq!(state, "failure", "{task}");
        let steps = &task["steps"];
        assert_eq!(
            steps["Hello"]["output"],
            json!("Hello {{ 6*7 }} 49"),
            "{task}"
        );
        let loops = steps["Loops"].to_string();
        assert!(
            loops.contains("steps of work")
                || loops.contains("did not finish within")
                || loops.contains("timed out after 3 seconds"),
            "{loops}"
        );
        assert!(steps["Grow"].to_string().contains("MB of memory"), "{task}");
    }
    assert_eq!(serve.get("/healthcheck", &Auth::None).await.0, 200);
    assert_eq!(serve.stop().await, 0);
}
