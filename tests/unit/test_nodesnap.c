/*
 * test_nodesnap.c -- the node snapshot payload codec (src/node/nodesnap.c)
 * against docs/snapshots.md §1.3: the offsets the document gives, a round
 * trip through the streaming writer and reader in random chunk sizes and
 * random splits (kv part equal to kv_snapshot_encode, head equal to what
 * went in, CRC equal to the writer's), and one refusal per decode rule.
 */
#include "keel/kv.h"
#include "node/nodesnap.h"
#include "test.h"

static struct kv *make_kv(uint32_t keys, uint64_t *last_index)
{
	struct kv *kv = kv_create(&keel_alloc_libc);
	struct kv_tape t;
	kv_tape_init(&t, &keel_alloc_libc, 1u << 20);
	for (uint32_t i = 0; i < keys; i++) {
		char k[16], v[32];
		int kl = snprintf(k, sizeof(k), "key%u", i);
		int vl = snprintf(v, sizeof(v), "value-%u-%u", i, i * 7);
		const uint8_t *argv[3] = {(const uint8_t *)"SET",
					  (const uint8_t *)k,
					  (const uint8_t *)v};
		size_t lens[3] = {3, (size_t)kl, (size_t)vl};
		uint8_t buf[128];
		size_t len = 0;
		if (kv_cmd_encode(1000, 3, argv, lens, buf, sizeof(buf), &len))
			abort();
		kv_tape_reset(&t);
		if (kv_apply(kv, i + 1, buf, len, &kv_tape_ops, &t))
			abort();
	}
	kv_tape_close(&t);
	*last_index = keys;
	return kv;
}

static struct node_snap_head base_head(uint64_t index, uint64_t kv_len)
{
	struct node_snap_head h;
	memset(&h, 0, sizeof(h));
	h.index = index;
	h.term = 3;
	h.kv_len = kv_len;
	h.members.n_voters = 3;
	h.members.voters[0] = 3; /* unsorted on purpose */
	h.members.voters[1] = 1;
	h.members.voters[2] = 2;
	h.dedup[0].origin = 2;
	h.dedup[0].boot = 77;
	h.dedup[0].high = 5;
	h.dedup[0].last_index = index;
	h.dedup[0].bits[0] = 0x3e;
	h.dedup[5].origin = 3;
	h.dedup[5].boot = 9;
	h.dedup[5].high = 1025;
	h.dedup[5].bits[15] = 1ull << 63;
	/* slot 5: two streams (slots 0 and 7 of its table), a floor */
	h.dedup[5].stream_floor = 900;
	h.dedup[5].streams[0] = (struct node_dedup_stream){44, 1025};
	h.dedup[5].streams[7] = (struct node_dedup_stream){12, 1000};
	h.stamp_ms = 1700000000123ull;
	return h;
}

struct source {
	struct kv_snap_writer *w;
};

static bool src_next(void *ctx, uint8_t *buf, size_t cap, size_t *n)
{
	struct source *s = ctx;
	return kv_snapshot_writer_next(s->w, buf, cap, n);
}

/* The whole payload for kv at index (malloc'd; *len set). */
static uint8_t *encode_all(const struct kv *kv, uint64_t index,
			   struct keel_rand *rnd, size_t *len, uint32_t *crc,
			   struct node_snap_head *h_out)
{
	struct node_snap_head h = base_head(index, kv_snapshot_size(kv));
	if (h_out)
		*h_out = h;
	struct source src = {kv_snapshot_writer_create(kv, &keel_alloc_libc)};
	struct node_snap_writer *w = malloc(sizeof(*w));
	node_snap_writer_init(w, &h, src_next, &src, NULL);
	size_t total = (size_t)node_snap_total(h.kv_len, h.sess_len);
	uint8_t *out = malloc(total);
	size_t pos = 0;
	bool more = true;
	while (more) {
		size_t cap = rnd ? 1 + (size_t)keel_rand_below(rnd, 9000) : 4096;
		size_t n = 0;
		if (pos + cap > total)
			cap = total - pos ? total - pos : 1;
		more = node_snap_writer_next(w, out + pos, cap, &n);
		pos += n;
	}
	if (pos != total)
		abort();
	*crc = node_snap_writer_crc(w);
	*len = total;
	kv_snapshot_writer_destroy(src.w);
	free(w);
	return out;
}

struct sink {
	uint8_t *buf;
	size_t len, cap;
};

static int sink_feed(void *ctx, const uint8_t *b, size_t len)
{
	struct sink *s = ctx;
	if (s->len + len > s->cap)
		return KEEL_ERR_TOO_BIG;
	memcpy(s->buf + s->len, b, len);
	s->len += len;
	return 0;
}

