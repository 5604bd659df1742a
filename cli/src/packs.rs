//! `sluice packs`: build a pack directory into one archive (locally, no server), and
//! install, list, show, activate, delete and copy through the API (`/api/v1/syncpacks`)
//! — in process on the data directory, or on a server with `--endpoint`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use serde_json::json;
use sluice_core::json::parse_document;
use sluice_core::model::{Application, Configuration, Schedule};
use sluice_core::operators;
use sluice_core::pack::{
    normalize_version, validate_archive, PackArchive, PackManifest, MANIFEST_FILE,
    MAX_ARCHIVE_BYTES, MAX_PACK_DOCUMENTS,
};
use sluice_core::schedule::validate_schedule;
use sluice_core::step::StepRegistry;
use sluice_core::validate::{validate_application, validate_configuration, StepCatalog};
use sluice_runtime::packs::{PackActivated, PackDeleted, PackInstalled, PackSummary};

use crate::client::{segment, Connect};
use crate::InvalidInput;

/// Largest document file read from a pack directory.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

#[derive(Subcommand)]
pub enum PacksCommand {
    /// Build a pack directory (`pack.json`, `applications/`, `configurations/`,
    /// `schedules/`) into one archive file; needs no server.
    Build {
        dir: PathBuf,
        /// The archive to write (default: `<name>-<version>.pack.json` here).
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
    },
    /// Install (store, not activate) the version an archive holds.
    Install { file: PathBuf },
    /// Installed packs: versions, the active one.
    List {
        /// Only packs with an active version.
        #[arg(long)]
        only_activated: bool,
    },
    /// One installed pack, as JSON.
    Get { name: String },
    /// Make VERSION the pack's live content: the first activation, an upgrade or a
    /// rollback alike.
    Activate { name: String, version: String },
    /// Delete one installed (inactive) version, or without VERSION uninstall the whole
    /// pack with the definitions it owns.
    Delete {
        name: String,
        version: Option<String>,
    },
    /// Save a copy of an application (or with `--configuration`, a configuration) under
    /// a new name, owned by you: how a pack's read-only definition is changed.
    SaveAs {
        name: String,
        new_name: String,
        #[arg(long)]
        configuration: bool,
    },
}

/// Runs a `packs` command; every command but `build` through `client`.
pub async fn run(
    connect: &Connect,
    registry: &StepRegistry,
    cmd: PacksCommand,
) -> anyhow::Result<u8> {
    if let PacksCommand::Build { dir, output } = cmd {
        return build(&dir, output.as_deref(), registry);
    }
    let client = connect.client(registry).await?;
    match cmd {
        PacksCommand::Build { .. } => unreachable!("handled above"),
        PacksCommand::Install { file } => {
            let text = read_bounded(&file, MAX_ARCHIVE_BYTES as u64)?;
            let done: PackInstalled = crate::client::read_as(
                client
                    .send_text(reqwest::Method::POST, "/api/v1/syncpacks", text)
                    .await?,
            )?;
            let what = if done.created {
                "installed"
            } else {
                "already installed"
            };
            println!("{what} {} {} ({})", done.name, done.version, done.hash);
        }
        PacksCommand::List { only_activated } => {
            let path = format!("/api/v1/syncpacks?only_activated={only_activated}");
            let packs: Vec<PackSummary> = client.get_as(&path).await?;
            if packs.is_empty() {
                println!("no packs installed");
            }
            for pack in packs {
                let versions: Vec<&str> =
                    pack.versions.iter().map(|v| v.version.as_str()).collect();
                println!(
                    "{}  active: {}  installed: {}",
                    pack.name,
                    pack.active_version.as_deref().unwrap_or("none"),
                    versions.join(", ")
                );
            }
        }
        PacksCommand::Get { name } => {
            let doc = client
                .get(&format!("/api/v1/syncpacks/{}", segment(&name)))
                .await?;
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        PacksCommand::Activate { name, version } => {
            let path = format!(
                "/api/v1/syncpacks/{}/versions/{}/activate",
                segment(&name),
                segment(&version)
            );
            let done: PackActivated = client.post_as(&path, &json!({})).await?;
            match &done.previous_version {
                Some(previous) if previous != &done.version => {
                    println!("activated {} {} (was {previous})", done.name, done.version)
                }
                _ => println!("activated {} {}", done.name, done.version),
            }
            for change in &done.changes {
                println!(
                    "  {} {} {}",
                    change.action,
                    change.kind.as_str(),
                    change.name
                );
            }
            if done.changes.is_empty() {
                println!("  no changes ({} unchanged)", done.unchanged);
            }
            for kept in &done.kept_settings {
                println!("  kept your setting: {kept}");
            }
        }
        PacksCommand::Delete { name, version } => {
            let path = match &version {
                Some(v) => format!(
                    "/api/v1/syncpacks/{}/versions/{}",
                    segment(&name),
                    segment(v)
                ),
                None => format!("/api/v1/syncpacks/{}", segment(&name)),
            };
            let done: PackDeleted = crate::client::read_as(client.delete(&path).await?)?;
            println!("deleted {} {}", done.name, done.versions.join(", "));
            for d in &done.deleted {
                println!("  deleted {} {}", d.kind.as_str(), d.name);
            }
        }
        PacksCommand::SaveAs {
            name,
            new_name,
            configuration,
        } => {
            let collection = if configuration {
                "configurations"
            } else {
                "applications"
            };
            let doc = client
                .post(
                    &format!("/api/v1/{collection}/{}/copy", segment(&name)),
                    &json!({"name": new_name}),
                )
                .await?;
            println!(
                "saved {} as {} (yours to change)",
                name,
                doc["name"].as_str().unwrap_or(&new_name)
            );
        }
    }
    Ok(0)
}

fn read_bounded(path: &Path, max: u64) -> anyhow::Result<String> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if !meta.is_file() {
        return Err(InvalidInput(format!("{}: not a file", path.display())).into());
    }
    if meta.len() > max {
        return Err(InvalidInput(format!(
            "{}: {} bytes; at most {max} are read",
            path.display(),
            meta.len()
        ))
        .into());
    }
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// The `*.json` files directly in `dir/sub` (none when it does not exist), by name.
fn documents(dir: &Path, sub: &str) -> anyhow::Result<Vec<PathBuf>> {
    let folder = dir.join(sub);
    if !folder.exists() {
        return Ok(Vec::new());
    }
    let mut files = Vec::new();
    for entry in
        std::fs::read_dir(&folder).with_context(|| format!("reading {}", folder.display()))?
    {
        let entry = entry?;
        // Symbolic links are not followed: a pack is the directory's own files.
        if entry.file_type()?.is_file() && entry.path().extension().is_some_and(|e| e == "json") {
            files.push(entry.path());
        }
        if files.len() > MAX_PACK_DOCUMENTS {
            return Err(InvalidInput(format!(
                "{}: more than {MAX_PACK_DOCUMENTS} documents",
                folder.display()
            ))
            .into());
        }
    }
    files.sort();
    Ok(files)
}

fn parse_file<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text = read_bounded(path, MAX_FILE_BYTES)?;
    parse_document(&text).map_err(|e| InvalidInput(format!("{}: {e}", path.display())).into())
}

