//! Bulk operations through the router in process, over an embedded data directory with
//! no workers (so started runs stay unfinished): revoking every run of an application
//! or every run, terminating one, and listing and deleting cache keys by prefix, each
//! with the roles it needs.

mod support;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use chrono::Utc;
use serde_json::{json, Value};
use sluice_api::auth::{new_token, token_hash};
use sluice_api::schedules::LocalScheduler;
use sluice_api::{AdminCredentials, ApiPorts, ApiState};
use sluice_core::model::{ApiToken, Role, RunState};
use sluice_runtime::{Runtime, StartRequest};

struct Fixture {
    _dir: tempfile::TempDir,
    runtime: Arc<Runtime>,
    router: Router,
    /// A bearer token per role, lowest first.
    tokens: Vec<(Role, String)>,
}

impl Fixture {
    async fn new() -> Self {
        let support::Embedded {
            dir,
            store,
            runtime,
        } = support::embedded();
        let access = store.access();
        let mut tokens = Vec::new();
        for role in Role::ALL {
            let token = new_token();
            access
                .create_token(&ApiToken {
                    name: format!("t-{}", role.as_str()),
                    role,
                    hash: token_hash(&token),
                    created_at: Utc::now(),
                })
                .await
                .unwrap();
            tokens.push((role, token));
        }
        let ports = ApiPorts {
            schedules: store.schedules(),
            schedule_stats: store.schedule_stats(),
            scheduler: Arc::new(LocalScheduler::default()),
            access,
        };
        let admin = AdminCredentials {
            user: "admin".into(),
            password_hash: None,
        };
        let router = sluice_api::router(ApiState::new(runtime.clone(), ports, admin));
        Self {
            _dir: dir,
            runtime,
            router,
            tokens,
        }
    }

    fn token(&self, role: Role) -> &str {
        &self.tokens.iter().find(|(r, _)| *r == role).unwrap().1
    }

    async fn put_app(&self, name: &str) {
        let app = serde_json::from_value(json!({
            "name": name, "author": "t",
            "steps": [{"id": "A", "type": "noop"}]
        }))
        .unwrap();
        self.runtime.put_application(&app).await.unwrap();
    }

    /// Starts a run that stays running: nothing consumes the step's queue.
    async fn start(&self, app: &str) -> String {
        let run = self
            .runtime
            .start(StartRequest {
                application: app.into(),
                ..StartRequest::default()
            })
            .await
            .unwrap();
        assert!(!run.state.is_terminal());
        run.id
    }

    async fn state_of(&self, id: &str) -> RunState {
        self.runtime.get_run(id).await.unwrap().state
    }

