//! Our interceptors in the `rtc` stack's chain, and the plumbing they share.
//!
//! An `rtc` interceptor is a sans-IO [`Protocol`]: the chain hands it each packet
//! (`handle_read` / `handle_write`) and then collects what it has ready (`poll_read` /
//! `poll_write`). Ours never hold a packet back, so each is a [`PacketFilter`] (one decision
//! per packet: pass it on, changed or not, or drop it) wrapped in [`Filtered`], which owns the
//! queue pair and the trait plumbing once for all of them.
//!
//! - [`KeyframeRequestForwarder`] (at [`KEYFRAME_FORWARDER_SLOT`]): inbound PLI/FIR (and, on
//!   the node, NACKs) go on to the application; the latest REMB is kept.
//! - `RidStreamReportFilter` (at [`RID_REPORT_FILTER_SLOT`]): no report blocks about a
//!   browser's RID-mapped simulcast streams leave the node.
//! - `RtxWrapper` (sharing that stage, see `node_send_filters`): a packet sent again goes out
//!   on its stream's RTX SSRC (RFC 4588).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rtc::interceptor::{Attribute, Interceptor, Packet as ChainPacket, StreamInfo, TaggedPacket};
use rtc::rtcp;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::sansio::Protocol;

use crate::reception::{Block, ReceptionQuality, ntp_middle};
use crate::sdp::RID_URI;

/// Where the keyframe-request forwarder sits in the interceptor chain: after every built-in
/// interceptor (the highest built-in slot is the jitter buffer at 13 000), so they have all seen
/// the RTCP before it is narrowed down.
pub const KEYFRAME_FORWARDER_SLOT: usize = 14_000;
/// Where `RidStreamReportFilter` sits: just wire-side of the receiver-report interceptor
/// (10 000), so the reports it writes pass the filter on their way out. The node's
/// `RtxWrapper` shares the stage (`node_send_filters`).
pub const RID_REPORT_FILTER_SLOT: usize = 9_500;

/// The node's filters at [`RID_REPORT_FILTER_SLOT`], in one stage: the RTX wrapper wire-side
/// of the RID report filter.
///
/// The wrapper only rewrites RTP on its way out. It must sit above the pacer (it produces
/// packets the wire has not seen: above 3 000) and stays wire-side of the sender-report
/// interceptor (11 000), as it did in the NACK responder's slot (4 000). The stages in between
/// that the node registers, the NACK generator (7 000) and the TWCC receiver (8 000), pass what
/// is written untouched, so both places send the same packets. So it shares the RID report filter's stage instead
/// of the NACK responder's slot: one stage fewer for every packet the node sends (a stage
/// costs each packet its moves through that stage's queue, in both directions).
pub(crate) fn node_send_filters() -> Filtered<(RtxWrapper, RidStreamReportFilter)> {
    Filtered::new((RtxWrapper::default(), RidStreamReportFilter::default()))
}

/// One decision per packet, in each direction: `Some` passes the packet on (changed or not),
/// `None` drops it. Both default to passing everything.
pub trait PacketFilter: Send + Sync {
    /// A packet from the network, on its way to the application.
    fn read(&mut self, msg: TaggedPacket) -> Option<TaggedPacket> {
        Some(msg)
    }

    /// A packet from the application (or an interceptor nearer to it), on its way out.
    fn write(&mut self, msg: TaggedPacket) -> Option<TaggedPacket> {
        Some(msg)
    }

    /// A local (sent) stream was bound: `info` is what its negotiation said.
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}

    /// That stream is gone.
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}

    /// A remote (published) stream was bound: `info` is what its negotiation said.
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}

    /// That stream is gone.
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// A [`PacketFilter`] as an `rtc` interceptor: register `Filtered::new(filter)` at a slot.
pub struct Filtered<F> {
    filter: F,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl<F: PacketFilter> Filtered<F> {
    pub fn new(filter: F) -> Self {
        Self { filter, read: VecDeque::new(), write: VecDeque::new() }
    }

    /// The filter inside.
    pub fn filter(&self) -> &F {
        &self.filter
    }
}

impl<F: PacketFilter> Protocol<TaggedPacket, TaggedPacket, ()> for Filtered<F> {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = webrtc::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Some(msg) = self.filter.read(msg) {
            self.read.push_back(msg);
        }
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Some(msg) = self.filter.write(msg) {
            self.write.push_back(msg);
        }
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }
}

