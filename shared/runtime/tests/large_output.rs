//! A large output passed to a successor is not copied over and over: the heap's peak
//! while a 10 MB output is produced, stored, read and handed to the next step stays
//! within a small multiple of its size. Measured with a counting allocator (this test
//! binary holds only this test, so nothing else allocates meanwhile).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};
use sluice_core::model::{Application, RunState};
use sluice_core::ports::Queue;
use sluice_core::step::{StepContext, StepError, StepOutput, StepRegistry, StepType};
use sluice_embedded::EmbeddedStore;
use sluice_runtime::{Disposition, Runtime, RuntimeConfig, StartRequest, VISIBILITY};

/// The system allocator, counting the bytes in use and their peak.
struct Counting;

static IN_USE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = System.alloc(layout);
        if !ptr.is_null() {
            let now = IN_USE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        ptr
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const OUTPUT_BYTES: usize = 10 * 1024 * 1024;

/// Outputs 1,000 strings of about 10 KiB each (about [`OUTPUT_BYTES`] of JSON).
struct Big;

#[async_trait]
impl StepType for Big {
    fn name(&self) -> &str {
        "big"
    }
    fn description(&self) -> &str {
        "outputs 10 MB"
    }
    fn parameter_schema(&self) -> Value {
        json!({"type": "object"})
    }
    async fn execute(&self, _: Value, _: &StepContext) -> Result<StepOutput, StepError> {
        let item = "x".repeat(OUTPUT_BYTES / 1000);
        let items: Vec<Value> = (0..1000).map(|_| Value::String(item.clone())).collect();
        // Built in place: `json!` would serialize `items` into a second copy.
        let mut output = serde_json::Map::new();
        output.insert("items".into(), Value::Array(items));
        Ok(StepOutput::value(Value::Object(output)))
    }
}

/// Outputs how many items its `data` parameter holds.
struct Count;

#[async_trait]
impl StepType for Count {
    fn name(&self) -> &str {
        "count"
    }
    fn description(&self) -> &str {
        "counts items"
    }
    fn parameter_schema(&self) -> Value {
        json!({"type": "object"})
    }
    async fn execute(&self, params: Value, _: &StepContext) -> Result<StepOutput, StepError> {
        let n = params["data"]["items"].as_array().map_or(0, Vec::len);
        Ok(StepOutput::value(json!(n)))
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_10_mb_output_passed_to_a_successor_peaks_below_three_times_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let mut registry = StepRegistry::new();
    registry.register(Big);
    registry.register(Count);
    let runtime = Runtime::new(store.backend(), registry, RuntimeConfig::default());
    let app: Application = serde_json::from_value(json!({"name": "large", "author": "t",
        "steps": [
            {"id": "Big", "type": "big", "parameters": {}},
            {"id": "Count", "type": "count", "depends_on": ["Big"],
             "parameters": {"data": "${Big}"}}]}))
    .unwrap();
    runtime.put_application(&app).await.unwrap();
    let run = runtime
        .start(StartRequest {
            application: "large".into(),
            ..StartRequest::default()
        })
        .await
        .unwrap();

    let baseline = IN_USE.load(Ordering::Relaxed);
    PEAK.store(baseline, Ordering::Relaxed);
    let queue = store.queue();
    loop {
        let got = queue
            .receive("steps", 1, VISIBILITY, Duration::ZERO)
            .await
            .unwrap();
        let Some(delivery) = got.into_iter().next() else {
            break;
        };
        let handled = runtime.handle_message(&delivery.message, 1, false).await;
        assert_eq!(handled, Disposition::Ack);
        queue.ack("steps", &delivery.receipt).await.unwrap();
    }
    let peak = PEAK.load(Ordering::Relaxed) - baseline;

    let run = runtime.get_run(&run.id).await.unwrap();
    assert_eq!(run.state, RunState::Success);
    let outputs = runtime.outputs(&run).await.unwrap();
    assert_eq!(outputs["Count"], json!(1000));
    let ratio = peak as f64 / OUTPUT_BYTES as f64;
    eprintln!("peak heap above baseline: {peak} bytes, {ratio:.2}x the output");
    assert!(ratio <= 3.0, "peak {ratio:.2}x the output's size");
}
