//! The node's notification workers: they deliver the outbox every node shares — email, and
//! signed webhook POSTs — and its reminder scheduler, which every node runs.
//!
//! Each worker claims the oldest due message under a lease, composes it (the email with its
//! iCalendar part) and hands it to the transport — the SMTP server of `[notify.smtp]`, or
//! `.eml` files under `<data_dir>/outbox/` by default — then records the outcome: `sent`; a
//! retry after a backoff (a temporary failure: the server is down, or said 4xx); or `failed`
//! with the reason (the server refused the address with 5xx, or attempts ran out). A worker that
//! dies mid-delivery loses its lease and another worker, on any node, delivers the message again
//! with the same idempotency key (the email's `Message-ID`, the webhook's `X-Parley-Delivery`),
//! so receivers can drop the repeat.
//!
//! A webhook row names its endpoint by URL; its secret comes from this node's
//! `[[notify.webhooks]]`. A row for an endpoint this node does not know (its configuration
//! differs from the one that queued it) is retried, for a node that does.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use parley_notify::email::Composer;
use parley_notify::transport::{SendError, Transport};
use parley_notify::webhook::{Delivery, WebhookClient};
use parley_store::Store;
use parley_store::notifications::{ClaimedNotification, DeliveryOutcome, Message, backoff};

use crate::config::{MailSetting, Settings, Webhook};

/// How long a claimed message stays with its worker without an answer.
const LEASE: Duration = Duration::from_secs(60);

struct Worker {
    store: Store,
    composer: Composer,
    transport: Arc<Transport>,
    webhooks: Arc<[Webhook]>,
    http: WebhookClient,
    owner: String,
    poll: Duration,
    retry_base: Duration,
}

/// Starts this node's notification workers (none when `[notify] enabled = false`).
pub fn start(settings: &Settings, store: &Store, public_url: &str) -> anyhow::Result<()> {
    let n = &settings.notify;
    if !n.enabled {
        tracing::info!("notifications: off on this node (other nodes deliver the outbox and plan reminders)");
        return Ok(());
    }
    tokio::spawn(plan_reminders(store.clone(), n.reminder_scan));
    if n.workers == 0 {
        tracing::info!("notifications: no delivery on this node (other nodes deliver the outbox)");
        return Ok(());
    }
    let transport = match &n.mail {
        MailSetting::Smtp { url, username, password } => {
            Transport::smtp(url, username.as_deref(), password.as_deref()).context("[notify.smtp] url")?
        }
        MailSetting::EmlDir(dir) => Transport::eml_dir(dir.clone()),
    };
    let how = match &n.mail {
        MailSetting::Smtp { url, .. } => format!("through {}", crate::config::redact_url(url)),
        MailSetting::EmlDir(dir) => format!("as .eml files in {}", dir.display()),
    };
    tracing::info!(
        "notifications: {} workers deliver email {how}, webhooks to {} endpoints",
        n.workers,
        n.webhooks.len()
    );
    let transport = Arc::new(transport);
    let webhooks: Arc<[Webhook]> = Arc::from(n.webhooks.clone());
    let http = WebhookClient::new().map_err(|e| anyhow::anyhow!(e.reason))?;
    for i in 0..n.workers {
        let w = Worker {
            store: store.clone(),
            composer: Composer::new(&n.from, public_url).context("[notify.smtp] from")?,
            transport: transport.clone(),
            webhooks: webhooks.clone(),
            http: http.clone(),
            owner: format!("{}/notify-{i}", settings.node_name),
            poll: n.poll,
            retry_base: n.retry_base,
        };
        tokio::spawn(w.run());
    }
    Ok(())
}

impl Worker {
    async fn run(self) {
        loop {
            match self.store.claim_notification(&self.owner, LEASE).await {
                Ok(Some(n)) => self.deliver(n).await,
                Ok(None) => tokio::time::sleep(self.poll).await,
                Err(e) => {
                    tracing::warn!(error = %e, "notifications: cannot read the outbox");
                    tokio::time::sleep(self.poll.max(Duration::from_secs(1))).await;
                }
            }
        }
    }

    async fn send(&self, n: &ClaimedNotification) -> Result<(), SendError> {
        let permanent = |reason: String| SendError { permanent: true, reason };
        match &n.message {
            Err(reason) => Err(permanent(reason.clone())),
            Ok(Message::Email(notice)) => {
                let msg = self
                    .composer
                    .compose(notice, &n.idempotency_key)
                    .map_err(|e| permanent(format!("cannot compose the message: {e}")))?;
                self.transport.send(&msg, &n.idempotency_key).await
            }
            Ok(Message::Webhook { body }) => {
                let Some(hook) = self.webhooks.iter().find(|w| w.url == n.recipient) else {
                    return Err(SendError {
                        permanent: false,
                        reason: "this node has no [[notify.webhooks]] entry for the endpoint".into(),
                    });
                };
                let d = Delivery {
                    url: &hook.url,
                    secret: &hook.secret,
                    event: &n.kind,
                    key: &n.idempotency_key,
                    attempt: n.attempt,
                    body,
                };
                self.http.send(d).await
            }
        }
    }

    async fn deliver(&self, n: ClaimedNotification) {
        let sent = self.send(&n).await.map_err(|e| (e.reason, e.permanent));
        let (kind, to, attempt) = (&n.kind, &n.recipient, n.attempt);
        let recorded = match sent {
            Ok(()) => {
                tracing::info!("notification sent: {kind} to {to} (attempt {attempt})");
                self.store.notification_sent(&n).await.map(|_| ())
            }
            Err((reason, permanent)) => {
                let wait = backoff(self.retry_base, attempt);
                match self.store.notification_failed(&n, &reason, permanent, wait).await {
                    Ok(DeliveryOutcome::Retrying(at)) => {
                        tracing::warn!(
                            "notification deferred: {kind} to {to}: {reason}; retry at {at} (attempt {attempt})"
                        );
                        Ok(())
                    }
                    Ok(DeliveryOutcome::Failed) => {
                        tracing::warn!("notification failed: {kind} to {to}: {reason} (attempt {attempt}, given up)");
                        Ok(())
                    }
                    Ok(DeliveryOutcome::NotOurs) => Ok(()),
                    Err(e) => Err(e),
                }
            }
        };
        if let Err(e) = recorded {
            // The lease runs out and another attempt delivers it again (same idempotency key).
            tracing::warn!(error = %e, "notifications: cannot record the outcome of {kind} to {to}");
        }
    }
}

/// Every `every`, queues the reminders that are due (every node runs this; each reminder is
/// queued by one of them).
async fn plan_reminders(store: Store, every: Duration) {
    loop {
        if let Err(e) = store.plan_reminders(chrono::Utc::now()).await {
            tracing::warn!(error = %e, "reminders: cannot plan (retrying)");
        }
        tokio::time::sleep(every).await;
    }
}