impl<F: PacketFilter> Interceptor for Filtered<F> {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        self.filter.bind_local_stream(info);
    }
    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.filter.unbind_local_stream(info);
    }
    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        self.filter.bind_remote_stream(info);
    }
    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        self.filter.unbind_remote_stream(info);
    }
}

/// Two filters in one stage of the chain, `A` nearer the wire: what comes in goes through `A`
/// then `B`, what goes out through `B` then `A`, as if `A` sat just wire-side of `B`. Every
/// stage costs each packet in either direction its moves through the stage's queue, so
/// filters that may sit next to each other share one.
impl<A: PacketFilter, B: PacketFilter> PacketFilter for (A, B) {
    fn read(&mut self, msg: TaggedPacket) -> Option<TaggedPacket> {
        self.0.read(msg).and_then(|msg| self.1.read(msg))
    }

    fn write(&mut self, msg: TaggedPacket) -> Option<TaggedPacket> {
        self.1.write(msg).and_then(|msg| self.0.write(msg))
    }

    fn bind_local_stream(&mut self, info: &StreamInfo) {
        self.0.bind_local_stream(info);
        self.1.bind_local_stream(info);
    }

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.0.unbind_local_stream(info);
        self.1.unbind_local_stream(info);
    }

    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        self.0.bind_remote_stream(info);
        self.1.bind_remote_stream(info);
    }

    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        self.0.unbind_remote_stream(info);
        self.1.unbind_remote_stream(info);
    }
}

pub(crate) fn is_keyframe_request(packet: &dyn rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

/// Marks inbound PLI/FIR for delivery to the application. Without it, webrtc-rs ends every
/// inbound RTCP packet at the end of its interceptor chain and `TrackLocal::poll` never sees a
/// keyframe request. Other RTCP passes through unmarked (and stops there, after the built-in
/// interceptors used it).
/// Public so that client peers (the load tester) can see the keyframe requests a server sends
/// them: register `Filtered::new(KeyframeRequestForwarder::default())` at
/// [`KEYFRAME_FORWARDER_SLOT`].
///
/// Built [`with_downlink_estimate`](Self::with_downlink_estimate), it also keeps the bitrate
/// of the latest REMB the remote sent (webrtc-rs has no REMB interceptor); made
/// [`forwarding_nacks`](Self::forwarding_nacks), it passes NACKs on too (the node answers them
/// itself, from the publisher's packet cache, instead of the stack's per-connection responder).
///
/// Made [`reporting_reception`](Self::reporting_reception), it takes the remote's report
/// blocks about our streams into a [`ReceptionQuality`] (loss, jitter, round trip).
#[derive(Default)]
pub struct KeyframeRequestForwarder {
    downlink_bps: Option<Arc<AtomicU64>>,
    nacks: bool,
    reception: Option<Arc<ReceptionQuality>>,
    /// Our streams' clock rates by SSRC (what report-block jitter is counted in).
    clock_rates: HashMap<u32, u32>,
}

impl KeyframeRequestForwarder {
    /// A forwarder that also stores each received REMB's bitrate (bits/s) in `cell`.
    pub fn with_downlink_estimate(cell: Arc<AtomicU64>) -> Self {
        Self { downlink_bps: Some(cell), ..Self::default() }
    }

    /// Passes NACKs on to the application as well.
    pub fn forwarding_nacks(self) -> Self {
        Self { nacks: true, ..self }
    }

    /// Keeps what the remote reports about receiving our streams in `cell`.
    pub fn reporting_reception(self, cell: Arc<ReceptionQuality>) -> Self {
        Self { reception: Some(cell), ..self }
    }

    fn observe_reports(&self, packets: &[Box<dyn rtcp::Packet>]) {
        let Some(cell) = &self.reception else { return };
        for p in packets {
            let any = p.as_any();
            let reports = match (any.downcast_ref::<ReceiverReport>(), any.downcast_ref::<SenderReport>()) {
                (Some(rr), _) => &rr.reports,
                (None, Some(sr)) => &sr.reports,
                (None, None) => continue,
            };
            let blocks: Vec<Block> = reports
                .iter()
                .map(|r| Block {
                    ssrc: r.ssrc,
                    fraction_lost: r.fraction_lost,
                    jitter: r.jitter,
                    last_sender_report: r.last_sender_report,
                    delay: r.delay,
                })
                .collect();
            cell.observe(&blocks, &self.clock_rates, ntp_middle(std::time::SystemTime::now()));
        }
    }

    fn forwards(&self, packet: &dyn rtcp::Packet) -> bool {
        is_keyframe_request(packet) || (self.nacks && packet.as_any().is::<TransportLayerNack>())
    }
}

impl PacketFilter for KeyframeRequestForwarder {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        if self.reception.is_some() {
            self.clock_rates.insert(info.ssrc, info.clock_rate);
        }
    }

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.clock_rates.remove(&info.ssrc);
    }

    fn read(&mut self, mut msg: TaggedPacket) -> Option<TaggedPacket> {
        if let ChainPacket::Rtcp(packets) = &msg.message.packet {
            self.observe_reports(packets);
            if let Some(cell) = &self.downlink_bps {
                for remb in packets.iter().filter_map(|p| p.as_any().downcast_ref::<ReceiverEstimatedMaximumBitrate>())
                {
                    // At least 1 bit/s: 0 means "no estimate".
                    cell.store((remb.bitrate as u64).max(1), Ordering::Relaxed);
                }
            }
            let requests: Vec<Box<dyn rtcp::Packet>> =
                packets.iter().filter(|p| self.forwards(p.as_ref())).cloned().collect();
            if !requests.is_empty() {
                msg.message.packet = ChainPacket::Rtcp(requests);
                msg.message.add(Attribute::DeliverToApplication);
            }
        }
        Some(msg)
    }
}

