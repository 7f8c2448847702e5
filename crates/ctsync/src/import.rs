//! `ctsync import`: a ctsync configuration from a conntrackd.conf.
//!
//! What maps is written as commented TOML (`# from line N: …` above each key) that
//! [`crate::config::Config::parse`] accepts; what does not is listed with its line and
//! why ([`Import::unmapped`]), and the TOML ends with the same list as comments. The
//! conntrackd settings are those of conntrackd.conf(5), 1.4.7; the table of what maps to
//! what is in docs/MIGRATION.md.

mod filter;
mod sync;
mod syntax;

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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
    /// The further links, each a `[[sync.link]]` table.
    links: Vec<Vec<String>>,
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
        let links = self.links.iter().map(|l| ("[[sync.link]]", l));
        for (header, lines) in [("", &self.top), ("[sync]", &self.sync)]
            .into_iter()
            .chain(links)
            .chain([
                ("[control]", &self.control),
                ("[filter]", &self.filter),
                ("[timers]", &self.timers),
            ])
        {
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

    /// conntrackd's further dedicated links (it fails over between up to four) become
    /// `[[sync.link]]` tables after the one marked `Default`, in the file's order; a
    /// further multicast link carries unicast (the group is the first link's); a fifth
    /// is listed as not mapped.
    #[test]
    fn every_dedicated_link_maps_to_a_sync_link() {
        let conf = "Sync {
    Mode FTFW {
    }
    UDP {
        IPv4_address 10.0.0.1
        IPv4_Destination_Address 10.0.0.2
        Port 3780
        Interface eth2
    }
    UDP Default {
        IPv4_address 10.0.1.1
        IPv4_Destination_Address 10.0.1.2
        Port 3781
        Interface eth3
    }
    Multicast {
        IPv4_address 225.0.0.50
        Group 3782
        IPv4_interface 10.0.2.1
        Interface eth4
    }
    TCP {
        IPv4_address 10.0.3.1
        IPv4_Destination_Address 10.0.3.2
        Port 3783
        Interface eth5
    }
    UDP {
        IPv4_address 10.0.4.1
        IPv4_Destination_Address 10.0.4.2
        Interface eth6
    }
}
";
        let i = import(conf.as_bytes(), "l.conf").unwrap();
        let c = parses(&i.toml);
        let links: Vec<_> = c
            .sync
            .links()
            .into_iter()
            .map(|l| (l.interface, l.local.to_string(), l.peers[0].to_string()))
            .collect();
        let l = |i: &str, a: &str, b: &str| (i.to_string(), a.to_string(), b.to_string());
        assert_eq!(
            links,
            [
                l("eth3", "10.0.1.1:3781", "10.0.1.2:3781"),
                l("eth2", "10.0.0.1:3780", "10.0.0.2:3780"),
                l("eth4", "10.0.2.1:3782", "192.0.2.10:3782"),
                l("eth5", "10.0.3.1:3783", "10.0.3.2:3783"),
            ],
            "{}",
            i.toml
        );
        assert_eq!(c.sync.group, None, "{}", i.toml);
        let why = |line: usize| {
            i.unmapped
                .iter()
                .filter(|u| u.line == line)
                .map(|u| u.why.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        };
        assert!(why(17).contains("first link"), "{:?}", i.unmapped);
        assert!(why(16).contains("placeholder"), "{:?}", i.unmapped);
        assert!(why(28).contains("beyond the fourth"), "{:?}", i.unmapped);
        assert!(why(4).is_empty() && why(10).is_empty(), "{:?}", i.unmapped);
    }

    /// Links that ctsync could not load (a sixth and a seventh, two on one interface or
    /// one address) are listed as not mapped: the output still loads.
    #[test]
    fn links_beyond_four_or_reusing_an_interface_or_address_are_listed() {
        let udp = |i: u8, iface: &str| {
            format!(
                " UDP {{\n  IPv4_address 10.0.{i}.1\n  IPv4_Destination_Address 10.0.{i}.2\n  Interface {iface}\n }}\n"
            )
        };
        let mut conf = String::from("Sync {\n");
        for i in 0..7 {
            conf.push_str(&udp(i, &format!("eth{i}")));
        }
        conf.push_str(&udp(0, "eth9"));
        conf.push_str(&udp(9, "eth1"));
        conf.push_str("}\n");
        let i = import(conf.as_bytes(), "many.conf").unwrap();
        let c = parses(&i.toml);
        assert_eq!(c.sync.links().len(), 4, "{}", i.toml);
        let why: Vec<&str> = i.unmapped.iter().map(|u| u.why.as_str()).collect();
        assert_eq!(
            why.iter()
                .filter(|w| w.contains("beyond the fourth"))
                .count(),
            5,
            "{why:?}"
        );
        let dup = "Sync {\n UDP {\n  IPv4_address 10.0.0.1\n  IPv4_Destination_Address 10.0.0.2\n  Interface eth0\n }\n UDP {\n  IPv4_address 10.0.1.1\n  IPv4_Destination_Address 10.0.1.2\n  Interface eth0\n }\n UDP {\n  IPv4_address 10.0.0.1\n  IPv4_Destination_Address 10.0.2.2\n  Interface eth2\n }\n}\n";
        let i = import(dup.as_bytes(), "dup.conf").unwrap();
        let c = parses(&i.toml);
        assert_eq!(c.sync.links().len(), 1, "{}", i.toml);
        let lines: Vec<usize> = i
            .unmapped
            .iter()
            .filter(|u| u.why.contains("of its own"))
            .map(|u| u.line)
            .collect();
        assert_eq!(lines, [7, 12], "{:?}", i.unmapped);
    }

    /// Further links without addresses get placeholders of their own: the file still
    /// gives a configuration that loads (no address or interface used twice).
    #[test]
    fn further_links_get_placeholders_of_their_own() {
        let conf =
            "Sync {\n UDP {\n }\n UDP {\n }\n Multicast {\n  IPv4_address 225.0.0.50\n }\n}\n";
        let i = import(conf.as_bytes(), "p.conf").unwrap();
        let c = parses(&i.toml);
        let names: Vec<_> = c.sync.links().into_iter().map(|l| l.interface).collect();
        assert_eq!(
            names,
            ["CHANGE-ME", "CHANGE-ME-2", "CHANGE-ME-3"],
            "{}",
            i.toml
        );
        assert_eq!(c.sync.group, None, "{}", i.toml);
    }

    #[test]
    fn multicast_gets_placeholder_peers_that_are_listed() {
        let conf = "Sync {\n Mode ALARM {\n  RefreshTime 15\n }\n Multicast {\n  IPv4_address 225.0.0.50\n  Group 3780\n  IPv4_interface 192.168.100.100\n  Interface eth2\n }\n}\n";
        let i = import(conf.as_bytes(), "m.conf").unwrap();
        let c = parses(&i.toml);
        assert_eq!(c.sync.local.to_string(), "192.168.100.100:3780");
        assert_eq!(c.sync.peers[0].to_string(), "192.0.2.2:3780");
        assert_eq!(
            c.sync.group.map(|g| g.to_string()).as_deref(),
            Some("225.0.0.50:3780")
        );
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
            !why.iter().any(|(l, _)| *l == 6),
            "the group is mapped: {why:?}"
        );
        assert!(why.iter().any(|(l, _)| *l == 3), "{why:?}");
    }

    #[test]
    fn an_ipv6_multicast_group_is_mapped_with_an_ipv6_placeholder_address() {
        let conf = "Sync {\n Mode FTFW {\n }\n Multicast {\n  IPv6_address ff02::1:3\n  Group 3780\n  Interface eth2\n }\n}\n";
        let i = import(conf.as_bytes(), "m6.conf").unwrap();
        let c = parses(&i.toml);
        assert_eq!(
            c.sync.group.map(|g| g.to_string()).as_deref(),
            Some("[ff02::1:3]:3780")
        );
        assert!(c.sync.local.is_ipv6(), "{}", c.sync.local);
        assert_eq!(c.sync.interface, "eth2");
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
