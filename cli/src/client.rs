//! The API client every command that works on stored documents, runs, cache, tokens or
//! schedules goes through, in either of two transports:
//!
//! - with `--endpoint URL` (or `SLUICE_ENDPOINT`), a server's REST API over HTTP.
//!   Credentials: `--token` / `SLUICE_TOKEN` (a bearer API token), else
//!   `SLUICE_ADMIN_PASSWORD` (HTTP Basic as `SLUICE_ADMIN_USER`, default `admin`);
//! - without it, the same API router called in this process
//!   ([`sluice_api::in_process_router`]) over the data directory (or `--backend aws`), as
//!   its administrator: whoever can open the data directory holds everything in it.
//!
//! Either way a command sends the same requests and reads the same documents, so it has
//! one implementation; the server's 400/404/409/413/422 are invalid input (exit 2),
//! anything else exit 3.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context};
use base64::Engine;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use sluice_api::documents::{
    CacheDeleted, CacheEntry, CacheKeyList, ErrorDocument, LogPage, Revoked, Task, TaskList,
    UnitPage,
};
use sluice_api::{AdminCredentials, ApiState, Identity};
use sluice_core::model::{Application, Configuration, Role, RunState};
use sluice_core::step::StepRegistry;
use sluice_core::task::rfc3339;

use crate::local::Local;
use crate::progress::Printer;
use crate::{
    BackendKind, CacheCommand, Cli, DocCommand, InvalidInput, OutputFormat, RunArgs, RunsCommand,
};
use sluice_core::ports::MAX_CACHE_PAGE;
use sluice_core::versions::DefinitionKind;

/// The API, over HTTP or in process (see the module's documentation).
pub struct Client {
    transport: Transport,
}

enum Transport {
    Http {
        base: String,
        http: reqwest::Client,
        authorization: Option<String>,
    },
    InProcess {
        router: axum::Router,
        /// The backend the router works on; its runtime can also run this process's
        /// step workers (`sluice run`).
        local: Box<Local>,
    },
}

/// Where a command's requests go, from the global options (kept apart from the
/// subcommand, which the dispatch consumes).
#[derive(Clone)]
pub struct Connect {
    endpoint: Option<String>,
    token: Option<String>,
    backend: BackendKind,
    data_dir: PathBuf,
    stack_outputs: Option<PathBuf>,
    result_expires: Option<i64>,
}

impl Connect {
    pub fn of(cli: &Cli) -> Self {
        Self {
            endpoint: cli.endpoint.clone(),
            token: cli.token.clone(),
            backend: cli.backend,
            data_dir: cli.data_dir.clone(),
            stack_outputs: cli.stack_outputs.clone(),
            result_expires: cli.result_expires,
        }
    }

    /// The client of `--endpoint`, else the router in process over the data directory
    /// (or `--backend aws`) with `registry`'s step types.
    pub async fn client(&self, registry: &StepRegistry) -> anyhow::Result<Client> {
        if let Some(endpoint) = &self.endpoint {
            return Client::new(endpoint, self.token.clone());
        }
        Ok(Client::in_process(self.open_local(registry).await?))
    }

    /// The data directory's backend (or `--backend aws`) with a runtime in this process,
    /// for what needs the process itself (step workers, the data directory's lock).
    pub async fn open_local(&self, registry: &StepRegistry) -> anyhow::Result<Local> {
        match self.backend {
            BackendKind::Embedded => Local::open(&self.data_dir, self.result_expires, registry),
            BackendKind::Aws => {
                crate::aws::open_local(self.stack_outputs.as_deref(), registry).await
            }
        }
    }
}

/// An answer read as the API document `T` (see `sluice_api::documents`).
pub fn read_as<T: DeserializeOwned>(doc: Value) -> anyhow::Result<T> {
    serde_json::from_value(doc).context("the server answered with an unexpected document")
}

