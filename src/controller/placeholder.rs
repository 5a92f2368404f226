//! The reconciler of a kind whose pipeline is not built yet: it acknowledges the object
//! (`observedGeneration`) and says so with `Ready=Unknown`, reason `NotImplemented`.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::json;

use super::context::{Context, FIELD_MANAGER};
use super::kinds::GantryKind;
use crate::api::conditions::{self, Status};
use crate::error::{Error, Result};

/// Whether the object still needs its placeholder status written.
pub fn needs_status<K: GantryKind>(obj: &K) -> bool {
    let generation = obj.meta().generation;
    let ready = conditions::find(obj.conditions(), conditions::READY);
    obj.observed_generation() != generation
        || ready.is_none_or(|c| {
            c.reason != conditions::REASON_NOT_IMPLEMENTED
                || c.observed_generation != generation
                || c.status != Status::Unknown.as_str()
        })
}

async fn reconcile<K: GantryKind>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action> {
    if !needs_status(obj.as_ref()) {
        return Ok(Action::await_change());
    }
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let generation = obj.meta().generation;
    let mut conds = obj.conditions().to_vec();
    conditions::set_condition(
        &mut conds,
        conditions::new_condition(
            conditions::READY,
            Status::Unknown,
            conditions::REASON_NOT_IMPLEMENTED,
            format!("the {} reconciler is not implemented yet", K::kind(&())),
            generation,
            Timestamp::now(),
        ),
    );
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": { "observedGeneration": generation, "conditions": conds },
    });
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    tracing::info!(kind = %K::kind(&()), namespace = %ns, name = %name, "status set to NotImplemented");
    Ok(Action::await_change())
}

fn error_policy<K: GantryKind>(obj: Arc<K>, err: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(
        kind = %K::kind(&()),
        namespace = %obj.namespace().unwrap_or_default(),
        name = %obj.name_any(),
        category = err.category(),
        error = %err,
        "reconcile failed"
    );
    Action::requeue(Duration::from_secs(5))
}

/// Runs the placeholder reconciler for kind `K` until shutdown.
pub async fn run<K: GantryKind>(ctx: Arc<Context>, api: Api<K>) {
    Controller::new(api, watcher::Config::default().any_semantic())
        .graceful_shutdown_on(super::shutdown_signal())
        .run(reconcile::<K>, error_policy::<K>, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Receiver;
    use crate::api::receiver::{ReceiverSpec, ReceiverStatus, ReceiverType};
    use crate::api::refs::SecretRef;

    fn receiver(generation: i64, status: Option<ReceiverStatus>) -> Receiver {
        let mut r = Receiver::new(
            "hook",
            ReceiverSpec {
                kind: ReceiverType::Github,
                secret_ref: SecretRef { name: "s".into() },
                resources: vec![],
            },
        );
        r.metadata.generation = Some(generation);
        r.status = status;
        r
    }

    #[test]
    fn new_object_needs_status() {
        assert!(needs_status(&receiver(1, None)));
    }

    #[test]
    fn acknowledged_object_needs_nothing() {
        let cond = conditions::new_condition(
            conditions::READY,
            Status::Unknown,
            conditions::REASON_NOT_IMPLEMENTED,
            "",
            Some(3),
            Timestamp::now(),
        );
        let status = ReceiverStatus {
            observed_generation: Some(3),
            conditions: vec![cond],
            webhook_path: None,
        };
        assert!(!needs_status(&receiver(3, Some(status.clone()))));
        assert!(needs_status(&receiver(4, Some(status))));
    }
}
