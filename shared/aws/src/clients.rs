//! The SDK clients of one process, built once and shared (a Lambda container keeps them
//! across invocations). One HTTPS stack for all of them: hyper 1 + rustls 0.23 + ring —
//! the same rustls the step types' reqwest uses, so no second TLS library (aws-lc) is
//! compiled into every function.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use aws_smithy_http_client::Builder as HttpBuilder;

use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;

/// Every client Sluice uses, sharing one connection pool per service.
#[derive(Clone, Debug)]
pub struct Clients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub s3: aws_sdk_s3::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
    pub scheduler: aws_sdk_scheduler::Client,
    /// Requests made, by `service:operation`, and DynamoDB capacity units (for the cost
    /// measurements).
    pub requests: RequestCounter,
}

/// Counts the requests the clients send, by service and operation: what AWS bills.
#[derive(Clone, Debug, Default)]
pub struct RequestCounter(Arc<Mutex<BTreeMap<String, u64>>>);

impl RequestCounter {
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().expect("request counter").clone()
    }

    pub fn reset(&self) {
        self.0.lock().expect("request counter").clear();
    }

    pub(crate) fn add(&self, key: &str, n: u64) {
        *self
            .0
            .lock()
            .expect("request counter")
            .entry(key.to_string())
            .or_default() += n;
    }
}

#[derive(Debug)]
struct Counting {
    service: &'static str,
    counter: RequestCounter,
}

impl Intercept for Counting {
    fn name(&self) -> &'static str {
        "SluiceRequestCounter"
    }

    /// Runs once per transmitted attempt (retries count: AWS bills them too).
    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let operation = cfg
            .load::<aws_smithy_runtime_api::client::orchestrator::Metadata>()
            .map(|m| m.name().to_string())
            .unwrap_or_else(|| "unknown".into());
        if tracing::enabled!(tracing::Level::TRACE) {
            let body = context
                .request()
                .body()
                .bytes()
                .map(|b| String::from_utf8_lossy(&b[..b.len().min(300)]).into_owned())
                .unwrap_or_default();
            tracing::trace!(service = self.service, operation = %operation, body, "aws request");
        }
        self.counter
            .add(&format!("{}:{operation}", self.service), 1);
        Ok(())
    }
}

impl Clients {
    /// Loads the standard AWS configuration (environment, profile, container or
    /// instance credentials; `AWS_ENDPOINT_URL` for moto) and builds every client.
    pub async fn load() -> Self {
        let http = HttpBuilder::new()
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .build_https();
        // Bounded attempts: a stalled connection is retried instead of hanging a step
        // (the longest call is a 20-second SQS long poll).
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(3))
            .operation_attempt_timeout(Duration::from_secs(30))
            .build();
        let config = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http)
            .timeout_config(timeouts)
            .load()
            .await;
        Self::from_config(&config)
    }

    pub fn from_config(config: &SdkConfig) -> Self {
        let requests = RequestCounter::default();
        let counting = |service| Counting {
            service,
            counter: requests.clone(),
        };
        let dynamodb = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(config)
                .interceptor(counting("dynamodb"))
                .interceptor(crate::capacity::CapacityCounting {
                    counter: requests.clone(),
                })
                .build(),
        );
        let sqs = aws_sdk_sqs::Client::from_conf(
            aws_sdk_sqs::config::Builder::from(config)
                .interceptor(counting("sqs"))
                .build(),
        );
        // Path-style addressing: bucket names need no DNS (moto, VPC endpoints).
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(config)
                .force_path_style(true)
                .interceptor(counting("s3"))
                .build(),
        );
        let secrets = aws_sdk_secretsmanager::Client::from_conf(
            aws_sdk_secretsmanager::config::Builder::from(config)
                .interceptor(counting("secretsmanager"))
                .build(),
        );
        let scheduler = aws_sdk_scheduler::Client::from_conf(
            aws_sdk_scheduler::config::Builder::from(config)
                .interceptor(counting("scheduler"))
                .build(),
        );
        Self {
            dynamodb,
            sqs,
            s3,
            secrets,
            scheduler,
            requests,
        }
    }
}
