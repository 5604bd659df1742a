//! `sluice bench`: measurements of the embedded runtime on durable storage (a fresh data
//! directory; SQLite in WAL mode, the durable queue). Use a release build.
//!
//! Each shape (`--shape`, repeatable; all by default) prints its total time, the time per
//! step (total / steps), the p50 of the per-step overhead where steps run one after the
//! other, the CPU time and the peak resident memory while it ran.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use serde_json::{json, Value};
use sluice_core::model::{Application, Run, RunState};
use sluice_runtime::{Runtime, StartRequest};

use crate::local::Local;

/// A measured run shape (`--shape` takes the names the results print).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Shape {
    /// 100 sequential 10-step chains: per-step overhead p50/p99 (the historic measure).
    Overhead,
    /// One 10-step chain.
    #[value(name = "chain-10", alias = "chain10")]
    Chain10,
    /// One 100-step chain.
    #[value(name = "chain-100", alias = "chain100")]
    Chain100,
    /// One 1,000-step chain.
    #[value(name = "chain-1000", alias = "chain1000")]
    Chain1000,
    /// 200 (`--concurrent`) 10-step runs started at once: steps per second.
    Throughput,
    /// 10 runs of Source → for_each over 100 items (max_concurrency 100) → Join.
    #[value(name = "fan-100", alias = "fan100")]
    Fan100,
    /// Source → for_each over 1,000 items, all at once (max_concurrency 1,000) → Join.
    #[value(name = "fan-1000", alias = "fan1000")]
    Fan1000,
    /// Source → for_each over 5,000 items, all at once (max_concurrency 5,000) → Join.
    #[value(name = "fan-5000", alias = "fan5000")]
    Fan5000,
    /// Source → for_each over 10,000 items (max_concurrency 100).
    #[value(name = "for-each-10000", alias = "for-each10000")]
    ForEach10000,
    /// Source → 50 parallel steps → one Join step depending on all 50.
    #[value(name = "join-50", alias = "join50")]
    Join50,
}

impl Shape {
    /// The name `--shape` takes and the results print.
    fn name(self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }
}

const ALL_SHAPES: [Shape; 10] = [
    Shape::Overhead,
    Shape::Chain10,
    Shape::Chain100,
    Shape::Chain1000,
    Shape::Throughput,
    Shape::Fan100,
    Shape::Join50,
    Shape::Fan1000,
    Shape::Fan5000,
    Shape::ForEach10000,
];

