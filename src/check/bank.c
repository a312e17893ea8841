/*
 * bank.c -- the bank model's checks over a parsed bank history (see
 * bank_parse.c and docs/checker.md, "The bank model"):
 *
 *   1. every ok read names exactly the configured accounts, has no
 *      negative balance and sums to the total;
 *   2. with a final ledger: every ok transfer is in it exactly once, no
 *      fail transfer is, info transfers at most once, every id in it was
 *      invoked, and its order respects real time (a transfer that
 *      completed before another was invoked comes first);
 *   3. with a ledger and initial balances: replaying the ledger never
 *      takes a balance below zero, and each ok read equals the state after
 *      some prefix of the ledger, with prefix lengths that respect real
 *      time (see place_reads()).
 *
 * No search is needed: the ledger fixes the serial order of the transfers,
 * so a read's candidates are the L+1 prefix states. Those are hashed
 * incrementally (a sum over accounts of a mixed (account, balance) value,
 * two such sums for 128 bits: a transfer updates two terms in O(1)) and
 * sorted, so a read finds the prefixes that may equal it by binary search;
 * a match is only accepted after comparing the balances exactly, against
 * the state rebuilt from a checkpoint (every K-th prefix state is kept, K
 * chosen so checkpoints stay under 32 MiB). Total cost O((L + R) log L +
 * R * (N + K)) for L ledger entries, R reads and N accounts.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check/check_internal.h"

#define NONE UINT32_MAX
#define CHECKPOINT_CELLS ((size_t)1 << 22) /* 32 MiB of int64 */
#define NEAREST_SCAN ((size_t)1 << 20)    /* prefixes scanned per read */

static const char *const kind_names[CHECK_BANK_KINDS] = {
	[CHECK_BANK_READ_TOTAL] = "read-total",
	[CHECK_BANK_READ_NEGATIVE] = "read-negative",
	[CHECK_BANK_READ_MISSING] = "read-missing-account",
	[CHECK_BANK_READ_UNKNOWN] = "read-unknown-account",
	[CHECK_BANK_LOST] = "lost-transfer",
	[CHECK_BANK_FAILED_APPLIED] = "failed-transfer-applied",
	[CHECK_BANK_DUPLICATE] = "duplicate-transfer",
	[CHECK_BANK_NEVER_INVOKED] = "never-invoked",
	[CHECK_BANK_LEDGER_ORDER] = "ledger-order",
	[CHECK_BANK_REPLAY_NEGATIVE] = "replay-negative",
	[CHECK_BANK_NO_PREFIX] = "read-matches-no-prefix",
	[CHECK_BANK_REAL_TIME] = "read-real-time",
};

const char *check_bank_kind_name(enum check_bank_kind kind)
{
	if ((unsigned)kind < CHECK_BANK_KINDS)
		return kind_names[kind];
	return "?";
}

/* A violation template: everything "none". */
static struct check_bank_violation blank(enum check_bank_kind kind,
					 uint32_t op)
{
	struct check_bank_violation v;
	memset(&v, 0, sizeof(v));
	v.kind = kind;
	v.op = op;
	v.other = v.lo_op = v.hi_op = v.floor_read = NONE;
	v.account = NONE;
	return v;
}

/* Whether a violation of this kind would still be shown (so its costly
 * details are worth computing). */
static bool will_show(const struct check_bank_result *res,
		      enum check_bank_kind kind)
{
	return res->n_by_kind[kind] < CHECK_BANK_SHOW;
}

static void report(struct check_bank_result *res,
		   const struct check_bank_violation *v)
{
	KEEL_ASSERT((unsigned)v->kind < CHECK_BANK_KINDS);
	if (will_show(res, v->kind)) {
		KEEL_ASSERT(res->n_shown < KEEL_ARRAY_LEN(res->shown));
		res->shown[res->n_shown++] = *v;
	}
	res->n_by_kind[v->kind]++;
	res->n_violations++;
}

