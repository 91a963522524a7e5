//! Parley's WebRTC load generator and test client.
//!
//! A participant here does what a browser does with the protocol (PROTOCOL.md): a WebSocket in
//! a meeting, a webrtc-rs peer connection to the meeting's media router, offers and answers in
//! both directions, trickled server candidates. Its media is synthetic ([`synth`]): VP8 and
//! Opus packets that look right to the SFU and carry a send time and an index, so receivers
//! measure one-way latency and loss without decoding. Or it is real ([`real`]): VP8 and Opus
//! from ffmpeg, looped, for tests whose media must decode (recording).
//!
//! - [`signal`]: the HTTP API (tokens from the node's secret, users, meetings) and WebSocket
//!   request/reply/events.
//! - [`participant`]: one simulated participant (integration tests drive these directly).
//! - [`run`]: `parley loadtest` — P publishers, S subscribers, a JSON summary.

pub mod participant;
pub mod real;
pub mod run;
pub mod signal;
pub mod synth;

pub use participant::{Participant, Publish, Publisher, Rates, Received};
pub use real::RealMedia;
pub use run::{LoadTest, Summary};
pub use signal::{Api, Signal};

/// What can go wrong in a load test.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("HTTP: {0}")]
    Http(String),
    #[error("WebSocket: {0}")]
    Ws(String),
    #[error("{what} refused: {reply}")]
    Refused { what: String, reply: String },
    #[error("media: {0}")]
    Media(String),
}
