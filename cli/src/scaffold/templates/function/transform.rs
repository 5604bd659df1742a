//! The operators' function, fed by the `<stack>-transform` queue: operators run inline in
//! whichever function finished their predecessor; only a delayed retry of one (a busy
//! claim, a backoff) comes through this queue.

#[tokio::main]
async fn main() -> Result<(), sluice_lambda::Error> {
    sluice_lambda::queue::run_queue_function(sluice_lambda::StepRegistry::new()).await
}
