//! A headless Chromium and a small Chrome DevTools Protocol client for the page tests (the
//! meeting client in browser.rs, the supervisor dashboard in dashboard.rs).
//!
//! Chromium is Debian's `chromium` (`make test` installs it; `PARLEY_CHROMIUM` overrides the
//! path). Without it a browser test fails: it does not skip. It is driven with
//! `Target.createTarget`, `Target.attachToTarget` with `flatten`, `Runtime.evaluate` and
//! `Page.captureScreenshot`; console lines, uncaught exceptions and JavaScript dialogs of each
//! page are kept for the failure reports (and for tests that must see none).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

/// Any single DevTools call.
const CDP_WAIT: Duration = Duration::from_secs(30);

/// Saves a page's screenshot as `target/test-artifacts/<name>` and prints where.
pub(crate) async fn save_screenshot(page: &Page, name: &str) {
    let png = page.screenshot().await;
    let dir = target_dir().join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("create target/test-artifacts");
    let path = dir.join(name);
    std::fs::write(&path, png).expect("write the screenshot");
    println!("screenshot of the {} page: {}", page.label, path.display());
}

/// Saves a page's screenshot at the window's 1280×800 and again at a 390×844 phone viewport
/// (`<name>-desktop.png`, `<name>-phone.png`).
pub(crate) async fn save_screenshots(page: &Page, name: &str) {
    save_screenshot(page, &format!("{name}-desktop.png")).await;
    let phone = json!({"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": true});
    page.call("Emulation.setDeviceMetricsOverride", phone).await.expect("phone viewport");
    // One frame for the layout to follow.
    tokio::time::sleep(Duration::from_millis(200)).await;
    save_screenshot(page, &format!("{name}-phone.png")).await;
    page.call("Emulation.clearDeviceMetricsOverride", json!({})).await.expect("desktop viewport");
}

pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Where build output goes: `CARGO_TARGET_DIR`, else the workspace's `target`.
pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// The Chromium binary: `PARLEY_CHROMIUM`, else `chromium` on the `PATH`.
fn chromium_path() -> PathBuf {
    if let Some(p) = std::env::var_os("PARLEY_CHROMIUM") {
        return PathBuf::from(p);
    }
    std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).map(|d| d.join("chromium")).find(|p| p.is_file()))
        .unwrap_or_else(|| {
            panic!(
                "Chromium not found: the browser test needs Debian's `chromium` package \
                 (`make test` installs it: apt-get install chromium) or PARLEY_CHROMIUM=<path>"
            )
        })
}

/// Chromium's command line (besides the profile directory and the first page).
const FLAGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--remote-debugging-port=0",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-gpu",
    "--window-size=1280,800",
    // A fake camera (a moving test pattern) and microphone (a beep), granted
    // without a permission prompt.
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--mute-audio",
    // WebRTC over loopback. The node's media peers listen on 127.0.0.1 only. Chrome leaves
    // loopback interfaces out of ICE gathering unless told otherwise; here it still connects
    // without this flag, from its eth0 address to the server's 127.0.0.1 candidate (a
    // peer-reflexive candidate for the server), but on a machine with no other interface it
    // would have nothing to connect from. With it, Chrome also gathers 127.0.0.1 and a
    // loopback pair is nominated too.
    "--allow-loopback-in-peer-connection",
    // Host candidates as IP addresses, not mDNS names the server cannot resolve. A page with
    // camera/microphone permission gets plain IPs anyway; this matters for a page without.
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    // Two pages at once: neither may be throttled as a background tab.
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
];

/// A headless Chromium with its own throwaway profile, killed on drop.
pub(crate) struct Chromium {
    child: Child,
    pub(crate) ws_url: String,
    /// Everything it wrote to stderr (for failure reports).
    pub(crate) stderr: Arc<Mutex<Vec<String>>>,
    _profile: tempfile::TempDir,
}

impl Chromium {
    pub(crate) fn launch() -> Chromium {
        Chromium::launch_with(&[])
    }

