//! `ssh_command` against a real OpenSSH server on 127.0.0.1, started by
//! `scripts/start-sshd.sh` (`eval "$(scripts/start-sshd.sh)"`; `scripts/test.sh` does).
//! Without it these tests fail, naming the script.

use std::sync::Arc;

use serde_json::{json, Value};
use sluice_core::step::StepError;
use sluice_core::validate::{parse_application, StepCatalog};
use sluice_steps::{SshCommand, SSH_MAX_STREAM_BYTES};

use super::{context, run, run_in, MemoryCache};

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: start the test SSH server with `eval \"$(scripts/start-sshd.sh)\"`"
        )
    })
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// Key-authenticated parameters running `command`.
fn params(command: &str) -> Value {
    json!({
        "host": var("SLUICE_TEST_SSH_HOST"),
        "port": var("SLUICE_TEST_SSH_PORT").parse::<u16>().unwrap(),
        "user": var("SLUICE_TEST_SSH_USER"),
        "private_key": read(&var("SLUICE_TEST_SSH_KEY")),
        "known_hosts": var("SLUICE_TEST_SSH_KNOWN_HOSTS"),
        "command": command,
    })
}

fn with(mut params: Value, extra: Value) -> Value {
    for (k, v) in extra.as_object().unwrap() {
        params[k] = v.clone();
    }
    params
}

async fn ok(parameters: Value) -> Value {
    match run(&SshCommand::new(), parameters).await.0 {
        Ok(output) => {
            assert!(output.warnings.is_empty(), "{:?}", output.warnings);
            output.value
        }
        Err(e) => panic!("step failed: {e:?}"),
    }
}

