//! SOPS: manifests encrypted in Git, decrypted while rendering by the `sops` binary (built
//! from its Go module, like helm), with age identities and OpenPGP keys from a Secret. The
//! ciphertext goes to sops on its standard input and the plaintext comes back on its
//! standard output: it is never written to a file. sops runs like the render tools: a clean
//! environment (the age identities in `SOPS_AGE_KEY`; OpenPGP keys in a keyring of its own
//! run, since sops reads them from nowhere else), no network, a timeout, an output cap.
//! Objects that came out of decryption carry the `gantry.dev/decrypted` annotation, so every
//! diff masks their values (Secrets' or not).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::RenderError;

/// Marks an object that was decrypted: its values are masked in every diff.
pub const DECRYPTED_ANNOTATION: &str = "gantry.dev/decrypted";

/// Age identities and OpenPGP keys to decrypt with, and the sops binary.
#[derive(Clone)]
pub struct Decryptor {
    /// `AGE-SECRET-KEY-1…` lines.
    age_keys: secrecy::SecretString,
    /// OpenPGP secret keys, as a binary keyring (`secring.gpg`), when the Secret has any.
    pgp_keyring: Option<std::sync::Arc<secrecy::SecretSlice<u8>>>,
    program: Option<PathBuf>,
    timeout: Duration,
}

impl std::fmt::Debug for Decryptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Decryptor { keys: *** }")
    }
}

/// The document formats sops reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
}

impl Format {
    pub fn of(name: &str) -> Format {
        match name.rsplit('.').next() {
            Some("json") => Format::Json,
            _ => Format::Yaml,
        }
    }

    fn word(self) -> &'static str {
        match self {
            Format::Yaml => "yaml",
            Format::Json => "json",
        }
    }
}

/// Whether `text` is a SOPS document: a top-level `sops` key holding its `mac`.
pub fn is_encrypted(text: &str) -> bool {
    let yaml = text
        .lines()
        .any(|l| l == "sops:" || l.starts_with("sops: "));
    let json = text.contains("\"sops\"") && text.contains("\"mac\"");
    (yaml || json) && text.contains("mac")
}

impl Decryptor {
    /// From the data of a Secret, as Flux reads it: every key ending in `.agekey` holds age
    /// identities, every key ending in `.asc` an armored OpenPGP secret key (without a
    /// passphrase, as `gpg --armor --export-secret-keys` writes it).
    pub fn from_secret_data(
        secret: &str,
        data: &std::collections::BTreeMap<String, k8s_openapi::ByteString>,
        timeout: Duration,
    ) -> Result<Self, String> {
        let mut keys = String::new();
        let mut keyring: Vec<u8> = Vec::new();
        for (k, v) in data {
            if k.ends_with(".agekey") {
                let text = std::str::from_utf8(&v.0)
                    .map_err(|_| format!("Secret {secret}: key {k} is not text"))?;
                keys.push_str(text.trim());
                keys.push('\n');
            } else if k.ends_with(".asc") {
                keyring.extend(openpgp_secret_key(secret, k, &v.0)?);
            }
        }
        if !keys.contains("AGE-SECRET-KEY-") && keyring.is_empty() {
            return Err(format!(
                "Secret {secret} holds no decryption key (a key ending in .agekey with AGE-SECRET-KEY-1…, or one ending in .asc with an OpenPGP secret key)"
            ));
        }
        Ok(Self {
            age_keys: keys.into(),
            pgp_keyring: (!keyring.is_empty())
                .then(|| std::sync::Arc::new(secrecy::SecretSlice::from(keyring))),
            program: super::tool::find("GANTRY_SOPS", &["sops"]),
            timeout,
        })
    }

