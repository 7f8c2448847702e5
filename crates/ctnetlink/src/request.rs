//! The request socket ([`Conntrack`]): streaming dumps, get, batched create/update/delete
//! with a result per entry, flush, statistics and expectations.

use std::fmt;
use std::io;
use std::os::fd::AsFd;
use std::time::Duration;

// `NLM_F_*` message flags: linux/netlink.h.
use netlink_packet_core::{NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR};
use netlink_sys::{Socket, SocketAddr};

use crate::attr;
use crate::decode::{self, Body, DecodeError, Stats};
use crate::encode::{self, ExpOp, FlowOp};
use crate::error::{BatchReport, Errno, Error};
use crate::flow::{Expectation, Family, Flow, FlowKey};
use crate::netns::Netns;
use crate::socket::{Buffer, Lent, open_socket, recv_into, size_buffer};
use crate::sys;

/// One item of a streaming dump.
#[derive(Debug)]
pub enum DumpItem<'a> {
    /// An entry.
    Flow(&'a Flow),
    /// The kernel flagged the dump as inconsistent (`NLM_F_DUMP_INTR`) and it starts
    /// over: forget what this dump delivered so far.
    Restart,
}

/// The outcome of a dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DumpSummary {
    /// Entries delivered by the final, complete pass.
    pub flows: u64,
    /// Passes restarted because of `NLM_F_DUMP_INTR`.
    pub restarts: u32,
}

/// Bytes of requests per `sendmsg`. The kernel processes them in order in our context;
/// the error replies for one chunk must fit in the receive buffer (see [`RECV_BUFFER`]).
const CHUNK_BYTES: usize = 256 * 1024;
/// Receive buffer asked for on request sockets: room for the worst case of one error
/// reply (about 1 KiB of skb) per request of a full chunk.
const RECV_BUFFER: usize = 16 * 1024 * 1024;
/// Send buffer: a chunk must fit (`netlink_sendmsg` refuses messages above sk_sndbuf).
const SEND_BUFFER: usize = 4 * 1024 * 1024;
/// How often a dump is retried after `NLM_F_DUMP_INTR`.
const DUMP_RETRIES: u32 = 8;
/// Offset of `nlmsg_flags` in `struct nlmsghdr` (linux/netlink.h): after nlmsg_len (4
/// bytes) and nlmsg_type (2).
const NLMSG_FLAGS_AT: usize = 6;
/// How long a request socket waits for the kernel's answers before [`Error::Timeout`].
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Map a failed blocking receive on a request socket to our error.
fn recv_error(e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::Timeout,
        _ if e.raw_os_error() == Some(libc::ENOBUFS) => Error::Overrun,
        _ => Error::Io(e),
    }
}

/// A ctnetlink request socket: dumps, gets and (batched) writes.
///
/// Writes made through it cause events whose `pid` is [`Conntrack::portid`], so an event
/// listener can recognise them.
pub struct Conntrack {
    sock: Socket,
    portid: u32,
    seq: u32,
    /// The request being built, lent by the thread until it is sent (`Lent::tx`).
    tx: Option<Lent>,
    /// Bytes per sendmsg: what the granted send buffer allows, at most CHUNK_BYTES.
    chunk_bytes: usize,
    /// Requests per sendmsg: as many error replies as the receive buffer surely holds.
    chunk_requests: usize,
}

impl fmt::Debug for Conntrack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conntrack")
            .field("portid", &self.portid)
            .finish_non_exhaustive()
    }
}

impl Conntrack {
    /// A request socket in the current network namespace.
    pub fn open() -> Result<Conntrack, Error> {
        Self::with_socket(open_socket(None)?)
    }

    /// A request socket in the network namespace `netns`.
    pub fn open_in(netns: &Netns) -> Result<Conntrack, Error> {
        Self::with_socket(open_socket(Some(netns))?)
    }

    fn with_socket(sock: Socket) -> Result<Conntrack, Error> {
        let mut addr = SocketAddr::new(0, 0);
        sock.get_address(&mut addr)?;
        let fd = sock.as_fd();
        // Small error replies: do not echo each failed request back (NETLINK_CAP_ACK).
        sock.set_cap_ack(true)?;
        let rcv = size_buffer(fd, Buffer::Receive, RECV_BUFFER)?;
        let snd = size_buffer(fd, Buffer::Send, SEND_BUFFER)?;
        let mut ct = Conntrack {
            sock,
            portid: addr.port_number(),
            seq: 1,
            tx: None,
            chunk_bytes: CHUNK_BYTES,
            chunk_requests: usize::MAX,
        };
        ct.size_chunks(rcv, snd);
        sys::set_recv_timeout(ct.sock.as_fd(), REQUEST_TIMEOUT)?;
        Ok(ct)
    }

