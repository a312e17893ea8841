/*
 * test_sim.c -- the simulator's own parts, each shown to work and, for the
 * checkers, shown to fail when fed a planted violation: a check that
 * cannot fail asserts nothing.
 *
 *   - the store (the real WAL over memdisk): a crash keeps exactly what
 *     was synced plus, when the disk kept some unsynced bytes, whole
 *     records in order, never a torn one; one sync covers every write
 *     issued before it; an EIO or ENOSPC poisons it and nothing is
 *     reported durable after; a flipped bit in a record followed by
 *     another one makes recovery refuse, naming file and byte;
 *   - every safety checker accepts a consistent run and catches its
 *     planted violation (two leaders in a term, a divergent log, a changed
 *     committed entry, a divergent apply, a leader lacking a committed
 *     entry, a committed entry durable on a minority, a request a node
 *     held past 1.2 x its request timeout);
 *   - the history checker catches a stale read;
 *   - the program-order checker (order.c) accepts a stream in order with
 *     indeterminate writes present or absent, and catches a reordered
 *     pair, a duplicate, a missing acknowledged write, a reply length
 *     that does not match, a not-executed write that is present and a
 *     value that is not a token list;
 *   - the pipelining clients' requests reach their node in the order sent,
 *     several in flight; a short sweep keeps every stream in order;
 *   - the bank checker (bank.c) accepts a consistent run and catches a read
 *     whose total is off, negative or missing an account, a transfer twice,
 *     an acknowledged one missing, a not-run one present, one elsewhere
 *     than its reply said, a ledger of garbage, final balances that are
 *     not the ledger replayed, an overdraft, and a session reply that
 *     belongs to another seq; a short sweep with the bank clients is ok;
 *   - the same seed gives byte-identical traces; another seed does not;
 *   - small runs with every fault are ok (under ASan/UBSan here).
 */
#include "sim/sim_internal.h"
#include "test.h"

/* ---- store model ---------------------------------------------------------- */

static void completed_cb(void *arg, int status)
{
	int *n = arg;
	(*n)++;
	(void)status;
}

static struct raft_entry ent(uint64_t index, uint64_t term, const char *data)
{
	return (struct raft_entry){.index = index,
				   .term = term,
				   .type = RAFT_ENTRY_NORMAL,
				   .len = (uint32_t)strlen(data),
				   .data = (const uint8_t *)data};
}

static void store_open(struct sim_store *s, uint64_t seed)
{
	struct sim_store_config cfg = {.seed = seed,
				       .cluster_id = 9,
				       .segment_bytes = 4096};
	KEEL_ASSERT(sim_store_init(s, &cfg) == 0);
}

/* Completes every reported-ready write; returns the first bad status. */
static int complete_all(struct sim_store *s, int *done)
{
	env_store_cb cb;
	void *arg;
	int st, first = 0;
	while (sim_store_complete(s, &cb, &arg, &st)) {
		cb(arg, st);
		if (st && !first)
			first = st;
		(void)done;
	}
	return first;
}

/* The workload of the crash tests: write 1 is synced (entries 1..2, term
 * 1); write 2 (overwrite 2, add 3, term 2, hard state) and write 3
 * (entry 4) are issued but not synced. */
static void issue_three(struct sim_store *s, int *done)
{
	static struct raft_entry e1[2], e2[2], e3[1];
	e1[0] = ent(1, 1, "a");
	e1[1] = ent(2, 1, "b");
	e2[0] = ent(2, 2, "B");
	e2[1] = ent(3, 2, "C");
	e3[0] = ent(4, 2, "D");
	struct env_store_write w1 = {.truncate_from = 1, .n_entries = 2,
				     .entries = e1, .has_hard_state = true,
				     .hard_state = {1, 1, 1}};
	struct env_store_write w2 = {.truncate_from = 2, .n_entries = 2,
				     .entries = e2, .has_hard_state = true,
				     .hard_state = {2, 3, 1}};
	struct env_store_write w3 = {.truncate_from = 4, .n_entries = 1,
				     .entries = e3};
	KEEL_ASSERT(sim_store_submit(s, &w1, completed_cb, done) == 0);
	KEEL_ASSERT(complete_all(s, done) == 0);
	KEEL_ASSERT(sim_store_submit(s, &w2, completed_cb, done) == 0);
	KEEL_ASSERT(sim_store_submit(s, &w3, completed_cb, done) == 0);
}

TEST(store_crash_keeps_exactly_what_was_synced)
{
	uint64_t seed = test_seed(11);
	bool saw_lost = false, saw_torn = false, saw_all = false;
	for (uint64_t round = 0; round < 300; round++) {
		struct sim_store s;
		store_open(&s, seed + round);
		int done = 0;
		issue_three(&s, &done);
		EXPECT(done == 1);
		EXPECT_EQ_U64(sim_store_unsynced_records(&s), 4);
		/* Nothing unsynced counts as durable. */
		EXPECT(sim_store_durable_term(&s, 2) == 1);
		EXPECT(sim_store_durable_term(&s, 3) == 0);
		int mode = (int)(round % 3);
		sim_store_crash(&s, mode);
		ASSERT(sim_store_recover(&s) == 0);
		struct env_store_state st;
		ASSERT(sim_store_load(&s, &st) == 0);
		/* The synced entry 1 and the synced hard state survive. */
		ASSERT(st.n_entries >= 2);
		EXPECT(st.entries[0].term == 1 && st.entries[0].data[0] == 'a');
		EXPECT(st.hard_state.term >= 1);
		for (uint32_t i = 0; i < st.n_entries; i++) {
			EXPECT(st.entries[i].index == i + 1);
			/* The shadow the checkers count is what was loaded. */
			EXPECT(sim_store_durable_term(&s, i + 1) ==
			       st.entries[i].term);
		}
		EXPECT(sim_store_durable_term(&s, st.n_entries + 1) == 0);
		if (mode == MEMDISK_LOSE_UNSYNCED) {
			/* Exactly the synced write. */
			EXPECT(st.n_entries == 2 && st.entries[1].term == 1 &&
			       st.entries[1].data[0] == 'b');
			EXPECT(st.hard_state.term == 1);
			saw_lost = true;
		} else if (st.n_entries == 2 && st.entries[1].term == 1) {
			saw_torn = true; /* torn before the overwrite landed */
		} else {
			/* Whole records of writes 2 and 3, in order, never a
			 * torn one: 2 is B, then maybe C, then maybe D. */
			EXPECT(st.entries[1].term == 2 &&
			       st.entries[1].data[0] == 'B');
			if (st.n_entries >= 3)
				EXPECT(st.entries[2].data[0] == 'C');
			if (st.n_entries == 4)
				EXPECT(st.entries[3].data[0] == 'D');
			EXPECT(st.n_entries <= 4);
			if (mode == MEMDISK_KEEP_UNSYNCED) {
				EXPECT(st.n_entries == 4);
				saw_all = true;
			} else if (st.n_entries < 4) {
				saw_torn = true;
			}
		}
		/* Nothing completes after a crash. */
		env_store_cb cb;
		void *arg;
		int status;
		EXPECT(!sim_store_complete(&s, &cb, &arg, &status));
		EXPECT(done == 1);
		sim_store_close(&s);
	}
	EXPECT(saw_lost);
	EXPECT(saw_torn);
	EXPECT(saw_all);
}

