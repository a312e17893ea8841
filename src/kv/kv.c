/*
 * kv.c -- the keyspace: entries, the three indexes, the mutation helpers
 * that keep revisions and byte counts right, and the read-side queries
 * (point get, ranges, prefixes, the expiry sweep, DBSIZE, stats, digest).
 *
 * Revisions are etcd's: the global revision goes up by one per applied
 * entry that changed anything; each key records the revision that created
 * it, the revision that last changed it, and how many entries changed it.
 * Every mutation goes through the helpers here so that rule lives in one
 * place (kv_touch).
 *
 * The same helpers keep the frozen version's pre-images (frozen.c,
 * docs/snapshots.md §1.2): before a change to a key the frozen writer has
 * not passed, the key's old record is kept -- the deleted entry itself, the
 * replaced value buffer moved, a copy for a TTL change -- or ABSENT for a
 * key that did not exist. Allocation happens before anything changes, so a
 * failure is still "nothing changed". KEEL_DASSERTs in kv_touch and
 * kv_set_expire catch a mutation path that forgot to keep one.
 */
#include <string.h>

#include "kv/kv_internal.h"

/* ---- hashing -------------------------------------------------------------- */

static uint64_t kv_mix64(uint64_t x)
{
	/* splitmix64's finaliser: full avalanche, cheap. */
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	x ^= x >> 31;
	return x;
}

uint64_t kv_hash64(const void *data, size_t len, uint64_t seed)
{
	const uint8_t *p = data;
	uint64_t h = kv_mix64(seed ^ ((uint64_t)len * 0x9e3779b97f4a7c15ull));
	while (len >= 8) {
		h = (h ^ kv_mix64(keel_get_u64(p))) * 0x9e3779b97f4a7c15ull;
		h ^= h >> 29;
		p += 8;
		len -= 8;
	}
	uint64_t w = 0;
	for (size_t i = 0; i < len; i++)
		w |= (uint64_t)p[i] << (8 * i);
	h = (h ^ kv_mix64(w ^ 0x5851f42d4c957f2dull)) * 0x9e3779b97f4a7c15ull;
	return kv_mix64(h);
}

uint64_t kv_key_hash(const uint8_t *key, size_t len)
{
	return kv_hash64(key, len, 0x6b65656c5343414eull); /* "keelSCAN" */
}

/* ---- comparators ----------------------------------------------------------- */

int kv_keycmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
	size_t n = alen < blen ? alen : blen;
	int c = n ? memcmp(a, b, n) : 0;
	if (c)
		return c < 0 ? -1 : 1;
	return alen < blen ? -1 : alen > blen ? 1 : 0;
}

int kv_cmp_key(const struct kv_probe *p, const struct kv_avl *n)
{
	const struct kv_entry *e = KV_CONTAINER(n, by_key);
	return kv_keycmp(p->key, p->len, e->key, e->key_len);
}

int kv_cmp_hash(const struct kv_probe *p, const struct kv_avl *n)
{
	const struct kv_entry *e = KV_CONTAINER(n, by_hash);
	if (p->hash != e->hash)
		return p->hash < e->hash ? -1 : 1;
	return kv_keycmp(p->key, p->len, e->key, e->key_len);
}

int kv_cmp_exp(const struct kv_probe *p, const struct kv_avl *n)
{
	const struct kv_entry *e = KV_CONTAINER(n, by_exp);
	if (p->exp != e->meta.expire_at_ms)
		return p->exp < e->meta.expire_at_ms ? -1 : 1;
	return kv_keycmp(p->key, p->len, e->key, e->key_len);
}

static struct kv_probe kv_entry_probe(const struct kv_entry *e)
{
	struct kv_probe p = {e->key, e->key_len, e->hash, e->meta.expire_at_ms};
	return p;
}

/* ---- lifecycle ------------------------------------------------------------- */

struct kv *kv_create(const struct keel_alloc *a)
{
	KEEL_ASSERT(a != NULL);
	struct kv *kv = a->malloc(a->ctx, sizeof(*kv));
	if (!kv)
		return NULL;
	memset(kv, 0, sizeof(*kv));
	kv->a = a;
	return kv;
}

#ifdef KEEL_MUTANTS
void kv_set_mutant(struct kv *kv, int mutant)
{
	kv->mutant = mutant;
}
#endif

/* With a frozen version live (FLUSHALL during a snapshot), an entry the
 * writer still needs is moved into its pre-images instead of being freed:
 * no allocation, so a flush cannot fail. */
