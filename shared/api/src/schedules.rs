//! Schedules: storing them (with their statistics), firing a tick exactly once, and the
//! scheduler loop of `sluice serve`.
//!
//! Firing a tick is [`sluice_runtime::schedule::fire`], the one path shared with the AWS
//! `start` function (the EventBridge Scheduler target): one run per tick, counted once,
//! across restarts and retried invocations.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sluice_core::model::Schedule;
use sluice_core::ports::{ScheduleStats, ScheduleStatsStore, ScheduleStore, Scheduler, StoreError};
use sluice_core::schedule::{validate_schedule, Timing};
use sluice_core::{Invalid, Issue};
use sluice_runtime::{Runtime, StartError};
use tokio::sync::{watch, Notify};

use crate::documents::ScheduleEntry;
use crate::error::ApiError;

/// Longest the loop sleeps before looking at the schedules again (so schedules written
/// by another process, e.g. the CLI on the same data directory, are picked up).
pub const RESCAN_INTERVAL: Duration = Duration::from_secs(5);

/// The schedule store, its statistics and the scheduler to tell about changes.
#[derive(Clone)]
pub struct Schedules {
    pub store: Arc<dyn ScheduleStore>,
    pub stats: Arc<dyn ScheduleStatsStore>,
    pub scheduler: Arc<dyn Scheduler>,
}

/// The listing document of a schedule (SPEC §5): the schedule with `total_runs`,
/// `last_error`, `last_run` and `next_run`.
pub fn entry(schedule: &Schedule, stats: Option<&ScheduleStats>) -> ScheduleEntry {
    ScheduleEntry::of(schedule, stats, Utc::now())
}

impl Schedules {
    /// Validates and stores a schedule. Ticks up to now never fire for a new schedule
    /// or one being enabled (no burst of missed runs). A schedule that could not start
    /// its run now is refused, as a run start would be (see [`check_can_start`]).
    pub async fn put(
        &self,
        runtime: &Runtime,
        schedule: &Schedule,
    ) -> Result<ScheduleEntry, ApiError> {
        validate_schedule(schedule)?;
        check_can_start(runtime, schedule).await?;
        let previous = self.store.get_schedule(&schedule.entry_id).await?;
        let enabling = schedule.enabled && previous.as_ref().is_none_or(|p| !p.enabled);
        if enabling
            || previous
                .as_ref()
                .is_some_and(|p| p.schedule != schedule.schedule)
        {
            self.stats
                .claim_tick(&schedule.entry_id, Utc::now())
                .await?;
        }
        self.store.put_schedule(schedule).await?;
        self.scheduler.upsert(schedule).await?;
        let stats = self.stats.get_stats(&schedule.entry_id).await?;
        Ok(entry(schedule, stats.as_ref()))
    }

    pub async fn get(&self, entry_id: &str) -> Result<ScheduleEntry, ApiError> {
        let schedule = self
            .store
            .get_schedule(entry_id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("schedule \"{entry_id}\" not found")))?;
        let stats = self.stats.get_stats(entry_id).await?;
        Ok(entry(&schedule, stats.as_ref()))
    }

    pub async fn list(&self) -> Result<Vec<ScheduleEntry>, ApiError> {
        let stats = self.stats.list_stats().await?;
        Ok(self
            .store
            .list_schedules()
            .await?
            .iter()
            .map(|s| entry(s, stats.iter().find(|st| st.entry_id == s.entry_id)))
            .collect())
    }

    pub async fn delete(&self, entry_id: &str) -> Result<(), ApiError> {
        if !self.store.delete_schedule(entry_id).await? {
            return Err(ApiError::not_found(format!(
                "schedule \"{entry_id}\" not found"
            )));
        }
        self.scheduler.remove(entry_id).await?;
        self.stats.delete_stats(entry_id).await?;
        Ok(())
    }
}

/// Checks that `schedule` could start its run now, with the checks of a run start
/// ([`Runtime::check_start`]): the application exists, the params name its app
/// variables with values of their types, the configuration exists and holds what the
/// application references, every required variable has a value. Problems are 422s
/// whose fields are paths into the schedule document (`params.NAME`,
/// `params.configuration`).
pub async fn check_can_start(runtime: &Runtime, schedule: &Schedule) -> Result<(), ApiError> {
    let app = runtime
        .backend()
        .definitions
        .get_application(&schedule.application_id)
        .await?
        .ok_or_else(|| {
            invalid(
                "application_id",
                format!("application \"{}\" not found", schedule.application_id),
            )
        })?;
    match runtime.check_start(&app, &schedule.params, None).await {
        Ok(_) => Ok(()),
        Err(StartError::Invalid(e)) => {
            // A required variable without a value is a param the schedule must give.
            let issues = e
                .issues
                .into_iter()
                .map(|i| match i.path.strip_prefix("vars.") {
                    Some(name) => Issue::new(format!("params.{name}"), i.message),
                    None => i,
                })
                .collect();
            Err(ApiError::invalid(&Invalid { issues }))
        }
        // The only thing `check_start` looks up is the configuration.
        Err(StartError::NotFound(message)) => Err(invalid("params.configuration", message)),
        Err(StartError::Runtime(e)) => Err(e.into()),
        // `check_start` queues nothing; only starting a run is refused for a full queue.
        Err(e @ StartError::Overloaded { .. }) => Err(e.into()),
    }
}

