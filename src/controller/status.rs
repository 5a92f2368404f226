//! Status writes: server-side apply of `{apiVersion, kind, status}` with Gantry's manager.

use kube::api::{Api, Patch, PatchParams};
use serde::Serialize;
use serde_json::json;

use super::kinds::GantryKind;
use crate::apply::applier::FIELD_MANAGER;
use crate::error::Result;

pub async fn apply_status<K: GantryKind, S: Serialize>(
    api: &Api<K>,
    name: &str,
    status: &S,
) -> Result<()> {
    apply_status_at(api, name, status).await.map(|_| ())
}

/// `apply_status`, answering the resourceVersion the object has after the write.
pub async fn apply_status_at<K: GantryKind, S: Serialize>(
    api: &Api<K>,
    name: &str,
    status: &S,
) -> Result<Option<String>> {
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    let written = api
        .patch_status(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    Ok(written.meta().resource_version.clone())
}

/// `interval` plus up to 10% jitter, so many objects do not fetch in lockstep.
pub fn with_jitter(interval: std::time::Duration, seed: &str) -> std::time::Duration {
    let mut h: u64 = 1469598103934665603;
    for b in seed.bytes() {
        h = (h ^ b as u64).wrapping_mul(1099511628211);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    let permille = (h ^ nanos) % 100;
    on_tick(interval + interval * permille as u32 / 1000)
}

/// `wait` lengthened by under a second so that it ends on a whole second of a process-wide
/// grid: the periodic checks due within one second run at one wake-up of the runtime
/// instead of each at its own (10,000 Applications at a 10-minute interval are 17 a
/// second, and the wake-ups cost more than the checks the watches vouch for). They stay
/// spread evenly over the interval, second by second.
pub fn on_tick(wait: std::time::Duration) -> std::time::Duration {
    static GRID: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let start = *GRID.get_or_init(std::time::Instant::now);
    to_tick(start.elapsed(), wait)
}

/// The wait from `elapsed` (since the grid's start) to the first whole second at or after
/// `elapsed + wait`.
fn to_tick(elapsed: std::time::Duration, wait: std::time::Duration) -> std::time::Duration {
    let due = elapsed + wait;
    let tick = std::time::Duration::from_secs(due.as_secs() + u64::from(due.subsec_nanos() > 0));
    tick - elapsed
}

#[cfg(test)]
mod tick_tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn waits_end_on_whole_seconds_no_sooner_and_under_a_second_later() {
        let ms = Duration::from_millis;
        assert_eq!(to_tick(ms(1_250), ms(600_000)), ms(600_750));
        assert_eq!(to_tick(ms(1_000), ms(600_000)), ms(600_000));
        assert_eq!(to_tick(ms(999), ms(1)), ms(1));
        assert_eq!(to_tick(ms(0), ms(1)), ms(1_000));
        for (elapsed, wait) in [
            (ms(3_712), ms(61_234)),
            (ms(17), ms(5)),
            (ms(86_400_001), ms(999)),
        ] {
            let got = to_tick(elapsed, wait);
            assert!(
                got >= wait && got < wait + ms(1_000),
                "{elapsed:?} {wait:?}: {got:?}"
            );
            assert_eq!((elapsed + got).subsec_nanos(), 0);
        }
    }

    #[test]
    fn jittered_intervals_stay_within_ten_percent_and_a_second() {
        let interval = Duration::from_secs(600);
        for seed in ["web", "api", "db-7"] {
            let got = with_jitter(interval, seed);
            assert!(got >= interval && got < interval * 11 / 10 + Duration::from_secs(1));
        }
    }
}
