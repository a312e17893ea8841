/*
 * test_peer_codec.c -- tests of the peer wire codec (src/raft/peer_codec.c)
 * against docs/peer-protocol.md: random round trips of every message type,
 * a golden frame that pins the byte layout the document gives, and one test
 * per rejection the decoder promises. Rejection tests that edit a frame
 * re-seal it (recompute the CRC) so the check under test, not the checksum,
 * is what has to catch the edit; each asserts the exact error code.
 */
#include "keel/peer.h"
#include "node/fwd.h"
#include "test.h"

#define CLUSTER 0x1122334455667788ull
#define MAX_ENTRIES 16
#define MAX_DATA 96
#define BUF_CAP                                                               \
	(PEER_MIN_FRAME_SIZE + PEER_MSG_FIXED_SIZE +                          \
	 MAX_ENTRIES * (PEER_ENTRY_HEADER_SIZE + MAX_DATA) + 64)

/* A message with its own storage for entries and their data. */
struct sample {
	struct raft_msg m;
	struct raft_entry entries[MAX_ENTRIES];
	uint8_t data[MAX_ENTRIES][MAX_DATA];
	struct raft_config_members conf; /* SNAPSHOT only */
};

/* Values that exercise every byte of a field, with the edges often. */
static uint64_t rand_u64(struct keel_rand *r)
{
	switch (keel_rand_below(r, 6)) {
	case 0:
		return 0;
	case 1:
		return UINT64_MAX;
	case 2:
		return keel_rand_below(r, 1000);
	default:
		return keel_rand_next(r);
	}
}

static void make_sample(struct keel_rand *r, struct sample *s, uint8_t type,
			uint32_t max_n)
{
	memset(s, 0, sizeof(*s));
	s->m.type = type;
	s->m.from = 1 + keel_rand_below(r, UINT64_MAX - 1); /* never 0 */
	s->m.to = rand_u64(r);
	s->m.term = rand_u64(r);
	s->m.log_term = rand_u64(r);
	s->m.index = rand_u64(r);
	s->m.commit = rand_u64(r);
	s->m.hint_index = rand_u64(r);
	s->m.hint_term = rand_u64(r);
	s->m.context = rand_u64(r);
	s->m.reject = keel_rand_chance(r, 1, 2);
	s->m.transfer = keel_rand_chance(r, 1, 2);
	s->m.n_entries = (uint32_t)keel_rand_below(r, (uint64_t)max_n + 1);
	s->m.entries = s->entries;
	for (uint32_t i = 0; i < s->m.n_entries; i++) {
		struct raft_entry *e = &s->entries[i];
		e->term = rand_u64(r);
		e->index = rand_u64(r);
		e->type = (uint8_t)keel_rand_below(r, RAFT_ENTRY_CONF + 1);
		e->len = keel_rand_chance(r, 1, 5)
				 ? 0
				 : (uint32_t)keel_rand_below(r, MAX_DATA + 1);
		for (uint32_t k = 0; k < e->len; k++)
			s->data[i][k] = (uint8_t)keel_rand_next(r);
		e->data = e->len ? s->data[i] : NULL;
	}
	if (type == RAFT_MSG_SNAPSHOT) {
		/* No entries; a membership of 1..16 distinct ids, the edges
		 * (one voter, sixteen members) often. */
		s->m.n_entries = 0;
		s->m.conf = &s->conf;
		uint32_t total = keel_rand_chance(r, 1, 4)
					 ? (keel_rand_chance(r, 1, 2)
						    ? 1
						    : RAFT_MAX_VOTERS)
					 : 1 + (uint32_t)keel_rand_below(
						       r, RAFT_MAX_VOTERS);
		uint32_t nv = 1 + (uint32_t)keel_rand_below(r, total);
		for (uint32_t i = 0; i < total; i++) {
			/* Distinct: the low bits carry i. */
			raft_id id = (rand_u64(r) & ~(uint64_t)0xFF) | (i + 1);
			if (i < nv)
				s->conf.voters[s->conf.n_voters++] = id;
			else
				s->conf.learners[s->conf.n_learners++] = id;
		}
	}
}

/* Recomputes the trailing CRC after a test edited the frame. */
static void reseal(uint8_t *buf, size_t frame_len)
{
	size_t covered = frame_len - PEER_TRAILER_SIZE;
	keel_put_u32(buf + covered, keel_crc32c(0, buf, covered));
}

static void limits(struct peer_limits *lim)
{
	peer_limits_default(lim, CLUSTER);
}

static int decode(const uint8_t *buf, size_t len, struct raft_msg *m,
		  struct raft_entry *entries, uint32_t max_entries)
{
	struct peer_limits lim;
	limits(&lim);
	return peer_decode(buf, len, &lim, NULL, m, entries, max_entries);
}

/* A fixed APPEND with three entries (lengths 5, 0, 17). */
static size_t append_frame(uint8_t *buf, size_t cap)
{
	static const uint8_t d0[5] = {1, 2, 3, 4, 5};
	static const uint8_t d2[17] = "seventeen bytes!";
	struct raft_entry e[3] = {
		{.term = 4, .index = 10, .type = RAFT_ENTRY_NORMAL, .len = 5,
		 .data = d0},
		{.term = 4, .index = 11, .type = RAFT_ENTRY_NOOP, .len = 0,
		 .data = NULL},
		{.term = 5, .index = 12, .type = RAFT_ENTRY_NORMAL, .len = 17,
		 .data = d2},
	};
	struct raft_msg m = {.type = RAFT_MSG_APPEND, .from = 1, .to = 2,
			     .term = 5, .log_term = 4, .index = 9,
			     .commit = 8, .n_entries = 3, .entries = e};
	size_t n = 0;
	int r = peer_encode(&m, CLUSTER, buf, cap, &n);
	if (r != 0 || n != peer_frame_size(&m))
		return 0;
	return n;
}

