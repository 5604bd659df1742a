//! The `api` function: the whole REST API behind API Gateway's HTTP API, whose JWT
//! authorizer has verified the bearer token (see `sluice_lambda::api`). It validates and
//! lists every step type from their catalogue, and executes none (`POST /steps/run` of
//! a step type answers that it runs in its own function).

#[tokio::main]
async fn main() -> Result<(), sluice_lambda::Error> {
    sluice_lambda::api::run_api_function(sluice_steps::catalogue_registry()).await
}
