/*
 * peer.h -- the peer wire codec: turns a struct raft_msg into one frame of
 * the peer protocol and back. The layout, limits and error handling are
 * specified byte by byte in docs/peer-protocol.md; this is its executable
 * form.
 *
 * The codec is pure: it reads and writes caller-owned buffers only, does no
 * I/O and never allocates. It checks everything a broken or hostile peer
 * could get wrong and returns an error code; what to do about an error
 * (drop, count, close the connection) is the transport's business.
 *
 * A streaming reader uses it like this:
 *
 *     r = peer_frame_peek(buf, have, &lim, &frame_len);
 *     if (r == KEEL_ERR_TRUNCATED) read more;       header incomplete
 *     else if (r != 0) count r, close;             never waits for a body
 *     else if (have < frame_len) read more;         frame_len <= max
 *     else r = peer_decode(buf, frame_len, ...);    then consume frame_len
 */
#ifndef KEEL_PEER_H
#define KEEL_PEER_H

#include "keel/common.h"
#include "keel/raft.h"

#define PEER_MAGIC_0 0x4B /* 'K' */
#define PEER_MAGIC_1 0x45 /* 'E' */
#define PEER_MAGIC_2 0x45 /* 'E' */
#define PEER_MAGIC_3 0x4C /* 'L' */
#define PEER_VERSION 1

#define PEER_HEADER_SIZE 28   /* magic..body_len */
#define PEER_TRAILER_SIZE 4   /* CRC32C */
#define PEER_MSG_FIXED_SIZE 72 /* raft message body before the entries */
#define PEER_ENTRY_HEADER_SIZE 21 /* term, index, type, len */
#define PEER_CONF_HEADER_SIZE 8 /* SNAPSHOT: n_voters, n_learners; then ids */

/* Smallest possible frame (empty body; no valid frame type has one). */
#define PEER_MIN_FRAME_SIZE (PEER_HEADER_SIZE + PEER_TRAILER_SIZE)
#define PEER_MAX_FRAME_DEFAULT (64u * 1024u * 1024u) /* 64 MiB */

/* msg_flags bits of a raft message body. */
#define PEER_MSG_FLAG_REJECT 0x1u
#define PEER_MSG_FLAG_TRANSFER 0x2u
#define PEER_MSG_FLAGS_KNOWN (PEER_MSG_FLAG_REJECT | PEER_MSG_FLAG_TRANSFER)

/* Frame types >= this are reserved for node-level messages (forwarded
 * client commands and replies, snapshot chunks) that later work defines;
 * until then the decoder rejects them with KEEL_ERR_TYPE. */
#define PEER_TYPE_NODE_FIRST 32
/* The dialer's first frame on a connection: names the sender, empty body
 * (docs/peer-protocol.md §3). Consumed by the transport. */
#define PEER_TYPE_HELLO 32
#define PEER_HELLO_SIZE (PEER_HEADER_SIZE + PEER_TRAILER_SIZE)

/* What the receiver accepts. */
struct peer_limits {
	uint64_t cluster_id;      /* frames of any other cluster are refused */
	uint32_t max_frame_bytes; /* >= PEER_MIN_FRAME_SIZE; bounds the buffer
	                             a reader ever needs for one frame */
#ifdef KEEL_MUTANTS
	bool mutant_accept_bad_crc; /* planted bug for keel sim --mutant */
#endif
};

/* cluster_id, max_frame_bytes = PEER_MAX_FRAME_DEFAULT. */
void peer_limits_default(struct peer_limits *lim, uint64_t cluster_id);

/* The header of a frame, as read. */
struct peer_frame_info {
	uint8_t version;
	uint8_t type;
	uint16_t flags;
	uint64_t cluster_id;
	uint64_t sender;
	uint32_t body_len;
	size_t frame_len; /* header + body + CRC: bytes the frame occupies */
};

/* Exact number of bytes peer_encode writes for m (SIZE_MAX if it could not
 * be represented in a size_t). */
size_t peer_frame_size(const struct raft_msg *m);

/* Encodes m as one frame of cluster cluster_id into buf[0..cap); the sender
 * field is m->from. m and the entry data stay the caller's; nothing is kept.
 * On success *written = peer_frame_size(m). Returns 0, or
 *   KEEL_ERR_TYPE     m->type is not a Raft message type (1..10)
 *   KEEL_ERR_INVAL    m->from == RAFT_NONE (a frame must name its sender),
 *                     or a SNAPSHOT without a membership (m->conf NULL,
 *                     no voter, more than RAFT_MAX_VOTERS members) or with
 *                     entries. m->conf of any other type is not sent.
 *   KEEL_ERR_TOO_BIG  the frame does not fit in cap, or its body would
 *                     exceed UINT32_MAX bytes; nothing useful is in buf.
 * The encoder does not apply a receiver's max_frame_bytes: the sender keeps
 * its batches under it (raft_config.max_msg_bytes). */
int peer_encode(const struct raft_msg *m, uint64_t cluster_id, uint8_t *buf,
		size_t cap, size_t *written);

/* Looks at the first len bytes of a stream and, once the 28-byte header is
 * there, validates magic, version and length against lim and sets
 * *frame_len to the full frame length (which may be more than len: the body
 * need not have arrived). Checksum, cluster, type and body are left to
 * peer_decode. Returns 0, or
 *   KEEL_ERR_MAGIC / KEEL_ERR_VERSION  as soon as those bytes are present
 *   KEEL_ERR_TRUNCATED                 header incomplete: read more
 *   KEEL_ERR_TOO_BIG                   frame_len > lim->max_frame_bytes */
