//! The handshake that proves a peer's epoch live (docs/PROTOCOL.md §4): we send HELLO
//! with a fresh challenge under the handshake key until a HELLO_ACK echoes it; we answer
//! its HELLOs. Until then nothing but handshake frames of that epoch counts, so a
//! replayed or forged datagram cannot set a role or plant a flow.

use std::time::Instant;

use ctsync_wire::WireRole;
use ctsync_wire::frame::FrameWriter;
use ctsync_wire::header::VERSION;
use smallvec::SmallVec;

use super::{Announce, Handshake, Link, LinkTimer};
use crate::config::Config;
use crate::key::SplitMix;

impl Link {
    /// A HELLO of `epoch`: answered (its challenge echoed by our next datagram) unless it
    /// cannot speak our version. Its role counts at once from the verified epoch, else
    /// only once that epoch is verified.
    pub(super) fn on_hello(
        &mut self,
        epoch: u64,
        verified: bool,
        challenge: u64,
        (min, max): (u8, u8),
        announced: Announce,
        roles: &mut SmallVec<[Announce; 1]>,
    ) -> Option<Handshake> {
        if !(min..=max).contains(&VERSION) {
            // A peer that cannot speak our version: no answer (its epoch is never
            // verified, so nothing it sends counts).
            return Some(Handshake::Incompatible { min, max });
        }
        self.hello_ack_due = Some(challenge);
        if verified {
            roles.push(announced);
        } else {
            // Not trusted until the epoch is proven live (a replayed HELLO must not set a
            // role that decides what reaches the kernel).
            self.pending_role = Some((epoch, announced.0, announced.1));
        }
        None
    }

    /// A HELLO_ACK of `epoch` echoing `echo`: if it answers our challenge, the epoch is
    /// proven live (again).
    pub(super) fn on_hello_ack(
        &mut self,
        now: Instant,
        cfg: &Config,
        epoch: u64,
        verified: bool,
        echo: u64,
        generation: u32,
    ) -> Option<Handshake> {
        if self.challenge != Some(echo) {
            return None;
        }
        if verified {
            // Proven live again after being down. A candidate epoch seen meanwhile is not
            // live (this one is): it was a replay of an old handshake, or a peer that has
            // since gone; stop challenging for it.
            self.rx_generation = self.rx_generation.max(generation);
            self.reverify = false;
            self.hello_every = cfg.alive_interval;
            self.challenge = None;
            self.candidate = None;
            return None;
        }
        let restarted = self.epoch.is_some();
        self.epoch = Some(epoch);
        self.challenge = None;
        self.hello_every = cfg.alive_interval;
        self.reverify = false;
        let announced = self
            .pending_role
            .take()
            .filter(|(e, ..)| *e == epoch)
            .map(|(_, role, ready)| (role, ready));
        self.replay = self
            .candidate
            .take()
            .filter(|(e, _)| *e == epoch)
            .map(|(_, w)| w)
            .unwrap_or_default();
        self.rx_generation = generation.max(1);
        self.role = WireRole::Unknown;
        self.recv.forget();
        // Its group stream too: a new epoch's group is joined by its GROUP_JOIN (§13.3).
        self.group_recv.forget();
        self.group_joined = false;
        self.last_heard = Some(now);
        self.up = true;
        self.timers.set(LinkTimer::Dead, now + cfg.dead_interval);
        Some(Handshake::Verified {
            restarted,
            announced,
        })
    }

    /// Write the handshake frames due: the answer to its challenge, and our own HELLO
    /// while its epoch is unverified (none yet, a newer one seen, or it was down).
    /// Returns whether any was written (the datagram then goes under the handshake key).
    pub(super) fn write_handshake(
        &mut self,
        now: Instant,
        cfg: &Config,
        w: &mut FrameWriter<'_>,
        (role, ready): Announce,
        generation: u32,
        rng: &mut SplitMix,
    ) -> bool {
        let mut any = false;
        if let Some(echo) = self.hello_ack_due.take() {
            w.hello_ack(echo, VERSION, generation);
            any = true;
        }
        let challenging = self.epoch.is_none()
            || self.reverify
            || self
                .candidate
                .as_ref()
                .is_some_and(|(e, _)| Some(*e) != self.epoch);
        let due = challenging && self.hello_sent.is_none_or(|t| now >= t + self.hello_every);
        if due {
            if self.challenge.is_none()
                || self
                    .hello_sent
                    .is_some_and(|t| now >= t + cfg.dead_interval)
            {
                self.challenge = Some(rng.next());
            }
            w.hello(self.challenge.unwrap_or(0), VERSION, VERSION, role, ready);
            self.hello_sent = Some(now);
            if cfg.keepalive_interval > cfg.alive_interval {
                self.hello_every = (self.hello_every * 2).min(cfg.keepalive_interval);
            }
            any = true;
        }
        any
    }
}
