//! What a node is told at start: who it is, who its peers are, timers and policies.

use std::net::IpAddr;
use std::time::Duration;

use ctnetlink::{Flow, ProtoInfo, ipproto, tcp_state};
use ctsync_wire::NodeId;
use serde::Deserialize;

/// How replicated flows reach a backup's kernel. The configuration's `mode =
/// "hot-standby"` or `"commit"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Apply every replicated change to the backup's kernel as it arrives, and keep idle
    /// flows alive there: a takeover has nothing left to commit.
    #[default]
    HotStandby,
    /// Keep replicated flows in the external cache; write them to the kernel when this
    /// node becomes primary (conntrackd's way).
    Commit,
}

/// Which flows are replicated (like conntrackd's `Filter` and 6WIND's lists).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Replicate only these layer-4 protocols (empty: all).
    pub protocols: Vec<u8>,
    /// Address prefixes matched against any address of the original tuple.
    pub prefixes: Vec<(IpAddr, u8)>,
    /// `true`: replicate only flows matching a prefix; `false`: replicate all but those.
    /// Ignored when `prefixes` is empty.
    pub prefixes_accept: bool,
    /// Replicate TCP flows only once established (Barracuda's rule): a takeover during
    /// the handshake makes the client retry, which TCP does anyway.
    pub tcp_established_only: bool,
    /// Replicate only these zones (empty: all).
    pub zones: Vec<u16>,
    /// Never replicate flows touching these prefixes, whatever `prefixes` says (the
    /// daemon puts the sync link's addresses here: its own traffic is no one's session).
    pub never: Vec<(IpAddr, u8)>,
}

fn in_prefix(addr: &IpAddr, (net, len): &(IpAddr, u8)) -> bool {
    match (addr, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let len = u32::from((*len).min(32));
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(*a) & mask == u32::from(*n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let len = u32::from((*len).min(128));
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            u128::from(*a) & mask == u128::from(*n) & mask
        }
        _ => false,
    }
}

impl Filter {
    /// Whether `flow` is replicated.
    pub fn accepts(&self, flow: &Flow) -> bool {
        if !self.protocols.is_empty() && !self.protocols.contains(&flow.orig.proto) {
            return false;
        }
        if !self.zones.is_empty() && !self.zones.contains(&flow.zone.unwrap_or(0)) {
            return false;
        }
        if self.tcp_established_only && flow.orig.proto == ipproto::TCP {
            let established = matches!(
                flow.protoinfo,
                Some(ProtoInfo::Tcp(t)) if t.state.is_some_and(|s| s >= tcp_state::ESTABLISHED && s != tcp_state::SYN_SENT2)
            );
            if !established {
                return false;
            }
        }
        if !self.never.is_empty()
            && [flow.orig.src, flow.orig.dst]
                .iter()
                .any(|a| self.never.iter().any(|p| in_prefix(a, p)))
        {
            return false;
        }
        if !self.prefixes.is_empty() {
            let hit = [flow.orig.src, flow.orig.dst]
                .iter()
                .any(|a| self.prefixes.iter().any(|p| in_prefix(a, p)));
            if hit != self.prefixes_accept {
                return false;
            }
        }
        true
    }
}

