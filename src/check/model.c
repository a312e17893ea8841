/*
 * model.c -- the sequential specifications the search checks against, over
 * interned values.
 *
 * Every value the search meets (arguments, results, and strings built by
 * append) is interned to a u32 id, so a model state is one u32: comparing
 * states and hashing them for the memo cache is O(1), and the memo key is
 * (bitset of linearized ops, state id). Integers and their canonical
 * decimal strings intern to the same id, because Redis clients see "5" for
 * an integer 5 (INCR's result read back by GET).
 *
 * Register model (jepsen-etcd): read, write, cas. KV model: per key, also
 * incr (Redis INCR: absent counts as 0), append (absent counts as empty),
 * del (back to the initial value). Indeterminate ops are always legal: a
 * cas takes effect only if its compare matches, an incr only on an
 * integer.
 */
#include <stdio.h>
#include <string.h>

#include "check/model.h"

#define MODEL_MAX_VALUE (64u << 20) /* bytes of one built value */

void check_model_init(struct check_model_ctx *m, const struct keel_alloc *a)
{
	memset(m, 0, sizeof(*m));
	m->a = a;
}

void check_model_close(struct check_model_ctx *m)
{
	check_map_free(&m->map, m->a);
	check_arena_free(&m->arena, m->a);
	m->a->free(m->a->ctx, m->vals);
	m->a->free(m->a->ctx, m->buf);
	memset(m, 0, sizeof(*m));
}

static int reserve(struct check_model_ctx *m, size_t n)
{
	if (n > MODEL_MAX_VALUE + 16)
		return KEEL_ERR_TOO_BIG;
	if (n <= m->buf_cap)
		return 0;
	size_t cap = m->buf_cap ? m->buf_cap : 256;
	while (cap < n)
		cap *= 2;
	char *p = m->a->realloc(m->a->ctx, m->buf, cap);
	if (!p)
		return KEEL_ERR_NOMEM;
	m->buf = p;
	m->buf_cap = cap;
	return 0;
}

/* A string that is exactly how %lld prints some int64. */
static bool canonical_int(const char *s, uint32_t len, int64_t *out)
{
	if (len == 0 || len > 20)
		return false;
	if (check_parse_i64(s, len, out))
		return false;
	char tmp[24];
	int n = snprintf(tmp, sizeof(tmp), "%lld", (long long)*out);
	return (uint32_t)n == len && !memcmp(tmp, s, len);
}

int check_model_intern(struct check_model_ctx *m, const struct check_value *in,
		       uint32_t *id)
{
	struct check_value v = *in;
	if (v.kind == CHECK_VAL_STR && canonical_int(v.str, v.len, &v.num))
		v.kind = CHECK_VAL_INT;
	if (v.kind != CHECK_VAL_STR) {
		v.str = NULL;
		v.len = 0;
	}
	/* Encoding: kind byte, then 8 bytes of integer or the string. */
	size_t n = 1 + (v.kind == CHECK_VAL_INT   ? 8
			: v.kind == CHECK_VAL_STR ? v.len
						  : 0);
	int rv = reserve(m, n);
	if (rv)
		return rv;
	m->buf[0] = (char)('0' + v.kind);
	if (v.kind == CHECK_VAL_INT)
		keel_put_u64((uint8_t *)m->buf + 1, (uint64_t)v.num);
	else if (v.kind == CHECK_VAL_STR && v.len)
		memcpy(m->buf + 1, v.str, v.len);
	if (check_map_get(&m->map, m->buf, (uint32_t)n, id))
		return 0;
	if (m->n_vals == m->cap_vals) {
		size_t cap = m->cap_vals ? m->cap_vals * 2 : 64;
		struct check_value *vals =
			m->a->realloc(m->a->ctx, m->vals, cap * sizeof(*vals));
		if (!vals)
			return KEEL_ERR_NOMEM;
		m->vals = vals;
		m->cap_vals = cap;
	}
	const char *enc = check_arena_dup(&m->arena, m->a, m->buf, n);
	if (!enc)
		return KEEL_ERR_NOMEM;
	if (v.kind == CHECK_VAL_STR)
		v.str = enc + 1; /* the stored copy, stable */
	rv = check_map_put(&m->map, m->a, enc, (uint32_t)n,
			   (uint32_t)m->n_vals);
	if (rv)
		return rv;
	*id = (uint32_t)m->n_vals;
	m->vals[m->n_vals++] = v;
	return 0;
}

