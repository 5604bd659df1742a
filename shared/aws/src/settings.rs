//! Where the AWS resources of one Sluice deployment are: table, bucket, queue and secret
//! names, all derived from one prefix (the stack name) and overridable one by one through
//! environment variables (the SAM template sets them on every function).

use std::collections::HashMap;
use std::sync::Arc;

use sluice_core::model::DEFAULT_RESULT_EXPIRES_SECONDS;

/// Names and settings of one deployment's resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsSettings {
    /// Prefix of every name (`SLUICE_AWS_PREFIX`, default `sluice`).
    pub prefix: String,
    /// Applications, configurations, schedules and their stats.
    pub definitions_table: String,
    /// API tokens and role bindings: a table of their own, which no step function's
    /// role can read or write.
    pub access_table: String,
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
    /// The queue receiving schedule ticks whose `start` invocations failed every retry.
    pub schedule_dead_letter_arn: Option<String>,
    /// Retention of runs, outputs and logs in seconds (`result_expires`).
    pub result_expires_seconds: i64,
}

impl AwsSettings {
    /// Settings for a prefix, with every name derived from it.
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
            definitions_table: format!("{prefix}-definitions"),
            access_table: format!("{prefix}-access"),
            runs_table: format!("{prefix}-runs"),
            cache_table: format!("{prefix}-cache"),
            bucket: format!("{prefix}-outputs"),
            queue_prefix: prefix.to_string(),
            queue_url_prefix: None,
            secret_prefix: format!("{prefix}/config/"),
            schedule_group: prefix.to_string(),
            start_function_arn: None,
            scheduler_role_arn: None,
            schedule_dead_letter_arn: None,
            result_expires_seconds: DEFAULT_RESULT_EXPIRES_SECONDS,
        }
    }

    /// From the environment: `SLUICE_AWS_PREFIX` and the per-resource overrides
    /// `SLUICE_DEFINITIONS_TABLE`, `SLUICE_ACCESS_TABLE`, `SLUICE_RUNS_TABLE`, `SLUICE_CACHE_TABLE`,
    /// `SLUICE_BUCKET`, `SLUICE_QUEUE_PREFIX`, `SLUICE_QUEUE_URL_PREFIX`,
    /// `SLUICE_SECRET_PREFIX`, `SLUICE_SCHEDULE_GROUP`, `SLUICE_START_FUNCTION_ARN`,
    /// `SLUICE_SCHEDULER_ROLE_ARN`, `SLUICE_SCHEDULE_DEAD_LETTER_ARN`, `SLUICE_RESULT_EXPIRES`.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let mut s = Self::with_prefix(&var("SLUICE_AWS_PREFIX").unwrap_or_else(|| "sluice".into()));
        let set = |target: &mut String, name: &str| {
            if let Some(v) = var(name) {
                *target = v;
            }
        };
        set(&mut s.definitions_table, "SLUICE_DEFINITIONS_TABLE");
        set(&mut s.access_table, "SLUICE_ACCESS_TABLE");
        set(&mut s.runs_table, "SLUICE_RUNS_TABLE");
        set(&mut s.cache_table, "SLUICE_CACHE_TABLE");
        set(&mut s.bucket, "SLUICE_BUCKET");
        set(&mut s.queue_prefix, "SLUICE_QUEUE_PREFIX");
        set(&mut s.secret_prefix, "SLUICE_SECRET_PREFIX");
        set(&mut s.schedule_group, "SLUICE_SCHEDULE_GROUP");
        s.queue_url_prefix = var("SLUICE_QUEUE_URL_PREFIX");
        s.start_function_arn = var("SLUICE_START_FUNCTION_ARN");
        s.scheduler_role_arn = var("SLUICE_SCHEDULER_ROLE_ARN");
        s.schedule_dead_letter_arn = var("SLUICE_SCHEDULE_DEAD_LETTER_ARN");
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

