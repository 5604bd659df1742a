//! Definitions as code: `sluice plan DIR`, `sluice apply DIR [--prune]` and
//! `sluice export DIR`, through the API (a server's with `--endpoint`, else in process on
//! the data directory or `--backend aws`): the same GET/POST/DELETE of applications,
//! configurations and schedules that `apps`, `configs` and `schedules` use.
//!
//! It reads the stored set, plans with [`sluice_core::plan`] (one pure implementation)
//! and writes the plan's changes in order.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use serde_json::Value;
use sluice_api::documents::ScheduleEntry;
use sluice_core::model::{Application, Configuration};
use sluice_core::plan::{
    check, plan, Action, Definition, DefinitionSet, DocumentKind, FieldChange, Plan, PlannedChange,
};
use sluice_core::step::StepRegistry;
use sluice_core::validate::StepCatalog;

use crate::client::{segment, Client};
use crate::local::Store;
use crate::{Cli, Command, InvalidInput};

/// Largest document file read (the API's default request body limit is smaller).
const MAX_DOCUMENT_BYTES: u64 = 4 * 1024 * 1024;
/// Most `*.json` files a directory may hold.
const MAX_DOCUMENTS: usize = 10_000;
/// Deepest sub-directory searched.
const MAX_DEPTH: usize = 16;
/// Fields of a change's diff printed before "… and N more".
const MAX_DIFF_LINES: usize = 20;
/// Longest value printed in a diff line.
const MAX_VALUE_CHARS: usize = 72;

/// `sluice plan` / `sluice apply`.
#[derive(Args)]
pub struct PlanArgs {
    /// The directory of documents: every `*.json` file in it and its sub-directories
    /// (applications, configurations, schedules; each one's kind told by its top-level
    /// field, as `sluice validate` does).
    pub dir: PathBuf,
    /// Also delete the stored definitions that the directory does not hold.
    #[arg(long)]
    pub prune: bool,
}

/// `sluice export`.
#[derive(Args)]
pub struct ExportArgs {
    /// A new or empty directory to write into.
    pub dir: PathBuf,
}

/// Runs `plan`, `apply` or `export` where the global options say.
pub async fn run(cli: Cli, registry: &StepRegistry) -> anyhow::Result<u8> {
    let target = Target(crate::client::Connect::of(&cli).client(registry).await?);
    let catalog = StepCatalog::new(registry);
    match cli.command {
        Command::Plan(args) => {
            let (plan, files) = prepare(&target, &args, &catalog).await?;
            print_plan(&plan, &files);
            Ok(0)
        }
        Command::Apply(args) => apply(&target, &args, &catalog).await,
        Command::Export(args) => export(&target, &args.dir).await,
        _ => unreachable!("only plan, apply and export come here"),
    }
}

/// Where the definitions are read and written: the API (a server's, or in process).
struct Target(Client);

impl Target {
    /// Every stored definition (configurations redacted, as they are stored).
    async fn stored(&self) -> anyhow::Result<DefinitionSet> {
        let client = &self.0;
        let configs: Vec<Configuration> = client.get_as("/api/v1/configurations").await?;
        let apps: Vec<Application> = client.get_as("/api/v1/applications?hidden=true").await?;
        let schedules: Vec<ScheduleEntry> = client.get_as("/api/v1/schedule").await?;
        Ok(configs
            .into_iter()
            .map(Definition::Configuration)
            .chain(apps.into_iter().map(Definition::Application))
            .chain(
                schedules
                    .into_iter()
                    .map(|e| Definition::Schedule(e.schedule)),
            )
            .collect())
    }

    /// On AWS in process, schedules are written only with the deployment's scheduler
    /// settings (else they would never reach EventBridge).
    fn can_write_schedules(&self) -> bool {
        match self.0.local().map(|local| &local.store) {
            Some(Store::Aws(environment)) => environment.scheduler().is_some(),
            _ => true,
        }
    }

