/*
 * posix_env.c -- the real environment on libuv (see posix_env.h): clock
 * and timers on the loop, the TCP peer transport, OS randomness, log lines.
 *
 * Transport state per peer: at most one connection; the lower id dials.
 * Outgoing frames wait in a bounded FIFO of copied chunks and leave up to
 * WRITE_BATCH buffers at a time, by one writev on the spot and a uv_write
 * only for what the socket did not take. Incoming bytes collect
 * in a per-connection buffer: the header is peeked first, so an impossible
 * length closes the connection before any body is buffered.
 */
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "keel/peer.h"
#include "keel/posix_env.h"

#define WRITE_BATCH 64

struct chunk {
	struct chunk *next;
	size_t len;
	uint8_t data[];
};

struct posix_env;
struct peer_state;

struct conn {
	uv_tcp_t tcp;
	struct posix_env *env;
	struct peer_state *peer; /* NULL until the first frame names it */
	uint8_t *rbuf;
	size_t rlen, rcap;
	bool closing;
	/* In-flight write: the chunks handed to uv_write. */
	uv_write_t wreq;
	struct chunk *inflight[WRITE_BATCH];
	uint32_t n_inflight;
	bool writing;
};

struct peer_state {
	raft_id id;
	struct sockaddr_storage addr;
	bool dial; /* this side dials (our id is lower) */
	struct conn *conn;
	bool connecting;
	uint32_t dial_failures; /* in a row; the first one is a warning */
	uv_connect_t creq;
	uv_timer_t retry;
	uint64_t backoff_ms;
	struct chunk *qhead, *qtail;
	uint64_t queued_bytes;
	bool drop_out, drop_in;
	struct posix_env_peer_stats st;
	struct posix_env *env;
};

struct timer {
	uv_timer_t t;
	uint64_t handle;
	env_timer_cb cb;
	void *arg;
	struct timer *next;
	struct posix_env *env;
};

struct posix_env {
	uv_loop_t *loop;
	struct posix_env_config cfg;
	struct peer_limits lim;
	uv_tcp_t listener;
	bool listening;
	struct peer_state peers[RAFT_MAX_VOTERS];
	uint32_t n_peers;
	struct timer *timers; /* live timers, for stop and close */
	uint64_t next_handle;
	int64_t clock_offset_ns;
	struct keel_rand rand;
	bool closed;
	uint32_t open_handles; /* closes outstanding before free */
};

/* ---- logging ------------------------------------------------------------- */

static const char *level_name(int level)
{
	static const char *const n[] = {"debug", "info", "warn", "error"};
	return level >= 0 && level < 4 ? n[level] : "?";
}

void posix_env_log(struct posix_env *e, int level, const char *msg)
{
	if (level < e->cfg.log_level)
		return;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	char ctx[128] = "";
	if (e->cfg.log_context)
		e->cfg.log_context(e->cfg.ctx, ctx, sizeof(ctx));
	fprintf(stderr,
		"%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ node=%" PRIu64
		" level=%s %s%smsg=\"%s\"\n",
		tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
		tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000, e->cfg.id,
		level_name(level), ctx, ctx[0] ? " " : "", msg);
}