/// A stack output the settings cannot use.
#[derive(Debug, thiserror::Error)]
pub enum StackOutputsError {
    #[error("stack outputs: {0}")]
    Json(#[from] serde_json::Error),
    #[error(
        "stack outputs: expected the JSON of `aws cloudformation describe-stacks` (one stack) \
         or of `sam list stack-outputs --output json`"
    )]
    Shape,
    #[error("stack outputs: output {key} is missing")]
    Missing { key: &'static str },
    #[error("stack outputs: output {key} is not a number: {value:?}")]
    NotANumber { key: &'static str, value: String },
}

/// The stack outputs (`template.yaml` `Outputs`) naming what the settings hold.
pub mod outputs {
    pub const PREFIX: &str = "Prefix";
    pub const DEFINITIONS_TABLE: &str = "DefinitionsTableName";
    pub const ACCESS_TABLE: &str = "AccessTableName";
    pub const RUNS_TABLE: &str = "RunsTableName";
    pub const CACHE_TABLE: &str = "CacheTableName";
    pub const BUCKET: &str = "OutputsBucketName";
    pub const QUEUE_PREFIX: &str = "QueuePrefix";
    pub const QUEUE_URL_PREFIX: &str = "QueueUrlPrefix";
    pub const SECRET_PREFIX: &str = "SecretPrefix";
    pub const SCHEDULE_GROUP: &str = "ScheduleGroupName";
    pub const START_FUNCTION: &str = "StartFunctionArn";
    pub const SCHEDULER_ROLE: &str = "SchedulerRoleArn";
    pub const SCHEDULE_DEAD_LETTER: &str = "ScheduleDeadLetterQueueArn";
    pub const RESULT_EXPIRES: &str = "ResultExpiresSeconds";
    /// The API's base URL, without `/api/v1` (clients add it): `sluice --endpoint`.
    pub const API_ENDPOINT: &str = "ApiEndpoint";

    /// Every output [`super::AwsSettings::from_stack_outputs`] requires.
    pub const REQUIRED: &[&str] = &[
        PREFIX,
        DEFINITIONS_TABLE,
        ACCESS_TABLE,
        RUNS_TABLE,
        CACHE_TABLE,
        BUCKET,
        QUEUE_PREFIX,
        QUEUE_URL_PREFIX,
        SECRET_PREFIX,
        SCHEDULE_GROUP,
        START_FUNCTION,
        SCHEDULER_ROLE,
        SCHEDULE_DEAD_LETTER,
        RESULT_EXPIRES,
    ];
}

/// The outputs of a stack as key → value, from the JSON of `aws cloudformation
/// describe-stacks --stack-name NAME` or `sam list stack-outputs --output json`.
pub fn parse_stack_outputs(text: &str) -> Result<HashMap<String, String>, StackOutputsError> {
    let value: serde_json::Value = serde_json::from_str(text)?;
    let list = match &value {
        serde_json::Value::Array(list) => list,
        serde_json::Value::Object(o) => match o.get("Stacks").and_then(|s| s.as_array()) {
            Some(stacks) if stacks.len() == 1 => stacks[0]
                .get("Outputs")
                .and_then(|o| o.as_array())
                .ok_or(StackOutputsError::Shape)?,
            _ => return Err(StackOutputsError::Shape),
        },
        _ => return Err(StackOutputsError::Shape),
    };
    list.iter()
        .map(|entry| {
            let key = entry.get("OutputKey").and_then(|k| k.as_str());
            let value = entry.get("OutputValue").and_then(|v| v.as_str());
            match (key, value) {
                (Some(k), Some(v)) => Ok((k.to_string(), v.to_string())),
                _ => Err(StackOutputsError::Shape),
            }
        })
        .collect()
}

impl AwsSettings {
    /// Every name from a deployed stack's outputs (see [`outputs`]): what `sluice
    /// --backend aws --stack-outputs FILE` uses, so nothing is guessed from a prefix.
    pub fn from_stack_outputs(text: &str) -> Result<Self, StackOutputsError> {
        let found = parse_stack_outputs(text)?;
        let get = |key: &'static str| {
            found
                .get(key)
                .cloned()
                .ok_or(StackOutputsError::Missing { key })
        };
        let expires = get(outputs::RESULT_EXPIRES)?;
        let mut s = Self::with_prefix(&get(outputs::PREFIX)?);
        s.definitions_table = get(outputs::DEFINITIONS_TABLE)?;
        s.access_table = get(outputs::ACCESS_TABLE)?;
        s.runs_table = get(outputs::RUNS_TABLE)?;
        s.cache_table = get(outputs::CACHE_TABLE)?;
        s.bucket = get(outputs::BUCKET)?;
        s.queue_prefix = get(outputs::QUEUE_PREFIX)?;
        s.queue_url_prefix = Some(get(outputs::QUEUE_URL_PREFIX)?);
        s.secret_prefix = get(outputs::SECRET_PREFIX)?;
        s.schedule_group = get(outputs::SCHEDULE_GROUP)?;
        s.start_function_arn = Some(get(outputs::START_FUNCTION)?);
        s.scheduler_role_arn = Some(get(outputs::SCHEDULER_ROLE)?);
        s.schedule_dead_letter_arn = Some(get(outputs::SCHEDULE_DEAD_LETTER)?);
        s.result_expires_seconds = expires.parse().map_err(|_| StackOutputsError::NotANumber {
            key: outputs::RESULT_EXPIRES,
            value: expires.clone(),
        })?;
        Ok(s)
    }
}

