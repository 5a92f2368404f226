//! A real browser for the web view's tests: Debian's Chromium, headless, driven through
//! chromedriver over WebDriver; its console log and screenshots.

use std::process::{Command, Stdio};
use std::time::Duration;

use thirtyfour::common::capabilities::desiredcapabilities::CapabilitiesHelper;
use thirtyfour::prelude::*;

use super::eventually;
use super::process::{ChildGuard, free_port};

/// chromedriver on a free port, and a headless Chromium session through it.
pub async fn browser() -> (ChildGuard, WebDriver, tempfile::TempDir) {
    let port = free_port();
    let driver = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (make deps installs chromium-driver)");
    let guard = ChildGuard::new("chromedriver", driver);
    let profile = tempfile::tempdir().unwrap();
    let mut caps = DesiredCapabilities::chrome();
    caps.set_binary("/usr/bin/chromium").unwrap();
    for arg in [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,900",
    ] {
        caps.add_arg(arg).unwrap();
    }
    caps.add_arg(&format!("--user-data-dir={}", profile.path().display()))
        .unwrap();
    // The page's console, read back by `console_errors`.
    caps.set_base_capability("goog:loggingPrefs", serde_json::json!({"browser": "ALL"}))
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let session = eventually("chromedriver", Duration::from_secs(20), || {
        let (url, caps) = (url.clone(), caps.clone());
        async move { WebDriver::new(url, caps).await.ok() }
    })
    .await;
    (guard, session, profile)
}

pub fn screenshot_path(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// The text of the page at `url`'s `main`.
pub async fn main_text_at(driver: &WebDriver, url: String) -> String {
    driver.goto(url).await.unwrap();
    let main = driver.find(By::Css("main")).await.unwrap();
    main.text().await.unwrap()
}

/// (name, state) of each row of the fleet table, in page order.
pub async fn rows(driver: &WebDriver) -> Vec<(String, String)> {
    let mut out = vec![];
    for tr in driver
        .find_all(By::Css("tr[data-state]"))
        .await
        .unwrap_or_default()
    {
        let (Ok(Some(state)), Ok(link)) =
            (tr.attr("data-state").await, tr.find(By::Css("a")).await)
        else {
            continue;
        };
        out.push((link.text().await.unwrap_or_default(), state));
    }
    out
}

/// Chromium's legacy log endpoint (`/se/log`): the console messages since the last read.
#[derive(Debug)]
struct BrowserLog;

impl thirtyfour::common::command::FormatRequestData for BrowserLog {
    fn format_request(
        &self,
        session_id: &thirtyfour::SessionId,
    ) -> thirtyfour::common::requestdata::RequestData {
        thirtyfour::common::requestdata::RequestData::new(
            http::Method::POST,
            format!("session/{session_id}/se/log"),
        )
        .add_body(serde_json::json!({"type": "browser"}))
    }
}

/// The console's errors since the last call (a refused script, a failed request, an
/// exception), as their messages.
pub async fn console_errors(driver: &WebDriver) -> Vec<String> {
    let entries = driver
        .handle
        .cmd(BrowserLog)
        .await
        .unwrap()
        .value_json()
        .unwrap();
    entries
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["level"] == "SEVERE")
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Asserts that no JavaScript dialog (alert, confirm, prompt) is open.
pub async fn assert_no_dialog(driver: &WebDriver) {
    if let Ok(text) = driver.get_alert_text().await {
        panic!("a dialog opened: {text:?}");
    }
}
