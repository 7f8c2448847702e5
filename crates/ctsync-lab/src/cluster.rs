//! A throwaway high-availability firewall lab in network namespaces: what `ctsync demo`
//! shows a person, and what the end-to-end failover tests drive.
//!
//! ```text
//!                 LAN 198.18.1.0/24              WAN 198.19.0.0/24
//!                     2001:db8:1::/64                2001:db8:2::/64
//!                 VIP 198.18.1.1, 2001:db8:1::1  VIP 198.19.0.1, 2001:db8:2::1
//!                                                (SNAT address; DNAT :8000/:8001)
//!   client ─ br ─┬─ lan [fw1] wan ─┬─ br ─ server
//!   .100, ::100  ├─ lan [fw2] wan ─┤        .100, ::100
//!                └─ lan [fw3] wan ─┘   (fw3 and beyond: Options::firewalls)
//!                     fw1 ── sync 198.18.255.0/24 ── fw2 …  (a bridge, with room
//!                                                            for a third host)
//! ```
//!
//! Sessions go from the client to the server (SNAT, IPv4 and IPv6) and, the Neutron
//! floating-IP shape, from the server to the WAN virtual address's ports 8000/8001, which
//! the firewalls DNAT to an echo server on the client's host (198.18.1.100:7000/7001).
//! The segments and each firewall's rules are [`crate::firewall`]'s.
//!
//! Each firewall runs nftables ([`crate::firewall`]), keepalived (VRRP, a sync group over
//! LAN and WAN, fw1 preferred) and, unless the lab is a control, `ctsync run` following
//! keepalived through its notify_fifo and holding it back with a track_file until ready.
//!
//! Everything is removed when the [`Lab`] is dropped, also on failure. Only processes the
//! lab started are signalled, by their own pid or process group.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::conntrackd;
use crate::ctsync::{self, Mode};
use crate::firewall::{self, Instance, KeepalivedFiles};
use crate::process::{kill_group, pause, run, stop_child, stop_group, wait};
use crate::scratch::Scratch;

pub use crate::firewall::{
    CLIENT, CLIENT6, DNAT_TCP_PORT, DNAT_UDP_PORT, LAN_VIP, LAN_VIP6, SERVER, SERVER6, TCP_PORT,
    UDP_PORT, WAN_VIP, WAN_VIP6,
};

/// The sync port of every firewall (ctsync's and conntrackd's).
pub(crate) const SYNC_PORT: u16 = 3780;

/// What keeps a firewall's table in a mixed lab ([`Options::mixed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaker {
    /// conntrackd (FTFW over UDP to the other firewall, driven by its own
    /// `primary-backup.sh` from keepalived's notify hooks).
    Conntrackd,
    /// ctsync, its own protocol on port 3781 to the other firewall; with `dialect`, also
    /// a `[conntrackd]` peer: the other firewall's conntrackd at port 3780.
    Ctsync {
        /// Speak conntrackd's dialect with the other firewall.
        dialect: bool,
    },
}

/// How to build a lab.
#[derive(Debug, Clone)]
pub struct Options {
    /// Part of every namespace name (`ctsy-TAG-PID-…`): unique per test.
    pub tag: String,
    /// The `ctsync` binary; `None` builds the control lab, without replication.
    pub ctsync: Option<PathBuf>,
    /// Hot standby or commit on takeover.
    pub mode: Mode,
    /// VRRP advertisement interval in milliseconds (keepalived declares the master dead
    /// after about three of them).
    pub advert_ms: u32,
    /// Without ctsync: run the incumbent, conntrackd (FTFW over UDP on the sync link,
    /// driven by its own `primary-backup.sh` from keepalived's notify hooks), for
    /// side-by-side benchmarks.
    pub conntrackd: bool,
    /// How many firewalls (2 or more; VRRP priorities 150, 100, 50, …).
    pub firewalls: usize,
    /// ctsync replicates over the multicast group [`SYNC_GROUP`] on the sync bridge (TTL
    /// 1, nothing leaves it), not only to each peer's address.
    pub group: bool,
    /// A mixed lab (two firewalls): what runs on each, overriding `ctsync` (which must
    /// then name the binary) and `conntrackd`.
    pub mixed: Option<Vec<Speaker>>,
    /// conntrackd's link (and ctsync's `[conntrackd]` with it) is this multicast group
    /// on the sync bridge (TTL 1: [`CONNTRACKD_GROUP`] or [`CONNTRACKD_GROUP6`]), not UDP
    /// to the other firewall.
    pub conntrackd_group: Option<&'static str>,
    /// A mixed lab's conntrackd replicates expectations (`ExpectationSync On`; the
    /// default); false for a control without them.
    pub conntrackd_expectations: bool,
    /// A second dedicated link between the two firewalls (`sync2`, a veth pair,
    /// 198.18.254.0/24): conntrackd's second `UDP` block; ctsync's `[[conntrackd.link]]`
    /// on it when `ctsync_second_link` is set too (not in its control).
    pub conntrackd_second_link: bool,
    /// See `conntrackd_second_link`.
    pub ctsync_second_link: bool,
}

