//! The Lambda glue against moto (`scripts/test.sh` starts it and exports
//! `AWS_ENDPOINT_URL`): SQS batches as the event source mapping delivers them, the
//! crash retry of an attempt, and the `start` function's handler.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use chrono::Utc;
use serde_json::{json, Value};
use sluice_aws::{AwsEnvironment, AwsSettings};
use sluice_core::model::{Application, RunState, Schedule};
use sluice_core::ports::{
    DefinitionStore, Delivery, Queue, RunQuery, RunStore, ScheduleStore, TaskMessage,
};
use sluice_core::step::{StepContext, StepError, StepOutput, StepRegistry, StepType};
use sluice_lambda::queue::handle_batch_measured;
use sluice_lambda::start::{handle_start, Skipped, StartEvent};
use sluice_runtime::schedule::tick_run_id;
use sluice_runtime::{Runtime, RuntimeConfig};
use tokio::sync::Notify;

/// A fresh deployment with its own prefix on the moto server, with the queues of
/// `step_types`.
async fn env_with(step_types: &[&str]) -> AwsEnvironment {
    assert!(
        std::env::var("AWS_ENDPOINT_URL").is_ok(),
        "AWS_ENDPOINT_URL is not set: these tests need a moto server (scripts/test.sh starts one)"
    );
    let prefix = format!("l{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    let env = AwsEnvironment::load(AwsSettings::with_prefix(&prefix)).await;
    let types: Vec<String> = step_types.iter().map(|t| t.to_string()).collect();
    sluice_aws::provision::provision(&env.clients, &env.settings, &types)
        .await
        .unwrap();
    env
}

async fn env() -> AwsEnvironment {
    env_with(&["echo"]).await
}

fn app() -> Application {
    serde_json::from_value(json!({"name": "a", "author": "me", "steps": [
        {"id": "A", "type": "echo", "parameters": {"value": 1}}]}))
    .unwrap()
}

/// An SQS record as the event source mapping hands it to the function.
fn sqs_record(delivery: &Delivery, id: &str, queue: &str) -> SqsMessage {
    let mut m = SqsMessage::default();
    m.message_id = Some(id.into());
    m.receipt_handle = Some(delivery.receipt.clone());
    m.body = Some(serde_json::to_string(&delivery.message).unwrap());
    m.event_source_arn = Some(format!("arn:aws:sqs:us-east-1:123456789012:{queue}"));
    m.attributes.insert(
        "ApproximateReceiveCount".into(),
        delivery.receive_count.to_string(),
    );
    m
}

#[tokio::test]
async fn lambda_batches_duplicates_and_dead_letters() {
    use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
    let env = env().await;
    let runtime = env.runtime(sluice_steps::builtin_registry());
    let app: Application = serde_json::from_value(json!({"name": "dup", "author": "me", "steps": [
        {"id": "A", "type": "echo", "parameters": {"value": 1, "log": "A executes"}},
        {"id": "B", "type": "echo", "depends_on": ["A"], "parameters": {"value": 2}}]}))
    .unwrap();
    env.store.put_application(&app).await.unwrap();
    let run = runtime
        .start(sluice_runtime::StartRequest {
            application: "dup".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let queue = env.settings.queue_for("echo");
    let arn = format!("arn:aws:sqs:us-east-1:123456789012:{queue}");
    let record = |body: &TaskMessage, id: &str, arn: &str| {
        let mut m = SqsMessage::default();
        m.message_id = Some(id.into());
        m.body = Some(serde_json::to_string(body).unwrap());
        m.event_source_arn = Some(arn.into());
        m.attributes
            .insert("ApproximateReceiveCount".into(), "1".into());
        m
    };
    let a = TaskMessage {
        run_id: run.id.clone(),
        step_id: "A".into(),
        unit: 0,
        attempt: 1,
        lane: None,
    };
    // The same message twice in one batch, as at-least-once delivery allows.
    let mut event = SqsEvent::default();
    event.records = vec![record(&a, "m1", &arn), record(&a, "m2", &arn)];
    let (response, metrics) =
        handle_batch_measured(runtime.clone(), env.queue.clone(), event).await;
    // One attempt ran and succeeded; the duplicate ran nothing.
    let line: serde_json::Value = serde_json::from_str(&metrics.lines(0).concat()).unwrap();
    assert_eq!(
        (
            line["StepType"].clone(),
            line["started"].clone(),
            line["succeeded"].clone()
        ),
        (json!("echo"), json!(1), json!(1))
    );
    let after = runtime.get_run(&run.id).await.unwrap();
    let step_a = after.step("A").unwrap();
    assert_eq!(step_a.state, sluice_core::model::StepState::Success);
    assert_eq!(step_a.attempts, 1, "ran once");
    // A busy duplicate may be asked to retry later; it never runs again.
    assert!(response.batch_item_failures.len() <= 1);
    let logs = runtime.logs(&after, 0, 0).await.unwrap();
    for message in ["Start A", "A executes"] {
        assert_eq!(
            logs.iter().filter(|(_, e)| e.message == message).count(),
            1,
            "one execution logged: {logs:?}"
        );
    }

    // B's message is dead-lettered: B fails, the run ends in failure.
    let b = TaskMessage {
        run_id: run.id.clone(),
        step_id: "B".into(),
        unit: 0,
        attempt: 1,
        lane: None,
    };
    let mut event = SqsEvent::default();
    event.records = vec![record(&b, "m3", &format!("{arn}-dlq"))];
    let (response, metrics) =
        handle_batch_measured(runtime.clone(), env.queue.clone(), event).await;
    assert!(response.batch_item_failures.is_empty());
    let line: serde_json::Value = serde_json::from_str(&metrics.lines(0).concat()).unwrap();
    assert_eq!(
        (line["dead_lettered"].clone(), line["started"].clone()),
        (json!(1), json!(0))
    );
    let ended = runtime.get_run(&run.id).await.unwrap();
    assert_eq!(ended.state, sluice_core::model::RunState::Failure);
    let error = ended.step("B").unwrap().error.clone().unwrap();
    assert!(error.contains("dead-lettered"), "{error}");
}

/// A step type whose first attempt hangs (its worker is then killed mid-attempt) and
/// whose second succeeds.
struct DiesOnce {
    calls: AtomicU32,
    started: Notify,
}

#[async_trait]
impl StepType for DiesOnce {
    fn name(&self) -> &str {
        "fragile"
    }
    fn description(&self) -> &str {
        "hangs the first time"
    }
    fn parameter_schema(&self) -> Value {
        json!({"type": "object"})
    }
    async fn execute(&self, _: Value, _: &StepContext) -> Result<StepOutput, StepError> {
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            self.started.notify_one();
            std::future::pending::<()>().await;
        }
        Ok(StepOutput::value(json!("second time lucky")))
    }
}

/// Forwards to a shared [`DiesOnce`], so that both "containers" count its calls.
struct Shared(Arc<DiesOnce>);

#[async_trait]
impl StepType for Shared {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn description(&self) -> &str {
        self.0.description()
    }
    fn parameter_schema(&self) -> Value {
        self.0.parameter_schema()
    }
    async fn execute(&self, p: Value, ctx: &StepContext) -> Result<StepOutput, StepError> {
        self.0.execute(p, ctx).await
    }
}

/// A function container dies mid-attempt (its handler is aborted after the claim, as
/// an OOM or a function timeout would end it): the message comes back after the step's
/// timeout plus the visibility margin, not after the queue's visibility timeout, and
/// the next container's claim is granted and finishes the step. The margin is 2 s here
/// (45 s by default); the engine's clock of the second container is set past the lease
/// grace (30 s) instead of sleeping through it, as the default margin would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_attempt_is_retried_after_its_timeout_plus_the_margin() {
    const TIMEOUT_SECONDS: u64 = 1;
    const MARGIN: Duration = Duration::from_secs(2);
    let env = env_with(&["fragile"]).await;
    let step = Arc::new(DiesOnce {
        calls: AtomicU32::new(0),
        started: Notify::new(),
    });
    let runtime_with = |clock_ahead: chrono::Duration| {
        let mut registry = StepRegistry::new();
        registry.register(Shared(step.clone()));
        let config = RuntimeConfig {
            visibility_margin: MARGIN,
            clock: Arc::new(move || Utc::now() + clock_ahead),
            ..env.runtime_config()
        };
        Runtime::new(env.backend(), registry, config)
    };
    let first = runtime_with(chrono::Duration::zero());
    let app: Application =
        serde_json::from_value(json!({"name": "crash", "author": "me", "steps": [
        {"id": "F", "type": "fragile", "parameters": {}, "timeout_seconds": TIMEOUT_SECONDS,
         "retry": {"max_attempts": 1}}]}))
        .unwrap();
    env.store.put_application(&app).await.unwrap();
    let run = first
        .start(sluice_runtime::StartRequest {
            application: "crash".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let queue = env.settings.queue_for("fragile");
    // Received as the event source mapping does, with the queue's long visibility.
    let long_visibility = Duration::from_secs(5400);
    let delivery = env
        .queue
        .receive(&queue, 1, long_visibility, Duration::from_secs(5))
        .await
        .unwrap()
        .pop()
        .expect("the step's message");
    let received = Instant::now();
    let mut event = SqsEvent::default();
    event.records = vec![sqs_record(&delivery, "m1", &queue)];
    let handler = tokio::spawn(handle_batch_measured(
        first.clone(),
        env.queue.clone(),
        event,
    ));
    step.started.notified().await;
    handler.abort();
    assert!(
        handler.await.unwrap_err().is_cancelled(),
        "the container died"
    );
    let claimed = env.store.get_run(&run.id).await.unwrap().unwrap();
    assert_eq!(claimed.step("F").unwrap().state.as_str(), "running");

    // The next receive gets it back once timeout + margin have passed.
    let redelivered = loop {
        let got = env
            .queue
            .receive(&queue, 1, long_visibility, Duration::from_secs(20))
            .await
            .unwrap();
        if let Some(d) = got.into_iter().next() {
            break d;
        }
        assert!(
            received.elapsed() < Duration::from_secs(120),
            "never redelivered"
        );
    };
    let after = received.elapsed();
    let hold = Duration::from_secs(TIMEOUT_SECONDS) + MARGIN;
    println!(
        "crashed attempt redelivered after {:.2} s (timeout + margin = {} s)",
        after.as_secs_f64(),
        hold.as_secs()
    );
    // SQS counts whole seconds from when the handler set the visibility.
    assert!(after >= hold - Duration::from_millis(500), "{after:?}");
    assert!(after < long_visibility / 100, "{after:?}");
    assert_eq!(redelivered.receive_count, 2);

    let second = runtime_with(chrono::Duration::milliseconds(
        sluice_core::engine::LEASE_GRACE_MS,
    ));
    let mut event = SqsEvent::default();
    event.records = vec![sqs_record(&redelivered, "m1", &queue)];
    let (response, metrics) = handle_batch_measured(second.clone(), env.queue.clone(), event).await;
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    let done = second.get_run(&run.id).await.unwrap();
    assert_eq!(done.state, RunState::Success);
    assert_eq!(
        second.read_output(&done, "F").await.unwrap(),
        json!("second time lucky")
    );
    assert_eq!(step.calls.load(Ordering::SeqCst), 2);
    let line: Value = serde_json::from_str(&metrics.lines(0).concat()).unwrap();
    assert_eq!(line["succeeded"], 1);
}

fn nightly(enabled: bool) -> Schedule {
    serde_json::from_value(json!({
        "application_id": "a", "entry_id": "nightly", "enabled": enabled,
        "schedule": {"schedule_type": "crontab", "schedule_info": {"minute": "0", "hour": "2"}}}))
    .unwrap()
}

/// The `start` function as EventBridge Scheduler invokes it: the same tick twice (a
/// retried invocation) and late (after a later tick was fired) starts one run, counted
/// once; a disabled schedule starts nothing.
#[tokio::test]
async fn start_handler_fires_a_tick_once_when_invoked_twice_and_late() {
    let env = env().await;
    let runtime = env.runtime(sluice_steps::catalogue_registry());
    env.store.put_application(&app()).await.unwrap();
    env.store.put_schedule(&nightly(true)).await.unwrap();
    let (schedules, stats) = (env.schedules(), env.schedule_stats());
    let at = |t: &str| chrono::DateTime::parse_from_rfc3339(t).unwrap().to_utc();
    let (tick, next) = (at("2026-01-02T02:00:00Z"), at("2026-01-03T02:00:00Z"));
    let start = |tick| {
        let (runtime, schedules, stats) = (runtime.clone(), schedules.clone(), stats.clone());
        async move {
            let event = StartEvent {
                entry_id: "nightly".into(),
                scheduled_time: Some(tick),
            };
            handle_start(&runtime, schedules.as_ref(), stats.as_ref(), &event)
                .await
                .unwrap()
        }
    };

    let first = start(tick).await;
    assert_eq!(
        first.run_id.as_deref(),
        Some(tick_run_id("nightly", tick).as_str())
    );
    assert_eq!(first.skipped, None);
    assert_eq!(start(tick).await.skipped, Some(Skipped::AlreadyHandled));
    assert!(start(next).await.run_id.is_some());
    assert_eq!(
        start(tick).await.skipped,
        Some(Skipped::AlreadyHandled),
        "late"
    );

    let runs = env
        .store
        .list_runs(&RunQuery {
            application: Some("a".into()),
            limit: 100,
            ..RunQuery::default()
        })
        .await
        .unwrap();
    let mut ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
    ids.sort();
    let mut expected = vec![tick_run_id("nightly", tick), tick_run_id("nightly", next)];
    expected.sort();
    assert_eq!(ids, expected, "one run per tick");
    let s = stats.get_stats("nightly").await.unwrap().unwrap();
    assert_eq!(s.total_runs, 2);
    assert_eq!(s.last_tick, Some(next));
    let last = s.last_run.unwrap();
    let newest = runs.iter().find(|r| r.id == last.run_id).unwrap();
    // The run's own start time (the stats keep milliseconds).
    let apart = last.start_time - newest.created_at;
    assert!(apart.num_milliseconds().abs() < 1, "{apart}");

    // Disabled: nothing starts, and the tick stays unclaimed.
    env.store.put_schedule(&nightly(false)).await.unwrap();
    let later = at("2026-01-04T02:00:00Z");
    assert_eq!(start(later).await.skipped, Some(Skipped::Disabled));
    let s = stats.get_stats("nightly").await.unwrap().unwrap();
    assert_eq!((s.total_runs, s.last_tick), (2, Some(next)));
    // Gone: nothing starts.
    env.store.delete_schedule("nightly").await.unwrap();
    assert_eq!(start(later).await.skipped, Some(Skipped::Missing));
}

/// Panics on the record whose parameters say so.
struct Panicky;

#[async_trait]
impl StepType for Panicky {
    fn name(&self) -> &str {
        "panicky"
    }
    fn description(&self) -> &str {
        "panics when told to"
    }
    fn parameter_schema(&self) -> Value {
        json!({"type": "object"})
    }
    async fn execute(&self, params: Value, _: &StepContext) -> Result<StepOutput, StepError> {
        if params["panic"] == json!(true) {
            panic!("a step type's bug");
        }
        Ok(StepOutput::value(json!("fine")))
    }
}

/// A record whose handling panics is reported for retry (a record left out of the
/// response would be deleted as done); the other records of its batch finish.
#[tokio::test]
async fn a_record_that_panics_is_retried_and_its_batch_mates_finish() {
    let env = env_with(&["panicky"]).await;
    let mut registry = StepRegistry::new();
    registry.register(Panicky);
    let runtime = env.runtime(registry);
    let queue = env.settings.queue_for("panicky");
    let mut records = Vec::new();
    let mut runs = Vec::new();
    for (name, panics) in [("bad", true), ("good", false)] {
        let app: Application =
            serde_json::from_value(json!({"name": name, "author": "me", "steps": [
            {"id": "P", "type": "panicky", "parameters": {"panic": panics}}]}))
            .unwrap();
        env.store.put_application(&app).await.unwrap();
        let run = runtime
            .start(sluice_runtime::StartRequest {
                application: name.into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let delivery = env
            .queue
            .receive(&queue, 1, Duration::from_secs(60), Duration::from_secs(5))
            .await
            .unwrap()
            .pop()
            .unwrap();
        records.push(sqs_record(&delivery, &format!("m-{name}"), &queue));
        runs.push(run.id);
    }
    let mut event = SqsEvent::default();
    event.records = records;
    let (response, _) = handle_batch_measured(runtime.clone(), env.queue.clone(), event).await;
    let retried: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(retried, ["m-bad"]);
    let good = runtime.get_run(&runs[1]).await.unwrap();
    assert_eq!(good.state, RunState::Success);
}
