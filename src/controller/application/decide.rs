//! The Application reconciler's decision, as data: what it saw (`Observations`) → what it
//! does (`Step`). Pure; the reconciler gathers the observations, then runs the step.

/// What became of the source's artifact for this reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArtifactSeen {
    /// On disk, leased, at `revision`.
    Ready { revision: String },
    /// Not on disk yet (the source controller writes it): come back soon.
    NotYet,
    /// The source has not produced its first artifact yet, and has not failed either.
    Waiting(String),
    /// No source, no artifact, or a tree that cannot be checked out.
    Failed(String),
}

/// Everything the decision depends on.
#[derive(Clone, Debug)]
pub struct Observations {
    pub suspended: bool,
    /// Why the spec cannot be acted on (a health rule that does not compile).
    pub invalid: Option<String>,
    /// Why the Application has no target (cluster and identity): (reason, message).
    pub no_target: Option<(&'static str, String)>,
    /// The first `dependsOn` Application that is not Ready at its generation.
    pub unready_dependency: Option<String>,
    pub artifact: ArtifactSeen,
    /// `metadata.generation` differs from the status' `observedGeneration`.
    pub generation_changed: bool,
    /// `gantry sync` asked for a sync not handled yet.
    pub sync_requested: bool,
    pub manual: bool,
    pub last_applied_revision: Option<String>,
    /// The Ready condition as (status, reason).
    pub ready: Option<(String, String)>,
    /// The revision's rollout was aborted (not retried until Git or the spec changes).
    pub rejected: bool,
    /// A canary of the revision is running.
    pub canary_active: bool,
    /// A failed sync of this revision and generation is backing off for this long.
    pub retry_in: Option<std::time::Duration>,
    /// A chart version in `spec.render.helm.chart`'s range other than the applied one was
    /// published: the Application is not up to date although Git did not change.
    pub chart_moved: bool,
}

/// What the reconciler does next; one variant per branch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Suspended,
    /// The spec cannot be acted on: Ready=False with this message, nothing applied.
    InvalidSpec(String),
    /// No cluster or identity to act as: Ready=False with this (reason, message).
    NoTarget(&'static str, String),
    WaitForDependency(String),
    ArtifactNotYet,
    /// The source has no artifact yet and is still fetching it (Ready=Unknown).
    ArtifactWaiting(String),
    ArtifactFailed(String),
    /// Report the health of the last healthy revision's workloads; apply nothing.
    RejectedRevision,
    ManualSyncRequired,
    /// Check drift and follow health; apply nothing new.
    UpToDate,
    /// Check drift (but the held stable Deployments) and carry the canary on.
    CarryOnCanary,
    /// The last sync of this revision failed and its backoff has not run out: write
    /// nothing, look again then.
    BackOff(std::time::Duration),
    Sync,
}

impl Step {
    /// Whether the step acts on the artifact (image automation runs first).
    pub fn has_artifact(&self) -> bool {
        matches!(
            self,
            Step::RejectedRevision
                | Step::ManualSyncRequired
                | Step::UpToDate
                | Step::CarryOnCanary
                | Step::BackOff(_)
                | Step::Sync
        )
    }
}

/// The revision is applied, the spec unchanged, and the last sync ended well (or only its
/// health check failed, which the health follow-up handles).
pub fn up_to_date(o: &Observations, revision: &str) -> bool {
    o.last_applied_revision.as_deref() == Some(revision)
        && !o.generation_changed
        && o.ready
            .as_ref()
            .is_some_and(|(s, reason)| s == "True" || reason == super::reasons::HEALTH_CHECK_FAILED)
}

pub fn next_step(o: &Observations) -> Step {
    if o.suspended {
        return Step::Suspended;
    }
    if let Some(m) = &o.invalid {
        return Step::InvalidSpec(m.clone());
    }
    if let Some((reason, m)) = &o.no_target {
        return Step::NoTarget(reason, m.clone());
    }
    if let Some(d) = &o.unready_dependency {
        return Step::WaitForDependency(d.clone());
    }
    let revision = match &o.artifact {
        ArtifactSeen::NotYet => return Step::ArtifactNotYet,
        ArtifactSeen::Waiting(m) => return Step::ArtifactWaiting(m.clone()),
        ArtifactSeen::Failed(m) => return Step::ArtifactFailed(m.clone()),
        ArtifactSeen::Ready { revision } => revision,
    };
    if o.rejected && !o.sync_requested && !o.generation_changed {
        return Step::RejectedRevision;
    }
    let current = up_to_date(o, revision);
    if o.manual && !o.sync_requested && !current {
        return Step::ManualSyncRequired;
    }
    if current && !o.sync_requested {
        return if o.chart_moved {
            Step::Sync
        } else {
            Step::UpToDate
        };
    }
    if o.canary_active
        && !o.generation_changed
        && o.last_applied_revision.as_deref() == Some(revision.as_str())
    {
        return Step::CarryOnCanary;
    }
    if let Some(wait) = o.retry_in
        && !o.sync_requested
        && !o.generation_changed
    {
        return Step::BackOff(wait);
    }
    Step::Sync
}

#[cfg(test)]
mod tests {
    use super::*;

    const REV: &str = "main@sha1:1111111111111111111111111111111111111111";

    /// An Application applied and Ready at REV, nothing asked.
    fn synced() -> Observations {
        Observations {
            suspended: false,
            invalid: None,
            no_target: None,
            unready_dependency: None,
            artifact: ArtifactSeen::Ready {
                revision: REV.into(),
            },
            generation_changed: false,
            sync_requested: false,
            manual: false,
            last_applied_revision: Some(REV.into()),
            ready: Some(("True".into(), "Succeeded".into())),
            rejected: false,
            canary_active: false,
            retry_in: None,
            chart_moved: false,
        }
    }

