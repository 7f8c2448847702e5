//! `[conntrackd]`: one peer that runs conntrackd (1.4.x, FTFW), over UDP unicast or a
//! multicast group, as conntrackd's own `UDP { }` and `Multicast { }` blocks.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use anyhow::{Result, bail};
use serde::Deserialize;

use super::{Config, MAX_LINKS, at_line, line_of_table};

/// `[conntrackd]`: one peer that runs conntrackd (1.4.x, FTFW), for a mixed cluster or a
/// rolling migration. Its protocol has no authentication at all, so the section must say
/// `dialect = "conntrackd"`, and the log and status say so at every start.
///
/// The transport is conntrackd's: UDP unicast (`local` and `peer`, its `UDP` block) or a
/// multicast group (`group`, its `Multicast` block; `peer` then optional, an address
/// alone). [`ConntrackdPeer::transport`] says which.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConntrackdPeer {
    /// Must be `"conntrackd"`: the explicit opt-in to an unauthenticated protocol.
    pub dialect: String,
    /// The interface conntrackd's link is on (checked to exist), like its `Interface`;
    /// on a multicast group, the one it is joined on and sent from.
    pub interface: String,
    /// UDP: this node's address and port for conntrackd (its `IPv4_Destination_Address`
    /// and `Port`), not `[sync] local`'s port. Not with `group`.
    #[serde(default)]
    pub local: Option<SocketAddr>,
    /// UDP: the conntrackd node's address and port (its `IPv4_address` and `Port`).
    /// Multicast: optional, its address alone (its `IPv4_interface`), to take the
    /// group's datagrams from that sender only. Datagrams from any other address are
    /// dropped and counted.
    #[serde(default)]
    pub peer: Option<PeerAddr>,
    /// Multicast: the group and port (conntrackd's `IPv4_address`/`IPv6_address` and
    /// `Group`), e.g. `"239.255.1.1:3780"` or `"[ff02::1:3780]:3780"`: joined on
    /// `interface`, sent to with TTL 1 and no loopback.
    #[serde(default)]
    pub group: Option<SocketAddr>,
    /// Messages per acknowledgement (conntrackd's `ACKWindowSize`; default 300).
    #[serde(default = "default_ack_window")]
    pub ack_window: u32,
    /// Ask conntrackd for its whole table at start (default true; conntrackd's
    /// `StartupResync`).
    #[serde(default = "super::default_true")]
    pub startup_resync: bool,
    /// Further links to the same conntrackd (`[[conntrackd.link]]`: its further `UDP` or
    /// `Multicast` blocks; four links at most in all, as conntrackd takes). conntrackd
    /// sends on one link at a time (the one marked `Default`, another when that link's
    /// interface goes down, and the one it last heard us on); ctsync takes what arrives
    /// on any of them and sends on the one conntrackd was last heard on.
    #[serde(default, rename = "link")]
    pub extra_links: Vec<ConntrackdLink>,
}

/// One link to conntrackd: the section's own `interface`, `local`, `peer` and `group`,
/// or a `[[conntrackd.link]]` table with the same keys, meaning the same.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConntrackdLink {
    /// The interface the link is on (checked to exist).
    pub interface: String,
    /// UDP: this node's address and port on it.
    #[serde(default)]
    pub local: Option<SocketAddr>,
    /// UDP: conntrackd's address and port on it; multicast: its address alone, if named.
    #[serde(default)]
    pub peer: Option<PeerAddr>,
    /// Multicast: the group and port.
    #[serde(default)]
    pub group: Option<SocketAddr>,
}

fn default_ack_window() -> u32 {
    300
}

/// `[conntrackd] peer`: an address with a port (`"198.18.0.2:3780"`, UDP) or an address
/// alone (`"198.18.0.2"`, a multicast sender).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr {
    /// The address.
    pub ip: IpAddr,
    /// The port, when written.
    pub port: Option<u16>,
}

impl std::fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.port {
            Some(p) => SocketAddr::new(self.ip, p).fmt(f),
            None => self.ip.fmt(f),
        }
    }
}

