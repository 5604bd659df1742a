//! The `graphql` step type's function: fed by the `<stack>-graphql` queue (partial batch
//! failure reporting), it executes that step type only, and links only its code.

use sluice_lambda::StepRegistry;

#[tokio::main]
async fn main() -> Result<(), sluice_lambda::Error> {
    let mut registry = StepRegistry::new();
    registry.register(sluice_steps::Graphql::new());
    sluice_lambda::queue::run_queue_function(registry).await
}
