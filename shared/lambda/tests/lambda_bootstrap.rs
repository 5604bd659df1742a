//! A real function binary end to end: `cargo lambda build` compiles the `echo` function
//! (with zig, as for deployment; in its own target dir `target/lambda-build`, about 3½
//! minutes from cold on 2 cores, seconds when cached), `cargo lambda watch
//! --only-lambda-apis` emulates the Lambda runtime API, the `bootstrap` runs against it
//! and moto, and `cargo lambda invoke` sends it an SQS event holding a real step
//! message: the step runs and the run ends. Every line the function printed is JSON;
//! the record's lines carry its run id, step id and attempt, and its metrics are an
//! embedded-metric-format line.
//!
//! The bootstrap reaches the runtime API through a relay that notes the first
//! connection, so the test prints the start-up time (process spawned → first runtime API
//! request; docs/benchmarks.md). `SLUICE_BOOTSTRAP=<path>` runs that bootstrap instead
//! of building one (to measure a release build).
//!
//! Needs moto (`AWS_ENDPOINT_URL`) and cargo-lambda (in `.venv/bin`, installed by
//! `scripts/test.sh`); fails, never skips, without them.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;
use sluice_aws::{AwsEnvironment, AwsSettings};
use sluice_core::model::Application;
use sluice_core::ports::{DefinitionStore, Queue};
use tokio::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn cargo_lambda() -> Command {
    let bin = repo().join(".venv/bin");
    assert!(
        bin.join("cargo-lambda").exists(),
        "cargo-lambda is not installed in .venv (scripts/test.sh installs scripts/requirements-test.txt)"
    );
    let mut cmd = Command::new("cargo");
    cmd.arg("lambda")
        .current_dir(repo())
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .kill_on_drop(true);
    cmd
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_function_bootstrap_handles_an_sqs_event() {
    assert!(
        std::env::var("AWS_ENDPOINT_URL").is_ok(),
        "AWS_ENDPOINT_URL is not set: this test needs a moto server (scripts/test.sh starts one)"
    );
    // 1. Build the function as for deployment.
    let bootstrap = match std::env::var_os("SLUICE_BOOTSTRAP") {
        Some(path) => PathBuf::from(path),
        None => {
            let target = repo().join("target/lambda-build");
            let built = cargo_lambda()
                .args(["build", "-p", "sluice-fn-echo", "--lambda-dir"])
                .arg(target.join("lambda"))
                .env("CARGO_TARGET_DIR", &target)
                .status()
                .await
                .unwrap();
            assert!(built.success(), "cargo lambda build failed");
            target.join("lambda/sluice-echo/bootstrap")
        }
    };
    assert!(bootstrap.exists(), "{}", bootstrap.display());

    // 2. A deployment on moto with a run whose first step waits in the echo queue.
    let prefix = format!("lb{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    let env = AwsEnvironment::load(AwsSettings::with_prefix(&prefix)).await;
    sluice_aws::provision::provision(&env.clients, &env.settings, &["echo".to_string()])
        .await
        .unwrap();
    let app: Application =
        serde_json::from_value(json!({"name": "boot", "author": "me", "steps": [
        {"id": "Hello", "type": "echo", "parameters": {"value": "hello from bootstrap"}}]}))
        .unwrap();
    env.store.put_application(&app).await.unwrap();
    let runtime = env.runtime(sluice_steps::builtin_registry());
    let run = runtime
        .start(sluice_runtime::StartRequest {
            application: "boot".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let queue = env.settings.queue_for("echo");
    let delivery = env
        .queue
        .receive(&queue, 1, Duration::from_secs(120), Duration::from_secs(2))
        .await
        .unwrap()
        .pop()
        .expect("the step message");

    // 3. The runtime API emulator and the bootstrap against it.
    let port = free_port();
    let mut watch = cargo_lambda()
        .args([
            "watch",
            "--only-lambda-apis",
            "-A",
            "127.0.0.1",
            "-P",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
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
    // A relay in front of the runtime API that notes when the first request arrives.
    let relay = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_port = relay.local_addr().unwrap().port();
    let (first_request, first_request_at) = tokio::sync::oneshot::channel::<Instant>();
    tokio::spawn(async move {
        let mut first_request = Some(first_request);
        loop {
            let Ok((mut inbound, _)) = relay.accept().await else {
                return;
            };
            if let Some(tx) = first_request.take() {
                let _ = tx.send(Instant::now());
            }
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await
                {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    let spawned = Instant::now();
    let mut function = Command::new(&bootstrap)
        .env("AWS_LAMBDA_FUNCTION_NAME", "_")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env(
            "AWS_LAMBDA_RUNTIME_API",
            format!("http://127.0.0.1:{relay_port}/.rt"),
        )
        .env("SLUICE_AWS_PREFIX", &prefix)
        .env("SLUICE_QUEUE", &queue)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let startup = tokio::time::timeout(Duration::from_secs(60), first_request_at)
        .await
        .expect("the bootstrap polls the runtime API")
        .unwrap()
        - spawned;
    println!(
        "start-up to the first runtime API request: {:.1} ms ({})",
        startup.as_secs_f64() * 1e3,
        bootstrap.display()
    );

    // 4. The SQS event as the event source mapping sends it.
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
    let file = std::env::temp_dir().join(format!("{prefix}-event.json"));
    std::fs::write(&file, event.to_string()).unwrap();
    let invoked = tokio::time::timeout(
        Duration::from_secs(60),
        cargo_lambda()
            .args([
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
            .arg(&file)
            .output(),
    )
    .await
    .expect("the invocation returns")
    .unwrap();
    let stdout = String::from_utf8_lossy(&invoked.stdout);
    assert!(
        invoked.status.success(),
        "invoke failed: {stdout}\n{}",
        String::from_utf8_lossy(&invoked.stderr)
    );
    let response: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        response,
        json!({"batchItemFailures": []}),
        "the record succeeded"
    );

    let done = runtime.get_run(&run.id).await.unwrap();
    assert_eq!(done.state, sluice_core::model::RunState::Success);
    assert_eq!(
        runtime.read_output(&done, "Hello").await.unwrap(),
        json!("hello from bootstrap")
    );
    let _ = function.kill().await;
    let _ = watch.kill().await;

    // 5. What the function printed: JSON lines only; the record's carry its ids.
    let mut stdout = String::new();
    use tokio::io::AsyncReadExt;
    function
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .await
        .unwrap();
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let ready = lines
        .iter()
        .find(|l| l["message"] == "ready for the first invocation")
        .unwrap_or_else(|| panic!("no ready line: {stdout}"));
    println!(
        "of which the function's own INIT (clients, warm-up requests): {} ms",
        ready["init_ms"]
    );
    let handled = lines
        .iter()
        .find(|l| l["message"] == "record handled")
        .unwrap_or_else(|| panic!("no per-record line: {stdout}"));
    assert_eq!(handled["span"]["run_id"], json!(run.id), "{handled}");
    assert_eq!(handled["span"]["step_id"], "Hello");
    assert_eq!(handled["span"]["attempt"], 1);
    let metrics = lines
        .iter()
        .find(|l| l.get("_aws").is_some())
        .unwrap_or_else(|| panic!("no metrics line: {stdout}"));
    assert_eq!(metrics["StepType"], "echo");
    assert_eq!(metrics["succeeded"], 1);
}
