/*
 * snapshot.c -- the kv state as bytes and back (docs/kv.md, "Snapshot
 * format", has the byte-by-byte table).
 *
 * The writer is a resumable byte generator over the key tree: it hands out
 * the snapshot in chunks of whatever size the caller's buffer has, so the
 * node can stream a large keyspace to disk or to a follower without one big
 * allocation. Encoding walks keys in order, so the same state gives the
 * same bytes. The decoder treats its input as hostile: it checks the total
 * length and the CRC32C before parsing, then caps and checks every field,
 * and requires strictly increasing keys (no duplicates, canonical order).
 */
#include <string.h>

#include "kv/kv_internal.h"

static const uint8_t kv_snap_magic[8] = {'K', 'E', 'E', 'L', 'K', 'V', 'S',
					 'N'};

uint64_t kv_snapshot_size(const struct kv *kv)
{
	return KV_SNAP_HEADER_BYTES + kv->count * (uint64_t)KV_SNAP_RECORD_BYTES +
	       kv->key_bytes + kv->val_bytes + 4;
}

static void kv_snap_header(const struct kv *kv, uint8_t *h)
{
	memcpy(h, kv_snap_magic, 8);
	keel_put_u32(h + 8, KV_SNAP_VERSION);
	keel_put_u32(h + 12, 0); /* flags, reserved */
	keel_put_u64(h + 16, kv_snapshot_size(kv));
	keel_put_u64(h + 24, kv->applied_index);
	keel_put_u64(h + 32, kv->revision);
	keel_put_u64(h + 40, kv->count);
	keel_put_u64(h + 48, kv->expires);
}

static void kv_snap_record(const struct kv_entry *e, uint8_t *r)
{
	keel_put_u32(r, (uint32_t)e->key_len);
	keel_put_u32(r + 4, (uint32_t)e->val_len);
	keel_put_u64(r + 8, e->meta.create_revision);
	keel_put_u64(r + 16, e->meta.mod_revision);
	keel_put_u64(r + 24, e->meta.version);
	keel_put_u64(r + 32, e->meta.expire_at_ms);
}

/* ---- writer ------------------------------------------------------------------ */

enum kv_snap_phase {
	KV_SNAP_HEADER,
	KV_SNAP_REC_HDR, /* the current entry's 40 fixed bytes */
	KV_SNAP_REC_KEY,
	KV_SNAP_REC_VAL,
	KV_SNAP_TRAILER,
	KV_SNAP_DONE,
};

struct kv_snap_writer {
	const struct keel_alloc *a;
	const struct kv *kv;
	struct kv_avl_iter it;
	enum kv_snap_phase phase;
	const struct kv_entry *cur;
	uint8_t fixed[KV_SNAP_HEADER_BYTES]; /* header, record head, trailer */
	const uint8_t *src; /* bytes of the current piece */
	size_t src_len;
	size_t off; /* how much of the current piece is out */
	uint32_t crc;
	uint64_t rev_at_start; /* the kv must not change while we write */
};

/* Sets up the piece for the current phase. */
static void kv_snap_piece(struct kv_snap_writer *w)
{
	w->off = 0;
	switch (w->phase) {
	case KV_SNAP_HEADER:
		kv_snap_header(w->kv, w->fixed);
		w->src = w->fixed;
		w->src_len = KV_SNAP_HEADER_BYTES;
		break;
	case KV_SNAP_REC_HDR:
		kv_snap_record(w->cur, w->fixed);
		w->src = w->fixed;
		w->src_len = KV_SNAP_RECORD_BYTES;
		break;
	case KV_SNAP_REC_KEY:
		w->src = w->cur->key;
		w->src_len = w->cur->key_len;
		break;
	case KV_SNAP_REC_VAL:
		w->src = w->cur->val;
		w->src_len = w->cur->val_len;
		break;
	case KV_SNAP_TRAILER:
		keel_put_u32(w->fixed, w->crc);
		w->src = w->fixed;
		w->src_len = 4;
		break;
	case KV_SNAP_DONE:
		w->src = NULL;
		w->src_len = 0;
		break;
	}
}