/// A node's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node.
    pub node: NodeId,
    /// The other nodes.
    pub peers: Vec<NodeId>,
    /// How replicated flows reach the kernel.
    pub mode: Mode,
    /// Largest datagram, headers and tag included.
    pub mtu: usize,
    /// Send something to every peer at least this often.
    pub alive_interval: Duration,
    /// With nothing else to send, an ALIVE goes to a verified peer that is up this often
    /// (never more often than `alive_interval`). Longer than `alive_interval` only where
    /// something else keeps the peers' liveness ([`crate::Node::peer_alive`]: the
    /// daemon's host link of docs/PROTOCOL.md §14.4); a change of role or readiness is
    /// then announced at once.
    pub keepalive_interval: Duration,
    /// A peer not heard from for this long is down.
    pub dead_interval: Duration,
    /// Retransmit an unacknowledged message after this long.
    pub rto: Duration,
    /// Delay before a standalone acknowledgement.
    pub ack_delay: Duration,
    /// Messages in flight per peer.
    pub window: usize,
    /// Messages queued per peer before it is reset and resynchronised.
    pub queue_limit: usize,
    /// Exchange table digests this often.
    pub digest_interval: Duration,
    /// A digest equal to the last one sent to a peer (nothing changed in our table since)
    /// goes only every this many digest intervals; 1: every interval. A bulk transfer
    /// to the peer always has a digest follow. Above 1 where many nodes sit idle (a
    /// daemon's routers, docs/PROTOCOL.md §14.4): a divergence on the peer's side is
    /// then found within this many intervals.
    pub digest_unchanged_every: u32,
    /// Hot standby: refresh the kernel timeouts of replicated flows this often.
    pub refresh_interval: Duration,
    /// Move to the next traffic key this often (and before its usage limit).
    pub rekey_interval: Duration,
    /// Do not replicate flows younger than this (FortiGate's session-pickup-delay).
    pub sync_delay: Duration,
    /// Which flows are replicated.
    pub filter: Filter,
    /// Becoming backup: shorten the kernel timeouts of local flows to this many seconds.
    pub shorten_timeout: u32,
    /// Flows per bulk-transfer step (pacing).
    pub bulk_step: usize,
    /// Re-read the kernel table this often (zero: never). Entries that existed before
    /// any event listener (with `nf_conntrack_events=2`, the kernel's default) never
    /// report their end; a periodic dump finds them gone.
    pub kernel_resync_interval: Duration,
    /// Flows the caches are sized for up front (growing a large table later costs a
    /// pause while it is rehashed); use the kernel's `nf_conntrack_max`.
    pub expected_flows: usize,
    /// The most flows one cache holds (internal, and each external); beyond it new flows
    /// are refused and counted (conntrackd's `HashLimit`).
    pub max_flows: usize,
    /// Replicate live changes once to a multicast group, received by every peer
    /// (docs/PROTOCOL.md §13); the shell sends datagrams for [`ctsync_wire::GROUP`] to
    /// it and hands what arrives on it to [`crate::Node::handle_group_datagram`].
    pub group: bool,
}

impl Config {
    /// Defaults for a node and its peers.
    pub fn new(node: NodeId, peers: Vec<NodeId>) -> Config {
        Config {
            node,
            peers,
            mode: Mode::HotStandby,
            mtu: 1400,
            alive_interval: Duration::from_millis(500),
            keepalive_interval: Duration::from_millis(500),
            dead_interval: Duration::from_secs(3),
            rto: Duration::from_millis(200),
            ack_delay: Duration::from_millis(5),
            window: 8192,
            queue_limit: 1 << 20,
            digest_interval: Duration::from_secs(5),
            digest_unchanged_every: 1,
            refresh_interval: Duration::from_secs(30),
            rekey_interval: Duration::from_secs(60),
            sync_delay: Duration::ZERO,
            filter: Filter::default(),
            shorten_timeout: 60,
            bulk_step: 1024,
            expected_flows: 1 << 16,
            max_flows: 1 << 22,
            kernel_resync_interval: Duration::from_secs(300),
            group: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use ctnetlink::{TcpInfo, Tuple};

    use super::*;

    fn tcp(src: [u8; 4], state: u8) -> Flow {
        let t = Tuple::ports(
            ipproto::TCP,
            IpAddr::V4(Ipv4Addr::from(src)),
            1,
            IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1)),
            443,
        );
        let mut f = Flow::new(t, t.inverse());
        f.protoinfo = Some(ProtoInfo::Tcp(TcpInfo {
            state: Some(state),
            ..TcpInfo::default()
        }));
        f
    }

    #[test]
    fn filters_by_protocol_prefix_state_and_zone() {
        let mut f = Filter::default();
        assert!(f.accepts(&tcp([198, 18, 0, 1], tcp_state::SYN_SENT)));
        f.tcp_established_only = true;
        assert!(!f.accepts(&tcp([198, 18, 0, 1], tcp_state::SYN_SENT)));
        assert!(f.accepts(&tcp([198, 18, 0, 1], tcp_state::ESTABLISHED)));
        f.prefixes = vec![(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 0)), 24)];
        f.prefixes_accept = false;
        assert!(!f.accepts(&tcp([198, 18, 0, 1], tcp_state::ESTABLISHED)));
        assert!(f.accepts(&tcp([198, 18, 1, 1], tcp_state::ESTABLISHED)));
        f.prefixes_accept = true;
        assert!(f.accepts(&tcp([198, 18, 0, 1], tcp_state::ESTABLISHED)));
        f.protocols = vec![ipproto::UDP];
        assert!(!f.accepts(&tcp([198, 18, 0, 1], tcp_state::ESTABLISHED)));
        f.protocols.clear();
        f.zones = vec![5];
        assert!(!f.accepts(&tcp([198, 18, 0, 1], tcp_state::ESTABLISHED)));
    }
}
