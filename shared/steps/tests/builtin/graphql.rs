//! `graphql` against a real HTTP server on 127.0.0.1 answering as a GraphQL server does.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use sluice_core::model::LogLevel;
use sluice_core::step::StepError;
use sluice_core::validate::{parse_application, StepCatalog};
use sluice_steps::Graphql;

use super::{context, err, messages, ok, run_in, MemoryCache};

/// Starts the test server; returns its base URL.
async fn server() -> String {
    let app = Router::new()
        .route("/graphql", post(echo))
        .route(
            "/errors",
            post(|| async {
                Json(json!({
                    "data": {"device": null},
                    "errors": [
                        {"message": "Cannot query field \"nope\" on type \"Device\"", "path": ["device", 0, "nope"]},
                        {"message": "second problem"}
                    ]
                }))
            }),
        )
        .route(
            "/errors-503",
            post(|| async {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(json!({"errors": [{"message": "overloaded, try later"}]})),
                )
            }),
        )
        .route(
            "/errors-400",
            post(|| async {
                (
                    StatusCode::BAD_REQUEST,
                    Json(json!({"errors": [{"message": "Syntax Error: Unexpected Name \"quer\""}]})),
                )
            }),
        )
        .route(
            "/empty-errors",
            post(|| async { Json(json!({"data": {"ok": true}, "errors": []})) }),
        )
        .route(
            "/status/500",
            post(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "upstream exploded") }),
        )
        .route(
            "/status/404",
            post(|| async { (StatusCode::NOT_FOUND, "no such endpoint") }),
        )
        .route("/not-graphql", post(|| async { Json(json!({"rows": []})) }))
        .route("/text", post(|| async { "plain words, not JSON" }))
        .route(
            "/huge",
            post(|| async { "x".repeat(sluice_steps::GRAPHQL_MAX_RESPONSE_BYTES + 1) }),
        )
        .route("/slow", post(slow))
        .route("/get-only", get(|| async { "never" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// `data` describes the request received.
async fn echo(headers: HeaderMap, Json(body): Json<Value>) -> Json<Value> {
    let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_string());
    Json(json!({
        "data": {
            "body": body,
            "content_type": header("content-type"),
            "accept": header("accept"),
            "authorization": header("authorization"),
            "x_api_key": header("x-api-key"),
        }
    }))
}

async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_secs(10)).await;
    "too late"
}

#[tokio::test]
async fn posts_query_variables_and_operation_name_and_returns_data() {
    let base = server().await;
    let step = Graphql::new();
    let out = ok(
        &step,
        json!({
            "endpoint": format!("{base}/graphql"),
            "query": "query Device($id: ID!) { device(id: $id) { name } }",
            "variables": {"id": "d-1", "limit": 5},
            "operation_name": "Device",
            "headers": {"X-Api-Key": "k1"},
        }),
    )
    .await;
    assert_eq!(
        out["body"],
        json!({
            "query": "query Device($id: ID!) { device(id: $id) { name } }",
            "variables": {"id": "d-1", "limit": 5},
            "operationName": "Device",
        })
    );
    assert_eq!(out["content_type"], "application/json");
    assert!(out["accept"]
        .as_str()
        .unwrap()
        .starts_with("application/graphql-response+json"));
    assert_eq!(out["x_api_key"], "k1");

    // Without variables or an operation name, neither is sent.
    let out = ok(
        &step,
        json!({"endpoint": format!("{base}/graphql"), "query": "{ devices { name } }"}),
    )
    .await;
    assert_eq!(out["body"], json!({"query": "{ devices { name } }"}));
}

#[tokio::test]
async fn auth_is_sent_as_http_request_sends_it_and_secrets_stay_out_of_the_log() {
    let base = server().await;
    let step = Graphql::new();
    let out = ok(
        &step,
        json!({
            "endpoint": format!("{base}/graphql"),
            "query": "{ me }",
            "auth": {"basic": {"username": "alice", "password": "pa55word"}},
        }),
    )
    .await;
    assert_eq!(out["authorization"], "Basic YWxpY2U6cGE1NXdvcmQ=");

    let ctx = context(Arc::new(MemoryCache::default()), &[json!("t0ken-xyz")]);
    let (result, logs) = run_in(
        &step,
        json!({"endpoint": format!("{base}/graphql"), "query": "{ me }", "auth": {"bearer": "t0ken-xyz"}}),
        &ctx,
    )
    .await;
    assert_eq!(result.unwrap().value["authorization"], "Bearer t0ken-xyz");
    let info = messages(&logs, LogLevel::Info);
    assert_eq!(info.len(), 1, "{info:?}");
    assert!(
        info[0].starts_with(&format!("POST {base}/graphql -> 200 OK (")),
        "{info:?}"
    );
    for entry in &logs {
        assert!(!entry.message.contains("t0ken"), "{entry:?}");
    }
}

