/*
 * sim_internal.h -- the simulator's parts, shared by its files and its
 * unit tests: the log store model (store.c), the cluster-wide safety
 * checkers (checker.c) and the client history (history.c). The run loop
 * and the sim env are in sim.c; the public entry point is sim.h.
 */
#ifndef KEEL_SIM_INTERNAL_H
#define KEEL_SIM_INTERNAL_H

#include "keel/env.h"
#include "keel/node.h"
#include "keel/raft.h"
#include "sim/sim.h"

/* ---- log store: the real WAL over memdisk (store.c) ------------------------ */

#include "keel/memdisk.h"
#include "keel/wal.h"

/* What a queued store operation is (docs/snapshots.md §2.2: one queue). */
enum sim_store_op {
	SIM_STORE_APPEND = 0,
	SIM_STORE_SNAP_WRITE,
	SIM_STORE_SNAP_FINISH,
	SIM_STORE_SNAP_READ,
};

struct sim_write {
	int op; /* enum sim_store_op */
	/* A snapshot operation runs on the WAL when issued (so the queue's
	 * order is the disk's order) and needs no sync of its own at
	 * completion (durable = true); this is its result. */
	int status;
	uint8_t *rbuf;  /* SIM_STORE_SNAP_READ: the bytes read, owned */
	size_t rlen;
	size_t queued;  /* snapshot bytes counted against the cap */
	env_store_read_cb rcb;
	uint64_t truncate_from;
	uint32_t n_entries;
	struct raft_entry *entries; /* owned copies until durable */
	bool has_hard_state;
	struct raft_hard_state hard_state;
	bool durable; /* covered by a successful sync */
	env_store_cb cb;
	void *arg;
};

#ifdef KEEL_MUTANTS
/* Planted store bug (sim.c maps the mutant name to it). */
enum { SIM_STORE_MUTANT_ACK_BEFORE_FSYNC = 1 };
#endif

struct sim_store_config {
	const struct keel_alloc *alloc; /* NULL = libc */
	uint64_t seed;                  /* the memdisk's tearing choices */
	uint64_t cluster_id;
	uint64_t segment_bytes;
	int mutant;     /* SIM_STORE_MUTANT_* or 0 */
	int wal_mutant; /* enum wal_mutant or 0 (KEEL_MUTANTS builds) */
};

struct sim_snap_open { /* a snapshot begun on the WAL; handle 0 = free */
	uint64_t handle, index, term;
	int kind;
};

struct sim_store {
	const struct keel_alloc *alloc;
	struct memdisk *disk; /* sim.c arms its faults directly */
	struct wal_config wcfg;
	struct wal *wal; /* NULL when recovery failed */
	struct wal_recovered rec; /* what the last recovery returned */
	bool have_rec;
	int mutant;
	bool sync_owed; /* ack-before-fsync mutant */
	int error;      /* first flush/sync error since the last recovery */
	bool refused;   /* recovery found corruption: never starts again */
	char msg[256];  /* the error or refusal, naming file and offset */
	/* Shadow of the durable state. Invariant: log[i].index ==
	 * base_index + 1 + i. base is a durable snapshot the log was reset to
	 * (an install, or a recovery from a snapshot whose entry the shadow
	 * did not hold); the entries below it are known only as "covered".
	 * snap_index/term: the newest snapshot made durable (>= base). */
	struct raft_hard_state hs;
	struct raft_entry *log; /* data owned */
	uint64_t n_log, cap_log;
	uint64_t base_index, base_term;
	uint64_t snap_index, snap_term;
	bool snap_flipped; /* a bit flip hit a snapshot: an older may win */
	struct sim_snap_open snap_open[2];
	/* Snapshot bytes issued and not yet reported, per direction; capped
	 * at ENV_SNAP_QUEUE_MAX like the disk thread's. */
	uint64_t queued_write_bytes, queued_read_bytes;
	/* Issued writes, FIFO ring: the first n_completed were reported but
	 * are kept until durable (only the ack-before-fsync mutant reports
	 * before the sync). */
	struct sim_write *pending;
	uint32_t head, n_pending, n_completed, cap_pending;
	uint64_t submitted, completed, syncs, recoveries, torn_tails,
		bitflips;
	/* Set by a recovery that lost or changed a synced entry (a store
	 * bug: the simulator reports it as a violation). */
	uint64_t check_upto;
	uint64_t unsynced_from; /* lowest truncate_from since the last
				   sync, 0 = none */
	bool synced_lost;
	char lost_msg[160];
};

