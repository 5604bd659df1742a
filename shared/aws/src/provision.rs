//! The resources of a deployment, described once: [`TABLES`] (keys, indexes, TTL) and the
//! per-step-type queues. `sluice aws provision` creates them from here for `--backend
//! aws` (moto, or a scratch account); `template.yaml` declares the same resources for a
//! SAM deployment, and `tests/template.rs` checks the two agree.

use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;
use sluice_core::ports::{dead_letter_queue, MAX_RECEIVE_COUNT};

use crate::clients::Clients;
use crate::dynamo::{BY_APPLICATION, BY_MONTH, OPEN_RUNS, REPORTS};
use crate::settings::AwsSettings;

/// A DynamoDB table of a deployment.
#[derive(Debug, Clone, Copy)]
pub struct TableSpec {
    /// `definitions`, `access`, `runs` or `cache` (the table name is `<prefix>-<role>`).
    pub role: &'static str,
    pub hash_key: &'static str,
    pub range_key: Option<&'static str>,
    /// Global secondary indexes: name, hash key, range key, projected non-key attributes.
    pub indexes: &'static [IndexSpec],
    pub ttl_attribute: Option<&'static str>,
}

#[derive(Debug, Clone, Copy)]
pub struct IndexSpec {
    pub name: &'static str,
    pub hash_key: &'static str,
    pub range_key: &'static str,
    pub projected: &'static [&'static str],
}

/// Attributes the run listing filters on, projected into its indexes (all but `state`
/// never change, so run updates rarely write the indexes).
const RUN_LIST_ATTRIBUTES: &[&str] = &[
    "state",
    "configuration",
    "queue",
    "created_ms",
    "expires_ms",
];

pub const TABLES: &[TableSpec] = &[
    TableSpec {
        role: "definitions",
        hash_key: "kind",
        range_key: Some("name"),
        indexes: &[],
        ttl_attribute: None,
    },
    TableSpec {
        role: "access",
        hash_key: "kind",
        range_key: Some("name"),
        indexes: &[],
        ttl_attribute: None,
    },
    TableSpec {
        role: "runs",
        hash_key: "pk",
        range_key: Some("sk"),
        indexes: &[
            IndexSpec {
                name: BY_APPLICATION,
                hash_key: "application",
                range_key: "run_id",
                projected: RUN_LIST_ATTRIBUTES,
            },
            IndexSpec {
                name: BY_MONTH,
                hash_key: "month",
                range_key: "run_id",
                projected: RUN_LIST_ATTRIBUTES,
            },
            IndexSpec {
                name: OPEN_RUNS,
                hash_key: "open",
                range_key: "run_id",
                projected: &["expires_ms"],
            },
            // Only report headers carry these keys (`dynamo/reports.rs`).
            IndexSpec {
                name: REPORTS,
                hash_key: "report_key",
                range_key: "report_run",
                projected: &["report_app", "created_ms", "expires_ms"],
            },
        ],
        ttl_attribute: Some("ttl"),
    },
    TableSpec {
        role: "cache",
        hash_key: "key",
        range_key: None,
        indexes: &[],
        ttl_attribute: Some("ttl"),
    },
];

/// Visibility timeout of the step queues: six times the longest function timeout (900 s
/// on AWS), as AWS recommends for event source mappings, capped at SQS's 12 hours.
pub const QUEUE_VISIBILITY_SECONDS: u32 = 5400;
/// Retention of messages in queues and dead-letter queues: 14 days, the SQS maximum.
pub const QUEUE_RETENTION_SECONDS: u32 = 1_209_600;
/// Timeout of the `dead_letter` function, which consumes every dead-letter queue.
pub const DEAD_LETTER_FUNCTION_TIMEOUT_SECONDS: u32 = 60;
/// Visibility timeout of the dead-letter queues: six times the timeout of the function
/// consuming them (Lambda refuses a queue whose visibility is shorter than that timeout).
pub const DEAD_LETTER_VISIBILITY_SECONDS: u32 = 6 * DEAD_LETTER_FUNCTION_TIMEOUT_SECONDS;
/// Receives of a dead letter before it is parked: five attempts of the `dead_letter`
/// function on top of the step queue's receives, since a message may keep its receive
/// count when it moves to the dead-letter queue (moto does), which would otherwise park
/// it on its first receive there.
pub const DEAD_LETTER_MAX_RECEIVE_COUNT: u32 = MAX_RECEIVE_COUNT + 5;

