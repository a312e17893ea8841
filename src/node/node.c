/*
 * node.c -- one replica: drives the Raft core with ticks, peer frames,
 * client requests and store completions, and handles each update in the
 * fixed order persist -> send -> apply -> answer (see node.h).
 *
 * Messages that depend on unsynced state (raft_update.msgs_after_persist:
 * votes, append acknowledgements) are encoded at once (the update is
 * borrowed) and held until the store has completed every write issued up
 * to that update; completions are FIFO, so "held until writes_done >=
 * wait_seq" is exactly that rule (§3.8: persistent state is updated on
 * stable storage before responding to RPCs).
 *
 * Everything outside goes through env.h: this file includes no POSIX,
 * libuv or stdio header and holds no global state.
 */
#include <string.h>

#include "keel/env.h"
#include "keel/node.h"
#include "keel/peer.h"
#include "keel/raft.h"

#define NODE_MAX_MSG_ENTRIES 256
#define NODE_PROCESS_ROUNDS 1024 /* bound on ready/advance rounds per input */

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
};

struct pending_write {
	uint64_t cookie;
	uint64_t seq;   /* in the command: matches the applied entry */
	uint64_t index; /* where the proposal went in the leader's log */
};

struct pending_read {
	uint64_t cookie;
	uint64_t id;
	uint64_t index; /* read point, valid when known */
	bool known;
	uint32_t key_len;
	uint8_t key[NODE_MAX_KEY];
};

struct node {
	struct node_config cfg;
	const struct env *env;
	const struct keel_alloc *alloc;
	struct raft *raft;
	struct node_sm *sm;
	struct peer_limits limits;
	uint64_t boot; /* random per start: tells this run's proposals apart */
	uint64_t next_seq;
	uint64_t next_read;
	uint64_t timer;
	uint64_t applied;
	bool poisoned; /* a store write failed: stop (never retry a sync) */

	uint64_t writes_issued, writes_done;
	struct write_rec *wr; /* ring of issued, not completed writes */
	uint32_t wr_head, wr_n, wr_cap;

	struct held_frame *held; /* FIFO, wait_seq non-decreasing */
	uint32_t held_head, held_n, held_cap;

	struct pending_write *pw;
	uint32_t n_pw;
	struct pending_read *pr;
	uint32_t n_pr;

	uint8_t *enc;
	size_t enc_cap;
	uint8_t *cmd_buf;
	size_t cmd_cap;
	struct raft_entry *dec;
	struct node_result res; /* scratch, one apply at a time */
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

static void *xrealloc(struct node *n, void *p, size_t sz)
{
	return n->alloc->realloc(n->alloc->ctx, p, sz);
}

/* ---- answering clients --------------------------------------------------- */

static void answer(struct node *n, uint64_t cookie, int status,
		   uint64_t index, const struct node_result *res)
{
	struct node_reply r = {.cookie = cookie,
			       .status = status,
			       .index = index,
			       .result = res};
	if (status == NODE_NOT_LEADER) {
		struct raft_status st;
		raft_status(n->raft, &st);
		r.leader_hint = st.leader;
	}
	n->cfg.reply(n->cfg.reply_ctx, &r);
}

/* ---- network ------------------------------------------------------------- */

/* Encodes m into n->enc; returns the frame length or 0 on failure. */
static size_t encode(struct node *n, const struct raft_msg *m)
{
	size_t need = peer_frame_size(m);
	if (need == SIZE_MAX)
		return 0;
	if (need > n->enc_cap) {
		uint8_t *nb = xrealloc(n, n->enc, need);
		if (!nb)
			return 0;
		n->enc = nb;
		n->enc_cap = need;
	}
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
		struct held_frame *nh = n->alloc->malloc(
			n->alloc->ctx, ncap * sizeof(*nh));
		if (!nh)
			return; /* a lost message: Raft retransmits */
		for (uint32_t i = 0; i < n->held_n; i++)
			nh[i] = n->held[(n->held_head + i) % n->held_cap];
		n->alloc->free(n->alloc->ctx, n->held);
		n->held = nh;
		n->held_cap = ncap;
		n->held_head = 0;
	}
	uint8_t *copy = n->alloc->malloc(n->alloc->ctx, len);
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
		n->alloc->free(n->alloc->ctx, h->buf);
		n->held_head = (n->held_head + 1) % n->held_cap;
		n->held_n--;
	}
}

/* ---- persistence ---------------------------------------------------------- */

static void store_cb(void *arg, int status);

static int push_write_rec(struct node *n, struct write_rec rec)
{
	if (n->wr_n == n->wr_cap) {
		uint32_t ncap = n->wr_cap ? n->wr_cap * 2 : 16;
		struct write_rec *nw =
			n->alloc->malloc(n->alloc->ctx, ncap * sizeof(*nw));
		if (!nw)
			return KEEL_ERR_NOMEM;
		for (uint32_t i = 0; i < n->wr_n; i++)
			nw[i] = n->wr[(n->wr_head + i) % n->wr_cap];
		n->alloc->free(n->alloc->ctx, n->wr);
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
	struct write_rec rec = {0};
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
		n->poisoned = true;
		node_log(n, ENV_LOG_ERROR, "log store write failed: stopping");
		return;
	}
	n->writes_issued++;
	n->stats.writes_issued++;
}

