//! Schedules that fail loudly, through the router in process on an embedded data
//! directory: a schedule that could not start its run is refused with a 422 naming the
//! field; a tick whose run is refused later records `last_error` (cleared by the next
//! run); deleting an application that schedules or other applications name is a 409
//! naming them unless forced.

mod support;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use chrono::{Duration, Utc};
use serde_json::{json, Value};
use sluice_api::auth::{new_token, token_hash};
use sluice_api::schedules::{tick_once, LocalScheduler};
use sluice_api::{AdminCredentials, ApiPorts, ApiState};
use sluice_core::model::{ApiToken, Role};
use sluice_core::ports::{ScheduleStatsStore, ScheduleStore};
use sluice_runtime::Runtime;

struct Fixture {
    _dir: tempfile::TempDir,
    runtime: Arc<Runtime>,
    schedules: Arc<dyn ScheduleStore>,
    stats: Arc<dyn ScheduleStatsStore>,
    router: Router,
    token: String,
}

impl Fixture {
    async fn new() -> Self {
        let support::Embedded {
            dir,
            store,
            runtime,
        } = support::embedded();
        let access = store.access();
        let token = new_token();
        let stored = ApiToken {
            name: "admin".into(),
            role: Role::Administrator,
            hash: token_hash(&token),
            created_at: Utc::now(),
        };
        let ports = ApiPorts {
            schedules: store.schedules(),
            schedule_stats: store.schedule_stats(),
            scheduler: Arc::new(LocalScheduler::default()),
            access: access.clone(),
        };
        let admin = AdminCredentials {
            user: "admin".into(),
            password_hash: None,
        };
        let router = sluice_api::router(ApiState::new(runtime.clone(), ports, admin));
        Self {
            _dir: dir,
            runtime,
            schedules: store.schedules(),
            stats: store.schedule_stats(),
            router,
            token,
        }
        .with_token(access, stored)
        .await
    }

    async fn with_token(
        self,
        access: Arc<dyn sluice_core::ports::AccessStore>,
        token: ApiToken,
    ) -> Self {
        access.create_token(&token).await.unwrap();
        self
    }

    async fn send(&self, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .body(body.map_or(Body::empty(), |b| Body::from(b.to_string())))
            .unwrap();
        support::call(&self.router, request).await
    }

