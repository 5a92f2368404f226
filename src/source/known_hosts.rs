//! Host key verification for Git over SSH against a `known_hosts` file (pure).
//! Unknown hosts and changed keys are refused; there is no trust-on-first-use.

use base64::Engine;

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The host is listed with exactly this key.
    Trusted,
    /// The host is listed, but with other keys: the key changed (or an attack).
    Changed,
    /// The host is not listed.
    Unknown,
}

fn host_matches(pattern: &str, host: &str, port: u16) -> bool {
    if port == 22 && pattern.eq_ignore_ascii_case(host) {
        return true;
    }
    pattern.eq_ignore_ascii_case(&format!("[{host}]:{port}"))
}

/// Checks the raw SSH public key blob the server presented.
pub fn verify(known_hosts: &str, host: &str, port: u16, key_blob: &[u8]) -> Verdict {
    let mut listed = false;
    for line in known_hosts.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(hosts), Some(_kind), Some(key)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if hosts.starts_with('@') {
            continue; // @revoked / @cert-authority markers are not supported: never trusted
        }
        if !hosts.split(',').any(|p| host_matches(p, host, port)) {
            continue;
        }
        listed = true;
        if base64::engine::general_purpose::STANDARD
            .decode(key)
            .is_ok_and(|k| k == key_blob)
        {
            return Verdict::Trusted;
        }
    }
    if listed {
        Verdict::Changed
    } else {
        Verdict::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
    const KEY_B: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIBxyOdTeLd9Fc7BfMzNGd2O3OlHnb0xWqkHxTJTxMu5w";

    fn blob(k: &str) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD.decode(k).unwrap()
    }

    #[test]
    fn trusted_changed_unknown() {
        let kh = format!(
            "# comment\n[127.0.0.1]:2222 ssh-ed25519 {KEY_A}\ngithub.com,140.82.121.4 ssh-ed25519 {KEY_B}\n"
        );
        assert_eq!(
            verify(&kh, "127.0.0.1", 2222, &blob(KEY_A)),
            Verdict::Trusted
        );
        assert_eq!(
            verify(&kh, "127.0.0.1", 2222, &blob(KEY_B)),
            Verdict::Changed
        );
        assert_eq!(
            verify(&kh, "127.0.0.1", 22, &blob(KEY_A)),
            Verdict::Unknown,
            "port matters"
        );
        assert_eq!(
            verify(&kh, "github.com", 22, &blob(KEY_B)),
            Verdict::Trusted
        );
        assert_eq!(
            verify(&kh, "gitlab.com", 22, &blob(KEY_B)),
            Verdict::Unknown
        );
        assert_eq!(verify("", "github.com", 22, &blob(KEY_B)), Verdict::Unknown);
    }
}
