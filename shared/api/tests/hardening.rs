//! The router in process over an embedded data directory: numbers from outside are
//! range-checked, callers are rate-limited (on a driven clock), password guessing is
//! bounded per caller, and error answers are JSON that never carries backend text.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use axum::Router;
use base64::Engine;
use governor::clock::{Clock, FakeRelativeClock};
use serde_json::{json, Value};
use sluice_api::auth::hash_password;
use sluice_api::{AdminCredentials, ApiClock, ApiPorts, ApiState, Rate};
use sluice_core::model::{ApiToken, OwnerType, RoleBinding};
use sluice_core::ports::{AccessStore, StoreError};
use sluice_runtime::{Runtime, StartRequest};
use tower::ServiceExt;

const PASSWORD: &str = "pw-hardening";

struct Fixture {
    _dir: tempfile::TempDir,
    runtime: Arc<Runtime>,
    ports: ApiPorts,
    fake: FakeRelativeClock,
}

impl Fixture {
    fn new() -> Self {
        let support::Embedded {
            dir,
            store,
            runtime,
        } = support::embedded();
        let ports = support::api_ports(&store);
        Self {
            _dir: dir,
            runtime,
            ports,
            fake: FakeRelativeClock::default(),
        }
    }

    fn clock(&self) -> ApiClock {
        let fake = self.fake.clone();
        ApiClock::from_fn(move || fake.now().into())
    }

    fn state(&self) -> ApiState {
        let admin = AdminCredentials {
            user: "admin".into(),
            password_hash: Some(hash_password(PASSWORD).unwrap()),
        };
        let mut state = ApiState::new(self.runtime.clone(), self.ports.clone(), admin.clone());
        state.clock = self.clock();
        state.auth = sluice_api::Authenticator::with_clock(admin, self.clock());
        state
    }

    fn router(&self) -> Router {
        sluice_api::router(self.state())
    }

    async fn run_id(&self) -> String {
        let app = serde_json::from_value(json!({
            "name": "app", "author": "t", "description": "d", "version": "1",
            "steps": [{"id": "A", "type": "noop"}]
        }))
        .unwrap();
        self.runtime.put_application(&app).await.unwrap();
        self.runtime
            .start(StartRequest {
                application: "app".into(),
                ..StartRequest::default()
            })
            .await
            .unwrap()
            .id
    }
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// Sends a request from `from` (a client address) with the admin's Basic credentials.
async fn send(
    router: &Router,
    method: &str,
    uri: &str,
    from: &str,
    authorization: Option<&str>,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(auth) = authorization {
        request = request.header("authorization", auth);
    }
    let mut request = request.body(Body::empty()).unwrap();
    let address: SocketAddr = format!("{from}:40000").parse().unwrap();
    request.extensions_mut().insert(ConnectInfo(address));
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, body)
}

