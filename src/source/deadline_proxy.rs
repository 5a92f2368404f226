//! A loopback proxy that gives one libgit2 fetch over HTTP(S) a hard deadline (a source
//! pinned to an exact commit; the shallow fetches of refs speak HTTP themselves in
//! `super::git_http`). libgit2 blocks in `recv` while a server says nothing, and has no
//! server timeout that safe code can set; so such a fetch's connections go through this
//! proxy, which closes every one of them at the
//! fetch's deadline — libgit2's read then fails and its thread returns. The proxy dials only
//! the host and port of the fetch's URL (a redirect elsewhere, to cloud metadata say, is
//! refused), tunnels `https` untouched (`CONNECT`: TLS and its certificate checks stay
//! end to end), and forwards plain `http` (loopback only, by the URL policy) one request per
//! connection. libgit2 does not send plain `http` through a proxy (it would dial the server
//! itself), so for `http` the fetch's URL names the proxy, which passes each request on
//! with the server's own `Host`.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// Largest request head the proxy reads.
const MAX_HEAD: usize = 16 * 1024;

/// A running proxy for one fetch; it stops by itself at the deadline.
pub struct DeadlineProxy {
    addr: SocketAddr,
}

impl DeadlineProxy {
    /// Starts a proxy toward `host:port` until `deadline`.
    pub async fn start(host: &str, port: u16, deadline: Instant) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let upstream = Upstream {
            host: host.to_ascii_lowercase(),
            port,
        };
        tokio::spawn(tokio::time::timeout_at(deadline, async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                tokio::spawn(tokio::time::timeout_at(deadline, async move {
                    if let Err(e) = serve(client, &upstream).await {
                        tracing::debug!(error = %e, "fetch proxy connection ended");
                    }
                }));
            }
        }));
        Ok(Self { addr })
    }

    /// The proxy URL to give libgit2 (for `https`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

#[derive(Clone)]
struct Upstream {
    host: String,
    port: u16,
}

impl Upstream {
    fn is(&self, authority: &str, default_port: u16) -> bool {
        let (host, port) = split_authority(authority, default_port);
        host.eq_ignore_ascii_case(&self.host) && port == Some(self.port)
    }
}

/// `host[:port]` (IPv6 in brackets) → (host, port); `default_port` when none is given, no
/// port when it does not parse.
pub(crate) fn split_authority(authority: &str, default_port: u16) -> (&str, Option<u16>) {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']').unwrap_or((rest, ""));
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok(),
            None => Some(default_port),
        };
        return (host, port);
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok()),
        None => (authority, Some(default_port)),
    }
}

/// What a proxied request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Ask {
    /// `CONNECT host:port`: a tunnel.
    Tunnel(String),
    /// A plain request, rewritten to origin form with `Connection: close` and the server's
    /// `Host`; the authority it named when in absolute form.
    Forward {
        authority: Option<String>,
        head: Vec<u8>,
    },
}

/// Reads the request head from `client`: the bytes up to the blank line, and what follows.
async fn read_head(client: &mut TcpStream) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((buf, rest));
        }
        if buf.len() > MAX_HEAD {
            return Err(std::io::Error::other("request head too large"));
        }
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::other(
                "closed before the request head ended",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Parses a request head into what it asks, for a server at `host` (pure).
fn parse_head(head: &[u8], host: &str) -> Option<Ask> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let request = lines.next()?;
    let mut parts = request.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if method.eq_ignore_ascii_case("CONNECT") {
        return Some(Ask::Tunnel(target.to_string()));
    }
    let (authority, path) = match target.strip_prefix("http://") {
        Some(rest) => match rest.find('/') {
            Some(i) => (Some(rest[..i].to_string()), &rest[i..]),
            None => (Some(rest.to_string()), "/"),
        },
        None if target.starts_with('/') => (None, target),
        None => return None,
    };
    let mut out = format!("{method} {path} {version}\r\nHost: {host}\r\n");
    for line in lines.filter(|l| !l.is_empty()) {
        let name = line.split(':').next().unwrap_or_default().trim();
        if [
            "host",
            "connection",
            "proxy-connection",
            "proxy-authorization",
            "keep-alive",
        ]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h))
        {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    Some(Ask::Forward {
        authority,
        head: out.into_bytes(),
    })
}

