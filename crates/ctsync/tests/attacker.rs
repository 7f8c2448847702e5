//! An attacker on the sync segment (a third namespace on the sync bridge, 198.18.255.66),
//! while sessions flow through the lab of `ctsync demo` and replication runs. It sends
//! garbage, datagrams under a wrong key (as a stranger and as fw1), genuine datagrams it
//! captured (replayed at once, later, and after the backup's ctsync restarted), the same
//! with single bits flipped, and a flood. Nothing it sends may plant a flow in any cache
//! or kernel table; each class is counted under its drop reason; the backup's memory
//! stays bounded under the flood; and the sessions still survive a failover afterwards.
//!
//! The control: the planted flows are well-formed, so the same messages sent under the
//! right key must be accepted (checked in ctsync-core's tests/hostile.rs); here, without
//! the key, they must all be refused.

#![allow(clippy::panic, clippy::unwrap_used)] // test code: a panic is a failed assertion

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use ctnetlink::{EventKind, Flow, Netns, Tuple, ipproto};
use ctsync_core::{Node, Role};
use ctsync_wire::{Cipher, ClusterSecret};
use support::{Running, root, serial};

const FW1: Ipv4Addr = Ipv4Addr::new(198, 18, 255, 1);
const FW2: Ipv4Addr = Ipv4Addr::new(198, 18, 255, 2);
/// Flows the attacker tries to plant go to this address.
const PLANTED: Ipv4Addr = Ipv4Addr::new(198, 19, 66, 66);

fn target(ip: Ipv4Addr) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ip), 3780)
}

fn planted_flow(i: u16) -> Flow {
    let orig = Tuple::ports(
        ipproto::TCP,
        IpAddr::V4(Ipv4Addr::new(198, 18, 1, 100)),
        20_000 + i,
        IpAddr::V4(PLANTED),
        22,
    );
    let mut f = Flow::new(orig, orig.inverse());
    f.timeout = Some(3600);
    f
}

/// Datagrams a node with the wrong key would send: HELLOs and flows it tries to plant.
fn forged(me: u32, peer: u32) -> Vec<Vec<u8>> {
    let wrong = ClusterSecret::new(&[0x5a; 32], Cipher::ChaCha20Poly1305).unwrap();
    let now = Instant::now();
    // An epoch above any real one (wall-clock seconds << 24), so that the victim cannot
    // dismiss it as stale and must try the key: counted as `authentication`.
    let mut n = Node::new(
        ctsync_core::Config::new(me, vec![peer]),
        wrong,
        1 << 62,
        7,
        now,
    )
    .unwrap();
    n.set_role(now, Role::Primary);
    for i in 0..50 {
        n.handle_kernel_event(now, EventKind::New, &planted_flow(i), false);
    }
    let mut out = Vec::new();
    let mut buf = Vec::new();
    for step in 0..20u64 {
        let t = now + Duration::from_millis(100 * step);
        n.handle_timeout(t);
        while let Some(_to) = n.poll_transmit(t, &mut buf) {
            out.push(buf.clone());
        }
    }
    out
}

/// Capture the UDP payloads sent to port 3780 on the sync bridge for `d`.
fn capture(ns: &str, d: Duration) -> Vec<(Ipv4Addr, Vec<u8>)> {
    let netns = Netns::named(ns).unwrap();
    let fd = netns
        .run(|| {
            // SAFETY: plain socket creation; checked below.
            let fd = unsafe {
                libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_DGRAM,
                    i32::from((libc::ETH_P_IP as u16).to_be()),
                )
            };
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(fd)
        })
        .unwrap();
    // SAFETY: fd is a socket we own; a 100 ms receive timeout bounds each read.
    unsafe {
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const tv).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        );
    }
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    let end = Instant::now() + d;
    while Instant::now() < end && got.len() < 5000 {
        // SAFETY: reading into a buffer we own, of its length.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        let Ok(n) = usize::try_from(n) else { continue };
        let p = &buf[..n];
        if n < 28 || p[0] >> 4 != 4 || p[9] != 17 {
            continue;
        }
        let ihl = usize::from(p[0] & 0xf) * 4;
        let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
        let Some(udp) = p.get(ihl..) else { continue };
        if udp.len() < 8 || u16::from_be_bytes([udp[2], udp[3]]) != 3780 {
            continue;
        }
        got.push((dst, udp[8..].to_vec()));
    }
    // SAFETY: closing the socket we opened.
    unsafe { libc::close(fd) };
    got
}

fn drops(r: &Running, i: usize) -> serde_json::Value {
    r.lab.status(i).unwrap()["dropped"].clone()
}

fn count(d: &serde_json::Value, reason: &str) -> u64 {
    d[reason].as_u64().unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// No planted flow anywhere: neither kernel, neither cache.
fn assert_nothing_planted(r: &Running, when: &str) {
    for i in 0..2 {
        let ns = Netns::named(&r.lab.fw[i]).unwrap();
        let mut ct = ctnetlink::Conntrack::open_in(&ns).unwrap();
        let mut planted = 0;
        ct.dump(None, |item| {
            if let ctnetlink::DumpItem::Flow(f) = item
                && f.orig.dst == IpAddr::V4(PLANTED)
            {
                planted += 1;
            }
        })
        .unwrap();
        assert_eq!(planted, 0, "{when}: a planted flow in fw{}'s kernel", i + 1);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ctsync"))
            .args(["dump", "external", "--socket"])
            .arg(r.lab.socket(i))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            !text.contains(&PLANTED.to_string()),
            "{when}: a planted flow in fw{}'s external cache",
            i + 1
        );
    }
}

