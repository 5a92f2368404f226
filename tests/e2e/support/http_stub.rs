//! A tiny HTTP server on 127.0.0.1 for analysis checks: `/health` answers with a status the
//! test sets, `/api/v1/query` answers like the Prometheus HTTP API with a value the test
//! sets, `/metrics` exposes that value as the gauge `canary_errors` for a real Prometheus to
//! scrape. One request per connection.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};

pub struct HttpStub {
    pub port: u16,
    status: Arc<AtomicU16>,
    metric_bits: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl HttpStub {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let status = Arc::new(AtomicU16::new(200));
        let metric_bits = Arc::new(AtomicU64::new(0f64.to_bits()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, m, st) = (status.clone(), metric_bits.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request = String::new();
                if reader.read_line(&mut request).is_err() {
                    continue;
                }
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                        break;
                    }
                }
                let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
                let (code, body) = if path == "/metrics" {
                    let v = f64::from_bits(m.load(Ordering::SeqCst));
                    (
                        200,
                        format!("# TYPE canary_errors gauge\ncanary_errors {v}\n"),
                    )
                } else if path.starts_with("/api/v1/query") {
                    let v = f64::from_bits(m.load(Ordering::SeqCst));
                    (
                        200,
                        format!(
                            r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{}},"value":[1700000000.0,"{v}"]}}]}}}}"#
                        ),
                    )
                } else {
                    let code = s.load(Ordering::SeqCst);
                    (
                        code,
                        if code < 400 {
                            "ok\n".into()
                        } else {
                            "error\n".into()
                        },
                    )
                };
                let content_type = if path == "/metrics" {
                    "text/plain; version=0.0.4"
                } else {
                    "application/json"
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {code} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Self {
            port,
            status,
            metric_bits,
            stop,
        }
    }

    pub fn set_status(&self, code: u16) {
        self.status.store(code, Ordering::SeqCst);
    }

    pub fn set_metric(&self, v: f64) {
        self.metric_bits.store(v.to_bits(), Ordering::SeqCst);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for HttpStub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}