static void free_or_keep(void *arg, struct kv_avl *n)
{
	struct kv *kv = arg;
	struct kv_entry *e = KV_CONTAINER(n, by_key);
	if (kv->frozen && kv_frozen_wants(kv->frozen, e->key, e->key_len))
		kv_frozen_keep(kv->frozen, e);
	else
		kv_entry_free(kv, e);
}

/* Frees (or keeps, above) every entry: kv_avl_drain takes the key tree
 * apart without recursion; the other trees hold the same entries. */
static void kv_free_all(struct kv *kv)
{
	kv_avl_drain(kv->by_key, free_or_keep, kv);
	kv->by_key = kv->by_hash = kv->by_exp = NULL;
	kv->count = kv->expires = 0;
	kv->key_bytes = kv->val_bytes = kv->val_cap_bytes = 0;
}

void kv_destroy(struct kv *kv)
{
	if (!kv)
		return;
	/* The frozen version borrows kv and holds entries of its allocator. */
	KEEL_ASSERT(kv->frozen == NULL);
	kv_free_all(kv);
	kv->a->free(kv->a->ctx, kv);
}

void kv_clear(struct kv *kv)
{
	if (kv->count)
		kv->changed = true;
	kv_free_all(kv);
}

/* ---- entries --------------------------------------------------------------- */

struct kv_entry *kv_entry_alloc(struct kv *kv, const uint8_t *key, size_t klen)
{
	struct kv_entry *e = kv->a->malloc(kv->a->ctx, sizeof(*e) + klen);
	if (!e)
		return NULL;
	memset(e, 0, sizeof(*e));
	e->key_len = klen;
	if (key) {
		if (klen)
			memcpy(e->key, key, klen);
		e->hash = kv_key_hash(key, klen);
	}
	return e;
}

void kv_entry_free(struct kv *kv, struct kv_entry *e)
{
	kv->a->free(kv->a->ctx, e->val);
	kv->a->free(kv->a->ctx, e);
}

void kv_link_entry(struct kv *kv, struct kv_entry *e)
{
	struct kv_probe p = kv_entry_probe(e);
	kv->by_key = kv_avl_insert(kv->by_key, &e->by_key, &p, kv_cmp_key);
	kv->by_hash = kv_avl_insert(kv->by_hash, &e->by_hash, &p, kv_cmp_hash);
	if (e->meta.expire_at_ms) {
		kv->by_exp =
			kv_avl_insert(kv->by_exp, &e->by_exp, &p, kv_cmp_exp);
		kv->expires++;
	}
	kv->count++;
	if (e->key_len > kv->max_key_len)
		kv->max_key_len = e->key_len;
	kv->key_bytes += e->key_len;
	kv->val_bytes += e->val_len;
	kv->val_cap_bytes += e->val_cap;
}

struct kv_entry *kv_lookup(const struct kv *kv, const uint8_t *key, size_t len)
{
	struct kv_probe p = {key, len, 0, 0};
	struct kv_avl *n = kv_avl_find(kv->by_key, &p, kv_cmp_key);
	return n ? KV_CONTAINER(n, by_key) : NULL;
}

struct kv_entry *kv_lookup_live(const struct kv *kv, const uint8_t *key,
				size_t len, uint64_t now_ms)
{
	struct kv_entry *e = kv_lookup(kv, key, len);
	return e && !kv_entry_expired(e, now_ms) ? e : NULL;
}

/* ---- mutations ------------------------------------------------------------- */

/* A pre-image of e's key exists or is not needed: every mutation path kept
 * one before changing e. O(log n): debug builds only. */
#define KV_DASSERT_PRESERVED(kv, e)                                          \
	KEEL_DASSERT(!(kv)->frozen ||                                         \
		     !kv_frozen_wants((kv)->frozen, (e)->key, (e)->key_len))

void kv_touch(struct kv *kv, struct kv_entry *e)
{
	KEEL_ASSERT(kv->pending_rev == kv->revision + 1);
	KV_DASSERT_PRESERVED(kv, e);
	/* One version step per entry, however many times the entry writes the
	 * key (MSET k a k b): version counts writes as the log sees them. */
	if (e->meta.mod_revision != kv->pending_rev) {
		e->meta.mod_revision = kv->pending_rev;
		e->meta.version++;
	}
	kv->changed = true;
}

