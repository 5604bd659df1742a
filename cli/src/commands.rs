//! The commands on the embedded data directory.

use std::path::Path;

use anyhow::{anyhow, Context};
use serde_json::{Map, Value};
use sluice_core::json::parse_document;
use sluice_core::model::{Application, Configuration, RunState, Schedule};
use sluice_core::plan::Definition;
use sluice_core::ports::{RunQuery, MAX_CACHE_PAGE};
use sluice_core::step::StepRegistry;
use sluice_core::task::{rfc3339, task_document};
use sluice_core::validate::{parse_application, parse_configuration};
use sluice_core::versions::DefinitionKind;
use sluice_core::Invalid;
use sluice_runtime::{Runtime, StartError, StartRequest};

use crate::local::Local;
use crate::progress::{summary, wait_for, Printer};
use crate::{
    CacheCommand, Cli, Command, DocCommand, InvalidInput, OutputFormat, RunArgs, RunsCommand,
    SchemaKind, SchemaTopic, EXIT_INVALID, EXIT_RUN_FAILED,
};

/// Runs one command with `registry`'s step types.
pub async fn dispatch(cli: Cli, registry: &StepRegistry) -> anyhow::Result<u8> {
    match cli.command {
        Command::Validate { files, kind } => validate(&files, kind, registry),
        Command::Schema { kind, name } => {
            println!(
                "{}",
                serde_json::to_string_pretty(&schema_topic(kind, name, registry)?)?
            );
            Ok(0)
        }
        Command::Infra(args) => crate::infra::run(args, registry),
        Command::New(args) => crate::scaffold::run(args),
        Command::Bench(args) => crate::bench::run(args, registry).await,
        Command::Plan(_) | Command::Apply(_) | Command::Export(_) => {
            crate::definitions_as_code::run(cli, registry).await
        }
        Command::Aws(cmd) => {
            crate::aws::dispatch(cmd, cli.stack_outputs.as_deref(), registry).await
        }
        command if cli.endpoint.is_some() && crate::client::serves(&command) => {
            crate::client::dispatch(
                cli.endpoint.as_deref().unwrap_or_default(),
                cli.token,
                command,
            )
            .await
        }
        Command::Serve(args) => {
            crate::serve::run(&cli.data_dir, cli.result_expires, registry, args).await
        }
        Command::Tokens(cmd) => crate::tokens::local(&cli.data_dir, cmd).await,
        Command::Backup { file } => crate::backup::backup(&cli.data_dir, &file).await,
        Command::Restore { file } => crate::backup::restore(&cli.data_dir, &file).await,
        command => {
            let local = match cli.backend {
                crate::BackendKind::Embedded => {
                    Local::open(&cli.data_dir, cli.result_expires, registry)?
                }
                crate::BackendKind::Aws => {
                    crate::aws::open_local(cli.stack_outputs.as_deref(), registry).await?
                }
            };
            match command {
                Command::Run(args) => run(&local, args).await,
                Command::Resume {
                    run_id,
                    output,
                    workers,
                } => resume(&local, run_id, output, workers).await,
                Command::Apps(cmd) => apps(&local, cmd).await,
                Command::Configs(cmd) => configs(&local.runtime, cmd).await,
                Command::Runs(cmd) => runs(&local, cmd).await,
                Command::Cache(cmd) => cache(&local.runtime, cmd).await,
                Command::Validate { .. }
                | Command::Schema { .. }
                | Command::Infra(_)
                | Command::New(_)
                | Command::Bench(_) => unreachable!(),
                Command::Aws(_) | Command::Plan(_) | Command::Apply(_) | Command::Export(_) => {
                    unreachable!()
                }
                Command::Serve(_)
                | Command::Tokens(_)
                | Command::Backup { .. }
                | Command::Restore { .. } => unreachable!(),
                Command::Schedules(cmd) => crate::schedules::local(&local, cmd).await,
                Command::Steps(cmd) => crate::steps::local(&local, cmd).await,
            }
        }
    }
}