    /// Stores one definition, validated again by the API's own path.
    async fn put(&self, definition: &Definition) -> anyhow::Result<()> {
        let path = match definition.kind() {
            DocumentKind::Configuration => "/api/v1/configurations",
            DocumentKind::Application => "/api/v1/applications",
            DocumentKind::Schedule => "/api/v1/schedule",
        };
        // The document itself (a configuration with the values it carries), so the API
        // validates and stores exactly what was planned.
        let body = match definition {
            Definition::Configuration(c) => serde_json::to_value(c)?,
            Definition::Application(a) => serde_json::to_value(a)?,
            Definition::Schedule(s) => serde_json::to_value(s)?,
        };
        self.0.post(path, &body).await?;
        Ok(())
    }

    /// Deletes one definition. Applications go even when something names them: the
    /// plan was checked to leave nothing naming a deleted application.
    async fn delete(&self, kind: DocumentKind, name: &str) -> anyhow::Result<()> {
        let path = match kind {
            DocumentKind::Configuration => format!("/api/v1/configurations/{}", segment(name)),
            DocumentKind::Application => {
                format!("/api/v1/applications/{}?force=true", segment(name))
            }
            DocumentKind::Schedule => format!("/api/v1/schedule/{}", segment(name)),
        };
        self.0.delete(&path).await?;
        Ok(())
    }
}

/// The file each desired definition came from.
type Files = BTreeMap<(DocumentKind, String), PathBuf>;

/// Reads and validates the directory, reads the stored set, checks what the result
/// would reference and plans. Every problem is reported at once (exit 2); nothing is
/// written.
async fn prepare(
    target: &Target,
    args: &PlanArgs,
    catalog: &StepCatalog,
) -> anyhow::Result<(Plan, Files)> {
    let (desired, files) = load(&args.dir, catalog)?;
    if args.prune && desired.is_empty() {
        return Err(InvalidInput(format!(
            "{}: holds no documents; --prune would delete every stored definition",
            args.dir.display()
        ))
        .into());
    }
    let stored = target.stored().await?;
    let problems = check(&stored, &desired, args.prune);
    if !problems.is_empty() {
        let lines: Vec<String> = problems
            .iter()
            .map(|p| {
                let file = files
                    .get(&(p.kind, p.name.clone()))
                    .map(|f| f.display().to_string())
                    .unwrap_or_default();
                format!("{file}: {}", p.issue)
            })
            .collect();
        return Err(InvalidInput(lines.join("\n")).into());
    }
    let plan = plan(&stored, &desired, args.prune);
    if plan.writes().any(|c| c.kind == DocumentKind::Schedule) && !target.can_write_schedules() {
        return Err(InvalidInput(
            "schedules on AWS are written through the API (--endpoint), or with the deployment's scheduler settings (SLUICE_START_FUNCTION_ARN, SLUICE_SCHEDULER_ROLE_ARN)".to_string(),
        )
        .into());
    }
    Ok((plan, files))
}

