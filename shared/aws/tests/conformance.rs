//! The store ports' contract (`sluice_core::conformance`) on moto: DynamoDB, S3 and
//! Secrets Manager of a fresh deployment (its own prefix) per test. Needs
//! `AWS_ENDPOINT_URL` (`eval "$(scripts/start-moto.sh)"`); fails without it.

use std::sync::Arc;

use async_trait::async_trait;
use sluice_aws::{AwsEnvironment, AwsSettings};
use sluice_core::clock::ManualClock;
use sluice_core::conformance::{StoreFactory, Stores};

struct FreshDeployment;

#[async_trait]
impl StoreFactory for FreshDeployment {
    async fn fresh(&self) -> Stores {
        assert!(
            std::env::var("AWS_ENDPOINT_URL").is_ok(),
            "AWS_ENDPOINT_URL is not set: these tests need a moto server \
             (eval \"$(scripts/start-moto.sh)\")"
        );
        let prefix = format!("c{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
        let env = AwsEnvironment::load(AwsSettings::with_prefix(&prefix)).await;
        sluice_aws::provision::provision(&env.clients, &env.settings, &[])
            .await
            .expect("provision on moto");
        let clock = ManualClock::starting_now();
        let store = Arc::new(env.store.clone().with_clock(clock.clone()));
        Stores {
            definitions: store.clone(),
            runs: store.clone(),
            cache: store.clone(),
            secrets: env.secrets.clone(),
            schedules: store.clone(),
            stats: store,
            clock,
            keep: Box::new(()),
        }
    }
}

sluice_core::store_conformance!(FreshDeployment);
