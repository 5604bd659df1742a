//! Text the commands print from the API's documents.

use std::path::Path;

use sluice_api::documents::{LogLine, LogPage};
use sluice_core::model::{Application, Configuration, RunState};

use crate::InvalidInput;

/// One line of `apps list`.
pub fn application_line(app: &Application) -> String {
    format!(
        "{:<32} {:<10} {:>3} steps  {}",
        app.name,
        app.version,
        app.steps.len(),
        app.friendly_name.as_deref().unwrap_or(&app.description)
    )
}

/// One line of `configs list`.
pub fn configuration_line(config: &Configuration) -> String {
    format!(
        "{:<32} {:<10} {:>3} variables",
        config.name,
        config.version,
        config.data.len()
    )
}

/// The confirmation of `apps push`.
/// What `runs revoke --application` / `--all` print, locally and remotely.
pub fn revoked_line(revoked: u64, application: Option<&str>) -> String {
    let runs = if revoked == 1 { "run" } else { "runs" };
    match application {
        Some(app) => format!("Revoked {revoked} {runs} of {app}"),
        None => format!("Revoked {revoked} {runs}"),
    }
}

/// What `cache delete --prefix` prints, locally and remotely.
pub fn deleted_prefix_line(deleted: u64, prefix: &str) -> String {
    let entries = if deleted == 1 { "entry" } else { "entries" };
    format!("Deleted {deleted} cache {entries} with prefix \"{prefix}\"")
}

pub fn stored_application(app: &Application) -> String {
    format!(
        "Stored application {} ({} steps)",
        app.name,
        app.steps.len()
    )
}

/// The confirmation of `configs push` (given the stored, redacted document).
pub fn stored_configuration(config: &Configuration) -> String {
    let encrypted = config.data.iter().filter(|v| v.encrypted).count();
    format!(
        "Stored configuration {} ({} variables, {encrypted} encrypted)",
        config.name,
        config.data.len()
    )
}

/// Prefixes every line of an input error with the file it is about.
pub fn in_file(file: &Path, e: anyhow::Error) -> anyhow::Error {
    match e.downcast::<InvalidInput>() {
        Ok(invalid) => prefixed(file, invalid.0.lines()),
        Err(e) => e,
    }
}

/// An input error made of `lines`, each prefixed with the file.
pub fn prefixed<'a>(file: &Path, lines: impl Iterator<Item = &'a str>) -> anyhow::Error {
    let lines: Vec<String> = lines.map(|l| format!("{}: {l}", file.display())).collect();
    InvalidInput(lines.join("\n")).into()
}

/// Entries a log read asks for per page.
pub const LOG_PAGE: usize = 1000;

/// Prints a run's log (`runs logs [--follow]`), reading pages with `fetch(after)` (the
/// API's log pages: entries after a cursor, and the run's state as read before them).
///
/// Entries become visible only roughly in sequence order (see `sluice_core::logs`), so
/// each new poll re-reads a window behind the newest entry seen and prints only entries
/// it has not printed.
pub async fn print_logs(
    step: Option<&str>,
    follow: bool,
    mut fetch: impl AsyncFnMut(u64) -> anyhow::Result<LogPage>,
) -> anyhow::Result<()> {
    let mut printed = std::collections::HashSet::new();
    let mut newest = 0u64;
    loop {
        let mut after = newest.saturating_sub(sluice_core::logs::FOLLOW_OVERLAP);
        let mut run_terminal = None;
        loop {
            let page = fetch(after).await?;
            run_terminal.get_or_insert(page.state.is_some_and(RunState::is_terminal));
            for entry in &page.logs {
                newest = newest.max(entry.seq);
                if printed.insert(entry.seq) && step.is_none_or(|s| s == entry.step) {
                    println!("{}", format_log(entry));
                }
            }
            match page.logs.last() {
                Some(last) if page.logs.len() >= LOG_PAGE => after = last.seq,
                _ => break,
            }
        }
        if !follow || run_terminal == Some(true) {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
}

/// One log line: `ts LEVEL step[attempt] message`.
pub fn format_log(entry: &LogLine) -> String {
    format!(
        "{} {:<7} {}[{}] {}",
        entry.ts, entry.level, entry.step, entry.attempt, entry.message
    )
}
