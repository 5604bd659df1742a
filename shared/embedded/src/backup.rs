//! Backup and restore of a whole data directory as one tar archive: a consistent copy of
//! the database (SQLite's online backup API, so `sluice serve` keeps running), the secret
//! key (without which the stored secrets cannot be read) and the large outputs.
//!
//! The database is copied first, in one step under one read transaction (a snapshot;
//! writers are not blocked in WAL mode), then the output files: every file a row of the
//! snapshot names exists by then, as output files are written before their rows and only
//! deleted once their rows are.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::db::{private_dir, PRIVATE_FILE_MODE};
use crate::{DATABASE_FILE, LOCK_FILE, OUTPUTS_DIR, SCHEMA_VERSION, SECRET_KEY_FILE};

/// The archive's first entry: what it holds.
pub const MANIFEST_FILE: &str = "sluice-backup.json";

/// Why a backup or restore failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0}")]
    Refused(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("the database copy failed: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackupError {
    let context = context.into();
    move |source| BackupError::Io { context, source }
}

/// The manifest of an archive.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always `sluice-backup`.
    pub kind: String,
    pub schema_version: i64,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub has_secret_key: bool,
    pub output_files: u64,
}

/// What a backup wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    pub manifest: Manifest,
    pub archive_bytes: u64,
}

/// Writes the data directory `data_dir` to a new archive `archive` (which must not
/// exist). Safe while another process uses the data directory.
pub fn backup(data_dir: &Path, archive: &Path) -> Result<BackupReport, BackupError> {
    let database = data_dir.join(DATABASE_FILE);
    if !database.is_file() {
        return Err(BackupError::Refused(format!(
            "{} is not a sluice data directory (no {DATABASE_FILE})",
            data_dir.display()
        )));
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_FILE_MODE)
        .open(archive)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                BackupError::Refused(format!(
                    "{} exists; choose a new file name",
                    archive.display()
                ))
            } else {
                BackupError::Io {
                    context: format!("cannot create {}", archive.display()),
                    source: e,
                }
            }
        })?;
    let scratch_parent = match archive.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let written = write_archive(data_dir, &database, &scratch_parent, file);
    if written.is_err() {
        let _ = std::fs::remove_file(archive);
    }
    let manifest = written?;
    let archive_bytes = std::fs::metadata(archive)
        .map_err(io(format!("cannot read {}", archive.display())))?
        .len();
    Ok(BackupReport {
        manifest,
        archive_bytes,
    })
}

fn write_archive(
    data_dir: &Path,
    database: &Path,
    scratch_parent: &Path,
    file: File,
) -> Result<Manifest, BackupError> {
    // The snapshot goes to a private scratch directory beside the archive, removed when
    // done.
    let scratch = tempfile_dir(scratch_parent)?;
    let snapshot = scratch.path.join(DATABASE_FILE);
    {
        let source = rusqlite::Connection::open(database)?;
        source.busy_timeout(std::time::Duration::from_secs(10))?;
        let mut target = rusqlite::Connection::open(&snapshot)?;
        let copy = rusqlite::backup::Backup::new(&source, &mut target)?;
        // All pages in one step: one read transaction, so one consistent snapshot.
        loop {
            match copy.step(-1)? {
                rusqlite::backup::StepResult::Done => break,
                rusqlite::backup::StepResult::More => continue,
                rusqlite::backup::StepResult::Busy | rusqlite::backup::StepResult::Locked => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                _ => continue,
            }
        }
    }
    let schema_version: i64 =
        rusqlite::Connection::open(&snapshot)?
            .query_row("PRAGMA user_version", [], |row| row.get(0))?;

    let mut builder = tar::Builder::new(std::io::BufWriter::new(file));
    let key = data_dir.join(SECRET_KEY_FILE);
    let has_secret_key = key.is_file();
    let outputs_dir = data_dir.join(OUTPUTS_DIR);
    let mut outputs = Vec::new();
    if outputs_dir.is_dir() {
        for entry in std::fs::read_dir(&outputs_dir)
            .map_err(io(format!("cannot list {}", outputs_dir.display())))?
        {
            let entry = entry.map_err(io(format!("cannot list {}", outputs_dir.display())))?;
            let name = entry.file_name();
            let is_output = entry.file_type().is_ok_and(|t| t.is_file())
                && name.to_string_lossy().ends_with(".json");
            if is_output {
                outputs.push(name);
            }
        }
    }
    outputs.sort();
    let manifest = Manifest {
        kind: "sluice-backup".into(),
        schema_version,
        created_at: chrono::Utc::now(),
        has_secret_key,
        output_files: outputs.len() as u64,
    };
    let manifest_json = serde_json::to_vec_pretty(&manifest).expect("a manifest serializes");
    let mut header = tar::Header::new_gnu();
    header.set_size(manifest_json.len() as u64);
    header.set_mode(PRIVATE_FILE_MODE);
    header.set_mtime(manifest.created_at.timestamp().max(0) as u64);
    header.set_cksum();
    builder
        .append_data(&mut header, MANIFEST_FILE, manifest_json.as_slice())
        .map_err(io("cannot write the archive"))?;
    builder
        .append_path_with_name(&snapshot, DATABASE_FILE)
        .map_err(io("cannot write the archive"))?;
    if has_secret_key {
        builder
            .append_path_with_name(&key, SECRET_KEY_FILE)
            .map_err(io("cannot write the archive"))?;
    }
    for name in outputs {
        let path = outputs_dir.join(&name);
        match File::open(&path) {
            Ok(mut file) => builder
                .append_file(Path::new(OUTPUTS_DIR).join(&name), &mut file)
                .map_err(io("cannot write the archive"))?,
            // Purged since it was listed: its row is gone from the snapshot too.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(format!("cannot read {}", path.display()))(e)),
        }
    }
    let mut out = builder
        .into_inner()
        .map_err(io("cannot write the archive"))?;
    out.flush().map_err(io("cannot write the archive"))?;
    out.get_ref()
        .sync_all()
        .map_err(io("cannot write the archive"))?;
    Ok(manifest)
}

