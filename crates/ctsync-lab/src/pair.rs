//! Two bare nodes for the daemon's end-to-end tests: namespaces `ctsy-TAG-PID-a` and
//! `-b` joined by a veth sync link (`sync0`, 198.18.255.1 and .2; optionally a second,
//! `sync1`, 198.18.254.1 and .2: [`Pair::add_second_link`]), a cluster key, and
//! `ctsync run` in each when a test starts it. No firewall, no keepalived: the tests put
//! flows into the kernels themselves and speak for keepalived through each node's
//! notify FIFO. The demo's topology is [`crate::cluster`].
//!
//! Everything is removed when the [`Pair`] is dropped, also on failure.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::ctsync;
use crate::process::run;
use crate::scratch::Scratch;

/// The sync port of both nodes.
pub const SYNC_PORT: u16 = 3780;

/// The two nodes. Dropping it stops the daemons and removes the namespaces and files.
#[derive(Debug)]
pub struct Pair {
    /// The first node's namespace (198.18.255.1).
    pub a: String,
    /// The second node's namespace (198.18.255.2).
    pub b: String,
    ctsync: PathBuf,
    /// The sync link runs over IPv6 (2001:db8:ff::1 and ::2) instead of IPv4.
    ipv6: bool,
    /// A second sync link (`sync1`: 198.18.254.1 and .2) is configured.
    second_link: bool,
    daemons: Vec<Child>,
    // Last: dropped after `Drop for Pair` stopped the daemons.
    scratch: Scratch,
}

impl Pair {
    /// Build the namespaces, the sync link and the key (`ctsync` is the binary to run;
    /// root only). No daemon runs yet: see [`Pair::start`].
    pub fn build(tag: &str, ctsync: PathBuf) -> Result<Pair> {
        let mut scratch = Scratch::new(tag)?;
        let a = scratch.add_netns("a")?;
        let b = scratch.add_netns("b")?;
        let pair = Pair {
            a,
            b,
            ctsync,
            ipv6: false,
            second_link: false,
            daemons: Vec::new(),
            scratch,
        };
        let (a, b) = (pair.a.as_str(), pair.b.as_str());
        run(&[
            "ip", "-n", a, "link", "add", "sync0", "type", "veth", "peer", "name", "sync0",
            "netns", b,
        ])?;
        for (ns, addr) in [(a, "198.18.255.1/24"), (b, "198.18.255.2/24")] {
            run(&["ip", "-n", ns, "addr", "add", addr, "dev", "sync0"])?;
            run(&["ip", "-n", ns, "link", "set", "sync0", "up"])?;
        }
        ctsync::write_key(&pair.ctsync, &pair.key())?;
        Ok(pair)
    }

    /// The working directory (configs, logs, sockets, keys).
    pub fn dir(&self) -> &Path {
        self.scratch.dir()
    }

    /// The cluster key both configurations name.
    pub fn key(&self) -> PathBuf {
        self.dir().join("cluster.key")
    }

    /// Run the sync link over IPv6 from now on: both nodes get an address from the
    /// documentation prefix (2001:db8:ff::1 and ::2, without duplicate address
    /// detection so that they can be bound at once) and configurations name them.
    pub fn use_ipv6(&mut self) -> Result<()> {
        for (ns, addr) in [
            (&self.a, "2001:db8:ff::1/64"),
            (&self.b, "2001:db8:ff::2/64"),
        ] {
            run(&["ip", "-n", ns, "addr", "add", addr, "dev", "sync0", "nodad"])?;
        }
        self.ipv6 = true;
        Ok(())
    }

    /// A second sync link from now on: a veth `sync1` between the nodes, 198.18.254.1 and
    /// .2, which configurations name as `[[sync.link]]` after `[sync]`'s `sync0`.
    pub fn add_second_link(&mut self) -> Result<()> {
        let (a, b) = (self.a.as_str(), self.b.as_str());
        run(&[
            "ip", "-n", a, "link", "add", "sync1", "type", "veth", "peer", "name", "sync1",
            "netns", b,
        ])?;
        for (ns, addr) in [(a, "198.18.254.1/24"), (b, "198.18.254.2/24")] {
            run(&["ip", "-n", ns, "addr", "add", addr, "dev", "sync1"])?;
            run(&["ip", "-n", ns, "link", "set", "sync1", "up"])?;
        }
        self.second_link = true;
        Ok(())
    }

    /// Set node `ns`'s interface `interface` `up` or `down` (cutting or mending a link:
    /// a veth's other end loses its carrier too).
    pub fn set_link(&self, ns: &str, interface: &str, state: &str) -> Result<()> {
        run(&["ip", "-n", ns, "link", "set", interface, state]).map(|_| ())
    }

    /// Node `ns`'s sync address and its peer's (IPv6 ones in brackets).
    fn addresses(&self, ns: &str) -> Result<(&'static str, &'static str)> {
        let (one, two) = if self.ipv6 {
            ("[2001:db8:ff::1]", "[2001:db8:ff::2]")
        } else {
            ("198.18.255.1", "198.18.255.2")
        };
        if ns == self.a {
            Ok((one, two))
        } else if ns == self.b {
            Ok((two, one))
        } else {
            bail!(
                "{ns} is not a node of this pair ({} and {})",
                self.a,
                self.b
            )
        }
    }

