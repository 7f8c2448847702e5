//! Prometheus metrics (OpenMetrics text, encoded by `prometheus-client`) and the small
//! HTTP responder that serves them at `GET /metrics` on the daemon's event loop.
//!
//! The values are the daemon's [`Status`] (the same snapshot `ctsync status` shows),
//! turned into metric families at each scrape: nothing is kept twice. Every counter of
//! the core becomes `ctsync_<name>_total`.
//!
//! The endpoint is unauthenticated (as Prometheus exporters are): anyone who can reach
//! it reads the status, though nothing in it changes anything. A bare port in `[metrics]
//! listen` binds loopback only, and a [`Gate`] answers at most [`MAX_CONNECTIONS`] at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use ctsync_core::{DropReason, Role};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::daemon::{KernelFailure, Status};

type Labels = Vec<(String, String)>;

/// A count as a gauge value.
fn i(v: usize) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn label(k: &str, v: &str) -> Labels {
    vec![(k.to_string(), v.to_string())]
}

fn counter(reg: &mut Registry, name: &str, help: &str, v: u64) {
    let c = Counter::<u64>::default();
    c.inc_by(v);
    reg.register(name, help, c);
}

fn gauge(reg: &mut Registry, name: &str, help: &str, v: i64) {
    let g = Gauge::<i64>::default();
    g.set(v);
    reg.register(name, help, g);
}

fn seconds(reg: &mut Registry, name: &str, help: &str, v: f64) {
    let g = Gauge::<f64, AtomicU64>::default();
    g.set(v);
    reg.register(name, help, g);
}

/// A core counter's metric name (without `ctsync_` and `_total`) and help, by its name
/// in [`ctsync_core::NodeStats::counters`]; `None` for a counter this table does not
/// know yet (it is still exported, with a plain help text).
fn core_counter(name: &str) -> Option<(&'static str, &'static str)> {
    Some(match name {
        "datagrams_sent" => ("datagrams_sent", "Sync datagrams sent"),
        "datagrams_received" => (
            "datagrams_received",
            "Sync datagrams received and authenticated",
        ),
        "flows_received" => ("flows_received", "Flow messages received from peers"),
        "own_events" => (
            "own_events",
            "Kernel events ignored because this node's own writes caused them",
        ),
        "filtered" => (
            "filtered",
            "Kernel events not replicated because of [filter]",
        ),
        "foreign" => (
            "foreign",
            "Kernel entries seen on a backup that a peer replicated to it (not ours to send)",
        ),
        "cache_full" => (
            "cache_full_refused",
            "Flows refused because a cache held [sync] max_flows",
        ),
        "delayed_and_gone" => (
            "delayed_and_gone",
            "Flows never sent because they ended within [filter] delay_secs",
        ),
        "overflows" => (
            "overflows",
            "Streams to a peer reset (and its table sent again) because it fell behind",
        ),
        "kernel_overruns" => (
            "kernel_overruns",
            "Times the kernel event socket overran (each followed by a table re-read)",
        ),
        "unencodable" => (
            "unencodable",
            "Flows not replicated because they cannot be encoded (tuples of two families)",
        ),
        "expectations_sent" => (
            "expectations_sent",
            "Expectations (helpers' expected connections) sent to peers, created or deleted",
        ),
        "expectations_received" => (
            "expectations_received",
            "Expectation messages received from peers",
        ),
        "kernel_writes" => (
            "kernel_writes",
            "Replicated flows written to this node's kernel (hot standby, commit)",
        ),
        "kernel_writes_skipped" => (
            "kernel_writes_skipped",
            "Replicated flows not written because the kernel already held that state",
        ),
        "written_back" => (
            "written_back",
            "Replicated flows written again at once because this backup's kernel destroyed them while their primary has them",
        ),
        "group_datagrams_sent" => (
            "group_datagrams_sent",
            "Sync datagrams sent to the multicast group ([sync] group)",
        ),
        "group_joins" => ("group_joins", "Peers admitted to this node's group stream"),
        "group_evictions" => (
            "group_evictions",
            "Peers taken out of this node's group stream (behind, down or resynchronised)",
        ),
        "group_messages_sent" => (
            "group_messages_sent",
            "Messages sent on this node's group stream for the first time",
        ),
        "group_retransmitted" => (
            "group_retransmitted",
            "Messages of this node's group stream sent again to the group (timeout)",
        ),
        "group_repaired" => (
            "group_repaired",
            "Messages of this node's group stream sent again to one member alone (its NACK)",
        ),
        _ => return None,
    })
}

