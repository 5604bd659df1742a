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
//! sluice_api::serve(listener, sluice_api::router(state), shutdown).await?;
//! ```
//!
//! On AWS, put a verified JWT's [`JwtClaims`] into each request's extensions (see there).

pub mod auth;
mod body;
pub mod console;
pub mod documents;
pub mod error;
pub mod events;
mod handlers;
pub mod limits;
pub mod openapi;
pub mod packs;
pub mod reports;
pub mod routes;
pub mod schedules;
mod server;
mod versions;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
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
pub use limits::{ApiClock, Rate};
pub use routes::{RouteSpec, ROUTES};
pub use server::{serve, JsonErrorListener, JsonErrorStream};

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
    /// Requests per caller (see [`caller_of`]); `per_second: 0` turns the limit off.
    pub rate_limit: Rate,
    /// The clock of the rate limit.
    pub clock: ApiClock,
    /// `Some` where the server keeps long-lived connections (`sluice serve`): the run
    /// event stream stays open until the run ends or this turns `true` (shutdown). `None`
    /// (the `api` Lambda, whose responses are buffered): the stream is one document.
    pub live_events: Option<tokio::sync::watch::Receiver<bool>>,
    /// How many steps this server's worker pool runs at once (`sluice serve --workers`),
    /// shown by the dashboard; `None` where workers are not this process's (AWS Lambda).
    pub worker_slots: Option<usize>,
    /// Set only by [`in_process_router`]: every request is this caller, unauthenticated.
    /// Private, so that no server built with [`router`] can have it, and no part of a
    /// request (header, extension) can ever select it.
    in_process: Option<Identity>,
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
            rate_limit: Rate::DEFAULT,
            clock: ApiClock::system(),
            live_events: None,
            worker_slots: None,
            in_process: None,
        }
    }
}

pub(crate) type Shared = Arc<ApiState>;

/// Longest request target (path and query) answered normally; longer gets a JSON 414.
/// (Beyond 64 KiB hyper refuses it before any handler runs; [`serve`] makes that answer
/// the same JSON 414.)
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// Response header carrying the request id (also in the message of a 500 answer).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Who is asking, as the limits see it (a request extension set by the rate-limit
/// layer): the rate-limit key ([`caller_of`]) and the client address when known.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key: String,
    pub address: Option<String>,
}

impl Caller {
    fn of(request: &Request) -> Self {
        Self {
            key: caller_of(request),
            address: client_address(request),
        }
    }

    /// Whom password verifications are counted against: the client address when known,
    /// as credentials can be made up at will (a guesser rotating user names is still
    /// one caller), else the credential's name.
    fn verifier_key(&self) -> &str {
        self.address.as_deref().unwrap_or(&self.key)
    }
}

fn client_address(request: &Request) -> Option<String> {
    request
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string())
}

/// The caller of a request: the credential's name (a token by a prefix of its hash, the
/// Basic user, the JWT user) at the client address, either alone when the other is
/// unknown, `anonymous` when both are.
pub fn caller_of(request: &Request) -> String {
    let address = client_address(request);
    let credential = if let Some(claims) = request.extensions().get::<JwtClaims>() {
        Some(format!("jwt:{}", claims.username))
    } else {
        request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(auth::credential_name)
    };
    match (credential, address) {
        (Some(credential), Some(address)) => format!("{credential}@{address}"),
        (Some(credential), None) => credential,
        (None, Some(address)) => address,
        (None, None) => "anonymous".into(),
    }
}

/// The API router: every route of [`ROUTES`], each behind authentication and its role.
pub fn router(state: ApiState) -> Router {
    let limiter =
        limits::CallerLimiter::at_rate(state.rate_limit, state.clock.clone()).map(Arc::new);
    let state: Shared = Arc::new(state);
    let body_limit = state.body_limit;
    let mut router: Router<Shared> = Router::new();
    for spec in ROUTES {
        // axum merges the method routers of one path.
        let handler = match (spec.method, spec.path) {
            ("GET", "/api/v1/tasks/{id}/events") => axum::routing::get(events::task_events),
            ("GET", "/api/v1/whoami") => axum::routing::get(console::whoami),
            ("GET", "/api/v1/dashboard") => axum::routing::get(console::dashboard::summary),
            ("GET", "/api/v1/reports") => axum::routing::get(reports::list),
            ("GET", "/api/v1/reports/{id}") => axum::routing::get(reports::get),
            ("DELETE", "/api/v1/reports/{id}") => axum::routing::delete(reports::delete),
            ("POST", "/api/v1/validate/application") => {
                axum::routing::post(console::validate::application)
            }
            _ => handlers::handler(spec.method, spec.path),
        };
        router = router.route(spec.path, handler);
    }
    router
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize))
        // The console's static pages: public, outside the authorization layer.
        .merge(console::routes())
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
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            rate_limit(limiter.clone(), request, next)
        }))
        .layer(middleware::from_fn(request_context))
        .with_state(state)
}

