//! [`EmbeddedStore`]: definitions, runs, outputs, logs, cache and schedules in SQLite,
//! with outputs over [`INLINE_OUTPUT_LIMIT`] kept as files beside the database.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, OptionalExtension};
use serde::de::DeserializeOwned;
use serde_json::Value;
use sluice_core::clock::Clock;
use sluice_core::logs;
use sluice_core::model::{Application, Configuration, LogEntry, Run, Schedule};
use sluice_core::ports::{
    Cache, CacheKeys, DefinitionStore, OutputKey, RunQuery, RunStore, ScheduleStore, StoreError,
    MAX_CACHE_PAGE,
};
use sluice_core::versions::{
    DefinitionKind, DefinitionVersion, NewVersion, PushOutcome, VersionInfo, VersionStamp,
};

use crate::db::{add_duration, json_error, nanos, sql, Shared};
use crate::queue::EmbeddedQueue;
use crate::secrets::EmbeddedSecrets;
use crate::Ports;

/// Outputs whose JSON is larger than this are written to a file under `outputs/` and the
/// row only names the file: big rows would bloat the WAL and every page cache.
pub const INLINE_OUTPUT_LIMIT: usize = 256 * 1024;

/// Page size of [`RunQuery`] when its `limit` is 0.
pub const DEFAULT_LIST_LIMIT: usize = 50;

/// Page size of `get_logs` when its `limit` is 0.
pub const DEFAULT_LOG_LIMIT: usize = 1000;

/// Rows deleted per transaction by [`EmbeddedStore::purge_expired`], so that purging a
/// large backlog never holds the connection for long.
const PURGE_BATCH: i64 = 500;

/// Files in `outputs/` that no row references are deleted by a purge once this old (a
/// crash between writing the file and committing its row leaves one).
const ORPHAN_AGE: Duration = Duration::from_secs(3600);

/// The embedded store of one data directory. Cheap to clone: clones share the connection.
///
/// It implements [`DefinitionStore`], [`RunStore`], [`Cache`] and [`ScheduleStore`];
/// [`EmbeddedStore::queue`] and [`EmbeddedStore::secrets`] give the queue and the secret
/// store on the same database.
#[derive(Clone)]
pub struct EmbeddedStore {
    pub(crate) shared: Arc<Shared>,
    /// What expiry is judged by (cache TTLs start from it too), and the queue's delays and
    /// visibility timeouts; the system clock unless [`EmbeddedStore::with_clock`] says
    /// otherwise.
    clock: Arc<dyn Clock>,
    /// Copies of the runs this process wrote last (`run_rows`), shared by clones.
    pub(crate) run_cache: Arc<crate::run_rows::RunCache>,
}

/// What one [`EmbeddedStore::purge_expired`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeReport {
    pub runs: u64,
    pub outputs: u64,
    pub logs: u64,
    pub cache_entries: u64,
    /// Report parts (one per step unit that reported).
    pub report_parts: u64,
    /// Output files removed (those of expired outputs and orphans).
    pub files: u64,
}

