/*
 * nodesnap.h -- the node snapshot payload (docs/snapshots.md §1.3): a
 * header with the snapshot id and membership, the whole dedup window, the
 * kv snapshot, a CRC32C trailer. These are the payload bytes of a
 * snap/<index>-<term>.snap file and exactly the bytes a transfer carries.
 *
 * Both directions stream: the writer pulls the kv part from a source
 * callback (kv_frozen_next, or kv_snapshot_writer_next in tests) and the
 * reader pushes the kv part into a sink (kv_snap_reader_feed), so neither
 * ever holds the payload whole. The head part (10432 bytes) is small and
 * fixed, so it is buffered in the writer/reader struct itself.
 *
 * Pure: no allocation, no I/O; caller-owned structs (init, no destroy).
 * The reader is total: any bytes in any split give 0 or an error, never a
 * read outside what was fed (fuzzed by tests/fuzz/fuzz_node_snap.c), and
 * it checks every count before it is used.
 */
#ifndef KEEL_NODE_NODESNAP_H
#define KEEL_NODE_NODESNAP_H

#include "keel/common.h"
#include "keel/raft.h"

/* ---- the dedup window (docs/architecture.md decision 9) -------------------
 * Kept here because it is part of the payload; node.c owns the logic. */
#define NODE_DEDUP_WINDOW 4096u
#define NODE_DEDUP_WORDS (NODE_DEDUP_WINDOW / 64u)
#define NODE_DEDUP_BOOTS 4u
#define NODE_DEDUP_RECS 64u
#define NODE_DEDUP_REC_BYTES (32u + NODE_DEDUP_WINDOW / 8u) /* 544 */
/* Program order per stream (decision 16): per (origin, boot) the highest
 * seq applied of each of up to NODE_DEDUP_STREAMS streams; a stream pushed
 * out raises stream_floor to its hw. */
#define NODE_DEDUP_STREAMS 32u
#define NODE_DEDUP_STREAM_BYTES (8u + 16u * NODE_DEDUP_STREAMS) /* 520 */

struct node_dedup_stream {
	uint64_t id; /* 0 = free (then hw is 0) */
	uint64_t hw; /* highest seq of this stream applied; <= high */
};

struct node_dedup_rec {
	raft_id origin; /* 0 = free slot (then every field is 0) */
	uint64_t boot;
	uint64_t high;       /* highest seq applied; >= 1 when used */
	uint64_t last_index; /* for eviction */
	uint64_t bits[NODE_DEDUP_WORDS];
	/* A stream not in streams[] with a seq below this was pushed out
	 * of the table after a later seq of it ran: refused (<= high). */
	uint64_t stream_floor;
	struct node_dedup_stream streams[NODE_DEDUP_STREAMS]; /* any order */
};

/* ---- layout (docs/snapshots.md §1.3) ---------------------------------------
 * A fixed head, then sections, then the payload CRC:
 *   0    8  magic KEELNODE        8  4  version 2       12  4  flags 0
 *   16   8  P (total, trailer included)
 *   24   8  applied index A      32  8  term of A
 *   40   4  n_voters             44  4  n_learners      48 128 member ids
 *   176  4  n_sections           180 4  reserved 0
 *   184  sections, tags strictly increasing, the kv section last; each:
 *        u32 tag, u32 version, u64 len, len bytes, u32 CRC32C of the bytes
 *   P-4  4  CRC32C of bytes [0, P-4)
 * A section is one piece of replicated state with its own version and
 * checksum: adding one touches no other. A reader refuses a tag it does
 * not know (a newer writer's state it cannot keep). */
#define NODE_SNAP_MAGIC "KEELNODE"
#define NODE_SNAP_VERSION 2u
#define NODE_SNAP_FIXED 184u
#define NODE_SNAP_MEMBERS_OFF 48u
#define NODE_SNAP_SECT_HDR 16u
#define NODE_SNAP_SECT_CRC 4u