/* The VOTE example of docs/peer-protocol.md §4.3. */
static size_t vote_frame(uint8_t *buf, size_t cap)
{
	struct raft_msg m = {.type = RAFT_MSG_VOTE, .from = 2, .to = 3,
			     .term = 7, .log_term = 6, .index = 40};
	size_t n = 0;
	if (peer_encode(&m, CLUSTER, buf, cap, &n) != 0)
		return 0;
	return n;
}

TEST(crc32c_known_answers)
{
	static const uint8_t zeros[32] = {0};
	EXPECT_EQ_U64(keel_crc32c(0, "123456789", 9), 0xE3069283u);
	EXPECT_EQ_U64(keel_crc32c(0, zeros, sizeof(zeros)), 0x8A9136AAu);
	/* Running value: two halves give the same as the whole. */
	EXPECT_EQ_U64(keel_crc32c(keel_crc32c(0, "1234", 4), "56789", 5),
		      0xE3069283u);
}

/* keel_crc32c (the CPU's crc32 instruction where there is one) gives the
 * portable table result for every length 0..600 at every alignment 0..15,
 * chained in random splits too, over random bytes. On a CPU without
 * SSE4.2 both are the tables and this holds trivially. */
TEST(crc32c_hardware_path_matches_tables)
{
	static uint8_t buf[640];
	struct keel_rand r;
	keel_rand_seed(&r, 0xC3C3);
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)keel_rand_next(&r);
	for (size_t off = 0; off < 16; off++)
		for (size_t len = 0; len + off <= 616; len++) {
			uint32_t seed = (uint32_t)keel_rand_next(&r);
			EXPECT_EQ_U64(keel_crc32c(seed, buf + off, len),
				      keel_crc32c_portable(seed, buf + off, len));
			size_t cut = len ? keel_rand_below(&r, len + 1) : 0;
			EXPECT_EQ_U64(keel_crc32c(keel_crc32c(0, buf + off, cut),
						  buf + off + cut, len - cut),
				      keel_crc32c_portable(0, buf + off, len));
		}
}

TEST(golden_vote_frame_matches_document)
{
	uint8_t buf[256];
	size_t n = vote_frame(buf, sizeof(buf));
	ASSERT(n == 104);
	static const uint8_t head[] = {
		0x4b, 0x45, 0x45, 0x4c, 0x01, 0x03, 0x00, 0x00, /* KEEL v1 VOTE */
		0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, /* cluster */
		0x02, 0, 0, 0, 0, 0, 0, 0,                      /* sender 2 */
		0x48, 0, 0, 0,                                  /* body_len 72 */
		0x03, 0, 0, 0, 0, 0, 0, 0,                      /* to 3 */
		0x07, 0, 0, 0, 0, 0, 0, 0,                      /* term 7 */
		0x06, 0, 0, 0, 0, 0, 0, 0,                      /* log_term 6 */
		0x28, 0, 0, 0, 0, 0, 0, 0,                      /* index 40 */
	};
	EXPECT(memcmp(buf, head, sizeof(head)) == 0);
	for (size_t i = sizeof(head); i < 100; i++)
		EXPECT(buf[i] == 0); /* commit..n_entries */
	EXPECT_EQ_U64(keel_get_u32(buf + 100), keel_crc32c(0, buf, 100));
	EXPECT_EQ_U64(keel_get_u32(buf + 100), 0x90b8502bu); /* as documented */
}

