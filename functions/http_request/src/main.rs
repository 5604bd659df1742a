//! The `http_request` step type's function: fed by the `<stack>-http_request` queue (partial batch
//! failure reporting), it executes that step type only.

use sluice_aws::lambda::StepRegistry;

#[tokio::main]
async fn main() -> Result<(), sluice_aws::lambda::Error> {
    let mut registry = StepRegistry::new();
    registry.register(sluice_steps::HttpRequest::new());
    sluice_aws::lambda::run_queue_function(registry).await
}
