//! Firing one tick of a schedule: the one path for `sluice serve`'s scheduler loop and
//! the AWS `start` function (the EventBridge Scheduler target).
//!
//! Firing tick `T` of schedule `E` starts a run whose id is derived from `(E, T)`
//! ([`tick_run_id`]), so starting again is a no-op, then claims `T` with a conditional
//! write and counts the run only if the claim succeeds. A crash anywhere in between
//! repeats the same steps with the same id: one run per tick, counted once, across
//! restarts. A tick at or before the schedule's last handled tick (a retried or late
//! invocation, a tick before the schedule was enabled) and a disabled schedule start
//! nothing.
//!
//! A tick whose run cannot start (the application was deleted or changed, its
//! configuration is gone, a required variable lost its value) is never silent: the
//! reason and time become the schedule's `last_error` (shown by `GET /schedule` and
//! `sluice schedules list|get`) until a later tick starts a run.

use chrono::{DateTime, Utc};
use sluice_core::model::{deterministic_run_id, Run, Schedule};
use sluice_core::ports::{
    ScheduleError, ScheduleStatsStore, ScheduleStore, ScheduledRun, StoreError,
};
use sluice_core::task::rfc3339;

use crate::create::{StartError, StartRequest};
use crate::runtime::Runtime;

/// The run id of a tick: the same every time for the same schedule and tick.
pub fn tick_run_id(entry_id: &str, tick: DateTime<Utc>) -> String {
    deterministic_run_id(tick, &format!("schedule/{entry_id}/{}", rfc3339(&tick)))
}

/// What firing a tick did.
#[derive(Debug, Clone, PartialEq)]
pub enum Fired {
    /// The tick's run was started (or found, after a crash) and counted now.
    Started(Box<Run>),
    /// The tick was handled before (fired, or at or before the schedule's last handled
    /// tick): nothing started.
    AlreadyHandled,
    /// The schedule is disabled: nothing started, the tick is left unclaimed.
    Disabled,
    /// No schedule with that entry id.
    Missing,
}

/// Why a tick could not be fired.
#[derive(Debug, thiserror::Error)]
pub enum FireError {
    /// The run was refused (application gone, bad params): the tick is spent.
    #[error("schedule {entry_id}: the run was refused: {reason}")]
    Refused { entry_id: String, reason: String },
    /// Infrastructure: retry the tick later.
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("schedule {entry_id}: {reason}")]
    Runtime { entry_id: String, reason: String },
}

/// Fires tick `tick` of `schedule` (see the module doc).
pub async fn fire(
    runtime: &Runtime,
    stats: &dyn ScheduleStatsStore,
    schedule: &Schedule,
    tick: DateTime<Utc>,
) -> Result<Fired, FireError> {
    let entry_id = &schedule.entry_id;
    if !schedule.enabled {
        return Ok(Fired::Disabled);
    }
    if let Some(s) = stats.get_stats(entry_id).await? {
        if s.last_tick.is_some_and(|t| t >= tick) {
            return Ok(Fired::AlreadyHandled);
        }
    }
    let started = runtime
        .start(StartRequest {
            application: schedule.application_id.clone(),
            params: schedule.params.clone(),
            run_id: Some(tick_run_id(entry_id, tick)),
            ..StartRequest::default()
        })
        .await;
    let record_error = |message: String| async move {
        let error = ScheduleError {
            message,
            time: (runtime.config.clock)(),
        };
        stats.record_error(entry_id, &error).await
    };
    let run = match started {
        Ok(run) => run,
        Err(StartError::Runtime(e)) => {
            // Not spent: the tick is retried. Shown meanwhile, and logged if even that fails.
            let reason = e.to_string();
            if let Err(e) = record_error(reason.clone()).await {
                tracing::warn!(%entry_id, error = %e, "cannot record the schedule's error");
            }
            return Err(FireError::Runtime {
                entry_id: entry_id.clone(),
                reason,
            });
        }
        Err(refusal) => {
            // A refused run would be refused again: the tick is spent, and recorded.
            let reason = refusal.to_string();
            if stats.claim_tick(entry_id, tick).await? {
                record_error(reason.clone()).await?;
            }
            return Err(FireError::Refused {
                entry_id: entry_id.clone(),
                reason,
            });
        }
    };
    if !stats.claim_tick(entry_id, tick).await? {
        return Ok(Fired::AlreadyHandled);
    }
    stats
        .record_run(
            entry_id,
            &ScheduledRun {
                run_id: run.id.clone(),
                // When the run was created: a repeat after a crash keeps the first time.
                start_time: run.created_at,
            },
        )
        .await?;
    Ok(Fired::Started(Box::new(run)))
}

/// [`fire`] for a schedule known by its entry id (the `start` function's event).
pub async fn fire_entry(
    runtime: &Runtime,
    schedules: &dyn ScheduleStore,
    stats: &dyn ScheduleStatsStore,
    entry_id: &str,
    tick: DateTime<Utc>,
) -> Result<Fired, FireError> {
    match schedules.get_schedule(entry_id).await? {
        Some(schedule) => fire(runtime, stats, &schedule, tick).await,
        None => Ok(Fired::Missing),
    }
}
