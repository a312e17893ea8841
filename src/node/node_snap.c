/*
 * node_snap.c -- snapshots (docs/snapshots.md): taking one from a frozen
 * kv, compaction, sending one to a follower in chunks, receiving and
 * installing one, and restoring from the newest at start.
 */
#include <string.h>

#include "node/node_internal.h"

static void snap_turn_cb(void *arg);
static void snap_op_cb(void *arg, int status);
static void snap_read_cb(void *arg, int status, const uint8_t *data, size_t len);
static void flush_reports(struct node *n);
static void restore_step(struct node *n, int status, const uint8_t *data,
			 size_t len);

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

static int push_op(struct node *n, struct snap_op op)
{
	struct snap_state *ss = n->snap;
	if (ss->ops_n == ss->ops_cap) {
		struct snap_op *no = node_ring_grow(n, ss->ops, &ss->ops_cap,
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

/* Stages the session table's bytes (the reader checked their total
 * against NODE_SNAP_SESS_MAX before the first one arrives). */
static int sess_sink(void *ctx, const uint8_t *buf, size_t len)
{
	struct sess_stage *st = ctx;
	if (len > NODE_SNAP_SESS_MAX - st->len)
		return KEEL_ERR_TOO_BIG;
	if (st->len + len > st->cap) {
		size_t ncap = KEEL_MAX(st->len + len, st->cap * 2);
		ncap = KEEL_MIN(ncap, (size_t)NODE_SNAP_SESS_MAX);
		uint8_t *nb = st->a->realloc(st->a->ctx, st->buf, ncap);
		if (!nb)
			return KEEL_ERR_NOMEM;
		st->buf = nb;
		st->cap = ncap;
	}
	memcpy(st->buf + st->len, buf, len);
	st->len += len;
	return 0;
}

static void sess_stage_free(struct sess_stage *st)
{
	if (st->buf)
		st->a->free(st->a->ctx, st->buf);
	st->buf = NULL;
	st->len = st->cap = 0;
}

/* The staged bytes as a table: an empty one for a v1 payload (none). */
static int sess_stage_decode(struct node *n, struct sess_stage *st,
			     struct session_table **out)
{
	if (!st->len) {
		*out = session_table_create(n->alloc);
		return *out ? 0 : KEEL_ERR_NOMEM;
	}
	return session_decode(n->alloc, st->buf, st->len, out);
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
	xfree(n, so->sess);
	so->sess = NULL;
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
	struct kv_frozen *src_ctx = kv_freeze(n->sm.kv, n->alloc);
	if (!src_ctx)
		return; /* out of memory: the next tick tries again */
	uint64_t kv_len = kv_frozen_size(src_ctx);
	/* The session table at A: small next to kv, so copied whole, as the
	 * dedup window is. */
	uint64_t sess_len = session_encoded_size(n->sm.sessions);
	KEEL_ASSERT(sess_len <= NODE_SNAP_SESS_MAX);
	uint8_t *sess = xmalloc(n, (size_t)sess_len);
	struct node_snap_head *h = xmalloc(n, sizeof(*h)); /* 43 KiB */
	if (!h || !sess) {
		xfree(n, h);
		xfree(n, sess);
		kv_frozen_destroy(src_ctx);
		return;
	}
	session_encode(n->sm.sessions, sess);
	memset(h, 0, sizeof(*h));
	h->index = a;
	h->term = term;
	h->kv_len = kv_len;
	h->sess_len = sess_len;
	h->members = n->cfg.members;
	h->stamp_ms = n->sm.stamp_ms;
	if (!MUTANT(n, NODE_MUTANT_SNAP_NO_DEDUP))
		memcpy(h->dedup, n->sm.dedup, sizeof(h->dedup));
	node_snap_writer_init(&so->w, h, frozen_src, src_ctx, sess);
	xfree(n, h);
	struct env_store_snap es = {.index = a,
				    .term = term,
				    .total_len = node_snap_total(kv_len,
								 sess_len),
				    .kind = ENV_SNAP_LOCAL};
	so->frozen = src_ctx;
	so->sess = sess;
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
		node_poison(n, "snapshot store failed: stopping");
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
		node_poison(n, "snapshot write failed: stopping");
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
			xfree(n, so->sess);
			so->sess = NULL;
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
		node_poison(n, "snapshot finish failed: stopping");
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
		node_poison(n, "snapshot store write failed: stopping");
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

static void send_body(struct node *n, raft_id to, int type, const uint8_t *body,
		      size_t body_len)
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
void node_send_begin(struct node *n, const struct raft_msg *m)
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
	node_send_now(n, &m);
}

static void snap_read_cb(void *arg, int status, const uint8_t *data, size_t len)
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
		node_poison(n, "snapshot read failed: stopping");
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
		node_process(n);
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

void node_on_snap_ack(struct node *n, raft_id from, const uint8_t *body,
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
	node_hold_frame(n, to, n->enc, w);
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
	session_table_destroy(r->sess_shadow);
	sess_stage_free(&r->sess);
	r->kvr = NULL;
	r->shadow = NULL;
	r->sess_shadow = NULL;
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
	struct node_snap_expect want = {
		.index = c->id.index,
		.term = c->id.term,
		.max_bytes = n->cfg.snapshot_max_bytes,
		.members = &n->cfg.members,
		/* planted bug: every CRC of the payload ignored, as its
		 * snap_crc and trailer are (recv_verify) */
		.skip_crc = MUTANT(n, NODE_MUTANT_SNAP_SKIP_CRC)};
	r->sess.a = n->alloc;
	node_snap_reader_init(&r->reader, &want, kv_sink, r->kvr, sess_sink,
			      &r->sess);
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
	if (!rv)
		rv = sess_stage_decode(n, &r->sess, &r->sess_shadow);
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

void node_on_snap_chunk(struct node *n, raft_id from, const uint8_t *body,
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
			node_poison(n, "snapshot staging failed: stopping");
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
		node_poison(n, "snapshot staging write failed: stopping");
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
void node_on_snap_msg(struct node *n, const struct raft_msg *m)
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
	node_process(n);
	if (r->gen == gen && r->verified) {
		/* The core did not need it (stale, or its log held it). */
		struct snapxfer_id id = r->rx.id;
		uint64_t total = r->rx.total_len;
		recv_drop(n);
		send_ack(n, m->from, id, total, 0, SNAPXFER_STALE, false);
	}
}

/* u.snapshot: install before anything else of the update (raft.h). */
void node_install_snapshot(struct node *n, const struct raft_snapshot_meta *sm)
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
		rv = node_push_write_rec(n, (struct write_rec){.issued_ns = now_ns(n)});
		if (!rv)
			rv = n->env->store.ops->snap_finish(
				n->env->store.ctx, r->handle, crc, node_store_cb, n);
		if (!rv) {
			n->writes_issued++;
			n->stats.writes_issued++;
		}
	}
	if (rv) {
		node_poison(n, "snapshot install failed: stopping");
		return;
	}
	const struct node_snap_head *h = node_snap_reader_head(&r->reader);
	KEEL_ASSERT(h != NULL);
	node_sm_replace(&n->sm, r->shadow, h->dedup, r->sess_shadow);
	if (h->stamp_ms > n->sm.stamp_ms)
		n->sm.stamp_ms = h->stamp_ms;
	r->shadow = NULL;
	r->sess_shadow = NULL;
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
		if (n->sm.dedup[i].origin == n->cfg.id &&
		    n->sm.dedup[i].boot == n->boot)
			mine = &n->sm.dedup[i];
	for (uint32_t i = n->pw_lo; i < n->pw_hi; i++) {
		struct pending_write *p = &n->pw[i];
		if (p->dead)
			continue;
		bool ran = mine && p->seq <= mine->high &&
			   (mine->high - p->seq >= DEDUP_WINDOW ||
			    node_sm_dedup_bit(mine, p->seq));
		if ((p->mode == W_LOCAL && p->index <= sm->index) || ran) {
			uint64_t cookie = p->cookie;
			node_free_pw(n, i);
			node_answer(n, cookie, NODE_UNKNOWN, 0, NULL, 0);
		}
	}
	node_expire_settled(n, sm->index);
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
		node_poison(n, "cannot read the snapshot to restore: stopping");
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
	struct session_table *sessions = NULL;
	if (!rv)
		rv = kv_snap_reader_finish(rs->kvr, &kv);
	if (!rv) {
		rv = sess_stage_decode(n, &rs->sess, &sessions);
		if (rv)
			kv_destroy(kv);
	}
	if (rv) {
		node_poison(n, "the newest snapshot does not decode: stopping");
		return;
	}
	const struct node_snap_head *h = node_snap_reader_head(&rs->reader);
	node_sm_replace(&n->sm, kv, h->dedup, sessions);
	/* READONLY reads are judged at the leader's time the state is at,
	 * not at 0, from the first moment after a restart */
	if (h->stamp_ms > n->sm.stamp_ms)
		n->sm.stamp_ms = h->stamp_ms;
	sess_stage_free(&rs->sess);
	kv_snap_reader_destroy(rs->kvr);
	xfree(n, rs);
	n->snap->restore = NULL;
	n->restoring = false;
	n->stats.snap_restored = 1;
	node_process(n);
}

int node_restore_begin(struct node *n, const struct env_store_state *st)
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
	rs->sess.a = n->alloc;
	node_snap_reader_init(&rs->reader, &want, kv_sink, rs->kvr, sess_sink,
			      &rs->sess);
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
void node_snap_tick(struct node *n)
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

int node_snap_create(struct node *n)
{
	struct snap_state *ss = xmalloc(n, sizeof(*ss));
	if (!ss)
		return KEEL_ERR_NOMEM;
	memset(ss, 0, sizeof(*ss));
	n->snap = ss;
	ss->buf = xmalloc(n, n->cfg.snapshot_step_bytes);
	return ss->buf ? 0 : KEEL_ERR_NOMEM;
}

void node_snap_destroy(struct node *n)
{
	struct snap_state *ss = n->snap;
	if (!ss)
		return;
	/* A crash: nothing is aborted on the store (the caller drops its
	 * queue), only memory is freed. */
	struct snap_out *so = &ss->out;
	if (so->frozen)
		kv_frozen_destroy(so->frozen);
	xfree(n, so->sess);
	if (ss->recv.kvr)
		kv_snap_reader_destroy(ss->recv.kvr);
	if (ss->recv.shadow)
		kv_destroy(ss->recv.shadow);
	session_table_destroy(ss->recv.sess_shadow);
	sess_stage_free(&ss->recv.sess);
	if (ss->restore) {
		kv_snap_reader_destroy(ss->restore->kvr);
		sess_stage_free(&ss->restore->sess);
		xfree(n, ss->restore);
	}
	xfree(n, ss->ops);
	xfree(n, ss->buf);
	xfree(n, ss);
	n->snap = NULL;
}
