//! Runs: one execution of an application, with per-step and per-unit state. This is the
//! record the engine transforms and the stores persist (with optimistic `version`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Default retention of runs, outputs and logs (SPEC §4): 7 days.
pub const DEFAULT_RESULT_EXPIRES_SECONDS: i64 = 604_800;

/// Prefix of every run id.
pub const RUN_ID_PREFIX: &str = "isapp-";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Pending,
    Running,
    Success,
    Failure,
    Revoked,
}

impl RunState {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Success | Self::Failure | Self::Revoked)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Revoked => "revoked",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "pending" => Self::Pending,
            "running" => Self::Running,
            "success" => Self::Success,
            "failure" => Self::Failure,
            "revoked" => Self::Revoked,
            _ => return None,
        })
    }
}

/// A step's state within a run.
///
/// `queued`: ready, waiting for a worker (or for a retry delay); `waiting`: a blocking
/// `trigger_application` waiting for its child run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepState {
    Pending,
    Queued,
    Running,
    Waiting,
    Success,
    Warning,
    Failed,
    Skipped,
    Cancelled,
}

impl StepState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Success | Self::Warning | Self::Failed | Self::Skipped | Self::Cancelled
        )
    }

    pub fn succeeded(self) -> bool {
        matches!(self, Self::Success | Self::Warning)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Waiting => "waiting",
            Self::Success => "success",
            Self::Warning => "warning",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
            Self::Cancelled => "cancelled",
        }
    }
}

/// The state of one unit of work: the whole step, or one item (batch) of a `for_each`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnitState {
    /// Not yet dispatched (a `for_each` item beyond `max_concurrency`).
    Pending,
    /// Dispatched to a queue; may not start before `not_before`.
    Queued,
    /// Claimed by a worker at `claimed_at`.
    Running,
    /// Finished successfully.
    Done,
    /// Failed after its last attempt.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unit {
    pub state: UnitState,
    /// The current (or last) attempt number, from 1.
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// When the unit's last attempt ended successfully (with `claimed_at`, the times of
    /// its `FLOW` start and stop log entries, which are derived rather than stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// A small output kept in the run record itself, so that finishing a step is one
    /// write and its successors read it with the run (see `Event::Finished`). Larger
    /// outputs are stored apart; `None` then. (A `null` output is `Some(Null)`, also
    /// after a round trip through a store, so nobody looks for it elsewhere.)
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present_value"
    )]
    pub output: Option<Value>,
    /// The run a `trigger_application` unit started (every unit of a fan-out starts its
    /// own child).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child_run: Option<String>,
}

/// A present field, `null` included, is `Some` (serde's `Option` would make `null` `None`).
fn present_value<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

impl Unit {
    pub fn pending() -> Self {
        Self {
            state: UnitState::Pending,
            attempt: 0,
            not_before: None,
            claimed_at: None,
            error: None,
            warnings: Vec::new(),
            finished_at: None,
            output: None,
            child_run: None,
        }
    }
}

/// How many of a step's units are in each state: what the engine asks at every unit's
/// end, kept up to date by it so that the answer costs the same for ten units as for ten
/// thousand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnitTally {
    pub pending: u32,
    pub queued: u32,
    pub running: u32,
    pub done: u32,
    pub failed: u32,
    /// Bytes of the outputs kept in the units themselves (compact JSON), which the
    /// runtime bounds per run.
    pub inline_output_bytes: u64,
}

impl UnitTally {
    /// The counts of `units`.
    pub fn of(units: &[Unit]) -> Self {
        let mut tally = Self::default();
        for unit in units {
            *tally.slot(unit.state) += 1;
            tally.inline_output_bytes += inline_len(&unit.output);
        }
        tally
    }

    fn slot(&mut self, state: UnitState) -> &mut u32 {
        match state {
            UnitState::Pending => &mut self.pending,
            UnitState::Queued => &mut self.queued,
            UnitState::Running => &mut self.running,
            UnitState::Done => &mut self.done,
            UnitState::Failed => &mut self.failed,
        }
    }
}

/// The length of an inline output as compact JSON (0 when there is none).
fn inline_len(output: &Option<Value>) -> u64 {
    struct Counter(u64);
    impl std::io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len() as u64;
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let Some(output) = output else {
        return 0;
    };
    let mut counter = Counter(0);
    // Writing a `Value` to a counter cannot fail.
    let _ = serde_json::to_writer(&mut counter, output);
    counter.0
}

/// A step's [`UnitTally`] once computed: derived from its units, never stored (a run read
/// from a store computes it again when first asked), and left out of comparisons.
#[derive(Debug, Clone, Copy, Default)]
pub struct TallyCache(Option<UnitTally>);

