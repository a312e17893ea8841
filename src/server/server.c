/*
 * server.c -- `keel server`: one process, one libuv loop thread running
 * the node over the posix env, the WAL on the disk thread, and a RESP
 * client listener.
 *
 * Per client connection: a RESP parser over a fixed 64 KiB read buffer, a
 * reply queue that restores request order (node replies complete out of
 * order), and two output buffers (one being written by libuv, one being
 * filled), so a reply is never appended to bytes the kernel is still
 * reading. Writes are issued once per loop turn (a prepare and a check
 * handle flush every connection marked dirty), so a pipeline of N commands
 * costs a handful of write(2) calls, not N.
 *
 * Bounds: a connection stops being read while it has SERVER_MAX_PENDING
 * unanswered commands or SERVER_OUT_SOFT_BYTES of unsent output, and is
 * closed if one reply would push it past SERVER_OUT_HARD_BYTES. So a client
 * that pipelines without reading stalls itself, not the server.
 *
 * Lifetime of a connection: its node requests carry a pointer to their
 * reply slot as the cookie. A connection that closes while requests are at
 * the node stays allocated (a zombie, no socket) until the last of them is
 * answered -- the node answers every accepted request within its request
 * timeout -- so a late reply never touches freed memory.
 *
 * Shutdown (SIGTERM/SIGINT): stop accepting and reading, give in-flight
 * requests a bounded grace period, cut the peers off, wait for the disk
 * thread to finish every write already issued, then destroy the node, stop
 * the disk thread, close the WAL and every handle.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "keel/kv.h"
#include "keel/node.h"
#include "keel/posix_disk.h"
#include "keel/posix_env.h"
#include "keel/resp.h"
#include "keel/server.h"
#include "keel/wal.h"
#include "keel/wal_worker.h"

#define RBUF_BYTES (64u * 1024)
#define KEEL_VERSION "0.1.0"
#define REDIS_COMPAT_VERSION "7.0.0"
#define NODE_MAX_PENDING 65536
#define GRACE_MS 2000      /* in-flight requests at shutdown */
#define STORE_DRAIN_MS 5000 /* in-flight disk writes at shutdown */

struct server;

/* A queued command: one allocation holding the argv, the lengths, the
 * bytes and its argument count in decimal (as KEEL.EXEC carries it). */
struct txn_cmd {
	size_t argc;
	const uint8_t **argv;
	size_t *lens;
	char count[24];
	size_t count_len;
};

/* A watched key and what the WATCH read saw: its mod_revision (0 =
 * absent) and the revision of the read, in decimal; key bytes follow. */
struct txn_watch {
	char mod[24], rev[24];
	size_t mod_len, rev_len;
	size_t len;
	uint8_t key[];
};

/* A WATCH at the node: its keys (copied), the reply slot's aux. */
struct watch_req {
	size_t n;
	const uint8_t **keys;
	size_t *lens;
};

/* The reply slot's aux of an EXEC (never dereferenced). */
static const char exec_mark_;
#define EXEC_MARK ((void *)(uintptr_t)&exec_mark_)

struct conn {
	struct conn *next, *prev;
	struct server *s;
	uv_tcp_t tcp;
	uint64_t id;
	struct resp_parser parser;
	struct server_replyq q;
	struct resp_buf out;  /* being filled */
	struct resp_buf wbuf; /* being written by libuv */
	uv_write_t wreq;
	uint32_t node_pending; /* requests at the node, not yet answered */
	uint32_t pending_kind; /* SERVER_CMD_READ or _WRITE while node_pending */
	/* A command that must wait for the ones in flight (see
	 * must_wait): copied here, input paused until it can go. */
	struct resp_command held;
	void *held_mem;
	/* --test-bug reorder (planted bug): the first write of this read of
	 * the input, its reply slot already queued, handed to the node only
	 * after the next write (reorder_write); swapped: done for this read. */
	struct resp_command swap_cmd;
	void *swap_mem;
	struct server_reply_slot *swap_slot;
	bool swapped;
	/* MULTI/EXEC/WATCH (docs/server.md "Transactions"): the queue of
	 * copied commands, whether one was refused while queuing (EXEC then
	 * aborts), the watched keys with what a linearizable read saw, and
	 * WATCH reads still at the node. */
	bool in_multi;
	bool multi_error;
	struct txn_cmd **mq;
	uint32_t mq_n, mq_cap;
	size_t mq_args, mq_bytes;
	struct txn_watch **watches;
	uint32_t n_watches, watches_cap;
	size_t watch_bytes;
	uint32_t watch_inflight;
	bool writing;
	bool paused;   /* reading stopped: too much pending or unsent */
	bool quitting; /* QUIT or a protocol error: close once flushed */
	bool closing;  /* uv_close issued */
	bool closed;   /* handle closed: only node_pending keeps it */
	bool dirty; /* on the server's dirty list */
	struct conn *dirty_next;
	bool readonly;
	int proto;
	uint64_t created_ms;
	char name[128];
	size_t rlen, roff;
	uint8_t rbuf[RBUF_BYTES];
};

/* One operation forwarded to the disk thread: the caller's callback (cb for
 * writes, read_cb for snapshot reads) and the server whose in-flight count
 * it is part of. */
struct store_wait {
	env_store_cb cb;
	env_store_read_cb read_cb;
	void *arg;
	struct server *s;
};

struct fault_disk {
	struct keel_disk inner;
	atomic_uint_fast64_t sync_delay_ms;
};

enum phase { PHASE_RUN = 0, PHASE_GRACE, PHASE_STORE_DRAIN, PHASE_DONE };

struct server {
	struct server_config cfg;
	uv_loop_t loop;
	uv_tcp_t listener;
	bool listening;
	uv_signal_t sig_term, sig_int;
	uv_async_t wal_async;
	uv_prepare_t prep;
	uv_check_t check;
	uv_timer_t phase_timer;
	struct posix_env *penv;
	struct env env;
	struct posix_disk *disk;
	struct fault_disk fdisk;
	struct wal *wal;
	struct wal_worker *ww;
	struct env_store inner_store;
	struct node *node;
	struct conn *conns;
	struct conn *dirty; /* connections with output to flush or input to resume */
	bool sweep;         /* a zombie got its last reply: free it at the flush */
	uint32_t n_clients;
	uint64_t next_client_id;
	uint64_t store_issued, store_done;
	int phase;
	uint64_t phase_deadline_ms;
	uint64_t start_ms;
	struct resp_buf scratch;
	struct env_store_state loaded;
	struct wal_recovered rec;
	bool have_rec;
	/* stats */
	uint64_t total_connections, rejected_connections, total_commands;
	uint64_t error_replies, protocol_errors, closed_overflow;
	uint64_t node_replies[NODE_STATUS_COUNT];
	uint64_t net_in_bytes, net_out_bytes;
	/* client output flushes done by one write(2) in conn_flush, and
	 * those that needed a uv_write (socket full or partial) */
	uint64_t client_writes_direct, client_writes_queued;
};

static uint64_t mono_ms(void)
{
	return uv_hrtime() / 1000000u;
}

static void slog(struct server *s, int level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void slog(struct server *s, int level, const char *fmt, ...)
{
	char buf[768];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (s->penv)
		posix_env_log(s->penv, level, buf);
	else if (level >= s->cfg.log_level)
		fprintf(stderr, "node=%" PRIu64 " msg=\"%s\"\n", s->cfg.id, buf);
}

/* ---- output helpers ------------------------------------------------------- */

/* Appends raw bytes to a resp_buf, with its cap and sticky failure. */
static void buf_append(struct resp_buf *b, const uint8_t *p, size_t n)
{
	if (b->failed || !n)
		return;
	if (b->len + n > b->max_bytes) {
		b->failed = RESP_ERR_TOO_BIG;
		return;
	}
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap < b->len + n)
			cap *= 2;
		if (cap > b->max_bytes)
			cap = b->max_bytes;
		uint8_t *nd = b->alloc->realloc(b->alloc->ctx, b->data, cap);
		if (!nd) {
			b->failed = RESP_ERR_NOMEM;
			return;
		}
		b->data = nd;
		b->cap = cap;
	}
	memcpy(b->data + b->len, p, n);
	b->len += n;
}

static void write_err(struct resp_buf *b, const char *s)
{
	resp_write_error(b, s, strlen(s));
}

static void write_str(struct resp_buf *b, const char *s)
{
	resp_write_simple(b, s, strlen(s));
}

static void write_cstr_bulk(struct resp_buf *b, const char *s)
{
	resp_write_bulk(b, s, strlen(s));
}

/* kv reply tapes played into a resp_buf. */
static void kr_status(void *ctx, const char *s)
{
	write_str(ctx, s);
}
static void kr_error(void *ctx, const char *s)
{
	write_err(ctx, s);
}
static void kr_integer(void *ctx, int64_t v)
{
	resp_write_integer(ctx, v);
}
static void kr_bulk(void *ctx, const uint8_t *p, size_t len)
{
	resp_write_bulk(ctx, p, len);
}
static void kr_null(void *ctx)
{
	resp_write_null(ctx);
}
static void kr_array(void *ctx, size_t n)
{
	resp_write_array(ctx, n);
}

static const struct kv_reply_ops resp_kv_ops = {
	.status = kr_status,
	.error = kr_error,
	.integer = kr_integer,
	.bulk = kr_bulk,
	.null = kr_null,
	.array = kr_array,
};

/* ---- connections -------------------------------------------------------------- */

static void conn_mark_dirty(struct conn *c);
static void conn_process_input(struct conn *c);
static void exec_command(struct conn *c, const struct resp_command *cmd);
static void conn_maybe_resume(struct conn *c);

/* ---- transaction state ---------------------------------------------------------- */

static void txn_clear_queue(struct conn *c)
{
	for (uint32_t i = 0; i < c->mq_n; i++)
		free(c->mq[i]);
	c->mq_n = 0;
	c->mq_args = c->mq_bytes = 0;
	c->in_multi = false;
	c->multi_error = false;
}

static void txn_clear_watches(struct conn *c)
{
	for (uint32_t i = 0; i < c->n_watches; i++)
		free(c->watches[i]);
	c->n_watches = 0;
	c->watch_bytes = 0;
}

/* DISCARD, EXEC and connection close: the queue and the watches go. */
static void txn_clear(struct conn *c)
{
	txn_clear_queue(c);
	txn_clear_watches(c);
}

static void conn_free(struct conn *c)
{
	struct server *s = c->s;
	if (c->dirty)
		for (struct conn **p = &s->dirty; *p; p = &(*p)->dirty_next)
			if (*p == c) {
				*p = c->dirty_next;
				break;
			}
	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	resp_parser_close(&c->parser);
	txn_clear(c);
	free(c->mq);
	free(c->watches);
	free(c->held_mem);
	free(c->swap_mem);
	server_replyq_close(&c->q);
	resp_buf_close(&c->out);
	resp_buf_close(&c->wbuf);
	free(c);
}

static void conn_closed_cb(uv_handle_t *h)
{
	struct conn *c = h->data;
	c->closed = true;
	c->s->n_clients--;
	if (!c->node_pending)
		conn_free(c);
}

static void conn_close(struct conn *c, const char *why)
{
	if (c->closing)
		return;
	c->closing = true;
	slog(c->s, ENV_LOG_DEBUG, "client %" PRIu64 " closed: %s", c->id, why);
	uv_close((uv_handle_t *)&c->tcp, conn_closed_cb);
}

static void write_cb(uv_write_t *req, int status);

