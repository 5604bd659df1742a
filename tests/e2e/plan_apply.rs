//! Definitions as code: `sluice plan`, `sluice apply` and `sluice export` on the data
//! directory and through a server: idempotence, all-or-nothing, `--prune`, export then
//! apply changing nothing, and an encrypted value never printed.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::support::{Done, Scratch};

const SECRET: &str = "plan-apply-hunter2";

fn write(dir: &Path, name: &str, doc: &Value) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, serde_json::to_string_pretty(doc).unwrap()).unwrap();
}

fn app(name: &str, value: Value) -> Value {
    json!({"name": name, "author": "e2e", "configuration": "crm", "steps": [
        {"id": "A", "type": "echo", "parameters": {"value": value, "log": "to ${config.url}"}}
    ]})
}

fn config() -> Value {
    json!({"name": "crm", "data": [
        {"name": "url", "value": "https://crm.example"},
        {"name": "password", "value": SECRET, "encrypted": true}
    ]})
}

fn schedule(id: &str, app: &str, params: Value) -> Value {
    json!({"application_id": app, "entry_id": id, "params": params, "enabled": false,
        "schedule": {"schedule_type": "frequency", "schedule_info": {"run_every": 3600}}})
}

/// A directory with a configuration (one encrypted value), an application and a
/// schedule, in sub-directories.
fn definitions(s: &Scratch, name: &str) -> PathBuf {
    let dir = s.path().join(name);
    write(&dir, "configurations/crm.json", &config());
    write(&dir, "apps/sync.json", &app("sync", json!(1)));
    write(
        &dir,
        "schedules/nightly.json",
        &schedule("nightly", "sync", json!({})),
    );
    dir
}

fn arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn assert_no_secret(done: &Done) {
    assert!(!done.stdout().contains(SECRET), "{}", done.stdout());
    assert!(!done.stderr().contains(SECRET), "{}", done.stderr());
}

