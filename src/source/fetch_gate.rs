//! Who may fetch now. A fetch runs libgit2 on a thread of its own, and a server that
//! accepts and never answers can hold that thread until the connection dies; so one tenant's
//! dead servers must not take every thread. The gate allows one fetch per source at a time
//! (a source whose last fetch has not returned is not fetched again), a bounded number per
//! namespace, and a bounded number in all. A slot is released when the fetch's thread
//! returns, not when its caller stops waiting, so threads stuck on a dead server keep
//! counting against their own namespace.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a fetch did not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Busy {
    #[error(
        "the previous fetch of this source has not returned yet (its server does not answer); \
         not starting another"
    )]
    SourceInFlight,
    #[error("{limit} fetches of namespace {namespace} are still running; this one waits its turn")]
    NamespaceFull { namespace: String, limit: usize },
    #[error("every fetch slot of the controller stayed busy for {0:?}")]
    Saturated(Duration),
}

#[derive(Default)]
struct Counts {
    in_flight: HashSet<(String, String)>,
    per_namespace: HashMap<String, usize>,
}

/// The bounds of [`FetchGate`].
#[derive(Clone)]
pub struct FetchGate {
    counts: Arc<Mutex<Counts>>,
    all: Arc<Semaphore>,
    per_namespace: usize,
}

/// One admitted fetch; dropping it (when the fetch's thread returns) frees its slots.
pub struct Slot {
    _counted: Counted,
    _permit: OwnedSemaphorePermit,
}

/// A source counted as fetching; uncounted on drop.
struct Counted {
    counts: Arc<Mutex<Counts>>,
    key: (String, String),
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut c = self.counts.lock().expect("fetch gate");
        c.in_flight.remove(&self.key);
        if let Some(n) = c.per_namespace.get_mut(&self.key.0) {
            *n -= 1;
            if *n == 0 {
                c.per_namespace.remove(&self.key.0);
            }
        }
    }
}

impl std::fmt::Debug for FetchGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchGate")
            .field("available", &self.all.available_permits())
            .field("per_namespace", &self.per_namespace)
            .finish()
    }
}

impl FetchGate {
    pub fn new(total: usize, per_namespace: usize) -> Self {
        Self {
            counts: Default::default(),
            all: Arc::new(Semaphore::new(total.max(1))),
            per_namespace: per_namespace.max(1),
        }
    }

    /// The fetches one namespace may run at once: `flag`, but never more than half the
    /// GitRepository reconciles that run at once (`reconcile_concurrency`, 0: unbounded),
    /// since a fetch that waits on a silent server holds its reconcile slot until its
    /// timeout; one namespace's dead servers then never hold every slot.
    pub fn per_namespace_bound(flag: usize, reconcile_concurrency: u16) -> usize {
        match reconcile_concurrency {
            0 => flag,
            c => flag.min((c as usize / 2).max(1)),
        }
    }

    /// Admits a fetch of `namespace/name`: at once refused when that source or its
    /// namespace is busy (the caller looks again later, without holding a reconcile slot);
    /// otherwise waits at most `wait` for a controller-wide slot.
    pub async fn admit(&self, namespace: &str, name: &str, wait: Duration) -> Result<Slot, Busy> {
        let key = (namespace.to_string(), name.to_string());
        {
            let mut c = self.counts.lock().expect("fetch gate");
            if c.in_flight.contains(&key) {
                return Err(Busy::SourceInFlight);
            }
            let n = c.per_namespace.entry(key.0.clone()).or_insert(0);
            if *n >= self.per_namespace {
                return Err(Busy::NamespaceFull {
                    namespace: key.0.clone(),
                    limit: self.per_namespace,
                });
            }
            *n += 1;
            c.in_flight.insert(key.clone());
        }
        // Counted before waiting, so that a wait that ends (or is cancelled) uncounts it.
        let counted = Counted {
            counts: self.counts.clone(),
            key,
        };
        let permit = tokio::time::timeout(wait, self.all.clone().acquire_owned())
            .await
            .map_err(|_| Busy::Saturated(wait))?
            .expect("the fetch semaphore is never closed");
        Ok(Slot {
            _counted: counted,
            _permit: permit,
        })
    }

    /// Fetches of `namespace` running now (for tests and metrics).
    pub fn running_in(&self, namespace: &str) -> usize {
        let c = self.counts.lock().expect("fetch gate");
        c.per_namespace.get(namespace).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_namespace_never_takes_more_than_half_the_reconcile_slots() {
        assert_eq!(FetchGate::per_namespace_bound(16, 64), 16);
        assert_eq!(FetchGate::per_namespace_bound(16, 8), 4);
        assert_eq!(FetchGate::per_namespace_bound(16, 2), 1);
        assert_eq!(FetchGate::per_namespace_bound(16, 1), 1);
        assert_eq!(
            FetchGate::per_namespace_bound(16, 0),
            16,
            "no reconcile bound"
        );
    }

    use super::*;

    #[tokio::test]
    async fn one_fetch_per_source_a_few_per_namespace_and_slots_come_back_on_drop() {
        let gate = FetchGate::new(3, 2);
        let wait = Duration::from_millis(50);
        let a = gate.admit("t1", "a", wait).await.unwrap();
        assert_eq!(
            gate.admit("t1", "a", wait).await.err(),
            Some(Busy::SourceInFlight)
        );
        let b = gate.admit("t1", "b", wait).await.unwrap();
        assert!(matches!(
            gate.admit("t1", "c", wait).await,
            Err(Busy::NamespaceFull { limit: 2, .. })
        ));
        // Another namespace is not held up by t1's.
        let other = gate.admit("t2", "a", wait).await.unwrap();
        assert_eq!(gate.running_in("t1"), 2);
        // The controller-wide bound (3) is reached: a fourth waits, then gives up, and its
        // reservation is returned.
        assert!(matches!(
            gate.admit("t3", "x", wait).await,
            Err(Busy::Saturated(_))
        ));
        assert_eq!(gate.running_in("t3"), 0);
        drop(a);
        assert_eq!(gate.running_in("t1"), 1);
        let again = gate.admit("t1", "a", wait).await.unwrap();
        drop((b, other, again));
        assert_eq!(gate.running_in("t1"), 0);
        assert_eq!(gate.running_in("t2"), 0);
    }
}