static const int64_t *read_cells(const struct check_bank_history *h,
				 const struct check_bank_op *o)
{
	return h->cells + o->cells_at;
}

/* ---- check 1: each ok read on its own ---------------------------------- */

static void check_reads(const struct check_bank_history *h,
			struct check_bank_result *res)
{
	for (size_t i = 0; i < h->n_ops; i++) {
		const struct check_bank_op *o = &h->ops[i];
		if (o->f != CHECK_BANK_READ || o->outcome != CHECK_BANK_OK)
			continue;
		const int64_t *b = read_cells(h, o);
		struct check_bank_violation v;
		if (o->n_missing) {
			v = blank(CHECK_BANK_READ_MISSING, (uint32_t)i);
			v.account = o->first_missing;
			v.value = o->n_missing;
			report(res, &v);
		}
		if (o->n_unknown) {
			v = blank(CHECK_BANK_READ_UNKNOWN, (uint32_t)i);
			v.value = o->n_unknown;
			report(res, &v);
		}
		int64_t sum = 0;
		bool overflow = false;
		uint32_t neg = NONE;
		for (uint32_t a = 0; a < h->n_accounts; a++) {
			if (b[a] < 0 && neg == NONE)
				neg = a;
			if (!overflow && __builtin_add_overflow(sum, b[a], &sum))
				overflow = true;
		}
		if (neg != NONE) {
			v = blank(CHECK_BANK_READ_NEGATIVE, (uint32_t)i);
			v.account = neg;
			v.value = b[neg];
			report(res, &v);
		}
		if (overflow || sum != h->total) {
			v = blank(CHECK_BANK_READ_TOTAL, (uint32_t)i);
			v.value = overflow ? 0 : sum;
			v.overflow = overflow;
			report(res, &v);
		}
	}
}

/* ---- check 2: the ledger against the transfers ------------------------- */

struct run {
	const struct check_bank_history *h;
	const struct keel_alloc *a;
	struct check_bank_result *res;
	size_t L;            /* ledger entries */
	uint32_t *first_pos; /* per op: first ledger position, NONE */
	uint32_t *count;     /* per op: ledger occurrences */
	/* check 3 */
	uint32_t n;         /* accounts */
	size_t K;           /* checkpoint interval */
	int64_t *cp;        /* state after k*K entries, for each k */
	struct prefix *pre; /* L + 1 prefix hashes, sorted */
	int64_t *tmp;       /* n cells */
};

