/*
 * check.c -- the linearizability search: Wing & Gong's backtracking over
 * the history's call/return events, with Lowe's memoisation (as in Knossos
 * and porcupine), run separately on each key.
 *
 * Per key, calls and returns form a doubly linked list in event order. The
 * search walks it from the head: at a call it tries to linearize that op
 * now (the model must allow it, and the pair (set of linearized ops, model
 * state) must be new); if so the op's call and return are unlinked and the
 * walk restarts at the head. Reaching a return means that op should have
 * been linearized already: undo the last choice (dancing links, LIFO) and
 * try the next call after it. Success is reaching a point where every
 * determinate op is linearized; failure is backtracking past the start.
 *
 * Indeterminate ops (info, or no completion) have no return event: they
 * may be linearized anywhere after their call, and since success does not
 * wait for them they may also never take effect. A "fail" cas from Jepsen
 * stays in as a constraint (its compare did not match).
 *
 * The memo cache is the reason this is fast: two different orders that
 * linearize the same set of ops and reach the same state have the same
 * future, so the second is cut. Sets are bitsets hashed by XOR of a
 * per-op 64-bit value, updated in O(1) per step. Linearizability is local
 * (Herlihy & Wing), so keys are checked one at a time, smallest first; the
 * first failing key is the smallest and is the one reported.
 *
 * No clock here: the caller's should_stop callback is asked every
 * stop_every steps, and step_budget bounds the work.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check/model.h"

#define NONE UINT32_MAX

struct entry {
	uint32_t op;    /* local op index */
	uint32_t match; /* for a call: its return entry, NONE if open */
	uint32_t prev, next;
	bool is_call;
};

struct memo_ent {
	uint64_t hash;
	uint32_t state;
	uint32_t next; /* chain, NONE at the end */
};

struct memo {
	uint32_t *heads;
	size_t cap_heads; /* power of two */
	struct memo_ent *ents;
	uint64_t *bits; /* words per entry, parallel to ents */
	size_t n, cap;
	size_t words;
	size_t bytes, max_bytes;
	bool full; /* passed max_bytes: the key is undecided */
};

struct frame {
	uint32_t entry; /* the call entry lifted */
	uint32_t state; /* state before */
};

struct search {
	const struct keel_alloc *a;
	const struct check_options *opts;
	struct check_model_ctx *model;
	const uint32_t *gidx; /* local -> history op index */
	const struct check_op *hops;
	struct check_mop *ops;
	size_t n;
	uint64_t *zob;  /* per-op hash contribution */
	struct entry *e; /* e[0] is the list head sentinel */
	size_t n_entries;
	uint64_t *bits;  /* linearized set */
	struct frame *stack;
	size_t depth;
	/* Longest prefix seen: best[0..best_len) and the state after it.
	 * Invariant: best[0..low_water) == stack[0..low_water). */
	uint32_t *best;
	size_t best_len, low_water;
	uint32_t best_state;
	struct memo memo;
	uint64_t *steps;
	uint64_t since_poll;
};

enum key_verdict { KEY_OK, KEY_BAD, KEY_STOPPED };

/* ---- memo cache -------------------------------------------------------- */

static int memo_init(struct memo *mc, const struct keel_alloc *a, size_t words,
		     size_t max_bytes)
{
	memset(mc, 0, sizeof(*mc));
	mc->words = words;
	mc->max_bytes = max_bytes;
	mc->cap_heads = 1024;
	mc->heads = a->malloc(a->ctx, mc->cap_heads * sizeof(*mc->heads));
	if (!mc->heads)
		return KEEL_ERR_NOMEM;
	memset(mc->heads, 0xff, mc->cap_heads * sizeof(*mc->heads));
	mc->bytes = mc->cap_heads * sizeof(*mc->heads);
	return 0;
}

static void memo_free(struct memo *mc, const struct keel_alloc *a)
{
	a->free(a->ctx, mc->heads);
	a->free(a->ctx, mc->ents);
	a->free(a->ctx, mc->bits);
	memset(mc, 0, sizeof(*mc));
}

static uint64_t memo_hash(uint64_t set_hash, uint32_t state)
{
	return set_hash ^ check_mix64(0x5bd1e995ull + state);
}

/* Adds (bits, state) unless present. *added says which. KEEL_ERR_TOO_BIG
 * when the cache would pass its byte cap. */
