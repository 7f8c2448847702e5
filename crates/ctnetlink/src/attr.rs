//! Numbers of the ctnetlink protocol: message types, multicast groups and attributes.
//!
//! Every value here is cited from the kernel UAPI headers
//! `include/uapi/linux/netfilter/nfnetlink.h`,
//! `include/uapi/linux/netfilter/nfnetlink_conntrack.h` and
//! `include/uapi/linux/netfilter/nf_conntrack_common.h`. Attribute values are big-endian
//! on the wire; netlink and attribute headers are host-endian.

// Message kinds, subsystems and groups carry their UAPI names, so that code using them
// reads like the kernel source it talks to.

/// `NFNL_SUBSYS_CTNETLINK` (linux/netfilter/nfnetlink.h): conntrack entries.
pub const NFNL_SUBSYS_CTNETLINK: u8 = 1;
/// `NFNL_SUBSYS_CTNETLINK_EXP` (linux/netfilter/nfnetlink.h): expectations.
pub const NFNL_SUBSYS_CTNETLINK_EXP: u8 = 2;
/// `NFNETLINK_V0` (linux/netfilter/nfnetlink.h): the only nfgenmsg version.
pub const NFNETLINK_V0: u8 = 0;

// `enum cntl_msg_types` (linux/netfilter/nfnetlink_conntrack.h).
/// `IPCTNL_MSG_CT_NEW`: create or update; also NEW/UPDATE events and dump entries.
pub const IPCTNL_MSG_CT_NEW: u8 = 0;
/// `IPCTNL_MSG_CT_GET`: get one entry, or dump with `NLM_F_DUMP`.
pub const IPCTNL_MSG_CT_GET: u8 = 1;
/// `IPCTNL_MSG_CT_DELETE`: delete one, or flush with an empty body; DESTROY events.
pub const IPCTNL_MSG_CT_DELETE: u8 = 2;
/// `IPCTNL_MSG_CT_GET_CTRZERO`: get and zero counters.
pub const IPCTNL_MSG_CT_GET_CTRZERO: u8 = 3;
/// `IPCTNL_MSG_CT_GET_STATS_CPU`: per-CPU statistics.
pub const IPCTNL_MSG_CT_GET_STATS_CPU: u8 = 4;
/// `IPCTNL_MSG_CT_GET_STATS`: global statistics (entry count, maximum).
pub const IPCTNL_MSG_CT_GET_STATS: u8 = 5;

// `enum ctnl_exp_msg_types` (linux/netfilter/nfnetlink_conntrack.h).
/// `IPCTNL_MSG_EXP_NEW`: create an expectation; also NEW events and dump entries.
pub const IPCTNL_MSG_EXP_NEW: u8 = 0;
/// `IPCTNL_MSG_EXP_GET`: get one expectation, or dump with `NLM_F_DUMP`.
pub const IPCTNL_MSG_EXP_GET: u8 = 1;
/// `IPCTNL_MSG_EXP_DELETE`: delete one, or flush with an empty body; DESTROY events.
pub const IPCTNL_MSG_EXP_DELETE: u8 = 2;
/// `IPCTNL_MSG_EXP_GET_STATS_CPU`: per-CPU expectation statistics.
pub const IPCTNL_MSG_EXP_GET_STATS_CPU: u8 = 3;

// `enum nfnetlink_groups` (linux/netfilter/nfnetlink.h): multicast groups, from 1.
/// `NFNLGRP_CONNTRACK_NEW`.
pub const NFNLGRP_CONNTRACK_NEW: u32 = 1;
/// `NFNLGRP_CONNTRACK_UPDATE`.
pub const NFNLGRP_CONNTRACK_UPDATE: u32 = 2;
/// `NFNLGRP_CONNTRACK_DESTROY`.
pub const NFNLGRP_CONNTRACK_DESTROY: u32 = 3;
/// `NFNLGRP_CONNTRACK_EXP_NEW`.
pub const NFNLGRP_CONNTRACK_EXP_NEW: u32 = 4;
/// `NFNLGRP_CONNTRACK_EXP_UPDATE`.
pub const NFNLGRP_CONNTRACK_EXP_UPDATE: u32 = 5;
/// `NFNLGRP_CONNTRACK_EXP_DESTROY`.
pub const NFNLGRP_CONNTRACK_EXP_DESTROY: u32 = 6;

