//! `ctsync demo`: the failover lab of [`crate::cluster`], shown to a person. Sessions run
//! through a cluster of two firewalls (or more: `--nodes`), the primary fails hard (with
//! three, then the next primary too), and the demo tells what happened to them: with
//! ctsync, then without it (the control).

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
    /// With more than two firewalls: each further primary failing in turn, the next one
    /// taking over (the sessions counted from that failure).
    pub later: Vec<Later>,
}

/// One further failure of a demo with more than two firewalls.
#[derive(Debug, Clone)]
pub struct Later {
    /// The firewall that failed (0 is fw1).
    pub failed: usize,
    /// From its failure to the next one holding both virtual addresses.
    pub takeover: Duration,
    /// The sessions some seconds after that failure.
    pub report: traffic::Report,
}

/// Run the demo: `nodes` firewalls (2 or 3), `tcp` connections and `udp` flows;
/// `control` adds the run without ctsync.
pub fn run(ctsync: PathBuf, nodes: usize, tcp: usize, udp: usize, control: bool) -> Result<bool> {
    process::catch_interrupts();
    if !(2..=3).contains(&nodes) {
        bail!("the demo runs 2 or 3 firewalls, not {nodes}");
    }
    let names: Vec<String> = (1..=nodes).map(|i| format!("fw{i}")).collect();
    println!(
        "ctsync demo: a firewall cluster in network namespaces, and its primary failing hard{}.\n",
        if nodes > 2 {
            ", then the next one too"
        } else {
            ""
        }
    );
    println!(
        "  client 198.18.1.100 -- [{}] -- server 198.19.0.100",
        names.join(" | ")
    );
    println!(
        "  virtual addresses 198.18.1.1 (gateway) and 198.19.0.1 (SNAT, random ports) by keepalived VRRP;"
    );
    println!(
        "  nftables: forward policy drop, new connections only LAN to WAN, nf_conntrack_tcp_loose=0.\n"
    );
    let opts = |bin: Option<PathBuf>| {
        let mut o = Options::new("demo", bin);
        o.firewalls = nodes;
        o
    };
    println!("== with ctsync (hot standby)");
    let with = once(opts(Some(ctsync)), tcp, udp, true)?;
    show(&with);
    let without = if control {
        println!("\n== the same without ctsync (control)");
        let o = once(opts(None), tcp, udp, true)?;
        show(&o);
        Some(o)
    } else {
        None
    };
    let all = |r: &traffic::Report| r.tcp_alive == r.tcp && r.udp_alive == r.udp;
    let r = &with.report;
    let kept = all(r) && with.later.iter().all(|l| all(&l.report)) && with.udp_changed == 0;
    println!();
    if kept {
        println!(
            "Every session survived the failure of {} with ctsync ({} TCP, {} UDP).",
            if with.later.is_empty() {
                "the primary"
            } else {
                "each primary in turn"
            },
            r.tcp,
            r.udp
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
    for l in &o.later {
        println!(
            "  then fw{} failed: fw{} master {:.2} s after; TCP {}/{} alive, UDP {}/{} echoing",
            l.failed + 1,
            l.failed + 2,
            l.takeover.as_secs_f64(),
            l.report.tcp_alive,
            l.report.tcp,
            l.report.udp_alive,
            l.report.udp
        );
    }
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
    let n = lab.fw.len();
    step(&if n > 2 {
        format!("fw1 to fw{n} up, fw1 master")
    } else {
        "fw1 and fw2 up, fw1 master".to_string()
    });
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
    let mut later = Vec::new();
    for failed in 1..n - 1 {
        let next = failed + 1;
        if with {
            lab.wait_replicated(next, tcp + udp)?;
            lab.wait_ready(next)?;
            step(&format!(
                "fw{} holds a copy of all {} sessions and is ready",
                next + 1,
                tcp + udp
            ));
        }
        step(&format!("fw{} fails hard too", failed + 1));
        let t = Instant::now();
        lab.fail_hard(failed)?;
        let takeover = lab.wait_master(next, Duration::from_secs(10))?;
        pause(Duration::from_secs(6))?;
        later.push(Later {
            failed,
            takeover,
            report: sessions.report(t, Duration::from_secs(3)),
        });
    }
    let out = Outcome {
        takeover,
        report,
        resets: server
            .stats
            .resets
            .load(std::sync::atomic::Ordering::SeqCst),
        udp_changed: server.stats.udp_changed(),
        later,
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
