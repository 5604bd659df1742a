//! [`DynamoStore`]: the store ports on DynamoDB, with S3 for documents too large for an
//! item.
//!
//! Tables (see [`crate::provision::TABLES`] for their keys and indexes):
//! - definitions `(kind, name)`: applications, configurations (redacted), schedules,
//!   schedule stats. A listing is a `Query` on one `kind` partition, never a scan. The
//!   versions of a definition are the partition `version#<kind>#<name>`, sorted by the
//!   zero-padded number; the current item carries its `version` and `hash`.
//! - access `(kind, name)`: API tokens (by name and by hash) and role bindings, in a
//!   table of their own so that no step function's role can reach them.
//! - runs `(pk = run id, sk)`: `RUN` (the run record, compare-and-swap on `version`),
//!   `PART#<name>#<nonce>` (the steps and units of a large run, immutable, named by the
//!   `RUN` item's manifest: `dynamo/run_parts.rs`), `SNAPSHOT` (the application it executes), `OUT#<step>#<unit>` (outputs),
//!   `LOG#<seq>` (one item per appended batch of log entries), `REPORT`,
//!   `REPORT.MONTH`, `REPORT#<step>#<unit>` (the run's report, see `dynamo/reports.rs`).
//!   Every item carries
//!   `expires_ms` (checked on every read: DynamoDB deletes expired items up to days late,
//!   moto never) and the TTL attribute `ttl` (epoch seconds). Indexes list runs by
//!   application or month, newest first, and find unfinished runs.
//! - cache `(key)` with its own `expires_ms`/`ttl`.
//!
//! Every state transition is a conditional write (run updates) or a transaction (a run
//! with its snapshot; a token with its hash entry), so duplicate and concurrent
//! deliveries cannot overwrite each other.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue as A, Delete, KeysAndAttributes, Put, ReturnValue, TransactWriteItem,
};
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Datelike, Months, TimeZone, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use sluice_core::clock::Clock;
use sluice_core::model::{
    ApiToken, Application, Configuration, LogEntry, OwnerType, RoleBinding, Run, Schedule,
};
use sluice_core::ports::{
    AccessStore, Cache, CacheKeys, DefinitionStore, OutputKey, RunQuery, RunStore, ScheduleError,
    ScheduleStats, ScheduleStatsStore, ScheduleStore, ScheduledRun, StoreError, MAX_CACHE_PAGE,
};

use sluice_core::versions::{
    DefinitionKind, DefinitionVersion, NewVersion, PushOutcome, VersionInfo, VersionStamp,
};

mod reports;
mod run_parts;
pub use reports::REPORTS;

use crate::codec::{self, blob, Encoded, DOC, DOC_S3};
use crate::error::{backend, json_error, sdk};
use crate::settings::AwsSettings;

/// Page size of [`RunQuery`] when its `limit` is 0 (as embedded).
pub const DEFAULT_LIST_LIMIT: usize = 50;
/// Page size of `get_logs` when its `limit` is 0 (as embedded).
pub const DEFAULT_LOG_LIMIT: usize = 1000;

/// Index of runs by application, newest first.
pub const BY_APPLICATION: &str = "by_application";
/// Index of runs by creation month (`YYYY-MM`), newest first: listing without an
/// application filter queries one month partition after another.
pub const BY_MONTH: &str = "by_month";
/// Sparse index of runs not yet terminal (the `open` attribute exists only then).
pub const OPEN_RUNS: &str = "open_runs";

const RUN_SK: &str = "RUN";
const SNAPSHOT_SK: &str = "SNAPSHOT";
/// Sequence numbers of one log batch: `micros * 1000 + index`.
const LOG_SEQ_PER_BATCH: u64 = sluice_core::logs::SEQUENCE_PER_MICROSECOND;
/// Entries per log item (each item stays well under 400 KB).
const LOG_ITEM_ENTRIES: usize = 100;

/// Definition kinds (partition keys of the definitions table).
mod kind {
    pub const APPLICATION: &str = "application";
    pub const CONFIGURATION: &str = "configuration";
    pub const SCHEDULE: &str = "schedule";
    pub const SCHEDULE_STATS: &str = "schedule_stats";
    pub const TOKEN: &str = "token";
    pub const TOKEN_HASH: &str = "token_hash";
    pub const BINDING: &str = "role_binding";

    /// Kinds kept in the access table rather than the definitions table.
    pub const ACCESS: &[&str] = &[TOKEN, TOKEN_HASH, BINDING];
}

/// The DynamoDB (+ S3) store of one deployment. Cheap to clone.
#[derive(Clone)]
pub struct DynamoStore {
    pub(crate) db: Client,
    pub(crate) s3: aws_sdk_s3::Client,
    pub(crate) settings: AwsSettings,
    /// The run parts and manifests this process read or wrote (`dynamo/run_parts.rs`).
    parts: Arc<run_parts::PartCache>,
    /// What expiry is judged by (cache TTLs start from it too): the system clock unless
    /// [`DynamoStore::with_clock`] says otherwise.
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for DynamoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoStore")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

pub(crate) fn s(value: impl Into<String>) -> A {
    A::S(value.into())
}

fn n(value: impl ToString) -> A {
    A::N(value.to_string())
}

/// Every item `query` finds, page after page (one `Query` answers at most 1 MB).
pub(crate) async fn query_all(
    query: aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
) -> Result<Vec<HashMap<String, A>>, StoreError> {
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let out = query
            .clone()
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| sdk("dynamodb Query", e))?;
        items.extend(out.items.unwrap_or_default());
        start = out.last_evaluated_key;
        if start.is_none() {
            return Ok(items);
        }
    }
}

pub(crate) fn get_s<'a>(item: &'a HashMap<String, A>, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

fn get_n(item: &HashMap<String, A>, name: &str) -> Option<i64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

/// Whether an item is still alive: DynamoDB's TTL deletion lags, so every read checks.
fn live(item: &HashMap<String, A>, now: i64) -> bool {
    get_n(item, "expires_ms").is_none_or(|at| at > now)
}

fn expiry_attributes(item: &mut HashMap<String, A>, expires_at: DateTime<Utc>) {
    item.insert("expires_ms".into(), n(expires_at.timestamp_millis()));
    // TTL is in epoch seconds; round up so the item never vanishes before it expires.
    item.insert("ttl".into(), n(expires_at.timestamp() + 1));
}

fn output_sk(step: &str, unit: u32) -> String {
    format!("OUT#{step}#{unit:010}")
}

fn log_sk(seq: u64) -> String {
    format!("LOG#{seq:020}")
}

/// The smallest run id created at `at` (uuid v7 ids sort by their millisecond).
fn run_id_bound(at: DateTime<Utc>) -> String {
    let uuid =
        uuid::Builder::from_unix_timestamp_millis(at.timestamp_millis().max(0) as u64, &[0; 10])
            .into_uuid();
    format!("{}{uuid}", sluice_core::model::RUN_ID_PREFIX)
}

