//! What `sluice aws provision` creates on moto (`scripts/test.sh` starts it and exports
//! `AWS_ENDPOINT_URL`), and where the store puts access data: the resources
//! `template.yaml` declares for a stack, so `--backend aws` behaves as a deployment.

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sqs::types::QueueAttributeName;
use chrono::Utc;
use sluice_aws::provision::{
    parked_queue, DEAD_LETTER_MAX_RECEIVE_COUNT, DEAD_LETTER_VISIBILITY_SECONDS,
};
use sluice_aws::{AwsEnvironment, AwsSettings};
use sluice_core::model::{ApiToken, OwnerType, Role, RoleBinding};
use sluice_core::ports::dead_letter_queue;

async fn env() -> AwsEnvironment {
    assert!(
        std::env::var("AWS_ENDPOINT_URL").is_ok(),
        "AWS_ENDPOINT_URL is not set: these tests need a moto server (scripts/test.sh starts one)"
    );
    let prefix = format!("p{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    let env = AwsEnvironment::load(AwsSettings::with_prefix(&prefix)).await;
    sluice_aws::provision::provision(&env.clients, &env.settings, &["echo".to_string()])
        .await
        .unwrap();
    env
}

async fn attributes(
    env: &AwsEnvironment,
    queue: &str,
) -> std::collections::HashMap<QueueAttributeName, String> {
    let url = env
        .clients
        .sqs
        .get_queue_url()
        .queue_name(queue)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    env.clients
        .sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()
}

/// A dead-letter queue stays hidden longer than the `dead_letter` function may run
/// (Lambda refuses the pairing otherwise) and redrives to the parked queue.
#[tokio::test]
async fn dead_letter_queues_outlast_their_consumer_and_redrive_to_the_parked_queue() {
    let env = env().await;
    let dlq = dead_letter_queue(&env.settings.queue_for("echo"));
    let found = attributes(&env, &dlq).await;
    assert_eq!(
        found[&QueueAttributeName::VisibilityTimeout],
        DEAD_LETTER_VISIBILITY_SECONDS.to_string()
    );
    let redrive: serde_json::Value =
        serde_json::from_str(&found[&QueueAttributeName::RedrivePolicy]).unwrap();
    let parked = attributes(&env, &parked_queue(&env.settings)).await;
    assert_eq!(
        redrive["deadLetterTargetArn"].as_str(),
        Some(parked[&QueueAttributeName::QueueArn].as_str())
    );
    assert_eq!(
        redrive["maxReceiveCount"].to_string(),
        DEAD_LETTER_MAX_RECEIVE_COUNT.to_string()
    );
}

/// Tokens and role bindings live in the access table, none of them in the definitions
/// table that step functions may read.
#[tokio::test]
async fn tokens_and_role_bindings_are_kept_in_the_access_table_only() {
    let env = env().await;
    let store = env.access();
    let token = ApiToken {
        name: "ci".into(),
        role: Role::Execute,
        hash: "ab".repeat(32),
        created_at: Utc::now(),
    };
    assert!(store.create_token(&token).await.unwrap());
    assert!(
        !store.create_token(&token).await.unwrap(),
        "names are unique"
    );
    store
        .put_binding(&RoleBinding {
            owner: "ops".into(),
            owner_type: OwnerType::Group,
            role: Role::View,
        })
        .await
        .unwrap();
    assert_eq!(
        store
            .token_by_hash(&token.hash)
            .await
            .unwrap()
            .unwrap()
            .name,
        "ci"
    );
    assert_eq!(store.list_bindings().await.unwrap().len(), 1);

    let items = |table: String| {
        let db = env.clients.dynamodb.clone();
        async move {
            let mut kinds: Vec<String> = db
                .scan()
                .table_name(table)
                .send()
                .await
                .unwrap()
                .items
                .unwrap_or_default()
                .iter()
                .map(|i| match &i["kind"] {
                    AttributeValue::S(kind) => kind.clone(),
                    other => panic!("kind {other:?}"),
                })
                .collect();
            kinds.sort();
            kinds
        }
    };
    assert_eq!(
        items(env.settings.access_table.clone()).await,
        ["role_binding", "token", "token_hash"]
    );
    assert!(items(env.settings.definitions_table.clone())
        .await
        .is_empty());

    assert!(store.delete_token("ci").await.unwrap());
    assert_eq!(
        items(env.settings.access_table.clone()).await,
        ["role_binding"]
    );
}

/// A schedule's target retries failed invocations of `start`, then hands the tick to the
/// stack's schedule dead-letter queue.
#[tokio::test]
async fn schedules_retry_and_then_dead_letter_their_ticks() {
    use sluice_core::ports::Scheduler;
    let env = env().await;
    let schedule: sluice_core::model::Schedule = serde_json::from_value(serde_json::json!({
        "application_id": "a", "entry_id": "hourly",
        "schedule": {"schedule_type": "crontab", "schedule_info": {"minute": "5"}}}))
    .unwrap();
    let dead_letters = "arn:aws:sqs:us-east-1:123456789012:x-schedules-dlq";
    let scheduler = sluice_aws::EventBridgeScheduler::new(
        env.clients.scheduler.clone(),
        env.settings.schedule_group.clone(),
        "arn:aws:lambda:us-east-1:123456789012:function:x-start",
        "arn:aws:iam::123456789012:role/x-scheduler",
    )
    .with_dead_letter(Some(dead_letters.to_string()));
    scheduler.upsert(&schedule).await.unwrap();
    let got = env
        .clients
        .scheduler
        .get_schedule()
        .name(sluice_aws::scheduler::schedule_name("hourly"))
        .group_name(&env.settings.schedule_group)
        .send()
        .await
        .unwrap();
    let target = got.target().unwrap();
    assert_eq!(
        target.dead_letter_config().and_then(|d| d.arn()),
        Some(dead_letters)
    );
    let retry = target.retry_policy().unwrap();
    assert!(retry.maximum_retry_attempts().unwrap_or_default() > 0);
    scheduler.remove("hourly").await.unwrap();
}
