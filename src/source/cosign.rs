//! cosign signatures of images and OCI charts, checked against the public keys of a
//! Secret: the signature scheme `cosign sign --key` writes to a registry (a tag
//! `sha256-<hex>.sig` beside the signed manifest whose layers are "simple signing"
//! payloads, each signed in its `dev.cosignproject.cosign/signature` annotation).
//!
//! A signature counts when its payload is signed by one of the keys (ECDSA P-256 over
//! SHA-256, the keys `cosign generate-key-pair` makes) and names the very manifest digest
//! being checked (a signature of another image copied beside it does not count).
//! Keyless signatures (Fulcio certificates and Rekor entries) are not checked: they need
//! Sigstore's public trust root online.
//!
//! The checks of one layer are pure (`check_layer`); `verify` reads the registry.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use k8s_openapi::ByteString;
use oci_client::Client;
use oci_client::manifest::OciManifest;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;

use super::registry::{Credentials, ImageName, RegistryError, classify};

/// The media type of a simple-signing payload layer.
const PAYLOAD_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The annotation holding a layer's base64 signature.
const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The payload's `critical.type`.
const PAYLOAD_KIND: &str = "cosign container image signature";
/// Layers of one signature manifest that are looked at (a registry could list thousands).
const MAX_LAYERS: usize = 16;
/// The largest payload read (cosign's are a few hundred bytes).
const MAX_PAYLOAD: i64 = 64 << 10;

/// The public keys a Secret trusts: each entry named `*.pub` is a PEM public key.
#[derive(Clone)]
pub struct TrustedKeys {
    keys: Vec<(String, VerifyingKey)>,
}

impl std::fmt::Debug for TrustedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.keys.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("TrustedKeys").field("keys", &names).finish()
    }
}

impl TrustedKeys {
    /// The keys of Secret `secret` (its data): every `*.pub` entry, which must be an ECDSA
    /// P-256 public key in PEM (`cosign generate-key-pair`'s `cosign.pub`).
    pub fn from_secret(secret: &str, data: &BTreeMap<String, ByteString>) -> Result<Self, String> {
        let mut keys = vec![];
        for (name, value) in data.iter().filter(|(k, _)| k.ends_with(".pub")) {
            let pem = std::str::from_utf8(&value.0)
                .map_err(|_| format!("Secret {secret}: {name} is not a PEM public key"))?;
            let key = VerifyingKey::from_public_key_pem(pem.trim()).map_err(|_| {
                format!(
                    "Secret {secret}: {name} is not an ECDSA P-256 public key in PEM (the kind `cosign generate-key-pair` makes)"
                )
            })?;
            keys.push((name.clone(), key));
        }
        if keys.is_empty() {
            return Err(format!(
                "Secret {secret} holds no public key: put each one in an entry named *.pub"
            ));
        }
        Ok(TrustedKeys { keys })
    }

    fn names(&self) -> String {
        self.keys
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Why a manifest is not taken as signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsigned {
    #[error("no cosign signature")]
    NoSignature,
    #[error("{0}")]
    Invalid(String),
}

/// What `verify` found: a valid signature, none (with why), or a registry that did not
/// answer (which says nothing about the signature).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Unsigned(#[from] Unsigned),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// The `sha256-<hex>.sig` tag holding the signatures of `digest`.
pub fn signature_tag(digest: &str) -> Result<String, Unsigned> {
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| Unsigned::Invalid(format!("{digest} is not a sha256 digest")))?;
    Ok(format!("sha256-{hex}.sig"))
}

/// Whether one signature layer (its payload and base64 signature) is a valid signature of
/// `digest` by one of `keys`; the name of the key when it is.
pub fn check_layer(
    payload: &[u8],
    signature_b64: &str,
    digest: &str,
    keys: &TrustedKeys,
) -> Result<String, Unsigned> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(signature_b64.trim())
        .map_err(|_| Unsigned::Invalid("a signature is not base64".into()))?;
    let signature = Signature::from_der(&raw)
        .or_else(|_| Signature::from_slice(&raw))
        .map_err(|_| Unsigned::Invalid("a signature is not an ECDSA signature".into()))?;
    let Some((key, _)) = keys
        .keys
        .iter()
        .find(|(_, k)| k.verify(payload, &signature).is_ok())
    else {
        return Err(Unsigned::Invalid(format!(
            "signed, but by none of the trusted keys ({})",
            keys.names()
        )));
    };
    let claims: serde_json::Value = serde_json::from_slice(payload)
        .map_err(|_| Unsigned::Invalid("a signed payload is not JSON".into()))?;
    let critical = &claims["critical"];
    if critical["type"] != PAYLOAD_KIND {
        return Err(Unsigned::Invalid(
            "a signed payload is not a cosign image signature".into(),
        ));
    }
    match critical["image"]["docker-manifest-digest"].as_str() {
        Some(d) if d == digest => Ok(key.clone()),
        Some(other) => Err(Unsigned::Invalid(format!(
            "the signature by {key} is of another manifest ({other})"
        ))),
        None => Err(Unsigned::Invalid(
            "a signed payload names no manifest digest".into(),
        )),
    }
}

