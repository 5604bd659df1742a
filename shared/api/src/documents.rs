//! The documents the API answers with (and the few it reads beyond the definitions), as
//! types: the handlers build and return them, the OpenAPI components are generated from
//! their `JsonSchema` ([`crate::openapi`]), and clients (the CLI, tests) deserialize
//! them. The documents users write (applications, configurations, schedules, role
//! bindings) are the core model's types and are used as they are.
//!
//! Field order is the order on the wire (`serde_json` keeps insertion order), and each
//! type serializes exactly as the API has always answered (SPEC §4–6): fields that were
//! always present stay present (`null` when empty), the optional ones stay absent.

use chrono::{DateTime, Utc};
use indexmap::IndexMap;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use sluice_core::logs::LogDocument;
use sluice_core::model::{AlertOf, ApiToken, Role, Run, RunState, Schedule, StepState};
use sluice_core::ports::ScheduleStats;
use sluice_core::task::{rfc3339, API_BASE};
use sluice_core::versions::{DefinitionKind, DiffEntry, VersionInfo};

// ---- times and states on the wire ------------------------------------------------

/// Times are RFC 3339 UTC with milliseconds and a `Z` ([`rfc3339`]).
fn millis<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(t))
}

fn millis_opt<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&rfc3339(t)),
        None => s.serialize_none(),
    }
}

/// A field that, when present, keeps its value even if that value is `null` (an
/// `Option<Value>` would read `null` as absent).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

fn enum_schema(names: &[&str]) -> Schema {
    json_schema!({"type": "string", "enum": names})
}

const RUN_STATES: [RunState; 5] = [
    RunState::Pending,
    RunState::Running,
    RunState::Success,
    RunState::Failure,
    RunState::Revoked,
];

const STEP_STATES: [StepState; 9] = [
    StepState::Pending,
    StepState::Queued,
    StepState::Running,
    StepState::Waiting,
    StepState::Success,
    StepState::Warning,
    StepState::Failed,
    StepState::Skipped,
    StepState::Cancelled,
];

fn run_state_schema(_: &mut SchemaGenerator) -> Schema {
    enum_schema(&RUN_STATES.map(RunState::as_str))
}

fn run_state_opt_schema(_: &mut SchemaGenerator) -> Schema {
    let mut schema = enum_schema(&RUN_STATES.map(RunState::as_str));
    schema.insert("nullable".into(), true.into());
    schema
}

fn step_state_schema(_: &mut SchemaGenerator) -> Schema {
    enum_schema(&STEP_STATES.map(StepState::as_str))
}

fn alert_of_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "description": "On an alert run (and the runs it triggers): the run whose failure or warnings it handles.",
        "required": ["run_id", "event"],
        "properties": {
            "run_id": {"type": "string"},
            "event": {"type": "string", "enum": ["failure", "warning"]}
        }
    })
}

fn any_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"description": "Any JSON value."})
}

// ---- errors ------------------------------------------------------------------------

/// Every error answer: `{"error": {"code", "message", "field"?, "request_id"?}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "Error")]
pub struct ErrorDocument {
    pub error: ErrorDetail,
}

/// What went wrong, and where.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorDetail {
    /// `bad_request`, `unauthorized`, `forbidden`, `not_found`, `conflict`, `invalid`,
    /// `rate_limited`, `internal`, …
    pub code: String,
    pub message: String,
    /// Path of the offending field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// 500 answers: the request id (also the x-request-id header) under which the server
    /// logged the failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

// ---- health ------------------------------------------------------------------------

/// `GET /healthcheck`: liveness.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Status {
    #[schemars(extend("enum" = ["ok"]))]
    pub status: String,
}

impl Status {
    pub fn ok() -> Self {
        Self {
            status: "ok".into(),
        }
    }
}

/// `GET /about`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct About {
    pub name: String,
    pub version: String,
    /// `embedded` or `aws`.
    pub backend: String,
    /// Base path of the API.
    pub api: String,
    /// Path of this OpenAPI document.
    pub openapi: String,
}

/// `GET /health`: each backing component's check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Health {
    #[schemars(extend("enum" = ["ok", "error"]))]
    pub status: String,
    pub backend: String,
    pub components: IndexMap<String, HealthComponent>,
}