/// What `sluice schema KIND [NAME]` prints.
fn schema_topic(
    topic: SchemaTopic,
    name: Option<String>,
    registry: &StepRegistry,
) -> anyhow::Result<Value> {
    let kind = match topic {
        SchemaTopic::Step => {
            let types = sluice_core::step::step_type_listing(registry);
            return match name {
                None => Ok(Value::Array(types)),
                Some(name) => types
                    .into_iter()
                    .find(|t| t["name"] == name.as_str())
                    .ok_or_else(|| InvalidInput(format!("step type \"{name}\" not found")).into()),
            };
        }
        SchemaTopic::Application => SchemaKind::Application,
        SchemaTopic::Configuration => SchemaKind::Configuration,
        SchemaTopic::Schedule => SchemaKind::Schedule,
    };
    if let Some(name) = name {
        return Err(InvalidInput(format!(
            "{name}: a name is taken only by `sluice schema step`"
        ))
        .into());
    }
    Ok(schema(kind))
}

/// The JSON Schema of a document kind.
pub fn schema(kind: SchemaKind) -> Value {
    match kind {
        SchemaKind::Application => schemars::schema_for!(Application).to_value(),
        SchemaKind::Configuration => schemars::schema_for!(Configuration).to_value(),
        SchemaKind::Schedule => schemars::schema_for!(Schedule).to_value(),
    }
}

pub(crate) fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| InvalidInput(format!("{}: cannot read: {e}", path.display())).into())
}

pub(crate) fn invalid(path: &Path, e: &Invalid) -> anyhow::Error {
    let text = e.to_string();
    crate::output::prefixed(path, text.lines())
}

fn load_application(path: &Path, runtime: &Runtime) -> anyhow::Result<Application> {
    parse_application(&read(path)?, runtime.catalog()).map_err(|e| invalid(path, &e))
}

fn load_configuration(path: &Path) -> anyhow::Result<Configuration> {
    parse_configuration(&read(path)?).map_err(|e| invalid(path, &e))
}

/// Maps a start failure to exit code 2 (input) or 3 (anything else).
pub(crate) fn start_error(e: StartError) -> anyhow::Error {
    match e {
        StartError::Invalid(invalid) => InvalidInput(invalid.to_string()).into(),
        StartError::NotFound(message) => InvalidInput(message).into(),
        StartError::Runtime(e) => e.into(),
    }
}

/// `-p NAME=VALUE`: VALUE as JSON when it parses, else as a string.
pub(crate) fn parse_params(raw: &[String]) -> anyhow::Result<Map<String, Value>> {
    let mut params = Map::new();
    for item in raw {
        let (name, value) = item
            .split_once('=')
            .ok_or_else(|| InvalidInput(format!("-p {item}: expected NAME=VALUE")))?;
        if name.is_empty() {
            return Err(InvalidInput(format!("-p {item}: the name is empty")).into());
        }
        let value =
            serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_string()));
        params.insert(name.to_string(), value);
    }
    Ok(params)
}

async fn run(local: &Local, args: RunArgs) -> anyhow::Result<u8> {
    let runtime = &local.runtime;
    let params = parse_params(&args.params)?;
    let path = Path::new(&args.app);
    // Everything is checked before anything is stored: nothing is half written.
    let app = if path.is_file() {
        Some(load_application(path, runtime)?)
    } else {
        None
    };
    let config = args.config.as_deref().map(load_configuration).transpose()?;
    // The params against the application (from the file, else stored) and the
    // configuration they name (from -c, else stored), before either is stored.
    let stored_app;
    let checked_app = match &app {
        Some(app) => app,
        None => {
            stored_app = runtime
                .backend()
                .definitions
                .get_application(&args.app)
                .await?
                .ok_or_else(|| InvalidInput(format!("application \"{}\" not found", args.app)))?;
            &stored_app
        }
    };
    runtime
        .check_start(checked_app, &params, config.as_ref())
        .await
        .map_err(start_error)?;
    if let Some(config) = &config {
        runtime
            .push_configuration(config, &crate::history::cli_author())
            .await
            .map_err(start_error)?;
    }
    let name = match &app {
        Some(app) => {
            runtime
                .push_application(app, &crate::history::cli_author())
                .await
                .map_err(start_error)?;
            app.name.clone()
        }
        None => args.app.clone(),
    };
    let request = StartRequest {
        application: name,
        params,
        ..StartRequest::default()
    };
    run_to_end(local, args.workers, args.output, |runtime| async move {
        let run = runtime.start(request).await?;
        let label = format!("Started {} ({})", run.id, run.application);
        Ok((run, label))
    })
    .await
}

