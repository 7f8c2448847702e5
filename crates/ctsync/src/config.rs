//! The daemon's configuration file (TOML) and the cluster key file.
//!
//! Every error names the file, the line where the toml parser can tell, and what was
//! expected, before anything starts.

use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ctsync_core::{Mode, Role};
use serde::Deserialize;

pub use namespaces::{Namespaces, RoleSource, instance_role, parse_state};

/// `[sync]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sync {
    /// The interface of the sync link (checked to exist).
    pub interface: String,
    /// This node's address and port on the sync link (an IPv6 link-local address is
    /// scoped to `interface`; `[fe80::1%eth3]:3780` may say so).
    #[serde(deserialize_with = "scoped::one")]
    pub local: SocketAddr,
    /// The other nodes' addresses and ports.
    #[serde(deserialize_with = "scoped::many")]
    pub peers: Vec<SocketAddr>,
    /// The cluster key: 64 hex digits, root-only (`ctsync keygen` writes one).
    pub key_file: PathBuf,
    /// Further cluster keys accepted from peers, for an online rotation (see
    /// docs/SECURITY.md); each must be root-only like `key_file`.
    #[serde(default)]
    pub accept_key_files: Vec<PathBuf>,
    /// How replicated flows reach the backup's kernel: `hot-standby` (default: as they
    /// arrive) or `commit` (when this node becomes primary).
    #[serde(default)]
    pub mode: Mode,
    /// AEAD: `chacha20-poly1305` (default) or `aes-256-gcm`.
    #[serde(default)]
    pub cipher: Option<String>,
    /// Keep TCP window tracking on flows written to the kernel (default false: written
    /// with the kernel's be-liberal flag, as conntrackd does; see docs/KERNEL.md).
    #[serde(default)]
    pub tcp_window_tracking: bool,
    /// The most flows one cache holds (this node's, and each peer's copy); beyond it new
    /// flows are refused, counted and logged, and the copy is not ready (default
    /// 4194304, like conntrackd's HashLimit: set it to about 2 × nf_conntrack_max).
    #[serde(default = "default_max_flows")]
    pub max_flows: usize,
    /// Seconds between re-reads of the kernel table (default 300; 0: never; at most a
    /// day).
    #[serde(default = "default_kernel_resync")]
    pub kernel_resync_secs: u64,
    /// Further sync links (`[[sync.link]]`), tried in order after the first (`[sync]`'s
    /// own interface, local and peers) when a peer goes silent on the ones before.
    #[serde(default, rename = "link")]
    pub extra_links: Vec<Link>,
    /// A multicast group (`"239.255.1.1:3780"`, or `"[ff02::1:3]:3780"` on `interface`)
    /// that live replication goes to once for every peer (docs/PROTOCOL.md §13), TTL 1,
    /// on the first link; every node of the cluster must set the same. `peers` still
    /// lists the nodes (identities, handshake, acknowledgements, bulk transfers).
    #[serde(default)]
    pub group: Option<SocketAddr>,
}

/// One sync link: an interface, this node's address on it and the peers' addresses on
/// it. `[sync]`'s `interface`, `local` and `peers` are the first; `[[sync.link]]` tables
/// the others, whose `peers` name the same nodes in the same order as `[sync] peers`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    /// Its interface (checked to exist).
    pub interface: String,
    /// This node's address and port on it.
    #[serde(deserialize_with = "scoped::one")]
    pub local: SocketAddr,
    /// The other nodes' addresses and ports on it, in `[sync] peers`' order.
    #[serde(deserialize_with = "scoped::many")]
    pub peers: Vec<SocketAddr>,
}

/// Sync addresses with an optional IPv6 scope by interface name (`[fe80::2%eth3]:3780`),
/// which Rust's own parser takes only as a number. A link-local address is always scoped
/// to its link's interface (the daemon sets the index when it binds); a name written
/// after `%` is kept here while the file is read, and [`Config::parse`] checks that it
/// is that interface.
mod conntrackd;
pub use conntrackd::{ConntrackdLink, ConntrackdPeer, ConntrackdTransport, PeerAddr};

mod scoped {
    use std::cell::RefCell;
    use std::net::{SocketAddr, SocketAddrV6};