/// Keeps reception reports about RID-mapped streams (a browser's simulcast layers) from
/// reaching their publisher.
///
/// Why: on every renegotiation `rtc` 0.21 re-creates each receiving transceiver's track from
/// the SDP (`start_rtp`), which for a simulcast section names RIDs but no SSRCs, so the SSRCs it
/// had learned are forgotten and it can learn them again only from a packet carrying its RID
/// (and MID) header extension. libwebrtc stops adding those extensions to a stream as soon as a
/// report block about it comes back. Together: any renegotiation of a browser publisher's
/// connection a second or more into the call (a newcomer's tracks offered to it, its own screen
/// share) silently dropped every packet of its camera from then on. Unreported, the browser
/// keeps tagging each packet (a few bytes), and the stack maps the layers again at their next
/// packet. The publisher still gets round-trip times from its audio's reports and its bandwidth
/// estimate from transport-wide congestion feedback; what it loses is the per-layer loss and
/// jitter figures of those reports.
///
/// A stream counts as RID-mapped once one of its packets carries the RID extension its
/// binding negotiated: seen on the way in, before any report about it can go out.
#[derive(Default)]
pub(crate) struct RidStreamReportFilter {
    /// The RID extension id of each bound published stream that negotiated one and has not
    /// been seen tagged yet. A stream leaves it for `rid_streams` at its first tagged packet,
    /// so every later packet costs one lookup that finds nothing.
    rid_extension: HashMap<u32, u8>,
    /// Streams seen tagged with their RID.
    rid_streams: HashSet<u32>,
}

impl RidStreamReportFilter {
    /// The blocks of `reports` about streams that are not RID-mapped; `None` when that is all
    /// of them (nothing to change).
    fn kept(&self, reports: &[ReceptionReport]) -> Option<Vec<ReceptionReport>> {
        // Each block looked up once: the first about such a stream starts the copy.
        let first = reports.iter().position(|r| self.rid_streams.contains(&r.ssrc))?;
        let mut kept = reports[..first].to_vec();
        kept.extend(reports[first + 1..].iter().filter(|r| !self.rid_streams.contains(&r.ssrc)).cloned());
        Some(kept)
    }

