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

/// [`GOOD`] with a second link (`[[sync.link]]` on line 8, its keys on 9-11) and timers
/// that allow several links.
fn two_links(link: &str) -> String {
    GOOD.replace("[control]", &format!("[[sync.link]]\n{link}\n[control]"))
        + "[timers]\nalive_ms = 100\ndead_ms = 600\n"
}

const LINK2: &str =
    "interface = \"eth4\"\nlocal = \"198.18.1.1:3780\"\npeers = [\"198.18.1.2:3780\"]";

#[test]
fn further_sync_links_follow_the_first() {
    let c = Config::parse(&two_links(LINK2), Path::new("a.toml")).unwrap();
    let links = c.sync.links();
    assert_eq!(links.len(), 2);
    assert_eq!(links[0].interface, "eth3");
    assert_eq!(links[1].interface, "eth4");
    assert_eq!(links[1].peers[0].to_string(), "198.18.1.2:3780");
    // The node ids stay the first link's; every link's addresses are never replicated.
    let core = c.core();
    assert_eq!(core.node, 0xc612_0001);
    assert_eq!(core.peers, vec![0xc612_0002]);
    assert_eq!(core.filter.never.len(), 4);
    // One link: as before.
    let one = Config::parse(GOOD, Path::new("a.toml")).unwrap();
    assert_eq!(one.sync.links().len(), 1);
    assert_eq!(one.sync.links()[0].local, one.sync.local);
}

#[test]
fn a_further_link_that_disagrees_is_an_error_at_its_table() {
    let bad = |link: &str| {
        format!(
            "{:#}",
            Config::parse(&two_links(link), Path::new("a.toml")).unwrap_err()
        )
    };
    let msg = bad(
        "interface = \"eth4\"\nlocal = \"198.18.1.1:3780\"\npeers = [\"198.18.1.2:3780\", \"198.18.1.3:3780\"]",
    );
    assert!(
        msg.starts_with("a.toml:8: [[sync.link]] 1 (link 2)")
            && msg.contains("2 peers and [sync] lists 1"),
        "{msg}"
    );
    let msg = bad(&LINK2.replace("eth4", "eth3"));
    assert!(
        msg.starts_with("a.toml:8:") && msg.contains("\"eth3\" like link 1"),
        "{msg}"
    );
    let msg = bad(&LINK2.replace("198.18.1.2", "198.18.0.2"));
    assert!(
        msg.starts_with("a.toml:8:") && msg.contains("198.18.0.2 is used twice (also in link 1)"),
        "{msg}"
    );
    let msg = bad(&LINK2.replace("198.18.1.1", "198.18.1.2"));
    assert!(msg.contains("used twice"), "{msg}");
    let msg = bad(&LINK2.replace("198.18.1.2:3780", "[2001:db8:1::2]:3780"));
    assert!(
        msg.starts_with("a.toml:8:") && msg.contains("one address family per link"),
        "{msg}"
    );
    let msg = bad(&format!("{LINK2}\nmtu = 1500"));
    assert!(
        msg.starts_with("a.toml:12:") && msg.contains("mtu"),
        "{msg}"
    );
    // An IPv6 second link beside an IPv4 first is fine.
    Config::parse(
        &two_links(
            "interface = \"eth4\"\nlocal = \"[2001:db8:1::1]:3780\"\npeers = [\"[2001:db8:1::2]:3780\"]",
        ),
        Path::new("a.toml"),
    )
    .unwrap();
}

