//! `http_request`: one HTTP request; the response body is the output.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use reqwest::{Client, Method, Url};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sluice_sdk::{StepContext, StepError, StepOutput, TypedStep};

/// Longest request timeout: a step's own timeout cannot be longer.
/// One request waits at most 15 minutes, wherever the step runs.
const MAX_TIMEOUT_SECONDS: f64 = sluice_core::model::LAMBDA_MAX_TIMEOUT_SECONDS as f64;

/// How much of an unexpected response's body goes into the error.
const ERROR_BODY_CHARS: usize = 300;

/// How the response becomes the step's output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ResponseMode {
    /// The body parsed as JSON (an empty body gives `null`).
    #[default]
    Json,
    /// The body as text.
    Text,
    /// `{"status", "headers", "body"}`: the body as JSON when it parses, else as text.
    Full,
}

/// HTTP Basic credentials.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// The user name.
    pub username: String,
    /// Omitted: only the user name is sent.
    #[serde(default)]
    pub password: Option<String>,
}

/// Credentials sent in the `Authorization` header.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Auth {
    /// `{"basic": {"username": "…", "password": "…"}}`
    Basic(BasicAuth),
    /// `{"bearer": "token"}`
    Bearer(String),
}

/// A header value: text, or a number or boolean sent as its JSON text.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Scalar {
    Text(String),
    Number(serde_json::Number),
    Bool(bool),
}

impl Scalar {
    fn text(&self) -> String {
        match self {
            Self::Text(s) => s.clone(),
            Self::Number(n) => n.to_string(),
            Self::Bool(b) => b.to_string(),
        }
    }
}

/// Parameters of `http_request`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpRequestParams {
    /// The URL (`http` or `https`). Query parameters may be given here, in `query`, or both.
    pub url: String,
    /// The HTTP method (any case).
    #[serde(default = "default_method")]
    pub method: String,
    /// Request headers by name. Their values are never logged.
    #[serde(default)]
    pub headers: BTreeMap<String, Scalar>,
    /// Query parameters appended to the URL, in order; a value that is not a string is
    /// sent as its JSON text (`5`, `true`, `null`, `[1,2]`).
    #[serde(default)]
    pub query: Map<String, Value>,
    /// The request body: a string is sent as text (`text/plain; charset=utf-8`), any
    /// other JSON value as JSON (`application/json`), unless `headers` sets
    /// `Content-Type`. Absent or `null`: no body.
    #[serde(default)]
    pub body: Option<Value>,
    /// `{"basic": {"username", "password"}}` or `{"bearer": "token"}`.
    #[serde(default)]
    pub auth: Option<Auth>,
    /// Seconds the whole request (connecting, sending, reading the body) may take.
    #[serde(default = "default_timeout")]
    #[schemars(range(min = 0.001, max = 900.0))]
    pub timeout_seconds: f64,
    /// Statuses that count as success; absent: any 2xx. Any other status fails the
    /// attempt (retryably) with the status and the start of the body.
    #[serde(default)]
    pub expected_status: Option<Vec<u16>>,
    /// `json` (default): the parsed body; `text`: the body as text; `full`:
    /// `{"status", "headers", "body"}`.
    #[serde(default)]
    pub response: ResponseMode,
}

fn default_method() -> String {
    "GET".into()
}

fn default_timeout() -> f64 {
    30.0
}

/// The `http_request` step type. Holds one [`Client`] (its connection pool and TLS
/// configuration), reused by every invocation of a warm process.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    client: Client,
}

impl Default for HttpRequest {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpRequest {
    pub fn new() -> Self {
        let client = Client::builder()
            .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
            .use_rustls_tls()
            .build()
            .expect("the HTTP client configuration is static and valid");
        Self { client }
    }
}

#[async_trait]
impl TypedStep for HttpRequest {
    const NAME: &'static str = "http_request";
    const DESCRIPTION: &'static str =
        "Sends one HTTP request; the output is the response body (JSON, text, or status, headers and body).";
    const VERSION: &'static str = "1.0.0";
    type Params = HttpRequestParams;

    async fn run(
        &self,
        params: HttpRequestParams,
        ctx: &StepContext,
    ) -> Result<StepOutput, StepError> {
        let fatal = StepError::Fatal;
        let method = Method::from_bytes(params.method.trim().to_ascii_uppercase().as_bytes())
            .map_err(|_| fatal(format!("invalid HTTP method \"{}\"", params.method)))?;
        let mut url = Url::parse(&params.url)
            .map_err(|e| fatal(format!("invalid URL \"{}\": {e}", params.url)))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(fatal(format!(
                "unsupported URL scheme \"{}\" in \"{}\" (use http or https)",
                url.scheme(),
                params.url
            )));
        }
        // A reference may have brought any number: 1e300 must not reach Duration.
        let timeout = Some(params.timeout_seconds)
            .filter(|t| (0.001..=MAX_TIMEOUT_SECONDS).contains(t))
            .and_then(|t| Duration::try_from_secs_f64(t).ok())
            .ok_or_else(|| {
                fatal(format!(
                    "\"timeout_seconds\" must be between 0.001 and {MAX_TIMEOUT_SECONDS} (got {})",
                    params.timeout_seconds
                ))
            })?;
        if !params.query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (name, value) in &params.query {
                match value {
                    Value::String(s) => pairs.append_pair(name, s),
                    other => pairs.append_pair(name, &other.to_string()),
                };
            }
        }
        let shown = display_url(&url);

