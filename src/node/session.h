/*
 * session.h -- exactly-once client sessions (docs/kv.md "Sessions"): the
 * replicated table every replica keeps by applying the same session
 * entries, so a retried (session, seq) through any node, after any leader
 * change, gets the reply its first run recorded and does not run again
 * (thesis §6.3).
 *
 * Pure: no I/O, no clock, no global state; memory through the caller's
 * allocator. Time is the leader's, carried in the log: every call takes
 * the entry's stamp and the table keeps the largest it has seen (its own
 * clock, so a leader whose clock is behind cannot revive a session, and a
 * replica restored from a snapshot judges expiry exactly as one that
 * replayed the log). Every decision is a function of the calls made, so
 * replicas that applied the same log agree byte for byte (digest,
 * encoding).
 *
 * Bounds: SESSION_MAX sessions; per session the replies of the last
 * SESSION_WINDOW seqs, at most SESSION_REPLY_BUDGET reply bytes (older
 * replies are dropped first; a reply larger than the budget is never
 * kept); so the table holds at most SESSION_MAX * SESSION_REPLY_BUDGET
 * reply bytes.
 */
#ifndef KEEL_NODE_SESSION_H
#define KEEL_NODE_SESSION_H

#include "keel/common.h"

#define SESSION_MAX 4096u
#define SESSION_WINDOW 64u
#define SESSION_REPLY_BUDGET (16u << 10)
#define SESSION_TTL_DEFAULT_MS 60000u
#define SESSION_TTL_MIN_MS 1000u
#define SESSION_TTL_MAX_MS 86400000u
/* The encoded table never exceeds this (checked before allocating). */
#define SESSION_ENCODED_MAX                                                    \
	(64u + (uint64_t)SESSION_MAX *                                         \
		       (40u + SESSION_WINDOW * 13u + SESSION_REPLY_BUDGET))

struct session_table;

/* The log entries' bodies (fwd.h types 3 and 4; node_session.c builds
 * them, sm.c applies them): a session op is u8 op, u64 leader stamp, u64
 * argument (TTL for REGISTER, else the id); a session command is u64 id,
 * u64 seq, then a kv command entry. */
enum { SOP_REGISTER = 1, SOP_KEEPALIVE = 2, SOP_CLOSE = 3 };
#define SESSION_OP_BYTES 17u
#define SESSION_CMD_FIXED 16u

/* What a (session, seq) is, for a command about to run. */
enum session_verdict {
	SESSION_RUN = 0,   /* not run yet: run it, then session_record */
	SESSION_DUP,       /* ran: *reply / *len is its recorded reply tape,
			      or NULL when the reply was not kept */
	SESSION_OLD,       /* below the kept window: whether it ran is no
			      longer known; it must not run */
	SESSION_NONE,      /* unknown or expired session: must not run */
};

struct session_table *session_table_create(const struct keel_alloc *a);
void session_table_destroy(struct session_table *t);

/* The table's clock: the largest stamp it was given. */
uint64_t session_clock(const struct session_table *t);
uint32_t session_count(const struct session_table *t);

/* Registers session id (the register entry's log index) with ttl_ms.
 * Expired sessions are purged first when the table is full. 0,
 * KEEL_ERR_BUSY (SESSION_MAX live sessions), KEEL_ERR_EXISTS (id in use),
 * KEEL_ERR_NOMEM (nothing changed). */
int session_register(struct session_table *t, uint64_t id, uint64_t ttl_ms,
		     uint64_t stamp_ms);
/* Refreshes a live session. 0 or KEEL_ERR_NOT_FOUND (unknown or expired;
 * an expired one is removed). */
int session_keepalive(struct session_table *t, uint64_t id,
		      uint64_t stamp_ms);
/* 0 or KEEL_ERR_NOT_FOUND. */
int session_close(struct session_table *t, uint64_t id);

/* Judges (id, seq) (seq >= 1) at stamp_ms: refreshes a live session,
 * removes an expired one. *reply / *len / *high are set for DUP (the
 * tape, borrowed until the next call) and OLD (*high). */
int session_check(struct session_table *t, uint64_t id, uint64_t seq,
		  uint64_t stamp_ms, const uint8_t **reply, size_t *len,
		  uint64_t *high);
/* Records that (id, seq) ran with reply tape [tape, len) (copied, unless
 * it is over the budget: then only "ran" is kept). Only after
 * session_check said RUN. 0 or KEEL_ERR_NOMEM (then the seq is still
 * marked as run, without its reply: never run twice). */
int session_record(struct session_table *t, uint64_t id, uint64_t seq,
		   const uint8_t *tape, size_t len);

#ifdef KEEL_MUTANTS
/* Planted bug for the simulator (keel sim --mutant session-wrong-reply):
 * session_check answers a seq with whatever reply its slot holds, without
 * comparing the slot's seq (so a new seq may get an older seq's reply). */
enum { SESSION_MUTANT_WRONG_REPLY = 1 };
void session_set_mutant(struct session_table *t, int mutant);
#endif

/* A digest of the whole table (sessions in id order). */
uint64_t session_digest(const struct session_table *t);

/* Snapshot encoding (docs/snapshots.md "Sessions"): deterministic, sessions
 * in id order. size first, then encode exactly that many bytes. */
uint64_t session_encoded_size(const struct session_table *t);
void session_encode(const struct session_table *t, uint8_t *buf);
/* Decodes an encoding into a new table (every count and length checked
 * against the bytes and the bounds before use): 0 and *out, or
 * KEEL_ERR_MALFORMED / KEEL_ERR_VERSION / KEEL_ERR_TOO_BIG /
 * KEEL_ERR_NOMEM. */
int session_decode(const struct keel_alloc *a, const uint8_t *buf,
		   size_t len, struct session_table **out);

#endif /* KEEL_NODE_SESSION_H */
