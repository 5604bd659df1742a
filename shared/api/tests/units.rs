//! A step's units through the router in process: a wide `for_each` is read a page at a
//! time, filtered by state, and bad paging parameters are 400s naming their field.

mod support;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use base64::Engine;
use serde_json::{json, Value};
use sluice_api::auth::hash_password;
use sluice_api::{AdminCredentials, ApiState};
use sluice_core::model::RunState;
use sluice_core::step::{StepContext, StepError, StepOutput, StepRegistry, StepType};
use sluice_runtime::{Runtime, RuntimeConfig, StartRequest};

/// Fails, for good, every item whose `n` is odd.
struct FailOdd;

#[async_trait]
impl StepType for FailOdd {
    fn name(&self) -> &str {
        "fail_odd"
    }
    fn description(&self) -> &str {
        "fails odd items"
    }
    fn parameter_schema(&self) -> Value {
        json!({"type": "object"})
    }
    async fn execute(&self, params: Value, _: &StepContext) -> Result<StepOutput, StepError> {
        match params["n"].as_u64() {
            Some(n) if n % 2 == 1 => Err(StepError::Fatal(format!("{n} is odd"))),
            _ => Ok(StepOutput::value(params["n"].clone())),
        }
    }
}

async fn get(router: &Router, uri: &str) -> (StatusCode, Value) {
    let credentials = base64::engine::general_purpose::STANDARD.encode("admin:pw-units");
    let request = Request::builder()
        .uri(uri)
        .header("authorization", format!("Basic {credentials}"))
        .body(Body::empty())
        .unwrap();
    support::call(router, request).await
}

#[tokio::test]
async fn a_wide_for_each_is_read_a_page_of_units_at_a_time_filtered_by_state() {
    let dir = tempfile::tempdir().unwrap();
    let store = sluice_embedded::EmbeddedStore::open(dir.path()).unwrap();
    let mut registry = StepRegistry::new();
    registry.register(FailOdd);
    let runtime = Runtime::new(store.backend(), registry, RuntimeConfig::default());
    let app = serde_json::from_value(json!({
        "name": "wide", "author": "t",
        "steps": [{"id": "Each", "type": "fail_odd",
                   "for_each": {"items": (0..250).collect::<Vec<_>>(), "max_concurrency": 50},
                   "parameters": {"n": "${item}"}}]
    }))
    .unwrap();
    runtime.put_application(&app).await.unwrap();
    let run = runtime
        .start(StartRequest {
            application: "wide".into(),
            ..StartRequest::default()
        })
        .await
        .unwrap();
    runtime.deliver_queued(1).await.unwrap();
    assert_eq!(
        runtime.get_run(&run.id).await.unwrap().state,
        RunState::Failure
    );
    let admin = AdminCredentials {
        user: "admin".into(),
        password_hash: Some(hash_password("pw-units").unwrap()),
    };
    let router = sluice_api::router(ApiState::new(
        runtime.clone(),
        support::api_ports(&store),
        admin,
    ));
    let units = format!("/api/v1/tasks/{}/steps/Each/units", run.id);

    let (status, page) = get(&router, &units).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["total"], 250);
    assert_eq!(page["matching"], 250);
    assert_eq!(
        page["units"].as_array().unwrap().len(),
        100,
        "100 by default"
    );
    assert_eq!(page["next_offset"], 100);
    assert_eq!(page["units"][0]["state"], "done");
    assert_eq!(page["units"][1]["state"], "failed");
    assert_eq!(page["units"][1]["error"], "1 is odd");
    assert_eq!(page["units"][1]["attempt"], 1);

    let (status, page) = get(
        &router,
        &format!("{units}?state=failed&offset=100&limit=100"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["matching"], 125);
    let failed = page["units"].as_array().unwrap();
    assert_eq!(failed.len(), 25, "the last page");
    assert!(failed.iter().all(|u| u["index"].as_u64().unwrap() % 2 == 1));
    assert_eq!(failed[0]["index"], 201, "the 101st odd item");
    assert_eq!(page["next_offset"], Value::Null);

    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("offset=-1", "offset"),
        ("state=lost", "state"),
    ] {
        let (status, body) = get(&router, &format!("{units}?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["error"]["field"], field, "{query}: {body}");
    }
    let (status, _) = get(
        &router,
        &format!("/api/v1/tasks/{}/steps/Nope/units", run.id),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
