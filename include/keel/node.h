/*
 * node.h -- one replica: the Raft core, a small deterministic key-value
 * state machine, and the storage, network and clock reached only through
 * the environment (env.h).
 *
 * The node turns inputs (a tick, a peer frame, a client request, a store
 * completion) into Raft events and handles every update the core produces
 * in one fixed order (thesis §10.2.1, etcd's Ready rules):
 *
 *   1. persist: hand entries and hard state to the log store (async);
 *   2. send:    msgs now; msgs_after_persist are held until the store
 *               reports every write issued so far as durable;
 *   3. apply:   committed entries to the state machine, in index order;
 *   4. answer:  clients waiting for those entries or for read points.
 *
 * Client writes go through the log; reads go through ReadIndex (§6.4): the
 * node asks the core for a read point and serves the read once its state
 * machine has applied up to it. A non-leader answers NODE_NOT_LEADER with
 * the leader it knows of.
 *
 * Ownership: everything passed in stays the caller's (the node copies what
 * it keeps); everything passed to a callback is borrowed for that call.
 */
#ifndef KEEL_NODE_H
#define KEEL_NODE_H

#include "keel/common.h"
#include "keel/env.h"
#include "keel/raft.h"

#define NODE_MAX_KEY 64
#define NODE_MAX_VALUE 4096

/* ---- the state machine ------------------------------------------------------ */

enum node_op {
	NODE_OP_GET = 1, /* read: served through ReadIndex, never logged */
	NODE_OP_PUT,     /* a = value */
	NODE_OP_CAS,     /* a = expected, b = new */
	NODE_OP_INCR,    /* value as a decimal int64, absent = 0; +1 */
	NODE_OP_APPEND,  /* a = suffix */
	NODE_OP_DEL,
	NODE_OP_COUNT,
};
const char *node_op_name(int op);

enum node_status {
	NODE_OK = 0,
	NODE_FAIL,       /* ran, had no effect: cas mismatch, incr on a
	                    non-integer, value too long */
	NODE_NOT_LEADER, /* not run; leader_hint says who may be */
	NODE_DROPPED,    /* definitely not run: the proposal lost its slot,
	                    the read lost leadership, the leader was busy */
	NODE_STATUS_COUNT,
};
const char *node_status_name(int status);

struct node_sm; /* opaque key-value map */

struct node_sm *node_sm_create(const struct keel_alloc *alloc);
void node_sm_destroy(struct node_sm *sm);

/* A command as carried in a log entry: who proposed it (so the proposer
 * can answer its client) and what it does. */
struct node_cmd {
	uint8_t op;
	raft_id origin;      /* proposing node */
	uint64_t boot;       /* proposer's boot nonce: tells restarts apart */
	uint64_t seq;        /* proposer's request number */
	uint32_t key_len, a_len, b_len;
	const uint8_t *key, *a, *b; /* borrowed */
};

/* Bytes node_cmd_encode writes for c. */
size_t node_cmd_size(const struct node_cmd *c);
/* Encodes c into buf (cap bytes); returns bytes written or 0 if it does
 * not fit or a length is over its cap. */
size_t node_cmd_encode(const struct node_cmd *c, uint8_t *buf, size_t cap);
/* Decodes; the pointers in *c point into buf. 0 or KEEL_ERR_MALFORMED. */
int node_cmd_decode(const uint8_t *buf, size_t len, struct node_cmd *c);

struct node_result {
	int status; /* NODE_OK or NODE_FAIL */
	bool found; /* get: key present; incr/cas/put/append: value set */
	uint32_t value_len;
	uint8_t value[NODE_MAX_VALUE]; /* get: value; incr: new value */
};

/* Applies one command (op != GET) deterministically: the same commands in
 * the same order give the same results and the same map on every node.
 * Returns 0 or KEEL_ERR_NOMEM (the map is then unchanged). */
int node_sm_apply(struct node_sm *sm, const struct node_cmd *c,
		  struct node_result *res);
/* Reads a key. */
void node_sm_get(const struct node_sm *sm, const uint8_t *key,
		 uint32_t key_len, struct node_result *res);
