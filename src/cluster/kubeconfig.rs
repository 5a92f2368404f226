//! The kubeconfig of a remote cluster, from a tenant's Secret (pure): only credentials that
//! are in the kubeconfig itself are accepted. Anything that would make the controller run
//! a program (`exec`, `auth-provider`), read a file on its own disk (`tokenFile`,
//! `client-certificate`, `client-key`, `certificate-authority` paths) or trust any
//! certificate of a server elsewhere (`insecure-skip-tls-verify` off loopback) is refused
//! before a client is built, so nothing of it ever runs.

use kube::config::Kubeconfig;

/// Why a kubeconfig is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("it is not a kubeconfig: {0}")]
    Unparsable(String),
    #[error(
        "user {user:?} uses `{field}`, which would run a program on the controller; use a token or client certificate data"
    )]
    Runs { user: String, field: &'static str },
    #[error(
        "{what} {name:?} names a file on the controller's disk (`{field}`); put the data in the kubeconfig (`{field}-data` or `token`)"
    )]
    File {
        what: &'static str,
        name: String,
        field: &'static str,
    },
    #[error(
        "cluster {cluster:?} sets insecure-skip-tls-verify for {server}, which is not a loopback address; give certificate-authority-data"
    )]
    Insecure { cluster: String, server: String },
    #[error("it has no cluster with a server URL")]
    NoServer,
}

/// Parses and checks a kubeconfig.
pub fn parse(text: &str) -> Result<Kubeconfig, Refused> {
    let kc = Kubeconfig::from_yaml(text).map_err(|e| Refused::Unparsable(e.to_string()))?;
    check(&kc)?;
    Ok(kc)
}

/// Checks every cluster and user of the kubeconfig, used or not.
pub fn check(kc: &Kubeconfig) -> Result<(), Refused> {
    for named in &kc.auth_infos {
        let Some(a) = &named.auth_info else { continue };
        let user = named.name.clone();
        if a.exec.is_some() {
            return Err(Refused::Runs {
                user,
                field: "exec",
            });
        }
        if a.auth_provider.is_some() {
            return Err(Refused::Runs {
                user,
                field: "auth-provider",
            });
        }
        for (set, field) in [
            (a.token_file.is_some(), "tokenFile"),
            (a.client_certificate.is_some(), "client-certificate"),
            (a.client_key.is_some(), "client-key"),
        ] {
            if set {
                return Err(Refused::File {
                    what: "user",
                    name: user,
                    field,
                });
            }
        }
    }
    let mut servers = 0;
    for named in &kc.clusters {
        let Some(c) = &named.cluster else { continue };
        if c.certificate_authority.is_some() {
            return Err(Refused::File {
                what: "cluster",
                name: named.name.clone(),
                field: "certificate-authority",
            });
        }
        let server = c.server.clone().unwrap_or_default();
        if !server.is_empty() {
            servers += 1;
        }
        if c.insecure_skip_tls_verify == Some(true) && !loopback_server(&server) {
            return Err(Refused::Insecure {
                cluster: named.name.clone(),
                server,
            });
        }
    }
    if servers == 0 {
        return Err(Refused::NoServer);
    }
    Ok(())
}

fn loopback_server(server: &str) -> bool {
    crate::source::url_policy::parse(server)
        .is_ok_and(|p| crate::source::url_policy::is_loopback(&p.host))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kubeconfig(cluster: &str, user: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n{cluster}\nusers:\n- name: u\n  user:\n{user}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n"
        )
    }

    const SERVER: &str = "    server: https://10.1.2.3:6443\n    certificate-authority-data: Zm9v";

    #[test]
    fn tokens_and_certificate_data_are_accepted() {
        assert!(parse(&kubeconfig(SERVER, "    token: abc")).is_ok());
        let certs = "    client-certificate-data: Zm9v\n    client-key-data: YmFy";
        assert!(parse(&kubeconfig(SERVER, certs)).is_ok());
    }

    #[test]
    fn programs_are_refused() {
        let exec = "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: /bin/sh\n      args: [-c, touch /tmp/pwned]";
        assert!(matches!(
            parse(&kubeconfig(SERVER, exec)),
            Err(Refused::Runs { field: "exec", .. })
        ));
        let provider = "    auth-provider:\n      name: gcp";
        assert!(matches!(
            parse(&kubeconfig(SERVER, provider)),
            Err(Refused::Runs {
                field: "auth-provider",
                ..
            })
        ));
    }

    #[test]
    fn files_on_the_controllers_disk_are_refused() {
        for (user, field) in [
            (
                "    tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token",
                "tokenFile",
            ),
            (
                "    client-certificate: /etc/ssl/a.crt",
                "client-certificate",
            ),
            ("    client-key: /etc/ssl/a.key", "client-key"),
        ] {
            let got = parse(&kubeconfig(SERVER, user));
            assert!(
                matches!(&got, Err(Refused::File { field: f, .. }) if *f == field),
                "{field}: {got:?}"
            );
        }
        let ca_file = "    server: https://10.1.2.3:6443\n    certificate-authority: /etc/ca.crt";
        assert!(matches!(
            parse(&kubeconfig(ca_file, "    token: abc")),
            Err(Refused::File {
                field: "certificate-authority",
                ..
            })
        ));
    }

    #[test]
    fn skipping_tls_verification_is_only_for_loopback() {
        let remote = "    server: https://10.1.2.3:6443\n    insecure-skip-tls-verify: true";
        assert!(matches!(
            parse(&kubeconfig(remote, "    token: abc")),
            Err(Refused::Insecure { .. })
        ));
        let local = "    server: https://127.0.0.1:6443\n    insecure-skip-tls-verify: true";
        assert!(parse(&kubeconfig(local, "    token: abc")).is_ok());
    }

    #[test]
    fn garbage_and_serverless_configs_are_refused() {
        assert!(matches!(parse("{not: [yaml"), Err(Refused::Unparsable(_))));
        assert!(matches!(
            parse(&kubeconfig(
                "    certificate-authority-data: Zm9v",
                "    token: abc"
            )),
            Err(Refused::NoServer)
        ));
    }
}
