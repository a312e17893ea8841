/*
 * log.c -- the core's in-memory log: a growable array of entries with a
 * movable head, so dropping a compacted prefix (wave 1 storage issue) is
 * cheap. See log.h for the invariants.
 */
#include <string.h>

#include "raft/log.h"

void raft_log_init(struct raft_log *l, const struct keel_alloc *alloc)
{
	memset(l, 0, sizeof(*l));
	l->alloc = alloc;
}

void raft_log_close(struct raft_log *l)
{
	for (uint64_t i = 0; i < l->n; i++)
		l->alloc->free(l->alloc->ctx, (void *)l->e[l->head + i].data);
	l->alloc->free(l->alloc->ctx, l->e);
	memset(l, 0, sizeof(*l));
}

uint64_t raft_log_term(const struct raft_log *l, uint64_t index, bool *ok)
{
	if (index == l->snap_index) {
		*ok = true;
		return l->snap_term;
	}
	if (index < l->snap_index || index > raft_log_last(l)) {
		*ok = false;
		return 0;
	}
	*ok = true;
	return raft_log_get(l, index)->term;
}

/* Makes room for `more` entries after the last one. */
static int reserve(struct raft_log *l, uint64_t more)
{
	if (l->head + l->n + more <= l->cap)
		return 0;
	if (l->head > 0 && l->n + more <= l->cap) {
		/* Slide the live entries to the front instead of growing. */
		memmove(l->e, l->e + l->head, l->n * sizeof(*l->e));
		l->head = 0;
		return 0;
	}
	uint64_t cap = l->cap ? l->cap : 64;
	while (cap < l->n + more)
		cap *= 2;
	struct raft_entry *e =
		l->alloc->malloc(l->alloc->ctx, cap * sizeof(*e));
	if (!e)
		return KEEL_ERR_NOMEM;
	if (l->n)
		memcpy(e, l->e + l->head, l->n * sizeof(*e));
	l->alloc->free(l->alloc->ctx, l->e);
	l->e = e;
	l->cap = cap;
	l->head = 0;
	return 0;
}

int raft_log_append(struct raft_log *l, const struct raft_entry *src,
		    uint64_t n)
{
	if (n == 0)
		return 0;
	KEEL_ASSERT(src[0].index == raft_log_last(l) + 1);
	KEEL_ASSERT(src[0].term >= raft_log_last_term(l));
	int rv = reserve(l, n);
	if (rv)
		return rv;
	struct raft_entry *dst = l->e + l->head + l->n;
	for (uint64_t i = 0; i < n; i++) {
		uint8_t *data = NULL;
		if (src[i].len) {
			data = l->alloc->malloc(l->alloc->ctx, src[i].len);
			if (!data) {
				/* Undo the copies made so far: all or nothing. */
				while (i--)
					l->alloc->free(l->alloc->ctx,
						       (void *)dst[i].data);
				return KEEL_ERR_NOMEM;
			}
			memcpy(data, src[i].data, src[i].len);
		}
		if (i > 0) {
			KEEL_ASSERT(src[i].index == src[i - 1].index + 1);
			KEEL_ASSERT(src[i].term >= src[i - 1].term);
		}
		dst[i] = src[i];
		dst[i].data = data;
	}
	l->n += n;
	return 0;
}

void raft_log_truncate(struct raft_log *l, uint64_t from)
{
	KEEL_ASSERT(from > l->snap_index);
	uint64_t last = raft_log_last(l);
	if (from > last)
		return;
	for (uint64_t i = from; i <= last; i++)
		l->alloc->free(l->alloc->ctx, (void *)raft_log_get(l, i)->data);
	l->n = from - l->snap_index - 1;
	KEEL_ASSERT(raft_log_last(l) == from - 1);
}

void raft_log_compact(struct raft_log *l, uint64_t index)
{
	KEEL_ASSERT(index > l->snap_index);
	KEEL_ASSERT(index <= raft_log_last(l));
	uint64_t term = raft_log_get(l, index)->term;
	uint64_t drop = index - l->snap_index;
	for (uint64_t i = 0; i < drop; i++)
		l->alloc->free(l->alloc->ctx, (void *)l->e[l->head + i].data);
	/* Moving the head is O(1); reserve() slides the live entries back
	 * to the front when the array's tail runs out. */
	l->head += drop;
	l->n -= drop;
	if (l->n == 0)
		l->head = 0;
	l->snap_index = index;
	l->snap_term = term;
}

void raft_log_reset(struct raft_log *l, uint64_t index, uint64_t term)
{
	for (uint64_t i = 0; i < l->n; i++)
		l->alloc->free(l->alloc->ctx, (void *)l->e[l->head + i].data);
	l->head = 0;
	l->n = 0;
	l->snap_index = index;
	l->snap_term = term;
}
