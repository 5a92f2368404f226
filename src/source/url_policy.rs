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
    #[error(
        "file:// sources are not allowed by this controller ({0}); the operator allows them \
         under one directory with --file-sources-root"
    )]
    FileSourcesOff(String),
    #[error("{url} is not under {root}, the only directory file:// sources may read")]
    FileOutsideRoot { url: String, root: String },
    #[error("{0} is inside the controller's own data directory (caches of other sources)")]
    FileInsideDataDir(String),
    #[error(
        "file:// URL {0:?} holds a percent sign, a query, a fragment or a control character; \
         write the path as it is on disk"
    )]
    FileEncoded(String),
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

/// A cloud metadata endpoint or another link-local address (`169.254.0.0/16`, `fe80::/10`,
/// `fd00:ec2::254`, `metadata.google.internal`): never a chart repository or a registry a
/// tenant may name, since its answers hold the node's credentials.
pub fn is_metadata_host(host: &str) -> bool {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    if host == "metadata.google.internal" || host == "metadata" {
        return true;
    }
    if let Ok(ip) = host.parse::<std::net::Ipv4Addr>() {
        return ip.is_link_local();
    }
    if let Ok(ip) = host.parse::<std::net::Ipv6Addr>() {
        let s = ip.segments();
        return (s[0] & 0xffc0) == 0xfe80
            || ip
                == "fd00:ec2::254"
                    .parse::<std::net::Ipv6Addr>()
                    .expect("an address")
            || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_link_local());
    }
    false
}

/// A `file://` URL is allowed only under `root` (when the operator gave one) and never
/// inside the controller's `data_dir`, whatever links or `..` the path takes: the path is
/// resolved as far as it exists before it is compared. Other schemes pass.
pub fn check_file_root(
    url: &str,
    root: Option<&std::path::Path>,
    data_dir: &std::path::Path,
) -> Result<(), UrlRefused> {
    let Some(path) = url
        .split_once("://")
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("file"))
        .map(|(_, rest)| rest)
    else {
        return Ok(());
    };
    let Some(root) = root else {
        return Err(UrlRefused::FileSourcesOff(url.to_string()));
    };
    // libgit2 percent-decodes a file:// URL before it opens the path, so `%2e%2e` would
    // climb after this check compared the raw text: such URLs are refused outright, and
    // what is checked below is then exactly the path libgit2 opens.
    if path.contains(['%', '?', '#']) || path.chars().any(char::is_control) {
        return Err(UrlRefused::FileEncoded(url.to_string()));
    }
    let resolved = resolve(std::path::Path::new(path));
    let inside = |dir: &std::path::Path| resolved.starts_with(resolve(dir));
    if !std::path::Path::new(path).is_absolute() || !inside(root) {
        return Err(UrlRefused::FileOutsideRoot {
            url: url.to_string(),
            root: root.display().to_string(),
        });
    }
    if inside(data_dir) {
        return Err(UrlRefused::FileInsideDataDir(url.to_string()));
    }
    Ok(())
}

/// The path with its existing part canonicalized (links followed) and the rest normalized
/// lexically (`..` removes a component, `.` none).
fn resolve(path: &std::path::Path) -> std::path::PathBuf {
    use std::path::Component;
    let mut existing = path.to_path_buf();
    let mut rest = vec![];
    let base = loop {
        if let Ok(c) = existing.canonicalize() {
            break c;
        }
        match (
            existing.file_name().map(|n| n.to_os_string()),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => break std::path::PathBuf::from("/"),
        }
    };
    let mut out = base;
    for part in rest.iter().rev() {
        match std::path::Path::new(part).components().next() {
            Some(Component::ParentDir) => {
                out.pop();
            }
            Some(Component::Normal(n)) => out.push(n),
            _ => {}
        }
    }
    out
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
    fn file_sources_stay_under_the_root_and_out_of_the_data_dir() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        std::fs::create_dir_all(data.join("git/team-b/app")).unwrap();
        std::fs::create_dir_all(root.path().join("repos/a.git")).unwrap();
        let r = Some(root.path());
        let url = |p: &std::path::Path| format!("file://{}", p.display());
        assert_eq!(check_file_root("https://x/y", None, &data), Ok(()));
        assert!(matches!(
            check_file_root(&url(&root.path().join("repos/a.git")), None, &data),
            Err(UrlRefused::FileSourcesOff(_))
        ));
        assert_eq!(
            check_file_root(&url(&root.path().join("repos/a.git")), r, &data),
            Ok(())
        );
        assert!(matches!(
            check_file_root("file:///etc", r, &data),
            Err(UrlRefused::FileOutsideRoot { .. })
        ));
        let climbing = format!("file://{}/repos/../../../etc", root.path().display());
        assert!(matches!(
            check_file_root(&climbing, r, &data),
            Err(UrlRefused::FileOutsideRoot { .. })
        ));
        assert!(matches!(
            check_file_root(&url(&data.join("git/team-b/app")), r, &data),
            Err(UrlRefused::FileInsideDataDir(_))
        ));
        // Percent-encoding (libgit2 decodes it), in any case, is refused before comparing.
        for encoded in ["%2e%2e", "%2E%2E", "%2f", ".%2e", "%252e"] {
            let sneaky = format!(
                "file://{}/repos/{encoded}/{encoded}/etc",
                root.path().display()
            );
            assert!(
                matches!(
                    check_file_root(&sneaky, r, &data),
                    Err(UrlRefused::FileEncoded(_))
                ),
                "{sneaky}"
            );
        }
        let query = format!("file://{}/repos/a.git?x=1", root.path().display());
        assert!(matches!(
            check_file_root(&query, r, &data),
            Err(UrlRefused::FileEncoded(_))
        ));
        // Upper-case schemes are file URLs too.
        assert!(matches!(
            check_file_root("FILE:///etc", r, &data),
            Err(UrlRefused::FileOutsideRoot { .. })
        ));
        // A link under the root into the data directory is followed before comparing.
        std::os::unix::fs::symlink(&data, root.path().join("repos/link")).unwrap();
        assert!(matches!(
            check_file_root(
                &url(&root.path().join("repos/link/git/team-b/app")),
                r,
                &data
            ),
            Err(UrlRefused::FileInsideDataDir(_))
        ));
    }

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
