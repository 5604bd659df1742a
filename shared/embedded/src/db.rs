//! The one SQLite database of a data directory: opening, pragmas, schema migrations, and
//! the helpers every adapter shares (time stamps, error mapping, the connection mutex).

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use aes_gcm::Aes256Gcm;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, TransactionBehavior};
use sluice_core::ports::StoreError;
use tokio::sync::Notify;

/// File name of the database inside the data directory.
pub const DATABASE_FILE: &str = "sluice.db";
/// Folder (inside the data directory) of outputs too large to keep in a row.
pub const OUTPUTS_DIR: &str = "outputs";

/// Schema version written to `PRAGMA user_version`; bump it and add a step to
/// `MIGRATIONS` for every schema change.
pub const SCHEMA_VERSION: i64 = 11;

/// `MIGRATIONS[n]` brings a database from `user_version` n to n + 1.
const MIGRATIONS: &[&str] = &[
    SCHEMA_V1,
    crate::access::SCHEMA_V2,
    crate::access::SCHEMA_V3,
    SCHEMA_V4,
    crate::packs::SCHEMA_V5,
    crate::queue::SCHEMA_FAIR_QUEUE,
    crate::reports::SCHEMA_REPORTS,
    crate::run_rows::SCHEMA_RUN_ROWS,
    crate::queue::SCHEMA_QUEUE_LANES,
    SCHEMA_LOGS_PLAIN_SEQ,
    crate::queue::SCHEMA_HELD_MESSAGES,
];

/// `logs` without `AUTOINCREMENT`: every append sets `seq` itself (time-based and above
/// the last one, `append_logs`), so `AUTOINCREMENT` only rewrote `sqlite_sequence` at
/// every insert, one more page in the commit of every step that logs.
const SCHEMA_LOGS_PLAIN_SEQ: &str = r#"
CREATE TABLE logs_plain_seq (
    seq        INTEGER PRIMARY KEY,
    run_id     TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    entry      TEXT NOT NULL
);
INSERT INTO logs_plain_seq (seq, run_id, expires_at, entry)
    SELECT seq, run_id, expires_at, entry FROM logs;
DROP TABLE logs;
ALTER TABLE logs_plain_seq RENAME TO logs;
CREATE INDEX logs_run     ON logs (run_id, seq);
CREATE INDEX logs_expires ON logs (expires_at);
"#;

/// Every filtered or purged column is indexed. Times are nanoseconds since the Unix epoch
/// (exact for `since`/`until` comparisons, clamped outside 1677..2262).
const SCHEMA_V1: &str = r#"
CREATE TABLE applications (
    name TEXT PRIMARY KEY NOT NULL,
    doc  TEXT NOT NULL
);
CREATE TABLE configurations (
    name TEXT PRIMARY KEY NOT NULL,
    doc  TEXT NOT NULL
);
CREATE TABLE schedules (
    entry_id TEXT PRIMARY KEY NOT NULL,
    doc      TEXT NOT NULL
);

-- The run JSON plus the columns listings filter on. `terminal` is RunState::is_terminal()
-- at write time, so `unfinished_runs` does not hard-code the list of states.
CREATE TABLE runs (
    id            TEXT PRIMARY KEY NOT NULL,
    application   TEXT NOT NULL,
    state         TEXT NOT NULL,
    terminal      INTEGER NOT NULL,
    configuration TEXT,
    queue         TEXT,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    version       INTEGER NOT NULL,
    doc           TEXT NOT NULL
);
CREATE INDEX runs_application   ON runs (application, id);
CREATE INDEX runs_state         ON runs (state, id);
CREATE INDEX runs_configuration ON runs (configuration, id);
CREATE INDEX runs_queue         ON runs (queue, id);
CREATE INDEX runs_created       ON runs (created_at);
CREATE INDEX runs_expires       ON runs (expires_at);
CREATE INDEX runs_unfinished    ON runs (id) WHERE terminal = 0;

-- Kept apart from `runs` so that the frequent run updates do not rewrite the snapshot.
CREATE TABLE run_snapshots (
    run_id TEXT PRIMARY KEY NOT NULL,
    doc    TEXT NOT NULL
);

