//! A real forge: Gitea (built from its Go module by tests/cluster/build-gitea.sh), on
//! loopback with SQLite, an admin user and an API token made through its CLI and API. It
//! serves the test repositories over smart HTTP and takes commit statuses through its API.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use super::git::git;
use super::process::{ChildGuard, free_port, tool, tool_dir};

pub const USER: &str = "gantry";
const PASSWORD: &str = "Gantry-Forge-Pass-1";

pub struct Gitea {
    pub port: u16,
    /// An API token of the admin user (scope: all).
    pub token: String,
    dir: tempfile::TempDir,
    server: Option<ChildGuard>,
}

impl Gitea {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let d = dir.path();
        let share = tool_dir().join("gitea-share");
        let user =
            String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
        std::fs::write(
            d.join("app.ini"),
            format!(
                "APP_NAME = gantry-test\nRUN_MODE = prod\nRUN_USER = {user}\nI_AM_BEING_UNSAFE_RUNNING_AS_ROOT = true\nWORK_PATH = {w}\n\
                 [database]\nDB_TYPE = sqlite3\nPATH = {w}/gitea.db\n\
                 [repository]\nROOT = {w}/repos\n\
                 [server]\nPROTOCOL = http\nHTTP_ADDR = 127.0.0.1\nHTTP_PORT = {port}\nROOT_URL = http://127.0.0.1:{port}/\n\
                 DISABLE_SSH = true\nOFFLINE_MODE = true\nSTATIC_ROOT_PATH = {s}\nAPP_DATA_PATH = {w}/data\nLFS_START_SERVER = false\n\
                 [security]\nINSTALL_LOCK = true\nSECRET_KEY = gantry-test-secret-key\n\
                 INTERNAL_TOKEN = eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJuYmYiOjE2MDAwMDAwMDB9.gantry-test\n\
                 [service]\nDISABLE_REGISTRATION = true\n\
                 [log]\nMODE = console\nLEVEL = warn\n\
                 [webhook]\nALLOWED_HOST_LIST = loopback\n\
                 [oauth2]\nENABLED = false\n\
                 [indexer]\nREPO_INDEXER_ENABLED = false\n\
                 [cron]\nENABLED = false\n",
                user = user.trim(),
                w = d.display(),
                s = share.display(),
            ),
        )
        .unwrap();
        let ini = d.join("app.ini");
        let run = |args: &[&str]| {
            let out = Command::new(tool("gitea"))
                .args(args)
                .arg("-c")
                .arg(&ini)
                .current_dir(d)
                .output()
                .expect("run gitea");
            assert!(
                out.status.success(),
                "gitea {args:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&["migrate"]);
        run(&[
            "admin",
            "user",
            "create",
            "--admin",
            "--username",
            USER,
            "--password",
            PASSWORD,
            "--email",
            "gantry@example.test",
            "--must-change-password=false",
        ]);
        let mut gitea = Gitea {
            port,
            token: String::new(),
            dir,
            server: None,
        };
        gitea.serve();
        gitea.token = gitea.create_token("gantry-tests");
        gitea
    }

    fn serve(&mut self) {
        let d = self.dir.path();
        let log = std::fs::File::create(d.join("web.log")).unwrap();
        let child = Command::new(tool("gitea"))
            .args(["web", "-c"])
            .arg(d.join("app.ini"))
            .current_dir(d)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start gitea");
        self.server = Some(ChildGuard::new("gitea", child));
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && curl(&["-sf", &format!("{}/api/v1/version", self.url())]).is_some()
            {
                return;
            }
            self.server.as_mut().unwrap().assert_running();
            assert!(
                std::time::Instant::now() < deadline,
                "gitea did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The server's process id, while it runs (for the notification benchmark).
    #[allow(dead_code)]
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(|s| s.child.id())
    }

    /// Stops the server (its data stays); [`Gitea::restart`] starts it again.
    pub fn stop(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.terminate();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.serve();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("web.log")).unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A new API token of the admin user named `name` (Gitea makes tokens with basic auth
    /// only: a token cannot make another).
    pub fn create_token(&self, name: &str) -> String {
        let body = json!({"name": name, "scopes": ["all"]}).to_string();
        let out = curl(&[
            "-sf",
            "-u",
            &format!("{USER}:{PASSWORD}"),
            "-H",
            "Content-Type: application/json",
            "-d",
            &body,
            &format!("{}/api/v1/users/{USER}/tokens", self.url()),
        ])
        .expect("create a Gitea token");
        let v: Value = serde_json::from_str(&out).unwrap();
        v["sha1"].as_str().expect("token").to_string()
    }

    /// Deletes the admin user's token `name`.
    pub fn delete_token(&self, name: &str) {
        curl(&[
            "-sf",
            "-X",
            "DELETE",
            "-u",
            &format!("{USER}:{PASSWORD}"),
            &format!("{}/api/v1/users/{USER}/tokens/{name}", self.url()),
        ])
        .expect("delete a Gitea token");
    }

    /// `GET`/`POST` on the API with the admin token.
    pub fn api(&self, method: &str, path: &str, body: Option<Value>) -> Option<Value> {
        let url = format!("{}/api/v1{path}", self.url());
        let auth = format!("Authorization: token {}", self.token);
        let mut args = vec![
            "-sf",
            "-X",
            method,
            "-H",
            &auth,
            "-H",
            "Content-Type: application/json",
        ];
        let body = body.map(|b| b.to_string());
        if let Some(b) = &body {
            args.extend(["-d", b.as_str()]);
        }
        args.push(&url);
        curl(&args).map(|out| serde_json::from_str(&out).unwrap_or(Value::Null))
    }

    /// The public clone URL of `repo` (owned by the admin user).
    pub fn clone_url(&self, repo: &str) -> String {
        format!("{}/{USER}/{repo}.git", self.url())
    }

    fn push_url(&self, repo: &str) -> String {
        format!(
            "http://{USER}:{}@127.0.0.1:{}/{USER}/{repo}.git",
            self.token, self.port
        )
    }

    /// A public repository with `files` on `main`; returns the commit.
    pub fn create_repo(&self, repo: &str, files: &[(&str, &str)]) -> String {
        self.api(
            "POST",
            "/user/repos",
            Some(json!({"name": repo, "private": false, "default_branch": "main"})),
        )
        .expect("create the repository");
        let work = tempfile::tempdir().unwrap();
        git(work.path(), &["init", "-q", "-b", "main"]);
        self.commit(work.path(), files, "initial", repo)
    }

    /// Clones `repo`, writes `files`, commits and pushes; returns the commit.
    pub fn push(&self, repo: &str, files: &[(&str, &str)], message: &str) -> String {
        let work = tempfile::tempdir().unwrap();
        git(work.path(), &["clone", "-q", &self.clone_url(repo), "."]);
        self.commit(work.path(), files, message, repo)
    }

    fn commit(&self, work: &Path, files: &[(&str, &str)], message: &str, repo: &str) -> String {
        self.commit_on(work, files, message, repo, "main")
    }

    /// Writes `files` in `work`, commits them and pushes to `branch`; returns the commit.
    fn commit_on(
        &self,
        work: &Path,
        files: &[(&str, &str)],
        message: &str,
        repo: &str,
        branch: &str,
    ) -> String {
        for (path, text) in files {
            let p = work.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        git(work, &["add", "-A"]);
        git(
            work,
            &[
                "-c",
                "user.name=Dev",
                "-c",
                "user.email=dev@example.test",
                "commit",
                "-q",
                "-m",
                message,
            ],
        );
        git(
            work,
            &[
                "push",
                "-q",
                &self.push_url(repo),
                &format!("HEAD:{branch}"),
            ],
        );
        git(work, &["rev-parse", "HEAD"]).trim().to_string()
    }

    /// Commits `files` (written) and `removed` (deleted) on `branch` (made from main when
    /// new) and pushes it; returns the commit.
    pub fn push_branch(
        &self,
        repo: &str,
        branch: &str,
        files: &[(&str, &str)],
        removed: &[&str],
        message: &str,
    ) -> String {
        let work = tempfile::tempdir().unwrap();
        let w = work.path();
        git(w, &["clone", "-q", &self.clone_url(repo), "."]);
        let exists = git(w, &["ls-remote", "--heads", "origin", branch]);
        let from = if exists.trim().is_empty() {
            "origin/main".to_string()
        } else {
            format!("origin/{branch}")
        };
        git(w, &["checkout", "-q", "-B", branch, &from]);
        for path in removed {
            std::fs::remove_file(w.join(path)).unwrap();
        }
        self.commit_on(w, files, message, repo, branch)
    }

    /// Opens a pull request of `head` into `base`; returns its number.
    pub fn open_pull(&self, repo: &str, head: &str, base: &str) -> u64 {
        let pr = self
            .api(
                "POST",
                &format!("/repos/{USER}/{repo}/pulls"),
                Some(json!({"head": head, "base": base, "title": format!("Change {head}")})),
            )
            .expect("open the pull request");
        pr["number"].as_u64().expect("a pull request number")
    }

    /// The comments of issue or pull request `number`: (id, body), oldest first.
    pub fn comments(&self, repo: &str, number: u64) -> Vec<(u64, String)> {
        self.api(
            "GET",
            &format!("/repos/{USER}/{repo}/issues/{number}/comments"),
            None,
        )
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            (
                c["id"].as_u64().unwrap_or_default(),
                c["body"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
    }

    /// Every status of `commit` as the forge lists it, oldest first: (context, state,
    /// description).
    pub fn statuses(&self, repo: &str, commit: &str) -> Vec<(String, String, String)> {
        let v = self
            .api(
                "GET",
                &format!("/repos/{USER}/{repo}/statuses/{commit}?limit=50&sort=oldest"),
                None,
            )
            .unwrap_or(Value::Null);
        let mut out: Vec<(i64, (String, String, String))> = v
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| {
                        (
                            s["id"].as_i64().unwrap_or_default(),
                            (
                                s["context"].as_str().unwrap_or_default().to_string(),
                                s["status"].as_str().unwrap_or_default().to_string(),
                                s["description"].as_str().unwrap_or_default().to_string(),
                            ),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by_key(|(id, _)| *id);
        out.into_iter().map(|(_, s)| s).collect()
    }
}

impl Drop for Gitea {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `curl` (the system's): the body on success, `None` on an HTTP error.
fn curl(args: &[&str]) -> Option<String> {
    let out = Command::new("curl").args(args).output().expect("run curl");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}