/// conntrackd's IPv4 multicast group on the sync segment (its `IPv4_address` and
/// `Group`), for [`Options::conntrackd_group`].
pub const CONNTRACKD_GROUP: &str = "239.255.18.80:3780";
/// The IPv6 one (its `IPv6_address`, link scope, on the sync devices' link-local
/// addresses).
pub const CONNTRACKD_GROUP6: &str = "[ff02::18:80]:3780";

/// The sync segment's multicast group, when [`Options::group`] is set.
pub const SYNC_GROUP: &str = "239.255.18.1:3781";

impl Options {
    /// A lab with ctsync (`ctsync` is the binary to run), hot standby, 100 ms adverts.
    pub fn new(tag: &str, ctsync: Option<PathBuf>) -> Options {
        Options {
            tag: tag.to_string(),
            ctsync,
            mode: Mode::HotStandby,
            advert_ms: 100,
            conntrackd: false,
            firewalls: 2,
            group: false,
            mixed: None,
            conntrackd_group: None,
            conntrackd_expectations: true,
            conntrackd_second_link: false,
            ctsync_second_link: false,
        }
    }
}

#[derive(Debug, Default)]
struct Procs {
    keepalived: Option<Child>,
    ctsync: Option<Child>,
    conntrackd: Option<Child>,
}

/// The lab. Dropping it stops its processes and removes its namespaces and files.
#[derive(Debug)]
pub struct Lab {
    /// The client's namespace.
    pub client: String,
    /// The firewalls' namespaces (fw1, fw2, …).
    pub fw: Vec<String>,
    /// The server's namespace.
    pub server: String,
    /// The sync segment's namespace (a bridge, and the address 198.18.255.66).
    pub sync_ns: String,
    opts: Options,
    procs: Vec<Procs>,
    priority: Vec<u8>,
    // Last: dropped after `Drop for Lab` stopped the processes.
    scratch: Scratch,
}

impl Lab {
    /// Build the namespaces, links, addresses, firewall rules and keys. Nothing runs yet:
    /// see [`Lab::start`].
    pub fn build(opts: Options) -> Result<Lab> {
        let mut scratch = Scratch::new(&opts.tag)?;
        firewall::check_tools()?;
        // Namespaces are recorded as soon as they exist: a failure below removes them.
        let client = scratch.add_netns("cl")?;
        let n = opts.firewalls;
        if !(2..=8).contains(&n) {
            bail!("a lab has 2 to 8 firewalls, not {n}");
        }
        if (opts.conntrackd || opts.mixed.is_some()) && n != 2 {
            bail!("the conntrackd and mixed labs have two firewalls");
        }
        if opts.mixed.as_ref().is_some_and(|m| m.len() != n) {
            bail!("a mixed lab names what runs on each of its {n} firewalls");
        }
        let fw = (1..=n)
            .map(|i| scratch.add_netns(&format!("fw{i}")))
            .collect::<Result<Vec<_>>>()?;
        let server = scratch.add_netns("sv")?;
        let sync_ns = scratch.add_netns("sx")?;
        let lab = Lab {
            client,
            fw,
            server,
            sync_ns,
            opts,
            procs: (0..n).map(|_| Procs::default()).collect(),
            priority: (0..n)
                .map(|i| 150 - 50 * i.min(2) as u8 - i.saturating_sub(2) as u8)
                .collect(),
            scratch,
        };
        lab.wire()?;
        Ok(lab)
    }