static int check_ledger(struct run *r)
{
	const struct check_bank_history *h = r->h;
	const struct keel_alloc *a = r->a;
	struct check_bank_result *res = r->res;
	for (size_t p = 0; p < r->L; p++) {
		const struct check_bank_entry *e = &h->ledger[p];
		struct check_bank_violation v;
		if (e->op == NONE) {
			v = blank(CHECK_BANK_NEVER_INVOKED, NONE);
			v.pos = p;
			report(res, &v);
			continue;
		}
		const struct check_bank_op *o = &h->ops[e->op];
		KEEL_ASSERT(o->f == CHECK_BANK_TRANSFER);
		if (++r->count[e->op] == 1) {
			r->first_pos[e->op] = (uint32_t)p;
			if (o->outcome == CHECK_BANK_FAIL) {
				v = blank(CHECK_BANK_FAILED_APPLIED, e->op);
				v.pos = p;
				report(res, &v);
			}
		} else if (r->count[e->op] == 2) {
			v = blank(CHECK_BANK_DUPLICATE, e->op);
			v.pos = r->first_pos[e->op];
			v.pos2 = p;
			report(res, &v);
		}
	}
	/* Occurrence counts for the duplicates shown. */
	for (size_t s = 0; s < res->n_shown; s++)
		if (res->shown[s].kind == CHECK_BANK_DUPLICATE)
			res->shown[s].value = r->count[res->shown[s].op];
	for (size_t i = 0; i < h->n_ops; i++) {
		const struct check_bank_op *o = &h->ops[i];
		if (o->f == CHECK_BANK_TRANSFER &&
		    o->outcome == CHECK_BANK_OK && r->count[i] == 0) {
			struct check_bank_violation v =
				blank(CHECK_BANK_LOST, (uint32_t)i);
			report(res, &v);
		}
	}
	/* Real time: if transfer j completed ok before transfer i was
	 * invoked, j took effect first, so its (first) position must come
	 * first. Scan positions backwards keeping the earliest completion
	 * among later positions; report in ledger order. */
	if (r->L == 0)
		return 0;
	uint32_t *later = a->malloc(a->ctx, r->L * sizeof(*later));
	if (!later)
		return KEEL_ERR_NOMEM;
	uint32_t best = NONE; /* op with the smallest ret_seq after p */
	for (size_t p = r->L; p-- > 0;) {
		later[p] = best;
		uint32_t op = h->ledger[p].op;
		if (op == NONE || r->first_pos[op] != p ||
		    h->ops[op].outcome != CHECK_BANK_OK)
			continue;
		if (best == NONE || h->ops[op].ret_seq < h->ops[best].ret_seq)
			best = op;
	}
	for (size_t p = 0; p < r->L; p++) {
		uint32_t op = h->ledger[p].op;
		uint32_t j = later[p];
		if (op == NONE || r->first_pos[op] != p || j == NONE)
			continue;
		if (h->ops[j].ret_seq < h->ops[op].call_seq) {
			struct check_bank_violation v =
				blank(CHECK_BANK_LEDGER_ORDER, op);
			v.other = j;
			v.pos = p;
			v.pos2 = r->first_pos[j];
			report(res, &v);
		}
	}
	a->free(a->ctx, later);
	return 0;
}

/* ---- check 3: reads against the ledger's prefix states ---------------- */

struct prefix {
	uint64_t h1, h2;
	uint32_t k; /* prefix length: the state after k ledger entries */
};

static uint64_t term(uint64_t seed, uint32_t account, int64_t balance)
{
	return check_mix64(seed ^ check_mix64(((uint64_t)account << 1) ^
					      check_mix64((uint64_t)balance)));
}

#define SEED1 0x6b656c2d62616e6bull /* "kel-bank" */
#define SEED2 0x0123456789abcdefull

static void hash_state(const int64_t *b, uint32_t n, uint64_t *h1,
		       uint64_t *h2)
{
	uint64_t x = 0, y = 0;
	for (uint32_t a = 0; a < n; a++) {
		x += term(SEED1, a, b[a]);
		y += term(SEED2, a, b[a]);
	}
	*h1 = x;
	*h2 = y;
}

/* Moves the hash from balance old to new on one account. */
static void hash_move(uint64_t *h1, uint64_t *h2, uint32_t a, int64_t old,
		      int64_t now)
{
	*h1 += term(SEED1, a, now) - term(SEED1, a, old);
	*h2 += term(SEED2, a, now) - term(SEED2, a, old);
}

static int cmp_prefix(const void *x, const void *y)
{
	const struct prefix *p = x, *q = y;
	if (p->h1 != q->h1)
		return p->h1 < q->h1 ? -1 : 1;
	if (p->h2 != q->h2)
		return p->h2 < q->h2 ? -1 : 1;
	return p->k < q->k ? -1 : p->k > q->k;
}

/* Applies ledger entry p to b. The replay (replay()) has proven that no
 * step overflows. */
static void apply(const struct run *r, int64_t *b, size_t p)
{
	const struct check_bank_op *o = &r->h->ops[r->h->ledger[p].op];
	b[o->from] -= o->amount;
	b[o->to] += o->amount;
}

/* The state after k ledger entries, into out (r->n cells). */
static void state_at(const struct run *r, size_t k, int64_t *out)
{
	KEEL_ASSERT(k <= r->L);
	size_t c = k / r->K;
	memcpy(out, r->cp + c * r->n, r->n * sizeof(*out));
	for (size_t p = c * r->K; p < k; p++)
		apply(r, out, p);
}