/// Restores an archive into `data_dir`, which must not exist or be empty (never over a
/// data directory in use or holding data). The archive is unpacked into a private
/// sibling directory first and moved into place only once complete.
pub fn restore(archive: &Path, data_dir: &Path) -> Result<Manifest, BackupError> {
    if data_dir.exists() {
        let mut entries = std::fs::read_dir(data_dir)
            .map_err(io(format!("cannot read {}", data_dir.display())))?;
        if entries.next().is_some() {
            let live = if data_dir.join(LOCK_FILE).exists() {
                " (it may be in use: it has a lock file)"
            } else {
                ""
            };
            return Err(BackupError::Refused(format!(
                "{} is not empty{live}; restore into a new or empty data directory",
                data_dir.display()
            )));
        }
    }
    let parent = match data_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // Only the data directory itself is made private, never a parent it lives in.
    std::fs::create_dir_all(&parent).map_err(io(format!("cannot create {}", parent.display())))?;
    let staging = tempfile_dir(&parent)?;
    let manifest = unpack(archive, &staging.path)?;
    if data_dir.exists() {
        std::fs::remove_dir(data_dir).map_err(io(format!(
            "cannot replace the empty {}",
            data_dir.display()
        )))?;
    }
    std::fs::rename(&staging.path, data_dir).map_err(io(format!(
        "cannot move the restored files to {}",
        data_dir.display()
    )))?;
    staging.keep();
    Ok(manifest)
}

/// Unpacks the archive's known entries (and nothing else) into `dir`, privately.
fn unpack(archive: &Path, dir: &Path) -> Result<Manifest, BackupError> {
    let file = File::open(archive).map_err(io(format!("cannot open {}", archive.display())))?;
    let mut tar = tar::Archive::new(std::io::BufReader::new(file));
    let not_a_backup = || {
        BackupError::Refused(format!(
            "{} is not a sluice backup archive",
            archive.display()
        ))
    };
    private_dir(&dir.join(OUTPUTS_DIR)).map_err(io("cannot create outputs/"))?;
    let mut manifest: Option<Manifest> = None;
    let mut has_database = false;
    let entries = tar.entries().map_err(|_| not_a_backup())?;
    for entry in entries {
        let mut entry = entry.map_err(|_| not_a_backup())?;
        let path = entry.path().map_err(|_| not_a_backup())?.into_owned();
        let name = path.to_string_lossy().into_owned();
        let target = if name == MANIFEST_FILE {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).map_err(|_| not_a_backup())?;
            manifest = Some(serde_json::from_str(&text).map_err(|_| not_a_backup())?);
            continue;
        } else if name == DATABASE_FILE || name == SECRET_KEY_FILE {
            has_database |= name == DATABASE_FILE;
            dir.join(&name)
        } else if let Some(file) = name.strip_prefix(&format!("{OUTPUTS_DIR}/")) {
            let plain = !file.is_empty()
                && file
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                && !file.starts_with('.');
            if !plain {
                return Err(not_a_backup());
            }
            dir.join(OUTPUTS_DIR).join(file)
        } else {
            return Err(BackupError::Refused(format!(
                "{}: unexpected entry {name:?}; not a sluice backup archive",
                archive.display()
            )));
        };
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(PRIVATE_FILE_MODE)
            .open(&target)
            .map_err(io(format!("cannot create {}", target.display())))?;
        std::io::copy(&mut entry, &mut out)
            .map_err(io(format!("cannot write {}", target.display())))?;
        out.sync_all()
            .map_err(io(format!("cannot write {}", target.display())))?;
    }
    let manifest = manifest.ok_or_else(not_a_backup)?;
    if manifest.kind != "sluice-backup" || !has_database {
        return Err(not_a_backup());
    }
    if manifest.schema_version > SCHEMA_VERSION {
        return Err(BackupError::Refused(format!(
            "the backup has schema version {}, newer than this sluice understands \
             ({SCHEMA_VERSION}); upgrade sluice",
            manifest.schema_version
        )));
    }
    Ok(manifest)
}

/// A private directory with a unique name under `parent`, removed on drop unless kept.
struct ScratchDir {
    path: PathBuf,
    keep: bool,
}

impl ScratchDir {
    fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn tempfile_dir(parent: &Path) -> Result<ScratchDir, BackupError> {
    let path = parent.join(format!(
        ".sluice-backup-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    private_dir(&path).map_err(io(format!("cannot create {}", path.display())))?;
    Ok(ScratchDir { path, keep: false })
}
