//! Who receives each published track: the route table the ingests read on every packet and
//! the owner rewrites on every plan change.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU8;

use uuid::Uuid;

use super::egress::Egress;
use super::shared::{LayerRates, PacketCache};
use super::tap::RecordTap;
use crate::codec::Codec;

/// Who receives each published track, by (publisher, msid track id): read by every
/// publisher's ingest on every packet, written by the owner on every plan change.
#[derive(Default)]
pub(super) struct Routes {
    pub(super) by_track: HashMap<(Uuid, Arc<str>), Route>,
}

/// One published track's way to its subscribers.
pub(super) struct Route {
    /// What subscribers receive it as.
    pub(super) key: Arc<str>,
    pub(super) codec: Codec,
    pub(super) subscribers: Arc<[Subscriber]>,
    pub(super) rates: Arc<LayerRates>,
    /// Video only: the packets forwarded lately, for NACKs.
    pub(super) cache: Option<Arc<PacketCache>>,
    /// The recording tap, while the track is recorded (`Forwarder::record`); a new route
    /// (publish again) starts without one.
    pub(super) record: Option<Arc<RecordTap>>,
    /// Held by the meeting (a muted microphone, a camera turned off): its packets go nowhere —
    /// no subscriber, no recording, no audio level — until it is released.
    pub(super) held: bool,
}

/// One subscriber of a route.
#[derive(Clone)]
pub(super) struct Subscriber {
    pub(super) user: Uuid,
    pub(super) egress: Arc<Egress>,
    /// The simulcast layers it needs now (bits of [`layer_bit`](super::shared::layer_bit)): the
    /// one it receives and the one it is switching to. Set by its egress.
    pub(super) wants: Arc<AtomicU8>,
}