/// Checks the cosign signatures of manifest `digest` of `image` against `keys`: the name
/// of the key of the first valid one. Transient registry failures are `Registry`; a
/// missing or invalid signature is `Unsigned`.
pub async fn verify(
    client: &Client,
    image: &ImageName,
    digest: &str,
    creds: &Credentials,
    keys: &TrustedKeys,
    timeout: Duration,
) -> Result<String, VerifyError> {
    let tag = signature_tag(digest)?;
    let reference = image.reference(&tag);
    let auth = creds.auth();
    let what = format!("{}:{tag}", image.repository);
    let work = async {
        let manifest = match client.pull_manifest(&reference, &auth).await {
            Ok((OciManifest::Image(m), _)) => m,
            Ok((OciManifest::ImageIndex(_), _)) => {
                return Err(
                    Unsigned::Invalid(format!("{tag} is an index, not a signature")).into(),
                );
            }
            Err(e) => {
                return Err(match classify(image, &what, e) {
                    RegistryError::NotFound { .. } => Unsigned::NoSignature.into(),
                    other => other.into(),
                });
            }
        };
        let mut last = Unsigned::NoSignature;
        for layer in manifest
            .layers
            .iter()
            .filter(|l| l.media_type == PAYLOAD_TYPE)
            .take(MAX_LAYERS)
        {
            let Some(signature) = layer
                .annotations
                .as_ref()
                .and_then(|a| a.get(SIGNATURE_ANNOTATION))
            else {
                continue;
            };
            if !(0..=MAX_PAYLOAD).contains(&layer.size) {
                last = Unsigned::Invalid(format!("a signed payload is over {MAX_PAYLOAD} bytes"));
                continue;
            }
            let mut payload = Vec::with_capacity(layer.size as usize);
            // The client checks the payload against the layer's digest.
            client
                .pull_blob(&reference, layer, &mut payload)
                .await
                .map_err(|e| classify(image, &what, e))?;
            if payload.len() as i64 > MAX_PAYLOAD {
                last = Unsigned::Invalid(format!("a signed payload is over {MAX_PAYLOAD} bytes"));
                continue;
            }
            match check_layer(&payload, signature, digest, keys) {
                Ok(key) => return Ok(key),
                Err(why) => last = why,
            }
        }
        Err(last.into())
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| RegistryError::Timeout {
            registry: image.registry.clone(),
            timeout,
        })?
}

#[cfg(test)]
pub(crate) mod test_keys {
    //! Keys and signatures made here, the way cosign makes them (ECDSA P-256, DER
    //! signatures of the payload's SHA-256).
    use super::*;
    use p256::ecdsa::SigningKey;
    use p256::ecdsa::signature::Signer;
    use p256::pkcs8::{EncodePublicKey, LineEnding};

    pub fn key(seed: u8) -> SigningKey {
        SigningKey::from_slice(&[seed.max(1); 32]).unwrap()
    }

    pub fn public_pem(key: &SigningKey) -> String {
        key.verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap()
    }