/* Replays the ledger from the initial balances: keeps the checkpoints,
 * hashes every prefix state, reports transfers that take a balance below
 * zero. Returns 0, NOMEM, or TOO_BIG when a balance overflows int64 (the
 * check is then skipped). */
static int replay(struct run *r)
{
	const struct check_bank_history *h = r->h;
	const struct keel_alloc *a = r->a;
	size_t cells = (r->L + 1) * r->n;
	r->K = cells <= CHECKPOINT_CELLS
		       ? 1
		       : (cells + CHECKPOINT_CELLS - 1) / CHECKPOINT_CELLS;
	size_t n_cp = r->L / r->K + 1;
	r->cp = a->malloc(a->ctx, n_cp * r->n * sizeof(*r->cp));
	r->pre = a->malloc(a->ctx, (r->L + 1) * sizeof(*r->pre));
	r->tmp = a->malloc(a->ctx, r->n * sizeof(*r->tmp));
	int64_t *b = a->malloc(a->ctx, r->n * sizeof(*b));
	if (!r->cp || !r->pre || !r->tmp || !b) {
		a->free(a->ctx, b);
		return KEEL_ERR_NOMEM;
	}
	memcpy(b, h->initial, r->n * sizeof(*b));
	uint64_t h1, h2;
	hash_state(b, r->n, &h1, &h2);
	for (size_t k = 0;; k++) {
		if (k % r->K == 0)
			memcpy(r->cp + (k / r->K) * r->n, b,
			       r->n * sizeof(*b));
		r->pre[k] = (struct prefix){.h1 = h1, .h2 = h2,
					    .k = (uint32_t)k};
		if (k == r->L)
			break;
		const struct check_bank_op *o = &h->ops[h->ledger[k].op];
		int64_t from, to;
		if (__builtin_sub_overflow(b[o->from], o->amount, &from)) {
			snprintf(r->res->skipped, sizeof(r->res->skipped),
				 "a balance overflows replaying ledger "
				 "position %zu",
				 k);
			a->free(a->ctx, b);
			return KEEL_ERR_TOO_BIG;
		}
		hash_move(&h1, &h2, o->from, b[o->from], from);
		b[o->from] = from;
		if (__builtin_add_overflow(b[o->to], o->amount, &to)) {
			snprintf(r->res->skipped, sizeof(r->res->skipped),
				 "a balance overflows replaying ledger "
				 "position %zu",
				 k);
			a->free(a->ctx, b);
			return KEEL_ERR_TOO_BIG;
		}
		hash_move(&h1, &h2, o->to, b[o->to], to);
		b[o->to] = to;
		if (b[o->from] < 0 && o->from != o->to && o->amount > 0) {
			struct check_bank_violation v = blank(
				CHECK_BANK_REPLAY_NEGATIVE, h->ledger[k].op);
			v.pos = k;
			v.account = o->from;
			v.value = b[o->from];
			report(r->res, &v);
		}
	}
#ifdef KEEL_DEBUG
	int64_t sum = 0; /* transfers move money, never make or lose it */
	for (uint32_t i = 0; i < r->n; i++)
		KEEL_ASSERT(!__builtin_add_overflow(sum, b[i], &sum));
	KEEL_ASSERT(sum == h->total);
#endif
	a->free(a->ctx, b);
	qsort(r->pre, r->L + 1, sizeof(*r->pre), cmp_prefix);
	return 0;
}

/* The run of r->pre whose hash is the read's: [*first, *end). */
static void hash_range(const struct run *r, uint64_t h1, uint64_t h2,
		       size_t *first, size_t *end)
{
	size_t lo = 0, hi = r->L + 1;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct prefix *p = &r->pre[mid];
		if (p->h1 < h1 || (p->h1 == h1 && p->h2 < h2))
			lo = mid + 1;
		else
			hi = mid;
	}
	*first = lo;
	hi = r->L + 1;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct prefix *p = &r->pre[mid];
		if (p->h1 == h1 && p->h2 == h2)
			lo = mid + 1;
		else
			hi = mid;
	}
	*end = lo;
}

