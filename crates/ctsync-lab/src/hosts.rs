//! Two bare hosts full of routers, for the `[namespaces]` daemon's end-to-end tests
//! (docs/NEUTRON.md): namespaces `ctsy-TAG-PID-ha` and `-hb` joined by a veth `sync0`
//! (198.18.250.1 and .2; a second link, `sync1`, on 198.18.251.0/24 with
//! [`Hosts::add_second_link`]), and router namespaces `ctsy-TAG-PID-a-rN` and `-b-rN` (router
//! N's replica on each host), each empty: a test fills their conntrack tables itself.
//! Each host's state files are `DIR/ha-a/N/state` and `DIR/ha-b/N/state`, as Neutron's
//! `ha_confs/{id}/state`. One `ctsync run` per host when a test starts it; no
//! keepalived, no traffic.
//!
//! Everything is removed when the [`Hosts`] is dropped, also on failure.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::ctsync;
use crate::process::run;
use crate::scratch::Scratch;

/// The multicast group of [`Hosts::group`]: TTL 1 on the hosts' own sync link.
pub const HOSTS_GROUP: &str = "239.255.19.1:3782";

/// The two hosts, `a` and `b`.
pub const HOSTS: [char; 2] = ['a', 'b'];

/// The hosts and their routers. Dropping it stops the daemons and removes everything.
#[derive(Debug)]
pub struct Hosts {
    /// Host a's and b's `[metrics] listen` port on 127.0.0.1 (of the test's own
    /// namespace), if any: set before [`Hosts::start`].
    pub metrics: [Option<u16>; 2],
    /// Roles from a notify FIFO per router (`role = "keepalived-fifo"`, the FIFOs
    /// `DIR/fifo-a/N` and `DIR/fifo-b/N`, written by [`Hosts::say`]) instead of state
    /// files: set before [`Hosts::start`].
    pub fifos: bool,
    /// Each router's readiness and staleness in its own files (`[namespaces] track_file
    /// = "DIR/track-a/{id}"`, `stale_file = "DIR/stale-a/{id}"`, stale after 1 s;
    /// read by [`Hosts::track`]): set before [`Hosts::start`].
    pub track: bool,
    /// Replicate live over the multicast group [`HOSTS_GROUP`] on `sync0` (`[sync]
    /// group`): set before [`Hosts::start`].
    pub group: bool,
    /// Host a's and b's `key_file` and `accept_key_files`, if not the cluster key
    /// ([`Hosts::key`]) alone: set before [`Hosts::start`] or [`Hosts::reload`].
    pub keys: [Option<(PathBuf, Vec<PathBuf>)>; 2],
    /// The hosts are also joined by `sync1` ([`Hosts::add_second_link`]), a
    /// `[[sync.link]]` of their configurations.
    second_link: bool,
    ctsync: PathBuf,
    daemons: Vec<(char, Child)>,
    // Last: dropped after `Drop for Hosts` stopped the daemons.
    scratch: Scratch,
}

impl Hosts {
    /// Build the two hosts, their sync link and the key (root only); no router yet.
    pub fn build(tag: &str, ctsync: PathBuf) -> Result<Hosts> {
        let mut scratch = Scratch::new(tag)?;
        let ha = scratch.add_netns("ha")?;
        let hb = scratch.add_netns("hb")?;
        wire_sync_link(&ha, &hb)?;
        let hosts = Hosts {
            metrics: [None, None],
            fifos: false,
            track: false,
            group: false,
            keys: [None, None],
            second_link: false,
            ctsync,
            daemons: Vec::new(),
            scratch,
        };
        ctsync::write_key(&hosts.ctsync, &hosts.dir().join("cluster.key"))?;
        Ok(hosts)
    }

    /// A new key file in the working directory (`ctsync keygen`); its path.
    pub fn new_key(&self, name: &str) -> Result<PathBuf> {
        let path = self.dir().join(name);
        ctsync::write_key(&self.ctsync, &path)?;
        Ok(path)
    }

