//! `ctsync demo`: the failover lab of [`crate::cluster`], shown to a person. Sessions run
//! through a cluster of two firewalls (or more: `--nodes`), the primary fails hard (with
//! three, then the next primary too), and the demo tells what happened to them: with
//! ctsync, then without it (the control).
//!
//! `ctsync demo --routers N` shows [`crate::routers`] instead, a Neutron network node's
//! shape: sessions through N routers, one router failing over alone, then a whole host
//! ([`run_routers`]).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::cluster::{Lab, Options};
use crate::process::{self, pause};
use crate::routers::{Options as RoutersOptions, RouterSessions};
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

/// What the sessions of some routers looked like at one moment.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Their sessions, both ways.
    pub report: traffic::Report,
    /// TCP connections their servers saw reset.
    pub resets: u64,
    /// Outbound UDP flows whose source port changed at their servers.
    pub udp_changed: usize,
}

impl Seen {
    fn of<'a>(sessions: impl IntoIterator<Item = &'a RouterSessions>, since: Instant) -> Seen {
        let mut seen = Seen {
            report: traffic::Report::combined([]),
            resets: 0,
            udp_changed: 0,
        };
        for s in sessions {
            seen.report = traffic::Report::combined([seen.report, s.report(since, PATIENCE)]);
            seen.resets += s.resets();
            seen.udp_changed += s.udp_changed();
        }
        seen
    }

    /// Every session alive, none reset, no source port changed.
    pub fn all_kept(&self) -> bool {
        let r = &self.report;
        r.tcp_alive == r.tcp
            && r.udp_alive == r.udp
            && r.tcp_failed == 0
            && self.resets == 0
            && self.udp_changed == 0
    }

    fn show(&self, what: &str) {
        let r = &self.report;
        println!(
            "  {what}: TCP {}/{} alive ({} reset), UDP {}/{} echoing ({} changed source port); longest stall so far {:.2} s",
            r.tcp_alive,
            r.tcp,
            self.resets,
            r.udp_alive,
            r.udp,
            self.udp_changed,
            r.max_stall.as_secs_f64()
        );
    }
}

/// What one run of `ctsync demo --routers N` saw.
#[derive(Debug, Clone)]
pub struct RoutersOutcome {
    /// From router 1's failure on host A to host B holding its virtual addresses.
    pub alone_takeover: Duration,
    /// Router 1's sessions some seconds after its failure.
    pub alone: Seen,
    /// How many of the other routers were still master on host A then.
    pub others_on_a: usize,
    /// The other routers' sessions then.
    pub others: Seen,
    /// From host A's failure to host B holding every router's virtual addresses.
    pub host_takeover: Duration,
    /// Every router's sessions some seconds after host A's failure.
    pub all: Seen,
}

/// A session that waited longer than this for an echo counts as lost.
const PATIENCE: Duration = Duration::from_secs(3);

/// `ctsync demo --routers N`: a Neutron network node's shape ([`crate::routers`]), `tcp`
/// connections and `udp` flows each way through every router; router 1 fails on host A
/// alone, then host A whole; `control` adds the run without ctsync.
pub fn run_routers(
    ctsync: PathBuf,
    routers: usize,
    tcp: usize,
    udp: usize,
    control: bool,
) -> Result<bool> {
    process::catch_interrupts();
    println!(
        "ctsync demo --routers {routers}: a Neutron network node's shape in network namespaces, {routers} virtual routers\nwith a replica on host A and one on host B, one ctsync per host; one router fails over, then host A.\n"
    );
    println!(
        "  router i: client 198.18.1.100 -- [a-qrouter-i | b-qrouter-i] -- server 198.19.0.100 (every router the same addresses)"
    );
    println!(
        "  each replica: nftables (forward policy drop, SNAT to 198.19.0.1 with random ports, floating IP 198.19.0.1:8000/8001"
    );
    println!(
        "  DNAT'd to the client), keepalived on the router's own HA link, notify hooks writing ha_confs/i/state as Neutron does"
    );
    println!(
        "  hostA 198.18.250.1 -- sync0 -- hostB 198.18.250.2: one ctsync per host, [namespaces] match = \"…-a-qrouter-*\"\n"
    );
    println!("== with ctsync (hot standby)");
    let with = routers_once(RoutersOptions::new("demo", Some(ctsync), routers), tcp, udp)?;
    let without = if control {
        println!("\n== the same without ctsync (control)");
        let o = routers_once(RoutersOptions::new("demo", None, routers), tcp, udp)?;
        Some(o)
    } else {
        None
    };
    let kept = with.alone.all_kept()
        && with.others.all_kept()
        && with.others_on_a + 1 == routers
        && with.all.all_kept();
    println!();
    if kept {
        let others = match routers - 1 {
            0 => String::new(),
            1 => ", the other router did not notice".to_string(),
            n => format!(", the other {n} routers did not notice"),
        };
        println!(
            "With ctsync every session of router 1 survived its failover{others}, and every session\nsurvived host A's failure ({} TCP, {} UDP).",
            with.all.report.tcp, with.all.report.udp
        );
    } else {
        println!("Some sessions were lost even with ctsync: see above.");
    }
    if let Some(o) = without {
        let lost = |s: &Seen| {
            format!(
                "{} of {} TCP connections and {} of {} UDP flows (changed port or died)",
                s.report.tcp - s.report.tcp_alive,
                s.report.tcp,
                s.udp_changed.max(s.report.udp - s.report.udp_alive),
                s.report.udp
            )
        };
        println!(
            "Without it, router 1 lost {}; host A's failure lost\n{}.",
            lost(&o.alone),
            lost(&o.all)
        );
    }
    Ok(kept)
}