#[tokio::test]
async fn errors_fail_the_attempt_with_their_messages() {
    let base = server().await;
    let step = Graphql::new();
    let query =
        |path: &str| json!({"endpoint": format!("{base}{path}"), "query": "{ device { nope } }"});

    // 200 with errors (and partial data): fatal, every message quoted with its path.
    match err(&step, query("/errors")).await {
        StepError::Fatal(message) => {
            assert!(message.starts_with("GraphQL errors from "), "{message}");
            assert!(
                message.contains(
                    "Cannot query field \"nope\" on type \"Device\" (at path device.0.nope); second problem"
                ),
                "{message}"
            );
        }
        other => panic!("expected a fatal error, got {other:?}"),
    }
    // A 4xx with errors is the operation's fault: fatal.
    match err(&step, query("/errors-400")).await {
        StepError::Fatal(message) => assert!(message.contains("Syntax Error"), "{message}"),
        other => panic!("expected a fatal error, got {other:?}"),
    }
    // A 503 with errors may pass: retryable.
    match err(&step, query("/errors-503")).await {
        StepError::Retryable(message) => {
            assert!(message.contains("overloaded, try later"), "{message}");
            assert!(message.contains("503 Service Unavailable"), "{message}");
        }
        other => panic!("expected a retryable error, got {other:?}"),
    }
    // An empty errors array is no error.
    assert_eq!(ok(&step, query("/empty-errors")).await, json!({"ok": true}));
}

#[tokio::test]
async fn statuses_and_bodies_that_are_not_graphql_responses() {
    let base = server().await;
    let step = Graphql::new();
    let query = |path: &str| json!({"endpoint": format!("{base}{path}"), "query": "{ a }"});

    assert!(matches!(
        err(&step, query("/status/500")).await,
        StepError::Retryable(m) if m.contains("500 Internal Server Error") && m.contains("upstream exploded")
    ));
    assert!(matches!(
        err(&step, query("/status/404")).await,
        StepError::Fatal(m) if m.contains("404 Not Found")
    ));
    assert!(matches!(
        err(&step, query("/not-graphql")).await,
        StepError::Fatal(m) if m.contains("not a GraphQL response")
    ));
    assert!(matches!(
        err(&step, query("/text")).await,
        StepError::Fatal(m) if m.contains("is not JSON") && m.contains("plain words")
    ));
    assert!(matches!(
        err(&step, query("/huge")).await,
        StepError::Fatal(m) if m.contains("is larger than")
    ));
}

#[tokio::test]
async fn timeouts_and_unreachable_servers_are_retryable() {
    let base = server().await;
    let step = Graphql::new();
    match err(
        &step,
        json!({"endpoint": format!("{base}/slow"), "query": "{ a }", "timeout_seconds": 0.2}),
    )
    .await
    {
        StepError::Retryable(message) => {
            assert!(message.contains("timed out after 0.2 s"), "{message}")
        }
        other => panic!("expected a retryable error, got {other:?}"),
    }
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    assert!(matches!(
        err(
            &step,
            json!({"endpoint": format!("http://127.0.0.1:{port}/graphql"), "query": "{ a }"})
        )
        .await,
        StepError::Retryable(_)
    ));
    assert!(matches!(
        err(&step, json!({"endpoint": "ftp://example.com/graphql", "query": "{ a }"})).await,
        StepError::Fatal(m) if m.contains("unsupported URL scheme")
    ));
}

fn problems(parameters: Value) -> Vec<String> {
    let doc = json!({"name": "probe", "author": "tests", "steps": [
        {"id": "S", "type": "graphql", "parameters": parameters}
    ]});
    let catalog = StepCatalog::new(&sluice_steps::builtin_registry());
    match parse_application(&doc.to_string(), &catalog) {
        Ok(_) => Vec::new(),
        Err(invalid) => invalid.issues.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn a_reference_in_the_query_is_refused_by_validation_and_variables_carry_values() {
    let refused = problems(json!({
        "endpoint": "https://api.example/graphql",
        "query": "{ device(id: \"${config.id}\") { name } }"
    }));
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        refused[0].starts_with("steps[0].parameters.query: must not contain ${…} references"),
        "{refused:?}"
    );
    assert!(refused[0].contains("\"variables\""), "{refused:?}");

    assert_eq!(
        problems(json!({
            "endpoint": "${config.endpoint}",
            "query": "query ($id: ID!) { device(id: $id) { name } }",
            "variables": {"id": "${config.id}"},
            "auth": {"bearer": "${config.token}"}
        })),
        Vec::<String>::new()
    );
    assert_eq!(
        problems(json!({"endpoint": "https://x", "query": "{ a }", "timeout_seconds": 1000})),
        ["steps[0].parameters.timeout_seconds: must be at most 900 (got 1000)"]
    );
}
