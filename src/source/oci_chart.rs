//! Helm charts in OCI registries (what `helm push` stores): the chart layer of
//! `oci://registry/repository:version`, fetched with the credentials of a
//! `kubernetes.io/dockerconfigjson` Secret and unpacked with regular files and directories
//! only, inside size limits, so a crafted chart can neither write nor read outside its
//! directory (no links, no `..`, no absolute paths).

use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use super::registry::{self, Credentials, ImageName, RegistryError};

/// The media type of the chart archive layer.
pub const CHART_LAYER: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";
/// The largest chart archive read from a registry.
pub const MAX_ARCHIVE_BYTES: usize = 16 << 20;
/// The most bytes a chart may unpack to.
pub const MAX_UNPACKED_BYTES: u64 = 128 << 20;
/// The most entries a chart archive may hold.
pub const MAX_ENTRIES: usize = 20_000;

#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error("spec.render.helm.chart {url:?}: {why}")]
    BadUrl { url: String, why: String },
    #[error("spec.render.helm.chart.version {version:?}: {why}")]
    BadVersion { version: String, why: String },
    #[error("chart {reference}: {source}")]
    Registry {
        reference: String,
        #[source]
        source: RegistryError,
    },
    #[error("{reference} is not a Helm chart: no layer of type {CHART_LAYER} (found: {found})")]
    NotAChart { reference: String, found: String },
    #[error("chart {reference} is larger than {limit} bytes; refused")]
    TooLarge { reference: String, limit: u64 },
    #[error("chart {reference} cannot be unpacked: {why}")]
    Unpack { reference: String, why: String },
    #[error("{0}")]
    Secret(String),
    /// `verify` is set and the chart's manifest carries no valid signature.
    #[error("chart {reference} ({digest}) is refused: {why}; nothing applied")]
    Unverified {
        reference: String,
        digest: String,
        why: String,
    },
    /// A Helm chart repository could not be read, or does not have the chart.
    #[error("chart {reference}: {why}")]
    Repository { reference: String, why: String },
    #[error(
        "chart {reference}: the archive's digest is {got}, the repository's index says {expected}; refused, nothing applied"
    )]
    DigestMismatch {
        reference: String,
        expected: String,
        got: String,
    },
}

impl ChartError {
    /// Whether retrying without a change can help.
    pub fn is_transient(&self) -> bool {
        match self {
            ChartError::Registry { source, .. } => source.is_transient(),
            ChartError::Secret(_) | ChartError::Repository { .. } => true,
            _ => false,
        }
    }
}

/// Where a chart is: registry, repository and the tag of its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChartRef {
    pub image: ImageName,
    pub tag: String,
}

impl ChartRef {
    /// `oci://127.0.0.1:5000/charts/web` and `1.2.0` (Helm stores `+` of a version as `_`).
    pub fn parse(url: &str, version: &str) -> Result<Self, ChartError> {
        let image = Self::image_of(url)?;
        let bad_version = |why: &str| ChartError::BadVersion {
            version: version.to_string(),
            why: why.to_string(),
        };
        if version.is_empty() || version.len() > 128 {
            return Err(bad_version("a version of 1 to 128 characters is needed"));
        }
        if !version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
        {
            return Err(bad_version("an exact version such as 1.4.2 is needed"));
        }
        Ok(ChartRef {
            image,
            tag: version.replace('+', "_"),
        })
    }

    /// The repository of an `oci://` chart URL.
    pub fn image_of(url: &str) -> Result<ImageName, ChartError> {
        let bad_url = |why: &str| ChartError::BadUrl {
            url: url.to_string(),
            why: why.to_string(),
        };
        let rest = url
            .strip_prefix("oci://")
            .ok_or_else(|| bad_url("only oci:// chart URLs are supported"))?;
        let image = ImageName::parse(rest.trim_end_matches('/')).map_err(|e| match e {
            RegistryError::BadImage { why, .. } => bad_url(&why),
            other => bad_url(&other.to_string()),
        })?;
        if image.registry == "docker.io" && !rest.starts_with("docker.io/") {
            return Err(bad_url(
                "name the registry host, e.g. oci://ghcr.io/org/chart",
            ));
        }
        if super::url_policy::is_metadata_host(image.host()) {
            return Err(bad_url(
                "a link-local or cloud metadata address is never a chart registry",
            ));
        }
        Ok(image)
    }
}

