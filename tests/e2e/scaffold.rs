//! A project of one's own, made as docs/steps.md makes it: `sluice new proj
//! --sluice-path <this checkout>`, `sluice new step weather`, and the guide's files (the
//! HTTP-calling `weather` step type, its Cargo.toml, an application and a configuration)
//! taken from the guide itself, so that the guide is what is tested. Then one build of the
//! project (offline, in this checkout's target directory, so it compiles only the Sluice
//! crates and the project's own), and with the project's binary: the catalogue
//! regenerated, `infra --check` passing and failing on a stale template, the step schema
//! it publishes, the project's `cargo test` (the harness tests of both step types), an
//! application using both step types embedded and with `--backend aws` on moto against an
//! HTTP server on 127.0.0.1 standing in for the weather API, cfn-lint on its template, and
//! its `weather` function built with `cargo lambda build` (in `target/lambda-build`, shared
//! with shared/lambda/tests/lambda_bootstrap.rs) and invoked through `cargo lambda watch`
//! with an SQS event holding a real step message.
//!
//! Needs moto (`AWS_ENDPOINT_URL`), cargo-lambda and cfn-lint in `.venv/bin`; fails, never
//! skips, without them. Prints the time of each phase.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use sluice_aws::{AwsEnvironment, AwsSettings};
use sluice_core::model::Application;
use sluice_core::ports::{DefinitionStore, Queue};
use tokio::process::Command;

use crate::support::repo;

/// The weather API's key: an encrypted configuration value, which the stand-in API
/// requires.
const API_KEY: &str = "om-key-7f3a9c1e";

/// The project's name, so its binaries (`proj`, `proj-weather`…) sit next to Sluice's in
/// the shared target directory without replacing any.
const PROJECT: &str = "proj";

/// The files docs/steps.md asks to write: each fenced block right after a line that is a
/// path in bold (`**steps/weather/src/lib.rs**`).
fn guide_files() -> Vec<(String, String)> {
    let guide = std::fs::read_to_string(repo().join("docs/steps.md")).unwrap();
    let mut files = Vec::new();
    let mut lines = guide.lines();
    while let Some(line) = lines.next() {
        let Some(path) = line
            .strip_prefix("**")
            .and_then(|l| l.strip_suffix("**"))
            .filter(|p| !p.contains(' '))
        else {
            continue;
        };
        assert_eq!(
            lines.next(),
            Some(""),
            "{path}: a blank line, then its block"
        );
        assert!(
            lines.next().is_some_and(|l| l.starts_with("```")),
            "{path}: a fenced block"
        );
        let body: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
        files.push((path.to_string(), body.join("\n") + "\n"));
    }
    files
}

/// The target directory this test binary was built in (`<target>/debug/deps/e2e-…`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().to_path_buf()
}

fn venv_tool(name: &str) -> PathBuf {
    let path = repo().join(".venv/bin").join(name);
    assert!(
        path.exists(),
        "{name} is not installed in .venv (scripts/test.sh installs scripts/requirements-test.txt)"
    );
    path
}

