//! `sql` against SQLite files in temporary directories.

use serde_json::{json, Value};
use sluice_core::model::LogLevel;
use sluice_steps::Sql;

use super::{err, messages, ok, run};

/// A new database with a `users` table; returns the directory (kept alive) and the URL.
async fn database(step: &Sql) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let create = format!("sqlite://{}?mode=rwc", path.display());
    let out = ok(
        step,
        json!({"url": create, "mode": "execute", "query": "
            CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, score REAL, active BOOLEAN);
            INSERT INTO users (name, score, active) VALUES ('ann', 1.5, 1), ('bob', NULL, 0);
        "}),
    )
    .await;
    assert_eq!(out, json!({"rows_affected": 2}));
    (dir, format!("sqlite://{}", path.display()))
}

#[tokio::test]
async fn select_binds_parameters_and_never_splices_them() {
    let step = Sql::new();
    let (_dir, url) = database(&step).await;

    let rows = ok(&step, json!({"url": url, "query": "SELECT id, name FROM users WHERE name = ? AND id > ?", "params": ["ann", 0]})).await;
    assert_eq!(rows, json!([{"id": 1, "name": "ann"}]));

    // Classic injection text matches nothing, and destroys nothing.
    let injection = "x' OR '1'='1";
    let rows = ok(
        &step,
        json!({"url": url, "query": "SELECT * FROM users WHERE name = ?", "params": [injection]}),
    )
    .await;
    assert_eq!(rows, json!([]));
    let drop = "'); DROP TABLE users; --";
    let out = ok(&step, json!({"url": url, "mode": "execute", "query": "INSERT INTO users (name) VALUES (?)", "params": [drop]})).await;
    assert_eq!(out, json!({"rows_affected": 1}));
    let rows = ok(
        &step,
        json!({"url": url, "query": "SELECT name FROM users WHERE id = 3"}),
    )
    .await;
    assert_eq!(rows, json!([{"name": drop}]));
    let rows = ok(
        &step,
        json!({"url": url, "query": "SELECT count(*) AS n FROM users"}),
    )
    .await;
    assert_eq!(rows, json!([{"n": 3}]));
}

#[tokio::test]
async fn json_parameters_bind_with_their_types() {
    let step = Sql::new();
    let (_dir, url) = database(&step).await;
    let rows = ok(
        &step,
        json!({"url": url,
               "query": "SELECT typeof(?1) AS a, typeof(?2) AS b, ?2 AS b_value, typeof(?3) AS c, typeof(?4) AS d, typeof(?5) AS e, typeof(?6) AS f, ?6 AS f_value, ?7 AS g_value",
               "params": [null, true, 42, 2.5, "text", {"k": [1, 2]}, [1, "two"]]}),
    )
    .await;
    assert_eq!(
        rows,
        json!([{"a": "null", "b": "integer", "b_value": 1, "c": "integer", "d": "real",
                "e": "text", "f": "text", "f_value": "{\"k\":[1,2]}", "g_value": "[1,\"two\"]"}])
    );
}