/// The final queue of dead letters the `dead_letter` function could not record: nothing
/// consumes it, an alarm watches its depth.
pub fn parked_queue(settings: &AwsSettings) -> String {
    format!("{}-parked", settings.queue_prefix)
}

#[derive(Debug, thiserror::Error)]
#[error("provisioning {resource}: {message}")]
pub struct ProvisionError {
    pub resource: String,
    pub message: String,
}

fn fail(resource: &str, e: impl std::error::Error) -> ProvisionError {
    ProvisionError {
        resource: resource.to_string(),
        message: aws_sdk_dynamodb::error::DisplayErrorContext(&e).to_string(),
    }
}

/// What [`provision`] created (or found).
#[derive(Debug, Default, Clone)]
pub struct Provisioned {
    pub tables: Vec<String>,
    pub queues: Vec<String>,
    /// The final queue of unrecordable dead letters ([`parked_queue`]).
    pub parked_queue: String,
    pub bucket: String,
    pub schedule_group: String,
}

pub fn table_name(settings: &AwsSettings, role: &str) -> String {
    match role {
        "definitions" => settings.definitions_table.clone(),
        "access" => settings.access_table.clone(),
        "runs" => settings.runs_table.clone(),
        _ => settings.cache_table.clone(),
    }
}

/// Creates every table, the queues of `step_types` with their dead-letter queues, the
/// bucket and the schedule group. Idempotent: existing resources are left as they are.
pub async fn provision(
    clients: &Clients,
    settings: &AwsSettings,
    step_types: &[String],
) -> Result<Provisioned, ProvisionError> {
    let mut done = Provisioned::default();
    for spec in TABLES {
        let name = table_name(settings, spec.role);
        create_table(clients, &name, spec).await?;
        done.tables.push(name);
    }
    let parked = parked_queue(settings);
    let parked_arn = create_queue_with(
        clients,
        &parked,
        &[(
            QueueAttributeName::MessageRetentionPeriod,
            QUEUE_RETENTION_SECONDS.to_string(),
        )],
    )
    .await?;
    done.parked_queue = parked;
    for step_type in step_types {
        let queue = settings.queue_for(step_type);
        create_queue(clients, &queue, &parked_arn).await?;
        done.queues.push(queue);
    }
    let created = clients
        .s3
        .create_bucket()
        .bucket(&settings.bucket)
        .send()
        .await;
    if let Err(e) = created {
        let exists = e
            .as_service_error()
            .is_some_and(|se| se.is_bucket_already_owned_by_you() || se.is_bucket_already_exists());
        if !exists {
            return Err(fail(&settings.bucket, e));
        }
    }
    done.bucket = settings.bucket.clone();
    let group = clients
        .scheduler
        .create_schedule_group()
        .name(&settings.schedule_group)
        .send()
        .await;
    if let Err(e) = group {
        if !e
            .as_service_error()
            .is_some_and(|se| se.is_conflict_exception())
        {
            return Err(fail(&settings.schedule_group, e));
        }
    }
    done.schedule_group = settings.schedule_group.clone();
    Ok(done)
}

