//! Signed commits (GitRepository `spec.verify`): a commit's signature — OpenPGP or SSH, as
//! `git commit -S` makes them and `git verify-commit` checks them — must be made by one of
//! the trusted public keys of a Secret. Pure checks on the commit object's signature and
//! signed payload (git2 extracts them); ssh-key and rpgp verify.

use std::collections::BTreeMap;

use pgp::composed::{Deserializable, DetachedSignature, SignedPublicKey};

/// The namespace git signs commits in with SSH keys.
const SSH_NAMESPACE: &str = "git";
/// Commits checked at most in `all-since-last` mode.
pub const MAX_COMMITS: usize = 1000;

/// The public keys a Secret trusts.
pub struct TrustedKeys {
    ssh: Vec<ssh_key::PublicKey>,
    pgp: Vec<SignedPublicKey>,
}

impl TrustedKeys {
    /// From the values of Secret `secret`: ASCII-armored OpenPGP public keys, and SSH
    /// public keys one per line (`ssh-ed25519 AAAA… comment`, as in `authorized_keys` or an
    /// `allowed_signers` file without its principals).
    pub fn from_secret_data(
        secret: &str,
        data: &BTreeMap<String, k8s_openapi::ByteString>,
    ) -> Result<Self, String> {
        let mut keys = TrustedKeys {
            ssh: vec![],
            pgp: vec![],
        };
        for (k, v) in data {
            let text = std::str::from_utf8(&v.0)
                .map_err(|_| format!("Secret {secret}: key {k} is not text"))?;
            if text.contains("-----BEGIN PGP PUBLIC KEY BLOCK-----") {
                let (found, _) = SignedPublicKey::from_string_many(text)
                    .map_err(|e| format!("Secret {secret}: key {k}: not an OpenPGP key: {e}"))?;
                for key in found {
                    keys.pgp.push(key.map_err(|e| {
                        format!("Secret {secret}: key {k}: not an OpenPGP key: {e}")
                    })?);
                }
                continue;
            }
            for line in text.lines().map(str::trim) {
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                // An allowed_signers line starts with its principals: skip to the key.
                let key = line
                    .find("ssh-")
                    .or_else(|| line.find("ecdsa-"))
                    .or_else(|| line.find("sk-"))
                    .map(|i| &line[i..])
                    .unwrap_or(line);
                keys.ssh
                    .push(ssh_key::PublicKey::from_openssh(key).map_err(|e| {
                        format!("Secret {secret}: key {k}: not an SSH or OpenPGP public key: {e}")
                    })?);
            }
        }
        if keys.ssh.is_empty() && keys.pgp.is_empty() {
            return Err(format!("Secret {secret} holds no public key"));
        }
        Ok(keys)
    }

    /// Who made `signature` over `payload`, if it is one of these keys'; why not otherwise.
    pub fn signer(&self, signature: &str, payload: &[u8]) -> Result<String, String> {
        if signature.contains("-----BEGIN SSH SIGNATURE-----") {
            let sig = ssh_key::SshSig::from_pem(signature)
                .map_err(|e| format!("its SSH signature is malformed: {e}"))?;
            let fingerprint = sig.public_key().fingerprint(ssh_key::HashAlg::Sha256);
            for key in &self.ssh {
                if key.verify(SSH_NAMESPACE, payload, &sig).is_ok() {
                    let comment = key.comment();
                    return Ok(match comment.is_empty() {
                        true => format!("SSH key {fingerprint}"),
                        false => format!("SSH key {fingerprint} ({comment})"),
                    });
                }
            }
            return Err(format!(
                "it is signed by SSH key {fingerprint}, which is not trusted (or the signature does not match)"
            ));
        }
        if signature.contains("-----BEGIN PGP SIGNATURE-----") {
            let (sig, _) = DetachedSignature::from_string(signature)
                .map_err(|e| format!("its OpenPGP signature is malformed: {e}"))?;
            for key in &self.pgp {
                let by_primary = sig.verify(&key.primary_key, payload).is_ok();
                let by_subkey = key
                    .public_subkeys
                    .iter()
                    .any(|s| sig.verify(&s.key, payload).is_ok());
                if by_primary || by_subkey {
                    let user = key
                        .details
                        .users
                        .first()
                        .map(|u| String::from_utf8_lossy(u.id.id()).into_owned())
                        .unwrap_or_default();
                    return Ok(format!("OpenPGP key {} ({user})", fingerprint_of(key)));
                }
            }
            let issuer = sig
                .signature
                .issuer_fingerprint()
                .first()
                .map(|f| format!("{f:X}"))
                .or_else(|| {
                    sig.signature
                        .issuer_key_id()
                        .first()
                        .map(|k| hex::encode_upper(k.as_ref()))
                })
                .unwrap_or_else(|| "an unnamed key".into());
            return Err(format!(
                "it is signed by OpenPGP key {issuer}, which is not trusted (or the signature does not match)"
            ));
        }
        Err("its signature is neither OpenPGP nor SSH".into())
    }
}

