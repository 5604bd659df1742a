//! The `api` function: the REST API behind API Gateway's HTTP API (JWT authorizer). It
//! validates applications against, and lists, every step type of the project from the
//! generated catalogue, and links none of their code.

#[tokio::main]
async fn main() -> Result<(), sluice_lambda::Error> {
    let step_types = sluice_steps::catalogue::registry_from_json(include_str!(
        "../../../infra/catalogue.json"
    ));
    sluice_lambda::api::run_api_function(step_types).await
}
