//! Templates and secrets through a real runtime (embedded store, built-in step types):
//! references are data, templates are bounded, and no encrypted value leaves in any form
//! the platform produces (docs/semantics.md).

use std::io::{Read, Write};
use std::sync::Arc;

use base64::Engine;
use serde_json::{json, Map, Value};
use sluice_core::model::{Application, Configuration, Run, RunState};
use sluice_embedded::EmbeddedStore;
use sluice_runtime::{Runtime, RuntimeConfig, StartRequest};

const SECRET: &str = "s3cr3t-T0ken-value";
const USER: &str = "svc-user";

struct Harness {
    _dir: tempfile::TempDir,
    runtime: Arc<Runtime>,
}

async fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let backend = store.backend();
    let runtime = Runtime::new(
        backend,
        sluice_steps::builtin_registry(),
        RuntimeConfig::default(),
    );
    let config: Configuration = serde_json::from_value(json!({
        "name": "conf",
        "data": [
            {"name": "tok", "value": SECRET, "encrypted": true},
            {"name": "host", "value": "inventory.example"},
            {"name": "user", "value": USER}
        ]
    }))
    .unwrap();
    runtime.put_configuration(&config).await.unwrap();
    Harness { _dir: dir, runtime }
}

impl Harness {
    /// Stores `steps` as an application and runs it to its end.
    async fn run(&self, steps: Value, params: Value) -> Run {
        let app: Application = serde_json::from_value(json!({
            "name": "probe",
            "author": "tests",
            "configuration": "conf",
            "app_variables": [{"name": "who", "value": "world"}],
            "steps": steps
        }))
        .unwrap();
        self.runtime.put_application(&app).await.unwrap();
        self.run_stored("probe", params).await
    }

    /// Runs a stored application to its end.
    async fn run_stored(&self, application: &str, params: Value) -> Run {
        let params: Map<String, Value> = params.as_object().cloned().unwrap_or_default();
        let run = self
            .runtime
            .start(StartRequest {
                application: application.into(),
                params,
                ..StartRequest::default()
            })
            .await
            .unwrap();
        self.runtime.deliver_queued(1).await.unwrap();
        let ended = self.runtime.get_run(&run.id).await.unwrap();
        assert!(
            ended.state.is_terminal(),
            "the run did not end: {:?}",
            ended.state
        );
        ended
    }

    /// Everything a View user can read of a run: the record, the outputs and the logs.
    async fn everything(&self, run: &Run) -> String {
        let outputs = self.runtime.outputs(run).await.unwrap();
        let logs = self.runtime.logs(run, 0, 0).await.unwrap();
        let logs: Vec<&str> = logs.iter().map(|(_, e)| e.message.as_str()).collect();
        format!(
            "{}\n{}\n{}",
            serde_json::to_string(run).unwrap(),
            Value::Object(outputs),
            logs.join("\n")
        )
    }

    async fn output(&self, run: &Run, step: &str) -> Value {
        self.runtime.read_output(run, step).await.unwrap()
    }
}

/// Fails when `text` holds the secret in a form the platform could produce.
fn assert_no_secret(text: &str) {
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{SECRET}").as_bytes());
    for form in [
        SECRET.to_string(),
        SECRET.to_uppercase(),
        SECRET.to_lowercase(),
        SECRET.chars().rev().collect(),
        basic,
    ] {
        assert!(!text.contains(&form), "leaked as {form}: {text}");
    }
}

fn transform(id: &str, template: &str, depends_on: &[&str]) -> Value {
    json!({"id": id, "type": "transform", "depends_on": depends_on,
           "parameters": {"template": template, "output": "text"}})
}

#[tokio::test]
async fn a_run_param_holding_template_code_is_printed_not_executed() {
    let h = harness().await;
    let run = h
        .run(
            json!([transform(
                "T",
                "Hello ${vars.who} from {{ config.host }}",
                &[]
            )]),
            json!({"who": "{{ config.tok | reverse }}"}),
        )
        .await;
    assert_eq!(run.state, RunState::Success);
    assert_eq!(
        h.output(&run, "T").await,
        json!("Hello {{ config.tok | reverse }} from inventory.example")
    );
    assert_no_secret(&h.everything(&run).await);
}