/* Creates the disk and recovers the (empty) WAL on it. 0 or an error. */
int sim_store_init(struct sim_store *s, const struct sim_store_config *cfg);
void sim_store_close(struct sim_store *s);
/* Stages a write in the WAL, hands it to the disk (unsynced) and queues
 * it (copied). 0, KEEL_ERR_NOMEM, or KEEL_ERR_IO when not recovered. A
 * disk error is reported by the write's completion, not here. */
int sim_store_submit(struct sim_store *s, const struct env_store_write *w,
		     env_store_cb cb, void *arg);
/* Completes the oldest unreported write: syncs first unless an earlier
 * sync covered it (group commit). *status is 0 once durable, or the
 * store's first error. False when no write is waiting. */
bool sim_store_complete(struct sim_store *s, env_store_cb *cb, void **arg,
			int *status);
/* True when every issued write has been reported. */
bool sim_store_idle(const struct sim_store *s);
/* True when the next write to report needs no sync of its own (an
 * earlier sync covered it) or fails with the store's error. */
bool sim_store_next_ready(const struct sim_store *s);
/* Power loss (enum memdisk_crash_mode): closes the WAL, drops the queue,
 * clears armed disk faults. Returns the unsynced writes lost or torn. */
uint64_t sim_store_crash(struct sim_store *s, int mode);
/* Recovery (wal_open): 0, and the shadow becomes what it returned; or its
 * error with s->msg (KEEL_ERR_CORRUPT: refused for good). On success it
 * first checks that every synced entry came back (up to the first index
 * an unsynced write may have overwritten) and sets synced_lost if not. */
int sim_store_recover(struct sim_store *s);
/* Rot at rest (call between crash and recovery): flips one bit in the
 * checksummed bytes of a WAL record that is followed by another record.
 * 0 with a description in what, or KEEL_ERR_NOT_FOUND (fewer than two
 * records). */
int sim_store_flip(struct sim_store *s, struct keel_rand *rand, char *what,
		   size_t what_len);
uint64_t sim_store_unsynced_records(const struct sim_store *s);
/* Term of the durable entry at index, 0 if none. */
uint64_t sim_store_durable_term(const struct sim_store *s, uint64_t index);
const struct raft_entry *sim_store_durable_entry(const struct sim_store *s,
						 uint64_t index);
/* Borrowed view of what the last recovery returned (env_store.load);
 * KEEL_ERR_IO when the store is not recovered. */
int sim_store_load(const struct sim_store *s, struct env_store_state *out);

/* Streamed snapshots: the env_store snap_* operations (env.h) over the
 * WAL. Each runs on the WAL when issued; snap_write, snap_finish and
 * snap_read are queued with the appends and completed, in issue order, by
 * sim_store_complete like a write (the caller schedules their completion
 * as it does an append's). A snap_read completes through a callback the
 * store supplies (*cb of sim_store_complete), which calls the read
 * callback with the bytes and frees them; the status sim_store_complete
 * reports for it is 0 unless the store failed. Errors that poison the WAL
 * poison the store. snap_write / snap_read return KEEL_ERR_BUSY past
 * ENV_SNAP_QUEUE_MAX bytes issued and not yet reported (nothing queued). */
int sim_store_snap_begin(struct sim_store *s, const struct env_store_snap *sn,
			 uint64_t *handle);
int sim_store_snap_write(struct sim_store *s, uint64_t handle, uint64_t offset,
			 const uint8_t *data, size_t len, env_store_cb cb,
			 void *arg);
int sim_store_snap_finish(struct sim_store *s, uint64_t handle, uint32_t crc,
			  env_store_cb cb, void *arg);
void sim_store_snap_abort(struct sim_store *s, uint64_t handle);
int sim_store_snap_read(struct sim_store *s, uint64_t index, uint64_t term,
			uint64_t offset, size_t len, env_store_read_cb cb,
			void *arg);
