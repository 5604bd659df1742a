//! Sluice on AWS: the core's ports implemented one to one on AWS services (the Lambda
//! glue that the functions share is the `sluice-lambda` crate).
//!
//! | port | adapter |
//! |---|---|
//! | `DefinitionStore`, `ScheduleStore`, `ScheduleStatsStore`, `AccessStore`, `RunStore`, `Cache` | [`DynamoStore`] (DynamoDB; S3 for documents too large for an item) |
//! | `Queue` | [`SqsQueue`] (one queue and dead-letter queue per step type) |
//! | `SecretStore` | [`SecretsManagerStore`] (one secret per configuration) |
//! | `Scheduler` | [`EventBridgeScheduler`] (one schedule per Sluice schedule) |
//!
//! The same runtime code runs in the functions (`functions/*`, through `sluice-lambda`)
//! and in `sluice --backend aws`, which polls the queues in-process with the handler the
//! functions use (`Runtime::handle_delivery`).

pub mod capacity;
pub mod clients;
mod codec;
pub mod dynamo;
pub mod environment;
mod error;
mod packs;
pub mod provision;
pub mod scheduler;
pub mod secrets;
pub mod settings;
pub mod sqs;

pub use clients::{Clients, RequestCounter};
pub use dynamo::DynamoStore;
pub use environment::AwsEnvironment;
pub use scheduler::{eventbridge_expression, EventBridgeScheduler};
pub use secrets::SecretsManagerStore;
pub use settings::AwsSettings;
pub use sqs::SqsQueue;
