//! `--backend aws --stack-outputs FILE`: every resource name comes from a stack's
//! outputs (here naming resources provisioned on moto under another prefix), none is
//! derived from `SLUICE_AWS_PREFIX`, so a deployed stack's generated bucket name works.

use serde_json::json;

use crate::support::Scratch;

fn describe_stacks(prefix: &str, endpoint: &str) -> serde_json::Value {
    let outputs = [
        // A prefix naming nothing: were a name derived from it, the run would fail.
        ("Prefix", "not-provisioned".to_string()),
        ("DefinitionsTableName", format!("{prefix}-definitions")),
        ("AccessTableName", format!("{prefix}-access")),
        ("RunsTableName", format!("{prefix}-runs")),
        ("CacheTableName", format!("{prefix}-cache")),
        ("OutputsBucketName", format!("{prefix}-outputs")),
        ("QueuePrefix", prefix.to_string()),
        // moto's queue URLs: <endpoint>/<account>/<name>.
        ("QueueUrlPrefix", format!("{endpoint}/123456789012/")),
        ("SecretPrefix", format!("{prefix}/config/")),
        ("ScheduleGroupName", prefix.to_string()),
        (
            "StartFunctionArn",
            "arn:aws:lambda:us-east-1:123456789012:function:x-start".to_string(),
        ),
        (
            "SchedulerRoleArn",
            "arn:aws:iam::123456789012:role/x-SchedulerRole".to_string(),
        ),
        (
            "ScheduleDeadLetterQueueArn",
            "arn:aws:sqs:us-east-1:123456789012:x-schedules-dlq".to_string(),
        ),
        ("ResultExpiresSeconds", "3600".to_string()),
        (
            "ApiEndpoint",
            "https://x.execute-api.us-east-1.amazonaws.com".to_string(),
        ),
    ];
    let outputs: Vec<_> = outputs
        .iter()
        .map(|(k, v)| json!({"OutputKey": k, "OutputValue": v}))
        .collect();
    json!({"Stacks": [{"StackName": "x", "Outputs": outputs}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_uses_the_names_of_the_stack_outputs() {
    let provisioned = crate::aws::scratch().await;
    let prefix = provisioned.aws_prefix.clone().unwrap();
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap();
    let mut s = Scratch::new();
    s.aws_prefix = Some("not-provisioned".into());
    let file = s.dir.path().join("stack.json");
    std::fs::write(
        &file,
        describe_stacks(&prefix, endpoint.trim_end_matches('/')).to_string(),
    )
    .unwrap();

    let fan = crate::support::repo().join("examples/fan-out-join/app.json");
    let doc = s
        .sluice(&[
            "--stack-outputs",
            file.to_str().unwrap(),
            "run",
            fan.to_str().unwrap(),
            "--output",
            "json",
        ])
        .await
        .expect(0)
        .json();
    assert_eq!(doc["steps"]["PerRegion"]["items"], 7);
    // The run is in the stack's runs table: the provisioned prefix lists it.
    let listed = provisioned
        .sluice(&["runs", "list", "--output", "json"])
        .await
        .expect(0)
        .json();
    assert_eq!(listed[0]["task_id"], doc["task_id"]);

    // A file missing an output fails naming it (exit 1, no guessing).
    std::fs::write(&file, r#"{"Stacks": [{"Outputs": []}]}"#).unwrap();
    let refused = s
        .sluice(&["--stack-outputs", file.to_str().unwrap(), "runs", "list"])
        .await;
    assert_ne!(refused.code(), 0);
    let stderr = String::from_utf8_lossy(&refused.0.stderr);
    assert!(
        stderr.contains("stack outputs: output ResultExpiresSeconds is missing"),
        "{stderr}"
    );
}