    /// The plaintext of the SOPS document `text` (from `source`, named in errors).
    pub async fn decrypt(
        &self,
        source: &str,
        text: &str,
        format: Format,
    ) -> Result<String, RenderError> {
        use secrecy::ExposeSecret;
        let fail = |message: String| RenderError::Decryption {
            source_name: source.to_string(),
            message,
        };
        let program = self
            .program
            .as_ref()
            .ok_or_else(|| fail("the sops binary is not installed (GANTRY_SOPS or PATH)".into()))?;
        // An empty working directory of its own (sops writes nothing to decrypt).
        let scratch = tempfile::tempdir().map_err(|e| fail(format!("a scratch directory: {e}")))?;
        let scratch = scratch.path();
        let gnupg_home = scratch.join("gnupg");
        if let Some(keyring) = &self.pgp_keyring {
            write_keyring(&gnupg_home, keyring.expose_secret())
                .map_err(|e| fail(format!("the OpenPGP keyring: {e}")))?;
        }
        let mut child = Command::new(program)
            .args([
                "--decrypt",
                "--input-type",
                format.word(),
                "--output-type",
                format.word(),
                "/dev/stdin",
            ])
            .current_dir(scratch)
            .env_clear()
            .env("HOME", scratch)
            .env("PATH", "/nonexistent")
            .env("SOPS_AGE_KEY", self.age_keys.expose_secret())
            .env("GNUPGHOME", &gnupg_home)
            .env("HTTPS_PROXY", "http://127.0.0.1:9")
            .env("HTTP_PROXY", "http://127.0.0.1:9")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| fail(format!("cannot run sops: {e}")))?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        let mut stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let input = text.to_string();
        let work = async move {
            let write = async move {
                let _ = stdin.write_all(input.as_bytes()).await;
                drop(stdin);
            };
            let mut out = Vec::new();
            let mut err = Vec::new();
            let mut out_capped = (&mut stdout).take(MAX_OUTPUT + 1);
            let mut err_capped = (&mut stderr).take(64 * 1024);
            let read_out = out_capped.read_to_end(&mut out);
            let read_err = err_capped.read_to_end(&mut err);
            let (_, o, e) = tokio::join!(write, read_out, read_err);
            o.and(e).map(|_| (out, err))
        };
        let (out, err) = match tokio::time::timeout(self.timeout, work).await {
            Ok(Ok(read)) => read,
            Ok(Err(e)) => return Err(fail(format!("sops: {e}"))),
            Err(_) => {
                let _ = child.kill().await;
                return Err(fail(format!("sops took longer than {:?}", self.timeout)));
            }
        };
        let status = child.wait().await.map_err(|e| fail(format!("sops: {e}")))?;
        if out.len() as u64 > MAX_OUTPUT {
            return Err(fail(format!("the plaintext exceeds {MAX_OUTPUT} bytes")));
        }
        if !status.success() {
            return Err(fail(why(&String::from_utf8_lossy(&err))));
        }
        String::from_utf8(out).map_err(|_| fail("the plaintext is not UTF-8".into()))
    }
}

/// The binary form of the armored OpenPGP secret key `armored` (Secret `secret`, key `k`),
/// for sops's keyring. A key protected by a passphrase is refused: nobody could type it.
fn openpgp_secret_key(secret: &str, k: &str, armored: &[u8]) -> Result<Vec<u8>, String> {
    use pgp::composed::{Deserializable, SignedSecretKey};
    use pgp::ser::Serialize;
    let (key, _) = SignedSecretKey::from_armor_single(armored).map_err(|_| {
        format!(
            "Secret {secret}: key {k} is not an armored OpenPGP secret key (gpg --armor --export-secret-keys)"
        )
    })?;
    let protected = key.primary_key.secret_params().is_encrypted()
        || key
            .secret_subkeys
            .iter()
            .any(|s| s.key.secret_params().is_encrypted());
    if protected {
        return Err(format!(
            "Secret {secret}: the OpenPGP key in {k} is protected by a passphrase; give it without one"
        ));
    }
    key.to_bytes()
        .map_err(|e| format!("Secret {secret}: key {k}: {e}"))
}

/// Writes `keyring` as `secring.gpg` in a new directory `home` that only this process may
/// read (removed with the scratch directory when the run ends).
fn write_keyring(home: &std::path::Path, keyring: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new().mode(0o700).create(home)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(home.join("secring.gpg"))?;
    file.write_all(keyring)
}

/// The most a decrypted document may hold.
const MAX_OUTPUT: u64 = 8 * 1024 * 1024;

/// sops's complaint in one line (it never holds the plaintext: sops failed before any).
fn why(stderr: &str) -> String {
    let first = stderr
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("sops failed");
    let mut line: String = first.chars().take(300).collect();
    if stderr.contains("did not match any of the recipients")
        || stderr.contains("no identity matched")
        || stderr.contains("no master key was able to decrypt")
    {
        line.push_str(" (none of the Secret's keys can decrypt it)");
    } else if stderr.contains("MAC mismatch") {
        line.push_str(" (the file was changed after it was encrypted)");
    }
    format!("cannot decrypt: {line}")
}

/// Marks each object decrypted (its values masked in diffs).
pub fn mark_decrypted(objects: &mut [Value]) {
    for o in objects {
        if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
            let annotations = m
                .entry("annotations")
                .or_insert_with(|| Value::Object(Default::default()));
            if let Some(a) = annotations.as_object_mut() {
                a.insert(DECRYPTED_ANNOTATION.into(), Value::String("sops".into()));
            }
        }
    }
}

