//! Rollout decisions, pure: what a RollingUpdate does with the health it observes, which
//! revision is the last healthy one, and whether a revision is rejected.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::api::application::{ApplicationStatus, SyncRecord};
use crate::api::rollout::{RolloutPhase, RolloutStatus};
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

/// Key of a Deployment in `SyncRecord.templateHashes`.
pub fn template_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// Whether a Deployment whose desired template hashes to `hash` goes through a canary:
/// only when it replaces the template of the last healthy revision (a new Deployment, an
/// unchanged template, or one that was healthy before — the rollback fast path — go
/// straight to the stable Deployment).
pub fn needs_canary(key: &str, hash: &str, history: &[SyncRecord]) -> bool {
    let healthy = || history.iter().filter(|r| r.healthy == Some(true));
    let Some(stable) = healthy().next().and_then(|r| r.template_hashes.get(key)) else {
        return false;
    };
    stable != hash
        && !healthy().any(|r| r.template_hashes.get(key).map(String::as_str) == Some(hash))
}

/// A canary step.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Canary replicas at this percentage of the stable count.
    Weight(u32),
    /// Wait this long, or (`None`) until promoted.
    Pause(Option<Duration>),
}

impl Step {
    pub fn from_spec(steps: &[crate::api::rollout::CanaryStep]) -> Vec<Step> {
        steps
            .iter()
            .map(|s| match (&s.weight, &s.pause) {
                (Some(w), _) => Step::Weight(*w),
                (None, Some(p)) => Step::Pause(p.duration.as_ref().and_then(|d| d.parse().ok())),
                (None, None) => Step::Pause(Some(Duration::ZERO)),
            })
            .collect()
    }
}

/// What one look at a running canary found.
#[derive(Debug, Clone)]
pub struct Observation {
    pub now: Timestamp,
    /// The canary Deployment has its replicas for the current weight, all ready.
    pub canary_ready: bool,
    /// The result of an analysis run made for this look, if one was due.
    pub analysis: Option<Result<(), String>>,
    /// `gantry promote` / `gantry abort` asked since the last look.
    pub promote: bool,
    pub abort: bool,
}

/// What to do with the canary.
#[derive(Debug, Clone, PartialEq)]
pub enum CanaryDecision {
    /// Keep the canary at `weight` percent; look again after `recheck`.
    Run { weight: u32, recheck: Duration },
    /// Every step passed (or promotion was asked): update the stable Deployment.
    Promote,
    /// Stop: delete the canary, keep the stable version.
    Abort { reason: String },
}

/// The weight in force at `step`: the last weight step at or before it (0 before any).
pub fn weight_at(steps: &[Step], step: usize) -> u32 {
    steps[..(step + 1).min(steps.len())]
        .iter()
        .rev()
        .find_map(|s| match s {
            Step::Weight(w) => Some(*w),
            Step::Pause(_) => None,
        })
        .unwrap_or(0)
}

/// An analysis result counted against `failureLimit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Analysed {
    Passed,
    /// Failed, `failures` times in a row, under the limit.
    Failed {
        failures: u32,
    },
    /// `failureLimit` consecutive failures: give up on the revision.
    Abort {
        reason: String,
    },
}

/// Counts an analysis in `state.consecutive_failures` (a pass resets it); used by canary
/// steps and by RollingUpdate alike.
pub fn count_analysis(
    state: &mut RolloutStatus,
    result: &Result<(), String>,
    failure_limit: u32,
) -> Analysed {
    match result {
        Ok(()) => {
            state.consecutive_failures = 0;
            Analysed::Passed
        }
        Err(e) => {
            state.consecutive_failures += 1;
            let failures = state.consecutive_failures;
            if failures >= failure_limit.max(1) {
                Analysed::Abort {
                    reason: format!(
                        "{e} ({failures} consecutive failed analyses, limit {failure_limit})"
                    ),
                }
            } else {
                Analysed::Failed { failures }
            }
        }
    }
}

fn since(now: Timestamp, start: Option<&Time>) -> Duration {
    start
        .map(|t| now.duration_since(t.0).unsigned_abs())
        .unwrap_or(Duration::ZERO)
}