-- Exactly one of `value` (inline JSON) and `file` (name under outputs/) is set.
CREATE TABLE outputs (
    run_id     TEXT NOT NULL,
    step_id    TEXT NOT NULL,
    unit       INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    value      TEXT,
    file       TEXT,
    PRIMARY KEY (run_id, step_id, unit)
);
CREATE INDEX outputs_expires ON outputs (expires_at);
CREATE INDEX outputs_file    ON outputs (file) WHERE file IS NOT NULL;

-- AUTOINCREMENT: sequence numbers are never reused, even after a purge, so a
-- `--follow` cursor never skips a new entry. (Dropped by SCHEMA_LOGS_PLAIN_SEQ, since
-- every append now numbers its entries itself.)
CREATE TABLE logs (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id     TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    entry      TEXT NOT NULL
);
CREATE INDEX logs_run     ON logs (run_id, seq);
CREATE INDEX logs_expires ON logs (expires_at);

CREATE TABLE cache (
    key        TEXT PRIMARY KEY NOT NULL,
    value      TEXT NOT NULL,
    expires_at INTEGER
);
CREATE INDEX cache_expires ON cache (expires_at) WHERE expires_at IS NOT NULL;

-- A receipt is "<id>.<random>"; it is replaced on every receive and cleared on release.
CREATE TABLE messages (
    id            INTEGER PRIMARY KEY,
    queue         TEXT NOT NULL,
    body          TEXT NOT NULL,
    visible_at    INTEGER NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    receipt       TEXT,
    sent_at       INTEGER NOT NULL
);
CREATE INDEX messages_visible  ON messages (queue, visible_at, id);
CREATE INDEX messages_inflight ON messages (visible_at) WHERE receipt IS NOT NULL;

-- AES-256-GCM of the JSON map name -> value, with the configuration name as associated data.
CREATE TABLE secrets (
    configuration TEXT PRIMARY KEY NOT NULL,
    nonce         BLOB NOT NULL,
    ciphertext    BLOB NOT NULL
);
"#;

/// Versions of applications and configurations (`kind` is `application` or
/// `configuration`): the document as pushed (configurations redacted), with the names of
/// the encrypted values it set as a JSON array.
const SCHEMA_V4: &str = r#"
CREATE TABLE definition_versions (
    kind       TEXT NOT NULL,
    name       TEXT NOT NULL,
    version    INTEGER NOT NULL,
    author     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    hash       TEXT NOT NULL,
    encrypted  TEXT NOT NULL,
    doc        TEXT NOT NULL,
    PRIMARY KEY (kind, name, version)
);
"#;

/// How often the background thread checkpoints the WAL into the database file.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(200);

/// Recent commit failures remembered for the operations that joined the failed
/// transaction but did not run its `COMMIT` themselves.
const REMEMBERED_FAILURES: usize = 64;

/// A failure of a database operation: of its own statements, or of the group commit of
/// the transaction it joined.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DbError {
    #[error("sqlite: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("sqlite: the transaction holding this write failed to commit: {0}")]
    Commit(String),
}

/// The connection and the group-commit bookkeeping, behind one mutex.
struct DbState {
    conn: Connection,
    /// Id of the open write transaction, if any.
    open_txn: Option<u64>,
    next_txn: u64,
    failed: VecDeque<(u64, String)>,
}

impl DbState {
    fn begin(&mut self) -> rusqlite::Result<u64> {
        if let Some(txn) = self.open_txn {
            return Ok(txn);
        }
        // IMMEDIATE takes the write lock now: no deadlock-prone upgrade from a read lock.
        self.conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        let txn = self.next_txn;
        self.next_txn += 1;
        self.open_txn = Some(txn);
        Ok(txn)
    }

    fn commit(&mut self, txn: u64) -> Result<(), DbError> {
        if self.open_txn == Some(txn) {
            self.open_txn = None;
            let result = self
                .conn
                .prepare_cached("COMMIT")
                .and_then(|mut s| s.execute([]));
            if let Err(e) = result {
                if !self.conn.is_autocommit() {
                    let _ = self.conn.execute_batch("ROLLBACK");
                }
                let message = e.to_string();
                tracing::error!(error = %message, "SQLite commit failed");
                if self.failed.len() == REMEMBERED_FAILURES {
                    self.failed.pop_front();
                }
                self.failed.push_back((txn, message));
                return Err(DbError::Sql(e));
            }
            return Ok(());
        }
        match self.failed.iter().find(|(id, _)| *id == txn) {
            Some((_, message)) => Err(DbError::Commit(message.clone())),
            None => Ok(()),
        }
    }
}

