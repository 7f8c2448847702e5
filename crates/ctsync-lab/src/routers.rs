//! A Neutron network node's shape (issue 19): two "hosts", each a namespace holding the
//! sync link, and N virtual routers, each with a replica on either host, its own
//! keepalived instance per replica and its own client and server. One ctsync per host
//! replicates every router's namespace on that host (`[namespaces]`), not one per router.
//!
//! ```text
//!   PFX-hostA  sync0 198.18.250.1 ───────── 198.18.250.2 sync0  PFX-hostB
//!              (ctsync A)                                       (ctsync B)
//!
//!   router i (every router the same addresses, as Neutron tenants' overlap):
//!                        ┌─ lan [PFX-a-qrouter-i] wan ─┐
//!     PFX-c-i client ─ br0        ha 198.18.254.1       br0 ─ PFX-s-i server
//!                        │            │                 │
//!                        │   PFX-net: bridge hai (VRRP) │
//!                        │            │                 │
//!                        └─ lan [PFX-b-qrouter-i] wan ─┘
//!                                 ha 198.18.254.2
//! ```
//!
//! The routers' HA links go through a switch (`PFX-net`, a bridge per router), as
//! Neutron's HA networks go through the hosts' virtual switches: a replica failing
//! takes its own port down, not its peer's carrier. The sync link is a veth straight
//! from host to host (a cable).
//!
//! Each replica is a [`crate::firewall`]: the same segments, rules (SNAT to the WAN
//! virtual address with random ports, a DNAT'd floating IP) and addresses as the demo's
//! firewalls. Its keepalived runs in the replica's namespace with one VRRP instance on
//! the router's HA link (`ha`, as Neutron's `ha-…` port) moving both virtual addresses,
//! priorities 150 (host A) and 100 (host B), `nopreempt` (as Neutron writes it). Its
//! notify hooks do what Neutron's `neutron-keepalived-state-change` does: write
//! `primary` or `backup` into the router's state file, `HOST/ha_confs/ID/state`, which
//! ctsync watches.
//!
//! ctsync on host A runs in `PFX-hostA` with `match = "PFX-a-qrouter-*"`: the router's
//! id, what `*` matched, names the replicas of one router on both hosts. The control is
//! the same lab without ctsync.
//!
//! Everything is removed when the [`Lab`] is dropped, also on failure. Only processes the
//! lab started are signalled, by their own pid or process group.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::ctsync;
use crate::firewall::{
    self, CLIENT, DNAT_TCP_PORT, DNAT_UDP_PORT, Instance, KeepalivedFiles, LAN_VIP, LAN_VIP6,
    SERVER, TCP_PORT, UDP_PORT, WAN_VIP, WAN_VIP6,
};
use crate::hosts::{HostConfig, wire_sync_link};
use crate::process::{kill_group, pause, run, terminate, wait};
use crate::scratch::Scratch;
use crate::traffic::{EchoServer, Report, Sessions};

/// The hosts' node names (host A, host B).
pub const NODES: [&str; 2] = ["hostA", "hostB"];
/// The hosts' letters in namespace names (`PFX-a-qrouter-1`).
const SIDES: [&str; 2] = ["a", "b"];
/// Each replica's address on its router's HA link.
const HA_ADDRS: [&str; 2] = ["198.18.254.1/24", "198.18.254.2/24"];
/// VRRP priorities: host A preferred.
const PRIORITIES: [u8; 2] = [150, 100];
/// How many routers a lab may have.
pub const MAX_ROUTERS: usize = 64;
/// How long a signalled process of the lab has to stop before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// How to build a lab.
#[derive(Debug, Clone)]
pub struct Options {
    /// Part of every namespace name (`ctsy-TAG-PID-…`): unique per test.
    pub tag: String,
    /// The `ctsync` binary; `None` builds the control lab, without replication.
    pub ctsync: Option<PathBuf>,
    /// How many routers (1 to [`MAX_ROUTERS`]).
    pub routers: usize,
    /// VRRP advertisement interval in milliseconds (keepalived declares the master dead
    /// after about three of them).
    pub advert_ms: u32,
}