    use serde::{Deserialize, Deserializer};

    thread_local! {
        static NAMES: RefCell<Vec<(SocketAddr, String)>> = const { RefCell::new(Vec::new()) };
    }

    /// The scope names read since the last call, with their addresses.
    pub(super) fn take() -> Vec<(SocketAddr, String)> {
        NAMES.with(|n| std::mem::take(&mut *n.borrow_mut()))
    }

    /// `addr:port`, or `[v6%name]:port` / `[v6%index]:port`.
    pub(super) fn parse(s: &str) -> Result<SocketAddr, String> {
        let bad = || {
            format!(
                "invalid socket address {s:?}: expected ip:port, [ipv6]:port or [ipv6%interface]:port"
            )
        };
        let Some((inside, port)) = s
            .strip_prefix('[')
            .and_then(|r| r.split_once("]:"))
            .filter(|(i, _)| i.contains('%'))
        else {
            return s.parse().map_err(|_| bad());
        };
        let (ip, scope) = inside.split_once('%').ok_or_else(bad)?;
        let ip: std::net::Ipv6Addr = ip.parse().map_err(|_| bad())?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        if scope.is_empty() {
            return Err(bad());
        }
        let (id, name) = match scope.parse::<u32>() {
            Ok(i) => (i, None),
            Err(_) => (0, Some(scope.to_string())),
        };
        let a = SocketAddr::V6(SocketAddrV6::new(ip, port, 0, id));
        if let Some(name) = name {
            NAMES.with(|n| n.borrow_mut().push((a, name)));
        }
        Ok(a)
    }

    pub(super) fn one<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
        parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }

    pub(super) fn many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| parse(s).map_err(serde::de::Error::custom))
            .collect()
    }
}

/// Whether `a` is an IPv6 link-local address (fe80::/10), which needs a scope.
pub fn is_link_local(a: &SocketAddr) -> bool {
    matches!(a, SocketAddr::V6(v) if v.ip().segments()[0] & 0xffc0 == 0xfe80)
}

/// The most sync links (conntrackd's limit too).
pub const MAX_LINKS: usize = 4;

impl Sync {
    /// Every sync link, the first (`[sync]`'s own keys) first.
    pub fn links(&self) -> Vec<Link> {
        let first = Link {
            interface: self.interface.clone(),
            local: self.local,
            peers: self.peers.clone(),
        };
        std::iter::once(first)
            .chain(self.extra_links.iter().cloned())
            .collect()
    }
}

fn default_max_flows() -> usize {
    1 << 22
}

fn default_kernel_resync() -> u64 {
    300
}

/// The longest any duration in the file may be, in seconds: one day.
pub const DAY_SECS: u64 = 86_400;

/// `[control]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Control {
    /// The control socket.
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
}

fn default_socket() -> PathBuf {
    PathBuf::from("/run/ctsync/ctsync.sock")
}

impl Default for Control {
    fn default() -> Self {
        Control {
            socket: default_socket(),
        }
    }
}

/// `[filter]`: which flows are replicated.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterSection {
    /// Layer-4 protocols by name (`tcp`, `udp`, `icmp`, `icmpv6`, `sctp`, `gre`, `udplite`)
    /// or number; empty or absent: all.
    #[serde(default)]
    pub protocols: Vec<ProtocolName>,
    /// Address prefixes (`198.18.0.0/15`, `2001:db8::/32`, or a single address).
    #[serde(default)]
    pub addresses: Vec<String>,
    /// `true`: replicate only flows touching `addresses`; `false` (default): all but those.
    #[serde(default)]
    pub accept: bool,
    /// Replicate TCP flows only once established.
    #[serde(default)]
    pub tcp_established_only: bool,
    /// Replicate only these conntrack zones; empty: all.
    #[serde(default)]
    pub zones: Vec<u16>,
    /// Do not replicate flows younger than this many seconds.
    #[serde(default)]
    pub delay_secs: f64,
}

/// A protocol as written in `[filter] protocols`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ProtocolName {
    /// A name.
    Name(String),
    /// An IP protocol number.
    Number(u8),
}