/// Where a rendered object still carries SOPS ciphertext in its data: the key of a
/// `data`/`stringData` entry holding `ENC[…]` values or a dotenv file's `sops_mac` (what a
/// kustomize `secretGenerator` makes of an encrypted `.env` or other file). Such files are
/// not decrypted (kustomize reads them from disk, where plaintext never goes), so the set
/// is refused rather than applied with ciphertext.
pub fn ciphertext_in(object: &Value) -> Option<String> {
    use base64::Engine;
    let encrypted = |text: &str| text.contains("ENC[AES256_GCM,");
    for field in ["data", "stringData", "binaryData"] {
        let Some(entries) = object.get(field).and_then(Value::as_object) else {
            continue;
        };
        for (key, value) in entries {
            let Some(text) = value.as_str() else { continue };
            let decoded = match field {
                "stringData" => Some(text.to_string()),
                _ => base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .ok()
                    .map(|b| String::from_utf8_lossy(&b).into_owned()),
            };
            let shown = decoded.as_deref().unwrap_or(text);
            if key == "sops_mac" || encrypted(shown) || encrypted(text) {
                return Some(key.clone());
            }
        }
    }
    None
}

/// Splits a multi-document YAML stream (kustomize's output) at its `---` lines.
pub fn documents(text: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    for line in text.lines() {
        if line == "---" {
            docs.push(String::new());
        } else {
            let d = docs.last_mut().expect("one document");
            d.push_str(line);
            d.push('\n');
        }
    }
    docs.into_iter().filter(|d| !d.trim().is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sops_documents_are_recognised() {
        let yaml = "apiVersion: v1\nkind: Secret\ndata:\n  a: ENC[AES256_GCM,data:x]\nsops:\n  mac: ENC[x]\n  age: []\n";
        assert!(is_encrypted(yaml));
        assert!(!is_encrypted(
            "apiVersion: v1\nkind: ConfigMap\ndata:\n  sops: no\n"
        ));
        assert!(is_encrypted(
            r#"{"kind": "Secret", "sops": {"mac": "ENC[x]"}}"#
        ));
        assert_eq!(Format::of("deploy/s.enc.json"), Format::Json);
        assert_eq!(Format::of("deploy/s.yaml"), Format::Yaml);
    }

    #[test]
    fn age_and_openpgp_keys_are_taken_and_never_printed() {
        let mut data = std::collections::BTreeMap::new();
        data.insert(
            "a.agekey".to_string(),
            k8s_openapi::ByteString(b"AGE-SECRET-KEY-1ABC\n".to_vec()),
        );
        let d = Decryptor::from_secret_data("team/sops", &data, Duration::from_secs(5)).unwrap();
        assert!(!format!("{d:?}").contains("AGE-SECRET"));
        data.insert(
            "b.asc".to_string(),
            k8s_openapi::ByteString(b"-----BEGIN PGP".to_vec()),
        );
        let e =
            Decryptor::from_secret_data("team/sops", &data, Duration::from_secs(5)).unwrap_err();
        assert!(
            e.contains("not an armored OpenPGP secret key") && e.contains("b.asc"),
            "{e}"
        );
        let none =
            Decryptor::from_secret_data("team/sops", &Default::default(), Duration::from_secs(5))
                .unwrap_err();
        assert!(none.contains("no decryption key"), "{none}");
    }

    #[test]
    fn ciphertext_left_in_generated_objects_is_found() {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        // A secretGenerator's Secret of an encrypted dotenv file.
        let dotenv = serde_json::json!({"kind": "Secret", "data": {
            "DB_PASSWORD": b64("ENC[AES256_GCM,data:abc,iv:x,tag:y,type:str]"),
            "sops_mac": b64("ENC[AES256_GCM,data:m]")}});
        assert!(ciphertext_in(&dotenv).is_some());
        // A ConfigMap of an encrypted YAML file given as `files:`.
        let file = serde_json::json!({"kind": "ConfigMap", "data": {
            "app.yaml": "password: ENC[AES256_GCM,data:abc,iv:x,tag:y,type:str]\nsops:\n  mac: x\n"}});
        assert_eq!(ciphertext_in(&file).as_deref(), Some("app.yaml"));
        let plain = serde_json::json!({"kind": "Secret", "data": {"a": b64("hunter2")}});
        assert_eq!(ciphertext_in(&plain), None);
    }

    #[test]
    fn streams_split_at_document_lines_and_objects_are_marked() {
        let docs = documents("a: 1\n---\nb: 2\nsops:\n  mac: x\n---\n");
        assert_eq!(docs, ["a: 1\n", "b: 2\nsops:\n  mac: x\n"]);
        let mut objects = vec![serde_json::json!({"metadata": {"name": "x"}})];
        mark_decrypted(&mut objects);
        assert_eq!(
            objects[0]["metadata"]["annotations"][DECRYPTED_ANNOTATION],
            "sops"
        );
        // As sops 3.13 says it.
        let refused = why(
            "Failed to get the data key required to decrypt the SOPS file.\n\nGroup 0: FAILED\n  \
             age1x: FAILED\n    - | failed to create reader for decrypting sops data key with\n      \
             | age: identity did not match any of the recipients: incorrect\n",
        );
        assert_eq!(
            refused,
            "cannot decrypt: Failed to get the data key required to decrypt the SOPS file. \
             (none of the Secret's keys can decrypt it)"
        );
    }
}
