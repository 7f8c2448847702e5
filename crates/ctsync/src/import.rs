//! `ctsync import`: a ctsync configuration from a conntrackd.conf.
//!
//! What maps is written as commented TOML (`# from line N: …` above each key) that
//! [`crate::config::Config::parse`] accepts; what does not is listed with its line and
//! why ([`Import::unmapped`]), and the TOML ends with the same list as comments. The
//! conntrackd settings are those of conntrackd.conf(5), 1.4.7; the table of what maps to
//! what is in docs/MIGRATION.md.

mod syntax;

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use anyhow::{Result, bail};
use syntax::Item;

/// The key file the output names: conntrackd has none (its link is unauthenticated).
pub const KEY_FILE: &str = "/etc/ctsync/cluster.key";

/// A conntrackd setting that has no ctsync equivalent, or an output value that needs
/// the operator (a placeholder).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmapped {
    /// Its line in the conntrackd file.
    pub line: usize,
    /// The setting as written (`NetlinkBufferSize 2097152`, `Helper { … }`).
    pub setting: String,
    /// Why it does not map, and what to do if anything.
    pub why: String,
}

/// The result of an import.
#[derive(Debug, Clone)]
pub struct Import {
    /// The ctsync configuration, commented, ending with the list of what did not map.
    pub toml: String,
    /// What did not map (or needs filling in), in line order.
    pub unmapped: Vec<Unmapped>,
}

/// Map a conntrackd.conf (`name` names it in errors and in the output's first comment).
/// An error is one line: `NAME:LINE: what was wrong: what was expected`.
pub fn import(bytes: &[u8], name: &str) -> Result<Import> {
    let tree = syntax::parse(bytes).map_err(|e| {
        anyhow::anyhow!("{name}:{}: {}: is this a conntrackd.conf?", e.line, e.what)
    })?;
    let mut m = Mapper {
        name,
        out: Out::default(),
        unmapped: Vec::new(),
    };
    m.file(&tree)?;
    let Mapper {
        out, mut unmapped, ..
    } = m;
    unmapped.sort_by_key(|u| u.line);
    let toml = out.render(name, &unmapped);
    Ok(Import { toml, unmapped })
}

/// The output as it is built: per section, lines of comments and keys.
#[derive(Default)]
struct Out {
    top: Vec<String>,
    sync: Vec<String>,
    control: Vec<String>,
    filter: Vec<String>,
    timers: Vec<String>,
}

impl Out {
    fn render(&self, name: &str, unmapped: &[Unmapped]) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# ctsync configuration imported from {name} by `ctsync import` (ctsync {}).",
            env!("CARGO_PKG_VERSION")
        );
        s.push_str(concat!(
            "# Review it before use: each key says which conntrackd line it comes from; what\n",
            "# did not map is listed at the end. etc/ctsync.toml explains every key.\n",
            "# conntrackd's keepalived script (primary-backup.sh: conntrackd -c, -f, -R, -B, -n,\n",
            "# -t) becomes `ctsync role primary|backup|fault` in the notify scripts, or a\n",
            "# [keepalived] section without scripts (see etc/ctsync.toml).\n\n",
        ));
        for (header, lines) in [
            ("", &self.top),
            ("[sync]", &self.sync),
            ("[control]", &self.control),
            ("[filter]", &self.filter),
            ("[timers]", &self.timers),
        ] {
            if lines.is_empty() {
                continue;
            }
            if !header.is_empty() {
                let _ = writeln!(s, "\n{header}");
            }
            for l in lines {
                let _ = writeln!(s, "{l}");
            }
        }
        if unmapped.is_empty() {
            s.push_str("\n# Every setting of the conntrackd file mapped.\n");
        } else {
            let _ = writeln!(s, "\n# Not mapped, or to fill in ({}):", unmapped.len());
            for u in unmapped {
                let _ = writeln!(s, "#   line {}: {}: {}", u.line, u.setting, u.why);
            }
        }
        s
    }
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    let mut q = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(q, "\\u{:04X}", u32::from(c));
            }
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

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
}

struct Mapper<'a> {
    name: &'a str,
    out: Out,
    unmapped: Vec<Unmapped>,
}

