//! The daemon's status: the core's snapshot ([`ctsync_core::Status`]) with what only
//! the shell knows (its name, the peers' addresses and ages, kernel failures, control
//! refusals, timings). Produced once per request and rendered three ways: JSON
//! (`ctsync status --json`, the control socket), text (`ctsync status`, [`Status`]'s
//! `Display`) and Prometheus metrics ([`crate::metrics::render`]).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ctsync_core::{DropCounters, NodeStats, Role};
use ctsync_wire::NodeId;
use serde::{Serialize, Serializer};

use super::{Daemon, link};

/// What the kernel refused or failed: the key of `kernel_failures`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum KernelFailure {
    /// Creating a replicated flow.
    Create,
    /// Updating a replicated flow that existed.
    Update,
    /// Deleting a replicated flow (one already gone is not a failure).
    Delete,
    /// Resetting a replicated flow's timeout (hot standby's refresh).
    Refresh,
    /// Creating a replicated expectation.
    ExpectationCreate,
    /// Deleting a replicated expectation.
    ExpectationDelete,
    /// Reading the whole table.
    Dump,
    /// Reading the expectations.
    ExpectationDump,
}

impl KernelFailure {
    /// Every kind.
    pub(crate) const ALL: [KernelFailure; 8] = [
        KernelFailure::Create,
        KernelFailure::Update,
        KernelFailure::Delete,
        KernelFailure::Refresh,
        KernelFailure::ExpectationCreate,
        KernelFailure::ExpectationDelete,
        KernelFailure::Dump,
        KernelFailure::ExpectationDump,
    ];

    /// Its name in the JSON and the metrics' `op` label.
    pub(crate) fn name(self) -> &'static str {
        match self {
            KernelFailure::Create => "create",
            KernelFailure::Update => "update",
            KernelFailure::Delete => "delete",
            KernelFailure::Refresh => "refresh",
            KernelFailure::ExpectationCreate => "expectation_create",
            KernelFailure::ExpectationDelete => "expectation_delete",
            KernelFailure::Dump => "dump",
            KernelFailure::ExpectationDump => "expectation_dump",
        }
    }
}

impl fmt::Display for KernelFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A node id as the status shows it: `0xc612ff01`.
fn hex_id<S: Serializer>(id: &NodeId, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{id:#x}"))
}

/// A peer's role, `unknown` until it said.
fn role_or_unknown<S: Serializer>(role: &Option<Role>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(role.map_or("unknown", Role::name))
}

/// Flows in the caches. Fields in name order, like [`Status`]'s
/// (`bench/failover.sh` matches `"external":N,`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct Caches {
    /// The peers' flows, all peers together.
    pub external: usize,
    /// This node's own flows.
    pub internal: usize,
}

/// One peer: the core's view of it and where it is. Fields in name order, as the JSON
/// has always had them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct PeerStatus {
    /// Its sync address.
    pub address: Option<SocketAddr>,
    /// Messages pending or unacknowledged in our stream to it.
    pub backlog: usize,
    /// Duplicates of messages received from it.
    pub duplicates: u64,
    /// Its epoch, once proven live.
    pub epoch: Option<u64>,
    /// We take its group stream (PROTOCOL.md §13).
    pub group_joined: bool,
    /// It receives our group stream.
    pub group_member: bool,
    /// Its node id.
    #[serde(serialize_with = "hex_id")]
    pub id: NodeId,
    /// The backlog again, under the name the status first gave it.
    pub lag: usize,
    /// Milliseconds since it was last heard from.
    pub last_seen_ms: Option<u64>,
    /// The sync link our datagrams to it go over: 1 for `[sync]`'s own, 2 for the first
    /// `[[sync.link]]`, …
    pub link: usize,
    /// Times that link changed (a link went silent, or an earlier one came back).
    pub link_switches: u64,
    /// Each sync link to it, in order.
    pub links: Vec<PeerLinkStatus>,
    /// It says it is ready to take over.
    pub ready: bool,
    /// Messages received from it.
    pub received: u64,
    /// Resets of our stream to it.
    pub resets: u64,
    /// Messages sent to it again.
    pub retransmitted: u64,
    /// Its announced role.
    #[serde(serialize_with = "role_or_unknown")]
    pub role: Option<Role>,
    /// Messages sent to it for the first time.
    pub sent: u64,
    /// Our copy of its table is complete.
    pub synced: bool,
    /// Heard from within the dead interval.
    pub up: bool,
}