/// Percent-encodes one path segment.
pub fn segment(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Maps an API error status to the exit codes: input problems exit 2, everything else 3.
fn status_error(status: u16, message: String) -> anyhow::Error {
    match status {
        400 | 404 | 409 | 413 | 422 => InvalidInput(message).into(),
        _ => anyhow!("{message} (HTTP {status})"),
    }
}

/// Largest request body the router in process takes: more than a server's default, as
/// the documents are the data directory owner's own files.
const IN_PROCESS_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// Largest answer read from the router in process (the server's own documents: a task
/// with outputs, a page of logs).
const MAX_IN_PROCESS_ANSWER: usize = 256 * 1024 * 1024;

impl Client {
    /// A server's API at `endpoint`.
    pub fn new(endpoint: &str, token: Option<String>) -> anyhow::Result<Self> {
        let authorization = match token.filter(|t| !t.is_empty()) {
            Some(token) => Some(format!("Bearer {token}")),
            None => std::env::var("SLUICE_ADMIN_PASSWORD")
                .ok()
                .filter(|p| !p.is_empty())
                .map(|password| {
                    let user =
                        std::env::var("SLUICE_ADMIN_USER").unwrap_or_else(|_| "admin".into());
                    format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD
                            .encode(format!("{user}:{password}"))
                    )
                }),
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Self {
            transport: Transport::Http {
                base: endpoint.trim_end_matches('/').to_string(),
                http,
                authorization,
            },
        })
    }

    /// The API router in this process over `local`'s backend, called as the
    /// administrator named after the OS user (the author of what it pushes, as before).
    pub fn in_process(local: Local) -> Self {
        // No password: nothing here authenticates, the caller is fixed.
        let admin = AdminCredentials {
            user: crate::history::cli_author(),
            password_hash: None,
        };
        let mut state = ApiState::new(local.runtime.clone(), local.api_ports(), admin);
        state.backend = local.backend_name().into();
        // The documents are the user's own files (`plan` reads up to 4 MiB each).
        state.body_limit = IN_PROCESS_BODY_LIMIT;
        let identity = Identity {
            name: crate::history::cli_author(),
            role: Role::Administrator,
            method: "local",
        };
        Self {
            transport: Transport::InProcess {
                router: sluice_api::in_process_router(state, identity),
                local: Box::new(local),
            },
        }
    }

    /// The backend in this process (without `--endpoint`): for what needs the process
    /// itself, such as running step workers while `sluice run` waits.
    pub fn local(&self) -> Option<&Local> {
        match &self.transport {
            Transport::Http { .. } => None,
            Transport::InProcess { local, .. } => Some(local),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> anyhow::Result<Value> {
        let (status, text, authenticated) = match &self.transport {
            Transport::Http {
                base,
                http,
                authorization,
            } => {
                let url = format!("{base}{path}");
                let mut request = http.request(method.clone(), &url);
                if let Some(auth) = authorization {
                    request = request.header(reqwest::header::AUTHORIZATION, auth);
                }
                if let Some(body) = body {
                    request = request
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(body);
                }
                let response = request
                    .send()
                    .await
                    .with_context(|| format!("cannot reach {url}"))?;
                let status = response.status();
                let text = response.text().await.context("cannot read the response")?;
                (status, text, authorization.is_some())
            }
            Transport::InProcess { router, .. } => {
                use tower::ServiceExt;
                let mut request = axum::http::Request::builder()
                    .method(method.clone())
                    .uri(path);
                if body.is_some() {
                    request = request.header(axum::http::header::CONTENT_TYPE, "application/json");
                }
                let request = request
                    .body(axum::body::Body::from(body.unwrap_or_default()))
                    .with_context(|| format!("{method} {path}: not a valid request"))?;
                let response = router
                    .clone()
                    .oneshot(request)
                    .await
                    .unwrap_or_else(|never| match never {});
                let status = response.status();
                let bytes = axum::body::to_bytes(response.into_body(), MAX_IN_PROCESS_ANSWER)
                    .await
                    .context("cannot read the response")?;
                let text = String::from_utf8(bytes.to_vec())
                    .with_context(|| format!("{method} {path}: the response is not UTF-8"))?;
                (status, text, true)
            }
        };
        if status.is_success() {
            return serde_json::from_str(&text)
                .with_context(|| format!("{method} {path}: the response is not JSON"));
        }
        let message = serde_json::from_str::<ErrorDocument>(&text)
            .map(|doc| doc.error.message)
            .unwrap_or_else(|_| format!("{method} {path}: {text}"));
        if status == StatusCode::UNAUTHORIZED && !authenticated {
            return Err(anyhow!(
                "{message} (HTTP 401): give a token with --token or SLUICE_TOKEN"
            ));
        }
        Err(status_error(status.as_u16(), message))
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(Method::POST, path, Some(body.to_string())).await
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.send(Method::DELETE, path, None).await
    }

    /// Sends a document's text as it is, so the server reports its lines and columns.
    pub async fn send_text(
        &self,
        method: Method,
        path: &str,
        text: String,
    ) -> anyhow::Result<Value> {
        self.send(method, path, Some(text)).await
    }

    /// `get`, read as the document type `T`.
    pub async fn get_as<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        read_as(self.get(path).await?)
    }

    /// `post`, read as the document type `T`.
    pub async fn post_as<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &Value,
    ) -> anyhow::Result<T> {
        read_as(self.post(path, body).await?)
    }
}