impl<'de> Deserialize<'de> for PeerAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<PeerAddr, D::Error> {
        let s = String::deserialize(d)?;
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(PeerAddr {
                ip: a.ip(),
                port: Some(a.port()),
            });
        }
        let bare = s.trim_start_matches('[').trim_end_matches(']');
        bare.parse::<IpAddr>()
            .map(|ip| PeerAddr { ip, port: None })
            .map_err(|_| {
                serde::de::Error::custom(format!(
                    "invalid peer {s:?}: expected \"address:port\" (e.g. \"198.18.0.2:3780\"), or on a multicast group an address alone"
                ))
            })
    }
}

/// How the dialect reaches conntrackd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConntrackdTransport {
    /// UDP unicast: bound to `local`, sent to `peer`.
    Udp {
        /// This node's address and port.
        local: SocketAddr,
        /// conntrackd's.
        peer: SocketAddr,
    },
    /// A multicast group, on the section's interface.
    Multicast {
        /// The group and port.
        group: SocketAddr,
        /// The only sender taken, if named.
        peer: Option<IpAddr>,
    },
}

impl ConntrackdLink {
    /// The transport the link describes (checked by [`Config::parse`], so `None` only
    /// for a link built by hand that mixes both).
    pub fn transport(&self) -> Option<ConntrackdTransport> {
        match (self.group, self.local, self.peer) {
            (Some(group), None, peer) if peer.is_none_or(|p| p.port.is_none()) => {
                Some(ConntrackdTransport::Multicast {
                    group,
                    peer: peer.map(|p| p.ip),
                })
            }
            (
                None,
                Some(local),
                Some(PeerAddr {
                    ip,
                    port: Some(port),
                }),
            ) => Some(ConntrackdTransport::Udp {
                local,
                peer: SocketAddr::new(ip, port),
            }),
            _ => None,
        }
    }
}

impl ConntrackdPeer {
    /// Every link to conntrackd, the section's own first.
    pub fn links(&self) -> Vec<ConntrackdLink> {
        let first = ConntrackdLink {
            interface: self.interface.clone(),
            local: self.local,
            peer: self.peer,
            group: self.group,
        };
        std::iter::once(first)
            .chain(self.extra_links.iter().cloned())
            .collect()
    }

    /// The transport of the section's own link.
    pub fn transport(&self) -> Option<ConntrackdTransport> {
        self.links().first().and_then(ConntrackdLink::transport)
    }

    /// The addresses of the links themselves (never replicated: the sync traffic's own
    /// flows): UDP's two ends, or the group and the named sender, of every link.
    pub fn link_addresses(&self) -> Vec<IpAddr> {
        let mut a = Vec::new();
        for l in self.links() {
            a.extend(l.local.iter().map(SocketAddr::ip));
            a.extend(l.peer.map(|p| p.ip));
            a.extend(l.group.map(|g| g.ip()));
        }
        a
    }
}

/// The line of `key = …` inside `[section]` (or of the section's header, for a `key` of
/// `None`), for errors found after parsing.
fn line_in(text: &str, section: &str, key: Option<&str>) -> Option<usize> {
    let mut inside = false;
    for (i, l) in text.lines().enumerate() {
        let t = l.trim_start();
        if let Some(rest) = t.strip_prefix('[') {
            let name = rest.trim_start_matches('[').split(']').next().unwrap_or("");
            inside = name.trim() == section;
            if inside && key.is_none() {
                return Some(i + 1);
            }
            continue;
        }
        if inside
            && let Some(k) = key
            && t.strip_prefix(k)
                .is_some_and(|r| r.trim_start().starts_with('='))
        {
            return Some(i + 1);
        }
    }
    None
}

/// Where link `n` to conntrackd (0: the section's own keys) names `key` (`None`: where
/// the link begins), and how an
/// error names that link: `("a.toml:12", "[[conntrackd.link]] 1 (link 2)")`.
pub(super) fn link_place(text: &str, path: &Path, n: usize, key: Option<&str>) -> (String, String) {
    let line = match n {
        0 => line_in(text, "conntrackd", key).or_else(|| line_in(text, "conntrackd", None)),
        _ => line_of_table(text, ["conntrackd", "link"], n - 1),
    };
    let at = at_line(path, line);
    let name = match n {
        0 => "[conntrackd]".to_string(),
        _ => format!("[[conntrackd.link]] {n} (link {})", n + 1),
    };
    (at, name)
}

