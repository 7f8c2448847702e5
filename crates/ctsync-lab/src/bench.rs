//! One failover run of the side-by-side session benchmark (`bench/sessions.sh`, through
//! the hidden `ctsync bench-sessions`): the demo's run with ctsync, conntrackd or
//! nothing, as one line of JSON.

use std::path::PathBuf;

use anyhow::Result;

use crate::cluster::{Options, Speaker};
use crate::ctsync::Mode;
use crate::demo;
use crate::process;

/// Which sync daemon a benchmark run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchDaemon {
    /// ctsync, hot standby.
    Ctsync,
    /// ctsync, commit on takeover.
    CtsyncCommit,
    /// conntrackd (FTFW), with its primary-backup.sh.
    Conntrackd,
    /// A mixed cluster: conntrackd on fw1 (the primary that fails), ctsync speaking
    /// conntrackd's dialect on fw2.
    ConntrackdToCtsync,
    /// A mixed cluster: ctsync speaking conntrackd's dialect on fw1, conntrackd (its
    /// primary-backup.sh) on fw2.
    CtsyncToConntrackd,
    /// Nothing (the control).
    None,
}

/// One failover run for `bench/sessions.sh`: the lab with `daemon`, VRRP adverts every
/// `advert_ms`; prints one JSON line with what the sessions saw.
pub fn bench(
    ctsync: PathBuf,
    daemon: BenchDaemon,
    advert_ms: u32,
    tcp: usize,
    udp: usize,
    background: u64,
) -> Result<bool> {
    process::catch_interrupts();
    let dialect = Speaker::Ctsync { dialect: true };
    let mixed = match daemon {
        BenchDaemon::ConntrackdToCtsync => Some(vec![Speaker::Conntrackd, dialect]),
        BenchDaemon::CtsyncToConntrackd => Some(vec![dialect, Speaker::Conntrackd]),
        _ => None,
    };
    let mut opts = Options::new(
        "bench",
        (matches!(daemon, BenchDaemon::Ctsync | BenchDaemon::CtsyncCommit) || mixed.is_some())
            .then_some(ctsync),
    );
    opts.mixed = mixed;
    opts.advert_ms = advert_ms;
    opts.conntrackd = daemon == BenchDaemon::Conntrackd;
    if daemon == BenchDaemon::CtsyncCommit {
        opts.mode = Mode::Commit;
    }
    let o = demo::once_with(opts, tcp, udp, background, false)?;
    let r = &o.report;
    println!(
        "{}",
        serde_json::json!({
            "daemon": format!("{daemon:?}"),
            "advert_ms": advert_ms,
            "background": background,
            "tcp": r.tcp,
            "tcp_alive": r.tcp_alive,
            "tcp_resets": o.resets,
            "udp": r.udp,
            "udp_alive": r.udp_alive,
            "udp_changed": o.udp_changed,
            "takeover_s": o.takeover.as_secs_f64(),
            "longest_stall_s": r.max_stall.as_secs_f64(),
        })
    );
    Ok(true)
}
