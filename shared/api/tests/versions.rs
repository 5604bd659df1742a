//! Versions through the router over an embedded data directory: pushes by the caller's
//! identity, an identical push storing nothing, history, one version, diff, rollback,
//! a configuration's versions without its secret, and a run recording its version.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use axum::Router;
use base64::Engine;
use serde_json::{json, Value};
use sluice_api::auth::hash_password;
use sluice_api::{AdminCredentials, ApiState};
use sluice_runtime::{Runtime, StartRequest};
use tower::ServiceExt;

const PASSWORD: &str = "pw-versions";

struct Fixture {
    _dir: tempfile::TempDir,
    runtime: Arc<Runtime>,
    router: Router,
}

impl Fixture {
    fn new() -> Self {
        let support::Embedded {
            dir,
            store,
            runtime,
        } = support::embedded();
        let ports = support::api_ports(&store);
        let admin = AdminCredentials {
            user: "admin".into(),
            password_hash: Some(hash_password(PASSWORD).unwrap()),
        };
        let router = sluice_api::router(ApiState::new(runtime.clone(), ports, admin));
        Self {
            _dir: dir,
            runtime,
            router,
        }
    }

    async fn send(&self, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let auth = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("admin:{PASSWORD}"))
        );
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", auth)
            .header("content-type", "application/json");
        let mut request = request
            .body(match body {
                Some(v) => Body::from(v.to_string()),
                None => Body::empty(),
            })
            .unwrap();
        let address: SocketAddr = "10.0.0.9:40000".parse().unwrap();
        request.extensions_mut().insert(ConnectInfo(address));
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }
}

fn app(description: &str) -> Value {
    json!({
        "name": "app", "author": "t", "description": description,
        "steps": [{"id": "A", "type": "noop", "parameters": {"n": 1}}]
    })
}

#[tokio::test]
async fn application_history_diff_rollback_and_run_version() {
    let f = Fixture::new();
    for description in ["one", "one", "two"] {
        let (status, body) = f
            .send("POST", "/api/v1/applications", Some(app(description)))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, history) = f
        .send("GET", "/api/v1/applications/app/versions", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{history}");
    let numbers: Vec<u64> = history["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [2, 1], "the identical push stored nothing");
    assert_eq!(history["versions"][0]["author"], "admin");
    assert!(history["versions"][0]["hash"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));

    let (status, one) = f
        .send("GET", "/api/v1/applications/app/versions/1", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["document"]["description"], "one");

    let (status, diff) = f
        .send("GET", "/api/v1/applications/app/diff?from=1&to=2", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{diff}");
    assert_eq!(
        diff["changes"],
        json!([{"path": "description", "op": "changed", "from": "one", "to": "two"}])
    );

    // Bad input names its field; missing versions are 404.
    for (uri, field) in [
        ("/api/v1/applications/app/diff?from=1", "to"),
        ("/api/v1/applications/app/diff?from=x&to=2", "from"),
        ("/api/v1/applications/app/versions/zero", "version"),
    ] {
        let (status, body) = f.send("GET", uri, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert_eq!(body["error"]["field"], field, "{uri}: {body}");
    }
    let (status, _) = f
        .send("GET", "/api/v1/applications/app/versions/9", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = f
        .send("GET", "/api/v1/applications/nope/versions", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = f
        .send(
            "POST",
            "/api/v1/applications/app/rollback",
            Some(json!({"version": "1"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    let (status, rolled) = f
        .send(
            "POST",
            "/api/v1/applications/app/rollback",
            Some(json!({"version": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rolled}");
    assert_eq!(rolled["version"], 3);
    assert_eq!(rolled["created"], true);
    let (_, current) = f.send("GET", "/api/v1/applications/app", None).await;
    assert_eq!(current["description"], "one");
    let (_, again) = f
        .send(
            "POST",
            "/api/v1/applications/app/rollback",
            Some(json!({"version": 3})),
        )
        .await;
    assert_eq!(
        (again["version"].clone(), again["created"].clone()),
        (json!(3), json!(false))
    );

    let run = f
        .runtime
        .start(StartRequest {
            application: "app".into(),
            ..StartRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(run.application_version, Some(3));
    let (_, task) = f
        .send("GET", &format!("/api/v1/tasks/{}", run.id), None)
        .await;
    assert_eq!(task["application_version"], 3);
}

#[tokio::test]
async fn configuration_versions_never_hold_secrets() {
    let f = Fixture::new();
    let config = |host: &str, token: Value| {
        json!({"name": "acme", "data": [
            {"name": "host", "value": host},
            {"name": "token", "value": token, "encrypted": true}
        ]})
    };
    for body in [
        config("a.example", json!("s3cr3t-one")),
        config("b.example", json!(null)),
    ] {
        let (status, answer) = f.send("POST", "/api/v1/configurations", Some(body)).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    let (_, history) = f
        .send("GET", "/api/v1/configurations/acme/versions", None)
        .await;
    assert_eq!(history["versions"][0]["version"], 2);
    assert_eq!(history["versions"][0]["encrypted"], json!(["token"]));
    let (_, one) = f
        .send("GET", "/api/v1/configurations/acme/versions/1", None)
        .await;
    assert!(!one.to_string().contains("s3cr3t"), "{one}");
    let (status, rolled) = f
        .send(
            "POST",
            "/api/v1/configurations/acme/rollback",
            Some(json!({"version": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rolled}");
    assert_eq!(rolled["version"], 3);
    let (_, diff) = f
        .send("GET", "/api/v1/configurations/acme/diff?from=2&to=3", None)
        .await;
    assert_eq!(diff["changes"][0]["path"], "data[0].value");
    assert!(!diff.to_string().contains("s3cr3t"));
}
