//! A loopback HTTP server that records every request (method, path, headers, body) and
//! answers 200 (or what a test's responder says), for the webhook, chat and provider
//! notification tests.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Lower-case header names.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

/// What the sink answers to one request.
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    /// Waited before answering.
    pub delay: std::time::Duration,
    pub headers: Vec<(&'static str, String)>,
}

impl Answer {
    pub fn ok(body: &str) -> Self {
        Answer {
            status: 200,
            body: body.as_bytes().to_vec(),
            delay: std::time::Duration::ZERO,
            headers: Vec::new(),
        }
    }

    // The provider tests (tests/notify_providers.rs) use it; the e2e tests do not.
    #[allow(dead_code)]
    pub fn status(status: u16, body: &str) -> Self {
        Answer {
            status,
            ..Answer::ok(body)
        }
    }
}

type Responder = dyn Fn(&Recorded) -> Answer + Send + Sync;

pub struct WebhookSink {
    pub port: u16,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

impl WebhookSink {
    pub fn start() -> Self {
        Self::start_with(|_| Answer::ok("ok"))
    }

    /// A sink that answers each request as `responder` says (each connection on a thread
    /// of its own).
    pub fn start_with(responder: impl Fn(&Recorded) -> Answer + Send + Sync + 'static) -> Self {
        let responder: Arc<Responder> = Arc::new(responder);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests: Arc<Mutex<Vec<Recorded>>> = Default::default();
        let sink = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let sink = sink.clone();
                let responder = responder.clone();
                std::thread::spawn(move || serve(stream, &sink, &*responder));
            }
        });
        Self { port, requests }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve(mut stream: std::net::TcpStream, sink: &Mutex<Vec<Recorded>>, responder: &Responder) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let recorded = Recorded {
        method,
        path,
        headers,
        body,
    };
    let answer = responder(&recorded);
    sink.lock().unwrap().push(recorded);
    std::thread::sleep(answer.delay);
    let extra: String = answer
        .headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let _ = write!(
        stream,
        "HTTP/1.1 {} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        answer.status,
        answer.body.len()
    );
    let _ = stream.write_all(&answer.body);
}
