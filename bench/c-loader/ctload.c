/*
 * ctload - batched conntrack loader, C reference for the ctsync benchmark.
 *
 * Creates (or deletes) N synthetic conntrack entries in the current network
 * namespace through ctnetlink, using libnetfilter_conntrack to encode each
 * entry (nfct_nlmsg_build) and libmnl for the socket.  Many messages are
 * packed back to back into one buffer (~256 KiB) and sent with a single
 * sendmsg(); only the last message of each batch asks for an ACK, so the
 * kernel only answers for failures plus that final message.
 *
 * Usage:  ctload create N
 *         ctload delete N
 *
 * Prints one line of JSON on stdout, e.g.
 *   {"tool":"c-libnetfilter_conntrack","op":"create","requested":N,
 *    "created":C,"errors":E,"seconds":S,"per_second":R}
 *
 * The entry pattern ("tcp-snat") must stay identical to the Rust loader's;
 * see README.md and fill_entry() below.
 *
 * Exit status: 0 all entries succeeded, 2 some entries failed (JSON still
 * printed, per-errno summary on stderr), 1 fatal error (no JSON).
 */

#define _GNU_SOURCE

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <arpa/inet.h>
#include <sys/socket.h>

#include <libmnl/libmnl.h>
#include <libnetfilter_conntrack/libnetfilter_conntrack.h>
#include <linux/netfilter/nf_conntrack_tcp.h>

#ifndef SOL_NETLINK
#define SOL_NETLINK 270
#endif
#ifndef NETLINK_CAP_ACK
#define NETLINK_CAP_ACK 10
#endif

#define TOOL_NAME      "c-libnetfilter_conntrack"

/* Largest N the entry pattern is defined for (tuples stay unique). */
#define MAX_ENTRIES    4000000UL

/* Flush a batch once it holds at least this many bytes. */
#define BATCH_BYTES    (256u * 1024u)
/* Room reserved for one more message; ours are ~200 bytes. */
#define MSG_MAX        4096u
/* Socket buffer sizes (SO_SNDBUFFORCE / SO_RCVBUFFORCE). */
#define SOCK_BUF_BYTES (8 * 1024 * 1024)
/* Receive buffer for ACK / error messages. */
#define RECV_BYTES     (256u * 1024u)

/* Highest errno value tracked individually in the error summary. */
#define ERRNO_SLOTS    256

/* Host-order IPv4 helper: a.b.c.d -> uint32_t. */
#define IPV4(a, b, c, d) \
	(((uint32_t)(a) << 24) | ((uint32_t)(b) << 16) | \
	 ((uint32_t)(c) << 8) | (uint32_t)(d))

enum op { OP_CREATE, OP_DELETE };

struct stats {
	unsigned long errors;
	unsigned long by_errno[ERRNO_SLOTS];	/* last slot: "other" */
};

static double now_seconds(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) {
		perror("clock_gettime");
		exit(EXIT_FAILURE);
	}
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * Fill @ct with entry number @i of the "tcp-snat" mix.
 *
 * original: 198.18.hi.lo:(10000 + (i >> 16)) -> 198.19.0.1:443
 *           (hi.lo = low 16 bits of i)
 * reply:    198.19.0.1:443 -> (198.19.128.0 + i / 64000):(1024 + i % 64000)
 * SNAT to the reply destination, ESTABLISHED, assured, timeout 3600 s.
 *
 * For a delete only the original tuple (and zone) is needed: that is what
 * the kernel looks the entry up by.
 */
