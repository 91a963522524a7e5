//! Where composed messages go: an SMTP relay, or a directory of `.eml` files.

use std::path::PathBuf;
use std::time::Duration;

use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::sanitise_key;

/// How long one SMTP command may take before the attempt counts as failed (temporarily).
const SMTP_TIMEOUT: Duration = Duration::from_secs(20);

/// A failed send. `permanent` failures (an SMTP 5xx reply, a bad configuration) will fail the
/// same way again; the others (4xx replies, refused or dropped connections, time-outs, I/O
/// errors) are worth retrying later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct SendError {
    pub permanent: bool,
    /// What went wrong; for an SMTP reply, its code and text (`550 5.1.1 no such user`).
    pub reason: String,
}

impl SendError {
    fn temporary(reason: impl Into<String>) -> Self {
        SendError { permanent: false, reason: reason.into() }
    }

    fn from_smtp(e: &lettre::transport::smtp::Error) -> Self {
        let reason = match e.status() {
            Some(code) => match std::error::Error::source(e) {
                Some(text) => format!("{code} {text}"),
                None => code.to_string(),
            },
            None => e.to_string(),
        };
        SendError { permanent: e.is_permanent(), reason }
    }
}

/// A way to deliver messages.
#[derive(Debug, Clone)]
pub enum Transport {
    /// An SMTP relay.
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// A directory receiving one `<key>.eml` file per message (development, tests).
    EmlDir(PathBuf),
}

