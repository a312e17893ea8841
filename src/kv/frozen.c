/*
 * frozen.c -- the snapshot writers: the frozen version, which streams the
 * state at its freeze while applies go on (docs/snapshots.md §1.2), and the
 * plain writer, the same engine over a kv that must not change.
 *
 * How the frozen version stays frozen: the writer emits records in key
 * order and remembers the last key it passed (a copy of the key: no node
 * pointer survives an apply, because applies rebalance the trees). Before
 * kv changes a key above that cursor which has no pre-image yet, it hands
 * the frozen version the key's record as it was (kv.c) -- or ABSENT for a
 * key created since the freeze. So for every key above the cursor, "the
 * pre-image if there is one, else the live entry" is the key's record at
 * the freeze, and the live tree holds no frozen key that has neither. Each
 * call re-seeks the live tree at the cursor and merges it with the
 * pre-images (a pre-image wins over the live entry of its key; ABSENT
 * emits nothing), freeing each pre-image as the cursor passes it.
 *
 * A record the writer is part-way through when a call ends is the first
 * record above the cursor; by the rule above it reads the same at the next
 * call, so the writer resumes at the same byte offset inside it.
 *
 * Known weakness: the cursor buffer is as long as the longest key the kv
 * ever held (kv->max_key_len never shrinks), since the writer may have to
 * hold any key alive at the freeze and keeps no allocation failure path.
 */
#include <string.h>

#include "kv/kv_internal.h"

enum kv_frozen_phase {
	KV_FZ_HEADER,
	KV_FZ_RECORDS,
	KV_FZ_TRAILER,
	KV_FZ_DONE,
};

struct kv_frozen {
	const struct keel_alloc *a; /* this struct and the cursor buffer */
	const struct kv *kv;
	/* The kv whose kv->frozen this is, or NULL for a plain writer
	 * (which never holds pre-images). */
	struct kv *owner;
	uint64_t size;         /* the snapshot's total length at the freeze */
	uint64_t index;        /* applied index at the freeze */
	uint64_t rev_at_start; /* plain writer: asserted unchanged */
	uint8_t header[KV_SNAP_HEADER_BYTES];
	uint8_t trailer[4];
	enum kv_frozen_phase phase;
	/* Bytes of the header, the current record or the trailer already out. */
	size_t off;
	uint32_t crc; /* over every byte out before the trailer */
	/* The cursor: the last key passed (emitted, or skipped as ABSENT);
	 * none before the first record. Invariant: passed_len <= passed_cap,
	 * and every key at the freeze fits in passed_cap. */
	bool passed_any;
	uint8_t *passed;
	size_t passed_len, passed_cap;
	/* Pre-images by key, linked by kv_entry.by_key, allocated through the
	 * owner's allocator. Invariant: every key is above the cursor; at most
	 * one per key. */
	struct kv_avl *pre;
	size_t pre_bytes;
	/* Within one kv_frozen_next call only (an apply invalidates them). */
	struct kv_avl_iter it;
	const struct kv_entry *cur; /* the record being emitted, or NULL */
	struct kv_entry *cur_pre;   /* == cur when it is a pre-image */
};

static size_t kv_pre_size(const struct kv_entry *e)
{
	return sizeof(*e) + e->key_len + e->val_cap;
}

static size_t kv_min(size_t a, size_t b)
{
	return a < b ? a : b;
}

/* ---- the pre-image side (called from kv.c's mutation helpers) ------------ */

bool kv_frozen_wants(const struct kv_frozen *f, const uint8_t *key,
		     size_t klen)
{
	if (f->phase == KV_FZ_TRAILER || f->phase == KV_FZ_DONE)
		return false; /* every record is out */
	if (f->passed_any &&
	    kv_keycmp(key, klen, f->passed, f->passed_len) <= 0)
		return false;
	struct kv_probe p = {key, klen, 0, 0};
	return kv_avl_find(f->pre, &p, kv_cmp_key) == NULL;
}

int kv_frozen_reserve(struct kv_frozen *f, size_t klen)
{
	if (klen <= f->passed_cap)
		return 0;
	uint8_t *b = f->a->realloc(f->a->ctx, f->passed, klen);
	if (!b)
		return KEEL_ERR_NOMEM;
	f->passed = b;
	f->passed_cap = klen;
	return 0;
}

void kv_frozen_keep(struct kv_frozen *f, struct kv_entry *pre)
{
	KEEL_ASSERT(f->owner != NULL);
	/* The writer copies every key it passes into the cursor. */
	KEEL_ASSERT(pre->key_len <= f->passed_cap);
	KEEL_DASSERT(kv_frozen_wants(f, pre->key, pre->key_len));
	struct kv_probe p = {pre->key, pre->key_len, 0, 0};
	f->pre = kv_avl_insert(f->pre, &pre->by_key, &p, kv_cmp_key);
	f->pre_bytes += kv_pre_size(pre);
}

