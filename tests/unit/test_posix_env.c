/*
 * test_posix_env.c -- the real peer transport on loopback: three envs in
 * one libuv loop exchange frames over TCP; a corrupted frame is counted
 * and closes its connection, which then comes back by itself; a dead
 * peer's queue stays within its byte cap; a burst far larger than the
 * socket buffers arrives whole and in order (the writes that the socket
 * takes only in part); timers fire in order and a stopped timer never
 * fires. Every wait is bounded by a loop deadline.
 */
#include <unistd.h>

#include "test.h"

#include "keel/peer.h"
#include "keel/posix_env.h"

#define N 3

struct got {
	uint64_t frames[N + 1]; /* by sender */
	uint64_t last_term;
	uint64_t out_of_order; /* frames with a lower term than the last */
};

static struct got got[N + 1];
static int base_port;

static void on_frame(void *ctx, const uint8_t *frame, size_t len)
{
	struct got *g = ctx;
	struct peer_limits lim;
	peer_limits_default(&lim, 9);
	struct raft_msg m;
	struct raft_entry ents[4];
	if (peer_decode(frame, len, &lim, NULL, &m, ents, 4) == 0 &&
	    m.from <= N) {
		g->frames[m.from]++;
		if (m.term < g->last_term)
			g->out_of_order++;
		g->last_term = m.term;
	}
}

static struct posix_env *make_env(uv_loop_t *loop, raft_id id, uint64_t cap)
{
	struct posix_env_config cfg = {.id = id, .cluster_id = 9, .n_peers = N,
				       .on_frame = on_frame, .ctx = &got[id],
				       .max_queue_bytes = cap,
				       .backoff_min_ms = 10, .backoff_max_ms = 50,
				       .log_level = ENV_LOG_ERROR + 1};
	for (int i = 0; i < N; i++) {
		cfg.peers[i].id = (raft_id)(i + 1);
		snprintf(cfg.peers[i].addr, sizeof(cfg.peers[i].addr),
			 "127.0.0.1:%d", base_port + i);
	}
	struct posix_env *e = NULL;
	char err[256];
	int rv = posix_env_create(loop, &cfg, &e, err, sizeof(err));
	if (rv) {
		fprintf(stderr, "  env %llu: %s\n", (unsigned long long)id, err);
		if (e) {
			uv_run(loop, UV_RUN_NOWAIT);
			posix_env_free(e);
		}
		return NULL;
	}
	return e;
}

static void send_hb(struct env *env, raft_id from, raft_id to, uint64_t term)
{
	struct raft_msg m = {.type = RAFT_MSG_HEARTBEAT, .from = from, .to = to,
			     .term = term};
	uint8_t buf[128];
	size_t n;
	KEEL_ASSERT(peer_encode(&m, 9, buf, sizeof(buf), &n) == 0);
	env->net.ops->send(env->net.ctx, to, buf, n);
}

/* Runs the loop until pred() or the deadline (ms). */
static bool run_until(uv_loop_t *loop, bool (*pred)(void), uint64_t ms)
{
	uint64_t end = uv_hrtime() + ms * 1000000ull;
	while (!pred() && uv_hrtime() < end)
		uv_run(loop, UV_RUN_NOWAIT), usleep(1000);
	return pred();
}

static bool all_delivered(void)
{
	return got[2].frames[1] >= 100 && got[1].frames[2] >= 100 &&
	       got[1].frames[3] >= 100 && got[3].frames[2] >= 100;
}

static struct posix_env *watched;
static uint64_t reconnects_before;

static uint64_t reconnects_to_2(void)
{
	struct posix_env_peer_stats st[N];
	uint32_t np = posix_env_peer_stats(watched, st, N);
	for (uint32_t i = 0; i < np; i++)
		if (st[i].id == 2)
			return st[i].reconnects;
	return 0;
}

/* Node 1 has reconnected to node 2 after losing the connection. */
static bool redialed(void)
{
	struct posix_env_peer_stats st[N];
	uint32_t np = posix_env_peer_stats(watched, st, N);
	for (uint32_t i = 0; i < np; i++)
		if (st[i].id == 2)
			return st[i].connected &&
			       st[i].reconnects > reconnects_before;
	return false;
}

static bool term7_arrived(void)
{
	return got[2].last_term == 7;
}