TEST(round_trip_random_messages)
{
	struct keel_rand r;
	keel_rand_seed(&r, test_seed(1));
	static struct sample s;
	static uint8_t buf[BUF_CAP + 64];
	struct raft_entry got_e[MAX_ENTRIES];
	struct raft_config_members got_conf;
	struct peer_limits lim;
	limits(&lim);
	for (int iter = 0; iter < 5000; iter++) {
		uint8_t type = (uint8_t)(1 + iter % (RAFT_MSG_TYPE_COUNT - 1));
		make_sample(&r, &s, type, MAX_ENTRIES);
		size_t n = 0;
		ASSERT(peer_encode(&s.m, CLUSTER, buf, BUF_CAP, &n) == 0);
		EXPECT_EQ_U64(n, peer_frame_size(&s.m));
		/* One byte short never fits. */
		size_t n2 = 0;
		EXPECT(peer_encode(&s.m, CLUSTER, buf, n - 1, &n2) ==
		       KEEL_ERR_TOO_BIG);
		ASSERT(peer_encode(&s.m, CLUSTER, buf, BUF_CAP, &n) == 0);

		/* Bytes of a next frame after this one must be ignored. */
		size_t extra = keel_rand_below(&r, 32);
		for (size_t k = 0; k < extra; k++)
			buf[n + k] = (uint8_t)keel_rand_next(&r);

		size_t fl = 0;
		ASSERT(peer_frame_peek(buf, n + extra, &lim, &fl) == 0);
		EXPECT_EQ_U64(fl, n);

		struct raft_msg got;
		struct peer_frame_info info;
		memset(&got, 0xA5, sizeof(got));
		memset(&got_conf, 0xA5, sizeof(got_conf));
		int rc = peer_decode_msg(buf, n + extra, &lim, &info, &got,
					 got_e, MAX_ENTRIES, &got_conf);
		if (rc != 0) {
			fprintf(stderr, "  iter %d: decode %s\n", iter,
				keel_strerror(rc));
			ASSERT(rc == 0);
		}
		EXPECT_EQ_U64(info.version, PEER_VERSION);
		EXPECT_EQ_U64(info.type, type);
		EXPECT_EQ_U64(info.flags, 0);
		EXPECT_EQ_U64(info.cluster_id, CLUSTER);
		EXPECT_EQ_U64(info.sender, s.m.from);
		EXPECT_EQ_U64(info.frame_len, n);
		EXPECT_EQ_U64(info.body_len,
			      n - PEER_HEADER_SIZE - PEER_TRAILER_SIZE);

		EXPECT_EQ_U64(got.type, s.m.type);
		EXPECT(got.reject == s.m.reject);
		EXPECT(got.transfer == s.m.transfer);
		EXPECT_EQ_U64(got.from, s.m.from);
		EXPECT_EQ_U64(got.to, s.m.to);
		EXPECT_EQ_U64(got.term, s.m.term);
		EXPECT_EQ_U64(got.log_term, s.m.log_term);
		EXPECT_EQ_U64(got.index, s.m.index);
		EXPECT_EQ_U64(got.commit, s.m.commit);
		EXPECT_EQ_U64(got.hint_index, s.m.hint_index);
		EXPECT_EQ_U64(got.hint_term, s.m.hint_term);
		EXPECT_EQ_U64(got.context, s.m.context);
		ASSERT(got.n_entries == s.m.n_entries);
		EXPECT(got.entries == got_e);
		if (type == RAFT_MSG_SNAPSHOT) {
			ASSERT(got.conf == &got_conf);
			const struct raft_config_members *a = &s.conf;
			ASSERT(got_conf.n_voters == a->n_voters);
			ASSERT(got_conf.n_learners == a->n_learners);
			for (uint32_t i = 0; i < a->n_voters; i++)
				EXPECT_EQ_U64(got_conf.voters[i], a->voters[i]);
			for (uint32_t i = 0; i < a->n_learners; i++)
				EXPECT_EQ_U64(got_conf.learners[i],
					      a->learners[i]);
			/* The plain decoder takes no snapshots. */
			EXPECT(peer_decode(buf, n, &lim, NULL, &got, got_e,
					   MAX_ENTRIES) == KEEL_ERR_TYPE);
		} else {
			EXPECT(got.conf == NULL);
		}
		for (uint32_t i = 0; i < got.n_entries; i++) {
			const struct raft_entry *a = &s.entries[i];
			const struct raft_entry *b = &got_e[i];
			EXPECT_EQ_U64(b->term, a->term);
			EXPECT_EQ_U64(b->index, a->index);
			EXPECT_EQ_U64(b->type, a->type);
			ASSERT(b->len == a->len);
			/* Zero copy: data points into the frame. */
			EXPECT(b->data >= buf + PEER_HEADER_SIZE);
			EXPECT(b->data + b->len <= buf + n - PEER_TRAILER_SIZE);
			if (a->len)
				EXPECT(memcmp(a->data, b->data, a->len) == 0);
		}
		if (test_failed_now_) {
			fprintf(stderr, "  first failure at iter %d\n", iter);
			return;
		}
	}
}

/* Every single-bit flip anywhere in the frame is rejected. Flips the
 * stream reader must see early are caught by their own checks; every
 * other flip, including ones in the cluster id, type, flags and sender,
 * must read as KEEL_ERR_CORRUPT: proof that the CRC is checked first. */
static void check_all_bit_flips(uint8_t *buf, size_t n)
{
	struct raft_msg m;
	struct raft_entry e[MAX_ENTRIES];
	ASSERT(decode(buf, n, &m, e, MAX_ENTRIES) == 0);
	for (size_t byte = 0; byte < n; byte++) {
		for (int bit = 0; bit < 8; bit++) {
			buf[byte] ^= (uint8_t)(1u << bit);
			int rc = decode(buf, n, &m, e, MAX_ENTRIES);
			buf[byte] ^= (uint8_t)(1u << bit);
			int want;
			if (byte < 4)
				want = KEEL_ERR_MAGIC;
			else if (byte == 4)
				want = KEEL_ERR_VERSION;
			else if (byte >= 24 && byte < 28)
				/* body_len: frame now claims to be longer
				 * (wait for more) or shorter (CRC read from
				 * the wrong place). */
				want = rc == KEEL_ERR_TRUNCATED ||
						       rc == KEEL_ERR_TOO_BIG
					       ? rc
					       : KEEL_ERR_CORRUPT;
			else
				want = KEEL_ERR_CORRUPT;
			if (rc != want) {
				fprintf(stderr,
					"  flip byte %zu bit %d: got %s, want "
					"%s\n",
					byte, bit, keel_strerror(rc),
					keel_strerror(want));
				EXPECT(rc == want);
				return;
			}
		}
	}
	ASSERT(decode(buf, n, &m, e, MAX_ENTRIES) == 0);
}

TEST(every_bit_flip_is_rejected)
{
	uint8_t buf[BUF_CAP];
	size_t n = append_frame(buf, sizeof(buf));
	ASSERT(n > 0);
	check_all_bit_flips(buf, n);
	n = vote_frame(buf, sizeof(buf));
	ASSERT(n > 0);
	check_all_bit_flips(buf, n);

	struct keel_rand r;
	keel_rand_seed(&r, test_seed(2));
	static struct sample s;
	for (int i = 0; i < 3; i++) {
		make_sample(&r, &s, RAFT_MSG_APPEND, 4);
		ASSERT(peer_encode(&s.m, CLUSTER, buf, sizeof(buf), &n) == 0);
		check_all_bit_flips(buf, n);
	}
}

