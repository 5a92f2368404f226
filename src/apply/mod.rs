//! Apply: discovery, normalisation and order, server-side dry-run and apply, inventory and
//! guarded prune.

pub mod applier;
pub mod concurrent;
pub mod discovery;
pub mod hook_cause;
pub mod hooks;
pub mod inventory;
pub mod normalize;
pub mod order;
pub mod own_writes;
pub mod plan;
pub mod prepare;
pub mod prune;
pub mod recreate;
pub mod set;
pub mod set_error;
pub mod stage;
pub mod waiting;

/// Label with the value `gantry` on every object Gantry applies.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "gantry";
/// Label naming the owning Application as `<namespace>.<name>`.
pub const APPLICATION_LABEL: &str = "gantry.dev/application";
/// Annotation that protects an object from pruning when set to `disabled`.
pub const PRUNE_ANNOTATION: &str = "gantry.dev/prune";

const MAX_LISTED_ERRORS: usize = 10;

/// The first errors of a list, joined, and how many more there are.
pub fn join_errors<T: ToString>(errors: impl IntoIterator<Item = T>) -> String {
    let errors: Vec<String> = errors.into_iter().map(|e| e.to_string()).collect();
    let n = errors.len();
    let mut shown: Vec<String> = errors.into_iter().take(MAX_LISTED_ERRORS).collect();
    if n > MAX_LISTED_ERRORS {
        shown.push(format!("… and {} more", n - MAX_LISTED_ERRORS));
    }
    shown.join("; ")
}

/// The value of [`APPLICATION_LABEL`] for an Application: `<namespace>.<name>`.
pub fn owner_label(app: &crate::api::Application) -> String {
    format!(
        "{}.{}",
        app.metadata.namespace.as_deref().unwrap_or_default(),
        app.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The other Application a live object is labelled for, when it is not the one the desired
/// object names: such an object is not taken over unless the Application says so.
pub fn foreign_owner(desired: &serde_json::Value, live: &serde_json::Value) -> Option<String> {
    let label = |v: &serde_json::Value| {
        v["metadata"]["labels"][APPLICATION_LABEL]
            .as_str()
            .map(str::to_string)
    };
    let owner = label(live)?;
    (Some(&owner) != label(desired).as_ref()).then_some(owner)
}

/// What to do about a kind the cluster does not serve: a built-in API this version lacks,
/// or a custom resource whose CRD must come first.
pub fn unknown_kind_message(object: &str, group: &str, version: &str, kind: &str) -> String {
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    let built_in = group.is_empty()
        || !group.contains('.')
        || (group.ends_with(".k8s.io") && !group.ends_with(".x-k8s.io"));
    if built_in {
        format!(
            "{object}: the cluster does not serve {kind} in {gv}, a built-in API: this \
             Kubernetes version lacks it or the apiVersion is wrong"
        )
    } else {
        format!(
            "{object}: the cluster has no kind {kind} in {gv}: install the \
             CustomResourceDefinition for it first (e.g. {}s.{group}), or put that CRD in this \
             Application's path, where it is applied before the objects that use it",
            kind.to_lowercase()
        )
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn an_object_labelled_for_another_application_is_foreign() {
        let ours = json!({"metadata": {"labels": {"gantry.dev/application": "a.web"}}});
        let theirs = json!({"metadata": {"labels": {"gantry.dev/application": "b.web"}}});
        let unlabelled = json!({"metadata": {}});
        assert_eq!(
            super::foreign_owner(&ours, &theirs).as_deref(),
            Some("b.web")
        );
        assert_eq!(super::foreign_owner(&ours, &ours), None);
        assert_eq!(super::foreign_owner(&ours, &unlabelled), None);
    }
}
