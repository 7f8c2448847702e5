//! Round trips against the real kernel, in throwaway network namespaces.

#![allow(clippy::panic, clippy::unwrap_used)] // test code: a panic is a failed assertion

mod support;

use ctnetlink::{Conntrack, DumpItem, Errno, Error, Flow, FlowKey, ProtoInfo, Status, ipproto};
use support::{Nat, PROTOS, TestNetns, sample_flow, some_labels};

/// Fields we wrote must come back as written; the kernel adds its own (id, use,
/// counters, CONFIRMED, …) and counts the timeout down.
fn assert_matches(want: &Flow, got: &Flow) {
    assert_eq!(got.orig, want.orig, "original tuple of {want}");
    assert_eq!(got.reply, want.reply, "reply tuple of {want}");
    assert_eq!(
        got.zone.unwrap_or(0),
        want.zone.unwrap_or(0),
        "zone of {want}"
    );
    assert_eq!(
        got.mark.unwrap_or(0),
        want.mark.unwrap_or(0),
        "mark of {want}"
    );
    assert_eq!(
        got.labels.unwrap_or_default(),
        want.labels.unwrap_or_default(),
        "labels of {want}"
    );
    let (want_s, got_s) = (
        want.status.unwrap_or_default(),
        got.status.unwrap_or_default(),
    );
    for bit in [Status::SEEN_REPLY, Status::ASSURED] {
        assert_eq!(
            got_s.contains(bit),
            want_s.contains(bit),
            "{bit:?} of {want}"
        );
    }
    assert!(
        got_s.contains(Status::CONFIRMED),
        "entry not confirmed: {got:?}"
    );
    if want.snat().is_some() {
        assert!(
            got_s.contains(Status::SRC_NAT | Status::SRC_NAT_DONE),
            "SNAT status of {got:?}"
        );
    }
    if want.dnat().is_some() {
        assert!(
            got_s.contains(Status::DST_NAT | Status::DST_NAT_DONE),
            "DNAT status of {got:?}"
        );
    }
    let (w, g) = (want.timeout.unwrap_or(0), got.timeout.unwrap_or(0));
    assert!(
        g <= w && g + 5 >= w,
        "timeout {g} for written {w} of {want}"
    );
    match (&want.protoinfo, &got.protoinfo) {
        (None, _) => {}
        (Some(ProtoInfo::Tcp(w)), Some(ProtoInfo::Tcp(g))) => {
            assert_eq!(g.state, w.state, "TCP state of {want}");
            assert_eq!(g.wscale_orig, w.wscale_orig, "wscale of {want}");
            assert_eq!(g.wscale_reply, w.wscale_reply, "wscale of {want}");
            assert_eq!(
                g.flags_orig.map(|f| f.flags),
                w.flags_orig.map(|f| f.flags),
                "TCP flags of {want}"
            );
        }
        (Some(ProtoInfo::Sctp(w)), Some(ProtoInfo::Sctp(g))) => {
            assert_eq!(
                (g.state, g.vtag_orig, g.vtag_reply),
                (w.state, w.vtag_orig, w.vtag_reply)
            );
        }
        (Some(ProtoInfo::Dccp(w)), Some(ProtoInfo::Dccp(g))) => {
            assert_eq!((g.state, g.role), (w.state, w.role));
        }
        (w, g) => panic!("protoinfo {g:?} for written {w:?}"),
    }
}

fn dump_all(ct: &mut Conntrack) -> Vec<Flow> {
    let mut out = Vec::new();
    ct.dump(None, |item| match item {
        DumpItem::Flow(f) => out.push(f.clone()),
        DumpItem::Restart => out.clear(),
    })
    .expect("dump");
    out
}