static int fired[3];
static void timer_cb(void *arg)
{
	int *slot = arg;
	*slot = ++fired[2];
}

static bool timers_done(void)
{
	return fired[2] >= 2;
}

TEST(peers_exchange_frames_and_recover_from_a_bad_frame)
{
	/* Ports from the pid keep parallel runs apart; retried if taken. */
	uv_loop_t loop;
	uv_loop_init(&loop);
	struct posix_env *e[N + 1] = {0};
	struct env env[N + 1];
	for (int attempt = 0; attempt < 20; attempt++) {
		base_port = 20000 + (int)((getpid() * 7 + attempt * 97) % 30000);
		bool ok = true;
		for (int i = 1; i <= N && ok; i++) {
			e[i] = make_env(&loop, (raft_id)i, 0);
			ok = e[i] != NULL;
		}
		if (ok)
			break;
		for (int i = 1; i <= N; i++)
			if (e[i]) {
				posix_env_close(e[i]);
				uv_run(&loop, UV_RUN_NOWAIT);
				posix_env_free(e[i]);
				e[i] = NULL;
			}
	}
	ASSERT(e[1] && e[2] && e[3]);
	for (int i = 1; i <= N; i++) {
		memset(&env[i], 0, sizeof(env[i]));
		posix_env_fill(e[i], &env[i]);
	}
	for (int k = 0; k < 100; k++) {
		send_hb(&env[1], 1, 2, 5);
		send_hb(&env[2], 2, 1, 5);
		send_hb(&env[3], 3, 1, 5);
		send_hb(&env[2], 2, 3, 5);
	}
	EXPECT(run_until(&loop, all_delivered, 5000));
	/* Every connection, dialed or accepted, carries TCP_USER_TIMEOUT
	 * (the default): a partition must abort it, not stall it. */
	for (int i = 1; i <= N; i++) {
		struct posix_env_peer_stats ps[N];
		uint32_t np = posix_env_peer_stats(e[i], ps, N);
		for (uint32_t k = 0; k < np; k++)
			if (ps[k].connected)
				EXPECT_EQ_U64(ps[k].user_timeout_ms, 1000);
	}

	/* A frame with a flipped bit: counted, connection closed, and the
	 * dialer reconnects; frames sent afterwards arrive. */
	struct raft_msg m = {.type = RAFT_MSG_HEARTBEAT, .from = 1, .to = 2,
			     .term = 6};
	uint8_t bad[128];
	size_t n;
	ASSERT(peer_encode(&m, 9, bad, sizeof(bad), &n) == 0);
	bad[20] ^= 1;
	watched = e[1];
	reconnects_before = reconnects_to_2();
	env[1].net.ops->send(env[1].net.ctx, 2, bad, n);
	EXPECT(run_until(&loop, redialed, 5000));
	for (int k = 0; k < 10; k++)
		send_hb(&env[1], 1, 2, 7);
	EXPECT(run_until(&loop, term7_arrived, 5000));
	struct posix_env_peer_stats st[N];
	uint32_t np = posix_env_peer_stats(e[2], st, N);
	uint64_t bad_frames = 0;
	for (uint32_t i = 0; i < np; i++)
		if (st[i].id == 1)
			bad_frames = st[i].bad_frames;
	EXPECT_EQ_U64(bad_frames, 1);
	EXPECT_EQ_U64(got[2].last_term, 7);

	/* Timers: the shorter fires first, a stopped one never. */
	uint64_t h1 = env[1].clock.ops->timer_start(env[1].clock.ctx, 30000000,
						    timer_cb, &fired[0]);
	uint64_t h2 = env[1].clock.ops->timer_start(env[1].clock.ctx, 5000000,
						    timer_cb, &fired[1]);
	int never = 0;
	uint64_t h3 = env[1].clock.ops->timer_start(env[1].clock.ctx, 1000000,
						    timer_cb, &never);
	env[1].clock.ops->timer_stop(env[1].clock.ctx, h3);
	EXPECT(h1 && h2 && h3);
	EXPECT(run_until(&loop, timers_done, 2000));
	EXPECT(fired[1] == 1 && fired[0] == 2);
	EXPECT(never == 0);

	for (int i = 1; i <= N; i++)
		posix_env_close(e[i]);
	for (int k = 0; k < 10; k++)
		uv_run(&loop, UV_RUN_NOWAIT);
	for (int i = 1; i <= N; i++)
		posix_env_free(e[i]);
	EXPECT(uv_loop_close(&loop) == 0);
}