    #[test]
    fn a_new_chart_version_in_range_syncs_an_up_to_date_application() {
        let mut o = synced();
        assert_eq!(next_step(&o), Step::UpToDate);
        o.chart_moved = true;
        assert_eq!(next_step(&o), Step::Sync);
    }

    #[test]
    fn gates_come_first_in_their_order() {
        let mut o = synced();
        o.artifact = ArtifactSeen::Failed("no source".into());
        o.unready_dependency = Some("db".into());
        o.no_target = Some(("ClusterUnreachable", "cluster x is unreachable".into()));
        o.invalid = Some("healthChecks Widget.current does not compile".into());
        o.suspended = true;
        assert_eq!(next_step(&o), Step::Suspended);
        o.suspended = false;
        assert_eq!(
            next_step(&o),
            Step::InvalidSpec("healthChecks Widget.current does not compile".into())
        );
        o.invalid = None;
        assert_eq!(
            next_step(&o),
            Step::NoTarget("ClusterUnreachable", "cluster x is unreachable".into())
        );
        o.no_target = None;
        assert_eq!(next_step(&o), Step::WaitForDependency("db".into()));
        o.unready_dependency = None;
        assert_eq!(next_step(&o), Step::ArtifactFailed("no source".into()));
        o.artifact = ArtifactSeen::NotYet;
        assert_eq!(next_step(&o), Step::ArtifactNotYet);
        assert!(!Step::ArtifactNotYet.has_artifact());
        o.artifact = ArtifactSeen::Waiting("first fetch".into());
        assert_eq!(next_step(&o), Step::ArtifactWaiting("first fetch".into()));
    }

    #[test]
    fn an_applied_ready_revision_is_up_to_date() {
        assert_eq!(next_step(&synced()), Step::UpToDate);
        // a failed health check is followed up, not re-synced
        let mut o = synced();
        o.ready = Some(("False".into(), "HealthCheckFailed".into()));
        assert_eq!(next_step(&o), Step::UpToDate);
        assert!(Step::UpToDate.has_artifact());
    }

    #[test]
    fn a_new_revision_a_new_generation_a_failure_or_a_request_syncs() {
        let mut o = synced();
        o.artifact = ArtifactSeen::Ready {
            revision: "main@sha1:2222222222222222222222222222222222222222".into(),
        };
        assert_eq!(next_step(&o), Step::Sync);
        let mut o = synced();
        o.generation_changed = true;
        assert_eq!(next_step(&o), Step::Sync);
        let mut o = synced();
        o.ready = Some(("False".into(), "ApplyFailed".into()));
        assert_eq!(next_step(&o), Step::Sync);
        let mut o = synced();
        o.sync_requested = true;
        assert_eq!(next_step(&o), Step::Sync);
    }

    #[test]
    fn a_rejected_revision_waits_for_git_the_spec_or_a_request() {
        let mut o = synced();
        o.rejected = true;
        o.ready = Some(("False".into(), "RolloutAborted".into()));
        assert_eq!(next_step(&o), Step::RejectedRevision);
        o.sync_requested = true;
        assert_eq!(next_step(&o), Step::Sync);
        o.sync_requested = false;
        o.generation_changed = true;
        assert_eq!(next_step(&o), Step::Sync);
    }

    #[test]
    fn manual_policy_waits_unless_current_or_asked() {
        let mut o = synced();
        o.manual = true;
        assert_eq!(next_step(&o), Step::UpToDate);
        o.last_applied_revision = None;
        assert_eq!(next_step(&o), Step::ManualSyncRequired);
        o.sync_requested = true;
        assert_eq!(next_step(&o), Step::Sync);
    }

    #[test]
    fn a_running_canary_of_the_applied_revision_is_carried_on() {
        let mut o = synced();
        o.canary_active = true;
        o.ready = Some(("Unknown".into(), "RolloutProgressing".into()));
        assert_eq!(next_step(&o), Step::CarryOnCanary);
        // the spec changed under it: a new sync
        o.generation_changed = true;
        assert_eq!(next_step(&o), Step::Sync);
        // a request during a canary re-syncs (a newer template replaces the canary)
        let mut o = synced();
        o.canary_active = true;
        o.ready = Some(("Unknown".into(), "RolloutProgressing".into()));
        o.last_applied_revision = Some("main@sha1:0".into());
        assert_eq!(next_step(&o), Step::Sync);
    }

    #[test]
    fn a_failed_sync_backs_off_unless_asked_or_changed() {
        let wait = std::time::Duration::from_secs(30);
        let failed = Observations {
            last_applied_revision: Some(
                "main@sha1:0000000000000000000000000000000000000000".into(),
            ),
            ready: Some(("False".into(), "ValidationFailed".into())),
            retry_in: Some(wait),
            ..synced()
        };
        assert_eq!(next_step(&failed), Step::BackOff(wait));
        assert!(
            next_step(&failed).has_artifact(),
            "image automation still runs"
        );
        let asked = Observations {
            sync_requested: true,
            ..failed.clone()
        };
        assert_eq!(next_step(&asked), Step::Sync);
        let changed = Observations {
            generation_changed: true,
            ..failed.clone()
        };
        assert_eq!(next_step(&changed), Step::Sync);
        let over = Observations {
            retry_in: None,
            ..failed
        };
        assert_eq!(next_step(&over), Step::Sync);
    }
}