/// Every family × protocol × NAT shape, with zone, mark and labels: create, then dump and
/// get return it; update changes timeout, mark and status; delete removes; flush empties.
#[test]
fn round_trip_every_family_protocol_and_nat() {
    let Some(t) = TestNetns::new("roundtrip") else {
        return;
    };
    t.enable_labels();
    let mut ct = Conntrack::open_in(&t.ns).expect("socket");
    let mut flows = Vec::new();
    let mut i = 1;
    for ipv6 in [false, true] {
        for &proto in PROTOS {
            if (proto == ipproto::ICMP && ipv6) || (proto == ipproto::ICMPV6 && !ipv6) {
                continue;
            }
            for nat in [Nat::None, Nat::Snat, Nat::Dnat] {
                for zoned in [false, true] {
                    let mut f = sample_flow(i, ipv6, proto, nat);
                    if zoned {
                        f.zone = Some(7);
                        f.mark = Some(0xdead_0000 + i);
                        f.labels = Some(some_labels());
                    }
                    flows.push(f);
                    i += 1;
                }
            }
        }
    }
    for f in &flows {
        ct.create(f).unwrap_or_else(|e| panic!("create {f}: {e}"));
    }
    let dumped = dump_all(&mut ct);
    assert_eq!(dumped.len(), flows.len(), "dump count");
    for want in &flows {
        let got = dumped
            .iter()
            .find(|d| d.key() == want.key())
            .unwrap_or_else(|| panic!("{want} missing from dump"));
        assert_matches(want, got);
        let got = ct
            .get(&want.key())
            .expect("get")
            .unwrap_or_else(|| panic!("get {want}"));
        assert_matches(want, &got);
    }

    // Update: timeout, mark and status change; the tuples stay.
    for f in &flows {
        let mut u = f.clone();
        u.timeout = Some(1234);
        u.mark = Some(42);
        ct.update(&u).unwrap_or_else(|e| panic!("update {f}: {e}"));
        let got = ct.get(&f.key()).expect("get").expect("still there");
        assert_eq!(got.mark, Some(42), "mark after update of {f}");
        let to = got.timeout.unwrap_or(0);
        assert!(
            (1229..=1234).contains(&to),
            "timeout {to} after update of {f}"
        );
    }
    // An unreplied, unassured flow becomes assured by an update.
    let mut fresh = sample_flow(9999, false, ipproto::UDP, Nat::None);
    fresh.status = Some(Status::empty());
    ct.create(&fresh).expect("create fresh");
    fresh.status = Some(Status::SEEN_REPLY | Status::ASSURED);
    ct.update(&fresh).expect("update status");
    let got = ct.get(&fresh.key()).expect("get").expect("fresh exists");
    assert!(
        got.status
            .unwrap_or_default()
            .contains(Status::ASSURED | Status::SEEN_REPLY)
    );

    // Delete removes exactly one; a second delete says ENOENT.
    ct.delete(&flows[0]).expect("delete");
    assert!(ct.get(&flows[0].key()).expect("get").is_none());
    match ct.delete(&flows[0]) {
        Err(Error::Kernel(e)) => assert_eq!(e, Errno::ENOENT),
        other => panic!("second delete gave {other:?}"),
    }
    assert_eq!(dump_all(&mut ct).len(), flows.len());

    // A one-family flush leaves the other family alone; a full flush empties the table.
    ct.flush(Some(ctnetlink::Family::Ipv4)).expect("flush IPv4");
    let left = dump_all(&mut ct);
    assert!(!left.is_empty() && left.iter().all(|f| f.family() == ctnetlink::Family::Ipv6));
    ct.flush(None).expect("flush");
    assert!(dump_all(&mut ct).is_empty());
}

/// A key that is not there gives `None`, not an error.
#[test]
fn get_of_absent_flow_is_none() {
    let Some(t) = TestNetns::new("getabsent") else {
        return;
    };
    let mut ct = Conntrack::open_in(&t.ns).expect("socket");
    let f = sample_flow(5, false, ipproto::TCP, Nat::None);
    assert!(
        ct.get(&FlowKey {
            orig: f.orig,
            zone: 0
        })
        .expect("get")
        .is_none()
    );
}