/* ---- applying ------------------------------------------------------------- */

static void answer_reads(struct node *n)
{
	uint32_t w = 0;
	for (uint32_t i = 0; i < n->n_pr; i++) {
		struct pending_read *p = &n->pr[i];
		if (p->known && n->applied >= p->index) {
			node_sm_get(n->sm, p->key, p->key_len, &n->res);
			answer(n, p->cookie, NODE_OK, p->index, &n->res);
			continue;
		}
		n->pr[w++] = *p;
	}
	n->n_pr = w;
}

static void apply_entry(struct node *n, const struct raft_entry *e)
{
	if (n->cfg.observer.apply)
		n->cfg.observer.apply(n->cfg.observer.ctx, n->cfg.id, e);
	n->applied = e->index;
	n->stats.applied++;
	struct node_cmd c = {0};
	bool ours = false;
	if (e->type == RAFT_ENTRY_NORMAL &&
	    node_cmd_decode(e->data, e->len, &c) == 0) {
		int rv = node_sm_apply(n->sm, &c, &n->res);
		/* A replica that cannot apply a committed command cannot go
		 * on: the map would diverge. */
		KEEL_ASSERT(rv == 0);
		ours = c.origin == n->cfg.id && c.boot == n->boot;
	} else if (e->type == RAFT_ENTRY_NORMAL) {
		node_log(n, ENV_LOG_ERROR, "undecodable command skipped");
	}
	/* Answer the proposals this index settles: ours here, or any of ours
	 * that was given this slot (or an earlier one) and lost it. */
	uint32_t w = 0;
	for (uint32_t i = 0; i < n->n_pw; i++) {
		struct pending_write *p = &n->pw[i];
		if (ours && p->seq == c.seq) {
			answer(n, p->cookie, n->res.status, e->index, &n->res);
			continue;
		}
		if (p->index <= e->index) {
			answer(n, p->cookie, NODE_DROPPED, 0, NULL);
			continue;
		}
		n->pw[w++] = *p;
	}
	n->n_pw = w;
}

static void take_reads(struct node *n, const struct raft_update *u)
{
	for (uint32_t k = 0; k < u->n_reads; k++) {
		const struct raft_read *rd = &u->reads[k];
		for (uint32_t i = 0; i < n->n_pr; i++) {
			struct pending_read *p = &n->pr[i];
			if (p->id != rd->id)
				continue;
			if (rd->status == RAFT_READ_OK) {
				p->known = true;
				p->index = rd->index;
			} else {
				answer(n, p->cookie, NODE_DROPPED, 0, NULL);
				n->pr[i] = n->pr[--n->n_pr];
			}
			break;
		}
	}
}

/* ---- the update loop -------------------------------------------------------- */

