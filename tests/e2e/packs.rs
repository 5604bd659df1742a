//! Packs: the example pack built, installed, activated and run; a user's settings set on
//! its read-only application; a v2 activated (the upgrade: settings survive, content the
//! new version dropped is deleted); v1 activated again (the rollback); a version needing
//! step types this deployment lacks refused naming each with its source; read-only
//! refusals and "save as" copies; uninstalling. On the data directory (the API in
//! process) and, for the listing and a refusal, through `sluice serve`.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::support::{repo, Scratch};

fn arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A copy of the example pack under `name`, changed by `change(manifest, app)`.
fn pack_dir(
    s: &Scratch,
    name: &str,
    change: impl FnOnce(&mut Value, &mut Value, &Path),
) -> PathBuf {
    let from = repo().join("examples/packs/ticket-sync");
    let to = s.path().join(name);
    for sub in ["applications", "configurations", "schedules"] {
        std::fs::create_dir_all(to.join(sub)).unwrap();
        for entry in std::fs::read_dir(from.join(sub)).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), to.join(sub).join(entry.file_name())).unwrap();
        }
    }
    let read =
        |p: &Path| -> Value { serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap() };
    let app_path = to.join("applications/ticket_sync.json");
    let mut manifest = read(&from.join("pack.json"));
    let mut app = read(&app_path);
    change(&mut manifest, &mut app, &to);
    std::fs::write(to.join("pack.json"), manifest.to_string()).unwrap();
    std::fs::write(&app_path, app.to_string()).unwrap();
    to
}

async fn build(s: &Scratch, dir: &Path) -> PathBuf {
    let out = dir.with_extension("pack.json");
    let done = s
        .sluice(&["packs", "build", arg(dir), "-o", arg(&out)])
        .await
        .expect(0);
    assert!(
        done.stdout().contains("built ticket-sync"),
        "{}",
        done.stdout()
    );
    out
}

async fn app(s: &Scratch, name: &str) -> Value {
    s.sluice(&["apps", "get", name]).await.expect(0).json()
}

async fn push(s: &Scratch, file: &str, doc: &Value) -> crate::support::Done {
    let path = s.write(file, &doc.to_string());
    s.sluice(&["apps", "push", arg(&path)]).await
}

