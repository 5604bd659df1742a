//! The scheduler of `sluice serve` (`schedules::tick_once`, the pass its loop runs) on
//! the embedded adapters, driven by a fake clock: a tick fires when due and only then,
//! once across passes and restarts, missed ticks do not burst, a disabled schedule stays
//! quiet. `tests/e2e/serve_api.rs` checks the loop is wired into `sluice serve`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{json, Value};
use sluice_api::schedules::{tick_once, tick_run_id};
use sluice_core::clock::{Clock, ManualClock};
use sluice_core::model::{Application, RunState, Schedule};
use sluice_core::ports::{Queue, ScheduleStatsStore};
use sluice_core::step::{StepContext, StepError, StepOutput, StepRegistry, StepType};
use sluice_embedded::EmbeddedStore;
use sluice_runtime::{Disposition, Runtime, RuntimeConfig, VISIBILITY};

struct Noop;

#[async_trait]
impl StepType for Noop {
    fn name(&self) -> &str {
        "noop"
    }
    fn description(&self) -> &str {
        "returns its value"
    }
    fn parameter_schema(&self) -> Value {
        json!({"type": "object"})
    }
    async fn execute(&self, params: Value, _: &StepContext) -> Result<StepOutput, StepError> {
        Ok(StepOutput::value(params["value"].clone()))
    }
}

/// A runtime of the data directory whose clock is `clock` (a new one is a restart).
fn runtime(store: &EmbeddedStore, clock: &Arc<ManualClock>) -> Arc<Runtime> {
    let backend = store.backend();
    let mut registry = StepRegistry::new();
    registry.register(Noop);
    let clock = clock.clone();
    let config = RuntimeConfig {
        clock: Arc::new(move || clock.now()),
        ..RuntimeConfig::default()
    };
    Runtime::new(backend, registry, config)
}

fn at(hour: u32, minute: u32, second: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, hour, minute, second)
        .single()
        .unwrap()
}

async fn total_runs(stats: &dyn ScheduleStatsStore) -> u64 {
    stats
        .get_stats("minutely")
        .await
        .unwrap()
        .map_or(0, |s| s.total_runs)
}

/// Delivers the queued messages until the run settles.
async fn run_queued(runtime: &Runtime, store: &EmbeddedStore) {
    let queue = store.queue();
    for _ in 0..10 {
        let got = queue
            .receive("steps", 10, VISIBILITY, Duration::ZERO)
            .await
            .unwrap();
        if got.is_empty() {
            return;
        }
        for d in got {
            let handled = runtime.handle_message(&d.message, 1, false).await;
            assert_eq!(handled, Disposition::Ack);
            queue.ack("steps", &d.receipt).await.unwrap();
        }
    }
}

#[tokio::test]
async fn ticks_fire_when_due_once_across_restarts_without_bursts() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(at(10, 0, 20));
    let store = EmbeddedStore::open(dir.path())
        .unwrap()
        .with_clock(clock.clone());
    let schedules = store.schedules();
    let stats = store.schedule_stats();
    let first = runtime(&store, &clock);
    let app: Application = serde_json::from_value(json!({"name": "tick", "author": "tests",
        "steps": [{"id": "A", "type": "noop", "parameters": {"value": "${run.id}"}}]}))
    .unwrap();
    first.put_application(&app).await.unwrap();
    let mut schedule: Schedule = serde_json::from_value(json!({
        "application_id": "tick", "entry_id": "minutely", "params": {"queue": "sched"},
        "schedule": {"schedule_type": "crontab", "schedule_info": {"minute": "*"}}}))
    .unwrap();
    schedules.put_schedule(&schedule).await.unwrap();
    let pass = |runtime: Arc<Runtime>| {
        let (schedules, stats, clock) = (schedules.clone(), stats.clone(), clock.clone());
        async move {
            tick_once(&runtime, schedules.as_ref(), stats.as_ref(), clock.now())
                .await
                .unwrap()
        }
    };

    // First sight: ticks up to now are not due; the next is the coming minute.
    assert_eq!(pass(first.clone()).await, Some(at(10, 1, 0)));
    clock.set(at(10, 0, 59));
    assert_eq!(pass(first.clone()).await, Some(at(10, 1, 0)));
    assert_eq!(total_runs(stats.as_ref()).await, 0, "not due yet");

    // Due: fired, counted, and the run carries the schedule's params.
    clock.set(at(10, 1, 0) + chrono::Duration::milliseconds(250));
    assert_eq!(pass(first.clone()).await, Some(at(10, 2, 0)));
    let fired = stats.get_stats("minutely").await.unwrap().unwrap();
    assert_eq!(fired.total_runs, 1);
    let last = fired.last_run.unwrap();
    assert_eq!(last.run_id, tick_run_id("minutely", at(10, 1, 0)));
    assert_eq!(last.start_time, clock.now(), "started when the pass ran");
    run_queued(&first, &store).await;
    let run = first.get_run(&last.run_id).await.unwrap();
    assert_eq!(
        (run.state, run.queue.as_deref()),
        (RunState::Success, Some("sched"))
    );

    // Never twice: another pass, and a restarted process, at the same moment.
    pass(first.clone()).await;
    let restarted = runtime(&store, &clock);
    pass(restarted.clone()).await;
    assert_eq!(total_runs(stats.as_ref()).await, 1);

    // Down for four minutes: only the latest missed tick fires (no burst).
    clock.set(at(10, 5, 30));
    assert_eq!(pass(restarted.clone()).await, Some(at(10, 6, 0)));
    let caught_up = stats.get_stats("minutely").await.unwrap().unwrap();
    assert_eq!(caught_up.total_runs, 2);
    assert_eq!(
        caught_up.last_run.unwrap().run_id,
        tick_run_id("minutely", at(10, 5, 0))
    );
    run_queued(&restarted, &store).await;

    // Disabled: quiet, and nothing is due for it.
    schedule.enabled = false;
    schedules.put_schedule(&schedule).await.unwrap();
    clock.set(at(10, 7, 1));
    assert_eq!(pass(restarted.clone()).await, None);
    assert_eq!(total_runs(stats.as_ref()).await, 2);
    assert_eq!(
        restarted
            .backend()
            .runs
            .list_runs(&Default::default())
            .await
            .unwrap()
            .len(),
        2,
        "one run per counted tick"
    );
}
