//! A real browser for page tests: Debian's headless Chromium driven over WebDriver by
//! `chromedriver` (a child process on a free loopback port, its log captured) through the
//! fantoccini client.
//!
//! Usage:
//! ```ignore
//! let Some(browser) = common::browser::Browser::try_start().await else { return }; // skips
//! browser.goto(&format!("http://{addr}/")).await;
//! browser.wait_css("body[data-live=connected]", Duration::from_secs(15)).await;
//! let n = browser.js("return document.images.length", vec![]).await;
//! browser.screenshot(&common::browser::screenshot_dir().join("page.png")).await;
//! browser.close().await;
//! ```
//!
//! Without `/usr/bin/chromium` or `/usr/bin/chromedriver` [`Browser::try_start`] prints
//! `skipping: ...` and returns `None`, unless `CAMQTT_REQUIRE_BROWSER=1` (CI) makes that a
//! failure. Every failed wait or command panics with [`Browser::report`]: the page's URL and
//! HTML, the browser console and the tail of chromedriver's log.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value as Json, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::free_port;

/// Debian's Chromium launcher (package `chromium`).
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// Debian's ChromeDriver (package `chromium-driver`); its version matches the browser's.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The variable that turns a missing browser from a skip into a failure (set by CI's
/// `scripts/test.sh` once it has installed the packages).
pub const REQUIRE_VAR: &str = "CAMQTT_REQUIRE_BROWSER";

/// Chromium's switches for a headless run on a machine without network or GPU: no sandbox
/// (containers run as root), no `/dev/shm` (small in containers), and none of the background
/// traffic (QUIC, component updates, sync) that would wait on a closed network.
pub const CHROMIUM_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1000",
];

/// How often the `wait_*` helpers poll the page.
const POLL: Duration = Duration::from_millis(100);

/// How long chromedriver may take to answer `/status`, and the browser session to open.
const START: Duration = Duration::from_secs(30);

/// `<CARGO_MANIFEST_DIR>/target/screenshots`: where tests save the screenshots they keep
/// (created on demand by [`Browser::screenshot`]).
pub fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots")
}

/// True when `CAMQTT_REQUIRE_BROWSER=1`: the browser test must run, not skip.
pub fn required() -> bool {
    std::env::var(REQUIRE_VAR).is_ok_and(|v| v == "1")
}

/// A headless Chromium session behind a chromedriver child process. Dropping it kills
/// chromedriver's process group (chromedriver and the Chromium it started); [`Browser::close`]
/// ends the session cleanly first.
pub struct Browser {
    client: Client,
    /// chromedriver's port on 127.0.0.1.
    port: u16,
    session: String,
    driver: Option<Child>,
    /// chromedriver's logs and Chromium's profile (`--user-data-dir`).
    dir: tempfile::TempDir,
}

impl Browser {
    /// Start chromedriver and open a headless Chromium session; `None` (after printing
    /// `skipping: ...`) when Chromium or chromedriver is not installed. With
    /// `CAMQTT_REQUIRE_BROWSER=1` a missing browser panics instead. Panics when they are
    /// installed but do not start (with chromedriver's log).
    pub async fn try_start() -> Option<Browser> {
        let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
            .into_iter()
            .filter(|p| !Path::new(p).exists())
            .collect();
        if !missing.is_empty() {
            let what = format!(
                "{} not installed (Debian: apt-get install chromium chromium-driver)",
                missing.join(" and ")
            );
            if required() {
                panic!("{REQUIRE_VAR}=1 but {what}: the browser test must not skip here");
            }
            eprintln!("skipping: {what}");
            return None;
        }
        Some(Self::start().await)
    }

