//! The dead-letter function, fed by every step queue's dead-letter queue: a message that
//! exhausted its receives marks its attempt failed and the run goes on. It knows the
//! project's step types from the generated catalogue and executes none.

#[tokio::main]
async fn main() -> Result<(), sluice_lambda::Error> {
    let step_types = sluice_steps::catalogue::registry_from_json(include_str!(
        "../../../infra/catalogue.json"
    ));
    sluice_lambda::queue::run_queue_function(step_types).await
}