/// One component of [`Health`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HealthComponent {
    #[schemars(extend("enum" = ["ok", "error"]))]
    pub status: String,
    pub latency_ms: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a `DELETE` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Deleted {
    pub deleted: bool,
    /// `application`, `configuration`, `schedule`, `cache`, `role_binding` or `token`.
    pub kind: String,
    pub name: String,
}

impl Deleted {
    pub fn new(kind: &str, name: &str) -> Self {
        Self {
            deleted: true,
            kind: kind.into(),
            name: name.into(),
        }
    }
}

// ---- tasks (runs) ------------------------------------------------------------------

/// A run as the API shows it: the task document (SPEC §4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Task {
    pub task_id: String,
    pub href: String,
    pub application: String,
    #[schemars(schema_with = "run_state_schema")]
    pub state: RunState,
    pub configuration: Option<String>,
    pub queue: Option<String>,
    pub params: Map<String, Value>,
    #[serde(serialize_with = "millis")]
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "millis_opt")]
    #[schemars(with = "Option<String>", extend("format" = "date-time"))]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "millis_opt")]
    #[schemars(with = "Option<String>", extend("format" = "date-time"))]
    pub finished_at: Option<DateTime<Utc>>,
    /// The run and step that started this run (`trigger_application`).
    pub parent: Option<TaskParent>,
    /// Each step by id, in the application's order.
    pub steps: IndexMap<String, TaskStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "alert_of_schema")]
    pub alert_of: Option<AlertOf>,
    /// The stored version of the application the run executes; absent when its document
    /// is no stored version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_version: Option<u64>,
    /// The run this one replays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_of: Option<String>,
}

/// The parent of a child run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskParent {
    pub task_id: String,
    pub step: String,
}

/// One step of a [`Task`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskStep {
    #[schemars(schema_with = "step_state_schema")]
    pub state: StepState,
    pub attempts: u32,
    #[serde(serialize_with = "millis_opt")]
    #[schemars(with = "Option<String>", extend("format" = "date-time"))]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "millis_opt")]
    #[schemars(with = "Option<String>", extend("format" = "date-time"))]
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    pub child_run: Option<String>,
    pub logs_href: String,
    pub data_href: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Version of the step's type, recorded when the run was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Number of `for_each` units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<u32>,
    /// The child runs of a fanned-out `trigger_application`, one per started item.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub child_runs: Vec<String>,
    /// With `?outputs=true`: the step's output (`null` when it has none).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    #[schemars(schema_with = "any_schema")]
    pub output: Option<Value>,
}

impl Task {
    /// The task document of `run`; `outputs`, when given, adds each step's `output`.
    pub fn of(run: &Run, outputs: Option<&Map<String, Value>>) -> Self {
        let steps = run
            .steps
            .iter()
            .map(|step| {
                // Each unit of a fanned-out trigger_application starts its own child run.
                let child_runs = if step.fan_out.is_some() {
                    step.units
                        .iter()
                        .filter_map(|u| u.child_run.clone())
                        .collect()
                } else {
                    Vec::new()
                };
                let doc = TaskStep {
                    state: step.state,
                    attempts: step.attempts,
                    started_at: step.started_at,
                    finished_at: step.finished_at,
                    error: step.error.clone(),
                    child_run: step.child_run.clone(),
                    logs_href: format!("{API_BASE}/tasks/{}/logs?step={}", run.id, step.id),
                    data_href: format!("{API_BASE}/tasks/{}/steps/{}/output", run.id, step.id),
                    warnings: step.warnings.clone(),
                    version: step.type_version.clone(),
                    items: step.fan_out,
                    child_runs,
                    output: outputs.map(|o| o.get(&step.id).cloned().unwrap_or(Value::Null)),
                };
                (step.id.clone(), doc)
            })
            .collect();
        Self {
            task_id: run.id.clone(),
            href: format!("{API_BASE}/tasks/{}", run.id),
            application: run.application.clone(),
            state: run.state,
            configuration: run.configuration.clone(),
            queue: run.queue.clone(),
            params: run.params.clone(),
            created_at: run.created_at,
            started_at: run.started_at,
            finished_at: run.finished_at,
            parent: run.parent.as_ref().map(|p| TaskParent {
                task_id: p.run_id.clone(),
                step: p.step_id.clone(),
            }),
            steps,
            alert_of: run.alert_of.clone(),
            application_version: run.application_version,
            replay_of: run.replay_of.clone(),
        }
    }