/* Decodes buf in random splits; returns the feed error or finish's. */
static int decode_split(const uint8_t *buf, size_t len,
			const struct node_snap_expect *want,
			struct keel_rand *rnd, struct sink *sk,
			struct node_snap_head *h_out)
{
	struct node_snap_reader *r = malloc(sizeof(*r));
	node_snap_reader_init(r, want, sk ? sink_feed : NULL, sk, NULL, NULL);
	size_t pos = 0;
	int rv = 0;
	while (pos < len && !rv) {
		size_t n = rnd ? 1 + (size_t)keel_rand_below(rnd, 7000) : len;
		if (n > len - pos)
			n = len - pos;
		rv = node_snap_reader_feed(r, buf + pos, n);
		pos += n;
	}
	if (!rv)
		rv = node_snap_reader_finish(r);
	if (!rv && h_out)
		*h_out = *node_snap_reader_head(r);
	free(r);
	return rv;
}

static const struct raft_config_members *conf3(void)
{
	static struct raft_config_members m = {.n_voters = 3,
					       .voters = {1, 2, 3}};
	return &m;
}

/* Offsets of the sectioned layout for a payload of these lengths. */
#define OFF_DEDUP (NODE_SNAP_FIXED + NODE_SNAP_SECT_HDR)
#define OFF_STREAMS                                                          \
	(OFF_DEDUP + NODE_SNAP_DEDUP_BYTES + 4 + NODE_SNAP_SECT_HDR)
#define OFF_SESS (OFF_STREAMS + NODE_SNAP_STREAMS_BYTES + 4 + NODE_SNAP_SECT_HDR)
#define OFF_CLOCK(sess_len) (OFF_SESS + (sess_len) + 4 + NODE_SNAP_SECT_HDR)
static size_t off_kv(size_t sess_len)
{
	return OFF_CLOCK(sess_len) + 8 + 4 + NODE_SNAP_SECT_HDR;
}

TEST(layout_matches_document)
{
	uint64_t last;
	struct kv *kv = make_kv(3, &last);
	size_t len;
	uint32_t crc;
	uint8_t *p = encode_all(kv, 42, NULL, &len, &crc, NULL);
	uint64_t L = kv_snapshot_size(kv);
	/* 184 + 5 x (16 + 4) + 34824 + 33280 + 8 + 4 = 68400 */
	EXPECT_EQ_U64(NODE_SNAP_OVERHEAD, 68400);
	EXPECT_EQ_U64(len, 68400 + L);
	EXPECT(memcmp(p, "KEELNODE", 8) == 0);
	EXPECT_EQ_U64(keel_get_u32(p + 8), 2);
	EXPECT_EQ_U64(keel_get_u32(p + 12), 0);
	EXPECT_EQ_U64(keel_get_u64(p + 16), len);
	EXPECT_EQ_U64(keel_get_u64(p + 24), 42);
	EXPECT_EQ_U64(keel_get_u64(p + 32), 3);
	EXPECT_EQ_U64(keel_get_u32(p + 40), 3);
	EXPECT_EQ_U64(keel_get_u32(p + 44), 0);
	/* members sorted, then zeros */
	EXPECT_EQ_U64(keel_get_u64(p + 48), 1);
	EXPECT_EQ_U64(keel_get_u64(p + 56), 2);
	EXPECT_EQ_U64(keel_get_u64(p + 64), 3);
	EXPECT_EQ_U64(keel_get_u64(p + 72), 0);
	EXPECT_EQ_U64(keel_get_u32(p + 176), 5); /* sections */
	EXPECT_EQ_U64(keel_get_u32(p + 180), 0);
	/* section 1, dedup: tag, version, length, then window and records */
	EXPECT_EQ_U64(keel_get_u32(p + 184), 1);
	EXPECT_EQ_U64(keel_get_u32(p + 188), 1);
	EXPECT_EQ_U64(keel_get_u64(p + 192), 34824);
	EXPECT_EQ_U64(OFF_DEDUP, 200);
	EXPECT_EQ_U64(keel_get_u32(p + 200), 4096);
	EXPECT_EQ_U64(keel_get_u32(p + 204), 64);
	/* slot 0: origin, boot, high, last_index, bits[0] */
	EXPECT_EQ_U64(keel_get_u64(p + 208), 2);
	EXPECT_EQ_U64(keel_get_u64(p + 216), 77);
	EXPECT_EQ_U64(keel_get_u64(p + 224), 5);
	EXPECT_EQ_U64(keel_get_u64(p + 232), 42);
	EXPECT_EQ_U64(keel_get_u64(p + 240), 0x3e);
	/* slot 5's last word */
	EXPECT_EQ_U64(keel_get_u64(p + 208 + 5 * 544 + 32 + 15 * 8),
		      1ull << 63);
	EXPECT_EQ_U64(keel_get_u32(p + 200 + 34824),
		      keel_crc32c(0, p + 200, 34824));
	/* section 2, streams: floor, then 32 (id, hw) per record */
	EXPECT_EQ_U64(keel_get_u32(p + OFF_STREAMS - 16), 2);
	EXPECT_EQ_U64(keel_get_u64(p + OFF_STREAMS - 8), 33280);
	EXPECT_EQ_U64(keel_get_u64(p + OFF_STREAMS), 0);
	EXPECT_EQ_U64(keel_get_u64(p + OFF_STREAMS + 5 * 520), 900);
	EXPECT_EQ_U64(keel_get_u64(p + OFF_STREAMS + 5 * 520 + 8), 44);
	EXPECT_EQ_U64(keel_get_u64(p + OFF_STREAMS + 5 * 520 + 16), 1025);
	EXPECT_EQ_U64(keel_get_u64(p + OFF_STREAMS + 5 * 520 + 8 + 7 * 16), 12);
	EXPECT_EQ_U64(keel_get_u64(p + OFF_STREAMS + 5 * 520 + 16 + 7 * 16),
		      1000);
	EXPECT_EQ_U64(keel_get_u32(p + OFF_STREAMS + 33280),
		      keel_crc32c(0, p + OFF_STREAMS, 33280));
	/* section 3, sessions: empty here */
	EXPECT_EQ_U64(keel_get_u32(p + OFF_SESS - 16), 3);
	EXPECT_EQ_U64(keel_get_u64(p + OFF_SESS - 8), 0);
	EXPECT_EQ_U64(keel_get_u32(p + OFF_SESS), 0); /* CRC of nothing */
	/* section 4, clock: the newest leader stamp applied */
	EXPECT_EQ_U64(keel_get_u32(p + OFF_CLOCK(0) - 16), 4);
	EXPECT_EQ_U64(keel_get_u64(p + OFF_CLOCK(0) - 8), 8);
	EXPECT_EQ_U64(keel_get_u64(p + OFF_CLOCK(0)), 1700000000123ull);
	/* section 100, kv, last: version is kv's own */
	size_t kvo = off_kv(0);
	EXPECT_EQ_U64(keel_get_u32(p + kvo - 16), 100);
	EXPECT_EQ_U64(keel_get_u32(p + kvo - 12), KV_SNAP_VERSION);
	EXPECT_EQ_U64(keel_get_u64(p + kvo - 8), L);
	uint8_t *kvb = NULL;
	size_t kvl = 0;
	ASSERT(kv_snapshot_encode(kv, &keel_alloc_libc, &kvb, &kvl) == 0);
	EXPECT_EQ_U64(kvl, L);
	EXPECT(memcmp(p + kvo, kvb, kvl) == 0);
	EXPECT_EQ_U64(keel_get_u32(p + kvo + L), keel_crc32c(0, kvb, kvl));
	EXPECT_EQ_U64(kvo + L + 8, len);
	EXPECT_EQ_U64(keel_get_u32(p + len - 4), keel_crc32c(0, p, len - 4));
	EXPECT_EQ_U64(crc, keel_crc32c(0, p, len)); /* whole payload */
	free(kvb);
	free(p);
	kv_destroy(kv);
}

