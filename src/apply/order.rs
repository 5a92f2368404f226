//! Apply order: definitions first, admission webhooks last (pure).

/// Stage 0 is applied (and awaited) before anything else is validated.
pub fn stage(group: &str, kind: &str) -> u8 {
    match (group, kind) {
        ("apiextensions.k8s.io", "CustomResourceDefinition") | ("", "Namespace") => 0,
        _ => 1,
    }
}

/// Number of ranks; `rank` returns `0..RANKS`.
pub const RANKS: usize = 7;

/// Sort rank inside the whole set: CRDs, Namespaces, other cluster-scoped kinds, what
/// workloads refer to, the other namespaced kinds (workloads, custom resources), admission
/// policies, admission webhooks.
///
/// Ranks are applied one after the other. Service accounts, config, claims, RBAC, quotas and
/// Services come before workloads, so no pod starts without its ServiceAccount, ConfigMap or
/// claim, and pods see the environment variables of the Services they are declared with.
pub fn rank(group: &str, kind: &str, namespaced: bool) -> u8 {
    match (group, kind) {
        ("apiextensions.k8s.io", "CustomResourceDefinition") => 0,
        ("", "Namespace") => 1,
        (
            "admissionregistration.k8s.io",
            "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration",
        ) => 6,
        ("admissionregistration.k8s.io", _) => 5,
        _ if !namespaced => 2,
        (
            "",
            "ServiceAccount"
            | "Secret"
            | "ConfigMap"
            | "PersistentVolumeClaim"
            | "Service"
            | "LimitRange"
            | "ResourceQuota",
        )
        | ("rbac.authorization.k8s.io", "Role" | "RoleBinding")
        | ("networking.k8s.io", "NetworkPolicy")
        | ("policy", "PodDisruptionBudget") => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_first_webhooks_last() {
        let mut kinds = [
            (
                "admissionregistration.k8s.io",
                "ValidatingWebhookConfiguration",
                false,
            ),
            ("apps", "Deployment", true),
            ("", "ConfigMap", true),
            ("", "Namespace", false),
            ("rbac.authorization.k8s.io", "ClusterRole", false),
            ("apiextensions.k8s.io", "CustomResourceDefinition", false),
        ];
        kinds.sort_by_key(|(g, k, n)| rank(g, k, *n));
        let order: Vec<_> = kinds.iter().map(|k| k.1).collect();
        assert_eq!(
            order,
            [
                "CustomResourceDefinition",
                "Namespace",
                "ClusterRole",
                "ConfigMap",
                "Deployment",
                "ValidatingWebhookConfiguration"
            ]
        );
        assert_eq!(stage("", "Namespace"), 0);
        assert_eq!(stage("apps", "Deployment"), 1);
    }
}