static void fill_entry(struct nf_conntrack *ct, uint32_t i, enum op op)
{
	const uint32_t orig_src = IPV4(198, 18, 0, 0) + (i & 0xffffu);
	const uint32_t orig_dst = IPV4(198, 19, 0, 1);
	const uint16_t orig_sport = (uint16_t)(10000u + (i >> 16));
	const uint16_t orig_dport = 443;
	const uint32_t repl_dst = IPV4(198, 19, 128, 0) + i / 64000u;
	const uint16_t repl_dport = (uint16_t)(1024u + i % 64000u);
	const uint8_t tcp_flags = IP_CT_TCP_FLAG_WINDOW_SCALE |
				  IP_CT_TCP_FLAG_SACK_PERM;

	/* Original tuple. */
	nfct_set_attr_u8(ct, ATTR_ORIG_L3PROTO, AF_INET);
	nfct_set_attr_u8(ct, ATTR_ORIG_L4PROTO, IPPROTO_TCP);
	nfct_set_attr_u32(ct, ATTR_ORIG_IPV4_SRC, htonl(orig_src));
	nfct_set_attr_u32(ct, ATTR_ORIG_IPV4_DST, htonl(orig_dst));
	nfct_set_attr_u16(ct, ATTR_ORIG_PORT_SRC, htons(orig_sport));
	nfct_set_attr_u16(ct, ATTR_ORIG_PORT_DST, htons(orig_dport));
	nfct_set_attr_u16(ct, ATTR_ZONE, 0);

	if (op == OP_DELETE)
		return;

	/*
	 * Reply tuple WITHOUT the SNAT applied, as conntrackd sends it after
	 * NFCT_SOPT_UNDO_SNAT: the kernel maps it through CTA_NAT_SRC below and sets
	 * IPS_SRC_NAT. Given the already-NATed reply, nf_nat_setup_info() would see
	 * no change, set up a null binding, and never rewrite the packets.
	 */
	nfct_set_attr_u8(ct, ATTR_REPL_L3PROTO, AF_INET);
	nfct_set_attr_u8(ct, ATTR_REPL_L4PROTO, IPPROTO_TCP);
	nfct_set_attr_u32(ct, ATTR_REPL_IPV4_SRC, htonl(orig_dst));
	nfct_set_attr_u32(ct, ATTR_REPL_IPV4_DST, htonl(orig_src));
	nfct_set_attr_u16(ct, ATTR_REPL_PORT_SRC, htons(orig_dport));
	nfct_set_attr_u16(ct, ATTR_REPL_PORT_DST, htons(orig_sport));

	/* NAT binding (CTA_NAT_SRC) so the kernel sets up the SNAT. */
	nfct_set_attr_u32(ct, ATTR_SNAT_IPV4, htonl(repl_dst));
	nfct_set_attr_u16(ct, ATTR_SNAT_PORT, htons(repl_dport));

	nfct_set_attr_u32(ct, ATTR_STATUS,
			  IPS_ASSURED | IPS_SEEN_REPLY |
			  IPS_SRC_NAT | IPS_SRC_NAT_DONE);
	nfct_set_attr_u32(ct, ATTR_TIMEOUT, 3600);
	nfct_set_attr_u32(ct, ATTR_MARK, 0);

	/* TCP protocol info. */
	nfct_set_attr_u8(ct, ATTR_TCP_STATE, TCP_CONNTRACK_ESTABLISHED);
	nfct_set_attr_u8(ct, ATTR_TCP_WSCALE_ORIG, 7);
	nfct_set_attr_u8(ct, ATTR_TCP_WSCALE_REPL, 7);
	nfct_set_attr_u8(ct, ATTR_TCP_FLAGS_ORIG, tcp_flags);
	nfct_set_attr_u8(ct, ATTR_TCP_MASK_ORIG, tcp_flags);
	nfct_set_attr_u8(ct, ATTR_TCP_FLAGS_REPL, tcp_flags);
	nfct_set_attr_u8(ct, ATTR_TCP_MASK_REPL, tcp_flags);
}

/*
 * Append one ctnetlink request for entry @i at @buf.  Returns the message
 * (its nlmsg_len tells its size) or NULL on failure.
 */
