//! What a plan says: per Application, the objects it would create, change, recreate and
//! prune, what the API server would refuse and why, the hooks that would run and whether a
//! rollout or a canary would start. `gantry plan -o json` prints this (its schema is
//! `gantry plan --schema`); text and Markdown are made from it (plan/format.rs).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A plan of one Git revision for the Applications of one GitRepository.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Plan {
    /// `namespace/name` of the GitRepository.
    pub source: String,
    /// The reference planned, as given (a branch, a tag or a commit).
    pub reference: String,
    /// The commit it names.
    pub commit: String,
    /// The Applications whose rendered objects differ between base and this revision (and
    /// those asked for by name), in namespace/name order.
    pub applications: Vec<AppPlan>,
}

/// The plan of one Application.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppPlan {
    pub namespace: String,
    pub name: String,
    /// The cluster it deploys to (`local` for its own).
    pub cluster: String,
    /// Who the dry-run ran as: the ServiceAccount it impersonates, or the controller.
    pub identity: String,
    /// The commit compared with (what it last applied, or `--base`); none when it has not
    /// applied anything yet or the base could not be rendered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// Why nothing could be planned (the revision does not render, the target cannot be
    /// acted as); the objects are then empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub objects: Vec<ObjectPlan>,
    pub hooks: Vec<HookPlan>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutPlan>,
}

/// What a sync of the revision would do to one object.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Change,
    /// Deleted and created again: an immutable field changed and recreation is allowed.
    Recreate,
    Prune,
    Unchanged,
    /// The API server, the tenant's RBAC or Gantry's ownership guard would refuse it (the
    /// whole set then stops, nothing of it is applied).
    Refused,
}

/// Why an object would be refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Cause {
    /// The identity may not write it (403).
    Rbac,
    /// An immutable field changed and recreation is not allowed.
    Immutable,
    /// It belongs to another Application (and `takeOwnership` is off).
    Ownership,
    /// The cluster has no such kind.
    Kind,
    /// Refused by validation or admission (schema, webhooks, policies, quotas).
    Invalid,
}

/// A refusal, in the API server's words.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Refusal {
    pub cause: Cause,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectPlan {
    /// `group/version` (`v1` for the core group).
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    pub action: Action,
    /// A unified diff from the live object to what the dry-run returned (Secret values
    /// masked); none when unchanged or refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<Refusal>,
    /// A remark: validated only after its CRD or Namespace exists, recreated because an
    /// immutable field changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl ObjectPlan {
    /// `Kind namespace/name` (or `Kind name`).
    pub fn describe(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind, self.name),
            None => format!("{} {}", self.kind, self.name),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HookPlan {
    /// `pre`, `sync`, `post` or `fail` (run only if the sync fails).
    pub phase: String,
    /// `Kind name`.
    pub object: String,
}

/// A rollout the revision would start.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RolloutPlan {
    /// `Canary` or `RollingUpdate`.
    pub strategy: String,
    /// The Deployments whose pod template changes (`namespace/name`).
    pub workloads: Vec<String>,
    /// The canary's steps (`weight 20%`, `pause 1m`, `pause until promoted`); empty for a
    /// rolling update.
    pub steps: Vec<String>,
    /// `abort` or `revert`: what a failed rollout does.
    pub on_failure: String,
}

/// How many objects of each action a plan has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub create: usize,
    pub change: usize,
    pub recreate: usize,
    pub prune: usize,
    pub unchanged: usize,
    pub refused: usize,
}

impl Counts {
    pub fn changes(&self) -> usize {
        self.create + self.change + self.recreate + self.prune
    }
}

impl AppPlan {
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for o in &self.objects {
            match o.action {
                Action::Create => c.create += 1,
                Action::Change => c.change += 1,
                Action::Recreate => c.recreate += 1,
                Action::Prune => c.prune += 1,
                Action::Unchanged => c.unchanged += 1,
                Action::Refused => c.refused += 1,
            }
        }
        c
    }

    /// Whether a sync of the revision would stop (a refusal or an error).
    pub fn fails(&self) -> bool {
        self.error.is_some() || self.objects.iter().any(|o| o.action == Action::Refused)
    }
}

/// The outcome a CI step reads: no change, changes, or something would be refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    NoChange,
    Changes,
    Refused,
}

impl Verdict {
    /// `gantry plan`'s exit code: 0, 1 or 2.
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::NoChange => 0,
            Verdict::Changes => 1,
            Verdict::Refused => 2,
        }
    }
}

impl Plan {
    pub fn verdict(&self) -> Verdict {
        if self.applications.iter().any(AppPlan::fails) {
            Verdict::Refused
        } else if self
            .applications
            .iter()
            .any(|a| a.counts().changes() > 0 || !a.hooks.is_empty() || a.rollout.is_some())
        {
            Verdict::Changes
        } else {
            Verdict::NoChange
        }
    }
}

