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
