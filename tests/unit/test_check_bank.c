/*
 * test_check_bank.c -- tests of the checker's bank model (src/check/bank.c,
 * bank_parse.c): hand-written histories, each planting one violation that
 * must be reported with its kind, op and values (total off, a negative
 * balance, a missing or unknown account, an acknowledged transfer missing
 * from the ledger, a failed one in it, a duplicate, an id nobody invoked,
 * a ledger against real time, a replay going negative, a read of a state
 * no prefix of the ledger produces -- a transfer applied partly -- and
 * reads against real time), valid histories that must pass, parse errors
 * with exact codes and lines, allocation failure at every allocation, and a
 * randomized test: a simulated serializable bank produces histories that
 * must pass, and planted bugs in them must be caught (KEEL_SEED replays).
 */
#include <stdarg.h>

#include "keel/check.h"
#include "test.h"

/* ---- building histories ------------------------------------------------ */

struct hb {
	char *buf;
	size_t n, cap;
};

static void put(struct hb *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void put(struct hb *b, const char *fmt, ...)
{
	for (;;) {
		va_list ap;
		va_start(ap, fmt);
		size_t room = b->cap - b->n;
		int w = vsnprintf(b->buf ? b->buf + b->n : NULL, room, fmt, ap);
		va_end(ap);
		if (w < 0)
			abort();
		if ((size_t)w < room) {
			b->n += (size_t)w;
			return;
		}
		b->cap = b->cap ? b->cap * 2 + (size_t)w : 4096 + (size_t)w;
		b->buf = realloc(b->buf, b->cap);
		if (!b->buf)
			abort();
	}
}

/* "P TYPE transfer FROM TO AMOUNT ID" */
static void tr(struct hb *b, int p, const char *type, const char *from,
	       const char *to, long amount, const char *id)
{
	put(b,
	    "{\"process\":%d,\"type\":\"%s\",\"f\":\"transfer\",\"value\":"
	    "{\"from\":\"%s\",\"to\":\"%s\",\"amount\":%ld,\"id\":\"%s\"}}\n",
	    p, type, from, to, amount, id);
}

static void rd(struct hb *b, int p, const char *type, const char *value)
{
	put(b, "{\"process\":%d,\"type\":\"%s\",\"f\":\"read\"%s%s}\n", p,
	    type, value ? ",\"value\":" : "", value ? value : "");
}

static void ledger(struct hb *b, const char *ids)
{
	put(b, "{\"type\":\"final\",\"f\":\"ledger\",\"value\":\"%s\"}\n", ids);
}

/* Three accounts, total 30, 10 each. */
static void cfg3(struct hb *b, bool initial)
{
	put(b, "{\"type\":\"bank\",\"accounts\":[\"a0\",\"a1\",\"a2\"],"
	       "\"total\":30%s}\n",
	    initial ? ",\"initial\":{\"a0\":10,\"a1\":10,\"a2\":10}" : "");
}

struct outcome {
	int parse_rv, run_rv;
	struct check_parse_error err;
	struct check_bank_result res;
	/* copies of what the tests look at, as the history is closed */
	uint32_t line_of_op[64];
};

static struct outcome *run(const char *text)
{
	static struct outcome oc;
	memset(&oc, 0, sizeof(oc));
	struct check_bank_history h;
	check_bank_init(&h, &keel_alloc_libc);
	oc.parse_rv = check_bank_parse(text, strlen(text), &h, &oc.err);
	if (!oc.parse_rv) {
		for (size_t i = 0; i < h.n_ops && i < 64; i++)
			oc.line_of_op[i] = h.ops[i].call_line;
		oc.run_rv = check_bank_run(&h, &keel_alloc_libc, &oc.res);
	}
	check_bank_close(&h);
	return &oc;
}

/* The first shown violation of kind, or NULL. */
static const struct check_bank_violation *
find(const struct outcome *oc, enum check_bank_kind kind)
{
	for (size_t i = 0; i < oc->res.n_shown; i++)
		if (oc->res.shown[i].kind == kind)
			return &oc->res.shown[i];
	return NULL;
}

/* Parsed and ran; exactly the kinds in want (bitmask) were reported. */
static bool only(const struct outcome *oc, unsigned want)
{
	if (oc->parse_rv || oc->run_rv) {
		fprintf(stderr, "  parse %d (line %u: %s), run %d\n",
			oc->parse_rv, oc->err.line, oc->err.msg, oc->run_rv);
		return false;
	}
	unsigned got = 0;
	for (int k = 0; k < CHECK_BANK_KINDS; k++)
		if (oc->res.n_by_kind[k])
			got |= 1u << k;
	if (got != want)
		fprintf(stderr, "  kinds reported 0x%x, want 0x%x\n", got, want);
	return got == want;
}

#define K(kind) (1u << (CHECK_BANK_##kind))

/* ---- valid histories --------------------------------------------------- */

TEST(valid_history_passes_all_three_checks)
{
	struct hb b = {0};
	cfg3(&b, true);
	tr(&b, 0, "invoke", "a0", "a1", 5, "t1");
	rd(&b, 1, "invoke", NULL);
	tr(&b, 0, "ok", "a0", "a1", 5, "t1");
	/* concurrent with t1: either state is fine */
	rd(&b, 1, "ok", "{\"a0\":10,\"a1\":10,\"a2\":10}");
	tr(&b, 0, "invoke", "a1", "a2", 7, "t2");
	tr(&b, 0, "fail", "a1", "a2", 7, "t2");
	tr(&b, 2, "invoke", "a2", "a0", 3, "t3");
	tr(&b, 2, "info", "a2", "a0", 3, "t3"); /* applied: in the ledger */
	tr(&b, 3, "invoke", "a2", "a1", 1, "t4"); /* never completes, not
						     applied */
	rd(&b, 1, "invoke", NULL);
	rd(&b, 1, "ok", "{\"a2\":7,\"a1\":15,\"a0\":8}"); /* any order */
	rd(&b, 4, "invoke", NULL);
	rd(&b, 4, "fail", NULL);
	rd(&b, 5, "invoke", NULL);
	rd(&b, 5, "info", NULL);
	ledger(&b, "t1,t3,");
	struct outcome *oc = run(b.buf);
	EXPECT(only(oc, 0));
	EXPECT(oc->res.ledger_checked);
	EXPECT(oc->res.consistency_checked);
	EXPECT_EQ_U64(oc->res.n_reads_placed, 2);
	free(b.buf);
}

TEST(valid_without_ledger_or_initial_runs_what_it_can)
{
	struct hb b = {0};
	cfg3(&b, false);
	tr(&b, 0, "invoke", "a0", "a1", 5, "t1");
	tr(&b, 0, "ok", "a0", "a1", 5, "t1");
	rd(&b, 1, "invoke", NULL);
	rd(&b, 1, "ok", "{\"a0\":5,\"a1\":15,\"a2\":10}");
	struct outcome *oc = run(b.buf);
	EXPECT(only(oc, 0));
	EXPECT(!oc->res.ledger_checked);
	EXPECT(!oc->res.consistency_checked);
	ledger(&b, "t1,");
	oc = run(b.buf);
	EXPECT(only(oc, 0));
	EXPECT(oc->res.ledger_checked);
	EXPECT(!oc->res.consistency_checked); /* no initial balances */
	free(b.buf);
}

/* ---- check 1: reads ---------------------------------------------------- */

TEST(read_total_off_is_reported_with_its_sum)
{
	struct hb b = {0};
	cfg3(&b, false);
	rd(&b, 1, "invoke", NULL);
	rd(&b, 1, "ok", "{\"a0\":10,\"a1\":10,\"a2\":9}");
	struct outcome *oc = run(b.buf);
	EXPECT(only(oc, K(READ_TOTAL)));
	const struct check_bank_violation *v = find(oc, CHECK_BANK_READ_TOTAL);
	ASSERT(v);
	EXPECT_EQ_U64(v->value, 29);
	EXPECT_EQ_U64(oc->line_of_op[v->op], 2);
	free(b.buf);
}

TEST(read_negative_balance_is_reported)
{
	struct hb b = {0};
	cfg3(&b, false);
	rd(&b, 1, "invoke", NULL);
	rd(&b, 1, "ok", "{\"a0\":-5,\"a1\":25,\"a2\":10}");
	struct outcome *oc = run(b.buf);
	EXPECT(only(oc, K(READ_NEGATIVE)));
	const struct check_bank_violation *v =
		find(oc, CHECK_BANK_READ_NEGATIVE);
	ASSERT(v);
	EXPECT_EQ_U64(v->account, 0);
	EXPECT(v->value == -5);
	free(b.buf);
}

TEST(read_missing_or_unknown_account_is_reported)
{
	struct hb b = {0};
	cfg3(&b, false);
	rd(&b, 1, "invoke", NULL);
	rd(&b, 1, "ok", "{\"a0\":20,\"a2\":10}");
	struct outcome *oc = run(b.buf);
	EXPECT(only(oc, K(READ_MISSING)));
	const struct check_bank_violation *v =
		find(oc, CHECK_BANK_READ_MISSING);
	ASSERT(v);
	EXPECT_EQ_U64(v->account, 1);
	EXPECT_EQ_U64(v->value, 1);
	free(b.buf);

	memset(&b, 0, sizeof(b));
	cfg3(&b, false);
	rd(&b, 1, "invoke", NULL);
	rd(&b, 1, "ok", "{\"a0\":10,\"a1\":10,\"a2\":10,\"zz\":0}");
	oc = run(b.buf);
	EXPECT(only(oc, K(READ_UNKNOWN)));
	free(b.buf);
}

/* ---- check 2: the ledger ----------------------------------------------- */

TEST(ok_transfer_missing_from_ledger_is_lost)
{
	struct hb b = {0};
	cfg3(&b, true);
	tr(&b, 0, "invoke", "a0", "a1", 5, "t1");
	tr(&b, 0, "ok", "a0", "a1", 5, "t1");
	tr(&b, 1, "invoke", "a0", "a1", 5, "t2");
	tr(&b, 1, "info", "a0", "a1", 5, "t2"); /* info: may be absent */
	ledger(&b, "");
	struct outcome *oc = run(b.buf);
	EXPECT(only(oc, K(LOST)));
	const struct check_bank_violation *v = find(oc, CHECK_BANK_LOST);
	ASSERT(v);
	EXPECT_EQ_U64(v->op, 0);
	free(b.buf);
}

TEST(failed_transfer_in_ledger_is_reported)
{
	struct hb b = {0};
	cfg3(&b, true);
	tr(&b, 0, "invoke", "a0", "a1", 5, "t1");
	tr(&b, 0, "fail", "a0", "a1", 5, "t1");
	ledger(&b, "t1,");
	struct outcome *oc = run(b.buf);
	EXPECT(only(oc, K(FAILED_APPLIED)));
	const struct check_bank_violation *v =
		find(oc, CHECK_BANK_FAILED_APPLIED);
	ASSERT(v);
	EXPECT_EQ_U64(v->pos, 0);
	free(b.buf);
}

TEST(duplicate_execution_is_reported_for_ok_and_info)
{
	struct hb b = {0};
	cfg3(&b, true);
	tr(&b, 0, "invoke", "a0", "a1", 1, "t1");
	tr(&b, 0, "ok", "a0", "a1", 1, "t1");
	tr(&b, 1, "invoke", "a1", "a2", 1, "t2");
	tr(&b, 1, "info", "a1", "a2", 1, "t2");
	ledger(&b, "t1,t2,t1,t2,t1,");
	struct outcome *oc = run(b.buf);
	EXPECT(only(oc, K(DUPLICATE)));
	EXPECT_EQ_U64(oc->res.n_by_kind[CHECK_BANK_DUPLICATE], 2);
	const struct check_bank_violation *v = find(oc, CHECK_BANK_DUPLICATE);
	ASSERT(v);
	EXPECT_EQ_U64(v->op, 0);
	EXPECT_EQ_U64(v->value, 3);
	EXPECT_EQ_U64(v->pos, 0);
	EXPECT_EQ_U64(v->pos2, 2);
	free(b.buf);
}

TEST(ledger_id_never_invoked_is_reported_and_skips_replay)
{
	struct hb b = {0};
	cfg3(&b, true);
	tr(&b, 0, "invoke", "a0", "a1", 1, "t1");
	tr(&b, 0, "ok", "a0", "a1", 1, "t1");
	ledger(&b, "t1,t9,,t1"); /* t9, an empty id, and a torn "t1" */
	struct outcome *oc = run(b.buf);
	EXPECT(only(oc, K(NEVER_INVOKED) | K(DUPLICATE)));
	EXPECT_EQ_U64(oc->res.n_by_kind[CHECK_BANK_NEVER_INVOKED], 2);
	const struct check_bank_violation *v =
		find(oc, CHECK_BANK_NEVER_INVOKED);
	ASSERT(v);
	EXPECT_EQ_U64(v->pos, 1);
	EXPECT(!oc->res.consistency_checked);
	free(b.buf);
}

TEST(ledger_order_against_real_time_is_reported)
{
	struct hb b = {0};
	cfg3(&b, true);
	tr(&b, 0, "invoke", "a0", "a1", 1, "t1");
	tr(&b, 0, "ok", "a0", "a1", 1, "t1");
	tr(&b, 1, "invoke", "a1", "a2", 1, "t2");
	tr(&b, 1, "ok", "a1", "a2", 1, "t2");
	ledger(&b, "t2,t1,");
	struct outcome *oc = run(b.buf);
	EXPECT(only(oc, K(LEDGER_ORDER)));
	const struct check_bank_violation *v =
		find(oc, CHECK_BANK_LEDGER_ORDER);
	ASSERT(v);
	EXPECT_EQ_U64(v->op, 1);    /* t2, applied first */
	EXPECT_EQ_U64(v->other, 0); /* t1, completed before t2 began */
	EXPECT_EQ_U64(v->pos, 0);
	EXPECT_EQ_U64(v->pos2, 1);
	free(b.buf);
}

/* ---- check 3: replay and prefixes -------------------------------------- */

TEST(replay_below_zero_is_reported)
{
	struct hb b = {0};
	put(&b, "{\"type\":\"bank\",\"accounts\":[\"a0\",\"a1\"],\"total\":10,"
		"\"initial\":{\"a0\":2,\"a1\":8}}\n");
	tr(&b, 0, "invoke", "a0", "a1", 5, "t1");
	tr(&b, 0, "ok", "a0", "a1", 5, "t1");
	ledger(&b, "t1,");
	struct outcome *oc = run(b.buf);
	EXPECT(only(oc, K(REPLAY_NEGATIVE)));
	const struct check_bank_violation *v =
		find(oc, CHECK_BANK_REPLAY_NEGATIVE);
	ASSERT(v);
	EXPECT_EQ_U64(v->account, 0);
	EXPECT(v->value == -3);
	free(b.buf);
}

TEST(partly_applied_transfer_matches_no_prefix)
{
	struct hb b = {0};
	cfg3(&b, true);
	tr(&b, 0, "invoke", "a0", "a1", 5, "t1");
	rd(&b, 1, "invoke", NULL);
	rd(&b, 1, "ok", "{\"a0\":5,\"a1\":10,\"a2\":10}"); /* debit only */
	tr(&b, 0, "ok", "a0", "a1", 5, "t1");
	ledger(&b, "t1,");
	struct outcome *oc = run(b.buf);
	EXPECT(only(oc, K(READ_TOTAL) | K(NO_PREFIX)));
	const struct check_bank_violation *v = find(oc, CHECK_BANK_NO_PREFIX);
	ASSERT(v);
	EXPECT_EQ_U64(v->lo, 0);
	EXPECT_EQ_U64(v->hi, 1);
	EXPECT_EQ_U64(v->nearest, 0);
	EXPECT_EQ_U64(v->n_diff, 1);
	EXPECT_EQ_U64(v->diff_account[0], 0);
	EXPECT(v->diff_state[0] == 10);
	free(b.buf);
}

TEST(state_no_serial_order_produces_is_caught_even_with_the_right_total)
{
	/* t1 then t2 in the ledger; the read saw t2 without t1. */
	struct hb b = {0};
	cfg3(&b, true);
	tr(&b, 0, "invoke", "a0", "a1", 5, "t1");
	tr(&b, 1, "invoke", "a1", "a2", 3, "t2");
	rd(&b, 2, "invoke", NULL);
	rd(&b, 2, "ok", "{\"a0\":10,\"a1\":7,\"a2\":13}");
	tr(&b, 0, "ok", "a0", "a1", 5, "t1");
	tr(&b, 1, "ok", "a1", "a2", 3, "t2");
	ledger(&b, "t1,t2,");
	struct outcome *oc = run(b.buf);
	EXPECT(only(oc, K(NO_PREFIX)));
	/* The same read is fine when the ledger says t2 came first. */
	b.n = 0;
	cfg3(&b, true);
	tr(&b, 0, "invoke", "a0", "a1", 5, "t1");
	tr(&b, 1, "invoke", "a1", "a2", 3, "t2");
	rd(&b, 2, "invoke", NULL);
	rd(&b, 2, "ok", "{\"a0\":10,\"a1\":7,\"a2\":13}");
	tr(&b, 0, "ok", "a0", "a1", 5, "t1");
	tr(&b, 1, "ok", "a1", "a2", 3, "t2");
	ledger(&b, "t2,t1,");
	oc = run(b.buf);
	EXPECT(only(oc, 0));
	free(b.buf);
}

TEST(stale_read_after_an_acknowledged_transfer_violates_real_time)
{
	struct hb b = {0};
	cfg3(&b, true);
	tr(&b, 0, "invoke", "a0", "a1", 5, "t1");
	tr(&b, 0, "ok", "a0", "a1", 5, "t1");
	rd(&b, 1, "invoke", NULL);
	rd(&b, 1, "ok", "{\"a0\":10,\"a1\":10,\"a2\":10}");
	ledger(&b, "t1,");
	struct outcome *oc = run(b.buf);
	EXPECT(only(oc, K(REAL_TIME)));
	const struct check_bank_violation *v = find(oc, CHECK_BANK_REAL_TIME);
	ASSERT(v);
	EXPECT_EQ_U64(v->op, 1);
	EXPECT_EQ_U64(v->lo, 1);
	EXPECT_EQ_U64(v->lo_op, 0);
	EXPECT_EQ_U64(v->n_matches, 1);
	EXPECT(v->has_below && v->below == 0);
	free(b.buf);
}

TEST(read_of_a_transfer_invoked_after_it_completed_violates_real_time)
{
	struct hb b = {0};
	cfg3(&b, true);
	rd(&b, 1, "invoke", NULL);
	rd(&b, 1, "ok", "{\"a0\":5,\"a1\":15,\"a2\":10}"); /* the future */
	tr(&b, 0, "invoke", "a0", "a1", 5, "t1");
	tr(&b, 0, "ok", "a0", "a1", 5, "t1");
	ledger(&b, "t1,");
	struct outcome *oc = run(b.buf);
	EXPECT(only(oc, K(REAL_TIME)));
	const struct check_bank_violation *v = find(oc, CHECK_BANK_REAL_TIME);
	ASSERT(v);
	EXPECT_EQ_U64(v->hi, 0);
	EXPECT_EQ_U64(v->hi_op, 1);
	EXPECT(v->has_above && v->above == 1);
	free(b.buf);
}

TEST(reads_going_back_in_time_violate_real_time)
{
	/* t1 is concurrent with both reads, so each alone is fine, but A
	 * saw t1 and completed before B began, and B did not see it. */
	struct hb b = {0};
	cfg3(&b, true);
	tr(&b, 0, "invoke", "a0", "a1", 5, "t1");
	rd(&b, 1, "invoke", NULL);
	rd(&b, 1, "ok", "{\"a0\":5,\"a1\":15,\"a2\":10}");
	rd(&b, 2, "invoke", NULL);
	rd(&b, 2, "ok", "{\"a0\":10,\"a1\":10,\"a2\":10}");
	tr(&b, 0, "ok", "a0", "a1", 5, "t1");
	ledger(&b, "t1,");
	struct outcome *oc = run(b.buf);
	EXPECT(only(oc, K(REAL_TIME)));
	const struct check_bank_violation *v = find(oc, CHECK_BANK_REAL_TIME);
	ASSERT(v);
	EXPECT_EQ_U64(v->op, 2);
	EXPECT_EQ_U64(v->floor, 1);
	EXPECT_EQ_U64(v->floor_read, 1);
	/* Concurrent reads may see either order. */
	b.n = 0;
	cfg3(&b, true);
	tr(&b, 0, "invoke", "a0", "a1", 5, "t1");
	rd(&b, 1, "invoke", NULL);
	rd(&b, 2, "invoke", NULL);
	rd(&b, 1, "ok", "{\"a0\":5,\"a1\":15,\"a2\":10}");
	rd(&b, 2, "ok", "{\"a0\":10,\"a1\":10,\"a2\":10}");
	tr(&b, 0, "ok", "a0", "a1", 5, "t1");
	ledger(&b, "t1,");
	oc = run(b.buf);
	EXPECT(only(oc, 0));
	free(b.buf);
}

TEST(greedy_placement_takes_the_earliest_matching_prefix)
{
	/* t1 and then t2 returns the balances to the start: the first read
	 * matches prefixes 0 and 2; the later read sees prefix 1, which is
	 * only consistent if the first read took 0. */
	struct hb b = {0};
	cfg3(&b, true);
	tr(&b, 0, "invoke", "a0", "a1", 5, "t1");
	tr(&b, 1, "invoke", "a1", "a0", 5, "t2");
	rd(&b, 2, "invoke", NULL);
	rd(&b, 2, "ok", "{\"a0\":10,\"a1\":10,\"a2\":10}");
	rd(&b, 2, "invoke", NULL);
	rd(&b, 2, "ok", "{\"a0\":5,\"a1\":15,\"a2\":10}");
	tr(&b, 0, "ok", "a0", "a1", 5, "t1");
	tr(&b, 1, "ok", "a1", "a0", 5, "t2");
	ledger(&b, "t1,t2,");
	struct outcome *oc = run(b.buf);
	EXPECT(only(oc, 0));
	EXPECT_EQ_U64(oc->res.n_reads_placed, 2);
	free(b.buf);
}

/* ---- parser ------------------------------------------------------------ */

struct parse_case {
	const char *name;
	const char *text;
	int rv;
	uint32_t line;
};

#define CFG "{\"type\":\"bank\",\"accounts\":[\"a0\",\"a1\"],\"total\":10}\n"
#define T1 "\"value\":{\"from\":\"a0\",\"to\":\"a1\",\"amount\":1,\"id\":\"t1\"}"

static const struct parse_case parse_cases[] = {
	{"empty", "", KEEL_ERR_MALFORMED, 0},
	{"event before config",
	 "{\"process\":0,\"type\":\"invoke\",\"f\":\"read\"}\n",
	 KEEL_ERR_MALFORMED, 1},
	{"second config", CFG CFG, KEEL_ERR_MALFORMED, 2},
	{"no accounts", "{\"type\":\"bank\",\"accounts\":[],\"total\":1}",
	 KEEL_ERR_MALFORMED, 1},
	{"account twice",
	 "{\"type\":\"bank\",\"accounts\":[\"a\",\"a\"],\"total\":1}",
	 KEEL_ERR_MALFORMED, 1},
	{"negative total", "{\"type\":\"bank\",\"accounts\":[\"a\"],\"total\":-1}",
	 KEEL_ERR_MALFORMED, 1},
	{"initial off the total",
	 "{\"type\":\"bank\",\"accounts\":[\"a\",\"b\"],\"total\":10,"
	 "\"initial\":{\"a\":5,\"b\":4}}",
	 KEEL_ERR_MALFORMED, 1},
	{"initial missing an account",
	 "{\"type\":\"bank\",\"accounts\":[\"a\",\"b\"],\"total\":10,"
	 "\"initial\":{\"a\":10}}",
	 KEEL_ERR_MALFORMED, 1},
	{"unknown account in a transfer",
	 CFG "{\"process\":0,\"type\":\"invoke\",\"f\":\"transfer\",\"value\":"
	     "{\"from\":\"a0\",\"to\":\"zz\",\"amount\":1,\"id\":\"t1\"}}\n",
	 KEEL_ERR_MALFORMED, 2},
	{"negative amount",
	 CFG "{\"process\":0,\"type\":\"invoke\",\"f\":\"transfer\",\"value\":"
	     "{\"from\":\"a0\",\"to\":\"a1\",\"amount\":-1,\"id\":\"t1\"}}\n",
	 KEEL_ERR_MALFORMED, 2},
	{"id with a comma",
	 CFG "{\"process\":0,\"type\":\"invoke\",\"f\":\"transfer\",\"value\":"
	     "{\"from\":\"a0\",\"to\":\"a1\",\"amount\":1,\"id\":\"t,1\"}}\n",
	 KEEL_ERR_MALFORMED, 2},
	{"transfer id reused",
	 CFG "{\"process\":0,\"type\":\"invoke\",\"f\":\"transfer\"," T1 "}\n"
	     "{\"process\":0,\"type\":\"ok\",\"f\":\"transfer\"," T1 "}\n"
	     "{\"process\":1,\"type\":\"invoke\",\"f\":\"transfer\"," T1 "}\n",
	 KEEL_ERR_MALFORMED, 4},
	{"completion differs from its invocation",
	 CFG "{\"process\":0,\"type\":\"invoke\",\"f\":\"transfer\"," T1 "}\n"
	     "{\"process\":0,\"type\":\"ok\",\"f\":\"transfer\",\"value\":"
	     "{\"from\":\"a0\",\"to\":\"a1\",\"amount\":2,\"id\":\"t1\"}}\n",
	 KEEL_ERR_MALFORMED, 3},
	{"completion without invocation",
	 CFG "{\"process\":0,\"type\":\"ok\",\"f\":\"read\",\"value\":{}}\n",
	 KEEL_ERR_MALFORMED, 2},
	{"read ok without value",
	 CFG "{\"process\":0,\"type\":\"invoke\",\"f\":\"read\"}\n"
	     "{\"process\":0,\"type\":\"ok\",\"f\":\"read\"}\n",
	 KEEL_ERR_MALFORMED, 3},
	{"read balance not an integer",
	 CFG "{\"process\":0,\"type\":\"invoke\",\"f\":\"read\"}\n"
	     "{\"process\":0,\"type\":\"ok\",\"f\":\"read\",\"value\":"
	     "{\"a0\":\"5\",\"a1\":5}}\n",
	 KEEL_ERR_MALFORMED, 3},
	{"read names an account twice",
	 CFG "{\"process\":0,\"type\":\"invoke\",\"f\":\"read\"}\n"
	     "{\"process\":0,\"type\":\"ok\",\"f\":\"read\",\"value\":"
	     "{\"a0\":5,\"a0\":5}}\n",
	 KEEL_ERR_MALFORMED, 3},
	{"balance not an integer",
	 CFG "{\"process\":0,\"type\":\"invoke\",\"f\":\"read\"}\n"
	     "{\"process\":0,\"type\":\"ok\",\"f\":\"read\",\"value\":"
	     "{\"a0\":1.5,\"a1\":5}}\n",
	 KEEL_ERR_MALFORMED, 3},
	{"amount beyond int64",
	 CFG "{\"process\":0,\"type\":\"invoke\",\"f\":\"transfer\","
	     "\"value\":{\"from\":\"a0\",\"to\":\"a1\",\"id\":\"t1\","
	     "\"amount\":9223372036854775808}}\n",
	 KEEL_ERR_MALFORMED, 2},
	{"unknown f",
	 CFG "{\"process\":0,\"type\":\"invoke\",\"f\":\"cas\"}\n",
	 KEEL_ERR_MALFORMED, 2},
	{"event after the ledger",
	 CFG "{\"type\":\"final\",\"f\":\"ledger\",\"value\":\"\"}\n"
	     "{\"process\":0,\"type\":\"invoke\",\"f\":\"read\"}\n",
	 KEEL_ERR_MALFORMED, 3},
	{"two ledgers",
	 CFG "{\"type\":\"final\",\"f\":\"ledger\",\"value\":\"\"}\n"
	     "{\"type\":\"final\",\"f\":\"ledger\",\"value\":\"\"}\n",
	 KEEL_ERR_MALFORMED, 3},
	{"ledger not a string",
	 CFG "{\"type\":\"final\",\"f\":\"ledger\",\"value\":[1]}\n",
	 KEEL_ERR_MALFORMED, 2},
	{"integer out of range",
	 CFG "{\"process\":99999999999999999999,\"type\":\"invoke\","
	     "\"f\":\"read\"}\n",
	 KEEL_ERR_TOO_BIG, 2},
	{"trailing text", CFG "{\"type\":\"final\"} x\n", KEEL_ERR_MALFORMED,
	 2},
};

TEST(parser_errors_have_codes_and_lines)
{
	for (size_t i = 0; i < KEEL_ARRAY_LEN(parse_cases); i++) {
		const struct parse_case *c = &parse_cases[i];
		struct check_bank_history h;
		struct check_parse_error err;
		check_bank_init(&h, &keel_alloc_libc);
		int rv = check_bank_parse(c->text, strlen(c->text), &h, &err);
		if (rv != c->rv || err.line != c->line) {
			fprintf(stderr,
				"  %s: rv %d line %u (%s), want rv %d line "
				"%u\n",
				c->name, rv, err.line, err.msg, c->rv,
				c->line);
			test_failed_now_ = 1;
		}
		EXPECT(err.msg[0] != '\0');
		check_bank_close(&h);
	}
}

TEST(parser_limits_accounts_and_detects_the_model)
{
	struct hb b = {0};
	put(&b, "{\"type\":\"bank\",\"total\":0,\"accounts\":[");
	for (unsigned i = 0; i <= CHECK_BANK_MAX_ACCOUNTS; i++)
		put(&b, "%s\"a%u\"", i ? "," : "", i);
	put(&b, "]}\n");
	struct check_bank_history h;
	struct check_parse_error err;
	check_bank_init(&h, &keel_alloc_libc);
	EXPECT(check_bank_parse(b.buf, b.n, &h, &err) == KEEL_ERR_TOO_BIG);
	check_bank_close(&h);
	free(b.buf);
	EXPECT(check_bank_detect("\n  {\"type\" : \"bank\"}", 20));
	EXPECT(check_bank_detect(CFG, strlen(CFG)));
	EXPECT(!check_bank_detect("{\"process\":0,\"type\":\"invoke\"}", 30));
	EXPECT(!check_bank_detect("", 0));
}

TEST(parser_keeps_fields_in_any_order_and_skips_unknown_ones)
{
	const char *text =
		"{\"total\":10,\"note\":[1,{\"x\":null}],\"accounts\":[\"a0\","
		"\"a\\u0031\"],\"initial\":{\"a1\":4,\"a0\":6},\"type\":\"bank\"}\n"
		"{\"value\":{\"id\":\"t1\",\"amount\":1,\"extra\":1.5,"
		"\"big\":123456789012345678901234567890,\"to\":"
		"\"a1\",\"from\":\"a0\"},\"f\":\"transfer\",\"time\":7,"
		"\"type\":\"invoke\",\"process\":3}\n"
		"{\"process\":3,\"type\":\"ok\",\"f\":\"transfer\","
		"\"value\":null}\n"
		"{\"type\":\"final\",\"f\":\"ledger\",\"value\":\"t1,\"}\n";
	struct check_bank_history h;
	struct check_parse_error err;
	check_bank_init(&h, &keel_alloc_libc);
	int rv = check_bank_parse(text, strlen(text), &h, &err);
	if (rv)
		fprintf(stderr, "  line %u: %s\n", err.line, err.msg);
	ASSERT(rv == 0);
	EXPECT_EQ_U64(h.n_accounts, 2);
	EXPECT(h.accounts[1].len == 2 && !memcmp(h.accounts[1].str, "a1", 2));
	EXPECT(h.has_initial && h.initial[0] == 6 && h.initial[1] == 4);
	ASSERT(h.n_ops == 1);
	EXPECT(h.ops[0].from == 0 && h.ops[0].to == 1 && h.ops[0].amount == 1);
	EXPECT(h.ops[0].outcome == CHECK_BANK_OK);
	EXPECT(h.ops[0].call_time == 7);
	EXPECT(h.has_ledger && h.n_ledger == 1 && h.ledger[0].op == 0);
	check_bank_close(&h);
}

/* ---- allocation failures ----------------------------------------------- */

struct fail_alloc {
	long countdown;
	long live;
};

static void *fa_malloc(void *ctx, size_t n)
{
	struct fail_alloc *f = ctx;
	if (f->countdown-- == 0)
		return NULL;
	void *p = malloc(n);
	if (p)
		f->live++;
	return p;
}
static void *fa_realloc(void *ctx, void *p, size_t n)
{
	struct fail_alloc *f = ctx;
	if (f->countdown-- == 0)
		return NULL;
	void *q = realloc(p, n);
	if (q && !p)
		f->live++;
	return q;
}
static void fa_free(void *ctx, void *p)
{
	struct fail_alloc *f = ctx;
	if (p)
		f->live--;
	free(p);
}

TEST(allocation_failures_are_reported_and_leak_nothing)
{
	struct hb b = {0};
	cfg3(&b, true);
	tr(&b, 0, "invoke", "a0", "a1", 5, "t1");
	rd(&b, 1, "invoke", NULL);
	tr(&b, 0, "ok", "a0", "a1", 5, "t1");
	rd(&b, 1, "ok", "{\"a0\":10,\"a1\":10,\"a2\":10,\"\\u0041\":0}");
	rd(&b, 1, "invoke", NULL);
	rd(&b, 1, "ok", "{\"a0\":5,\"a1\":15,\"a2\":9}");
	ledger(&b, "t1,t7,");
	int completed = 0;
	for (long n = 0; n < 400 && !completed; n++) {
		struct fail_alloc fa = {.countdown = n, .live = 0};
		struct keel_alloc a = {&fa, fa_malloc, fa_realloc, fa_free};
		struct check_bank_history h;
		struct check_parse_error err;
		check_bank_init(&h, &a);
		int rv = check_bank_parse(b.buf, b.n, &h, &err);
		if (rv) {
			EXPECT(rv == KEEL_ERR_NOMEM);
		} else {
			struct check_bank_result res;
			rv = check_bank_run(&h, &a, &res);
			EXPECT(rv == 0 || rv == KEEL_ERR_NOMEM);
			if (!rv) {
				completed = 1;
				EXPECT(res.n_violations > 0);
			}
		}
		check_bank_close(&h);
		EXPECT(fa.live == 0);
	}
	EXPECT(completed);
	free(b.buf);
}

/* ---- randomized -------------------------------------------------------- */

/* A simulated serializable bank: processes invoke transfers and reads;
 * each op takes effect (or not, for fail and some info) at one random
 * moment between its invocation and completion. Balances start even and
 * amounts are even, so every state the store passes through is even. */
struct sim_op {
	bool is_read, open, applies, done;
	int outcome; /* 0 ok, 1 fail, 2 info */
	int from, to;
	long amount;
	int id;
	long snap[8];
};

static void gen(struct keel_rand *rng, struct hb *b, int n_acct, int n_proc,
		int steps, char *ledger_out, size_t ledger_cap, int *n_reads,
		int *first_ok)
{
	long bal[8];
	struct sim_op ops[16];
	memset(ops, 0, sizeof(ops));
	put(b, "{\"type\":\"bank\",\"accounts\":[");
	for (int a = 0; a < n_acct; a++)
		put(b, "%s\"a%d\"", a ? "," : "", a);
	put(b, "],\"total\":%d,\"initial\":{", n_acct * 100);
	for (int a = 0; a < n_acct; a++) {
		bal[a] = 100;
		put(b, "%s\"a%d\":100", a ? "," : "", a);
	}
	put(b, "}}\n");
	size_t lo = 0;
	ledger_out[0] = '\0';
	int next_id = 0;
	*n_reads = 0;
	*first_ok = -1;
	for (int s = 0; s < steps; s++) {
		int p = (int)keel_rand_below(rng, (uint64_t)n_proc);
		struct sim_op *o = &ops[p];
		if (!o->open) {
			memset(o, 0, sizeof(*o));
			o->open = true;
			o->is_read = keel_rand_chance(rng, 1, 3);
			if (o->is_read) {
				rd(b, p, "invoke", NULL);
			} else {
				o->from = (int)keel_rand_below(rng,
							       (uint64_t)n_acct);
				o->to = (int)keel_rand_below(rng,
							     (uint64_t)n_acct);
				o->amount = 2 * (long)keel_rand_below(rng, 20);
				o->id = next_id++;
				char id[16];
				snprintf(id, sizeof(id), "t%d", o->id);
				char from[8], to[8];
				snprintf(from, sizeof(from), "a%d", o->from);
				snprintf(to, sizeof(to), "a%d", o->to);
				tr(b, p, "invoke", from, to, o->amount, id);
				o->outcome = (int)keel_rand_below(rng, 10);
				o->outcome = o->outcome < 7 ? 0
					     : o->outcome < 8 ? 1 : 2;
				o->applies = o->outcome == 0 ||
					     (o->outcome == 2 &&
					      keel_rand_chance(rng, 1, 2));
				/* A transfer that would overdraw fails. */
				if (bal[o->from] < o->amount) {
					o->applies = false;
					if (o->outcome == 0)
						o->outcome = 1;
				}
			}
			continue;
		}
		if (!o->done && keel_rand_chance(rng, 1, 2)) {
			/* the moment it takes effect */
			o->done = true;
			if (o->is_read) {
				memcpy(o->snap, bal, sizeof(bal));
			} else if (o->applies && bal[o->from] >= o->amount) {
				bal[o->from] -= o->amount;
				bal[o->to] += o->amount;
				lo += (size_t)snprintf(ledger_out + lo,
						       ledger_cap - lo, "t%d,",
						       o->id);
				if (lo >= ledger_cap)
					abort();
				if (o->outcome == 0 && *first_ok < 0)
					*first_ok = o->id;
			} else if (o->outcome == 0) {
				o->outcome = 1; /* overdrawn by now */
			}
			continue;
		}
		if (!o->done)
			continue;
		o->open = false;
		if (o->is_read) {
			char v[256];
			size_t vo = 0;
			vo += (size_t)snprintf(v + vo, sizeof(v) - vo, "{");
			for (int a = 0; a < n_acct; a++)
				vo += (size_t)snprintf(v + vo, sizeof(v) - vo,
						       "%s\"a%d\":%ld",
						       a ? "," : "", a,
						       o->snap[a]);
			snprintf(v + vo, sizeof(v) - vo, "}");
			rd(b, p, "ok", v);
			(*n_reads)++;
		} else {
			static const char *const types[] = {"ok", "fail",
							    "info"};
			char id[16], from[8], to[8];
			snprintf(id, sizeof(id), "t%d", o->id);
			snprintf(from, sizeof(from), "a%d", o->from);
			snprintf(to, sizeof(to), "a%d", o->to);
			tr(b, p, types[o->outcome], from, to, o->amount, id);
		}
	}
}

TEST(random_serializable_banks_pass_and_planted_bugs_fail)
{
	uint64_t seed = test_seed(12);
	struct keel_rand rng;
	keel_rand_seed(&rng, seed);
	static char led[1 << 16];
	for (int iter = 0; iter < 200; iter++) {
		struct hb b = {0};
		int n_acct = 2 + (int)keel_rand_below(&rng, 5);
		int n_proc = 1 + (int)keel_rand_below(&rng, 8);
		int n_reads, first_ok;
		gen(&rng, &b, n_acct, n_proc,
		    50 + (int)keel_rand_below(&rng, 400), led, sizeof(led),
		    &n_reads, &first_ok);
		size_t body = b.n;
		ledger(&b, led);
		struct outcome *oc = run(b.buf);
		if (!only(oc, 0)) {
			fprintf(stderr, "  iter %d (seed %" PRIu64 "): a valid "
					"history was rejected:\n%s",
				iter, seed, b.buf);
			test_failed_now_ = 1;
			free(b.buf);
			return;
		}
		EXPECT(oc->res.consistency_checked);
		EXPECT_EQ_U64(oc->res.n_reads_placed, (uint64_t)n_reads);
		/* Plant: one unit moved between two accounts in the last ok
		 * read -- an odd balance no state has. */
		char *last = NULL, *p = b.buf;
		while ((p = strstr(p, "\"type\":\"ok\",\"f\":\"read\"")))
			last = p++;
		if (last) {
			char *a0 = strstr(last, "\"a0\":");
			char *a1 = strstr(last, "\"a1\":");
			ASSERT(a0 && a1);
			/* The last digit of a0's balance goes from even
			 * to odd. */
			(void)a1;
			char *d0 = a0 + 5;
			while (d0[1] >= '0' && d0[1] <= '9')
				d0++;
			(*d0)++;
			oc = run(b.buf);
			EXPECT(oc->res.n_by_kind[CHECK_BANK_NO_PREFIX] == 1);
		}
		/* Plant: an acknowledged transfer dropped from the ledger,
		 * and one applied twice. */
		if (first_ok >= 0) {
			char tok[24];
			static char cut[sizeof(led) + 32];
			snprintf(tok, sizeof(tok), "t%d,", first_ok);
			char *at = led;
			while (strncmp(at, tok, strlen(tok)))
				at = strchr(at, ',') + 1;
			size_t pre = (size_t)(at - led);
			snprintf(cut, sizeof(cut), "%.*s%s", (int)pre, led,
				 at + strlen(tok));
			b.n = body;
			ledger(&b, cut);
			oc = run(b.buf);
			EXPECT(oc->res.n_by_kind[CHECK_BANK_LOST] == 1);
			snprintf(cut, sizeof(cut), "%s%s", led, tok);
			b.n = body;
			ledger(&b, cut);
			oc = run(b.buf);
			EXPECT(oc->res.n_by_kind[CHECK_BANK_DUPLICATE] == 1);
		}
		free(b.buf);
	}
}

TEST(large_history_checks_quickly)
{
	/* 40k ops, ~20k ledger entries, under ASan: seconds at most; the
	 * release build does 200k ops in well under a second. */
	uint64_t seed = test_seed(7);
	struct keel_rand rng;
	keel_rand_seed(&rng, seed);
	static char led[1 << 20];
	struct hb b = {0};
	int n_reads, first_ok;
	gen(&rng, &b, 8, 16, 120000, led, sizeof(led), &n_reads, &first_ok);
	ledger(&b, led);
	struct outcome *oc = run(b.buf);
	EXPECT(only(oc, 0));
	EXPECT_EQ_U64(oc->res.n_reads_placed, (uint64_t)n_reads);
	EXPECT(n_reads > 1000);
	free(b.buf);
}
