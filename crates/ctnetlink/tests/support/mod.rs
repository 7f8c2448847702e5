//! Shared by the kernel tests: throwaway network namespaces and varied test flows.
//!
//! Every namespace is named `ctnl-<test>-<pid>` so that parallel tests and parallel runs
//! never collide, and is deleted when its guard drops, also when the test panics.
//! Addresses come only from 198.18.0.0/15 (IPv6: the same range, IPv4-mapped).
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;

use ctnetlink::{
    DccpInfo, Flow, L4, Labels, Netns, ProtoInfo, SctpInfo, Status, TcpFlags, TcpInfo, Tuple,
    ipproto, tcp_flags, tcp_state,
};

/// A network namespace that exists for the life of the guard.
pub struct TestNetns {
    pub name: String,
    pub ns: Netns,
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

impl TestNetns {
    /// Create `ctnl-<test>-<pid>`. Without root this says so loudly and returns `None`
    /// (the caller returns); under CI (`CI` set) it fails instead, so CI never skips.
    pub fn new(test: &str) -> Option<TestNetns> {
        if !is_root() {
            assert!(
                std::env::var_os("CI").is_none(),
                "kernel test {test} needs root, and CI must run it"
            );
            eprintln!("\n*** SKIPPED {test}: needs root to create network namespaces ***\n");
            return None;
        }
        let name = format!("ctnl-{test}-{}", std::process::id());
        // A namespace of this name left by a killed earlier run of the same pid.
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(std::process::Stdio::null())
            .status();
        let st = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("run ip (install iproute2)");
        assert!(st.success(), "ip netns add {name} failed");
        let ns = Netns::named(&name).expect("open the new namespace");
        Some(TestNetns { name, ns })
    }

    /// Run a command inside the namespace; panics with its output if it fails.
    pub fn exec(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .expect("run ip netns exec");
        assert!(
            out.status.success(),
            "{args:?} failed in {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Make connection labels usable: the kernel attaches the label extension only once
    /// a rule in the namespace uses labels.
    pub fn enable_labels(&self) {
        self.exec(&[
            "nft",
            "add table inet ctnl_labels; add chain inet ctnl_labels c; add rule inet ctnl_labels c ct label set 127",
        ]);
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

pub fn v4(i: u32) -> IpAddr {
    // 198.18.0.0/15 holds 2^17 addresses.
    IpAddr::V4(Ipv4Addr::from(0xC612_0000u32 + (i & 0x1_ffff)))
}

pub fn v6(i: u32) -> IpAddr {
    // The same benchmark range, IPv4-mapped: ::ffff:198.18.x.y.
    match v4(i) {
        IpAddr::V4(a) => IpAddr::V6(a.to_ipv6_mapped()),
        IpAddr::V6(a) => IpAddr::V6(a),
    }
}

/// Protocols exercised by the round-trip tests.
pub const PROTOS: &[u8] = &[
    ipproto::TCP,
    ipproto::UDP,
    ipproto::UDPLITE,
    ipproto::SCTP,
    ipproto::GRE,
    ipproto::ICMP,
    ipproto::ICMPV6,
    50, // ESP: tracked by the generic protocol, address only
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nat {
    None,
    Snat,
    Dnat,
}

/// A realistic established flow of the given shape; `i` makes it unique.
pub fn sample_flow(i: u32, ipv6: bool, proto: u8, nat: Nat) -> Flow {
    let addr = |n: u32| if ipv6 { v6(n) } else { v4(n) };
    let (client, server, public) = (addr(i), addr(0x1_0000 + i), addr(0x1_8000 + i));
    let l4 = |sport: u16, dport: u16| match proto {
        ipproto::TCP | ipproto::UDP | ipproto::UDPLITE | ipproto::SCTP | ipproto::DCCP => {
            L4::Ports {
                src: sport,
                dst: dport,
            }
        }
        ipproto::GRE => L4::Gre {
            src_key: sport,
            dst_key: dport,
        },
        ipproto::ICMP => L4::Icmp {
            id: sport,
            kind: 8,
            code: 0,
        },
        ipproto::ICMPV6 => L4::Icmpv6 {
            id: sport,
            kind: 128,
            code: 0,
        },
        _ => L4::None,
    };
    let sport = 20000 + (i % 30000) as u16;
    let orig = Tuple {
        src: client,
        dst: server,
        proto,
        l4: l4(sport, 443),
        zone: None,
    };
    let mut reply = orig.inverse();
    match nat {
        Nat::None => {}
        Nat::Snat => {
            reply.dst = public;
            if let L4::Ports { dst, .. } = &mut reply.l4 {
                *dst = 40000 + (i % 20000) as u16;
            }
        }
        Nat::Dnat => {
            reply.src = public;
            if let L4::Ports { src, .. } = &mut reply.l4 {
                *src = 8443;
            }
        }
    }
    let mut f = Flow::new(orig, reply);
    f.timeout = Some(600);
    f.status = Some(Status::SEEN_REPLY | Status::ASSURED);
    f.protoinfo = match proto {
        ipproto::TCP => Some(ProtoInfo::Tcp(TcpInfo {
            state: Some(tcp_state::ESTABLISHED),
            wscale_orig: Some(7),
            wscale_reply: Some(9),
            flags_orig: Some(TcpFlags {
                flags: tcp_flags::WINDOW_SCALE | tcp_flags::SACK_PERM,
                mask: tcp_flags::WINDOW_SCALE | tcp_flags::SACK_PERM,
            }),
            flags_reply: Some(TcpFlags {
                flags: tcp_flags::WINDOW_SCALE,
                mask: tcp_flags::WINDOW_SCALE,
            }),
        })),
        ipproto::SCTP => Some(ProtoInfo::Sctp(SctpInfo {
            state: Some(3), // SCTP_CONNTRACK_ESTABLISHED
            vtag_orig: Some(0x1122_3344),
            vtag_reply: Some(0x5566_7788),
        })),
        ipproto::DCCP => Some(ProtoInfo::Dccp(DccpInfo {
            state: Some(4), // CT_DCCP_OPEN
            role: Some(0),
            handshake_seq: Some(77),
        })),
        _ => None,
    };
    f
}

/// Labels with a couple of bits set.
pub fn some_labels() -> Labels {
    Labels::from_bits(&[1, 42, 100])
}