    /// Fit batches to the buffers the kernel granted (without CAP_NET_ADMIN they are
    /// capped by rmem_max/wmem_max): netlink_sendmsg refuses more than sk_sndbuf - 32
    /// bytes, and each error reply takes about 1 KiB of receive buffer.
    fn size_chunks(&mut self, rcv: usize, snd: usize) {
        self.chunk_bytes = CHUNK_BYTES.min(snd.saturating_sub(4096)).max(4096);
        self.chunk_requests = (rcv / 1024).max(16);
    }

    /// Set the next request sequence number (tests use it to cross the 32-bit wrap).
    #[doc(hidden)]
    pub fn set_sequence(&mut self, seq: u32) {
        self.seq = seq;
    }

    /// The netlink port id of this socket: the `pid` of events its writes cause.
    pub fn portid(&self) -> u32 {
        self.portid
    }

    fn next_seq(&mut self, n: u32) -> u32 {
        let s = self.seq;
        self.seq = self.seq.wrapping_add(n);
        s
    }

    /// An empty request buffer, lent by the thread; put in `self.tx` to be sent by
    /// [`Conntrack::send_tx`].
    fn take_tx(&mut self) -> Lent {
        let mut tx = self.tx.take().unwrap_or_else(Lent::tx);
        tx.clear();
        tx
    }

    fn send_tx(&mut self) -> Result<(), Error> {
        // Given back to the thread once sent (or failed).
        let tx = self.tx.take().unwrap_or_else(Lent::tx);
        let n = self.sock.send(&tx, 0)?;
        if n != tx.len() {
            return Err(Error::Io(io::Error::new(
                io::ErrorKind::WriteZero,
                "short netlink send",
            )));
        }
        Ok(())
    }

    /// Stream every conntrack entry of `family` (`None`: IPv4 and IPv6) to `each`.
    ///
    /// Memory stays bounded by one receive buffer whatever the table size. If the kernel
    /// flags the dump as interrupted, `each` gets [`DumpItem::Restart`] and the dump
    /// starts over (at most 8 times).
    pub fn dump(
        &mut self,
        family: Option<Family>,
        mut each: impl FnMut(DumpItem<'_>),
    ) -> Result<DumpSummary, Error> {
        let mut summary = DumpSummary::default();
        loop {
            let seq = self.send_dump_request(
                attr::NFNL_SUBSYS_CTNETLINK,
                attr::IPCTNL_MSG_CT_GET,
                family,
            )?;
            let (flows, interrupted) = self.read_dump(seq, |body| {
                if let Body::Conntrack {
                    msg: attr::IPCTNL_MSG_CT_NEW,
                    family,
                    attrs,
                    ..
                } = body
                {
                    let flow = decode::decode_flow(family, attrs)?;
                    each(DumpItem::Flow(&flow));
                    return Ok(true);
                }
                Ok(false)
            })?;
            summary.flows = flows;
            if !interrupted {
                return Ok(summary);
            }
            summary.restarts += 1;
            if summary.restarts > DUMP_RETRIES {
                return Err(Error::DumpInterrupted(summary.restarts));
            }
            each(DumpItem::Restart);
        }
    }

    /// Read the replies of the dump with sequence number `seq` until `NLMSG_DONE`.
    /// Returns (items accepted by `on_body`, interrupted). On an error the rest of the
    /// dump is read and dropped, so that the socket is usable again (a dump still running
    /// in the kernel makes the next one fail with EBUSY).
    fn read_dump(
        &mut self,
        seq: u32,
        mut on_body: impl FnMut(Body<'_>) -> Result<bool, Error>,
    ) -> Result<(u64, bool), Error> {
        let mut count = 0u64;
        let mut interrupted = false;
        let mut failed: Option<Error> = None;
        let mut rx = Lent::rx();
        loop {
            match recv_into(&self.sock, &mut rx, 0) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let e = recv_error(e);
                    if matches!(e, Error::Overrun) && failed.is_none() {
                        // Part of the dump is lost; read the rest away, then report.
                        failed = Some(e);
                        continue;
                    }
                    return Err(failed.unwrap_or(e));
                }
            }
            for m in decode::messages(&rx) {
                let Ok(m) = m else {
                    failed.get_or_insert(Error::Decode(DecodeError::BadHeader));
                    continue;
                };
                if m.seq != seq {
                    continue; // a stale reply to an earlier request
                }
                if m.flags & NLM_F_DUMP_INTR != 0 {
                    interrupted = true;
                }
                match m.body {
                    Body::Done { errno } => {
                        return match (failed, errno) {
                            (Some(e), _) => Err(e),
                            (None, 0) => Ok((count, interrupted)),
                            (None, errno) => Err(Error::Kernel(Errno(errno))),
                        };
                    }
                    Body::Error { errno: 0, .. } => {}
                    Body::Error { errno, .. } => {
                        return Err(failed.unwrap_or(Error::Kernel(Errno(errno))));
                    }
                    body if failed.is_none() => match on_body(body) {
                        Ok(true) => count += 1,
                        Ok(false) => {}
                        Err(e) => failed = Some(e),
                    },
                    _ => {}
                }
            }
        }
    }

