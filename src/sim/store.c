/*
 * store.c -- the simulator's log store: an in-memory model of a durable
 * Raft log and hard state (env_store in env.h) that is honest about
 * crashes.
 *
 * A write is queued when issued and becomes durable only when the
 * simulator completes it (after a latency it draws from the seed). Until
 * then it is "unsynced": at a crash, the unsynced writes are cut at a
 * random record boundary (drawn from the seed): the records before the
 * cut survive, the rest is lost. Records of one write are, in order, its
 * entries (the first one carrying the truncation) and then its hard
 * state, so a torn write can leave entries without the hard state stored
 * after them -- the case real recovery must handle (node.c). Completed
 * writes always survive.
 */
#include <string.h>

#include "sim/sim_internal.h"

static void free_entries(struct sim_store *s, struct raft_entry *e,
			 uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		s->alloc->free(s->alloc->ctx, (void *)e[i].data);
}

void sim_store_init(struct sim_store *s, const struct keel_alloc *alloc)
{
	memset(s, 0, sizeof(*s));
	s->alloc = alloc ? alloc : &keel_alloc_libc;
}

void sim_store_close(struct sim_store *s)
{
	free_entries(s, s->log, (uint32_t)s->n_log);
	s->alloc->free(s->alloc->ctx, s->log);
	for (uint32_t i = 0; i < s->n_pending; i++) {
		struct sim_write *w = &s->pending[(s->head + i) % s->cap_pending];
		free_entries(s, w->entries, w->n_entries);
		s->alloc->free(s->alloc->ctx, w->entries);
	}
	s->alloc->free(s->alloc->ctx, s->pending);
	memset(s, 0, sizeof(*s));
}

/* Durable truncation: drops every stored entry with index >= from. */
static void durable_truncate(struct sim_store *s, uint64_t from)
{
	if (from == 0 || from > s->n_log)
		return;
	free_entries(s, s->log + (from - 1), (uint32_t)(s->n_log - (from - 1)));
	s->n_log = from - 1;
}

/* Takes ownership of e's data. */
static int durable_append(struct sim_store *s, const struct raft_entry *e)
{
	KEEL_ASSERT(e->index == s->n_log + 1);
	if (s->n_log == s->cap_log) {
		uint64_t ncap = s->cap_log ? s->cap_log * 2 : 64;
		struct raft_entry *nl = s->alloc->realloc(
			s->alloc->ctx, s->log, ncap * sizeof(*nl));
		if (!nl)
			return KEEL_ERR_NOMEM;
		s->log = nl;
		s->cap_log = ncap;
	}
	s->log[s->n_log++] = *e;
	return 0;
}

int sim_store_submit(struct sim_store *s, const struct env_store_write *w,
		     env_store_cb cb, void *arg)
{
	if (w->n_entries)
		KEEL_ASSERT(w->truncate_from == w->entries[0].index);
	if (s->n_pending == s->cap_pending) {
		uint32_t ncap = s->cap_pending ? s->cap_pending * 2 : 16;
		struct sim_write *np =
			s->alloc->malloc(s->alloc->ctx, ncap * sizeof(*np));
		if (!np)
			return KEEL_ERR_NOMEM;
		for (uint32_t i = 0; i < s->n_pending; i++)
			np[i] = s->pending[(s->head + i) % s->cap_pending];
		s->alloc->free(s->alloc->ctx, s->pending);
		s->pending = np;
		s->cap_pending = ncap;
		s->head = 0;
	}
	struct sim_write nw = {.truncate_from = w->truncate_from,
			       .n_entries = w->n_entries,
			       .has_hard_state = w->has_hard_state,
			       .hard_state = w->hard_state,
			       .cb = cb,
			       .arg = arg};
	if (w->n_entries) {
		nw.entries = s->alloc->malloc(
			s->alloc->ctx, w->n_entries * sizeof(*nw.entries));
		if (!nw.entries)
			return KEEL_ERR_NOMEM;
		for (uint32_t i = 0; i < w->n_entries; i++) {
			nw.entries[i] = w->entries[i];
			uint8_t *d = NULL;
			if (w->entries[i].len) {
				d = s->alloc->malloc(s->alloc->ctx,
						     w->entries[i].len);
				if (!d) {
					free_entries(s, nw.entries, i);
					s->alloc->free(s->alloc->ctx,
						       nw.entries);
					return KEEL_ERR_NOMEM;
				}
				memcpy(d, w->entries[i].data, w->entries[i].len);
			}
			nw.entries[i].data = d;
		}
	}
	s->pending[(s->head + s->n_pending) % s->cap_pending] = nw;
	s->n_pending++;
	s->submitted++;
	return 0;
}