enum node_snap_tag {
	NODE_SNAP_TAG_DEDUP = 1,    /* v1: u32 window, u32 recs, recs x 544 */
	NODE_SNAP_TAG_STREAMS = 2,  /* v1: recs x 520 (program order) */
	NODE_SNAP_TAG_SESSIONS = 3, /* v1: session.c's encoding */
	NODE_SNAP_TAG_CLOCK = 4,    /* v1: u64 newest leader stamp applied */
	NODE_SNAP_TAG_KV = 100,     /* the kv snapshot (docs/kv.md) */
};
#define NODE_SNAP_SECTIONS 5u
#define NODE_SNAP_CLOCK_BYTES 8u
#define NODE_SNAP_DEDUP_BYTES (8u + NODE_DEDUP_RECS * NODE_DEDUP_REC_BYTES)
#define NODE_SNAP_STREAMS_BYTES (NODE_DEDUP_RECS * NODE_DEDUP_STREAM_BYTES)
/* Everything but the kv and session bytes. */
#define NODE_SNAP_OVERHEAD                                                     \
	(NODE_SNAP_FIXED +                                                     \
	 NODE_SNAP_SECTIONS * (NODE_SNAP_SECT_HDR + NODE_SNAP_SECT_CRC) +      \
	 NODE_SNAP_DEDUP_BYTES + NODE_SNAP_STREAMS_BYTES +                     \
	 NODE_SNAP_CLOCK_BYTES + 4u)
/* The session table's encoding (session.h) is at most this long. */
#define NODE_SNAP_SESS_MAX (96ull << 20)
#define NODE_SNAP_KV_HEAD 32u     /* of the kv header: the fields checked */
/* Bytes before the session section's bytes, and before the kv bytes. */
#define NODE_SNAP_SESS_OFF                                                     \
	(NODE_SNAP_FIXED + 3u * NODE_SNAP_SECT_HDR + 2u * NODE_SNAP_SECT_CRC +  \
	 NODE_SNAP_DEDUP_BYTES + NODE_SNAP_STREAMS_BYTES)

/* Everything of the payload except the kv bytes. */
struct node_snap_head {
	uint64_t index; /* applied index A */
	uint64_t term;  /* term of A */
	uint64_t kv_len; /* L: bytes of the kv snapshot */
	uint64_t sess_len; /* S: bytes of the session table */
	/* The newest leader stamp applied at A: the time a READONLY read on
	 * a restored node is judged at until it applies an entry. */
	uint64_t stamp_ms;
	struct raft_config_members members;
	struct node_dedup_rec dedup[NODE_DEDUP_RECS]; /* slot order */
};

/* P for a kv snapshot of kv_len bytes and a session table of sess_len. */
static inline uint64_t node_snap_total(uint64_t kv_len, uint64_t sess_len)
{
	return NODE_SNAP_OVERHEAD + kv_len + sess_len;
}

/* ---- writer --------------------------------------------------------------- */

/* Pulls up to cap (> 0) kv snapshot bytes into buf, *n of them; true while
 * more follow (the kv_snapshot_writer_next / kv_frozen_next contract). */
typedef bool (*node_snap_source_fn)(void *ctx, uint8_t *buf, size_t cap,
				    size_t *n);

struct node_snap_writer {
	/* The bytes before the session table's (fixed head, the dedup and
	 * stream sections, the session section's header), then the session
	 * table's (borrowed), then mid (its CRC, the kv section's header),
	 * the kv bytes from the source, then post (the kv CRC, the payload
	 * CRC). */
	uint8_t pre[NODE_SNAP_SESS_OFF];
	uint8_t mid[NODE_SNAP_SECT_CRC + NODE_SNAP_SECT_HDR +
		    NODE_SNAP_CLOCK_BYTES + NODE_SNAP_SECT_CRC + NODE_SNAP_SECT_HDR];
	uint8_t post[NODE_SNAP_SECT_CRC + 4];
	const uint8_t *sess;
	uint64_t sess_len, kv_len;
	uint64_t total;    /* P */
	uint64_t pos;      /* Invariant: bytes emitted, <= total */
	uint32_t crc;      /* Invariant: CRC32C of [0, min(pos, P - 4)) */
	uint32_t crc_all;  /* Invariant: CRC32C of [0, pos) */
	uint32_t kv_crc;   /* CRC32C of the kv bytes emitted */
	bool kv_more;      /* the source has more bytes */
	node_snap_source_fn src;
	void *src_ctx;
};

/* Encodes h's head (members are written sorted, voters then learners, so
 * every replica's payload at (index, term) is the same bytes). The source
 * must yield exactly h->kv_len bytes (asserted); sess holds h->sess_len
 * bytes, borrowed until the writer is done. h is copied. */
void node_snap_writer_init(struct node_snap_writer *w,
			   const struct node_snap_head *h,
			   node_snap_source_fn src, void *src_ctx,
			   const uint8_t *sess);
