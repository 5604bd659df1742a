//! The `sluice` command-line tool as a library: run integration applications on this
//! machine (embedded SQLite data directory) or against AWS, and manage their documents,
//! runs, cache and deployment files.
//!
//! A project with step types of its own builds its own `sluice` binary: every subcommand
//! (`run`, `serve`, `validate`, `schema`, `--backend aws`, `bench`, `aws provision`,
//! `infra`…) then runs with its registry, so validation, the published step schemas,
//! the queues and the template follow its step types.
//!
//! ```no_run
//! use std::process::ExitCode;
//!
//! fn main() -> ExitCode {
//!     let registry = sluice_steps::builtin_registry();
//!     // registry.register(my_steps::Greet);
//!     sluice_cli::main(registry)
//! }
//! ```

mod aws;
mod backup;
mod bench;
mod client;
mod commands;
mod definitions_as_code;
mod history;
pub mod infra;
mod local;
mod output;
mod packs;
mod progress;
mod reports;
mod scaffold;
mod schedules;
mod serve;
mod steps;
mod tokens;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The registry of step types a `sluice` binary runs with (the same type as
/// `sluice_sdk::StepRegistry`).
pub use sluice_core::step::StepRegistry;

/// The allocator a `sluice` binary declares (`#[global_allocator] static ALLOCATOR:
/// sluice_cli::Allocator = sluice_cli::Allocator;`, as the generated projects do):
/// mimalloc, which spends 15-20 % less CPU per embedded step than glibc's malloc
/// (docs/benchmarks.md).
pub use mimalloc::MiMalloc as Allocator;

/// Exit code: the run failed or was revoked.
const EXIT_RUN_FAILED: u8 = 1;
/// Exit code: invalid input (documents, parameters, references).
const EXIT_INVALID: u8 = 2;
/// Exit code: anything else.
const EXIT_OTHER: u8 = 3;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Run integration applications step by step, on this machine or on AWS Lambda."
)]
struct Cli {
    /// Data directory of the embedded runtime.
    #[arg(
        long,
        global = true,
        env = "SLUICE_DATA_DIR",
        default_value = ".sluice"
    )]
    data_dir: PathBuf,
    /// Where runs execute: the embedded data directory, or AWS services (standard AWS
    /// environment variables, `AWS_ENDPOINT_URL` included; names from `SLUICE_AWS_PREFIX`).
    #[arg(long, global = true, env = "SLUICE_BACKEND", value_enum, default_value_t = BackendKind::Embedded)]
    backend: BackendKind,
    /// Send the commands to this server's REST API instead of the data directory.
    #[arg(long, global = true, env = "SLUICE_ENDPOINT")]
    endpoint: Option<String>,
    /// Bearer API token for --endpoint (else SLUICE_ADMIN_PASSWORD, as HTTP Basic).
    #[arg(long, global = true, env = "SLUICE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// `--backend aws`: the resource names of a deployed stack, from the JSON of `aws
    /// cloudformation describe-stacks --stack-name NAME` or `sam list stack-outputs
    /// --output json` (scripts/deploy.sh writes it), instead of names derived from
    /// SLUICE_AWS_PREFIX.
    #[arg(long, global = true, env = "SLUICE_STACK_OUTPUTS", value_name = "FILE")]
    stack_outputs: Option<PathBuf>,
    /// Embedded: keep the runs this command starts (with their outputs and logs) this
    /// many seconds, 60 to 315360000 (10 years); default 604800 (7 days).
    #[arg(long, global = true, env = "SLUICE_RESULT_EXPIRES", value_name = "SECONDS",
          value_parser = clap::value_parser!(i64).range(60..=315_360_000))]
    result_expires: Option<i64>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Store the documents given, run an application to its end with live progress, and
    /// print a summary.
    Run(RunArgs),
    /// Finish runs left unfinished by a killed process (finished steps never rerun).
    Resume {
        /// One run; every unfinished run when absent.
        run_id: Option<String>,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
        #[arg(long, default_value_t = 16)]
        workers: usize,
    },
    /// Validate application, configuration or schedule documents.
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The documents' kind; without it, each file's kind is told by its top-level
        /// field (`steps`, `data` or `schedule`).
        #[arg(long, value_enum)]
        kind: Option<SchemaKind>,
    },
    /// Print the JSON Schema of a document, or (`step`) the step types: each one's
    /// version, description and parameter schema.
    Schema {
        #[arg(value_enum, default_value_t = SchemaTopic::Application)]
        kind: SchemaTopic,
        /// With `step`: the step type to show (without it, every step type).
        name: Option<String>,
    },
    /// Manage stored applications.
    #[command(subcommand)]
    Apps(DocCommand),
    /// Manage stored configurations (encrypted values are never shown).
    #[command(subcommand)]
    Configs(DocCommand),
    /// Inspect and control runs.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// List, read or delete cache entries.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Measure the embedded runtime (use a release build).
    Bench(bench::BenchArgs),
    /// AWS resources for `--backend aws`.
    #[command(subcommand)]
    Aws(aws::AwsCommand),
    /// Serve the REST API, the scheduler and the step workers on the data directory.
    Serve(serve::ServeArgs),
    /// Write (or `--check`) the deployment files generated from `infra/functions.toml` and
    /// this binary's step types: `template.yaml`, the step catalogue and the IAM table of
    /// `docs/aws.md` (when it exists).
    Infra(infra::InfraArgs),
    /// Create a project with step types of its own (`sluice new DIR`), or add a step type
    /// to one (`sluice new step NAME`).
    New(scaffold::NewArgs),
    /// Manage API tokens (shown once, stored hashed).
    #[command(subcommand)]
    Tokens(tokens::TokensCommand),
    /// Manage schedules (crontab or frequency, UTC).
    #[command(subcommand)]
    Schedules(schedules::SchedulesCommand),
    /// Run one step alone (a step type, or a `transform`'s template), storing nothing.
    #[command(subcommand)]
    Steps(steps::StepsCommand),
    /// Write the data directory (database, secret key, outputs) to one archive; safe
    /// while `sluice serve` runs.
    Backup {
        /// The archive to write (a tar file); it must not exist.
        file: PathBuf,
    },
    /// Restore a `sluice backup` archive into an empty or new data directory.
    Restore {
        /// The archive `sluice backup` wrote.
        file: PathBuf,
    },
    /// Show what applying a directory of documents would create, change (with a diff)
    /// or, with `--prune`, delete; writes nothing.
    Plan(definitions_as_code::PlanArgs),
    /// Apply a directory of documents: all of it, or (when anything is invalid or a
    /// write fails) nothing.
    Apply(definitions_as_code::PlanArgs),
    /// Write every stored application, configuration and schedule as files (encrypted
    /// values empty), so that `apply` of the directory changes nothing.
    Export(definitions_as_code::ExportArgs),
    /// Packs: build a directory into an archive, install, activate (upgrade, roll
    /// back), list, delete, and save copies of their read-only definitions.
    #[command(subcommand)]
    Packs(packs::PacksCommand),
    /// Run reports: list, print (text, JSON or CSV), delete.
    #[command(subcommand)]
    Reports(reports::ReportsCommand),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BackendKind {
    Embedded,
    Aws,
}