/// Undoes a half-done operation (an error or a panic inside it) back to its savepoint,
/// so that the group commit never commits part of an operation.
struct OpScope<'a> {
    conn: &'a Connection,
    done: bool,
}

impl OpScope<'_> {
    fn release(mut self) -> rusqlite::Result<()> {
        self.conn.prepare_cached("RELEASE op")?.execute([])?;
        self.done = true;
        Ok(())
    }
}

impl Drop for OpScope<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.conn.execute_batch("ROLLBACK TO op; RELEASE op");
        }
    }
}

/// Commits the caller's transaction even when its future is dropped while waiting (a
/// cancelled caller must not leave the write lock held).
struct CommitGuard<'a> {
    shared: &'a Shared,
    /// The transaction still to commit.
    txn: Option<u64>,
}

impl Drop for CommitGuard<'_> {
    fn drop(&mut self) {
        if let Some(txn) = self.txn.take() {
            let _ = self.shared.state().commit(txn);
        }
    }
}

tokio::task_local! {
    /// The staged work ([`Shared::stage`]) this task is in, if any.
    static STAGING: Staging;
}

/// The transactions a staged piece of work wrote in, not yet committed by it. Dropping
/// it (the work ended, or was abandoned) commits them: a staged write must never hold
/// the database's write lock beyond its work.
struct Staging {
    shared: Arc<Shared>,
    txns: Mutex<Vec<u64>>,
}

impl Staging {
    fn is_on(&self, shared: &Shared) -> bool {
        std::ptr::eq(Arc::as_ptr(&self.shared), shared)
    }

    /// Takes transaction `txn` of `shared` over when this staging is on that database.
    fn take_on(&self, shared: &Shared, txn: u64) -> bool {
        if !self.is_on(shared) {
            return false;
        }
        let mut txns = self.txns.lock().unwrap_or_else(|p| p.into_inner());
        if !txns.contains(&txn) {
            txns.push(txn);
        }
        true
    }

    fn drain_of(&self, shared: &Shared) -> Vec<u64> {
        if !self.is_on(shared) {
            return Vec::new();
        }
        std::mem::take(&mut *self.txns.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let txns = std::mem::take(&mut *self.txns.lock().unwrap_or_else(|p| p.into_inner()));
        for txn in txns {
            if let Err(e) = self.shared.state().commit(txn) {
                tracing::error!(error = %e, "staged writes did not commit");
            }
        }
    }
}

/// State shared by the store, the queue and the secret store of one data directory.
pub(crate) struct Shared {
    /// One connection: SQLite serialises writers anyway, and each operation holds the
    /// mutex for tens of microseconds, never across an `.await` (the group transaction
    /// does stay open across one yield, see [`Shared::write`]).
    db: Mutex<DbState>,
    pub(crate) data_dir: PathBuf,
    pub(crate) outputs_dir: PathBuf,
    /// In-process wake-ups of `receive` waiters, one per queue name.
    notifiers: Mutex<HashMap<String, Arc<Notify>>>,
    /// The secret key, loaded (or created) on first use.
    pub(crate) cipher: OnceLock<Aes256Gcm>,
    /// Dropping it stops the checkpoint thread.
    _checkpointer: Option<mpsc::Sender<()>>,
}

/// Mode of the data directory and `outputs/`: only the owner may list or enter them.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// Mode of every file in the data directory (the database and its WAL, which SQLite
/// creates with the database's mode, outputs, the key, the lock).
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// Creates a private directory (and missing parents, also private), or makes an
/// existing one private: a data directory holds secrets and every run's data.
pub(crate) fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(dir)?;
    tighten(dir, PRIVATE_DIR_MODE)
}

/// Creates an empty private file when absent, or makes an existing one private.
pub(crate) fn private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_FILE_MODE)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => tighten(path, PRIVATE_FILE_MODE),
        Err(e) => Err(e),
    }
}

