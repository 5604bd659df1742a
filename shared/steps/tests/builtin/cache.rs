use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sluice_steps::CacheStep;

use super::{context, run_in, MemoryCache};

#[tokio::test]
async fn saves_reads_and_deletes() {
    let cache = Arc::new(MemoryCache::default());
    let ctx = context(cache.clone(), &[]);
    let step = CacheStep;

    let saved = run_in(
        &step,
        json!({"action": "save", "key": "k", "value": {"n": [1, 2]}, "ttl_seconds": 60}),
        &ctx,
    )
    .await
    .0
    .unwrap();
    assert_eq!(saved.value, json!({"key": "k"}));
    assert_eq!(
        cache.entries.lock().unwrap()["k"],
        (json!({"n": [1, 2]}), Some(Duration::from_secs(60)))
    );

    let read = run_in(&step, json!({"action": "read", "key": "k"}), &ctx)
        .await
        .0
        .unwrap();
    assert_eq!(read.value, json!({"n": [1, 2]}));

    // A default is ignored when the key exists.
    let read = run_in(
        &step,
        json!({"action": "read", "key": "k", "default": 0}),
        &ctx,
    )
    .await
    .0
    .unwrap();
    assert_eq!(read.value, json!({"n": [1, 2]}));

    let deleted = run_in(&step, json!({"action": "delete", "key": "k"}), &ctx)
        .await
        .0
        .unwrap();
    assert_eq!(deleted.value, json!({"key": "k"}));
    assert!(cache.entries.lock().unwrap().is_empty());
    // Deleting again succeeds.
    run_in(&step, json!({"action": "delete", "key": "k"}), &ctx)
        .await
        .0
        .unwrap();

    // Save without TTL; saving null is saving a value.
    run_in(
        &step,
        json!({"action": "save", "key": "n", "value": null}),
        &ctx,
    )
    .await
    .0
    .unwrap();
    assert_eq!(cache.entries.lock().unwrap()["n"], (json!(null), None));
}

#[tokio::test]
async fn missing_key_uses_the_default_or_fails_naming_the_key() {
    let ctx = context(Arc::new(MemoryCache::default()), &[]);
    let step = CacheStep;
    let read = run_in(
        &step,
        json!({"action": "read", "key": "gone", "default": [1]}),
        &ctx,
    )
    .await
    .0
    .unwrap();
    assert_eq!(read.value, json!([1]));
    // An explicit null default is a default.
    let read = run_in(
        &step,
        json!({"action": "read", "key": "gone", "default": null}),
        &ctx,
    )
    .await
    .0
    .unwrap();
    assert_eq!(read.value, json!(null));

    let e = run_in(&step, json!({"action": "read", "key": "gone"}), &ctx)
        .await
        .0
        .unwrap_err();
    assert!(!e.is_retryable());
    assert!(e.message().contains("\"gone\""), "{e}");
    assert!(e.message().contains("not found"), "{e}");
}

#[tokio::test]
async fn parameters_must_fit_the_action() {
    let ctx = context(Arc::new(MemoryCache::default()), &[]);
    let step = CacheStep;
    for (params, needle) in [
        (json!({"action": "save", "key": "k"}), "needs a \"value\""),
        (
            json!({"action": "save", "key": "k", "value": 1, "ttl_seconds": 0}),
            "ttl_seconds",
        ),
        (
            // A reference may bring any integer: one that would overflow expiry dates
            // is refused.
            json!({"action": "save", "key": "k", "value": 1, "ttl_seconds": u64::MAX}),
            "\"ttl_seconds\" must be between 1 and",
        ),
        (
            json!({"action": "read", "key": "k", "value": 1}),
            "\"value\"",
        ),
        (
            json!({"action": "delete", "key": "k", "default": 1}),
            "\"default\"",
        ),
        (json!({"action": "save", "key": "", "value": 1}), "empty"),
        (json!({"action": "fetch", "key": "k"}), "fetch"),
    ] {
        let e = run_in(&step, params.clone(), &ctx).await.0.unwrap_err();
        assert!(!e.is_retryable(), "{params}");
        assert!(e.message().contains(needle), "{params}: {e}");
    }
}
