//! `sluice apps|configs history|diff|rollback`: the versions of a definition, through the
//! API (a server's with `--endpoint`, else in process on the data directory).

use serde_json::{json, Value};
use sluice_api::documents::{RolledBack, VersionDiff, VersionList};
use sluice_core::versions::{DefinitionKind, DiffEntry, DiffOp, VersionInfo};

use crate::client::{segment, Client};
use crate::{DocCommand, InvalidInput, OutputFormat};

/// Who a push from this CLI is by: the local user's name, else `cli`.
pub(crate) fn cli_author() -> String {
    std::env::var("USER")
        .ok()
        .filter(|user| !user.is_empty() && user.len() <= 64)
        .unwrap_or_else(|| "cli".to_string())
}

fn positive(version: u64, field: &str) -> anyhow::Result<u64> {
    if version == 0 {
        return Err(InvalidInput(format!("{field}: versions are numbered from 1")).into());
    }
    Ok(version)
}

fn base(kind: DefinitionKind, name: &str) -> String {
    let collection = match kind {
        DefinitionKind::Application => "applications",
        DefinitionKind::Configuration => "configurations",
    };
    format!("/api/v1/{collection}/{}", segment(name))
}

/// A history, diff or rollback, through the API (of a server, or in process).
pub(crate) async fn run(
    client: &Client,
    kind: DefinitionKind,
    cmd: DocCommand,
) -> anyhow::Result<u8> {
    match cmd {
        DocCommand::History { name, output } => {
            let list: VersionList = client
                .get_as(&format!("{}/versions", base(kind, &name)))
                .await?;
            print_history(&list.versions, output)?;
        }
        DocCommand::Diff {
            name,
            from,
            to,
            output,
        } => {
            let (from, to) = (positive(from, "from")?, positive(to, "to")?);
            let diff: VersionDiff = client
                .get_as(&format!("{}/diff?from={from}&to={to}", base(kind, &name)))
                .await?;
            print_diff(&diff.changes, output)?;
        }
        DocCommand::Rollback { name, version } => {
            let version = positive(version, "version")?;
            let done: RolledBack = client
                .post_as(
                    &format!("{}/rollback", base(kind, &name)),
                    &json!({"version": version}),
                )
                .await?;
            print_rollback(kind, &name, version, done.version, done.created);
        }
        _ => unreachable!("only history, diff and rollback come here"),
    }
    Ok(0)
}

fn print_history(versions: &[VersionInfo], output: OutputFormat) -> anyhow::Result<()> {
    if output == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(versions)?);
        return Ok(());
    }
    for v in versions {
        let short = v.hash.get(..19).unwrap_or(&v.hash);
        let mut line = format!(
            "v{:<4} {}  {:<20} {short}",
            v.version,
            sluice_core::task::rfc3339(&v.created_at),
            v.author
        );
        if !v.encrypted.is_empty() {
            line.push_str(&format!("  encrypted: {}", v.encrypted.join(", ")));
        }
        println!("{line}");
    }
    Ok(())
}

fn print_diff(changes: &[DiffEntry], output: OutputFormat) -> anyhow::Result<()> {
    if output == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(changes)?);
        return Ok(());
    }
    if changes.is_empty() {
        println!("No changes");
    }
    let show = |v: &Option<Value>| v.as_ref().map(Value::to_string).unwrap_or_default();
    for change in changes {
        let path = if change.path.is_empty() {
            "(document)"
        } else {
            &change.path
        };
        match change.op {
            DiffOp::Added => println!("+ {path}: {}", show(&change.to)),
            DiffOp::Removed => println!("- {path}: {}", show(&change.from)),
            DiffOp::Changed => {
                println!("~ {path}: {} -> {}", show(&change.from), show(&change.to))
            }
        }
    }
    Ok(())
}

fn print_rollback(kind: DefinitionKind, name: &str, to: u64, now: u64, created: bool) {
    if created {
        println!(
            "Rolled back {} {name} to version {to}: stored as version {now}",
            kind.as_str()
        );
    } else {
        println!(
            "{} {name} already has the content of version {to} (version {now}); nothing stored",
            kind.as_str()
        );
    }
}