impl PartialEq for TallyCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// A step of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRun {
    pub id: String,
    pub state: StepState,
    /// Highest attempt number started over the step's units.
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child_run: Option<String>,
    /// `Some(n)` when the step fanned out over `n` items (or batches): its output is the
    /// list of the units' outputs in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fan_out: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub units: Vec<Unit>,
    /// Version of the step's type, recorded when the run is created (see
    /// docs/semantics.md, "Step type versions"); `None` in runs stored before versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub type_version: Option<String>,
    /// The counts of `units` by state, once the engine asked (see [`StepRun::tally`]).
    #[serde(skip)]
    pub(crate) tally: TallyCache,
}

impl StepRun {
    /// The step's own fields without its units (a store may keep units apart).
    pub fn record(&self) -> StepRun {
        let StepRun {
            id,
            state,
            attempts,
            started_at,
            finished_at,
            error,
            warnings,
            child_run,
            fan_out,
            units: _,
            type_version,
            tally: _,
        } = self;
        StepRun {
            id: id.clone(),
            state: *state,
            attempts: *attempts,
            started_at: *started_at,
            finished_at: *finished_at,
            error: error.clone(),
            warnings: warnings.clone(),
            child_run: child_run.clone(),
            fan_out: *fan_out,
            units: Vec::new(),
            type_version: type_version.clone(),
            tally: TallyCache::default(),
        }
    }

    /// Takes `other`'s own fields, keeping this step's units (and their tally).
    pub fn set_record_from(&mut self, other: &StepRun) {
        let units = std::mem::take(&mut self.units);
        let tally = self.tally;
        *self = other.record();
        self.units = units;
        self.tally = tally;
    }

    /// The counts of this step's units by state (computed once, then kept by
    /// [`StepRun::set_unit_state`] and [`StepRun::set_units`]).
    pub fn tally(&mut self) -> UnitTally {
        let units = &self.units;
        *self.tally.0.get_or_insert_with(|| UnitTally::of(units))
    }

    /// The tally as kept, if it was computed (tests compare it with the units).
    #[doc(hidden)]
    pub fn kept_tally(&self) -> Option<UnitTally> {
        self.tally.0
    }

    /// Takes `other`'s tally (when `self`'s units were just made equal to `other`'s).
    pub fn take_tally_from(&mut self, other: &StepRun) {
        self.tally = other.tally;
    }

    /// Sets unit `u`'s state, keeping the tally.
    pub fn set_unit_state(&mut self, u: usize, state: UnitState) {
        let old = std::mem::replace(&mut self.units[u].state, state);
        if let Some(tally) = self.tally.0.as_mut() {
            *tally.slot(old) -= 1;
            *tally.slot(state) += 1;
        }
    }

    /// Sets unit `u`'s inline output, keeping the tally.
    pub fn set_unit_output(&mut self, u: usize, output: Option<Value>) {
        let new = inline_len(&output);
        let old = std::mem::replace(&mut self.units[u].output, output);
        if let Some(tally) = self.tally.0.as_mut() {
            tally.inline_output_bytes = tally.inline_output_bytes - inline_len(&old) + new;
        }
    }

    /// Replaces the units (their tally is computed again when next asked).
    pub fn set_units(&mut self, units: Vec<Unit>) {
        self.units = units;
        self.tally = TallyCache::default();
    }

    pub fn new(id: &str) -> Self {
        Self {
            id: id.to_string(),
            state: StepState::Pending,
            attempts: 0,
            started_at: None,
            finished_at: None,
            error: None,
            warnings: Vec::new(),
            child_run: None,
            fan_out: None,
            units: Vec::new(),
            type_version: None,
            tally: TallyCache::default(),
        }
    }
}

/// The step of a parent run that started this run through `trigger_application`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentRef {
    pub run_id: String,
    pub step_id: String,
    /// Whether the parent step waits for this run to end.
    #[serde(default)]
    pub blocking: bool,
}

/// The run whose end an alert run handles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertOf {
    /// The run that failed (or ended with warnings).
    pub run_id: String,
    pub event: AlertEvent,
}

/// Why an alert was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertEvent {
    /// The run failed (`on_failure`).
    Failure,
    /// The run succeeded with warnings (`on_warning`).
    Warning,
}

impl AlertEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Failure => "failure",
            Self::Warning => "warning",
        }
    }
}

/// One execution of an application.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub id: String,
    pub application: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// 10 debug, 20 info, 30 warning, 40 error.
    pub loglevel: u8,
    /// The params the run was started with (reserved ones included).
    #[serde(default)]
    pub params: Map<String, Value>,
    pub state: RunState,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_of: Option<String>,
    /// Set on the run an `on_failure` / `on_warning` started (and on the runs it
    /// triggers): such a run never starts an alert itself, so alerts cannot loop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_of: Option<AlertOf>,
    /// When the run, its outputs and logs expire (`result_expires`).
    pub expires_at: DateTime<Utc>,
    /// One entry per application step, in application order.
    pub steps: Vec<StepRun>,
    /// Optimistic-concurrency version, bumped by every stored transition.
    #[serde(default)]
    pub version: u64,
    /// The version of the stored application this run executes (see
    /// [`crate::versions`]); absent when its document matches no stored version (an
    /// application pushed before versions existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_version: Option<u64>,
}

