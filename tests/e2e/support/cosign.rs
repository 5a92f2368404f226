//! cosign key pairs made by the real `cosign generate-key-pair` (no password).

use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::process::tool;

pub struct CosignKey {
    dir: tempfile::TempDir,
}

impl CosignKey {
    pub fn generate() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(tool("cosign"))
            .arg("generate-key-pair")
            .current_dir(dir.path())
            .env("COSIGN_PASSWORD", "")
            .env("HOME", dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("run cosign");
        assert!(
            out.status.success(),
            "cosign generate-key-pair: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        CosignKey { dir }
    }

    pub fn private_key(&self) -> PathBuf {
        self.dir.path().join("cosign.key")
    }

    /// `cosign.pub`, PEM.
    pub fn public_pem(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("cosign.pub")).unwrap()
    }
}
