//! `sluice reports list|get|delete`: run reports through the API (`/api/v1/reports`) —
//! in process on the data directory, or on a server with `--endpoint`.

use std::fmt::Write as _;

use clap::{Subcommand, ValueEnum};
use serde_json::Value;
use sluice_core::report::{Report, ReportSummary, RowStatus};

use crate::client::{segment, Client};

#[derive(Subcommand)]
pub enum ReportsCommand {
    /// Reports, newest run first.
    List {
        /// Only reports of this application.
        #[arg(long)]
        application: Option<String>,
        /// At most this many (1-1000).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// The next_cursor a previous page printed.
        #[arg(long)]
        cursor: Option<String>,
        #[arg(long, value_enum, default_value_t = ReportOutput::Text)]
        output: ReportOutput,
    },
    /// One report (`report-<application>-<run id>`): its details and tables.
    Get {
        id: String,
        #[arg(long, value_enum, default_value_t = ReportOutput::Text)]
        output: ReportOutput,
    },
    /// Delete a report (its run stays).
    Delete { id: String },
}

/// How a report is printed.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportOutput {
    Text,
    Json,
    /// Every table as one CSV (`list` prints JSON instead).
    Csv,
}

/// A page of `GET /reports`.
#[derive(serde::Deserialize)]
struct ReportPage {
    reports: Vec<ReportSummary>,
    next_cursor: Option<String>,
}

pub async fn run(client: &Client, cmd: ReportsCommand) -> anyhow::Result<u8> {
    match cmd {
        ReportsCommand::List {
            application,
            limit,
            cursor,
            output,
        } => {
            let mut path = format!("/api/v1/reports?limit={limit}");
            if let Some(application) = &application {
                path.push_str(&format!("&application={}", segment(application)));
            }
            if let Some(cursor) = &cursor {
                path.push_str(&format!("&cursor={}", segment(cursor)));
            }
            let doc = client.get(&path).await?;
            if output != ReportOutput::Text {
                println!("{}", serde_json::to_string_pretty(&doc)?);
                return Ok(0);
            }
            let page: ReportPage = crate::client::read_as(doc)?;
            for report in &page.reports {
                println!(
                    "{}  {}  expires {}",
                    report.id,
                    report.run_created_at.format("%Y-%m-%d %H:%M:%S"),
                    report.expires_at.format("%Y-%m-%d %H:%M:%S")
                );
            }
            if let Some(next) = page.next_cursor {
                println!("more: --cursor {next}");
            }
        }
        ReportsCommand::Get { id, output } => {
            let doc = client
                .get(&format!("/api/v1/reports/{}", segment(&id)))
                .await?;
            match output {
                ReportOutput::Json => println!("{}", serde_json::to_string_pretty(&doc)?),
                // The same CSV as the API's `?format=csv`: one implementation, the core's.
                ReportOutput::Csv => {
                    print!("{}", crate::client::read_as::<Report>(doc)?.to_csv())
                }
                ReportOutput::Text => print!("{}", text(&crate::client::read_as(doc)?)),
            }
        }
        ReportsCommand::Delete { id } => {
            client
                .delete(&format!("/api/v1/reports/{}", segment(&id)))
                .await?;
            println!("deleted report {id}");
        }
    }
    Ok(0)
}

/// A cell as text: strings as they are, null empty, others as JSON; one line.
fn cell(value: &Value) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    text.replace(['\n', '\r'], " ")
}

/// A report as a terminal shows it: a heading, the counts, then each section's
/// details and tables with aligned columns.
fn text(report: &Report) -> String {
    let mut out = String::new();
    let s = &report.summary;
    let _ = writeln!(
        out,
        "{}  (application {}, run {})",
        s.id, s.application, s.run_id
    );
    let counts: Vec<String> = RowStatus::ALL
        .iter()
        .map(|status| {
            let n = report.counts.get(status.as_str()).copied().unwrap_or(0);
            format!("{} {n}", status.as_str())
        })
        .collect();
    let _ = writeln!(out, "{}", counts.join(", "));
    // Units are named only for steps that fanned out (one with a unit past 0).
    let fanned_out: Vec<&str> = report
        .sections
        .iter()
        .filter(|p| p.unit > 0)
        .map(|p| p.step.as_str())
        .collect();
    for placed in &report.sections {
        let section = &placed.section;
        let unit = if fanned_out.contains(&placed.step.as_str()) {
            format!(", unit {}", placed.unit)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "\n== {} (step {}{unit}) ==",
            section.title, placed.step
        );
        for (key, value) in &section.details {
            let _ = writeln!(out, "{key}: {}", cell(value));
        }
        for table in &section.tables {
            out.push('\n');
            if let Some(title) = &table.title {
                let _ = writeln!(out, "{title}");
            }
            let header: Vec<String> = std::iter::once("STATUS".to_string())
                .chain(table.columns.iter().cloned())
                .collect();
            let rows: Vec<Vec<String>> = table
                .rows
                .iter()
                .map(|row| {
                    std::iter::once(row.status.as_str().to_string())
                        .chain(row.values.iter().map(cell))
                        .collect()
                })
                .collect();
            let widths: Vec<usize> = (0..header.len())
                .map(|i| {
                    std::iter::once(&header)
                        .chain(&rows)
                        .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            for line in std::iter::once(&header).chain(&rows) {
                let cells: Vec<String> = line
                    .iter()
                    .zip(&widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect();
                let _ = writeln!(out, "{}", cells.join("  ").trim_end());
            }
            if table.omitted_rows > 0 {
                let _ = writeln!(out, "({} more rows omitted)", table.omitted_rows);
            }
        }
    }
    if report.omitted_sections > 0 {
        let _ = writeln!(
            out,
            "\n({} more sections omitted: the report is too large to show whole)",
            report.omitted_sections
        );
    }
    out
}
