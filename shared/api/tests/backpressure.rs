//! Backpressure through the router: while the step queue holds `max_queued_steps`
//! messages, starting a run answers 429 `overloaded` with `Retry-After`, and a schedule
//! tick refused so records why; once the queue drains, starts are accepted again.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use axum::Router;
use chrono::{TimeZone, Utc};
use serde_json::{json, Value};
use sluice_api::auth::{new_token, token_hash};
use sluice_api::schedules::tick_once;
use sluice_api::{AdminCredentials, ApiState};
use sluice_core::model::{ApiToken, Application, Role, Schedule};
use sluice_core::step::StepRegistry;
use sluice_embedded::EmbeddedStore;
use sluice_runtime::{Disposition, Runtime, RuntimeConfig};
use tower::ServiceExt;

struct Fixture {
    _dir: tempfile::TempDir,
    store: EmbeddedStore,
    runtime: Arc<Runtime>,
    router: Router,
    token: String,
}

/// A server refusing new runs at one queued step, reading the depth every time.
async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let mut registry = StepRegistry::new();
    registry.register(support::Noop);
    let config = RuntimeConfig {
        max_queued_steps: Some(1),
        queued_steps_refresh: Duration::ZERO,
        ..RuntimeConfig::default()
    };
    let runtime = Runtime::new(store.backend(), registry, config);
    let app: Application = serde_json::from_value(json!({"name": "app", "author": "t",
        "steps": [{"id": "A", "type": "noop", "parameters": {}}]}))
    .unwrap();
    runtime.put_application(&app).await.unwrap();
    let token = new_token();
    store
        .access()
        .create_token(&ApiToken {
            name: "runner".into(),
            role: Role::Administrator,
            hash: token_hash(&token),
            created_at: Utc::now(),
        })
        .await
        .unwrap();
    let admin = AdminCredentials {
        user: "admin".into(),
        password_hash: None,
    };
    let state = ApiState::new(runtime.clone(), support::api_ports(&store), admin);
    Fixture {
        _dir: dir,
        router: sluice_api::router(state),
        store,
        runtime,
        token,
    }
}

impl Fixture {
    async fn post(&self, uri: &str) -> (StatusCode, axum::http::HeaderMap, Value) {
        let mut request = Request::builder()
            .method("POST")
            .uri(uri)
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .body(Body::from("{}"))
            .unwrap();
        let address: SocketAddr = "10.0.0.1:40000".parse().unwrap();
        request.extensions_mut().insert(ConnectInfo(address));
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            headers,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// Delivers every queued message once (what a worker would do).
    async fn drain(&self) {
        for handled in self.runtime.deliver_queued(1).await.unwrap() {
            assert_eq!(handled, Disposition::Ack);
        }
    }
}

#[tokio::test]
async fn a_start_over_the_queue_bound_is_429_with_retry_after_until_the_queue_drains() {
    let f = fixture().await;
    let (status, _, first) = f.post("/api/v1/applications/app/run").await;
    assert!(status.is_success(), "{status}: {first}");

    let (status, headers, body) = f.post("/api/v1/applications/app/run").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "overloaded", "{body}");
    assert_eq!(headers["retry-after"], "1");
    let replay = format!(
        "/api/v1/tasks/{}/replay",
        first["task_id"].as_str().unwrap()
    );
    let (status, headers, _) = f.post(&replay).await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "a replay is new work"
    );
    assert!(headers.contains_key("retry-after"));

    f.drain().await;
    let (status, _, body) = f.post("/api/v1/applications/app/run").await;
    assert!(status.is_success(), "{status}: {body}");
}

#[tokio::test]
async fn a_schedule_tick_refused_for_a_full_queue_records_why() {
    let f = fixture().await;
    let (status, _, _) = f.post("/api/v1/applications/app/run").await;
    assert!(status.is_success());
    let schedules = f.store.schedules();
    let stats = f.store.schedule_stats();
    let schedule: Schedule = serde_json::from_value(json!({
        "application_id": "app", "entry_id": "minutely", "params": {},
        "schedule": {"schedule_type": "crontab", "schedule_info": {"minute": "*"}}}))
    .unwrap();
    schedules.put_schedule(&schedule).await.unwrap();
    let at = |minute: u32, second: u32| {
        Utc.with_ymd_and_hms(2030, 1, 1, 10, minute, second)
            .single()
            .unwrap()
    };
    // First sight claims the past; the next minute is due.
    tick_once(&f.runtime, schedules.as_ref(), stats.as_ref(), at(0, 30))
        .await
        .unwrap();
    tick_once(&f.runtime, schedules.as_ref(), stats.as_ref(), at(1, 1))
        .await
        .unwrap();
    let recorded = stats.get_stats("minutely").await.unwrap().unwrap();
    assert_eq!(recorded.total_runs, 0);
    let error = recorded.last_error.expect("the refusal is recorded");
    assert!(
        error.message.contains("too much work queued"),
        "{}",
        error.message
    );
}