static void logf_(struct posix_env *e, int level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void logf_(struct posix_env *e, int level, const char *fmt, ...)
{
	if (level < e->cfg.log_level)
		return;
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	posix_env_log(e, level, buf);
}

/* ---- addresses -------------------------------------------------------------- */

int posix_env_parse_addr(const char *s, struct sockaddr_storage *out)
{
	char host[POSIX_ENV_ADDR_MAX];
	const char *colon;
	size_t hl;
	if (!s || strlen(s) >= POSIX_ENV_ADDR_MAX)
		return KEEL_ERR_INVAL;
	if (s[0] == '[') {
		const char *end = strchr(s, ']');
		if (!end || end[1] != ':')
			return KEEL_ERR_INVAL;
		hl = (size_t)(end - s - 1);
		memcpy(host, s + 1, hl);
		colon = end + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon)
			return KEEL_ERR_INVAL;
		hl = (size_t)(colon - s);
		memcpy(host, s, hl);
	}
	host[hl] = 0;
	char *endp;
	errno = 0;
	long port = strtol(colon + 1, &endp, 10);
	if (errno || *endp || port <= 0 || port > 65535 || endp == colon + 1)
		return KEEL_ERR_INVAL;
	if (!strcmp(host, "localhost"))
		memcpy(host, "127.0.0.1", 10);
	memset(out, 0, sizeof(*out));
	if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)out) == 0)
		return 0;
	if (uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)out) == 0)
		return 0;
	return KEEL_ERR_INVAL;
}

/* ---- clock and timers ---------------------------------------------------------- */

static uint64_t clock_now_ns(void *ctx)
{
	struct posix_env *e = ctx;
	return (uint64_t)((int64_t)uv_hrtime() + e->clock_offset_ns);
}

/* The wall clock (env.h): realtime plus the same test offset as now_ns,
 * so a test that skews a node's clock skews both. */
static uint64_t clock_wall_ms(void *ctx)
{
	struct posix_env *e = ctx;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	int64_t ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec +
		     e->clock_offset_ns;
	return ns < 0 ? 0 : (uint64_t)ns / 1000000;
}

static void timer_closed(uv_handle_t *h)
{
	struct timer *t = h->data;
	t->env->open_handles--;
	free(t);
}

static void timer_unlink(struct posix_env *e, struct timer *t)
{
	for (struct timer **p = &e->timers; *p; p = &(*p)->next)
		if (*p == t) {
			*p = t->next;
			return;
		}
}

static void timer_fired(uv_timer_t *ut)
{
	struct timer *t = ut->data;
	struct posix_env *e = t->env;
	timer_unlink(e, t);
	env_timer_cb cb = t->cb;
	void *arg = t->arg;
	uv_close((uv_handle_t *)&t->t, timer_closed);
	cb(arg);
}

static uint64_t clock_timer_start(void *ctx, uint64_t delay_ns, env_timer_cb cb,
				  void *arg)
{
	struct posix_env *e = ctx;
	if (e->closed)
		return 0;
	struct timer *t = calloc(1, sizeof(*t));
	if (!t)
		return 0;
	uv_timer_init(e->loop, &t->t);
	e->open_handles++;
	t->t.data = t;
	t->env = e;
	t->cb = cb;
	t->arg = arg;
	t->handle = ++e->next_handle;
	t->next = e->timers;
	e->timers = t;
	/* libuv timers count milliseconds; round up so a timer never fires
	 * early. */
	uv_timer_start(&t->t, timer_fired, (delay_ns + 999999) / 1000000, 0);
	return t->handle;
}

static void clock_timer_stop(void *ctx, uint64_t handle)
{
	struct posix_env *e = ctx;
	for (struct timer *t = e->timers; t; t = t->next) {
		if (t->handle == handle) {
			timer_unlink(e, t);
			uv_timer_stop(&t->t);
			uv_close((uv_handle_t *)&t->t, timer_closed);
			return;
		}
	}
}

static const struct env_clock_ops clock_ops = {
	.now_ns = clock_now_ns,
	.timer_start = clock_timer_start,
	.timer_stop = clock_timer_stop,
	.wall_ms = clock_wall_ms,
};

/* ---- randomness and log -------------------------------------------------------- */

static uint64_t rand_next(void *ctx)
{
	struct posix_env *e = ctx;
	return keel_rand_next(&e->rand);
}

static const struct env_rand_ops rand_ops = {.next = rand_next};

static void log_line(void *ctx, int level, const char *msg)
{
	posix_env_log(ctx, level, msg);
}

static const struct env_log_ops log_ops = {.log = log_line};

