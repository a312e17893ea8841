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

#define NODE_MAX_MSG_ENTRIES 256
#define NODE_PROCESS_ROUNDS 1024 /* bound on ready/advance rounds per input */
#define NODE_DEFAULT_TIMEOUT_NS 5000000000ull
#define NODE_DEFAULT_EXPIRE_BATCH 64
#define NODE_MAX_EXPIRE_INFLIGHT 1024
#define NODE_DEFAULT_TAPE_BYTES ((512u << 20) + 1024u)
#define NODE_MAX_REDIRECTS 3 /* NACK-driven resends per retry period */
/* A forwarded command must fit one frame under the default receive limit. */
#define NODE_MAX_FWD_CMD (PEER_MAX_FRAME_DEFAULT - 64u)

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

struct pending_write {
	uint64_t cookie;
	uint64_t seq;
	uint64_t deadline;   /* on now_ns */
	uint64_t next_try;   /* FWD: resend at */
	uint64_t index;      /* LOCAL: where the proposal went */
	uint8_t mode;
	bool handed;         /* proposed or forwarded at least once */
	bool acked;          /* FWD: a leader said it proposed it ... */
	raft_id ack_leader;  /* ... this one, in ack_term */
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

struct expire_inflight {
	uint64_t index; /* proposed at */
	uint32_t key_len;
	uint8_t *key;   /* owned */
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
	bool poisoned; /* a store write failed or kv could not apply: stop */

	uint64_t writes_issued, writes_done;
	struct write_rec *wr; /* ring of issued, not completed writes */
	uint32_t wr_head, wr_n, wr_cap;

	struct held_frame *held; /* FIFO, wait_seq non-decreasing */
	uint32_t held_head, held_n, held_cap;

	struct pending_write *pw;
	uint32_t n_pw;
	struct pending_read *pr;
	uint32_t n_pr;
	struct fwd_read *fr;
	uint32_t n_fr;
	bool want_dispatch; /* something waits for a leader */

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

static void hold(struct node *n, const struct raft_msg *m)
{
	size_t len = encode(n, m);
	if (!len)
		return;
	if (n->held_n == n->held_cap) {
		uint32_t ncap = n->held_cap ? n->held_cap * 2 : 16;
		struct held_frame *nh = xmalloc(n, ncap * sizeof(*nh));
		if (!nh)
			return; /* a lost message: Raft retransmits */
		for (uint32_t i = 0; i < n->held_n; i++)
			nh[i] = n->held[(n->held_head + i) % n->held_cap];
		xfree(n, n->held);
		n->held = nh;
		n->held_cap = ncap;
		n->held_head = 0;
	}
	uint8_t *copy = xmalloc(n, len);
	if (!copy)
		return;
	memcpy(copy, n->enc, len);
	struct held_frame *h = &n->held[(n->held_head + n->held_n) % n->held_cap];
	h->wait_seq = n->writes_issued;
	h->to = m->to;
	h->len = (uint32_t)len;
	h->buf = copy;
	n->held_n++;
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
		uint32_t ncap = n->wr_cap ? n->wr_cap * 2 : 16;
		struct write_rec *nw = xmalloc(n, ncap * sizeof(*nw));
		if (!nw)
			return KEEL_ERR_NOMEM;
		for (uint32_t i = 0; i < n->wr_n; i++)
			nw[i] = n->wr[(n->wr_head + i) % n->wr_cap];
		xfree(n, n->wr);
		n->wr = nw;
		n->wr_cap = ncap;
		n->wr_head = 0;
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
 * The leader's proposal step: the command (argv) stamped with this node's
 * wall clock, relative TTLs made absolute, behind a node header. Returns
 * 0 and *index (where it went), or the core's error (KEEL_ERR_NOT_LEADER,
 * KEEL_ERR_TRANSFER, KEEL_ERR_BUSY, KEEL_ERR_NOMEM).
 */
static int propose_argv(struct node *n, const struct node_entry_hdr *h,
			uint32_t argc, const uint8_t *const *argv,
			const size_t *lens, uint64_t *index)
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
	struct raft_entry e = {.type = RAFT_ENTRY_NORMAL,
			       .len = (uint32_t)(NODE_ENTRY_HEADER + len),
			       .data = n->buf};
	struct raft_event ev = {.type = RAFT_EV_PROPOSE,
				.propose = {.n = 1, .entries = &e}};
	rv = raft_step(n->raft, &ev);
	if (rv)
		return rv;
	struct raft_status st;
	raft_status(n->raft, &st);
	*index = st.last_index;
	return 0;
}

/* Proposes a stored (unstamped) command entry. */
static int propose_cmd(struct node *n, const struct node_entry_hdr *h,
		       const uint8_t *cmd, size_t cmd_len, uint64_t *index)
{
	uint64_t ignored;
	uint32_t argc = 0;
	int rv = decode_cmd(n, cmd, cmd_len, &ignored, &argc);
	if (rv)
		return rv;
	return propose_argv(n, h, argc, n->argv, n->lens, index);
}

/* ---- the dedup window (replicated state) ---------------------------------- */

enum { DEDUP_RUN, DEDUP_DUP, DEDUP_STALE };

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

/* Decides whether entry (origin, boot, seq) at index executes, and records
 * it. Deterministic: depends only on the entries applied before it. */
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
		return DEDUP_RUN;
	}
	rec->last_index = index;
	if (h->seq > rec->high) {
		if (h->seq - rec->high >= DEDUP_WINDOW)
			memset(rec->bits, 0, sizeof(rec->bits));
		else
			for (uint64_t s = rec->high + 1; s < h->seq; s++)
				dedup_clear(rec, s);
		rec->high = h->seq;
		dedup_clear(rec, h->seq);
	} else if (rec->high - h->seq >= DEDUP_WINDOW) {
		return DEDUP_STALE;
	} else if (dedup_bit(rec, h->seq)) {
		return MUTANT(n, NODE_MUTANT_NO_DEDUP) ? DEDUP_RUN : DEDUP_DUP;
	}
	dedup_set(rec, h->seq);
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
	xfree(n, n->pw[i].cmd);
	n->pw[i] = n->pw[--n->n_pw];
}