TEST(queue_to_a_dead_peer_is_bounded)
{
	uv_loop_t loop;
	uv_loop_init(&loop);
	struct posix_env *e = NULL;
	for (int attempt = 0; attempt < 20 && !e; attempt++) {
		base_port = 20000 + (int)((getpid() * 13 + attempt * 101) % 30000);
		e = make_env(&loop, 1, 4096); /* peers 2, 3 never start */
	}
	ASSERT(e);
	struct env env;
	posix_env_fill(e, &env);
	for (int k = 0; k < 1000; k++)
		send_hb(&env, 1, 2, 1);
	for (int k = 0; k < 20; k++)
		uv_run(&loop, UV_RUN_NOWAIT);
	struct posix_env_peer_stats st[N];
	uint32_t np = posix_env_peer_stats(e, st, N);
	bool checked = false;
	for (uint32_t i = 0; i < np; i++) {
		if (st[i].id != 2)
			continue;
		checked = true;
		EXPECT(st[i].queued_bytes <= 4096);
		EXPECT(st[i].dropped_full > 0);
		EXPECT(!st[i].connected);
	}
	EXPECT(checked);
	posix_env_close(e);
	for (int k = 0; k < 10; k++)
		uv_run(&loop, UV_RUN_NOWAIT);
	posix_env_free(e);
	EXPECT(uv_loop_close(&loop) == 0);
}

static uint64_t burst_want;

static bool burst_arrived(void)
{
	return got[2].frames[1] >= burst_want;
}

/* 600 appends of 32 KiB (~19 MiB) sent in one go, without the loop
 * running in between: the socket fills, so frames are written in part
 * and the rest by a queued write, over and over. Every frame must arrive
 * intact (the CRC) and in order (the terms), on the one connection. */
TEST(burst_larger_than_the_socket_buffers_arrives_whole_and_in_order)
{
	uv_loop_t loop;
	uv_loop_init(&loop);
	struct posix_env *e[3] = {0};
	for (int attempt = 0; attempt < 20; attempt++) {
		base_port = 20000 + (int)((getpid() * 11 + attempt * 89) % 30000);
		e[1] = make_env(&loop, 1, 0);
		e[2] = e[1] ? make_env(&loop, 2, 0) : NULL;
		if (e[1] && e[2])
			break;
		for (int i = 1; i <= 2; i++)
			if (e[i]) {
				posix_env_close(e[i]);
				uv_run(&loop, UV_RUN_NOWAIT);
				posix_env_free(e[i]);
				e[i] = NULL;
			}
	}
	ASSERT(e[1] && e[2]);
	struct env env[3];
	for (int i = 1; i <= 2; i++) {
		memset(&env[i], 0, sizeof(env[i]));
		posix_env_fill(e[i], &env[i]);
	}
	memset(&got[2], 0, sizeof(got[2]));
	send_hb(&env[1], 1, 2, 1); /* connect first */
	burst_want = 1;
	ASSERT(run_until(&loop, burst_arrived, 5000));

	enum { FRAMES = 600, DATA = 32 * 1024 };
	static uint8_t data[DATA];
	size_t cap = PEER_MIN_FRAME_SIZE + PEER_MSG_FIXED_SIZE +
		     PEER_ENTRY_HEADER_SIZE + DATA;
	uint8_t *buf = malloc(cap);
	ASSERT(buf);
	for (uint32_t k = 0; k < FRAMES; k++) {
		for (size_t i = 0; i < DATA; i++)
			data[i] = (uint8_t)(k * 31 + i);
		struct raft_entry ent = {.term = k + 2, .index = k + 1,
					 .type = RAFT_ENTRY_NORMAL,
					 .len = DATA, .data = data};
		struct raft_msg m = {.type = RAFT_MSG_APPEND, .from = 1, .to = 2,
				     .term = k + 2, .index = k,
				     .log_term = k + 1, .n_entries = 1,
				     .entries = &ent};
		size_t n = 0;
		ASSERT(peer_encode(&m, 9, buf, cap, &n) == 0);
		env[1].net.ops->send(env[1].net.ctx, 2, buf, n);
	}
	free(buf);
	burst_want = 1 + FRAMES;
	EXPECT(run_until(&loop, burst_arrived, 20000));
	EXPECT_EQ_U64(got[2].frames[1], 1 + FRAMES);
	EXPECT_EQ_U64(got[2].out_of_order, 0);
	EXPECT_EQ_U64(got[2].last_term, FRAMES + 1);
	struct posix_env_peer_stats st[N];
	uint32_t np = posix_env_peer_stats(e[2], st, N);
	for (uint32_t i = 0; i < np; i++)
		if (st[i].id == 1) {
			EXPECT_EQ_U64(st[i].bad_frames, 0);
			EXPECT_EQ_U64(st[i].reconnects, 0);
		}
	for (int i = 1; i <= 2; i++)
		posix_env_close(e[i]);
	for (int k = 0; k < 10; k++)
		uv_run(&loop, UV_RUN_NOWAIT);
	for (int i = 1; i <= 2; i++)
		posix_env_free(e[i]);
	EXPECT(uv_loop_close(&loop) == 0);
}