    /// Send the requests in `self.tx` (sequence numbers `first..=last`) and collect the
    /// answers. The kernel processes a netlink batch inside `sendmsg`, so every answer is
    /// queued when `send` returns: they are read without blocking. Every error for the
    /// batch goes to `on_error` with the request's offset from `first`. Returns how many
    /// failed, or `Ok(None)` if the acknowledgement of `last` never came.
    fn exchange(
        &mut self,
        first: u32,
        last: u32,
        on_error: &mut dyn FnMut(usize, Errno),
    ) -> Result<Option<u64>, Error> {
        self.send_tx()?;
        let span = last.wrapping_sub(first) as usize;
        let mut failed = 0;
        let mut done = false;
        let mut overrun = false;
        let mut rx = Lent::rx();
        loop {
            match recv_into(&self.sock, &mut rx, libc::MSG_DONTWAIT) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    overrun = true;
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
            for m in decode::messages(&rx) {
                // Only error messages matter here; anything undecodable is skipped.
                let Ok(Body::Error { errno, request_seq }) = m.map(|m| m.body) else {
                    continue;
                };
                let offset = request_seq.wrapping_sub(first) as usize;
                if offset > span {
                    continue; // not this batch's
                }
                if errno != 0 {
                    failed += 1;
                    on_error(offset, Errno(errno));
                }
                if request_seq == last {
                    done = true;
                }
            }
        }
        if overrun {
            return Err(Error::Overrun);
        }
        Ok(done.then_some(failed))
    }

