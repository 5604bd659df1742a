//! The Lambda glue every function binary shares, so that each `functions/<name>/main.rs`
//! is a few lines:
//! - [`run_queue_function`]: a step type's function (and the operators' and the
//!   dead-letter function): an SQS batch → [`Runtime::handle_message`] per record,
//!   concurrently → `batchItemFailures` for the records to retry, their visibility set to
//!   the delay the engine asked for (or re-sent with the longest SQS delay when the wait
//!   is longer).
//! - [`run_start_function`]: the EventBridge Scheduler target.
//!
//! Clients and the runtime are built once per container, during INIT, and their
//! connections opened then ([`warm_up`]): at 128 MB the first TLS handshake to DynamoDB
//! alone takes about 0.75 s, which otherwise lands on the first invocation.

use std::sync::Arc;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::{DateTime, SecondsFormat, Utc};
use lambda_runtime::{service_fn, LambdaEvent};
use serde::{Deserialize, Serialize};
use sluice_core::model::deterministic_run_id;
use sluice_core::ports::{ScheduleStatsStore, ScheduleStore, ScheduledRun, TaskMessage};
use sluice_runtime::{Disposition, Runtime, StartError, StartRequest};
use tokio::task::JoinSet;

use crate::environment::AwsEnvironment;
use crate::settings::AwsSettings;
use crate::sqs::{SqsQueue, MAX_DELAY};

pub use lambda_runtime::Error;
/// Re-exported so a function binary needs no direct dependency on the core.
pub use sluice_core::step::StepRegistry;
/// JSON logs on stdout (CloudWatch adds the timestamp and request id), level from
/// `RUST_LOG` (the template's `LogLevel`), `info` by default.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .without_time()
        .with_target(false)
        .try_init();
}

/// Opens the connections the first invocation needs (DynamoDB, and SQS for the
/// function's own queue) with requests that cost nothing or next to nothing.
pub async fn warm_up(env: &AwsEnvironment, queue: Option<&str>) {
    let dynamodb = env.clients.dynamodb.describe_endpoints().send();
    let sqs = async {
        if let Some(queue) = queue {
            let _ = env.queue.url(queue).await;
        }
    };
    let (dynamodb, ()) = tokio::join!(dynamodb, sqs);
    if let Err(e) = dynamodb {
        tracing::warn!(error = %aws_sdk_dynamodb::error::DisplayErrorContext(&e), "warm-up request failed");
    }
}

/// Whether a queue is a dead-letter queue (its messages mark their attempts failed).
pub fn is_dead_letter_queue(queue: &str) -> bool {
    queue.ends_with("-dlq")
}

/// Handles one SQS batch. Records run concurrently; the response lists those to retry.
pub async fn handle_batch(
    runtime: Arc<Runtime>,
    queue: Arc<SqsQueue>,
    event: SqsEvent,
) -> SqsBatchResponse {
    let mut tasks = JoinSet::new();
    for record in event.records {
        let runtime = runtime.clone();
        let queue = queue.clone();
        tasks.spawn(async move { handle_record(&runtime, &queue, record).await });
    }
    let mut response = SqsBatchResponse::default();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(None) => {}
            Ok(Some(id)) => {
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = id;
                response.batch_item_failures.push(failure);
            }
            Err(e) => {
                tracing::error!(error = %e, "a record's task panicked; it will be redelivered")
            }
        }
    }
    response
}

/// One record: `None` when done (Lambda deletes it), `Some(message id)` to retry.
async fn handle_record(runtime: &Runtime, queue: &SqsQueue, record: SqsMessage) -> Option<String> {
    let id = record.message_id.clone().unwrap_or_default();
    let queue_name =
        SqsQueue::name_of_arn(record.event_source_arn.as_deref().unwrap_or_default()).to_string();
    let body = record.body.clone().unwrap_or_default();
    let message: TaskMessage = match serde_json::from_str(&body) {
        Ok(m) => m,
        Err(e) => {
            // Retried until it reaches the dead-letter queue, where it is dropped.
            tracing::error!(queue = %queue_name, message_id = %id, error = %e, "undecodable message");
            return (!is_dead_letter_queue(&queue_name)).then_some(id);
        }
    };
    let receive_count = record
        .attributes
        .get("ApproximateReceiveCount")
        .and_then(|c| c.parse().ok())
        .unwrap_or(1);
    let dead_letter = is_dead_letter_queue(&queue_name);
    match runtime
        .handle_message(&message, receive_count, dead_letter)
        .await
    {
        Disposition::Ack => None,
        Disposition::RetryAfter(delay) if delay > MAX_DELAY => {
            // A long wait: a fresh message with the longest delay, this one done.
            match queue.send_body(&queue_name, &body, MAX_DELAY).await {
                Ok(()) => None,
                Err(e) => {
                    tracing::error!(error = %e, "cannot re-enqueue a delayed message");
                    Some(id)
                }
            }
        }
        Disposition::RetryAfter(delay) => {
            if let Some(receipt) = &record.receipt_handle {
                if let Err(e) = queue.change_visibility(&queue_name, receipt, delay).await {
                    tracing::warn!(error = %e, "cannot shorten the visibility timeout; the message returns after it");
                }
            }
            Some(id)
        }
    }
}

