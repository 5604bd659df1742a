//! `http_request`: one HTTP request; the response body is the output.
//!
//! The pieces every HTTP-based step type shares (the client with its TLS
//! configuration, headers, `auth`, the timeout, how transport failures and statuses
//! are classified) live here too, so `graphql` sends its requests the same way.

use std::collections::BTreeMap;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Client, Method, RequestBuilder, Response, Url};
use schemars::JsonSchema;
use serde::Deserialize;
use sluice_sdk::StepError;

#[cfg(feature = "http_request")]
use crate::common::{timeout_param, truncate};
#[cfg(feature = "http_request")]
use {
    async_trait::async_trait,
    reqwest::header::CONTENT_TYPE,
    serde::Serialize,
    serde_json::{Map, Value},
    sluice_sdk::{StepContext, StepOutput, TypedStep},
    std::time::Instant,
};

/// How much of an unexpected response's body goes into the error.
pub(crate) const ERROR_BODY_CHARS: usize = 300;

#[cfg(feature = "http_request")]
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
    pub(crate) fn text(&self) -> String {
        match self {
            Self::Text(s) => s.clone(),
            Self::Number(n) => n.to_string(),
            Self::Bool(b) => b.to_string(),
        }
    }
}

#[cfg(feature = "http_request")]
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

#[cfg(feature = "http_request")]
fn default_method() -> String {
    "GET".into()
}

/// The default of `timeout_seconds` in every HTTP-based step type.
pub(crate) fn default_timeout() -> f64 {
    30.0
}

#[cfg(feature = "http_request")]
/// The `http_request` step type. Holds one [`Client`] (its connection pool and TLS
/// configuration), reused by every invocation of a warm process.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    client: Client,
}

#[cfg(feature = "http_request")]
impl Default for HttpRequest {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(feature = "http_request")]
impl HttpRequest {
    /// The step type with its own client (connection pool and TLS configuration).
    pub fn new() -> Self {
        Self {
            client: http_client(),
        }
    }
}

/// The client of every HTTP-based step type: rustls with the web PKI roots, and
/// `sluice/<version>` as the user agent.
pub(crate) fn http_client() -> Client {
    Client::builder()
        .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
        .use_rustls_tls()
        .build()
        .expect("the HTTP client configuration is static and valid")
}

#[cfg(feature = "http_request")]
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
        let mut url = parse_http_url(&params.url)?;
        let timeout = timeout_param(params.timeout_seconds)?;
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

        let mut headers = header_map(&params.headers)?;

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
        request = with_auth(request.headers(headers), params.auth);

        let started = Instant::now();
        let transport = |e| transport_error(e, &method, &shown, params.timeout_seconds);
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let response_headers = response.headers().clone();
        let bytes = read_body(response, &method, &shown, params.timeout_seconds).await?;
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

/// A `url` parameter: an absolute `http` or `https` URL.
pub(crate) fn parse_http_url(text: &str) -> Result<Url, StepError> {
    let url =
        Url::parse(text).map_err(|e| StepError::Fatal(format!("invalid URL \"{text}\": {e}")))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(StepError::Fatal(format!(
            "unsupported URL scheme \"{}\" in \"{text}\" (use http or https)",
            url.scheme()
        )));
    }
    Ok(url)
}

/// The `headers` parameter as a header map; an error names the header, never its value
/// (which may be a secret).
pub(crate) fn header_map(headers: &BTreeMap<String, Scalar>) -> Result<HeaderMap, StepError> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| StepError::Fatal(format!("invalid header name \"{name}\"")))?;
        let value = HeaderValue::from_str(&value.text())
            .map_err(|_| StepError::Fatal(format!("invalid value for header \"{name}\"")))?;
        map.append(header, value);
    }
    Ok(map)
}

/// The request with the `auth` parameter's `Authorization` header.
pub(crate) fn with_auth(request: RequestBuilder, auth: Option<Auth>) -> RequestBuilder {
    match auth {
        None => request,
        Some(Auth::Basic(basic)) => request.basic_auth(basic.username, basic.password),
        Some(Auth::Bearer(token)) => request.bearer_auth(token),
    }
}

/// Largest response body a step reads (`http_request`, `graphql`): a larger one fails the
/// attempt (fatally: asking again gets the same answer) rather than filling the memory of
/// the function.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// The response body, refusing one larger than [`MAX_RESPONSE_BYTES`].
pub(crate) async fn read_body(
    mut response: Response,
    method: &Method,
    shown: &str,
    timeout_seconds: f64,
) -> Result<Vec<u8>, StepError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| transport_error(e, method, shown, timeout_seconds))?
    {
        if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(StepError::Fatal(format!(
                "the response of {method} {shown} is larger than {MAX_RESPONSE_BYTES} bytes"
            )));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// A failure to send a request or read its response: a timeout or a network failure is
/// retryable, a request that cannot be built is not.
pub(crate) fn transport_error(
    error: reqwest::Error,
    method: &Method,
    shown: &str,
    timeout_seconds: f64,
) -> StepError {
    if error.is_timeout() {
        StepError::Retryable(format!(
            "{method} {shown} timed out after {timeout_seconds} s"
        ))
    } else if error.is_builder() {
        StepError::Fatal(format!(
            "cannot build the request {method} {shown}: {}",
            chain(error)
        ))
    } else {
        StepError::Retryable(format!("{method} {shown} failed: {}", chain(error)))
    }
}

/// `503 Service Unavailable`, or just the code when it has no canonical reason.
pub(crate) fn status_text(status: reqwest::StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

/// The URL as shown in logs and errors: without any password in its user info.
pub(crate) fn display_url(url: &Url) -> String {
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
