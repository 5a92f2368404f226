//! Start-up check that the CRDs of every kind the controller runs are installed.

use kube::Client;

use crate::api;
use crate::error::{Error, Result};

/// The plural resource names of the given CRDs that discovery does not list.
pub fn missing_plurals<'a>(wanted: &'a [String], served: &[String]) -> Vec<&'a str> {
    wanted
        .iter()
        .filter(|w| !served.contains(w))
        .map(String::as_str)
        .collect()
}

/// Fails with the names of the missing CRDs unless every Gantry kind is served.
/// Discovery is used instead of reading CRD objects, so no cluster-wide CRD permission is needed.
pub async fn ensure_installed(client: &Client) -> Result<()> {
    let crds = api::crds();
    let version = crds[0].spec.versions[0].name.clone();
    let wanted: Vec<String> = crds.iter().map(|c| c.spec.names.plural.clone()).collect();
    let group_version = format!("{}/{}", api::GROUP, version);
    let served: Vec<String> = match client.list_api_group_resources(&group_version).await {
        Ok(list) => list.resources.into_iter().map(|r| r.name).collect(),
        Err(kube::Error::Api(status)) if status.code == 404 => vec![],
        Err(e) => return Err(e.into()),
    };
    let missing = missing_plurals(&wanted, &served);
    if missing.is_empty() {
        tracing::info!(group = %group_version, "CRDs installed");
        return Ok(());
    }
    Err(Error::CrdsMissing {
        missing: missing
            .iter()
            .map(|p| format!("{p}.{}", api::GROUP))
            .collect::<Vec<_>>()
            .join(", "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_only_missing() {
        let wanted = vec!["applications".to_string(), "receivers".to_string()];
        let served = vec![
            "applications".to_string(),
            "applications/status".to_string(),
        ];
        assert_eq!(missing_plurals(&wanted, &served), vec!["receivers"]);
        assert!(missing_plurals(&wanted, &wanted).is_empty());
    }
}