fn month_of(at: DateTime<Utc>) -> String {
    format!("{:04}-{:02}", at.year(), at.month())
}

pub(crate) fn is_conditional_failure<E, R>(e: &aws_sdk_dynamodb::error::SdkError<E, R>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    e.as_service_error()
        .and_then(|se| se.code())
        .is_some_and(|code| code == "ConditionalCheckFailedException")
}

/// Whether a cancelled transaction failed on a condition (not on a conflict or limit).
fn transaction_condition_failed<R>(
    e: &aws_sdk_dynamodb::error::SdkError<TransactWriteItemsError, R>,
) -> bool {
    match e.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) => cancelled
            .cancellation_reasons()
            .iter()
            .any(|r| r.code() == Some("ConditionalCheckFailed")),
        _ => false,
    }
}

impl DynamoStore {
    pub fn new(db: Client, s3: aws_sdk_s3::Client, settings: AwsSettings) -> Self {
        Self {
            db,
            s3,
            settings,
            parts: Arc::default(),
            clock: sluice_core::clock::system(),
        }
    }

    /// This store judging expiry by `clock` (tests move time instead of sleeping).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    fn now_ms(&self) -> i64 {
        self.clock.now().timestamp_millis()
    }

    pub fn settings(&self) -> &AwsSettings {
        &self.settings
    }

    // ---- documents (inline or spilled to S3) ----

    /// Puts a document into `item` as a deflated `doc`, or writes it to S3 under
    /// `s3_key` and records the key. A spilled document gets a fresh key per write, so a
    /// reader of the previous version is never disturbed; old objects expire by the
    /// bucket's lifecycle rule.
    async fn put_document<T: Serialize + ?Sized>(
        &self,
        item: &mut HashMap<String, A>,
        s3_key: impl FnOnce() -> String,
        value: &T,
    ) -> Result<(), StoreError> {
        match codec::encode(value)? {
            Encoded::Inline(bytes) => {
                item.insert(DOC.into(), blob(bytes));
            }
            Encoded::Spill(bytes) => {
                let key = format!("{}/{}.json.deflate", s3_key(), uuid::Uuid::now_v7());
                self.s3
                    .put_object()
                    .bucket(&self.settings.bucket)
                    .key(&key)
                    .body(bytes.into())
                    .send()
                    .await
                    .map_err(|e| sdk("s3 PutObject", e))?;
                item.insert(DOC_S3.into(), s(key));
            }
        }
        Ok(())
    }

    async fn read_document<T: DeserializeOwned>(
        &self,
        item: &HashMap<String, A>,
    ) -> Result<T, StoreError> {
        if let Some(A::B(bytes)) = item.get(DOC) {
            return codec::decode(bytes.as_ref());
        }
        if let Some(key) = get_s(item, DOC_S3) {
            let object = self
                .s3
                .get_object()
                .bucket(&self.settings.bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| sdk("s3 GetObject", e))?;
            let bytes = object
                .body
                .collect()
                .await
                .map_err(|e| backend(format!("s3 GetObject {key}: {e}")))?
                .into_bytes();
            return codec::decode(&bytes);
        }
        Err(backend(
            "stored item has neither a document nor an S3 reference",
        ))
    }

    // ---- definitions ----

    /// The table holding a kind: tokens and role bindings live apart from definitions.
    fn table_of(&self, kind: &str) -> &str {
        if kind::ACCESS.contains(&kind) {
            &self.settings.access_table
        } else {
            &self.settings.definitions_table
        }
    }

    pub(crate) async fn put_definition<T: Serialize>(
        &self,
        kind: &str,
        name: &str,
        doc: &T,
    ) -> Result<(), StoreError> {
        if name.is_empty() {
            return Err(backend(format!("the {kind} has no name")));
        }
        let text = serde_json::to_string(doc).map_err(json_error)?;
        self.db
            .put_item()
            .table_name(self.table_of(kind))
            .item("kind", s(kind))
            .item("name", s(name))
            .item("doc", s(text))
            .send()
            .await
            .map_err(|e| sdk("dynamodb PutItem", e))?;
        Ok(())
    }

    pub(crate) async fn get_item(
        &self,
        table: &str,
        key: HashMap<String, A>,
    ) -> Result<Option<HashMap<String, A>>, StoreError> {
        let out = self
            .db
            .get_item()
            .table_name(table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk("dynamodb GetItem", e))?;
        Ok(out.item)
    }

    pub(crate) fn definition_key(kind: &str, name: &str) -> HashMap<String, A> {
        HashMap::from([("kind".to_string(), s(kind)), ("name".to_string(), s(name))])
    }

    pub(crate) async fn get_definition<T: DeserializeOwned>(
        &self,
        kind: &str,
        name: &str,
    ) -> Result<Option<T>, StoreError> {
        let item = self
            .get_item(self.table_of(kind), Self::definition_key(kind, name))
            .await?;
        item.map(|item| {
            let text =
                get_s(&item, "doc").ok_or_else(|| backend(format!("{kind} {name} has no doc")))?;
            serde_json::from_str(text).map_err(json_error)
        })
        .transpose()
    }

    /// Every item of one kind, ordered by name.
    pub(crate) async fn query_kind(
        &self,
        kind: &str,
    ) -> Result<Vec<HashMap<String, A>>, StoreError> {
        query_all(
            self.db
                .query()
                .table_name(self.table_of(kind))
                .key_condition_expression("#k = :k")
                .expression_attribute_names("#k", "kind")
                .expression_attribute_values(":k", s(kind))
                .consistent_read(true),
        )
        .await
    }

    pub(crate) async fn list_definitions<T: DeserializeOwned>(
        &self,
        kind: &str,
    ) -> Result<Vec<T>, StoreError> {
        self.query_kind(kind)
            .await?
            .iter()
            .map(|item| {
                serde_json::from_str(get_s(item, "doc").unwrap_or("null")).map_err(json_error)
            })
            .collect()
    }

    pub(crate) async fn delete_definition(
        &self,
        kind: &str,
        name: &str,
    ) -> Result<bool, StoreError> {
        let out = self
            .db
            .delete_item()
            .table_name(self.table_of(kind))
            .set_key(Some(Self::definition_key(kind, name)))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| sdk("dynamodb DeleteItem", e))?;
        Ok(out.attributes.is_some_and(|a| !a.is_empty()))
    }

    // ---- runs ----

    fn run_key(run_id: &str, sk: &str) -> HashMap<String, A> {
        HashMap::from([("pk".to_string(), s(run_id)), ("sk".to_string(), s(sk))])
    }

    /// The `RUN` item of a run: the deflated record (with `manifest` naming the parts
    /// kept apart, `dynamo/run_parts.rs`) plus the attributes the indexes and conditions
    /// use.
    async fn run_item(
        &self,
        run: &Run,
        manifest: run_parts::Manifest,
    ) -> Result<HashMap<String, A>, StoreError> {
        let mut item = Self::run_key(&run.id, RUN_SK);
        item.insert("run_id".into(), s(&run.id));
        item.insert("application".into(), s(&run.application));
        item.insert("month".into(), s(month_of(run.created_at)));
        item.insert("state".into(), s(run.state.as_str()));
        item.insert("version".into(), n(run.version));
        item.insert("created_ms".into(), n(run.created_at.timestamp_millis()));
        if let Some(c) = &run.configuration {
            item.insert("configuration".into(), s(c));
        }
        if let Some(q) = &run.queue {
            item.insert("queue".into(), s(q));
        }
        if !run.state.is_terminal() {
            item.insert("open".into(), s("1"));
        }
        expiry_attributes(&mut item, run.expires_at);
        let key = format!("runs/{}/record-v{}", run.id, run.version);
        self.put_document(&mut item, || key, &run_parts::run_doc(run, manifest))
            .await?;
        Ok(item)
    }

    /// `PutItem … IF version = :expected AND not expired` of the `RUN` item: the
    /// compare-and-swap every engine transition goes through, after writing the parts
    /// the transition changed (`delta`; every part without one) under fresh keys.
    async fn store_run(
        &self,
        run: &Run,
        expected_version: u64,
        delta: Option<&sluice_core::engine::RunDelta>,
    ) -> Result<(), StoreError> {
        if run.version == expected_version {
            return Err(backend(format!(
                "update_run of {}: run.version must be the new version, not the expected one ({expected_version})",
                run.id
            )));
        }
        let all = run_parts::all_parts(run);
        let (manifest, names, indexes) = match delta {
            Some(delta) => {
                let stored = self.manifest_at(&run.id, expected_version).await?;
                let (mut manifest, indexes) = self.expand(&run.id, &stored).await?;
                // A step part with a step now under way goes back into the `RUN` item.
                let now_apart: std::collections::BTreeSet<String> =
                    all.iter().map(|p| p.encode()).collect();
                manifest.retain(|name, _| now_apart.contains(name));
                let mut names = run_parts::touched_parts(run, delta);
                // Parts the stored run lacks: a fan-out's new units, or a run stored as
                // one item before it grew beyond one.
                names.extend(all.iter().filter(|p| !manifest.contains_key(&p.encode())));
                (manifest, names, indexes)
            }
            None => (run_parts::Manifest::new(), all, Default::default()),
        };
        let (manifest, written) = self.write_parts(run, &names, manifest, &indexes).await?;
        let item = self.run_item(run, manifest.clone()).await?;
        let result = self
            .db
            .put_item()
            .table_name(&self.settings.runs_table)
            .set_item(Some(item))
            .condition_expression("#v = :expected AND expires_ms > :now")
            .expression_attribute_names("#v", "version")
            .expression_attribute_values(":expected", n(expected_version))
            .expression_attribute_values(":now", n(self.now_ms()))
            .send()
            .await;
        match result {
            Ok(_) => {
                self.remember_written(&run.id, run.version, &manifest, written);
                Ok(())
            }
            Err(e) if is_conditional_failure(&e) => Err(StoreError::Conflict),
            Err(e) => Err(sdk("dynamodb PutItem", e)),
        }
    }

    /// Strongly consistent reads of items of the runs table by key: `BatchGetItem`, 100
    /// keys a request, asking again for what DynamoDB left unprocessed. Missing items
    /// are simply not returned; the order is DynamoDB's.
    pub(crate) async fn batch_get_run_items(
        &self,
        keys: Vec<HashMap<String, A>>,
    ) -> Result<Vec<HashMap<String, A>>, StoreError> {
        let mut items = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(100) {
            let mut request = Some(
                KeysAndAttributes::builder()
                    .set_keys(Some(chunk.to_vec()))
                    .consistent_read(true)
                    .build()
                    .map_err(|e| backend(e.to_string()))?,
            );
            while let Some(keys) = request.take() {
                let out = self
                    .db
                    .batch_get_item()
                    .request_items(&self.settings.runs_table, keys)
                    .send()
                    .await
                    .map_err(|e| sdk("dynamodb BatchGetItem", e))?;
                items.extend(
                    out.responses
                        .unwrap_or_default()
                        .remove(&self.settings.runs_table)
                        .unwrap_or_default(),
                );
                request = out
                    .unprocessed_keys
                    .and_then(|mut u| u.remove(&self.settings.runs_table))
                    .filter(|k| !k.keys().is_empty());
                if request.is_some() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        Ok(items)
    }

    /// Fetches `RUN` records by id, in the given order, skipping missing and expired
    /// ones.
    async fn get_runs(&self, ids: &[String]) -> Result<Vec<Run>, StoreError> {
        let keys = ids.iter().map(|id| Self::run_key(id, RUN_SK)).collect();
        let mut found: HashMap<String, HashMap<String, A>> = HashMap::new();
        for item in self.batch_get_run_items(keys).await? {
            if let Some(id) = get_s(&item, "pk") {
                found.insert(id.to_string(), item);
            }
        }
        let now = self.now_ms();
        let mut runs = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(item) = found.get(id).filter(|i| live(i, now)) {
                runs.push(self.run_from_item(item).await?);
            }
        }
        Ok(runs)
    }

    /// One page of run ids from an index partition, newest first, filtered on the
    /// projected attributes.
    async fn query_run_ids(
        &self,
        index: &str,
        partition: (&str, &str),
        query: &RunQuery,
        want: usize,
        out: &mut Vec<String>,
    ) -> Result<(), StoreError> {
        let now = self.now_ms();
        let mut start = None;
        loop {
            let mut request = self
                .db
                .query()
                .table_name(&self.settings.runs_table)
                .index_name(index)
                .scan_index_forward(false)
                .expression_attribute_names("#p", partition.0)
                .expression_attribute_values(":p", s(partition.1))
                .expression_attribute_names("#ex", "expires_ms")
                .expression_attribute_values(":now", n(now))
                .set_exclusive_start_key(start);
            let mut key_condition = "#p = :p".to_string();
            if let Some(before) = &query.before_id {
                key_condition.push_str(" AND run_id < :before");
                request = request.expression_attribute_values(":before", s(before));
            }
            let mut filters = vec!["#ex > :now".to_string()];
            if let Some(state) = query.state {
                filters.push("#st = :st".into());
                request = request
                    .expression_attribute_names("#st", "state")
                    .expression_attribute_values(":st", s(state.as_str()));
            }
            if let Some(c) = &query.configuration {
                filters.push("#cf = :cf".into());
                request = request
                    .expression_attribute_names("#cf", "configuration")
                    .expression_attribute_values(":cf", s(c));
            }
            if let Some(q) = &query.queue {
                filters.push("#qu = :qu".into());
                request = request
                    .expression_attribute_names("#qu", "queue")
                    .expression_attribute_values(":qu", s(q));
            }
            if let Some(since) = query.since {
                filters.push("#cr >= :since".into());
                request = request
                    .expression_attribute_names("#cr", "created_ms")
                    .expression_attribute_values(":since", n(since.timestamp_millis()));
            }
            if let Some(until) = query.until {
                filters.push("#cr < :until".into());
                request = request
                    .expression_attribute_names("#cr", "created_ms")
                    .expression_attribute_values(":until", n(until.timestamp_millis()));
            }
            let result = request
                .key_condition_expression(key_condition)
                .filter_expression(filters.join(" AND "))
                .send()
                .await
                .map_err(|e| sdk("dynamodb Query", e))?;
            for item in result.items.unwrap_or_default() {
                if out.len() >= want {
                    return Ok(());
                }
                if let Some(id) = get_s(&item, "run_id") {
                    out.push(id.to_string());
                }
            }
            start = result.last_evaluated_key;
            if start.is_none() || out.len() >= want {
                return Ok(());
            }
        }
    }

    // ---- schedule stats ----

    fn stats_from_item(item: &HashMap<String, A>) -> ScheduleStats {
        let time = |name| get_n(item, name).and_then(|ms| Utc.timestamp_millis_opt(ms).single());
        ScheduleStats {
            entry_id: get_s(item, "name").unwrap_or_default().to_string(),
            total_runs: get_n(item, "total_runs").unwrap_or(0).max(0) as u64,
            last_run: get_s(item, "last_run_id").and_then(|id| {
                time("last_run_ms").map(|start_time| ScheduledRun {
                    run_id: id.to_string(),
                    start_time,
                })
            }),
            last_tick: time("last_tick_ms"),
            last_error: get_s(item, "last_error").and_then(|message| {
                time("last_error_ms").map(|time| ScheduleError {
                    message: message.to_string(),
                    time,
                })
            }),
        }
    }
}

