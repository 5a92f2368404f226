//! `gantry render DIR`: the rendered, normalized set, without a cluster: the render, hook
//! split and normalization of the controller (apply/prepare.rs), with the Helm options an
//! Application's spec would give (values files, inline values, capabilities).

use std::path::PathBuf;
use std::process::ExitCode;

use super::common::cluster_scoped;
use super::render_flags::RenderFlags;
use crate::apply::prepare::{Prepared, prepare};
use crate::error::{Error, Result};
use crate::render::{self, Capabilities, Limits, RenderRequest};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory to render (plain YAML, kustomization or Helm chart, detected).
    pub dir: PathBuf,
    /// Namespace for namespaced objects that name none.
    #[arg(long, short = 'n', default_value = "default")]
    pub namespace: String,
    /// Ownership label value (`<namespace>.<application>`).
    #[arg(long, default_value = "local.render")]
    pub app_label: String,
    /// Release name for Helm charts (default: the Application's name in --app-label, as
    /// the controller names a release after its Application).
    #[arg(long)]
    pub release_name: Option<String>,
    /// The repository root: files DIR refers to (kustomize `../base`, Helm values files)
    /// must be under it, as they must be under the source's root for the controller.
    /// Default: DIR itself.
    #[arg(long)]
    pub root: Option<PathBuf>,
    #[command(flatten)]
    pub render: RenderFlags,
}

/// The release name the controller would use: the Application's name, the part of the
/// ownership label `<namespace>.<application>` after the namespace.
fn release_of(app_label: &str) -> &str {
    app_label
        .split_once('.')
        .map(|(_, app)| app)
        .unwrap_or(app_label)
}

/// What a local render is made with, besides the files.
pub struct Local<'a> {
    pub namespace: &'a str,
    pub app_label: &'a str,
    pub release: &'a str,
    pub flags: &'a RenderFlags,
    /// The cluster's (`gantry diff`), or none (Helm's defaults), before the flags.
    pub capabilities: Option<&'a Capabilities>,
}

/// Renders `path` (relative to `root`, which bounds what the render may read) as the
/// controller would render it for an Application installing it, and normalizes it with the
/// built-in scope table.
pub async fn render_in(
    root: &std::path::Path,
    path: &std::path::Path,
    local: &Local<'_>,
) -> Result<Prepared> {
    let spec = local.flags.spec(local.release)?;
    let capabilities = local.flags.capabilities(local.capabilities);
    let req = RenderRequest {
        // Never prints plaintext: an encrypted manifest is refused here.
        decryptor: None,
        release_name: local.release,
        namespace: local.namespace,
        spec: Some(&spec),
        limits: Limits::default(),
        capabilities: capabilities.as_ref(),
        chart: None,
        repository_auth: &[],
    };
    let objects = render::render(root, &path.to_string_lossy(), &req)
        .await
        .map_err(|e| Error::Usage(e.to_string()))?;
    prepare(
        objects,
        true,
        local.namespace,
        local.app_label,
        |g, _, k| Some(!cluster_scoped(g, k)),
    )
    .map_err(|e| Error::Usage(e.to_string()))
}

/// `DIR` and `--root` as (root, path inside it).
pub fn root_and_path(
    dir: &std::path::Path,
    root: Option<&std::path::Path>,
) -> Result<(PathBuf, PathBuf)> {
    let Some(root) = root else {
        return Ok((dir.to_path_buf(), PathBuf::from(".")));
    };
    let (root_real, dir_real) = (root.canonicalize(), dir.canonicalize());
    let (Ok(root_real), Ok(dir_real)) = (root_real, dir_real) else {
        return Err(Error::Usage(format!(
            "{} or {} does not exist",
            root.display(),
            dir.display()
        )));
    };
    let rel = dir_real.strip_prefix(&root_real).map_err(|_| {
        Error::Usage(format!(
            "{} is not under --root {}",
            dir.display(),
            root.display()
        ))
    })?;
    let rel = if rel.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        rel.to_path_buf()
    };
    Ok((root_real, rel))
}

pub async fn run(args: Args) -> Result<ExitCode> {
    let release = args
        .release_name
        .clone()
        .unwrap_or_else(|| release_of(&args.app_label).to_string());
    let (root, path) = root_and_path(&args.dir, args.root.as_deref())?;
    let local = Local {
        namespace: &args.namespace,
        app_label: &args.app_label,
        release: &release,
        flags: &args.render,
        capabilities: None,
    };
    let prepared = render_in(&root, &path, &local).await?;
    // Hooks are not part of the set (the controller runs them around it).
    for h in &prepared.hooks {
        crate::errln!(
            "hook ({:?}, weight {}): {}",
            h.phase,
            h.weight,
            h.describe()
        );
    }
    let set = prepared.desired;
    for d in set {
        crate::outln!("---");
        crate::out!("{}", serde_yaml::to_string(&d.object)?);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_release_is_named_after_the_application_as_the_controller_does() {
        assert_eq!(release_of("shop.web"), "web");
        assert_eq!(release_of("local.render"), "render");
        assert_eq!(release_of("bare"), "bare");
    }
}
