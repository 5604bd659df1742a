//! The handlers of every route in [`crate::routes::ROUTES`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, MethodRouter};
use axum::{Extension, Json};
use chrono::Utc;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};
use sluice_core::logs::LogDocument;
use sluice_core::model::{
    ApiToken, Application, Configuration, OwnerType, Role, RoleBinding, Run, RunState, Schedule,
    UnitState,
};
use sluice_core::operators;
use sluice_core::ports::{RunQuery, MAX_CACHE_PAGE};
use sluice_core::validate::{parse_application, parse_configuration};
use sluice_runtime::{Runtime, SingleStepError, SingleStepRequest, StartRequest};

use crate::auth::{new_token, token_hash, Identity};
use crate::body::{Body, Params};
use crate::documents::{
    About, CacheDeleted, CacheEntry, CacheKeyList, Deleted, Health, HealthComponent, LogLine,
    LogPage, NewToken, Revocation, Revoked, RoleInfo, ScheduleEntry, Status, StepRunResult,
    StepType, Task, TaskList, Token, UnitEntry, UnitPage,
};
use crate::error::ApiError;
use crate::schedules::Schedules;
use crate::versions;
use crate::{ApiPorts, Shared, MAX_WAIT};

type Result<T, E = ApiError> = std::result::Result<T, E>;

/// The handler of a declared route. Panics on a route without one, so a table entry
/// without a handler fails at startup (and in every test).
pub(crate) fn handler(method: &str, path: &str) -> MethodRouter<Shared> {
    match (method, path) {
        ("GET", "/healthcheck") | ("GET", "/api/v1/healthcheck") => get(healthcheck),
        ("GET", "/api/v1/about") => get(about),
        ("GET", "/api/v1/health") => get(health),
        ("GET", "/api/v1/openapi.json") => get(openapi),
        ("GET", "/api/v1/applications") => get(list_applications),
        ("POST", "/api/v1/applications") => post(put_application),
        ("POST", "/api/v1/applications/run") => post(run_named),
        ("GET", "/api/v1/applications/{name}") => get(get_application),
        ("DELETE", "/api/v1/applications/{name}") => delete(delete_application),
        ("POST", "/api/v1/applications/{name}/run") => post(run_application),
        ("GET", "/api/v1/applications/{name}/logs") => get(application_logs),
        ("GET", "/api/v1/applications/{name}/versions") => get(versions::application_history),
        ("GET", "/api/v1/applications/{name}/versions/{version}") => {
            get(versions::application_version)
        }
        ("GET", "/api/v1/applications/{name}/diff") => get(versions::application_diff),
        ("POST", "/api/v1/applications/{name}/rollback") => post(versions::application_rollback),
        ("GET", "/api/v1/configurations") => get(list_configurations),
        ("POST", "/api/v1/configurations") => post(put_configuration),
        ("GET", "/api/v1/configurations/{name}") => get(get_configuration),
        ("DELETE", "/api/v1/configurations/{name}") => delete(delete_configuration),
        ("GET", "/api/v1/configurations/{name}/versions") => get(versions::configuration_history),
        ("GET", "/api/v1/configurations/{name}/versions/{version}") => {
            get(versions::configuration_version)
        }
        ("GET", "/api/v1/configurations/{name}/diff") => get(versions::configuration_diff),
        ("POST", "/api/v1/configurations/{name}/rollback") => {
            post(versions::configuration_rollback)
        }
        ("GET", "/api/v1/syncpacks") => get(crate::packs::list),
        ("POST", "/api/v1/syncpacks") => post(crate::packs::install),
        ("GET", "/api/v1/syncpacks/{name}") => get(crate::packs::get_pack),
        ("DELETE", "/api/v1/syncpacks/{name}") => delete(crate::packs::uninstall),
        ("GET", "/api/v1/syncpacks/{name}/versions/{version}") => get(crate::packs::get_version),
        ("DELETE", "/api/v1/syncpacks/{name}/versions/{version}") => {
            delete(crate::packs::delete_version)
        }
        ("POST", "/api/v1/syncpacks/{name}/versions/{version}/activate") => {
            post(crate::packs::activate)
        }
        ("POST", "/api/v1/applications/{name}/copy") => post(crate::packs::copy_application),
        ("POST", "/api/v1/configurations/{name}/copy") => post(crate::packs::copy_configuration),
        ("GET", "/api/v1/steps") => get(list_steps),
        ("POST", "/api/v1/steps/run") => post(run_step),
        ("GET", "/api/v1/steps/{name}") => get(get_step),
        ("GET", "/api/v1/tasks") => get(list_tasks),
        ("DELETE", "/api/v1/tasks") => delete(terminate_all),
        ("GET", "/api/v1/tasks/{id}") => get(get_task),
        ("DELETE", "/api/v1/tasks/{id}") => delete(terminate),
        ("GET", "/api/v1/tasks/{id}/logs") => get(task_logs),
        ("GET", "/api/v1/tasks/{id}/application") => get(task_application),
        ("GET", "/api/v1/tasks/{id}/steps/{step}/output") => get(step_output),
        ("GET", "/api/v1/tasks/{id}/steps/{step}/units") => get(step_units),
        ("POST", "/api/v1/tasks/{id}/replay") => post(replay),
        ("POST", "/api/v1/tasks/{id}/revoke") => post(revoke),
        ("GET", "/api/v1/schedule") => get(list_schedules),
        ("POST", "/api/v1/schedule") => post(put_schedule),
        ("DELETE", "/api/v1/schedule") => delete(delete_schedule_body),
        ("GET", "/api/v1/schedule/{entry_id}") => get(get_schedule),
        ("DELETE", "/api/v1/schedule/{entry_id}") => delete(delete_schedule),
        ("GET", "/api/v1/cache") => get(list_cache),
        ("DELETE", "/api/v1/cache") => delete(delete_cache_prefix),
        ("GET", "/api/v1/cache/{key}") => get(get_cache),
        ("DELETE", "/api/v1/cache/{key}") => delete(delete_cache),
        ("GET", "/api/v1/roles") => get(list_roles),
        ("GET", "/api/v1/roles/owner") => get(list_bindings),
        ("POST", "/api/v1/roles/owner") => post(put_binding),
        ("DELETE", "/api/v1/roles/owner") => delete(delete_binding),
        ("GET", "/api/v1/tokens") => get(list_tokens),
        ("POST", "/api/v1/tokens") => post(create_token),
        ("DELETE", "/api/v1/tokens/{name}") => delete(delete_token),
        (method, path) => panic!("route table: no handler for {method} {path}"),
    }
}