/* Whether the state after k entries is exactly the read's balances. */
static bool equals(const struct run *r, size_t k, const int64_t *read)
{
	state_at(r, k, r->tmp);
	return !memcmp(r->tmp, read, r->n * sizeof(*read));
}

/* The smallest k in [lo, hi] whose state equals the read (by hash, then
 * exactly), or SIZE_MAX. */
static size_t first_match(const struct run *r, size_t first, size_t end,
			  size_t lo, size_t hi, const int64_t *read)
{
	size_t a = first, b = end;
	while (a < b) {
		size_t mid = a + (b - a) / 2;
		if (r->pre[mid].k < lo)
			a = mid + 1;
		else
			b = mid;
	}
	for (; a < end && r->pre[a].k <= hi; a++)
		if (equals(r, r->pre[a].k, read))
			return r->pre[a].k;
	return SIZE_MAX;
}

/* For a read that matches no prefix: the prefix around the allowed window
 * whose state differs from the read in the fewest accounts, and those
 * accounts. Incremental: one transfer changes at most two accounts. */
static void nearest(const struct run *r, const int64_t *read,
		    struct check_bank_violation *v)
{
	size_t a = KEEL_MIN(v->lo, v->hi), b = KEEL_MAX(v->lo, v->hi);
	a = KEEL_MIN(a, r->L);
	b = KEEL_MIN(b, r->L);
	if (b - a > NEAREST_SCAN)
		b = a + NEAREST_SCAN;
	int64_t *s = r->tmp;
	state_at(r, a, s);
	uint32_t diff = 0;
	for (uint32_t i = 0; i < r->n; i++)
		diff += s[i] != read[i];
	uint32_t best = diff;
	size_t best_k = a;
	for (size_t k = a; k < b; k++) {
		const struct check_bank_op *o = &r->h->ops[r->h->ledger[k].op];
		diff -= s[o->from] != read[o->from];
		if (o->to != o->from)
			diff -= s[o->to] != read[o->to];
		apply(r, s, k);
		diff += s[o->from] != read[o->from];
		if (o->to != o->from)
			diff += s[o->to] != read[o->to];
		if (diff < best) {
			best = diff;
			best_k = k + 1;
		}
	}
	state_at(r, best_k, s);
	v->nearest = best_k;
	v->n_diff = best;
	v->n_diff_shown = 0;
	for (uint32_t i = 0; i < r->n && v->n_diff_shown < CHECK_BANK_DIFF;
	     i++) {
		if (s[i] == read[i])
			continue;
		v->diff_account[v->n_diff_shown] = i;
		v->diff_state[v->n_diff_shown] = s[i];
		v->n_diff_shown++;
	}
}

/* Gives each ok read a prefix length k: its state equals the read, k
 * includes every transfer that completed ok before the read was invoked
 * (k > that transfer's position), excludes every transfer invoked after the
 * read completed (k <= its position), and k(A) <= k(B) whenever read A
 * completed before read B was invoked.
 *
 * Greedy in invocation order, each read taking the smallest allowed k, is
 * exact: the reads constraining B (completed before B's invocation) were
 * invoked earlier, so they are placed first, and by induction every greedy
 * k is <= the k of any valid placement; so if greedy finds nothing for a
 * read, no placement exists. The first such read is reported (with what
 * bounds it). A read whose state is no prefix state at all is reported as
 * NO_PREFIX and does not constrain the others. */