static int memo_add(struct memo *mc, const struct keel_alloc *a,
		    const uint64_t *bits, uint64_t set_hash, uint32_t state,
		    bool *added)
{
	uint64_t h = memo_hash(set_hash, state);
	size_t wb = mc->words * sizeof(uint64_t);
	for (uint32_t i = mc->heads[h & (mc->cap_heads - 1)]; i != NONE;
	     i = mc->ents[i].next) {
		if (mc->ents[i].hash == h && mc->ents[i].state == state &&
		    !memcmp(mc->bits + (size_t)i * mc->words, bits, wb)) {
			*added = false;
			return 0;
		}
	}
	if (mc->n == mc->cap) {
		size_t cap = mc->cap ? mc->cap * 2 : 1024;
		size_t grow = (cap - mc->cap) * (sizeof(struct memo_ent) + wb);
		if (cap >= NONE || mc->bytes + grow > mc->max_bytes) {
			mc->full = true;
			return KEEL_ERR_TOO_BIG;
		}
		struct memo_ent *ents =
			a->realloc(a->ctx, mc->ents, cap * sizeof(*ents));
		if (!ents)
			return KEEL_ERR_NOMEM;
		mc->ents = ents;
		uint64_t *nb = a->realloc(a->ctx, mc->bits, cap * wb);
		if (!nb)
			return KEEL_ERR_NOMEM;
		mc->bits = nb;
		mc->cap = cap;
		mc->bytes += grow;
	}
	if (mc->n >= mc->cap_heads) {
		/* Keep chains short: rehash into twice the heads. */
		size_t ch = mc->cap_heads * 2;
		uint32_t *heads = a->malloc(a->ctx, ch * sizeof(*heads));
		if (!heads)
			return KEEL_ERR_NOMEM;
		memset(heads, 0xff, ch * sizeof(*heads));
		for (size_t i = 0; i < mc->n; i++) {
			size_t b = mc->ents[i].hash & (ch - 1);
			mc->ents[i].next = heads[b];
			heads[b] = (uint32_t)i;
		}
		a->free(a->ctx, mc->heads);
		mc->bytes += (ch - mc->cap_heads) * sizeof(*heads);
		mc->heads = heads;
		mc->cap_heads = ch;
	}
	size_t b = h & (mc->cap_heads - 1);
	mc->ents[mc->n] = (struct memo_ent){
		.hash = h, .state = state, .next = mc->heads[b]};
	memcpy(mc->bits + mc->n * mc->words, bits, wb);
	mc->heads[b] = (uint32_t)mc->n;
	mc->n++;
	*added = true;
	return 0;
}

/* ---- the event list ---------------------------------------------------- */

static void lift(struct entry *e, uint32_t call)
{
	struct entry *c = &e[call];
	e[c->prev].next = c->next;
	if (c->next != NONE)
		e[c->next].prev = c->prev;
	if (c->match != NONE) {
		struct entry *r = &e[c->match];
		e[r->prev].next = r->next;
		if (r->next != NONE)
			e[r->next].prev = r->prev;
	}
}

static void unlift(struct entry *e, uint32_t call)
{
	struct entry *c = &e[call];
	if (c->match != NONE) {
		struct entry *r = &e[c->match];
		e[r->prev].next = c->match;
		if (r->next != NONE)
			e[r->next].prev = c->match;
	}
	e[c->prev].next = call;
	if (c->next != NONE)
		e[c->next].prev = call;
}

struct ev_sort {
	uint64_t seq;
	uint32_t op;
	bool is_call;
};

static int ev_cmp(const void *pa, const void *pb)
{
	const struct ev_sort *x = pa, *y = pb;
	return x->seq < y->seq ? -1 : x->seq > y->seq ? 1 : 0;
}

/* ---- the search -------------------------------------------------------- */

static bool poll_stop(struct search *s)
{
	const struct check_options *o = s->opts;
	(*s->steps)++;
	if (o->step_budget && *s->steps > o->step_budget)
		return true;
	uint32_t every = o->stop_every ? o->stop_every : 4096;
	if (o->should_stop && ++s->since_poll >= every) {
		s->since_poll = 0;
		return o->should_stop(o->stop_ctx);
	}
	return false;
}

static void note_depth(struct search *s)
{
	if (s->depth <= s->best_len)
		return;
	for (size_t i = s->low_water; i < s->depth; i++)
		s->best[i] = s->e[s->stack[i].entry].op;
	s->best_len = s->depth;
	s->low_water = s->depth;
	/* The state after the prefix is the state the top frame led to; the
	 * caller records it (it is the search's current state). */
}

