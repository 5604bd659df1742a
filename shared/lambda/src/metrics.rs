//! Per step type metrics in CloudWatch's embedded metric format: one JSON line per step
//! type and batch on stdout, which CloudWatch Logs turns into metrics of namespace
//! [`NAMESPACE`] with the dimension [`DIMENSION`] (the template's dashboard reads them):
//! `started`, `succeeded`, `failed`, `retried`, `dead_lettered` (counts) and
//! `duration_ms` (one value per attempt).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use sluice_runtime::{AttemptOutcome, AttemptReport};

pub const NAMESPACE: &str = "Sluice";
pub const DIMENSION: &str = "StepType";
/// The count metrics, in the order they are declared.
pub const COUNTS: [&str; 5] = ["started", "succeeded", "failed", "retried", "dead_lettered"];
pub const DURATION: &str = "duration_ms";

/// What the records of one batch did, by step type.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct BatchMetrics {
    by_type: BTreeMap<String, StepTypeMetrics>,
}

/// The attempts of one step type in a batch.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct StepTypeMetrics {
    pub started: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub retried: u64,
    pub dead_lettered: u64,
    /// Milliseconds of each attempt executed.
    pub durations_ms: Vec<f64>,
}

impl BatchMetrics {
    /// Counts one handled attempt.
    pub fn add(&mut self, report: &AttemptReport) {
        let m = self.by_type.entry(report.step_type.clone()).or_default();
        if report.outcome == AttemptOutcome::DeadLettered {
            m.dead_lettered += 1;
            return;
        }
        m.started += 1;
        match report.outcome {
            AttemptOutcome::Succeeded => m.succeeded += 1,
            AttemptOutcome::Failed => m.failed += 1,
            AttemptOutcome::Retried => m.retried += 1,
            AttemptOutcome::Waiting | AttemptOutcome::DeadLettered => {}
        }
        // Whole microseconds: enough, and short lines.
        m.durations_ms
            .push((report.duration.as_secs_f64() * 1e6).round() / 1e3);
    }

    /// One embedded-metric-format line per step type, stamped `timestamp_ms`.
    pub fn lines(&self, timestamp_ms: i64) -> Vec<String> {
        self.by_type
            .iter()
            .map(|(step_type, m)| emf_line(step_type, m, timestamp_ms))
            .collect()
    }

    /// Prints [`Self::lines`] to stdout (where Lambda sends them to CloudWatch Logs).
    pub fn print(&self) {
        for line in self.lines(chrono::Utc::now().timestamp_millis()) {
            println!("{line}");
        }
    }
}

/// The embedded-metric-format document of one step type's attempts.
pub fn emf_line(step_type: &str, m: &StepTypeMetrics, timestamp_ms: i64) -> String {
    let mut declared: Vec<Value> = COUNTS
        .iter()
        .map(|name| json!({"Name": name, "Unit": "Count"}))
        .collect();
    let mut doc = Map::new();
    doc.insert(DIMENSION.into(), json!(step_type));
    for (name, value) in
        COUNTS
            .iter()
            .zip([m.started, m.succeeded, m.failed, m.retried, m.dead_lettered])
    {
        doc.insert((*name).into(), json!(value));
    }
    if !m.durations_ms.is_empty() {
        declared.push(json!({"Name": DURATION, "Unit": "Milliseconds"}));
        doc.insert(DURATION.into(), json!(m.durations_ms));
    }
    doc.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [[DIMENSION]],
                "Metrics": declared,
            }],
        }),
    );
    Value::Object(doc).to_string()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn report(step_type: &str, outcome: AttemptOutcome, ms: u64) -> AttemptReport {
        AttemptReport {
            step_type: step_type.into(),
            outcome,
            duration: Duration::from_millis(ms),
        }
    }

    #[test]
    fn a_batch_prints_one_embedded_metric_format_line_per_step_type() {
        let mut batch = BatchMetrics::default();
        batch.add(&report("http_request", AttemptOutcome::Succeeded, 12));
        batch.add(&report("http_request", AttemptOutcome::Retried, 30));
        batch.add(&report("http_request", AttemptOutcome::Failed, 5));
        batch.add(&report("sql", AttemptOutcome::DeadLettered, 0));
        let lines = batch.lines(1_767_225_600_000);
        assert_eq!(lines.len(), 2);
        let http: Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(
            http,
            json!({
                "StepType": "http_request",
                "started": 3, "succeeded": 1, "failed": 1, "retried": 1, "dead_lettered": 0,
                "duration_ms": [12.0, 30.0, 5.0],
                "_aws": {
                    "Timestamp": 1_767_225_600_000_i64,
                    "CloudWatchMetrics": [{
                        "Namespace": "Sluice",
                        "Dimensions": [["StepType"]],
                        "Metrics": [
                            {"Name": "started", "Unit": "Count"},
                            {"Name": "succeeded", "Unit": "Count"},
                            {"Name": "failed", "Unit": "Count"},
                            {"Name": "retried", "Unit": "Count"},
                            {"Name": "dead_lettered", "Unit": "Count"},
                            {"Name": "duration_ms", "Unit": "Milliseconds"}
                        ]
                    }]
                }
            })
        );
        // A dead letter ran nothing: no duration is declared or given.
        let sql: Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(sql["dead_lettered"], 1);
        assert_eq!(sql["started"], 0);
        assert!(sql.get("duration_ms").is_none());
        let declared = sql["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap();
        assert!(declared.iter().all(|m| m["Name"] != "duration_ms"));
        // Every declared metric has its value at the top level, as EMF requires.
        for line in &lines {
            let doc: Value = serde_json::from_str(line).unwrap();
            assert!(!line.contains('\n'));
            for m in doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]
                .as_array()
                .unwrap()
            {
                assert!(doc.get(m["Name"].as_str().unwrap()).is_some(), "{line}");
            }
        }
    }
}
