//! Every parser of tenant input, fed generated input: an error or a value, never a panic
//! or a stack overflow. Manifests (depth, aliases, size), CEL health rules, kubeconfigs,
//! repository URLs (percent-encoding, Unicode, case), webhook bodies, chart archives and
//! Git trees. Bounded numbers of cases, so this runs in `make test`.

use std::path::Path;

use gantry::api::application::HealthCheck;
use gantry::api::receiver::ReceiverType;
use gantry::health::rules::Rules;
use gantry::render::sandbox::Limits;
use gantry::source::url_policy;
use hmac::Mac;
use proptest::prelude::*;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Text from the characters parsers care about, plus any Unicode.
fn hostile_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,200}",
        "[(){}\\[\\]!&|.,:*'\"%\\-a-z0-9 \\n]{0,300}",
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(config(300))]

    #[test]
    fn urls_are_judged_without_panicking(url in prop_oneof![
        hostile_text(),
        "(file|FILE|File|https|http|ssh)://[a-zA-Z0-9%./@:_\\-\u{2024}\u{ff0e}]{0,80}",
    ]) {
        let _ = url_policy::check(&url, true);
        let _ = url_policy::redact(&url);
        let root = std::env::temp_dir();
        if let Ok(()) = url_policy::check_file_root(&url, Some(&root), Path::new("/var/lib/gantry-data")) {
            // What passes names a path under the root, with nothing for libgit2 to decode.
            if let Some((scheme, path)) = url.split_once("://")
                && scheme.eq_ignore_ascii_case("file")
            {
                prop_assert!(!path.contains('%'));
            }
        }
    }

    #[test]
    fn percent_encoded_climbs_never_pass(prefix in "[a-z]{0,5}", n in 1usize..6, upper in any::<bool>()) {
        let dots = if upper { "%2E%2E" } else { "%2e%2e" };
        let url = format!("file://{}/{prefix}/{}etc", std::env::temp_dir().display(), format!("{dots}/").repeat(n));
        prop_assert!(url_policy::check_file_root(&url, Some(&std::env::temp_dir()), Path::new("/nonexistent")).is_err());
    }

    #[test]
    fn cel_rules_compile_or_fail_cleanly(rule in prop_oneof![
        hostile_text(),
        (1usize..400).prop_map(|n| format!("{}true{}", "(".repeat(n), ")".repeat(n))),
        (1usize..400).prop_map(|n| format!("{}true", "!".repeat(n))),
        (1usize..5).prop_map(|n| (0..n).fold("x > 0".to_string(), |acc, i| format!("l{i}.all(x, {acc})"))),
        (1usize..300).prop_map(|n| format!("[{}]", vec!["[1]"; n].join(","))),
    ]) {
        // On a thread with a small stack, as an async worker's.
        let outcome = std::thread::Builder::new()
            .stack_size(512 * 1024)
            .spawn(move || {
                let check = HealthCheck {
                    api_version: "example.com/v1".into(),
                    kind: "Widget".into(),
                    current: rule,
                    in_progress: None,
                    failed: None,
                };
                if let Ok(rules) = Rules::compile(&[check]) {
                    let items: Vec<i64> = (0..2000).collect();
                    let _ = rules.assess("example.com", "Widget", &serde_json::json!({"status": {"items": items}}));
                }
            })
            .unwrap()
            .join();
        prop_assert!(outcome.is_ok(), "compiling or evaluating panicked");
    }

    #[test]
    fn manifests_parse_within_limits(doc in prop_oneof![
        hostile_text(),
        (1usize..3000).prop_map(|n| format!("{}1{}", "[".repeat(n), "]".repeat(n))),
        (1usize..3000).prop_map(|n| "- ".repeat(n) + "x"),
        (1usize..12).prop_map(|n| {
            // a billion-laughs alias bomb
            let mut s = String::from("a: &a [x, x, x, x, x, x, x, x, x]\n");
            for i in 0..n {
                let prev = if i == 0 { "a".to_string() } else { format!("a{}", i - 1) };
                s.push_str(&format!("a{i}: &a{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
            }
            s
        }),
    ]) {
        let limits = Limits::default();
        let text = doc.clone();
        let outcome = std::thread::Builder::new()
            .stack_size(512 * 1024)
            .spawn(move || {
                let mut out = vec![];
                let _ = gantry::render::plain::parse_documents("generated.yaml", &text, &limits, &mut out);
            })
            .unwrap()
            .join();
        prop_assert!(outcome.is_ok(), "parsing panicked");
    }

    #[test]
    fn kubeconfigs_are_refused_or_accepted_cleanly(text in prop_oneof![
        hostile_text(),
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: [a-z:/0-9.]{0,40}\nusers:\n- name: u\n  user:\n    (exec|token|auth-provider|tokenFile): [a-z{}]{0,20}\n",
    ]) {
        let _ = gantry::cluster::kubeconfig::parse(&text);
    }

    #[test]
    fn webhook_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..2048), event in "[a-z_]{0,12}") {
        let secret = b"s3cret";
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
        mac.update(&body);
        let sig = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        for kind in [ReceiverType::Github, ReceiverType::Gitlab, ReceiverType::GenericHmac, ReceiverType::Registry] {
            let mut headers = http::HeaderMap::new();
            headers.insert("x-hub-signature-256", sig.parse().unwrap());
            headers.insert("x-signature", sig.parse().unwrap());
            headers.insert("x-gitlab-token", "s3cret".parse().unwrap());
            headers.insert("authorization", "Bearer s3cret".parse().unwrap());
            if let Ok(e) = event.parse() {
                headers.insert("x-github-event", e);
            }
            let _ = gantry::server::verify::verify(kind, secret, &headers, &body);
        }
    }
}

