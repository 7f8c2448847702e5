//! A stateful NAT firewall between a client and a server, as every lab with keepalived
//! builds it: the two segments (a bridge in the client's namespace and one in the
//! server's, a veth from each to every firewall, `lan` and `wan` on the firewall's
//! side), the firewall's nftables rules and sysctls, keepalived in its namespace, and
//! what the labs read back (virtual addresses held, the lab's sessions in a kernel,
//! logs).
//!
//! [`crate::cluster`] puts two or more firewalls between one client and one server;
//! [`crate::routers`] puts a pair of them (a Neutron router's two replicas) in front of
//! each of many clients and servers, every router with the same addresses.
//!
//! ```text
//!                 LAN 198.18.1.0/24              WAN 198.19.0.0/24
//!                     2001:db8:1::/64                2001:db8:2::/64
//!                 VIP 198.18.1.1, 2001:db8:1::1  VIP 198.19.0.1, 2001:db8:2::1
//!                                                (SNAT address; DNAT :8000/:8001)
//!   client ─ br0 ─┬─ lan [fw1] wan ─┬─ br0 ─ server
//!   .100, ::100   ├─ lan [fw2] wan ─┤         .100, ::100
//!                 └─ …              ┘
//! ```
//!
//! Firewall `i` (from 0) has `.{i+2}` on both sides. Its rules: forward policy drop,
//! established/related accepted, new connections only from LAN to WAN or to a DNAT'd
//! port, SNAT of the LAN to the WAN virtual address with random ports, the WAN virtual
//! address's ports 8000/8001 DNAT'd to the client's host (198.18.1.100:7000/7001, a
//! floating IP), and `nf_conntrack_tcp_loose=0` so that nothing is picked up mid-stream.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::process::run;

/// The LAN's virtual address (the client's gateway).
pub const LAN_VIP: &str = "198.18.1.1";
/// The WAN's virtual address (the SNAT address the server sees).
pub const WAN_VIP: &str = "198.19.0.1";
/// The client.
pub const CLIENT: &str = "198.18.1.100";
/// The server.
pub const SERVER: &str = "198.19.0.100";
/// The server's TCP echo port.
pub const TCP_PORT: u16 = 7000;
/// The server's UDP echo port.
pub const UDP_PORT: u16 = 7001;
/// The LAN's IPv6 virtual address.
pub const LAN_VIP6: &str = "2001:db8:1::1";
/// The WAN's IPv6 virtual address (the IPv6 SNAT address).
pub const WAN_VIP6: &str = "2001:db8:2::1";
/// The client's IPv6 address.
pub const CLIENT6: &str = "2001:db8:1::100";
/// The server's IPv6 address.
pub const SERVER6: &str = "2001:db8:2::100";
/// The WAN virtual address's TCP port DNAT'd to the client's host, port [`TCP_PORT`]
/// (a floating IP).
pub const DNAT_TCP_PORT: u16 = 8000;
/// Likewise for UDP, to [`UDP_PORT`].
pub const DNAT_UDP_PORT: u16 = 8001;

/// The tools a lab with firewalls runs, checked before anything is built.
pub(crate) fn check_tools() -> Result<()> {
    for tool in ["ip", "nft", "keepalived"] {
        if Command::new(tool)
            .arg(if tool == "keepalived" { "-v" } else { "-V" })
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            bail!(
                "{tool} is missing: run scripts/setup.sh (installs iproute2, nftables, keepalived)"
            );
        }
    }
    Ok(())
}

