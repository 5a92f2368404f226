//! Apply order: definitions first, admission webhooks last (pure).

/// Stage 0 is applied (and awaited) before anything else is validated.
pub fn stage(group: &str, kind: &str) -> u8 {
    match (group, kind) {
        ("apiextensions.k8s.io", "CustomResourceDefinition") | ("", "Namespace") => 0,
        _ => 1,
    }
}

/// Sort rank inside the whole set: CRDs, Namespaces, other cluster-scoped kinds,
/// namespaced kinds, admission webhooks.
pub fn rank(group: &str, kind: &str, namespaced: bool) -> u8 {
    match (group, kind) {
        ("apiextensions.k8s.io", "CustomResourceDefinition") => 0,
        ("", "Namespace") => 1,
        (
            "admissionregistration.k8s.io",
            "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration",
        ) => 5,
        ("admissionregistration.k8s.io", _) => 4,
        _ if !namespaced => 2,
        _ => 3,
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
                "Deployment",
                "ValidatingWebhookConfiguration"
            ]
        );
        assert_eq!(stage("", "Namespace"), 0);
        assert_eq!(stage("apps", "Deployment"), 1);
    }
}