#[test]
fn at_most_four_links_and_dead_ms_twice_alive_ms() {
    let link = |n: u8| {
        format!(
            "[[sync.link]]\ninterface = \"eth{}\"\nlocal = \"198.18.{n}.1:3780\"\npeers = [\"198.18.{n}.2:3780\"]\n",
            n + 3
        )
    };
    let with = |n: u8, timers: &str| {
        let links: String = (1..=n).map(link).collect();
        GOOD.replace("[control]", &format!("{links}[control]")) + timers
    };
    let t = "[timers]\nalive_ms = 100\ndead_ms = 600\n";
    Config::parse(&with(3, t), Path::new("a.toml")).unwrap();
    let msg = format!(
        "{:#}",
        Config::parse(&with(4, t), Path::new("a.toml")).unwrap_err()
    );
    // The fifth link's table: line 8 + 3 × 4.
    assert!(
        msg.starts_with("a.toml:20:") && msg.contains("at most 4"),
        "{msg}"
    );
    let msg = format!(
        "{:#}",
        Config::parse(
            &with(1, "[timers]\nalive_ms = 400\ndead_ms = 700\n"),
            Path::new("a.toml")
        )
        .unwrap_err()
    );
    assert!(msg.contains("at least twice alive_ms"), "{msg}");
    // One link keeps the old rule.
    Config::parse(
        &format!("{GOOD}[timers]\nalive_ms = 400\ndead_ms = 700\n"),
        Path::new("a.toml"),
    )
    .unwrap();
}

#[test]
fn a_link_local_sync_address_may_name_its_interface() {
    let with = |local: &str, peer: &str| {
        Config::parse(
            &GOOD
                .replace("198.18.0.1:3780", local)
                .replace("198.18.0.2:3780", peer),
            Path::new("a.toml"),
        )
    };
    let c = with("[fe80::1%eth3]:3780", "[fe80::2]:3780").unwrap();
    assert!(is_link_local(&c.sync.local) && is_link_local(&c.sync.peers[0]));
    // The scope is the link's interface's, set when the daemon binds.
    assert_eq!(c.sync.local.to_string(), "[fe80::1]:3780");
    let c = with("[fe80::1%7]:3780", "[fe80::2%eth3]:3780").unwrap();
    assert_eq!(c.sync.local.to_string(), "[fe80::1%7]:3780");

    let e = format!(
        "{:#}",
        with("[fe80::1%eth9]:3780", "[fe80::2]:3780").unwrap_err()
    );
    assert!(
        e.starts_with("a.toml:5:") && e.contains("%eth9") && e.contains("\"eth3\""),
        "{e}"
    );
    let e = format!(
        "{:#}",
        with("[2001:db8::1%eth3]:3780", "[2001:db8::2]:3780").unwrap_err()
    );
    assert!(e.contains("not a link-local address"), "{e}");
    let e = format!(
        "{:#}",
        with("[fe80::1%]:3780", "[fe80::2]:3780").unwrap_err()
    );
    assert!(
        e.starts_with("a.toml:5:") && e.contains("invalid socket address"),
        "{e}"
    );
}

#[test]
fn a_multicast_group_is_checked_and_turns_the_cores_group_on() {
    let with = |g: &str| {
        Config::parse(
            &GOOD.replace(
                "key_file = \"/etc/ctsync/cluster.key\"",
                &format!("key_file = \"/etc/ctsync/cluster.key\"\ngroup = \"{g}\""),
            ),
            Path::new("a.toml"),
        )
    };
    assert!(
        !Config::parse(GOOD, Path::new("a.toml"))
            .unwrap()
            .core()
            .group
    );
    let c = with("239.255.1.1:3781").unwrap();
    assert_eq!(c.sync.group, Some("239.255.1.1:3781".parse().unwrap()));
    assert!(c.core().group);
    for (bad, says) in [
        ("198.18.0.9:3781", "not a multicast address"),
        ("[ff02::1:3]:3781", "not of the family"),
        ("239.255.1.1:0", "a port is needed"),
    ] {
        let msg = format!("{:#}", with(bad).unwrap_err());
        assert!(
            msg.starts_with("a.toml:8:") && msg.contains(says),
            "{bad}: {msg}"
        );
    }
}

const CONNTRACKD: &str = r#"
[conntrackd]
dialect = "conntrackd"
interface = "eth3"
local = "198.18.0.1:3790"
peer = "198.18.0.2:3790"
"#;