static void conn_flush(struct conn *c)
{
	if (c->closing || c->writing)
		return;
	if (c->out.failed) {
		c->s->closed_overflow++;
		slog(c->s, ENV_LOG_WARN,
		     "client %" PRIu64 ": reply over the %zu-byte output cap: closing",
		     c->id, (size_t)SERVER_OUT_HARD_BYTES);
		conn_close(c, "output over its cap");
		return;
	}
	if (c->out.len == 0) {
		if (c->quitting && c->q.n == 0)
			conn_close(c, "quit");
		return;
	}
	/* First a write(2) right here: the usual case (the socket has room)
	 * is then done without a uv_write request, whose completion costs a
	 * callback in the next loop iteration and an epoll_ctl (libuv
	 * re-arms the fd when the write queue drains): one of each per
	 * reply at 64 clients. */
	c->s->net_out_bytes += c->out.len;
	uv_buf_t b = uv_buf_init((char *)c->out.data, (unsigned)c->out.len);
	int rv = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
	if (rv == UV_EAGAIN || rv == UV_ENOSYS)
		rv = 0;
	if (rv < 0) {
		conn_close(c, uv_strerror(rv));
		return;
	}
	if ((size_t)rv == c->out.len) {
		c->s->client_writes_direct++;
		resp_buf_reset(&c->out);
		if (c->quitting && c->q.n == 0) {
			conn_close(c, "quit");
			return;
		}
		/* As write_cb would: output below its cap may let a
		 * paused connection read again. */
		conn_maybe_resume(c);
		return;
	}
	/* Swap: libuv reads wbuf until write_cb; replies go into out. */
	struct resp_buf t = c->wbuf;
	c->wbuf = c->out;
	c->out = t;
	resp_buf_reset(&c->out);
	c->writing = true;
	c->wreq.data = c;
	b = uv_buf_init((char *)c->wbuf.data + rv,
			(unsigned)(c->wbuf.len - (size_t)rv));
	c->s->client_writes_queued++;
	rv = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, write_cb);
	if (rv < 0) {
		c->writing = false;
		conn_close(c, uv_strerror(rv));
	}
}

static void write_cb(uv_write_t *req, int status)
{
	struct conn *c = req->data;
	c->writing = false;
	resp_buf_reset(&c->wbuf);
	if (status < 0) {
		conn_close(c, uv_strerror(status));
		return;
	}
	conn_maybe_resume(c);
	conn_flush(c);
}

static void conn_mark_dirty(struct conn *c)
{
	if (c->dirty)
		return;
	c->dirty = true;
	c->dirty_next = c->s->dirty;
	c->s->dirty = c;
}

/* Once per loop phase: O(connections with work), not O(connections). */
static void flush_dirty(struct server *s)
{
	if (s->sweep) {
		/* Zombies whose last node reply came: free them first. */
		s->sweep = false;
		for (struct conn *c = s->conns, *next; c; c = next) {
			next = c->next;
			if (c->closed && !c->node_pending)
				conn_free(c);
		}
	}
	/* Take the list: connections marked while we work (a node reply
	 * to another client) go on a new one, flushed at the next phase. */
	struct conn *list = s->dirty;
	s->dirty = NULL;
	while (list) {
		struct conn *c = list;
		list = c->dirty_next;
		c->dirty = false;
		c->dirty_next = NULL;
		conn_maybe_resume(c);
		if (!c->closing)
			conn_flush(c);
	}
}

static void prep_cb(uv_prepare_t *h)
{
	flush_dirty(h->data);
}

static void check_cb(uv_check_t *h)
{
	flush_dirty(h->data);
}

/* Moves every complete reply at the head of the queue to the output. */
static void conn_drain_queue(struct conn *c)
{
	struct server_reply_slot *sl;
	while ((sl = server_replyq_ready(&c->q))) {
		buf_append(&c->out, sl->bytes, sl->len);
		server_replyq_drop_head(&c->q);
	}
	conn_mark_dirty(c);
}

/* The buffer a reply is encoded into: straight into the output when no
 * earlier reply is outstanding, else a scratch buffer for a queue slot. */
static struct resp_buf *reply_target(struct conn *c)
{
	if (c->q.n == 0)
		return &c->out;
	resp_buf_reset(&c->s->scratch);
	resp_buf_set_proto(&c->s->scratch, c->proto);
	return &c->s->scratch;
}

/* Finishes a local reply written through reply_target. */
static void reply_done(struct conn *c, struct resp_buf *t)
{
	if (t == &c->out) {
		conn_mark_dirty(c);
		return;
	}
	struct server_reply_slot *sl = server_replyq_push(&c->q);
	if (!sl || t->failed ||
	    server_replyq_complete(&c->q, sl, t->data, t->len)) {
		/* Queue full cannot happen (reading pauses first); memory
		 * trouble closes this client rather than reordering replies. */
		conn_close(c, "out of memory for a reply");
		return;
	}
	conn_drain_queue(c);
}

static bool conn_over_limits(const struct conn *c)
{
	return c->q.n >= SERVER_MAX_PENDING ||
	       c->out.len + c->wbuf.len >= SERVER_OUT_SOFT_BYTES;
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct conn *c = h->data;
	(void)suggested;
	buf->base = (char *)c->rbuf + c->rlen;
	buf->len = RBUF_BYTES - c->rlen;
}

static void read_cb(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
	struct conn *c = st->data;
	(void)buf;
	if (n < 0) {
		conn_close(c, n == UV_EOF ? "closed by client" : uv_strerror((int)n));
		return;
	}
	c->rlen += (size_t)n;
	c->s->net_in_bytes += (uint64_t)n;
	conn_process_input(c);
}

static void conn_pause(struct conn *c)
{
	if (!c->paused) {
		c->paused = true;
		uv_read_stop((uv_stream_t *)&c->tcp);
	}
}

static void conn_maybe_resume(struct conn *c)
{
	if (!c->paused || c->closing || c->quitting || conn_over_limits(c) ||
	    c->s->phase != PHASE_RUN || (c->held_mem && c->node_pending))
		return;
	c->paused = false;
	conn_process_input(c);
	if (!c->paused && !c->closing && !c->quitting)
		uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
}

/* ---- node replies --------------------------------------------------------------- */

static void encode_node_reply(struct server *s, struct resp_buf *b,
			      const struct node_reply *r)
{
	char msg[256];
	switch (r->status) {
	case NODE_OK:
		if (kv_tape_play(r->tape, r->tape_len, &resp_kv_ops, b)) {
			resp_buf_reset(b);
			write_err(b, "ERR internal error: malformed reply tape");
		}
		return;
	case NODE_NOT_LEADER:
		if (r->leader_hint)
			snprintf(msg, sizeof(msg),
				 "TRYAGAIN no leader reachable (last known leader: "
				 "node %" PRIu64 "); not executed, try again later",
				 r->leader_hint);
		else
			snprintf(msg, sizeof(msg),
				 "TRYAGAIN no leader (election in progress?); not "
				 "executed, try again later");
		break;
	case NODE_DROPPED:
		if (node_poisoned(s->node))
			snprintf(msg, sizeof(msg),
				 "ERR node %" PRIu64 " stopped after a storage "
				 "failure (see its log); not executed, use another "
				 "node",
				 s->cfg.id);
		else
			snprintf(msg, sizeof(msg),
				 "TRYAGAIN not executed (leader changed, busy, or "
				 "a later write of this connection ran first); "
				 "safe to retry");
		break;
	case NODE_UNKNOWN:
		snprintf(msg, sizeof(msg),
			 "UNCERTAIN timed out after the command was proposed: it "
			 "may or may not have been applied");
		break;
	default:
		snprintf(msg, sizeof(msg), "ERR internal error: node status %d",
			 r->status);
		break;
	}
	s->error_replies++;
	write_err(b, msg);
}

/* Collects KEEL.WATCH-REVS's reply: one array of integers. */
struct watch_tape {
	int64_t *v;
	size_t n, cap;
	int arrays;
	bool bad;
};

static void wt_bad(void *ctx, const char *s)
{
	(void)s;
	((struct watch_tape *)ctx)->bad = true;
}
static void wt_integer(void *ctx, int64_t v)
{
	struct watch_tape *t = ctx;
	if (t->arrays != 1 || t->n >= t->cap)
		t->bad = true;
	else
		t->v[t->n++] = v;
}
static void wt_bulk(void *ctx, const uint8_t *p, size_t len)
{
	(void)p;
	(void)len;
	((struct watch_tape *)ctx)->bad = true;
}
static void wt_null(void *ctx)
{
	((struct watch_tape *)ctx)->bad = true;
}
static void wt_array(void *ctx, size_t n)
{
	struct watch_tape *t = ctx;
	if (t->arrays++ || n != t->cap)
		t->bad = true;
}
static const struct kv_reply_ops watch_tape_ops = {
	wt_bad, wt_bad, wt_integer, wt_bulk, wt_null, wt_array,
};

static bool watching(const struct conn *c, const uint8_t *key, size_t len)
{
	for (uint32_t i = 0; i < c->n_watches; i++)
		if (c->watches[i]->len == len &&
		    (!len || !memcmp(c->watches[i]->key, key, len)))
			return true;
	return false;
}

/* A WATCH's read came back: remember, for each key not watched yet, its
 * mod_revision (0 = absent) and the revision the read saw, then +OK. Any
 * other reply shape is played to the client as it is. */
static void watch_done(struct conn *c, const struct watch_req *w,
		       const struct node_reply *r, struct resp_buf *b)
{
	struct watch_tape t = {.cap = w->n + 1};
	t.v = malloc(t.cap * sizeof(*t.v));
	if (!t.v) {
		write_err(b, "ERR out of memory");
		return;
	}
	if (kv_tape_play(r->tape, r->tape_len, &watch_tape_ops, &t) ||
	    t.bad || t.n != t.cap) {
		free(t.v);
		encode_node_reply(c->s, b, r);
		return;
	}
	char rev[24];
	size_t rev_len = kv_fmt_u64((uint64_t)t.v[0], rev);
	for (size_t i = 0; i < w->n; i++) {
		if (watching(c, w->keys[i], w->lens[i]))
			continue; /* Redis keeps the first WATCH of a key */
		if (c->n_watches == c->watches_cap) {
			uint32_t cap = c->watches_cap ? 2 * c->watches_cap : 8;
			void *p = realloc(c->watches, cap * sizeof(*c->watches));
			if (!p)
				goto nomem;
			c->watches = p;
			c->watches_cap = cap;
		}
		struct txn_watch *x = malloc(sizeof(*x) + w->lens[i]);
		if (!x)
			goto nomem;
		x->len = w->lens[i];
		if (x->len)
			memcpy(x->key, w->keys[i], x->len);
		x->mod_len = kv_fmt_u64((uint64_t)t.v[i + 1], x->mod);
		memcpy(x->rev, rev, rev_len + 1);
		x->rev_len = rev_len;
		c->watches[c->n_watches++] = x;
		c->watch_bytes += x->len;
	}
	free(t.v);
	write_str(b, "OK");
	return;
nomem:
	free(t.v);
	/* Watching fewer keys than asked would let EXEC run on a change it
	 * should have seen: forget them all and say so. */
	txn_clear_watches(c);
	write_err(b, "ERR out of memory while watching keys (all watches "
		     "dropped)");
}

static void on_node_reply(void *ctx, const struct node_reply *r)
{
	struct server *s = ctx;
	if (!r->cookie)
		return; /* --test-bug early-ack: answered already */
	struct server_reply_slot *sl = (struct server_reply_slot *)(uintptr_t)r->cookie;
	struct conn *c = sl->ctx;
	KEEL_ASSERT(c && c->node_pending > 0);
	KEEL_ASSERT(!sl->done);
	c->node_pending--;
	/* aux: a WATCH's keys, or EXEC_MARK for an EXEC (its nil is Redis's
	 * null array), or NULL. */
	bool is_exec = sl->aux == EXEC_MARK;
	struct watch_req *w = is_exec ? NULL : sl->aux;
	sl->aux = NULL;
	if (w) {
		KEEL_ASSERT(c->watch_inflight > 0);
		c->watch_inflight--;
	}
	if (r->status >= 0 && r->status < NODE_STATUS_COUNT)
		s->node_replies[r->status]++;
	if (c->closed) {
		free(w);
		/* The socket is gone; the slot is freed with the queue, and
		 * the connection by the next sweep (not here: callers may be
		 * walking the connection list). */
		sl->done = true;
		if (!c->node_pending)
			s->sweep = true;
		return;
	}
	struct resp_buf *b = &s->scratch;
	resp_buf_reset(b);
	/* The protocol in force when the command was read: a later HELLO
	 * in the same pipeline must not change this reply. */
	resp_buf_set_proto(b, sl->proto);
	if (w && r->status == NODE_OK)
		watch_done(c, w, r, b);
	else if (is_exec && r->status == NODE_OK && r->tape_len == 1 &&
		 r->tape[0] == 'n')
		resp_write_null_array(b); /* a watched key changed */
	else
		encode_node_reply(s, b, r);
	free(w);
	if (b->failed) {
		resp_buf_reset(b);
		write_err(b, "ERR reply too large for this server's output cap");
	}
	if (c->q.head == sl && !c->closing) {
		/* The reply the client waits for next (the usual case): to
		 * the output now, without the slot's own copy of the bytes
		 * (a malloc, a memcpy and a free per reply). The same bytes
		 * in the same order as completing the slot and draining. */
		buf_append(&c->out, b->data, b->len);
		server_replyq_drop_head(&c->q);
		conn_drain_queue(c);
		return;
	}
	if (server_replyq_complete(&c->q, sl, b->data, b->len)) {
		sl->done = true;
		conn_close(c, "out of memory for a reply");
		return;
	}
	if (c->closing)
		return;
	/* Only queue the bytes: this runs inside the node's update loop,
	 * which must not be re-entered (resuming the input could call
	 * node_request). The flush after this loop turn resumes reading. */
	conn_drain_queue(c);
}

