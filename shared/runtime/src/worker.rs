//! Workers: poll the step queues and execute deliveries, as the SQS event source mapping
//! does on AWS. Used by `sluice run`, `sluice serve` and `--backend aws`.

use std::sync::Arc;
use std::time::Duration;

use sluice_core::engine::Event;
use sluice_core::ports::{dead_letter_queue, Delivery};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::execute::Outcome;
use crate::runtime::Runtime;

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
                loops.spawn(poll(runtime.clone(), name, dead, permits.clone(), stopped.clone()));
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
    let wait = if dead_letters {
        Duration::from_secs(5)
    } else {
        Duration::from_secs(1)
    };
    loop {
        if *stopped.borrow() {
            break;
        }
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("semaphore open"),
            _ = stopped.changed() => break,
        };
        let available = permits.available_permits() + 1;
        let received = tokio::select! {
            received = runtime.backend().queue.receive(&queue, available.min(10), VISIBILITY, wait) => received,
            _ = stopped.changed() => break,
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
                None => permits.clone().acquire_owned().await.expect("semaphore open"),
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

/// Handles one delivery: acknowledged once its result is stored, released for a retry
/// on any infrastructure error.
pub(crate) async fn handle(runtime: &Runtime, queue: &str, delivery: Delivery, dead_letter: bool) {
    let message = &delivery.message;
    let queue_api = &runtime.backend().queue;
    let outcome = if dead_letter {
        let event = Event::DeadLettered {
            step: message.step_id.clone(),
            unit: message.unit,
            attempt: message.attempt,
            error: format!(
                "the step's message was dead-lettered after {} deliveries",
                delivery.receive_count.saturating_sub(1).max(1)
            ),
        };
        runtime
            .process(&message.run_id, event)
            .await
            .map(|_| Outcome::Duplicate)
    } else {
        match runtime.execute(message).await {
            Ok(Outcome::Done(events)) => {
                let mut result = Ok(Outcome::Duplicate);
                for event in events {
                    if let Err(e) = runtime.process(&message.run_id, event).await {
                        result = Err(e);
                        break;
                    }
                }
                result
            }
            other => other,
        }
    };
    let acked = match outcome {
        Ok(Outcome::Busy(ms)) => {
            queue_api
                .release(queue, &delivery.receipt, Duration::from_millis(ms))
                .await
        }
        Ok(_) => queue_api.ack(queue, &delivery.receipt).await,
        Err(e) => {
            tracing::error!(run = %message.run_id, step = %message.step_id, error = %e, "delivery failed; it will be retried");
            queue_api
                .release(queue, &delivery.receipt, RETRY_AFTER_ERROR)
                .await
        }
    };
    if let Err(e) = acked {
        tracing::error!(queue, error = %e, "cannot acknowledge a message");
    }
}