static void kv_frozen_drop(struct kv_frozen *f, struct kv_entry *pre)
{
	struct kv_probe p = {pre->key, pre->key_len, 0, 0};
	f->pre = kv_avl_remove(f->pre, &p, kv_cmp_key);
	KEEL_ASSERT(f->pre_bytes >= kv_pre_size(pre));
	f->pre_bytes -= kv_pre_size(pre);
	kv_entry_free(f->owner, pre);
}

static void free_pre(void *arg, struct kv_avl *n)
{
	struct kv_frozen *f = arg;
	kv_entry_free(f->owner, KV_CONTAINER(n, by_key));
}

/* Frees every pre-image. */
static void kv_frozen_free_pre(struct kv_frozen *f)
{
	kv_avl_drain(f->pre, free_pre, f);
	f->pre = NULL;
	f->pre_bytes = 0;
}

/* ---- the writer ------------------------------------------------------------ */

static void kv_frozen_pass(struct kv_frozen *f, const struct kv_entry *e)
{
	KEEL_ASSERT(e->key_len <= f->passed_cap);
	if (e->key_len)
		memcpy(f->passed, e->key, e->key_len);
	f->passed_len = e->key_len;
	f->passed_any = true;
}

static struct kv_entry *kv_frozen_first_pre(const struct kv_frozen *f)
{
	struct kv_avl *n = f->pre;
	if (!n)
		return NULL;
	while (n->left)
		n = n->left;
	return KV_CONTAINER(n, by_key);
}

/* Positions the live iterator at the first key above the cursor. */
static void kv_frozen_seek(struct kv_frozen *f)
{
	if (!f->passed_any) {
		kv_avl_seek(&f->it, f->kv->by_key, NULL, kv_cmp_key);
		return;
	}
	struct kv_probe p = {f->passed, f->passed_len, 0, 0};
	kv_avl_seek(&f->it, f->kv->by_key, &p, kv_cmp_key);
	struct kv_avl *n = kv_avl_cur(&f->it);
	if (n && kv_cmp_key(&p, n) == 0)
		kv_avl_next(&f->it);
}

/* The next record above the cursor, or NULL when none is left: the smaller
 * of the next live key and the first pre-image; on a tie the pre-image.
 * ABSENT pre-images are passed and freed on the way. */
static const struct kv_entry *kv_frozen_pick(struct kv_frozen *f)
{
	for (;;) {
		struct kv_avl *n = kv_avl_cur(&f->it);
		const struct kv_entry *l = n ? KV_CONTAINER(n, by_key) : NULL;
		struct kv_entry *p = kv_frozen_first_pre(f);
		int c = !p ? 1
			   : !l ? -1
				: kv_keycmp(p->key, p->key_len, l->key,
					    l->key_len);
		if (c > 0) {
			if (!l)
				return NULL;
			kv_avl_next(&f->it);
			f->cur_pre = NULL;
			return l;
		}
		if (c == 0)
			kv_avl_next(&f->it); /* the pre-image stands for it */
		if (!kv_entry_is_absent(p)) {
			f->cur_pre = p;
			return p;
		}
		kv_frozen_pass(f, p);
		kv_frozen_drop(f, p);
	}
}

/* Emits what fits of the current record from offset f->off. */
static size_t kv_frozen_emit(struct kv_frozen *f, uint8_t *dst, size_t room)
{
	const struct kv_entry *e = f->cur;
	size_t out = 0;
	/* A record resumed part-way must be the one begun (the pre-image
	 * rule): had it changed, off could lie past its end. */
	KEEL_ASSERT(f->off <
		    KV_SNAP_RECORD_BYTES + e->key_len + e->val_len);
	if (f->off < KV_SNAP_RECORD_BYTES) {
		uint8_t h[KV_SNAP_RECORD_BYTES];
		kv_snap_record(e, h);
		size_t take = kv_min(KV_SNAP_RECORD_BYTES - f->off, room);
		memcpy(dst, h + f->off, take);
		out += take;
		f->off += take;
	}
	size_t kend = KV_SNAP_RECORD_BYTES + e->key_len;
	if (out < room && f->off < kend) {
		size_t take = kv_min(kend - f->off, room - out);
		memcpy(dst + out, e->key + (f->off - KV_SNAP_RECORD_BYTES),
		       take);
		out += take;
		f->off += take;
	}
	size_t vend = kend + e->val_len;
	if (out < room && f->off < vend) {
		size_t take = kv_min(vend - f->off, room - out);
		memcpy(dst + out, e->val + (f->off - kend), take);
		out += take;
		f->off += take;
	}
	return out;
}