impl EmbeddedStore {
    /// Opens (creating when needed) the data directory and its `sluice.db`, migrating the
    /// schema to the current version.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        Ok(Self {
            shared: Arc::new(Shared::open(data_dir)?),
            clock: sluice_core::clock::system(),
            run_cache: Arc::default(),
        })
    }

    /// This store judging expiry by `clock`, and its [`EmbeddedStore::queue`] when a
    /// message becomes visible (tests move time instead of sleeping).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Now, by this store's clock, in the database's unit.
    pub(crate) fn now_nanos(&self) -> i64 {
        nanos(self.clock.now())
    }

    pub fn data_dir(&self) -> &Path {
        &self.shared.data_dir
    }

    /// The durable queue on the same database, on this store's clock.
    pub fn queue(&self) -> EmbeddedQueue {
        EmbeddedQueue {
            shared: self.shared.clone(),
            clock: self.clock.clone(),
        }
    }

    /// The secret store on the same database (key file `secret.key` in the data dir).
    pub fn secrets(&self) -> EmbeddedSecrets {
        EmbeddedSecrets {
            shared: self.shared.clone(),
        }
    }

    pub fn definitions(&self) -> Arc<dyn DefinitionStore> {
        Arc::new(self.clone())
    }

    pub fn runs(&self) -> Arc<dyn RunStore> {
        Arc::new(self.clone())
    }

    pub fn cache(&self) -> Arc<dyn Cache> {
        Arc::new(self.clone())
    }

    pub fn schedules(&self) -> Arc<dyn ScheduleStore> {
        Arc::new(self.clone())
    }

    /// The ports a runtime over this data directory works through.
    pub fn backend(&self) -> sluice_core::ports::Backend {
        let p = self.ports();
        sluice_core::ports::Backend {
            definitions: p.definitions,
            runs: p.runs,
            queue: p.queue,
            secrets: p.secrets,
            cache: p.cache,
            packs: self.packs(),
            reports: p.reports,
        }
    }

    /// Every port of this data directory as trait objects.
    pub fn ports(&self) -> Ports {
        Ports {
            definitions: self.definitions(),
            runs: self.runs(),
            cache: self.cache(),
            schedules: self.schedules(),
            queue: Arc::new(self.queue()),
            secrets: Arc::new(self.secrets()),
            reports: Arc::new(self.clone()),
        }
    }

    /// Deletes expired runs (with their snapshots), outputs (with their files), logs,
    /// report parts and cache entries, in small batches. Reads already ignore expired records; this only
    /// reclaims space. Also removes output files no row references (older than an hour).
    pub async fn purge_expired(&self) -> Result<PurgeReport, StoreError> {
        self.purge_expired_at(self.clock.now()).await
    }

    /// [`EmbeddedStore::purge_expired`] as of `now` (tests drive the time).
    pub async fn purge_expired_at(&self, now: DateTime<Utc>) -> Result<PurgeReport, StoreError> {
        let mut report = PurgeReport::default();
        let now = crate::db::nanos(now);

        loop {
            let deleted = self
                .shared
                .write(|conn| {
                    let ids: Vec<String> = conn
                        .prepare_cached("SELECT id FROM runs WHERE expires_at <= ?1 LIMIT ?2")?
                        .query_map(params![now, PURGE_BATCH], |row| row.get(0))?
                        .collect::<Result<_, _>>()?;
                    let mut run = conn.prepare_cached("DELETE FROM runs WHERE id = ?1")?;
                    let mut snapshot =
                        conn.prepare_cached("DELETE FROM run_snapshots WHERE run_id = ?1")?;
                    for id in &ids {
                        run.execute([id])?;
                        snapshot.execute([id])?;
                        crate::run_rows::delete_rows(conn, id)?;
                    }
                    Ok(ids.len())
                })
                .await
                .map_err(sql)?;
            if deleted == 0 {
                break;
            }
            report.runs += deleted as u64;
        }
        report.logs = self
            .purge_batches(
                "DELETE FROM logs WHERE seq IN \
                 (SELECT seq FROM logs WHERE expires_at <= ?1 LIMIT ?2)",
                now,
            )
            .await?;
        report.report_parts = self
            .purge_batches(crate::reports::PURGE_EXPIRED, now)
            .await?;
        report.cache_entries = self
            .purge_batches(
                "DELETE FROM cache WHERE key IN (SELECT key FROM cache \
                 WHERE expires_at IS NOT NULL AND expires_at <= ?1 LIMIT ?2)",
                now,
            )
            .await?;

        // Outputs: delete rows first, then their files, so a reader never finds a row
        // whose file is gone for good.
        loop {
            let rows: Vec<(i64, Option<String>)> = self
                .shared
                .write(|conn| {
                    let rows: Vec<(i64, Option<String>)> = conn
                        .prepare_cached(
                            "SELECT rowid, file FROM outputs WHERE expires_at <= ?1 LIMIT ?2",
                        )?
                        .query_map(params![now, PURGE_BATCH], |row| {
                            Ok((row.get(0)?, row.get(1)?))
                        })?
                        .collect::<Result<_, _>>()?;
                    let mut delete = conn.prepare_cached("DELETE FROM outputs WHERE rowid = ?1")?;
                    for (rowid, _) in &rows {
                        delete.execute([rowid])?;
                    }
                    Ok(rows)
                })
                .await
                .map_err(sql)?;
            if rows.is_empty() {
                break;
            }
            report.outputs += rows.len() as u64;
            for file in rows.into_iter().filter_map(|(_, file)| file) {
                if remove_file_quietly(&self.shared.outputs_dir.join(file)) {
                    report.files += 1;
                }
            }
        }
        report.files += self.remove_orphan_files()?;
        Ok(report)
    }

    /// Runs a `DELETE … LIMIT ?2` statement until it deletes nothing: short transactions
    /// that let the workers in between.
    async fn purge_batches(&self, statement: &str, now: i64) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let deleted = self
                .shared
                .write(|conn| {
                    conn.prepare_cached(statement)?
                        .execute(params![now, PURGE_BATCH])
                })
                .await
                .map_err(sql)?;
            total += deleted as u64;
            if deleted == 0 {
                return Ok(total);
            }
        }
    }

    fn remove_orphan_files(&self) -> Result<u64, StoreError> {
        let Ok(entries) = std::fs::read_dir(&self.shared.outputs_dir) else {
            return Ok(0);
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let old_enough = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|modified| SystemTime::now().duration_since(modified).ok())
                .is_some_and(|age| age >= ORPHAN_AGE);
            if !old_enough {
                continue;
            }
            let referenced = !name.ends_with(".tmp")
                && self
                    .shared
                    .read(|conn| {
                        conn.prepare_cached("SELECT 1 FROM outputs WHERE file = ?1")?
                            .exists([&name])
                    })
                    .map_err(sql)?;
            if !referenced && remove_file_quietly(&entry.path()) {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The JSON text of the first column of the row `statement` selects with `params`.
    fn read_text<P: rusqlite::Params>(
        &self,
        statement: &str,
        params: P,
    ) -> Result<Option<String>, StoreError> {
        self.shared
            .read(|conn| {
                conn.prepare_cached(statement)?
                    .query_row(params, |row| row.get(0))
                    .optional()
            })
            .map_err(sql)
    }

    fn get_doc<T: DeserializeOwned, P: rusqlite::Params>(
        &self,
        statement: &str,
        params: P,
    ) -> Result<Option<T>, StoreError> {
        self.read_text(statement, params)?
            .map(|t| serde_json::from_str(&t).map_err(json_error))
            .transpose()
    }

    fn list_docs<T: DeserializeOwned, P: rusqlite::Params>(
        &self,
        statement: &str,
        params: P,
    ) -> Result<Vec<T>, StoreError> {
        let texts: Vec<String> = self
            .shared
            .read(|conn| {
                conn.prepare_cached(statement)?
                    .query_map(params, |row| row.get(0))?
                    .collect()
            })
            .map_err(sql)?;
        texts
            .iter()
            .map(|t| serde_json::from_str(t).map_err(json_error))
            .collect()
    }

    async fn put_doc(&self, statement: &str, key: &str, doc: &str) -> Result<(), StoreError> {
        self.shared
            .write(|conn| conn.prepare_cached(statement)?.execute([key, doc]))
            .await
            .map_err(sql)?;
        Ok(())
    }

    async fn delete_key(&self, statement: &str, key: &str) -> Result<bool, StoreError> {
        let deleted = self
            .shared
            .write(|conn| conn.prepare_cached(statement)?.execute([key]))
            .await
            .map_err(sql)?;
        Ok(deleted > 0)
    }

    /// Reads an output row: its inline JSON, or the file name holding it.
    fn output_row(&self, key: &OutputKey) -> Result<Option<StoredOutput>, StoreError> {
        self.shared
            .read(|conn| {
                conn.prepare_cached(
                    "SELECT value, file FROM outputs \
                     WHERE run_id = ?1 AND step_id = ?2 AND unit = ?3 AND expires_at > ?4",
                )?
                .query_row(
                    params![key.run_id, key.step_id, key.unit, self.now_nanos()],
                    |row| {
                        let inline: Option<String> = row.get(0)?;
                        let file: Option<String> = row.get(1)?;
                        Ok(match (inline, file) {
                            (Some(text), _) => StoredOutput::Inline(text),
                            (None, Some(name)) => StoredOutput::File(name),
                            (None, None) => StoredOutput::Missing,
                        })
                    },
                )
                .optional()
            })
            .map_err(sql)
    }
}

/// Where an output row keeps its JSON.
enum StoredOutput {
    Inline(String),
    /// A file name under `outputs/`.
    File(String),
    /// Neither (a corrupted row).
    Missing,
}

fn remove_file_quietly(path: &Path) -> bool {
    match std::fs::remove_file(path) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove an output file");
            false
        }
    }
}

