//! `sql` against a real PostgreSQL server: `scripts/start-postgres.sh` starts one and
//! prints `SLUICE_TEST_POSTGRES_URL`. Without it this test fails: it never skips.

use serde_json::json;
use sluice_steps::Sql;

use super::{err, ok};

fn url() -> String {
    std::env::var("SLUICE_TEST_POSTGRES_URL").expect(
        "SLUICE_TEST_POSTGRES_URL is not set: run `eval \"$(scripts/start-postgres.sh)\"` first \
         (scripts/test.sh does), or use scripts/test.sh",
    )
}

#[tokio::test]
async fn postgres_round_trip() {
    let url = url();
    let step = Sql::new();
    ok(
        &step,
        json!({"url": url, "mode": "execute", "query": "
            DROP TABLE IF EXISTS sluice_kinds;
            DROP TYPE IF EXISTS sluice_mood;
            CREATE TYPE sluice_mood AS ENUM ('happy', 'sad');
            CREATE TABLE sluice_kinds (
                id serial PRIMARY KEY,
                small int2, big int8 NOT NULL, real4 float4, real8 float8, price numeric(12, 2),
                huge numeric, name varchar(40), code char(3), flag bool, at timestamptz,
                local timestamp, day date, clock time, uid uuid, doc jsonb, raw bytea,
                tags text[], counts int4[], mood sluice_mood, span interval
            );
        "}),
    )
    .await;

    // NULL into an integer column binds (untyped NULL); objects bind as jsonb; strings as
    // text, cast where needed.
    let out = ok(
        &step,
        json!({"url": url, "mode": "execute",
               "query": "INSERT INTO sluice_kinds (small, big, real4, real8, price, huge, name, code, flag, at, local, day, clock, uid, doc, raw, tags, counts, mood, span)
                         VALUES ($1, $2, $3, $4, $5, '123456789012345678901234567890.5', $6, 'abc', $7, $8::timestamptz, '2024-01-02 03:04:05.25', '2024-02-29', '23:59:58', $9::uuid, $10, '\\x00ff', ARRAY['a', NULL], '{1,2,NULL}', 'happy', '1 day')",
               "params": [null, 9007199254740993_i64, 1.1, 2.5, 19.99, "it's", true, "2024-01-02T03:04:05Z",
                          "6f1c2a9e-3d4b-4c5d-8e9f-0a1b2c3d4e5f", {"k": [1, "two"], "n": null}]}),
    )
    .await;
    assert_eq!(out, json!({"rows_affected": 1}));

    let rows = ok(
        &step,
        json!({"url": url, "query": "SELECT id, small, big, real4, real8, price, huge, name, code, flag, at, local, day, clock, uid, doc, raw, tags, counts, mood FROM sluice_kinds WHERE name = $1", "params": ["it's"]}),
    )
    .await;
    assert_eq!(
        rows,
        json!([{
            "id": 1, "small": null, "big": 9007199254740993_i64, "real4": 1.1, "real8": 2.5,
            "price": 19.99, "huge": "123456789012345678901234567890.5", "name": "it's",
            "code": "abc", "flag": true, "at": "2024-01-02T03:04:05Z",
            "local": "2024-01-02T03:04:05.250", "day": "2024-02-29", "clock": "23:59:58",
            "uid": "6f1c2a9e-3d4b-4c5d-8e9f-0a1b2c3d4e5f", "doc": {"k": [1, "two"], "n": null},
            "raw": "AP8=", "tags": ["a", null], "counts": [1, 2, null], "mood": "happy"
        }])
    );

    // Injection text is a value, not SQL.
    let rows = ok(&step, json!({"url": url, "query": "SELECT count(*) AS n FROM sluice_kinds WHERE name = $1", "params": ["x' OR '1'='1"]})).await;
    assert_eq!(rows, json!([{"n": 0}]));

    // A type without a faithful conversion names itself and the cast to use.
    let e = err(
        &step,
        json!({"url": url, "query": "SELECT span FROM sluice_kinds"}),
    )
    .await;
    assert!(!e.is_retryable());
    assert!(e.message().contains("column \"span\""), "{e}");
    assert!(e.message().contains("INTERVAL"), "{e}");
    assert!(e.message().contains("::text"), "{e}");
    let rows = ok(
        &step,
        json!({"url": url, "query": "SELECT span::text AS span FROM sluice_kinds"}),
    )
    .await;
    assert_eq!(rows, json!([{"span": "1 day"}]));

    let columns = ok(
        &step,
        json!({"url": url, "mode": "describe", "table": "sluice_kinds"}),
    )
    .await;
    let columns = columns.as_array().unwrap();
    assert_eq!(columns.len(), 21);
    assert_eq!(
        columns[0],
        json!({"name": "id", "type": "integer", "nullable": false})
    );
    assert_eq!(
        columns[2],
        json!({"name": "big", "type": "bigint", "nullable": false})
    );
    assert_eq!(
        columns[5],
        json!({"name": "price", "type": "numeric(12,2)", "nullable": true})
    );
    assert_eq!(
        columns[7],
        json!({"name": "name", "type": "character varying(40)", "nullable": true})
    );
    assert_eq!(
        columns[10],
        json!({"name": "at", "type": "timestamp with time zone", "nullable": true})
    );
    assert_eq!(
        ok(
            &step,
            json!({"url": url, "mode": "describe", "table": "public.sluice_kinds"})
        )
        .await,
        json!(columns)
    );
    let e = err(
        &step,
        json!({"url": url, "mode": "describe", "table": "sluice_nothing"}),
    )
    .await;
    assert!(!e.is_retryable());
    assert!(e.message().contains("not found"), "{e}");

    let e = err(
        &step,
        json!({"url": url, "query": "SELECT * FROM sluice_nowhere"}),
    )
    .await;
    assert!(!e.is_retryable());
    assert!(e.message().contains("sluice_nowhere"), "{e}");

    let out = ok(&step, json!({"url": url, "mode": "execute", "query": "DELETE FROM sluice_kinds WHERE flag = $1", "params": [true]})).await;
    assert_eq!(out, json!({"rows_affected": 1}));
}

/// A value shaped like an injection is bound as data on PostgreSQL too.
#[tokio::test]
async fn postgres_binds_injection_text_as_data() {
    let url = url();
    let step = Sql::new();
    ok(
        &step,
        json!({"url": url, "mode": "execute", "query": "
            DROP TABLE IF EXISTS sluice_users;
            CREATE TABLE sluice_users (name text);
            INSERT INTO sluice_users VALUES ('ann');
        "}),
    )
    .await;
    let injection = "x'; drop table sluice_users; --";
    let rows = ok(
        &step,
        json!({"url": url, "query": "SELECT name FROM sluice_users WHERE name = $1", "params": [injection]}),
    )
    .await;
    assert_eq!(rows, json!([]));
    let rows = ok(
        &step,
        json!({"url": url, "query": "SELECT count(*)::int8 AS n FROM sluice_users"}),
    )
    .await;
    assert_eq!(rows, json!([{"n": 1}]));
}