    /// Start chromedriver on a free port (a few ports are tried: another process may take the
    /// probed port first), wait until `/status` says ready, and open the session. Panics when
    /// it cannot, with chromedriver's log.
    pub async fn start() -> Browser {
        let dir = tempfile::tempdir().expect("tempdir");
        let profile = dir.path().join("profile");
        std::fs::create_dir(&profile).expect("profile dir");
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let mut driver = spawn_driver(dir.path(), port);
            match wait_ready(&mut driver, port).await {
                Ok(()) => {
                    return Self::open_session(dir, profile, port, driver).await;
                }
                Err(e) => {
                    last = e;
                    kill_group(&mut driver);
                }
            }
        }
        panic!(
            "chromedriver did not start: {last}\n{}",
            log_tail(dir.path(), 80)
        );
    }

    async fn open_session(
        dir: tempfile::TempDir,
        profile: PathBuf,
        port: u16,
        driver: Child,
    ) -> Browser {
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| a.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let caps = json!({
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
            // Keeps the page's console messages and errors for failure reports.
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let Json::Object(caps) = caps else {
            unreachable!()
        };
        let url = format!("http://127.0.0.1:{port}");
        let mut builder = ClientBuilder::new(HttpConnector::new());
        builder.capabilities(caps);
        let connect = builder.connect(&url);
        // From here on, a panic drops `partial` and so kills chromedriver and Chromium.
        let mut partial = Partial(Some(driver));
        let client = match tokio::time::timeout(START, connect).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => panic!(
                "no Chromium session from chromedriver: {e}\n{}",
                log_tail(dir.path(), 80)
            ),
            Err(_) => panic!(
                "no Chromium session from chromedriver within {START:?}\n{}",
                log_tail(dir.path(), 80)
            ),
        };
        let session = client
            .session_id()
            .await
            .ok()
            .flatten()
            .expect("WebDriver session id");
        Browser {
            client,
            port,
            session,
            driver: partial.0.take(),
            dir,
        }
    }

    /// The WebDriver client, for commands the helpers do not wrap.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Navigate to `url` and wait for its load event; panics with [`Browser::report`] on error.
    pub async fn goto(&self, url: &str) {
        if let Err(e) = self.client.goto(url).await {
            panic!("opening {url}: {e}\n{}", self.report().await);
        }
    }

    /// Run `script` as the body of a JavaScript function (`return` gives the value, `arguments`
    /// are `args`) and return its result as JSON; panics with [`Browser::report`] on a script
    /// error.
    pub async fn js(&self, script: &str, args: Vec<Json>) -> Json {
        match self.client.execute(script, args).await {
            Ok(v) => v,
            Err(e) => panic!(
                "script failed: {e}\nscript: {script}\n{}",
                self.report().await
            ),
        }
    }

    /// Poll until an element matches the CSS `selector`, every 100 ms until `within` has
    /// passed; returns the first match. Panics with `selector` and [`Browser::report`] when
    /// none appears in time.
    pub async fn wait_css(&self, selector: &str, within: Duration) -> Element {
        let end = tokio::time::Instant::now() + within;
        loop {
            let error = match self.client.find_all(Locator::Css(selector)).await {
                Ok(mut found) if !found.is_empty() => return found.swap_remove(0),
                Ok(_) => String::new(),
                Err(e) => format!(" (the last search failed: {e})"),
            };
            if tokio::time::Instant::now() >= end {
                panic!(
                    "no element matches `{selector}` after {within:?}{error}\n{}",
                    self.report().await
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Poll the JavaScript function body `script` (with `args` as `arguments`) every 100 ms
    /// until it returns a truthy value (not `null`, `false`, `0` or `""`), at most `within`;
    /// returns that value. `what` names the awaited condition in the panic message, which also
    /// carries the script's last value or error and [`Browser::report`].
    pub async fn wait_js(
        &self,
        what: &str,
        within: Duration,
        script: &str,
        args: Vec<Json>,
    ) -> Json {
        let end = tokio::time::Instant::now() + within;
        loop {
            let last = match self.client.execute(script, args.clone()).await {
                Ok(v) if truthy(&v) => return v,
                Ok(v) => format!("returned {v}"),
                // A page being replaced answers with an error for a moment: keep polling.
                Err(e) => format!("failed: {e}"),
            };
            if tokio::time::Instant::now() >= end {
                panic!(
                    "timed out after {within:?} waiting for {what}; the check last {last}\n\
                     check: {script}\nargs: {args:?}\n{}",
                    self.report().await
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The current document as HTML (`document.documentElement.outerHTML`, the live DOM with
    /// every change the page's scripts made).
    pub async fn html(&self) -> String {
        match self
            .client
            .execute("return document.documentElement.outerHTML", vec![])
            .await
        {
            Ok(Json::String(s)) => s,
            Ok(v) => format!("(unexpected outerHTML: {v})"),
            Err(e) => format!("(no HTML: {e})"),
        }
    }

    /// Save a PNG screenshot of the viewport to `path` (parent folders created); returns `path`.
    /// Panics when the browser gives none.
    pub async fn screenshot(&self, path: &Path) -> PathBuf {
        let png = match self.client.screenshot().await {
            Ok(png) => png,
            Err(e) => panic!("screenshot failed: {e}\n{}", self.report().await),
        };
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n"),
            "the screenshot is not a PNG"
        );
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("creating {}: {e}", parent.display()));
        }
        std::fs::write(path, &png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path.to_path_buf()
    }

    /// The browser console so far (messages and uncaught errors, one a line), as chromedriver
    /// keeps it (`goog:loggingPrefs`); each call returns only what came since the last.
    pub async fn console(&self) -> String {
        let path = format!("/session/{}/se/log", self.session);
        match driver_request(self.port, "POST", &path, r#"{"type":"browser"}"#).await {
            Ok(body) => match serde_json::from_str::<Json>(&body) {
                Ok(v) => match v["value"].as_array() {
                    Some(entries) => entries
                        .iter()
                        .map(|e| format!("{} {}", e["level"].as_str().unwrap_or("?"), e["message"]))
                        .collect::<Vec<_>>()
                        .join("\n"),
                    None => format!("(unexpected log answer: {body})"),
                },
                Err(e) => format!("(log answer not JSON: {e}: {body})"),
            },
            Err(e) => format!("(no console log: {e})"),
        }
    }

    /// Everything that explains a failure: the page's URL and live HTML, the browser console,
    /// the tail of chromedriver's log; also saves a screenshot to
    /// `target/screenshots/failure.png` (the path is in the text).
    pub async fn report(&self) -> String {
        let url = match self.client.current_url().await {
            Ok(u) => u.to_string(),
            Err(e) => format!("(unknown: {e})"),
        };
        let mut html = self.html().await;
        const MAX: usize = 60_000;
        if html.len() > MAX {
            let cut = html.floor_char_boundary(MAX);
            html.truncate(cut);
            html.push_str("\n... (cut)");
        }
        let shot = screenshot_dir().join("failure.png");
        let shot = match self.client.screenshot().await {
            Ok(png) => match std::fs::create_dir_all(screenshot_dir())
                .and_then(|()| std::fs::write(&shot, png))
            {
                Ok(()) => shot.display().to_string(),
                Err(e) => format!("(not saved: {e})"),
            },
            Err(e) => format!("(none: {e})"),
        };
        format!(
            "---- page {url}\n{html}\n---- browser console\n{}\n---- screenshot {shot}\n{}",
            self.console().await,
            log_tail(self.dir.path(), 60),
        )
    }

    /// The tail (`lines` lines) of chromedriver's log and output.
    pub fn driver_log(&self, lines: usize) -> String {
        log_tail(self.dir.path(), lines)
    }

    /// End the WebDriver session (Chromium quits), then stop chromedriver.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(10), self.client.clone().close()).await;
        if let Some(mut d) = self.driver.take() {
            kill_group(&mut d);
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(mut d) = self.driver.take() {
            kill_group(&mut d);
        }
    }
}

/// chromedriver before the session is open: killed (with its group) when a panic unwinds.
struct Partial(Option<Child>);

impl Drop for Partial {
    fn drop(&mut self) {
        if let Some(mut d) = self.0.take() {
            kill_group(&mut d);
        }
    }
}

/// JavaScript truthiness of a JSON value.
fn truthy(v: &Json) -> bool {
    match v {
        Json::Null => false,
        Json::Bool(b) => *b,
        Json::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Json::String(s) => !s.is_empty(),
        Json::Array(_) | Json::Object(_) => true,
    }
}

/// Start chromedriver on `127.0.0.1:<port>` in a process group of its own (so that the
/// Chromium it starts can be killed with it), its log in `dir/chromedriver.log` and its
/// stdout/stderr (with Chromium's) in `dir/chromedriver.out`.
fn spawn_driver(dir: &Path, port: u16) -> Child {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("chromedriver.out"))
        .expect("open chromedriver.out");
    Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .arg(format!(
            "--log-path={}",
            dir.join("chromedriver.log").display()
        ))
        .arg("--append-log")
        .arg("--readable-timestamp")
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("clone log handle"))
        .stderr(out)
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {CHROMEDRIVER}: {e}"))
}

/// Wait until chromedriver's `GET /status` says `"ready": true`; `Err` when it exits first
/// (port taken) or [`START`] passes.
async fn wait_ready(driver: &mut Child, port: u16) -> Result<(), String> {
    let end = tokio::time::Instant::now() + START;
    loop {
        if let Ok(Some(status)) = driver.try_wait() {
            return Err(format!("chromedriver exited: {status}"));
        }
        if let Ok(body) = driver_request(port, "GET", "/status", "").await
            && let Ok(v) = serde_json::from_str::<Json>(&body)
            && v["value"]["ready"] == Json::Bool(true)
        {
            return Ok(());
        }
        if tokio::time::Instant::now() >= end {
            return Err(format!("/status not ready within {START:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One HTTP/1.1 request to chromedriver, within 10 s; the response body on a 2xx status.
/// chromedriver keeps connections open whatever `Connection` says, so the body is read by its
/// `Content-Length` (which it always sends).
async fn driver_request(port: u16, method: &str, path: &str, body: &str) -> Result<String, String> {
    let exchange = async {
        let mut s = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(request.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut reply = Vec::new();
        let mut tmp = [0u8; 16384];
        loop {
            let text = String::from_utf8_lossy(&reply);
            if let Some((head, rest)) = text.split_once("\r\n\r\n") {
                let length = head.lines().find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                });
                let Some(length) = length else {
                    return Err(format!("no Content-Length in {head:?}"));
                };
                if rest.len() >= length {
                    let status = head.split_whitespace().nth(1).unwrap_or("").to_string();
                    return Ok((status, rest[..length].to_string()));
                }
            }
            match s.read(&mut tmp).await {
                Ok(0) => return Err("closed before the whole answer".to_string()),
                Ok(n) => reply.extend_from_slice(&tmp[..n]),
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    };
    let (status, body) = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| "no answer within 10 s".to_string())??;
    if !status.starts_with('2') {
        return Err(format!("HTTP {status}: {body}"));
    }
    Ok(body)
}

/// Kill chromedriver's process group (chromedriver and every Chromium process it started; the
/// group id is chromedriver's pid, see [`spawn_driver`]) and reap chromedriver.
fn kill_group(driver: &mut Child) {
    let _ = Command::new("kill")
        .arg("-KILL")
        .arg("--")
        .arg(format!("-{}", driver.id()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = driver.kill();
    let _ = driver.wait();
}

/// The last `lines` lines of chromedriver's log and of its output (where Chromium's stderr
/// goes), each under a heading, long lines cut.
fn log_tail(dir: &Path, lines: usize) -> String {
    let mut out = String::new();
    for name in ["chromedriver.log", "chromedriver.out"] {
        let text = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        // Every command logs these two; they crowd out what matters.
        let all: Vec<&str> = text
            .lines()
            .filter(|l| !l.contains("for pending navigations"))
            .collect();
        let from = all.len().saturating_sub(lines);
        out.push_str(&format!(
            "---- {name} (last {} of {} lines)\n",
            all.len() - from,
            all.len()
        ));
        for l in &all[from..] {
            // Command answers (screenshots, page sources) can be whole megabytes on one line.
            const WIDTH: usize = 400;
            if l.len() > WIDTH {
                out.push_str(&l[..l.floor_char_boundary(WIDTH)]);
                out.push_str(" ...");
            } else {
                out.push_str(l);
            }
            out.push('\n');
        }
    }
    out
}