    fn wire(&self) -> Result<()> {
        let fws: Vec<&str> = self.fw.iter().map(String::as_str).collect();
        firewall::wire_segments(self.dir(), &self.client, &self.server, &fws)?;
        // The sync segment is a bridge in its own namespace, where a third host (the
        // attacker of tests/attacker.rs, 198.18.255.66) sits. The bridge forgets MAC
        // addresses at once, so it floods like a hub and that host sees all sync traffic.
        let sx = &self.sync_ns;
        run(&[
            "ip",
            "-n",
            sx,
            "link",
            "add",
            "name",
            "br0",
            "type",
            "bridge",
            "ageing_time",
            "0",
            // The group is flooded to every port, like any other frame here.
            "mcast_snooping",
            "0",
        ])?;
        run(&[
            "ip",
            "-n",
            sx,
            "addr",
            "add",
            "198.18.255.66/24",
            "dev",
            "br0",
        ])?;
        run(&["ip", "-n", sx, "link", "set", "br0", "promisc", "on", "up"])?;
        for (i, fw) in self.fw.iter().enumerate() {
            let port = format!("fw{}", i + 1);
            run(&[
                "ip", "-n", sx, "link", "add", "name", &port, "type", "veth", "peer", "name",
                "sync", "netns", fw,
            ])?;
            run(&["ip", "-n", sx, "link", "set", &port, "master", "br0", "up"])?;
        }
        for (i, fw) in self.fw.iter().enumerate() {
            let addr = format!("198.18.255.{}/24", i + 1);
            run(&["ip", "-n", fw, "addr", "add", &addr, "dev", "sync"])?;
            run(&["ip", "-n", fw, "link", "set", "sync", "up"])?;
        }
        if self.opts.conntrackd_second_link
            && let [fw1, fw2] = &self.fw[..]
        {
            run(&[
                "ip", "-n", fw1, "link", "add", "name", "sync2", "type", "veth", "peer", "name",
                "sync2", "netns", fw2,
            ])?;
            for (i, fw) in [fw1, fw2].into_iter().enumerate() {
                let addr = format!("198.18.254.{}/24", i + 1);
                run(&["ip", "-n", fw, "addr", "add", &addr, "dev", "sync2"])?;
                run(&["ip", "-n", fw, "link", "set", "sync2", "up"])?;
            }
        }
        if let Some(bin) = &self.opts.ctsync {
            ctsync::write_key(bin, &self.dir().join("cluster.key"))?;
        }
        Ok(())
    }

    /// Bring firewall `i`'s device `dev` (`sync`, `sync2`) down or up: a cut dedicated
    /// link, as its owner sees it (conntrackd moves to another link when the one it
    /// sends on goes down).
    pub fn set_link(&self, i: usize, dev: &str, up: bool) -> Result<()> {
        let state = if up { "up" } else { "down" };
        run(&["ip", "-n", &self.fw[i], "link", "set", dev, state])?;
        Ok(())
    }

    /// Start fw1 and wait until it is master, then each other firewall and wait until
    /// it is a ready backup (in the control: until its keepalived had time to settle as
    /// backup).
    pub fn bring_up(&mut self) -> Result<()> {
        self.start(0)?;
        if wait(Duration::from_secs(15), || self.is_master(0))?.is_none() {
            bail!("fw1 did not become master within 15 s:\n{}", self.logs());
        }
        for i in 1..self.fw.len() {
            self.start(i)?;
        }
        for i in 1..self.fw.len() {
            self.wait_ready(i)?;
            if self.has_any_vip(i) {
                bail!(
                    "fw{} took a virtual address while fw1 is master:\n{}",
                    i + 1,
                    self.logs()
                );
            }
        }
        Ok(())
    }

