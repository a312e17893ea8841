/*
 * node_expire.c -- time keeping for keys: the leader proposes
 * KEEL.EXPIRE-DELETE for keys its clock says are due (decision 11), at
 * most one in flight per key, a bounded batch per tick.
 */
#include <string.h>

#include "node/node_internal.h"

void node_expire_settled(struct node *n, uint64_t index)
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
	struct node_entry_hdr h = {NODE_ENTRY_KV, 0, 0, 0, 0};
	uint64_t index = 0;
	if (node_propose_argv(n, &h, 3, argv, lens, &index)) {
		xfree(n, copy);
		return 1; /* busy or not leader: next tick */
	}
	n->ex[n->n_ex++] = (struct expire_inflight){
		.index = index, .key_len = (uint32_t)klen, .key = copy};
	n->stats.expire_proposed++;
	x->budget--;
	return 0;
}

void node_expire_tick(struct node *n)
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
	kv_next_expired(n->sm.kv, wall_ms(n),
			(uint64_t)n->cfg.expire_batch + n->n_ex, &v);
}
