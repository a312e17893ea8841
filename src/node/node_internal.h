/*
 * node_internal.h -- the node's private state and the functions its files
 * share (docs/architecture.md, "node/ split by concern"):
 *
 *   node.c         lifecycle, the update loop (persist -> send -> apply ->
 *                  answer), batching per loop turn, ticks, inputs
 *   node_route.c   client requests: pending writes and reads, the turn's
 *                  proposal queue, forwarding to the leader and its frames
 *   node_apply.c   applying committed entries: the dedup window and
 *                  program order (replicated state), answers at apply
 *   node_expire.c  leader-driven expiry (KEEL.EXPIRE-DELETE proposals)
 *   node_snap.c    snapshots: produce, send, receive, install, restore
 *
 * Nothing here is public: node.h is the interface. Like every file of
 * src/node/, no POSIX, libuv or stdio header and no global state.
 */
#ifndef KEEL_NODE_INTERNAL_H
#define KEEL_NODE_INTERNAL_H

#include <string.h>

#include "keel/env.h"
#include "keel/kv.h"
#include "keel/node.h"
#include "keel/peer.h"
#include "keel/raft.h"
#include "node/fwd.h"
#include "node/nodesnap.h"
#include "node/session.h"
#include "node/sm.h"
#include "node/snapxfer.h"
#include "node/snapxfer_state.h"

#define NODE_MAX_MSG_ENTRIES 256
#define NODE_PROCESS_ROUNDS 1024 /* bound on ready/advance rounds per input */
#define NODE_DEFAULT_TIMEOUT_NS 5000000000ull
#define NODE_DEFAULT_EXPIRE_BATCH 64
#define NODE_MAX_EXPIRE_INFLIGHT 1024
#define NODE_DEFAULT_TAPE_BYTES ((512u << 20) + 1024u)
#define NODE_MAX_PENDING_CAP (1u << 24) /* max_pending's own bound */
#define NODE_MAX_REDIRECTS 3 /* NACK-driven resends per retry period */
/* Proposals queued in one loop turn before an early flush (entries, and
 * their bytes): bounds the turn's queue whatever arrives at once. */
#define NODE_TURN_MAX 1024u
#define NODE_TURN_MAX_BYTES (8u << 20)
/* A forwarded command must fit one frame under the default receive limit. */
#define NODE_MAX_FWD_CMD (PEER_MAX_FRAME_DEFAULT - 64u)

/* Snapshot defaults (docs/snapshots.md §1.1, §3.3). */
#define NODE_SNAP_ENTRIES 100000u
#define NODE_SNAP_LOG_BYTES (64ull << 20)
#define NODE_SNAP_STEP (64u << 10)
#define NODE_SNAP_STEPS 4u
#define NODE_SNAP_PREIMAGE (64ull << 20)
#define NODE_SNAP_MAX (4ull << 30)
#define NODE_SNAP_WINDOW 4u
#define NODE_SNAP_SENDS 2u
#define NODE_SNAP_MAX_WRITES 16u   /* snap_writes of one snapshot in flight */
#define NODE_SNAP_RESTORE_READ (1u << 20)

/*
 * Dedup window: for each (origin, boot) the state machine side keeps the
 * highest seq applied and a bitmap of the DEDUP_WINDOW seqs below it. An
 * entry (origin, boot, seq) executes iff seq is above the window or in it
 * and not yet marked; a seq below the window is refused (the origin, if
 * it still waits, answers NODE_DROPPED: no copy executed, or it would have
 * been answered by the first). At most DEDUP_BOOTS boots per origin and
 * DEDUP_RECS records in all are kept, the least recently applied evicted.
 * Everything here is a function of the applied log, so every replica
 * makes the same decisions (the node rebuilds it by replaying the log at
 * start, and a snapshot carries it whole: nodesnap.h). Bound: at most
 * once holds for a copy that reaches the log while its seq is within
 * DEDUP_WINDOW of its origin's newest applied seq and before
 * DEDUP_BOOTS newer boots of that origin were applied; a request older
 * than that is refused, never run twice.
 */