impl ProtocolName {
    /// Its IP protocol number.
    pub fn number(&self) -> Option<u8> {
        match self {
            ProtocolName::Number(n) => Some(*n),
            ProtocolName::Name(n) => match n.as_str() {
                "tcp" => Some(6),
                "udp" => Some(17),
                "icmp" => Some(1),
                "icmpv6" => Some(58),
                "sctp" => Some(132),
                "gre" => Some(47),
                "udplite" => Some(136),
                _ => None,
            },
        }
    }
}

/// Parse `198.18.0.0/15` or a bare address.
pub fn parse_prefix(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a.parse::<IpAddr>().ok()?, l.parse::<u8>().ok()?),
        None => {
            let a = s.parse::<IpAddr>().ok()?;
            (a, if a.is_ipv4() { 32 } else { 128 })
        }
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((addr, len))
}

/// `[timers]`, all optional, each above 0 and at most one day.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timers {
    /// Send something to every peer at least this often (milliseconds).
    #[serde(default = "default_alive_ms")]
    pub alive_ms: u64,
    /// A peer silent for this long is down (milliseconds).
    #[serde(default = "default_dead_ms")]
    pub dead_ms: u64,
    /// Hot standby: refresh the kernel timeouts of replicated flows this often (seconds).
    #[serde(default = "default_refresh_secs")]
    pub refresh_secs: u64,
    /// Exchange table digests this often (seconds).
    #[serde(default = "default_digest_secs")]
    pub digest_secs: u64,
    /// Becoming backup: shorten the kernel timeouts of local flows to this (seconds).
    #[serde(default = "default_shorten_secs")]
    pub shorten_timeout_secs: u64,
}

fn default_alive_ms() -> u64 {
    500
}
fn default_dead_ms() -> u64 {
    3000
}
fn default_refresh_secs() -> u64 {
    30
}
fn default_digest_secs() -> u64 {
    5
}
fn default_shorten_secs() -> u64 {
    60
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            alive_ms: default_alive_ms(),
            dead_ms: default_dead_ms(),
            refresh_secs: default_refresh_secs(),
            digest_secs: default_digest_secs(),
            shorten_timeout_secs: default_shorten_secs(),
        }
    }
}

/// `[metrics]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// Serve Prometheus metrics at `http://LISTEN/metrics`, unauthenticated: an
    /// `address:port`, or a bare port (`9780` or `":9780"`) for 127.0.0.1 only.
    #[serde(deserialize_with = "listen_address")]
    pub listen: SocketAddr,
}

/// `[metrics] listen`: `"address:port"`, or a port alone on loopback.
fn listen_address<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    use serde::de::{Error, Unexpected, Visitor};

    struct Listen;

    fn loopback(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    impl Visitor<'_> for Listen {
        type Value = SocketAddr;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("\"address:port\" (e.g. \"127.0.0.1:9780\") or a port (9780, on 127.0.0.1)")
        }

        fn visit_i64<E: Error>(self, v: i64) -> Result<SocketAddr, E> {
            u16::try_from(v)
                .map(loopback)
                .map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
        }

        fn visit_u64<E: Error>(self, v: u64) -> Result<SocketAddr, E> {
            u16::try_from(v)
                .map(loopback)
                .map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
        }

        fn visit_str<E: Error>(self, s: &str) -> Result<SocketAddr, E> {
            s.parse::<SocketAddr>()
                .ok()
                .or_else(|| {
                    let port = s.strip_prefix(':').unwrap_or(s);
                    port.parse::<u16>().ok().map(loopback)
                })
                .ok_or_else(|| E::invalid_value(Unexpected::Str(s), &self))
        }
    }

    d.deserialize_any(Listen)
}

fn default_true() -> bool {
    true
}

