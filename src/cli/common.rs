//! Helpers shared by the commands.

use crate::error::{Error, Result};

/// Parses `NAMESPACE/NAME`.
pub fn parse_target(s: &str) -> Result<(String, String)> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_string(), name.to_string()))
        }
        _ => Err(Error::Usage(format!("expected NAMESPACE/NAME, got {s:?}"))),
    }
}

/// Kinds that are cluster-scoped, for commands that work without a cluster.
pub fn cluster_scoped(group: &str, kind: &str) -> bool {
    matches!(
        (group, kind),
        ("", "Namespace" | "Node" | "PersistentVolume")
            | (
                "rbac.authorization.k8s.io",
                "ClusterRole" | "ClusterRoleBinding"
            )
            | ("apiextensions.k8s.io", "CustomResourceDefinition")
            | (
                "storage.k8s.io",
                "StorageClass" | "CSIDriver" | "VolumeAttachment"
            )
            | ("scheduling.k8s.io", "PriorityClass")
            | ("admissionregistration.k8s.io", _)
            | ("apiregistration.k8s.io", "APIService")
            | ("networking.k8s.io", "IngressClass")
            | ("node.k8s.io", "RuntimeClass")
    )
}

/// Age like kubectl prints it.
pub fn age(t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> String {
    let Some(t) = t else { return "-".into() };
    let secs = k8s_openapi::jiff::Timestamp::now()
        .duration_since(t.0)
        .as_secs();
    crate::ui::view::age_words(secs.max(0))
}

/// Prints rows as aligned columns.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        crate::outln!("{}", parts.join("   ").trim_end());
    };
    line(header.iter().map(|s| s.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}

/// The client of the current kubeconfig and the controller's targets built from it: each
/// Application is then read and dry-run on its own cluster as its own identity, as the
/// controller acts (`gantry diff --app`, `gantry plan`).
pub async fn client_and_targets() -> Result<(kube::Client, crate::cluster::Targets)> {
    let config = kube::Config::infer().await?;
    let client = kube::Client::try_from(config.clone())?;
    let (targets, _) = crate::cluster::Targets::new(
        config,
        crate::cluster::ClientLimits {
            concurrency: 8,
            ..Default::default()
        },
        None,
        Default::default(),
    )?;
    Ok((client, targets))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            parse_target("team/web").unwrap(),
            ("team".into(), "web".into())
        );
        for bad in ["web", "/web", "team/", "a/b/c"] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }
}