/// Every `*.json` file under `dir` (sorted, symbolic links to directories not
/// followed), each validated as `sluice validate` does; all problems at once.
fn load(dir: &Path, catalog: &StepCatalog) -> anyhow::Result<(DefinitionSet, Files)> {
    if !dir.is_dir() {
        return Err(InvalidInput(format!("{}: not a directory", dir.display())).into());
    }
    let mut paths = Vec::new();
    collect_json(dir, 0, &mut paths)?;
    paths.sort();
    let mut desired = DefinitionSet::default();
    let mut files = Files::new();
    let mut problems = Vec::new();
    for path in paths {
        let size = std::fs::metadata(&path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .len();
        if size > MAX_DOCUMENT_BYTES {
            problems.push(format!(
                "{}: larger than {MAX_DOCUMENT_BYTES} bytes",
                path.display()
            ));
            continue;
        }
        let text = match crate::commands::read(&path) {
            Ok(text) => text,
            Err(e) => {
                problems.push(e.to_string());
                continue;
            }
        };
        let definition = match crate::commands::validate_any(&text, catalog) {
            Ok(definition) => definition,
            Err(e) => {
                problems.push(crate::commands::invalid(&path, &e).to_string());
                continue;
            }
        };
        let key = (definition.kind(), definition.name().to_string());
        if let Some(other) = files.get(&key) {
            problems.push(format!(
                "{}: {} \"{}\" is defined in {} too",
                path.display(),
                key.0.as_str(),
                key.1,
                other.display()
            ));
            continue;
        }
        files.insert(key, path);
        desired.insert(definition);
    }
    if !problems.is_empty() {
        return Err(InvalidInput(problems.join("\n")).into());
    }
    Ok((desired, files))
}

fn collect_json(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    if depth > MAX_DEPTH {
        return Err(InvalidInput(format!(
            "{}: nested deeper than {MAX_DEPTH} directories",
            dir.display()
        ))
        .into());
    }
    let entries =
        std::fs::read_dir(dir).map_err(|e| InvalidInput(format!("{}: {e}", dir.display())))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let path = entry.path();
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            collect_json(&path, depth + 1, out)?;
        } else if path.extension().is_some_and(|e| e == "json") && path.is_file() {
            if out.len() == MAX_DOCUMENTS {
                return Err(InvalidInput(format!(
                    "{}: more than {MAX_DOCUMENTS} documents",
                    dir.display()
                ))
                .into());
            }
            out.push(path);
        }
    }
    Ok(())
}

fn print_plan(plan: &Plan, files: &Files) {
    for change in &plan.changes {
        println!("{}", change_line(change, files));
        if let Action::Change(fields) = &change.action {
            for field in fields.iter().take(MAX_DIFF_LINES) {
                println!("    {}", field_line(field));
            }
            if fields.len() > MAX_DIFF_LINES {
                println!("    … and {} more", fields.len() - MAX_DIFF_LINES);
            }
        }
    }
    let counts = plan.counts();
    if plan.has_changes() {
        println!(
            "Plan: {} to create, {} to change, {} to delete, {} unchanged.",
            counts.create, counts.change, counts.delete, counts.unchanged
        );
    } else {
        println!("{}", no_changes(counts.unchanged));
    }
}

fn no_changes(unchanged: usize) -> String {
    let definitions = if unchanged == 1 {
        "definition"
    } else {
        "definitions"
    };
    format!("no changes ({unchanged} {definitions} up to date)")
}

fn change_line(change: &PlannedChange, files: &Files) -> String {
    let (sign, verb) = match change.action {
        Action::Create => ('+', "create"),
        Action::Change(_) => ('~', "change"),
        Action::Unchanged => ('=', "unchanged"),
        Action::Delete => ('-', "delete"),
    };
    let from = files
        .get(&(change.kind, change.name.clone()))
        .map(|f| format!(" ({})", f.display()))
        .unwrap_or_default();
    format!(
        "{sign} {verb} {} {}{from}",
        change.kind.as_str(),
        change.name
    )
}

/// `path: before → after`, each value compact JSON (shortened), `(absent)` when missing.
/// The values come from the redacted documents: never an encrypted value.
fn field_line(field: &FieldChange) -> String {
    let show = |value: &Option<Value>| match value {
        None => "(absent)".to_string(),
        Some(value) => {
            let text = value.to_string();
            if text.chars().count() > MAX_VALUE_CHARS {
                let short: String = text.chars().take(MAX_VALUE_CHARS).collect();
                format!("{short}…")
            } else {
                text
            }
        }
    };
    format!(
        "{}: {} → {}",
        field.path,
        show(&field.before),
        show(&field.after)
    )
}