#[tokio::test]
async fn values_map_to_json_by_type() {
    let step = Sql::new();
    let (_dir, url) = database(&step).await;
    ok(
        &step,
        json!({"url": url, "mode": "execute", "query": "
            CREATE TABLE kinds (i INTEGER, r REAL, t TEXT, b BLOB, flag BOOLEAN, at DATETIME, n NUMERIC, missing TEXT, big INTEGER);
            INSERT INTO kinds VALUES (-7, 0.25, 'héllo', X'00FF10', 1, '2024-01-02 03:04:05', 12.5, NULL, 9007199254740993);
        "}),
    )
    .await;
    let rows = ok(&step, json!({"url": url, "query": "SELECT * FROM kinds"})).await;
    assert_eq!(
        rows,
        json!([{"i": -7, "r": 0.25, "t": "héllo", "b": "AP8Q", "flag": true,
                "at": "2024-01-02 03:04:05", "n": 12.5, "missing": null, "big": 9007199254740993_i64}])
    );
    // Expressions have no declared type: their values still convert.
    let rows = ok(&step, json!({"url": url, "query": "SELECT 1 + 1 AS two, 'a' || 'b' AS ab, NULL AS absent, 1.0 / 4 AS quarter, x'41' AS blob"})).await;
    assert_eq!(
        rows,
        json!([{"two": 2, "ab": "ab", "absent": null, "quarter": 0.25, "blob": "QQ=="}])
    );
}

#[tokio::test]
async fn execute_counts_rows_and_select_logs() {
    let step = Sql::new();
    let (_dir, url) = database(&step).await;
    let out = ok(&step, json!({"url": url, "mode": "execute", "query": "UPDATE users SET score = ? WHERE score IS NULL OR score > ?", "params": [9, 0]})).await;
    assert_eq!(out, json!({"rows_affected": 2}));
    let out = ok(&step, json!({"url": url, "mode": "execute", "query": "DELETE FROM users WHERE name = ?", "params": ["nobody"]})).await;
    assert_eq!(out, json!({"rows_affected": 0}));

    let (result, logs) = run(&step, json!({"url": url, "query": "SELECT * FROM users"})).await;
    assert_eq!(result.unwrap().value.as_array().unwrap().len(), 2);
    let info = messages(&logs, LogLevel::Info);
    assert!(
        info[0].starts_with(&format!("select on {url}: 2 rows (")),
        "{info:?}"
    );
}

#[tokio::test]
async fn describe_lists_columns() {
    let step = Sql::new();
    let (_dir, url) = database(&step).await;
    let columns = ok(
        &step,
        json!({"url": url, "mode": "describe", "table": "users"}),
    )
    .await;
    assert_eq!(
        columns,
        json!([
            {"name": "id", "type": "INTEGER", "nullable": true},
            {"name": "name", "type": "TEXT", "nullable": false},
            {"name": "score", "type": "REAL", "nullable": true},
            {"name": "active", "type": "BOOLEAN", "nullable": true}
        ])
    );
    assert_eq!(
        ok(
            &step,
            json!({"url": url, "mode": "describe", "table": "main.users"})
        )
        .await,
        columns
    );
    let e = err(
        &step,
        json!({"url": url, "mode": "describe", "table": "userz"}),
    )
    .await;
    assert!(!e.is_retryable());
    assert!(e.message().contains("table \"userz\" not found"), "{e}");
}

#[tokio::test]
async fn a_missing_database_file_fails_and_is_not_created() {
    let step = Sql::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.db");
    for url in [
        format!("sqlite://{}", path.display()),
        format!("sqlite:{}", path.display()),
        path.display().to_string(),
    ] {
        let e = err(&step, json!({"url": url, "query": "SELECT 1"})).await;
        assert!(!e.is_retryable(), "{e}");
        assert!(e.message().contains("does not exist"), "{e}");
        assert!(e.message().contains("mode=rwc"), "{e}");
    }
    assert!(!path.exists());
}

#[tokio::test]
async fn accepts_every_spelling_of_a_sqlite_location() {
    let step = Sql::new();
    let (dir, _) = database(&step).await;
    let path = dir.path().join("app.db");
    // A path relative to the working directory.
    let cwd = std::env::current_dir().unwrap();
    let local = tempfile::tempdir_in(&cwd).unwrap();
    let relative_path = local.path().strip_prefix(&cwd).unwrap().join("copy.db");
    std::fs::copy(&path, &relative_path).unwrap();
    assert!(relative_path.is_relative());
    for url in [
        format!("sqlite://{}", path.display()),
        format!("sqlite:{}", path.display()),
        path.display().to_string(),
        relative_path.display().to_string(),
        format!("sqlite:{}", relative_path.display()),
        format!("sqlite://{}", relative_path.display()),
    ] {
        let rows = ok(
            &step,
            json!({"url": url, "query": "SELECT count(*) AS n FROM users"}),
        )
        .await;
        assert_eq!(rows, json!([{"n": 2}]), "{url}");
    }
    // In memory.
    let rows = ok(
        &step,
        json!({"url": "sqlite::memory:", "query": "SELECT 40 + 2 AS n"}),
    )
    .await;
    assert_eq!(rows, json!([{"n": 42}]));
}

#[tokio::test]
async fn bad_sql_and_bad_parameters_are_fatal() {
    let step = Sql::new();
    let (_dir, url) = database(&step).await;
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"url": url, "query": "SELEC nothing"}),
            "syntax error",
        ),
        (
            json!({"url": url, "query": "SELECT * FROM nowhere"}),
            "no such table",
        ),
        (
            json!({"url": url, "mode": "execute", "query": "INSERT INTO users (name) VALUES (NULL)"}),
            "NOT NULL",
        ),
        (json!({"url": url}), "need a \"query\""),
        (
            json!({"url": url, "query": "SELECT 1", "table": "users"}),
            "\"table\"",
        ),
        (json!({"url": url, "mode": "describe"}), "needs a \"table\""),
        (
            json!({"url": url, "mode": "describe", "table": "users", "query": "SELECT 1"}),
            "not \"query\"",
        ),
        (
            json!({"url": "oracle://db/x", "query": "SELECT 1"}),
            "unsupported database URL",
        ),
        (
            json!({"url": url, "query": "SELECT 1", "mode": "fetch"}),
            "fetch",
        ),
    ];
    for (params, needle) in cases {
        let e = err(&step, params.clone()).await;
        assert!(!e.is_retryable(), "{params}: {e}");
        assert!(e.message().contains(needle), "{params}: {e}");
    }
}