/* ---- connections ------------------------------------------------------------- */

static void peer_schedule_dial(struct peer_state *p);
static void conn_flush(struct conn *c);

static void conn_closed(uv_handle_t *h)
{
	struct conn *c = h->data;
	c->env->open_handles--;
	for (uint32_t i = 0; i < c->n_inflight; i++)
		free(c->inflight[i]);
	free(c->rbuf);
	free(c);
}

static void conn_close(struct conn *c, const char *why)
{
	if (c->closing)
		return;
	c->closing = true;
	struct peer_state *p = c->peer;
	if (p) {
		if (p->conn == c)
			p->conn = NULL;
		p->st.connected = false;
		logf_(c->env, ENV_LOG_INFO, "peer %" PRIu64 " disconnected: %s",
		      p->id, why);
		if (p->dial && !c->env->closed)
			peer_schedule_dial(p);
	}
	uv_close((uv_handle_t *)&c->tcp, conn_closed);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct conn *c = h->data;
	(void)suggested;
	size_t want = 64 * 1024;
	if (c->rcap - c->rlen < want) {
		size_t cap = c->rcap ? c->rcap : want;
		while (cap - c->rlen < want)
			cap *= 2;
		uint8_t *nb = realloc(c->rbuf, cap);
		if (!nb) {
			buf->base = NULL;
			buf->len = 0;
			return;
		}
		c->rbuf = nb;
		c->rcap = cap;
	}
	buf->base = (char *)c->rbuf + c->rlen;
	buf->len = c->rcap - c->rlen;
}

static struct peer_state *find_peer(struct posix_env *e, raft_id id)
{
	for (uint32_t i = 0; i < e->n_peers; i++)
		if (e->peers[i].id == id)
			return &e->peers[i];
	return NULL;
}

/* Consumes every complete frame in the read buffer. */
static void conn_parse(struct conn *c)
{
	struct posix_env *e = c->env;
	size_t off = 0;
	while (!c->closing) {
		size_t flen;
		int rv = peer_frame_peek(c->rbuf + off, c->rlen - off, &e->lim,
					 &flen);
		if (rv == KEEL_ERR_TRUNCATED)
			break;
		uint64_t sender = 0;
		int type = 0;
		if (!rv && c->rlen - off < flen)
			break; /* the body is still on its way */
		if (!rv)
			rv = peer_frame_verify(c->rbuf + off, flen, &e->lim,
					       &sender, &type);
		struct peer_state *p = rv ? NULL : find_peer(e, sender);
		/* The sender must be a member other than us; on a dialed
		 * connection, the one we dialed; on an accepted one, a node
		 * with a lower id (the lower id dials). */
		if (!rv && (!p || p->id == e->cfg.id ||
			    (c->peer && c->peer != p) || (!c->peer && p->dial)))
			rv = KEEL_ERR_UNKNOWN_NODE;
		if (rv) {
			if (c->peer)
				c->peer->st.bad_frames++;
			char why[96];
			snprintf(why, sizeof(why), "bad frame: %s",
				 keel_strerror(rv));
			logf_(e, ENV_LOG_WARN, "closing peer connection: %s", why);
			conn_close(c, why);
			return;
		}
		if (!c->peer) {
			/* An accepted connection names its peer with its
			 * first frame; a newer connection replaces an old. */
			if (p->conn && p->conn != c)
				conn_close(p->conn, "replaced by a new connection");
			c->peer = p;
			p->conn = c;
			p->st.connected = true;
			logf_(e, ENV_LOG_INFO, "peer %" PRIu64 " connected (inbound)",
			      p->id);
			conn_flush(c);
		}
		p->st.frames_in++;
		p->st.bytes_in += flen;
		if (type != PEER_TYPE_HELLO && !p->drop_in)
			e->cfg.on_frame(e->cfg.ctx, c->rbuf + off, flen);
		off += flen;
	}
	if (off && !c->closing) {
		memmove(c->rbuf, c->rbuf + off, c->rlen - off);
		c->rlen -= off;
	}
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	struct conn *c = s->data;
	(void)buf;
	if (n < 0) {
		conn_close(c, n == UV_EOF ? "closed by peer" : uv_strerror((int)n));
		return;
	}
	if (n == 0)
		return;
	c->rlen += (size_t)n;
	conn_parse(c);
}