TEST(address_parsing)
{
	struct sockaddr_storage ss;
	EXPECT(posix_env_parse_addr("127.0.0.1:7101", &ss) == 0);
	EXPECT(posix_env_parse_addr("[::1]:7101", &ss) == 0);
	EXPECT(posix_env_parse_addr("localhost:1", &ss) == 0);
	EXPECT(posix_env_parse_addr("127.0.0.1", &ss) == KEEL_ERR_INVAL);
	EXPECT(posix_env_parse_addr("127.0.0.1:0", &ss) == KEEL_ERR_INVAL);
	EXPECT(posix_env_parse_addr("127.0.0.1:65536", &ss) == KEEL_ERR_INVAL);
	EXPECT(posix_env_parse_addr("127.0.0.1:7x", &ss) == KEEL_ERR_INVAL);
	EXPECT(posix_env_parse_addr("example.com:80", &ss) == KEEL_ERR_INVAL);
	EXPECT(posix_env_parse_addr("[::1:7101", &ss) == KEEL_ERR_INVAL);
}

/* ---- the disk thread: snapshot jobs in the one FIFO queue ------------------ */

#include "keel/memdisk.h"
#include "keel/wal_worker.h"

struct wlog {
	int seq[64];
	int status[64];
	int n;
	uint8_t read[4096];
	size_t read_len;
};

struct wtag {
	struct wlog *l;
	int id;
};

static void w_cb(void *arg, int status)
{
	struct wtag *t = arg;
	t->l->status[t->l->n] = status;
	t->l->seq[t->l->n++] = t->id;
}

static void w_read_cb(void *arg, int status, const uint8_t *data, size_t len)
{
	struct wtag *t = arg;
	if (!status && len <= sizeof(t->l->read)) {
		memcpy(t->l->read, data, len);
		t->l->read_len = len;
	}
	if (status)
		KEEL_ASSERT(data == NULL && len == 0);
	t->l->status[t->l->n] = status;
	t->l->seq[t->l->n++] = t->id;
}

static int w_append(struct env_store *st, uint64_t index, struct wtag *t)
{
	uint8_t x = (uint8_t)index;
	struct raft_entry e = {.term = 1, .index = index, .len = 1, .data = &x};
	struct env_store_write w = {.truncate_from = index, .n_entries = 1,
				    .entries = &e};
	return st->ops->append(st->ctx, &w, w_cb, t);
}

/* Drains until `want` callbacks ran (bounded: ~5 s). */
static void w_wait(struct wal_worker *ww, struct wlog *l, int want)
{
	for (int i = 0; i < 5000 && l->n < want; i++) {
		wal_worker_drain(ww);
		if (l->n < want)
			usleep(1000);
	}
}

