/*
 * snapxfer.c -- snapshot transfer frame bodies and the receiver's in-order
 * assembly (snapxfer.h, docs/peer-protocol.md §9). Every body has an exact
 * length and every field a range; anything else is malformed, so each
 * byte string has at most one meaning and the fuzz harness can demand
 * that re-encoding reproduces it.
 */
#include <string.h>

#include "node/snapxfer.h"

static bool total_ok(uint64_t total_len)
{
	return total_len >= 1 && total_len <= SNAPXFER_MAX_TOTAL;
}

static bool id_ok(const struct snapxfer_id *id)
{
	return id->index >= 1 && id->term >= 1;
}

int snapxfer_chunk_check(const struct snapxfer_chunk *c)
{
	if (c->leader_term < 1 || !id_ok(&c->id) ||
	    c->id.term > c->leader_term)
		return KEEL_ERR_MALFORMED;
	if (!total_ok(c->total_len) || c->offset >= c->total_len)
		return KEEL_ERR_MALFORMED;
	if (c->len < 1 || c->len > SNAPXFER_MAX_CHUNK)
		return KEEL_ERR_MALFORMED;
	/* offset < total_len <= 2^40 and len <= 2^20: no wrap. */
	if (c->offset + c->len > c->total_len)
		return KEEL_ERR_MALFORMED;
	return 0;
}

int snapxfer_ack_check(const struct snapxfer_ack *a)
{
	if (a->term < 1 || !id_ok(&a->id) || !total_ok(a->total_len))
		return KEEL_ERR_MALFORMED;
	if (a->next_offset > a->total_len)
		return KEEL_ERR_MALFORMED;
	switch (a->status) {
	case SNAPXFER_CONTINUE:
	case SNAPXFER_STALE:
	case SNAPXFER_BUSY:
		return 0;
	case SNAPXFER_COMPLETE:
	case SNAPXFER_DONE:
		return a->next_offset == a->total_len ? 0 : KEEL_ERR_MALFORMED;
	case SNAPXFER_BAD:
		return a->next_offset == 0 ? 0 : KEEL_ERR_MALFORMED;
	default:
		return KEEL_ERR_MALFORMED;
	}
}

size_t snapxfer_chunk_size(const struct snapxfer_chunk *c)
{
	return SNAPXFER_CHUNK_FIXED + (size_t)c->len;
}

void snapxfer_chunk_encode(const struct snapxfer_chunk *c, uint8_t *buf)
{
	KEEL_ASSERT(snapxfer_chunk_check(c) == 0);
	KEEL_ASSERT(c->data != NULL);
	keel_put_u64(buf, c->leader_term);
	keel_put_u64(buf + 8, c->id.index);
	keel_put_u64(buf + 16, c->id.term);
	keel_put_u64(buf + 24, c->total_len);
	keel_put_u64(buf + 32, c->offset);
	keel_put_u32(buf + 40, c->snap_crc);
	keel_put_u32(buf + 44, c->len);
	memcpy(buf + SNAPXFER_CHUNK_FIXED, c->data, c->len);
}

void snapxfer_ack_encode(const struct snapxfer_ack *a, uint8_t *buf)
{
	KEEL_ASSERT(snapxfer_ack_check(a) == 0);
	keel_put_u64(buf, a->term);
	keel_put_u64(buf + 8, a->id.index);
	keel_put_u64(buf + 16, a->id.term);
	keel_put_u64(buf + 24, a->total_len);
	keel_put_u64(buf + 32, a->next_offset);
	buf[40] = a->status;
	buf[41] = buf[42] = buf[43] = 0;
}

int snapxfer_chunk_decode(const uint8_t *body, size_t len,
			  struct snapxfer_chunk *out)
{
	if (len < SNAPXFER_CHUNK_FIXED)
		return KEEL_ERR_MALFORMED;
	struct snapxfer_chunk c;
	c.leader_term = keel_get_u64(body);
	c.id.index = keel_get_u64(body + 8);
	c.id.term = keel_get_u64(body + 16);
	c.total_len = keel_get_u64(body + 24);
	c.offset = keel_get_u64(body + 32);
	c.snap_crc = keel_get_u32(body + 40);
	c.len = keel_get_u32(body + 44);
	/* The length field is checked against the bytes present before
	 * anything points at them. */
	if ((uint64_t)len - SNAPXFER_CHUNK_FIXED != c.len)
		return KEEL_ERR_MALFORMED;
	if (snapxfer_chunk_check(&c) != 0)
		return KEEL_ERR_MALFORMED;
	c.data = body + SNAPXFER_CHUNK_FIXED;
	*out = c;
	return 0;
}

int snapxfer_ack_decode(const uint8_t *body, size_t len,
			struct snapxfer_ack *out)
{
	if (len != SNAPXFER_ACK_SIZE)
		return KEEL_ERR_MALFORMED;
	if (body[41] || body[42] || body[43])
		return KEEL_ERR_MALFORMED;
	struct snapxfer_ack a;
	a.term = keel_get_u64(body);
	a.id.index = keel_get_u64(body + 8);
	a.id.term = keel_get_u64(body + 16);
	a.total_len = keel_get_u64(body + 24);
	a.next_offset = keel_get_u64(body + 32);
	a.status = body[40];
	if (snapxfer_ack_check(&a) != 0)
		return KEEL_ERR_MALFORMED;
	*out = a;
	return 0;
}

/* ---- receiver ------------------------------------------------------------- */

void snapxfer_rx_start(struct snapxfer_rx *rx, const struct snapxfer_chunk *c)
{
	KEEL_ASSERT(snapxfer_chunk_check(c) == 0);
	KEEL_ASSERT(c->offset == 0);
	memset(rx, 0, sizeof(*rx));
	rx->id = c->id;
	rx->total_len = c->total_len;
	rx->snap_crc = c->snap_crc;
}

int snapxfer_rx_classify(const struct snapxfer_rx *rx,
			 const struct snapxfer_chunk *c)
{
	if (rx->id.index == 0 || rx->id.index != c->id.index ||
	    rx->id.term != c->id.term)
		return SNAPXFER_RX_OTHER;
	if (rx->total_len != c->total_len || rx->snap_crc != c->snap_crc)
		return SNAPXFER_RX_MISMATCH;
	if (c->offset != rx->next_offset)
		return SNAPXFER_RX_SKIP;
	return SNAPXFER_RX_TAKE;
}

void snapxfer_rx_advance(struct snapxfer_rx *rx,
			 const struct snapxfer_chunk *c)
{
	KEEL_ASSERT(snapxfer_rx_classify(rx, c) == SNAPXFER_RX_TAKE);
	rx->crc = keel_crc32c(rx->crc, c->data, c->len);
	rx->next_offset += c->len;
	KEEL_ASSERT(rx->next_offset <= rx->total_len);
}

bool snapxfer_rx_full(const struct snapxfer_rx *rx)
{
	return rx->id.index != 0 && rx->next_offset == rx->total_len;
}

int snapxfer_rx_verify(const struct snapxfer_rx *rx)
{
	if (!snapxfer_rx_full(rx))
		return KEEL_ERR_TRUNCATED;
	return rx->crc == rx->snap_crc ? 0 : KEEL_ERR_CORRUPT;
}