fn schedules(state: &Shared) -> Schedules {
    Schedules {
        store: state.ports.schedules.clone(),
        stats: state.ports.schedule_stats.clone(),
        scheduler: state.ports.scheduler.clone(),
    }
}

fn deleted(kind: &str, name: &str) -> Json<Deleted> {
    Json(Deleted::new(kind, name))
}

// ---- health ------------------------------------------------------------------------

async fn healthcheck() -> Json<Status> {
    Json(Status::ok())
}

async fn about(State(state): State<Shared>) -> Json<About> {
    Json(About {
        name: "sluice".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        backend: state.backend.clone(),
        api: "/api/v1".into(),
        openapi: "/api/v1/openapi.json".into(),
    })
}

/// One backing component checked by the deep health check.
#[async_trait]
pub trait Probe: Send + Sync {
    fn name(&self) -> &str;
    async fn check(&self) -> Result<(), String>;
}

type ProbeFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

struct FnProbe {
    name: &'static str,
    check: Box<dyn Fn() -> ProbeFuture + Send + Sync>,
}

#[async_trait]
impl Probe for FnProbe {
    fn name(&self) -> &str {
        self.name
    }
    async fn check(&self) -> Result<(), String> {
        (self.check)().await
    }
}

const PROBE_KEY: &str = "__sluice_health_probe__";

/// A read of each store port (never a write, never a queue receive).
pub(crate) fn default_probes(runtime: &Arc<Runtime>, ports: &ApiPorts) -> Vec<Arc<dyn Probe>> {
    let backend = runtime.backend().clone();
    let mut probes: Vec<Arc<dyn Probe>> = Vec::new();
    let b = backend.clone();
    probes.push(Arc::new(FnProbe {
        name: "definitions",
        check: Box::new(move || {
            let b = b.clone();
            Box::pin(async move {
                b.definitions
                    .get_application(PROBE_KEY)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            })
        }),
    }));
    let b = backend.clone();
    probes.push(Arc::new(FnProbe {
        name: "runs",
        check: Box::new(move || {
            let b = b.clone();
            Box::pin(async move {
                b.runs
                    .get_run(PROBE_KEY)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            })
        }),
    }));
    let b = backend.clone();
    probes.push(Arc::new(FnProbe {
        name: "cache",
        check: Box::new(move || {
            let b = b.clone();
            Box::pin(async move {
                b.cache
                    .get(PROBE_KEY)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            })
        }),
    }));
    let b = backend;
    probes.push(Arc::new(FnProbe {
        name: "secrets",
        check: Box::new(move || {
            let b = b.clone();
            Box::pin(async move {
                b.secrets
                    .get_secrets(PROBE_KEY)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            })
        }),
    }));
    let s = ports.schedules.clone();
    probes.push(Arc::new(FnProbe {
        name: "schedules",
        check: Box::new(move || {
            let s = s.clone();
            Box::pin(async move {
                s.get_schedule(PROBE_KEY)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            })
        }),
    }));
    let a = ports.access.clone();
    probes.push(Arc::new(FnProbe {
        name: "access",
        check: Box::new(move || {
            let a = a.clone();
            Box::pin(async move {
                a.token_by_hash(PROBE_KEY)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            })
        }),
    }));
    probes
}