/// The definitions-table kind of a definition's current document.
fn current_kind(kind: DefinitionKind) -> &'static str {
    match kind {
        DefinitionKind::Application => kind::APPLICATION,
        DefinitionKind::Configuration => kind::CONFIGURATION,
    }
}

/// The partition of a definition's versions: one per definition, so that its history is
/// one `Query` and no listing of current definitions ever sees it.
fn versions_partition(kind: DefinitionKind, name: &str) -> String {
    format!("version#{}#{name}", kind.as_str())
}

/// Sort key of a version: zero-padded so that string order is number order.
fn version_sort_key(version: u64) -> String {
    format!("{version:012}")
}

/// Attempts of a push that lost a race for its version number.
const PUSH_ATTEMPTS: usize = 25;

/// Whether a cancelled transaction lost to a concurrent writer (a condition or a
/// transaction conflict), so that re-reading and trying again can succeed.
fn transaction_lost_race<R>(
    e: &aws_sdk_dynamodb::error::SdkError<TransactWriteItemsError, R>,
) -> bool {
    match e.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) => {
            cancelled.cancellation_reasons().iter().any(|r| {
                matches!(
                    r.code(),
                    Some("ConditionalCheckFailed" | "TransactionConflict")
                )
            })
        }
        _ => false,
    }
}

