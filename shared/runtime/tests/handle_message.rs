//! `Runtime::handle_message` driven directly on the embedded adapters: duplicate
//! deliveries handled at once, a crash between storing a transition and sending its
//! messages, and workers whose view of the run (their hint) went stale.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};
use sluice_core::model::{Application, RunState, UnitState};
use sluice_core::ports::{Delivery, Queue, QueueError, TaskMessage};
use sluice_core::step::{StepContext, StepError, StepOutput, StepRegistry, StepType};
use sluice_embedded::EmbeddedStore;
use sluice_runtime::{Backend, Disposition, Runtime, RuntimeConfig, StartRequest, VISIBILITY};
use tokio::sync::{mpsc, Semaphore};

/// Counts its executions; each announces itself with a permit of `entered`, then waits
/// for a permit of `gate` (the test lets executions through). Its output is its `value`
/// parameter.
#[derive(Clone)]
struct Gated {
    executions: Arc<AtomicU32>,
    entered: Arc<Semaphore>,
    gate: Arc<Semaphore>,
}

impl Gated {
    fn closed() -> Self {
        Self {
            executions: Arc::default(),
            entered: Arc::new(Semaphore::new(0)),
            gate: Arc::new(Semaphore::new(0)),
        }
    }

    fn open(&self) {
        self.let_through(1000);
    }

    fn let_through(&self, executions: usize) {
        self.gate.add_permits(executions);
    }

    /// Waits until `n` more executions have started.
    async fn wait_entered(&self, n: u32) {
        self.entered
            .acquire_many(n)
            .await
            .expect("entered")
            .forget();
    }