/// Writes `bytes` to a fresh file under `dir` atomically (temporary file, fsync, rename)
/// and returns its name. Unique names mean a reader of the previous version is never
/// disturbed by an overwrite.
fn write_output_file(dir: &Path, bytes: &[u8]) -> Result<String, StoreError> {
    let name = format!("{}.json", uuid::Uuid::now_v7());
    let final_path = dir.join(&name);
    let temp_path: PathBuf = dir.join(format!("{name}.tmp"));
    let io = |e: std::io::Error| {
        StoreError::Backend(format!(
            "cannot write output file {}: {e}",
            final_path.display()
        ))
    };
    let result = (|| -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(crate::db::PRIVATE_FILE_MODE)
            .open(&temp_path)?;
        file.write_all(bytes)?;
        // The row that names the file may survive a power cut; the file must too.
        file.sync_data()?;
        std::fs::rename(&temp_path, &final_path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&temp_path);
        return Err(io(e));
    }
    Ok(name)
}

fn text(value: &str) -> SqlValue {
    SqlValue::Text(value.to_string())
}

/// The table of a kind's current definitions.
fn current_table(kind: DefinitionKind) -> &'static str {
    match kind {
        DefinitionKind::Application => "applications",
        DefinitionKind::Configuration => "configurations",
    }
}