#[derive(Args)]
pub struct BenchArgs {
    /// Shapes to measure (repeatable); all of them by default.
    #[arg(long = "shape", value_enum)]
    shapes: Vec<Shape>,
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

fn app(name: &str, steps: Vec<Value>) -> Application {
    serde_json::from_value(json!({"name": name, "author": "bench", "steps": steps}))
        .expect("bench application")
}

fn chain_app(name: &str, length: usize) -> Application {
    let steps: Vec<Value> = (0..length)
        .map(|i| {
            let mut step = json!({"id": format!("S{i}"), "type": "echo", "parameters": {"value": {"step": i}}});
            if i > 0 {
                step["depends_on"] = json!([format!("S{}", i - 1)]);
            }
            step
        })
        .collect();
    app(name, steps)
}

/// Source → `for_each` over `items` items at `max_concurrency` → Join.
fn fan_app(name: &str, items: usize, max_concurrency: usize) -> Application {
    app(
        name,
        vec![
            json!({"id": "Source", "type": "echo", "parameters": {"value": (0..items).collect::<Vec<_>>()}}),
            json!({"id": "Fan", "type": "echo", "depends_on": ["Source"],
             "for_each": {"items": "${Source}", "max_concurrency": max_concurrency},
             "parameters": {"value": "${item}"}}),
            json!({"id": "Join", "type": "echo", "depends_on": ["Fan"], "parameters": {"value": {"n": items}}}),
        ],
    )
}

/// Source → `width` parallel steps → one Join depending on all of them.
fn join_app(name: &str, width: usize) -> Application {
    let mut steps = vec![json!({"id": "Source", "type": "echo", "parameters": {"value": 0}})];
    let branches: Vec<String> = (0..width).map(|i| format!("P{i}")).collect();
    for id in &branches {
        steps.push(json!({"id": id, "type": "echo", "depends_on": ["Source"], "parameters": {"value": id}}));
    }
    steps.push(json!({"id": "Join", "type": "echo", "depends_on": branches, "parameters": {"value": "joined"}}));
    app(name, steps)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Peak resident memory of this process (VmHWM) since the last [`reset_peak_rss`], in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Resets the peak resident memory to the current one (Linux `clear_refs` 5), so that
/// each shape reports its own peak.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// User plus system CPU time of this process, in seconds.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is parenthesised and may hold spaces).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
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

fn millis(from: chrono::DateTime<chrono::Utc>, to: chrono::DateTime<chrono::Utc>) -> f64 {
    (to - from).num_microseconds().unwrap_or(0) as f64 / 1000.0
}

/// Per-step overheads of a chain run: from a step's predecessor's end (the run's start
/// for the first step) to its own end.
fn chain_overheads(run: &Run) -> Vec<f64> {
    let mut previous = run.started_at.expect("started");
    run.steps
        .iter()
        .map(|step| {
            let finished = step.finished_at.expect("finished");
            let gap = millis(previous, finished);
            previous = finished;
            gap
        })
        .collect()
}

/// What one shape measured.
struct Measured {
    total_ms: f64,
    steps: usize,
    /// Sorted per-step overheads, where steps run one after the other.
    overheads: Vec<f64>,
    extra: Value,
}

impl Measured {
    fn new(total_ms: f64, steps: usize) -> Self {
        Self {
            total_ms,
            steps,
            overheads: Vec::new(),
            extra: json!({}),
        }
    }
}

/// Starts one run of `app`, waits for it and measures it from creation to end.
async fn single(runtime: &Runtime, app: &str, steps: usize) -> anyhow::Result<(Measured, Run)> {
    let id = start(runtime, app).await?;
    let run = wait_all(runtime, std::slice::from_ref(&id))
        .await?
        .remove(0);
    let total = millis(run.created_at, run.finished_at.expect("finished"));
    Ok((Measured::new(total, steps), run))
}

async fn measure(runtime: &Runtime, shape: Shape, args: &BenchArgs) -> anyhow::Result<Measured> {
    Ok(match shape {
        Shape::Overhead => {
            let mut per_step = Vec::new();
            let mut chain_ms = Vec::new();
            for _ in 0..args.chains {
                let (measured, run) = single(runtime, "bench_chain_10", 10).await?;
                per_step.extend(chain_overheads(&run));
                chain_ms.push(measured.total_ms);
            }
            per_step.sort_by(f64::total_cmp);
            chain_ms.sort_by(f64::total_cmp);
            let total: f64 = chain_ms.iter().sum();
            let mut measured = Measured::new(total, args.chains * 10);
            measured.extra = json!({
                "p99_overhead_ms": percentile(&per_step, 99.0),
                "chain_p50_ms": percentile(&chain_ms, 50.0),
                "chain_p99_ms": percentile(&chain_ms, 99.0),
            });
            measured.overheads = per_step;
            measured
        }
        Shape::Chain10 | Shape::Chain100 | Shape::Chain1000 => {
            let length = match shape {
                Shape::Chain10 => 10,
                Shape::Chain100 => 100,
                _ => 1000,
            };
            let (mut measured, run) =
                single(runtime, &format!("bench_chain_{length}"), length).await?;
            measured.overheads = chain_overheads(&run);
            measured.overheads.sort_by(f64::total_cmp);
            measured
        }
        Shape::Throughput => {
            let began = Instant::now();
            let mut ids = Vec::with_capacity(args.concurrent);
            for _ in 0..args.concurrent {
                ids.push(start(runtime, "bench_chain_10").await?);
            }
            wait_all(runtime, &ids).await?;
            let total = began.elapsed().as_secs_f64() * 1000.0;
            let steps = args.concurrent * 10;
            let mut measured = Measured::new(total, steps);
            measured.extra = json!({
                "runs": args.concurrent,
                "steps_per_second": steps as f64 / (total / 1000.0),
            });
            measured
        }
        Shape::Fan100 => {
            let mut fan_ms = Vec::new();
            for _ in 0..args.fan_outs {
                let (measured, _) = single(runtime, "bench_fan_100", 102).await?;
                fan_ms.push(measured.total_ms);
            }
            fan_ms.sort_by(f64::total_cmp);
            let mut measured = Measured::new(percentile(&fan_ms, 50.0), 102);
            measured.extra = json!({
                "runs": fan_ms.len(),
                "max_ms": fan_ms.last().copied().unwrap_or(f64::NAN),
            });
            measured
        }
        Shape::Fan1000 => single(runtime, "bench_fan_1000", 1002).await?.0,
        Shape::Fan5000 => single(runtime, "bench_fan_5000", 5002).await?.0,
        Shape::ForEach10000 => single(runtime, "bench_for_each_10000", 10002).await?.0,
        Shape::Join50 => single(runtime, "bench_join_50", 52).await?.0,
    })
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
    let apps = [
        chain_app("bench_chain_10", 10),
        chain_app("bench_chain_100", 100),
        chain_app("bench_chain_1000", 1000),
        fan_app("bench_fan_100", 100, 100),
        fan_app("bench_fan_1000", 1000, 1000),
        fan_app("bench_fan_5000", 5000, 5000),
        fan_app("bench_for_each_10000", 10_000, 100),
        join_app("bench_join_50", 50),
    ];
    for app in &apps {
        runtime
            .put_application(app)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let takeover = local.take_over().await?;
    let workers = local.start_workers(takeover, args.workers);

    let shapes: Vec<Shape> = if args.shapes.is_empty() {
        ALL_SHAPES.to_vec()
    } else {
        args.shapes.clone()
    };
    if !args.json {
        println!(
            "sluice bench (embedded, durable SQLite storage, {} workers)",
            args.workers
        );
        println!(
            "  {:<16} {:>12} {:>12} {:>14} {:>8} {:>10}",
            "shape", "total ms", "per step ms", "p50 overhead", "CPU s", "peak MiB"
        );
    }
    let mut results = serde_json::Map::new();
    for shape in shapes {
        reset_peak_rss();
        let cpu_before = cpu_seconds();
        let measured = measure(&runtime, shape, &args).await?;
        let cpu = cpu_seconds()
            .zip(cpu_before)
            .map(|(after, before)| after - before);
        let peak = peak_rss_mib();
        let per_step = measured.total_ms / measured.steps as f64;
        let p50 = percentile(&measured.overheads, 50.0);
        let mut result = json!({
            "total_ms": measured.total_ms,
            "steps": measured.steps,
            "per_step_ms": per_step,
            "p50_overhead_ms": (!measured.overheads.is_empty()).then_some(p50),
            "cpu_seconds": cpu,
            "peak_rss_mib": peak,
        });
        if let (Value::Object(result), Value::Object(extra)) = (&mut result, measured.extra) {
            result.extend(extra);
        }
        if !args.json {
            let p50 = if measured.overheads.is_empty() {
                "-".to_string()
            } else {
                format!("{p50:.3}")
            };
            let extra = match shape {
                Shape::Throughput => format!(
                    "  {:.0} steps/s",
                    result["steps_per_second"].as_f64().unwrap_or(f64::NAN)
                ),
                Shape::Overhead => format!(
                    "  p99 {:.3} ms",
                    result["p99_overhead_ms"].as_f64().unwrap_or(f64::NAN)
                ),
                Shape::Fan100 => " (p50 of runs)".to_string(),
                _ => String::new(),
            };
            println!(
                "  {:<16} {:>12.1} {:>12.3} {:>14} {:>8.2} {:>10.1}{extra}",
                shape.name(),
                measured.total_ms,
                per_step,
                p50,
                cpu.unwrap_or(f64::NAN),
                peak.unwrap_or(f64::NAN),
            );
        }
        results.insert(shape.name(), result);
    }
    workers.shutdown().await;
    if args.json {
        results.insert("workers".into(), json!(args.workers));
        println!("{}", serde_json::to_string_pretty(&Value::Object(results))?);
    }
    drop(local);
    if temp {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(0)
}