async fn err(parameters: Value) -> StepError {
    match run(&SshCommand::new(), parameters).await.0 {
        Ok(output) => panic!("step succeeded: {output:?}"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn runs_a_command_and_returns_exit_code_stdout_and_stderr() {
    let out = ok(params("echo hello; echo oops >&2")).await;
    assert_eq!(
        out,
        json!({"exit_code": 0, "stdout": "hello\n", "stderr": "oops\n"})
    );
}

#[tokio::test]
async fn stdin_and_env_carry_values_without_becoming_shell_input() {
    let hostile = "it's $(touch /tmp/pwned) `id`; \"quoted\"\nline two";
    let out = ok(with(params("cat"), json!({"stdin": hostile}))).await;
    assert_eq!(out["stdout"], hostile);

    let out = ok(with(
        params("printf '%s|%s' \"$SLUICE_GREETING\" \"$SLUICE_COUNT\""),
        json!({"env": {"SLUICE_GREETING": hostile, "SLUICE_COUNT": 3}}),
    ))
    .await;
    assert_eq!(out["stdout"], format!("{hostile}|3"));

    // A name the server does not accept fails, saying what the server needs.
    match err(with(params("true"), json!({"env": {"OTHER_NAME": "x"}}))).await {
        StepError::Fatal(message) => {
            assert!(message.contains("AcceptEnv OTHER_NAME"), "{message}")
        }
        other => panic!("expected a fatal error, got {other:?}"),
    }
    assert!(matches!(
        err(with(params("true"), json!({"env": {"1BAD": "x"}}))).await,
        StepError::Fatal(m) if m.contains("invalid environment variable name \"1BAD\"")
    ));
}

#[tokio::test]
async fn exit_codes_are_judged_by_expected_exit_codes() {
    match err(params("echo bad input >&2; exit 3")).await {
        StepError::Retryable(message) => {
            assert!(
                message.contains("the command exited with 3 (expected [0])"),
                "{message}"
            );
            assert!(message.contains("stderr: bad input"), "{message}");
        }
        other => panic!("expected a retryable error, got {other:?}"),
    }
    let out = ok(with(
        params("echo partial; exit 3"),
        json!({"expected_exit_codes": [0, 3]}),
    ))
    .await;
    assert_eq!(out["exit_code"], 3);
    assert_eq!(out["stdout"], "partial\n");
}

#[tokio::test]
async fn unknown_and_changed_host_keys_are_refused_unless_explicitly_allowed() {
    let port = var("SLUICE_TEST_SSH_PORT");
    let other_key = read(&format!("{}.pub", var("SLUICE_TEST_SSH_OTHER_KEY")));
    let other_key: Vec<&str> = other_key.split_whitespace().take(2).collect();
    let other_key = other_key.join(" ");

    // Another key listed for this host: changed.
    let changed = format!("[127.0.0.1]:{port} {other_key}");
    match err(with(params("true"), json!({"known_hosts": changed}))).await {
        StepError::Fatal(message) => {
            assert!(
                message.contains("does not match \"known_hosts\""),
                "{message}"
            );
            assert!(message.contains("SHA256:"), "{message}");
        }
        other => panic!("expected a fatal error, got {other:?}"),
    }
    // The right key, but for another host (or the default port): unknown.
    let real_key = var("SLUICE_TEST_SSH_KNOWN_HOSTS");
    let real_key = real_key.split_once(' ').unwrap().1;
    for known in [
        format!("other.example {real_key}"),
        format!("127.0.0.1 {real_key}"),
    ] {
        match err(with(params("true"), json!({"known_hosts": known}))).await {
            StepError::Fatal(message) => {
                assert!(message.contains("is not in \"known_hosts\""), "{message}")
            }
            other => panic!("expected a fatal error, got {other:?}"),
        }
    }
    // Revoked.
    let revoked = format!(
        "@revoked [127.0.0.1]:{port} {real_key}\n{}",
        var("SLUICE_TEST_SSH_KNOWN_HOSTS")
    );
    assert!(matches!(
        err(with(params("true"), json!({"known_hosts": revoked}))).await,
        StepError::Fatal(m) if m.contains("is revoked")
    ));
    // Several lines, comments and a wildcard pattern: the right one is found.
    let many =
        format!("# ours\nother.example {other_key}\n[127.0.0.?]:{port} {real_key} comment\n");
    assert_eq!(
        ok(with(params("echo ok"), json!({"known_hosts": many}))).await["stdout"],
        "ok\n"
    );
    // Explicitly insecure: any key.
    let mut insecure = with(
        params("echo ok"),
        json!({"insecure_accept_any_host_key": true}),
    );
    insecure.as_object_mut().unwrap().remove("known_hosts");
    assert_eq!(ok(insecure).await["stdout"], "ok\n");
    // Neither: refused before connecting.
    let mut neither = params("true");
    neither.as_object_mut().unwrap().remove("known_hosts");
    assert!(matches!(
        err(neither).await,
        StepError::Fatal(m) if m.contains("\"known_hosts\" is required")
    ));
    assert!(matches!(
        err(with(params("true"), json!({"known_hosts": "not a key line"}))).await,
        StepError::Fatal(m) if m.contains("entry 1 is not an OpenSSH known_hosts line")
    ));
}

#[tokio::test]
async fn a_key_the_server_does_not_know_is_refused_and_no_secret_is_shown() {
    let other = read(&var("SLUICE_TEST_SSH_OTHER_KEY"));
    let (result, logs) = run(
        &SshCommand::new(),
        with(params("true"), json!({"private_key": other.clone()})),
    )
    .await;
    let message = match result {
        Err(StepError::Fatal(message)) => message,
        other => panic!("expected a fatal error, got {other:?}"),
    };
    assert!(
        message.contains(&format!(
            "refused to log in user \"{}\" (tried private_key)",
            var("SLUICE_TEST_SSH_USER")
        )),
        "{message}"
    );
    // Neither the key nor any line of it appears (the runtime's redactor is not
    // relied on here: this context knows no secret).
    let body_line = other.lines().nth(1).unwrap();
    assert!(!message.contains(body_line), "{message}");
    for entry in &logs {
        assert!(!entry.message.contains(body_line), "{entry:?}");
    }
    assert!(matches!(
        err(with(params("true"), json!({"private_key": "-----BEGIN OPENSSH PRIVATE KEY-----\nnonsense\n-----END OPENSSH PRIVATE KEY-----\n"}))).await,
        StepError::Fatal(m) if m.contains("\"private_key\" is not a usable private key")
    ));
}

#[tokio::test]
async fn password_authentication_and_a_wrong_password() {
    let password = var("SLUICE_TEST_SSH_PASSWORD");
    assert!(
        !password.is_empty(),
        "the test SSH server has no password user: start scripts/start-sshd.sh as root"
    );
    let mut by_password = with(params("id -un"), json!({"password": password.clone()}));
    by_password.as_object_mut().unwrap().remove("private_key");
    let ctx = context(Arc::new(MemoryCache::default()), &[]);
    let (result, logs) = run_in(&SshCommand::new(), by_password.clone(), &ctx).await;
    let output = result.unwrap();
    assert_eq!(
        output.value["stdout"],
        format!("{}\n", var("SLUICE_TEST_SSH_USER"))
    );
    let wrong = "not-the-password-42";
    let (result, wrong_logs) = run(
        &SshCommand::new(),
        with(by_password, json!({"password": wrong})),
    )
    .await;
    let message = match result {
        Err(StepError::Fatal(message)) => message,
        other => panic!("expected a fatal error, got {other:?}"),
    };
    assert!(message.contains("(tried password)"), "{message}");
    // Neither password reaches the output, the error or the log, even unredacted.
    for text in logs
        .iter()
        .chain(&wrong_logs)
        .map(|e| e.message.clone())
        .chain([message, output.value.to_string()])
    {
        assert!(!text.contains(&password) && !text.contains(wrong), "{text}");
    }
}

#[tokio::test]
async fn long_output_is_cut_at_the_cap_with_a_warning() {
    let too_much = SSH_MAX_STREAM_BYTES + 1000;
    let (result, _) = run(
        &SshCommand::new(),
        params(&format!("head -c {too_much} /dev/zero | tr '\\0' a")),
    )
    .await;
    let output = result.unwrap();
    assert_eq!(
        output.value["stdout"].as_str().unwrap().len(),
        SSH_MAX_STREAM_BYTES
    );
    assert_eq!(
        output.warnings,
        [format!(
            "stdout was {too_much} bytes; the output keeps the first {SSH_MAX_STREAM_BYTES}"
        )]
    );
}

#[tokio::test]
async fn a_command_running_past_the_timeout_fails_retryably() {
    match err(with(params("sleep 20"), json!({"timeout_seconds": 1}))).await {
        StepError::Retryable(message) => {
            assert!(message.contains("timed out after 1 s"), "{message}")
        }
        other => panic!("expected a retryable error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_closed_port_is_retryable() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    assert!(matches!(
        err(with(params("true"), json!({"port": port}))).await,
        StepError::Retryable(m) if m.contains("cannot connect to 127.0.0.1:")
    ));
}

fn problems(parameters: Value) -> Vec<String> {
    let doc = json!({"name": "probe", "author": "tests", "steps": [
        {"id": "S", "type": "ssh_command", "parameters": parameters}
    ]});
    let catalog = StepCatalog::new(&sluice_steps::builtin_registry());
    match parse_application(&doc.to_string(), &catalog) {
        Ok(_) => Vec::new(),
        Err(invalid) => invalid.issues.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn a_reference_in_the_command_is_refused_by_validation() {
    let base = json!({
        "host": "${config.host}", "user": "ops", "password": "${config.ssh_password}",
        "known_hosts": "${config.known_hosts}",
    });
    let refused = problems(with(
        base.clone(),
        json!({"command": "restart ${config.service}"}),
    ));
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        refused[0].starts_with("steps[0].parameters.command: must not contain ${…} references"),
        "{refused:?}"
    );
    assert!(refused[0].contains("\"env\""), "{refused:?}");
    // Values travel in env and stdin.
    assert_eq!(
        problems(with(
            base.clone(),
            json!({"command": "restart \"$SERVICE\"", "env": {"SERVICE": "${config.service}"}, "stdin": "${config.payload}"})
        )),
        Vec::<String>::new()
    );
    // Host key checking needs known_hosts, unless explicitly off.
    let mut without = with(base, json!({"command": "uptime"}));
    without.as_object_mut().unwrap().remove("known_hosts");
    assert_eq!(
        problems(without.clone()),
        ["steps[0].parameters: missing required field \"known_hosts\""]
    );
    assert_eq!(
        problems(with(without, json!({"insecure_accept_any_host_key": true}))),
        Vec::<String>::new()
    );
}