/// Advances the canary state machine kept in `state` (phase, step, step start, failures).
/// A weight step passes once the canary is ready at that weight and one analysis interval
/// went by without a failure; a pause passes after its duration, or on promotion when it
/// has none; `failure_limit` consecutive failed analyses abort.
pub fn advance(
    state: &mut RolloutStatus,
    steps: &[Step],
    analysis_interval: Duration,
    failure_limit: u32,
    obs: &Observation,
) -> CanaryDecision {
    if obs.abort {
        state.phase = RolloutPhase::Aborted;
        return CanaryDecision::Abort {
            reason: "aborted with `gantry abort`".into(),
        };
    }
    if let Some(result) = &obs.analysis
        && let Analysed::Abort { reason } = count_analysis(state, result, failure_limit)
    {
        state.phase = RolloutPhase::Aborted;
        return CanaryDecision::Abort { reason };
    }
    if obs.promote {
        state.phase = RolloutPhase::Promoting;
        return CanaryDecision::Promote;
    }
    if state.step_started_at.is_none() {
        state.step_started_at = Some(Time(obs.now));
    }
    loop {
        let step = state.step as usize;
        let Some(current) = steps.get(step) else {
            state.phase = RolloutPhase::Promoting;
            return CanaryDecision::Promote;
        };
        let elapsed = since(obs.now, state.step_started_at.as_ref());
        let passed = match current {
            Step::Weight(_) => {
                obs.canary_ready && elapsed >= analysis_interval && state.consecutive_failures == 0
            }
            Step::Pause(Some(d)) => elapsed >= *d,
            Step::Pause(None) => false,
        };
        if passed {
            state.step += 1;
            state.step_started_at = Some(Time(obs.now));
            continue;
        }
        let weight = weight_at(steps, step);
        let (phase, recheck) = match current {
            Step::Pause(None) => (RolloutPhase::Paused, analysis_interval),
            Step::Pause(Some(d)) => (
                RolloutPhase::Progressing,
                d.saturating_sub(elapsed).min(analysis_interval),
            ),
            Step::Weight(_) => (
                RolloutPhase::Progressing,
                analysis_interval
                    .saturating_sub(elapsed)
                    .max(Duration::from_millis(500))
                    .min(analysis_interval),
            ),
        };
        state.phase = phase;
        return CanaryDecision::Run { weight, recheck };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::application::SyncResult;

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
            chart_version: None,
            reverted_by: None,
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

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn look(secs: i64, ready: bool, analysis: Option<Result<(), String>>) -> Observation {
        Observation {
            now: at(secs),
            canary_ready: ready,
            analysis,
            promote: false,
            abort: false,
        }
    }

    const I: Duration = Duration::from_secs(5);

    fn steps() -> Vec<Step> {
        vec![
            Step::Weight(25),
            Step::Pause(Some(Duration::from_secs(5))),
            Step::Weight(50),
        ]
    }

    #[test]
    fn good_canary_walks_every_step_then_promotes() {
        let mut s = RolloutStatus::default();
        let st = steps();
        // Not ready yet: stay at 25 %.
        assert!(matches!(
            advance(&mut s, &st, I, 2, &look(0, false, None)),
            CanaryDecision::Run { weight: 25, .. }
        ));
        assert_eq!(s.phase, RolloutPhase::Progressing);
        // Ready but the interval has not passed.
        assert!(matches!(
            advance(&mut s, &st, I, 2, &look(3, true, Some(Ok(())))),
            CanaryDecision::Run { weight: 25, .. }
        ));
        assert_eq!(s.step, 0);
        // Ready and an interval went by: into the pause (weight stays 25).
        assert_eq!(
            advance(&mut s, &st, I, 2, &look(5, true, Some(Ok(())))),
            CanaryDecision::Run {
                weight: 25,
                recheck: Duration::from_secs(5)
            }
        );
        assert_eq!(s.step, 1);
        // The pause ends: 50 %.
        assert!(matches!(
            advance(&mut s, &st, I, 2, &look(10, true, None)),
            CanaryDecision::Run { weight: 50, .. }
        ));
        assert_eq!(s.step, 2);
        // 50 % ready for an interval: promote.
        assert_eq!(
            advance(&mut s, &st, I, 2, &look(15, true, Some(Ok(())))),
            CanaryDecision::Promote
        );
        assert_eq!(s.phase, RolloutPhase::Promoting);
    }

    #[test]
    fn consecutive_failures_abort_and_a_pass_resets_them() {
        let mut s = RolloutStatus::default();
        let st = steps();
        let fail = || Some(Err("pod web-canary-x restarted 2 times".to_string()));
        assert!(matches!(
            advance(&mut s, &st, I, 2, &look(0, false, fail())),
            CanaryDecision::Run { .. }
        ));
        assert_eq!(s.consecutive_failures, 1);
        advance(&mut s, &st, I, 2, &look(5, true, Some(Ok(()))));
        assert_eq!(s.consecutive_failures, 0);
        advance(&mut s, &st, I, 2, &look(10, false, fail()));
        let CanaryDecision::Abort { reason } = advance(&mut s, &st, I, 2, &look(15, false, fail()))
        else {
            panic!("two consecutive failures abort")
        };
        assert!(
            reason.contains("restarted 2 times") && reason.contains("2 consecutive"),
            "{reason}"
        );
        assert_eq!(s.phase, RolloutPhase::Aborted);
    }

    #[test]
    fn an_empty_pause_waits_for_promotion() {
        let mut s = RolloutStatus::default();
        let st = vec![Step::Weight(10), Step::Pause(None), Step::Weight(100)];
        advance(&mut s, &st, I, 1, &look(0, true, Some(Ok(()))));
        advance(&mut s, &st, I, 1, &look(5, true, Some(Ok(()))));
        assert_eq!(s.step, 1);
        for t in [10, 100, 10_000] {
            assert!(matches!(
                advance(&mut s, &st, I, 1, &look(t, true, Some(Ok(())))),
                CanaryDecision::Run { weight: 10, .. }
            ));
            assert_eq!(s.phase, RolloutPhase::Paused);
        }
        let mut promote = look(10_001, true, None);
        promote.promote = true;
        assert_eq!(
            advance(&mut s, &st, I, 1, &promote),
            CanaryDecision::Promote
        );
    }

    #[test]
    fn abort_request_wins_and_resume_continues_where_it_was() {
        let st = steps();
        // A restarted controller reads the state back from status: same step, same start.
        let mut s = RolloutStatus {
            phase: RolloutPhase::Progressing,
            step: 1,
            step_started_at: Some(Time(at(100))),
            ..Default::default()
        };
        assert!(matches!(
            advance(&mut s, &st, I, 2, &look(102, true, None)),
            CanaryDecision::Run { weight: 25, .. }
        ));
        assert_eq!(s.step, 1, "the pause is not restarted");
        assert!(matches!(
            advance(&mut s, &st, I, 2, &look(105, true, None)),
            CanaryDecision::Run { weight: 50, .. }
        ));
        let mut abort = look(106, true, Some(Ok(())));
        abort.abort = true;
        assert!(matches!(
            advance(&mut s, &st, I, 2, &abort),
            CanaryDecision::Abort { .. }
        ));
    }

    #[test]
    fn canary_only_for_a_template_never_healthy_before() {
        let mut a = record("main@sha1:a", Some(true));
        a.template_hashes.insert("ns/web".into(), "h1".into());
        let mut b = record("main@sha1:b", Some(true));
        b.template_hashes.insert("ns/web".into(), "h2".into());
        let mut c = record("main@sha1:c", Some(false));
        c.template_hashes.insert("ns/web".into(), "h3".into());
        let history = vec![c, b, a];
        assert!(
            !needs_canary("ns/web", "h2", &history),
            "unchanged template"
        );
        assert!(
            !needs_canary("ns/web", "h1", &history),
            "known good: fast path"
        );
        assert!(
            needs_canary("ns/web", "h3", &history),
            "failed before is not known good"
        );
        assert!(needs_canary("ns/web", "h4", &history));
        assert!(
            !needs_canary("ns/new", "h4", &history),
            "a new Deployment is created directly"
        );
        assert!(!needs_canary("ns/web", "h4", &[]), "nothing known yet");
    }

    #[test]
    fn steps_from_spec_and_weights_in_force() {
        use crate::api::duration::GoDuration;
        use crate::api::rollout::{CanaryStep, Pause};
        let spec = vec![
            CanaryStep {
                weight: Some(25),
                pause: None,
            },
            CanaryStep {
                weight: None,
                pause: Some(Pause {
                    duration: Some(GoDuration::new("5s")),
                }),
            },
            CanaryStep {
                weight: None,
                pause: Some(Pause { duration: None }),
            },
        ];
        let st = Step::from_spec(&spec);
        assert_eq!(
            st,
            vec![
                Step::Weight(25),
                Step::Pause(Some(Duration::from_secs(5))),
                Step::Pause(None)
            ]
        );
        assert_eq!(weight_at(&st, 2), 25);
        assert_eq!(weight_at(&[Step::Pause(None)], 0), 0);
        // No steps at all: promote at once.
        let mut s = RolloutStatus::default();
        assert_eq!(
            advance(&mut s, &[], I, 1, &look(0, false, None)),
            CanaryDecision::Promote
        );
    }
}
