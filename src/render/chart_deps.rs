//! A chart's dependencies, gathered as `helm dependency build` would, but by Gantry and
//! under Gantry's rules, so `helm` itself never needs the network: `file://` dependencies
//! (an umbrella chart naming sibling charts) are copied from the repository into `charts/`,
//! depth first, never from outside it; dependencies from chart repositories and OCI
//! registries (only when the Application allows the network) are resolved like
//! `spec.render.helm.chart` — ranges, size caps, the index's digest verified — and written
//! into `charts/` as archives.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::RenderError;

/// `file://` dependencies are followed this deep (an umbrella of umbrellas of charts).
const MAX_DEPTH: usize = 5;
/// At most this many charts have their dependencies built in one render.
const MAX_BUILDS: usize = 16;

/// One entry of `Chart.yaml`'s `dependencies`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dependency {
    pub name: String,
    pub repository: String,
    /// The version constraint (`version:`), if any.
    pub version: Option<String>,
    /// Already under `charts/` (a directory or an archive): nothing to build.
    pub vendored: bool,
}

impl Dependency {
    /// The directory of a `file://` dependency, relative to its chart.
    pub fn local_path(&self) -> Option<&str> {
        self.repository.strip_prefix("file://")
    }
}

/// The dependencies `Chart.yaml` in `chart_dir` declares (none without a `Chart.yaml`).
pub fn dependencies(chart_dir: &Path) -> Result<Vec<Dependency>, RenderError> {
    let file = chart_dir.join("Chart.yaml");
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(RenderError::io(&file, e)),
    };
    let chart: Value = serde_yaml::from_str(&text).map_err(|e| RenderError::Parse {
        source_name: "Chart.yaml".into(),
        message: e.to_string(),
    })?;
    let charts = chart_dir.join("charts");
    let mut out = vec![];
    for dep in chart
        .get("dependencies")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = dep.get("name").and_then(Value::as_str).unwrap_or_default();
        let repository = dep
            .get("repository")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let vendored = charts.join(name).is_dir()
            || std::fs::read_dir(&charts)
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| {
                    let f = e.file_name().to_string_lossy().into_owned();
                    f.starts_with(&format!("{name}-")) && f.ends_with(".tgz")
                });
        out.push(Dependency {
            name: name.to_string(),
            repository: repository.to_string(),
            version: dep
                .get("version")
                .and_then(Value::as_str)
                .map(str::to_string),
            vendored,
        });
    }
    Ok(out)
}

