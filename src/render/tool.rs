//! Running an external render tool with a timeout and an output cap; the child is killed
//! when either is exceeded (TESTING.md row 4).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::Command;

use super::RenderError;

/// Finds a tool: the environment variable `env` first, then `PATH`.
pub fn find(env: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in names {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// Whether a render tool may reach the network (remote bases, chart dependencies the
/// Application allows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Network {
    Allowed,
    /// No `PATH` (so no `git` for the tool to run) and every proxy variable pointed at a
    /// closed loopback port, so Go's HTTP client fails at once instead of fetching.
    Denied,
}

/// A loopback address nothing listens on (the discard port), for the proxy variables.
const NO_NETWORK_PROXY: &str = "http://127.0.0.1:9";

/// Runs `program args` in `cwd` with a clean environment plus `env`; returns stdout. The
/// tool sees neither the controller's environment (kubeconfig, tokens) nor its data
/// directory: `cwd` and `HOME` are the render's own temporary directory.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    tool: &'static str,
    program: &Path,
    args: &[String],
    cwd: &Path,
    env: &[(String, String)],
    network: Network,
    timeout: Duration,
    max_output: u64,
) -> Result<String, RenderError> {
    let mut cmd = Command::new(program);
    cmd.args(args).current_dir(cwd).env_clear().env("HOME", cwd);
    match network {
        Network::Allowed => {
            cmd.env("PATH", std::env::var_os("PATH").unwrap_or_default());
        }
        Network::Denied => {
            cmd.env("PATH", "/nonexistent");
            for k in [
                "HTTP_PROXY",
                "HTTPS_PROXY",
                "ALL_PROXY",
                "http_proxy",
                "https_proxy",
            ] {
                cmd.env(k, NO_NETWORK_PROXY);
            }
            cmd.env("GIT_ALLOW_PROTOCOL", "none");
        }
    }
    cmd.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| RenderError::ToolFailed {
        tool,
        message: format!("cannot start {}: {e}", program.display()),
    })?;
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    // Drain stderr concurrently (keeping the first 64 KiB) so a chatty tool cannot block.
    let stderr_task = tokio::spawn(async move {
        let mut kept = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = stderr.read(&mut buf).await {
            if n == 0 {
                break;
            }
            if kept.len() < 64 * 1024 {
                kept.extend_from_slice(&buf[..n]);
            }
        }
        kept
    });
    let work = async {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = stdout
                .read(&mut buf)
                .await
                .map_err(|e| RenderError::io(program, e))?;
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
            if out.len() as u64 > max_output {
                return Err(RenderError::TooLarge(format!(
                    "{tool} printed more than {max_output} bytes"
                )));
            }
        }
        let status = child
            .wait()
            .await
            .map_err(|e| RenderError::io(program, e))?;
        Ok((out, status))
    };
    match tokio::time::timeout(timeout, work).await {
        Err(_) => Err(RenderError::Timeout {
            tool,
            seconds: timeout.as_secs(),
        }),
        Ok(Err(e)) => Err(e),
        Ok(Ok((out, status))) => {
            let err = stderr_task.await.unwrap_or_default();
            if !status.success() {
                // The cause, from stderr (or stdout when a tool reports there), with the
                // temporary directory taken out: a message that changes on every attempt
                // would rewrite the status and trigger the next attempt at once.
                let err = String::from_utf8_lossy(&err);
                let out = String::from_utf8_lossy(&out);
                let text = if err.trim().is_empty() {
                    out.into_owned()
                } else {
                    err.into_owned()
                };
                return Err(RenderError::ToolFailed {
                    tool,
                    message: stable_message(&text, cwd),
                });
            }
            String::from_utf8(out).map_err(|_| RenderError::ToolFailed {
                tool,
                message: "output is not UTF-8".into(),
            })
        }
    }
}

/// The first 20 lines of a tool's message, with paths inside the temporary directory `cwd`
/// made relative to it (the same on every attempt).
pub fn stable_message(text: &str, cwd: &Path) -> String {
    let mut text = text.to_string();
    let mut roots = vec![cwd.to_path_buf()];
    if let Ok(real) = cwd.canonicalize() {
        roots.push(real);
    }
    for root in roots {
        let root = root.display().to_string();
        text = text.replace(&format!("{root}/"), "").replace(&root, ".");
    }
    text.trim().lines().take(20).collect::<Vec<_>>().join("\n")
}

