//! `graphql`: one GraphQL operation over HTTP (a `POST` of `{query, variables,
//! operationName}`); the response's `data` is the output.
//!
//! Sent with the same client, headers, `auth` and timeout rules as `http_request`
//! (`crate::http`). A response carrying a non-empty `errors` array fails the attempt
//! with the errors' messages, even when it also carries partial `data`.

use std::collections::BTreeMap;
use std::time::Instant;

use async_trait::async_trait;
use reqwest::header::{HeaderValue, ACCEPT, CONTENT_TYPE};
use reqwest::{Client, Method, StatusCode};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sluice_sdk::{StepContext, StepError, StepOutput, TypedStep};

use crate::common::{timeout_param, truncate};
use crate::http::{
    default_timeout, display_url, header_map, http_client, parse_http_url, read_body, status_text,
    transport_error, with_auth, Auth, Scalar, ERROR_BODY_CHARS,
};

pub use crate::http::MAX_RESPONSE_BYTES;

/// How many of a response's errors the failure message quotes (it says how many
/// more there were).
const ERRORS_SHOWN: usize = 10;

/// Parameters of `graphql`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GraphqlParams {
    /// The GraphQL endpoint (`http` or `https`), to which the operation is `POST`ed.
    pub endpoint: String,
    /// The GraphQL document (query or mutation). It may not hold `${…}` references:
    /// declare variables in the document (`query ($id: ID!) { … }`) and pass the values
    /// in `variables`.
    #[schemars(extend(
        "x-sluice-literal" = true,
        "x-sluice-literal-reason" = "values would be spliced into the GraphQL document; declare a variable in the query and put the reference in \"variables\""
    ))]
    pub query: String,
    /// The operation's variables by name (any JSON values, references included).
    #[serde(default)]
    pub variables: Map<String, Value>,
    /// Which operation of the document to run, when it holds several.
    #[serde(default)]
    pub operation_name: Option<String>,
    /// Request headers by name, as in `http_request`. Their values are never logged.
    #[serde(default)]
    pub headers: BTreeMap<String, Scalar>,
    /// `{"basic": {"username", "password"}}` or `{"bearer": "token"}`, as in `http_request`.
    #[serde(default)]
    pub auth: Option<Auth>,
    /// Seconds the whole request (connecting, sending, reading the body) may take.
    #[serde(default = "default_timeout")]
    #[schemars(range(min = 0.001, max = 900.0))]
    pub timeout_seconds: f64,
}

/// The `graphql` step type. Holds one [`Client`], reused by every invocation of a warm
/// process.
#[derive(Debug, Clone)]
pub struct Graphql {
    client: Client,
}

impl Default for Graphql {
    fn default() -> Self {
        Self::new()
    }
}

impl Graphql {
    /// The step type with its own client (connection pool and TLS configuration).
    pub fn new() -> Self {
        Self {
            client: http_client(),
        }
    }
}

#[async_trait]
impl TypedStep for Graphql {
    const NAME: &'static str = "graphql";
    const DESCRIPTION: &'static str =
        "Runs one GraphQL query or mutation over HTTP; the output is the response's data (a response with errors fails).";
    const VERSION: &'static str = "1.0.0";
    type Params = GraphqlParams;

    async fn run(&self, params: GraphqlParams, ctx: &StepContext) -> Result<StepOutput, StepError> {
        let url = parse_http_url(&params.endpoint)?;
        let timeout = timeout_param(params.timeout_seconds)?;
        let shown = display_url(&url);
        let method = Method::POST;

        let mut body = json!({"query": params.query});
        if !params.variables.is_empty() {
            body["variables"] = Value::Object(params.variables);
        }
        if let Some(name) = &params.operation_name {
            body["operationName"] = Value::String(name.clone());
        }

        let mut headers = header_map(&params.headers)?;
        headers
            .entry(CONTENT_TYPE)
            .or_insert(HeaderValue::from_static("application/json"));
        // The GraphQL-over-HTTP media type first; plain JSON for older servers.
        headers.entry(ACCEPT).or_insert(HeaderValue::from_static(
            "application/graphql-response+json, application/json;q=0.9",
        ));
        let request = self
            .client
            .post(url)
            .timeout(timeout)
            .headers(headers)
            .body(body.to_string());
        let request = with_auth(request, params.auth);

        let started = Instant::now();
        let transport = |e| transport_error(e, &method, &shown, params.timeout_seconds);
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let bytes = read_body(response, &method, &shown, params.timeout_seconds).await?;
        ctx.log.info(format!(
            "{method} {shown} -> {} ({} ms)",
            status_text(status),
            started.elapsed().as_millis()
        ));
        graphql_output(status, &bytes, &shown)
    }
}

/// Whether asking again may get another answer: the server is unavailable or
/// overloaded (5xx, 408, 429), not refusing the operation itself.
fn status_is_retryable(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
}

/// The step's result from the HTTP status and body: `data`, or the failure the errors
/// (or the status) describe.
fn graphql_output(status: StatusCode, bytes: &[u8], shown: &str) -> Result<StepOutput, StepError> {
    let fail = |message: String| {
        if status_is_retryable(status) {
            StepError::Retryable(message)
        } else {
            StepError::Fatal(message)
        }
    };
    let text = String::from_utf8_lossy(bytes);
    let parsed = serde_json::from_str::<Value>(&text).ok();
    let errors = parsed
        .as_ref()
        .and_then(|v| v.get("errors"))
        .and_then(Value::as_array)
        .filter(|errors| !errors.is_empty());
    if let Some(errors) = errors {
        return Err(fail(format!(
            "GraphQL errors from {shown} (HTTP {}): {}",
            status_text(status),
            error_messages(errors)
        )));
    }
    if !status.is_success() {
        let body = text.trim();
        let detail = if body.is_empty() {
            " (empty body)".to_string()
        } else {
            format!(": {}", truncate(body, ERROR_BODY_CHARS))
        };
        return Err(fail(format!(
            "HTTP {} from POST {shown}{detail}",
            status_text(status)
        )));
    }
    match parsed {
        Some(Value::Object(mut response)) if response.contains_key("data") => Ok(
            StepOutput::value(response.remove("data").unwrap_or(Value::Null)),
        ),
        Some(_) => Err(StepError::Fatal(format!(
            "the response of POST {shown} is not a GraphQL response (no \"data\" nor \"errors\"): {}",
            truncate(text.trim(), ERROR_BODY_CHARS)
        ))),
        None => Err(StepError::Fatal(format!(
            "the response of POST {shown} is not JSON. It starts with: {}",
            truncate(text.trim(), ERROR_BODY_CHARS)
        ))),
    }
}

/// `message (at path a.0.b)` for each error, `; `-separated, the first
/// [`ERRORS_SHOWN`] of them.
fn error_messages(errors: &[Value]) -> String {
    let mut parts: Vec<String> = errors
        .iter()
        .take(ERRORS_SHOWN)
        .map(|error| {
            let message = match error.get("message") {
                Some(Value::String(message)) => message.clone(),
                Some(other) => other.to_string(),
                None => error.to_string(),
            };
            let mut part = truncate(&message, ERROR_BODY_CHARS);
            if let Some(path) = error.get("path").and_then(Value::as_array) {
                let path: Vec<String> = path
                    .iter()
                    .map(|p| match p {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect();
                part.push_str(&format!(" (at path {})", path.join(".")));
            }
            part
        })
        .collect();
    if errors.len() > ERRORS_SHOWN {
        parts.push(format!("and {} more", errors.len() - ERRORS_SHOWN));
    }
    parts.join("; ")
}