/// The metrics for a status, as OpenMetrics text.
pub(crate) fn render(s: &Status) -> String {
    let mut reg = Registry::with_prefix("ctsync");
    let role = Family::<Labels, Gauge>::default();
    for r in Role::ALL {
        role.get_or_create(&label("role", r.name()))
            .set(i64::from(s.role == r));
    }
    reg.register("role", "This node's role (1 for the current one)", role);
    gauge(
        &mut reg,
        "ready",
        "1 when this node holds a complete copy of the primary's table",
        i64::from(s.ready),
    );
    let flows = Family::<Labels, Gauge>::default();
    flows
        .get_or_create(&label("cache", "internal"))
        .set(i(s.caches.internal));
    flows
        .get_or_create(&label("cache", "external"))
        .set(i(s.caches.external));
    reg.register(
        "flows",
        "Flows in the internal (own) and external (peers') caches",
        flows,
    );
    let up = Family::<Labels, Gauge>::default();
    let ready = Family::<Labels, Gauge>::default();
    let backlog = Family::<Labels, Gauge>::default();
    let sent = Family::<Labels, Counter>::default();
    let retrans = Family::<Labels, Counter>::default();
    let resets = Family::<Labels, Counter>::default();
    let synced = Family::<Labels, Gauge>::default();
    let last_seen = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    let link_active = Family::<Labels, Gauge>::default();
    let link_heard = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    let switches = Family::<Labels, Counter>::default();
    for p in &s.peers {
        let peer = p
            .address
            .map_or_else(|| format!("{:#x}", p.id), |a| a.to_string());
        let l = label("peer", &peer);
        for k in &p.links {
            let pl = vec![
                ("peer".to_string(), peer.clone()),
                ("link".to_string(), k.interface.clone()),
            ];
            link_active.get_or_create(&pl).set(i64::from(k.active));
            if let Some(ms) = k.last_heard_ms {
                link_heard.get_or_create(&pl).set(ms as f64 / 1000.0);
            }
        }
        switches.get_or_create(&l).inc_by(p.link_switches);
        up.get_or_create(&l).set(i64::from(p.up));
        ready.get_or_create(&l).set(i64::from(p.ready));
        backlog.get_or_create(&l).set(i(p.backlog));
        sent.get_or_create(&l).inc_by(p.sent);
        retrans.get_or_create(&l).inc_by(p.retransmitted);
        resets.get_or_create(&l).inc_by(p.resets);
        synced.get_or_create(&l).set(i64::from(p.synced));
        if let Some(ms) = p.last_seen_ms {
            last_seen.get_or_create(&l).set(ms as f64 / 1000.0);
        }
    }
    reg.register(
        "peer_synced",
        "1 while our copy of the peer's table is complete (bulk done, digests agree)",
        synced,
    );
    reg.register(
        "peer_last_seen_seconds",
        "Seconds since the peer was last heard from (absent before the first datagram)",
        last_seen,
    );
    reg.register(
        "peer_link_active",
        "1 for the sync link (by interface) our datagrams to the peer go over, 0 for the others",
        link_active,
    );
    reg.register(
        "peer_link_last_heard_seconds",
        "Seconds since the peer was last heard on the sync link (absent before the first datagram)",
        link_heard,
    );
    reg.register(
        "link_switches",
        "Times the sync link our datagrams to the peer go over changed",
        switches,
    );
    if let Some(c) = &s.conntrackd {
        gauge(
            &mut reg,
            "conntrackd_up",
            "1 while the [conntrackd] peer (conntrackd's unauthenticated FTFW dialect) is heard from",
            i64::from(c.up),
        );
        gauge(
            &mut reg,
            "conntrackd_flows",
            "Flows of the [conntrackd] peer's table held here",
            i(c.flows),
        );
        counter(
            &mut reg,
            "conntrackd_flows_received",
            "Flow messages received from the [conntrackd] peer",
            c.session.flows_received,
        );
        counter(
            &mut reg,
            "conntrackd_flows_sent",
            "Flow messages sent to the [conntrackd] peer",
            c.session.flows_sent,
        );
        counter(
            &mut reg,
            "conntrackd_flows_restored",
            "Flows of the [conntrackd] peer written again in hot standby after this kernel let them expire while the peer still had them",
            c.restored,
        );
        gauge(
            &mut reg,
            "conntrackd_expectations",
            "Expectations of the [conntrackd] peer held here (its ExpectationSync)",
            i(c.expectations),
        );
        counter(
            &mut reg,
            "conntrackd_expectations_received",
            "Expectation messages received from the [conntrackd] peer",
            c.session.expectations_received,
        );
        counter(
            &mut reg,
            "conntrackd_expectations_sent",
            "Expectation messages sent to the [conntrackd] peer",
            c.session.expectations_sent,
        );
        counter(
            &mut reg,
            "conntrackd_gaps",
            "Gaps in the [conntrackd] peer's sequence numbers (each answered with a NACK)",
            c.session.gaps,
        );
        counter(
            &mut reg,
            "conntrackd_malformed",
            "Messages or datagrams from the [conntrackd] peer that could not be read",
            c.session.malformed,
        );
        counter(
            &mut reg,
            "conntrackd_foreign_dropped",
            "Datagrams to the [conntrackd] port or group from another address than its peer, dropped",
            c.foreign_dropped,
        );
        gauge(
            &mut reg,
            "conntrackd_link",
            "The link to the [conntrackd] peer that ours go out on (1: the section's own): where it was last heard, or the next after ours became unusable",
            i(c.link),
        );
        counter(
            &mut reg,
            "conntrackd_link_switches",
            "Times the link to the [conntrackd] peer that ours go out on changed (the peer heard on another, or ours unusable)",
            c.link_switches,
        );
    }
    let stale: Gauge<i64, AtomicI64> = Gauge::default();
    stale.set(i64::from(s.stale));
    reg.register(
        "stale",
        "1 while a primary peer has been silent for [keepalived] stale_after_secs",
        stale,
    );
    reg.register("peer_up", "1 while the peer is heard from", up);
    reg.register("peer_ready", "1 when the peer says it is ready", ready);
    reg.register(
        "peer_backlog",
        "Messages queued for the peer, not yet acknowledged",
        backlog,
    );
    reg.register("peer_messages_sent", "Messages sent to the peer", sent);
    reg.register(
        "peer_messages_retransmitted",
        "Messages sent to the peer again",
        retrans,
    );
    reg.register(
        "peer_resyncs",
        "Times the stream to the peer was reset and its table sent again",
        resets,
    );
    for (key, v) in s.stats.core.counters() {
        let (name, help) = core_counter(key).unwrap_or((key, "A counter of the core"));
        counter(&mut reg, name, help, v);
    }
    counter(
        &mut reg,
        "kernel_no_room",
        "Replicated flows the kernel refused for want of room (net.netfilter.nf_conntrack_max)",
        s.no_room.refused,
    );
    let waiting: Gauge<i64, AtomicI64> = Gauge::default();
    waiting.set(i64::try_from(s.no_room.waiting).unwrap_or(i64::MAX));
    reg.register(
        "kernel_no_room_waiting",
        "Replicated flows waiting for room in the kernel (a backup with any is not ready)",
        waiting,
    );
    let missed: Gauge<i64, AtomicI64> = Gauge::default();
    missed.set(i64::try_from(s.no_room.missed_at_takeover).unwrap_or(i64::MAX));
    reg.register(
        "takeover_missed_flows",
        "Flows missing from the kernel for want of room when this node last became primary",
        missed,
    );
    counter(
        &mut reg,
        "kernel_recreated",
        "Replicated flows written again because the kernel had lost them (e.g. it was full)",
        s.stats.kernel_recreated,
    );
    counter(
        &mut reg,
        "control_refused",
        "Control socket clients refused because they are not root",
        s.stats.control_refused,
    );
    counter(
        &mut reg,
        "event_budget_hits",
        "Event-loop turns that stopped at their budget of kernel events with more waiting",
        s.stats.event_budget_hits,
    );
    counter(
        &mut reg,
        "datagram_budget_hits",
        "Event-loop turns that stopped at their budget of sync datagrams with more waiting",
        s.stats.datagram_budget_hits,
    );
    counter(
        &mut reg,
        "link_copies",
        "Sync datagrams that arrived on one link after their copy on another (not replays)",
        s.stats.link_copies,
    );
    counter(
        &mut reg,
        "metrics_refused",
        "Metrics connections closed at once because the most answered at once were open",
        s.stats.metrics_refused,
    );
    let dropped = Family::<Labels, Counter>::default();
    for r in DropReason::ALL {
        let n = s.dropped.get(&r).copied().unwrap_or(0);
        dropped.get_or_create(&label("reason", r.name())).inc_by(n);
    }
    reg.register(
        "datagrams_dropped",
        "Sync datagrams dropped, by reason",
        dropped,
    );
    let failures = Family::<Labels, Counter>::default();
    for k in KernelFailure::ALL {
        let n = s.kernel_failures.get(&k).copied().unwrap_or(0);
        failures.get_or_create(&label("op", k.name())).inc_by(n);
    }
    reg.register(
        "kernel_failures",
        "Kernel operations that failed, by kind (writes of replicated flows and expectations, reads of the table)",
        failures,
    );
    let t = &s.timing;
    seconds(
        &mut reg,
        "last_takeover_seconds",
        "How long the last move to primary took, kernel writes included",
        t.last_takeover_seconds.unwrap_or(0.0),
    );
    seconds(
        &mut reg,
        "last_kernel_dump_seconds",
        "How long the last read of the kernel table (resync) took",
        t.last_kernel_dump_seconds.unwrap_or(0.0),
    );
    counter(
        &mut reg,
        "kernel_dumps",
        "Reads of the whole kernel table",
        t.kernel_dumps,
    );
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut out, &reg);
    out
}

