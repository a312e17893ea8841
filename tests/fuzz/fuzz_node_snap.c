/*
 * fuzz_node_snap.c -- libFuzzer harness for the node snapshot payload
 * reader (src/node/nodesnap.h): bytes a leader streams to a follower, or a
 * snapshot file holds at start-up.
 *
 * The first input byte seeds the split pattern; the rest is the payload.
 * Beyond "no crash, no out-of-bounds read" it checks that the verdict does
 * not depend on how the bytes are split (whole vs. random pieces), that an
 * accepted payload obeys every rule the node relies on (P = 10436 + L, the
 * dedup window valid, the kv part exactly L bytes), and that it is
 * canonical: the writer, given the decoded head and the same kv bytes,
 * reproduces the input byte for byte. The kv part also goes through
 * kv_snapshot_decode, which must not crash on it.
 */
#include <stdlib.h>
#include <string.h>

#include "keel/kv.h"
#include "node/nodesnap.h"
#include "node/session.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(bool ok)
{
	if (!ok)
		abort();
}

struct sink {
	uint8_t *buf;
	size_t len, cap;
};

static int sink_feed(void *ctx, const uint8_t *b, size_t len)
{
	struct sink *s = ctx;
	check(s->len + len <= s->cap); /* never more than was fed */
	memcpy(s->buf + s->len, b, len);
	s->len += len;
	return 0;
}

struct source {
	const uint8_t *buf;
	size_t len, pos;
};

static bool src_next(void *ctx, uint8_t *buf, size_t cap, size_t *n)
{
	struct source *s = ctx;
	size_t k = s->len - s->pos < cap ? s->len - s->pos : cap;
	memcpy(buf, s->buf + s->pos, k);
	s->pos += k;
	*n = k;
	return s->pos < s->len;
}

static int run(const uint8_t *p, size_t len, uint8_t split, struct sink *sk,
	       struct sink *ss, struct node_snap_head *h)
{
	static struct node_snap_reader r;
	struct node_snap_expect want = {.max_bytes = 1u << 24};
	node_snap_reader_init(&r, &want, sink_feed, sk, sink_feed, ss);
	struct keel_rand rnd;
	keel_rand_seed(&rnd, split);
	size_t pos = 0;
	int rv = 0;
	while (pos < len && !rv) {
		size_t n = split ? 1 + (size_t)keel_rand_below(&rnd, 12000) : len;
		if (n > len - pos)
			n = len - pos;
		rv = node_snap_reader_feed(&r, p + pos, n);
		pos += n;
	}
	if (!rv)
		rv = node_snap_reader_finish(&r);
	if (!rv)
		*h = *node_snap_reader_head(&r);
	return rv;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > (1u << 20))
		return 0;
	const uint8_t *p = data + 1;
	size_t len = size - 1;
	struct sink a = {malloc(len + 1), 0, len}, b = {malloc(len + 1), 0, len};
	struct sink sa = {malloc(len + 1), 0, len}, sb = {malloc(len + 1), 0, len};
	check(a.buf && b.buf && sa.buf && sb.buf);
	static struct node_snap_head ha, hb;
	int ra = run(p, len, 0, &a, &sa, &ha);
	int rb = run(p, len, data[0] ? data[0] : 1, &b, &sb, &hb);
	check(ra == rb);
	if (ra == 0) {
		check(len == node_snap_total(ha.kv_len, ha.sess_len));
		check(a.len == ha.kv_len && sa.len == ha.sess_len);
		check(sb.len == sa.len && memcmp(sa.buf, sb.buf, sa.len) == 0);
		check(b.len == a.len && memcmp(a.buf, b.buf, a.len) == 0);
		check(ha.index == hb.index && ha.term == hb.term);
		check(ha.members.n_voters == hb.members.n_voters);
		check(ha.members.n_learners == hb.members.n_learners);
		check(memcmp(ha.members.voters, hb.members.voters,
			     sizeof(ha.members.voters)) == 0);
		check(memcmp(ha.dedup, hb.dedup, sizeof(ha.dedup)) == 0);
		check(node_snap_check_dedup(ha.dedup) == 0);
		check(keel_crc32c(0, p, len - 4) == keel_get_u32(p + len - 4));
	}
	if (ra == 0) {
		/* canonical: re-encode */
		static struct node_snap_writer w;
		struct source src = {a.buf, a.len, 0};
		node_snap_writer_init(&w, &ha, src_next, &src, sa.buf);
		uint8_t *again = malloc(len);
		check(again != NULL);
		size_t k = 0, n = 0;
		bool more = true;
		while (more) {
			more = node_snap_writer_next(&w, again + k, 4093, &n);
			k += n;
			check(k <= len);
		}
		check(k == len && memcmp(again, p, len) == 0);
		free(again);
		struct kv *kv = NULL;
		if (kv_snapshot_decode(&keel_alloc_libc, a.buf, a.len, &kv) == 0)
			kv_destroy(kv);
	}
	if (ra == 0 && sa.len) {
		/* the session table part through its own decoder */
		struct session_table *t = NULL;
		if (session_decode(&keel_alloc_libc, sa.buf, sa.len, &t) == 0) {
			check(session_encoded_size(t) == sa.len);
			session_table_destroy(t);
		}
	}
	free(a.buf);
	free(b.buf);
	free(sa.buf);
	free(sb.buf);
	return 0;
}
