//! Ports: the traits through which the runtime reaches storage, queues, secrets and the
//! scheduler. Each is shaped so that an embedded adapter (SQLite) and an AWS adapter
//! (DynamoDB conditional writes, SQS, Secrets Manager, EventBridge Scheduler) implement
//! it one to one.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{Application, Configuration, LogEntry, Run, RunState, Schedule};
use crate::versions::{
    DefinitionKind, DefinitionVersion, NewVersion, PushOutcome, VersionInfo, VersionStamp,
    DEFAULT_VERSIONS_KEPT, UNATTRIBUTED,
};

/// Failures of a store adapter.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A conditional write lost: the stored version was not the expected one.
    #[error("the record changed concurrently (version conflict)")]
    Conflict,
    #[error("{0}")]
    Backend(String),
}

/// Failures of a queue adapter.
#[derive(Debug, thiserror::Error)]
#[error("queue error: {0}")]
pub struct QueueError(pub String);

/// Failures of a secret store.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The stored ciphertext could not be decrypted (wrong key, tampering).
    #[error("cannot decrypt the secrets of configuration \"{configuration}\": {reason}")]
    Decrypt {
        configuration: String,
        reason: String,
    },
    #[error("secret store error: {0}")]
    Backend(String),
}

/// Applications and configurations, with their versions. Configurations are stored
/// with every encrypted value set to `null`; the plaintext lives only in the
/// [`SecretStore`].
#[async_trait]
pub trait DefinitionStore: Send + Sync {
    /// Stores `push.document` as the current definition of its kind and name and, unless
    /// its hash equals the latest version's (then nothing is written), as a new version
    /// numbered one past the latest (1 for the first), stamped with the store's clock;
    /// versions numbered `push.expired_at_or_below(new)` and lower are deleted. Atomic:
    /// concurrent pushes get distinct numbers and the current definition is the highest
    /// numbered version's document.
    async fn push_definition(&self, push: &NewVersion) -> Result<PushOutcome, StoreError>;
    /// Up to `limit` versions of a definition, newest first (empty when it has none).
    async fn list_versions(
        &self,
        kind: DefinitionKind,
        name: &str,
        limit: usize,
    ) -> Result<Vec<VersionInfo>, StoreError>;
    /// The number and hash of a definition's latest version (`None` when it has none).
    /// Adapters answer it from the current definition's own record where they can (on
    /// DynamoDB the step functions' roles may read only the current definitions).
    async fn latest_version(
        &self,
        kind: DefinitionKind,
        name: &str,
    ) -> Result<Option<VersionStamp>, StoreError>;
    /// One version with its document.
    async fn get_version(
        &self,
        kind: DefinitionKind,
        name: &str,
        version: u64,
    ) -> Result<Option<DefinitionVersion>, StoreError>;

    /// Pushes `app` unattributed, keeping the default number of versions (the runtime's
    /// service pushes with the caller's name and the configured retention).
    async fn put_application(&self, app: &Application) -> Result<(), StoreError> {
        let push = NewVersion::application(app, UNATTRIBUTED, DEFAULT_VERSIONS_KEPT)?;
        self.push_definition(&push).await.map(|_| ())
    }
    async fn get_application(&self, name: &str) -> Result<Option<Application>, StoreError>;
    async fn list_applications(&self) -> Result<Vec<Application>, StoreError>;
    /// Deletes an application with its versions.
    async fn delete_application(&self, name: &str) -> Result<bool, StoreError>;

    /// Pushes [`Configuration::redacted`] unattributed (see
    /// [`put_application`](Self::put_application)).
    async fn put_configuration(&self, config: &Configuration) -> Result<(), StoreError> {
        let push = NewVersion::configuration(config, UNATTRIBUTED, DEFAULT_VERSIONS_KEPT)?;
        self.push_definition(&push).await.map(|_| ())
    }
    async fn get_configuration(&self, name: &str) -> Result<Option<Configuration>, StoreError>;
    async fn list_configurations(&self) -> Result<Vec<Configuration>, StoreError>;
    /// Deletes a configuration with its versions.
    async fn delete_configuration(&self, name: &str) -> Result<bool, StoreError>;
}

