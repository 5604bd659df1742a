//! Client mode: with `--endpoint URL` (or `SLUICE_ENDPOINT`) the commands talk to a
//! server's REST API instead of the data directory, with the same output and exit codes
//! (the server's 400/404/409/413/422 are invalid input, exit 2; anything else exit 3).
//!
//! Credentials: `--token` / `SLUICE_TOKEN` (a bearer API token), else
//! `SLUICE_ADMIN_PASSWORD` (HTTP Basic as `SLUICE_ADMIN_USER`, default `admin`).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Context};
use base64::Engine;
use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sluice_api::ApiError;
use sluice_core::model::{
    Application, Configuration, ParentRef, Run, RunState, StepRun, StepState, Unit,
};

use crate::progress::{summary, Printer};
use crate::{CacheCommand, DocCommand, InvalidInput, OutputFormat, RunArgs, RunsCommand};
use sluice_core::ports::MAX_CACHE_PAGE;
use sluice_core::versions::DefinitionKind;

/// A server's API.
pub struct Client {
    base: String,
    http: reqwest::Client,
    authorization: Option<String>,
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

/// Maps an API error (from the server or from the shared code run locally) to the exit
/// codes of the local commands: input problems exit 2, everything else 3.
pub fn api_error(e: ApiError) -> anyhow::Error {
    status_error(e.status.as_u16(), e.message)
}

fn status_error(status: u16, message: String) -> anyhow::Error {
    match status {
        400 | 404 | 409 | 413 | 422 => InvalidInput(message).into(),
        _ => anyhow!("{message} (HTTP {status})"),
    }
}

impl Client {
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
            base: endpoint.trim_end_matches('/').to_string(),
            http,
            authorization,
        })
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method.clone(), &url);
        if let Some(auth) = &self.authorization {
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
        if status.is_success() {
            return serde_json::from_str(&text)
                .with_context(|| format!("{method} {path}: the response is not JSON"));
        }
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| format!("{method} {path}: {text}"));
        if status == StatusCode::UNAUTHORIZED && self.authorization.is_none() {
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
}

