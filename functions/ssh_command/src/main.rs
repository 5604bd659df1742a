//! The `ssh_command` step type's function: fed by the `<stack>-ssh_command` queue (partial batch
//! failure reporting), it executes that step type only, and links only its code.

use sluice_lambda::StepRegistry;

#[tokio::main]
async fn main() -> Result<(), sluice_lambda::Error> {
    let mut registry = StepRegistry::new();
    registry.register(sluice_steps::SshCommand::new());
    sluice_lambda::queue::run_queue_function(registry).await
}