/// Identifies the output of one unit of a step (unit 0 for a step without `for_each`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OutputKey {
    pub run_id: String,
    pub step_id: String,
    pub unit: u32,
}

/// Filters of a run listing (newest first).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunQuery {
    pub application: Option<String>,
    pub state: Option<RunState>,
    pub configuration: Option<String>,
    pub queue: Option<String>,
    /// Runs created at or after.
    pub since: Option<DateTime<Utc>>,
    /// Runs created before.
    pub until: Option<DateTime<Utc>>,
    /// Only runs whose id sorts before this one (the previous page's last id).
    pub before_id: Option<String>,
    pub limit: usize,
}

/// Runs, their application snapshots, step outputs and logs. Every read treats a record
/// past its `expires_at` as absent, whether or not the backend has deleted it yet.
#[async_trait]
pub trait RunStore: Send + Sync {
    /// Inserts a run and the application snapshot it executes. `Ok(false)` when a run with
    /// this id already exists (nothing is written): creating is idempotent.
    async fn create_run(&self, run: &Run, app: &Application) -> Result<bool, StoreError>;
    async fn get_run(&self, id: &str) -> Result<Option<Run>, StoreError>;
    /// Writes `run` only if the stored version is `expected_version`; the caller has set
    /// `run.version` to the new version. [`StoreError::Conflict`] otherwise.
    async fn update_run(&self, run: &Run, expected_version: u64) -> Result<(), StoreError>;
    /// [`RunStore::update_run`] for a transition that changed only the parts `delta`
    /// names (`run` is the whole run after it): a store that keeps a run's steps and
    /// units apart writes just those, so a transition costs the same in a run of ten
    /// units as in one of ten thousand. Same compare-and-swap and errors. The default
    /// writes the whole run (a store keeping a run as one record).
    async fn update_run_delta(
        &self,
        run: &Run,
        expected_version: u64,
        delta: &crate::engine::RunDelta,
    ) -> Result<(), StoreError> {
        let _ = delta;
        self.update_run(run, expected_version).await
    }
    /// Whether this process is normally the only writer of the runs it changes, so that
    /// a runtime may start a run's next transition from its own copy of the run instead
    /// of reading it (the compare-and-swap still decides: a stale copy costs a failed
    /// write and a read). `false`, the default: every transition reads the run first.
    fn sole_writer(&self) -> bool {
        false
    }
    /// Runs `work`, one piece of work of this task (a delivery: its claim, the attempt's
    /// end, the successor's message, the acknowledgement), with this task's writes to
    /// this store's database *staged*: each is applied at once (its conditions checked,
    /// its result returned) but committed later, together with the others, by
    /// [`RunStore::commit_staged`] or when `work` ends. Nothing staged is visible to
    /// other processes until then, and a crash loses all of it at once, as if the work
    /// had not happened. The default (a store whose writes are requests, DynamoDB) runs
    /// `work` as it is: every write is durable when it returns.
    fn stage_writes<'a>(&'a self, work: StagedWork<'a>) -> StagedWork<'a> {
        work
    }
    /// Commits what this task staged so far ([`RunStore::stage_writes`]): called before
    /// anything outside the store may act on it (an attempt is executed once its claim
    /// is durable). `Ok` when nothing is staged.
    fn commit_staged(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// The application document as it was when the run was created.
    async fn get_snapshot(&self, run_id: &str) -> Result<Option<Application>, StoreError>;
    async fn list_runs(&self, query: &RunQuery) -> Result<Vec<Run>, StoreError>;
    /// Ids of runs that are not in a terminal state (for resumption after a crash).
    async fn unfinished_runs(&self) -> Result<Vec<String>, StoreError>;

    /// Stores a unit's output (overwriting: a redelivered attempt writes the same key).
    async fn put_output(
        &self,
        key: &OutputKey,
        value: &Value,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    async fn get_output(&self, key: &OutputKey) -> Result<Option<Value>, StoreError>;

    async fn append_logs(
        &self,
        run_id: &str,
        entries: &[LogEntry],
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Log entries with a sequence number greater than `after`, oldest first, with their
    /// sequence numbers (a cursor for `--follow`).
    async fn get_logs(
        &self,
        run_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, LogEntry)>, StoreError>;
}

/// Largest page of [`Cache::list`]; larger limits are clamped to it.
pub const MAX_CACHE_PAGE: usize = 1000;

/// One page of cache keys, in ascending byte order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheKeys {
    pub keys: Vec<String>,
    /// The last key of this page when more keys may follow: pass it as `after` to read
    /// on. `None` on the last page.
    pub next_after: Option<String>,
}

/// The key/value cache that steps share across runs.
#[async_trait]
pub trait Cache: Send + Sync {
    async fn get(&self, key: &str) -> Result<Option<Value>, StoreError>;
    async fn put(&self, key: &str, value: &Value, ttl: Option<Duration>) -> Result<(), StoreError>;
    /// `true` only when a live (unexpired) entry was deleted.
    async fn delete(&self, key: &str) -> Result<bool, StoreError>;
    /// Up to `limit` (clamped to 1..=[`MAX_CACHE_PAGE`]) keys of live entries starting
    /// with `prefix` (the empty prefix matches every key) and sorting after `after`,
    /// ascending. The prefix is literal: no character is a wildcard.
    async fn list(
        &self,
        prefix: &str,
        limit: usize,
        after: Option<&str>,
    ) -> Result<CacheKeys, StoreError>;
    /// Deletes every entry whose key starts with `prefix`, a page at a time (so no single
    /// write holds the store for long), and returns how many live entries it deleted.
    /// Entries written while it runs may survive.
    async fn delete_prefix(&self, prefix: &str) -> Result<u64, StoreError>;
}

/// Encrypted configuration values, one secret per configuration.
#[async_trait]
pub trait SecretStore: Send + Sync {
    /// Replaces every encrypted value of `configuration`.
    async fn put_secrets(
        &self,
        configuration: &str,
        values: &BTreeMap<String, Value>,
    ) -> Result<(), SecretError>;
    /// The decrypted values (empty when the configuration has none).
    async fn get_secrets(
        &self,
        configuration: &str,
    ) -> Result<BTreeMap<String, Value>, SecretError>;
    async fn delete_secrets(&self, configuration: &str) -> Result<(), SecretError>;
}

/// The body of a step-queue message: execute `attempt` of `unit` of a step.
/// Messages carry ids only, never parameters or secrets.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TaskMessage {
    pub run_id: String,
    pub step_id: String,
    pub unit: u32,
    pub attempt: u32,
    /// The run's lane ([`run_lane`]): what the queues share their turns between. Absent
    /// in messages queued before lanes existed; a queue serves those as a lane of their
    /// run's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lane: Option<String>,
}

/// A piece of work whose writes a store may stage ([`RunStore::stage_writes`]).
pub type StagedWork<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>;

/// The lanes served before every other lane of a queue (a PowerFlow-style high-priority
/// queue): a run started with `queue` set to one of these.
pub const PRIORITY_LANES: [&str; 2] = ["high", "priority.high"];

/// Longest lane in bytes; a longer `queue` label is cut to it (at a character boundary).
pub const MAX_LANE_BYTES: usize = 128;

/// The lane of a run's messages: its `queue` label when it has a non-empty one, else its
/// application's name, at most [`MAX_LANE_BYTES`].
pub fn lane_of(queue: Option<&str>, application: &str) -> String {
    let lane = queue.filter(|q| !q.is_empty()).unwrap_or(application);
    let mut end = lane.len().min(MAX_LANE_BYTES);
    while !lane.is_char_boundary(end) {
        end -= 1;
    }
    lane[..end].to_string()
}

/// The lane of `run`'s messages ([`lane_of`] its `queue` and application).
pub fn run_lane(run: &Run) -> String {
    lane_of(run.queue.as_deref(), &run.application)
}

/// Whether `lane` is one of the [`PRIORITY_LANES`].
pub fn is_priority_lane(lane: &str) -> bool {
    PRIORITY_LANES.contains(&lane)
}

/// A received message and the handle to acknowledge it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message: TaskMessage,
    /// Opaque handle for [`Queue::ack`] and [`Queue::release`].
    pub receipt: String,
    /// How many times this message has been received, this time included.
    pub receive_count: u32,
}