TEST(round_trip_random_splits)
{
	struct keel_rand rnd;
	keel_rand_seed(&rnd, test_seed(4242));
	for (int iter = 0; iter < 40; iter++) {
		uint64_t last;
		struct kv *kv = make_kv((uint32_t)keel_rand_below(&rnd, 300),
					&last);
		uint64_t index = last + keel_rand_below(&rnd, 5) + 1;
		size_t len;
		uint32_t crc;
		struct node_snap_head in;
		uint8_t *p = encode_all(kv, index, &rnd, &len, &crc, &in);
		uint8_t *kvb = NULL;
		size_t kvl = 0;
		ASSERT(kv_snapshot_encode(kv, &keel_alloc_libc, &kvb, &kvl) == 0);
		struct sink sk = {malloc(kvl), 0, kvl};
		struct node_snap_expect want = {.index = index,
						.term = 3,
						.max_bytes = len,
						.members = conf3()};
		struct node_snap_head out;
		EXPECT(decode_split(p, len, &want, &rnd, &sk, &out) == 0);
		EXPECT_EQ_U64(sk.len, kvl);
		EXPECT(memcmp(sk.buf, kvb, kvl) == 0);
		EXPECT_EQ_U64(out.index, index);
		EXPECT_EQ_U64(out.kv_len, kvl);
		EXPECT(memcmp(out.dedup, in.dedup, sizeof(in.dedup)) == 0);
		EXPECT_EQ_U64(out.stamp_ms, in.stamp_ms);
		EXPECT_EQ_U64(out.members.voters[0], 1);
		EXPECT_EQ_U64(crc, keel_crc32c(0, p, len));
		/* Re-encoding from the decoded head gives the same bytes. */
		size_t len2;
		uint32_t crc2;
		uint8_t *p2 = encode_all(kv, index, &rnd, &len2, &crc2, NULL);
		EXPECT(len2 == len && memcmp(p, p2, len) == 0);
		free(p2);
		free(sk.buf);
		free(kvb);
		free(p);
		kv_destroy(kv);
	}
}