static struct nlmsghdr *put_entry(void *buf, struct nf_conntrack *ct,
				  uint32_t i, enum op op, uint32_t seq)
{
	struct nlmsghdr *nlh;
	struct nfgenmsg *nfh;

	nlh = mnl_nlmsg_put_header(buf);
	if (op == OP_CREATE) {
		nlh->nlmsg_type = (NFNL_SUBSYS_CTNETLINK << 8) |
				  IPCTNL_MSG_CT_NEW;
		nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL;
	} else {
		nlh->nlmsg_type = (NFNL_SUBSYS_CTNETLINK << 8) |
				  IPCTNL_MSG_CT_DELETE;
		nlh->nlmsg_flags = NLM_F_REQUEST;
	}
	nlh->nlmsg_seq = seq;

	nfh = mnl_nlmsg_put_extra_header(nlh, sizeof(*nfh));
	nfh->nfgen_family = AF_INET;
	nfh->version = NFNETLINK_V0;
	nfh->res_id = 0;

	fill_entry(ct, i, op);
	if (nfct_nlmsg_build(nlh, ct) < 0) {
		perror("nfct_nlmsg_build");
		return NULL;
	}
	if (nlh->nlmsg_len > MSG_MAX) {
		/* Cannot happen for this entry type; guards the buffer slack. */
		fprintf(stderr, "ctload: message too large (%u bytes)\n",
			nlh->nlmsg_len);
		return NULL;
	}
	return nlh;
}

/* Open, bind and tune the ctnetlink socket. */
static struct mnl_socket *open_socket(void)
{
	struct mnl_socket *nl;
	int fd, val;

	nl = mnl_socket_open(NETLINK_NETFILTER);
	if (nl == NULL) {
		perror("mnl_socket_open");
		return NULL;
	}
	if (mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) {
		perror("mnl_socket_bind");
		goto err;
	}
	fd = mnl_socket_get_fd(nl);

	/*
	 * Large buffers: one batch is ~256 KiB on the way in, and every failed
	 * message produces an error reply on the way out.  The *FORCE variants
	 * ignore net.core.{w,r}mem_max (needs CAP_NET_ADMIN).
	 */
	val = SOCK_BUF_BYTES;
	if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &val, sizeof(val)) < 0) {
		perror("setsockopt(SO_SNDBUFFORCE)");
		goto err;
	}
	val = SOCK_BUF_BYTES;
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &val, sizeof(val)) < 0) {
		perror("setsockopt(SO_RCVBUFFORCE)");
		goto err;
	}

	/* Error replies without a copy of the offending request (optional). */
	val = 1;
	if (setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, &val, sizeof(val)) < 0
	    && errno != ENOPROTOOPT)
		perror("setsockopt(NETLINK_CAP_ACK), continuing");

	return nl;
err:
	mnl_socket_close(nl);
	return NULL;
}

static void count_error(struct stats *st, int err)
{
	int slot = (err > 0 && err < ERRNO_SLOTS - 1) ? err : ERRNO_SLOTS - 1;

	st->errors++;
	st->by_errno[slot]++;
}

/*
 * Read replies until the ACK (or error) for @last_seq arrives.  Errors for
 * earlier messages of the batch are queued before it and are counted.
 * Returns 0, or -1 on a socket / protocol failure.
 */
static int wait_batch(struct mnl_socket *nl, void *buf, uint32_t first_seq,
		      uint32_t last_seq, struct stats *st)
{
	const uint32_t portid = mnl_socket_get_portid(nl);

	for (;;) {
		const struct nlmsghdr *nlh;
		ssize_t len;
		int rem;

		len = mnl_socket_recvfrom(nl, buf, RECV_BYTES);
		if (len < 0) {
			if (errno == EINTR)
				continue;
			/* ENOBUFS here means replies were lost. */
			perror("mnl_socket_recvfrom");
			return -1;
		}

		rem = (int)len;
		for (nlh = buf; mnl_nlmsg_ok(nlh, rem);
		     nlh = mnl_nlmsg_next(nlh, &rem)) {
			const struct nlmsgerr *e;
			uint32_t seq = nlh->nlmsg_seq;

			if (nlh->nlmsg_pid != 0 && nlh->nlmsg_pid != portid)
				continue;
			if (nlh->nlmsg_type != NLMSG_ERROR) {
				/* ctnetlink sends nothing else for these. */
				fprintf(stderr,
					"ctload: unexpected reply type %u\n",
					nlh->nlmsg_type);
				continue;
			}
			if (nlh->nlmsg_len < mnl_nlmsg_size(sizeof(*e))) {
				fprintf(stderr, "ctload: truncated error reply\n");
				return -1;
			}
			if (seq - first_seq > last_seq - first_seq) {
				fprintf(stderr,
					"ctload: reply for unknown seq %" PRIu32 "\n",
					seq);
				continue;
			}

			e = mnl_nlmsg_get_payload(nlh);
			if (e->error != 0)
				count_error(st, -e->error);
			if (seq == last_seq)
				return 0;
		}
		if (rem != 0) {
			fprintf(stderr, "ctload: %d trailing bytes in reply\n", rem);
			return -1;
		}
	}
}