    /// `packets` without report blocks about RID-mapped streams, in one pass; a receiver
    /// report left with none goes entirely. `None` when no block names such a stream.
    fn without_rid_reports(&self, packets: &[Box<dyn rtcp::Packet>]) -> Option<Vec<Box<dyn rtcp::Packet>>> {
        let mut out: Option<Vec<Box<dyn rtcp::Packet>>> = None;
        for (i, p) in packets.iter().enumerate() {
            let any = p.as_any();
            let replaced: Option<Option<Box<dyn rtcp::Packet>>> = if let Some(rr) = any.downcast_ref::<ReceiverReport>()
            {
                self.kept(&rr.reports).map(|reports| {
                    (!reports.is_empty())
                        .then(|| Box::new(ReceiverReport { reports, ..rr.clone() }) as Box<dyn rtcp::Packet>)
                })
            } else if let Some(sr) = any.downcast_ref::<SenderReport>() {
                // A sender report keeps its sender information even with no blocks left.
                self.kept(&sr.reports).map(|reports| Some(Box::new(SenderReport { reports, ..sr.clone() }) as _))
            } else {
                None
            };
            match (replaced, out.as_mut()) {
                // The first change: everything before it was kept as it was.
                (Some(packet), None) => {
                    let mut kept: Vec<_> = packets[..i].to_vec();
                    kept.extend(packet);
                    out = Some(kept);
                }
                (Some(packet), Some(kept)) => kept.extend(packet),
                (None, Some(kept)) => kept.push(p.clone()),
                (None, None) => {}
            }
        }
        out
    }
}

impl PacketFilter for RidStreamReportFilter {
    fn read(&mut self, msg: TaggedPacket) -> Option<TaggedPacket> {
        if let ChainPacket::Rtp(packet) = &msg.message.packet {
            let ssrc = packet.header.ssrc;
            if let Entry::Occupied(entry) = self.rid_extension.entry(ssrc)
                && packet.header.get_extension(*entry.get()).is_some()
            {
                entry.remove();
                self.rid_streams.insert(ssrc);
            }
        }
        Some(msg)
    }

    fn write(&mut self, mut msg: TaggedPacket) -> Option<TaggedPacket> {
        if !self.rid_streams.is_empty()
            && let ChainPacket::Rtcp(packets) = &msg.message.packet
            && let Some(kept) = self.without_rid_reports(packets)
        {
            if kept.is_empty() {
                return None;
            }
            msg.message.packet = ChainPacket::Rtcp(kept);
        }
        Some(msg)
    }

    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        if let Some(ext) = info.rtp_header_extensions.iter().find(|e| e.uri == RID_URI)
            && let Ok(id) = u8::try_from(ext.id)
            && !self.rid_streams.contains(&info.ssrc)
        {
            self.rid_extension.insert(info.ssrc, id);
        }
    }

    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        self.rid_extension.remove(&info.ssrc);
        self.rid_streams.remove(&info.ssrc);
    }
}

/// Puts every packet the application sends again on its stream's RTX SSRC (RFC 4588: RTX
/// payload type, the repair stream's own sequence numbers, the original sequence number ahead
/// of the payload), for streams that negotiated RTX.
///
/// The node answers NACKs itself, from the publisher's packet cache, and the stack lets an
/// application write only on a track's primary SSRC; so a packet "sent again" is one no newer
/// than the newest already sent on its stream. That also covers a late packet the router
/// forwards in its place (a publisher's reordering), which the receiver puts back in order just
/// the same. Receivers need the repair stream: the load tester's `rtc` stack did not deliver a
/// second copy of a packet on the primary SSRC once it had decrypted the first (the NACK test
/// drops its packets after decryption), while the same copy on the repair stream is repaired.
#[derive(Default)]
pub(crate) struct RtxWrapper {
    streams: HashMap<u32, RtxStream>,
}

