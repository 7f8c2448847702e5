//! One daemon per host for many router namespaces (`[namespaces]`, docs/NEUTRON.md), end
//! to end on real kernels: two hosts (namespaces joined by a sync link) and routers whose
//! replicas live in namespaces on each. A router's flows reach its replica on the other
//! host and nowhere else; roles follow the state files; routers that appear or go away
//! while the daemons run are picked up; control requests name a router; datagrams with
//! a bad or foreign tag are counted, never applied.

#![allow(clippy::panic, clippy::unwrap_used)] // test code: a panic is a failed assertion

mod support;

use std::time::Duration;

use ctnetlink::{Conntrack, FlowOp, Netns};
use ctsync_lab::hosts::Hosts;
use ctsync_lab::synth::Mix;
use support::{kernel_count, wait_for};

fn hosts(tag: &str) -> Option<Hosts> {
    if !support::root() {
        return None;
    }
    Some(Hosts::build(tag, support::ctsync_bin()).unwrap())
}

/// Create `n` entries, from `start`, in namespace `ns`.
fn fill(ns: &str, start: u64, n: u64) {
    let mut ct = Conntrack::open_in(&Netns::named(ns).unwrap()).unwrap();
    let r =
        ctsync_lab::load::bulk(&mut ct, FlowOp::Create, Mix::Realistic, start, n, 3600).unwrap();
    assert_eq!(r.applied, n, "{r:?}");
}

/// Router `name`'s entry in `status`' namespaces, if listed.
fn router(status: &serde_json::Value, name: &str) -> Option<serde_json::Value> {
    status["namespaces"]
        .as_array()?
        .iter()
        .find(|n| n["name"] == name)
        .cloned()
}

/// Whether host `h`'s status lists router `name` in `role`, ready, with `external`
/// replicated flows.
fn shows(h: &Hosts, host: char, name: &str, role: &str, external: u64) -> bool {
    h.request(host, "status")
        .ok()
        .and_then(|s| router(&s, name))
        .is_some_and(|r| {
            r["role"] == role && r["ready"] == true && r["caches"]["external"] == external
        })
}