/// Starts workers, starts a run with `start`, follows it (and its children) to the end
/// with live progress, stops the workers and reports.
async fn run_to_end<F, Fut>(
    local: &Local,
    workers: usize,
    output: OutputFormat,
    start: F,
) -> anyhow::Result<u8>
where
    F: FnOnce(std::sync::Arc<Runtime>) -> Fut,
    Fut: std::future::Future<Output = Result<(sluice_core::model::Run, String), StartError>>,
{
    let runtime = &local.runtime;
    let takeover = local.take_over().await?;
    let workers = local.start_workers(takeover, workers);
    let updates = runtime.subscribe();
    let (run, label) = match start(runtime.clone()).await {
        Ok(started) => started,
        Err(e) => {
            workers.shutdown().await;
            return Err(start_error(e));
        }
    };
    if output == OutputFormat::Text {
        eprintln!("{label}");
    }
    let mut printer = Printer::new(output == OutputFormat::Text);
    let finished = wait_for(
        runtime,
        std::slice::from_ref(&run.id),
        updates,
        &mut printer,
    )
    .await;
    // The alerts its runs' ends start (`on_failure`, `on_warning`) run before the
    // workers stop; the exit code stays the run's own.
    let finished = match finished {
        Ok(runs) => follow_alerts(runtime, runs, output, &mut printer).await,
        Err(e) => Err(e),
    };
    workers.shutdown().await;
    let run = finished?
        .get(&run.id)
        .cloned()
        .ok_or_else(|| anyhow!("run disappeared"))?;
    report(runtime, &[run], output).await
}

/// Waits for the alert runs that the ends of `runs` started, then hands `runs` back.
async fn follow_alerts(
    runtime: &Runtime,
    runs: std::collections::BTreeMap<String, sluice_core::model::Run>,
    output: OutputFormat,
    printer: &mut Printer,
) -> anyhow::Result<std::collections::BTreeMap<String, sluice_core::model::Run>> {
    let updates = runtime.subscribe();
    let mut alerts = Vec::new();
    for run in runs.values() {
        if let Some(id) = runtime.start_alert(run).await? {
            if output == OutputFormat::Text {
                eprintln!("Run {} started alert run {id}", run.id);
            }
            alerts.push(id);
        }
    }
    if !alerts.is_empty() {
        wait_for(runtime, &alerts, updates, printer).await?;
    }
    Ok(runs)
}

/// Prints the summary (text) or the task documents with outputs (json); the exit code
/// says whether every run succeeded.
async fn report(
    runtime: &Runtime,
    runs: &[sluice_core::model::Run],
    output: OutputFormat,
) -> anyhow::Result<u8> {
    for run in runs {
        match output {
            OutputFormat::Text => {
                let plan = runtime.plan_of(run).await?;
                let mut finals = Vec::new();
                for step in &run.steps {
                    let is_final = !plan
                        .app
                        .steps
                        .iter()
                        .any(|s| s.depends_on.contains(&step.id));
                    if is_final && step.state.succeeded() {
                        finals.push((step.id.clone(), runtime.read_output(run, &step.id).await?));
                    }
                }
                print!("{}", summary(run, &finals))
            }
            OutputFormat::Json => {
                let outputs = runtime.outputs(run).await?;
                println!(
                    "{}",
                    serde_json::to_string_pretty(&task_document(run, Some(&outputs)))?
                );
            }
        }
    }
    Ok(if runs.iter().all(|r| r.state == RunState::Success) {
        0
    } else {
        EXIT_RUN_FAILED
    })
}

async fn resume(
    local: &Local,
    run_id: Option<String>,
    output: OutputFormat,
    workers: usize,
) -> anyhow::Result<u8> {
    let runtime = &local.runtime;
    // Only the embedded data directory's lock proves no other worker is alive; on AWS a
    // Lambda may still hold an attempt, which its lease protects. Resume before the
    // workers poll (see `Local::start_workers`).
    let takeover = local.take_over().await?;
    let updates = runtime.subscribe();
    let ids = match &run_id {
        Some(id) => {
            runtime.resume(id, takeover.at).await?;
            vec![id.clone()]
        }
        None => runtime.resume_all(takeover.at).await?,
    };
    let workers = local.start_workers(takeover, workers);
    if ids.is_empty() {
        workers.shutdown().await;
        if output == OutputFormat::Text {
            eprintln!("No unfinished runs.");
        } else {
            println!("[]");
        }
        return Ok(0);
    }
    if output == OutputFormat::Text {
        eprintln!("Resuming {} run(s): {}", ids.len(), ids.join(", "));
    }
    let mut printer = Printer::new(output == OutputFormat::Text);
    let finished = wait_for(runtime, &ids, updates, &mut printer).await;
    workers.shutdown().await;
    let finished = finished?;
    let runs: Vec<_> = ids
        .iter()
        .filter_map(|id| finished.get(id).cloned())
        .collect();
    report(runtime, &runs, output).await
}

