//! `Sync { … }`: the mode, the dedicated links and their options.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use anyhow::{Result, bail};

use super::syntax::Item;
use super::{KEY_FILE, Mapper, Out, Unmapped, quote};
use crate::config::MAX_LINKS;

/// One of conntrackd's dedicated links.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Transport {
    Udp,
    Tcp,
    Multicast,
}

/// The address and port settings of the link that is mapped.
#[derive(Default)]
struct Link<'a> {
    local: Option<(IpAddr, &'a Item)>,
    peer: Option<(IpAddr, &'a Item)>,
    port: Option<(u16, &'a Item)>,
    interface: Option<(String, &'a Item)>,
    /// A multicast link's group address.
    group: Option<(IpAddr, &'a Item)>,
}

impl Mapper<'_> {
    pub(super) fn sync(&mut self, children: &[&Item], sync: &Item) -> Result<()> {
        let mut mode: Option<&Item> = None;
        let mut links: Vec<(Transport, &Item)> = Vec::new();
        let mut external_cache: Option<(bool, &Item)> = None;
        let mut mode_options: Vec<&Item> = Vec::new();
        let mut options: Vec<&Item> = Vec::new();
        for &item in children {
            let transport = if item.is("UDP") {
                Some(Transport::Udp)
            } else if item.is("TCP") {
                Some(Transport::Tcp)
            } else if item.is("Multicast") {
                Some(Transport::Multicast)
            } else {
                None
            };
            if let Some(t) = transport {
                if item.block.is_none() {
                    return Err(self.error(item, "expected a `{ … }` block"));
                }
                links.push((t, item));
            } else if item.is("Mode") {
                mode = Some(item);
                mode_options.extend(item.children());
            } else if item.is("Options") {
                options.extend(item.children());
            } else {
                // Timers directly under Sync: the legacy placement conntrackd still takes.
                mode_options.push(item);
            }
        }
        for o in mode_options {
            if o.is("DisableExternalCache") {
                external_cache = Some((!self.boolean(o)?, o));
            } else {
                self.mode_option(o)?;
            }
        }

        // The links: the one marked Default (else the first) is [sync]'s own, the others
        // follow in the file's order as [[sync.link]] tables; conntrackd fails over
        // between them, ctsync sends each peer's datagrams over the first link it hears
        // that peer on.
        let chosen = links
            .iter()
            .position(|(_, i)| i.args().iter().any(|a| a.eq_ignore_ascii_case("default")))
            .unwrap_or(0);
        if links.is_empty() {
            self.skip(
                sync,
                "no UDP, TCP or Multicast link: [sync] interface, local and peers are placeholders: fill them in",
            );
            self.write_link(None, None, Link::default(), 0)?;
        }
        let order = links.get(chosen).into_iter().chain(
            links
                .iter()
                .enumerate()
                .filter(|&(n, _)| n != chosen)
                .map(|(_, l)| l),
        );
        // Each written link's interface and addresses: ctsync wants each link on its own.
        let mut taken: Vec<(Option<String>, Vec<IpAddr>)> = Vec::new();
        for &(t, item) in order {
            if taken.len() >= MAX_LINKS {
                self.skip(
                    item,
                    "a dedicated link beyond the fourth: ctsync takes four at most, as conntrackd does",
                );
                continue;
            }
            let link = self.link(t, item)?;
            let interface = link.interface.as_ref().map(|(i, _)| i.clone());
            let addresses: Vec<IpAddr> = link
                .local
                .iter()
                .chain(&link.peer)
                .map(|(a, _)| *a)
                .collect();
            if let Some(k) = taken.iter().position(|(i, a)| {
                (interface.is_some() && *i == interface) || addresses.iter().any(|x| a.contains(x))
            }) {
                self.skip(
                    item,
                    format!(
                        "on the interface or an address of link {} again: ctsync wants each link on an interface and addresses of its own",
                        k + 1
                    ),
                );
                continue;
            }
            taken.push((interface, addresses));
            self.write_link(Some(t), Some(item), link, taken.len() - 1)?;
        }
        self.write_mode(mode, external_cache);
        for o in options {
            self.sync_option(o)?;
        }
        Ok(())
    }

    fn link<'i>(&mut self, transport: Transport, item: &'i Item) -> Result<Link<'i>> {
        let mut l = Link::default();
        let mcast = transport == Transport::Multicast;
        for o in item.children() {
            let k = o.key().to_ascii_lowercase();
            match k.as_str() {
                "ipv4_address" | "ipv6_address" if mcast => {
                    let a = self.address(o, k == "ipv6_address")?;
                    if a.is_multicast() {
                        l.group = Some((a, o));
                    } else {
                        self.skip(
                            o,
                            "not a multicast address: no [sync] group (ctsync sends to each peer by unicast UDP)",
                        );
                    }
                }
                "ipv4_address" | "ipv6_address" => {
                    l.local = Some((self.address(o, k == "ipv6_address")?, o));
                }
                "ipv4_interface" if mcast => {
                    l.local = Some((self.address(o, false)?, o));
                }
                "ipv6_interface" if mcast => {
                    self.skip(o, "ignored by conntrackd too (IPv6 uses Interface)");
                }
                "ipv4_destination_address"
                | "ipv6_destination_address"
                | "ipv6_destionation_address"
                    if !mcast =>
                {
                    l.peer = Some((self.address(o, k.starts_with("ipv6"))?, o));
                }
                "port" if !mcast => l.port = Some((self.port(o)?, o)),
                "group" if mcast => l.port = Some((self.port(o)?, o)),
                "interface" => l.interface = Some((self.value(o)?.to_string(), o)),
                "sndsocketbuffer" | "rcvsocketbuffer" => self.skip(
                    o,
                    "no equivalent: ctsync asks for 8 MiB (send) and 32 MiB (receive) on its sync socket",
                ),
                "checksum" => self.skip(
                    o,
                    "no equivalent: every ctsync datagram is authenticated (AEAD), a stronger check; UDP checksums stay on",
                ),
                "errorqueuelength" if transport == Transport::Tcp => {
                    self.skip(o, "no equivalent: ctsync has no TCP transport")
                }
                _ => self.unknown(o, &item.text()),
            }
        }
        Ok(l)
    }

    fn port(&self, item: &Item) -> Result<u16> {
        match self.number(item)? {
            p @ 1..=65535 => u16::try_from(p).map_err(|_| self.error(item, "expected a port")),
            _ => Err(self.error(item, "expected a port from 1 to 65535")),
        }
    }

    /// Write link `n` (from 0): the first into `[sync]` (with the node's name, the
    /// group and the key), a further one as a `[[sync.link]]` table. Each link's
    /// placeholders are addresses and an interface no other link's use.
    fn write_link(
        &mut self,
        transport: Option<Transport>,
        item: Option<&Item>,
        l: Link<'_>,
        n: usize,
    ) -> Result<()> {
        let section_line = item.map_or(1, |i| i.line);
        let placeholder = |line: usize, setting: &str, why: &str| Unmapped {
            line,
            setting: setting.to_string(),
            why: why.to_string(),
        };
        let v6 = matches!(l.local, Some((IpAddr::V6(_), _)))
            || matches!(l.peer, Some((IpAddr::V6(_), _)))
            || matches!(l.group, Some((IpAddr::V6(_), _)));
        // Documentation addresses (RFC 5737, RFC 3849): never a real node's. Link n
        // takes its placeholders from 4n + 1 to 4n + 3.
        let doc = |k: u8| -> IpAddr {
            let k = u8::try_from(4 * n).unwrap_or(0).saturating_add(k);
            if v6 {
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(k)))
            } else {
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, k))
            }
        };
        if let (Some((a, item)), Some((b, _))) = (l.local, l.peer)
            && a == b
        {
            bail!(
                "{}:{}: the local and the destination address are the same ({a}): expected this node's and the other node's",
                self.name,
                item.line
            );
        }
        let port = l.port.map_or(3780, |p| p.0);
        if n == 0 {
            let node = match l.local {
                Some((a, _)) => a.to_string(),
                None => "fw1".to_string(),
            };
            self.out.top.push(
                "# This node's name, for logs and `ctsync status` (conntrackd has none): the sync address; change at will."
                    .to_string(),
            );
            self.out.top.push(format!("node = {}", quote(&node)));
        }
        let (key, key_peers) = if n == 0 {
            ("[sync]".to_string(), "[sync] peers".to_string())
        } else {
            (
                format!("link {} ([[sync.link]])", n + 1),
                format!("link {}'s peers ([[sync.link]])", n + 1),
            )
        };

        let what = match transport {
            Some(Transport::Udp) => "UDP",
            Some(Transport::Tcp) => "TCP",
            Some(Transport::Multicast) => "Multicast",
            None => "Sync",
        };
        let mut notes: Vec<String> = Vec::new();
        match transport {
            Some(Transport::Udp) => notes.push(format!(
                "# from line {section_line}: {what}: ctsync sends unicast UDP to each peer, as here"
            )),
            Some(Transport::Tcp) => notes.push(format!(
                "# from line {section_line}: TCP: ctsync sends unicast UDP to each peer, with its own acknowledgements and retransmission (the reliability TCP gave NOTRACK)"
            )),
            Some(Transport::Multicast) if n == 0 => notes.push(format!(
                "# from line {section_line}: Multicast: ctsync sends live replication once to the group too; `peers` still lists the nodes (handshake, acknowledgements, bulk transfers)"
            )),
            Some(Transport::Multicast) => notes.push(format!(
                "# from line {section_line}: Multicast: a further link carries unicast UDP to each peer (ctsync's group is on the first link)"
            )),
            None => {}
        }
        if n > 0 {
            notes.push(
                "# A further link: each peer's datagrams go over the first link it is heard on, this one when those before are silent."
                    .to_string(),
            );
            self.out.links.push(Vec::new());
        }
        let Out { sync, links, .. } = &mut self.out;
        let s = match links.last_mut() {
            Some(s) if n > 0 => s,
            _ => sync,
        };
        s.extend(notes);
        match &l.interface {
            Some((i, item)) => {
                s.push(format!("# from line {}: {}", item.line, item.text()));
                s.push(format!("interface = {}", quote(i)));
            }
            None => {
                let name = if n == 0 {
                    "CHANGE-ME".to_string()
                } else {
                    format!("CHANGE-ME-{}", n + 1)
                };
                self.unmapped.push(placeholder(
                    section_line,
                    what,
                    &format!("no Interface: {key} interface is a placeholder ({name:?}): write the sync link's interface"),
                ));
                s.push(
                    "# CHANGE: the sync link's interface (the conntrackd file names none)"
                        .to_string(),
                );
                s.push(format!("interface = {}", quote(&name)));
            }
        }
        let port_note = match l.port {
            Some((_, item)) => format!(", and line {}: {}", item.line, item.text()),
            None => {
                self.unmapped.push(placeholder(
                    section_line,
                    what,
                    "no Port: 3780 assumed (the port every conntrackd example uses)",
                ));
                ", and port 3780 (assumed)".to_string()
            }
        };
        let local = match l.local {
            Some((a, item)) => {
                s.push(format!(
                    "# from line {}: {}{port_note}",
                    item.line,
                    item.text()
                ));
                a
            }
            None => {
                let a = if l.peer.map(|p| p.0) == Some(doc(1)) {
                    doc(3)
                } else {
                    doc(1)
                };
                self.unmapped.push(placeholder(
                    section_line,
                    what,
                    &format!("no local address: {key} local is a placeholder ({a}): write this node's address on the sync link"),
                ));
                s.push("# CHANGE: this node's address on the sync link (the conntrackd file names none)".to_string());
                a
            }
        };
        s.push(format!(
            "local = {}",
            quote(&SocketAddr::new(local, port).to_string())
        ));
        match l.peer {
            Some((a, item)) => {
                s.push(format!(
                    "# from line {}: {}{port_note}",
                    item.line,
                    item.text()
                ));
                s.push(format!(
                    "peers = [{}]",
                    quote(&SocketAddr::new(a, port).to_string())
                ));
            }
            None => {
                let a = if local == doc(2) { doc(3) } else { doc(2) };
                let why = if transport == Some(Transport::Multicast) {
                    format!(
                        "multicast names no peer: {key_peers} is a placeholder ({a}): list the other nodes' addresses on the sync link"
                    )
                } else {
                    format!(
                        "no destination address: {key_peers} is a placeholder ({a}): list the other nodes' addresses on the sync link"
                    )
                };
                self.unmapped.push(placeholder(section_line, what, &why));
                s.push(
                    "# CHANGE: the other nodes' addresses on the sync link, each with the port"
                        .to_string(),
                );
                s.push(format!(
                    "peers = [{}]",
                    quote(&SocketAddr::new(a, port).to_string())
                ));
            }
        }
        if let Some((g, item)) = l.group {
            if n > 0 {
                self.unmapped.push(placeholder(
                    item.line,
                    &item.text(),
                    "the group of a further link: ctsync's multicast group is on the first link; this link carries unicast",
                ));
            } else if g.is_ipv4() == local.is_ipv4() {
                s.push(format!(
                    "# from line {}: {}{port_note} (TTL 1: the group stays on the sync link)",
                    item.line,
                    item.text()
                ));
                s.push(format!(
                    "group = {}",
                    quote(&SocketAddr::new(g, port).to_string())
                ));
            } else {
                self.unmapped.push(placeholder(
                    item.line,
                    &item.text(),
                    "the group is not of the family of this node's address on the link: no [sync] group",
                ));
            }
        }
        if n > 0 {
            return Ok(());
        }
        s.push(
            "# The cluster key (conntrackd's link had none: anyone on it could inject flows)."
                .to_string(),
        );
        s.push(format!(
            "# Create it once and copy it to every node: ctsync keygen > {KEY_FILE} && chmod 600 {KEY_FILE}"
        ));
        s.push(format!("key_file = {}", quote(KEY_FILE)));
        Ok(())
    }

    fn write_mode(&mut self, mode: Option<&Item>, external_cache: Option<(bool, &Item)>) {
        let s = &mut self.out.sync;
        match mode {
            Some(m) => {
                let name = m.args().first().map_or("", String::as_str).to_ascii_uppercase();
                let how = match name.as_str() {
                    "FTFW" | "NACK" => {
                        "ctsync's one protocol is reliable like FTFW (sequence numbers, acknowledgements, retransmission), and authenticated"
                    }
                    "NOTRACK" => {
                        "ctsync's one protocol is reliable (acknowledged and retransmitted), where NOTRACK was best effort"
                    }
                    "ALARM" | "PERSISTENT" => {
                        "ctsync's one protocol sends changes reliably and repairs differences by digests, where ALARM re-sent every flow periodically"
                    }
                    _ => "an unknown mode; ctsync has one protocol",
                };
                s.push(format!("# from line {}: {}: {how}.", m.line, m.text()));
                s.push(
                    "# ctsync nodes speak ctsync's protocol to each other; to replace conntrackd one node at a time, a [conntrackd] section lets a ctsync node speak FTFW with the conntrackd still running on the other (docs/MIGRATION.md, section 2)."
                        .to_string(),
                );
            }
            None => s.push(
                "# No Mode: conntrackd's default is FTFW; ctsync's one protocol is reliable like it."
                    .to_string(),
            ),
        }
        match external_cache {
            Some((false, item)) => {
                Self::set(
                    s,
                    item,
                    &[
                        "Without the external cache, peers' flows go to the kernel as they arrive:",
                        "ctsync's \"hot-standby\" (nothing left to write at takeover).",
                    ],
                    "mode",
                    "\"hot-standby\"",
                );
            }
            other => {
                if let Some((_, item)) = other {
                    s.push(format!("# from line {}: {}", item.line, item.text()));
                }
                s.push("# With the external cache (conntrackd's default) a backup writes its peers' flows".to_string());
                s.push("# to the kernel at takeover (`conntrackd -c`): ctsync's \"commit\" mode. ctsync's".to_string());
                s.push("# default, \"hot-standby\", writes them as they arrive, so that a takeover has".to_string());
                s.push("# nothing left to write: consider it.".to_string());
                s.push("mode = \"commit\"".to_string());
            }
        }
    }

    /// A setting of `Mode … { }` (or, legacy, directly under `Sync`).
    fn mode_option(&mut self, o: &Item) -> Result<()> {
        let k = o.key().to_ascii_lowercase();
        match k.as_str() {
            "purgetimeout" => {
                let secs = self.number(o)?;
                let v = secs.clamp(1, crate::config::DAY_SECS);
                let mut notes = vec![
                    "conntrackd -t flushed the kernel table this long after becoming backup; ctsync",
                    "shortens this node's own kernel entries to this timeout when it becomes backup.",
                ];
                if v != secs {
                    notes.push("(ctsync takes 1 s to one day)");
                }
                Self::set(
                    &mut self.out.timers,
                    o,
                    &notes,
                    "shorten_timeout_secs",
                    &v.to_string(),
                );
            }
            "committimeout" => {
                self.number(o)?;
                self.skip(
                    o,
                    "no equivalent: ctsync writes each flow with the timeout it was replicated with, not a fixed one",
                );
            }
            "resendqueuesize" => {
                self.number(o)?;
                self.skip(
                    o,
                    "no equivalent: ctsync's retransmission is not configurable (docs/PROTOCOL.md)",
                );
            }
            "ackwindowsize" => {
                self.number(o)?;
                self.skip(o, "no equivalent: ctsync's acknowledgements are not configurable (docs/PROTOCOL.md)");
            }
            "refreshtime" => {
                self.number(o)?;
                self.skip(
                    o,
                    "no equivalent: ctsync does not re-send every flow periodically; it sends changes reliably and compares table digests every [timers] digest_secs (5 s)",
                );
            }
            "cachetimeout" => {
                self.number(o)?;
                self.skip(
                    o,
                    "no equivalent: peers' flows are kept exact by acknowledged updates and digests, not expired by a cache timer",
                );
            }
            "disableinternalcache" => {
                self.boolean(o)?;
                self.skip(
                    o,
                    "no equivalent: ctsync always keeps this node's table (it serves bulk transfers and digests)",
                );
            }
            "startupresync" => {
                self.boolean(o)?;
                self.skip(
                    o,
                    "always on in ctsync: a node that starts gets its peers' tables",
                );
            }
            _ => self.unknown(o, "Sync or Mode"),
        }
        Ok(())
    }

    /// A setting of `Sync { Options { } }`.
    fn sync_option(&mut self, o: &Item) -> Result<()> {
        if o.is("TCPWindowTracking") {
            let on = self.boolean(o)?;
            Self::set(
                &mut self.out.sync,
                o,
                &[],
                "tcp_window_tracking",
                if on { "true" } else { "false" },
            );
        } else if o.is("ExpectationSync") {
            let all = match (&o.block, o.args()) {
                (Some(_), []) => false,
                (None, _) => self.boolean(o)?,
                _ => return Err(self.error(o, "expected On, Off or a `{ helper … }` list")),
            };
            if o.block.is_none() && all {
                self.out.sync.push(format!(
                    "# from line {}: {}: ctsync always replicates expectations, and commits them after their master flows: nothing to set.",
                    o.line,
                    o.text()
                ));
            } else if o.block.is_some() {
                self.skip(
                    o,
                    "ctsync replicates the expectations of every helper, not only those listed",
                );
            } else {
                self.skip(
                    o,
                    "ctsync always replicates expectations (with their master flows); it cannot be turned off",
                );
            }
        } else {
            self.unknown(o, "Sync Options");
        }
        Ok(())
    }
}