#[tokio::test]
async fn a_predecessor_output_holding_template_code_renders_literally() {
    let h = harness().await;
    let run = h
        .run(
            json!([
                {"id": "Fetch", "type": "echo", "parameters": {"value": {"name": "{{ 7*7 }}"}}},
                transform("T", "${Fetch.name} / {{ '${Fetch.name}' }}", &["Fetch"]),
                {"id": "Skip", "type": "echo", "depends_on": ["Fetch"],
                 "when": {"template": "${Fetch.name} == '49'"},
                 "parameters": {"value": 1}}
            ]),
            json!({}),
        )
        .await;
    assert_eq!(run.state, RunState::Success, "{run:?}");
    assert_eq!(h.output(&run, "T").await, json!("{{ 7*7 }} / {{ 7*7 }}"));
    let skip = run.steps.iter().find(|s| s.id == "Skip").unwrap();
    assert_eq!(
        serde_json::to_value(skip.state).unwrap(),
        json!("skipped"),
        "{skip:?}"
    );
}

#[tokio::test]
async fn templates_never_see_encrypted_values() {
    let h = harness().await;
    // Through Jinja's `config`: the encrypted variable is not there.
    let run = h
        .run(
            json!([transform(
                "T",
                "[{{ config.tok | upper }}{{ config.tok | reverse }}{{ config | tojson }}]",
                &[]
            )]),
            json!({}),
        )
        .await;
    assert_eq!(run.state, RunState::Success);
    assert_no_secret(&h.everything(&run).await);

    // Through a reference: the step fails and says why.
    let run = h
        .run(json!([transform("T", "${config.tok}", &[])]), json!({}))
        .await;
    assert_eq!(run.state, RunState::Failure);
    let everything = h.everything(&run).await;
    assert!(
        everything.contains("cannot be used in a template"),
        "{everything}"
    );
    assert_no_secret(&everything);

    // In a template condition too.
    let run = h
        .run(
            json!([{"id": "E", "type": "echo", "parameters": {"value": 1},
                    "when": {"template": "${config.tok} | length > 0"}}]),
            json!({}),
        )
        .await;
    assert_eq!(run.state, RunState::Failure);
    assert_no_secret(&h.everything(&run).await);
}

#[tokio::test]
async fn a_warning_holding_a_secret_is_stored_redacted() {
    let h = harness().await;
    let run = h
        .run(
            json!([{"id": "W", "type": "echo",
                    "parameters": {"value": 1, "warning": "token is ${config.tok}"}}]),
            json!({}),
        )
        .await;
    assert_eq!(run.state, RunState::Success);
    let everything = h.everything(&run).await;
    assert!(everything.contains("token is ***"), "{everything}");
    assert_no_secret(&everything);
}

/// A server that answers every request with the request's head as text.
fn echo_server() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let body = String::from_utf8_lossy(&head).into_owned();
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes());
        }
    });
    format!("http://{address}/echo")
}

#[tokio::test]
async fn an_echoed_basic_authorization_header_is_redacted() {
    let h = harness().await;
    let url = echo_server();
    let run = h
        .run(
            json!([{"id": "Call", "type": "http_request", "parameters": {
                "url": url,
                "response": "text",
                "auth": {"basic": {"username": "${config.user}", "password": "${config.tok}"}},
                "headers": {"X-Token-Upper": "${config.tok}"}
            }}]),
            json!({}),
        )
        .await;
    assert_eq!(run.state, RunState::Success, "{run:?}");
    let output = h.output(&run, "Call").await;
    let text = output.as_str().unwrap();
    assert!(text.contains("authorization: Basic "), "{text}");
    assert_no_secret(&h.everything(&run).await);
}

