//! PowerFlow compatibility (issue 12) over `sluice serve` and the CLI: a listed schedule
//! sent back as it is, application ids with capitals, role names in any case, and
//! hidden applications left out of listings unless asked.

use serde_json::{json, Value};

use crate::support::{Auth, Scratch};

fn app(name: &str, hidden: bool) -> Value {
    json!({"name": name, "author": "e2e", "meta": {"hidden": hidden},
        "steps": [{"id": "A", "type": "echo", "parameters": {"value": 1}}]})
}

fn names(list: &Value) -> Vec<&str> {
    let mut names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn powerflow_documents_are_accepted_over_http() {
    let s = Scratch::new();
    let serve = s.serve().await;
    let admin = Auth::Admin;

    // Ids with capitals; a second id differing only in case is refused naming `name`.
    let (status, body) = serve
        .post(
            "/api/v1/applications",
            &admin,
            &app("CreateServiceNowCI", false),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = serve
        .post(
            "/api/v1/applications",
            &admin,
            &app("createservicenowci", false),
        )
        .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("name")),
        "{body}"
    );
    let (status, body) = serve
        .get("/api/v1/applications/CreateServiceNowCI", &admin)
        .await;
    assert_eq!(
        (status, body["name"].as_str()),
        (200, Some("CreateServiceNowCI"))
    );

    // Hidden applications: out of the listing unless asked, still found by id.
    serve
        .post("/api/v1/applications", &admin, &app("internal", true))
        .await;
    let (_, list) = serve.get("/api/v1/applications", &admin).await;
    assert_eq!(names(&list), ["CreateServiceNowCI"]);
    let (_, list) = serve.get("/api/v1/applications?hidden=true", &admin).await;
    assert_eq!(names(&list), ["CreateServiceNowCI", "internal"]);
    assert_eq!(
        serve.get("/api/v1/applications/internal", &admin).await.0,
        200
    );
    let (status, body) = serve.get("/api/v1/applications?hidden=maybe", &admin).await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (400, Some("hidden"))
    );

    // The schedule body of PowerFlow's manual: read-only fields and a float run_every.
    let manual = json!({"application_id": "CreateServiceNowCI", "entry_id": "hourly",
        "schedule": {"schedule_type": "frequency", "schedule_info": {"run_every": 3600.0}},
        "enabled": false, "total_runs": 0, "last_run": null, "next_run": null});
    let (status, entry) = serve.post("/api/v1/schedule", &admin, &manual).await;
    assert_eq!(status, 200, "{entry}");
    assert_eq!(entry["schedule"]["schedule_info"]["run_every"], 3600);
    // What the listing returns can be sent back as it is.
    let (_, listed) = serve.get("/api/v1/schedule", &admin).await;
    let (status, again) = serve.post("/api/v1/schedule", &admin, &listed[0]).await;
    assert_eq!(status, 200, "{again}");
    let mut fractional = manual.clone();
    fractional["schedule"]["schedule_info"]["run_every"] = json!(3600.5);
    let (status, body) = serve.post("/api/v1/schedule", &admin, &fractional).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["field"], "schedule.schedule_info.run_every");
    let mut unknown = manual.clone();
    unknown["total_runz"] = json!(0);
    let (status, body) = serve.post("/api/v1/schedule", &admin, &unknown).await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (400, Some("total_runz")),
        "{body}"
    );

    // Role names in any case, stored lowercase.
    let binding = json!({"owner": "ops", "owner_type": "group", "role": "Developer"});
    let (status, body) = serve.post("/api/v1/roles/owner", &admin, &binding).await;
    assert_eq!(
        (status, body["role"].as_str()),
        (200, Some("developer")),
        "{body}"
    );
    let (status, body) = serve
        .post(
            "/api/v1/tokens",
            &admin,
            &json!({"name": "t", "role": "VIEW"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // The CLI in client mode: `apps list` hides, `--hidden` shows.
    let token = s.token("lister", "view").await;
    let list = s.client(&serve, &token, &["apps", "list"]).await.expect(0);
    assert!(!list.stdout().contains("internal"), "{}", list.stdout());
    let list = s
        .client(&serve, &token, &["apps", "list", "--hidden"])
        .await
        .expect(0);
    assert!(list.stdout().contains("internal"), "{}", list.stdout());
    assert_eq!(serve.stop().await, 0);
}

#[tokio::test]
async fn apps_list_hides_hidden_applications_unless_asked() {
    let s = Scratch::new();
    for (name, hidden) in [("shown", false), ("Hidden_One", true)] {
        let file = s.write(&format!("{name}.json"), &app(name, hidden).to_string());
        s.sluice(&["apps", "push", file.to_str().unwrap()])
            .await
            .expect(0);
    }
    let list = s.sluice(&["apps", "list"]).await.expect(0);
    assert!(list.stdout().starts_with("shown"), "{}", list.stdout());
    assert!(!list.stdout().contains("Hidden_One"), "{}", list.stdout());
    let list = s.sluice(&["apps", "list", "--hidden"]).await.expect(0);
    assert!(list.stdout().contains("Hidden_One"), "{}", list.stdout());
    s.sluice(&["configs", "list", "--hidden"]).await.expect(2);
    // A second id differing only in case is refused.
    let twin = s.write("twin.json", &app("hidden_one", false).to_string());
    let done = s
        .sluice(&["apps", "push", twin.to_str().unwrap()])
        .await
        .expect(2);
    assert!(
        done.stderr().contains("differs only in case"),
        "{}",
        done.stderr()
    );
}

/// A Transform in PowerFlow's style: a list and a dict built with `append` and `update`
/// over a predecessor's output, run end to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transforms_using_jinja_mutating_idioms_run_unchanged() {
    let s = Scratch::new();
    let template = "{% set names = [] %}{% set by_os = {} %}{% for d in input.devices %}{% set _ = names.append(d.name) %}{% do by_os.setdefault(d.os, []).append(d.ip) %}{% endfor %}{% set summary = {'count': names | length} %}{% do summary.update({'names': names, 'by_os': by_os}) %}{{ summary | tojson }}";
    let file = s.write(
        "app.json",
        &json!({"name": "ServiceNowDevices", "author": "e2e", "steps": [
            {"id": "Fetch", "type": "echo", "parameters": {"value": {"devices": [
                {"name": "web-1", "ip": "10.0.0.1", "os": "linux"},
                {"name": "dc-1", "ip": "10.0.0.2", "os": "windows"},
                {"name": "db-1", "ip": "10.0.0.3", "os": "linux"}]}}},
            {"id": "Shape", "type": "transform", "depends_on": ["Fetch"],
             "parameters": {"template": template}}
        ]})
        .to_string(),
    );
    let doc = s
        .sluice(&["run", file.to_str().unwrap(), "--output", "json"])
        .await
        .expect(0)
        .json();
    assert_eq!(
        doc["steps"]["Shape"]["output"],
        json!({"count": 3, "names": ["web-1", "dc-1", "db-1"],
               "by_os": {"linux": ["10.0.0.1", "10.0.0.3"], "windows": ["10.0.0.2"]}})
    );
}