#define DEDUP_WINDOW NODE_DEDUP_WINDOW
#define DEDUP_BOOTS NODE_DEDUP_BOOTS
#define DEDUP_RECS NODE_DEDUP_RECS
/* struct node_dedup_rec (nodesnap.h): part of the snapshot payload. */

struct held_frame {
	uint64_t wait_seq; /* send once writes_done >= wait_seq */
	raft_id to;
	uint32_t len;
	uint8_t *buf; /* owned */
};

/* One issued store write, in issue order. */
struct write_rec {
	uint64_t last_index; /* 0 when it carried no entries */
	uint64_t last_term;
	uint64_t issued_ns;  /* when it was handed to the store (now_ns) */
};

enum { W_WAIT = 0, W_LOCAL, W_FWD };
enum { R_WAIT = 0, R_LOCAL, R_FWD, R_READY };

/* Pending writes are kept in seq order (= request order) in
 * pw[pw_lo, pw_hi): appended at the end, removed by marking dead (the
 * front advances past dead ones; a full array is compacted), never
 * reordered. So every pass over them -- resends above all -- goes oldest
 * first, which keeps a stream's copies in order at a new leader, and
 * pw_find bisects. (It was swap-with-last: passes went in a scrambled
 * order, issue 12.) */
struct pending_write {
	uint64_t cookie;
	uint64_t seq;
	uint64_t stream;     /* the request's ordering stream, 0 = none */
	uint64_t deadline;   /* on now_ns */
	uint64_t next_try;   /* FWD: resend at */
	uint64_t index;      /* LOCAL: where the proposal went */
	uint8_t mode;
	bool dead;           /* answered: a hole until compaction */
	bool held;           /* waited for the window: never handed on yet */
	bool queued;         /* in this turn's proposal queue, not proposed yet */
	bool handed;         /* proposed or forwarded at least once */
	bool acked;          /* FWD: a leader said it proposed it ... */
	raft_id ack_leader;  /* ... this one, in ack_term */
	raft_id sent_to;     /* FWD: the leader the last copy went to */
	uint64_t ack_term;
	uint32_t redirects;
	uint8_t *cmd;        /* kv command entry, now_ms 0; owned */
	size_t cmd_len;
};

struct pending_read {
	uint64_t cookie;
	uint64_t seq;
	uint64_t deadline;
	uint64_t next_try;
	uint64_t id;    /* LOCAL: raft read id */
	uint64_t index; /* READY: read point */
	uint64_t at_ms; /* READY: the leader's wall clock when it confirmed
			   the read point; expiry is judged at this time */
	uint8_t state;
	bool handed;
	uint32_t redirects;
	uint8_t *cmd;   /* argv as a kv command entry; owned */
	size_t cmd_len;
};

/* A follower's read the leader runs ReadIndex for. */
struct fwd_read {
	uint64_t id;
	raft_id from;
	uint64_t boot, seq;
};

/* A proposal waiting for the end of the loop turn (batching, below). */
struct turn_prop {
	raft_id from; /* 0: this node's own write; else a FWD_WRITE's sender */
	uint64_t boot, seq;
	size_t off;   /* the entry's bytes in turn_buf */
	uint32_t len;
};

struct expire_inflight {
	uint64_t index; /* proposed at */
	uint32_t key_len;
	uint8_t *key;   /* owned */
};

/* ---- snapshot state (the code is in the section before "lifecycle") ---- */

/* A durable snapshot of this node: the newest two (§1.4). */
struct snap_rec {
	uint64_t index, term, len;
	uint32_t crc;
};

enum { SOP_LOCAL_WRITE = 1, SOP_LOCAL_FINISH, SOP_RECV_WRITE, SOP_READ,
       SOP_RECV_FINISH, SOP_RESTORE_READ };

