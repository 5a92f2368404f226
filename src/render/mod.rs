//! Render: turn the files at an Application's path into Kubernetes objects.
//! Plain YAML/JSON, kustomize (`kubectl kustomize`/`kustomize build`) or Helm (`helm template`),
//! auto-detected, each in a fresh temporary directory with limits and path checks.

pub mod chart_deps;
pub mod helm;
pub mod kustomize;
pub mod plain;
pub mod sandbox;
pub mod sops;
pub mod tool;

use std::path::Path;

use serde_json::Value;

use crate::api::application::{RenderKind, RenderSpec};
pub use sandbox::Limits;

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("{field} {path:?} is refused: {why}")]
    UnsafePath {
        field: String,
        path: String,
        why: String,
    },
    #[error("{field} {path:?} does not exist in the source")]
    NotFound { field: String, path: String },
    #[error("{source_name}: {message}")]
    Parse {
        source_name: String,
        message: String,
    },
    #[error(
        "no manifests found at {path} (found: {found}): Gantry renders YAML and JSON files, a kustomization.yaml or a Chart.yaml"
    )]
    NoManifests { path: String, found: String },
    #[error("render limit exceeded: {0}")]
    TooLarge(String),
    #[error("{tool} is needed to render this Application but was not found: {hint}")]
    ToolMissing {
        tool: &'static str,
        hint: &'static str,
    },
    #[error("{tool} failed: {message}")]
    ToolFailed { tool: &'static str, message: String },
    #[error("{tool} did not finish within {seconds}s and was stopped")]
    Timeout { tool: &'static str, seconds: u64 },
    #[error("{0}")]
    Refused(String),
    /// A SOPS document that cannot be decrypted (named, never its content).
    #[error("{source_name}: {message}")]
    Decryption {
        source_name: String,
        message: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl RenderError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        RenderError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// A key the renderers add at the top of each object, naming the file (or Helm template)
/// it came from; normalize and the hook split take it out, so it never reaches the cluster.
pub const ORIGIN: &str = "gantry.dev/origin";

pub(crate) fn set_origin(object: &mut Value, origin: String) {
    if let Some(o) = object.as_object_mut() {
        o.insert(ORIGIN.into(), Value::String(origin));
    }
}

/// Removes and returns the origin of a rendered object.
pub fn take_origin(object: &mut Value) -> Option<String> {
    match object.as_object_mut()?.remove(ORIGIN)? {
        Value::String(s) => Some(s),
        _ => None,
    }
}

/// What the renderer needs besides the files.
#[derive(Clone, Debug)]
pub struct RenderRequest<'a> {
    /// Release name for Helm (the Application's name by default).
    pub release_name: &'a str,
    /// Namespace for Helm's `--namespace`.
    pub namespace: &'a str,
    pub spec: Option<&'a RenderSpec>,
    pub limits: Limits,
    /// The target cluster as Helm's `.Capabilities` sees it; Helm's defaults when `None`
    /// (no cluster: `gantry render`).
    pub capabilities: Option<&'a Capabilities>,
    /// The chart of `spec.render.helm.chart`, fetched from its registry; the path then holds
    /// only values files.
    pub chart: Option<&'a crate::source::oci_chart::FetchedChart>,
    /// Credentials for the chart repositories of dependencies, by URL prefix.
    pub repository_auth: &'a [(String, crate::source::helm_repo::RepoAuth)],
    /// The keys of `spec.decryption`; an encrypted manifest is refused without them.
    pub decryptor: Option<&'a sops::Decryptor>,
}

/// A cluster's version and API versions, for Helm's `--kube-version` and `--api-versions`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// As `/version` reports it, e.g. `v1.35.4`.
    pub kube_version: String,
    /// `group/version` (`v1` for the core group) and `group/version/Kind` of every served
    /// resource, as `.Capabilities.APIVersions.Has` looks them up.
    pub api_versions: Vec<String>,
}

impl Capabilities {
    /// Whether the render of `dir` (with `spec`) is a Helm render, the one that reads them.
    pub fn wanted(dir: &Path, spec: Option<&RenderSpec>) -> bool {
        if oci_chart(spec).is_some() {
            return true;
        }
        match spec.map(|s| s.kind) {
            Some(RenderKind::Helm) => true,
            Some(RenderKind::Auto) | None => detect(dir) == RenderKind::Helm,
            Some(_) => false,
        }
    }
}

/// The remote chart (registry or repository) of a render spec, if any.
pub fn oci_chart(spec: Option<&RenderSpec>) -> Option<&crate::api::application::RemoteChart> {
    spec.and_then(|s| s.helm.as_ref())
        .and_then(|h| h.chart.as_ref())
}

/// The renderer `auto` picks for a directory.
pub fn detect(dir: &Path) -> RenderKind {
    if ["kustomization.yaml", "kustomization.yml", "Kustomization"]
        .iter()
        .any(|f| dir.join(f).is_file())
    {
        RenderKind::Kustomize
    } else if dir.join("Chart.yaml").is_file() {
        RenderKind::Helm
    } else {
        RenderKind::Plain
    }
}

/// The directory (relative to `root`) that a render of `path` reads, when it reads nothing
/// else: plain manifests, without a chart from a registry. Kustomize and Helm may read the
/// whole tree (bases, chart dependencies), so they have no such scope.
pub fn plain_scope(
    root: &Path,
    path: &str,
    spec: Option<&RenderSpec>,
) -> Option<std::path::PathBuf> {
    let clean = sandbox::check_relative("path", path).ok()?;
    if oci_chart(spec).is_some() {
        return None;
    }
    match spec.map(|s| s.kind).unwrap_or_default() {
        RenderKind::Plain => Some(clean),
        RenderKind::Auto if detect(&root.join(&clean)) == RenderKind::Plain => Some(clean),
        _ => None,
    }
}

/// Renders `path` of the artifact at `root`.
pub async fn render(
    root: &Path,
    path: &str,
    req: &RenderRequest<'_>,
) -> Result<Vec<Value>, RenderError> {
    let dir = sandbox::resolve_inside(root, "path", path)?;
    if !dir.is_dir() {
        return Err(RenderError::NotFound {
            field: "path".into(),
            path: path.to_string(),
        });
    }
    let kind = match req.spec.map(|s| s.kind).unwrap_or_default() {
        RenderKind::Auto if oci_chart(req.spec).is_some() => RenderKind::Helm,
        RenderKind::Auto => detect(&dir),
        other => other,
    };
    if oci_chart(req.spec).is_some() && kind != RenderKind::Helm {
        return Err(RenderError::Refused(
            "spec.render.helm.chart needs spec.render.type helm or auto".into(),
        ));
    }
    match kind {
        RenderKind::Plain | RenderKind::Auto => {
            let mut objects = vec![];
            for (name, text) in plain::read_files(root, &dir, &req.limits)? {
                parse_decrypted(&name, &text, sops::Format::of(&name), req, &mut objects).await?;
            }
            Ok(objects)
        }
        RenderKind::Kustomize => kustomize::render(root, &dir, req).await,
        RenderKind::Helm => helm::render(root, &dir, req).await,
    }
}

/// Parses `text` from `source` into `out`, decrypting it first when it is a SOPS document
/// (refused when the Application gives no keys). The plaintext lives in memory only.
pub async fn parse_decrypted(
    source: &str,
    text: &str,
    format: sops::Format,
    req: &RenderRequest<'_>,
    out: &mut Vec<Value>,
) -> Result<(), RenderError> {
    if !sops::is_encrypted(text) {
        return plain::parse_documents(source, text, &req.limits, out);
    }
    let Some(decryptor) = req.decryptor else {
        return Err(RenderError::Decryption {
            source_name: source.to_string(),
            message: "is encrypted with SOPS and the Application sets no spec.decryption: \
                      refusing to apply ciphertext"
                .into(),
        });
    };
    let plaintext = decryptor.decrypt(source, text, format).await?;
    let start = out.len();
    plain::parse_documents(source, &plaintext, &req.limits, out)?;
    sops::mark_decrypted(&mut out[start..]);
    Ok(())
}