TEST(store_group_commit_one_sync_covers_every_write_before_it)
{
	struct sim_store s;
	store_open(&s, test_seed(3));
	int done = 0;
	issue_three(&s, &done);
	uint64_t syncs = s.syncs;
	env_store_cb cb;
	void *arg;
	int status;
	ASSERT(sim_store_complete(&s, &cb, &arg, &status));
	EXPECT(status == 0);
	cb(arg, status);
	EXPECT(s.syncs == syncs + 1);
	/* Write 3 was issued before that sync: durable, no sync of its own. */
	EXPECT(sim_store_durable_term(&s, 4) == 2);
	EXPECT(sim_store_next_ready(&s));
	ASSERT(sim_store_complete(&s, &cb, &arg, &status));
	EXPECT(status == 0);
	cb(arg, status);
	EXPECT(s.syncs == syncs + 1);
	EXPECT(done == 3);
	EXPECT(sim_store_idle(&s));
	sim_store_close(&s);
}

TEST(store_eio_poisons_and_nothing_is_acknowledged_after_it)
{
	for (int k = 0; k < 3; k++) {
		struct sim_store s;
		store_open(&s, test_seed(5) + (uint64_t)k);
		int done = 0;
		struct raft_entry e1[1] = {ent(1, 1, "a")};
		struct env_store_write w1 = {.truncate_from = 1, .n_entries = 1,
					     .entries = e1};
		ASSERT(sim_store_submit(&s, &w1, completed_cb, &done) == 0);
		ASSERT(complete_all(&s, &done) == 0);
		/* k = 0: the sync fails; 1: the write fails; 2: disk full. */
		int err = k == 2 ? KEEL_ERR_NOSPACE : KEEL_ERR_IO;
		memdisk_fail(s.disk, k == 0 ? MEMDISK_OP_SYNC : MEMDISK_OP_WRITE,
			     0, err, true);
		int statuses[4];
		for (uint32_t i = 0; i < 4; i++) {
			struct raft_entry e[1] = {ent(2 + i, 1, "x")};
			struct env_store_write w = {.truncate_from = 2 + i,
						    .n_entries = 1,
						    .entries = e};
			ASSERT(sim_store_submit(&s, &w, completed_cb, &done) == 0);
			env_store_cb cb;
			void *arg;
			ASSERT(sim_store_complete(&s, &cb, &arg, &statuses[i]));
			cb(arg, statuses[i]);
			if (i == 1)
				memdisk_fail_clear(s.disk); /* never retried */
		}
		/* Every write from the error on fails, even once the disk
		 * works again: the store never reports durable again. */
		for (uint32_t i = 0; i < 4; i++)
			EXPECT(statuses[i] == err);
		EXPECT(sim_store_durable_term(&s, 2) == 0);
		EXPECT(strstr(s.msg, "wal/") != NULL);
		/* The operator's restart recovers what was synced. */
		sim_store_crash(&s, MEMDISK_KEEP_UNSYNCED);
		ASSERT(sim_store_recover(&s) == 0);
		struct env_store_state st;
		ASSERT(sim_store_load(&s, &st) == 0);
		EXPECT(st.n_entries >= 1 && st.entries[0].data[0] == 'a');
		sim_store_close(&s);
	}
}

TEST(store_flipped_bit_in_a_middle_record_refuses_start)
{
	uint64_t seed = test_seed(21);
	for (uint64_t round = 0; round < 100; round++) {
		struct sim_store s;
		store_open(&s, seed + round);
		int done = 0;
		struct keel_rand rnd;
		keel_rand_seed(&rnd, seed + round);
		/* Two records: only the first may be hit (the second is the
		 * final one, whose rot would look like a torn write). Larger
		 * logs span segments. */
		uint32_t n = round % 2 ? 2 : 120;
		for (uint32_t i = 1; i <= n; i++) {
			struct raft_entry e[1] = {ent(i, 1, "payload-0123456789")};
			struct env_store_write w = {.truncate_from = i,
						    .n_entries = 1,
						    .entries = e};
			ASSERT(sim_store_submit(&s, &w, completed_cb, &done) == 0);
		}
		ASSERT(complete_all(&s, &done) == 0);
		sim_store_crash(&s, MEMDISK_LOSE_UNSYNCED);
		char what[160];
		ASSERT(sim_store_flip(&s, &rnd, what, sizeof(what)) == 0);
		int rv = sim_store_recover(&s);
		if (rv != KEEL_ERR_CORRUPT)
			fprintf(stderr, "  round %llu: %s -> %s\n",
				(unsigned long long)round, what,
				keel_strerror(rv));
		EXPECT(rv == KEEL_ERR_CORRUPT);
		EXPECT(s.refused);
		EXPECT(strstr(s.msg, "wal/") != NULL);
		EXPECT(strstr(s.msg, "byte") != NULL);
		if (round == 0)
			fprintf(stderr, "  %s: %s\n", what, s.msg);
		/* Refused for good; the shadow keeps what was synced. */
		EXPECT(sim_store_recover(&s) == KEEL_ERR_CORRUPT);
		EXPECT(sim_store_durable_term(&s, n) == 1);
		struct env_store_state st;
		EXPECT(sim_store_load(&s, &st) == KEEL_ERR_IO);
		sim_store_close(&s);
	}
}

/* ---- safety checkers: each accepts the consistent case and catches its
 * planted violation -------------------------------------------------------- */

TEST(checker_catches_two_leaders_in_one_term)
{
	struct sim_checker c;
	ASSERT(sim_checker_init(&c, 3) == 0);
	EXPECT(sim_check_leader(&c, 1, 2));
	EXPECT(sim_check_leader(&c, 1, 2)); /* the same leader again: fine */
	EXPECT(sim_check_leader(&c, 2, 3)); /* another term: fine */
	EXPECT(!c.violated);
	EXPECT(!sim_check_leader(&c, 3, 2));
	EXPECT(c.violated);
	EXPECT(strstr(c.what, "election-safety") != NULL);
	sim_checker_close(&c);
}

