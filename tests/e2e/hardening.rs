//! The process from the outside: refused runs store nothing, the example leaves the
//! tracked files as they are, a closed stdout pipe ends the CLI quietly, the data
//! directory is private, requests the HTTP parser refuses get JSON errors.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;

use crate::support::{repo, Scratch};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_refused_for_its_params_stores_neither_application_nor_configuration() {
    let s = Scratch::new();
    let dir = s.copy_example("inventory-sync");
    let app = dir.join("app.json").display().to_string();
    let config = dir.join("config.json").display().to_string();
    let refused = s
        .sluice(&["run", &app, "-c", &config, "-p", "loglevel=15"])
        .await
        .expect(2);
    assert!(
        refused.stderr().contains("loglevel"),
        "{}",
        refused.stderr()
    );
    let apps = s.sluice(&["apps", "list"]).await.expect(0);
    assert_eq!(apps.stdout().trim(), "", "nothing stored");
    let configs = s.sluice(&["configs", "list"]).await.expect(0);
    assert_eq!(configs.stdout().trim(), "", "nothing stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_works_on_a_copy_and_leaves_the_shipped_databases_alone() {
    let s = Scratch::new();
    let dir = s.copy_example("inventory-sync");
    let shipped =
        |name: &str| std::fs::read(repo().join("examples/inventory-sync").join(name)).unwrap();
    let app = dir.join("app.json").display().to_string();
    let config = dir.join("config.json").display().to_string();
    // The README's command, run from the directory holding examples/.
    s.sluice(&["run", &app, "-c", &config]).await.expect(0);
    s.sluice(&["run", "inventory_sync"]).await.expect(0);
    for db in ["source.db", "target.db"] {
        assert!(
            std::fs::read(dir.join(db)).unwrap() == shipped(db),
            "{db} was written"
        );
    }
    assert!(dir.join("target.work.db").is_file(), "the working copy");
    let gitignore = std::fs::read_to_string(repo().join(".gitignore")).unwrap();
    assert!(
        gitignore.lines().any(|l| l.trim() == "*.work.db"),
        "git ignores the working copy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_pipe_ends_the_cli_quietly() {
    let s = Scratch::new();
    let app = s.write(
        "app.json",
        r#"{"name": "pipe", "author": "e2e", "steps": [{"id": "A", "type": "echo", "parameters": {"value": 1}}]}"#,
    );
    for _ in 0..3 {
        s.sluice(&["run", app.to_str().unwrap()]).await.expect(0);
    }
    // `sluice runs list | head -0`: the reader is gone before anything is written.
    let mut child = s
        .command(&["runs", "list"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let output = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(output.status.code(), Some(101), "{stderr}");
    assert!(
        output.status.success() || output.status.signal() == Some(libc_sigpipe()),
        "{:?} {stderr}",
        output.status
    );
}

fn libc_sigpipe() -> i32 {
    13
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_is_private() {
    let s = Scratch::new();
    let app = s.write(
        "app.json",
        r#"{"name": "private", "author": "e2e", "steps": [{"id": "A", "type": "echo", "parameters": {"value": 1}}]}"#,
    );
    s.sluice(&["run", app.to_str().unwrap()]).await.expect(0);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&s.data_dir()), 0o700);
    assert_eq!(mode(&s.data_dir().join("outputs")), 0o700);
    assert_eq!(mode(&s.data_dir().join("sluice.db")), 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_secret_key_stops_the_next_run_loudly() {
    let s = Scratch::new();
    let config = s.write(
        "config.json",
        r#"{"name": "keyed", "author": "e2e", "data": [{"name": "tok", "value": "k3y-s3cret", "encrypted": true}]}"#,
    );
    let app = s.write(
        "app.json",
        r#"{"name": "keyed", "author": "e2e", "configuration": "keyed", "steps": [{"id": "A", "type": "echo", "parameters": {"value": "${config.tok}"}}]}"#,
    );
    s.sluice(&["run", app.to_str().unwrap(), "-c", config.to_str().unwrap()])
        .await
        .expect(0);
    std::fs::remove_file(s.data_dir().join("secret.key")).unwrap();
    let refused = s.sluice(&["run", "keyed"]).await;
    assert_ne!(refused.code(), 0);
    assert!(
        refused.stderr().contains("secret.key"),
        "{}",
        refused.stderr()
    );
    assert!(refused.stderr().contains("missing"), "{}", refused.stderr());
    assert!(
        !s.data_dir().join("secret.key").exists(),
        "no new key was made"
    );
}

/// What `sluice serve` answers to `request` sent as raw bytes over TCP: the status line,
/// the content type and the body as JSON (`Null` when it is not JSON).
async fn raw_answer(base: &str, request: Vec<u8>) -> (String, String, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = base.trim_start_matches("http://");
    let (mut reader, mut writer) = tokio::net::TcpStream::connect(address)
        .await
        .unwrap()
        .into_split();
    // Sent alongside: the server may refuse the request before reading all of it.
    let sender = tokio::spawn(async move {
        let _ = writer.write_all(&request).await;
        writer
    });
    let mut wire = Vec::new();
    reader.read_to_end(&mut wire).await.unwrap();
    drop(sender.await);
    let text = String::from_utf8_lossy(&wire);
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete answer");
    let mut lines = head.lines();
    let status_line = lines.next().unwrap().to_string();
    let content_type = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        .map(|(_, value)| value.trim().to_string())
        .unwrap_or_default();
    let body = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    (status_line, content_type, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_the_http_parser_refuses_get_json_errors_from_serve() {
    let s = Scratch::new();
    let serve = s.serve().await;
    let get = |target: String, headers: String| {
        format!("GET {target} HTTP/1.1\r\nhost: sluice\r\nconnection: close\r\n{headers}\r\n")
            .into_bytes()
    };
    let long = |kib: usize| format!("/api/v1/tasks?application={}", "a".repeat(kib * 1024));
    let cases = [
        (
            get(long(70), String::new()),
            "414 URI Too Long",
            "uri_too_long",
        ),
        (
            get(long(200), String::new()),
            "414 URI Too Long",
            "uri_too_long",
        ),
        (
            get(
                "/healthcheck".into(),
                format!("x-padding: {}\r\n", "p".repeat(600 * 1024)),
            ),
            "431 Request Header Fields Too Large",
            "headers_too_large",
        ),
        (
            b"GARBAGE\r\n\r\n".to_vec(),
            "400 Bad Request",
            "bad_request",
        ),
    ];
    for (request, status, code) in cases {
        let (status_line, content_type, body) = raw_answer(&serve.base, request).await;
        assert_eq!(status_line, format!("HTTP/1.1 {status}"), "{body}");
        assert_eq!(content_type, "application/json", "{status_line}");
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(body["error"]["message"].is_string(), "{body}");
    }
    // The server goes on answering.
    let (status_line, _, body) =
        raw_answer(&serve.base, get("/healthcheck".into(), String::new())).await;
    assert_eq!(status_line, "HTTP/1.1 200 OK", "{body}");
    assert_eq!(serve.stop().await, 0);
}