/* Fills buf with up to cap (> 0) next payload bytes, *n of them. Returns
 * true while more follow, false once the trailer's last byte was given. */
bool node_snap_writer_next(struct node_snap_writer *w, uint8_t *buf,
			   size_t cap, size_t *n);
/* CRC32C of the whole payload, trailer included, once next returned
 * false: the snap_crc of a transfer and the WAL header's payload CRC. */
uint32_t node_snap_writer_crc(const struct node_snap_writer *w);

/* ---- reader ----------------------------------------------------------------- */

/* Takes kv snapshot bytes in order (kv_snap_reader_feed): 0 or an error,
 * which becomes the reader's. */
typedef int (*node_snap_sink_fn)(void *ctx, const uint8_t *buf, size_t len);

struct node_snap_expect {
	uint64_t index, term;  /* the snapshot id it is installed as; 0 = any */
	uint64_t max_bytes;    /* P cap (snapshot_max_bytes) */
	const struct raft_config_members *members; /* configured; NULL = any */
	/* The snap-skip-crc planted bug (set only by KEEL_MUTANTS builds):
	 * no section CRC and no payload CRC is compared. */
	bool skip_crc;
};

struct node_snap_reader {
	struct node_snap_expect want;
	struct raft_config_members members_copy;
	node_snap_sink_fn sink;
	void *sink_ctx;
	node_snap_sink_fn sess_sink; /* the session table's bytes; may be NULL */
	void *sess_ctx;
	uint8_t fixed[NODE_SNAP_FIXED];
	uint8_t shdr[NODE_SNAP_SECT_HDR]; /* the section header being read */
	/* a fixed-size section: the larger of dedup and streams */
	uint8_t sbuf[NODE_SNAP_DEDUP_BYTES > NODE_SNAP_STREAMS_BYTES
			     ? NODE_SNAP_DEDUP_BYTES
			     : NODE_SNAP_STREAMS_BYTES];
	uint8_t kv_head[NODE_SNAP_KV_HEAD];
	uint8_t crcbuf[4];
	struct node_snap_head head; /* valid once head_done */
	bool head_done;  /* every section before kv is in and checked */
	uint64_t total;  /* P, once the fixed head is in */
	uint64_t pos;    /* Invariant: bytes consumed */
	uint32_t crc;    /* CRC32C of [0, min(pos, P - 4)) */
	/* The section being read. */
	uint32_t n_sections, sect_i;
	uint32_t last_tag;
	uint32_t tag;
	uint64_t sect_len, sect_pos;
	uint32_t sect_crc;
	uint32_t part;   /* 0 header, 1 bytes, 2 crc, 3 payload trailer */
	uint32_t part_pos;
	int err;         /* sticky */
};

/* want (and the members it points at) is copied. The kv part goes to
 * sink, the session table's part (after it) to sess_sink. */
void node_snap_reader_init(struct node_snap_reader *r,
			   const struct node_snap_expect *want,
			   node_snap_sink_fn sink, void *sink_ctx,
			   node_snap_sink_fn sess_sink, void *sess_ctx);
/* Any split of the bytes. Returns 0 or the first error, sticky:
 *   KEEL_ERR_MAGIC, KEEL_ERR_VERSION, KEEL_ERR_TOO_BIG (P above max_bytes),
 *   KEEL_ERR_MALFORMED (any other §1.3 rule, bytes past P), KEEL_ERR_INVAL
 *   (index, term or membership other than expected), the sink's error. */
int node_snap_reader_feed(struct node_snap_reader *r, const uint8_t *buf,
			  size_t len);
/* Every byte fed: 0, or KEEL_ERR_TRUNCATED (fewer than P bytes),
 * KEEL_ERR_CORRUPT (trailer CRC), or the sticky error. The kv sink's own
 * finish (length, kv CRC) is the caller's. */
int node_snap_reader_finish(struct node_snap_reader *r);
/* The decoded head once every section before the kv one passed, else
 * NULL. */
const struct node_snap_head *
node_snap_reader_head(const struct node_snap_reader *r);

/* Validates a dedup window as the reader does (every slot rule of §1.3):
 * 0 or KEEL_ERR_MALFORMED. */
int node_snap_check_dedup(const struct node_dedup_rec *d);

#endif /* KEEL_NODE_NODESNAP_H */