TEST(checker_catches_divergent_logs)
{
	struct sim_checker c;
	ASSERT(sim_checker_init(&c, 3) == 0);
	for (uint64_t i = 1; i <= 3000; i++) /* also grows the table */
		EXPECT(sim_check_logged(&c, 1, i, 1, i * 7, i > 1 ? 1 : 0));
	EXPECT(sim_check_logged(&c, 2, 5, 1, 35, 1)); /* the same entry */
	EXPECT(sim_check_logged(&c, 2, 5, 2, 99, 1)); /* another term */
	EXPECT(!c.violated);
	/* Same index and term, other content. */
	EXPECT(!sim_check_logged(&c, 3, 7, 1, 1234, 1));
	EXPECT(strstr(c.what, "log-matching") != NULL);
	sim_checker_close(&c);
	/* Same index, term and content, but another predecessor term. */
	ASSERT(sim_checker_init(&c, 3) == 0);
	EXPECT(sim_check_logged(&c, 1, 9, 3, 1, 3));
	EXPECT(!sim_check_logged(&c, 2, 9, 3, 1, 2));
	EXPECT(strstr(c.what, "previous term") != NULL);
	sim_checker_close(&c);
}

TEST(checker_catches_a_lost_or_changed_committed_entry)
{
	struct sim_checker c;
	ASSERT(sim_checker_init(&c, 3) == 0);
	bool fresh;
	EXPECT(sim_check_committed(&c, 1, 1, 1, 11, 1, &fresh) && fresh);
	EXPECT(sim_check_committed(&c, 1, 2, 1, 22, 1, &fresh) && fresh);
	EXPECT(sim_check_committed(&c, 2, 1, 1, 11, 2, &fresh) && !fresh);
	EXPECT(!c.violated);
	/* A node later reports index 2 committed with another entry: the
	 * committed one was lost (e.g. overwritten after a crash). */
	EXPECT(!sim_check_committed(&c, 3, 2, 2, 99, 2, &fresh));
	EXPECT(strstr(c.what, "committed-entry-lost") != NULL);
	sim_checker_close(&c);
}

TEST(checker_catches_divergent_apply_and_out_of_order_apply)
{
	struct sim_checker c;
	ASSERT(sim_checker_init(&c, 3) == 0);
	EXPECT(sim_check_applied(&c, 1, 1, 1, 5));
	EXPECT(sim_check_applied(&c, 2, 1, 1, 5));
	EXPECT(sim_check_applied(&c, 1, 2, 1, 6));
	sim_checker_restart(&c, 1); /* a restart re-applies from 1 */
	EXPECT(sim_check_applied(&c, 1, 1, 1, 5));
	EXPECT(!c.violated);
	EXPECT(!sim_check_applied(&c, 2, 2, 1, 7)); /* other command */
	EXPECT(strstr(c.what, "state-machine-safety") != NULL);
	sim_checker_close(&c);
	ASSERT(sim_checker_init(&c, 3) == 0);
	EXPECT(!sim_check_applied(&c, 1, 2, 1, 5)); /* skipped index 1 */
	EXPECT(c.violated);
	sim_checker_close(&c);
}

static uint64_t planted_terms[8];

static uint64_t planted_term_at(const void *ctx, uint64_t index)
{
	(void)ctx;
	return index < 8 ? planted_terms[index] : 0;
}

TEST(checker_catches_a_leader_lacking_a_committed_entry)
{
	struct sim_checker c;
	ASSERT(sim_checker_init(&c, 3) == 0);
	bool fresh;
	/* Indexes 1-2 (term 1) committed in term 1; index 3 (term 2) and,
	 * indirectly, index 4 (term 1, an old entry) committed in term 4. */
	for (uint64_t i = 1; i <= 4; i++)
		EXPECT(sim_check_committed(&c, 1, i, i == 3 ? 2 : 1, i,
					   i <= 2 ? 1 : 4, &fresh));
	planted_terms[4] = 1;
	/* A leader of term 5 holding all four: fine. */
	planted_terms[1] = 1;
	planted_terms[2] = 1;
	planted_terms[3] = 2;
	EXPECT(sim_check_leader_log(&c, 2, 5, planted_term_at, NULL));
	/* A (stale) leader of term 3 need not hold what was committed in
	 * term 4, even entries of older terms (the simulator's seed 608
	 * with --ops 2000 has one). */
	planted_terms[3] = 0;
	planted_terms[4] = 0;
	EXPECT(sim_check_leader_log(&c, 2, 3, planted_term_at, NULL));
	EXPECT(!c.violated);
	/* A leader of term 5 without index 4 (committed in term 4). */
	planted_terms[3] = 2;
	EXPECT(!sim_check_leader_log(&c, 3, 5, planted_term_at, NULL));
	EXPECT(strstr(c.what, "leader-completeness") != NULL);
	sim_checker_close(&c);
}

TEST(checker_catches_an_old_term_entry_committed_by_counting)
{
	struct sim_checker c;
	ASSERT(sim_checker_init(&c, 3) == 0);
	EXPECT(sim_check_commit_rule(&c, 1, 4, 10, 4));
	EXPECT(!c.violated);
	/* Figure 3.7: the leader of term 4 moved the commit point onto an
	 * entry of term 2. */
	EXPECT(!sim_check_commit_rule(&c, 1, 4, 9, 2));
	EXPECT(strstr(c.what, "commit-rule") != NULL);
	sim_checker_close(&c);
}

TEST(checker_catches_a_commit_on_a_minority_of_disks)
{
	struct sim_checker c;
	ASSERT(sim_checker_init(&c, 5) == 0);
	EXPECT(sim_check_durable(&c, 1, 3));
	EXPECT(!c.violated);
	EXPECT(!sim_check_durable(&c, 2, 2));
	EXPECT(strstr(c.what, "committed-not-durable") != NULL);
	sim_checker_close(&c);
}

/* request-held-silently: 1.2 x the node's request timeout, on its own
 * clock, exactly; a pause or a crash since the node took the request
 * excuses any hold. */
