/*
 * test_snapxfer.c -- tests of the snapshot transfer frame bodies and the
 * receiver's in-order assembly (src/node/snapxfer.c) against
 * docs/peer-protocol.md §9 and docs/snapshots.md §3.4: a golden body that
 * pins the layout the document gives, random round trips, every length
 * other than the layout's refused, one test per field rule, the edges that
 * must still be accepted, and the two places a flipped byte must be
 * caught: the frame CRC (in transit) and snap_crc (behind a valid frame).
 */
#include "keel/peer.h"
#include "node/snapxfer.h"
#include "test.h"

#define CLUSTER 0x1122334455667788ull

static struct snapxfer_chunk base_chunk(const uint8_t *data, uint32_t len)
{
	struct snapxfer_chunk c = {
		.leader_term = 5,
		.id = {.index = 100, .term = 4},
		.total_len = 10500,
		.offset = 0,
		.snap_crc = 0xAABBCCDDu,
		.len = len,
		.data = data,
	};
	return c;
}

static struct snapxfer_ack base_ack(void)
{
	struct snapxfer_ack a = {
		.term = 5,
		.id = {.index = 100, .term = 4},
		.total_len = 10500,
		.next_offset = 4096,
		.status = SNAPXFER_CONTINUE,
	};
	return a;
}

TEST(golden_chunk_body_matches_document)
{
	static const uint8_t data[3] = {1, 2, 3};
	static const uint8_t want[51] = {
		0x05, 0, 0, 0, 0, 0, 0, 0, 0x64, 0, 0, 0, 0, 0, 0, 0,
		0x04, 0, 0, 0, 0, 0, 0, 0, 0x04, 0x29, 0, 0, 0, 0, 0, 0,
		0, 0, 0, 0, 0, 0, 0, 0, 0xdd, 0xcc, 0xbb, 0xaa, 3, 0, 0, 0,
		1, 2, 3,
	};
	struct snapxfer_chunk c = base_chunk(data, 3);
	uint8_t buf[51];
	ASSERT(snapxfer_chunk_size(&c) == sizeof(want));
	snapxfer_chunk_encode(&c, buf);
	EXPECT(memcmp(buf, want, sizeof(want)) == 0);
	struct snapxfer_chunk d;
	ASSERT(snapxfer_chunk_decode(want, sizeof(want), &d) == 0);
	EXPECT_EQ_U64(d.total_len, 10500);
	EXPECT(d.data == want + SNAPXFER_CHUNK_FIXED); /* zero copy */
}

TEST(ack_layout_offsets)
{
	struct snapxfer_ack a = base_ack();
	a.status = SNAPXFER_BUSY;
	uint8_t buf[SNAPXFER_ACK_SIZE];
	snapxfer_ack_encode(&a, buf);
	EXPECT_EQ_U64(keel_get_u64(buf), 5);
	EXPECT_EQ_U64(keel_get_u64(buf + 8), 100);
	EXPECT_EQ_U64(keel_get_u64(buf + 16), 4);
	EXPECT_EQ_U64(keel_get_u64(buf + 24), 10500);
	EXPECT_EQ_U64(keel_get_u64(buf + 32), 4096);
	EXPECT_EQ_U64(buf[40], SNAPXFER_BUSY);
	EXPECT(buf[41] == 0 && buf[42] == 0 && buf[43] == 0);
}

static uint64_t rand_range(struct keel_rand *r, uint64_t lo, uint64_t hi)
{
	if (keel_rand_chance(r, 1, 4))
		return keel_rand_chance(r, 1, 2) ? lo : hi;
	return lo + keel_rand_below(r, hi - lo + 1);
}

