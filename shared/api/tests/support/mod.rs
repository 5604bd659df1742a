//! What the router tests share: a step type that does nothing, and a runtime over a
//! fresh embedded data directory with the API's other ports.

// Each test file uses a part of this module.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};
use sluice_api::schedules::LocalScheduler;
use sluice_api::ApiPorts;
use sluice_core::step::{StepContext, StepError, StepOutput, StepRegistry, StepType};
use sluice_embedded::EmbeddedStore;
use sluice_runtime::{Runtime, RuntimeConfig};

/// A step type that outputs `null`.
pub struct Noop;

#[async_trait]
impl StepType for Noop {
    fn name(&self) -> &str {
        "noop"
    }
    fn description(&self) -> &str {
        "does nothing"
    }
    fn version(&self) -> &str {
        "3.2.1"
    }
    fn parameter_schema(&self) -> Value {
        json!({"type": "object"})
    }
    async fn execute(&self, _: Value, _: &StepContext) -> Result<StepOutput, StepError> {
        Ok(StepOutput::value(json!(null)))
    }
}

/// A data directory and a runtime over it (with [`Noop`] registered, no workers).
pub struct Embedded {
    pub dir: tempfile::TempDir,
    pub store: EmbeddedStore,
    pub runtime: Arc<Runtime>,
}

pub fn embedded() -> Embedded {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let mut registry = StepRegistry::new();
    registry.register(Noop);
    let runtime = Runtime::new(store.backend(), registry, RuntimeConfig::default());
    Embedded {
        dir,
        store,
        runtime,
    }
}

/// The API's ports other than the runtime's, on `store`, with the in-process scheduler.
pub fn api_ports(store: &EmbeddedStore) -> ApiPorts {
    ApiPorts {
        schedules: store.schedules(),
        schedule_stats: store.schedule_stats(),
        scheduler: Arc::new(LocalScheduler::default()),
        access: store.access(),
    }
}

/// Sends `request` to `router` from 127.0.0.1:40000 (the client address the rate limits
/// see) and returns the status and the body as JSON (`null` when it is not JSON).
pub async fn call(
    router: &axum::Router,
    mut request: axum::http::Request<axum::body::Body>,
) -> (axum::http::StatusCode, Value) {
    use tower::ServiceExt;
    let address: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    request
        .extensions_mut()
        .insert(axum::extract::ConnectInfo(address));
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}