/// Namespaces labelled in the metrics of a daemon of namespaces, at most: beyond, they
/// are counted in the totals only (`ctsync_namespaces_unlabelled`), so that a node with
/// thousands of routers cannot blow up a Prometheus server's series.
pub(crate) const MAX_LABELLED_NAMESPACES: usize = 1000;

/// The metrics of a daemon of namespaces (docs/NEUTRON.md), from its gathered status
/// (`ctsync status --json`): per namespace (label `namespace`, its id) the role,
/// readiness, flows and peers up; the totals; the daemon's drops by reason.
pub(crate) fn render_namespaces(v: &serde_json::Value) -> String {
    let mut reg = Registry::with_prefix("ctsync");
    let list = v["namespaces"].as_array().cloned().unwrap_or_default();
    gauge(
        &mut reg,
        "namespaces",
        "Network namespaces replicated",
        i(list.len()),
    );
    gauge(
        &mut reg,
        "namespaces_unlabelled",
        "Namespaces beyond the first 1000, in the totals only",
        i(list.len().saturating_sub(MAX_LABELLED_NAMESPACES)),
    );
    let role = Family::<Labels, Gauge>::default();
    let ready = Family::<Labels, Gauge>::default();
    let flows = Family::<Labels, Gauge>::default();
    let peers_up = Family::<Labels, Gauge>::default();
    let (mut internal, mut external, mut not_ready) = (0u64, 0u64, 0i64);
    for (n, ns) in list.iter().enumerate() {
        let id = ns["id"].as_str().unwrap_or("?");
        let own = ns["caches"]["internal"].as_u64().unwrap_or(0);
        let theirs = ns["caches"]["external"].as_u64().unwrap_or(0);
        internal += own;
        external += theirs;
        not_ready += i64::from(ns["ready"] != true);
        if n >= MAX_LABELLED_NAMESPACES {
            continue;
        }
        for r in Role::ALL {
            role.get_or_create(&vec![
                ("namespace".to_string(), id.to_string()),
                ("role".to_string(), r.name().to_string()),
            ])
            .set(i64::from(ns["role"] == r.name()));
        }
        ready
            .get_or_create(&label("namespace", id))
            .set(i64::from(ns["ready"] == true));
        for (cache, count) in [("internal", own), ("external", theirs)] {
            flows
                .get_or_create(&vec![
                    ("namespace".to_string(), id.to_string()),
                    ("cache".to_string(), cache.to_string()),
                ])
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        peers_up
            .get_or_create(&label("namespace", id))
            .set(i64::try_from(ns["peers_up"].as_u64().unwrap_or(0)).unwrap_or(i64::MAX));
    }
    reg.register(
        "namespace_role",
        "A namespace's role (1 for the current one)",
        role,
    );
    reg.register(
        "namespace_ready",
        "1 when the namespace holds a complete copy of its primary's table",
        ready,
    );
    reg.register(
        "namespace_flows",
        "A namespace's flows, own and its peers'",
        flows,
    );
    reg.register(
        "namespace_peers_up",
        "Peers a namespace's node counts as up",
        peers_up,
    );
    gauge(
        &mut reg,
        "namespaces_not_ready",
        "Namespaces without a complete copy of their primary's table",
        not_ready,
    );
    let total = Family::<Labels, Gauge>::default();
    total
        .get_or_create(&label("cache", "internal"))
        .set(i64::try_from(internal).unwrap_or(i64::MAX));
    total
        .get_or_create(&label("cache", "external"))
        .set(i64::try_from(external).unwrap_or(i64::MAX));
    reg.register(
        "flows",
        "Flows of every namespace, own and their peers'",
        total,
    );
    let dropped = Family::<Labels, Counter>::default();
    for reason in ["unknown_namespace", "malformed_tag", "inbox_full"] {
        dropped
            .get_or_create(&label("reason", reason))
            .inc_by(v["dropped"][reason].as_u64().unwrap_or(0));
    }
    reg.register(
        "namespace_datagrams_dropped",
        "Datagrams on the shared sync socket dropped before any namespace's node saw them",
        dropped,
    );
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut out, &reg);
    out
}

