/*
 * test_session.c -- the exactly-once session table (src/node/session.c):
 * run / duplicate / too old / unknown verdicts, expiry by the table's own
 * leader clock, the bounds, and the snapshot encoding.
 */
#include "node/session.h"
#include "test.h"

#include "keel/common.h"

static const uint8_t *R;
static size_t RL;
static uint64_t H;

static int check(struct session_table *t, uint64_t id, uint64_t seq,
		 uint64_t now)
{
	R = NULL;
	RL = 0;
	H = 0;
	return session_check(t, id, seq, now, &R, &RL, &H);
}

TEST(a_seq_runs_once_and_its_retry_gets_the_recorded_reply)
{
	struct session_table *t = session_table_create(&keel_alloc_libc);
	ASSERT(t);
	ASSERT(session_register(t, 10, 5000, 1000) == 0);
	EXPECT(check(t, 10, 1, 1001) == SESSION_RUN);
	ASSERT(session_record(t, 10, 1, (const uint8_t *)"tape-1", 6) == 0);
	EXPECT(check(t, 10, 1, 1002) == SESSION_DUP);
	EXPECT(RL == 6 && R && !memcmp(R, "tape-1", 6));
	/* another seq is not a duplicate; gaps and any order are fine */
	EXPECT(check(t, 10, 3, 1003) == SESSION_RUN);
	ASSERT(session_record(t, 10, 3, (const uint8_t *)"t3", 2) == 0);
	EXPECT(check(t, 10, 2, 1004) == SESSION_RUN);
	/* an unknown session: nothing runs */
	EXPECT(check(t, 11, 1, 1005) == SESSION_NONE);
	session_table_destroy(t);
}

TEST(seqs_below_the_window_are_old_never_run_again)
{
	struct session_table *t = session_table_create(&keel_alloc_libc);
	ASSERT(session_register(t, 1, 60000, 1) == 0);
	for (uint64_t s = 1; s <= SESSION_WINDOW + 5; s++) {
		ASSERT(check(t, 1, s, 2) == SESSION_RUN);
		ASSERT(session_record(t, 1, s, (const uint8_t *)"x", 1) == 0);
	}
	/* high = W + 5: seqs <= 5 are outside the window */
	EXPECT(check(t, 1, 5, 3) == SESSION_OLD);
	EXPECT(H == SESSION_WINDOW + 5);
	EXPECT(check(t, 1, 6, 3) == SESSION_DUP);
	EXPECT(check(t, 1, SESSION_WINDOW + 5, 3) == SESSION_DUP);
	session_table_destroy(t);
}

TEST(sessions_expire_by_the_largest_stamp_seen_not_a_lagging_clock)
{
	struct session_table *t = session_table_create(&keel_alloc_libc);
	ASSERT(session_register(t, 1, 1000, 10000) == 0);
	ASSERT(session_register(t, 2, 1000, 10000) == 0);
	/* activity keeps session 1 alive */
	EXPECT(session_keepalive(t, 1, 10900) == 0);
	EXPECT(check(t, 1, 1, 11800) == SESSION_RUN);
	/* session 2 was idle for 1800 ms > ttl: gone, and stays gone */
	EXPECT(check(t, 2, 1, 11800) == SESSION_NONE);
	EXPECT(session_count(t) == 1);
	/* a stamp from a leader whose clock is behind does not turn the
	 * table's clock back: session 1 (last 11800) at clock 13000 expired */
	ASSERT(session_register(t, 3, 1000, 13000) == 0);
	EXPECT(session_keepalive(t, 1, 5000) == KEEL_ERR_NOT_FOUND);
	EXPECT(session_clock(t) == 13000);
	/* exactly ttl idle is still alive */
	EXPECT(session_keepalive(t, 3, 14000) == 0);
	EXPECT(session_close(t, 3) == 0);
	EXPECT(session_close(t, 3) == KEEL_ERR_NOT_FOUND);
	session_table_destroy(t);
}

TEST(the_table_is_bounded_and_purges_expired_sessions_when_full)
{
	struct session_table *t = session_table_create(&keel_alloc_libc);
	for (uint64_t i = 1; i <= SESSION_MAX; i++)
		ASSERT(session_register(t, i, 1000, 100) == 0);
	EXPECT(session_register(t, SESSION_MAX + 1, 1000, 100) ==
	       KEEL_ERR_BUSY);
	EXPECT(session_register(t, 5, 1000, 100) == KEEL_ERR_EXISTS);
	/* keep one alive, let the rest expire: a register purges them */
	EXPECT(session_keepalive(t, 7, 900) == 0);
	EXPECT(session_register(t, SESSION_MAX + 1, 1000, 1200) == 0);
	EXPECT(session_count(t) == 2);
	EXPECT(check(t, 7, 1, 1200) == SESSION_RUN);
	session_table_destroy(t);
}

