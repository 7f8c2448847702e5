//! The daemon's status: what `ctsync status` shows and the metrics report.

use ctsync_core::Role;
use serde_json::json;

use super::Daemon;

impl Daemon {
    /// The status as `ctsync status --json` prints it.
    pub(super) fn status(&self) -> serde_json::Value {
        let peers: Vec<_> = self
            .node
            .status()
            .peers
            .into_iter()
            .map(|p| {
                json!({
                    "id": format!("{:#x}", p.id),
                    "address": self.link.peers.get(&p.id).map(|a| a.to_string()),
                    "up": p.up,
                    "epoch": p.epoch,
                    "role": p.role.map_or("unknown", Role::name),
                    "ready": p.ready,
                    "synced": p.synced,
                    "last_seen_ms": p.last_heard.map(|t| u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)),
                    "received": p.received,
                    "duplicates": p.duplicates,
                    "lag": p.backlog,
                    "sent": p.sent,
                    "retransmitted": p.retransmitted,
                    "resets": p.resets,
                    "backlog": p.backlog,
                })
            })
            .collect();
        let drops: serde_json::Map<String, serde_json::Value> = self
            .node
            .drops()
            .iter()
            .map(|(k, v)| (format!("{k:?}").to_lowercase(), json!(v)))
            .collect();
        let s = self.node.stats();
        json!({
            "node": self.name,
            "role": format!("{:?}", self.node.role()).to_lowercase(),
            "ready": self.node.is_ready(),
            "caches": { "internal": self.node.internal().len(), "external": self.node.external_len() },
            "peers": peers,
            "dropped": drops,
            "kernel_failures": self.kernel.failures,
            "stats": {
                "datagrams_sent": s.datagrams_sent,
                "datagrams_received": s.datagrams_received,
                "flows_received": s.flows_received,
                "own_events": s.own_events,
                "kernel_overruns": s.kernel_overruns,
                "expectations_sent": s.expectations_sent,
                "expectations_received": s.expectations_received,
                "kernel_recreated": self.kernel.recreated,
                "cache_full": s.cache_full,
                "control_refused": self.control_refused,
            },
            "timing": {
                "last_takeover_seconds": self.last_takeover.map(|d| d.as_secs_f64()),
                "last_kernel_dump_seconds": self.kernel.last_dump.map(|d| d.as_secs_f64()),
                "kernel_dumps": self.kernel.dumps,
            },
        })
    }

    /// One line for systemd's status and logs.
    pub(super) fn status_line(&self) -> String {
        format!(
            "{:?}, {}, {} own flows, {} from peers",
            self.node.role(),
            if self.node.is_ready() {
                "ready"
            } else {
                "not ready"
            },
            self.node.internal().len(),
            self.node.external_len()
        )
    }
}
