//! The one error type of `parley-media`, grouped by who is to blame: the remote peer (bad SDP,
//! bad candidate), the host (nothing could be bound), the caller (a track that is not negotiated
//! yet, a closed peer), or the WebRTC stack itself.

use std::net::IpAddr;

/// Everything `parley-media` can fail with.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The remote SDP could not be parsed or applied (malformed, wrong type for the signalling
    /// state, no usable media). Remote input: answer the client with an error, keep the peer.
    #[error("invalid SDP: {0}")]
    Sdp(String),
    /// A remote ICE candidate could not be parsed or added.
    #[error("invalid ICE candidate: {0}")]
    Candidate(String),
    /// No UDP port of the configured range could be bound on the configured address.
    #[error("cannot bind a UDP port on {ip} in {from}..={to}: {detail}")]
    Bind { ip: IpAddr, from: u16, to: u16, detail: String },
    /// The configuration is unusable (e.g. an empty port range).
    #[error("invalid media configuration: {0}")]
    Config(String),
    /// The outgoing track has no negotiated payload type yet: negotiate before writing.
    #[error("track {0} is not negotiated yet")]
    NotNegotiated(String),
    /// The peer connection is closed.
    #[error("peer connection closed")]
    Closed,
    /// Any other failure of the WebRTC stack.
    #[error("webrtc: {0}")]
    WebRtc(#[from] webrtc::error::Error),
}

impl MediaError {
    /// Whether the remote side caused it (bad SDP or candidate): worth an error reply to the
    /// client, not an alarm.
    pub fn is_remote_fault(&self) -> bool {
        matches!(self, MediaError::Sdp(_) | MediaError::Candidate(_))
    }
}

/// Short for `Result<T, MediaError>`.
pub type Result<T> = std::result::Result<T, MediaError>;