#[tokio::test]
async fn a_template_that_grows_without_bound_fails_its_step_only() {
    let h = harness().await;
    let doubling = "{% set ns = namespace(s='0123456789abcdef') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}";
    let run = h
        .run(json!([transform("T", doubling, &[])]), json!({}))
        .await;
    assert_eq!(run.state, RunState::Failure);
    let everything = h.everything(&run).await;
    assert!(everything.contains("MB of memory"), "{everything}");

    let nested = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
    let mut step = transform("T", nested, &[]);
    step["timeout_seconds"] = json!(3);
    let run = h.run(json!([step]), json!({})).await;
    assert_eq!(run.state, RunState::Failure);
    let everything = h.everything(&run).await;
    assert!(
        everything.contains("steps of work")
            || everything.contains("did not finish within")
            || everything.contains("timed out after 3 seconds"),
        "{everything}"
    );
}

#[tokio::test]
async fn a_run_param_bound_into_sql_stays_data() {
    let h = harness().await;
    let db = h._dir.path().join("users.db");
    let url = format!("sqlite://{}", db.display());
    let injection = "x'; drop table users; --";
    let run = h
        .run(
            json!([
                {"id": "Create", "type": "sql", "parameters": {
                    "url": format!("{url}?mode=rwc"), "mode": "execute",
                    "query": "create table users (name text); insert into users values ('ann');"}},
                {"id": "Find", "type": "sql", "depends_on": ["Create"], "parameters": {
                    "url": url, "query": "select name from users where name = ?",
                    "params": ["${vars.who}"]}},
                {"id": "Count", "type": "sql", "depends_on": ["Find"], "parameters": {
                    "url": url, "query": "select count(*) as n from users"}}
            ]),
            json!({"who": injection}),
        )
        .await;
    assert_eq!(run.state, RunState::Success, "{run:?}");
    assert_eq!(h.output(&run, "Find").await, json!([]));
    assert_eq!(h.output(&run, "Count").await, json!([{"n": 1}]));

    // Spliced into the query text it is refused before anything runs.
    let app: Application = serde_json::from_value(json!({
        "name": "splice", "author": "tests",
        "app_variables": [{"name": "who"}],
        "steps": [{"id": "Find", "type": "sql", "parameters": {
            "url": url, "query": "select name from users where name = '${vars.who}'"}}]
    }))
    .unwrap();
    let error = h
        .runtime
        .put_application(&app)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("steps[0].parameters.query: must not contain ${…} references"),
        "{error}"
    );
    // Stored before the rule existed, it fails its step instead of running.
    h.runtime
        .backend()
        .definitions
        .put_application(&app)
        .await
        .unwrap();
    let run = h.run_stored("splice", json!({"who": injection})).await;
    assert_eq!(run.state, RunState::Failure);
    let everything = h.everything(&run).await;
    assert!(
        everything.contains("must not contain ${…} references"),
        "{everything}"
    );
    let run = h
        .run(
            json!([{"id": "Count", "type": "sql", "parameters": {
                "url": url, "query": "select count(*) as n from users"}}]),
            json!({}),
        )
        .await;
    assert_eq!(h.output(&run, "Count").await, json!([{"n": 1}]));
}

#[tokio::test]
async fn a_template_cannot_iterate_over_an_encrypted_value() {
    let h = harness().await;
    let run = h
        .run(
            json!([{"id": "T", "type": "transform",
                    "for_each": {"items": ["${config.tok}"]},
                    "parameters": {"template": "{{ item | list | join(',') }}", "output": "text"}}]),
            json!({}),
        )
        .await;
    assert_eq!(run.state, RunState::Failure);
    let everything = h.everything(&run).await;
    assert!(
        everything.contains("cannot be the items of a template"),
        "{everything}"
    );
    assert_no_secret(&everything);
    assert!(!everything.contains(
        &SECRET
            .chars()
            .map(String::from)
            .collect::<Vec<_>>()
            .join(",")
    ));
}
