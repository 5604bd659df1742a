//! The `start` function, the EventBridge Scheduler target: fires one tick of a schedule
//! through [`sluice_runtime::schedule::fire`], the path `sluice serve` uses too.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use lambda_runtime::{service_fn, LambdaEvent};
use serde::{Deserialize, Serialize};
use sluice_aws::{AwsEnvironment, AwsSettings};
use sluice_core::ports::{ScheduleStatsStore, ScheduleStore};
use sluice_runtime::schedule::{fire_entry, FireError, Fired};
use sluice_runtime::Runtime;
use tracing::Instrument;

use crate::{init_tracing, warm_up, Error, StepRegistry};

/// What a schedule sends the `start` function.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartEvent {
    pub entry_id: String,
    /// The tick being fired (EventBridge's `<aws.scheduler.scheduled-time>`); now when
    /// absent.
    #[serde(default)]
    pub scheduled_time: Option<DateTime<Utc>>,
}

/// Why an invocation started nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Skipped {
    /// The tick was fired before (a retried or late invocation).
    AlreadyHandled,
    Disabled,
    /// The schedule is gone.
    Missing,
    /// The run was refused (application gone, bad params): retrying cannot help.
    Refused,
}

/// What the `start` function did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartOutcome {
    /// The run this invocation started and counted.
    pub run_id: Option<String>,
    pub skipped: Option<Skipped>,
}

/// Handles one invocation. Infrastructure errors fail it (the Scheduler's retry policy
/// retries, and a retry cannot start a second run); everything else is an outcome.
pub async fn handle_start(
    runtime: &Runtime,
    schedules: &dyn ScheduleStore,
    stats: &dyn ScheduleStatsStore,
    event: &StartEvent,
) -> Result<StartOutcome, Error> {
    let tick = event.scheduled_time.unwrap_or_else(Utc::now);
    let span = tracing::info_span!("tick", entry_id = %event.entry_id, tick = %tick.to_rfc3339());
    async {
        let skipped = |why| StartOutcome {
            run_id: None,
            skipped: Some(why),
        };
        let outcome = match fire_entry(runtime, schedules, stats, &event.entry_id, tick).await {
            Ok(Fired::Started(run)) => StartOutcome {
                run_id: Some(run.id),
                skipped: None,
            },
            Ok(Fired::AlreadyHandled) => skipped(Skipped::AlreadyHandled),
            Ok(Fired::Disabled) => skipped(Skipped::Disabled),
            Ok(Fired::Missing) => skipped(Skipped::Missing),
            Err(e @ FireError::Refused { .. }) => {
                tracing::error!(error = %e, "schedule cannot start its application");
                skipped(Skipped::Refused)
            }
            Err(e) => return Err(Error::from(e.to_string())),
        };
        tracing::info!(run_id = ?outcome.run_id, skipped = ?outcome.skipped, "schedule tick handled");
        Ok(outcome)
    }
    .instrument(span)
    .await
}

/// The main of the `start` function. `registry`: the step types' catalogue (starting a
/// run executes none of them).
pub async fn run_start_function(registry: StepRegistry) -> Result<(), Error> {
    init_tracing();
    let env = AwsEnvironment::load(AwsSettings::from_env()).await;
    warm_up(&env, None).await;
    let runtime = env.runtime(registry);
    let env = Arc::new(env);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<StartEvent>| {
        let runtime = runtime.clone();
        let env = env.clone();
        async move {
            handle_start(
                &runtime,
                env.schedules().as_ref(),
                env.schedule_stats().as_ref(),
                &event.payload,
            )
            .await
        }
    }))
    .await
}
