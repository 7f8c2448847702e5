//! Three bare nodes on one sync segment, for the multicast group's end-to-end tests
//! (docs/PROTOCOL.md §13): namespaces `ctsy-TAG-PID-a`, `-b` and `-c`, each with a
//! `sync0` (198.18.253.1, .2 and .3; with [`Trio::use_ipv6`] also 2001:db8:fd::1, ::2
//! and ::3) whose other end is a port of bridge `br0` in a fourth namespace, `-br`: a
//! private switch (multicast snooping off, so the group is flooded to every port). The
//! group is 239.255.17.1 (IPv6: ff02::17:1), TTL 1: nothing leaves the bridge, and
//! nothing here touches the host's interfaces. A cluster key, and `ctsync run` in each
//! node when a test starts it; no firewall, no keepalived.
//!
//! Everything is removed when the [`Trio`] is dropped, also on failure.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::ctsync;
use crate::process::run;
use crate::scratch::Scratch;

/// The sync port of every node.
pub const SYNC_PORT: u16 = 3780;
/// The group's port.
pub const GROUP_PORT: u16 = 3781;

/// The three nodes. Dropping it stops the daemons and removes the namespaces and files.
#[derive(Debug)]
pub struct Trio {
    /// The nodes' namespaces (198.18.253.1, .2, .3).
    pub nodes: [String; 3],
    ctsync: PathBuf,
    /// The sync link and the group are IPv6.
    ipv6: bool,
    daemons: Vec<Child>,
    // Last: dropped after `Drop for Trio` stopped the daemons.
    scratch: Scratch,
}