/// The router for a client in the same process (the CLI's local mode, which opens the
/// data directory itself and so already holds everything in it): every request is
/// `identity`, which is not authenticated, and no rate limit applies. Roles are still
/// checked against `identity.role`. Never serve this router on a socket: it trusts its
/// caller; [`router`] is the one for a network.
pub fn in_process_router(mut state: ApiState, identity: Identity) -> Router {
    state.in_process = Some(identity);
    state.rate_limit.per_second = 0;
    router(state)
}

/// Refuses a caller over its rate with 429 and `Retry-After`, before any other work.
async fn rate_limit(
    limiter: Option<Arc<limits::CallerLimiter>>,
    mut request: Request,
    next: Next,
) -> Response {
    let caller = Caller::of(&request);
    if let Some(limiter) = &limiter {
        if let Err(wait) = limiter.check(&caller.key) {
            return ApiError::too_many_requests(
                "too many requests; slow down and retry after the Retry-After seconds",
                wait,
            )
            .into_response();
        }
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// Gives every request an id (header [`REQUEST_ID_HEADER`]), answers an overlong target
/// with a JSON 414, and turns the detail of a 500 answer into a log line: the client
/// reads a generic message with the request id, never backend text.
async fn request_context(request: Request, next: Next) -> Response {
    let request_id = new_request_id();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let mut response = if request.uri().to_string().len() > MAX_URI_BYTES {
        server::refused_request(axum::http::StatusCode::URI_TOO_LONG).into_response()
    } else {
        as_json_error(next.run(request).await).await
    };
    if let Some(detail) = response.extensions_mut().remove::<error::InternalDetail>() {
        tracing::error!(request_id, %method, path, error = %detail.0, "request failed");
        let body = serde_json::json!({"error": {
            "code": "internal",
            "message": format!("{} (request id {request_id})", error::INTERNAL_MESSAGE),
            "request_id": request_id,
        }});
        let status = response.status();
        response = (status, axum::Json(body)).into_response();
    }
    if let Ok(value) = axum::http::HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// A client error axum answered on its own (an extractor's rejection, in plain text) in
/// the API's JSON shape, with that text as the message.
async fn as_json_error(response: Response) -> Response {
    use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
    let status = response.status();
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !status.is_client_error() || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    // A rejection is one line: a longer body is not worth repeating.
    let text = axum::body::to_bytes(body, 1024)
        .await
        .ok()
        .and_then(|bytes| String::from_utf8(bytes.to_vec()).ok())
        .map(|text| text.trim().to_string())
        .filter(|text| !text.is_empty());
    let message = text.unwrap_or_else(|| status.canonical_reason().unwrap_or("refused").into());
    let mut json = ApiError::new(status, error_code(status), message).into_response();
    for (name, value) in &parts.headers {
        if name != CONTENT_TYPE && name != CONTENT_LENGTH {
            json.headers_mut().append(name.clone(), value.clone());
        }
    }
    json
}

/// The `code` of an error answer of this status (see docs/api.md).
fn error_code(status: axum::http::StatusCode) -> &'static str {
    use axum::http::StatusCode as S;
    match status {
        S::UNAUTHORIZED => "unauthorized",
        S::FORBIDDEN => "forbidden",
        S::NOT_FOUND => "not_found",
        S::METHOD_NOT_ALLOWED => "method_not_allowed",
        S::CONFLICT => "conflict",
        S::PAYLOAD_TOO_LARGE => "payload_too_large",
        S::URI_TOO_LONG => "uri_too_long",
        S::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        S::UNPROCESSABLE_ENTITY => "invalid",
        S::TOO_MANY_REQUESTS => "rate_limited",
        S::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers_too_large",
        _ => "bad_request",
    }
}

fn new_request_id() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Who sends `request`: the fixed caller of an [`in_process_router`], else whom its
/// credentials (or its verified JWT claims) name.
fn identify(
    state: Shared,
    request: &Request,
) -> impl std::future::Future<Output = Result<Identity, ApiError>> + Send + 'static {
    let authorization = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let claims = request.extensions().get::<JwtClaims>().cloned();
    let caller = request
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or_else(|| Caller::of(request));
    async move {
        if let Some(identity) = &state.in_process {
            return Ok(identity.clone());
        }
        state
            .auth
            .identify(
                authorization.as_deref(),
                claims.as_ref(),
                state.ports.access.as_ref(),
                caller.verifier_key(),
            )
            .await
    }
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
    let identity = match identify(state.clone(), &request).await {
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