TEST(every_truncation_is_truncated)
{
	uint8_t buf[BUF_CAP];
	size_t n = append_frame(buf, sizeof(buf));
	ASSERT(n > 0);
	struct peer_limits lim;
	limits(&lim);
	struct raft_msg m;
	struct raft_entry e[MAX_ENTRIES];
	for (size_t len = 0; len < n; len++) {
		/* A copy of exactly len bytes, so ASan sees any overread. */
		uint8_t *p = malloc(len ? len : 1);
		ASSERT(p != NULL);
		memcpy(p, buf, len);
		int rc = peer_decode(p, len, &lim, NULL, &m, e, MAX_ENTRIES);
		EXPECT(rc == KEEL_ERR_TRUNCATED);
		size_t fl = 0;
		int pk = peer_frame_peek(p, len, &lim, &fl);
		if (len < PEER_HEADER_SIZE) {
			EXPECT(pk == KEEL_ERR_TRUNCATED);
		} else {
			/* Header complete: peek knows the whole length. */
			EXPECT(pk == 0);
			EXPECT_EQ_U64(fl, n);
		}
		free(p);
		if (test_failed_now_) {
			fprintf(stderr, "  at len %zu\n", len);
			return;
		}
	}
	EXPECT(decode(buf, n, &m, e, MAX_ENTRIES) == 0);
}

TEST(peek_refuses_garbage_early)
{
	uint8_t buf[BUF_CAP];
	size_t n = vote_frame(buf, sizeof(buf));
	ASSERT(n > 0);
	struct peer_limits lim;
	limits(&lim);
	size_t fl = 0;
	/* "GET " from a Redis client on the peer port: refused at once. */
	EXPECT(peer_frame_peek((const uint8_t *)"GET ", 4, &lim, &fl) ==
	       KEEL_ERR_MAGIC);
	EXPECT(peer_frame_peek((const uint8_t *)"K", 1, &lim, &fl) ==
	       KEEL_ERR_TRUNCATED);
	EXPECT(peer_frame_peek((const uint8_t *)"X", 1, &lim, &fl) ==
	       KEEL_ERR_MAGIC);
	buf[4] = 2; /* version 2, valid CRC: still refused */
	reseal(buf, n);
	EXPECT(peer_frame_peek(buf, 5, &lim, &fl) == KEEL_ERR_VERSION);
	struct raft_msg m;
	EXPECT(decode(buf, n, &m, NULL, 0) == KEEL_ERR_VERSION);
	buf[4] = 0;
	reseal(buf, n);
	EXPECT(decode(buf, n, &m, NULL, 0) == KEEL_ERR_VERSION);
}

TEST(wrong_cluster_is_rejected)
{
	uint8_t buf[BUF_CAP];
	size_t n = vote_frame(buf, sizeof(buf));
	ASSERT(n > 0);
	struct peer_limits lim;
	peer_limits_default(&lim, CLUSTER + 1);
	struct raft_msg m;
	EXPECT(peer_decode(buf, n, &lim, NULL, &m, NULL, 0) ==
	       KEEL_ERR_CLUSTER);
	lim.cluster_id = CLUSTER;
	EXPECT(peer_decode(buf, n, &lim, NULL, &m, NULL, 0) == 0);
}

TEST(unknown_type_is_rejected_with_valid_crc)
{
	static const uint8_t bad[] = {0, 11, 31, 32, 33, 200, 255};
	uint8_t buf[BUF_CAP];
	for (size_t i = 0; i < KEEL_ARRAY_LEN(bad); i++) {
		size_t n = vote_frame(buf, sizeof(buf));
		ASSERT(n > 0);
		buf[5] = bad[i];
		reseal(buf, n);
		struct raft_msg m;
		int rc = decode(buf, n, &m, NULL, 0);
		if (rc != KEEL_ERR_TYPE)
			fprintf(stderr, "  type %u: %s\n", bad[i],
				keel_strerror(rc));
		EXPECT(rc == KEEL_ERR_TYPE);
	}
	/* SNAPSHOT (10) is known, but only to a caller with room for its
	 * membership: peer_decode refuses it before reading the body. */
	{
		size_t n = vote_frame(buf, sizeof(buf));
		buf[5] = RAFT_MSG_SNAPSHOT;
		reseal(buf, n);
		struct raft_msg m;
		EXPECT(decode(buf, n, &m, NULL, 0) == KEEL_ERR_TYPE);
	}
	/* And every other known type passes the same path. */
	for (uint8_t t = 1; t < RAFT_MSG_TYPE_COUNT; t++) {
		if (t == RAFT_MSG_SNAPSHOT)
			continue;
		size_t n = vote_frame(buf, sizeof(buf));
		buf[5] = t;
		reseal(buf, n);
		struct raft_msg m;
		EXPECT(decode(buf, n, &m, NULL, 0) == 0);
		EXPECT_EQ_U64(m.type, t);
	}
}