#[test]
fn an_attacker_on_the_sync_link_plants_nothing_and_sessions_survive() {
    if !root() {
        return;
    }
    let _one = serial();
    let mut r = Running::up("attack", true, 10, 5);
    let sx = r.lab.sync_ns.clone();
    let sock = Netns::named(&sx)
        .unwrap()
        .run(|| UdpSocket::bind("198.18.255.66:0"))
        .unwrap();
    let send = |to: Ipv4Addr, d: &[u8]| {
        let _ = sock.send_to(d, target(to));
    };
    let before = drops(&r, 1);

    // (c) capture genuine traffic first, while replication runs.
    let captured = capture(&sx, Duration::from_secs(3));
    assert!(
        captured.len() >= 5,
        "the attacker sees the sync traffic: {} datagrams",
        captured.len()
    );

    // (a) garbage: random lengths and bytes, and headers that are almost right.
    let mut rng = 0x1234_5678_9abc_def0u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for _ in 0..2000 {
        let len = (next() % 1500) as usize;
        let mut d: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if len > 2 && next() % 2 == 0 {
            d[0] = 0xC7;
            d[1] = 0x5C;
        }
        send(FW2, &d);
        send(FW1, &d);
    }

    // (b, e) the wrong key: as a stranger, and claiming to be fw1 or fw2.
    let stranger = u32::from(Ipv4Addr::new(198, 18, 255, 66));
    for d in forged(stranger, u32::from(FW2)) {
        send(FW2, &d);
    }
    for d in forged(u32::from(FW1), u32::from(FW2)) {
        send(FW2, &d);
    }
    for d in forged(u32::from(FW2), u32::from(FW1)) {
        send(FW1, &d);
    }

    // (c) replay at once, and (d) with one bit flipped.
    for (to, d) in &captured {
        send(*to, d);
    }
    for (k, (to, d)) in captured.iter().enumerate() {
        let mut d = d.clone();
        let bit = (next() as usize) % (d.len() * 8);
        d[bit / 8] ^= 1 << (bit % 8);
        if k % 2 == 0 || d.len() > 24 {
            send(*to, &d);
        }
    }
    // (c) replay later.
    std::thread::sleep(Duration::from_secs(2));
    for (to, d) in &captured {
        send(*to, d);
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = drops(&r, 1);
    let grew = |reason: &str| count(&after, reason) > count(&before, reason);
    for reason in ["malformed", "badmagic", "unknownnode", "authentication"] {
        assert!(grew(reason), "{reason} not counted: {before} -> {after}");
    }
    assert!(
        grew("replay") || grew("tooold"),
        "replays not counted: {before} -> {after}"
    );
    assert_nothing_planted(&r, "after garbage, forgeries and replays");

    // (c) replay after the victim restarted: its replay window is new, its peer's epoch
    // must be proven again before anything counts.
    r.lab.kill_ctsync(1);
    r.lab.start_ctsync(1).unwrap();
    for (to, d) in &captured {
        if *to == FW2 {
            send(FW2, d);
        }
    }
    r.lab.wait_ready(1).unwrap();
    for (to, d) in &captured {
        if *to == FW2 {
            send(FW2, d);
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let d = drops(&r, 1);
    assert!(
        count(&d, "unverified") + count(&d, "tooold") + count(&d, "replay") > 0,
        "replays to the restarted backup not counted: {d}"
    );
    assert_nothing_planted(&r, "after replays to a restarted backup");

    // (f) a flood of well-formed-looking datagrams for three seconds: memory stays bounded.
    let pid = {
        let out = std::process::Command::new("pgrep")
            .args(["-f", &format!("{}/fw2.toml", r.lab.dir().display())])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .and_then(|l| l.trim().parse::<u32>().ok())
            .unwrap()
    };
    let rss0 = rss_kib(pid);
    let end = Instant::now() + Duration::from_secs(3);
    let mut sent = 0u64;
    let template = &captured[0].1;
    while Instant::now() < end && sent < 2_000_000 {
        let mut d = template.clone();
        let n = next();
        d[16..24].copy_from_slice(&n.to_be_bytes());
        send(FW2, &d);
        sent += 1;
    }
    let rss1 = rss_kib(pid);
    eprintln!("flood: {sent} datagrams, backup RSS {rss0} KiB -> {rss1} KiB");
    assert!(
        rss1 < rss0 + 32 * 1024,
        "memory grew under the flood: {rss0} KiB -> {rss1} KiB"
    );
    assert_nothing_planted(&r, "after the flood");

    // The sessions still survive a failover.
    r.lab.wait_ready(1).unwrap();
    r.lab.wait_replicated(1, 15).unwrap();
    let (_, rep) = r.hard_failover(6);
    r.assert_all_kept("failover after the attack", &rep);
    assert_nothing_planted(&r, "after the failover");
}