fn default_role() -> Role {
    Role::Backup
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This node's name (for logs and status).
    pub node: String,
    /// The network namespace to work in (`ip netns` name); the current one if absent.
    #[serde(default)]
    pub netns: Option<String>,
    /// The role at start (`primary`, `backup` or `fault`), until keepalived or the
    /// operator says otherwise; backup if absent.
    #[serde(default = "default_role")]
    pub role: Role,
    /// The sync link.
    pub sync: Sync,
    /// The control socket.
    #[serde(default)]
    pub control: Control,
    /// keepalived integration without scripts.
    #[serde(default)]
    pub keepalived: Option<crate::keepalived::Keepalived>,
    /// Which flows are replicated.
    #[serde(default)]
    pub filter: FilterSection,
    /// Protocol timers.
    #[serde(default)]
    pub timers: Timers,
    /// Prometheus metrics.
    #[serde(default)]
    pub metrics: Option<Metrics>,
    /// A peer that runs conntrackd (mixed cluster, migration).
    #[serde(default)]
    pub conntrackd: Option<ConntrackdPeer>,
    /// Replicate many network namespaces (routers) instead of one.
    #[serde(default)]
    pub namespaces: Option<Namespaces>,
    /// The file and text it was read from, for errors found later.
    #[serde(skip)]
    source: (PathBuf, String),
}