/// Join `firewalls` (namespaces) to the client's and the server's segment, make each a
/// firewall (forwarding, [`RULES`] written into `dir` and loaded, no loose TCP pick-up)
/// and route the client through the LAN virtual address. The firewalls' other links
/// are the caller's.
pub(crate) fn wire_segments(
    dir: &Path,
    client: &str,
    server: &str,
    firewalls: &[&str],
) -> Result<()> {
    let (cl, sv) = (client, server);
    for (ns, addr, addr6) in [
        (cl, "198.18.1.100/24", "2001:db8:1::100/64"),
        (sv, "198.19.0.100/24", "2001:db8:2::100/64"),
    ] {
        run(&[
            "ip", "-n", ns, "link", "add", "name", "br0", "type", "bridge",
        ])?;
        run(&["ip", "-n", ns, "addr", "add", addr, "dev", "br0"])?;
        // No duplicate address detection: the address works at once.
        run(&["ip", "-n", ns, "addr", "add", addr6, "dev", "br0", "nodad"])?;
        run(&["ip", "-n", ns, "link", "set", "br0", "up"])?;
    }
    for (i, fw) in firewalls.iter().enumerate() {
        let port = format!("fw{}", i + 1);
        for (ns, side, net, net6) in [
            (cl, "lan", "198.18.1", "2001:db8:1:"),
            (sv, "wan", "198.19.0", "2001:db8:2:"),
        ] {
            run(&[
                "ip", "-n", ns, "link", "add", "name", &port, "type", "veth", "peer", "name", side,
                "netns", fw,
            ])?;
            run(&["ip", "-n", ns, "link", "set", &port, "master", "br0", "up"])?;
            let addr = format!("{net}.{}/24", i + 2);
            run(&["ip", "-n", fw, "addr", "add", &addr, "dev", side])?;
            let addr6 = format!("{net6}:{}/64", i + 2);
            run(&["ip", "-n", fw, "addr", "add", &addr6, "dev", side, "nodad"])?;
            run(&["ip", "-n", fw, "link", "set", side, "up"])?;
        }
        let exec = |args: &[&str]| -> Result<String> {
            let mut all = vec!["ip", "netns", "exec", fw];
            all.extend_from_slice(args);
            run(&all)
        };
        exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        exec(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])?;
        let rules = dir.join(format!("{fw}.nft"));
        fs::write(&rules, RULES)?;
        exec(&["nft", "-f", &rules.to_string_lossy()])?;
        // After the rules: they load conntrack, which owns this setting.
        exec(&["sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_loose=0"])?;
    }
    run(&["ip", "-n", cl, "route", "add", "default", "via", LAN_VIP])?;
    run(&[
        "ip", "-n", cl, "-6", "route", "add", "default", "via", LAN_VIP6,
    ])?;
    Ok(())
}

/// One `vrrp_instance` of a keepalived configuration, in state BACKUP until elected.
#[derive(Debug, Clone)]
pub(crate) struct Instance<'a> {
    pub(crate) name: &'a str,
    /// The interface VRRP speaks on.
    pub(crate) interface: &'a str,
    pub(crate) vrid: u8,
    pub(crate) priority: u8,
    pub(crate) advert_ms: u32,
    /// `address/prefix dev interface` of each virtual address it moves.
    pub(crate) vips: &'a [String],
    /// Likewise, for addresses of another family (VRRPv3 adverts carry one family;
    /// keepalived moves excluded addresses with the instance).
    pub(crate) excluded: &'a [String],
    /// Further lines inside the instance (`nopreempt`, notify hooks, a track file),
    /// each with its newline.
    pub(crate) extra: &'a str,
}

impl Instance<'_> {
    /// The instance as keepalived.conf text.
    pub(crate) fn text(&self) -> String {
        let list = |v: &[String]| -> String {
            v.iter()
                .map(|a| format!("        {a}\n"))
                .collect::<String>()
        };
        let mut s = format!(
            "vrrp_instance {} {{\n    state BACKUP\n    interface {}\n    virtual_router_id {}\n    priority {}\n    advert_int {}\n    virtual_ipaddress {{\n{}    }}\n",
            self.name,
            self.interface,
            self.vrid,
            self.priority,
            f64::from(self.advert_ms) / 1000.0,
            list(self.vips),
        );
        if !self.excluded.is_empty() {
            s += &format!(
                "    virtual_ipaddress_excluded {{\n{}    }}\n",
                list(self.excluded)
            );
        }
        s += self.extra;
        s += "}\n";
        s
    }
}

/// Where a keepalived of a lab keeps its files.
#[derive(Debug, Clone)]
pub(crate) struct KeepalivedFiles {
    pub(crate) conf: PathBuf,
    pub(crate) pid: PathBuf,
    pub(crate) vrrp_pid: PathBuf,
    pub(crate) log: PathBuf,
}

