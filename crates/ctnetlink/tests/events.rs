//! Events from the real kernel: kinds, the causing port id, and overruns.

#![allow(clippy::panic, clippy::unwrap_used)] // test code: a panic is a failed assertion

mod support;

use std::time::{Duration, Instant};

use ctnetlink::{Conntrack, Event, EventKind, EventSocket, FlowKey, FlowOp, Groups, ipproto};
use support::{Nat, TestNetns, sample_flow};

/// Collect flow events for up to `limit` time or until `want` of them arrived.
fn collect(ev: &mut EventSocket, want: usize, limit: Duration) -> Vec<(EventKind, u32, FlowKey)> {
    let mut out = Vec::new();
    let deadline = Instant::now() + limit;
    while out.len() < want {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            break;
        };
        ev.recv_timeout(left, |e| {
            if let Event::Flow { kind, portid, flow } = e {
                out.push((kind, portid, flow.key()));
            }
        })
        .expect("recv");
    }
    out
}

/// Create, update and delete through a request socket: each change gives one event of
/// the right kind carrying that socket's port id. Traffic gives events with port id 0.
#[test]
fn events_have_kind_and_port_id() {
    let Some(t) = TestNetns::new("events") else {
        return;
    };
    let mut ev = EventSocket::open_in(&t.ns, Groups::CONNTRACK).expect("event socket");
    let mut ct = Conntrack::open_in(&t.ns).expect("socket");
    let me = ct.portid();
    assert_ne!(me, 0);

    let mut f = sample_flow(3, false, ipproto::TCP, Nat::Snat);
    ct.create(&f).expect("create");
    f.mark = Some(77);
    ct.update(&f).expect("update");
    ct.delete(&f).expect("delete");
    let got = collect(&mut ev, 3, Duration::from_secs(5));
    let kinds: Vec<_> = got.iter().map(|(k, p, key)| (*k, *p, *key)).collect();
    assert_eq!(
        kinds,
        vec![
            (EventKind::New, me, f.key()),
            (EventKind::Update, me, f.key()),
            (EventKind::Destroy, me, f.key()),
        ]
    );

    // Packets, not netlink, create this one: port id 0.
    t.exec(&["ip", "link", "set", "lo", "up"]);
    t.exec(&[
        "nft",
        "add table inet ctnl_ev; add chain inet ctnl_ev out { type filter hook output priority 0; }; add rule inet ctnl_ev out ct state new accept",
    ]);
    let udp =
        t.ns.run(|| std::net::UdpSocket::bind("127.0.0.1:0"))
            .expect("UDP socket in the namespace");
    udp.send_to(b"hello", "127.0.0.1:9").expect("send");
    let got = collect(&mut ev, 1, Duration::from_secs(5));
    let (kind, portid, key) = got.first().copied().expect("an event for the datagram");
    assert_eq!(
        (kind, portid, key.orig.proto),
        (EventKind::New, 0, ipproto::UDP)
    );
}

/// A deliberately small receive buffer under a burst of changes yields an overrun
/// event, and events keep coming afterwards.
#[test]
fn overrun_is_reported_and_the_stream_goes_on() {
    let Some(t) = TestNetns::new("overrun") else {
        return;
    };
    let mut ev = EventSocket::open_in(&t.ns, Groups::CONNTRACK).expect("event socket");
    ev.set_recv_buffer(4096).expect("small buffer");
    let mut ct = Conntrack::open_in(&t.ns).expect("socket");
    let flows: Vec<_> = (0..5000)
        .map(|i| sample_flow(i, false, ipproto::UDP, Nat::None))
        .collect();
    let report = ct
        .batch(FlowOp::Create, &flows, |i, e| panic!("create {i}: {e}"))
        .expect("batch");
    assert_eq!(report.applied, 5000);

    let mut overruns = 0;
    let mut events_after_overrun = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut churned = false;
    while Instant::now() < deadline && events_after_overrun < 10 {
        let got = ev
            .recv_timeout(Duration::from_millis(200), |e| match e {
                Event::Overrun => overruns += 1,
                Event::Flow { .. } if overruns > 0 => events_after_overrun += 1,
                _ => {}
            })
            .expect("recv");
        if got.is_none() && overruns > 0 && !churned {
            // The backlog is drained: new changes must still be reported.
            ct.batch(FlowOp::Delete, &flows[..100], |i, e| {
                panic!("delete {i}: {e}")
            })
            .expect("delete batch");
            churned = true;
        }
    }
    assert!(overruns >= 1, "no overrun reported");
    assert!(
        events_after_overrun >= 10,
        "only {events_after_overrun} events after the overrun"
    );
    assert_eq!(ev.stats().overruns, overruns);
}

