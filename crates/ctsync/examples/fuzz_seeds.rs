//! Writes the seed corpus of the `ctnetlink_decode` fuzz target: one file per encoded
//! message (dump-style flows of every shape the load tool makes, requests, an
//! expectation). Run from the repository root:
//! `cargo run --example fuzz_seeds -- fuzz/corpus/ctnetlink_decode`

use std::path::PathBuf;

use ctnetlink::encode::{self, ExpOp, FlowOp};
use ctnetlink::{Expectation, Name};
use ctsync::synth::{self, Mix};

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/corpus/ctnetlink_decode".into()),
    );
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
