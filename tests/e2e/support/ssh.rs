//! Git over SSH for tests: OpenSSH's sshd (extracted by tests/cluster/build.sh) on a free
//! loopback port, a client key in authorized_keys, and known_hosts lines for it.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::process::{ChildGuard, free_port, tool};

pub struct SshServer {
    pub port: u16,
    /// Private key accepted by the server (OpenSSH format).
    pub client_key: String,
    /// known_hosts line with the server's real host key.
    pub known_hosts: String,
    /// known_hosts line with another key for the same host (a "changed" host key).
    pub wrong_known_hosts: String,
    _dir: tempfile::TempDir,
    _process: ChildGuard,
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "gantry-test", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen is installed");
    assert!(status.success());
}

fn public_key(path: &Path) -> String {
    let text = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    text.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

impl SshServer {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        keygen(&d.join("hostkey"));
        keygen(&d.join("otherkey"));
        keygen(&d.join("client"));
        std::fs::copy(d.join("client.pub"), d.join("authorized_keys")).unwrap();
        // sshd's privilege separation directory.
        std::fs::create_dir_all("/run/sshd").ok();
        let port = free_port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nAuthorizedKeysFile {auth}\nPidFile {pid}\n\
             StrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nLogLevel ERROR\n",
            host = d.join("hostkey").display(),
            auth = d.join("authorized_keys").display(),
            pid = d.join("sshd.pid").display()
        );
        std::fs::write(d.join("sshd_config"), config).unwrap();
        let log = std::fs::File::create(d.join("sshd.log")).unwrap();
        let child = Command::new(tool("sshd"))
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sshd");
        let mut process = ChildGuard::new("sshd", child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            process.assert_running();
            assert!(
                Instant::now() < deadline,
                "sshd did not listen: {}",
                std::fs::read_to_string(d.join("sshd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            port,
            client_key: std::fs::read_to_string(d.join("client")).unwrap(),
            known_hosts: format!("[127.0.0.1]:{port} {}\n", public_key(&d.join("hostkey"))),
            wrong_known_hosts: format!("[127.0.0.1]:{port} {}\n", public_key(&d.join("otherkey"))),
            _dir: dir,
            _process: process,
        }
    }

    /// `ssh://root@127.0.0.1:<port>/<absolute path of a bare repository>`
    pub fn url(&self, bare: &Path) -> String {
        format!("ssh://root@127.0.0.1:{}{}", self.port, bare.display())
    }
}
