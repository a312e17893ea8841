/*
 * node.c -- one replica: drives the Raft core with ticks, peer frames,
 * client requests and store completions, handles each update in the fixed
 * order persist -> send -> apply -> answer (see node.h), hosts the kv state
 * machine and forwards client requests between replicas.
 *
 * Messages that depend on unsynced state (raft_update.msgs_after_persist:
 * votes, append acknowledgements) are encoded at once (the update is
 * borrowed) and held until the store has completed every write issued up
 * to that update; completions are FIFO, so "held until writes_done >=
 * wait_seq" is exactly that rule (§3.8: persistent state is updated on
 * stable storage before responding to RPCs).
 *
 * Requests. Every client request gets a seq (per boot). A write's log
 * entry carries (origin, boot, seq) in a node header (fwd.h) in front of
 * the kv command entry; every replica applies it and the origin, finding
 * its own pending write by seq, answers from the reply tape it recorded.
 * A write is in one of three modes:
 *   WAIT  no leader known yet: waits (up to the timeout) for one;
 *   LOCAL proposed once by this node as leader at a known index: if
 *         another entry is applied at that index the write lost its slot
 *         and is definitely not executed (NODE_DROPPED);
 *   FWD   sent to a leader as FWD_WRITE, resent every retry_ns until an
 *         ACK: copies may reach the log more than once (retries, duplicated
 *         frames, a new leader), so it can only end executed (the first
 *         copy applied) or unknown (timeout).
 * The dedup window (below) makes every copy after the first a no-op.
 *
 * Everything outside goes through env.h: this file includes no POSIX,
 * libuv or stdio header and holds no global state.
 */
#include <string.h>

#include "keel/env.h"
#include "keel/kv.h"
#include "keel/node.h"
#include "keel/peer.h"
#include "keel/raft.h"
#include "node/fwd.h"
#include "node/nodesnap.h"
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
	struct node_snap_writer w;
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
	struct node_snap_reader reader;
};

/* Start-up restore from the newest snapshot (§3.5). */
struct snap_restore {
	uint64_t index, term, len, offset;
	struct kv_snap_reader *kvr;
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
	struct kv *kv;
	struct peer_limits limits;
	uint64_t boot; /* random per start: tells this run's proposals apart */
	uint64_t stall_term; /* term in which a disk stall handed leadership on */
	uint64_t next_seq;
	uint64_t next_read;
	uint64_t timer;
	uint64_t applied;
	/* The newest leader stamp (kv entry now_ms) among the entries this
	 * node applied, kept monotone: the time its state is the leader's
	 * state at. READONLY reads on a non-leader are judged at it (docs/
	 * kv.md "TTL and expiry design"). 0 until an entry is applied. */
	uint64_t applied_ms;
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
	raft_id route_leader; /* the leader the last dispatch pass saw */

	struct expire_inflight *ex;
	uint32_t n_ex;
	uint64_t ex_term;

