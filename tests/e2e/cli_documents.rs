//! Documents from the outside: validate, schema, apps and configs, and exit code 2 for bad
//! input with messages that name the field or line.

use serde_json::{json, Value};

use crate::support::{repo, Scratch};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn examples_validate() {
    let s = Scratch::new();
    let examples = repo().join("examples");
    let files = [
        "inventory-sync/app.json",
        "inventory-sync/config.json",
        "branching/app.json",
        "fan-out-join/app.json",
    ];
    let paths: Vec<String> = files
        .iter()
        .map(|f| examples.join(f).display().to_string())
        .collect();
    let args: Vec<&str> = std::iter::once("validate")
        .chain(paths.iter().map(String::as_str))
        .collect();
    let done = s.sluice(&args).await.expect(0);
    assert_eq!(
        done.stdout().matches(": valid ").count(),
        4,
        "{}",
        done.stdout()
    );
    assert!(done.stdout().contains("config.json: valid configuration"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_documents_exit_2_naming_field_and_line() {
    let s = Scratch::new();
    let malformed = s.write(
        "malformed.json",
        "{\n  \"name\": \"x\",\n  \"author\": \"a\"\n  \"steps\": []\n}\n",
    );
    let done = s
        .sluice(&["validate", malformed.to_str().unwrap()])
        .await
        .expect(2);
    assert!(
        done.stderr()
            .contains("malformed.json: line 4, column 3: malformed JSON"),
        "{}",
        done.stderr()
    );

    let bad = s.write(
        "bad.json",
        &json!({"name": "bad", "author": "me", "steps": [
            {"id": "A", "type": "echo", "parameters": {"value": 1}},
            {"id": "B", "type": "echo", "depends_on": ["Ghost"], "parameters": {"value": 1, "volume": 11}},
            {"id": "C", "type": "teleport"},
            {"id": "D", "type": "http_request", "parameters": {}}
        ]})
        .to_string(),
    );
    let done = s
        .sluice(&["validate", bad.to_str().unwrap()])
        .await
        .expect(2);
    let err = done.stderr();
    for expected in [
        "bad.json: steps[1].depends_on[0]: unknown step \"Ghost\"",
        "bad.json: steps[1].parameters.volume: unknown parameter \"volume\" for step type \"echo\"",
        "bad.json: steps[2].type: unknown step type \"teleport\"",
        "bad.json: steps[3].parameters: missing required parameter \"url\" for step type \"http_request\"",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }

    let unknown_field = s.write("field.json", r#"{"name": "x", "author": "a", "stepz": []}"#);
    let done = s
        .sluice(&["validate", unknown_field.to_str().unwrap()])
        .await
        .expect(2);
    assert!(
        done.stderr().contains("unknown field `stepz`"),
        "{}",
        done.stderr()
    );

    let cycle = s.write(
        "cycle.json",
        &json!({"name": "cycle", "author": "me", "steps": [
            {"id": "A", "type": "echo", "depends_on": ["B"], "parameters": {"value": 1}},
            {"id": "B", "type": "echo", "depends_on": ["A"], "parameters": {"value": 1}}
        ]})
        .to_string(),
    );
    let done = s.sluice(&["run", cycle.to_str().unwrap()]).await.expect(2);
    assert!(
        done.stderr()
            .contains("steps: dependency cycle: A -> B -> A"),
        "{}",
        done.stderr()
    );
    // Nothing was stored.
    let list = s.sluice(&["apps", "list"]).await.expect(0);
    assert_eq!(list.stdout(), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemas_are_published() {
    let s = Scratch::new();
    for kind in ["application", "configuration", "schedule"] {
        let schema = s.sluice(&["schema", kind]).await.expect(0).json();
        assert_eq!(schema["type"], "object", "{kind}");
        let stored: Value = serde_json::from_str(
            &std::fs::read_to_string(repo().join(format!("docs/schemas/{kind}.schema.json")))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            schema, stored,
            "docs/schemas/{kind}.schema.json is out of date: run scripts/update-schemas.sh"
        );
    }
    let app = s.sluice(&["schema"]).await.expect(0).json();
    assert!(app["properties"]["steps"].is_object());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_types_are_published_with_version_and_description() {
    let s = Scratch::new();
    let steps = s.sluice(&["schema", "step"]).await.expect(0).json();
    let steps = steps.as_array().unwrap();
    assert!(steps.iter().any(|t| t["name"] == "transform"));
    for step in steps {
        assert!(step["version"].is_string(), "{step}");
        assert!(step["description"].is_string(), "{step}");
    }
    let echo = s.sluice(&["schema", "step", "echo"]).await.expect(0).json();
    assert_eq!(echo["version"], "1.0.0");
    assert!(
        echo["parameters"]["properties"]["value"].is_object(),
        "{echo}"
    );
    s.sluice(&["schema", "step", "nope"]).await.expect(2);
    s.sluice(&["schema", "application", "echo"]).await.expect(2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_and_configs_are_managed_and_secrets_never_shown() {
    let s = Scratch::new();
    let app = repo().join("examples/branching/app.json");
    s.sluice(&["apps", "push", app.to_str().unwrap()])
        .await
        .expect(0);
    let list = s.sluice(&["apps", "list"]).await.expect(0);
    assert!(
        list.stdout().starts_with("order_routing"),
        "{}",
        list.stdout()
    );
    let got = s
        .sluice(&["apps", "get", "order_routing"])
        .await
        .expect(0)
        .json();
    assert_eq!(got["steps"].as_array().unwrap().len(), 6);

    let config = s.write(
        "config.json",
        &json!({"name": "prod", "data": [
            {"name": "host", "value": "api.example.test"},
            {"name": "token", "value": "s3cr3t-t0ken-value", "encrypted": true}
        ]})
        .to_string(),
    );
    s.sluice(&["configs", "push", config.to_str().unwrap()])
        .await
        .expect(0);
    let got = s.sluice(&["configs", "get", "prod"]).await.expect(0);
    assert_eq!(
        got.json()["data"][1],
        json!({"name": "token", "value": null, "encrypted": true})
    );
    assert!(!got.stdout().contains("s3cr3t"));

    // Posting again with null keeps the stored secret; a new encrypted entry without a
    // value is refused, naming the entry.
    let again = s.write(
        "again.json",
        &json!({"name": "prod", "data": [
            {"name": "host", "value": "api2.example.test"},
            {"name": "token", "value": null, "encrypted": true}
        ]})
        .to_string(),
    );
    s.sluice(&["configs", "push", again.to_str().unwrap()])
        .await
        .expect(0);
    let missing = s.write(
        "missing.json",
        &json!({"name": "prod", "data": [{"name": "other", "value": null, "encrypted": true}]})
            .to_string(),
    );
    let done = s
        .sluice(&["configs", "push", missing.to_str().unwrap()])
        .await
        .expect(2);
    assert!(
        done.stderr()
            .contains("data[0].value: encrypted variable \"other\" has no stored value"),
        "{}",
        done.stderr()
    );
    assert!(
        !String::from_utf8_lossy(&s.data_dir_bytes()).contains("s3cr3t-t0ken-value"),
        "plaintext secret in the data directory"
    );

    s.sluice(&["apps", "delete", "order_routing"])
        .await
        .expect(0);
    s.sluice(&["apps", "get", "order_routing"]).await.expect(2);
    s.sluice(&["configs", "delete", "prod"]).await.expect(0);
    s.sluice(&["configs", "delete", "prod"]).await.expect(2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_run_params_exit_2_before_anything_runs() {
    let s = Scratch::new();
    let app = s.write(
        "app.json",
        &json!({"name": "needs", "author": "me",
            "app_variables": [
                {"name": "size", "type": "number", "value": 1},
                {"name": "token", "type": "string", "required": true}
            ],
            "steps": [{"id": "A", "type": "echo", "parameters": {"value": "${vars.size}"}}]})
        .to_string(),
    );
    let done = s
        .sluice(&[
            "run",
            app.to_str().unwrap(),
            "-p",
            "size=big",
            "-p",
            "extra=1",
        ])
        .await
        .expect(2);
    let err = done.stderr();
    assert!(
        err.contains("params.size: \"big\" is not a number"),
        "{err}"
    );
    assert!(
        err.contains("params.extra: unknown app variable \"extra\""),
        "{err}"
    );
    assert!(
        err.contains("vars.token: required app variable has no value"),
        "{err}"
    );
    assert_eq!(
        s.sluice(&["runs", "list"]).await.expect(0).stdout(),
        "",
        "no run was created"
    );

    let done = s.sluice(&["run", "no_such_app"]).await.expect(2);
    assert!(
        done.stderr()
            .contains("application \"no_such_app\" not found"),
        "{}",
        done.stderr()
    );

    let with_config = s.write(
        "cfg_app.json",
        &json!({"name": "cfg", "author": "me", "configuration": "c",
            "steps": [{"id": "A", "type": "echo", "parameters": {"value": "${config.missing}"}}]})
        .to_string(),
    );
    let config = s.write(
        "c.json",
        &json!({"name": "c", "data": [{"name": "present", "value": 1}]}).to_string(),
    );
    let done = s
        .sluice(&[
            "run",
            with_config.to_str().unwrap(),
            "-c",
            config.to_str().unwrap(),
        ])
        .await
        .expect(2);
    assert!(
        done.stderr().contains("steps[0].parameters.value: ${config.missing}: configuration \"c\" has no variable \"missing\""),
        "{}",
        done.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_takes_a_kind_and_reports_the_real_problem() {
    let s = Scratch::new();
    // A configuration whose `data` is misspelt is not reported as an application.
    let typo = s.write("typo.json", r#"{"name": "conf", "dat": []}"#);
    let done = s
        .sluice(&["validate", typo.to_str().unwrap()])
        .await
        .expect(2);
    let err = done.stderr();
    assert!(err.contains("cannot tell the document's kind"), "{err}");
    assert!(
        err.contains("as a configuration: unknown field `dat`"),
        "{err}"
    );
    let done = s
        .sluice(&[
            "validate",
            "--kind",
            "configuration",
            typo.to_str().unwrap(),
        ])
        .await
        .expect(2);
    let err = done.stderr();
    assert!(err.contains("unknown field `dat`"), "{err}");
    assert!(!err.contains("steps"), "{err}");

    let config = s.write("config.json", r#"{"name": "conf", "data": []}"#);
    s.sluice(&["validate", config.to_str().unwrap()])
        .await
        .expect(0);
    let done = s
        .sluice(&[
            "validate",
            "--kind",
            "application",
            config.to_str().unwrap(),
        ])
        .await
        .expect(2);
    assert!(
        done.stderr().contains("unknown field `data`"),
        "{}",
        done.stderr()
    );

    // Literal parameters are checked against the step type's schema.
    let bad = s.write(
        "params.json",
        &json!({"name": "bad", "author": "me", "steps": [
            {"id": "A", "type": "http_request", "parameters": {"url": 5}},
            {"id": "B", "type": "http_request", "parameters": {"url": "http://x", "timeout_seconds": 1e300}},
            {"id": "C", "type": "sql", "parameters": {"url": "sqlite::memory:", "query": "select '${config.x}'"}}
        ]})
        .to_string(),
    );
    let done = s
        .sluice(&["validate", bad.to_str().unwrap()])
        .await
        .expect(2);
    let err = done.stderr();
    for expected in [
        "params.json: steps[0].parameters.url: expected a string, got 5",
        "params.json: steps[1].parameters.timeout_seconds: must be at most 900",
        "params.json: steps[2].parameters.query: must not contain ${…} references",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}