static void usage(const char *prog)
{
	fprintf(stderr, "usage: %s create|delete N   (N <= %lu)\n",
		prog, MAX_ENTRIES);
}

int main(int argc, char *argv[])
{
	struct mnl_socket *nl;
	struct nf_conntrack *ct;
	struct stats st;
	char *sendbuf, *recvbuf, *end;
	unsigned long n;
	enum op op;
	uint32_t seq, i;
	double t0, secs, rate;
	unsigned long done;
	int ret = EXIT_FAILURE;

	if (argc != 3) {
		usage(argv[0]);
		return EXIT_FAILURE;
	}
	if (strcmp(argv[1], "create") == 0) {
		op = OP_CREATE;
	} else if (strcmp(argv[1], "delete") == 0) {
		op = OP_DELETE;
	} else {
		usage(argv[0]);
		return EXIT_FAILURE;
	}
	errno = 0;
	n = strtoul(argv[2], &end, 10);
	if (errno != 0 || end == argv[2] || *end != '\0' || argv[2][0] == '-' ||
	    n > MAX_ENTRIES) {
		usage(argv[0]);
		return EXIT_FAILURE;
	}

	memset(&st, 0, sizeof(st));
	sendbuf = malloc(BATCH_BYTES + MSG_MAX);
	recvbuf = malloc(RECV_BYTES);
	ct = nfct_new();
	if (sendbuf == NULL || recvbuf == NULL || ct == NULL) {
		perror("allocation");
		goto out_free;
	}
	nl = open_socket();
	if (nl == NULL)
		goto out_free;

	/* Timed section: building, sending and acknowledging everything. */
	t0 = now_seconds();
	seq = (uint32_t)time(NULL);
	i = 0;
	while (i < n) {
		const uint32_t first_seq = seq;
		struct nlmsghdr *nlh = NULL;
		size_t off = 0;

		/* Pack messages until the batch is full or we run out. */
		while (i < n && off < BATCH_BYTES) {
			nlh = put_entry(sendbuf + off, ct, i, op, seq);
			if (nlh == NULL)
				goto out_close;
			off += nlh->nlmsg_len;
			i++;
			seq++;
		}
		/* Only the last message of the batch is acknowledged. */
		nlh->nlmsg_flags |= NLM_F_ACK;

		if (mnl_socket_sendto(nl, sendbuf, off) < 0) {
			perror("mnl_socket_sendto");
			goto out_close;
		}
		if (wait_batch(nl, recvbuf, first_seq, seq - 1, &st) < 0)
			goto out_close;
	}
	secs = now_seconds() - t0;

	done = n - st.errors;
	rate = secs > 0 ? (double)done / secs : 0.0;
	printf("{\"tool\":\"%s\",\"op\":\"%s\",\"requested\":%lu,"
	       "\"created\":%lu,\"errors\":%lu,\"seconds\":%.6f,"
	       "\"per_second\":%.1f}\n",
	       TOOL_NAME, op == OP_CREATE ? "create" : "delete",
	       n, done, st.errors, secs, rate);
	if (fflush(stdout) != 0) {
		perror("stdout");
		goto out_close;
	}

	if (st.errors > 0) {
		int e;

		for (e = 1; e < ERRNO_SLOTS; e++) {
			if (st.by_errno[e] == 0)
				continue;
			fprintf(stderr, "ctload: %lu x %s\n", st.by_errno[e],
				e < ERRNO_SLOTS - 1 ? strerror(e) : "other error");
		}
		ret = 2;
	} else {
		ret = EXIT_SUCCESS;
	}

out_close:
	mnl_socket_close(nl);
out_free:
	if (ct != NULL)
		nfct_destroy(ct);
	free(recvbuf);
	free(sendbuf);
	return ret;
}
