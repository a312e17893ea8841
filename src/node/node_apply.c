/*
 * node_apply.c -- committed entries into the state machine: the dedup
 * window and per-stream program order (replicated state, decisions 9 and
 * 16 of docs/architecture.md), kv_apply, and the answer of the origin
 * replica from the tape it recorded.
 */
#include <string.h>

#include "node/node_internal.h"

/* ---- the dedup window (replicated state) ---------------------------------- */

enum { DEDUP_RUN, DEDUP_DUP, DEDUP_STALE, DEDUP_ORDER };

bool node_dedup_bit(const struct node_dedup_rec *r, uint64_t seq)
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
static void stream_note(struct node_dedup_rec *r, uint64_t stream, uint64_t seq)
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
		if (node_dedup_bit(rec, h->seq) && !MUTANT(n, NODE_MUTANT_NO_DEDUP))
			return DEDUP_DUP;
		if (h->stream && stream_overtaken(rec, h->stream, h->seq) &&
		    !NO_ORDER(n))
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

/* Writes of ours proposed once at an index another entry now holds. */
static void settle_lost_slots(struct node *n, uint64_t index, uint64_t keep_seq)
{
	for (uint32_t i = n->pw_lo; i < n->pw_hi; i++) {
		struct pending_write *p = &n->pw[i];
		if (!p->dead && p->seq != keep_seq && p->mode == W_LOCAL &&
		    p->index <= index) {
			uint64_t cookie = p->cookie;
			node_free_pw(n, i);
			node_answer(n, cookie, NODE_DROPPED, 0, NULL, 0);
		}
	}
}

/* The one applier: an entry's body by its type. Every replica runs the
 * same bytes through it and ends in the same state; the reply goes to r
 * (a tape at the origin, discarded elsewhere). 0, or KEEL_ERR_NOMEM
 * (the caller stops the replica). */
static int apply_body(struct node *n, const struct node_entry_hdr *h,
		      uint64_t index, const uint8_t *body, size_t len,
		      const struct kv_reply_ops *r, void *rc)
{
	switch (h->type) {
	case NODE_ENTRY_KV:
	case NODE_ENTRY_TXN:
		return kv_apply(n->kv, index, body, len, r, rc);
	case NODE_ENTRY_SESSION:
	case NODE_ENTRY_SESSION_CMD:
		return node_session_apply(n, h->type, index, body, len, r, rc);
	default:
		/* Written by a newer node: skipped alike everywhere. */
		r->error(rc, "ERR this node does not know the log entry's "
			     "type (a newer version wrote it); not executed");
		return 0;
	}
}

void node_apply_entry(struct node *n, const struct raft_entry *e)
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
		node_expire_settled(n, e->index);
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
	if ((h.type == NODE_ENTRY_KV || h.type == NODE_ENTRY_TXN) &&
	    cmd_len >= KV_CMD_HEADER_BYTES && cmd[0] == KV_CMD_VERSION) {
		uint64_t stamp = keel_get_u64(cmd + 1);
		if (stamp > n->applied_ms)
			n->applied_ms = stamp;
	}
	int verdict = h.origin ? dedup_admit(n, &h, e->index) : DEDUP_RUN;
	bool mine = h.origin == n->cfg.id && h.boot == n->boot &&
		    node_pw_find(n, h.seq) >= 0;
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
			int i = node_pw_find(n, h.seq);
			uint64_t cookie = n->pw[i].cookie;
			node_free_pw(n, (uint32_t)i);
			node_answer(n, cookie, NODE_DROPPED, 0, NULL, 0);
		}
		return;
	}
	kv_tape_reset(&n->tape);
	int rv = apply_body(n, &h, e->index, cmd, cmd_len,
			    mine ? &kv_tape_ops : &discard_ops, &n->tape);
	if (rv) {
		/* A replica that cannot apply a committed entry cannot go on:
		 * its state would diverge. Stop; recovery is a restart. */
		node_poison(n, "cannot apply a committed entry (out of memory): "
			  "stopping");
		return;
	}
	settle_lost_slots(n, e->index, keep);
	if (mine) {
		/* It may have moved: settle_lost_slots compacts. */
		int i = node_pw_find(n, h.seq);
		KEEL_ASSERT(i >= 0);
		uint64_t cookie = n->pw[i].cookie;
		node_free_pw(n, (uint32_t)i);
		if (n->tape.failed) /* ran, but the reply is lost */
			node_answer(n, cookie, NODE_UNKNOWN, e->index, NULL, 0);
		else
			node_answer(n, cookie, NODE_OK, e->index, n->tape.buf,
			       n->tape.len);
	}
}
