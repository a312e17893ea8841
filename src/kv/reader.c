/*
 * reader.c -- the streaming snapshot reader (docs/snapshots.md §3.5): the
 * decoder of snapshot.c fed in pieces of any size, so a follower builds
 * the new kv while the chunks arrive instead of decoding 149 MiB at the
 * end.
 *
 * The verdict must be kv_snapshot_decode's for the same bytes. That decoder
 * checks, in order: magic, length >= 188 (header + trailer), version, total length = input
 * length, the CRC over everything, then the fields in stream order. The
 * reader reports an error the moment it is certain whatever bytes follow:
 * the magic at 8 bytes; the version at 188 (before that a short input would
 * be TRUNCATED instead); more bytes than the total length at once. A field
 * error is found as its bytes arrive but is only the verdict if the CRC
 * passes, so it is kept (pending); the CRC and the pending error are judged
 * when the last byte of the total is in, but reported only by finish: one
 * byte more would still make the verdict MALFORMED (the decoder's length
 * check comes before its CRC check). Later field errors cannot precede the
 * pending one (the decoder stops at the first in the same order).
 *
 * Lengths are capped before anything is allocated, exactly as the decoder
 * caps them: each key and value against KV_MAX_*_BYTES and against the
 * bytes the total length leaves, the total against max_bytes.
 */
#include <string.h>

#include "kv/kv_internal.h"

#define KV_RD_PREFIX (KV_SNAP_HEADER_BYTES + 4) /* the decoder's minimum */

enum kv_rd_state {
	KV_RD_START, /* at a record boundary */
	KV_RD_HEAD,  /* reading the 40 fixed bytes */
	KV_RD_KEY,
	KV_RD_VAL,
};

struct kv_snap_reader {
	const struct keel_alloc *a;
	uint64_t max_bytes;
	int err;      /* certain verdict, sticky */
	int pending;  /* first field error: the verdict if the CRC passes */
	/* All total bytes in: the verdict, unless more bytes come (then
	 * MALFORMED). 0 with ready set: every check passed. */
	int final;
	bool ready;
	bool done;    /* finish handed the kv over */
	uint64_t fed; /* bytes received */
	uint8_t prefix[KV_RD_PREFIX];
	/* From the header, once fed >= KV_RD_PREFIX. */
	uint64_t total, end; /* end = total - 4: where the trailer starts */
	uint64_t revision, count, expires;
	/* The body: pos is the stream offset of the next byte to process. */
	uint64_t pos;
	uint32_t crc;
	uint8_t trailer[4];
	struct kv *kv;
	enum kv_rd_state st;
	uint8_t head[KV_SNAP_RECORD_BYTES];
	size_t got; /* of the current piece */
	uint32_t klen, vlen;
	struct kv_meta meta;
	struct kv_entry *cur; /* being filled; not linked yet */
	const struct kv_entry *prev; /* the last record linked */
	uint64_t records;
};

struct kv_snap_reader *kv_snap_reader_create(const struct keel_alloc *a,
					     uint64_t max_bytes)
{
	KEEL_ASSERT(a != NULL);
	struct kv_snap_reader *r = a->malloc(a->ctx, sizeof(*r));
	if (!r)
		return NULL;
	memset(r, 0, sizeof(*r));
	r->a = a;
	r->max_bytes = max_bytes ? max_bytes : UINT64_MAX;
	return r;
}

void kv_snap_reader_destroy(struct kv_snap_reader *r)
{
	if (!r)
		return;
	if (r->cur)
		kv_entry_free(r->kv, r->cur);
	kv_destroy(r->kv);
	r->a->free(r->a->ctx, r);
}

static size_t kv_rd_min(size_t a, uint64_t b)
{
	return b < a ? (size_t)b : a;
}

static void kv_rd_set_pending(struct kv_snap_reader *r, int rc)
{
	if (!r->pending)
		r->pending = rc;
	if (r->cur) {
		kv_entry_free(r->kv, r->cur);
		r->cur = NULL;
	}
}

/* The first KV_RD_PREFIX bytes are in: the header checks kv_snapshot_decode makes
 * before the CRC are certain now; the ones after it become pending. */
