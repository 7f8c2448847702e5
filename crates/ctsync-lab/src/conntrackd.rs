//! conntrackd, the incumbent, as the side-by-side benchmark runs it on the lab's
//! firewalls: FTFW over UDP on the sync link, its external cache committed on takeover
//! by its own `primary-backup.sh` from keepalived's notify hooks.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result};

use crate::cluster::SYNC_PORT;
use crate::process::run;

/// conntrackd.conf for firewall `i` (0 or 1) of a lab whose working directory is `dir`
/// (its log, lock file and control socket go there): FTFW over UDP to the other
/// firewall, or with `group` (`"239.255.x.y:port"` or `"[ff02::…]:port"`) over that
/// multicast group on the sync link; with `expectations`, `ExpectationSync On` (its expectations replicated
/// too, committed by `-c` after the flows); with `second_link` (UDP only), a second
/// dedicated link on `sync2` (198.18.254.0/24), which conntrackd sends on when `sync`
/// goes down.
pub fn config(
    i: usize,
    dir: &Path,
    group: Option<&str>,
    expectations: bool,
    second_link: bool,
) -> String {
    let link = match group.and_then(|g| g.rsplit_once(':')) {
        // IPv6: its address, and the interface (conntrackd ignores IPv6_interface).
        Some((addr, port)) if addr.starts_with('[') => format!(
            r#"    Multicast {{
        IPv6_address {}
        Group {port}
        Interface sync
        SndSocketBuffer 1249280
        RcvSocketBuffer 1249280
        Checksum on
    }}"#,
            addr.trim_matches(['[', ']'])
        ),
        Some((addr, port)) => format!(
            r#"    Multicast {{
        IPv4_address {addr}
        Group {port}
        IPv4_interface 198.18.255.{n}
        Interface sync
        SndSocketBuffer 1249280
        RcvSocketBuffer 1249280
        Checksum on
    }}"#,
            n = i + 1
        ),
        None => udp_block(i, "198.18.255", "sync"),
    };
    // A second dedicated link (UDP only), `sync2`: conntrackd sends on the first until
    // its interface goes down.
    let link = if second_link && group.is_none() {
        format!("{link}\n{}", udp_block(i, "198.18.254", "sync2"))
    } else {
        link
    };
    let options = if expectations {
        "    Options {\n        ExpectationSync On\n    }\n"
    } else {
        ""
    };
    format!(
        r#"Sync {{
    Mode FTFW {{
        DisableExternalCache off
    }}
{link}
{options}}}
General {{
    Systemd off
    HashSize 32768
    HashLimit 131072
    LogFile {dir}/fw{n}-conntrackd.log
    Syslog off
    LockFile {dir}/fw{n}.conntrackd.lock
    UNIX {{
        Path {dir}/fw{n}.conntrackd.ctl
    }}
    NetlinkBufferSize 2097152
    NetlinkBufferSizeMaxGrowth 8388608
    Filter From Userspace {{
        Protocol Accept {{
            TCP
            UDP
            ICMP
        }}
        Address Ignore {{
            IPv4_address 127.0.0.1
            IPv4_address 198.18.255.1
            IPv4_address 198.18.255.2
            IPv4_address 198.18.254.1
            IPv4_address 198.18.254.2
        }}
    }}
}}
"#,
        n = i + 1,
        dir = dir.display(),
    )
}

/// A `UDP` block for firewall `i` on the /24 `net` (its address `net.(i+1)`, the other
/// firewall's `net.(2-i)`), over device `dev`.
fn udp_block(i: usize, net: &str, dev: &str) -> String {
    format!(
        r#"    UDP {{
        IPv4_address {net}.{n}
        IPv4_Destination_Address {net}.{o}
        Port {SYNC_PORT}
        Interface {dev}
        SndSocketBuffer 1249280
        RcvSocketBuffer 1249280
        Checksum on
    }}"#,
        n = i + 1,
        o = 2 - i,
    )
}

/// Write conntrackd's own `primary-backup.sh` (Debian's example) to `path`, with the
/// lab's `conf` and `lock` file.
pub fn write_script(path: &Path, conf: &Path, lock: &Path) -> Result<()> {
    const SHIPPED: &str = "/usr/share/doc/conntrackd/examples/sync/primary-backup.sh";
    let text = fs::read_to_string(SHIPPED)
        .with_context(|| format!("reading {SHIPPED} (package conntrackd)"))?;
    let text = text
        .replace(
            "CONNTRACKD_CONFIG=/etc/conntrackd/conntrackd.conf",
            &format!("CONNTRACKD_CONFIG={}", conf.display()),
        )
        .replace(
            "CONNTRACKD_LOCK=/var/lock/conntrack.lock",
            &format!("CONNTRACKD_LOCK={}", lock.display()),
        );
    fs::write(path, text)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))?;
    Ok(())
}

/// Entries in the `which` cache (`internal` or `external`) of the conntrackd running in
/// namespace `ns` on `conf` (`conntrackd -s cache`).
pub fn cache_count(ns: &str, conf: &Path, which: &str) -> Option<usize> {
    let out = run(&[
        "ip",
        "netns",
        "exec",
        ns,
        "conntrackd",
        "-C",
        &conf.to_string_lossy(),
        "-s",
        "cache",
    ])
    .ok()?;
    // "cache:external  active objects:   50" (the first line of that cache).
    out.lines()
        .find(|l| l.starts_with(&format!("cache:{which}")))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|n| n.parse().ok())
}

/// The flows of `conntrack -L` text of protocol `proto` ("tcp", "udp") to port `service`: original
/// source port → the reply direction's destination port, the port SNAT gave the flow.
pub fn nat_ports(text: &str, proto: &str, service: u16) -> std::collections::BTreeMap<u16, u16> {
    let mut out = std::collections::BTreeMap::new();
    for line in text.lines() {
        if line.split_whitespace().next() != Some(proto) {
            continue;
        }
        let ports = |key: &str| -> Vec<u16> {
            line.split_whitespace()
                .filter_map(|w| w.strip_prefix(key)?.parse().ok())
                .collect()
        };
        let dports = ports("dport=");
        if let (Some(&sport), [to, nat, ..]) = (ports("sport=").first(), dports.as_slice())
            && *to == service
        {
            out.insert(sport, *nat);
        }
    }
    out
}

/// Commit the external cache of the conntrackd running in namespace `ns` on `conf` into
/// its kernel (`conntrackd -c`).
pub fn commit(ns: &str, conf: &Path) -> Result<()> {
    run(&[
        "ip",
        "netns",
        "exec",
        ns,
        "conntrackd",
        "-C",
        &conf.to_string_lossy(),
        "-c",
    ])
    .map(drop)
}

#[cfg(test)]
mod tests {
    #[test]
    fn nat_ports_reads_the_reply_directions_port() {
        let text = "udp      17 58 src=198.18.1.100 dst=198.19.0.100 sport=49733 dport=7001 \
            src=198.19.0.100 dst=198.19.0.1 sport=7001 dport=11618 [ASSURED] mark=0 use=1\n\
            tcp      6 431999 ESTABLISHED src=198.18.1.100 dst=198.19.0.100 sport=1 dport=7000 \
            src=198.19.0.100 dst=198.19.0.1 sport=7000 dport=2 [ASSURED] mark=0 use=1\n";
        let udp = super::nat_ports(text, "udp", 7001);
        assert_eq!(udp.into_iter().collect::<Vec<_>>(), vec![(49733, 11618)]);
        assert_eq!(super::nat_ports(text, "tcp", 7000).get(&1), Some(&2));
        assert!(super::nat_ports(text, "tcp", 7001).is_empty());
    }
}
