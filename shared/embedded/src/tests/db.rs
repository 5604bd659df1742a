//! The group commit of `Shared::write`: atomic operations, committed before returning,
//! never leaving the write lock held (errors, cancellation, panics).

use std::future::Future;
use std::time::Duration;

use rusqlite::Connection;

use super::temp_store;

fn other_connection(dir: &tempfile::TempDir) -> Connection {
    let conn = Connection::open(dir.path().join("sluice.db")).unwrap();
    conn.busy_timeout(Duration::ZERO).unwrap();
    conn
}

fn cache_keys(conn: &Connection) -> Vec<String> {
    let mut stmt = conn.prepare("SELECT key FROM cache ORDER BY key").unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn insert(conn: &Connection, key: &str) -> rusqlite::Result<usize> {
    conn.execute(
        "INSERT INTO cache (key, value, expires_at) VALUES (?1, 'null', NULL)",
        [key],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_are_committed_and_a_failed_one_is_undone_alone() {
    let (dir, store) = temp_store();
    let shared = store.shared.clone();
    let mut handles = Vec::new();
    for i in 0..20 {
        let shared = shared.clone();
        handles.push(tokio::spawn(async move {
            shared
                .write(|conn| {
                    insert(conn, &format!("k{i:02}"))?;
                    if i == 7 {
                        // The second statement fails: the first must be undone too.
                        insert(conn, "k00-dup")?;
                        insert(conn, "k00-dup")?;
                    }
                    Ok(())
                })
                .await
        }));
    }
    let mut failures = 0;
    for handle in handles {
        if handle.await.unwrap().is_err() {
            failures += 1;
        }
    }
    assert_eq!(failures, 1);
    // Another process sees every successful write, and none of the failed one.
    let keys = cache_keys(&other_connection(&dir));
    assert_eq!(keys.len(), 19);
    assert!(!keys.contains(&"k07".to_string()));
    assert!(!keys.contains(&"k00-dup".to_string()));
}

#[tokio::test]
async fn a_cancelled_write_is_still_committed() {
    let (dir, store) = temp_store();
    let mut write = Box::pin(store.shared.write(|conn| insert(conn, "cancelled")));
    // Polled once (the statement runs, then it yields), then dropped.
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(write.as_mut().poll(cx))).await;
    assert!(first.is_pending());
    let other = other_connection(&dir);
    assert!(
        insert(&other, "while-open").is_err(),
        "the transaction is open"
    );
    drop(write);
    assert_eq!(cache_keys(&other), ["cancelled"]);
    // The write lock is free.
    insert(&other, "from-another-process").unwrap();
}

#[tokio::test]
async fn a_panicking_write_is_undone_and_releases_the_lock() {
    let (dir, store) = temp_store();
    let store2 = store.clone();
    let panicked = tokio::spawn(async move {
        store2
            .shared
            .write(|conn| {
                insert(conn, "half-done").unwrap();
                panic!("boom");
                #[allow(unreachable_code)]
                Ok(())
            })
            .await
    })
    .await;
    assert!(panicked.is_err());
    let other = other_connection(&dir);
    assert!(cache_keys(&other).is_empty());
    insert(&other, "from-another-process").unwrap();
    // The store still works.
    store
        .shared
        .write(|conn| insert(conn, "after"))
        .await
        .unwrap();
    assert_eq!(cache_keys(&other), ["after", "from-another-process"]);
}