TEST(checker_catches_a_request_held_silently)
{
	struct sim_checker c;
	ASSERT(sim_checker_init(&c, 3) == 0);
	const uint64_t ms = 1000000;
	struct sim_hold h = {.node = 2,
			     .client = 4,
			     .op = "put",
			     .taken_local = 5000 * ms,
			     .now_local = 5000 * ms + 1200 * ms,
			     .request_timeout = 1000 * ms};
	EXPECT(sim_check_hold(&c, &h)); /* 1.2 x exactly: within */
	h.now_local = 5000 * ms; /* answered at once */
	EXPECT(sim_check_hold(&c, &h));
	h.now_local = 5000 * ms + 1200 * ms + 1; /* 1 ns past the bound */
	h.excused = true;
	EXPECT(sim_check_hold(&c, &h));
	/* A clock that reads less than when it took the request (cannot
	 * happen: the sim's clocks are monotonic) is not judged. */
	h.excused = false;
	h.taken_local = h.now_local + 1;
	EXPECT(sim_check_hold(&c, &h));
	EXPECT(!c.violated);
	h.taken_local = 5000 * ms;
	h.answered = true;
	EXPECT(!sim_check_hold(&c, &h));
	EXPECT(strstr(c.what, "request-held-silently") != NULL);
	EXPECT(strstr(c.what, "node 2 held client 4's put for 1200 ms") != NULL);
	EXPECT(strstr(c.what, "only then answered") != NULL);
	sim_checker_close(&c);

	/* At the client's timeout, and with timeouts near the cap (no
	 * wrap-around makes a long hold look short). */
	ASSERT(sim_checker_init(&c, 3) == 0);
	h = (struct sim_hold){.node = 1,
			      .client = 0,
			      .op = "get",
			      .taken_local = 0,
			      .now_local = UINT64_MAX,
			      .request_timeout = UINT64_MAX - 1};
	EXPECT(sim_check_hold(&c, &h)); /* the bound saturates: within */
	h.request_timeout = UINT64_MAX / 6 * 4;
	EXPECT(!sim_check_hold(&c, &h));
	EXPECT(strstr(c.what, "had not answered at the client's timeout") !=
	       NULL);
	sim_checker_close(&c);
}

/* ---- the history checker ----------------------------------------------------- */

static void hadd(struct sim_history *h, uint64_t t, uint32_t p, int type,
		 int op, const char *v)
{
	ASSERT(sim_history_add(h, t, p, type, op, 0, v != NULL,
			       (const uint8_t *)v, v ? (uint32_t)strlen(v) : 0,
			       NULL, 0) == 0);
}

TEST(history_checker_catches_a_stale_read)
{
	struct sim_history h;
	sim_history_init(&h);
	hadd(&h, 1, 1, SIM_INVOKE, SIM_OP_PUT, "1");
	hadd(&h, 2, 1, SIM_OK, SIM_OP_PUT, NULL);
	hadd(&h, 3, 2, SIM_INVOKE, SIM_OP_PUT, "2");
	hadd(&h, 4, 2, SIM_OK, SIM_OP_PUT, NULL);
	hadd(&h, 5, 3, SIM_INVOKE, SIM_OP_GET, NULL);
	hadd(&h, 6, 3, SIM_OK, SIM_OP_GET, "2");
	char d[200];
	EXPECT(sim_history_check(&h, d, sizeof(d)) == 0);
	/* A read after both writes completed that sees the older value. */
	hadd(&h, 7, 4, SIM_INVOKE, SIM_OP_GET, NULL);
	hadd(&h, 8, 4, SIM_OK, SIM_OP_GET, "1");
	EXPECT(sim_history_check(&h, d, sizeof(d)) == 1);
	/* A window starting from a known state. */
	sim_history_reset(&h);
	ASSERT(sim_history_add_initial(&h, 10, 9, 0, (const uint8_t *)"5",
				       1) == 0);
	hadd(&h, 11, 5, SIM_INVOKE, SIM_OP_INCR, NULL);
	hadd(&h, 12, 5, SIM_OK, SIM_OP_INCR, "6");
	EXPECT(sim_history_check(&h, d, sizeof(d)) == 0);
	hadd(&h, 13, 6, SIM_INVOKE, SIM_OP_GET, NULL);
	hadd(&h, 14, 6, SIM_OK, SIM_OP_GET, "5");
	EXPECT(sim_history_check(&h, d, sizeof(d)) == 1);
	sim_history_close(&h);
}

/* ---- program order of pipelined streams (order.c) ------------------------------ */

/* One stream on key p0.1 with tokens 1..n sent; states[i] is what the
 * client learned of token i + 1 (an OK token's length is where it ends in
 * the full list "1,2,...,": the caller passes the value it expects). */
static void order_stream(struct sim_order *o, const int *states, uint32_t n,
			const char *acked_value)
{
	sim_order_init(o);
	KEEL_ASSERT(sim_order_key(o, "p0.1", 2, 5) == 0);
	for (uint32_t i = 0; i < n; i++)
		KEEL_ASSERT(sim_order_sent(o, 0, i + 1) == 0);
	/* An OK token's APPEND reply: the length of acked_value up to and
	 * including that token's comma. */
	for (uint32_t i = 0; i < n; i++) {
		uint64_t len = 0;
		if (states[i] == SIM_TOK_OK) {
			char want[16];
			snprintf(want, sizeof(want), "%u,", i + 1);
			const char *at = acked_value;
			/* Find the token as a whole item. */
			for (;;) {
				const char *f = strstr(at, want);
				KEEL_ASSERT(f != NULL);
				if (f == acked_value || f[-1] == ',') {
					len = (uint64_t)(f - acked_value) +
					      strlen(want);
					break;
				}
				at = f + 1;
			}
		}
		KEEL_ASSERT(sim_order_answer(o, 0, i + 1, states[i], len));
	}
}

/* Runs the check of key 0 on value (NULL: no such key); whether it held. */
static bool order_judge(struct sim_checker *c, struct sim_order *o,
			const char *value)
{
	KEEL_ASSERT(sim_checker_init(c, 3) == 0);
	c->step = 99;
	return sim_check_order(c, o, 0, 7, value != NULL,
			       (const uint8_t *)value, value ? strlen(value) : 0);
}

enum { OK = SIM_TOK_OK, DR = SIM_TOK_DROPPED, NL = SIM_TOK_NOT_LEADER,
       UN = SIM_TOK_UNKNOWN, LO = SIM_TOK_LOST, SE = SIM_TOK_SENT };

TEST(order_checker_accepts_a_stream_in_order)
{
	struct sim_order o;
	struct sim_checker c;
	/* 3 dropped, 5 unknown and absent, 4 unknown and present, 8 lost and
	 * present, 9 still in flight and absent, 10 not-leader. */
	static const int st[] = {OK, OK, DR, UN, UN, OK, OK, LO, SE, NL};
	const char *v = "1,2,4,6,7,8,";
	order_stream(&o, st, 10, v);
	EXPECT(order_judge(&c, &o, v));
	EXPECT(!c.violated);
	EXPECT(o.uncertain_present == 2 && o.uncertain_absent == 2);
	sim_checker_close(&c);
	/* Nothing acknowledged: an absent key is fine. */
	o.uncertain_present = o.uncertain_absent = 0;
	for (uint32_t i = 0; i < 10; i++)
		if (o.keys[0].tok[i].state == OK)
			o.keys[0].tok[i].state = UN;
	EXPECT(order_judge(&c, &o, NULL));
	EXPECT(!c.violated);
	sim_checker_close(&c);
	/* Tokens must be sent growing. */
	EXPECT(sim_order_sent(&o, 0, 10) == KEEL_ERR_INVAL);
	EXPECT(!sim_order_answer(&o, 0, 11, OK, 0));
	sim_order_close(&o);
}

