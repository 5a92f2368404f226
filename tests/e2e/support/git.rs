//! A Git server for tests: bare repositories under a temporary root, served over `file://`
//! and over smart HTTP (`git http-backend` as a CGI behind a small loopback server, push
//! enabled, optional basic auth).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use base64::Engine;

/// Runs `git` in `dir` with a fixed identity and no user configuration; panics on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .args([
            "-c",
            "user.name=Gantry Tests",
            "-c",
            "user.email=tests@gantry.dev",
        ])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "protocol.file.allow=always",
        ])
        .args(args)
        .output()
        .expect("git is installed");
    assert!(
        out.status.success(),
        "git {args:?} in {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Copies a directory tree; symlinks are copied as symlinks.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().unwrap();
        if kind.is_symlink() {
            let link = std::fs::read_link(entry.path()).unwrap();
            std::os::unix::fs::symlink(link, &target).unwrap();
        } else if kind.is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Something to run once, just before the server next advertises refs for a push.
type PushHook = Arc<std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>>;

pub struct GitServer {
    root: tempfile::TempDir,
    port: u16,
    stop: Arc<AtomicBool>,
    push_hook: PushHook,
    /// Fetch requests served (ref advertisements and pack negotiations of upload-pack).
    fetches: Arc<std::sync::atomic::AtomicUsize>,
}

impl GitServer {
    /// Serves every bare repository under a fresh root, anonymously.
    pub fn start() -> Self {
        Self::start_inner(None)
    }

    /// Same, requiring HTTP basic auth for every request.
    pub fn start_with_basic_auth(user: &str, password: &str) -> Self {
        Self::start_inner(Some(format!("{user}:{password}")))
    }

    fn start_inner(credentials: Option<String>) -> Self {
        let root = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let (root_path, stop_flag) = (root.path().to_path_buf(), stop.clone());
        let push_hook: PushHook = Default::default();
        let hook = push_hook.clone();
        let fetches: Arc<std::sync::atomic::AtomicUsize> = Default::default();
        let counter = fetches.clone();
        let expected = credentials.map(|c| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(c)
            )
        });
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop_flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (root, expected, hook) = (root_path.clone(), expected.clone(), hook.clone());
                let counter = counter.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, &root, expected.as_deref(), &hook, &counter);
                });
            }
        });
        Self {
            root,
            port,
            stop,
            push_hook,
            fetches,
        }
    }

    /// Runs `f` once, when a client next starts a push (before the ref advertisement), to
    /// make a commit land between someone's fetch and their push.
    pub fn before_next_push(&self, f: impl FnOnce() + Send + 'static) {
        *self.push_hook.lock().unwrap() = Some(Box::new(f));
    }

    /// Upload-pack requests served so far (each a `git http-backend` run): what fetching
    /// costs this server.
    pub fn fetch_requests(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    pub fn bare_path(&self, name: &str) -> PathBuf {
        self.root.path().join(format!("{name}.git"))
    }

    pub fn http_url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}.git", self.port)
    }

    pub fn file_url(&self, name: &str) -> String {
        format!("file://{}", self.bare_path(name).display())
    }

    /// Creates `<name>.git` whose branch `main` holds one commit with the files of `dir`.
    /// Returns the commit id.
    pub fn create_repo_from_dir(&self, name: &str, dir: &Path) -> String {
        let bare = self.bare_path(name);
        git(
            self.root.path(),
            &["init", "--bare", "--quiet", bare.to_str().unwrap()],
        );
        git(&bare, &["config", "http.receivepack", "true"]);
        let work = tempfile::tempdir().unwrap();
        git(work.path(), &["init", "--quiet"]);
        copy_tree(dir, work.path());
        git(work.path(), &["add", "-A"]);
        git(work.path(), &["commit", "--quiet", "-m", "initial commit"]);
        git(
            work.path(),
            &[
                "push",
                "--quiet",
                bare.to_str().unwrap(),
                "HEAD:refs/heads/main",
            ],
        );
        git(&bare, &["rev-parse", "refs/heads/main"])
            .trim()
            .to_string()
    }

    /// Creates a repository from `(path, content)` pairs.
    pub fn create_repo(&self, name: &str, files: &[(&str, &str)]) -> String {
        let dir = tempfile::tempdir().unwrap();
        for (path, content) in files {
            let p = dir.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        }
        self.create_repo_from_dir(name, dir.path())
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // wake the accept loop
    }
}