    pub fn trusted(keys: &[(&str, &SigningKey)]) -> TrustedKeys {
        let data = keys
            .iter()
            .map(|(n, k)| (n.to_string(), ByteString(public_pem(k).into_bytes())))
            .collect();
        TrustedKeys::from_secret("keys", &data).unwrap()
    }

    pub fn payload(digest: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "critical": {
                "identity": {"docker-reference": "127.0.0.1:5000/team/web"},
                "image": {"docker-manifest-digest": digest},
                "type": PAYLOAD_KIND
            },
            "optional": null
        }))
        .unwrap()
    }

    pub fn sign(key: &SigningKey, payload: &[u8]) -> String {
        let signature: Signature = key.sign(payload);
        base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::test_keys::*;
    use super::*;

    const DIGEST: &str = "sha256:0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

    #[test]
    fn a_payload_signed_by_a_trusted_key_for_this_digest_is_valid() {
        let (ours, theirs) = (key(1), key(2));
        let keys = trusted(&[("team.pub", &ours), ("ci.pub", &theirs)]);
        let payload = payload(DIGEST);
        assert_eq!(
            check_layer(&payload, &sign(&theirs, &payload), DIGEST, &keys).unwrap(),
            "ci.pub"
        );
    }

    #[test]
    fn another_key_another_digest_or_a_changed_payload_is_refused() {
        let (ours, stranger) = (key(1), key(3));
        let keys = trusted(&[("team.pub", &ours)]);
        let payload = payload(DIGEST);
        let by_stranger = check_layer(&payload, &sign(&stranger, &payload), DIGEST, &keys);
        assert!(
            matches!(&by_stranger, Err(Unsigned::Invalid(m)) if m.contains("none of the trusted keys (team.pub)")),
            "{by_stranger:?}"
        );
        // A valid signature of another image, copied beside this one.
        let other = payload.clone();
        let elsewhere = DIGEST.replace("0f1e", "aaaa");
        let copied = check_layer(&other, &sign(&ours, &other), &elsewhere, &keys);
        assert!(
            matches!(&copied, Err(Unsigned::Invalid(m)) if m.contains("of another manifest")),
            "{copied:?}"
        );
        // One byte of the payload changed after signing.
        let signature = sign(&ours, &payload);
        let mut changed = payload.clone();
        let last = changed.len() - 2;
        changed[last] = b' ';
        assert!(check_layer(&changed, &signature, DIGEST, &keys).is_err());
        assert!(check_layer(&payload, "not base64!", DIGEST, &keys).is_err());
    }

    #[test]
    fn a_signed_payload_that_is_not_an_image_signature_is_refused() {
        let k = key(1);
        let keys = trusted(&[("k.pub", &k)]);
        let payload = serde_json::to_vec(&serde_json::json!({
            "critical": {"image": {"docker-manifest-digest": DIGEST}, "type": "something else"}
        }))
        .unwrap();
        assert!(check_layer(&payload, &sign(&k, &payload), DIGEST, &keys).is_err());
    }

    #[test]
    fn secrets_without_keys_or_with_other_keys_are_refused_by_name() {
        let empty = TrustedKeys::from_secret("keys", &BTreeMap::new()).unwrap_err();
        assert!(empty.contains("no public key"), "{empty}");
        let data = BTreeMap::from([(
            "rsa.pub".to_string(),
            ByteString(b"-----BEGIN PUBLIC KEY-----\nMFww\n-----END PUBLIC KEY-----\n".to_vec()),
        )]);
        let bad = TrustedKeys::from_secret("keys", &data).unwrap_err();
        assert!(bad.contains("rsa.pub") && bad.contains("P-256"), "{bad}");
    }

    #[test]
    fn the_signature_tag_is_derived_from_the_digest() {
        assert_eq!(
            signature_tag(DIGEST).unwrap(),
            format!("sha256-{}.sig", &DIGEST[7..])
        );
        assert!(signature_tag("sha256:../../x").is_err());
        assert!(signature_tag("sha512:00").is_err());
    }
}