TEST(order_checker_catches_a_reordered_pair)
{
	struct sim_order o;
	struct sim_checker c;
	static const int st[] = {OK, OK, OK, OK, OK, OK, OK, OK, OK};
	/* Issue 12's shape: the batch's last write before the ones before it. */
	const char *v = "1,2,3,4,9,5,6,7,8,";
	order_stream(&o, st, 9, v);
	EXPECT(!order_judge(&c, &o, v));
	fprintf(stderr, "  %s\n", c.what);
	EXPECT(strstr(c.what, "pipe-order at step 99") != NULL);
	EXPECT(strstr(c.what, "seed 7 key p0.1 (stream 5 on node 2, 9 tokens") != NULL);
	EXPECT(strstr(c.what, "token 5 (ok) applied after token 9 (ok)") != NULL);
	EXPECT(strstr(c.what, "...,3,4,9,[5],6,7,8") != NULL);
	sim_checker_close(&c);
	sim_order_close(&o);
	/* An indeterminate write may be missing, but never out of place. */
	static const int st2[] = {UN, OK, OK};
	order_stream(&o, st2, 3, "2,3,");
	EXPECT(order_judge(&c, &o, "2,3,"));
	sim_checker_close(&c);
	EXPECT(!order_judge(&c, &o, "2,1,3,"));
	EXPECT(strstr(c.what, "pipe-order") != NULL);
	EXPECT(strstr(c.what, "token 1 (unknown) applied after token 2 (ok)") != NULL);
	sim_checker_close(&c);
	sim_order_close(&o);
}

TEST(order_checker_catches_a_duplicate)
{
	struct sim_order o;
	struct sim_checker c;
	static const int st[] = {OK, UN, OK};
	order_stream(&o, st, 3, "1,2,3,");
	/* An indeterminate write applied twice (a retransmission run again). */
	EXPECT(!order_judge(&c, &o, "1,2,2,3,"));
	fprintf(stderr, "  %s\n", c.what);
	EXPECT(strstr(c.what, "pipe-duplicate") != NULL);
	EXPECT(strstr(c.what, "token 2 (unknown) applied twice: 1,2,[2],3") != NULL);
	sim_checker_close(&c);
	sim_order_close(&o);
}

TEST(order_checker_catches_a_missing_ack)
{
	struct sim_order o;
	struct sim_checker c;
	static const int st[] = {OK, OK, OK, OK};
	order_stream(&o, st, 4, "1,2,3,4,");
	EXPECT(!order_judge(&c, &o, "1,3,4,"));
	fprintf(stderr, "  %s\n", c.what);
	EXPECT(strstr(c.what, "pipe-ack-lost") != NULL);
	EXPECT(strstr(c.what, "token 2 was acknowledged (length 4) but is "
			      "missing: 1,[missing 2],3,4") != NULL);
	sim_checker_close(&c);
	/* No key at all. */
	EXPECT(!order_judge(&c, &o, NULL));
	EXPECT(strstr(c.what, "pipe-ack-lost") != NULL);
	EXPECT(strstr(c.what, "(no such key)") != NULL);
	sim_checker_close(&c);
	sim_order_close(&o);
	/* Present, but the reply told another length: it ran elsewhere in
	 * the stream than the client was told. */
	static const int st2[] = {UN, OK};
	order_stream(&o, st2, 2, "2,");
	EXPECT(!order_judge(&c, &o, "1,2,"));
	EXPECT(strstr(c.what, "pipe-reply-mismatch") != NULL);
	EXPECT(strstr(c.what, "token 2 was acknowledged with length 2 but ends "
			      "at byte 4") != NULL);
	sim_checker_close(&c);
	sim_order_close(&o);
}

TEST(order_checker_catches_a_write_that_was_not_executed)
{
	struct sim_order o;
	struct sim_checker c;
	static const int st[] = {OK, DR, OK};
	order_stream(&o, st, 3, "1,3,");
	EXPECT(!order_judge(&c, &o, "1,2,3,"));
	fprintf(stderr, "  %s\n", c.what);
	EXPECT(strstr(c.what, "pipe-not-executed-present") != NULL);
	EXPECT(strstr(c.what, "token 2 was answered DROPPED") != NULL);
	sim_checker_close(&c);
	o.keys[0].tok[1].state = NL;
	EXPECT(!order_judge(&c, &o, "1,2,3,"));
	EXPECT(strstr(c.what, "token 2 was answered NOT_LEADER") != NULL);
	sim_checker_close(&c);
	/* Something never sent, or not a token list at all. */
	EXPECT(!order_judge(&c, &o, "1,3,17,"));
	EXPECT(strstr(c.what, "pipe-garbage") != NULL);
	EXPECT(strstr(c.what, "token 17 was never sent") != NULL);
	sim_checker_close(&c);
	EXPECT(!order_judge(&c, &o, "1,3x,"));
	EXPECT(strstr(c.what, "pipe-garbage") != NULL);
	EXPECT(strstr(c.what, "at byte 3") != NULL);
	sim_checker_close(&c);
	EXPECT(!order_judge(&c, &o, "1,3"));
	EXPECT(strstr(c.what, "pipe-garbage") != NULL);
	sim_checker_close(&c);
	sim_order_close(&o);
}

/* ---- the bank (bank.c) ------------------------------------------------------------ */

/* Three accounts 50/30/20 (total 100) and four transfers:
 * 1 a0->a1 10 (watch, ran: ledger "1," len 2), 2 a1->a2 5 (txn, ran: len 4),
 * 3 a2->a0 7 (session, ran on a retry: len 6), 4 a0->a2 3 (txn, compare
 * failed). Ledger "1,2,3,"; final balances 47/35/18. */
static void bank_setup(struct sim_bank *b)
{
	static const int64_t init[3] = {50, 30, 20};
	sim_bank_init(b, 3, init);
	b->init_acked = true;
	EXPECT(sim_bank_xfer(b, 0, SIM_BANK_WATCH, 0, 1, 10) == 1);
	EXPECT(sim_bank_xfer(b, 1, SIM_BANK_TXN, 1, 2, 5) == 2);
	EXPECT(sim_bank_xfer(b, 1, SIM_BANK_SESSION, 2, 0, 7) == 3);
	EXPECT(sim_bank_xfer(b, 0, SIM_BANK_TXN, 0, 2, 3) == 4);
	sim_bank_get(b, 1)->state = SIM_XFER_OK;
	sim_bank_get(b, 1)->len = 2;
	sim_bank_get(b, 2)->state = SIM_XFER_OK;
	sim_bank_get(b, 2)->len = 4;
	sim_bank_get(b, 3)->state = SIM_XFER_OK;
	sim_bank_get(b, 3)->len = 6;
	sim_bank_get(b, 3)->retries = 1;
	sim_bank_get(b, 3)->retry_answered = true;
	sim_bank_get(b, 4)->state = SIM_XFER_FAILED;
	static const int64_t r1[3] = {50, 30, 20}, r2[3] = {40, 40, 20};
	sim_bank_read(b, 0, 0, r1, 0);
	sim_bank_read(b, 1, 1, r2, 0);
}