/// Messages are delivered at least once; a received message is invisible for the
/// visibility timeout, then delivered again unless acknowledged. After
/// [`MAX_RECEIVE_COUNT`] receives it moves to the queue's dead-letter queue, named by
/// [`dead_letter_queue`].
#[async_trait]
pub trait Queue: Send + Sync {
    async fn send(
        &self,
        queue: &str,
        message: &TaskMessage,
        delay: Duration,
    ) -> Result<(), QueueError>;
    /// Sends `messages` to `queue`, each after `delay`: what one transition queued (a
    /// fan-out's thousands). As `send` of each, in any order; an adapter that can sends
    /// them in batches (SQS: ten a request, several requests at once). On an error some
    /// may have been sent, as when a `send` of a series fails.
    async fn send_many(
        &self,
        queue: &str,
        messages: &[TaskMessage],
        delay: Duration,
    ) -> Result<(), QueueError> {
        for message in messages {
            self.send(queue, message, delay).await?;
        }
        Ok(())
    }
    /// Sends `message` and receives it at once for the caller, invisible for
    /// `visibility` with a receive count of 1 (as `send` then a `receive` that got it),
    /// without waking a waiting receiver: a local worker that queues a ready successor
    /// hands it to itself instead of through a poll. `None` where the adapter cannot
    /// (SQS: nothing was sent, the caller sends as usual).
    async fn send_received(
        &self,
        _queue: &str,
        _message: &TaskMessage,
        _visibility: Duration,
    ) -> Result<Option<Delivery>, QueueError> {
        Ok(None)
    }

