//! Parley's SFU media router, bottom layer.
//!
//! Three layers, kept apart so the forwarding rules can be tested without sockets:
//!
//! - **Pure logic** (plain header fields in, decisions out; no I/O, no webrtc types):
//!   [`rewrite`] (continuous outgoing seq/timestamp across source switches), [`layers`]
//!   (simulcast layer choice with hysteresis, switch at keyframes) with [`vp8`] and [`h264`]
//!   (keyframe detection), [`speaker`] (active speaker from audio levels), [`nack_cache`]
//!   (packets kept for retransmission), [`pli`] (keyframe-request throttle), [`views`] (who
//!   receives what), [`latency`] (a lock-free histogram of the time packets spend in the
//!   node), [`placement`] (which driver thread a connection goes to), [`demux`] (whose a
//!   datagram on the shared port is), [`sdp`] (what the node reads from SDP text itself: the
//!   tracks an offer sends, its DTLS fingerprint, extension ids, ICE ufrags, a RID's layer).
//! - **The forwarding path** [`forward`]: each publisher's ingest (its peer's
//!   [`track::RtpSink`], run on the receive path) and each subscriber's egress (layer choice,
//!   seq/timestamp rewrite, its [`track::OutTrack`]s), the route table between them, the
//!   packet cache NACKs are answered from, the speaker detector and the counters — behind a
//!   small handle ([`forward::Forwarder`]) its owner drives, and a trait
//!   ([`forward::Upstream`]) for what it asks of the owner (keyframes). It knows tracks and
//!   packets, not connections.
//! - **The WebRTC adapter**: [`codec`] and [`track`], the types a connection shares with its
//!   owner and its driver (codecs, [`track::PeerEvent`]s, published [`track::IncomingRtp`],
//!   outgoing [`track::OutTrack`]s and the [`track::Outbox`] a sink writes into); [`peer`],
//!   one server-side peer connection per participant on webrtc-rs 0.21 — negotiation both
//!   ways, trickle ICE, published RTP out to a sink called on the receive path (or a channel),
//!   PLI to publishers, NACKs up to the owner — with [`interceptors`], our stages in each
//!   connection's interceptor chain. Configured so, the node's peers share one UDP port:
//!   [`socket`] drives them all as sans-IO `rtc` connections from one socket.
//!
//! - **Recording** [`record`] (the capture half, no decoding): a published track's RTP, as the
//!   forwarder's tap ([`forward::Forwarder::record`]) hands it over, into whole frames and a
//!   Matroska/WebM file written as it goes ([`record::TrackWriter`]).
//!
//! Dependencies point one way: [`peer`] builds on [`socket`], both on [`track`]/[`codec`]
//! (which know neither: an outgoing track reaches the shared socket through
//! `track::SocketLink`, which the socket implements); [`forward`] needs only [`track`],
//! [`codec`] and the pure modules.
//!
//! The media-router actor (`parley-actors`, `media_router.rs`) owns one [`peer::Peer`] and one
//! egress per participant and the meeting's [`forward::Forwarder`]; it turns `views` plans
//! into outgoing tracks, routes and bindings, and handles signalling. `media/tests/forwarding.rs`
//! runs the forwarder between real peers on loopback, as the actor sets it up.

pub mod codec;
pub mod demux;
pub mod error;
pub mod forward;
pub mod h264;
pub mod interceptors;
pub mod latency;
pub mod layers;
pub mod nack_cache;
pub mod peer;
pub mod placement;
pub mod pli;
pub mod reception;
pub mod record;
pub mod rewrite;
pub mod sdp;
pub mod socket;
pub mod speaker;
pub mod track;
pub mod views;
pub mod vp8;

pub use error::{MediaError, Result};