#[test]
fn routers_replicate_to_their_replicas_follow_their_state_files_and_come_and_go() {
    let Some(mut h) = hosts("nsr") else { return };
    // Routers 1-3, primary on host a, with 100, 200 and 300 flows (the same entries in
    // routers 1 and 2's first hundred: their tables are separate).
    for n in 1..=3 {
        h.add_router('a', n).unwrap();
        h.add_router('b', n).unwrap();
        h.set_state('a', n, "primary").unwrap();
        h.set_state('b', n, "backup").unwrap();
        fill(&h.router('a', n), 0, 100 * n as u64);
    }
    // Host b's metrics on a port of loopback that this test's pid chooses.
    let metrics_port = 20_000 + (std::process::id() % 20_000) as u16;
    h.metrics[1] = Some(metrics_port);
    h.start('a').unwrap();
    h.start('b').unwrap();
    for n in 1..=3 {
        let name = h.router('b', n);
        wait_for(
            Duration::from_secs(30),
            || shows(&h, 'b', &name, "backup", 100 * n as u64) && kernel_count(&name) == 100 * n,
            || format!("{:?}\n{}", h.request('b', "status"), h.logs()),
        );
    }

    // Host b's metrics label each router.
    let m = scrape(metrics_port);
    assert!(m.contains("ctsync_namespaces 3"), "{m}");
    assert!(
        m.contains("ctsync_namespace_flows{namespace=\"2\",cache=\"external\"} 200"),
        "{m}"
    );

    // Router 2 fails over (its keepalived's notify scripts rewrite both state files): its
    // replica on b becomes primary with router 2's flows; the others stay as they were.
    h.set_state('a', 2, "backup").unwrap();
    h.set_state('b', 2, "primary").unwrap();
    let (a2, b2) = (h.router('a', 2), h.router('b', 2));
    wait_for(
        Duration::from_secs(20),
        || {
            h.request('b', "status")
                .ok()
                .and_then(|s| router(&s, &b2))
                .is_some_and(|r| r["role"] == "primary" && r["caches"]["internal"] == 200)
                && h.request('a', "status")
                    .ok()
                    .and_then(|s| router(&s, &a2))
                    .is_some_and(|r| r["role"] == "backup")
        },
        || format!("{:?}\n{}", h.request('b', "status"), h.logs()),
    );
    for n in [1, 3] {
        assert!(shows(&h, 'b', &h.router('b', n), "backup", 100 * n as u64));
    }
    // Flows new on b's router 2 now reach a's router 2, not any other router.
    fill(&b2, 1000, 25);
    wait_for(
        Duration::from_secs(20),
        || kernel_count(&a2) == 225,
        || format!("a's router 2 holds {}\n{}", kernel_count(&a2), h.logs()),
    );
    assert_eq!(kernel_count(&h.router('a', 1)), 100);
    assert_eq!(kernel_count(&h.router('b', 3)), 300);

    // Router 4 appears on both hosts while the daemons run.
    let a4 = h.add_router('a', 4).unwrap();
    let b4 = h.add_router('b', 4).unwrap();
    h.set_state('a', 4, "primary").unwrap();
    h.set_state('b', 4, "backup").unwrap();
    fill(&a4, 0, 40);
    wait_for(
        Duration::from_secs(30),
        || shows(&h, 'b', &b4, "backup", 40) && kernel_count(&b4) == 40,
        || format!("{:?}\n{}", h.request('b', "status"), h.logs()),
    );

    // Router 1 goes away on b: b lists it no longer; the others go on.
    let b1 = h.router('b', 1);
    h.remove_router('b', 1).unwrap();
    wait_for(
        Duration::from_secs(20),
        || !lists(&h, 'b', &b1) && lists(&h, 'b', &b4),
        || format!("{:?}\n{}", h.request('b', "status"), h.logs()),
    );

    // Requests name a router; the daemon of namespaces refuses what names none.
    let one = h.request('b', &format!("netns {b4} status")).unwrap();
    assert_eq!(one["role"], "backup");
    assert_eq!(one["caches"]["external"], 40);
    let e = h.request('b', "commit").unwrap_err().to_string();
    assert!(e.contains("--netns"), "{e}");
    let e = h
        .request('b', "netns no-such-router status")
        .unwrap_err()
        .to_string();
    assert!(e.contains("no replicated namespace"), "{e}");
    let r = h.request('b', &format!("netns {b4} role primary")).unwrap();
    assert_eq!(r["role"], "primary");
    wait_for(
        Duration::from_secs(10),
        || {
            h.request('b', "status")
                .ok()
                .and_then(|s| router(&s, &b4))
                .is_some_and(|r| r["role"] == "primary")
        },
        || h.logs(),
    );

    // Datagrams from b's sync address: untagged, tagged for no router here, and tagged
    // for router 3 but not sealed with its key. Each is counted where it fell; router 3
    // goes on as before.
    let before = h
        .request('a', &format!("netns {} status", h.router('a', 3)))
        .unwrap();
    let dropped_before: u64 = sum_dropped(&before);
    // (Datagrams for router 4 may have come before its namespace on a did: counted too.)
    let host_before = h.request('a', "status").unwrap();
    let count_of = |s: &serde_json::Value, what: &str| s["dropped"][what].as_u64().unwrap();
    let (malformed, unknown) = (
        count_of(&host_before, "malformed_tag"),
        count_of(&host_before, "unknown_namespace"),
    );
    let sender = Netns::named(&h.host_netns('b'))
        .unwrap()
        .run(|| std::net::UdpSocket::bind("198.18.250.2:0"))
        .unwrap();
    let tagged = |id: &[u8], body: &[u8]| {
        let mut d = Vec::new();
        ctsync_wire::tag::put_tag(&mut d, id);
        d.extend_from_slice(body);
        sender.send_to(&d, "198.18.250.1:3780").unwrap();
    };
    sender
        .send_to(b"not a ctsync datagram", "198.18.250.1:3780")
        .unwrap();
    tagged(b"99", &[0u8; 64]);
    let mut forged = vec![0xC7, 0x5C, 2, 0];
    forged.extend_from_slice(&[0u8; 80]);
    tagged(b"3", &forged);
    wait_for(
        Duration::from_secs(10),
        || {
            let s = h.request('a', "status").unwrap();
            let r3 = h
                .request('a', &format!("netns {} status", h.router('a', 3)))
                .unwrap();
            count_of(&s, "malformed_tag") == malformed + 1
                && count_of(&s, "unknown_namespace") > unknown
                && sum_dropped(&r3) > dropped_before
        },
        || format!("{:?}\n{}", h.request('a', "status"), h.logs()),
    );
    assert!(shows(&h, 'b', &h.router('b', 3), "backup", 300));
}