/// Puts every missing dependency of the chart at `chart_dir` (inside `root`, the copy of
/// the repository) under its `charts/`, and theirs under theirs.
pub async fn vendor(
    root: &Path,
    chart_dir: &Path,
    allow_network: bool,
    auth: &[(String, crate::source::helm_repo::RepoAuth)],
    timeout: std::time::Duration,
) -> Result<(), RenderError> {
    let root = root.canonicalize().map_err(|e| RenderError::io(root, e))?;
    let start = chart_dir
        .canonicalize()
        .map_err(|e| RenderError::io(chart_dir, e))?;
    // (where the chart is now, where it came from in the repository, the chain of sources)
    let mut work: Vec<(PathBuf, PathBuf, Vec<PathBuf>)> =
        vec![(start.clone(), start.clone(), vec![start])];
    let mut built = 0;
    let mut network = vec![];
    while let Some((dir, source, chain)) = work.pop() {
        for d in dependencies(&dir)?.into_iter().filter(|d| !d.vendored) {
            built += 1;
            if built > MAX_BUILDS {
                return Err(RenderError::TooLarge(format!(
                    "more than {MAX_BUILDS} chart dependencies to gather"
                )));
            }
            let field = format!("dependency {} of {}", d.name, shown(&root, &source));
            let Some(path) = d.local_path() else {
                network.push((dir.clone(), d));
                continue;
            };
            if chain.len() > MAX_DEPTH {
                return Err(RenderError::TooLarge(format!(
                    "file:// chart dependencies nested more than {MAX_DEPTH} deep"
                )));
            }
            let from = source
                .join(path)
                .canonicalize()
                .map_err(|_| RenderError::NotFound {
                    field: field.clone(),
                    path: d.repository.clone(),
                })?;
            if !from.starts_with(&root) {
                return Err(RenderError::UnsafePath {
                    field,
                    path: d.repository.clone(),
                    why: "it resolves outside the repository".into(),
                });
            }
            if chain.contains(&from) {
                return Err(RenderError::Refused(format!(
                    "chart dependencies form a cycle at {}",
                    shown(&root, &from)
                )));
            }
            check_local_version(&d, &from)?;
            let into = dir.join("charts").join(&d.name);
            std::fs::create_dir_all(&into).map_err(|e| RenderError::io(&into, e))?;
            super::tool::copy_tree(&root, &from, &into)?;
            let mut chain = chain.clone();
            chain.push(from.clone());
            work.push((into, from, chain));
        }
    }
    if network.is_empty() {
        return Ok(());
    }
    if !allow_network {
        let names: Vec<String> = network
            .iter()
            .map(|(_, d)| format!("{} from {}", d.name, d.repository))
            .collect();
        return Err(RenderError::Refused(format!(
            "chart dependencies would be fetched from the network ({}); vendor them under charts/ \
             or set spec.render.helm.allowNetworkDependencies",
            names.join(", ")
        )));
    }
    for (dir, d) in network {
        let version = d.version.clone().unwrap_or_else(|| "*".into());
        let creds = auth
            .iter()
            .filter(|(prefix, _)| d.repository.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(_, a)| a.clone())
            .unwrap_or_default();
        let fetched = fetch_remote(&d, &version, &creds, timeout).await?;
        let file = dir
            .join("charts")
            .join(format!("{}-{}.tgz", d.name, fetched.0));
        std::fs::create_dir_all(dir.join("charts")).map_err(|e| RenderError::io(&dir, e))?;
        std::fs::write(&file, &fetched.1.archive).map_err(|e| RenderError::io(&file, e))?;
    }
    Ok(())
}

/// A local dependency's version must meet the constraint its parent names (as `helm
/// dependency build` checks it).
fn check_local_version(d: &Dependency, from: &Path) -> Result<(), RenderError> {
    let Some(wanted) = &d.version else {
        return Ok(());
    };
    let name = &d.name;
    let text = std::fs::read_to_string(from.join("Chart.yaml"))
        .map_err(|e| RenderError::io(&from.join("Chart.yaml"), e))?;
    let chart: Value = serde_yaml::from_str(&text).map_err(|e| RenderError::Parse {
        source_name: format!("Chart.yaml of dependency {name}"),
        message: e.to_string(),
    })?;
    let have = chart["version"].as_str().unwrap_or_default();
    let ok = crate::source::chart_version::Wanted::parse(wanted)
        .map(|w| w.select([have]).is_some())
        .unwrap_or(true);
    if ok {
        Ok(())
    } else {
        Err(RenderError::Refused(format!(
            "dependency {name} is version {have}, which does not satisfy {wanted:?}"
        )))
    }
}

/// A dependency from a chart repository (`https://…`) or a registry (`oci://…`), at the
/// highest version `version` allows, verified: (version, archive).
async fn fetch_remote(
    d: &Dependency,
    version: &str,
    auth: &crate::source::helm_repo::RepoAuth,
    timeout: std::time::Duration,
) -> Result<(String, crate::source::oci_chart::FetchedChart), RenderError> {
    use crate::source::{helm_repo, oci_chart, registry::Credentials};
    let failed =
        |e: oci_chart::ChartError| RenderError::Refused(format!("dependency {}: {e}", d.name));
    if d.repository.starts_with("oci://") {
        let url = format!("{}/{}", d.repository.trim_end_matches('/'), d.name);
        let creds = Credentials::Anonymous;
        let exact = oci_chart::resolve_version(&url, version, &creds, false, timeout)
            .await
            .map_err(failed)?;
        let chart = oci_chart::ChartRef::parse(&url, &exact).map_err(failed)?;
        let fetched = oci_chart::fetch(&chart, &creds, false, timeout)
            .await
            .map_err(failed)?;
        return Ok((exact, fetched));
    }
    if d.repository.starts_with('@') || d.repository.starts_with("alias:") {
        return Err(RenderError::Refused(format!(
            "dependency {}: repository {} names a `helm repo add` alias; name its URL",
            d.name, d.repository
        )));
    }
    let resolved = helm_repo::resolve(&d.repository, &d.name, version, auth, false, timeout)
        .await
        .map_err(failed)?;
    let fetched = helm_repo::download(&resolved, auth, timeout)
        .await
        .map_err(failed)?;
    Ok((resolved.version, fetched))
}

