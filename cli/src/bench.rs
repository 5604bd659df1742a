//! `sluice bench`: measurements of the embedded runtime on durable storage (a fresh data
//! directory; SQLite in WAL mode, the durable queue). Use a release build.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{json, Value};
use sluice_core::model::{Application, Run, RunState};
use sluice_runtime::{Runtime, StartRequest};

use crate::local::Local;

#[derive(Args)]
pub struct BenchArgs {
    /// Sequential 10-step chains measured for per-step overhead.
    #[arg(long, default_value_t = 100)]
    chains: usize,
    /// Concurrent 10-step runs measured for throughput.
    #[arg(long, default_value_t = 200)]
    concurrent: usize,
    /// Repetitions of the 1→100→1 fan-out/join.
    #[arg(long, default_value_t = 10)]
    fan_outs: usize,
    /// Step executions in flight at once.
    #[arg(long, default_value_t = 32)]
    workers: usize,
    /// Data directory to use (default: a fresh temporary one, removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
}

fn chain_app() -> Application {
    let steps: Vec<Value> = (0..10)
        .map(|i| {
            let mut step = json!({"id": format!("S{i}"), "type": "echo", "parameters": {"value": {"step": i}}});
            if i > 0 {
                step["depends_on"] = json!([format!("S{}", i - 1)]);
            }
            step
        })
        .collect();
    serde_json::from_value(json!({"name": "bench_chain", "author": "bench", "steps": steps}))
        .expect("chain app")
}

fn fan_app() -> Application {
    serde_json::from_value(json!({"name": "bench_fan", "author": "bench", "steps": [
        {"id": "Source", "type": "echo", "parameters": {"value": (0..100).collect::<Vec<_>>()}},
        {"id": "Fan", "type": "echo", "depends_on": ["Source"],
         "for_each": {"items": "${Source}", "max_concurrency": 100}, "parameters": {"value": "${item}"}},
        {"id": "Join", "type": "echo", "depends_on": ["Fan"], "parameters": {"value": {"n": 100}}}
    ]}))
    .expect("fan app")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Peak resident memory of this process (VmHWM), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

async fn start(runtime: &Runtime, app: &str) -> anyhow::Result<String> {
    let run = runtime
        .start(StartRequest {
            application: app.to_string(),
            ..StartRequest::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(run.id)
}

async fn wait_all(runtime: &Runtime, ids: &[String]) -> anyhow::Result<Vec<Run>> {
    loop {
        if runtime.backend().runs.unfinished_runs().await?.is_empty() {
            let mut runs = Vec::with_capacity(ids.len());
            for id in ids {
                let run = runtime.get_run(id).await?;
                anyhow::ensure!(
                    run.state == RunState::Success,
                    "run {id} ended {}",
                    run.state.as_str()
                );
                runs.push(run);
            }
            return Ok(runs);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Runs the measurements; their applications use `echo`, which `registry` must hold.
pub async fn run(
    args: BenchArgs,
    registry: &sluice_core::step::StepRegistry,
) -> anyhow::Result<u8> {
    let temp = args.dir.is_none();
    let dir = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("sluice-bench-{}", std::process::id()))
    });
    let _ = std::fs::remove_dir_all(&dir);
    let local = Local::open(&dir, None, registry)?;
    let runtime = local.runtime.clone();
    runtime
        .put_application(&chain_app())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    runtime
        .put_application(&fan_app())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let takeover = local.take_over().await?;
    let workers = local.start_workers(takeover, args.workers);

    // 1. Per-step overhead: sequential chains; a step's overhead is the time from its
    //    predecessor's end (or the run's start) to its own end, echo doing no work.
    let mut per_step = Vec::new();
    let mut chain_ms = Vec::new();
    for _ in 0..args.chains {
        let id = start(&runtime, "bench_chain").await?;
        let run = wait_all(&runtime, std::slice::from_ref(&id))
            .await?
            .remove(0);
        let mut previous = run.started_at.expect("started");
        for step in &run.steps {
            let finished = step.finished_at.expect("finished");
            per_step.push((finished - previous).num_microseconds().unwrap_or(0) as f64 / 1000.0);
            previous = finished;
        }
        chain_ms.push(
            (run.finished_at.unwrap() - run.created_at)
                .num_microseconds()
                .unwrap_or(0) as f64
                / 1000.0,
        );
    }
    per_step.sort_by(f64::total_cmp);
    chain_ms.sort_by(f64::total_cmp);

    // 2. Throughput: many 10-step runs at once.
    let began = Instant::now();
    let mut ids = Vec::with_capacity(args.concurrent);
    for _ in 0..args.concurrent {
        ids.push(start(&runtime, "bench_chain").await?);
    }
    wait_all(&runtime, &ids).await?;
    let elapsed = began.elapsed().as_secs_f64();
    let steps_per_second = (args.concurrent * 10) as f64 / elapsed;

    // 3. Fan-out/join latency: 1 → 100 → 1.
    let mut fan_ms = Vec::new();
    for _ in 0..args.fan_outs {
        let began = Instant::now();
        let id = start(&runtime, "bench_fan").await?;
        wait_all(&runtime, std::slice::from_ref(&id)).await?;
        fan_ms.push(began.elapsed().as_secs_f64() * 1000.0);
    }
    fan_ms.sort_by(f64::total_cmp);
    workers.shutdown().await;

    let results = json!({
        "per_step_overhead_ms": {"p50": percentile(&per_step, 50.0), "p99": percentile(&per_step, 99.0), "samples": per_step.len()},
        "chain_10_steps_ms": {"p50": percentile(&chain_ms, 50.0), "p99": percentile(&chain_ms, 99.0)},
        "throughput": {"runs": args.concurrent, "steps": args.concurrent * 10, "seconds": elapsed, "steps_per_second": steps_per_second},
        "fan_out_join_100_ms": {"p50": percentile(&fan_ms, 50.0), "max": fan_ms.last().copied().unwrap_or(f64::NAN), "samples": fan_ms.len()},
        "peak_rss_mib": peak_rss_mib(),
        "workers": args.workers,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        println!(
            "sluice bench (embedded, durable SQLite storage, {} workers)",
            args.workers
        );
        println!(
            "  per-step overhead (10-step echo chain, {} steps): p50 {:.3} ms, p99 {:.3} ms",
            per_step.len(),
            percentile(&per_step, 50.0),
            percentile(&per_step, 99.0)
        );
        println!(
            "  10-step chain end to end: p50 {:.2} ms, p99 {:.2} ms",
            percentile(&chain_ms, 50.0),
            percentile(&chain_ms, 99.0)
        );
        println!(
            "  throughput ({} concurrent 10-step runs): {:.0} steps/s ({:.2} s)",
            args.concurrent, steps_per_second, elapsed
        );
        println!(
            "  fan-out/join 1→100→1: p50 {:.1} ms, max {:.1} ms ({} runs)",
            percentile(&fan_ms, 50.0),
            fan_ms.last().copied().unwrap_or(f64::NAN),
            fan_ms.len()
        );
        if let Some(peak) = peak_rss_mib() {
            println!("  peak memory (RSS): {peak:.1} MiB");
        }
    }
    drop(local);
    if temp {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(0)
}
