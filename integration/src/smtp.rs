//! A real SMTP server for tests, and a parser for the mails it (or a node) stored.
//!
//! [`SmtpSink::start`] runs `integration/scripts/smtp_sink.py` (Python's `aiosmtpd`) on a free
//! loopback port; every accepted message lands byte for byte in [`SmtpSink::dir`] as
//! `<seq>-<first recipient>.eml`. Recipients steer the outcome: a local part starting with
//! `bounce` is refused with `550 5.1.1` (permanent), one starting with `flaky` gets
//! `451 4.3.0` the first 3 times that exact address is given (per sink process), then it is
//! accepted; any other is accepted. AUTH PLAIN/LOGIN is offered without TLS and any
//! credentials pass; STARTTLS is not offered.
//!
//! [`SmtpSink::mails`] and [`ics_dump`] parse `.eml` files with
//! `integration/scripts/ics_dump.py` (Python's `email` and `icalendar`) into [`Mail`]s,
//! calendar invitations included.
//!
//! Environment: `PARLEY_SMTP_PYTHON`, a python3 that imports `aiosmtpd` and `icalendar`
//! (`scripts/services.sh` installs them and sets it); otherwise the `python3` on `PATH`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use serde::Deserialize;

/// How long a sink may take to print `ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// One stored mail, as `ics_dump.py` reads it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Mail {
    /// The `.eml` file's path.
    pub file: String,
    /// The `To` header's addresses (addr-specs, as written).
    pub to: Vec<String>,
    /// The `From` header, decoded (`Parley <noreply@…>`).
    pub from: Option<String>,
    /// The `Subject` header, decoded.
    pub subject: Option<String>,
    /// The `Message-ID` header, angle brackets included.
    pub message_id: Option<String>,
    /// The `X-Parley-Idempotency-Key` header.
    pub idempotency_key: Option<String>,
    /// Header names in order, repeated ones repeated.
    pub headers: Vec<String>,
    /// The decoded `text/plain` body.
    pub text: Option<String>,
    /// The decoded `text/html` body.
    pub html: Option<String>,
    /// The first `text/calendar` part (attachment or inline), parsed.
    pub ics: Option<Ics>,
    /// Why the calendar part did not parse (then `ics` is `None`).
    pub ics_error: Option<String>,
    /// Why the file could not be read or parsed at all.
    pub error: Option<String>,
}

/// A parsed iCalendar object.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Ics {
    /// `METHOD` (`REQUEST`, `CANCEL`, …).
    pub method: Option<String>,
    /// Every `VEVENT`, in order.
    pub events: Vec<IcsEvent>,
    /// The `TZID` of every `VTIMEZONE`.
    pub timezones: Vec<String>,
    /// The calendar's text as decoded from the mail.
    pub raw: String,
}

/// One `VEVENT`. Dates and times are ISO 8601 as Python writes them: a value with a `TZID`
/// carries its offset (`2025-01-06T09:00:00+01:00`), a UTC one `+00:00`, a floating one none,
/// an all-day one is a date (`2025-03-01`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct IcsEvent {
    pub uid: Option<String>,
    pub sequence: Option<i64>,
    pub summary: Option<String>,
    pub dtstart: Option<String>,
    /// `DTSTART`'s `TZID` parameter.
    pub tzid: Option<String>,
    pub dtend: Option<String>,
    /// The first `RRULE` as RFC 5545 text (`FREQ=WEEKLY;COUNT=4;BYDAY=MO,WE`).
    pub rrule: Option<String>,
    pub exdates: Vec<String>,
    pub recurrence_id: Option<String>,
    pub status: Option<String>,
    /// `ORGANIZER` as written (`mailto:org@…`).
    pub organizer: Option<String>,
    /// `ATTENDEE` addresses, lower-cased, without `mailto:`.
    pub attendees: Vec<String>,
    pub url: Option<String>,
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts").join(name)
}

/// The Python that runs the sink and the parser: `PARLEY_SMTP_PYTHON`, else the real executable
/// behind `python3` (not a pyenv shim, which would survive a kill of its child and keep the port).
pub fn smtp_python() -> PathBuf {
    if let Ok(p) = std::env::var("PARLEY_SMTP_PYTHON") {
        return PathBuf::from(p);
    }
    static RESOLVED: OnceLock<PathBuf> = OnceLock::new();
    RESOLVED
        .get_or_init(|| {
            Command::new("python3")
                .args(["-c", "import sys; print(sys.executable)"])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("python3"))
        })
        .clone()
}

/// Sinks using each directory: the directory is removed when the last of them is dropped.
fn dir_users() -> &'static Mutex<HashMap<PathBuf, usize>> {
    static USERS: OnceLock<Mutex<HashMap<PathBuf, usize>>> = OnceLock::new();
    USERS.get_or_init(Default::default)
}

