//! The `api` function's glue (feature `api`) against moto.

use serde_json::json;
use sluice_aws::{AwsEnvironment, AwsSettings};

async fn env() -> AwsEnvironment {
    assert!(
        std::env::var("AWS_ENDPOINT_URL").is_ok(),
        "AWS_ENDPOINT_URL is not set: these tests need a moto server (scripts/test.sh starts one)"
    );
    let prefix = format!("a{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    let env = AwsEnvironment::load(AwsSettings::with_prefix(&prefix)).await;
    sluice_aws::provision::provision(&env.clients, &env.settings, &["echo".to_string()])
        .await
        .unwrap();
    env
}

fn sluice_steps_registry() -> sluice_core::step::StepRegistry {
    sluice_steps::catalogue_registry()
}

/// An API Gateway (HTTP API, payload 2.0) event as the JWT authorizer passes it on.
fn api_gateway_request(
    method: &str,
    path: &str,
    claims: Option<serde_json::Value>,
) -> lambda_http::Request {
    let mut context = json!({
        "accountId": "123456789012", "apiId": "api", "domainName": "api.example.test",
        "domainPrefix": "api", "requestId": "r1", "routeKey": "ANY /api/v1/{proxy+}",
        "stage": "$default", "time": "23/Nov/2026:08:00:00 +0000", "timeEpoch": 1795420800000u64,
        "http": {"method": method, "path": path, "protocol": "HTTP/1.1",
                 "sourceIp": "127.0.0.1", "userAgent": "test"}
    });
    if let Some(claims) = claims {
        context["authorizer"] = json!({"jwt": {"claims": claims, "scopes": null}});
    }
    let event = json!({
        "version": "2.0", "routeKey": "ANY /api/v1/{proxy+}", "rawPath": path,
        "rawQueryString": "", "headers": {"authorization": "Bearer verified-by-api-gateway"},
        "requestContext": context, "isBase64Encoded": false
    });
    lambda_http::request::from_str(&event.to_string()).unwrap()
}

/// The `api` function's handler on moto: the claims API Gateway's JWT authorizer
/// verified map to roles through the role bindings stored in DynamoDB.
#[tokio::test]
async fn api_function_maps_verified_jwt_claims_to_roles() {
    use sluice_core::model::{OwnerType, Role, RoleBinding};
    use sluice_lambda::api::{api_router, handle_api_request, ClaimNames};
    let base = env().await;
    let mut settings = base.settings.clone();
    settings.start_function_arn =
        Some("arn:aws:lambda:us-east-1:123456789012:function:start".into());
    settings.scheduler_role_arn = Some("arn:aws:iam::123456789012:role/scheduler".into());
    let env = AwsEnvironment::load(settings).await;
    env.access()
        .put_binding(&RoleBinding {
            owner: "ops".into(),
            owner_type: OwnerType::Group,
            role: Role::Execute,
        })
        .await
        .unwrap();
    let admin = sluice_api::AdminCredentials {
        user: "admin".into(),
        password_hash: None,
    };
    let app = api_router(&env, sluice_steps_registry(), admin).unwrap();
    let names = ClaimNames {
        username: "username".into(),
        groups: "cognito:groups".into(),
    };
    let status = |method: &'static str, path: &'static str, claims: Option<serde_json::Value>| {
        let (app, names) = (app.clone(), names.clone());
        async move {
            handle_api_request(app, &names, api_gateway_request(method, path, claims))
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let operator = json!({"username": "alice", "cognito:groups": "[ops readers]"});
    assert_eq!(
        status("GET", "/api/v1/applications", Some(operator.clone())).await,
        200
    );
    // Execute is below Administrator: role bindings are out of reach.
    assert_eq!(
        status("GET", "/api/v1/roles/owner", Some(operator)).await,
        403
    );
    // A verified user with no binding has no role.
    let stranger = json!({"username": "mallory", "cognito:groups": "[guests]"});
    assert_eq!(
        status("GET", "/api/v1/applications", Some(stranger)).await,
        403
    );
    // Without verified claims the bearer is not a token the API knows.
    assert_eq!(status("GET", "/api/v1/applications", None).await, 401);
    assert_eq!(status("GET", "/healthcheck", None).await, 200);
}