/* Re-seals every section CRC and the payload CRC after a change (a
 * payload with no session bytes). */
static void reseal(uint8_t *p, size_t len)
{
	size_t at = NODE_SNAP_FIXED;
	for (int k = 0; k < 5 && at + NODE_SNAP_SECT_HDR <= len; k++) {
		uint64_t l = keel_get_u64(p + at + 8);
		if (l > len - at - NODE_SNAP_SECT_HDR - 4)
			break; /* a length the test broke on purpose */
		at += NODE_SNAP_SECT_HDR;
		keel_put_u32(p + at + l, keel_crc32c(0, p + at, (size_t)l));
		at += (size_t)l + 4;
	}
	keel_put_u32(p + len - 4, keel_crc32c(0, p, len - 4));
}

TEST(refusals_one_per_rule)
{
	uint64_t last;
	struct kv *kv = make_kv(20, &last);
	size_t len;
	uint32_t crc;
	uint8_t *good = encode_all(kv, 30, NULL, &len, &crc, NULL);
	uint8_t *p = malloc(len + 1);
	struct node_snap_expect any = {.max_bytes = 1ull << 30};
	struct node_snap_expect want = {.index = 30,
					.term = 3,
					.max_bytes = 1ull << 30,
					.members = conf3()};
	EXPECT(decode_split(good, len, &want, NULL, NULL, NULL) == 0);
	const size_t D = OFF_DEDUP + 8, S = OFF_STREAMS, K = off_kv(0);

#define MUT(stmt, expect_rv)                                                  \
	do {                                                                  \
		memcpy(p, good, len);                                         \
		stmt;                                                         \
		reseal(p, len);                                               \
		EXPECT_EQ_U64(decode_split(p, len, &any, NULL, NULL, NULL),   \
			      (expect_rv));                                   \
	} while (0)
	MUT(p[0] ^= 1, KEEL_ERR_MAGIC);
	MUT(keel_put_u32(p + 8, 1), KEEL_ERR_VERSION); /* wave 1's */
	MUT(keel_put_u32(p + 8, 3), KEEL_ERR_VERSION);
	MUT(keel_put_u32(p + 12, 1), KEEL_ERR_MALFORMED);            /* flags */
	MUT(keel_put_u32(p + 180, 1), KEEL_ERR_MALFORMED);        /* reserved */
	MUT(keel_put_u64(p + 16, len + 1), KEEL_ERR_MALFORMED);      /* P */
	MUT(keel_put_u64(p + 16, 100), KEEL_ERR_MALFORMED);          /* P */
	MUT(keel_put_u64(p + 24, 0), KEEL_ERR_MALFORMED);            /* A */
	MUT(keel_put_u64(p + 32, 0), KEEL_ERR_MALFORMED);            /* term */
	MUT(keel_put_u32(p + 40, 0), KEEL_ERR_MALFORMED);            /* voters */
	MUT(keel_put_u32(p + 40, 17), KEEL_ERR_MALFORMED);
	MUT(keel_put_u32(p + 44, 14), KEEL_ERR_MALFORMED);           /* 3+14 */
	MUT(keel_put_u64(p + 56, 0), KEEL_ERR_MALFORMED);            /* id 0 */
	MUT(keel_put_u64(p + 56, 1), KEEL_ERR_MALFORMED);            /* repeat */
	MUT(keel_put_u64(p + 48 + 8 * 15, 9), KEEL_ERR_MALFORMED);   /* tail */
	MUT(keel_put_u32(p + 176, 4), KEEL_ERR_MALFORMED);  /* section count */
	MUT(keel_put_u64(p + OFF_CLOCK(0) - 8, 7), KEEL_ERR_MALFORMED); /* clock */
	MUT(keel_put_u32(p + OFF_CLOCK(0) - 12, 2), KEEL_ERR_VERSION);
	/* section headers: an unknown tag (a newer writer's state), a
	 * repeat or out of order, another version, another length */
	MUT(keel_put_u32(p + 184, 7), KEEL_ERR_VERSION);
	MUT(keel_put_u32(p + S - 16, 1), KEEL_ERR_MALFORMED);
	MUT(keel_put_u32(p + 188, 2), KEEL_ERR_VERSION);
	MUT(keel_put_u64(p + 192, 34816), KEEL_ERR_MALFORMED);
	MUT(keel_put_u32(p + K - 12, KV_SNAP_VERSION + 1), KEEL_ERR_VERSION);
	MUT(keel_put_u64(p + K - 8, 77), KEEL_ERR_MALFORMED);     /* kv len */
	MUT(keel_put_u64(p + OFF_SESS - 8, 1ull << 40), KEEL_ERR_MALFORMED);
	/* the kv section not last: tags 1, 2, 100 (sessions skipped) */
	MUT(keel_put_u32(p + OFF_SESS - 16, 100), KEEL_ERR_MALFORMED);
	/* the dedup section's own rules */
	MUT(keel_put_u32(p + OFF_DEDUP, 1024), KEEL_ERR_MALFORMED);
	MUT(keel_put_u32(p + OFF_DEDUP + 4, 32), KEEL_ERR_MALFORMED);
	/* a free slot (slot 1) with a non-zero field */
	MUT(keel_put_u64(p + D + 544 + 40, 1), KEEL_ERR_MALFORMED);
	/* a used slot with high 0 */
	MUT(keel_put_u64(p + D + 16, 0), KEEL_ERR_MALFORMED);
	/* slot 1 repeats slot 0's (origin, boot) */
	MUT((keel_put_u64(p + D + 544, 2), keel_put_u64(p + D + 552, 77),
	     keel_put_u64(p + D + 560, 1)),
	    KEEL_ERR_MALFORMED);
	/* five boots of origin 2 (slots 0, 1..4) */
	MUT(for (uint32_t s = 1; s <= 4; s++) {
		keel_put_u64(p + D + 544 * s, 2);
		keel_put_u64(p + D + 544 * s + 8, 100 + s);
		keel_put_u64(p + D + 544 * s + 16, 1);
	}, KEEL_ERR_MALFORMED);
	/* four boots are fine */
	MUT(for (uint32_t s = 1; s <= 3; s++) {
		keel_put_u64(p + D + 544 * s, 2);
		keel_put_u64(p + D + 544 * s + 8, 100 + s);
		keel_put_u64(p + D + 544 * s + 16, 1);
	}, 0);
	/* streams (slot 0's table): a free slot 1 with a stream */
	MUT((keel_put_u64(p + S + 520 + 8, 5),
	     keel_put_u64(p + S + 520 + 16, 1)), KEEL_ERR_MALFORMED);
	/* a stream without hw, a hw above high (5), a free one with hw */
	MUT(keel_put_u64(p + S + 8, 5), KEEL_ERR_MALFORMED);
	MUT((keel_put_u64(p + S + 8, 5), keel_put_u64(p + S + 16, 6)),
	    KEEL_ERR_MALFORMED);
	MUT(keel_put_u64(p + S + 16, 3), KEEL_ERR_MALFORMED);
	/* one stream twice; the floor above high */
	MUT((keel_put_u64(p + S + 8, 5), keel_put_u64(p + S + 16, 4),
	     keel_put_u64(p + S + 24, 5), keel_put_u64(p + S + 32, 2)),
	    KEEL_ERR_MALFORMED);
	MUT(keel_put_u64(p + S, 6), KEEL_ERR_MALFORMED);
	/* and the same rules passed: two streams, floor = high */
	MUT((keel_put_u64(p + S + 8, 5), keel_put_u64(p + S + 16, 4),
	     keel_put_u64(p + S + 24, 6), keel_put_u64(p + S + 32, 5),
	     keel_put_u64(p + S, 5)), 0);
	/* the kv snapshot's applied index beyond A */
	MUT(keel_put_u64(p + K + 24, 31), KEEL_ERR_MALFORMED);
	/* the kv snapshot's own length field other than L */
	MUT(keel_put_u64(p + K + 16, 1), KEEL_ERR_MALFORMED);
#undef MUT
	/* a section CRC: a flipped byte in each section, payload resealed */
	size_t flips[3] = {D + 3, S + 3, K + 70};
	for (int f = 0; f < 3; f++) {
		memcpy(p, good, len);
		p[flips[f]] ^= 1;
		keel_put_u32(p + len - 4, keel_crc32c(0, p, len - 4));
		EXPECT_EQ_U64(decode_split(p, len, &any, NULL, NULL, NULL),
			      KEEL_ERR_CORRUPT);
	}
	/* the payload CRC */
	memcpy(p, good, len);
	p[len - 1] ^= 0x80;
	EXPECT_EQ_U64(decode_split(p, len, &any, NULL, NULL, NULL),
		      KEEL_ERR_CORRUPT);
	/* truncated, and one byte too many */
	EXPECT_EQ_U64(decode_split(good, len - 1, &any, NULL, NULL, NULL),
		      KEEL_ERR_TRUNCATED);
	EXPECT_EQ_U64(decode_split(good, 100, &any, NULL, NULL, NULL),
		      KEEL_ERR_TRUNCATED);
	memcpy(p, good, len);
	p[len] = 0;
	EXPECT_EQ_U64(decode_split(p, len + 1, &any, NULL, NULL, NULL),
		      KEEL_ERR_MALFORMED);
	/* expected id, membership and size */
	struct node_snap_expect w2 = want;
	w2.index = 31;
	EXPECT_EQ_U64(decode_split(good, len, &w2, NULL, NULL, NULL),
		      KEEL_ERR_INVAL);
	w2 = want;
	w2.max_bytes = len - 1;
	EXPECT_EQ_U64(decode_split(good, len, &w2, NULL, NULL, NULL),
		      KEEL_ERR_TOO_BIG);
	free(p);
	free(good);
	kv_destroy(kv);
}