    /// Wait (at most 15 s) until firewall `i` is ready to take over: its ctsync holds a
    /// complete copy (in the control: a second for keepalived to settle).
    pub fn wait_ready(&self, i: usize) -> Result<()> {
        let Some(Speaker::Ctsync { dialect }) = self.speaker(i) else {
            // conntrackd has no readiness to wait for (its backup asked for the table
            // when keepalived made it backup).
            return pause(Duration::from_secs(1));
        };
        let ok = wait(Duration::from_secs(15), || {
            self.status(i).is_some_and(|s| {
                // Ready, and hearing a primary (peers that failed are down for good), or
                // the conntrackd peer (or, without the dialect beside a conntrackd node,
                // nothing: the mixed lab's control).
                let beside_conntrackd = !dialect
                    && (0..self.fw.len())
                        .any(|j| j != i && self.speaker(j) == Some(Speaker::Conntrackd));
                s["ready"] == true
                    && (s["peers"].as_array().is_some_and(|p| {
                        p.iter().any(|p| p["up"] == true && p["role"] == "primary")
                    }) || (dialect && s["conntrackd"]["up"] == true)
                        || beside_conntrackd)
            }) && self.track(i) == "0"
        })?;
        if ok.is_none() {
            bail!(
                "fw{} did not become ready within 15 s: {:?}\n{}",
                i + 1,
                self.status(i),
                self.logs()
            );
        }
        Ok(())
    }

    /// Wait (at most 15 s) until firewall `i`'s kernel holds at least `n` of the lab's
    /// sessions (the control returns at once).
    pub fn wait_replicated(&self, i: usize, n: usize) -> Result<()> {
        let Some(speaker) = self.speaker(i) else {
            return Ok(());
        };
        if speaker == Speaker::Conntrackd {
            // Its external cache, which `-c` commits on takeover.
            if wait(Duration::from_secs(15), || {
                self.conntrackd_external(i).is_some_and(|k| k >= n)
            })?
            .is_none()
            {
                bail!(
                    "fw{}'s conntrackd holds {:?} of {n} sessions after 15 s:\n{}",
                    i + 1,
                    self.conntrackd_external(i),
                    self.logs()
                );
            }
            return Ok(());
        }
        if wait(Duration::from_secs(15), || {
            self.kernel_sessions(i).is_ok_and(|k| k >= n)
        })?
        .is_none()
        {
            bail!(
                "fw{}'s kernel holds {:?} of {n} sessions after 15 s:\n{}",
                i + 1,
                self.kernel_sessions(i),
                self.logs()
            );
        }
        Ok(())
    }

    /// Wait (at most `limit`) until firewall `i` is master; how long it took.
    pub fn wait_master(&self, i: usize, limit: Duration) -> Result<Duration> {
        match wait(limit, || self.is_master(i))? {
            Some(d) => Ok(d),
            None => bail!(
                "fw{} did not become master within {limit:?}:\n{}",
                i + 1,
                self.logs()
            ),
        }
    }

    /// Whether this lab replicates (false: the control).
    pub fn replicates(&self) -> bool {
        self.opts.ctsync.is_some() || self.opts.conntrackd
    }

    /// What keeps firewall `i`'s table (`None`: nothing, the control).
    pub fn speaker(&self, i: usize) -> Option<Speaker> {
        match &self.opts.mixed {
            Some(m) => m.get(i).copied(),
            None if self.opts.ctsync.is_some() => Some(Speaker::Ctsync { dialect: false }),
            None if self.opts.conntrackd => Some(Speaker::Conntrackd),
            None => None,
        }
    }

    /// Replace what keeps firewall `i`'s table (a step of a rolling migration): its sync
    /// daemon and keepalived stop, and start again with `speaker`. Meant for a backup:
    /// keepalived stopping on the master would move the addresses.
    pub fn replace_speaker(&mut self, i: usize, speaker: Speaker) -> Result<()> {
        let Some(m) = self.opts.mixed.as_mut() else {
            bail!("only a mixed lab changes what runs on a firewall");
        };
        if let Some(s) = m.get_mut(i) {
            *s = speaker;
        }
        self.stop(i);
        self.start(i)
    }

    /// The port of ctsync's own protocol: 3781 in a mixed lab, where conntrackd's
    /// dialect has 3780.
    fn native_port(&self) -> u16 {
        if self.opts.mixed.is_some() {
            SYNC_PORT + 1
        } else {
            SYNC_PORT
        }
    }