const struct check_value *check_model_value(const struct check_model_ctx *m,
					    uint32_t id)
{
	KEEL_ASSERT(id < m->n_vals);
	return &m->vals[id];
}

/* The text of a value for append: strings as they are, integers in
 * decimal, nil as empty. Writes into tmp when it must. */
static void as_text(const struct check_value *v, char *tmp, size_t tmp_size,
		    const char **s, size_t *len)
{
	if (v->kind == CHECK_VAL_STR) {
		*s = v->str;
		*len = v->len;
	} else if (v->kind == CHECK_VAL_INT) {
		int n = snprintf(tmp, tmp_size, "%lld", (long long)v->num);
		*s = tmp;
		*len = (size_t)n;
	} else {
		*s = "";
		*len = 0;
	}
}

static int do_append(struct check_model_ctx *m, uint32_t state, uint32_t arg,
		     uint32_t *next)
{
	char t1[24], t2[24];
	const char *a, *b;
	size_t al, bl;
	as_text(check_model_value(m, state), t1, sizeof(t1), &a, &al);
	as_text(check_model_value(m, arg), t2, sizeof(t2), &b, &bl);
	if (al + bl > MODEL_MAX_VALUE)
		return KEEL_ERR_TOO_BIG;
	/* Build in a separate allocation: intern() reuses m->buf, and a or b
	 * may point into stored values. */
	char *cat = m->a->malloc(m->a->ctx, al + bl + 1);
	if (!cat)
		return KEEL_ERR_NOMEM;
	if (al)
		memcpy(cat, a, al);
	if (bl)
		memcpy(cat + al, b, bl);
	struct check_value v = {.kind = CHECK_VAL_STR, .str = cat,
				.len = (uint32_t)(al + bl)};
	int rv = check_model_intern(m, &v, next);
	m->a->free(m->a->ctx, cat);
	return rv;
}

int check_model_step(struct check_model_ctx *m, const struct check_mop *op,
		     uint32_t state, bool *legal, uint32_t *next)
{
	*legal = true;
	*next = state;
	bool info = op->outcome == CHECK_OUT_INFO;
	switch (op->f) {
	case CHECK_F_READ:
		KEEL_ASSERT(!info);
		*legal = state == op->out;
		return 0;
	case CHECK_F_WRITE:
		*next = op->arg;
		return 0;
	case CHECK_F_DEL:
		*next = m->initial;
		return 0;
	case CHECK_F_CAS:
		if (op->outcome == CHECK_OUT_CAS_MISMATCH) {
			*legal = state != op->arg;
			return 0;
		}
		if (state == op->arg)
			*next = op->arg2;
		else
			*legal = info;
		return 0;
	case CHECK_F_APPEND:
		return do_append(m, state, op->arg, next);
	case CHECK_F_INCR: {
		const struct check_value *cur = check_model_value(m, state);
		const struct check_value *d = check_model_value(m, op->arg);
		int64_t base;
		if (cur->kind == CHECK_VAL_INT)
			base = cur->num;
		else if (cur->kind == CHECK_VAL_NIL ||
			 (cur->kind == CHECK_VAL_STR && cur->len == 0))
			base = 0;
		else {
			/* Redis refuses INCR on a non-integer: only an
			 * indeterminate incr can be placed (as a no-op). */
			*legal = info;
			return 0;
		}
		KEEL_ASSERT(d->kind == CHECK_VAL_INT);
		int64_t r;
		if (__builtin_add_overflow(base, d->num, &r)) {
			*legal = info;
			return 0;
		}
		struct check_value v = {.kind = CHECK_VAL_INT, .num = r};
		int rv = check_model_intern(m, &v, next);
		if (rv)
			return rv;
		if (op->has_out && *next != op->out)
			*legal = false;
		return 0;
	}
	}
	KEEL_ASSERT(0);
	return 0;
}