/// A running `smtp_sink.py`, killed on drop.
pub struct SmtpSink {
    pub port: u16,
    /// Where accepted mail is stored (removed when the last sink on it is dropped).
    pub dir: PathBuf,
    child: Child,
}

impl SmtpSink {
    /// Starts a sink on a free port with a fresh directory.
    pub async fn start() -> SmtpSink {
        let dir = std::env::temp_dir().join(format!("parley-smtp-{}", uuid::Uuid::new_v4()));
        SmtpSink::start_on(crate::free_port(), dir).await
    }

    /// Starts a sink on `port` storing into `dir` (created if absent; mail already there is kept
    /// and numbering goes on after it): a server that was down coming back. The directory is
    /// removed only when every sink on it has been dropped, so a stopped sink kept alive keeps
    /// it; [`SmtpSink::restart`] does the same on one value.
    pub async fn start_on(port: u16, dir: PathBuf) -> SmtpSink {
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        *dir_users().lock().unwrap().entry(dir.clone()).or_insert(0) += 1;
        // Constructed before the spawn, so a failed start drops its claim on the directory.
        let mut sink = SmtpSink { port, dir, child: placeholder_child() };
        sink.child = spawn(port, sink.dir.clone()).await;
        sink
    }

    /// Starts the sink again on the same port and directory (stopping it first if it runs).
    pub async fn restart(&mut self) {
        self.stop();
        self.child = spawn(self.port, self.dir.clone()).await;
    }

    /// `smtp://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL) and waits for it; stored mail stays. Idempotent.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The sink's log so far (every start on this directory): what it accepted and refused.
    pub fn log(&self) -> String {
        std::fs::read_to_string(log_path(&self.dir)).unwrap_or_default()
    }

    /// The stored `.eml` files, sorted by name (arrival order).
    pub fn files(&self) -> Vec<PathBuf> {
        eml_files(&self.dir)
    }

    /// Every stored mail, parsed, in arrival order; empty if none.
    pub fn mails(&self) -> Vec<Mail> {
        ics_dump(&self.files())
    }

