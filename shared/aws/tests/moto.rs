//! The adapters against moto (`scripts/test.sh` starts it and exports
//! `AWS_ENDPOINT_URL`): the port semantics the embedded adapters' tests pin down.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use sluice_aws::{AwsEnvironment, AwsSettings};
use sluice_core::engine::Plan;
use sluice_core::model::{Application, Configuration};
use sluice_core::ports::{
    Cache, DefinitionStore, OutputKey, Queue, RunQuery, RunStore, SecretStore, StoreError,
    TaskMessage,
};

/// A fresh deployment with its own prefix on the moto server.
async fn env() -> AwsEnvironment {
    assert!(
        std::env::var("AWS_ENDPOINT_URL").is_ok(),
        "AWS_ENDPOINT_URL is not set: these tests need a moto server (scripts/test.sh starts one)"
    );
    let prefix = format!("t{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    let env = AwsEnvironment::load(AwsSettings::with_prefix(&prefix)).await;
    sluice_aws::provision::provision(&env.clients, &env.settings, &["echo".to_string()])
        .await
        .unwrap();
    env
}

fn app() -> Application {
    serde_json::from_value(json!({"name": "a", "author": "me", "steps": [
        {"id": "A", "type": "echo", "parameters": {"value": 1}}]}))
    .unwrap()
}

#[tokio::test]
async fn runs_are_created_once_and_updated_by_compare_and_swap() {
    let env = env().await;
    let store = &env.store;
    let plan = Plan::new(app());
    let now = Utc::now();
    let mut run = plan.new_run(
        sluice_core::model::new_run_id(),
        now,
        now + chrono::Duration::days(1),
    );
    assert!(store.create_run(&run, &plan.app).await.unwrap());
    assert!(
        !store.create_run(&run, &plan.app).await.unwrap(),
        "creating is idempotent"
    );
    assert_eq!(store.get_run(&run.id).await.unwrap().unwrap(), run);
    assert_eq!(
        store.get_snapshot(&run.id).await.unwrap().unwrap(),
        plan.app
    );

    run.version = 1;
    run.state = sluice_core::model::RunState::Running;
    store.update_run(&run, 0).await.unwrap();
    assert_eq!(store.get_run(&run.id).await.unwrap().unwrap().version, 1);
    // A second writer that read version 0 loses.
    let mut stale = run.clone();
    stale.version = 1;
    assert!(matches!(
        store.update_run(&stale, 0).await,
        Err(StoreError::Conflict)
    ));
    run.version = 2;
    store.update_run(&run, 1).await.unwrap();
    assert_eq!(store.get_run(&run.id).await.unwrap().unwrap(), run);
    assert_eq!(store.unfinished_runs().await.unwrap(), vec![run.id.clone()]);

    let listed = store
        .list_runs(&RunQuery {
            application: Some("a".into()),
            ..RunQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    let all = store.list_runs(&RunQuery::default()).await.unwrap();
    assert_eq!(all[0].id, run.id);
}

#[tokio::test]
async fn outputs_logs_and_cache_with_expiry_and_s3_spill() {
    let env = env().await;
    let store = &env.store;
    let key = OutputKey {
        run_id: "isapp-x".into(),
        step_id: "S".into(),
        unit: 0,
    };
    let later = Utc::now() + chrono::Duration::days(1);
    store
        .put_output(&key, &json!({"a": 1}), later)
        .await
        .unwrap();
    assert_eq!(store.get_output(&key).await.unwrap(), Some(json!({"a": 1})));
    // Expired items are absent, whatever DynamoDB (or moto) still holds.
    let gone = OutputKey {
        unit: 1,
        ..key.clone()
    };
    store
        .put_output(&gone, &json!(1), Utc::now() - chrono::Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(store.get_output(&gone).await.unwrap(), None);
    // Too large for an item even deflated: S3.
    let big: String = (0..400_000u64)
        .map(|i| format!("{:x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40))
        .collect();
    let large = OutputKey {
        unit: 2,
        ..key.clone()
    };
    store.put_output(&large, &json!(big), later).await.unwrap();
    assert_eq!(store.get_output(&large).await.unwrap(), Some(json!(big)));

    let entry = |m: &str| sluice_core::model::LogEntry {
        ts: Utc::now(),
        level: sluice_core::model::LogLevel::Info,
        step: "S".into(),
        attempt: 1,
        message: m.into(),
    };
    store
        .append_logs("isapp-x", &[entry("one"), entry("two")], later)
        .await
        .unwrap();
    store
        .append_logs("isapp-x", &[entry("three")], later)
        .await
        .unwrap();
    let logs = store.get_logs("isapp-x", 0, 0).await.unwrap();
    assert_eq!(
        logs.iter()
            .map(|(_, e)| e.message.as_str())
            .collect::<Vec<_>>(),
        ["one", "two", "three"]
    );
    let after_first = store.get_logs("isapp-x", logs[0].0, 0).await.unwrap();
    assert_eq!(after_first.len(), 2, "the cursor resumes inside a batch");

    store.put("k", &json!({"v": 1}), None).await.unwrap();
    assert_eq!(store.get("k").await.unwrap(), Some(json!({"v": 1})));
    store
        .put("short", &json!(1), Some(Duration::from_millis(300)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        store.get("short").await.unwrap(),
        None,
        "expired cache entries are absent"
    );
    assert!(!store.delete("short").await.unwrap());
    assert!(store.delete("k").await.unwrap());
    assert_eq!(store.get("k").await.unwrap(), None);
}

#[tokio::test]
async fn definitions_and_secrets_one_secret_per_configuration() {
    let env = env().await;
    let config: Configuration = serde_json::from_value(json!({"name": "c1", "data": [
        {"name": "host", "value": "h"}, {"name": "token", "value": "s3cr3t", "encrypted": true}]}))
    .unwrap();
    env.store.put_configuration(&config).await.unwrap();
    let stored = env.store.get_configuration("c1").await.unwrap().unwrap();
    assert_eq!(
        stored.data[1].value,
        serde_json::Value::Null,
        "the table never holds a secret"
    );
    let secrets = BTreeMap::from([("token".to_string(), json!("s3cr3t"))]);
    env.secrets.put_secrets("c1", &secrets).await.unwrap();
    assert_eq!(env.secrets.get_secrets("c1").await.unwrap(), secrets);
    env.secrets
        .put_secrets("c1", &BTreeMap::from([("token".to_string(), json!("new"))]))
        .await
        .unwrap();
    assert_eq!(env.secrets.get_secrets("c1").await.unwrap()["token"], "new");
    env.secrets.delete_secrets("c1").await.unwrap();
    assert!(env.secrets.get_secrets("c1").await.unwrap().is_empty());
    env.secrets.delete_secrets("c1").await.unwrap();

    env.store.put_application(&app()).await.unwrap();
    assert_eq!(env.store.list_applications().await.unwrap().len(), 1);
    assert!(env.store.delete_application("a").await.unwrap());
    assert!(!env.store.delete_application("a").await.unwrap());
}

#[tokio::test]
async fn queue_receive_ack_release_and_dead_letter_after_five_receives() {
    let env = env().await;
    let q = env.settings.queue_for("echo");
    let message = TaskMessage {
        run_id: "r".into(),
        step_id: "S".into(),
        unit: 0,
        attempt: 1,
    };
    env.queue.send(&q, &message, Duration::ZERO).await.unwrap();
    let got = env
        .queue
        .receive(&q, 10, Duration::from_secs(30), Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message, message);
    assert_eq!(got[0].receive_count, 1);
    env.queue
        .release(&q, &got[0].receipt, Duration::ZERO)
        .await
        .unwrap();
    let mut count = 1;
    for _ in 0..4 {
        let again = env
            .queue
            .receive(&q, 10, Duration::from_secs(30), Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(again.len(), 1);
        count = again[0].receive_count;
        env.queue
            .release(&q, &again[0].receipt, Duration::ZERO)
            .await
            .unwrap();
    }
    assert_eq!(count, 5);
    // The sixth receive finds it moved to the dead-letter queue.
    let none = env
        .queue
        .receive(&q, 10, Duration::from_secs(30), Duration::from_secs(1))
        .await
        .unwrap();
    assert!(none.is_empty());
    let dlq = sluice_core::ports::dead_letter_queue(&q);
    let dead = env
        .queue
        .receive(&dlq, 10, Duration::from_secs(30), Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    env.queue.ack(&dlq, &dead[0].receipt).await.unwrap();
}

/// The Lambda handler on SQS events: a duplicate delivery never runs a step twice, and a
/// dead-lettered message fails its step with a clear error.
#[tokio::test]
async fn lambda_batches_duplicates_and_dead_letters() {
    use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
    let env = env().await;
    let runtime = env.runtime(sluice_steps_registry());
    let app: Application = serde_json::from_value(json!({"name": "dup", "author": "me", "steps": [
        {"id": "A", "type": "echo", "parameters": {"value": 1, "log": "A executes"}},
        {"id": "B", "type": "echo", "depends_on": ["A"], "parameters": {"value": 2}}]}))
    .unwrap();
    env.store.put_application(&app).await.unwrap();
    let run = runtime
        .start(sluice_runtime::StartRequest {
            application: "dup".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let queue = env.settings.queue_for("echo");
    let arn = format!("arn:aws:sqs:us-east-1:123456789012:{queue}");
    let record = |body: &TaskMessage, id: &str, arn: &str| {
        let mut m = SqsMessage::default();
        m.message_id = Some(id.into());
        m.body = Some(serde_json::to_string(body).unwrap());
        m.event_source_arn = Some(arn.into());
        m.attributes
            .insert("ApproximateReceiveCount".into(), "1".into());
        m
    };
    let a = TaskMessage {
        run_id: run.id.clone(),
        step_id: "A".into(),
        unit: 0,
        attempt: 1,
    };
    // The same message twice in one batch, as at-least-once delivery allows.
    let mut event = SqsEvent::default();
    event.records = vec![record(&a, "m1", &arn), record(&a, "m2", &arn)];
    let response =
        sluice_aws::lambda::handle_batch(runtime.clone(), env.queue.clone(), event).await;
    let after = runtime.get_run(&run.id).await.unwrap();
    let step_a = after.step("A").unwrap();
    assert_eq!(step_a.state, sluice_core::model::StepState::Success);
    assert_eq!(step_a.attempts, 1, "ran once");
    // A busy duplicate may be asked to retry later; it never runs again.
    assert!(response.batch_item_failures.len() <= 1);
    let logs = runtime.logs(&after, 0, 0).await.unwrap();
    for message in ["Start A", "A executes"] {
        assert_eq!(
            logs.iter().filter(|(_, e)| e.message == message).count(),
            1,
            "one execution logged: {logs:?}"
        );
    }

    // B's message is dead-lettered: B fails, the run ends in failure.
    let b = TaskMessage {
        run_id: run.id.clone(),
        step_id: "B".into(),
        unit: 0,
        attempt: 1,
    };
    let mut event = SqsEvent::default();
    event.records = vec![record(&b, "m3", &format!("{arn}-dlq"))];
    let response =
        sluice_aws::lambda::handle_batch(runtime.clone(), env.queue.clone(), event).await;
    assert!(response.batch_item_failures.is_empty());
    let ended = runtime.get_run(&run.id).await.unwrap();
    assert_eq!(ended.state, sluice_core::model::RunState::Failure);
    let error = ended.step("B").unwrap().error.clone().unwrap();
    assert!(error.contains("dead-lettered"), "{error}");
}

/// The `start` function as EventBridge Scheduler invokes it: a retried tick starts one run
/// and counts it once.
#[tokio::test]
async fn start_handler_fires_each_tick_once() {
    use sluice_core::ports::ScheduleStore;
    let env = env().await;
    let runtime = env.runtime(sluice_steps_registry());
    env.store.put_application(&app()).await.unwrap();
    let schedule: sluice_core::model::Schedule = serde_json::from_value(json!({
        "application_id": "a", "entry_id": "nightly",
        "schedule": {"schedule_type": "crontab", "schedule_info": {"minute": "0", "hour": "2"}}}))
    .unwrap();
    env.store.put_schedule(&schedule).await.unwrap();
    let tick = chrono::DateTime::parse_from_rfc3339("2026-01-02T02:00:00Z")
        .unwrap()
        .to_utc();
    let stats = env.schedule_stats();
    let first =
        sluice_aws::lambda::fire_schedule(&runtime, &env.store, stats.as_ref(), "nightly", tick)
            .await
            .unwrap();
    let again =
        sluice_aws::lambda::fire_schedule(&runtime, &env.store, stats.as_ref(), "nightly", tick)
            .await
            .unwrap();
    assert!(first.counted && !again.counted);
    assert_eq!(
        first.run_id, again.run_id,
        "a retried invocation finds the same run"
    );
    let s = stats.get_stats("nightly").await.unwrap().unwrap();
    assert_eq!(s.total_runs, 1);
    assert_eq!(s.last_run.unwrap().run_id, first.run_id.unwrap());
    assert_eq!(s.last_tick, Some(tick));
    // The schedule itself: created in EventBridge Scheduler with the translated expression.
    let scheduler = sluice_aws::EventBridgeScheduler::new(
        env.clients.scheduler.clone(),
        env.settings.schedule_group.clone(),
        "arn:aws:lambda:us-east-1:123456789012:function:start",
        "arn:aws:iam::123456789012:role/scheduler",
    );
    use sluice_core::ports::Scheduler;
    scheduler.upsert(&schedule).await.unwrap();
    scheduler.upsert(&schedule).await.unwrap();
    let got = env
        .clients
        .scheduler
        .get_schedule()
        .name("nightly")
        .group_name(&env.settings.schedule_group)
        .send()
        .await
        .unwrap();
    assert_eq!(got.schedule_expression(), Some("cron(0 2 * * ? *)"));
    scheduler.remove("nightly").await.unwrap();
    scheduler.remove("nightly").await.unwrap();
}

fn sluice_steps_registry() -> sluice_core::step::StepRegistry {
    sluice_steps::builtin_registry()
}

/// Builds the three shapes of docs/cost.md with `n` echo steps.
fn shape(kind: &str, n: usize) -> Application {
    let steps: Vec<serde_json::Value> = match kind {
        "chain" => (0..n)
            .map(|i| {
                if i == 0 {
                    json!({"id": "S0", "type": "echo", "parameters": {"value": {"i": 0}}})
                } else {
                    json!({"id": format!("S{i}"), "type": "echo", "depends_on": [format!("S{}", i - 1)],
                           "parameters": {"value": {"i": format!("${{S{}.i}}", i - 1)}}})
                }
            })
            .collect(),
        "join" => {
            let mut steps: Vec<_> = (0..n - 1)
                .map(|i| json!({"id": format!("P{i}"), "type": "echo", "parameters": {"value": i}}))
                .collect();
            let deps: Vec<String> = (0..n - 1).map(|i| format!("P{i}")).collect();
            steps.push(json!({"id": "J", "type": "echo", "depends_on": deps, "parameters": {"value": "${P0}"}}));
            steps
        }
        _ => vec![
            json!({"id": "Items", "type": "echo", "parameters": {"value": (0..n - 1).collect::<Vec<_>>()}}),
            json!({"id": "Each", "type": "echo", "depends_on": ["Items"],
                   "for_each": {"items": "${Items}", "max_concurrency": 10}, "parameters": {"value": "${item}"}}),
        ],
    };
    serde_json::from_value(json!({"name": format!("{kind}{n}"), "author": "me", "steps": steps}))
        .unwrap()
}

/// Runs an application to its end the way Lambda does (the handler per message; the
/// event source mapping's receives and deletes are not counted here) and returns the
/// requests the handler made.
async fn requests_of_run(env: &AwsEnvironment, app: Application) -> BTreeMap<String, u64> {
    let runtime = env.runtime(sluice_steps_registry());
    env.store.put_application(&app).await.unwrap();
    let queue = env.settings.queue_for("echo");
    env.queue.url(&queue).await.unwrap();
    env.clients.requests.reset();
    let run = runtime
        .start(sluice_runtime::StartRequest {
            application: app.name.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut polling: BTreeMap<String, u64> = BTreeMap::new();
    for _ in 0..200 {
        let deliveries = env
            .queue
            .receive(&queue, 10, Duration::from_secs(60), Duration::ZERO)
            .await
            .unwrap();
        for d in deliveries {
            let disposition = runtime
                .handle_message(&d.message, d.receive_count, false)
                .await;
            assert_eq!(disposition, sluice_runtime::Disposition::Ack);
            env.queue.ack(&queue, &d.receipt).await.unwrap();
        }
        // The driver's terminal-state polling is not the handler's: uncount it.
        let before = env.clients.requests.snapshot();
        let state = env.store.get_run(&run.id).await.unwrap().unwrap().state;
        for (op, n) in env.clients.requests.snapshot() {
            *polling.entry(op.clone()).or_default() += n - before.get(&op).unwrap_or(&0);
        }
        if state.is_terminal() {
            break;
        }
    }
    let mut counts = env.clients.requests.snapshot();
    for (op, n) in counts.iter_mut() {
        *n -= polling.get(op).unwrap_or(&0);
        // The event source mapping's receives and deletes are priced separately.
        if matches!(op.as_str(), "sqs:ReceiveMessage" | "sqs:DeleteMessage") {
            *n = 0;
        }
    }
    counts.retain(|_, n| *n > 0);
    assert!(
        env.store.get_run(&run.id).await.unwrap().unwrap().state
            == sluice_core::model::RunState::Success
    );
    counts
}

/// Measures the AWS requests and DynamoDB capacity units per step (docs/cost.md): the
/// difference between an n-step and a 1-step application, over n - 1, priced at the
/// us-east-1 list prices. The price is a deterministic function of the requests the
/// handler makes, so the $2.50 target is asserted, for small and larger applications.
#[tokio::test]
async fn requests_per_step() {
    use sluice_aws::capacity::{READ_UNITS, WRITE_UNITS};
    let env = env().await;
    let single = requests_of_run(&env, shape("chain", 1)).await;
    let mut report = String::new();
    for (kind, n) in [
        ("chain", 11),
        ("join", 11),
        ("for_each", 11),
        ("chain", 31),
        ("chain", 61),
        ("chain", 101),
    ] {
        let counts = requests_of_run(&env, shape(kind, n)).await;
        let per_step = |op: &str| {
            (*counts.get(op).unwrap_or(&0) as f64 - *single.get(op).unwrap_or(&0) as f64)
                / (n - 1) as f64
        };
        let mut requests = 0.0;
        let mut line = format!("{kind} of {n}:");
        for op in counts.keys() {
            line.push_str(&format!(" {op}={:.2}", per_step(op)));
            if !op.ends_with("CapacityUnits") {
                requests += per_step(op);
            }
        }
        // Per million steps: write units $0.625, read units $0.125, SQS requests $0.40
        // (the sends, plus a receive and a delete per 10-message batch), Lambda $0.20 per
        // million invocations (one per batch) and ~35 ms at 128 MB arm64.
        let price = per_step(WRITE_UNITS) * 0.625
            + per_step(READ_UNITS) * 0.125
            + (per_step("sqs:SendMessage") + per_step("sqs:SendMessageBatch") + 0.2) * 0.40
            + 0.1 * 0.20
            + 0.06;
        report.push_str(&format!(
            "{line} requests={requests:.2} price=${price:.2}/M steps\n"
        ));
        // Guards against regressions.
        assert!(
            requests <= 6.0,
            "{kind}: {requests} requests per step\n{report}"
        );
        assert!(
            n > 31 || price <= 2.50,
            "{kind}: ${price:.2} per million steps\n{report}"
        );
    }
    println!("per-step requests (single-step run: {single:?})\n{report}");
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
    use sluice_aws::api::{api_router, handle_api_request, ClaimNames};
    use sluice_core::model::{OwnerType, Role, RoleBinding};
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
