//! Helm: `helm template` with release name, namespace, values files from inside the
//! repository and inline values. Chart dependencies from the network are refused unless the
//! Application allows them.

use std::path::Path;

use serde_json::Value;

use super::{RenderError, RenderRequest, chart_deps, plain, sandbox, tool};

pub async fn render(
    root: &Path,
    dir: &Path,
    req: &RenderRequest<'_>,
) -> Result<Vec<Value>, RenderError> {
    let root = root.canonicalize().map_err(|e| RenderError::io(root, e))?;
    let helm_spec = req.spec.and_then(|s| s.helm.clone()).unwrap_or_default();
    let tmp = tool::copy_to_temp(&root)?;
    // A registry chart is unpacked beside the copy of the source; the source's path then
    // holds the values files.
    let registry_chart = match (&helm_spec.chart, req.chart) {
        (None, _) => None,
        (Some(_), Some(fetched)) => {
            let into = tmp.path().join(".gantry-chart");
            std::fs::create_dir(&into).map_err(|e| RenderError::io(&into, e))?;
            let fetched = fetched.clone();
            let unpacked = tokio::task::spawn_blocking(move || {
                crate::source::oci_chart::unpack(&fetched, &into)
            })
            .await
            .map_err(|e| RenderError::Refused(format!("chart unpacking failed: {e}")))?;
            Some(unpacked.map_err(|e| RenderError::Refused(e.to_string()))?)
        }
        (Some(c), None) => {
            return Err(RenderError::Refused(format!(
                "the chart {} was not fetched before the render",
                c.url
                    .as_deref()
                    .or(c.repository.as_deref())
                    .unwrap_or_default()
            )));
        }
    };
    let program = tool::find("GANTRY_HELM", &["helm"]).ok_or(RenderError::ToolMissing {
        tool: "helm",
        hint: "install `helm` (v3) on the controller's PATH or set GANTRY_HELM",
    })?;
    let rel_chart = dir
        .strip_prefix(&root)
        .unwrap_or(Path::new(""))
        .to_path_buf();
    // Values files are relative to the chart directory and must stay in the repository.
    let mut values = vec![];
    for f in &helm_spec.values_files {
        let joined = rel_chart.join(f);
        let real = sandbox::resolve_inside(
            &root,
            "spec.render.helm.valuesFiles",
            &joined.to_string_lossy(),
        )?;
        values.push(real.strip_prefix(&root).unwrap_or(&real).to_path_buf());
    }
    let env: Vec<(String, String)> = ["HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"]
        .iter()
        .map(|k| {
            (
                k.to_string(),
                tmp.path().join(".helm").join(k).display().to_string(),
            )
        })
        .collect();
    let chart_dir = registry_chart.unwrap_or_else(|| tmp.path().join(&rel_chart));
    // Dependencies are gathered by Gantry (chart_deps.rs), so helm never needs the network.
    chart_deps::vendor(
        tmp.path(),
        &chart_dir,
        helm_spec.allow_network_dependencies,
        req.repository_auth,
        req.limits.timeout,
    )
    .await?;
    let chart_arg = chart_dir.display().to_string();
    let mut args = vec![
        "template".to_string(),
        req.release_name.to_string(),
        chart_arg,
        "--namespace".into(),
        req.namespace.to_string(),
        "--include-crds".into(),
    ];
    // The target cluster, so `kubeVersion` constraints and `.Capabilities` see it (helm's
    // default is an old Kubernetes version and only the built-in API versions).
    if let Some(caps) = req.capabilities {
        if !caps.kube_version.is_empty() {
            args.push("--kube-version".into());
            args.push(caps.kube_version.clone());
        }
        if !caps.api_versions.is_empty() {
            args.push("--api-versions".into());
            args.push(caps.api_versions.join(","));
        }
    }
    for v in values {
        args.push("--values".into());
        args.push(tmp.path().join(v).display().to_string());
    }
    if let Some(inline) = &helm_spec.values {
        let path = tmp.path().join(".gantry-inline-values.yaml");
        std::fs::write(&path, serde_yaml::to_string(inline).unwrap_or_default())
            .map_err(|e| RenderError::io(&path, e))?;
        args.push("--values".into());
        args.push(path.display().to_string());
    }
    let out = tool::run(
        "helm",
        &program,
        &args,
        tmp.path(),
        &env,
        tool::Network::Denied,
        req.limits.timeout,
        req.limits.max_total_bytes,
    )
    .await?;
    let mut objects = vec![];
    if super::sops::is_encrypted(&out) {
        return Err(RenderError::Decryption {
            source_name: "helm template output".into(),
            message: "holds a SOPS-encrypted document: Gantry decrypts plain and kustomize \
                      manifests, not chart templates"
                .into(),
        });
    }
    plain::parse_documents("helm template output", &out, &req.limits, &mut objects)?;
    Ok(objects)
}
