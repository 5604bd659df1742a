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

#[tokio::test]
async fn the_data_directory_and_its_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let store = crate::EmbeddedStore::open(&dir).unwrap();
    store
        .runs()
        .put_output(
            &sluice_core::ports::OutputKey {
                run_id: "r".into(),
                step_id: "A".into(),
                unit: 0,
            },
            &serde_json::json!("x".repeat(crate::INLINE_OUTPUT_LIMIT + 10)),
            chrono::Utc::now() + chrono::Duration::days(1),
        )
        .await
        .unwrap();
    let _lock = crate::DataDirLock::acquire(&dir).unwrap();
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join(crate::OUTPUTS_DIR)), 0o700);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
    }
    let outputs: Vec<_> = std::fs::read_dir(dir.join(crate::OUTPUTS_DIR))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!outputs.is_empty());
    for path in outputs {
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
}

#[test]
fn a_data_directory_created_wider_is_made_private_on_open() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    std::fs::create_dir_all(dir.join(crate::OUTPUTS_DIR)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.join(crate::DATABASE_FILE), b"").unwrap();
    std::fs::set_permissions(
        dir.join(crate::DATABASE_FILE),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    drop(crate::EmbeddedStore::open(&dir).unwrap());
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join(crate::OUTPUTS_DIR)), 0o700);
    assert_eq!(mode(&dir.join(crate::DATABASE_FILE)), 0o600);
}

/// Staged writes (`RunStore::stage_writes`) are applied at once, seen by this process,
/// invisible to others until committed, and committed when their work ends even if it
/// never says so; writes to another database are not staged.
#[tokio::test]
async fn staged_writes_commit_together_and_never_outlive_their_work() {
    let (dir, store) = temp_store();
    let (other_dir, other_store) = temp_store();
    let shared = store.shared.clone();
    let other = other_connection(&dir);
    let work = {
        let shared = shared.clone();
        let other_shared = other_store.shared.clone();
        let dir = &dir;
        let other_dir = &other_dir;
        async move {
            shared.write(|conn| insert(conn, "a")).await.unwrap();
            shared.write(|conn| insert(conn, "b")).await.unwrap();
            // This process reads its staged writes; another process sees none yet.
            let mine = shared.read(|conn| Ok(cache_keys(conn))).unwrap();
            assert_eq!(mine, ["a", "b"]);
            assert!(cache_keys(&other_connection(dir)).is_empty());
            // Another data directory's writes are committed as usual.
            other_shared.write(|conn| insert(conn, "x")).await.unwrap();
            assert_eq!(cache_keys(&other_connection(other_dir)), ["x"]);
            shared.commit_staged().unwrap();
            assert_eq!(cache_keys(&other_connection(dir)), ["a", "b"]);
            // Staged again, and left for the end of the work to commit.
            shared.write(|conn| insert(conn, "c")).await.unwrap();
        }
    };
    shared.stage(Box::pin(work)).await;
    assert_eq!(cache_keys(&other), ["a", "b", "c"]);
    // Nor may abandoned work keep the write lock: dropping it commits what it staged.
    let abandoned = {
        let shared = shared.clone();
        async move {
            shared.write(|conn| insert(conn, "d")).await.unwrap();
            std::future::pending::<()>().await;
        }
    };
    let staged = shared.stage(Box::pin(abandoned));
    let timed_out = tokio::time::timeout(Duration::from_millis(20), staged).await;
    assert!(timed_out.is_err());
    assert_eq!(cache_keys(&other), ["a", "b", "c", "d"]);
    insert(&other, "e").expect("the write lock is free");
}
