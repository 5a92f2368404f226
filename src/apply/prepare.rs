//! What a render becomes before anything is applied, for the controller and the CLI alike
//! (`gantry render`, `gantry diff`): the hooks are taken out (by the phase the Application
//! is in), the rest is normalized into the set.

use serde_json::Value;

use super::hooks::{self, Hook};
use super::normalize::{self, Desired, NormalizeError};

/// The set and the hooks of one render.
#[derive(Debug, Default)]
pub struct Prepared {
    pub desired: Vec<Desired>,
    pub hooks: Vec<Hook>,
    /// Hooks that are never applied (tests, delete and rollback hooks, Argo CD `Skip`).
    pub skipped: usize,
}

/// Splits the hooks out of `objects` and normalizes the rest. `installing`: nothing of
/// the Application is applied yet (Helm's install hooks, otherwise its upgrade hooks);
/// `namespaced` says whether a kind (group, version, kind) is namespaced, `None` when the
/// cluster does not know it.
pub fn prepare(
    objects: Vec<Value>,
    installing: bool,
    namespace: &str,
    owner: &str,
    namespaced: impl Fn(&str, &str, &str) -> Option<bool>,
) -> Result<Prepared, NormalizeError> {
    let split = hooks::split(objects, installing);
    let desired = normalize::normalize(split.objects, namespace, owner, namespaced)?;
    Ok(Prepared {
        desired,
        hooks: split.hooks,
        skipped: split.skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hooks_with_generate_name_are_taken_out_before_normalizing() {
        let objects = vec![
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"generateName": "migrate-",
                "annotations": {"helm.sh/hook": "pre-install,pre-upgrade"}}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}),
        ];
        let p = prepare(objects, true, "shop", "shop.web", |_, _, _| Some(true)).unwrap();
        assert_eq!(p.desired.len(), 1);
        assert_eq!(p.hooks[0].describe(), "Job migrate-*");
    }
}
