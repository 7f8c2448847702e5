//! ctsync: conntrack replication for high-availability Linux firewalls.
//!
//! This crate is the `ctsync` program; its modules are public so that tests and
//! benchmarks can drive them.

pub mod config;
pub mod control;
pub mod daemon;
pub mod keepalived;
pub mod metrics;