TEST(random_round_trips)
{
	struct keel_rand r;
	keel_rand_seed(&r, test_seed(42));
	static uint8_t data[4096], buf[SNAPXFER_CHUNK_FIXED + 4096],
		again[SNAPXFER_CHUNK_FIXED + 4096];
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)keel_rand_next(&r);
	for (int i = 0; i < 2000; i++) {
		struct snapxfer_chunk c;
		c.leader_term = rand_range(&r, 1, UINT64_MAX);
		c.id.index = rand_range(&r, 1, UINT64_MAX);
		c.id.term = rand_range(&r, 1, c.leader_term);
		c.total_len = rand_range(&r, 1, SNAPXFER_MAX_TOTAL);
		uint64_t maxlen = c.total_len < 4096 ? c.total_len : 4096;
		c.len = (uint32_t)rand_range(&r, 1, maxlen);
		c.offset = rand_range(&r, 0, c.total_len - c.len);
		c.snap_crc = (uint32_t)keel_rand_next(&r);
		c.data = data + keel_rand_below(&r, sizeof(data) - c.len + 1);
		ASSERT(snapxfer_chunk_check(&c) == 0);
		size_t n = snapxfer_chunk_size(&c);
		snapxfer_chunk_encode(&c, buf);
		struct snapxfer_chunk d;
		ASSERT(snapxfer_chunk_decode(buf, n, &d) == 0);
		EXPECT(d.leader_term == c.leader_term && d.id.index == c.id.index &&
		       d.id.term == c.id.term && d.total_len == c.total_len &&
		       d.offset == c.offset && d.snap_crc == c.snap_crc &&
		       d.len == c.len);
		EXPECT(memcmp(d.data, c.data, c.len) == 0);
		snapxfer_chunk_encode(&d, again);
		EXPECT(memcmp(again, buf, n) == 0);

		struct snapxfer_ack a;
		a.term = rand_range(&r, 1, UINT64_MAX);
		a.id.index = rand_range(&r, 1, UINT64_MAX);
		a.id.term = rand_range(&r, 1, UINT64_MAX);
		a.total_len = rand_range(&r, 1, SNAPXFER_MAX_TOTAL);
		a.status = (uint8_t)(1 + keel_rand_below(&r, 6));
		a.next_offset = a.status == SNAPXFER_COMPLETE ||
					a.status == SNAPXFER_DONE
				? a.total_len
			: a.status == SNAPXFER_BAD
				? 0
				: rand_range(&r, 0, a.total_len);
		uint8_t ab[SNAPXFER_ACK_SIZE], ab2[SNAPXFER_ACK_SIZE];
		snapxfer_ack_encode(&a, ab);
		struct snapxfer_ack b;
		ASSERT(snapxfer_ack_decode(ab, sizeof(ab), &b) == 0);
		EXPECT(memcmp(&a.id, &b.id, sizeof(a.id)) == 0);
		EXPECT(a.term == b.term && a.total_len == b.total_len &&
		       a.next_offset == b.next_offset && a.status == b.status);
		snapxfer_ack_encode(&b, ab2);
		EXPECT(memcmp(ab, ab2, sizeof(ab)) == 0);
	}
}

TEST(every_bad_length_refused)
{
	static const uint8_t data[64] = {0};
	uint8_t buf[SNAPXFER_CHUNK_FIXED + 64 + 8];
	struct snapxfer_chunk c = base_chunk(data, 64);
	snapxfer_chunk_encode(&c, buf);
	struct snapxfer_chunk d;
	size_t good = SNAPXFER_CHUNK_FIXED + 64;
	for (size_t len = 0; len <= sizeof(buf); len++) {
		int rv = snapxfer_chunk_decode(buf, len, &d);
		if (len == good)
			EXPECT(rv == 0);
		else if (rv != KEEL_ERR_MALFORMED) {
			fprintf(stderr, "  chunk body length %zu: rv %d\n", len,
				rv);
			EXPECT(rv == KEEL_ERR_MALFORMED);
		}
	}
	struct snapxfer_ack a = base_ack();
	uint8_t ab[SNAPXFER_ACK_SIZE + 8] = {0};
	snapxfer_ack_encode(&a, ab);
	struct snapxfer_ack b;
	for (size_t len = 0; len <= sizeof(ab); len++) {
		int rv = snapxfer_ack_decode(ab, len, &b);
		EXPECT(rv == (len == SNAPXFER_ACK_SIZE ? 0 : KEEL_ERR_MALFORMED));
	}
}

/* Writes c with the raw encoder layout (no assertion), so bad values can
 * be put on the wire. */