impl EmbeddedStore {
    /// Deletes a definition and its versions in one operation.
    async fn delete_definition(
        &self,
        kind: DefinitionKind,
        name: &str,
    ) -> Result<bool, StoreError> {
        let deleted = self
            .shared
            .write(|conn| {
                let deleted = conn
                    .prepare_cached(&format!(
                        "DELETE FROM {} WHERE name = ?1",
                        current_table(kind)
                    ))?
                    .execute([name])?;
                conn.prepare_cached(
                    "DELETE FROM definition_versions WHERE kind = ?1 AND name = ?2",
                )?
                .execute([kind.as_str(), name])?;
                Ok(deleted)
            })
            .await
            .map_err(sql)?;
        Ok(deleted > 0)
    }
}

#[async_trait]
impl DefinitionStore for EmbeddedStore {
    /// One savepoint reads the latest version, inserts the next one, replaces the current
    /// document and deletes what retention drops, so pushes are serialized by the
    /// database's single writer.
    async fn push_definition(&self, push: &NewVersion) -> Result<PushOutcome, StoreError> {
        if push.name.is_empty() {
            return Err(StoreError::Backend(format!(
                "the {} has no name",
                push.kind.as_str()
            )));
        }
        let doc = serde_json::to_string(&push.document).map_err(json_error)?;
        let encrypted = serde_json::to_string(&push.encrypted).map_err(json_error)?;
        let created_at = self.now_nanos();
        let kind = push.kind.as_str();
        self.shared
            .write(|conn| {
                let latest: Option<(i64, String)> = conn
                    .prepare_cached(
                        "SELECT version, hash FROM definition_versions \
                         WHERE kind = ?1 AND name = ?2 ORDER BY version DESC LIMIT 1",
                    )?
                    .query_row([kind, &push.name], |row| Ok((row.get(0)?, row.get(1)?)))
                    .optional()?;
                if let Some((version, hash)) = &latest {
                    if *hash == push.hash {
                        return Ok(PushOutcome {
                            version: *version as u64,
                            created: false,
                        });
                    }
                }
                let version = latest.map_or(1, |(v, _)| v + 1);
                conn.prepare_cached(
                    "INSERT INTO definition_versions \
                     (kind, name, version, author, created_at, hash, encrypted, doc) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?
                .execute(params![
                    kind,
                    push.name,
                    version,
                    push.author,
                    created_at,
                    push.hash,
                    encrypted,
                    doc
                ])?;
                conn.prepare_cached(&format!(
                    "INSERT INTO {} (name, doc) VALUES (?1, ?2) \
                     ON CONFLICT (name) DO UPDATE SET doc = excluded.doc",
                    current_table(push.kind)
                ))?
                .execute([&push.name, &doc])?;
                conn.prepare_cached(
                    "DELETE FROM definition_versions \
                     WHERE kind = ?1 AND name = ?2 AND version <= ?3",
                )?
                .execute(params![
                    kind,
                    push.name,
                    push.expired_at_or_below(version as u64) as i64
                ])?;
                Ok(PushOutcome {
                    version: version as u64,
                    created: true,
                })
            })
            .await
            .map_err(sql)
    }

    async fn list_versions(
        &self,
        kind: DefinitionKind,
        name: &str,
        limit: usize,
    ) -> Result<Vec<VersionInfo>, StoreError> {
        let rows: Vec<(i64, String, i64, String, String)> =
            self.shared
                .read(|conn| {
                    conn.prepare_cached(
                    "SELECT version, author, created_at, hash, encrypted FROM definition_versions \
                     WHERE kind = ?1 AND name = ?2 ORDER BY version DESC LIMIT ?3",
                )?
                .query_map(params![kind.as_str(), name, limit as i64], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?))
                })?
                .collect()
                })
                .map_err(sql)?;
        rows.into_iter()
            .map(|(version, author, created_at, hash, encrypted)| {
                Ok(VersionInfo {
                    version: version as u64,
                    author,
                    created_at: DateTime::from_timestamp_nanos(created_at),
                    hash,
                    encrypted: serde_json::from_str(&encrypted).map_err(json_error)?,
                })
            })
            .collect()
    }

    async fn latest_version(
        &self,
        kind: DefinitionKind,
        name: &str,
    ) -> Result<Option<VersionStamp>, StoreError> {
        Ok(self
            .list_versions(kind, name, 1)
            .await?
            .into_iter()
            .next()
            .map(|info| VersionStamp {
                version: info.version,
                hash: info.hash,
            }))
    }

    async fn get_version(
        &self,
        kind: DefinitionKind,
        name: &str,
        version: u64,
    ) -> Result<Option<DefinitionVersion>, StoreError> {
        let row: Option<(String, i64, String, String, String)> = self
            .shared
            .read(|conn| {
                conn.prepare_cached(
                    "SELECT author, created_at, hash, encrypted, doc FROM definition_versions \
                     WHERE kind = ?1 AND name = ?2 AND version = ?3",
                )?
                .query_row(params![kind.as_str(), name, version as i64], |row| {
                    Ok((
                        row.get(0)?,
                        row.get(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                    ))
                })
                .optional()
            })
            .map_err(sql)?;
        row.map(|(author, created_at, hash, encrypted, doc)| {
            Ok(DefinitionVersion {
                info: VersionInfo {
                    version,
                    author,
                    created_at: DateTime::from_timestamp_nanos(created_at),
                    hash,
                    encrypted: serde_json::from_str(&encrypted).map_err(json_error)?,
                },
                document: serde_json::from_str(&doc).map_err(json_error)?,
            })
        })
        .transpose()
    }

    async fn get_application(&self, name: &str) -> Result<Option<Application>, StoreError> {
        self.get_doc("SELECT doc FROM applications WHERE name = ?1", [name])
    }

    async fn list_applications(&self) -> Result<Vec<Application>, StoreError> {
        self.list_docs("SELECT doc FROM applications ORDER BY name", [])
    }

    async fn delete_application(&self, name: &str) -> Result<bool, StoreError> {
        self.delete_definition(DefinitionKind::Application, name)
            .await
    }

    async fn get_configuration(&self, name: &str) -> Result<Option<Configuration>, StoreError> {
        self.get_doc("SELECT doc FROM configurations WHERE name = ?1", [name])
    }

    async fn list_configurations(&self) -> Result<Vec<Configuration>, StoreError> {
        self.list_docs("SELECT doc FROM configurations ORDER BY name", [])
    }

    async fn delete_configuration(&self, name: &str) -> Result<bool, StoreError> {
        self.delete_definition(DefinitionKind::Configuration, name)
            .await
    }
}