/* The session table's bytes travel in their own section (tag 3), before
 * the kv one: written as given, read back through their own sink, in any
 * split, covered by their section CRC. */
TEST(session_table_bytes_round_trip_in_their_section)
{
	uint64_t last;
	struct kv *kv = make_kv(7, &last);
	struct node_snap_head h = base_head(20, kv_snapshot_size(kv));
	static const uint8_t sess[] = "session-table-bytes";
	h.sess_len = sizeof(sess);
	struct source src = {kv_snapshot_writer_create(kv, &keel_alloc_libc)};
	struct node_snap_writer *w = malloc(sizeof(*w));
	node_snap_writer_init(w, &h, src_next, &src, sess);
	size_t total = (size_t)node_snap_total(h.kv_len, h.sess_len);
	uint8_t *p = malloc(total);
	size_t pos = 0, n = 0;
	while (node_snap_writer_next(w, p + pos, 333, &n))
		pos += n;
	pos += n;
	ASSERT(pos == total);
	EXPECT_EQ_U64(keel_get_u64(p + OFF_SESS - 8), sizeof(sess));
	EXPECT(memcmp(p + OFF_SESS, sess, sizeof(sess)) == 0);
	EXPECT_EQ_U64(keel_get_u32(p + OFF_SESS + sizeof(sess)),
		      keel_crc32c(0, sess, sizeof(sess)));
	struct keel_rand rnd;
	keel_rand_seed(&rnd, test_seed(99));
	for (int split = 0; split < 2; split++) {
		struct node_snap_reader *r = malloc(sizeof(*r));
		struct node_snap_expect any = {.max_bytes = 1ull << 30};
		struct sink kvs = {malloc(total), 0, total};
		struct sink ss = {malloc(total), 0, total};
		node_snap_reader_init(r, &any, sink_feed, &kvs, sink_feed, &ss);
		int rv = 0;
		for (size_t at = 0; at < total && !rv;) {
			size_t k = split ? 1 + (size_t)keel_rand_below(&rnd, 5000)
					 : total;
			if (k > total - at)
				k = total - at;
			rv = node_snap_reader_feed(r, p + at, k);
			at += k;
		}
		EXPECT_EQ_U64(rv, 0);
		EXPECT_EQ_U64(node_snap_reader_finish(r), 0);
		EXPECT(ss.len == sizeof(sess) && !memcmp(ss.buf, sess, ss.len));
		EXPECT_EQ_U64(kvs.len, h.kv_len);
		EXPECT_EQ_U64(node_snap_reader_head(r)->sess_len, sizeof(sess));
		free(kvs.buf);
		free(ss.buf);
		free(r);
	}
	/* a flipped session byte fails its section's CRC */
	p[OFF_SESS + 3] ^= 1;
	keel_put_u32(p + total - 4, keel_crc32c(0, p, total - 4));
	struct node_snap_expect any = {.max_bytes = 1ull << 30};
	EXPECT_EQ_U64(decode_split(p, total, &any, NULL, NULL, NULL),
		      KEEL_ERR_CORRUPT);
	kv_snapshot_writer_destroy(src.w);
	free(w);
	free(p);
	kv_destroy(kv);
}

