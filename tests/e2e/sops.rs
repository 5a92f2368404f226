//! SOPS-encrypted manifests with the real `sops` and age keys (both built from their Go
//! modules): an encrypted Secret and an encrypted ConfigMap apply decrypted with the keys
//! of a Secret named by the Application; the plaintext is nowhere else — not in a file
//! under the controller's data directory or the temporary directory, not in its log, an
//! Event, the Application's status or `gantry diff`'s output. A wrong key, or no
//! `spec.decryption`, stops the sync with DecryptionFailed naming the file, and nothing of
//! the set is applied (no ciphertext either).

use std::process::Command;
use std::time::{Duration, SystemTime};

use gantry::api::Application;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::support::app::{condition, create_source_and_app, wait_synced_healthy};
use crate::support::cluster::{TestNamespace, client, install_crds};
use crate::support::controller::GantryController;
use crate::support::eventually;
use crate::support::git::GitServer;
use crate::support::process::{output_with_stdin, tool};

/// A new age identity: (the `AGE-SECRET-KEY-1…` line, its recipient).
fn age_identity() -> (String, String) {
    let out = Command::new(tool("age-keygen")).output().unwrap();
    assert!(out.status.success(), "age-keygen: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let secret = text
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .unwrap()
        .to_string();
    let recipient = text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .unwrap()
        .to_string();
    (secret, recipient)
}

/// `plaintext` encrypted to `recipient` by sops (read from its standard input: the plain
/// manifest never touches a file).
fn encrypt(plaintext: &str, recipient: &str, regex: &str) -> String {
    encrypt_to(plaintext, &["--age", recipient], None, regex)
}

/// `plaintext` encrypted by sops to the recipients `to` (`--age …` or `--pgp …`), with
/// GnuPG's home `gnupg` for OpenPGP recipients.
fn encrypt_to(
    plaintext: &str,
    to: &[&str],
    gnupg: Option<&std::path::Path>,
    regex: &str,
) -> String {
    let mut args = vec!["--encrypt"];
    args.extend(to);
    args.extend(["--encrypted-regex", regex]);
    args.extend(["--input-type", "yaml", "--output-type", "yaml"]);
    let text = sops(&args, gnupg, plaintext);
    assert!(!text.contains(plaintext.lines().last().unwrap().trim()));
    text
}

async fn key_secret(client: &kube::Client, ns: &str, name: &str, identity: &str) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let s: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
        "data": {"age.agekey": ByteString(identity.as_bytes().to_vec())}
    }))
    .unwrap();
    secrets.create(&PostParams::default(), &s).await.unwrap();
}

/// Files under `dir` changed since `since` that contain `needle`.
fn files_containing(dir: &std::path::Path, needle: &str, since: SystemTime) -> Vec<String> {
    let mut found = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() && !meta.file_type().is_symlink() {
                stack.push(e.path());
            } else if meta.is_file()
                && meta.len() < 16 * 1024 * 1024
                && meta.modified().is_ok_and(|m| m >= since)
                && std::fs::read(e.path())
                    .is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
            {
                found.push(e.path().display().to_string());
            }
        }
    }
    found
}

