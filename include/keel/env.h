/*
 * env.h -- the environment a node runs in: clock and timers, network,
 * randomness, logging and the log store, each a {ctx, vtable} pair.
 *
 * The node code (src/node/) reaches the world only through these. Two
 * implementations drive the same node code: the deterministic simulator
 * (src/sim/: one thread, simulated time, faults drawn from a seed) and,
 * later, the posix environment (libuv loop, sockets, files). Nothing in
 * src/node/ may know which one it has.
 *
 * Re-entrancy rule, shared by every implementation: no env call invokes a
 * node callback from inside itself. Timers, store completions and incoming
 * frames are delivered later, from the environment's own loop, so the node
 * may call the env while it holds borrowed pointers into its Raft core.
 */
#ifndef KEEL_ENV_H
#define KEEL_ENV_H

#include "keel/common.h"
#include "keel/raft.h"

/* ---- clock and timers ---------------------------------------------------- */

typedef void (*env_timer_cb)(void *arg);

struct env_clock_ops {
	/* Monotonic time of this node in nanoseconds (its own clock: in the
	 * simulator it drifts and is skewed against the other nodes). */
	uint64_t (*now_ns)(void *ctx);
	/* One-shot timer: cb(arg) runs once, delay_ns from now on this
	 * node's clock, unless stopped first. Returns a handle > 0, or 0 when
	 * it could not be started. */
	uint64_t (*timer_start)(void *ctx, uint64_t delay_ns, env_timer_cb cb,
				void *arg);
	/* Stops a timer that has not fired; a fired or unknown handle is a
	 * no-op. */
	void (*timer_stop)(void *ctx, uint64_t handle);
	/* Wall-clock time in milliseconds since the Unix epoch (this node's
	 * own clock: it may jump, be skewed and drift). Only the leader's
	 * reading matters: it stamps each command entry with it (kv
	 * kv_cmd_encode's now_ms; relative TTLs become absolute through
	 * kv_rewrite_relative), decides which keys have expired, and it is
	 * the "now" of reads. The posix env reads CLOCK_REALTIME plus the
	 * test clock offset; the simulator each node's skewed, drifting
	 * clock. */
	uint64_t (*wall_ms)(void *ctx);
};

struct env_clock {
	void *ctx;
	const struct env_clock_ops *ops;
};

/* ---- network -------------------------------------------------------------- */

struct env_net_ops {
	/* Sends one peer frame to node `to`, best effort: it may be lost,
	 * duplicated, delayed, reordered or corrupted on the way. The bytes
	 * are copied before the call returns. Frames arrive at the receiver
	 * through node_receive(). */
	void (*send)(void *ctx, raft_id to, const uint8_t *frame, size_t len);
};

struct env_net {
	void *ctx;
	const struct env_net_ops *ops;
};

/* ---- randomness ----------------------------------------------------------- */

struct env_rand_ops {
	/* 64 random bits. The simulator derives them from the run's seed; the
	 * posix env from the OS. */
	uint64_t (*next)(void *ctx);
};

struct env_rand {
	void *ctx;
	const struct env_rand_ops *ops;
};

/* ---- logging -------------------------------------------------------------- */

enum env_log_level {
	ENV_LOG_DEBUG = 0,
	ENV_LOG_INFO,
	ENV_LOG_WARN,
	ENV_LOG_ERROR,
};

struct env_log_ops {
	/* One line of text (no newline); msg is borrowed for the call. */
	void (*log)(void *ctx, int level, const char *msg);
};

struct env_log {
	void *ctx;
	const struct env_log_ops *ops;
};

/* ---- log store ------------------------------------------------------------ */

/*
 * The durable Raft log and hard state of one node. The WAL (segmented
 * files, CRC records, snapshots) implements this over env disk primitives:
 * in the server on the disk thread over the real disk (wal_worker.h), in
 * the simulator over memdisk, whose power loss loses or tears what was not
 * synced (src/sim/store.c).
 *
 * One write is, in this order: drop every stored entry with index >=
 * truncate_from (0 = drop nothing), append entries (contiguous, the first
 * at truncate_from when that is set), then store the hard state (when
 * has_hard_state). A crash keeps every completed write and some prefix of
 * that sequence of records of the writes after it (a torn tail): entries
 * may survive without the hard state written after them, never the other
 * way round.
 */
struct env_store_write {
	uint64_t truncate_from;
	uint32_t n_entries;
	const struct raft_entry *entries; /* borrowed for the call */
	bool has_hard_state;
	struct raft_hard_state hard_state;
};

/* Everything a store holds, as loaded at start-up. */
struct env_store_state {
	struct raft_hard_state hard_state;
	uint32_t n_entries;
	const struct raft_entry *entries; /* snap_index+1 .. snap_index+n */
	/* The newest durable snapshot whose CRCs verified (docs/snapshots.md
	 * §2.1); 0, 0 when there is none. Entries then start at
	 * snap_index + 1. Its payload is read with snap_read. */
	uint64_t snap_index, snap_term;
	uint64_t snap_len; /* payload length */
	uint32_t snap_crc; /* CRC32C of the payload */
};