pub async fn apps(client: &Client, cmd: DocCommand) -> anyhow::Result<u8> {
    match cmd {
        cmd @ (DocCommand::History { .. }
        | DocCommand::Diff { .. }
        | DocCommand::Rollback { .. }) => {
            return crate::history::run(client, DefinitionKind::Application, cmd).await;
        }
        DocCommand::Push { file } => {
            let text = crate::commands::read(&file)?;
            let doc = client
                .send_text(Method::POST, "/api/v1/applications", text)
                .await
                .map_err(|e| crate::output::in_file(&file, e))?;
            let app: Application = serde_json::from_value(doc)?;
            println!("{}", crate::output::stored_application(&app));
        }
        DocCommand::List { hidden } => {
            let path = if hidden {
                "/api/v1/applications?hidden=true"
            } else {
                "/api/v1/applications"
            };
            let apps: Vec<Application> = serde_json::from_value(client.get(path).await?)?;
            for app in apps {
                println!("{}", crate::output::application_line(&app));
            }
        }
        DocCommand::Get { name } => {
            let app: Application = serde_json::from_value(
                client
                    .get(&format!("/api/v1/applications/{}", segment(&name)))
                    .await?,
            )?;
            println!("{}", serde_json::to_string_pretty(&app)?);
        }
        DocCommand::Delete { name, force } => {
            let query = if force { "?force=true" } else { "" };
            client
                .delete(&format!("/api/v1/applications/{}{query}", segment(&name)))
                .await?;
            println!("Deleted application {name}");
        }
    }
    Ok(0)
}

pub async fn configs(client: &Client, cmd: DocCommand) -> anyhow::Result<u8> {
    match cmd {
        cmd @ (DocCommand::History { .. }
        | DocCommand::Diff { .. }
        | DocCommand::Rollback { .. }) => {
            return crate::history::run(client, DefinitionKind::Configuration, cmd).await;
        }
        DocCommand::Push { file } => {
            let text = crate::commands::read(&file)?;
            let doc = client
                .send_text(Method::POST, "/api/v1/configurations", text)
                .await
                .map_err(|e| crate::output::in_file(&file, e))?;
            let stored: Configuration = serde_json::from_value(doc)?;
            println!("{}", crate::output::stored_configuration(&stored));
        }
        DocCommand::List { hidden } => {
            crate::commands::only_for_apps(hidden)?;
            let configs: Vec<Configuration> =
                serde_json::from_value(client.get("/api/v1/configurations").await?)?;
            for config in configs {
                println!("{}", crate::output::configuration_line(&config));
            }
        }
        DocCommand::Get { name } => {
            let config: Configuration = serde_json::from_value(
                client
                    .get(&format!("/api/v1/configurations/{}", segment(&name)))
                    .await?,
            )?;
            println!("{}", serde_json::to_string_pretty(&config.redacted())?);
        }
        DocCommand::Delete { name, force } => {
            crate::commands::only_for_app_delete(force)?;
            client
                .delete(&format!("/api/v1/configurations/{}", segment(&name)))
                .await?;
            println!("Deleted configuration {name}");
        }
    }
    Ok(0)
}

