//! The command dispatch, and the commands that need this process itself: `run`,
//! `runs replay` and `resume` (this process's step workers run them), `validate`, `schema`.

use std::path::Path;

use serde_json::{Map, Value};
use sluice_core::json::parse_document;
use sluice_core::model::{Application, Configuration, Schedule};
use sluice_core::plan::Definition;
use sluice_core::step::StepRegistry;
use sluice_core::validate::{parse_application, parse_configuration};
use sluice_core::Invalid;
use sluice_runtime::{Runtime, StartError};

use crate::client::Client;
use crate::local::Local;
use crate::progress::Printer;
use crate::{
    Cli, Command, InvalidInput, OutputFormat, RunArgs, SchemaKind, SchemaTopic, EXIT_INVALID,
};

/// Runs one command with `registry`'s step types.
pub async fn dispatch(cli: Cli, registry: &StepRegistry) -> anyhow::Result<u8> {
    let connect = crate::client::Connect::of(&cli);
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
        Command::Serve(args) => {
            crate::serve::run(&cli.data_dir, cli.result_expires, registry, args).await
        }
        Command::Backup { file } => crate::backup::backup(&cli.data_dir, &file).await,
        Command::Packs(cmd) => crate::packs::run(&connect, registry, cmd).await,
        Command::Reports(cmd) => crate::reports::run(&connect.client(registry).await?, cmd).await,
        Command::Restore { file } => crate::backup::restore(&cli.data_dir, &file).await,
        // Always on the data directory (or --backend aws): it takes over the step queues.
        Command::Resume {
            run_id,
            output,
            workers,
        } => {
            let client = Client::in_process(connect.open_local(registry).await?);
            resume(&client, run_id, output, workers).await
        }
        // Everything else is one implementation over the API: a server's with --endpoint,
        // else the same router in this process.
        command if crate::client::serves(&command) => {
            crate::client::dispatch(&connect.client(registry).await?, command).await
        }
        _ => unreachable!("every command is dispatched above"),
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
        SchemaTopic::Pack => {
            return match name {
                None => Ok(schemars::schema_for!(sluice_core::pack::PackManifest).to_value()),
                Some(name) => Err(InvalidInput(format!(
                    "{name}: a name is taken only by `sluice schema step`"
                ))
                .into()),
            };
        }
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
        // Exit 3: not the input's fault; the same start succeeds once the queue drains.
        e @ StartError::Overloaded { .. } => anyhow::anyhow!("run not started: {e}"),
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

/// `sluice run` in process: the params against the application (from the file, else
/// stored) and the configuration they name (from -c, else stored), so that everything
/// is checked before anything is stored and nothing is half written.
pub(crate) async fn check_run(
    local: &Local,
    args: &RunArgs,
    params: &Map<String, Value>,
) -> anyhow::Result<()> {
    let runtime = &local.runtime;
    let path = Path::new(&args.app);
    let app = if path.is_file() {
        load_application(path, runtime)?
    } else {
        runtime
            .backend()
            .definitions
            .get_application(&args.app)
            .await?
            .ok_or_else(|| InvalidInput(format!("application \"{}\" not found", args.app)))?
    };
    let config = args.config.as_deref().map(load_configuration).transpose()?;
    runtime
        .check_start(&app, params, config.as_ref())
        .await
        .map_err(start_error)?;
    Ok(())
}

/// `sluice resume`: takes the data directory (or, on AWS, relies on the leases), resumes
/// the unfinished runs before this process's workers poll, and follows them to the end.
async fn resume(
    client: &Client,
    run_id: Option<String>,
    output: OutputFormat,
    workers: usize,
) -> anyhow::Result<u8> {
    let Some(local) = client.local() else {
        anyhow::bail!("sluice resume works on the data directory or --backend aws");
    };
    let runtime = &local.runtime;
    // Only the embedded data directory's lock proves no other worker is alive; on AWS a
    // Lambda may still hold an attempt, which its lease protects. Resume before the
    // workers poll (see `Local::start_workers`).
    let takeover = local.take_over().await?;
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
    let finished = crate::client::follow(client, &ids, &mut printer).await;
    workers.shutdown().await;
    finished?;
    let mut code = 0;
    for id in &ids {
        code = code.max(crate::client::report(client, id, output).await?);
    }
    Ok(code)
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
