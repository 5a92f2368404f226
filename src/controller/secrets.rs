//! Reading a referenced Secret, with errors that name it (never its content).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;

/// The data of Secret `name` in `ns`.
pub async fn read(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> Result<BTreeMap<String, ByteString>, String> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret = secrets
        .get_opt(name)
        .await
        .map_err(|e| format!("cannot read Secret {name}: {e}"))?
        .ok_or_else(|| format!("Secret {name} not found"))?;
    Ok(secret.data.unwrap_or_default())
}

/// The registry credentials for `registry` in the `kubernetes.io/dockerconfigjson` Secret
/// `name` in `ns` (anonymous when it has no entry for that registry).
pub async fn registry_credentials(
    client: &kube::Client,
    ns: &str,
    name: &str,
    registry: &str,
) -> Result<crate::source::registry::Credentials, String> {
    let data = read(client, ns, name).await?;
    let config = data.get(".dockerconfigjson").ok_or_else(|| {
        format!(
            "Secret {name} has no .dockerconfigjson (type kubernetes.io/dockerconfigjson expected)"
        )
    })?;
    crate::source::registry::Credentials::from_docker_config(&config.0, registry)
        .map_err(|e| format!("Secret {name}: {e}"))
}
