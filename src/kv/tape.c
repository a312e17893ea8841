/*
 * tape.c -- reply tapes (kv.h): record reply-builder calls into bytes and
 * play them back into another builder. Lets a replica compute a client's
 * reply when it applies the entry and encode it later, for the protocol
 * version of the client's connection.
 */
#include <string.h>

#include "keel/kv.h"

void kv_tape_init(struct kv_tape *t, const struct keel_alloc *a,
		  size_t max_bytes)
{
	memset(t, 0, sizeof(*t));
	t->alloc = a ? a : &keel_alloc_libc;
	t->max_bytes = max_bytes;
}

void kv_tape_reset(struct kv_tape *t)
{
	t->len = 0;
	t->failed = false;
}

void kv_tape_close(struct kv_tape *t)
{
	t->alloc->free(t->alloc->ctx, t->buf);
	t->buf = NULL;
	t->len = t->cap = 0;
}

static uint8_t *reserve(struct kv_tape *t, size_t n)
{
	if (t->failed)
		return NULL;
	if (t->len + n > t->max_bytes) {
		t->failed = true;
		return NULL;
	}
	if (t->len + n > t->cap) {
		size_t c = t->cap ? t->cap : 64;
		while (c < t->len + n)
			c *= 2;
		uint8_t *nb = t->alloc->realloc(t->alloc->ctx, t->buf, c);
		if (!nb) {
			t->failed = true;
			return NULL;
		}
		t->buf = nb;
		t->cap = c;
	}
	uint8_t *p = t->buf + t->len;
	t->len += n;
	return p;
}

static void put_bytes(struct kv_tape *t, uint8_t tag, const void *p,
		      size_t len)
{
	if (len > UINT32_MAX) {
		t->failed = true;
		return;
	}
	uint8_t *d = reserve(t, 5 + len);
	if (!d)
		return;
	d[0] = tag;
	keel_put_u32(d + 1, (uint32_t)len);
	if (len)
		memcpy(d + 5, p, len);
}

static void tape_status(void *ctx, const char *s)
{
	put_bytes(ctx, 's', s, strlen(s));
}

static void tape_error(void *ctx, const char *s)
{
	put_bytes(ctx, 'e', s, strlen(s));
}

static void tape_integer(void *ctx, int64_t v)
{
	uint8_t *d = reserve(ctx, 9);
	if (d) {
		d[0] = 'i';
		keel_put_u64(d + 1, (uint64_t)v);
	}
}

static void tape_bulk(void *ctx, const uint8_t *p, size_t len)
{
	put_bytes(ctx, 'b', p, len);
}

static void tape_null(void *ctx)
{
	uint8_t *d = reserve(ctx, 1);
	if (d)
		d[0] = 'n';
}

static void tape_array(void *ctx, size_t n)
{
	if (n > UINT32_MAX) {
		((struct kv_tape *)ctx)->failed = true;
		return;
	}
	uint8_t *d = reserve(ctx, 5);
	if (d) {
		d[0] = 'a';
		keel_put_u32(d + 1, (uint32_t)n);
	}
}

const struct kv_reply_ops kv_tape_ops = {
	.status = tape_status,
	.error = tape_error,
	.integer = tape_integer,
	.bulk = tape_bulk,
	.null = tape_null,
	.array = tape_array,
};

/* Plays one value at *off; depth bounds nesting. */
static int play_one(const uint8_t *t, size_t len, size_t *off, int depth,
		    const struct kv_reply_ops *ops, void *ctx)
{
	if (*off >= len || depth > KV_TAPE_MAX_DEPTH)
		return KEEL_ERR_MALFORMED;
	uint8_t tag = t[*off];
	size_t o = *off + 1;
	switch (tag) {
	case 'n':
		*off = o;
		ops->null(ctx);
		return 0;
	case 'i':
		if (len - o < 8)
			return KEEL_ERR_MALFORMED;
		*off = o + 8;
		ops->integer(ctx, (int64_t)keel_get_u64(t + o));
		return 0;
	case 'a': {
		if (len - o < 4)
			return KEEL_ERR_MALFORMED;
		uint32_t n = keel_get_u32(t + o);
		o += 4;
		/* Each element takes at least one byte: a count the tape
		 * cannot hold is refused before anything is emitted. */
		if (n > len - o)
			return KEEL_ERR_MALFORMED;
		*off = o;
		ops->array(ctx, n);
		for (uint32_t i = 0; i < n; i++) {
			int rv = play_one(t, len, off, depth + 1, ops, ctx);
			if (rv)
				return rv;
		}
		return 0;
	}
	case 's':
	case 'e':
	case 'b': {
		if (len - o < 4)
			return KEEL_ERR_MALFORMED;
		uint32_t n = keel_get_u32(t + o);
		o += 4;
		if (n > len - o)
			return KEEL_ERR_MALFORMED;
		*off = o + n;
		if (tag == 'b') {
			ops->bulk(ctx, t + o, n);
			return 0;
		}
		/* status/error take NUL-terminated strings; no NUL or CR/LF
		 * may hide inside (they would break the RESP line). */
		char s[512];
		if (n >= sizeof(s) || memchr(t + o, 0, n) ||
		    memchr(t + o, '\r', n) || memchr(t + o, '\n', n))
			return KEEL_ERR_MALFORMED;
		memcpy(s, t + o, n);
		s[n] = 0;
		if (tag == 's')
			ops->status(ctx, s);
		else
			ops->error(ctx, s);
		return 0;
	}
	default:
		return KEEL_ERR_MALFORMED;
	}
}

int kv_tape_play(const uint8_t *tape, size_t len,
		 const struct kv_reply_ops *ops, void *ctx)
{
	size_t off = 0;
	int rv = play_one(tape, len, &off, 0, ops, ctx);
	if (rv)
		return rv;
	return off == len ? 0 : KEEL_ERR_MALFORMED;
}
