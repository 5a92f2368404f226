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

/// The credentials of a Helm chart repository in Secret `name` in `ns`: `username` and
/// `password` (basic auth), `ca.crt` (a CA to trust); at least one of them.
pub async fn repository_auth(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> Result<crate::source::helm_repo::RepoAuth, String> {
    let data = read(client, ns, name).await?;
    let text = |k: &str| -> Result<Option<String>, String> {
        data.get(k)
            .map(|v| {
                String::from_utf8(v.0.clone())
                    .map(|s| s.trim_end_matches('\n').to_string())
                    .map_err(|_| format!("Secret {name}: {k} is not UTF-8"))
            })
            .transpose()
    };
    let basic = match (text("username")?, text("password")?) {
        (Some(u), Some(p)) => Some((u, p)),
        (None, None) => None,
        _ => return Err(format!("Secret {name}: username and password go together")),
    };
    let ca_pem = data.get("ca.crt").map(|v| v.0.clone());
    if basic.is_none() && ca_pem.is_none() {
        return Err(format!(
            "Secret {name} has none of username/password and ca.crt"
        ));
    }
    Ok(crate::source::helm_repo::RepoAuth { basic, ca_pem })
}

/// The cosign public keys of Secret `name` in `ns` (its `*.pub` entries).
pub async fn cosign_keys(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> Result<crate::source::cosign::TrustedKeys, String> {
    let data = read(client, ns, name).await?;
    crate::source::cosign::TrustedKeys::from_secret(name, &data)
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