impl Config {
    /// Read and check a configuration file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::parse(&text, path)
    }

    /// Parse and check configuration text (`path` only names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Config> {
        let _ = scoped::take();
        let parsed = toml::from_str(text);
        let scopes = scoped::take();
        let mut cfg: Config = parsed.map_err(|e: toml::de::Error| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            match line {
                Some(l) => anyhow::anyhow!("{}:{l}: {}", path.display(), e.message()),
                None => anyhow::anyhow!("{}: {}", path.display(), e.message()),
            }
        })?;
        for (a, name) in scopes {
            let links = cfg.sync.links();
            let Some((n, link)) = links
                .iter()
                .enumerate()
                .find(|(_, l)| l.local == a || l.peers.contains(&a))
            else {
                continue;
            };
            let (at, which) = link_at(text, path, n, "local");
            if !is_link_local(&a) {
                bail!(
                    "{at}: {which}: {a}%{name} is not a link-local address: only fe80::/10 takes a scope"
                );
            }
            if name != link.interface {
                bail!(
                    "{at}: {which}: the scope %{name} of {} is not the link's interface {:?}: a link-local address is scoped to its link's interface",
                    a.ip(),
                    link.interface
                );
            }
        }
        conntrackd::check(&cfg, text, path)?;
        if cfg.sync.peers.is_empty() && cfg.conntrackd.is_none() {
            bail!(
                "{}: [sync] peers is empty: list the other nodes' address:port",
                path.display()
            );
        }
        if cfg.sync.peers.contains(&cfg.sync.local) {
            bail!(
                "{}: [sync] peers lists this node's own address {}",
                path.display(),
                cfg.sync.local
            );
        }
        let mut ids: Vec<u32> = cfg.sync.peers.iter().map(node_id).collect();
        ids.push(node_id(&cfg.sync.local));
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            bail!("{}: [sync] two nodes share an address", path.display());
        }
        if ids.contains(&ctsync_wire::GROUP) {
            bail!(
                "{}: [sync] an address maps to node id {:#x}, reserved for the multicast group: use another address",
                path.display(),
                ctsync_wire::GROUP
            );
        }
        check_links(&cfg, text, path)?;
        check_group(&cfg, text, path)?;
        if let Some(c) = &cfg.sync.cipher
            && c != "chacha20-poly1305"
            && c != "aes-256-gcm"
        {
            bail!(
                "{}: [sync] cipher {c:?}: expected \"chacha20-poly1305\" or \"aes-256-gcm\"",
                path.display()
            );
        }
        let at = |key: &str| -> String { at_line(path, line_of(text, key)) };
        for p in &cfg.filter.protocols {
            if p.number().is_none() {
                bail!(
                    "{}: [filter] protocols: unknown protocol {p:?}: expected tcp, udp, icmp, icmpv6, sctp, gre, udplite or a number",
                    at("protocols")
                );
            }
        }
        for a in &cfg.filter.addresses {
            if parse_prefix(a).is_none() {
                bail!(
                    "{}: [filter] addresses: {a:?} is not an address or prefix: expected e.g. \"198.18.0.0/15\" or \"2001:db8::1\"",
                    at("addresses")
                );
            }
        }
        if !(cfg.filter.delay_secs.is_finite() && (0.0..=3600.0).contains(&cfg.filter.delay_secs)) {
            bail!(
                "{}: [filter] delay_secs must be between 0 and 3600",
                at("delay_secs")
            );
        }
        // Every duration is bounded: a day is longer than any of them needs to be, and a
        // huge one would overflow the clock (`Instant + Duration`) when first scheduled.
        let t = &cfg.timers;
        let day_ms = DAY_SECS * 1000;
        for (section, key, value, min, max) in [
            (
                "sync",
                "kernel_resync_secs",
                cfg.sync.kernel_resync_secs,
                0,
                DAY_SECS,
            ),
            ("timers", "alive_ms", t.alive_ms, 1, day_ms),
            ("timers", "dead_ms", t.dead_ms, 1, day_ms),
            ("timers", "refresh_secs", t.refresh_secs, 1, DAY_SECS),
            ("timers", "digest_secs", t.digest_secs, 1, DAY_SECS),
            (
                "timers",
                "shorten_timeout_secs",
                t.shorten_timeout_secs,
                1,
                DAY_SECS,
            ),
        ] {
            if !(min..=max).contains(&value) {
                bail!(
                    "{}: [{section}] {key} = {value}: expected {min} to {max} (at most one day)",
                    at(key)
                );
            }
        }
        if t.dead_ms <= t.alive_ms {
            bail!(
                "{}: [timers] dead_ms ({}) must be larger than alive_ms ({})",
                at("dead_ms"),
                t.dead_ms,
                t.alive_ms
            );
        }
        if !cfg.sync.extra_links.is_empty() && t.dead_ms < 2 * t.alive_ms {
            // A link that carries nothing but the copies sent to keep it known is heard
            // from at least every 1.5 alive intervals (see daemon/link.rs).
            bail!(
                "{}: [timers] dead_ms ({}) must be at least twice alive_ms ({}) with several sync links: a standby link is heard from only every 1.5 alive intervals",
                at("dead_ms"),
                t.dead_ms,
                t.alive_ms
            );
        }
        if let Some(k) = &cfg.keepalived {
            match (k.stale_file.is_some(), k.stale_after_secs) {
                (true, None) | (false, Some(_)) => bail!(
                    "{}: [keepalived] stale_file and stale_after_secs go together: set both or neither",
                    path.display()
                ),
                (_, Some(n)) if !(1..=86_400).contains(&n) => bail!(
                    "{}: [keepalived] stale_after_secs = {n}: from 1 to 86400 seconds",
                    at("stale_after_secs")
                ),
                _ => {}
            }
        }
        if let Some(k) = &cfg.keepalived
            && k.notify_fifo.is_some()
            && k.instance.is_some() == k.group.is_some()
        {
            bail!(
                "{}: [keepalived] with notify_fifo needs exactly one of instance or group to follow",
                path.display()
            );
        }
        if let Some(n) = &cfg.namespaces {
            n.check(at)?;
            if cfg.keepalived.is_some() {
                bail!(
                    "{}: [keepalived] is for a daemon of one table: with [namespaces] each router has its own files, in [namespaces]: notify_fifo (with role = \"keepalived-fifo\"), track_file, stale_file and stale_after_secs, each path with {{id}} (docs/NEUTRON.md)",
                    match text.lines().position(|l| l.trim() == "[keepalived]") {
                        Some(i) => format!("{}:{}", path.display(), i + 1),
                        None => path.display().to_string(),
                    }
                );
            }
            if cfg.conntrackd.is_some() {
                bail!(
                    "{}: [conntrackd] is not supported with [namespaces] yet (docs/NEUTRON.md, limits)",
                    path.display()
                );
            }
        }
        cfg.source = (path.to_path_buf(), text.to_string());
        Ok(cfg)
    }

    /// The file this came from (empty for a configuration parsed from text alone).
    pub fn path(&self) -> &Path {
        &self.source.0
    }

    /// `file:line` of `key = …` in the file this came from.
    fn at(&self, key: &str) -> String {
        let (path, text) = &self.source;
        at_line(path, line_of(text, key))
    }

    /// Check what the file names on this machine: the network namespace, the sync
    /// interface, the key file. `ctsync run` calls this before anything starts.
    pub fn check_environment(&self) -> Result<()> {
        let netns = match &self.netns {
            Some(n) => Some(ctnetlink::Netns::named(n).map_err(|e| {
                anyhow::anyhow!(
                    "{}: netns {n:?}: {e}: expected the name of a namespace in /run/netns (`ip netns list`)",
                    self.at("netns")
                )
            })?),
            None => None,
        };
        let (path, text) = &self.source;
        for (n, link) in self.sync.links().iter().enumerate() {
            let place = link_at(text, path, n, "interface");
            self.check_interface(netns.as_ref(), place, &link.interface)?;
        }
        if let Some(c) = &self.conntrackd {
            for (n, link) in c.links().iter().enumerate() {
                let place = conntrackd::link_place(text, path, n, Some("interface"));
                self.check_interface(netns.as_ref(), place, &link.interface)?;
            }
        }
        read_key(&self.sync.key_file)
            .map_err(|e| anyhow::anyhow!("{}: {e:#}", self.at("key_file")))?;
        for k in &self.sync.accept_key_files {
            read_key(k).map_err(|e| anyhow::anyhow!("{}: {e:#}", self.at("accept_key_files")))?;
        }
        Ok(())
    }
}

