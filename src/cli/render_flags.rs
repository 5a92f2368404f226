//! The render options `gantry render` and `gantry diff DIR` share, turned into what an
//! Application's spec would say (`spec.render.helm`), so the CLI renders through the same
//! path as the controller.

use serde_json::Value;

use crate::api::application::{HelmRender, RenderKind, RenderSpec};
use crate::error::{Error, Result};
use crate::render::Capabilities;

#[derive(Clone, Debug, Default, clap::Args)]
pub struct RenderFlags {
    /// A Helm values file, relative to the chart directory as in
    /// `spec.render.helm.valuesFiles` (repeatable, applied in order).
    #[arg(long = "values", short = 'f', value_name = "FILE")]
    pub values: Vec<String>,
    /// A Helm value, `key.path=value` (repeatable; applied after the files, as
    /// `spec.render.helm.values`; the value is read as YAML: `3`, `true`, `"3"`).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// The Kubernetes version Helm renders for (`.Capabilities.KubeVersion`, `kubeVersion`
    /// constraints), e.g. v1.35.0. Default: the cluster's with a cluster (`gantry diff`),
    /// Helm's own without.
    #[arg(long, value_name = "VERSION")]
    pub kube_version: Option<String>,
    /// API versions Helm sees as available (`group/version` or `group/version/Kind`,
    /// comma-separated or repeated).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub api_versions: Vec<String>,
}

impl RenderFlags {
    /// The render spec an Application with these values would have.
    pub fn spec(&self, release: &str) -> Result<RenderSpec> {
        let values = if self.set.is_empty() {
            None
        } else {
            Some(set_values(&self.set)?)
        };
        Ok(RenderSpec {
            kind: RenderKind::Auto,
            helm: Some(HelmRender {
                release_name: Some(release.to_string()),
                values_files: self.values.clone(),
                values,
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    /// The capabilities the flags give, over `cluster`'s (if any).
    pub fn capabilities(&self, cluster: Option<&Capabilities>) -> Option<Capabilities> {
        let mut caps = cluster.cloned();
        if self.kube_version.is_some() || !self.api_versions.is_empty() {
            let c = caps.get_or_insert_with(Capabilities::default);
            if let Some(v) = &self.kube_version {
                c.kube_version = v.clone();
            }
            c.api_versions.extend(self.api_versions.iter().cloned());
        }
        caps
    }
}

/// `--set a.b=1 --set c=x` as a values object: `{"a": {"b": 1}, "c": "x"}`.
fn set_values(pairs: &[String]) -> Result<Value> {
    let mut root = Value::Object(Default::default());
    for pair in pairs {
        let (path, raw) = pair
            .split_once('=')
            .ok_or_else(|| Error::Usage(format!("--set {pair}: expected KEY=VALUE")))?;
        if path.is_empty() || path.split('.').any(str::is_empty) {
            return Err(Error::Usage(format!("--set {pair}: empty key")));
        }
        let value: Value = if raw.is_empty() {
            Value::String(String::new())
        } else {
            serde_yaml::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()))
        };
        let mut at = &mut root;
        let keys: Vec<&str> = path.split('.').collect();
        for (i, key) in keys.iter().enumerate() {
            if !at.is_object() {
                *at = Value::Object(Default::default());
            }
            let map = at.as_object_mut().expect("an object");
            if i + 1 == keys.len() {
                map.insert(key.to_string(), value.clone());
                break;
            }
            at = map
                .entry(key.to_string())
                .or_insert_with(|| Value::Object(Default::default()));
        }
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn set_builds_nested_typed_values() {
        let v = set_values(&[
            "image.tag=1.2.3".into(),
            "replicas=3".into(),
            "debug=true".into(),
            "name=\"3\"".into(),
            "image.repository=registry.example.com/web".into(),
        ])
        .unwrap();
        assert_eq!(
            v,
            json!({"image": {"tag": "1.2.3", "repository": "registry.example.com/web"},
                   "replicas": 3, "debug": true, "name": "3"})
        );
        assert!(set_values(&["novalue".into()]).is_err());
        assert!(set_values(&["a..b=1".into()]).is_err());
    }

    #[test]
    fn flags_override_the_clusters_capabilities() {
        let cluster = Capabilities {
            kube_version: "v1.35.4".into(),
            api_versions: vec!["v1".into()],
        };
        let flags = RenderFlags {
            kube_version: Some("v1.30.0".into()),
            api_versions: vec!["example.com/v1".into()],
            ..Default::default()
        };
        let caps = flags.capabilities(Some(&cluster)).unwrap();
        assert_eq!(caps.kube_version, "v1.30.0");
        assert_eq!(caps.api_versions, ["v1", "example.com/v1"]);
        assert_eq!(RenderFlags::default().capabilities(None), None);
    }
}
