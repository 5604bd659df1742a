//! Shared helpers: a scratch directory with its own data directory, a way to run the
//! binary in it, and a local HTTP server with programmable behaviour.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::any;
use axum::Router;
use serde_json::Value;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A scratch directory: the working directory of the commands, with `.sluice` inside.
pub struct Scratch {
    pub dir: tempfile::TempDir,
    /// `Some(prefix)`: every command runs with `--backend aws` on the resources named
    /// from this prefix (see `aws::scratch`).
    pub aws_prefix: Option<String>,
}

impl Scratch {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            aws_prefix: None,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.path().join(".sluice")
    }

    /// Copies an example directory to the same relative place, so its configuration's
    /// relative database paths work here.
    pub fn copy_example(&self, name: &str) -> PathBuf {
        let from = repo().join("examples").join(name);
        let to = self.path().join("examples").join(name);
        std::fs::create_dir_all(&to).unwrap();
        for entry in std::fs::read_dir(&from).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
        to
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"));
        cmd.args(args)
            .current_dir(self.path())
            .env("SLUICE_DATA_DIR", self.data_dir())
            .env("NO_COLOR", "1")
            .env_remove("SLUICE_LOG")
            .kill_on_drop(true);
        if let Some(prefix) = &self.aws_prefix {
            cmd.env("SLUICE_BACKEND", "aws")
                .env("SLUICE_AWS_PREFIX", prefix);
        }
        cmd
    }

    /// Runs `sluice ARGS` to its end.
    pub async fn sluice(&self, args: &[&str]) -> Done {
        let output = self.command(args).output().await.unwrap();
        Done(output)
    }

    /// The id of the newest run (e.g. one another command just started).
    pub async fn newest_run_id(&self) -> String {
        let listed = self
            .sluice(&["runs", "list", "--output", "json"])
            .await
            .expect(0)
            .json();
        listed[0]["task_id"].as_str().expect("a run").to_string()
    }

    /// Every byte stored under the data directory, for secret scans.
    pub fn data_dir_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        let mut stack = vec![self.data_dir()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    bytes.extend(std::fs::read(&path).unwrap_or_default());
                }
            }
        }
        bytes
    }
}

/// A finished command.
pub struct Done(pub Output);

impl Done {
    pub fn code(&self) -> i32 {
        self.0.status.code().unwrap_or(-1)
    }
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout()).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout(),
                self.stderr()
            )
        })
    }
    /// Asserts the exit code, showing both streams when it differs.
    pub fn expect(self, code: i32) -> Self {
        assert_eq!(
            self.code(),
            code,
            "exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout(),
            self.stderr()
        );
        self
    }
}

/// What the test server answers on a path.
#[derive(Clone)]
pub enum Behaviour {
    /// 503 for the first `n` requests, then 200 with the body.
    FailFirst(u32, Value),
    /// 200 with the body when the bearer token matches, else 401.
    Bearer(String, Value),
    /// Waits, then 200 with the body.
    Slow(Duration, Value),
    /// Echoes the request: method, headers, body.
    Echo,
}

#[derive(Default)]
struct ServerState {
    behaviours: HashMap<String, Behaviour>,
    hits: HashMap<String, u32>,
}

/// A local HTTP server on 127.0.0.1 with per-path behaviours and hit counters.
#[derive(Clone)]
pub struct TestServer {
    pub base: String,
    state: Arc<Mutex<ServerState>>,
}

impl TestServer {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(ServerState::default()));
        let app = Router::new()
            .route("/{*path}", any(handle))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { base, state }
    }

    pub fn on(&self, path: &str, behaviour: Behaviour) {
        self.state
            .lock()
            .unwrap()
            .behaviours
            .insert(path.trim_start_matches('/').to_string(), behaviour);
    }

    pub fn hits(&self, path: &str) -> u32 {
        self.state
            .lock()
            .unwrap()
            .hits
            .get(path.trim_start_matches('/'))
            .copied()
            .unwrap_or(0)
    }
}