/* An order-independent digest of the whole map (equal maps, equal
 * digests), and the number of keys. */
uint64_t node_sm_digest(const struct node_sm *sm);
uint32_t node_sm_count(const struct node_sm *sm);

/* ---- the replica -------------------------------------------------------------- */

struct node_request {
	uint64_t cookie; /* the caller's, echoed in the reply */
	uint8_t op;      /* enum node_op */
	uint32_t key_len, a_len, b_len;
	const uint8_t *key, *a, *b; /* borrowed for the call */
};

struct node_reply {
	uint64_t cookie;
	int status;         /* enum node_status */
	raft_id leader_hint; /* NODE_NOT_LEADER: a leader it knows of or 0 */
	uint64_t index;     /* writes: log index the command ran at */
	const struct node_result *result; /* OK/FAIL; borrowed */
};

typedef void (*node_reply_cb)(void *ctx, const struct node_reply *reply);

/* Test and simulator hooks: see every update and every applied command of
 * a node as it happens (borrowed for the call). Both may be NULL. */
struct node_observer {
	void *ctx;
	void (*update)(void *ctx, raft_id id, const struct raft_update *u);
	void (*apply)(void *ctx, raft_id id, const struct raft_entry *e);
};

#ifdef KEEL_MUTANTS
/* Planted node-level bugs for the simulator's mutation runs. Raft core
 * mutants (enum raft_mutant) pass through to the core. */
enum node_mutant {
	NODE_MUTANT_SEND_BEFORE_PERSIST = 100, /* msgs_after_persist at once */
	NODE_MUTANT_APPLY_UNCOMMITTED = 101,   /* apply entries before commit */
	NODE_MUTANT_ACCEPT_BAD_CRC = 102,      /* decode frames failing CRC */
};
#endif

struct node_config {
	raft_id id;
	struct raft_config_members members;
	uint64_t cluster_id;      /* on every peer frame */
	uint64_t tick_ns;         /* one Raft tick on this node's clock */
	uint32_t election_ticks;
	uint32_t heartbeat_ticks;
	uint32_t max_pending;     /* client requests waiting at once */
	uint32_t max_msg_entries; /* per append message; 0 = default */
	uint32_t max_inflight_msgs; /* appends in flight per peer; 0 = default */
	node_reply_cb reply;      /* required */
	void *reply_ctx;
	struct node_observer observer;
	int mutant;               /* 0; see enum node_mutant (KEEL_MUTANTS) */
};

struct node;

/* Starts a replica: loads the store, restores the core through
 * raft_restore, arms the tick timer. *out is set on success. Returns 0,
 * KEEL_ERR_NOMEM, KEEL_ERR_INVAL or the store's load error. env is
 * borrowed for the node's life. */
int node_create(const struct node_config *cfg, const struct env *env,
		struct node **out);

/* Stops the node at once, as a crash would: nothing is flushed, pending
 * clients get no answer. Stops its timer; the caller makes sure no store
 * completion reaches it afterwards. */
void node_destroy(struct node *n);

/* A peer frame arrived (borrowed). Frames that fail to decode are dropped
 * and counted. */
void node_receive(struct node *n, const uint8_t *frame, size_t len);

/* A client request. The answer comes through cfg.reply, possibly from
 * inside this call (not leader, busy). Returns 0, or KEEL_ERR_INVAL for a
 * malformed request (no answer then). */
int node_request(struct node *n, const struct node_request *req);

/* Asks this node to start an election now (tests; bootstrap). */
void node_campaign(struct node *n);

struct node_stats {
	uint64_t frames_in, frames_out, frames_bad;
	uint64_t writes_issued, writes_done;
	uint64_t applied;
};

void node_stats(const struct node *n, struct node_stats *st);
const struct raft *node_raft(const struct node *n);
const struct node_sm *node_state_machine(const struct node *n);
/* Highest log index applied to the state machine. */
uint64_t node_applied(const struct node *n);

#endif /* KEEL_NODE_H */
