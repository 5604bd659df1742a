//! The store and queue ports' contract (`sluice_core::conformance`) on a fresh data
//! directory.

use std::sync::Arc;

use async_trait::async_trait;
use sluice_core::clock::ManualClock;
use sluice_core::conformance::{QueueFactory, Queues, StoreFactory, Stores};

use crate::EmbeddedStore;

struct FreshDataDir;

#[async_trait]
impl StoreFactory for FreshDataDir {
    async fn fresh(&self) -> Stores {
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = ManualClock::starting_now();
        let store = EmbeddedStore::open(dir.path())
            .expect("open store")
            .with_clock(clock.clone());
        let ports = store.ports();
        Stores {
            definitions: ports.definitions,
            runs: ports.runs,
            cache: ports.cache,
            secrets: ports.secrets,
            schedules: ports.schedules,
            stats: store.schedule_stats(),
            reports: ports.reports.clone(),
            packs: store.packs(),
            clock,
            keep: Box::new((dir, Arc::new(store))),
        }
    }
}

/// The queue on the system clock (its default); `tests/queue.rs` drives a manual one.
#[async_trait]
impl QueueFactory for FreshDataDir {
    async fn fresh(&self) -> Queues {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = EmbeddedStore::open(dir.path()).expect("open store");
        Queues {
            queue: Arc::new(store.queue()),
            name: "steps".into(),
            other: "other".into(),
            keep: Box::new((dir, Arc::new(store))),
        }
    }
}

sluice_core::store_conformance!(FreshDataDir);
sluice_core::queue_conformance!(FreshDataDir);
