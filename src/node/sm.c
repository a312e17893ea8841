/*
 * sm.c -- the node's small deterministic state machine: a map of string
 * keys to string values with get, put, cas, incr, append and del, and the
 * encoding of those commands inside log entries.
 *
 * Determinism is the whole point: every replica applies the same commands
 * in the same order and must end with the same map and give the same
 * results, so nothing here depends on addresses, time or randomness. The
 * map is an open-addressing hash table (linear probing, backward-shift
 * deletion) keyed by FNV-1a; its digest is an order-independent sum of
 * per-pair hashes so two replicas can be compared cheaply.
 *
 * This is a stand-in for src/kv/ (revisions, TTL, leases come with it).
 */
#include <string.h>

#include "keel/node.h"

struct sm_slot {
	bool used;
	uint32_t key_len;
	uint32_t value_len;
	uint64_t hash;
	uint8_t *key;   /* owned */
	uint8_t *value; /* owned; NULL when value_len == 0 */
};

struct node_sm {
	const struct keel_alloc *alloc;
	struct sm_slot *slots;
	uint32_t cap; /* power of two */
	uint32_t count;
	/* Invariant: digest == sum of pair_hash over used slots. */
	uint64_t digest;
};

static const char *const op_names[] = {"?",    "get",    "put", "cas",
				       "incr", "append", "del"};

const char *node_op_name(int op)
{
	if (op <= 0 || op >= NODE_OP_COUNT)
		return "?";
	return op_names[op];
}

const char *node_status_name(int status)
{
	switch (status) {
	case NODE_OK:
		return "ok";
	case NODE_FAIL:
		return "fail";
	case NODE_NOT_LEADER:
		return "not-leader";
	case NODE_DROPPED:
		return "dropped";
	default:
		return "?";
	}
}

static uint64_t fnv1a(uint64_t h, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

static uint64_t mix64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	x ^= x >> 33;
	return x;
}

static uint64_t pair_hash(const struct sm_slot *s)
{
	uint64_t h = fnv1a(0xcbf29ce484222325ull, s->key, s->key_len);
	h = fnv1a(mix64(h), s->value, s->value_len);
	return mix64(h ^ s->value_len);
}

struct node_sm *node_sm_create(const struct keel_alloc *alloc)
{
	const struct keel_alloc *a = alloc ? alloc : &keel_alloc_libc;
	struct node_sm *sm = a->malloc(a->ctx, sizeof(*sm));
	if (!sm)
		return NULL;
	memset(sm, 0, sizeof(*sm));
	sm->alloc = a;
	sm->cap = 16;
	sm->slots = a->malloc(a->ctx, sm->cap * sizeof(*sm->slots));
	if (!sm->slots) {
		a->free(a->ctx, sm);
		return NULL;
	}
	memset(sm->slots, 0, sm->cap * sizeof(*sm->slots));
	return sm;
}

void node_sm_destroy(struct node_sm *sm)
{
	if (!sm)
		return;
	const struct keel_alloc *a = sm->alloc;
	for (uint32_t i = 0; i < sm->cap; i++) {
		if (sm->slots[i].used) {
			a->free(a->ctx, sm->slots[i].key);
			a->free(a->ctx, sm->slots[i].value);
		}
	}
	a->free(a->ctx, sm->slots);
	a->free(a->ctx, sm);
}

static uint64_t key_hash(const uint8_t *key, uint32_t len)
{
	return mix64(fnv1a(0xcbf29ce484222325ull, key, len));
}

/* Index of the slot holding key, or of the empty slot where it would go. */
static uint32_t find(const struct node_sm *sm, const uint8_t *key,
		     uint32_t len, uint64_t h)
{
	uint32_t mask = sm->cap - 1;
	uint32_t i = (uint32_t)h & mask;
	for (uint32_t n = 0; n < sm->cap; n++, i = (i + 1) & mask) {
		const struct sm_slot *s = &sm->slots[i];
		if (!s->used)
			return i;
		if (s->hash == h && s->key_len == len &&
		    (len == 0 || !memcmp(s->key, key, len)))
			return i;
	}
	KEEL_ASSERT(0 && "sm table full"); /* load factor <= 1/2 */
	return 0;
}

static int grow(struct node_sm *sm)
{
	const struct keel_alloc *a = sm->alloc;
	uint32_t ncap = sm->cap * 2;
	struct sm_slot *ns = a->malloc(a->ctx, ncap * sizeof(*ns));
	if (!ns)
		return KEEL_ERR_NOMEM;
	memset(ns, 0, ncap * sizeof(*ns));
	struct sm_slot *old = sm->slots;
	uint32_t ocap = sm->cap;
	sm->slots = ns;
	sm->cap = ncap;
	for (uint32_t i = 0; i < ocap; i++) {
		if (!old[i].used)
			continue;
		uint32_t j = find(sm, old[i].key, old[i].key_len, old[i].hash);
		sm->slots[j] = old[i];
	}
	a->free(a->ctx, old);
	return 0;
}