static int place_reads(struct run *r)
{
	const struct check_bank_history *h = r->h;
	const struct keel_alloc *a = r->a;
	uint64_t S = h->n_events;
	/* Events by position: op * 2 + (1 if a completion). */
	uint32_t *ev = a->malloc(a->ctx, (S + 1) * sizeof(*ev));
	uint32_t *lo = a->malloc(a->ctx, h->n_ops * sizeof(*lo) + 1);
	uint32_t *lo_op = a->malloc(a->ctx, h->n_ops * sizeof(*lo_op) + 1);
	uint32_t *hi = a->malloc(a->ctx, h->n_ops * sizeof(*hi) + 1);
	uint32_t *hi_op = a->malloc(a->ctx, h->n_ops * sizeof(*hi_op) + 1);
	uint32_t *k_of = a->malloc(a->ctx, h->n_ops * sizeof(*k_of) + 1);
	int rv = KEEL_ERR_NOMEM;
	if (!ev || !lo || !lo_op || !hi || !hi_op || !k_of)
		goto out;
	rv = 0;
	for (uint64_t s = 0; s <= S; s++)
		ev[s] = NONE;
	for (size_t i = 0; i < h->n_ops; i++) {
		const struct check_bank_op *o = &h->ops[i];
		KEEL_ASSERT(o->call_seq >= 1 && o->call_seq <= S);
		ev[o->call_seq] = (uint32_t)(i * 2);
		if (o->ret_seq != CHECK_SEQ_INF) {
			KEEL_ASSERT(o->ret_seq > o->call_seq && o->ret_seq <= S);
			ev[o->ret_seq] = (uint32_t)(i * 2 + 1);
		}
	}
	/* Forward: the lower bound from transfers completed ok. */
	uint32_t max_k = 0, max_op = NONE;
	for (uint64_t s = 1; s <= S; s++) {
		if (ev[s] == NONE)
			continue;
		uint32_t i = ev[s] / 2;
		const struct check_bank_op *o = &h->ops[i];
		bool ret = ev[s] & 1;
		if (!ret && o->f == CHECK_BANK_READ) {
			lo[i] = max_k;
			lo_op[i] = max_op;
		} else if (ret && o->f == CHECK_BANK_TRANSFER &&
			   o->outcome == CHECK_BANK_OK &&
			   r->first_pos[i] != NONE &&
			   r->first_pos[i] + 1 > max_k) {
			max_k = r->first_pos[i] + 1;
			max_op = i;
		}
	}
	/* Backward: the upper bound from transfers invoked later. */
	uint32_t min_k = (uint32_t)r->L, min_op = NONE;
	for (uint64_t s = S; s >= 1; s--) {
		if (ev[s] == NONE)
			continue;
		uint32_t i = ev[s] / 2;
		const struct check_bank_op *o = &h->ops[i];
		bool ret = ev[s] & 1;
		if (ret && o->f == CHECK_BANK_READ) {
			hi[i] = min_k;
			hi_op[i] = min_op;
		} else if (!ret && o->f == CHECK_BANK_TRANSFER &&
			   r->first_pos[i] != NONE && r->first_pos[i] < min_k) {
			min_k = r->first_pos[i];
			min_op = i;
		}
	}
	/* Forward again: place the reads. */
	struct check_bank_result *res = r->res;
	bool stuck = false; /* a read could not be placed: stop placing */
	uint32_t floor = 0, floor_read = NONE;
	for (uint64_t s = 1; s <= S; s++) {
		if (ev[s] == NONE)
			continue;
		uint32_t i = ev[s] / 2;
		const struct check_bank_op *o = &h->ops[i];
		if (o->f != CHECK_BANK_READ || o->outcome != CHECK_BANK_OK ||
		    o->n_missing || o->n_unknown)
			continue;
		if (ev[s] & 1) {
			if (k_of[i] != NONE && k_of[i] > floor) {
				floor = k_of[i];
				floor_read = i;
			}
			continue;
		}
		k_of[i] = NONE;
		const int64_t *read = read_cells(h, o);
		uint64_t h1, h2;
		hash_state(read, r->n, &h1, &h2);
		size_t first, end;
		hash_range(r, h1, h2, &first, &end);
		size_t any = first_match(r, first, end, 0, r->L, read);
		struct check_bank_violation v = blank(CHECK_BANK_NO_PREFIX, i);
		v.lo = lo[i];
		v.lo_op = lo_op[i];
		v.hi = hi[i];
		v.hi_op = hi_op[i];
		v.floor = floor;
		v.floor_read = floor_read;
		if (any == SIZE_MAX) {
			if (will_show(res, CHECK_BANK_NO_PREFIX))
				nearest(r, read, &v);
			report(res, &v);
			continue;
		}
		if (stuck)
			continue;
		size_t want = KEEL_MAX((size_t)lo[i], (size_t)floor);
		size_t k = want <= hi[i]
				   ? first_match(r, first, end, want, hi[i], read)
				   : SIZE_MAX;
		if (k != SIZE_MAX) {
			k_of[i] = (uint32_t)k;
			res->n_reads_placed++;
			continue;
		}
		/* Matches some prefix, none that real time allows. */
		v.kind = CHECK_BANK_REAL_TIME;
		for (size_t x = first; x < end; x++)
			if (equals(r, r->pre[x].k, read)) {
				size_t kk = r->pre[x].k;
				v.n_matches++;
				if (kk < want) {
					v.has_below = true;
					v.below = kk;
				} else if (kk > hi[i] && !v.has_above) {
					v.has_above = true;
					v.above = kk;
				}
			}
		report(res, &v);
		stuck = true;
	}
out:
	a->free(a->ctx, ev);
	a->free(a->ctx, lo);
	a->free(a->ctx, lo_op);
	a->free(a->ctx, hi);
	a->free(a->ctx, hi_op);
	a->free(a->ctx, k_of);
	return rv;
}