TEST(dedup_check_accepts_what_the_node_builds)
{
	struct node_dedup_rec d[NODE_DEDUP_RECS];
	memset(d, 0, sizeof(d));
	EXPECT(node_snap_check_dedup(d) == 0);
	for (uint32_t i = 0; i < NODE_DEDUP_RECS; i++) {
		d[i].origin = 1 + i / 4;
		d[i].boot = i;
		d[i].high = 1;
	}
	EXPECT(node_snap_check_dedup(d) == 0);
	d[63].origin = 1; /* a fifth boot of origin 1 */
	EXPECT(node_snap_check_dedup(d) == KEEL_ERR_MALFORMED);
}

/* ---- transfer decisions (snapxfer_state.c) --------------------------------- */

#include "node/snapxfer_state.h"

static struct snap_send started(uint64_t total)
{
	struct raft_config_members m = {.n_voters = 3, .voters = {1, 2, 3}};
	struct snap_send s;
	snap_send_start(&s, 2, 7, (struct snapxfer_id){100, 4}, total, 0xabcd,
			5, &m, 1000);
	s.active = true;
	return s;
}

static struct snapxfer_ack ack(uint64_t total, uint64_t next, int status)
{
	struct snapxfer_ack a = {.term = 5,
				 .id = {100, 4},
				 .total_len = total,
				 .next_offset = next,
				 .status = (uint8_t)status};
	return a;
}

