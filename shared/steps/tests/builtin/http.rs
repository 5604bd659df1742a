//! `http_request` against a real HTTP server on 127.0.0.1.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::{any, get};
use axum::{Json, Router};
use serde_json::{json, Value};
use sluice_core::model::LogLevel;
use sluice_steps::HttpRequest;

use super::{context, err, messages, ok, run, run_in, MemoryCache};

/// Starts the test server; returns its base URL.
async fn server() -> String {
    let app = Router::new()
        .route("/echo", any(echo))
        .route("/echo/{*rest}", any(echo))
        .route("/basic", get(basic))
        .route("/bearer", get(bearer))
        .route("/status/{code}", any(status))
        .route("/slow", get(slow))
        .route("/text", get(|| async { "plain words, not JSON" }))
        .route("/empty", get(|| async { StatusCode::OK }))
        .route(
            "/huge",
            get(|| async { "x".repeat(sluice_steps::HTTP_MAX_RESPONSE_BYTES + 1) }),
        )
        .route(
            "/json",
            get(|| async {
                (
                    [("x-custom", "a")],
                    Json(json!({"devices": [{"name": "d1"}], "total": 1})),
                )
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// Describes the request it received.
async fn echo(method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Json<Value> {
    let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_string());
    Json(json!({
        "method": method.as_str(),
        "path": uri.path(),
        "query": uri.query(),
        "content_type": header("content-type"),
        "x_api_key": header("x-api-key"),
        "x_page": header("x-page"),
        "user_agent": header("user-agent"),
        "authorization": header("authorization"),
        "body": String::from_utf8(body.to_vec()).unwrap(),
    }))
}

async fn basic(headers: HeaderMap) -> impl IntoResponse {
    // "alice:pa55word"
    if headers.get("authorization").map(|v| v.as_bytes()) == Some(b"Basic YWxpY2U6cGE1NXdvcmQ=") {
        (StatusCode::OK, Json(json!({"user": "alice"})))
    } else {
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "who are you?"})),
        )
    }
}

async fn bearer(headers: HeaderMap) -> impl IntoResponse {
    if headers.get("authorization").map(|v| v.as_bytes()) == Some(b"Bearer t0ken-xyz") {
        (StatusCode::OK, Json(json!({"token": "accepted"})))
    } else {
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "bad token"})),
        )
    }
}

async fn status(Path(code): Path<u16>) -> impl IntoResponse {
    let body = format!("maintenance window {}", "z".repeat(1000));
    (StatusCode::from_u16(code).unwrap(), body)
}

async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_secs(10)).await;
    "too late"
}

#[tokio::test]
async fn get_returns_parsed_json_and_logs_without_secrets() {
    let base = server().await;
    let step = HttpRequest::new();
    let secret = json!("sup3r-secret-key");
    let ctx = context(std::sync::Arc::new(MemoryCache::default()), &[secret]);
    let (result, logs) = run_in(
        &step,
        json!({"url": format!("{base}/json"), "headers": {"X-Api-Key": "sup3r-secret-key"}}),
        &ctx,
    )
    .await;
    assert_eq!(
        result.unwrap().value,
        json!({"devices": [{"name": "d1"}], "total": 1})
    );
    let info = messages(&logs, LogLevel::Info);
    assert_eq!(info.len(), 1);
    assert!(
        info[0].starts_with(&format!("GET {base}/json -> 200 OK (")),
        "{info:?}"
    );
    assert!(info[0].ends_with(" ms)"), "{info:?}");
    for entry in &logs {
        assert!(!entry.message.contains("sup3r"), "{entry:?}");
    }
}

