//! `General { Filter { … } }`: protocols, addresses and TCP states.

use anyhow::Result;

use super::syntax::Item;
use super::{Mapper, Unmapped, quote};

impl Mapper<'_> {
    pub(super) fn filter(&mut self, filter: &Item) -> Result<()> {
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