/// One sync link to a peer. Fields in name order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct PeerLinkStatus {
    /// Our datagrams to the peer go over it.
    pub active: bool,
    /// The peer's address on it.
    pub address: SocketAddr,
    /// Its interface.
    pub interface: String,
    /// Milliseconds since the peer was last heard on it.
    pub last_heard_ms: Option<u64>,
}

/// Milliseconds from `t` to `now`.
fn age_ms(t: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(t).as_millis()).unwrap_or(u64::MAX)
}

impl PeerStatus {
    /// The core's view of a peer, its address, its links, and its age at `now`.
    fn new(
        p: ctsync_core::PeerStatus,
        address: Option<SocketAddr>,
        links: Option<(usize, u64, Vec<link::PeerLinkView>)>,
        now: Instant,
    ) -> PeerStatus {
        let (active, link_switches, views) = links.unwrap_or_default();
        PeerStatus {
            address,
            backlog: p.backlog,
            duplicates: p.duplicates,
            epoch: p.epoch,
            group_joined: p.group_joined,
            group_member: p.group_member,
            id: p.id,
            lag: p.backlog,
            last_seen_ms: p.last_heard.map(|t| age_ms(t, now)),
            link: active + 1,
            link_switches,
            links: views
                .into_iter()
                .enumerate()
                .map(|(l, v)| PeerLinkStatus {
                    active: l == active,
                    address: v.address,
                    interface: v.interface,
                    last_heard_ms: v.last_heard.map(|t| age_ms(t, now)),
                })
                .collect(),
            ready: p.ready,
            received: p.received,
            resets: p.resets,
            retransmitted: p.retransmitted,
            role: p.role,
            sent: p.sent,
            synced: p.synced,
            up: p.up,
        }
    }
}

/// Counters: every one of the core's, and the shell's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct Stats {
    /// The core's counters, each a field of its own in the JSON.
    #[serde(flatten)]
    pub core: NodeStats,
    /// Replicated flows written again because the kernel had lost them.
    pub kernel_recreated: u64,
    /// Control clients refused for their credentials.
    pub control_refused: u64,
    /// Event-loop turns that stopped at their budget of kernel events with more
    /// waiting (an event storm; the rest is read next turn).
    pub event_budget_hits: u64,
    /// Event-loop turns that stopped at their budget of sync datagrams with more
    /// waiting.
    pub datagram_budget_hits: u64,
    /// Datagrams that arrived on one sync link after their exact copy had arrived on
    /// another (with several links, each link carries some copies so that the peers
    /// know it works): not handed to the core, so not counted as replays.
    pub link_copies: u64,
    /// Metrics connections closed at once because the most were already open.
    pub metrics_refused: u64,
}

/// Flows the kernel had no room for (`net.netfilter.nf_conntrack_max` reached).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct NoRoom {
    /// Flows missing from the kernel when this node last became primary.
    pub missed_at_takeover: usize,
    /// Some of those, as `conntrack -L` would show them.
    pub missed_sample: Vec<String>,
    /// Writes the kernel refused for want of room, ever.
    pub refused: u64,
    /// Flows waiting for room now (tried again every second); a backup with any is not
    /// ready.
    pub waiting: usize,
}