#[async_trait]
impl ScheduleStore for EmbeddedStore {
    async fn put_schedule(&self, schedule: &Schedule) -> Result<(), StoreError> {
        if schedule.entry_id.is_empty() {
            return Err(StoreError::Backend("the schedule has no entry_id".into()));
        }
        let doc = serde_json::to_string(schedule).map_err(json_error)?;
        self.put_doc(
            "INSERT INTO schedules (entry_id, doc) VALUES (?1, ?2) \
             ON CONFLICT (entry_id) DO UPDATE SET doc = excluded.doc",
            &schedule.entry_id,
            &doc,
        )
        .await
    }

    async fn get_schedule(&self, entry_id: &str) -> Result<Option<Schedule>, StoreError> {
        self.get_doc("SELECT doc FROM schedules WHERE entry_id = ?1", [entry_id])
    }

    async fn list_schedules(&self) -> Result<Vec<Schedule>, StoreError> {
        self.list_docs("SELECT doc FROM schedules ORDER BY entry_id", [])
    }

    async fn delete_schedule(&self, entry_id: &str) -> Result<bool, StoreError> {
        self.delete_key("DELETE FROM schedules WHERE entry_id = ?1", entry_id)
            .await
    }
}

#[async_trait]
impl RunStore for EmbeddedStore {
    /// Insert-if-absent. A run that exists but has expired counts as absent (as for every
    /// read) and is replaced.
    async fn create_run(&self, run: &Run, app: &Application) -> Result<bool, StoreError> {
        let doc = serde_json::to_string(&run.header()).map_err(json_error)?;
        let snapshot = serde_json::to_string(app).map_err(json_error)?;
        let now = self.now_nanos();
        let inserted = self
            .shared
            .write(|conn| {
                let inserted =
                    conn.prepare_cached(
                        "INSERT INTO runs (id, application, state, terminal, configuration, \
                         queue, created_at, expires_at, version, doc) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
                         ON CONFLICT (id) DO UPDATE SET application = excluded.application, \
                         state = excluded.state, terminal = excluded.terminal, \
                         configuration = excluded.configuration, queue = excluded.queue, \
                         created_at = excluded.created_at, expires_at = excluded.expires_at, \
                         version = excluded.version, doc = excluded.doc \
                         WHERE runs.expires_at <= ?11",
                    )?
                    .execute(params![
                        run.id,
                        run.application,
                        run.state.as_str(),
                        run.state.is_terminal(),
                        run.configuration,
                        run.queue,
                        nanos(run.created_at),
                        nanos(run.expires_at),
                        run.version as i64,
                        doc,
                        now,
                    ])? == 1;
                if inserted {
                    conn.prepare_cached(
                        "INSERT INTO run_snapshots (run_id, doc) VALUES (?1, ?2) \
                         ON CONFLICT (run_id) DO UPDATE SET doc = excluded.doc",
                    )?
                    .execute(params![run.id, snapshot])?;
                    crate::run_rows::put_all_rows(conn, run)?;
                }
                Ok(inserted)
            })
            .await
            .map_err(sql)?;
        if inserted {
            self.run_cache.put(run);
        }
        Ok(inserted)
    }

