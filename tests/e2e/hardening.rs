//! The process from the outside: refused runs store nothing, the example leaves the
//! tracked files as they are, a closed stdout pipe ends the CLI quietly, the data
//! directory is private.

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