async fn health(State(state): State<Shared>) -> Response {
    let mut components = indexmap::IndexMap::new();
    let mut ok = true;
    for probe in &state.probes {
        let started = Instant::now();
        let result = tokio::time::timeout(Duration::from_secs(5), probe.check())
            .await
            .unwrap_or_else(|_| Err("timed out after 5s".into()));
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        ok &= result.is_ok();
        let doc = HealthComponent {
            status: if result.is_ok() { "ok" } else { "error" }.into(),
            latency_ms,
            error: result.err(),
        };
        components.insert(probe.name().to_string(), doc);
    }
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Health {
        status: if ok { "ok" } else { "error" }.into(),
        backend: state.backend.clone(),
        components,
    };
    (status, Json(body)).into_response()
}

async fn openapi() -> Json<Value> {
    Json(crate::openapi::document())
}

// ---- applications ------------------------------------------------------------------

async fn list_applications(
    State(state): State<Shared>,
    params: Params,
) -> Result<Json<Vec<Application>>> {
    let with_hidden = params.flag("hidden")?;
    let mut apps = state
        .runtime
        .backend()
        .definitions
        .list_applications()
        .await?;
    apps.retain(|app| with_hidden || !app.is_hidden());
    Ok(Json(apps))
}

async fn put_application(
    State(state): State<Shared>,
    Extension(identity): Extension<Identity>,
    body: Body,
) -> Result<Json<Application>> {
    if body.is_empty() {
        return Err(ApiError::bad_request("a JSON request body is required"));
    }
    let app = parse_application(body.text()?, state.runtime.catalog())?;
    state.runtime.push_application(&app, &identity.name).await?;
    Ok(Json(app))
}

async fn get_application(
    State(state): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<Application>> {
    state
        .runtime
        .backend()
        .definitions
        .get_application(&name)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("application \"{name}\" not found")))
}

async fn delete_application(
    State(state): State<Shared>,
    Path(name): Path<String>,
    params: Params,
) -> Result<Json<Deleted>> {
    let force = params.flag("force")?;
    let schedules = state.ports.schedules.as_ref();
    if !crate::schedules::delete_application(&state.runtime, schedules, &name, force).await? {
        return Err(ApiError::not_found(format!(
            "application \"{name}\" not found"
        )));
    }
    Ok(deleted("application", &name))
}

/// Body of `POST /applications/run` and `/applications/{name}/run`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// The application (required by `/applications/run`; optional, and must agree, in
    /// `/applications/{name}/run`).
    #[serde(default)]
    pub name: Option<String>,
    /// App variable overrides and the reserved `configuration`, `queue`, `loglevel`.
    #[serde(default)]
    pub params: Map<String, Value>,
}

async fn run_named(State(state): State<Shared>, params: Params, body: Body) -> Result<Json<Task>> {
    let request: RunRequest = body.parse()?;
    let name = request.name.clone().ok_or_else(|| {
        ApiError::bad_request("name: the application to run is required").with_field("name")
    })?;
    start(&state, &params, name, request.params).await
}

async fn run_application(
    State(state): State<Shared>,
    Path(name): Path<String>,
    params: Params,
    body: Body,
) -> Result<Json<Task>> {
    let request: RunRequest = body.parse_or_empty()?;
    if let Some(other) = request.name.as_ref().filter(|n| **n != name) {
        return Err(ApiError::bad_request(format!(
            "name: \"{other}\" differs from the path's \"{name}\""
        ))
        .with_field("name"));
    }
    start(&state, &params, name, request.params).await
}

async fn start(
    state: &Shared,
    params: &Params,
    application: String,
    run_params: Map<String, Value>,
) -> Result<Json<Task>> {
    let wait = wait_param(params)?;
    let run = state
        .runtime
        .start(StartRequest {
            application,
            params: run_params,
            ..StartRequest::default()
        })
        .await?;
    let run = wait_for_end(&state.runtime, run, wait).await?;
    Ok(Json(Task::of(&run, None)))
}

/// `?wait=N`: seconds between 0 and [`MAX_WAIT_ACCEPTED`], capped at [`MAX_WAIT`]
/// (SPEC §4); anything else is refused naming the field, never converted blindly.
fn wait_param(params: &Params) -> Result<Duration> {
    let seconds = params
        .parse::<f64>("wait", "a number of seconds")?
        .unwrap_or(0.0);
    let accepted = MAX_WAIT_ACCEPTED.as_secs_f64();
    if !(0.0..=accepted).contains(&seconds) {
        return Err(ApiError::bad_request(format!(
            "wait: must be a number of seconds between 0 and {accepted} (waits are capped at {})",
            MAX_WAIT.as_secs()
        ))
        .with_field("wait"));
    }
    Ok(Duration::from_secs_f64(seconds.min(MAX_WAIT.as_secs_f64())))
}

/// Largest `?wait` accepted (and capped to [`MAX_WAIT`]); larger numbers are mistakes.
const MAX_WAIT_ACCEPTED: Duration = Duration::from_secs(3600);