fn fingerprint_of(key: &SignedPublicKey) -> String {
    use pgp::types::KeyDetails;
    format!("{:X}", key.primary_key.fingerprint())
}

/// Checks that `commit` of `repo` is signed by one of `keys`: the signer, or why not.
pub fn check_commit(
    repo: &git2::Repository,
    commit: git2::Oid,
    keys: &TrustedKeys,
) -> Result<String, String> {
    let short = &commit.to_string()[..12];
    let (signature, payload) = match repo.extract_signature(&commit, None) {
        Ok(found) => found,
        Err(e) if e.code() == git2::ErrorCode::NotFound => {
            return Err(format!("commit {short} is not signed"));
        }
        Err(e) => return Err(format!("commit {short}: {}", e.message())),
    };
    let signature = String::from_utf8_lossy(&signature).into_owned();
    keys.signer(&signature, &payload)
        .map_err(|why| format!("commit {short}: {why}"))
}

/// The commits to check: `head` alone, or every commit since `last` (exclusive; `None`:
/// the whole history), newest first, at most [`MAX_COMMITS`].
pub fn commits_to_check(
    repo: &git2::Repository,
    head: git2::Oid,
    last: Option<git2::Oid>,
    all_since_last: bool,
) -> Result<Vec<git2::Oid>, String> {
    if !all_since_last || last == Some(head) {
        return Ok(vec![head]);
    }
    let mut walk = repo.revwalk().map_err(|e| e.message().to_string())?;
    walk.push(head).map_err(|e| e.message().to_string())?;
    if let Some(last) = last
        && repo.find_commit(last).is_ok()
    {
        // A last commit that is gone (history rewritten) hides nothing: all is checked.
        let _ = walk.hide(last);
    }
    let mut out = vec![];
    for oid in walk {
        out.push(oid.map_err(|e| e.message().to_string())?);
        if out.len() >= MAX_COMMITS {
            break;
        }
    }
    Ok(out)
}

/// An SSH key pair for tests (signing and verifying commits).
#[cfg(test)]
pub(crate) mod test_keys {
    /// A key made for these tests only (`ssh-keygen -t ed25519 -N ""`).
    pub const TEST_KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACAhPP4zni43yv1ip+nWIyzRXKyn+yYsuZqCuOqMC+XQaAAAAJAdxQeRHcUH
kQAAAAtzc2gtZWQyNTUxOQAAACAhPP4zni43yv1ip+nWIyzRXKyn+yYsuZqCuOqMC+XQaA
AAAEAgXflCHA/5WdykldKMt/eRUWKMZjE8CmJR2GBVrVrnYCE8/jOeLjfK/WKn6dYjLNFc
rKf7Jiy5moK46owL5dBoAAAAC2dhbnRyeS10ZXN0AQI=
-----END OPENSSH PRIVATE KEY-----
";
    pub const TEST_PUB: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICE8/jOeLjfK/WKn6dYjLNFcrKf7Jiy5moK46owL5dBo gantry-test";