#[tokio::test]
async fn encrypted_manifests_apply_decrypted_and_the_plaintext_is_nowhere_else() {
    let started = SystemTime::now();
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "sops").await;
    let controller = GantryController::start(&ns.name);
    let (identity, recipient) = age_identity();
    // Unique plaintexts, so a match anywhere is this test's leak.
    let suffix = &ns.name[ns.name.len() - 6..];
    let password = format!("pw-{suffix}-hunter2");
    let api_key = format!("key-{suffix}-correct-horse");
    let secret = encrypt(
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: {password}\n"
        ),
        &recipient,
        "^(data|stringData)$",
    );
    let config = encrypt(
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  apiKey: {api_key}\n"
        ),
        &recipient,
        "^data$",
    );
    let server = GitServer::start();
    let head = server.create_repo(
        "app",
        &[
            ("deploy/db.enc.yaml", secret.as_str()),
            ("deploy/settings.enc.yaml", config.as_str()),
            (
                "deploy/plain.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: plain\ndata:\n  a: b\n",
            ),
        ],
    );
    key_secret(&client, &ns.name, "sops-keys", &identity).await;
    create_source_and_app(
        &client,
        &ns.name,
        "app",
        &server.file_url("app"),
        json!({"path": "deploy", "drift": {"mode": "audit"},
               "decryption": {"provider": "sops", "secretRef": {"name": "sops-keys"}}}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    wait_synced_healthy(&apps, "app", &head).await;

    // Applied decrypted.
    let db = Api::<Secret>::namespaced(client.clone(), &ns.name)
        .get("db")
        .await
        .unwrap();
    assert_eq!(
        db.data.unwrap()["password"].0,
        password.as_bytes(),
        "the Secret holds the plaintext"
    );
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let settings = cms.get("settings").await.unwrap();
    assert_eq!(settings.data.unwrap()["apiKey"], api_key);
    assert_eq!(
        settings.metadata.annotations.unwrap()["gantry.dev/decrypted"],
        "sops"
    );

    // A hand edit, so `gantry diff` has something to show for both.
    cms.patch(
        "settings",
        &PatchParams {
            field_manager: Some("kubectl-edit".into()),
            ..Default::default()
        },
        &Patch::Merge(json!({"data": {"apiKey": "edited-by-hand"}})),
    )
    .await
    .unwrap();
    let diff = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args([
            "diff",
            "--app",
            &format!("{}/app", ns.name),
            "--color",
            "never",
        ])
        .env("KUBECONFIG", crate::support::cluster::kubeconfig_path())
        .env("PATH", crate::support::controller::path_with_tools())
        .output()
        .unwrap();
    let diff_text = format!(
        "{}{}",
        String::from_utf8_lossy(&diff.stdout),
        String::from_utf8_lossy(&diff.stderr)
    );
    assert_eq!(diff.status.code(), Some(1), "{diff_text}");
    assert!(diff_text.contains("apiKey: '*** (before)'"), "{diff_text}");

    // Nowhere else: files (the data directory, the temporary directory), the log, Events,
    // the status, the diff.
    for needle in [&password, &api_key] {
        assert!(
            !diff_text.contains(needle.as_str()),
            "the diff shows {needle}"
        );
        let files = files_containing(controller.data_dir(), needle, started);
        assert!(files.is_empty(), "{needle} in {files:?}");
        let tmp = files_containing(&std::env::temp_dir(), needle, started);
        assert!(tmp.is_empty(), "{needle} in {tmp:?}");
        assert!(
            !controller.log().contains(needle.as_str()),
            "{needle} logged"
        );
        let status = serde_json::to_string(&apps.get("app").await.unwrap().status).unwrap();
        assert!(!status.contains(needle.as_str()), "{needle} in the status");
        let events = Api::<Event>::namespaced(client.clone(), &ns.name)
            .list(&ListParams::default())
            .await
            .unwrap();
        let events = serde_json::to_string(&events.items).unwrap();
        assert!(!events.contains(needle.as_str()), "{needle} in an Event");
    }
}

/// A dotenv file encrypted to `recipient` by sops.
fn sops_dotenv(plaintext: &str, recipient: &str) -> String {
    let dotenv = ["--input-type", "dotenv", "--output-type", "dotenv"];
    sops(
        &[&["--encrypt", "--age", recipient][..], &dotenv].concat(),
        None,
        plaintext,
    )
}

/// Runs sops with `args` on `input` given on its standard input (with GnuPG's home
/// `gnupg`, if any); fails the test when it fails; returns its output.
fn sops(args: &[&str], gnupg: Option<&std::path::Path>, input: &str) -> String {
    let mut command = Command::new(tool("sops"));
    if let Some(home) = gnupg {
        command.env("GNUPGHOME", home);
    }
    let out = output_with_stdin(command.args(args).arg("/dev/stdin"), input.as_bytes());
    assert!(out.status.success(), "sops: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// A GnuPG home with a new key that can encrypt (ed25519 and a cv25519 subkey), protected
/// by `passphrase` when it is not empty: (its fingerprint, the armored secret key).
fn gpg_encryption_key(home: &std::path::Path, passphrase: &str) -> (String, String) {
    use crate::support::gpg;
    let uid = "Ops <ops@example.com>";
    let fingerprint = gpg::new_key(home, uid, "default", "default", passphrase);
    let secret = gpg::gpg(
        home,
        passphrase,
        &["--armor", "--export-secret-keys", &fingerprint],
    );
    (fingerprint, secret)
}

#[tokio::test]
async fn an_openpgp_key_decrypts_and_one_with_a_passphrase_is_refused_by_name() {
    let started = SystemTime::now();
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "sops-pgp").await;
    let controller = GantryController::start(&ns.name);
    let home = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        home.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let (fingerprint, secret_key) = gpg_encryption_key(home.path(), "");
    let suffix = &ns.name[ns.name.len() - 6..];
    let token = format!("pgp-{suffix}-tr0ub4dor");
    let secret = encrypt_to(
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: api\nstringData:\n  token: {token}\n"
        ),
        &["--pgp", &fingerprint],
        Some(home.path()),
        "^(data|stringData)$",
    );
    let server = GitServer::start();
    let head = server.create_repo("app", &[("deploy/api.enc.yaml", secret.as_str())]);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let keys: Secret = serde_json::from_value(json!({
        "metadata": {"name": "pgp-keys"},
        "data": {"ops.asc": ByteString(secret_key.into_bytes())}
    }))
    .unwrap();
    secrets.create(&PostParams::default(), &keys).await.unwrap();
    create_source_and_app(
        &client,
        &ns.name,
        "app",
        &server.file_url("app"),
        json!({"path": "deploy",
               "decryption": {"provider": "sops", "secretRef": {"name": "pgp-keys"}}}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    wait_synced_healthy(&apps, "app", &head).await;
    let applied = secrets.get("api").await.unwrap();
    assert_eq!(applied.data.unwrap()["token"].0, token.as_bytes());
    // Neither the plaintext nor the key's keyring stays in a file.
    for dir in [controller.data_dir().to_path_buf(), std::env::temp_dir()] {
        let found = files_containing(&dir, &token, started);
        assert!(found.is_empty(), "the plaintext is in {found:?}");
    }
    assert!(!controller.log().contains(&token));

    // A key protected by a passphrase: refused, naming the Secret's key, nothing applied.
    let locked_home = tempfile::tempdir().unwrap();
    let (_, locked) = gpg_encryption_key(locked_home.path(), "s3cret-phrase");
    let keys: Secret = serde_json::from_value(json!({
        "metadata": {"name": "locked-keys"},
        "data": {"locked.asc": ByteString(locked.into_bytes())}
    }))
    .unwrap();
    secrets.create(&PostParams::default(), &keys).await.unwrap();
    apps.patch(
        "app",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"decryption": {"secretRef": {"name": "locked-keys"}}}})),
    )
    .await
    .unwrap();
    let ready = eventually(
        "DecryptionFailed for the protected key",
        Duration::from_secs(60),
        || async {
            let app = apps.get("app").await.ok()?;
            condition(&app, "Ready").filter(|c| c.reason == "DecryptionFailed")
        },
    )
    .await;
    assert!(
        ready.message.contains("locked.asc") && ready.message.contains("passphrase"),
        "{ready:?}"
    );
}