/// The run once it is terminal or `wait` has passed. Local changes arrive by broadcast;
/// the store is polled too, as the steps may run in other processes (Lambda).
async fn wait_for_end(runtime: &Runtime, mut run: Run, wait: Duration) -> Result<Run> {
    if wait.is_zero() || run.state.is_terminal() {
        return Ok(run);
    }
    let deadline = tokio::time::Instant::now() + wait;
    let mut updates = runtime.subscribe();
    loop {
        run = runtime.get_run(&run.id).await?;
        if run.state.is_terminal() {
            return Ok(run);
        }
        let poll = tokio::time::Instant::now() + Duration::from_millis(250);
        let until = poll.min(deadline);
        loop {
            tokio::select! {
                update = updates.recv() => match update {
                    Ok(p) if p.run.id == run.id && p.run.state.is_terminal() => return Ok((*p.run).clone()),
                    Ok(_) => continue,
                    Err(_) => break,
                },
                _ = tokio::time::sleep_until(until) => break,
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(runtime.get_run(&run.id).await?);
        }
    }
}

async fn application_logs(
    State(state): State<Shared>,
    Path(name): Path<String>,
    params: Params,
) -> Result<Json<LogPage>> {
    let runs = &state.runtime.backend().runs;
    let run = match params.get("task_id") {
        Some(id) => Some(state.runtime.get_run(id).await?).filter(|r| r.application == name),
        None => runs
            .list_runs(&RunQuery {
                application: Some(name.clone()),
                limit: 1,
                ..RunQuery::default()
            })
            .await?
            .into_iter()
            .next(),
    };
    let Some(run) = run else {
        if state
            .runtime
            .backend()
            .definitions
            .get_application(&name)
            .await?
            .is_none()
        {
            return Err(ApiError::not_found(format!(
                "application \"{name}\" not found"
            )));
        }
        return Ok(Json(LogPage {
            task_id: None,
            state: None,
            logs: Vec::new(),
            next_after: 0,
            more: None,
            application: Some(name),
        }));
    };
    let mut doc = logs_page(&state, &run, &params).await?;
    doc.application = Some(name);
    Ok(Json(doc))
}

// ---- configurations ----------------------------------------------------------------

async fn list_configurations(State(state): State<Shared>) -> Result<Json<Vec<Configuration>>> {
    let configs = state
        .runtime
        .backend()
        .definitions
        .list_configurations()
        .await?;
    Ok(Json(configs.iter().map(Configuration::redacted).collect()))
}

async fn put_configuration(
    State(state): State<Shared>,
    Extension(identity): Extension<Identity>,
    body: Body,
) -> Result<Json<Configuration>> {
    if body.is_empty() {
        return Err(ApiError::bad_request("a JSON request body is required"));
    }
    let config = parse_configuration(body.text()?)?;
    let (stored, _) = state
        .runtime
        .push_configuration(&config, &identity.name)
        .await?;
    Ok(Json(stored.redacted()))
}

async fn get_configuration(
    State(state): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<Configuration>> {
    state
        .runtime
        .backend()
        .definitions
        .get_configuration(&name)
        .await?
        // Stored redacted already; redact again so no path can ever show a secret.
        .map(|c| Json(c.redacted()))
        .ok_or_else(|| ApiError::not_found(format!("configuration \"{name}\" not found")))
}

async fn delete_configuration(
    State(state): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<Deleted>> {
    if !state.runtime.delete_configuration(&name).await? {
        return Err(ApiError::not_found(format!(
            "configuration \"{name}\" not found"
        )));
    }
    Ok(deleted("configuration", &name))
}

// ---- steps -------------------------------------------------------------------------

fn step_types(runtime: &Runtime) -> Vec<StepType> {
    StepType::listing(runtime.registry())
}

async fn list_steps(State(state): State<Shared>) -> Json<Vec<StepType>> {
    Json(step_types(&state.runtime))
}

async fn get_step(State(state): State<Shared>, Path(name): Path<String>) -> Result<Json<StepType>> {
    step_types(&state.runtime)
        .into_iter()
        .find(|t| t.name == name)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("step type \"{name}\" not found")))
}

/// Body of `POST /steps/run`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepRunRequest {
    /// A registered step type, or the operator `transform` (`template_render`) to
    /// test-render a template. `trigger_application` starts runs: start the run instead.
    pub name: String,
    /// The parameters, as they are: references do not resolve outside a run.
    #[serde(default)]
    pub parameters: Map<String, Value>,
    /// `transform` only: what its template sees as `input` (its predecessor's output).
    #[serde(default)]
    pub input: Option<Value>,
    /// Seconds before the attempt is abandoned (default 60, at most 900).
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
    /// 10 debug, 20 info (default), 30 warning, 40 error.
    #[serde(default)]
    pub loglevel: Option<u8>,
}