#[tokio::test]
async fn a_pack_is_built_installed_activated_upgraded_and_rolled_back() {
    let s = Scratch::new();
    let v1 = build(&s, &pack_dir(&s, "v1", |_, _, _| {})).await;
    let done = s.sluice(&["packs", "install", arg(&v1)]).await.expect(0);
    assert!(
        done.stdout().starts_with("installed ticket-sync 1.0.0"),
        "{}",
        done.stdout()
    );
    let again = s.sluice(&["packs", "install", arg(&v1)]).await.expect(0);
    assert!(
        again.stdout().contains("already installed"),
        "{}",
        again.stdout()
    );

    // Activate and run it.
    let done = s
        .sluice(&["packs", "activate", "ticket-sync", "1.0.0"])
        .await
        .expect(0);
    for line in [
        "create configuration ticket-sync-config",
        "create application ticket_sync",
        "create schedule ticket_sync_nightly",
    ] {
        assert!(done.stdout().contains(line), "{}", done.stdout());
    }
    let run = s.sluice(&["run", "ticket_sync"]).await.expect(0);
    assert!(run.stdout().contains(r#""batch":50"#), "{}", run.stdout());

    // Read-only: no edit of the pack's definitions, no delete.
    let mut edited = app(&s, "ticket_sync").await;
    edited["steps"][1]["parameters"]["value"] = json!("changed");
    let refused = push(&s, "edited.json", &edited).await.expect(2);
    assert!(
        refused
            .stderr()
            .contains("belongs to pack \"ticket-sync\" 1.0.0 and is read-only"),
        "{}",
        refused.stderr()
    );
    s.sluice(&["apps", "delete", "ticket_sync"]).await.expect(2);
    s.sluice(&["configs", "delete", "ticket-sync-config"])
        .await
        .expect(2);
    s.sluice(&["schedules", "delete", "ticket_sync_nightly"])
        .await
        .expect(2);

    // Save as: a copy is the user's to change.
    s.sluice(&["packs", "save-as", "ticket_sync", "my_sync"])
        .await
        .expect(0);
    let mut mine = app(&s, "my_sync").await;
    assert!(mine["meta"].get("pack").is_none(), "{mine}");
    mine["steps"][1]["parameters"]["value"] = json!("mine");
    push(&s, "mine.json", &mine).await.expect(0);
    s.sluice(&[
        "packs",
        "save-as",
        "ticket-sync-config",
        "my-config",
        "--configuration",
    ])
    .await
    .expect(0);

    // The user's settings on the pack's application: its alignment and a variable.
    let mut settings = app(&s, "ticket_sync").await;
    assert_eq!(settings["meta"]["pack"]["version"], "1.0.0");
    settings["configuration"] = json!("my-config");
    settings["app_variables"][0]["value"] = json!(7);
    push(&s, "settings.json", &settings).await.expect(0);

    // v2: another step, a new default, no schedule.
    let v2 = pack_dir(&s, "v2", |manifest, app, dir| {
        manifest["version"] = json!("2.0.0");
        app["app_variables"][0]["value"] = json!(100);
        app["steps"][1]["parameters"]["value"] = json!({"written": "${Fetch}"});
        std::fs::remove_file(dir.join("schedules/ticket_sync_nightly.json")).unwrap();
    });
    let v2 = build(&s, &v2).await;
    s.sluice(&["packs", "install", arg(&v2)]).await.expect(0);
    let upgrade = s
        .sluice(&["packs", "activate", "ticket-sync", "2.0.0"])
        .await
        .expect(0);
    let out = upgrade.stdout();
    assert!(
        out.contains("activated ticket-sync 2.0.0 (was 1.0.0)"),
        "{out}"
    );
    assert!(out.contains("change application ticket_sync"), "{out}");
    assert!(out.contains("delete schedule ticket_sync_nightly"), "{out}");
    assert!(
        out.contains(r#"kept your setting: application "ticket_sync": configuration "my-config""#),
        "{out}"
    );
    assert!(out.contains(r#"app variable "batch_size""#), "{out}");
    let upgraded = app(&s, "ticket_sync").await;
    assert_eq!(upgraded["configuration"], "my-config");
    assert_eq!(upgraded["app_variables"][0]["value"], 7);
    assert_eq!(upgraded["meta"]["pack"]["version"], "2.0.0");
    s.sluice(&["schedules", "get", "ticket_sync_nightly"])
        .await
        .expect(2);
    let run = s.sluice(&["run", "ticket_sync"]).await.expect(0);
    assert!(run.stdout().contains(r#""written""#), "{}", run.stdout());
    assert!(run.stdout().contains(r#""batch":7"#), "{}", run.stdout());
    let listed = s.sluice(&["packs", "list"]).await.expect(0);
    assert!(
        listed
            .stdout()
            .contains("ticket-sync  active: 2.0.0  installed: 1.0.0, 2.0.0"),
        "{}",
        listed.stdout()
    );

    // Rollback: v1 again, the settings still the user's.
    let rollback = s
        .sluice(&["packs", "activate", "ticket-sync", "1.0.0"])
        .await
        .expect(0);
    assert!(
        rollback
            .stdout()
            .contains("create schedule ticket_sync_nightly"),
        "{}",
        rollback.stdout()
    );
    let rolled = app(&s, "ticket_sync").await;
    assert_eq!(rolled["steps"][1]["parameters"]["value"], "${Fetch}");
    assert_eq!(rolled["configuration"], "my-config");
    assert_eq!(rolled["app_variables"][0]["value"], 7);
    let again = s
        .sluice(&["packs", "activate", "ticket-sync", "1.0.0"])
        .await
        .expect(0);
    assert!(again.stdout().contains("no changes"), "{}", again.stdout());

    // Exactly one version is active: it cannot be deleted; another one can.
    let refused = s
        .sluice(&["packs", "delete", "ticket-sync", "1.0.0"])
        .await
        .expect(2);
    assert!(
        refused.stderr().contains("is active"),
        "{}",
        refused.stderr()
    );
    s.sluice(&["packs", "delete", "ticket-sync", "2.0.0"])
        .await
        .expect(0);

    // Uninstalling deletes what the pack owns and keeps the user's copies, once none of
    // them is aligned to the pack's configuration.
    let refused = s
        .sluice(&["packs", "delete", "ticket-sync"])
        .await
        .expect(2);
    assert!(
        refused
            .stderr()
            .contains(r#"applications["my_sync"].configuration"#),
        "{}",
        refused.stderr()
    );
    let mut mine = app(&s, "my_sync").await;
    mine["configuration"] = json!("my-config");
    push(&s, "mine.json", &mine).await.expect(0);
    let done = s
        .sluice(&["packs", "delete", "ticket-sync"])
        .await
        .expect(0);
    assert!(
        done.stdout().contains("deleted application ticket_sync"),
        "{}",
        done.stdout()
    );
    s.sluice(&["apps", "get", "ticket_sync"]).await.expect(2);
    assert_eq!(
        app(&s, "my_sync").await["steps"][1]["parameters"]["value"],
        "mine"
    );
    let listed = s.sluice(&["packs", "list"]).await.expect(0);
    assert!(
        listed.stdout().contains("no packs installed"),
        "{}",
        listed.stdout()
    );
}

#[tokio::test]
async fn activation_is_refused_naming_every_missing_step_type_and_dependency() {
    let s = Scratch::new();
    let dir = pack_dir(&s, "needs", |manifest, app, _| {
        manifest["step_types"] = json!([
            {"type": "echo", "version": "^1", "source": "built in"},
            {"type": "servicenow_incident", "version": "^2", "source": "https://github.com/acme/servicenow-steps"},
            {"type": "jira_issue", "source": "https://github.com/acme/jira-steps"}
        ]);
        manifest["dependencies"] = json!([{"pack": "cmdb-base", "version": "^1"}]);
        app["steps"][1]["type"] = json!("servicenow_incident");
        app["steps"][1]["parameters"] = json!({});
    });
    let archive = build(&s, &dir).await;
    s.sluice(&["packs", "install", arg(&archive)])
        .await
        .expect(0);
    let refused = s
        .sluice(&["packs", "activate", "ticket-sync", "1.0.0"])
        .await
        .expect(2);
    let err = refused.stderr();
    for needle in [
        r#"step type "servicenow_incident" (^2) is not registered here"#,
        "https://github.com/acme/servicenow-steps",
        r#"step type "jira_issue""#,
        "https://github.com/acme/jira-steps",
        r#"needs pack "cmdb-base" (^1) active"#,
    ] {
        assert!(err.contains(needle), "{needle} missing from:\n{err}");
    }
    // Nothing was written.
    s.sluice(&["apps", "get", "ticket_sync"]).await.expect(2);
    let got = s
        .sluice(&["packs", "get", "ticket-sync"])
        .await
        .expect(0)
        .json();
    assert_eq!(got["active_version"], Value::Null);

    // A pack that would overwrite a user's application is refused too.
    let user_app = json!({"name": "ticket_sync", "author": "me", "steps": [
        {"id": "A", "type": "echo", "parameters": {"value": 1}}
    ]});
    push(&s, "user.json", &user_app).await.expect(0);
    let plain = build(
        &s,
        &pack_dir(&s, "plain", |m, _, _| m["version"] = json!("1.1.0")),
    )
    .await;
    s.sluice(&["packs", "install", arg(&plain)]).await.expect(0);
    let refused = s
        .sluice(&["packs", "activate", "ticket-sync", "1.1.0"])
        .await
        .expect(2);
    assert!(
        refused
            .stderr()
            .contains(r#"application "ticket_sync" exists (a user's)"#),
        "{}",
        refused.stderr()
    );
}

#[tokio::test]
async fn packs_work_through_a_server() {
    let s = Scratch::new();
    let archive = build(&s, &pack_dir(&s, "v1", |_, _, _| {})).await;
    let serve = s.serve().await;
    let admin = s.token("pack-admin", "administrator").await;
    let viewer = s.token("pack-viewer", "view").await;
    s.client(&serve, &admin, &["packs", "install", arg(&archive)])
        .await
        .expect(0);
    s.client(
        &serve,
        &admin,
        &["packs", "activate", "ticket-sync", "1.0.0"],
    )
    .await
    .expect(0);
    let listed = s
        .client(&serve, &viewer, &["packs", "list", "--only-activated"])
        .await
        .expect(0);
    assert!(
        listed.stdout().contains("ticket-sync  active: 1.0.0"),
        "{}",
        listed.stdout()
    );
    // Writes need an administrator.
    let forbidden = s
        .client(&serve, &viewer, &["packs", "delete", "ticket-sync"])
        .await;
    assert_ne!(forbidden.code(), 0, "{}", forbidden.stdout());
    assert!(
        forbidden.stderr().contains("administrator"),
        "{}",
        forbidden.stderr()
    );
    // PowerFlow's listing shape and flags.
    let auth = crate::support::Auth::Token(viewer.clone());
    let (status, body) = serve
        .get(
            "/api/v1/syncpacks?only_installed=true&only_activated=true",
            &auth,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[0]["name"], "ticket-sync");
    assert_eq!(body[0]["owned"].as_array().unwrap().len(), 3);
    let (status, body) = serve
        .get("/api/v1/syncpacks?only_activated=maybe", &auth)
        .await;
    assert_eq!(status, 400, "{body}");
    let admin_auth = crate::support::Auth::Token(admin.clone());
    let (status, body) = serve
        .post(
            "/api/v1/applications/ticket_sync/copy",
            &admin_auth,
            &json!({"name": "ticket_sync"}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(serve.stop().await, 0);
}

#[tokio::test]
async fn the_manifest_schema_is_published() {
    let s = Scratch::new();
    let schema = s.sluice(&["schema", "pack"]).await.expect(0).json();
    assert_eq!(schema["additionalProperties"], false, "{schema}");
    let stored: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("docs/schemas/pack.schema.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        schema, stored,
        "docs/schemas/pack.schema.json is out of date: sluice schema pack > docs/schemas/pack.schema.json"
    );
}
