//! Registry credentials: from a `kubernetes.io/dockerconfigjson` Secret to what oci-client
//! sends. Never printed.

use std::collections::HashMap;

use base64::Engine;
use oci_client::secrets::RegistryAuth;
use sha2::{Digest, Sha256};

/// Registry credentials. Never printed.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum Credentials {
    #[default]
    Anonymous,
    Basic {
        username: String,
        password: String,
    },
    Bearer(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credentials::Anonymous => "Anonymous",
            Credentials::Basic { .. } => "Basic(***)",
            Credentials::Bearer(_) => "Bearer(***)",
        })
    }
}

impl Credentials {
    /// A digest of the credentials, to key shared clients and scans.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        match self {
            Credentials::Anonymous => h.update(b"anonymous"),
            Credentials::Basic { username, password } => {
                h.update(b"basic\0");
                h.update(username.as_bytes());
                h.update(b"\0");
                h.update(password.as_bytes());
            }
            Credentials::Bearer(t) => {
                h.update(b"bearer\0");
                h.update(t.as_bytes());
            }
        }
        hex::encode(h.finalize())
    }

    pub fn auth(&self) -> RegistryAuth {
        match self {
            Credentials::Anonymous => RegistryAuth::Anonymous,
            Credentials::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
            Credentials::Bearer(t) => RegistryAuth::Bearer(t.clone()),
        }
    }

    /// Picks the entry for `registry` from a `.dockerconfigjson` document. Keys may be a
    /// bare host (`ghcr.io`), a host with port, or a URL (`https://index.docker.io/v1/`).
    pub fn from_docker_config(json: &[u8], registry: &str) -> Result<Self, String> {
        #[derive(serde::Deserialize)]
        struct Config {
            #[serde(default)]
            auths: HashMap<String, Entry>,
        }
        #[derive(serde::Deserialize)]
        struct Entry {
            username: Option<String>,
            password: Option<String>,
            auth: Option<String>,
            identitytoken: Option<String>,
            registrytoken: Option<String>,
        }
        let config: Config = serde_json::from_slice(json)
            .map_err(|e| format!(".dockerconfigjson is not valid JSON: {e}"))?;
        let wanted = normalize_registry_key(registry);
        let Some(entry) = config
            .auths
            .iter()
            .find(|(k, _)| normalize_registry_key(k) == wanted)
            .map(|(_, v)| v)
        else {
            return Ok(Credentials::Anonymous);
        };
        if let Some(t) = entry.registrytoken.clone().filter(|t| !t.is_empty()) {
            return Ok(Credentials::Bearer(t));
        }
        if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
            return Ok(Credentials::Basic {
                username: u.clone(),
                password: p.clone(),
            });
        }
        if let Some(auth) = &entry.auth {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|_| format!("the `auth` entry for {registry} is not base64"))?;
            let text = String::from_utf8(decoded)
                .map_err(|_| format!("the `auth` entry for {registry} is not UTF-8"))?;
            let (u, p) = text
                .split_once(':')
                .ok_or_else(|| format!("the `auth` entry for {registry} is not user:password"))?;
            return Ok(Credentials::Basic {
                username: u.to_string(),
                password: p.to_string(),
            });
        }
        if let Some(t) = entry.identitytoken.clone().filter(|t| !t.is_empty()) {
            return Ok(Credentials::Bearer(t));
        }
        Err(format!(
            "the entry for {registry} has no username/password, auth or token"
        ))
    }
}

fn normalize_registry_key(key: &str) -> String {
    let k = key
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let k = k.split('/').next().unwrap_or(k).to_ascii_lowercase();
    match k.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".into()
        }
        _ => k,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_entries() {
        let b64 = base64::engine::general_purpose::STANDARD.encode("ci:s3cret");
        let json = format!(
            r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{b64}"}},"127.0.0.1:5000":{{"username":"u","password":"p"}},"ghcr.io":{{"registrytoken":"tok"}}}}}}"#
        );
        assert_eq!(
            Credentials::from_docker_config(json.as_bytes(), "docker.io").unwrap(),
            Credentials::Basic {
                username: "ci".into(),
                password: "s3cret".into()
            }
        );
        assert_eq!(
            Credentials::from_docker_config(json.as_bytes(), "127.0.0.1:5000").unwrap(),
            Credentials::Basic {
                username: "u".into(),
                password: "p".into()
            }
        );
        assert_eq!(
            Credentials::from_docker_config(json.as_bytes(), "ghcr.io").unwrap(),
            Credentials::Bearer("tok".into())
        );
        assert_eq!(
            Credentials::from_docker_config(json.as_bytes(), "quay.io").unwrap(),
            Credentials::Anonymous
        );
        assert!(Credentials::from_docker_config(b"not json", "x").is_err());
        let debug = format!(
            "{:?}",
            Credentials::from_docker_config(json.as_bytes(), "docker.io").unwrap()
        );
        assert!(!debug.contains("s3cret"));
    }

    #[test]
    fn fingerprints_separate_credentials() {
        let a = Credentials::Basic {
            username: "a".into(),
            password: "b".into(),
        };
        let b = Credentials::Basic {
            username: "a".into(),
            password: "c".into(),
        };
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint(), a.clone().fingerprint());
    }
}