TEST(reply_bytes_stay_within_the_budget_oldest_dropped_first)
{
	struct session_table *t = session_table_create(&keel_alloc_libc);
	ASSERT(session_register(t, 1, 60000, 1) == 0);
	static uint8_t big[SESSION_REPLY_BUDGET / 2 + 1];
	memset(big, 'b', sizeof(big));
	ASSERT(check(t, 1, 1, 2) == SESSION_RUN);
	ASSERT(session_record(t, 1, 1, big, sizeof(big)) == 0);
	ASSERT(check(t, 1, 2, 2) == SESSION_RUN);
	ASSERT(session_record(t, 1, 2, big, sizeof(big)) == 0);
	/* seq 1's reply was dropped to fit seq 2's; seq 1 still ran */
	EXPECT(check(t, 1, 1, 3) == SESSION_DUP && R == NULL);
	EXPECT(check(t, 1, 2, 3) == SESSION_DUP && RL == sizeof(big));
	/* a reply over the budget is never kept */
	static uint8_t huge[SESSION_REPLY_BUDGET + 1];
	ASSERT(check(t, 1, 3, 4) == SESSION_RUN);
	ASSERT(session_record(t, 1, 3, huge, sizeof(huge)) == 0);
	EXPECT(check(t, 1, 3, 5) == SESSION_DUP && R == NULL);
	session_table_destroy(t);
}

static struct session_table *sample(uint64_t salt)
{
	struct session_table *t = session_table_create(&keel_alloc_libc);
	for (uint64_t id = 3; id < 40; id += 3) {
		if (session_register(t, id * 7 + salt, 2000 + id, 50 + id))
			abort();
		for (uint64_t s = 1; s < id % 9 + 2; s++) {
			if (check(t, id * 7 + salt, s * 5, 60 + s) !=
			    SESSION_RUN)
				abort();
			uint8_t r[8] = {(uint8_t)id, (uint8_t)s, 1, 2, 3};
			if (session_record(t, id * 7 + salt, s * 5, r,
					   (size_t)(s % 6)))
				abort();
		}
	}
	return t;
}

TEST(encoding_round_trips_and_equal_tables_encode_alike)
{
	struct session_table *a = sample(0), *b = sample(0), *c = sample(1);
	uint64_t n = session_encoded_size(a);
	uint8_t *ea = malloc(n), *eb = malloc(n);
	session_encode(a, ea);
	session_encode(b, eb);
	EXPECT(session_encoded_size(b) == n && !memcmp(ea, eb, n));
	EXPECT(session_digest(a) == session_digest(b));
	EXPECT(session_digest(a) != session_digest(c));
	struct session_table *d = NULL;
	ASSERT(session_decode(&keel_alloc_libc, ea, n, &d) == 0);
	EXPECT(session_digest(d) == session_digest(a));
	EXPECT(session_encoded_size(d) == n);
	/* the decoded table behaves as the original: a recorded seq is a
	 * duplicate with the same reply */
	EXPECT(check(d, 21, 5, 100) == SESSION_DUP && RL == 1);
	EXPECT(check(d, 21, 6, 100) == SESSION_RUN);
	session_table_destroy(a);
	session_table_destroy(b);
	session_table_destroy(c);
	session_table_destroy(d);
	free(ea);
	free(eb);
}

TEST(decoding_refuses_every_broken_rule)
{
	struct session_table *a = sample(0);
	uint64_t n = session_encoded_size(a);
	uint8_t *e = malloc(n + 1), *m = malloc(n + 1);
	session_encode(a, e);
	struct session_table *d = NULL;
#define BAD(stmt, len, want)                                                  \
	do {                                                                  \
		memcpy(m, e, n);                                              \
		stmt;                                                         \
		EXPECT(session_decode(&keel_alloc_libc, m, (len), &d) ==     \
		       (want));                                               \
	} while (0)
	BAD((void)0, n, 0);
	session_table_destroy(d);
	BAD(keel_put_u32(m, 2), n, KEEL_ERR_VERSION);
	BAD((void)0, n - 1, KEEL_ERR_MALFORMED);       /* truncated */
	BAD(m[n] = 0, n + 1, KEEL_ERR_MALFORMED);      /* trailing */
	BAD(keel_put_u32(m + 4, SESSION_MAX + 1), n, KEEL_ERR_MALFORMED);
	BAD(keel_put_u64(m + 16, 0), n, KEEL_ERR_MALFORMED);     /* id 0 */
	BAD(keel_put_u64(m + 24, 1), n, KEEL_ERR_MALFORMED);     /* ttl */
	BAD(keel_put_u64(m + 32, ~0ull), n, KEEL_ERR_MALFORMED); /* last */
	BAD(keel_put_u32(m + 48, SESSION_WINDOW + 1), n, KEEL_ERR_MALFORMED);
	/* the first slot: seq 0, above high, kept 2 */
	BAD(keel_put_u64(m + 52, 0), n, KEEL_ERR_MALFORMED);
	BAD(keel_put_u64(m + 52, 1000), n, KEEL_ERR_MALFORMED);
	BAD(m[60] = 2, n, KEEL_ERR_MALFORMED);
	EXPECT(session_decode(&keel_alloc_libc, m, SESSION_ENCODED_MAX + 1,
			      &d) == KEEL_ERR_TOO_BIG);
#undef BAD
	free(e);
	free(m);
	session_table_destroy(a);
}