    /// Assembled from the run's rows (`run_rows`), or cloned from this process's copy
    /// when that is the stored version.
    async fn get_run(&self, id: &str) -> Result<Option<Run>, StoreError> {
        let now = self.now_nanos();
        // The copy is cloned outside the connection's lock (a large run takes a while to
        // copy); should a write come between, the copy has moved on and is not used.
        let stored = self
            .shared
            .read(|conn| crate::run_rows::stored_version(conn, id, now))
            .map_err(sql)?;
        let Some((version, created_at)) = stored else {
            return Ok(None);
        };
        if let Some(run) = self.run_cache.get(id, version, created_at) {
            return Ok(Some(run));
        }
        self.shared
            .read(|conn| {
                let Some((version, created_at)) = crate::run_rows::stored_version(conn, id, now)?
                else {
                    return Ok(None);
                };
                if let Some(run) = self.run_cache.get(id, version, created_at) {
                    return Ok(Some(run));
                }
                let header: String = conn
                    .prepare_cached("SELECT doc FROM runs WHERE id = ?1")?
                    .query_row([id], |row| row.get(0))?;
                let run = crate::run_rows::assemble(conn, &header, version)?;
                // Under the connection's lock: no write can come between.
                self.run_cache.put(&run);
                Ok(Some(run))
            })
            .map_err(sql)
    }

    /// Compare-and-swap on `version`. A missing or expired run is a [`StoreError::Conflict`]
    /// too (the DynamoDB condition `version = :expected` fails the same way). Only the
    /// mutable columns are written: application, configuration, queue and created_at of a
    /// run never change.
    async fn update_run(&self, run: &Run, expected_version: u64) -> Result<(), StoreError> {
        self.write_run(run, expected_version, None).await
    }

    /// Writes the header and only the step and unit rows `delta` names.
    async fn update_run_delta(
        &self,
        run: &Run,
        expected_version: u64,
        delta: &sluice_core::engine::RunDelta,
    ) -> Result<(), StoreError> {
        self.write_run(run, expected_version, Some(delta)).await
    }

    /// One process drives a data directory's runs (others, such as a CLI command beside
    /// `sluice serve`, write one now and then).
    fn sole_writer(&self) -> bool {
        true
    }