    /// Every child run the steps name (a trigger's, or each unit's of a fanned-out one).
    pub fn child_runs(&self) -> impl Iterator<Item = &str> {
        self.steps.values().flat_map(|s| {
            s.child_run
                .as_deref()
                .into_iter()
                .chain(s.child_runs.iter().map(String::as_str))
        })
    }
}

/// `GET /tasks`: a page of runs, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskList {
    pub tasks: Vec<Task>,
    pub count: usize,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// How many runs a bulk revoke revoked (`DELETE /tasks`, or `/tasks/{application}/revoke`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Revoked {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application: Option<String>,
    pub revoked: u64,
}

/// `POST /tasks/{id}/revoke`: the revoked run's task document, or, given an
/// application's name, how many of its runs were revoked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Revocation {
    Run(Box<Task>),
    Application(Revoked),
}

/// One log entry as readers get it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LogLine {
    /// Sequence number in the run's log (0 outside a run: `POST /steps/run`).
    pub seq: u64,
    #[schemars(extend("format" = "date-time"))]
    pub ts: String,
    #[schemars(extend("enum" = ["DEBUG", "INFO", "WARNING", "ERROR", "FLOW"]))]
    pub level: String,
    pub step: String,
    pub attempt: u32,
    pub message: String,
}

impl From<&LogDocument> for LogLine {
    fn from(doc: &LogDocument) -> Self {
        Self {
            seq: doc.seq,
            ts: doc.ts.clone(),
            level: doc.level.to_string(),
            step: doc.step.clone(),
            attempt: doc.attempt,
            message: doc.message.clone(),
        }
    }
}

/// A page of a run's log (`GET /tasks/{id}/logs`, `GET /applications/{name}/logs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "Logs")]
pub struct LogPage {
    /// `null`: the application has no run yet.
    pub task_id: Option<String>,
    /// The run's state as read before its entries.
    #[schemars(schema_with = "run_state_opt_schema")]
    pub state: Option<RunState>,
    pub logs: Vec<LogLine>,
    /// Pass as `after` to read on.
    pub next_after: u64,
    /// Whether the page was full (more entries may follow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub more: Option<bool>,
    /// The application's log only: its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application: Option<String>,
}

/// One unit of a step in a [`UnitPage`]: the step itself, or one item (batch) of its
/// `for_each`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UnitEntry {
    /// The item's index in the `for_each` list (0 for a step without one).
    pub index: usize,
    #[schemars(extend("enum" = ["pending", "queued", "running", "done", "failed"]))]
    pub state: String,
    /// The current (or last) attempt, from 1; 0 before the first.
    pub attempt: u32,
    /// When the current attempt was claimed.
    #[serde(serialize_with = "millis_opt")]
    #[schemars(with = "Option<String>", extend("format" = "date-time"))]
    pub started_at: Option<DateTime<Utc>>,
    /// When the last attempt ended successfully.
    #[serde(serialize_with = "millis_opt")]
    #[schemars(with = "Option<String>", extend("format" = "date-time"))]
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    pub child_run: Option<String>,
}

/// A page of a step's units (`GET /tasks/{id}/steps/{step}/units`): which items of a
/// wide `for_each` failed, and why, without reading the whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "Units")]
pub struct UnitPage {
    pub task_id: String,
    pub step: String,
    /// Units the step has: its `for_each` items, 1 otherwise, 0 before it started.
    pub total: usize,
    /// Units in the `state` asked for (all of them without one).
    pub matching: usize,
    pub offset: usize,
    pub units: Vec<UnitEntry>,
    /// Pass as `offset` for the next page; `null` on the last.
    pub next_offset: Option<usize>,
}

// ---- steps -------------------------------------------------------------------------

/// A registered step type or operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StepType {
    pub name: String,
    #[schemars(extend("enum" = ["step", "operator"]))]
    pub kind: String,
    /// Semver version of the step type (an operator's is the engine's).
    pub version: String,
    pub description: String,
    /// JSON Schema of the parameters.
    #[schemars(schema_with = "any_schema")]
    pub parameters: Value,
}

impl StepType {
    /// Every step type and operator of `registry`.
    pub fn listing(registry: &sluice_core::step::StepRegistry) -> Vec<Self> {
        sluice_core::step::step_type_listing(registry)
            .into_iter()
            .filter_map(|t| serde_json::from_value(t).ok())
            .collect()
    }
}