struct RtxStream {
    ssrc_rtx: u32,
    payload_type_rtx: u8,
    /// Newest sequence number sent on the primary SSRC.
    newest: Option<u16>,
    /// Next sequence number of the repair stream.
    next_rtx: u16,
}

impl PacketFilter for RtxWrapper {
    fn write(&mut self, mut msg: TaggedPacket) -> Option<TaggedPacket> {
        if let ChainPacket::Rtp(packet) = &mut msg.message.packet
            && let Some(stream) = self.streams.get_mut(&packet.header.ssrc)
        {
            let seq = packet.header.sequence_number;
            match stream.newest {
                Some(newest) if seq.wrapping_sub(newest) as i16 <= 0 => {
                    let mut payload = bytes::BytesMut::with_capacity(2 + packet.payload.len());
                    payload.extend_from_slice(&seq.to_be_bytes());
                    payload.extend_from_slice(&packet.payload);
                    packet.payload = payload.freeze();
                    packet.header.ssrc = stream.ssrc_rtx;
                    packet.header.payload_type = stream.payload_type_rtx;
                    packet.header.sequence_number = stream.next_rtx;
                    stream.next_rtx = stream.next_rtx.wrapping_add(1);
                    msg.message.add(Attribute::Retransmission);
                }
                _ => stream.newest = Some(seq),
            }
        }
        Some(msg)
    }