static void free_pr(struct node *n, uint32_t i)
{
	xfree(n, n->pr[i].cmd);
	n->pr[i] = n->pr[--n->n_pr];
}

static int pw_find(struct node *n, uint64_t seq)
{
	for (uint32_t i = 0; i < n->n_pw; i++)
		if (n->pw[i].seq == seq)
			return (int)i;
	return -1;
}

static int pr_find(struct node *n, uint64_t seq)
{
	for (uint32_t i = 0; i < n->n_pr; i++)
		if (n->pr[i].seq == seq)
			return (int)i;
	return -1;
}

/* Serves read i (its point is applied) and removes it. */
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
		kv_read(n->kv, (int)argc, n->argv, n->lens, wall_ms(n),
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
	for (uint32_t i = 0; i < n->n_pw;) {
		struct pending_write *p = &n->pw[i];
		if (p->seq != keep_seq && p->mode == W_LOCAL &&
		    p->index <= index) {
			uint64_t cookie = p->cookie;
			free_pw(n, i);
			answer(n, cookie, NODE_DROPPED, 0, NULL, 0);
			continue;
		}
		i++;
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
	int verdict = h.origin ? dedup_admit(n, &h, e->index) : DEDUP_RUN;
	bool mine = h.origin == n->cfg.id && h.boot == n->boot &&
		    pw_find(n, h.seq) >= 0;
	uint64_t keep = mine ? h.seq : 0;
	if (verdict != DEDUP_RUN) {
		n->stats.dedup_skipped++;
		settle_lost_slots(n, e->index, keep);
		if (mine) {
			/* Not executed here, and no earlier copy ran (it would
			 * have answered): definitely not executed. */
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
						     .index = rd->index};
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

static void process(struct node *n)
{
	for (int round = 0; round < NODE_PROCESS_ROUNDS && !n->poisoned;
	     round++) {
		struct raft_update u;
		if (!raft_ready(n->raft, &u)) {
			/* A leader became known: hand on what waits for one
			 * (this may propose, so go round again). */
			if (n->want_dispatch && known_leader(n) != RAFT_NONE) {
				dispatch_waiting(n);
				continue;
			}
			return;
		}
		if (n->cfg.observer.update)
			n->cfg.observer.update(n->cfg.observer.ctx, n->cfg.id,
					       &u);
		/* 1. persist */
		if (u.n_entries || u.hard_state_changed)
			persist(n, &u);
		/* A write refused at once poisons the node: nothing of this
		 * update may leave, least of all msgs_after_persist (the
		 * "all writes done" test below would pass them). */
		if (n->poisoned)
			return;
		/* 2. send */
		for (uint32_t i = 0; i < u.n_msgs; i++)
			send_now(n, &u.msgs[i]);
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
	while (n->n_pw) {
		struct pending_write p = n->pw[n->n_pw - 1];
		free_pw(n, n->n_pw - 1);
		answer(n, p.cookie, p.handed ? NODE_UNKNOWN : NODE_DROPPED, 0,
		       NULL, 0);
	}
	while (n->n_pr) {
		uint64_t cookie = n->pr[n->n_pr - 1].cookie;
		free_pr(n, n->n_pr - 1);
		answer(n, cookie, NODE_DROPPED, 0, NULL, 0);
	}
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
	process(n);
}

/* ---- routing requests ---------------------------------------------------------- */

static void forward_write(struct node *n, struct pending_write *p, raft_id to)
{
	struct node_fwd f = {.type = PEER_TYPE_FWD_WRITE,
			     .boot = n->boot,
			     .seq = p->seq,
			     .cmd = p->cmd,
			     .cmd_len = p->cmd_len};
	if (p->mode != W_FWD)
		n->stats.fwd_requests++;
	p->mode = W_FWD;
	p->handed = true;
	p->acked = false;
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
	struct node_entry_hdr h = {n->cfg.id, n->boot, p->seq};
	uint64_t index = 0;
	int rv = propose_cmd(n, &h, p->cmd, p->cmd_len, &index);
	if (rv == KEEL_ERR_NOT_LEADER || rv == KEEL_ERR_TRANSFER)
		return false; /* wait: a leader will be known again */
	if (rv == 0 && p->mode == W_WAIT) {
		p->mode = W_LOCAL;
		p->index = index;
	}
	if (rv == 0) {
		p->handed = true;
		p->acked = true; /* nothing to resend while we lead */
		p->ack_leader = n->cfg.id;
		struct raft_status st;
		raft_status(n->raft, &st);
		p->ack_term = st.term;
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
	for (uint32_t i = 0; i < n->n_pw;) {
		struct pending_write *p = &n->pw[i];
		bool due = p->mode == W_WAIT;
		if (p->mode == W_FWD) {
			/* An ACK holds while its leader still leads its term. */
			bool ack_holds = p->acked && p->ack_leader == leader &&
					 p->ack_term == st.term;
			due = !ack_holds && now >= p->next_try;
		}
		if (due && leader == RAFT_NONE)
			n->want_dispatch = true;
		if (due && route_write(n, i, leader))
			continue;
		i++;
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
	for (uint32_t i = 0; i < n->n_pw;) {
		struct pending_write *p = &n->pw[i];
		if (now < p->deadline) {
			i++;
			continue;
		}
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
	struct node_entry_hdr h = {0, 0, 0};
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
	struct raft_event ev = {.type = RAFT_EV_TICK};
	raft_step(n->raft, &ev);
	process(n);
	if (!n->poisoned) {
		check_disk_stall(n);
		expire_timeouts(n);
		dispatch_waiting(n);
		expire_tick(n);
		process(n);
	}
	n->timer = n->env->clock.ops->timer_start(n->env->clock.ctx,
						  n->cfg.tick_ns, tick_cb, n);
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
	struct node_entry_hdr h = {from, f->boot, f->seq};
	uint64_t index = 0;
	rv = propose_argv(n, &h, argc, n->argv, n->lens, &index);
	if (rv) {
		bool nl = rv == KEEL_ERR_NOT_LEADER || rv == KEEL_ERR_TRANSFER;
		send_nack(n, from, NODE_FWD_KIND_WRITE, f->boot, f->seq,
			  nl ? NODE_FWD_NOT_LEADER : NODE_FWD_BUSY);
		return;
	}
	n->stats.fwd_proposed++;
	struct raft_status st;
	raft_status(n->raft, &st);
	struct node_fwd ack = {.type = PEER_TYPE_FWD_ACK,
			       .boot = f->boot,
			       .seq = f->seq,
			       .term = st.term,
			       .index = index};
	send_fwd(n, from, &ack);
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
	if (n->poisoned)
		return;
	/* Raft frames first (one CRC pass); peer_decode refuses node-level
	 * types with KEEL_ERR_TYPE, and only those get the envelope check. */
	struct raft_event ev = {.type = RAFT_EV_RECEIVE};
	int rv = peer_decode(frame, len, &n->limits, NULL, &ev.receive, n->dec,
			     NODE_MAX_MSG_ENTRIES);
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
		on_fwd_frame(n, sender, type, body, body_len);
		process(n);
		return;
	}
	if (rv || ev.receive.to != n->cfg.id) {
		n->stats.frames_bad++;
		return;
	}
	raft_step(n->raft, &ev);
	process(n);
}

void node_campaign(struct node *n)
{
	if (n->poisoned)
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
	n->pw[n->n_pw++] = p;
	route_write(n, n->n_pw - 1, known_leader(n));
	int i = pw_find(n, p.seq);
	if (i >= 0 && n->pw[i].mode == W_WAIT)
		n->want_dispatch = true;
	return 0;
}

static int request_read(struct node *n, const struct node_request *req)
{
	if (req->flags & NODE_REQ_LOCAL) {
		kv_tape_reset(&n->tape);
		kv_read(n->kv, (int)req->argc, req->argv, req->lens, wall_ms(n),
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
	int rv = (kc->flags & KV_CMD_WRITE) ? request_write(n, req)
					    : request_read(n, req);
	if (rv)
		return rv;
	process(n);
	return 0;
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
	n->env = env;
	n->alloc = a;
	int rv = KEEL_ERR_NOMEM;
	peer_limits_default(&n->limits, cfg->cluster_id);
	kv_tape_init(&n->tape, a, n->cfg.max_tape_bytes);
	n->boot = env->rand.ops->next(env->rand.ctx);
	n->kv = kv_create(a);
	n->dec = a->malloc(a->ctx, NODE_MAX_MSG_ENTRIES * sizeof(*n->dec));
	n->pw = a->malloc(a->ctx, cfg->max_pending * sizeof(*n->pw));
	n->pr = a->malloc(a->ctx, cfg->max_pending * sizeof(*n->pr));
	n->fr = a->malloc(a->ctx, cfg->max_pending * sizeof(*n->fr));
	n->ex = a->malloc(a->ctx, NODE_MAX_EXPIRE_INFLIGHT * sizeof(*n->ex));
	if (!n->kv || !n->dec || !n->pw || !n->pr || !n->fr || !n->ex)
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

	struct env_store_state st;
	rv = env->store.ops->load(env->store.ctx, &st);
	if (rv)
		goto fail;
	struct raft_hard_state hs;
	recover_hard_state(&hs, &st);
	rv = raft_restore(n->raft, &hs, st.entries, st.n_entries);
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
	for (uint32_t i = 0; i < n->held_n; i++)
		a->free(a->ctx, n->held[(n->held_head + i) % n->held_cap].buf);
	for (uint32_t i = 0; i < n->n_pw; i++)
		a->free(a->ctx, n->pw[i].cmd);
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
	a->free(a->ctx, n->enc);
	a->free(a->ctx, n->buf);
	a->free(a->ctx, n->argv);
	a->free(a->ctx, n->lens);
	a->free(a->ctx, n->dec);
	kv_tape_close(&n->tape);
	if (n->kv)
		kv_destroy(n->kv);
	raft_destroy(n->raft);
	a->free(a->ctx, n);
}

void node_stats(const struct node *n, struct node_stats *st)
{
	*st = n->stats;
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

bool node_poisoned(const struct node *n)
{
	return n->poisoned;
}