async fn stored_apps(s: &Scratch) -> String {
    s.sluice(&["apps", "list", "--hidden"])
        .await
        .expect(0)
        .stdout()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_apply_then_apply_again_changes_nothing() {
    let s = Scratch::new();
    let dir = definitions(&s, "defs");

    let planned = s.sluice(&["plan", arg(&dir)]).await.expect(0);
    assert_no_secret(&planned);
    let out = planned.stdout();
    assert!(out.contains("+ create configuration crm"), "{out}");
    assert!(out.contains("+ create application sync"), "{out}");
    assert!(out.contains("+ create schedule nightly"), "{out}");
    assert!(
        out.contains("Plan: 3 to create, 0 to change, 0 to delete, 0 unchanged."),
        "{out}"
    );
    // A plan writes nothing.
    assert_eq!(stored_apps(&s).await, "");

    let applied = s.sluice(&["apply", arg(&dir)]).await.expect(0);
    assert_no_secret(&applied);
    assert!(applied
        .stdout()
        .contains("Applied: 3 created, 0 changed, 0 deleted."));
    assert!(stored_apps(&s).await.contains("sync"));
    assert!(s
        .sluice(&["schedules", "list"])
        .await
        .expect(0)
        .stdout()
        .contains("nightly"));

    let again = s.sluice(&["apply", arg(&dir)]).await.expect(0);
    assert!(
        again
            .stdout()
            .contains("no changes (3 definitions up to date)"),
        "{}",
        again.stdout()
    );

    // A change shows its diff; the encrypted value still counts by presence only.
    write(&dir, "apps/sync.json", &app("sync", json!(2)));
    let mut changed = config();
    changed["data"][1]["value"] = json!(format!("{SECRET}-rotated"));
    write(&dir, "configurations/crm.json", &changed);
    let planned = s.sluice(&["plan", arg(&dir)]).await.expect(0);
    assert_no_secret(&planned);
    let out = planned.stdout();
    assert!(out.contains("~ change application sync"), "{out}");
    assert!(
        out.contains("    steps[0].parameters.value: 1 → 2"),
        "{out}"
    );
    assert!(out.contains("= unchanged configuration crm"), "{out}");
    let applied = s.sluice(&["apply", arg(&dir)]).await.expect(0);
    assert!(applied
        .stdout()
        .contains("Applied: 0 created, 1 changed, 0 deleted."));
    s.sluice(&["apply", arg(&dir)])
        .await
        .expect(0)
        .stdout()
        .contains("no changes")
        .then_some(())
        .expect("no changes the second time");
    assert!(!String::from_utf8_lossy(&s.data_dir_bytes()).contains(SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_document_changes_nothing() {
    let s = Scratch::new();
    let dir = definitions(&s, "defs");
    write(
        &dir,
        "apps/broken.json",
        &json!({"name": "broken", "author": "e2e", "steps": [{"id": "A", "type": "teleport"}]}),
    );
    let done = s.sluice(&["apply", arg(&dir)]).await.expect(2);
    let err = done.stderr();
    assert!(err.contains("apps/broken.json: steps[0].type"), "{err}");
    assert_no_secret(&done);
    assert_eq!(stored_apps(&s).await, "");
    assert_eq!(s.sluice(&["configs", "list"]).await.expect(0).stdout(), "");

    // Valid documents that would leave a schedule naming no application: refused too.
    std::fs::remove_file(dir.join("apps/broken.json")).unwrap();
    write(
        &dir,
        "schedules/orphan.json",
        &schedule("orphan", "ghost", json!({})),
    );
    let done = s.sluice(&["apply", arg(&dir)]).await.expect(2);
    assert!(
        done.stderr().contains(
            "schedules/orphan.json: application_id: application \"ghost\" would not exist after the apply"
        ),
        "{}",
        done.stderr()
    );
    assert_eq!(stored_apps(&s).await, "");

    // A schedule's params are checked against its application before any write.
    std::fs::remove_file(dir.join("schedules/orphan.json")).unwrap();
    write(
        &dir,
        "schedules/nightly.json",
        &schedule("nightly", "sync", json!({"no_such_variable": 1})),
    );
    let done = s.sluice(&["apply", arg(&dir)]).await.expect(2);
    assert!(
        done.stderr()
            .contains("schedules/nightly.json: params.no_such_variable: unknown app variable"),
        "{}",
        done.stderr()
    );
    assert_eq!(stored_apps(&s).await, "");

    // A write the store refuses midway (the schedule's application references a
    // configuration variable that does not exist, which only the store checks): what
    // was written before it is undone.
    write(
        &dir,
        "schedules/nightly.json",
        &schedule("nightly", "sync", json!({})),
    );
    write(
        &dir,
        "apps/needs.json",
        &json!({"name": "needs", "author": "e2e", "configuration": "crm", "steps": [
            {"id": "A", "type": "echo", "parameters": {"value": "${config.nope}"}}
        ]}),
    );
    write(
        &dir,
        "schedules/needs-hourly.json",
        &schedule("needs-hourly", "needs", json!({})),
    );
    let done = s.sluice(&["apply", arg(&dir)]).await.expect(2);
    let err = done.stderr();
    assert!(
        err.contains("apply failed at: + create schedule needs-hourly"),
        "{err}"
    );
    assert!(err.contains("restored: nothing was changed"), "{err}");
    assert_no_secret(&done);
    assert_eq!(stored_apps(&s).await, "");
    assert_eq!(s.sluice(&["configs", "list"]).await.expect(0).stdout(), "");
    assert_eq!(
        s.sluice(&["schedules", "list"]).await.expect(0).stdout(),
        ""
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_deletes_what_the_directory_no_longer_holds() {
    let s = Scratch::new();
    let dir = definitions(&s, "defs");
    write(&dir, "apps/extra.json", &app("extra", json!(1)));
    s.sluice(&["apply", arg(&dir)]).await.expect(0);
    std::fs::remove_file(dir.join("apps/extra.json")).unwrap();

    // Without --prune, what the directory lacks is left alone.
    let done = s.sluice(&["apply", arg(&dir)]).await.expect(0);
    assert!(done.stdout().contains("no changes"), "{}", done.stdout());
    let planned = s.sluice(&["plan", "--prune", arg(&dir)]).await.expect(0);
    assert!(
        planned.stdout().contains("- delete application extra"),
        "{}",
        planned.stdout()
    );
    assert!(stored_apps(&s).await.contains("extra"));
    let done = s.sluice(&["apply", "--prune", arg(&dir)]).await.expect(0);
    assert!(done
        .stdout()
        .contains("Applied: 0 created, 0 changed, 1 deleted."));
    let apps = stored_apps(&s).await;
    assert!(apps.contains("sync") && !apps.contains("extra"), "{apps}");

    // An empty directory never prunes everything.
    let empty = s.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    s.sluice(&["apply", "--prune", arg(&empty)]).await.expect(2);
    assert!(stored_apps(&s).await.contains("sync"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_apply_is_a_no_op() {
    let s = Scratch::new();
    let dir = definitions(&s, "defs");
    s.sluice(&["apply", arg(&dir)]).await.expect(0);
    let exported = s.path().join("exported");
    let done = s.sluice(&["export", arg(&exported)]).await.expect(0);
    assert!(
        done.stdout().contains("Exported 3 definition(s)"),
        "{}",
        done.stdout()
    );
    for file in [
        "applications/sync.json",
        "configurations/crm.json",
        "schedules/nightly.json",
        "README.md",
    ] {
        let text = std::fs::read_to_string(exported.join(file)).unwrap();
        assert!(!text.contains(SECRET), "{file}: {text}");
    }
    let config: Value = serde_json::from_str(
        &std::fs::read_to_string(exported.join("configurations/crm.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["data"][1]["value"], Value::Null);
    assert!(std::fs::read_to_string(exported.join("README.md"))
        .unwrap()
        .contains("Encrypted configuration values are exported empty"));

    let done = s
        .sluice(&["apply", "--prune", arg(&exported)])
        .await
        .expect(0);
    assert!(
        done.stdout()
            .contains("no changes (3 definitions up to date)"),
        "{}",
        done.stdout()
    );
    // Exporting into a directory that holds files is refused.
    s.sluice(&["export", arg(&exported)]).await.expect(2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_api_the_same() {
    let s = Scratch::new();
    let dir = definitions(&s, "defs");
    let serve = s.serve().await;
    let token = s.token("ci", "admin").await;

    let done = s
        .client(&serve, &token, &["plan", arg(&dir)])
        .await
        .expect(0);
    assert!(
        done.stdout().contains("Plan: 3 to create"),
        "{}",
        done.stdout()
    );
    let done = s
        .client(&serve, &token, &["apply", arg(&dir)])
        .await
        .expect(0);
    assert_no_secret(&done);
    assert!(
        done.stdout().contains("Applied: 3 created"),
        "{}",
        done.stdout()
    );
    let done = s
        .client(&serve, &token, &["apply", arg(&dir)])
        .await
        .expect(0);
    assert!(done.stdout().contains("no changes"), "{}", done.stdout());

    let exported = s.path().join("exported");
    s.client(&serve, &token, &["export", arg(&exported)])
        .await
        .expect(0);
    let done = s
        .client(&serve, &token, &["apply", "--prune", arg(&exported)])
        .await
        .expect(0);
    assert!(done.stdout().contains("no changes"), "{}", done.stdout());

    write(
        &dir,
        "apps/broken.json",
        &json!({"name": "broken", "author": "e2e", "steps": [{"id": "A", "type": "teleport"}]}),
    );
    write(&dir, "apps/more.json", &app("more", json!(1)));
    let done = s
        .client(&serve, &token, &["apply", arg(&dir)])
        .await
        .expect(2);
    assert!(
        done.stderr().contains("apps/broken.json"),
        "{}",
        done.stderr()
    );
    let listed = s
        .client(&serve, &token, &["apps", "list"])
        .await
        .expect(0)
        .stdout();
    assert!(!listed.contains("more"), "{listed}");
    serve.stop().await;
}
