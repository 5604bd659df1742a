//! Where the AWS resources of one Sluice deployment are: table, bucket, queue and secret
//! names, all derived from one prefix (the stack name) and overridable one by one through
//! environment variables (the SAM template sets them on every function).

use std::sync::Arc;

use sluice_core::model::DEFAULT_RESULT_EXPIRES_SECONDS;

/// Names and settings of one deployment's resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsSettings {
    /// Prefix of every name (`SLUICE_AWS_PREFIX`, default `sluice`).
    pub prefix: String,
    /// Applications, configurations, schedules and their stats, tokens, role bindings.
    pub definitions_table: String,
    /// Runs, snapshots, outputs and logs (TTL attribute `ttl`).
    pub runs_table: String,
    /// The step cache (TTL attribute `ttl`).
    pub cache_table: String,
    /// Outputs and documents too large for an item or a message.
    pub bucket: String,
    /// Queue names are `<queue_prefix>-<step type>` (dead-letter queues `…-dlq`).
    pub queue_prefix: String,
    /// `https://sqs.<region>.amazonaws.com/<account>/`: queue URLs are built from it
    /// without a `GetQueueUrl` call per queue and container. Empty: ask SQS.
    pub queue_url_prefix: Option<String>,
    /// Secrets are named `<secret_prefix><configuration>`.
    pub secret_prefix: String,
    /// The EventBridge Scheduler group holding one schedule per Sluice schedule.
    pub schedule_group: String,
    /// The `start` function the schedules invoke, and the role they assume to do so.
    pub start_function_arn: Option<String>,
    pub scheduler_role_arn: Option<String>,
    /// Retention of runs, outputs and logs in seconds (`result_expires`).
    pub result_expires_seconds: i64,
}

impl AwsSettings {
    /// Settings for a prefix, with every name derived from it.
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
            definitions_table: format!("{prefix}-definitions"),
            runs_table: format!("{prefix}-runs"),
            cache_table: format!("{prefix}-cache"),
            bucket: format!("{prefix}-outputs"),
            queue_prefix: prefix.to_string(),
            queue_url_prefix: None,
            secret_prefix: format!("{prefix}/config/"),
            schedule_group: prefix.to_string(),
            start_function_arn: None,
            scheduler_role_arn: None,
            result_expires_seconds: DEFAULT_RESULT_EXPIRES_SECONDS,
        }
    }

    /// From the environment: `SLUICE_AWS_PREFIX` and the per-resource overrides
    /// `SLUICE_DEFINITIONS_TABLE`, `SLUICE_RUNS_TABLE`, `SLUICE_CACHE_TABLE`,
    /// `SLUICE_BUCKET`, `SLUICE_QUEUE_PREFIX`, `SLUICE_QUEUE_URL_PREFIX`,
    /// `SLUICE_SECRET_PREFIX`, `SLUICE_SCHEDULE_GROUP`, `SLUICE_START_FUNCTION_ARN`,
    /// `SLUICE_SCHEDULER_ROLE_ARN`, `SLUICE_RESULT_EXPIRES`.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let mut s = Self::with_prefix(&var("SLUICE_AWS_PREFIX").unwrap_or_else(|| "sluice".into()));
        let set = |target: &mut String, name: &str| {
            if let Some(v) = var(name) {
                *target = v;
            }
        };
        set(&mut s.definitions_table, "SLUICE_DEFINITIONS_TABLE");
        set(&mut s.runs_table, "SLUICE_RUNS_TABLE");
        set(&mut s.cache_table, "SLUICE_CACHE_TABLE");
        set(&mut s.bucket, "SLUICE_BUCKET");
        set(&mut s.queue_prefix, "SLUICE_QUEUE_PREFIX");
        set(&mut s.secret_prefix, "SLUICE_SECRET_PREFIX");
        set(&mut s.schedule_group, "SLUICE_SCHEDULE_GROUP");
        s.queue_url_prefix = var("SLUICE_QUEUE_URL_PREFIX");
        s.start_function_arn = var("SLUICE_START_FUNCTION_ARN");
        s.scheduler_role_arn = var("SLUICE_SCHEDULER_ROLE_ARN");
        if let Some(seconds) = var("SLUICE_RESULT_EXPIRES").and_then(|v| v.parse().ok()) {
            s.result_expires_seconds = seconds;
        }
        s
    }

    /// The queue of a step type: one queue per step type (SPEC §7).
    pub fn queue_for(&self, step_type: &str) -> String {
        queue_name(&self.queue_prefix, step_type)
    }

    /// [`Self::queue_for`] as the runtime's routing function.
    pub fn queue_router(&self) -> Arc<dyn Fn(&str) -> String + Send + Sync> {
        let prefix = self.queue_prefix.clone();
        Arc::new(move |step_type| queue_name(&prefix, step_type))
    }

    pub fn secret_name(&self, configuration: &str) -> String {
        format!("{}{configuration}", self.secret_prefix)
    }
}

/// `<prefix>-<step type>`. SQS names allow letters, digits, `-` and `_` (80 at most), so
/// the step type names of `functions/` are used as they are.
pub fn queue_name(prefix: &str, step_type: &str) -> String {
    format!("{prefix}-{step_type}")
}