    /// With more command-line flags (e.g. `--use-file-for-fake-audio-capture=<wav>`: what this
    /// browser's fake microphone plays, looped).
    pub(crate) fn launch_with(extra: &[String]) -> Chromium {
        let path = chromium_path();
        let profile = tempfile::tempdir().expect("profile dir");
        let mut child = Command::new(&path)
            .args(FLAGS)
            .args(extra)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start Chromium ({}): {e}", path.display()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (url_tx, url_rx) = std::sync::mpsc::channel();
        let pipe = child.stderr.take().expect("chromium stderr");
        let lines = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = url_tx.send(url.trim().to_owned());
                }
                if let Ok(mut l) = lines.lock() {
                    l.push(line);
                }
            }
        });
        let ws_url = match url_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                let said = stderr.lock().map(|l| l.join("\n")).unwrap_or_default();
                panic!("Chromium ({}) printed no DevTools address within 30 s:\n{said}", path.display());
            }
        };
        Chromium { child, ws_url, stderr, _profile: profile }
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, String>>>>>;

/// A Chrome DevTools Protocol client over the browser's WebSocket: numbered calls (optionally
/// to one attached page's session), answered by a reader task that also keeps the pages'
/// console output.
pub(crate) struct Cdp {
    out: mpsc::UnboundedSender<Message>,
    pending: Pending,
    next_id: AtomicU64,
    /// (session id, line) for console messages and uncaught exceptions.
    console: Arc<Mutex<Vec<(String, String)>>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Cdp {
    pub(crate) async fn connect(url: &str) -> Cdp {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("connect to Chromium's DevTools");
        let (mut sink, mut stream) = ws.split();
        let (out, mut out_rx) = mpsc::unbounded_channel::<Message>();
        tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                if sink.send(m).await.is_err() {
                    break;
                }
            }
        });
        let pending: Pending = Arc::default();
        let console: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let (p, c) = (pending.clone(), console.clone());
        let reader = tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                let Message::Text(text) = msg else { continue };
                let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                if let Some(id) = v["id"].as_u64() {
                    let waiter = p.lock().ok().and_then(|mut p| p.remove(&id));
                    if let Some(w) = waiter {
                        let result = match v.get("error") {
                            Some(e) => Err(e.to_string()),
                            None => Ok(v["result"].clone()),
                        };
                        let _ = w.send(result);
                    }
                    continue;
                }
                let session = v["sessionId"].as_str().unwrap_or_default().to_owned();
                let line = match v["method"].as_str() {
                    Some("Runtime.consoleAPICalled") => {
                        let args: Vec<String> = v["params"]["args"]
                            .as_array()
                            .map(|a| {
                                a.iter()
                                    .map(|x| match (&x["value"], x["description"].as_str()) {
                                        (Value::String(s), _) => s.clone(),
                                        (Value::Null, Some(d)) => d.to_owned(),
                                        (other, _) => other.to_string(),
                                    })
                                    .collect()
                            })
                            .unwrap_or_default();
                        format!("console.{}: {}", v["params"]["type"].as_str().unwrap_or("log"), args.join(" "))
                    }
                    Some("Page.javascriptDialogOpening") => {
                        format!("dialog ({}): {}", v["params"]["type"], v["params"]["message"])
                    }
                    Some("Runtime.exceptionThrown") => {
                        let d = &v["params"]["exceptionDetails"];
                        format!("uncaught: {} {}", d["text"], d["exception"]["description"])
                    }
                    _ => continue,
                };
                if let Ok(mut c) = c.lock() {
                    c.push((session, line));
                }
            }
        });
        Cdp { out, pending, next_id: AtomicU64::new(1), console, reader }
    }

    /// Calls `method`, on a page's session if given; its `result`, or the error.
    pub(crate) async fn call(&self, session: Option<&str>, method: &str, params: Value) -> Result<Value, String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let (tx, rx) = oneshot::channel();
        self.pending.lock().map_err(|e| e.to_string())?.insert(id, tx);
        self.out.send(Message::Text(msg.to_string().into())).map_err(|_| "DevTools connection gone".to_owned())?;
        match tokio::time::timeout(CDP_WAIT, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(format!("{method}: DevTools connection closed")),
            Err(_) => Err(format!("{method}: no answer within {CDP_WAIT:?}")),
        }
    }

    pub(crate) fn console_of(&self, session: &str) -> Vec<String> {
        let lines = self.console.lock().map(|c| c.clone()).unwrap_or_default();
        lines.into_iter().filter(|(s, _)| s == session).map(|(_, l)| l).collect()
    }
}