struct snap_op {
	uint8_t kind;
	uint32_t slot;  /* SOP_READ: sender slot */
	uint64_t xid;   /* SOP_READ: transfer; LOCAL/RECV: the staging's gen */
	uint32_t round;
	uint64_t offset;
	uint32_t len;
};

/* The local snapshot being written (§1.2 "Pipeline"). */
struct snap_out {
	bool live;
	bool finishing;      /* snap_finish issued */
	uint64_t gen;
	uint64_t index, term, total;
	uint64_t handle;
	struct kv_frozen *frozen;  /* NULL once every byte was produced */
	uint64_t issued;     /* Invariant: bytes handed to snap_write */
	uint32_t writes_out; /* Invariant: <= NODE_SNAP_MAX_WRITES */
	size_t pend;         /* produced bytes in snap_state.buf not yet
				handed to snap_write (the store was busy) */
	uint32_t crc;
	uint64_t timer;
	bool catchup;
	uint8_t *sess;       /* the session table's encoding at A; owned */
	struct node_snap_writer w;
};

/* The session table's bytes of a payload being read (a received or
 * restored snapshot): staged whole (at most NODE_SNAP_SESS_MAX), decoded
 * once the payload checks out. */
struct sess_stage {
	const struct keel_alloc *a;
	uint8_t *buf;
	size_t len, cap;
};

/* The staging of a received snapshot (§3.4). */
struct snap_recv {
	struct snapxfer_rx rx;  /* id 0: nothing staged */
	raft_id leader;
	uint64_t leader_term;   /* of the chunk that started the staging */
	uint64_t gen;
	uint64_t handle;
	uint64_t last_ns;
	bool verified;          /* CRC and decode passed: COMPLETE */
	int decode_err;
	struct kv_snap_reader *kvr;
	struct kv *shadow;      /* the decoded state, once verified */
	struct sess_stage sess;
	struct session_table *sess_shadow; /* ... and its sessions */
	struct node_snap_reader reader;
};

/* Start-up restore from the newest snapshot (§3.5). */
struct snap_restore {
	uint64_t index, term, len, offset;
	struct kv_snap_reader *kvr;
	struct sess_stage sess;
	struct node_snap_reader reader;
};

struct snap_state {
	struct snap_rec recs[2]; /* [0] newest; index 0 = none */
	uint64_t snap_from;      /* A of the newest snapshot begun or held */
	uint64_t bytes_since;    /* applied entry bytes since then */
	uint64_t next_gen;
	struct snap_out out;
	struct snap_recv recv;
	struct snap_restore *restore;
	uint64_t next_xid;
	struct snap_send sends[RAFT_MAX_VOTERS];
	uint8_t report[RAFT_MAX_VOTERS]; /* 0, 1 = ok, 2 = failed: due */
	struct snap_op *ops;     /* FIFO ring */
	uint32_t ops_head, ops_n, ops_cap;
	uint8_t *buf;            /* one writer step */
	struct raft_config_members rx_conf; /* peer_decode_msg's room */
};

struct node {
	struct node_config cfg;
	const struct env *env;
	const struct keel_alloc *alloc;
	struct raft *raft;
	/* The replicated state (sm.h): kv, the dedup window, sessions. */
	struct node_sm sm;
	struct peer_limits limits;
	uint64_t boot; /* random per start: tells this run's proposals apart */
	uint64_t stall_term; /* term in which a disk stall handed leadership on */
	uint64_t next_seq;  /* writes: the dedup window counts these */
	uint64_t next_rseq; /* reads (their own numbers: no dedup) */
	uint64_t next_read;
	uint64_t timer;
	uint64_t applied;
	bool poisoned; /* a store write failed or kv could not apply: stop */

	uint64_t writes_issued, writes_done;
	struct write_rec *wr; /* ring of issued, not completed writes */
	uint32_t wr_head, wr_n, wr_cap;