/// Replaces every value of `secrets` in a tool's error message (stderr) by `*****`, so a
/// Secret's literal never reaches a condition, an Event or the log.
pub fn redact(err: RenderError, secrets: &[String]) -> RenderError {
    match err {
        RenderError::ToolFailed { tool, message } => {
            let mut values: Vec<&String> = secrets.iter().filter(|s| s.len() >= 2).collect();
            // longest first, so a value containing another is replaced whole
            values.sort_by_key(|s| std::cmp::Reverse(s.len()));
            let message = values
                .into_iter()
                .fold(message, |m, s| m.replace(s.as_str(), "*****"));
            RenderError::ToolFailed { tool, message }
        }
        other => other,
    }
}

/// Copies the artifact into a fresh temporary directory, so tools never touch the cache.
/// A link is copied only when its real target lies inside the artifact (the source already
/// refused any other; this holds even for a tree changed on disk); a dangling link is left
/// out, so nothing created later elsewhere can appear through it.
pub fn copy_to_temp(root: &Path) -> Result<tempfile::TempDir, RenderError> {
    let tmp = tempfile::Builder::new()
        .prefix("gantry-render-")
        .tempdir()
        .map_err(|e| RenderError::io(Path::new("tmp"), e))?;
    let real_root = root.canonicalize().map_err(|e| RenderError::io(root, e))?;
    copy_tree(&real_root, &real_root, tmp.path())?;
    Ok(tmp)
}

pub(crate) fn copy_tree(root: &Path, from: &Path, to: &Path) -> Result<(), RenderError> {
    for entry in std::fs::read_dir(from).map_err(|e| RenderError::io(from, e))? {
        let entry = entry.map_err(|e| RenderError::io(from, e))?;
        let target = to.join(entry.file_name());
        let kind = entry
            .file_type()
            .map_err(|e| RenderError::io(&entry.path(), e))?;
        if kind.is_symlink() {
            let Ok(real) = entry.path().canonicalize() else {
                continue; // dangling
            };
            if !real.starts_with(root) {
                let rel = entry.path();
                return Err(RenderError::UnsafePath {
                    field: "symlink".into(),
                    path: rel.strip_prefix(root).unwrap_or(&rel).display().to_string(),
                    why: "it resolves outside the repository".into(),
                });
            }
            let link =
                std::fs::read_link(entry.path()).map_err(|e| RenderError::io(&entry.path(), e))?;
            std::os::unix::fs::symlink(link, &target).map_err(|e| RenderError::io(&target, e))?;
        } else if kind.is_dir() {
            std::fs::create_dir_all(&target).map_err(|e| RenderError::io(&target, e))?;
            copy_tree(root, &entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target).map_err(|e| RenderError::io(&target, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_do_not_name_the_temporary_directory() {
        let cwd = Path::new("/tmp/.tmpAbC123");
        let text = "Error: accumulating resources from 'missing.yaml': \
            open /tmp/.tmpAbC123/app/missing.yaml: no such file or directory\n(in /tmp/.tmpAbC123)\n";
        assert_eq!(
            stable_message(text, cwd),
            "Error: accumulating resources from 'missing.yaml': open app/missing.yaml: no such file or directory\n(in .)"
        );
    }

    #[tokio::test]
    async fn hanging_tool_is_killed_at_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let start = std::time::Instant::now();
        let err = run(
            "sleep",
            Path::new("/bin/sleep"),
            &["30".into()],
            dir.path(),
            &[],
            Network::Denied,
            Duration::from_millis(300),
            1024,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, RenderError::Timeout { .. }), "{err}");
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn without_network_the_tool_has_no_path_and_a_dead_proxy() {
        let dir = tempfile::tempdir().unwrap();
        let out = run(
            "env",
            Path::new("/usr/bin/env"),
            &[],
            dir.path(),
            &[],
            Network::Denied,
            Duration::from_secs(10),
            1 << 20,
        )
        .await
        .unwrap();
        assert!(out.contains("PATH=/nonexistent"), "{out}");
        assert!(out.contains("HTTPS_PROXY=http://127.0.0.1:9"), "{out}");
        assert!(!out.contains("KUBECONFIG"), "{out}");
    }

    #[test]
    fn redaction_replaces_secret_values() {
        let err = RenderError::ToolFailed {
            tool: "kustomize",
            message: "bad literal password=hunter2 in x".into(),
        };
        let msg = redact(err, &["hunter2".into()]).to_string();
        assert!(!msg.contains("hunter2") && msg.contains("*****"), "{msg}");
    }

    #[tokio::test]
    async fn flooding_tool_is_stopped_at_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let err = run(
            "yes",
            Path::new("/usr/bin/yes"),
            &[],
            dir.path(),
            &[],
            Network::Denied,
            Duration::from_secs(10),
            1 << 20,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, RenderError::TooLarge(_)), "{err}");
    }
}
