//! Who may fetch now. A fetch runs libgit2 on a thread of its own, and a server that
//! accepts and never answers can hold that thread until the connection dies; so one tenant's
//! dead servers must not take every thread. The gate allows one fetch per source at a time
//! (a source whose last fetch has not returned is not fetched again), a bounded number per
//! namespace, and a bounded number in all. A slot is released when the fetch's thread
//! returns, not when its caller stops waiting, so threads stuck on a dead server keep
//! counting against their own namespace.
//!
//! A source refused because its namespace is full joins that namespace's line, and each
//! slot the namespace frees calls the next in line ([`FetchGate::turns`]): a namespace of a
//! thousand sources fetches as fast as its slots free, without every waiting source
//! asking again and again.

use std::collections::{HashMap, HashSet, VecDeque};
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

/// A source, as (namespace, name).
pub type SourceKey = (String, String);

#[derive(Default)]
struct Counts {
    in_flight: HashSet<SourceKey>,
    per_namespace: HashMap<String, usize>,
    /// Per namespace, the names refused for want of a slot, first refused first.
    waiting: HashMap<String, VecDeque<String>>,
    /// Called by a freed slot and not yet admitted: refused again, they keep their place
    /// at the head of the line.
    called: HashSet<SourceKey>,
    /// Where a freed slot calls the next in line.
    turns: Option<futures::channel::mpsc::UnboundedSender<SourceKey>>,
}

impl Counts {
    /// Puts a refused source in its namespace's line (once), at the head when it had been
    /// called.
    fn wait(&mut self, key: &SourceKey) {
        let line = self.waiting.entry(key.0.clone()).or_default();
        if line.contains(&key.1) {
            return;
        }
        if self.called.remove(key) {
            line.push_front(key.1.clone());
        } else {
            line.push_back(key.1.clone());
        }
    }

    /// Takes a source out of its namespace's line, called or not.
    fn leave_line(&mut self, key: &SourceKey) {
        self.called.remove(key);
        if let Some(line) = self.waiting.get_mut(&key.0) {
            line.retain(|waiting| *waiting != key.1);
            if line.is_empty() {
                self.waiting.remove(&key.0);
            }
        }
    }

    /// A slot of `namespace` is free: calls the next in its line.
    fn call_next(&mut self, namespace: &str) {
        let Some(line) = self.waiting.get_mut(namespace) else {
            return;
        };
        let next = line.pop_front();
        if line.is_empty() {
            self.waiting.remove(namespace);
        }
        if let (Some(name), Some(turns)) = (next, &self.turns) {
            let key = (namespace.to_string(), name);
            if turns.unbounded_send(key.clone()).is_ok() {
                self.called.insert(key);
            }
        }
    }
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
        c.call_next(&self.key.0);
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

    /// Where the sources called by freed slots are sent, from now on (a second call
    /// replaces the first receiver). Without it, a refused source only learns of its turn
    /// when it asks again.
    pub fn turns(&self) -> futures::channel::mpsc::UnboundedReceiver<SourceKey> {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        self.counts.lock().expect("fetch gate").turns = Some(tx);
        rx
    }

    /// Admits a fetch of `namespace/name`: at once refused when that source or its
    /// namespace is busy (the caller looks again later, without holding a reconcile slot;
    /// refused for its namespace, it is also called by [`FetchGate::turns`] when its turn
    /// comes); otherwise waits at most `wait` for a controller-wide slot.
    pub async fn admit(&self, namespace: &str, name: &str, wait: Duration) -> Result<Slot, Busy> {
        let key = (namespace.to_string(), name.to_string());
        {
            let mut c = self.counts.lock().expect("fetch gate");
            if c.in_flight.contains(&key) {
                return Err(Busy::SourceInFlight);
            }
            let n = c.per_namespace.get(&key.0).copied().unwrap_or(0);
            if n >= self.per_namespace {
                c.wait(&key);
                return Err(Busy::NamespaceFull {
                    namespace: key.0.clone(),
                    limit: self.per_namespace,
                });
            }
            *c.per_namespace.entry(key.0.clone()).or_insert(0) += 1;
            c.in_flight.insert(key.clone());
            c.leave_line(&key);
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

    /// Takes a deleted source out of its namespace's line: a turn is never spent on it.
    pub fn forget(&self, namespace: &str, name: &str) {
        let key = (namespace.to_string(), name.to_string());
        self.counts.lock().expect("fetch gate").leave_line(&key);
    }

    /// Sources of `namespace` waiting for a slot, first in line first (for tests).
    pub fn line_of(&self, namespace: &str) -> Vec<String> {
        let c = self.counts.lock().expect("fetch gate");
        c.waiting
            .get(namespace)
            .map(|line| line.iter().cloned().collect())
            .unwrap_or_default()
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

    #[tokio::test]
    async fn a_freed_slot_calls_the_first_source_refused_for_its_namespace() {
        use futures::StreamExt;
        let gate = FetchGate::new(8, 2);
        let mut turns = gate.turns();
        let wait = Duration::from_millis(50);
        let a = gate.admit("t1", "a", wait).await.unwrap();
        let b = gate.admit("t1", "b", wait).await.unwrap();
        for name in ["c", "d", "c", "e"] {
            assert!(gate.admit("t1", name, wait).await.is_err());
        }
        assert_eq!(gate.line_of("t1"), ["c", "d", "e"], "each once, in order");
        // Another namespace's slot does not call t1's line.
        drop(gate.admit("t2", "x", wait).await.unwrap());
        assert!(turns.try_recv().is_err(), "nothing called yet");

        drop(a);
        assert_eq!(turns.next().await, Some(("t1".into(), "c".into())));
        assert_eq!(gate.line_of("t1"), ["d", "e"]);
        // Before c comes, someone else takes the slot: c is refused and keeps the head.
        let f = gate.admit("t1", "f", wait).await.unwrap();
        assert!(gate.admit("t1", "c", wait).await.is_err());
        assert_eq!(gate.line_of("t1"), ["c", "d", "e"]);

        drop(f);
        assert_eq!(turns.next().await, Some(("t1".into(), "c".into())));
        let c = gate.admit("t1", "c", wait).await.unwrap();
        // A source deleted while in line is never called.
        gate.forget("t1", "d");
        drop(b);
        assert_eq!(turns.next().await, Some(("t1".into(), "e".into())));
        assert!(gate.line_of("t1").is_empty());
        drop(c);
        assert!(turns.try_recv().is_err(), "an empty line calls no one");
        // A source in line that asks again on its own and finds a slot leaves the line.
        let g = gate.admit("t1", "g", wait).await.unwrap();
        let h = gate.admit("t1", "h", wait).await.unwrap();
        for name in ["i", "j"] {
            assert!(gate.admit("t1", name, wait).await.is_err());
        }
        drop(g);
        assert_eq!(turns.next().await, Some(("t1".into(), "i".into())));
        let j = gate.admit("t1", "j", wait).await.unwrap();
        assert!(gate.line_of("t1").is_empty());
        drop((h, j));
    }
}
