//! What a hostile tenant brings, shared by the isolation tests and the noisy-neighbour
//! bench: a ConfigMap large enough to make a nested CEL rule costly, a PreSync hook that
//! never finishes, and a Git server that accepts connections and never answers.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

/// A CEL rule nesting two macros over a ConfigMap's data (costly on [`big_configmap`]).
pub const COSTLY_RULE: &str = "data.all(a, data.all(b, a != b || a == b))";

/// A PreSync hook Job that never finishes (it is suspended).
pub const STUCK_PRESYNC_JOB: &str = "apiVersion: batch/v1\nkind: Job\nmetadata:\n  generateName: wait-\n  annotations:\n    argocd.argoproj.io/hook: PreSync\nspec:\n  suspend: true\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: w\n        image: registry.example.com/wait:1\n";

/// A ConfigMap `big` with `keys` keys.
pub fn big_configmap(keys: usize) -> String {
    let mut big = String::from("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: big\ndata:\n");
    for i in 0..keys {
        big.push_str(&format!("  k{i}: v\n"));
    }
    big
}

/// What a silent server saw: connections accepted, open now, most open at once, closed by
/// the client.
#[derive(Default)]
pub struct Silence {
    pub accepted: AtomicUsize,
    pub open: AtomicUsize,
    pub most_open: AtomicUsize,
    pub closed: AtomicUsize,
}

/// A TCP server on loopback that accepts connections and never answers; it notices when a
/// client closes one.
pub fn silent_server() -> (u16, Arc<Silence>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Silence::default());
    let s = seen.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            s.accepted.fetch_add(1, SeqCst);
            let open = s.open.fetch_add(1, SeqCst) + 1;
            s.most_open.fetch_max(open, SeqCst);
            let s = s.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
                s.open.fetch_sub(1, SeqCst);
                s.closed.fetch_add(1, SeqCst);
            });
        }
    });
    (port, seen)
}