/* ---- local commands --------------------------------------------------------------- */

static bool arg_is(const struct resp_command *cmd, size_t i, const char *s)
{
	return i < cmd->argc && strlen(s) == cmd->argv_len[i] &&
	       !strncasecmp(s, (const char *)cmd->argv[i], cmd->argv_len[i]);
}

/* Strict decimal (optional '-'), as Redis's string2ll. */
static bool arg_int(const struct resp_command *cmd, size_t i, int64_t *out)
{
	char tmp[32];
	size_t n = cmd->argv_len[i];
	if (n == 0 || n >= sizeof(tmp))
		return false;
	memcpy(tmp, cmd->argv[i], n);
	tmp[n] = 0;
	size_t k = tmp[0] == '-' ? 1 : 0;
	if (k == n)
		return false;
	for (size_t j = k; j < n; j++)
		if (tmp[j] < '0' || tmp[j] > '9')
			return false;
	if (n - k > 1 && tmp[k] == '0')
		return false;
	errno = 0;
	char *end;
	long long v = strtoll(tmp, &end, 10);
	if (errno || *end)
		return false;
	*out = v;
	return true;
}

static void h_ping(struct conn *c, const struct resp_command *cmd,
		   struct resp_buf *b)
{
	(void)c;
	if (cmd->argc > 2) {
		write_err(b, "ERR wrong number of arguments for 'ping' command");
		return;
	}
	if (cmd->argc == 2)
		resp_write_bulk(b, cmd->argv[1], cmd->argv_len[1]);
	else
		write_str(b, "PONG");
}

static void hello_reply(struct conn *c, struct resp_buf *b)
{
	resp_write_map(b, 7);
	write_cstr_bulk(b, "server");
	write_cstr_bulk(b, "keel");
	write_cstr_bulk(b, "version");
	write_cstr_bulk(b, REDIS_COMPAT_VERSION);
	write_cstr_bulk(b, "proto");
	resp_write_integer(b, c->proto);
	write_cstr_bulk(b, "id");
	resp_write_integer(b, (int64_t)c->id);
	write_cstr_bulk(b, "mode");
	write_cstr_bulk(b, "standalone");
	write_cstr_bulk(b, "role");
	struct raft_status st;
	raft_status(node_raft(c->s->node), &st);
	write_cstr_bulk(b, st.role == RAFT_LEADER ? "master" : "replica");
	write_cstr_bulk(b, "modules");
	resp_write_array(b, 0);
}

static bool valid_client_name(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] < '!' || p[i] > '~')
			return false;
	return true;
}

static void h_hello(struct conn *c, const struct resp_command *cmd,
		    struct resp_buf *b)
{
	int proto = c->proto;
	size_t i = 1;
	if (cmd->argc >= 2) {
		int64_t v;
		if (!arg_int(cmd, 1, &v)) {
			write_err(b, "ERR Protocol version is not an integer or out "
				     "of range");
			return;
		}
		if (v != 2 && v != 3) {
			write_err(b, "NOPROTO unsupported protocol version");
			return;
		}
		proto = (int)v;
		i = 2;
	}
	const uint8_t *name = NULL;
	size_t name_len = 0;
	bool set_name = false;
	for (; i < cmd->argc; i++) {
		if (arg_is(cmd, i, "auth") && i + 2 < cmd->argc) {
			/* No users or passwords yet: the default user, like a
			 * Redis without requirepass. */
			if (!arg_is(cmd, i + 1, "default")) {
				write_err(b, "WRONGPASS invalid username-password "
					     "pair or user is disabled.");
				return;
			}
			i += 2;
		} else if (arg_is(cmd, i, "setname") && i + 1 < cmd->argc) {
			name = cmd->argv[i + 1];
			name_len = cmd->argv_len[i + 1];
			set_name = true;
			i++;
		} else {
			char msg[200];
			snprintf(msg, sizeof(msg), "ERR Syntax error in HELLO option '%.*s'",
				 (int)KEEL_MIN(cmd->argv_len[i], 64),
				 (const char *)cmd->argv[i]);
			write_err(b, msg);
			return;
		}
	}
	if (set_name) {
		if (!valid_client_name(name, name_len) ||
		    name_len >= sizeof(c->name)) {
			write_err(b, "ERR Client names cannot contain spaces, newlines "
				     "or special characters.");
			return;
		}
		memcpy(c->name, name, name_len);
		c->name[name_len] = 0;
	}
	/* The reply already goes out in the new protocol. */
	c->proto = proto;
	resp_buf_set_proto(b, proto);
	resp_buf_set_proto(&c->out, proto);
	resp_buf_set_proto(&c->wbuf, proto);
	hello_reply(c, b);
}

static void h_select(struct conn *c, const struct resp_command *cmd,
		     struct resp_buf *b)
{
	(void)c;
	int64_t v;
	if (!arg_int(cmd, 1, &v))
		write_err(b, "ERR value is not an integer or out of range");
	else if (v != 0)
		write_err(b, "ERR DB index is out of range");
	else
		write_str(b, "OK");
}

static void h_client(struct conn *c, const struct resp_command *cmd,
		     struct resp_buf *b)
{
	if (arg_is(cmd, 1, "id") && cmd->argc == 2) {
		resp_write_integer(b, (int64_t)c->id);
	} else if (arg_is(cmd, 1, "getname") && cmd->argc == 2) {
		if (c->name[0])
			write_cstr_bulk(b, c->name);
		else
			resp_write_null(b);
	} else if (arg_is(cmd, 1, "setname") && cmd->argc == 3) {
		if (!valid_client_name(cmd->argv[2], cmd->argv_len[2]) ||
		    cmd->argv_len[2] >= sizeof(c->name)) {
			write_err(b, "ERR Client names cannot contain spaces, newlines "
				     "or special characters.");
			return;
		}
		memcpy(c->name, cmd->argv[2], cmd->argv_len[2]);
		c->name[cmd->argv_len[2]] = 0;
		write_str(b, "OK");
	} else if (arg_is(cmd, 1, "setinfo") && cmd->argc == 4) {
		write_str(b, "OK"); /* library name/version: accepted, unused */
	} else if (arg_is(cmd, 1, "id") || arg_is(cmd, 1, "getname") ||
		   arg_is(cmd, 1, "setname") || arg_is(cmd, 1, "setinfo")) {
		char msg[160];
		char sub[16] = "";
		for (size_t i = 0; i < cmd->argv_len[1] && i < sizeof(sub) - 1; i++)
			sub[i] = (char)((cmd->argv[1][i] >= 'A' && cmd->argv[1][i] <= 'Z')
						? cmd->argv[1][i] + 32
						: cmd->argv[1][i]);
		snprintf(msg, sizeof(msg),
			 "ERR wrong number of arguments for 'client|%s' command", sub);
		write_err(b, msg);
	} else {
		char msg[200];
		snprintf(msg, sizeof(msg),
			 "ERR unknown subcommand '%.*s'. Try CLIENT HELP.",
			 (int)KEEL_MIN(cmd->argv_len[1], 64),
			 (const char *)cmd->argv[1]);
		write_err(b, msg);
	}
}

static uint32_t flag_count(const struct server_command *sc)
{
	uint32_t n = 0;
	n += !!(sc->flags & SERVER_CMD_WRITE);
	n += !!(sc->flags & SERVER_CMD_READ);
	n += !!(sc->flags & SERVER_CMD_ADMIN);
	n += !!(sc->flags & SERVER_CMD_FAST);
	return n;
}

static void command_info(struct resp_buf *b, const struct server_command *sc)
{
	resp_write_array(b, 10);
	write_cstr_bulk(b, sc->name);
	resp_write_integer(b, sc->arity);
	resp_write_set(b, flag_count(sc));
	if (sc->flags & SERVER_CMD_WRITE)
		write_str(b, "write");
	if (sc->flags & SERVER_CMD_READ)
		write_str(b, "readonly");
	if (sc->flags & SERVER_CMD_ADMIN)
		write_str(b, "admin");
	if (sc->flags & SERVER_CMD_FAST)
		write_str(b, "fast");
	resp_write_integer(b, sc->first_key);
	resp_write_integer(b, sc->last_key);
	resp_write_integer(b, sc->step);
	/* ACL categories: the row's "@a @b" as a set of "@a", "@b" */
	uint32_t ncat = 0;
	for (const char *p = sc->acl; p && *p; p++)
		ncat += *p == '@';
	resp_write_set(b, ncat);
	for (const char *p = sc->acl; p && *p;) {
		const char *e = strchr(p, ' ');
		size_t l = e ? (size_t)(e - p) : strlen(p);
		if (l)
			resp_write_bulk(b, (const uint8_t *)p, l);
		p += l + (e != NULL);
	}
	resp_write_set(b, 0); /* tips */
	resp_write_array(b, 0); /* key specs */
	resp_write_array(b, 0); /* subcommands */
}

static void command_docs(struct resp_buf *b, const struct server_command *sc)
{
	write_cstr_bulk(b, sc->name);
	resp_write_map(b, 3);
	write_cstr_bulk(b, "summary");
	write_cstr_bulk(b, sc->summary);
	write_cstr_bulk(b, "since");
	write_cstr_bulk(b, "0.1.0");
	write_cstr_bulk(b, "group");
	write_cstr_bulk(b, sc->group);
}

static bool client_visible(const struct server *s, const struct server_command *sc)
{
	return !(sc->flags & SERVER_CMD_FAULTS) || s->cfg.test_faults;
}

static void h_command(struct conn *c, const struct resp_command *cmd,
		      struct resp_buf *b)
{
	struct server *s = c->s;
	uint32_t total = server_command_count(), visible = 0;
	for (uint32_t i = 0; i < total; i++)
		visible += client_visible(s, server_command_at(i));
	if (cmd->argc == 1) {
		resp_write_array(b, visible);
		for (uint32_t i = 0; i < total; i++)
			if (client_visible(s, server_command_at(i)))
				command_info(b, server_command_at(i));
	} else if (arg_is(cmd, 1, "count") && cmd->argc == 2) {
		resp_write_integer(b, visible);
	} else if (arg_is(cmd, 1, "list") && cmd->argc == 2) {
		resp_write_array(b, visible);
		for (uint32_t i = 0; i < total; i++)
			if (client_visible(s, server_command_at(i)))
				write_cstr_bulk(b, server_command_at(i)->name);
	} else if (arg_is(cmd, 1, "docs")) {
		if (cmd->argc == 2) {
			resp_write_map(b, visible);
			for (uint32_t i = 0; i < total; i++)
				if (client_visible(s, server_command_at(i)))
					command_docs(b, server_command_at(i));
			return;
		}
		uint32_t n = 0;
		for (size_t i = 2; i < cmd->argc; i++) {
			const struct server_command *sc =
				server_command_lookup(cmd->argv[i], cmd->argv_len[i]);
			n += sc && client_visible(s, sc);
		}
		resp_write_map(b, n);
		for (size_t i = 2; i < cmd->argc; i++) {
			const struct server_command *sc =
				server_command_lookup(cmd->argv[i], cmd->argv_len[i]);
			if (sc && client_visible(s, sc))
				command_docs(b, sc);
		}
	} else if (arg_is(cmd, 1, "info")) {
		resp_write_array(b, cmd->argc - 2);
		for (size_t i = 2; i < cmd->argc; i++) {
			const struct server_command *sc =
				server_command_lookup(cmd->argv[i], cmd->argv_len[i]);
			if (sc && client_visible(s, sc))
				command_info(b, sc);
			else
				resp_write_null_array(b);
		}
	} else {
		char msg[200];
		snprintf(msg, sizeof(msg),
			 "ERR unknown subcommand or wrong number of arguments for "
			 "'%.*s'. Try COMMAND HELP.",
			 (int)KEEL_MIN(cmd->argv_len[1], 64),
			 (const char *)cmd->argv[1]);
		write_err(b, msg);
	}
}

