//! `sluice schedules push FILE | list | get ID | delete ID | enable ID | disable ID`, on
//! the data directory (a running `sluice serve` picks changes up within seconds) or, with
//! `--endpoint`, through the server's `/api/v1/schedule`. Both modes render the same
//! schedule entries, so their output is identical.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Subcommand;
use serde_json::Value;
use sluice_api::schedules::{LocalScheduler, Schedules};
use sluice_core::json::parse_document;
use sluice_core::model::Schedule;

use crate::client::{api_error, segment, Client};
use crate::local::{Local, Store};
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

fn timing(entry: &Value) -> String {
    let info = &entry["schedule"]["schedule_info"];
    match entry["schedule"]["schedule_type"].as_str() {
        Some("frequency") => format!("every {}s", info["run_every"]),
        _ => [
            "minute",
            "hour",
            "day_of_month",
            "month_of_year",
            "day_of_week",
        ]
        .iter()
        .map(|f| info[*f].as_str().unwrap_or("*").to_string())
        .collect::<Vec<_>>()
        .join(" "),
    }
}

fn print_list(entries: &[Value]) {
    for e in entries {
        // Why the latest tick started nothing, until a tick starts a run again.
        let error = match e["last_error"]["message"].as_str() {
            Some(message) => format!(
                "  error at {}: {message}",
                e["last_error"]["time"].as_str().unwrap_or("?")
            ),
            None => String::new(),
        };
        println!(
            "{:<24} {:<24} {:<8} {:<20} runs {:<5} last {}  next {}{error}",
            e["entry_id"].as_str().unwrap_or(""),
            e["application_id"].as_str().unwrap_or(""),
            if e["enabled"] == true {
                "enabled"
            } else {
                "disabled"
            },
            timing(e),
            e["total_runs"],
            e["last_run"]["start_time"].as_str().unwrap_or("-"),
            e["next_run"].as_str().unwrap_or("-"),
        );
    }
}

fn print_stored(entry: &Value) {
    println!(
        "Stored schedule {} ({}, {}; next run {})",
        entry["entry_id"].as_str().unwrap_or(""),
        if entry["enabled"] == true {
            "enabled"
        } else {
            "disabled"
        },
        timing(entry),
        entry["next_run"].as_str().unwrap_or("-")
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

/// On the data directory.
pub async fn local(local: &Local, cmd: SchedulesCommand) -> anyhow::Result<u8> {
    let Store::Embedded(store) = &local.store else {
        anyhow::bail!("schedules on AWS are managed through the API (--endpoint)");
    };
    let schedules = Schedules {
        store: store.schedules(),
        stats: store.schedule_stats(),
        // The running server (if any) rescans the store; nothing to wake in this process.
        scheduler: Arc::new(LocalScheduler::default()),
    };
    let runtime = &local.runtime;
    match cmd {
        SchedulesCommand::Push { file } => {
            let (_, schedule) = read_schedule(&file)?;
            let entry = schedules
                .put(runtime, &schedule)
                .await
                .map_err(|e| crate::output::in_file(&file, api_error(e)))?;
            print_stored(&entry);
        }
        SchedulesCommand::List => print_list(&schedules.list().await.map_err(api_error)?),
        SchedulesCommand::Get { entry_id } => {
            let entry = schedules.get(&entry_id).await.map_err(api_error)?;
            println!("{}", serde_json::to_string_pretty(&entry)?);
        }
        SchedulesCommand::Delete { entry_id } => {
            schedules.delete(&entry_id).await.map_err(api_error)?;
            println!("Deleted schedule {entry_id}");
        }
        cmd @ (SchedulesCommand::Enable { .. } | SchedulesCommand::Disable { .. }) => {
            let (entry_id, enabled) = toggle(&cmd);
            let mut schedule = store
                .schedules()
                .get_schedule(&entry_id)
                .await?
                .ok_or_else(|| InvalidInput(format!("schedule \"{entry_id}\" not found")))?;
            schedule.enabled = enabled;
            let entry = schedules.put(runtime, &schedule).await.map_err(api_error)?;
            print_stored(&entry);
        }
    }
    Ok(0)
}

fn toggle(cmd: &SchedulesCommand) -> (String, bool) {
    match cmd {
        SchedulesCommand::Enable { entry_id } => (entry_id.clone(), true),
        SchedulesCommand::Disable { entry_id } => (entry_id.clone(), false),
        _ => unreachable!(),
    }
}

/// Through a server.
pub async fn remote(client: &Client, cmd: SchedulesCommand) -> anyhow::Result<u8> {
    match cmd {
        SchedulesCommand::Push { file } => {
            let (text, _) = read_schedule(&file)?;
            let entry = client
                .send_text(reqwest::Method::POST, "/api/v1/schedule", text)
                .await
                .map_err(|e| crate::output::in_file(&file, e))?;
            print_stored(&entry);
        }
        SchedulesCommand::List => {
            let doc = client.get("/api/v1/schedule").await?;
            print_list(doc.as_array().map(Vec::as_slice).unwrap_or_default());
        }
        SchedulesCommand::Get { entry_id } => {
            let entry = client
                .get(&format!("/api/v1/schedule/{}", segment(&entry_id)))
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
            let mut doc = client
                .get(&format!("/api/v1/schedule/{}", segment(&entry_id)))
                .await?;
            doc["enabled"] = Value::Bool(enabled);
            let mut schedule = serde_json::Map::new();
            for key in [
                "application_id",
                "entry_id",
                "params",
                "schedule",
                "enabled",
            ] {
                schedule.insert(key.to_string(), doc[key].clone());
            }
            let entry = client
                .post("/api/v1/schedule", &Value::Object(schedule))
                .await?;
            print_stored(&entry);
        }
    }
    Ok(0)
}