impl Config {
    /// Check that link `n`'s interface exists (in the namespace, if one is named).
    fn check_interface(
        &self,
        netns: Option<&ctnetlink::Netns>,
        (at, name): (String, String),
        interface: &str,
    ) -> Result<()> {
        let iface = std::ffi::CString::new(interface.to_string())
            .map_err(|_| anyhow::anyhow!("{at}: {name} interface: not a valid interface name"))?;
        let exists = || -> std::io::Result<bool> {
            // SAFETY: a valid NUL-terminated string.
            Ok(unsafe { libc::if_nametoindex(iface.as_ptr()) } != 0)
        };
        let found = match netns {
            // Entering it is setns(2): CAP_SYS_ADMIN, which the packaged unit leaves out
            // unless added (etc/ctsync.service says how).
            Some(ns) => ns.run(exists).map_err(|e| {
                let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
                    ": entering a network namespace needs CAP_SYS_ADMIN; under systemd add \
                     `CapabilityBoundingSet=CAP_SYS_ADMIN` with `systemctl edit ctsync`"
                } else {
                    ""
                };
                anyhow::anyhow!(
                    "{}: netns {:?}: cannot enter it: {e}{hint}",
                    self.at("netns"),
                    self.netns.as_deref().unwrap_or_default()
                )
            })?,
            None => exists()?,
        };
        if !found {
            bail!(
                "{at}: {name} interface {:?} does not exist{}: expected the sync link's interface (`ip link`)",
                interface,
                self.netns
                    .as_ref()
                    .map(|n| format!(" in namespace {n:?}"))
                    .unwrap_or_default()
            );
        }
        Ok(())
    }
}

/// The line of the `n`th (from 0) `[[table]]` header (`table` as its dotted parts:
/// `["sync", "link"]`), for errors about that table.
fn line_of_table(text: &str, table: [&str; 2], n: usize) -> Option<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| {
            l.trim_start()
                .strip_prefix("[[")
                .and_then(|r| r.split_once("]]"))
                .is_some_and(|(name, _)| name.split('.').map(str::trim).eq(table))
        })
        .nth(n)
        .map(|(i, _)| i + 1)
}

/// `path:line`, or the path alone when the line is not known.
fn at_line(path: &Path, line: Option<usize>) -> String {
    match line {
        Some(l) => format!("{}:{l}", path.display()),
        None => path.display().to_string(),
    }
}

/// Where link `n` (0: `[sync]`'s own keys) is written, and how an error names it:
/// `("a.toml:12", "[[sync.link]] 2")`.
fn link_at(text: &str, path: &Path, n: usize, key: &str) -> (String, String) {
    let line = match n {
        0 => line_of(text, key),
        _ => line_of_table(text, ["sync", "link"], n - 1),
    };
    let at = at_line(path, line);
    let name = match n {
        0 => "[sync]".to_string(),
        _ => format!("[[sync.link]] {} (link {})", n, n + 1),
    };
    (at, name)
}

