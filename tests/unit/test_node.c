/*
 * test_node.c -- the node's state machine and command encoding: the same
 * commands in the same order give the same results and the same map on
 * every replica, the operations mean what the linearizability model says
 * they mean, and malformed commands are refused.
 */
#include "keel/node.h"
#include "test.h"

static void cmd(struct node_cmd *c, int op, const char *key, const char *a,
		const char *b)
{
	memset(c, 0, sizeof(*c));
	c->op = (uint8_t)op;
	c->key = (const uint8_t *)key;
	c->key_len = (uint32_t)strlen(key);
	if (a) {
		c->a = (const uint8_t *)a;
		c->a_len = (uint32_t)strlen(a);
	}
	if (b) {
		c->b = (const uint8_t *)b;
		c->b_len = (uint32_t)strlen(b);
	}
}

static int apply(struct node_sm *sm, int op, const char *key, const char *a,
		 const char *b, struct node_result *res)
{
	struct node_cmd c;
	cmd(&c, op, key, a, b);
	EXPECT(node_sm_apply(sm, &c, res) == 0);
	return res->status;
}

static bool value_is(const struct node_result *r, const char *v)
{
	return r->found && r->value_len == strlen(v) &&
	       !memcmp(r->value, v, r->value_len);
}

static struct node_result res_; /* 4 KiB: not on the stack */

TEST(sm_operations_mean_what_the_model_says)
{
	struct node_sm *sm = node_sm_create(NULL);
	ASSERT(sm != NULL);
	struct node_result *r = &res_;
	node_sm_get(sm, (const uint8_t *)"k", 1, r);
	EXPECT(!r->found);
	EXPECT(apply(sm, NODE_OP_INCR, "k", NULL, NULL, r) == NODE_OK);
	EXPECT(value_is(r, "1")); /* absent counts as 0 */
	EXPECT(apply(sm, NODE_OP_APPEND, "k", "0", NULL, r) == NODE_OK);
	node_sm_get(sm, (const uint8_t *)"k", 1, r);
	EXPECT(value_is(r, "10"));
	EXPECT(apply(sm, NODE_OP_CAS, "k", "9", "5", r) == NODE_FAIL);
	EXPECT(apply(sm, NODE_OP_CAS, "k", "10", "5", r) == NODE_OK);
	node_sm_get(sm, (const uint8_t *)"k", 1, r);
	EXPECT(value_is(r, "5"));
	EXPECT(apply(sm, NODE_OP_PUT, "k", "0", NULL, r) == NODE_OK);
	EXPECT(apply(sm, NODE_OP_APPEND, "k", "7", NULL, r) == NODE_OK);
	/* "07" is not a canonical integer: INCR refuses it, as Redis does
	 * and as the checker's model assumes. */
	EXPECT(apply(sm, NODE_OP_INCR, "k", NULL, NULL, r) == NODE_FAIL);
	EXPECT(apply(sm, NODE_OP_PUT, "k", "-1", NULL, r) == NODE_OK);
	EXPECT(apply(sm, NODE_OP_INCR, "k", NULL, NULL, r) == NODE_OK);
	EXPECT(value_is(r, "0"));
	EXPECT(apply(sm, NODE_OP_DEL, "k", NULL, NULL, r) == NODE_OK);
	EXPECT(r->found);
	node_sm_get(sm, (const uint8_t *)"k", 1, r);
	EXPECT(!r->found);
	EXPECT(apply(sm, NODE_OP_CAS, "k", "", "1", r) == NODE_FAIL);
	EXPECT_EQ_U64(node_sm_count(sm), 0);
	node_sm_destroy(sm);
}