#[tokio::test]
async fn a_wrong_key_or_no_keys_stop_the_sync_and_apply_nothing() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "sops-bad").await;
    let _controller = GantryController::start(&ns.name);
    let (_, recipient) = age_identity();
    let (other_identity, _) = age_identity();
    let secret = encrypt(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: never-applied\n",
        &recipient,
        "^(data|stringData)$",
    );
    let server = GitServer::start();
    let files = [
        ("deploy/db.enc.yaml", secret.as_str()),
        (
            "deploy/plain.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: plain\ndata:\n  a: b\n",
        ),
    ];
    server.create_repo("wrong", &files);
    server.create_repo("none", &files);
    // An encrypted dotenv file read by kustomize's secretGenerator: its Secret would hold
    // ciphertext, so the set is refused (such files are not decrypted).
    let dotenv = sops_dotenv("DB_PASSWORD=generated-never-applied\n", &recipient);
    server.create_repo(
        "dotenv",
        &[
            ("deploy/app.enc.env", dotenv.as_str()),
            (
                "deploy/kustomization.yaml",
                "resources: [plain.yaml]\nsecretGenerator:\n- name: generated\n  envs: [app.enc.env]\n",
            ),
            (
                "deploy/plain.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: plain-dotenv\ndata:\n  a: b\n",
            ),
        ],
    );
    key_secret(&client, &ns.name, "other-keys", &other_identity).await;
    create_source_and_app(
        &client,
        &ns.name,
        "wrong",
        &server.file_url("wrong"),
        json!({"path": "deploy", "decryption": {"provider": "sops", "secretRef": {"name": "other-keys"}}}),
    )
    .await;
    create_source_and_app(
        &client,
        &ns.name,
        "none",
        &server.file_url("none"),
        json!({"path": "deploy"}),
    )
    .await;
    create_source_and_app(
        &client,
        &ns.name,
        "dotenv",
        &server.file_url("dotenv"),
        json!({"path": "deploy"}),
    )
    .await;
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns.name);
    for (name, file, says) in [
        (
            "wrong",
            "deploy/db.enc.yaml",
            "none of the Secret's keys can decrypt it",
        ),
        ("none", "deploy/db.enc.yaml", "sets no spec.decryption"),
        ("dotenv", "Secret generated-", "holds SOPS ciphertext"),
    ] {
        let ready = eventually(
            &format!("{name}: DecryptionFailed"),
            Duration::from_secs(60),
            || async {
                let app = apps.get(name).await.ok()?;
                condition(&app, "Ready").filter(|c| c.reason == "DecryptionFailed")
            },
        )
        .await;
        assert_eq!(ready.status, "False");
        assert!(
            ready.message.contains(file) && ready.message.contains(says),
            "{name}: {}",
            ready.message
        );
    }
    // Nothing of either set was applied: neither the plain ConfigMap nor any ciphertext.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    assert!(cms.get_opt("plain").await.unwrap().is_none());
    assert!(cms.get_opt("plain-dotenv").await.unwrap().is_none());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    assert!(secrets.get_opt("db").await.unwrap().is_none());
}
