//! Rollout decisions, pure: what a RollingUpdate does with the health it observes, which
//! revision is the last healthy one, and whether a revision is rejected.

use std::time::Duration;

use crate::api::application::{ApplicationStatus, SyncRecord};
use crate::health::Health;

/// Failed revisions remembered in status.
pub const MAX_FAILED_REVISIONS: usize = 10;

/// What to do after looking at the workloads of a freshly applied revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Still rolling; look again shortly.
    Wait,
    /// Every workload is healthy: the revision is good.
    Healthy,
    /// Give up on the revision: return to the last healthy one. `reason` names the failing
    /// check and its evidence.
    Abort { reason: String },
}

/// RollingUpdate: every workload must be healthy within `deadline` of the apply; a
/// workload that is degraded (its controller gave up, e.g. `ProgressDeadlineExceeded`)
/// aborts at once.
pub fn rolling_update(
    health: Health,
    evidence: &str,
    waited: Duration,
    deadline: Duration,
) -> Verdict {
    match health {
        Health::Healthy | Health::Suspended => Verdict::Healthy,
        Health::Degraded => Verdict::Abort {
            reason: format!("health check failed: {evidence}"),
        },
        Health::Progressing | Health::Unknown if waited > deadline => Verdict::Abort {
            reason: format!(
                "not healthy within the progress deadline of {}s: {evidence}",
                deadline.as_secs()
            ),
        },
        Health::Progressing | Health::Unknown => Verdict::Wait,
    }
}

/// The newest history record, other than `except`, whose revision was healthy.
pub fn last_healthy<'a>(history: &'a [SyncRecord], except: &str) -> Option<&'a SyncRecord> {
    history
        .iter()
        .find(|r| r.revision != except && r.healthy == Some(true))
}

/// Whether `revision` was aborted and must not be applied again until Git changes.
pub fn is_rejected(status: &ApplicationStatus, revision: &str) -> bool {
    status
        .rollout
        .as_ref()
        .is_some_and(|r| r.failed_revisions.iter().any(|f| f == revision))
}

/// Adds `revision` to the rejected ones, newest last, bounded.
pub fn reject(failed: &mut Vec<String>, revision: &str) {
    failed.retain(|f| f != revision);
    failed.push(revision.to_string());
    let excess = failed.len().saturating_sub(MAX_FAILED_REVISIONS);
    failed.drain(..excess);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::application::SyncResult;
    use crate::api::rollout::RolloutStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn record(rev: &str, healthy: Option<bool>) -> SyncRecord {
        SyncRecord {
            revision: rev.into(),
            started_at: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            finished_at: None,
            result: SyncResult::Succeeded,
            message: None,
            created: 0,
            configured: 0,
            unchanged: 0,
            pruned: 0,
            template_hashes: Default::default(),
            healthy,
        }
    }

    #[test]
    fn rolling_update_verdicts() {
        let d = Duration::from_secs(30);
        assert_eq!(
            rolling_update(Health::Healthy, "", Duration::ZERO, d),
            Verdict::Healthy
        );
        assert_eq!(
            rolling_update(Health::Progressing, "1/2 ready", Duration::from_secs(10), d),
            Verdict::Wait
        );
        let Verdict::Abort { reason } = rolling_update(
            Health::Progressing,
            "Deployment web: 1/2 ready",
            Duration::from_secs(31),
            d,
        ) else {
            panic!("expected abort")
        };
        assert!(
            reason.contains("30s") && reason.contains("Deployment web"),
            "{reason}"
        );
        assert!(matches!(
            rolling_update(Health::Degraded, "crash", Duration::ZERO, d),
            Verdict::Abort { .. }
        ));
    }

    #[test]
    fn the_last_healthy_revision_skips_the_failing_one_and_unknowns() {
        let history = vec![
            record("main@sha1:c", None),
            record("main@sha1:b", Some(false)),
            record("main@sha1:a", Some(true)),
        ];
        assert_eq!(
            last_healthy(&history, "main@sha1:c").unwrap().revision,
            "main@sha1:a"
        );
        assert!(last_healthy(&history, "main@sha1:a").is_none());
        assert!(last_healthy(&[], "x").is_none());
    }

    #[test]
    fn rejected_revisions_are_bounded_and_unique() {
        let mut failed = vec![];
        for i in 0..15 {
            reject(&mut failed, &format!("r{i}"));
        }
        reject(&mut failed, "r14");
        assert_eq!(failed.len(), MAX_FAILED_REVISIONS);
        assert_eq!(failed.last().unwrap(), "r14");
        assert_eq!(failed.first().unwrap(), "r5");
        let status = ApplicationStatus {
            rollout: Some(RolloutStatus {
                failed_revisions: failed,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(is_rejected(&status, "r9"));
        assert!(!is_rejected(&status, "r1"));
    }
}