impl Options {
    /// A lab of `routers` routers, with ctsync (`ctsync` is the binary to run), 300 ms
    /// adverts (40 keepalived instances share a small machine with other work).
    pub fn new(tag: &str, ctsync: Option<PathBuf>, routers: usize) -> Options {
        Options {
            tag: tag.to_string(),
            ctsync,
            routers,
            advert_ms: 300,
        }
    }
}

/// One virtual router: its replicas (on host A and host B), its client and its server.
#[derive(Debug, Clone)]
pub struct Router {
    /// Its id (`1`, `2`, …): what the pattern's `*` matches in its replicas' names.
    pub id: String,
    /// Its replicas' namespaces, `PFX-a-qrouter-ID` on host A and `PFX-b-qrouter-ID`.
    pub replicas: [String; 2],
    /// The client's namespace (198.18.1.100 behind the LAN virtual address).
    pub client: String,
    /// The server's namespace (198.19.0.100 on the WAN side).
    pub server: String,
}

/// The lab. Dropping it stops its processes and removes its namespaces and files.
#[derive(Debug)]
pub struct Lab {
    /// The hosts' namespaces (each holds its end of the sync link and its ctsync).
    pub hosts: [String; 2],
    /// The switch of the routers' HA links (a bridge per router, `haID`).
    pub switch: String,
    /// The routers.
    pub routers: Vec<Router>,
    opts: Options,
    /// Per router, per host.
    keepalived: Vec<[Option<Child>; 2]>,
    /// Per host.
    ctsync: [Option<Child>; 2],
    // Last: dropped after `Drop for Lab` stopped the processes.
    scratch: Scratch,
}

impl Lab {
    /// Build the namespaces, links, addresses, firewall rules, keepalived and ctsync
    /// configurations and the key. Nothing runs yet: see [`Lab::bring_up`].
    pub fn build(opts: Options) -> Result<Lab> {
        let mut scratch = Scratch::new(&opts.tag)?;
        firewall::check_tools()?;
        if !(1..=MAX_ROUTERS).contains(&opts.routers) {
            bail!("a lab has 1 to {MAX_ROUTERS} routers, not {}", opts.routers);
        }
        // Namespaces are recorded as soon as they exist: a failure below removes them.
        let hosts = [scratch.add_netns(NODES[0])?, scratch.add_netns(NODES[1])?];
        let switch = scratch.add_netns("net")?;
        let mut routers = Vec::new();
        for i in 1..=opts.routers {
            routers.push(Router {
                id: i.to_string(),
                replicas: [
                    scratch.add_netns(&format!("{}-qrouter-{i}", SIDES[0]))?,
                    scratch.add_netns(&format!("{}-qrouter-{i}", SIDES[1]))?,
                ],
                client: scratch.add_netns(&format!("c-{i}"))?,
                server: scratch.add_netns(&format!("s-{i}"))?,
            });
        }
        let lab = Lab {
            hosts,
            switch,
            keepalived: routers.iter().map(|_| [None, None]).collect(),
            routers,
            opts,
            ctsync: [None, None],
            scratch,
        };
        lab.wire()?;
        Ok(lab)
    }