/* Makes records [0, upto) of write w durable; upto = n_entries + 1 means
 * the whole write. Frees what is not kept. */
static void apply_write(struct sim_store *s, struct sim_write *w,
			uint32_t upto)
{
	uint32_t keep = KEEL_MIN(upto, w->n_entries);
	if (keep)
		durable_truncate(s, w->truncate_from);
	for (uint32_t i = 0; i < w->n_entries; i++) {
		if (i < keep && durable_append(s, &w->entries[i]) == 0)
			continue;
		s->alloc->free(s->alloc->ctx, (void *)w->entries[i].data);
	}
	s->alloc->free(s->alloc->ctx, w->entries);
	if (upto > w->n_entries && w->has_hard_state)
		s->hs = w->hard_state;
}

/* Number of records of a write: its entries, then the hard state. */
static uint32_t records(const struct sim_write *w)
{
	return w->n_entries + (w->has_hard_state ? 1 : 0);
}

bool sim_store_complete(struct sim_store *s, env_store_cb *cb, void **arg)
{
	if (s->n_pending == 0)
		return false;
	struct sim_write *w = &s->pending[s->head];
	*cb = w->cb;
	*arg = w->arg;
	apply_write(s, w, w->n_entries + 1);
	s->head = (s->head + 1) % s->cap_pending;
	s->n_pending--;
	s->completed++;
	return true;
}

uint64_t sim_store_crash(struct sim_store *s, struct keel_rand *rand)
{
	uint64_t total = 0;
	for (uint32_t i = 0; i < s->n_pending; i++)
		total += records(&s->pending[(s->head + i) % s->cap_pending]);
	/* The cut: how many unsynced records survive, uniform in [0, total]. */
	uint64_t cut = total ? keel_rand_below(rand, total + 1) : 0;
	uint64_t left = cut;
	for (uint32_t i = 0; i < s->n_pending; i++) {
		struct sim_write *w = &s->pending[(s->head + i) % s->cap_pending];
		uint32_t r = records(w);
		uint32_t keep = (uint32_t)KEEL_MIN(left, (uint64_t)r);
		left -= keep;
		/* keep == r: the whole write; else its first keep records. */
		apply_write(s, w, keep == r ? w->n_entries + 1 : keep);
	}
	s->n_pending = 0;
	s->head = 0;
	return cut;
}

uint64_t sim_store_unsynced_records(const struct sim_store *s)
{
	uint64_t total = 0;
	for (uint32_t i = 0; i < s->n_pending; i++)
		total += records(&s->pending[(s->head + i) % s->cap_pending]);
	return total;
}

uint64_t sim_store_durable_term(const struct sim_store *s, uint64_t index)
{
	if (index == 0 || index > s->n_log)
		return 0;
	return s->log[index - 1].term;
}

const struct raft_entry *sim_store_durable_entry(const struct sim_store *s,
						 uint64_t index)
{
	if (index == 0 || index > s->n_log)
		return NULL;
	return &s->log[index - 1];
}

void sim_store_load(const struct sim_store *s, struct env_store_state *out)
{
	out->hard_state = s->hs;
	out->n_entries = (uint32_t)s->n_log;
	out->entries = s->log;
}