#[test]
fn a_conntrackd_peer_is_opt_in_and_checked() {
    let c = Config::parse(&format!("{GOOD}{CONNTRACKD}"), Path::new("a.toml")).unwrap();
    let p = c.conntrackd.as_ref().unwrap();
    assert_eq!(p.peer.unwrap().to_string(), "198.18.0.2:3790");
    assert_eq!((p.ack_window, p.startup_resync), (300, true));
    // Its addresses are never replicated (the sync traffic itself).
    let f = c.core_filter();
    assert!(f.never.iter().any(|(a, _)| a.to_string() == "198.18.0.2"));
    // A two-node mixed cluster needs no native peer.
    let alone = GOOD.replace("peers = [\"198.18.0.2:3780\"]", "peers = []");
    assert!(Config::parse(&format!("{alone}{CONNTRACKD}"), Path::new("a.toml")).is_ok());
    assert!(Config::parse(&alone, Path::new("a.toml")).is_err());
    // The dialect must be said, and right.
    let e = Config::parse(
        &format!(
            "{GOOD}{}",
            CONNTRACKD.replace("\"conntrackd\"\ni", "\"ftfw\"\ni")
        ),
        Path::new("a.toml"),
    )
    .unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("a.toml:") && msg.contains("\"conntrackd\""),
        "{msg}"
    );
    let without = CONNTRACKD.replace("dialect = \"conntrackd\"\n", "");
    assert!(Config::parse(&format!("{GOOD}{without}"), Path::new("a.toml")).is_err());
    // Not on [sync] local's address and port.
    let clash = CONNTRACKD.replace("198.18.0.1:3790", "198.18.0.1:3780");
    let e = Config::parse(&format!("{GOOD}{clash}"), Path::new("a.toml")).unwrap_err();
    assert!(format!("{e:#}").contains("must differ"), "{e:#}");
}

/// Further links to conntrackd (its further UDP or Multicast blocks): each checked as
/// the section's own, each on its own interface and address, four at most; their
/// addresses are never replicated either.
#[test]
fn further_conntrackd_links_are_checked_like_the_first() {
    let two = format!(
        "{CONNTRACKD}[[conntrackd.link]]\ninterface = \"eth4\"\nlocal = \"198.18.1.1:3790\"\npeer = \"198.18.1.2:3790\"\n"
    );
    let c = Config::parse(&format!("{GOOD}{two}"), Path::new("a.toml")).unwrap();
    let p = c.conntrackd.as_ref().unwrap();
    let links = p.links();
    assert_eq!(links.len(), 2);
    assert_eq!(links[1].interface, "eth4");
    assert!(matches!(
        links[1].transport(),
        Some(ConntrackdTransport::Udp { peer, .. }) if peer.to_string() == "198.18.1.2:3790"
    ));
    let f = c.core_filter();
    assert!(f.never.iter().any(|(a, _)| a.to_string() == "198.18.1.2"));
    let err = |extra: &str| {
        let text = format!("{GOOD}{CONNTRACKD}{extra}");
        let e = Config::parse(&text, Path::new("a.toml")).unwrap_err();
        format!("{e:#}")
    };
    let header_line = GOOD.lines().count() + CONNTRACKD.lines().count() + 1;
    let msg = err(
        "[[conntrackd.link]]\ninterface = \"eth3\"\nlocal = \"198.18.1.1:3790\"\npeer = \"198.18.1.2:3790\"\n",
    );
    assert!(
        msg.starts_with(&format!(
            "a.toml:{header_line}: [[conntrackd.link]] 1 (link 2)"
        )) && msg.contains("its own interface"),
        "{msg}"
    );
    let msg = err(
        "[[conntrackd.link]]\ninterface = \"eth4\"\nlocal = \"198.18.0.1:3790\"\npeer = \"198.18.1.2:3790\"\n",
    );
    assert!(msg.contains("another link's too"), "{msg}");
    let msg = err(
        "[[conntrackd.link]]\ninterface = \"eth4\"\nlocal = \"198.18.1.1:3790\"\ngroup = \"239.255.1.1:3790\"\n",
    );
    assert!(
        msg.contains("[[conntrackd.link]] 1") && msg.contains("with group"),
        "{msg}"
    );
    let msg = err("[[conntrackd.link]]\ninterface = \"eth4\"\n");
    assert!(msg.contains("needs local and peer"), "{msg}");
    let five: String = (4..8)
        .map(|i| {
            format!(
                "[[conntrackd.link]]\ninterface = \"eth{i}\"\nlocal = \"198.18.{i}.1:3790\"\npeer = \"198.18.{i}.2:3790\"\n"
            )
        })
        .collect();
    let msg = err(&five);
    assert!(msg.contains("5 links: at most 4"), "{msg}");
}

