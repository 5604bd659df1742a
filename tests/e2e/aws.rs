//! The same end-to-end cases with `--backend aws` against moto (`scripts/test.sh` starts
//! it and exports `AWS_ENDPOINT_URL`): the engine runs in the `sluice` process, polling
//! the SQS step queues with the handler the Lambda functions use; each test provisions
//! its own tables, queues and bucket under a fresh prefix.

use std::time::Duration;

use axum::routing::get;
use serde_json::json;

use crate::cli_runs;
use crate::support::{Behaviour, Scratch, TestServer};

/// A scratch directory whose commands run with `--backend aws` on freshly provisioned
/// resources. Fails (never skips) without moto.
pub async fn scratch() -> Scratch {
    assert!(
        std::env::var("AWS_ENDPOINT_URL").is_ok_and(|u| u.starts_with("http://127.0.0.1")),
        "AWS_ENDPOINT_URL must point at a local moto server (scripts/test.sh starts one); \
         these tests never contact real AWS"
    );
    let mut s = Scratch::new();
    s.aws_prefix = Some(format!("e{}", &uuid_like()[..12]));
    let done = s.sluice(&["aws", "provision"]).await.expect(0);
    assert!(done.stdout().contains("-echo"), "{}", done.stdout());
    s
}

fn uuid_like() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    format!("{:016x}", h.finish())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_inventory_sync() {
    cli_runs::inventory_sync_reports_new_updated_removed_unchanged_and_is_idempotent_on(
        scratch().await,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_inventory_report_and_a_redacted_report() {
    let s = scratch().await;
    crate::reports::inventory_report_through_the_cli_on(&s).await;
    crate::reports::a_secret_in_a_report_is_redacted_and_the_cli_deletes_reports_on(s).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_dry_run_and_reserved_params() {
    cli_runs::dry_run_skips_writes_and_reserved_params_are_recorded_on(scratch().await).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_branching_and_fan_out() {
    cli_runs::branching_and_fan_out_examples_on(scratch().await).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_failed_step_exit_1() {
    cli_runs::a_failed_step_fails_the_run_with_exit_1_and_cancels_successors_on(scratch().await)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_trigger_blocking_and_replay() {
    cli_runs::trigger_application_blocking_and_not_and_replay_on(scratch().await).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_failed_blocking_child() {
    cli_runs::a_failed_blocking_child_fails_the_parent_step_on(scratch().await).await
}

const SECRET: &str = "aws-tok-5e1f2a9b";

/// Retries through SQS delays, an encrypted value from Secrets Manager, and no plaintext
/// anywhere in DynamoDB, S3 or the logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_retries_and_encrypted_values_never_stored() {
    let server = TestServer::start().await;
    server.on("flaky", Behaviour::FailFirst(1, json!({"total": 2})));
    server.on(
        "secure",
        Behaviour::Bearer(SECRET.into(), json!({"ok": true})),
    );
    let s = scratch().await;
    let config = s.write(
        "config.json",
        &json!({"name": "cloud", "data": [
            {"name": "base", "value": server.base},
            {"name": "token", "value": SECRET, "encrypted": true}
        ]})
        .to_string(),
    );
    let app = s.write(
        "app.json",
        &json!({"name": "cloud_app", "author": "me", "configuration": "cloud", "steps": [
            {"id": "Get", "type": "http_request", "parameters": {"url": "${config.base}/flaky"},
             "retry": {"max_attempts": 3, "backoff_seconds": 0.1, "backoff_rate": 1.0}},
            {"id": "Secure", "type": "http_request", "depends_on": ["Get"],
             "parameters": {"url": "${config.base}/secure", "auth": {"bearer": "${config.token}"}}},
            {"id": "Show", "type": "echo", "depends_on": ["Secure"], "parameters": {"value": "token=${config.token}"}}
        ]})
        .to_string(),
    );
    let doc = s
        .sluice(&[
            "run",
            app.to_str().unwrap(),
            "-c",
            config.to_str().unwrap(),
            "-p",
            "loglevel=10",
            "--output",
            "json",
        ])
        .await
        .expect(0)
        .json();
    assert_eq!(
        doc["steps"]["Get"]["attempts"], 2,
        "one 503, then success after an SQS delay"
    );
    assert_eq!(doc["steps"]["Secure"]["output"], json!({"ok": true}));
    assert_eq!(
        doc["steps"]["Show"]["output"], "token=***",
        "outputs are redacted"
    );
    let id = doc["task_id"].as_str().unwrap();
    let logs = s.sluice(&["runs", "logs", id]).await.expect(0).stdout();
    assert!(!logs.contains(SECRET), "{logs}");
    let shown = s
        .sluice(&["configs", "get", "cloud"])
        .await
        .expect(0)
        .stdout();
    assert!(!shown.contains(SECRET), "{shown}");
    // Every item of every table and every object of the bucket, read with boto3.
    let dump = dump_prefix(s.aws_prefix.as_deref().unwrap()).await;
    assert!(
        dump.contains("cloud_app"),
        "the dump sees the stored documents"
    );
    assert!(
        !dump.contains(SECRET),
        "plaintext secret stored outside Secrets Manager"
    );
}

/// Every DynamoDB item and S3 object of a deployment, as text (deflated documents
/// inflated), through moto's boto3 in .venv.
async fn dump_prefix(prefix: &str) -> String {
    let script = r#"
import boto3, os, sys, zlib
p = sys.argv[1]
kw = dict(endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1")
db = boto3.client("dynamodb", **kw); s3 = boto3.client("s3", **kw)
def text(v):
    if "B" in v:
        try: return zlib.decompress(v["B"], -15).decode()
        except Exception: return repr(v["B"])
    return repr(v)
for t in ("definitions", "runs", "cache"):
    for page in db.get_paginator("scan").paginate(TableName=f"{p}-{t}"):
        for item in page["Items"]:
            print(" ".join(text(v) for v in item.values()))
for o in s3.list_objects_v2(Bucket=f"{p}-outputs").get("Contents", []):
    body = s3.get_object(Bucket=f"{p}-outputs", Key=o["Key"])["Body"].read()
    try: print(zlib.decompress(body, -15).decode())
    except Exception: print(repr(body))
"#;
    let python = crate::support::repo().join(".venv/bin/python");
    let out = tokio::process::Command::new(python)
        .args(["-c", script, prefix])
        .output()
        .await
        .expect("run .venv/bin/python (scripts/test.sh creates it)");
    assert!(
        out.status.success(),
        "dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// SPEC §7: a 10 MB output works (S3 holds it; the item and the messages name it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_a_10_mb_output_goes_through_s3() {
    // Incompressible-ish text, so even deflated it cannot fit an item.
    let mut big = String::with_capacity(10 * 1024 * 1024 + 64);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while big.len() < 10 * 1024 * 1024 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        big.push_str(&format!("{x:016x}"));
    }
    let body = json!({"blob": big}).to_string();
    let app = axum::Router::new().route("/big", get(move || std::future::ready(body.clone())));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let s = scratch().await;
    let app = s.write(
        "big.json",
        &json!({"name": "big", "author": "me", "steps": [
            {"id": "Fetch", "type": "http_request", "parameters": {"url": format!("{base}/big")}, "timeout_seconds": 120},
            {"id": "Size", "type": "transform", "depends_on": ["Fetch"],
             "parameters": {"template": "{{ input.blob | length }}"}}
        ]})
        .to_string(),
    );
    let done = tokio::time::timeout(
        Duration::from_secs(300),
        s.sluice(&["run", app.to_str().unwrap(), "--output", "json"]),
    )
    .await
    .expect("the run ends")
    .expect(0);
    let doc = done.json();
    assert_eq!(doc["steps"]["Size"]["output"], json!(big.len()));
    assert_eq!(
        doc["steps"]["Fetch"]["output"]["blob"]
            .as_str()
            .unwrap()
            .len(),
        big.len()
    );
}