	struct held_frame *held; /* FIFO, wait_seq non-decreasing */
	uint32_t held_head, held_n, held_cap;

	struct pending_write *pw; /* [pw_lo, pw_hi) in seq order, see above */
	uint32_t pw_lo, pw_hi, pw_cap;
	uint32_t n_pw; /* live ones */
	struct pending_read *pr;
	uint32_t n_pr;
	struct fwd_read *fr;
	uint32_t n_fr;
	bool want_dispatch; /* something waits for a leader */
	bool window_blocked; /* a write waits for older ones (the window) */
	raft_id route_leader; /* the leader the last dispatch pass saw */

	struct expire_inflight *ex;
	uint32_t n_ex;
	uint64_t ex_term;


	struct kv_tape tape;
	uint8_t *enc;
	size_t enc_cap;
	uint8_t *buf; /* entry / frame body scratch */
	size_t buf_cap;
	const uint8_t **argv; /* decode scratch */
	size_t *lens;
	size_t argv_cap;
	struct raft_entry *dec;
	struct node_stats stats;

	/* Batching per loop turn (docs/architecture.md, decision 15): inputs
	 * from outside (requests, peer frames, store completions) only step
	 * the core; one process() for all of them runs from a 0-delay timer,
	 * so one raft_ready carries every proposal of the turn. */
	uint64_t flush_timer; /* armed while inputs wait for process(); 0 = none */
	uint32_t batch_requests; /* requests queued since the last process():
				    client writes and reads, FWD_WRITE/READ */
	/* The turn's proposals, stepped as ONE RAFT_EV_PROPOSE when the turn
	 * ends: the core broadcasts appends at each propose step, so one
	 * step is what makes one append message per peer. Invariant: at most
	 * NODE_TURN_MAX entries; empty outside an input's handling. */
	struct turn_prop *turn;
	struct raft_entry *turn_ents;
	uint32_t n_turn;
	uint8_t *turn_buf;
	size_t turn_len, turn_cap;
	/* Snapshots (docs/snapshots.md): NULL when the store has none of
	 * the snapshot operations. */
	struct snap_state *snap;
	bool restoring; /* kv streams in from the newest snapshot: serve
			   nothing, step nothing until it is in */
};

static inline void node_log(struct node *n, int level, const char *msg)
{
	if (n->env->log.ops && n->env->log.ops->log)
		n->env->log.ops->log(n->env->log.ctx, level, msg);
}

/* Node-level planted bugs (node.h); they exist only in KEEL_MUTANTS
 * builds, everywhere else the test is the constant false. */
#ifdef KEEL_MUTANTS
#define MUTANT(n, m) ((n)->cfg.mutant == (int)(m))
#else
#define MUTANT(n, m) false
#endif
/* The program-order fix undone: the simulator's mutant, or the server's
 * --test-bug no-order (a real process under fault tests). */
#define NO_ORDER(n) (MUTANT(n, NODE_MUTANT_NO_ORDER) || (n)->cfg.test_no_order)


static inline void *xmalloc(struct node *n, size_t sz)
{
	return n->alloc->malloc(n->alloc->ctx, sz);
}

static inline void xfree(struct node *n, void *p)
{
	n->alloc->free(n->alloc->ctx, p);
}

static inline int grow(struct node *n, uint8_t **p, size_t *cap, size_t need)
{
	if (need <= *cap)
		return 0;
	uint8_t *nb = n->alloc->realloc(n->alloc->ctx, *p, need);
	if (!nb)
		return KEEL_ERR_NOMEM;
	*p = nb;
	*cap = need;
	return 0;
}

static inline uint64_t now_ns(struct node *n)
{
	return n->env->clock.ops->now_ns(n->env->clock.ctx);
}

static inline uint64_t wall_ms(struct node *n)
{
	return n->env->clock.ops->wall_ms(n->env->clock.ctx);
}