    fn wire(&self) -> Result<()> {
        wire_sync_link(&self.hosts[0], &self.hosts[1])?;
        for h in 0..2 {
            let script = self.notify_script(h);
            fs::create_dir_all(script.parent().unwrap_or(self.dir()))?;
            // What Neutron's neutron-keepalived-state-change does on a transition: the
            // router's state file says the new state, written in place.
            fs::write(
                &script,
                format!(
                    "#!/bin/sh\n# keepalived's notify hook: ID STATE\nprintf '%s' \"$2\" > '{}'/\"$1\"/state\n",
                    self.ha_confs(h).display()
                ),
            )?;
            fs::set_permissions(&script, fs::Permissions::from_mode(0o700))?;
        }
        // Each router's wiring is independent of the others': a few at a time.
        std::thread::scope(|s| -> Result<()> {
            let mut pending = Vec::new();
            for chunk in self.routers.chunks(self.routers.len().div_ceil(4)) {
                pending.push(s.spawn(move || -> Result<()> {
                    for r in chunk {
                        self.wire_router(r)?;
                    }
                    Ok(())
                }));
            }
            for p in pending {
                p.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("wiring a router panicked")))?;
            }
            Ok(())
        })?;
        if let Some(bin) = &self.opts.ctsync {
            ctsync::write_key(bin, &self.key())?;
        }
        Ok(())
    }

    fn wire_router(&self, r: &Router) -> Result<()> {
        let [a, b] = &r.replicas;
        firewall::wire_segments(self.dir(), &r.client, &r.server, &[a, b])?;
        let (sw, bridge) = (&self.switch, format!("ha{}", r.id));
        run(&[
            "ip", "-n", sw, "link", "add", "name", &bridge, "type", "bridge",
        ])?;
        run(&["ip", "-n", sw, "link", "set", &bridge, "up"])?;
        for (h, ns) in r.replicas.iter().enumerate() {
            let port = format!("{}{}", SIDES[h], r.id);
            run(&[
                "ip", "-n", sw, "link", "add", "name", &port, "type", "veth", "peer", "name", "ha",
                "netns", ns,
            ])?;
            run(&[
                "ip", "-n", sw, "link", "set", &port, "master", &bridge, "up",
            ])?;
            run(&["ip", "-n", ns, "addr", "add", HA_ADDRS[h], "dev", "ha"])?;
            run(&["ip", "-n", ns, "link", "set", "ha", "up"])?;
            fs::create_dir_all(self.ha_confs(h).join(&r.id))?;
        }
        Ok(())
    }

    /// Start host A (its ctsync, then every router's keepalived) and wait until it is
    /// primary for every router; then host B, and wait until it is a ready backup of
    /// every router (in the control: until its keepalived had time to settle).
    pub fn bring_up(&mut self) -> Result<()> {
        self.start_host(0)?;
        let all_a = wait(Duration::from_secs(30), || {
            (0..self.routers.len())
                .all(|r| self.is_master(0, r) && self.state_file(0, r) == "primary")
                && self.all_in_role(0, "primary")
        })?;
        if all_a.is_none() {
            bail!(
                "host A is not primary for every router within 30 s: not master {:?}, state files {:?}\n{}",
                self.not_master(0),
                self.state_files(0),
                self.logs()
            );
        }
        self.start_host(1)?;
        self.wait_ready(1)?;
        if wait(Duration::from_secs(10), || {
            (0..self.routers.len()).all(|r| self.state_file(1, r) == "backup")
        })?
        .is_none()
        {
            bail!(
                "host B's state files do not all say backup within 10 s: {:?}\n{}",
                self.state_files(1),
                self.logs()
            );
        }
        let taken: Vec<&str> = (0..self.routers.len())
            .filter(|&r| self.has_any_vip(1, r))
            .map(|r| self.routers[r].id.as_str())
            .collect();
        if !taken.is_empty() {
            bail!(
                "host B took the virtual addresses of routers {taken:?} while host A is primary:\n{}",
                self.logs()
            );
        }
        Ok(())
    }

    /// Start host `h`: its ctsync (unless a control), then every router's keepalived.
    pub fn start_host(&mut self, h: usize) -> Result<()> {
        self.start_ctsync(h)?;
        for r in 0..self.routers.len() {
            self.start_keepalived(h, r)?;
        }
        Ok(())
    }

    /// Start host `h`'s ctsync and wait until its control socket answers.
    pub fn start_ctsync(&mut self, h: usize) -> Result<()> {
        let Some(bin) = self.opts.ctsync.clone() else {
            return Ok(());
        };
        let cfg = self.dir().join(format!("{}.toml", NODES[h]));
        fs::write(&cfg, self.ctsync_config(h))?;
        let state = self.dir().join(format!("{}.state", NODES[h]));
        let how = ctsync::Launch {
            notify: None,
            state: &state,
            faketime: None,
        };
        let log = firewall::append(&self.ctsync_log(h))?;
        self.ctsync[h] = Some(ctsync::spawn_run(&bin, &cfg, log, how)?);
        if !ctsync::answers_within(&self.socket(h), Duration::from_secs(10))? {
            bail!(
                "{}'s ctsync did not come up within 10 s:\n{}",
                NODES[h],
                self.logs()
            );
        }
        Ok(())
    }

    /// Start the keepalived of router `r`'s replica on host `h`.
    pub fn start_keepalived(&mut self, h: usize, r: usize) -> Result<()> {
        let dir = self.ha_confs(h).join(&self.routers[r].id);
        let files = KeepalivedFiles {
            conf: dir.join("keepalived.conf"),
            pid: dir.join("keepalived.pid"),
            vrrp_pid: dir.join("vrrp.pid"),
            log: dir.join("keepalived.log"),
        };
        fs::write(&files.conf, self.keepalived_config(h, r))?;
        let child = firewall::spawn_keepalived(&self.routers[r].replicas[h], &files)?;
        self.keepalived[r][h] = Some(child);
        Ok(())
    }

    fn keepalived_config(&self, h: usize, r: usize) -> String {
        let id = &self.routers[r].id;
        let script = self.notify_script(h);
        let mut extra = String::from("    nopreempt\n");
        for (hook, state) in [
            ("master", "primary"),
            ("backup", "backup"),
            ("fault", "backup"),
        ] {
            extra += &format!("    notify_{hook} \"{} {id} {state}\"\n", script.display());
        }
        let instance = Instance {
            name: &format!("VR_{id}"),
            interface: "ha",
            vrid: 1,
            priority: PRIORITIES[h],
            advert_ms: self.opts.advert_ms,
            vips: &[
                format!("{LAN_VIP}/24 dev lan"),
                format!("{WAN_VIP}/24 dev wan"),
            ],
            excluded: &[
                format!("{LAN_VIP6}/64 dev lan"),
                format!("{WAN_VIP6}/64 dev wan"),
            ],
            extra: &extra,
        }
        .text();
        format!(
            "global_defs {{\n    router_id {}-qrouter-{id}\n    vrrp_version 3\n    enable_script_security\n    script_user root\n}}\n{instance}",
            SIDES[h]
        )
    }

    fn ctsync_config(&self, h: usize) -> String {
        HostConfig {
            node: NODES[h],
            netns: &self.hosts[h],
            pattern: &format!("{}-{}-qrouter-*", self.scratch.prefix(), SIDES[h]),
            state_dir: &self.ha_confs(h),
            fifo_dir: None,
            track_dir: None,
            group: false,
            host: h,
            second_link: false,
            key: &self.key(),
            accept: &[],
            socket: &self.socket(h),
        }
        .text()
    }

    /// Whether this lab replicates (false: the control).
    pub fn replicates(&self) -> bool {
        self.opts.ctsync.is_some()
    }

    /// The lab's working directory (configs, logs, sockets, state files).
    pub fn dir(&self) -> &Path {
        self.scratch.dir()
    }

    /// Host `h`'s ctsync control socket.
    pub fn socket(&self, h: usize) -> PathBuf {
        self.dir().join(format!("{}.sock", NODES[h]))
    }

    fn key(&self) -> PathBuf {
        self.dir().join("cluster.key")
    }

    fn ctsync_log(&self, h: usize) -> PathBuf {
        self.dir().join(format!("{}-ctsync.log", NODES[h]))
    }

    /// Host `h`'s `ha_confs` directory (Neutron's `/var/lib/neutron/ha_confs`): a
    /// directory per router id with its keepalived files and its state file.
    pub fn ha_confs(&self, h: usize) -> PathBuf {
        self.dir().join(SIDES[h]).join("ha_confs")
    }

    fn notify_script(&self, h: usize) -> PathBuf {
        self.dir().join(SIDES[h]).join("notify.sh")
    }

    /// What router `r`'s state file on host `h` says (`primary`, `backup`; empty
    /// before keepalived's first transition).
    pub fn state_file(&self, h: usize, r: usize) -> String {
        fs::read_to_string(self.ha_confs(h).join(&self.routers[r].id).join("state"))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// Every router's state file on host `h`, by id.
    pub fn state_files(&self, h: usize) -> Vec<(String, String)> {
        (0..self.routers.len())
            .map(|r| (self.routers[r].id.clone(), self.state_file(h, r)))
            .collect()
    }

    /// Host `h`'s `ctsync status` (every namespace), if it runs.
    pub fn status(&self, h: usize) -> Option<serde_json::Value> {
        self.ctsync[h].as_ref()?;
        ctsync::request(&self.socket(h), "status").ok()
    }

    /// Host `h`'s `ctsync status --netns` of router `r`'s replica there, if it runs.
    pub fn router_status(&self, h: usize, r: usize) -> Option<serde_json::Value> {
        self.ctsync[h].as_ref()?;
        let name = &self.routers[r].replicas[h];
        ctsync::request(&self.socket(h), &format!("netns {name} status")).ok()
    }

    /// Router `r`'s entry in host `h`'s status (`namespaces[]`: name, id, role, ready,
    /// caches).
    pub fn namespace(&self, h: usize, r: usize) -> Option<serde_json::Value> {
        let name = &self.routers[r].replicas[h];
        self.status(h)?["namespaces"]
            .as_array()?
            .iter()
            .find(|n| n["name"] == name.as_str())
            .cloned()
    }

    /// Whether host `h`'s ctsync has router `r` in `role` (always true in the control).
    pub fn role_is(&self, h: usize, r: usize, role: &str) -> bool {
        !self.replicates() || self.namespace(h, r).is_some_and(|n| n["role"] == role)
    }

    /// Whether host `h`'s ctsync has every router's namespace in `role` (always true in
    /// the control).
    pub fn all_in_role(&self, h: usize, role: &str) -> bool {
        if !self.replicates() {
            return true;
        }
        let Some(status) = self.status(h) else {
            return false;
        };
        let Some(namespaces) = status["namespaces"].as_array() else {
            return false;
        };
        self.routers.iter().all(|r| {
            namespaces
                .iter()
                .any(|n| n["name"] == r.replicas[h].as_str() && n["role"] == role)
        })
    }

    /// Wait (at most 30 s) until host `h`'s ctsync has every router's namespace, each
    /// ready and backup (in the control: a second for keepalived to settle).
    pub fn wait_ready(&self, h: usize) -> Result<()> {
        if !self.replicates() {
            return pause(Duration::from_secs(2));
        }
        let n = self.routers.len();
        let ok = wait(Duration::from_secs(30), || {
            self.status(h).is_some_and(|s| {
                s["namespaces"].as_array().is_some_and(|v| {
                    v.len() == n
                        && v.iter()
                            .all(|x| x["ready"] == true && x["role"] == "backup")
                })
            })
        })?;
        if ok.is_none() {
            bail!(
                "{}'s ctsync is not a ready backup of all {n} routers within 30 s: {:?}\n{}",
                NODES[h],
                self.status(h),
                self.logs()
            );
        }
        Ok(())
    }

    /// Wait (at most 15 s) until the kernel of router `r`'s replica on host `h` holds at
    /// least `n` of the lab's sessions (the control returns at once).
    pub fn wait_replicated(&self, h: usize, r: usize, n: usize) -> Result<()> {
        if !self.replicates() {
            return Ok(());
        }
        let ns = &self.routers[r].replicas[h];
        if wait(Duration::from_secs(15), || {
            firewall::kernel_sessions(ns).is_ok_and(|k| k >= n)
        })?
        .is_none()
        {
            bail!(
                "{ns}'s kernel holds {:?} of {n} sessions after 15 s: {:?}\n{}",
                firewall::kernel_sessions(ns),
                self.namespace(h, r),
                self.logs()
            );
        }
        Ok(())
    }

    /// Conntrack entries of the lab's sessions in the kernel of router `r`'s replica on
    /// host `h`.
    pub fn kernel_sessions(&self, h: usize, r: usize) -> Result<usize> {
        firewall::kernel_sessions(&self.routers[r].replicas[h])
    }

    /// Whether router `r`'s replica on host `h` holds both virtual addresses (is the
    /// VRRP master).
    pub fn is_master(&self, h: usize, r: usize) -> bool {
        let (lan, wan) = firewall::vips_held(&self.routers[r].replicas[h]);
        lan && wan
    }

    /// Whether router `r`'s replica on host `h` holds either virtual address.
    pub fn has_any_vip(&self, h: usize, r: usize) -> bool {
        let (lan, wan) = firewall::vips_held(&self.routers[r].replicas[h]);
        lan || wan
    }

    /// The ids of the routers whose replica on host `h` is not master.
    pub fn not_master(&self, h: usize) -> Vec<&str> {
        (0..self.routers.len())
            .filter(|&r| !self.is_master(h, r))
            .map(|r| self.routers[r].id.as_str())
            .collect()
    }

    /// Wait (at most `limit`) until router `r`'s replica on host `h` is master; how long
    /// it took.
    pub fn wait_master(&self, h: usize, r: usize, limit: Duration) -> Result<Duration> {
        match wait(limit, || self.is_master(h, r))? {
            Some(d) => Ok(d),
            None => bail!(
                "router {} on {} is not master within {limit:?}:\n{}",
                self.routers[r].id,
                NODES[h],
                self.logs()
            ),
        }
    }

    /// Wait (at most `limit`) until host `h` is master of every router; how long it took.
    pub fn wait_all_master(&self, h: usize, limit: Duration) -> Result<Duration> {
        match wait(limit, || self.not_master(h).is_empty())? {
            Some(d) => Ok(d),
            None => bail!(
                "{} is not master of routers {:?} within {limit:?}:\n{}",
                NODES[h],
                self.not_master(h),
                self.logs()
            ),
        }
    }

    /// Router `r`'s replica on host `h` fails hard: its keepalived is killed (SIGKILL,
    /// so nothing rewrites its state file: it still says `primary`), then its links (LAN,
    /// WAN, HA) go down. The host, its ctsync and the other routers go on; the replica's
    /// namespace stays, stale.
    pub fn fail_router(&mut self, h: usize, r: usize) -> Result<()> {
        if let Some(mut k) = self.keepalived[r][h].take() {
            kill_group(&mut k);
        }
        self.links_down(h, r)
    }

    fn links_down(&self, h: usize, r: usize) -> Result<()> {
        let ns = &self.routers[r].replicas[h];
        for dev in ["lan", "wan", "ha"] {
            run(&["ip", "-n", ns, "link", "set", dev, "down"])?;
        }
        Ok(())
    }

    /// Host `h` fails hard, as a crash: its ctsync and every router's keepalived are
    /// killed (SIGKILL), then every router's links and the sync link go down.
    pub fn fail_host(&mut self, h: usize) -> Result<()> {
        if let Some(mut c) = self.ctsync[h].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for r in 0..self.routers.len() {
            if let Some(mut k) = self.keepalived[r][h].take() {
                kill_group(&mut k);
            }
        }
        for r in 0..self.routers.len() {
            self.links_down(h, r)?;
        }
        run(&["ip", "-n", &self.hosts[h], "link", "set", "sync0", "down"])?;
        Ok(())
    }

    /// The logs, for a failure message: both ctsync logs, and the end of every
    /// keepalived's.
    pub fn logs(&self) -> String {
        let mut out = firewall::tails(&[self.ctsync_log(0), self.ctsync_log(1)], 60);
        let keepalived: Vec<PathBuf> = (0..2)
            .flat_map(|h| {
                self.routers
                    .iter()
                    .map(move |r| self.ha_confs(h).join(&r.id).join("keepalived.log"))
            })
            .collect();
        out += &firewall::tails(&keepalived, 4);
        out
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Killed, not stopped: a keepalived stopping runs its notify hooks, which could
        // write a state file while the directory is being removed.
        for k in self.keepalived.iter_mut().flatten().flatten() {
            kill_group(k);
        }
        for c in self.ctsync.iter_mut().flatten() {
            terminate(c, STOP_GRACE);
        }
        // Then `scratch` removes the namespaces and the directory.
    }
}

