//! A real function binary end to end: `cargo lambda build` compiles the `echo` function
//! (with zig, as for deployment; in its own target dir `target/lambda-build`, about 3½
//! minutes from cold on 2 cores, seconds when cached), `cargo lambda watch
//! --only-lambda-apis` emulates the Lambda runtime API, the `bootstrap` runs against it
//! and moto, and `cargo lambda invoke` sends it an SQS event holding a real step
//! message: the step runs and the run ends.
//!
//! Needs moto (`AWS_ENDPOINT_URL`) and cargo-lambda (in `.venv/bin`, installed by
//! `scripts/test.sh`); fails, never skips, without them.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

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
    let target = repo().join("target/lambda-build");
    let built = cargo_lambda()
        .args(["build", "-p", "sluice-fn-echo", "--lambda-dir"])
        .arg(target.join("lambda"))
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .await
        .unwrap();
    assert!(built.success(), "cargo lambda build failed");
    let bootstrap = target.join("lambda/sluice-echo/bootstrap");
    assert!(bootstrap.exists());

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
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

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
}
