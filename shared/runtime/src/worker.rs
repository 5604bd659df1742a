//! Workers: poll the step queues and execute deliveries, as the SQS event source mapping
//! does on AWS. Used by `sluice run`, `sluice serve` and `--backend aws`.

use std::sync::Arc;
use std::time::Duration;

use sluice_core::engine::Event;
use sluice_core::ports::{dead_letter_queue, Delivery, TaskMessage};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::execute::Outcome;
use crate::runtime::{Runtime, RuntimeError};

/// How long a received message stays invisible: the longest step timeout plus margin.
/// (Embedded restarts release in-flight messages at once; see `resume_all`.)
pub const VISIBILITY: Duration = Duration::from_secs(960);
/// Delay before a message whose handling failed (a store or queue error) is retried.
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(1);

/// A set of polling loops, one per queue and dead-letter queue, sharing a concurrency
/// limit.
pub struct WorkerPool {
    stop: watch::Sender<bool>,
    loops: JoinSet<()>,
}

impl WorkerPool {
    /// Starts polling every queue of the runtime with at most `concurrency` deliveries
    /// in flight.
    pub fn start(runtime: Arc<Runtime>, concurrency: usize) -> Self {
        let (stop, stopped) = watch::channel(false);
        let permits = Arc::new(Semaphore::new(concurrency.max(1)));
        let mut loops = JoinSet::new();
        for queue in runtime.queues() {
            for (name, dead) in [(queue.clone(), false), (dead_letter_queue(&queue), true)] {
                loops.spawn(poll(
                    runtime.clone(),
                    name,
                    dead,
                    permits.clone(),
                    stopped.clone(),
                ));
            }
        }
        Self { stop, loops }
    }

    /// Stops polling and waits for the deliveries in flight to finish.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.loops.join_next().await.is_some() {}
    }
}

async fn poll(
    runtime: Arc<Runtime>,
    queue: String,
    dead_letters: bool,
    permits: Arc<Semaphore>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut in_flight = JoinSet::new();
    // Short polls keep a graceful shutdown short where a poll cannot be abandoned.
    let wait = Duration::from_secs(1);
    loop {
        if *stopped.borrow() {
            break;
        }
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("semaphore open"),
            _ = stopped.changed() => break,
        };
        let available = permits.available_permits() + 1;
        let queue_api = &runtime.backend().queue;
        let receive = queue_api.receive(&queue, available.min(10), VISIBILITY, wait);
        let received = if queue_api.receive_is_cancel_safe() {
            tokio::select! {
                received = receive => received,
                _ = stopped.changed() => break,
            }
        } else {
            // Finish the poll (at most `wait`) and handle what it brought, even when
            // stopping: an abandoned long poll can still take a message and hide it.
            receive.await
        };
        let deliveries = match received {
            Ok(deliveries) => deliveries,
            Err(e) => {
                tracing::error!(queue, error = %e, "receive failed");
                tokio::time::sleep(RETRY_AFTER_ERROR).await;
                continue;
            }
        };
        let mut permit = Some(permit);
        for delivery in deliveries {
            let permit = match permit.take() {
                Some(p) => p,
                None => permits
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("semaphore open"),
            };
            let runtime = runtime.clone();
            let queue = queue.clone();
            in_flight.spawn(async move {
                handle(&runtime, &queue, delivery, dead_letters).await;
                drop(permit);
            });
        }
        while in_flight.try_join_next().is_some() {}
    }
    // Graceful shutdown: let running steps finish and record their results.
    while in_flight.join_next().await.is_some() {}
}

/// Handles one delivery from a local poller: acknowledged once its result is stored,
/// released for a retry otherwise.
pub(crate) async fn handle(runtime: &Runtime, queue: &str, delivery: Delivery, dead_letter: bool) {
    let queue_api = &runtime.backend().queue;
    let acked = match runtime
        .handle_message(&delivery.message, delivery.receive_count, dead_letter)
        .await
    {
        Disposition::Ack => queue_api.ack(queue, &delivery.receipt).await,
        Disposition::RetryAfter(delay) => queue_api.release(queue, &delivery.receipt, delay).await,
    };
    if let Err(e) = acked {
        tracing::error!(queue, error = %e, "cannot acknowledge a message");
    }
}

/// What to do with a message once it has been handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Delete it: its result is stored (or there was nothing to do).
    Ack,
    /// Make it visible again after this delay (a busy attempt, a retry delay not yet
    /// over, or an infrastructure error). On Lambda: a batch item failure.
    RetryAfter(Duration),
}

impl Runtime {
    /// Handles one step-queue (or dead-letter-queue) message: claims and executes the
    /// attempt and records its result, or marks a dead-lettered attempt failed. Never
    /// fails: infrastructure errors become a retry.
    pub async fn handle_message(
        &self,
        message: &TaskMessage,
        receive_count: u32,
        dead_letter: bool,
    ) -> Disposition {
        let outcome = if dead_letter {
            let event = Event::DeadLettered {
                step: message.step_id.clone(),
                unit: message.unit,
                attempt: message.attempt,
                error: format!(
                    "the step's message was dead-lettered after {} deliveries",
                    receive_count.saturating_sub(1).max(1)
                ),
            };
            self.process(&message.run_id, event)
                .await
                .map(|_| Outcome::Duplicate)
        } else {
            match self.execute(message).await {
                Ok(Outcome::Done(events, run)) => {
                    let mut result = Ok(Outcome::Duplicate);
                    let mut hint = Some(*run);
                    for event in events {
                        if let Err(e) = self.process_from(&message.run_id, event, hint.take()).await
                        {
                            result = Err(e);
                            break;
                        }
                    }
                    result
                }
                other => other,
            }
        };
        match outcome {
            Ok(Outcome::Busy(ms)) => Disposition::RetryAfter(Duration::from_millis(ms)),
            Ok(_) => Disposition::Ack,
            Err(RuntimeError::NotFound(_)) => Disposition::Ack,
            Err(e) => {
                tracing::error!(run = %message.run_id, step = %message.step_id, error = %e, "delivery failed; it will be retried");
                Disposition::RetryAfter(RETRY_AFTER_ERROR)
            }
        }
    }
}