TEST(sm_apply_is_deterministic)
{
	uint64_t seed = test_seed(7);
	struct keel_rand rnd;
	keel_rand_seed(&rnd, seed);
	struct node_sm *a = node_sm_create(NULL), *b = node_sm_create(NULL);
	struct node_sm *fresh = node_sm_create(NULL);
	ASSERT(a && b && fresh);
	static struct node_result ra, rb;
	char key[16], v1[24], v2[24];
	for (int i = 0; i < 20000; i++) {
		int op = NODE_OP_PUT + (int)keel_rand_below(&rnd, 5);
		snprintf(key, sizeof(key), "k%u",
			 (unsigned)keel_rand_below(&rnd, 40));
		snprintf(v1, sizeof(v1), "%u",
			 (unsigned)keel_rand_below(&rnd, 12));
		snprintf(v2, sizeof(v2), "%u",
			 (unsigned)keel_rand_below(&rnd, 12));
		struct node_cmd c;
		cmd(&c, op, key, v1, v2);
		ASSERT(node_sm_apply(a, &c, &ra) == 0);
		ASSERT(node_sm_apply(b, &c, &rb) == 0);
		EXPECT(ra.status == rb.status && ra.found == rb.found &&
		       ra.value_len == rb.value_len &&
		       !memcmp(ra.value, rb.value, ra.value_len));
		EXPECT(node_sm_digest(a) == node_sm_digest(b));
	}
	EXPECT(node_sm_count(a) == node_sm_count(b));
	/* The digest sees differences: one more write changes it, and
	 * deleting everything returns to the empty map's digest. */
	struct node_cmd c;
	cmd(&c, NODE_OP_PUT, "extra", "1", NULL);
	ASSERT(node_sm_apply(a, &c, &ra) == 0);
	EXPECT(node_sm_digest(a) != node_sm_digest(b));
	for (int k = 0; k < 40; k++) {
		snprintf(key, sizeof(key), "k%d", k);
		cmd(&c, NODE_OP_DEL, key, NULL, NULL);
		ASSERT(node_sm_apply(b, &c, &rb) == 0);
	}
	EXPECT_EQ_U64(node_sm_count(b), 0);
	EXPECT(node_sm_digest(b) == node_sm_digest(fresh));
	node_sm_destroy(a);
	node_sm_destroy(b);
	node_sm_destroy(fresh);
}

TEST(cmd_encoding_round_trips_and_refuses_garbage)
{
	struct node_cmd c, d;
	cmd(&c, NODE_OP_CAS, "key", "old", "new");
	c.origin = 3;
	c.boot = 0x1122334455667788ull;
	c.seq = 42;
	uint8_t buf[256];
	size_t n = node_cmd_encode(&c, buf, sizeof(buf));
	ASSERT(n == node_cmd_size(&c));
	ASSERT(node_cmd_decode(buf, n, &d) == 0);
	EXPECT(d.op == NODE_OP_CAS && d.origin == 3 && d.boot == c.boot &&
	       d.seq == 42);
	EXPECT(d.key_len == 3 && !memcmp(d.key, "key", 3));
	EXPECT(d.b_len == 3 && !memcmp(d.b, "new", 3));
	/* Every truncation and one byte too many are malformed. */
	for (size_t k = 0; k < n; k++)
		EXPECT(node_cmd_decode(buf, k, &d) == KEEL_ERR_MALFORMED);
	buf[n] = 0;
	EXPECT(node_cmd_decode(buf, n + 1, &d) == KEEL_ERR_MALFORMED);
	/* GET is never logged; unknown ops are refused. */
	buf[0] = NODE_OP_GET;
	EXPECT(node_cmd_decode(buf, n, &d) == KEEL_ERR_MALFORMED);
	buf[0] = 99;
	EXPECT(node_cmd_decode(buf, n, &d) == KEEL_ERR_MALFORMED);
	/* Too small a buffer encodes nothing. */
	EXPECT(node_cmd_encode(&c, buf, n - 1) == 0);
}

/* ---- the replica over a hand-driven env ------------------------------------
 *
 * A fake environment the test steps by hand: the store never completes a
 * write on its own, frames are captured, timers never fire. It shows the
 * ordering rules directly: a vote is not sent before the hard state
 * granting it is durable; a write is not answered before its entry is
 * durable and committed; a read is served through ReadIndex. */

#include "keel/peer.h"

#define FAKE_MAX 16

struct fake_env {
	struct env env;
	uint64_t rand;
	int n_writes, n_done;
	env_store_cb cb[FAKE_MAX];
	void *arg[FAKE_MAX];
	int n_frames;
	size_t frame_len[FAKE_MAX];
	uint8_t frame[FAKE_MAX][512];
	raft_id frame_to[FAKE_MAX];
	int n_replies;
	struct node_reply reply[FAKE_MAX];
	struct node_result result[FAKE_MAX];
};