TEST(oversize_length_refused_before_body)
{
	struct peer_limits lim;
	limits(&lim);
	lim.max_frame_bytes = 1024;
	uint8_t buf[BUF_CAP];
	size_t n = vote_frame(buf, sizeof(buf));
	ASSERT(n > 0);
	size_t fl = 0;
	/* Only the 28 header bytes exist; the body never will. */
	keel_put_u32(buf + 24, 0xFFFFFFFFu);
	EXPECT(peer_frame_peek(buf, PEER_HEADER_SIZE, &lim, &fl) ==
	       KEEL_ERR_TOO_BIG);
	struct raft_msg m;
	EXPECT(peer_decode(buf, PEER_HEADER_SIZE, &lim, NULL, &m, NULL, 0) ==
	       KEEL_ERR_TOO_BIG);
	/* The boundary: exactly max is fine, one more is not. */
	keel_put_u32(buf + 24, 1024 - PEER_MIN_FRAME_SIZE);
	EXPECT(peer_frame_peek(buf, PEER_HEADER_SIZE, &lim, &fl) == 0);
	EXPECT_EQ_U64(fl, 1024);
	keel_put_u32(buf + 24, 1024 - PEER_MIN_FRAME_SIZE + 1);
	EXPECT(peer_frame_peek(buf, PEER_HEADER_SIZE, &lim, &fl) ==
	       KEEL_ERR_TOO_BIG);
	/* The default limit is 64 MiB. */
	limits(&lim);
	EXPECT_EQ_U64(lim.max_frame_bytes, 64u << 20);
	keel_put_u32(buf + 24, (64u << 20) - PEER_MIN_FRAME_SIZE + 1);
	EXPECT(peer_frame_peek(buf, PEER_HEADER_SIZE, &lim, &fl) ==
	       KEEL_ERR_TOO_BIG);
}

TEST(n_entries_beyond_body_is_malformed)
{
	uint8_t buf[BUF_CAP];
	struct raft_msg m;
	struct raft_entry e[MAX_ENTRIES];
	size_t n = append_frame(buf, sizeof(buf));
	ASSERT(n > 0);
	uint8_t *cnt = buf + PEER_HEADER_SIZE + 68;
	ASSERT(keel_get_u32(cnt) == 3);
	/* Huge counts (more than max_entries too): the body cannot hold them,
	 * and that is what must be reported, not a capacity problem. */
	static const uint32_t lies[] = {0xFFFFFFFFu, 0x80000000u, 1000, 17};
	for (size_t i = 0; i < KEEL_ARRAY_LEN(lies); i++) {
		keel_put_u32(cnt, lies[i]);
		reseal(buf, n);
		int rc = decode(buf, n, &m, e, MAX_ENTRIES);
		if (rc != KEEL_ERR_MALFORMED)
			fprintf(stderr, "  n_entries %u: %s\n", lies[i],
				keel_strerror(rc));
		EXPECT(rc == KEEL_ERR_MALFORMED);
	}
	/* A count that the body could hold by headers alone but not with the
	 * data: caught while walking the entries. */
	keel_put_u32(cnt, 4);
	reseal(buf, n);
	EXPECT(decode(buf, n, &m, e, MAX_ENTRIES) == KEEL_ERR_MALFORMED);
	/* Fewer than there are: bytes left over. */
	keel_put_u32(cnt, 2);
	reseal(buf, n);
	EXPECT(decode(buf, n, &m, e, MAX_ENTRIES) == KEEL_ERR_MALFORMED);
	keel_put_u32(cnt, 3);
	reseal(buf, n);
	EXPECT(decode(buf, n, &m, e, MAX_ENTRIES) == 0);
}

TEST(entry_len_beyond_body_is_malformed)
{
	uint8_t buf[BUF_CAP];
	struct raft_msg m;
	struct raft_entry e[MAX_ENTRIES];
	size_t n = append_frame(buf, sizeof(buf));
	ASSERT(n > 0);
	/* Last entry (data 17 bytes) is the final thing in the body. */
	uint8_t *last_len =
		buf + n - PEER_TRAILER_SIZE - 17 - PEER_ENTRY_HEADER_SIZE + 17;
	ASSERT(keel_get_u32(last_len) == 17);
	static const uint32_t lies[] = {18, 0xFFFFFFFFu, 0x7FFFFFFFu, 16};
	for (size_t i = 0; i < KEEL_ARRAY_LEN(lies); i++) {
		keel_put_u32(last_len, lies[i]);
		reseal(buf, n);
		EXPECT(decode(buf, n, &m, e, MAX_ENTRIES) ==
		       KEEL_ERR_MALFORMED);
	}
	/* First entry claiming everything after it. */
	n = append_frame(buf, sizeof(buf));
	uint8_t *first_len = buf + PEER_HEADER_SIZE + PEER_MSG_FIXED_SIZE + 17;
	ASSERT(keel_get_u32(first_len) == 5);
	keel_put_u32(first_len, 0xFFFFFFF0u);
	reseal(buf, n);
	EXPECT(decode(buf, n, &m, e, MAX_ENTRIES) == KEEL_ERR_MALFORMED);
}

TEST(max_entries_exceeded_is_too_big)
{
	uint8_t buf[BUF_CAP];
	struct raft_msg m;
	struct raft_entry e[3];
	size_t n = append_frame(buf, sizeof(buf));
	ASSERT(n > 0);
	EXPECT(decode(buf, n, &m, e, 2) == KEEL_ERR_TOO_BIG);
	EXPECT(decode(buf, n, &m, NULL, 0) == KEEL_ERR_TOO_BIG);
	EXPECT(decode(buf, n, &m, e, 3) == 0);
	EXPECT_EQ_U64(m.n_entries, 3);
}

