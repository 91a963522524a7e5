//! Meeting placement: which node carries a new meeting (the seed's "server selection based on
//! current load"). Pure: the cluster layer gathers [`NodeLoad`]s from the node leases and acts
//! on the answer.

use serde::{Deserialize, Serialize};

/// What a node's lease says about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeLoad {
    pub node: String,
    /// Live meetings it carries.
    pub meetings: u32,
    /// Connected participants of those meetings.
    pub participants: u32,
    pub max_meetings: u32,
    pub max_participants: u32,
    /// An operator asked it to take no new meetings.
    pub draining: bool,
}

impl NodeLoad {
    /// Whether one more meeting fits.
    pub fn has_capacity(&self) -> bool {
        !self.draining && self.meetings < self.max_meetings && self.participants < self.max_participants
    }

    /// The fuller of the two budgets, 0.0 (idle) to 1.0 (full).
    pub fn load(&self) -> f64 {
        let m = f64::from(self.meetings) / f64::from(self.max_meetings.max(1));
        let p = f64::from(self.participants) / f64::from(self.max_participants.max(1));
        m.max(p)
    }
}

/// The node a new meeting goes to: among live nodes with capacity, the least loaded; ties go to
/// `local` (no cross-node hop for the one who starts it), then to the first name in order.
/// `None` when every node is full, draining or gone.
pub fn choose<'a>(nodes: &'a [NodeLoad], local: &str) -> Option<&'a str> {
    nodes
        .iter()
        .filter(|n| n.has_capacity())
        .min_by(|a, b| {
            a.load()
                .total_cmp(&b.load())
                .then_with(|| (a.node != local).cmp(&(b.node != local)))
                .then_with(|| a.node.cmp(&b.node))
        })
        .map(|n| n.node.as_str())
}

/// Who owns a meeting: a node and the fencing epoch it claimed it with. Stored in Redis as
/// `node/epoch` under `meeting:{ID}:media_server`; the epoch is the meeting's `owner_epoch` in
/// the database, which every write of the owner must match.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Owner {
    pub node: String,
    pub epoch: i64,
}

impl Owner {
    /// `node/epoch`.
    pub fn encode(&self) -> String {
        format!("{}/{}", self.node, self.epoch)
    }

    /// Reads `node/epoch`; a bare `node` (a claim whose epoch is not recorded yet) has epoch 0.
    pub fn parse(s: &str) -> Option<Owner> {
        let (node, epoch) = match s.rsplit_once('/') {
            Some((node, epoch)) => (node, epoch.parse().ok()?),
            None => (s, 0),
        };
        (!node.is_empty()).then(|| Owner { node: node.to_owned(), epoch })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, meetings: u32, participants: u32) -> NodeLoad {
        NodeLoad { node: name.into(), meetings, participants, max_meetings: 10, max_participants: 100, draining: false }
    }

    #[test]
    fn least_loaded_wins() {
        let nodes = [node("a", 3, 10), node("b", 1, 5), node("c", 2, 0)];
        assert_eq!(choose(&nodes, "a"), Some("b"));
    }

    #[test]
    fn participants_count_as_load_too() {
        // b has fewer meetings but is nearly full of people.
        let nodes = [node("a", 3, 10), node("b", 1, 95)];
        assert_eq!(choose(&nodes, "b"), Some("a"));
    }

    #[test]
    fn ties_prefer_the_local_node_then_name_order() {
        let nodes = [node("a", 1, 0), node("b", 1, 0), node("c", 1, 0)];
        assert_eq!(choose(&nodes, "c"), Some("c"));
        assert_eq!(choose(&nodes, "z"), Some("a"));
    }

    #[test]
    fn full_and_draining_nodes_are_skipped() {
        let mut drained = node("a", 0, 0);
        drained.draining = true;
        let nodes = [drained, node("b", 10, 0), node("c", 9, 99)];
        assert_eq!(choose(&nodes, "a"), Some("c"));
        let none = [node("b", 10, 0)];
        assert_eq!(choose(&none, "b"), None);
        assert_eq!(choose(&[], "b"), None);
    }

    #[test]
    fn spreading_meetings_one_by_one_balances_nodes() {
        let mut nodes = vec![node("a", 0, 0), node("b", 0, 0), node("c", 0, 0)];
        for n in &mut nodes {
            n.max_meetings = 100;
        }
        for _ in 0..30 {
            let chosen = choose(&nodes, "b").unwrap().to_owned();
            nodes.iter_mut().find(|n| n.node == chosen).unwrap().meetings += 1;
        }
        assert!(nodes.iter().all(|n| n.meetings == 10), "{nodes:?}");
    }

    #[test]
    fn owner_round_trips_and_rejects_garbage() {
        let o = Owner { node: "node-a".into(), epoch: 7 };
        assert_eq!(Owner::parse(&o.encode()), Some(o));
        assert_eq!(Owner::parse("node-b"), Some(Owner { node: "node-b".into(), epoch: 0 }));
        assert_eq!(Owner::parse("node-b/x"), None);
        assert_eq!(Owner::parse("/3"), None);
    }
}