/* The newest snapshot made durable (0 = none): every entry at or below it
 * is covered by it, so it counts as a durable copy of the committed
 * entries up to it (sim_store_durable_term only knows those the shadow
 * log still holds). */
uint64_t sim_store_durable_snap(const struct sim_store *s);
/* Rot at rest in a snapshot file (call between crash and recovery): flips
 * one bit of the header or payload of the newest snapshot, but only when
 * at least two snapshots verify and the newest one has an older one to
 * fall back to, so the node restarts from the older one (disk-format.md).
 * 0 with a description, or KEEL_ERR_NOT_FOUND. */
int sim_store_flip_snapshot(struct sim_store *s, struct keel_rand *rand,
			    char *what, size_t what_len);

/* ---- safety checkers (checker.c) ------------------------------------------ */

/* What a committed, applied or logged entry is, for comparisons. */
struct sim_entry_id {
	uint64_t term;
	uint64_t hash; /* of type and data */
	uint64_t commit_term; /* committed: term of the leader that did it */
};

uint64_t sim_entry_hash(const struct raft_entry *e);

struct sim_checker {
	uint32_t n_nodes;
	uint64_t step; /* set by the caller before each check */
	bool violated;
	char what[400]; /* first violation: which check, at which step */

	/* Election safety: leader of each term seen (0 = none yet). */
	raft_id *leader_of_term;
	uint64_t cap_terms;

	/* Log matching: every (index, term) ever logged, with its content
	 * and the term of the entry before it. Open addressing. */
	struct sim_logged {
		uint64_t index, term; /* index 0 = empty slot */
		uint64_t hash, prev_term;
	} *logged;
	uint64_t cap_logged, n_logged;

	/* Committed prefix known so far (index i at [i - 1]). */
	struct sim_entry_id *committed;
	uint64_t n_committed, cap_committed;

	/* State machine safety: what was applied at each index. */
	struct sim_entry_id *applied;
	uint64_t n_applied, cap_applied;
	uint64_t last_applied[SIM_MAX_NODES + 1]; /* per node, by id */

	/* State agreement: the replicated state's digest after applying
	 * index i (at [i - 1]), from the first node that reported it. */
	struct sim_digest {
		uint64_t digest;
		raft_id node; /* 0 = not reported yet */
	} *digests;
	uint64_t cap_digests;
	uint64_t digest_checks;
};

/* What a term_at callback answers for an index below a node's log base:
 * the entry is compacted (its effect is in the node's snapshot). */
#define SIM_TERM_COMPACTED UINT64_MAX

int sim_checker_init(struct sim_checker *c, uint32_t n_nodes);
void sim_checker_close(struct sim_checker *c);

/* Each returns true when the property holds; on a violation it records
 * the first one in c->what and sets c->violated. */

/* §3.6.3 Election Safety: at most one leader per term. */
bool sim_check_leader(struct sim_checker *c, raft_id id, uint64_t term);
/* §3.6.3 Log Matching, checked inductively: an (index, term) is the same
 * entry, with the same predecessor term, wherever it appears. */
bool sim_check_logged(struct sim_checker *c, raft_id id, uint64_t index,
		      uint64_t term, uint64_t hash, uint64_t prev_term);
/* A node in term node_term says index is committed with this entry: it
 * must agree with every earlier claim (a committed entry never changes or
 * vanishes). Sets *fresh when the index was not known committed before;
 * the first node to report it is the leader that committed it, so
 * node_term is then the term the entry was committed in. */
bool sim_check_committed(struct sim_checker *c, raft_id id, uint64_t index,
			 uint64_t term, uint64_t hash, uint64_t node_term,
			 bool *fresh);
/* §3.6.3 Leader Completeness: a leader of term t holds every entry
 * committed in an earlier term (the term of the leader that committed it,
 * not the entry's own term: an old-term entry committed indirectly by a
 * leader of term u binds only leaders of terms > u). term_at(ctx, index)
 * reads its log. */
bool sim_check_leader_log(struct sim_checker *c, raft_id id, uint64_t term,
			  uint64_t (*term_at)(const void *ctx, uint64_t index),
			  const void *ctx);
/* State Machine Safety: every node applies the same entry at an index,
 * in order, each index once per boot (reset with sim_checker_restart). */
