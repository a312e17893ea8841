/*
 * snapxfer.h -- the bodies of the snapshot transfer frames SNAP_CHUNK and
 * SNAP_ACK (peer types PEER_TYPE_SNAP_*, docs/peer-protocol.md §9), and the
 * receiver's in-order assembly check (docs/snapshots.md §3.4).
 *
 * Pure: caller-owned buffers only, no allocation, no I/O. The decoders are
 * total: any bytes give 0 or KEEL_ERR_MALFORMED, never a read outside the
 * body, and canonical: a body that decodes re-encodes to the same bytes
 * (fuzzed by tests/fuzz/fuzz_snap_chunk.c). They check the body's own
 * rules only; whether a chunk belongs to the snapshot being staged, and
 * whether the assembled bytes match snap_crc, is snapxfer_rx's business.
 */
#ifndef KEEL_NODE_SNAPXFER_H
#define KEEL_NODE_SNAPXFER_H

#include "keel/common.h"

#define SNAPXFER_CHUNK_FIXED 48 /* then chunk_len data bytes */
#define SNAPXFER_ACK_SIZE 44
#define SNAPXFER_MAX_CHUNK (1u << 20)         /* 1 MiB of data per chunk */
#define SNAPXFER_MAX_TOTAL ((uint64_t)1 << 40) /* codec's sanity cap; the
                                                  node applies its own
                                                  snapshot_max_bytes */

/* The snapshot a frame is about: (index, term) names the bytes, because a
 * snapshot is a pure function of the applied log. */
struct snapxfer_id {
	uint64_t index; /* >= 1 */
	uint64_t term;  /* >= 1 */
};

struct snapxfer_chunk {
	uint64_t leader_term;   /* >= 1, >= id.term */
	struct snapxfer_id id;
	uint64_t total_len;     /* 1..SNAPXFER_MAX_TOTAL */
	uint64_t offset;        /* < total_len */
	uint32_t snap_crc;      /* CRC32C of the whole payload */
	uint32_t len;           /* 1..SNAPXFER_MAX_CHUNK, offset+len <= total */
	const uint8_t *data;    /* decode: points INTO the body; encode: the
	                           caller's, copied */
};

enum snapxfer_status {
	SNAPXFER_CONTINUE = 1, /* send from next_offset */
	SNAPXFER_COMPLETE = 2, /* staged and verified: send the type-10 frame;
	                          next_offset == total_len */
	SNAPXFER_DONE = 3,     /* the core took it; next_offset == total_len */
	SNAPXFER_BAD = 4,      /* CRC or decode failed, staging dropped;
	                          next_offset == 0 */
	SNAPXFER_STALE = 5,    /* not needed */
	SNAPXFER_BUSY = 6,     /* cannot stage now */
};

struct snapxfer_ack {
	uint64_t term;         /* the receiver's current term, >= 1 */
	struct snapxfer_id id;
	uint64_t total_len;    /* 1..SNAPXFER_MAX_TOTAL */
	uint64_t next_offset;  /* <= total_len */
	uint8_t status;        /* enum snapxfer_status */
};

/* The rules of the two bodies, as the decoders apply them: 0 or
 * KEEL_ERR_MALFORMED. Encoders assert them (a sender with a bad field is
 * a programmer error). */
int snapxfer_chunk_check(const struct snapxfer_chunk *c);
int snapxfer_ack_check(const struct snapxfer_ack *a);

/* Body size of c: SNAPXFER_CHUNK_FIXED + c->len. */
size_t snapxfer_chunk_size(const struct snapxfer_chunk *c);

/* Writes c's body (snapxfer_chunk_size(c) bytes; the caller sized buf).
 * c->data is read, not kept. c must pass snapxfer_chunk_check. */
void snapxfer_chunk_encode(const struct snapxfer_chunk *c, uint8_t *buf);
/* Writes a's body (SNAPXFER_ACK_SIZE bytes). a must pass the check. */
void snapxfer_ack_encode(const struct snapxfer_ack *a, uint8_t *buf);

/* Decode body[0..len) of a frame that passed peer_frame_verify. 0 and
 * *out (c->data points into body: valid while body is), or
 * KEEL_ERR_MALFORMED (length other than the layout's, a field out of
 * range, reserved bytes set). *out is written only on success. */
int snapxfer_chunk_decode(const uint8_t *body, size_t len,
			  struct snapxfer_chunk *out);
int snapxfer_ack_decode(const uint8_t *body, size_t len,
			struct snapxfer_ack *out);

/* ---- receiver: in-order assembly -------------------------------------------
 * Tracks one snapshot being received: which one, how many bytes were
 * accepted in order, and the running CRC32C of them. Staging the bytes
 * (store.snap_write) and decoding them are the caller's; this decides
 * which chunk to take and whether the whole is intact.
 */
struct snapxfer_rx {
	struct snapxfer_id id;   /* 0, 0 = idle */
	uint64_t total_len;
	uint32_t snap_crc;       /* what the sender claims */
	uint64_t next_offset;    /* Invariant: <= total_len */
	uint32_t crc;            /* Invariant: CRC32C of [0, next_offset) */
};

enum snapxfer_rx_verdict {
	SNAPXFER_RX_TAKE = 0,    /* at next_offset: caller stages c, then
	                            calls snapxfer_rx_advance */
	SNAPXFER_RX_SKIP,        /* a duplicate or out of order chunk of
	                            this snapshot: drop, answer CONTINUE */
	SNAPXFER_RX_MISMATCH,    /* same id, other total_len or snap_crc:
	                            drop and count; the staging is kept */
	SNAPXFER_RX_OTHER,       /* another snapshot: the caller decides
	                            (newer: snapxfer_rx_start; older: STALE) */
};

/* Starts receiving the snapshot of c (offset must be 0). */
void snapxfer_rx_start(struct snapxfer_rx *rx, const struct snapxfer_chunk *c);
/* What to do with a decoded chunk; changes nothing. An idle rx answers
 * SNAPXFER_RX_OTHER. */
int snapxfer_rx_classify(const struct snapxfer_rx *rx,
			 const struct snapxfer_chunk *c);
/* c was TAKEn and staged: advances next_offset and the CRC. */
void snapxfer_rx_advance(struct snapxfer_rx *rx,
			 const struct snapxfer_chunk *c);
/* true once next_offset == total_len. */
bool snapxfer_rx_full(const struct snapxfer_rx *rx);
/* Once full: 0 when the bytes' CRC32C equals snap_crc, KEEL_ERR_CORRUPT
 * otherwise (docs/snapshots.md §3.4: checked before the type-10 frame
 * reaches the core). KEEL_ERR_TRUNCATED when not full yet. */
int snapxfer_rx_verify(const struct snapxfer_rx *rx);

#endif /* KEEL_NODE_SNAPXFER_H */
