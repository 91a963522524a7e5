//! Parley's SFU media router, bottom layer.
//!
//! Two halves, kept apart so the forwarding rules can be tested without sockets:
//!
//! - **Pure logic** (plain header fields in, decisions out; no I/O, no webrtc types):
//!   [`rewrite`] (continuous outgoing seq/timestamp across source switches), [`layers`]
//!   (simulcast layer choice with hysteresis, switch at keyframes) with [`vp8`] (keyframe
//!   detection), [`speaker`] (active speaker from audio levels), [`nack_cache`] (packets kept
//!   for retransmission), [`pli`] (keyframe-request throttle), [`views`] (who receives what),
//!   [`latency`] (a lock-free histogram of the time packets spend in the node).
//! - **The WebRTC adapter** [`peer`]: one server-side peer connection per participant on
//!   webrtc-rs 0.21 — negotiation both ways, trickle ICE, published RTP out to a sink called on
//!   the receive path (or a channel), outgoing tracks that take rewritten RTP, PLI to
//!   publishers, NACKs up to the router — with [`interceptors`], our stages in each
//!   connection's interceptor chain. Configured so, the node's peers
//!   share one UDP port: [`socket`] drives them all as sans-IO `rtc` connections from one
//!   socket, [`demux`] (pure) says whose a datagram is.
//!
//! The media-router actor (`parley-actors`, `media_router.rs`) owns one [`peer::Peer`] per
//! participant and glues the two: RTP in → `layers`/`speaker` → `rewrite` →
//! [`peer::Outbox`], with `views` deciding the subscriptions.
//! `media/tests/forwarding.rs` shows that loop in miniature.

pub mod demux;
pub mod error;
pub mod h264;
pub mod interceptors;
pub mod latency;
pub mod layers;
pub mod nack_cache;
pub mod peer;
pub mod placement;
pub mod pli;
pub mod rewrite;
pub mod socket;
pub mod speaker;
pub mod views;
pub mod vp8;

pub use error::{MediaError, Result};
