//! Shallow fetches over smart HTTP against `git http-backend`, and against servers that
//! lie: what each fetch costs the server, a new commit whose tree reuses a blob only an
//! unfetched parent held, tags, semver ranges and pull request refs, credentials, and a
//! redirect elsewhere, a pack that never ends and a server error, each losing nothing.
//! No cluster needed.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use gantry::source::git::{Credentials, Fetched, GitError, Reference};
use gantry::source::git_fetch;

use crate::support::git::{GitServer, git};

/// A fetch as the GitRepository controller makes it: on a blocking thread of a
/// multi-threaded runtime.
async fn fetch(
    cache: &Path,
    url: &str,
    reference: Reference,
    creds: Option<Credentials>,
    timeout: Duration,
) -> Result<Fetched, GitError> {
    let (cache, url) = (cache.to_path_buf(), url.to_string());
    tokio::task::spawn_blocking(move || {
        git_fetch::fetch(
            &cache,
            &url,
            &reference,
            creds.as_ref(),
            Instant::now() + timeout,
            None,
        )
    })
    .await
    .unwrap()
}

/// A fetch that must succeed, within 20 s, without credentials.
async fn fetch_ok(cache: &Path, url: &str, reference: Reference) -> Fetched {
    fetch(cache, url, reference, None, Duration::from_secs(20))
        .await
        .unwrap()
}

fn main_ref() -> Reference {
    Reference::Branch("main".into())
}

/// Commits `files` on top of `main` of the server's `name` and pushes; returns the commit.
fn push(server: &GitServer, name: &str, files: &[(&str, &str)]) -> String {
    let work = tempfile::tempdir().unwrap();
    git(
        work.path(),
        &["clone", "--quiet", &server.http_url(name), "c"],
    );
    let clone = work.path().join("c");
    for (path, content) in files {
        std::fs::write(clone.join(path), content).unwrap();
    }
    git(&clone, &["add", "-A"]);
    git(&clone, &["commit", "--quiet", "-m", "next"]);
    git(&clone, &["push", "--quiet", "origin", "main"]);
    git(&clone, &["rev-parse", "HEAD"]).trim().to_string()
}