/* Moves to the next piece once the current one is fully out. */
static void kv_snap_advance(struct kv_snap_writer *w)
{
	switch (w->phase) {
	case KV_SNAP_HEADER:
	case KV_SNAP_REC_VAL:
		if (w->phase == KV_SNAP_REC_VAL)
			kv_avl_next(&w->it);
		else
			kv_avl_seek(&w->it, w->kv->by_key, NULL, kv_cmp_key);
		if (kv_avl_cur(&w->it)) {
			w->cur = KV_CONTAINER(kv_avl_cur(&w->it), by_key);
			w->phase = KV_SNAP_REC_HDR;
		} else {
			w->phase = KV_SNAP_TRAILER;
		}
		break;
	case KV_SNAP_REC_HDR:
		w->phase = KV_SNAP_REC_KEY;
		break;
	case KV_SNAP_REC_KEY:
		w->phase = KV_SNAP_REC_VAL;
		break;
	case KV_SNAP_TRAILER:
	case KV_SNAP_DONE:
		w->phase = KV_SNAP_DONE;
		break;
	}
	kv_snap_piece(w);
}

struct kv_snap_writer *kv_snapshot_writer_create(const struct kv *kv,
						 const struct keel_alloc *a)
{
	struct kv_snap_writer *w = a->malloc(a->ctx, sizeof(*w));
	if (!w)
		return NULL;
	memset(w, 0, sizeof(*w));
	w->a = a;
	w->kv = kv;
	w->phase = KV_SNAP_HEADER;
	w->rev_at_start = kv->revision;
	kv_snap_piece(w);
	return w;
}

bool kv_snapshot_writer_next(struct kv_snap_writer *w, uint8_t *buf,
			     size_t cap, size_t *n)
{
	KEEL_ASSERT(cap > 0);
	KEEL_ASSERT(w->kv->revision == w->rev_at_start);
	size_t out = 0;
	while (out < cap && w->phase != KV_SNAP_DONE) {
		size_t take = w->src_len - w->off;
		if (take > cap - out)
			take = cap - out;
		if (take) {
			memcpy(buf + out, w->src + w->off, take);
			if (w->phase != KV_SNAP_TRAILER)
				w->crc = keel_crc32c(w->crc, buf + out, take);
			out += take;
			w->off += take;
		}
		if (w->off == w->src_len)
			kv_snap_advance(w);
	}
	*n = out;
	return w->phase != KV_SNAP_DONE;
}

void kv_snapshot_writer_destroy(struct kv_snap_writer *w)
{
	if (w)
		w->a->free(w->a->ctx, w);
}

int kv_snapshot_encode(const struct kv *kv, const struct keel_alloc *a,
		       uint8_t **out, size_t *out_len)
{
	uint64_t size = kv_snapshot_size(kv);
	if (size > SIZE_MAX)
		return KEEL_ERR_TOO_BIG;
	uint8_t *buf = a->malloc(a->ctx, (size_t)size);
	if (!buf)
		return KEEL_ERR_NOMEM;
	struct kv_snap_writer *w = kv_snapshot_writer_create(kv, a);
	if (!w) {
		a->free(a->ctx, buf);
		return KEEL_ERR_NOMEM;
	}
	size_t n = 0;
	bool more = kv_snapshot_writer_next(w, buf, (size_t)size, &n);
	KEEL_ASSERT(!more && n == size);
	kv_snapshot_writer_destroy(w);
	*out = buf;
	*out_len = (size_t)size;
	return 0;
}

/* ---- decoder ------------------------------------------------------------------ */

