//! The configuration's parser and checks: good files, and every class of bad one.

use super::*;

const GOOD: &str = r#"
node = "fw1"
[sync]
interface = "eth3"
local = "198.18.0.1:3780"
peers = ["198.18.0.2:3780"]
key_file = "/etc/ctsync/cluster.key"
[control]
socket = "/run/ctsync/ctsync.sock"
"#;

#[test]
fn the_minimal_config_parses() {
    let c = Config::parse(GOOD, Path::new("ctsync.toml")).unwrap();
    assert_eq!(c.node, "fw1");
    assert_eq!(c.sync.mode, Mode::HotStandby);
    assert_eq!(c.role, Role::Backup);
}

#[test]
fn the_role_at_start_is_the_cores_role() {
    let c = Config::parse(&format!("role = \"fault\"\n{GOOD}"), Path::new("a.toml")).unwrap();
    assert_eq!(c.role, Role::Fault);
    let e = Config::parse(&format!("role = \"boss\"\n{GOOD}"), Path::new("a.toml")).unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.starts_with("a.toml:1:") && msg.contains("`backup`"),
        "{msg}"
    );
}

#[test]
fn the_mode_is_the_cores_mode_in_kebab_case() {
    let with = |m: &str| {
        Config::parse(
            &GOOD.replace(
                "key_file = \"/etc/ctsync/cluster.key\"",
                &format!("key_file = \"/etc/ctsync/cluster.key\"\nmode = \"{m}\""),
            ),
            Path::new("a.toml"),
        )
    };
    assert_eq!(with("hot-standby").unwrap().sync.mode, Mode::HotStandby);
    assert_eq!(with("commit").unwrap().sync.mode, Mode::Commit);
    let msg = format!("{:#}", with("HotStandby").unwrap_err());
    assert!(
        msg.starts_with("a.toml:8:") && msg.contains("`hot-standby`"),
        "{msg}"
    );
}

#[test]
fn the_core_config_takes_ids_mode_timers_and_limits_from_the_file() {
    let text = GOOD
        .replace(
            "key_file = \"/etc/ctsync/cluster.key\"",
            "key_file = \"/etc/ctsync/cluster.key\"\nmode = \"commit\"\nmax_flows = 0",
        )
        .replace("[control]", "[timers]\nalive_ms = 250\n[control]");
    let c = Config::parse(&text, Path::new("ctsync.toml")).unwrap();
    let core = c.core();
    assert_eq!(core.node, 0xc612_0001);
    assert_eq!(core.peers, vec![0xc612_0002]);
    assert_eq!(core.mode, Mode::Commit);
    assert_eq!(core.alive_interval, Duration::from_millis(250));
    assert_eq!(core.dead_interval, Duration::from_millis(3000));
    assert_eq!(core.max_flows, 1, "at least one flow");
    assert_eq!(
        core.filter.never.len(),
        2,
        "the sync addresses are never replicated"
    );
}

#[test]
fn errors_name_file_line_and_expectation() {
    let e =
        Config::parse(&GOOD.replace("interface", "interfaec"), Path::new("a.toml")).unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.starts_with("a.toml:4:") && msg.contains("interfaec"),
        "{msg}"
    );
    let e = Config::parse(
        &GOOD.replace("198.18.0.2:3780", "198.18.0.300:3780"),
        Path::new("a.toml"),
    )
    .unwrap_err();
    assert!(format!("{e:#}").starts_with("a.toml:6:"), "{e:#}");
    let e = Config::parse(
        &GOOD.replace("198.18.0.2", "198.18.0.1"),
        Path::new("a.toml"),
    )
    .unwrap_err();
    assert!(format!("{e:#}").contains("own address"), "{e:#}");
}

