//! Two nodes wired back to back: no faults, no latency, the clock moved by the caller.

use std::time::{Duration, Instant};

use ctsync_wire::{Cipher, ClusterSecret};

use crate::{Config, KernelOp, Node, Role};

/// Node 1 (primary, `a`) and node 2 (backup, `b`) wired back to back. Datagrams go
/// across at once; kernel dumps find empty tables (so a dump empties a node's internal
/// cache) and other kernel writes are dropped (the pair has no kernels). Every datagram `a` sends is kept in `captured` when
/// capturing, for replay and forgery tests.
#[derive(Debug)]
pub struct Pair {
    /// The clock.
    pub now: Instant,
    /// Node 1, the primary.
    pub a: Node,
    /// Node 2, the backup.
    pub b: Node,
    /// Datagrams `a` sent, when capturing.
    pub captured: Vec<Vec<u8>>,
    /// Keep what `a` sends in `captured`.
    pub capture: bool,
}

/// A node of a pair: `id` 1 or 2 with the given epoch, cluster key and cipher; its seed
/// is fixed by its id. `adjust` sets its configuration.
pub fn pair_node(
    id: u32,
    epoch: u64,
    psk: &[u8],
    cipher: Cipher,
    now: Instant,
    adjust: &dyn Fn(&mut Config),
) -> Node {
    let secret = ClusterSecret::new(psk, cipher).unwrap();
    let mut cfg = Config::new(id, vec![1, 2]);
    adjust(&mut cfg);
    Node::new(cfg, secret, epoch, u64::from(id) * 7919, now).unwrap()
}

impl Pair {
    /// A pair under `psk` with ChaCha20-Poly1305 and default configurations, roles set,
    /// handshakes done (one second of 10 ms ticks).
    pub fn new(psk: &[u8]) -> Pair {
        Pair::with(psk, Cipher::ChaCha20Poly1305, &|_| {})
    }

    /// A pair under `psk` and `cipher`, configurations set by `adjust`, roles set,
    /// handshakes done.
    pub fn with(psk: &[u8], cipher: Cipher, adjust: &dyn Fn(&mut Config)) -> Pair {
        let now = Instant::now();
        let mut p = Pair {
            now,
            a: pair_node(1, 1 << 32, psk, cipher, now, adjust),
            b: pair_node(2, 2 << 32, psk, cipher, now, adjust),
            captured: Vec::new(),
            capture: true,
        };
        p.a.set_role(now, Role::Primary);
        p.b.set_role(now, Role::Backup);
        p.settle(Duration::from_secs(1));
        p
    }

    /// Deliver datagrams both ways at `now` until neither node has more to send.
    pub fn exchange(&mut self) {
        let mut buf = Vec::new();
        for _ in 0..1000 {
            let mut moved = false;
            while self.a.poll_transmit(self.now, &mut buf).is_some() {
                if self.capture {
                    self.captured.push(buf.clone());
                }
                let _ = self.b.handle_datagram(self.now, &mut buf);
                moved = true;
            }
            while self.b.poll_transmit(self.now, &mut buf).is_some() {
                let _ = self.a.handle_datagram(self.now, &mut buf);
                moved = true;
            }
            let now = self.now;
            for n in [&mut self.a, &mut self.b] {
                while let Some(op) = n.poll_kernel_op() {
                    if op == KernelOp::Dump {
                        // No kernel: the read finds an empty table (and what the node
                        // held as its own is gone, with deletions sent).
                        n.begin_kernel_dump(now);
                        n.end_kernel_dump(now);
                        moved = true;
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Run for `d` in 10 ms ticks: timers, then an exchange, each tick.
    pub fn settle(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now += Duration::from_millis(10);
            self.a.handle_timeout(self.now);
            self.b.handle_timeout(self.now);
            self.exchange();
        }
    }
}