    fn executions(&self) -> u32 {
        self.executions.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl StepType for Gated {
    fn name(&self) -> &str {
        "gated"
    }
    fn description(&self) -> &str {
        "counts executions and waits for the test"
    }
    fn parameter_schema(&self) -> Value {
        json!({"type": "object"})
    }
    async fn execute(&self, params: Value, _: &StepContext) -> Result<StepOutput, StepError> {
        self.executions.fetch_add(1, Ordering::SeqCst);
        self.entered.add_permits(1);
        let _permit = self.gate.acquire().await.expect("gate");
        Ok(StepOutput::value(params["value"].clone()))
    }
}

/// The embedded queue, with sends that fail while `failing` is set: a process that dies
/// right after storing a transition never sends its messages either.
struct FlakyQueue {
    inner: Arc<dyn Queue>,
    failing: AtomicBool,
    failed_sends: AtomicU32,
}

#[async_trait]
impl Queue for FlakyQueue {
    async fn send(&self, queue: &str, m: &TaskMessage, delay: Duration) -> Result<(), QueueError> {
        if self.failing.load(Ordering::SeqCst) {
            self.failed_sends.fetch_add(1, Ordering::SeqCst);
            return Err(QueueError("the process died before sending".into()));
        }
        self.inner.send(queue, m, delay).await
    }
    fn receive_is_cancel_safe(&self) -> bool {
        self.inner.receive_is_cancel_safe()
    }
    async fn receive(
        &self,
        queue: &str,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        self.inner.receive(queue, max, visibility, wait).await
    }
    async fn ack(&self, queue: &str, receipt: &str) -> Result<(), QueueError> {
        self.inner.ack(queue, receipt).await
    }
    async fn release(&self, queue: &str, receipt: &str, delay: Duration) -> Result<(), QueueError> {
        self.inner.release(queue, receipt, delay).await
    }
    async fn extend_visibility(
        &self,
        queue: &str,
        receipt: &str,
        visibility: Duration,
    ) -> Result<(), QueueError> {
        self.inner
            .extend_visibility(queue, receipt, visibility)
            .await
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    runtime: Arc<Runtime>,
    queue: Arc<FlakyQueue>,
    step: Gated,
    /// Milliseconds the runtime's clock runs ahead of the system clock.
    ahead_ms: Arc<AtomicI64>,
}

impl Harness {
    async fn new(app: Value) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let ports = store.ports();
        let queue = Arc::new(FlakyQueue {
            inner: ports.queue,
            failing: AtomicBool::new(false),
            failed_sends: AtomicU32::new(0),
        });
        let backend = Backend {
            definitions: ports.definitions,
            runs: ports.runs,
            queue: queue.clone(),
            secrets: ports.secrets,
            cache: ports.cache,
            reports: ports.reports,
            packs: store.packs(),
        };
        let step = Gated::closed();
        let mut registry = StepRegistry::new();
        registry.register(step.clone());
        let ahead_ms = Arc::new(AtomicI64::new(0));
        let ahead = ahead_ms.clone();
        let config = RuntimeConfig {
            clock: Arc::new(move || {
                chrono::Utc::now() + chrono::Duration::milliseconds(ahead.load(Ordering::SeqCst))
            }),
            ..RuntimeConfig::default()
        };
        let runtime = Runtime::new(backend, registry, config);
        let app: Application = serde_json::from_value(app).unwrap();
        runtime.put_application(&app).await.unwrap();
        Self {
            _dir: dir,
            runtime,
            queue,
            step,
            ahead_ms,
        }
    }

    fn advance(&self, by: chrono::Duration) {
        self.ahead_ms
            .fetch_add(by.num_milliseconds(), Ordering::SeqCst);
    }

    async fn start(&self) -> String {
        let run = self
            .runtime
            .start(StartRequest {
                application: "app".into(),
                ..StartRequest::default()
            })
            .await
            .unwrap();
        run.id
    }

    /// Every message now on the queue, acknowledged (the test delivers them itself).
    async fn take_messages(&self) -> Vec<TaskMessage> {
        let mut taken = Vec::new();
        loop {
            let got = self
                .queue
                .receive("steps", 10, VISIBILITY, Duration::ZERO)
                .await
                .unwrap();
            if got.is_empty() {
                return taken;
            }
            for d in got {
                self.queue.ack("steps", &d.receipt).await.unwrap();
                taken.push(d.message);
            }
        }
    }

    async fn handle(&self, message: &TaskMessage) -> Disposition {
        self.runtime.handle_message(message, 1, false).await
    }

    /// Delivers every queued message until none is left.
    async fn drain(&self) {
        for _ in 0..20 {
            let messages = self.take_messages().await;
            if messages.is_empty() {
                return;
            }
            for m in messages {
                assert_eq!(self.handle(&m).await, Disposition::Ack, "{m:?}");
            }
        }
        panic!("the run never settled");
    }
}

fn chain() -> Value {
    json!({"name": "app", "author": "tests", "steps": [
        {"id": "A", "type": "gated", "parameters": {"value": "a"}},
        {"id": "B", "type": "gated", "depends_on": ["A"], "parameters": {"value": "b"}}]})
}

/// Handles `message` on `workers` tasks at once; each sends its disposition on the
/// returned channel when done.
fn handle_at_once(
    h: &Arc<Harness>,
    message: &TaskMessage,
    workers: usize,
) -> mpsc::UnboundedReceiver<Disposition> {
    let (done, dispositions) = mpsc::unbounded_channel();
    for _ in 0..workers {
        let (h, message, done) = (h.clone(), message.clone(), done.clone());
        tokio::spawn(async move {
            let _ = done.send(h.handle(&message).await);
        });
    }
    dispositions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_deliveries_handled_at_once_execute_the_attempt_once() {
    let h = Arc::new(Harness::new(chain()).await);
    let run_id = h.start().await;
    let a = h.take_messages().await.pop().expect("A's message");

    // Four workers got the same message (duplicate deliveries) at the same moment.
    let mut dispositions = handle_at_once(&h, &a, 4);
    h.step.wait_entered(1).await;
    // While one executes, the other three find the attempt claimed and come back later.
    for _ in 0..3 {
        let d = dispositions.recv().await.unwrap();
        assert!(matches!(d, Disposition::RetryAfter(_)), "{d:?}");
    }
    assert_eq!(h.step.executions(), 1);
    h.step.open();
    assert_eq!(dispositions.recv().await.unwrap(), Disposition::Ack);

    // Their redeliveries find the attempt done.
    let mut again = handle_at_once(&h, &a, 3);
    for _ in 0..3 {
        assert_eq!(again.recv().await.unwrap(), Disposition::Ack);
    }
    assert_eq!(h.step.executions(), 1, "A executed once");
    h.drain().await;
    let run = h.runtime.get_run(&run_id).await.unwrap();
    assert_eq!(run.state, RunState::Success);
    assert_eq!(run.step("A").unwrap().attempts, 1);
    assert_eq!(h.step.executions(), 2, "A and B, once each");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_with_stale_hints_record_every_result_and_dispatch_once() {
    let app = json!({"name": "app", "author": "tests", "steps": [
        {"id": "Items", "type": "gated", "parameters": {"value": [1, 2, 3]}},
        {"id": "Each", "type": "gated", "depends_on": ["Items"],
         "for_each": {"items": "${Items}", "max_concurrency": 3},
         "parameters": {"value": "${item}"}},
        {"id": "After", "type": "gated", "depends_on": ["Each"],
         "parameters": {"value": "${Each}"}}]});
    let h = Arc::new(Harness::new(app).await);
    let run_id = h.start().await;
    let items = h.take_messages().await.pop().expect("Items' message");
    h.step.let_through(1);
    assert_eq!(h.handle(&items).await, Disposition::Ack);
    let units = h.take_messages().await;
    assert_eq!(units.len(), 3, "{units:?}");

    // All three units are claimed before any finishes: each worker's run (its hint) is
    // stale by the time it records its result.
    let (done, mut dispositions) = mpsc::unbounded_channel();
    for unit in units {
        let (h, done) = (h.clone(), done.clone());
        tokio::spawn(async move {
            let _ = done.send(h.handle(&unit).await);
        });
    }
    h.step.wait_entered(4).await; // Items' execution, then the three units'
    h.step.let_through(3);
    for _ in 0..3 {
        assert_eq!(dispositions.recv().await.unwrap(), Disposition::Ack);
    }
    let run = h.runtime.get_run(&run_id).await.unwrap();
    let each = run.step("Each").unwrap();
    assert!(
        each.units.iter().all(|u| u.state == UnitState::Done),
        "every unit's result was recorded: {each:?}"
    );
    let after = h.take_messages().await;
    assert_eq!(
        after.len(),
        1,
        "the successor is dispatched once: {after:?}"
    );
    h.step.open();
    assert_eq!(h.handle(&after[0]).await, Disposition::Ack);
    let done = h.runtime.get_run(&run_id).await.unwrap();
    assert_eq!(done.state, RunState::Success);
    assert_eq!(
        h.runtime.read_output(&done, "After").await.unwrap(),
        json!([1, 2, 3])
    );
    assert_eq!(h.step.executions(), 5);
}

/// Handles A's message while B's message cannot be sent: A's finish is stored, B is
/// queued in the run record, and no message for it exists.
async fn crash_after_storing_a_finish(h: &Harness) -> (String, TaskMessage) {
    h.step.open();
    let run_id = h.start().await;
    let a = h.take_messages().await.pop().expect("A's message");
    h.queue.failing.store(true, Ordering::SeqCst);
    let first = h.handle(&a).await;
    h.queue.failing.store(false, Ordering::SeqCst);
    assert!(matches!(first, Disposition::RetryAfter(_)), "{first:?}");
    assert_eq!(h.queue.failed_sends.load(Ordering::SeqCst), 1);
    let run = h.runtime.get_run(&run_id).await.unwrap();
    assert_eq!(run.step("A").unwrap().units[0].state, UnitState::Done);
    assert_eq!(run.step("B").unwrap().units[0].state, UnitState::Queued);
    assert!(h.take_messages().await.is_empty(), "B's message was lost");
    (run_id, a)
}

async fn finish_with_b(h: &Harness, run_id: &str) {
    let b = h.take_messages().await;
    assert_eq!(b.len(), 1, "{b:?}");
    assert_eq!(b[0].step_id, "B");
    assert_eq!(h.handle(&b[0]).await, Disposition::Ack);
    let done = h.runtime.get_run(run_id).await.unwrap();
    assert_eq!(done.state, RunState::Success);
    assert_eq!(h.step.executions(), 2, "A and B ran once each");
}

/// What repairs such a run today: resuming it (`sluice serve` at start, `sluice resume`)
/// re-sends its outstanding messages; the redelivered message of A never runs A again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_a_transition_and_its_messages_is_repaired_by_resume() {
    let h = Harness::new(chain()).await;
    let (run_id, a) = crash_after_storing_a_finish(&h).await;
    assert_eq!(h.handle(&a).await, Disposition::Ack);
    assert_eq!(h.step.executions(), 1, "the redelivery did not run A again");
    h.runtime.resume(&run_id, None).await.unwrap();
    finish_with_b(&h, &run_id).await;
}

/// A redelivery of A's message after the crash (a step's timeout plus a margin later)
/// re-sends what A's end should have sent; on AWS nothing else would resume the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_a_transition_and_its_messages_is_repaired_by_redelivery() {
    let h = Harness::new(chain()).await;
    let (run_id, a) = crash_after_storing_a_finish(&h).await;
    h.advance(chrono::Duration::milliseconds(
        sluice_core::engine::RESEND_AFTER_MS + 1_000,
    ));
    assert_eq!(h.handle(&a).await, Disposition::Ack);
    finish_with_b(&h, &run_id).await;
}

/// A duplicate that arrives while the successors' own messages are surely still on their
/// way re-sends nothing, so duplicates never multiply messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_duplicate_of_a_finished_attempt_sends_nothing() {
    let h = Harness::new(chain()).await;
    h.step.open();
    h.start().await;
    let a = h.take_messages().await.pop().expect("A's message");
    assert_eq!(h.handle(&a).await, Disposition::Ack);
    assert_eq!(h.take_messages().await.len(), 1, "B's message");
    assert_eq!(h.handle(&a).await, Disposition::Ack);
    assert!(
        h.take_messages().await.is_empty(),
        "the duplicate re-sent B"
    );
}
