//! The store and queue ports' contract (`sluice_core::conformance`) on moto: DynamoDB,
//! S3, Secrets Manager and SQS of a fresh deployment (its own prefix) per test, and what
//! only SQS can show of the timing (in real time: moto takes no clock). Needs
//! `AWS_ENDPOINT_URL` (`eval "$(scripts/start-moto.sh)"`); fails without it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sluice_aws::{AwsEnvironment, AwsSettings};
use sluice_core::clock::ManualClock;
use sluice_core::conformance::{QueueFactory, Queues, StoreFactory, Stores};
use sluice_core::ports::{Queue, TaskMessage};

struct FreshDeployment;

/// A fresh deployment on moto with the queues of `step_types`.
async fn deployment(step_types: &[&str]) -> AwsEnvironment {
    assert!(
        std::env::var("AWS_ENDPOINT_URL").is_ok(),
        "AWS_ENDPOINT_URL is not set: these tests need a moto server \
         (eval \"$(scripts/start-moto.sh)\")"
    );
    let prefix = format!("c{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    let env = AwsEnvironment::load(AwsSettings::with_prefix(&prefix)).await;
    let step_types: Vec<String> = step_types.iter().map(|s| s.to_string()).collect();
    sluice_aws::provision::provision(&env.clients, &env.settings, &step_types)
        .await
        .expect("provision on moto");
    env
}

#[async_trait]
impl StoreFactory for FreshDeployment {
    async fn fresh(&self) -> Stores {
        let env = deployment(&[]).await;
        let clock = ManualClock::starting_now();
        let store = Arc::new(env.store.clone().with_clock(clock.clone()));
        Stores {
            definitions: store.clone(),
            runs: store.clone(),
            cache: store.clone(),
            secrets: env.secrets.clone(),
            schedules: store.clone(),
            packs: store.clone(),
            reports: store.clone(),
            stats: store,
            clock,
            keep: Box::new(()),
        }
    }
}

/// The SQS queues of two step types, with the redrive policy `provision` sets.
#[async_trait]
impl QueueFactory for FreshDeployment {
    async fn fresh(&self) -> Queues {
        let env = deployment(&["echo", "other"]).await;
        Queues {
            queue: env.queue.clone(),
            name: env.settings.queue_for("echo"),
            other: env.settings.queue_for("other"),
            keep: Box::new(()),
        }
    }
}

sluice_core::store_conformance!(FreshDeployment);
sluice_core::queue_conformance!(FreshDeployment);

/// SQS counts delays and visibility timeouts in whole seconds, rounding a delay up so a
/// message never shows early, and `ChangeMessageVisibility` outlasts the receive's
/// timeout. In real time on moto: each receive waits at most a second, and only the
/// "still hidden" checks depend on elapsed time, each with a second or more to spare.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_delays_round_up_to_seconds_and_extensions_outlast_the_receive() {
    let env = deployment(&["echo"]).await;
    let (q, name) = (env.queue.clone(), env.settings.queue_for("echo"));
    let task = TaskMessage {
        run_id: "isapp-1".into(),
        step_id: "A".into(),
        unit: 0,
        attempt: 1,
        lane: Some("app".into()),
    };
    let second = Duration::from_secs(1);
    let receive = |visibility: Duration, wait: Duration| {
        let (q, name) = (q.clone(), name.clone());
        async move { q.receive(&name, 10, visibility, wait).await.unwrap() }
    };
    let eventually = |visibility: Duration| async move {
        for _ in 0..8 {
            let got = receive(visibility, second).await;
            if !got.is_empty() {
                return got;
            }
        }
        panic!("the message never became visible");
    };

    // 1.5 s is sent as 2 s: hidden right after the send, there after a few waits.
    q.send(&name, &task, Duration::from_millis(1500))
        .await
        .unwrap();
    assert!(receive(second, Duration::ZERO).await.is_empty());
    let got = eventually(second).await;
    assert_eq!((got.len(), got[0].receive_count), (1, 1));

    // Received for a second, extended to a minute: still hidden seconds later.
    q.extend_visibility(&name, &got[0].receipt, Duration::from_secs(60))
        .await
        .unwrap();
    for _ in 0..3 {
        assert!(receive(second, second).await.is_empty());
    }
    // Released with a one-second delay: back, with its receipt honoured.
    q.release(&name, &got[0].receipt, second).await.unwrap();
    let again = eventually(Duration::from_secs(60)).await;
    assert_eq!(again[0].receive_count, 2);
    q.ack(&name, &again[0].receipt).await.unwrap();
}

/// The dashboard's queue depth: SQS's approximate counts of visible, delayed and in-flight
/// messages together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_depth_counts_visible_delayed_and_in_flight_messages() {
    let env = deployment(&["echo"]).await;
    let (q, name) = (env.queue.clone(), env.settings.queue_for("echo"));
    let depth = || async { q.approximate_depth(&name).await.unwrap() };
    assert_eq!(depth().await, Some(0));
    let task = |step: &str| TaskMessage {
        run_id: "isapp-1".into(),
        step_id: step.into(),
        unit: 0,
        attempt: 1,
        lane: None,
    };
    q.send(&name, &task("Now"), Duration::ZERO).await.unwrap();
    q.send(&name, &task("Later"), Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(depth().await, Some(2));
    let got = q
        .receive(&name, 10, Duration::from_secs(60), Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(depth().await, Some(2), "in flight still counts");
    q.ack(&name, &got[0].receipt).await.unwrap();
    assert_eq!(depth().await, Some(1));
}
