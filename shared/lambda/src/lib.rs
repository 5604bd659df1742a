//! The Lambda glue every function binary shares, so that each `functions/<name>/main.rs`
//! is a few lines:
//! - [`queue::run_queue_function`]: a step type's function (and the operators' and the
//!   dead-letter function), fed by SQS.
//! - [`start::run_start_function`]: the EventBridge Scheduler target.
//! - [`api::run_api_function`] (feature `api`): the REST API behind API Gateway.
//!
//! Logs are JSON lines on stdout; while a record is handled every line carries the run
//! id, step id and attempt (a `record` span). Per step type, [`metrics`] prints the
//! attempts' counts and durations in CloudWatch's embedded metric format.
//!
//! Clients and the runtime are built once per container, during INIT, and their
//! connections opened then ([`warm_up`]): at 128 MB the first TLS handshake to DynamoDB
//! alone takes about 0.75 s, which otherwise lands on the first invocation.

#[cfg(feature = "api")]
pub mod api;
pub mod metrics;
pub mod queue;
pub mod start;

use sluice_aws::AwsEnvironment;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;

pub use lambda_runtime::Error;
/// Re-exported so a function binary needs no direct dependency on the core.
pub use sluice_core::step::StepRegistry;

/// JSON logs on stdout (CloudWatch adds the timestamp and request id), levels from
/// `RUST_LOG` (the template's `LogLevel`; `level` or `target=level,…`), `info` by
/// default.
pub fn init_tracing() {
    let _ = tracing::subscriber::set_global_default(json_subscriber(std::io::stdout));
}

/// The subscriber of [`init_tracing`], writing to `writer`: one JSON object per line,
/// the event's fields at the top level and the current span's fields (run id, step id,
/// attempt while a record is handled) under `span`.
pub fn json_subscriber<W>(writer: W) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    // `Targets` (`info`, `sluice_runtime=debug,info`, …) rather than `EnvFilter`, whose
    // regular expressions would add a megabyte to every bootstrap.
    let filter: Targets = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .without_time()
        .with_target(false)
        .with_writer(writer)
        .finish()
        .with(filter)
}

/// Opens the connections the first invocation needs (DynamoDB, and SQS for the
/// function's own queue) with requests that cost nothing or next to nothing.
pub async fn warm_up(env: &AwsEnvironment, queue: Option<&str>) {
    let dynamodb = env.clients.dynamodb.describe_endpoints().send();
    let sqs = async {
        if let Some(queue) = queue {
            let _ = env.queue.url(queue).await;
        }
    };
    let (dynamodb, ()) = tokio::join!(dynamodb, sqs);
    if let Err(e) = dynamodb {
        tracing::warn!(error = %aws_sdk_dynamodb::error::DisplayErrorContext(&e), "warm-up request failed");
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_line_logged_while_handling_a_record_is_json_with_its_ids() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = super::json_subscriber(move || writer.clone());
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "record",
                run_id = "isapp-1",
                step_id = "Fetch",
                attempt = 2u32
            );
            span.in_scope(|| tracing::warn!(error = "boom", "delivery failed"));
            tracing::debug!("below the default level");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if std::env::var_os("RUST_LOG").is_none() {
            assert_eq!(lines.len(), 1, "info by default: {text}");
        }
        let line = lines
            .iter()
            .find(|l| l["message"] == "delivery failed")
            .unwrap();
        assert_eq!(line["message"], "delivery failed");
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["error"], "boom");
        assert_eq!(line["span"]["run_id"], "isapp-1");
        assert_eq!(line["span"]["step_id"], "Fetch");
        assert_eq!(line["span"]["attempt"], 2);
    }
}
