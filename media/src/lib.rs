//! Parley's SFU media router, bottom layer.
//!
//! Two halves, kept apart so the forwarding rules can be tested without sockets:
//!
//! - **Pure logic** (plain header fields in, decisions out; no I/O, no webrtc types):
//!   [`pli`] (keyframe-request throttle).
//! - **The WebRTC adapter** [`peer`]: one server-side peer connection per participant on
//!   webrtc-rs 0.21 — negotiation both ways, trickle ICE, published RTP out as a channel,
//!   outgoing tracks that take rewritten RTP, PLI to publishers.
//!
//! The media-router actor (planned, `actors/`) owns one [`peer::Peer`] per participant and
//! glues the two: RTP in → decisions → [`peer::OutTrack::write_rtp`].

pub mod error;
pub mod peer;
pub mod pli;
pub mod rewrite;

pub use error::{MediaError, Result};