TEST(wal_worker_runs_snapshot_jobs_in_order_with_appends)
{
	struct memdisk *d = memdisk_create(NULL, 1);
	struct wal_config wc = {.disk = memdisk_disk(d), .cluster_id = 9,
				.segment_bytes = 64 << 10};
	struct wal *w = NULL;
	struct wal_recovered rec;
	char err[256];
	ASSERT(wal_open(&wc, &w, &rec, err, sizeof(err)) == 0);
	struct wal_worker *ww = NULL;
	ASSERT(wal_worker_start(w, NULL, NULL, &ww) == 0);
	struct env_store_state loaded = {0};
	struct env_store st = wal_worker_store(ww, &loaded);
	struct wlog l = {.n = 0};
	struct wtag t[40];
	for (int i = 0; i < 40; i++)
		t[i] = (struct wtag){.l = &l, .id = i};
	static uint8_t p[200000];
	for (size_t i = 0; i < sizeof(p); i++)
		p[i] = (uint8_t)(i * 7 + 3);
	/* Appends, a LOCAL snapshot streamed in chunks with appends in
	 * between, its finish, reads (one past the end), more appends. */
	int id = 0;
	ASSERT(w_append(&st, 1, &t[id++]) == 0);
	ASSERT(w_append(&st, 2, &t[id++]) == 0);
	struct env_store_snap sn = {.index = 2, .term = 1,
				    .total_len = sizeof(p),
				    .kind = ENV_SNAP_LOCAL};
	uint64_t h = 0, h2 = 0;
	ASSERT(st.ops->snap_begin(st.ctx, &sn, &h) == 0 && h > 0);
	EXPECT(st.ops->snap_begin(st.ctx, &sn, &h2) == KEEL_ERR_BUSY);
	uint64_t next = 3;
	for (size_t off = 0; off < sizeof(p); off += 50000) {
		ASSERT(st.ops->snap_write(st.ctx, h, off, p + off, 50000, w_cb,
					  &t[id++]) == 0);
		ASSERT(w_append(&st, next++, &t[id++]) == 0);
	}
	ASSERT(st.ops->snap_finish(st.ctx, h, keel_crc32c(0, p, sizeof(p)),
				   w_cb, &t[id++]) == 0);
	EXPECT(st.ops->snap_write(st.ctx, h, 0, p, 1, w_cb, &t[39]) ==
	       KEEL_ERR_INVAL); /* finished: the handle is closed */
	int read_id = id;
	ASSERT(st.ops->snap_read(st.ctx, 2, 1, 1000, 3000, w_read_cb,
				 &t[id++]) == 0);
	ASSERT(st.ops->snap_read(st.ctx, 2, 1, sizeof(p) - 10, 20, w_read_cb,
				 &t[id++]) == 0);
	ASSERT(st.ops->snap_read(st.ctx, 7, 1, 0, 20, w_read_cb, &t[id++]) == 0);
	ASSERT(w_append(&st, next++, &t[id++]) == 0);
	w_wait(ww, &l, id);
	EXPECT_EQ_U64(l.n, id);
	for (int i = 0; i < l.n; i++)
		EXPECT_EQ_U64(l.seq[i], i);
	for (int i = 0; i < l.n; i++)
		if (i != read_id + 1 && i != read_id + 2)
			EXPECT_EQ_U64(l.status[i], 0);
	EXPECT_EQ_U64(l.status[read_id + 1], KEEL_ERR_INVAL);
	EXPECT_EQ_U64(l.status[read_id + 2], KEEL_ERR_NOT_FOUND);
	EXPECT(l.read_len == 3000 && !memcmp(l.read, p + 1000, 3000));
	/* The queued-bytes cap (ENV_SNAP_QUEUE_MAX): 16 chunks of 64 KiB
	 * fit, the 17th waits for completions (BUSY, no callback). */
	sn = (struct env_store_snap){.index = 5, .term = 1,
				     .total_len = 17 << 16,
				     .kind = ENV_SNAP_LOCAL};
	ASSERT(st.ops->snap_begin(st.ctx, &sn, &h) == 0);
	static uint8_t chunk[1 << 16];
	int base = l.n, queued = 0;
	struct wtag tt = {.l = &l, .id = 100};
	for (int i = 0; i < 17; i++) {
		int rv = st.ops->snap_write(st.ctx, h, (uint64_t)i << 16, chunk,
					    sizeof(chunk), w_cb, &tt);
		if (rv == 0)
			queued++;
		else
			EXPECT(rv == KEEL_ERR_BUSY);
		if (rv)
			break;
	}
	/* Completed chunks count as queued until drained on this thread,
	 * so the cap is exact whatever the worker did meanwhile. */
	EXPECT_EQ_U64(queued, 16);
	st.ops->snap_abort(st.ctx, h);
	w_wait(ww, &l, base + queued);
	EXPECT_EQ_U64(l.n, base + queued);
	wal_worker_stop(ww);
	wal_recovered_free(w, &rec);
	wal_close(w);
	/* After a restart the snapshot is what load names. */
	ASSERT(wal_open(&wc, &w, &rec, err, sizeof(err)) == 0);
	EXPECT_EQ_U64(rec.snap_index, 2);
	EXPECT_EQ_U64(rec.snap_len, sizeof(p));
	EXPECT_EQ_U64(rec.n_entries, next - 1 - 2);
	wal_recovered_free(w, &rec);
	wal_close(w);
	memdisk_destroy(d);
}

