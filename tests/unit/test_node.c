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