const NAMESPACES: &str = r#"
[namespaces]
match = "qrouter-*"
role = "keepalived-state"
state_file = "/var/lib/neutron/ha_confs/{id}/state"
"#;

#[test]
fn namespaces_parse_and_name_their_ids() {
    let c = Config::parse(&format!("{GOOD}{NAMESPACES}"), Path::new("n.toml")).unwrap();
    let n = c.namespaces.expect("[namespaces]");
    assert_eq!(n.role, RoleSource::KeepalivedState);
    assert_eq!(n.id_of("qrouter-4f1c"), Some("4f1c"));
    assert!(
        Config::parse(GOOD, Path::new("n.toml"))
            .unwrap()
            .namespaces
            .is_none()
    );
}

#[test]
fn namespaces_take_roles_from_their_keepalived_fifos() {
    let fifos = NAMESPACES.replace(
        "role = \"keepalived-state\"\nstate_file = \"/var/lib/neutron/ha_confs/{id}/state\"",
        "role = \"keepalived-fifo\"\nnotify_fifo = \"/run/ctsync/fifo/{id}\"",
    );
    let c = Config::parse(&format!("{GOOD}{fifos}"), Path::new("n.toml")).unwrap();
    let n = c.namespaces.expect("[namespaces]");
    assert_eq!(n.role, RoleSource::KeepalivedFifo);
    assert_eq!(
        n.notify_fifo("4f1c"),
        Some(PathBuf::from("/run/ctsync/fifo/4f1c"))
    );
    // A FIFO without its path, and a state file given with FIFOs, name the key.
    let without = fifos.replace("notify_fifo = \"/run/ctsync/fifo/{id}\"", "");
    let e = Config::parse(&format!("{GOOD}{without}"), Path::new("n.toml")).unwrap_err();
    assert!(format!("{e:#}").contains("needs notify_fifo"), "{e:#}");
    let both = format!("{fifos}state_file = \"/var/lib/x/{{id}}/state\"\n");
    let e = Config::parse(&format!("{GOOD}{both}"), Path::new("n.toml")).unwrap_err();
    assert!(format!("{e:#}").contains("state_file is not used"), "{e:#}");
}

#[test]
fn namespaces_refuse_what_they_do_not_support_yet() {
    let bad_match = NAMESPACES.replace("qrouter-*", "qrouter");
    let e = Config::parse(&format!("{GOOD}{bad_match}"), Path::new("n.toml")).unwrap_err();
    assert!(format!("{e:#}").starts_with("n.toml:"), "{e:#}");
    let bad_role = NAMESPACES.replace("keepalived-state", "vrrp");
    assert!(Config::parse(&format!("{GOOD}{bad_role}"), Path::new("n.toml")).is_err());
    // [keepalived] is one table's: the error says where each router's files go.
    let extra = "[keepalived]\ntrack_file = \"/run/t\"\n";
    let text = format!("{GOOD}{NAMESPACES}{extra}");
    let e = Config::parse(&text, Path::new("n.toml")).unwrap_err();
    let line = text.lines().position(|l| l == "[keepalived]").unwrap() + 1;
    assert!(
        format!("{e:#}").starts_with(&format!(
            "n.toml:{line}: [keepalived] is for a daemon of one table"
        )) && format!("{e:#}").contains("track_file"),
        "{e:#}"
    );
    let extra = CONNTRACKD;
    let e = Config::parse(&format!("{GOOD}{NAMESPACES}{extra}"), Path::new("n.toml")).unwrap_err();
    assert!(
        format!("{e:#}").contains("[conntrackd] is not supported with [namespaces]"),
        "{e:#}"
    );
    // Each router's own readiness and staleness files.
    let tracked = format!(
        "{NAMESPACES}track_file = \"/run/ctsync/track/{{id}}\"\nstale_file = \"/run/ctsync/stale/{{id}}\"\nstale_after_secs = 30\n"
    );
    let c = Config::parse(&format!("{GOOD}{tracked}"), Path::new("n.toml")).unwrap();
    let n = c.namespaces.expect("[namespaces]");
    assert_eq!(
        n.track_file("4f1c"),
        Some(PathBuf::from("/run/ctsync/track/4f1c"))
    );
    assert!(n.stale_file("4f1c").is_some());
}