    /// Whether a [`Queue::receive`] may be abandoned mid-flight without losing messages.
    /// An SQS long poll may not: the server can still hand it a message after the client
    /// gave up, hiding that message for the whole visibility timeout.
    fn receive_is_cancel_safe(&self) -> bool {
        false
    }

    /// Up to `max` messages, waiting up to `wait` for the first one.
    async fn receive(
        &self,
        queue: &str,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> Result<Vec<Delivery>, QueueError>;
    /// Deletes a received message.
    async fn ack(&self, queue: &str, receipt: &str) -> Result<(), QueueError>;
    /// Makes a received message visible again after `delay`.
    async fn release(&self, queue: &str, receipt: &str, delay: Duration) -> Result<(), QueueError>;
    /// Keeps a received message invisible for `visibility` from now, its receipt still
    /// valid (SQS `ChangeMessageVisibility`). A worker holds a message for its step's
    /// timeout plus a margin, so that the attempt of a worker that died comes back soon
    /// after that timeout rather than after the receive's long visibility.
    async fn extend_visibility(
        &self,
        queue: &str,
        receipt: &str,
        visibility: Duration,
    ) -> Result<(), QueueError>;

    /// About how many messages `queue` holds (visible, delayed or in flight), for
    /// dashboards and the runtime's soft bound on queued work; `None` where the adapter
    /// cannot tell. Never used for a decision that must be exact.
    async fn approximate_depth(&self, _queue: &str) -> Result<Option<u64>, QueueError> {
        Ok(None)
    }
}

/// Receives after which a message is dead-lettered (SQS `maxReceiveCount`).
pub const MAX_RECEIVE_COUNT: u32 = 5;

/// The dead-letter queue of a queue.
pub fn dead_letter_queue(queue: &str) -> String {
    format!("{queue}-dlq")
}

/// Schedules and their run statistics.
#[async_trait]
pub trait ScheduleStore: Send + Sync {
    async fn put_schedule(&self, schedule: &Schedule) -> Result<(), StoreError>;
    async fn get_schedule(&self, entry_id: &str) -> Result<Option<Schedule>, StoreError>;
    async fn list_schedules(&self) -> Result<Vec<Schedule>, StoreError>;
    async fn delete_schedule(&self, entry_id: &str) -> Result<bool, StoreError>;
}

/// Something that fires schedules: EventBridge Scheduler on AWS, a loop when embedded.
#[async_trait]
pub trait Scheduler: Send + Sync {
    async fn upsert(&self, schedule: &Schedule) -> Result<(), StoreError>;
    async fn remove(&self, entry_id: &str) -> Result<(), StoreError>;
}

/// API tokens and role bindings (SPEC §6). Tokens are stored by the SHA-256 of the token
/// (see [`ApiToken`](crate::model::ApiToken)), so a read of the store never yields a
/// usable credential, and a presented token is found with one keyed lookup.
#[async_trait]
pub trait AccessStore: Send + Sync {
    /// Inserts a token. `Ok(false)` (nothing written) when a token with this name exists.
    async fn create_token(&self, token: &crate::model::ApiToken) -> Result<bool, StoreError>;
    /// The token whose hash is `hash` (lowercase hex SHA-256).
    async fn token_by_hash(&self, hash: &str)
        -> Result<Option<crate::model::ApiToken>, StoreError>;
    /// Every token, by name.
    async fn list_tokens(&self) -> Result<Vec<crate::model::ApiToken>, StoreError>;
    /// Revokes a token. `Ok(false)` when there was none of that name.
    async fn delete_token(&self, name: &str) -> Result<bool, StoreError>;