/// How long things took.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct Timing {
    /// The last move to primary, kernel writes included, in seconds.
    pub last_takeover_seconds: Option<f64>,
    /// The last read of the whole kernel table, in seconds.
    pub last_kernel_dump_seconds: Option<f64>,
    /// Reads of the whole kernel table.
    pub kernel_dumps: u64,
}

/// The daemon's status. Fields in name order: the JSON's order, which scripts match
/// (`bench/replication.sh` looks for `"synced":true.*],"ready":true`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Status {
    /// Flows in the caches.
    pub caches: Caches,
    /// The peer that speaks conntrackd's dialect (`[conntrackd]`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conntrackd: Option<super::ConntrackdStatus>,
    /// Datagrams dropped, by reason (only reasons that happened).
    pub dropped: DropCounters,
    /// This node's epoch.
    pub epoch: u64,
    /// This node's id.
    #[serde(serialize_with = "hex_id")]
    pub id: NodeId,
    /// Kernel operations that failed, by kind (only kinds that happened).
    pub kernel_failures: BTreeMap<KernelFailure, u64>,
    /// Flows the kernel had no room for.
    pub no_room: NoRoom,
    /// This node's name.
    pub node: String,
    /// The peers, by id.
    pub peers: Vec<PeerStatus>,
    /// Whether this node could take over now without losing flows.
    pub ready: bool,
    /// Its role.
    pub role: Role,
    /// A primary peer has not been heard from for `[keepalived] stale_after_secs`
    /// (`false` without that setting).
    pub stale: bool,
    /// Counters.
    pub stats: Stats,
    /// Durations.
    pub timing: Timing,
}

impl fmt::Display for Status {
    /// What `ctsync status` prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}  role {}  ready {}  flows: {} own, {} from peers",
            self.node, self.role, self.ready, self.caches.internal, self.caches.external
        )?;
        for p in &self.peers {
            writeln!(
                f,
                "  peer {:#x} {}  up {}  role {}  synced {}  sent {}  retransmitted {}  backlog {}",
                p.id,
                p.address.map_or_else(|| "?".to_string(), |a| a.to_string()),
                p.up,
                p.role.map_or("unknown", Role::name),
                p.synced,
                p.sent,
                p.retransmitted,
                p.backlog
            )?;
            if p.links.len() > 1 {
                let links: Vec<String> = p
                    .links
                    .iter()
                    .enumerate()
                    .map(|(l, k)| {
                        format!(
                            "{} {} {} heard {}{}",
                            l + 1,
                            k.interface,
                            k.address,
                            k.last_heard_ms
                                .map_or_else(|| "never".to_string(), |ms| format!("{ms} ms ago")),
                            if k.active { " (in use)" } else { "" }
                        )
                    })
                    .collect();
                writeln!(
                    f,
                    "    links: {}; switches {}",
                    links.join(", "),
                    p.link_switches
                )?;
            }
            if p.group_member || p.group_joined {
                // Only with a multicast group (PROTOCOL.md §13): who takes whose group.
                writeln!(
                    f,
                    "    group: receives ours {}, we take its {}",
                    p.group_member, p.group_joined
                )?;
            }
        }
        if let Some(c) = &self.conntrackd {
            writeln!(
                f,
                "  conntrackd {} {} (dialect conntrackd, UNAUTHENTICATED)  up {}  flows {}  expectations {}  written {}  restored {}  deleted {}  tables sent {}  backlog {}/{}  received {}  gaps {}  malformed {}  foreign {}",
                c.transport,
                c.peer,
                c.up,
                c.flows,
                c.expectations,
                c.written,
                c.restored,
                c.deleted,
                c.bulks_sent,
                c.backlog.0,
                c.backlog.1,
                c.session.flows_received,
                c.session.gaps,
                c.session.malformed,
                c.foreign_dropped
            )?;
            if c.links > 1 {
                writeln!(
                    f,
                    "    on link {} of {} (where conntrackd was last heard; switched {} times)",
                    c.link, c.links, c.link_switches
                )?;
            }
        }
        if !self.dropped.is_empty() {
            let d: Vec<String> = self
                .dropped
                .iter()
                .map(|(r, n)| format!("{} {n}", r.name()))
                .collect();
            writeln!(f, "  dropped: {}", d.join(", "))?;
        }
        if self.no_room.waiting > 0 {
            writeln!(
                f,
                "  not ready: the kernel has no room for {} replicated flows (net.netfilter.nf_conntrack_max); tried again every second",
                self.no_room.waiting
            )?;
        }
        if self.no_room.missed_at_takeover > 0 {
            writeln!(
                f,
                "  took over without {} flows the kernel had no room for, e.g. {}",
                self.no_room.missed_at_takeover,
                self.no_room.missed_sample.join("; ")
            )?;
        }
        if !self.kernel_failures.is_empty() {
            let k: Vec<String> = self
                .kernel_failures
                .iter()
                .map(|(w, n)| format!("{w} {n}"))
                .collect();
            writeln!(f, "  kernel failures: {}", k.join(", "))?;
        }
        Ok(())
    }
}

