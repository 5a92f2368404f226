//! Which repository URLs and credential combinations are acceptable (pure).

/// Why a URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlRefused {
    #[error(
        "unsupported URL scheme in {0:?}: use https://, http:// (loopback only), ssh:// or file://"
    )]
    Scheme(String),
    #[error(
        "credentials in the URL are refused (host {0}); put them in the Secret named by spec.secretRef"
    )]
    CredentialsInUrl(String),
    #[error(
        "basic auth over plain http:// is refused (host {0}): the password would travel unencrypted; use https://"
    )]
    BasicAuthOverHttp(String),
    #[error("plain http:// is only allowed for loopback hosts, not {0}; use https://")]
    PlainHttp(String),
    #[error("malformed URL {0:?}")]
    Malformed(String),
}

/// The parts of a URL that matter for the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedUrl {
    pub scheme: String,
    pub userinfo: Option<String>,
    pub host: String,
}

pub fn parse(url: &str) -> Result<ParsedUrl, UrlRefused> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| UrlRefused::Malformed(redact(url)))?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme == "file" {
        return Ok(ParsedUrl {
            scheme,
            userinfo: None,
            host: String::new(),
        });
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u.to_string()), h),
        None => (None, authority),
    };
    let host = if let Some(stripped) = hostport.strip_prefix('[') {
        stripped.split(']').next().unwrap_or_default().to_string()
    } else {
        hostport.split(':').next().unwrap_or_default().to_string()
    };
    if host.is_empty() {
        return Err(UrlRefused::Malformed(redact(url)));
    }
    Ok(ParsedUrl {
        scheme,
        userinfo,
        host: host.to_ascii_lowercase(),
    })
}

pub fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host == "::1"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Checks a repository URL against the rules of TESTING.md row 6.
/// `basic_auth` says whether a username/password from a Secret will be sent.
pub fn check(url: &str, basic_auth: bool) -> Result<ParsedUrl, UrlRefused> {
    let parsed = parse(url)?;
    let loopback = is_loopback(&parsed.host);
    match parsed.scheme.as_str() {
        "file" => {}
        "https" | "ssh" => {
            // ssh://git@host/... carries a user name, which is normal; a password is not.
            let has_secret = parsed
                .userinfo
                .as_deref()
                .is_some_and(|u| parsed.scheme == "https" || u.contains(':'));
            if has_secret && !loopback {
                return Err(UrlRefused::CredentialsInUrl(parsed.host));
            }
        }
        "http" => {
            if !loopback {
                return Err(UrlRefused::PlainHttp(parsed.host));
            }
            // Loopback (tests, port-forwards) may use credentials over plain HTTP.
            let _ = basic_auth;
        }
        _ => return Err(UrlRefused::Scheme(redact(url))),
    }
    Ok(parsed)
}

/// Removes `user:password@` from a URL so it can be logged.
pub fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            match rest[..end].rfind('@') {
                Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_usual_urls() {
        for url in [
            "https://github.com/org/repo.git",
            "ssh://git@github.com/org/repo.git",
            "file:///srv/git/repo.git",
            "http://127.0.0.1:8080/repo.git",
            "http://localhost/repo.git",
        ] {
            check(url, false).unwrap_or_else(|e| panic!("{url}: {e}"));
        }
        check("http://127.0.0.1:9/r.git", true).unwrap();
    }

    #[test]
    fn refuses_credentials_in_the_url() {
        assert_eq!(
            check("https://user:pw@github.com/org/repo.git", false),
            Err(UrlRefused::CredentialsInUrl("github.com".into()))
        );
        assert!(check("https://token@github.com/x.git", false).is_err());
        assert!(check("ssh://git:pw@host/x.git", false).is_err());
        // loopback is allowed (tests)
        check("http://u:p@127.0.0.1:1/x.git", false).unwrap();
    }

    #[test]
    fn refuses_plain_http_off_loopback() {
        assert_eq!(
            check("http://git.example.com/x.git", true),
            Err(UrlRefused::PlainHttp("git.example.com".into()))
        );
        assert!(matches!(
            check("ftp://h/x", false),
            Err(UrlRefused::Scheme(_))
        ));
        assert!(matches!(
            check("github.com/x", false),
            Err(UrlRefused::Malformed(_))
        ));
    }

    #[test]
    fn redacts_userinfo() {
        assert_eq!(
            redact("https://u:secret@h.com/r.git"),
            "https://***@h.com/r.git"
        );
        assert_eq!(redact("https://h.com/r@1.git"), "https://h.com/r@1.git");
        assert_eq!(redact("file:///x"), "file:///x");
        let refused = check("https://u:hunter2@h.com/r.git", false)
            .unwrap_err()
            .to_string();
        assert!(!refused.contains("hunter2"));
    }
}