static int search_key(struct search *s, uint32_t init, enum key_verdict *out,
		      size_t determinate)
{
	struct entry *e = s->e;
	uint32_t state = init;
	uint64_t set_hash = 0;
	size_t left = determinate;
	bool added;
	int rv = memo_add(&s->memo, s->a, s->bits, set_hash, state, &added);
	if (rv)
		return rv;
	s->best_state = init;
	uint32_t cur = e[0].next;
	for (;;) {
		if (left == 0) {
			*out = KEY_OK;
			return 0;
		}
		if (poll_stop(s)) {
			*out = KEY_STOPPED;
			return 0;
		}
		KEEL_ASSERT(cur != NONE); /* returns of open ops remain */
		struct entry *en = &e[cur];
		if (en->is_call) {
			uint32_t op = en->op;
			bool legal;
			uint32_t next;
			if ((rv = check_model_step(s->model, &s->ops[op], state,
						   &legal, &next)))
				return rv;
			if (legal) {
				s->bits[op / 64] |= 1ull << (op % 64);
				uint64_t nh = set_hash ^ s->zob[op];
				if ((rv = memo_add(&s->memo, s->a, s->bits, nh,
						   next, &added)))
					return rv;
				if (added) {
					s->stack[s->depth++] = (struct frame){
						.entry = cur, .state = state};
					state = next;
					set_hash = nh;
					if (en->match != NONE)
						left--;
					lift(e, cur);
					if (s->depth > s->best_len) {
						note_depth(s);
						s->best_state = state;
					}
					cur = e[0].next;
					continue;
				}
				s->bits[op / 64] &= ~(1ull << (op % 64));
			}
			cur = en->next;
			continue;
		}
		/* A return: its op had to be linearized by now. */
		if (s->depth == 0) {
			*out = KEY_BAD;
			return 0;
		}
		struct frame f = s->stack[--s->depth];
		if (s->depth < s->low_water)
			s->low_water = s->depth;
		uint32_t op = e[f.entry].op;
		unlift(e, f.entry);
		s->bits[op / 64] &= ~(1ull << (op % 64));
		set_hash ^= s->zob[op];
		state = f.state;
		if (e[f.entry].match != NONE)
			left++;
		cur = e[f.entry].next;
	}
}

/* Fills in the explanation for a failing key: the longest prefix found,
 * and each op that could have come next there. */
static int explain(struct search *s, struct check_result *res)
{
	res->prefix_len = s->best_len;
	size_t from = s->best_len > CHECK_SHOW_PREFIX
			      ? s->best_len - CHECK_SHOW_PREFIX
			      : 0;
	res->n_prefix_tail = 0;
	for (size_t i = from; i < s->best_len; i++)
		res->prefix_tail[res->n_prefix_tail++] = s->gidx[s->best[i]];
	check_value_format(check_model_value(s->model, s->best_state),
			   res->state_after_prefix,
			   sizeof(res->state_after_prefix));
	/* Mark the prefix, find the earliest pending return. */
	memset(s->bits, 0, s->memo.words * sizeof(uint64_t));
	for (size_t i = 0; i < s->best_len; i++)
		s->bits[s->best[i] / 64] |= 1ull << (s->best[i] % 64);
	uint64_t min_ret = CHECK_SEQ_INF;
	for (size_t i = 0; i < s->n; i++) {
		if (s->bits[i / 64] & (1ull << (i % 64)))
			continue;
		const struct check_op *o = &s->hops[s->gidx[i]];
		if (o->ret_seq < min_ret)
			min_ret = o->ret_seq;
	}
	res->n_stuck = res->n_stuck_total = 0;
	for (size_t i = 0; i < s->n; i++) {
		if (s->bits[i / 64] & (1ull << (i % 64)))
			continue;
		const struct check_op *o = &s->hops[s->gidx[i]];
		if (o->call_seq >= min_ret)
			continue;
		bool legal;
		uint32_t next;
		int rv = check_model_step(s->model, &s->ops[i], s->best_state,
					  &legal, &next);
		if (rv)
			return rv;
		res->n_stuck_total++;
		if (res->n_stuck < CHECK_SHOW_STUCK) {
			res->stuck[res->n_stuck] = s->gidx[i];
			res->stuck_why[res->n_stuck++] =
				legal ? CHECK_STUCK_DEAD_END
				      : CHECK_STUCK_MODEL;
		}
	}
	return 0;
}