bool sim_check_applied(struct sim_checker *c, raft_id id, uint64_t index,
		       uint64_t term, uint64_t hash);
void sim_checker_restart(struct sim_checker *c, raft_id id);
/* The node's state machine now starts past index (a snapshot restored or
 * installed): its next applied index is index + 1. */
void sim_checker_jump(struct sim_checker *c, raft_id id, uint64_t index);
/* State agreement (docs/snapshots.md §4): every replica that applied
 * index has the same state digest there (node_state_digest). */
bool sim_check_digest(struct sim_checker *c, raft_id id, uint64_t index,
		      uint64_t digest);
/* §3.6.2 (Figure 3.7): a leader commits by counting replicas only an
 * entry of its own term; older entries are committed indirectly, under
 * one. When a leader of term leader_term moves the known commit point to
 * index, the entry there must be of that term. */
bool sim_check_commit_rule(struct sim_checker *c, raft_id id,
			   uint64_t leader_term, uint64_t index,
			   uint64_t entry_term);
/* Durability: a committed entry must be durable on a majority.
 * durable_votes = nodes whose durable log holds it. */
bool sim_check_durable(struct sim_checker *c, uint64_t index,
		       uint32_t durable_votes);
/* Request held silently (docs/testing.md): a node that took a client's
 * request must answer it by its own request timeout (OK, or UNKNOWN,
 * DROPPED or NOT_LEADER when it gives up) unless it stops running
 * meanwhile. Checked at the client's timeout (answered = false) and at the
 * node's answer (answered = true). Times are on the node's own clock. */
struct sim_hold {
	raft_id node;
	uint32_t client;
	const char *op;          /* what was asked, for the message */
	uint64_t taken_local;    /* the node's clock when it took it */
	uint64_t now_local;      /* ... now */
	uint64_t request_timeout; /* the node's request_timeout_ns */
	bool answered;           /* now is the answer, not the client's timeout */
	bool excused;            /* crashed, restarted or paused since */
};
/* The bound is the request timeout plus a fifth of it (1.2 x): the node
 * answers within one tick (10 ms) of its deadline, and 20% of the
 * shortest timeout drawn (750 ms) is 150 ms (docs/testing.md). */
#define SIM_HOLD_SLACK_DIV 5
/* True when h is within the bound (or excused). */
bool sim_check_hold(struct sim_checker *c, const struct sim_hold *h);
/* Records a violation found elsewhere (liveness, linearizability). */
void sim_checker_fail(struct sim_checker *c, const char *check,
		      const char *detail);

/* ---- program order of pipelined clients (order.c) ------------------------- */

/* A pipelining client (sim.c) keeps several `APPEND <key> "<token>,"` in
 * flight on one stream (node_request.stream); each stream has a key of its
 * own and sends tokens 1, 2, 3, ... in order. What the client learned of
 * each token: */
enum sim_tok_state {
	SIM_TOK_SENT = 0,   /* in flight: no answer yet (may be present) */
	SIM_TOK_OK,         /* NODE_OK: must be present, once, in order */
	SIM_TOK_DROPPED,    /* NODE_DROPPED: not executed, must be absent */
	SIM_TOK_NOT_LEADER, /* NODE_NOT_LEADER or refused: must be absent */
	SIM_TOK_UNKNOWN,    /* NODE_UNKNOWN: may be present */
	SIM_TOK_LOST,       /* no answer: client timeout or connection reset */
	SIM_TOK_STATES,
};
/* "sent", "ok", "dropped", "not-leader", "unknown", "lost". */
const char *sim_tok_state_name(int state);

struct sim_order_tok {
	uint64_t token;
	uint64_t len; /* SIM_TOK_OK: APPEND's reply, the value's length then */
	uint8_t state; /* enum sim_tok_state */
};

struct sim_order_key {
	char name[24];
	raft_id node;   /* the node the stream was opened on */
	uint64_t stream;
	struct sim_order_tok *tok; /* tokens in the order sent (increasing) */
	uint32_t n, cap;
};

struct sim_order {
	struct sim_order_key *keys;
	uint32_t n, cap;
	/* Filled by sim_check_order: tokens without a definite answer found
	 * present / absent in the final values. */
	uint64_t uncertain_present, uncertain_absent;
};