/// Check `[conntrackd]`: the dialect said, and one transport, consistent.
pub(super) fn check(cfg: &Config, text: &str, path: &Path) -> Result<()> {
    let Some(c) = &cfg.conntrackd else {
        return Ok(());
    };
    let at_key = |key: &str| link_place(text, path, 0, Some(key)).0;
    if c.dialect != "conntrackd" {
        bail!(
            "{}: [conntrackd] dialect = {:?}: expected \"conntrackd\" (conntrackd's FTFW protocol, unauthenticated)",
            at_key("dialect"),
            c.dialect
        );
    }
    if !(1..=1_000_000).contains(&c.ack_window) {
        bail!(
            "{}: [conntrackd] ack_window must be between 1 and 1000000",
            at_key("ack_window")
        );
    }
    let links = c.links();
    if links.len() > MAX_LINKS {
        bail!(
            "{}: [conntrackd] has {} links: at most {MAX_LINKS} (conntrackd takes four too)",
            link_place(text, path, MAX_LINKS, None).0,
            links.len()
        );
    }
    for (n, link) in links.iter().enumerate() {
        let (at, name) = link_place(text, path, n, None);
        let at_of = |key: &str| link_place(text, path, n, Some(key)).0;
        check_link(cfg, link, &name, &at, at_of)?;
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
        if let Some(local) = link.local
            && links[..n].iter().any(|l| l.local == Some(local))
        {
            bail!(
                "{at}: {name}: local {local} is another link's too: each link has an address of its own"
            );
        }
        if let Some(group) = link.group
            && links[..n].iter().any(|l| l.group == Some(group))
        {
            bail!(
                "{at}: {name}: group {group} is another link's too: each link has a group or port of its own"
            );
        }
    }
    Ok(())
}

/// Check one link to conntrackd (`name` names it in errors, `at` where it is, `at_of` where
/// one of its keys is): one transport, consistent.
fn check_link(
    cfg: &Config,
    c: &ConntrackdLink,
    name: &str,
    at: &str,
    at_of: impl Fn(&str) -> String,
) -> Result<()> {
    match (c.group, c.local, c.peer) {
        (Some(_), Some(l), _) => bail!(
            "{}: {name} local {l} with group: a multicast link has no local address (datagrams go out on interface {:?}); remove local, or group for UDP unicast",
            at_of("local"),
            c.interface
        ),
        (Some(g), None, peer) => {
            let at = at_of("group");
            if !g.ip().is_multicast() {
                bail!(
                    "{at}: {name} group {g} is not a multicast address: expected e.g. \"239.255.1.1:3780\" or \"[ff02::1:3780]:3780\" (conntrackd's Multicast IPv4_address and Group)"
                );
            }
            if g.port() == 0 {
                bail!(
                    "{at}: {name} group {g}: a port is needed (conntrackd's Group), e.g. \"239.255.1.1:3780\""
                );
            }
            if cfg.sync.group == Some(g) {
                bail!(
                    "{at}: {name} group {g} is [sync] group too: conntrackd's group needs a group or port of its own"
                );
            }
            if let Some(p) = peer {
                let at = at_of("peer");
                if p.port.is_some() {
                    bail!(
                        "{at}: {name} peer {p} on a multicast group is an address alone (conntrackd sends from a port of its choosing): write \"{}\"",
                        p.ip
                    );
                }
                if p.ip.is_ipv4() != g.is_ipv4() {
                    bail!("{at}: {name} peer {p} and group {g} are of different families");
                }
            }
        }
        (None, Some(local), Some(peer)) => {
            let at = at_of("local");
            let Some(port) = peer.port else {
                bail!(
                    "{at}: {name} peer {peer} has no port: over UDP it is \"address:port\" (conntrackd's IPv4_address and Port)"
                );
            };
            let peer = SocketAddr::new(peer.ip, port);
            if cfg.sync.links().iter().any(|l| l.local == local) || peer == local {
                bail!(
                    "{at}: {name} local {local} must differ from [sync] local and from peer: give ctsync's own protocol another port"
                );
            }
            if local.is_ipv4() != peer.is_ipv4() {
                bail!("{at}: {name} local {local} and peer {peer} are of different families");
            }
        }
        _ => bail!(
            "{at}: {name} needs local and peer (UDP unicast, conntrackd's UDP block) or group (multicast, its Multicast block)"
        ),
    }
    Ok(())
}