/* Judges ledger (NULL: no such key) with final balances bal; whether the
 * check held. c is left open for the caller to read and close. */
static bool bank_judge(struct sim_checker *c, struct sim_bank *b,
		       const char *ledger, const int64_t *bal, uint32_t absent)
{
	KEEL_ASSERT(sim_checker_init(c, 3) == 0);
	c->step = 99;
	bool ok = sim_check_bank(c, b, 7, ledger != NULL,
				 (const uint8_t *)ledger,
				 ledger ? strlen(ledger) : 0, bal, absent);
	if (!ok)
		fprintf(stderr, "  %s\n", c->what);
	return ok;
}

static const int64_t bank_final[3] = {47, 35, 18};

TEST(bank_checker_accepts_a_consistent_run)
{
	struct sim_bank b;
	struct sim_checker c;
	bank_setup(&b);
	EXPECT(bank_judge(&c, &b, "1,2,3,", bank_final, 0));
	sim_checker_close(&c);
	/* An unknown transfer may be present (once) or absent. */
	sim_bank_get(&b, 4)->state = SIM_XFER_UNKNOWN;
	EXPECT(bank_judge(&c, &b, "1,2,3,", bank_final, 0));
	sim_checker_close(&c);
	static const int64_t with4[3] = {44, 35, 21};
	EXPECT(bank_judge(&c, &b, "1,2,3,4,", with4, 0));
	EXPECT(b.uncertain_present == 1 && b.uncertain_absent == 1);
	sim_checker_close(&c);
	sim_bank_close(&b);
	/* Seeding never acknowledged, nothing sent: absent, or as seeded. */
	static const int64_t init[3] = {50, 30, 20};
	sim_bank_init(&b, 3, init);
	EXPECT(bank_judge(&c, &b, NULL, init, 7));
	sim_checker_close(&c);
	EXPECT(bank_judge(&c, &b, NULL, init, 0));
	sim_checker_close(&c);
	sim_bank_close(&b);
}

TEST(bank_checker_catches_a_bad_read)
{
	struct sim_bank b;
	struct sim_checker c;
	bank_setup(&b);
	/* A transaction applied partly: the money left a0, never reached
	 * a1. */
	static const int64_t half[3] = {40, 30, 20};
	sim_bank_read(&b, 2, 0, half, 0);
	EXPECT(!bank_judge(&c, &b, "1,2,3,", bank_final, 0));
	EXPECT(strstr(c.what, "bank-read-total at step 99") != NULL);
	EXPECT(strstr(c.what, "seed 7 client 2 read 3") != NULL);
	EXPECT(strstr(c.what, "sums to 90 (total 100)") != NULL);
	sim_checker_close(&c);
	b.r[2].bal[0] = -10;
	b.r[2].bal[1] = 90;
	EXPECT(!bank_judge(&c, &b, "1,2,3,", bank_final, 0));
	EXPECT(strstr(c.what, "bank-read-negative") != NULL);
	sim_checker_close(&c);
	b.r[2].absent = 2;
	EXPECT(!bank_judge(&c, &b, "1,2,3,", bank_final, 0));
	EXPECT(strstr(c.what, "bank-read-absent") != NULL);
	sim_checker_close(&c);
	sim_bank_close(&b);
}

TEST(bank_checker_catches_a_bad_ledger)
{
	struct sim_bank b;
	struct sim_checker c;
	bank_setup(&b);
	/* A transfer applied twice (a retry run again). */
	static const int64_t twice[3] = {37, 45, 18};
	EXPECT(!bank_judge(&c, &b, "1,1,2,3,", twice, 0));
	EXPECT(strstr(c.what, "bank-duplicate") != NULL);
	EXPECT(strstr(c.what, "transfer 1 (watch, a0->a1 10") != NULL);
	sim_checker_close(&c);
	/* An acknowledged transfer missing. */
	static const int64_t no2[3] = {47, 40, 13};
	EXPECT(!bank_judge(&c, &b, "1,3,", no2, 0));
	EXPECT(strstr(c.what, "bank-ack-lost") != NULL);
	EXPECT(strstr(c.what, "transfer 2 (txn") != NULL);
	sim_checker_close(&c);
	/* A compare-failed (not run) transfer present. */
	static const int64_t with4[3] = {44, 35, 21};
	EXPECT(!bank_judge(&c, &b, "1,2,3,4,", with4, 0));
	EXPECT(strstr(c.what, "bank-not-executed-present") != NULL);
	sim_checker_close(&c);
	sim_bank_get(&b, 4)->state = SIM_XFER_NOT_EXECUTED;
	EXPECT(!bank_judge(&c, &b, "1,2,3,4,", with4, 0));
	EXPECT(strstr(c.what, "answered not executed") != NULL);
	sim_checker_close(&c);
	sim_bank_get(&b, 4)->state = SIM_XFER_FAILED;
	/* Taken effect elsewhere than its reply said. */
	static const int64_t swapped[3] = {47, 35, 18};
	EXPECT(!bank_judge(&c, &b, "2,1,3,", swapped, 0));
	EXPECT(strstr(c.what, "bank-reply-mismatch") != NULL);
	sim_checker_close(&c);
	/* Garbage, or an id never sent. */
	EXPECT(!bank_judge(&c, &b, "1,2,3,9,", bank_final, 0));
	EXPECT(strstr(c.what, "bank-ledger-garbage") != NULL);
	sim_checker_close(&c);
	EXPECT(!bank_judge(&c, &b, "1,2,3", bank_final, 0));
	EXPECT(strstr(c.what, "bank-ledger-garbage") != NULL);
	sim_checker_close(&c);
	/* A lost update: the ledger says 1,2,3 but a0 lost the 7. */
	static const int64_t lost[3] = {40, 35, 18};
	EXPECT(!bank_judge(&c, &b, "1,2,3,", lost, 0));
	EXPECT(strstr(c.what, "bank-balance") != NULL);
	EXPECT(strstr(c.what, "final a0=40 a1=35 a2=18, but the ledger's "
			      "transfers give a0=47 a1=35 a2=18") != NULL);
	sim_checker_close(&c);
	/* An overdraft in the ledger's order (a stale read's transfer). */
	sim_bank_get(&b, 2)->amount = 45;
	static const int64_t over[3] = {47, -5, 58};
	EXPECT(!bank_judge(&c, &b, "1,2,3,", over, 0));
	EXPECT(strstr(c.what, "bank-negative") != NULL);
	sim_checker_close(&c);
	sim_bank_close(&b);
}

