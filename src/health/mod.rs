//! Health: one pure function per kind, from the live object to a verdict; the
//! Application's CEL rules (`rules.rs`) come first.

pub mod book;
pub mod rules;

use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Health {
    Healthy,
    Progressing,
    Degraded,
    Suspended,
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub health: Health,
    pub message: String,
}

fn v(health: Health, message: impl Into<String>) -> Verdict {
    Verdict {
        health,
        message: message.into(),
    }
}

fn int(o: &Value, path: &[&str]) -> i64 {
    let mut cur = o;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_i64().unwrap_or(0)
}

fn condition<'a>(o: &'a Value, type_: &str) -> Option<&'a Value> {
    o["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

fn observed_current(o: &Value) -> bool {
    let generation = o["metadata"]["generation"].as_i64();
    let observed = o["status"]["observedGeneration"].as_i64();
    match (generation, observed) {
        (Some(g), Some(og)) => og >= g,
        (Some(_), None) => false,
        _ => true,
    }
}

pub fn deployment(o: &Value) -> Verdict {
    if o["spec"]["paused"].as_bool() == Some(true) {
        return v(Health::Suspended, "rollout is paused");
    }
    if !observed_current(o) {
        return v(
            Health::Progressing,
            "waiting for the controller to observe the new generation",
        );
    }
    if let Some(c) = condition(o, "Progressing")
        && c["reason"] == "ProgressDeadlineExceeded"
    {
        return v(
            Health::Degraded,
            c["message"]
                .as_str()
                .unwrap_or("progress deadline exceeded"),
        );
    }
    let want = o["spec"]["replicas"].as_i64().unwrap_or(1);
    let updated = int(o, &["status", "updatedReplicas"]);
    let available = int(o, &["status", "availableReplicas"]);
    let total = int(o, &["status", "replicas"]);
    if updated < want {
        return v(
            Health::Progressing,
            format!("{updated} of {want} replicas updated"),
        );
    }
    if total > updated {
        return v(
            Health::Progressing,
            format!("{} old replicas pending termination", total - updated),
        );
    }
    if available < updated {
        return v(
            Health::Progressing,
            format!("{available} of {updated} updated replicas available"),
        );
    }
    v(Health::Healthy, format!("{available} replicas available"))
}

pub fn stateful_set(o: &Value) -> Verdict {
    if !observed_current(o) {
        return v(
            Health::Progressing,
            "waiting for the controller to observe the new generation",
        );
    }
    let want = o["spec"]["replicas"].as_i64().unwrap_or(1);
    let ready = int(o, &["status", "readyReplicas"]);
    let updated = int(o, &["status", "updatedReplicas"]);
    if o["spec"]["updateStrategy"]["type"] != "OnDelete" && updated < want {
        return v(
            Health::Progressing,
            format!("{updated} of {want} replicas updated"),
        );
    }
    if ready < want {
        return v(
            Health::Progressing,
            format!("{ready} of {want} replicas ready"),
        );
    }
    v(Health::Healthy, format!("{ready} replicas ready"))
}

pub fn daemon_set(o: &Value) -> Verdict {
    if !observed_current(o) {
        return v(
            Health::Progressing,
            "waiting for the controller to observe the new generation",
        );
    }
    let desired = int(o, &["status", "desiredNumberScheduled"]);
    let updated = int(o, &["status", "updatedNumberScheduled"]);
    let available = int(o, &["status", "numberAvailable"]);
    if updated < desired || available < desired {
        return v(
            Health::Progressing,
            format!("{available} of {desired} pods available, {updated} updated"),
        );
    }
    v(Health::Healthy, format!("{available} pods available"))
}

pub fn replica_set(o: &Value) -> Verdict {
    if !observed_current(o) {
        return v(
            Health::Progressing,
            "waiting for the controller to observe the new generation",
        );
    }
    let want = o["spec"]["replicas"].as_i64().unwrap_or(1);
    let available = int(o, &["status", "availableReplicas"]);
    if available < want {
        return v(
            Health::Progressing,
            format!("{available} of {want} replicas available"),
        );
    }
    v(Health::Healthy, format!("{available} replicas available"))
}

pub fn job(o: &Value) -> Verdict {
    if let Some(c) = condition(o, "Failed")
        && c["status"] == "True"
    {
        return v(
            Health::Degraded,
            c["message"].as_str().unwrap_or("job failed"),
        );
    }
    if condition(o, "Complete").is_some_and(|c| c["status"] == "True") {
        return v(Health::Healthy, "job completed");
    }
    if o["spec"]["suspend"].as_bool() == Some(true) {
        return v(Health::Suspended, "job is suspended");
    }
    v(Health::Progressing, "job is running")
}

pub fn crd(o: &Value) -> Verdict {
    if condition(o, "NamesAccepted").is_some_and(|c| c["status"] == "False") {
        return v(
            Health::Degraded,
            condition(o, "NamesAccepted")
                .and_then(|c| c["message"].as_str())
                .unwrap_or("names not accepted"),
        );
    }
    if condition(o, "Established").is_some_and(|c| c["status"] == "True") {
        return v(Health::Healthy, "established");
    }
    v(Health::Progressing, "waiting to be established")
}

pub fn pvc(o: &Value) -> Verdict {
    match o["status"]["phase"].as_str() {
        Some("Bound") => v(Health::Healthy, "bound"),
        Some("Lost") => v(Health::Degraded, "claim lost its volume"),
        _ => v(Health::Progressing, "waiting to be bound"),
    }
}

pub fn service(o: &Value) -> Verdict {
    if o["spec"]["type"] == "LoadBalancer" {
        let ingress = o["status"]["loadBalancer"]["ingress"]
            .as_array()
            .map(|a| a.len())
            .unwrap_or(0);
        if ingress == 0 {
            return v(Health::Progressing, "waiting for a load balancer address");
        }
    }
    v(Health::Healthy, "service ready")
}

/// Any other object, kstatus-like: a generation not observed yet is progressing; a
/// `Stalled` condition that is true is degraded, a `Reconciling` one progressing; `Ready` or
/// `Available` decide when present; an object whose controller observed its generation
/// and reports no condition is healthy, and so is one without any status. A status without
/// any of these signals (a `phase` only, say) leaves the health Unknown: a custom resource
/// like that needs a rule in `spec.healthChecks`.
pub fn generic(kind: &str, o: &Value) -> Verdict {
    // Only a controller that reports `observedGeneration` can be behind (kstatus).
    if o["status"]["observedGeneration"].is_i64() && !observed_current(o) {
        return v(
            Health::Progressing,
            "waiting for the controller to observe the new generation",
        );
    }
    let is_true = |t: &str| condition(o, t).is_some_and(|c| c["status"] == "True");
    let message_of = |t: &str| {
        condition(o, t)
            .and_then(|c| c["message"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    if is_true("Stalled") {
        return v(
            Health::Degraded,
            format!("Stalled: {}", message_of("Stalled")),
        );
    }
    if is_true("Reconciling") {
        return v(
            Health::Progressing,
            format!("Reconciling: {}", message_of("Reconciling")),
        );
    }
    for type_ in ["Ready", "Available"] {
        if let Some(c) = condition(o, type_) {
            let msg = message_of(type_);
            return match c["status"].as_str() {
                Some("True") => v(
                    Health::Healthy,
                    if msg.is_empty() {
                        type_.to_string()
                    } else {
                        msg
                    },
                ),
                Some("False") => v(Health::Degraded, msg),
                _ => v(Health::Progressing, msg),
            };
        }
    }
    if o["status"]["observedGeneration"].is_i64() {
        return v(Health::Healthy, "generation observed, no conditions");
    }
    // No status at all: no controller reports on this object (a configuration-only
    // resource), so there is nothing to wait for.
    if o.get("status").is_none_or(|s| s.is_null()) {
        return v(Health::Healthy, "no status to wait for");
    }
    v(
        Health::Unknown,
        format!(
            "no health signal (no Ready, Available, Stalled or Reconciling condition, no \
             status.observedGeneration); declare a rule for {kind} in spec.healthChecks"
        ),
    )
}

/// The health of any object, by kind.
pub fn assess(group: &str, kind: &str, o: &Value) -> Verdict {
    match (group, kind) {
        ("apps", "Deployment") => deployment(o),
        ("apps", "StatefulSet") => stateful_set(o),
        ("apps", "DaemonSet") => daemon_set(o),
        ("apps", "ReplicaSet") => replica_set(o),
        ("batch", "Job") => job(o),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => crd(o),
        ("", "PersistentVolumeClaim") => pvc(o),
        ("", "Service") => service(o),
        _ if !has_check(group, kind) => v(Health::Healthy, "no health checks for this kind"),
        _ => generic(kind, o),
    }
}

/// The health of any object: the Application's rule for its kind, else the built-in check.
pub fn assess_with(rules: &rules::Rules, group: &str, kind: &str, o: &Value) -> Verdict {
    rules
        .assess(group, kind, o)
        .unwrap_or_else(|| assess(group, kind, o))
}

/// API groups served by Kubernetes itself: only the kinds listed in `has_check` have a
/// health there; the others (ConfigMap, Role, HPA, CronJob, …) are healthy once applied.
const BUILT_IN_GROUPS: &[&str] = &[
    "",
    "apps",
    "batch",
    "autoscaling",
    "policy",
    "rbac.authorization.k8s.io",
    "networking.k8s.io",
    "admissionregistration.k8s.io",
    "scheduling.k8s.io",
    "storage.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "node.k8s.io",
    "events.k8s.io",
    "certificates.k8s.io",
    "flowcontrol.apiserver.k8s.io",
    "apiextensions.k8s.io",
];

/// Whether a kind needs re-reading to know its health (others are healthy once applied):
/// the workloads, Jobs, CRDs, claims and Services, and every kind outside Kubernetes'
/// own groups.
pub fn has_check(group: &str, kind: &str) -> bool {
    matches!(
        (group, kind),
        (
            "apps",
            "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet"
        ) | ("batch", "Job")
            | ("apiextensions.k8s.io", "CustomResourceDefinition")
            | ("", "PersistentVolumeClaim")
            | ("", "Service")
    ) || !BUILT_IN_GROUPS.contains(&group)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn deployment_states() {
        let base = |status: Value| json!({"metadata": {"generation": 2}, "spec": {"replicas": 3}, "status": status});
        assert_eq!(
            deployment(&base(json!({"observedGeneration": 1}))).health,
            Health::Progressing
        );
        assert_eq!(deployment(&base(json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3}))).health, Health::Healthy);
        assert_eq!(deployment(&base(json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 3, "availableReplicas": 3}))).health, Health::Progressing);
        let stuck = base(
            json!({"observedGeneration": 2, "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet \"x\" has timed out progressing."}]}),
        );
        let verdict = deployment(&stuck);
        assert_eq!(verdict.health, Health::Degraded);
        assert!(verdict.message.contains("timed out"));
        assert_eq!(
            deployment(&json!({"spec": {"paused": true}})).health,
            Health::Suspended
        );
        assert_eq!(deployment(&json!({"metadata": {"generation": 1}, "spec": {"replicas": 0}, "status": {"observedGeneration": 1}})).health, Health::Healthy);
    }

    #[test]
    fn statefulset_daemonset_replicaset() {
        let sts =
            json!({"spec": {"replicas": 2}, "status": {"readyReplicas": 1, "updatedReplicas": 2}});
        assert_eq!(stateful_set(&sts).health, Health::Progressing);
        let sts =
            json!({"spec": {"replicas": 2}, "status": {"readyReplicas": 2, "updatedReplicas": 2}});
        assert_eq!(stateful_set(&sts).health, Health::Healthy);
        let ds = json!({"status": {"desiredNumberScheduled": 4, "updatedNumberScheduled": 4, "numberAvailable": 4}});
        assert_eq!(daemon_set(&ds).health, Health::Healthy);
        let rs = json!({"spec": {"replicas": 2}, "status": {"availableReplicas": 1}});
        assert_eq!(replica_set(&rs).health, Health::Progressing);
    }

    #[test]
    fn job_crd_pvc_service() {
        assert_eq!(
            job(&json!({"status": {"conditions": [{"type": "Complete", "status": "True"}]}}))
                .health,
            Health::Healthy
        );
        assert_eq!(job(&json!({"status": {"conditions": [{"type": "Failed", "status": "True", "message": "BackoffLimitExceeded"}]}})).health, Health::Degraded);
        assert_eq!(job(&json!({"status": {}})).health, Health::Progressing);
        assert_eq!(
            crd(&json!({"status": {"conditions": [{"type": "Established", "status": "True"}]}}))
                .health,
            Health::Healthy
        );
        assert_eq!(
            pvc(&json!({"status": {"phase": "Pending"}})).health,
            Health::Progressing
        );
        assert_eq!(
            service(&json!({"spec": {"type": "LoadBalancer"}, "status": {}})).health,
            Health::Progressing
        );
        assert_eq!(service(&json!({"spec": {"type": "LoadBalancer"}, "status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}})).health, Health::Healthy);
        assert_eq!(
            service(&json!({"spec": {"type": "ClusterIP"}})).health,
            Health::Healthy
        );
    }

    #[test]
    fn generic_conditions() {
        let g = |o: Value| generic("Widget", &o).health;
        assert_eq!(
            g(json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}})),
            Health::Healthy
        );
        assert_eq!(
            g(
                json!({"status": {"conditions": [{"type": "Ready", "status": "False", "message": "boom"}]}})
            ),
            Health::Degraded
        );
        assert_eq!(
            g(json!({"status": {"conditions": [{"type": "Available", "status": "Unknown"}]}})),
            Health::Progressing
        );
        assert_eq!(assess("", "ConfigMap", &json!({})).health, Health::Healthy);
        assert_eq!(
            assess(
                "autoscaling",
                "HorizontalPodAutoscaler",
                &json!({"status": {}})
            )
            .health,
            Health::Healthy
        );
        assert_eq!(
            assess("batch", "CronJob", &json!({})).health,
            Health::Healthy
        );
    }

    #[test]
    fn generic_is_kstatus_like_and_unknown_without_a_signal() {
        let g = |o: Value| generic("Widget", &o);
        // A generation the controller has not observed yet.
        assert_eq!(
            g(json!({"metadata": {"generation": 3}, "status": {"observedGeneration": 2, "conditions": [{"type": "Ready", "status": "True"}]}})).health,
            Health::Progressing
        );
        assert_eq!(
            g(json!({"status": {"conditions": [{"type": "Stalled", "status": "True", "message": "bad spec"}]}})).health,
            Health::Degraded
        );
        assert_eq!(
            g(json!({"status": {"conditions": [{"type": "Reconciling", "status": "True"}, {"type": "Ready", "status": "True"}]}})).health,
            Health::Progressing
        );
        assert_eq!(
            g(json!({"metadata": {"generation": 2}, "status": {"observedGeneration": 2}})).health,
            Health::Healthy
        );
        // No condition and no observed generation: Unknown, not Healthy, and the message
        // says what to declare.
        assert_eq!(
            g(json!({"metadata": {"generation": 1}, "spec": {}})).health,
            Health::Healthy
        );
        for o in [
            json!({"metadata": {"generation": 1}, "status": {"phase": "Running"}}),
            json!({"status": {}}),
        ] {
            let verdict = g(o);
            assert_eq!(verdict.health, Health::Unknown);
            assert!(
                verdict.message.contains("spec.healthChecks"),
                "{}",
                verdict.message
            );
        }
    }
}
