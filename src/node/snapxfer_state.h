/*
 * snapxfer_state.h -- the decisions of a snapshot transfer
 * (docs/snapshots.md §3.3, §3.4), apart from their I/O: the leader's
 * per-peer sender (window, cumulative acks, go-back-N, retransmission,
 * timeout) and the follower's admission of a chunk. node.c does the store
 * reads and writes, the frames and the reports the verdicts ask for.
 *
 * Pure: no allocation, no clock (time comes in as now_ns), no I/O.
 */
#ifndef KEEL_NODE_SNAPXFER_STATE_H
#define KEEL_NODE_SNAPXFER_STATE_H

#include "keel/common.h"
#include "keel/raft.h"
#include "node/snapxfer.h"

/* ---- sender ----------------------------------------------------------------- */

struct snap_send {
	raft_id peer;            /* 0 = free slot */
	uint64_t xid;            /* unique per transfer: read completions name it */
	uint32_t round;          /* bumped on every go-back: reads of an older
	                            round are not sent */
	struct snapxfer_id id;
	uint64_t total_len;
	uint32_t snap_crc;
	uint64_t leader_term;
	struct raft_config_members conf; /* for the type-10 frame */
	bool active;             /* false: waits for a free transfer slot */
	bool complete;           /* receiver said COMPLETE: type-10 is due */
	/* Invariant: acked <= sent <= total_len. */
	uint64_t acked;          /* receiver's next_offset */
	uint64_t sent;           /* next offset to read and send */
	uint64_t goback_at;      /* 1 + the offset last gone back to; 0 none */
	uint32_t reads_out;      /* store reads outstanding */
	uint64_t high_sent;      /* end of the furthest chunk sent (counts
	                            retransmissions) */
	uint64_t progress_ns;    /* start or last ack progress */
	uint64_t resend_ns;      /* last retransmission */
};

enum snap_send_action {
	SNAP_SEND_NONE = 0,
	SNAP_SEND_PUMP,   /* issue reads (snap_send_next_read) */
	SNAP_SEND_MSG,    /* send the type-10 frame */
	SNAP_SEND_OK,     /* report ok = true and free (DONE, STALE) */
	SNAP_SEND_FAIL,   /* report ok = false and free */
};

void snap_send_start(struct snap_send *s, raft_id peer, uint64_t xid,
		     struct snapxfer_id id, uint64_t total_len,
		     uint32_t snap_crc, uint64_t leader_term,
		     const struct raft_config_members *conf, uint64_t now_ns);
/* The next chunk to read: true and [*off, *off + *len) while the window
 * (window chunks of step bytes past acked, window reads outstanding)
 * allows; counts it as sent and outstanding. */
bool snap_send_next_read(struct snap_send *s, uint32_t window, uint32_t step,
			 uint64_t *off, uint32_t *len);
/* An ack from the transfer's peer. Acks for another snapshot: NONE. */
int snap_send_on_ack(struct snap_send *s, const struct snapxfer_ack *a,
		     uint64_t now_ns);
/* Once per tick: FAIL after timeout_ns without progress; after retry_ns
 * without progress (and since the last resend) the window is resent from
 * acked (PUMP), or the type-10 frame (MSG) after COMPLETE. */
int snap_send_tick(struct snap_send *s, uint64_t now_ns, uint64_t retry_ns,
		   uint64_t timeout_ns);

/* ---- receiver ---------------------------------------------------------------- */

enum snap_recv_verdict {
	SNAP_RECV_TAKE = 0, /* at next_offset of the staged snapshot */
	SNAP_RECV_START,    /* a (newer) snapshot at offset 0: drop any
	                       staging, start this one, take the chunk */
	SNAP_RECV_SKIP,     /* duplicate or out of order: answer where we are */
	SNAP_RECV_RESTART,  /* a newer snapshot not at offset 0: CONTINUE 0 */
	SNAP_RECV_STALE,    /* answer STALE */
	SNAP_RECV_BUSY,     /* answer BUSY */
	SNAP_RECV_MISMATCH, /* same id, other length or CRC: drop, count */
};

/* §3.4 admission. rx is the staging (id 0 = none), staged_term the
 * leader term its chunks came in; locked = the staged snapshot is being
 * installed (nothing may replace it). A chunk of a newer leader term
 * replaces a staging even of a newer snapshot: its leader was deposed and
 * will not finish it (waiting for the idle timeout would fail every
 * transfer of the new leader until then). */
int snap_recv_admit(const struct snapxfer_rx *rx, uint64_t staged_term,
		    const struct snapxfer_chunk *c, uint64_t our_term,
		    uint64_t applied, uint64_t max_bytes, bool locked);

/* a names a newer snapshot than b: higher index, or same index and term. */
bool snapxfer_id_newer(struct snapxfer_id a, struct snapxfer_id b);

#endif /* KEEL_NODE_SNAPXFER_STATE_H */