/* The chunks of the last batch have left (or the connection failed). */
static void free_inflight(struct conn *c)
{
	for (uint32_t i = 0; i < c->n_inflight; i++)
		free(c->inflight[i]);
	c->n_inflight = 0;
}

static void write_cb(uv_write_t *req, int status)
{
	struct conn *c = req->data;
	free_inflight(c);
	c->writing = false;
	if (status < 0) {
		conn_close(c, uv_strerror(status));
		return;
	}
	conn_flush(c);
}

/* Writes up to WRITE_BATCH queued frames at a time: first by one
 * writev(2) here (uv_try_write), and only what the socket did not take
 * by a uv_write -- a uv_write request completes in the next loop
 * iteration and costs an epoll_ctl when libuv's write queue drains, per
 * frame batch. */
static void conn_flush(struct conn *c)
{
	struct peer_state *p = c->peer;
	while (!c->closing && !c->writing && p && p->qhead) {
		uv_buf_t bufs[WRITE_BATCH];
		uint32_t n = 0;
		size_t total = 0;
		while (p->qhead && n < WRITE_BATCH) {
			struct chunk *ch = p->qhead;
			p->qhead = ch->next;
			if (!p->qhead)
				p->qtail = NULL;
			p->queued_bytes -= ch->len;
			bufs[n] = uv_buf_init((char *)ch->data, (unsigned)ch->len);
			c->inflight[n++] = ch;
			total += ch->len;
			p->st.frames_out++;
			p->st.bytes_out += ch->len;
		}
		c->n_inflight = n;
		int rv = uv_try_write((uv_stream_t *)&c->tcp, bufs, n);
		if (rv == UV_EAGAIN || rv == UV_ENOSYS)
			rv = 0;
		if (rv < 0) {
			conn_close(c, uv_strerror(rv));
			return;
		}
		if ((size_t)rv == total) {
			free_inflight(c);
			continue;
		}
		/* The rest: skip what was written, then one uv_write. */
		size_t done = (size_t)rv;
		uint32_t k = 0;
		while (done >= bufs[k].len) {
			done -= bufs[k].len;
			k++;
		}
		bufs[k].base += done;
		bufs[k].len -= done;
		c->writing = true;
		c->wreq.data = c;
		rv = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, bufs + k, n - k,
			      write_cb);
		if (rv < 0) {
			c->writing = false;
			conn_close(c, uv_strerror(rv));
		}
		return;
	}
}

static struct conn *conn_new(struct posix_env *e)
{
	struct conn *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->env = e;
	uv_tcp_init(e->loop, &c->tcp);
	e->open_handles++;
	c->tcp.data = c;
	uv_tcp_nodelay(&c->tcp, 1);
	return c;
}

/* Sets TCP_USER_TIMEOUT (posix_env_config.user_timeout_ms) on c's socket,
 * which exists once a connect was started or a connection accepted. A
 * refusal is logged and otherwise harmless: the connection then only
 * recovers more slowly from a partition. */
static void conn_set_user_timeout(struct conn *c)
{
	uv_os_fd_t fd;
	unsigned int ms = (unsigned int)KEEL_MIN(c->env->cfg.user_timeout_ms,
						 UINT32_MAX);
	if (uv_fileno((uv_handle_t *)&c->tcp, &fd) != 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof(ms)) != 0)
		logf_(c->env, ENV_LOG_WARN,
		      "peer connection: cannot set TCP_USER_TIMEOUT (%s)",
		      strerror(errno));
}