impl Run {
    pub fn step(&self, id: &str) -> Option<&StepRun> {
        self.steps.iter().find(|s| s.id == id)
    }

    /// The run's own fields without its steps (a store may keep steps apart).
    pub fn header(&self) -> Run {
        let Run {
            id,
            application,
            configuration,
            queue,
            loglevel,
            params,
            state,
            created_at,
            started_at,
            finished_at,
            parent,
            replay_of,
            alert_of,
            expires_at,
            steps: _,
            version,
            application_version,
        } = self;
        Run {
            id: id.clone(),
            application: application.clone(),
            configuration: configuration.clone(),
            queue: queue.clone(),
            loglevel: *loglevel,
            params: params.clone(),
            state: *state,
            created_at: *created_at,
            started_at: *started_at,
            finished_at: *finished_at,
            parent: parent.clone(),
            replay_of: replay_of.clone(),
            alert_of: alert_of.clone(),
            expires_at: *expires_at,
            steps: Vec::new(),
            version: *version,
            application_version: *application_version,
        }
    }

    /// Bytes of the outputs kept inline in all of the run's units (compact JSON), from
    /// the steps' tallies (computed once, then kept).
    pub fn inline_output_bytes(&mut self) -> u64 {
        self.steps
            .iter_mut()
            .map(|s| s.tally().inline_output_bytes)
            .sum()
    }

    /// Like [`Run::inline_output_bytes`] for a run that cannot change here: a step
    /// whose tally was never computed is counted now, and not kept.
    pub fn inline_output_bytes_now(&self) -> u64 {
        self.steps
            .iter()
            .map(|s| {
                s.tally
                    .0
                    .unwrap_or_else(|| UnitTally::of(&s.units))
                    .inline_output_bytes
            })
            .sum()
    }

    /// Takes `other`'s own fields, keeping this run's steps.
    pub fn set_header_from(&mut self, other: &Run) {
        let steps = std::mem::take(&mut self.steps);
        *self = other.header();
        self.steps = steps;
    }
}

/// A new, time-ordered run id: `isapp-<uuid v7>`.
pub fn new_run_id() -> String {
    format!("{RUN_ID_PREFIX}{}", uuid::Uuid::now_v7())
}

/// A run id that is the same every time for the same `seed` and time: used for child
/// runs so that a redelivered `trigger_application` never starts a second child.
pub fn deterministic_run_id(at: DateTime<Utc>, seed: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(seed.as_bytes());
    let mut random = [0u8; 10];
    random.copy_from_slice(&digest[..10]);
    let millis = at.timestamp_millis().max(0) as u64;
    let uuid = uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid();
    format!("{RUN_ID_PREFIX}{uuid}")
}

/// Severity of a step log entry. `FLOW` marks step start and stop and is always kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum LogLevel {
    Debug,
    Info,
    Warning,
    Error,
    Flow,
}

impl LogLevel {
    /// The numeric level as in `loglevel` (FLOW passes every filter).
    pub fn number(self) -> u8 {
        match self {
            Self::Debug => 10,
            Self::Info => 20,
            Self::Warning => 30,
            Self::Error => 40,
            Self::Flow => 100,
        }
    }

    pub fn enabled_at(self, loglevel: u8) -> bool {
        self.number() >= loglevel
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Debug => "DEBUG",
            Self::Info => "INFO",
            Self::Warning => "WARNING",
            Self::Error => "ERROR",
            Self::Flow => "FLOW",
        }
    }
}

/// One step log entry (SPEC §4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    pub ts: DateTime<Utc>,
    pub level: LogLevel,
    pub step: String,
    pub attempt: u32,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_ids_repeat_and_differ_by_seed() {
        let at = Utc::now();
        let a = deterministic_run_id(at, "run-1/Step/0/1");
        assert_eq!(a, deterministic_run_id(at, "run-1/Step/0/1"));
        assert_ne!(a, deterministic_run_id(at, "run-1/Step/0/2"));
        assert!(a.starts_with(RUN_ID_PREFIX));
        let uuid = uuid::Uuid::parse_str(&a[RUN_ID_PREFIX.len()..]).unwrap();
        assert_eq!(uuid.get_version_num(), 7);
    }

    #[test]
    fn an_inline_null_output_survives_a_round_trip() {
        let mut unit = Unit::pending();
        unit.output = Some(Value::Null);
        let text = serde_json::to_string(&unit).unwrap();
        assert_eq!(
            serde_json::from_str::<Unit>(&text).unwrap().output,
            Some(Value::Null)
        );
        let absent: Unit = serde_json::from_str(r#"{"state":"pending","attempt":0}"#).unwrap();
        assert_eq!(absent.output, None);
    }

    #[test]
    fn log_levels_filter() {
        assert!(LogLevel::Flow.enabled_at(40));
        assert!(!LogLevel::Debug.enabled_at(20));
        assert!(LogLevel::Debug.enabled_at(10));
    }
}