/// `enum ctattr_type` (nfnetlink_conntrack.h): top-level conntrack attributes.
pub mod cta {
    /// `CTA_TUPLE_ORIG` (nested `ctattr_tuple`).
    pub const TUPLE_ORIG: u16 = 1;
    /// `CTA_TUPLE_REPLY` (nested `ctattr_tuple`).
    pub const TUPLE_REPLY: u16 = 2;
    /// `CTA_STATUS` (u32, `enum ip_conntrack_status` bits).
    pub const STATUS: u16 = 3;
    /// `CTA_PROTOINFO` (nested `ctattr_protoinfo`).
    pub const PROTOINFO: u16 = 4;
    /// `CTA_HELP` (nested `ctattr_help`).
    pub const HELP: u16 = 5;
    /// `CTA_NAT_SRC` (nested `ctattr_nat`; requests only).
    pub const NAT_SRC: u16 = 6;
    /// `CTA_TIMEOUT` (u32 seconds).
    pub const TIMEOUT: u16 = 7;
    /// `CTA_MARK` (u32).
    pub const MARK: u16 = 8;
    /// `CTA_COUNTERS_ORIG` (nested `ctattr_counters`).
    pub const COUNTERS_ORIG: u16 = 9;
    /// `CTA_COUNTERS_REPLY` (nested `ctattr_counters`).
    pub const COUNTERS_REPLY: u16 = 10;
    /// `CTA_USE` (u32, read-only).
    pub const USE: u16 = 11;
    /// `CTA_ID` (u32).
    pub const ID: u16 = 12;
    /// `CTA_NAT_DST` (nested `ctattr_nat`; requests only).
    pub const NAT_DST: u16 = 13;
    /// `CTA_TUPLE_MASTER` (nested `ctattr_tuple`).
    pub const TUPLE_MASTER: u16 = 14;
    /// `CTA_SEQ_ADJ_ORIG` (nested `ctattr_seqadj`).
    pub const SEQ_ADJ_ORIG: u16 = 15;
    /// `CTA_SEQ_ADJ_REPLY` (nested `ctattr_seqadj`).
    pub const SEQ_ADJ_REPLY: u16 = 16;
    /// `CTA_SECMARK` (u32, obsolete but still dumped).
    pub const SECMARK: u16 = 17;
    /// `CTA_ZONE` (u16).
    pub const ZONE: u16 = 18;
    /// `CTA_SECCTX` (nested `ctattr_secctx`).
    pub const SECCTX: u16 = 19;
    /// `CTA_TIMESTAMP` (nested `ctattr_tstamp`).
    pub const TIMESTAMP: u16 = 20;
    /// `CTA_MARK_MASK` (u32; requests only).
    pub const MARK_MASK: u16 = 21;
    /// `CTA_LABELS` (binary bitmap).
    pub const LABELS: u16 = 22;
    /// `CTA_LABELS_MASK` (binary bitmap; requests only).
    pub const LABELS_MASK: u16 = 23;
    /// `CTA_SYNPROXY` (nested `ctattr_synproxy`).
    pub const SYNPROXY: u16 = 24;
    /// `CTA_FILTER` (nested; dump filters).
    pub const FILTER: u16 = 25;
    /// `CTA_STATUS_MASK` (u32; dump filters).
    pub const STATUS_MASK: u16 = 26;
}

/// `enum ctattr_tuple`.
pub mod tuple {
    /// `CTA_TUPLE_IP` (nested `ctattr_ip`).
    pub const IP: u16 = 1;
    /// `CTA_TUPLE_PROTO` (nested `ctattr_l4proto`).
    pub const PROTO: u16 = 2;
    /// `CTA_TUPLE_ZONE` (u16).
    pub const ZONE: u16 = 3;
}

/// `enum ctattr_ip`.
pub mod ip {
    /// `CTA_IP_V4_SRC`.
    pub const V4_SRC: u16 = 1;
    /// `CTA_IP_V4_DST`.
    pub const V4_DST: u16 = 2;
    /// `CTA_IP_V6_SRC`.
    pub const V6_SRC: u16 = 3;
    /// `CTA_IP_V6_DST`.
    pub const V6_DST: u16 = 4;
}

