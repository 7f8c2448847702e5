//! Synthetic, realistic conntrack entries for load tests and benchmarks.
//!
//! Entry `i` is a pure function of `i` and the mix, so a loader can delete exactly what it
//! created without remembering it, and the C reference loader under `bench/c-loader`
//! builds the very same `tcp-snat` entries. Addresses come only from 198.18.0.0/15 (the
//! benchmarking range of RFC 2544); IPv6 entries use the same range IPv4-mapped.
//!
//! For `i` below 4,194,304:
//! * client `198.18.0.0 + (i & 0xffff)`, source port (or ICMP id) `10000 + (i >> 16)`;
//! * server `198.19.0.1`, port 443 (TCP) or 53 (UDP);
//! * SNAT to `198.19.128.0 + i / 64000`, port (or ICMP id) `1024 + i % 64000`.

use std::net::{IpAddr, Ipv4Addr};

use ctnetlink::{
    Flow, L4, ProtoInfo, Status, TcpFlags, TcpInfo, Tuple, ipproto, tcp_flags, tcp_state,
};

/// The largest index the address plan keeps unique.
pub const MAX_INDEX: u64 = 1 << 22;

/// Which entries to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mix {
    /// Only established IPv4 TCP with SNAT: the benchmark pattern, identical to the C
    /// reference loader's.
    TcpSnat,
    /// Six in ten established IPv4 TCP with SNAT, two UDP with SNAT, one ICMP echo with
    /// SNAT, one established IPv6 TCP without NAT.
    Realistic,
}

fn v4(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(n))
}

fn mapped(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V4(a) => IpAddr::V6(a.to_ipv6_mapped()),
        v6 => v6,
    }
}

const CLIENTS: u32 = 0xC612_0000; // 198.18.0.0
const SERVER: u32 = 0xC613_0001; // 198.19.0.1
const PUBLIC: u32 = 0xC613_8000; // 198.19.128.0

/// Entry `i` of `mix` (`i` below [`MAX_INDEX`]), with the given timeout in seconds.
pub fn flow(i: u64, mix: Mix, timeout: u32) -> Flow {
    let i = (i % MAX_INDEX) as u32;
    let client = v4(CLIENTS + (i & 0xffff));
    let server = v4(SERVER);
    let sport = 10000 + (i >> 16) as u16;
    let public = v4(PUBLIC + i / 64000);
    let public_port = 1024 + (i % 64000) as u16;
    let kind = match mix {
        Mix::TcpSnat => 0,
        Mix::Realistic => i % 10,
    };
    let (proto, l4, nat, ipv6) = match kind {
        0..=5 => (
            ipproto::TCP,
            L4::Ports {
                src: sport,
                dst: 443,
            },
            true,
            false,
        ),
        6 | 7 => (
            ipproto::UDP,
            L4::Ports {
                src: sport,
                dst: 53,
            },
            true,
            false,
        ),
        8 => (
            ipproto::ICMP,
            L4::Icmp {
                id: sport,
                kind: 8,
                code: 0,
            },
            true,
            false,
        ),
        _ => (
            ipproto::TCP,
            L4::Ports {
                src: sport,
                dst: 443,
            },
            false,
            true,
        ),
    };
    let (client, server) = if ipv6 {
        (mapped(client), mapped(server))
    } else {
        (client, server)
    };
    let orig = Tuple {
        src: client,
        dst: server,
        proto,
        l4,
        zone: None,
    };
    let mut reply = orig.inverse();
    if nat {
        reply.dst = public;
        reply.l4 = match reply.l4 {
            L4::Ports { src, .. } => L4::Ports {
                src,
                dst: public_port,
            },
            L4::Icmp { kind, code, .. } => L4::Icmp {
                id: public_port,
                kind,
                code,
            },
            other => other,
        };
    }
    let mut f = Flow::new(orig, reply);
    f.timeout = Some(timeout);
    f.status = Some(Status::SEEN_REPLY | Status::ASSURED);
    if proto == ipproto::TCP {
        let flags = TcpFlags {
            flags: tcp_flags::WINDOW_SCALE | tcp_flags::SACK_PERM,
            mask: tcp_flags::WINDOW_SCALE | tcp_flags::SACK_PERM,
        };
        f.protoinfo = Some(ProtoInfo::Tcp(TcpInfo {
            state: Some(tcp_state::ESTABLISHED),
            wscale_orig: Some(7),
            wscale_reply: Some(7),
            flags_orig: Some(flags),
            flags_reply: Some(flags),
        }));
    }
    f
}

/// `f` closed and opened again behind another public port, as random-port SNAT would
/// give it: the same original tuple, the reply addressed to port + 32000 (in the range
/// [`flow`] uses). `f` must have ports.
pub fn renatted(f: &Flow) -> Flow {
    let r = f.reply;
    let (sport, dport) = (r.src_port().unwrap_or(0), r.dst_port().unwrap_or(0));
    let moved = 1024 + (u32::from(dport).saturating_sub(1024) + 32_000) % 64_000;
    let mut n = f.clone();
    n.reply = Tuple::ports(r.proto, r.src, sport, r.dst, moved as u16);
    n
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn tuples_are_unique_in_both_directions() {
        for mix in [Mix::TcpSnat, Mix::Realistic] {
            let mut seen = HashSet::new();
            for i in 0..300_000 {
                let f = flow(i, mix, 60);
                assert!(seen.insert(f.orig), "orig of {i} repeats");
                assert!(seen.insert(f.reply), "reply of {i} repeats");
            }
        }
    }

    #[test]
    fn addresses_stay_in_the_benchmark_range() {
        let in_range = |a: IpAddr| match a {
            IpAddr::V4(a) => (u32::from(a) >> 17) == (0xC612_0000 >> 17),
            IpAddr::V6(a) => a
                .to_ipv4_mapped()
                .is_some_and(|a| (u32::from(a) >> 17) == (0xC612_0000 >> 17)),
        };
        for i in (0..MAX_INDEX).step_by(997) {
            let f = flow(i, Mix::Realistic, 60);
            for a in [f.orig.src, f.orig.dst, f.reply.src, f.reply.dst] {
                assert!(in_range(a), "{a} of entry {i}");
            }
        }
    }
}
