//! A Helm chart repository on 127.0.0.1: charts packaged with the real `helm package` and
//! indexed with `helm repo index`, served over HTTPS (a CA made with `openssl` for the test)
//! behind basic auth by a small Python server (`chart_repo.py`).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::process::{ChildGuard, tool};

pub struct ChartRepo {
    pub port: u16,
    pub ca_pem: String,
    dir: tempfile::TempDir,
    _server: ChildGuard,
}

pub const USER: &str = "charts";
pub const PASSWORD: &str = "repo-pass-7f3a";

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl ChartRepo {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("repo")).unwrap();
        run(Command::new("openssl").current_dir(d).args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-subj",
            "/CN=gantry-test-charts-ca",
            "-days",
            "2",
        ]));
        run(Command::new("openssl").current_dir(d).args([
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "srv.key",
            "-out",
            "srv.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]));
        std::fs::write(
            d.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        run(Command::new("openssl").current_dir(d).args([
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "srv.crt",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/support/chart_repo.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(d.join("repo"))
            .arg(d.join("srv.crt"))
            .arg(d.join("srv.key"))
            .args([USER, PASSWORD])
            .arg(d.join("requests.log"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("the server's port");
        let ca_pem = std::fs::read_to_string(d.join("ca.crt")).unwrap();
        ChartRepo {
            port,
            ca_pem,
            _server: ChildGuard::new("chart-repo", child),
            dir,
        }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The index requests the server answered, as `status path` lines.
    pub fn index_requests(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("requests.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    /// Packages chart `name` at `version` (a ConfigMap naming its version) and indexes it.
    pub fn publish(&self, name: &str, version: &str) {
        let src = self.dir.path().join(format!("src-{name}-{version}"));
        std::fs::create_dir_all(src.join("templates")).unwrap();
        std::fs::write(
            src.join("Chart.yaml"),
            format!("apiVersion: v2\nname: {name}\nversion: {version}\n"),
        )
        .unwrap();
        std::fs::write(
            src.join("templates/cm.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-chart\ndata:\n  chart: {{ .Chart.Version | quote }}\n",
        )
        .unwrap();
        let home = self.dir.path().join("helm-home");
        let helm = |args: &[&str]| {
            run(Command::new(tool("helm"))
                .args(args)
                .env("HELM_CACHE_HOME", home.join("cache"))
                .env("HELM_CONFIG_HOME", home.join("config"))
                .env("HELM_DATA_HOME", home.join("data")));
        };
        helm(&[
            "package",
            src.to_str().unwrap(),
            "-d",
            self.repo().to_str().unwrap(),
        ]);
        helm(&[
            "repo",
            "index",
            self.repo().to_str().unwrap(),
            "--url",
            &self.url(),
        ]);
    }

    /// Replaces the archive of `name`-`version` by other bytes (the index keeps its digest).
    pub fn tamper(&self, name: &str, version: &str) {
        let path = self.repo().join(format!("{name}-{version}.tgz"));
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(path, bytes).unwrap();
    }
}