/// Expectations: a master with the built-in FTP helper gets an expectation created,
/// dumped back equal, deleted, and flushed.
#[test]
fn expectations_round_trip_through_the_kernel() {
    use ctnetlink::{Expectation, L4, Name, Tuple};
    let Some(t) = TestNetns::new("expect") else {
        return;
    };
    let mut ct = Conntrack::open_in(&t.ns).expect("socket");
    // The control connection of an FTP session: TCP to port 21 with helper "ftp".
    let mut master = sample_flow(21, false, ipproto::TCP, Nat::None);
    if let L4::Ports { dst, .. } = &mut master.orig.l4 {
        *dst = 21;
    }
    master.reply = master.orig.inverse();
    master.helper = Name::new(b"ftp");
    ct.create(&master)
        .expect("create the FTP control connection");
    let got = ct.get(&master.key()).expect("get").expect("master exists");
    assert_eq!(got.helper, Name::new(b"ftp"), "helper attached");

    // The data connection it expects: server port 20 to the client's port 50000.
    let tuple = Tuple::ports(ipproto::TCP, master.orig.dst, 20, master.orig.src, 50000);
    let ones = std::net::IpAddr::V4(std::net::Ipv4Addr::BROADCAST);
    let mask = Tuple {
        src: ones,
        dst: ones,
        proto: 0xff,
        l4: L4::Ports {
            src: 0xffff,
            dst: 0xffff,
        },
        zone: None,
    };
    let exp = Expectation {
        timeout: Some(300),
        helper: Name::new(b"ftp"),
        ..Expectation::new(master.orig, tuple, mask)
    };
    ct.create_expectation(&exp).expect("create expectation");
    let mut dumped = Vec::new();
    ct.dump_expectations(None, |e| dumped.push(e.clone()))
        .expect("dump expectations");
    assert_eq!(dumped.len(), 1, "{dumped:?}");
    let d = &dumped[0];
    assert_eq!(
        (d.master, d.tuple, d.helper),
        (exp.master, exp.tuple, exp.helper)
    );
    // The kernel keeps the mask's addresses and destination port; it reports the source
    // port of a TCP expectation's mask as 0 whatever was asked (6.18).
    assert_eq!((d.mask.src, d.mask.dst), (exp.mask.src, exp.mask.dst));
    assert!(
        matches!(d.mask.l4, L4::Ports { dst: 0xffff, .. }),
        "{:?}",
        d.mask.l4
    );
    assert!(
        d.timeout.is_some_and(|s| s <= 300),
        "timeout {:?}",
        d.timeout
    );

    ct.delete_expectation(&exp).expect("delete expectation");
    let mut n = 0;
    ct.dump_expectations(None, |_| n += 1).expect("dump");
    assert_eq!(n, 0, "deleted");
    ct.create_expectation(&exp).expect("create again");
    ct.flush_expectations().expect("flush expectations");
    ct.dump_expectations(None, |_| n += 1).expect("dump");
    assert_eq!(n, 0, "flushed");
}

/// What replication does: read flows from one kernel and create them, exactly as read,
/// in another. TCP flags come back from a dump with mask 0; they must still be set.
#[test]
fn flows_recreated_exactly_as_dumped_keep_their_state() {
    let Some(a) = TestNetns::new("redumpa") else {
        return;
    };
    let Some(b) = TestNetns::new("redumpb") else {
        return;
    };
    let mut cta = Conntrack::open_in(&a.ns).expect("socket a");
    let mut ctb = Conntrack::open_in(&b.ns).expect("socket b");
    let flows: Vec<Flow> = [Nat::None, Nat::Snat, Nat::Dnat]
        .iter()
        .enumerate()
        .map(|(i, nat)| sample_flow(i as u32 + 1, false, ipproto::TCP, *nat))
        .collect();
    for f in &flows {
        cta.create(f).expect("create in a");
    }
    let dumped = dump_all(&mut cta);
    for f in &dumped {
        ctb.create(f)
            .unwrap_or_else(|e| panic!("re-create {f}: {e}"));
    }
    let again = dump_all(&mut ctb);
    assert_eq!(again.len(), flows.len());
    for want in &flows {
        let got = again
            .iter()
            .find(|g| g.key() == want.key())
            .expect("present in b");
        assert_matches(want, got);
        let (Some(ProtoInfo::Tcp(w)), Some(ProtoInfo::Tcp(g))) = (&want.protoinfo, &got.protoinfo)
        else {
            panic!()
        };
        assert_eq!(
            g.flags_reply.map(|f| f.flags),
            w.flags_reply.map(|f| f.flags),
            "reply flags of {want}"
        );
    }
}
