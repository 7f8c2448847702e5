//! conntrackd's expectation messages (`EXP_NEW`, `EXP_UPD`, `EXP_DEL`), sent when its
//! config says `ExpectationSync On` (or a list of helpers).
//!
//! Facts from conntrack-tools 1.4.7 (`include/network.h` `enum nta_exp_attr`,
//! `src/build.c` `exp2msg`, `src/parse.c` `msg2exp`; research/conntrackd.md §2.5):
//!
//! * the body is TLVs like a conntrack message's, with their own ids (0-20; an id at or
//!   above 21 makes 1.4.7 reject the message);
//! * four tuples: the master's original tuple, the expected tuple, its mask and the NAT
//!   tuple, each as an address pair (raw network order), a protocol byte and, when the
//!   **master's** protocol is TCP, UDP, SCTP or DCCP, a port pair (big-endian);
//! * the NAT tuple has no IPv6 form; timeout (seconds left; left out when the sender has
//!   `CommitTimeout`), flags, class and NAT direction are big-endian u32;
//! * the helper name is NUL-terminated with `nta_len <= 16`, the function name
//!   `nta_len <= 32`;
//! * no zone travels.

use std::net::IpAddr;

use ctnetlink::{ExpectNat, Expectation, L4, Name, Tuple, ipproto};

use super::codec::{
    CodecError, HELPER_MAX, addr_bytes, addr_pair, be16, pair16, put_attr, u8of, u32be,
};

/// Expectation attribute ids (`NTA_EXP_*`).
mod nta {
    pub(super) const MASTER_IPV4: u16 = 0;
    pub(super) const MASTER_IPV6: u16 = 1;
    pub(super) const MASTER_L4PROTO: u16 = 2;
    pub(super) const MASTER_PORT: u16 = 3;
    pub(super) const EXPECT_IPV4: u16 = 4;
    pub(super) const EXPECT_IPV6: u16 = 5;
    pub(super) const EXPECT_L4PROTO: u16 = 6;
    pub(super) const EXPECT_PORT: u16 = 7;
    pub(super) const MASK_IPV4: u16 = 8;
    pub(super) const MASK_IPV6: u16 = 9;
    pub(super) const MASK_L4PROTO: u16 = 10;
    pub(super) const MASK_PORT: u16 = 11;
    pub(super) const TIMEOUT: u16 = 12;
    pub(super) const FLAGS: u16 = 13;
    pub(super) const CLASS: u16 = 14;
    pub(super) const NAT_IPV4: u16 = 15;
    pub(super) const NAT_PORT: u16 = 16;
    pub(super) const NAT_L4PROTO: u16 = 17;
    pub(super) const NAT_DIR: u16 = 18;
    pub(super) const HELPER_NAME: u16 = 19;
    pub(super) const FN: u16 = 20;
}

/// The longest expectation function name conntrackd accepts (`nta_len <= 32`).
const FN_MAX: usize = 27;

/// One tuple of the message, as its attributes give it.
#[derive(Default, Clone, Copy)]
struct Part {
    addrs: Option<(IpAddr, IpAddr)>,
    proto: Option<u8>,
    ports: Option<(u16, u16)>,
}

impl Part {
    /// The tuple; `proto` stands in for a missing protocol byte (the mask's and the NAT
    /// tuple's follow the expected one).
    fn tuple(&self, proto: Option<u8>) -> Option<Tuple> {
        let (src, dst) = self.addrs?;
        Some(Tuple {
            src,
            dst,
            proto: self.proto.or(proto)?,
            l4: match self.ports {
                Some((src, dst)) => L4::Ports { src, dst },
                None => L4::None,
            },
            zone: None,
        })
    }
}

/// The expectation an `EXP_*` message describes. The master, expected and mask tuples
/// are needed ([`CodecError::NoTuple`] without them).
pub fn decode_expectation(body: &[u8]) -> Result<Expectation, CodecError> {
    let (mut master, mut expect, mut mask, mut nat) = (
        Part::default(),
        Part::default(),
        Part::default(),
        Part::default(),
    );
    let mut e = Expectation::new(unset(), unset(), unset());
    let mut nat_dir = None;
    let mut rest = body;
    while rest.len() >= 4 {
        let len = usize::from(be16(rest, 0).unwrap_or(0));
        let id = be16(rest, 2).unwrap_or(0);
        if len < 4 || len > rest.len() {
            return Err(CodecError::BadAttribute);
        }
        let p = &rest[4..len];
        let part: Option<&mut Part> = match id / 4 {
            0 => Some(&mut master),
            1 => Some(&mut expect),
            2 => Some(&mut mask),
            _ => None,
        };
        match (id, part) {
            (0..=11, Some(part)) => match id % 4 {
                0 => part.addrs = Some(addr_pair(p, 4)?),
                1 => part.addrs = Some(addr_pair(p, 16)?),
                2 => part.proto = Some(u8of(p)?),
                _ => part.ports = Some(pair16(p)?),
            },
            (nta::TIMEOUT, _) => e.timeout = Some(u32be(p)?),
            (nta::FLAGS, _) => e.flags = Some(u32be(p)?),
            (nta::CLASS, _) => e.class = Some(u32be(p)?),
            (nta::NAT_IPV4, _) => nat.addrs = Some(addr_pair(p, 4)?),
            (nta::NAT_PORT, _) => nat.ports = Some(pair16(p)?),
            (nta::NAT_L4PROTO, _) => nat.proto = Some(u8of(p)?),
            (nta::NAT_DIR, _) => nat_dir = Some(u32be(p)?),
            (nta::HELPER_NAME, _) => e.helper = name(p, HELPER_MAX)?,
            (nta::FN, _) => e.function = name(p, FN_MAX)?,
            // Unknown to 1.4.7 (which rejects the whole message): skipped here.
            _ => {}
        }
        let next = len.next_multiple_of(4).min(rest.len());
        rest = &rest[next..];
    }
    e.master = master.tuple(None).ok_or(CodecError::NoTuple)?;
    e.tuple = expect.tuple(None).ok_or(CodecError::NoTuple)?;
    e.mask = mask.tuple(Some(e.tuple.proto)).ok_or(CodecError::NoTuple)?;
    if let Some(tuple) = nat.tuple(Some(e.tuple.proto)) {
        e.nat = Some(ExpectNat {
            dir: nat_dir.unwrap_or(0),
            tuple,
        });
    }
    Ok(e)
}