static size_t raw_chunk(const struct snapxfer_chunk *c, uint32_t data_bytes,
			uint8_t *buf)
{
	keel_put_u64(buf, c->leader_term);
	keel_put_u64(buf + 8, c->id.index);
	keel_put_u64(buf + 16, c->id.term);
	keel_put_u64(buf + 24, c->total_len);
	keel_put_u64(buf + 32, c->offset);
	keel_put_u32(buf + 40, c->snap_crc);
	keel_put_u32(buf + 44, c->len);
	memset(buf + SNAPXFER_CHUNK_FIXED, 0x5a, data_bytes);
	return SNAPXFER_CHUNK_FIXED + data_bytes;
}

static int decode_raw_chunk(const struct snapxfer_chunk *c, uint8_t *buf)
{
	struct snapxfer_chunk d;
	size_t n = raw_chunk(c, c->len, buf);
	return snapxfer_chunk_decode(buf, n, &d);
}

TEST(chunk_field_rules)
{
	uint8_t *buf = malloc(SNAPXFER_CHUNK_FIXED + SNAPXFER_MAX_CHUNK + 1);
	ASSERT(buf);
	struct snapxfer_chunk c;
#define BAD(field_edit)                                                       \
	do {                                                                  \
		c = base_chunk(NULL, 16);                                     \
		field_edit;                                                   \
		EXPECT(snapxfer_chunk_check(&c) == KEEL_ERR_MALFORMED);       \
		EXPECT(decode_raw_chunk(&c, buf) == KEEL_ERR_MALFORMED);      \
	} while (0)
#define GOOD(field_edit)                                                      \
	do {                                                                  \
		c = base_chunk(NULL, 16);                                     \
		field_edit;                                                   \
		EXPECT(snapxfer_chunk_check(&c) == 0);                        \
		EXPECT(decode_raw_chunk(&c, buf) == 0);                       \
	} while (0)
	GOOD((void)0);
	BAD(c.leader_term = 0);
	BAD(c.id.index = 0);
	BAD(c.id.term = 0);
	BAD(c.id.term = c.leader_term + 1);
	GOOD(c.id.term = c.leader_term);
	BAD(c.total_len = 0);
	BAD((c.total_len = SNAPXFER_MAX_TOTAL + 1, c.offset = 0));
	GOOD((c.total_len = SNAPXFER_MAX_TOTAL, c.offset = SNAPXFER_MAX_TOTAL - 16));
	BAD(c.total_len = UINT64_MAX);
	BAD(c.offset = c.total_len);
	BAD(c.offset = UINT64_MAX);
	BAD(c.offset = c.total_len - 15); /* one byte past the end */
	GOOD(c.offset = c.total_len - 16); /* the last chunk, exactly */
	BAD(c.len = 0);
	GOOD((c.total_len = SNAPXFER_MAX_CHUNK, c.len = SNAPXFER_MAX_CHUNK));
	BAD((c.total_len = SNAPXFER_MAX_CHUNK + 1,
	     c.len = SNAPXFER_MAX_CHUNK + 1));
	GOOD((c.total_len = 1, c.len = 1));
#undef BAD
#undef GOOD
	/* The length field disagrees with the bytes present, both ways, even
	 * when it is a huge value that must not be trusted. */
	c = base_chunk(NULL, 16);
	struct snapxfer_chunk d;
	size_t n = raw_chunk(&c, 16, buf);
	keel_put_u32(buf + 44, 17);
	EXPECT(snapxfer_chunk_decode(buf, n, &d) == KEEL_ERR_MALFORMED);
	keel_put_u32(buf + 44, 15);
	EXPECT(snapxfer_chunk_decode(buf, n, &d) == KEEL_ERR_MALFORMED);
	keel_put_u32(buf + 44, UINT32_MAX);
	EXPECT(snapxfer_chunk_decode(buf, n, &d) == KEEL_ERR_MALFORMED);
	free(buf);
}