/// Deletes application `name`, refusing (409, naming them) while schedules or other
/// applications (`trigger_application` targets, `on_failure` / `on_warning`) name it,
/// since each of their runs would then be refused; `force` deletes it anyway. `false`
/// when there was no such application. One implementation for the API and the CLI.
pub async fn delete_application(
    runtime: &Runtime,
    schedules: &dyn ScheduleStore,
    name: &str,
    force: bool,
) -> Result<bool, ApiError> {
    runtime
        .refuse_pack_owned(sluice_core::plan::DocumentKind::Application, name)
        .await?;
    let definitions = &runtime.backend().definitions;
    if !force {
        let mut referrers: Vec<String> = schedules
            .list_schedules()
            .await?
            .iter()
            .filter(|s| s.application_id == name)
            .map(|s| format!("schedule \"{}\"", s.entry_id))
            .collect();
        for app in definitions.list_applications().await? {
            if app.name == name {
                continue;
            }
            for (field, _) in app
                .started_applications()
                .into_iter()
                .filter(|(_, target)| *target == name)
            {
                referrers.push(format!("application \"{}\" ({field})", app.name));
            }
        }
        if !referrers.is_empty() && definitions.get_application(name).await?.is_some() {
            return Err(ApiError::conflict(format!(
                "application \"{name}\" is used by {}; change or delete those first, or force the delete",
                referrers.join(", ")
            )));
        }
    }
    Ok(definitions.delete_application(name).await?)
}

fn invalid(field: &str, message: String) -> ApiError {
    ApiError::invalid(&Invalid::one(Issue::new(field, message)))
}

pub use sluice_runtime::schedule::{fire, tick_run_id, FireError, Fired};

/// The embedded [`Scheduler`]: schedules live in the store, so a change only wakes the
/// loop up to look again.
#[derive(Default, Clone)]
pub struct LocalScheduler {
    pub wake: Arc<Notify>,
}

#[async_trait]
impl Scheduler for LocalScheduler {
    async fn upsert(&self, _schedule: &Schedule) -> Result<(), StoreError> {
        self.wake.notify_one();
        Ok(())
    }

    async fn remove(&self, _entry_id: &str) -> Result<(), StoreError> {
        self.wake.notify_one();
        Ok(())
    }
}

/// One pass: fires every enabled schedule's latest due tick; returns the earliest next
/// tick of all schedules.
pub async fn tick_once(
    runtime: &Runtime,
    store: &dyn ScheduleStore,
    stats: &dyn ScheduleStatsStore,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    let mut earliest: Option<DateTime<Utc>> = None;
    for schedule in store.list_schedules().await? {
        if !schedule.enabled {
            continue;
        }
        let timing: Timing = match validate_schedule(&schedule) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(entry_id = %schedule.entry_id, error = %e, "invalid schedule skipped");
                continue;
            }
        };
        let last = stats
            .get_stats(&schedule.entry_id)
            .await?
            .and_then(|s| s.last_tick);
        let Some(last) = last else {
            // First sight of this schedule (e.g. written by another process): ticks up
            // to now are not due.
            stats.claim_tick(&schedule.entry_id, now).await?;
            if let Some(next) = timing.next_after(now) {
                earliest = Some(earliest.map_or(next, |e| e.min(next)));
            }
            continue;
        };
        if let Some(due) = timing.latest_due(last, now) {
            match fire(runtime, stats, &schedule, due).await {
                Ok(Fired::Started(run)) => {
                    tracing::info!(entry_id = %schedule.entry_id, run = %run.id, tick = %due, "schedule fired")
                }
                Ok(_) => {}
                Err(FireError::Store(e)) => return Err(e),
                Err(e) => tracing::warn!(error = %e, "schedule tick not fired"),
            }
        }
        if let Some(next) = timing.next_after(now.max(last)) {
            earliest = Some(earliest.map_or(next, |e| e.min(next)));
        }
    }
    Ok(earliest)
}

/// The scheduler loop of `sluice serve`: sleeps until the next tick (at most
/// [`RESCAN_INTERVAL`]), or until a schedule changes, then fires what is due. Stops when
/// `stop` turns true.
pub async fn run_loop(
    runtime: Arc<Runtime>,
    store: Arc<dyn ScheduleStore>,
    stats: Arc<dyn ScheduleStatsStore>,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() {
            break;
        }
        let now = Utc::now();
        let next = match tick_once(&runtime, store.as_ref(), stats.as_ref(), now).await {
            Ok(next) => next,
            Err(e) => {
                tracing::error!(error = %e, "scheduler pass failed; retrying");
                Some(now + chrono::Duration::seconds(1))
            }
        };
        let sleep = match next {
            None => RESCAN_INTERVAL,
            Some(t) => (t - Utc::now()).to_std().unwrap_or(Duration::ZERO),
        }
        .min(RESCAN_INTERVAL)
        // Never spin: a tick "now" is fired on the next pass, a few ms later.
        .max(Duration::from_millis(20));
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = wake.notified() => {}
            _ = stop.changed() => break,
        }
    }
}
