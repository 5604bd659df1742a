//! The EventBridge Scheduler target: starts the run of one schedule tick (idempotently).
//! It knows the project's step types from the generated catalogue and executes none.

#[tokio::main]
async fn main() -> Result<(), sluice_lambda::Error> {
    let step_types = sluice_steps::catalogue::registry_from_json(include_str!(
        "../../../infra/catalogue.json"
    ));
    sluice_lambda::start::run_start_function(step_types).await
}
