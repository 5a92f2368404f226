//! Why a hook did not finish, as the cluster reports it: the Job's warning Events (a pod
//! the Job could not create: `FailedCreate … serviceaccount "x" not found`), and for each
//! of its pods the waiting reason, the restarts and the end of the last termination
//! message. The gathering is a thin edge; the wording is pure.

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams};

/// At most this many pods are described.
const MAX_PODS: usize = 3;
/// The last lines of a termination message that are quoted.
const MESSAGE_LINES: usize = 3;
const MAX_CAUSE_CHARS: usize = 1000;

/// The cause of a hook (`kind` Job or Pod named `name` in `namespace`) not finishing, or
/// `None` when the cluster says nothing more than that it runs.
pub async fn gather(
    client: &kube::Client,
    namespace: &str,
    kind: &str,
    name: &str,
) -> Option<String> {
    if !matches!(kind, "Job" | "Pod") {
        return None;
    }
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let fields = format!("involvedObject.kind={kind},involvedObject.name={name}");
    let own_events = events
        .list(&ListParams::default().fields(&fields))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    let pods = if kind == "Job" {
        pods.list(&ListParams::default().labels(&format!("job-name={name}")))
            .await
            .map(|l| l.items)
            .unwrap_or_default()
    } else {
        pods.get_opt(name)
            .await
            .ok()
            .flatten()
            .into_iter()
            .collect()
    };
    describe(&own_events, &pods)
}

/// The cause in one line: the latest warning Event of the hook, then its pods.
pub fn describe(events: &[Event], pods: &[Pod]) -> Option<String> {
    let mut parts = vec![];
    if let Some(e) = events
        .iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .max_by_key(|e| (e.last_timestamp.as_ref().map(|t| t.0), e.count))
    {
        parts.push(format!(
            "{}: {}",
            e.reason.as_deref().unwrap_or("Warning"),
            e.message.as_deref().unwrap_or_default().trim()
        ));
    }
    for pod in pods.iter().take(MAX_PODS) {
        if let Some(p) = describe_pod(pod) {
            parts.push(p);
        }
    }
    if parts.is_empty() {
        return None;
    }
    let mut text = parts.join("; ");
    if text.chars().count() > MAX_CAUSE_CHARS {
        text = text.chars().take(MAX_CAUSE_CHARS).collect::<String>() + "…";
    }
    Some(text)
}

fn describe_pod(pod: &Pod) -> Option<String> {
    let name = pod.metadata.name.as_deref().unwrap_or("pod");
    let status = pod.status.as_ref()?;
    let mut said = vec![];
    for c in status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
    {
        let state = c.state.as_ref();
        if let Some(w) = state.and_then(|s| s.waiting.as_ref())
            && let Some(reason) = &w.reason
            && reason != "PodInitializing"
        {
            let message = w
                .message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default();
            said.push(format!("container {} waiting ({reason}{message})", c.name));
        }
        let last = state
            .and_then(|s| s.terminated.as_ref())
            .or_else(|| c.last_state.as_ref().and_then(|s| s.terminated.as_ref()));
        if let Some(t) = last
            && t.exit_code != 0
        {
            let tail = t
                .message
                .as_deref()
                .map(|m| {
                    let lines: Vec<&str> = m.trim_end().lines().collect();
                    let from = lines.len().saturating_sub(MESSAGE_LINES);
                    format!(": {}", lines[from..].join(" / "))
                })
                .unwrap_or_default();
            said.push(format!(
                "container {} exited {} ({}){tail}",
                c.name,
                t.exit_code,
                t.reason.as_deref().unwrap_or("Error")
            ));
        }
        if c.restart_count > 0 {
            said.push(format!(
                "container {} restarted {} times",
                c.name, c.restart_count
            ));
        }
    }
    if said.is_empty() {
        // Not scheduled, or waiting for something the pod's conditions say.
        let unscheduled = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")?;
        said.push(format!(
            "not scheduled ({})",
            unscheduled
                .message
                .as_deref()
                .or(unscheduled.reason.as_deref())
                .unwrap_or("no reason given")
        ));
    }
    Some(format!("pod {name}: {}", said.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_job_that_cannot_create_its_pod_names_the_refusal() {
        let event: Event = serde_json::from_value(json!({
            "metadata": {"name": "e1"},
            "involvedObject": {"kind": "Job", "name": "create-secret"},
            "type": "Warning", "reason": "FailedCreate", "count": 4,
            "message": "Error creating: pods \"create-secret-\" is forbidden: error looking up service account shop/hook-sa: serviceaccount \"hook-sa\" not found"
        }))
        .unwrap();
        let normal: Event = serde_json::from_value(json!({
            "metadata": {"name": "e2"}, "involvedObject": {}, "type": "Normal",
            "reason": "SuccessfulCreate", "message": "Created pod"
        }))
        .unwrap();
        let cause = describe(&[normal, event], &[]).unwrap();
        assert!(
            cause.starts_with("FailedCreate: Error creating")
                && cause.contains("serviceaccount \"hook-sa\" not found"),
            "{cause}"
        );
    }

    #[test]
    fn a_crashing_pod_says_its_reason_restarts_and_last_lines() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "migrate-x1"},
            "status": {"phase": "Running", "containerStatuses": [{
                "name": "migrate", "image": "m", "imageID": "", "ready": false,
                "restartCount": 3,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                    "message": "connecting\nretrying\nERROR: relation \"users\" does not exist\nexit\n"}}
            }]}
        }))
        .unwrap();
        let cause = describe(&[], &[pod]).unwrap();
        assert_eq!(
            cause,
            "pod migrate-x1: container migrate waiting (CrashLoopBackOff: back-off 40s), \
             container migrate exited 1 (Error): retrying / ERROR: relation \"users\" does not exist / exit, \
             container migrate restarted 3 times"
        );
    }

    #[test]
    fn a_pod_that_is_merely_running_says_nothing() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "status": {"phase": "Running", "conditions": [{"type": "PodScheduled", "status": "True"}]}
        }))
        .unwrap();
        assert_eq!(describe(&[], &[pod]), None);
        let unscheduled: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                "reason": "Unschedulable", "message": "0/3 nodes are available"}]}
        }))
        .unwrap();
        assert_eq!(
            describe(&[], &[unscheduled]).unwrap(),
            "pod p: not scheduled (0/3 nodes are available)"
        );
    }
}