fn version_info(item: &HashMap<String, A>) -> Result<VersionInfo, StoreError> {
    let version = get_s(item, "name")
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(|| backend("a version item has no number"))?;
    let created_ms = get_n(item, "created_ms").unwrap_or(0);
    Ok(VersionInfo {
        version,
        author: get_s(item, "author").unwrap_or_default().to_string(),
        created_at: Utc
            .timestamp_millis_opt(created_ms)
            .single()
            .unwrap_or_default(),
        hash: get_s(item, "hash").unwrap_or_default().to_string(),
        encrypted: serde_json::from_str(get_s(item, "encrypted").unwrap_or("[]"))
            .map_err(json_error)?,
    })
}

impl DynamoStore {
    /// The version sort keys of a definition at or below `up_to`, oldest first.
    async fn version_keys_up_to(
        &self,
        kind: DefinitionKind,
        name: &str,
        up_to: Option<u64>,
    ) -> Result<Vec<String>, StoreError> {
        let partition = versions_partition(kind, name);
        let mut keys = Vec::new();
        let mut start = None;
        loop {
            let mut query = self
                .db
                .query()
                .table_name(&self.settings.definitions_table)
                .expression_attribute_names("#k", "kind")
                .expression_attribute_names("#n", "name")
                .expression_attribute_values(":k", s(&partition))
                .projection_expression("#n")
                .consistent_read(true)
                .set_exclusive_start_key(start);
            query = match up_to {
                Some(bound) => query
                    .key_condition_expression("#k = :k AND #n <= :bound")
                    .expression_attribute_values(":bound", s(version_sort_key(bound))),
                None => query.key_condition_expression("#k = :k"),
            };
            let out = query.send().await.map_err(|e| sdk("dynamodb Query", e))?;
            keys.extend(
                out.items
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|item| get_s(item, "name").map(str::to_string)),
            );
            start = out.last_evaluated_key;
            if start.is_none() {
                return Ok(keys);
            }
        }
    }

    /// Deletes the given versions of a definition.
    async fn delete_versions(
        &self,
        kind: DefinitionKind,
        name: &str,
        keys: Vec<String>,
    ) -> Result<(), StoreError> {
        let partition = versions_partition(kind, name);
        for key in keys {
            self.db
                .delete_item()
                .table_name(&self.settings.definitions_table)
                .set_key(Some(Self::definition_key(&partition, &key)))
                .send()
                .await
                .map_err(|e| sdk("dynamodb DeleteItem", e))?;
        }
        Ok(())
    }

    /// Deletes a definition, then its versions.
    async fn delete_with_versions(
        &self,
        kind: DefinitionKind,
        name: &str,
    ) -> Result<bool, StoreError> {
        let existed = self.delete_definition(current_kind(kind), name).await?;
        let keys = self.version_keys_up_to(kind, name, None).await?;
        self.delete_versions(kind, name, keys).await?;
        Ok(existed)
    }

    /// One attempt of a push: `Ok(None)` when a concurrent push won the number.
    async fn try_push(
        &self,
        push: &NewVersion,
        text: &str,
    ) -> Result<Option<PushOutcome>, StoreError> {
        let current_kind = current_kind(push.kind);
        let current = self
            .get_item(
                &self.settings.definitions_table,
                Self::definition_key(current_kind, &push.name),
            )
            .await?;
        let latest = current.as_ref().and_then(|item| get_n(item, "version"));
        if let (Some(version), Some(item)) = (latest, &current) {
            if get_s(item, "hash") == Some(push.hash.as_str()) {
                return Ok(Some(PushOutcome {
                    version: version as u64,
                    created: false,
                }));
            }
        }
        let version = latest.map_or(1, |v| v as u64 + 1);
        let mut version_item = HashMap::from([
            (
                "kind".to_string(),
                s(versions_partition(push.kind, &push.name)),
            ),
            ("name".to_string(), s(version_sort_key(version))),
            ("author".to_string(), s(&push.author)),
            ("created_ms".to_string(), n(self.now_ms())),
            ("hash".to_string(), s(&push.hash)),
            (
                "encrypted".to_string(),
                s(serde_json::to_string(&push.encrypted).map_err(json_error)?),
            ),
        ]);
        version_item.insert("doc".into(), s(text));
        let current_item = HashMap::from([
            ("kind".to_string(), s(current_kind)),
            ("name".to_string(), s(&push.name)),
            ("doc".to_string(), s(text)),
            ("version".to_string(), n(version)),
            ("hash".to_string(), s(&push.hash)),
        ]);
        // The current item moves only from the version this attempt read: of two
        // concurrent pushes, one commits and the other reads again.
        let mut current_put = Put::builder()
            .table_name(&self.settings.definitions_table)
            .set_item(Some(current_item))
            .expression_attribute_names("#v", "version");
        current_put = match (latest, current.is_some()) {
            (Some(old), _) => current_put
                .condition_expression("#v = :old")
                .expression_attribute_values(":old", n(old)),
            (None, true) => current_put.condition_expression("attribute_not_exists(#v)"),
            (None, false) => current_put
                .condition_expression("attribute_not_exists(#v) AND attribute_not_exists(#k)")
                .expression_attribute_names("#k", "kind"),
        };
        let result = self
            .db
            .transact_write_items()
            .transact_items(transact_put(
                Put::builder()
                    .table_name(&self.settings.definitions_table)
                    .set_item(Some(version_item))
                    .condition_expression("attribute_not_exists(#k)")
                    .expression_attribute_names("#k", "kind"),
            )?)
            .transact_items(transact_put(current_put)?)
            .send()
            .await;
        match result {
            Ok(_) => Ok(Some(PushOutcome {
                version,
                created: true,
            })),
            Err(e) if transaction_lost_race(&e) => Ok(None),
            Err(e) => Err(sdk("dynamodb TransactWriteItems", e)),
        }
    }
}