/// Start keepalived (VRRP only, in the foreground, logging to `files.log`) in namespace
/// `ns` on `files.conf`, in its own process group, so that a hard failure
/// ([`crate::process::kill_group`]) kills its VRRP child too.
pub(crate) fn spawn_keepalived(ns: &str, files: &KeepalivedFiles) -> Result<Child> {
    Command::new("ip")
        .args(["netns", "exec", ns, "keepalived"])
        .args([
            "--dont-fork",
            "--log-console",
            "--log-detail",
            "--no-syslog",
        ])
        .args(["--vrrp", "--use-file"])
        .arg(&files.conf)
        .arg("--pid")
        .arg(&files.pid)
        .arg("--vrrp_pid")
        .arg(&files.vrrp_pid)
        .stdin(Stdio::null())
        .stdout(append(&files.log)?)
        .stderr(append(&files.log)?)
        .process_group(0)
        .spawn()
        .context("starting keepalived")
}

/// `path` opened for appending (a log), made if need be.
pub(crate) fn append(path: &Path) -> Result<fs::File> {
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// Which of the LAN and WAN virtual addresses firewall `ns` holds.
pub(crate) fn vips_held(ns: &str) -> (bool, bool) {
    run(&["ip", "-n", ns, "-4", "-o", "addr", "show"])
        .map(|s| {
            (
                s.contains(&format!("{LAN_VIP}/")),
                s.contains(&format!("{WAN_VIP}/")),
            )
        })
        .unwrap_or((false, false))
}

/// Conntrack entries in namespace `ns`'s kernel for the lab's echo services: to the
/// server (IPv4 and IPv6) and to the DNAT'd ports of the WAN virtual address.
pub(crate) fn kernel_sessions(ns: &str) -> Result<usize> {
    let ns = ctnetlink::Netns::named(ns)?;
    let mut ct = ctnetlink::Conntrack::open_in(&ns)?;
    let servers: [std::net::IpAddr; 2] = [SERVER.parse()?, SERVER6.parse()?];
    let vip: std::net::IpAddr = WAN_VIP.parse()?;
    let mut n = 0;
    ct.dump(None, |item| {
        if let ctnetlink::DumpItem::Flow(f) = item {
            let port = f.orig.dst_port().unwrap_or(0);
            if (servers.contains(&f.orig.dst) && [TCP_PORT, UDP_PORT].contains(&port))
                || (f.orig.dst == vip && [DNAT_TCP_PORT, DNAT_UDP_PORT].contains(&port))
            {
                n += 1;
            }
        }
    })?;
    Ok(n)
}

/// The last `lines` lines of each of `logs` (those that exist), for a failure message.
pub(crate) fn tails(logs: &[PathBuf], lines: usize) -> String {
    let mut out = String::new();
    for p in logs {
        let Ok(text) = fs::read_to_string(p) else {
            continue;
        };
        let all: Vec<&str> = text.lines().collect();
        let tail = &all[all.len().saturating_sub(lines)..];
        out += &format!("--- {} (last {} lines)\n", p.display(), tail.len());
        for l in tail {
            out += l;
            out.push('\n');
        }
    }
    out
}

/// The firewalls' rules (nft syntax).
pub(crate) const RULES: &str = r#"table inet ctsync_lab {
    chain forward {
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname "lan" oifname "wan" ct state new accept
        iifname "wan" oifname "lan" ct state new ct status dnat accept
    }
}
table ip ctsync_lab_nat {
    chain prerouting {
        type nat hook prerouting priority dstnat; policy accept;
        iifname "wan" ip daddr 198.19.0.1 tcp dport 8000 dnat to 198.18.1.100:7000
        iifname "wan" ip daddr 198.19.0.1 udp dport 8001 dnat to 198.18.1.100:7001
    }
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan" ip saddr 198.18.1.0/24 snat to 198.19.0.1 random
    }
}
table ip6 ctsync_lab_nat6 {
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan" ip6 saddr 2001:db8:1::/64 snat to 2001:db8:2::1 random
    }
}
"#;