async fn handle(
    State(state): State<Arc<Mutex<ServerState>>>,
    UrlPath(path): UrlPath<String>,
    method: axum::http::Method,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, String) {
    let (behaviour, hit) = {
        let mut state = state.lock().unwrap();
        let hit = {
            let counter = state.hits.entry(path.clone()).or_default();
            *counter += 1;
            *counter
        };
        (state.behaviours.get(&path).cloned(), hit)
    };
    match behaviour {
        None => (StatusCode::NOT_FOUND, format!("no route {path}")),
        Some(Behaviour::FailFirst(n, body)) => {
            if hit <= n {
                (StatusCode::SERVICE_UNAVAILABLE, "try again later".into())
            } else {
                (StatusCode::OK, body.to_string())
            }
        }
        Some(Behaviour::Bearer(token, body)) => {
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if auth == format!("Bearer {token}") {
                (StatusCode::OK, body.to_string())
            } else {
                (StatusCode::UNAUTHORIZED, "bad token".into())
            }
        }
        Some(Behaviour::Slow(wait, body)) => {
            tokio::time::sleep(wait).await;
            (StatusCode::OK, body.to_string())
        }
        Some(Behaviour::Echo) => {
            let headers: serde_json::Map<String, Value> = headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        Value::String(v.to_str().unwrap_or("").to_string()),
                    )
                })
                .collect();
            let doc =
                serde_json::json!({"method": method.as_str(), "headers": headers, "body": body});
            (StatusCode::OK, doc.to_string())
        }
    }
}

/// Polls until `check` holds or the timeout passes.
pub async fn eventually<F: FnMut() -> bool>(timeout: Duration, mut check: F) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check()
}

/// Password of the administrator of every [`Serve`] the tests start.
pub const ADMIN_PASSWORD: &str = "e2e-admin-pw";

/// A running `sluice serve` on 127.0.0.1 (a free port) over a scratch data directory.
pub struct Serve {
    pub child: tokio::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    pub http: reqwest::Client,
}

impl Scratch {
    /// Starts `sluice serve` on this scratch directory and waits until it listens.
    pub async fn serve(&self) -> Serve {
        use tokio::io::{AsyncBufReadExt, BufReader};
        let mut child = self
            .command(&["serve", "--addr", "127.0.0.1:0", "--body-limit", "65536"])
            .env("SLUICE_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env_remove("SLUICE_ENDPOINT")
            .env_remove("SLUICE_TOKEN")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let base = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(rest) = line.strip_prefix("Listening on ") {
                    return rest.split_whitespace().next().unwrap().to_string();
                }
            }
            panic!("sluice serve exited before listening");
        })
        .await
        .expect("sluice serve did not start listening");
        // Keep draining stderr so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Serve {
            child,
            base,
            http: reqwest::Client::new(),
        }
    }

    /// `sluice tokens create NAME --role ROLE` on the data directory; the token.
    pub async fn token(&self, name: &str, role: &str) -> String {
        let done = self
            .sluice(&["tokens", "create", name, "--role", role])
            .await
            .expect(0);
        done.stdout().trim().to_string()
    }

    /// `sluice ARGS` in client mode against `serve` with `token`.
    pub async fn client(&self, serve: &Serve, token: &str, args: &[&str]) -> Done {
        let output = self
            .command(args)
            .env("SLUICE_ENDPOINT", &serve.base)
            .env("SLUICE_TOKEN", token)
            .output()
            .await
            .unwrap();
        Done(output)
    }
}

/// How a test request authenticates.
#[derive(Clone, Debug)]
pub enum Auth {
    None,
    Admin,
    Token(String),
}

impl Serve {
    /// Sends a request; returns the status and the body as JSON (`Value::Null` when the
    /// body is not JSON).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        auth: &Auth,
        body: Option<String>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        request = match auth {
            Auth::None => request,
            Auth::Admin => request.basic_auth("admin", Some(ADMIN_PASSWORD)),
            Auth::Token(token) => request.bearer_auth(token),
        };
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str, auth: &Auth) -> (u16, Value) {
        self.call("GET", path, auth, None).await
    }

    pub async fn post(&self, path: &str, auth: &Auth, body: &Value) -> (u16, Value) {
        self.call("POST", path, auth, Some(body.to_string())).await
    }

    /// Sends SIGTERM and waits for the process to exit; its exit code.
    pub async fn stop(mut self) -> i32 {
        let pid = self.child.id().unwrap();
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("sluice serve did not stop")
            .unwrap();
        status.code().unwrap_or(-1)
    }
}