#[derive(Args)]
struct RunArgs {
    /// An application file, or the name of a stored application.
    app: String,
    /// A configuration file to store before the run.
    #[arg(short = 'c', long = "config")]
    config: Option<PathBuf>,
    /// Run params, NAME=VALUE; VALUE is parsed as JSON when it is valid JSON.
    #[arg(short = 'p', long = "param", value_name = "NAME=VALUE")]
    params: Vec<String>,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    output: OutputFormat,
    /// Step executions in flight at once.
    #[arg(long, default_value_t = 16)]
    workers: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OutputFormat {
    Text,
    Json,
}

/// What `sluice schema` prints: a document kind's schema or the step types.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SchemaTopic {
    Application,
    Configuration,
    Schedule,
    Step,
    /// A pack's manifest (`pack.json`).
    Pack,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SchemaKind {
    Application,
    Configuration,
    Schedule,
}

#[derive(Subcommand)]
enum DocCommand {
    /// Validate and store a document.
    Push {
        file: PathBuf,
    },
    List {
        /// Include applications hidden by `meta.hidden: true` (`apps list` only).
        #[arg(long)]
        hidden: bool,
    },
    Get {
        name: String,
    },
    Delete {
        name: String,
        /// Delete an application although schedules or other applications name it
        /// (`apps delete` only; refused otherwise, naming them).
        #[arg(long)]
        force: bool,
    },
    /// The stored versions, newest first: number, time, author, content hash.
    History {
        name: String,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
    /// What changed from version FROM to version TO.
    Diff {
        name: String,
        from: u64,
        to: u64,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
    /// Store version VERSION's document again, as a new version.
    Rollback {
        name: String,
        version: u64,
    },
}

#[derive(Subcommand)]
enum RunsCommand {
    /// Runs, newest first.
    List {
        #[arg(long)]
        application: Option<String>,
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
    /// A run's task document, with each step's output.
    Get { id: String },
    /// A run's step logs.
    Logs {
        id: String,
        /// Only this step's entries.
        #[arg(long)]
        step: Option<String>,
        /// Keep printing until the run ends.
        #[arg(long)]
        follow: bool,
    },
    /// A step's units (its `for_each` items): state, attempt and error of each, read a
    /// page at a time.
    Units {
        id: String,
        step: String,
        /// Only units in this state: pending, queued, running, done or failed.
        #[arg(long)]
        state: Option<String>,
        /// At most this many units (all by default).
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
    /// Start a new run with the same application, params, configuration and queue, and
    /// run it to its end.
    Replay {
        id: String,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
    /// Revoke a run: nothing further starts; unfinished steps are cancelled. With
    /// `--application` or `--all`, every unfinished run of the application, or every
    /// unfinished run (the administrator role, with --endpoint).
    #[command(group(clap::ArgGroup::new("which").required(true).args(["id", "application", "all"])))]
    Revoke {
        id: Option<String>,
        /// Every unfinished run of this application.
        #[arg(long)]
        application: Option<String>,
        /// Every unfinished run.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Subcommand)]
enum CacheCommand {
    /// A cache entry's value.
    Get { key: String },
    /// Keys of live entries, in ascending order, one a line.
    List {
        /// Only keys starting with this text (literal, no wildcards).
        #[arg(long, default_value = "")]
        prefix: String,
        /// Print at most this many keys (default: all).
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Delete an entry, or with `--prefix` every entry whose key starts with it
    /// (`--prefix ""`: every entry).
    #[command(group(clap::ArgGroup::new("which").required(true).args(["key", "prefix"])))]
    Delete {
        key: Option<String>,
        #[arg(long)]
        prefix: Option<String>,
    },
}

/// `sluice runs list | head -1`: once the reader closes the pipe, end the way command
/// line tools do (killed by SIGPIPE, silently) instead of panicking in `println!`. Not
/// for `serve`, whose sockets and log pipes must never end the process.
fn exit_quietly_on_closed_stdout() {
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any other thread exists; it only
    // restores the default disposition of one signal.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Invalid input: exit code 2, the message names the file, field or line.
#[derive(Debug)]
pub(crate) struct InvalidInput(pub String);

impl std::fmt::Display for InvalidInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidInput {}

/// Runs the `sluice` command line (the process's arguments) with `registry`'s step types
/// and returns the exit code: 0 success, 1 a run failed (or `infra --check` found stale
/// files), 2 invalid input, 3 anything else.
pub fn main(registry: StepRegistry) -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_)) {
        exit_quietly_on_closed_stdout();
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // One worker thread beside the main one: the embedded store serialises its writes
    // on one connection, so a second worker mostly adds cross-thread wake-ups (a third
    // less throughput, docs/benchmarks.md); blocking work (renderings, files) has its
    // own threads. Tokio's `TOKIO_WORKER_THREADS` still decides when set.
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        builder.worker_threads(1);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_OTHER);
        }
    };
    match runtime.block_on(commands::dispatch(cli, &registry)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if let Some(invalid) = e.downcast_ref::<InvalidInput>() {
                eprintln!("{invalid}");
                ExitCode::from(EXIT_INVALID)
            } else {
                eprintln!("error: {e:#}");
                ExitCode::from(EXIT_OTHER)
            }
        }
    }
}
