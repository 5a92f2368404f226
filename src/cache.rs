//! Waiting for a watch cache's first list from many tasks at once.
//!
//! kube's `Store::wait_until_ready` keeps one waker: when several futures wait on the same
//! store (reconciles started before the first list, or requests of several viewers), only
//! the last one polled is woken and the others wait forever. `Readiness` waits once, in a
//! task of its own, and wakes every waiter.

use std::sync::Arc;

use kube::runtime::reflector::{Lookup, Store};
use tokio::sync::SetOnce;

/// Whether a watch cache has had its first list (or will never have it: its writer is gone).
#[derive(Clone)]
pub struct Readiness(Arc<SetOnce<Result<(), WriterGone>>>);

/// The cache's writer was dropped before its first list.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the watch cache stopped before its first list")]
pub struct WriterGone;

impl Readiness {
    /// Follows `store` (spawns one task on the current runtime).
    pub fn of<K>(store: &Store<K>) -> Self
    where
        K: Lookup + Clone + Send + Sync + 'static,
        K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
    {
        let ready = Arc::new(SetOnce::new());
        let store = store.clone();
        let set = ready.clone();
        tokio::spawn(async move {
            let result = store.wait_until_ready().await.map_err(|_| WriterGone);
            let _ = set.set(result);
        });
        Readiness(ready)
    }

    /// Waits for the first list.
    pub async fn wait(&self) -> Result<(), WriterGone> {
        *self.0.wait().await
    }

    /// Whether the first list is in.
    pub fn is_ready(&self) -> bool {
        matches!(self.0.get(), Some(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::reflector::{self, store::Writer};
    use kube::runtime::watcher;

    use super::*;

    /// Many waiters polled before the first list are all woken by it (kube's own wait
    /// wakes only the last of them).
    #[tokio::test]
    async fn every_waiter_is_woken_by_the_first_list() {
        let (reader, mut writer): (_, Writer<ConfigMap>) = reflector::store();
        let ready = Readiness::of(&reader);
        let waiters: Vec<_> = (0..5)
            .map(|_| {
                let ready = ready.clone();
                tokio::spawn(async move { ready.wait().await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!ready.is_ready());
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitDone);
        for w in waiters {
            tokio::time::timeout(Duration::from_secs(5), w)
                .await
                .expect("every waiter is woken")
                .unwrap()
                .unwrap();
        }
        assert!(ready.is_ready());
    }

    #[tokio::test]
    async fn a_dropped_writer_ends_the_wait_with_an_error() {
        let (reader, writer): (_, Writer<ConfigMap>) = reflector::store();
        let ready = Readiness::of(&reader);
        drop(writer);
        assert!(ready.wait().await.is_err());
    }
}
