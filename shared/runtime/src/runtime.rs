//! The runtime itself: its ports ([`Backend`]), settings, errors and in-memory state
//! (plans of active runs, decrypted secrets, the progress channel). What it does lives in
//! the layers above (see the crate doc).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::Value;
use sluice_core::engine::Plan;
use sluice_core::model::Run;
use sluice_core::operators;
use sluice_core::ports::{QueueError, SecretError, StoreError};
use sluice_core::step::StepRegistry;
use sluice_core::validate::StepCatalog;
use sluice_core::Invalid;
use tokio::sync::broadcast;

pub use sluice_core::ports::Backend;

/// Settings of a runtime.
#[derive(Clone)]
pub struct RuntimeConfig {
    /// Queue of a step type (one queue for all when embedded, one per type on AWS).
    pub queue_for: Arc<dyn Fn(&str) -> String + Send + Sync>,
    /// How long runs, outputs and logs are kept.
    pub result_expires: chrono::Duration,
    /// How long decrypted secrets are reused before they are read again.
    pub secret_ttl: Duration,
    /// Outputs of at most this many bytes of JSON are kept in the run record, so that
    /// finishing a step is one write and successors read them with the run...
    pub inline_output_bytes: usize,
    /// ...while the run's inline outputs stay within this many bytes in total (the run
    /// record is rewritten by every transition; on DynamoDB each started KiB of it is a
    /// write unit).
    pub inline_outputs_per_run_bytes: usize,
    /// How long past its step's timeout a worker keeps a received message invisible, so
    /// that the attempt of a worker that died is retried at about timeout + margin. More
    /// than the claim's lease grace (`sluice_core::engine::LEASE_GRACE_MS`), so that the
    /// redelivered message finds the dead holder's lease expired.
    pub visibility_margin: Duration,
    /// The time transitions are stamped with and leases are judged by (tests move it).
    pub clock: Arc<dyn Fn() -> chrono::DateTime<Utc> + Send + Sync>,
    /// The longest step `timeout_seconds` applications may ask for here: the embedded
    /// maximum by default, Lambda's 900 s on AWS.
    pub max_timeout_seconds: u64,
    /// Versions kept per application and configuration (older ones are deleted by a
    /// push): `SLUICE_VERSIONS_KEPT`, 50 by default, at most
    /// [`MAX_VERSIONS_KEPT`](sluice_core::versions::MAX_VERSIONS_KEPT).
    pub versions_kept: usize,
    /// Starts (and replays, schedule ticks) are refused with
    /// [`StartError::Overloaded`](crate::StartError::Overloaded) while the step queues
    /// hold at least this many messages; `None` accepts every start. Embedded:
    /// [`DEFAULT_MAX_QUEUED_STEPS`](crate::DEFAULT_MAX_QUEUED_STEPS) (`sluice serve
    /// --max-queued-steps`). AWS: `None`, since SQS holds any backlog durably and Lambda
    /// scales out on it; memory of the process does not grow with the queue there.
    pub max_queued_steps: Option<u64>,
    /// How long a queue depth read for [`max_queued_steps`](Self::max_queued_steps) is
    /// reused, so that a start costs no count of the queue of its own.
    pub queued_steps_refresh: Duration,
}

/// The retention setting of the environment; an unusable value is logged and the
/// default kept, so that a typo cannot stop a deployment from serving.
fn versions_kept() -> usize {
    sluice_core::versions::versions_kept_from_env().unwrap_or_else(|message| {
        tracing::error!(%message, "ignoring the retention setting of versions");
        sluice_core::versions::DEFAULT_VERSIONS_KEPT
    })
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            queue_for: Arc::new(|_| "steps".to_string()),
            result_expires: chrono::Duration::seconds(
                sluice_core::model::DEFAULT_RESULT_EXPIRES_SECONDS,
            ),
            secret_ttl: Duration::from_secs(30),
            inline_output_bytes: 256,
            inline_outputs_per_run_bytes: 2048,
            visibility_margin: DEFAULT_VISIBILITY_MARGIN,
            clock: Arc::new(Utc::now),
            max_timeout_seconds: sluice_core::model::MAX_TIMEOUT_SECONDS,
            versions_kept: versions_kept(),
            max_queued_steps: Some(crate::backpressure::DEFAULT_MAX_QUEUED_STEPS),
            queued_steps_refresh: crate::backpressure::DEFAULT_QUEUED_STEPS_REFRESH,
        }
    }
}