    /// How many entries firewall `i` holds of its peer's table: ctsync's external cache,
    /// or conntrackd's.
    pub fn replicated_count(&self, i: usize) -> Option<usize> {
        if self.speaker(i) == Some(Speaker::Conntrackd) {
            return self.conntrackd_external(i);
        }
        self.status(i)?["caches"]["external"]
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
    }

    /// How many entries firewall `i` replicates (its own table as its sync daemon holds
    /// it: ctsync's internal cache, or conntrackd's).
    pub fn own_count(&self, i: usize) -> Option<usize> {
        if self.speaker(i) == Some(Speaker::Conntrackd) {
            return self.conntrackd_cache(i, "internal");
        }
        self.status(i)?["caches"]["internal"]
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
    }

    /// Entries in firewall `i`'s conntrackd external cache (`conntrackd -s cache`).
    pub fn conntrackd_external(&self, i: usize) -> Option<usize> {
        self.conntrackd_cache(i, "external")
    }

    /// The UDP flows of firewall `i`'s kernel: each client source port → the port SNAT
    /// gave it.
    pub fn udp_nat_ports(&self, i: usize) -> Result<BTreeMap<u16, u16>> {
        let text = run(&[
            "ip",
            "netns",
            "exec",
            &self.fw[i],
            "conntrack",
            "-L",
            "-p",
            "udp",
        ])?;
        Ok(conntrackd::nat_ports(&text, "udp", UDP_PORT))
    }

    /// Commit firewall `i`'s conntrackd external cache into its kernel (`conntrackd -c`).
    pub fn conntrackd_commit(&self, i: usize) -> Result<()> {
        conntrackd::commit(&self.fw[i], &self.file(i, "conntrackd.conf"))
    }

    fn conntrackd_cache(&self, i: usize, which: &str) -> Option<usize> {
        conntrackd::cache_count(&self.fw[i], &self.file(i, "conntrackd.conf"), which)
    }