/// The keepalived shape: each router's own keepalived writes its notify FIFO, and reads
/// the router's own track file (ready: 0) and stale file.
#[test]
fn routers_take_their_roles_from_their_own_keepalived_fifos() {
    let Some(mut h) = hosts("nsf") else { return };
    h.fifos = true;
    h.track = true;
    for host in ['a', 'b'] {
        for n in 1..=2 {
            h.add_router(host, n).unwrap();
        }
    }
    let (a1, a2, b1, b2) = (
        h.router('a', 1),
        h.router('a', 2),
        h.router('b', 1),
        h.router('b', 2),
    );
    fill(&a1, 0, 50);
    fill(&b2, 0, 30);
    h.start('a').unwrap();
    h.start('b').unwrap();
    // Each router's keepalived writes into its own FIFO, which the daemon created when
    // the router's namespace appeared: router 1 is primary on a, router 2 on b.
    let say = |host: char, n: usize, line: &str| {
        wait_for(
            Duration::from_secs(10),
            || h.say(host, n, line).is_ok(),
            || format!("{:?}\n{}", h.say(host, n, line), h.logs()),
        );
    };
    say('a', 1, "INSTANCE \"VR_1\" MASTER 100");
    say('b', 1, "INSTANCE \"VR_1\" BACKUP 50");
    say('b', 2, "INSTANCE \"VR_2\" MASTER 100");
    say('a', 2, "INSTANCE \"VR_2\" BACKUP 50");
    wait_for(
        Duration::from_secs(30),
        || {
            is_primary(&h, 'a', &a1)
                && shows(&h, 'b', &b1, "backup", 50)
                && is_primary(&h, 'b', &b2)
                && shows(&h, 'a', &a2, "backup", 30)
                && kernel_count(&b1) == 50
                && kernel_count(&a2) == 30
        },
        || both(&h),
    );
    // Each router's own track file says it is ready, and its stale file that its
    // primary is heard (a primary's: nothing to wait for).
    wait_for(
        Duration::from_secs(10),
        || files(&h, "track") == ["0"; 4] && files(&h, "stale") == ["0"; 4],
        || {
            format!(
                "track {:?} stale {:?}\n{}",
                files(&h, "track"),
                files(&h, "stale"),
                both(&h)
            )
        },
    );
    // A sync group's line is not a router's word; router 1 then moves to b.
    say('a', 1, "GROUP \"G\" BACKUP 0");
    say('a', 1, "INSTANCE \"VR_1\" BACKUP 50");
    say('b', 1, "INSTANCE \"VR_1\" MASTER 100");
    wait_for(
        Duration::from_secs(30),
        || is_primary(&h, 'b', &b1) && shows(&h, 'a', &a1, "backup", 50),
        || both(&h),
    );
    assert!(is_primary(&h, 'b', &b2));
    // keepalived says a role once: router 1 on b, gone and back (its loop starts
    // again), is primary from the role recorded beside its FIFO, with no new line.
    h.remove_router('b', 1).unwrap();
    wait_for(
        Duration::from_secs(20),
        || !lists(&h, 'b', &b1) && h.track('b', 1, "track").is_none(),
        || format!("track {:?}\n{}", h.track('b', 1, "track"), both(&h)),
    );
    h.add_router('b', 1).unwrap();
    wait_for(
        Duration::from_secs(20),
        || is_primary(&h, 'b', &b1) && h.track('b', 1, "track").as_deref() == Some("0"),
        || format!("track {:?}\n{}", h.track('b', 1, "track"), both(&h)),
    );
    // The sync link cut: each backup router's copy goes stale (its primary, router 1
    // and 2 on b now, is silent for more than stale_after_secs), a primary's does not.
    h.cut("sync0").unwrap();
    wait_for(
        Duration::from_secs(10),
        || files(&h, "stale") == ["1", "1", "0", "0"],
        || format!("stale {:?}\n{}", files(&h, "stale"), both(&h)),
    );
    // Mended: the host links hear each other again, and so do the routers (their
    // HELLOs, grown apart while unanswered, are asked again at the host link's word):
    // no copy is stale any more.
    h.mend("sync0").unwrap();
    wait_for(
        Duration::from_secs(30),
        || files(&h, "stale") == ["0"; 4],
        || format!("stale {:?}\n{}", files(&h, "stale"), both(&h)),
    );
}

