//! Sluice's PowerFlow-compatible REST API (SPEC §4–6): one axum [`router`] that
//! `sluice serve` serves on one machine and the AWS `api` Lambda serves behind API
//! Gateway (through `lambda_http`).
//!
//! It works over the ports of `sluice_core` and a [`Runtime`] only — never a concrete
//! backend — so both deployments share every handler, every check and every role rule.
//!
//! ```ignore
//! let state = ApiState::new(runtime, ApiPorts { schedules, schedule_stats, scheduler, access },
//!                           AdminCredentials { user: "admin".into(), password_hash: Some(phc) });
//! axum::serve(listener, sluice_api::router(state)).await?;
//! ```
//!
//! On AWS, put a verified JWT's [`JwtClaims`] into each request's extensions (see there).

pub mod auth;
mod body;
pub mod error;
mod handlers;
pub mod openapi;
pub mod routes;
pub mod schedules;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use sluice_core::ports::{AccessStore, ScheduleStatsStore, ScheduleStore, Scheduler};
use sluice_runtime::Runtime;

pub use auth::{AdminCredentials, Authenticator, Identity, JwtClaims};
pub use error::ApiError;
pub use handlers::{
    create_api_token, EntryId, OwnerRef, Probe, RunRequest, StepRunRequest, TokenRequest,
};
pub use routes::{RouteSpec, ROUTES};

/// Largest request body accepted by default (bigger gets 413): applications and
/// configurations are documents, not data.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// Longest `?wait` honoured (SPEC §4), below API Gateway's 29-second limit.
pub const MAX_WAIT: Duration = Duration::from_secs(25);

/// The ports the API needs beyond the runtime's.
#[derive(Clone)]
pub struct ApiPorts {
    pub schedules: Arc<dyn ScheduleStore>,
    pub schedule_stats: Arc<dyn ScheduleStatsStore>,
    /// Told about every schedule change (the embedded loop wakes up; on AWS, the
    /// EventBridge Scheduler adapter creates or deletes the schedule).
    pub scheduler: Arc<dyn Scheduler>,
    pub access: Arc<dyn AccessStore>,
}

/// Everything the handlers share.
pub struct ApiState {
    pub runtime: Arc<Runtime>,
    pub ports: ApiPorts,
    pub auth: Authenticator,
    /// Largest request body, in bytes.
    pub body_limit: usize,
    /// Shown by `/about`: `embedded` or `aws`.
    pub backend: String,
    /// Components checked by the deep health check, in order. [`ApiState::new`] fills it
    /// with a probe of each store port; adapters may add their own (queues, …).
    pub probes: Vec<Arc<dyn Probe>>,
}

impl ApiState {
    pub fn new(runtime: Arc<Runtime>, ports: ApiPorts, admin: AdminCredentials) -> Self {
        let probes = handlers::default_probes(&runtime, &ports);
        Self {
            runtime,
            ports,
            auth: Authenticator::new(admin),
            body_limit: DEFAULT_BODY_LIMIT,
            backend: "embedded".into(),
            probes,
        }
    }
}

pub(crate) type Shared = Arc<ApiState>;

/// The API router: every route of [`ROUTES`], each behind authentication and its role.
pub fn router(state: ApiState) -> Router {
    let state: Shared = Arc::new(state);
    let body_limit = state.body_limit;
    let mut router: Router<Shared> = Router::new();
    for spec in ROUTES {
        // axum merges the method routers of one path.
        router = router.route(spec.path, handlers::handler(spec.method, spec.path));
    }
    router
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize))
        .fallback(|| async { ApiError::not_found("no such endpoint").into_response() })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take this method",
            )
            .into_response()
        })
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// Authenticates the request and checks the matched route's role. A route missing from
/// [`ROUTES`] is refused: fail closed.
async fn authorize(
    State(state): State<Shared>,
    matched: Option<MatchedPath>,
    mut request: Request,
    next: Next,
) -> Response {
    let method = request.method().as_str().to_string();
    let Some(path) = matched.as_ref().map(|m| m.as_str().to_string()) else {
        return ApiError::internal("unrouted request").into_response();
    };
    let Some(spec) = routes::lookup(&method, &path) else {
        tracing::error!(%method, %path, "route without a declared role refused");
        return ApiError::forbidden("this route declares no role").into_response();
    };
    let Some(required) = spec.role else {
        return next.run(request).await;
    };
    let authorization = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let claims = request.extensions().get::<JwtClaims>().cloned();
    let identity = match state
        .auth
        .identify(
            authorization.as_deref(),
            claims.as_ref(),
            state.ports.access.as_ref(),
        )
        .await
    {
        Ok(identity) => identity,
        Err(e) => {
            let mut response = e.into_response();
            if response.status() == axum::http::StatusCode::UNAUTHORIZED {
                response.headers_mut().insert(
                    axum::http::header::WWW_AUTHENTICATE,
                    axum::http::HeaderValue::from_static("Basic realm=\"sluice\", Bearer"),
                );
            }
            return response;
        }
    };
    if identity.role < required {
        return ApiError::forbidden(format!(
            "{} has role {}; {method} {path} needs {required}",
            identity.name, identity.role
        ))
        .into_response();
    }
    tracing::debug!(who = %identity.name, role = %identity.role, %method, %path, "authorized");
    request.extensions_mut().insert(identity);
    next.run(request).await
}
