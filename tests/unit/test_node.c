/*
 * test_node.c -- the replica over hand-driven environments.
 *
 * Two harnesses. The single-node fake shows the ordering rules directly:
 * a vote is not sent before the hard state granting it is durable; a write
 * is not answered before its entry is durable and committed; a read is
 * served through ReadIndex. The cluster harness runs three real nodes
 * whose frames, store completions, timers and clocks the test steps by
 * hand (with per-frame drop and duplicate rules), for forwarding,
 * exactly-once apply, timeouts, expiry and local reads.
 */
#include "keel/node.h"
#include "keel/peer.h"
#include "node/fwd.h"
#include "test.h"

/* ---- reply tapes, read back ------------------------------------------------- */

struct got {
	int kind; /* first call: 's' 'e' 'i' 'b' 'n' 'a' */
	int64_t num;
	char str[64];
};

static void g_first(struct got *g, int kind)
{
	if (!g->kind)
		g->kind = kind;
}
static void g_status(void *ctx, const char *s)
{
	struct got *g = ctx;
	if (!g->kind)
		snprintf(g->str, sizeof(g->str), "%s", s);
	g_first(g, 's');
}
static void g_error(void *ctx, const char *s)
{
	struct got *g = ctx;
	if (!g->kind)
		snprintf(g->str, sizeof(g->str), "%s", s);
	g_first(g, 'e');
}
static void g_int(void *ctx, int64_t v)
{
	struct got *g = ctx;
	if (!g->kind)
		g->num = v;
	g_first(g, 'i');
}
static void g_bulk(void *ctx, const uint8_t *p, size_t len)
{
	struct got *g = ctx;
	if (!g->kind)
		snprintf(g->str, sizeof(g->str), "%.*s", (int)len,
			 (const char *)p);
	g_first(g, 'b');
}
static void g_null(void *ctx)
{
	g_first(ctx, 'n');
}
static void g_array(void *ctx, size_t n)
{
	(void)n;
	g_first(ctx, 'a');
}
static const struct kv_reply_ops got_ops = {g_status, g_error, g_int,
					    g_bulk,   g_null,  g_array};

/* A reply as the test keeps it (the node's tape is borrowed). */
struct rep {
	uint64_t cookie;
	int status;
	uint64_t index;
	raft_id hint;
	struct got got;
};

static void keep_reply(struct rep *r, const struct node_reply *nr)
{
	memset(r, 0, sizeof(*r));
	r->cookie = nr->cookie;
	r->status = nr->status;
	r->index = nr->index;
	r->hint = nr->leader_hint;
	if (nr->status == NODE_OK &&
	    kv_tape_play(nr->tape, nr->tape_len, &got_ops, &r->got))
		r->got.kind = '?';
}

/* Sends argv (a NULL-terminated list of strings) to n. */
static int request_s(struct node *n, uint64_t cookie, uint32_t flags,
		     uint64_t stream, const char *const *args)
{
	const uint8_t *argv[8];
	size_t lens[8];
	uint32_t argc = 0;
	while (args[argc] && argc < 8) {
		argv[argc] = (const uint8_t *)args[argc];
		lens[argc] = strlen(args[argc]);
		argc++;
	}
	struct node_request r = {.cookie = cookie,
				 .flags = flags,
				 .stream = stream,
				 .argc = argc,
				 .argv = argv,
				 .lens = lens};
	return node_request(n, &r);
}
#define REQ(n, cookie, flags, ...)                                            \
	request_s((n), (cookie), (flags), 0,                                  \
		  (const char *const[]){__VA_ARGS__, NULL})
/* A write on an ordering stream (node_request.stream). */
#define REQS(n, cookie, stream, ...)                                          \
	request_s((n), (cookie), 0, (stream),                                 \
		  (const char *const[]){__VA_ARGS__, NULL})

/* ---- the single-node fake ------------------------------------------------------ */

#define FAKE_MAX 16

struct fake_env {
	struct env env;
	uint64_t rand;
	int n_writes, n_done;
	int fail_append; /* the store refuses writes at once (EIO) */
	env_store_cb cb[FAKE_MAX];
	void *arg[FAKE_MAX];
	int n_frames;
	size_t frame_len[FAKE_MAX];
	uint8_t frame[FAKE_MAX][512];
	raft_id frame_to[FAKE_MAX];
	int n_replies;
	struct rep reply[FAKE_MAX];
	/* Timers: only 0-delay ones fire (f_turn: the end of a loop turn);
	 * the clock never moves, so the tick never comes. */
	uint64_t t_handle[FAKE_MAX];
	uint64_t t_delay[FAKE_MAX];
	env_timer_cb t_cb[FAKE_MAX];
	void *t_arg[FAKE_MAX];
	uint64_t next_handle;
};

