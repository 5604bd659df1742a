//! `sluice steps run TYPE -p NAME=VALUE…`: one attempt of a step type, or a `transform`'s
//! template rendered with `--input` as its `input`, outside any application; nothing is
//! stored. It goes through `POST /api/v1/steps/run`: the server runs it with
//! `--endpoint`, else this process does (the API in process, `Runtime::run_single_step`).

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use sluice_api::documents::StepRunResult;

use crate::client::Client;
use crate::commands::parse_params;
use crate::{InvalidInput, OutputFormat, EXIT_RUN_FAILED};

#[derive(Subcommand)]
pub enum StepsCommand {
    /// Run one attempt of a step type (or render a `transform`'s template) with the
    /// parameters given, and print its output, warnings and logs. References do not
    /// resolve: there is no run. Nothing is stored.
    Run(StepRunArgs),
}

#[derive(Args)]
pub struct StepRunArgs {
    /// The step type, or `transform`.
    name: String,
    /// A parameter, NAME=VALUE; VALUE is parsed as JSON when it is valid JSON.
    #[arg(short = 'p', long = "param", value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// `transform` only: the JSON its template sees as `input`.
    #[arg(long, value_name = "JSON")]
    input: Option<String>,
    /// Seconds before the attempt is abandoned.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=900))]
    timeout_seconds: u64,
    /// 10 debug, 20 info, 30 warning, 40 error.
    #[arg(long, default_value_t = 20,
          value_parser = PossibleValuesParser::new(["10", "20", "30", "40"])
              .map(|level| level.parse::<u8>().unwrap_or(20)))]
    loglevel: u8,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    output: OutputFormat,
}

impl StepRunArgs {
    fn input(&self) -> anyhow::Result<Option<Value>> {
        self.input
            .as_deref()
            .map(|text| {
                serde_json::from_str(text)
                    .map_err(|e| InvalidInput(format!("--input: not JSON: {e}")).into())
            })
            .transpose()
    }
}

/// Through the API (a server's with `--endpoint`, else in process, where this process
/// runs the attempt).
pub async fn run(client: &Client, cmd: StepsCommand) -> anyhow::Result<u8> {
    let StepsCommand::Run(args) = cmd;
    let body = json!({
        "name": args.name,
        "parameters": parse_params(&args.params)?,
        "input": args.input()?,
        "timeout_seconds": args.timeout_seconds,
        "loglevel": args.loglevel,
    });
    let result: StepRunResult = client.post_as("/api/v1/steps/run", &body).await?;
    print(&result, args.output)
}

/// Prints the result document; exit 1 when the attempt failed.
fn print(result: &StepRunResult, format: OutputFormat) -> anyhow::Result<u8> {
    match format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(result)?),
        OutputFormat::Text => {
            for entry in &result.logs {
                eprintln!("{} {} {}", entry.ts, entry.level, entry.message);
            }
            eprintln!(
                "{}: {} in {:.3} s",
                result.name, result.state, result.seconds
            );
            for warning in &result.warnings {
                eprintln!("warning: {warning}");
            }
            if let Some(error) = &result.error {
                eprintln!("error: {error}");
            } else {
                println!("{}", serde_json::to_string_pretty(&result.output)?);
            }
        }
    }
    Ok(if result.state == "failed" {
        EXIT_RUN_FAILED
    } else {
        0
    })
}
