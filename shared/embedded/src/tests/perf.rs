//! A rough per-step cost measurement: the store and queue operations the runtime does for
//! one step. Run with
//! `cargo test -p sluice-embedded --release -- --ignored --nocapture step_overhead`.

use std::time::{Duration, Instant};

use chrono::{Duration as ChronoDuration, Utc};
use serde_json::json;
use sluice_core::model::{LogEntry, LogLevel, RunState, StepRun};
use sluice_core::ports::{OutputKey, Queue, RunStore, TaskMessage};

use super::{app, run, temp_store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark; run in release"]
async fn step_overhead() {
    let tasks: usize = std::env::var("SLUICE_BENCH_TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let steps_total = 20_000usize;
    let (_dir, store) = temp_store();
    let q = store.queue();
    let expires = Utc::now() + ChronoDuration::days(7);
    for t in 0..tasks {
        let mut r = run(&format!("isapp-bench-{t}"), "bench", Utc::now());
        r.steps = (0..20).map(|i| StepRun::new(&format!("S{i}"))).collect();
        r.state = RunState::Running;
        store.create_run(&r, &app("bench")).await.unwrap();
        let message = TaskMessage {
            run_id: format!("isapp-bench-{t}"),
            step_id: "S0".into(),
            unit: 0,
            attempt: 1,
            lane: None,
        };
        q.send("steps", &message, Duration::ZERO).await.unwrap();
    }
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let store = store.clone();
        let q = store.queue();
        handles.push(tokio::spawn(async move {
            for i in 0..steps_total / tasks {
                // The ~6 store/queue operations of one step.
                let got = q
                    .receive("steps", 1, Duration::from_secs(300), Duration::from_secs(5))
                    .await
                    .unwrap();
                let delivery = &got[0];
                let run_id = &delivery.message.run_id;
                let mut run = store.get_run(run_id).await.unwrap().unwrap();
                let expected = run.version;
                run.version += 1;
                run.steps[1].attempts = i as u32;
                store.update_run(&run, expected).await.unwrap();
                let key = OutputKey {
                    run_id: run_id.clone(),
                    step_id: "S1".into(),
                    unit: i as u32,
                };
                store
                    .put_output(&key, &json!({"i": i, "name": "device"}), expires)
                    .await
                    .unwrap();
                store
                    .append_logs(
                        run_id,
                        &[LogEntry {
                            ts: Utc::now(),
                            level: LogLevel::Flow,
                            step: "S1".into(),
                            attempt: 1,
                            message: "stop S1|0.001".into(),
                        }],
                        expires,
                    )
                    .await
                    .unwrap();
                q.send("steps", &delivery.message, Duration::ZERO)
                    .await
                    .unwrap();
                q.ack("steps", &delivery.receipt).await.unwrap();
            }
        }));
    }
    for handle in handles {
        handle.await.unwrap();
    }
    let elapsed = started.elapsed();
    let steps = (steps_total / tasks * tasks) as f64;
    println!(
        "{tasks} tasks, {steps} steps in {elapsed:?}: {:.0} steps/s, {:.1} µs per step",
        steps / elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / steps
    );
}

#[tokio::test]
#[ignore = "a benchmark; run in release"]
async fn op_costs() {
    let (_dir, store) = temp_store();
    let q = store.queue();
    let mut r = run("isapp-bench", "bench", Utc::now());
    r.steps = (0..20).map(|i| StepRun::new(&format!("S{i}"))).collect();
    store.create_run(&r, &app("bench")).await.unwrap();
    let expires = Utc::now() + ChronoDuration::days(7);
    let n = 5_000u32;
    let msg = TaskMessage {
        run_id: "isapp-bench".into(),
        step_id: "S0".into(),
        unit: 0,
        attempt: 1,
        lane: None,
    };

    let t = Instant::now();
    for _ in 0..n {
        store.get_run("isapp-bench").await.unwrap();
    }
    println!("get_run {:?}", t.elapsed() / n);
    let t = Instant::now();
    for i in 0..n {
        let mut run = r.clone();
        run.version = u64::from(i) + 1;
        store.update_run(&run, u64::from(i)).await.unwrap();
    }
    println!("update_run {:?}", t.elapsed() / n);
    let t = Instant::now();
    for i in 0..n {
        let key = OutputKey {
            run_id: "isapp-bench".into(),
            step_id: "S1".into(),
            unit: i,
        };
        store
            .put_output(&key, &json!({"i": i}), expires)
            .await
            .unwrap();
    }
    println!("put_output {:?}", t.elapsed() / n);
    let t = Instant::now();
    for i in 0..n {
        let key = OutputKey {
            run_id: "isapp-bench".into(),
            step_id: "S1".into(),
            unit: i,
        };
        store.get_output(&key).await.unwrap();
    }
    println!("get_output {:?}", t.elapsed() / n);
    let t = Instant::now();
    for _ in 0..n {
        q.send("q", &msg, Duration::ZERO).await.unwrap();
    }
    println!("send {:?}", t.elapsed() / n);
    let t = Instant::now();
    let mut receipts = Vec::new();
    for _ in 0..n {
        receipts.push(
            q.receive("q", 1, Duration::from_secs(60), Duration::ZERO)
                .await
                .unwrap()
                .remove(0)
                .receipt,
        );
    }
    println!("receive {:?}", t.elapsed() / n);
    let t = Instant::now();
    for r in &receipts {
        q.ack("q", r).await.unwrap();
    }
    println!("ack {:?}", t.elapsed() / n);
    let entry = LogEntry {
        ts: Utc::now(),
        level: LogLevel::Flow,
        step: "S1".into(),
        attempt: 1,
        message: "stop S1|0.001".into(),
    };
    let t = Instant::now();
    for _ in 0..n {
        store
            .append_logs("isapp-bench", std::slice::from_ref(&entry), expires)
            .await
            .unwrap();
    }
    println!("append_logs {:?}", t.elapsed() / n);
}