impl std::fmt::Display for ChartRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "oci://{}/{}:{}",
            self.image.registry, self.image.repository, self.tag
        )
    }
}

/// The version `version` (exact or a range) asks for among the tags of the `oci://`
/// chart `url` (Helm stores a version's `+` as `_` in its tag).
pub async fn resolve_version(
    url: &str,
    version: &str,
    creds: &Credentials,
    insecure: bool,
    timeout: Duration,
) -> Result<String, ChartError> {
    let wanted =
        super::chart_version::Wanted::parse(version).map_err(|why| ChartError::BadVersion {
            version: version.to_string(),
            why,
        })?;
    if !wanted.is_range() {
        return Ok(version.to_string());
    }
    let image = ChartRef::image_of(url)?;
    let tags = registry::list_tags(&image, creds, insecure, timeout)
        .await
        .map_err(|source| ChartError::Registry {
            reference: url.to_string(),
            source,
        })?;
    let versions: Vec<String> = tags.iter().map(|t| t.replace('_', "+")).collect();
    wanted
        .select(versions.iter().map(String::as_str))
        .map(str::to_string)
        .ok_or_else(|| ChartError::Repository {
            reference: url.to_string(),
            why: format!("no tag matches {version:?}"),
        })
}

/// A chart archive as read from the registry.
#[derive(Clone)]
pub struct FetchedChart {
    /// `oci://…:version`, for messages.
    pub reference: String,
    /// The digest of the chart's manifest.
    pub digest: String,
    /// The gzipped tar archive.
    pub archive: Vec<u8>,
}

impl std::fmt::Debug for FetchedChart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchedChart")
            .field("reference", &self.reference)
            .field("digest", &self.digest)
            .field("bytes", &self.archive.len())
            .finish()
    }
}