    /// Every port of a data directory writes to its one database: the queue's and the
    /// logs' writes are staged with the runs'.
    fn stage_writes<'a>(
        &'a self,
        work: sluice_core::ports::StagedWork<'a>,
    ) -> sluice_core::ports::StagedWork<'a> {
        self.shared.stage(work)
    }

    fn commit_staged(&self) -> Result<(), StoreError> {
        self.shared.commit_staged().map_err(crate::db::sql)
    }

    async fn get_snapshot(&self, run_id: &str) -> Result<Option<Application>, StoreError> {
        self.get_doc(
            "SELECT s.doc FROM run_snapshots s JOIN runs r ON r.id = s.run_id \
             WHERE s.run_id = ?1 AND r.expires_at > ?2",
            params![run_id, self.now_nanos()],
        )
    }

    async fn list_runs(&self, query: &RunQuery) -> Result<Vec<Run>, StoreError> {
        let mut statement = String::from("SELECT doc FROM runs WHERE expires_at > ?1");
        let mut values: Vec<SqlValue> = vec![SqlValue::Integer(self.now_nanos())];
        let mut filter = |clause: &str, value: SqlValue| {
            values.push(value);
            statement.push_str(&format!(" AND {clause} ?{}", values.len()));
        };
        if let Some(application) = &query.application {
            filter("application =", text(application));
        }
        if let Some(state) = query.state {
            filter("state =", text(state.as_str()));
        }
        if let Some(configuration) = &query.configuration {
            filter("configuration =", text(configuration));
        }
        if let Some(queue) = &query.queue {
            filter("queue =", text(queue));
        }
        if let Some(since) = query.since {
            filter("created_at >=", SqlValue::Integer(nanos(since)));
        }
        if let Some(until) = query.until {
            filter("created_at <", SqlValue::Integer(nanos(until)));
        }
        if let Some(before) = &query.before_id {
            filter("id <", text(before));
        }
        let limit = if query.limit == 0 {
            DEFAULT_LIST_LIMIT
        } else {
            query.limit
        };
        values.push(SqlValue::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
        statement.push_str(&format!(" ORDER BY id DESC LIMIT ?{}", values.len()));
        let statement = statement.replacen("SELECT doc", "SELECT doc, version", 1);
        self.shared
            .read(|conn| {
                let headers: Vec<(String, i64)> = conn
                    .prepare_cached(&statement)?
                    .query_map(rusqlite::params_from_iter(values), |row| {
                        Ok((row.get(0)?, row.get(1)?))
                    })?
                    .collect::<Result<_, _>>()?;
                headers
                    .iter()
                    .map(|(header, version)| {
                        crate::run_rows::assemble(conn, header, *version as u64)
                    })
                    .collect()
            })
            .map_err(sql)
    }

    async fn unfinished_runs(&self) -> Result<Vec<String>, StoreError> {
        self.shared
            .read(|conn| {
                conn.prepare_cached(
                    "SELECT id FROM runs WHERE terminal = 0 AND expires_at > ?1 ORDER BY id",
                )?
                .query_map([self.now_nanos()], |row| row.get(0))?
                .collect()
            })
            .map_err(sql)
    }

    async fn put_output(
        &self,
        key: &OutputKey,
        value: &Value,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let text = serde_json::to_string(value).map_err(json_error)?;
        let (inline, file) = if text.len() > INLINE_OUTPUT_LIMIT {
            let name = write_output_file(&self.shared.outputs_dir, text.as_bytes())?;
            (None, Some(name))
        } else {
            (Some(text), None)
        };
        let result = self
            .shared
            .write(|conn| {
                let previous: Option<String> = conn
                    .prepare_cached(
                        "SELECT file FROM outputs \
                         WHERE run_id = ?1 AND step_id = ?2 AND unit = ?3",
                    )?
                    .query_row(params![key.run_id, key.step_id, key.unit], |row| row.get(0))
                    .optional()?
                    .flatten();
                conn.prepare_cached(
                    "INSERT INTO outputs (run_id, step_id, unit, expires_at, value, file) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                     ON CONFLICT (run_id, step_id, unit) DO UPDATE SET \
                     expires_at = excluded.expires_at, value = excluded.value, \
                     file = excluded.file",
                )?
                .execute(params![
                    key.run_id,
                    key.step_id,
                    key.unit,
                    nanos(expires_at),
                    inline,
                    file
                ])?;
                Ok(previous)
            })
            .await;
        match result {
            Ok(previous) => {
                if let Some(name) = previous {
                    remove_file_quietly(&self.shared.outputs_dir.join(name));
                }
                Ok(())
            }
            Err(e) => {
                if let Some(name) = &file {
                    remove_file_quietly(&self.shared.outputs_dir.join(name));
                }
                Err(sql(e))
            }
        }
    }

    async fn get_output(&self, key: &OutputKey) -> Result<Option<Value>, StoreError> {
        // An overwrite may delete the file between reading the row and opening it: read
        // the row again then (the new row names the new file).
        for _ in 0..3 {
            let name = match self.output_row(key)? {
                None => return Ok(None),
                Some(StoredOutput::Inline(text)) => {
                    return serde_json::from_str(&text).map(Some).map_err(json_error)
                }
                Some(StoredOutput::File(name)) => name,
                Some(StoredOutput::Missing) => {
                    return Err(StoreError::Backend(format!(
                        "output {}/{}/{} has neither a value nor a file",
                        key.run_id, key.step_id, key.unit
                    )))
                }
            };
            let path = self.shared.outputs_dir.join(&name);
            match std::fs::read(&path) {
                Ok(bytes) => return serde_json::from_slice(&bytes).map(Some).map_err(json_error),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(StoreError::Backend(format!(
                        "cannot read output file {}: {e}",
                        path.display()
                    )))
                }
            }
        }
        Err(StoreError::Backend(format!(
            "the file of output {}/{}/{} is missing from {}",
            key.run_id,
            key.step_id,
            key.unit,
            self.shared.outputs_dir.display()
        )))
    }

    async fn append_logs(
        &self,
        run_id: &str,
        entries: &[LogEntry],
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let texts = entries
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<_>, _>>()
            .map_err(json_error)?;
        let expires = nanos(expires_at);
        self.shared
            .write(|conn| {
                // Time-based numbers (as on AWS) interleave with the derived FLOW
                // entries; never below the last one, so a cursor never skips an entry.
                let last: i64 =
                    conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM logs", [], |r| r.get(0))?;
                let base = logs::sequence(self.clock.now(), 0).max(last as u64 + 1);
                let mut stmt = conn.prepare_cached(
                    "INSERT INTO logs (seq, run_id, expires_at, entry) VALUES (?1, ?2, ?3, ?4)",
                )?;
                for (i, text) in texts.iter().enumerate() {
                    stmt.execute(params![(base + i as u64) as i64, run_id, expires, text])?;
                }
                Ok(())
            })
            .await
            .map_err(sql)
    }

    /// `limit` 0 means [`DEFAULT_LOG_LIMIT`].
    async fn get_logs(
        &self,
        run_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, LogEntry)>, StoreError> {
        let limit = if limit == 0 { DEFAULT_LOG_LIMIT } else { limit };
        let rows: Vec<(i64, String)> = self
            .shared
            .read(|conn| {
                conn.prepare_cached(
                    "SELECT seq, entry FROM logs WHERE run_id = ?1 AND seq > ?2 \
                     AND expires_at > ?3 ORDER BY seq LIMIT ?4",
                )?
                .query_map(
                    params![
                        run_id,
                        i64::try_from(after).unwrap_or(i64::MAX),
                        self.now_nanos(),
                        i64::try_from(limit).unwrap_or(i64::MAX)
                    ],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )?
                .collect()
            })
            .map_err(sql)?;
        rows.into_iter()
            .map(|(seq, text)| {
                let entry = serde_json::from_str(&text).map_err(json_error)?;
                Ok((seq as u64, entry))
            })
            .collect()
    }
}