#[async_trait]
impl DefinitionStore for DynamoStore {
    /// A transaction writes the version item (new number) and the current item (which
    /// carries its version number and hash, moved on only from the number read); a push
    /// that lost the race reads again. Retention then deletes the items beyond it: a
    /// failure there is logged and repaired by the next push, which deletes every older
    /// item, not just one.
    async fn push_definition(&self, push: &NewVersion) -> Result<PushOutcome, StoreError> {
        if push.name.is_empty() {
            return Err(backend(format!("the {} has no name", push.kind.as_str())));
        }
        let text = serde_json::to_string(&push.document).map_err(json_error)?;
        for _ in 0..PUSH_ATTEMPTS {
            let Some(outcome) = self.try_push(push, &text).await? else {
                continue;
            };
            let bound = push.expired_at_or_below(outcome.version);
            if outcome.created && bound > 0 {
                let expired = async {
                    let keys = self
                        .version_keys_up_to(push.kind, &push.name, Some(bound))
                        .await?;
                    self.delete_versions(push.kind, &push.name, keys).await
                };
                if let Err(e) = expired.await {
                    tracing::warn!(kind = push.kind.as_str(), name = %push.name, error = %e,
                        "cannot delete versions beyond retention; the next push retries");
                }
            }
            return Ok(outcome);
        }
        Err(StoreError::Conflict)
    }

    async fn list_versions(
        &self,
        kind: DefinitionKind,
        name: &str,
        limit: usize,
    ) -> Result<Vec<VersionInfo>, StoreError> {
        let mut infos = Vec::new();
        let mut start = None;
        while infos.len() < limit {
            let out = self
                .db
                .query()
                .table_name(&self.settings.definitions_table)
                .key_condition_expression("#k = :k")
                .expression_attribute_names("#k", "kind")
                .expression_attribute_names("#n", "name")
                .expression_attribute_names("#h", "hash")
                .expression_attribute_names("#a", "author")
                .expression_attribute_names("#c", "created_ms")
                .expression_attribute_names("#e", "encrypted")
                .projection_expression("#n, #h, #a, #c, #e")
                .expression_attribute_values(":k", s(versions_partition(kind, name)))
                .scan_index_forward(false)
                .limit(i32::try_from(limit - infos.len()).unwrap_or(i32::MAX))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| sdk("dynamodb Query", e))?;
            for item in out.items.unwrap_or_default() {
                infos.push(version_info(&item)?);
            }
            start = out.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        infos.truncate(limit);
        Ok(infos)
    }

    async fn latest_version(
        &self,
        kind: DefinitionKind,
        name: &str,
    ) -> Result<Option<VersionStamp>, StoreError> {
        let item = self
            .get_item(
                &self.settings.definitions_table,
                Self::definition_key(current_kind(kind), name),
            )
            .await?;
        Ok(item.and_then(|item| {
            Some(VersionStamp {
                version: get_n(&item, "version")? as u64,
                hash: get_s(&item, "hash")?.to_string(),
            })
        }))
    }

    async fn get_version(
        &self,
        kind: DefinitionKind,
        name: &str,
        version: u64,
    ) -> Result<Option<DefinitionVersion>, StoreError> {
        let item = self
            .get_item(
                &self.settings.definitions_table,
                Self::definition_key(&versions_partition(kind, name), &version_sort_key(version)),
            )
            .await?;
        item.map(|item| {
            Ok(DefinitionVersion {
                info: version_info(&item)?,
                document: serde_json::from_str(
                    get_s(&item, "doc").ok_or_else(|| backend("a version item has no doc"))?,
                )
                .map_err(json_error)?,
            })
        })
        .transpose()
    }

    async fn get_application(&self, name: &str) -> Result<Option<Application>, StoreError> {
        self.get_definition(kind::APPLICATION, name).await
    }

    async fn list_applications(&self) -> Result<Vec<Application>, StoreError> {
        self.list_definitions(kind::APPLICATION).await
    }

    async fn delete_application(&self, name: &str) -> Result<bool, StoreError> {
        self.delete_with_versions(DefinitionKind::Application, name)
            .await
    }

    async fn get_configuration(&self, name: &str) -> Result<Option<Configuration>, StoreError> {
        self.get_definition(kind::CONFIGURATION, name).await
    }

    async fn list_configurations(&self) -> Result<Vec<Configuration>, StoreError> {
        self.list_definitions(kind::CONFIGURATION).await
    }

    async fn delete_configuration(&self, name: &str) -> Result<bool, StoreError> {
        self.delete_with_versions(DefinitionKind::Configuration, name)
            .await
    }
}

#[async_trait]
impl ScheduleStore for DynamoStore {
    async fn put_schedule(&self, schedule: &Schedule) -> Result<(), StoreError> {
        self.put_definition(kind::SCHEDULE, &schedule.entry_id, schedule)
            .await
    }