fn shown(root: &Path, p: &Path) -> String {
    match p.strip_prefix(root) {
        Ok(rel) if rel.as_os_str().is_empty() => ".".into(),
        Ok(rel) => rel.display().to_string(),
        Err(_) => p.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(dir: &Path, name: &str, version: &str, deps: &[(&str, &str, &str)]) {
        std::fs::create_dir_all(dir).unwrap();
        let mut text = format!("apiVersion: v2\nname: {name}\nversion: {version}\n");
        if !deps.is_empty() {
            text.push_str("dependencies:\n");
            for (n, v, repo) in deps {
                text.push_str(&format!(
                    "- name: {n}\n  version: \"{v}\"\n  repository: {repo}\n"
                ));
            }
        }
        std::fs::write(dir.join("Chart.yaml"), text).unwrap();
    }

    fn vendor_now(root: &Path, chart: &Path, network: bool) -> Result<(), RenderError> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(vendor(
                root,
                chart,
                network,
                &[],
                std::time::Duration::from_secs(2),
            ))
    }

    #[test]
    fn local_dependencies_are_copied_depth_first_from_their_own_place() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        chart(&r.join("charts/base"), "base", "0.3.0", &[]);
        chart(
            &r.join("charts/common"),
            "common",
            "0.2.0",
            &[("base", ">=0.1.0", "file://../base")],
        );
        chart(
            &r.join("apps/shop"),
            "shop",
            "1.0.0",
            &[("common", "~0.2.0", "file://../../charts/common")],
        );
        vendor_now(r, &r.join("apps/shop"), false).unwrap();
        assert!(r.join("apps/shop/charts/common/Chart.yaml").is_file());
        assert!(
            r.join("apps/shop/charts/common/charts/base/Chart.yaml")
                .is_file(),
            "common's own dependency, resolved from where common is in the repository"
        );
        // The network is needed only for what is not in the repository.
        chart(
            &r.join("apps/net"),
            "net",
            "1.0.0",
            &[("redis", "1.0.0", "https://charts.example.com")],
        );
        let e = vendor_now(r, &r.join("apps/net"), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("redis from https://charts.example.com"), "{e}");
    }

    #[test]
    fn paths_outside_the_repository_cycles_and_wrong_versions_are_refused() {
        let outer = tempfile::tempdir().unwrap();
        let r = outer.path().join("repo");
        chart(&outer.path().join("secret"), "secret", "0.1.0", &[]);
        chart(
            &r.join("app"),
            "app",
            "0.1.0",
            &[("secret", "*", "file://../../secret")],
        );
        let e = vendor_now(&r, &r.join("app"), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("outside the repository"), "{e}");

        chart(&r.join("a"), "a", "0.1.0", &[("b", "*", "file://../b")]);
        chart(&r.join("b"), "b", "0.1.0", &[("a", "*", "file://../a")]);
        let e = vendor_now(&r, &r.join("a"), false).unwrap_err().to_string();
        assert!(e.contains("cycle"), "{e}");

        chart(
            &r.join("c"),
            "c",
            "0.1.0",
            &[("gone", "*", "file://../gone")],
        );
        let e = vendor_now(&r, &r.join("c"), false).unwrap_err().to_string();
        assert!(e.contains("does not exist"), "{e}");

        chart(&r.join("lib"), "lib", "0.1.0", &[]);
        chart(
            &r.join("d"),
            "d",
            "0.1.0",
            &[("lib", "^2.0.0", "file://../lib")],
        );
        let e = vendor_now(&r, &r.join("d"), false).unwrap_err().to_string();
        assert!(e.contains("does not satisfy"), "{e}");
    }
}