static void search_free(struct search *s)
{
	const struct keel_alloc *a = s->a;
	a->free(a->ctx, s->ops);
	a->free(a->ctx, s->zob);
	a->free(a->ctx, s->e);
	a->free(a->ctx, s->bits);
	a->free(a->ctx, s->stack);
	a->free(a->ctx, s->best);
	memo_free(&s->memo, a);
}

static int intern_op(struct check_model_ctx *m, const struct check_op *o,
		     struct check_mop *mo)
{
	int rv;
	memset(mo, 0, sizeof(*mo));
	mo->f = o->f;
	mo->outcome = o->outcome;
	mo->has_out = o->has_out;
	if ((rv = check_model_intern(m, &o->arg, &mo->arg)) ||
	    (rv = check_model_intern(m, &o->arg2, &mo->arg2)) ||
	    (rv = check_model_intern(m, &o->out, &mo->out)))
		return rv;
	return 0;
}

/* Checks the ops gidx[0..n) of one key. */
static int check_key(const struct check_history *h,
		     const struct check_options *opts,
		     const struct keel_alloc *a, const uint32_t *gidx,
		     size_t n, uint64_t *steps, struct check_result *res,
		     enum key_verdict *out)
{
	struct search s;
	struct check_model_ctx model;
	struct ev_sort *evs = NULL;
	int rv = KEEL_ERR_NOMEM;
	memset(&s, 0, sizeof(s));
	check_model_init(&model, a);
	s.a = a;
	s.opts = opts;
	s.model = &model;
	s.gidx = gidx;
	s.hops = h->ops;
	s.n = n;
	s.steps = steps;
	size_t words = (n + 63) / 64;
	s.ops = a->malloc(a->ctx, n * sizeof(*s.ops));
	s.zob = a->malloc(a->ctx, n * sizeof(*s.zob));
	s.e = a->malloc(a->ctx, (2 * n + 1) * sizeof(*s.e));
	s.bits = a->malloc(a->ctx, words * sizeof(*s.bits));
	s.stack = a->malloc(a->ctx, n * sizeof(*s.stack));
	s.best = a->malloc(a->ctx, n * sizeof(*s.best));
	evs = a->malloc(a->ctx, 2 * n * sizeof(*evs));
	if (!s.ops || !s.zob || !s.e || !s.bits || !s.stack || !s.best || !evs)
		goto done;
	memset(s.bits, 0, words * sizeof(*s.bits));
	size_t max_bytes = opts->max_cache_bytes ? opts->max_cache_bytes
						 : ((size_t)1 << 30);
	if ((rv = memo_init(&s.memo, a, words, max_bytes)))
		goto done;
	if ((rv = check_model_intern(&model, &h->initial, &model.initial)))
		goto done;

	size_t n_ev = 0, determinate = 0;
	for (size_t i = 0; i < n; i++) {
		const struct check_op *o = &h->ops[gidx[i]];
		if ((rv = intern_op(&model, o, &s.ops[i])))
			goto done;
		s.zob[i] = check_mix64(0x243f6a8885a308d3ull ^ (i * 0x9e37ull));
		evs[n_ev++] = (struct ev_sort){o->call_seq, (uint32_t)i, true};
		if (o->ret_seq != CHECK_SEQ_INF) {
			evs[n_ev++] = (struct ev_sort){o->ret_seq, (uint32_t)i,
						       false};
			determinate++;
		}
	}
	qsort(evs, n_ev, sizeof(*evs), ev_cmp);
	/* Build the list; a call learns its return's entry index. */
	uint32_t *call_of = s.best; /* scratch until the search starts */
	s.e[0] = (struct entry){.op = NONE, .match = NONE, .prev = NONE,
				.next = n_ev ? 1 : NONE, .is_call = false};
	for (size_t k = 0; k < n_ev; k++) {
		uint32_t idx = (uint32_t)(k + 1);
		s.e[idx] = (struct entry){
			.op = evs[k].op,
			.match = NONE,
			.prev = idx - 1,
			.next = k + 1 < n_ev ? idx + 1 : NONE,
			.is_call = evs[k].is_call,
		};
		if (evs[k].is_call)
			call_of[evs[k].op] = idx;
		else
			s.e[call_of[evs[k].op]].match = idx;
	}
	s.n_entries = n_ev + 1;