    async fn get_schedule(&self, entry_id: &str) -> Result<Option<Schedule>, StoreError> {
        self.get_definition(kind::SCHEDULE, entry_id).await
    }

    async fn list_schedules(&self) -> Result<Vec<Schedule>, StoreError> {
        self.list_definitions(kind::SCHEDULE).await
    }

    async fn delete_schedule(&self, entry_id: &str) -> Result<bool, StoreError> {
        self.delete_definition(kind::SCHEDULE, entry_id).await
    }
}

#[async_trait]
impl ScheduleStatsStore for DynamoStore {
    async fn get_stats(&self, entry_id: &str) -> Result<Option<ScheduleStats>, StoreError> {
        Ok(self
            .get_item(
                &self.settings.definitions_table,
                Self::definition_key(kind::SCHEDULE_STATS, entry_id),
            )
            .await?
            .map(|item| Self::stats_from_item(&item)))
    }

    async fn list_stats(&self) -> Result<Vec<ScheduleStats>, StoreError> {
        Ok(self
            .query_kind(kind::SCHEDULE_STATS)
            .await?
            .iter()
            .map(Self::stats_from_item)
            .collect())
    }

    /// `SET last_tick_ms = :t IF absent OR earlier`: of concurrent firings of one tick
    /// (EventBridge Scheduler delivers at least once) exactly one wins.
    async fn claim_tick(&self, entry_id: &str, tick: DateTime<Utc>) -> Result<bool, StoreError> {
        let result = self
            .db
            .update_item()
            .table_name(&self.settings.definitions_table)
            .set_key(Some(Self::definition_key(kind::SCHEDULE_STATS, entry_id)))
            .update_expression("SET last_tick_ms = :t")
            .condition_expression("attribute_not_exists(last_tick_ms) OR last_tick_ms < :t")
            .expression_attribute_values(":t", n(tick.timestamp_millis()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_conditional_failure(&e) => Ok(false),
            Err(e) => Err(sdk("dynamodb UpdateItem", e)),
        }
    }

    async fn record_run(&self, entry_id: &str, run: &ScheduledRun) -> Result<(), StoreError> {
        self.db
            .update_item()
            .table_name(&self.settings.definitions_table)
            .set_key(Some(Self::definition_key(kind::SCHEDULE_STATS, entry_id)))
            .update_expression(
                "ADD total_runs :one SET last_run_id = :id, last_run_ms = :at \
                 REMOVE last_error, last_error_ms",
            )
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":id", s(&run.run_id))
            .expression_attribute_values(":at", n(run.start_time.timestamp_millis()))
            .send()
            .await
            .map_err(|e| sdk("dynamodb UpdateItem", e))?;
        Ok(())
    }

    async fn record_error(&self, entry_id: &str, error: &ScheduleError) -> Result<(), StoreError> {
        self.db
            .update_item()
            .table_name(&self.settings.definitions_table)
            .set_key(Some(Self::definition_key(kind::SCHEDULE_STATS, entry_id)))
            .update_expression("SET last_error = :message, last_error_ms = :at")
            .expression_attribute_values(":message", s(&error.message))
            .expression_attribute_values(":at", n(error.time.timestamp_millis()))
            .send()
            .await
            .map_err(|e| sdk("dynamodb UpdateItem", e))?;
        Ok(())
    }

    async fn delete_stats(&self, entry_id: &str) -> Result<(), StoreError> {
        self.delete_definition(kind::SCHEDULE_STATS, entry_id)
            .await
            .map(|_| ())
    }
}

#[async_trait]
impl AccessStore for DynamoStore {
    /// One transaction writes the token by name (if the name is free) and by hash.
    async fn create_token(&self, token: &ApiToken) -> Result<bool, StoreError> {
        let doc = serde_json::to_string(token).map_err(json_error)?;
        let put =
            |kind: &str, name: &str, condition: bool| -> Result<TransactWriteItem, StoreError> {
                let mut put = Put::builder()
                    .table_name(&self.settings.access_table)
                    .item("kind", s(kind))
                    .item("name", s(name))
                    .item("doc", s(doc.clone()));
                if condition {
                    put = put
                        .condition_expression("attribute_not_exists(#n)")
                        .expression_attribute_names("#n", "name");
                }
                Ok(TransactWriteItem::builder()
                    .put(put.build().map_err(|e| backend(e.to_string()))?)
                    .build())
            };
        let result = self
            .db
            .transact_write_items()
            .transact_items(put(kind::TOKEN, &token.name, true)?)
            .transact_items(put(kind::TOKEN_HASH, &token.hash, false)?)
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if transaction_condition_failed(&e) => Ok(false),
            Err(e) => Err(sdk("dynamodb TransactWriteItems", e)),
        }
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<ApiToken>, StoreError> {
        self.get_definition(kind::TOKEN_HASH, hash).await
    }

    async fn list_tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
        self.list_definitions(kind::TOKEN).await
    }

    async fn delete_token(&self, name: &str) -> Result<bool, StoreError> {
        let Some(token) = self.get_definition::<ApiToken>(kind::TOKEN, name).await? else {
            return Ok(false);
        };
        let delete = |kind: &str, name: &str| -> Result<TransactWriteItem, StoreError> {
            Ok(TransactWriteItem::builder()
                .delete(
                    Delete::builder()
                        .table_name(&self.settings.access_table)
                        .set_key(Some(Self::definition_key(kind, name)))
                        .build()
                        .map_err(|e| backend(e.to_string()))?,
                )
                .build())
        };
        self.db
            .transact_write_items()
            .transact_items(delete(kind::TOKEN, name)?)
            .transact_items(delete(kind::TOKEN_HASH, &token.hash)?)
            .send()
            .await
            .map_err(|e| sdk("dynamodb TransactWriteItems", e))?;
        Ok(true)
    }

    async fn put_binding(&self, binding: &RoleBinding) -> Result<(), StoreError> {
        let name = format!("{}:{}", binding.owner_type.as_str(), binding.owner);
        self.put_definition(kind::BINDING, &name, binding).await
    }

    async fn list_bindings(&self) -> Result<Vec<RoleBinding>, StoreError> {
        let mut bindings: Vec<RoleBinding> = self.list_definitions(kind::BINDING).await?;
        bindings.sort_by(|a, b| (a.owner_type, &a.owner).cmp(&(b.owner_type, &b.owner)));
        Ok(bindings)
    }

    async fn delete_binding(&self, owner_type: OwnerType, owner: &str) -> Result<bool, StoreError> {
        self.delete_definition(kind::BINDING, &format!("{}:{owner}", owner_type.as_str()))
            .await
    }
}