TEST(reserved_and_impossible_fields_are_malformed)
{
	uint8_t buf[BUF_CAP];
	struct raft_msg m;
	struct raft_entry e[MAX_ENTRIES];
	size_t n;

	/* Header flags are reserved. */
	for (int bit = 0; bit < 16; bit++) {
		n = append_frame(buf, sizeof(buf));
		keel_put_u16(buf + 6, (uint16_t)(1u << bit));
		reseal(buf, n);
		EXPECT(decode(buf, n, &m, e, MAX_ENTRIES) == KEEL_ERR_MALFORMED);
	}
	/* msg_flags bits 2..31 are reserved; 0..1 are reject/transfer. */
	for (int bit = 0; bit < 32; bit++) {
		n = append_frame(buf, sizeof(buf));
		keel_put_u32(buf + PEER_HEADER_SIZE + 64, 1u << bit);
		reseal(buf, n);
		int rc = decode(buf, n, &m, e, MAX_ENTRIES);
		if (bit < 2) {
			EXPECT(rc == 0);
			EXPECT(m.reject == (bit == 0));
			EXPECT(m.transfer == (bit == 1));
		} else {
			EXPECT(rc == KEEL_ERR_MALFORMED);
		}
	}
	/* Sender 0 is "no node". */
	n = append_frame(buf, sizeof(buf));
	keel_put_u64(buf + 16, 0);
	reseal(buf, n);
	EXPECT(decode(buf, n, &m, e, MAX_ENTRIES) == KEEL_ERR_MALFORMED);
	/* Unknown entry type. */
	n = append_frame(buf, sizeof(buf));
	buf[PEER_HEADER_SIZE + PEER_MSG_FIXED_SIZE + 16] = RAFT_ENTRY_CONF + 1;
	reseal(buf, n);
	EXPECT(decode(buf, n, &m, e, MAX_ENTRIES) == KEEL_ERR_MALFORMED);
	/* A body shorter than the fixed fields, for every short length. */
	for (uint32_t bl = 0; bl < PEER_MSG_FIXED_SIZE; bl++) {
		n = vote_frame(buf, sizeof(buf));
		keel_put_u32(buf + 24, bl);
		size_t fl = PEER_MIN_FRAME_SIZE + bl;
		reseal(buf, fl);
		EXPECT(decode(buf, fl, &m, e, MAX_ENTRIES) == KEEL_ERR_MALFORMED);
	}
	/* One stray byte after the last entry. */
	n = append_frame(buf, sizeof(buf));
	keel_put_u32(buf + 24, keel_get_u32(buf + 24) + 1);
	buf[n - PEER_TRAILER_SIZE] = 0;
	reseal(buf, n + 1);
	EXPECT(decode(buf, n + 1, &m, e, MAX_ENTRIES) == KEEL_ERR_MALFORMED);
}

TEST(encode_refuses_what_it_cannot_frame)
{
	uint8_t buf[BUF_CAP];
	size_t n = 0;
	struct raft_msg m = {.type = RAFT_MSG_NONE, .from = 1, .to = 2};
	EXPECT(peer_encode(&m, CLUSTER, buf, sizeof(buf), &n) ==
	       KEEL_ERR_TYPE);
	m.type = RAFT_MSG_TYPE_COUNT;
	EXPECT(peer_encode(&m, CLUSTER, buf, sizeof(buf), &n) ==
	       KEEL_ERR_TYPE);
	m.type = PEER_TYPE_NODE_FIRST;
	EXPECT(peer_encode(&m, CLUSTER, buf, sizeof(buf), &n) ==
	       KEEL_ERR_TYPE);
	m.type = RAFT_MSG_HEARTBEAT;
	m.from = RAFT_NONE;
	EXPECT(peer_encode(&m, CLUSTER, buf, sizeof(buf), &n) ==
	       KEEL_ERR_INVAL);
	m.from = 1;
	size_t want = peer_frame_size(&m);
	EXPECT_EQ_U64(want, PEER_MIN_FRAME_SIZE + PEER_MSG_FIXED_SIZE);
	for (size_t cap = 0; cap < want; cap++)
		EXPECT(peer_encode(&m, CLUSTER, buf, cap, &n) ==
		       KEEL_ERR_TOO_BIG);
	EXPECT(peer_encode(&m, CLUSTER, buf, want, &n) == 0);
	EXPECT_EQ_U64(n, want);
	/* A body over 4 GiB cannot be described by body_len. */
	struct raft_entry big[2] = {
		{.len = 0xFFFFFFFFu, .data = buf},
		{.len = 0xFFFFFFFFu, .data = buf},
	};
	m.type = RAFT_MSG_APPEND;
	m.n_entries = 2;
	m.entries = big;
	EXPECT(peer_encode(&m, CLUSTER, buf, sizeof(buf), &n) ==
	       KEEL_ERR_TOO_BIG);
	EXPECT(peer_frame_size(&m) > 0xFFFFFFFFu || sizeof(size_t) < 8);
}

TEST(type_names)
{
	EXPECT(strcmp(peer_frame_type_name(RAFT_MSG_PREVOTE), "PREVOTE") == 0);
	EXPECT(strcmp(peer_frame_type_name(RAFT_MSG_TIMEOUT_NOW),
		      "TIMEOUT_NOW") == 0);
	EXPECT(strcmp(peer_frame_type_name(RAFT_MSG_SNAPSHOT), "SNAPSHOT") ==
	       0);
	EXPECT(strcmp(peer_frame_type_name(11), "UNKNOWN") == 0);
	EXPECT(strcmp(peer_frame_type_name(0), "UNKNOWN") == 0);
	EXPECT(strcmp(peer_frame_type_name(32), "UNKNOWN") == 0);
	EXPECT(strcmp(peer_frame_type_name(-1), "UNKNOWN") == 0);
}

/* The transport's envelope check: sender and type of a good frame; a
 * flipped bit or another cluster is refused before anything is believed. */