    async fn send(&self, method: &str, uri: &str, role: Role) -> (StatusCode, Value) {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {}", self.token(role)))
            .body(Body::empty())
            .unwrap();
        support::call(&self.router, request).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_every_run_of_an_application_or_every_run_needs_the_administrator() {
    let f = Fixture::new().await;
    f.put_app("many").await;
    f.put_app("other").await;
    // More than one listing page of the runtime's bulk revoke (500).
    let mut many = Vec::new();
    for _ in 0..505 {
        many.push(f.start("many").await);
    }
    let other = f.start("other").await;
    let third = f.start("other").await;

    // One run: execute may revoke it, by POST .../revoke or by DELETE.
    let (status, doc) = f
        .send("DELETE", &format!("/api/v1/tasks/{third}"), Role::Execute)
        .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["state"], "revoked", "{doc}");
    let (status, _) = f
        .send("DELETE", "/api/v1/tasks/isapp-nothing", Role::Execute)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // An application id: every unfinished run of it, administrators only.
    for role in [Role::View, Role::Execute, Role::Developer] {
        let (status, doc) = f.send("POST", "/api/v1/tasks/many/revoke", role).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{role:?}: {doc}");
        assert_eq!(doc["error"]["code"], "forbidden");
    }
    assert_eq!(f.state_of(&many[0]).await, RunState::Running);
    let (status, doc) = f
        .send("POST", "/api/v1/tasks/many/revoke", Role::Administrator)
        .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc, json!({"application": "many", "revoked": 505}));
    for id in [&many[0], &many[250], &many[504]] {
        assert_eq!(f.state_of(id).await, RunState::Revoked);
    }
    assert_eq!(
        f.state_of(&other).await,
        RunState::Running,
        "other apps untouched"
    );
    let (_, doc) = f
        .send("POST", "/api/v1/tasks/many/revoke", Role::Administrator)
        .await;
    assert_eq!(doc["revoked"], 0, "nothing left to revoke: {doc}");
    let (status, _) = f
        .send(
            "POST",
            "/api/v1/tasks/nosuchapp/revoke",
            Role::Administrator,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Every unfinished run.
    for role in [Role::Execute, Role::Developer] {
        let (status, _) = f.send("DELETE", "/api/v1/tasks", role).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{role:?}");
    }
    assert_eq!(f.state_of(&other).await, RunState::Running);
    let (status, doc) = f.send("DELETE", "/api/v1/tasks", Role::Administrator).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc, json!({"revoked": 1}));
    assert_eq!(f.state_of(&other).await, RunState::Revoked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_keys_list_by_prefix_in_pages_and_delete_by_prefix() {
    let f = Fixture::new().await;
    let cache = &f.runtime.backend().cache;
    for key in ["sync:a", "sync:b", "sync:c", "sync_x", "other"] {
        cache.put(key, &json!(1), None).await.unwrap();
    }

    let (status, page) = f
        .send("GET", "/api/v1/cache?prefix=sync%3A&limit=2", Role::View)
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(
        page,
        json!({"keys": ["sync:a", "sync:b"], "count": 2, "next_after": "sync:b"})
    );
    let (_, page) = f
        .send(
            "GET",
            "/api/v1/cache?prefix=sync%3A&limit=2&after=sync%3Ab",
            Role::View,
        )
        .await;
    assert_eq!(
        page,
        json!({"keys": ["sync:c"], "count": 1, "next_after": null})
    );
    let (_, page) = f.send("GET", "/api/v1/cache", Role::View).await;
    assert_eq!(page["count"], 5, "no prefix: every key");

    for (uri, field) in [
        ("/api/v1/cache?limit=0", "limit"),
        ("/api/v1/cache?limit=1001", "limit"),
        ("/api/v1/cache?limit=x", "limit"),
        ("/api/v1/cache?pattern=x", "pattern"),
    ] {
        let (status, doc) = f.send("GET", uri, Role::View).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {doc}");
        assert_eq!(doc["error"]["field"], field, "{uri}: {doc}");
    }
    let long = format!("/api/v1/cache?prefix={}", "k".repeat(1025));
    let (status, doc) = f.send("GET", &long, Role::View).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(doc["error"]["field"], "prefix");

    // Deleting needs the administrator and an explicit prefix.
    for role in [
        Role::View,
        Role::Execute,
        Role::Configuration,
        Role::Developer,
    ] {
        let (status, _) = f.send("DELETE", "/api/v1/cache?prefix=sync%3A", role).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{role:?}");
    }
    let (status, doc) = f.send("DELETE", "/api/v1/cache", Role::Administrator).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{doc}");
    assert_eq!(doc["error"]["field"], "prefix");
    assert_eq!(cache.list("", 10, None).await.unwrap().keys.len(), 5);

    let (status, doc) = f
        .send(
            "DELETE",
            "/api/v1/cache?prefix=sync%3A",
            Role::Administrator,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc, json!({"prefix": "sync:", "deleted": 3}));
    assert_eq!(
        cache.list("", 10, None).await.unwrap().keys,
        ["other", "sync_x"]
    );
    let (_, doc) = f
        .send("DELETE", "/api/v1/cache?prefix=", Role::Administrator)
        .await;
    assert_eq!(
        doc,
        json!({"prefix": "", "deleted": 2}),
        "empty: everything"
    );
    assert!(cache.list("", 10, None).await.unwrap().keys.is_empty());
}