#[async_trait]
impl RunStore for DynamoStore {
    /// A transaction: the run (only if absent, or present but expired) together with its
    /// snapshot, so neither exists without the other.
    /// Parts of a run too large for one item (`dynamo/run_parts.rs`) are written first.
    async fn create_run(&self, run: &Run, app: &Application) -> Result<bool, StoreError> {
        let (manifest, written) = self
            .write_parts(
                run,
                &run_parts::all_parts(run),
                run_parts::Manifest::new(),
                &Default::default(),
            )
            .await?;
        let run_item = self.run_item(run, manifest.clone()).await?;
        let mut snapshot = Self::run_key(&run.id, SNAPSHOT_SK);
        expiry_attributes(&mut snapshot, run.expires_at);
        let key = format!("runs/{}/snapshot", run.id);
        self.put_document(&mut snapshot, || key, app).await?;
        let result = self
            .db
            .transact_write_items()
            .transact_items(transact_put(
                Put::builder()
                    .table_name(&self.settings.runs_table)
                    .set_item(Some(run_item))
                    .condition_expression("attribute_not_exists(pk) OR expires_ms <= :now")
                    .expression_attribute_values(":now", n(self.now_ms())),
            )?)
            .transact_items(transact_put(
                Put::builder()
                    .table_name(&self.settings.runs_table)
                    .set_item(Some(snapshot)),
            )?)
            .send()
            .await;
        match result {
            Ok(_) => {
                self.remember_written(&run.id, run.version, &manifest, written);
                Ok(true)
            }
            Err(e) if transaction_condition_failed(&e) => Ok(false),
            Err(e) => Err(sdk("dynamodb TransactWriteItems", e)),
        }
    }

    async fn get_run(&self, id: &str) -> Result<Option<Run>, StoreError> {
        match self
            .get_item(&self.settings.runs_table, Self::run_key(id, RUN_SK))
            .await?
        {
            Some(item) if live(&item, self.now_ms()) => Ok(Some(self.run_from_item(&item).await?)),
            _ => Ok(None),
        }
    }

    async fn update_run(&self, run: &Run, expected_version: u64) -> Result<(), StoreError> {
        self.store_run(run, expected_version, None).await
    }

    async fn update_run_delta(
        &self,
        run: &Run,
        expected_version: u64,
        delta: &sluice_core::engine::RunDelta,
    ) -> Result<(), StoreError> {
        self.store_run(run, expected_version, Some(delta)).await
    }

    async fn get_snapshot(&self, run_id: &str) -> Result<Option<Application>, StoreError> {
        match self
            .get_item(
                &self.settings.runs_table,
                Self::run_key(run_id, SNAPSHOT_SK),
            )
            .await?
        {
            Some(item) if live(&item, self.now_ms()) => Ok(Some(self.read_document(&item).await?)),
            _ => Ok(None),
        }
    }

    /// By application: the `by_application` index. Otherwise the `by_month` index, one
    /// month partition after another back to the oldest month a live run can be from.
    async fn list_runs(&self, query: &RunQuery) -> Result<Vec<Run>, StoreError> {
        let limit = if query.limit == 0 {
            DEFAULT_LIST_LIMIT
        } else {
            query.limit
        };
        let mut ids = Vec::new();
        if let Some(application) = &query.application {
            self.query_run_ids(
                BY_APPLICATION,
                ("application", application),
                query,
                limit,
                &mut ids,
            )
            .await?;
        } else {
            let now = self.clock.now();
            let newest = query.until.unwrap_or(now).min(now);
            let oldest = (now - chrono::Duration::seconds(self.settings.result_expires_seconds))
                .max(query.since.unwrap_or(DateTime::<Utc>::MIN_UTC));
            let mut month = Utc
                .with_ymd_and_hms(newest.year(), newest.month(), 1, 0, 0, 0)
                .single()
                .unwrap_or(newest);
            let oldest_month = month_of(oldest);
            loop {
                let name = month_of(month);
                self.query_run_ids(BY_MONTH, ("month", &name), query, limit, &mut ids)
                    .await?;
                if ids.len() >= limit || name <= oldest_month {
                    break;
                }
                month = match month.checked_sub_months(Months::new(1)) {
                    Some(m) => m,
                    None => break,
                };
            }
        }
        // `before_id` pages by id; `since`/`until` only bound the id range loosely
        // (deterministic ids of child runs), so the filter on created_ms is exact.
        let _ = run_id_bound;
        self.get_runs(&ids).await
    }

    async fn unfinished_runs(&self) -> Result<Vec<String>, StoreError> {
        let now = self.now_ms();
        let items = query_all(
            self.db
                .query()
                .table_name(&self.settings.runs_table)
                .index_name(OPEN_RUNS)
                .key_condition_expression("#o = :one")
                .filter_expression("#ex > :now")
                .expression_attribute_names("#o", "open")
                .expression_attribute_names("#ex", "expires_ms")
                .expression_attribute_values(":one", s("1"))
                .expression_attribute_values(":now", n(now)),
        )
        .await?;
        let mut ids: Vec<String> = items
            .iter()
            .filter_map(|i| get_s(i, "run_id").map(str::to_string))
            .collect();
        ids.sort();
        Ok(ids)
    }

    async fn put_output(
        &self,
        key: &OutputKey,
        value: &Value,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut item = Self::run_key(&key.run_id, &output_sk(&key.step_id, key.unit));
        expiry_attributes(&mut item, expires_at);
        let s3_key = format!("runs/{}/outputs/{}/{}", key.run_id, key.step_id, key.unit);
        self.put_document(&mut item, || s3_key, value).await?;
        self.db
            .put_item()
            .table_name(&self.settings.runs_table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| sdk("dynamodb PutItem", e))?;
        Ok(())
    }

    async fn get_output(&self, key: &OutputKey) -> Result<Option<Value>, StoreError> {
        match self
            .get_item(
                &self.settings.runs_table,
                Self::run_key(&key.run_id, &output_sk(&key.step_id, key.unit)),
            )
            .await?
        {
            Some(item) if live(&item, self.now_ms()) => Ok(Some(self.read_document(&item).await?)),
            _ => Ok(None),
        }
    }

    /// One item per `LOG_ITEM_ENTRIES` entries (usually one per attempt): sequence
    /// numbers are `micros * 1000 + index`, increasing across appenders whose clocks
    /// agree (Lambda's are NTP-synchronised).
    async fn append_logs(
        &self,
        run_id: &str,
        entries: &[LogEntry],
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut base = sluice_core::logs::sequence(self.clock.now(), 0);
        let max = LOG_SEQ_PER_BATCH as usize;
        if entries.len() > max {
            tracing::warn!(
                run_id,
                dropped = entries.len() - max,
                "too many log entries in one batch; the rest are dropped"
            );
        }
        for (chunk_index, chunk) in entries[..entries.len().min(max)]
            .chunks(LOG_ITEM_ENTRIES)
            .enumerate()
        {
            loop {
                let first = base + (chunk_index * LOG_ITEM_ENTRIES) as u64;
                let mut item = Self::run_key(run_id, &log_sk(first));
                item.insert("first".into(), n(first));
                expiry_attributes(&mut item, expires_at);
                let s3_key = format!("runs/{run_id}/logs/{first}");
                self.put_document(&mut item, || s3_key, chunk).await?;
                let result = self
                    .db
                    .put_item()
                    .table_name(&self.settings.runs_table)
                    .set_item(Some(item))
                    .condition_expression("attribute_not_exists(sk)")
                    .send()
                    .await;
                match result {
                    Ok(_) => break,
                    // Another batch of this run was numbered in the same microsecond:
                    // never overwrite it, take the next microsecond's numbers.
                    Err(e) if is_conditional_failure(&e) => base += LOG_SEQ_PER_BATCH,
                    Err(e) => return Err(sdk("dynamodb PutItem", e)),
                }
            }
        }
        Ok(())
    }