TEST(frame_verify_checks_the_envelope)
{
	struct raft_msg m = {.type = RAFT_MSG_HEARTBEAT, .from = 3, .to = 1,
			     .term = 7, .commit = 2, .context = 9};
	uint8_t buf[256];
	size_t n = 0;
	ASSERT(peer_encode(&m, 42, buf, sizeof(buf), &n) == 0);
	struct peer_limits lim;
	peer_limits_default(&lim, 42);
	uint64_t sender = 0;
	int type = 0;
	EXPECT(peer_frame_verify(buf, n, &lim, &sender, &type) == 0);
	EXPECT_EQ_U64(sender, 3);
	EXPECT(type == RAFT_MSG_HEARTBEAT);
	EXPECT(peer_frame_verify(buf, n - 1, &lim, NULL, NULL) ==
	       KEEL_ERR_TRUNCATED);
	buf[40] ^= 4;
	EXPECT(peer_frame_verify(buf, n, &lim, NULL, NULL) == KEEL_ERR_CORRUPT);
	buf[40] ^= 4;
	peer_limits_default(&lim, 43);
	EXPECT(peer_frame_verify(buf, n, &lim, NULL, NULL) == KEEL_ERR_CLUSTER);
}

/* ---- SNAPSHOT (type 10, docs/peer-protocol.md §4.4) ---------------------- */

/* The SNAPSHOT example of the document: node 1 to node 3, term 5,
 * snapshot (term 4, index 100), commit 120, voters (1 2 3), learner 9. */
static size_t snapshot_frame(uint8_t *buf, size_t cap)
{
	static const struct raft_config_members conf = {
		.n_voters = 3, .voters = {1, 2, 3},
		.n_learners = 1, .learners = {9}};
	struct raft_msg m = {.type = RAFT_MSG_SNAPSHOT, .from = 1, .to = 3,
			     .term = 5, .log_term = 4, .index = 100,
			     .commit = 120, .conf = &conf};
	size_t n = 0;
	if (peer_encode(&m, CLUSTER, buf, cap, &n) != 0)
		return 0;
	return n;
}

static int decode_snap(const uint8_t *buf, size_t len, struct raft_msg *m,
		       struct raft_config_members *conf)
{
	struct peer_limits lim;
	limits(&lim);
	return peer_decode_msg(buf, len, &lim, NULL, m, NULL, 0, conf);
}

TEST(golden_snapshot_frame_matches_document)
{
	uint8_t buf[256];
	size_t n = snapshot_frame(buf, sizeof(buf));
	/* 72 fixed + 8 counts + 4 ids * 8 = 112 body bytes. */
	ASSERT(n == PEER_MIN_FRAME_SIZE + 112);
	EXPECT(buf[5] == 10);
	EXPECT_EQ_U64(keel_get_u32(buf + 24), 112);
	const uint8_t *b = buf + PEER_HEADER_SIZE;
	EXPECT_EQ_U64(keel_get_u64(b + 16), 4);   /* log_term */
	EXPECT_EQ_U64(keel_get_u64(b + 24), 100); /* index */
	EXPECT_EQ_U64(keel_get_u64(b + 32), 120); /* commit */
	EXPECT_EQ_U64(keel_get_u32(b + 68), 0);   /* n_entries */
	EXPECT_EQ_U64(keel_get_u32(b + 72), 3);   /* n_voters */
	EXPECT_EQ_U64(keel_get_u32(b + 76), 1);   /* n_learners */
	EXPECT_EQ_U64(keel_get_u64(b + 80), 1);
	EXPECT_EQ_U64(keel_get_u64(b + 88), 2);
	EXPECT_EQ_U64(keel_get_u64(b + 96), 3);
	EXPECT_EQ_U64(keel_get_u64(b + 104), 9);
	struct raft_msg m;
	struct raft_config_members conf;
	ASSERT(decode_snap(buf, n, &m, &conf) == 0);
	EXPECT(m.conf == &conf);
	EXPECT_EQ_U64(m.index, 100);
	EXPECT_EQ_U64(m.log_term, 4);
	EXPECT_EQ_U64(conf.n_voters, 3);
	EXPECT_EQ_U64(conf.learners[0], 9);
}

TEST(snapshot_membership_is_validated)
{
	uint8_t buf[BUF_CAP];
	struct raft_msg m;
	struct raft_config_members conf;
	uint8_t *b = buf + PEER_HEADER_SIZE;
	size_t n;

	/* Entries in a snapshot (with the body grown to hold one). */
	n = snapshot_frame(buf, sizeof(buf));
	keel_put_u32(b + 68, 1);
	reseal(buf, n);
	EXPECT(decode_snap(buf, n, &m, &conf) == KEEL_ERR_MALFORMED);
	/* No voter. */
	n = snapshot_frame(buf, sizeof(buf));
	keel_put_u32(b + 72, 0);
	keel_put_u32(b + 76, 4);
	reseal(buf, n);
	EXPECT(decode_snap(buf, n, &m, &conf) == KEEL_ERR_MALFORMED);
	/* Counts that lie about the bytes, or exceed RAFT_MAX_VOTERS, or
	 * would wrap a 32-bit sum. */
	static const uint32_t lies[][2] = {
		{3, 0}, {3, 2}, {4, 1}, {17, 0}, {1, 16},
		{0xFFFFFFFFu, 5}, {2, 0xFFFFFFFFu}};
	for (size_t i = 0; i < KEEL_ARRAY_LEN(lies); i++) {
		n = snapshot_frame(buf, sizeof(buf));
		keel_put_u32(b + 72, lies[i][0]);
		keel_put_u32(b + 76, lies[i][1]);
		reseal(buf, n);
		EXPECT(decode_snap(buf, n, &m, &conf) == KEEL_ERR_MALFORMED);
	}
	/* An id 0, a voter twice, a learner that is also a voter. */
	static const struct {
		size_t at;
		uint64_t id;
	} ids[] = {{80, 0}, {88, 1}, {104, 0}, {104, 2}};
	for (size_t i = 0; i < KEEL_ARRAY_LEN(ids); i++) {
		n = snapshot_frame(buf, sizeof(buf));
		keel_put_u64(b + ids[i].at, ids[i].id);
		reseal(buf, n);
		EXPECT(decode_snap(buf, n, &m, &conf) == KEEL_ERR_MALFORMED);
	}
	/* The membership section cut short, or a stray byte after it. */
	for (uint32_t cut = 1; cut <= 40; cut++) {
		n = snapshot_frame(buf, sizeof(buf));
		uint32_t bl = keel_get_u32(buf + 24) - cut;
		keel_put_u32(buf + 24, bl);
		size_t fl = PEER_MIN_FRAME_SIZE + bl;
		reseal(buf, fl);
		EXPECT(decode_snap(buf, fl, &m, &conf) == KEEL_ERR_MALFORMED);
	}
	n = snapshot_frame(buf, sizeof(buf));
	keel_put_u32(buf + 24, keel_get_u32(buf + 24) + 1);
	buf[n - PEER_TRAILER_SIZE] = 0;
	reseal(buf, n + 1);
	EXPECT(decode_snap(buf, n + 1, &m, &conf) == KEEL_ERR_MALFORMED);
	/* The untouched frame still decodes: the edits were the cause. */
	n = snapshot_frame(buf, sizeof(buf));
	EXPECT(decode_snap(buf, n, &m, &conf) == 0);
}

