//! The EventBridge Scheduler target: starts the run of one schedule tick (idempotently)
//! and counts it in the schedule's `total_runs`/`last_run`. It knows the step types from
//! their catalogue and executes none.

#[tokio::main]
async fn main() -> Result<(), sluice_lambda::Error> {
    sluice_lambda::start::run_start_function(sluice_steps::catalogue_registry()).await
}