/// A placeholder tuple, replaced before [`decode_expectation`] returns.
fn unset() -> Tuple {
    Tuple {
        src: IpAddr::from([0, 0, 0, 0]),
        dst: IpAddr::from([0, 0, 0, 0]),
        proto: 0,
        l4: L4::None,
        zone: None,
    }
}

/// A NUL-terminated name of at most `max` bytes.
fn name(p: &[u8], max: usize) -> Result<Option<Name>, CodecError> {
    if p.len() > max + 1 {
        return Err(CodecError::BadAttribute);
    }
    Ok(Name::new(p.split(|&c| c == 0).next().unwrap_or_default()))
}

/// Whether conntrackd sends a port pair for a master of protocol `proto`.
fn has_ports(proto: u8) -> bool {
    matches!(
        proto,
        ipproto::TCP | ipproto::UDP | ipproto::SCTP | ipproto::DCCP
    )
}

/// Append one tuple: addresses (`ids.0` for IPv4, `ids.1` for IPv6), protocol
/// (`ids.2`) and, when the master has ports, the port pair (`ids.3`).
fn put_tuple(out: &mut Vec<u8>, ids: [u16; 4], t: &Tuple, ports: bool) {
    let mut a = addr_bytes(&t.src);
    a.extend(addr_bytes(&t.dst));
    put_attr(out, if t.src.is_ipv4() { ids[0] } else { ids[1] }, &a);
    put_attr(out, ids[2], &[t.proto]);
    if ports {
        let (s, d) = match t.l4 {
            L4::Ports { src, dst } => (src, dst),
            _ => (0, 0),
        };
        let mut p = s.to_be_bytes().to_vec();
        p.extend(d.to_be_bytes());
        put_attr(out, ids[3], &p);
    }
}

/// Append the attributes of `e` as conntrackd's `exp2msg` sends them. Tuples mixing
/// families are [`CodecError::Unencodable`]; `out` is then unchanged. A NAT tuple that
/// is not IPv4 (which 1.4.7 cannot carry) is left out, as are names too long for it.
pub fn encode_expectation(e: &Expectation, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let family = e.master.src.is_ipv4();
    if [&e.master, &e.tuple, &e.mask]
        .iter()
        .any(|t| t.src.is_ipv4() != family || t.dst.is_ipv4() != family)
    {
        return Err(CodecError::Unencodable);
    }
    let ports = has_ports(e.master.proto);
    put_tuple(
        out,
        [
            nta::MASTER_IPV4,
            nta::MASTER_IPV6,
            nta::MASTER_L4PROTO,
            nta::MASTER_PORT,
        ],
        &e.master,
        ports,
    );
    put_tuple(
        out,
        [
            nta::EXPECT_IPV4,
            nta::EXPECT_IPV6,
            nta::EXPECT_L4PROTO,
            nta::EXPECT_PORT,
        ],
        &e.tuple,
        ports,
    );
    put_tuple(
        out,
        [
            nta::MASK_IPV4,
            nta::MASK_IPV6,
            nta::MASK_L4PROTO,
            nta::MASK_PORT,
        ],
        &e.mask,
        ports,
    );
    if let Some(t) = e.timeout {
        put_attr(out, nta::TIMEOUT, &t.to_be_bytes());
    }
    put_attr(out, nta::FLAGS, &e.flags.unwrap_or(0).to_be_bytes());
    if let Some(c) = e.class {
        put_attr(out, nta::CLASS, &c.to_be_bytes());
    }
    if let Some(n) = &e.nat
        && n.tuple.src.is_ipv4()
        && n.tuple.dst.is_ipv4()
    {
        let mut a = addr_bytes(&n.tuple.src);
        a.extend(addr_bytes(&n.tuple.dst));
        put_attr(out, nta::NAT_IPV4, &a);
        put_attr(out, nta::NAT_L4PROTO, &[n.tuple.proto]);
        if ports && let L4::Ports { src, dst } = n.tuple.l4 {
            let mut p = src.to_be_bytes().to_vec();
            p.extend(dst.to_be_bytes());
            put_attr(out, nta::NAT_PORT, &p);
        }
        put_attr(out, nta::NAT_DIR, &n.dir.to_be_bytes());
    }
    for (id, name, max) in [
        (nta::HELPER_NAME, &e.helper, HELPER_MAX),
        (nta::FN, &e.function, FN_MAX),
    ] {
        if let Some(n) = name
            && n.as_bytes().len() <= max
        {
            let mut p = n.as_bytes().to_vec();
            p.push(0);
            put_attr(out, id, &p);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
