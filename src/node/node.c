/*
 * node.c -- one replica: drives the Raft core with ticks, peer frames,
 * client requests and store completions, and handles each update in the
 * fixed order persist -> send -> apply -> answer (see node.h); its
 * lifecycle. Requests and forwarding are in node_route.c, applying in
 * node_apply.c, expiry in node_expire.c, snapshots in node_snap.c
 * (node_internal.h has the map).
 *
 * Messages that depend on unsynced state (raft_update.msgs_after_persist:
 * votes, append acknowledgements) are encoded at once (the update is
 * borrowed) and held until the store has completed every write issued up
 * to that update; completions are FIFO, so "held until writes_done >=
 * wait_seq" is exactly that rule (§3.8: persistent state is updated on
 * stable storage before responding to RPCs).
 *
 * Everything outside goes through env.h: no node file includes a POSIX,
 * libuv or stdio header and holds no global state.
 */
#include <string.h>

#include "node/node_internal.h"

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

/* ---- answering clients --------------------------------------------------- */

void node_answer(struct node *n, uint64_t cookie, int status, uint64_t index,
		 const uint8_t *tape, size_t tape_len)
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

void node_send_now(struct node *n, const struct raft_msg *m)
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
void *node_ring_grow(struct node *n, void *ring, uint32_t *cap, uint32_t *head,
		     uint32_t used, size_t elem, uint32_t first)
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
void node_hold_frame(struct node *n, raft_id to, const uint8_t *frame,
		     size_t len)
{
	if (n->held_n == n->held_cap) {
		struct held_frame *nh =
			node_ring_grow(n, n->held, &n->held_cap, &n->held_head,
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

void node_hold(struct node *n, const struct raft_msg *m)
{
	size_t len = encode(n, m);
	if (len)
		node_hold_frame(n, m->to, n->enc, len);
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
void node_send_fwd(struct node *n, raft_id to, const struct node_fwd *f)
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

void node_send_nack(struct node *n, raft_id to, uint8_t kind, uint64_t boot,
		    uint64_t seq, uint8_t reason)
{
	struct node_fwd f = {.type = PEER_TYPE_FWD_NACK,
			     .boot = boot,
			     .seq = seq,
			     .kind = kind,
			     .reason = reason,
			     .hint = known_leader(n)};
	n->stats.fwd_nacks_sent++;
	node_send_fwd(n, to, &f);
}

/* ---- persistence ---------------------------------------------------------- */

int node_push_write_rec(struct node *n, struct write_rec rec)
{
	if (n->wr_n == n->wr_cap) {
		struct write_rec *nw = node_ring_grow(n, n->wr, &n->wr_cap,
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
	int rv = node_push_write_rec(n, rec);
	if (!rv)
		rv = n->env->store.ops->append(n->env->store.ctx, &w, node_store_cb,
					       n);
	if (rv) {
		/* Nothing may be acknowledged from now on. */
		node_poison(n, "log store write failed: stopping");
		return;
	}
	n->writes_issued++;
	n->stats.writes_issued++;
}

/* ---- the update loop -------------------------------------------------------- */

void node_process(struct node *n)
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
		node_propose_turn(n);
		struct raft_update u;
		if (!raft_ready(n->raft, &u)) {
			/* A leader became known: hand on what waits for one
			 * (this may propose, so go round again). */
			if (n->want_dispatch && known_leader(n) != RAFT_NONE) {
				node_dispatch_waiting(n);
				continue;
			}
			/* A read point can arrive without any update (a
			 * leader's FWD_READ_OK for an index already applied):
			 * serve it now, not at the next heartbeat. */
			if (n->n_pr)
				node_answer_reads(n);
			return;
		}
		if (n->cfg.observer.update)
			n->cfg.observer.update(n->cfg.observer.ctx, n->cfg.id,
					       &u);
		/* 0. a received snapshot first: snap_finish(RECEIVED) is
		 * issued before this update's append (raft.h contract) */
		if (u.snapshot)
			node_install_snapshot(n, u.snapshot);
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
				node_send_begin(n, &u.msgs[i]); /* §3.3 */
			else
				node_send_now(n, &u.msgs[i]);
		}
		for (uint32_t i = 0; i < u.n_msgs_after_persist; i++) {
			if (n->writes_done == n->writes_issued ||
			    MUTANT(n, NODE_MUTANT_SEND_BEFORE_PERSIST))
				node_send_now(n, &u.msgs_after_persist[i]);
			else
				node_hold(n, &u.msgs_after_persist[i]);
		}
		/* 3. apply (and 4. answer each write as it applies) */
		if (MUTANT(n, NODE_MUTANT_APPLY_UNCOMMITTED)) {
			for (uint32_t i = 0; i < u.n_entries; i++)
				if (u.entries[i].index > n->applied)
					node_apply_entry(n, &u.entries[i]);
		} else {
			for (uint32_t i = 0; i < u.n_committed; i++)
				node_apply_entry(n, &u.committed[i]);
		}
		node_take_reads(n, &u);
		raft_advance(n->raft, &u);
		/* 4. answer reads whose point is now applied */
		if (n->n_pr)
			node_answer_reads(n);
	}
	KEEL_ASSERT(n->poisoned || !"node: update loop did not settle");
}

/* The node stops for good: every waiting client gets its final answer. */
void node_poison(struct node *n, const char *why)
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
		node_free_pw(n, i);
		node_answer(n, p.cookie, p.handed ? NODE_UNKNOWN : NODE_DROPPED, 0,
		       NULL, 0);
	}
	while (n->n_pr) {
		uint64_t cookie = n->pr[n->n_pr - 1].cookie;
		node_free_pr(n, n->n_pr - 1);
		node_answer(n, cookie, NODE_DROPPED, 0, NULL, 0);
	}
}

/* ---- batching per loop turn ------------------------------------------------ */

static void flush_cb(void *arg)
{
	struct node *n = arg;
	n->flush_timer = 0;
	if (!n->poisoned)
		node_process(n);
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
		node_process(n);
}

void node_store_cb(void *arg, int status)
{
	struct node *n = arg;
	if (status) {
		node_poison(n, "log store sync failed: stopping");
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
		node_process(n);
	}
	if (!n->poisoned && !n->restoring) {
		check_disk_stall(n);
		node_expire_timeouts(n);
		node_dispatch_waiting(n);
		node_expire_tick(n);
		node_process(n);
		node_snap_tick(n);
	}
	n->timer = n->env->clock.ops->timer_start(n->env->clock.ctx,
						  n->cfg.tick_ns, tick_cb, n);
	/* Without its tick the node would never time a request out, elect,
	 * heartbeat or expire again, and nobody would know: stop loudly
	 * instead, every waiting client answered. */
	if (!n->timer)
		node_poison(n, "cannot re-arm the tick timer (out of memory): "
			  "stopping");
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
			if (!node_is_member(n, sender) || sender == n->cfg.id) {
				n->stats.frames_bad++;
				n->stats.snap_bad++;
				return;
			}
			if (type == PEER_TYPE_SNAP_CHUNK)
				node_on_snap_chunk(n, sender, body, body_len);
			else
				node_on_snap_ack(n, sender, body, body_len);
		} else {
			node_on_fwd_frame(n, sender, type, body, body_len);
		}
		defer_process(n);
		return;
	}
	if (rv || ev.receive.to != n->cfg.id) {
		n->stats.frames_bad++;
		return;
	}
	if (ev.receive.type == RAFT_MSG_SNAPSHOT) {
		node_on_snap_msg(n, &ev.receive);
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
	node_process(n);
}