pub async fn cache(client: &Client, cmd: CacheCommand) -> anyhow::Result<u8> {
    match cmd {
        CacheCommand::Get { key } => {
            let entry: CacheEntry = client
                .get_as(&format!("/api/v1/cache/{}", segment(&key)))
                .await?;
            println!("{}", serde_json::to_string_pretty(&entry.value)?);
        }
        CacheCommand::List { prefix, limit } => {
            let mut left = limit.unwrap_or(usize::MAX);
            let mut after: Option<String> = None;
            while left > 0 {
                let mut path = format!(
                    "/api/v1/cache?prefix={}&limit={}",
                    segment(&prefix),
                    left.min(MAX_CACHE_PAGE)
                );
                if let Some(after) = &after {
                    path.push_str(&format!("&after={}", segment(after)));
                }
                let page: CacheKeyList = client.get_as(&path).await?;
                for key in &page.keys {
                    println!("{key}");
                }
                left = left.saturating_sub(page.keys.len());
                match page.next_after {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
        }
        CacheCommand::Delete {
            key: Some(key),
            prefix: None,
        } => {
            client
                .delete(&format!("/api/v1/cache/{}", segment(&key)))
                .await?;
            println!("Deleted {key}");
        }
        CacheCommand::Delete { prefix, .. } => {
            let prefix = prefix.unwrap_or_default();
            let done: CacheDeleted = read_as(
                client
                    .delete(&format!("/api/v1/cache?prefix={}", segment(&prefix)))
                    .await?,
            )?;
            println!(
                "{}",
                crate::output::deleted_prefix_line(done.deleted, &prefix)
            );
        }
    }
    Ok(0)
}

fn task_path(id: &str) -> String {
    format!("/api/v1/tasks/{}", segment(id))
}

/// A run's task document; its 404 reads as the local commands say it.
async fn get_task(client: &Client, id: &str, query: &str) -> anyhow::Result<Task> {
    client
        .get_as(&format!("{}{query}", task_path(id)))
        .await
        .map_err(|e| not_found_as_run(e, id))
}

fn not_found_as_run(e: anyhow::Error, id: &str) -> anyhow::Error {
    match e.downcast::<InvalidInput>() {
        Ok(invalid) if invalid.0.starts_with("task \"") => {
            InvalidInput(format!("run \"{id}\" not found")).into()
        }
        Ok(invalid) => invalid.into(),
        Err(e) => e,
    }
}

/// Step executions in flight at once in process during `runs replay`.
const REPLAY_WORKERS: usize = 16;

/// How long a follower waits between two reads of the runs it follows. In process, a
/// change of any run ends the wait early.
const POLL: Duration = Duration::from_millis(250);

/// Follows `roots` and the child runs they start until all have ended, printing
/// progress (a child's lines name its application).
pub(crate) async fn follow(
    client: &Client,
    roots: &[String],
    printer: &mut Printer,
) -> anyhow::Result<BTreeMap<String, Task>> {
    let mut updates = client.local().map(|local| local.runtime.subscribe());
    let mut runs: BTreeMap<String, Option<Task>> =
        roots.iter().map(|id| (id.clone(), None)).collect();
    let first = roots.first().cloned().unwrap_or_default();
    loop {
        for id in runs.keys().cloned().collect::<Vec<_>>() {
            if runs[&id].as_ref().is_some_and(|r| r.state.is_terminal()) {
                continue;
            }
            let run = get_task(client, &id, "").await?;
            for child in run.child_runs() {
                runs.entry(child.to_string()).or_insert(None);
            }
            printer.update(&run, if roots.contains(&id) { &id } else { &first });
            runs.insert(id, Some(run));
        }
        if runs
            .values()
            .all(|r| r.as_ref().is_some_and(|r| r.state.is_terminal()))
        {
            return Ok(runs
                .into_iter()
                .filter_map(|(id, r)| r.map(|r| (id, r)))
                .collect());
        }
        match &mut updates {
            // A burst of changes is read once: the first wakes the follower, the rest
            // are passed over.
            Some(updates) => {
                let _ = tokio::time::timeout(POLL, updates.recv()).await;
                while updates.try_recv().is_ok() {}
            }
            None => tokio::time::sleep(POLL).await,
        }
    }
}

/// Runs what `start` starts to its end: with this process's step workers (and the
/// alert runs the ends start, which they also run) when the API is in process, the
/// server's otherwise; prints `start`'s label, live progress and the report.
async fn run_to_end(
    client: &Client,
    workers: usize,
    output: OutputFormat,
    start: impl std::future::Future<Output = anyhow::Result<(Task, String)>>,
) -> anyhow::Result<u8> {
    let workers = match client.local() {
        Some(local) => {
            let takeover = local.take_over().await?;
            Some(local.start_workers(takeover, workers))
        }
        None => None,
    };
    let result = async {
        let (started, label) = start.await?;
        if output == OutputFormat::Text {
            eprintln!("{label}");
        }
        let mut printer = Printer::new(output == OutputFormat::Text);
        let runs = follow(client, std::slice::from_ref(&started.task_id), &mut printer).await?;
        if let Some(local) = client.local() {
            follow_alerts(client, local, &runs, output, &mut printer).await?;
        }
        Ok::<_, anyhow::Error>(started.task_id)
    }
    .await;
    if let Some(workers) = workers {
        workers.shutdown().await;
    }
    report(client, &result?, output).await
}

/// Waits for the alert runs (`on_failure`, `on_warning`) that the ends of `runs`
/// started, run by this process's workers; the exit code stays the runs' own.
async fn follow_alerts(
    client: &Client,
    local: &Local,
    runs: &BTreeMap<String, Task>,
    output: OutputFormat,
    printer: &mut Printer,
) -> anyhow::Result<()> {
    let mut alerts = Vec::new();
    for id in runs.keys() {
        let run = local.runtime.get_run(id).await?;
        if let Some(alert) = local.runtime.start_alert(&run).await? {
            if output == OutputFormat::Text {
                eprintln!("Run {id} started alert run {alert}");
            }
            alerts.push(alert);
        }
    }
    if !alerts.is_empty() {
        follow(client, &alerts, printer).await?;
    }
    Ok(())
}

/// Prints a finished run as `sluice run` does (see [`crate::progress::print_report`]);
/// the exit code says whether it succeeded.
pub(crate) async fn report(client: &Client, id: &str, output: OutputFormat) -> anyhow::Result<u8> {
    let run = get_task(client, id, "?outputs=true").await?;
    let app: Application = client
        .get_as(&format!("{}/application", task_path(id)))
        .await?;
    crate::progress::print_report(&run, &app, output)?;
    Ok(if run.state == RunState::Success {
        0
    } else {
        crate::EXIT_RUN_FAILED
    })
}

/// `sluice run`: stores the documents given, starts the run and follows it to its end.
pub async fn run(client: &Client, args: RunArgs) -> anyhow::Result<u8> {
    let params = crate::commands::parse_params(&args.params)?;
    if let Some(local) = client.local() {
        // In process, everything is checked before anything is stored.
        crate::commands::check_run(local, &args, &params).await?;
    }
    let path = Path::new(&args.app);
    if let Some(config) = &args.config {
        let text = crate::commands::read(config)?;
        client
            .send_text(Method::POST, "/api/v1/configurations", text)
            .await
            .map_err(|e| crate::output::in_file(config, e))?;
    }
    let name = if path.is_file() {
        let text = crate::commands::read(path)?;
        let app: Application = client
            .send_text(Method::POST, "/api/v1/applications", text)
            .await
            .map_err(|e| crate::output::in_file(path, e))
            .and_then(read_as)?;
        app.name
    } else {
        args.app.clone()
    };
    run_to_end(client, args.workers, args.output, async {
        let started: Task = client
            .post_as(
                &format!("/api/v1/applications/{}/run", segment(&name)),
                &json!({"params": Value::Object(params)}),
            )
            .await?;
        let label = format!("Started {} ({})", started.task_id, started.application);
        Ok((started, label))
    })
    .await
}

pub async fn runs(client: &Client, cmd: RunsCommand) -> anyhow::Result<u8> {
    match cmd {
        RunsCommand::List {
            application,
            state,
            limit,
            output,
        } => {
            if let Some(s) = &state {
                if RunState::parse(s).is_none() {
                    return Err(InvalidInput(format!(
                        "--state {s}: expected pending, running, success, failure or revoked"
                    ))
                    .into());
                }
            }
            let mut query = vec![format!("limit={}", limit.clamp(1, 1000))];
            if let Some(a) = &application {
                query.push(format!("application={}", segment(a)));
            }
            if let Some(s) = &state {
                query.push(format!("state={}", segment(s)));
            }
            let page: TaskList = client
                .get_as(&format!("/api/v1/tasks?{}", query.join("&")))
                .await?;
            match output {
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&page.tasks)?),
                OutputFormat::Text => {
                    for task in &page.tasks {
                        println!(
                            "{}  {:<24} {:<8} {}  {}",
                            task.task_id,
                            task.application,
                            task.state.as_str(),
                            rfc3339(&task.created_at),
                            task.finished_at.map(|t| rfc3339(&t)).unwrap_or_default()
                        );
                    }
                }
            }
            Ok(0)
        }
        RunsCommand::Get { id } => {
            let run = get_task(client, &id, "?outputs=true").await?;
            println!("{}", serde_json::to_string_pretty(&run)?);
            Ok(0)
        }
        RunsCommand::Logs { id, step, follow } => {
            get_task(client, &id, "").await?;
            crate::output::print_logs(step.as_deref(), follow, async |after| {
                let path = format!(
                    "{}/logs?after={after}&limit={}",
                    task_path(&id),
                    crate::output::LOG_PAGE
                );
                client
                    .get_as::<LogPage>(&path)
                    .await
                    .map_err(|e| not_found_as_run(e, &id))
            })
            .await?;
            Ok(0)
        }
        RunsCommand::Units {
            id,
            step,
            state,
            limit,
            output,
        } => {
            let mut units = Vec::new();
            let mut offset = Some(0);
            while let Some(at) = offset.filter(|_| limit.is_none_or(|l| units.len() < l)) {
                let mut path = format!(
                    "{}/steps/{}/units?offset={at}&limit=1000",
                    task_path(&id),
                    segment(&step)
                );
                if let Some(s) = &state {
                    path.push_str(&format!("&state={}", segment(s)));
                }
                let page: UnitPage = client
                    .get_as(&path)
                    .await
                    .map_err(|e| not_found_as_run(e, &id))?;
                units.extend(page.units);
                offset = page.next_offset;
            }
            units.truncate(limit.unwrap_or(usize::MAX));
            match output {
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&units)?),
                OutputFormat::Text => {
                    for unit in &units {
                        println!(
                            "{:>6}  {:<8} attempt {:<3} {}",
                            unit.index,
                            unit.state,
                            unit.attempt,
                            unit.error.as_deref().unwrap_or("")
                        );
                    }
                }
            }
            Ok(0)
        }
        RunsCommand::Replay { id, output } => {
            get_task(client, &id, "").await?;
            run_to_end(client, REPLAY_WORKERS, output, async {
                let started: Task = client
                    .post_as(&format!("{}/replay", task_path(&id)), &json!({}))
                    .await
                    .map_err(|e| not_found_as_run(e, &id))?;
                let label = format!("Started {} (replay of {id})", started.task_id);
                Ok((started, label))
            })
            .await
        }
        RunsCommand::Revoke {
            application: Some(app),
            ..
        } => {
            // The path form revokes a run when one has this id: make sure it is an
            // application (a 404 exits 2 naming it).
            client
                .get(&format!("/api/v1/applications/{}", segment(&app)))
                .await?;
            let done: Revoked = client
                .post_as(
                    &format!("/api/v1/tasks/{}/revoke", segment(&app)),
                    &json!({}),
                )
                .await?;
            println!("{}", crate::output::revoked_line(done.revoked, Some(&app)));
            Ok(0)
        }
        RunsCommand::Revoke { id: None, .. } => {
            let done: Revoked = read_as(client.delete("/api/v1/tasks").await?)?;
            println!("{}", crate::output::revoked_line(done.revoked, None));
            Ok(0)
        }
        RunsCommand::Revoke { id: Some(id), .. } => {
            get_task(client, &id, "").await?;
            let run: Task = client
                .post_as(&format!("{}/revoke", task_path(&id)), &json!({}))
                .await
                .map_err(|e| not_found_as_run(e, &id))?;
            println!("Run {} is {}", run.task_id, run.state.as_str());
            Ok(0)
        }
    }
}

