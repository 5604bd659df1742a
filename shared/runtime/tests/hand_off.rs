//! A local worker hands a step's ready successor to itself (sent already received, no
//! poll), a bounded number of times in a row, and every step still runs exactly once;
//! the other messages a transition queues go to the queue together.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};
use sluice_core::model::{Application, RunState};
use sluice_core::ports::{Delivery, Queue, QueueError, TaskMessage};
use sluice_core::step::{StepContext, StepError, StepOutput, StepRegistry, StepType};
use sluice_embedded::EmbeddedStore;
use sluice_runtime::{Runtime, RuntimeConfig, StartRequest, WorkerPool};

/// The embedded queue, counting what goes through a poll and what is handed over, and
/// noting the size of each `send_many`.
struct Counting {
    inner: Arc<dyn Queue>,
    received: AtomicUsize,
    handed_over: AtomicUsize,
    sent_together: Mutex<Vec<usize>>,
}

#[async_trait]
impl Queue for Counting {
    async fn send(&self, q: &str, m: &TaskMessage, delay: Duration) -> Result<(), QueueError> {
        self.inner.send(q, m, delay).await
    }
    async fn send_many(
        &self,
        q: &str,
        messages: &[TaskMessage],
        delay: Duration,
    ) -> Result<(), QueueError> {
        self.sent_together.lock().unwrap().push(messages.len());
        self.inner.send_many(q, messages, delay).await
    }
    async fn send_received(
        &self,
        q: &str,
        m: &TaskMessage,
        visibility: Duration,
    ) -> Result<Option<Delivery>, QueueError> {
        let sent = self.inner.send_received(q, m, visibility).await?;
        self.handed_over
            .fetch_add(sent.is_some() as usize, Ordering::SeqCst);
        Ok(sent)
    }
    fn receive_is_cancel_safe(&self) -> bool {
        self.inner.receive_is_cancel_safe()
    }
    async fn receive(
        &self,
        q: &str,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        let got = self.inner.receive(q, max, visibility, wait).await?;
        self.received.fetch_add(got.len(), Ordering::SeqCst);
        Ok(got)
    }
    async fn ack(&self, q: &str, receipt: &str) -> Result<(), QueueError> {
        self.inner.ack(q, receipt).await
    }
    async fn release(&self, q: &str, receipt: &str, delay: Duration) -> Result<(), QueueError> {
        self.inner.release(q, receipt, delay).await
    }
    async fn extend_visibility(
        &self,
        q: &str,
        receipt: &str,
        visibility: Duration,
    ) -> Result<(), QueueError> {
        self.inner.extend_visibility(q, receipt, visibility).await
    }
}

/// Counts its executions.
#[derive(Clone, Default)]
struct Tick(Arc<AtomicUsize>);

#[async_trait]
impl StepType for Tick {
    fn name(&self) -> &str {
        "tick"
    }
    fn description(&self) -> &str {
        "counts"
    }
    fn parameter_schema(&self) -> Value {
        json!({"type": "object"})
    }
    async fn execute(&self, _: Value, _: &StepContext) -> Result<StepOutput, StepError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(StepOutput::value(json!(1)))
    }
}

fn chain(length: usize) -> Application {
    let steps: Vec<Value> = (0..length)
        .map(|i| match i {
            0 => json!({"id": "S0", "type": "tick"}),
            _ => json!({"id": format!("S{i}"), "type": "tick", "depends_on": [format!("S{}", i - 1)]}),
        })
        .collect();
    serde_json::from_value(json!({
        "name": "chain", "friendly_name": "chain", "description": "hand-off test",
        "author": "tests", "version": "1", "steps": steps
    }))
    .unwrap()
}

/// `Source → for_each over `items` items, all at once → Join`, of ticks.
fn fan_out(items: usize) -> Application {
    serde_json::from_value(json!({
        "name": "fan-out", "friendly_name": "fan-out", "description": "hand-off test",
        "author": "tests", "version": "1", "steps": [
            {"id": "Source", "type": "tick"},
            {"id": "Each", "type": "tick", "depends_on": ["Source"],
             "for_each": {"items": (0..items).collect::<Vec<_>>(), "max_concurrency": items}},
            {"id": "Join", "type": "tick", "depends_on": ["Each"]}]
    }))
    .unwrap()
}

struct Counts {
    executed: usize,
    received: usize,
    handed_over: usize,
    sent_together: Vec<usize>,
    left: u64,
}

async fn run_chain(length: usize) -> (usize, usize, usize, u64) {
    let counts = run(chain(length)).await;
    (
        counts.executed,
        counts.received,
        counts.handed_over,
        counts.left,
    )
}

async fn run(app: Application) -> Counts {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let mut backend = store.backend();
    let counting = Arc::new(Counting {
        inner: backend.queue.clone(),
        received: AtomicUsize::new(0),
        handed_over: AtomicUsize::new(0),
        sent_together: Mutex::default(),
    });
    backend.queue = counting.clone();
    let tick = Tick::default();
    let mut registry = StepRegistry::new();
    registry.register(tick.clone());
    let runtime = Runtime::new(backend, registry, RuntimeConfig::default());
    runtime.put_application(&app).await.unwrap();
    let pool = WorkerPool::start(runtime.clone(), 4);
    let run = runtime
        .start(StartRequest {
            application: app.name.clone(),
            ..StartRequest::default()
        })
        .await
        .unwrap();
    let mut progress = runtime.subscribe();
    while !runtime.get_run(&run.id).await.unwrap().state.is_terminal() {
        let _ = tokio::time::timeout(Duration::from_millis(200), progress.recv()).await;
    }
    pool.shutdown().await;
    let run = runtime.get_run(&run.id).await.unwrap();
    assert_eq!(run.state, RunState::Success);
    let queue = runtime.queues().remove(0);
    let sent_together = counting.sent_together.lock().unwrap().clone();
    Counts {
        executed: tick.0.load(Ordering::SeqCst),
        received: counting.received.load(Ordering::SeqCst),
        handed_over: counting.handed_over.load(Ordering::SeqCst),
        sent_together,
        left: store.queue().depth(&queue).await.unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_runs_on_one_worker_without_polls_for_its_successors() {
    let (executed, received, handed_over, left) = run_chain(6).await;
    assert_eq!(executed, 6, "each step once");
    assert_eq!(received, 1, "only the first step came through a poll");
    assert_eq!(handed_over, 5);
    assert_eq!(left, 0, "every message acknowledged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_chain_goes_back_through_the_queue_every_33_steps() {
    let (executed, received, handed_over, left) = run_chain(70).await;
    assert_eq!(executed, 70);
    // A poll's delivery and 32 handed over, twice; the remaining 4 after a third poll.
    assert_eq!(received, 3);
    assert_eq!(handed_over, 67);
    assert_eq!(left, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_hands_over_its_first_unit_and_sends_the_rest_together() {
    let counts = run(fan_out(40)).await;
    assert_eq!(counts.executed, 42, "each step and unit once");
    assert!(
        counts.sent_together.contains(&39),
        "the 39 units not handed over go in one send_many: {:?}",
        counts.sent_together
    );
    assert_eq!(counts.left, 0, "every message acknowledged");
}