    /// Start firewall `i`'s conntrackd (in the foreground, as a child of this lab).
    pub fn start_conntrackd(&mut self, i: usize) -> Result<()> {
        let conf = self.file(i, "conntrackd.conf");
        let group = self.opts.conntrackd_group;
        // A mixed lab's conntrackd replicates expectations too (the dialect carries
        // them); the side-by-side benchmarks' conntrackd stays as it was measured.
        let expectations = self.opts.mixed.is_some() && self.opts.conntrackd_expectations;
        fs::write(
            &conf,
            conntrackd::config(
                i,
                self.dir(),
                group,
                expectations,
                self.opts.conntrackd_second_link,
            ),
        )?;
        let _ = fs::remove_file(self.file(i, "conntrackd.lock"));
        let _ = fs::remove_file(self.file(i, "conntrackd.ctl"));
        let child = Command::new("ip")
            .args(["netns", "exec", &self.fw[i], "conntrackd", "-C"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(self.log(i, "conntrackd-stdout")?)
            .stderr(self.log(i, "conntrackd-stdout")?)
            .spawn()
            .context("starting conntrackd (package conntrackd)")?;
        self.procs[i].conntrackd = Some(child);
        let ctl = self.file(i, "conntrackd.ctl");
        if wait(Duration::from_secs(10), || ctl.exists())?.is_none() {
            bail!(
                "fw{}'s conntrackd did not come up within 10 s:\n{}",
                i + 1,
                self.logs()
            );
        }
        Ok(())
    }

    /// The lab's working directory (configs, logs, sockets).
    pub fn dir(&self) -> &Path {
        self.scratch.dir()
    }

    /// Firewall `i`'s control socket.
    pub fn socket(&self, i: usize) -> PathBuf {
        self.dir().join(format!("fw{}.sock", i + 1))
    }

    fn file(&self, i: usize, ext: &str) -> PathBuf {
        self.dir().join(format!("fw{}.{ext}", i + 1))
    }

    fn ctsync_config(&self, i: usize) -> String {
        let mode = self.opts.mode.config_value();
        let port = self.native_port();
        let peers: Vec<String> = (0..self.fw.len())
            .filter(|&j| j != i)
            .map(|j| format!("\"198.18.255.{}:{port}\"", j + 1))
            .collect();
        let dialect = if self.speaker(i) == Some(Speaker::Ctsync { dialect: true })
            && let Some(group) = self.opts.conntrackd_group
        {
            // The group alone: conntrackd's datagrams are taken from whoever sends to it.
            format!(
                "[conntrackd]\ndialect = \"conntrackd\"\ninterface = \"sync\"\ngroup = \"{group}\"\n"
            )
        } else if self.speaker(i) == Some(Speaker::Ctsync { dialect: true }) {
            let second = if self.opts.ctsync_second_link {
                format!(
                    "[[conntrackd.link]]\ninterface = \"sync2\"\nlocal = \"198.18.254.{}:{SYNC_PORT}\"\npeer = \"198.18.254.{}:{SYNC_PORT}\"\n",
                    i + 1,
                    2 - i
                )
            } else {
                String::new()
            };
            format!(
                "[conntrackd]\ndialect = \"conntrackd\"\ninterface = \"sync\"\nlocal = \"198.18.255.{}:{SYNC_PORT}\"\npeer = \"198.18.255.{}:{SYNC_PORT}\"\n{second}",
                i + 1,
                2 - i
            )
        } else {
            String::new()
        };
        format!(
            r#"node = "fw{n}"
netns = "{ns}"
{dialect}[sync]
interface = "sync"
local = "198.18.255.{n}:{port}"
peers = [{peers}]
{group}key_file = "{key}"
mode = "{mode}"
[filter]
protocols = ["tcp", "udp", "icmp"]
[control]
socket = "{sock}"
[keepalived]
notify_fifo = "{fifo}"
group = "G1"
track_file = "{track}"
"#,
            n = i + 1,
            peers = peers.join(", "),
            group = if self.opts.group {
                format!("group = \"{SYNC_GROUP}\"\n")
            } else {
                String::new()
            },
            ns = self.fw[i],
            key = self.dir().join("cluster.key").display(),
            sock = self.socket(i).display(),
            fifo = self.file(i, "fifo").display(),
            track = self.file(i, "ready").display(),
        )
    }

    fn keepalived_config(&self, i: usize) -> String {
        let mut s = format!(
            "global_defs {{\n    router_id fw{}\n    vrrp_version 3\n",
            i + 1
        );
        let conntrackd = self.speaker(i) == Some(Speaker::Conntrackd);
        let with = matches!(self.speaker(i), Some(Speaker::Ctsync { .. }));
        if with {
            s += &format!(
                "    notify_fifo {}\n}}\ntrack_file ctsync_ready {{\n    file {}\n    weight 0\n}}\n",
                self.file(i, "fifo").display(),
                self.file(i, "ready").display()
            );
        } else if conntrackd {
            s += "    enable_script_security\n    script_user root\n}\n";
        } else {
            s += "}\n";
        }
        s += "vrrp_sync_group G1 {\n    group {\n        LAN\n        WAN\n    }\n";
        if conntrackd {
            let script = self.file(i, "primary-backup.sh");
            for (hook, arg) in [
                ("master", "primary"),
                ("backup", "backup"),
                ("fault", "fault"),
            ] {
                s += &format!("    notify_{hook} \"{} {arg}\"\n", script.display());
            }
        }
        s += "}\n";
        for (name, dev, vrid, vip, vip6) in [
            ("LAN", "lan", 51, LAN_VIP, LAN_VIP6),
            ("WAN", "wan", 52, WAN_VIP, WAN_VIP6),
        ] {
            // The IPv6 address rides on the IPv4 instance.
            s += &Instance {
                name,
                interface: dev,
                vrid,
                priority: self.priority[i],
                advert_ms: self.opts.advert_ms,
                vips: &[format!("{vip}/24 dev {dev}")],
                excluded: &[format!("{vip6}/64 dev {dev}")],
                extra: if with {
                    "    track_file {\n        ctsync_ready\n    }\n"
                } else {
                    ""
                },
            }
            .text();
        }
        s
    }

    fn log(&self, i: usize, what: &str) -> Result<fs::File> {
        firewall::append(&self.dir().join(format!("fw{}-{what}.log", i + 1)))
    }

    /// Start firewall `i`: ctsync (unless a control), then keepalived.
    pub fn start(&mut self, i: usize) -> Result<()> {
        let speaker = self.speaker(i);
        if matches!(speaker, Some(Speaker::Ctsync { .. })) {
            self.start_ctsync(i)?;
        } else if speaker == Some(Speaker::Conntrackd) {
            conntrackd::write_script(
                &self.file(i, "primary-backup.sh"),
                &self.file(i, "conntrackd.conf"),
                &self.file(i, "conntrackd.lock"),
            )?;
            self.start_conntrackd(i)?;
        }
        self.start_keepalived(i)
    }

    /// Start firewall `i`'s ctsync and wait until its control socket answers.
    pub fn start_ctsync(&mut self, i: usize) -> Result<()> {
        let Some(bin) = self.opts.ctsync.clone() else {
            return Ok(());
        };
        let cfg = self.file(i, "toml");
        fs::write(&cfg, self.ctsync_config(i))?;
        let state = self.file(i, "state");
        let how = ctsync::Launch {
            notify: None,
            state: &state,
            faketime: None,
        };
        let child = ctsync::spawn_run(&bin, &cfg, self.log(i, "ctsync")?, how)?;
        self.procs[i].ctsync = Some(child);
        if !ctsync::answers_within(&self.socket(i), Duration::from_secs(10))? {
            bail!(
                "fw{}'s ctsync did not come up within 10 s:\n{}",
                i + 1,
                self.logs()
            );
        }
        Ok(())
    }

    /// Start firewall `i`'s keepalived (in its own process group, so that a hard failure
    /// kills its VRRP child too).
    pub fn start_keepalived(&mut self, i: usize) -> Result<()> {
        let files = KeepalivedFiles {
            conf: self.file(i, "keepalived.conf"),
            pid: self.file(i, "keepalived.pid"),
            vrrp_pid: self.file(i, "vrrp.pid"),
            log: self.dir().join(format!("fw{}-keepalived.log", i + 1)),
        };
        fs::write(&files.conf, self.keepalived_config(i))?;
        let child = firewall::spawn_keepalived(&self.fw[i], &files)?;
        self.procs[i].keepalived = Some(child);
        Ok(())
    }

    /// Change firewall `i`'s VRRP priority and make keepalived reload (a graceful switch:
    /// both nodes stay up).
    pub fn set_priority(&mut self, i: usize, priority: u8) -> Result<()> {
        self.priority[i] = priority;
        fs::write(self.file(i, "keepalived.conf"), self.keepalived_config(i))?;
        let Some(k) = &self.procs[i].keepalived else {
            bail!("fw{}'s keepalived is not running", i + 1);
        };
        // SAFETY: signalling the keepalived this lab started, by its pid.
        if unsafe { libc::kill(k.id() as i32, libc::SIGHUP) } != 0 {
            bail!(
                "cannot signal keepalived: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }

    /// Whether firewall `i` holds both virtual addresses (is the VRRP master).
    pub fn is_master(&self, i: usize) -> bool {
        let (lan, wan) = firewall::vips_held(&self.fw[i]);
        lan && wan
    }

    /// Whether firewall `i` holds either virtual address.
    pub fn has_any_vip(&self, i: usize) -> bool {
        let (lan, wan) = firewall::vips_held(&self.fw[i]);
        lan || wan
    }

    /// The process id of firewall `i`'s ctsync, if it runs.
    pub fn ctsync_pid(&self, i: usize) -> Option<u32> {
        self.procs[i].ctsync.as_ref().map(Child::id)
    }

    /// Firewall `i`'s `ctsync status`, if it runs.
    pub fn status(&self, i: usize) -> Option<serde_json::Value> {
        ctsync::request(&self.socket(i), "status").ok()
    }

    /// What firewall `i`'s track file says (`0` ready, `1` not).
    pub fn track(&self, i: usize) -> String {
        fs::read_to_string(self.file(i, "ready"))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// Firewall `i` fails hard: its links go down, then keepalived and ctsync are killed
    /// with SIGKILL. Its kernel (namespace) stays, stale, as a crashed box's disk would.
    pub fn fail_hard(&mut self, i: usize) -> Result<()> {
        for dev in ["lan", "wan", "sync"] {
            run(&["ip", "-n", &self.fw[i], "link", "set", dev, "down"])?;
        }
        if let Some(mut k) = self.procs[i].keepalived.take() {
            kill_group(&mut k);
        }
        self.kill_ctsync(i);
        if let Some(mut c) = self.procs[i].conntrackd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        Ok(())
    }

    /// Kill firewall `i`'s ctsync with SIGKILL (a crash).
    pub fn kill_ctsync(&mut self, i: usize) {
        if let Some(mut c) = self.procs[i].ctsync.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Bring a failed firewall back: links up, ctsync and keepalived started again.
    pub fn restore(&mut self, i: usize) -> Result<()> {
        for dev in ["lan", "wan", "sync"] {
            run(&["ip", "-n", &self.fw[i], "link", "set", dev, "up"])?;
        }
        self.start(i)
    }

    /// Drop sync datagrams larger than `bytes` arriving at firewall `i` (an impaired sync
    /// link: handshakes and keepalives pass, table transfers do not); `None` heals it.
    pub fn impair_sync(&self, i: usize, bytes: Option<u16>) -> Result<()> {
        let ns = &self.fw[i];
        let _ = run(&[
            "ip",
            "netns",
            "exec",
            ns,
            "nft",
            "delete",
            "table",
            "inet",
            "ctsync_lab_impair",
        ]);
        if let Some(b) = bytes {
            let rules = format!(
                "table inet ctsync_lab_impair {{\n  chain input {{\n    type filter hook input priority filter; policy accept;\n    udp dport {SYNC_PORT} meta length > {b} drop\n  }}\n}}\n"
            );
            let path = self.file(i, "impair.nft");
            fs::write(&path, rules)?;
            run(&[
                "ip",
                "netns",
                "exec",
                ns,
                "nft",
                "-f",
                &path.to_string_lossy(),
            ])?;
        }
        Ok(())
    }

    /// Conntrack entries in firewall `i`'s kernel for the lab's echo services: to the
    /// server (IPv4 and IPv6) and to the DNAT'd ports of the WAN virtual address.
    pub fn kernel_sessions(&self, i: usize) -> Result<usize> {
        firewall::kernel_sessions(&self.fw[i])
    }

    /// The entries in firewall `i`'s kernel whose timeout is above `secs`.
    pub fn timeouts_above(&self, i: usize, secs: u32) -> Result<usize> {
        let ns = ctnetlink::Netns::named(&self.fw[i])?;
        let mut ct = ctnetlink::Conntrack::open_in(&ns)?;
        let mut n = 0;
        ct.dump(None, |item| {
            if let ctnetlink::DumpItem::Flow(f) = item
                && f.timeout.is_some_and(|t| t > secs)
            {
                n += 1;
            }
        })?;
        Ok(n)
    }

    /// The VRRP state changes firewall `i`'s keepalived has logged ("Entering MASTER
    /// STATE", "Entering FAULT STATE", …) since it started.
    pub fn vrrp_transitions(&self, i: usize) -> usize {
        let path = self.dir().join(format!("fw{}-keepalived.log", i + 1));
        fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("Entering") && l.contains("STATE"))
            .count()
    }

    /// Every log of the lab, for a failure message.
    pub fn logs(&self) -> String {
        let Ok(rd) = fs::read_dir(self.dir()) else {
            return String::new();
        };
        let mut paths: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        paths.sort();
        firewall::tails(&paths, 40)
    }

    /// Stop firewall `i`'s processes (keepalived, then its sync daemon), gracefully.
    pub fn stop(&mut self, i: usize) {
        if let Some(mut k) = self.procs[i].keepalived.take() {
            stop_group(&mut k, STOP_GRACE);
        }
        if let Some(mut c) = self.procs[i].ctsync.take() {
            crate::process::terminate(&mut c, STOP_GRACE);
        }
        if let Some(mut c) = self.procs[i].conntrackd.take() {
            // SAFETY: the `ip netns exec` this lab started, by its pid: it execs
            // conntrackd, so the pid is conntrackd's.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            stop_child(&mut c, None, STOP_GRACE);
        }
    }
}

/// How long a signalled process of the lab has to stop before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);

impl Drop for Lab {
    fn drop(&mut self) {
        for i in 0..self.fw.len() {
            self.stop(i);
        }
        // Then `scratch` removes the namespaces and the directory.
    }
}