impl Status {
    /// Whether a primary peer has been silent for `after` or longer: our copy of its
    /// table is aging (the sync link is cut, or the primary is gone).
    pub(crate) fn is_stale(&self, after: Duration) -> bool {
        let limit = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
        self.peers
            .iter()
            .any(|p| p.role == Some(Role::Primary) && p.last_seen_ms.is_none_or(|ms| ms >= limit))
    }
}

fn seconds(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64())
}

impl Daemon {
    /// The status now.
    pub(super) fn status(&self) -> Status {
        let now = Instant::now();
        let core = self.node.status();
        let mut status = Status {
            caches: Caches {
                external: core.external_flows,
                internal: core.internal_flows,
            },
            conntrackd: self.conntrackd.as_ref().map(|e| e.status(now)),
            dropped: core.drops,
            epoch: core.epoch,
            id: core.node,
            kernel_failures: self.kernel.failures.clone(),
            no_room: NoRoom {
                missed_at_takeover: self.missed_at_takeover.0,
                missed_sample: self.missed_at_takeover.1.clone(),
                refused: self.kernel.no_room_refused,
                waiting: self.kernel.no_room.len(),
            },
            node: self.name.clone(),
            peers: core
                .peers
                .into_iter()
                .map(|p| {
                    let address = self.link.address(p.id);
                    let links = self.link.peer_links(p.id);
                    PeerStatus::new(p, address, links, now)
                })
                .collect(),
            ready: self.ready(),
            role: core.role,
            stale: false,
            stats: Stats {
                core: core.stats,
                kernel_recreated: self.kernel.recreated,
                control_refused: self.control_refused,
                event_budget_hits: self.event_budget_hits,
                datagram_budget_hits: self.link.budget_hits,
                link_copies: self.link.copies,
                metrics_refused: self.metrics_gate.refused(),
            },
            timing: Timing {
                last_takeover_seconds: seconds(self.last_takeover),
                last_kernel_dump_seconds: seconds(self.kernel.last_dump),
                kernel_dumps: self.kernel.dumps,
            },
        };
        if let Some((_, after)) = &self.stale_file {
            status.stale = status.is_stale(*after);
        }
        status
    }

    /// Answer a metrics connection with the status of now, if the [`Gate`] has a place
    /// for it; otherwise it is closed at once (and counted).
    ///
    /// [`Gate`]: crate::metrics::Gate
    pub(super) fn serve_metrics(&mut self, stream: tokio::net::TcpStream) {
        let Some(place) = self.metrics_gate.admit() else {
            return;
        };
        let body = crate::metrics::render(&self.status());
        tokio::spawn(crate::metrics::serve(stream, place, move || body));
    }