static inline raft_id known_leader(struct node *n)
{
	struct raft_status st;
	raft_status(n->raft, &st);
	return st.leader;
}

/* ---- shared between the node files ---- */

/* node.c */
void node_answer(struct node *n, uint64_t cookie, int status, uint64_t index,
		 const uint8_t *tape, size_t tape_len);
void node_send_now(struct node *n, const struct raft_msg *m);
void *node_ring_grow(struct node *n, void *ring, uint32_t *cap, uint32_t *head,
		     uint32_t used, size_t elem, uint32_t first);
void node_hold_frame(struct node *n, raft_id to, const uint8_t *frame,
		     size_t len);
void node_hold(struct node *n, const struct raft_msg *m);
void node_send_fwd(struct node *n, raft_id to, const struct node_fwd *f);
void node_send_nack(struct node *n, raft_id to, uint8_t kind, uint64_t boot,
		    uint64_t seq, uint8_t reason);
int node_push_write_rec(struct node *n, struct write_rec rec);
void node_process(struct node *n);
void node_poison(struct node *n, const char *why);
void node_store_cb(void *arg, int status);

/* node_route.c */
int node_propose_argv(struct node *n, const struct node_entry_hdr *h,
		      uint32_t argc, const uint8_t *const *argv,
		      const size_t *lens, uint64_t *index);
void node_free_pw(struct node *n, uint32_t i);
void node_free_pr(struct node *n, uint32_t i);
int node_pw_find(struct node *n, uint64_t seq);
void node_answer_reads(struct node *n);
void node_take_reads(struct node *n, const struct raft_update *u);
void node_propose_turn(struct node *n);
void node_dispatch_waiting(struct node *n);
void node_expire_timeouts(struct node *n);
bool node_is_member(const struct node *n, raft_id id);
void node_on_fwd_frame(struct node *n, raft_id from, int type,
		       const uint8_t *body, size_t body_len);
int node_request_write(struct node *n, const struct node_request *req);
int node_request_read(struct node *n, const struct node_request *req);

/* node_apply.c */
void node_apply_entry(struct node *n, const struct raft_entry *e);

/* node_expire.c */
void node_expire_settled(struct node *n, uint64_t index);
void node_expire_tick(struct node *n);

/* node_snap.c */
void node_send_begin(struct node *n, const struct raft_msg *m);
void node_on_snap_ack(struct node *n, raft_id from, const uint8_t *body,
		      size_t len);
void node_on_snap_chunk(struct node *n, raft_id from, const uint8_t *body,
			size_t len);
void node_on_snap_msg(struct node *n, const struct raft_msg *m);
void node_install_snapshot(struct node *n, const struct raft_snapshot_meta *sm);
int node_restore_begin(struct node *n, const struct env_store_state *st);
void node_snap_tick(struct node *n);
int node_snap_create(struct node *n);
void node_snap_destroy(struct node *n);

/* node_route.c: argv as a stamped kv command entry at n->buf + off. */
int node_build_kv_at(struct node *n, size_t off, uint64_t now, uint32_t argc,
		     const uint8_t *const *argv, const size_t *lens,
		     size_t *len);

/* node_session.c */
/* NODE_ENTRY_SESSION for KEEL.SESSION, NODE_ENTRY_SESSION_CMD for
 * KEEL.RUN (any case), else 0. */
int node_session_cmd(const uint8_t *name, size_t len);
/* A session command's syntax: NULL if good, else the error reply. */
const char *node_session_validate(uint32_t argc, const uint8_t *const *argv,
				  const size_t *lens);
/* The entry body of a validated session command at n->buf + off. */
int node_session_build(struct node *n, size_t off, uint64_t now, uint8_t type,
		       uint32_t argc, const uint8_t *const *argv,
		       const size_t *lens, size_t *len);

#endif /* KEEL_NODE_INTERNAL_H */
