//! A CNCF distribution registry on a free loopback port, with or without basic auth, and
//! image pushes with `crane`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::process::{ChildGuard, free_port, tool};

pub struct Registry {
    pub port: u16,
    pub credentials: Option<(String, String)>,
    dir: tempfile::TempDir,
    process: Option<ChildGuard>,
}

impl Registry {
    pub fn start() -> Self {
        Self::start_inner(None, "")
    }

    pub fn start_with_basic_auth(user: &str, password: &str) -> Self {
        Self::start_inner(Some((user.to_string(), password.to_string())), "")
    }

    /// A registry that sends CNCF distribution notifications to `url` with a bearer token.
    pub fn start_with_notifications(url: &str, token: &str) -> Self {
        let notifications = format!(
            "notifications:\n  endpoints:\n    - name: gantry\n      url: {url}\n      \
             headers:\n        Authorization: [\"Bearer {token}\"]\n      \
             timeout: 2s\n      threshold: 3\n      backoff: 1s\n"
        );
        Self::start_inner(None, &notifications)
    }

    fn start_inner(credentials: Option<(String, String)>, extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut config = format!(
            "version: 0.1\n\
             log:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n",
            root = dir.path().join("data").display()
        );
        if let Some((user, password)) = &credentials {
            let hash = bcrypt::hash(password, 4).unwrap();
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{user}:{hash}\n")).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: gantry-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        config.push_str(extra);
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let mut registry = Self {
            port,
            credentials,
            dir,
            process: None,
        };
        registry.restart();
        if let Some((user, password)) = &registry.credentials {
            registry.crane(&[
                "auth",
                "login",
                &registry.host(),
                "-u",
                user,
                "-p",
                password,
            ]);
        }
        registry
    }

    /// Stops the registry process (the stored images stay).
    pub fn stop(&mut self) {
        self.process = None;
    }

    /// Starts the registry (again) on the same port with the same storage.
    pub fn restart(&mut self) {
        let config_path = self.dir.path().join("config.yml");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("registry.log"))
            .unwrap();
        let child = Command::new(tool("registry"))
            .arg("serve")
            .arg(&config_path)
            .env("OTEL_TRACES_EXPORTER", "none")
            .env("OTEL_SDK_DISABLED", "true")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start registry");
        let mut process = ChildGuard::new("registry", child);
        let port = self.port;
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            process.assert_running();
            assert!(
                Instant::now() < deadline,
                "registry did not listen on 127.0.0.1:{port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.process = Some(process);
    }

    /// A `.dockerconfigjson` document with this registry's credentials.
    pub fn docker_config_json(&self) -> String {
        let (user, password) = self.credentials.clone().expect("registry has credentials");
        serde_json::json!({"auths": {self.host(): {"username": user, "password": password}}})
            .to_string()
    }

    /// `127.0.0.1:<port>`
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.host())
    }

    /// Runs crane with a Docker config private to this registry; returns stdout. A failed
    /// run is tried once more after a second (a loaded machine once failed a push to a
    /// registry that had just started); both errors are shown if that fails too.
    pub fn crane(&self, args: &[&str]) -> String {
        let attempt = || {
            Command::new(tool("crane"))
                .args(args)
                .arg("--insecure")
                .env("DOCKER_CONFIG", self.dir.path().join("docker"))
                .stdin(Stdio::null())
                .output()
                .expect("run crane")
        };
        let mut out = attempt();
        if !out.status.success() {
            let first = String::from_utf8_lossy(&out.stderr).into_owned();
            eprintln!("crane {args:?} failed, trying again: {first}");
            std::thread::sleep(Duration::from_secs(1));
            out = attempt();
            assert!(
                out.status.success(),
                "crane {args:?} failed twice: {first} / {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Signs `reference` (`repo@sha256:…` in this registry) with the real `cosign sign`
    /// and the private key `key` (no transparency log: the tests are offline).
    pub fn cosign_sign(&self, key: &super::cosign::CosignKey, reference: &str) {
        let reference = format!("{}/{reference}", self.host());
        let out = Command::new(tool("cosign"))
            .args([
                "sign",
                "--yes",
                "--tlog-upload=false",
                "--allow-insecure-registry",
            ])
            .arg("--key")
            .arg(key.private_key())
            .arg(&reference)
            .env("DOCKER_CONFIG", self.dir.path().join("docker"))
            .env("COSIGN_PASSWORD", "")
            .env("HOME", self.dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("run cosign");
        assert!(
            out.status.success(),
            "cosign sign {reference}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Pushes a small single-layer image as `<repo>:<tag>` and returns its digest.
    pub fn push_image(&self, repo: &str, tag: &str) -> String {
        let work = tempfile::tempdir().unwrap();
        let content = work.path().join("content");
        std::fs::create_dir_all(&content).unwrap();
        std::fs::write(content.join("version"), format!("{repo}:{tag}\n")).unwrap();
        let layer = work.path().join("layer.tar");
        tar(&content, &layer);
        let reference = format!("{}/{repo}:{tag}", self.host());
        self.crane(&["append", "-f", layer.to_str().unwrap(), "-t", &reference]);
        self.crane(&["digest", &reference])
    }
}

fn tar(dir: &Path, out: &Path) {
    let status = Command::new("tar")
        .arg("-cf")
        .arg(out)
        .arg("-C")
        .arg(dir)
        .arg(".")
        .status()
        .expect("tar is installed");
    assert!(status.success());
}
