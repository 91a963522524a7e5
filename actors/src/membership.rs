//! Who is in the cluster and who is alive: a shared view that the node's membership task
//! (nodes/src/cluster.rs) keeps current from two signals — the peers' Redis leases and the
//! ractor_cluster sessions — and that placement and routing read.
//!
//! A peer is *reachable* when its `NodeHost` is visible (its session is up) and *dead* when its
//! lease has lapsed and no session is up, or when its lease has stayed lapsed for two TTLs
//! whatever the session says (a half-open TCP connection must not keep a dead node alive).

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parley_core::placement::NodeLoad;
use parley_presence::NodeLease;
use ractor::ActorRef;

use crate::wire::NodeHostMsg;

pub type NodeHostRef = ActorRef<NodeHostMsg>;

/// The process-group scope of node hosts, and the group every host joins.
pub const SCOPE: &str = "parley-cluster";
pub const NODES_GROUP: &str = "nodes";

/// The group of one node's host.
pub fn host_group(node: &str) -> String {
    format!("node:{node}")
}

/// A cluster member as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    pub name: String,
    pub host: String,
    pub http_port: u16,
    pub cluster_port: u16,
    pub max_meetings: u32,
    pub max_participants: u32,
}

/// What this node last saw of a peer.
#[derive(Debug, Clone, Default)]
pub struct PeerState {
    pub lease: Option<NodeLease>,
    /// When the lease was last seen present.
    pub lease_seen: Option<Instant>,
    /// When the lease was first seen missing (since the last time it was present).
    pub lease_missing_since: Option<Instant>,
    pub connected: bool,
}

/// The cluster as this node sees it.
pub struct Membership {
    me: NodeSpec,
    peers: Vec<NodeSpec>,
    state: RwLock<BTreeMap<String, PeerState>>,
    lease_ttl: Duration,
    draining: AtomicBool,
    /// This node holds its lease (it can reach Redis); without it, it takes no new meetings.
    lease_held: AtomicBool,
}

impl Membership {
    /// A node alone (no peers): everything is placed here.
    pub fn standalone(me: NodeSpec) -> Membership {
        Membership::new(me, Vec::new(), Duration::from_secs(3))
    }

    pub fn new(me: NodeSpec, peers: Vec<NodeSpec>, lease_ttl: Duration) -> Membership {
        let state = peers.iter().map(|p| (p.name.clone(), PeerState::default())).collect();
        Membership {
            me,
            peers,
            state: RwLock::new(state),
            lease_ttl,
            draining: AtomicBool::new(false),
            lease_held: AtomicBool::new(true),
        }
    }

    pub fn me(&self) -> &NodeSpec {
        &self.me
    }

    pub fn peers(&self) -> &[NodeSpec] {
        &self.peers
    }

    pub fn is_standalone(&self) -> bool {
        self.peers.is_empty()
    }

    pub fn lease_ttl(&self) -> Duration {
        self.lease_ttl
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn set_draining(&self, on: bool) {
        self.draining.store(on, Ordering::Relaxed);
    }

    pub fn lease_held(&self) -> bool {
        self.lease_held.load(Ordering::Relaxed)
    }

    pub fn set_lease_held(&self, held: bool) {
        self.lease_held.store(held, Ordering::Relaxed);
    }

    /// Records the peers' leases as just read (`None`: lapsed), in [`Membership::peers`] order.
    pub fn observe_leases(&self, leases: Vec<(String, Option<NodeLease>)>) {
        let now = Instant::now();
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        for (node, lease) in leases {
            let s = state.entry(node).or_default();
            match lease {
                Some(l) => {
                    s.lease = Some(l);
                    s.lease_seen = Some(now);
                    s.lease_missing_since = None;
                }
                None => {
                    s.lease = None;
                    s.lease_missing_since.get_or_insert(now);
                }
            }
        }
    }

    /// Records a session coming up or going down.
    pub fn observe_session(&self, node: &str, connected: bool) {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = state.get_mut(node) {
            s.connected = connected;
        }
    }

    pub fn peer(&self, node: &str) -> Option<PeerState> {
        self.state.read().unwrap_or_else(|p| p.into_inner()).get(node).cloned()
    }

    /// Whether `node` is presumed dead (see the module docs). Never this node; never a peer we
    /// have not observed yet (no lease read so far).
    pub fn is_dead(&self, node: &str) -> bool {
        if node == self.me.name {
            return false;
        }
        let Some(s) = self.peer(node) else {
            // Not a configured member at all: nobody will ever refresh its lease.
            return true;
        };
        match s.lease_missing_since {
            None => false,
            Some(since) => !s.connected || since.elapsed() >= self.lease_ttl * 2,
        }
    }

    /// The host actor of `node` if its session is up (this node's own host included).
    pub fn host(&self, node: &str) -> Option<NodeHostRef> {
        let members = ractor::pg::get_scoped_members(&SCOPE.to_owned(), &host_group(node));
        members.into_iter().next().map(ActorRef::from)
    }

    /// Peers that can take a meeting now: lease present and not draining, session up.
    pub fn candidates(&self) -> Vec<(String, NodeLoad)> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        state
            .iter()
            .filter(|(_, s)| s.connected)
            .filter_map(|(n, s)| s.lease.as_ref().map(|l| (n.clone(), l.load.clone())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> NodeSpec {
        NodeSpec {
            name: name.into(),
            host: "127.0.0.1".into(),
            http_port: 1,
            cluster_port: 2,
            max_meetings: 10,
            max_participants: 100,
        }
    }

    fn lease(name: &str) -> NodeLease {
        NodeLease {
            load: NodeLoad {
                node: name.into(),
                meetings: 0,
                participants: 0,
                max_meetings: 10,
                max_participants: 100,
                draining: false,
            },
            http: String::new(),
            media: String::new(),
            at_ms: 0,
        }
    }

    #[test]
    fn a_peer_is_dead_only_when_its_lease_lapsed_and_its_session_is_gone() {
        let m = Membership::new(spec("a"), vec![spec("b")], Duration::from_millis(50));
        assert!(!m.is_dead("a"), "never ourselves");
        assert!(m.is_dead("zzz"), "not a member");
        assert!(!m.is_dead("b"), "not observed yet");
        m.observe_leases(vec![("b".into(), Some(lease("b")))]);
        m.observe_session("b", true);
        assert!(!m.is_dead("b"));
        assert_eq!(m.candidates().len(), 1);
        // Lease lapses but the session is up: alive for now (Redis may just have restarted) …
        m.observe_leases(vec![("b".into(), None)]);
        assert!(!m.is_dead("b"));
        assert!(m.candidates().is_empty(), "no lease, no new meetings");
        // … until two TTLs pass.
        std::thread::sleep(Duration::from_millis(110));
        assert!(m.is_dead("b"));
        // The session going down makes it dead at once.
        m.observe_leases(vec![("b".into(), Some(lease("b")))]);
        m.observe_leases(vec![("b".into(), None)]);
        m.observe_session("b", false);
        assert!(m.is_dead("b"));
    }
}
