//! `sluice backup FILE` and `sluice restore FILE`: a whole data directory (database,
//! secret key, outputs) as one archive, taken online (`sluice serve` may keep running).

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use sluice_embedded::backup::BackupError;
use sluice_embedded::EmbeddedStore;

use crate::InvalidInput;

/// A refusal is the user's to fix (exit 2); anything else is exit 3.
fn backup_error(e: BackupError) -> anyhow::Error {
    match e {
        BackupError::Refused(message) => InvalidInput(message).into(),
        other => other.into(),
    }
}

pub async fn backup(data_dir: &Path, file: &Path) -> anyhow::Result<u8> {
    let started = Instant::now();
    let (dir, archive) = (data_dir.to_path_buf(), file.to_path_buf());
    let report =
        tokio::task::spawn_blocking(move || sluice_embedded::backup::backup(&dir, &archive))
            .await
            .context("the backup task failed")?
            .map_err(backup_error)?;
    eprintln!(
        "Backed up {} to {} ({} bytes, {} output file(s){}) in {:.2}s",
        data_dir.display(),
        file.display(),
        report.archive_bytes,
        report.manifest.output_files,
        if report.manifest.has_secret_key {
            ", secret key included: keep the archive private"
        } else {
            ""
        },
        started.elapsed().as_secs_f64()
    );
    Ok(0)
}

pub async fn restore(data_dir: &Path, file: &Path) -> anyhow::Result<u8> {
    let started = Instant::now();
    let manifest = sluice_embedded::backup::restore(file, data_dir).map_err(backup_error)?;
    // Open it as every command will: migrations run, and the key must match the data.
    let store = EmbeddedStore::open(data_dir)
        .with_context(|| format!("cannot open the restored {}", data_dir.display()))?;
    store
        .secrets()
        .check_key()
        .await
        .context("the restored secret key does not match the restored database")?;
    eprintln!(
        "Restored {} (taken {}) into {} in {:.2}s",
        file.display(),
        sluice_core::task::rfc3339(&manifest.created_at),
        data_dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(0)
}
