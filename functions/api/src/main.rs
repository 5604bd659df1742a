//! The `api` function: the whole REST API behind API Gateway's HTTP API, whose JWT
//! authorizer has verified the bearer token (see `sluice_aws::api`).

#[tokio::main]
async fn main() -> Result<(), sluice_aws::lambda::Error> {
    sluice_aws::api::run_api_function(sluice_steps::builtin_registry()).await
}