impl Transport {
    /// An SMTP relay from a URL: `smtp://host:port` (plain), `smtp://host:port?tls=required`
    /// (STARTTLS) or `smtps://host:port` (implicit TLS). `username` (with `password`, empty if
    /// absent) replaces any credentials in the URL. Every command times out after 20 s.
    ///
    /// Connections are pooled; the pool runs on the current Tokio runtime, so this must be called
    /// (and the transport dropped) inside one: outside, it returns a permanent error.
    pub fn smtp(url: &str, username: Option<&str>, password: Option<&str>) -> Result<Transport, SendError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(SendError {
                permanent: true,
                reason: "the SMTP transport must be created inside a Tokio runtime".into(),
            });
        }
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| SendError { permanent: true, reason: format!("invalid SMTP URL: {e}") })?
            .timeout(Some(SMTP_TIMEOUT));
        if let Some(user) = username {
            builder = builder.credentials(Credentials::new(user.to_owned(), password.unwrap_or_default().to_owned()));
        }
        Ok(Transport::Smtp(builder.build()))
    }

    /// A directory of `.eml` files (created on the first send).
    pub fn eml_dir(dir: PathBuf) -> Transport {
        Transport::EmlDir(dir)
    }

    /// Delivers `msg`. Over SMTP, to the envelope's recipients; into a directory, as
    /// `<dir>/<sanitised key>.eml`, written under a temporary name and renamed, so a reader never
    /// sees half a file and a second send with the same key replaces the first.
    pub async fn send(&self, msg: &Message, idempotency_key: &str) -> Result<(), SendError> {
        let key = sanitise_key(idempotency_key);
        match self {
            Transport::Smtp(smtp) => match smtp.send_raw(msg.envelope(), &msg.formatted()).await {
                Ok(response) => {
                    tracing::debug!(key = %key, code = %response.code(), "message accepted by the SMTP relay");
                    Ok(())
                }
                Err(e) => {
                    let err = SendError::from_smtp(&e);
                    tracing::warn!(key = %key, permanent = err.permanent, reason = %err.reason, "SMTP send failed");
                    Err(err)
                }
            },
            Transport::EmlDir(dir) => {
                let io = |what: &str, e: std::io::Error| {
                    let err = SendError::temporary(format!("{what} in {}: {e}", dir.display()));
                    tracing::warn!(key = %key, reason = %err.reason, "writing .eml failed");
                    err
                };
                tokio::fs::create_dir_all(dir).await.map_err(|e| io("creating the directory", e))?;
                let target = dir.join(format!("{key}.eml"));
                let temp = dir.join(format!(".{key}.{}.tmp", uuid::Uuid::new_v4()));
                if let Err(e) = tokio::fs::write(&temp, msg.formatted()).await {
                    let _ = tokio::fs::remove_file(&temp).await;
                    return Err(io("writing", e));
                }
                if let Err(e) = tokio::fs::rename(&temp, &target).await {
                    let _ = tokio::fs::remove_file(&temp).await;
                    return Err(io("renaming", e));
                }
                tracing::debug!(key = %key, path = %target.display(), "message written");
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    use super::*;

    fn message(subject: &str) -> Message {
        Message::builder()
            .from("Parley <noreply@parley.example>".parse().unwrap())
            .to("guest@example.com".parse().unwrap())
            .subject(subject)
            .body(String::from("hello"))
            .unwrap()
    }

    fn temp_dir() -> PathBuf {
        std::env::temp_dir().join(format!("parley-notify-test-{}", uuid::Uuid::new_v4()))
    }

    #[tokio::test]
    async fn eml_dir_writes_one_file_per_key() {
        let dir = temp_dir().join("nested");
        let transport = Transport::eml_dir(dir.clone());
        transport.send(&message("first"), "outbox/7").await.unwrap();
        let second = message("second");
        transport.send(&second, "outbox/7").await.unwrap();
        transport.send(&message("other"), "outbox-8").await.unwrap();

        let mut names: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        assert_eq!(names, vec!["outbox-8.eml".to_owned(), "outbox_7.eml".to_owned()]);
        let written = std::fs::read(dir.join("outbox_7.eml")).unwrap();
        assert_eq!(written, second.formatted());
        std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    #[tokio::test]
    async fn eml_dir_failures_are_temporary() {
        // A file where the directory should be.
        let path = temp_dir();
        std::fs::write(&path, b"not a directory").unwrap();
        let err = Transport::eml_dir(path.clone()).send(&message("x"), "k").await.unwrap_err();
        assert!(!err.permanent);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn smtp_outside_a_runtime_is_an_error_not_a_panic() {
        let err = Transport::smtp("smtp://127.0.0.1:2525", None, None).unwrap_err();
        assert!(err.permanent);
    }

    #[tokio::test]
    async fn bad_smtp_urls_are_permanent() {
        let err = Transport::smtp("gopher://x", None, None).unwrap_err();
        assert!(err.permanent);
        assert!(Transport::smtp("smtp://127.0.0.1:2525", Some("u"), Some("p")).is_ok());
        assert!(Transport::smtp("smtp://127.0.0.1:2525?tls=required", None, None).is_ok());
        assert!(Transport::smtp("smtps://127.0.0.1:465", None, None).is_ok());
    }

    #[tokio::test]
    async fn refused_connections_are_temporary() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let transport = Transport::smtp(&format!("smtp://127.0.0.1:{port}"), None, None).unwrap();
        let err = tokio::time::timeout(Duration::from_secs(30), transport.send(&message("x"), "k"))
            .await
            .unwrap()
            .unwrap_err();
        assert!(!err.permanent, "{err}");
    }

    /// A one-connection SMTP server on loopback answering `MAIL FROM` with `mail_reply`.
    async fn fake_smtp(mail_reply: &'static str) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let Ok((stream, _)) = listener.accept().await else { return };
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            let _ = write.write_all(b"220 fake ESMTP\r\n").await;
            while let Ok(Some(line)) = lines.next_line().await {
                let command = line.to_ascii_uppercase();
                let reply = if command.starts_with("EHLO") || command.starts_with("HELO") {
                    "250 fake\r\n".to_owned()
                } else if command.starts_with("MAIL") {
                    format!("{mail_reply}\r\n")
                } else if command.starts_with("QUIT") {
                    let _ = write.write_all(b"221 bye\r\n").await;
                    break;
                } else {
                    "250 ok\r\n".to_owned()
                };
                if write.write_all(reply.as_bytes()).await.is_err() {
                    break;
                }
            }
        });
        port
    }

    async fn send_to(port: u16) -> Result<(), SendError> {
        let transport = Transport::smtp(&format!("smtp://127.0.0.1:{port}"), None, None).unwrap();
        tokio::time::timeout(Duration::from_secs(30), transport.send(&message("x"), "k")).await.unwrap()
    }

    #[tokio::test]
    async fn smtp_5xx_is_permanent_with_the_server_text() {
        let port = fake_smtp("550 5.7.1 sender rejected").await;
        let err = send_to(port).await.unwrap_err();
        assert!(err.permanent, "{err:?}");
        assert!(err.reason.starts_with("550"), "{err:?}");
        assert!(err.reason.contains("sender rejected"), "{err:?}");
        assert_eq!(err.to_string(), err.reason);
    }

    #[tokio::test]
    async fn smtp_4xx_is_temporary() {
        let port = fake_smtp("451 4.3.0 try again later").await;
        let err = send_to(port).await.unwrap_err();
        assert!(!err.permanent, "{err:?}");
        assert!(err.reason.starts_with("451"), "{err:?}");
    }
}