#[tokio::test]
async fn methods_headers_query_and_bodies() {
    let base = server().await;
    let step = HttpRequest::new();

    let out = ok(
        &step,
        json!({
            "url": format!("{base}/echo?fixed=1"),
            "method": "post",
            "headers": {"X-Api-Key": "k1", "X-Page": 2},
            "query": {"name": "a b&c", "limit": 5, "flag": true, "ids": [1, 2], "none": null},
            "body": {"devices": ["d1", "d2"]}
        }),
    )
    .await;
    assert_eq!(out["method"], "POST");
    assert_eq!(out["x_api_key"], "k1");
    assert_eq!(out["x_page"], "2");
    assert_eq!(
        out["query"],
        "fixed=1&name=a+b%26c&limit=5&flag=true&ids=%5B1%2C2%5D&none=null"
    );
    assert_eq!(out["content_type"], "application/json");
    assert_eq!(
        serde_json::from_str::<Value>(out["body"].as_str().unwrap()).unwrap(),
        json!({"devices": ["d1", "d2"]})
    );
    assert!(out["user_agent"].as_str().unwrap().starts_with("sluice/"));

    // A string body is sent as text.
    let out = ok(
        &step,
        json!({"url": format!("{base}/echo"), "method": "PUT", "body": "line one\nline two"}),
    )
    .await;
    assert_eq!(out["method"], "PUT");
    assert_eq!(out["content_type"], "text/plain; charset=utf-8");
    assert_eq!(out["body"], "line one\nline two");

    // An explicit Content-Type wins.
    let out = ok(
        &step,
        json!({"url": format!("{base}/echo"), "method": "PATCH", "body": "<a/>",
               "headers": {"Content-Type": "application/xml"}}),
    )
    .await;
    assert_eq!(out["content_type"], "application/xml");
    assert_eq!(out["body"], "<a/>");

    for method in ["DELETE", "OPTIONS", "get"] {
        let out = ok(
            &step,
            json!({"url": format!("{base}/echo"), "method": method}),
        )
        .await;
        assert_eq!(out["method"], method.to_uppercase());
        assert_eq!(out["body"], "");
        assert_eq!(out["content_type"], Value::Null);
    }
}

#[tokio::test]
async fn basic_and_bearer_auth() {
    let base = server().await;
    let step = HttpRequest::new();
    let out = ok(
        &step,
        json!({"url": format!("{base}/basic"), "auth": {"basic": {"username": "alice", "password": "pa55word"}}}),
    )
    .await;
    assert_eq!(out, json!({"user": "alice"}));
    let out = ok(
        &step,
        json!({"url": format!("{base}/bearer"), "auth": {"bearer": "t0ken-xyz"}}),
    )
    .await;
    assert_eq!(out, json!({"token": "accepted"}));

    let (result, logs) = run(
        &step,
        json!({"url": format!("{base}/bearer"), "auth": {"bearer": "wrong-token"}}),
    )
    .await;
    let e = result.unwrap_err();
    assert!(e.is_retryable());
    assert!(
        e.message().starts_with("HTTP 401 Unauthorized from GET"),
        "{e}"
    );
    assert!(e.message().contains("bad token"), "{e}");
    assert!(logs.iter().all(|l| !l.message.contains("wrong-token")));

    let e = err(
        &step,
        json!({"url": format!("{base}/basic"), "auth": {"digest": "x"}}),
    )
    .await;
    assert!(!e.is_retryable(), "{e}");
}

#[tokio::test]
async fn unexpected_status_is_a_retryable_failure_with_status_and_body_start() {
    let base = server().await;
    let step = HttpRequest::new();
    let url = format!("{base}/status/503");
    let e = err(&step, json!({"url": url})).await;
    assert!(e.is_retryable());
    let message = e.message();
    assert!(
        message.starts_with(&format!(
            "HTTP 503 Service Unavailable from GET {url}: maintenance window zzz"
        )),
        "{message}"
    );
    // Only the start of the body.
    assert!(message.len() < 500, "{}", message.len());
    assert!(message.ends_with('…'));

    // expected_status replaces the 2xx default.
    let out = ok(&step, json!({"url": format!("{base}/status/404"), "expected_status": [200, 404], "response": "text"})).await;
    assert!(out.as_str().unwrap().starts_with("maintenance window"));
    let e = err(
        &step,
        json!({"url": format!("{base}/json"), "expected_status": [201]}),
    )
    .await;
    assert!(e.is_retryable());
    assert!(e.message().starts_with("HTTP 200 OK from GET"), "{e}");
}

