//! Which of the media socket's driver threads a new connection goes to (pure).
//!
//! Each thread owns its connections: it decrypts what they publish and encrypts what they are
//! sent. A packet forwarded between two connections of one thread costs nothing extra; one
//! forwarded to another thread's connection is queued to that thread (a wake-up, a little
//! latency). So a meeting's connections stay together on one thread, its *home*, while the
//! meeting is small. Once it reaches `spread_at` connections its fan-out is worth splitting:
//! each new connection goes to the thread holding the fewest of the meeting's, so a 1 → 200
//! meeting's copies are encrypted on every core at once. Connections with no meeting go to the
//! least loaded thread, as does a new meeting's home.

use std::collections::HashMap;
use std::sync::Arc;

/// A connection's id carries its thread in its low bits.
pub const THREAD_BITS: u32 = 6;
/// Most driver threads one socket runs.
pub const MAX_THREADS: usize = 1 << THREAD_BITS;
/// Default `spread_at`: below this a meeting's fan-out costs a thread little (at ~10 µs per
/// copy, a 4-packet video frame to 24 subscribers is about 1 ms of work).
pub const DEFAULT_SPREAD_AT: usize = 24;

/// A connection on the node's media socket, named by the id [`Placement::admit`] gave it: its
/// driver thread is [`thread_of`] it.
pub(crate) type PeerId = u64;

/// The thread an id was placed on.
pub fn thread_of(id: u64) -> usize {
    (id & (MAX_THREADS as u64 - 1)) as usize
}

/// Connections per thread and per meeting, and the choice of thread for the next one.
#[derive(Debug)]
pub struct Placement {
    spread_at: usize,
    /// Connections per thread.
    load: Vec<usize>,
    /// Per meeting: its connections per thread.
    groups: HashMap<Arc<str>, Vec<usize>>,
    /// Every placed connection's meeting, to release it.
    members: HashMap<u64, Option<Arc<str>>>,
    next_seq: u64,
}

impl Placement {
    /// `threads` is clamped to `1..=MAX_THREADS`; `spread_at` to at least 1.
    pub fn new(threads: usize, spread_at: usize) -> Self {
        Self {
            spread_at: spread_at.max(1),
            load: vec![0; threads.clamp(1, MAX_THREADS)],
            groups: HashMap::new(),
            members: HashMap::new(),
            next_seq: 1,
        }
    }

    pub fn threads(&self) -> usize {
        self.load.len()
    }

    /// Connections on each thread.
    pub fn load(&self) -> &[usize] {
        &self.load
    }

    /// Places a new connection of meeting `group` (none: a connection of its own) and returns
    /// its id; [`thread_of`] the id is the thread chosen.
    pub fn admit(&mut self, group: Option<&str>) -> u64 {
        let thread = self.choose(group);
        let id = (self.next_seq << THREAD_BITS) | thread as u64;
        self.next_seq += 1;
        self.load[thread] += 1;
        let group: Option<Arc<str>> = group.map(Arc::from);
        if let Some(g) = &group {
            let threads = self.load.len();
            self.groups.entry(Arc::clone(g)).or_insert_with(|| vec![0; threads])[thread] += 1;
        }
        self.members.insert(id, group);
        id
    }

    /// Forgets connection `id` (closed); an unknown or already released id is ignored.
    pub fn release(&mut self, id: u64) {
        let Some(group) = self.members.remove(&id) else { return };
        let thread = thread_of(id);
        self.load[thread] = self.load[thread].saturating_sub(1);
        if let Some(g) = group
            && let Some(counts) = self.groups.get_mut(&g)
        {
            counts[thread] = counts[thread].saturating_sub(1);
            if counts.iter().all(|c| *c == 0) {
                self.groups.remove(&g);
            }
        }
    }

