//! The functions fed by SQS (a step type's, the operators', the dead letters'): a batch
//! → [`Runtime::handle_delivery`] per record, concurrently, each in a `record` span →
//! `batchItemFailures` for the records to retry, their visibility set to the delay the
//! engine asked for (or re-sent with the longest SQS delay when the wait is longer).

use std::collections::HashMap;
use std::sync::Arc;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use lambda_runtime::{service_fn, LambdaEvent};
use sluice_aws::sqs::{SqsQueue, MAX_DELAY};
use sluice_aws::{AwsEnvironment, AwsSettings};
use sluice_core::ports::{Delivery, TaskMessage};
use sluice_runtime::{AttemptReport, Disposition, Runtime};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::metrics::BatchMetrics;
use crate::{init_tracing, warm_up, Error, StepRegistry};

/// Whether a queue is a dead-letter queue (its messages mark their attempts failed).
pub fn is_dead_letter_queue(queue: &str) -> bool {
    queue.ends_with("-dlq")
}

/// Handles one SQS batch. Records run concurrently; the response lists those to retry.
/// The batch's metrics are printed (embedded metric format) before it returns.
pub async fn handle_batch(
    runtime: Arc<Runtime>,
    queue: Arc<SqsQueue>,
    event: SqsEvent,
) -> SqsBatchResponse {
    let (response, metrics) = handle_batch_measured(runtime, queue, event).await;
    metrics.print();
    response
}

/// [`handle_batch`] without printing: the response and the batch's metrics.
pub async fn handle_batch_measured(
    runtime: Arc<Runtime>,
    queue: Arc<SqsQueue>,
    event: SqsEvent,
) -> (SqsBatchResponse, BatchMetrics) {
    let mut tasks = JoinSet::new();
    // Message ids by task, so that a record whose task panicked is reported for retry
    // (a record missing from the response counts as done and would be deleted).
    let mut ids = HashMap::new();
    for record in event.records {
        let runtime = runtime.clone();
        let queue = queue.clone();
        let id = record.message_id.clone().unwrap_or_default();
        let task = tasks.spawn(async move { handle_record(&runtime, &queue, record).await });
        ids.insert(task.id(), id);
    }
    let mut response = SqsBatchResponse::default();
    let mut metrics = BatchMetrics::default();
    let mut retry = |id: String| {
        let mut failure = BatchItemFailure::default();
        failure.item_identifier = id;
        response.batch_item_failures.push(failure);
    };
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok((again, report)) => {
                if let Some(report) = report {
                    metrics.add(&report);
                }
                if let Some(id) = again {
                    retry(id);
                }
            }
            Err(e) => {
                let id = ids.remove(&e.id()).unwrap_or_default();
                tracing::error!(message_id = %id, error = %e, "a record's task panicked; it will be redelivered");
                retry(id);
            }
        }
    }
    (response, metrics)
}

/// One record: `None` when done (Lambda deletes it), `Some(message id)` to retry; with
/// what became of its attempt.
async fn handle_record(
    runtime: &Runtime,
    queue: &SqsQueue,
    record: SqsMessage,
) -> (Option<String>, Option<AttemptReport>) {
    let id = record.message_id.clone().unwrap_or_default();
    let queue_name =
        SqsQueue::name_of_arn(record.event_source_arn.as_deref().unwrap_or_default()).to_string();
    let dead_letter = is_dead_letter_queue(&queue_name);
    let body = record.body.clone().unwrap_or_default();
    let message: TaskMessage = match serde_json::from_str(&body) {
        Ok(m) => m,
        Err(e) => {
            // Retried until it reaches the dead-letter queue, where it is dropped.
            tracing::error!(queue = %queue_name, message_id = %id, error = %e, "undecodable message");
            return ((!dead_letter).then_some(id), None);
        }
    };
    let span = tracing::info_span!(
        "record",
        run_id = %message.run_id,
        step_id = %message.step_id,
        unit = message.unit,
        attempt = message.attempt,
        message_id = %id,
    );
    async {
        let receive_count = record
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|c| c.parse().ok())
            .unwrap_or(1);
        let delivery = Delivery {
            message,
            receipt: record.receipt_handle.clone().unwrap_or_default(),
            receive_count,
        };
        let handled = runtime
            .handle_delivery(&queue_name, &delivery, dead_letter)
            .await;
        let retry = match handled.disposition {
            Disposition::Ack => None,
            Disposition::RetryAfter(delay) if delay > MAX_DELAY => {
                // A long wait: a fresh message with the longest delay, this one done.
                match queue
                    .send_body(&queue_name, &body, MAX_DELAY, &delivery.message)
                    .await
                {
                    Ok(()) => None,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot re-enqueue a delayed message");
                        Some(id)
                    }
                }
            }
            Disposition::RetryAfter(delay) => {
                if let Err(e) = queue
                    .change_visibility(&queue_name, &delivery.receipt, delay)
                    .await
                {
                    tracing::warn!(error = %e, "cannot shorten the visibility timeout; the message returns after it");
                }
                Some(id)
            }
        };
        match &handled.attempt {
            Some(report) => tracing::info!(
                step_type = %report.step_type,
                outcome = ?report.outcome,
                duration_ms = report.duration.as_millis() as u64,
                retry = retry.is_some(),
                "record handled"
            ),
            None => tracing::info!(retry = retry.is_some(), "record handled, no attempt ran"),
        }
        (retry, handled.attempt)
    }
    .instrument(span)
    .await
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