/// Reads a pack directory, checks everything that can be checked without a server and
/// writes the archive.
fn build(dir: &Path, output: Option<&Path>, registry: &StepRegistry) -> anyhow::Result<u8> {
    let manifest: PackManifest = parse_file(&dir.join(MANIFEST_FILE))?;
    let mut problems = Vec::new();
    let mut applications = Vec::new();
    let catalog = StepCatalog::new(registry);
    for path in documents(dir, "applications")? {
        let mut app: Application = parse_file(&path)?;
        app.normalize();
        // Applications using step types this binary lacks are validated on activation.
        let known = app
            .steps
            .iter()
            .all(|s| operators::is_operator(&s.step_type) || registry.get(&s.step_type).is_some());
        if known {
            if let Err(e) = validate_application(&app, &catalog) {
                problems.push(format!("{}: {e}", path.display()));
            }
        }
        applications.push(app);
    }
    let mut configurations = Vec::new();
    for path in documents(dir, "configurations")? {
        let config: Configuration = parse_file(&path)?;
        if let Err(e) = validate_configuration(&config) {
            problems.push(format!("{}: {e}", path.display()));
        }
        configurations.push(config);
    }
    let mut schedules = Vec::new();
    for path in documents(dir, "schedules")? {
        let schedule: Schedule = parse_file(&path)?;
        if let Err(e) = validate_schedule(&schedule) {
            problems.push(format!("{}: {e}", path.display()));
        }
        schedules.push(schedule);
    }
    let archive = PackArchive::new(manifest, applications, configurations, schedules);
    if let Err(e) = validate_archive(&archive) {
        problems.push(e.to_string());
    }
    if !problems.is_empty() {
        return Err(InvalidInput(problems.join("\n")).into());
    }
    let text = serde_json::to_string_pretty(&archive)? + "\n";
    if text.len() > MAX_ARCHIVE_BYTES {
        return Err(InvalidInput(format!(
            "the archive would be {} bytes; at most {MAX_ARCHIVE_BYTES}",
            text.len()
        ))
        .into());
    }
    let version = normalize_version(&archive.manifest.version).unwrap_or_default();
    let output = output
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(format!("{}-{version}.pack.json", archive.manifest.name)));
    std::fs::write(&output, text).with_context(|| format!("writing {}", output.display()))?;
    let count = archive.applications.len() + archive.configurations.len() + archive.schedules.len();
    println!(
        "built {} {version}: {count} documents -> {} ({})",
        archive.manifest.name,
        output.display(),
        archive.hash
    );
    for req in &archive.manifest.step_types {
        if registry.get(&req.step_type).is_none() {
            println!(
                "note: step type \"{}\" is not in this binary; the deployment that activates the pack needs it (from {})",
                req.step_type, req.source
            );
        }
    }
    Ok(0)
}