/// Validates each file as `kind`, or as the kind its top-level fields tell.
fn validate(
    files: &[std::path::PathBuf],
    kind: Option<SchemaKind>,
    registry: &StepRegistry,
) -> anyhow::Result<u8> {
    let catalog = sluice_core::validate::StepCatalog::new(registry);
    let mut code = 0;
    for file in files {
        let text = match read(file) {
            Ok(text) => text,
            Err(e) => {
                eprintln!("{e}");
                code = EXIT_INVALID;
                continue;
            }
        };
        let result = match kind {
            Some(kind) => validate_as(kind, &text, &catalog),
            None => validate_any(&text, &catalog),
        };
        match result {
            Ok(definition) => println!("{}: valid {}", file.display(), definition.kind().as_str()),
            Err(e) => {
                eprintln!("{}", invalid(file, &e));
                code = EXIT_INVALID;
            }
        }
    }
    Ok(code)
}

fn validate_as(
    kind: SchemaKind,
    text: &str,
    catalog: &sluice_core::validate::StepCatalog,
) -> Result<Definition, Invalid> {
    match kind {
        SchemaKind::Configuration => parse_configuration(text).map(Definition::Configuration),
        SchemaKind::Schedule => parse_document::<Schedule>(text).and_then(|s| {
            sluice_core::schedule::validate_schedule(&s)?;
            Ok(Definition::Schedule(s))
        }),
        SchemaKind::Application => parse_application(text, catalog).map(Definition::Application),
    }
}

/// Without `--kind`: the kind whose defining field (`steps`, `data`, `schedule`) the
/// document has. With none of them, the kinds whose fields it uses most are tried, and
/// if it is none of them, each one's problems are reported: never one kind's errors
/// for a document of another kind.
pub(crate) fn validate_any(
    text: &str,
    catalog: &sluice_core::validate::StepCatalog,
) -> Result<Definition, Invalid> {
    const KINDS: [(SchemaKind, &str, &str, &[&str]); 3] = [
        (
            SchemaKind::Application,
            "steps",
            "an application",
            &[
                "name",
                "friendly_name",
                "description",
                "author",
                "version",
                "configuration",
                "meta",
                "app_variables",
            ],
        ),
        (
            SchemaKind::Configuration,
            "data",
            "a configuration",
            &["name", "friendly_name", "description", "author", "version"],
        ),
        (
            SchemaKind::Schedule,
            "schedule",
            "a schedule",
            &["application_id", "entry_id", "params", "enabled"],
        ),
    ];
    // Syntax errors come with their line and column from the parser itself.
    let value: Value = parse_document(text)?;
    let Some(fields) = value.as_object() else {
        return Err(Invalid::one(sluice_core::Issue::new(
            "",
            "a document is a JSON object",
        )));
    };
    let defined: Vec<_> = KINDS
        .iter()
        .filter(|(_, defining, _, _)| fields.contains_key(*defining))
        .collect();
    match defined.as_slice() {
        [(kind, ..)] => return validate_as(*kind, text, catalog),
        [] => {}
        several => {
            let named: Vec<String> = several
                .iter()
                .map(|(_, f, _, _)| format!("\"{f}\""))
                .collect();
            return Err(Invalid::one(sluice_core::Issue::new(
                "",
                format!(
                    "cannot tell the document's kind: it has {}; pass --kind",
                    named.join(" and ")
                ),
            )));
        }
    }
    let score = |known: &[&str]| {
        fields
            .keys()
            .filter(|k| known.contains(&k.as_str()))
            .count()
    };
    let best = KINDS
        .iter()
        .map(|(_, _, _, known)| score(known))
        .max()
        .unwrap_or(0);
    let candidates: Vec<_> = KINDS
        .iter()
        .filter(|(_, _, _, known)| score(known) == best)
        .collect();
    let mut issues = vec![sluice_core::Issue::new(
        "",
        "cannot tell the document's kind: it has no \"steps\" (application), \"data\" (configuration) or \"schedule\" (schedule) field; add it or pass --kind",
    )];
    for (kind, _, article, _) in candidates {
        match validate_as(*kind, text, catalog) {
            Ok(valid) => return Ok(valid),
            Err(problems) => issues.extend(problems.issues.into_iter().map(|mut issue| {
                issue.message = format!("as {article}: {}", issue.message);
                issue
            })),
        }
    }
    Err(Invalid { issues })
}