/// Removes group and other permissions of a path a previous version created wider.
fn tighten(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let current = std::fs::metadata(path)?.permissions().mode() & 0o777;
    if current & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(current & mode))?;
        tracing::info!(path = %path.display(), from = format!("{current:o}"), "made private");
    }
    Ok(())
}

impl Shared {
    pub(crate) fn open(data_dir: &Path) -> Result<Self, StoreError> {
        private_dir(data_dir).map_err(|e| {
            StoreError::Backend(format!(
                "cannot create the data directory {}: {e}",
                data_dir.display()
            ))
        })?;
        let outputs_dir = data_dir.join(OUTPUTS_DIR);
        private_dir(&outputs_dir).map_err(|e| {
            StoreError::Backend(format!("cannot create {}: {e}", outputs_dir.display()))
        })?;
        let path = data_dir.join(DATABASE_FILE);
        // SQLite gives the WAL and shared-memory files the database file's mode.
        private_file(&path).map_err(|e| {
            StoreError::Backend(format!(
                "cannot create the database {}: {e}",
                path.display()
            ))
        })?;
        for companion in ["-wal", "-shm"] {
            let companion = data_dir.join(format!("{DATABASE_FILE}{companion}"));
            if companion.exists() {
                let _ = private_file(&companion);
            }
        }
        let mut conn = Connection::open(&path).map_err(|e| {
            StoreError::Backend(format!("cannot open the database {}: {e}", path.display()))
        })?;
        configure(&conn).map_err(sql)?;
        migrate(&mut conn)?;
        Ok(Self {
            db: Mutex::new(DbState {
                conn,
                open_txn: None,
                next_txn: 1,
                failed: VecDeque::new(),
            }),
            data_dir: data_dir.to_path_buf(),
            outputs_dir,
            notifiers: Mutex::new(HashMap::new()),
            cipher: OnceLock::new(),
            _checkpointer: spawn_checkpointer(&path),
        })
    }

    /// A panic while the lock was held leaves nothing half-done (see [`OpScope`]), so a
    /// poisoned lock is simply taken over.
    fn state(&self) -> MutexGuard<'_, DbState> {
        self.db
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs read-only statements. They also see writes of the open group transaction,
    /// whose callers are about to commit it.
    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, DbError> {
        Ok(f(&self.state().conn)?)
    }

    /// Runs one write operation atomically (a savepoint) inside the shared write
    /// transaction, then commits it (group commit): the caller yields once so that the
    /// operations of other ready tasks join the same transaction, and whoever resumes
    /// first commits for all. Every caller returns only once its writes are committed,
    /// so a process crash never loses an acknowledged write, while one commit's cost
    /// (WAL frames, file locks) is shared by all the writes that joined it.
    ///
    /// Within [`Shared::stage`] on this database, the write is staged instead: it
    /// returns once applied, and its transaction is committed by
    /// [`Shared::commit_staged`] or when the staged work ends.
    pub(crate) async fn write<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, DbError> {
        // Declared first so that it is dropped last, after the mutex guard, even when `f`
        // panics.
        let mut guard = CommitGuard {
            shared: self,
            txn: None,
        };
        let result = {
            let mut state = self.state();
            let txn = state.begin()?;
            guard.txn = Some(txn);
            let conn = &state.conn;
            conn.prepare_cached("SAVEPOINT op")
                .and_then(|mut s| s.execute([]))
                .and_then(|_| {
                    let scope = OpScope { conn, done: false };
                    let value = f(conn)?;
                    scope.release()?;
                    Ok(value)
                })
        };
        if let Some(txn) = guard.txn {
            let staged = STAGING
                .try_with(|staging| staging.take_on(self, txn))
                .unwrap_or(false);
            if staged {
                guard.txn = None;
                return Ok(result?);
            }
        }
        tokio::task::yield_now().await;
        let committed = match guard.txn.take() {
            Some(txn) => self.state().commit(txn),
            None => Ok(()),
        };
        let value = result?;
        committed?;
        Ok(value)
    }