    fn bind_local_stream(&mut self, info: &StreamInfo) {
        if let (Some(ssrc_rtx), Some(payload_type_rtx)) = (info.ssrc_rtx, info.payload_type_rtx) {
            // Its first number as unpredictable as the SSRC the stack drew at random.
            let next_rtx = (ssrc_rtx >> 16) as u16 ^ ssrc_rtx as u16;
            self.streams.insert(info.ssrc, RtxStream { ssrc_rtx, payload_type_rtx, newest: None, next_rtx });
        }
    }

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.streams.remove(&info.ssrc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtcp::transport_feedbacks::transport_layer_nack::NackPair;

    fn report(ssrcs: &[u32]) -> Box<dyn rtcp::Packet> {
        let reports = ssrcs.iter().map(|&ssrc| ReceptionReport { ssrc, ..Default::default() });
        Box::new(ReceiverReport { ssrc: 1, reports: reports.collect(), ..Default::default() })
    }

    /// What leaves `filter` for `packets`, as each packet's report-block SSRCs (an empty list
    /// for anything but a receiver report); `None` when nothing leaves.
    fn written<F: PacketFilter>(
        filter: &mut Filtered<F>,
        packets: Vec<Box<dyn rtcp::Packet>>,
    ) -> Option<Vec<Vec<u32>>> {
        let msg = TaggedPacket {
            now: Instant::now(),
            transport: Default::default(),
            message: ChainPacket::Rtcp(packets).into(),
        };
        filter.handle_write(msg).expect("write");
        let out = filter.poll_write()?;
        assert!(filter.poll_write().is_none(), "one packet in, at most one out");
        let ChainPacket::Rtcp(packets) = out.message.packet else { panic!("not RTCP") };
        Some(
            packets
                .iter()
                .map(|p| match p.as_any().downcast_ref::<ReceiverReport>() {
                    Some(rr) => rr.reports.iter().map(|r| r.ssrc).collect(),
                    None => vec![],
                })
                .collect(),
        )
    }

    /// A published packet of `ssrc` read through `filter`, tagged with RID `f` at `rid_id`.
    fn read<F: PacketFilter>(filter: &mut Filtered<F>, ssrc: u32, rid_id: Option<u8>) {
        let mut packet = rtc::rtp::Packet::default();
        packet.header.ssrc = ssrc;
        if let Some(id) = rid_id {
            packet.header.set_extension(id, bytes::Bytes::from_static(b"f")).expect("extension");
        }
        let msg = TaggedPacket {
            now: Instant::now(),
            transport: Default::default(),
            message: ChainPacket::Rtp(packet).into(),
        };
        filter.handle_read(msg).expect("read");
        assert!(filter.poll_read().is_some(), "every packet goes on");
    }

    fn rid_stream(ssrc: u32) -> StreamInfo {
        StreamInfo {
            ssrc,
            rtp_header_extensions: vec![rtc::interceptor::RTPHeaderExtension { uri: RID_URI.to_owned(), id: 4 }],
            ..Default::default()
        }
    }

    #[test]
    fn reports_about_rid_mapped_streams_never_leave() {
        let mut filter = Filtered::new(RidStreamReportFilter::default());
        filter.bind_remote_stream(&rid_stream(20));
        filter.bind_remote_stream(&rid_stream(30));
        filter.bind_remote_stream(&StreamInfo { ssrc: 10, ..Default::default() });
        // Nothing seen tagged yet: reports pass untouched.
        assert_eq!(written(&mut filter, vec![report(&[10, 20])]), Some(vec![vec![10, 20]]));
        // 30 negotiated the extension but its packet carries none (a declared SSRC); 10 did
        // not negotiate it: both reported.
        read(&mut filter, 30, None);
        read(&mut filter, 10, Some(4));
        read(&mut filter, 20, Some(4));
        assert_eq!(written(&mut filter, vec![report(&[10, 20, 30])]), Some(vec![vec![10, 30]]));
        // The RID-mapped stream's block goes, the other stays.
        assert_eq!(written(&mut filter, vec![report(&[10, 20])]), Some(vec![vec![10]]));
        // A report about it alone goes entirely; so does a compound of nothing else.
        assert_eq!(written(&mut filter, vec![report(&[20])]), None);
        // Other RTCP in the same compound stays, in its place, before and after the change.
        let pli = || -> Box<dyn rtcp::Packet> { Box::new(PictureLossIndication { sender_ssrc: 1, media_ssrc: 30 }) };
        assert_eq!(written(&mut filter, vec![report(&[20]), pli()]), Some(vec![vec![]]));
        assert_eq!(
            written(&mut filter, vec![pli(), report(&[30]), report(&[20, 10]), pli()]),
            Some(vec![vec![], vec![30], vec![10], vec![]])
        );
        // A sender report keeps its sender information with no block left.
        let sr: Box<dyn rtcp::Packet> = Box::new(SenderReport {
            ssrc: 1,
            reports: vec![ReceptionReport { ssrc: 20, ..Default::default() }],
            ..Default::default()
        });
        let out = filter.filter().without_rid_reports(&[sr]).expect("changed");
        let sr = out[0].as_any().downcast_ref::<SenderReport>().expect("still a sender report");
        assert!(sr.reports.is_empty());
        assert_eq!(sr.ssrc, 1);
        // Nothing about it: nothing to change.
        assert!(filter.filter().without_rid_reports(&[report(&[10, 30]), pli()]).is_none());
    }

    #[test]
    fn a_stream_is_mapped_until_unbound_and_stays_mapped_across_a_rebinding() {
        let mut filter = Filtered::new(RidStreamReportFilter::default());
        filter.bind_remote_stream(&rid_stream(20));
        read(&mut filter, 20, Some(4));
        assert!(filter.filter().rid_extension.is_empty(), "a mapped stream is looked up no more");
        // A renegotiation binds it again: still mapped, nothing to look for.
        filter.bind_remote_stream(&rid_stream(20));
        assert!(filter.filter().rid_extension.is_empty());
        assert_eq!(written(&mut filter, vec![report(&[20])]), None);
        // Unbound, it is forgotten: a stream that reuses the SSRC starts over.
        filter.unbind_remote_stream(&rid_stream(20));
        assert_eq!(written(&mut filter, vec![report(&[20])]), Some(vec![vec![20]]));
        // Another RID id than the one negotiated does not map it.
        filter.bind_remote_stream(&rid_stream(20));
        read(&mut filter, 20, Some(5));
        assert_eq!(written(&mut filter, vec![report(&[20])]), Some(vec![vec![20]]));
    }

    #[test]
    fn keyframe_requests_go_on_to_the_application_and_the_latest_remb_is_kept() {
        let cell = Arc::new(AtomicU64::new(0));
        let mut forwarder = Filtered::new(KeyframeRequestForwarder::with_downlink_estimate(Arc::clone(&cell)));
        let remb: Box<dyn rtcp::Packet> =
            Box::new(ReceiverEstimatedMaximumBitrate { bitrate: 750_000.0, ..Default::default() });
        let pli: Box<dyn rtcp::Packet> = Box::new(PictureLossIndication { sender_ssrc: 1, media_ssrc: 7 });
        let msg = TaggedPacket {
            now: Instant::now(),
            transport: Default::default(),
            message: ChainPacket::Rtcp(vec![report(&[7]), remb, pli]).into(),
        };
        forwarder.handle_read(msg).expect("read");
        let out = forwarder.poll_read().expect("passed on");
        assert_eq!(cell.load(Ordering::Relaxed), 750_000);
        assert!(out.message.has(&Attribute::DeliverToApplication));
        let ChainPacket::Rtcp(packets) = &out.message.packet else { panic!("not RTCP") };
        assert_eq!(packets.len(), 1, "only the request goes on");
        assert!(is_keyframe_request(packets[0].as_ref()));
    }

    /// What leaves `wrapper` for an RTP packet of `ssrc` numbered `seq` with payload `[9]`.
    fn sent<F: PacketFilter>(wrapper: &mut Filtered<F>, ssrc: u32, seq: u16) -> (u32, u8, u16, Vec<u8>, bool) {
        let mut packet = rtc::rtp::Packet::default();
        packet.header.ssrc = ssrc;
        packet.header.payload_type = 96;
        packet.header.sequence_number = seq;
        packet.payload = bytes::Bytes::from_static(&[9]);
        let msg = TaggedPacket {
            now: Instant::now(),
            transport: Default::default(),
            message: ChainPacket::Rtp(packet).into(),
        };
        wrapper.handle_write(msg).expect("write");
        let out = wrapper.poll_write().expect("every packet goes out");
        let repair = out.message.has(&Attribute::Retransmission);
        let ChainPacket::Rtp(p) = out.message.packet else { panic!("not RTP") };
        (p.header.ssrc, p.header.payload_type, p.header.sequence_number, p.payload.to_vec(), repair)
    }

    /// A filter that notes each packet it sees under its name, and drops them if told to.
    struct Tracer {
        name: &'static str,
        seen: Arc<std::sync::Mutex<Vec<&'static str>>>,
        drops: bool,
    }

    impl Tracer {
        fn pass(&mut self, msg: TaggedPacket) -> Option<TaggedPacket> {
            self.seen.lock().unwrap().push(self.name);
            (!self.drops).then_some(msg)
        }
    }

    impl PacketFilter for Tracer {
        fn read(&mut self, msg: TaggedPacket) -> Option<TaggedPacket> {
            self.pass(msg)
        }
        fn write(&mut self, msg: TaggedPacket) -> Option<TaggedPacket> {
            self.pass(msg)
        }
    }

    #[test]
    fn a_pair_reads_through_its_wire_side_filter_first_writes_through_it_last_and_stops_at_a_drop() {
        let packet = || TaggedPacket {
            now: Instant::now(),
            transport: Default::default(),
            message: ChainPacket::Rtcp(vec![]).into(),
        };
        for (wire_drops, app_drops) in [(false, false), (true, false), (false, true)] {
            let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
            let tracer = |name, drops| Tracer { name, seen: Arc::clone(&seen), drops };
            let mut pair = Filtered::new((tracer("wire", wire_drops), tracer("app", app_drops)));
            pair.handle_read(packet()).expect("read");
            assert_eq!(pair.poll_read().is_some(), !wire_drops && !app_drops);
            pair.handle_write(packet()).expect("write");
            assert_eq!(pair.poll_write().is_some(), !wire_drops && !app_drops);
            let expected: &[&str] = match (wire_drops, app_drops) {
                (false, false) => &["wire", "app", "app", "wire"],
                // In: dropped before the other sees it; out: the other saw it first.
                (true, _) => &["wire", "app", "wire"],
                (_, true) => &["wire", "app", "app"],
            };
            assert_eq!(seen.lock().unwrap().as_slice(), expected, "wire drops {wire_drops}, app drops {app_drops}");
        }
    }

    #[test]
    fn the_nodes_send_stage_withholds_rid_reports_and_resends_on_the_repair_stream() {
        let mut stage = node_send_filters();
        stage.bind_remote_stream(&rid_stream(20));
        stage.bind_local_stream(&StreamInfo {
            ssrc: 10,
            ssrc_rtx: Some(11),
            payload_type: 96,
            payload_type_rtx: Some(97),
            ..Default::default()
        });
        read(&mut stage, 20, Some(4));
        assert_eq!(written(&mut stage, vec![report(&[20, 30])]), Some(vec![vec![30]]));
        assert_eq!(sent(&mut stage, 10, 7), (10, 96, 7, vec![9], false));
        let (ssrc, pt, _, payload, repair) = sent(&mut stage, 10, 7);
        assert_eq!((ssrc, pt, payload, repair), (11, 97, vec![0, 7, 9], true));
    }

    #[test]
    fn a_packet_sent_again_goes_out_on_the_repair_stream() {
        let mut wrapper = Filtered::new(RtxWrapper::default());
        let video = StreamInfo {
            ssrc: 10,
            ssrc_rtx: Some(11),
            payload_type: 96,
            payload_type_rtx: Some(97),
            ..Default::default()
        };
        wrapper.bind_local_stream(&video);
        wrapper.bind_local_stream(&StreamInfo { ssrc: 20, ..Default::default() });
        assert_eq!(sent(&mut wrapper, 10, 65_535), (10, 96, 65_535, vec![9], false));
        assert_eq!(sent(&mut wrapper, 10, 0), (10, 96, 0, vec![9], false), "newer, across the wrap");
        // Sent again (or late): on the repair stream, the original number ahead of the payload.
        let (ssrc, pt, first_rtx, payload, repair) = sent(&mut wrapper, 10, 65_535);
        assert_eq!((ssrc, pt, payload, repair), (11, 97, vec![0xff, 0xff, 9], true));
        let (_, _, second_rtx, payload, _) = sent(&mut wrapper, 10, 0);
        assert_eq!(second_rtx, first_rtx.wrapping_add(1), "the repair stream numbers its own packets");
        assert_eq!(payload, vec![0, 0, 9]);
        assert_eq!(sent(&mut wrapper, 10, 1), (10, 96, 1, vec![9], false), "new packets stay on the primary");
        // A stream without RTX, and one unbound, go as they are.
        sent(&mut wrapper, 20, 5);
        assert_eq!(sent(&mut wrapper, 20, 4), (20, 96, 4, vec![9], false));
        wrapper.unbind_local_stream(&video);
        assert_eq!(sent(&mut wrapper, 10, 0), (10, 96, 0, vec![9], false));
    }

    #[test]
    fn nacks_go_on_only_from_a_forwarder_told_to_pass_them() {
        let nack = || -> Box<dyn rtcp::Packet> {
            Box::new(TransportLayerNack { sender_ssrc: 1, media_ssrc: 7, nacks: vec![NackPair::new(40)] })
        };
        let passed = |forwarder: KeyframeRequestForwarder| {
            let mut forwarder = Filtered::new(forwarder);
            let msg = TaggedPacket {
                now: Instant::now(),
                transport: Default::default(),
                message: ChainPacket::Rtcp(vec![report(&[7]), nack()]).into(),
            };
            forwarder.handle_read(msg).expect("read");
            let out = forwarder.poll_read().expect("passed on");
            let ChainPacket::Rtcp(packets) = &out.message.packet else { panic!("not RTCP") };
            (out.message.has(&Attribute::DeliverToApplication), packets.len())
        };
        assert_eq!(passed(KeyframeRequestForwarder::default()), (false, 2), "untouched, ends in the chain");
        let node = KeyframeRequestForwarder::with_downlink_estimate(Arc::default()).forwarding_nacks();
        assert_eq!(passed(node), (true, 1), "the NACK alone, for the application");
    }
}