/// `--hidden` is about applications (`meta.hidden`); configurations have no such flag.
pub(crate) fn only_for_apps(hidden: bool) -> anyhow::Result<()> {
    if hidden {
        return Err(InvalidInput("--hidden applies to `apps list` only".to_string()).into());
    }
    Ok(())
}

/// `--force` is about what names an application; nothing refuses a configuration delete.
pub(crate) fn only_for_app_delete(force: bool) -> anyhow::Result<()> {
    if force {
        return Err(InvalidInput("--force applies to `apps delete` only".to_string()).into());
    }
    Ok(())
}

async fn apps(local: &Local, cmd: DocCommand) -> anyhow::Result<u8> {
    let runtime = &local.runtime;
    let definitions = &runtime.backend().definitions;
    match cmd {
        cmd @ (DocCommand::History { .. }
        | DocCommand::Diff { .. }
        | DocCommand::Rollback { .. }) => {
            return crate::history::local(runtime, DefinitionKind::Application, cmd).await;
        }
        DocCommand::Push { file } => {
            let app = load_application(&file, runtime)?;
            runtime
                .push_application(&app, &crate::history::cli_author())
                .await
                .map_err(start_error)?;
            println!("{}", crate::output::stored_application(&app));
        }
        DocCommand::List { hidden } => {
            let apps = definitions.list_applications().await?;
            for app in apps.iter().filter(|app| hidden || !app.is_hidden()) {
                println!("{}", crate::output::application_line(app));
            }
        }
        DocCommand::Get { name } => {
            let app = definitions
                .get_application(&name)
                .await?
                .ok_or_else(|| InvalidInput(format!("application \"{name}\" not found")))?;
            println!("{}", serde_json::to_string_pretty(&app)?);
        }
        DocCommand::Delete { name, force } => {
            let schedules = match &local.store {
                crate::local::Store::Embedded(store) => store.schedules(),
                crate::local::Store::Aws(environment) => environment.schedules(),
            };
            let deleted = sluice_api::schedules::delete_application(
                runtime,
                schedules.as_ref(),
                &name,
                force,
            )
            .await
            .map_err(crate::client::api_error)?;
            if !deleted {
                return Err(InvalidInput(format!("application \"{name}\" not found")).into());
            }
            println!("Deleted application {name}");
        }
    }
    Ok(0)
}

async fn configs(runtime: &Runtime, cmd: DocCommand) -> anyhow::Result<u8> {
    let definitions = &runtime.backend().definitions;
    match cmd {
        cmd @ (DocCommand::History { .. }
        | DocCommand::Diff { .. }
        | DocCommand::Rollback { .. }) => {
            return crate::history::local(runtime, DefinitionKind::Configuration, cmd).await;
        }
        DocCommand::Push { file } => {
            let config = load_configuration(&file)?;
            let (stored, _) = runtime
                .push_configuration(&config, &crate::history::cli_author())
                .await
                .map_err(start_error)?;
            println!("{}", crate::output::stored_configuration(&stored));
        }
        DocCommand::List { hidden } => {
            only_for_apps(hidden)?;
            for config in definitions.list_configurations().await? {
                println!("{}", crate::output::configuration_line(&config));
            }
        }
        DocCommand::Get { name } => {
            let config = definitions
                .get_configuration(&name)
                .await?
                .ok_or_else(|| InvalidInput(format!("configuration \"{name}\" not found")))?;
            // Stored redacted already; redact again so no path can ever show a secret.
            println!("{}", serde_json::to_string_pretty(&config.redacted())?);
        }
        DocCommand::Delete { name, force } => {
            only_for_app_delete(force)?;
            if !runtime.delete_configuration(&name).await? {
                return Err(InvalidInput(format!("configuration \"{name}\" not found")).into());
            }
            println!("Deleted configuration {name}");
        }
    }
    Ok(0)
}