TEST(bank_checker_catches_a_session_reply_for_another_seq)
{
	struct sim_bank b;
	struct sim_checker c;
	bank_setup(&b);
	/* Transfer 3's retry was answered with transfer 2's reply (len 4):
	 * "ran", but not where the ledger holds it. */
	sim_bank_get(&b, 3)->len = 4;
	EXPECT(!bank_judge(&c, &b, "1,2,3,", bank_final, 0));
	EXPECT(strstr(c.what, "bank-session-reply") != NULL);
	EXPECT(strstr(c.what, "transfer 3 (session, a2->a0 7, ok len 4, 1 "
			      "retries, answered on a retry)") != NULL);
	sim_checker_close(&c);
	/* ... or "ran" when it never did. */
	sim_bank_get(&b, 3)->len = 6;
	static const int64_t no3[3] = {40, 35, 25};
	EXPECT(!bank_judge(&c, &b, "1,2,", no3, 0));
	EXPECT(strstr(c.what, "bank-session-reply") != NULL);
	EXPECT(strstr(c.what, "absent from the ledger") != NULL);
	sim_checker_close(&c);
	/* ... or "compare failed" when it ran. */
	sim_bank_get(&b, 3)->state = SIM_XFER_FAILED;
	EXPECT(!bank_judge(&c, &b, "1,2,3,", bank_final, 0));
	EXPECT(strstr(c.what, "bank-session-reply") != NULL);
	sim_checker_close(&c);
	sim_bank_close(&b);
}

/* ---- whole runs ------------------------------------------------------------------ */

struct trace_buf {
	char *p;
	size_t n, cap;
	uint64_t lines;
};

static void trace_collect(void *ctx, const char *line)
{
	struct trace_buf *t = ctx;
	size_t l = strlen(line);
	if (t->n + l + 1 > t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 1 << 16;
		while (cap < t->n + l + 1)
			cap *= 2;
		char *np = realloc(t->p, cap);
		if (!np)
			abort();
		t->p = np;
		t->cap = cap;
	}
	memcpy(t->p + t->n, line, l);
	t->n += l;
	t->p[t->n++] = '\n';
	t->lines++;
}

static void run_traced(uint64_t seed, struct trace_buf *t,
		       struct sim_result *r)
{
	struct sim_options o = {.seed = seed,
				.ops = 150,
				.faults = SIM_FAULTS_ALL,
				.trace = trace_collect,
				.trace_ctx = t};
	memset(t, 0, sizeof(*t));
	EXPECT(sim_run(&o, r) == 0);
}

TEST(same_seed_gives_byte_identical_traces)
{
	uint64_t seed = test_seed(4242);
	struct trace_buf a, b, c;
	struct sim_result ra, rb, rc;
	run_traced(seed, &a, &ra);
	run_traced(seed, &b, &rb);
	run_traced(seed + 1, &c, &rc);
	EXPECT(a.lines > 1000);
	/* The pipelining clients are part of what must replay. */
	EXPECT(strstr(a.p, " pipe 0 send node ") != NULL);
	/* ... and the bank clients. */
	EXPECT(strstr(a.p, " bank 0 send node ") != NULL);
	EXPECT(a.n == b.n);
	EXPECT(a.n == b.n && !memcmp(a.p, b.p, a.n));
	EXPECT(ra.steps == rb.steps && ra.ops_ok == rb.ops_ok);
	EXPECT(!(a.n == c.n && !memcmp(a.p, c.p, a.n)));
	free(a.p);
	free(b.p);
	free(c.p);
}

/* Runs o; false if the run could not be made. A violation is printed with
 * its seed and fails the test. */
static bool run_ok(const struct sim_options *o, struct sim_result *r)
{
	if (sim_run(o, r) != 0)
		return false;
	if (!r->ok)
		fprintf(stderr, "  seed %llu: %s\n", (unsigned long long)o->seed,
			r->violation);
	EXPECT(r->ok);
	return true;
}

TEST(small_runs_with_every_fault_are_ok)
{
	uint64_t seed = test_seed(1);
	for (uint64_t k = 0; k < 12; k++) {
		struct sim_options o = {.seed = seed + k,
					.nodes = k % 2 ? 5 : 3,
					.ops = 120,
					.faults = SIM_FAULTS_ALL};
		struct sim_result r;
		ASSERT(run_ok(&o, &r));
		EXPECT(r.ops_invoked >= 120);
		/* Clients send to any node: followers forward. */
		EXPECT(r.forwarded > 0);
	}
}

/* The pipelining clients' own promise, which pipe-order relies on: one
 * connection's requests reach node_request in the order sent (TCP), and
 * they really are pipelined (several in flight) and forwarded. */
TEST(pipelined_requests_reach_their_node_in_order)
{
	struct trace_buf t;
	struct sim_result r;
	uint64_t seed = test_seed(5);
	run_traced(seed, &t, &r);
	ASSERT(t.p != NULL);
	char keys[64][24];
	unsigned long long last[64];
	uint32_t n_keys = 0, requests = 0, deep = 0;
	for (char *line = t.p; line && *line;) {
		char *nl = strchr(line, '\n');
		if (nl)
			*nl = 0;
		const char *q = strstr(line, " APPEND p");
		unsigned node, pipe;
		unsigned long long stream, token;
		char key[24];
		if (q && strstr(line, " request node ") &&
		    sscanf(strstr(line, " request node "),
			   " request node %u pipe %u stream %llu APPEND %23s "
			   "%llu,",
			   &node, &pipe, &stream, key, &token) == 5) {
			requests++;
			uint32_t k = 0;
			while (k < n_keys && strcmp(keys[k], key))
				k++;
			if (k == n_keys && n_keys < 64) {
				snprintf(keys[n_keys], sizeof(keys[0]), "%s", key);
				last[n_keys++] = 0;
			}
			if (k < n_keys) {
				if (token <= last[k])
					fprintf(stderr, "  %s: %llu after %llu\n",
						key, token, last[k]);
				EXPECT(token > last[k]);
				last[k] = token;
			}
		}
		const char *f = strstr(line, " inflight=");
		if (f && strstr(line, " pipe ") && atoi(f + 10) >= 2)
			deep++;
		line = nl ? nl + 1 : NULL;
	}
	fprintf(stderr, "  seed %llu: %u pipelined requests on %u streams, %u "
			"sent with others in flight; %s\n",
		(unsigned long long)seed, requests, n_keys, deep,
		r.ok ? "ok" : r.violation);
	EXPECT(requests > 30);
	EXPECT(n_keys >= 1 && r.pipe_streams >= n_keys);
	EXPECT(deep > requests / 4);
	EXPECT(r.pipe_sent >= requests);
	free(t.p);
}