    fn choose(&self, group: Option<&str>) -> usize {
        let least_loaded =
            |candidates: &mut dyn Iterator<Item = usize>| candidates.min_by_key(|t| (self.load[*t], *t)).unwrap_or(0);
        let Some(counts) = group.and_then(|g| self.groups.get(g)) else {
            return least_loaded(&mut (0..self.load.len()));
        };
        let total: usize = counts.iter().sum();
        if total < self.spread_at {
            // Home: where most of the meeting already is.
            let most = counts.iter().copied().max().unwrap_or(0);
            least_loaded(&mut (0..counts.len()).filter(|t| counts[*t] == most))
        } else {
            let fewest = counts.iter().copied().min().unwrap_or(0);
            least_loaded(&mut (0..counts.len()).filter(|t| counts[*t] == fewest))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn threads_of(ids: &[u64], threads: usize) -> Vec<usize> {
        let mut per = vec![0; threads];
        for id in ids {
            per[thread_of(*id)] += 1;
        }
        per
    }

    #[test]
    fn a_small_meeting_stays_on_one_thread() {
        let mut p = Placement::new(4, 24);
        let ids: Vec<u64> = (0..11).map(|_| p.admit(Some("m1"))).collect();
        let per = threads_of(&ids, 4);
        assert_eq!(per.iter().filter(|n| **n > 0).count(), 1, "{per:?}");
        assert_eq!(per.iter().sum::<usize>(), 11);
    }

    #[test]
    fn new_meetings_go_home_to_the_least_loaded_thread() {
        let mut p = Placement::new(2, 24);
        let a: Vec<u64> = (0..5).map(|_| p.admit(Some("a"))).collect();
        let b = p.admit(Some("b"));
        assert_ne!(thread_of(a[0]), thread_of(b), "the second meeting's home is the idle thread");
        let c = p.admit(None);
        assert_eq!(thread_of(c), thread_of(b), "a lone connection goes to the least loaded thread");
        assert_eq!(p.load(), &[5, 2]);
    }

    #[test]
    fn a_large_meeting_spreads_evenly_over_every_thread() {
        let mut p = Placement::new(2, 24);
        let ids: Vec<u64> = (0..201).map(|_| p.admit(Some("big"))).collect();
        let per = threads_of(&ids, 2);
        assert!(per[0].abs_diff(per[1]) <= 1, "{per:?}");
        let mut p = Placement::new(3, 10);
        let ids: Vec<u64> = (0..10).map(|_| p.admit(Some("big"))).collect();
        assert_eq!(threads_of(&ids, 3).iter().filter(|n| **n > 0).count(), 1, "under the threshold: one thread");
        let more: Vec<u64> = (0..20).map(|_| p.admit(Some("big"))).collect();
        let all: Vec<u64> = ids.into_iter().chain(more).collect();
        assert_eq!(threads_of(&all, 3), vec![10, 10, 10]);
    }

    #[test]
    fn released_connections_free_their_thread_and_meeting() {
        let mut p = Placement::new(2, 24);
        let ids: Vec<u64> = (0..3).map(|_| p.admit(Some("m"))).collect();
        for id in &ids {
            p.release(*id);
        }
        p.release(ids[0]); // twice: ignored
        p.release(12345); // unknown: ignored
        assert_eq!(p.load(), &[0, 0]);
        assert!(p.groups.is_empty() && p.members.is_empty());
        // A later meeting of the same name starts afresh, on the least loaded thread.
        let other = p.admit(Some("x"));
        let again = p.admit(Some("m"));
        assert_ne!(thread_of(again), thread_of(other));
    }

    #[test]
    fn ids_are_unique_and_carry_their_thread() {
        let mut p = Placement::new(MAX_THREADS + 10, 1);
        assert_eq!(p.threads(), MAX_THREADS);
        let ids: Vec<u64> = (0..500).map(|i| p.admit(if i % 2 == 0 { Some("g") } else { None })).collect();
        let unique: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
        assert!(ids.iter().all(|id| thread_of(*id) < MAX_THREADS && *id != 0));
        assert_eq!(Placement::new(0, 0).threads(), 1);
    }
}
