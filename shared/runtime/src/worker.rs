//! Workers: poll the step queues and execute deliveries, as the SQS event source mapping
//! does on AWS. Used by `sluice run`, `sluice serve` and `--backend aws`.

use std::sync::Arc;
use std::time::Duration;

use sluice_core::engine::{AttemptResult, Event};
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

/// How many ready successors in a row a local worker executes itself before the next
/// goes through the queue ([`HandOff`]): enough for a chain to skip the poll almost
/// always, few enough that other runs' messages wait for a worker only briefly.
const HAND_OFFS_IN_A_ROW: u32 = 32;

tokio::task_local! {
    /// The slot of the delivery a local worker is handling ([`handle`]).
    static HAND_OFF: std::cell::RefCell<HandOff>;
}

/// A local worker's slot for one ready successor of its delivery, which it then handles
/// itself instead of through a poll: the message is sent already received
/// (`Queue::send_received`), in the same commit as the end of the step before it, and
/// its claim joins that commit. A step of a chain thus costs one commit and no wake-up
/// of a poller. Durability is the queue's as before: the message is stored, in flight,
/// and comes back should the worker die.
struct HandOff {
    /// Whether the slot takes a message (once per delivery).
    open: bool,
    /// The message taken: its queue and delivery.
    taken: Option<(String, Delivery)>,
}

impl Runtime {
    /// Hands a ready message of a step type this process executes to the local worker
    /// whose delivery queued it, when its slot is open: whether it was taken (sent
    /// already received). Not taken, the caller sends it.
    pub(crate) async fn hand_off(
        &self,
        queue: &str,
        message: &TaskMessage,
    ) -> Result<bool, RuntimeError> {
        // Taken before any await: effects carried out concurrently share the slot.
        let open = HAND_OFF
            .try_with(|slot| std::mem::take(&mut slot.borrow_mut().open))
            .unwrap_or(false);
        if !open {
            return Ok(false);
        }
        let Some(hold) = self.attempt_visibility(message).await else {
            return Ok(false);
        };
        let delivery = self
            .backend
            .queue
            .send_received(queue, message, hold)
            .await?;
        let Some(delivery) = delivery else {
            return Ok(false);
        };
        let taken = Some((queue.to_string(), delivery));
        let _ = HAND_OFF.try_with(|slot| slot.borrow_mut().taken = taken);
        Ok(true)
    }
}

/// Handles one delivery from a local poller: acknowledged once its result is stored,
/// released for a retry otherwise; then the successor it handed to this worker, if any
/// ([`HandOff`]), up to [`HAND_OFFS_IN_A_ROW`].
///
/// The deliveries are one piece of work whose writes the store may stage
/// (`RunStore::stage_writes`): on the embedded store, the hold and the claim are one
/// commit, and the attempt's end, what it queues, the acknowledgement and the claim of
/// the successor handed over another.
pub(crate) async fn handle(runtime: &Runtime, queue: &str, delivery: Delivery, dead_letter: bool) {
    let runs = runtime.backend().runs.clone();
    let work = async {
        let queue_api = &runtime.backend().queue;
        let mut next = Some((queue.to_string(), delivery, dead_letter, false));
        let mut hand_offs = 0;
        while let Some((queue, delivery, dead_letter, held)) = next.take() {
            let slot = std::cell::RefCell::new(HandOff {
                open: !dead_letter && hand_offs < HAND_OFFS_IN_A_ROW,
                taken: None,
            });
            let (disposition, taken) = HAND_OFF
                .scope(slot, async {
                    let handled = runtime
                        .handle_held(&queue, &delivery, dead_letter, held)
                        .await;
                    let taken = HAND_OFF.with(|slot| slot.borrow_mut().taken.take());
                    (handled.disposition, taken)
                })
                .await;
            let acked = match disposition {
                Disposition::Ack => queue_api.ack(&queue, &delivery.receipt).await,
                Disposition::RetryAfter(delay) => {
                    queue_api.release(&queue, &delivery.receipt, delay).await
                }
            };
            if let Err(e) = acked {
                tracing::error!(queue, error = %e, "cannot acknowledge a message");
            }
            if let Some((queue, taken)) = taken {
                if disposition == Disposition::Ack {
                    hand_offs += 1;
                    next = Some((queue, taken, false, true));
                } else if let Err(e) = queue_api
                    .release(&queue, &taken.receipt, Duration::ZERO)
                    .await
                {
                    // Not lost: it comes back when its hold ends.
                    tracing::warn!(queue, error = %e, "cannot release a message handed over");
                }
            }
        }
        // After a yield, so that the writes of other ready deliveries join the commit.
        tokio::task::yield_now().await;
        if let Err(e) = runtime.backend().runs.commit_staged() {
            // What the delivery did after its claim is not stored: it is received
            // again once its hold ends, and the claim decides what then runs.
            tracing::error!(queue, error = %e, "cannot store what a delivery did");
        }
    };
    runs.stage_writes(Box::pin(work)).await;
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

/// What became of a step attempt a message carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Succeeded,
    /// Failed, and the engine queued the next attempt.
    Retried,
    /// Failed for good (no attempt left, or not retryable).
    Failed,
    /// Started and not finished by this message (a blocking child run is under way).
    Waiting,
    /// Marked failed because its message reached the dead-letter queue (not executed).
    DeadLettered,
}