static void process(struct node *n)
{
	for (int round = 0; round < NODE_PROCESS_ROUNDS && !n->poisoned;
	     round++) {
		struct raft_update u;
		if (!raft_ready(n->raft, &u))
			return;
		if (n->cfg.observer.update)
			n->cfg.observer.update(n->cfg.observer.ctx, n->cfg.id,
					       &u);
		/* 1. persist */
		if (u.n_entries || u.hard_state_changed)
			persist(n, &u);
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

static void store_cb(void *arg, int status)
{
	struct node *n = arg;
	if (status) {
		n->poisoned = true;
		node_log(n, ENV_LOG_ERROR, "log store sync failed: stopping");
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

static void tick_cb(void *arg)
{
	struct node *n = arg;
	n->timer = 0;
	if (n->poisoned)
		return;
	struct raft_event ev = {.type = RAFT_EV_TICK};
	raft_step(n->raft, &ev);
	process(n);
	n->timer = n->env->clock.ops->timer_start(n->env->clock.ctx,
						  n->cfg.tick_ns, tick_cb, n);
}

/* ---- inputs ------------------------------------------------------------------ */

void node_receive(struct node *n, const uint8_t *frame, size_t len)
{
	struct raft_event ev = {.type = RAFT_EV_RECEIVE};
	n->stats.frames_in++;
	int rv = peer_decode(frame, len, &n->limits, NULL, &ev.receive, n->dec,
			     NODE_MAX_MSG_ENTRIES);
	if (rv || ev.receive.to != n->cfg.id) {
		n->stats.frames_bad++;
		return;
	}
	if (n->poisoned)
		return;
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
	struct node_cmd c = {.op = req->op,
			     .origin = n->cfg.id,
			     .boot = n->boot,
			     .seq = ++n->next_seq,
			     .key_len = req->key_len,
			     .key = req->key,
			     .a_len = req->a_len,
			     .a = req->a,
			     .b_len = req->b_len,
			     .b = req->b};
	size_t sz = node_cmd_size(&c);
	if (sz > n->cmd_cap) {
		uint8_t *nb = xrealloc(n, n->cmd_buf, sz);
		if (!nb)
			return KEEL_ERR_NOMEM;
		n->cmd_buf = nb;
		n->cmd_cap = sz;
	}
	size_t len = node_cmd_encode(&c, n->cmd_buf, n->cmd_cap);
	if (!len)
		return KEEL_ERR_INVAL;
	struct raft_entry e = {.type = RAFT_ENTRY_NORMAL,
			       .len = (uint32_t)len,
			       .data = n->cmd_buf};
	struct raft_event ev = {.type = RAFT_EV_PROPOSE,
				.propose = {.n = 1, .entries = &e}};
	int rv = raft_step(n->raft, &ev);
	if (rv == KEEL_ERR_NOT_LEADER || rv == KEEL_ERR_TRANSFER) {
		answer(n, req->cookie, NODE_NOT_LEADER, 0, NULL);
		return 0;
	}
	if (rv) {
		answer(n, req->cookie, NODE_DROPPED, 0, NULL);
		return 0;
	}
	struct raft_status st;
	raft_status(n->raft, &st);
	n->pw[n->n_pw++] = (struct pending_write){
		.cookie = req->cookie, .seq = c.seq, .index = st.last_index};
	return 0;
}

static int request_read(struct node *n, const struct node_request *req)
{
	uint64_t id = ++n->next_read;
	struct raft_event ev = {.type = RAFT_EV_READ_INDEX,
				.read_index = {.id = id}};
	int rv = raft_step(n->raft, &ev);
	if (rv == KEEL_ERR_NOT_LEADER || rv == KEEL_ERR_TRANSFER) {
		answer(n, req->cookie, NODE_NOT_LEADER, 0, NULL);
		return 0;
	}
	if (rv) {
		answer(n, req->cookie, NODE_DROPPED, 0, NULL);
		return 0;
	}
	struct pending_read *p = &n->pr[n->n_pr++];
	memset(p, 0, sizeof(*p));
	p->cookie = req->cookie;
	p->id = id;
	p->key_len = req->key_len;
	memcpy(p->key, req->key, req->key_len);
	return 0;
}

int node_request(struct node *n, const struct node_request *req)
{
	if (req->op < NODE_OP_GET || req->op >= NODE_OP_COUNT ||
	    req->key_len > NODE_MAX_KEY || req->a_len > NODE_MAX_VALUE ||
	    req->b_len > NODE_MAX_VALUE)
		return KEEL_ERR_INVAL;
	if (n->poisoned) {
		answer(n, req->cookie, NODE_DROPPED, 0, NULL);
		return 0;
	}
	struct raft_status st;
	raft_status(n->raft, &st);
	if (st.role != RAFT_LEADER) {
		answer(n, req->cookie, NODE_NOT_LEADER, 0, NULL);
		return 0;
	}
	bool read = req->op == NODE_OP_GET;
	if ((read ? n->n_pr : n->n_pw) >= n->cfg.max_pending) {
		answer(n, req->cookie, NODE_DROPPED, 0, NULL); /* busy */
		return 0;
	}
	int rv = read ? request_read(n, req) : request_write(n, req);
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
	if (!cfg->reply || cfg->tick_ns == 0 || cfg->max_pending == 0)
		return KEEL_ERR_INVAL;
	struct node *n = a->malloc(a->ctx, sizeof(*n));
	if (!n)
		return KEEL_ERR_NOMEM;
	memset(n, 0, sizeof(*n));
	n->cfg = *cfg;
	n->env = env;
	n->alloc = a;
	int rv = KEEL_ERR_NOMEM;
	peer_limits_default(&n->limits, cfg->cluster_id);
	n->boot = env->rand.ops->next(env->rand.ctx);
	n->sm = node_sm_create(a);
	n->dec = a->malloc(a->ctx, NODE_MAX_MSG_ENTRIES * sizeof(*n->dec));
	n->pw = a->malloc(a->ctx, cfg->max_pending * sizeof(*n->pw));
	n->pr = a->malloc(a->ctx, cfg->max_pending * sizeof(*n->pr));
	if (!n->sm || !n->dec || !n->pw || !n->pr)
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
	a->free(a->ctx, n->held);
	a->free(a->ctx, n->wr);
	a->free(a->ctx, n->pw);
	a->free(a->ctx, n->pr);
	a->free(a->ctx, n->enc);
	a->free(a->ctx, n->cmd_buf);
	a->free(a->ctx, n->dec);
	node_sm_destroy(n->sm);
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

const struct node_sm *node_state_machine(const struct node *n)
{
	return n->sm;
}

uint64_t node_applied(const struct node *n)
{
	return n->applied;
}