static uint64_t f_now(void *ctx)
{
	(void)ctx;
	return 0;
}
static uint64_t f_timer_start(void *ctx, uint64_t d, env_timer_cb cb,
			      void *arg)
{
	(void)ctx, (void)d, (void)cb, (void)arg;
	return 1;
}
static void f_timer_stop(void *ctx, uint64_t h)
{
	(void)ctx, (void)h;
}
static void f_send(void *ctx, raft_id to, const uint8_t *b, size_t len)
{
	struct fake_env *f = ctx;
	if (f->n_frames >= FAKE_MAX || len > sizeof(f->frame[0]))
		abort();
	memcpy(f->frame[f->n_frames], b, len);
	f->frame_len[f->n_frames] = len;
	f->frame_to[f->n_frames++] = to;
}
static uint64_t f_rand(void *ctx)
{
	struct fake_env *f = ctx;
	return ++f->rand;
}
static int f_load(void *ctx, struct env_store_state *out)
{
	(void)ctx;
	memset(out, 0, sizeof(*out));
	return 0;
}
static int f_append(void *ctx, const struct env_store_write *w,
		    env_store_cb cb, void *arg)
{
	struct fake_env *f = ctx;
	(void)w;
	if (f->n_writes >= FAKE_MAX)
		abort();
	f->cb[f->n_writes] = cb;
	f->arg[f->n_writes++] = arg;
	return 0;
}
/* Completes the oldest write not yet completed. */
static void f_complete(struct fake_env *f)
{
	int i = f->n_done++;
	f->cb[i](f->arg[i], 0);
}
static void f_reply(void *ctx, const struct node_reply *r)
{
	struct fake_env *f = ctx;
	if (f->n_replies >= FAKE_MAX)
		abort();
	f->reply[f->n_replies] = *r;
	if (r->result)
		f->result[f->n_replies] = *r->result;
	f->n_replies++;
}

static const struct env_clock_ops f_clock = {f_now, f_timer_start,
					     f_timer_stop};
static const struct env_net_ops f_net = {f_send};
static const struct env_rand_ops f_rnd = {f_rand};
static const struct env_store_ops f_store = {f_load, f_append};

static struct fake_env fake_; /* large: not on the stack */

static struct node *fake_node(uint32_t n_voters)
{
	memset(&fake_, 0, sizeof(fake_));
	struct fake_env *f = &fake_;
	f->env = (struct env){.clock = {f, &f_clock},
			      .net = {f, &f_net},
			      .rand = {f, &f_rnd},
			      .store = {f, &f_store}};
	struct node_config cfg = {.id = 1,
				  .cluster_id = 9,
				  .tick_ns = 1000000,
				  .election_ticks = 10,
				  .heartbeat_ticks = 1,
				  .max_pending = 8,
				  .reply = f_reply,
				  .reply_ctx = f};
	cfg.members.n_voters = n_voters;
	for (uint32_t i = 0; i < n_voters; i++)
		cfg.members.voters[i] = i + 1;
	struct node *n = NULL;
	if (node_create(&cfg, &f->env, &n))
		return NULL;
	return n;
}

TEST(node_sends_a_vote_only_after_it_is_durable)
{
	struct node *n = fake_node(3);
	ASSERT(n != NULL);
	struct fake_env *f = &fake_;
	struct raft_msg vote = {.type = RAFT_MSG_VOTE, .from = 2, .to = 1,
				.term = 1};
	uint8_t buf[256];
	size_t len = 0;
	ASSERT(peer_encode(&vote, 9, buf, sizeof(buf), &len) == 0);
	node_receive(n, buf, len);
	EXPECT(f->n_writes == 1); /* term 1, vote for 2 */
	EXPECT(f->n_frames == 0); /* the grant waits for that write */
	f_complete(f);
	ASSERT(f->n_frames == 1);
	struct peer_limits lim;
	peer_limits_default(&lim, 9);
	struct raft_msg m;
	ASSERT(peer_decode(f->frame[0], f->frame_len[0], &lim, NULL, &m, NULL,
			   0) == 0);
	EXPECT(m.type == RAFT_MSG_VOTE_RESP && !m.reject && m.to == 2 &&
	       m.term == 1);
	/* A frame with a flipped bit is dropped and counted. */
	buf[len / 2] ^= 0x10;
	node_receive(n, buf, len);
	struct node_stats st;
	node_stats(n, &st);
	EXPECT_EQ_U64(st.frames_bad, 1);
	node_destroy(n);
}