/// Leaving the NEW group (through a duplicate of the socket's descriptor, as the daemon
/// does during a commit) stops NEW events; rejoining brings them back; UPDATE and DESTROY
/// keep coming throughout.
#[test]
fn event_groups_can_be_left_and_rejoined() {
    use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
    let Some(t) = TestNetns::new("evgroups") else {
        return;
    };
    let mut ev = EventSocket::open_in(&t.ns, Groups::CONNTRACK).expect("event socket");
    // SAFETY: dup of an open descriptor, owned by the OwnedFd.
    let dup =
        unsafe { OwnedFd::from_raw_fd(libc::fcntl(ev.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0)) };
    let mut ct = Conntrack::open_in(&t.ns).expect("socket");
    let quiet = Groups {
        new: false,
        ..Groups::CONNTRACK
    };
    ctnetlink::set_event_groups(dup.as_fd(), quiet).expect("leave NEW");
    let a = sample_flow(11, false, ipproto::TCP, Nat::Snat);
    ct.create(&a).expect("create");
    ct.delete(&a).expect("delete");
    let got = collect(&mut ev, 2, Duration::from_millis(500));
    let kinds: Vec<_> = got.iter().map(|e| e.0).collect();
    assert_eq!(
        kinds,
        vec![EventKind::Destroy],
        "no NEW while out of the group"
    );
    ctnetlink::set_event_groups(dup.as_fd(), Groups::CONNTRACK).expect("rejoin");
    ct.create(&a).expect("create");
    let got = collect(&mut ev, 1, Duration::from_secs(5));
    assert_eq!(got.first().map(|e| e.0), Some(EventKind::New));
}

/// With its own port ignored, an event socket gets nothing of that socket's changes and
/// everything of another's (the kernel filters; nothing is queued, nothing overruns).
#[test]
fn a_sockets_own_changes_can_be_filtered_out_in_the_kernel() {
    let Some(t) = TestNetns::new("evignore") else {
        return;
    };
    let mut ev = EventSocket::open_in(&t.ns, Groups::CONNTRACK).expect("event socket");
    let mut mine = Conntrack::open_in(&t.ns).expect("socket");
    let mut other = Conntrack::open_in(&t.ns).expect("socket");
    ev.ignore_port(mine.portid()).expect("filter");
    // Enough of our own to overrun a small buffer if they were queued.
    ev.set_recv_buffer(4096).expect("small buffer");
    let flows: Vec<_> = (0..2000)
        .map(|i| sample_flow(i, false, ipproto::UDP, Nat::None))
        .collect();
    mine.batch(FlowOp::Create, &flows, |i, e| panic!("create {i}: {e}"))
        .expect("batch");
    let b = sample_flow(2500, false, ipproto::TCP, Nat::Snat);
    other.create(&b).expect("create");
    other.delete(&b).expect("delete");
    let mut got = Vec::new();
    let mut overruns = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < 2 && Instant::now() < deadline {
        ev.recv_timeout(Duration::from_millis(200), |e| match e {
            Event::Flow { kind, portid, flow } => got.push((kind, portid, flow.key())),
            Event::Overrun => overruns += 1,
            Event::Expectation { .. } => {}
        })
        .expect("recv");
    }
    assert_eq!(overruns, 0, "our own changes reached the socket");
    assert_eq!(
        got,
        vec![
            (EventKind::New, other.portid(), b.key()),
            (EventKind::Destroy, other.portid(), b.key()),
        ]
    );
}

/// One socket listening to all namespaces hears the events of each namespace that has an
/// id in its own, tagged with that id, and its own namespace's untagged; a namespace
/// without an id there is not heard. Asking for an id twice gives the same one.
#[test]
fn one_socket_hears_every_namespace_with_an_id_tagged_by_it() {
    let (Some(hub), Some(one), Some(two), Some(none)) = (
        TestNetns::new("allns-hub"),
        TestNetns::new("allns-one"),
        TestNetns::new("allns-two"),
        TestNetns::new("allns-none"),
    ) else {
        return;
    };
    let mut ev = EventSocket::open_in(&hub.ns, Groups::CONNTRACK).expect("event socket");
    ev.listen_all_namespaces().expect("NETLINK_LISTEN_ALL_NSID");
    let id_one = one.ns.id_seen_from(Some(&hub.ns)).expect("an id for one");
    let id_two = two.ns.id_seen_from(Some(&hub.ns)).expect("an id for two");
    assert_ne!(id_one, id_two);
    assert_eq!(one.ns.id_seen_from(Some(&hub.ns)).expect("again"), id_one);

    let flow = |i| sample_flow(i, false, ipproto::UDP, Nat::None);
    for (t, i) in [(&none, 1), (&one, 2), (&two, 3), (&hub, 4)] {
        Conntrack::open_in(&t.ns)
            .expect("socket")
            .create(&flow(i))
            .expect("create");
    }
    let mut got = Vec::new();
    ev.set_nonblocking(true).expect("nonblocking");
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < 3 && Instant::now() < deadline {
        let read = ev
            .recv_tagged(|nsid, e| {
                if let Event::Flow { flow: f, .. } = e {
                    got.push((nsid, f.key()));
                }
            })
            .expect("recv");
        if read.is_none() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // Anything late from the namespace without an id would show here.
    std::thread::sleep(Duration::from_millis(200));
    while ev
        .recv_tagged(|nsid, e| {
            if let Event::Flow { flow: f, .. } = e {
                got.push((nsid, f.key()));
            }
        })
        .expect("recv")
        .is_some()
    {}
    got.sort_by_key(|(nsid, _)| *nsid);
    let mut want = vec![
        (None, flow(4).key()),
        (Some(id_one), flow(2).key()),
        (Some(id_two), flow(3).key()),
    ];
    want.sort_by_key(|(nsid, _)| *nsid);
    assert_eq!(got, want, "the namespace without an id must not be heard");
}