/// `POST /steps/run`: what one step run produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StepRunResult {
    pub name: String,
    #[schemars(extend("enum" = ["success", "warning", "failed"]))]
    pub state: String,
    #[schemars(schema_with = "any_schema")]
    pub output: Value,
    pub warnings: Vec<String>,
    pub error: Option<String>,
    pub seconds: f64,
    pub logs: Vec<LogLine>,
}

impl From<sluice_runtime::SingleStepOutcome> for StepRunResult {
    fn from(outcome: sluice_runtime::SingleStepOutcome) -> Self {
        Self {
            name: outcome.name,
            state: outcome.state.to_string(),
            output: outcome.output,
            warnings: outcome.warnings,
            error: outcome.error,
            seconds: outcome.seconds,
            logs: outcome.logs.iter().map(LogLine::from).collect(),
        }
    }
}

// ---- schedules ---------------------------------------------------------------------

/// A schedule with its statistics (`GET /schedule…`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ScheduleEntry {
    #[serde(flatten)]
    pub schedule: Schedule,
    pub total_runs: u64,
    /// Why the latest tick could not start a run; `null` once a tick starts one.
    pub last_error: Option<ScheduleError>,
    pub last_run: Option<ScheduleRun>,
    /// The next tick; `null` when disabled.
    #[serde(serialize_with = "millis_opt")]
    #[schemars(with = "Option<String>", extend("format" = "date-time"))]
    pub next_run: Option<DateTime<Utc>>,
}

/// Why a schedule's latest tick started nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ScheduleError {
    pub message: String,
    #[serde(serialize_with = "millis")]
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub time: DateTime<Utc>,
}

/// The run a schedule's latest tick started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ScheduleRun {
    pub href: String,
    pub task_id: String,
    #[serde(serialize_with = "millis")]
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub start_time: DateTime<Utc>,
}

impl ScheduleEntry {
    /// `schedule` with its statistics and its next tick after `now`.
    pub fn of(schedule: &Schedule, stats: Option<&ScheduleStats>, now: DateTime<Utc>) -> Self {
        let next_run = if schedule.enabled {
            sluice_core::schedule::validate_schedule(schedule)
                .ok()
                .and_then(|t| t.next_after(now))
        } else {
            None
        };
        Self {
            schedule: schedule.clone(),
            total_runs: stats.map_or(0, |s| s.total_runs),
            last_error: stats
                .and_then(|s| s.last_error.as_ref())
                .map(|e| ScheduleError {
                    message: e.message.clone(),
                    time: e.time,
                }),
            last_run: stats
                .and_then(|s| s.last_run.as_ref())
                .map(|r| ScheduleRun {
                    href: format!("{API_BASE}/tasks/{}", r.run_id),
                    task_id: r.run_id.clone(),
                    start_time: r.start_time,
                }),
            next_run,
        }
    }
}

// ---- cache -------------------------------------------------------------------------

/// `GET /cache/{key}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CacheEntry {
    pub key: String,
    #[schemars(schema_with = "any_schema")]
    pub value: Value,
}

/// `GET /cache`: a page of live keys, in ascending order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CacheKeyList {
    pub keys: Vec<String>,
    pub count: usize,
    /// Pass as `after` for the next page; `null` on the last page.
    pub next_after: Option<String>,
}

/// `DELETE /cache?prefix=`: how many live entries were deleted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CacheDeleted {
    pub prefix: String,
    pub deleted: u64,
}

// ---- roles and tokens --------------------------------------------------------------

/// A role, with the roles it includes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RoleInfo {
    pub name: Role,
    pub description: String,
    pub includes: Vec<Role>,
}

/// An API token's name and role (never the token).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Token {
    pub name: String,
    pub role: Role,
    #[serde(serialize_with = "millis")]
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub created_at: DateTime<Utc>,
}

impl From<&ApiToken> for Token {
    fn from(token: &ApiToken) -> Self {
        Self {
            name: token.name.clone(),
            role: token.role,
            created_at: token.created_at,
        }
    }
}

/// `POST /tokens`: the new token, shown only in this answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NewToken {
    #[serde(flatten)]
    pub record: Token,
    /// The bearer token; shown only in this response.
    pub token: String,
}

// ---- versions ----------------------------------------------------------------------

/// A definition's stored versions, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct VersionList {
    pub kind: DefinitionKind,
    pub name: String,
    pub versions: Vec<VersionInfo>,
}