static int kv_rd_header(struct kv_snap_reader *r)
{
	const uint8_t *h = r->prefix;
	if (keel_get_u32(h + 8) != KV_SNAP_VERSION)
		return KEEL_ERR_VERSION;
	r->total = keel_get_u64(h + 16);
	if (r->total < r->fed)
		return KEEL_ERR_MALFORMED; /* the input is already longer */
	if (r->total > r->max_bytes)
		return KEEL_ERR_TOO_BIG;
	r->end = r->total - 4;
	r->revision = keel_get_u64(h + 32);
	r->count = keel_get_u64(h + 40);
	r->expires = keel_get_u64(h + 48);
	r->kv = kv_create(r->a);
	if (!r->kv)
		return KEEL_ERR_NOMEM;
	r->crc = keel_crc32c(0, h, KV_SNAP_HEADER_BYTES);
	r->pos = KV_SNAP_HEADER_BYTES;
	if (keel_get_u32(h + 12) != 0)
		kv_rd_set_pending(r, KEEL_ERR_MALFORMED);
	else if (r->count > (r->end - KV_SNAP_HEADER_BYTES) /
				    KV_SNAP_RECORD_BYTES)
		kv_rd_set_pending(r, KEEL_ERR_MALFORMED);
	else if (!kv_snap_marks(r->kv, h, r->revision))
		kv_rd_set_pending(r, KEEL_ERR_MALFORMED);
	return 0;
}

/* The fixed bytes of a record are in: the decoder's checks on them, in its
 * order, then the allocations (the order check needs the key bytes). */
static int kv_rd_head_done(struct kv_snap_reader *r)
{
	const uint8_t *h = r->head;
	r->klen = keel_get_u32(h);
	r->vlen = keel_get_u32(h + 4);
	r->meta.create_revision = keel_get_u64(h + 8);
	r->meta.mod_revision = keel_get_u64(h + 16);
	r->meta.version = keel_get_u64(h + 24);
	r->meta.expire_at_ms = keel_get_u64(h + 32);
	if (r->klen > KV_MAX_KEY_BYTES || r->vlen > KV_MAX_VALUE_BYTES) {
		kv_rd_set_pending(r, KEEL_ERR_TOO_BIG);
		return 0;
	}
	if (r->end - r->pos < (uint64_t)r->klen + r->vlen) {
		kv_rd_set_pending(r, KEEL_ERR_TRUNCATED);
		return 0;
	}
	const struct kv_meta *m = &r->meta;
	if (m->create_revision < 1 || m->create_revision > m->mod_revision ||
	    m->mod_revision > r->revision || m->version < 1) {
		kv_rd_set_pending(r, KEEL_ERR_MALFORMED);
		return 0;
	}
	struct kv_entry *e = kv_entry_alloc(r->kv, NULL, r->klen);
	if (!e)
		return KEEL_ERR_NOMEM;
	if (r->vlen) {
		e->val = r->a->malloc(r->a->ctx, r->vlen);
		if (!e->val) {
			kv_entry_free(r->kv, e);
			return KEEL_ERR_NOMEM;
		}
	}
	e->val_len = e->val_cap = r->vlen;
	e->meta = r->meta;
	r->cur = e;
	return 0;
}

/* Parses d data bytes at r->pos (no pending error yet). Stops at the first
 * field error (pending) or allocation failure (returned). */
static int kv_rd_parse(struct kv_snap_reader *r, const uint8_t *p, size_t d)
{
	for (;;) {
		size_t take;
		int rc;
		switch (r->st) {
		case KV_RD_START:
			if (r->records == r->count) {
				if (d) /* bytes between the last record and the CRC */
					kv_rd_set_pending(r, KEEL_ERR_MALFORMED);
				return 0;
			}
			if (r->end - r->pos < KV_SNAP_RECORD_BYTES) {
				kv_rd_set_pending(r, KEEL_ERR_TRUNCATED);
				return 0;
			}
			r->st = KV_RD_HEAD;
			r->got = 0;
			break;
		case KV_RD_HEAD:
			take = kv_rd_min(d, KV_SNAP_RECORD_BYTES - r->got);
			memcpy(r->head + r->got, p, take);
			r->got += take;
			p += take;
			d -= take;
			r->pos += take;
			if (r->got < KV_SNAP_RECORD_BYTES)
				return 0;
			rc = kv_rd_head_done(r);
			if (rc || r->pending)
				return rc;
			r->st = KV_RD_KEY;
			r->got = 0;
			break;
		case KV_RD_KEY:
			take = kv_rd_min(d, r->klen - r->got);
			if (take)
				memcpy(r->cur->key + r->got, p, take);
			r->got += take;
			p += take;
			d -= take;
			r->pos += take;
			if (r->got < r->klen)
				return 0;
			r->cur->hash = kv_key_hash(r->cur->key, r->klen);
			if (r->prev &&
			    kv_keycmp(r->cur->key, r->klen, r->prev->key,
				      r->prev->key_len) <= 0) {
				kv_rd_set_pending(r, KEEL_ERR_MALFORMED);
				return 0;
			}
			r->st = KV_RD_VAL;
			r->got = 0;
			break;
		case KV_RD_VAL:
			take = kv_rd_min(d, r->vlen - r->got);
			if (take)
				memcpy(r->cur->val + r->got, p, take);
			r->got += take;
			p += take;
			d -= take;
			r->pos += take;
			if (r->got < r->vlen)
				return 0;
			kv_link_entry(r->kv, r->cur);
			r->prev = r->cur;
			r->cur = NULL;
			r->records++;
			r->st = KV_RD_START;
			break;
		}
	}
}