TEST(ack_field_rules)
{
	uint8_t buf[SNAPXFER_ACK_SIZE];
	struct snapxfer_ack a, b;
#define RAW(edit, want)                                                       \
	do {                                                                  \
		a = base_ack();                                               \
		edit;                                                         \
		keel_put_u64(buf, a.term);                                    \
		keel_put_u64(buf + 8, a.id.index);                            \
		keel_put_u64(buf + 16, a.id.term);                            \
		keel_put_u64(buf + 24, a.total_len);                          \
		keel_put_u64(buf + 32, a.next_offset);                        \
		buf[40] = a.status;                                           \
		buf[41] = buf[42] = buf[43] = 0;                              \
		EXPECT(snapxfer_ack_check(&a) == (want));                     \
		EXPECT(snapxfer_ack_decode(buf, sizeof(buf), &b) == (want));  \
	} while (0)
	const int M = KEEL_ERR_MALFORMED;
	RAW((void)0, 0);
	RAW(a.term = 0, M);
	RAW(a.id.index = 0, M);
	RAW(a.id.term = 0, M);
	RAW(a.total_len = 0, M);
	RAW((a.total_len = SNAPXFER_MAX_TOTAL + 1, a.next_offset = 0), M);
	RAW(a.next_offset = a.total_len + 1, M);
	RAW(a.next_offset = a.total_len, 0);
	RAW(a.next_offset = 0, 0);
	RAW(a.status = 0, M);
	RAW(a.status = 7, M);
	RAW(a.status = 255, M);
	RAW(a.status = SNAPXFER_COMPLETE, M); /* next_offset < total */
	RAW((a.status = SNAPXFER_COMPLETE, a.next_offset = a.total_len), 0);
	RAW(a.status = SNAPXFER_DONE, M);
	RAW((a.status = SNAPXFER_DONE, a.next_offset = a.total_len), 0);
	RAW(a.status = SNAPXFER_BAD, M); /* next_offset > 0 */
	RAW((a.status = SNAPXFER_BAD, a.next_offset = 0), 0);
	RAW(a.status = SNAPXFER_STALE, 0);
	RAW(a.status = SNAPXFER_BUSY, 0);
#undef RAW
	for (int i = 41; i < 44; i++) {
		a = base_ack();
		snapxfer_ack_encode(&a, buf);
		buf[i] = 1;
		EXPECT(snapxfer_ack_decode(buf, sizeof(buf), &b) == M);
	}
}

/* A payload, cut into chunks of varying size, as a sender would. */
#define PAYLOAD 5000
static uint8_t payload[PAYLOAD];

static struct snapxfer_chunk chunk_at(uint64_t off, uint32_t len, uint32_t crc)
{
	struct snapxfer_chunk c = base_chunk(payload + off, len);
	c.total_len = PAYLOAD;
	c.offset = off;
	c.snap_crc = crc;
	return c;
}

TEST(rx_assembles_in_order_and_verifies)
{
	struct keel_rand r;
	keel_rand_seed(&r, test_seed(7));
	for (size_t i = 0; i < PAYLOAD; i++)
		payload[i] = (uint8_t)keel_rand_next(&r);
	uint32_t crc = keel_crc32c(0, payload, PAYLOAD);
	struct snapxfer_rx rx;
	memset(&rx, 0, sizeof(rx));
	struct snapxfer_chunk c = chunk_at(0, 100, crc);
	EXPECT(snapxfer_rx_classify(&rx, &c) == SNAPXFER_RX_OTHER); /* idle */
	EXPECT(snapxfer_rx_verify(&rx) == KEEL_ERR_TRUNCATED);
	snapxfer_rx_start(&rx, &c);
	uint64_t off = 0;
	int steps = 0;
	while (off < PAYLOAD && steps++ < 10000) {
		uint32_t len = (uint32_t)(1 + keel_rand_below(&r, 700));
		if (len > PAYLOAD - off)
			len = (uint32_t)(PAYLOAD - off);
		c = chunk_at(off, len, crc);
		ASSERT(snapxfer_rx_classify(&rx, &c) == SNAPXFER_RX_TAKE);
		EXPECT(snapxfer_rx_verify(&rx) == KEEL_ERR_TRUNCATED);
		snapxfer_rx_advance(&rx, &c);
		/* A duplicate of what was just taken, and a chunk past a gap,
		 * are skipped, never taken. */
		EXPECT(snapxfer_rx_classify(&rx, &c) == SNAPXFER_RX_SKIP);
		if (off + len + 1 < PAYLOAD) {
			struct snapxfer_chunk gap = chunk_at(off + len + 1, 1, crc);
			EXPECT(snapxfer_rx_classify(&rx, &gap) == SNAPXFER_RX_SKIP);
		}
		off += len;
	}
	EXPECT(snapxfer_rx_full(&rx));
	EXPECT(snapxfer_rx_verify(&rx) == 0);

	/* Same id, another total or CRC: a mismatch, not a restart. */
	c = chunk_at(0, 1, crc ^ 1);
	EXPECT(snapxfer_rx_classify(&rx, &c) == SNAPXFER_RX_MISMATCH);
	c = chunk_at(0, 1, crc);
	c.total_len = PAYLOAD + 1;
	EXPECT(snapxfer_rx_classify(&rx, &c) == SNAPXFER_RX_MISMATCH);
	/* Another snapshot id is the caller's decision. */
	c = chunk_at(0, 1, crc);
	c.id.index++;
	EXPECT(snapxfer_rx_classify(&rx, &c) == SNAPXFER_RX_OTHER);
	c = chunk_at(0, 1, crc);
	c.id.term--;
	EXPECT(snapxfer_rx_classify(&rx, &c) == SNAPXFER_RX_OTHER);
}