    /// One line for systemd's status and logs.
    pub(super) fn status_line(&self) -> String {
        status_line(
            self.node.role(),
            self.ready(),
            self.node.internal().len(),
            self.node.external_len(),
        )
    }
}

/// `backup, ready, 3 own flows, 200000 from peers`: the role by its name, as the
/// configuration, `ctsync status` and the metrics write it.
fn status_line(role: Role, ready: bool, own: usize, from_peers: usize) -> String {
    format!(
        "{role}, {}, {own} own flows, {from_peers} from peers",
        if ready { "ready" } else { "not ready" }
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn a_copy_is_stale_when_a_primary_peer_was_silent_for_the_limit() {
        let mut s = sample();
        assert_eq!(s.peers[0].role, Some(Role::Primary));
        s.peers[0].last_seen_ms = Some(999);
        assert!(!s.is_stale(Duration::from_secs(1)));
        s.peers[0].last_seen_ms = Some(1000);
        assert!(s.is_stale(Duration::from_secs(1)));
        s.peers[0].last_seen_ms = None;
        assert!(s.is_stale(Duration::from_secs(1)), "never heard");
        s.peers[0].role = Some(Role::Backup);
        assert!(
            !s.is_stale(Duration::from_secs(1)),
            "only a primary's silence counts"
        );
    }

    /// A backup with one peer and some of every counter.
    pub(crate) fn sample() -> Status {
        let mut drops = DropCounters::new();
        drops.insert(ctsync_core::DropReason::Replay, 4);
        let mut kernel_failures = BTreeMap::new();
        kernel_failures.insert(KernelFailure::ExpectationCreate, 2);
        let core = NodeStats {
            datagrams_sent: 5,
            datagrams_received: 6,
            flows_received: 7,
            own_events: 8,
            filtered: 9,
            foreign: 10,
            cache_full: 11,
            delayed_and_gone: 12,
            overflows: 13,
            kernel_overruns: 1,
            unencodable: 14,
            expectations_sent: 15,
            expectations_received: 16,
            kernel_writes: 22,
            kernel_writes_skipped: 23,
            written_back: 30,
            group_datagrams_sent: 24,
            group_joins: 25,
            group_evictions: 26,
            group_messages_sent: 27,
            group_retransmitted: 28,
            group_repaired: 29,
        };
        Status {
            caches: Caches {
                external: 200_000,
                internal: 3,
            },
            conntrackd: None,
            dropped: drops,
            epoch: 42,
            id: 0xc612_ff02,
            kernel_failures,
            no_room: NoRoom {
                missed_at_takeover: 0,
                missed_sample: Vec::new(),
                refused: 22,
                waiting: 0,
            },
            node: "fw2".into(),
            peers: vec![PeerStatus {
                address: Some("198.18.255.1:3780".parse().unwrap()),
                backlog: 1,
                duplicates: 0,
                epoch: Some(41),
                group_joined: false,
                group_member: false,
                id: 0xc612_ff01,
                lag: 1,
                last_seen_ms: Some(120),
                link: 2,
                link_switches: 1,
                links: vec![
                    PeerLinkStatus {
                        active: false,
                        address: "198.18.255.1:3780".parse().unwrap(),
                        interface: "sync0".into(),
                        last_heard_ms: Some(4000),
                    },
                    PeerLinkStatus {
                        active: true,
                        address: "198.18.254.1:3780".parse().unwrap(),
                        interface: "sync1".into(),
                        last_heard_ms: Some(120),
                    },
                ],
                ready: true,
                received: 100,
                resets: 0,
                retransmitted: 2,
                role: Some(Role::Primary),
                sent: 10,
                synced: true,
                up: true,
            }],
            ready: true,
            role: Role::Backup,
            stale: false,
            stats: Stats {
                core,
                kernel_recreated: 17,
                control_refused: 18,
                event_budget_hits: 19,
                datagram_budget_hits: 20,
                link_copies: 22,
                metrics_refused: 21,
            },
            timing: Timing {
                last_takeover_seconds: Some(0.25),
                last_kernel_dump_seconds: Some(0.5),
                kernel_dumps: 3,
            },
        }
    }

    #[test]
    fn the_json_keeps_its_names_and_shows_every_counter() {
        let s = sample();
        let j = serde_json::to_value(&s).unwrap();
        assert_eq!(j["role"], "backup");
        assert_eq!(j["id"], "0xc612ff02");
        assert_eq!(j["caches"]["external"], 200_000);
        assert_eq!(j["dropped"]["replay"], 4);
        assert_eq!(j["kernel_failures"]["expectation_create"], 2);
        let p = &j["peers"][0];
        assert_eq!(p["id"], "0xc612ff01");
        assert_eq!(p["address"], "198.18.255.1:3780");
        assert_eq!(p["role"], "primary");
        assert_eq!(p["lag"], 1);
        assert_eq!(p["last_seen_ms"], 120);
        for (name, v) in s.stats.core.counters() {
            assert_eq!(j["stats"][name], v, "stats.{name}");
        }
        assert_eq!(j["stats"]["kernel_recreated"], 17);
        assert_eq!(j["stats"]["control_refused"], 18);
        assert_eq!(j["stats"]["event_budget_hits"], 19);
        assert_eq!(j["stats"]["datagram_budget_hits"], 20);
        assert_eq!(j["stats"]["metrics_refused"], 21);
        assert_eq!(j["stats"]["link_copies"], 22);
        assert_eq!(p["link"], 2);
        assert_eq!(p["link_switches"], 1);
        assert_eq!(p["links"][0]["interface"], "sync0");
        assert_eq!(p["links"][0]["active"], false);
        assert_eq!(p["links"][1]["active"], true);
        assert_eq!(p["links"][1]["address"], "198.18.254.1:3780");
        assert_eq!(p["links"][1]["last_heard_ms"], 120);
        assert_eq!(j["timing"]["kernel_dumps"], 3);
        // What bench/replication.sh and bench/failover.sh match in the raw text, written
        // directly or (as the control socket does) through a serde_json::Value, whose
        // keys are sorted.
        for text in [serde_json::to_string(&s).unwrap(), j.to_string()] {
            assert!(text.contains("\"synced\":true"), "{text}");
            assert!(text.contains("}],\"ready\":true"), "{text}");
            assert!(text.contains("\"external\":200000,"), "{text}");
        }
    }

    #[test]
    fn the_systemd_status_line_names_the_role_as_the_config_does() {
        assert_eq!(
            status_line(Role::Primary, false, 3, 200_000),
            "primary, not ready, 3 own flows, 200000 from peers"
        );
        assert!(status_line(Role::Backup, true, 0, 0).starts_with("backup, ready,"));
    }

    #[test]
    fn a_peer_not_yet_heard_has_an_unknown_role() {
        let mut s = sample();
        s.peers[0].role = None;
        let j = serde_json::to_value(&s).unwrap();
        assert_eq!(j["peers"][0]["role"], "unknown");
        assert!(s.to_string().contains("role unknown"));
    }

    #[test]
    fn the_text_names_node_peers_drops_and_failures() {
        let t = sample().to_string();
        assert!(
            t.starts_with("fw2  role backup  ready true  flows: 3 own, 200000 from peers\n"),
            "{t}"
        );
        assert!(
            t.contains("  peer 0xc612ff01 198.18.255.1:3780  up true  role primary  synced true"),
            "{t}"
        );
        assert!(t.contains("  dropped: replay 4\n"), "{t}");
        assert!(
            t.contains("    links: 1 sync0 198.18.255.1:3780 heard 4000 ms ago, 2 sync1 198.18.254.1:3780 heard 120 ms ago (in use); switches 1\n"),
            "{t}"
        );
        assert!(
            t.contains("  kernel failures: expectation_create 2\n"),
            "{t}"
        );
    }
}