static void connect_cb(uv_connect_t *req, int status)
{
	struct peer_state *p = req->data;
	struct conn *c = (struct conn *)req->handle->data;
	p->connecting = false;
	if (status < 0 || p->env->closed) {
		/* One warning per outage (an unreachable or mistyped peer
		 * address must be visible), then quiet retries. */
		int lv = status < 0 && p->dial_failures++ == 0 ? ENV_LOG_WARN
							      : ENV_LOG_DEBUG;
		char addr[POSIX_ENV_ADDR_MAX] = "?";
		for (uint32_t i = 0; i < p->env->cfg.n_peers; i++)
			if (p->env->cfg.peers[i].id == p->id)
				snprintf(addr, sizeof(addr), "%s",
					 p->env->cfg.peers[i].addr);
		logf_(p->env, lv, "cannot reach peer %" PRIu64 " at %s: %s%s",
		      p->id, addr,
		      status < 0 ? uv_strerror(status) : "closing",
		      lv == ENV_LOG_WARN ? " (retrying with backoff)" : "");
		c->peer = NULL; /* not connected: no disconnect to report */
		conn_close(c, "dial failed");
		if (!p->env->closed)
			peer_schedule_dial(p);
		return;
	}
	if (p->conn)
		conn_close(p->conn, "replaced by a new connection");
	p->conn = c;
	p->st.connected = true;
	p->backoff_ms = 0;
	p->dial_failures = 0;
	logf_(p->env, ENV_LOG_INFO, "peer %" PRIu64 " connected (outbound)", p->id);
	uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
	/* HELLO first, so the acceptor knows us before we have anything to
	 * say and can send its own queued frames. */
	struct chunk *hello = malloc(sizeof(*hello) + PEER_HELLO_SIZE);
	if (!hello) {
		conn_close(c, "out of memory");
		return;
	}
	hello->len = PEER_HELLO_SIZE;
	peer_encode_hello(p->env->cfg.cluster_id, p->env->cfg.id, hello->data);
	hello->next = p->qhead;
	p->qhead = hello;
	if (!p->qtail)
		p->qtail = hello;
	p->queued_bytes += hello->len;
	conn_flush(c);
}

static void peer_dial(struct peer_state *p)
{
	if (p->conn || p->connecting || p->env->closed)
		return;
	struct conn *c = conn_new(p->env);
	if (!c) {
		peer_schedule_dial(p);
		return;
	}
	c->peer = p;
	p->connecting = true;
	p->creq.data = p;
	int rv = uv_tcp_connect(&p->creq, &c->tcp,
				(const struct sockaddr *)&p->addr, connect_cb);
	if (rv < 0) {
		p->connecting = false;
		c->peer = NULL;
		conn_close(c, uv_strerror(rv));
		peer_schedule_dial(p);
		return;
	}
	conn_set_user_timeout(c);
}

static void retry_fired(uv_timer_t *t)
{
	peer_dial(t->data);
}

/* Exponential backoff with full jitter: a restarted cluster does not
 * reconnect in lockstep. */
static void peer_schedule_dial(struct peer_state *p)
{
	struct posix_env *e = p->env;
	uint64_t lo = e->cfg.backoff_min_ms, hi = e->cfg.backoff_max_ms;
	p->backoff_ms = p->backoff_ms ? KEEL_MIN(p->backoff_ms * 2, hi) : lo;
	uint64_t delay = p->backoff_ms / 2 +
			 keel_rand_below(&e->rand, p->backoff_ms / 2 + 1);
	p->st.reconnects++;
	uv_timer_start(&p->retry, retry_fired, delay, 0);
}

static void accept_cb(uv_stream_t *server, int status)
{
	struct posix_env *e = server->data;
	if (status < 0)
		return;
	struct conn *c = conn_new(e);
	if (!c)
		return;
	if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
		conn_close(c, "accept failed");
		return;
	}
	conn_set_user_timeout(c);
	uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
}

