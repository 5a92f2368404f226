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

/// Runs `program args` in `cwd` with a clean environment plus `env`; returns stdout.
pub async fn run(
    tool: &'static str,
    program: &Path,
    args: &[String],
    cwd: &Path,
    env: &[(String, String)],
    timeout: Duration,
    max_output: u64,
) -> Result<String, RenderError> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", cwd)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
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
                let msg = String::from_utf8_lossy(&err);
                return Err(RenderError::ToolFailed {
                    tool,
                    message: msg.trim().lines().take(20).collect::<Vec<_>>().join("\n"),
                });
            }
            String::from_utf8(out).map_err(|_| RenderError::ToolFailed {
                tool,
                message: "output is not UTF-8".into(),
            })
        }
    }
}

/// Copies the artifact into a fresh temporary directory, so tools never touch the cache.
pub fn copy_to_temp(root: &Path) -> Result<tempfile::TempDir, RenderError> {
    let tmp = tempfile::Builder::new()
        .prefix("gantry-render-")
        .tempdir()
        .map_err(|e| RenderError::io(Path::new("tmp"), e))?;
    copy_tree(root, tmp.path())?;
    Ok(tmp)
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), RenderError> {
    for entry in std::fs::read_dir(from).map_err(|e| RenderError::io(from, e))? {
        let entry = entry.map_err(|e| RenderError::io(from, e))?;
        let target = to.join(entry.file_name());
        let kind = entry
            .file_type()
            .map_err(|e| RenderError::io(&entry.path(), e))?;
        if kind.is_symlink() {
            let link =
                std::fs::read_link(entry.path()).map_err(|e| RenderError::io(&entry.path(), e))?;
            std::os::unix::fs::symlink(link, &target).map_err(|e| RenderError::io(&target, e))?;
        } else if kind.is_dir() {
            std::fs::create_dir_all(&target).map_err(|e| RenderError::io(&target, e))?;
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target).map_err(|e| RenderError::io(&target, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
            Duration::from_millis(300),
            1024,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, RenderError::Timeout { .. }), "{err}");
        assert!(start.elapsed() < Duration::from_secs(5));
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
            Duration::from_secs(10),
            1 << 20,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, RenderError::TooLarge(_)), "{err}");
    }
}
