//! Prometheus metrics (OpenMetrics text, encoded by `prometheus-client`) and the small
//! HTTP responder that serves them at `GET /metrics` on the daemon's event loop.
//!
//! The values are a snapshot of the daemon's status (the same JSON `ctsync status
//! --json` prints), turned into metric families at each scrape: nothing is kept twice.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Labels = Vec<(String, String)>;

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn i(v: &Value) -> i64 {
    i64::try_from(u(v)).unwrap_or(i64::MAX)
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

/// The metrics for a status snapshot, as OpenMetrics text.
pub(crate) fn render(s: &Value) -> String {
    let mut reg = Registry::with_prefix("ctsync");
    let role = Family::<Labels, Gauge>::default();
    for r in ["primary", "backup", "fault"] {
        role.get_or_create(&label("role", r))
            .set(i64::from(s["role"] == r));
    }
    reg.register("role", "This node's role (1 for the current one)", role);
    gauge(
        &mut reg,
        "ready",
        "1 when this node holds a complete copy of the primary's table",
        i64::from(s["ready"] == true),
    );
    let flows = Family::<Labels, Gauge>::default();
    for c in ["internal", "external"] {
        flows
            .get_or_create(&label("cache", c))
            .set(i(&s["caches"][c]));
    }
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
    for p in s["peers"].as_array().into_iter().flatten() {
        let l = label("peer", p["address"].as_str().unwrap_or("?"));
        up.get_or_create(&l).set(i64::from(p["up"] == true));
        ready.get_or_create(&l).set(i64::from(p["ready"] == true));
        backlog.get_or_create(&l).set(i(&p["backlog"]));
        sent.get_or_create(&l).inc_by(u(&p["sent"]));
        retrans.get_or_create(&l).inc_by(u(&p["retransmitted"]));
        resets.get_or_create(&l).inc_by(u(&p["resets"]));
    }
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
    let st = &s["stats"];
    for (name, help, key) in [
        ("datagrams_sent", "Sync datagrams sent", "datagrams_sent"),
        (
            "datagrams_received",
            "Sync datagrams received and authenticated",
            "datagrams_received",
        ),
        (
            "flows_received",
            "Flow messages received from peers",
            "flows_received",
        ),
        (
            "kernel_overruns",
            "Times the kernel event socket overran (each followed by a table re-read)",
            "kernel_overruns",
        ),
        (
            "expectations_sent",
            "Expectations (helpers' expected connections) sent to peers, created or deleted",
            "expectations_sent",
        ),
        (
            "expectations_received",
            "Expectation messages received from peers",
            "expectations_received",
        ),
        (
            "kernel_recreated",
            "Replicated flows written again because the kernel had lost them (e.g. it was full)",
            "kernel_recreated",
        ),
        (
            "cache_full_refused",
            "Flows refused because a cache held [sync] max_flows",
            "cache_full",
        ),
        (
            "control_refused",
            "Control socket clients refused because they are not root",
            "control_refused",
        ),
    ] {
        counter(&mut reg, name, help, u(&st[key]));
    }
    let dropped = Family::<Labels, Counter>::default();
    for (k, v) in s["dropped"].as_object().into_iter().flatten() {
        dropped.get_or_create(&label("reason", k)).inc_by(u(v));
    }
    reg.register(
        "datagrams_dropped",
        "Sync datagrams dropped, by reason",
        dropped,
    );
    let failures = Family::<Labels, Counter>::default();
    for (k, v) in s["kernel_failures"].as_object().into_iter().flatten() {
        failures.get_or_create(&label("error", k)).inc_by(u(v));
    }
    reg.register(
        "kernel_write_failures",
        "Kernel writes that failed, by operation and error",
        failures,
    );
    let t = &s["timing"];
    seconds(
        &mut reg,
        "last_takeover_seconds",
        "How long the last move to primary took, kernel writes included",
        t["last_takeover_seconds"].as_f64().unwrap_or(0.0),
    );
    seconds(
        &mut reg,
        "last_kernel_dump_seconds",
        "How long the last read of the kernel table (resync) took",
        t["last_kernel_dump_seconds"].as_f64().unwrap_or(0.0),
    );
    counter(
        &mut reg,
        "kernel_dumps",
        "Reads of the whole kernel table",
        u(&t["kernel_dumps"]),
    );
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut out, &reg);
    out
}

/// Answer one HTTP connection: `GET /metrics` gets `body`, anything else a 404.
pub(crate) async fn serve(mut stream: tokio::net::TcpStream, body: impl FnOnce() -> String) {
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
    use serde_json::json;

    #[test]
    fn a_status_becomes_metrics() {
        let s = json!({
            "role": "backup", "ready": true,
            "caches": {"internal": 3, "external": 200000},
            "peers": [{"address": "198.18.255.1:3780", "up": true, "ready": true,
                       "sent": 10, "retransmitted": 2, "resets": 0, "backlog": 1}],
            "dropped": {"replayed": 4},
            "kernel_failures": {},
            "stats": {"datagrams_sent": 5, "datagrams_received": 6, "flows_received": 7,
                      "kernel_overruns": 1},
            "timing": {"last_takeover_seconds": 0.25, "last_kernel_dump_seconds": 0.5,
                       "kernel_dumps": 3},
        });
        let m = super::render(&s);
        for want in [
            "ctsync_role{role=\"backup\"} 1",
            "ctsync_role{role=\"primary\"} 0",
            "ctsync_ready 1",
            "ctsync_flows{cache=\"external\"} 200000",
            "ctsync_peer_up{peer=\"198.18.255.1:3780\"} 1",
            "ctsync_peer_messages_retransmitted_total{peer=\"198.18.255.1:3780\"} 2",
            "ctsync_datagrams_dropped_total{reason=\"replayed\"} 4",
            "ctsync_kernel_overruns_total 1",
            "ctsync_last_takeover_seconds 0.25",
            "# EOF",
        ] {
            assert!(m.contains(want), "{want} missing from\n{m}");
        }
    }
}