/// `systemctl reload` (SIGHUP) of a daemon of namespaces: the cluster key is rotated
/// under running routers, one host after the other, with no flow lost; a host that
/// reloads onto a key the other does not know is heard no more (its keys did change),
/// and is again once it reloads back. The daemons live through every SIGHUP.
#[test]
fn a_sighup_rotates_every_routers_keys_while_they_replicate() {
    let Some(mut h) = hosts("nsh") else { return };
    h.add_router('a', 1).unwrap();
    h.add_router('b', 1).unwrap();
    h.set_state('a', 1, "primary").unwrap();
    h.set_state('b', 1, "backup").unwrap();
    let (a1, b1) = (h.router('a', 1), h.router('b', 1));
    fill(&a1, 0, 50);
    h.start('a').unwrap();
    h.start('b').unwrap();
    let reaches = |h: &Hosts, n: usize| {
        wait_for(
            Duration::from_secs(30),
            || kernel_count(&b1) == n,
            || {
                format!(
                    "b's router 1 holds {} of {n}\n{}",
                    kernel_count(&b1),
                    h.logs()
                )
            },
        );
    };
    reaches(&h, 50);
    // A SIGHUP is taken when the daemon gets to it, and each router's loop takes its keys
    // after that: a reload is done when `router` on `host` logged it.
    let reload = |h: &mut Hosts, host: char, router: &str| {
        let log = h.dir().join(format!("host-{host}.log"));
        let said = format!("{router}: cluster keys changed");
        let taken = || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .matches(&said)
                .count()
        };
        let before = taken();
        h.reload(host).unwrap();
        wait_for(
            Duration::from_secs(10),
            || taken() > before,
            || format!("{router} on {host} did not take its keys\n{}", h.logs()),
        );
    };
    let cluster = h.dir().join("cluster.key");
    let new = h.new_key("new.key").unwrap();
    let other = h.new_key("other.key").unwrap();
    // Both hosts send with the new key, accepting the old; then the old is dropped.
    for (host, r) in [('a', &a1), ('b', &b1)] {
        h.keys[usize::from(host == 'b')] = Some((new.clone(), vec![cluster.clone()]));
        reload(&mut h, host, r);
    }
    fill(&a1, 1000, 20);
    reaches(&h, 70);
    for (host, r) in [('a', &a1), ('b', &b1)] {
        h.keys[usize::from(host == 'b')] = Some((new.clone(), Vec::new()));
        reload(&mut h, host, r);
    }
    fill(&a1, 2000, 20);
    reaches(&h, 90);
    // Host a moves to a key b does not know: b's router drops what a's sends.
    let b_status = |h: &Hosts| h.request('b', &format!("netns {b1} status")).unwrap();
    let dropped = sum_dropped(&b_status(&h));
    h.keys[0] = Some((other.clone(), Vec::new()));
    reload(&mut h, 'a', &a1);
    fill(&a1, 3000, 20);
    wait_for(
        Duration::from_secs(20),
        || sum_dropped(&b_status(&h)) > dropped,
        || format!("{:?}\n{}", b_status(&h), h.logs()),
    );
    assert_eq!(
        kernel_count(&b1),
        90,
        "flows arrived under a key b does not hold"
    );
    // Back to the key b holds: what a sent meanwhile arrives too.
    h.keys[0] = Some((new, Vec::new()));
    reload(&mut h, 'a', &a1);
    reaches(&h, 110);
    assert!(
        h.running('a') && h.running('b'),
        "a daemon died of a SIGHUP"
    );
    assert!(h.logs().contains("cluster keys changed"), "{}", h.logs());
}

/// Routers over two sync links (`[[sync.link]]`): every router's node, and the host link,
/// runs on both. With the first link cut, new flows still reach their replicas, over
/// the second, and the replicas stay ready. The control, the same with one link alone,
/// gets nothing through.
#[test]
fn routers_replicate_over_the_second_link_when_the_first_is_cut() {
    for second in [true, false] {
        let Some(mut h) = hosts(if second { "nsl2" } else { "nsl1" }) else {
            return;
        };
        if second {
            h.add_second_link().unwrap();
        }
        for n in 1..=2 {
            h.add_router('a', n).unwrap();
            h.add_router('b', n).unwrap();
            h.set_state('a', n, "primary").unwrap();
            h.set_state('b', n, "backup").unwrap();
            fill(&h.router('a', n), 0, 50);
        }
        h.start('a').unwrap();
        h.start('b').unwrap();
        for n in 1..=2 {
            let name = h.router('b', n);
            wait_for(
                Duration::from_secs(30),
                || shows(&h, 'b', &name, "backup", 50) && kernel_count(&name) == 50,
                || format!("{:?}\n{}", h.request('b', "status"), h.logs()),
            );
        }
        h.cut("sync0").unwrap();
        for n in 1..=2 {
            fill(&h.router('a', n), 1000, 20);
        }
        let all_there = || (1..=2).all(|n| kernel_count(&h.router('b', n)) == 70);
        let arrived = ctsync_lab::process::wait(Duration::from_secs(10), all_there).unwrap();
        if second {
            assert!(
                arrived.is_some(),
                "two links, the first cut: {:?}\n{}",
                h.request('b', "status"),
                h.logs()
            );
            for n in 1..=2 {
                assert!(
                    shows(&h, 'b', &h.router('b', n), "backup", 70),
                    "{:?}",
                    h.request('b', "status")
                );
            }
        } else {
            assert!(
                arrived.is_none(),
                "one link alone, cut: nothing may arrive\n{}",
                h.logs()
            );
        }
    }
}