async fn run_step(
    State(state): State<Shared>,
    Extension(identity): Extension<Identity>,
    body: Body,
) -> Result<Json<StepRunResult>> {
    let request: StepRunRequest = body.parse()?;
    let timeout = request.timeout_seconds.unwrap_or(60);
    if !(1..=900).contains(&timeout) {
        return Err(
            ApiError::bad_request("timeout_seconds: must be between 1 and 900")
                .with_field("timeout_seconds"),
        );
    }
    let loglevel = request.loglevel.unwrap_or(20);
    if ![10, 20, 30, 40].contains(&loglevel) {
        return Err(ApiError::bad_request(
            "loglevel: must be 10 (debug), 20 (info), 30 (warning) or 40 (error)",
        )
        .with_field("loglevel"));
    }
    if request.input.is_some() && !operators::is_operator(&request.name) {
        return Err(
            ApiError::bad_request("input: only a transform takes an input").with_field("input"),
        );
    }
    tracing::info!(who = %identity.name, step = %request.name, "step run");
    let outcome = state
        .runtime
        .run_single_step(SingleStepRequest {
            name: request.name,
            parameters: request.parameters,
            input: request.input,
            timeout: Duration::from_secs(timeout),
            loglevel,
        })
        .await
        .map_err(|e| match e {
            SingleStepError::UnknownType(_) => ApiError::not_found(e.to_string()),
            SingleStepError::NotSingle(_) => {
                ApiError::bad_request(e.to_string()).with_field("name")
            }
            SingleStepError::InvalidParameters(_) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", e.to_string())
                    .with_field("parameters")
            }
        })?;
    Ok(Json(outcome.into()))
}

// ---- tasks -------------------------------------------------------------------------

/// Largest page of `GET /tasks`.
const MAX_PAGE: usize = 1000;

async fn list_tasks(State(state): State<Shared>, params: Params) -> Result<Json<TaskList>> {
    for name in params.0.keys() {
        if ![
            "application",
            "state",
            "since",
            "until",
            "configuration",
            "queue",
            "limit",
            "cursor",
        ]
        .contains(&name.as_str())
        {
            return Err(
                ApiError::bad_request(format!("{name}: unknown query parameter"))
                    .with_field(name.clone()),
            );
        }
    }
    let state_filter = params
        .get("state")
        .map(|s| {
            RunState::parse(s).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "state: \"{s}\" is not pending, running, success, failure or revoked"
                ))
                .with_field("state")
            })
        })
        .transpose()?;
    let limit = params
        .parse::<usize>("limit", "a whole number")?
        .unwrap_or(50);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(
            ApiError::bad_request(format!("limit: must be between 1 and {MAX_PAGE}"))
                .with_field("limit"),
        );
    }
    let query = RunQuery {
        application: params.get("application").map(str::to_string),
        state: state_filter,
        configuration: params.get("configuration").map(str::to_string),
        queue: params.get("queue").map(str::to_string),
        since: params.time("since")?,
        until: params.time("until")?,
        before_id: params.get("cursor").map(str::to_string),
        // One more than asked: tells whether there is a next page.
        limit: limit + 1,
    };
    let mut runs = state.runtime.backend().runs.list_runs(&query).await?;
    let more = runs.len() > limit;
    runs.truncate(limit);
    let next_cursor = if more {
        runs.last().map(|r| r.id.clone())
    } else {
        None
    };
    let tasks: Vec<Task> = runs.iter().map(|r| Task::of(r, None)).collect();
    Ok(Json(TaskList {
        count: tasks.len(),
        tasks,
        next_cursor,
    }))
}

async fn find_run(state: &Shared, id: &str) -> Result<Run> {
    state.runtime.get_run(id).await.map_err(|e| match e {
        sluice_runtime::RuntimeError::NotFound(_) => {
            ApiError::not_found(format!("task \"{id}\" not found"))
        }
        other => other.into(),
    })
}

async fn get_task(
    State(state): State<Shared>,
    Path(id): Path<String>,
    params: Params,
) -> Result<Json<Task>> {
    let run = find_run(&state, &id).await?;
    let run = wait_for_end(&state.runtime, run, wait_param(&params)?).await?;
    let outputs = if params.flag("outputs")? {
        Some(state.runtime.outputs(&run).await?)
    } else {
        None
    };
    Ok(Json(Task::of(&run, outputs.as_ref())))
}

/// Largest page of a log read.
const MAX_LOG_PAGE: usize = 10_000;

async fn logs_page(state: &Shared, run: &Run, params: &Params) -> Result<LogPage> {
    let after = params.parse::<u64>("after", "a whole number")?.unwrap_or(0);
    let limit = params
        .parse::<usize>("limit", "a whole number")?
        .unwrap_or(1000);
    if !(1..=MAX_LOG_PAGE).contains(&limit) {
        return Err(
            ApiError::bad_request(format!("limit: must be between 1 and {MAX_LOG_PAGE}"))
                .with_field("limit"),
        );
    }
    let step = params.get("step");
    let entries = state.runtime.logs(run, after, limit).await?;
    let next_after = entries.last().map_or(after, |(seq, _)| *seq);
    let logs: Vec<LogLine> = entries
        .iter()
        .filter(|(_, e)| step.is_none_or(|s| s == e.step))
        .map(|(seq, e)| LogLine::from(&LogDocument::new(*seq, e)))
        .collect();
    Ok(LogPage {
        task_id: Some(run.id.clone()),
        state: Some(run.state),
        logs,
        next_after,
        more: Some(entries.len() == limit),
        application: None,
    })
}