async fn create_table(
    clients: &Clients,
    name: &str,
    spec: &TableSpec,
) -> Result<(), ProvisionError> {
    let key = |attribute: &str, kind: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(attribute)
            .key_type(kind)
            .build()
            .expect("key schema is complete")
    };
    let mut attributes = vec![spec.hash_key];
    attributes.extend(spec.range_key);
    for index in spec.indexes {
        attributes.extend([index.hash_key, index.range_key]);
    }
    attributes.sort();
    attributes.dedup();
    let mut request = clients
        .dynamodb
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key(spec.hash_key, KeyType::Hash));
    if let Some(range) = spec.range_key {
        request = request.key_schema(key(range, KeyType::Range));
    }
    for attribute in attributes {
        request = request.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(attribute)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("attribute definition is complete"),
        );
    }
    for index in spec.indexes {
        request = request.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(index.name)
                .key_schema(key(index.hash_key, KeyType::Hash))
                .key_schema(key(index.range_key, KeyType::Range))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::Include)
                        .set_non_key_attributes(Some(
                            index.projected.iter().map(|a| a.to_string()).collect(),
                        ))
                        .build(),
                )
                .build()
                .expect("index is complete"),
        );
    }
    match request.send().await {
        Ok(_) => {}
        Err(e)
            if e.as_service_error()
                .is_some_and(|se| se.is_resource_in_use_exception()) =>
        {
            return Ok(())
        }
        Err(e) => return Err(fail(name, e)),
    }
    // Wait until ACTIVE (moto: at once; AWS: seconds).
    for _ in 0..120 {
        let status = clients
            .dynamodb
            .describe_table()
            .table_name(name)
            .send()
            .await
            .map_err(|e| fail(name, e))?
            .table
            .and_then(|t| t.table_status);
        if status == Some(aws_sdk_dynamodb::types::TableStatus::Active) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if let Some(attribute) = spec.ttl_attribute {
        clients
            .dynamodb
            .update_time_to_live()
            .table_name(name)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(attribute)
                    .enabled(true)
                    .build()
                    .expect("ttl specification is complete"),
            )
            .send()
            .await
            .map_err(|e| fail(name, e))?;
    }
    Ok(())
}

fn redrive_to(arn: &str, max_receive_count: u32) -> String {
    serde_json::json!({"deadLetterTargetArn": arn, "maxReceiveCount": max_receive_count})
        .to_string()
}

/// Creates (or finds) a queue with these attributes; returns its ARN.
async fn create_queue_with(
    clients: &Clients,
    queue: &str,
    attributes: &[(QueueAttributeName, String)],
) -> Result<String, ProvisionError> {
    let mut request = clients.sqs.create_queue().queue_name(queue);
    for (name, value) in attributes {
        request = request.attributes(name.clone(), value);
    }
    let url = request
        .send()
        .await
        .map_err(|e| fail(queue, e))?
        .queue_url
        .unwrap_or_default();
    Ok(clients
        .sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| fail(queue, e))?
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .unwrap_or_default())
}

/// A queue and its dead-letter queue, joined by a redrive policy; the dead-letter queue
/// redrives to the parked queue.
async fn create_queue(
    clients: &Clients,
    queue: &str,
    parked_arn: &str,
) -> Result<(), ProvisionError> {
    let retention = (
        QueueAttributeName::MessageRetentionPeriod,
        QUEUE_RETENTION_SECONDS.to_string(),
    );
    let dlq = dead_letter_queue(queue);
    let dlq_arn = create_queue_with(
        clients,
        &dlq,
        &[
            retention.clone(),
            (
                QueueAttributeName::VisibilityTimeout,
                DEAD_LETTER_VISIBILITY_SECONDS.to_string(),
            ),
            (
                QueueAttributeName::RedrivePolicy,
                redrive_to(parked_arn, DEAD_LETTER_MAX_RECEIVE_COUNT),
            ),
        ],
    )
    .await?;
    create_queue_with(
        clients,
        queue,
        &[
            retention,
            (
                QueueAttributeName::VisibilityTimeout,
                QUEUE_VISIBILITY_SECONDS.to_string(),
            ),
            (
                QueueAttributeName::RedrivePolicy,
                redrive_to(&dlq_arn, MAX_RECEIVE_COUNT),
            ),
        ],
    )
    .await?;
    Ok(())
}
