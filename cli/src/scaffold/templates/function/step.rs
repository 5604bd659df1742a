//! The `@name@` step type's function: fed by the `<stack>-@name@` queue (partial batch
//! failure reporting), it executes that step type only and links only its code.

#[tokio::main]
async fn main() -> Result<(), sluice_lambda::Error> {
    let mut registry = sluice_lambda::StepRegistry::new();
    registry.register(@step_value@);
    sluice_lambda::queue::run_queue_function(registry).await
}
