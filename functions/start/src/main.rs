//! The EventBridge Scheduler target: starts the run of one schedule tick (idempotently)
//! and counts it in the schedule's `total_runs`/`last_run`.

#[tokio::main]
async fn main() -> Result<(), sluice_aws::lambda::Error> {
    sluice_aws::lambda::run_start_function(sluice_steps::builtin_registry()).await
}
