//! The Linux conntrack table over netlink (ctnetlink).
//!
//! * [`Flow`] is the one model of a connection-tracking entry used everywhere in ctsync:
//!   tuples (IPv4/IPv6; TCP, UDP, UDP-Lite, SCTP, DCCP, GRE, ICMP, ICMPv6, any protocol),
//!   zones, status, timeout, mark, labels, protocol state, NAT (as the tuples show it),
//!   sequence adjustment, helper, master, id and the read-only counters. [`Expectation`]
//!   models a helper's expected connection.
//! * [`decode`] and [`encode`] are a pure codec: decoding borrows the received bytes and
//!   fills a fixed-size `Flow`; encoding appends to a caller's reusable buffer. Attributes
//!   we do not know are kept ([`Flow::other`]), never dropped and never a panic.
//! * [`Conntrack`] and [`EventSocket`] are the socket layer: streaming dumps, get, batched
//!   create/update/delete with a result per entry, flush, stats, and events that carry the
//!   port id of the socket that caused them, in any named network namespace ([`Netns`]).
//!
//! Every number of the protocol is in [`attr`], cited from the kernel UAPI headers.
//! Every raw system call (and so every `unsafe`) is in one private module, `sys`.

#![deny(unsafe_code)]

pub mod attr;
pub mod decode;
pub mod encode;
pub mod flow;
pub mod netns;

mod error;
mod events;
mod request;
mod socket;
#[allow(unsafe_code)]
mod sys;

pub use decode::{DecodeError, Stats};
pub use encode::FlowOp;
pub use error::{BatchReport, Errno, Error};
pub use events::{Event, EventKind, EventSocket, EventStats, Groups, set_event_groups};
pub use flow::{
    Counters, DccpInfo, ExpectNat, Expectation, Family, Flow, FlowKey, L4, Labels, Name, Nest,
    OtherAttr, ProtoInfo, SctpInfo, SeqAdj, Status, Synproxy, TcpFlags, TcpInfo, Timestamp, Tuple,
    ipproto, tcp_flags, tcp_state,
};
pub use netns::Netns;
pub use request::{Conntrack, DumpItem, DumpSummary};
pub use socket::{Buffer, size_buffer};