static uint64_t f_now(void *ctx)
{
	(void)ctx;
	return 0;
}
static uint64_t f_wall(void *ctx)
{
	(void)ctx;
	return 1000000;
}
static uint64_t f_timer_start(void *ctx, uint64_t d, env_timer_cb cb,
			      void *arg)
{
	struct fake_env *f = ctx;
	for (int i = 0; i < FAKE_MAX; i++) {
		if (f->t_handle[i])
			continue;
		f->t_handle[i] = ++f->next_handle;
		f->t_delay[i] = d;
		f->t_cb[i] = cb;
		f->t_arg[i] = arg;
		return f->t_handle[i];
	}
	return 0;
}
static void f_timer_stop(void *ctx, uint64_t h)
{
	struct fake_env *f = ctx;
	for (int i = 0; i < FAKE_MAX; i++)
		if (f->t_handle[i] == h)
			f->t_handle[i] = 0;
}
/* The loop turn ends: the 0-delay timers due now fire. Returns how many. */
static int f_turn(struct fake_env *f)
{
	int fired = 0;
	for (int i = 0; i < FAKE_MAX; i++) {
		if (!f->t_handle[i] || f->t_delay[i])
			continue;
		f->t_handle[i] = 0;
		f->t_cb[i](f->t_arg[i]);
		fired++;
	}
	return fired;
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
	if (f->fail_append)
		return KEEL_ERR_IO;
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
/* Ends loop turns and completes writes until nothing is left to do. */
static void f_settle(struct fake_env *f)
{
	for (int round = 0; round < 1000; round++) {
		if (f_turn(f))
			continue;
		if (f->n_done == f->n_writes)
			return;
		f_complete(f);
	}
	abort();
}
static void f_reply(void *ctx, const struct node_reply *r)
{
	struct fake_env *f = ctx;
	if (f->n_replies >= FAKE_MAX)
		abort();
	keep_reply(&f->reply[f->n_replies++], r);
}

static const struct env_clock_ops f_clock = {f_now, f_timer_start,
					     f_timer_stop, f_wall};
static const struct env_net_ops f_net = {f_send};
static const struct env_rand_ops f_rnd = {f_rand};
static const struct env_store_ops f_store = {.load = f_load, .append = f_append};

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
	f_turn(f);
	EXPECT(f->n_writes == 1); /* term 1, vote for 2 */
	EXPECT(f->n_frames == 0); /* the grant waits for that write */
	f_complete(f);
	f_turn(f);
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

TEST(node_sends_nothing_after_a_write_the_store_refused_at_once)
{
	struct node *n = fake_node(3);
	ASSERT(n != NULL);
	struct fake_env *f = &fake_;
	f->fail_append = 1;
	struct raft_msg vote = {.type = RAFT_MSG_VOTE, .from = 2, .to = 1,
				.term = 1};
	uint8_t buf[256];
	size_t len = 0;
	ASSERT(peer_encode(&vote, 9, buf, sizeof(buf), &len) == 0);
	node_receive(n, buf, len);
	f_turn(f);
	/* The vote was never durable: granting it could vote twice. */
	EXPECT(f->n_frames == 0);
	EXPECT(node_poisoned(n));
	node_destroy(n);
}

TEST(node_answers_a_write_after_commit_and_a_read_through_read_index)
{
	struct node *n = fake_node(1);
	ASSERT(n != NULL);
	struct fake_env *f = &fake_;
	/* No leader yet: the write waits (no answer) instead of failing. */
	EXPECT(REQ(n, 7, 0, "SET", "k", "1") == 0);
	EXPECT(f->n_replies == 0);
	node_campaign(n); /* a single voter elects itself ... */
	f_settle(f); /* ... and the waiting SET goes in after the no-op */
	ASSERT(f->n_replies == 1);
	EXPECT(f->reply[0].cookie == 7 && f->reply[0].status == NODE_OK);
	EXPECT(f->reply[0].got.kind == 's' && !strcmp(f->reply[0].got.str, "OK"));
	EXPECT(REQ(n, 8, 0, "set", "k", "41") == 0);
	f_turn(f);
	EXPECT(f->n_replies == 1); /* not before the entry is durable */
	ASSERT(f->n_done < f->n_writes);
	f_settle(f);
	ASSERT(f->n_replies == 2);
	EXPECT(f->reply[1].cookie == 8 && f->reply[1].status == NODE_OK);
	EXPECT_EQ_U64(f->reply[1].index, 3);
	EXPECT(REQ(n, 9, 0, "INCR", "k") == 0);
	f_settle(f);
	ASSERT(f->n_replies == 3);
	EXPECT(f->reply[2].status == NODE_OK && f->reply[2].got.kind == 'i' &&
	       f->reply[2].got.num == 42);
	EXPECT(REQ(n, 10, 0, "GET", "k") == 0);
	f_settle(f);
	ASSERT(f->n_replies == 4);
	EXPECT(f->reply[3].cookie == 10 && f->reply[3].status == NODE_OK);
	EXPECT(f->reply[3].got.kind == 'b' && !strcmp(f->reply[3].got.str, "42"));
	/* A Redis error is still an executed command: NODE_OK, error tape. */
	EXPECT(REQ(n, 11, 0, "APPEND", "k", "x") == 0);
	EXPECT(REQ(n, 12, 0, "INCR", "k") == 0);
	f_settle(f);
	ASSERT(f->n_replies == 6);
	EXPECT(f->reply[5].status == NODE_OK && f->reply[5].got.kind == 'e');
	EXPECT_EQ_U64(node_applied(n), 6);
	/* Commands kv does not know, internal ones, and empty argv are the
	 * caller's to handle: refused, no answer. */
	EXPECT(REQ(n, 13, 0, "PING") == KEEL_ERR_INVAL);
	EXPECT(REQ(n, 14, 0, "KEEL.EXPIRE-DELETE", "k", "1") ==
	       KEEL_ERR_INVAL);
	struct node_request empty = {.cookie = 15};
	EXPECT(node_request(n, &empty) == KEEL_ERR_INVAL);
	EXPECT(f->n_replies == 6);
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
	static const struct env_store_ops torn_store = {.load = f_load_torn,
							 .append = f_append};
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

/* A log written by other builds: a v2 entry of a type this build does not
 * know is skipped (its body, a SET, never runs), a v1 entry (no type, no
 * stream) runs as a kv command. */
static uint8_t typed_buf[3][128];
static struct raft_entry typed_entries[3];

static size_t typed_entry(uint8_t *buf, int version, uint8_t type,
			  const char *key)
{
	const uint8_t *argv[3] = {(const uint8_t *)"SET", (const uint8_t *)key,
				  (const uint8_t *)"1"};
	size_t lens[3] = {3, strlen(key), 1};
	size_t hl = version == 2 ? NODE_ENTRY_HEADER : NODE_ENTRY_HEADER_V1;
	struct node_entry_hdr h = {type, 7, 1, 1, 0};
	node_entry_hdr_put(buf, &h);
	if (version == 1) { /* v1: version, origin, boot, seq */
		buf[0] = 1;
		keel_put_u64(buf + 1, 7);
		keel_put_u64(buf + 9, 1);
		keel_put_u64(buf + 17, 1);
	}
	size_t len = 0;
	if (kv_cmd_encode(1, 3, argv, lens, buf + hl, 128 - hl, &len))
		abort();
	return hl + len;
}

static int f_load_typed(void *ctx, struct env_store_state *out)
{
	(void)ctx;
	struct {
		int version;
		uint8_t type;
		const char *key;
	} e[3] = {{2, NODE_ENTRY_KV, "a"}, {2, 99, "b"}, {1, 0, "c"}};
	for (int i = 0; i < 3; i++) {
		size_t len = typed_entry(typed_buf[i], e[i].version, e[i].type,
					 e[i].key);
		if (i == 2) /* another boot of origin 7: not a duplicate */
			keel_put_u64(typed_buf[i] + 9, 2);
		typed_entries[i] = (struct raft_entry){.index = (uint64_t)i + 1,
						       .term = 1,
						       .type = RAFT_ENTRY_NORMAL,
						       .len = (uint32_t)len,
						       .data = typed_buf[i]};
	}
	/* The unknown type's entry has its own seq: not a duplicate. */
	keel_put_u64(typed_buf[1] + 18, 2);
	memset(out, 0, sizeof(*out));
	out->hard_state = (struct raft_hard_state){.term = 1, .commit = 3};
	out->n_entries = 3;
	out->entries = typed_entries;
	return 0;
}

TEST(unknown_entry_types_are_skipped_and_v1_entries_run)
{
	static const struct env_store_ops typed_store = {.load = f_load_typed,
							  .append = f_append};
	memset(&fake_, 0, sizeof(fake_));
	struct fake_env *f = &fake_;
	f->env = (struct env){.clock = {f, &f_clock},
			      .net = {f, &f_net},
			      .rand = {f, &f_rnd},
			      .store = {f, &typed_store}};
	struct node_config cfg = {.id = 1,
				  .cluster_id = 9,
				  .tick_ns = 1000000,
				  .election_ticks = 10,
				  .heartbeat_ticks = 1,
				  .max_pending = 8,
				  .reply = f_reply,
				  .reply_ctx = f};
	cfg.members.n_voters = 1;
	cfg.members.voters[0] = 1;
	struct node *n = NULL;
	ASSERT(node_create(&cfg, &f->env, &n) == 0);
	node_campaign(n);
	for (int i = 0; i < 4 && f->n_done < f->n_writes; i++)
		f_settle(f);
	EXPECT(node_applied(n) >= 3);
	const struct kv *kv = node_kv(n);
	EXPECT(kv_get(kv, (const uint8_t *)"a", 1, 0, NULL, NULL, NULL));
	EXPECT(!kv_get(kv, (const uint8_t *)"b", 1, 0, NULL, NULL, NULL));
	EXPECT(kv_get(kv, (const uint8_t *)"c", 1, 0, NULL, NULL, NULL));
	node_destroy(n);
}

/* ---- the three-node cluster harness ------------------------------------------ */

#define C_NODES 3
#define C_TICK 1000000ull /* 1 ms */
#define C_TIMEOUT (50 * C_TICK)
#define C_FRAMES 4096
#define C_WRITES 256
#define C_REPLIES 64
#define C_TIMERS 4

struct c_frame {
	raft_id from, to;
	size_t len;
	uint8_t *buf; /* malloc'd */
};

struct c_node {
	struct env env;
	struct node *node;
	raft_id id;
	bool no_timers;  /* timer_start fails (returns 0) */
	uint64_t now;    /* its clock, ns */
	uint64_t wall;   /* its wall clock, ms */
	uint64_t rand;
	/* Timers: the tick and the node's 0-delay batch flush. */
	env_timer_cb tcb[C_TIMERS];
	void *targ[C_TIMERS];
	uint64_t tdue[C_TIMERS];
	uint64_t tid[C_TIMERS]; /* 0 = free slot */
	uint64_t thandle;
	int n_writes, n_done;
	uint32_t w_entries[C_WRITES]; /* entries in each store write */
	bool stall; /* its disk hangs: pump() completes none of its writes */
	env_store_cb wcb[C_WRITES];
	void *warg[C_WRITES];
	int n_replies;
	struct rep reply[C_REPLIES];
	int n_errors;        /* ENV_LOG_ERROR lines logged */
	char last_error[160];
};

struct cluster {
	struct c_node n[C_NODES];
	struct c_frame q[C_FRAMES];
	int head, tail; /* FIFO q[head..tail) */
	/* Rules: drop[from][to] drops every frame on that link; dup_type
	 * delivers frames of that type twice. */
	bool drop[C_NODES + 1][C_NODES + 1];
	bool drop_raft_only; /* drop rules spare node-level frames */
	int dup_type;
	int n_dup;
	int drop_type;   /* drop the next drop_n frames of this type */
	int drop_n;
};

static struct cluster cl_; /* large: not on the stack */

static uint64_t c_now(void *ctx)
{
	return ((struct c_node *)ctx)->now;
}
static uint64_t c_wall(void *ctx)
{
	return ((struct c_node *)ctx)->wall;
}
static uint64_t c_timer_start(void *ctx, uint64_t d, env_timer_cb cb,
			      void *arg)
{
	struct c_node *n = ctx;
	if (n->no_timers)
		return 0;
	for (int i = 0; i < C_TIMERS; i++) {
		if (n->tid[i])
			continue;
		n->tcb[i] = cb;
		n->targ[i] = arg;
		n->tdue[i] = n->now + d;
		n->tid[i] = ++n->thandle;
		return n->tid[i];
	}
	abort();
}
static void c_timer_stop(void *ctx, uint64_t h)
{
	struct c_node *n = ctx;
	for (int i = 0; i < C_TIMERS; i++)
		if (n->tid[i] == h)
			n->tid[i] = 0;
}
/* Fires n's timers that are due on its clock; returns how many fired. */
static int fire_due(struct c_node *n)
{
	int fired = 0;
	for (int i = 0; i < C_TIMERS; i++) {
		if (!n->tid[i] || n->now < n->tdue[i])
			continue;
		n->tid[i] = 0;
		n->tcb[i](n->targ[i]);
		fired++;
	}
	return fired;
}
static void c_send(void *ctx, raft_id to, const uint8_t *b, size_t len)
{
	struct c_node *n = ctx;
	struct cluster *c = &cl_;
	if (c->tail >= C_FRAMES)
		abort();
	uint8_t *copy = malloc(len);
	if (!copy)
		abort();
	memcpy(copy, b, len);
	c->q[c->tail++] = (struct c_frame){n->id, to, len, copy};
}
static uint64_t c_rand(void *ctx)
{
	struct c_node *n = ctx;
	return ++n->rand * 0x9e3779b97f4a7c15ull + n->id;
}
static int c_append(void *ctx, const struct env_store_write *w,
		    env_store_cb cb, void *arg)
{
	struct c_node *n = ctx;
	if (n->n_writes >= C_WRITES)
		abort();
	n->w_entries[n->n_writes] = w->n_entries;
	n->wcb[n->n_writes] = cb;
	n->warg[n->n_writes++] = arg;
	return 0;
}
static void c_reply(void *ctx, const struct node_reply *r)
{
	struct c_node *n = ctx;
	if (n->n_replies >= C_REPLIES)
		abort();
	keep_reply(&n->reply[n->n_replies++], r);
}

static void c_log(void *ctx, int level, const char *msg)
{
	struct c_node *n = ctx;
	if (level != ENV_LOG_ERROR)
		return;
	n->n_errors++;
	snprintf(n->last_error, sizeof(n->last_error), "%s", msg);
}

static const struct env_clock_ops c_clock = {c_now, c_timer_start,
					     c_timer_stop, c_wall};
static const struct env_log_ops c_logops = {c_log};
static const struct env_net_ops c_net = {c_send};
static const struct env_rand_ops c_rnd = {c_rand};
static const struct env_store_ops c_store = {.load = f_load, .append = c_append};

static struct node *cn(int id)
{
	return cl_.n[id - 1].node;
}

/* Delivers every frame queued so far (not those sent meanwhile), applying
 * the drop and duplicate rules; returns how many were taken. */
static int deliver_queued(void)
{
	struct cluster *c = &cl_;
	int end = c->tail, taken = 0;
	while (c->head < end) {
		struct c_frame fr = c->q[c->head++];
		int type = fr.len > 5 ? fr.buf[5] : 0;
		bool node_level = type >= PEER_TYPE_NODE_FIRST;
		bool dropped = c->drop[fr.from][fr.to] &&
			       !(c->drop_raft_only && node_level);
		if (!dropped && c->drop_n > 0 && type == c->drop_type) {
			c->drop_n--;
			dropped = true;
		}
		if (!dropped && fr.to >= 1 && fr.to <= C_NODES) {
			node_receive(cn((int)fr.to), fr.buf, fr.len);
			if (type == c->dup_type) {
				c->n_dup++;
				node_receive(cn((int)fr.to), fr.buf, fr.len);
			}
		}
		free(fr.buf);
		taken++;
	}
	if (c->head == c->tail)
		c->head = c->tail = 0;
	return taken;
}

/* Runs loop turns until nothing moves. One turn, on every node at once:
 * store completions, every frame already queued, then the timers due
 * (the nodes' 0-delay batch flush among them). */
static void pump(void)
{
	struct cluster *c = &cl_;
	for (int round = 0; round < 100000; round++) {
		bool moved = false;
		for (int i = 0; i < C_NODES; i++) {
			struct c_node *n = &c->n[i];
			while (!n->stall && n->n_done < n->n_writes) {
				int k = n->n_done++;
				n->wcb[k](n->warg[k], 0);
				moved = true;
			}
		}
		if (deliver_queued())
			moved = true;
		for (int i = 0; i < C_NODES; i++)
			if (fire_due(&c->n[i]))
				moved = true;
		if (!moved)
			return;
	}
	abort(); /* did not settle */
}

/* Advances every node's clocks by ticks ticks, firing due timers. */
static void advance(int ticks)
{
	for (int t = 0; t < ticks; t++) {
		for (int i = 0; i < C_NODES; i++) {
			struct c_node *n = &cl_.n[i];
			n->now += C_TICK;
			n->wall += 1;
			fire_due(n);
		}
		pump();
	}
}

/* max_inflight_writes for the next cluster_start (0 = the default). */
static uint32_t c_inflight;

static void cluster_start_with(uint32_t election_ticks, uint64_t timeout)
{
	struct cluster *c = &cl_;
	memset(c, 0, sizeof(*c));
	for (int i = 0; i < C_NODES; i++) {
		struct c_node *n = &c->n[i];
		n->id = (raft_id)(i + 1);
		n->now = 1000 * C_TICK;
		n->wall = 1700000000000ull;
		n->env = (struct env){.clock = {n, &c_clock},
				      .net = {n, &c_net},
				      .rand = {n, &c_rnd},
				      .store = {n, &c_store},
				      .log = {n, &c_logops}};
		struct node_config cfg = {.id = n->id,
					  .cluster_id = 9,
					  .tick_ns = C_TICK,
					  .election_ticks = election_ticks,
					  .heartbeat_ticks = 1,
					  .max_pending = 8,
					  .request_timeout_ns = timeout,
					  .retry_ns = 5 * C_TICK,
					  .max_inflight_writes = c_inflight,
					  .reply = c_reply,
					  .reply_ctx = n};
		cfg.members.n_voters = C_NODES;
		for (uint32_t k = 0; k < C_NODES; k++)
			cfg.members.voters[k] = k + 1;
		if (node_create(&cfg, &n->env, &n->node))
			abort();
	}
}

/* Elections only when a test asks for one. */
static void cluster_start(void)
{
	cluster_start_with(1000, C_TIMEOUT);
}

/* Node 1 leads, everything applied everywhere. */
static void cluster_elect(void)
{
	node_campaign(cn(1));
	pump();
	advance(2); /* heartbeats carry the commit point */
	struct raft_status st;
	raft_status(node_raft(cn(1)), &st);
	if (st.role != RAFT_LEADER)
		abort();
}

static void cluster_stop(void)
{
	struct cluster *c = &cl_;
	for (int i = 0; i < C_NODES; i++)
		node_destroy(c->n[i].node);
	for (int k = c->head; k < c->tail; k++)
		free(c->q[k].buf);
	c->head = c->tail = 0;
}

static bool kv_has(int id, const char *key, const char *val)
{
	const uint8_t *v = NULL;
	size_t vl = 0;
	bool found = kv_get(node_kv(cn(id)), (const uint8_t *)key,
			    strlen(key), cl_.n[id - 1].wall, &v, &vl, NULL);
	if (!val)
		return !found;
	return found && vl == strlen(val) && !memcmp(v, val, vl);
}

/* The key is stored at node id, expired or not. */
static bool stored_key(int id, const char *key)
{
	return kv_get(node_kv(cn(id)), (const uint8_t *)key, strlen(key), 0,
		      NULL, NULL, NULL);
}

static uint64_t stored_keys(int id)
{
	struct kv_stats st;
	kv_stats(node_kv(cn(id)), &st);
	return st.keys;
}

TEST(forwarded_write_applies_once_when_its_frame_is_delivered_twice)
{
	cluster_start();
	cluster_elect();
	struct cluster *c = &cl_;
	c->dup_type = PEER_TYPE_FWD_WRITE;
	/* A follower takes the write and forwards it; the leader gets the
	 * FWD_WRITE twice and proposes it twice. */
	ASSERT(REQ(cn(2), 1, 0, "INCR", "k") == 0);
	pump();
	advance(2);
	EXPECT(c->n_dup == 1);
	struct node_stats l, f2;
	node_stats(cn(1), &l);
	node_stats(cn(2), &f2);
	EXPECT_EQ_U64(l.fwd_proposed, 2);
	EXPECT_EQ_U64(f2.fwd_requests, 1);
	/* The follower answers its client from its own apply, once. */
	ASSERT(c->n[1].n_replies == 1);
	struct rep *r = &c->n[1].reply[0];
	EXPECT(r->cookie == 1 && r->status == NODE_OK);
	EXPECT(r->got.kind == 'i' && r->got.num == 1);
	/* Every replica ran it once and skipped the copy. */
	for (int id = 1; id <= C_NODES; id++) {
		EXPECT(kv_has(id, "k", "1"));
		struct node_stats st;
		node_stats(cn(id), &st);
		EXPECT_EQ_U64(st.dedup_skipped, 1);
		EXPECT_EQ_U64(node_applied(cn(id)), node_applied(cn(1)));
		EXPECT(kv_digest(node_kv(cn(id))) == kv_digest(node_kv(cn(1))));
	}
	/* A retransmission after the result changes nothing either. */
	c->dup_type = 0;
	ASSERT(REQ(cn(3), 2, 0, "APPEND", "k", "0") == 0);
	pump();
	advance(2);
	ASSERT(c->n[2].n_replies == 1);
	EXPECT(c->n[2].reply[0].status == NODE_OK &&
	       c->n[2].reply[0].got.num == 2);
	EXPECT(kv_has(1, "k", "10") && kv_has(2, "k", "10"));
	cluster_stop();
}

/* Program order (decision 16): a follower's first write of a stream is
 * lost on the way, its second applies, the first's resend reaches the log
 * after it. It must not run there (the key would read "2,1,"): every
 * replica refuses it alike and the follower answers it DROPPED. Without
 * a stream the same late copy runs, as before. */
static void overtaken_write(uint64_t stream, const char *want_k,
			    int want_first_status, uint64_t want_refused)
{
	cluster_start();
	cluster_elect();
	struct cluster *c = &cl_;
	c->drop_type = PEER_TYPE_FWD_WRITE;
	c->drop_n = 1;
	ASSERT(REQS(cn(2), 1, stream, "APPEND", "k", "1,") == 0);
	ASSERT(REQS(cn(2), 2, stream, "APPEND", "k", "2,") == 0);
	pump();
	advance(2);
	EXPECT(c->drop_n == 0);
	ASSERT(c->n[1].n_replies == 1);
	EXPECT(c->n[1].reply[0].cookie == 2 &&
	       c->n[1].reply[0].status == NODE_OK);
	advance(8); /* past retry_ns: the first write is sent again */
	ASSERT(c->n[1].n_replies == 2);
	EXPECT(c->n[1].reply[1].cookie == 1 &&
	       c->n[1].reply[1].status == want_first_status);
	for (int id = 1; id <= C_NODES; id++) {
		EXPECT(kv_has(id, "k", want_k));
		struct node_stats st;
		node_stats(cn(id), &st);
		EXPECT_EQ_U64(st.order_refused, want_refused);
		EXPECT(node_state_digest(cn(id)) == node_state_digest(cn(1)));
	}
	cluster_stop();
}

TEST(a_stream_write_overtaken_by_a_later_one_is_refused_everywhere)
{
	overtaken_write(7, "2,", NODE_DROPPED, 1);
	overtaken_write(0, "2,1,", NODE_OK, 0); /* no stream: no order */
}

/* A new leader gets a stream's writes oldest first, at once: five writes
 * forwarded to a leader that is then cut off all run at the next leader,
 * in request order, none refused. (Resending in any other order would
 * leave all but the newest refused.) */
TEST(forwarded_stream_writes_reach_a_new_leader_in_request_order)
{
	/* Short elections, a long request timeout: a new leader in time. */
	cluster_start_with(10, 1000 * C_TICK);
	cluster_elect();
	struct cluster *c = &cl_;
	for (int k = 1; k <= C_NODES; k++)
		c->drop[1][k] = c->drop[k][1] = true;
	const char *tok[5] = {"1,", "2,", "3,", "4,", "5,"};
	for (int i = 0; i < 5; i++)
		ASSERT(REQS(cn(2), (uint64_t)(i + 1), 9, "APPEND", "k",
			    tok[i]) == 0);
	pump();
	EXPECT(c->n[1].n_replies == 0);
	advance(60); /* node 2 or 3 takes over */
	ASSERT(c->n[1].n_replies == 5);
	for (int i = 0; i < 5; i++)
		EXPECT(c->n[1].reply[i].cookie == (uint64_t)(i + 1) &&
		       c->n[1].reply[i].status == NODE_OK);
	EXPECT(kv_has(2, "k", "1,2,3,4,5,") && kv_has(3, "k", "1,2,3,4,5,"));
	struct node_stats st;
	node_stats(cn(2), &st);
	EXPECT_EQ_U64(st.order_refused, 0);
	cluster_stop();
}

/* The dedup window's bound (decision 9): a node never hands on a write
 * max_inflight_writes seqs newer than its oldest unanswered one. Here 2:
 * the first write is lost on the way, the second runs, the third waits
 * (it is not refused, not forwarded) until the first's resend ran. So the
 * log holds them 2, 1, 3 -- without the bound it would be 2, 3, 1. */
TEST(writes_wait_rather_than_outrun_the_dedup_window)
{
	c_inflight = 2;
	cluster_start();
	c_inflight = 0;
	cluster_elect();
	struct cluster *c = &cl_;
	c->drop_type = PEER_TYPE_FWD_WRITE;
	c->drop_n = 1;
	ASSERT(REQ(cn(2), 1, 0, "APPEND", "k", "1,") == 0);
	ASSERT(REQ(cn(2), 2, 0, "APPEND", "k", "2,") == 0);
	ASSERT(REQ(cn(2), 3, 0, "APPEND", "k", "3,") == 0);
	pump();
	advance(2);
	struct node_stats st;
	node_stats(cn(2), &st);
	EXPECT_EQ_U64(st.window_waits, 1);
	EXPECT_EQ_U64(st.fwd_writes_sent, 2); /* the third is held */
	EXPECT(kv_has(1, "k", "2,"));
	advance(10); /* the resend of the first, then the third */
	ASSERT(c->n[1].n_replies == 3);
	for (int i = 0; i < 3; i++)
		EXPECT(c->n[1].reply[i].status == NODE_OK);
	EXPECT(kv_has(1, "k", "2,1,3,") && kv_has(3, "k", "2,1,3,"));
	cluster_stop();
}

TEST(follower_linearizable_read_waits_for_its_read_point)
{
	cluster_start();
	cluster_elect();
	struct cluster *c = &cl_;
	/* Node 2 stops hearing Raft traffic (forwarding frames still pass):
	 * it falls behind while the leader commits with node 3. */
	c->drop[1][2] = true;
	c->drop[3][2] = true;
	c->drop_raft_only = true;
	ASSERT(REQ(cn(1), 1, 0, "SET", "k", "v1") == 0);
	pump();
	advance(2);
	ASSERT(c->n[0].n_replies == 1 && c->n[0].reply[0].status == NODE_OK);
	uint64_t written_at = c->n[0].reply[0].index;
	EXPECT(kv_has(2, "k", NULL)); /* node 2 has not applied it */
	/* A linearizable read at node 2: the leader confirms its read point
	 * (>= the SET) but node 2 must not answer from its stale state. */
	ASSERT(REQ(cn(2), 2, 0, "GET", "k") == 0);
	pump();
	advance(3);
	struct node_stats st;
	node_stats(cn(2), &st);
	EXPECT_EQ_U64(st.fwd_reads_sent, 1);
	EXPECT(c->n[1].n_replies == 0);
	/* Once it catches up, it serves the read locally. */
	c->drop[1][2] = c->drop[3][2] = false;
	advance(3);
	ASSERT(c->n[1].n_replies == 1);
	struct rep *r = &c->n[1].reply[0];
	EXPECT(r->status == NODE_OK && r->got.kind == 'b' &&
	       !strcmp(r->got.str, "v1"));
	EXPECT(r->index >= written_at);
	cluster_stop();
}

TEST(timed_out_writes_are_unknown_once_handed_on)
{
	cluster_start();
	cluster_elect();
	struct cluster *c = &cl_;
	/* The leader is cut off: its proposal cannot commit. */
	for (int k = 1; k <= C_NODES; k++)
		c->drop[1][k] = c->drop[k][1] = true;
	ASSERT(REQ(cn(1), 1, 0, "SET", "a", "1") == 0);
	/* A follower forwards its write into the void. */
	ASSERT(REQ(cn(2), 2, 0, "SET", "b", "1") == 0);
	/* A read forwarded into the void. */
	ASSERT(REQ(cn(3), 3, 0, "GET", "a") == 0);
	pump();
	advance((int)(C_TIMEOUT / C_TICK) + 2);
	ASSERT(c->n[0].n_replies == 1);
	EXPECT(c->n[0].reply[0].status == NODE_UNKNOWN);
	ASSERT(c->n[1].n_replies == 1);
	EXPECT(c->n[1].reply[0].status == NODE_UNKNOWN);
	ASSERT(c->n[2].n_replies == 1);
	EXPECT(c->n[2].reply[0].status == NODE_DROPPED); /* reads: no effect */
	cluster_stop();

	/* With no leader known at all, a request is never handed on: after
	 * the timeout it is NOT_LEADER, safe to retry anywhere. */
	cluster_start();
	ASSERT(REQ(cn(2), 4, 0, "SET", "c", "1") == 0);
	advance((int)(C_TIMEOUT / C_TICK) + 2);
	ASSERT(cl_.n[1].n_replies == 1);
	EXPECT(cl_.n[1].reply[0].status == NODE_NOT_LEADER);
	cluster_stop();
}

TEST(a_write_whose_log_slot_is_taken_is_dropped_not_unknown)
{
	/* Short elections, a long request timeout: the slot decides first. */
	cluster_start_with(10, 1000 * C_TICK);
	cluster_elect();
	struct cluster *c = &cl_;
	for (int k = 1; k <= C_NODES; k++)
		c->drop[1][k] = c->drop[k][1] = true;
	ASSERT(REQ(cn(1), 1, 0, "SET", "a", "1") == 0); /* proposed once */
	pump();
	/* Nodes 2 and 3 elect a new leader, whose no-op takes that index. */
	advance(60);
	struct raft_status s2, s3;
	raft_status(node_raft(cn(2)), &s2);
	raft_status(node_raft(cn(3)), &s3);
	ASSERT(s2.role == RAFT_LEADER || s3.role == RAFT_LEADER);
	EXPECT(c->n[0].n_replies == 0);
	/* Healed, node 1 learns its entry was replaced: definitely not
	 * executed, long before the timeout. */
	memset(c->drop, 0, sizeof(c->drop));
	advance(30);
	ASSERT(c->n[0].n_replies == 1);
	EXPECT(c->n[0].reply[0].status == NODE_DROPPED);
	for (int id = 1; id <= C_NODES; id++)
		EXPECT(kv_has(id, "a", NULL));
	cluster_stop();
}

TEST(ttl_expiry_is_proposed_by_the_leader_on_its_clock)
{
	cluster_start();
	cluster_elect();
	struct cluster *c = &cl_;
	/* A relative TTL, made absolute by the leader's clock. */
	ASSERT(REQ(cn(2), 1, 0, "SET", "t", "v", "PX", "100") == 0);
	pump();
	advance(2);
	ASSERT(c->n[1].n_replies == 1 && c->n[1].reply[0].status == NODE_OK);
	for (int id = 1; id <= C_NODES; id++)
		EXPECT_EQ_U64(stored_keys(id), 1);
	/* The followers' clocks run past the expiry: reads there hide the
	 * key, but nothing is deleted -- they do not decide. */
	c->n[1].wall += 1000;
	c->n[2].wall += 1000;
	advance(5);
	EXPECT(kv_has(2, "t", NULL));
	for (int id = 1; id <= C_NODES; id++) {
		EXPECT_EQ_U64(stored_keys(id), 1);
		struct node_stats st;
		node_stats(cn(id), &st);
		EXPECT_EQ_U64(st.expire_proposed, 0);
	}
	/* The leader's clock passes it: one KEEL.EXPIRE-DELETE, applied
	 * everywhere, and only ever by the leader. */
	c->n[0].wall += 1000;
	advance(5);
	for (int id = 1; id <= C_NODES; id++) {
		EXPECT_EQ_U64(stored_keys(id), 0);
		struct node_stats st;
		node_stats(cn(id), &st);
		EXPECT_EQ_U64(st.expire_proposed, id == 1 ? 1 : 0);
	}
	cluster_stop();
}

TEST(leader_hands_over_when_its_own_disk_stalls)
{
	cluster_start_with(20, C_TIMEOUT);
	cluster_elect();
	struct cluster *c = &cl_;
	c->n[0].stall = true;
	ASSERT(REQ(cn(1), 1, 0, "SET", "a", "1") == 0);
	/* Within an election timeout nothing happens: a slow sync is not a
	 * stall. */
	advance(10);
	struct raft_status st;
	raft_status(node_raft(cn(1)), &st);
	EXPECT(st.role == RAFT_LEADER);
	/* Past it, leadership goes to a follower, which commits the write
	 * (the old leader acknowledges nothing until its disk answers). */
	advance(30);
	raft_status(node_raft(cn(1)), &st);
	EXPECT(st.role != RAFT_LEADER);
	struct node_stats ns;
	node_stats(cn(1), &ns);
	EXPECT_EQ_U64(ns.stall_transfers, 1);
	int leaders = 0;
	for (int k = 2; k <= C_NODES; k++) {
		raft_status(node_raft(cn(k)), &st);
		leaders += st.role == RAFT_LEADER;
		EXPECT(node_applied(cn(k)) >= 2);
	}
	EXPECT(leaders == 1);
	c->n[0].stall = false;
	advance(5);
	cluster_stop();
}

TEST(readonly_read_is_served_locally_at_once)
{
	cluster_start();
	cluster_elect();
	struct cluster *c = &cl_;
	c->drop[1][2] = c->drop[3][2] = true; /* node 2 falls behind */
	ASSERT(REQ(cn(1), 1, 0, "SET", "k", "new") == 0);
	pump();
	advance(2);
	ASSERT(c->n[0].n_replies == 1 && c->n[0].reply[0].status == NODE_OK);
	/* NODE_REQ_LOCAL: answered inside the call from node 2's own state
	 * (stale: nil), with nothing sent to anyone. */
	int before = c->tail;
	ASSERT(REQ(cn(2), 2, NODE_REQ_LOCAL, "GET", "k") == 0);
	ASSERT(c->n[1].n_replies == 1);
	EXPECT(c->tail == before);
	EXPECT(c->n[1].reply[0].status == NODE_OK &&
	       c->n[1].reply[0].got.kind == 'n');
	EXPECT_EQ_U64(c->n[1].reply[0].index, node_applied(cn(2)));
	/* A write on a READONLY connection still goes to the leader. */
	ASSERT(REQ(cn(3), 3, NODE_REQ_LOCAL, "SET", "w", "1") == 0);
	EXPECT(c->n[2].n_replies == 0);
	pump();
	advance(2);
	ASSERT(c->n[2].n_replies == 1);
	EXPECT(c->n[2].reply[0].status == NODE_OK);
	EXPECT(kv_has(1, "w", "1"));
	cluster_stop();
}

/* A follower's linearizable read whose point it has already applied is
 * served when the leader's FWD_READ_OK arrives, not at the next heartbeat. */
TEST(follower_read_is_served_when_its_read_point_arrives)
{
	cluster_start();
	cluster_elect();
	struct cluster *c = &cl_;
	ASSERT(REQ(cn(1), 1, 0, "SET", "k", "v1") == 0);
	pump();
	advance(2); /* node 2 has applied it */
	ASSERT(kv_has(2, "k", "v1"));
	ASSERT(REQ(cn(2), 2, 0, "GET", "k") == 0);
	pump(); /* frames only: no tick, so no heartbeat comes */
	ASSERT(c->n[1].n_replies == 1);
	EXPECT(c->n[1].reply[0].status == NODE_OK &&
	       !strcmp(c->n[1].reply[0].got.str, "v1"));
	cluster_stop();
}

/* Expiry is the leader's decision on the leader's clock, so a follower's
 * linearizable read is judged at the time the leader confirmed its read
 * point (FWD_READ_OK carries it), never at the follower's own clock: one
 * far behind would show a key the leader already counts as expired (its
 * delete not yet applied), one far ahead would hide a key the leader still
 * serves -- and a later read at the leader would show it again. */
TEST(follower_reads_judge_expiry_by_the_leaders_clock)
{
	cluster_start();
	cluster_elect();
	struct cluster *c = &cl_;
	uint64_t lw = c->n[0].wall;
	c->n[1].wall = lw - 1000000; /* node 2: 1000 s behind the leader */
	c->n[2].wall = lw + 1000000; /* node 3: 1000 s ahead */
	ASSERT(REQ(cn(1), 1, 0, "SET", "soon", "v", "PX", "100") == 0);
	ASSERT(REQ(cn(1), 2, 0, "SET", "later", "v", "PX", "100000") == 0);
	pump();
	advance(2);
	ASSERT(c->n[0].n_replies == 2);
	for (int id = 1; id <= C_NODES; id++) {
		ASSERT(node_applied(cn(id)) == node_applied(cn(1)));
		EXPECT_EQ_U64(stored_keys(id), 2);
	}
	/* The leader's clock passes "soon"'s expiry. It has not ticked since,
	 * so its KEEL.EXPIRE-DELETE is not even proposed: every replica still
	 * stores the key, and node 2's clock says it has 1000 s to live. */
	c->n[0].wall += 1000;
	ASSERT(REQ(cn(2), 10, 0, "GET", "soon") == 0);
	ASSERT(REQ(cn(3), 11, 0, "GET", "later") == 0);
	ASSERT(REQ(cn(1), 12, 0, "GET", "soon") == 0);
	pump(); /* frames only: ReadIndex rounds, FWD_READ_OK, no tick */
	for (int id = 1; id <= C_NODES; id++)
		EXPECT_EQ_U64(stored_keys(id), 2); /* no delete applied */
	ASSERT(c->n[0].n_replies == 3);
	EXPECT(c->n[0].reply[2].status == NODE_OK &&
	       c->n[0].reply[2].got.kind == 'n'); /* the leader: expired */
	ASSERT(c->n[1].n_replies == 1);
	EXPECT(c->n[1].reply[0].status == NODE_OK);
	EXPECT(c->n[1].reply[0].got.kind == 'n'); /* so at node 2 too */
	/* "later" has ~99 s left by the leader's clock; node 3's clock is
	 * 900 s past its expiry, and must not decide. */
	ASSERT(c->n[2].n_replies == 1);
	EXPECT(c->n[2].reply[0].status == NODE_OK);
	EXPECT(c->n[2].reply[0].got.kind == 'b' &&
	       !strcmp(c->n[2].reply[0].got.str, "v"));
	/* READONLY (stale) reads are not judged by the node's clock either:
	 * at node 3, at the newest leader stamp it applied, "later" lives. */
	ASSERT(REQ(cn(3), 13, NODE_REQ_LOCAL, "GET", "later") == 0);
	ASSERT(c->n[2].n_replies == 2);
	EXPECT(c->n[2].reply[1].got.kind == 'b' &&
	       !strcmp(c->n[2].reply[1].got.str, "v"));
	cluster_stop();
}

/* A stale read on a follower whose clock is far behind: once it applied an
 * entry the leader stamped after a key's expiry, the key is gone there
 * too, though the leader's delete has not reached it. */
TEST(readonly_read_is_judged_at_the_newest_applied_leader_stamp)
{
	cluster_start();
	cluster_elect();
	struct cluster *c = &cl_;
	c->n[1].wall -= 1000000; /* node 2: 1000 s behind */
	ASSERT(REQ(cn(1), 1, 0, "SET", "soon", "v", "PX", "100") == 0);
	pump();
	advance(2);
	ASSERT(node_applied(cn(2)) == node_applied(cn(1)));
	/* Stamped before the expiry: the key lives in that state. */
	ASSERT(REQ(cn(2), 2, NODE_REQ_LOCAL, "GET", "soon") == 0);
	ASSERT(c->n[1].n_replies == 1);
	EXPECT(c->n[1].reply[0].got.kind == 'b');
	/* The leader, past the expiry, takes two unrelated writes and does
	 * not tick (no delete proposed): y's append tells node 2 that x is
	 * committed, so node 2 applies x, stamped after "soon" expired. */
	c->n[0].wall += 1000;
	ASSERT(REQ(cn(1), 3, 0, "SET", "x", "1") == 0);
	pump();
	ASSERT(REQ(cn(1), 4, 0, "SET", "y", "1") == 0);
	pump();
	ASSERT(stored_key(2, "x") && stored_key(2, "soon"));
	ASSERT(REQ(cn(2), 5, NODE_REQ_LOCAL, "GET", "soon") == 0);
	ASSERT(c->n[1].n_replies == 2);
	EXPECT(c->n[1].reply[1].status == NODE_OK);
	EXPECT(c->n[1].reply[1].got.kind == 'n');
	cluster_stop();
}

/* ---- batching per loop turn ------------------------------------------------- */

/* Counts the frames queued from index `from` on, by type and receiver;
 * every append must carry want_entries entries. */
static void count_frames(int from, int want_entries, int *appends_to,
			 int *others)
{
	static struct raft_entry dec[64];
	struct peer_limits lim;
	peer_limits_default(&lim, 9);
	for (int k = from; k < cl_.tail; k++) {
		struct raft_msg m;
		int rv = peer_decode(cl_.q[k].buf, cl_.q[k].len, &lim, NULL, &m,
				     dec, 64);
		if (rv == 0 && m.type == RAFT_MSG_APPEND) {
			appends_to[m.to]++;
			EXPECT_EQ_U64(m.n_entries, (uint64_t)want_entries);
		} else {
			(*others)++;
		}
	}
}

TEST(requests_of_one_loop_turn_share_one_store_write_and_one_append_per_peer)
{
	cluster_start();
	cluster_elect();
	struct cluster *c = &cl_;
	struct c_node *l = &c->n[0];
	enum { N = 8 }; /* the harness's max_pending */
	struct node_stats before, after;
	node_stats(cn(1), &before);
	int writes = l->n_writes, frames = c->tail;
	char key[N][16];
	for (int i = 0; i < N; i++) {
		snprintf(key[i], sizeof(key[i]), "k%d", i);
		ASSERT(REQ(cn(1), (uint64_t)i + 1, 0, "SET", key[i], "v") == 0);
	}
	/* Proposed, but nothing handled per request: no store write, no
	 * frame yet. */
	EXPECT(l->n_writes == writes);
	EXPECT(c->tail == frames);
	/* The loop turn ends: one update for all of them -- one store
	 * write with the N entries, one append per follower, nothing else. */
	EXPECT(fire_due(l) == 1);
	ASSERT(l->n_writes == writes + 1);
	EXPECT_EQ_U64(l->w_entries[writes], N);
	int appends[C_NODES + 1] = {0}, others = 0;
	count_frames(frames, N, appends, &others);
	EXPECT(appends[2] == 1 && appends[3] == 1 && others == 0);
	node_stats(cn(1), &after);
	EXPECT_EQ_U64(after.batch_runs, before.batch_runs + 1);
	EXPECT_EQ_U64(after.batched_requests, before.batched_requests + N);
	EXPECT(after.batch_max >= N);
	/* Every guarantee holds: each answered after apply, in its own slot. */
	pump();
	advance(2);
	ASSERT(l->n_replies == N);
	for (int i = 0; i < N; i++) {
		EXPECT(l->reply[i].cookie == (uint64_t)i + 1);
		EXPECT(l->reply[i].status == NODE_OK);
		for (int id = 1; id <= C_NODES; id++)
			EXPECT(kv_has(id, key[i], "v"));
	}
	cluster_stop();
}

TEST(forwarded_writes_of_one_loop_turn_share_one_store_write_at_the_leader)
{
	cluster_start();
	cluster_elect();
	struct cluster *c = &cl_;
	struct c_node *l = &c->n[0];
	enum { N = 8 };
	int frames = c->tail;
	char key[N][16];
	for (int i = 0; i < N; i++) {
		snprintf(key[i], sizeof(key[i]), "f%d", i);
		ASSERT(REQ(cn(2), (uint64_t)i + 1, 0, "SET", key[i], "v") == 0);
	}
	EXPECT(c->tail - frames == N); /* each forwarded at once */
	struct node_stats before, after;
	node_stats(cn(1), &before);
	int writes = l->n_writes;
	/* The leader reads the N FWD_WRITE frames in one turn ... */
	ASSERT(deliver_queued() == N);
	EXPECT(l->n_writes == writes);
	int sent = c->tail;
	EXPECT(sent == 0); /* not even the ACKs yet: they carry the index */
	/* ... and handles them at its end, together: one store write, one
	 * append per follower, and the N ACKs. */
	EXPECT(fire_due(l) == 1);
	ASSERT(l->n_writes == writes + 1);
	EXPECT_EQ_U64(l->w_entries[writes], N);
	int appends[C_NODES + 1] = {0}, others = 0;
	count_frames(sent, N, appends, &others);
	EXPECT(appends[2] == 1 && appends[3] == 1 && others == N);
	node_stats(cn(1), &after);
	EXPECT_EQ_U64(after.fwd_proposed, before.fwd_proposed + N);
	EXPECT_EQ_U64(after.batched_requests, before.batched_requests + N);
	EXPECT_EQ_U64(after.batch_runs, before.batch_runs + 1);
	pump();
	advance(2);
	ASSERT(c->n[1].n_replies == N);
	for (int i = 0; i < N; i++)
		EXPECT(c->n[1].reply[i].status == NODE_OK);
	for (int id = 1; id <= C_NODES; id++)
		EXPECT(kv_has(id, key[N - 1], "v"));
	cluster_stop();
}

/* A node that cannot start a timer processes each input at once: slower,
 * never stuck. */
TEST(without_a_timer_requests_are_processed_at_once)
{
	cluster_start();
	cluster_elect();
	struct cluster *c = &cl_;
	struct c_node *l = &c->n[0];
	l->no_timers = true;
	int writes = l->n_writes;
	ASSERT(REQ(cn(1), 1, 0, "SET", "a", "1") == 0);
	EXPECT(l->n_writes == writes + 1);
	pump();
	ASSERT(l->n_replies == 1);
	EXPECT(l->reply[0].status == NODE_OK);
	l->no_timers = false;
	cluster_stop();
}

/* The tick is what times requests out: a node whose tick cannot be
 * re-armed (timer_start failing, as the posix env's does when it cannot
 * allocate) must not go on silently with clients waiting forever. It
 * stops, answers every waiting client, and says why. */
TEST(a_tick_that_cannot_be_rearmed_poisons_the_node)
{
	cluster_start();
	cluster_elect();
	struct cluster *c = &cl_;
	struct c_node *l = &c->n[0];
	/* The leader is cut off: nothing it waits for can settle by itself. */
	for (int k = 1; k <= C_NODES; k++)
		c->drop[1][k] = c->drop[k][1] = true;
	ASSERT(REQ(cn(1), 1, 0, "SET", "a", "1") == 0);
	ASSERT(REQ(cn(1), 2, 0, "GET", "a") == 0);
	pump();
	EXPECT(l->n_replies == 0);
	l->no_timers = true;
	advance((int)(C_TIMEOUT / C_TICK) + 2);
	EXPECT(node_poisoned(cn(1)));
	ASSERT(l->n_replies == 2);
	for (int i = 0; i < 2; i++) {
		struct rep *r = &l->reply[i];
		if (r->cookie == 1)
			EXPECT(r->status == NODE_UNKNOWN); /* proposed */
		else
			EXPECT(r->cookie == 2 && r->status == NODE_DROPPED);
	}
	EXPECT(l->n_errors == 1);
	EXPECT(strstr(l->last_error, "tick") != NULL);
	/* A request after that is answered at once. */
	ASSERT(REQ(cn(1), 3, 0, "GET", "a") == 0);
	ASSERT(l->n_replies == 3);
	EXPECT(l->reply[2].status == NODE_DROPPED);
	l->no_timers = false;
	cluster_stop();
}

/* ---- forwarding bodies and entry headers ------------------------------------ */

TEST(forwarding_bodies_round_trip_and_bad_lengths_are_refused)
{
	static const uint8_t cmd[] = {1, 2, 3};
	struct node_fwd in[] = {
		{.type = PEER_TYPE_FWD_WRITE, .boot = 7, .seq = 9, .cmd = cmd,
		 .cmd_len = sizeof(cmd)},
		{.type = PEER_TYPE_FWD_ACK, .boot = 7, .seq = 9, .term = 3,
		 .index = 12},
		{.type = PEER_TYPE_FWD_NACK, .boot = 7, .seq = 9,
		 .kind = NODE_FWD_KIND_READ, .reason = NODE_FWD_BUSY,
		 .hint = 2},
		{.type = PEER_TYPE_FWD_READ, .boot = 7, .seq = 9},
		{.type = PEER_TYPE_FWD_READ_OK, .boot = 7, .seq = 9,
		 .index = 40, .ms = 1700000000123ull},
	};
	uint8_t buf[64];
	for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
		size_t len = node_fwd_size(&in[i]);
		ASSERT(len <= sizeof(buf) - 1);
		node_fwd_encode(&in[i], buf);
		struct node_fwd out;
		ASSERT(node_fwd_decode(in[i].type, buf, len, &out) == 0);
		EXPECT(out.boot == 7 && out.seq == 9 && out.term == in[i].term &&
		       out.index == in[i].index && out.ms == in[i].ms &&
		       out.kind == in[i].kind &&
		       out.reason == in[i].reason && out.hint == in[i].hint &&
		       out.cmd_len == in[i].cmd_len);
		/* Every other length is malformed (WRITE: any shorter than
		 * its fixed part). */
		for (size_t k = 0; k < len; k++)
			if (in[i].type != PEER_TYPE_FWD_WRITE ||
			    k < NODE_FWD_WRITE_FIXED)
				EXPECT(node_fwd_decode(in[i].type, buf, k, &out) ==
				       KEEL_ERR_MALFORMED);
		if (in[i].type != PEER_TYPE_FWD_WRITE)
			EXPECT(node_fwd_decode(in[i].type, buf, len + 1, &out) ==
			       KEEL_ERR_MALFORMED);
	}
	struct node_fwd out;
	memset(buf, 0, sizeof(buf));
	EXPECT(node_fwd_decode(PEER_TYPE_FWD_READ, buf, 16, &out) ==
	       KEEL_ERR_MALFORMED); /* seq 0 */
	EXPECT(node_fwd_decode(PEER_TYPE_HELLO, buf, 16, &out) ==
	       KEEL_ERR_TYPE);
	/* Entry headers: origin 0 iff seq 0; a stream only with an origin;
	 * unknown versions refused; version 1 (no stream) still read. */
	struct node_entry_hdr h = {NODE_ENTRY_TXN, 3, 5, 8, 11}, g;
	const uint8_t *c;
	size_t cl;
	node_entry_hdr_put(buf, &h);
	ASSERT(node_entry_hdr_get(buf, NODE_ENTRY_HEADER, &g, &c, &cl) == 0);
	EXPECT(g.type == NODE_ENTRY_TXN && g.origin == 3 && g.boot == 5 &&
	       g.seq == 8 && g.stream == 11 && cl == 0);
	EXPECT(node_entry_hdr_get(buf, NODE_ENTRY_HEADER - 1, &g, &c, &cl) ==
	       KEEL_ERR_MALFORMED);
	/* v1: 25 bytes (version, origin, boot, seq), then the command */
	uint8_t v1[NODE_ENTRY_HEADER_V1 + 2];
	v1[0] = 1;
	keel_put_u64(v1 + 1, 3);
	keel_put_u64(v1 + 9, 5);
	keel_put_u64(v1 + 17, 8);
	v1[25] = 'x';
	v1[26] = 'y';
	ASSERT(node_entry_hdr_get(v1, sizeof(v1), &g, &c, &cl) == 0);
	EXPECT(g.type == NODE_ENTRY_KV && g.origin == 3 && g.boot == 5 &&
	       g.seq == 8 && g.stream == 0 && cl == 2 &&
	       c == v1 + NODE_ENTRY_HEADER_V1);
	EXPECT(node_entry_hdr_get(v1, NODE_ENTRY_HEADER_V1 - 1, &g, &c, &cl) ==
	       KEEL_ERR_MALFORMED);
	node_entry_hdr_put(buf, &h);
	buf[1] = 0; /* type 0 */
	EXPECT(node_entry_hdr_get(buf, NODE_ENTRY_HEADER, &g, &c, &cl) ==
	       KEEL_ERR_MALFORMED);
	buf[1] = 200; /* unknown types decode: the applier refuses them */
	ASSERT(node_entry_hdr_get(buf, NODE_ENTRY_HEADER, &g, &c, &cl) == 0);
	EXPECT(g.type == 200);
	node_entry_hdr_put(buf, &h);
	buf[0] = 3;
	EXPECT(node_entry_hdr_get(buf, NODE_ENTRY_HEADER, &g, &c, &cl) ==
	       KEEL_ERR_MALFORMED);
	h.seq = 0;
	node_entry_hdr_put(buf, &h);
	EXPECT(node_entry_hdr_get(buf, NODE_ENTRY_HEADER, &g, &c, &cl) ==
	       KEEL_ERR_MALFORMED);
	h = (struct node_entry_hdr){NODE_ENTRY_KV, 0, 0, 0, 4}; /* internal,
								  with a stream */
	node_entry_hdr_put(buf, &h);
	EXPECT(node_entry_hdr_get(buf, NODE_ENTRY_HEADER, &g, &c, &cl) ==
	       KEEL_ERR_MALFORMED);
}

/* A node-level frame with a body of the wrong length is dropped and
 * counted, not acted on. */
TEST(node_drops_a_malformed_forwarding_frame)
{
	cluster_start();
	cluster_elect();
	uint8_t body[10] = {0}, frame[64];
	size_t w = 0;
	ASSERT(peer_encode_frame(PEER_TYPE_FWD_READ, 9, 2, body, sizeof(body),
				 frame, sizeof(frame), &w) == 0);
	struct node_stats before, after;
	node_stats(cn(1), &before);
	node_receive(cn(1), frame, w);
	node_stats(cn(1), &after);
	EXPECT_EQ_U64(after.fwd_bad, before.fwd_bad + 1);
	EXPECT_EQ_U64(after.frames_bad, before.frames_bad + 1);
	EXPECT(cl_.tail == cl_.head); /* no NACK, no read started */
	cluster_stop();
}