/// Reads the chart archive of `chart` (manifest, then the chart layer), within `timeout`.
pub async fn fetch(
    chart: &ChartRef,
    creds: &Credentials,
    insecure: bool,
    timeout: Duration,
) -> Result<FetchedChart, ChartError> {
    let reference = chart.to_string();
    let registry_error = |source| ChartError::Registry {
        reference: reference.clone(),
        source,
    };
    let client = registry::new_client(&chart.image, insecure, timeout);
    let oci_ref = chart.image.reference(&chart.tag);
    let auth = creds.auth();
    let what = format!("{}:{}", chart.image.repository, chart.tag);
    let work = async {
        let (manifest, digest) = client
            .pull_image_manifest(&oci_ref, &auth)
            .await
            .map_err(|e| registry_error(registry::classify(&chart.image, &what, e)))?;
        let layer = manifest
            .layers
            .iter()
            .find(|l| l.media_type == CHART_LAYER)
            .ok_or_else(|| ChartError::NotAChart {
                reference: reference.clone(),
                found: manifest
                    .layers
                    .iter()
                    .map(|l| l.media_type.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let too_large = || ChartError::TooLarge {
            reference: reference.clone(),
            limit: MAX_ARCHIVE_BYTES as u64,
        };
        if layer.size < 0 || layer.size as u64 > MAX_ARCHIVE_BYTES as u64 {
            return Err(too_large());
        }
        let mut out = Capped::new(MAX_ARCHIVE_BYTES);
        let pulled = client.pull_blob(&oci_ref, layer, &mut out).await;
        if out.over {
            return Err(too_large());
        }
        pulled.map_err(|e| registry_error(registry::classify(&chart.image, &what, e)))?;
        Ok(FetchedChart {
            reference: reference.clone(),
            digest,
            archive: out.buf,
        })
    };
    tokio::time::timeout(timeout, work).await.map_err(|_| {
        registry_error(RegistryError::Timeout {
            registry: chart.image.registry.clone(),
            timeout,
        })
    })?
}

/// Unpacks `chart` under `into`; returns the chart's directory (the archive's one top-level
/// directory holding `Chart.yaml`). Anything but regular files and directories is refused,
/// as are paths leaving `into` and archives beyond the limits. Files are streamed to disk
/// (memory stays at the archive's size); blocking, so async callers run it on a blocking
/// thread.
pub fn unpack(chart: &FetchedChart, into: &Path) -> Result<PathBuf, ChartError> {
    let fail = |why: String| ChartError::Unpack {
        reference: chart.reference.clone(),
        why,
    };
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(chart.archive.as_slice()));
    let mut total: u64 = 0;
    let mut count = 0usize;
    let mut tops = std::collections::BTreeSet::new();
    let entries = archive.entries().map_err(|e| fail(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| fail(e.to_string()))?;
        count += 1;
        if count > MAX_ENTRIES {
            return Err(fail(format!("more than {MAX_ENTRIES} entries")));
        }
        let path = entry.path().map_err(|e| fail(e.to_string()))?.into_owned();
        let shown = path.display().to_string();
        let mut rel = PathBuf::new();
        for c in path.components() {
            match c {
                Component::Normal(p) => rel.push(p),
                Component::CurDir => {}
                _ => return Err(fail(format!("{shown:?} leaves the chart directory"))),
            }
        }
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
            continue;
        }
        if rel.as_os_str().is_empty() {
            continue;
        }
        if let Some(Component::Normal(top)) = rel.components().next() {
            tops.insert(top.to_os_string());
        }
        let target = into.join(&rel);
        if kind.is_dir() {
            std::fs::create_dir_all(&target).map_err(|e| fail(format!("{shown}: {e}")))?;
        } else if kind.is_file() {
            total += entry.size();
            if total > MAX_UNPACKED_BYTES {
                return Err(ChartError::TooLarge {
                    reference: chart.reference.clone(),
                    limit: MAX_UNPACKED_BYTES,
                });
            }
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|e| fail(format!("{shown}: {e}")))?;
            }
            // Streamed to disk, never whole in memory; the bytes actually read are what
            // counts (a header may understate them).
            let mut file =
                std::fs::File::create(&target).map_err(|e| fail(format!("{shown}: {e}")))?;
            let budget = MAX_UNPACKED_BYTES - (total - entry.size());
            let copied = std::io::copy(&mut (&mut entry).take(budget + 1), &mut file)
                .map_err(|e| fail(format!("{shown}: {e}")))?;
            if copied > budget {
                return Err(ChartError::TooLarge {
                    reference: chart.reference.clone(),
                    limit: MAX_UNPACKED_BYTES,
                });
            }
            total = total - entry.size() + copied;
        } else {
            return Err(fail(format!(
                "{shown:?} is a {}; only files and directories are accepted",
                entry_kind(kind)
            )));
        }
    }
    let mut tops = tops.into_iter();
    match (tops.next(), tops.next()) {
        (Some(top), None) if into.join(&top).join("Chart.yaml").is_file() => Ok(into.join(top)),
        _ => Err(fail(
            "the archive does not hold one chart directory with a Chart.yaml".into(),
        )),
    }
}

fn entry_kind(kind: tar::EntryType) -> &'static str {
    if kind.is_symlink() {
        "symbolic link"
    } else if kind.is_hard_link() {
        "hard link"
    } else if kind.is_character_special() || kind.is_block_special() {
        "device"
    } else if kind.is_fifo() {
        "FIFO"
    } else {
        "special entry"
    }
}

/// A buffer that refuses to grow past its limit (the registry may lie about sizes).
struct Capped {
    buf: Vec<u8>,
    limit: usize,
    over: bool,
}

impl Capped {
    fn new(limit: usize) -> Self {
        Self {
            buf: Vec::new(),
            limit,
            over: false,
        }
    }
}