impl Mapper<'_> {
    fn skip(&mut self, item: &Item, why: impl Into<String>) {
        self.unmapped.push(Unmapped {
            line: item.line,
            setting: item.text(),
            why: why.into(),
        });
    }

    fn unknown(&mut self, item: &Item, section: &str) {
        self.skip(
            item,
            format!("not a {section} setting of conntrackd.conf(5) that ctsync knows"),
        );
    }

    fn error(&self, item: &Item, what: impl std::fmt::Display) -> anyhow::Error {
        anyhow::anyhow!("{}:{}: {}: {what}", self.name, item.line, item.text())
    }

    /// The one value of `Key VALUE`.
    fn value<'i>(&self, item: &'i Item) -> Result<&'i str> {
        match (item.args(), &item.block) {
            ([v], None) => Ok(v.as_str()),
            _ => Err(self.error(item, "expected one value after the keyword")),
        }
    }

    fn number(&self, item: &Item) -> Result<u64> {
        let v = self.value(item)?;
        v.parse()
            .map_err(|_| self.error(item, "expected a whole number"))
    }

    fn boolean(&self, item: &Item) -> Result<bool> {
        match self.value(item)?.to_ascii_lowercase().as_str() {
            "on" | "yes" | "true" => Ok(true),
            "off" | "no" | "false" => Ok(false),
            _ => Err(self.error(item, "expected On or Off")),
        }
    }

    fn address(&self, item: &Item, v6: bool) -> Result<IpAddr> {
        let v = self.value(item)?;
        let a = if v6 {
            v.parse::<Ipv6Addr>().map(IpAddr::V6).ok()
        } else {
            v.parse::<Ipv4Addr>().map(IpAddr::V4).ok()
        };
        a.ok_or_else(|| {
            self.error(
                item,
                if v6 {
                    "expected an IPv6 address"
                } else {
                    "expected an IPv4 address"
                },
            )
        })
    }

    /// Write `key = value` into `section` under `# from line N: …` and `notes`.
    fn set(section: &mut Vec<String>, item: &Item, notes: &[&str], key: &str, value: &str) {
        section.push(format!("# from line {}: {}", item.line, item.text()));
        section.extend(notes.iter().map(|n| format!("# {n}")));
        section.push(format!("{key} = {value}"));
    }

    fn file(&mut self, tree: &[Item]) -> Result<()> {
        let syncs: Vec<&Item> = tree.iter().filter(|i| i.is("Sync")).collect();
        if syncs.is_empty() {
            bail!(
                "{}: no `Sync {{ … }}` section: this conntrackd.conf does not replicate (statistics or helper mode), and ctsync replaces only sync mode",
                self.name
            );
        }
        for s in &syncs {
            if s.block.is_none() {
                return Err(self.error(s, "expected `Sync {`"));
            }
        }
        let children: Vec<&Item> = syncs.iter().flat_map(|s| s.children()).collect();
        self.sync(&children, syncs[0])?;
        for item in tree {
            if item.is("Sync") {
                continue;
            } else if item.is("General") {
                self.general(item)?;
            } else if item.is("Stats") {
                self.skip(
                    item,
                    "conntrackd's statistics mode (flow logging) has no ctsync equivalent",
                );
            } else if item.is("Helper") {
                self.skip(
                    item,
                    "user-space conntrack helpers are not replication: keep conntrackd for them, with a file without Sync",
                );
            } else {
                self.unknown(item, "top-level");
            }
        }
        Ok(())
    }

    fn sync(&mut self, children: &[&Item], sync: &Item) -> Result<()> {
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

        // The link: the one marked Default, else the first; conntrackd fails over between
        // up to four, ctsync has one.
        let chosen = links
            .iter()
            .position(|(_, i)| i.args().iter().any(|a| a.eq_ignore_ascii_case("default")))
            .unwrap_or(0);
        for (n, (_, item)) in links.iter().enumerate() {
            if n != chosen {
                self.skip(
                    item,
                    "a further dedicated link: ctsync has one sync link (conntrackd fails over between links)",
                );
            }
        }
        let (transport, link) = match links.get(chosen) {
            Some((t, item)) => (Some(*t), self.link(*t, item)?),
            None => {
                self.skip(
                    sync,
                    "no UDP, TCP or Multicast link: [sync] interface, local and peers are placeholders: fill them in",
                );
                (None, Link::default())
            }
        };
        self.write_link(transport, links.get(chosen).map(|(_, i)| *i), link)?;
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
                "ipv4_address" | "ipv6_address" if mcast => self.skip(
                    o,
                    "the multicast group: ctsync has no multicast transport yet; it sends to each peer by unicast UDP",
                ),
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

    fn write_link(
        &mut self,
        transport: Option<Transport>,
        item: Option<&Item>,
        l: Link<'_>,
    ) -> Result<()> {
        let section_line = item.map_or(1, |i| i.line);
        let placeholder = |line: usize, setting: &str, why: &str| Unmapped {
            line,
            setting: setting.to_string(),
            why: why.to_string(),
        };
        let v6 = matches!(l.local, Some((IpAddr::V6(_), _)))
            || matches!(l.peer, Some((IpAddr::V6(_), _)));
        // Documentation addresses (RFC 5737, RFC 3849): never a real node's.
        let doc = |n: u8| -> IpAddr {
            if v6 {
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(n)))
            } else {
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, n))
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
        let node = match l.local {
            Some((a, _)) => a.to_string(),
            None => "fw1".to_string(),
        };
        self.out.top.push(
            "# This node's name, for logs and `ctsync status` (conntrackd has none): the sync address; change at will."
                .to_string(),
        );
        self.out.top.push(format!("node = {}", quote(&node)));

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
            Some(Transport::Multicast) => notes.push(format!(
                "# from line {section_line}: Multicast: ctsync has no multicast transport yet: it sends unicast UDP to each peer, listed in `peers`"
            )),
            None => {}
        }
        let s = &mut self.out.sync;
        s.extend(notes);
        match &l.interface {
            Some((i, item)) => {
                s.push(format!("# from line {}: {}", item.line, item.text()));
                s.push(format!("interface = {}", quote(i)));
            }
            None => {
                self.unmapped.push(placeholder(
                    section_line,
                    what,
                    "no Interface: [sync] interface is a placeholder (\"CHANGE-ME\"): write the sync link's interface",
                ));
                s.push(
                    "# CHANGE: the sync link's interface (the conntrackd file names none)"
                        .to_string(),
                );
                s.push("interface = \"CHANGE-ME\"".to_string());
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
                    &format!("no local address: [sync] local is a placeholder ({a}): write this node's address on the sync link"),
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
                        "multicast names no peer: [sync] peers is a placeholder ({a}): list the other nodes' addresses on the sync link"
                    )
                } else {
                    format!(
                        "no destination address: [sync] peers is a placeholder ({a}): list the other nodes' addresses on the sync link"
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
                    "# ctsync and conntrackd do not talk to each other: move every node at once."
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

    fn general(&mut self, general: &Item) -> Result<()> {
        for o in general.children() {
            let k = o.key().to_ascii_lowercase();
            match k.as_str() {
                "hashlimit" => {
                    let n = self.number(o)?;
                    Self::set(
                        &mut self.out.sync,
                        o,
                        &["The most flows one cache holds (conntrackd's HashLimit counted its dead entries too)."],
                        "max_flows",
                        &n.to_string(),
                    );
                }
                "hashsize" => {
                    self.number(o)?;
                    self.skip(o, "no equivalent: ctsync's tables grow as needed ([sync] max_flows caps them)");
                }
                "unix" => {
                    for u in o.children() {
                        if u.is("Path") {
                            let p = self.value(u)?;
                            Self::set(
                                &mut self.out.control,
                                u,
                                &["The control socket (for `ctsync status`, `role`, `commit`, …); ctsync's default is", "/run/ctsync/ctsync.sock. Its directory must exist."],
                                "socket",
                                &quote(p),
                            );
                        } else if u.is("Backlog") {
                            self.skip(u, "no equivalent (deprecated in conntrackd too)");
                        } else {
                            self.unknown(u, "UNIX");
                        }
                    }
                }
                "filter" => self.filter(o)?,
                "logfile" | "syslog" => self.skip(
                    o,
                    "no equivalent: ctsync logs to stderr (the journal, under systemd)",
                ),
                "lockfile" => self.skip(
                    o,
                    "no equivalent: systemd runs one instance (etc/ctsync.service)",
                ),
                "netlinkbuffersize" | "socketbuffersize" => self.skip(
                    o,
                    "no equivalent: ctsync asks for a 64 MiB kernel event buffer",
                ),
                "netlinkbuffersizemaxgrowth"
                | "socketbuffersizemaxgrown"
                | "socketbuffersizemaxgrowth" => self.skip(
                    o,
                    "no equivalent: the event buffer is sized once (64 MiB); an overrun is counted and the kernel table re-read at once",
                ),
                "netlinkoverrunresync" => self.skip(
                    o,
                    "no equivalent: after an overrun ctsync re-reads the kernel table at once, and every [sync] kernel_resync_secs (300 s) anyway",
                ),
                "netlinkeventsreliable" => self.skip(
                    o,
                    "no equivalent: lost events are repaired by re-reading the kernel table",
                ),
                "pollsecs" => self.skip(
                    o,
                    "no equivalent: ctsync follows kernel events (and re-reads the table every [sync] kernel_resync_secs)",
                ),
                "eventiterationlimit" => self.skip(
                    o,
                    "no equivalent: ctsync bounds the work of each loop turn itself",
                ),
                "nice" => self.skip(o, "no equivalent: set Nice= in the systemd unit"),
                "scheduler" => self.skip(
                    o,
                    "no equivalent: set CPUSchedulingPolicy= and CPUSchedulingPriority= in the systemd unit",
                ),
                "systemd" => self.skip(
                    o,
                    "always on: ctsync is a Type=notify service (etc/ctsync.service)",
                ),
                "stats" => self.skip(
                    o,
                    "conntrackd's statistics mode has no ctsync equivalent",
                ),
                _ => self.unknown(o, "General"),
            }
        }
        Ok(())
    }

    fn filter(&mut self, filter: &Item) -> Result<()> {
        let args: Vec<String> = filter
            .args()
            .iter()
            .map(|a| a.to_ascii_lowercase())
            .collect();
        if args.last().is_some_and(|a| a == "kernelspace") {
            self.out.filter.push(format!(
                "# from line {}: {}: ctsync filters in user space; the effect is the same.",
                filter.line,
                filter.text()
            ));
        }
        let mut addresses_done = false;
        for set in filter.children() {
            let policy = set.args().first().map(|a| a.to_ascii_lowercase());
            let accept = match policy.as_deref() {
                Some("accept") => true,
                Some("ignore") => false,
                _ => {
                    return Err(
                        self.error(set, "expected Accept or Ignore after the filter's name")
                    );
                }
            };
            if set.block.is_none() {
                return Err(self.error(set, "expected a `{ … }` list"));
            }
            if set.is("Protocol") {
                self.protocols(set, accept)?;
            } else if set.is("Address") {
                if addresses_done {
                    self.skip(
                        set,
                        "a second address list: ctsync has one, either accepted or ignored",
                    );
                    continue;
                }
                addresses_done = true;
                self.addresses(set, accept)?;
            } else if set.is("State") {
                self.states(set, accept)?;
            } else {
                self.unknown(set, "Filter");
            }
        }
        Ok(())
    }

    fn protocols(&mut self, set: &Item, accept: bool) -> Result<()> {
        if !accept {
            self.skip(
                set,
                "ctsync's [filter] protocols lists what to replicate, not what to skip: write the complement there",
            );
            return Ok(());
        }
        let mut names = Vec::new();
        let mut notes = Vec::new();
        for p in set.children() {
            for w in &p.words {
                let name = match w.to_ascii_lowercase().as_str() {
                    n @ ("tcp" | "udp" | "icmp" | "sctp" | "gre" | "udplite") => quote(n),
                    "ipv6-icmp" | "icmpv6" | "icmp6" => quote("icmpv6"),
                    "dccp" => {
                        notes.push("DCCP is protocol 33.");
                        "33".to_string()
                    }
                    n => match n.parse::<u8>() {
                        Ok(num) => num.to_string(),
                        Err(_) => {
                            self.unmapped.push(Unmapped {
                                line: p.line,
                                setting: w.clone(),
                                why: "a protocol ctsync does not know by name: add its number to [filter] protocols".to_string(),
                            });
                            continue;
                        }
                    },
                };
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        notes.dedup();
        Self::set(
            &mut self.out.filter,
            set,
            &notes,
            "protocols",
            &format!("[{}]", names.join(", ")),
        );
        Ok(())
    }

    fn addresses(&mut self, set: &Item, accept: bool) -> Result<()> {
        let mut list = Vec::new();
        for a in set.children() {
            let v6 = if a.is("IPv4_address") {
                false
            } else if a.is("IPv6_address") {
                true
            } else {
                self.unknown(a, "Address");
                continue;
            };
            let v = self.value(a)?;
            let ok = crate::config::parse_prefix(v).is_some_and(|(ip, _)| ip.is_ipv6() == v6);
            if !ok {
                return Err(self.error(
                    a,
                    if v6 {
                        "expected an IPv6 address or prefix (2001:db8::/32)"
                    } else {
                        "expected an IPv4 address or prefix (192.168.0.0/24)"
                    },
                ));
            }
            list.push(quote(v));
        }
        let f = &mut self.out.filter;
        Self::set(
            f,
            set,
            &[
                "conntrackd matched the original source and reply source; ctsync matches either end",
                "of the original direction (the same unless NAT rewrites the reply).",
            ],
            "addresses",
            &format!("[{}]", list.join(", ")),
        );
        f.push(format!("accept = {accept}"));
        Ok(())
    }

    fn states(&mut self, set: &Item, accept: bool) -> Result<()> {
        const ALL: [&str; 9] = [
            "SYN_SENT",
            "SYN_RECV",
            "ESTABLISHED",
            "FIN_WAIT",
            "CLOSE_WAIT",
            "LAST_ACK",
            "TIME_WAIT",
            "CLOSE",
            "LISTEN",
        ];
        let mut listed: Vec<&str> = Vec::new();
        for line in set.children() {
            let words = &line.words;
            let (states, proto) = match words.iter().position(|w| w.eq_ignore_ascii_case("for")) {
                Some(i) => (&words[..i], words.get(i + 1..).unwrap_or(&[])),
                None => (&words[..], &[][..]),
            };
            if !proto.iter().all(|p| p.eq_ignore_ascii_case("tcp")) {
                self.skip(line, "ctsync filters states of TCP flows only");
                return Ok(());
            }
            for s in states {
                let up = s.to_ascii_uppercase();
                let up = if up == "CLOSED" {
                    "CLOSE".to_string()
                } else {
                    up
                };
                match ALL.iter().find(|a| **a == up) {
                    Some(a) => listed.push(*a),
                    None => {
                        return Err(self.error(
                            line,
                            format!("{s}: not a TCP state (expected {})", ALL.join(", ")),
                        ));
                    }
                }
            }
        }
        let replicated: Vec<&str> = ALL
            .iter()
            .copied()
            .filter(|s| listed.contains(s) == accept)
            .collect();
        let established_only = replicated.contains(&"ESTABLISHED")
            && !replicated.contains(&"SYN_SENT")
            && !replicated.contains(&"SYN_RECV");
        if !established_only {
            self.skip(
                set,
                "ctsync's only TCP state filter replicates TCP flows once established ([filter] tcp_established_only)",
            );
            return Ok(());
        }
        let after = ["FIN_WAIT", "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT", "CLOSE"];
        let skipped: Vec<&str> = after
            .iter()
            .copied()
            .filter(|s| !replicated.contains(s))
            .collect();
        let note = if skipped.is_empty() {
            String::new()
        } else {
            format!(
                "ctsync also replicates the states conntrackd skipped after ESTABLISHED ({}).",
                skipped.join(", ")
            )
        };
        let notes: Vec<&str> = if note.is_empty() {
            vec![]
        } else {
            vec![note.as_str()]
        };
        Self::set(
            &mut self.out.filter,
            set,
            &notes,
            "tcp_established_only",
            "true",
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    fn parses(toml: &str) -> Config {
        Config::parse(toml, Path::new("imported.toml")).unwrap_or_else(|e| panic!("{e:#}\n{toml}"))
    }

    const UDP: &str = "Sync {
    Mode FTFW {
        DisableExternalCache On
        PurgeTimeout 5
        ResendQueueSize 131072
    }
    UDP Default {
        IPv4_address 10.0.0.1
        IPv4_Destination_Address 10.0.0.2
        Port 3781
        Interface eth2
        Checksum on
    }
    Options {
        TCPWindowTracking On
        ExpectationSync On
    }
}
General {
    HashLimit 131072
    UNIX { Path /run/conntrackd.ctl }
    Nice -20
    Filter From Kernelspace {
        Protocol Accept { TCP UDP DCCP IPv6-ICMP }
        Address Ignore {
            IPv4_address 127.0.0.1
            IPv6_address ::1
            IPv4_address 10.0.0.0/8
        }
        State Accept {
            ESTABLISHED CLOSED TIME_WAIT CLOSE_WAIT for TCP
        }
    }
}
";

    #[test]
    fn a_udp_link_maps_to_sync_local_and_peers() {
        let i = import(UDP.as_bytes(), "c.conf").unwrap();
        let c = parses(&i.toml);
        assert_eq!(c.sync.interface, "eth2");
        assert_eq!(c.sync.local.to_string(), "10.0.0.1:3781");
        assert_eq!(c.sync.peers[0].to_string(), "10.0.0.2:3781");
        assert_eq!(c.sync.mode, ctsync_core::Mode::HotStandby);
        assert!(c.sync.tcp_window_tracking);
        assert_eq!(c.sync.max_flows, 131072);
        assert_eq!(c.control.socket, Path::new("/run/conntrackd.ctl"));
        assert_eq!(c.timers.shorten_timeout_secs, 5);
        let core = c.core_filter();
        assert_eq!(core.protocols, vec![6, 17, 33, 58]);
        assert_eq!(core.prefixes.len(), 3);
        assert!(!core.prefixes_accept);
        assert!(core.tcp_established_only);
        assert!(i.toml.contains("# from line 8"), "{}", i.toml);
        let lines: Vec<(usize, &str)> = i
            .unmapped
            .iter()
            .map(|u| (u.line, u.setting.as_str()))
            .collect();
        assert_eq!(
            lines,
            [
                (5, "ResendQueueSize 131072"),
                (12, "Checksum on"),
                (22, "Nice -20")
            ]
        );
        assert!(i.toml.contains("#   line 22: Nice -20: "), "{}", i.toml);
    }

    #[test]
    fn multicast_gets_placeholder_peers_that_are_listed() {
        let conf = "Sync {\n Mode ALARM {\n  RefreshTime 15\n }\n Multicast {\n  IPv4_address 225.0.0.50\n  Group 3780\n  IPv4_interface 192.168.100.100\n  Interface eth2\n }\n}\n";
        let i = import(conf.as_bytes(), "m.conf").unwrap();
        let c = parses(&i.toml);
        assert_eq!(c.sync.local.to_string(), "192.168.100.100:3780");
        assert_eq!(c.sync.peers[0].to_string(), "192.0.2.2:3780");
        assert_eq!(c.sync.mode, ctsync_core::Mode::Commit);
        let why: Vec<_> = i
            .unmapped
            .iter()
            .map(|u| (u.line, u.why.as_str()))
            .collect();
        assert!(
            why.iter()
                .any(|(l, w)| *l == 5 && w.contains("placeholder")),
            "{why:?}"
        );
        assert!(
            why.iter().any(|(l, w)| *l == 6 && w.contains("multicast")),
            "{why:?}"
        );
        assert!(why.iter().any(|(l, _)| *l == 3), "{why:?}");
    }

    #[test]
    fn a_file_without_a_link_still_gives_a_valid_config() {
        let i = import(b"Sync {\n Mode NOTRACK {\n }\n}\n", "n.conf").unwrap();
        let c = parses(&i.toml);
        assert_eq!(c.sync.interface, "CHANGE-ME");
        assert_ne!(c.sync.local, c.sync.peers[0]);
        assert!(i.unmapped.iter().all(|u| u.line == 1), "{:?}", i.unmapped);
    }

    #[test]
    fn ipv6_links_and_odd_names_are_quoted() {
        let conf = "Sync {\n UDP {\n  IPv6_address fe80::1\n  IPv6_Destination_Address fe80::2\n  Port 3780\n  Interface \"eth\\0\n }\n}\nGeneral { UNIX { Path /run/a\"b } }\n";
        let i = import(conf.as_bytes(), "v6.conf").unwrap();
        let c = parses(&i.toml);
        assert_eq!(c.sync.local.to_string(), "[fe80::1]:3780");
        assert_eq!(c.sync.interface, "\"eth\\0");
        assert_eq!(c.control.socket, Path::new("/run/a\"b"));
    }

    #[test]
    fn wrong_values_are_errors_naming_file_line_and_what_was_expected() {
        let e = |conf: &str| format!("{:#}", import(conf.as_bytes(), "x.conf").unwrap_err());
        let msg = e("General {\n HashLimit 1\n}\n");
        assert!(
            msg.starts_with("x.conf: no `Sync") && msg.contains("ctsync replaces only sync mode"),
            "{msg}"
        );
        let msg = e("Sync {\n UDP {\n  Port 70000\n }\n}\n");
        assert!(
            msg.starts_with("x.conf:3: Port 70000: expected a port"),
            "{msg}"
        );
        let msg = e("Sync {\n UDP {\n  IPv4_address 10.0.0.300\n }\n}\n");
        assert!(
            msg.starts_with("x.conf:3: ") && msg.contains("IPv4 address"),
            "{msg}"
        );
        let msg = e("Sync {\n Options {\n  TCPWindowTracking maybe\n }\n}\n");
        assert!(
            msg.starts_with("x.conf:3: ") && msg.contains("On or Off"),
            "{msg}"
        );
        let msg = e("Sync {\n}\nGeneral {\n Filter {\n  State Accept { FOO for TCP }\n }\n}\n");
        assert!(
            msg.starts_with("x.conf:5: ") && msg.contains("not a TCP state"),
            "{msg}"
        );
        let msg = e(
            "Sync {\n UDP {\n  IPv4_address 10.0.0.1\n  IPv4_Destination_Address 10.0.0.1\n }\n}\n",
        );
        assert!(
            msg.starts_with("x.conf:3: ") && msg.contains("same"),
            "{msg}"
        );
        let msg = e("Sync {\n Mode FTFW {\n}\n");
        assert!(
            msg.starts_with("x.conf:1: ") && msg.contains("never closed"),
            "{msg}"
        );
        let msg = e("\u{0}\u{1}binary");
        assert!(
            msg.starts_with("x.conf:1: ") && msg.contains("conntrackd.conf?"),
            "{msg}"
        );
    }

    #[test]
    fn state_filters_map_only_to_established_only() {
        let with = |states: &str| {
            let conf = format!("Sync {{\n}}\nGeneral {{\n Filter {{\n  {states}\n }}\n}}\n");
            let i = import(conf.as_bytes(), "s.conf").unwrap();
            let c = parses(&i.toml);
            (
                c.filter.tcp_established_only,
                i.unmapped.iter().any(|u| u.line == 5),
            )
        };
        assert_eq!(
            with("State Accept { ESTABLISHED CLOSED TIME_WAIT CLOSE_WAIT for TCP }"),
            (true, false)
        );
        assert_eq!(
            with("State Ignore { SYN_SENT SYN_RECV LISTEN for TCP }"),
            (true, false)
        );
        assert_eq!(
            with("State Accept { SYN_SENT ESTABLISHED for TCP }"),
            (false, true)
        );
        assert_eq!(with("State Ignore { ESTABLISHED for TCP }"), (false, true));
    }

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(quote("a\"b\\c\u{1}"), "\"a\\\"b\\\\c\\u0001\"");
    }
}