/// `<prefix>-<step type>`. SQS names allow letters, digits, `-` and `_` (80 at most), so
/// the step type names of `functions/` are used as they are.
pub fn queue_name(prefix: &str, step_type: &str) -> String {
    format!("{prefix}-{step_type}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn describe_stacks(outputs: &[(&str, &str)]) -> String {
        let list: Vec<_> = outputs
            .iter()
            .map(|(k, v)| serde_json::json!({"OutputKey": k, "OutputValue": v}))
            .collect();
        serde_json::json!({"Stacks": [{"StackName": "prod", "Outputs": list}]}).to_string()
    }

    fn complete() -> Vec<(&'static str, &'static str)> {
        vec![
            (outputs::PREFIX, "prod"),
            (outputs::DEFINITIONS_TABLE, "prod-definitions"),
            (outputs::ACCESS_TABLE, "prod-access"),
            (outputs::RUNS_TABLE, "prod-runs"),
            (outputs::CACHE_TABLE, "prod-cache"),
            (outputs::BUCKET, "prod-outputsbucket-1x2y3z"),
            (outputs::QUEUE_PREFIX, "prod"),
            (
                outputs::QUEUE_URL_PREFIX,
                "https://sqs.eu-west-1.amazonaws.com/123456789012/",
            ),
            (outputs::SECRET_PREFIX, "prod/config/"),
            (outputs::SCHEDULE_GROUP, "prod"),
            (
                outputs::START_FUNCTION,
                "arn:aws:lambda:eu-west-1:123456789012:function:prod-start",
            ),
            (
                outputs::SCHEDULER_ROLE,
                "arn:aws:iam::123456789012:role/prod-SchedulerRole-X",
            ),
            (
                outputs::SCHEDULE_DEAD_LETTER,
                "arn:aws:sqs:eu-west-1:123456789012:prod-schedules-dlq",
            ),
            (outputs::RESULT_EXPIRES, "86400"),
            (
                outputs::API_ENDPOINT,
                "https://abc.execute-api.eu-west-1.amazonaws.com",
            ),
        ]
    }

    #[test]
    fn stack_outputs_name_every_resource_and_nothing_is_derived_from_the_prefix() {
        let s = AwsSettings::from_stack_outputs(&describe_stacks(&complete())).unwrap();
        assert_eq!(s.bucket, "prod-outputsbucket-1x2y3z");
        assert_eq!(s.access_table, "prod-access");
        assert_eq!(s.queue_for("echo"), "prod-echo");
        assert_eq!(s.result_expires_seconds, 86400);
        assert_eq!(
            s.schedule_dead_letter_arn.as_deref(),
            Some("arn:aws:sqs:eu-west-1:123456789012:prod-schedules-dlq")
        );
        // `sam list stack-outputs --output json` is a bare list of the same entries.
        let list = serde_json::json!(complete()
            .iter()
            .map(|(k, v)| serde_json::json!({"OutputKey": k, "OutputValue": v, "Description": ""}))
            .collect::<Vec<_>>())
        .to_string();
        assert_eq!(AwsSettings::from_stack_outputs(&list).unwrap(), s);
    }

    #[test]
    fn a_missing_or_malformed_output_is_named() {
        let mut entries = complete();
        entries.retain(|(k, _)| *k != outputs::BUCKET);
        let e = AwsSettings::from_stack_outputs(&describe_stacks(&entries)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "stack outputs: output OutputsBucketName is missing"
        );
        let mut entries = complete();
        entries.retain(|(k, _)| *k != outputs::RESULT_EXPIRES);
        entries.push((outputs::RESULT_EXPIRES, "a week"));
        let e = AwsSettings::from_stack_outputs(&describe_stacks(&entries)).unwrap_err();
        assert!(
            e.to_string()
                .contains("ResultExpiresSeconds is not a number"),
            "{e}"
        );
        let e = AwsSettings::from_stack_outputs(r#"{"Stacks": []}"#).unwrap_err();
        assert!(matches!(e, StackOutputsError::Shape), "{e}");
    }
}
