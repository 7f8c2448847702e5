//! Roles and readiness: what this node does for the cluster (keepalived's MASTER,
//! BACKUP, FAULT), what a move between them sets off, and whether it could take over
//! now without losing flows (docs/PROTOCOL.md §8).

use std::time::Instant;

use ctnetlink::Flow;
use ctsync_wire::{NodeId, WireRole};
use serde::{Deserialize, Serialize};

use super::{KernelOp, Node, Notify};
use crate::cache::FlowTable;
use crate::config::Mode;

/// What a node does for the cluster now. The one role type of ctsync: the core's,
/// the configuration's (`role = "backup"`), keepalived's states mapped onto it, and the
/// status's and metrics' label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// It carries the traffic; its kernel table is the truth.
    Primary,
    /// It stands by with a copy of the primary's table.
    Backup,
    /// Neither (keepalived FAULT).
    Fault,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 3] = [Role::Primary, Role::Backup, Role::Fault];

    /// Its name: `primary`, `backup`, `fault`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Backup => "backup",
            Role::Fault => "fault",
        }
    }

    /// As a HELLO or ALIVE frame carries it.
    pub(crate) fn wire(self) -> WireRole {
        match self {
            Role::Primary => WireRole::Primary,
            Role::Backup => WireRole::Backup,
            Role::Fault => WireRole::Fault,
        }
    }

    /// From a frame (`None`: the peer has not decided yet).
    pub(crate) fn from_wire(r: WireRole) -> Option<Role> {
        match r {
            WireRole::Primary => Some(Role::Primary),
            WireRole::Backup => Some(Role::Backup),
            WireRole::Fault => Some(Role::Fault),
            WireRole::Unknown => None,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    /// A role by its name, in any case; keepalived's `MASTER` means primary.
    fn from_str(s: &str) -> Result<Role, String> {
        if s.eq_ignore_ascii_case("master") {
            return Ok(Role::Primary);
        }
        Role::ALL
            .into_iter()
            .find(|r| r.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown role {s:?}: primary, backup or fault"))
    }
}

impl Node {
    /// Change role (keepalived's MASTER/BACKUP/FAULT, or the operator).
    pub fn set_role(&mut self, now: Instant, role: Role) {
        if role == self.role && self.role_set {
            return;
        }
        let first = !self.role_set;
        let old = self.role;
        self.role_set = true;
        self.role = role;
        self.announce();
        match role {
            Role::Primary => {
                // Commit what peers told us (hot standby: already in the kernel), then
                // take the kernel's table as ours (the dump) and send it to everyone.
                if self.cfg.mode == Mode::Commit {
                    // The external caches are dropped below: their flows move to the
                    // kernel instead of being copied.
                    let (tables, exps): (Vec<FlowTable>, Vec<_>) = self
                        .primary_owners()
                        .into_iter()
                        .filter_map(|o| self.external.remove(&o))
                        .map(|e| (e.table, e.expectations))
                        .unzip();
                    self.delete_replaced(&tables);
                    self.kernel_ops.push_back(KernelOp::Commit(tables));
                    // After their masters.
                    self.kernel_ops.extend(
                        exps.into_iter()
                            .flat_map(|m| m.into_values())
                            .map(|x| KernelOp::ExpCreate(Box::new(x.exp))),
                    );
                }
                self.kernel_ops.push_back(KernelOp::Dump);
                self.external.clear();
                // The kernel's table is ours now: nothing is held on a peer's behalf.
                self.mirror.clear();
                for p in self.peers.values_mut() {
                    p.sync.bulk_done = false;
                    p.sync.digest_ok = false;
                    p.sync.refreshing = false;
                }
                self.bulk_after_dump = true;
            }
            Role::Backup | Role::Fault if old == Role::Primary && !first => {
                // Our own flows from when we were primary may be stale (the new primary
                // may have closed them): let them expire soon. The primary's bulk
                // transfer, asked for next, re-asserts every live flow with its real
                // timeout.
                self.kernel_ops
                    .push_back(KernelOp::ShortenTimeouts(self.cfg.shorten_timeout));
                // Every entry's timeout changes: what was written is known no longer, so
                // the resync below writes every flow again, with its real timeout.
                self.mirror.clear();
                self.request_resync(now);
            }
            Role::Backup | Role::Fault if first => {
                // A start: the kernel's timers are left alone for now. The role may be a
                // guess (no word from keepalived yet), and a node that is in fact
                // serving would cut every live session's timeout. Once a primary's whole
                // table has arrived, only what no primary owns is shortened (replicated
                // copies whose deletion a previous run of ctsync missed).
                self.unclaimed_check = true;
                self.request_resync(now);
            }
            Role::Backup | Role::Fault => {
                // Between backup and fault the caches stay valid: asking for a resync
                // here would drop readiness, and with keepalived's track_file that turns
                // FAULT -> not ready -> FAULT into a loop.
            }
        }
        self.update_ready();
    }

    /// After a start as backup, the first complete table from primary `from`: the
    /// entries of our kernel it does not hold are either our own or copies a previous
    /// run of ctsync wrote and whose deletion it missed while down. They are left to
    /// expire soon (the configured shortened timeout); a live one's next packet gives
    /// it its full timeout again. A node that is in fact serving hears from no primary,
    /// so nothing of its table is touched.
    pub(super) fn shorten_unclaimed(&mut self, from: NodeId) {
        if self.role == Role::Primary || !std::mem::take(&mut self.unclaimed_check) {
            return;
        }
        let Some(ext) = self.external.get(&from) else {
            return;
        };
        let secs = self.cfg.shorten_timeout;
        let flows: Vec<Flow> = self
            .internal
            .flows()
            .filter(|f| f.timeout.is_none_or(|t| t > secs))
            .filter(|f| !ext.table.contains(&self.hasher.keyed(f.key())))
            .map(|f| {
                let mut s = Flow::new(f.orig, f.reply);
                s.zone = f.zone;
                s.timeout = Some(secs);
                s
            })
            .collect();
        if !flows.is_empty() {
            self.kernel_ops.push_back(KernelOp::Shorten(flows));
        }
    }

    /// The role now.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Whether this node could take over now without losing flows.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// Write every flow of every external cache to the kernel ([`KernelOp::Commit`],
    /// then a [`KernelOp::Dump`]). Returns the flows written. In hot standby the kernel
    /// already holds what the primary sent: only the flows it is not known to hold are
    /// written ([`KernelOp::Upsert`]; on a complete kernel, none).
    pub fn commit(&mut self) -> usize {
        if self.cfg.mode == Mode::HotStandby && self.role != Role::Primary {
            let owners = self.primary_owners();
            return owners.into_iter().map(|o| self.write_unknown(o)).sum();
        }
        let owners = self.primary_owners();
        let tables: Vec<FlowTable> = owners
            .iter()
            .filter_map(|o| self.external.get(o))
            .map(|e| e.table.clone())
            .collect();
        let n = tables.iter().map(FlowTable::len).sum();
        self.delete_replaced(&tables);
        self.kernel_ops.push_back(KernelOp::Commit(tables));
        let exps: Vec<KernelOp> = owners
            .iter()
            .filter_map(|o| self.external.get(o))
            .flat_map(|e| e.expectations.values())
            .map(|x| KernelOp::ExpCreate(Box::new(x.exp.clone())))
            .collect();
        self.kernel_ops.extend(exps);
        self.kernel_ops.push_back(KernelOp::Dump);
        n
    }

    /// Before a commit of `tables`: delete the local entries it would update instead of
    /// replace. An entry of our own kernel on the tuple of a flow the primary holds, with
    /// another reply tuple (another NAT port: the flow closed and opened again on the
    /// primary while our old entry lingered), would keep its tuples through the commit's
    /// update, and the session its old NAT.
    fn delete_replaced(&mut self, tables: &[FlowTable]) {
        let stale: Vec<_> = self
            .internal
            .flows()
            .filter(|f| {
                let key = self.hasher.keyed(f.key());
                tables
                    .iter()
                    .any(|t| t.other_reply(&key, &f.reply).is_some())
            })
            .map(|f| KernelOp::Delete(f.key()))
            .collect();
        self.kernel_ops.extend(stale);
    }

    /// Peers whose tables a commit writes: only what a primary owned (other tables may
    /// hold stale copies, see `apply_message`).
    pub(super) fn primary_owners(&self) -> Vec<NodeId> {
        self.peers
            .values()
            .filter(|p| p.sync.was_primary)
            .map(|p| p.link.id)
            .collect()
    }

    /// A verified peer announced its role. A peer that becomes primary makes its table
    /// the truth for our kernel (hot standby): what we hold of it is written now, since
    /// it will not send unchanged flows again.
    pub(super) fn peer_role(&mut self, id: NodeId, announced: (WireRole, bool)) {
        let hot = self.cfg.mode == Mode::HotStandby && self.role != Role::Primary;
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        if p.link.announce(announced) && hot && self.external.contains_key(&id) {
            self.write_unknown(id);
            if let Some(ext) = self.external.get(&id) {
                self.kernel_ops.extend(
                    ext.expectations
                        .values()
                        .map(|x| KernelOp::ExpCreate(Box::new(x.exp.clone()))),
                );
            }
        }
    }

    /// Hot standby: write the flows of `origin`'s table that the kernel is not known to
    /// hold in that state, and remember them as written. Returns how many.
    pub(super) fn write_unknown(&mut self, origin: NodeId) -> usize {
        let Node {
            external,
            mirror,
            kernel_ops,
            stats,
            ..
        } = self;
        let Some(ext) = external.get(&origin) else {
            return 0;
        };
        let before = kernel_ops.len();
        kernel_ops.extend(
            ext.table
                .stored_flows_where(|key_hash, hash| mirror.write_needed(key_hash, hash))
                .map(KernelOp::Upsert),
        );
        let n = kernel_ops.len() - before;
        stats.kernel_writes += n as u64;
        stats.kernel_writes_skipped += (ext.table.len() - n) as u64;
        n
    }

    pub(super) fn update_ready(&mut self) {
        // A backup (or a node keepalived holds in FAULT, which must be able to leave it)
        // is ready once it has heard from every peer, or waited a dead interval for
        // those that are silent, and holds a complete copy of every primary's table.
        let ready = match self.role {
            Role::Primary => true,
            Role::Backup | Role::Fault => {
                self.settled
                    && self
                        .peers
                        .values()
                        .filter(|p| p.sync.was_primary)
                        .all(|p| p.sync.synced())
            }
        };
        if ready != self.ready {
            self.ready = ready;
            self.notes.push_back(Notify::Ready(ready));
            self.announce();
        }
    }

    /// With keepalives further apart than the alive interval, say a new role or
    /// readiness to every peer at once.
    fn announce(&mut self) {
        if self.cfg.keepalive_interval > self.cfg.alive_interval {
            for p in self.peers.values_mut() {
                p.link.announce = true;
            }
        }
    }

    /// Settled: every peer has been heard from, or a dead interval has passed since
    /// start (readiness waits for it).
    pub(super) fn settle(&mut self, now: Instant) {
        if !self.settled
            && (self.timers.is_due(super::NodeTimer::Settle, now)
                || self.peers.values().all(|p| p.link.epoch.is_some()))
        {
            self.settled = true;
            self.timers.stop(super::NodeTimer::Settle);
        }
    }
}
