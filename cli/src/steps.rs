//! `sluice steps run TYPE -p NAME=VALUE…`: one attempt of a step type, or a `transform`'s
//! template rendered with `--input` as its `input`, outside any application; nothing is
//! stored. On the data directory it runs in this process
//! (`Runtime::run_single_step`); with `--endpoint`, the server runs it
//! (`POST /api/v1/steps/run`). Both print the same document.

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use sluice_runtime::SingleStepRequest;

use crate::client::Client;
use crate::commands::parse_params;
use crate::local::Local;
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

/// On this machine's runtime.
pub async fn local(local: &Local, cmd: StepsCommand) -> anyhow::Result<u8> {
    let StepsCommand::Run(args) = cmd;
    let request = SingleStepRequest {
        name: args.name.clone(),
        parameters: parse_params(&args.params)?,
        input: args.input()?,
        timeout: std::time::Duration::from_secs(args.timeout_seconds),
        loglevel: args.loglevel,
    };
    match local.runtime.run_single_step(request).await {
        Ok(outcome) => print(&serde_json::to_value(outcome)?, args.output),
        // Every refusal is of the input: exit 2.
        Err(e) => Err(InvalidInput(e.to_string()).into()),
    }
}

/// Through a server's API.
pub async fn remote(client: &Client, cmd: StepsCommand) -> anyhow::Result<u8> {
    let StepsCommand::Run(args) = cmd;
    let body = json!({
        "name": args.name,
        "parameters": parse_params(&args.params)?,
        "input": args.input()?,
        "timeout_seconds": args.timeout_seconds,
        "loglevel": args.loglevel,
    });
    let doc = client.post("/api/v1/steps/run", &body).await?;
    print(&doc, args.output)
}

/// Prints the result document; exit 1 when the attempt failed.
fn print(doc: &Value, format: OutputFormat) -> anyhow::Result<u8> {
    match format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(doc)?),
        OutputFormat::Text => {
            for entry in doc["logs"].as_array().into_iter().flatten() {
                eprintln!(
                    "{} {} {}",
                    entry["ts"].as_str().unwrap_or_default(),
                    entry["level"].as_str().unwrap_or_default(),
                    entry["message"].as_str().unwrap_or_default()
                );
            }
            let state = doc["state"].as_str().unwrap_or_default();
            eprintln!(
                "{}: {state} in {:.3} s",
                doc["name"].as_str().unwrap_or_default(),
                doc["seconds"].as_f64().unwrap_or_default()
            );
            for warning in doc["warnings"].as_array().into_iter().flatten() {
                eprintln!("warning: {}", warning.as_str().unwrap_or_default());
            }
            if let Some(error) = doc["error"].as_str() {
                eprintln!("error: {error}");
            } else {
                println!("{}", serde_json::to_string_pretty(&doc["output"])?);
            }
        }
    }
    Ok(if doc["state"] == "failed" {
        EXIT_RUN_FAILED
    } else {
        0
    })
}