TEST(sender_window_and_cumulative_acks)
{
	struct snap_send s = started(10000);
	uint64_t off;
	uint32_t len;
	/* window 4 of 1000 bytes: four reads, then it waits */
	for (int i = 0; i < 4; i++) {
		ASSERT(snap_send_next_read(&s, 4, 1000, &off, &len));
		EXPECT_EQ_U64(off, (uint64_t)i * 1000);
		EXPECT_EQ_U64(len, 1000);
	}
	EXPECT(!snap_send_next_read(&s, 4, 1000, &off, &len));
	/* reads come back: still only 4 chunks past acked */
	s.reads_out = 0;
	EXPECT(!snap_send_next_read(&s, 4, 1000, &off, &len));
	struct snapxfer_ack a = ack(10000, 2000, SNAPXFER_CONTINUE);
	EXPECT_EQ_U64(snap_send_on_ack(&s, &a, 2000), SNAP_SEND_PUMP);
	EXPECT_EQ_U64(s.acked, 2000);
	EXPECT_EQ_U64(s.progress_ns, 2000);
	ASSERT(snap_send_next_read(&s, 4, 1000, &off, &len));
	EXPECT_EQ_U64(off, 4000);
	/* an ack for another snapshot changes nothing */
	struct snapxfer_ack other = a;
	other.id.index = 99;
	EXPECT_EQ_U64(snap_send_on_ack(&s, &other, 3000), SNAP_SEND_NONE);
	/* the last chunk is short */
	struct snap_send t = started(2500);
	ASSERT(snap_send_next_read(&t, 4, 1000, &off, &len));
	ASSERT(snap_send_next_read(&t, 4, 1000, &off, &len));
	ASSERT(snap_send_next_read(&t, 4, 1000, &off, &len));
	EXPECT_EQ_U64(off, 2000);
	EXPECT_EQ_U64(len, 500);
	EXPECT(!snap_send_next_read(&t, 4, 1000, &off, &len));
}

TEST(sender_goes_back_once_per_offset)
{
	struct snap_send s = started(10000);
	uint64_t off;
	uint32_t len;
	for (int i = 0; i < 4; i++)
		ASSERT(snap_send_next_read(&s, 4, 1000, &off, &len));
	s.reads_out = 0;
	struct snapxfer_ack a = ack(10000, 1000, SNAPXFER_CONTINUE);
	EXPECT_EQ_U64(snap_send_on_ack(&s, &a, 10), SNAP_SEND_PUMP);
	uint32_t round = s.round;
	/* chunk 1000 was lost: the receiver answers chunk 2000 with 1000 */
	EXPECT_EQ_U64(snap_send_on_ack(&s, &a, 11), SNAP_SEND_PUMP);
	EXPECT_EQ_U64(s.sent, 1000);
	EXPECT(s.round == round + 1);
	ASSERT(snap_send_next_read(&s, 4, 1000, &off, &len));
	EXPECT_EQ_U64(off, 1000);
	/* the same stale answer again (chunk 3000 arrives): no second
	 * go-back for 1000 */
	EXPECT_EQ_U64(snap_send_on_ack(&s, &a, 12), SNAP_SEND_NONE);
	EXPECT(s.round == round + 1);
	/* a receiver that lost its staging says CONTINUE 0 */
	struct snapxfer_ack z = ack(10000, 0, SNAPXFER_CONTINUE);
	EXPECT_EQ_U64(snap_send_on_ack(&s, &z, 13), SNAP_SEND_PUMP);
	EXPECT_EQ_U64(s.sent, 0);
	EXPECT_EQ_U64(s.acked, 0);
}