    /// Write `host`'s configuration again and send its daemon SIGHUP.
    pub fn reload(&mut self, host: char) -> Result<()> {
        self.config(host)?;
        let Some((_, child)) = self.daemons.iter().find(|(h, _)| *h == host) else {
            bail!("host {host}'s daemon is not running");
        };
        let pid = child.id().to_string();
        run(&["kill", "-HUP", &pid])?;
        Ok(())
    }

    /// Whether `host`'s daemon is still running.
    pub fn running(&mut self, host: char) -> bool {
        self.daemons
            .iter_mut()
            .find(|(h, _)| *h == host)
            .is_some_and(|(_, c)| matches!(c.try_wait(), Ok(None)))
    }

    /// The working directory (configs, logs, sockets, state files).
    pub fn dir(&self) -> &Path {
        self.scratch.dir()
    }

    /// The namespace of router `n` on `host`.
    pub fn router(&self, host: char, n: usize) -> String {
        format!("{}-{host}-r{n}", self.scratch.prefix())
    }

    /// The namespace holding `host`'s sync link.
    pub fn host_netns(&self, host: char) -> String {
        format!("{}-h{host}", self.scratch.prefix())
    }

    /// Create router `n`'s namespace on `host`.
    pub fn add_router(&mut self, host: char, n: usize) -> Result<String> {
        self.scratch.add_netns(&format!("{host}-r{n}"))
    }

    /// Remove router `n`'s namespace on `host` (as Neutron does when a router moves).
    pub fn remove_router(&mut self, host: char, n: usize) -> Result<()> {
        self.scratch.del_netns(&format!("{host}-r{n}"))
    }

    /// Write router `n`'s state file on `host` (`primary`, `backup`, …), as keepalived's
    /// notify script would: a new file renamed over the old.
    pub fn set_state(&self, host: char, n: usize, state: &str) -> Result<()> {
        let dir = self.dir().join(format!("ha-{host}")).join(n.to_string());
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = dir.join("state.new");
        fs::write(&tmp, format!("{state}\n"))?;
        fs::rename(&tmp, dir.join("state"))?;
        Ok(())
    }