/// Whether a command talks to the server in client mode (the others work locally:
/// validate, schema, bench, resume, serve).
pub fn serves(command: &crate::Command) -> bool {
    use crate::Command as C;
    matches!(
        command,
        C::Run(_)
            | C::Apps(_)
            | C::Configs(_)
            | C::Runs(_)
            | C::Cache(_)
            | C::Tokens(_)
            | C::Schedules(_)
            | C::Steps(_)
    )
}

pub async fn dispatch(client: &Client, command: crate::Command) -> anyhow::Result<u8> {
    use crate::Command as C;
    match command {
        C::Run(args) => run(client, args).await,
        C::Apps(cmd) => apps(client, cmd).await,
        C::Configs(cmd) => configs(client, cmd).await,
        C::Runs(cmd) => runs(client, cmd).await,
        C::Cache(cmd) => cache(client, cmd).await,
        C::Tokens(cmd) => crate::tokens::run(client, cmd).await,
        C::Schedules(cmd) => crate::schedules::run(client, cmd).await,
        C::Steps(cmd) => crate::steps::run(client, cmd).await,
        _ => unreachable!("serves() said no"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The in-process transport answers as the router does, as the data directory's
    /// administrator, with the API's errors mapped to exit codes like the server's.
    #[tokio::test]
    async fn in_process_client_calls_the_router_as_the_administrator() {
        let dir = tempfile::tempdir().unwrap();
        let registry = sluice_steps::builtin_registry();
        let client = Client::in_process(Local::open(dir.path(), None, &registry).unwrap());
        assert!(client.local().is_some());

        let whoami = client.get("/api/v1/whoami").await.unwrap();
        assert_eq!(whoami["role"], "administrator");
        assert_eq!(whoami["method"], "local");

        let app = json!({"name": "hello", "author": "t",
                         "steps": [{"id": "A", "type": "echo", "parameters": {"value": 1}}]});
        let stored = client
            .send_text(Method::POST, "/api/v1/applications", app.to_string())
            .await
            .unwrap();
        assert_eq!(stored["name"], "hello");
        let apps: Vec<Application> = client.get_as("/api/v1/applications").await.unwrap();
        assert_eq!(apps.len(), 1);

        // An administrator-only route, and a 404 that exits 2 like the server's.
        client.get("/api/v1/tokens").await.unwrap();
        let missing = client.get("/api/v1/applications/nope").await.unwrap_err();
        assert!(
            missing.downcast_ref::<InvalidInput>().is_some(),
            "{missing}"
        );
        let invalid = client
            .send_text(Method::POST, "/api/v1/applications", "{".into())
            .await
            .unwrap_err();
        assert!(
            invalid.downcast_ref::<InvalidInput>().is_some(),
            "{invalid}"
        );
    }

    /// Only the in-process router has a fixed caller: the network router still asks
    /// for credentials (nothing a request carries selects the in-process identity).
    #[tokio::test]
    async fn the_network_router_still_authenticates() {
        use tower::ServiceExt;
        let dir = tempfile::tempdir().unwrap();
        let registry = sluice_steps::builtin_registry();
        let local = Local::open(dir.path(), None, &registry).unwrap();
        let admin = AdminCredentials {
            user: "admin".into(),
            password_hash: None,
        };
        let router = sluice_api::router(ApiState::new(
            local.runtime.clone(),
            local.api_ports(),
            admin,
        ));
        let request = axum::http::Request::builder()
            .uri("/api/v1/whoami")
            .body(axum::body::Body::empty())
            .unwrap();
        let response = router.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
}