/* ---- the network interface ------------------------------------------------------ */

static void net_send(void *ctx, raft_id to, const uint8_t *frame, size_t len)
{
	struct posix_env *e = ctx;
	struct peer_state *p = find_peer(e, to);
	if (!p || p->id == e->cfg.id || e->closed)
		return;
	if (p->drop_out)
		return;
	if (p->queued_bytes + len > e->cfg.max_queue_bytes) {
		p->st.dropped_full++;
		return;
	}
	struct chunk *ch = malloc(sizeof(*ch) + len);
	if (!ch) {
		p->st.dropped_full++;
		return;
	}
	ch->next = NULL;
	ch->len = len;
	memcpy(ch->data, frame, len);
	if (p->qtail)
		p->qtail->next = ch;
	else
		p->qhead = ch;
	p->qtail = ch;
	p->queued_bytes += len;
	if (p->conn)
		conn_flush(p->conn);
	else if (p->dial)
		peer_dial(p);
}

static const struct env_net_ops net_ops = {.send = net_send};

/* ---- lifecycle ------------------------------------------------------------------ */

static void handle_closed(uv_handle_t *h)
{
	struct posix_env *e = h->data;
	e->open_handles--;
}

int posix_env_create(uv_loop_t *loop, const struct posix_env_config *cfg,
		     struct posix_env **out, char *err, size_t err_len)
{
	struct posix_env *e = calloc(1, sizeof(*e));
	if (!e)
		return KEEL_ERR_NOMEM;
	e->loop = loop;
	e->cfg = *cfg;
	if (!e->cfg.max_queue_bytes)
		e->cfg.max_queue_bytes = 64u << 20;
	if (!e->cfg.max_frame_bytes)
		e->cfg.max_frame_bytes = PEER_MAX_FRAME_DEFAULT;
	if (!e->cfg.backoff_min_ms)
		e->cfg.backoff_min_ms = 50;
	if (!e->cfg.backoff_max_ms)
		e->cfg.backoff_max_ms = 2000;
	if (!e->cfg.user_timeout_ms)
		e->cfg.user_timeout_ms = 1000;
	peer_limits_default(&e->lim, cfg->cluster_id);
	e->lim.max_frame_bytes = e->cfg.max_frame_bytes;
	uint64_t seed;
	if (getrandom(&seed, sizeof(seed), 0) != (ssize_t)sizeof(seed))
		seed = uv_hrtime() ^ ((uint64_t)cfg->id << 48);
	keel_rand_seed(&e->rand, seed);
	const struct sockaddr_storage *self = NULL;
	if (cfg->n_peers == 0 || cfg->n_peers > RAFT_MAX_VOTERS) {
		snprintf(err, err_len, "bad peer list");
		free(e);
		return KEEL_ERR_INVAL;
	}
	for (uint32_t i = 0; i < cfg->n_peers; i++) {
		struct peer_state *p = &e->peers[e->n_peers++];
		p->id = cfg->peers[i].id;
		p->env = e;
		p->st.id = p->id;
		if (posix_env_parse_addr(cfg->peers[i].addr, &p->addr)) {
			snprintf(err, err_len, "bad peer address for node %" PRIu64 ": '%s'",
				 p->id, cfg->peers[i].addr);
			free(e);
			return KEEL_ERR_INVAL;
		}
		if (p->id == cfg->id)
			self = &p->addr;
		p->dial = cfg->id < p->id;
	}
	if (!self) {
		snprintf(err, err_len, "node %" PRIu64 " is not in the peer list",
			 cfg->id);
		free(e);
		return KEEL_ERR_INVAL;
	}
	uv_tcp_init(loop, &e->listener);
	e->open_handles++;
	e->listener.data = e;
	int rv = uv_tcp_bind(&e->listener, (const struct sockaddr *)self, 0);
	if (!rv)
		rv = uv_listen((uv_stream_t *)&e->listener, 128, accept_cb);
	if (rv < 0) {
		char name[64] = "?";
		for (uint32_t i = 0; i < cfg->n_peers; i++)
			if (cfg->peers[i].id == cfg->id)
				snprintf(name, sizeof(name), "%s", cfg->peers[i].addr);
		snprintf(err, err_len, "cannot listen for peers on %s: %s", name,
			 uv_strerror(rv));
		e->closed = true;
		uv_close((uv_handle_t *)&e->listener, handle_closed);
		*out = e; /* the caller runs the loop once and frees */
		return KEEL_ERR_IO;
	}
	e->listening = true;
	for (uint32_t i = 0; i < e->n_peers; i++) {
		struct peer_state *p = &e->peers[i];
		uv_timer_init(loop, &p->retry);
		e->open_handles++;
		p->retry.data = p;
		if (p->dial && p->id != cfg->id)
			peer_dial(p);
	}
	*out = e;
	return 0;
}