    async fn put_app(&self, doc: Value) {
        let (status, body) = self.send("POST", "/api/v1/applications", Some(doc)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    /// One scheduler pass at `now`.
    async fn tick(&self, now: chrono::DateTime<Utc>) {
        tick_once(
            &self.runtime,
            self.schedules.as_ref(),
            self.stats.as_ref(),
            now,
        )
        .await
        .unwrap();
    }
}

fn report_app() -> Value {
    json!({"name": "report", "author": "t",
        "app_variables": [{"name": "region", "type": "string", "required": true}],
        "steps": [{"id": "A", "type": "noop", "parameters": {"r": "${vars.region}"}}]})
}

fn schedule(params: Value) -> Value {
    json!({"application_id": "report", "entry_id": "hourly", "params": params,
        "schedule": {"schedule_type": "frequency", "schedule_info": {"run_every": 3600}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_that_could_not_start_its_run_is_refused_naming_the_field() {
    let f = Fixture::new().await;
    f.put_app(report_app()).await;
    let cases = [
        (
            json!({"application_id": "ghost", "entry_id": "e", "schedule": {"schedule_type": "frequency", "schedule_info": {"run_every": 60}}}),
            "application_id",
            "application \"ghost\" not found",
        ),
        (
            schedule(json!({"region": "eu", "regin": "x"})),
            "params.regin",
            "unknown app variable",
        ),
        (
            schedule(json!({})),
            "params.region",
            "required app variable has no value",
        ),
        (schedule(json!({"region": 5})), "params.region", ""),
        (
            schedule(json!({"region": "eu", "configuration": "nope"})),
            "params.configuration",
            "configuration \"nope\" not found",
        ),
    ];
    for (body, field, message) in cases {
        let (status, doc) = f.send("POST", "/api/v1/schedule", Some(body)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{field}: {doc}");
        assert_eq!(doc["error"]["field"], field, "{doc}");
        let text = doc["error"]["message"].as_str().unwrap();
        assert!(text.contains(message), "{field}: {text}");
    }
    let (status, listed) = f.send("GET", "/api/v1/schedule", None).await;
    assert_eq!(
        (status, listed),
        (StatusCode::OK, json!([])),
        "nothing stored"
    );

    let (status, doc) = f
        .send(
            "POST",
            "/api/v1/schedule",
            Some(schedule(json!({"region": "eu"}))),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["last_error"], Value::Null, "{doc}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tick_that_cannot_start_records_last_error_until_a_run_starts() {
    let f = Fixture::new().await;
    f.put_app(report_app()).await;
    let (status, doc) = f
        .send(
            "POST",
            "/api/v1/schedule",
            Some(schedule(json!({"region": "eu"}))),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{doc}");

    // The application changes under the schedule: `region` is gone.
    f.put_app(json!({"name": "report", "author": "t",
        "steps": [{"id": "A", "type": "noop"}]}))
        .await;
    let first_tick = Utc::now() + Duration::hours(1);
    f.tick(first_tick + Duration::seconds(1)).await;
    let (_, doc) = f.send("GET", "/api/v1/schedule/hourly", None).await;
    assert_eq!(doc["total_runs"], 0, "{doc}");
    let message = doc["last_error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("params.region") && message.contains("unknown app variable"),
        "{doc}"
    );
    assert!(doc["last_error"]["time"].is_string(), "{doc}");
    let (_, listed) = f.send("GET", "/api/v1/schedule", None).await;
    assert_eq!(listed[0]["last_error"], doc["last_error"], "{listed}");

    // Fixed: the next tick starts a run and clears the error.
    f.put_app(report_app()).await;
    f.tick(first_tick + Duration::hours(1) + Duration::seconds(1))
        .await;
    let (_, doc) = f.send("GET", "/api/v1/schedule/hourly", None).await;
    assert_eq!(doc["total_runs"], 1, "{doc}");
    assert_eq!(doc["last_error"], Value::Null, "{doc}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_named_application_is_refused_unless_forced() {
    let f = Fixture::new().await;
    f.put_app(report_app()).await;
    f.put_app(json!({"name": "alerts", "author": "t", "steps": [{"id": "A", "type": "noop"}]}))
        .await;
    f.put_app(json!({"name": "parent", "author": "t",
        "on_failure": {"application": "alerts"},
        "steps": [{"id": "T", "type": "trigger_application",
                   "parameters": {"application": "report", "params": {"region": "eu"}}}]}))
        .await;
    let (status, doc) = f
        .send(
            "POST",
            "/api/v1/schedule",
            Some(schedule(json!({"region": "eu"}))),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{doc}");

    let (status, doc) = f.send("DELETE", "/api/v1/applications/report", None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{doc}");
    let message = doc["error"]["message"].as_str().unwrap();
    assert!(message.contains("schedule \"hourly\""), "{message}");
    assert!(
        message.contains("application \"parent\" (steps[0].parameters.application)"),
        "{message}"
    );
    let (status, doc) = f.send("DELETE", "/api/v1/applications/alerts", None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{doc}");
    assert!(
        doc["error"]["message"]
            .as_str()
            .unwrap()
            .contains("application \"parent\" (on_failure.application)"),
        "{doc}"
    );
    let (status, _) = f.send("GET", "/api/v1/applications/report", None).await;
    assert_eq!(status, StatusCode::OK, "still there");

    // An application naming itself does not keep itself alive; force deletes the others.
    let (status, doc) = f
        .send("DELETE", "/api/v1/applications/report?force=maybe", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{doc}");
    let (status, doc) = f
        .send("DELETE", "/api/v1/applications/report?force=true", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    let (status, doc) = f.send("DELETE", "/api/v1/applications/parent", None).await;
    assert_eq!(status, StatusCode::OK, "nothing names parent: {doc}");
    let (status, doc) = f.send("DELETE", "/api/v1/applications/alerts", None).await;
    assert_eq!(status, StatusCode::OK, "its referrer is gone: {doc}");
    let (status, _) = f.send("DELETE", "/api/v1/applications/ghost", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