async fn task_logs(
    State(state): State<Shared>,
    Path(id): Path<String>,
    params: Params,
) -> Result<Json<LogPage>> {
    let run = find_run(&state, &id).await?;
    Ok(Json(logs_page(&state, &run, &params).await?))
}

async fn task_application(
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<Application>> {
    let run = find_run(&state, &id).await?;
    Ok(Json(state.runtime.plan_of(&run).await?.app.clone()))
}

async fn step_output(
    State(state): State<Shared>,
    Path((id, step)): Path<(String, String)>,
) -> Result<Json<Value>> {
    let run = find_run(&state, &id).await?;
    if run.step(&step).is_none() {
        return Err(ApiError::not_found(format!(
            "task \"{id}\" has no step \"{step}\""
        )));
    }
    Ok(Json(state.runtime.read_output(&run, &step).await?))
}

/// Largest page of units.
const MAX_UNIT_PAGE: usize = 1000;

async fn step_units(
    State(state): State<Shared>,
    Path((id, step)): Path<(String, String)>,
    params: Params,
) -> Result<Json<UnitPage>> {
    let offset = params
        .parse::<usize>("offset", "a whole number")?
        .unwrap_or(0);
    let limit = params
        .parse::<usize>("limit", "a whole number")?
        .unwrap_or(100);
    if !(1..=MAX_UNIT_PAGE).contains(&limit) {
        return Err(
            ApiError::bad_request(format!("limit: must be between 1 and {MAX_UNIT_PAGE}"))
                .with_field("limit"),
        );
    }
    let wanted = match params.get("state") {
        None => None,
        Some(text) => Some(
            serde_json::from_value::<UnitState>(Value::String(text.to_string())).map_err(|_| {
                ApiError::bad_request("state: must be pending, queued, running, done or failed")
                    .with_field("state")
            })?,
        ),
    };
    let run = find_run(&state, &id).await?;
    let Some(found) = run.step(&step) else {
        return Err(ApiError::not_found(format!(
            "task \"{id}\" has no step \"{step}\""
        )));
    };
    let matching = found
        .units
        .iter()
        .enumerate()
        .filter(|(_, unit)| wanted.is_none_or(|w| unit.state == w));
    let count = matching.clone().count();
    let units: Vec<UnitEntry> = matching
        .skip(offset)
        .take(limit)
        .map(|(index, unit)| UnitEntry {
            index,
            state: unit_state_name(unit.state).to_string(),
            attempt: unit.attempt,
            started_at: unit.claimed_at,
            finished_at: unit.finished_at,
            error: unit.error.clone(),
            warnings: unit.warnings.clone(),
            child_run: unit.child_run.clone(),
        })
        .collect();
    let next_offset = (offset.saturating_add(units.len()) < count).then(|| offset + units.len());
    Ok(Json(UnitPage {
        task_id: run.id.clone(),
        step,
        total: found.units.len(),
        matching: count,
        offset,
        units,
        next_offset,
    }))
}

fn unit_state_name(state: UnitState) -> &'static str {
    match state {
        UnitState::Pending => "pending",
        UnitState::Queued => "queued",
        UnitState::Running => "running",
        UnitState::Done => "done",
        UnitState::Failed => "failed",
    }
}

async fn replay(
    State(state): State<Shared>,
    Path(id): Path<String>,
    params: Params,
) -> Result<Json<Task>> {
    find_run(&state, &id).await?;
    let wait = wait_param(&params)?;
    let run = state.runtime.replay(&id).await?;
    let run = wait_for_end(&state.runtime, run, wait).await?;
    Ok(Json(Task::of(&run, None)))
}

/// Revokes the run `id`; as in PowerFlow, an application id instead revokes all its
/// unfinished runs, which needs the administrator role (the route's declared role is
/// the single run's). A run id wins over an application of the same name.
async fn revoke(
    State(state): State<Shared>,
    Extension(identity): Extension<Identity>,
    Path(id): Path<String>,
) -> Result<Json<Revocation>> {
    match state.runtime.get_run(&id).await {
        Ok(_) => {
            let run = state.runtime.revoke(&id).await?;
            Ok(Json(Revocation::Run(Box::new(Task::of(&run, None)))))
        }
        Err(sluice_runtime::RuntimeError::NotFound(_)) => {
            if state
                .runtime
                .backend()
                .definitions
                .get_application(&id)
                .await?
                .is_none()
            {
                return Err(ApiError::not_found(format!(
                    "task \"{id}\" not found (nor an application of that id)"
                )));
            }
            if identity.role < Role::Administrator {
                return Err(ApiError::forbidden(format!(
                    "revoking every run of an application needs the administrator role \
                     (you have {})",
                    identity.role.as_str()
                )));
            }
            tracing::info!(who = %identity.name, application = %id, "revoke all runs");
            let revoked = state.runtime.revoke_all(Some(&id)).await?;
            Ok(Json(Revocation::Application(Revoked {
                application: Some(id),
                revoked: revoked as u64,
            })))
        }
        Err(e) => Err(e.into()),
    }
}