/// `[sync] group` with `[namespaces]`: every router's live changes go once to the
/// multicast group (239.255.19.1, TTL 1, on the hosts' own sync link), each datagram
/// behind its router's tag, and the daemon on the other host hands each to its router.
/// The replicas join each primary router's group stream, get every new flow through it,
/// and none is taken out of it (a router whose group datagrams did not reach it would
/// be, after the dead interval, and fed by its own stream instead).
#[test]
fn routers_replicate_through_the_multicast_group() {
    let Some(mut h) = hosts("nsg") else { return };
    h.group = true;
    for n in 1..=3 {
        h.add_router('a', n).unwrap();
        h.add_router('b', n).unwrap();
        h.set_state('a', n, "primary").unwrap();
        h.set_state('b', n, "backup").unwrap();
        fill(&h.router('a', n), 0, 40);
    }
    h.start('a').unwrap();
    h.start('b').unwrap();
    let stats = |n: usize| {
        h.request('a', &format!("netns {} status", h.router('a', n)))
            .map(|s| s["stats"].clone())
            .unwrap_or_default()
    };
    let stat = |n: usize, what: &str| stats(n)[what].as_u64().unwrap_or(0);
    // Each replica has its router's table (a bulk, on its own stream) and then joins
    // the group stream.
    for n in 1..=3 {
        let name = h.router('b', n);
        wait_for(
            Duration::from_secs(30),
            || {
                shows(&h, 'b', &name, "backup", 40)
                    && kernel_count(&name) == 40
                    && stat(n, "group_joins") >= 1
            },
            || {
                format!(
                    "{:?}\n{:?}\n{}",
                    stats(n),
                    h.request('b', "status"),
                    h.logs()
                )
            },
        );
    }
    let sent: Vec<u64> = (1..=3).map(|n| stat(n, "group_messages_sent")).collect();
    for n in 1..=3 {
        fill(&h.router('a', n), 1000, 10 * n as u64);
    }
    for n in 1..=3 {
        let name = h.router('b', n);
        wait_for(
            Duration::from_secs(20),
            || kernel_count(&name) == 40 + 10 * n,
            || format!("b's router {n} holds {}\n{}", kernel_count(&name), h.logs()),
        );
        assert!(
            stat(n, "group_messages_sent") >= sent[n - 1] + 10 * n as u64,
            "router {n}'s new flows went to the group: {:?}",
            stats(n)
        );
        assert_eq!(stat(n, "group_evictions"), 0, "{:?}", stats(n));
    }
    // No router on a is fed its replica's table in a's kernel: the group carried a's
    // own routers' messages only (each tagged: a's router 2 holds its own 60 flows).
    assert_eq!(kernel_count(&h.router('a', 2)), 60);
}

/// What the track or stale files (`which`) of routers 1 and 2 on a, then on b, say.
fn files(h: &Hosts, which: &str) -> [String; 4] {
    [('a', 1), ('a', 2), ('b', 1), ('b', 2)]
        .map(|(host, n)| h.track(host, n, which).unwrap_or_default())
}

/// Whether host `h`'s status lists router `name` (false also when it does not answer).
fn lists(h: &Hosts, host: char, name: &str) -> bool {
    h.request(host, "status")
        .ok()
        .is_some_and(|s| router(&s, name).is_some())
}

/// Both hosts' status and logs, for a failure message.
fn both(h: &Hosts) -> String {
    format!(
        "{:?}\n{:?}\n{}",
        h.request('a', "status"),
        h.request('b', "status"),
        h.logs()
    )
}

/// Whether host `h`'s status lists router `name` as primary.
fn is_primary(h: &Hosts, host: char, name: &str) -> bool {
    h.request(host, "status")
        .ok()
        .and_then(|s| router(&s, name))
        .is_some_and(|r| r["role"] == "primary")
}

/// `GET /metrics` on 127.0.0.1:`port`: the body.
fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

/// Every drop counter of a namespace's status, summed.
fn sum_dropped(status: &serde_json::Value) -> u64 {
    status["dropped"].as_object().map_or(0, |m| {
        m.values().filter_map(serde_json::Value::as_u64).sum()
    })
}