TEST(snapshot_encode_needs_a_membership)
{
	uint8_t buf[BUF_CAP];
	size_t n = 0;
	struct raft_config_members conf = {.n_voters = 1, .voters = {1}};
	struct raft_msg m = {.type = RAFT_MSG_SNAPSHOT, .from = 1, .to = 2,
			     .term = 2, .log_term = 1, .index = 5};
	EXPECT(peer_encode(&m, CLUSTER, buf, sizeof(buf), &n) ==
	       KEEL_ERR_INVAL); /* conf NULL */
	m.conf = &conf;
	conf.n_voters = 0;
	EXPECT(peer_encode(&m, CLUSTER, buf, sizeof(buf), &n) ==
	       KEEL_ERR_INVAL);
	conf.n_voters = 1;
	conf.n_learners = RAFT_MAX_VOTERS;
	EXPECT(peer_encode(&m, CLUSTER, buf, sizeof(buf), &n) ==
	       KEEL_ERR_INVAL);
	conf.n_learners = 0;
	struct raft_entry e = {.term = 1, .index = 6};
	m.n_entries = 1;
	m.entries = &e;
	EXPECT(peer_encode(&m, CLUSTER, buf, sizeof(buf), &n) ==
	       KEEL_ERR_INVAL);
	m.n_entries = 0;
	m.entries = NULL;
	EXPECT(peer_encode(&m, CLUSTER, buf, sizeof(buf), &n) == 0);
	EXPECT_EQ_U64(n, PEER_MIN_FRAME_SIZE + PEER_MSG_FIXED_SIZE + 8 + 8);
	/* Every single-bit flip of a snapshot frame is refused too. */
	struct raft_msg got;
	struct raft_config_members gc;
	for (size_t byte = PEER_HEADER_SIZE; byte < n; byte++) {
		for (int bit = 0; bit < 8; bit++) {
			buf[byte] ^= (uint8_t)(1u << bit);
			EXPECT(decode_snap(buf, n, &got, &gc) ==
			       KEEL_ERR_CORRUPT);
			buf[byte] ^= (uint8_t)(1u << bit);
		}
	}
	EXPECT(decode_snap(buf, n, &got, &gc) == 0);
}

/* FWD_READ_OK (docs/peer-protocol.md 8.5), byte by byte: boot, seq, the
 * read point, and the leader's wall clock the follower judges the read
 * at. Exactly 32 bytes; the 24-byte body of the first layout (no time) is
 * malformed, so a read can never be served without the leader's time. */
TEST(golden_fwd_read_ok_body_matches_document)
{
	struct node_fwd f = {.type = PEER_TYPE_FWD_READ_OK,
			     .boot = 0x0807060504030201ull,
			     .seq = 0x1817161514131211ull,
			     .index = 0x2827262524232221ull,
			     .ms = 0x3837363534333231ull};
	static const uint8_t want[32] = {
		0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, /* boot */
		0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, /* seq */
		0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, /* index */
		0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38, /* ms */
	};
	ASSERT(NODE_FWD_READ_OK_SIZE == 32);
	ASSERT(node_fwd_size(&f) == sizeof(want));
	uint8_t buf[40];
	memset(buf, 0xee, sizeof(buf));
	node_fwd_encode(&f, buf);
	EXPECT(memcmp(buf, want, sizeof(want)) == 0);
	EXPECT(buf[32] == 0xee); /* nothing written past the body */
	struct node_fwd g;
	ASSERT(node_fwd_decode(PEER_TYPE_FWD_READ_OK, want, sizeof(want), &g) ==
	       0);
	EXPECT_EQ_U64(g.boot, f.boot);
	EXPECT_EQ_U64(g.seq, f.seq);
	EXPECT_EQ_U64(g.index, f.index);
	EXPECT_EQ_U64(g.ms, f.ms);
	EXPECT(node_fwd_decode(PEER_TYPE_FWD_READ_OK, want, 24, &g) ==
	       KEEL_ERR_MALFORMED);
	EXPECT(node_fwd_decode(PEER_TYPE_FWD_READ_OK, buf, 33, &g) ==
	       KEEL_ERR_MALFORMED);
}
