/*
 * snapshot.c -- the kv state as bytes and back (docs/kv.md, "Snapshot
 * format", has the byte-by-byte table).
 *
 * The writers (frozen.c) are resumable byte generators over the key tree:
 * they hand out the snapshot in chunks of whatever size the caller's buffer
 * has, so the node can stream a large keyspace to disk or to a follower
 * without one big allocation. Encoding walks keys in order, so the same
 * state gives the same bytes. The decoder treats its input as hostile: it
 * checks the total length and the CRC32C before parsing, then caps and
 * checks every field, and requires strictly increasing keys (no
 * duplicates, canonical order). reader.c is the same decoder fed in pieces.
 */
#include <string.h>

#include "kv/kv_internal.h"

const uint8_t kv_snap_magic[8] = {'K', 'E', 'E', 'L', 'K', 'V', 'S', 'N'};

uint64_t kv_snapshot_size(const struct kv *kv)
{
	return KV_SNAP_HEADER_BYTES + kv->count * (uint64_t)KV_SNAP_RECORD_BYTES +
	       kv->key_bytes + kv->val_bytes + 4;
}

void kv_snap_header(const struct kv *kv, uint8_t *h)
{
	memcpy(h, kv_snap_magic, 8);
	keel_put_u32(h + 8, KV_SNAP_VERSION);
	keel_put_u32(h + 12, 0); /* flags, reserved */
	keel_put_u64(h + 16, kv_snapshot_size(kv));
	keel_put_u64(h + 24, kv->applied_index);
	keel_put_u64(h + 32, kv->revision);
	keel_put_u64(h + 40, kv->count);
	keel_put_u64(h + 48, kv->expires);
	for (unsigned i = 0; i < KV_CREATE_MARKS; i++)
		keel_put_u64(h + 56 + 8 * i, kv->create_marks[i]);
}

bool kv_snap_marks(struct kv *kv, const uint8_t *h, uint64_t revision)
{
	for (unsigned i = 0; i < KV_CREATE_MARKS; i++) {
		uint64_t m = keel_get_u64(h + 56 + 8 * i);
		if (m > revision)
			return false;
		kv->create_marks[i] = m;
	}
	return true;
}

void kv_snap_record(const struct kv_entry *e, uint8_t *r)
{
	keel_put_u32(r, (uint32_t)e->key_len);
	keel_put_u32(r + 4, (uint32_t)e->val_len);
	keel_put_u64(r + 8, e->meta.create_revision);
	keel_put_u64(r + 16, e->meta.mod_revision);
	keel_put_u64(r + 24, e->meta.version);
	keel_put_u64(r + 32, e->meta.expire_at_ms);
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
	if (!kv_snap_marks(kv, buf, revision))
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