    /// Apply many writes with few `sendmsg` calls: each `(op, flow)` becomes one request;
    /// the kernel applies them in order. A refused request is reported to `on_error`
    /// with its index in `ops` and the kernel's errno; the rest are still applied.
    pub fn apply<'f, I>(
        &mut self,
        ops: I,
        mut on_error: impl FnMut(usize, Errno),
    ) -> Result<BatchReport, Error>
    where
        I: IntoIterator<Item = (FlowOp, &'f Flow)>,
    {
        let mut report = BatchReport::default();
        let mut ops = ops.into_iter().peekable();
        let mut index = 0usize;
        while ops.peek().is_some() {
            let mut tx = self.take_tx();
            let chunk_start = index;
            let first = self.seq;
            let mut last = first;
            let mut last_start = 0;
            while tx.len() < self.chunk_bytes && index - chunk_start < self.chunk_requests {
                let Some((op, flow)) = ops.next() else { break };
                last = self.next_seq(1);
                last_start = tx.len();
                encode::encode_flow(&mut tx, op, flow, last, 0);
                index += 1;
            }
            // Only the chunk's last request asks for an ACK: errors come back for every
            // request regardless, and the ACK tells us the kernel has finished the chunk.
            let flags_at = last_start + NLMSG_FLAGS_AT;
            let flags = u16::from_ne_bytes([tx[flags_at], tx[flags_at + 1]]) | NLM_F_ACK;
            tx[flags_at..flags_at + 2].copy_from_slice(&flags.to_ne_bytes());
            self.tx = Some(tx);
            let n = (index - chunk_start) as u64;
            let outcome = self.exchange(first, last, &mut |off, e| on_error(chunk_start + off, e));
            let failed = match outcome {
                Ok(Some(failed)) => failed,
                Ok(None) => return Err(Error::Unanswered(report)),
                Err(Error::Overrun) => return Err(Error::BatchOverrun(report)),
                Err(e) => return Err(e),
            };
            report.sent += n;
            report.failed += failed;
            report.applied += n - failed;
            report.sendmsgs += 1;
        }
        Ok(report)
    }

    /// Apply the same operation to every flow of a slice; see [`Conntrack::apply`].
    pub fn batch(
        &mut self,
        op: FlowOp,
        flows: &[Flow],
        on_error: impl FnMut(usize, Errno),
    ) -> Result<BatchReport, Error> {
        self.apply(flows.iter().map(|f| (op, f)), on_error)
    }

    fn single(&mut self, op: FlowOp, flow: &Flow) -> Result<(), Error> {
        let mut err = None;
        self.apply([(op, flow)], |_, e| err = Some(e))?;
        err.map_or(Ok(()), |e| Err(Error::Kernel(e)))
    }

    /// Create one entry; `Error::Kernel(EEXIST)` if it exists.
    pub fn create(&mut self, flow: &Flow) -> Result<(), Error> {
        self.single(FlowOp::Create, flow)
    }

    /// Update an existing entry (timeout, mark, status, labels, protocol state).
    pub fn update(&mut self, flow: &Flow) -> Result<(), Error> {
        self.single(FlowOp::Update, flow)
    }

    /// Delete one entry; `Error::Kernel(ENOENT)` if there is none.
    pub fn delete(&mut self, flow: &Flow) -> Result<(), Error> {
        self.single(FlowOp::Delete, flow)
    }

    /// Get one entry by key; `Ok(None)` if there is none.
    pub fn get(&mut self, key: &FlowKey) -> Result<Option<Flow>, Error> {
        let probe = Flow::from_key(key);
        let seq = self.next_seq(1);
        let mut tx = self.take_tx();
        encode::encode_flow(&mut tx, FlowOp::Get, &probe, seq, NLM_F_ACK);
        self.tx = Some(tx);
        self.send_tx()?;
        let mut found = None;
        let mut rx = Lent::rx();
        loop {
            match recv_into(&self.sock, &mut rx, 0) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(recv_error(e)),
            }
            for m in decode::messages(&rx) {
                let Ok(m) = m else { continue };
                if m.seq != seq {
                    continue;
                }
                match m.body {
                    Body::Conntrack { family, attrs, .. } => {
                        // Keep reading to the ACK even if this does not decode.
                        found = decode::decode_flow(family, attrs).ok();
                    }
                    Body::Error { errno: 0, .. } => return Ok(found),
                    Body::Error { errno, .. } if errno == libc::ENOENT => return Ok(None),
                    Body::Error { errno, .. } => return Err(Error::Kernel(Errno(errno))),
                    _ => {}
                }
            }
        }
    }

    fn simple_request(&mut self, seq: u32) -> Result<(), Error> {
        let mut err = None;
        let answered = self.exchange(seq, seq, &mut |_, e| err = Some(e))?;
        match (err, answered) {
            (Some(e), _) => Err(Error::Kernel(e)),
            (None, Some(_)) => Ok(()),
            (None, None) => Err(Error::Unanswered(BatchReport::default())),
        }
    }

    /// Delete every entry of `family` (`None`: all).
    pub fn flush(&mut self, family: Option<Family>) -> Result<(), Error> {
        let seq = self.next_seq(1);
        let mut tx = self.take_tx();
        encode::encode_flush(&mut tx, family, seq, NLM_F_ACK);
        self.tx = Some(tx);
        self.simple_request(seq)
    }

    /// Table size, limit and the per-CPU failure counters.
    pub fn stats(&mut self) -> Result<Stats, Error> {
        let mut stats = Stats::default();
        for (msg, flags) in [
            (attr::IPCTNL_MSG_CT_GET_STATS, NLM_F_ACK),
            (attr::IPCTNL_MSG_CT_GET_STATS_CPU, NLM_F_DUMP),
        ] {
            let seq = self.next_seq(1);
            let mut tx = self.take_tx();
            let start = encode::begin_message(
                &mut tx,
                attr::NFNL_SUBSYS_CTNETLINK,
                msg,
                flags,
                seq,
                libc::AF_UNSPEC as u8,
            );
            encode::end_message(&mut tx, start);
            self.tx = Some(tx);
            self.send_tx()?;
            if msg == attr::IPCTNL_MSG_CT_GET_STATS {
                self.read_reply(seq, |body| {
                    if let Body::Conntrack { msg, attrs, .. } = body {
                        decode::decode_stats(msg, attrs, &mut stats)?;
                    }
                    Ok(())
                })?;
            } else {
                self.read_dump(seq, |body| {
                    if let Body::Conntrack { msg, attrs, .. } = body {
                        decode::decode_stats(msg, attrs, &mut stats)?;
                        return Ok(true);
                    }
                    Ok(false)
                })?;
            }
        }
        Ok(stats)
    }

    /// Read replies to a non-dump request until its ACK or error.
    fn read_reply(
        &mut self,
        seq: u32,
        mut on_body: impl FnMut(Body<'_>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let mut rx = Lent::rx();
        loop {
            match recv_into(&self.sock, &mut rx, 0) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(recv_error(e)),
            }
            for m in decode::messages(&rx) {
                let m = m?;
                if m.seq != seq {
                    continue;
                }
                match m.body {
                    Body::Error { errno: 0, .. } | Body::Done { errno: 0 } => return Ok(()),
                    Body::Done { errno } => return Err(Error::Kernel(Errno(errno))),
                    Body::Error { errno, .. } => return Err(Error::Kernel(Errno(errno))),
                    body => on_body(body)?,
                }
            }
        }
    }

    /// Send a dump request (`NLM_F_DUMP`) of `msg` in subsystem `subsys` for `family`
    /// (`None`: all); its sequence number.
    fn send_dump_request(
        &mut self,
        subsys: u8,
        msg: u8,
        family: Option<Family>,
    ) -> Result<u32, Error> {
        let seq = self.next_seq(1);
        let mut tx = self.take_tx();
        let af = family.map_or(libc::AF_UNSPEC as u8, Family::af);
        let start = encode::begin_message(&mut tx, subsys, msg, NLM_F_DUMP, seq, af);
        encode::end_message(&mut tx, start);
        self.tx = Some(tx);
        self.send_tx()?;
        Ok(seq)
    }

    /// Stream every expectation of `family` (`None`: all) to `each`.
    pub fn dump_expectations(
        &mut self,
        family: Option<Family>,
        mut each: impl FnMut(&Expectation),
    ) -> Result<u64, Error> {
        let seq = self.send_dump_request(
            attr::NFNL_SUBSYS_CTNETLINK_EXP,
            attr::IPCTNL_MSG_EXP_GET,
            family,
        )?;
        let (n, _) = self.read_dump(seq, |body| {
            if let Body::Expectation { family, attrs, .. } = body {
                each(&decode::decode_expectation(family, attrs)?);
                return Ok(true);
            }
            Ok(false)
        })?;
        Ok(n)
    }

    /// Create an expectation; the master must exist and have a helper.
    pub fn create_expectation(&mut self, exp: &Expectation) -> Result<(), Error> {
        let seq = self.next_seq(1);
        let mut tx = self.take_tx();
        encode::encode_expectation(&mut tx, ExpOp::Create, exp, seq, NLM_F_ACK);
        self.tx = Some(tx);
        self.simple_request(seq)
    }

    /// Delete an expectation by its tuple.
    pub fn delete_expectation(&mut self, exp: &Expectation) -> Result<(), Error> {
        let seq = self.next_seq(1);
        let mut tx = self.take_tx();
        encode::encode_expectation(&mut tx, ExpOp::Delete, exp, seq, NLM_F_ACK);
        self.tx = Some(tx);
        self.simple_request(seq)
    }

    /// Delete every expectation.
    pub fn flush_expectations(&mut self) -> Result<(), Error> {
        let seq = self.next_seq(1);
        let mut tx = self.take_tx();
        let start = encode::begin_message(
            &mut tx,
            attr::NFNL_SUBSYS_CTNETLINK_EXP,
            attr::IPCTNL_MSG_EXP_DELETE,
            NLM_F_ACK,
            seq,
            libc::AF_UNSPEC as u8,
        );
        encode::end_message(&mut tx, start);
        self.tx = Some(tx);
        self.simple_request(seq)
    }
}
