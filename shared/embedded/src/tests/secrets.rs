use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

use serde_json::{json, Value};
use sluice_core::ports::{SecretError, SecretStore};

use super::temp_store;
use crate::EmbeddedStore;

const PLAINTEXT: &str = "pl41ntext-T0KEN-that-must-never-hit-disk";

fn values() -> BTreeMap<String, Value> {
    BTreeMap::from([
        ("inv_token".to_string(), json!(PLAINTEXT)),
        ("nested".to_string(), json!({"password": "hunter2", "n": 3})),
    ])
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn round_trip_replace_and_delete() {
    let (_dir, store) = temp_store();
    let secrets = store.secrets();
    assert!(secrets.get_secrets("acme").await.unwrap().is_empty());
    secrets.put_secrets("acme", &values()).await.unwrap();
    assert_eq!(secrets.get_secrets("acme").await.unwrap(), values());

    let replaced = BTreeMap::from([("only".to_string(), json!(1))]);
    secrets.put_secrets("acme", &replaced).await.unwrap();
    assert_eq!(secrets.get_secrets("acme").await.unwrap(), replaced);
    assert!(secrets.get_secrets("other").await.unwrap().is_empty());

    secrets.delete_secrets("acme").await.unwrap();
    assert!(secrets.get_secrets("acme").await.unwrap().is_empty());
    secrets.delete_secrets("acme").await.unwrap();
}

#[tokio::test]
async fn key_file_is_created_on_first_use_with_mode_0600() {
    let (dir, store) = temp_store();
    let key_path = dir.path().join("secret.key");
    assert!(!key_path.exists(), "no key before secrets are used");
    store
        .secrets()
        .put_secrets("acme", &values())
        .await
        .unwrap();
    let meta = std::fs::metadata(&key_path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.len(), 32);
    // No temporary files left behind.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // A new process reads the same key.
    let key = std::fs::read(&key_path).unwrap();
    drop(store);
    let store = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(store.secrets().get_secrets("acme").await.unwrap(), values());
    assert_eq!(std::fs::read(&key_path).unwrap(), key);
}

#[tokio::test]
async fn plaintext_never_reaches_the_database_files() {
    let (dir, store) = temp_store();
    store
        .secrets()
        .put_secrets("acme", &values())
        .await
        .unwrap();
    store
        .secrets()
        .put_secrets("acme", &values())
        .await
        .unwrap();
    let mut checked = 0;
    for name in ["sluice.db", "sluice.db-wal", "sluice.db-shm"] {
        if let Ok(bytes) = std::fs::read(dir.path().join(name)) {
            assert!(
                !contains(&bytes, PLAINTEXT.as_bytes()),
                "plaintext in {name}"
            );
            assert!(!contains(&bytes, b"hunter2"), "plaintext in {name}");
            checked += bytes.len();
        }
    }
    assert!(checked > 0);
    // The ciphertext is there (the test reads the right files).
    let conn = rusqlite::Connection::open(dir.path().join("sluice.db")).unwrap();
    let count: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM secrets WHERE configuration = 'acme'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(count, 1);
}

#[tokio::test]
async fn same_values_encrypt_differently_each_time() {
    let (dir, store) = temp_store();
    let read = || {
        let conn = rusqlite::Connection::open(dir.path().join("sluice.db")).unwrap();
        conn.query_row(
            "SELECT nonce, ciphertext FROM secrets WHERE configuration = 'acme'",
            [],
            |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?)),
        )
        .unwrap()
    };
    store
        .secrets()
        .put_secrets("acme", &values())
        .await
        .unwrap();
    let first = read();
    store
        .secrets()
        .put_secrets("acme", &values())
        .await
        .unwrap();
    let second = read();
    assert_eq!(first.0.len(), 12);
    assert_ne!(first.0, second.0);
    assert_ne!(first.1, second.1);
}