#[async_trait]
impl Cache for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<Value>, StoreError> {
        self.get_doc(
            "SELECT value FROM cache WHERE key = ?1 AND (expires_at IS NULL OR expires_at > ?2)",
            params![key, self.now_nanos()],
        )
    }

    async fn put(&self, key: &str, value: &Value, ttl: Option<Duration>) -> Result<(), StoreError> {
        let text = serde_json::to_string(value).map_err(json_error)?;
        let expires = ttl.map(|ttl| add_duration(self.now_nanos(), ttl));
        self.shared
            .write(|conn| {
                conn.prepare_cached(
                    "INSERT INTO cache (key, value, expires_at) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value, \
                     expires_at = excluded.expires_at",
                )?
                .execute(params![key, text, expires])
            })
            .await
            .map_err(sql)?;
        Ok(())
    }

    /// `true` only when a live (unexpired) entry was deleted.
    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let expires: Option<Option<i64>> = self
            .shared
            .write(|conn| {
                conn.prepare_cached("DELETE FROM cache WHERE key = ?1 RETURNING expires_at")?
                    .query_row([key], |row| row.get(0))
                    .optional()
            })
            .await
            .map_err(sql)?;
        Ok(match expires {
            None => false,
            Some(None) => true,
            Some(Some(at)) => at > self.now_nanos(),
        })
    }

    async fn list(
        &self,
        prefix: &str,
        limit: usize,
        after: Option<&str>,
    ) -> Result<CacheKeys, StoreError> {
        let limit = limit.clamp(1, MAX_CACHE_PAGE);
        // `key >= prefix` lets the primary key's index find the start; the `substr`
        // comparison is the literal prefix test (LIKE would treat `%` and `_` as
        // wildcards). Text compares bytewise (BINARY), the order the port promises.
        let mut keys: Vec<String> = self
            .shared
            .read(|conn| {
                conn.prepare_cached(
                    "SELECT key FROM cache WHERE key >= ?1 AND substr(key, 1, length(?1)) = ?1 \
                     AND (?2 IS NULL OR key > ?2) \
                     AND (expires_at IS NULL OR expires_at > ?3) ORDER BY key LIMIT ?4",
                )?
                .query_map(
                    params![prefix, after, self.now_nanos(), (limit + 1) as i64],
                    |row| row.get(0),
                )?
                .collect()
            })
            .map_err(sql)?;
        let more = keys.len() > limit;
        keys.truncate(limit);
        let next_after = if more { keys.last().cloned() } else { None };
        Ok(CacheKeys { keys, next_after })
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        let now = self.now_nanos();
        let mut deleted = 0;
        loop {
            // A page per write: the shared write transaction is never held for long.
            let page: Vec<Option<i64>> = self
                .shared
                .write(|conn| {
                    conn.prepare_cached(
                        "DELETE FROM cache WHERE key IN (SELECT key FROM cache \
                         WHERE key >= ?1 AND substr(key, 1, length(?1)) = ?1 \
                         ORDER BY key LIMIT ?2) RETURNING expires_at",
                    )?
                    .query_map(params![prefix, MAX_CACHE_PAGE as i64], |row| row.get(0))?
                    .collect()
                })
                .await
                .map_err(sql)?;
            deleted += page
                .iter()
                .filter(|expires| expires.is_none_or(|at| at > now))
                .count() as u64;
            if page.len() < MAX_CACHE_PAGE {
                return Ok(deleted);
            }
        }
    }
}