fn blob_at(cache: &Path, commit: &str, path: &str) -> Option<String> {
    let repo = git2::Repository::open_bare(cache).ok()?;
    let commit = repo.find_commit(git2::Oid::from_str(commit).ok()?).ok()?;
    let entry = commit.tree().ok()?.get_path(Path::new(path)).ok()?;
    let blob = entry.to_object(&repo).ok()?.peel_to_blob().ok()?;
    Some(String::from_utf8_lossy(blob.content()).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fetch_costs_two_requests_an_unchanged_one_one_and_a_new_commit_arrives_whole() {
    let server = GitServer::start();
    let first = server.create_repo("app", &[("a.yaml", "v: 1\n")]);
    let second = push(&server, "app", &[("a.yaml", "v: 2\n")]);
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let url = server.http_url("app");

    let before = server.fetch_requests();
    let got = fetch_ok(&cache, &url, main_ref()).await;
    assert_eq!(got.commit, second);
    assert_eq!(got.revision, format!("main@sha1:{second}"));
    assert_eq!(
        server.fetch_requests() - before,
        2,
        "a ref advertisement and one upload-pack"
    );
    // Shallow: the tip only, its parent not fetched, the boundary written for libgit2.
    let repo = git2::Repository::open_bare(&cache).unwrap();
    assert!(
        repo.find_commit(git2::Oid::from_str(&first).unwrap())
            .is_err()
    );
    assert!(repo.is_shallow());
    assert_eq!(
        std::fs::read_to_string(cache.join("shallow")).unwrap(),
        format!("{second}\n")
    );

    let before = server.fetch_requests();
    let again = fetch_ok(&cache, &url, main_ref()).await;
    assert_eq!(again, got);
    assert_eq!(
        server.fetch_requests() - before,
        1,
        "an unchanged commit costs the advertisement only"
    );

    // The third commit brings back the first commit's blob, which this shallow clone never
    // had (the clone offers its tip as a have): the pack must still carry it.
    let third = push(
        &server,
        "app",
        &[("a.yaml", "v: 1\n"), ("b.yaml", "b: 1\n")],
    );
    let before = server.fetch_requests();
    let next = fetch_ok(&cache, &url, main_ref()).await;
    assert_eq!(next.commit, third);
    assert_eq!(server.fetch_requests() - before, 2);
    assert_eq!(blob_at(&cache, &third, "a.yaml").as_deref(), Some("v: 1\n"));
    assert_eq!(blob_at(&cache, &third, "b.yaml").as_deref(), Some("b: 1\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn tags_semver_ranges_and_pull_request_refs_are_fetched_by_their_names() {
    let server = GitServer::start();
    let first = server.create_repo("app", &[("a.yaml", "v: 1\n")]);
    let second = push(&server, "app", &[("a.yaml", "v: 2\n")]);
    let bare = server.bare_path("app");
    git(&bare, &["tag", "-a", "v1.2.0", "-m", "release", &second]);
    git(&bare, &["tag", "v0.9.0", &first]);
    git(&bare, &["tag", "v2.0.0-rc.1", &second]);
    git(&bare, &["update-ref", "refs/pull/7/head", &first]);
    let url = server.http_url("app");
    let dir = tempfile::tempdir().unwrap();

    let tag = fetch_ok(
        &dir.path().join("tag"),
        &url,
        Reference::Tag("v1.2.0".into()),
    )
    .await;
    assert_eq!(
        tag.revision,
        format!("v1.2.0@sha1:{second}"),
        "an annotated tag peels to its commit"
    );
    let newest = fetch_ok(
        &dir.path().join("semver"),
        &url,
        Reference::Semver(">=0.1.0".into()),
    )
    .await;
    assert_eq!(newest.revision, format!("v1.2.0@sha1:{second}"));
    // A newer tag on a commit that brings back a blob only the first commit held (the
    // clone offers its tags' commits as haves): it arrives whole.
    let third = push(
        &server,
        "app",
        &[("a.yaml", "v: 1\n"), ("c.yaml", "c: 1\n")],
    );
    git(&bare, &["tag", "v1.3.0", &third]);
    let moved = fetch_ok(
        &dir.path().join("semver"),
        &url,
        Reference::Semver(">=0.1.0".into()),
    )
    .await;
    assert_eq!(moved.revision, format!("v1.3.0@sha1:{third}"));
    let semver_cache = dir.path().join("semver");
    assert_eq!(
        blob_at(&semver_cache, &third, "a.yaml").as_deref(),
        Some("v: 1\n")
    );
    let pull = fetch_ok(
        &dir.path().join("pull"),
        &url,
        Reference::Full("refs/pull/7/head".into()),
    )
    .await;
    assert_eq!(pull.revision, format!("refs/pull/7/head@sha1:{first}"));
    for (reference, missing) in [
        (Reference::Branch("nope".into()), "nope"),
        (
            Reference::Semver(">=3.0.0".into()),
            "a tag matching >=3.0.0",
        ),
    ] {
        match fetch(
            &dir.path().join("missing"),
            &url,
            reference,
            None,
            Duration::from_secs(20),
        )
        .await
        {
            Err(GitError::RefNotFound { reference, .. }) => assert_eq!(reference, missing),
            other => panic!("{missing}: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_are_sent_and_a_refusal_is_an_authentication_failure() {
    let server = GitServer::start_with_basic_auth("ci", "s3cret-pw");
    let head = server.create_repo("app", &[("a.yaml", "v: 1\n")]);
    let url = server.http_url("app");
    let dir = tempfile::tempdir().unwrap();
    let basic = |password: &str| {
        Some(Credentials::Basic {
            username: "ci".into(),
            password: password.into(),
        })
    };
    for creds in [None, basic("wrong-pw")] {
        let err = fetch(
            &dir.path().join("c"),
            &url,
            main_ref(),
            creds,
            Duration::from_secs(20),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, GitError::Auth { .. }), "{err:?}");
        assert!(!err.to_string().contains("wrong-pw"), "{err}");
    }
    let got = fetch(
        &dir.path().join("c"),
        &url,
        main_ref(),
        basic("s3cret-pw"),
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    assert_eq!(got.commit, head);
}

/// A server on loopback that answers every request with the next canned answer (the last
/// one again when they run out), counting connections.
struct Canned {
    port: u16,
    served: Arc<AtomicUsize>,
}

fn canned(answers: Vec<Vec<u8>>, hold_open: Duration) -> Canned {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let served: Arc<AtomicUsize> = Default::default();
    let count = served.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let n = count.fetch_add(1, Ordering::SeqCst);
            let answer = answers[n.min(answers.len() - 1)].clone();
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0u8; length];
                let _ = stream.read_exact(&mut body);
                let _ = stream.write_all(&answer);
                std::thread::sleep(hold_open);
            });
        }
    });
    Canned { port, served }
}

/// An answer of `body` (with its length; `endless` leaves it out, so the body lasts until
/// the server closes the connection).
fn http(status: &str, content_type: &str, body: &[u8], extra: &str) -> Vec<u8> {
    let length = format!("Content-Length: {}\r\n", body.len());
    answer(status, content_type, body, &format!("{extra}{length}"))
}

fn endless(content_type: &str, body: &[u8]) -> Vec<u8> {
    answer("200 OK", content_type, body, "")
}

fn answer(status: &str, content_type: &str, body: &[u8], extra: &str) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n{extra}Connection: close\r\n\r\n"
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

fn pkt(line: &str) -> String {
    format!("{:04x}{line}", line.len() + 4)
}

fn advertisement(tip: &str) -> Vec<u8> {
    let body = format!(
        "{}0000{}{}0000",
        pkt("# service=git-upload-pack\n"),
        pkt(&format!(
            "{tip} refs/heads/main\0side-band-64k ofs-delta shallow no-progress\n"
        )),
        pkt(&format!("{tip} HEAD\n")),
    );
    http(
        "200 OK",
        "application/x-git-upload-pack-advertisement",
        body.as_bytes(),
        "",
    )
}

/// A cache fetched from a real server, to show that a lying server's fetch loses nothing.
async fn good_cache(dir: &Path) -> (PathBuf, String, GitServer) {
    let server = GitServer::start();
    let head = server.create_repo("app", &[("a.yaml", "v: 1\n")]);
    let cache = dir.join("cache");
    fetch_ok(&cache, &server.http_url("app"), main_ref()).await;
    (cache, head, server)
}

/// The error of a fetch of `main` from `liar` into `cache`.
async fn refused_by(liar: &Canned, cache: &Path, timeout: Duration) -> GitError {
    let url = format!("http://127.0.0.1:{}/app.git", liar.port);
    fetch(cache, &url, main_ref(), None, timeout)
        .await
        .unwrap_err()
}

fn tip_of(cache: &Path) -> String {
    let repo = git2::Repository::open_bare(cache).unwrap();
    repo.refname_to_id("refs/remotes/origin/main")
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redirect_to_another_port_is_refused_and_never_dialled() {
    let elsewhere = canned(vec![advertisement(&"1".repeat(40))], Duration::ZERO);
    let location = format!(
        "Location: http://127.0.0.1:{}/app.git/info/refs?service=git-upload-pack\r\n",
        elsewhere.port
    );
    let liar = canned(
        vec![http("302 Found", "text/plain", b"", &location)],
        Duration::ZERO,
    );
    let dir = tempfile::tempdir().unwrap();
    let (cache, head, _server) = good_cache(dir.path()).await;
    let err = refused_by(&liar, &cache, Duration::from_secs(10)).await;
    assert!(matches!(err, GitError::Fetch { .. }), "{err:?}");
    assert!(err.to_string().contains("redirect"), "{err}");
    assert_eq!(elsewhere.served.load(Ordering::SeqCst), 0);
    assert_eq!(tip_of(&cache), head);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pack_that_never_ends_is_cut_at_the_deadline_and_the_cache_keeps_its_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, head, _server) = good_cache(dir.path()).await;
    let other = "2".repeat(40);
    let never_ends = endless(
        "application/x-git-upload-pack-result",
        format!("0000{}0009\u{1}PACK", pkt("NAK\n")).as_bytes(),
    );
    let liar = canned(
        vec![advertisement(&other), never_ends],
        Duration::from_secs(60),
    );
    let started = Instant::now();
    let err = refused_by(&liar, &cache, Duration::from_secs(2)).await;
    assert!(matches!(err, GitError::Timeout { .. }), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "cut after {:?}",
        started.elapsed()
    );
    assert_eq!(tip_of(&cache), head);
    assert_eq!(liar.served.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_error_or_a_broken_pack_fails_with_its_cause_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, head, _server) = good_cache(dir.path()).await;
    let other = "3".repeat(40);
    let error_band = format!(
        "0000{}{:04x}\u{3}upload-pack: hostile refusal\n",
        pkt("NAK\n"),
        "upload-pack: hostile refusal\n".len() + 5
    );
    let broken = format!("0000{}{:04x}\u{1}PACKjunk0000", pkt("NAK\n"), 13);
    for (body, cause) in [(error_band, "hostile refusal"), (broken, "pack")] {
        let liar = canned(
            vec![
                advertisement(&other),
                http(
                    "200 OK",
                    "application/x-git-upload-pack-result",
                    body.as_bytes(),
                    "",
                ),
            ],
            Duration::ZERO,
        );
        let err = refused_by(&liar, &cache, Duration::from_secs(10)).await;
        assert!(matches!(err, GitError::Fetch { .. }), "{err:?}");
        assert!(err.to_string().contains(cause), "{err}");
        assert_eq!(tip_of(&cache), head);
        let repo = git2::Repository::open_bare(&cache).unwrap();
        assert!(
            repo.find_commit(git2::Oid::from_str(&head).unwrap())
                .is_ok()
        );
        assert_eq!(
            std::fs::read_to_string(cache.join("shallow")).unwrap(),
            format!("{head}\n")
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cache_whose_objects_cannot_be_read_fails_so_that_a_fresh_clone_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, _head, server) = good_cache(dir.path()).await;
    for pack in std::fs::read_dir(cache.join("objects/pack"))
        .unwrap()
        .flatten()
    {
        let len = std::fs::metadata(pack.path()).unwrap().len() as usize;
        std::fs::write(pack.path(), vec![0x5a; len.max(64)]).unwrap();
    }
    let next = push(&server, "app", &[("b.yaml", "b: 1\n")]);
    let url = server.http_url("app");
    let err = fetch(&cache, &url, main_ref(), None, Duration::from_secs(20))
        .await
        .unwrap_err();
    assert!(matches!(err, GitError::Fetch { .. }), "{err:?}");
    assert!(err.to_string().contains("cache cannot read"), "{err}");
    // What the controller does next: a fresh clone beside it.
    let fresh = fetch_ok(&dir.path().join("fresh"), &url, main_ref()).await;
    assert_eq!(fresh.commit, next);
}