#[tokio::test]
async fn numbers_from_queries_are_range_checked_and_name_their_field() {
    let f = Fixture::new();
    let run = f.run_id().await;
    let router = f.router();
    let admin = basic("admin", PASSWORD);
    let task = format!("/api/v1/tasks/{run}");
    let replay = format!("/api/v1/tasks/{run}/replay");
    let logs = format!("/api/v1/tasks/{run}/logs");
    for (method, path) in [
        ("POST", "/api/v1/applications/app/run"),
        ("GET", task.as_str()),
        ("POST", replay.as_str()),
    ] {
        for wait in ["1e300", "-1", "NaN", "inf", "3601", "many"] {
            let uri = format!("{path}?wait={wait}");
            let (status, _, body) = send(&router, method, &uri, "10.0.0.1", Some(&admin)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {uri}: {body}");
            assert_eq!(body["error"]["field"], "wait", "{method} {uri}: {body}");
        }
    }
    // In range: accepted (and capped at 25 seconds; this run is already waiting on
    // nobody, so `wait=0.5` returns at once or after half a second).
    let (status, _, _) = send(
        &router,
        "GET",
        &format!("{task}?wait=0"),
        "10.0.0.1",
        Some(&admin),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    for limit in ["0", "10001", "1e300", "-5", "99999999999999999999999"] {
        let uri = format!("{logs}?limit={limit}");
        let (status, _, body) = send(&router, "GET", &uri, "10.0.0.1", Some(&admin)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert_eq!(body["error"]["field"], "limit", "{uri}: {body}");
    }
    for after in ["-1", "1e300", "18446744073709551616"] {
        let uri = format!("{logs}?after={after}");
        let (status, _, body) = send(&router, "GET", &uri, "10.0.0.1", Some(&admin)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert_eq!(body["error"]["field"], "after", "{uri}: {body}");
    }
    for limit in ["0", "1001", "1e300"] {
        let uri = format!("/api/v1/tasks?limit={limit}");
        let (status, _, body) = send(&router, "GET", &uri, "10.0.0.1", Some(&admin)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert_eq!(body["error"]["field"], "limit", "{uri}: {body}");
    }
}

#[tokio::test]
async fn numbers_in_request_bodies_are_range_checked_and_name_their_field() {
    let f = Fixture::new();
    let router = f.router();
    let admin = basic("admin", PASSWORD);
    for (body, field) in [
        (
            r#"{"name": "noop", "timeout_seconds": 1e300}"#,
            "timeout_seconds",
        ),
        (
            r#"{"name": "noop", "timeout_seconds": -1}"#,
            "timeout_seconds",
        ),
        (
            r#"{"name": "noop", "timeout_seconds": 901}"#,
            "timeout_seconds",
        ),
        (r#"{"name": "noop", "loglevel": 300}"#, "loglevel"),
        (r#"{"name": "noop", "loglevel": 15}"#, "loglevel"),
    ] {
        let mut request = Request::builder()
            .method("POST")
            .uri("/api/v1/steps/run")
            .header("authorization", &admin)
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap();
        request
            .extensions_mut()
            .insert(ConnectInfo("10.0.0.1:1".parse::<SocketAddr>().unwrap()));
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let doc: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {doc}");
        assert!(
            doc["error"]["field"].as_str().unwrap_or("").contains(field),
            "{body}: {doc}"
        );
    }
}

#[tokio::test]
async fn callers_over_their_rate_get_a_json_429_with_retry_after_and_others_do_not() {
    let f = Fixture::new();
    let mut state = f.state();
    state.rate_limit = Rate {
        per_second: 1,
        burst: 3,
    };
    let router = sluice_api::router(state);
    for _ in 0..3 {
        let (status, _, _) = send(&router, "GET", "/healthcheck", "10.0.0.1", None).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, headers, body) = send(&router, "GET", "/healthcheck", "10.0.0.1", None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(body["error"]["code"], "rate_limited");
    // Another address, and another credential from the same address, have their own.
    let (status, _, _) = send(&router, "GET", "/healthcheck", "10.0.0.2", None).await;
    assert_eq!(status, StatusCode::OK);
    let token = Some("Bearer slc_someone");
    let (status, _, _) = send(&router, "GET", "/healthcheck", "10.0.0.1", token).await;
    assert_eq!(status, StatusCode::OK);
    f.fake.advance(Duration::from_secs(1));
    let (status, _, _) = send(&router, "GET", "/healthcheck", "10.0.0.1", None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn the_default_rate_is_fifty_a_second_with_a_burst_of_a_hundred() {
    let f = Fixture::new();
    let state = f.state();
    assert_eq!(state.rate_limit, Rate::DEFAULT);
    assert_eq!(
        Rate::DEFAULT,
        Rate {
            per_second: 50,
            burst: 100
        }
    );
    let router = sluice_api::router(state);
    for i in 0..100 {
        let (status, _, _) = send(&router, "GET", "/healthcheck", "10.0.0.1", None).await;
        assert_eq!(status, StatusCode::OK, "request {i}");
    }
    let (status, _, _) = send(&router, "GET", "/healthcheck", "10.0.0.1", None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    f.fake.advance(Duration::from_millis(20));
    let (status, _, _) = send(&router, "GET", "/healthcheck", "10.0.0.1", None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn password_guessing_is_bounded_per_caller_and_wrong_users_cost_a_verification() {
    let f = Fixture::new();
    let state = f.state();
    let router = sluice_api::router(state);
    let guess = basic("admin", "guess");
    for _ in 0..10 {
        let (status, _, _) = send(&router, "GET", "/api/v1/roles", "10.0.0.9", Some(&guess)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, headers, body) =
        send(&router, "GET", "/api/v1/roles", "10.0.0.9", Some(&guess)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(headers.contains_key("retry-after"));
    // Made-up user names from the same address are the same guesser.
    let (status, _, _) = send(
        &router,
        "GET",
        "/api/v1/roles",
        "10.0.0.9",
        Some(&basic("someone-else", "guess")),
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    // The administrator elsewhere is not slowed.
    let right = basic("admin", PASSWORD);
    let (status, _, _) = send(&router, "GET", "/api/v1/roles", "10.0.0.10", Some(&right)).await;
    assert_eq!(status, StatusCode::OK);
    f.fake.advance(Duration::from_secs(6));
    let (status, _, _) = send(&router, "GET", "/api/v1/roles", "10.0.0.9", Some(&guess)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_wrong_user_name_runs_the_same_verification_as_a_wrong_password() {
    let f = Fixture::new();
    let state = f.state();
    let auth = &state.auth;
    let access = f.ports.access.clone();
    let before = auth.verifications();
    let e = auth
        .identify(Some(&basic("root", "x")), None, access.as_ref(), "a")
        .await
        .unwrap_err();
    assert_eq!(e.status, StatusCode::UNAUTHORIZED);
    assert_eq!(auth.verifications(), before + 1);
    let e2 = auth
        .identify(Some(&basic("admin", "x")), None, access.as_ref(), "b")
        .await
        .unwrap_err();
    assert_eq!(auth.verifications(), before + 2);
    assert_eq!(e.message, e2.message);
}

/// An access store whose backend fails with a message that must not reach clients.
struct Broken;

#[async_trait]
impl AccessStore for Broken {
    async fn create_token(&self, _: &ApiToken) -> Result<bool, StoreError> {
        Err(StoreError::Backend(
            "disk /var/secret-path is on fire".into(),
        ))
    }
    async fn token_by_hash(&self, _: &str) -> Result<Option<ApiToken>, StoreError> {
        Err(StoreError::Backend(
            "disk /var/secret-path is on fire".into(),
        ))
    }
    async fn list_tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
        Err(StoreError::Backend(
            "disk /var/secret-path is on fire".into(),
        ))
    }
    async fn delete_token(&self, _: &str) -> Result<bool, StoreError> {
        Ok(false)
    }
    async fn put_binding(&self, _: &RoleBinding) -> Result<(), StoreError> {
        Ok(())
    }
    async fn list_bindings(&self) -> Result<Vec<RoleBinding>, StoreError> {
        Ok(vec![])
    }
    async fn delete_binding(&self, _: OwnerType, _: &str) -> Result<bool, StoreError> {
        Ok(false)
    }
}

#[tokio::test]
async fn a_500_carries_a_request_id_and_no_backend_text() {
    let mut f = Fixture::new();
    f.ports.access = Arc::new(Broken);
    let router = f.router();
    let (status, headers, body) = send(
        &router,
        "GET",
        "/api/v1/roles",
        "10.0.0.1",
        Some("Bearer slc_anything"),
    )
    .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let text = body.to_string();
    assert!(
        !text.contains("fire") && !text.contains("secret-path"),
        "{text}"
    );
    let id = headers["x-request-id"].to_str().unwrap();
    assert_eq!(body["error"]["request_id"], id);
    assert_eq!(body["error"]["code"], "internal");
    assert!(body["error"]["message"].as_str().unwrap().contains(id));
}

#[tokio::test]
async fn an_overlong_request_target_is_a_json_414() {
    let f = Fixture::new();
    let router = f.router();
    let uri = format!("/api/v1/tasks?application={}", "a".repeat(20_000));
    let (status, _, body) = send(&router, "GET", &uri, "10.0.0.1", None).await;
    assert_eq!(status, StatusCode::URI_TOO_LONG);
    assert_eq!(body["error"]["code"], "uri_too_long");
}

/// Serves the fixture's router on a free port of 127.0.0.1 as `sluice serve` does.
async fn bound_server(f: &Fixture) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(sluice_api::serve(
        listener,
        f.router(),
        std::future::pending(),
    ));
    address
}

/// One HTTP/1.1 answer read off the wire.
#[derive(Debug)]
struct RawAnswer {
    status_line: String,
    headers: HashMap<String, String>,
    body: Value,
}

/// Sends `request` as it is and reads every answer until the server closes. The
/// request is sent alongside: the server may refuse it before reading it all.
async fn raw_exchange(address: SocketAddr, request: Vec<u8>) -> Vec<RawAnswer> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut reader, mut writer) = tokio::net::TcpStream::connect(address)
        .await
        .unwrap()
        .into_split();
    let sender = tokio::spawn(async move {
        let _ = writer.write_all(&request).await;
        writer
    });
    let mut wire = Vec::new();
    reader
        .read_to_end(&mut wire)
        .await
        .expect("the answer arrives before the connection closes");
    drop(sender.await);
    let mut answers = Vec::new();
    let mut rest = wire.as_slice();
    while !rest.is_empty() {
        let text = String::from_utf8_lossy(rest);
        let (head, _) = text.split_once("\r\n\r\n").expect("a complete head");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap().to_string();
        let headers: HashMap<String, String> = lines
            .map(|l| l.split_once(':').unwrap())
            .map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let length: usize = headers["content-length"].parse().unwrap();
        let body = &rest[head.len() + 4..head.len() + 4 + length];
        answers.push(RawAnswer {
            status_line,
            body: serde_json::from_slice(body).unwrap_or(Value::Null),
            headers,
        });
        rest = &rest[head.len() + 4 + length..];
    }
    answers
}

/// The only answer to `request`, checked to be a JSON error with a request id.
async fn refusal(address: SocketAddr, request: Vec<u8>) -> RawAnswer {
    let mut answers = raw_exchange(address, request).await;
    assert_eq!(answers.len(), 1, "{answers:?}");
    let answer = answers.remove(0);
    assert_eq!(
        answer.headers.get("content-type").map(String::as_str),
        Some("application/json"),
        "{answer:?}"
    );
    assert!(answer.headers.contains_key("x-request-id"), "{answer:?}");
    assert!(answer.body["error"]["message"].is_string(), "{answer:?}");
    answer
}

fn get_request(target: &str, headers: &str) -> Vec<u8> {
    // `connection: close`: the router's own answers keep the connection open otherwise.
    format!("GET {target} HTTP/1.1\r\nhost: sluice\r\nconnection: close\r\n{headers}\r\n")
        .into_bytes()
}

#[tokio::test]
async fn targets_too_long_even_for_the_http_parser_get_the_json_414() {
    let f = Fixture::new();
    let address = bound_server(&f).await;
    // 20 KiB: the router's own limit; 70 and 200 KiB: beyond hyper's 64 KiB.
    for kib in [20, 70, 200] {
        let target = format!("/api/v1/tasks?application={}", "a".repeat(kib * 1024));
        let answer = refusal(address, get_request(&target, "")).await;
        assert_eq!(answer.status_line, "HTTP/1.1 414 URI Too Long", "{kib} KiB");
        assert_eq!(answer.body["error"]["code"], "uri_too_long", "{kib} KiB");
        assert!(
            answer.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("request target is longer than 8192 bytes"),
            "{answer:?}"
        );
    }
}

#[tokio::test]
async fn oversized_or_unparsable_request_heads_get_json_errors() {
    let f = Fixture::new();
    let address = bound_server(&f).await;
    let huge_header = format!("x-padding: {}\r\n", "p".repeat(600 * 1024));
    let many_headers: String = (0..150).map(|i| format!("x-h{i}: v\r\n")).collect();
    for headers in [huge_header, many_headers] {
        let answer = refusal(address, get_request("/api/v1/about", &headers)).await;
        assert_eq!(
            answer.status_line,
            "HTTP/1.1 431 Request Header Fields Too Large"
        );
        assert_eq!(answer.body["error"]["code"], "headers_too_large");
    }
    for garbage in [
        "GARBAGE\r\n\r\n",
        "GET /api/v1/about HTTP/9.9\r\n\r\n",
        "GET /api/v1/about HTTP/1.1\r\nbad header\r\n\r\n",
        "GET /api/v1/about HTTP/1.1\r\ncontent-length: many\r\n\r\n",
    ] {
        let answer = refusal(address, garbage.as_bytes().to_vec()).await;
        assert_eq!(
            answer.status_line, "HTTP/1.1 400 Bad Request",
            "{garbage:?}"
        );
        assert_eq!(answer.body["error"]["code"], "bad_request", "{garbage:?}");
        assert!(
            answer.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("not valid HTTP"),
            "{answer:?}"
        );
    }
}

#[tokio::test]
async fn a_refusal_after_answered_requests_on_one_connection_is_json_too() {
    let f = Fixture::new();
    let address = bound_server(&f).await;
    let pipelined = "GET /healthcheck HTTP/1.1\r\nhost: sluice\r\n\r\n\
        GET /api/v1/nowhere HTTP/1.1\r\nhost: sluice\r\n\r\n\
        GARBAGE\r\n\r\n";
    let answers = raw_exchange(address, pipelined.as_bytes().to_vec()).await;
    let statuses: Vec<&str> = answers.iter().map(|a| a.status_line.as_str()).collect();
    assert_eq!(
        statuses,
        [
            "HTTP/1.1 200 OK",
            "HTTP/1.1 404 Not Found",
            "HTTP/1.1 400 Bad Request"
        ]
    );
    assert_eq!(answers[0].body["status"], "ok");
    assert_eq!(answers[1].body["error"]["code"], "not_found");
    assert_eq!(answers[2].body["error"]["code"], "bad_request");
    assert_eq!(answers[2].headers["content-type"], "application/json");
}

#[tokio::test]
async fn a_malformed_path_parameter_is_a_json_400() {
    let f = Fixture::new();
    let address = bound_server(&f).await;
    let admin = format!("authorization: {}\r\n", basic("admin", PASSWORD));
    let answer = refusal(address, get_request("/api/v1/applications/%FF", &admin)).await;
    assert_eq!(answer.status_line, "HTTP/1.1 400 Bad Request");
    assert_eq!(answer.body["error"]["code"], "bad_request", "{answer:?}");
}

#[tokio::test]
async fn step_types_show_their_version_and_runs_record_it_per_step() {
    let fixture = Fixture::new();
    let router = fixture.router();
    let admin = basic("admin", PASSWORD);
    let (status, _, steps) = send(&router, "GET", "/api/v1/steps", "10.0.0.1", Some(&admin)).await;
    assert_eq!(status, StatusCode::OK);
    let by_name = |name: &str| {
        steps
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(by_name("noop")["version"], "3.2.1");
    assert_eq!(by_name("noop")["description"], "does nothing");
    assert_eq!(by_name("transform")["version"], env!("CARGO_PKG_VERSION"));
    let (status, _, noop) = send(
        &router,
        "GET",
        "/api/v1/steps/noop",
        "10.0.0.1",
        Some(&admin),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(noop["version"], "3.2.1");

    let id = fixture.run_id().await;
    let uri = format!("/api/v1/tasks/{id}");
    let (status, _, task) = send(&router, "GET", &uri, "10.0.0.1", Some(&admin)).await;
    assert_eq!(status, StatusCode::OK, "{task}");
    assert_eq!(task["steps"]["A"]["version"], "3.2.1", "{task}");
}