	struct node_dedup_rec dedup[DEDUP_RECS];

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

static void node_log(struct node *n, int level, const char *msg)
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

const char *node_status_name(int status)
{
	switch (status) {
	case NODE_OK:
		return "OK";
	case NODE_NOT_LEADER:
		return "NOT_LEADER";
	case NODE_DROPPED:
		return "DROPPED";
	case NODE_UNKNOWN:
		return "UNKNOWN";
	default:
		return "?";
	}
}

static void *xmalloc(struct node *n, size_t sz)
{
	return n->alloc->malloc(n->alloc->ctx, sz);
}

static void xfree(struct node *n, void *p)
{
	n->alloc->free(n->alloc->ctx, p);
}

static int grow(struct node *n, uint8_t **p, size_t *cap, size_t need)
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

static uint64_t now_ns(struct node *n)
{
	return n->env->clock.ops->now_ns(n->env->clock.ctx);
}

static uint64_t wall_ms(struct node *n)
{
	return n->env->clock.ops->wall_ms(n->env->clock.ctx);
}

static raft_id known_leader(struct node *n)
{
	struct raft_status st;
	raft_status(n->raft, &st);
	return st.leader;
}

/* ---- answering clients --------------------------------------------------- */

static void answer(struct node *n, uint64_t cookie, int status,
		   uint64_t index, const uint8_t *tape, size_t tape_len)
{
	struct node_reply r = {.cookie = cookie,
			       .status = status,
			       .index = index,
			       .tape = tape,
			       .tape_len = tape_len};
	r.leader_hint = known_leader(n);
	n->cfg.reply(n->cfg.reply_ctx, &r);
}

/* ---- network ------------------------------------------------------------- */

/* Encodes m into n->enc; returns the frame length or 0 on failure. */
static size_t encode(struct node *n, const struct raft_msg *m)
{
	size_t need = peer_frame_size(m);
	if (need == SIZE_MAX || grow(n, &n->enc, &n->enc_cap, need))
		return 0;
	size_t w = 0;
	if (peer_encode(m, n->cfg.cluster_id, n->enc, n->enc_cap, &w))
		return 0;
	return w;
}

static void send_now(struct node *n, const struct raft_msg *m)
{
	size_t len = encode(n, m);
	if (!len) {
		node_log(n, ENV_LOG_ERROR, "cannot encode a peer message");
		return;
	}
	n->stats.frames_out++;
	n->env->net.ops->send(n->env->net.ctx, m->to, n->enc, len);
}

/* The node's FIFO rings (held frames, write records, snapshot store
 * operations) grow the same way: double (or start at `first` slots) and
 * move the `used` slots from `*head` to the front. Returns the new array
 * (the old one is freed; *cap and *head updated), or NULL with nothing
 * changed. */
static void *ring_grow(struct node *n, void *ring, uint32_t *cap,
		       uint32_t *head, uint32_t used, size_t elem,
		       uint32_t first)
{
	uint32_t ncap = *cap ? *cap * 2 : first;
	uint8_t *nr = xmalloc(n, (size_t)ncap * elem);
	if (!nr)
		return NULL;
	const uint8_t *old = ring;
	for (uint32_t i = 0; i < used; i++)
		memcpy(nr + (size_t)i * elem,
		       old + (size_t)((*head + i) % *cap) * elem, elem);
	xfree(n, ring);
	*cap = ncap;
	*head = 0;
	return nr;
}

/* Holds frame[0..len) (copied) for `to` until every write issued so far
 * is durable. */
static void hold_frame(struct node *n, raft_id to, const uint8_t *frame,
		       size_t len)
{
	if (n->held_n == n->held_cap) {
		struct held_frame *nh =
			ring_grow(n, n->held, &n->held_cap, &n->held_head,
				  n->held_n, sizeof(*nh), 16);
		if (!nh)
			return; /* a lost message: Raft retransmits */
		n->held = nh;
	}
	uint8_t *copy = xmalloc(n, len);
	if (!copy)
		return;
	memcpy(copy, frame, len);
	struct held_frame *h = &n->held[(n->held_head + n->held_n) % n->held_cap];
	h->wait_seq = n->writes_issued;
	h->to = to;
	h->len = (uint32_t)len;
	h->buf = copy;
	n->held_n++;
}

static void hold(struct node *n, const struct raft_msg *m)
{
	size_t len = encode(n, m);
	if (len)
		hold_frame(n, m->to, n->enc, len);
}

static void release_held(struct node *n)
{
	while (n->held_n) {
		struct held_frame *h = &n->held[n->held_head];
		if (h->wait_seq > n->writes_done)
			break;
		n->stats.frames_out++;
		n->env->net.ops->send(n->env->net.ctx, h->to, h->buf, h->len);
		xfree(n, h->buf);
		n->held_head = (n->held_head + 1) % n->held_cap;
		n->held_n--;
	}
}

/* Sends a forwarding frame to `to` (best effort, like every frame). */
static void send_fwd(struct node *n, raft_id to, const struct node_fwd *f)
{
	size_t body = node_fwd_size(f);
	size_t frame = body + PEER_MIN_FRAME_SIZE;
	if (grow(n, &n->buf, &n->buf_cap, body) ||
	    grow(n, &n->enc, &n->enc_cap, frame))
		return; /* lost, as the network may lose it */
	node_fwd_encode(f, n->buf);
	size_t w = 0;
	if (peer_encode_frame(f->type, n->cfg.cluster_id, n->cfg.id, n->buf,
			      body, n->enc, n->enc_cap, &w))
		return;
	n->stats.frames_out++;
	n->env->net.ops->send(n->env->net.ctx, to, n->enc, w);
}

static void send_nack(struct node *n, raft_id to, uint8_t kind,
		      uint64_t boot, uint64_t seq, uint8_t reason)
{
	struct node_fwd f = {.type = PEER_TYPE_FWD_NACK,
			     .boot = boot,
			     .seq = seq,
			     .kind = kind,
			     .reason = reason,
			     .hint = known_leader(n)};
	n->stats.fwd_nacks_sent++;
	send_fwd(n, to, &f);
}

/* ---- persistence ---------------------------------------------------------- */

static void store_cb(void *arg, int status);
static void poison(struct node *n, const char *why);

static int push_write_rec(struct node *n, struct write_rec rec)
{
	if (n->wr_n == n->wr_cap) {
		struct write_rec *nw = ring_grow(n, n->wr, &n->wr_cap,
						 &n->wr_head, n->wr_n,
						 sizeof(*nw), 16);
		if (!nw)
			return KEEL_ERR_NOMEM;
		n->wr = nw;
	}
	n->wr[(n->wr_head + n->wr_n) % n->wr_cap] = rec;
	n->wr_n++;
	return 0;
}

static void persist(struct node *n, const struct raft_update *u)
{
	struct env_store_write w = {0};
	if (u->n_entries) {
		w.truncate_from = u->entries[0].index;
		w.n_entries = u->n_entries;
		w.entries = u->entries;
	}
	w.has_hard_state = u->hard_state_changed;
	w.hard_state = u->hard_state;
	struct write_rec rec = {.issued_ns = now_ns(n)};
	if (u->n_entries) {
		rec.last_index = u->entries[u->n_entries - 1].index;
		rec.last_term = u->entries[u->n_entries - 1].term;
	}
	int rv = push_write_rec(n, rec);
	if (!rv)
		rv = n->env->store.ops->append(n->env->store.ctx, &w, store_cb,
					       n);
	if (rv) {
		/* Nothing may be acknowledged from now on. */
		poison(n, "log store write failed: stopping");
		return;
	}
	n->writes_issued++;
	n->stats.writes_issued++;
}

/* ---- command bytes ---------------------------------------------------------- */

/* Decodes a kv command entry into n->argv / n->lens (grown as needed; the
 * pointers go into buf). 0, or the decoder's error / KEEL_ERR_NOMEM. */
static int decode_cmd(struct node *n, const uint8_t *buf, size_t len,
		      uint64_t *now, uint32_t *argc)
{
	for (int pass = 0; pass < 2; pass++) {
		int rv = kv_cmd_decode(buf, len, now, argc, n->argv, n->lens,
				       n->argv_cap);
		if (rv != KEEL_ERR_NOSPACE)
			return rv;
		/* Every argument costs at least its 4-byte length, so a valid
		 * argc is capped by the bytes before we allocate for it. */
		if (*argc > len / 4 || pass)
			return KEEL_ERR_MALFORMED;
		const uint8_t **na = n->alloc->realloc(
			n->alloc->ctx, n->argv, *argc * sizeof(*na));
		if (!na)
			return KEEL_ERR_NOMEM;
		n->argv = na;
		size_t *nl = n->alloc->realloc(n->alloc->ctx, n->lens,
					       *argc * sizeof(*nl));
		if (!nl)
			return KEEL_ERR_NOMEM;
		n->lens = nl;
		n->argv_cap = *argc;
	}
	return KEEL_ERR_MALFORMED;
}

/* argv as an unstamped kv command entry, in a new allocation. */
static int copy_cmd(struct node *n, const struct node_request *req,
		    uint8_t **out, size_t *out_len)
{
	size_t sz = kv_cmd_encoded_size((int)req->argc, req->lens);
	if (!sz)
		return KEEL_ERR_TOO_BIG;
	uint8_t *b = xmalloc(n, sz);
	if (!b)
		return KEEL_ERR_NOMEM;
	int rv = kv_cmd_encode(0, (int)req->argc, req->argv, req->lens, b, sz,
			       out_len);
	if (rv) {
		xfree(n, b);
		return rv;
	}
	*out = b;
	return 0;
}

/*
 * A leader's log entry: the command (argv) stamped with this node's wall
 * clock, relative TTLs made absolute, behind a node header, built into
 * n->buf (*out_len bytes). Returns 0, KEEL_ERR_TOO_BIG or KEEL_ERR_NOMEM.
 */
static int build_entry(struct node *n, const struct node_entry_hdr *h,
		       uint32_t argc, const uint8_t *const *argv,
		       const size_t *lens, size_t *out_len)
{
	uint64_t now = wall_ms(n);
	const struct kv_command *kc = kv_command_lookup(argv[0], lens[0]);
	size_t len = 0;
	uint8_t *rewritten = NULL;
	int rv;
	if (kc && (kc->flags & KV_CMD_REWRITE)) {
		rv = kv_rewrite_relative(n->alloc, now, (int)argc, argv, lens,
					 &rewritten, &len);
		if (rv)
			return rv;
		rv = grow(n, &n->buf, &n->buf_cap, NODE_ENTRY_HEADER + len);
		if (!rv)
			memcpy(n->buf + NODE_ENTRY_HEADER, rewritten, len);
		xfree(n, rewritten);
	} else {
		size_t sz = kv_cmd_encoded_size((int)argc, lens);
		if (!sz)
			return KEEL_ERR_TOO_BIG;
		rv = grow(n, &n->buf, &n->buf_cap, NODE_ENTRY_HEADER + sz);
		if (!rv)
			rv = kv_cmd_encode(now, (int)argc, argv, lens,
					   n->buf + NODE_ENTRY_HEADER, sz, &len);
	}
	if (rv)
		return rv;
	if (NODE_ENTRY_HEADER + len > UINT32_MAX)
		return KEEL_ERR_TOO_BIG;
	node_entry_hdr_put(n->buf, h);
	*out_len = NODE_ENTRY_HEADER + len;
	return 0;
}

/* Steps one entry into the core at once. Returns 0 and *index (where it
 * went), or the core's error (KEEL_ERR_NOT_LEADER, KEEL_ERR_TRANSFER,
 * KEEL_ERR_BUSY, KEEL_ERR_NOMEM). */
static int propose_one(struct node *n, const uint8_t *data, size_t len,
		       uint64_t *index)
{
	struct raft_entry e = {.type = RAFT_ENTRY_NORMAL,
			       .len = (uint32_t)len,
			       .data = data};
	struct raft_event ev = {.type = RAFT_EV_PROPOSE,
				.propose = {.n = 1, .entries = &e}};
	int rv = raft_step(n->raft, &ev);
	if (rv)
		return rv;
	struct raft_status st;
	raft_status(n->raft, &st);
	*index = st.last_index;
	return 0;
}

/* The leader's proposal step for argv, at once (expiry deletes). */
static int propose_argv(struct node *n, const struct node_entry_hdr *h,
			uint32_t argc, const uint8_t *const *argv,
			const size_t *lens, uint64_t *index)
{
	size_t len = 0;
	int rv = build_entry(n, h, argc, argv, lens, &len);
	if (rv)
		return rv;
	return propose_one(n, n->buf, len, index);
}

/* ---- the dedup window (replicated state) ---------------------------------- */

enum { DEDUP_RUN, DEDUP_DUP, DEDUP_STALE, DEDUP_ORDER };

static bool dedup_bit(const struct node_dedup_rec *r, uint64_t seq)
{
	uint64_t b = seq % DEDUP_WINDOW;
	return (r->bits[b / 64] >> (b % 64)) & 1u;
}

static void dedup_set(struct node_dedup_rec *r, uint64_t seq)
{
	uint64_t b = seq % DEDUP_WINDOW;
	r->bits[b / 64] |= (uint64_t)1 << (b % 64);
}

static void dedup_clear(struct node_dedup_rec *r, uint64_t seq)
{
	uint64_t b = seq % DEDUP_WINDOW;
	r->bits[b / 64] &= ~((uint64_t)1 << (b % 64));
}

static struct node_dedup_stream *stream_find(struct node_dedup_rec *r,
					     uint64_t id)
{
	for (uint32_t k = 0; k < NODE_DEDUP_STREAMS; k++)
		if (r->streams[k].id == id)
			return &r->streams[k];
	return NULL;
}

/* Program order (decision 16): a seq of a stream below that stream's
 * highest applied seq came after a later write of it ran. A stream pushed
 * out of the table is judged by the floor its push raised. */
static bool stream_overtaken(struct node_dedup_rec *r, uint64_t stream,
			     uint64_t seq)
{
	struct node_dedup_stream *st = stream_find(r, stream);
	return st ? seq < st->hw : seq < r->stream_floor;
}

/* Records seq as the stream's newest applied write. A full table pushes
 * out the stream with the oldest hw (ties: the smaller id), whose hw
 * becomes the floor: deterministic, a function of the applied log. */
static void stream_note(struct node_dedup_rec *r, uint64_t stream,
			uint64_t seq)
{
	struct node_dedup_stream *st = stream_find(r, stream);
	if (!st) {
		st = stream_find(r, 0);
		if (!st) {
			st = &r->streams[0];
			for (uint32_t k = 1; k < NODE_DEDUP_STREAMS; k++) {
				struct node_dedup_stream *c = &r->streams[k];
				if (c->hw < st->hw ||
				    (c->hw == st->hw && c->id < st->id))
					st = c;
			}
			if (st->hw > r->stream_floor)
				r->stream_floor = st->hw;
		}
		st->id = stream;
		st->hw = 0;
	}
	if (seq > st->hw)
		st->hw = seq;
}

/* Decides whether entry (origin, boot, seq, stream) at index executes,
 * and records it. Deterministic: depends only on the entries applied
 * before it. */
static int dedup_admit(struct node *n, const struct node_entry_hdr *h,
		       uint64_t index)
{
	struct node_dedup_rec *rec = NULL, *victim = NULL, *oldest_own = NULL;
	uint32_t own = 0;
	for (uint32_t i = 0; i < DEDUP_RECS; i++) {
		struct node_dedup_rec *r = &n->dedup[i];
		if (r->origin == h->origin && r->boot == h->boot) {
			rec = r;
			break;
		}
		if (r->origin == h->origin) {
			own++;
			if (!oldest_own || r->last_index < oldest_own->last_index)
				oldest_own = r;
		}
		if (!victim || !r->origin ||
		    (victim->origin && r->last_index < victim->last_index))
			victim = r;
	}
	if (!rec) {
		rec = own >= DEDUP_BOOTS ? oldest_own : victim;
		memset(rec, 0, sizeof(*rec));
		rec->origin = h->origin;
		rec->boot = h->boot;
		rec->high = h->seq;
		rec->last_index = index;
		dedup_set(rec, h->seq);
		if (h->stream)
			stream_note(rec, h->stream, h->seq);
		return DEDUP_RUN;
	}
	rec->last_index = index;
	if (h->seq <= rec->high) {
		if (rec->high - h->seq >= DEDUP_WINDOW)
			return DEDUP_STALE;
		if (dedup_bit(rec, h->seq) && !MUTANT(n, NODE_MUTANT_NO_DEDUP))
			return DEDUP_DUP;
		if (h->stream && stream_overtaken(rec, h->stream, h->seq) &&
		    !MUTANT(n, NODE_MUTANT_NO_ORDER))
			return DEDUP_ORDER;
	} else {
		if (h->seq - rec->high >= DEDUP_WINDOW)
			memset(rec->bits, 0, sizeof(rec->bits));
		else
			for (uint64_t s = rec->high + 1; s < h->seq; s++)
				dedup_clear(rec, s);
		rec->high = h->seq;
	}
	dedup_set(rec, h->seq);
	if (h->stream)
		stream_note(rec, h->stream, h->seq);
	return DEDUP_RUN;
}

/* ---- applying ------------------------------------------------------------- */

static void discard_status(void *ctx, const char *s)
{
	(void)ctx;
	(void)s;
}
static void discard_int(void *ctx, int64_t v)
{
	(void)ctx;
	(void)v;
}
static void discard_bulk(void *ctx, const uint8_t *p, size_t len)
{
	(void)ctx;
	(void)p;
	(void)len;
}
static void discard_null(void *ctx)
{
	(void)ctx;
}
static void discard_array(void *ctx, size_t k)
{
	(void)ctx;
	(void)k;
}
/* Replies nobody here waits for (other origins' entries, internal ones). */
static const struct kv_reply_ops discard_ops = {
	discard_status, discard_status, discard_int,
	discard_bulk,   discard_null,   discard_array};

static void free_pw(struct node *n, uint32_t i)
{
	KEEL_ASSERT(i >= n->pw_lo && i < n->pw_hi && !n->pw[i].dead);
	xfree(n, n->pw[i].cmd);
	n->pw[i].cmd = NULL;
	n->pw[i].dead = true;
	n->n_pw--;
	while (n->pw_lo < n->pw_hi && n->pw[n->pw_lo].dead)
		n->pw_lo++;
	if (n->pw_lo == n->pw_hi)
		n->pw_lo = n->pw_hi = 0;
}

/* Appends p (its seq above every pending one). The array holds twice
 * max_pending, so compaction runs at most once per max_pending appends. */
static uint32_t push_pw(struct node *n, const struct pending_write *p)
{
	KEEL_ASSERT(n->n_pw < n->cfg.max_pending);
	if (n->pw_hi == n->pw_cap) {
		uint32_t k = 0;
		for (uint32_t i = n->pw_lo; i < n->pw_hi; i++)
			if (!n->pw[i].dead)
				n->pw[k++] = n->pw[i];
		n->pw_lo = 0;
		n->pw_hi = k;
	}
	KEEL_ASSERT(n->pw_hi == n->pw_lo ||
		    n->pw[n->pw_hi - 1].seq < p->seq);
	n->pw[n->pw_hi] = *p;
	n->n_pw++;
	return n->pw_hi++;
}

static void free_pr(struct node *n, uint32_t i)
{
	xfree(n, n->pr[i].cmd);
	n->pr[i] = n->pr[--n->n_pr];
}

static int pw_find(struct node *n, uint64_t seq)
{
	uint32_t lo = n->pw_lo, hi = n->pw_hi;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (n->pw[mid].seq < seq)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < n->pw_hi && n->pw[lo].seq == seq && !n->pw[lo].dead
		       ? (int)lo : -1;
}

static int pr_find(struct node *n, uint64_t seq)
{
	for (uint32_t i = 0; i < n->n_pr; i++)
		if (n->pr[i].seq == seq)
			return (int)i;
	return -1;
}

/* Serves read i (its point is applied) and removes it. Its time is the
 * leader's, taken when the read point was confirmed (p.at_ms): on a
 * follower its own clock would show a key the leader already counts as
 * expired (clock behind) or hide one the leader still serves (ahead). */
static void serve_read(struct node *n, uint32_t i)
{
	struct pending_read p = n->pr[i];
	n->pr[i] = n->pr[--n->n_pr];
	uint64_t ignored;
	uint32_t argc = 0;
	int rv = decode_cmd(n, p.cmd, p.cmd_len, &ignored, &argc);
	if (rv) {
		answer(n, p.cookie, NODE_DROPPED, 0, NULL, 0);
	} else {
		kv_tape_reset(&n->tape);
		kv_read(n->kv, (int)argc, n->argv, n->lens, p.at_ms,
			&kv_tape_ops, &n->tape);
		if (n->tape.failed)
			answer(n, p.cookie, NODE_DROPPED, 0, NULL, 0);
		else
			answer(n, p.cookie, NODE_OK, p.index, n->tape.buf,
			       n->tape.len);
	}
	xfree(n, p.cmd);
}

static void answer_reads(struct node *n)
{
	for (uint32_t i = 0; i < n->n_pr;) {
		struct pending_read *p = &n->pr[i];
		if (p->state == R_READY && n->applied >= p->index)
			serve_read(n, i);
		else
			i++;
	}
}

static void expire_settled(struct node *n, uint64_t index)
{
	for (uint32_t i = 0; i < n->n_ex;) {
		if (n->ex[i].index <= index) {
			xfree(n, n->ex[i].key);
			n->ex[i] = n->ex[--n->n_ex];
		} else {
			i++;
		}
	}
}

/* Writes of ours proposed once at an index another entry now holds. */
static void settle_lost_slots(struct node *n, uint64_t index,
			      uint64_t keep_seq)
{
	for (uint32_t i = n->pw_lo; i < n->pw_hi; i++) {
		struct pending_write *p = &n->pw[i];
		if (!p->dead && p->seq != keep_seq && p->mode == W_LOCAL &&
		    p->index <= index) {
			uint64_t cookie = p->cookie;
			free_pw(n, i);
			answer(n, cookie, NODE_DROPPED, 0, NULL, 0);
		}
	}
}

static void apply_entry(struct node *n, const struct raft_entry *e)
{
	if (n->poisoned)
		return;
	if (n->cfg.observer.apply)
		n->cfg.observer.apply(n->cfg.observer.ctx, n->cfg.id, e);
	n->applied = e->index;
	n->stats.applied++;
	if (n->snap)
		n->snap->bytes_since += e->len;
	if (n->n_ex)
		expire_settled(n, e->index);
	struct node_entry_hdr h;
	const uint8_t *cmd;
	size_t cmd_len;
	if (e->type != RAFT_ENTRY_NORMAL) {
		settle_lost_slots(n, e->index, 0);
		return;
	}
	if (node_entry_hdr_get(e->data, e->len, &h, &cmd, &cmd_len)) {
		/* The same bytes on every replica: all skip it alike. */
		node_log(n, ENV_LOG_ERROR, "undecodable log entry skipped");
		settle_lost_slots(n, e->index, 0);
		return;
	}
	/* The leader's stamp (kv.h: u8 version, u64 now_ms, ...); a
	 * malformed command has none and kv_apply answers it an error. */
	if (cmd_len >= KV_CMD_HEADER_BYTES && cmd[0] == KV_CMD_VERSION) {
		uint64_t stamp = keel_get_u64(cmd + 1);
		if (stamp > n->applied_ms)
			n->applied_ms = stamp;
	}
	int verdict = h.origin ? dedup_admit(n, &h, e->index) : DEDUP_RUN;
	bool mine = h.origin == n->cfg.id && h.boot == n->boot &&
		    pw_find(n, h.seq) >= 0;
	uint64_t keep = mine ? h.seq : 0;
	if (verdict != DEDUP_RUN) {
		if (verdict == DEDUP_ORDER)
			n->stats.order_refused++;
		else
			n->stats.dedup_skipped++;
		settle_lost_slots(n, e->index, keep);
		if (mine) {
			/* Not executed here, and no earlier copy ran (it would
			 * have answered; an overtaken one never runs):
			 * definitely not executed. */
			int i = pw_find(n, h.seq);
			uint64_t cookie = n->pw[i].cookie;
			free_pw(n, (uint32_t)i);
			answer(n, cookie, NODE_DROPPED, 0, NULL, 0);
		}
		return;
	}
	kv_tape_reset(&n->tape);
	int rv = kv_apply(n->kv, e->index, cmd, cmd_len,
			  mine ? &kv_tape_ops : &discard_ops, &n->tape);
	if (rv) {
		/* A replica that cannot apply a committed entry cannot go on:
		 * its state would diverge. Stop; recovery is a restart. */
		poison(n, "cannot apply a committed entry (out of memory): "
			  "stopping");
		return;
	}
	settle_lost_slots(n, e->index, keep);
	if (mine) {
		/* It may have moved: settle_lost_slots compacts. */
		int i = pw_find(n, h.seq);
		KEEL_ASSERT(i >= 0);
		uint64_t cookie = n->pw[i].cookie;
		free_pw(n, (uint32_t)i);
		if (n->tape.failed) /* ran, but the reply is lost */
			answer(n, cookie, NODE_UNKNOWN, e->index, NULL, 0);
		else
			answer(n, cookie, NODE_OK, e->index, n->tape.buf,
			       n->tape.len);
	}
}

static void take_reads(struct node *n, const struct raft_update *u)
{
	for (uint32_t k = 0; k < u->n_reads; k++) {
		const struct raft_read *rd = &u->reads[k];
		bool found = false;
		for (uint32_t i = 0; i < n->n_pr; i++) {
			struct pending_read *p = &n->pr[i];
			if (p->state != R_LOCAL || p->id != rd->id)
				continue;
			found = true;
			if (rd->status == RAFT_READ_OK) {
				p->state = R_READY;
				p->index = rd->index;
				p->at_ms = wall_ms(n); /* ours: we lead */
			} else {
				uint64_t cookie = p->cookie;
				free_pr(n, i);
				answer(n, cookie, NODE_DROPPED, 0, NULL, 0);
			}
			break;
		}
		for (uint32_t i = 0; !found && i < n->n_fr; i++) {
			struct fwd_read *f = &n->fr[i];
			if (f->id != rd->id)
				continue;
			struct fwd_read fr = *f;
			n->fr[i] = n->fr[--n->n_fr];
			if (rd->status == RAFT_READ_OK) {
				struct node_fwd m = {.type = PEER_TYPE_FWD_READ_OK,
						     .boot = fr.boot,
						     .seq = fr.seq,
						     .index = rd->index,
						     .ms = wall_ms(n)};
				send_fwd(n, fr.from, &m);
			} else {
				send_nack(n, fr.from, NODE_FWD_KIND_READ,
					  fr.boot, fr.seq, NODE_FWD_NOT_LEADER);
			}
			break;
		}
	}
}

/* ---- the update loop -------------------------------------------------------- */

static void dispatch_waiting(struct node *n);
static void propose_turn(struct node *n);
/* Snapshots (the section before "lifecycle"). */
static void send_begin(struct node *n, const struct raft_msg *m);
static void install_snapshot(struct node *n,
			     const struct raft_snapshot_meta *sm);
static void snap_tick(struct node *n);
static void on_snap_chunk(struct node *n, raft_id from, const uint8_t *body,
			  size_t len);
static void on_snap_ack(struct node *n, raft_id from, const uint8_t *body,
			size_t len);
static void on_snap_msg(struct node *n, const struct raft_msg *m);

static void process(struct node *n)
{
	if (n->batch_requests) {
		/* Everything stepped since the last run shares this one. */
		n->stats.batch_runs++;
		n->stats.batched_requests += n->batch_requests;
		if (n->batch_requests > n->stats.batch_max)
			n->stats.batch_max = n->batch_requests;
		n->batch_requests = 0;
	}
	for (int round = 0; round < NODE_PROCESS_ROUNDS && !n->poisoned;
	     round++) {
		/* The turn's proposals (and those dispatch_waiting queued
		 * last round) go in as one step. */
		propose_turn(n);
		struct raft_update u;
		if (!raft_ready(n->raft, &u)) {
			/* A leader became known: hand on what waits for one
			 * (this may propose, so go round again). */
			if (n->want_dispatch && known_leader(n) != RAFT_NONE) {
				dispatch_waiting(n);
				continue;
			}
			/* A read point can arrive without any update (a
			 * leader's FWD_READ_OK for an index already applied):
			 * serve it now, not at the next heartbeat. */
			if (n->n_pr)
				answer_reads(n);
			return;
		}
		if (n->cfg.observer.update)
			n->cfg.observer.update(n->cfg.observer.ctx, n->cfg.id,
					       &u);
		/* 0. a received snapshot first: snap_finish(RECEIVED) is
		 * issued before this update's append (raft.h contract) */
		if (u.snapshot)
			install_snapshot(n, u.snapshot);
		if (n->poisoned)
			return;
		/* 1. persist */
		if (u.n_entries || u.hard_state_changed)
			persist(n, &u);
		/* A write refused at once poisons the node: nothing of this
		 * update may leave, least of all msgs_after_persist (the
		 * "all writes done" test below would pass them). */
		if (n->poisoned)
			return;
		/* 2. send */
		for (uint32_t i = 0; i < u.n_msgs; i++) {
			if (u.msgs[i].type == RAFT_MSG_SNAPSHOT)
				send_begin(n, &u.msgs[i]); /* §3.3 */
			else
				send_now(n, &u.msgs[i]);
		}
		for (uint32_t i = 0; i < u.n_msgs_after_persist; i++) {
			if (n->writes_done == n->writes_issued ||
			    MUTANT(n, NODE_MUTANT_SEND_BEFORE_PERSIST))
				send_now(n, &u.msgs_after_persist[i]);
			else
				hold(n, &u.msgs_after_persist[i]);
		}
		/* 3. apply (and 4. answer each write as it applies) */
		if (MUTANT(n, NODE_MUTANT_APPLY_UNCOMMITTED)) {
			for (uint32_t i = 0; i < u.n_entries; i++)
				if (u.entries[i].index > n->applied)
					apply_entry(n, &u.entries[i]);
		} else {
			for (uint32_t i = 0; i < u.n_committed; i++)
				apply_entry(n, &u.committed[i]);
		}
		take_reads(n, &u);
		raft_advance(n->raft, &u);
		/* 4. answer reads whose point is now applied */
		if (n->n_pr)
			answer_reads(n);
	}
	KEEL_ASSERT(n->poisoned || !"node: update loop did not settle");
}

/* The node stops for good: every waiting client gets its final answer. */
static void poison(struct node *n, const char *why)
{
	if (n->poisoned)
		return;
	n->poisoned = true;
	node_log(n, ENV_LOG_ERROR, why);
	/* Queued proposals were never stepped: their writes are answered
	 * below as not handed on (DROPPED), FWD_WRITEs time out at origin. */
	n->n_turn = 0;
	n->turn_len = 0;
	for (uint32_t i = n->pw_lo; i < n->pw_hi; i++) {
		if (n->pw[i].dead)
			continue;
		struct pending_write p = n->pw[i];
		free_pw(n, i);
		answer(n, p.cookie, p.handed ? NODE_UNKNOWN : NODE_DROPPED, 0,
		       NULL, 0);
	}
	while (n->n_pr) {
		uint64_t cookie = n->pr[n->n_pr - 1].cookie;
		free_pr(n, n->n_pr - 1);
		answer(n, cookie, NODE_DROPPED, 0, NULL, 0);
	}
}

/* ---- batching per loop turn ------------------------------------------------ */

static void flush_cb(void *arg)
{
	struct node *n = arg;
	n->flush_timer = 0;
	if (!n->poisoned)
		process(n);
}

/*
 * An input has stepped the core (a proposal, a received frame, a
 * completed write): run process() once for everything of this loop turn
 * instead of once per input, so N requests share one raft_ready, one store
 * write and one append message per peer. The 0-delay timer runs after the
 * inputs already due -- in the server after the libuv poll phase's
 * callbacks, in the simulator after the events queued for the same instant
 * -- and never from inside a node call (env.h), so both environments batch
 * the same way and neither needs to call the node back. Whatever runs
 * process() first (a tick) takes the batch with it; the timer then finds
 * nothing to do. Without a timer the input is processed at once: no
 * batching, never a stall.
 */
static void defer_process(struct node *n)
{
	if (n->poisoned || n->flush_timer)
		return;
	n->flush_timer = n->env->clock.ops->timer_start(n->env->clock.ctx, 0,
							flush_cb, n);
	if (!n->flush_timer)
		process(n);
}

/* Proposing is allowed now? 0, KEEL_ERR_NOT_LEADER or KEEL_ERR_TRANSFER
 * (the checks the core's propose step makes first). */
static int can_propose(struct node *n, uint64_t *term)
{
	struct raft_status st;
	raft_status(n->raft, &st);
	*term = st.term;
	if (st.role != RAFT_LEADER)
		return KEEL_ERR_NOT_LEADER;
	if (st.transferee != RAFT_NONE)
		return KEEL_ERR_TRANSFER;
	return 0;
}

/*
 * Queues argv as a proposal of this turn (from: 0 for this node's own
 * write, else the FWD_WRITE's sender). The entry is built (stamped) now
 * and stepped into the core by propose_turn when the turn ends; a full
 * queue is proposed first, so it stays bounded. Returns 0, or
 * KEEL_ERR_NOT_LEADER / KEEL_ERR_TRANSFER (not leader now: nothing
 * queued), KEEL_ERR_TOO_BIG, KEEL_ERR_NOMEM.
 */
static int queue_argv(struct node *n, raft_id from,
		      const struct node_entry_hdr *h, uint32_t argc,
		      const uint8_t *const *argv, const size_t *lens)
{
	uint64_t term;
	int rv = can_propose(n, &term);
	if (rv)
		return rv;
	if (n->n_turn >= NODE_TURN_MAX || n->turn_len >= NODE_TURN_MAX_BYTES) {
		propose_turn(n);
		rv = can_propose(n, &term);
		if (rv)
			return rv;
	}
	size_t len = 0;
	rv = build_entry(n, h, argc, argv, lens, &len);
	if (rv)
		return rv;
	size_t need = n->turn_len + len;
	if (need > n->turn_cap) {
		size_t ncap = KEEL_MAX(need, n->turn_cap * 2);
		rv = grow(n, &n->turn_buf, &n->turn_cap, ncap);
		if (rv)
			return rv;
	}
	memcpy(n->turn_buf + n->turn_len, n->buf, len);
	n->turn[n->n_turn++] = (struct turn_prop){.from = from,
						  .boot = h->boot,
						  .seq = h->seq,
						  .off = n->turn_len,
						  .len = (uint32_t)len};
	n->turn_len += len;
	return 0;
}

/* One queued proposal went into the log at index, in term. */
static void turn_proposed(struct node *n, const struct turn_prop *t,
			  uint64_t index, uint64_t term)
{
	if (t->from) {
		n->stats.fwd_proposed++;
		struct node_fwd ack = {.type = PEER_TYPE_FWD_ACK,
				       .boot = t->boot,
				       .seq = t->seq,
				       .term = term,
				       .index = index};
		send_fwd(n, t->from, &ack);
		return;
	}
	int i = pw_find(n, t->seq);
	if (i < 0)
		return;
	struct pending_write *p = &n->pw[i];
	p->queued = false;
	if (p->mode == W_WAIT) {
		p->mode = W_LOCAL;
		p->index = index;
	}
	p->handed = true;
	p->acked = true; /* nothing to resend while we lead */
	p->ack_leader = n->cfg.id;
	p->ack_term = term;
}

/* One queued proposal the core refused with rv. */
static void turn_refused(struct node *n, const struct turn_prop *t, int rv)
{
	bool nl = rv == KEEL_ERR_NOT_LEADER || rv == KEEL_ERR_TRANSFER;
	if (t->from) {
		send_nack(n, t->from, NODE_FWD_KIND_WRITE, t->boot, t->seq,
			  nl ? NODE_FWD_NOT_LEADER : NODE_FWD_BUSY);
		return;
	}
	int i = pw_find(n, t->seq);
	if (i < 0)
		return;
	struct pending_write *p = &n->pw[i];
	p->queued = false;
	if (nl) {
		/* wait: a leader will be known again */
		if (p->mode == W_WAIT)
			n->want_dispatch = true;
		return;
	}
	if (p->handed) {
		/* An earlier copy may be in a log: only the timeout tells. */
		p->next_try = now_ns(n) + n->cfg.retry_ns;
		return;
	}
	uint64_t cookie = p->cookie;
	free_pw(n, (uint32_t)i);
	answer(n, cookie, NODE_DROPPED, 0, NULL, 0); /* busy, nomem */
}

/* Steps the turn's queued proposals into the core as one propose event
 * (one append per peer); if the core refuses the batch for a reason other
 * than leadership (the uncommitted-bytes cap, memory), each is tried on
 * its own, as it would have been without batching. */
static void propose_turn(struct node *n)
{
	uint32_t k = n->n_turn;
	if (!k || n->poisoned)
		return;
	for (uint32_t i = 0; i < k; i++)
		n->turn_ents[i] = (struct raft_entry){
			.type = RAFT_ENTRY_NORMAL,
			.len = n->turn[i].len,
			.data = n->turn_buf + n->turn[i].off};
	struct raft_event ev = {.type = RAFT_EV_PROPOSE,
				.propose = {.n = k, .entries = n->turn_ents}};
	int rv = raft_step(n->raft, &ev);
	struct raft_status st;
	raft_status(n->raft, &st);
	if (rv == 0) {
		KEEL_ASSERT(st.last_index >= k);
		uint64_t first = st.last_index - k + 1;
		for (uint32_t i = 0; i < k; i++)
			turn_proposed(n, &n->turn[i], first + i, st.term);
	} else if (rv == KEEL_ERR_NOT_LEADER || rv == KEEL_ERR_TRANSFER) {
		for (uint32_t i = 0; i < k; i++)
			turn_refused(n, &n->turn[i], rv);
	} else {
		for (uint32_t i = 0; i < k; i++) {
			uint64_t index = 0;
			int r1 = propose_one(n, n->turn_ents[i].data,
					     n->turn_ents[i].len, &index);
			if (r1)
				turn_refused(n, &n->turn[i], r1);
			else
				turn_proposed(n, &n->turn[i], index, st.term);
		}
	}
	n->n_turn = 0;
	n->turn_len = 0;
}

static void store_cb(void *arg, int status)
{
	struct node *n = arg;
	if (status) {
		poison(n, "log store sync failed: stopping");
		return;
	}
	KEEL_ASSERT(n->wr_n > 0);
	struct write_rec rec = n->wr[n->wr_head];
	n->wr_head = (n->wr_head + 1) % n->wr_cap;
	n->wr_n--;
	n->writes_done++;
	n->stats.writes_done++;
	KEEL_ASSERT(n->writes_done <= n->writes_issued);
	if (n->poisoned)
		return;
	release_held(n);
	if (rec.last_index) {
		struct raft_event ev = {.type = RAFT_EV_PERSISTED,
					.persisted = {.index = rec.last_index,
						      .term = rec.last_term}};
		raft_step(n->raft, &ev);
	}
	defer_process(n);
}

/* ---- routing requests ---------------------------------------------------------- */

static void forward_write(struct node *n, struct pending_write *p, raft_id to)
{
	struct node_fwd f = {.type = PEER_TYPE_FWD_WRITE,
			     .boot = n->boot,
			     .seq = p->seq,
			     .stream = p->stream,
			     .cmd = p->cmd,
			     .cmd_len = p->cmd_len};
	if (p->mode != W_FWD)
		n->stats.fwd_requests++;
	p->mode = W_FWD;
	p->handed = true;
	p->acked = false;
	p->sent_to = to;
	p->next_try = now_ns(n) + n->cfg.retry_ns;
	n->stats.fwd_writes_sent++;
	send_fwd(n, to, &f);
}

static void forward_read(struct node *n, struct pending_read *p, raft_id to)
{
	struct node_fwd f = {.type = PEER_TYPE_FWD_READ,
			     .boot = n->boot,
			     .seq = p->seq};
	if (p->state != R_FWD)
		n->stats.fwd_requests++;
	p->state = R_FWD;
	p->handed = true;
	p->next_try = now_ns(n) + n->cfg.retry_ns;
	n->stats.fwd_reads_sent++;
	send_fwd(n, to, &f);
}

/* Moves write i on: proposes it (leader) or forwards it (follower with a
 * known leader). Returns true when it was answered and removed. */
static bool route_write(struct node *n, uint32_t i, raft_id leader)
{
	struct pending_write *p = &n->pw[i];
	if (leader == RAFT_NONE)
		return false;
	if (leader != n->cfg.id) {
		forward_write(n, p, leader);
		return false;
	}
	if (p->queued)
		return false; /* proposed when the turn ends */
	struct node_entry_hdr h = {n->cfg.id, n->boot, p->seq, p->stream};
	uint64_t ignored;
	uint32_t argc = 0;
	int rv = decode_cmd(n, p->cmd, p->cmd_len, &ignored, &argc);
	if (!rv)
		rv = queue_argv(n, 0, &h, argc, n->argv, n->lens);
	/* A full queue is flushed first, which can answer (and so move)
	 * other writes; this one was not queued, so it is still here. */
	int j = pw_find(n, h.seq);
	KEEL_ASSERT(j >= 0);
	i = (uint32_t)j;
	p = &n->pw[i];
	if (rv == KEEL_ERR_NOT_LEADER || rv == KEEL_ERR_TRANSFER)
		return false; /* wait: a leader will be known again */
	if (rv == 0) {
		p->queued = true; /* proposed when the turn ends */
		return false;
	}
	if (p->handed) {
		/* An earlier copy may be in a log: only the timeout tells. */
		p->next_try = now_ns(n) + n->cfg.retry_ns;
		return false;
	}
	uint64_t cookie = p->cookie;
	free_pw(n, i);
	answer(n, cookie, NODE_DROPPED, 0, NULL, 0); /* busy, too big, nomem */
	return true;
}

static bool route_read(struct node *n, uint32_t i, raft_id leader)
{
	struct pending_read *p = &n->pr[i];
	if (leader == RAFT_NONE)
		return false;
	if (leader != n->cfg.id) {
		forward_read(n, p, leader);
		return false;
	}
	uint64_t id = ++n->next_read;
	struct raft_event ev = {.type = RAFT_EV_READ_INDEX,
				.read_index = {.id = id}};
	int rv = raft_step(n->raft, &ev);
	if (rv == KEEL_ERR_NOT_LEADER || rv == KEEL_ERR_TRANSFER)
		return false;
	if (rv) {
		uint64_t cookie = p->cookie;
		free_pr(n, i);
		answer(n, cookie, NODE_DROPPED, 0, NULL, 0);
		return true;
	}
	p->state = R_LOCAL;
	p->handed = true;
	p->id = id;
	return false;
}

/* Requests waiting for a leader, and forwarded ones due for a resend. */
static void dispatch_waiting(struct node *n)
{
	n->want_dispatch = false;
	raft_id leader = known_leader(n);
	struct raft_status st;
	raft_status(n->raft, &st);
	uint64_t now = now_ns(n);
	n->route_leader = leader;
	/* Oldest first: a stream's writes reach a (new) leader in request
	 * order, so none is refused for having been overtaken. */
	bool rev = MUTANT(n, NODE_MUTANT_NO_ORDER);
	uint32_t lo = n->pw_lo, hi = n->pw_hi;
	for (uint32_t k = lo; k < hi; k++) {
		uint32_t i = rev ? hi - 1 - (k - lo) : k;
		if (i >= n->pw_hi)
			continue; /* emptied (and reset) meanwhile */
		struct pending_write *p = &n->pw[i];
		if (p->dead)
			continue;
		bool due = p->mode == W_WAIT && !p->queued;
		if (p->mode == W_FWD) {
			/* An ACK holds while its leader still leads its term. */
			bool ack_holds = p->acked && p->ack_leader == leader &&
					 p->ack_term == st.term;
			/* A copy that went to another node is resent to the
			 * leader now, before any newer write goes there. */
			due = !ack_holds && (now >= p->next_try ||
					     (leader != RAFT_NONE &&
					      p->sent_to != leader));
		}
		if (due && leader == RAFT_NONE)
			n->want_dispatch = true;
		if (due)
			(void)route_write(n, i, leader);
	}
	for (uint32_t i = 0; i < n->n_pr;) {
		struct pending_read *p = &n->pr[i];
		bool due = p->state == R_WAIT ||
			   (p->state == R_FWD && now >= p->next_try);
		if (due && leader == RAFT_NONE)
			n->want_dispatch = true;
		if (due && route_read(n, i, leader))
			continue;
		i++;
	}
}

static void expire_timeouts(struct node *n)
{
	uint64_t now = now_ns(n);
	for (uint32_t i = n->pw_lo; i < n->pw_hi; i++) {
		struct pending_write *p = &n->pw[i];
		if (p->dead || now < p->deadline ||
		    MUTANT(n, NODE_MUTANT_NO_WRITE_TIMEOUT))
			continue;
		uint64_t cookie = p->cookie;
		int status = p->handed ? NODE_UNKNOWN : NODE_NOT_LEADER;
		free_pw(n, i);
		answer(n, cookie, status, 0, NULL, 0);
	}
	for (uint32_t i = 0; i < n->n_pr;) {
		struct pending_read *p = &n->pr[i];
		if (now < p->deadline) {
			i++;
			continue;
		}
		uint64_t cookie = p->cookie;
		int status = p->handed ? NODE_DROPPED : NODE_NOT_LEADER;
		free_pr(n, i);
		answer(n, cookie, status, 0, NULL, 0);
	}
}

/* ---- expiry (leader only) ------------------------------------------------------- */

struct expire_ctx {
	struct node *n;
	uint32_t budget;
};

static bool expire_inflight(const struct node *n, const uint8_t *key,
			    size_t klen)
{
	for (uint32_t i = 0; i < n->n_ex; i++)
		if (n->ex[i].key_len == klen &&
		    (klen == 0 || memcmp(n->ex[i].key, key, klen) == 0))
			return true;
	return false;
}

static int expire_visit(void *ctx, const uint8_t *key, size_t klen,
			const uint8_t *val, size_t vlen,
			const struct kv_meta *meta)
{
	(void)val;
	(void)vlen;
	struct expire_ctx *x = ctx;
	struct node *n = x->n;
	if (x->budget == 0 || n->n_ex >= NODE_MAX_EXPIRE_INFLIGHT)
		return 1;
	if (expire_inflight(n, key, klen) || klen > UINT32_MAX)
		return 0;
	char rev[24];
	size_t rl = kv_fmt_u64(meta->mod_revision, rev);
	static const char name[] = "KEEL.EXPIRE-DELETE";
	/* The proposal below reuses n->buf: the key may not point there
	 * (it is kv's memory). */
	uint8_t *copy = xmalloc(n, klen ? klen : 1);
	if (!copy)
		return 1;
	if (klen)
		memcpy(copy, key, klen);
	const uint8_t *argv[3] = {(const uint8_t *)name, copy,
				  (const uint8_t *)rev};
	size_t lens[3] = {sizeof(name) - 1, klen, rl};
	struct node_entry_hdr h = {0, 0, 0, 0};
	uint64_t index = 0;
	if (propose_argv(n, &h, 3, argv, lens, &index)) {
		xfree(n, copy);
		return 1; /* busy or not leader: next tick */
	}
	n->ex[n->n_ex++] = (struct expire_inflight){
		.index = index, .key_len = (uint32_t)klen, .key = copy};
	n->stats.expire_proposed++;
	x->budget--;
	return 0;
}

static void expire_tick(struct node *n)
{
	struct raft_status st;
	raft_status(n->raft, &st);
	if (st.role != RAFT_LEADER || st.term != n->ex_term) {
		/* A new term: what an earlier term proposed either applies
		 * (and settles) or is gone; EXPIRE-DELETE is idempotent, so
		 * proposing a key again is safe. */
		while (n->n_ex) {
			xfree(n, n->ex[n->n_ex - 1].key);
			n->n_ex--;
		}
		n->ex_term = st.term;
		/* The core fails the reads of a lost term; forget any it
		 * did not report, so the table cannot fill up. */
		n->n_fr = 0;
	}
	if (st.role != RAFT_LEADER || st.transferee != RAFT_NONE)
		return;
	struct expire_ctx x = {n, n->cfg.expire_batch};
	struct kv_visit v = {expire_visit, &x};
	kv_next_expired(n->kv, wall_ms(n),
			(uint64_t)n->cfg.expire_batch + n->n_ex, &v);
}

/* A leader whose own disk stalls keeps committing through its followers
 * (it counts itself only once persisted), but it is the one node whose
 * acknowledgements are stuck and a slow disk rarely recovers by itself.
 * When its oldest write has waited longer than an election timeout it
 * hands leadership to the most up-to-date active voter (§3.10 transfer),
 * once per term. */
static void check_disk_stall(struct node *n)
{
	if (!n->wr_n)
		return;
	uint64_t waited = now_ns(n) - n->wr[n->wr_head].issued_ns;
	if (waited <= (uint64_t)n->cfg.election_ticks * n->cfg.tick_ns)
		return;
	struct raft_status st;
	raft_status(n->raft, &st);
	if (st.role != RAFT_LEADER || st.transferee != RAFT_NONE ||
	    n->stall_term == st.term)
		return;
	raft_id best = RAFT_NONE;
	uint64_t best_match = 0;
	for (uint32_t i = 0; i < st.n_peers; i++) {
		const struct raft_peer_status *p = &st.peers[i];
		if (p->id == n->cfg.id || !p->recent_active)
			continue;
		if (best == RAFT_NONE || p->match > best_match) {
			best = p->id;
			best_match = p->match;
		}
	}
	if (best == RAFT_NONE)
		return;
	n->stall_term = st.term;
	n->stats.stall_transfers++;
	node_log(n, ENV_LOG_WARN,
		 "own disk stalled past an election timeout: handing "
		 "leadership to the most up-to-date voter");
	struct raft_event ev = {.type = RAFT_EV_TRANSFER,
				.transfer = {.target = best}};
	raft_step(n->raft, &ev);
}

static void tick_cb(void *arg)
{
	struct node *n = arg;
	n->timer = 0;
	if (n->poisoned)
		return;
	if (!n->restoring) {
		struct raft_event ev = {.type = RAFT_EV_TICK};
		raft_step(n->raft, &ev);
		process(n);
	}
	if (!n->poisoned && !n->restoring) {
		check_disk_stall(n);
		expire_timeouts(n);
		dispatch_waiting(n);
		expire_tick(n);
		process(n);
		snap_tick(n);
	}
	n->timer = n->env->clock.ops->timer_start(n->env->clock.ctx,
						  n->cfg.tick_ns, tick_cb, n);
	/* Without its tick the node would never time a request out, elect,
	 * heartbeat or expire again, and nobody would know: stop loudly
	 * instead, every waiting client answered. */
	if (!n->timer)
		poison(n, "cannot re-arm the tick timer (out of memory): "
			  "stopping");
}

/* ---- inputs ------------------------------------------------------------------ */

static bool is_member(const struct node *n, raft_id id)
{
	for (uint32_t i = 0; i < n->cfg.members.n_voters; i++)
		if (n->cfg.members.voters[i] == id)
			return true;
	return false;
}

/* The leader side of FWD_WRITE: propose with the sender as origin. */
static void on_fwd_write(struct node *n, raft_id from, const struct node_fwd *f)
{
	uint64_t ignored;
	uint32_t argc = 0;
	int rv = decode_cmd(n, f->cmd, f->cmd_len, &ignored, &argc);
	if (rv == KEEL_ERR_NOMEM) {
		send_nack(n, from, NODE_FWD_KIND_WRITE, f->boot, f->seq,
			  NODE_FWD_BUSY);
		return;
	}
	const struct kv_command *kc =
		rv ? NULL : kv_command_lookup(n->argv[0], n->lens[0]);
	if (!kc || !(kc->flags & KV_CMD_WRITE) ||
	    (kc->flags & KV_CMD_INTERNAL)) {
		n->stats.fwd_bad++;
		send_nack(n, from, NODE_FWD_KIND_WRITE, f->boot, f->seq,
			  NODE_FWD_REFUSED);
		return;
	}
	struct node_entry_hdr h = {from, f->boot, f->seq, f->stream};
	rv = queue_argv(n, from, &h, argc, n->argv, n->lens);
	if (rv) {
		bool nl = rv == KEEL_ERR_NOT_LEADER || rv == KEEL_ERR_TRANSFER;
		send_nack(n, from, NODE_FWD_KIND_WRITE, f->boot, f->seq,
			  nl ? NODE_FWD_NOT_LEADER : NODE_FWD_BUSY);
		return;
	}
	/* Proposed, counted and ACKed (with its index) when the turn ends. */
	n->batch_requests++;
}

static void on_fwd_read(struct node *n, raft_id from, const struct node_fwd *f)
{
	if (n->n_fr >= n->cfg.max_pending) {
		send_nack(n, from, NODE_FWD_KIND_READ, f->boot, f->seq,
			  NODE_FWD_BUSY);
		return;
	}
	uint64_t id = ++n->next_read;
	struct raft_event ev = {.type = RAFT_EV_READ_INDEX,
				.read_index = {.id = id}};
	int rv = raft_step(n->raft, &ev);
	if (rv) {
		bool nl = rv == KEEL_ERR_NOT_LEADER || rv == KEEL_ERR_TRANSFER;
		send_nack(n, from, NODE_FWD_KIND_READ, f->boot, f->seq,
			  nl ? NODE_FWD_NOT_LEADER : NODE_FWD_BUSY);
		return;
	}
	n->fr[n->n_fr++] = (struct fwd_read){id, from, f->boot, f->seq};
	n->batch_requests++;
}

/* A NACK for one of our forwarded requests: try the hinted leader (a few
 * times per retry period), else wait for the next resend. */
static void on_fwd_nack(struct node *n, raft_id from, const struct node_fwd *f)
{
	raft_id hint = f->hint;
	bool redirect = f->reason == NODE_FWD_NOT_LEADER && hint != RAFT_NONE &&
			hint != from && is_member(n, hint);
	if (f->kind == NODE_FWD_KIND_WRITE) {
		int i = pw_find(n, f->seq);
		if (i < 0 || n->pw[i].mode != W_FWD)
			return;
		struct pending_write *p = &n->pw[i];
		if (f->reason == NODE_FWD_REFUSED) {
			/* This node checked the command before forwarding it,
			 * so a refusal means the leader's kv differs (a mixed
			 * version cluster). Another leader may have taken an
			 * earlier copy: only the apply or the timeout (then
			 * NODE_UNKNOWN) may answer. */
			return;
		}
		if (redirect && hint != n->cfg.id &&
		    p->redirects < NODE_MAX_REDIRECTS) {
			p->redirects++;
			forward_write(n, p, hint);
		}
		return;
	}
	int i = pr_find(n, f->seq);
	if (i < 0 || n->pr[i].state != R_FWD)
		return;
	struct pending_read *p = &n->pr[i];
	if (redirect && hint != n->cfg.id && p->redirects < NODE_MAX_REDIRECTS) {
		p->redirects++;
		forward_read(n, p, hint);
	}
}

static void on_fwd_frame(struct node *n, raft_id from, int type,
			 const uint8_t *body, size_t body_len)
{
	struct node_fwd f;
	if (node_fwd_decode(type, body, body_len, &f) || !is_member(n, from) ||
	    from == n->cfg.id) {
		n->stats.frames_bad++;
		n->stats.fwd_bad++;
		return;
	}
	switch (type) {
	case PEER_TYPE_FWD_WRITE:
		on_fwd_write(n, from, &f);
		break;
	case PEER_TYPE_FWD_READ:
		on_fwd_read(n, from, &f);
		break;
	case PEER_TYPE_FWD_NACK:
		if (f.boot == n->boot)
			on_fwd_nack(n, from, &f);
		break;
	case PEER_TYPE_FWD_ACK: {
		if (f.boot != n->boot)
			break;
		int i = pw_find(n, f.seq);
		if (i >= 0 && n->pw[i].mode == W_FWD) {
			n->pw[i].acked = true;
			n->pw[i].ack_leader = from;
			n->pw[i].ack_term = f.term;
		}
		break;
	}
	case PEER_TYPE_FWD_READ_OK: {
		if (f.boot != n->boot)
			break;
		int i = pr_find(n, f.seq);
		if (i >= 0 && n->pr[i].state == R_FWD) {
			n->pr[i].state = R_READY;
			n->pr[i].index = f.index;
			n->pr[i].at_ms = f.ms; /* the leader's time */
		}
		break;
	}
	default:
		break;
	}
}

void node_receive(struct node *n, const uint8_t *frame, size_t len)
{
	n->stats.frames_in++;
	if (n->poisoned || n->restoring)
		return;
	/* Raft frames first (one CRC pass); peer_decode_msg refuses
	 * node-level types with KEEL_ERR_TYPE, and only those get the
	 * envelope check. With snapshots on, type 10 (SNAPSHOT) decodes too
	 * and goes through the staging gate (§3.4), never straight in. */
	struct raft_event ev = {.type = RAFT_EV_RECEIVE};
	int rv = peer_decode_msg(frame, len, &n->limits, NULL, &ev.receive,
				 n->dec, NODE_MAX_MSG_ENTRIES,
				 n->snap ? &n->snap->rx_conf : NULL);
	if (rv == KEEL_ERR_TYPE) {
		uint64_t sender = 0;
		int type = 0;
		rv = peer_frame_verify(frame, len, &n->limits, &sender, &type);
		if (rv || type < PEER_TYPE_NODE_FIRST) {
			n->stats.frames_bad++;
			return;
		}
		size_t body_len;
		const uint8_t *body = peer_frame_body(frame, &body_len);
		if (type == PEER_TYPE_SNAP_CHUNK || type == PEER_TYPE_SNAP_ACK) {
			if (!is_member(n, sender) || sender == n->cfg.id) {
				n->stats.frames_bad++;
				n->stats.snap_bad++;
				return;
			}
			if (type == PEER_TYPE_SNAP_CHUNK)
				on_snap_chunk(n, sender, body, body_len);
			else
				on_snap_ack(n, sender, body, body_len);
		} else {
			on_fwd_frame(n, sender, type, body, body_len);
		}
		defer_process(n);
		return;
	}
	if (rv || ev.receive.to != n->cfg.id) {
		n->stats.frames_bad++;
		return;
	}
	if (ev.receive.type == RAFT_MSG_SNAPSHOT) {
		on_snap_msg(n, &ev.receive);
		return;
	}
	raft_step(n->raft, &ev);
	defer_process(n);
}

void node_campaign(struct node *n)
{
	if (n->poisoned || n->restoring)
		return;
	struct raft_event ev = {.type = RAFT_EV_CAMPAIGN};
	raft_step(n->raft, &ev);
	process(n);
}

static int request_write(struct node *n, const struct node_request *req)
{
	if (n->n_pw >= n->cfg.max_pending) {
		answer(n, req->cookie, NODE_DROPPED, 0, NULL, 0); /* busy */
		return 0;
	}
	struct pending_write p = {.cookie = req->cookie,
				  .seq = ++n->next_seq,
				  .stream = req->stream,
				  .deadline = now_ns(n) +
					      n->cfg.request_timeout_ns,
				  .mode = W_WAIT};
	int rv = copy_cmd(n, req, &p.cmd, &p.cmd_len);
	if (!rv && p.cmd_len > NODE_MAX_FWD_CMD)
		rv = KEEL_ERR_TOO_BIG; /* could never be forwarded */
	if (rv) {
		xfree(n, p.cmd);
		answer(n, req->cookie, NODE_DROPPED, 0, NULL, 0);
		return 0;
	}
	raft_id leader = known_leader(n);
	/* The leader changed since the last pass: older writes go there
	 * first (oldest first), so this one cannot overtake them. */
	if (leader != n->route_leader && n->n_pw)
		dispatch_waiting(n);
	uint32_t at = push_pw(n, &p);
	n->batch_requests++;
	route_write(n, at, leader);
	int i = pw_find(n, p.seq);
	if (i >= 0 && n->pw[i].mode == W_WAIT && !n->pw[i].queued)
		n->want_dispatch = true;
	return 0;
}

static int request_read(struct node *n, const struct node_request *req)
{
	if (req->flags & NODE_REQ_LOCAL) {
		/* Stale but never judged by a follower's clock: a leader
		 * reads at its own time (it decides expiry); any other node
		 * at the newest leader stamp it applied, where its state is
		 * a state the leader had (docs/kv.md, TTL design, 5). */
		uint64_t at = known_leader(n) == n->cfg.id ? wall_ms(n)
							   : n->applied_ms;
		kv_tape_reset(&n->tape);
		kv_read(n->kv, (int)req->argc, req->argv, req->lens, at,
			&kv_tape_ops, &n->tape);
		if (n->tape.failed)
			answer(n, req->cookie, NODE_DROPPED, 0, NULL, 0);
		else
			answer(n, req->cookie, NODE_OK, n->applied,
			       n->tape.buf, n->tape.len);
		return 0;
	}
	if (n->n_pr >= n->cfg.max_pending) {
		answer(n, req->cookie, NODE_DROPPED, 0, NULL, 0); /* busy */
		return 0;
	}
	struct pending_read p = {.cookie = req->cookie,
				 .seq = ++n->next_seq,
				 .deadline = now_ns(n) +
					     n->cfg.request_timeout_ns,
				 .state = R_WAIT};
	if (copy_cmd(n, req, &p.cmd, &p.cmd_len)) {
		answer(n, req->cookie, NODE_DROPPED, 0, NULL, 0);
		return 0;
	}
	n->pr[n->n_pr++] = p;
	n->batch_requests++;
	route_read(n, n->n_pr - 1, known_leader(n));
	int i = pr_find(n, p.seq);
	if (i >= 0 && n->pr[i].state == R_WAIT)
		n->want_dispatch = true;
	return 0;
}

int node_request(struct node *n, const struct node_request *req)
{
	if (req->argc < 1 || req->argc > KV_MAX_ARGC || !req->argv ||
	    !req->lens)
		return KEEL_ERR_INVAL;
	const struct kv_command *kc =
		kv_command_lookup(req->argv[0], req->lens[0]);
	if (!kc || (kc->flags & KV_CMD_INTERNAL) ||
	    !(kc->flags & (KV_CMD_WRITE | KV_CMD_READ)))
		return KEEL_ERR_INVAL;
	if (n->poisoned) {
		answer(n, req->cookie, NODE_DROPPED, 0, NULL, 0);
		return 0;
	}
	if (n->restoring) {
		/* Not executed: still loading its state; retry elsewhere. */
		answer(n, req->cookie, NODE_NOT_LEADER, 0, NULL, 0);
		return 0;
	}
	int rv = (kc->flags & KV_CMD_WRITE) ? request_write(n, req)
					    : request_read(n, req);
	if (rv)
		return rv;
	defer_process(n);
	return 0;
}

/* ---- snapshots (docs/snapshots.md) ------------------------------------------------
 *
 * Three jobs share the store's snapshot operations, whose completions
 * arrive in issue order (§2.2), so each kind of completion is matched
 * with the oldest record of a FIFO ring of outstanding operations:
 *
 *   - taking a snapshot (§1.2): a frozen kv version streamed by a 0-delay
 *     timer, a few steps per loop turn, into snap_write; snap_finish
 *     (LOCAL); its completion compacts the core at the PREVIOUS
 *     snapshot's index (§1.4);
 *   - sending one (§3.3, leader): per peer a struct snap_send
 *     (snapxfer_state.h) fed by snap_read;
 *   - receiving one (§3.4, follower): one staging, decoded as it arrives
 *     into a shadow kv, installed when the core takes the type-10 frame.
 *
 * Reports to the core (RAFT_EV_SNAPSHOT_STATUS) are never stepped between
 * raft_ready and raft_advance: a transfer that fails there is marked and
 * reported by flush_reports from the loop.
 */

static void snap_op_cb(void *arg, int status);
static void snap_read_cb(void *arg, int status, const uint8_t *data,
			 size_t len);
static void snap_turn_cb(void *arg);
static void flush_reports(struct node *n);
static void restore_step(struct node *n, int status, const uint8_t *data,
			 size_t len);

static int push_op(struct node *n, struct snap_op op)
{
	struct snap_state *ss = n->snap;
	if (ss->ops_n == ss->ops_cap) {
		struct snap_op *no = ring_grow(n, ss->ops, &ss->ops_cap,
					       &ss->ops_head, ss->ops_n,
					       sizeof(*no), 32);
		if (!no)
			return KEEL_ERR_NOMEM;
		ss->ops = no;
	}
	ss->ops[(ss->ops_head + ss->ops_n) % ss->ops_cap] = op;
	ss->ops_n++;
	return 0;
}

static struct snap_op pop_op(struct node *n)
{
	struct snap_state *ss = n->snap;
	KEEL_ASSERT(ss->ops_n > 0);
	struct snap_op op = ss->ops[ss->ops_head];
	ss->ops_head = (ss->ops_head + 1) % ss->ops_cap;
	ss->ops_n--;
	return op;
}

static const struct snap_rec *snap_rec_find(const struct node *n,
					    uint64_t index, uint64_t term)
{
	for (int i = 0; i < 2; i++) {
		const struct snap_rec *r = &n->snap->recs[i];
		if (r->index && r->index == index && r->term == term)
			return r;
	}
	return NULL;
}

static void snap_rec_push(struct node *n, struct snap_rec r)
{
	struct snap_state *ss = n->snap;
	ss->recs[1] = ss->recs[0];
	ss->recs[0] = r;
	n->stats.snap_index = r.index;
}

static bool frozen_src(void *ctx, uint8_t *buf, size_t cap, size_t *got)
{
	return kv_frozen_next(ctx, buf, cap, got);
}

static int kv_sink(void *ctx, const uint8_t *buf, size_t len)
{
	return kv_snap_reader_feed(ctx, buf, len);
}

/* Drops the local snapshot being written (an install replaced the state,
 * or the node stops). */
static void snap_out_drop(struct node *n)
{
	struct snap_out *so = &n->snap->out;
	if (!so->live)
		return;
	if (!so->finishing)
		n->env->store.ops->snap_abort(n->env->store.ctx, so->handle);
	if (so->frozen)
		kv_frozen_destroy(so->frozen);
	so->frozen = NULL;
	if (so->timer)
		n->env->clock.ops->timer_stop(n->env->clock.ctx, so->timer);
	so->timer = 0;
	so->live = false;
	so->gen = 0;
}

static void snap_arm(struct node *n)
{
	struct snap_out *so = &n->snap->out;
	if (so->timer || !so->live || so->finishing)
		return;
	so->timer = n->env->clock.ops->timer_start(n->env->clock.ctx, 0,
						   snap_turn_cb, n);
	/* No timer: the next write completion or tick arms it again. */
}

static void compact_at(struct node *n, uint64_t index)
{
	if (!index)
		return;
	struct raft_status st;
	raft_status(n->raft, &st);
	if (index <= st.snap_index)
		return;
	if (raft_compact(n->raft, index) == 0)
		n->stats.snap_compactions++;
}

/* §1.1 trigger; outside raft_ready/raft_advance. */
static void maybe_snapshot(struct node *n)
{
	struct snap_state *ss = n->snap;
	if (!ss || n->poisoned || n->restoring || ss->out.live)
		return;
	if (n->cfg.snapshot_entries == UINT32_MAX || n->applied <= ss->snap_from)
		return;
	if (n->applied - ss->snap_from < n->cfg.snapshot_entries &&
	    ss->bytes_since < n->cfg.snapshot_log_bytes)
		return;
	uint64_t a = n->applied;
	if (MUTANT(n, NODE_MUTANT_SNAP_LIVE_WRITER) && a - ss->snap_from > 3) {
		/* Planted bug: what a writer reading the live kv produces --
		 * a payload labelled A holding writes applied after A. */
		a -= 3;
	}
	int err = 0;
	uint64_t term = raft_term_at(n->raft, a, &err);
	if (err || !term)
		return;
	struct snap_out *so = &ss->out;
	struct kv_frozen *src_ctx = kv_freeze(n->kv, n->alloc);
	if (!src_ctx)
		return; /* out of memory: the next tick tries again */
	uint64_t kv_len = kv_frozen_size(src_ctx);
	struct node_snap_head *h = xmalloc(n, sizeof(*h)); /* 10 KiB */
	if (!h) {
		kv_frozen_destroy(src_ctx);
		return;
	}
	memset(h, 0, sizeof(*h));
	h->index = a;
	h->term = term;
	h->kv_len = kv_len;
	h->members = n->cfg.members;
	if (!MUTANT(n, NODE_MUTANT_SNAP_NO_DEDUP))
		memcpy(h->dedup, n->dedup, sizeof(h->dedup));
	node_snap_writer_init(&so->w, h, frozen_src, src_ctx);
	xfree(n, h);
	struct env_store_snap es = {.index = a,
				    .term = term,
				    .total_len = node_snap_total(kv_len),
				    .kind = ENV_SNAP_LOCAL};
	so->frozen = src_ctx;
	so->live = true;
	int rv = KEEL_ERR_TOO_BIG;
	if (es.total_len <= n->cfg.snapshot_max_bytes)
		rv = n->env->store.ops->snap_begin(n->env->store.ctx, &es,
						   &so->handle);
	if (rv) {
		so->finishing = true; /* nothing to abort */
		snap_out_drop(n);
		so->finishing = false;
		if (rv == KEEL_ERR_BUSY || rv == KEEL_ERR_TOO_BIG) {
			ss->snap_from = a; /* try again one interval later */
			ss->bytes_since = 0;
			return;
		}
		poison(n, "snapshot store failed: stopping");
		return;
	}
	so->finishing = false;
	so->gen = ++ss->next_gen;
	so->index = a;
	so->term = term;
	so->total = es.total_len;
	so->issued = 0;
	so->pend = 0;
	so->writes_out = 0;
	so->catchup = false;
	ss->snap_from = a;
	ss->bytes_since = 0;
	n->stats.snap_taken++;
	snap_arm(n);
}

/* Hands the produced step (ss->buf[0..so->pend)) to snap_write. 0, or
 * KEEL_ERR_BUSY (the store's queue is full: it stays pending), or another
 * error (poisoned). */
static int snap_issue_pending(struct node *n)
{
	struct snap_state *ss = n->snap;
	struct snap_out *so = &ss->out;
	if (!so->pend)
		return 0;
	int rv = push_op(n, (struct snap_op){.kind = SOP_LOCAL_WRITE,
					     .xid = so->gen});
	if (!rv) {
		rv = n->env->store.ops->snap_write(n->env->store.ctx, so->handle,
						   so->issued, ss->buf, so->pend,
						   snap_op_cb, n);
		if (rv)
			pop_op(n); /* never issued */
	}
	if (rv == KEEL_ERR_BUSY)
		return rv;
	if (rv) {
		poison(n, "snapshot write failed: stopping");
		return rv;
	}
	so->issued += so->pend;
	so->pend = 0;
	so->writes_out++;
	return 0;
}

/* One turn of the pipeline: a few writer steps into snap_write. */
static void snap_turn_cb(void *arg)
{
	struct node *n = arg;
	struct snap_state *ss = n->snap;
	struct snap_out *so = &ss->out;
	so->timer = 0;
	if (n->poisoned || !so->live || so->finishing)
		return;
	size_t cap_pre = (size_t)KEEL_MIN(n->cfg.snapshot_preimage_bytes,
					  (uint64_t)SIZE_MAX);
	for (uint32_t i = 0;; i++) {
		if (so->writes_out >= NODE_SNAP_MAX_WRITES)
			return; /* a completion arms the next turn */
		if (snap_issue_pending(n))
			return; /* busy: a completion (or the tick) re-arms */
		if (!so->frozen)
			break; /* every byte issued: finish */
		size_t pre = kv_frozen_preimage_bytes(so->frozen);
		if (pre > cap_pre)
			so->catchup = true;
		else if (pre <= cap_pre / 2)
			so->catchup = false;
		if (i >= n->cfg.snapshot_steps_per_turn && !so->catchup) {
			snap_arm(n);
			return;
		}
		if (i >= n->cfg.snapshot_steps_per_turn)
			n->stats.snap_catchup_steps++;
		size_t got = 0;
		bool more = node_snap_writer_next(&so->w, ss->buf,
						  n->cfg.snapshot_step_bytes,
						  &got);
		so->pend = got;
		if (!more) {
			so->crc = node_snap_writer_crc(&so->w);
			kv_frozen_destroy(so->frozen); /* frees the pre-images */
			so->frozen = NULL;
		}
	}
	KEEL_ASSERT(so->issued == so->total);
	int rv = push_op(n, (struct snap_op){.kind = SOP_LOCAL_FINISH,
					     .xid = so->gen});
	if (!rv) {
		rv = n->env->store.ops->snap_finish(n->env->store.ctx,
						    so->handle, so->crc,
						    snap_op_cb, n);
		if (rv)
			pop_op(n);
	}
	if (rv == KEEL_ERR_BUSY) {
		snap_arm(n);
		return;
	}
	if (rv) {
		poison(n, "snapshot finish failed: stopping");
		return;
	}
	so->finishing = true;
	if (MUTANT(n, NODE_MUTANT_SNAP_COMPACT_EARLY)) {
		/* Planted bug: compacts before the snapshot is durable. */
		compact_at(n, so->index);
	}
}

/* Completion of a snap_write / snap_finish (any kind but reads). */
static void snap_op_cb(void *arg, int status)
{
	struct node *n = arg;
	struct snap_state *ss = n->snap;
	struct snap_op op = pop_op(n);
	KEEL_ASSERT(op.kind != SOP_READ && op.kind != SOP_RESTORE_READ);
	if (n->poisoned)
		return;
	if (status) {
		poison(n, "snapshot store write failed: stopping");
		return;
	}
	struct snap_out *so = &ss->out;
	switch (op.kind) {
	case SOP_LOCAL_WRITE:
		if (so->live && so->gen == op.xid) {
			KEEL_ASSERT(so->writes_out > 0);
			so->writes_out--;
			snap_arm(n);
		}
		break;
	case SOP_LOCAL_FINISH:
		if (!so->live || so->gen != op.xid)
			break;
		/* Durable: the previous snapshot's index may go (§1.4). */
		{
			uint64_t prev = ss->recs[0].index;
			snap_rec_push(n, (struct snap_rec){so->index, so->term,
							   so->total, so->crc});
			n->stats.snap_finished++;
			so->live = false;
			so->finishing = false;
			compact_at(n, prev);
		}
		break;
	case SOP_RECV_FINISH: /* only the ack-early mutant issues this */
	case SOP_RECV_WRITE:
	default:
		break;
	}
}

/* ---- sender (leader) ---- */

static int member_slot(const struct node *n, raft_id id)
{
	const struct raft_config_members *m = &n->cfg.members;
	for (uint32_t i = 0; i < m->n_voters; i++)
		if (m->voters[i] == id)
			return (int)i;
	for (uint32_t i = 0; i < m->n_learners; i++)
		if (m->learners[i] == id)
			return (int)(m->n_voters + i);
	return -1;
}

static void send_body(struct node *n, raft_id to, int type,
		      const uint8_t *body, size_t body_len)
{
	size_t frame = body_len + PEER_MIN_FRAME_SIZE;
	if (grow(n, &n->enc, &n->enc_cap, frame))
		return;
	size_t w = 0;
	if (peer_encode_frame(type, n->cfg.cluster_id, n->cfg.id, body,
			      body_len, n->enc, n->enc_cap, &w))
		return;
	n->stats.frames_out++;
	n->env->net.ops->send(n->env->net.ctx, to, n->enc, w);
}

/* A transfer ends; report 1 = ok, 2 = failed, 0 = silently (§3.6). */
static void send_end(struct node *n, uint32_t slot, int report)
{
	struct snap_state *ss = n->snap;
	if (report)
		ss->report[slot] = (uint8_t)report;
	memset(&ss->sends[slot], 0, sizeof(ss->sends[slot]));
}

static void send_pump(struct node *n, uint32_t slot)
{
	struct snap_state *ss = n->snap;
	struct snap_send *s = &ss->sends[slot];
	uint64_t off;
	uint32_t len;
	while (s->peer && snap_send_next_read(s, n->cfg.snap_window,
					      n->cfg.snapshot_step_bytes, &off,
					      &len)) {
		int rv = push_op(n, (struct snap_op){.kind = SOP_READ,
						     .slot = slot,
						     .xid = s->xid,
						     .round = s->round,
						     .offset = off,
						     .len = len});
		if (!rv) {
			rv = n->env->store.ops->snap_read(
				n->env->store.ctx, s->id.index, s->id.term, off,
				len, snap_read_cb, n);
			if (rv)
				pop_op(n);
		}
		if (rv) {
			s->reads_out--;
			s->sent -= len; /* the last one taken: give it back */
			if (rv == KEEL_ERR_BUSY)
				return; /* a read completion pumps again */
			send_end(n, slot, 2);
			return;
		}
	}
}

/* Moves waiting transfers into free transfer slots. */
static void send_activate(struct node *n)
{
	struct snap_state *ss = n->snap;
	uint32_t active = 0;
	for (uint32_t i = 0; i < RAFT_MAX_VOTERS; i++)
		if (ss->sends[i].peer && ss->sends[i].active)
			active++;
	for (uint32_t i = 0; i < RAFT_MAX_VOTERS && active < n->cfg.snap_max_sends;
	     i++) {
		struct snap_send *s = &ss->sends[i];
		if (!s->peer || s->active)
			continue;
		s->active = true;
		s->progress_ns = s->resend_ns = now_ns(n);
		active++;
		send_pump(n, i);
	}
}

/* A RAFT_MSG_SNAPSHOT in u.msgs (inside process: reports are deferred). */
static void send_begin(struct node *n, const struct raft_msg *m)
{
	struct snap_state *ss = n->snap;
	int slot = member_slot(n, m->to);
	if (slot < 0 || !ss)
		return;
	struct snap_send *s = &ss->sends[slot];
	if (s->peer && s->id.index == m->index && s->id.term == m->log_term)
		return; /* that transfer is running */
	memset(s, 0, sizeof(*s)); /* an older one: dropped silently */
	const struct snap_rec *r = snap_rec_find(n, m->index, m->log_term);
	if (!r || !m->conf) {
		ss->report[slot] = 2; /* we do not hold it: the next probe */
		return;
	}
	snap_send_start(s, m->to, ++ss->next_xid,
			(struct snapxfer_id){m->index, m->log_term}, r->len,
			r->crc, m->term, m->conf, now_ns(n));
	n->stats.snap_sends_started++;
	send_activate(n);
}

static void send_type10(struct node *n, const struct snap_send *s)
{
	struct raft_status st;
	raft_status(n->raft, &st);
	struct raft_msg m = {.type = RAFT_MSG_SNAPSHOT,
			     .from = n->cfg.id,
			     .to = s->peer,
			     .term = s->leader_term,
			     .index = s->id.index,
			     .log_term = s->id.term,
			     .commit = st.commit,
			     .conf = &s->conf};
	send_now(n, &m);
}

static void snap_read_cb(void *arg, int status, const uint8_t *data,
			 size_t len)
{
	struct node *n = arg;
	struct snap_state *ss = n->snap;
	struct snap_op op = pop_op(n);
	if (op.kind == SOP_RESTORE_READ) {
		restore_step(n, status, data, len);
		return;
	}
	KEEL_ASSERT(op.kind == SOP_READ);
	if (n->poisoned)
		return;
	if (status && status != KEEL_ERR_NOT_FOUND) {
		/* The store failed (it is poisoned now): stop, as for a
		 * failed write; only a vanished snapshot is the transfer's
		 * business. */
		poison(n, "snapshot read failed: stopping");
		return;
	}
	struct snap_send *s = &ss->sends[op.slot];
	if (!s->peer || s->xid != op.xid)
		return; /* that transfer ended */
	KEEL_ASSERT(s->reads_out > 0);
	s->reads_out--;
	if (status || len != op.len) {
		/* KEEL_ERR_NOT_FOUND: a newer snapshot replaced the base. */
		send_end(n, op.slot, 2);
	} else if (op.round == s->round) {
		struct snapxfer_chunk c = {.leader_term = s->leader_term,
					   .id = s->id,
					   .total_len = s->total_len,
					   .offset = op.offset,
					   .snap_crc = s->snap_crc,
					   .len = op.len,
					   .data = data};
		size_t body = snapxfer_chunk_size(&c);
		if (!grow(n, &n->buf, &n->buf_cap, body)) {
			snapxfer_chunk_encode(&c, n->buf);
			n->stats.snap_chunks_sent++;
			if (op.offset < s->high_sent)
				n->stats.snap_chunks_resent++;
			else
				s->high_sent = op.offset + op.len;
			send_body(n, s->peer, PEER_TYPE_SNAP_CHUNK, n->buf, body);
		}
		send_pump(n, op.slot);
	} else {
		send_pump(n, op.slot);
	}
	flush_reports(n);
}

static void flush_reports(struct node *n)
{
	struct snap_state *ss = n->snap;
	if (!ss || n->poisoned)
		return;
	bool any = false;
	for (uint32_t i = 0; i < RAFT_MAX_VOTERS; i++) {
		if (!ss->report[i])
			continue;
		bool ok = ss->report[i] == 1;
		ss->report[i] = 0;
		const struct raft_config_members *m = &n->cfg.members;
		raft_id peer = i < m->n_voters ? m->voters[i]
					       : m->learners[i - m->n_voters];
		struct raft_event ev = {.type = RAFT_EV_SNAPSHOT_STATUS,
					.snapshot_status = {.peer = peer,
							    .ok = ok}};
		raft_step(n->raft, &ev);
		if (ok)
			n->stats.snap_sent_ok++;
		else
			n->stats.snap_sent_failed++;
		any = true;
	}
	send_activate(n);
	if (any)
		process(n);
}

/* Per tick: transfers whose reason went away end silently (§3.3 Abort),
 * the others retransmit or time out. */
static void send_tick(struct node *n)
{
	struct snap_state *ss = n->snap;
	struct raft_status st;
	raft_status(n->raft, &st);
	uint64_t now = now_ns(n);
	for (uint32_t i = 0; i < RAFT_MAX_VOTERS; i++) {
		struct snap_send *s = &ss->sends[i];
		if (!s->peer)
			continue;
		bool keep = st.role == RAFT_LEADER && st.term == s->leader_term;
		if (keep) {
			keep = false;
			for (uint32_t p = 0; p < st.n_peers; p++)
				if (st.peers[p].id == s->peer &&
				    st.peers[p].state == RAFT_PROGRESS_SNAPSHOT &&
				    st.peers[p].pending_snapshot == s->id.index)
					keep = true;
		}
		if (!keep) {
			send_end(n, i, 0);
			continue;
		}
		int act = snap_send_tick(s, now, n->cfg.snap_retry_ns,
					 n->cfg.snap_timeout_ns);
		if (act == SNAP_SEND_FAIL)
			send_end(n, i, 2);
		else if (act == SNAP_SEND_MSG)
			send_type10(n, s);
		else if (act == SNAP_SEND_PUMP)
			send_pump(n, i);
	}
	flush_reports(n);
}

static void on_snap_ack(struct node *n, raft_id from, const uint8_t *body,
			size_t len)
{
	struct snap_state *ss = n->snap;
	struct snapxfer_ack a;
	int slot = member_slot(n, from);
	if (snapxfer_ack_decode(body, len, &a) || slot < 0 || !ss) {
		n->stats.frames_bad++;
		n->stats.snap_bad++;
		return;
	}
	struct snap_send *s = &ss->sends[slot];
	if (!s->peer || !s->active)
		return;
	/* The ack's term is never stepped: newer terms come from Raft
	 * messages (§3.3). */
	switch (snap_send_on_ack(s, &a, now_ns(n))) {
	case SNAP_SEND_PUMP:
		send_pump(n, (uint32_t)slot);
		break;
	case SNAP_SEND_MSG:
		send_type10(n, s);
		break;
	case SNAP_SEND_OK:
		send_end(n, (uint32_t)slot, 1);
		break;
	case SNAP_SEND_FAIL:
		send_end(n, (uint32_t)slot, 2);
		break;
	default:
		break;
	}
	flush_reports(n);
}

/* ---- receiver (follower) ---- */

static void send_ack(struct node *n, raft_id to, struct snapxfer_id id,
		     uint64_t total, uint64_t next, int status, bool held)
{
	struct raft_status st;
	raft_status(n->raft, &st);
	struct snapxfer_ack a = {.term = KEEL_MAX(st.term, 1),
				 .id = id,
				 .total_len = total,
				 .next_offset = next,
				 .status = (uint8_t)status};
	uint8_t body[SNAPXFER_ACK_SIZE];
	snapxfer_ack_encode(&a, body);
	if (!held) {
		send_body(n, to, PEER_TYPE_SNAP_ACK, body, sizeof(body));
		return;
	}
	size_t frame = sizeof(body) + PEER_MIN_FRAME_SIZE;
	size_t w = 0;
	if (grow(n, &n->enc, &n->enc_cap, frame) ||
	    peer_encode_frame(PEER_TYPE_SNAP_ACK, n->cfg.cluster_id, n->cfg.id,
			      body, sizeof(body), n->enc, n->enc_cap, &w))
		return;
	hold_frame(n, to, n->enc, w);
}

/* Drops the staging (and its temp file) unless it was installed. */
static void recv_drop(struct node *n)
{
	struct snap_recv *r = &n->snap->recv;
	if (r->rx.id.index && r->handle)
		n->env->store.ops->snap_abort(n->env->store.ctx, r->handle);
	if (r->kvr)
		kv_snap_reader_destroy(r->kvr);
	if (r->shadow)
		kv_destroy(r->shadow);
	r->kvr = NULL;
	r->shadow = NULL;
	memset(&r->rx, 0, sizeof(r->rx));
	r->handle = 0;
	r->verified = false;
	r->decode_err = 0;
	r->gen = 0;
}

static int recv_start(struct node *n, raft_id from,
		      const struct snapxfer_chunk *c)
{
	struct snap_recv *r = &n->snap->recv;
	recv_drop(n);
	struct env_store_snap es = {.index = c->id.index,
				    .term = c->id.term,
				    .total_len = c->total_len,
				    .kind = ENV_SNAP_RECEIVED};
	r->kvr = kv_snap_reader_create(n->alloc, n->cfg.snapshot_max_bytes);
	if (!r->kvr)
		return KEEL_ERR_NOMEM;
	int rv = n->env->store.ops->snap_begin(n->env->store.ctx, &es,
					       &r->handle);
	if (rv) {
		kv_snap_reader_destroy(r->kvr);
		r->kvr = NULL;
		r->handle = 0;
		return rv;
	}
	struct node_snap_expect want = {.index = c->id.index,
					.term = c->id.term,
					.max_bytes = n->cfg.snapshot_max_bytes,
					.members = &n->cfg.members};
	node_snap_reader_init(&r->reader, &want, kv_sink, r->kvr);
	snapxfer_rx_start(&r->rx, c);
	r->leader = from;
	r->leader_term = c->leader_term;
	r->gen = ++n->snap->next_gen;
	return 0;
}

/* Every byte staged: §3.4 verification. */
static void recv_verify(struct node *n, raft_id from)
{
	struct snap_recv *r = &n->snap->recv;
	bool skip = MUTANT(n, NODE_MUTANT_SNAP_SKIP_CRC);
	int rv = skip ? 0 : snapxfer_rx_verify(&r->rx);
	if (!rv)
		rv = r->decode_err;
	if (!rv) {
		rv = node_snap_reader_finish(&r->reader);
		if (skip && rv == KEEL_ERR_CORRUPT)
			rv = 0; /* planted bug: the trailer is not compared */
	}
	if (!rv)
		rv = kv_snap_reader_finish(r->kvr, &r->shadow);
	struct snapxfer_id id = r->rx.id;
	uint64_t total = r->rx.total_len;
	if (rv) {
		n->stats.snap_verify_failed++;
		node_log(n, ENV_LOG_WARN,
			 "received snapshot failed verification: dropped");
		recv_drop(n);
		send_ack(n, from, id, total, 0, SNAPXFER_BAD, false);
		return;
	}
	r->verified = true;
	send_ack(n, from, id, total, total, SNAPXFER_COMPLETE, false);
}

static void on_snap_chunk(struct node *n, raft_id from, const uint8_t *body,
			  size_t len)
{
	struct snap_state *ss = n->snap;
	struct snapxfer_chunk c;
	if (!ss || snapxfer_chunk_decode(body, len, &c)) {
		n->stats.frames_bad++;
		n->stats.snap_bad++;
		return;
	}
	struct snap_recv *r = &ss->recv;
	struct raft_status st;
	raft_status(n->raft, &st);
	int v = snap_recv_admit(&r->rx, r->leader_term, &c, st.term,
				n->applied, n->cfg.snapshot_max_bytes, false);
	switch (v) {
	case SNAP_RECV_STALE:
		send_ack(n, from, c.id, c.total_len, 0, SNAPXFER_STALE, false);
		return;
	case SNAP_RECV_BUSY:
		send_ack(n, from, c.id, c.total_len, 0, SNAPXFER_BUSY, false);
		return;
	case SNAP_RECV_MISMATCH:
		n->stats.snap_bad++;
		return;
	case SNAP_RECV_RESTART:
		send_ack(n, from, c.id, c.total_len, 0, SNAPXFER_CONTINUE,
			 false);
		return;
	case SNAP_RECV_SKIP:
		r->last_ns = now_ns(n);
		if (r->verified)
			send_ack(n, from, r->rx.id, r->rx.total_len,
				 r->rx.total_len, SNAPXFER_COMPLETE, false);
		else
			send_ack(n, from, r->rx.id, r->rx.total_len,
				 r->rx.next_offset, SNAPXFER_CONTINUE, false);
		return;
	case SNAP_RECV_START: {
		int rv = recv_start(n, from, &c);
		if (rv == KEEL_ERR_IO || rv == KEEL_ERR_POISONED ||
		    rv == KEEL_ERR_NOSPACE) {
			poison(n, "snapshot staging failed: stopping");
			return;
		}
		if (rv) {
			send_ack(n, from, c.id, c.total_len, 0, SNAPXFER_BUSY,
				 false);
			return;
		}
		break;
	}
	default:
		break;
	}
	KEEL_ASSERT(snapxfer_rx_classify(&r->rx, &c) == SNAPXFER_RX_TAKE);
	int rv = push_op(n, (struct snap_op){.kind = SOP_RECV_WRITE,
					     .xid = r->gen});
	if (!rv) {
		rv = n->env->store.ops->snap_write(n->env->store.ctx, r->handle,
						   c.offset, c.data, c.len,
						   snap_op_cb, n);
		if (rv)
			pop_op(n);
	}
	if (rv == KEEL_ERR_BUSY) {
		/* Not staged: the leader resends from where we are. */
		send_ack(n, from, r->rx.id, r->rx.total_len, r->rx.next_offset,
			 SNAPXFER_CONTINUE, false);
		return;
	}
	if (rv) {
		poison(n, "snapshot staging write failed: stopping");
		return;
	}
	if (!r->decode_err)
		r->decode_err = node_snap_reader_feed(&r->reader, c.data, c.len);
	snapxfer_rx_advance(&r->rx, &c);
	r->last_ns = now_ns(n);
	if (snapxfer_rx_full(&r->rx))
		recv_verify(n, from);
	else
		send_ack(n, from, r->rx.id, r->rx.total_len, r->rx.next_offset,
			 SNAPXFER_CONTINUE, false);
}

/* A type-10 frame: to the core only over a verified staging (§3.4). */
static void on_snap_msg(struct node *n, const struct raft_msg *m)
{
	struct snap_state *ss = n->snap;
	struct snap_recv *r = ss ? &ss->recv : NULL;
	if (!r || !r->verified || r->rx.id.index != m->index ||
	    r->rx.id.term != m->log_term) {
		n->stats.snap_bad++;
		if (r && r->rx.id.index)
			send_ack(n, m->from, r->rx.id, r->rx.total_len,
				 r->rx.next_offset,
				 r->verified ? SNAPXFER_COMPLETE
					     : SNAPXFER_CONTINUE,
				 false);
		return;
	}
	struct raft_event ev = {.type = RAFT_EV_RECEIVE, .receive = *m};
	uint64_t gen = r->gen;
	raft_step(n->raft, &ev);
	process(n);
	if (r->gen == gen && r->verified) {
		/* The core did not need it (stale, or its log held it). */
		struct snapxfer_id id = r->rx.id;
		uint64_t total = r->rx.total_len;
		recv_drop(n);
		send_ack(n, m->from, id, total, 0, SNAPXFER_STALE, false);
	}
}

/* u.snapshot: install before anything else of the update (raft.h). */
static void install_snapshot(struct node *n, const struct raft_snapshot_meta *sm)
{
	struct snap_state *ss = n->snap;
	struct snap_recv *r = &ss->recv;
	KEEL_ASSERT(r->verified);
	KEEL_ASSERT(r->rx.id.index == sm->index && r->rx.id.term == sm->term);
	snap_out_drop(n); /* its frozen kv is about to go */
	bool early = MUTANT(n, NODE_MUTANT_SNAP_ACK_EARLY);
	/* The sender's snap_crc: the store compares it with the bytes it
	 * staged (a second check). The skip-crc mutant hands it its own. */
	uint32_t crc = MUTANT(n, NODE_MUTANT_SNAP_SKIP_CRC) ? r->rx.crc
							    : r->rx.snap_crc;
	int rv = 0;
	if (early) {
		rv = push_op(n, (struct snap_op){.kind = SOP_RECV_FINISH});
		if (!rv)
			rv = n->env->store.ops->snap_finish(
				n->env->store.ctx, r->handle, crc, snap_op_cb,
				n);
	} else {
		/* Counted as a log write: msgs_after_persist of this update
		 * and the DONE ack wait for its completion. */
		rv = push_write_rec(n, (struct write_rec){.issued_ns = now_ns(n)});
		if (!rv)
			rv = n->env->store.ops->snap_finish(
				n->env->store.ctx, r->handle, crc, store_cb, n);
		if (!rv) {
			n->writes_issued++;
			n->stats.writes_issued++;
		}
	}
	if (rv) {
		poison(n, "snapshot install failed: stopping");
		return;
	}
	const struct node_snap_head *h = node_snap_reader_head(&r->reader);
	KEEL_ASSERT(h != NULL);
	memcpy(n->dedup, h->dedup, sizeof(n->dedup));
	kv_destroy(n->kv);
	n->kv = r->shadow;
	r->shadow = NULL;
	n->applied = sm->index;
	n->stats.snap_installs++;
	snap_rec_push(n, (struct snap_rec){sm->index, sm->term,
					   r->rx.total_len, r->rx.snap_crc});
	ss->snap_from = sm->index;
	ss->bytes_since = 0;
	/* Writes of ours proposed at an index the snapshot covers may or
	 * may not be in it, and one the installed dedup window marks as
	 * applied ran inside it, unseen here: its reply is lost, so only
	 * UNKNOWN is true (answering DROPPED when a later copy is refused as
	 * a duplicate would deny a write that happened). */
	const struct node_dedup_rec *mine = NULL;
	for (uint32_t i = 0; i < DEDUP_RECS; i++)
		if (n->dedup[i].origin == n->cfg.id &&
		    n->dedup[i].boot == n->boot)
			mine = &n->dedup[i];
	for (uint32_t i = n->pw_lo; i < n->pw_hi; i++) {
		struct pending_write *p = &n->pw[i];
		if (p->dead)
			continue;
		bool ran = mine && p->seq <= mine->high &&
			   (mine->high - p->seq >= DEDUP_WINDOW ||
			    dedup_bit(mine, p->seq));
		if ((p->mode == W_LOCAL && p->index <= sm->index) || ran) {
			uint64_t cookie = p->cookie;
			free_pw(n, i);
			answer(n, cookie, NODE_UNKNOWN, 0, NULL, 0);
		}
	}
	expire_settled(n, sm->index);
	send_ack(n, r->leader, r->rx.id, r->rx.total_len, r->rx.total_len,
		 SNAPXFER_DONE, !early);
	r->handle = 0; /* finished: nothing to abort */
	if (r->kvr)
		kv_snap_reader_destroy(r->kvr);
	r->kvr = NULL;
	memset(&r->rx, 0, sizeof(r->rx));
	r->verified = false;
	r->gen = 0;
}

/* Per tick: an idle staging is forgotten (§3.4 Idle). */
static void recv_tick(struct node *n)
{
	struct snap_recv *r = &n->snap->recv;
	if (r->rx.id.index && now_ns(n) - r->last_ns >= n->cfg.snap_timeout_ns)
		recv_drop(n);
}

/* ---- restore at start (§3.5) ---- */

static void restore_issue(struct node *n)
{
	struct snap_restore *rs = n->snap->restore;
	uint64_t left = rs->len - rs->offset;
	size_t len = (size_t)KEEL_MIN(left, (uint64_t)NODE_SNAP_RESTORE_READ);
	int rv = push_op(n, (struct snap_op){.kind = SOP_RESTORE_READ});
	if (!rv) {
		rv = n->env->store.ops->snap_read(n->env->store.ctx, rs->index,
						  rs->term, rs->offset, len,
						  snap_read_cb, n);
		if (rv)
			pop_op(n);
	}
	if (rv)
		poison(n, "cannot read the snapshot to restore: stopping");
}

static void restore_step(struct node *n, int status, const uint8_t *data,
			 size_t len)
{
	struct snap_restore *rs = n->snap->restore;
	if (n->poisoned || !rs)
		return;
	int rv = status;
	if (!rv && (len == 0 || len > rs->len - rs->offset))
		rv = KEEL_ERR_TRUNCATED;
	if (!rv)
		rv = node_snap_reader_feed(&rs->reader, data, len);
	if (!rv) {
		rs->offset += len;
		if (rs->offset < rs->len) {
			restore_issue(n);
			return;
		}
		rv = node_snap_reader_finish(&rs->reader);
	}
	struct kv *kv = NULL;
	if (!rv)
		rv = kv_snap_reader_finish(rs->kvr, &kv);
	if (rv) {
		poison(n, "the newest snapshot does not decode: stopping");
		return;
	}
	const struct node_snap_head *h = node_snap_reader_head(&rs->reader);
	memcpy(n->dedup, h->dedup, sizeof(n->dedup));
	kv_destroy(n->kv);
	n->kv = kv;
	kv_snap_reader_destroy(rs->kvr);
	xfree(n, rs);
	n->snap->restore = NULL;
	n->restoring = false;
	n->stats.snap_restored = 1;
	process(n);
}

static int restore_begin(struct node *n, const struct env_store_state *st)
{
	struct snap_state *ss = n->snap;
	struct snap_restore *rs = xmalloc(n, sizeof(*rs));
	if (!rs)
		return KEEL_ERR_NOMEM;
	memset(rs, 0, sizeof(*rs));
	rs->index = st->snap_index;
	rs->term = st->snap_term;
	rs->len = st->snap_len;
	rs->kvr = kv_snap_reader_create(n->alloc, n->cfg.snapshot_max_bytes);
	if (!rs->kvr) {
		xfree(n, rs);
		return KEEL_ERR_NOMEM;
	}
	struct node_snap_expect want = {.index = st->snap_index,
					.term = st->snap_term,
					.max_bytes = n->cfg.snapshot_max_bytes,
					.members = &n->cfg.members};
	node_snap_reader_init(&rs->reader, &want, kv_sink, rs->kvr);
	ss->restore = rs;
	snap_rec_push(n, (struct snap_rec){st->snap_index, st->snap_term,
					   st->snap_len, st->snap_crc});
	ss->snap_from = st->snap_index;
	n->applied = st->snap_index;
	n->restoring = true;
	restore_issue(n);
	return n->poisoned ? KEEL_ERR_IO : 0;
}

/* Once per tick, outside raft_ready/raft_advance. */
static void snap_tick(struct node *n)
{
	if (!n->snap || n->poisoned)
		return;
	maybe_snapshot(n);
	if (n->poisoned)
		return;
	snap_arm(n); /* a turn whose timer could not start */
	recv_tick(n);
	send_tick(n);
}

static int snap_create(struct node *n)
{
	struct snap_state *ss = xmalloc(n, sizeof(*ss));
	if (!ss)
		return KEEL_ERR_NOMEM;
	memset(ss, 0, sizeof(*ss));
	n->snap = ss;
	ss->buf = xmalloc(n, n->cfg.snapshot_step_bytes);
	return ss->buf ? 0 : KEEL_ERR_NOMEM;
}

static void snap_destroy(struct node *n)
{
	struct snap_state *ss = n->snap;
	if (!ss)
		return;
	/* A crash: nothing is aborted on the store (the caller drops its
	 * queue), only memory is freed. */
	struct snap_out *so = &ss->out;
	if (so->frozen)
		kv_frozen_destroy(so->frozen);
	if (ss->recv.kvr)
		kv_snap_reader_destroy(ss->recv.kvr);
	if (ss->recv.shadow)
		kv_destroy(ss->recv.shadow);
	if (ss->restore) {
		kv_snap_reader_destroy(ss->restore->kvr);
		xfree(n, ss->restore);
	}
	xfree(n, ss->ops);
	xfree(n, ss->buf);
	xfree(n, ss);
	n->snap = NULL;
}

/* ---- lifecycle ------------------------------------------------------------- */

/* §3.8: a torn tail can leave entries of a newer term durable without the
 * hard state written after them. The term is then at least the newest
 * entry's; the vote of that term was never sent (votes wait for the sync)
 * so it is none. */
static void recover_hard_state(struct raft_hard_state *hs,
			       const struct env_store_state *st)
{
	*hs = st->hard_state;
	if (st->n_entries) {
		uint64_t lt = st->entries[st->n_entries - 1].term;
		if (lt > hs->term) {
			hs->term = lt;
			hs->vote = RAFT_NONE;
		}
	}
}

int node_create(const struct node_config *cfg, const struct env *env,
		struct node **out)
{
	const struct keel_alloc *a = &keel_alloc_libc;
	if (!cfg->reply || cfg->tick_ns == 0 || cfg->max_pending == 0 ||
	    cfg->max_pending > NODE_MAX_PENDING_CAP ||
	    !env->clock.ops->wall_ms)
		return KEEL_ERR_INVAL;
	struct node *n = a->malloc(a->ctx, sizeof(*n));
	if (!n)
		return KEEL_ERR_NOMEM;
	memset(n, 0, sizeof(*n));
	n->cfg = *cfg;
	if (!n->cfg.request_timeout_ns)
		n->cfg.request_timeout_ns = NODE_DEFAULT_TIMEOUT_NS;
	if (!n->cfg.retry_ns)
		n->cfg.retry_ns = (uint64_t)KEEL_MAX(cfg->election_ticks, 1u) *
				  cfg->tick_ns;
	if (!n->cfg.expire_batch)
		n->cfg.expire_batch = NODE_DEFAULT_EXPIRE_BATCH;
	if (!n->cfg.max_tape_bytes)
		n->cfg.max_tape_bytes = NODE_DEFAULT_TAPE_BYTES;
	struct node_config *c = &n->cfg;
	if (!c->snapshot_entries)
		c->snapshot_entries = NODE_SNAP_ENTRIES;
	if (!c->snapshot_log_bytes)
		c->snapshot_log_bytes = NODE_SNAP_LOG_BYTES;
	if (!c->snapshot_step_bytes)
		c->snapshot_step_bytes = NODE_SNAP_STEP;
	c->snapshot_step_bytes =
		KEEL_MIN(c->snapshot_step_bytes, SNAPXFER_MAX_CHUNK);
	if (!c->snapshot_steps_per_turn)
		c->snapshot_steps_per_turn = NODE_SNAP_STEPS;
	if (!c->snapshot_preimage_bytes)
		c->snapshot_preimage_bytes = NODE_SNAP_PREIMAGE;
	if (!c->snapshot_max_bytes)
		c->snapshot_max_bytes = NODE_SNAP_MAX;
	if (!c->snap_window)
		c->snap_window = NODE_SNAP_WINDOW;
	if (!c->snap_max_sends)
		c->snap_max_sends = NODE_SNAP_SENDS;
	if (!c->snap_retry_ns)
		c->snap_retry_ns = c->retry_ns;
	if (!c->snap_timeout_ns)
		c->snap_timeout_ns = 10ull * KEEL_MAX(cfg->election_ticks, 1u) *
				     cfg->tick_ns;
	n->env = env;
	n->alloc = a;
	int rv = KEEL_ERR_NOMEM;
	peer_limits_default(&n->limits, cfg->cluster_id);
	kv_tape_init(&n->tape, a, n->cfg.max_tape_bytes);
	n->boot = env->rand.ops->next(env->rand.ctx);
	n->kv = kv_create(a);
	n->dec = a->malloc(a->ctx, NODE_MAX_MSG_ENTRIES * sizeof(*n->dec));
	n->pw_cap = 2 * cfg->max_pending;
	n->pw = a->malloc(a->ctx, (size_t)n->pw_cap * sizeof(*n->pw));
	n->pr = a->malloc(a->ctx, cfg->max_pending * sizeof(*n->pr));
	n->fr = a->malloc(a->ctx, cfg->max_pending * sizeof(*n->fr));
	n->ex = a->malloc(a->ctx, NODE_MAX_EXPIRE_INFLIGHT * sizeof(*n->ex));
	n->turn = a->malloc(a->ctx, NODE_TURN_MAX * sizeof(*n->turn));
	n->turn_ents = a->malloc(a->ctx, NODE_TURN_MAX * sizeof(*n->turn_ents));
	if (!n->kv || !n->dec || !n->pw || !n->pr || !n->fr || !n->ex ||
	    !n->turn || !n->turn_ents)
		goto fail;