/// `DELETE /tasks/{id}`: terminating a run is revoking it (a running attempt's late
/// result is ignored).
async fn terminate(State(state): State<Shared>, Path(id): Path<String>) -> Result<Json<Task>> {
    find_run(&state, &id).await?;
    let run = state.runtime.revoke(&id).await?;
    Ok(Json(Task::of(&run, None)))
}

/// `DELETE /tasks`: revokes every unfinished run.
async fn terminate_all(
    State(state): State<Shared>,
    Extension(identity): Extension<Identity>,
) -> Result<Json<Revoked>> {
    tracing::info!(who = %identity.name, "revoke all runs");
    let revoked = state.runtime.revoke_all(None).await?;
    Ok(Json(Revoked {
        application: None,
        revoked: revoked as u64,
    }))
}

// ---- schedules ---------------------------------------------------------------------

async fn list_schedules(State(state): State<Shared>) -> Result<Json<Vec<ScheduleEntry>>> {
    Ok(Json(schedules(&state).list().await?))
}

async fn put_schedule(State(state): State<Shared>, body: Body) -> Result<Json<ScheduleEntry>> {
    let schedule: Schedule = body.parse()?;
    crate::packs::refuse_owned_schedule(&state, &schedule.entry_id).await?;
    Ok(Json(
        schedules(&state).put(&state.runtime, &schedule).await?,
    ))
}

async fn get_schedule(
    State(state): State<Shared>,
    Path(entry_id): Path<String>,
) -> Result<Json<ScheduleEntry>> {
    Ok(Json(schedules(&state).get(&entry_id).await?))
}

async fn delete_schedule(
    State(state): State<Shared>,
    Path(entry_id): Path<String>,
) -> Result<Json<Deleted>> {
    crate::packs::refuse_owned_schedule(&state, &entry_id).await?;
    schedules(&state).delete(&entry_id).await?;
    Ok(deleted("schedule", &entry_id))
}

/// Body of `DELETE /schedule`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EntryId {
    pub entry_id: String,
}

async fn delete_schedule_body(State(state): State<Shared>, body: Body) -> Result<Json<Deleted>> {
    let EntryId { entry_id } = body.parse()?;
    crate::packs::refuse_owned_schedule(&state, &entry_id).await?;
    schedules(&state).delete(&entry_id).await?;
    Ok(deleted("schedule", &entry_id))
}

// ---- cache -------------------------------------------------------------------------

async fn get_cache(
    State(state): State<Shared>,
    Path(key): Path<String>,
) -> Result<Json<CacheEntry>> {
    let value = state
        .runtime
        .backend()
        .cache
        .get(&key)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("cache key \"{key}\" not found")))?;
    Ok(Json(CacheEntry { key, value }))
}

/// Longest `prefix` of the cache listing and bulk delete.
const MAX_CACHE_PREFIX: usize = 1024;

fn cache_prefix(params: &Params, allowed: &[&str]) -> Result<Option<String>> {
    for name in params.0.keys() {
        if !allowed.contains(&name.as_str()) {
            return Err(
                ApiError::bad_request(format!("{name}: unknown query parameter"))
                    .with_field(name.clone()),
            );
        }
    }
    // Present but empty is meaningful here (every key), unlike other parameters.
    let prefix = params.0.get("prefix").cloned();
    if prefix.as_ref().is_some_and(|p| p.len() > MAX_CACHE_PREFIX) {
        return Err(
            ApiError::bad_request(format!("prefix: at most {MAX_CACHE_PREFIX} bytes"))
                .with_field("prefix"),
        );
    }
    Ok(prefix)
}

async fn list_cache(State(state): State<Shared>, params: Params) -> Result<Json<CacheKeyList>> {
    let prefix = cache_prefix(&params, &["prefix", "limit", "after"])?.unwrap_or_default();
    let limit = params
        .parse::<usize>("limit", "a whole number")?
        .unwrap_or(100);
    if !(1..=MAX_CACHE_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit: must be between 1 and {MAX_CACHE_PAGE}"
        ))
        .with_field("limit"));
    }
    let page = state
        .runtime
        .backend()
        .cache
        .list(&prefix, limit, params.get("after"))
        .await?;
    Ok(Json(CacheKeyList {
        count: page.keys.len(),
        keys: page.keys,
        next_after: page.next_after,
    }))
}

async fn delete_cache_prefix(
    State(state): State<Shared>,
    Extension(identity): Extension<Identity>,
    params: Params,
) -> Result<Json<CacheDeleted>> {
    // Required, so that a bare DELETE /cache never clears everything by accident;
    // `prefix=` (empty) does, deliberately.
    let prefix = cache_prefix(&params, &["prefix"])?.ok_or_else(|| {
        ApiError::bad_request("prefix: required (an empty prefix deletes every entry)")
            .with_field("prefix")
    })?;
    tracing::info!(who = %identity.name, prefix = %prefix, "cache delete by prefix");
    let deleted = state.runtime.backend().cache.delete_prefix(&prefix).await?;
    Ok(Json(CacheDeleted {
        prefix,
        deleted: deleted as u64,
    }))
}

