/*
 * fwd.h -- the bodies of the node-level forwarding frames (peer types
 * PEER_TYPE_FWD_*, docs/peer-protocol.md "Forwarding") and of the node's
 * log entries (a node header in front of a kv command entry).
 *
 * Pure: caller-owned buffers only, no allocation. The decoders are total:
 * any bytes give 0 or KEEL_ERR_MALFORMED / KEEL_ERR_TYPE, never a read
 * outside the buffer (fuzzed by tests/fuzz/fuzz_node_fwd.c).
 */
#ifndef KEEL_NODE_FWD_H
#define KEEL_NODE_FWD_H

#include "keel/common.h"
#include "keel/raft.h"

/* ---- log entry data ---------------------------------------------------------
 *   u8  version (NODE_ENTRY_VERSION)
 *   u8  type     (version 2 only) enum node_entry_type: what the body is
 *   u64 origin   node that took the client request; 0 = the leader's own
 *                internal command (KEEL.EXPIRE-DELETE): nobody waits for it
 *   u64 boot     origin's boot nonce
 *   u64 seq      origin's request number in that boot (>= 1; 0 iff origin 0)
 *   u64 stream   (version 2 only) the origin's ordering stream: entries of
 *                one (origin, boot, stream != 0) take effect in seq order
 *                or not at all (docs/architecture.md decision 16); 0 = none
 *   ...          the body, by type, to the end of the data
 * Version 1 (25-byte header, no type, no stream) is still read, as type
 * KV and stream 0: logs written before types existed replay unchanged.
 * New entries are v2.
 */
#define NODE_ENTRY_VERSION 2
#define NODE_ENTRY_VERSION_V1 1
#define NODE_ENTRY_HEADER 34
#define NODE_ENTRY_HEADER_V1 25

/* Every replicated change is one typed entry, applied by one applier
 * (node_apply.c), like etcd's internal raft request. A type this build
 * does not know is skipped on every replica alike, its origin answered
 * with an error: a newer node's entry never half-applies on an older one. */
enum node_entry_type {
	NODE_ENTRY_KV = 1,      /* one kv command entry (kv.h) */
	NODE_ENTRY_TXN = 2,     /* a transaction: a kv command entry whose
				   command is KEEL.EXEC or KEEL.TXN, applied
				   atomically at one revision */
	NODE_ENTRY_SESSION = 3, /* a client session op (register, keepalive,
				   close; docs/kv.md "Sessions") */
	NODE_ENTRY_SESSION_CMD = 4, /* u64 session, u64 session seq, then a
				       kv command entry: exactly once */
	/* Reserved for wave 2: 5 lease op, 6 lock op, 7 configuration
	 * change. */
};

struct node_entry_hdr {
	uint8_t type;    /* enum node_entry_type; v1 entries read as KV */
	raft_id origin;
	uint64_t boot;
	uint64_t seq;
	uint64_t stream; /* 0 when origin is 0 */
};

/* Writes NODE_ENTRY_HEADER bytes (version 2). */
void node_entry_hdr_put(uint8_t *buf, const struct node_entry_hdr *h);
/* 0 and *h, *cmd, *cmd_len (the body, pointing into data), or
 * KEEL_ERR_MALFORMED (short, unknown version, type 0, origin/seq
 * inconsistent, a stream without an origin). A type this build does not
 * know (>= 5) decodes: the applier (sm.c) answers it with an error on
 * every replica alike. */
int node_entry_hdr_get(const uint8_t *data, size_t len,
		       struct node_entry_hdr *h, const uint8_t **cmd,
		       size_t *cmd_len);

/* ---- forwarding frame bodies ------------------------------------------------- */

enum node_fwd_kind { NODE_FWD_KIND_WRITE = 1, NODE_FWD_KIND_READ = 2 };
enum node_fwd_reason {
	NODE_FWD_NOT_LEADER = 1, /* hint names the leader the sender knows, or 0 */
	NODE_FWD_BUSY = 2,       /* leader, but cannot take it now: try later */
	NODE_FWD_REFUSED = 3,    /* the command is not a forwardable write */
};

#define NODE_FWD_WRITE_FIXED 24 /* boot, seq, stream; then the command */
#define NODE_FWD_ACK_SIZE 32
#define NODE_FWD_NACK_SIZE 26
#define NODE_FWD_READ_SIZE 16
#define NODE_FWD_READ_OK_SIZE 32 /* boot, seq, index, ms */

struct node_fwd {
	int type;       /* PEER_TYPE_FWD_* */
	uint64_t boot;  /* the origin's boot nonce: replies to an older
	                   incarnation are ignored */
	uint64_t seq;
	uint64_t stream; /* WRITE: the origin's ordering stream (0 = none) */
	uint64_t term;  /* ACK: the leader's term */
	uint64_t index; /* ACK: where it was proposed; READ_OK: read point */
	uint64_t ms;    /* READ_OK: the leader's wall clock (env.wall_ms)
	                   when it confirmed the read point: the time the
	                   read is judged at (expiry), never the follower's */
	uint8_t kind;   /* NACK: enum node_fwd_kind */
	uint8_t reason; /* NACK: enum node_fwd_reason */
	raft_id hint;   /* NACK: leader hint or 0 */
	const uint8_t *cmd; /* WRITE: kv command entry bytes, into the body */
	size_t cmd_len;
};

/* Bytes node_fwd_encode writes for f (WRITE: NODE_FWD_WRITE_FIXED +
 * cmd_len). */
size_t node_fwd_size(const struct node_fwd *f);
/* Writes f's body into buf (node_fwd_size(f) bytes, the caller sized it). */
void node_fwd_encode(const struct node_fwd *f, uint8_t *buf);
/* Decodes the body of a frame of the given type. 0, KEEL_ERR_TYPE (not a
 * forwarding type, or FWD_ACK/... unknown), or KEEL_ERR_MALFORMED (wrong
 * length, a field out of range: seq 0, unknown kind or reason). The
 * command of a WRITE is not parsed here (kv_cmd_decode does that). */
int node_fwd_decode(int type, const uint8_t *body, size_t len,
		    struct node_fwd *f);

#endif /* KEEL_NODE_FWD_H */
