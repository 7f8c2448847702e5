//! Untrusted bytes into the sync protocol's decoders: frames, messages and the compact
//! flow codec. Never a panic; whatever decodes re-encodes to the same value.
#![no_main]

use ctsync_wire::codec::{self, Reader};
use ctsync_wire::frame::{DataMessages, Frame, frames};
use ctsync_wire::{Header, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Header::parse(data);
    for f in frames(data) {
        if let Ok(Frame::Data { count, messages, .. }) = f {
            for m in DataMessages::new(messages, count).flatten().flatten() {
                let mut buf = Vec::new();
                if m.put(&mut buf).is_ok() {
                    let again = Message::read(&mut Reader::new(&buf)).expect("re-encoded message decodes");
                    assert_eq!(again, Some(m));
                }
            }
        }
    }
    if let Ok(f) = codec::read_flow(&mut Reader::new(data)) {
        let mut buf = Vec::new();
        codec::put_flow(&mut buf, &f).expect("a decoded flow encodes");
        let mut r = Reader::new(&buf);
        let again = codec::read_flow(&mut r).expect("re-encoded flow decodes");
        assert_eq!(r.remaining(), 0);
        assert_eq!(again, codec::normalize(&f));
    }
});