    /// Creates or replaces the binding of `(owner_type, owner)`.
    async fn put_binding(&self, binding: &crate::model::RoleBinding) -> Result<(), StoreError>;
    /// Every binding, by owner type then owner.
    async fn list_bindings(&self) -> Result<Vec<crate::model::RoleBinding>, StoreError>;
    /// `Ok(false)` when there was no such binding.
    async fn delete_binding(
        &self,
        owner_type: crate::model::OwnerType,
        owner: &str,
    ) -> Result<bool, StoreError>;
}

/// A run started by a schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledRun {
    pub run_id: String,
    /// When the run was started.
    pub start_time: DateTime<Utc>,
}

/// What a schedule has done: its run count, last run, and the last tick it handled.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ScheduleStats {
    pub entry_id: String,
    pub total_runs: u64,
    pub last_run: Option<ScheduledRun>,
    /// Ticks at or before this instant are handled (fired, or before the schedule
    /// existed or was enabled) and never fire again, across restarts.
    pub last_tick: Option<DateTime<Utc>>,
    /// Why the latest tick that failed could not start its run (the application was
    /// deleted or changed, the configuration is gone, ...); cleared by the next run the
    /// schedule starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<ScheduleError>,
}

/// A tick that could not start its run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleError {
    pub message: String,
    /// When the tick failed.
    pub time: DateTime<Utc>,
}

/// Run statistics and tick bookkeeping of schedules, apart from the schedule documents
/// so that firing never rewrites a user's document.
///
/// Firing a tick `T` of a schedule is: start the run with the id
/// `deterministic_run_id(T, "schedule/<entry_id>/<T>")` (idempotent), then
/// [`claim_tick`](Self::claim_tick)`(T)`, and only when that returns `true`,
/// [`record_run`](Self::record_run). A crash between the steps repeats them with the same
/// run id, so a tick starts one run and is counted once.
#[async_trait]
pub trait ScheduleStatsStore: Send + Sync {
    async fn get_stats(&self, entry_id: &str) -> Result<Option<ScheduleStats>, StoreError>;
    async fn list_stats(&self) -> Result<Vec<ScheduleStats>, StoreError>;
    /// Moves `last_tick` to `tick` when it is absent or earlier (a conditional write,
    /// creating the record when needed). `Ok(true)` when moved: the caller owns the tick.
    async fn claim_tick(&self, entry_id: &str, tick: DateTime<Utc>) -> Result<bool, StoreError>;
    /// Counts a run started by the schedule, makes it the `last_run` and clears
    /// `last_error`.
    async fn record_run(&self, entry_id: &str, run: &ScheduledRun) -> Result<(), StoreError>;
    /// Sets `last_error` (creating the record when needed), leaving the counts alone.
    async fn record_error(&self, entry_id: &str, error: &ScheduleError) -> Result<(), StoreError>;
    async fn delete_stats(&self, entry_id: &str) -> Result<(), StoreError>;
}

