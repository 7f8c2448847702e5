//! Untrusted bytes into the ctnetlink decoders: never a panic, and whatever decodes
//! re-encodes to the same value (decode ∘ encode ∘ decode = decode).
#![no_main]

use ctnetlink::decode::{self, Body};
use ctnetlink::encode::{self, ExpOp, FlowOp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Whole datagrams, as a socket would deliver them.
    for m in decode::messages(data) {
        match m.map(|m| m.body) {
            Ok(Body::Conntrack { family, attrs, .. }) => check_flow(family, attrs),
            Ok(Body::Expectation { family, attrs, .. }) => check_expectation(family, attrs),
            _ => {}
        }
    }
    // Bare attribute streams, with the first byte as the family, to reach deeper faster.
    if let Some((&family, attrs)) = data.split_first() {
        check_flow(family, attrs);
        check_expectation(family, attrs);
    }
});

fn check_flow(family: u8, attrs: &[u8]) {
    let Ok(flow) = decode::decode_flow(family, attrs) else { return };
    let mut buf = Vec::new();
    encode::encode_flow(&mut buf, FlowOp::Full, &flow, 1, 0);
    let m = decode::messages(&buf).next().expect("one message").expect("re-encoded message decodes");
    let Body::Conntrack { family, attrs, .. } = m.body else { panic!("re-encoded as {:?}", m.body) };
    let again = decode::decode_flow(family, attrs).expect("re-encoded flow decodes");
    assert_eq!(again, flow);
    // Requests for every operation encode without panicking and keep the key.
    for op in [FlowOp::Create, FlowOp::Update, FlowOp::Delete, FlowOp::Get] {
        buf.clear();
        encode::encode_flow(&mut buf, op, &flow, 2, 0);
        let m = decode::messages(&buf).next().expect("one").expect("request decodes");
        let Body::Conntrack { family, attrs, .. } = m.body else { panic!() };
        assert_eq!(decode::decode_flow(family, attrs).expect("request flow decodes").key(), flow.key());
    }
}

fn check_expectation(family: u8, attrs: &[u8]) {
    let Ok(exp) = decode::decode_expectation(family, attrs) else { return };
    let mut buf = Vec::new();
    encode::encode_expectation(&mut buf, ExpOp::Full, &exp, 1, 0);
    let m = decode::messages(&buf).next().expect("one message").expect("decodes");
    let Body::Expectation { family, attrs, .. } = m.body else { panic!("re-encoded as {:?}", m.body) };
    assert_eq!(decode::decode_expectation(family, attrs).expect("re-encoded expectation decodes"), exp);
}