    async fn get_logs(
        &self,
        run_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, LogEntry)>, StoreError> {
        let limit = if limit == 0 { DEFAULT_LOG_LIMIT } else { limit };
        // The item holding `after` starts at most LOG_SEQ_PER_BATCH - 1 below it.
        let from = after.saturating_sub(LOG_SEQ_PER_BATCH - 1);
        let now = self.now_ms();
        let mut entries = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .db
                .query()
                .table_name(&self.settings.runs_table)
                .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
                .expression_attribute_values(":pk", s(run_id))
                .expression_attribute_values(":from", s(log_sk(from)))
                .expression_attribute_values(":to", s("LOG#~"))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| sdk("dynamodb Query", e))?;
            for item in out.items.unwrap_or_default() {
                if !live(&item, now) {
                    continue;
                }
                let first = get_n(&item, "first").unwrap_or(0).max(0) as u64;
                let batch: Vec<LogEntry> = self.read_document(&item).await?;
                for (i, entry) in batch.into_iter().enumerate() {
                    let seq = first + i as u64;
                    if seq > after {
                        entries.push((seq, entry));
                        if entries.len() >= limit {
                            return Ok(entries);
                        }
                    }
                }
            }
            start = out.last_evaluated_key;
            if start.is_none() {
                return Ok(entries);
            }
        }
    }
}

#[async_trait]
impl Cache for DynamoStore {
    async fn get(&self, key: &str) -> Result<Option<Value>, StoreError> {
        let item = self
            .get_item(
                &self.settings.cache_table,
                HashMap::from([("key".to_string(), s(key))]),
            )
            .await?;
        match item {
            Some(item) if live(&item, self.now_ms()) => Ok(Some(self.read_document(&item).await?)),
            _ => Ok(None),
        }
    }

    async fn put(&self, key: &str, value: &Value, ttl: Option<Duration>) -> Result<(), StoreError> {
        let mut item = HashMap::from([("key".to_string(), s(key))]);
        if let Some(ttl) = ttl {
            let at =
                self.clock.now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
            expiry_attributes(&mut item, at);
        }
        let s3_key = format!("cache/{}", hex::encode(sha2_digest(key)));
        self.put_document(&mut item, || s3_key, value).await?;
        self.db
            .put_item()
            .table_name(&self.settings.cache_table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| sdk("dynamodb PutItem", e))?;
        Ok(())
    }

    /// `true` only when a live (unexpired) entry was deleted.
    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let out = self
            .db
            .delete_item()
            .table_name(&self.settings.cache_table)
            .key("key", s(key))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| sdk("dynamodb DeleteItem", e))?;
        Ok(out
            .attributes
            .is_some_and(|a| !a.is_empty() && live(&a, self.now_ms())))
    }

    /// A `Scan` of the cache table (keyed by `key` alone, so no `Query` can select a
    /// prefix) with a `begins_with` filter, reading only the keys and expiry. Every page
    /// scans the whole table, keeping the `limit` smallest matching keys: the table holds
    /// what steps cache, and listing it is an operator's occasional read.
    async fn list(
        &self,
        prefix: &str,
        limit: usize,
        after: Option<&str>,
    ) -> Result<CacheKeys, StoreError> {
        let limit = limit.clamp(1, MAX_CACHE_PAGE);
        let now = self.now_ms();
        // One more than the page: tells whether another page follows.
        let mut smallest = std::collections::BTreeSet::new();
        let mut start = None;
        loop {
            let (items, next) = self.scan_cache_keys(prefix, start).await?;
            for item in items {
                let Some(key) = get_s(&item, "key") else {
                    continue;
                };
                if !key.starts_with(prefix)
                    || after.is_some_and(|after| key <= after)
                    || !live(&item, now)
                {
                    continue;
                }
                smallest.insert(key.to_string());
                if smallest.len() > limit + 1 {
                    smallest.pop_last();
                }
            }
            start = next;
            if start.is_none() {
                break;
            }
        }
        let more = smallest.len() > limit;
        let mut keys: Vec<String> = smallest.into_iter().collect();
        keys.truncate(limit);
        let next_after = if more { keys.last().cloned() } else { None };
        Ok(CacheKeys { keys, next_after })
    }

    /// Scans a page (at most 1 MB read) at a time and deletes its matching items one
    /// `DeleteItem` each before reading the next.
    async fn delete_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        let mut deleted = 0;
        let mut start = None;
        loop {
            let (items, next) = self.scan_cache_keys(prefix, start).await?;
            for item in items {
                let Some(key) = get_s(&item, "key") else {
                    continue;
                };
                if key.starts_with(prefix) && self.delete(key).await? {
                    deleted += 1;
                }
            }
            start = next;
            if start.is_none() {
                return Ok(deleted);
            }
        }
    }
}

type Item = HashMap<String, A>;

impl DynamoStore {
    /// One page of a `Scan` of the cache table for keys starting with `prefix`: the
    /// items' `key` and `expires_ms`, and where the next page starts.
    async fn scan_cache_keys(
        &self,
        prefix: &str,
        start: Option<Item>,
    ) -> Result<(Vec<Item>, Option<Item>), StoreError> {
        let mut scan = self
            .db
            .scan()
            .table_name(&self.settings.cache_table)
            .projection_expression("#k, expires_ms")
            .expression_attribute_names("#k", "key")
            .consistent_read(true)
            .set_exclusive_start_key(start);
        if !prefix.is_empty() {
            // An empty string is no valid begins_with operand; no filter matches all.
            scan = scan
                .filter_expression("begins_with(#k, :prefix)")
                .expression_attribute_values(":prefix", s(prefix));
        }
        let out = scan.send().await.map_err(|e| sdk("dynamodb Scan", e))?;
        Ok((out.items.unwrap_or_default(), out.last_evaluated_key))
    }
}

fn sha2_digest(text: &str) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes()).to_vec()
}

/// One put of a `TransactWriteItems` call.
fn transact_put(
    put: aws_sdk_dynamodb::types::builders::PutBuilder,
) -> Result<TransactWriteItem, StoreError> {
    Ok(TransactWriteItem::builder()
        .put(put.build().map_err(|e| backend(e.to_string()))?)
        .build())
}