/// Plans, then writes in the plan's order; when a write fails, writes back what it had
/// changed (the stored documents kept in the plan) and says so.
async fn apply(target: &Target, args: &PlanArgs, catalog: &StepCatalog) -> anyhow::Result<u8> {
    let (plan, files) = prepare(target, args, catalog).await?;
    print_plan(&plan, &files);
    if !plan.has_changes() {
        return Ok(0);
    }
    let mut done: Vec<&PlannedChange> = Vec::new();
    for change in plan.writes() {
        let written = match &change.desired {
            Some(definition) => target.put(definition).await,
            None => target.delete(change.kind, &change.name).await,
        };
        if let Err(e) = written {
            eprintln!(
                "apply failed at: {}; restoring the {} definition(s) written before it",
                change_line(change, &files),
                done.len()
            );
            let mut restored = true;
            for undo in done.iter().rev() {
                let result = match &undo.previous {
                    // A configuration comes back with its encrypted values `null`: the
                    // stored secrets are kept (an apply never reads them).
                    Some(previous) => target.put(previous).await,
                    None => target.delete(undo.kind, &undo.name).await,
                };
                if let Err(undo_error) = result {
                    restored = false;
                    eprintln!(
                        "could not restore {} {}: {undo_error:#}",
                        undo.kind.as_str(),
                        undo.name
                    );
                }
            }
            if restored {
                eprintln!("restored: nothing was changed");
            }
            return Err(e);
        }
        done.push(change);
    }
    let counts = plan.counts();
    println!(
        "Applied: {} created, {} changed, {} deleted.",
        counts.create, counts.change, counts.delete
    );
    Ok(0)
}

const EXPORT_README: &str = "# Sluice definitions

Written by `sluice export`: every stored application (`applications/<id>.json`),
configuration (`configurations/<name>.json`) and schedule (`schedules/<id>.json`).

- `sluice plan DIR` shows what applying this directory would create, change or delete;
  `sluice apply DIR` does it, all or nothing (`--prune` also deletes stored definitions
  that are not here).
- Encrypted configuration values are exported empty (`\"value\": null`). Applying a `null`
  encrypted value keeps the secret already stored; to set or change one, put its value in
  the file outside version control, or use `sluice configs push`.
";

/// Writes every stored definition into `dir` (new or empty), configurations redacted.
async fn export(target: &Target, dir: &Path) -> anyhow::Result<u8> {
    if dir.exists() {
        let mut entries =
            std::fs::read_dir(dir).map_err(|e| InvalidInput(format!("{}: {e}", dir.display())))?;
        if entries.next().is_some() {
            return Err(InvalidInput(format!(
                "{}: not empty; export writes into a new or empty directory",
                dir.display()
            ))
            .into());
        }
    }
    let stored = target.stored().await?;
    for definition in stored.iter() {
        let name = definition.name();
        // Identifiers are validated when stored; a file name must stay inside `dir`.
        if name.is_empty()
            || name.starts_with('.')
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            anyhow::bail!(
                "{} \"{name}\" cannot be a file name",
                definition.kind().as_str()
            );
        }
        let sub = dir.join(definition.kind().directory());
        std::fs::create_dir_all(&sub)
            .with_context(|| format!("cannot create {}", sub.display()))?;
        let path = sub.join(format!("{name}.json"));
        let text = serde_json::to_string_pretty(&definition.comparable())? + "\n";
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(dir.join("README.md"), EXPORT_README)
        .with_context(|| format!("cannot write {}", dir.join("README.md").display()))?;
    println!(
        "Exported {} definition(s) to {}",
        stored.len(),
        dir.display()
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn field_lines_show_absent_and_shorten_long_values() {
        let line = field_line(&FieldChange {
            path: "data[1]".into(),
            before: None,
            after: Some(json!("x".repeat(100))),
        });
        assert!(line.starts_with("data[1]: (absent) → \"xxx"), "{line}");
        assert!(line.ends_with('…'), "{line}");
        assert_eq!(no_changes(1), "no changes (1 definition up to date)");
    }
}