/// A step attempt that a message ran (or dead-lettered), for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptReport {
    pub step_type: String,
    pub outcome: AttemptOutcome,
    /// Claim, execution and storing of the result (zero for a dead letter).
    pub duration: Duration,
}

/// The result of handling one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handled {
    pub disposition: Disposition,
    /// `None` when no attempt ran: a duplicate, a busy claim, an infrastructure error.
    pub attempt: Option<AttemptReport>,
}

impl Runtime {
    /// How long a worker holds a received message of `message`'s step: its timeout plus
    /// [`RuntimeConfig::visibility_margin`](crate::RuntimeConfig). `None` when the run is
    /// gone (nothing will run).
    pub async fn attempt_visibility(&self, message: &TaskMessage) -> Option<Duration> {
        let plan = self.plan(&message.run_id).await.ok()?;
        let timeout = plan.app.step(&message.step_id)?.timeout_seconds();
        Some(Duration::from_secs(timeout) + self.config.visibility_margin)
    }

    /// Handles a received message as every worker does (local pollers and the Lambda
    /// functions): holds it for its step's timeout plus the margin (renewed while the
    /// handling lasts longer), then [`Runtime::handle_message`]. Acknowledging or
    /// releasing the message is the caller's.
    pub async fn handle_delivery(
        &self,
        queue: &str,
        delivery: &Delivery,
        dead_letter: bool,
    ) -> Handled {
        self.handle_held(queue, delivery, dead_letter, false).await
    }

    /// [`Runtime::handle_delivery`] of a message that may be `held` for its step's
    /// timeout already (sent received with that hold: no first renewal needed).
    async fn handle_held(
        &self,
        queue: &str,
        delivery: &Delivery,
        dead_letter: bool,
        held: bool,
    ) -> Handled {
        let hold = if dead_letter {
            None
        } else {
            self.attempt_visibility(&delivery.message).await
        };
        let work = self.handle_report(&delivery.message, delivery.receive_count, dead_letter);
        let Some(hold) = hold else {
            return work.await;
        };
        let queue_api = &self.backend.queue;
        let extend = || async {
            if let Err(e) = queue_api
                .extend_visibility(queue, &delivery.receipt, hold)
                .await
            {
                tracing::warn!(queue, error = %e, "cannot set the message's visibility; a crash is retried after the receive's");
            }
        };
        if !held {
            extend().await;
        }
        // The attempt itself ends within its timeout; what follows (recording it, inline
        // operators) is covered by renewing the hold every half margin past that, up to
        // three holds in all, so that a handler stuck for good still lets the message go.
        let margin = self.config.visibility_margin;
        let period = (margin / 2).max(Duration::from_secs(1));
        let now = tokio::time::Instant::now();
        let last_renewal = now + hold * 2;
        let mut renew =
            tokio::time::interval_at(now + hold.saturating_sub(margin) + period, period);
        tokio::pin!(work);
        loop {
            tokio::select! {
                handled = &mut work => return handled,
                at = renew.tick(), if tokio::time::Instant::now() < last_renewal => {
                    if at < last_renewal {
                        extend().await;
                        // Renewed while the attempt runs: stored now, not with its end.
                        if let Err(e) = self.backend.runs.commit_staged() {
                            tracing::warn!(queue, error = %e, "cannot renew the message's hold");
                        }
                    }
                }
            }
        }
    }

    /// Handles one step-queue (or dead-letter-queue) message: claims and executes the
    /// attempt and records its result, or marks a dead-lettered attempt failed. Never
    /// fails: infrastructure errors become a retry.
    pub async fn handle_message(
        &self,
        message: &TaskMessage,
        receive_count: u32,
        dead_letter: bool,
    ) -> Disposition {
        self.handle_report(message, receive_count, dead_letter)
            .await
            .disposition
    }