/// The sessions through one router: out from its client to its server (SNAT to the WAN
/// virtual address, random ports) and in from its server to the floating IP (the WAN
/// virtual address's DNAT'd ports, to an echo server on the client's host).
#[derive(Debug)]
pub struct RouterSessions {
    /// Client to server, through SNAT.
    pub out: Sessions,
    /// Server to the floating IP, through DNAT.
    pub inbound: Sessions,
    // Dropped after the sessions.
    out_server: EchoServer,
    in_server: EchoServer,
}

impl RouterSessions {
    /// Start the echo servers of `router` and open `tcp` connections and `udp` flows each
    /// way.
    pub fn open(router: &Router, tcp: usize, udp: usize) -> Result<RouterSessions> {
        let out_server = EchoServer::start(&router.server)?;
        let in_server = EchoServer::start_at(&router.client, CLIENT.parse()?)?;
        let server: std::net::IpAddr = SERVER.parse()?;
        let vip: std::net::IpAddr = WAN_VIP.parse()?;
        let out = Sessions::open_to(
            &router.client,
            ((server, TCP_PORT).into(), (server, UDP_PORT).into()),
            tcp,
            udp,
            0,
        )
        .with_context(|| format!("router {}: sessions out", router.id))?;
        let inbound = Sessions::open_to(
            &router.server,
            ((vip, DNAT_TCP_PORT).into(), (vip, DNAT_UDP_PORT).into()),
            tcp,
            udp,
            0,
        )
        .with_context(|| format!("router {}: sessions in", router.id))?;
        Ok(RouterSessions {
            out,
            inbound,
            out_server,
            in_server,
        })
    }