/// PATH with `.venv/bin` first (cargo-lambda, and the zig it builds with).
fn path_with_venv() -> String {
    format!(
        "{}:{}",
        repo().join(".venv/bin").display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Runs `command` to its end; asserts its exit code, showing both streams when it differs.
async fn expect(command: &mut Command, code: i32) -> Output {
    let output = command.kill_on_drop(true).output().await.unwrap();
    assert_eq!(
        output.status.code(),
        Some(code),
        "{command:?}\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn stdout_json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// A stand-in for Open-Meteo's forecast API: the current weather of any place, for the
/// right key only. Counts the requests it answered.
async fn weather_api() -> (String, Arc<AtomicUsize>) {
    async fn forecast(
        State(answered): State<Arc<AtomicUsize>>,
        Query(query): Query<HashMap<String, String>>,
    ) -> Result<Json<Value>, (StatusCode, Json<Value>)> {
        if query.get("apikey").map(String::as_str) != Some(API_KEY) {
            let reason = json!({"error": true, "reason": "API key required"});
            return Err((StatusCode::UNAUTHORIZED, Json(reason)));
        }
        assert_eq!(query["current"], "temperature_2m,wind_speed_10m");
        answered.fetch_add(1, Ordering::SeqCst);
        Ok(Json(json!({
            "latitude": query["latitude"].parse::<f64>().unwrap(),
            "longitude": query["longitude"].parse::<f64>().unwrap(),
            "current": {"time": "2026-12-01T12:00", "interval": 900,
                        "temperature_2m": 4.5, "wind_speed_10m": 12.0}
        })))
    }
    let answered = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .route("/v1/forecast", get(forecast))
        .with_state(answered.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, answered)
}

/// Prints how long the phase since `*since` took, and restarts the clock.
fn lap(since: &mut Instant, phase: &str) {
    println!("{phase}: {:.1} s", since.elapsed().as_secs_f64());
    *since = Instant::now();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scaffolded_project_builds_tests_runs_and_deploys_its_own_step_types() {
    assert!(
        std::env::var("AWS_ENDPOINT_URL").is_ok_and(|u| u.starts_with("http://127.0.0.1")),
        "AWS_ENDPOINT_URL must point at a local moto server (scripts/test.sh starts one)"
    );
    let cfn_lint = venv_tool("cfn-lint");
    venv_tool("cargo-lambda");
    let whole = Instant::now();
    let mut clock = Instant::now();

    // 1. Scaffold, add a step type, write the guide's files.
    let parent = tempfile::tempdir().unwrap();
    let root = parent.path().join(PROJECT);
    let sluice = |dir: &Path, args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
        command.args(args).current_dir(dir);
        command
    };
    let created = expect(
        sluice(parent.path(), &["new", PROJECT, "--sluice-path"]).arg(repo()),
        0,
    )
    .await;
    assert!(
        String::from_utf8_lossy(&created.stdout).contains("cargo run -- run examples/hello.json")
    );
    expect(&mut sluice(&root, &["new", "step", "weather"]), 0).await;
    let files = guide_files();
    let paths: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            "steps/weather/Cargo.toml",
            "steps/weather/src/lib.rs",
            "examples/weather-config.json",
            "examples/weather.json"
        ]
    );
    for (path, text) in &files {
        std::fs::write(root.join(path), text).unwrap();
    }
    lap(&mut clock, "scaffolded");

    // 2. One build of the project: its binary and all its functions.
    let target = target_dir();
    let cargo = |args: &[&str]| {
        let mut command = Command::new(std::env::var("CARGO").unwrap_or("cargo".into()));
        command
            .args(args)
            .current_dir(&root)
            .env("CARGO_TARGET_DIR", &target)
            .env("CARGO_NET_OFFLINE", "true");
        command
    };
    expect(&mut cargo(&["build", "--workspace"]), 0).await;
    lap(&mut clock, "cargo build --workspace");

    let data_dir = parent.path().join("data");
    let project = |args: &[&str]| {
        let mut command = Command::new(target.join("debug").join(PROJECT));
        command
            .args(args)
            .current_dir(&root)
            .env("SLUICE_DATA_DIR", &data_dir)
            .env("NO_COLOR", "1")
            .env_remove("SLUICE_BACKEND")
            .env_remove("SLUICE_LOG");
        command
    };

    // 3. The weather step's parameters are the guide's, no longer the template's: the
    //    catalogue is regenerated, then current; a changed function list is caught.
    let checked = expect(&mut project(&["infra", "--check"]), 1).await;
    assert!(
        String::from_utf8_lossy(&checked.stderr).contains("infra/catalogue.json"),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    expect(&mut project(&["infra"]), 0).await;
    expect(&mut project(&["infra", "--check"]), 0).await;
    let functions = root.join("infra/functions.toml");
    let function_list = std::fs::read_to_string(&functions).unwrap();
    let edited = function_list.replace(
        "name = \"weather\"\nkind = \"step\"\nmemory = 128",
        "name = \"weather\"\nkind = \"step\"\nmemory = 256",
    );
    assert_ne!(edited, function_list);
    std::fs::write(&functions, edited).unwrap();
    let stale = expect(&mut project(&["infra", "--check"]), 1).await;
    assert!(String::from_utf8_lossy(&stale.stderr).contains("template.yaml"));
    std::fs::write(&functions, &function_list).unwrap();
    expect(&mut project(&["infra", "--check"]), 0).await;

    // 4. The schema the project publishes for its step type.
    let schema = stdout_json(&expect(&mut project(&["schema", "step", "weather"]), 0).await);
    assert_eq!(schema["version"], "1.0.0");
    assert_eq!(schema["kind"], "step");
    let properties = &schema["parameters"]["properties"];
    assert_eq!(
        properties["latitude"]["description"],
        "Latitude of the place, in degrees (-90 to 90)."
    );
    assert_eq!(properties["timeout_seconds"]["default"], 10);
    assert_eq!(schema["parameters"]["additionalProperties"], false);
    let listed = stdout_json(&expect(&mut project(&["schema", "step"]), 0).await);
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    for name in ["greet", "weather", "echo", "http_request", "transform"] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    lap(&mut clock, "infra and schema checks");

    // 5. The project's own tests: both step types' harness tests (the guide's included)
    //    and the generated files' check.
    let tested = expect(&mut cargo(&["test"]), 0).await;
    let report = String::from_utf8_lossy(&tested.stdout);
    for test in [
        "says_hello_to_the_name_given",
        "a_cached_observation_is_used_without_asking_the_api",
        "template_and_catalogue_are_up_to_date",
    ] {
        assert!(
            report.contains(&format!("{test} ... ok")),
            "{test}:\n{report}"
        );
    }
    lap(&mut clock, "cargo test (the project's)");

    // 6. The guide's application, with the stand-in API and an encrypted key.
    let (api, answered) = weather_api().await;
    let mut config: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("examples/weather-config.json")).unwrap(),
    )
    .unwrap();
    config["data"] = json!([
        {"name": "weather_api", "value": api},
        {"name": "weather_key", "value": API_KEY, "encrypted": true}
    ]);
    let mut app: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("examples/weather.json")).unwrap())
            .unwrap();
    app["steps"][0]["parameters"]["api_key"] = json!("${config.weather_key}");
    let config_file = parent.path().join("weather-config.json");
    let app_file = parent.path().join("weather.json");
    std::fs::write(&config_file, config.to_string()).unwrap();
    std::fs::write(&app_file, app.to_string()).unwrap();
    let run_args = [
        "run",
        app_file.to_str().unwrap(),
        "-c",
        config_file.to_str().unwrap(),
        "--output",
        "json",
    ];
    let check_run = |output: &Output| {
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(!text.contains(API_KEY), "the key is shown: {text}");
        let doc = stdout_json(output);
        assert_eq!(doc["state"], "success", "{doc}");
        assert_eq!(doc["steps"]["Now"]["version"], "1.0.0");
        assert_eq!(doc["steps"]["Report"]["version"], "0.1.0");
        assert_eq!(
            doc["steps"]["Now"]["output"],
            json!({"time": "2026-12-01T12:00", "temperature_c": 4.5, "wind_kmh": 12.0})
        );
        assert_eq!(
            doc["steps"]["Report"]["output"]["message"],
            "Hello, Lyon, 4.5 °C with wind at 12.0 km/h!"
        );
    };
    check_run(&expect(&mut project(&run_args), 0).await);
    assert_eq!(answered.load(Ordering::SeqCst), 1);
    lap(&mut clock, "embedded run");

    // 7. The same with --backend aws on moto (its own tables, queues and secrets).
    let prefix = format!("sc{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    let on_aws = |args: &[&str]| {
        let mut command = project(args);
        command
            .env("SLUICE_BACKEND", "aws")
            .env("SLUICE_AWS_PREFIX", &prefix);
        command
    };
    let provisioned = expect(&mut on_aws(&["aws", "provision"]), 0).await;
    let queues = String::from_utf8_lossy(&provisioned.stdout);
    assert!(
        queues.contains(&format!("{prefix}-weather"))
            && queues.contains(&format!("{prefix}-greet")),
        "{queues}"
    );
    check_run(&expect(&mut on_aws(&run_args), 0).await);
    assert_eq!(
        answered.load(Ordering::SeqCst),
        2,
        "DynamoDB's cache is not the data directory's"
    );
    lap(&mut clock, "--backend aws run");

    // 8. Its template lints clean.
    let linted = Command::new(&cfn_lint)
        .arg("template.yaml")
        .current_dir(&root)
        .output()
        .await
        .unwrap();
    assert!(
        linted.status.success(),
        "cfn-lint:\n{}{}",
        String::from_utf8_lossy(&linted.stdout),
        String::from_utf8_lossy(&linted.stderr)
    );
    lap(&mut clock, "cfn-lint");

    // 9. The weather function as for deployment, invoked with a real step message.
    let lambda_target = target.join("lambda-build");
    let lambda_dir = parent.path().join("lambda");
    let cargo_lambda = |args: &[&str]| {
        let mut command = Command::new("cargo");
        command
            .arg("lambda")
            .args(args)
            .current_dir(&root)
            .env("PATH", path_with_venv())
            .env("CARGO_NET_OFFLINE", "true");
        command
    };
    expect(
        cargo_lambda(&[
            "build",
            "-p",
            &format!("{PROJECT}-fn-weather"),
            "--lambda-dir",
        ])
        .arg(&lambda_dir)
        .env("CARGO_TARGET_DIR", &lambda_target),
        0,
    )
    .await;
    let bootstrap = lambda_dir.join(format!("{PROJECT}-weather/bootstrap"));
    assert!(bootstrap.exists(), "{}", bootstrap.display());
    lap(&mut clock, "cargo lambda build");

    // A run whose step waits in the weather queue, started with the project's catalogue
    // (what its api and start functions know).
    let env = AwsEnvironment::load(AwsSettings::with_prefix(&prefix)).await;
    let step_types = sluice_steps::catalogue::registry_from_json(
        &std::fs::read_to_string(root.join("infra/catalogue.json")).unwrap(),
    );
    let one_step: Application = serde_json::from_value(json!({
        "name": "weather_now", "author": "me", "configuration": "weather",
        "steps": [{"id": "Now", "type": "weather", "parameters": {
            "latitude": 48.85, "longitude": 2.35,
            "api_url": "${config.weather_api}", "api_key": "${config.weather_key}"}}]
    }))
    .unwrap();
    env.store.put_application(&one_step).await.unwrap();
    let runtime = env.runtime(step_types);
    let run = runtime
        .start(sluice_runtime::StartRequest {
            application: "weather_now".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let queue = env.settings.queue_for("weather");
    let delivery = env
        .queue
        .receive(&queue, 1, Duration::from_secs(120), Duration::from_secs(2))
        .await
        .unwrap()
        .pop()
        .expect("the step message");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut watch = cargo_lambda(&[
        "watch",
        "--only-lambda-apis",
        "-A",
        "127.0.0.1",
        "-P",
        &port.to_string(),
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .kill_on_drop(true)
    .spawn()
    .unwrap();
    let api_up = async {
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), api_up)
        .await
        .expect("cargo lambda watch listens");
    let mut function = Command::new(&bootstrap)
        .env("AWS_LAMBDA_FUNCTION_NAME", "_")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env(
            "AWS_LAMBDA_RUNTIME_API",
            format!("http://127.0.0.1:{port}/.rt"),
        )
        .env("SLUICE_AWS_PREFIX", &prefix)
        .env("SLUICE_QUEUE", &queue)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let event = json!({"Records": [{
        "messageId": "m-1",
        "receiptHandle": delivery.receipt,
        "body": serde_json::to_string(&delivery.message).unwrap(),
        "attributes": {"ApproximateReceiveCount": "1"},
        "messageAttributes": {},
        "eventSource": "aws:sqs",
        "eventSourceARN": format!("arn:aws:sqs:us-east-1:123456789012:{queue}"),
        "awsRegion": "us-east-1"
    }]});
    let event_file = parent.path().join("event.json");
    std::fs::write(&event_file, event.to_string()).unwrap();
    let invoked = tokio::time::timeout(
        Duration::from_secs(60),
        cargo_lambda(&[
            "invoke",
            "_",
            "-A",
            "127.0.0.1",
            "-P",
            &port.to_string(),
            "-o",
            "json",
            "--data-file",
        ])
        .arg(&event_file)
        .output(),
    )
    .await
    .expect("the invocation returns")
    .unwrap();
    let answer = String::from_utf8_lossy(&invoked.stdout);
    assert!(
        invoked.status.success(),
        "invoke failed: {answer}\n{}",
        String::from_utf8_lossy(&invoked.stderr)
    );
    assert_eq!(
        serde_json::from_str::<Value>(&answer).unwrap(),
        json!({"batchItemFailures": []}),
        "the record succeeded"
    );
    let done = runtime.get_run(&run.id).await.unwrap();
    assert_eq!(done.state, sluice_core::model::RunState::Success);
    assert_eq!(done.steps[0].type_version.as_deref(), Some("1.0.0"));
    assert_eq!(
        runtime.read_output(&done, "Now").await.unwrap()["temperature_c"],
        4.5
    );
    assert_eq!(
        answered.load(Ordering::SeqCst),
        3,
        "the function asked the API"
    );
    let _ = function.kill().await;
    let _ = watch.kill().await;
    lap(&mut clock, "cargo lambda watch + invoke");
    println!(
        "the scaffolded project's test took {:.1} s",
        whole.elapsed().as_secs_f64()
    );
}