    /// Polls until at least `n` mails are stored or `timeout` passes; returns what is there.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Mail> {
        let deadline = Instant::now() + timeout;
        while self.files().len() < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.mails()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop();
        let mut users = dir_users().lock().unwrap_or_else(|e| e.into_inner());
        let last = match users.get_mut(&self.dir) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            _ => true,
        };
        if last {
            users.remove(&self.dir);
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// An already-reaped process standing in for the sink until it is spawned.
fn placeholder_child() -> Child {
    let mut child = Command::new("true").stdin(Stdio::null()).stdout(Stdio::null()).spawn().expect("spawn true");
    let _ = child.wait();
    child
}

fn log_path(dir: &Path) -> PathBuf {
    dir.join("smtp-sink.log")
}

fn eml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "eml") && p.is_file())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Spawns `smtp_sink.py` and waits for its `ready` line.
async fn spawn(port: u16, dir: PathBuf) -> Child {
    let log = log_path(&dir);
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
    let python = smtp_python();
    let mut child = Command::new(&python)
        .arg("-u")
        .arg(script("smtp_sink.py"))
        .arg("--port")
        .arg(port.to_string())
        .arg("--dir")
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn the SMTP sink with {}: {e}", python.display()));
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    // Reads stdout to the end, so the sink never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.trim() == "ready"
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(());
            }
        }
    });
    let ready = tokio::task::spawn_blocking(move || rx.recv_timeout(READY_TIMEOUT)).await.expect("join");
    if let Err(e) = ready {
        let _ = child.kill();
        let status = child.wait().ok();
        let why = match e {
            mpsc::RecvTimeoutError::Timeout => format!("no `ready` within {READY_TIMEOUT:?}"),
            mpsc::RecvTimeoutError::Disconnected => format!("it exited first ({status:?})"),
        };
        panic!(
            "the SMTP sink ({} {}) on 127.0.0.1:{port} did not start: {why} (run scripts/services.sh, which \
             installs aiosmtpd and icalendar and sets PARLEY_SMTP_PYTHON)\n--- sink log ---\n{}",
            python.display(),
            script("smtp_sink.py").display(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    child
}

/// Parses `.eml` files (any, e.g. ones a node wrote itself) with `ics_dump.py`, one [`Mail`] per
/// file in order. Panics if the script cannot run or prints no JSON.
pub fn ics_dump(files: &[PathBuf]) -> Vec<Mail> {
    if files.is_empty() {
        return Vec::new();
    }
    let python = smtp_python();
    let out = Command::new(&python)
        .arg(script("ics_dump.py"))
        .args(files)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run ics_dump.py with {}: {e}", python.display()));
    assert!(out.status.success(), "ics_dump.py failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "ics_dump.py printed no valid JSON ({e}): {}\n--- stderr ---\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpStream;

    /// One SMTP transaction by hand; returns the reply code to each recipient and to DATA.
    async fn send(url: &str, to: &[&str], body: &str) -> (Vec<u16>, Option<u16>) {
        let addr = url.trim_start_matches("smtp://");
        let (r, mut w) = TcpStream::connect(addr).await.expect("connect").into_split();
        let mut r = BufReader::new(r);
        async fn reply(r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> u16 {
            loop {
                let mut line = String::new();
                r.read_line(&mut line).await.expect("read");
                if line.as_bytes().get(3) != Some(&b'-') {
                    return line[..3].parse().expect("code");
                }
            }
        }
        assert_eq!(reply(&mut r).await, 220);
        w.write_all(b"EHLO test\r\n").await.unwrap();
        assert_eq!(reply(&mut r).await, 250);
        w.write_all(b"MAIL FROM:<noreply@parley.test>\r\n").await.unwrap();
        assert_eq!(reply(&mut r).await, 250);
        let mut codes = Vec::new();
        for t in to {
            w.write_all(format!("RCPT TO:<{t}>\r\n").as_bytes()).await.unwrap();
            codes.push(reply(&mut r).await);
        }
        let mut data = None;
        if codes.contains(&250) {
            w.write_all(b"DATA\r\n").await.unwrap();
            assert_eq!(reply(&mut r).await, 354);
            w.write_all(format!("{body}\r\n.\r\n").as_bytes()).await.unwrap();
            data = Some(reply(&mut r).await);
        }
        w.write_all(b"QUIT\r\n").await.unwrap();
        (codes, data)
    }

    const INVITE: &str = "From: Parley <noreply@parley.test>\r\nTo: alice@x.com\r\nSubject: Invite\r\n\
        X-Parley-Idempotency-Key: k1\r\nMIME-Version: 1.0\r\n\
        Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n\
        --b\r\nContent-Type: text/calendar; method=REQUEST; charset=utf-8\r\n\
        Content-Disposition: attachment; filename=invite.ics\r\n\r\n\
        BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//t//EN\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\nUID:u1\r\n\
        SEQUENCE:1\r\nDTSTAMP:20250101T000000Z\r\nDTSTART;TZID=Europe/Berlin:20250106T090000\r\n\
        RRULE:FREQ=WEEKLY;COUNT=4;BYDAY=MO,WE\r\nATTENDEE:mailto:Alice@X.com\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n\
        --b--";

    #[tokio::test]
    async fn sink_accepts_bounces_defers_and_comes_back() {
        let mut sink = SmtpSink::start().await;
        assert_eq!(send(&sink.url(), &["alice@x.com"], INVITE).await, (vec![250], Some(250)));
        assert_eq!(send(&sink.url(), &["bounce@x.com"], "Subject: b\r\n\r\nx").await, (vec![550], None));
        for _ in 0..3 {
            assert_eq!(send(&sink.url(), &["flaky@x.com"], "Subject: f\r\n\r\nx").await, (vec![451], None));
        }
        assert_eq!(send(&sink.url(), &["flaky@x.com"], "Subject: f\r\n\r\nx").await, (vec![250], Some(250)));
        let mails = sink.wait_for(2, Duration::from_secs(5)).await;
        assert_eq!(mails.len(), 2, "{}", sink.log());
        let m = &mails[0];
        assert_eq!(m.to, ["alice@x.com"]);
        assert_eq!(m.idempotency_key.as_deref(), Some("k1"));
        assert_eq!(m.text.as_deref().map(str::trim), Some("hello"));
        let ics = m.ics.as_ref().unwrap_or_else(|| panic!("no ics: {:?}", m.ics_error));
        assert_eq!(ics.method.as_deref(), Some("REQUEST"));
        let ev = &ics.events[0];
        assert_eq!((ev.uid.as_deref(), ev.sequence, ev.tzid.as_deref()), (Some("u1"), Some(1), Some("Europe/Berlin")));
        assert_eq!(ev.rrule.as_deref(), Some("FREQ=WEEKLY;COUNT=4;BYDAY=MO,WE"));
        assert_eq!(ev.dtstart.as_deref(), Some("2025-01-06T09:00:00+01:00"));
        assert_eq!(ev.attendees, ["alice@x.com"]);
        assert!(mails[1].file.ends_with("000002-flaky@x.com.eml"), "{}", mails[1].file);

        // Down: connections are refused; back on the same port and directory: mail is kept.
        sink.stop();
        assert!(TcpStream::connect(sink.url().trim_start_matches("smtp://")).await.is_err());
        sink.restart().await;
        assert_eq!(send(&sink.url(), &["bob@x.com"], "Subject: again\r\n\r\nx").await, (vec![250], Some(250)));
        let mails = sink.wait_for(3, Duration::from_secs(5)).await;
        assert_eq!(mails.len(), 3);
        assert!(mails[2].file.ends_with("000003-bob@x.com.eml"), "{}", mails[2].file);
        let dir = sink.dir.clone();
        drop(sink);
        assert!(!dir.exists());
    }
}