async fn delete_cache(
    State(state): State<Shared>,
    Path(key): Path<String>,
) -> Result<Json<Deleted>> {
    if !state.runtime.backend().cache.delete(&key).await? {
        return Err(ApiError::not_found(format!(
            "cache key \"{key}\" not found"
        )));
    }
    Ok(deleted("cache", &key))
}

// ---- roles and tokens --------------------------------------------------------------

async fn list_roles() -> Json<Vec<RoleInfo>> {
    Json(
        Role::ALL
            .iter()
            .map(|r| RoleInfo {
                name: *r,
                description: r.description().to_string(),
                includes: Role::ALL.iter().filter(|o| *o < r).copied().collect(),
            })
            .collect(),
    )
}

fn owner_type_param(params: &Params) -> Result<Option<OwnerType>> {
    params
        .get("owner_type")
        .map(|t| match t {
            "user" => Ok(OwnerType::User),
            "group" => Ok(OwnerType::Group),
            other => Err(ApiError::bad_request(format!(
                "owner_type: \"{other}\" is not user or group"
            ))
            .with_field("owner_type")),
        })
        .transpose()
}

async fn list_bindings(
    State(state): State<Shared>,
    params: Params,
) -> Result<Json<Vec<RoleBinding>>> {
    let owner = params.get("owner");
    let owner_type = owner_type_param(&params)?;
    let bindings = state.ports.access.list_bindings().await?;
    Ok(Json(
        bindings
            .into_iter()
            .filter(|b| {
                owner.is_none_or(|o| o == b.owner) && owner_type.is_none_or(|t| t == b.owner_type)
            })
            .collect(),
    ))
}

async fn put_binding(State(state): State<Shared>, body: Body) -> Result<Json<RoleBinding>> {
    let binding: RoleBinding = body.parse()?;
    if binding.owner.trim().is_empty() {
        return Err(ApiError::invalid(&sluice_core::Invalid::one(
            sluice_core::Issue::new("owner", "must not be empty"),
        )));
    }
    state.ports.access.put_binding(&binding).await?;
    Ok(Json(binding))
}

/// Body of `DELETE /roles/owner`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OwnerRef {
    pub owner: String,
    #[serde(default)]
    pub owner_type: Option<OwnerType>,
}

async fn delete_binding(
    State(state): State<Shared>,
    params: Params,
    body: Body,
) -> Result<Json<Deleted>> {
    let (owner, owner_type) = if body.is_empty() {
        let owner = params.get("owner").ok_or_else(|| {
            ApiError::bad_request("owner: required (in the body or the query)").with_field("owner")
        })?;
        (owner.to_string(), owner_type_param(&params)?)
    } else {
        let r: OwnerRef = body.parse()?;
        (r.owner, r.owner_type)
    };
    let owner_type = owner_type.unwrap_or(OwnerType::User);
    if !state
        .ports
        .access
        .delete_binding(owner_type, &owner)
        .await?
    {
        return Err(ApiError::not_found(format!(
            "no role is bound to {} \"{owner}\"",
            owner_type.as_str()
        )));
    }
    Ok(deleted("role_binding", &owner))
}

async fn list_tokens(State(state): State<Shared>) -> Result<Json<Vec<Token>>> {
    Ok(Json(
        state
            .ports
            .access
            .list_tokens()
            .await?
            .iter()
            .map(Token::from)
            .collect(),
    ))
}

/// Body of `POST /tokens`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// 1-64 letters, digits, `_`, `-` or `.`.
    pub name: String,
    pub role: Role,
}

/// Validates a token name and creates the token; returns the stored record and the
/// token (to be shown once). Shared by the API and `sluice tokens create`.
pub async fn create_api_token(
    access: &dyn sluice_core::ports::AccessStore,
    name: &str,
    role: Role,
) -> Result<(ApiToken, String)> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !valid {
        return Err(ApiError::invalid(&sluice_core::Invalid::one(
            sluice_core::Issue::new(
                "name",
                format!("\"{name}\" must be 1-64 letters, digits, _, - or ."),
            ),
        )));
    }
    let token = new_token();
    let record = ApiToken {
        name: name.to_string(),
        role,
        hash: token_hash(&token),
        created_at: Utc::now(),
    };
    if !access.create_token(&record).await? {
        return Err(ApiError::conflict(format!(
            "a token named \"{name}\" exists; revoke it first"
        ))
        .with_field("name"));
    }
    Ok((record, token))
}

async fn create_token(State(state): State<Shared>, body: Body) -> Result<Json<NewToken>> {
    let request: TokenRequest = body.parse()?;
    let (record, token) =
        create_api_token(state.ports.access.as_ref(), &request.name, request.role).await?;
    Ok(Json(NewToken {
        record: Token::from(&record),
        token,
    }))
}

async fn delete_token(
    State(state): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<Deleted>> {
    if !state.ports.access.delete_token(&name).await? {
        return Err(ApiError::not_found(format!("token \"{name}\" not found")));
    }
    Ok(deleted("token", &name))
}