void kv_set_expire(struct kv *kv, struct kv_entry *e, uint64_t expire_at)
{
	if (e->meta.expire_at_ms == expire_at)
		return;
	KV_DASSERT_PRESERVED(kv, e);
	struct kv_probe p = kv_entry_probe(e);
	if (e->meta.expire_at_ms) {
		kv->by_exp = kv_avl_remove(kv->by_exp, &p, kv_cmp_exp);
		kv->expires--;
	}
	e->meta.expire_at_ms = expire_at;
	if (expire_at) {
		p.exp = expire_at;
		kv->by_exp =
			kv_avl_insert(kv->by_exp, &e->by_exp, &p, kv_cmp_exp);
		kv->expires++;
	}
}

void kv_delete_entry(struct kv *kv, struct kv_entry *e)
{
	struct kv_probe p = kv_entry_probe(e);
	kv->by_key = kv_avl_remove(kv->by_key, &p, kv_cmp_key);
	kv->by_hash = kv_avl_remove(kv->by_hash, &p, kv_cmp_hash);
	if (e->meta.expire_at_ms) {
		kv->by_exp = kv_avl_remove(kv->by_exp, &p, kv_cmp_exp);
		kv->expires--;
	}
	KEEL_ASSERT(kv->count > 0);
	kv->count--;
	kv->key_bytes -= e->key_len;
	kv->val_bytes -= e->val_len;
	kv->val_cap_bytes -= e->val_cap;
	/* The writer still needs the record: the entry itself becomes the
	 * pre-image (its by_key node is free now). */
	if (kv->frozen && kv_frozen_wants(kv->frozen, e->key, e->key_len))
		kv_frozen_keep(kv->frozen, e);
	else
		kv_entry_free(kv, e);
	kv->changed = true;
}

/* A copy of e's record (value included) as a pre-image; NULL on failure. */
static struct kv_entry *kv_preimage_copy(struct kv *kv,
					 const struct kv_entry *e)
{
	struct kv_entry *pre = kv_entry_alloc(kv, e->key, e->key_len);
	if (!pre)
		return NULL;
	if (e->val_len) {
		pre->val = kv->a->malloc(kv->a->ctx, e->val_len);
		if (!pre->val) {
			kv_entry_free(kv, pre);
			return NULL;
		}
		memcpy(pre->val, e->val, e->val_len);
	}
	pre->val_len = pre->val_cap = e->val_len;
	pre->meta = e->meta;
	return pre;
}

int kv_change_expire(struct kv *kv, struct kv_entry *e, uint64_t expire_at)
{
	if (kv->frozen && kv_frozen_wants(kv->frozen, e->key, e->key_len)) {
		struct kv_entry *pre = kv_preimage_copy(kv, e);
		if (!pre)
			return KEEL_ERR_NOMEM;
		kv_frozen_keep(kv->frozen, pre);
	}
	kv_set_expire(kv, e, expire_at);
	kv_touch(kv, e);
	return 0;
}

static void kv_replace_val(struct kv *kv, struct kv_entry *e, uint8_t *buf,
			   size_t len, size_t cap)
{
	kv->val_bytes = kv->val_bytes - e->val_len + len;
	kv->val_cap_bytes = kv->val_cap_bytes - e->val_cap + cap;
	kv->a->free(kv->a->ctx, e->val);
	e->val = buf;
	e->val_len = len;
	e->val_cap = cap;
}

int kv_set_value(struct kv *kv, const uint8_t *key, size_t klen,
		 const uint8_t *val, size_t vlen, bool keep_ttl,
		 uint64_t expire_at, uint64_t now_ms)
{
	/* Allocate everything first so a failure leaves the state untouched. */
	uint8_t *buf = NULL;
	if (vlen) {
		buf = kv->a->malloc(kv->a->ctx, vlen);
		if (!buf)
			return KEEL_ERR_NOMEM;
		memcpy(buf, val, vlen);
	}
	struct kv_entry *e = kv_lookup(kv, key, klen);
	/* The pre-image: the old record, its value buffer moved (the change
	 * replaces it anyway), or ABSENT for a new key. */
	struct kv_entry *pre = NULL;
	if (kv->frozen && kv_frozen_wants(kv->frozen, key, klen)) {
		pre = kv_entry_alloc(kv, key, klen);
		if (!pre || (!e && kv_frozen_reserve(kv->frozen, klen))) {
			if (pre)
				kv_entry_free(kv, pre);
			kv->a->free(kv->a->ctx, buf);
			return KEEL_ERR_NOMEM;
		}
	}
	if (!e) {
		e = kv_entry_alloc(kv, key, klen);
		if (!e) {
			if (pre)
				kv_entry_free(kv, pre);
			kv->a->free(kv->a->ctx, buf);
			return KEEL_ERR_NOMEM;
		}
		if (pre)
			kv_frozen_keep(kv->frozen, pre); /* ABSENT */
		e->meta.create_revision = kv->pending_rev;
		kv_link_entry(kv, e);
		kv->create_marks[kv_mark_bucket(e->hash)] = kv->pending_rev;
	} else {
		if (pre) {
			pre->meta = e->meta;
			pre->val = e->val;
			pre->val_len = e->val_len;
			pre->val_cap = e->val_cap;
			/* Moved: kv_replace_val frees NULL, and its counters
			 * still see e's old length and capacity. */
			e->val = NULL;
			kv_frozen_keep(kv->frozen, pre);
		}
		if (kv_entry_expired(e, now_ms)) {
			/* The stored entry is logically gone: this is a new key
			 * with a new history, and there is no TTL left to keep. */
			e->meta.create_revision = kv->pending_rev;
			e->meta.mod_revision = 0;
			e->meta.version = 0;
			kv_set_expire(kv, e, 0);
			keep_ttl = false;
			kv->create_marks[kv_mark_bucket(e->hash)] =
				kv->pending_rev;
		}
	}
	kv_replace_val(kv, e, buf, vlen, vlen);
	if (!keep_ttl)
		kv_set_expire(kv, e, expire_at);
	kv_touch(kv, e);
	return 0;
}