    /// Handles, in this task, every message visible now on this runtime's queues and
    /// those they queue in turn, until none is visible; each is handled `deliveries`
    /// times (more than once: duplicate deliveries) and then acknowledged. Returns the
    /// dispositions in order. What a worker pool does, with no workers: for tests and
    /// one-shot tools that drive runs step by step.
    pub async fn deliver_queued(
        &self,
        deliveries: usize,
    ) -> Result<Vec<Disposition>, RuntimeError> {
        let mut dispositions = Vec::new();
        loop {
            let mut delivered = false;
            for queue in self.queues() {
                let received = self
                    .backend
                    .queue
                    .receive(&queue, 10, VISIBILITY, Duration::ZERO)
                    .await?;
                for delivery in received {
                    delivered = true;
                    for _ in 0..deliveries.max(1) {
                        dispositions.push(
                            self.handle_message(&delivery.message, delivery.receive_count, false)
                                .await,
                        );
                    }
                    self.backend.queue.ack(&queue, &delivery.receipt).await?;
                }
            }
            if !delivered {
                return Ok(dispositions);
            }
        }
    }

    async fn handle_report(
        &self,
        message: &TaskMessage,
        receive_count: u32,
        dead_letter: bool,
    ) -> Handled {
        let started = std::time::Instant::now();
        let mut attempt = None;
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
            let processed = self.process(&message.run_id, event).await;
            if processed.is_ok() {
                attempt = self
                    .report(message, AttemptOutcome::DeadLettered, Duration::ZERO)
                    .await;
            }
            processed.map(|_| Outcome::Duplicate)
        } else {
            // The claim, the attempt and its end are one piece of work: each transition
            // starts from the run as the one before stored it.
            let mut touched = vec![message.run_id.clone()];
            let handled = match self.execute(message).await {
                Ok(Outcome::Done(events)) => {
                    let outcome = outcome_of(message, &events);
                    let mut result = Ok(Outcome::Duplicate);
                    for event in events {
                        if let Err(e) = self
                            .process_within(&message.run_id, event, &mut touched)
                            .await
                        {
                            result = Err(e);
                            break;
                        }
                    }
                    if result.is_ok() {
                        let outcome = match outcome {
                            Some(outcome) => outcome,
                            None => self.failure_outcome(message).await,
                        };
                        attempt = self.report(message, outcome, started.elapsed()).await;
                    }
                    result
                }
                other => other,
            };
            self.end_of_work(&touched);
            handled
        };
        let disposition = match outcome {
            Ok(Outcome::Busy(ms)) => Disposition::RetryAfter(Duration::from_millis(ms)),
            Ok(_) => Disposition::Ack,
            Err(RuntimeError::NotFound(_)) => Disposition::Ack,
            Err(e) => {
                tracing::error!(run = %message.run_id, step = %message.step_id, error = %e, "delivery failed; it will be retried");
                Disposition::RetryAfter(RETRY_AFTER_ERROR)
            }
        };
        Handled {
            disposition,
            attempt,
        }
    }

    /// A failed attempt's outcome once its events were applied: retried when the
    /// engine queued a later attempt of the unit, so that "retried" is the engine's own
    /// decision.
    async fn failure_outcome(&self, message: &TaskMessage) -> AttemptOutcome {
        let run = match self.copies.peek(&message.run_id) {
            Some(run) => run,
            None => match self.get_run(&message.run_id).await {
                Ok(run) => std::sync::Arc::new(run),
                Err(_) => return AttemptOutcome::Failed,
            },
        };
        let retried = run
            .step(&message.step_id)
            .and_then(|s| s.units.get(message.unit as usize))
            .is_some_and(|u| u.attempt > message.attempt);
        if retried {
            AttemptOutcome::Retried
        } else {
            AttemptOutcome::Failed
        }
    }

    async fn report(
        &self,
        message: &TaskMessage,
        outcome: AttemptOutcome,
        duration: Duration,
    ) -> Option<AttemptReport> {
        let plan = self.plan(&message.run_id).await.ok()?;
        let step_type = plan.app.step(&message.step_id)?.step_type.clone();
        Some(AttemptReport {
            step_type,
            outcome,
            duration,
        })
    }
}

/// What an executed attempt's events say of it, `None` for a failure (retried or not is
/// known once they were applied: [`Runtime::failure_outcome`]).
fn outcome_of(message: &TaskMessage, events: &[Event]) -> Option<AttemptOutcome> {
    let finished = events.iter().find(|e| {
        matches!(e, Event::Finished { step, unit, attempt, .. }
            if *step == message.step_id && *unit == message.unit && *attempt == message.attempt)
    });
    match finished {
        Some(Event::Finished {
            result: AttemptResult::Success { .. },
            ..
        }) => Some(AttemptOutcome::Succeeded),
        Some(_) => None,
        None => Some(AttemptOutcome::Waiting),
    }
}