#[test]
fn a_huge_or_zero_duration_is_an_error_with_its_line() {
    // i64::MAX, the largest integer TOML has: as milliseconds or seconds it would
    // overflow the clock when first scheduled.
    const HUGE: &str = "9223372036854775807";
    for (section, key) in [
        ("sync", "kernel_resync_secs"),
        ("timers", "alive_ms"),
        ("timers", "dead_ms"),
        ("timers", "refresh_secs"),
        ("timers", "digest_secs"),
        ("timers", "shorten_timeout_secs"),
    ] {
        // `[timers]` goes last, its key on line 11; `[sync]`'s key on line 8.
        let (text, line) = if section == "sync" {
            let t = GOOD.replace(
                "key_file = \"/etc/ctsync/cluster.key\"",
                &format!("key_file = \"/etc/ctsync/cluster.key\"\n{key} = VALUE"),
            );
            (t, 8)
        } else {
            (format!("{GOOD}[timers]\n{key} = VALUE\n"), 11)
        };
        for value in [HUGE, "86400001"] {
            let e =
                Config::parse(&text.replace("VALUE", value), Path::new("a.toml")).expect_err(key);
            let msg = format!("{e:#}");
            assert!(
                msg.starts_with(&format!("a.toml:{line}:")) && msg.contains(key),
                "{key} = {value}: {msg}"
            );
        }
        if key != "kernel_resync_secs" {
            let e = Config::parse(&text.replace("VALUE", "0"), Path::new("a.toml")).expect_err(key);
            assert!(format!("{e:#}").contains(key), "{key} = 0: {e:#}");
        }
    }
    let c = Config::parse(
        &format!("{GOOD}[timers]\ndead_ms = 86400000\ndigest_secs = 86400\n"),
        Path::new("a.toml"),
    )
    .unwrap();
    assert_eq!(c.core().dead_interval, Duration::from_secs(DAY_SECS));
}

#[test]
fn a_bare_metrics_port_listens_on_loopback() {
    let listen = |v: &str| {
        Config::parse(
            &format!("{GOOD}[metrics]\nlisten = {v}\n"),
            Path::new("a.toml"),
        )
        .map(|c| c.metrics.map(|m| m.listen.to_string()))
    };
    for port in ["9780", "\"9780\"", "\":9780\""] {
        assert_eq!(
            listen(port).unwrap().as_deref(),
            Some("127.0.0.1:9780"),
            "{port}"
        );
    }
    assert_eq!(
        listen("\"[::1]:9780\"").unwrap().as_deref(),
        Some("[::1]:9780")
    );
    assert_eq!(
        listen("\"0.0.0.0:9780\"").unwrap().as_deref(),
        Some("0.0.0.0:9780"),
        "an address is taken as written"
    );
    for bad in ["\"eth0\"", "70000", "\"198.18.0.1\""] {
        let msg = format!("{:#}", listen(bad).unwrap_err());
        assert!(
            msg.starts_with("a.toml:11:") && msg.contains("address:port"),
            "{bad}: {msg}"
        );
    }
}

#[test]
fn key_files_must_be_private_and_well_formed() {
    let dir = std::env::temp_dir().join(format!("ctsync-key-test-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let p = dir.join("k");
    fs::write(&p, format!("{}\n", new_key().unwrap())).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
    assert!(format!("{:#}", read_key(&p).unwrap_err()).contains("chmod 600"));
    fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(read_key(&p).unwrap().len(), 32);
    std::os::unix::fs::chown(&p, Some(65534), None)
        .expect("chown needs root: run the tests as root (README, Tests)");
    let e = format!("{:#}", read_key(&p).unwrap_err());
    assert!(
        e.contains("uid 65534") && e.contains(&format!("chown root {}", p.display())),
        "{e}"
    );
    std::os::unix::fs::chown(&p, Some(0), None).unwrap();
    fs::write(&p, "abc\n").unwrap();
    assert!(format!("{:#}", read_key(&p).unwrap_err()).contains("64 hex digits"));
    fs::remove_dir_all(&dir).unwrap();
}