    /// Write node `ns`'s configuration (`role` at start); its path.
    pub fn config(&self, ns: &str, role: &str) -> Result<PathBuf> {
        self.config_with(ns, role, "")
    }

    /// [`Pair::config`] with `extra` TOML appended (further sections).
    pub fn config_with(&self, ns: &str, role: &str, extra: &str) -> Result<PathBuf> {
        self.config_sync(ns, role, "kernel_resync_secs = 2\n", extra)
    }

    /// Like [`Pair::config_with`], with `sync` (lines of `[sync]`) instead of the table
    /// re-read every 2 s that the other tests use.
    pub fn config_sync(&self, ns: &str, role: &str, sync: &str, extra: &str) -> Result<PathBuf> {
        let (me, peer) = self.addresses(ns)?;
        let second = if !self.second_link {
            String::new()
        } else {
            let (me2, peer2) = if ns == self.a {
                ("198.18.254.1", "198.18.254.2")
            } else {
                ("198.18.254.2", "198.18.254.1")
            };
            format!(
                "[[sync.link]]\ninterface = \"sync1\"\nlocal = \"{me2}:{SYNC_PORT}\"\npeers = [\"{peer2}:{SYNC_PORT}\"]\n"
            )
        };
        let path = self.dir().join(format!("{ns}.toml"));
        // Each node follows keepalived's instance VI_1 through its own notify_fifo.
        let keepalived = format!(
            "[keepalived]\nnotify_fifo = \"{}\"\ninstance = \"VI_1\"\ntrack_file = \"{}\"\n",
            self.dir().join(format!("{ns}.fifo")).display(),
            self.dir().join(format!("{ns}.ready")).display()
        );
        let text = format!(
            "node = \"{ns}\"\nnetns = \"{ns}\"\nrole = \"{role}\"\n[sync]\ninterface = \"sync0\"\nlocal = \"{me}:{SYNC_PORT}\"\npeers = [\"{peer}:{SYNC_PORT}\"]\n{sync}key_file = \"{}\"\n{second}[control]\nsocket = \"{}\"\n",
            self.key().display(),
            self.socket(ns).display()
        ) + &keepalived
            + extra;
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// Write `line` to node `ns`'s notify FIFO, as keepalived would.
    pub fn keepalived_says(&self, ns: &str, line: &str) -> Result<()> {
        let path = self.dir().join(format!("{ns}.fifo"));
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        f.write_all(format!("{line}\n").as_bytes())?;
        Ok(())
    }

    /// What node `ns`'s track file says (`0` ready, `1` not).
    pub fn track(&self, ns: &str) -> String {
        fs::read_to_string(self.dir().join(format!("{ns}.ready")))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// Node `ns`'s control socket.
    pub fn socket(&self, ns: &str) -> PathBuf {
        self.dir().join(format!("{ns}.sock"))
    }

    /// Node `ns`'s `ctsync status`.
    pub fn status(&self, ns: &str) -> Result<serde_json::Value> {
        ctsync::request(&self.socket(ns), "status")
    }

    /// Write node `ns`'s configuration and start its daemon.
    pub fn start(&mut self, ns: &str, role: &str) -> Result<()> {
        let cfg = self.config(ns, role)?;
        self.spawn(ns, &cfg, None)
    }

    /// Start node `ns`'s daemon on `cfg`, with systemd's NOTIFY_SOCKET if `notify`, and
    /// wait until its control socket answers.
    pub fn spawn(&mut self, ns: &str, cfg: &Path, notify: Option<&Path>) -> Result<()> {
        self.spawn_as(ns, cfg, notify, None)
    }

    /// Node `ns`'s state directory (where its daemon keeps its epoch).
    pub fn state_dir(&self, ns: &str) -> PathBuf {
        self.dir().join(format!("{ns}.state"))
    }

    /// [`Pair::spawn`], with the daemon's wall clock offset by `faketime` (e.g. `-1h`,
    /// through Debian's `faketime`) if given.
    pub fn spawn_as(
        &mut self,
        ns: &str,
        cfg: &Path,
        notify: Option<&Path>,
        faketime: Option<&str>,
    ) -> Result<()> {
        let log_path = self.dir().join(format!("{ns}.log"));
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let state = self.state_dir(ns);
        let how = ctsync::Launch {
            notify,
            state: &state,
            faketime,
        };
        let child = ctsync::spawn_run(&self.ctsync, cfg, log, how)?;
        self.daemons.push(child);
        if !ctsync::answers_within(&self.socket(ns), Duration::from_secs(10))? {
            bail!(
                "{ns}'s ctsync did not come up within 10 s:\n{}",
                self.logs()
            );
        }
        Ok(())
    }

    /// The process id of the `n`th daemon started (0 the first).
    pub fn pid(&self, n: usize) -> Option<i32> {
        self.daemons.get(n).map(|c| c.id() as i32)
    }

    /// Wait until the `n`th daemon started has exited; how.
    pub fn wait_daemon(&mut self, n: usize) -> Result<ExitStatus> {
        let Some(c) = self.daemons.get_mut(n) else {
            bail!("no daemon number {n}: {} started", self.daemons.len());
        };
        Ok(c.wait()?)
    }

    /// Both nodes' logs, for a failure message.
    pub fn logs(&self) -> String {
        crate::process::node_logs(self.dir(), [&self.a, &self.b])
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        crate::process::stop_daemons(&mut self.daemons);
        // Then `scratch` removes the namespaces and the directory.
    }
}