/// The further sync links agree with the first: each names the same peers (as many,
/// in the same order), on an interface of its own, with addresses of one family that no
/// other link uses; at most [`MAX_LINKS`] in all.
fn check_links(cfg: &Config, text: &str, path: &Path) -> Result<()> {
    let links = cfg.sync.links();
    if links.len() == 1 {
        return Ok(());
    }
    if links.len() > MAX_LINKS {
        let (at, _) = link_at(text, path, MAX_LINKS, "interface");
        bail!(
            "{at}: [sync] has {} links: at most {MAX_LINKS} (the first in [sync], the others as [[sync.link]])",
            links.len()
        );
    }
    let mut seen: Vec<(IpAddr, usize)> = Vec::new();
    for (n, link) in links.iter().enumerate() {
        let (at, name) = link_at(text, path, n, "peers");
        if link.peers.len() != cfg.sync.peers.len() {
            bail!(
                "{at}: {name} lists {} peers and [sync] lists {}: every link lists the same nodes, in the same order as [sync] peers",
                link.peers.len(),
                cfg.sync.peers.len()
            );
        }
        if let Some(m) = links[..n]
            .iter()
            .position(|l| l.interface == link.interface)
        {
            bail!(
                "{at}: {name} uses interface {:?} like link {}: each link has its own interface",
                link.interface,
                m + 1
            );
        }
        let family = link.local.is_ipv4();
        if let Some(p) = link.peers.iter().find(|p| p.is_ipv4() != family) {
            bail!(
                "{at}: {name}: peer {p} is not of the family of local {}: one address family per link",
                link.local
            );
        }
        for a in std::iter::once(&link.local).chain(&link.peers) {
            if let Some((_, m)) = seen.iter().find(|(ip, _)| *ip == a.ip()) {
                bail!(
                    "{at}: {name}: address {} is used twice (also in link {}): every node has an address of its own on each link",
                    a.ip(),
                    m + 1
                );
            }
            seen.push((a.ip(), n));
        }
    }
    Ok(())
}

/// `[sync] group`: a multicast address of the first link's family, with a port.
fn check_group(cfg: &Config, text: &str, path: &Path) -> Result<()> {
    let Some(g) = cfg.sync.group else {
        return Ok(());
    };
    let at = at_line(path, line_of(text, "group"));
    if !g.ip().is_multicast() {
        bail!(
            "{at}: [sync] group {g} is not a multicast address: expected e.g. \"239.255.1.1:3780\" or \"[ff02::1:3]:3780\""
        );
    }
    if g.is_ipv4() != cfg.sync.local.is_ipv4() {
        bail!(
            "{at}: [sync] group {g} is not of the family of local {}: the group is on the first sync link",
            cfg.sync.local
        );
    }
    if g.port() == 0 {
        bail!("{at}: [sync] group {g}: a port is needed, e.g. \"239.255.1.1:3780\"");
    }
    Ok(())
}