int peer_frame_peek(const uint8_t *buf, size_t len,
		    const struct peer_limits *lim, size_t *frame_len);

/* Decodes and fully validates the frame at the start of buf[0..len) (bytes
 * after it, e.g. the next frame of a stream, are ignored; info->frame_len
 * says how many to consume). On success fills *m with the message, sets
 * m->entries = entries (the first m->n_entries of them filled in) and
 * returns 0.
 *
 * Zero copy: every entries[i].data points INTO buf. The decoded message is
 * valid only as long as buf is unchanged and alive; the Raft core copies
 * what it keeps, so handing m to raft_step right away is fine.
 *
 * entries may be NULL when max_entries is 0. info may be NULL; when given it
 * is filled as soon as the header has been read, so on a later error it can
 * name the would-be sender in a log line; its fields are checksummed (worth
 * believing) only after a return of 0 or an error that follows
 * KEEL_ERR_CORRUPT in the list below. *m is written only on success;
 * entries[] may have been written on failure.
 *
 * Returns 0, or in the order checked (docs/peer-protocol.md §6):
 *   KEEL_ERR_MAGIC, KEEL_ERR_VERSION  header start wrong
 *   KEEL_ERR_TRUNCATED   fewer than frame_len bytes (or than a header)
 *   KEEL_ERR_TOO_BIG     frame_len > lim->max_frame_bytes
 *   KEEL_ERR_CORRUPT     CRC32C mismatch
 *   KEEL_ERR_CLUSTER     cluster id != lim->cluster_id
 *   KEEL_ERR_TYPE        type not 1..9 (types >= 32 are reserved); 10
 *                        (SNAPSHOT) only through peer_decode_msg
 *   KEEL_ERR_MALFORMED   reserved bits set, sender 0, body shorter than
 *                        its fields, n_entries more than the body holds,
 *                        an entry past the body's end, unknown entry type,
 *                        bytes left over; for a SNAPSHOT: entries, no
 *                        voter, more than RAFT_MAX_VOTERS members, an id
 *                        0 or listed twice, a membership section of the
 *                        wrong length
 *   KEEL_ERR_TOO_BIG     n_entries > max_entries
 * Never reads outside buf[0..len), whatever the bytes.
 *
 * peer_decode refuses SNAPSHOT frames (KEEL_ERR_TYPE): a caller that takes
 * snapshots uses peer_decode_msg and hands it room for the membership. */
int peer_decode(const uint8_t *buf, size_t len, const struct peer_limits *lim,
		struct peer_frame_info *info, struct raft_msg *m,
		struct raft_entry *entries, uint32_t max_entries);

/* peer_decode that also accepts SNAPSHOT (type 10) when conf is non-NULL:
 * the membership is decoded into *conf and m->conf points at it (valid as
 * long as *conf is); m->conf is NULL for every other type. With conf NULL
 * it is exactly peer_decode. */
int peer_decode_msg(const uint8_t *buf, size_t len,
		    const struct peer_limits *lim, struct peer_frame_info *info,
		    struct raft_msg *m, struct raft_entry *entries,
		    uint32_t max_entries, struct raft_config_members *conf);

/* Checks a frame's envelope only -- magic, version, length, CRC32C, cluster
 * id, a non-zero sender -- whatever its type, and returns the sender and
 * the type. The transport uses it to drop a damaged frame and close the
 * connection before anything reaches the node; node-level types (>= 32)
 * pass it too. Returns 0 or the error peer_decode would give for those
 * checks. */
int peer_frame_verify(const uint8_t *buf, size_t len,
		      const struct peer_limits *lim, uint64_t *sender,
		      int *type);

/* Node-level frames (docs/peer-protocol.md §3): forwarding between
 * replicas. Bodies are defined in src/node/node.c and the doc. */
#define PEER_TYPE_FWD_WRITE 33
#define PEER_TYPE_FWD_ACK 34
#define PEER_TYPE_FWD_NACK 35
#define PEER_TYPE_FWD_READ 36
#define PEER_TYPE_FWD_READ_OK 37
/* Snapshot transfer (docs/peer-protocol.md §9, docs/snapshots.md §3);
 * bodies in src/node/snapxfer.h. */
#define PEER_TYPE_SNAP_CHUNK 38
#define PEER_TYPE_SNAP_ACK 39

/* Encodes a frame of any type around body[0..body_len): header, body,
 * CRC. body must not overlap buf. Returns 0 or KEEL_ERR_TOO_BIG when cap
 * is too small. */
int peer_encode_frame(int type, uint64_t cluster_id, uint64_t sender,
		      const uint8_t *body, size_t body_len, uint8_t *buf,
		      size_t cap, size_t *written);

/* The body of a frame that passed peer_frame_verify. */
static inline const uint8_t *peer_frame_body(const uint8_t *frame,
					     size_t *body_len)
{
	*body_len = keel_get_u32(frame + 24);
	return frame + PEER_HEADER_SIZE;
}

/* Writes a HELLO frame (PEER_HELLO_SIZE bytes) into buf. */
void peer_encode_hello(uint64_t cluster_id, uint64_t sender, uint8_t *buf);

/* "PREVOTE", ..., or "UNKNOWN"; static strings. */
const char *peer_frame_type_name(int type);

#endif /* KEEL_PEER_H */