void sim_order_init(struct sim_order *o);
void sim_order_close(struct sim_order *o);
/* A new stream's key: its index (>= 0), or KEEL_ERR_NOMEM. */
int sim_order_key(struct sim_order *o, const char *name, raft_id node,
		  uint64_t stream);
/* Records token as sent on key (SIM_TOK_SENT). Tokens must grow:
 * KEEL_ERR_INVAL otherwise; KEEL_ERR_NOMEM. */
int sim_order_sent(struct sim_order *o, uint32_t key, uint64_t token);
/* What the client learned of a sent token (len: SIM_TOK_OK's reply).
 * False when the token was never sent on key. */
bool sim_order_answer(struct sim_order *o, uint32_t key, uint64_t token,
		      int state, uint64_t len);
/* Program order (docs/testing.md): key's final value (found false: no
 * such key) must be its tokens "t," in strictly increasing order, each at
 * most once, every SIM_TOK_OK token present (and ending exactly at the
 * length its APPEND reply gave), no SIM_TOK_DROPPED or NOT_LEADER token
 * present, nothing that was never sent. On a violation it records, naming
 * the seed, the key and an excerpt of the value: pipe-order, pipe-duplicate,
 * pipe-ack-lost, pipe-not-executed-present, pipe-reply-mismatch or
 * pipe-garbage. */
bool sim_check_order(struct sim_checker *c, struct sim_order *o, uint32_t key,
		     uint64_t seed, bool found, const uint8_t *val, size_t len);

/* ---- the bank workload (bank.c) ------------------------------------------- */

/* Bank clients (sim.c, docs/testing.md "The bank") move money between N
 * accounts with transactions, each appending "<id>," to a ledger key in
 * the same transaction, and read every balance in one transaction. */
#define SIM_BANK_MAX_ACCTS 6

enum sim_bank_mode {
	SIM_BANK_WATCH = 0, /* KEEL.WATCH-REVS, MGET, KEEL.EXEC with watches */
	SIM_BANK_TXN,       /* KEEL.GETREV x2, KEEL.TXN IF .. MOD = .. THEN */
	SIM_BANK_SESSION,   /* the same KEEL.TXN inside KEEL.RUN sid seq,
			       retried at the same (sid, seq) */
	SIM_BANK_MODES,
};
/* "watch", "txn", "session". */
const char *sim_bank_mode_name(int mode);

/* What the client learned of a transfer. */
enum sim_xfer_state {
	SIM_XFER_SENT = 0,     /* no definite answer yet */
	SIM_XFER_OK,           /* ran (THEN taken / EXEC array): present
				  once, ending at len */
	SIM_XFER_FAILED,       /* compare failed (ELSE / EXEC nil): absent */
	SIM_XFER_NOT_EXECUTED, /* NODE_DROPPED / NOT_LEADER: absent */
	SIM_XFER_UNKNOWN,      /* NODE_UNKNOWN or timeout: at most once */
	SIM_XFER_STATES,
};
const char *sim_xfer_state_name(int state);

struct sim_xfer {
	uint32_t client;
	uint8_t mode, from, to, state;
	int64_t amount;
	uint64_t len;          /* SIM_XFER_OK: the ledger's length then */
	uint32_t retries;      /* session: attempts after an uncertain one */
	bool retry_answered;   /* session: the definite answer came from a
				  retry of the same (sid, seq) */
};

struct sim_bank_read {
	uint32_t client;
	uint8_t mode;    /* 0 KEEL.TXN, 1 KEEL.EXEC */
	uint32_t absent; /* bit a: account a had no value */
	int64_t bal[SIM_BANK_MAX_ACCTS];
};

struct sim_bank {
	uint32_t n_accts;
	int64_t init[SIM_BANK_MAX_ACCTS];
	int64_t total;
	bool init_acked; /* the seeding transaction was acknowledged */
	struct sim_xfer *x; /* transfer id i at x[i - 1] */
	uint32_t n_x, cap_x;
	struct sim_bank_read *r;
	uint32_t n_r, cap_r;
	/* Filled by sim_check_bank: transfers without a definite answer
	 * found in the ledger / not. */
	uint64_t uncertain_present, uncertain_absent;
};

