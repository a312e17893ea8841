/*
 * history.c -- the history container and what the three parsers share: a
 * block arena (strings keep stable addresses while the op array grows), a
 * small bytes->u32 hash map (keys, interned model values), and the parse
 * context that pairs each invocation with its completion per process.
 *
 * Pairing rules (README of the shared test data): a process has at most one
 * open operation; ok = took effect; info or no completion = indeterminate;
 * fail = did not take effect (dropped), except in the Jepsen etcd format,
 * where a failed cas ran and found a different value, which is a
 * constraint worth keeping. Reads without a result constrain nothing and
 * are dropped.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "check/check_internal.h"

/* ---- arena ------------------------------------------------------------- */

#define ARENA_BLOCK 65536u

struct check_arena_block {
	struct check_arena_block *next;
	size_t used, cap;
	char data[];
};

const char *check_arena_dup(struct check_arena_block **head,
			    const struct keel_alloc *a, const char *s,
			    size_t len)
{
	struct check_arena_block *b = *head;
	if (!b || b->cap - b->used < len + 1) {
		size_t cap = len + 1 > ARENA_BLOCK ? len + 1 : ARENA_BLOCK;
		struct check_arena_block *nb =
			a->malloc(a->ctx, sizeof(*nb) + cap);
		if (!nb)
			return NULL;
		nb->used = 0;
		nb->cap = cap;
		/* A big one-off block goes behind the current one so the
		 * current block's free space is not wasted. */
		if (b && cap > ARENA_BLOCK) {
			nb->next = b->next;
			b->next = nb;
		} else {
			nb->next = b;
			*head = nb;
		}
		b = nb;
	}
	char *p = b->data + b->used;
	if (len)
		memcpy(p, s, len);
	p[len] = '\0';
	b->used += len + 1;
	return p;
}

void check_arena_free(struct check_arena_block **head,
		      const struct keel_alloc *a)
{
	struct check_arena_block *b = *head;
	while (b) {
		struct check_arena_block *next = b->next;
		a->free(a->ctx, b);
		b = next;
	}
	*head = NULL;
}

/* ---- hashing and the map ----------------------------------------------- */

