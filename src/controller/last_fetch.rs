//! When each GitRepository was last fetched, and for which spec and request, so that a
//! reconcile woken by something else (a status write, a finalizer, another controller's
//! write to it) does not fetch again before its interval: only a new generation, a new
//! `gantry.dev/requested-at` or the interval's end does (as Flux's source controller
//! reacts to a changed generation or a reconcile request only).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

type Key = (String, String);

#[derive(Clone, Debug)]
struct Fetched {
    at: Instant,
    generation: Option<i64>,
    request: Option<String>,
}

#[derive(Default)]
pub struct LastFetches(Mutex<HashMap<Key, Fetched>>);

impl LastFetches {
    /// A fetch of the source at `generation`, for `request`, has just returned.
    pub fn record(&self, ns: &str, name: &str, generation: Option<i64>, request: Option<&str>) {
        self.0.lock().expect("last fetches").insert(
            (ns.to_string(), name.to_string()),
            Fetched {
                at: Instant::now(),
                generation,
                request: request.map(str::to_string),
            },
        );
    }

    /// `Some(wait)` when no fetch is due: the last one was of this generation and request,
    /// less than `interval` ago; `wait` is what is left of the interval.
    pub fn not_due(
        &self,
        ns: &str,
        name: &str,
        generation: Option<i64>,
        request: Option<&str>,
        interval: Duration,
    ) -> Option<Duration> {
        let map = self.0.lock().expect("last fetches");
        let last = map.get(&(ns.to_string(), name.to_string()))?;
        let same = last.generation == generation && last.request.as_deref() == request;
        let left = interval.checked_sub(last.at.elapsed())?;
        (same && !left.is_zero()).then_some(left)
    }

    pub fn forget(&self, ns: &str, name: &str) {
        self.0
            .lock()
            .expect("last fetches")
            .remove(&(ns.to_string(), name.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_new_generation_a_new_request_or_the_interval_makes_a_fetch_due() {
        let fetches = LastFetches::default();
        let minute = Duration::from_secs(60);
        assert_eq!(
            fetches.not_due("ns", "r", Some(1), None, minute),
            None,
            "never fetched"
        );
        fetches.record("ns", "r", Some(1), None);
        let left = fetches
            .not_due("ns", "r", Some(1), None, minute)
            .expect("not due");
        assert!(left <= minute && left > Duration::from_secs(55));
        assert_eq!(
            fetches.not_due("ns", "r", Some(2), None, minute),
            None,
            "new spec"
        );
        assert_eq!(
            fetches.not_due("ns", "r", Some(1), Some("now"), minute),
            None,
            "asked"
        );
        assert_eq!(fetches.not_due("ns", "other", Some(1), None, minute), None);
        assert_eq!(
            fetches.not_due("ns", "r", Some(1), None, Duration::ZERO),
            None,
            "interval over"
        );
        fetches.forget("ns", "r");
        assert_eq!(fetches.not_due("ns", "r", Some(1), None, minute), None);
    }
}