static int kv_snap_decode_into(struct kv *kv, const uint8_t *buf, size_t len)
{
	uint64_t revision = keel_get_u64(buf + 32);
	uint64_t count = keel_get_u64(buf + 40);
	uint64_t expires = keel_get_u64(buf + 48);
	size_t end = len - 4;
	if (count > (end - KV_SNAP_HEADER_BYTES) / KV_SNAP_RECORD_BYTES)
		return KEEL_ERR_MALFORMED;
	size_t off = KV_SNAP_HEADER_BYTES;
	const struct kv_entry *prev = NULL;
	for (uint64_t i = 0; i < count; i++) {
		if (end - off < KV_SNAP_RECORD_BYTES)
			return KEEL_ERR_TRUNCATED;
		const uint8_t *r = buf + off;
		uint32_t klen = keel_get_u32(r);
		uint32_t vlen = keel_get_u32(r + 4);
		struct kv_meta m = {
			.create_revision = keel_get_u64(r + 8),
			.mod_revision = keel_get_u64(r + 16),
			.version = keel_get_u64(r + 24),
			.expire_at_ms = keel_get_u64(r + 32),
		};
		off += KV_SNAP_RECORD_BYTES;
		if (klen > KV_MAX_KEY_BYTES || vlen > KV_MAX_VALUE_BYTES)
			return KEEL_ERR_TOO_BIG;
		if (end - off < (size_t)klen + vlen)
			return KEEL_ERR_TRUNCATED;
		if (m.create_revision < 1 || m.create_revision > m.mod_revision ||
		    m.mod_revision > revision || m.version < 1)
			return KEEL_ERR_MALFORMED;
		const uint8_t *key = buf + off;
		if (prev) {
			struct kv_probe p = {key, klen, 0, 0};
			if (kv_cmp_key(&p, &prev->by_key) <= 0)
				return KEEL_ERR_MALFORMED;
		}
		struct kv_entry *e = kv_entry_alloc(kv, key, klen);
		if (!e)
			return KEEL_ERR_NOMEM;
		if (vlen) {
			e->val = kv->a->malloc(kv->a->ctx, vlen);
			if (!e->val) {
				kv_entry_free(kv, e);
				return KEEL_ERR_NOMEM;
			}
			memcpy(e->val, buf + off + klen, vlen);
		}
		e->val_len = e->val_cap = vlen;
		e->meta = m;
		kv_link_entry(kv, e);
		prev = e;
		off += (size_t)klen + vlen;
	}
	if (off != end)
		return KEEL_ERR_MALFORMED;
	if (expires != kv->expires)
		return KEEL_ERR_MALFORMED;
	return 0;
}

int kv_snapshot_decode(const struct keel_alloc *a, const uint8_t *buf,
		       size_t len, struct kv **out)
{
	if (len < 8 || memcmp(buf, kv_snap_magic, 8) != 0)
		return len < 8 ? KEEL_ERR_TRUNCATED : KEEL_ERR_MAGIC;
	if (len < KV_SNAP_HEADER_BYTES + 4)
		return KEEL_ERR_TRUNCATED;
	if (keel_get_u32(buf + 8) != KV_SNAP_VERSION)
		return KEEL_ERR_VERSION;
	uint64_t total = keel_get_u64(buf + 16);
	if (total != len)
		return total > len ? KEEL_ERR_TRUNCATED : KEEL_ERR_MALFORMED;
	/* Verify the whole image before trusting any field beyond the
	 * length: a flipped bit anywhere is caught here. */
	if (keel_crc32c(0, buf, len - 4) != keel_get_u32(buf + len - 4))
		return KEEL_ERR_CORRUPT;
	if (keel_get_u32(buf + 12) != 0)
		return KEEL_ERR_MALFORMED;
	struct kv *kv = kv_create(a);
	if (!kv)
		return KEEL_ERR_NOMEM;
	int rc = kv_snap_decode_into(kv, buf, len);
	if (rc) {
		kv_destroy(kv);
		return rc;
	}
	kv->applied_index = keel_get_u64(buf + 24);
	kv->revision = keel_get_u64(buf + 32);
	*out = kv;
	return 0;
}
