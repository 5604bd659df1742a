use crate::{DataDirLock, LockError};

#[test]
fn a_second_holder_is_refused_until_the_first_drops() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let first = DataDirLock::acquire(&data_dir).unwrap();
    assert_eq!(first.path(), data_dir.join("lock"));

    match DataDirLock::acquire(&data_dir) {
        Err(LockError::Held { pid, .. }) => {
            assert_eq!(pid, Some(std::process::id()));
        }
        other => panic!("expected the lock to be held, got {other:?}"),
    }
    let message = DataDirLock::acquire(&data_dir).unwrap_err().to_string();
    assert!(message.contains("another sluice process"), "{message}");
    assert!(
        message.contains(&format!("pid {}", std::process::id())),
        "{message}"
    );

    drop(first);
    let again = DataDirLock::acquire(&data_dir).unwrap();
    drop(again);
}