impl Trio {
    /// Build the namespaces, the bridge and the key (`ctsync` is the binary to run;
    /// root only). No daemon runs yet: see [`Trio::start`].
    pub fn build(tag: &str, ctsync: PathBuf) -> Result<Trio> {
        let mut scratch = Scratch::new(tag)?;
        let nodes = [
            scratch.add_netns("a")?,
            scratch.add_netns("b")?,
            scratch.add_netns("c")?,
        ];
        let br = scratch.add_netns("br")?;
        let trio = Trio {
            nodes,
            ctsync,
            ipv6: false,
            daemons: Vec::new(),
            scratch,
        };
        run(&["ip", "-n", &br, "link", "add", "br0", "type", "bridge"])?;
        run(&[
            "ip",
            "-n",
            &br,
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        run(&["ip", "-n", &br, "link", "set", "br0", "up"])?;
        for (i, ns) in trio.nodes.iter().enumerate() {
            let port = format!("p{i}");
            run(&[
                "ip", "-n", ns, "link", "add", "sync0", "type", "veth", "peer", "name", &port,
                "netns", &br,
            ])?;
            run(&["ip", "-n", &br, "link", "set", &port, "master", "br0"])?;
            run(&["ip", "-n", &br, "link", "set", &port, "up"])?;
            let addr = format!("198.18.253.{}/24", i + 1);
            run(&["ip", "-n", ns, "addr", "add", &addr, "dev", "sync0"])?;
            run(&["ip", "-n", ns, "link", "set", "sync0", "up"])?;
        }
        ctsync::write_key(&trio.ctsync, &trio.key())?;
        Ok(trio)
    }

    /// Run the sync link and the group over IPv6 from now on (2001:db8:fd::1, ::2, ::3
    /// without duplicate address detection, group ff02::17:1).
    pub fn use_ipv6(&mut self) -> Result<()> {
        for (i, ns) in self.nodes.iter().enumerate() {
            let addr = format!("2001:db8:fd::{}/64", i + 1);
            run(&[
                "ip", "-n", ns, "addr", "add", &addr, "dev", "sync0", "nodad",
            ])?;
        }
        self.ipv6 = true;
        Ok(())
    }

    /// The working directory (configs, logs, sockets, keys).
    pub fn dir(&self) -> &Path {
        self.scratch.dir()
    }

    /// The cluster key every configuration names.
    pub fn key(&self) -> PathBuf {
        self.dir().join("cluster.key")
    }

    /// Node `i`'s sync address with the port, as a configuration writes it.
    fn address(&self, i: usize) -> String {
        if self.ipv6 {
            format!("[2001:db8:fd::{}]:{SYNC_PORT}", i + 1)
        } else {
            format!("198.18.253.{}:{SYNC_PORT}", i + 1)
        }
    }

    /// The group, as a configuration writes it.
    pub fn group(&self) -> String {
        if self.ipv6 {
            format!("[ff02::17:1]:{GROUP_PORT}")
        } else {
            format!("239.255.17.1:{GROUP_PORT}")
        }
    }

    /// Write node `i`'s configuration (`role` at start; on the group when `group`); its
    /// path.
    pub fn config(&self, i: usize, role: &str, group: bool) -> Result<PathBuf> {
        let ns = &self.nodes[i];
        let peers: Vec<String> = (0..3)
            .filter(|&j| j != i)
            .map(|j| format!("\"{}\"", self.address(j)))
            .collect();
        let group = if group {
            format!("group = \"{}\"\n", self.group())
        } else {
            String::new()
        };
        let path = self.dir().join(format!("{ns}.toml"));
        let text = format!(
            "node = \"{ns}\"\nnetns = \"{ns}\"\nrole = \"{role}\"\n[sync]\ninterface = \"sync0\"\nlocal = \"{}\"\npeers = [{}]\n{group}key_file = \"{}\"\n[control]\nsocket = \"{}\"\n",
            self.address(i),
            peers.join(", "),
            self.key().display(),
            self.socket(i).display()
        );
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// Node `i`'s control socket.
    pub fn socket(&self, i: usize) -> PathBuf {
        self.dir().join(format!("{}.sock", self.nodes[i]))
    }

    /// Node `i`'s `ctsync status`.
    pub fn status(&self, i: usize) -> Result<serde_json::Value> {
        ctsync::request(&self.socket(i), "status")
    }

    /// Bytes node `i` sent and received on its sync interface so far (the kernel's
    /// counters).
    pub fn link_bytes(&self, i: usize) -> Result<(u64, u64)> {
        let out = run(&[
            "ip",
            "-n",
            &self.nodes[i],
            "-j",
            "-s",
            "link",
            "show",
            "dev",
            "sync0",
        ])?;
        let v: serde_json::Value = serde_json::from_str(&out).context("`ip -j -s link` output")?;
        let stats = &v[0]["stats64"];
        match (stats["tx"]["bytes"].as_u64(), stats["rx"]["bytes"].as_u64()) {
            (Some(tx), Some(rx)) => Ok((tx, rx)),
            _ => bail!("no byte counters in `ip -j -s link`: {out}"),
        }
    }

    /// Write node `i`'s configuration and start its daemon; wait until its control
    /// socket answers.
    pub fn start(&mut self, i: usize, role: &str, group: bool) -> Result<()> {
        let cfg = self.config(i, role, group)?;
        let ns = self.nodes[i].clone();
        let log_path = self.dir().join(format!("{ns}.log"));
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let state = self.dir().join(format!("{ns}.state"));
        let how = ctsync::Launch {
            notify: None,
            state: &state,
            faketime: None,
        };
        let child = ctsync::spawn_run(&self.ctsync, &cfg, log, how)?;
        self.daemons.push(child);
        if !ctsync::answers_within(&self.socket(i), Duration::from_secs(10))? {
            bail!(
                "{ns}'s ctsync did not come up within 10 s:\n{}",
                self.logs()
            );
        }
        Ok(())
    }

    /// Every node's log, for a failure message.
    pub fn logs(&self) -> String {
        crate::process::node_logs(self.dir(), &self.nodes)
    }
}

impl Drop for Trio {
    fn drop(&mut self) {
        crate::process::stop_daemons(&mut self.daemons);
        // Then `scratch` removes the namespaces and the directory.
    }
}
