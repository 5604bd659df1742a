//! `--backend aws` and `sluice aws …`: the engine on this machine against AWS services
//! (or moto through `AWS_ENDPOINT_URL`), polling the step queues in-process with the
//! handler the Lambda functions use.

use std::path::Path;

use anyhow::Context;
use clap::Subcommand;
use sluice_aws::{AwsEnvironment, AwsSettings};
use sluice_core::step::StepRegistry;

use crate::local::{Local, Store};

#[derive(Subcommand)]
pub enum AwsCommand {
    /// Create the tables, queues (one per step type, with dead-letter queues, and the
    /// parked-letters queue), bucket and schedule group that `--backend aws` uses, named
    /// from `SLUICE_AWS_PREFIX`. Idempotent. A SAM deployment (`template.yaml`) creates
    /// the same resources.
    Provision,
}

/// Every queue's step type: the registered step types and the operators' `transform`.
fn step_types(registry: &StepRegistry) -> Vec<String> {
    let mut names: Vec<String> = registry.names().map(str::to_string).collect();
    names.push(sluice_core::operators::TRANSFORM.to_string());
    names.sort();
    names
}

/// The deployment's names: from a stack's outputs when given (`--stack-outputs`), else
/// from `SLUICE_AWS_PREFIX` and the per-resource variables.
pub fn settings(stack_outputs: Option<&Path>) -> anyhow::Result<AwsSettings> {
    let Some(path) = stack_outputs else {
        return Ok(AwsSettings::from_env());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--stack-outputs {}", path.display()))?;
    AwsSettings::from_stack_outputs(&text)
        .with_context(|| format!("--stack-outputs {}", path.display()))
}

pub async fn dispatch(
    cmd: AwsCommand,
    stack_outputs: Option<&Path>,
    registry: &StepRegistry,
) -> anyhow::Result<u8> {
    match cmd {
        AwsCommand::Provision => {
            let env = AwsEnvironment::load(settings(stack_outputs)?).await;
            let done = sluice_aws::provision::provision(
                &env.clients,
                &env.settings,
                &step_types(registry),
            )
            .await?;
            println!("Tables:         {}", done.tables.join(", "));
            println!(
                "Queues:         {} (each with a -dlq)",
                done.queues.join(", ")
            );
            println!("Parked letters: {}", done.parked_queue);
            println!("Bucket:         {}", done.bucket);
            println!("Schedule group: {}", done.schedule_group);
            write_request_log(&env);
            Ok(0)
        }
    }
}

/// The AWS environment from the standard variables, with a runtime over it executing
/// `registry`'s step types.
pub async fn open_local(
    stack_outputs: Option<&Path>,
    registry: &StepRegistry,
) -> anyhow::Result<Local> {
    let env = AwsEnvironment::load(settings(stack_outputs)?).await;
    let runtime = env.runtime(registry.clone());
    Ok(Local {
        store: Store::Aws(Box::new(env)),
        runtime,
    })
}

/// Appends this process's request counts to `SLUICE_AWS_REQUEST_LOG` as one JSON line.
pub fn write_request_log(env: &AwsEnvironment) {
    let Ok(path) = std::env::var("SLUICE_AWS_REQUEST_LOG") else {
        return;
    };
    let line = serde_json::to_string(&env.clients.requests.snapshot()).unwrap_or_default();
    use std::io::Write;
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
    {
        let _ = writeln!(file, "{line}");
    }
}
