//! Run reports through a real runtime (embedded store): sections from the step context
//! and from the `report` operator, stored once per unit however often a message is
//! delivered or an attempt retried, redacted and bounded.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};
use sluice_core::model::{Application, Configuration, Run, RunState, StepState};
use sluice_core::report::{Report, ReportSection, ReportTable, RowStatus, MAX_SECTIONS_PER_UNIT};
use sluice_core::step::{StepContext, StepError, StepOutput, StepType};
use sluice_embedded::EmbeddedStore;
use sluice_runtime::{Runtime, RuntimeConfig, StartRequest};

const SECRET: &str = "s3cr3t-T0ken-value";

/// Reports one section per execution (titled with its unit and attempt) holding its
/// `value` parameter; fails retryably after reporting on the first attempt of unit 1;
/// reports `sections` sections when that parameter is given.
#[derive(Clone, Default)]
struct Reporter {
    executions: Arc<AtomicU32>,
}

#[async_trait]
impl StepType for Reporter {
    fn name(&self) -> &str {
        "reporter"
    }
    fn description(&self) -> &str {
        "reports what it is given"
    }
    fn parameter_schema(&self) -> Value {
        json!({"type": "object"})
    }
    async fn execute(&self, params: Value, ctx: &StepContext) -> Result<StepOutput, StepError> {
        self.executions.fetch_add(1, Ordering::SeqCst);
        let count = params["sections"].as_u64().unwrap_or(1);
        for _ in 0..count {
            ctx.report(
                ReportSection::new(format!("unit {} attempt {}", ctx.unit, ctx.attempt))
                    .detail("value", params["value"].clone())
                    .table(
                        ReportTable::new(["value"])
                            .row(RowStatus::Updated, [params["value"].clone()]),
                    ),
            );
        }
        if ctx.unit == 1 && ctx.attempt == 1 {
            return Err(StepError::Retryable("try again".into()));
        }
        Ok(StepOutput::value(json!({"unit": ctx.unit})))
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    runtime: Arc<Runtime>,
    reporter: Reporter,
}

async fn harness(steps: Value) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let reporter = Reporter::default();
    let mut registry = sluice_steps::builtin_registry();
    registry.register(reporter.clone());
    let runtime = Runtime::new(store.backend(), registry, RuntimeConfig::default());
    let config: Configuration = serde_json::from_value(json!({
        "name": "conf",
        "data": [{"name": "tok", "value": SECRET, "encrypted": true}]
    }))
    .unwrap();
    runtime.put_configuration(&config).await.unwrap();
    let app: Application = serde_json::from_value(json!({
        "name": "sync", "author": "tests", "configuration": "conf", "steps": steps
    }))
    .unwrap();
    runtime.put_application(&app).await.unwrap();
    Harness {
        _dir: dir,
        runtime,
        reporter,
    }
}

impl Harness {
    /// Runs the application to its end, handling every delivered message twice (a
    /// duplicate delivery of each).
    async fn run_delivering_twice(&self) -> Run {
        let run = self
            .runtime
            .start(StartRequest {
                application: "sync".into(),
                ..StartRequest::default()
            })
            .await
            .unwrap();
        self.runtime.deliver_queued(2).await.unwrap();
        let ended = self.runtime.get_run(&run.id).await.unwrap();
        assert!(
            ended.state.is_terminal(),
            "the run did not end: {:?}",
            ended.state
        );
        ended
    }

    async fn report(&self, run: &Run) -> Report {
        let (owner, parts) = self
            .runtime
            .backend()
            .reports
            .get_report(&run.id)
            .await
            .unwrap()
            .expect("the run has a report");
        Report::assemble(&owner, parts)
    }
}

fn titles(report: &Report) -> Vec<(String, String)> {
    report
        .sections
        .iter()
        .map(|s| (s.step.clone(), s.section.title.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_deliveries_and_retries_store_each_units_sections_once_redacted() {
    let h = harness(json!([
        {"id": "Each", "type": "reporter",
         "for_each": {"items": [1, 2, 3]},
         "retry": {"max_attempts": 2, "backoff_seconds": 0},
         "parameters": {"value": "item ${item} with ${config.tok}"}},
        {"id": "Summary", "type": "report", "depends_on": ["Each"],
         "parameters": {
            "title": "Summary",
            "details": {"token": "${config.tok}", "units": "${Each}"},
            "tables": [{"columns": ["unit"], "rows": [{"status": "New", "items": "${Each}"}]}]
         }}
    ]))
    .await;
    let run = h.run_delivering_twice().await;
    assert_eq!(run.state, RunState::Success, "{run:?}");
    // Unit 1 ran twice (a retry), the others once: duplicates executed nothing.
    assert_eq!(h.reporter.executions.load(Ordering::SeqCst), 4);

    let report = h.report(&run).await;
    assert_eq!(
        titles(&report),
        [
            ("Each".into(), "unit 0 attempt 1".into()),
            ("Each".into(), "unit 1 attempt 2".into()),
            ("Each".into(), "unit 2 attempt 1".into()),
            ("Summary".into(), "Summary".into()),
        ],
        "one section per unit, the failed attempt's dropped"
    );
    assert_eq!(report.counts["Updated"], 3);
    assert_eq!(report.counts["New"], 3);
    assert_eq!(report.summary.id, format!("report-sync-{}", run.id));
    let text = serde_json::to_string(&report).unwrap();
    assert!(!text.contains(SECRET), "{text}");
    assert_eq!(
        report.sections[0].section.details["value"],
        json!("item 1 with ***")
    );
    assert_eq!(report.sections[3].section.details["token"], json!("***"));

    // The operator's output names the report and counts its rows.
    let output = h.runtime.read_output(&run, "Summary").await.unwrap();
    assert_eq!(
        output,
        json!({"report": report.summary.id, "rows": {"New": 3}})
    );
    // The report expires with its run.
    assert_eq!(report.summary.expires_at, run.expires_at);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_sections_are_cut_with_a_warning_and_bad_operator_params_fail_the_step() {
    let h = harness(json!([
        {"id": "Many", "type": "reporter", "parameters": {"value": "v", "sections": 30}},
        {"id": "Bad", "type": "report", "depends_on": ["Many"],
         "parameters": {"title": "Bad", "tables": [{"columns": ["a"],
            "rows": [{"status_field": "s", "items": [{"a": 1, "s": "gone"}]}]}]}}
    ]))
    .await;
    let run = h.run_delivering_twice().await;
    assert_eq!(run.state, RunState::Failure);
    let many = run.step("Many").unwrap();
    assert_eq!(many.state, StepState::Warning, "{many:?}");
    let bad = run.step("Bad").unwrap();
    let error = bad.error.clone().unwrap_or_default();
    assert!(
        error.contains("tables[0].rows[0].items[0].s"),
        "the error names the field: {error}"
    );
    let report = h.report(&run).await;
    assert_eq!(report.sections.len(), MAX_SECTIONS_PER_UNIT);
}