/* A short sweep with the pipelining clients under every fault: every run
 * keeps its streams in order, and the workload does what it claims
 * (acknowledged writes, reconnects to new streams). */
TEST(pipelined_runs_keep_program_order)
{
	uint64_t seed = test_seed(1);
	struct sim_result sum;
	memset(&sum, 0, sizeof(sum));
	for (uint64_t k = 0; k < 8; k++) {
		struct sim_options o = {.seed = seed + k,
					.ops = 400,
					.faults = SIM_FAULTS_ALL};
		struct sim_result r;
		ASSERT(run_ok(&o, &r));
		EXPECT(r.pipes >= 1 && r.pipes <= 3);
		EXPECT(strstr(r.params, " pipes=") != NULL);
		EXPECT(r.pipe_sent == r.pipe_ok + r.pipe_dropped +
					     r.pipe_not_leader +
					     r.pipe_unknown + r.pipe_lost);
		sum.pipe_sent += r.pipe_sent;
		sum.pipe_ok += r.pipe_ok;
		sum.pipe_streams += r.pipe_streams;
		sum.pipes += r.pipes;
	}
	fprintf(stderr, "  pipes=%u sent=%llu ok=%llu streams=%llu\n",
		sum.pipes, (unsigned long long)sum.pipe_sent,
		(unsigned long long)sum.pipe_ok,
		(unsigned long long)sum.pipe_streams);
	EXPECT(sum.pipe_ok > 100);
	EXPECT(sum.pipe_streams > sum.pipes); /* some reconnected */
}

/* A short sweep with the bank clients under every fault: every run passes
 * the bank check, and the workload does what it claims (transfers that
 * ran and that lost their compare in every mode, reads, sessions). */
TEST(bank_runs_keep_the_money)
{
	uint64_t seed = test_seed(1);
	struct sim_result sum;
	memset(&sum, 0, sizeof(sum));
	for (uint64_t k = 0; k < 8; k++) {
		struct sim_options o = {.seed = seed + k,
					.ops = 600,
					.faults = SIM_FAULTS_ALL};
		struct sim_result r;
		ASSERT(run_ok(&o, &r));
		EXPECT(r.banks >= 1 && r.banks <= 3);
		EXPECT(r.bank_accts >= 3 && r.bank_accts <= 6);
		EXPECT(strstr(r.params, " banks=") != NULL);
		for (int m = 0; m < 3; m++) {
			sum.bank_ok[m] += r.bank_ok[m];
			sum.bank_failed[m] += r.bank_failed[m];
		}
		sum.bank_reads += r.bank_reads;
		sum.session_runs += r.session_runs;
		sum.banks += r.banks;
	}
	fprintf(stderr, "  banks=%u ok=%llu/%llu/%llu failed=%llu/%llu/%llu "
			"reads=%llu session_runs=%llu\n",
		sum.banks, (unsigned long long)sum.bank_ok[0],
		(unsigned long long)sum.bank_ok[1],
		(unsigned long long)sum.bank_ok[2],
		(unsigned long long)sum.bank_failed[0],
		(unsigned long long)sum.bank_failed[1],
		(unsigned long long)sum.bank_failed[2],
		(unsigned long long)sum.bank_reads,
		(unsigned long long)sum.session_runs);
	for (int m = 0; m < 3; m++) {
		EXPECT(sum.bank_ok[m] > 10);
		EXPECT(sum.bank_failed[m] > 0); /* clients raced */
	}
	EXPECT(sum.bank_reads > 10);
	EXPECT(sum.session_runs > 0);
}

/* docs/snapshots.md §4: the sweeps must exercise snapshots, not just
 * survive them: across a few seeds every kind of event happens, and every
 * run stays ok (state agreement included). */
TEST(runs_take_install_and_restore_snapshots)
{
	uint64_t seed = test_seed(1);
	struct sim_result sum;
	memset(&sum, 0, sizeof(sum));
	for (uint64_t k = 0; k < 8; k++) {
		struct sim_options o = {.seed = seed + k,
					.ops = 600,
					.faults = SIM_FAULTS_ALL};
		struct sim_result r;
		ASSERT(run_ok(&o, &r));
		EXPECT(strstr(r.params, "snap_entries=") != NULL);
		sum.snap_finished += r.snap_finished;
		sum.snap_compactions += r.snap_compactions;
		sum.snap_installs += r.snap_installs;
		sum.snap_restores += r.snap_restores;
		sum.snap_chunks += r.snap_chunks;
		sum.digest_checks += r.digest_checks;
	}
	fprintf(stderr, "  finished=%llu compactions=%llu installs=%llu "
			"restores=%llu chunks=%llu digests=%llu\n",
		(unsigned long long)sum.snap_finished,
		(unsigned long long)sum.snap_compactions,
		(unsigned long long)sum.snap_installs,
		(unsigned long long)sum.snap_restores,
		(unsigned long long)sum.snap_chunks,
		(unsigned long long)sum.digest_checks);
	EXPECT(sum.snap_finished > 0);
	EXPECT(sum.snap_compactions > 0);
	EXPECT(sum.snap_installs > 0);
	EXPECT(sum.snap_restores > 0);
	EXPECT(sum.snap_chunks > 0);
	EXPECT(sum.digest_checks > 0);
}

TEST(fault_lists_parse_and_format)
{
	uint32_t m;
	char buf[128];
	EXPECT(sim_faults_parse("all", &m) == 0 && m == SIM_FAULTS_ALL);
	EXPECT(sim_faults_parse("none", &m) == 0 && m == 0);
	EXPECT(sim_faults_parse("loss,crash,disk", &m) == 0);
	EXPECT(m == (SIM_FAULT_LOSS | SIM_FAULT_CRASH | SIM_FAULT_DISK));
	sim_faults_format(m, buf, sizeof(buf));
	EXPECT(!strcmp(buf, "loss,crash,disk"));
	EXPECT(sim_faults_parse("eio,enospc,bitflip", &m) == 0);
	EXPECT(m == (SIM_FAULT_EIO | SIM_FAULT_ENOSPC | SIM_FAULT_BITFLIP));
	EXPECT((SIM_FAULTS_ALL & m) == m);
	sim_faults_format(m, buf, sizeof(buf));
	EXPECT(!strcmp(buf, "eio,enospc,bitflip"));
	EXPECT(sim_faults_parse("loss,bogus", &m) == KEEL_ERR_INVAL);
	EXPECT(sim_faults_parse("loss,", &m) == KEEL_ERR_INVAL);
}