async fn runs(local: &Local, cmd: RunsCommand) -> anyhow::Result<u8> {
    let runtime = &local.runtime;
    let store = &runtime.backend().runs;
    match cmd {
        RunsCommand::List {
            application,
            state,
            limit,
            output,
        } => {
            let state = state
                .map(|s| {
                    RunState::parse(&s).ok_or_else(|| {
                        InvalidInput(format!(
                            "--state {s}: expected pending, running, success, failure or revoked"
                        ))
                    })
                })
                .transpose()?;
            let list = store
                .list_runs(&RunQuery {
                    application,
                    state,
                    limit,
                    ..RunQuery::default()
                })
                .await?;
            match output {
                OutputFormat::Json => {
                    let docs: Vec<Value> = list.iter().map(|r| task_document(r, None)).collect();
                    println!("{}", serde_json::to_string_pretty(&docs)?);
                }
                OutputFormat::Text => {
                    for run in list {
                        println!(
                            "{}  {:<24} {:<8} {}  {}",
                            run.id,
                            run.application,
                            run.state.as_str(),
                            rfc3339(&run.created_at),
                            run.finished_at.map(|t| rfc3339(&t)).unwrap_or_default()
                        );
                    }
                }
            }
            Ok(0)
        }
        RunsCommand::Get { id } => {
            let run = find_run(runtime, &id).await?;
            let outputs = runtime.outputs(&run).await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&task_document(&run, Some(&outputs)))?
            );
            Ok(0)
        }
        RunsCommand::Logs { id, step, follow } => {
            find_run(runtime, &id).await?;
            crate::output::print_logs(step.as_deref(), follow, async |after| {
                // The run first: its record dates the FLOW entries of what it holds.
                let run = find_run(runtime, &id).await?;
                Ok(crate::output::LogPage {
                    entries: runtime.logs(&run, after, crate::output::LOG_PAGE).await?,
                    run_terminal: run.state.is_terminal(),
                })
            })
            .await?;
            Ok(0)
        }
        RunsCommand::Replay { id, output } => {
            find_run(runtime, &id).await?;
            run_to_end(local, 16, output, |runtime| async move {
                let run = runtime.replay(&id).await?;
                let label = format!("Started {} (replay of {id})", run.id);
                Ok((run, label))
            })
            .await
        }
        RunsCommand::Revoke { id: Some(id), .. } => {
            find_run(runtime, &id).await?;
            let run = runtime.revoke(&id).await?;
            println!("Run {} is {}", run.id, run.state.as_str());
            Ok(0)
        }
        RunsCommand::Revoke { application, .. } => {
            if let Some(app) = &application {
                if runtime
                    .backend()
                    .definitions
                    .get_application(app)
                    .await?
                    .is_none()
                {
                    return Err(InvalidInput(format!("application \"{app}\" not found")).into());
                }
            }
            let revoked = runtime.revoke_all(application.as_deref()).await?;
            println!(
                "{}",
                crate::output::revoked_line(revoked, application.as_deref())
            );
            Ok(0)
        }
    }
}

async fn find_run(runtime: &Runtime, id: &str) -> anyhow::Result<sluice_core::model::Run> {
    match runtime.get_run(id).await {
        Ok(run) => Ok(run),
        Err(sluice_runtime::RuntimeError::NotFound(_)) => {
            Err(InvalidInput(format!("run \"{id}\" not found")).into())
        }
        Err(e) => Err(e).context("cannot read the run"),
    }
}

async fn cache(runtime: &Runtime, cmd: CacheCommand) -> anyhow::Result<u8> {
    let cache = &runtime.backend().cache;
    match cmd {
        CacheCommand::Get { key } => match cache.get(&key).await? {
            Some(value) => println!("{}", serde_json::to_string_pretty(&value)?),
            None => return Err(InvalidInput(format!("cache key \"{key}\" not found")).into()),
        },
        CacheCommand::List { prefix, limit } => {
            let mut left = limit.unwrap_or(usize::MAX);
            let mut after = None;
            while left > 0 {
                let page = cache
                    .list(&prefix, left.min(MAX_CACHE_PAGE), after.as_deref())
                    .await?;
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
            if !cache.delete(&key).await? {
                return Err(InvalidInput(format!("cache key \"{key}\" not found")).into());
            }
            println!("Deleted {key}");
        }
        CacheCommand::Delete { prefix, .. } => {
            let prefix = prefix.unwrap_or_default();
            let deleted = cache.delete_prefix(&prefix).await?;
            println!("{}", crate::output::deleted_prefix_line(deleted, &prefix));
        }
    }
    Ok(0)
}
