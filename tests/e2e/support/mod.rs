//! Test support: the local control plane, namespaces, a Git server and an OCI registry.
//! Everything listens on and dials 127.0.0.1 only.

pub mod app;
pub mod browser;
pub mod chart_repo;
pub mod cluster;
pub mod controller;
pub mod cosign;
pub mod git;
pub mod gitea;
pub mod gpg;
pub mod hostile;
pub mod http_stub;
pub mod private_cluster;
pub mod process;
pub mod prometheus;
pub mod registry;
pub mod ssh;
pub mod webhook_sink;

use std::future::Future;
use std::time::Duration;

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Watches for object `name` through `api`: returns once the watch has listed what exists
/// (so nothing created after it returns is missed), with a task that ends with the object
/// the first time the watch sees it. Unlike polling, it also catches an object that exists
/// for a moment only (a canary aborted within a second). Call it before the change that
/// creates the object.
pub async fn first_seen<K>(api: kube::Api<K>, name: &str) -> tokio::task::JoinHandle<K>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default,
{
    use futures::StreamExt;
    use kube::runtime::WatchStreamExt;
    use kube::runtime::watcher::{self, Event};
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = watcher::watcher(api, config).default_backoff().boxed();
    let mut seen = None;
    loop {
        match stream.next().await {
            Some(Ok(Event::InitApply(object) | Event::Apply(object))) => {
                seen.get_or_insert(object);
            }
            Some(Ok(Event::InitDone)) => break,
            Some(_) => continue,
            None => panic!("the watch ended before its first list"),
        }
    }
    tokio::spawn(async move {
        if let Some(object) = seen {
            return object;
        }
        loop {
            match stream.next().await {
                Some(Ok(Event::InitApply(object) | Event::Apply(object))) => return object,
                Some(_) => continue,
                None => panic!("the watch ended before the object was seen"),
            }
        }
    })
}

/// A short random lowercase suffix for names that must not collide between tests.
pub fn random_suffix() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..6)
        .map(|_| (b'a' + rng.random_range(0..26u8)) as char)
        .collect()
}
