//! What a write-back writes: the selection of one policy (an image, or a chart version)
//! and the lines an edit changed. Data only; the edits are in `edit` and `chart_edit`.

/// The image a policy selected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub policy: String,
    /// Repository as in the ImagePolicy, e.g. `127.0.0.1:5000/team/web`.
    pub repository: String,
    pub tag: String,
    /// `sha256:…` when the policy pins digests.
    pub digest: Option<String>,
    /// Set when the policy orders a chart's versions (`tag` is then the version).
    pub chart: Option<ChartName>,
}

/// A Helm chart as `Chart.yaml` dependencies name it: the repository (`https://…`, or the
/// `oci://` path above the chart) and the chart's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChartName {
    pub repository: String,
    pub name: String,
}

impl ChartName {
    /// From an `oci://registry/path/chart` url.
    pub fn from_oci_url(url: &str) -> Option<Self> {
        let url = url.trim_end_matches('/');
        let (repository, name) = url.rsplit_once('/')?;
        (repository.len() > "oci://".len() && !name.is_empty()).then(|| ChartName {
            repository: repository.to_string(),
            name: name.to_string(),
        })
    }

    /// `<repository>/<name>`.
    pub fn subject(&self) -> String {
        format!("{}/{}", self.repository.trim_end_matches('/'), self.name)
    }
}

impl Update {
    /// What the commit message calls the new value: the image reference, or the chart's
    /// version.
    pub fn written(&self) -> String {
        match self.chart {
            Some(_) => self.tag.clone(),
            None => self.image(),
        }
    }

    /// `repo:tag` or `repo:tag@sha256:…`.
    pub fn image(&self) -> String {
        match &self.digest {
            Some(d) => format!("{}:{}@{}", self.repository, self.tag, d),
            None => format!("{}:{}", self.repository, self.tag),
        }
    }
}

/// One edited line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// 1-based line number in the original text.
    pub line: usize,
    pub old: String,
    pub new: String,
    /// The value that was replaced (image reference, tag or digest), empty for inserts.
    pub old_value: String,
}