int node_request(struct node *n, const struct node_request *req)
{
	if (req->argc < 1 || req->argc > KV_MAX_ARGC || !req->argv ||
	    !req->lens)
		return KEEL_ERR_INVAL;
	const struct kv_command *kc =
		kv_command_lookup(req->argv[0], req->lens[0]);
	bool session = node_session_cmd(req->argv[0], req->lens[0]) != 0;
	if (!session && (!kc || (kc->flags & KV_CMD_INTERNAL) ||
			 !(kc->flags & (KV_CMD_WRITE | KV_CMD_READ))))
		return KEEL_ERR_INVAL;
	if (session) {
		/* Node-level commands: their syntax is checked here, so a
		 * bad one never reaches the log. */
		const char *err = node_session_validate(
			req->argc, req->argv, req->lens);
		if (err) {
			kv_tape_reset(&n->tape);
			kv_tape_ops.error(&n->tape, err);
			node_answer(n, req->cookie, NODE_OK, 0, n->tape.buf,
				    n->tape.len);
			return 0;
		}
	}
	if (n->poisoned) {
		node_answer(n, req->cookie, NODE_DROPPED, 0, NULL, 0);
		return 0;
	}
	if (n->restoring) {
		/* Not executed: still loading its state; retry elsewhere. */
		node_answer(n, req->cookie, NODE_NOT_LEADER, 0, NULL, 0);
		return 0;
	}
	int rv = session || (kc->flags & KV_CMD_WRITE)
			 ? node_request_write(n, req)
			 : node_request_read(n, req);
	if (rv)
		return rv;
	defer_process(n);
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
	if (!c->max_inflight_writes || c->max_inflight_writes > NODE_DEDUP_WINDOW)
		c->max_inflight_writes = NODE_DEDUP_WINDOW;
	if (!c->snap_timeout_ns)
		c->snap_timeout_ns = 10ull * KEEL_MAX(cfg->election_ticks, 1u) *
				     cfg->tick_ns;
	n->env = env;
	n->alloc = a;
	int rv = KEEL_ERR_NOMEM;
	peer_limits_default(&n->limits, cfg->cluster_id);
	kv_tape_init(&n->tape, a, n->cfg.max_tape_bytes);
	int sm_rv = node_sm_init(&n->sm, a, n->cfg.max_tape_bytes);
	node_sm_set_mutant(&n->sm, n->cfg.mutant, NO_ORDER(n));
	n->boot = env->rand.ops->next(env->rand.ctx);
	n->dec = a->malloc(a->ctx, NODE_MAX_MSG_ENTRIES * sizeof(*n->dec));
	n->pw_cap = 2 * cfg->max_pending;
	n->pw = a->malloc(a->ctx, (size_t)n->pw_cap * sizeof(*n->pw));
	n->pr = a->malloc(a->ctx, cfg->max_pending * sizeof(*n->pr));
	n->fr = a->malloc(a->ctx, cfg->max_pending * sizeof(*n->fr));
	n->ex = a->malloc(a->ctx, NODE_MAX_EXPIRE_INFLIGHT * sizeof(*n->ex));
	n->turn = a->malloc(a->ctx, NODE_TURN_MAX * sizeof(*n->turn));
	n->turn_ents = a->malloc(a->ctx, NODE_TURN_MAX * sizeof(*n->turn_ents));
	if (sm_rv || !n->dec || !n->pw || !n->pr || !n->fr || !n->ex ||
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
		rv = node_snap_create(n);
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
		rv = node_restore_begin(n, &st);
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
	node_snap_destroy(n);
	node_sm_fini(&n->sm);
	raft_destroy(n->raft);
	a->free(a->ctx, n);
}

void node_stats(const struct node *n, struct node_stats *st)
{
	*st = n->stats;
	st->snap_writing = n->snap && n->snap->out.live;
	st->session_runs = n->sm.session_runs;
	st->session_dups = n->sm.session_dups;
}

const struct raft *node_raft(const struct node *n)
{
	return n->raft;
}

const struct kv *node_kv(const struct node *n)
{
	return n->sm.kv;
}

uint64_t node_applied(const struct node *n)
{
	return n->applied;
}

uint64_t node_state_digest(const struct node *n)
{
	return node_sm_digest(&n->sm);
}

bool node_poisoned(const struct node *n)
{
	return n->poisoned;
}