/* ---- INFO ------------------------------------------------------------------- */

struct text {
	char *p;
	size_t len, cap;
};

static void tx(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void tx(struct text *t, const char *fmt, ...)
{
	va_list ap;
	for (;;) {
		size_t room = t->cap - t->len;
		va_start(ap, fmt);
		int n = vsnprintf(t->p ? t->p + t->len : NULL, t->p ? room : 0, fmt, ap);
		va_end(ap);
		if (n < 0)
			return;
		if (t->p && (size_t)n < room) {
			t->len += (size_t)n;
			return;
		}
		size_t cap = t->cap ? t->cap * 2 : 4096;
		while (cap < t->len + (size_t)n + 1)
			cap *= 2;
		char *np = realloc(t->p, cap);
		if (!np)
			return;
		t->p = np;
		t->cap = cap;
	}
}

static bool want_section(const struct resp_command *cmd, const char *name)
{
	if (cmd->argc < 2)
		return true;
	for (size_t i = 1; i < cmd->argc; i++)
		if (arg_is(cmd, i, name) || arg_is(cmd, i, "all") ||
		    arg_is(cmd, i, "everything") || arg_is(cmd, i, "default"))
			return true;
	return false;
}

static uint64_t wall_ms(struct server *s)
{
	return s->env.clock.ops->wall_ms(s->env.clock.ctx);
}

static void info_text(struct server *s, const struct resp_command *cmd,
		      struct text *t)
{
	struct raft_status st;
	raft_status(node_raft(s->node), &st);
	uint64_t up_s = (mono_ms() - s->start_ms) / 1000;
	if (want_section(cmd, "server")) {
		tx(t, "# Server\r\n");
		tx(t, "redis_version:%s\r\n", REDIS_COMPAT_VERSION);
		tx(t, "keel_version:%s\r\n", KEEL_VERSION);
		tx(t, "redis_mode:standalone\r\n");
		tx(t, "process_id:%ld\r\n", (long)getpid());
		tx(t, "node_id:%" PRIu64 "\r\n", s->cfg.id);
		tx(t, "cluster_id:%" PRIu64 "\r\n", s->cfg.cluster_id);
		tx(t, "client_addr:%s\r\n", s->cfg.client_addr);
		tx(t, "peer_addr:%s\r\n", s->cfg.peer_addr);
		tx(t, "data_dir:%s\r\n", s->cfg.data_dir);
		tx(t, "uptime_in_seconds:%" PRIu64 "\r\n", up_s);
		tx(t, "uptime_in_days:%" PRIu64 "\r\n", up_s / 86400);
		tx(t, "test_faults:%d\r\n", s->cfg.test_faults ? 1 : 0);
		tx(t, "\r\n");
	}
	if (want_section(cmd, "clients")) {
		tx(t, "# Clients\r\n");
		tx(t, "connected_clients:%u\r\n", s->n_clients);
		tx(t, "maxclients:%u\r\n", s->cfg.max_clients);
		tx(t, "blocked_clients:0\r\n");
		tx(t, "\r\n");
	}
	if (want_section(cmd, "stats")) {
		struct node_stats ns;
		node_stats(s->node, &ns);
		struct wal_worker_stats ws;
		wal_worker_stats(s->ww, &ws);
		tx(t, "# Stats\r\n");
		tx(t, "total_connections_received:%" PRIu64 "\r\n", s->total_connections);
		tx(t, "total_commands_processed:%" PRIu64 "\r\n", s->total_commands);
		tx(t, "rejected_connections:%" PRIu64 "\r\n", s->rejected_connections);
		tx(t, "total_error_replies:%" PRIu64 "\r\n", s->error_replies);
		tx(t, "total_net_input_bytes:%" PRIu64 "\r\n", s->net_in_bytes);
		tx(t, "total_net_output_bytes:%" PRIu64 "\r\n", s->net_out_bytes);
		tx(t, "client_writes_direct:%" PRIu64 "\r\n",
		   s->client_writes_direct);
		tx(t, "client_writes_queued:%" PRIu64 "\r\n",
		   s->client_writes_queued);
		tx(t, "protocol_errors:%" PRIu64 "\r\n", s->protocol_errors);
		tx(t, "clients_closed_output_cap:%" PRIu64 "\r\n", s->closed_overflow);
		tx(t, "node_replies_ok:%" PRIu64 "\r\n", s->node_replies[NODE_OK]);
		tx(t, "node_replies_not_leader:%" PRIu64 "\r\n",
		   s->node_replies[NODE_NOT_LEADER]);
		tx(t, "node_replies_dropped:%" PRIu64 "\r\n", s->node_replies[NODE_DROPPED]);
		tx(t, "node_replies_unknown:%" PRIu64 "\r\n", s->node_replies[NODE_UNKNOWN]);
		tx(t, "peer_frames_in:%" PRIu64 "\r\n", ns.frames_in);
		tx(t, "peer_frames_out:%" PRIu64 "\r\n", ns.frames_out);
		tx(t, "peer_frames_bad:%" PRIu64 "\r\n", ns.frames_bad);
		tx(t, "fwd_writes_sent:%" PRIu64 "\r\n", ns.fwd_writes_sent);
		tx(t, "fwd_reads_sent:%" PRIu64 "\r\n", ns.fwd_reads_sent);
		tx(t, "expire_proposed:%" PRIu64 "\r\n", ns.expire_proposed);
		tx(t, "dedup_skipped:%" PRIu64 "\r\n", ns.dedup_skipped);
		tx(t, "order_refused:%" PRIu64 "\r\n", ns.order_refused);
		tx(t, "window_waits:%" PRIu64 "\r\n", ns.window_waits);
		tx(t, "session_runs:%" PRIu64 "\r\n", ns.session_runs);
		tx(t, "session_dups:%" PRIu64 "\r\n", ns.session_dups);
		tx(t, "node_batch_runs:%" PRIu64 "\r\n", ns.batch_runs);
		tx(t, "node_batched_requests:%" PRIu64 "\r\n", ns.batched_requests);
		tx(t, "node_batch_max:%" PRIu64 "\r\n", ns.batch_max);
		tx(t, "snapshots_taken:%" PRIu64 "\r\n", ns.snap_taken);
		tx(t, "snapshots_finished:%" PRIu64 "\r\n", ns.snap_finished);
		tx(t, "snapshot_compactions:%" PRIu64 "\r\n", ns.snap_compactions);
		tx(t, "snapshot_sends_started:%" PRIu64 "\r\n", ns.snap_sends_started);
		tx(t, "snapshot_sends_ok:%" PRIu64 "\r\n", ns.snap_sent_ok);
		tx(t, "snapshot_sends_failed:%" PRIu64 "\r\n", ns.snap_sent_failed);
		tx(t, "snapshot_chunks_sent:%" PRIu64 "\r\n", ns.snap_chunks_sent);
		tx(t, "snapshot_verify_failed:%" PRIu64 "\r\n", ns.snap_verify_failed);
		tx(t, "snapshot_installs:%" PRIu64 "\r\n", ns.snap_installs);
		tx(t, "snapshot_restored:%" PRIu64 "\r\n", ns.snap_restored);
		tx(t, "wal_writes:%" PRIu64 "\r\n", ws.writes);
		tx(t, "wal_syncs:%" PRIu64 "\r\n", ws.batches);
		tx(t, "wal_max_batch:%" PRIu64 "\r\n", ws.max_batch);
		tx(t, "\r\n");
	}
	if (want_section(cmd, "keyspace")) {
		const struct kv *kv = node_kv(s->node);
		struct kv_stats ks;
		kv_stats(kv, &ks);
		uint64_t keys = kv_dbsize(kv, wall_ms(s));
		tx(t, "# Keyspace\r\n");
		if (keys)
			tx(t, "db0:keys=%" PRIu64 ",expires=%" PRIu64 ",avg_ttl=0\r\n",
			   keys, ks.expires);
		tx(t, "\r\n");
	}
	if (want_section(cmd, "raft")) {
		tx(t, "# Raft\r\n");
		tx(t, "raft_node_id:%" PRIu64 "\r\n", s->cfg.id);
		tx(t, "raft_role:%s\r\n", raft_role_name((enum raft_role)st.role));
		tx(t, "raft_term:%" PRIu64 "\r\n", st.term);
		tx(t, "raft_leader:%" PRIu64 "\r\n", st.leader);
		tx(t, "raft_commit_index:%" PRIu64 "\r\n", st.commit);
		tx(t, "raft_applied_index:%" PRIu64 "\r\n", node_applied(s->node));
		tx(t, "raft_last_index:%" PRIu64 "\r\n", st.last_index);
		tx(t, "raft_last_term:%" PRIu64 "\r\n", st.last_term);
		tx(t, "raft_persisted_index:%" PRIu64 "\r\n", st.persisted);
		{
			struct node_stats sn;
			node_stats(s->node, &sn);
			tx(t, "raft_snapshot_index:%" PRIu64 "\r\n", sn.snap_index);
			tx(t, "raft_snapshot_in_progress:%" PRIu64 "\r\n",
			   sn.snap_writing);
		}
		tx(t, "raft_members:%u\r\n", s->cfg.n_members);
		tx(t, "raft_poisoned:%d\r\n", node_poisoned(s->node) ? 1 : 0);
		struct posix_env_peer_stats ps[RAFT_MAX_VOTERS];
		uint32_t np = posix_env_peer_stats(s->penv, ps, RAFT_MAX_VOTERS);
		for (uint32_t i = 0; i < s->cfg.n_members; i++) {
			raft_id id = s->cfg.members[i].id;
			if (id == s->cfg.id)
				continue;
			uint64_t match = 0, next = 0;
			bool known = false;
			for (uint32_t k = 0; st.role == RAFT_LEADER && k < st.n_peers; k++)
				if (st.peers[k].id == id) {
					match = st.peers[k].match;
					next = st.peers[k].next;
					known = true;
				}
			bool connected = false;
			for (uint32_t k = 0; k < np; k++)
				if (ps[k].id == id)
					connected = ps[k].connected;
			if (known)
				tx(t, "raft_peer_%" PRIu64 ":addr=%s,match=%" PRIu64
				      ",next=%" PRIu64 ",connected=%d\r\n",
				   id, s->cfg.members[i].addr, match, next, connected);
			else
				tx(t, "raft_peer_%" PRIu64 ":addr=%s,connected=%d\r\n", id,
				   s->cfg.members[i].addr, connected);
		}
		tx(t, "\r\n");
	}
	/* Redis ends without the final blank line. */
	if (t->len >= 2)
		t->len -= 2;
}

static void h_info(struct conn *c, const struct resp_command *cmd,
		   struct resp_buf *b)
{
	struct text t = {0};
	info_text(c->s, cmd, &t);
	if (c->proto == 3)
		resp_write_verbatim(b, "txt", t.p ? t.p : "", t.len);
	else
		resp_write_bulk(b, t.p ? t.p : "", t.len);
	free(t.p);
}

static void h_config(struct conn *c, const struct resp_command *cmd,
		     struct resp_buf *b)
{
	if (!arg_is(cmd, 1, "get")) {
		char msg[200];
		snprintf(msg, sizeof(msg),
			 "ERR CONFIG %.*s is not supported by keel (only CONFIG GET)",
			 (int)KEEL_MIN(cmd->argv_len[1], 32),
			 (const char *)cmd->argv[1]);
		write_err(b, msg);
		return;
	}
	if (cmd->argc < 3) {
		write_err(b, "ERR wrong number of arguments for 'config|get' command");
		return;
	}
	char maxc[32];
	snprintf(maxc, sizeof(maxc), "%u", c->s->cfg.max_clients);
	const char *kv[][2] = {
		{"appendonly", "yes"}, {"appendfsync", "always"},
		{"save", ""},          {"databases", "1"},
		{"maxclients", maxc},
	};
	bool hit[KEEL_ARRAY_LEN(kv)] = {0};
	uint32_t n = 0;
	for (size_t k = 0; k < KEEL_ARRAY_LEN(kv); k++)
		for (size_t i = 2; i < cmd->argc && !hit[k]; i++)
			if (kv_glob_match(cmd->argv[i], cmd->argv_len[i],
					  (const uint8_t *)kv[k][0], strlen(kv[k][0])))
				hit[k] = true, n++;
	resp_write_map(b, n);
	for (size_t k = 0; k < KEEL_ARRAY_LEN(kv); k++)
		if (hit[k]) {
			write_cstr_bulk(b, kv[k][0]);
			write_cstr_bulk(b, kv[k][1]);
		}
}

static void sync_delay_set(struct server *s, uint64_t ms)
{
	atomic_store(&s->fdisk.sync_delay_ms, ms);
}

static void h_debug(struct conn *c, const struct resp_command *cmd,
		    struct resp_buf *b)
{
	struct server *s = c->s;
	int64_t a, o, i;
	if (arg_is(cmd, 1, "drop") && cmd->argc == 5 && arg_int(cmd, 2, &a) &&
	    arg_int(cmd, 3, &o) && arg_int(cmd, 4, &i)) {
		posix_env_set_drop(s->penv, (raft_id)a, o != 0, i != 0);
		slog(s, ENV_LOG_WARN, "test fault: drop peer %" PRId64 " out=%d in=%d",
		     a, o != 0, i != 0);
		write_str(b, "OK");
	} else if (arg_is(cmd, 1, "heal") && cmd->argc == 2) {
		for (uint32_t k = 0; k < s->cfg.n_members; k++)
			posix_env_set_drop(s->penv, s->cfg.members[k].id, false, false);
		posix_env_set_clock_offset(s->penv, 0);
		sync_delay_set(s, 0);
		slog(s, ENV_LOG_WARN, "test fault: healed");
		write_str(b, "OK");
	} else if (arg_is(cmd, 1, "clock-offset-ms") && cmd->argc == 3 &&
		   arg_int(cmd, 2, &a) && a > -86400000LL * 365 &&
		   a < 86400000LL * 365) {
		posix_env_set_clock_offset(s->penv, a * 1000000);
		slog(s, ENV_LOG_WARN, "test fault: clock offset %" PRId64 " ms", a);
		write_str(b, "OK");
	} else if (arg_is(cmd, 1, "fsync-delay-ms") && cmd->argc == 3 &&
		   arg_int(cmd, 2, &a) && a >= 0 && a <= 60000) {
		sync_delay_set(s, (uint64_t)a);
		slog(s, ENV_LOG_WARN, "test fault: fsync delay %" PRId64 " ms", a);
		write_str(b, "OK");
	} else {
		write_err(b, "ERR usage: KEEL.DEBUG DROP peer out(0|1) in(0|1) | HEAL "
			     "| CLOCK-OFFSET-MS ms | FSYNC-DELAY-MS ms");
	}
}

/* ---- command dispatch --------------------------------------------------------- */

/* --test-bug early-ack (planted bug, tests only): a plain SET is answered
 * +OK as soon as it is handed to the node, before it commits; the node's
 * own answer comes back with cookie 0 and is dropped (on_node_reply). */
static bool maybe_early_ack(struct conn *c, const struct resp_command *cmd)
{
	if (c->s->cfg.test_bug != SERVER_BUG_EARLY_ACK || cmd->argc != 3 ||
	    cmd->argv_len[0] != 3 || strncasecmp((const char *)cmd->argv[0], "set", 3))
		return false;
	struct node_request req = {.argc = 3, .argv = cmd->argv, .lens = cmd->argv_len};
	(void)node_request(c->s->node, &req);
	struct resp_buf *b = reply_target(c);
	write_str(b, "OK");
	reply_done(c, b);
	return true;
}

/* Hands one node command to the node; its reply slot sl is queued and
 * counted in node_pending already, sl->aux set (a WATCH's request, or
 * EXEC_MARK). */
static void hand_to_node(struct conn *c, struct server_reply_slot *sl,
			 const struct resp_command *cmd)
{
	struct server *s = c->s;
	struct watch_req *w =
		sl->aux && sl->aux != EXEC_MARK ? (struct watch_req *)sl->aux
						: NULL;
	struct node_request req = {
		.cookie = (uint64_t)(uintptr_t)sl,
		/* --test-bug stale-read (planted bug): every read local. */
		.flags = !w && (c->readonly ||
				s->cfg.test_bug == SERVER_BUG_STALE_READ)
				 ? NODE_REQ_LOCAL : 0,
		/* Redis's program order: this connection's writes take effect
		 * in the order it sent them (or the later ones not at all). */
		.stream = c->id,
		.argc = (uint32_t)cmd->argc,
		.argv = cmd->argv,
		.lens = cmd->argv_len,
	};
	int rv = node_request(s->node, &req);
	if (rv) {
		/* No answer will come (the contract: INVAL for commands kv
		 * does not route). Answer here. */
		c->node_pending--;
		sl->aux = NULL;
		if (w) {
			c->watch_inflight--;
			free(w);
		}
		struct resp_buf *b = &s->scratch;
		resp_buf_reset(b);
		resp_buf_set_proto(b, sl->proto);
		char msg[128];
		snprintf(msg, sizeof(msg), "ERR command refused by the node: %s",
			 keel_strerror(rv));
		write_err(b, msg);
		s->error_replies++;
		if (server_replyq_complete(&c->q, sl, b->data, b->len)) {
			sl->done = true;
			conn_close(c, "out of memory");
			return;
		}
		conn_drain_queue(c);
	}
}

static int copy_command(const struct resp_command *cmd, struct resp_command *out,
			void **mem);

/* --test-bug reorder's held-back write, to the node now (at the end of
 * every read of the input, and right after the write that overtook it). */
static void release_swapped(struct conn *c)
{
	if (!c->swap_mem)
		return;
	struct resp_command cmd = c->swap_cmd;
	void *m = c->swap_mem;
	struct server_reply_slot *sl = c->swap_slot;
	c->swap_mem = NULL;
	c->swap_slot = NULL;
	hand_to_node(c, sl, &cmd);
	free(m);
}

/* --test-bug reorder (planted bug, tests only): the first write read
 * from a connection's input in one go is held back; the next write read
 * in the same go is handed to the node first, then the held one. Their
 * reply slots keep request order, so the client sees Redis's reply order
 * while the node runs the two the other way round -- the program-order
 * violation of issue 12, which the pipeline workload must catch.
 * Returns true if it took over sl (held or handed). */
static bool reorder_write(struct conn *c, struct server_reply_slot *sl,
			  const struct resp_command *cmd)
{
	if (c->s->cfg.test_bug != SERVER_BUG_REORDER ||
	    c->pending_kind != SERVER_CMD_WRITE || c->swapped)
		return false;
	if (!c->swap_mem) {
		if (copy_command(cmd, &c->swap_cmd, &c->swap_mem))
			return false; /* no memory: no bug, in order */
		c->swap_slot = sl;
		return true;
	}
	hand_to_node(c, sl, cmd);
	c->swapped = true;
	release_swapped(c);
	return true;
}

/* Hands cmd (borrowed) to the node behind a new reply slot. w (owned,
 * or NULL) marks a WATCH: its read is always linearizable and its reply
 * is turned into watches (watch_done). */
static void send_to_node_w(struct conn *c, const struct resp_command *cmd,
			   struct watch_req *w, bool is_exec)
{
	if (!w && maybe_early_ack(c, cmd))
		return;
	struct server_reply_slot *sl = server_replyq_push(&c->q);
	if (!sl) {
		free(w);
		conn_close(c, "out of memory");
		return;
	}
	sl->ctx = c;
	sl->proto = c->proto;
	sl->aux = is_exec ? EXEC_MARK : w;
	c->node_pending++;
	if (w)
		c->watch_inflight++;
	if (!w && !is_exec && reorder_write(c, sl, cmd))
		return;
	hand_to_node(c, sl, cmd);
}

static void send_to_node(struct conn *c, const struct resp_command *cmd)
{
	send_to_node_w(c, cmd, NULL, false);
}

/* ---- MULTI / EXEC / DISCARD / WATCH / UNWATCH ------------------------------------ */

/* Inside MULTI these run at once; everything else is queued or refused. */
static bool txn_runs_in_multi(const struct server_command *sc)
{
	return sc && (sc->handler == SERVER_H_EXEC ||
		      sc->handler == SERVER_H_DISCARD ||
		      sc->handler == SERVER_H_MULTI ||
		      sc->handler == SERVER_H_WATCH ||
		      sc->handler == SERVER_H_QUIT);
}

static void reply_err_now(struct conn *c, const char *msg)
{
	struct resp_buf *b = reply_target(c);
	write_err(b, msg);
	c->s->error_replies++;
	reply_done(c, b);
}

static void reply_str_now(struct conn *c, const char *msg)
{
	struct resp_buf *b = reply_target(c);
	write_str(b, msg);
	reply_done(c, b);
}

/* Refuses a command read in MULTI: EXEC will abort (flagTransaction). */
static void multi_refuse(struct conn *c, const char *msg)
{
	c->multi_error = true;
	reply_err_now(c, msg);
}

/* A command read while in MULTI: copied into the queue (+QUEUED), or
 * refused with an error that makes EXEC abort (Redis's flagTransaction):
 * unknown, wrong arity, not allowed in a transaction, over a cap. */
static void multi_queue(struct conn *c, const struct server_command *sc,
			const struct resp_command *cmd)
{
	char msg[512];
	if (!sc || !server_command_arity_ok(sc, cmd->argc)) {
		if (!sc)
			server_err_unknown_command(msg, sizeof(msg), cmd->argc,
						   cmd->argv, cmd->argv_len);
		else
			server_err_arity(msg, sizeof(msg), cmd->argv[0],
					 cmd->argv_len[0]);
		multi_refuse(c, msg);
		return;
	}
	const struct kv_command *k =
		sc->handler == SERVER_H_NODE
			? kv_command_lookup(cmd->argv[0], cmd->argv_len[0])
			: NULL;
	if (!k || !kv_command_txn_allowed(k)) {
		/* Local commands (PING, CLIENT, ...) cannot run inside the
		 * log entry; FLUSHDB/FLUSHALL and KEEL.TXN are refused by kv. */
		multi_refuse(c, "ERR Command not allowed inside a transaction");
		return;
	}
	size_t bytes = 0;
	for (size_t i = 0; i < cmd->argc; i++)
		bytes += cmd->argv_len[i];
	if (c->mq_n >= SERVER_MULTI_MAX_CMDS ||
	    c->mq_args + 1 + cmd->argc > SERVER_MULTI_MAX_ARGS ||
	    c->mq_bytes + bytes > SERVER_MULTI_MAX_BYTES) {
		snprintf(msg, sizeof(msg),
			 "ERR keel: transaction too large (at most %u commands, "
			 "%u arguments and %u bytes queued)",
			 SERVER_MULTI_MAX_CMDS, SERVER_MULTI_MAX_ARGS,
			 SERVER_MULTI_MAX_BYTES);
		multi_refuse(c, msg);
		return;
	}
	if (c->mq_n == c->mq_cap) {
		uint32_t cap = c->mq_cap ? 2 * c->mq_cap : 8;
		void *p = realloc(c->mq, cap * sizeof(*c->mq));
		if (!p) {
			multi_refuse(c, "ERR out of memory");
			return;
		}
		c->mq = p;
		c->mq_cap = cap;
	}
	size_t sz = sizeof(struct txn_cmd) +
		    cmd->argc * (sizeof(uint8_t *) + sizeof(size_t)) + bytes;
	struct txn_cmd *q = malloc(sz);
	if (!q) {
		multi_refuse(c, "ERR out of memory");
		return;
	}
	q->argc = cmd->argc;
	q->argv = (const uint8_t **)(void *)(q + 1);
	q->lens = (size_t *)(void *)(q->argv + cmd->argc);
	uint8_t *data = (uint8_t *)(q->lens + cmd->argc);
	for (size_t i = 0; i < cmd->argc; i++) {
		if (cmd->argv_len[i])
			memcpy(data, cmd->argv[i], cmd->argv_len[i]);
		q->argv[i] = data;
		q->lens[i] = cmd->argv_len[i];
		data += cmd->argv_len[i];
	}
	q->count_len = kv_fmt_u64(cmd->argc, q->count);
	c->mq[c->mq_n++] = q;
	c->mq_args += 1 + cmd->argc;
	c->mq_bytes += bytes;
	reply_str_now(c, "QUEUED");
}

/* EXEC: the whole transaction, watches first, as one KEEL.EXEC write:
 *   KEEL.EXEC <nwatch> (<key> <mod> <rev>)... <ncmds> (<argc> <arg>...)...
 * The queue and the watches are gone afterwards, whatever the outcome. */
static void h_exec(struct conn *c)
{
	if (!c->in_multi) {
		reply_err_now(c, "ERR EXEC without MULTI");
		return;
	}
	if (c->multi_error) {
		txn_clear(c);
		reply_err_now(c, "EXECABORT Transaction discarded because of "
				 "previous errors.");
		return;
	}
	/* --test-bug watch-blind (planted bug, tests only): the conditions
	 * the WATCHes read are left out, so EXEC always runs. */
	uint32_t nwatch = c->s->cfg.test_bug == SERVER_BUG_WATCH_BLIND
				  ? 0
				  : c->n_watches;
	size_t argc = 3 + 3 * (size_t)nwatch + c->mq_args;
	void *m = malloc(argc * (sizeof(uint8_t *) + sizeof(size_t)));
	if (!m) {
		txn_clear(c);
		reply_err_now(c, "ERR out of memory; transaction discarded, not "
				 "executed");
		return;
	}
	const uint8_t **argv = m;
	size_t *lens = (size_t *)(void *)(argv + argc);
	char nw[24], nc[24];
	size_t i = 0;
#define PUT(p, l)                                                             \
	do {                                                                  \
		argv[i] = (const uint8_t *)(p);                               \
		lens[i] = (l);                                                \
		i++;                                                          \
	} while (0)
	PUT("KEEL.EXEC", 9);
	PUT(nw, kv_fmt_u64(nwatch, nw));
	for (uint32_t k = 0; k < nwatch; k++) {
		const struct txn_watch *x = c->watches[k];
		PUT(x->key, x->len);
		PUT(x->mod, x->mod_len);
		PUT(x->rev, x->rev_len);
	}
	PUT(nc, kv_fmt_u64(c->mq_n, nc));
	for (uint32_t k = 0; k < c->mq_n; k++) {
		const struct txn_cmd *q = c->mq[k];
		PUT(q->count, q->count_len);
		for (size_t j = 0; j < q->argc; j++)
			PUT(q->argv[j], q->lens[j]);
	}
#undef PUT
	KEEL_ASSERT(i == argc);
	struct resp_command ex = {.argc = argc, .argv = argv, .argv_len = lens};
	c->pending_kind = SERVER_CMD_WRITE;
	send_to_node_w(c, &ex, NULL, true); /* the node copies what it keeps */
	free(m);
	txn_clear(c);
}

static void h_watch(struct conn *c, const struct resp_command *cmd)
{
	if (c->in_multi) {
		reply_err_now(c, "ERR WATCH inside MULTI is not allowed");
		return;
	}
	size_t n = cmd->argc - 1, bytes = 0;
	for (size_t i = 1; i < cmd->argc; i++)
		bytes += cmd->argv_len[i];
	if (c->n_watches + n > SERVER_MAX_WATCHES ||
	    c->watch_bytes + bytes > SERVER_MAX_WATCH_BYTES) {
		char msg[160];
		snprintf(msg, sizeof(msg),
			 "ERR keel: too many watched keys (at most %u keys and "
			 "%u bytes per connection)",
			 SERVER_MAX_WATCHES, SERVER_MAX_WATCH_BYTES);
		reply_err_now(c, msg);
		return;
	}
	/* The keys are copied for the reply; argv[0] is swapped for
	 * KEEL.WATCH-REVS, a linearizable read of every key's mod_revision
	 * and the revision it was read at. */
	struct watch_req *w = malloc(sizeof(*w) +
				     cmd->argc * (sizeof(uint8_t *) +
						  sizeof(size_t)) +
				     bytes);
	if (!w) {
		reply_err_now(c, "ERR out of memory");
		return;
	}
	w->n = n;
	const uint8_t **argv = (const uint8_t **)(void *)(w + 1);
	size_t *lens = (size_t *)(void *)(argv + cmd->argc);
	uint8_t *data = (uint8_t *)(lens + cmd->argc);
	argv[0] = (const uint8_t *)"KEEL.WATCH-REVS";
	lens[0] = 15;
	for (size_t i = 1; i < cmd->argc; i++) {
		if (cmd->argv_len[i])
			memcpy(data, cmd->argv[i], cmd->argv_len[i]);
		argv[i] = data;
		lens[i] = cmd->argv_len[i];
		data += cmd->argv_len[i];
	}
	w->keys = argv + 1;
	w->lens = lens + 1;
	struct resp_command rd = {.argc = cmd->argc, .argv = argv,
				  .argv_len = lens};
	c->pending_kind = SERVER_CMD_READ;
	send_to_node_w(c, &rd, w, false);
}

static void exec_command(struct conn *c, const struct resp_command *cmd)
{
	struct server *s = c->s;
	s->total_commands++;
	const struct server_command *sc =
		server_command_lookup(cmd->argv[0], cmd->argv_len[0]);
	char msg[512];
	if (sc && (sc->flags & SERVER_CMD_FAULTS) && !s->cfg.test_faults) {
		struct resp_buf *b = reply_target(c);
		snprintf(msg, sizeof(msg),
			 "ERR %s is disabled: start keel server with --test-faults",
			 "KEEL.DEBUG");
		write_err(b, msg);
		s->error_replies++;
		reply_done(c, b);
		return;
	}
	if (c->in_multi && !txn_runs_in_multi(sc)) {
		multi_queue(c, sc, cmd);
		return;
	}
	if (!sc || !server_command_arity_ok(sc, cmd->argc)) {
		struct resp_buf *b = reply_target(c);
		if (!sc)
			server_err_unknown_command(msg, sizeof(msg), cmd->argc,
						   cmd->argv, cmd->argv_len);
		else
			server_err_arity(msg, sizeof(msg), cmd->argv[0],
					 cmd->argv_len[0]);
		write_err(b, msg);
		s->error_replies++;
		reply_done(c, b);
		return;
	}
	if (sc->handler == SERVER_H_NODE) {
		c->pending_kind = sc->flags & SERVER_CMD_WRITE ? SERVER_CMD_WRITE
							       : SERVER_CMD_READ;
		send_to_node(c, cmd);
		return;
	}
	switch (sc->handler) {
	case SERVER_H_MULTI:
		if (c->in_multi) {
			reply_err_now(c, "ERR MULTI calls can not be nested");
		} else {
			c->in_multi = true;
			c->multi_error = false;
			reply_str_now(c, "OK");
		}
		return;
	case SERVER_H_EXEC:
		h_exec(c);
		return;
	case SERVER_H_DISCARD:
		if (!c->in_multi) {
			reply_err_now(c, "ERR DISCARD without MULTI");
		} else {
			txn_clear(c);
			reply_str_now(c, "OK");
		}
		return;
	case SERVER_H_WATCH:
		h_watch(c, cmd);
		return;
	case SERVER_H_UNWATCH:
		txn_clear_watches(c);
		reply_str_now(c, "OK");
		return;
	default:
		break;
	}
	struct resp_buf *b = reply_target(c);
	switch (sc->handler) {
	case SERVER_H_PING:
		h_ping(c, cmd, b);
		break;
	case SERVER_H_ECHO:
		resp_write_bulk(b, cmd->argv[1], cmd->argv_len[1]);
		break;
	case SERVER_H_HELLO:
		h_hello(c, cmd, b);
		break;
	case SERVER_H_SELECT:
		h_select(c, cmd, b);
		break;
	case SERVER_H_QUIT:
		write_str(b, "OK");
		c->quitting = true;
		break;
	case SERVER_H_CLIENT:
		h_client(c, cmd, b);
		break;
	case SERVER_H_COMMAND:
		h_command(c, cmd, b);
		break;
	case SERVER_H_INFO:
		h_info(c, cmd, b);
		break;
	case SERVER_H_READONLY:
		c->readonly = true;
		write_str(b, "OK");
		break;
	case SERVER_H_READWRITE:
		c->readonly = false;
		write_str(b, "OK");
		break;
	case SERVER_H_CONFIG:
		h_config(c, cmd, b);
		break;
	case SERVER_H_DEBUG:
		h_debug(c, cmd, b);
		break;
	default:
		write_err(b, "ERR internal error: no handler");
		break;
	}
	reply_done(c, b);
}

/*
 * Program order per connection. Redis runs a connection's commands one
 * after another, so a pipelined GET after a SET sees it. keel runs node
 * commands concurrently, so a read may only start while no write of the
 * same connection is in flight, and a write only while no read is (else
 * the read's point could fall after it). Runs of reads, or of writes,
 * still pipeline: the leader proposes one connection's writes in order.
 */
static bool must_wait(const struct conn *c, const struct resp_command *cmd)
{
	if (!c->node_pending)
		return false;
	const struct server_command *sc =
		server_command_lookup(cmd->argv[0], cmd->argv_len[0]);
	if (!sc || !server_command_arity_ok(sc, cmd->argc))
		return false;
	/* Inside MULTI a command is only queued (or refused): it needs no
	 * turn. EXEC is a write; WATCH a read (it must see this
	 * connection's writes, and EXEC its watches); DISCARD and UNWATCH
	 * wait for WATCH reads still out, which would add watches after
	 * them. */
	if (c->in_multi && sc->handler != SERVER_H_EXEC)
		return false;
	uint32_t kind;
	switch (sc->handler) {
	case SERVER_H_NODE:
		kind = sc->flags & SERVER_CMD_WRITE ? SERVER_CMD_WRITE
						    : SERVER_CMD_READ;
		break;
	case SERVER_H_EXEC:
		if (c->watch_inflight)
			return true;
		kind = SERVER_CMD_WRITE;
		break;
	case SERVER_H_WATCH:
		kind = SERVER_CMD_READ;
		break;
	case SERVER_H_DISCARD:
	case SERVER_H_UNWATCH:
		return c->watch_inflight > 0;
	default:
		return false;
	}
	return kind != c->pending_kind;
}

/* Copies cmd (borrowed from the parser) into one allocation, *mem. */
static int copy_command(const struct resp_command *cmd, struct resp_command *out,
			void **mem)
{
	size_t bytes = cmd->argc * (sizeof(uint8_t *) + sizeof(size_t));
	for (size_t i = 0; i < cmd->argc; i++)
		bytes += cmd->argv_len[i];
	uint8_t *m = malloc(bytes ? bytes : 1);
	if (!m)
		return KEEL_ERR_NOMEM;
	const uint8_t **argv = (const uint8_t **)(void *)m;
	size_t *lens = (size_t *)(void *)(m + cmd->argc * sizeof(uint8_t *));
	uint8_t *data = (uint8_t *)(lens + cmd->argc);
	for (size_t i = 0; i < cmd->argc; i++) {
		memcpy(data, cmd->argv[i], cmd->argv_len[i]);
		argv[i] = data;
		lens[i] = cmd->argv_len[i];
		data += cmd->argv_len[i];
	}
	*mem = m;
	*out = (struct resp_command){.argc = cmd->argc, .argv = argv,
				     .argv_len = lens};
	return 0;
}

static int hold_command(struct conn *c, const struct resp_command *cmd)
{
	return copy_command(cmd, &c->held, &c->held_mem);
}

/* Runs the held command once nothing is in flight; true if none is left. */
static bool run_held(struct conn *c)
{
	if (!c->held_mem)
		return true;
	if (c->node_pending)
		return false;
	struct resp_command cmd = c->held;
	void *m = c->held_mem;
	c->held_mem = NULL;
	exec_command(c, &cmd);
	free(m);
	return true;
}

static void conn_process_batch(struct conn *c)
{
	if (!run_held(c))
		return;
	while (c->roff < c->rlen && !c->paused && !c->closing && !c->quitting) {
		if (conn_over_limits(c)) {
			conn_pause(c);
			break;
		}
		size_t used = 0;
		struct resp_command cmd;
		int rv = resp_parse(&c->parser, c->rbuf + c->roff,
				    c->rlen - c->roff, &used, &cmd);
		if (rv == RESP_NEED_MORE) {
			c->roff = c->rlen;
			break;
		}
		if (rv == RESP_OK) {
			c->roff += used;
			if (must_wait(c, &cmd)) {
				if (hold_command(c, &cmd)) {
					conn_close(c, "out of memory");
					return;
				}
				conn_pause(c);
				break;
			}
			exec_command(c, &cmd);
			continue;
		}
		/* Malformed or over a cap: an error after every earlier reply,
		 * then close (Redis's setProtocolError). */
		c->s->protocol_errors++;
		struct resp_buf *b = reply_target(c);
		char msg[160];
		snprintf(msg, sizeof(msg), "ERR %s",
			 rv == RESP_ERR_NOMEM ? "out of memory"
					      : resp_parser_error(&c->parser));
		write_err(b, msg);
		c->s->error_replies++;
		reply_done(c, b);
		slog(c->s, ENV_LOG_INFO, "client %" PRIu64 ": %s; closing", c->id,
		     msg + 4);
		c->quitting = true;
		c->roff = c->rlen;
	}
	if (c->quitting && !c->closing) {
		uv_read_stop((uv_stream_t *)&c->tcp);
		conn_mark_dirty(c);
	}
	if (c->roff == c->rlen) {
		c->roff = c->rlen = 0;
	} else if (c->roff) {
		memmove(c->rbuf, c->rbuf + c->roff, c->rlen - c->roff);
		c->rlen -= c->roff;
		c->roff = 0;
	}
	if (!c->closing && !c->quitting && conn_over_limits(c))
		conn_pause(c);
}

/* Runs what has been read. --test-bug reorder: what one call reads is
 * one "go"; a write it still holds back goes to the node before return. */
static void conn_process_input(struct conn *c)
{
	c->swapped = false;
	conn_process_batch(c);
	release_swapped(c);
}

static const struct resp_limits server_limits = {
	.max_bulk_len = SERVER_MAX_BULK_LEN,
	.max_array_len = SERVER_MAX_ARGS,
	.max_inline_len = RESP_DEFAULT_MAX_INLINE_LEN,
	.max_command_bytes = SERVER_MAX_COMMAND_BYTES,
};

static void accept_cb(uv_stream_t *ls, int status)
{
	struct server *s = ls->data;
	if (status < 0 || s->phase != PHASE_RUN)
		return;
	struct conn *c = calloc(1, sizeof(*c));
	if (!c)
		return;
	c->s = s;
	uv_tcp_init(&s->loop, &c->tcp);
	c->tcp.data = c;
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	s->n_clients++;
	c->id = ++s->next_client_id;
	c->proto = 2;
	c->created_ms = mono_ms();
	resp_parser_init(&c->parser, &keel_alloc_libc, &server_limits);
	server_replyq_init(&c->q, &keel_alloc_libc, SERVER_MAX_PENDING + 1);
	resp_buf_init(&c->out, &keel_alloc_libc, SERVER_OUT_HARD_BYTES, 2);
	resp_buf_init(&c->wbuf, &keel_alloc_libc, SERVER_OUT_HARD_BYTES, 2);
	if (uv_accept(ls, (uv_stream_t *)&c->tcp) != 0) {
		conn_close(c, "accept failed");
		return;
	}
	s->total_connections++;
	if (s->n_clients > s->cfg.max_clients) {
		s->rejected_connections++;
		static const char full[] = "-ERR max number of clients reached\r\n";
		uv_buf_t b = uv_buf_init((char *)full, sizeof(full) - 1);
		uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
		conn_close(c, "max clients");
		return;
	}
	uv_tcp_nodelay(&c->tcp, 1);
	uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
}

/* ---- the store wrapper: counts writes in flight (for shutdown) ------------- */

/* Every forwarded operation: allocate its store_wait, forward it (the inner
 * call gets the wait as its callback argument), count it issued. On a
 * refusal the wait is freed and nothing is counted. */
static struct store_wait *store_wait_new(struct server *s, env_store_cb cb,
					 env_store_read_cb rcb, void *arg)
{
	struct store_wait *sw = malloc(sizeof(*sw));
	if (sw)
		*sw = (struct store_wait){.cb = cb, .read_cb = rcb, .arg = arg,
					  .s = s};
	return sw;
}

static int store_forwarded(struct store_wait *sw, int rv)
{
	if (rv) {
		free(sw);
		return rv;
	}
	sw->s->store_issued++;
	return 0;
}

/* The completion side: frees the wait, counts it done, returns what it
 * held. */
static struct store_wait store_wait_take(struct store_wait *w)
{
	struct store_wait held = *w;
	free(w);
	held.s->store_done++;
	return held;
}

static void store_done_cb(void *arg, int status)
{
	struct store_wait w = store_wait_take(arg);
	struct server *s = w.s;
	if (status)
		slog(s, ENV_LOG_ERROR, "WAL write failed: %s (%s): this node stops "
		     "accepting writes", keel_strerror(status), wal_errmsg(s->wal));
	if (s->node)
		w.cb(w.arg, status);
}

static void store_read_done_cb(void *arg, int status, const uint8_t *data,
			       size_t len)
{
	struct store_wait w = store_wait_take(arg);
	if (w.s->node)
		w.read_cb(w.arg, status, data, len);
}

static int store_load(void *ctx, struct env_store_state *out)
{
	struct server *s = ctx;
	return s->inner_store.ops->load(s->inner_store.ctx, out);
}

static int store_append(void *ctx, const struct env_store_write *w,
			env_store_cb cb, void *arg)
{
	struct server *s = ctx;
	struct store_wait *sw = store_wait_new(s, cb, NULL, arg);
	if (!sw)
		return KEEL_ERR_NOMEM;
	return store_forwarded(sw, s->inner_store.ops->append(
					   s->inner_store.ctx, w, store_done_cb, sw));
}

/* Snapshot operations pass through with the same in-flight count (the
 * node's snapshot code is the caller: docs/snapshots.md §2). */
static int store_snap_begin(void *ctx, const struct env_store_snap *sn,
			    uint64_t *handle)
{
	struct server *s = ctx;
	return s->inner_store.ops->snap_begin(s->inner_store.ctx, sn, handle);
}

static int store_snap_write(void *ctx, uint64_t handle, uint64_t offset,
			    const uint8_t *data, size_t len, env_store_cb cb,
			    void *arg)
{
	struct server *s = ctx;
	struct store_wait *sw = store_wait_new(s, cb, NULL, arg);
	if (!sw)
		return KEEL_ERR_NOMEM;
	return store_forwarded(sw, s->inner_store.ops->snap_write(
					   s->inner_store.ctx, handle, offset,
					   data, len, store_done_cb, sw));
}

static int store_snap_finish(void *ctx, uint64_t handle, uint32_t crc,
			     env_store_cb cb, void *arg)
{
	struct server *s = ctx;
	struct store_wait *sw = store_wait_new(s, cb, NULL, arg);
	if (!sw)
		return KEEL_ERR_NOMEM;
	return store_forwarded(sw, s->inner_store.ops->snap_finish(
					   s->inner_store.ctx, handle, crc,
					   store_done_cb, sw));
}

static void store_snap_abort(void *ctx, uint64_t handle)
{
	struct server *s = ctx;
	s->inner_store.ops->snap_abort(s->inner_store.ctx, handle);
}

static int store_snap_read(void *ctx, uint64_t index, uint64_t term,
			   uint64_t offset, size_t len, env_store_read_cb cb,
			   void *arg)
{
	struct server *s = ctx;
	struct store_wait *sw = store_wait_new(s, NULL, cb, arg);
	if (!sw)
		return KEEL_ERR_NOMEM;
	return store_forwarded(sw, s->inner_store.ops->snap_read(
					   s->inner_store.ctx, index, term,
					   offset, len, store_read_done_cb, sw));
}

static const struct env_store_ops server_store_ops = {
	.load = store_load,
	.append = store_append,
	.snap_begin = store_snap_begin,
	.snap_write = store_snap_write,
	.snap_finish = store_snap_finish,
	.snap_abort = store_snap_abort,
	.snap_read = store_snap_read,
};

static void wal_wake(void *arg)
{
	uv_async_send(arg);
}

static void wal_async_cb(uv_async_t *h)
{
	struct server *s = h->data;
	wal_worker_drain(s->ww);
}

/* ---- the fault disk: the real disk with an optional delay before sync ---- */

#define FD(ctx) (&((struct fault_disk *)(ctx))->inner)

static int fd_open(void *ctx, const char *p, int fl, struct keel_file **o)
{
	return FD(ctx)->ops->open(FD(ctx)->ctx, p, fl, o);
}
static void fd_close(void *ctx, struct keel_file *f)
{
	FD(ctx)->ops->close(FD(ctx)->ctx, f);
}
static int fd_pread(void *ctx, struct keel_file *f, void *b, size_t l,
		    uint64_t off, size_t *got)
{
	return FD(ctx)->ops->pread(FD(ctx)->ctx, f, b, l, off, got);
}
static int fd_pwrite(void *ctx, struct keel_file *f, const void *b, size_t l,
		     uint64_t off)
{
	return FD(ctx)->ops->pwrite(FD(ctx)->ctx, f, b, l, off);
}
static int fd_sync(void *ctx, struct keel_file *f)
{
	struct fault_disk *d = ctx;
	uint64_t ms = atomic_load(&d->sync_delay_ms);
	if (ms) {
		struct timespec ts = {.tv_sec = (time_t)(ms / 1000),
				      .tv_nsec = (long)(ms % 1000) * 1000000L};
		nanosleep(&ts, NULL);
	}
	return FD(ctx)->ops->sync(FD(ctx)->ctx, f);
}
static int fd_size(void *ctx, struct keel_file *f, uint64_t *sz)
{
	return FD(ctx)->ops->size(FD(ctx)->ctx, f, sz);
}
static int fd_truncate(void *ctx, struct keel_file *f, uint64_t sz)
{
	return FD(ctx)->ops->truncate(FD(ctx)->ctx, f, sz);
}
static int fd_allocate(void *ctx, struct keel_file *f, uint64_t sz)
{
	return FD(ctx)->ops->allocate(FD(ctx)->ctx, f, sz);
}
static int fd_rename(void *ctx, const char *a, const char *b)
{
	return FD(ctx)->ops->rename(FD(ctx)->ctx, a, b);
}
static int fd_remove(void *ctx, const char *p)
{
	return FD(ctx)->ops->remove(FD(ctx)->ctx, p);
}
static int fd_mkdir(void *ctx, const char *p)
{
	return FD(ctx)->ops->mkdir(FD(ctx)->ctx, p);
}
static int fd_sync_dir(void *ctx, const char *p)
{
	return FD(ctx)->ops->sync_dir(FD(ctx)->ctx, p);
}
static int fd_list(void *ctx, const char *dir,
		   int (*cb)(void *arg, const char *name), void *arg)
{
	return FD(ctx)->ops->list(FD(ctx)->ctx, dir, cb, arg);
}

static const struct keel_disk_ops fault_disk_ops = {
	.open = fd_open,
	.close = fd_close,
	.pread = fd_pread,
	.pwrite = fd_pwrite,
	.sync = fd_sync,
	.size = fd_size,
	.truncate = fd_truncate,
	.allocate = fd_allocate,
	.rename = fd_rename,
	.remove = fd_remove,
	.mkdir = fd_mkdir,
	.sync_dir = fd_sync_dir,
	.list = fd_list,
};

/* ---- shutdown ------------------------------------------------------------------- */

static void on_peer_frame(void *ctx, const uint8_t *frame, size_t len)
{
	struct server *s = ctx;
	if (s->node && s->phase < PHASE_STORE_DRAIN)
		node_receive(s->node, frame, len);
}

static void log_context(void *ctx, char *buf, size_t len)
{
	struct server *s = ctx;
	if (!s->node) {
		buf[0] = 0;
		return;
	}
	struct raft_status st;
	raft_status(node_raft(s->node), &st);
	snprintf(buf, len, "term=%" PRIu64 " role=%s", st.term,
		 raft_role_name((enum raft_role)st.role));
}

static uint32_t node_pending_total(const struct server *s)
{
	uint32_t n = 0;
	for (const struct conn *c = s->conns; c; c = c->next)
		n += c->node_pending;
	return n;
}

static void close_handle_if(uv_handle_t *h)
{
	if (h->loop && !uv_is_closing(h))
		uv_close(h, NULL);
}

static void finish_shutdown(struct server *s)
{
	s->phase = PHASE_DONE;
	uv_timer_stop(&s->phase_timer);
	slog(s, ENV_LOG_INFO, "stopping: %" PRIu64 " disk writes issued, %" PRIu64
	     " done", s->store_issued, s->store_done);
	/* No completion can reach the node from here: the store is idle
	 * (or the drain timed out and the worker's stop below runs the last
	 * callbacks, which store_done_cb then keeps from the node). */
	struct node *n = s->node;
	s->node = NULL;
	node_destroy(n);
	wal_worker_stop(s->ww);
	s->ww = NULL;
	for (struct conn *c = s->conns; c; c = c->next) {
		c->node_pending = 0; /* the node is gone: nothing will answer */
		conn_close(c, "server shutting down");
	}
	posix_env_close(s->penv);
	close_handle_if((uv_handle_t *)&s->sig_term);
	close_handle_if((uv_handle_t *)&s->sig_int);
	close_handle_if((uv_handle_t *)&s->wal_async);
	close_handle_if((uv_handle_t *)&s->prep);
	close_handle_if((uv_handle_t *)&s->check);
	close_handle_if((uv_handle_t *)&s->phase_timer);
}

static void phase_tick(uv_timer_t *t)
{
	struct server *s = t->data;
	uint64_t now = mono_ms();
	if (s->phase == PHASE_GRACE) {
		if (node_pending_total(s) && now < s->phase_deadline_ms)
			return;
		if (node_pending_total(s))
			slog(s, ENV_LOG_WARN, "shutdown: %u requests still in flight "
			     "after %d ms; their clients get no answer",
			     node_pending_total(s), GRACE_MS);
		/* Cut the peers off so no new appends arrive, then let the
		 * disk thread finish what was already issued. */
		for (uint32_t i = 0; i < s->cfg.n_members; i++)
			posix_env_set_drop(s->penv, s->cfg.members[i].id, true, true);
		s->phase = PHASE_STORE_DRAIN;
		s->phase_deadline_ms = now + STORE_DRAIN_MS;
	}
	if (s->phase == PHASE_STORE_DRAIN) {
		if (s->store_done < s->store_issued && now < s->phase_deadline_ms)
			return;
		finish_shutdown(s);
	}
}

static void begin_shutdown(struct server *s, const char *why)
{
	if (s->phase != PHASE_RUN)
		return;
	slog(s, ENV_LOG_INFO, "%s: shutting down (stop accepting, finish in-flight "
	     "requests and disk writes)", why);
	s->phase = PHASE_GRACE;
	s->phase_deadline_ms = mono_ms() + GRACE_MS;
	if (s->listening) {
		s->listening = false;
		uv_close((uv_handle_t *)&s->listener, NULL);
	}
	for (struct conn *c = s->conns; c; c = c->next)
		if (!c->closing) {
			uv_read_stop((uv_stream_t *)&c->tcp);
			c->paused = true;
		}
	uv_timer_start(&s->phase_timer, phase_tick, 0, 20);
}

static void signal_cb(uv_signal_t *h, int signum)
{
	begin_shutdown(h->data, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* ---- start-up ---------------------------------------------------------------- */

static int open_storage(struct server *s)
{
	char err[512];
	int rv = server_keel_id_check(s->cfg.data_dir, s->cfg.cluster_id,
				      s->cfg.id, err, sizeof(err));
	if (rv) {
		fprintf(stderr, "keel server: %s\n", err);
		return rv;
	}
	rv = posix_disk_open(s->cfg.data_dir, &s->disk, err, sizeof(err));
	if (rv) {
		fprintf(stderr, "keel server: %s\n", err);
		return rv;
	}
	s->fdisk.inner = posix_disk_get(s->disk);
	atomic_init(&s->fdisk.sync_delay_ms, 0);
	struct wal_config wc = {
		.disk = {.ctx = &s->fdisk, .ops = &fault_disk_ops},
		.cluster_id = s->cfg.cluster_id,
	};
	rv = wal_open(&wc, &s->wal, &s->rec, err, sizeof(err));
	if (rv) {
		fprintf(stderr, "keel server: cannot open the WAL in %s: %s\n",
			s->cfg.data_dir, err);
		return rv;
	}
	s->have_rec = true;
	for (uint32_t i = 0; i < s->rec.n_warnings && i < 4; i++)
		fprintf(stderr, "keel server: WAL recovery: %s\n", s->rec.warning[i]);
	/* A snapshot (s->rec.snap_index) is the node's to restore:
	 * node_create streams it in through snap_read (docs/snapshots.md §7). */
	s->loaded.hard_state = s->rec.hs;
	s->loaded.entries = s->rec.entries;
	s->loaded.n_entries = s->rec.n_entries;
	s->loaded.snap_index = s->rec.snap_index;
	s->loaded.snap_term = s->rec.snap_term;
	s->loaded.snap_len = s->rec.snap_len;
	s->loaded.snap_crc = s->rec.snap_crc;
	uv_async_init(&s->loop, &s->wal_async, wal_async_cb);
	s->wal_async.data = s;
	rv = wal_worker_start(s->wal, wal_wake, &s->wal_async, &s->ww);
	if (rv) {
		fprintf(stderr, "keel server: cannot start the disk thread\n");
		return rv;
	}
	s->inner_store = wal_worker_store(s->ww, &s->loaded);
	s->env.store = (struct env_store){.ctx = s, .ops = &server_store_ops};
	return 0;
}

static int listen_clients(struct server *s)
{
	struct sockaddr_storage ss;
	if (posix_env_parse_addr(s->cfg.client_addr, &ss)) {
		fprintf(stderr, "keel server: bad --client-addr '%s'\n",
			s->cfg.client_addr);
		return KEEL_ERR_INVAL;
	}
	uv_tcp_init(&s->loop, &s->listener);
	s->listener.data = s;
	int rv = uv_tcp_bind(&s->listener, (const struct sockaddr *)&ss, 0);
	if (!rv)
		rv = uv_listen((uv_stream_t *)&s->listener, 511, accept_cb);
	if (rv < 0) {
		fprintf(stderr, "keel server: cannot listen for clients on %s: %s\n",
			s->cfg.client_addr, uv_strerror(rv));
		uv_close((uv_handle_t *)&s->listener, NULL);
		return KEEL_ERR_IO;
	}
	s->listening = true;
	return 0;
}

static int start_node(struct server *s)
{
	struct node_config nc = {
		.id = s->cfg.id,
		.cluster_id = s->cfg.cluster_id,
		.tick_ns = (uint64_t)s->cfg.tick_ms * 1000000u,
		.election_ticks = s->cfg.election_ticks,
		.heartbeat_ticks = s->cfg.heartbeat_ticks,
		.max_pending = NODE_MAX_PENDING,
		.request_timeout_ns = s->cfg.request_timeout_ms * 1000000u,
		.snapshot_entries = s->cfg.snapshot_entries,
		.snapshot_log_bytes = s->cfg.snapshot_log_bytes,
		.reply = on_node_reply,
		.reply_ctx = s,
		/* --test-bug no-order (planted, needs --test-faults) */
		.test_no_order = s->cfg.test_bug == SERVER_BUG_NO_ORDER,
	};
	nc.members.n_voters = s->cfg.n_members;
	for (uint32_t i = 0; i < s->cfg.n_members; i++)
		nc.members.voters[i] = s->cfg.members[i].id;
	int rv = node_create(&nc, &s->env, &s->node);
	if (rv) {
		fprintf(stderr, "keel server: cannot start the node: %s\n",
			keel_strerror(rv));
		return rv;
	}
	/* raft_restore copied the log: recovery's buffers can go. */
	wal_recovered_free(s->wal, &s->rec);
	s->have_rec = false;
	s->loaded = (struct env_store_state){0};
	return 0;
}

int server_run(const struct server_config *cfg)
{
	struct server *s = calloc(1, sizeof(*s));
	if (!s) {
		fprintf(stderr, "keel server: out of memory\n");
		return 1;
	}
	s->cfg = *cfg;
	s->start_ms = mono_ms();
	int code = 1;
	uv_loop_init(&s->loop);
	resp_buf_init(&s->scratch, &keel_alloc_libc, SERVER_OUT_HARD_BYTES, 2);
	uv_timer_init(&s->loop, &s->phase_timer);
	s->phase_timer.data = s;

	struct posix_env_config pc = {
		.id = cfg->id,
		.cluster_id = cfg->cluster_id,
		.n_peers = cfg->n_members,
		.log_level = cfg->log_level,
		.on_frame = on_peer_frame,
		.ctx = s,
		.log_context = log_context,
	};
	memcpy(pc.peers, cfg->members, sizeof(pc.peers));
	char err[512];
	signal(SIGPIPE, SIG_IGN); /* a client gone mid-write is an EPIPE */
	/* The client port first: it is the one a user picks by hand, so its
	 * error is the likeliest and must not hide behind a peer error. */
	if (listen_clients(s))
		goto out;
	int rv = posix_env_create(&s->loop, &pc, &s->penv, err, sizeof(err));
	if (rv) {
		fprintf(stderr, "keel server: %s\n", err);
		goto out;
	}
	posix_env_fill(s->penv, &s->env);
	if (open_storage(s) || start_node(s))
		goto out;

	uv_signal_init(&s->loop, &s->sig_term);
	uv_signal_init(&s->loop, &s->sig_int);
	s->sig_term.data = s->sig_int.data = s;
	uv_signal_start(&s->sig_term, signal_cb, SIGTERM);
	uv_signal_start(&s->sig_int, signal_cb, SIGINT);
	uv_prepare_init(&s->loop, &s->prep);
	uv_check_init(&s->loop, &s->check);
	s->prep.data = s->check.data = s;
	uv_prepare_start(&s->prep, prep_cb);
	uv_check_start(&s->check, check_cb);

	struct raft_status st;
	raft_status(node_raft(s->node), &st);
	slog(s, ENV_LOG_INFO,
	     "keel server %s: node %" PRIu64 " of cluster %" PRIu64
	     " (%u members), clients on %s, peers on %s, data in %s, log "
	     "recovered up to index %" PRIu64 " (term %" PRIu64 ")",
	     KEEL_VERSION, cfg->id, cfg->cluster_id, cfg->n_members,
	     cfg->client_addr, s->cfg.peer_addr, cfg->data_dir, st.last_index,
	     st.term);
	if (cfg->test_faults)
		slog(s, ENV_LOG_WARN, "--test-faults: KEEL.DEBUG fault injection is on");
	if (cfg->test_bug)
		slog(s, ENV_LOG_WARN, "--test-bug: a bug is planted on purpose (%s)",
		     cfg->test_bug == SERVER_BUG_STALE_READ  ? "stale-read"
		     : cfg->test_bug == SERVER_BUG_EARLY_ACK ? "early-ack"
		     : cfg->test_bug == SERVER_BUG_REORDER   ? "reorder"
		     : cfg->test_bug == SERVER_BUG_NO_ORDER  ? "no-order"
							     : "watch-blind");
	uv_run(&s->loop, UV_RUN_DEFAULT);
	code = 0;
	slog(s, ENV_LOG_INFO, "stopped cleanly");
out:
	/* Start-up failure or after the loop: close whatever is open. */
	if (s->node) {
		node_destroy(s->node);
		s->node = NULL;
	}
	if (s->ww) {
		wal_worker_stop(s->ww);
		s->ww = NULL;
	}
	if (s->have_rec)
		wal_recovered_free(s->wal, &s->rec);
	if (s->wal)
		wal_close(s->wal);
	if (s->disk)
		posix_disk_close(s->disk);
	for (struct conn *c = s->conns; c; c = c->next) {
		c->node_pending = 0; /* the node is gone: nothing will answer */
		conn_close(c, "server stopped");
	}
	if (s->penv)
		posix_env_close(s->penv);
	if (s->listening)
		uv_close((uv_handle_t *)&s->listener, NULL);
	close_handle_if((uv_handle_t *)&s->sig_term);
	close_handle_if((uv_handle_t *)&s->sig_int);
	close_handle_if((uv_handle_t *)&s->wal_async);
	close_handle_if((uv_handle_t *)&s->prep);
	close_handle_if((uv_handle_t *)&s->check);
	close_handle_if((uv_handle_t *)&s->phase_timer);
	uv_run(&s->loop, UV_RUN_DEFAULT);
	while (s->conns) /* zombies: closed, their node replies never came */
		conn_free(s->conns);
	if (s->penv)
		posix_env_free(s->penv);
	if (uv_loop_close(&s->loop) != 0)
		fprintf(stderr, "keel server: warning: handles left open at exit\n");
	resp_buf_close(&s->scratch);
	free(s);
	return code;
}
