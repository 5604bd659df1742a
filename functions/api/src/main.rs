//! The `api` function: the whole REST API (`sluice_api::router`) behind API Gateway's HTTP
//! API. API Gateway's JWT authorizer has verified the bearer token; its claims become the
//! request's `JwtClaims`, mapped to roles by the role bindings.

use std::sync::Arc;

use lambda_http::{service_fn, tower::ServiceExt, Error, Request, RequestExt};
use sluice_api::{AdminCredentials, ApiPorts, ApiState, JwtClaims};
use sluice_aws::{AwsEnvironment, AwsSettings};

/// The verified claims of the request, if API Gateway's JWT authorizer passed any.
fn claims(request: &Request, username_claim: &str, groups_claim: &str) -> Option<JwtClaims> {
    let lambda_http::request::RequestContext::ApiGatewayV2(context) = request.request_context()
    else {
        return None;
    };
    let jwt = context.authorizer?.jwt?;
    let claims: serde_json::Map<String, serde_json::Value> = jwt
        .claims
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    JwtClaims::from_claims(
        &serde_json::Value::Object(claims),
        username_claim,
        groups_claim,
    )
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    sluice_aws::lambda::init_tracing();
    let env = AwsEnvironment::load(AwsSettings::from_env()).await;
    sluice_aws::lambda::warm_up(&env, None).await;
    let runtime = env.runtime(sluice_steps::builtin_registry());
    let scheduler = env
        .scheduler()
        .ok_or("SLUICE_START_FUNCTION_ARN and SLUICE_SCHEDULER_ROLE_ARN must be set")?;
    let ports = ApiPorts {
        schedules: env.schedules(),
        schedule_stats: env.schedule_stats(),
        scheduler,
        access: env.access(),
    };
    let admin = AdminCredentials {
        user: std::env::var("SLUICE_ADMIN_USER").unwrap_or_else(|_| "admin".into()),
        password_hash: std::env::var("SLUICE_ADMIN_PASSWORD_HASH")
            .ok()
            .filter(|h| !h.is_empty()),
    };
    let mut state = ApiState::new(runtime, ports, admin);
    state.backend = "aws".into();
    let app = sluice_api::router(state);
    let username_claim =
        Arc::new(std::env::var("SLUICE_JWT_USERNAME_CLAIM").unwrap_or_else(|_| "username".into()));
    let groups_claim =
        Arc::new(std::env::var("SLUICE_JWT_GROUPS_CLAIM").unwrap_or_else(|_| "groups".into()));
    lambda_http::run(service_fn(move |mut request: Request| {
        let app = app.clone();
        let (username_claim, groups_claim) = (username_claim.clone(), groups_claim.clone());
        async move {
            if let Some(claims) = claims(&request, &username_claim, &groups_claim) {
                request.extensions_mut().insert(claims);
            }
            app.oneshot(request).await
        }
    }))
    .await
}