/* docs/snapshots.md §3.4: a byte changed behind a valid frame (the frame
 * CRC was computed over the bad byte) is caught by snap_crc once the
 * snapshot is whole. Tried at every position of the payload. */
TEST(rx_flipped_byte_behind_valid_frame_caught_by_snap_crc)
{
	for (size_t i = 0; i < PAYLOAD; i++)
		payload[i] = (uint8_t)(i * 31u + 7u);
	uint32_t crc = keel_crc32c(0, payload, PAYLOAD);
	int missed = 0;
	for (size_t pos = 0; pos < PAYLOAD; pos += 1) {
		struct snapxfer_rx rx;
		payload[pos] ^= (uint8_t)(1u << (pos % 8));
		for (uint64_t off = 0; off < PAYLOAD; off += 1024) {
			uint32_t len = (uint32_t)(PAYLOAD - off < 1024
							  ? PAYLOAD - off
							  : 1024);
			struct snapxfer_chunk c = chunk_at(off, len, crc);
			if (off == 0)
				snapxfer_rx_start(&rx, &c);
			snapxfer_rx_advance(&rx, &c);
		}
		payload[pos] ^= (uint8_t)(1u << (pos % 8));
		if (snapxfer_rx_verify(&rx) != KEEL_ERR_CORRUPT)
			missed++;
	}
	EXPECT(missed == 0);
}

/* In transit, the frame CRC catches a flip anywhere in a SNAP_CHUNK frame
 * before the body decoder sees it. */
TEST(flipped_byte_in_frame_caught_by_frame_crc)
{
	static const uint8_t data[200] = {9, 8, 7};
	struct snapxfer_chunk c = base_chunk(data, sizeof(data));
	uint8_t body[SNAPXFER_CHUNK_FIXED + 200];
	snapxfer_chunk_encode(&c, body);
	uint8_t frame[PEER_MIN_FRAME_SIZE + sizeof(body)];
	size_t n;
	ASSERT(peer_encode_frame(PEER_TYPE_SNAP_CHUNK, CLUSTER, 1, body,
				 sizeof(body), frame, sizeof(frame), &n) == 0);
	struct peer_limits lim;
	peer_limits_default(&lim, CLUSTER);
	uint64_t sender;
	int type;
	ASSERT(peer_frame_verify(frame, n, &lim, &sender, &type) == 0);
	EXPECT(type == PEER_TYPE_SNAP_CHUNK);
	size_t blen;
	const uint8_t *b = peer_frame_body(frame, &blen);
	struct snapxfer_chunk d;
	EXPECT(snapxfer_chunk_decode(b, blen, &d) == 0);
	/* Body and trailer bytes: the header's magic, version and length
	 * bytes give their own errors, everything else must be CORRUPT. */
	for (size_t i = PEER_HEADER_SIZE; i < n; i++) {
		frame[i] ^= 0x10;
		EXPECT(peer_frame_verify(frame, n, &lim, &sender, &type) ==
		       KEEL_ERR_CORRUPT);
		frame[i] ^= 0x10;
	}
}