async fn serve(mut client: TcpStream, upstream: &Upstream) -> std::io::Result<()> {
    let (head, rest) = read_head(&mut client).await?;
    let refuse = |why: &str| {
        format!(
            "HTTP/1.1 403 Forbidden\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{why}",
            why.len()
        )
    };
    let host = if upstream.host.contains(':') {
        format!("[{}]:{}", upstream.host, upstream.port)
    } else {
        format!("{}:{}", upstream.host, upstream.port)
    };
    match parse_head(&head, &host) {
        Some(Ask::Tunnel(authority)) if upstream.is(&authority, 443) => {
            let mut server = TcpStream::connect((upstream.host.as_str(), upstream.port)).await?;
            client
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await?;
            if !rest.is_empty() {
                server.write_all(&rest).await?;
            }
            tokio::io::copy_bidirectional(&mut client, &mut server).await?;
        }
        Some(Ask::Forward { authority, head })
            if authority.as_deref().is_none_or(|a| upstream.is(a, 80)) =>
        {
            let mut server = TcpStream::connect((upstream.host.as_str(), upstream.port)).await?;
            server.write_all(&head).await?;
            server.write_all(&rest).await?;
            tokio::io::copy_bidirectional(&mut client, &mut server).await?;
        }
        _ => {
            let why = "this fetch may only reach the host of its URL";
            client.write_all(refuse(why).as_bytes()).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_parsed_and_rewritten() {
        assert_eq!(
            parse_head(
                b"CONNECT git.example.com:443 HTTP/1.1\r\nHost: git.example.com:443\r\n\r\n",
                "x"
            ),
            Some(Ask::Tunnel("git.example.com:443".into()))
        );
        let Some(Ask::Forward { authority, head }) = parse_head(
            b"GET http://127.0.0.1:8080/r.git/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: keep-alive\r\nProxy-Connection: keep-alive\r\n\r\n",
            "127.0.0.1:8080",
        ) else {
            panic!("not a forward");
        };
        assert_eq!(authority.as_deref(), Some("127.0.0.1:8080"));
        let head = String::from_utf8(head).unwrap();
        assert!(
            head.starts_with("GET /r.git/info/refs?service=git-upload-pack HTTP/1.1\r\n"),
            "{head}"
        );
        assert_eq!(head.matches("Host:").count(), 1, "{head}");
        assert!(head.contains("Host: 127.0.0.1:8080\r\n"));
        assert!(!head.to_ascii_lowercase().contains("keep-alive"), "{head}");
        assert!(head.ends_with("Connection: close\r\n\r\n"));
        // Origin form (the fetch's URL named the proxy): the server's Host is put back.
        let Some(Ask::Forward { authority, head }) = parse_head(
            b"GET /r.git/info/refs HTTP/1.1\r\nHost: 127.0.0.1:9999\r\n\r\n",
            "127.0.0.1:8080",
        ) else {
            panic!("not a forward");
        };
        assert_eq!(authority, None);
        let head = String::from_utf8(head).unwrap();
        assert!(
            head.contains("Host: 127.0.0.1:8080\r\n") && !head.contains("9999"),
            "{head}"
        );
        assert_eq!(parse_head(b"GET relative HTTP/1.1\r\n\r\n", "x"), None);
    }

    #[test]
    fn only_the_urls_host_and_port_are_dialled() {
        let up = Upstream {
            host: "git.example.com".into(),
            port: 443,
        };
        assert!(up.is("git.example.com:443", 443));
        assert!(up.is("GIT.example.com", 443));
        assert!(!up.is("169.254.169.254:443", 443));
        assert!(!up.is("git.example.com:22", 443));
        let v6 = Upstream {
            host: "::1".into(),
            port: 8080,
        };
        assert!(v6.is("[::1]:8080", 80));
    }

    #[tokio::test]
    async fn a_silent_server_is_cut_off_at_the_deadline() {
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = silent.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut held = vec![];
            while let Ok((s, _)) = silent.accept().await {
                held.push(s);
            }
        });
        let deadline = Instant::now() + std::time::Duration::from_millis(500);
        let proxy = DeadlineProxy::start("127.0.0.1", port, deadline)
            .await
            .unwrap();
        let mut client = TcpStream::connect(proxy.addr).await.unwrap();
        client
            .write_all(
                format!("GET http://127.0.0.1:{port}/r.git/info/refs HTTP/1.1\r\nHost: x\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let mut buf = [0u8; 16];
        let n = client.read(&mut buf).await.unwrap_or(0);
        assert_eq!(n, 0, "the connection is closed");
        assert!(started.elapsed() < std::time::Duration::from_secs(3));
        // Another host is refused.
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        let proxy = DeadlineProxy::start("127.0.0.1", port, deadline)
            .await
            .unwrap();
        let mut client = TcpStream::connect(proxy.addr).await.unwrap();
        client
            .write_all(b"CONNECT 169.254.169.254:443 HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    }
}