uint64_t check_mix64(uint64_t x)
{
	/* splitmix64's finaliser: cheap and well mixed. */
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

uint64_t check_hash_bytes(const void *p, size_t len)
{
	/* FNV-1a, then mixed: keys and values are short. */
	const unsigned char *s = p;
	uint64_t h = 0xcbf29ce484222325ull;
	for (size_t i = 0; i < len; i++) {
		h ^= s[i];
		h *= 0x100000001b3ull;
	}
	return check_mix64(h ^ len);
}

bool check_map_get(const struct check_map *m, const char *key, uint32_t len,
		   uint32_t *val)
{
	if (!m->cap)
		return false;
	uint64_t h = check_hash_bytes(key, len);
	for (size_t i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
		const struct check_map_slot *s = &m->slots[i];
		if (!s->key)
			return false;
		if (s->hash == h && s->len == len &&
		    (len == 0 || !memcmp(s->key, key, len))) {
			*val = s->val;
			return true;
		}
	}
}

static void map_insert_slot(struct check_map_slot *slots, size_t cap,
			    const struct check_map_slot *in)
{
	for (size_t i = in->hash & (cap - 1);; i = (i + 1) & (cap - 1)) {
		if (!slots[i].key) {
			slots[i] = *in;
			return;
		}
	}
}

int check_map_put(struct check_map *m, const struct keel_alloc *a,
		  const char *key, uint32_t len, uint32_t val)
{
	KEEL_ASSERT(key != NULL);
	if ((m->n + 1) * 2 > m->cap) {
		size_t cap = m->cap ? m->cap * 2 : 64;
		struct check_map_slot *slots =
			a->malloc(a->ctx, cap * sizeof(*slots));
		if (!slots)
			return KEEL_ERR_NOMEM;
		memset(slots, 0, cap * sizeof(*slots));
		for (size_t i = 0; i < m->cap; i++)
			if (m->slots[i].key)
				map_insert_slot(slots, cap, &m->slots[i]);
		a->free(a->ctx, m->slots);
		m->slots = slots;
		m->cap = cap;
	}
	struct check_map_slot s = {
		.hash = check_hash_bytes(key, len),
		.key = key,
		.len = len,
		.val = val,
	};
	map_insert_slot(m->slots, m->cap, &s);
	m->n++;
	return 0;
}

void check_map_free(struct check_map *m, const struct keel_alloc *a)
{
	a->free(a->ctx, m->slots);
	memset(m, 0, sizeof(*m));
}

/* ---- history ----------------------------------------------------------- */

void check_history_init(struct check_history *h, const struct keel_alloc *alloc)
{
	memset(h, 0, sizeof(*h));
	h->alloc = alloc;
	h->initial.kind = CHECK_VAL_NIL;
}

void check_history_close(struct check_history *h)
{
	const struct keel_alloc *a = h->alloc;
	if (!a)
		return;
	a->free(a->ctx, h->ops);
	a->free(a->ctx, h->keys);
	check_arena_free(&h->arena, a);
	memset(h, 0, sizeof(*h));
}

static const char *const f_names[] = {
	[CHECK_F_READ] = "read",     [CHECK_F_WRITE] = "write",
	[CHECK_F_CAS] = "cas",       [CHECK_F_INCR] = "incr",
	[CHECK_F_APPEND] = "append", [CHECK_F_DEL] = "del",
};

const char *check_f_name(enum check_f f)
{
	if ((unsigned)f < KEEL_ARRAY_LEN(f_names))
		return f_names[f];
	return "?";
}

const char *check_format_name(enum check_format format)
{
	switch (format) {
	case CHECK_FORMAT_ETCD:
		return "jepsen-etcd";
	case CHECK_FORMAT_KV:
		return "kv";
	case CHECK_FORMAT_JSONL:
		return "jsonl";
	case CHECK_FORMAT_AUTO:
		break;
	}
	return "auto";
}

void check_value_format(const struct check_value *v, char *out, size_t size)
{
	KEEL_ASSERT(size >= 8);
	switch (v->kind) {
	case CHECK_VAL_NIL:
		snprintf(out, size, "nil");
		return;
	case CHECK_VAL_INT:
		snprintf(out, size, "%lld", (long long)v->num);
		return;
	case CHECK_VAL_STR:
		break;
	}
	size_t o = 0;
	out[o++] = '"';
	for (uint32_t i = 0; i < v->len; i++) {
		unsigned char ch = (unsigned char)v->str[i];
		if (o + 8 >= size) {
			memcpy(out + o, "...", 3);
			o += 3;
			out[o] = '\0';
			return;
		}
		if (ch == '"' || ch == '\\') {
			out[o++] = '\\';
			out[o++] = (char)ch;
		} else if (ch < 0x20 || ch == 0x7f) {
			o += (size_t)snprintf(out + o, size - o, "\\x%02x", ch);
		} else {
			out[o++] = (char)ch;
		}
	}
	out[o++] = '"';
	out[o] = '\0';
}

int check_f_parse(const char *s, size_t len)
{
	static const struct {
		const char *name;
		enum check_f f;
	} names[] = {
		{"read", CHECK_F_READ},     {"get", CHECK_F_READ},
		{"write", CHECK_F_WRITE},   {"put", CHECK_F_WRITE},
		{"cas", CHECK_F_CAS},       {"incr", CHECK_F_INCR},
		{"append", CHECK_F_APPEND}, {"del", CHECK_F_DEL},
	};
	for (size_t i = 0; i < KEEL_ARRAY_LEN(names); i++)
		if (strlen(names[i].name) == len &&
		    !memcmp(names[i].name, s, len))
			return (int)names[i].f;
	return -1;
}

int check_type_parse(const char *s, size_t len)
{
	static const char *const names[] = {"invoke", "ok", "fail", "info"};
	for (size_t i = 0; i < KEEL_ARRAY_LEN(names); i++)
		if (strlen(names[i]) == len && !memcmp(names[i], s, len))
			return (int)i;
	return -1;
}

int check_parse_i64(const char *s, size_t len, int64_t *out)
{
	size_t i = 0;
	bool neg = false;
	if (i < len && s[i] == '-') {
		neg = true;
		i++;
	}
	if (i == len)
		return KEEL_ERR_MALFORMED;
	/* Accumulate as a negative number so INT64_MIN fits. */
	int64_t v = 0;
	for (; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return KEEL_ERR_MALFORMED;
		int d = s[i] - '0';
		if (v < (INT64_MIN + d) / 10)
			return KEEL_ERR_TOO_BIG;
		v = v * 10 - d;
	}
	if (!neg) {
		if (v == INT64_MIN)
			return KEEL_ERR_TOO_BIG;
		v = -v;
	}
	*out = v;
	return 0;
}

bool check_next_line(const char *buf, size_t len, size_t *pos,
		     const char **line, size_t *line_len)
{
	if (*pos >= len)
		return false;
	const char *start = buf + *pos;
	const char *nl = memchr(start, '\n', len - *pos);
	size_t n = nl ? (size_t)(nl - start) : len - *pos;
	*pos += n + (nl ? 1 : 0);
	if (n && start[n - 1] == '\r')
		n--;
	*line = start;
	*line_len = n;
	return true;
}

/* ---- parse context ----------------------------------------------------- */

void check_ctx_init(struct check_parse_ctx *c, struct check_history *h,
		    struct check_parse_error *err, enum check_format format)
{
	memset(c, 0, sizeof(*c));
	c->h = h;
	c->err = err;
	h->format = format;
	c->fail_cas_is_mismatch = format == CHECK_FORMAT_ETCD;
	err->line = 0;
	err->msg[0] = '\0';
}

void check_ctx_close(struct check_parse_ctx *c)
{
	const struct keel_alloc *a = c->h->alloc;
	check_map_free(&c->keys, a);
	a->free(a->ctx, c->procs);
	a->free(a->ctx, c->dropped);
	a->free(a->ctx, c->scratch);
	c->procs = NULL;
	c->dropped = NULL;
	c->scratch = NULL;
}

int check_ctx_fail(struct check_parse_ctx *c, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(c->err->msg, sizeof(c->err->msg), fmt, ap);
	va_end(ap);
	c->err->line = c->line;
	return code;
}

int check_ctx_scratch(struct check_parse_ctx *c, size_t n)
{
	if (n > CHECK_MAX_LINE + 8)
		return check_ctx_fail(c, KEEL_ERR_TOO_BIG,
				      "line longer than %u bytes",
				      CHECK_MAX_LINE);
	if (n <= c->scratch_cap)
		return 0;
	size_t cap = c->scratch_cap ? c->scratch_cap : 256;
	while (cap < n)
		cap *= 2;
	const struct keel_alloc *a = c->h->alloc;
	char *p = a->realloc(a->ctx, c->scratch, cap);
	if (!p)
		return check_ctx_fail(c, KEEL_ERR_NOMEM, "out of memory");
	c->scratch = p;
	c->scratch_cap = cap;
	return 0;
}

/* Finds the slot for process (inserting an empty one). */
struct check_proc_slot *check_ctx_proc(struct check_parse_ctx *c,
				       int64_t process)
{
	const struct keel_alloc *a = c->h->alloc;
	if ((c->procs_n + 1) * 2 > c->procs_cap) {
		size_t cap = c->procs_cap ? c->procs_cap * 2 : 64;
		struct check_proc_slot *ps =
			a->malloc(a->ctx, cap * sizeof(*ps));
		if (!ps)
			return NULL;
		memset(ps, 0, cap * sizeof(*ps));
		for (size_t i = 0; i < c->procs_cap; i++) {
			if (!c->procs[i].used)
				continue;
			size_t j = check_mix64((uint64_t)c->procs[i].process) &
				   (cap - 1);
			while (ps[j].used)
				j = (j + 1) & (cap - 1);
			ps[j] = c->procs[i];
		}
		a->free(a->ctx, c->procs);
		c->procs = ps;
		c->procs_cap = cap;
	}
	size_t j = check_mix64((uint64_t)process) & (c->procs_cap - 1);
	while (c->procs[j].used && c->procs[j].process != process)
		j = (j + 1) & (c->procs_cap - 1);
	if (!c->procs[j].used) {
		c->procs[j].used = true;
		c->procs[j].process = process;
		c->procs[j].op = UINT32_MAX;
		c->procs_n++;
	}
	return &c->procs[j];
}

/* Copies a value's string into the history's arena. */
static int own_value(struct check_parse_ctx *c, struct check_value *v)
{
	if (v->kind != CHECK_VAL_STR)
		return 0;
	if (v->len > CHECK_MAX_STR)
		return check_ctx_fail(c, KEEL_ERR_TOO_BIG,
				      "string longer than %u bytes",
				      CHECK_MAX_STR);
	const char *p =
		check_arena_dup(&c->h->arena, c->h->alloc, v->str, v->len);
	if (!p)
		return check_ctx_fail(c, KEEL_ERR_NOMEM, "out of memory");
	v->str = p;
	return 0;
}

static int key_index(struct check_parse_ctx *c, const struct check_value *key,
		     uint32_t *out)
{
	struct check_history *h = c->h;
	const struct keel_alloc *a = h->alloc;
	struct check_value k = {.kind = CHECK_VAL_STR, .str = "register",
				.len = 8};
	char num[24];
	if (key) {
		k = *key;
		if (k.kind == CHECK_VAL_INT) {
			/* An integer key names the same key as its digits. */
			int n = snprintf(num, sizeof(num), "%lld",
					 (long long)k.num);
			k.kind = CHECK_VAL_STR;
			k.str = num;
			k.len = (uint32_t)n;
		} else if (k.kind != CHECK_VAL_STR) {
			return check_ctx_fail(c, KEEL_ERR_MALFORMED,
					      "key must be a string or integer");
		}
	}
	if (check_map_get(&c->keys, k.str, k.len, out))
		return 0;
	if (h->n_keys == h->cap_keys) {
		size_t cap = h->cap_keys ? h->cap_keys * 2 : 16;
		struct check_value *ks =
			a->realloc(a->ctx, h->keys, cap * sizeof(*ks));
		if (!ks)
			return check_ctx_fail(c, KEEL_ERR_NOMEM, "out of memory");
		h->keys = ks;
		h->cap_keys = cap;
	}
	int rv = own_value(c, &k);
	if (rv)
		return rv;
	rv = check_map_put(&c->keys, a, k.str, k.len, (uint32_t)h->n_keys);
	if (rv)
		return check_ctx_fail(c, rv, "out of memory");
	*out = (uint32_t)h->n_keys;
	h->keys[h->n_keys++] = k;
	return 0;
}

static int event_invoke(struct check_parse_ctx *c,
			struct check_proc_slot *ps, enum check_f f,
			const struct check_value *key,
			const struct check_raw_value *value, bool has_time,
			int64_t time)
{
	struct check_history *h = c->h;
	const struct keel_alloc *a = h->alloc;
	if (ps->op != UINT32_MAX)
		return check_ctx_fail(
			c, KEEL_ERR_MALFORMED,
			"process %lld invokes while its op from line %u is open",
			(long long)ps->process, h->ops[ps->op].call_line);
	if (h->n_ops >= CHECK_MAX_OPS)
		return check_ctx_fail(c, KEEL_ERR_TOO_BIG,
				      "more than %u operations", CHECK_MAX_OPS);
	if (h->n_ops == h->cap_ops) {
		size_t cap = h->cap_ops ? h->cap_ops * 2 : 64;
		struct check_op *ops =
			a->realloc(a->ctx, h->ops, cap * sizeof(*ops));
		if (!ops)
			return check_ctx_fail(c, KEEL_ERR_NOMEM, "out of memory");
		h->ops = ops;
		h->cap_ops = cap;
		bool *d = a->realloc(a->ctx, c->dropped, cap * sizeof(*d));
		if (!d)
			return check_ctx_fail(c, KEEL_ERR_NOMEM, "out of memory");
		c->dropped = d;
		c->dropped_cap = cap;
	}
	struct check_op op;
	memset(&op, 0, sizeof(op));
	op.f = f;
	op.outcome = CHECK_OUT_INFO;
	op.process = ps->process;
	op.call_seq = c->seq;
	op.ret_seq = CHECK_SEQ_INF;
	op.has_time = has_time;
	op.call_time = time;
	op.call_line = c->line;
	int rv = key_index(c, key, &op.key);
	if (rv)
		return rv;
	/* The invoke's value is the argument; reads and dels take none. */
	switch (f) {
	case CHECK_F_READ:
	case CHECK_F_DEL:
		break;
	case CHECK_F_CAS:
		if (!value->present || !value->is_pair)
			return check_ctx_fail(c, KEEL_ERR_MALFORMED,
					      "cas needs [expected new]");
		op.arg = value->v;
		op.arg2 = value->v2;
		break;
	case CHECK_F_INCR:
		if (value->present && value->is_pair)
			return check_ctx_fail(c, KEEL_ERR_MALFORMED,
					      "incr takes one value");
		if (!value->present || value->v.kind == CHECK_VAL_NIL) {
			op.arg.kind = CHECK_VAL_INT;
			op.arg.num = 1;
		} else if (value->v.kind != CHECK_VAL_INT) {
			return check_ctx_fail(c, KEEL_ERR_MALFORMED,
					      "incr takes an integer");
		} else {
			op.arg = value->v;
		}
		break;
	case CHECK_F_WRITE:
	case CHECK_F_APPEND:
		if (!value->present || value->is_pair)
			return check_ctx_fail(c, KEEL_ERR_MALFORMED,
					      "%s takes one value",
					      check_f_name(f));
		op.arg = value->v;
		break;
	}
	if ((rv = own_value(c, &op.arg)) || (rv = own_value(c, &op.arg2)))
		return rv;
	ps->op = (uint32_t)h->n_ops;
	c->dropped[h->n_ops] = false;
	h->ops[h->n_ops++] = op;
	return 0;
}

static int event_complete(struct check_parse_ctx *c,
			  struct check_proc_slot *ps,
			  enum check_event_type type, enum check_f f,
			  const struct check_raw_value *value, bool has_time,
			  int64_t time)
{
	struct check_history *h = c->h;
	if (ps->op == UINT32_MAX)
		return check_ctx_fail(c, KEEL_ERR_MALFORMED,
				      "process %lld completes an op it never "
				      "invoked",
				      (long long)ps->process);
	struct check_op *op = &h->ops[ps->op];
	if (op->f != f)
		return check_ctx_fail(c, KEEL_ERR_MALFORMED,
				      "process %lld completes %s but invoked %s "
				      "on line %u",
				      (long long)ps->process, check_f_name(f),
				      check_f_name(op->f), op->call_line);
	bool drop = false;
	op->ret_line = c->line;
	op->ret_time = time;
	op->has_time = op->has_time && has_time;
	switch (type) {
	case CHECK_EV_OK:
		op->outcome = CHECK_OUT_OK;
		op->ret_seq = c->seq;
		if (f == CHECK_F_READ) {
			/* A read's ok carries the value read. */
			if (!value->present || value->is_pair)
				return check_ctx_fail(
					c, KEEL_ERR_MALFORMED,
					"read ok needs the value read");
			op->out = value->v;
			op->has_out = true;
		} else if (f == CHECK_F_INCR && value->present &&
			   !value->is_pair && value->v.kind != CHECK_VAL_NIL) {
			op->out = value->v;
			op->has_out = true;
		}
		break;
	case CHECK_EV_FAIL:
		if (f == CHECK_F_CAS && c->fail_cas_is_mismatch) {
			op->outcome = CHECK_OUT_CAS_MISMATCH;
			op->ret_seq = c->seq;
		} else {
			drop = true;
		}
		break;
	case CHECK_EV_INFO:
		/* Indeterminate: may land any time after the call, or never.
		 * An unknown read constrains nothing. */
		op->outcome = CHECK_OUT_INFO;
		op->ret_seq = CHECK_SEQ_INF;
		drop = f == CHECK_F_READ;
		break;
	case CHECK_EV_INVOKE:
		KEEL_ASSERT(0);
	}
	int rv = own_value(c, &op->out);
	if (rv)
		return rv;
	c->dropped[ps->op] = drop;
	ps->op = UINT32_MAX;
	return 0;
}

int check_ctx_event(struct check_parse_ctx *c, enum check_event_type type,
		    int64_t process, enum check_f f, const struct check_value *key,
		    const struct check_raw_value *value, bool has_time,
		    int64_t time)
{
	struct check_proc_slot *ps = check_ctx_proc(c, process);
	if (!ps)
		return check_ctx_fail(c, KEEL_ERR_NOMEM, "out of memory");
	c->seq++;
	if (type == CHECK_EV_INVOKE)
		return event_invoke(c, ps, f, key, value, has_time, time);
	return event_complete(c, ps, type, f, value, has_time, time);
}

int check_ctx_finish(struct check_parse_ctx *c)
{
	struct check_history *h = c->h;
	/* Ops still open at the end are indeterminate (already INFO with an
	 * infinite return); reads among them constrain nothing. */
	for (size_t i = 0; i < h->n_ops; i++)
		if (h->ops[i].ret_line == 0 && h->ops[i].f == CHECK_F_READ)
			c->dropped[i] = true;
	size_t o = 0;
	for (size_t i = 0; i < h->n_ops; i++) {
		if (c->dropped[i]) {
			h->n_dropped++;
			continue;
		}
		h->ops[o++] = h->ops[i];
	}
	h->n_ops = o;
	return 0;
}

enum check_format check_detect_format(const char *buf, size_t len)
{
	size_t pos = 0;
	const char *line;
	size_t n;
	while (check_next_line(buf, len, &pos, &line, &n)) {
		size_t i = 0;
		while (i < n && (line[i] == ' ' || line[i] == '\t'))
			i++;
		if (i == n)
			continue;
		if (line[i] == '{') {
			i++;
			while (i < n && (line[i] == ' ' || line[i] == '\t'))
				i++;
			if (i < n && line[i] == '"')
				return CHECK_FORMAT_JSONL;
			if (i < n && line[i] == ':')
				return CHECK_FORMAT_KV;
			return CHECK_FORMAT_AUTO;
		}
		/* Jepsen logs start with other noise: look a while further. */
		for (size_t j = 0; j + 11 <= n; j++)
			if (!memcmp(line + j, "jepsen.util", 11))
				return CHECK_FORMAT_ETCD;
		if (pos > 65536)
			break;
	}
	return CHECK_FORMAT_AUTO;
}

int check_parse(enum check_format format, const char *buf, size_t len,
		struct check_history *h, struct check_parse_error *err)
{
	if (format == CHECK_FORMAT_AUTO)
		format = check_detect_format(buf, len);
	switch (format) {
	case CHECK_FORMAT_ETCD:
		return check_parse_etcd(buf, len, h, err);
	case CHECK_FORMAT_KV:
		return check_parse_kv(buf, len, h, err);
	case CHECK_FORMAT_JSONL:
		return check_parse_jsonl(buf, len, h, err);
	case CHECK_FORMAT_AUTO:
		break;
	}
	err->line = 0;
	snprintf(err->msg, sizeof(err->msg),
		 "cannot tell the format; pass --format "
		 "jepsen-etcd|kv|jsonl");
	return KEEL_ERR_MALFORMED;
}
