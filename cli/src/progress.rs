//! Following runs to their end: live per-step progress on stderr and the final summary.

use std::collections::{BTreeMap, HashMap};
use std::io::{IsTerminal, Write};
use std::time::Duration;

use sluice_core::model::{Run, StepRun, StepState};
use sluice_runtime::{Progress, Runtime};
use tokio::sync::broadcast;

/// Prints a line each time a step of a followed run changes state.
pub struct Printer {
    enabled: bool,
    color: bool,
    seen: HashMap<(String, String), (StepState, u32)>,
}

impl Printer {
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            color: std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
            seen: HashMap::new(),
        }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    pub fn update(&mut self, run: &Run, root: &str) {
        if !self.enabled {
            return;
        }
        let prefix = if run.id == root {
            String::new()
        } else {
            format!("{} › ", run.application)
        };
        let mut err = std::io::stderr().lock();
        for step in &run.steps {
            let key = (run.id.clone(), step.id.clone());
            let now = (step.state, step.attempts);
            if self.seen.get(&key) == Some(&now) {
                continue;
            }
            self.seen.insert(key, now);
            let line = match step.state {
                StepState::Pending => continue,
                StepState::Queued if step.error.is_some() => format!(
                    "{} {prefix}{} retrying after attempt {}: {}",
                    self.paint("33", "↻"),
                    step.id,
                    step.attempts,
                    step.error.as_deref().unwrap_or("")
                ),
                StepState::Queued => continue,
                StepState::Running => format!(
                    "{} {prefix}{} running{}",
                    self.paint("36", "▸"),
                    step.id,
                    attempt_suffix(step)
                ),
                StepState::Waiting => format!(
                    "{} {prefix}{} waiting for {}",
                    self.paint("36", "…"),
                    step.id,
                    step.child_run.as_deref().unwrap_or("its child run")
                ),
                StepState::Success => format!(
                    "{} {prefix}{} {}",
                    self.paint("32", "✔"),
                    step.id,
                    duration(step)
                ),
                StepState::Warning => format!(
                    "{} {prefix}{} warning {}: {}",
                    self.paint("33", "!"),
                    step.id,
                    duration(step),
                    step.warnings.join("; ")
                ),
                StepState::Failed => format!(
                    "{} {prefix}{} failed {}: {}",
                    self.paint("31", "✘"),
                    step.id,
                    duration(step),
                    step.error.as_deref().unwrap_or("")
                ),
                StepState::Skipped => {
                    format!("{} {prefix}{} skipped", self.paint("90", "↷"), step.id)
                }
                StepState::Cancelled => format!(
                    "{} {prefix}{} cancelled{}",
                    self.paint("90", "⊘"),
                    step.id,
                    step.error
                        .as_deref()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                ),
            };
            let _ = writeln!(err, "{line}");
        }
    }
}

fn attempt_suffix(step: &StepRun) -> String {
    match (step.fan_out, step.attempts) {
        (Some(n), _) => format!(" ({n} items)"),
        (None, a) if a > 1 => format!(" (attempt {a})"),
        _ => String::new(),
    }
}

fn duration(step: &StepRun) -> String {
    match (step.started_at, step.finished_at) {
        (Some(s), Some(f)) => format_seconds((f - s).num_milliseconds() as f64 / 1000.0),
        _ => String::new(),
    }
}

pub fn format_seconds(seconds: f64) -> String {
    if seconds < 1.0 {
        format!("{:.0}ms", seconds * 1000.0)
    } else {
        format!("{seconds:.2}s")
    }
}

/// Follows `roots` and every child run they start until all have ended.
pub async fn wait_for(
    runtime: &Runtime,
    roots: &[String],
    mut updates: broadcast::Receiver<Progress>,
    printer: &mut Printer,
) -> anyhow::Result<BTreeMap<String, Run>> {
    let mut runs: BTreeMap<String, Option<Run>> =
        roots.iter().map(|id| (id.clone(), None)).collect();
    let root_of = |run: &Run| run.id.clone();
    let period = Duration::from_millis(250);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        let mut changed: Vec<Run> = Vec::new();
        tokio::select! {
            update = updates.recv() => match update {
                Ok(progress) => {
                    let run = progress.run.as_ref();
                    let followed = runs.contains_key(&run.id)
                        || run.parent.as_ref().is_some_and(|p| runs.contains_key(&p.run_id));
                    if followed {
                        changed.push(run.clone());
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => tokio::time::sleep(Duration::from_millis(50)).await,
            },
            _ = tick.tick() => {
                // Broadcasts can lag; the store is the truth.
                for id in runs.keys().cloned().collect::<Vec<_>>() {
                    if let Ok(run) = runtime.get_run(&id).await {
                        changed.push(run);
                    }
                }
            }
        }
        for run in changed {
            let known = runs.get(&run.id).cloned().flatten();
            if known.as_ref().is_some_and(|k| k.version > run.version) {
                continue;
            }
            for step in &run.steps {
                let children = step.units.iter().filter_map(|u| u.child_run.as_ref());
                for child in step.child_run.iter().chain(children) {
                    runs.entry(child.clone()).or_insert(None);
                }
            }
            let root = roots.first().cloned().unwrap_or_else(|| root_of(&run));
            printer.update(
                &run,
                if roots.contains(&run.id) {
                    &run.id
                } else {
                    &root
                },
            );
            runs.insert(run.id.clone(), Some(run));
        }
        if runs
            .values()
            .all(|r| r.as_ref().is_some_and(|r| r.state.is_terminal()))
        {
            return Ok(runs
                .into_iter()
                .filter_map(|(id, r)| r.map(|r| (id, r)))
                .collect());
        }
    }
}

/// The end-of-run summary, with the outputs of the final steps (those no step depends on).
pub fn summary(run: &Run, final_outputs: &[(String, serde_json::Value)]) -> String {
    let mut out = String::new();
    let took = match (run.started_at, run.finished_at) {
        (Some(s), Some(f)) => format_seconds((f - s).num_milliseconds() as f64 / 1000.0),
        _ => String::new(),
    };
    out.push_str(&format!(
        "Run {} of {}: {} in {took}\n",
        run.id,
        run.application,
        run.state.as_str().to_uppercase()
    ));
    let width = run
        .steps
        .iter()
        .map(|s| s.id.len())
        .max()
        .unwrap_or(4)
        .max(4);
    for step in &run.steps {
        let mut line = format!(
            "  {:width$}  {:<9}  attempts {}  {:>8}",
            step.id,
            step.state.as_str(),
            step.attempts,
            duration(step)
        );
        if let Some(n) = step.fan_out {
            line.push_str(&format!("  {n} items"));
        }
        if let Some(child) = &step.child_run {
            line.push_str(&format!("  child {child}"));
        } else {
            let children = step.units.iter().filter(|u| u.child_run.is_some()).count();
            if children > 0 {
                line.push_str(&format!("  {children} child runs"));
            }
        }
        if let Some(error) = &step.error {
            line.push_str(&format!("  {error}"));
        }
        if !step.warnings.is_empty() {
            line.push_str(&format!("  warnings: {}", step.warnings.join("; ")));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    for (step, output) in final_outputs {
        let text = output.to_string();
        let shown: String = text.chars().take(2000).collect();
        let more = if shown.len() < text.len() { " …" } else { "" };
        out.push_str(&format!("Output of {step}: {shown}{more}\n"));
    }
    out
}
