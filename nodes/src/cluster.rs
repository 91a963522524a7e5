//! The cluster side of a node: the ractor_cluster server on the cluster port, dialling peers
//! with backoff, the node's Redis lease, the failure detector (peers' leases + sessions) and
//! failover of a dead node's meetings.
//!
//! ractor_cluster gives transport, cookie authentication and process groups; everything else
//! here is ours (it has no failure detector, no reconnect and no placement).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use parley_actors::placement::local_load;
use parley_actors::route::locate;
use parley_actors::{LiveServices, Membership, NodeHost, NodeHostArgs, SupervisorRef};
use parley_presence::NodeLease;
use ractor::ActorRef;
use ractor_cluster::{
    IncomingEncryptionMode, NodeEventSubscription, NodeServer, NodeServerMessage, node::NodeServerSessionInformation,
};
use tokio_rustls::TlsConnector;

use crate::cluster_tls::{ClusterTlsContext, server_name};
use crate::config::{NodeEntry, Settings};

/// Longest wait between two dials of an unreachable peer.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// The membership spec of a `[[nodes]]` entry.
pub fn spec(e: &NodeEntry) -> parley_actors::NodeSpec {
    parley_actors::NodeSpec {
        name: e.name.clone(),
        host: e.host.clone(),
        http_port: e.http_port,
        cluster_port: e.cluster_port.unwrap_or(0),
        max_meetings: e.max_meetings.unwrap_or(1_000),
        max_participants: e.max_participants.unwrap_or(10_000),
    }
}

/// Membership for this node's settings: standalone, or a member with its peers.
pub fn membership(settings: &Settings) -> Membership {
    match &settings.member {
        None => Membership::standalone(parley_actors::NodeSpec {
            name: settings.node_name.clone(),
            host: settings.http_addr.ip().to_string(),
            http_port: settings.http_addr.port(),
            cluster_port: 0,
            max_meetings: 1_000,
            max_participants: 10_000,
        }),
        Some(me) => Membership::new(
            spec(me),
            settings.nodes.iter().filter(|n| n.name != me.name).map(spec).collect(),
            settings.lease_ttl,
        ),
    }
}

/// Session events → membership.
struct Sessions(Arc<Membership>);

fn peer_name(ses: &NodeServerSessionInformation) -> Option<String> {
    ses.peer_name.as_ref().map(|n| n.name.split('@').next().unwrap_or_default().to_owned())
}

impl NodeEventSubscription for Sessions {
    fn node_session_opened(&self, _ses: NodeServerSessionInformation) {}

    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        if let Some(name) = peer_name(&ses) {
            tracing::warn!(peer = %name, addr = %ses.peer_addr, "cluster: session lost");
            self.0.observe_session(&name, false);
        }
    }

    fn node_session_authenticated(&self, ses: NodeServerSessionInformation) {
        tracing::debug!(peer = ?peer_name(&ses), "cluster: peer authenticated");
    }

    fn node_session_ready(&self, ses: NodeServerSessionInformation) {
        if let Some(name) = peer_name(&ses) {
            tracing::info!(peer = %name, addr = %ses.peer_addr, "cluster: peer connected");
            self.0.observe_session(&name, true);
        }
    }
}

/// Starts the node host and, for a cluster member, the cluster server and the membership loop.
pub async fn start(settings: &Settings, services: Arc<LiveServices>, supervisor: SupervisorRef) -> anyhow::Result<()> {
    let (_host, _) = ractor::Actor::spawn(
        Some(format!("node-host@{}", settings.node_name)),
        NodeHost,
        NodeHostArgs { services: services.clone(), supervisor: supervisor.clone() },
    )
    .await
    .context("cannot start the node host")?;
    let Some(me) = settings.member.clone() else {
        return Ok(());
    };
    let cookie =
        settings.cookie.clone().context("a cluster member needs a cookie ([cluster] cookie or PARLEY_COOKIE)")?;
    let port = me.cluster_port.context("a cluster member needs a cluster_port")?;
    let bind: IpAddr = me.host.parse().with_context(|| format!("node host `{}` is not an IP address", me.host))?;
    let tls = match &settings.cluster_tls {
        Some(files) => Some(ClusterTlsContext::load(files).context("cluster TLS")?),
        None => None,
    };
    let incoming = tls.as_ref().map(|t| IncomingEncryptionMode::Tls(t.acceptor.clone()));
    let server = NodeServer::new(port, cookie, me.name.clone(), me.host.clone(), incoming, None).with_listen_addr(bind);
    let (server, _) = ractor::Actor::spawn(Some(format!("cluster@{}", me.name)), server, ())
        .await
        .context("cannot start the cluster server")?;
    let membership = services.membership.clone();
    server
        .cast(NodeServerMessage::SubscribeToEvents {
            id: "membership".into(),
            subscription: Box::new(Sessions(membership.clone())),
        })
        .context("cannot subscribe to cluster events")?;
    tracing::info!(node = %me.name, addr = %format!("{bind}:{port}"), peers = membership.peers().len(), ttl_ms = settings.lease_ttl.as_millis() as u64, tls = tls.is_some(), "cluster: listening");
    tokio::spawn(dial_loop(server, membership.clone(), tls.map(|t| t.connector)));
    let http = format!("{}:{}", me.host, me.http_port);
    tokio::spawn(lease_loop(services, supervisor, http));
    Ok(())
}

