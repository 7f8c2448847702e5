//! Writes the seed corpora of the fuzz targets: encoded ctnetlink messages (dump-style
//! flows of every shape the load tool makes, requests, an expectation) for
//! `ctnetlink_decode`, and sync-protocol frame bodies and compact flows for `wire_decode`
//! and `sync_datagram`. Run from the repository root: `cargo run --example fuzz_seeds`

use std::path::PathBuf;

use ctnetlink::encode::{self, ExpOp, FlowOp};
use ctnetlink::{Expectation, Name};
use ctsync_lab::synth::{self, Mix};

fn main() -> std::io::Result<()> {
    write_wire_seeds()?;
    let dir = PathBuf::from("fuzz/corpus/ctnetlink_decode");
    std::fs::create_dir_all(&dir)?;
    let mut n = 0;
    let mut write = |bytes: &[u8]| -> std::io::Result<()> {
        n += 1;
        std::fs::write(dir.join(format!("seed-{n:03}")), bytes)
    };
    for i in 0..10 {
        let mut f = synth::flow(i, Mix::Realistic, 120);
        f.zone = (i % 3 == 0).then_some(7);
        f.mark = Some(i as u32);
        for op in [FlowOp::Full, FlowOp::Create, FlowOp::Update, FlowOp::Delete] {
            let mut buf = Vec::new();
            encode::encode_flow(&mut buf, op, &f, 1, 0);
            write(&buf)?;
        }
    }
    let f = synth::flow(0, Mix::TcpSnat, 120);
    let exp = Expectation {
        master: f.orig,
        tuple: f.reply,
        mask: f.orig,
        timeout: Some(30),
        id: Some(1),
        helper: Name::new(b"ftp"),
        zone: None,
        flags: Some(0),
        class: Some(0),
        nat: None,
        function: None,
        other: Vec::new(),
    };
    let mut buf = Vec::new();
    encode::encode_expectation(&mut buf, ExpOp::Full, &exp, 1, 0);
    write(&buf)?;
    println!("wrote {n} seeds to {}", dir.display());
    Ok(())
}

fn write_wire_seeds() -> std::io::Result<()> {
    use ctsync_wire::frame::{FrameWriter, WireRole};
    use ctsync_wire::{Message, codec};
    let mut bodies: Vec<Vec<u8>> = Vec::new();
    let flows: Vec<_> = (0..6)
        .map(|i| synth::flow(i, Mix::Realistic, 120))
        .collect();
    let mut msgs = Vec::new();
    for (i, f) in flows.iter().enumerate() {
        let m = match i % 3 {
            0 => Message::FlowNew(Box::new(f.clone())),
            1 => Message::FlowUpdate(Box::new(f.clone())),
            _ => Message::FlowDelete(f.key()),
        };
        m.put(&mut msgs).map_err(std::io::Error::other)?;
    }
    for m in [
        Message::BulkBegin { id: 1 },
        Message::BulkEnd { id: 1, count: 6 },
        Message::Digest {
            count: 6,
            hashes: vec![0; 64],
        },
        Message::BucketRequest(vec![3, 9]),
        Message::BucketBegin { bucket: 3 },
        Message::BucketEnd { bucket: 3 },
        Message::ResyncRequest,
        Message::GroupJoin {
            generation: 1,
            seq: 6,
        },
    ] {
        let mut b = Vec::new();
        m.put(&mut b).map_err(std::io::Error::other)?;
        let mut body = Vec::new();
        FrameWriter::new(&mut body).data(0, 6, 1, &b);
        bodies.push(body);
    }
    let mut body = Vec::new();
    let mut w = FrameWriter::new(&mut body);
    w.ack(0, 3, &[(5, 7)]);
    w.nack(0, &[(3, 5)]);
    w.group_ack(0, 3, &[(5, 7)]);
    w.group_nack(0, &[(3, 5)]);
    w.alive(WireRole::Primary, true);
    w.data(0, 0, 6, &msgs);
    bodies.push(body);
    let mut body = Vec::new();
    FrameWriter::new(&mut body).hello(7, 1, 1, WireRole::Backup, false);
    bodies.push(body);
    for dir in ["fuzz/corpus/wire_decode", "fuzz/corpus/sync_datagram"] {
        std::fs::create_dir_all(dir)?;
        for (i, b) in bodies.iter().enumerate() {
            std::fs::write(format!("{dir}/frames-{i:02}"), b)?;
        }
    }
    for (i, f) in flows.iter().enumerate() {
        let mut b = Vec::new();
        codec::put_flow(&mut b, f).map_err(std::io::Error::other)?;
        std::fs::write(format!("fuzz/corpus/wire_decode/flow-{i:02}"), b)?;
    }
    Ok(())
}
