//! End to end on a multicast group (docs/PROTOCOL.md §13): three nodes (network
//! namespaces) on a private bridge, a real `ctsync run` in each with `[sync] group` (a
//! 239.255.x.y or ff02:: group, TTL 1, only inside the test's namespaces). Flows created
//! in the primary's kernel reach both backups' kernels, and the primary sends them once:
//! it sends about what each backup receives (by unicast it sends twice that).

#![allow(clippy::panic, clippy::unwrap_used)] // test code: a panic is a failed assertion

mod support;

use std::time::Duration;

use ctnetlink::{Conntrack, FlowOp, Netns};
use ctsync_lab::synth::{self, Mix};
use ctsync_lab::trio::Trio;
use support::{kernel_count, wait_for};

/// The three nodes for test `tag`, or `None`, loudly, when not root.
fn trio(tag: &str) -> Option<Trio> {
    if !support::root() {
        return None;
    }
    Some(Trio::build(tag, support::ctsync_bin()).unwrap())
}

/// Start the three daemons (node a primary) on the group, wait until a's group holds
/// both others; then create `flows` flows in a's kernel, in steps, and wait until both
/// backups' kernels hold them. What a sent on its sync interface meanwhile, divided by
/// what the backup that received less received: about 1 when a sends each datagram once
/// for both (the bridge floods the group to each), about 2 when it sends one copy to
/// each (unicast: each backup receives only its own). Retransmissions (a debug build's
/// backup writing thousands of flows to its kernel acknowledges late) count on both
/// sides alike.
fn sent_over_received(lab: &mut Trio, flows: u32, group: bool) -> f64 {
    let ns = lab.nodes.clone();
    lab.start(0, "primary", group).unwrap();
    lab.start(1, "backup", group).unwrap();
    lab.start(2, "backup", group).unwrap();
    let members = |lab: &Trio| {
        lab.status(0).map_or(0, |s| {
            let st = &s["stats"];
            st["group_joins"].as_u64().unwrap_or(0) - st["group_evictions"].as_u64().unwrap_or(0)
        })
    };
    // Every copy complete, and on a group each backup takes a's group stream (it has
    // verified a's epoch and taken its GROUP_JOIN): what follows is replication alone.
    let a_id = lab.status(0).unwrap()["id"].clone();
    let up = |lab: &Trio| {
        (0..3).all(|i| {
            lab.status(i).is_ok_and(|s| {
                s["peers"].as_array().is_some_and(|p| {
                    p.iter().all(|p| {
                        p["synced"] == true
                            && (!group || p["id"] != a_id || p["group_joined"] == true)
                    })
                })
            })
        })
    };
    wait_for(
        Duration::from_secs(15),
        || up(lab) && (!group || members(lab) == 2),
        || format!("{:?}\n{}", lab.status(0), lab.logs()),
    );
    let flows: Vec<_> = (0..u64::from(flows))
        .map(|i| synth::flow(i, Mix::TcpSnat, 3600))
        .collect();
    let before: Vec<(u64, u64)> = (0..3).map(|i| lab.link_bytes(i).unwrap()).collect();
    let mut ct = Conntrack::open_in(&Netns::named(&ns[0]).unwrap()).unwrap();
    for step in flows.chunks(250) {
        ct.batch(FlowOp::Create, step, |i, e| panic!("create {i}: {e}"))
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    for b in &ns[1..] {
        wait_for(
            Duration::from_secs(20),
            || kernel_count(b) == flows.len(),
            || format!("{b} has {}\n{}", kernel_count(b), lab.logs()),
        );
    }
    // Acknowledgements and retransmissions settle.
    std::thread::sleep(Duration::from_millis(500));
    let after: Vec<(u64, u64)> = (0..3).map(|i| lab.link_bytes(i).unwrap()).collect();
    let sent = after[0].0 - before[0].0;
    let received = (after[1].1 - before[1].1).min(after[2].1 - before[2].1);
    let s = lab.status(0).unwrap();
    let to_group = s["stats"]["group_datagrams_sent"].as_u64().unwrap_or(0);
    assert_eq!(to_group > 0, group, "group datagrams only on a group: {s}");
    eprintln!(
        "group {group}: a sent {:.1} bytes per flow, the lesser backup received {:.1}; group messages {} sent, {} again",
        sent as f64 / flows.len() as f64,
        received as f64 / flows.len() as f64,
        s["stats"]["group_messages_sent"],
        s["stats"]["group_retransmitted"]
    );
    sent as f64 / received.max(1) as f64
}

#[test]
fn three_daemons_replicate_through_an_ipv4_group() {
    let Some(mut lab) = trio("grp4") else {
        return;
    };
    let ratio = sent_over_received(&mut lab, 3000, true);
    assert!(
        ratio < 1.3,
        "the primary sent {ratio:.2} times what a backup received: not once for both\n{}",
        lab.logs()
    );
}

#[test]
fn three_daemons_replicate_through_an_ipv6_link_scope_group() {
    let Some(mut lab) = trio("grp6") else {
        return;
    };
    lab.use_ipv6().unwrap();
    let ratio = sent_over_received(&mut lab, 2000, true);
    assert!(
        ratio < 1.3,
        "the primary sent {ratio:.2} times what a backup received: not once for both\n{}",
        lab.logs()
    );
}

/// The control: the same three nodes by unicast. Everything arrives, and the primary
/// sends about twice what each backup receives (the ratio the tests above bound).
#[test]
fn by_unicast_the_primary_sends_each_backup_its_own_copy() {
    let Some(mut lab) = trio("grpu") else {
        return;
    };
    let ratio = sent_over_received(&mut lab, 3000, false);
    assert!(
        ratio > 1.7,
        "by unicast the primary sent only {ratio:.2} times what a backup received\n{}",
        lab.logs()
    );
}