/* The last byte is in: the decoder's verdict. */
static int kv_rd_verdict(struct kv_snap_reader *r)
{
	if (keel_get_u32(r->trailer) != r->crc)
		return KEEL_ERR_CORRUPT;
	if (r->pending)
		return r->pending;
	/* Every record fits before the trailer and no byte is left over, or
	 * a field check would have said otherwise. */
	KEEL_ASSERT(r->records == r->count && r->st == KV_RD_START);
	if (r->expires != r->kv->expires)
		return KEEL_ERR_MALFORMED;
	r->kv->applied_index = keel_get_u64(r->prefix + 24);
	r->kv->revision = r->revision;
	r->ready = true;
	return 0;
}

/* n body bytes at r->pos (the header is done, pos + n <= total). */
static int kv_rd_body(struct kv_snap_reader *r, const uint8_t *p, size_t n)
{
	if (r->pos < r->end && n) {
		size_t d = kv_rd_min(n, r->end - r->pos);
		uint64_t to = r->pos + d;
		r->crc = keel_crc32c(r->crc, p, d);
		if (!r->pending) {
			int rc = kv_rd_parse(r, p, d);
			if (rc)
				return rc;
		}
		r->pos = to; /* bytes after a field error are only CRC'd */
		p += d;
		n -= d;
	}
	if (n) {
		memcpy(r->trailer + (r->pos - r->end), p, n);
		r->pos += n;
	}
	if (r->pos == r->total)
		r->final = kv_rd_verdict(r);
	return 0;
}

int kv_snap_reader_feed(struct kv_snap_reader *r, const uint8_t *buf,
			size_t len)
{
	if (r->err)
		return r->err;
	if (r->done)
		return KEEL_ERR_INVAL;
	while (len) {
		if (r->fed < KV_RD_PREFIX) {
			size_t take = kv_rd_min(len, KV_RD_PREFIX - r->fed);
			memcpy(r->prefix + r->fed, buf, take);
			r->fed += take;
			buf += take;
			len -= take;
			if (r->fed >= 8 && memcmp(r->prefix, kv_snap_magic, 8))
				return r->err = KEEL_ERR_MAGIC;
			if (r->fed < KV_RD_PREFIX)
				continue;
			int rc = kv_rd_header(r);
			if (!rc)
				rc = kv_rd_body(r, r->prefix + KV_SNAP_HEADER_BYTES,
						4);
			if (rc)
				return r->err = rc;
			continue;
		}
		/* Past the total length: whatever follows, the decoder says
		 * MALFORMED (its length check comes before the CRC). */
		if (len > r->total - r->fed)
			return r->err = KEEL_ERR_MALFORMED;
		r->fed += len;
		int rc = kv_rd_body(r, buf, len);
		if (rc)
			return r->err = rc;
		len = 0;
	}
	return 0;
}

int kv_snap_reader_finish(struct kv_snap_reader *r, struct kv **out)
{
	if (r->err)
		return r->err;
	if (r->done)
		return KEEL_ERR_INVAL;
	if (r->fed < KV_RD_PREFIX || r->pos < r->total) {
		/* Bytes are missing: shorter than the header or the total. The
		 * magic was checked if 8 bytes came. */
		return r->err = KEEL_ERR_TRUNCATED;
	}
	if (r->final)
		return r->err = r->final;
	KEEL_ASSERT(r->ready);
	*out = r->kv;
	r->kv = NULL;
	r->done = true;
	return 0;
}