void sim_bank_init(struct sim_bank *b, uint32_t n_accts, const int64_t *init);
void sim_bank_close(struct sim_bank *b);
/* A new transfer (SIM_XFER_SENT): its id (1, 2, 3, ...). */
uint64_t sim_bank_xfer(struct sim_bank *b, uint32_t client, int mode,
		       uint32_t from, uint32_t to, int64_t amount);
struct sim_xfer *sim_bank_get(struct sim_bank *b, uint64_t id);
/* An acknowledged read of every balance. */
void sim_bank_read(struct sim_bank *b, uint32_t client, int mode,
		   const int64_t *bal, uint32_t absent);
/* The bank check (docs/testing.md), on a converged node's ledger value
 * (ledger_found false: no such key) and balances (absent: bit a = no
 * account a). Records the first violation, naming the seed, the client,
 * the transfer and an excerpt of the ledger: bank-read-total,
 * bank-read-negative, bank-read-absent, bank-ledger-garbage,
 * bank-duplicate, bank-negative, bank-ack-lost, bank-reply-mismatch,
 * bank-not-executed-present, bank-balance; for a session transfer the
 * reply checks are bank-session-reply (its reply, first or retried, is not
 * what its one run answered). */
bool sim_check_bank(struct sim_checker *c, struct sim_bank *b, uint64_t seed,
		    bool ledger_found, const uint8_t *v, size_t vl,
		    const int64_t *bal, uint32_t absent);

/* ---- history (history.c) --------------------------------------------------- */

/* The clients' operations (the history's "f"), each one Redis command:
 * get -> GET, put -> SET, cas -> KEEL.CAS, incr -> INCR, append -> APPEND,
 * del -> DEL (sim.c builds the argv and reads the reply tape). */
enum sim_op {
	SIM_OP_GET = 1,
	SIM_OP_PUT,
	SIM_OP_CAS,
	SIM_OP_INCR,
	SIM_OP_APPEND,
	SIM_OP_DEL,
	SIM_OP_COUNT,
};
const char *sim_op_name(int op);

/* Longest value a history event carries (the clients' values are digits
 * grown by appends: far below this in any run). */
#define SIM_MAX_VALUE 4096

enum sim_hist_type { SIM_INVOKE = 0, SIM_OK, SIM_FAIL, SIM_INFO };

struct sim_hist_event {
	uint64_t time_ns;
	uint32_t process;
	uint8_t type; /* enum sim_hist_type */
	uint8_t op;   /* enum sim_op */
	uint8_t key;  /* key number: "k<key>" */
	bool has_value;  /* read ok: false = absent (null) */
	bool synthetic;  /* a window's initial state: checked, not written */
	uint32_t v1_off, v1_len; /* into the history's bytes */
	uint32_t v2_off, v2_len; /* cas new value */
};

struct sim_history {
	struct sim_hist_event *ev;
	uint64_t n, cap;
	uint8_t *bytes;
	uint64_t n_bytes, cap_bytes;
};

void sim_history_init(struct sim_history *h);
void sim_history_close(struct sim_history *h);
int sim_history_add(struct sim_history *h, uint64_t time_ns, uint32_t process,
		    int type, int op, int key, bool has_value,
		    const uint8_t *v1, uint32_t v1_len, const uint8_t *v2,
		    uint32_t v2_len);
/* Starts a new window: drops every event, keeps nothing. */
void sim_history_reset(struct sim_history *h);
/* Records that key starts the window holding value (a synthetic write,
 * invoked and completed before anything else of the window). */
int sim_history_add_initial(struct sim_history *h, uint64_t time_ns,
			    uint32_t process, int key, const uint8_t *value,
			    uint32_t len);
/* Writes one JSON line per (non-synthetic) event through out(ctx, line). */
void sim_history_write_jsonl(const struct sim_history *h,
			     void (*out)(void *ctx, const char *line),
			     void *ctx);
/* Checks the history for linearizability against the key-value model.
 * Returns 0 when linearizable, 1 when not (detail says where), or an
 * error code when it could not decide. */
int sim_history_check(const struct sim_history *h, char *detail,
		      size_t detail_cap);

#endif /* KEEL_SIM_INTERNAL_H */
