/*
 * node_apply.c -- committed entries into the state machine (sm.c: the
 * dedup window, program order, kv, sessions) and the answer of the origin
 * replica from the tape it recorded; writes of ours that lost their log
 * slot are settled here too.
 */
#include <string.h>

#include "node/node_internal.h"

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
	bool mine = h.origin == n->cfg.id && h.boot == n->boot &&
		    node_pw_find(n, h.seq) >= 0;
	uint64_t keep = mine ? h.seq : 0;
	/* The state machine decides (the same on every replica); the origin
	 * records the reply into a tape, the others discard it. */
	int verdict = SM_RAN;
	kv_tape_reset(&n->tape);
	int rv = node_sm_apply(&n->sm, &h, e->index, cmd, cmd_len,
			       mine ? &kv_tape_ops : &discard_ops, &n->tape,
			       &verdict);
	if (rv) {
		/* A replica that cannot apply a committed entry cannot go on:
		 * its state would diverge. Stop; recovery is a restart. */
		node_poison(n, "cannot apply a committed entry (out of memory): "
			  "stopping");
		return;
	}
	if (verdict != SM_RAN) {
		if (verdict == SM_ORDER)
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