/* Completion of a write: status 0 once durable, or an error (the store is
 * then poisoned: every later write fails too). Completions run in the
 * order the writes were issued. */
typedef void (*env_store_cb)(void *arg, int status);

/* ---- streamed snapshots (docs/snapshots.md §2) ---- */

/* A LOCAL snapshot is one this node took of its own applied state; a
 * RECEIVED one came from the leader (InstallSnapshot) and rebases the
 * log on it. */
enum env_snap_kind { ENV_SNAP_LOCAL = 1, ENV_SNAP_RECEIVED = 2 };

struct env_store_snap {     /* one snapshot being written */
	uint64_t index, term; /* snapshot id */
	uint64_t total_len;   /* payload bytes, <= snapshot_max_bytes */
	int kind;             /* enum env_snap_kind */
};

/* Completion of a snap_read: status 0 and the bytes (borrowed for the
 * call: the store frees them after it returns), or an error with data
 * NULL and len 0 (KEEL_ERR_NOT_FOUND: that snapshot no longer exists). */
typedef void (*env_store_read_cb)(void *arg, int status, const uint8_t *data,
				  size_t len);

struct env_store_ops {
	/* Loads the durable state (entries and the newest snapshot's id,
	 * length and CRC). Everything in *out is owned by the store and
	 * valid until the next call on it. Returns 0 or KEEL_ERR_IO /
	 * KEEL_ERR_CORRUPT. */
	int (*load)(void *ctx, struct env_store_state *out);
	/* Issues one write; w and the entry data are copied before the call
	 * returns. cb(arg, status) runs later, once it is durable. Returns 0,
	 * or an error when it could not be queued (cb will not run). */
	int (*append)(void *ctx, const struct env_store_write *w,
		      env_store_cb cb, void *arg);

	/* Streamed snapshots. Every operation with a callback completes in
	 * issue order with the appends (one queue); the ones without run in
	 * that order too. A write error poisons the store like an append's.
	 * Those that take a callback return 0, or an error when the
	 * operation could not be queued (cb will not run): KEEL_ERR_NOMEM,
	 * KEEL_ERR_INVAL (unknown handle, len too big), KEEL_ERR_BUSY (more
	 * than ENV_SNAP_QUEUE_MAX bytes queued). A store may check begin's
	 * arguments against the WAL only later: such an error is then the
	 * status of that snapshot's writes and finish.
	 *
	 * Opens snap/<index>-<term>.snap.tmp (truncating a leftover). One
	 * snapshot of each kind at a time. *handle > 0. 0, KEEL_ERR_BUSY,
	 * KEEL_ERR_TOO_BIG, KEEL_ERR_IO, the poison error. */
	int (*snap_begin)(void *ctx, const struct env_store_snap *s,
			  uint64_t *handle);
	/* Writes data[0..len) at offset (offsets must be consecutive);
	 * copied before the call returns; not synced. cb(arg, status). */
	int (*snap_write)(void *ctx, uint64_t handle, uint64_t offset,
			  const uint8_t *data, size_t len, env_store_cb cb,
			  void *arg);
	/* All total_len bytes written and their CRC32C is crc: writes the
	 * WAL header, fdatasync, rename, fsync snap/. Then LOCAL: removes
	 * segments wholly <= the previous snapshot's index and every older
	 * snapshot. RECEIVED: opens a fresh segment whose first record is
	 * a reset (index, term), syncs it, removes every older segment and
	 * snapshot (disk-format.md, "Reset records"). A length or CRC that
	 * does not match the bytes written is KEEL_ERR_CORRUPT (the store
	 * re-computes it as it writes: a second, independent check). */
	int (*snap_finish)(void *ctx, uint64_t handle, uint32_t crc,
			   env_store_cb cb, void *arg);
	/* Drops an unfinished snapshot and its temp file; no callback. */
	void (*snap_abort)(void *ctx, uint64_t handle);
	/* Reads len <= 1 MiB payload bytes at offset of durable snapshot
	 * (index, term). cb gets the bytes, borrowed for the call; status
	 * KEEL_ERR_NOT_FOUND when that snapshot no longer exists. */
	int (*snap_read)(void *ctx, uint64_t index, uint64_t term,
			 uint64_t offset, size_t len, env_store_read_cb cb,
			 void *arg);
};

/* Largest snap_read. */
#define ENV_SNAP_READ_MAX (1u << 20)
/* Snapshot bytes a store queues per direction (snap_write chunks not yet
 * completed; snap_read bytes not yet delivered). Past it snap_write and
 * snap_read return KEEL_ERR_BUSY (cb will not run): wait for completions
 * (docs/snapshots.md §5). Both stores (disk thread, simulator) apply it. */
#define ENV_SNAP_QUEUE_MAX (1u << 20)

struct env_store {
	void *ctx;
	const struct env_store_ops *ops;
};

/* ---- the whole environment of one node ------------------------------------ */

struct env {
	struct env_clock clock;
	struct env_net net;
	struct env_rand rand;
	struct env_log log;
	struct env_store store;
};

#endif /* KEEL_ENV_H */