static void req(struct node *n, uint64_t cookie, int op, const char *a)
{
	struct node_request r = {.cookie = cookie,
				 .op = (uint8_t)op,
				 .key = (const uint8_t *)"k",
				 .key_len = 1,
				 .a = (const uint8_t *)a,
				 .a_len = a ? (uint32_t)strlen(a) : 0};
	EXPECT(node_request(n, &r) == 0);
}

TEST(node_answers_a_write_after_commit_and_a_read_through_read_index)
{
	struct node *n = fake_node(1);
	ASSERT(n != NULL);
	struct fake_env *f = &fake_;
	req(n, 7, NODE_OP_PUT, "1");
	ASSERT(f->n_replies == 1);
	EXPECT(f->reply[0].status == NODE_NOT_LEADER);
	node_campaign(n); /* a single voter elects itself */
	while (f->n_done < f->n_writes)
		f_complete(f); /* its no-op */
	req(n, 8, NODE_OP_PUT, "41");
	EXPECT(f->n_replies == 1); /* not before the entry is durable */
	ASSERT(f->n_done < f->n_writes);
	while (f->n_done < f->n_writes)
		f_complete(f);
	ASSERT(f->n_replies == 2);
	EXPECT(f->reply[1].cookie == 8 && f->reply[1].status == NODE_OK);
	EXPECT(f->reply[1].index == 2);
	req(n, 9, NODE_OP_INCR, NULL);
	while (f->n_done < f->n_writes)
		f_complete(f);
	ASSERT(f->n_replies == 3);
	EXPECT(f->reply[2].status == NODE_OK && value_is(&f->result[2], "42"));
	req(n, 10, NODE_OP_GET, NULL);
	while (f->n_done < f->n_writes)
		f_complete(f);
	ASSERT(f->n_replies == 4);
	EXPECT(f->reply[3].cookie == 10 && f->reply[3].status == NODE_OK);
	EXPECT(value_is(&f->result[3], "42"));
	EXPECT(node_applied(n) == 3);
	node_destroy(n);
}

/* A torn tail: entries of term 3 survived, the hard state written after
 * them (term 3) did not; the stored one says term 2 with a vote. */
static struct raft_entry torn_entries[2];

static int f_load_torn(void *ctx, struct env_store_state *out)
{
	(void)ctx;
	static const uint8_t d[1] = {0};
	torn_entries[0] = (struct raft_entry){
		.index = 1, .term = 2, .type = RAFT_ENTRY_NOOP, .data = d};
	torn_entries[1] = (struct raft_entry){
		.index = 2, .term = 3, .type = RAFT_ENTRY_NOOP, .data = d};
	memset(out, 0, sizeof(*out));
	out->hard_state = (struct raft_hard_state){
		.term = 2, .vote = 3, .commit = 1};
	out->n_entries = 2;
	out->entries = torn_entries;
	return 0;
}

TEST(node_recovers_from_a_torn_tail)
{
	static const struct env_store_ops torn_store = {f_load_torn, f_append};
	memset(&fake_, 0, sizeof(fake_));
	struct fake_env *f = &fake_;
	f->env = (struct env){.clock = {f, &f_clock},
			      .net = {f, &f_net},
			      .rand = {f, &f_rnd},
			      .store = {f, &torn_store}};
	struct node_config cfg = {.id = 1,
				  .cluster_id = 9,
				  .tick_ns = 1000000,
				  .election_ticks = 10,
				  .heartbeat_ticks = 1,
				  .max_pending = 8,
				  .reply = f_reply,
				  .reply_ctx = f};
	cfg.members.n_voters = 3;
	for (uint32_t i = 0; i < 3; i++)
		cfg.members.voters[i] = i + 1;
	struct node *n = NULL;
	/* raft_restore refuses entries newer than the stored term; the node
	 * raises the term to the newest entry's, with no vote (that term's
	 * vote was never sent: votes wait for their sync). */
	ASSERT(node_create(&cfg, &f->env, &n) == 0);
	struct raft_status st;
	raft_status(node_raft(n), &st);
	EXPECT_EQ_U64(st.term, 3);
	EXPECT_EQ_U64(st.vote, 0);
	EXPECT_EQ_U64(st.last_index, 2);
	EXPECT_EQ_U64(st.commit, 1);
	node_destroy(n);
}