static void retry_closed(uv_handle_t *h)
{
	struct peer_state *p = h->data;
	p->env->open_handles--;
}

void posix_env_close(struct posix_env *e)
{
	if (!e || (e->closed && !e->listening))
		return;
	e->closed = true;
	if (e->listening) {
		e->listening = false;
		uv_close((uv_handle_t *)&e->listener, handle_closed);
	}
	while (e->timers) {
		struct timer *t = e->timers;
		e->timers = t->next;
		uv_timer_stop(&t->t);
		uv_close((uv_handle_t *)&t->t, timer_closed);
	}
	for (uint32_t i = 0; i < e->n_peers; i++) {
		struct peer_state *p = &e->peers[i];
		if (p->conn)
			conn_close(p->conn, "shutting down");
		uv_timer_stop(&p->retry);
		uv_close((uv_handle_t *)&p->retry, retry_closed);
		while (p->qhead) {
			struct chunk *ch = p->qhead;
			p->qhead = ch->next;
			free(ch);
		}
		p->qtail = NULL;
		p->queued_bytes = 0;
	}
}

void posix_env_free(struct posix_env *e)
{
	if (!e)
		return;
	KEEL_ASSERT(e->open_handles == 0);
	free(e);
}

void posix_env_fill(struct posix_env *e, struct env *env)
{
	env->clock = (struct env_clock){.ctx = e, .ops = &clock_ops};
	env->net = (struct env_net){.ctx = e, .ops = &net_ops};
	env->rand = (struct env_rand){.ctx = e, .ops = &rand_ops};
	env->log = (struct env_log){.ctx = e, .ops = &log_ops};
}

void posix_env_set_drop(struct posix_env *e, raft_id peer, bool out, bool in)
{
	struct peer_state *p = find_peer(e, peer);
	if (p) {
		p->drop_out = out;
		p->drop_in = in;
	}
}

void posix_env_set_clock_offset(struct posix_env *e, int64_t offset_ns)
{
	e->clock_offset_ns = offset_ns;
}

uint32_t posix_env_peer_stats(struct posix_env *e,
			      struct posix_env_peer_stats *st, uint32_t max)
{
	uint32_t n = 0;
	for (uint32_t i = 0; i < e->n_peers && n < max; i++) {
		if (e->peers[i].id == e->cfg.id)
			continue;
		st[n] = e->peers[i].st;
		st[n].queued_bytes = e->peers[i].queued_bytes;
		st[n].user_timeout_ms = 0;
		uv_os_fd_t fd;
		unsigned int ms = 0;
		socklen_t sl = sizeof(ms);
		if (e->peers[i].conn &&
		    uv_fileno((uv_handle_t *)&e->peers[i].conn->tcp, &fd) == 0 &&
		    getsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, &sl) == 0)
			st[n].user_timeout_ms = ms;
		n++;
	}
	return n;
}