/* Removes slot i, shifting later members of its probe run back. */
static void remove_slot(struct node_sm *sm, uint32_t i)
{
	const struct keel_alloc *a = sm->alloc;
	uint32_t mask = sm->cap - 1;
	sm->digest -= pair_hash(&sm->slots[i]);
	a->free(a->ctx, sm->slots[i].key);
	a->free(a->ctx, sm->slots[i].value);
	memset(&sm->slots[i], 0, sizeof(sm->slots[i]));
	sm->count--;
	uint32_t hole = i;
	uint32_t j = (i + 1) & mask;
	for (uint32_t n = 0; n < sm->cap && sm->slots[j].used;
	     n++, j = (j + 1) & mask) {
		uint32_t home = (uint32_t)sm->slots[j].hash & mask;
		/* Move j into the hole unless its home lies cyclically in
		 * (hole, j]. */
		bool stays = hole <= j ? (home > hole && home <= j)
				       : (home > hole || home <= j);
		if (stays)
			continue;
		sm->slots[hole] = sm->slots[j];
		memset(&sm->slots[j], 0, sizeof(sm->slots[j]));
		hole = j;
	}
}

/* Sets key to value (copies). */
static int set_value(struct node_sm *sm, const uint8_t *key, uint32_t klen,
		     const uint8_t *v, uint32_t vlen)
{
	const struct keel_alloc *a = sm->alloc;
	if ((sm->count + 1) * 2 > sm->cap && grow(sm))
		return KEEL_ERR_NOMEM;
	uint64_t h = key_hash(key, klen);
	uint32_t i = find(sm, key, klen, h);
	struct sm_slot *s = &sm->slots[i];
	uint8_t *nv = NULL;
	if (vlen) {
		nv = a->malloc(a->ctx, vlen);
		if (!nv)
			return KEEL_ERR_NOMEM;
		memcpy(nv, v, vlen);
	}
	if (!s->used) {
		uint8_t *nk = a->malloc(a->ctx, klen ? klen : 1);
		if (!nk) {
			a->free(a->ctx, nv);
			return KEEL_ERR_NOMEM;
		}
		memcpy(nk, key, klen);
		s->used = true;
		s->key = nk;
		s->key_len = klen;
		s->hash = h;
		s->value = NULL;
		s->value_len = 0;
		sm->count++;
	} else {
		sm->digest -= pair_hash(s);
		a->free(a->ctx, s->value);
	}
	s->value = nv;
	s->value_len = vlen;
	sm->digest += pair_hash(s);
	return 0;
}

static const struct sm_slot *lookup(const struct node_sm *sm,
				    const uint8_t *key, uint32_t klen)
{
	uint32_t i = find(sm, key, klen, key_hash(key, klen));
	return sm->slots[i].used ? &sm->slots[i] : NULL;
}

void node_sm_get(const struct node_sm *sm, const uint8_t *key,
		 uint32_t key_len, struct node_result *res)
{
	const struct sm_slot *s = lookup(sm, key, key_len);
	res->status = NODE_OK;
	res->found = s != NULL;
	res->value_len = s ? s->value_len : 0;
	if (s && s->value_len)
		memcpy(res->value, s->value, s->value_len);
}

/* Parses a canonical decimal int64 ("-12"); false when v is not one. */
static bool parse_i64(const uint8_t *v, uint32_t n, int64_t *out)
{
	if (n == 0 || n > 20)
		return false;
	uint32_t i = 0;
	bool neg = false;
	if (v[0] == '-') {
		neg = true;
		i = 1;
		if (n == 1)
			return false;
	}
	/* Canonical only, as Redis INCR: no leading zeros, no "-0". */
	if (v[i] == '0' && (n - i > 1 || neg))
		return false;
	uint64_t x = 0;
	for (; i < n; i++) {
		if (v[i] < '0' || v[i] > '9')
			return false;
		uint64_t d = (uint64_t)(v[i] - '0');
		if (x > (UINT64_MAX - d) / 10)
			return false;
		x = x * 10 + d;
	}
	if (!neg && x > (uint64_t)INT64_MAX)
		return false;
	if (neg && x > (uint64_t)INT64_MAX + 1)
		return false;
	*out = neg ? (int64_t)(0 - x) : (int64_t)x;
	return true;
}

static uint32_t format_i64(int64_t v, uint8_t *out)
{
	char tmp[24];
	uint32_t n = 0;
	uint64_t x = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
	do {
		tmp[n++] = (char)('0' + x % 10);
		x /= 10;
	} while (x);
	uint32_t k = 0;
	if (v < 0)
		out[k++] = '-';
	while (n)
		out[k++] = (uint8_t)tmp[--n];
	return k;
}

