//! GnuPG keys made in a test's own GnuPG home (Debian's `gpg`, installed by `make deps`).

use std::path::Path;
use std::process::Command;

/// Runs `gpg` in the home `home` (batch mode, the passphrase given on the command line);
/// fails the test when it fails; returns stdout.
pub fn gpg(home: &Path, passphrase: &str, args: &[&str]) -> String {
    let out = Command::new("gpg")
        .env("GNUPGHOME", home)
        .args(["--batch", "--quiet", "--pinentry-mode", "loopback"])
        .args(["--passphrase", passphrase])
        .args(args)
        .output()
        .expect("gpg is installed (make deps)");
    assert!(out.status.success(), "gpg {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// A new key for `uid` in `home` (`algorithm` and `usage` as `--quick-gen-key` takes them),
/// protected by `passphrase` unless it is empty: its fingerprint.
pub fn new_key(home: &Path, uid: &str, algorithm: &str, usage: &str, passphrase: &str) -> String {
    gpg(
        home,
        passphrase,
        &["--quick-gen-key", uid, algorithm, usage, "never"],
    );
    gpg(home, passphrase, &["--with-colons", "--list-secret-keys"])
        .lines()
        .find_map(|l| l.strip_prefix("fpr:"))
        .map(|l| l.trim_matches(':').to_string())
        .expect("a fingerprint")
}