	struct raft_config rc;
	raft_config_default(&rc, cfg->id);
	rc.members = cfg->members;
	rc.election_ticks = cfg->election_ticks;
	rc.heartbeat_ticks = cfg->heartbeat_ticks;
	rc.seed = env->rand.ops->next(env->rand.ctx);
	rc.max_msg_entries = NODE_MAX_MSG_ENTRIES;
	if (cfg->max_msg_entries && cfg->max_msg_entries < NODE_MAX_MSG_ENTRIES)
		rc.max_msg_entries = cfg->max_msg_entries;
	if (cfg->max_inflight_msgs)
		rc.max_inflight_msgs = cfg->max_inflight_msgs;
	rc.max_msg_bytes = 256u << 10;
	rc.alloc = a;
	rv = KEEL_ERR_INVAL;
	n->raft = raft_create(&rc);
	if (!n->raft)
		goto fail;
#ifdef KEEL_MUTANTS
	if (cfg->mutant > 0 && cfg->mutant < 100)
		raft_set_mutant(n->raft, cfg->mutant);
	n->limits.mutant_accept_bad_crc =
		cfg->mutant == NODE_MUTANT_ACCEPT_BAD_CRC;
#endif

	const struct env_store_ops *so = env->store.ops;
	if (so->snap_begin && so->snap_write && so->snap_finish &&
	    so->snap_abort && so->snap_read) {
		rv = snap_create(n);
		if (rv)
			goto fail;
	}
	struct env_store_state st;
	rv = env->store.ops->load(env->store.ctx, &st);
	if (rv)
		goto fail;
	struct raft_hard_state hs;
	recover_hard_state(&hs, &st);
	if (st.snap_index) {
		rv = KEEL_ERR_INVAL; /* a snapshot, but no way to read it */
		if (!n->snap)
			goto fail;
		rv = raft_restore_snapshot(n->raft, &hs, st.snap_index,
					   st.snap_term, &cfg->members,
					   st.entries, st.n_entries);
		if (rv)
			goto fail;
		/* The store's state is borrowed until the next call on it:
		 * the core copied the entries, the reads come now. */
		rv = restore_begin(n, &st);
	} else {
		rv = raft_restore(n->raft, &hs, st.entries, st.n_entries);
	}
	if (rv)
		goto fail;
	rv = KEEL_ERR_NOMEM;
	n->timer = env->clock.ops->timer_start(env->clock.ctx, cfg->tick_ns,
					       tick_cb, n);
	if (!n->timer)
		goto fail;
	*out = n;
	return 0;
fail:
	node_destroy(n);
	return rv;
}

void node_destroy(struct node *n)
{
	if (!n)
		return;
	const struct keel_alloc *a = n->alloc;
	if (n->timer)
		n->env->clock.ops->timer_stop(n->env->clock.ctx, n->timer);
	if (n->flush_timer)
		n->env->clock.ops->timer_stop(n->env->clock.ctx,
					      n->flush_timer);
	for (uint32_t i = 0; i < n->held_n; i++)
		a->free(a->ctx, n->held[(n->held_head + i) % n->held_cap].buf);
	for (uint32_t i = n->pw_lo; i < n->pw_hi; i++)
		a->free(a->ctx, n->pw[i].cmd); /* NULL once dead */
	for (uint32_t i = 0; i < n->n_pr; i++)
		a->free(a->ctx, n->pr[i].cmd);
	for (uint32_t i = 0; i < n->n_ex; i++)
		a->free(a->ctx, n->ex[i].key);
	a->free(a->ctx, n->held);
	a->free(a->ctx, n->wr);
	a->free(a->ctx, n->pw);
	a->free(a->ctx, n->pr);
	a->free(a->ctx, n->fr);
	a->free(a->ctx, n->ex);
	a->free(a->ctx, n->turn);
	a->free(a->ctx, n->turn_ents);
	a->free(a->ctx, n->turn_buf);
	a->free(a->ctx, n->enc);
	a->free(a->ctx, n->buf);
	a->free(a->ctx, n->argv);
	a->free(a->ctx, n->lens);
	a->free(a->ctx, n->dec);
	kv_tape_close(&n->tape);
	snap_destroy(n);
	if (n->kv)
		kv_destroy(n->kv);
	raft_destroy(n->raft);
	a->free(a->ctx, n);
}

void node_stats(const struct node *n, struct node_stats *st)
{
	*st = n->stats;
	st->snap_writing = n->snap && n->snap->out.live;
}

const struct raft *node_raft(const struct node *n)
{
	return n->raft;
}

const struct kv *node_kv(const struct node *n)
{
	return n->kv;
}

uint64_t node_applied(const struct node *n)
{
	return n->applied;
}

uint64_t node_state_digest(const struct node *n)
{
	uint64_t h = kv_digest(n->kv);
	for (uint32_t i = 0; i < DEDUP_RECS; i++) {
		const struct node_dedup_rec *r = &n->dedup[i];
		if (!r->origin)
			continue;
		uint64_t w[5 + NODE_DEDUP_WORDS] = {i, r->origin, r->boot,
						    r->high, r->last_index};
		memcpy(w + 5, r->bits, sizeof(r->bits));
		for (uint32_t k = 0; k < 5 + NODE_DEDUP_WORDS; k++) {
			h = (h ^ w[k]) * 0x9e3779b97f4a7c15ull;
			h ^= h >> 29;
		}
		uint64_t sw[1 + 2 * NODE_DEDUP_STREAMS] = {r->stream_floor};
		for (uint32_t k = 0; k < NODE_DEDUP_STREAMS; k++) {
			sw[1 + 2 * k] = r->streams[k].id;
			sw[2 + 2 * k] = r->streams[k].hw;
		}
		for (uint32_t k = 0; k < 1 + 2 * NODE_DEDUP_STREAMS; k++) {
			h = (h ^ sw[k]) * 0x9e3779b97f4a7c15ull;
			h ^= h >> 29;
		}
	}
	return h;
}

bool node_poisoned(const struct node *n)
{
	return n->poisoned;
}
