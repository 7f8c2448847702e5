//! `ctsync import` on a corpus of real conntrackd.conf files (tests/data/conntrackd,
//! README there says where each comes from): every output is a ctsync configuration
//! that `Config::parse` accepts (it does not read the key file; `ctsync run` does), every
//! "not mapped" entry points at a line of the input that says what it names, and the
//! list is as expected for three of them. Broken input is one line and exit status 2.

#![allow(clippy::panic, clippy::unwrap_used)] // test code: a panic is a failed assertion

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ctsync::config::Config;

fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/conntrackd");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "conf"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "the corpus is in {}", dir.display());
    files
}

fn ctsync_import(file: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ctsync"))
        .arg("import")
        .arg(file)
        .output()
        .unwrap()
}

/// A file without a Sync section (conntrackd's statistics mode) is not for ctsync.
const NO_SYNC: &str = "debian-stats.conf";

#[test]
fn every_corpus_file_gives_a_valid_ctsync_config() {
    for file in corpus() {
        let name = file.file_name().unwrap().to_str().unwrap();
        let out = ctsync_import(&file);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if name == NO_SYNC {
            assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{name}: {stderr}");
            assert!(stderr.contains("no `Sync"), "{name}: {stderr}");
            continue;
        }
        assert!(out.status.success(), "{name}: {stderr}");
        let toml = String::from_utf8(out.stdout).unwrap();
        let cfg = Config::parse(&toml, Path::new(name))
            .unwrap_or_else(|e| panic!("{name}: {e:#}\n{toml}"));
        assert_eq!(cfg.sync.key_file, Path::new(ctsync::import::KEY_FILE));
        assert!(stderr.contains("not mapped"), "{name}: {stderr}");

        // Each entry of the list names a setting that is on its line.
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let i = ctsync::import::import(text.as_bytes(), file.to_str().unwrap()).unwrap();
        assert_eq!(i.toml, toml, "{name}: the library and the command agree");
        for u in &i.unmapped {
            let first = u.setting.split_whitespace().next().unwrap();
            let line = lines[u.line - 1];
            assert!(
                line.contains(first),
                "{name}:{}: {:?} is not on {line:?}",
                u.line,
                u.setting
            );
            assert!(
                toml.contains(&format!("#   line {}: {}: ", u.line, u.setting)),
                "{name}: {u:?} is listed at the end of the output"
            );
        }
    }
}

/// `(line, first word)` of what did not map.
fn unmapped(name: &str) -> Vec<(usize, String)> {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/conntrackd")
        .join(name);
    let i = ctsync::import::import(&std::fs::read(file).unwrap(), name).unwrap();
    i.unmapped
        .iter()
        .map(|u| {
            let w = u.setting.split_whitespace().next().unwrap().to_string();
            (u.line, w)
        })
        .collect()
}

fn list(v: &[(usize, &str)]) -> Vec<(usize, String)> {
    v.iter().map(|(l, w)| (*l, w.to_string())).collect()
}

#[test]
fn neutrons_ha_router_config_maps_with_its_group_but_its_multicast_peer() {
    assert_eq!(
        unmapped("neutron-ha-router.conf"),
        list(&[
            (3, "HashSize"),
            (5, "Syslog"),
            (6, "LockFile"),
            (9, "Backlog"),
            (11, "SocketBufferSize"),
            (12, "SocketBufferSizeMaxGrown"),
            (32, "Multicast"),
            (37, "SndSocketBuffer"),
            (38, "RcvSocketBuffer"),
            (39, "Checksum"),
        ])
    );
    let text = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/conntrackd/neutron-ha-router.conf"),
    )
    .unwrap();
    let i = ctsync::import::import(&text, "neutron.conf").unwrap();
    let c = Config::parse(&i.toml, Path::new("neutron.toml")).unwrap();
    assert_eq!(c.sync.local.to_string(), "192.168.0.5:3783");
    assert_eq!(c.sync.interface, "eth0");
    // Its group is ctsync's group; the peers are what is left to fill in (line 32).
    assert_eq!(
        c.sync.group.map(|g| g.to_string()).as_deref(),
        Some("225.0.0.50:3783")
    );
    let f = c.core_filter();
    assert_eq!(f.protocols, vec![6, 132, 33, 17, 1, 58]);
    assert_eq!(f.prefixes.len(), 3);
    assert!(!f.prefixes_accept);
}

#[test]
fn a_udp_config_with_states_and_expectations_maps_its_link() {
    assert_eq!(
        unmapped("zillow-linuxgateway.conf"),
        list(&[
            (3, "ResendQueueSize"),
            (15, "SndSocketBuffer"),
            (16, "RcvSocketBuffer"),
            (17, "Checksum"),
            (25, "Nice"),
            (26, "HashSize"),
            (28, "LogFile"),
            (29, "LockFile"),
            (32, "Backlog"),
            (34, "NetlinkBufferSize"),
            (35, "NetlinkBufferSizeMaxGrowth"),
        ])
    );
}

#[test]
fn debians_alarm_example_lists_its_alarm_timers() {
    let u = unmapped("debian-alarm.conf");
    assert_eq!(
        u[..4],
        list(&[
            (11, "RefreshTime"),
            (18, "CacheTimeout"),
            (53, "Multicast"),
            (91, "SndSocketBuffer")
        ])[..]
    );
    assert_eq!(u.len(), 11);
}

/// Run `ctsync import FILE`: it must fail with status 2 and one line, returned.
fn fails(file: &Path) -> String {
    let out = ctsync_import(file);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{}: {err}", file.display());
    assert!(out.stdout.is_empty());
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.starts_with("ctsync: "), "{err}");
    err
}

#[test]
fn unreadable_or_malformed_files_are_one_line_and_status_2() {
    let e = fails(Path::new("/nonexistent/conntrackd.conf"));
    assert!(
        e.contains("cannot read /nonexistent/conntrackd.conf") && e.contains("expected"),
        "{e}"
    );
    let dir = std::env::temp_dir().join(format!("ctsync-import-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let p = write("binary.conf", &[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0]);
    let e = fails(&p);
    assert!(e.contains(&format!("{}:1: ", p.display())), "{e}");
    let p = write("open.conf", b"Sync {\n  Mode FTFW {\n  }\n");
    let e = fails(&p);
    assert!(
        e.contains(&format!("{}:1: ", p.display())) && e.contains("never closed"),
        "{e}"
    );
    let p = write(
        "port.conf",
        b"Sync {\n  UDP {\n    IPv4_address 10.0.0.1\n    Port eighty\n  }\n}\n",
    );
    let e = fails(&p);
    assert!(
        e.contains(&format!(
            "{}:4: Port eighty: expected a whole number",
            p.display()
        )),
        "{e}"
    );
    let e = fails(&dir);
    assert!(e.contains("cannot read"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