/// The cause of a refusal from the API server's answer (`code`: its HTTP status, when
/// there was one).
pub fn cause_of(code: Option<u16>, message: &str) -> Cause {
    if message.contains("field is immutable") {
        Cause::Immutable
    } else if code == Some(403) || message.contains("forbidden:") && message.contains("cannot") {
        Cause::Rbac
    } else {
        Cause::Invalid
    }
}

/// The canary steps, as the plan names them.
pub fn describe_steps(steps: &[crate::rollout::plan::Step]) -> Vec<String> {
    use crate::rollout::plan::Step;
    steps
        .iter()
        .map(|s| match s {
            Step::Weight(w) => format!("weight {w}%"),
            Step::Pause(None) => "pause until promoted".to_string(),
            Step::Pause(Some(d)) => format!("pause {}", humantime::format_duration(*d)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(action: Action) -> ObjectPlan {
        ObjectPlan {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: Some("team".into()),
            name: "settings".into(),
            action,
            diff: None,
            refusal: None,
            note: None,
        }
    }

    fn plan(apps: Vec<AppPlan>) -> Plan {
        Plan {
            source: "team/app".into(),
            reference: "feature".into(),
            commit: "c".repeat(40),
            applications: apps,
        }
    }

    fn app(objects: Vec<ObjectPlan>) -> AppPlan {
        AppPlan {
            namespace: "team".into(),
            name: "web".into(),
            cluster: "local".into(),
            identity: "controller".into(),
            base: Some("b".repeat(40)),
            objects,
            ..AppPlan::default()
        }
    }

    #[test]
    fn the_verdict_is_the_worst_of_the_applications() {
        assert_eq!(plan(vec![]).verdict(), Verdict::NoChange);
        assert_eq!(
            plan(vec![app(vec![object(Action::Unchanged)])]).verdict(),
            Verdict::NoChange
        );
        let changed = app(vec![object(Action::Unchanged), object(Action::Prune)]);
        assert_eq!(plan(vec![changed.clone()]).verdict(), Verdict::Changes);
        let refused = app(vec![object(Action::Refused)]);
        assert_eq!(
            plan(vec![changed.clone(), refused]).verdict(),
            Verdict::Refused
        );
        let broken = AppPlan {
            error: Some("cannot render".into()),
            ..app(vec![])
        };
        assert_eq!(plan(vec![changed, broken]).verdict(), Verdict::Refused);
        // Hooks alone are a change: they run at the sync.
        let hooks = AppPlan {
            hooks: vec![HookPlan {
                phase: "pre".into(),
                object: "Job migrate".into(),
            }],
            ..app(vec![object(Action::Unchanged)])
        };
        assert_eq!(plan(vec![hooks]).verdict(), Verdict::Changes);
        assert_eq!(
            [Verdict::NoChange, Verdict::Changes, Verdict::Refused].map(Verdict::exit_code),
            [0, 1, 2]
        );
    }

    #[test]
    fn counts_add_up_by_action() {
        let a = app(vec![
            object(Action::Create),
            object(Action::Create),
            object(Action::Change),
            object(Action::Recreate),
            object(Action::Refused),
            object(Action::Unchanged),
        ]);
        let c = a.counts();
        assert_eq!((c.create, c.change, c.recreate, c.refused), (2, 1, 1, 1));
        assert_eq!(c.changes(), 4);
        assert!(a.fails());
    }

    #[test]
    fn causes_are_read_from_the_answer() {
        let rbac = r#"clusterrolebindings.rbac.authorization.k8s.io "x" is forbidden: User "system:serviceaccount:team:deployer" cannot patch resource"#;
        assert_eq!(cause_of(Some(403), rbac), Cause::Rbac);
        assert_eq!(cause_of(None, rbac), Cause::Rbac);
        let job = r#"Job.batch "migrate" is invalid: spec.template: Invalid value: ...: field is immutable"#;
        assert_eq!(cause_of(Some(422), job), Cause::Immutable);
        assert_eq!(
            cause_of(Some(422), "spec.replicas: Invalid value: -1"),
            Cause::Invalid
        );
    }

    #[test]
    fn steps_are_named() {
        use crate::rollout::plan::Step;
        let steps = [
            Step::Weight(20),
            Step::Pause(Some(std::time::Duration::from_secs(60))),
            Step::Pause(None),
        ];
        assert_eq!(
            describe_steps(&steps),
            ["weight 20%", "pause 1m", "pause until promoted"]
        );
    }

    #[test]
    fn json_round_trips_and_refuses_unknown_fields() {
        let p = plan(vec![app(vec![object(Action::Change)])]);
        let text = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<Plan>(&text).unwrap(), p);
        assert!(text.contains(r#""action":"change""#), "{text}");
        let extra = text.replacen("{", r#"{"surprise":1,"#, 1);
        assert!(serde_json::from_str::<Plan>(&extra).is_err());
    }
}