TEST(sender_statuses_retry_and_timeout)
{
	struct snap_send s = started(3000);
	struct snapxfer_ack a = ack(3000, 3000, SNAPXFER_COMPLETE);
	EXPECT_EQ_U64(snap_send_on_ack(&s, &a, 50), SNAP_SEND_MSG);
	EXPECT(s.complete);
	/* retry: the type-10 frame again, once per retry period */
	EXPECT_EQ_U64(snap_send_tick(&s, 60, 100, 1000), SNAP_SEND_NONE);
	EXPECT_EQ_U64(snap_send_tick(&s, 150, 100, 1000), SNAP_SEND_MSG);
	EXPECT_EQ_U64(snap_send_tick(&s, 160, 100, 1000), SNAP_SEND_NONE);
	/* no progress for the timeout */
	EXPECT_EQ_U64(snap_send_tick(&s, 1050, 100, 1000), SNAP_SEND_FAIL);
	a.status = SNAPXFER_DONE;
	EXPECT_EQ_U64(snap_send_on_ack(&s, &a, 60), SNAP_SEND_OK);
	int fails[] = {SNAPXFER_BAD, SNAPXFER_BUSY};
	for (int i = 0; i < 2; i++) {
		struct snapxfer_ack f = ack(3000, 0, fails[i]);
		EXPECT_EQ_U64(snap_send_on_ack(&s, &f, 70), SNAP_SEND_FAIL);
	}
	/* STALE: the receiver has it (or newer): ok, so the core probes past
	 * the snapshot instead of naming it forever */
	struct snapxfer_ack st = ack(3000, 0, SNAPXFER_STALE);
	EXPECT_EQ_U64(snap_send_on_ack(&s, &st, 70), SNAP_SEND_OK);
	/* retry before COMPLETE resends from acked */
	struct snap_send t = started(3000);
	uint64_t off;
	uint32_t len;
	ASSERT(snap_send_next_read(&t, 4, 1000, &off, &len));
	ASSERT(snap_send_next_read(&t, 4, 1000, &off, &len));
	t.reads_out = 0;
	EXPECT_EQ_U64(snap_send_tick(&t, 1000 + 200, 100, 100000),
		      SNAP_SEND_PUMP);
	EXPECT_EQ_U64(t.sent, 0);
}

static struct snapxfer_chunk chunk(uint64_t index, uint64_t term,
				   uint64_t offset)
{
	static const uint8_t data[100];
	struct snapxfer_chunk c = {.leader_term = 6,
				   .id = {index, term},
				   .total_len = 1000,
				   .offset = offset,
				   .snap_crc = 1,
				   .len = 100,
				   .data = data};
	return c;
}

TEST(receiver_admission_rules)
{
	struct snapxfer_rx idle;
	memset(&idle, 0, sizeof(idle));
	struct snapxfer_chunk c = chunk(50, 5, 0);
	EXPECT_EQ_U64(snap_recv_admit(&idle, 0, &c, 6, 10, 0, false),
		      SNAP_RECV_START);
	/* an older leader term, or a point we applied */
	EXPECT_EQ_U64(snap_recv_admit(&idle, 0, &c, 7, 10, 0, false),
		      SNAP_RECV_STALE);
	EXPECT_EQ_U64(snap_recv_admit(&idle, 0, &c, 6, 50, 0, false),
		      SNAP_RECV_STALE);
	/* over snapshot_max_bytes */
	EXPECT_EQ_U64(snap_recv_admit(&idle, 0, &c, 6, 10, 999, false),
		      SNAP_RECV_BUSY);
	/* not at offset 0 with nothing staged: start over */
	struct snapxfer_chunk mid = chunk(50, 5, 300);
	EXPECT_EQ_U64(snap_recv_admit(&idle, 0, &mid, 6, 10, 0, false),
		      SNAP_RECV_RESTART);
	struct snapxfer_rx rx;
	snapxfer_rx_start(&rx, &c);
	snapxfer_rx_advance(&rx, &c);
	struct snapxfer_chunk next = chunk(50, 5, 100);
	EXPECT_EQ_U64(snap_recv_admit(&rx, 6, &next, 6, 10, 0, false),
		      SNAP_RECV_TAKE);
	EXPECT_EQ_U64(snap_recv_admit(&rx, 6, &c, 6, 10, 0, false),
		      SNAP_RECV_SKIP);
	EXPECT_EQ_U64(snap_recv_admit(&rx, 6, &mid, 6, 10, 0, false),
		      SNAP_RECV_SKIP);
	struct snapxfer_chunk bad = next;
	bad.snap_crc = 2;
	EXPECT_EQ_U64(snap_recv_admit(&rx, 6, &bad, 6, 10, 0, false),
		      SNAP_RECV_MISMATCH);
	/* newer replaces (at 0), older is stale, a locked staging stays */
	struct snapxfer_chunk newer = chunk(60, 5, 0);
	EXPECT_EQ_U64(snap_recv_admit(&rx, 6, &newer, 6, 10, 0, false),
		      SNAP_RECV_START);
	EXPECT_EQ_U64(snap_recv_admit(&rx, 6, &newer, 6, 10, 0, true),
		      SNAP_RECV_BUSY);
	struct snapxfer_chunk same_higher_term = chunk(50, 6, 0);
	EXPECT_EQ_U64(snap_recv_admit(&rx, 6, &same_higher_term, 6, 10, 0, false),
		      SNAP_RECV_START);
	struct snapxfer_chunk older = chunk(40, 5, 0);
	EXPECT_EQ_U64(snap_recv_admit(&rx, 6, &older, 6, 10, 0, false),
		      SNAP_RECV_STALE);
	/* ... unless a newer leader sends it: the staging's leader is gone */
	older.leader_term = 7;
	EXPECT_EQ_U64(snap_recv_admit(&rx, 6, &older, 6, 10, 0, false),
		      SNAP_RECV_START);
}