        let mut headers = HeaderMap::new();
        for (name, value) in &params.headers {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| fatal(format!("invalid header name \"{name}\"")))?;
            // The value may be a secret: name the header, never show the value.
            let value = HeaderValue::from_str(&value.text())
                .map_err(|_| fatal(format!("invalid value for header \"{name}\"")))?;
            headers.append(header, value);
        }

        let mut request = self.client.request(method.clone(), url).timeout(timeout);
        match params.body {
            None | Some(Value::Null) => {}
            Some(Value::String(text)) => {
                if !headers.contains_key(CONTENT_TYPE) {
                    headers.insert(
                        CONTENT_TYPE,
                        HeaderValue::from_static("text/plain; charset=utf-8"),
                    );
                }
                request = request.body(text);
            }
            Some(json) => {
                if !headers.contains_key(CONTENT_TYPE) {
                    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                }
                request = request.body(json.to_string());
            }
        }
        request = request.headers(headers);
        request = match params.auth {
            None => request,
            Some(Auth::Basic(basic)) => request.basic_auth(basic.username, basic.password),
            Some(Auth::Bearer(token)) => request.bearer_auth(token),
        };

        let started = Instant::now();
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                StepError::Retryable(format!(
                    "{method} {shown} timed out after {} s",
                    params.timeout_seconds
                ))
            } else if e.is_builder() {
                StepError::Fatal(format!(
                    "cannot build the request {method} {shown}: {}",
                    chain(e)
                ))
            } else {
                StepError::Retryable(format!("{method} {shown} failed: {}", chain(e)))
            }
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let response_headers = response.headers().clone();
        let bytes = response.bytes().await.map_err(transport)?;
        ctx.log.info(format!(
            "{method} {shown} -> {} ({} ms)",
            status_text(status),
            started.elapsed().as_millis()
        ));

        let expected = match &params.expected_status {
            Some(codes) => codes.contains(&status.as_u16()),
            None => status.is_success(),
        };
        if !expected {
            let body = String::from_utf8_lossy(&bytes);
            let body = body.trim();
            let detail = if body.is_empty() {
                " (empty body)".to_string()
            } else {
                format!(": {}", truncate(body, ERROR_BODY_CHARS))
            };
            return Err(StepError::Retryable(format!(
                "HTTP {} from {method} {shown}{detail}",
                status_text(status)
            )));
        }

        let text = String::from_utf8_lossy(&bytes);
        let value = match params.response {
            ResponseMode::Json => {
                if text.trim().is_empty() {
                    Value::Null
                } else {
                    serde_json::from_str(&text).map_err(|e| {
                        StepError::Fatal(format!(
                            "the response of {method} {shown} is not JSON ({e}); set \"response\": \"text\" to get it as text. It starts with: {}",
                            truncate(text.trim(), ERROR_BODY_CHARS)
                        ))
                    })?
                }
            }
            ResponseMode::Text => Value::String(text.into_owned()),
            ResponseMode::Full => {
                let mut headers = Map::new();
                for name in response_headers.keys() {
                    let values: Vec<String> = response_headers
                        .get_all(name)
                        .iter()
                        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                        .collect();
                    headers.insert(name.as_str().to_string(), Value::String(values.join(", ")));
                }
                let body = serde_json::from_str(&text)
                    .unwrap_or_else(|_| Value::String(text.into_owned()));
                serde_json::json!({
                    "status": status.as_u16(),
                    "headers": headers,
                    "body": body,
                })
            }
        };
        Ok(StepOutput::value(value))
    }
}

/// `503 Service Unavailable`, or just the code when it has no canonical reason.
fn status_text(status: reqwest::StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

/// The URL as shown in logs and errors: without any password in its user info.
fn display_url(url: &Url) -> String {
    if url.password().is_some() {
        let mut shown = url.clone();
        let _ = shown.set_password(Some("***"));
        shown.to_string()
    } else {
        url.to_string()
    }
}

/// The error and its causes (`error sending request: … : connection refused`), without
/// the URL that reqwest repeats in its own message.
fn chain(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The first `max` characters of `text`, with `…` when it was longer.
fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}
