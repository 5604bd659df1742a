//! `sql` against a real MySQL or MariaDB server named by `SLUICE_TEST_MYSQL_URL`
//! (e.g. `mysql://user:password@127.0.0.1:3306/sluice`). `scripts/start-mariadb.sh`
//! starts one and prints the variable (`scripts/test.sh` does this); without it the test
//! fails.

use base64::Engine as _;
use serde_json::{json, Value};
use sluice_steps::Sql;

use super::{err, ok};

#[tokio::test]
async fn mysql_round_trip() {
    let url = std::env::var("SLUICE_TEST_MYSQL_URL")
        .expect("SLUICE_TEST_MYSQL_URL is not set: eval \"$(scripts/start-mariadb.sh)\" first");
    let step = Sql::new();
    ok(
        &step,
        json!({"url": url, "mode": "execute", "query": "
            DROP TABLE IF EXISTS sluice_kinds;
            CREATE TABLE sluice_kinds (
                id INT AUTO_INCREMENT PRIMARY KEY, small SMALLINT, big BIGINT NOT NULL,
                ubig BIGINT UNSIGNED, real4 FLOAT, real8 DOUBLE, price DECIMAL(12, 2),
                huge DECIMAL(40, 1), name VARCHAR(40), flag BOOLEAN, at DATETIME(3),
                stamp TIMESTAMP NULL, day DATE, clock TIME, doc JSON, raw VARBINARY(8),
                mood ENUM('happy', 'sad'), yr YEAR
            );
        "}),
    )
    .await;
    let out = ok(
        &step,
        json!({"url": url, "mode": "execute",
               "query": "INSERT INTO sluice_kinds (small, big, ubig, real4, real8, price, huge, name, flag, at, stamp, day, clock, doc, raw, mood, yr)
                         VALUES (?, ?, 18446744073709551615, ?, ?, ?, '123456789012345678901234567890.5', ?, ?, ?, '2024-01-02 03:04:05', '2024-02-29', '23:59:58', ?, X'00FF', 'happy', 2024)",
               "params": [null, 9007199254740993_i64, 1.1, 2.5, 19.99, "it's", true, "2024-01-02 03:04:05.250", {"k": [1, "two"]}]}),
    )
    .await;
    assert_eq!(out, json!({"rows_affected": 1}));

    for params in [json!(["it's"]), json!([])] {
        // With parameters (binary protocol) and without (text protocol).
        let query = if params.as_array().unwrap().is_empty() {
            "SELECT * FROM sluice_kinds WHERE name = 'it''s'"
        } else {
            "SELECT * FROM sluice_kinds WHERE name = ?"
        };
        let rows = ok(&step, json!({"url": url, "query": query, "params": params})).await;
        let mut row = rows[0].clone();
        // MySQL's JSON is JSON. MariaDB's is LONGTEXT with a binary collation, which
        // the protocol reports as binary: base64 (CAST(doc AS CHAR) gives text).
        if let Some(text) = row["doc"].as_str() {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .unwrap();
            row["doc"] = serde_json::from_slice::<Value>(&bytes).unwrap();
        }
        assert_eq!(
            row,
            json!({
                "id": 1, "small": null, "big": 9007199254740993_i64, "ubig": 18446744073709551615_u64,
                "real4": 1.1, "real8": 2.5, "price": 19.99, "huge": "123456789012345678901234567890.5",
                "name": "it's", "flag": true, "at": "2024-01-02T03:04:05.250",
                "stamp": "2024-01-02T03:04:05Z", "day": "2024-02-29", "clock": "23:59:58",
                "doc": {"k": [1, "two"]}, "raw": "AP8=", "mood": "happy", "yr": 2024
            }),
            "{query}"
        );
    }

    let rows = ok(
        &step,
        json!({"url": url, "query": "SELECT CAST(doc AS CHAR) AS doc FROM sluice_kinds"}),
    )
    .await;
    assert_eq!(
        serde_json::from_str::<Value>(rows[0]["doc"].as_str().unwrap()).unwrap(),
        json!({"k": [1, "two"]})
    );

    let rows = ok(&step, json!({"url": url, "query": "SELECT count(*) AS n FROM sluice_kinds WHERE name = ?", "params": ["x' OR '1'='1"]})).await;
    assert_eq!(rows, json!([{"n": 0}]));

    let columns = ok(
        &step,
        json!({"url": url, "mode": "describe", "table": "sluice_kinds"}),
    )
    .await;
    let columns = columns.as_array().unwrap();
    assert_eq!(columns.len(), 18);
    // MariaDB and MySQL 5 show display widths (`int(11)`), MySQL 8 does not.
    assert_eq!(columns[0]["name"], "id");
    assert!(columns[0]["type"].as_str().unwrap().starts_with("int"));
    assert_eq!(columns[0]["nullable"], false);
    assert_eq!(columns[2]["name"], "big");
    assert_eq!(columns[2]["nullable"], false);
    assert_eq!(
        columns[8],
        json!({"name": "name", "type": "varchar(40)", "nullable": true})
    );
    let e = err(
        &step,
        json!({"url": url, "mode": "describe", "table": "sluice_nothing"}),
    )
    .await;
    assert!(e.message().contains("not found"), "{e}");

    let e = err(
        &step,
        json!({"url": url, "query": "SELECT * FROM sluice_nowhere"}),
    )
    .await;
    assert!(!e.is_retryable());
    let out = ok(&step, json!({"url": url, "mode": "execute", "query": "DELETE FROM sluice_kinds WHERE flag = ?", "params": [true]})).await;
    assert_eq!(out, json!({"rows_affected": 1}));
}
