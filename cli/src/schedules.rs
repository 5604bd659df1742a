//! `sluice schedules push FILE | list | get ID | delete ID | enable ID | disable ID`,
//! through `/api/v1/schedule` (a server's with `--endpoint`, else in process on the data
//! directory, where a running `sluice serve` picks changes up within seconds).

use std::path::{Path, PathBuf};

use clap::Subcommand;
use sluice_api::documents::ScheduleEntry;
use sluice_core::json::parse_document;
use sluice_core::model::{Schedule, ScheduleSpec};
use sluice_core::task::rfc3339;

use crate::client::{read_as, segment, Client};
use crate::local::Store;
use crate::InvalidInput;

#[derive(Subcommand)]
pub enum SchedulesCommand {
    /// Validate and store a schedule document (SPEC §5).
    Push {
        file: PathBuf,
    },
    /// Schedules with their run counts, last and next runs.
    List,
    /// One schedule as JSON.
    Get {
        entry_id: String,
    },
    Delete {
        entry_id: String,
    },
    /// Enable a schedule (ticks before now do not fire).
    Enable {
        entry_id: String,
    },
    Disable {
        entry_id: String,
    },
}

fn timing(entry: &ScheduleEntry) -> String {
    match &entry.schedule.schedule {
        ScheduleSpec::Frequency(schedule_info) => format!("every {}s", schedule_info.run_every),
        ScheduleSpec::Crontab(schedule_info) => [
            &schedule_info.minute,
            &schedule_info.hour,
            &schedule_info.day_of_month,
            &schedule_info.month_of_year,
            &schedule_info.day_of_week,
        ]
        .map(|f| f.as_str())
        .join(" "),
    }
}

fn time(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map_or_else(|| "-".to_string(), |t| rfc3339(&t))
}

fn enabled(entry: &ScheduleEntry) -> &'static str {
    if entry.schedule.enabled {
        "enabled"
    } else {
        "disabled"
    }
}

fn print_list(entries: &[ScheduleEntry]) {
    for e in entries {
        // Why the latest tick started nothing, until a tick starts a run again.
        let error = match &e.last_error {
            Some(last) => format!("  error at {}: {}", rfc3339(&last.time), last.message),
            None => String::new(),
        };
        println!(
            "{:<24} {:<24} {:<8} {:<20} runs {:<5} last {}  next {}{error}",
            e.schedule.entry_id,
            e.schedule.application_id,
            enabled(e),
            timing(e),
            e.total_runs,
            time(e.last_run.as_ref().map(|r| r.start_time)),
            time(e.next_run),
        );
    }
}

fn print_stored(entry: &ScheduleEntry) {
    println!(
        "Stored schedule {} ({}, {}; next run {})",
        entry.schedule.entry_id,
        enabled(entry),
        timing(entry),
        time(entry.next_run)
    );
}

fn read_schedule(file: &Path) -> anyhow::Result<(String, Schedule)> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| InvalidInput(format!("{}: cannot read: {e}", file.display())))?;
    let schedule = parse_document::<Schedule>(&text).map_err(|e| {
        let lines: Vec<String> = e
            .issues
            .iter()
            .map(|i| format!("{}: {i}", file.display()))
            .collect();
        InvalidInput(lines.join("\n"))
    })?;
    Ok((text, schedule))
}

fn toggle(cmd: &SchedulesCommand) -> (String, bool) {
    match cmd {
        SchedulesCommand::Enable { entry_id } => (entry_id.clone(), true),
        SchedulesCommand::Disable { entry_id } => (entry_id.clone(), false),
        _ => unreachable!(),
    }
}

/// Through the API (a server's with `--endpoint`, else in process on the data directory;
/// a running `sluice serve` picks changes up within seconds).
pub async fn run(client: &Client, cmd: SchedulesCommand) -> anyhow::Result<u8> {
    if client
        .local()
        .is_some_and(|l| matches!(l.store, Store::Aws(_)))
    {
        anyhow::bail!("schedules on AWS are managed through the API (--endpoint)");
    }
    match cmd {
        SchedulesCommand::Push { file } => {
            let (text, _) = read_schedule(&file)?;
            let entry: ScheduleEntry = client
                .send_text(reqwest::Method::POST, "/api/v1/schedule", text)
                .await
                .and_then(read_as)
                .map_err(|e| crate::output::in_file(&file, e))?;
            print_stored(&entry);
        }
        SchedulesCommand::List => {
            let entries: Vec<ScheduleEntry> = client.get_as("/api/v1/schedule").await?;
            print_list(&entries);
        }
        SchedulesCommand::Get { entry_id } => {
            let entry: ScheduleEntry = client
                .get_as(&format!("/api/v1/schedule/{}", segment(&entry_id)))
                .await?;
            println!("{}", serde_json::to_string_pretty(&entry)?);
        }
        SchedulesCommand::Delete { entry_id } => {
            client
                .delete(&format!("/api/v1/schedule/{}", segment(&entry_id)))
                .await?;
            println!("Deleted schedule {entry_id}");
        }
        cmd @ (SchedulesCommand::Enable { .. } | SchedulesCommand::Disable { .. }) => {
            let (entry_id, enabled) = toggle(&cmd);
            let entry: ScheduleEntry = client
                .get_as(&format!("/api/v1/schedule/{}", segment(&entry_id)))
                .await?;
            let mut schedule = entry.schedule;
            schedule.enabled = enabled;
            let entry: ScheduleEntry = client
                .post_as("/api/v1/schedule", &serde_json::to_value(&schedule)?)
                .await?;
            print_stored(&entry);
        }
    }
    Ok(0)
}