/// The default [`RuntimeConfig::visibility_margin`]: the lease grace plus time for the
/// claim and for recording the result.
pub const DEFAULT_VISIBILITY_MARGIN: Duration = Duration::from_secs(45);

/// Failures of the runtime itself (not of steps, which end in their run record).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(#[from] Invalid),
    /// The request conflicts with what is stored (a definition a pack owns, a version
    /// installed with other content, an active version to delete).
    #[error("{0}")]
    Conflict(String),
}

/// A change of a run, broadcast to local watchers (live progress, `--follow`, `?wait`).
#[derive(Debug, Clone)]
pub struct Progress {
    pub run: Arc<Run>,
}

/// Decrypted values of one configuration.
pub(crate) type Secrets = Arc<std::collections::BTreeMap<String, Value>>;

/// Drives runs through the engine.
pub struct Runtime {
    pub(crate) backend: Backend,
    pub(crate) registry: StepRegistry,
    pub(crate) catalog: StepCatalog,
    pub(crate) config: RuntimeConfig,
    pub(crate) plans: PlanCache,
    /// Stored outputs of ended steps read lately (`outputs.rs`).
    pub(crate) outputs: crate::outputs::OutputCache,
    /// Transitions of one run take turns in this process (`transitions.rs`).
    pub(crate) run_turns: crate::transitions::RunTurns,
    /// The runs this process stored last, which their next transitions start from.
    pub(crate) copies: crate::transitions::RunCopies,
    /// Evaluated `for_each` item lists, which each unit indexes (`resolve.rs`).
    pub(crate) items: crate::resolve::ItemsCache,
    pub(crate) secret_cache: Mutex<HashMap<String, (Instant, Secrets)>>,
    pub(crate) progress: broadcast::Sender<Progress>,
    /// The queue depth read last, for backpressure (`backpressure.rs`).
    pub(crate) queued: crate::backpressure::QueuedSteps,
}

/// Most plans kept in memory (a plan is about the size of its application document).
pub(crate) const PLAN_CACHE_LIMIT: usize = 1_000;

/// The plans of recently active runs, least recently used evicted first, so that memory
/// stays flat however many runs start. A plan evicted too early only costs a read of the
/// run's snapshot.
pub(crate) struct PlanCache {
    plans: Mutex<lru::LruCache<String, Arc<Plan>>>,
}

impl PlanCache {
    pub(crate) fn new(limit: usize) -> Self {
        let limit = std::num::NonZeroUsize::new(limit).unwrap_or(std::num::NonZeroUsize::MIN);
        Self {
            plans: Mutex::new(lru::LruCache::new(limit)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, lru::LruCache<String, Arc<Plan>>> {
        // A panic while holding it leaves a consistent map: take it over.
        self.plans.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn get(&self, run_id: &str) -> Option<Arc<Plan>> {
        self.lock().get(run_id).cloned()
    }

    pub(crate) fn insert(&self, run_id: &str, plan: Arc<Plan>) {
        self.lock().put(run_id.to_string(), plan);
    }

    /// Drops the plan of a run that ended (late duplicates reload it from the store).
    pub(crate) fn forget(&self, run_id: &str) {
        self.lock().pop(run_id);
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

impl Runtime {
    pub fn new(backend: Backend, registry: StepRegistry, config: RuntimeConfig) -> Arc<Self> {
        let catalog = StepCatalog::new(&registry).with_max_timeout(config.max_timeout_seconds);
        let (progress, _) = broadcast::channel(4096);
        Arc::new(Self {
            backend,
            registry,
            catalog,
            config,
            plans: PlanCache::new(PLAN_CACHE_LIMIT),
            outputs: Default::default(),
            run_turns: Default::default(),
            copies: Default::default(),
            items: Default::default(),
            secret_cache: Mutex::default(),
            progress,
            queued: Default::default(),
        })
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// This runtime's settings (e.g. to build a runtime like it with one setting changed).
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    pub fn registry(&self) -> &StepRegistry {
        &self.registry
    }

    pub fn catalog(&self) -> &StepCatalog {
        &self.catalog
    }

    /// Every queue this runtime's step types (and delayed operators) use.
    pub fn queues(&self) -> Vec<String> {
        let mut queues: Vec<String> = self
            .registry
            .names()
            .chain([operators::TRANSFORM])
            .map(|name| (self.config.queue_for)(name))
            .collect();
        queues.sort();
        queues.dedup();
        queues
    }

    /// Local run changes, for watchers.
    pub fn subscribe(&self) -> broadcast::Receiver<Progress> {
        self.progress.subscribe()
    }
}