/// The main of a function fed by SQS queues (a step type, the operators, the
/// dead-letter queues). `registry`: the step types this function executes.
pub async fn run_queue_function(registry: StepRegistry) -> Result<(), Error> {
    let started = std::time::Instant::now();
    init_tracing();
    let env = AwsEnvironment::load(AwsSettings::from_env()).await;
    let own_queue = std::env::var("SLUICE_QUEUE").ok();
    warm_up(&env, own_queue.as_deref()).await;
    let runtime = env.runtime(registry);
    let queue = env.queue.clone();
    tracing::info!(
        init_ms = started.elapsed().as_millis() as u64,
        "ready for the first invocation"
    );
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let runtime = runtime.clone();
        let queue = queue.clone();
        async move { Ok::<_, Error>(handle_batch(runtime, queue, event.payload).await) }
    }))
    .await
}

/// What a schedule sends the `start` function.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartEvent {
    pub entry_id: String,
    /// The tick being fired (EventBridge's `<aws.scheduler.scheduled-time>`); now when
    /// absent.
    #[serde(default)]
    pub scheduled_time: Option<DateTime<Utc>>,
}

/// What the `start` function did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartOutcome {
    /// The run of this tick (`None`: the schedule is gone or disabled).
    pub run_id: Option<String>,
    /// Whether this invocation counted the run (a retried invocation does not).
    pub counted: bool,
}

/// Fires one tick of a schedule: starts its run with an id derived from the tick (so a
/// retried invocation finds the same run), then claims the tick and counts the run once.
pub async fn fire_schedule(
    runtime: &Runtime,
    schedules: &dyn ScheduleStore,
    stats: &dyn ScheduleStatsStore,
    entry_id: &str,
    tick: DateTime<Utc>,
) -> Result<StartOutcome, StartError> {
    let Some(schedule) = schedules.get_schedule(entry_id).await? else {
        tracing::warn!(entry_id, "schedule not found; nothing started");
        return Ok(StartOutcome {
            run_id: None,
            counted: false,
        });
    };
    if !schedule.enabled {
        tracing::info!(entry_id, "schedule disabled; nothing started");
        return Ok(StartOutcome {
            run_id: None,
            counted: false,
        });
    }
    let tick_text = tick.to_rfc3339_opts(SecondsFormat::Secs, true);
    let run_id = deterministic_run_id(tick, &format!("schedule/{entry_id}/{tick_text}"));
    let run = runtime
        .start(StartRequest {
            application: schedule.application_id.clone(),
            params: schedule.params.clone(),
            run_id: Some(run_id.clone()),
            ..StartRequest::default()
        })
        .await?;
    let counted = stats.claim_tick(entry_id, tick).await?;
    if counted {
        stats
            .record_run(
                entry_id,
                &ScheduledRun {
                    run_id: run.id.clone(),
                    start_time: run.created_at,
                },
            )
            .await?;
    }
    tracing::info!(entry_id, run_id = %run.id, counted, "schedule fired");
    Ok(StartOutcome {
        run_id: Some(run.id),
        counted,
    })
}

/// The main of the `start` function (the EventBridge Scheduler target).
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
            let tick = event.payload.scheduled_time.unwrap_or_else(Utc::now);
            let outcome = fire_schedule(
                &runtime,
                env.schedules().as_ref(),
                env.schedule_stats().as_ref(),
                &event.payload.entry_id,
                tick,
            )
            .await;
            match outcome {
                Ok(outcome) => Ok(outcome),
                // Invalid input will not get better: report, do not retry.
                Err(StartError::Invalid(e)) => {
                    tracing::error!(entry_id = %event.payload.entry_id, error = %e, "schedule cannot start its application");
                    Ok(StartOutcome { run_id: None, counted: false })
                }
                Err(e) => Err(Error::from(e.to_string())),
            }
        }
    }))
    .await
}