proptest! {
    #![proptest_config(config(40))]

    #[test]
    fn chart_archives_unpack_or_are_refused(
        entries in prop::collection::vec(("[a-z./]{1,30}", prop::collection::vec(any::<u8>(), 0..64), 0u8..4), 0..12),
        garbage in prop::collection::vec(any::<u8>(), 0..256),
        use_garbage in any::<bool>(),
    ) {
        let archive = if use_garbage {
            garbage
        } else {
            let mut b = tar::Builder::new(Vec::new());
            for (path, body, kind) in &entries {
                let mut h = tar::Header::new_gnu();
                let _ = h.set_path(path);
                h.set_size(body.len() as u64);
                h.set_entry_type(match kind {
                    0 => tar::EntryType::Regular,
                    1 => tar::EntryType::Directory,
                    2 => tar::EntryType::Symlink,
                    _ => tar::EntryType::Link,
                });
                let _ = h.set_link_name("../../etc/passwd");
                h.set_cksum();
                let _ = b.append(&h, body.as_slice());
            }
            let tar = b.into_inner().unwrap();
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut gz, &tar).unwrap();
            gz.finish().unwrap()
        };
        let chart = gantry::source::oci_chart::FetchedChart {
            reference: "oci://127.0.0.1/charts/x:1.0.0".into(),
            digest: "sha256:0".into(),
            archive,
        };
        let into = tempfile::tempdir().unwrap();
        if let Ok(dir) = gantry::source::oci_chart::unpack(&chart, into.path()) {
            prop_assert!(dir.starts_with(into.path()));
        }
        // Nothing was written outside the directory.
        prop_assert!(!into.path().parent().unwrap().join("etc/passwd").exists());
    }

    #[test]
    fn git_trees_are_walked_within_bounds(shape in prop::collection::vec((0usize..4, "[a-z.]{1,6}"), 1..40), deep in 0usize..400) {
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init_bare(dir.path()).unwrap();
        let blob = repo.blob(b"x").unwrap();
        // A random tree, then a chain `deep` levels deep above it.
        let mut b = repo.treebuilder(None).unwrap();
        for (i, (kind, name)) in shape.iter().enumerate() {
            let name = format!("{name}{i}");
            let _ = match kind {
                0 | 1 => b.insert(&name, blob, 0o100644),
                2 => b.insert(&name, blob, 0o120000),
                _ => b.insert(&name, repo.treebuilder(None).unwrap().write().unwrap(), 0o040000),
            };
        }
        let mut tree = b.write().unwrap();
        for _ in 0..deep {
            let mut b = repo.treebuilder(None).unwrap();
            b.insert("d", tree, 0o040000).unwrap();
            tree = b.write().unwrap();
        }
        let outcome = gantry::source::tree::walk(&repo, tree, Default::default(), |_, _| gantry::source::tree::Visit::Enter);
        if deep + 1 > gantry::source::tree::MAX_DEPTH {
            prop_assert!(outcome.is_err());
        }
    }
}