/// `enum ctattr_l4proto`.
pub mod proto {
    /// `CTA_PROTO_NUM` (u8).
    pub const NUM: u16 = 1;
    /// `CTA_PROTO_SRC_PORT` (u16; the GRE key for GRE).
    pub const SRC_PORT: u16 = 2;
    /// `CTA_PROTO_DST_PORT` (u16; the GRE key for GRE).
    pub const DST_PORT: u16 = 3;
    /// `CTA_PROTO_ICMP_ID` (u16).
    pub const ICMP_ID: u16 = 4;
    /// `CTA_PROTO_ICMP_TYPE` (u8).
    pub const ICMP_TYPE: u16 = 5;
    /// `CTA_PROTO_ICMP_CODE` (u8).
    pub const ICMP_CODE: u16 = 6;
    /// `CTA_PROTO_ICMPV6_ID` (u16).
    pub const ICMPV6_ID: u16 = 7;
    /// `CTA_PROTO_ICMPV6_TYPE` (u8).
    pub const ICMPV6_TYPE: u16 = 8;
    /// `CTA_PROTO_ICMPV6_CODE` (u8).
    pub const ICMPV6_CODE: u16 = 9;
}

/// `enum ctattr_protoinfo` and its nests.
pub mod protoinfo {
    /// `CTA_PROTOINFO_TCP`.
    pub const TCP: u16 = 1;
    /// `CTA_PROTOINFO_DCCP`.
    pub const DCCP: u16 = 2;
    /// `CTA_PROTOINFO_SCTP`.
    pub const SCTP: u16 = 3;

    /// `CTA_PROTOINFO_TCP_STATE` (u8).
    pub const TCP_STATE: u16 = 1;
    /// `CTA_PROTOINFO_TCP_WSCALE_ORIGINAL` (u8).
    pub const TCP_WSCALE_ORIGINAL: u16 = 2;
    /// `CTA_PROTOINFO_TCP_WSCALE_REPLY` (u8).
    pub const TCP_WSCALE_REPLY: u16 = 3;
    /// `CTA_PROTOINFO_TCP_FLAGS_ORIGINAL` (`struct nf_ct_tcp_flags { u8 flags; u8 mask; }`).
    pub const TCP_FLAGS_ORIGINAL: u16 = 4;
    /// `CTA_PROTOINFO_TCP_FLAGS_REPLY`.
    pub const TCP_FLAGS_REPLY: u16 = 5;

    /// `CTA_PROTOINFO_DCCP_STATE` (u8).
    pub const DCCP_STATE: u16 = 1;
    /// `CTA_PROTOINFO_DCCP_ROLE` (u8).
    pub const DCCP_ROLE: u16 = 2;
    /// `CTA_PROTOINFO_DCCP_HANDSHAKE_SEQ` (u64).
    pub const DCCP_HANDSHAKE_SEQ: u16 = 3;

    /// `CTA_PROTOINFO_SCTP_STATE` (u8).
    pub const SCTP_STATE: u16 = 1;
    /// `CTA_PROTOINFO_SCTP_VTAG_ORIGINAL` (u32).
    pub const SCTP_VTAG_ORIGINAL: u16 = 2;
    /// `CTA_PROTOINFO_SCTP_VTAG_REPLY` (u32).
    pub const SCTP_VTAG_REPLY: u16 = 3;
}

/// `enum ctattr_counters`.
pub mod counters {
    /// `CTA_COUNTERS_PACKETS` (u64).
    pub const PACKETS: u16 = 1;
    /// `CTA_COUNTERS_BYTES` (u64).
    pub const BYTES: u16 = 2;
    /// `CTA_COUNTERS32_PACKETS` (u32, old kernels).
    pub const PACKETS32: u16 = 3;
    /// `CTA_COUNTERS32_BYTES` (u32, old kernels).
    pub const BYTES32: u16 = 4;
    /// `CTA_COUNTERS_PAD`.
    pub const PAD: u16 = 5;
}

/// `enum ctattr_tstamp`.
pub mod tstamp {
    /// `CTA_TIMESTAMP_START` (u64 ns).
    pub const START: u16 = 1;
    /// `CTA_TIMESTAMP_STOP` (u64 ns).
    pub const STOP: u16 = 2;
    /// `CTA_TIMESTAMP_PAD`.
    pub const PAD: u16 = 3;
}

/// `enum ctattr_nat` and `enum ctattr_protonat`.
pub mod nat {
    /// `CTA_NAT_V4_MINIP`.
    pub const V4_MINIP: u16 = 1;
    /// `CTA_NAT_V4_MAXIP`.
    pub const V4_MAXIP: u16 = 2;
    /// `CTA_NAT_PROTO` (nested `ctattr_protonat`).
    pub const PROTO: u16 = 3;
    /// `CTA_NAT_V6_MINIP`.
    pub const V6_MINIP: u16 = 4;
    /// `CTA_NAT_V6_MAXIP`.
    pub const V6_MAXIP: u16 = 5;
    /// `CTA_PROTONAT_PORT_MIN` (u16).
    pub const PORT_MIN: u16 = 1;
    /// `CTA_PROTONAT_PORT_MAX` (u16).
    pub const PORT_MAX: u16 = 2;
}