/// The line where `key = …` is first written, for errors found after parsing.
fn line_of(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            l.trim_start()
                .strip_prefix(key)
                .is_some_and(|r| r.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

impl Config {
    /// The core's configuration: this node and its peers by their wire ids
    /// ([`node_id`]), with the file's timers, limits, mode and filter.
    pub fn core(&self) -> ctsync_core::Config {
        let peers = self.sync.peers.iter().map(node_id).collect();
        let mut core = ctsync_core::Config::new(node_id(&self.sync.local), peers);
        core.kernel_resync_interval = Duration::from_secs(self.sync.kernel_resync_secs);
        core.filter = self.core_filter();
        core.max_flows = self.sync.max_flows.max(1);
        core.sync_delay = Duration::from_secs_f64(self.filter.delay_secs);
        core.alive_interval = Duration::from_millis(self.timers.alive_ms);
        core.keepalive_interval = core.alive_interval;
        core.dead_interval = Duration::from_millis(self.timers.dead_ms);
        core.refresh_interval = Duration::from_secs(self.timers.refresh_secs);
        core.digest_interval = Duration::from_secs(self.timers.digest_secs);
        // At most a day (checked in `parse`), so it fits the kernel's u32 seconds.
        core.shorten_timeout = u32::try_from(self.timers.shorten_timeout_secs).unwrap_or(u32::MAX);
        core.mode = self.sync.mode;
        core.group = self.sync.group.is_some();
        core
    }

    /// The replication filter this file asks for, with the sync links' own addresses
    /// never replicated.
    pub fn core_filter(&self) -> ctsync_core::Filter {
        let mut never: Vec<(IpAddr, u8)> = Vec::new();
        for link in self.sync.links() {
            never.push((link.local.ip(), 32));
            never.extend(link.peers.iter().map(|p| (p.ip(), 32)));
        }
        if let Some(c) = &self.conntrackd {
            never.extend(c.link_addresses().into_iter().map(|a| (a, 32)));
        }
        for n in &mut never {
            if n.0.is_ipv6() {
                n.1 = 128;
            }
        }
        ctsync_core::Filter {
            protocols: self
                .filter
                .protocols
                .iter()
                .filter_map(ProtocolName::number)
                .collect(),
            prefixes: self
                .filter
                .addresses
                .iter()
                .filter_map(|a| parse_prefix(a))
                .collect(),
            prefixes_accept: self.filter.accept,
            tcp_established_only: self.filter.tcp_established_only,
            zones: self.filter.zones.clone(),
            never,
        }
    }
}

/// A node's id on the wire: its sync address (IPv4 as a number; IPv6 hashed). Every
/// node derives the same ids from the same addresses.
pub fn node_id(addr: &SocketAddr) -> u32 {
    match addr.ip() {
        IpAddr::V4(a) => u32::from(a),
        IpAddr::V6(a) => a.octets().iter().fold(0x811c_9dc5u32, |h, b| {
            (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
        }),
    }
}

/// Read the cluster key: 32 bytes as 64 hex digits, in a file owned by root (or the
/// daemon's own user) that only its owner may read.
pub fn read_key(path: &Path) -> Result<Vec<u8>> {
    let meta = fs::metadata(path).with_context(|| {
        format!(
            "cannot read key file {} (create one with `ctsync keygen > FILE`)",
            path.display()
        )
    })?;
    // Its owner could replace it (or chmod it open): root, or the user the daemon runs as.
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != 0 && meta.uid() != me {
        bail!(
            "key file {} is owned by uid {}, not root: its owner can read or replace the cluster key; run `chown root {}`",
            path.display(),
            meta.uid(),
            path.display()
        );
    }
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        bail!(
            "key file {} is readable by others (mode {:o}): run `chmod 600 {}`",
            path.display(),
            mode & 0o777,
            path.display()
        );
    }
    let text = fs::read_to_string(path)
        .with_context(|| format!("cannot read key file {}", path.display()))?;
    let hex = text.trim();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!(
            "key file {}: expected 64 hex digits (32 bytes), as `ctsync keygen` writes",
            path.display()
        );
    }
    (0..32)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).context("hex digit"))
        .collect()
}

/// A new random cluster key, as `ctsync keygen` prints it.
pub fn new_key() -> Result<String> {
    let mut k = [0u8; 32];
    aws_lc_rs::rand::fill(&mut k).map_err(|_| anyhow::anyhow!("no system randomness"))?;
    Ok(k.iter().map(|b| format!("{b:02x}")).collect())
}

mod namespaces;
#[cfg(test)]
mod tests;

#[cfg(test)]
mod example {
    /// The annotated example in etc/ stays valid.
    #[test]
    fn the_shipped_example_parses() {
        let path = std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../etc/ctsync.toml"
        ));
        super::Config::load(path).expect("etc/ctsync.toml parses");
    }

    /// Its commented `[[sync.link]]` example parses too once uncommented.
    #[test]
    fn the_shipped_examples_second_link_parses() {
        let path = std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../etc/ctsync.toml"
        ));
        let text = std::fs::read_to_string(path).expect("etc/ctsync.toml");
        let mut on = false;
        let text: String = text
            .lines()
            .map(|l| {
                on = (on || l == "# [[sync.link]]") && !l.is_empty();
                let l = if on {
                    l.strip_prefix("# ").unwrap_or(l)
                } else {
                    l
                };
                format!("{l}\n")
            })
            .collect();
        let c = super::Config::parse(&text, path).expect("the example with its second link");
        assert_eq!(c.sync.links().len(), 2);
    }
}
