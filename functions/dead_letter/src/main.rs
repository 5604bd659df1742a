//! The dead-letter function, fed by every step queue's dead-letter queue: a message that
//! exhausted its receives marks its attempt failed with a clear error, and the run goes
//! on (successors cancelled, the run ended). It knows the step types from their
//! catalogue and executes none.

#[tokio::main]
async fn main() -> Result<(), sluice_lambda::Error> {
    sluice_lambda::queue::run_queue_function(sluice_steps::catalogue_registry()).await
}