int node_sm_apply(struct node_sm *sm, const struct node_cmd *c,
		  struct node_result *res)
{
	KEEL_ASSERT(c->op != NODE_OP_GET);
	KEEL_ASSERT(c->key_len <= NODE_MAX_KEY);
	const struct sm_slot *s = lookup(sm, c->key, c->key_len);
	res->status = NODE_OK;
	res->found = false;
	res->value_len = 0;
	switch (c->op) {
	case NODE_OP_PUT:
		if (c->a_len > NODE_MAX_VALUE) {
			res->status = NODE_FAIL;
			return 0;
		}
		res->found = true;
		return set_value(sm, c->key, c->key_len, c->a, c->a_len);
	case NODE_OP_CAS:
		if (!s || s->value_len != c->a_len ||
		    (c->a_len && memcmp(s->value, c->a, c->a_len)) ||
		    c->b_len > NODE_MAX_VALUE) {
			res->status = NODE_FAIL;
			return 0;
		}
		res->found = true;
		return set_value(sm, c->key, c->key_len, c->b, c->b_len);
	case NODE_OP_INCR: {
		int64_t v = 0;
		if (s && !parse_i64(s->value, s->value_len, &v)) {
			res->status = NODE_FAIL;
			return 0;
		}
		if (v == INT64_MAX) {
			res->status = NODE_FAIL;
			return 0;
		}
		v++;
		res->found = true;
		res->value_len = format_i64(v, res->value);
		return set_value(sm, c->key, c->key_len, res->value,
				 res->value_len);
	}
	case NODE_OP_APPEND: {
		uint32_t old = s ? s->value_len : 0;
		if (old + c->a_len > NODE_MAX_VALUE) {
			res->status = NODE_FAIL;
			return 0;
		}
		if (old)
			memcpy(res->value, s->value, old);
		if (c->a_len)
			memcpy(res->value + old, c->a, c->a_len);
		res->found = true;
		res->value_len = old + c->a_len;
		int rv = set_value(sm, c->key, c->key_len, res->value,
				   res->value_len);
		res->value_len = 0; /* the reply carries no value */
		return rv;
	}
	case NODE_OP_DEL:
		res->found = s != NULL;
		if (s)
			remove_slot(sm, (uint32_t)(s - sm->slots));
		return 0;
	default:
		KEEL_ASSERT(0 && "bad op");
		return KEEL_ERR_INVAL;
	}
}

uint64_t node_sm_digest(const struct node_sm *sm)
{
	return sm->digest ^ mix64(sm->count);
}

uint32_t node_sm_count(const struct node_sm *sm)
{
	return sm->count;
}

/* ---- command encoding --------------------------------------------------------
 *
 *   u8 op | u64 origin | u64 boot | u64 seq | u16 key_len | key
 *   | u16 a_len | a | u16 b_len | b                  (little endian)
 */

#define CMD_FIXED (1 + 8 + 8 + 8 + 2 + 2 + 2)

size_t node_cmd_size(const struct node_cmd *c)
{
	return CMD_FIXED + (size_t)c->key_len + c->a_len + c->b_len;
}

size_t node_cmd_encode(const struct node_cmd *c, uint8_t *buf, size_t cap)
{
	size_t n = node_cmd_size(c);
	if (n > cap || c->key_len > NODE_MAX_KEY || c->a_len > NODE_MAX_VALUE ||
	    c->b_len > NODE_MAX_VALUE)
		return 0;
	uint8_t *p = buf;
	*p++ = c->op;
	keel_put_u64(p, c->origin);
	p += 8;
	keel_put_u64(p, c->boot);
	p += 8;
	keel_put_u64(p, c->seq);
	p += 8;
	const uint8_t *parts[3] = {c->key, c->a, c->b};
	uint32_t lens[3] = {c->key_len, c->a_len, c->b_len};
	for (int i = 0; i < 3; i++) {
		keel_put_u16(p, (uint16_t)lens[i]);
		p += 2;
		if (lens[i])
			memcpy(p, parts[i], lens[i]);
		p += lens[i];
	}
	KEEL_ASSERT((size_t)(p - buf) == n);
	return n;
}

int node_cmd_decode(const uint8_t *buf, size_t len, struct node_cmd *c)
{
	if (len < CMD_FIXED)
		return KEEL_ERR_MALFORMED;
	const uint8_t *p = buf, *end = buf + len;
	memset(c, 0, sizeof(*c));
	c->op = *p++;
	if (c->op <= NODE_OP_GET || c->op >= NODE_OP_COUNT)
		return KEEL_ERR_MALFORMED;
	c->origin = keel_get_u64(p);
	p += 8;
	c->boot = keel_get_u64(p);
	p += 8;
	c->seq = keel_get_u64(p);
	p += 8;
	const uint8_t **parts[3] = {&c->key, &c->a, &c->b};
	uint32_t *lens[3] = {&c->key_len, &c->a_len, &c->b_len};
	uint32_t caps[3] = {NODE_MAX_KEY, NODE_MAX_VALUE, NODE_MAX_VALUE};
	for (int i = 0; i < 3; i++) {
		if (end - p < 2)
			return KEEL_ERR_MALFORMED;
		uint32_t l = keel_get_u16(p);
		p += 2;
		if (l > caps[i] || (size_t)(end - p) < l)
			return KEEL_ERR_MALFORMED;
		*lens[i] = l;
		*parts[i] = p;
		p += l;
	}
	return p == end ? 0 : KEEL_ERR_MALFORMED;
}
