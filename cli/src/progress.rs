//! What following a run prints: live per-step progress on stderr and the final report.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};

use sluice_api::documents::{Task, TaskStep};
use sluice_core::model::StepState;

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

    /// Prints what changed in `run` (a run `root` follows) since its last update.
    pub fn update(&mut self, run: &Task, root: &str) {
        if !self.enabled {
            return;
        }
        let prefix = if run.task_id == root {
            String::new()
        } else {
            format!("{} › ", run.application)
        };
        let mut err = std::io::stderr().lock();
        for (id, step) in &run.steps {
            let key = (run.task_id.clone(), id.clone());
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
                    id,
                    step.attempts,
                    step.error.as_deref().unwrap_or("")
                ),
                StepState::Queued => continue,
                StepState::Running => format!(
                    "{} {prefix}{} running{}",
                    self.paint("36", "▸"),
                    id,
                    attempt_suffix(step)
                ),
                StepState::Waiting => format!(
                    "{} {prefix}{} waiting for {}",
                    self.paint("36", "…"),
                    id,
                    step.child_run.as_deref().unwrap_or("its child run")
                ),
                StepState::Success => format!(
                    "{} {prefix}{} {}",
                    self.paint("32", "✔"),
                    id,
                    duration(step)
                ),
                StepState::Warning => format!(
                    "{} {prefix}{} warning {}: {}",
                    self.paint("33", "!"),
                    id,
                    duration(step),
                    step.warnings.join("; ")
                ),
                StepState::Failed => format!(
                    "{} {prefix}{} failed {}: {}",
                    self.paint("31", "✘"),
                    id,
                    duration(step),
                    step.error.as_deref().unwrap_or("")
                ),
                StepState::Skipped => {
                    format!("{} {prefix}{} skipped", self.paint("90", "↷"), id)
                }
                StepState::Cancelled => format!(
                    "{} {prefix}{} cancelled{}",
                    self.paint("90", "⊘"),
                    id,
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

fn attempt_suffix(step: &TaskStep) -> String {
    match (step.items, step.attempts) {
        (Some(n), _) => format!(" ({n} items)"),
        (None, a) if a > 1 => format!(" (attempt {a})"),
        _ => String::new(),
    }
}

fn duration(step: &TaskStep) -> String {
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

/// What a finished run prints: the summary with the outputs of `app`'s final steps
/// (text), or the task document with every output (json). `run` carries its outputs.
pub fn print_report(
    run: &Task,
    app: &sluice_core::model::Application,
    output: crate::OutputFormat,
) -> anyhow::Result<()> {
    match output {
        crate::OutputFormat::Json => println!("{}", serde_json::to_string_pretty(run)?),
        crate::OutputFormat::Text => {
            let finals: Vec<(String, serde_json::Value)> = run
                .steps
                .iter()
                .filter(|(id, step)| {
                    step.state.succeeded() && !app.steps.iter().any(|s| s.depends_on.contains(id))
                })
                .map(|(id, step)| (id.clone(), step.output.clone().unwrap_or_default()))
                .collect();
            print!("{}", summary(run, &finals));
        }
    }
    Ok(())
}

/// The end-of-run summary, with the outputs of the final steps (those no step depends on).
pub fn summary(run: &Task, final_outputs: &[(String, serde_json::Value)]) -> String {
    let mut out = String::new();
    let took = match (run.started_at, run.finished_at) {
        (Some(s), Some(f)) => format_seconds((f - s).num_milliseconds() as f64 / 1000.0),
        _ => String::new(),
    };
    out.push_str(&format!(
        "Run {} of {}: {} in {took}\n",
        run.task_id,
        run.application,
        run.state.as_str().to_uppercase()
    ));
    let width = run
        .steps
        .keys()
        .map(|id| id.len())
        .max()
        .unwrap_or(4)
        .max(4);
    for (id, step) in &run.steps {
        let mut line = format!(
            "  {:width$}  {:<9}  attempts {}  {:>8}",
            id,
            step.state.as_str(),
            step.attempts,
            duration(step)
        );
        if let Some(n) = step.items {
            line.push_str(&format!("  {n} items"));
        }
        if let Some(child) = &step.child_run {
            line.push_str(&format!("  child {child}"));
        } else {
            let children = step.child_runs.len();
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