pub async fn apps(client: &Client, cmd: DocCommand) -> anyhow::Result<u8> {
    match cmd {
        cmd @ (DocCommand::History { .. }
        | DocCommand::Diff { .. }
        | DocCommand::Rollback { .. }) => {
            return crate::history::remote(client, DefinitionKind::Application, cmd).await;
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
            return crate::history::remote(client, DefinitionKind::Configuration, cmd).await;
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
            let doc = client
                .get(&format!("/api/v1/cache/{}", segment(&key)))
                .await?;
            println!("{}", serde_json::to_string_pretty(&doc["value"])?);
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
                let page = client.get(&path).await?;
                let keys = page["keys"].as_array().cloned().unwrap_or_default();
                for key in &keys {
                    println!("{}", key.as_str().unwrap_or_default());
                }
                left = left.saturating_sub(keys.len());
                match page["next_after"].as_str() {
                    Some(next) => after = Some(next.to_string()),
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
            let doc = client
                .delete(&format!("/api/v1/cache?prefix={}", segment(&prefix)))
                .await?;
            let deleted = doc["deleted"].as_u64().unwrap_or_default();
            println!("{}", crate::output::deleted_prefix_line(deleted, &prefix));
        }
    }
    Ok(0)
}

fn time(value: &Value) -> Option<DateTime<Utc>> {
    value
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn step_state(text: &str) -> StepState {
    match text {
        "queued" => StepState::Queued,
        "running" => StepState::Running,
        "waiting" => StepState::Waiting,
        "success" => StepState::Success,
        "warning" => StepState::Warning,
        "failed" => StepState::Failed,
        "skipped" => StepState::Skipped,
        "cancelled" => StepState::Cancelled,
        _ => StepState::Pending,
    }
}

/// A run rebuilt from its task document, for the progress printer and the summary.
pub fn run_from_document(doc: &Value) -> anyhow::Result<Run> {
    let id = doc["task_id"]
        .as_str()
        .ok_or_else(|| anyhow!("the task document has no task_id"))?;
    let steps = doc["steps"]
        .as_object()
        .map(|steps| {
            steps
                .iter()
                .map(|(step_id, s)| {
                    let mut step = StepRun::new(step_id);
                    step.state = step_state(s["state"].as_str().unwrap_or(""));
                    step.attempts = s["attempts"].as_u64().unwrap_or(0) as u32;
                    step.started_at = time(&s["started_at"]);
                    step.finished_at = time(&s["finished_at"]);
                    step.error = s["error"].as_str().map(str::to_string);
                    step.child_run = s["child_run"].as_str().map(str::to_string);
                    step.fan_out = s["items"].as_u64().map(|n| n as u32);
                    // The units of a fanned-out trigger, as far as their child runs go.
                    step.units = s["child_runs"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .map(|child| Unit {
                            child_run: Some(child.to_string()),
                            ..Unit::pending()
                        })
                        .collect();
                    step.type_version = s["version"].as_str().map(str::to_string);
                    step.warnings = s["warnings"]
                        .as_array()
                        .map(|w| {
                            w.iter()
                                .filter_map(Value::as_str)
                                .map(str::to_string)
                                .collect()
                        })
                        .unwrap_or_default();
                    step
                })
                .collect()
        })
        .unwrap_or_default();
    let created_at = time(&doc["created_at"]).unwrap_or_else(Utc::now);
    Ok(Run {
        id: id.to_string(),
        application: doc["application"].as_str().unwrap_or("").to_string(),
        configuration: doc["configuration"].as_str().map(str::to_string),
        queue: doc["queue"].as_str().map(str::to_string),
        loglevel: doc["params"]["loglevel"].as_u64().unwrap_or(20) as u8,
        params: doc["params"].as_object().cloned().unwrap_or_default(),
        state: RunState::parse(doc["state"].as_str().unwrap_or("")).unwrap_or(RunState::Pending),
        created_at,
        started_at: time(&doc["started_at"]),
        finished_at: time(&doc["finished_at"]),
        parent: doc["parent"]["task_id"].as_str().map(|p| ParentRef {
            run_id: p.to_string(),
            step_id: doc["parent"]["step"].as_str().unwrap_or("").to_string(),
            blocking: false,
        }),
        replay_of: doc["replay_of"].as_str().map(str::to_string),
        alert_of: serde_json::from_value(doc["alert_of"].clone()).ok(),
        expires_at: created_at,
        steps,
        version: 0,
        application_version: doc["application_version"].as_u64(),
    })
}

fn task_path(id: &str) -> String {
    format!("/api/v1/tasks/{}", segment(id))
}

/// A run request's 404 reads as the local commands say it.
async fn get_task(client: &Client, id: &str, query: &str) -> anyhow::Result<Value> {
    client
        .get(&format!("{}{query}", task_path(id)))
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

/// Follows `root` and the child runs it starts until all have ended, printing progress.
async fn follow(
    client: &Client,
    root: &str,
    printer: &mut Printer,
) -> anyhow::Result<BTreeMap<String, Run>> {
    let mut runs: BTreeMap<String, Option<Run>> = BTreeMap::from([(root.to_string(), None)]);
    loop {
        for id in runs.keys().cloned().collect::<Vec<_>>() {
            if runs[&id].as_ref().is_some_and(|r| r.state.is_terminal()) {
                continue;
            }
            let run = run_from_document(&get_task(client, &id, "").await?)?;
            for step in &run.steps {
                if let Some(child) = &step.child_run {
                    runs.entry(child.clone()).or_insert(None);
                }
            }
            printer.update(&run, root);
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
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The summary or the task document with outputs, as `sluice run` prints them locally.
async fn report(client: &Client, run: &Run, output: OutputFormat) -> anyhow::Result<u8> {
    let doc = get_task(client, &run.id, "?outputs=true").await?;
    match output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&doc)?),
        OutputFormat::Text => {
            let app: Application = serde_json::from_value(
                client
                    .get(&format!("{}/application", task_path(&run.id)))
                    .await?,
            )?;
            let run = run_from_document(&doc)?;
            let mut finals = Vec::new();
            for step in &run.steps {
                let is_final = !app.steps.iter().any(|s| s.depends_on.contains(&step.id));
                if is_final && step.state.succeeded() {
                    finals.push((step.id.clone(), doc["steps"][&step.id]["output"].clone()));
                }
            }
            print!("{}", summary(&run, &finals));
        }
    }
    Ok(if run.state == RunState::Success {
        0
    } else {
        crate::EXIT_RUN_FAILED
    })
}

async fn follow_and_report(
    client: &Client,
    started: &Value,
    output: OutputFormat,
) -> anyhow::Result<u8> {
    let id = started["task_id"]
        .as_str()
        .ok_or_else(|| anyhow!("the server returned no task_id"))?;
    let mut printer = Printer::new(output == OutputFormat::Text);
    let finished = follow(client, id, &mut printer).await?;
    let run = finished
        .get(id)
        .cloned()
        .ok_or_else(|| anyhow!("run disappeared"))?;
    report(client, &run, output).await
}

pub async fn run(client: &Client, args: RunArgs) -> anyhow::Result<u8> {
    let params = crate::commands::parse_params(&args.params)?;
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
        let doc = client
            .send_text(Method::POST, "/api/v1/applications", text)
            .await
            .map_err(|e| crate::output::in_file(path, e))?;
        doc["name"].as_str().unwrap_or_default().to_string()
    } else {
        args.app.clone()
    };
    let started = client
        .post(
            &format!("/api/v1/applications/{}/run", segment(&name)),
            &json!({"params": Value::Object(params)}),
        )
        .await?;
    if args.output == OutputFormat::Text {
        eprintln!(
            "Started {} ({})",
            started["task_id"].as_str().unwrap_or(""),
            started["application"].as_str().unwrap_or("")
        );
    }
    follow_and_report(client, &started, args.output).await
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
            let doc = client
                .get(&format!("/api/v1/tasks?{}", query.join("&")))
                .await?;
            let tasks = doc["tasks"].as_array().cloned().unwrap_or_default();
            match output {
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&tasks)?),
                OutputFormat::Text => {
                    for task in &tasks {
                        println!(
                            "{}  {:<24} {:<8} {}  {}",
                            task["task_id"].as_str().unwrap_or(""),
                            task["application"].as_str().unwrap_or(""),
                            task["state"].as_str().unwrap_or(""),
                            task["created_at"].as_str().unwrap_or(""),
                            task["finished_at"].as_str().unwrap_or("")
                        );
                    }
                }
            }
            Ok(0)
        }
        RunsCommand::Get { id } => {
            let doc = get_task(client, &id, "?outputs=true").await?;
            println!("{}", serde_json::to_string_pretty(&doc)?);
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
                let page = client
                    .get(&path)
                    .await
                    .map_err(|e| not_found_as_run(e, &id))?;
                let mut entries = Vec::new();
                for doc in page["logs"].as_array().cloned().unwrap_or_default() {
                    let seq = doc["seq"].as_u64().unwrap_or_default();
                    entries.push((seq, serde_json::from_value(doc)?));
                }
                Ok(crate::output::LogPage {
                    entries,
                    run_terminal: RunState::parse(page["state"].as_str().unwrap_or(""))
                        .is_some_and(RunState::is_terminal),
                })
            })
            .await?;
            Ok(0)
        }
        RunsCommand::Replay { id, output } => {
            get_task(client, &id, "").await?;
            let started = client
                .post(&format!("{}/replay", task_path(&id)), &json!({}))
                .await
                .map_err(|e| not_found_as_run(e, &id))?;
            if output == OutputFormat::Text {
                eprintln!(
                    "Started {} (replay of {id})",
                    started["task_id"].as_str().unwrap_or("")
                );
            }
            follow_and_report(client, &started, output).await
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
            let doc = client
                .post(
                    &format!("/api/v1/tasks/{}/revoke", segment(&app)),
                    &json!({}),
                )
                .await?;
            let revoked = doc["revoked"].as_u64().unwrap_or_default();
            println!("{}", crate::output::revoked_line(revoked, Some(&app)));
            Ok(0)
        }
        RunsCommand::Revoke { id: None, .. } => {
            let doc = client.delete("/api/v1/tasks").await?;
            let revoked = doc["revoked"].as_u64().unwrap_or_default();
            println!("{}", crate::output::revoked_line(revoked, None));
            Ok(0)
        }
        RunsCommand::Revoke { id: Some(id), .. } => {
            get_task(client, &id, "").await?;
            let doc = client
                .post(&format!("{}/revoke", task_path(&id)), &json!({}))
                .await
                .map_err(|e| not_found_as_run(e, &id))?;
            println!(
                "Run {} is {}",
                doc["task_id"].as_str().unwrap_or(""),
                doc["state"].as_str().unwrap_or("")
            );
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

pub async fn dispatch(
    endpoint: &str,
    token: Option<String>,
    command: crate::Command,
) -> anyhow::Result<u8> {
    use crate::Command as C;
    let client = Client::new(endpoint, token)?;
    match command {
        C::Run(args) => run(&client, args).await,
        C::Apps(cmd) => apps(&client, cmd).await,
        C::Configs(cmd) => configs(&client, cmd).await,
        C::Runs(cmd) => runs(&client, cmd).await,
        C::Cache(cmd) => cache(&client, cmd).await,
        C::Tokens(cmd) => crate::tokens::remote(&client, cmd).await,
        C::Schedules(cmd) => crate::schedules::remote(&client, cmd).await,
        C::Steps(cmd) => crate::steps::remote(&client, cmd).await,
        _ => unreachable!("serves() said no"),
    }
}