/// One request per connection: parse it, run `git http-backend`, relay its answer.
fn serve(
    stream: TcpStream,
    root: &Path,
    expected_auth: Option<&str>,
    push_hook: &PushHook,
    fetches: &std::sync::atomic::AtomicUsize,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut parts = request_line.split_whitespace();
    let (method, target) = match (parts.next(), parts.next()) {
        (Some(m), Some(t)) => (m.to_string(), t.to_string()),
        _ => return Ok(()),
    };
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    if let Some(expected) = expected_auth
        && headers.get("authorization").map(String::as_str) != Some(expected)
    {
        let body = "authentication required\n";
        write!(
            writer,
            "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        return Ok(());
    }
    if headers
        .get("expect")
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    {
        writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let body = read_body(&mut reader, &headers)?;
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    if method == "GET" && query.contains("service=git-receive-pack") {
        let hook = push_hook.lock().unwrap().take();
        if let Some(f) = hook {
            f();
        }
    }

    if query.contains("service=git-upload-pack") || path.ends_with("/git-upload-pack") {
        fetches.fetch_add(1, Ordering::SeqCst);
    }
    let mut cmd = Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("REMOTE_USER", "tests")
        .env("CONTENT_LENGTH", body.len().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(ct) = headers.get("content-type") {
        cmd.env("CONTENT_TYPE", ct);
    }
    if let Some(p) = headers.get("git-protocol") {
        cmd.env("GIT_PROTOCOL", p);
    }
    if let Some(enc) = headers.get("content-encoding") {
        cmd.env("HTTP_CONTENT_ENCODING", enc);
    }
    let mut child = cmd.spawn()?;
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&body);
    });
    let mut output = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut output)?;
    let _ = feeder.join();
    let _ = child.wait();

    // CGI answer: headers, a blank line, the body.
    let split = find_header_end(&output).unwrap_or((output.len(), output.len()));
    let head = String::from_utf8_lossy(&output[..split.0]).into_owned();
    let cgi_body = &output[split.1..];
    let mut status = "200 OK".to_string();
    let mut out_headers = String::new();
    for line in head.lines() {
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("status") {
                status = v.trim().to_string();
            } else {
                out_headers.push_str(&format!("{}: {}\r\n", k.trim(), v.trim()));
            }
        }
    }
    write!(
        writer,
        "HTTP/1.1 {status}\r\n{out_headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        cgi_body.len()
    )?;
    writer.write_all(cgi_body)?;
    writer.flush()
}

fn find_header_end(buf: &[u8]) -> Option<(usize, usize)> {
    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
        return Some((i, i + 4));
    }
    buf.windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| (i, i + 2))
}

fn read_body(
    reader: &mut impl BufRead,
    headers: &HashMap<String, String>,
) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let mut size_line = String::new();
            reader.read_line(&mut size_line)?;
            let size_hex = size_line.trim().split(';').next().unwrap_or("0");
            let size = usize::from_str_radix(size_hex, 16).unwrap_or(0);
            if size == 0 {
                let mut trailer = String::new();
                reader.read_line(&mut trailer)?;
                break;
            }
            let mut chunk = vec![0; size];
            reader.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk);
            let mut crlf = [0u8; 2];
            reader.read_exact(&mut crlf)?;
        }
    } else if let Some(len) = headers
        .get("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        body.resize(len, 0);
        reader.read_exact(&mut body)?;
    }
    Ok(body)
}

/// Commits `files` on `main` of a bare repository (a first commit); returns the commit.
pub fn commit_files(repo: &git2::Repository, files: &[(&str, &str)]) -> git2::Oid {
    let mut index = git2::Index::new().unwrap();
    for (path, content) in files {
        let blob = repo.blob(content.as_bytes()).unwrap();
        let mut entry = git2::IndexEntry {
            ctime: git2::IndexTime::new(0, 0),
            mtime: git2::IndexTime::new(0, 0),
            dev: 0,
            ino: 0,
            mode: 0o100644,
            uid: 0,
            gid: 0,
            file_size: content.len() as u32,
            id: blob,
            flags: 0,
            flags_extended: 0,
            path: path.as_bytes().to_vec(),
        };
        entry.flags = (path.len() as u16) & 0xfff;
        index.add(&entry).unwrap();
    }
    let tree = index.write_tree_to(repo).unwrap();
    let tree = repo.find_tree(tree).unwrap();
    let sig = git2::Signature::now("tests", "tests@example.com").unwrap();
    repo.commit(Some("refs/heads/main"), &sig, &sig, "files", &tree, &[])
        .unwrap()
}

/// A commit whose tree nests `depth` directories named `d` (a file at the bottom), built
/// bottom-up with tree builders, as a hostile tenant would push it.
pub fn deep_commit(repo: &git2::Repository, depth: usize) -> git2::Oid {
    let blob = repo.blob(b"x").unwrap();
    let mut b = repo.treebuilder(None).unwrap();
    b.insert("f", blob, 0o100644).unwrap();
    let mut tree = b.write().unwrap();
    for _ in 0..depth {
        let mut b = repo.treebuilder(None).unwrap();
        b.insert("d", tree, 0o040000).unwrap();
        tree = b.write().unwrap();
    }
    let tree = repo.find_tree(tree).unwrap();
    let sig = git2::Signature::now("tests", "tests@example.com").unwrap();
    repo.commit(None, &sig, &sig, "deep", &tree, &[]).unwrap()
}