/// The ports a runtime works through; each adapter crate builds one
/// (`EmbeddedStore::backend`, `AwsEnvironment::backend`).
#[derive(Clone)]
pub struct Backend {
    pub definitions: std::sync::Arc<dyn DefinitionStore>,
    pub runs: std::sync::Arc<dyn RunStore>,
    pub queue: std::sync::Arc<dyn Queue>,
    pub secrets: std::sync::Arc<dyn SecretStore>,
    pub cache: std::sync::Arc<dyn Cache>,
    pub packs: std::sync::Arc<dyn PackStore>,
    pub reports: std::sync::Arc<dyn ReportStore>,
}

/// Installed pack versions and which one of each pack is active (see
/// [`crate::pack`]). One activation record per pack: exactly one version is active.
#[async_trait]
pub trait PackStore: Send + Sync {
    /// Stores an installed version. `Ok(false)` (nothing written) when this name and
    /// version are installed already.
    async fn install_pack(&self, pack: &crate::pack::InstalledPack) -> Result<bool, StoreError>;
    async fn get_pack(
        &self,
        name: &str,
        version: &str,
    ) -> Result<Option<crate::pack::InstalledPack>, StoreError>;
    /// Every installed version (without its archive), by name, then version text.
    async fn list_packs(&self) -> Result<Vec<crate::pack::PackVersionInfo>, StoreError>;
    /// `Ok(false)` when there was no such version.
    async fn delete_pack(&self, name: &str, version: &str) -> Result<bool, StoreError>;
    async fn get_activation(
        &self,
        name: &str,
    ) -> Result<Option<crate::pack::PackActivation>, StoreError>;
    /// Every activation record, by pack name.
    async fn list_activations(&self) -> Result<Vec<crate::pack::PackActivation>, StoreError>;
    /// Creates or replaces the pack's activation record.
    async fn put_activation(
        &self,
        activation: &crate::pack::PackActivation,
    ) -> Result<(), StoreError>;
    /// `Ok(false)` when the pack had none.
    async fn delete_activation(&self, name: &str) -> Result<bool, StoreError>;
}

/// Filters of a report listing (newest run first), paged like [`RunQuery`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReportQuery {
    pub application: Option<String>,
    /// Only reports whose run id sorts before this one (the previous page's last).
    pub before_run_id: Option<String>,
    /// Page size; 0 means 50.
    pub limit: usize,
}

/// Run reports (`sluice_core::report`): one part per step unit, kept apart from the run
/// record and expiring with the run. Every read treats a part past its run's
/// `expires_at` as absent.
#[async_trait]
pub trait ReportStore: Send + Sync {
    /// Stores the sections one unit of a step reported, replacing what that unit stored
    /// before (a re-executed or redelivered attempt overwrites, never adds), stamped with
    /// the store's clock. Empty `sections` delete the unit's part.
    async fn put_report_part(
        &self,
        owner: &crate::report::ReportOwner,
        step_id: &str,
        unit: u32,
        sections: &[crate::report::ReportSection],
    ) -> Result<(), StoreError>;
    /// The owner and every stored part of a run's report (`None` when it has none).
    async fn get_report(
        &self,
        run_id: &str,
    ) -> Result<Option<(crate::report::ReportOwner, Vec<crate::report::ReportPart>)>, StoreError>;
    /// Runs that have a report, newest run id first.
    async fn list_reports(
        &self,
        query: &ReportQuery,
    ) -> Result<Vec<crate::report::ReportSummary>, StoreError>;
    /// Deletes a run's report (the run stays). `Ok(false)` when it had none.
    async fn delete_report(&self, run_id: &str) -> Result<bool, StoreError>;
}
