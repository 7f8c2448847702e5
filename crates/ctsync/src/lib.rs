//! ctsync: conntrack replication for high-availability Linux firewalls.
//!
//! This crate is the `ctsync` program. As a library it offers what a program that embeds
//! or drives the daemon needs:
//!
//! * [`config`]: the configuration file, parsed and checked, with errors that name the
//!   file and line;
//! * [`run`]: the daemon, on a configuration, until SIGTERM;
//! * [`control`]: the client of a running daemon's control socket (and the requests it
//!   understands);
//! * [`import`]: a ctsync configuration from a conntrackd.conf (`ctsync import`);
//! * [`keepalived`]: the `[keepalived]` section and the parser of keepalived's notify
//!   FIFO lines;
//! * [`ftfw`]: conntrackd's FTFW dialect (codec and sans-IO session), spoken to a
//!   `[conntrackd]` peer in a mixed cluster.
//!
//! Everything else (the event loop, metrics) is private. The lab (`ctsync demo`, the load
//! tool, the session benchmark, the end-to-end tests' topologies) is the `ctsync-lab`
//! crate.

pub mod config;
pub mod control;
mod daemon;
pub mod ftfw;
pub mod import;
pub mod keepalived;
mod metrics;

pub use daemon::run;