/// Metrics connections answered at once, at most: a Prometheus server needs one. Each
/// may wait two seconds for its request, so without a cap idle connections could pile up
/// on the daemon.
pub(crate) const MAX_CONNECTIONS: usize = 8;

/// Admits metrics connections, up to [`MAX_CONNECTIONS`] at once, and counts the ones
/// beyond (which the daemon closes at once).
#[derive(Debug, Default)]
pub(crate) struct Gate {
    open: Arc<AtomicUsize>,
    refused: u64,
}

/// One admitted connection: its place is given back when this is dropped.
#[derive(Debug)]
pub(crate) struct Admitted(Arc<AtomicUsize>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Gate {
    /// A place for one more connection, or `None` (counted) when all are taken. Only the
    /// event loop admits (`&mut self`); places come back from any task.
    pub(crate) fn admit(&mut self) -> Option<Admitted> {
        if self.open.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
            self.refused += 1;
            return None;
        }
        self.open.fetch_add(1, Ordering::Relaxed);
        Some(Admitted(Arc::clone(&self.open)))
    }

    /// Connections refused because all places were taken.
    pub(crate) fn refused(&self) -> u64 {
        self.refused
    }
}

/// Answer one HTTP connection: `GET /metrics` gets `body`, anything else a 404. The
/// connection holds its place at the [`Gate`] until it is done.
pub(crate) async fn serve(
    mut stream: tokio::net::TcpStream,
    _place: Admitted,
    body: impl FnOnce() -> String,
) {
    let mut req = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(2), async {
        while req.len() < 8192 && !req.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => req.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    if read.is_err() {
        return;
    }
    let line = req.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let (method, path) = (words.next(), words.next());
    let path = path.map(|p| p.split('?').next().unwrap_or(p));
    let reply = if method == Some("GET") && path == Some("/metrics") {
        let body = body();
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    } else {
        let body = "ctsync serves /metrics only\n";
        format!(
            "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(reply.as_bytes())).await;
}

#[cfg(test)]
mod tests {
    use super::{Gate, MAX_CONNECTIONS};
    use crate::daemon::status_sample;

    #[test]
    fn at_most_eight_connections_are_admitted_and_the_rest_counted() {
        let mut gate = Gate::default();
        let mut open: Vec<_> = (0..MAX_CONNECTIONS).map(|_| gate.admit()).collect();
        assert!(open.iter().all(Option::is_some));
        assert_eq!(MAX_CONNECTIONS, 8);
        assert!(gate.admit().is_none());
        assert!(gate.admit().is_none());
        assert_eq!(gate.refused(), 2);
        open.pop();
        assert!(
            gate.admit().is_some(),
            "a finished connection gives its place back"
        );
        assert_eq!(gate.refused(), 2);
    }

    #[test]
    fn a_status_becomes_metrics() {
        let m = super::render(&status_sample());
        for want in [
            "ctsync_role{role=\"backup\"} 1",
            "ctsync_role{role=\"primary\"} 0",
            "ctsync_ready 1",
            "ctsync_flows{cache=\"external\"} 200000",
            "ctsync_peer_up{peer=\"198.18.255.1:3780\"} 1",
            "ctsync_peer_last_seen_seconds{peer=\"198.18.255.1:3780\"} 0.12",
            "ctsync_stale 0",
            "ctsync_peer_messages_retransmitted_total{peer=\"198.18.255.1:3780\"} 2",
            "ctsync_datagrams_dropped_total{reason=\"replay\"} 4",
            "ctsync_datagrams_dropped_total{reason=\"authentication\"} 0",
            "ctsync_kernel_failures_total{op=\"expectation_create\"} 2",
            "ctsync_kernel_failures_total{op=\"create\"} 0",
            "ctsync_kernel_overruns_total 1",
            "ctsync_kernel_recreated_total 17",
            "ctsync_control_refused_total 18",
            "ctsync_event_budget_hits_total 19",
            "ctsync_datagram_budget_hits_total 20",
            "ctsync_metrics_refused_total 21",
            "ctsync_link_copies_total 22",
            "ctsync_link_switches_total{peer=\"198.18.255.1:3780\"} 1",
            "ctsync_peer_link_active{peer=\"198.18.255.1:3780\",link=\"sync1\"} 1",
            "ctsync_peer_link_active{peer=\"198.18.255.1:3780\",link=\"sync0\"} 0",
            "ctsync_peer_link_last_heard_seconds{peer=\"198.18.255.1:3780\",link=\"sync0\"} 4.0",
            "ctsync_last_takeover_seconds 0.25",
            "ctsync_kernel_dumps_total 3",
            "# EOF",
        ] {
            assert!(m.contains(want), "{want} missing from\n{m}");
        }
    }

    /// Every core counter is a metric of its own, with its value and a help text of its
    /// own; the five that once reached neither the status nor the metrics among them.
    #[test]
    fn a_daemon_of_namespaces_labels_each_and_counts_the_rest() {
        let one = |n: usize| {
            serde_json::json!({"name": format!("qrouter-{n}"), "id": n.to_string(), "role": "backup",
                "ready": n != 3, "caches": {"internal": 1, "external": 10}, "peers_up": 1})
        };
        let v = serde_json::json!({
            "node": "net-1",
            "namespaces": (0..1002).map(one).collect::<Vec<_>>(),
            "dropped": {"unknown_namespace": 4, "malformed_tag": 0, "inbox_full": 0},
        });
        let m = super::render_namespaces(&v);
        for line in [
            "ctsync_namespaces 1002",
            "ctsync_namespaces_unlabelled 2",
            "ctsync_namespaces_not_ready 1",
            "ctsync_namespace_ready{namespace=\"3\"} 0",
            "ctsync_namespace_role{namespace=\"7\",role=\"backup\"} 1",
            "ctsync_namespace_flows{namespace=\"7\",cache=\"external\"} 10",
            "ctsync_flows{cache=\"external\"} 10020",
            "ctsync_namespace_datagrams_dropped_total{reason=\"unknown_namespace\"} 4",
        ] {
            assert!(m.lines().any(|l| l == line), "{line} missing");
        }
        assert!(
            !m.contains("namespace=\"1001\""),
            "beyond the cap: totals only"
        );
    }

    #[test]
    fn every_core_counter_is_a_metric() {
        let s = status_sample();
        let m = super::render(&s);
        for (key, v) in s.stats.core.counters() {
            let (name, _) = super::core_counter(key)
                .unwrap_or_else(|| panic!("core counter {key} has no metric name and help"));
            let want = format!("ctsync_{name}_total {v}\n");
            assert!(m.contains(&want), "{want} missing from\n{m}");
        }
        for name in [
            "filtered",
            "foreign",
            "delayed_and_gone",
            "overflows",
            "unencodable",
        ] {
            assert!(m.contains(&format!("ctsync_{name}_total ")), "{name}");
        }
    }
}
