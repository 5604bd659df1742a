//! Run reports from the outside: the inventory example's report through the CLI (in
//! process on the data directory, and against `sluice serve`) and the API (JSON, CSV,
//! roles, delete), and a secret a report references, redacted.

use serde_json::{json, Value};

use crate::support::{Auth, Scratch};

/// The rows of the inventory example's first sync, by status.
const FIRST_SYNC: &str = "New 2, Updated 2, Removed 1, Unchanged 6, Failed 0";

fn csv_rows(csv: &str) -> Vec<&str> {
    csv.split("\r\n").filter(|l| !l.is_empty()).collect()
}

/// What [`inventory_report_through_the_cli_on`] found.
pub struct InventoryReport {
    pub id: String,
    pub run_id: String,
    pub csv: String,
}

/// Runs the inventory example and reads its report with the CLI (list, text, CSV).
/// Also run with `--backend aws` (tests/e2e/aws.rs).
pub async fn inventory_report_through_the_cli_on(s: &Scratch) -> InventoryReport {
    let dir = s.copy_example("inventory-sync");
    let (app, config) = (dir.join("app.json"), dir.join("config.json"));
    let ran = s
        .sluice(&["run", app.to_str().unwrap(), "-c", config.to_str().unwrap()])
        .await
        .expect(0);
    let run_id = s.newest_run_id().await;
    let id = format!("report-inventory_sync-{run_id}");
    assert!(
        ran.stdout().contains(&id),
        "the run names its report: {}",
        ran.stdout()
    );

    // The CLI, in process on the data directory.
    let listed = s
        .sluice(&["reports", "list", "--output", "json"])
        .await
        .expect(0)
        .json();
    assert_eq!(listed["reports"][0]["id"], id.as_str(), "{listed}");
    assert_eq!(listed["reports"][0]["run_id"], run_id.as_str());
    let text = s.sluice(&["reports", "get", &id]).await.expect(0).stdout();
    assert!(text.contains(FIRST_SYNC), "{text}");
    assert!(
        text.contains("== Inventory sync (step Report) =="),
        "{text}"
    );
    assert!(text.contains("CMDB items"), "{text}");
    let new_line = text
        .lines()
        .find(|l| l.contains("SN-1009"))
        .expect("a New row");
    assert!(new_line.starts_with("New "), "{new_line}");
    let csv = s
        .sluice(&["reports", "get", &id, "--output", "csv"])
        .await
        .expect(0)
        .stdout();
    let rows = csv_rows(&csv);
    assert_eq!(
        rows[0],
        "section,step,table,status,ci_id,name,ip,os,location"
    );
    assert_eq!(rows.len(), 12, "{csv}");
    assert!(
        rows.contains(&"Inventory sync,Report,CMDB items,Removed,SN-0999,,,,"),
        "{csv}"
    );
    InventoryReport { id, run_id, csv }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inventory_report_through_the_cli_and_the_api() {
    let s = Scratch::new();
    let InventoryReport { id, run_id, csv } = inventory_report_through_the_cli_on(&s).await;

    // The API, with its roles.
    let serve = s.serve().await;
    let viewer = Auth::Token(s.token("viewer", "view").await);
    let operator = Auth::Token(s.token("operator", "execute").await);
    let (status, page) = serve
        .get("/api/v1/reports?application=inventory_sync", &viewer)
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["count"], 1);
    assert_eq!(page["next_cursor"], Value::Null);
    let (_, other) = serve
        .get("/api/v1/reports?application=other", &viewer)
        .await;
    assert_eq!(other["count"], 0);
    let path = format!("/api/v1/reports/{id}");
    let (status, report) = serve.get(&path, &viewer).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["id"], id.as_str());
    assert_eq!(
        report["counts"],
        json!({"New": 2, "Updated": 2, "Removed": 1, "Unchanged": 6, "Failed": 0})
    );
    let section = &report["sections"][0];
    assert_eq!(section["step"], "Report");
    assert_eq!(section["details"]["dry_run"], false);
    assert_eq!(section["tables"][0]["rows"][0]["status"], "New");

    // CSV by query and by Accept, the same document the CLI printed.
    let Auth::Token(viewer_token) = &viewer else {
        unreachable!()
    };
    for (url, accept) in [
        (format!("{}{path}?format=csv", serve.base), "*/*"),
        (format!("{}{path}", serve.base), "text/csv"),
    ] {
        let response = serve
            .http
            .get(&url)
            .bearer_auth(viewer_token)
            .header("accept", accept)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"],
            "text/csv; charset=utf-8"
        );
        assert!(response.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains(&format!("{id}.csv")));
        assert_eq!(response.text().await.unwrap(), csv);
    }
    let remote_csv = s
        .client(
            &serve,
            viewer_token,
            &["reports", "get", &id, "--output", "csv"],
        )
        .await
        .expect(0)
        .stdout();
    assert_eq!(remote_csv, csv);
    let (status, bad) = serve.get(&format!("{path}?format=xml"), &viewer).await;
    assert_eq!(
        (status, bad["error"]["field"].clone()),
        (400, json!("format"))
    );
    let (status, _) = serve.get("/api/v1/reports/not-a-report", &viewer).await;
    assert_eq!(status, 400);
    let wrong_app = format!("/api/v1/reports/report-other-{run_id}");
    assert_eq!(serve.get(&wrong_app, &viewer).await.0, 404);

    // Deleting: not for viewers; an operator deletes, the run stays.
    let (status, _) = serve.call("DELETE", &path, &viewer, None).await;
    assert_eq!(status, 403);
    let (status, deleted) = serve.call("DELETE", &path, &operator, None).await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["deleted"], true);
    assert_eq!(serve.get(&path, &viewer).await.0, 404);
    assert_eq!(serve.call("DELETE", &path, &operator, None).await.0, 404);
    let (status, _) = serve.get(&format!("/api/v1/tasks/{run_id}"), &viewer).await;
    assert_eq!(status, 200, "the run stays");
    let gone = s
        .client(&serve, viewer_token, &["reports", "get", &id])
        .await
        .expect(2);
    assert!(gone.stderr().contains("not found"), "{}", gone.stderr());
    assert_eq!(serve.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_in_a_report_is_redacted_and_the_cli_deletes_reports() {
    a_secret_in_a_report_is_redacted_and_the_cli_deletes_reports_on(Scratch::new()).await
}

/// Also run with `--backend aws` (tests/e2e/aws.rs).
pub async fn a_secret_in_a_report_is_redacted_and_the_cli_deletes_reports_on(s: Scratch) {
    let config = s.write(
        "config.json",
        &json!({"name": "vault", "data": [
            {"name": "api_key", "value": "k3y-s3cr3t-e2e-value", "encrypted": true}
        ]})
        .to_string(),
    );
    let app = s.write(
        "app.json",
        &json!({
            "name": "leaky", "author": "e2e", "configuration": "vault",
            "steps": [{"id": "Report", "type": "report", "parameters": {
                "title": "Keys",
                "details": {"key": "${config.api_key}"},
                "tables": [{"columns": ["name", "value"], "rows": [
                    {"status": "Failed", "items": [{"name": "api", "value": "${config.api_key}"}]}
                ]}]
            }}]
        })
        .to_string(),
    );
    s.sluice(&["run", app.to_str().unwrap(), "-c", config.to_str().unwrap()])
        .await
        .expect(0);
    let run_id = s.newest_run_id().await;
    let id = format!("report-leaky-{run_id}");
    let report = s
        .sluice(&["reports", "get", &id, "--output", "json"])
        .await
        .expect(0)
        .json();
    let text = report.to_string();
    assert!(!text.contains("s3cr3t"), "{text}");
    assert_eq!(report["sections"][0]["details"]["key"], "***");
    assert_eq!(
        report["sections"][0]["tables"][0]["rows"][0]["values"],
        json!(["api", "***"])
    );
    assert_eq!(report["counts"]["Failed"], 1);

    s.sluice(&["reports", "delete", &id]).await.expect(0);
    let listed = s
        .sluice(&[
            "reports",
            "list",
            "--application",
            "leaky",
            "--output",
            "json",
        ])
        .await
        .expect(0)
        .json();
    assert_eq!(listed["count"], 0, "{listed}");
    s.sluice(&["reports", "delete", &id]).await.expect(2);
}
