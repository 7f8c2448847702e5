//! `ctsync demo`: the failover lab of [`crate::cluster`], shown to a person. Sessions run
//! through a two-firewall cluster, the primary fails hard, and the demo tells what
//! happened to them: with ctsync, then without it (the control).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::cluster::{Lab, Options};
use crate::process::{self, pause};
use crate::traffic::{self, EchoServer, Sessions};

/// What one run saw.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// From the hard failure to the backup holding both virtual addresses.
    pub takeover: Duration,
    /// The sessions some seconds after the failure.
    pub report: traffic::Report,
    /// TCP connections the server saw reset.
    pub resets: u64,
    /// UDP flows whose source port changed at the server.
    pub udp_changed: usize,
}

/// Run the demo: `tcp` connections and `udp` flows; `control` adds the run without ctsync.
pub fn run(ctsync: PathBuf, tcp: usize, udp: usize, control: bool) -> Result<bool> {
    process::catch_interrupts();
    println!(
        "ctsync demo: a firewall cluster in network namespaces, and its primary failing hard.\n"
    );
    println!("  client 198.18.1.100 -- [fw1 | fw2] -- server 198.19.0.100");
    println!(
        "  virtual addresses 198.18.1.1 (gateway) and 198.19.0.1 (SNAT, random ports) by keepalived VRRP;"
    );
    println!(
        "  nftables: forward policy drop, new connections only LAN to WAN, nf_conntrack_tcp_loose=0.\n"
    );
    println!("== with ctsync (hot standby)");
    let with = once(Options::new("demo", Some(ctsync)), tcp, udp, true)?;
    show(&with);
    let without = if control {
        println!("\n== the same without ctsync (control)");
        let o = once(Options::new("demo", None), tcp, udp, true)?;
        show(&o);
        Some(o)
    } else {
        None
    };
    let r = &with.report;
    let kept = r.tcp_alive == r.tcp && r.udp_alive == r.udp && with.udp_changed == 0;
    println!();
    if kept {
        println!(
            "Every session survived the failure of the primary with ctsync ({} TCP, {} UDP).",
            r.tcp, r.udp
        );
    } else {
        println!("Some sessions were lost even with ctsync: see above.");
    }
    if let Some(o) = without {
        println!(
            "Without it, {} of {} TCP connections and {} of {} UDP flows were lost.",
            o.report.tcp - o.report.tcp_alive,
            o.report.tcp,
            o.udp_changed.max(o.report.udp - o.report.udp_alive),
            o.report.udp
        );
    }
    Ok(kept)
}

fn show(o: &Outcome) {
    let r = &o.report;
    println!(
        "  takeover: fw2 master {:.2} s after fw1 failed",
        o.takeover.as_secs_f64()
    );
    println!(
        "  TCP: {}/{} connections alive, {} reset at the server, {} failed at the client",
        r.tcp_alive, r.tcp, o.resets, r.tcp_failed
    );
    println!(
        "  UDP: {}/{} flows echoing, {} changed source port at the server",
        r.udp_alive, r.udp, o.udp_changed
    );
    println!(
        "  longest stall of any session: {:.2} s",
        r.max_stall.as_secs_f64()
    );
}

/// One run: build the lab, bring it up, open sessions, fail fw1 hard, look. `tell`
/// prints the steps.
pub fn once(opts: Options, tcp: usize, udp: usize, tell: bool) -> Result<Outcome> {
    once_with(opts, tcp, udp, 0, tell)
}

/// [`once`], with `background` more entries in fw1's table (a busy firewall's): they are
/// replicated like the sessions, so a takeover has that many to write.
pub fn once_with(
    opts: Options,
    tcp: usize,
    udp: usize,
    background: u64,
    tell: bool,
) -> Result<Outcome> {
    let step = |s: &str| {
        if tell {
            step(s);
        }
    };
    let mut lab = Lab::build(opts)?;
    let with = lab.replicates();
    let server = EchoServer::start(&lab.server)?;
    step("fw1 and fw2 up, fw1 master");
    lab.bring_up()?;
    step(&format!(
        "opening {tcp} TCP connections and {udp} UDP flows"
    ));
    let sessions = Sessions::open(&lab.client, tcp, udp)?;
    pause(Duration::from_secs(2))?;
    let r = sessions.report(
        Instant::now() - Duration::from_secs(1),
        Duration::from_secs(1),
    );
    if r.tcp_alive != tcp || r.udp_alive != udp {
        bail!(
            "sessions did not work before the failure: {r:?} {:?} udp sent/echoed {:?}\n{}",
            sessions.errors(),
            sessions
                .udp
                .iter()
                .map(|s| (
                    s.sent.load(std::sync::atomic::Ordering::Relaxed),
                    s.echoed.load(std::sync::atomic::Ordering::Relaxed)
                ))
                .collect::<Vec<_>>(),
            lab.logs()
        );
    }
    if background > 0 {
        let mut ct = crate::load::open(Some(&lab.fw[0]))?;
        let r = crate::load::bulk(
            &mut ct,
            ctnetlink::FlowOp::Create,
            crate::synth::Mix::Realistic,
            0,
            background,
            3600,
        )?;
        if r.applied < background {
            bail!(
                "only {} of {background} background entries were created",
                r.applied
            );
        }
    }
    if with && background > 0 {
        // The whole table, not only the sessions, before the failure.
        // What fw1 replicates: its sync daemon's own table (a few synthetic entries
        // use the sync link's addresses, which are never replicated).
        let mut want = 0;
        let done = process::wait(Duration::from_secs(60), || {
            want = lab.own_count(0).unwrap_or(usize::MAX);
            want >= tcp + udp && lab.replicated_count(1).is_some_and(|n| n >= want)
        })?;
        if done.is_none() {
            bail!(
                "fw2 holds {:?} of {want} entries after 60 s:\n{}",
                lab.replicated_count(1),
                lab.logs()
            );
        }
    }
    if with {
        lab.wait_replicated(1, tcp + udp)?;
        lab.wait_ready(1)?;
        step(&format!(
            "fw2 holds a copy of all {} sessions and is ready",
            tcp + udp
        ));
    }
    step("fw1 fails hard: links down, keepalived and the sync daemon killed (SIGKILL)");
    let t0 = Instant::now();
    lab.fail_hard(0)?;
    let takeover = lab.wait_master(1, Duration::from_secs(10))?;
    // Long enough for TCP's retransmissions to find out (a dropped segment is sent again
    // after 0.2, 0.6, 1.4, 3 s ...).
    pause(Duration::from_secs(6))?;
    let report = sessions.report(t0, Duration::from_secs(3));
    let out = Outcome {
        takeover,
        report,
        resets: server
            .stats
            .resets
            .load(std::sync::atomic::Ordering::SeqCst),
        udp_changed: server.stats.udp_changed(),
    };
    drop(sessions);
    drop(server);
    step("removing the lab");
    drop(lab);
    Ok(out)
}

fn step(s: &str) {
    println!("  .. {s}");
}