bool kv_frozen_next(struct kv_frozen *f, uint8_t *buf, size_t cap, size_t *n)
{
	KEEL_ASSERT(cap > 0);
	if (!f->owner) /* a plain writer reads a kv that must not change */
		KEEL_ASSERT(f->kv->revision == f->rev_at_start);
	size_t out = 0, crc_from = 0;
	if (f->phase == KV_FZ_RECORDS)
		kv_frozen_seek(f);
	while (out < cap && f->phase != KV_FZ_DONE) {
		if (f->phase == KV_FZ_HEADER) {
			size_t take = kv_min(KV_SNAP_HEADER_BYTES - f->off,
					     cap - out);
			memcpy(buf + out, f->header + f->off, take);
			out += take;
			f->off += take;
			if (f->off == KV_SNAP_HEADER_BYTES) {
				f->phase = KV_FZ_RECORDS;
				f->off = 0;
				kv_frozen_seek(f);
			}
		} else if (f->phase == KV_FZ_RECORDS) {
			if (!f->cur)
				f->cur = kv_frozen_pick(f);
			if (!f->cur) {
				KEEL_ASSERT(f->off == 0 && f->pre == NULL);
				f->crc = keel_crc32c(f->crc, buf + crc_from,
						     out - crc_from);
				crc_from = out;
				keel_put_u32(f->trailer, f->crc);
				f->phase = KV_FZ_TRAILER;
				continue;
			}
			out += kv_frozen_emit(f, buf + out, cap - out);
			if (f->off == KV_SNAP_RECORD_BYTES + f->cur->key_len +
					      f->cur->val_len) {
				kv_frozen_pass(f, f->cur);
				if (f->cur_pre)
					kv_frozen_drop(f, f->cur_pre);
				f->cur = NULL;
				f->cur_pre = NULL;
				f->off = 0;
			}
		} else { /* KV_FZ_TRAILER: not part of the CRC */
			size_t take = kv_min(4 - f->off, cap - out);
			memcpy(buf + out, f->trailer + f->off, take);
			out += take;
			f->off += take;
			crc_from = out;
			if (f->off == 4)
				f->phase = KV_FZ_DONE;
		}
	}
	if (f->phase == KV_FZ_HEADER || f->phase == KV_FZ_RECORDS)
		f->crc = keel_crc32c(f->crc, buf + crc_from, out - crc_from);
	/* Applies may run before the next call: hold no node pointer. */
	f->cur = NULL;
	f->cur_pre = NULL;
	*n = out;
	return f->phase != KV_FZ_DONE;
}

/* ---- life cycle ------------------------------------------------------------ */

static int kv_frozen_init(struct kv_frozen *f, const struct kv *kv,
			  const struct keel_alloc *a)
{
	memset(f, 0, sizeof(*f));
	f->passed_cap = kv->max_key_len ? kv->max_key_len : 1;
	f->passed = a->malloc(a->ctx, f->passed_cap);
	if (!f->passed)
		return KEEL_ERR_NOMEM;
	f->a = a;
	f->kv = kv;
	f->size = kv_snapshot_size(kv);
	f->index = kv->applied_index;
	f->rev_at_start = kv->revision;
	kv_snap_header(kv, f->header);
	f->phase = KV_FZ_HEADER;
	return 0;
}

struct kv_frozen *kv_freeze(struct kv *kv, const struct keel_alloc *a)
{
	KEEL_ASSERT(kv != NULL && a != NULL);
	if (kv->frozen)
		return NULL;
	struct kv_frozen *f = a->malloc(a->ctx, sizeof(*f));
	if (!f)
		return NULL;
	if (kv_frozen_init(f, kv, a)) {
		a->free(a->ctx, f);
		return NULL;
	}
	f->owner = kv;
	kv->frozen = f;
	return f;
}

uint64_t kv_frozen_size(const struct kv_frozen *f)
{
	return f->size;
}

uint64_t kv_frozen_index(const struct kv_frozen *f)
{
	return f->index;
}

size_t kv_frozen_preimage_bytes(const struct kv_frozen *f)
{
	return f->pre_bytes;
}

void kv_frozen_destroy(struct kv_frozen *f)
{
	if (!f)
		return;
	KEEL_ASSERT(f->owner != NULL && f->owner->frozen == f);
	kv_frozen_free_pre(f);
	f->owner->frozen = NULL;
	f->a->free(f->a->ctx, f->passed);
	f->a->free(f->a->ctx, f);
}

/* ---- the plain writer ------------------------------------------------------ */

struct kv_snap_writer {
	struct kv_frozen fz; /* never attached: no pre-images */
};

struct kv_snap_writer *kv_snapshot_writer_create(const struct kv *kv,
						 const struct keel_alloc *a)
{
	struct kv_snap_writer *w = a->malloc(a->ctx, sizeof(*w));
	if (!w)
		return NULL;
	if (kv_frozen_init(&w->fz, kv, a)) {
		a->free(a->ctx, w);
		return NULL;
	}
	return w;
}

bool kv_snapshot_writer_next(struct kv_snap_writer *w, uint8_t *buf,
			     size_t cap, size_t *n)
{
	return kv_frozen_next(&w->fz, buf, cap, n);
}

void kv_snapshot_writer_destroy(struct kv_snap_writer *w)
{
	if (!w)
		return;
	const struct keel_alloc *a = w->fz.a;
	a->free(a->ctx, w->fz.passed);
	a->free(a->ctx, w);
}
