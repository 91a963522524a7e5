//! Keeps the WebRTC stack's known noise out of the node's log, so a join reads as one line.
//!
//! The `rtc`/`webrtc` crates log some expected conditions as warnings or errors, many times
//! per connection: RTP offered for sending before the connection's DTLS handshake has set up
//! its SRTP keys (`local_srtp_context is not set yet`, dozens per join), DTLS without a server
//! name, ICE pinging before any pair exists. None of them is a fault of the node or the
//! client. Events from those crates whose message is one of these are dropped; every other
//! warning of theirs is kept.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Messages of the WebRTC stack that describe an expected moment, not a problem.
pub const STACK_NOISE: &[&str] = &[
    "local_srtp_context is not set yet",
    "local_srp_context is not set yet",
    "conn.remote_addr is empty, please set explicitly server_name",
    "pingAllCandidates called with no candidate pairs",
];

/// A layer that disables events of the WebRTC stack whose message is in [`STACK_NOISE`].
#[derive(Debug, Default, Clone, Copy)]
pub struct QuietStack;

/// Whether an event from `target` with `message` is known noise.
pub fn is_noise(target: &str, message: &str) -> bool {
    let from_stack = ["webrtc", "rtc", "log"].iter().any(|t| target == *t || target.starts_with(&format!("{t}::")))
        || target.starts_with("rtc_")
        || target.starts_with("webrtc_");
    from_stack && STACK_NOISE.iter().any(|n| message.contains(n))
}

struct Message(String);

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            use std::fmt::Write;
            let _ = write!(self.0, "{value:?}");
        }
    }
}

impl<S: Subscriber> Layer<S> for QuietStack {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        let target = event.metadata().target();
        if !(target.starts_with("webrtc") || target.starts_with("rtc") || target == "log") {
            return true;
        }
        let mut m = Message(String::new());
        event.record(&mut m);
        !is_noise(target, &m.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stacks_known_noise_is_dropped_and_its_real_warnings_kept() {
        assert!(is_noise(
            "webrtc::peer_connection::driver",
            "Failed to send RTP: local_srtp_context is not set yet for rtp_packet 127.0.0.1:5000"
        ));
        assert!(is_noise("rtc_dtls::conn", "conn.remote_addr is empty, please set explicitly server_name in Config!"));
        assert!(
            !is_noise("webrtc::peer_connection::driver", "Failed to send RTP: connection closed"),
            "real faults stay"
        );
        assert!(!is_noise("parley_media::peer", "local_srtp_context is not set yet"), "only the stack's own");
    }

    #[test]
    fn the_layer_reads_the_message_of_an_event() {
        use std::sync::{Arc, Mutex};
        use tracing_subscriber::layer::SubscriberExt;

        #[derive(Clone, Default)]
        struct Seen(Arc<Mutex<Vec<String>>>);
        impl<S: Subscriber> Layer<S> for Seen {
            fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
                let mut m = Message(String::new());
                event.record(&mut m);
                self.0.lock().unwrap_or_else(|p| p.into_inner()).push(m.0);
            }
        }
        let seen = Seen::default();
        let subscriber = tracing_subscriber::registry().with(QuietStack).with(seen.clone());
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(target: "webrtc::peer_connection::driver", "Failed to send RTP: local_srtp_context is not set yet");
            tracing::warn!(target: "webrtc::peer_connection::driver", "Failed to send RTP: closed");
            tracing::info!("parley line");
        });
        let seen = seen.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        assert_eq!(seen, ["Failed to send RTP: closed", "parley line"]);
    }
}
