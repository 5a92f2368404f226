//! Bounded concurrency with results in input order.
//!
//! A finished request frees its slot at once, whatever is still in flight before it: with
//! an ordered queue (`buffered`), one slow request at the head (a Service create waiting on
//! the API server's cluster-IP allocator) holds every slot behind it.

use futures::{StreamExt, stream};
use std::future::Future;

/// Runs every future, at most `concurrency` at a time; returns the outputs in input order.
pub async fn run<T, Fut>(jobs: impl IntoIterator<Item = Fut>, concurrency: usize) -> Vec<T>
where
    Fut: Future<Output = T>,
{
    let tagged: Vec<_> = jobs
        .into_iter()
        .enumerate()
        .map(|(i, job)| numbered(i, job))
        .collect();
    let mut out: Vec<(usize, T)> = stream::iter(tagged)
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, t)| t).collect()
}

async fn numbered<F: Future>(i: usize, job: F) -> (usize, F::Output) {
    (i, job.await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn input_order_within_the_bound() {
        let live = Arc::new(Mutex::new((0usize, 0usize)));
        let delays: Vec<u64> = (0..40).map(|i| (i * 7) % 5).collect();
        let out = run(
            delays.iter().map(|&ms| {
                let live = live.clone();
                async move {
                    {
                        let mut l = live.lock().unwrap();
                        l.0 += 1;
                        l.1 = l.1.max(l.0);
                    }
                    tokio::time::sleep(Duration::from_millis(1 + ms)).await;
                    live.lock().unwrap().0 -= 1;
                    ms * 10
                }
            }),
            6,
        )
        .await;
        assert_eq!(out, delays.iter().map(|x| x * 10).collect::<Vec<_>>());
        assert_eq!(
            live.lock().unwrap().1,
            6,
            "never more than the bound in flight"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_head_does_not_hold_the_slots_behind_it() {
        // One 100 ms job first, then 30 jobs of 10 ms, 4 slots: the short ones flow through
        // the 3 free slots (10 rounds of 10 ms) while the long one runs.
        let start = tokio::time::Instant::now();
        let jobs = std::iter::once(100u64)
            .chain(std::iter::repeat_n(10, 30))
            .map(|ms| async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                start.elapsed()
            });
        let done = run(jobs, 4).await;
        let last = done.iter().max().unwrap();
        assert!(*last <= Duration::from_millis(101), "{last:?}");
    }

    #[tokio::test]
    async fn empty_input() {
        let out: Vec<u8> = run(Vec::<std::future::Ready<u8>>::new(), 4).await;
        assert!(out.is_empty());
    }
}