/// One run of `ctsync demo --routers N`, telling its steps.
pub fn routers_once(opts: RoutersOptions, tcp: usize, udp: usize) -> Result<RoutersOutcome> {
    let n = opts.routers;
    step(&format!(
        "building {n} routers (4 namespaces each), two hosts and a switch"
    ));
    let mut lab = crate::routers::Lab::build(opts)?;
    let with = lab.replicates();
    step("host A up and master of every router, then host B");
    lab.bring_up()?;
    step(&format!(
        "opening TCP connections ({tcp}) and UDP flows ({udp}) each way through every router"
    ));
    let sessions = crate::routers::open_all(&lab, tcp, udp)?;
    pause(Duration::from_secs(2))?;
    let before = Seen::of(&sessions, Instant::now() - Duration::from_secs(1));
    if before.report.tcp_alive != before.report.tcp || before.report.udp_alive != before.report.udp
    {
        bail!(
            "sessions did not work before the failure: {:?}\n{}",
            before.report,
            lab.logs()
        );
    }
    if with {
        for (r, s) in sessions.iter().enumerate() {
            lab.wait_replicated(1, r, s.len())?;
        }
        lab.wait_ready(1)?;
        step("host B's kernels hold a copy of every router's sessions; ctsync B is ready");
    }
    step("router 1 fails on host A: its keepalived killed (SIGKILL), its links down");
    let t1 = Instant::now();
    lab.fail_router(0, 0)?;
    let alone_takeover = lab.wait_master(1, 0, Duration::from_secs(10))?;
    pause((t1 + SETTLE).saturating_duration_since(Instant::now()))?;
    let alone = Seen::of(&sessions[..1], t1);
    let others_on_a = (1..n).filter(|&r| lab.is_master(0, r)).count();
    let others = Seen::of(&sessions[1..], t1);
    println!(
        "  host B master of router 1 {:.2} s after its failure",
        alone_takeover.as_secs_f64()
    );
    alone.show("router 1");
    if n > 1 {
        let rest = if n == 2 {
            "router 2".to_string()
        } else {
            format!("routers 2-{n}")
        };
        println!(
            "  {rest}: {others_on_a} of {} still master on host A",
            n - 1
        );
        others.show(&rest);
    }
    step("host A fails: its ctsync and keepalived killed (SIGKILL), every link down");
    let t2 = Instant::now();
    lab.fail_host(0)?;
    let host_takeover = lab.wait_all_master(1, Duration::from_secs(15))?;
    pause((t2 + SETTLE).saturating_duration_since(Instant::now()))?;
    let all = Seen::of(&sessions, t2);
    println!(
        "  host B master of every router {:.2} s after host A failed",
        host_takeover.as_secs_f64()
    );
    all.show("every router");
    step("removing the lab");
    drop(sessions);
    drop(lab);
    Ok(RoutersOutcome {
        alone_takeover,
        alone,
        others_on_a,
        others,
        host_takeover,
        all,
    })
}

/// Traffic runs this long after a failure before the sessions are judged: long enough
/// for TCP's retransmissions to find out (a dropped segment is sent again after 0.2,
/// 0.6, 1.4, 3 s ...).
const SETTLE: Duration = Duration::from_secs(6);