impl Drop for Cdp {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// One tab, attached with a flat session.
pub(crate) struct Page {
    pub(crate) cdp: Arc<Cdp>,
    pub(crate) session: String,
    pub(crate) label: &'static str,
}

impl Page {
    pub(crate) async fn open(cdp: &Arc<Cdp>, url: &str, label: &'static str) -> Page {
        // A window of its own: a visible page, never a throttled background tab.
        let target = cdp
            .call(None, "Target.createTarget", json!({"url": "about:blank", "newWindow": true}))
            .await
            .expect("Target.createTarget");
        let target_id = target["targetId"].as_str().expect("targetId").to_owned();
        let attached = cdp
            .call(None, "Target.attachToTarget", json!({"targetId": target_id, "flatten": true}))
            .await
            .expect("Target.attachToTarget");
        let session = attached["sessionId"].as_str().expect("sessionId").to_owned();
        let page = Page { cdp: cdp.clone(), session, label };
        // Console capture from the first line of the page on.
        page.call("Runtime.enable", json!({})).await.expect("Runtime.enable");
        page.call("Page.enable", json!({})).await.expect("Page.enable");
        page.call("Page.navigate", json!({"url": url})).await.expect("Page.navigate");
        page
    }

    pub(crate) async fn call(&self, method: &str, params: Value) -> Result<Value, String> {
        self.cdp.call(Some(&self.session), method, params).await
    }

    /// Evaluates `expression` in the page (awaiting a promise); its value as JSON.
    pub(crate) async fn eval(&self, expression: &str) -> Result<Value, String> {
        let r = self
            .call("Runtime.evaluate", json!({"expression": expression, "awaitPromise": true, "returnByValue": true}))
            .await?;
        if let Some(e) = r.get("exceptionDetails") {
            return Err(format!("{expression}: {}", e["exception"]["description"].as_str().unwrap_or(&e.to_string())));
        }
        Ok(r["result"]["value"].clone())
    }

    /// Evaluates `expression` as if the user had clicked (APIs that need a gesture allow it).
    pub(crate) async fn gesture(&self, expression: &str) -> Result<Value, String> {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "awaitPromise": true, "returnByValue": true, "userGesture": true}),
            )
            .await?;
        match r.get("exceptionDetails") {
            Some(e) => Err(format!("{expression}: {e}")),
            None => Ok(r["result"]["value"].clone()),
        }
    }

    /// Polls `expression` until it is `true` (errors — the page still loading — count as not yet).
    pub(crate) async fn wait_for(&self, expression: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.eval(expression).await == Ok(json!(true)) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// Video frames this page decoded so far (0 while the page is not ready).
    pub(crate) async fn frames_decoded(&self) -> f64 {
        self.eval("window.parley ? window.parley.framesDecoded() : 0")
            .await
            .ok()
            .and_then(|v| v.as_f64())
            .unwrap_or(0.0)
    }

    /// Frames decoded of one received track (`<user>:<source>`).
    pub(crate) async fn frames_decoded_of(&self, track: &str) -> f64 {
        self.eval(&format!("window.parley.framesDecodedOf('{track}')"))
            .await
            .ok()
            .and_then(|v| v.as_f64())
            .unwrap_or(0.0)
    }

    pub(crate) async fn screenshot(&self) -> Vec<u8> {
        let _ = self.call("Page.bringToFront", json!({})).await;
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"})).await.expect("Page.captureScreenshot");
        base64_decode(shot["data"].as_str().expect("screenshot data"))
    }
}

/// Standard base64 (the screenshot's encoding), without pulling in a crate for it.
fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut value = [255u8; 256];
    for (i, c) in ALPHABET.iter().enumerate() {
        value[*c as usize] = i as u8;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|c| value[*c as usize] != 255) {
        acc = ((acc << 6) | u32::from(value[c as usize])) & 0xFFFF;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[test]
fn base64_decodes() {
    assert_eq!(base64_decode("aGVsbG8gd29ybGQ="), b"hello world");
    assert_eq!(base64_decode("iVBORw0KGgo="), b"\x89PNG\r\n\x1a\n");
}