int kv_append_value(struct kv *kv, struct kv_entry *e, const uint8_t *p,
		    size_t len)
{
	size_t need = e->val_len + len;
	if (kv->frozen && kv_frozen_wants(kv->frozen, e->key, e->key_len)) {
		/* The old buffer becomes the pre-image; e gets a new one, so
		 * the append cannot write into bytes the writer still reads. */
		size_t cap = need > e->val_cap ? need : e->val_cap;
		struct kv_entry *pre = kv_entry_alloc(kv, e->key, e->key_len);
		uint8_t *buf = cap ? kv->a->malloc(kv->a->ctx, cap) : NULL;
		if (!pre || (cap && !buf)) {
			if (pre)
				kv_entry_free(kv, pre);
			kv->a->free(kv->a->ctx, buf);
			return KEEL_ERR_NOMEM;
		}
		if (e->val_len)
			memcpy(buf, e->val, e->val_len);
		pre->meta = e->meta;
		pre->val = e->val;
		pre->val_len = e->val_len;
		pre->val_cap = e->val_cap;
		kv_frozen_keep(kv->frozen, pre);
		kv->val_cap_bytes = kv->val_cap_bytes - e->val_cap + cap;
		e->val = buf;
		e->val_cap = cap;
	} else if (need > e->val_cap) {
		/* Doubling keeps repeated APPEND amortised O(1) per byte. */
		size_t cap = e->val_cap * 2;
		if (cap < need)
			cap = need;
		if (cap > KV_MAX_VALUE_BYTES)
			cap = need;
		uint8_t *buf = kv->a->realloc(kv->a->ctx, e->val, cap);
		if (!buf)
			return KEEL_ERR_NOMEM;
		kv->val_cap_bytes = kv->val_cap_bytes - e->val_cap + cap;
		e->val = buf;
		e->val_cap = cap;
	}
	if (len)
		memcpy(e->val + e->val_len, p, len);
	e->val_len = need;
	kv->val_bytes += len;
	kv_touch(kv, e);
	return 0;
}

/* ---- queries --------------------------------------------------------------- */

bool kv_get(const struct kv *kv, const uint8_t *key, size_t klen,
	    uint64_t now_ms, const uint8_t **val, size_t *len,
	    struct kv_meta *meta)
{
	const struct kv_entry *e = kv_lookup_live(kv, key, klen, now_ms);
	if (!e)
		return false;
	if (val)
		*val = e->val;
	if (len)
		*len = e->val_len;
	if (meta)
		*meta = e->meta;
	return true;
}

/* Is key below the exclusive end bound? */
static bool kv_before_end(const struct kv_entry *e, const uint8_t *end,
			  size_t elen)
{
	return !end || kv_keycmp(e->key, e->key_len, end, elen) < 0;
}

uint64_t kv_range(const struct kv *kv, const uint8_t *start, size_t slen,
		  const uint8_t *end, size_t elen, uint64_t now_ms,
		  uint64_t limit, const struct kv_visit *v)
{
	struct kv_avl_iter it;
	struct kv_probe p = {start, slen, 0, 0};
	uint64_t n = 0;
	kv_avl_seek(&it, kv->by_key, start ? &p : NULL, kv_cmp_key);
	for (struct kv_avl *a; (a = kv_avl_cur(&it)); kv_avl_next(&it)) {
		const struct kv_entry *e = KV_CONTAINER(a, by_key);
		if (!kv_before_end(e, end, elen))
			break;
		if (kv_entry_expired(e, now_ms))
			continue;
		n++;
		if (v->cb(v->ctx, e->key, e->key_len, e->val, e->val_len,
			  &e->meta))
			break;
		if (limit && n >= limit)
			break;
	}
	return n;
}