    /// The trusted keys holding `TEST_PUB`.
    pub fn trusted() -> super::TrustedKeys {
        let mut data = super::BTreeMap::new();
        data.insert(
            "k".to_string(),
            k8s_openapi::ByteString(TEST_PUB.as_bytes().to_vec()),
        );
        super::TrustedKeys::from_secret_data("ns/keys", &data).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use test_keys::{TEST_KEY, TEST_PUB};

    #[test]
    fn a_commit_signed_by_a_trusted_key_passes_and_others_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init_bare(dir.path()).unwrap();
        let sig = git2::Signature::now("Gantry", "gantry@example.com").unwrap();
        let tree = repo
            .find_tree(repo.treebuilder(None).unwrap().write().unwrap())
            .unwrap();
        let key = ssh_key::PrivateKey::from_openssh(TEST_KEY).unwrap();
        let signed =
            crate::writeback::repo::create_commit(&repo, &sig, "signed", &tree, &[], Some(&key))
                .unwrap();
        let parent = repo.find_commit(signed).unwrap();
        let unsigned =
            crate::writeback::repo::create_commit(&repo, &sig, "unsigned", &tree, &[&parent], None)
                .unwrap();
        let mut data = BTreeMap::new();
        data.insert(
            "k".to_string(),
            k8s_openapi::ByteString(TEST_PUB.as_bytes().to_vec()),
        );
        let keys = TrustedKeys::from_secret_data("ns/keys", &data).unwrap();
        let signer = check_commit(&repo, signed, &keys).unwrap();
        assert!(
            signer.contains("gantry-test") && signer.starts_with("SSH key SHA256:"),
            "{signer}"
        );
        let e = check_commit(&repo, unsigned, &keys).unwrap_err();
        assert!(
            e.ends_with("is not signed") && e.contains(&unsigned.to_string()[..12]),
            "{e}"
        );
        // Another trusted key: the signer is named, and refused.
        let mut other = BTreeMap::new();
        other.insert(
            "k".to_string(),
            k8s_openapi::ByteString(
                b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOrwYWUgZ3tNtQZmuGAidpp5u/FqXnGJOOg79ruGH8VR"
                    .to_vec(),
            ),
        );
        let others = TrustedKeys::from_secret_data("ns/keys", &other).unwrap();
        let e = check_commit(&repo, signed, &others).unwrap_err();
        assert!(
            e.contains("signed by SSH key SHA256:") && e.contains("not trusted"),
            "{e}"
        );
        // all-since-last: both commits, newest first; HEAD alone otherwise.
        assert_eq!(
            commits_to_check(&repo, unsigned, Some(signed), true).unwrap(),
            [unsigned]
        );
        assert_eq!(
            commits_to_check(&repo, unsigned, None, true).unwrap(),
            [unsigned, signed]
        );
        assert_eq!(
            commits_to_check(&repo, unsigned, None, false).unwrap(),
            [unsigned]
        );
    }

    #[test]
    fn keys_are_read_from_ssh_lines_and_refused_when_not_keys() {
        let mut data = BTreeMap::new();
        data.insert(
            "team".to_string(),
            k8s_openapi::ByteString(
                b"# the team\nalice@example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOrwYWUgZ3tNtQZmuGAidpp5u/FqXnGJOOg79ruGH8VR alice\n".to_vec(),
            ),
        );
        let keys = TrustedKeys::from_secret_data("ns/keys", &data).unwrap();
        assert_eq!(keys.ssh.len(), 1);
        assert!(
            keys.signer("not a signature", b"x")
                .unwrap_err()
                .contains("neither")
        );
        data.insert("bad".into(), k8s_openapi::ByteString(b"hello".to_vec()));
        let e = TrustedKeys::from_secret_data("ns/keys", &data)
            .err()
            .unwrap();
        assert!(
            e.contains("key bad") && e.contains("not an SSH or OpenPGP public key"),
            "{e}"
        );
        let none = TrustedKeys::from_secret_data("ns/keys", &BTreeMap::new())
            .err()
            .unwrap();
        assert!(none.contains("no public key"));
    }
}