    /// Runs `work` with this task's writes to this database staged (see
    /// `RunStore::stage_writes`): each [`Shared::write`] applies its operation inside
    /// the open group transaction and returns without waiting for a commit; whoever
    /// commits that transaction next (another task's write, [`Shared::commit_staged`],
    /// or the end of `work`) commits them. A step's end, its successor's message and the
    /// acknowledgement thus cost one commit instead of three or four.
    pub(crate) fn stage<'a>(
        self: &Arc<Self>,
        work: sluice_core::ports::StagedWork<'a>,
    ) -> sluice_core::ports::StagedWork<'a> {
        let staging = Staging {
            shared: self.clone(),
            txns: Mutex::new(Vec::new()),
        };
        Box::pin(STAGING.scope(staging, work))
    }

    /// Commits the transactions this task staged writes in (on this database), or learns
    /// how they ended when another task committed them.
    pub(crate) fn commit_staged(&self) -> Result<(), DbError> {
        let txns = STAGING
            .try_with(|staging| staging.drain_of(self))
            .unwrap_or_default();
        for txn in txns {
            self.state().commit(txn)?;
        }
        Ok(())
    }

    pub(crate) fn notifier(&self, queue: &str) -> Arc<Notify> {
        let mut map = self
            .notifiers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(notify) = map.get(queue) {
            return notify.clone();
        }
        let notify = Arc::new(Notify::new());
        map.insert(queue.to_string(), notify.clone());
        notify
    }

    /// Wakes every waiter of every queue (after a bulk change such as `release_inflight`).
    pub(crate) fn notify_all(&self) {
        let map = self
            .notifiers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for notify in map.values() {
            notify.notify_waiters();
        }
    }
}

/// Checkpoints the WAL from a thread of its own, with its own connection: copying pages
/// into the database file and its fsyncs then happen off the connection mutex (and off the
/// async workers), and the WAL stays small and is reused from its start. The main
/// connection's own auto-checkpoint stays as a backstop at a high threshold.
fn spawn_checkpointer(path: &Path) -> Option<mpsc::Sender<()>> {
    let conn = Connection::open(path)
        .and_then(|c| c.busy_timeout(Duration::from_millis(100)).map(|_| c))
        .map_err(|e| tracing::warn!(error = %e, "no background WAL checkpoints"))
        .ok()?;
    let (stop, stopped) = mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("sluice-wal-checkpoint".into())
        .spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(CHECKPOINT_INTERVAL)
            {
                let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                if let Err(e) = result {
                    tracing::debug!(error = %e, "WAL checkpoint skipped");
                }
            }
        })
        .map_err(|e| tracing::warn!(error = %e, "no background WAL checkpoints"))
        .ok()?;
    Some(stop)
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    // WAL: readers do not block the writer; NORMAL: no fsync per commit (a power cut may
    // lose the last commits, never corrupt), which is what makes ~20k commits/s possible.
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(
            mode,
            "SQLite refused WAL mode; continuing with this journal mode"
        );
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // Other processes (a CLI next to `sluice serve`) may hold the write lock briefly.
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.pragma_update(None, "cache_size", -16_384)?; // 16 MiB
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
    // The checkpoint thread keeps the WAL short; this is only the backstop.
    conn.pragma_update(None, "wal_autocheckpoint", 10_000)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    // IMMEDIATE: two processes opening a fresh directory at once must not both create.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql)?;
    let version: i64 = tx
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(sql)?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Backend(format!(
            "the database has schema version {version}, newer than this sluice understands \
             ({SCHEMA_VERSION}); upgrade sluice"
        )));
    }
    for (from, step) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(step).map_err(|e| {
            StoreError::Backend(format!("schema migration {from} -> {}: {e}", from + 1))
        })?;
    }
    if version < SCHEMA_VERSION {
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(sql)?;
    }
    tx.commit().map_err(sql)
}

/// Maps a database failure to the store's error.
pub(crate) fn sql(error: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(error.to_string())
}

pub(crate) fn json_error(error: serde_json::Error) -> StoreError {
    StoreError::Backend(format!("json: {error}"))
}

/// Nanoseconds since the epoch, clamped to what an `i64` holds (years 1677..2262): a
/// far-future expiry simply never expires.
pub(crate) fn nanos(at: DateTime<Utc>) -> i64 {
    at.timestamp_nanos_opt().unwrap_or(if at.timestamp() < 0 {
        i64::MIN
    } else {
        i64::MAX
    })
}

pub(crate) fn add_duration(at: i64, duration: Duration) -> i64 {
    let delta = i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX);
    at.saturating_add(delta)
}
