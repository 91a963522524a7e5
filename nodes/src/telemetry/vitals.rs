//! The node's vitals for its operators, sampled once a second into the live layer's journal
//! (`parley_actors::ops::Journal`): CPU and memory of the process, packets per second through
//! the media socket, open WebSockets, and each peer's status (a change is a journal event).

use std::sync::Arc;
use std::time::{Duration, Instant};

use parley_actors::LiveServices;
use parley_actors::ops::{self, Vitals};

use super::process;

/// How often the vitals are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Samples until the process ends.
pub fn spawn(services: Arc<LiveServices>) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(SAMPLE_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut before: Option<Reading> = None;
        loop {
            ticker.tick().await;
            let now = Reading::take(&services);
            let vitals = now.vitals(before.as_ref(), services.metrics.websockets_open());
            let (meetings, participants) = services.meetings.load();
            let media_peers = services.meetings.list().iter().map(|(_, _, peers)| peers).sum();
            services.ops.sample(vitals, (meetings, participants, media_peers));
            let m = &services.membership;
            for p in m.peers() {
                services.ops.observe_peer(&p.name, ops::peer_status(m, &p.name));
            }
            before = Some(now);
        }
    });
}

/// Cumulative counters at one moment.
struct Reading {
    at: Instant,
    process: Option<process::ProcessSample>,
    datagrams: Option<(u64, u64)>,
}

impl Reading {
    fn take(s: &LiveServices) -> Reading {
        let datagrams = s.media.shared_socket.as_ref().map(|socket| {
            let st = socket.stats();
            (st.datagrams_in, st.datagrams_out)
        });
        Reading { at: Instant::now(), process: process::sample(), datagrams }
    }

    /// Rates since `before` (0 on the first reading), and the levels now.
    fn vitals(&self, before: Option<&Reading>, websockets: i64) -> Vitals {
        let mut v =
            Vitals { memory_bytes: self.process.map_or(0, |p| p.resident_bytes), websockets, ..Vitals::default() };
        let Some(b) = before else { return v };
        let secs = self.at.duration_since(b.at).as_secs_f64();
        if secs <= 0.0 {
            return v;
        }
        if let (Some(now), Some(then)) = (self.process, b.process) {
            v.cpu_percent = ((now.cpu_seconds - then.cpu_seconds).max(0.0) / secs * 100.0 * 10.0).round() / 10.0;
        }
        if let (Some((i, o)), Some((bi, bo))) = (self.datagrams, b.datagrams) {
            v.packets_in_per_sec = (i.saturating_sub(bi) as f64 / secs).round();
            v.packets_out_per_sec = (o.saturating_sub(bo) as f64 / secs).round();
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_deltas_over_the_time_between_readings() {
        let t0 = Instant::now();
        let p = |cpu| Some(process::ProcessSample { cpu_seconds: cpu, resident_bytes: 4096 });
        let first = Reading { at: t0, process: p(10.0), datagrams: Some((1000, 500)) };
        let v = first.vitals(None, 3);
        assert_eq!((v.cpu_percent, v.packets_in_per_sec, v.memory_bytes, v.websockets), (0.0, 0.0, 4096, 3));
        let second = Reading { at: t0 + Duration::from_secs(2), process: p(11.5), datagrams: Some((3000, 1500)) };
        let v = second.vitals(Some(&first), 3);
        assert_eq!(v.cpu_percent, 75.0);
        assert_eq!((v.packets_in_per_sec, v.packets_out_per_sec), (1000.0, 500.0));
        // No shared socket (a port per peer): no packet rates, still CPU.
        let third = Reading { at: t0 + Duration::from_secs(3), process: p(12.0), datagrams: None };
        assert_eq!(third.vitals(Some(&second), 0).packets_in_per_sec, 0.0);
        assert_eq!(third.vitals(Some(&second), 0).cpu_percent, 50.0);
    }
}
