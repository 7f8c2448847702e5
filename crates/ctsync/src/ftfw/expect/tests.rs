use super::*;
use crate::ftfw::codec::{self, kind};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// An FTP data expectation as conntrackd 1.4.7 sends it (`exp2msg`'s order), built by
/// hand from the attribute table, not by our encoder: master 198.18.1.100:40000 →
/// 198.19.0.100:21, expected 198.18.1.100 → 198.19.0.100:50001 (any source port), NAT
/// to 198.19.0.1 port 50001 in the reply direction, 287 s left, helper "ftp".
fn ftp_body() -> Vec<u8> {
    let hex = concat!(
        "000c0000", "c6120164", "c6130064", // MASTER_IPV4
        "00050002", "06000000", // MASTER_L4PROTO tcp
        "00080003", "9c400015", // MASTER_PORT 40000, 21
        "000c0004", "c6120164", "c6130064", // EXPECT_IPV4
        "00050006", "06000000", // EXPECT_L4PROTO
        "00080007", "0000c351", // EXPECT_PORT 0, 50001
        "000c0008", "ffffffff", "ffffffff", // MASK_IPV4
        "0005000a", "06000000", // MASK_L4PROTO
        "0008000b", "0000ffff", // MASK_PORT
        "0008000c", "0000011f", // TIMEOUT 287
        "0008000d", "00000000", // FLAGS
        "0008000e", "00000000", // CLASS
        "000c000f", "00000000", "c6130001", // NAT_IPV4
        "00050011", "06000000", // NAT_L4PROTO
        "00080010", "0000c351", // NAT_PORT
        "00080012", "00000001", // NAT_DIR reply
        "00080013", "66747000", // HELPER_NAME "ftp\0"
    );
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn conntrackds_ftp_expectation_decodes() {
    let e = decode_expectation(&ftp_body()).unwrap();
    assert_eq!(
        e.master,
        Tuple::ports(
            ipproto::TCP,
            ip("198.18.1.100"),
            40000,
            ip("198.19.0.100"),
            21
        )
    );
    assert_eq!(
        e.tuple,
        Tuple::ports(
            ipproto::TCP,
            ip("198.18.1.100"),
            0,
            ip("198.19.0.100"),
            50001
        )
    );
    assert_eq!(
        e.mask,
        Tuple::ports(
            ipproto::TCP,
            ip("255.255.255.255"),
            0,
            ip("255.255.255.255"),
            0xffff
        )
    );
    assert_eq!(e.timeout, Some(287));
    assert_eq!((e.flags, e.class), (Some(0), Some(0)));
    assert_eq!(e.helper.unwrap().as_bytes(), b"ftp");
    let nat = e.nat.unwrap();
    assert_eq!(nat.dir, 1);
    assert_eq!(nat.tuple.dst, ip("198.19.0.1"));
    assert_eq!(nat.tuple.l4, L4::Ports { src: 0, dst: 50001 });
}

#[test]
fn our_encoding_is_conntrackds_byte_for_byte_and_round_trips() {
    let e = decode_expectation(&ftp_body()).unwrap();
    let mut out = Vec::new();
    encode_expectation(&e, &mut out).unwrap();
    assert_eq!(out, ftp_body());
    assert_eq!(decode_expectation(&out).unwrap(), e);
}

#[test]
fn an_ipv6_expectation_without_nat_round_trips_and_bad_ones_are_refused() {
    let t = |s: &str, d: &str, dp: u16| Tuple::ports(ipproto::UDP, ip(s), 0, ip(d), dp);
    let mut e = Expectation::new(
        Tuple::ports(
            ipproto::UDP,
            ip("2001:db8:1::100"),
            5060,
            ip("2001:db8:2::100"),
            5060,
        ),
        t("2001:db8:2::100", "2001:db8:1::100", 7078),
        t(
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            0xffff,
        ),
    );
    e.timeout = Some(60);
    e.flags = Some(0);
    e.helper = Name::new(b"sip");
    e.function = Name::new(b"nf_nat_sip_expected");
    let mut out = Vec::new();
    encode_expectation(&e, &mut out).unwrap();
    assert_eq!(decode_expectation(&out).unwrap(), e);

    // No expected tuple (bytes 28..56: its addresses, protocol and ports): refused.
    let body = ftp_body();
    let no_expect: Vec<u8> = body[..28].iter().chain(&body[56..]).copied().collect();
    assert_eq!(decode_expectation(&no_expect), Err(CodecError::NoTuple));
    // A helper name longer than conntrackd allows; an attribute running past the end.
    let mut long = body[..body.len() - 8].to_vec();
    put_attr(&mut long, nta::HELPER_NAME, b"twelve_chars\0");
    assert_eq!(decode_expectation(&long), Err(CodecError::BadAttribute));
    let mut past = body.clone();
    past[1] = 0xff;
    assert_eq!(decode_expectation(&past), Err(CodecError::BadAttribute));
    // Mixed families cannot be sent.
    e.mask.src = ip("255.255.255.255");
    let mut none = Vec::new();
    assert_eq!(
        encode_expectation(&e, &mut none),
        Err(CodecError::Unencodable)
    );
    assert!(none.is_empty());
}

#[test]
fn every_prefix_of_a_message_decodes_or_fails_without_panicking() {
    let body = ftp_body();
    for n in 0..=body.len() {
        let _ = decode_expectation(&body[..n]);
    }
    // And as a whole datagram: header EXP_NEW.
    let mut d = Vec::new();
    codec::put_state(&mut d, kind::EXP_NEW, 0, 7, &body).unwrap();
    let m = codec::messages(&d).next().unwrap().unwrap();
    assert_eq!(m.class(), Some(codec::Class::Expectation(kind::EXP_NEW)));
}