    /// Both ways together: alive means echoing messages sent after `since`, nothing
    /// waiting longer than `patience`.
    pub fn report(&self, since: Instant, patience: Duration) -> Report {
        Report::combined([
            self.out.report(since, patience),
            self.inbound.report(since, patience),
        ])
    }

    /// How many sessions, both ways.
    pub fn len(&self) -> usize {
        self.out.tcp.len() + self.out.udp.len() + self.inbound.tcp.len() + self.inbound.udp.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// TCP connections the echo servers saw reset, both ways.
    pub fn resets(&self) -> u64 {
        [&self.out_server, &self.in_server]
            .iter()
            .map(|s| s.stats.resets.load(std::sync::atomic::Ordering::SeqCst))
            .sum()
    }

    /// Outbound UDP flows whose (SNAT'd) source port changed at the server.
    pub fn udp_changed(&self) -> usize {
        self.out_server.stats.udp_changed()
    }

    /// The first few errors, both ways.
    pub fn errors(&self) -> Vec<String> {
        let mut e = self.out.errors();
        e.extend(
            self.inbound
                .errors()
                .into_iter()
                .map(|s| format!("in: {s}")),
        );
        e
    }

    /// Every session alive since `since` (within `patience`), none reset, no UDP source
    /// port changed; else what was not.
    pub fn kept(&self, since: Instant, patience: Duration) -> std::result::Result<(), String> {
        let r = self.report(since, patience);
        if r.tcp_alive == r.tcp
            && r.udp_alive == r.udp
            && r.tcp_failed == 0
            && self.resets() == 0
            && self.udp_changed() == 0
        {
            return Ok(());
        }
        Err(format!(
            "{r:?}, {} reset, {} UDP source ports changed, errors {:?}",
            self.resets(),
            self.udp_changed(),
            self.errors()
        ))
    }
}

/// Open `tcp` connections and `udp` flows each way through every router of `lab`.
pub fn open_all(lab: &Lab, tcp: usize, udp: usize) -> Result<Vec<RouterSessions>> {
    lab.routers
        .iter()
        .map(|r| RouterSessions::open(r, tcp, udp))
        .collect()
}
