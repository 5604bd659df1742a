//! The dead-letter function, fed by every step queue's dead-letter queue: a message that
//! exhausted its receives marks its attempt failed with a clear error, and the run goes
//! on (successors cancelled, the run ended).

#[tokio::main]
async fn main() -> Result<(), sluice_aws::lambda::Error> {
    sluice_aws::lambda::run_queue_function(sluice_steps::builtin_registry()).await
}