/// What changed between two versions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct VersionDiff {
    pub kind: DefinitionKind,
    pub name: String,
    pub from: u64,
    pub to: u64,
    pub changes: Vec<DiffEntry>,
}

/// A rollback's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RolledBack {
    pub kind: DefinitionKind,
    pub name: String,
    pub rolled_back_to: u64,
    /// The version the definition is now at.
    pub version: u64,
    /// `false` when the document equalled the latest version's: nothing was stored.
    pub created: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The state schemas list exactly the names the states serialize to.
    #[test]
    fn state_schemas_name_every_state() {
        for state in RUN_STATES {
            assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
        }
        for state in STEP_STATES {
            assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
            assert_eq!(
                serde_json::from_value::<StepState>(state.as_str().into()).unwrap(),
                state
            );
        }
    }

    /// The typed task document is, byte for byte, the one the API has always answered
    /// (the core's rendering), with every optional part present.
    #[test]
    fn task_documents_keep_their_wire_form() {
        use sluice_core::model::{AlertEvent, ParentRef, StepRun, Unit};
        let mut run: Run = serde_json::from_value(serde_json::json!({
            "id": "r1", "application": "a", "loglevel": 20, "params": {"x": 1},
            "state": "failure", "created_at": "2026-01-01T00:00:00.123456Z",
            "expires_at": "2026-01-08T00:00:00Z", "steps": [], "version": 3
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let at = run.created_at;
        run.configuration = Some("crm".into());
        run.started_at = Some(at);
        run.finished_at = Some(at + chrono::Duration::milliseconds(1500));
        run.parent = Some(ParentRef {
            run_id: "p1".into(),
            step_id: "Trigger".into(),
            blocking: true,
        });
        run.alert_of = Some(AlertOf {
            run_id: "r0".into(),
            event: AlertEvent::Failure,
        });
        run.replay_of = Some("r0".into());
        run.application_version = Some(4);
        let mut a = StepRun::new("A");
        a.state = StepState::Warning;
        a.attempts = 2;
        a.started_at = Some(at);
        a.finished_at = Some(at + chrono::Duration::milliseconds(20));
        a.warnings = vec!["slow".into()];
        a.type_version = Some("1.2.0".into());
        let mut fan = StepRun::new("Fan");
        fan.state = StepState::Failed;
        fan.error = Some("boom".into());
        fan.fan_out = Some(2);
        fan.units = vec![
            Unit {
                child_run: Some("c1".into()),
                ..Unit::pending()
            },
            Unit::pending(),
        ];
        let mut child = StepRun::new("Child");
        child.child_run = Some("c2".into());
        run.steps = vec![a, fan, child];
        let outputs: Map<String, Value> = [("A".to_string(), serde_json::json!([1]))]
            .into_iter()
            .collect();
        for outputs in [None, Some(&outputs)] {
            assert_eq!(
                serde_json::to_string(&Task::of(&run, outputs)).unwrap(),
                sluice_core::task::task_document(&run, outputs).to_string()
            );
        }
        let task = Task::of(&run, None);
        assert_eq!(task.child_runs().collect::<Vec<_>>(), ["c1", "c2"]);
    }

    /// A task document reads back as itself, `null` outputs included.
    #[test]
    fn task_documents_round_trip() {
        let mut run: Run = serde_json::from_value(serde_json::json!({
            "id": "r1", "application": "a", "loglevel": 20, "params": {"x": 1},
            "state": "success", "created_at": "2026-01-01T00:00:00.123456Z",
            "expires_at": "2026-01-08T00:00:00Z", "steps": [], "version": 3
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        run.steps.push(sluice_core::model::StepRun::new("A"));
        run.steps.push(sluice_core::model::StepRun::new("B"));
        let outputs: Map<String, Value> = [("A".to_string(), serde_json::json!({"n": 1}))]
            .into_iter()
            .collect();
        let doc = serde_json::to_value(Task::of(&run, Some(&outputs))).unwrap();
        assert_eq!(doc["created_at"], "2026-01-01T00:00:00.123Z");
        assert_eq!(doc["steps"]["B"]["output"], Value::Null);
        let back: Task = serde_json::from_value(doc.clone()).unwrap();
        assert_eq!(serde_json::to_value(&back).unwrap(), doc);
        let keys: Vec<&String> = doc["steps"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["A", "B"]);
    }
}