impl tokio::io::AsyncWrite for Capped {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.buf.len() + data.len() > self.limit {
            self.over = true;
            return Poll::Ready(Err(std::io::Error::other("chart archive too large")));
        }
        self.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> FetchedChart {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        let tar = b.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        FetchedChart {
            reference: "oci://127.0.0.1:5000/charts/web:1.0.0".into(),
            digest: "sha256:0".into(),
            archive: gz.finish().unwrap(),
        }
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, body: &str) {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, body.as_bytes()).unwrap();
    }

    /// Writes a header with a raw name, as a crafted archive would (the builder refuses `..`).
    fn raw(b: &mut tar::Builder<Vec<u8>>, name: &str, kind: tar::EntryType, link: &str) {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_size(0);
        h.set_mode(0o644);
        h.set_entry_type(kind);
        h.set_cksum();
        b.append(&h, std::io::empty()).unwrap();
    }

    #[test]
    fn urls_and_versions() {
        let c = ChartRef::parse("oci://127.0.0.1:5000/charts/web", "1.2.0+build.3").unwrap();
        assert_eq!(c.image.registry, "127.0.0.1:5000");
        assert_eq!(c.image.repository, "charts/web");
        assert_eq!(c.tag, "1.2.0_build.3");
        assert_eq!(
            c.to_string(),
            "oci://127.0.0.1:5000/charts/web:1.2.0_build.3"
        );
        for (url, why) in [
            ("https://charts.example.com/web", "only oci://"),
            ("oci://ghcr.io/org/web:1.0", "tag"),
            ("oci://web", "registry host"),
            ("oci://ghcr.io/Org/web", "lowercase"),
        ] {
            let e = ChartRef::parse(url, "1.0.0").unwrap_err().to_string();
            assert!(e.contains(why) && e.contains(url), "{url}: {e}");
        }
        for v in ["", ">=1.0.0", "^1.2", "1.0.0 || 2.0.0"] {
            let e = ChartRef::parse("oci://ghcr.io/org/web", v).unwrap_err();
            assert!(matches!(e, ChartError::BadVersion { .. }), "{v}: {e}");
        }
    }

    #[test]
    fn a_chart_unpacks_to_its_directory() {
        let chart = archive(|b| {
            file(
                b,
                "web/Chart.yaml",
                "apiVersion: v2\nname: web\nversion: 1.0.0\n",
            );
            file(b, "web/templates/cm.yaml", "kind: ConfigMap\n");
        });
        let dir = tempfile::tempdir().unwrap();
        let at = unpack(&chart, dir.path()).unwrap();
        assert_eq!(at, dir.path().join("web"));
        assert!(at.join("templates/cm.yaml").is_file());
    }

    #[test]
    fn links_escapes_and_strays_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cases: Vec<(FetchedChart, &str)> = vec![
            (
                archive(|b| {
                    file(b, "web/Chart.yaml", "name: web\n");
                    raw(
                        b,
                        "web/templates/token",
                        tar::EntryType::Symlink,
                        "/var/run/secrets/kubernetes.io/serviceaccount/token",
                    );
                }),
                "symbolic link",
            ),
            (
                archive(|b| {
                    file(b, "web/Chart.yaml", "name: web\n");
                    raw(b, "web/passwd", tar::EntryType::Link, "/etc/passwd");
                }),
                "hard link",
            ),
            (
                archive(|b| raw(b, "../../escaped", tar::EntryType::Regular, "")),
                "leaves the chart directory",
            ),
            (
                archive(|b| raw(b, "/etc/cron.d/x", tar::EntryType::Regular, "")),
                "leaves the chart directory",
            ),
            (
                archive(|b| {
                    file(b, "a/Chart.yaml", "name: a\n");
                    file(b, "b/Chart.yaml", "name: b\n");
                }),
                "one chart directory",
            ),
            (
                archive(|b| file(b, "web/values.yaml", "a: 1\n")),
                "one chart directory",
            ),
        ];
        for (i, (chart, why)) in cases.into_iter().enumerate() {
            let into = dir.path().join(i.to_string());
            std::fs::create_dir(&into).unwrap();
            let e = unpack(&chart, &into).unwrap_err().to_string();
            assert!(e.contains(why), "case {i}: {e}");
            assert!(e.contains("oci://127.0.0.1:5000/charts/web:1.0.0"), "{e}");
        }
        assert!(!dir.path().join("escaped").exists());
    }

    #[test]
    fn the_buffer_stops_at_its_limit() {
        use tokio::io::AsyncWriteExt;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut c = Capped::new(4);
            c.write_all(b"abc").await.unwrap();
            assert!(c.write_all(b"de").await.is_err());
            assert!(c.over);
        });
    }
}
