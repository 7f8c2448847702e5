//! Batched writes against the real kernel.

#![allow(clippy::panic, clippy::unwrap_used)] // test code: a panic is a failed assertion

mod support;

use ctnetlink::{Conntrack, DumpItem, Errno, FlowOp, ipproto};
use support::{Nat, TestNetns, sample_flow};

fn count(ct: &mut Conntrack) -> u64 {
    let mut n = 0;
    ct.dump(None, |item| {
        if let DumpItem::Flow(_) = item {
            n += 1
        }
    })
    .expect("dump")
    .flows
    .max(n)
}

/// 100,000 creates in one batch land completely, in far fewer sendmsg calls.
#[test]
fn batch_of_100k_creates_lands_completely() {
    let Some(t) = TestNetns::new("batch100k") else {
        return;
    };
    let mut ct = Conntrack::open_in(&t.ns).expect("socket");
    let flows: Vec<_> = (0..100_000)
        .map(|i| {
            sample_flow(
                i,
                i % 4 == 3,
                ipproto::TCP,
                if i % 2 == 0 { Nat::Snat } else { Nat::None },
            )
        })
        .collect();
    let report = ct
        .batch(FlowOp::Create, &flows, |i, e| {
            panic!("entry {i} refused: {e}")
        })
        .expect("batch");
    assert_eq!(
        (report.sent, report.applied, report.failed),
        (100_000, 100_000, 0)
    );
    assert!(report.sendmsgs < 1000, "{} sendmsg calls", report.sendmsgs);
    assert_eq!(count(&mut ct), 100_000);
    assert_eq!(ct.stats().expect("stats").entries, 100_000);

    let report = ct
        .batch(FlowOp::Delete, &flows, |i, e| panic!("delete {i}: {e}"))
        .expect("delete");
    assert_eq!(report.applied, 100_000);
    assert_eq!(count(&mut ct), 0);
}

/// A batch with duplicates reports EEXIST for exactly those and applies the rest; a
/// delete batch reports ENOENT for exactly the absent ones.
#[test]
fn batch_reports_errors_per_entry() {
    let Some(t) = TestNetns::new("batcherr") else {
        return;
    };
    let mut ct = Conntrack::open_in(&t.ns).expect("socket");
    let flows: Vec<_> = (0..3000)
        .map(|i| sample_flow(i, false, ipproto::UDP, Nat::Snat))
        .collect();
    let existing: Vec<_> = flows.iter().step_by(7).cloned().collect();
    ct.batch(FlowOp::Create, &existing, |i, e| {
        panic!("pre-create {i}: {e}")
    })
    .expect("batch");

    let mut refused = Vec::new();
    let report = ct
        .batch(FlowOp::Create, &flows, |i, e| refused.push((i, e)))
        .expect("batch");
    let expected: Vec<_> = (0..3000).step_by(7).map(|i| (i, Errno::EEXIST)).collect();
    assert_eq!(refused, expected);
    assert_eq!(report.applied as usize, 3000 - existing.len());
    assert_eq!(count(&mut ct), 3000);

    // Delete every even one, then a batch over all: the even ones are ENOENT.
    let evens: Vec<_> = flows.iter().step_by(2).cloned().collect();
    ct.batch(FlowOp::Delete, &evens, |i, e| panic!("delete {i}: {e}"))
        .expect("delete");
    let mut refused = Vec::new();
    ct.batch(FlowOp::Delete, &flows, |i, e| refused.push((i, e)))
        .expect("delete all");
    let expected: Vec<_> = (0..3000).step_by(2).map(|i| (i, Errno::ENOENT)).collect();
    assert_eq!(refused, expected);
    assert_eq!(count(&mut ct), 0);
}

/// Review finding: the request sequence number wraps at 2^32. A batch across the wrap
/// must still blame each error on the right entry, and a flush right at the wrap must
/// still be answered.
#[test]
fn sequence_numbers_wrap_cleanly() {
    let Some(t) = TestNetns::new("seqwrap") else {
        return;
    };
    let mut ct = Conntrack::open_in(&t.ns).expect("socket");
    let flows: Vec<_> = (0..40)
        .map(|i| sample_flow(i, false, ipproto::UDP, Nat::None))
        .collect();
    ct.batch(FlowOp::Create, &flows[..20], |i, e| {
        panic!("pre-create {i}: {e}")
    })
    .expect("batch");
    ct.set_sequence(u32::MAX - 5);
    let mut refused = Vec::new();
    ct.batch(FlowOp::Create, &flows, |i, e| refused.push((i, e)))
        .expect("batch across the wrap");
    let expected: Vec<_> = (0..20).map(|i| (i, Errno::EEXIST)).collect();
    assert_eq!(refused, expected);
    ct.set_sequence(u32::MAX);
    ct.flush(None).expect("flush at the wrap is answered");
    assert_eq!(count(&mut ct), 0);
}