#[tokio::test]
async fn response_modes() {
    let base = server().await;
    let step = HttpRequest::new();
    assert_eq!(
        ok(
            &step,
            json!({"url": format!("{base}/text"), "response": "text"})
        )
        .await,
        json!("plain words, not JSON")
    );
    assert_eq!(
        ok(&step, json!({"url": format!("{base}/empty")})).await,
        json!(null)
    );

    let e = err(&step, json!({"url": format!("{base}/text")})).await;
    assert!(!e.is_retryable());
    assert!(e.message().contains("\"response\": \"text\""), "{e}");
    assert!(e.message().contains("plain words"), "{e}");

    let full = ok(
        &step,
        json!({"url": format!("{base}/json"), "response": "full"}),
    )
    .await;
    assert_eq!(full["status"], 200);
    assert_eq!(full["headers"]["x-custom"], "a");
    assert_eq!(full["headers"]["content-type"], "application/json");
    assert_eq!(
        full["body"],
        json!({"devices": [{"name": "d1"}], "total": 1})
    );
    let full = ok(
        &step,
        json!({"url": format!("{base}/text"), "response": "full"}),
    )
    .await;
    assert_eq!(full["body"], "plain words, not JSON");
}

#[tokio::test]
async fn a_response_over_the_size_cap_fails_the_attempt_fatally() {
    let base = server().await;
    let e = err(&HttpRequest::new(), json!({"url": format!("{base}/huge")})).await;
    assert!(!e.is_retryable());
    assert!(e.message().contains("is larger than 16777216 bytes"), "{e}");
}

#[tokio::test]
async fn timeouts_and_connection_errors_are_retryable() {
    let base = server().await;
    let step = HttpRequest::new();
    let started = Instant::now();
    let e = err(
        &step,
        json!({"url": format!("{base}/slow"), "timeout_seconds": 0.3}),
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(e.is_retryable());
    assert!(e.message().contains("timed out after 0.3 s"), "{e}");

    // A port nobody listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let e = err(&step, json!({"url": format!("http://127.0.0.1:{port}/x")})).await;
    assert!(e.is_retryable());
    assert!(
        e.message()
            .starts_with(&format!("GET http://127.0.0.1:{port}/x failed: ")),
        "{e}"
    );
}

#[tokio::test]
async fn bad_parameters_are_fatal() {
    let step = HttpRequest::new();
    for (params, needle) in [
        (json!({"url": "not a url"}), "invalid URL"),
        (
            json!({"url": "ftp://example.com/x"}),
            "unsupported URL scheme",
        ),
        (
            json!({"url": "http://127.0.0.1/", "method": "GE T"}),
            "invalid HTTP method",
        ),
        (
            json!({"url": "http://127.0.0.1/", "timeout_seconds": 0}),
            "timeout_seconds",
        ),
        (
            json!({"url": "http://127.0.0.1/", "headers": {"bad header": "x"}}),
            "invalid header name",
        ),
        (
            json!({"url": "http://127.0.0.1/", "headers": {"X-Key": "line\nbreak-secret"}}),
            "invalid value for header \"X-Key\"",
        ),
        (
            json!({"url": "http://127.0.0.1/", "response": "xml"}),
            "xml",
        ),
        (json!({"url": "http://127.0.0.1/", "verb": "GET"}), "verb"),
    ] {
        let e = err(&step, params.clone()).await;
        assert!(!e.is_retryable(), "{params}: {e}");
        assert!(e.message().contains(needle), "{params}: {e}");
        assert!(!e.message().contains("break-secret"), "{e}");
    }
}

/// A number a reference brought (validation only sees literals) is range-checked by the
/// step: `1e300` seconds is refused, it does not panic in `Duration`.
#[tokio::test]
async fn a_huge_timeout_is_refused_not_a_panic() {
    let base = server().await;
    for timeout in [json!(1e300), json!(-1), json!(0), json!(901)] {
        let error = err(
            &HttpRequest::new(),
            json!({"url": format!("{base}/echo"), "timeout_seconds": timeout}),
        )
        .await;
        assert!(!error.is_retryable(), "{error:?}");
        assert!(
            error
                .message()
                .contains("\"timeout_seconds\" must be between 0.001 and 900"),
            "{error:?}"
        );
    }
}