	rv = search_key(&s, model.initial, out, determinate);
	if (rv == KEEL_ERR_TOO_BIG && s.memo.full) {
		snprintf(res->reason, sizeof(res->reason),
			 "memo cache passed %zu bytes on key with %zu ops",
			 max_bytes, n);
		*out = KEY_STOPPED;
		rv = 0;
	}
	if (!rv && *out == KEY_BAD)
		rv = explain(&s, res);
done:
	a->free(a->ctx, evs);
	search_free(&s);
	check_model_close(&model);
	return rv;
}

struct key_group {
	uint32_t key;
	size_t start, count;
};

static int group_cmp(const void *pa, const void *pb)
{
	const struct key_group *x = pa, *y = pb;
	if (x->count != y->count)
		return x->count < y->count ? -1 : 1;
	return x->key < y->key ? -1 : x->key > y->key ? 1 : 0;
}

static int model_supports(const struct check_history *h, enum check_model m,
			  struct check_result *res)
{
	if (m != CHECK_MODEL_REGISTER)
		return 0;
	for (size_t i = 0; i < h->n_ops; i++) {
		enum check_f f = h->ops[i].f;
		if (f != CHECK_F_READ && f != CHECK_F_WRITE &&
		    f != CHECK_F_CAS) {
			snprintf(res->reason, sizeof(res->reason),
				 "the register model has no %s (op invoked "
				 "on line %u); use --model kv",
				 check_f_name(f), h->ops[i].call_line);
			return KEEL_ERR_INVAL;
		}
	}
	return 0;
}

int check_history_run(const struct check_history *h,
		      const struct check_options *opts,
		      const struct keel_alloc *a, struct check_result *res)
{
	memset(res, 0, sizeof(*res));
	res->n_keys = h->n_keys;
	enum check_model m = opts->model;
	if (m == CHECK_MODEL_AUTO)
		m = h->format == CHECK_FORMAT_ETCD ? CHECK_MODEL_REGISTER
						   : CHECK_MODEL_KV;
	int rv = model_supports(h, m, res);
	if (rv)
		return rv;
	res->verdict = CHECK_LINEARIZABLE;
	if (h->n_ops == 0)
		return 0;

	/* Partition: ops by key (counting sort), keys by size. */
	uint32_t *order = a->malloc(a->ctx, h->n_ops * sizeof(*order));
	struct key_group *groups =
		a->malloc(a->ctx, h->n_keys * sizeof(*groups));
	rv = KEEL_ERR_NOMEM;
	if (!order || !groups)
		goto done;
	for (size_t k = 0; k < h->n_keys; k++)
		groups[k] = (struct key_group){(uint32_t)k, 0, 0};
	for (size_t i = 0; i < h->n_ops; i++) {
		KEEL_ASSERT(h->ops[i].key < h->n_keys);
		groups[h->ops[i].key].count++;
	}
	size_t at = 0;
	for (size_t k = 0; k < h->n_keys; k++) {
		groups[k].start = at;
		at += groups[k].count;
		groups[k].count = 0;
	}
	for (size_t i = 0; i < h->n_ops; i++) {
		struct key_group *g = &groups[h->ops[i].key];
		order[g->start + g->count++] = (uint32_t)i;
	}
	qsort(groups, h->n_keys, sizeof(*groups), group_cmp);

	rv = 0;
	for (size_t k = 0; k < h->n_keys; k++) {
		if (!groups[k].count)
			continue;
		enum key_verdict kv = KEY_OK;
		rv = check_key(h, opts, a, order + groups[k].start,
			       groups[k].count, &res->steps, res, &kv);
		if (rv)
			break;
		if (kv == KEY_STOPPED) {
			res->n_keys_undecided++;
			if (!res->reason[0])
				snprintf(res->reason, sizeof(res->reason),
					 "stopped (deadline or step budget) "
					 "after %llu steps",
					 (unsigned long long)res->steps);
			continue;
		}
		if (kv == KEY_BAD) {
			/* Keys go smallest first: this is the smallest. */
			res->n_keys_failed++;
			res->bad_key = groups[k].key;
			res->bad_key_ops = groups[k].count;
			break;
		}
	}
	if (rv == KEEL_ERR_TOO_BIG)
		snprintf(res->reason, sizeof(res->reason),
			 "a value built by append passed the size cap");
	if (res->n_keys_failed)
		res->verdict = CHECK_NOT_LINEARIZABLE;
	else if (res->n_keys_undecided)
		res->verdict = CHECK_UNDECIDED;
done:
	a->free(a->ctx, order);
	a->free(a->ctx, groups);
	return rv;
}
