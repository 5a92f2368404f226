//! Child processes that are stopped (by their own pid) when the guard is dropped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

/// A child process killed and reaped on drop.
pub struct ChildGuard {
    pub name: String,
    pub child: Child,
}

impl ChildGuard {
    pub fn new(name: impl Into<String>, child: Child) -> Self {
        Self {
            name: name.into(),
            child,
        }
    }

    /// Sends SIGTERM (a graceful stop) and waits for the process to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {pid}");
        self.child.wait().expect("wait for the process")
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Fails the test if the process has already exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited early: {status}", self.name);
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free TCP port on 127.0.0.1, never one this process handed out before: the kernel may
/// give a closed port again at once, and two servers of a test started on the same one
/// would fail to bind.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("no free port on 127.0.0.1");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// The directory of the harness's binaries (kubectl, helm, registry, crane, ...).
pub fn tool_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("GANTRY_TEST_BIN") {
        return PathBuf::from(dir);
    }
    let fallback = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/testcluster/bin");
    if fallback.join("kubectl").exists() {
        return fallback;
    }
    panic!(
        "the test tools are not built: run `make cluster-up` (or `make test`), \
         which builds them with tests/cluster/build.sh"
    );
}

/// Path of one harness binary.
pub fn tool(name: &str) -> PathBuf {
    let path = tool_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing; rebuild with tests/cluster/build.sh",
        path.display()
    );
    path
}

/// Runs the real `helm` against the test cluster, with its caches in a temporary directory;
/// fails the test when it fails; returns stdout.
pub fn helm(args: &[&str]) -> String {
    let home = std::env::temp_dir().join("gantry-helm");
    let out = std::process::Command::new(tool("helm"))
        .args(args)
        .env("KUBECONFIG", super::cluster::kubeconfig_path())
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .expect("run helm");
    assert!(
        out.status.success(),
        "helm {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `command` with `input` on its standard input; its status and output.
pub fn output_with_stdin(command: &mut Command, input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}