/// Redundant sync links serve a daemon of namespaces too: every router, and the host
/// link, on each of them.
#[test]
fn namespaces_take_further_sync_links() {
    let c = Config::parse(
        &format!("{}{NAMESPACES}", two_links(LINK2)),
        Path::new("n.toml"),
    )
    .unwrap();
    assert!(c.namespaces.is_some());
    assert_eq!(c.sync.links().len(), 2);
}

#[test]
fn a_conntrackd_peer_on_a_multicast_group() {
    // GOOD's 9 lines and an empty one, then the section: [conntrackd] is line 11.
    let group = "\n[conntrackd]\ndialect = \"conntrackd\"\ninterface = \"eth3\"\ngroup = \"239.255.1.1:3780\"\n";
    let c = Config::parse(&format!("{GOOD}{group}"), Path::new("a.toml")).unwrap();
    let p = c.conntrackd.as_ref().unwrap();
    assert_eq!(
        p.transport(),
        Some(ConntrackdTransport::Multicast {
            group: "239.255.1.1:3780".parse().unwrap(),
            peer: None
        })
    );
    // The group's own flows are never replicated.
    assert!(
        c.core_filter()
            .never
            .iter()
            .any(|(a, _)| a.to_string() == "239.255.1.1")
    );
    // A named sender: an address alone.
    let named = format!("{GOOD}{group}peer = \"198.18.0.2\"\n");
    let c = Config::parse(&named, Path::new("a.toml")).unwrap();
    assert_eq!(
        c.conntrackd.unwrap().transport(),
        Some(ConntrackdTransport::Multicast {
            group: "239.255.1.1:3780".parse().unwrap(),
            peer: Some("198.18.0.2".parse().unwrap())
        })
    );
    let v6 = group.replace("239.255.1.1:3780", "[ff02::1:3780]:3780");
    assert!(
        Config::parse(
            &format!("{GOOD}{v6}peer = \"2001:db8::2\"\n"),
            Path::new("a.toml")
        )
        .is_ok()
    );
    for (extra, says, line) in [
        (
            "local = \"198.18.0.1:3790\"\n",
            "a multicast link has no local address",
            15,
        ),
        ("peer = \"198.18.0.2:3780\"\n", "an address alone", 15),
        ("peer = \"2001:db8::2\"\n", "different families", 15),
    ] {
        let e = Config::parse(&format!("{GOOD}{group}{extra}"), Path::new("a.toml")).unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.starts_with(&format!("a.toml:{line}:")) && msg.contains(says),
            "{extra}: {msg}"
        );
    }
    for (bad, says) in [
        ("198.18.0.9:3780", "not a multicast address"),
        ("239.255.1.1:0", "a port is needed"),
    ] {
        let e = Config::parse(
            &format!("{GOOD}{}", group.replace("239.255.1.1:3780", bad)),
            Path::new("a.toml"),
        )
        .unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.starts_with("a.toml:14:") && msg.contains(says),
            "{bad}: {msg}"
        );
    }
    // Neither transport: the section's line.
    let none = "\n[conntrackd]\ndialect = \"conntrackd\"\ninterface = \"eth3\"\n";
    let e = Config::parse(&format!("{GOOD}{none}"), Path::new("a.toml")).unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.starts_with("a.toml:11:") && msg.contains("local and peer") && msg.contains("group"),
        "{msg}"
    );
    // Over UDP the peer needs its port.
    let e = Config::parse(
        &format!(
            "{GOOD}{}",
            CONNTRACKD.replace("198.18.0.2:3790", "198.18.0.2")
        ),
        Path::new("a.toml"),
    )
    .unwrap_err();
    assert!(format!("{e:#}").contains("has no port"), "{e:#}");
    // Not [sync]'s group.
    let same = GOOD.replace("key_file", "group = \"239.255.1.1:3780\"\nkey_file");
    let e = Config::parse(&format!("{same}{group}"), Path::new("a.toml")).unwrap_err();
    assert!(format!("{e:#}").contains("[sync] group too"), "{e:#}");
}
