//! The crash retry on the embedded queue, as on SQS (`shared/lambda/tests/moto.rs`): a
//! worker that dies mid-attempt leaves its message held for the step's timeout plus the
//! visibility margin only; then the next worker's claim is granted and the step ends.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use serde_json::{json, Value};
use sluice_core::model::{Application, RunState};
use sluice_core::ports::Queue;
use sluice_core::step::{StepContext, StepError, StepOutput, StepRegistry, StepType};
use sluice_embedded::EmbeddedStore;
use sluice_runtime::{AttemptOutcome, Runtime, RuntimeConfig, StartRequest, VISIBILITY};
use tokio::sync::Notify;

/// Hangs on its first execution, succeeds on the next.
#[derive(Clone, Default)]
struct DiesOnce {
    calls: Arc<AtomicU32>,
    started: Arc<Notify>,
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

const TIMEOUT_SECONDS: u64 = 1;
const MARGIN: Duration = Duration::from_secs(1);

fn runtime(store: &EmbeddedStore, step: &DiesOnce, clock_ahead: chrono::Duration) -> Arc<Runtime> {
    let backend = store.backend();
    let mut registry = StepRegistry::new();
    registry.register(step.clone());
    let config = RuntimeConfig {
        visibility_margin: MARGIN,
        clock: Arc::new(move || Utc::now() + clock_ahead),
        ..RuntimeConfig::default()
    };
    Runtime::new(backend, registry, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_attempt_is_retried_after_its_timeout_plus_the_margin() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let step = DiesOnce::default();
    let first = runtime(&store, &step, chrono::Duration::zero());
    let app: Application =
        serde_json::from_value(json!({"name": "crash", "author": "me", "steps": [
        {"id": "F", "type": "fragile", "parameters": {}, "timeout_seconds": TIMEOUT_SECONDS,
         "retry": {"max_attempts": 1}}]}))
        .unwrap();
    first.put_application(&app).await.unwrap();
    let run = first
        .start(StartRequest {
            application: "crash".into(),
            ..StartRequest::default()
        })
        .await
        .unwrap();
    let queue = store.queue();
    let delivery = queue
        .receive("steps", 1, VISIBILITY, Duration::from_secs(5))
        .await
        .unwrap()
        .pop()
        .expect("the step's message");
    let received = Instant::now();
    let worker = {
        let (first, delivery) = (first.clone(), delivery.clone());
        tokio::spawn(async move { first.handle_delivery("steps", &delivery, false).await })
    };
    step.started.notified().await;
    worker.abort();
    assert!(worker.await.unwrap_err().is_cancelled(), "the worker died");

    let redelivered = queue
        .receive("steps", 1, VISIBILITY, Duration::from_secs(30))
        .await
        .unwrap()
        .pop()
        .expect("redelivered");
    let after = received.elapsed();
    let hold = Duration::from_secs(TIMEOUT_SECONDS) + MARGIN;
    println!(
        "embedded: crashed attempt redelivered after {:.2} s (timeout + margin = {} s)",
        after.as_secs_f64(),
        hold.as_secs()
    );
    assert!(after >= hold - Duration::from_millis(100), "{after:?}");
    assert!(after < VISIBILITY / 10, "{after:?}");
    assert_eq!(redelivered.receive_count, 2);

    // The next worker (its clock past the dead holder's lease grace) finishes the step.
    let second = runtime(
        &store,
        &step,
        chrono::Duration::milliseconds(sluice_core::engine::LEASE_GRACE_MS),
    );
    let handled = second.handle_delivery("steps", &redelivered, false).await;
    assert_eq!(handled.disposition, sluice_runtime::Disposition::Ack);
    let report = handled.attempt.expect("an attempt ran");
    assert_eq!(
        (report.step_type.as_str(), report.outcome),
        ("fragile", AttemptOutcome::Succeeded)
    );
    let done = second.get_run(&run.id).await.unwrap();
    assert_eq!(done.state, RunState::Success);
    assert_eq!(
        second.read_output(&done, "F").await.unwrap(),
        json!("second time lucky")
    );
}