/// Keeps a session to every peer: the node whose name sorts first dials (one session per pair),
/// retrying with capped exponential backoff.
async fn dial_loop(server: ActorRef<NodeServerMessage>, membership: Arc<Membership>, tls: Option<TlsConnector>) {
    let me = membership.me().name.clone();
    let mut next: HashMap<String, (Instant, Duration)> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        for peer in membership.peers().iter().filter(|p| p.name > me) {
            if membership.peer(&peer.name).is_some_and(|s| s.connected) {
                next.remove(&peer.name);
                continue;
            }
            let (at, backoff) = next.get(&peer.name).copied().unwrap_or((Instant::now(), FIRST_BACKOFF));
            if Instant::now() < at {
                continue;
            }
            next.insert(peer.name.clone(), (Instant::now() + backoff, (backoff * 2).min(MAX_BACKOFF)));
            let addr = format!("{}:{}", peer.host, peer.cluster_port);
            let dialled = match &tls {
                None => ractor_cluster::client_connect(&server, addr.as_str()).await.map_err(|e| e.to_string()),
                Some(connector) => match server_name(&peer.host) {
                    Ok(name) => ractor_cluster::client_connect_enc(&server, addr.as_str(), connector.clone(), name)
                        .await
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                },
            };
            if let Err(e) = dialled {
                tracing::debug!(peer = %peer.name, %addr, error = %e, "cluster: dial failed; retrying");
            }
        }
    }
}

/// Every third of the lease TTL: write our lease, read the peers', and take over the meetings of
/// peers found dead.
async fn lease_loop(services: Arc<LiveServices>, supervisor: SupervisorRef, http: String) {
    let m = services.membership.clone();
    let ttl = m.lease_ttl();
    let peers: Vec<String> = m.peers().iter().map(|p| p.name.clone()).collect();
    let media = services.media.media_addr();
    let mut last_held = Instant::now();
    let mut tick = tokio::time::interval(ttl / 3);
    loop {
        tick.tick().await;
        let lease = NodeLease {
            load: local_load(&services),
            http: http.clone(),
            media: media.clone(),
            at_ms: parley_actors::now_ms(),
        };
        match services.presence.put_lease(&lease, ttl).await {
            Ok(()) => {
                if !m.lease_held() {
                    tracing::info!("cluster: lease held again; taking new meetings");
                }
                m.set_lease_held(true);
                last_held = Instant::now();
            }
            Err(e) if last_held.elapsed() >= ttl => {
                if m.lease_held() {
                    tracing::error!(error = %e, "cluster: lease lost (Redis unreachable); taking no new meetings");
                }
                m.set_lease_held(false);
            }
            Err(e) => tracing::warn!(error = %e, "cluster: lease not refreshed"),
        }
        match services.presence.leases(&peers).await {
            Ok(leases) => m.observe_leases(peers.iter().cloned().zip(leases).collect()),
            Err(e) => {
                tracing::warn!(error = %e, "cluster: peers' leases unreadable");
                continue;
            }
        }
        take_over_orphans(&services, &supervisor).await;
    }
}

/// For each dead peer, finds its active meetings and re-activates the ones this node is the
/// designated heir of (the same choice on every survivor; claims settle any disagreement).
async fn take_over_orphans(services: &Arc<LiveServices>, supervisor: &SupervisorRef) {
    let m = &services.membership;
    let dead: Vec<String> = m.peers().iter().map(|p| p.name.clone()).filter(|n| m.is_dead(n)).collect();
    if dead.is_empty() || !m.lease_held() {
        return;
    }
    let mut alive: Vec<String> = m
        .peers()
        .iter()
        .map(|p| p.name.clone())
        .filter(|n| !m.is_dead(n) && m.peer(n).is_some_and(|s| s.connected))
        .collect();
    alive.push(m.me().name.clone());
    alive.sort();
    for node in dead {
        let orphans = match services.store.active_meetings(Some(&node)).await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(dead = %node, error = %e, "failover: cannot list the dead node's meetings");
                continue;
            }
        };
        for o in orphans {
            let heir = &alive[(o.meeting_id.as_u128() % alive.len() as u128) as usize];
            if *heir != m.me().name {
                continue;
            }
            let started = Instant::now();
            match locate(services, supervisor, o.meeting_id).await {
                Ok(h) => tracing::info!(
                    meeting_id = %o.meeting_id,
                    dead = %node,
                    now_on = %h.node(&services.node),
                    ms = started.elapsed().as_millis() as u64,
                    "failover: meeting re-activated"
                ),
                Err(e) => {
                    tracing::warn!(meeting_id = %o.meeting_id, dead = %node, error = %e, "failover: not yet")
                }
            }
        }
    }
}