uint64_t kv_prefix(const struct kv *kv, const uint8_t *prefix, size_t plen,
		   uint64_t now_ms, uint64_t limit, const struct kv_visit *v)
{
	struct kv_avl_iter it;
	struct kv_probe p = {prefix, plen, 0, 0};
	uint64_t n = 0;
	kv_avl_seek(&it, kv->by_key, &p, kv_cmp_key);
	for (struct kv_avl *a; (a = kv_avl_cur(&it)); kv_avl_next(&it)) {
		const struct kv_entry *e = KV_CONTAINER(a, by_key);
		if (e->key_len < plen ||
		    (plen && memcmp(e->key, prefix, plen) != 0))
			break;
		if (kv_entry_expired(e, now_ms))
			continue;
		n++;
		if (v->cb(v->ctx, e->key, e->key_len, e->val, e->val_len,
			  &e->meta))
			break;
		if (limit && n >= limit)
			break;
	}
	return n;
}

uint64_t kv_next_expired(const struct kv *kv, uint64_t now_ms, uint64_t max,
			 const struct kv_visit *v)
{
	struct kv_avl_iter it;
	uint64_t n = 0;
	kv_avl_seek(&it, kv->by_exp, NULL, kv_cmp_exp);
	for (struct kv_avl *a; n < max && (a = kv_avl_cur(&it));
	     kv_avl_next(&it)) {
		const struct kv_entry *e = KV_CONTAINER(a, by_exp);
		if (e->meta.expire_at_ms > now_ms)
			break;
		n++;
		if (v->cb(v->ctx, e->key, e->key_len, e->val, e->val_len,
			  &e->meta))
			break;
	}
	return n;
}

uint64_t kv_dbsize(const struct kv *kv, uint64_t now_ms)
{
	/* Expired = entries in the expiry index ordering before
	 * (now_ms + 1, ""), i.e. with expire_at_ms <= now_ms. */
	if (now_ms == UINT64_MAX)
		return kv->count - kv->expires;
	struct kv_probe p = {(const uint8_t *)"", 0, 0, now_ms + 1};
	uint64_t expired = kv_avl_rank(kv->by_exp, &p, kv_cmp_exp);
	KEEL_ASSERT(expired <= kv->count);
	return kv->count - expired;
}

void kv_stats(const struct kv *kv, struct kv_stats *st)
{
	st->keys = kv->count;
	st->expires = kv->expires;
	st->key_bytes = kv->key_bytes;
	st->value_bytes = kv->val_bytes;
	st->bytes = kv->key_bytes + kv->val_cap_bytes +
		    kv->count * (uint64_t)sizeof(struct kv_entry) +
		    (uint64_t)sizeof(struct kv);
	st->revision = kv->revision;
	st->applied_index = kv->applied_index;
}

uint64_t kv_digest(const struct kv *kv)
{
	uint8_t hdr[24 + 8 * KV_CREATE_MARKS];
	keel_put_u64(hdr, kv->revision);
	keel_put_u64(hdr + 8, kv->applied_index);
	keel_put_u64(hdr + 16, kv->count);
	for (unsigned i = 0; i < KV_CREATE_MARKS; i++)
		keel_put_u64(hdr + 24 + 8 * i, kv->create_marks[i]);
	uint64_t h = kv_hash64(hdr, sizeof(hdr), 0x6b65656c44494745ull);
	struct kv_avl_iter it;
	kv_avl_seek(&it, kv->by_key, NULL, kv_cmp_key);
	for (struct kv_avl *a; (a = kv_avl_cur(&it)); kv_avl_next(&it)) {
		const struct kv_entry *e = KV_CONTAINER(a, by_key);
		uint8_t m[32];
		keel_put_u64(m, e->meta.create_revision);
		keel_put_u64(m + 8, e->meta.mod_revision);
		keel_put_u64(m + 16, e->meta.version);
		keel_put_u64(m + 24, e->meta.expire_at_ms);
		/* Chain: each field hash is seeded with the running digest so
		 * order and boundaries matter. */
		h = kv_hash64(e->key, e->key_len, h);
		h = kv_hash64(e->val, e->val_len, h);
		h = kv_hash64(m, sizeof(m), h);
	}
	return h;
}