/* ---- driver ------------------------------------------------------------ */

int check_bank_run(const struct check_bank_history *h,
		   const struct keel_alloc *alloc,
		   struct check_bank_result *res)
{
	memset(res, 0, sizeof(*res));
	KEEL_ASSERT(h->n_accounts >= 1);
	check_reads(h, res);
	if (!h->has_ledger) {
		snprintf(res->skipped, sizeof(res->skipped),
			 "no final ledger");
		return 0;
	}
	struct run r;
	memset(&r, 0, sizeof(r));
	r.h = h;
	r.a = alloc;
	r.res = res;
	r.L = h->n_ledger;
	r.n = h->n_accounts;
	int rv = KEEL_ERR_NOMEM;
	r.first_pos = alloc->malloc(alloc->ctx,
				    h->n_ops * sizeof(*r.first_pos) + 1);
	r.count = alloc->malloc(alloc->ctx, h->n_ops * sizeof(*r.count) + 1);
	if (!r.first_pos || !r.count)
		goto out;
	for (size_t i = 0; i < h->n_ops; i++) {
		r.first_pos[i] = NONE;
		r.count[i] = 0;
	}
	if ((rv = check_ledger(&r)))
		goto out;
	res->ledger_checked = true;
	if (!h->has_initial) {
		snprintf(res->skipped, sizeof(res->skipped),
			 "no \"initial\" balances in the config");
		goto out;
	}
	if (res->n_by_kind[CHECK_BANK_NEVER_INVOKED]) {
		snprintf(res->skipped, sizeof(res->skipped),
			 "the ledger names transfers nobody invoked");
		goto out;
	}
	rv = replay(&r);
	if (rv == KEEL_ERR_TOO_BIG) {
		rv = 0;
		goto out;
	}
	if (rv)
		goto out;
	if ((rv = place_reads(&r)))
		goto out;
	res->consistency_checked = true;
out:
	alloc->free(alloc->ctx, r.first_pos);
	alloc->free(alloc->ctx, r.count);
	alloc->free(alloc->ctx, r.cp);
	alloc->free(alloc->ctx, r.pre);
	alloc->free(alloc->ctx, r.tmp);
	return rv;
}