    /// Write `line` into router `n`'s notify FIFO on `host`, as its keepalived would
    /// (`INSTANCE "VR_1" MASTER 100`): the daemon must have created the FIFO (it does when
    /// the router's namespace appears).
    pub fn say(&self, host: char, n: usize, line: &str) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.dir().join(format!("fifo-{host}")).join(n.to_string());
        let mut f = fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        f.write_all(format!("{line}\n").as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    /// Join the hosts by a second sync link, `sync1` ([`SYNC_ADDRS2`]), which their
    /// configurations name from then on (`[[sync.link]]`): before [`Hosts::start`].
    pub fn add_second_link(&mut self) -> Result<()> {
        wire_link(
            &self.host_netns('a'),
            &self.host_netns('b'),
            "sync1",
            SYNC_ADDRS2,
        )?;
        self.second_link = true;
        Ok(())
    }

    /// Cut the sync link `dev` (`sync0` or `sync1`): its veth goes down (both ends lose
    /// their carrier, and the routes over it go).
    pub fn cut(&self, dev: &str) -> Result<()> {
        run(&[
            "ip",
            "-n",
            &self.host_netns('a'),
            "link",
            "set",
            dev,
            "down",
        ])?;
        Ok(())
    }

    /// Mend the sync link `dev` that [`Hosts::cut`] cut: its veth comes up again (with
    /// the routes over it).
    pub fn mend(&self, dev: &str) -> Result<()> {
        run(&["ip", "-n", &self.host_netns('a'), "link", "set", dev, "up"])?;
        Ok(())
    }

    /// What router `n`'s track file (`"track"`) or stale file (`"stale"`) on `host`
    /// says, trimmed; `None` while there is no such file ([`Hosts::track`]).
    pub fn track(&self, host: char, n: usize, which: &str) -> Option<String> {
        // The router's id is its number (what `*` of `PREFIX-H-r*` matched).
        fs::read_to_string(self.dir().join(format!("{which}-{host}/{n}")))
            .ok()
            .map(|s| s.trim().to_string())
    }

    /// `host`'s control socket.
    pub fn socket(&self, host: char) -> PathBuf {
        self.dir().join(format!("host-{host}.sock"))
    }

    /// Write `host`'s configuration; its path.
    pub fn config(&self, host: char) -> Result<PathBuf> {
        let path = self.dir().join(format!("host-{host}.toml"));
        let cluster = (self.dir().join("cluster.key"), Vec::new());
        let (key, accept) = self.keys[usize::from(host != 'a')]
            .as_ref()
            .unwrap_or(&cluster);
        let text = HostConfig {
            node: &format!("host-{host}"),
            netns: &self.host_netns(host),
            pattern: &format!("{}-{host}-r*", self.scratch.prefix()),
            state_dir: &self.dir().join(format!("ha-{host}")),
            fifo_dir: self
                .fifos
                .then(|| self.dir().join(format!("fifo-{host}")))
                .as_deref(),
            track_dir: self.track.then(|| self.dir()),
            group: self.group,
            host: usize::from(host != 'a'),
            second_link: self.second_link,
            key,
            accept,
            socket: &self.socket(host),
        }
        .text();
        let metrics = match self.metrics[usize::from(host == 'b')] {
            Some(port) => format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"),
            None => String::new(),
        };
        fs::write(&path, text + &metrics).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// Start `host`'s daemon and wait until its control socket answers.
    pub fn start(&mut self, host: char) -> Result<()> {
        let cfg = self.config(host)?;
        let log_path = self.dir().join(format!("host-{host}.log"));
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let state = self.dir().join(format!("host-{host}.state"));
        let how = ctsync::Launch {
            notify: None,
            state: &state,
            faketime: None,
        };
        let child = ctsync::spawn_run(&self.ctsync, &cfg, log, how)?;
        self.daemons.push((host, child));
        if !ctsync::answers_within(&self.socket(host), Duration::from_secs(10))? {
            bail!(
                "host {host}'s ctsync did not come up within 10 s:\n{}",
                self.logs()
            );
        }
        Ok(())
    }

    /// A control request to `host`'s daemon (`netns NAME …` names a router).
    pub fn request(&self, host: char, request: &str) -> Result<serde_json::Value> {
        ctsync::request(&self.socket(host), request)
    }

    /// Both hosts' logs, for a failure message.
    pub fn logs(&self) -> String {
        let names = HOSTS.map(|h| format!("host-{h}"));
        crate::process::node_logs(self.dir(), &names)
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        let mut children: Vec<Child> = self.daemons.drain(..).map(|(_, c)| c).collect();
        crate::process::stop_daemons(&mut children);
        // Then `scratch` removes the namespaces and the directory.
    }
}

/// The hosts' addresses on the sync link (the first host's, the second's).
pub const SYNC_ADDRS: [&str; 2] = ["198.18.250.1", "198.18.250.2"];
/// The hosts' addresses on the second sync link ([`Hosts::add_second_link`]).
pub const SYNC_ADDRS2: [&str; 2] = ["198.18.251.1", "198.18.251.2"];
/// The sync port.
pub const SYNC_PORT: u16 = 3780;

/// Join the host namespaces `a` and `b` by the sync link: a veth `sync0` from one to the
/// other (a cable), [`SYNC_ADDRS`] with a /24.
pub(crate) fn wire_sync_link(a: &str, b: &str) -> Result<()> {
    wire_link(a, b, "sync0", SYNC_ADDRS)
}

/// A veth `dev` from `a` to `b`, `addrs` (a's, b's) with a /24.
fn wire_link(a: &str, b: &str, dev: &str, addrs: [&str; 2]) -> Result<()> {
    run(&[
        "ip", "-n", a, "link", "add", dev, "type", "veth", "peer", "name", dev, "netns", b,
    ])?;
    for (i, ns) in [a, b].into_iter().enumerate() {
        let addr = format!("{}/24", addrs[i]);
        run(&["ip", "-n", ns, "addr", "add", &addr, "dev", dev])?;
        run(&["ip", "-n", ns, "link", "set", dev, "up"])?;
    }
    Ok(())
}

/// A host's configuration: one daemon replicating every router namespace of the host
/// (`[namespaces]`, roles from state files) over the sync link of [`wire_sync_link`].
#[derive(Debug, Clone)]
pub(crate) struct HostConfig<'a> {
    pub(crate) node: &'a str,
    /// The namespace holding the host's end of the sync link.
    pub(crate) netns: &'a str,
    /// `[namespaces] match`, with its one `*`.
    pub(crate) pattern: &'a str,
    /// Where the state files are: `STATE_DIR/{id}/state`, as Neutron's `ha_confs`.
    pub(crate) state_dir: &'a Path,
    /// Roles from notify FIFOs instead, `FIFO_DIR/{id}`.
    pub(crate) fifo_dir: Option<&'a Path>,
    /// Each router's track and stale files, `TRACK_DIR/track-H/{id}` and
    /// `TRACK_DIR/stale-H/{id}` (H: a or b), stale after 1 s.
    pub(crate) track_dir: Option<&'a Path>,
    /// `[sync] group = HOSTS_GROUP`.
    pub(crate) group: bool,
    /// Which host: 0 (the first of [`SYNC_ADDRS`]) or 1.
    pub(crate) host: usize,
    /// A second sync link over `sync1` ([`SYNC_ADDRS2`]).
    pub(crate) second_link: bool,
    pub(crate) key: &'a Path,
    /// `accept_key_files`.
    pub(crate) accept: &'a [PathBuf],
    pub(crate) socket: &'a Path,
}

impl HostConfig<'_> {
    /// The configuration file's text.
    pub(crate) fn text(&self) -> String {
        format!(
            r#"node = "{node}"
netns = "{netns}"
[namespaces]
match = "{pattern}"
{roles}
{track}[sync]
interface = "sync0"
local = "{local}:{SYNC_PORT}"
peers = ["{peer}:{SYNC_PORT}"]
key_file = "{key}"
accept_key_files = [{accept}]
{group}{link2}[control]
socket = "{socket}"
[timers]
dead_ms = 1500
"#,
            node = self.node,
            netns = self.netns,
            pattern = self.pattern,
            roles = match self.fifo_dir {
                Some(d) => format!(
                    "role = \"keepalived-fifo\"\nnotify_fifo = \"{}/{{id}}\"",
                    d.display()
                ),
                None => format!(
                    "role = \"keepalived-state\"\nstate_file = \"{}/{{id}}/state\"",
                    self.state_dir.display()
                ),
            },
            track = match self.track_dir {
                Some(d) => {
                    let h = if self.host == 0 { 'a' } else { 'b' };
                    format!(
                        "track_file = \"{d}/track-{h}/{{id}}\"\nstale_file = \"{d}/stale-{h}/{{id}}\"\nstale_after_secs = 1\n",
                        d = d.display()
                    )
                }
                None => String::new(),
            },
            group = if self.group {
                format!("group = \"{HOSTS_GROUP}\"\n")
            } else {
                String::new()
            },
            local = SYNC_ADDRS[self.host],
            peer = SYNC_ADDRS[1 - self.host],
            link2 = if self.second_link {
                format!(
                    "[[sync.link]]\ninterface = \"sync1\"\nlocal = \"{}:{SYNC_PORT}\"\npeers = [\"{}:{SYNC_PORT}\"]\n",
                    SYNC_ADDRS2[self.host],
                    SYNC_ADDRS2[1 - self.host]
                )
            } else {
                String::new()
            },
            key = self.key.display(),
            accept = self
                .accept
                .iter()
                .map(|p| format!("\"{}\"", p.display()))
                .collect::<Vec<_>>()
                .join(", "),
            socket = self.socket.display(),
        )
    }
}
