//! The `api` function: the REST API router (`sluice_api::router`) on the AWS ports,
//! behind API Gateway's HTTP API. API Gateway's JWT authorizer has verified the bearer
//! token before the function runs; its claims become the request's [`JwtClaims`], which
//! the router maps to a role through the role bindings.

use std::sync::Arc;

use lambda_http::tower::ServiceExt;
use lambda_http::{service_fn, Request, RequestExt};
use sluice_api::{AdminCredentials, ApiPorts, ApiState, JwtClaims};
use sluice_aws::{AwsEnvironment, AwsSettings};

use crate::{init_tracing, warm_up, Error, StepRegistry};

/// Which claims of a verified JWT name the user and their groups
/// (`SLUICE_JWT_USERNAME_CLAIM`, default `username`; `SLUICE_JWT_GROUPS_CLAIM`, default
/// `groups`; the template's `JwtUsernameClaim` and `JwtGroupsClaim`).
#[derive(Debug, Clone)]
pub struct ClaimNames {
    pub username: String,
    pub groups: String,
}

impl ClaimNames {
    pub fn from_env() -> Self {
        let var = |name: &str, default: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| default.to_string())
        };
        Self {
            username: var("SLUICE_JWT_USERNAME_CLAIM", "username"),
            groups: var("SLUICE_JWT_GROUPS_CLAIM", "groups"),
        }
    }
}

/// The claims API Gateway's JWT authorizer verified and passed with `request`, if any.
pub fn verified_claims(request: &Request, names: &ClaimNames) -> Option<JwtClaims> {
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
        &names.username,
        &names.groups,
    )
}

/// The administrator of `SLUICE_ADMIN_USER` / `SLUICE_ADMIN_PASSWORD_HASH` (none without
/// a hash).
pub fn admin_from_env() -> AdminCredentials {
    AdminCredentials {
        user: std::env::var("SLUICE_ADMIN_USER").unwrap_or_else(|_| "admin".into()),
        password_hash: std::env::var("SLUICE_ADMIN_PASSWORD_HASH")
            .ok()
            .filter(|h| !h.is_empty()),
    }
}

/// The REST API router on this environment's ports.
pub fn api_router(
    env: &AwsEnvironment,
    registry: StepRegistry,
    admin: AdminCredentials,
) -> Result<axum::Router, Error> {
    let scheduler = env
        .scheduler()
        .ok_or("SLUICE_START_FUNCTION_ARN and SLUICE_SCHEDULER_ROLE_ARN must be set")?;
    let ports = ApiPorts {
        schedules: env.schedules(),
        schedule_stats: env.schedule_stats(),
        scheduler,
        access: env.access(),
    };
    let mut state = ApiState::new(env.runtime(registry), ports, admin);
    state.backend = "aws".into();
    Ok(sluice_api::router(state))
}

/// Serves one API Gateway request: attaches its verified claims, then routes it.
pub async fn handle_api_request(
    app: axum::Router,
    names: &ClaimNames,
    mut request: Request,
) -> Result<axum::response::Response, Error> {
    if let Some(claims) = verified_claims(&request, names) {
        request.extensions_mut().insert(claims);
    }
    Ok(app.oneshot(request).await?)
}

/// The main of the `api` function.
pub async fn run_api_function(registry: StepRegistry) -> Result<(), Error> {
    init_tracing();
    let env = AwsEnvironment::load(AwsSettings::from_env()).await;
    warm_up(&env, None).await;
    let app = api_router(&env, registry, admin_from_env())?;
    let names = Arc::new(ClaimNames::from_env());
    lambda_http::run(service_fn(move |request: Request| {
        let (app, names) = (app.clone(), names.clone());
        async move { handle_api_request(app, &names, request).await }
    }))
    .await
}
