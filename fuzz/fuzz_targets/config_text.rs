//! Untrusted text into the configuration parser, keepalived's FIFO line parser and the
//! control request parser: never a panic; an accepted configuration yields a filter, and
//! its errors name the file.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match ctsync::config::Config::parse(text, Path::new("fuzz.toml")) {
        Ok(cfg) => {
            let _ = cfg.core_filter();
        }
        Err(e) => assert!(format!("{e:#}").starts_with("fuzz.toml"), "{e:#}"),
    }
    for line in text.lines() {
        let _ = ctsync::keepalived::parse_line(line);
        let _ = ctsync::control::Request::parse(line);
    }
});
