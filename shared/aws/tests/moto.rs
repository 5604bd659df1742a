//! The adapters against moto (`scripts/test.sh` starts it and exports
//! `AWS_ENDPOINT_URL`): the scheduler semantics the embedded adapters' tests pin down,
//! and the requests per step. The store and queue ports: `tests/conformance.rs`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use sluice_aws::{AwsEnvironment, AwsSettings};
use sluice_core::model::Application;
use sluice_core::ports::{DefinitionStore, Queue, RunStore};

/// A fresh deployment with its own prefix on the moto server.
async fn env() -> AwsEnvironment {
    assert!(
        std::env::var("AWS_ENDPOINT_URL").is_ok(),
        "AWS_ENDPOINT_URL is not set: these tests need a moto server (scripts/test.sh starts one)"
    );
    let prefix = format!("t{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    let env = AwsEnvironment::load(AwsSettings::with_prefix(&prefix)).await;
    sluice_aws::provision::provision(&env.clients, &env.settings, &["echo".to_string()])
        .await
        .unwrap();
    env
}

// The store and queue ports' contract on moto is tests/conformance.rs (shared with the
// embedded adapters); this file keeps the scheduler and the cost measurement.

/// The Lambda handler on SQS events: a duplicate delivery never runs a step twice, and a
/// dead-lettered message fails its step with a clear error.
/// The EventBridge Scheduler adapter: a schedule is created with the translated
/// expression, and upserts and removals are idempotent.
#[tokio::test]
async fn eventbridge_scheduler_upserts_and_removes_idempotently() {
    let env = env().await;
    let schedule: sluice_core::model::Schedule = serde_json::from_value(json!({
        "application_id": "a", "entry_id": "nightly",
        "schedule": {"schedule_type": "crontab", "schedule_info": {"minute": "0", "hour": "2"}}}))
    .unwrap();
    let scheduler = sluice_aws::EventBridgeScheduler::new(
        env.clients.scheduler.clone(),
        env.settings.schedule_group.clone(),
        "arn:aws:lambda:us-east-1:123456789012:function:start",
        "arn:aws:iam::123456789012:role/scheduler",
    );
    use sluice_core::ports::Scheduler;
    scheduler.upsert(&schedule).await.unwrap();
    scheduler.upsert(&schedule).await.unwrap();
    let got = env
        .clients
        .scheduler
        .get_schedule()
        .name("nightly")
        .group_name(&env.settings.schedule_group)
        .send()
        .await
        .unwrap();
    assert_eq!(got.schedule_expression(), Some("cron(0 2 * * ? *)"));
    scheduler.remove("nightly").await.unwrap();
    scheduler.remove("nightly").await.unwrap();
}

fn sluice_steps_registry() -> sluice_core::step::StepRegistry {
    sluice_steps::builtin_registry()
}

/// Builds the three shapes of docs/cost.md with `n` echo steps.
fn shape(kind: &str, n: usize) -> Application {
    let steps: Vec<serde_json::Value> = match kind {
        "chain" => (0..n)
            .map(|i| {
                if i == 0 {
                    json!({"id": "S0", "type": "echo", "parameters": {"value": {"i": 0}}})
                } else {
                    json!({"id": format!("S{i}"), "type": "echo", "depends_on": [format!("S{}", i - 1)],
                           "parameters": {"value": {"i": format!("${{S{}.i}}", i - 1)}}})
                }
            })
            .collect(),
        "join" => {
            let mut steps: Vec<_> = (0..n - 1)
                .map(|i| json!({"id": format!("P{i}"), "type": "echo", "parameters": {"value": i}}))
                .collect();
            let deps: Vec<String> = (0..n - 1).map(|i| format!("P{i}")).collect();
            steps.push(json!({"id": "J", "type": "echo", "depends_on": deps, "parameters": {"value": "${P0}"}}));
            steps
        }
        _ => vec![
            json!({"id": "Items", "type": "echo", "parameters": {"value": (0..n - 1).collect::<Vec<_>>()}}),
            json!({"id": "Each", "type": "echo", "depends_on": ["Items"],
                   "for_each": {"items": "${Items}", "max_concurrency": 10}, "parameters": {"value": "${item}"}}),
        ],
    };
    serde_json::from_value(json!({"name": format!("{kind}{n}"), "author": "me", "steps": steps}))
        .unwrap()
}

/// Runs an application to its end the way Lambda does (the handler per message; the
/// event source mapping's receives and deletes are not counted here) and returns the
/// requests the handler made.
async fn requests_of_run(env: &AwsEnvironment, app: Application) -> BTreeMap<String, u64> {
    let runtime = env.runtime(sluice_steps_registry());
    env.store.put_application(&app).await.unwrap();
    let queue = env.settings.queue_for("echo");
    env.queue.url(&queue).await.unwrap();
    env.clients.requests.reset();
    let run = runtime
        .start(sluice_runtime::StartRequest {
            application: app.name.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut polling: BTreeMap<String, u64> = BTreeMap::new();
    for _ in 0..200 {
        let deliveries = env
            .queue
            .receive(&queue, 10, Duration::from_secs(60), Duration::ZERO)
            .await
            .unwrap();
        for d in deliveries {
            // As a function handles it: held for the step's timeout plus the margin
            // (one ChangeMessageVisibility), then executed.
            let handled = runtime.handle_delivery(&queue, &d, false).await;
            assert_eq!(handled.disposition, sluice_runtime::Disposition::Ack);
            env.queue.ack(&queue, &d.receipt).await.unwrap();
        }
        // The driver's terminal-state polling is not the handler's: uncount it.
        let before = env.clients.requests.snapshot();
        let state = env.store.get_run(&run.id).await.unwrap().unwrap().state;
        for (op, n) in env.clients.requests.snapshot() {
            *polling.entry(op.clone()).or_default() += n - before.get(&op).unwrap_or(&0);
        }
        if state.is_terminal() {
            break;
        }
    }
    let mut counts = env.clients.requests.snapshot();
    for (op, n) in counts.iter_mut() {
        *n -= polling.get(op).unwrap_or(&0);
        // The event source mapping's receives and deletes are priced separately.
        if matches!(op.as_str(), "sqs:ReceiveMessage" | "sqs:DeleteMessage") {
            *n = 0;
        }
    }
    counts.retain(|_, n| *n > 0);
    assert!(
        env.store.get_run(&run.id).await.unwrap().unwrap().state
            == sluice_core::model::RunState::Success
    );
    counts
}

/// Measures the AWS requests and DynamoDB capacity units per step (docs/cost.md): the
/// difference between an n-step and a 1-step application, over n - 1, priced at the
/// us-east-1 list prices. The price is a deterministic function of the requests the
/// handler makes, so the $2.50 target is asserted, for small and larger applications.
#[tokio::test]
async fn requests_per_step() {
    use sluice_aws::capacity::{READ_UNITS, WRITE_UNITS};
    let env = env().await;
    let single = requests_of_run(&env, shape("chain", 1)).await;
    let mut report = String::new();
    for (kind, n) in [
        ("chain", 11),
        ("join", 11),
        ("for_each", 11),
        ("chain", 31),
        ("chain", 61),
        ("chain", 101),
    ] {
        let counts = requests_of_run(&env, shape(kind, n)).await;
        let per_step = |op: &str| {
            (*counts.get(op).unwrap_or(&0) as f64 - *single.get(op).unwrap_or(&0) as f64)
                / (n - 1) as f64
        };
        let mut requests = 0.0;
        let mut line = format!("{kind} of {n}:");
        for op in counts.keys() {
            line.push_str(&format!(" {op}={:.2}", per_step(op)));
            if !op.ends_with("CapacityUnits") {
                requests += per_step(op);
            }
        }
        // Per million steps: write units $0.625, read units $0.125, SQS requests $0.40
        // (the sends and the visibility holds, plus a receive and a delete per 10-message batch), Lambda $0.20 per
        // million invocations (one per batch) and ~35 ms at 128 MB arm64.
        let price = per_step(WRITE_UNITS) * 0.625
            + per_step(READ_UNITS) * 0.125
            + (per_step("sqs:SendMessage")
                + per_step("sqs:SendMessageBatch")
                + per_step("sqs:ChangeMessageVisibility")
                + 0.2)
                * 0.40
            + 0.1 * 0.20
            + 0.06;
        report.push_str(&format!(
            "{line} requests={requests:.2} price=${price:.2}/M steps\n"
        ));
        // Guards against regressions, the same for every size: a run of more than 40
        // steps keeps the steps not under way in parts of their own, so a step costs
        // the `RUN` item's writes whatever the run's size (dynamo/run_parts.rs).
        assert!(
            requests <= 6.0,
            "{kind}: {requests} requests per step\n{report}"
        );
        assert!(
            price <= 2.50,
            "{kind}: ${price:.2} per million steps\n{report}"
        );
    }
    println!("per-step requests (single-step run: {single:?})\n{report}");
}

/// `Source → for_each over n items (max_concurrency) → Join`, all `echo`s.
fn wide(name: &str, n: usize, max_concurrency: usize) -> Application {
    serde_json::from_value(json!({"name": name, "author": "me", "steps": [
        {"id": "Items", "type": "echo", "parameters": {"value": (0..n).collect::<Vec<_>>()}},
        {"id": "Each", "type": "echo", "depends_on": ["Items"],
         "for_each": {"items": "${Items}", "max_concurrency": max_concurrency},
         "parameters": {"value": {"item": "${item}"}}},
        {"id": "Join", "type": "echo", "depends_on": ["Each"], "parameters": {"value": "done"}}]}))
    .unwrap()
}

/// What one wide run cost.
#[derive(Debug)]
struct Wide {
    steps: usize,
    /// Requests and capacity units of all workers, by `service:operation`.
    counts: BTreeMap<String, u64>,
    /// The largest item of the run's partition, and its `RUN` item, in bytes as billed.
    largest_item: usize,
    run_item: usize,
    seconds: f64,
}

impl Wide {
    fn per_step(&self, key: &str) -> f64 {
        *self.counts.get(key).unwrap_or(&0) as f64 / self.steps as f64
    }

    fn dynamodb_requests_per_step(&self) -> f64 {
        self.counts
            .iter()
            .filter(|(op, _)| op.starts_with("dynamodb:") && !op.ends_with("CapacityUnits"))
            .filter(|(op, _)| op.as_str() != sluice_aws::capacity::CONDITIONAL_FAILURES)
            .map(|(_, n)| *n as f64)
            .sum::<f64>()
            / self.steps as f64
    }
}

/// Runs `app` to its end with `workers` concurrent handlers, each with clients, store and
/// runtime of its own (as separate Lambda containers are: nothing cached in common), and
/// measures what the handlers requested and the items the run left.
async fn wide_run(env: &AwsEnvironment, app: Application, workers: usize) -> Wide {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    env.store.put_application(&app).await.unwrap();
    let queue = env.settings.queue_for("echo");
    let mut containers = Vec::new();
    for _ in 0..workers {
        let container = AwsEnvironment::load(env.settings.clone()).await;
        let runtime = container.runtime(sluice_steps_registry());
        containers.push((container, runtime));
    }
    let began = std::time::Instant::now();
    let run = containers[0]
        .1
        .start(sluice_runtime::StartRequest {
            application: app.name.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    for (container, _) in &containers {
        container.clients.requests.reset();
    }
    let done = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for (container, runtime) in &containers {
        let (sqs, runtime, queue, done) = (
            container.queue.clone(),
            runtime.clone(),
            queue.clone(),
            done.clone(),
        );
        handles.push(tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                // The deployed queues' visibility timeout (the function's timeout × 6,
                // `template.yaml`): a batch of ten must not come back while moto, much
                // slower than SQS with thousands of messages queued, is still serving it.
                let deliveries = sqs
                    .receive(
                        &queue,
                        10,
                        Duration::from_secs(5400),
                        Duration::from_millis(200),
                    )
                    .await
                    .unwrap();
                for d in deliveries {
                    match runtime.handle_delivery(&queue, &d, false).await.disposition {
                        sluice_runtime::Disposition::Ack => sqs.ack(&queue, &d.receipt).await,
                        sluice_runtime::Disposition::RetryAfter(delay) => {
                            sqs.release(&queue, &d.receipt, delay).await
                        }
                    }
                    .unwrap();
                }
            }
        }));
    }
    // Moto serves some 100 requests a second: the full sizes take longer.
    let limit = std::env::var("SLUICE_MOTO_DEADLINE_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1800);
    let deadline = began + Duration::from_secs(limit);
    let state = loop {
        let state = env.store.get_run(&run.id).await.unwrap().unwrap().state;
        if state.is_terminal() {
            break state;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} did not finish",
            app.name
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    done.store(true, Ordering::Relaxed);
    for handle in handles {
        handle.await.unwrap();
    }
    let seconds = began.elapsed().as_secs_f64();
    assert_eq!(state, sluice_core::model::RunState::Success, "{}", app.name);
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for (container, _) in &containers {
        for (op, n) in container.clients.requests.snapshot() {
            // The event source mapping's receives and deletes are priced apart.
            if !matches!(op.as_str(), "sqs:ReceiveMessage" | "sqs:DeleteMessage") {
                *counts.entry(op).or_default() += n;
            }
        }
    }
    // Superseded parts stay until the run expires: a large run's partition is pages.
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let page = env
            .clients
            .dynamodb
            .query()
            .table_name(&env.settings.runs_table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(
                ":pk",
                aws_sdk_dynamodb::types::AttributeValue::S(run.id.clone()),
            )
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        items.extend(page.items.unwrap_or_default());
        start = page.last_evaluated_key;
        if start.is_none() {
            break;
        }
    }
    let size = |item: &std::collections::HashMap<_, _>| sluice_aws::capacity::item_size(item);
    let largest_item = items.iter().map(size).max().unwrap_or(0);
    let run_item = items
        .iter()
        .find(|i| i.get("sk").and_then(|s| s.as_s().ok()).map(String::as_str) == Some("RUN"))
        .map(size)
        .unwrap();
    let steps = env
        .store
        .get_run(&run.id)
        .await
        .unwrap()
        .unwrap()
        .steps
        .iter()
        .map(|s| s.units.len().max(1))
        .sum();
    Wide {
        steps,
        counts,
        largest_item,
        run_item,
        seconds,
    }
}

/// Issue-13 scale on moto: a `for_each` over many items and a wide fan-out into a join
/// complete with no item near DynamoDB's 400 KB; DynamoDB requests and write units per
/// step stay flat as the run grows tenfold (one worker, so that nothing but the size
/// differs); and with four workers of their own (as Lambda containers are) writing one
/// run at once, lost compare-and-swaps stay below one per worker per step. Scaled for
/// the suite; `SLUICE_MOTO_FOR_EACH=10000` and `SLUICE_MOTO_FAN_OUT=5000` run the
/// issue's sizes (docs/cost.md: 15 and 10–22 minutes here, each on a fresh moto server,
/// whose SQS still walks its messages at every send and receive), with
/// `SLUICE_MOTO_DEADLINE_S` for a run's time limit (30 minutes unless set).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wide_runs_stay_small_per_item_and_flat_per_step() {
    use sluice_aws::capacity::{CONDITIONAL_FAILURES, READ_UNITS, WRITE_UNITS};
    let size = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let items = size("SLUICE_MOTO_FOR_EACH", 300);
    let fan = size("SLUICE_MOTO_FAN_OUT", 200);
    let workers = size("SLUICE_MOTO_WORKERS", 4);
    let env = env().await;
    // The same window (max_concurrency) for both, a twentieth of the smaller run's
    // items: each item's end queues the next, as in every long for_each. (The last
    // `window` ends queue nothing, so a window that is a large share of a run makes it
    // look cheaper per step than it is.)
    let window = (items / 200).max(1);
    let small = wide_run(&env, wide("each_small", items / 10, window), 1).await;
    eprintln!("for_each over {}: {small:?}", items / 10);
    let large = wide_run(&env, wide("each_large", items, window), 1).await;
    eprintln!("for_each over {items}: {large:?}");
    let fan_out = wide_run(&env, wide("fan_out", fan, fan), workers).await;
    let mut report = String::new();
    for (name, wide) in [
        (format!("for_each over {}, 1 worker", items / 10), &small),
        (format!("for_each over {items}, 1 worker"), &large),
        (
            format!("{fan}-way fan-out into a join, {workers} workers"),
            &fan_out,
        ),
    ] {
        report.push_str(&format!(
            "{name}: {:.1} s, {} steps; per step: dynamodb requests {:.2}, write units {:.2}, read units {:.2}, lost swaps {:.3}; largest item {} B, RUN item {} B\n",
            wide.seconds,
            wide.steps,
            wide.dynamodb_requests_per_step(),
            wide.per_step(WRITE_UNITS),
            wide.per_step(READ_UNITS),
            wide.per_step(CONDITIONAL_FAILURES),
            wide.largest_item,
            wide.run_item,
        ));
    }
    println!("{report}");
    for wide in [&small, &large, &fan_out] {
        assert!(wide.largest_item < 64 * 1024, "{report}");
        assert!(wide.run_item < 8 * 1024, "{report}");
    }
    assert_eq!(small.per_step(CONDITIONAL_FAILURES), 0.0, "{report}");
    assert!(
        fan_out.per_step(CONDITIONAL_FAILURES) <= workers as f64,
        "{report}"
    );
    // Ten times the items, the same cost per step (within a quarter).
    let flat = |key: &dyn Fn(&Wide) -> f64| key(&large) <= key(&small) * 1.25;
    assert!(flat(&|w| w.dynamodb_requests_per_step()), "{report}");
    assert!(flat(&|w| w.per_step(WRITE_UNITS)), "{report}");
    assert!(flat(&|w| w.per_step(READ_UNITS)), "{report}");
}