/* Runs append 1, then begin + chunk 1 (+ waits when `isolate`), append 2,
 * chunk 2, finish, append 3, with a one-shot ENOSPC armed after `after`
 * more writes. Returns the number of completions; statuses in *l. */
static int poison_run(int after, bool isolate, struct wlog *l)
{
	struct memdisk *d = memdisk_create(NULL, 2);
	struct wal_config wc = {.disk = memdisk_disk(d), .cluster_id = 9,
				.segment_bytes = 64 << 10};
	struct wal *w = NULL;
	struct wal_recovered rec;
	char err[256];
	KEEL_ASSERT(wal_open(&wc, &w, &rec, err, sizeof(err)) == 0);
	struct wal_worker *ww = NULL;
	KEEL_ASSERT(wal_worker_start(w, NULL, NULL, &ww) == 0);
	struct env_store_state loaded = {0};
	struct env_store st = wal_worker_store(ww, &loaded);
	static struct wtag t[8];
	for (int i = 0; i < 8; i++)
		t[i] = (struct wtag){.l = l, .id = i};
	static uint8_t p[4096];
	KEEL_ASSERT(w_append(&st, 1, &t[0]) == 0);
	w_wait(ww, l, 1);
	KEEL_ASSERT(l->n == 1 && l->status[0] == 0);
	/* The worker is idle: arming the fault here races with nothing. */
	memdisk_fail(d, MEMDISK_OP_WRITE, (uint64_t)after, KEEL_ERR_NOSPACE,
		     false);
	struct env_store_snap sn = {.index = 1, .term = 1,
				    .total_len = sizeof(p),
				    .kind = ENV_SNAP_LOCAL};
	uint64_t h = 0;
	KEEL_ASSERT(st.ops->snap_begin(st.ctx, &sn, &h) == 0);
	KEEL_ASSERT(st.ops->snap_write(st.ctx, h, 0, p, 2048, w_cb, &t[1]) == 0);
	if (isolate)
		w_wait(ww, l, 2);
	KEEL_ASSERT(w_append(&st, 2, &t[2]) == 0);
	KEEL_ASSERT(st.ops->snap_write(st.ctx, h, 2048, p + 2048, 2048, w_cb,
				       &t[3]) == 0);
	KEEL_ASSERT(st.ops->snap_finish(st.ctx, h,
					keel_crc32c(0, p, sizeof(p)), w_cb,
					&t[4]) == 0);
	KEEL_ASSERT(w_append(&st, 3, &t[5]) == 0);
	w_wait(ww, l, 6);
	wal_worker_stop(ww);
	wal_recovered_free(w, &rec);
	wal_close(w);
	memdisk_destroy(d);
	return l->n;
}

TEST(wal_worker_snapshot_write_error_poisons_what_follows)
{
	/* The first chunk alone in its batch (the begin's truncate is the
	 * one write allowed): its pwrite fails, and it and everything
	 * after it complete with the error, the appends included. */
	struct wlog l = {.n = 0};
	EXPECT_EQ_U64(poison_run(1, true, &l), 6);
	for (int i = 1; i < l.n; i++)
		EXPECT_EQ_U64(l.status[i], KEEL_ERR_NOSPACE);
	/* Without waiting, the worker may batch the jobs any way and stage
	 * appends ahead of chunk writes; whichever write fails, no
	 * completion after the first failed one (in issue order) is 0. */
	for (int after = 1; after <= 3; after++) {
		for (int rep = 0; rep < 3; rep++) {
			struct wlog m = {.n = 0};
			EXPECT_EQ_U64(poison_run(after, false, &m), 6);
			int first = 0;
			for (int i = 1; i < m.n && !first; i++)
				if (m.status[i])
					first = i;
			EXPECT(first > 0);
			for (int i = first; first && i < m.n; i++)
				EXPECT_EQ_U64(m.status[i], KEEL_ERR_NOSPACE);
		}
	}
}
