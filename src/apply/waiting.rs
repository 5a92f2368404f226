//! A sync's waits on the cluster — hooks to finish, objects to be healthy or gone, new kinds
//! to be served — may last up to the Application's timeout. The task running the sync can
//! be told when one begins ([`told`]), so that whoever waits for the task (a reconcile slot)
//! can stop waiting for it then, and only then: a sync busy with requests keeps its slot, so
//! the syncs in progress stay as many as the slots.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

tokio::task_local! {
    static WAITS: Arc<Notify>;
}

/// Runs `work`, notifying `waits` each time it pauses on the cluster.
pub fn told<F: Future>(waits: Arc<Notify>, work: F) -> impl Future<Output = F::Output> {
    WAITS.scope(waits, work)
}

/// Pauses for `d` between two looks at the cluster, telling whoever asked (see [`told`]).
pub async fn pause(d: Duration) {
    let _ = WAITS.try_with(|w| w.notify_one());
    tokio::time::sleep(d).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_pause_is_told_and_work_without_one_is_not() {
        let waits = Arc::new(Notify::new());
        told(waits.clone(), async { 1 }).await;
        let quiet = tokio::time::timeout(Duration::from_millis(10), waits.notified()).await;
        assert!(quiet.is_err(), "no pause, nothing told");
        told(waits.clone(), pause(Duration::from_millis(5))).await;
        let told_once = tokio::time::timeout(Duration::from_millis(10), waits.notified()).await;
        assert!(told_once.is_ok(), "a pause is told");
        // Outside `told` a pause is a plain sleep.
        pause(Duration::from_millis(5)).await;
    }
}