/// `enum ctattr_seqadj`.
pub mod seqadj {
    /// `CTA_SEQADJ_CORRECTION_POS` (u32).
    pub const CORRECTION_POS: u16 = 1;
    /// `CTA_SEQADJ_OFFSET_BEFORE` (u32).
    pub const OFFSET_BEFORE: u16 = 2;
    /// `CTA_SEQADJ_OFFSET_AFTER` (u32).
    pub const OFFSET_AFTER: u16 = 3;
}

/// `enum ctattr_help`.
pub mod help {
    /// `CTA_HELP_NAME` (NUL-terminated string).
    pub const NAME: u16 = 1;
}

/// `enum ctattr_synproxy`.
pub mod synproxy {
    /// `CTA_SYNPROXY_ISN` (u32).
    pub const ISN: u16 = 1;
    /// `CTA_SYNPROXY_ITS` (u32).
    pub const ITS: u16 = 2;
    /// `CTA_SYNPROXY_TSOFF` (u32).
    pub const TSOFF: u16 = 3;
}

/// `enum ctattr_expect` and `enum ctattr_expect_nat`.
pub mod expect {
    /// `CTA_EXPECT_MASTER` (nested tuple).
    pub const MASTER: u16 = 1;
    /// `CTA_EXPECT_TUPLE` (nested tuple).
    pub const TUPLE: u16 = 2;
    /// `CTA_EXPECT_MASK` (nested tuple).
    pub const MASK: u16 = 3;
    /// `CTA_EXPECT_TIMEOUT` (u32).
    pub const TIMEOUT: u16 = 4;
    /// `CTA_EXPECT_ID` (u32).
    pub const ID: u16 = 5;
    /// `CTA_EXPECT_HELP_NAME` (string).
    pub const HELP_NAME: u16 = 6;
    /// `CTA_EXPECT_ZONE` (u16).
    pub const ZONE: u16 = 7;
    /// `CTA_EXPECT_FLAGS` (u32).
    pub const FLAGS: u16 = 8;
    /// `CTA_EXPECT_CLASS` (u32).
    pub const CLASS: u16 = 9;
    /// `CTA_EXPECT_NAT` (nested).
    pub const NAT: u16 = 10;
    /// `CTA_EXPECT_FN` (string).
    pub const FN: u16 = 11;
    /// `CTA_EXPECT_NAT_DIR` (u32).
    pub const NAT_DIR: u16 = 1;
    /// `CTA_EXPECT_NAT_TUPLE` (nested tuple).
    pub const NAT_TUPLE: u16 = 2;
}

/// `enum ctattr_stats_cpu` and `enum ctattr_stats_global`.
pub mod stats {
    /// `CTA_STATS_FOUND`.
    pub const FOUND: u16 = 2;
    /// `CTA_STATS_INVALID`.
    pub const INVALID: u16 = 4;
    /// `CTA_STATS_INSERT`.
    pub const INSERT: u16 = 8;
    /// `CTA_STATS_INSERT_FAILED`.
    pub const INSERT_FAILED: u16 = 9;
    /// `CTA_STATS_DROP`.
    pub const DROP: u16 = 10;
    /// `CTA_STATS_EARLY_DROP`.
    pub const EARLY_DROP: u16 = 11;
    /// `CTA_STATS_ERROR`.
    pub const ERROR: u16 = 12;
    /// `CTA_STATS_SEARCH_RESTART`.
    pub const SEARCH_RESTART: u16 = 13;
    /// `CTA_STATS_CLASH_RESOLVE`.
    pub const CLASH_RESOLVE: u16 = 14;
    /// `CTA_STATS_CHAIN_TOOLONG`.
    pub const CHAIN_TOOLONG: u16 = 15;
    /// `CTA_STATS_GLOBAL_ENTRIES` (u32).
    pub const GLOBAL_ENTRIES: u16 = 1;
    /// `CTA_STATS_GLOBAL_MAX_ENTRIES` (u32).
    pub const GLOBAL_MAX_ENTRIES: u16 = 2;
}