#[tokio::test]
async fn a_tampered_key_fails_to_decrypt() {
    let (dir, store) = temp_store();
    store
        .secrets()
        .put_secrets("acme", &values())
        .await
        .unwrap();
    drop(store);
    let key_path = dir.path().join("secret.key");
    let mut key = std::fs::read(&key_path).unwrap();
    key[0] ^= 0xff;
    std::fs::write(&key_path, &key).unwrap();

    let store = EmbeddedStore::open(dir.path()).unwrap();
    match store.secrets().get_secrets("acme").await {
        Err(SecretError::Backend(message)) => {
            assert!(message.contains("key check failed"), "{message}")
        }
        other => panic!("expected a key check error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_deleted_key_is_refused_loudly_never_silently_replaced() {
    let (dir, store) = temp_store();
    store
        .secrets()
        .put_secrets("acme", &values())
        .await
        .unwrap();
    drop(store);
    let key_path = dir.path().join("secret.key");
    std::fs::remove_file(&key_path).unwrap();

    let store = EmbeddedStore::open(dir.path()).unwrap();
    for result in [
        store.secrets().check_key().await.map(|_| BTreeMap::new()),
        store.secrets().get_secrets("acme").await,
        store
            .secrets()
            .put_secrets("other", &values())
            .await
            .map(|_| BTreeMap::new()),
    ] {
        match result {
            Err(SecretError::Backend(message)) => {
                assert!(message.contains("is missing"), "{message}");
                assert!(message.contains("restore"), "{message}");
            }
            other => panic!("expected a missing-key error, got {other:?}"),
        }
    }
    assert!(!key_path.exists(), "no replacement key was created");
}

#[tokio::test]
async fn a_replaced_key_fails_the_key_check_before_any_value_is_read() {
    let (dir, store) = temp_store();
    store
        .secrets()
        .put_secrets("acme", &values())
        .await
        .unwrap();
    drop(store);
    let key_path = dir.path().join("secret.key");
    std::fs::remove_file(&key_path).unwrap();
    crate::secrets::load_or_create_key(&key_path).unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let e = store.secrets().check_key().await.unwrap_err();
    assert!(e.to_string().contains("key check failed"), "{e}");
}

#[tokio::test]
async fn with_no_stored_values_a_missing_key_is_simply_created_again() {
    let (dir, store) = temp_store();
    store
        .secrets()
        .put_secrets("acme", &values())
        .await
        .unwrap();
    store.secrets().delete_secrets("acme").await.unwrap();
    drop(store);
    std::fs::remove_file(dir.path().join("secret.key")).unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    store
        .secrets()
        .put_secrets("acme", &values())
        .await
        .unwrap();
    drop(store);
    let store = EmbeddedStore::open(dir.path()).unwrap();
    store.secrets().check_key().await.unwrap();
    assert_eq!(store.secrets().get_secrets("acme").await.unwrap(), values());
}

#[tokio::test]
async fn a_row_copied_to_another_configuration_does_not_decrypt() {
    let (dir, store) = temp_store();
    store
        .secrets()
        .put_secrets("acme", &values())
        .await
        .unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("sluice.db")).unwrap();
    conn.execute(
        "INSERT INTO secrets (configuration, nonce, ciphertext) \
         SELECT 'evil', nonce, ciphertext FROM secrets WHERE configuration = 'acme'",
        [],
    )
    .unwrap();
    assert!(matches!(
        store.secrets().get_secrets("evil").await,
        Err(SecretError::Decrypt { .. })
    ));
}

#[tokio::test]
async fn a_key_file_of_the_wrong_length_is_rejected() {
    let (dir, store) = temp_store();
    std::fs::write(dir.path().join("secret.key"), b"too short").unwrap();
    match store.secrets().put_secrets("acme", &values()).await {
        Err(SecretError::Backend(message)) => {
            assert!(message.contains("9 bytes, expected 32"), "{message}")
        }
        other => panic!("expected a key error, got {other:?}"),
    }
}

#[test]
fn concurrent_first_use_agrees_on_one_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret.key");
    let keys: Vec<Vec<u8>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| crate::secrets::load_or_create_key(&path).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(keys.iter().all(|k| k == &keys[0]));
    assert_eq!(std::fs::read(&path).unwrap(), keys[0]);
}
