//! [`AwsEnvironment`]: every AWS adapter of one deployment wired into the runtime's
//! ports — what a Lambda function builds once per container, and what `sluice
//! --backend aws` builds once per command.

use std::sync::Arc;
use std::time::Duration;

use sluice_core::ports::{
    AccessStore, Cache, DefinitionStore, PackStore, RunStore, ScheduleStatsStore, ScheduleStore,
    Scheduler,
};
use sluice_core::step::StepRegistry;
use sluice_runtime::{Backend, Runtime, RuntimeConfig};

use crate::clients::Clients;
use crate::dynamo::DynamoStore;
use crate::scheduler::EventBridgeScheduler;
use crate::secrets::SecretsManagerStore;
use crate::settings::AwsSettings;
use crate::sqs::SqsQueue;

/// How long a function reuses decrypted secrets before reading them again: short, so a
/// rotated secret is picked up quickly, long enough that a burst of steps reads once.
pub const SECRET_TTL: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct AwsEnvironment {
    pub settings: AwsSettings,
    pub clients: Clients,
    pub store: DynamoStore,
    pub queue: Arc<SqsQueue>,
    pub secrets: Arc<SecretsManagerStore>,
}

impl AwsEnvironment {
    /// Loads the AWS configuration and builds every client.
    pub async fn load(settings: AwsSettings) -> Self {
        Self::with_clients(settings, Clients::load().await)
    }

    pub fn with_clients(settings: AwsSettings, clients: Clients) -> Self {
        let store = DynamoStore::new(
            clients.dynamodb.clone(),
            clients.s3.clone(),
            settings.clone(),
        );
        let queue = Arc::new(SqsQueue::new(
            clients.sqs.clone(),
            settings.queue_url_prefix.clone(),
        ));
        let secrets = Arc::new(SecretsManagerStore::new(
            clients.secrets.clone(),
            settings.secret_prefix.clone(),
        ));
        Self {
            settings,
            clients,
            store,
            queue,
            secrets,
        }
    }

    pub fn backend(&self) -> Backend {
        Backend {
            definitions: Arc::new(self.store.clone()) as Arc<dyn DefinitionStore>,
            runs: Arc::new(self.store.clone()) as Arc<dyn RunStore>,
            queue: self.queue.clone(),
            secrets: self.secrets.clone(),
            cache: Arc::new(self.store.clone()) as Arc<dyn Cache>,
            packs: Arc::new(self.store.clone()) as Arc<dyn PackStore>,
            reports: Arc::new(self.store.clone()) as Arc<dyn sluice_core::ports::ReportStore>,
        }
    }

    pub fn runtime_config(&self) -> RuntimeConfig {
        RuntimeConfig {
            queue_for: self.settings.queue_router(),
            result_expires: chrono::Duration::seconds(self.settings.result_expires_seconds),
            secret_ttl: SECRET_TTL,
            max_timeout_seconds: sluice_core::model::LAMBDA_MAX_TIMEOUT_SECONDS,
            // SQS holds any backlog durably and Lambda scales out on it; fair order
            // across runs comes from its fair queues, not from refusing starts.
            max_queued_steps: None,
            ..RuntimeConfig::default()
        }
    }

    pub fn runtime(&self, registry: StepRegistry) -> Arc<Runtime> {
        Runtime::new(self.backend(), registry, self.runtime_config())
    }

    pub fn schedules(&self) -> Arc<dyn ScheduleStore> {
        Arc::new(self.store.clone())
    }

    pub fn schedule_stats(&self) -> Arc<dyn ScheduleStatsStore> {
        Arc::new(self.store.clone())
    }

    pub fn access(&self) -> Arc<dyn AccessStore> {
        Arc::new(self.store.clone())
    }

    /// EventBridge Scheduler, when the deployment names the `start` function and the
    /// role schedules assume (`SLUICE_START_FUNCTION_ARN`, `SLUICE_SCHEDULER_ROLE_ARN`).
    pub fn scheduler(&self) -> Option<Arc<dyn Scheduler>> {
        let target = self.settings.start_function_arn.clone()?;
        let role = self.settings.scheduler_role_arn.clone()?;
        Some(Arc::new(
            EventBridgeScheduler::new(
                self.clients.scheduler.clone(),
                self.settings.schedule_group.clone(),
                target,
                role,
            )
            .with_dead_letter(self.settings.schedule_dead_letter_arn.clone()),
        ))
    }
}
