//! ctsync's lab: throwaway firewall clusters in network namespaces, and the tools that
//! drive them. Not published; the `ctsync` binary (`ctsync demo`, `ctsync load …`, the
//! hidden `ctsync bench-sessions`) and the end-to-end tests use it.
//!
//! * [`cluster`]: the demo's topology, a client, two firewalls (nftables, SNAT,
//!   keepalived) and a server; [`traffic`]: sessions through it; [`demo`]: `ctsync demo`;
//!   [`bench`](mod@bench): one run of the side-by-side session benchmark (`bench/sessions.sh`);
//!   [`conntrackd`]: the incumbent's configuration for that benchmark; [`firewall`]: one
//!   firewall of it (segments, rules, keepalived), shared with [`routers`].
//! * [`routers`]: a Neutron network node's shape, two hosts with many router namespaces
//!   (a firewall pair each, every one with the same addresses) and one ctsync per host;
//!   `ctsync demo --routers N` and the Neutron end-to-end test.
//! * [`pair`]: two bare nodes joined by a sync link, for the daemon's end-to-end tests;
//!   [`trio`]: three on a private bridge, for the multicast group's; [`hosts`]: two hosts
//!   full of router namespaces, for the `[namespaces]` daemon's.
//! * [`load`] and [`synth`]: `ctsync load`, synthetic conntrack entries in bulk.
//!
//! # The `ctsync` package is not a dependency
//!
//! `ctsync` depends on this crate (its binary's subcommands call into it), so this crate
//! cannot depend on `ctsync`: Cargo forbids the cycle. It does not need to. The lab drives
//! ctsync from the outside, as an operator does, through the three interfaces ctsync
//! documents ([`ctsync`]):
//!
//! * the binary, whose path the caller passes in (`std::env::current_exe()` from
//!   `ctsync`, `env!("CARGO_BIN_EXE_ctsync")` from tests): `ctsync run`, and
//!   `ctsync keygen` for the cluster key, so that the key format stays the binary's;
//! * the configuration file, written as text (with the lab's own small [`ctsync::Mode`]
//!   for the one setting it varies);
//! * the control socket, read by a client of a dozen lines here rather than by spawning
//!   `ctsync status` every 10 ms while the lab waits for a state.
//!
//! That also keeps the lab honest: what it sees is what a person sees.

pub mod bench;
pub mod cluster;
pub mod conntrackd;
pub mod ctsync;
pub mod demo;
pub mod firewall;
pub mod hosts;
pub mod load;
pub mod pair;
pub mod process;
pub mod routers;
mod scratch;
pub mod synth;
pub mod traffic;
pub mod trio;
