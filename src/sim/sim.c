/*
 * sim.c -- the deterministic simulator's run loop and its env.
 *
 * One thread, one seed, discrete events: the earliest network delivery,
 * timer, disk completion, client action or fault comes next (ties broken
 * by a sequence number), and simulated time jumps to it. The nodes are the
 * real node code (src/node/) over a sim env: frames travel through the
 * real peer codec as bytes (and may be lost, duplicated, delayed,
 * reordered or have bits flipped on the way), the disk is the real WAL
 * over the in-memory disk (store.c: syncs completed when the simulator
 * says, power loss, EIO, ENOSPC, rot at rest), each node's clock runs at
 * its own rate.
 *
 * A run has two phases. The fault phase drives concurrent clients through
 * the configured faults and checks the Raft safety properties after every
 * step (checker.c); at its end the client history must be linearizable
 * and no acknowledged write may be missing. The liveness phase heals every
 * fault, restarts crashed nodes, and requires the cluster to elect a
 * leader, commit a new write and converge within a bound of simulated
 * time.
 *
 * Every random choice comes from keel_rand streams derived from the seed;
 * nothing reads the real clock. No global state: a run is one struct sim.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/peer.h"
#include "sim/sim_internal.h"

#define MS 1000000ull
#define US 1000ull
#define SEC (1000 * MS)

#define SIM_MAX_CLIENTS 8
#define SIM_MAX_KEYS 5
#define SIM_TIMERS 4
#define SIM_MAX_STEPS 400000000ull
#define SIM_LIVENESS_BOUND (60 * SEC)
#define SIM_FAULT_PERIOD (100 * MS)
#define SIM_MAX_READS 64 /* snap_reads in flight per node */
#define SIM_MAX_PIPES 3  /* pipelining clients per run */
#define SIM_PIPE_DEPTH 16 /* most writes one keeps in flight */
/* A pipelining client's cookies: this bit, its index above bit 48, a
 * counter below (a plain client's are its index above bit 40). */
#define SIM_PIPE_COOKIE (1ull << 63)
#define SIM_MAX_BANKS 3   /* bank clients per run */
/* A bank client's cookies: this bit, its index above bit 48, a counter
 * below. */
#define SIM_BANK_COOKIE (1ull << 62)
#define SIM_BANK_ARGS 48
#define SIM_BANK_BYTES 640
#define SIM_BANK_RETRIES 3 /* session retries of one (sid, seq) at most */

enum ev_type {
	EV_DELIVER = 1,
	EV_TIMER,
	EV_DISK,
	EV_CLIENT_REQ,
	EV_CLIENT_REPLY,
	EV_CLIENT_TIMEOUT,
	EV_CLIENT_NEXT,
	EV_FAULT,
	EV_HEAL,
	EV_RESTART,
	EV_RESUME,
	EV_CRASH,
	EV_PIPE_REQ,     /* a pipelined write reaches its node */
	EV_PIPE_REPLY,   /* ... its answer reaches the client */
	EV_PIPE_TIMEOUT, /* the oldest write in flight may be overdue */
	EV_PIPE_CONNECT, /* a pipelining client (re)connects */
	EV_BANK_REQ,     /* a bank client's request reaches its node */
	EV_BANK_REPLY,   /* ... its answer reaches the client */
	EV_BANK_TIMEOUT, /* its request may be overdue */
	EV_BANK_NEXT,    /* it may start its next operation */
};

struct sim_event {
	uint64_t time;
	uint64_t seq;
	uint8_t type;
	uint8_t node; /* index into sim.nodes */
	uint8_t from;
	uint32_t inc;  /* node incarnation the event belongs to */
	uint64_t a;    /* timer handle, client index, cookie */
	uint64_t b;
	void *p;       /* owned payload (frame bytes, request, reply) */
	uint32_t len;
	env_timer_cb cb;
};

/* A pipelined `APPEND key "<token>,"` on its way to a node: stream is
 * the node's id for the client's connection, inc the node incarnation it
 * was opened on (a request for an older one finds the connection gone). */
struct sim_pipe_msg {
	uint64_t cookie;
	uint64_t stream;
	uint32_t inc;
	uint8_t key_len, val_len;
	char key[24];
	char val[24];
};

/* A bank client's request: argv as counted bytes. */
struct sim_bank_msg {
	uint64_t cookie;
	uint32_t argc, used;
	uint32_t lens[SIM_BANK_ARGS];
	uint8_t data[SIM_BANK_BYTES];
};

struct sim_req {
	uint64_t cookie;
	uint8_t op, key; /* enum sim_op; key number */
	bool ttl;        /* SET t<key> a PX <b>: not in the history */
	uint8_t a_len, b_len;
	uint8_t a[24], b[24];
};

/* A node's answer on its way to the client: the reply tape is copied and
 * played when the client gets it. */
struct sim_reply {
	uint64_t cookie;
	int status;
	raft_id hint;
	uint64_t index;
	uint32_t tape_len;
	uint8_t tape[];
};

struct sim;

struct sim_node {
	struct sim *sim;
	uint32_t idx;
	raft_id id;
	struct node *node; /* NULL while crashed */
	bool paused;
	uint64_t pause_until;
	uint32_t pauses; /* pauses begun: request-held-silently's excuse */
	uint32_t inc;
	/* Connection ids, restarting at every boot like the server's:
	 * pipelining clients' stream ids. */
	uint64_t streams;
	struct sim_store store;
	struct env env;
	struct keel_rand rand; /* the node's env randomness */
	uint64_t rate_ppm;     /* clock rate: 1e6 = true time */
	uint64_t skew_ns;
	uint64_t timers[SIM_TIMERS];
	uint64_t disk_done; /* last scheduled disk completion */
	uint64_t seen_commit;
	uint64_t leader_term_checked;
	/* Role and term as of the node's last step (roles change only when
	 * a node handles an event, and every event is followed by
	 * check_node), so other checks need not ask the core. */
	bool is_leader;
	uint64_t term;
	/* Crash right after this node's next disk write is issued, so the
	 * crash finds unsynced data to lose or tear. */
	bool crash_armed;
	/* A disk error (EIO or ENOSPC) is armed on this node's disk; it
	 * counts as down from then on until the operator restarts it. */
	bool doomed;
	/* The store reported an error to the node: from then on it must
	 * send nothing and acknowledge nothing. */
	bool disk_failed;
	bool damageable; /* rot at rest may hit this node's disk */
	bool refused;    /* recovery refused (corruption): down for good */
	bool digest_next; /* compare the state at the next apply (after an
			     install or a restore from a snapshot) */
	/* snap_reads in flight (FIFO, their offsets) and the node's read
	 * callback, for rot_read_cb. */
	uint64_t rd_off[SIM_MAX_READS];
	uint32_t rd_head, rd_n;
	env_store_read_cb rd_cb;
	void *rd_arg;
};

struct sim_client {
	uint32_t idx;
	uint32_t process;
	bool busy;
	bool done;
	uint64_t attempt;
	uint64_t deadline;
	/* At most one timeout event per client is queued (a timer per
	 * operation would fill the queue with seconds of dead timers); it
	 * re-arms itself for the current deadline when it fires early. */
	bool timeout_armed;
	raft_id guess;
	struct sim_req req;
	/* The current attempt as a node took it, for request-held-silently:
	 * held_node is the node's index + 1 from node_request until the node
	 * answers that cookie or the client gives up (0 = nothing held). The
	 * node's incarnation and pause count at that moment tell whether it
	 * stopped since; held_local is its clock then. */
	uint32_t held_node;
	uint32_t held_inc, held_pauses;
	uint64_t held_cookie;
	uint64_t held_local;
};

/* A pipelining client (docs/testing.md, "Pipelined writes"): one
 * connection at a time, to one node; up to depth writes in flight on its
 * stream; each stream writes a key of its own, tokens 1, 2, 3, ... */
struct sim_pipe_fl {
	uint64_t cookie, token, deadline;
};

struct sim_pipe {
	uint32_t idx;
	uint32_t depth;       /* K: writes in flight at most */
	bool connected;       /* false between a reset and the reconnect */
	bool connecting;      /* an EV_PIPE_CONNECT is queued */
	uint32_t node;        /* index of the node it is connected to */
	uint32_t inc;         /* ... and that node's incarnation then */
	uint64_t stream;
	uint32_t key;         /* sim_order key of the stream */
	uint32_t gen;         /* streams opened so far (key names) */
	uint64_t next_token;  /* of the current stream */
	uint64_t acked_top;   /* highest token of the stream acknowledged */
	uint64_t sent;        /* writes sent in all (the budget) */
	uint64_t seq;         /* cookie counter */
	uint64_t last_arrival; /* requests reach the node in order (TCP) */
	bool timeout_armed;
	struct sim_pipe_fl fl[SIM_PIPE_DEPTH]; /* in flight, in send order */
	uint32_t n_fl;
};

/* A bank client (docs/testing.md, "The bank"): one operation at a time,
 * each one or a few requests (a read of all balances; a transfer's reads
 * and then its transaction). */
enum bank_step {
	BK_INIT = 1, /* KEEL.TXN IF 1 a0 EXISTS = 0 THEN MSET every account */
	BK_REGISTER, /* KEEL.SESSION REGISTER TTL ... */
	BK_READ_TXN, /* KEEL.TXN THEN n (GET a_i)... */
	BK_READ_EXEC, /* KEEL.EXEC 0 n (GET a_i)... */
	BK_WREVS,    /* KEEL.WATCH-REVS from to */
	BK_MGET,     /* MGET from to (after the WATCH) */
	BK_EXEC,     /* KEEL.EXEC 2 (from m R) (to m R) 3 SET SET APPEND */
	BK_GETREV0,  /* KEEL.GETREV from */
	BK_GETREV1,  /* KEEL.GETREV to */
	BK_TXN,      /* KEEL.TXN IF 2 .. MOD = .. THEN 3 SET SET APPEND */
	BK_RUN,      /* KEEL.RUN sid seq KEEL.TXN ... */
};

struct sim_bankc {
	uint32_t idx;
	bool busy;          /* an operation is in progress */
	bool timeout_armed;
	uint8_t step, mode;
	uint64_t ops;       /* operations started (the budget) */
	uint64_t seq;       /* cookie counter */
	uint64_t cookie;    /* the current attempt's */
	uint64_t deadline;  /* of the current request */
	raft_id guess;
	uint64_t sid, sseq; /* session: id (0 = none yet), last seq used */
	uint32_t retries;   /* session: retries of the current (sid, seq) */
	bool ambiguous;     /* session: an attempt may have run */
	uint64_t xfer;      /* the transfer in progress (its id) */
	uint32_t from, to;
	uint64_t rev, mod[2];
	int64_t val[2];
	struct sim_bank_msg msg; /* the current request */
};

struct sim_ack {
	uint64_t index;
	uint64_t hash;
};

struct sim {
	struct sim_options opt;
	struct sim_result *res;
	uint32_t n_nodes;
	struct sim_node nodes[SIM_MAX_NODES];
	struct node_config ncfg;
	struct keel_rand net_rand, disk_rand, client_rand, fault_rand,
		crash_rand;
	uint64_t now;
	uint64_t seq;
	uint64_t steps;
	uint64_t next_handle;
	bool liveness;

	struct sim_event *heap;
	uint64_t n_heap, cap_heap;

	/* Parameters drawn from the seed. */
	uint32_t loss_pm, dup_pm, corrupt_pm; /* per mille */
	uint64_t lat_min, lat_jitter;         /* network */
	uint32_t delay_pm;                    /* long-delay chance */
	uint64_t delay_max;
	uint64_t disk_min, disk_jitter;
	uint32_t disk_spike_pm;
	uint64_t disk_spike;
	uint32_t partition_pm, crash_pm, pause_pm; /* per fault period */
	uint32_t eio_pm, enospc_pm; /* per fault period */
	uint32_t read_err_pm;       /* per restart */
	uint32_t bitflip_pm;        /* per crash of a damageable node */
	uint32_t rot_pm;            /* per 10,000 transfer chunk reads */
	uint64_t segment_bytes;
	struct keel_rand dfault_rand; /* disk faults' own stream */
	uint32_t n_clients, n_keys;
	uint64_t client_timeout;

	bool block[SIM_MAX_NODES][SIM_MAX_NODES]; /* from -> to cut */
	bool partitioned;
	uint32_t n_down; /* crashed or paused */

	struct sim_client clients[SIM_MAX_CLIENTS + 1]; /* last: liveness */
	/* Pipelining clients: their own randomness (seeded after every other
	 * stream, so those draw what they always drew), their writes' fate
	 * (order.c), the writes each may send in all. */
	struct keel_rand pipe_rand;
	uint32_t n_pipes;
	struct sim_pipe pipes[SIM_MAX_PIPES];
	struct sim_order order;
	uint64_t pipe_budget;
	uint32_t pipe_busy; /* writes in flight, all pipes */
	/* Bank clients: their own randomness (seeded after the pipes'), the
	 * accounts and what the clients learned (bank.c), the operations
	 * each may start in all, the clients with one in progress. */
	struct keel_rand bank_rand;
	uint32_t n_banks;
	struct sim_bankc banks[SIM_MAX_BANKS];
	struct sim_bank bank;
	uint64_t bank_budget;
	uint32_t bank_busy;
	uint32_t next_process;
	uint64_t ops_left;
	uint32_t busy_clients;

	struct sim_checker chk;
	struct sim_history hist;
	struct sim_ack *acks;
	uint64_t n_acks, cap_acks;
	bool live_ok;
	uint64_t live_index;

	/* History windows: with no indeterminate op so far, the clients stop
	 * every window_ops operations until none is in flight, the state is
	 * read, and the window is checked on its own (see cut_window). */
	uint64_t window_ops, window_done;
	bool barrier, any_info;
	bool waiting[SIM_MAX_CLIENTS + 1];
	uint64_t forwarded; /* requests forwarded by nodes since crashed */
	uint64_t expiries;  /* KEEL.EXPIRE-DELETE proposed, likewise */
	struct raft_entry dec[256]; /* describe_frame's scratch */
	char line[512];
};

/* ---- tracing --------------------------------------------------------------- */

static bool tracing(const struct sim *s)
{
	return s->opt.trace != NULL;
}

__attribute__((format(printf, 2, 3))) static void
trace(struct sim *s, const char *fmt, ...);

static void trace(struct sim *s, const char *fmt, ...)
{
	if (!s->opt.trace)
		return;
	int n = snprintf(s->line, sizeof(s->line), "t=%llu s=%llu ",
			 (unsigned long long)s->now,
			 (unsigned long long)s->steps);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(s->line + n, sizeof(s->line) - (size_t)n, fmt, ap);
	va_end(ap);
	s->opt.trace(s->opt.trace_ctx, s->line);
}

/* ---- event queue: a binary heap on (time, seq) ------------------------------- */

static bool ev_before(const struct sim_event *a, const struct sim_event *b)
{
	return a->time < b->time || (a->time == b->time && a->seq < b->seq);
}

static void push(struct sim *s, struct sim_event ev)
{
	if (s->n_heap == s->cap_heap) {
		uint64_t ncap = s->cap_heap ? s->cap_heap * 2 : 1024;
		struct sim_event *nh = realloc(s->heap, ncap * sizeof(*nh));
		KEEL_ASSERT(nh != NULL);
		s->heap = nh;
		s->cap_heap = ncap;
	}
	ev.seq = s->seq++;
	uint64_t i = s->n_heap++;
	while (i > 0) {
		uint64_t p = (i - 1) / 2;
		if (!ev_before(&ev, &s->heap[p]))
			break;
		s->heap[i] = s->heap[p];
		i = p;
	}
	s->heap[i] = ev;
}

static struct sim_event pop(struct sim *s)
{
	KEEL_ASSERT(s->n_heap > 0);
	struct sim_event top = s->heap[0];
	struct sim_event last = s->heap[--s->n_heap];
	uint64_t i = 0, n = s->n_heap;
	for (;;) {
		uint64_t l = 2 * i + 1, r = l + 1, m = i;
		const struct sim_event *best = &last;
		if (l < n && ev_before(&s->heap[l], best)) {
			m = l;
			best = &s->heap[l];
		}
		if (r < n && ev_before(&s->heap[r], best))
			m = r;
		if (m == i)
			break;
		s->heap[i] = s->heap[m];
		i = m;
	}
	if (n)
		s->heap[i] = last;
	return top;
}

static uint64_t rnd_range(struct keel_rand *r, uint64_t lo, uint64_t hi)
{
	return hi <= lo ? lo : lo + keel_rand_below(r, hi - lo + 1);
}

/* ---- the sim env --------------------------------------------------------------- */

static uint64_t env_now(void *ctx)
{
	struct sim_node *n = ctx;
	return n->skew_ns + n->sim->now / 1000000 * n->rate_ppm +
	       n->sim->now % 1000000 * n->rate_ppm / 1000000;
}

/* The node's wall clock: its skewed, drifting clock from a fixed epoch
 * (2026-01-01), so the leader's TTL stamps and expiry decisions move with
 * the clock faults. */
static uint64_t env_wall_ms(void *ctx)
{
	return 1767225600000ull + env_now(ctx) / MS;
}

/* Simulated duration of d on this node's clock. */
static uint64_t local_to_sim(const struct sim_node *n, uint64_t d)
{
	return d / n->rate_ppm * 1000000 + d % n->rate_ppm * 1000000 / n->rate_ppm;
}

static uint64_t env_timer_start(void *ctx, uint64_t delay, env_timer_cb cb,
				void *arg)
{
	struct sim_node *n = ctx;
	struct sim *s = n->sim;
	int slot = -1;
	for (int i = 0; i < SIM_TIMERS; i++)
		if (!n->timers[i])
			slot = i;
	if (slot < 0)
		return 0;
	uint64_t h = ++s->next_handle;
	n->timers[slot] = h;
	push(s, (struct sim_event){.time = s->now + local_to_sim(n, delay),
				   .type = EV_TIMER,
				   .node = (uint8_t)n->idx,
				   .inc = n->inc,
				   .a = h,
				   .p = arg,
				   .cb = cb});
	return h;
}

static bool take_timer(struct sim_node *n, uint64_t h)
{
	for (int i = 0; i < SIM_TIMERS; i++) {
		if (n->timers[i] == h) {
			n->timers[i] = 0;
			return true;
		}
	}
	return false;
}

static void env_timer_stop(void *ctx, uint64_t h)
{
	take_timer(ctx, h);
}

/* What a frame says, for the trace (decoded without the entries' data). */
static void describe_frame(struct sim *s, const uint8_t *frame, size_t len,
			   char *out, size_t cap)
{
	struct peer_limits lim;
	peer_limits_default(&lim, s->ncfg.cluster_id);
	struct raft_msg m;
	int rv = peer_decode(frame, len, &lim, NULL, &m, s->dec, 256);
	uint64_t sender;
	int type;
	if (rv == KEEL_ERR_TYPE &&
	    peer_frame_verify(frame, len, &lim, &sender, &type) == 0) {
		/* Node-level forwarding frames: type and seq. */
		static const char *const fwd[] = {"FWD_WRITE", "FWD_ACK",
						  "FWD_NACK", "FWD_READ",
						  "FWD_READ_OK"};
		size_t bl;
		const uint8_t *body = peer_frame_body(frame, &bl);
		if (type == PEER_TYPE_SNAP_CHUNK && bl >= 48) {
			snprintf(out, cap, "SNAP_CHUNK %llu-%llu off=%llu len=%u",
				 (unsigned long long)keel_get_u64(body + 8),
				 (unsigned long long)keel_get_u64(body + 16),
				 (unsigned long long)keel_get_u64(body + 32),
				 keel_get_u32(body + 44));
			return;
		}
		if (type == PEER_TYPE_SNAP_ACK && bl >= 41) {
			static const char *const st[] = {"?", "CONTINUE",
							 "COMPLETE", "DONE",
							 "BAD", "STALE", "BUSY"};
			snprintf(out, cap, "SNAP_ACK %llu-%llu next=%llu %s",
				 (unsigned long long)keel_get_u64(body + 8),
				 (unsigned long long)keel_get_u64(body + 16),
				 (unsigned long long)keel_get_u64(body + 32),
				 body[40] <= 6 ? st[body[40]] : "?");
			return;
		}
		bool known = type >= PEER_TYPE_FWD_WRITE &&
			     type <= PEER_TYPE_FWD_READ_OK;
		snprintf(out, cap, "%s seq%llu",
			 known ? fwd[type - PEER_TYPE_FWD_WRITE] : "NODE?",
			 bl >= 16 ? (unsigned long long)keel_get_u64(body + 8)
				  : 0ull);
		return;
	}
	if (rv) {
		snprintf(out, cap, "undecodable(%s)", keel_strerror(rv));
		return;
	}
	snprintf(out, cap,
		 "%s t%llu li%llu lt%llu c%llu n%u%s ctx%llu",
		 raft_msg_type_name(m.type), (unsigned long long)m.term,
		 (unsigned long long)m.index, (unsigned long long)m.log_term,
		 (unsigned long long)m.commit, m.n_entries,
		 m.reject ? " reject" : "", (unsigned long long)m.context);
}

static void env_send(void *ctx, raft_id to, const uint8_t *frame, size_t len)
{
	struct sim_node *n = ctx;
	struct sim *s = n->sim;
	s->res->frames_sent++;
	if (n->disk_failed) {
		/* fsyncgate: after a failed write the node may hold acks or
		 * votes for data that is not on disk; it must stay silent. */
		char d[96];
		snprintf(d, sizeof(d), "node %u sent a frame after its store "
			 "failed", n->idx + 1);
		sim_checker_fail(&s->chk, "silent-after-disk-error", d);
	}
	if (to < 1 || to > s->n_nodes)
		return;
	uint32_t t = (uint32_t)(to - 1);
	if (s->block[n->idx][t]) {
		if (tracing(s))
			trace(s, "net drop %u->%u partition", n->idx + 1, t + 1);
		return;
	}
	if (s->loss_pm && keel_rand_below(&s->net_rand, 1000) < s->loss_pm) {
		if (tracing(s))
			trace(s, "net drop %u->%u loss", n->idx + 1, t + 1);
		return;
	}
	int copies = 1;
	if (s->dup_pm && keel_rand_below(&s->net_rand, 1000) < s->dup_pm)
		copies = 2;
	for (int c = 0; c < copies; c++) {
		uint8_t *b = malloc(len);
		KEEL_ASSERT(b != NULL);
		memcpy(b, frame, len);
		bool bad = false;
		if (s->corrupt_pm &&
		    keel_rand_below(&s->net_rand, 1000) < s->corrupt_pm) {
			uint32_t flips = (uint32_t)rnd_range(&s->net_rand, 1, 3);
			for (uint32_t f = 0; f < flips; f++) {
				uint64_t bit = keel_rand_below(&s->net_rand,
							       len * 8);
				b[bit / 8] ^= (uint8_t)(1u << (bit % 8));
			}
			bad = true;
			s->res->frames_corrupted++;
		}
		uint64_t d = s->lat_min +
			     keel_rand_below(&s->net_rand, s->lat_jitter + 1);
		if (s->delay_pm &&
		    keel_rand_below(&s->net_rand, 1000) < s->delay_pm)
			d += keel_rand_below(&s->net_rand, s->delay_max + 1);
		if (tracing(s)) {
			char what[160];
			describe_frame(s, frame, len, what, sizeof(what));
			trace(s, "net send %u->%u len=%zu delay=%llu%s%s %s",
			      n->idx + 1, t + 1, len, (unsigned long long)d,
			      c ? " dup" : "", bad ? " corrupt" : "", what);
		}
		push(s, (struct sim_event){.time = s->now + d,
					   .type = EV_DELIVER,
					   .node = (uint8_t)t,
					   .from = (uint8_t)n->idx,
					   .p = b,
					   .len = (uint32_t)len});
	}
}

static uint64_t env_rand_next(void *ctx)
{
	struct sim_node *n = ctx;
	return keel_rand_next(&n->rand);
}

static void env_log_line(void *ctx, int level, const char *msg)
{
	struct sim_node *n = ctx;
	if (tracing(n->sim))
		trace(n->sim, "node %u log %d %s", n->idx + 1, level, msg);
}

static int env_store_load(void *ctx, struct env_store_state *out)
{
	struct sim_node *n = ctx;
	return sim_store_load(&n->store, out);
}

/* Schedules the completion of the store operation just queued (appends
 * and snapshot writes alike: one queue, FIFO) and fires an armed crash. */
static uint64_t schedule_disk(struct sim *s, struct sim_node *n, bool write)
{
	uint64_t lat = s->disk_min +
		       keel_rand_below(&s->disk_rand, s->disk_jitter + 1);
	if (s->disk_spike_pm &&
	    keel_rand_below(&s->disk_rand, 1000) < s->disk_spike_pm)
		lat += keel_rand_below(&s->disk_rand, s->disk_spike + 1);
	uint64_t at = KEEL_MAX(s->now + lat, n->disk_done);
	n->disk_done = at;
	if (write)
		s->res->disk_writes++;
	if (write && n->crash_armed) {
		/* After the step that issued it, before it completes. */
		n->crash_armed = false;
		push(s, (struct sim_event){.time = s->now,
					   .type = EV_CRASH,
					   .node = (uint8_t)n->idx,
					   .inc = n->inc});
	}
	push(s, (struct sim_event){.time = at,
				   .type = EV_DISK,
				   .node = (uint8_t)n->idx,
				   .inc = n->inc});
	return at;
}

static int env_store_append(void *ctx, const struct env_store_write *w,
			    env_store_cb cb, void *arg)
{
	struct sim_node *n = ctx;
	struct sim *s = n->sim;
	int rv = sim_store_submit(&n->store, w, cb, arg);
	if (rv)
		return rv;
	uint64_t at = schedule_disk(s, n, true);
	if (tracing(s))
		trace(s, "disk write node %u from=%llu n=%u hs=%d done_at=%llu",
		      n->idx + 1, (unsigned long long)w->truncate_from,
		      w->n_entries, w->has_hard_state, (unsigned long long)at);
	return 0;
}

/* ---- streamed snapshots: the sim store's, each completion scheduled like
 * an append's ---- */

static int env_snap_begin(void *ctx, const struct env_store_snap *sn,
			  uint64_t *handle)
{
	struct sim_node *n = ctx;
	int rv = sim_store_snap_begin(&n->store, sn, handle);
	if (tracing(n->sim))
		trace(n->sim, "snap begin node %u %s %llu-%llu len=%llu rv=%d",
		      n->idx + 1, sn->kind == ENV_SNAP_LOCAL ? "local" : "recv",
		      (unsigned long long)sn->index,
		      (unsigned long long)sn->term,
		      (unsigned long long)sn->total_len, rv);
	return rv;
}

static int env_snap_write(void *ctx, uint64_t handle, uint64_t offset,
			  const uint8_t *data, size_t len, env_store_cb cb,
			  void *arg)
{
	struct sim_node *n = ctx;
	int rv = sim_store_snap_write(&n->store, handle, offset, data, len, cb,
				      arg);
	if (!rv)
		schedule_disk(n->sim, n, true);
	return rv;
}

static int env_snap_finish(void *ctx, uint64_t handle, uint32_t crc,
			   env_store_cb cb, void *arg)
{
	struct sim_node *n = ctx;
	int rv = sim_store_snap_finish(&n->store, handle, crc, cb, arg);
	if (!rv)
		schedule_disk(n->sim, n, true);
	if (tracing(n->sim))
		trace(n->sim, "snap finish node %u handle=%llu rv=%d",
		      n->idx + 1, (unsigned long long)handle, rv);
	return rv;
}

static void env_snap_abort(void *ctx, uint64_t handle)
{
	struct sim_node *n = ctx;
	sim_store_snap_abort(&n->store, handle);
	if (tracing(n->sim))
		trace(n->sim, "snap abort node %u handle=%llu", n->idx + 1,
		      (unsigned long long)handle);
}

/* Every snap_read of a node comes back here first, in issue order: rot
 * (docs/snapshots.md §4, "a bad byte returned by snap_read on the
 * sender") strikes a transfer chunk now and then. The frame CRCs around
 * it will be valid; only snap_crc and the payload trailer can catch it. */
static void rot_read_cb(void *arg, int status, const uint8_t *data,
			size_t len)
{
	struct sim_node *n = arg;
	struct sim *s = n->sim;
	KEEL_ASSERT(n->rd_n > 0);
	uint64_t off = n->rd_off[n->rd_head];
	n->rd_head = (n->rd_head + 1) % SIM_MAX_READS;
	n->rd_n--;
	if (!status && len && len <= s->ncfg.snapshot_step_bytes &&
	    !s->liveness && s->rot_pm &&
	    keel_rand_below(&s->dfault_rand, 10000) < s->rot_pm) {
		/* Mostly the first dedup slots (the ones in use), which
		 * nothing but the two whole-payload CRCs protect. */
		uint64_t lo = 184, hi = 184 + 8 * 160;
		uint64_t at;
		if (off < hi && off + len > lo && keel_rand_below(&s->dfault_rand, 2)) {
			uint64_t a = KEEL_MAX(off, lo), b = KEEL_MIN(off + len, hi);
			at = a + keel_rand_below(&s->dfault_rand, b - a);
		} else {
			at = off + keel_rand_below(&s->dfault_rand, len);
		}
		uint8_t bit = (uint8_t)(1u << keel_rand_below(&s->dfault_rand, 8));
		/* The store's buffer is its own malloc'd copy, freed after
		 * this call: changing it in place hurts nothing else. */
		((uint8_t *)(uintptr_t)data)[at - off] ^= bit;
		s->res->snap_rot++;
		if (tracing(s))
			trace(s, "snap read rot node %u offset %llu", n->idx + 1,
			      (unsigned long long)at);
	}
	n->rd_cb(n->rd_arg, status, data, len);
}

static int env_snap_read(void *ctx, uint64_t index, uint64_t term,
			 uint64_t offset, size_t len, env_store_read_cb cb,
			 void *arg)
{
	struct sim_node *n = ctx;
	/* One node has one read callback (it routes by its own FIFO). */
	KEEL_ASSERT(!n->rd_n || (n->rd_cb == cb && n->rd_arg == arg));
	if (n->rd_n == SIM_MAX_READS)
		return KEEL_ERR_BUSY;
	int rv = sim_store_snap_read(&n->store, index, term, offset, len,
				     rot_read_cb, n);
	if (rv)
		return rv;
	n->rd_cb = cb;
	n->rd_arg = arg;
	n->rd_off[(n->rd_head + n->rd_n) % SIM_MAX_READS] = offset;
	n->rd_n++;
	schedule_disk(n->sim, n, false);
	return 0;
}

static const struct env_clock_ops clock_ops = {env_now, env_timer_start,
					       env_timer_stop, env_wall_ms};
static const struct env_net_ops net_ops = {env_send};
static const struct env_rand_ops rand_ops = {env_rand_next};
static const struct env_log_ops log_ops = {env_log_line};
static const struct env_store_ops store_ops = {.load = env_store_load,
					       .append = env_store_append,
					       .snap_begin = env_snap_begin,
					       .snap_write = env_snap_write,
					       .snap_finish = env_snap_finish,
					       .snap_abort = env_snap_abort,
					       .snap_read = env_snap_read};

/* ---- checks around each step -------------------------------------------------- */

static uint64_t node_term_at(const void *ctx, uint64_t index)
{
	int err = 0;
	uint64_t t = raft_term_at(ctx, index, &err);
	if (err == KEEL_ERR_COMPACTED)
		return SIM_TERM_COMPACTED;
	return err ? 0 : t;
}

static void obs_update(void *ctx, raft_id id, const struct raft_update *u)
{
	struct sim *s = ctx;
	const struct raft *r = node_raft(s->nodes[id - 1].node);
	if (u->snapshot) {
		/* The next apply is index + 1; its digest check compares the
		 * installed state with every other replica's at index. */
		sim_checker_jump(&s->chk, id, u->snapshot->index);
		s->nodes[id - 1].digest_next = true;
		if (tracing(s))
			trace(s, "install node %llu snapshot %llu term %llu",
			      (unsigned long long)id,
			      (unsigned long long)u->snapshot->index,
			      (unsigned long long)u->snapshot->term);
	}
	for (uint32_t k = 0; k < u->n_entries; k++) {
		const struct raft_entry *e = &u->entries[k];
		uint64_t prev = k ? u->entries[k - 1].term
				  : u->snapshot && e->index == u->snapshot->index + 1
					  ? u->snapshot->term
					  : node_term_at(r, e->index - 1);
		sim_check_logged(&s->chk, id, e->index, e->term,
				 sim_entry_hash(e), prev);
	}
}

/* The state before e is applied is the state after e->index - 1: every
 * SIM_DIGEST_EVERY-th index is compared across replicas, and always the
 * first one after a snapshot install or restore. */
#define SIM_DIGEST_EVERY 4
static void obs_apply(void *ctx, raft_id id, const struct raft_entry *e)
{
	struct sim *s = ctx;
	struct sim_node *n = &s->nodes[id - 1];
	if (n->node && (n->digest_next || (e->index - 1) % SIM_DIGEST_EVERY == 0)) {
		n->digest_next = false;
		sim_check_digest(&s->chk, id, e->index - 1,
				 node_state_digest(n->node));
	}
	sim_check_applied(&s->chk, id, e->index, e->term, sim_entry_hash(e));
}

static uint32_t durable_votes(struct sim *s, uint64_t index, uint64_t term)
{
	uint32_t v = 0;
	for (uint32_t i = 0; i < s->n_nodes; i++)
		if (sim_store_durable_term(&s->nodes[i].store, index) == term ||
		    sim_store_durable_snap(&s->nodes[i].store) >= index)
			v++; /* a durable snapshot covering it holds it */
	return v;
}

/* Runs the per-step checks for one node after it handled an event. */
static void check_node(struct sim *s, struct sim_node *n)
{
	if (!n->node)
		return;
	const struct raft *r = node_raft(n->node);
	raft_check_invariants(r);
	struct raft_status st;
	raft_status(r, &st);
	n->is_leader = st.role == RAFT_LEADER;
	n->term = st.term;
	if (st.role == RAFT_LEADER) {
		sim_check_leader(&s->chk, n->id, st.term);
		if (n->leader_term_checked != st.term) {
			n->leader_term_checked = st.term;
			if (tracing(s))
				trace(s, "leader node %u term %llu", n->idx + 1,
				      (unsigned long long)st.term);
			sim_check_leader_log(&s->chk, n->id, st.term,
					     node_term_at, r);
		}
	}
	uint64_t fresh_top = 0;
	/* Entries at or below the log base are compacted: the snapshot
	 * holds them (checked by state agreement instead). */
	if (n->seen_commit < st.snap_index)
		n->seen_commit = st.snap_index;
	for (uint64_t i = n->seen_commit + 1; i <= st.commit; i++) {
		const struct raft_entry *e = raft_entry_at(r, i);
		KEEL_ASSERT(e != NULL);
		bool fresh = false;
		sim_check_committed(&s->chk, n->id, i, e->term,
				    sim_entry_hash(e), st.term, &fresh);
		if (!fresh)
			continue;
		fresh_top = i;
		uint32_t votes = durable_votes(s, i, e->term);
		if (tracing(s))
			trace(s, "committed index %llu term %llu at node %u "
				 "(durable on %u)",
			      (unsigned long long)i,
			      (unsigned long long)e->term, n->idx + 1, votes);
		sim_check_durable(&s->chk, i, votes);
		/* Leaders of later terms must already hold it. */
		for (uint32_t k = 0; k < s->n_nodes; k++) {
			struct sim_node *o = &s->nodes[k];
			if (!o->node || o == n || !o->is_leader ||
			    o->term <= st.term)
				continue;
			uint64_t ot = node_term_at(node_raft(o->node), i);
			if (ot != e->term && ot != SIM_TERM_COMPACTED) {
				char d[128];
				snprintf(d, sizeof(d),
					 "leader %llu of term %llu lacks newly "
					 "committed index %llu",
					 (unsigned long long)o->id,
					 (unsigned long long)o->term,
					 (unsigned long long)i);
				sim_checker_fail(&s->chk, "leader-completeness",
						 d);
			}
		}
	}
	/* The leader that moved the commit point did it with an entry of its
	 * own term (it is always the first to know a new commit index). */
	if (fresh_top && st.role == RAFT_LEADER)
		sim_check_commit_rule(&s->chk, n->id, st.term, fresh_top,
				      node_term_at(r, fresh_top));
	if (st.commit > n->seen_commit)
		n->seen_commit = st.commit;
}

/* After a crash: every committed entry is still durable on a majority. */
static void check_all_durable(struct sim *s)
{
	for (uint64_t i = 1; i <= s->chk.n_committed && !s->chk.violated; i++)
		sim_check_durable(&s->chk, i,
				  durable_votes(s, i, s->chk.committed[i - 1].term));
}

/* ---- nodes: start, crash, pause ------------------------------------------------- */

static void on_reply(void *ctx, const struct node_reply *rep);
static void pipes_node_down(struct sim *s, struct sim_node *n);
static bool deferred(struct sim *s, struct sim_node *n, struct sim_event *ev);
static void pipes_pump(struct sim *s);
static void banks_pump(struct sim *s);

static int start_node(struct sim *s, struct sim_node *n)
{
	struct node_config cfg = s->ncfg;
	cfg.id = n->id;
	cfg.reply_ctx = n;
	int rv = node_create(&cfg, &n->env, &n->node);
	if (rv) {
		char d[128];
		snprintf(d, sizeof(d), "node %u cannot start: %s", n->idx + 1,
			 keel_strerror(rv));
		sim_checker_fail(&s->chk, "restart", d);
		n->node = NULL;
		return rv;
	}
	n->seen_commit = 0;
	n->leader_term_checked = 0;
	n->streams = 0; /* a new process numbers its connections anew */
	sim_checker_restart(&s->chk, n->id);
	if (node_applied(n->node)) {
		/* Restored from a snapshot: applies resume after it. */
		sim_checker_jump(&s->chk, n->id, node_applied(n->node));
		n->digest_next = true;
	}
	return 0;
}

/* A node's counters go into the run's totals when it stops. */
static void add_node_stats(struct sim *s, const struct node_stats *ns,
			   bool crashed)
{
	struct sim_result *r = s->res;
	s->forwarded += ns->fwd_requests;
	s->expiries += ns->expire_proposed;
	r->snap_taken += ns->snap_taken;
	r->snap_finished += ns->snap_finished;
	r->snap_aborted += ns->snap_aborted;
	if (crashed)
		r->snap_aborted += ns->snap_taken - ns->snap_finished -
				   ns->snap_aborted; /* cut mid-stream */
	r->snap_compactions += ns->snap_compactions;
	r->snap_sends += ns->snap_sends_started;
	r->snap_sends_ok += ns->snap_sent_ok;
	r->snap_sends_failed += ns->snap_sent_failed;
	r->snap_chunks += ns->snap_chunks_sent;
	r->snap_chunks_resent += ns->snap_chunks_resent;
	r->snap_verify_failed += ns->snap_verify_failed;
	r->snap_installs += ns->snap_installs;
	r->snap_restores += ns->snap_restored;
	r->session_dups += ns->session_dups;
	r->session_runs += ns->session_runs;
}

/* A recovery gave back less than was synced: the store lost data. */
static void check_recovered(struct sim *s, struct sim_node *n)
{
	if (!n->store.synced_lost)
		return;
	char d[200];
	snprintf(d, sizeof(d), "node %u: %s", n->idx + 1, n->store.lost_msg);
	sim_checker_fail(&s->chk, "synced-data-lost", d);
}

/*
 * Power loss on one node: the real disk loses, keeps or tears what was
 * not synced (mostly torn; the mode is drawn), rot may strike its data at
 * rest while it is down (damageable nodes only), and recovery (wal_open)
 * runs at once, so the durability check below sees exactly what the node
 * will restart from. A recovery that finds corruption refuses: the node
 * stays down for the rest of the run (its shadow keeps what it had synced,
 * which is what the protocol put there).
 */
static void crash_node(struct sim *s, struct sim_node *n)
{
	KEEL_ASSERT(n->node != NULL);
	struct node_stats ns;
	node_stats(n->node, &ns);
	add_node_stats(s, &ns, true);
	node_destroy(n->node);
	n->node = NULL;
	n->is_leader = false;
	n->crash_armed = false;
	n->inc++;
	pipes_node_down(s, n);
	memset(n->timers, 0, sizeof(n->timers));
	if (n->doomed) {
		n->doomed = false; /* the crash ends the disk fault too */
		s->n_down--;
	}
	n->disk_failed = false;
	n->rd_n = n->rd_head = 0; /* the store drops its queue */
	uint64_t before = sim_store_unsynced_records(&n->store);
	uint64_t p = keel_rand_below(&s->crash_rand, 10);
	int mode = p < 8 ? MEMDISK_TORN
		   : p < 9 ? MEMDISK_LOSE_UNSYNCED
			   : MEMDISK_KEEP_UNSYNCED;
	uint64_t lost = sim_store_crash(&n->store, mode);
	n->disk_done = 0;
	if (n->paused) {
		n->paused = false;
		s->n_down--;
	}
	s->n_down++;
	s->res->crashes++;
	if (lost)
		s->res->crashes_lost++;
	if (tracing(s))
		trace(s, "crash node %u unsynced=%llu mode=%d lost_or_torn=%llu",
		      n->idx + 1, (unsigned long long)before, mode,
		      (unsigned long long)lost);
	bool flipped = false;
	if (n->damageable && !s->liveness && s->bitflip_pm &&
	    keel_rand_below(&s->dfault_rand, 1000) < s->bitflip_pm) {
		char what[160] = "";
		if (sim_store_flip(&n->store, &s->dfault_rand, what,
				   sizeof(what)) == 0) {
			flipped = true;
			s->res->bitflips++;
			if (tracing(s))
				trace(s, "bitflip node %u %s", n->idx + 1, what);
		}
	}
	uint64_t torn = n->store.torn_tails;
	int rv = sim_store_recover(&n->store);
	if (n->store.torn_tails != torn)
		s->res->torn_tails++;
	if (rv == KEEL_ERR_CORRUPT) {
		n->refused = true;
		s->res->refused_start++;
		if (tracing(s))
			trace(s, "node %u refuses to start: %s", n->idx + 1,
			      n->store.msg);
		if (!flipped) {
			/* Crashes, torn writes and disk errors alone must
			 * never make a node unable to start. */
			char d[320];
			snprintf(d, sizeof(d), "node %u: %s", n->idx + 1,
				 n->store.msg);
			sim_checker_fail(&s->chk, "refused-without-damage", d);
		}
	} else if (rv) {
		char d[320];
		snprintf(d, sizeof(d), "node %u: %s", n->idx + 1, n->store.msg);
		sim_checker_fail(&s->chk, "recovery", d);
	}
	if (!rv && tracing(s)) {
		trace(s, "recovered node %u entries=%u term=%llu", n->idx + 1,
		      n->store.rec.n_entries,
		      (unsigned long long)n->store.rec.hs.term);
		for (uint32_t i = 0; i < n->store.rec.n_warnings; i++)
			trace(s, "recovered node %u warning: %s", n->idx + 1,
			      n->store.rec.warning[i]);
	}
	check_recovered(s, n);
	check_all_durable(s);
}

/* ---- clients ------------------------------------------------------------------- */

/* request-held-silently (checker.c): client c's held attempt, checked now,
 * at the node's answer or at the client's timeout; then forgotten. */
static void check_hold(struct sim *s, struct sim_client *c, bool answered)
{
	if (!c->held_node)
		return;
	struct sim_node *n = &s->nodes[c->held_node - 1];
	struct sim_hold h = {
		.node = n->id,
		.client = c->idx,
		.op = c->req.ttl ? "SET PX" : sim_op_name(c->req.op),
		.taken_local = c->held_local,
		.now_local = env_now(n),
		.request_timeout = s->ncfg.request_timeout_ns,
		.answered = answered,
		.excused = n->inc != c->held_inc ||
			   n->pauses != c->held_pauses || !n->node ||
			   n->paused,
	};
	c->held_node = 0;
	struct sim_result *r = s->res;
	if (!answered) {
		r->timeouts_held += !h.excused;
		r->timeouts_excused += h.excused;
	}
	if (!h.excused && h.now_local >= h.taken_local && h.request_timeout) {
		uint64_t held = h.now_local - h.taken_local;
		uint64_t pm = held / h.request_timeout * 1000 +
			      held % h.request_timeout * 1000 /
				      h.request_timeout;
		r->max_hold_pm = KEEL_MAX(r->max_hold_pm, pm);
	}
	sim_check_hold(&s->chk, &h);
}

static void client_send(struct sim *s, struct sim_client *c, raft_id to)
{
	c->held_node = 0; /* the last attempt was answered */
	c->attempt++;
	c->req.cookie = ((uint64_t)c->idx << 40) | c->attempt;
	struct sim_req *rq = malloc(sizeof(*rq));
	KEEL_ASSERT(rq != NULL);
	*rq = c->req;
	uint64_t d = s->lat_min + keel_rand_below(&s->client_rand,
						  s->lat_jitter + 1);
	push(s, (struct sim_event){.time = s->now + d,
				   .type = EV_CLIENT_REQ,
				   .node = (uint8_t)(to - 1),
				   .p = rq});
}

/* Any node accepts any command: half the requests go to a random node,
 * so followers forward a lot. */
static raft_id pick_node(struct sim *s, struct sim_client *c)
{
	if (c->guess && keel_rand_below(&s->client_rand, 2))
		return c->guess;
	return 1 + keel_rand_below(&s->client_rand, s->n_nodes);
}

static void digits(struct keel_rand *r, uint8_t *out, uint8_t *len,
		   uint64_t below)
{
	*len = (uint8_t)snprintf((char *)out, 24, "%llu",
				 (unsigned long long)keel_rand_below(r, below));
}

static void hist(struct sim *s, struct sim_client *c, int type, bool has,
		 const uint8_t *v1, uint32_t l1, const uint8_t *v2,
		 uint32_t l2)
{
	int rv = sim_history_add(&s->hist, s->now, c->process, type,
				 c->req.op, c->req.key, has, v1, l1, v2, l2);
	KEEL_ASSERT(rv == 0);
}

/* Starts client c's next operation, or ends it. */
static void maybe_cut(struct sim *s);

static void client_next(struct sim *s, struct sim_client *c)
{
	KEEL_ASSERT(!c->busy);
	bool live = c->idx == s->n_clients;
	if (!live && s->ops_left == 0) {
		c->done = true;
		return;
	}
	if (!live && s->barrier) {
		s->waiting[c->idx] = true;
		maybe_cut(s);
		return;
	}
	struct keel_rand *r = &s->client_rand;
	memset(&c->req, 0, sizeof(c->req));
	if (live) {
		c->req.op = SIM_OP_PUT;
		c->req.key = 0;
		digits(r, c->req.a, &c->req.a_len, 10);
	} else {
		s->ops_left--;
		pipes_pump(s);
		banks_pump(s);
		uint64_t p = keel_rand_below(r, 100);
		c->req.op = p < 30   ? SIM_OP_GET
			    : p < 50 ? SIM_OP_PUT
			    : p < 65 ? SIM_OP_CAS
			    : p < 80 ? SIM_OP_INCR
			    : p < 90 ? SIM_OP_APPEND
				     : SIM_OP_DEL;
		c->req.key = (uint8_t)keel_rand_below(r, s->n_keys);
		if (c->req.op == SIM_OP_PUT)
			digits(r, c->req.a, &c->req.a_len, 10);
		else if (c->req.op == SIM_OP_APPEND)
			digits(r, c->req.a, &c->req.a_len, 10);
		else if (c->req.op == SIM_OP_CAS) {
			digits(r, c->req.a, &c->req.a_len, 10);
			digits(r, c->req.b, &c->req.b_len, 10);
		}
		/* A few TTL writes on keys of their own (t0..t2), which the
		 * linearizability model never reads: they keep the leader's
		 * expiry proposals running under every fault. Drawn after the
		 * op so the other draws stay where they were. */
		if (keel_rand_below(r, 100) < 4) {
			c->req.op = SIM_OP_PUT;
			c->req.ttl = true;
			c->req.key = (uint8_t)keel_rand_below(r, 3);
			digits(r, c->req.a, &c->req.a_len, 10);
			digits(r, c->req.b, &c->req.b_len, 300);
			if (c->req.b_len == 1 && c->req.b[0] == '0')
				c->req.b[0] = '1'; /* PX must be > 0 */
		}
	}
	c->busy = true;
	s->busy_clients++;
	s->res->ops_invoked++;
	c->deadline = s->now + s->client_timeout;
	if (!c->req.ttl)
		hist(s, c, SIM_INVOKE, false, c->req.a, c->req.a_len,
		     c->req.b, c->req.b_len);
	if (tracing(s))
		trace(s, "client %u p=%u invoke %s %s%u", c->idx, c->process,
		      sim_op_name(c->req.op), c->req.ttl ? "t" : "k",
		      c->req.key);
	if (!c->timeout_armed) {
		c->timeout_armed = true;
		push(s, (struct sim_event){.time = c->deadline,
					   .type = EV_CLIENT_TIMEOUT,
					   .a = c->idx});
	}
	client_send(s, c, pick_node(s, c));
}

static void client_finish(struct sim *s, struct sim_client *c, int type)
{
	KEEL_ASSERT(c->busy);
	c->busy = false;
	c->held_node = 0;
	s->busy_clients--;
	if (type == SIM_OK)
		s->res->ops_ok++;
	else if (type == SIM_FAIL)
		s->res->ops_fail++;
	else if (c->req.ttl) {
		/* Not in the history: its late effect touches no model key. */
		s->res->ops_info++;
	} else {
		s->res->ops_info++;
		s->any_info = true;
		/* Jepsen: an indeterminate op leaves its process open; the
		 * client goes on as a new process. */
		c->process = s->next_process++;
	}
	s->window_done++;
	if (!s->liveness && !s->any_info && s->window_done >= s->window_ops)
		s->barrier = true;
	uint64_t think = keel_rand_below(&s->client_rand, 200 * US);
	push(s, (struct sim_event){.time = s->now + think,
				   .type = EV_CLIENT_NEXT,
				   .a = c->idx});
}

/* One reply played from a tape: its top-level kind and scalar. */
struct reply_collect {
	int kind; /* 's' 'e' 'i' 'b' 'n' 'a', 0 before the first call */
	int64_t num;
	const uint8_t *bulk;
	size_t len;
};

static void rc_first(struct reply_collect *rc, int kind)
{
	if (!rc->kind)
		rc->kind = kind;
}
static void rc_status(void *ctx, const char *str)
{
	(void)str;
	rc_first(ctx, 's');
}
static void rc_error(void *ctx, const char *str)
{
	(void)str;
	rc_first(ctx, 'e');
}
static void rc_integer(void *ctx, int64_t v)
{
	struct reply_collect *rc = ctx;
	if (!rc->kind)
		rc->num = v;
	rc_first(rc, 'i');
}
static void rc_bulk(void *ctx, const uint8_t *p, size_t len)
{
	struct reply_collect *rc = ctx;
	if (!rc->kind) {
		rc->bulk = p;
		rc->len = len;
	}
	rc_first(rc, 'b');
}
static void rc_null(void *ctx)
{
	rc_first(ctx, 'n');
}
static void rc_array(void *ctx, size_t n)
{
	(void)n;
	rc_first(ctx, 'a');
}
static const struct kv_reply_ops collect_ops = {rc_status, rc_error,
						rc_integer, rc_bulk,
						rc_null, rc_array};

static void reply_wrong(struct sim *s, struct sim_client *c, const char *why)
{
	char d[160];
	snprintf(d, sizeof(d), "client %u %s k%u: %s", c->idx,
		 sim_op_name(c->req.op), c->req.key, why);
	sim_checker_fail(&s->chk, "reply", d);
}

/* An acknowledged write must stay: its index and entry are remembered
 * (check_acks compares them with the committed log at the end). False,
 * and a violation, when no node applied that index. */
static bool record_ack(struct sim *s, uint64_t index)
{
	if (index < 1 || index > s->chk.n_applied) {
		char d[128];
		snprintf(d, sizeof(d),
			 "write acknowledged at index %llu, which no node "
			 "applied in order",
			 (unsigned long long)index);
		sim_checker_fail(&s->chk, "acknowledged-write-lost", d);
		return false;
	}
	if (s->n_acks == s->cap_acks) {
		s->cap_acks = s->cap_acks ? s->cap_acks * 2 : 1024;
		s->acks = realloc(s->acks, s->cap_acks * sizeof(*s->acks));
		KEEL_ASSERT(s->acks != NULL);
	}
	s->acks[s->n_acks++] =
		(struct sim_ack){index, s->chk.applied[index - 1].hash};
	return true;
}

static void client_reply(struct sim *s, struct sim_client *c,
			 const struct sim_reply *rp)
{
	if (!c->busy || rp->cookie != c->req.cookie)
		return; /* an answer to an attempt already given up */
	if (tracing(s))
		trace(s, "client %u p=%u reply %s idx=%llu", c->idx,
		      c->process, node_status_name(rp->status),
		      (unsigned long long)rp->index);
	switch (rp->status) {
	case NODE_NOT_LEADER:
		/* Not executed: try the hinted node (or any). */
		c->guess = rp->hint;
		if (!rp->hint)
			c->guess = 1 + keel_rand_below(&s->client_rand,
						       s->n_nodes);
		client_send(s, c, c->guess);
		return;
	case NODE_DROPPED:
		if (!c->req.ttl)
			hist(s, c, SIM_FAIL, false, NULL, 0, NULL, 0);
		client_finish(s, c, SIM_FAIL);
		return;
	case NODE_UNKNOWN:
		/* The node itself does not know: indeterminate. */
		if (!c->req.ttl)
			hist(s, c, SIM_INFO, false, NULL, 0, NULL, 0);
		client_finish(s, c, SIM_INFO);
		return;
	case NODE_OK:
		break;
	default:
		reply_wrong(s, c, "unknown status");
		return;
	}
	struct reply_collect rc = {0};
	if (kv_tape_play(rp->tape, rp->tape_len, &collect_ops, &rc)) {
		reply_wrong(s, c, "malformed reply tape");
		return;
	}
	if (c->req.op != SIM_OP_GET) {
		/* Remember what the acknowledged write was: it must stay. */
		if (!record_ack(s, rp->index)) {
			client_finish(s, c, SIM_OK);
			return;
		}
		if (c->idx == s->n_clients) {
			s->live_ok = true;
			s->live_index = rp->index;
		}
	}
	if (c->req.ttl) {
		if (rc.kind != 's')
			reply_wrong(s, c, "SET PX did not answer OK");
		client_finish(s, c, SIM_OK);
		return;
	}
	/* The Redis replies, mapped onto the history's vocabulary. */
	uint8_t num[24];
	switch (c->req.op) {
	case SIM_OP_GET:
		if (rc.kind == 'n') {
			hist(s, c, SIM_OK, false, NULL, 0, NULL, 0);
		} else if (rc.kind == 'b' && rc.len <= SIM_MAX_VALUE) {
			hist(s, c, SIM_OK, true, rc.bulk, (uint32_t)rc.len,
			     NULL, 0);
		} else {
			reply_wrong(s, c, "GET: not a bulk or nil");
			return;
		}
		break;
	case SIM_OP_INCR:
		if (rc.kind == 'e') { /* not an integer, overflow: no effect */
			hist(s, c, SIM_FAIL, false, NULL, 0, NULL, 0);
			client_finish(s, c, SIM_FAIL);
			return;
		}
		if (rc.kind != 'i') {
			reply_wrong(s, c, "INCR: not an integer");
			return;
		}
		{
			int k = snprintf((char *)num, sizeof(num), "%lld",
					 (long long)rc.num);
			hist(s, c, SIM_OK, true, num, (uint32_t)k, NULL, 0);
		}
		break;
	case SIM_OP_CAS:
		if (rc.kind != 'i' || (rc.num != 0 && rc.num != 1)) {
			reply_wrong(s, c, "KEEL.CAS: not 0 or 1");
			return;
		}
		if (rc.num == 0) { /* compare mismatch: no effect */
			hist(s, c, SIM_FAIL, false, NULL, 0, NULL, 0);
			client_finish(s, c, SIM_FAIL);
			return;
		}
		hist(s, c, SIM_OK, false, NULL, 0, NULL, 0);
		break;
	case SIM_OP_PUT:
		if (rc.kind != 's') {
			reply_wrong(s, c, "SET: not OK");
			return;
		}
		hist(s, c, SIM_OK, false, NULL, 0, NULL, 0);
		break;
	default: /* APPEND (new length), DEL (count) */
		if (rc.kind != 'i') {
			reply_wrong(s, c, "not an integer");
			return;
		}
		hist(s, c, SIM_OK, false, NULL, 0, NULL, 0);
		break;
	}
	client_finish(s, c, SIM_OK);
}

static void on_reply(void *ctx, const struct node_reply *rep)
{
	struct sim_node *n = ctx;
	struct sim *s = n->sim;
	bool pipe = rep->cookie & SIM_PIPE_COOKIE;
	bool bank = !pipe && (rep->cookie & SIM_BANK_COOKIE);
	uint64_t ci = rep->cookie >> 40;
	if (!pipe && !bank && ci <= s->n_clients) {
		struct sim_client *c = &s->clients[ci];
		if (c->held_node == n->idx + 1 && c->held_cookie == rep->cookie)
			check_hold(s, c, true);
	}
	if (n->disk_failed && rep->status == NODE_OK) {
		char d[96];
		snprintf(d, sizeof(d), "node %u answered ok after its store "
			 "failed", n->idx + 1);
		sim_checker_fail(&s->chk, "silent-after-disk-error", d);
	}
	size_t tl = rep->status == NODE_OK ? rep->tape_len : 0;
	KEEL_ASSERT(tl <= UINT32_MAX);
	struct sim_reply *rp = malloc(sizeof(*rp) + tl);
	KEEL_ASSERT(rp != NULL);
	rp->cookie = rep->cookie;
	rp->status = rep->status;
	rp->hint = rep->leader_hint;
	rp->index = rep->index;
	rp->tape_len = (uint32_t)tl;
	if (tl)
		memcpy(rp->tape, rep->tape, tl);
	/* A pipelining or bank client's latency comes from its own stream,
	 * so the plain clients draw what they always drew. */
	uint64_t d = s->lat_min +
		     keel_rand_below(pipe   ? &s->pipe_rand
				     : bank ? &s->bank_rand
					    : &s->client_rand,
				     s->lat_jitter + 1);
	push(s, (struct sim_event){
			.time = s->now + d,
			.type = pipe   ? EV_PIPE_REPLY
				: bank ? EV_BANK_REPLY
				       : EV_CLIENT_REPLY,
			.a = pipe   ? (rep->cookie & ~SIM_PIPE_COOKIE) >> 48
			     : bank ? (rep->cookie & ~SIM_BANK_COOKIE) >> 48
				    : rep->cookie >> 40,
			.p = rp});
}

/* ---- pipelining clients ------------------------------------------------------- */

/*
 * Issue 12 §1: one connection's writes must take effect in the order they
 * were sent, also when the client pipelines them and leaders change under
 * them. A pipelining client keeps up to depth `APPEND key "<token>,"` in
 * flight on one connection to one node (any node: a follower forwards),
 * sets node_request.stream to the node's id for that connection, and
 * sends tokens 1, 2, 3, ... on a key of the stream's own. Replies:
 * NODE_OK acknowledged; NODE_DROPPED and NODE_NOT_LEADER not executed;
 * NODE_UNKNOWN indeterminate. A token is never sent twice: a write that
 * was not executed is simply not there, and the next write carries the
 * next token. The client gives up on a connection (every write still in
 * flight becomes indeterminate) when a write times out, when its node
 * crashes (connection reset), after some NOT_LEADER answers and now and
 * then for no reason; it then connects again, to the hinted or a random
 * node, and opens a new stream and key. The writes they send in all grow
 * with the plain clients' progress (pipe_budget over the run), in bursts
 * that fill the window, so pipelines are in flight all through the fault
 * phase. sim_check_order (order.c) judges every key at the end.
 */

static void pipe_arm_timeout(struct sim *s, struct sim_pipe *p)
{
	if (p->timeout_armed || !p->n_fl)
		return;
	p->timeout_armed = true;
	push(s, (struct sim_event){.time = p->fl[0].deadline,
				   .type = EV_PIPE_TIMEOUT,
				   .a = p->idx});
}

static void pipe_send(struct sim *s, struct sim_pipe *p)
{
	KEEL_ASSERT(p->connected && p->n_fl < p->depth);
	uint64_t token = p->next_token++;
	int rv = sim_order_sent(&s->order, p->key, token);
	KEEL_ASSERT(rv == 0);
	struct sim_pipe_msg *m = malloc(sizeof(*m));
	KEEL_ASSERT(m != NULL);
	memset(m, 0, sizeof(*m));
	m->cookie = SIM_PIPE_COOKIE | ((uint64_t)p->idx << 48) | ++p->seq;
	m->stream = p->stream;
	m->inc = p->inc;
	m->key_len = (uint8_t)snprintf(m->key, sizeof(m->key), "%s",
				       s->order.keys[p->key].name);
	m->val_len = (uint8_t)snprintf(m->val, sizeof(m->val), "%llu,",
				       (unsigned long long)token);
	p->fl[p->n_fl++] = (struct sim_pipe_fl){
		m->cookie, token, s->now + s->client_timeout};
	p->sent++;
	s->pipe_busy++;
	s->res->pipe_sent++;
	/* One connection is one TCP stream: requests reach the node in the
	 * order sent. */
	uint64_t at = s->now + s->lat_min +
		      keel_rand_below(&s->pipe_rand, s->lat_jitter + 1);
	at = KEEL_MAX(at, p->last_arrival);
	p->last_arrival = at;
	if (tracing(s))
		trace(s, "pipe %u send node %u stream %llu %s token %llu "
			 "inflight=%u",
		      p->idx, p->node + 1, (unsigned long long)p->stream,
		      m->key, (unsigned long long)token, p->n_fl);
	push(s, (struct sim_event){.time = at,
				   .type = EV_PIPE_REQ,
				   .node = (uint8_t)p->node,
				   .p = m});
	pipe_arm_timeout(s, p);
}

/* Sends what the pipe may: nothing once the plain clients are done; else
 * as many writes as fill its window, when its allowance (its share of the
 * budget, in proportion to the plain operations started) covers them all. */
static void pipe_pump(struct sim *s, struct sim_pipe *p)
{
	if (!p->connected || s->liveness || s->ops_left == 0 || !s->opt.ops)
		return;
	uint64_t started = s->opt.ops - s->ops_left;
	uint64_t allow = s->pipe_budget * started / s->opt.ops;
	uint32_t room = p->depth - p->n_fl;
	if (!room || allow < p->sent + room)
		return;
	while (room--)
		pipe_send(s, p);
}

static void pipes_pump(struct sim *s)
{
	for (uint32_t i = 0; i < s->n_pipes; i++)
		pipe_pump(s, &s->pipes[i]);
}

/* (Re)connects after a short while (a handshake, a client's back-off):
 * to node id `to`, or to a random node when 0. */
static void pipe_schedule_connect(struct sim *s, struct sim_pipe *p, raft_id to)
{
	if (p->connecting)
		return;
	p->connecting = true;
	uint32_t idx = to >= 1 && to <= s->n_nodes
			       ? (uint32_t)(to - 1)
			       : (uint32_t)keel_rand_below(&s->pipe_rand,
							   s->n_nodes);
	push(s, (struct sim_event){
			.time = s->now + rnd_range(&s->pipe_rand, 100 * US,
						   5 * MS),
			.type = EV_PIPE_CONNECT,
			.node = (uint8_t)idx,
			.a = p->idx});
}

/* The client gives up on its connection: what is still in flight may or
 * may not take effect (it stays in flight at the node, or in the log). */
static void pipe_reset(struct sim *s, struct sim_pipe *p, const char *why,
		       raft_id to)
{
	for (uint32_t i = 0; i < p->n_fl; i++)
		sim_order_answer(&s->order, p->key, p->fl[i].token,
				 SIM_TOK_LOST, 0);
	s->res->pipe_lost += p->n_fl;
	s->pipe_busy -= p->n_fl;
	if (tracing(s))
		trace(s, "pipe %u reset %s stream %llu %s lost=%u", p->idx, why,
		      (unsigned long long)p->stream,
		      s->order.keys[p->key].name, p->n_fl);
	p->n_fl = 0;
	p->connected = false;
	pipe_schedule_connect(s, p, to);
}

/* A node crashed: its connections are reset. */
static void pipes_node_down(struct sim *s, struct sim_node *n)
{
	for (uint32_t i = 0; i < s->n_pipes; i++) {
		struct sim_pipe *p = &s->pipes[i];
		if (p->connected && p->node == n->idx)
			pipe_reset(s, p, "connection-reset", 0);
	}
}

static void pipe_connect(struct sim *s, struct sim_pipe *p, struct sim_node *n)
{
	p->connecting = false;
	if (p->connected || s->liveness || s->ops_left == 0)
		return; /* done: the fault phase is ending */
	if (!n->node) {
		/* Connection refused: try another node. */
		if (tracing(s))
			trace(s, "pipe %u connect node %u refused", p->idx,
			      n->idx + 1);
		pipe_schedule_connect(s, p, 0);
		return;
	}
	p->node = n->idx;
	p->inc = n->inc;
	p->stream = ++n->streams;
	p->gen++;
	char name[24];
	snprintf(name, sizeof(name), "p%u.%u", p->idx, p->gen);
	int k = sim_order_key(&s->order, name, n->id, p->stream);
	KEEL_ASSERT(k >= 0);
	p->key = (uint32_t)k;
	p->next_token = 1;
	p->acked_top = 0;
	p->connected = true;
	p->last_arrival = s->now;
	s->res->pipe_streams++;
	if (tracing(s))
		trace(s, "pipe %u connect node %u stream %llu key %s depth %u",
		      p->idx, n->idx + 1, (unsigned long long)p->stream, name,
		      p->depth);
	pipe_pump(s, p);
}

static void pipe_request(struct sim *s, struct sim_node *n,
			 struct sim_event *ev)
{
	struct sim_pipe_msg *m = ev->p;
	if (!n->node || n->inc != m->inc) {
		/* The connection is gone with the node: refused, not run. */
		struct node_reply rep = {.cookie = m->cookie,
					 .status = NODE_NOT_LEADER};
		on_reply(n, &rep);
		free(m);
		return;
	}
	if (deferred(s, n, ev))
		return;
	const uint8_t *argv[3] = {(const uint8_t *)"APPEND",
				  (const uint8_t *)m->key,
				  (const uint8_t *)m->val};
	size_t lens[3] = {6, m->key_len, m->val_len};
	struct node_request req = {.cookie = m->cookie,
				   .stream = m->stream,
				   .argc = 3,
				   .argv = argv,
				   .lens = lens};
	if (tracing(s))
		trace(s, "request node %u pipe %llu stream %llu APPEND %s %s",
		      n->idx + 1,
		      (unsigned long long)((m->cookie & ~SIM_PIPE_COOKIE) >> 48),
		      (unsigned long long)m->stream, m->key, m->val);
	int rv = node_request(n->node, &req);
	KEEL_ASSERT(rv == 0);
	free(m);
	check_node(s, n);
}

static void pipe_reply(struct sim *s, struct sim_pipe *p,
		       const struct sim_reply *rp)
{
	uint32_t i = 0;
	while (i < p->n_fl && p->fl[i].cookie != rp->cookie)
		i++;
	if (i == p->n_fl)
		return; /* for a connection the client gave up */
	uint64_t token = p->fl[i].token;
	memmove(&p->fl[i], &p->fl[i + 1], (p->n_fl - i - 1) * sizeof(p->fl[0]));
	p->n_fl--;
	s->pipe_busy--;
	if (tracing(s))
		trace(s, "pipe %u reply %s token %llu idx=%llu", p->idx,
		      node_status_name(rp->status), (unsigned long long)token,
		      (unsigned long long)rp->index);
	struct reply_collect rc = {0};
	switch (rp->status) {
	case NODE_OK:
		if (kv_tape_play(rp->tape, rp->tape_len, &collect_ops, &rc) ||
		    rc.kind != 'i' || rc.num < 0) {
			char d[96];
			snprintf(d, sizeof(d), "pipe %u APPEND %s token %llu: "
				 "not an integer", p->idx,
				 s->order.keys[p->key].name,
				 (unsigned long long)token);
			sim_checker_fail(&s->chk, "reply", d);
			return;
		}
		if (!record_ack(s, rp->index))
			return;
		sim_order_answer(&s->order, p->key, token, SIM_TOK_OK,
				 (uint64_t)rc.num);
		s->res->pipe_ok++;
		p->acked_top = KEEL_MAX(p->acked_top, token);
		/* Now and then the client reconnects for no reason of the
		 * store's (a pool recycling connections). */
		if (keel_rand_below(&s->pipe_rand, 256) == 0) {
			pipe_reset(s, p, "reconnect", 0);
			return;
		}
		break;
	case NODE_DROPPED:
		sim_order_answer(&s->order, p->key, token, SIM_TOK_DROPPED, 0);
		s->res->pipe_dropped++;
		/* A later write of the stream already took effect: most
		 * likely refused to keep the order. */
		if (token < p->acked_top)
			s->res->pipe_late_drops++;
		break;
	case NODE_NOT_LEADER:
		sim_order_answer(&s->order, p->key, token, SIM_TOK_NOT_LEADER,
				 0);
		s->res->pipe_not_leader++;
		/* Half the time the client moves to the hint (or anywhere):
		 * a new connection, a new stream. */
		if (keel_rand_below(&s->pipe_rand, 2)) {
			pipe_reset(s, p, "not-leader", rp->hint);
			return;
		}
		break;
	case NODE_UNKNOWN:
		sim_order_answer(&s->order, p->key, token, SIM_TOK_UNKNOWN, 0);
		s->res->pipe_unknown++;
		break;
	default: {
		char d[64];
		snprintf(d, sizeof(d), "pipe %u: unknown status %d", p->idx,
			 rp->status);
		sim_checker_fail(&s->chk, "reply", d);
		return;
	}
	}
	pipe_pump(s, p);
}

static void pipe_timeout(struct sim *s, struct sim_pipe *p)
{
	p->timeout_armed = false;
	if (!p->n_fl)
		return;
	if (p->fl[0].deadline > s->now) { /* armed for an earlier write */
		pipe_arm_timeout(s, p);
		return;
	}
	s->res->pipe_timeouts++;
	pipe_reset(s, p, "timeout", 0);
}

/* ---- bank clients ------------------------------------------------------------------ */

/*
 * Issue 12 §6: Jepsen's bank workload. 1-3 bank clients (drawn from a
 * random stream of their own, seeded after every other one) move money
 * between N accounts b.a0.. seeded with a total by one conditional
 * transaction, each transfer also appending "<id>," to the ledger b.l in
 * the same transaction, by three means: (a) KEEL.WATCH-REVS, MGET, then
 * KEEL.EXEC with the watch conditions (what the server builds for WATCH /
 * MULTI / EXEC); (b) KEEL.GETREV of both, then KEEL.TXN IF both MOD = ..
 * THEN SET SET APPEND; (c) the same KEEL.TXN inside KEEL.RUN sid seq of a
 * session, retried at the same (sid, seq) -- at any node -- after an
 * uncertain answer, so the retry's reply is the one run's. Reads of every
 * balance are one KEEL.TXN of GETs or one KEEL.EXEC with no watch.
 * sim_check_bank (bank.c) judges it all at the end.
 */

static void bank_arg(struct sim_bankc *b, const char *p, size_t len)
{
	struct sim_bank_msg *m = &b->msg;
	KEEL_ASSERT(m->argc < SIM_BANK_ARGS && m->used + len <= SIM_BANK_BYTES);
	memcpy(m->data + m->used, p, len);
	m->lens[m->argc++] = (uint32_t)len;
	m->used += (uint32_t)len;
}

static void bank_args(struct sim_bankc *b, const char *words)
{
	/* Space-separated words (no empty ones). */
	const char *p = words;
	while (*p) {
		const char *e = strchr(p, ' ');
		size_t len = e ? (size_t)(e - p) : strlen(p);
		bank_arg(b, p, len);
		p += len;
		while (*p == ' ')
			p++;
	}
}

__attribute__((format(printf, 2, 3))) static void
bank_argf(struct sim_bankc *b, const char *fmt, ...);

static void bank_argf(struct sim_bankc *b, const char *fmt, ...)
{
	char w[128];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(w, sizeof(w), fmt, ap);
	va_end(ap);
	bank_args(b, w);
}

static void bank_arm_timeout(struct sim *s, struct sim_bankc *b)
{
	if (b->timeout_armed)
		return;
	b->timeout_armed = true;
	push(s, (struct sim_event){.time = b->deadline,
				   .type = EV_BANK_TIMEOUT,
				   .a = b->idx});
}

/* Sends the current request (again, after NOT_LEADER or as a session
 * retry) to node id `to` as a new attempt. */
static void bank_send(struct sim *s, struct sim_bankc *b, raft_id to)
{
	b->cookie = SIM_BANK_COOKIE | ((uint64_t)b->idx << 48) | ++b->seq;
	struct sim_bank_msg *m = malloc(sizeof(*m));
	KEEL_ASSERT(m != NULL);
	*m = b->msg;
	m->cookie = b->cookie;
	uint64_t d = s->lat_min + keel_rand_below(&s->bank_rand,
						  s->lat_jitter + 1);
	if (tracing(s)) {
		char w[200];
		size_t k = 0, off = 0;
		for (uint32_t i = 0; i < m->argc && k + 2 < sizeof(w); i++) {
			size_t l = KEEL_MIN((size_t)m->lens[i],
					    sizeof(w) - k - 2);
			if (i)
				w[k++] = ' ';
			memcpy(w + k, m->data + off, l);
			k += l;
			off += m->lens[i];
		}
		w[k] = 0;
		trace(s, "bank %u send node %u %s", b->idx, (unsigned)to, w);
	}
	push(s, (struct sim_event){.time = s->now + d,
				   .type = EV_BANK_REQ,
				   .node = (uint8_t)(to - 1),
				   .p = m});
	bank_arm_timeout(s, b);
}

static raft_id bank_pick(struct sim *s, struct sim_bankc *b)
{
	if (b->guess && keel_rand_below(&s->bank_rand, 2))
		return b->guess;
	return 1 + keel_rand_below(&s->bank_rand, s->n_nodes);
}

/* A new request of the operation: its own deadline. */
static void bank_step(struct sim *s, struct sim_bankc *b, int step)
{
	b->step = (uint8_t)step;
	b->deadline = s->now + s->client_timeout;
	bank_send(s, b, bank_pick(s, b));
}

static bool bank_may_start(struct sim *s, struct sim_bankc *b)
{
	if (b->busy || s->liveness || s->ops_left == 0 || !s->opt.ops)
		return false;
	uint64_t started = s->opt.ops - s->ops_left;
	return b->ops < s->bank_budget * started / s->opt.ops + 1;
}

static void bank_begin(struct sim *s, struct sim_bankc *b)
{
	struct keel_rand *r = &s->bank_rand;
	struct sim_bank *bk = &s->bank;
	b->busy = true;
	s->bank_busy++;
	b->ops++;
	b->msg.argc = b->msg.used = 0;
	b->xfer = 0;
	b->retries = 0;
	b->ambiguous = false;
	if (!bk->init_acked) {
		/* Seed every account in one transaction, once: a retry (or
		 * another client's) finds a0 present and runs nothing. */
		bank_argf(b, "KEEL.TXN IF 1 b.a0 EXISTS = 0 THEN 1 %u MSET",
			  1 + 2 * bk->n_accts);
		for (uint32_t i = 0; i < bk->n_accts; i++)
			bank_argf(b, "b.a%u %lld", i, (long long)bk->init[i]);
		bank_step(s, b, BK_INIT);
		return;
	}
	uint64_t p = keel_rand_below(r, 100);
	if (p < 25) {
		bool exec = keel_rand_below(r, 2);
		bank_args(b, exec ? "KEEL.EXEC 0" : "KEEL.TXN THEN");
		bank_argf(b, "%u", bk->n_accts);
		for (uint32_t i = 0; i < bk->n_accts; i++)
			bank_argf(b, "2 GET b.a%u", i);
		bank_step(s, b, exec ? BK_READ_EXEC : BK_READ_TXN);
		return;
	}
	b->mode = (uint8_t)keel_rand_below(r, SIM_BANK_MODES);
	b->from = (uint32_t)keel_rand_below(r, bk->n_accts);
	b->to = (b->from + 1 + (uint32_t)keel_rand_below(r, bk->n_accts - 1)) %
		bk->n_accts;
	if (b->mode == SIM_BANK_SESSION && !b->sid) {
		bank_args(b, "KEEL.SESSION REGISTER TTL 86400000");
		bank_step(s, b, BK_REGISTER);
		return;
	}
	if (b->mode == SIM_BANK_WATCH) {
		bank_argf(b, "KEEL.WATCH-REVS b.a%u b.a%u", b->from, b->to);
		bank_step(s, b, BK_WREVS);
	} else {
		bank_argf(b, "KEEL.GETREV b.a%u", b->from);
		bank_step(s, b, BK_GETREV0);
	}
}

static void bank_end(struct sim *s, struct sim_bankc *b)
{
	KEEL_ASSERT(b->busy);
	b->busy = false;
	s->bank_busy--;
	push(s, (struct sim_event){
			.time = s->now + keel_rand_below(&s->bank_rand,
							 200 * US),
			.type = EV_BANK_NEXT,
			.a = b->idx});
}

static void bank_next(struct sim *s, struct sim_bankc *b)
{
	if (bank_may_start(s, b))
		bank_begin(s, b);
}

static void banks_pump(struct sim *s)
{
	for (uint32_t i = 0; i < s->n_banks; i++)
		bank_next(s, &s->banks[i]);
}

/* The transfer, once both balances are known: from the richer side of
 * the pair when `from` is empty; nothing when both are. */
static void bank_transfer(struct sim *s, struct sim_bankc *b)
{
	struct sim_bank *bk = &s->bank;
	if (b->val[0] <= 0) {
		uint32_t t = b->from;
		b->from = b->to;
		b->to = t;
		int64_t v = b->val[0];
		b->val[0] = b->val[1];
		b->val[1] = v;
		uint64_t m = b->mod[0];
		b->mod[0] = b->mod[1];
		b->mod[1] = m;
	}
	if (b->val[0] <= 0 || b->val[1] < 0) {
		s->res->bank_skipped++;
		bank_end(s, b);
		return;
	}
	int64_t amount =
		1 + (int64_t)keel_rand_below(&s->bank_rand,
					     (uint64_t)KEEL_MIN(b->val[0], 20));
	b->xfer = sim_bank_xfer(bk, b->idx, b->mode, b->from, b->to, amount);
	b->msg.argc = b->msg.used = 0;
	if (b->mode == SIM_BANK_WATCH) {
		bank_argf(b, "KEEL.EXEC 2 b.a%u %llu %llu", b->from,
			  (unsigned long long)b->mod[0],
			  (unsigned long long)b->rev);
		bank_argf(b, "b.a%u %llu %llu 3", b->to,
			  (unsigned long long)b->mod[1],
			  (unsigned long long)b->rev);
	} else {
		if (b->mode == SIM_BANK_SESSION) {
			/* Seqs grow with gaps (as when workers share a
			 * session), below the table's window of 64. */
			b->sseq += 1 + keel_rand_below(&s->bank_rand, 48);
			bank_argf(b, "KEEL.RUN %llu %llu",
				  (unsigned long long)b->sid,
				  (unsigned long long)b->sseq);
		}
		bank_argf(b, "KEEL.TXN IF 2 b.a%u MOD = %llu", b->from,
			  (unsigned long long)b->mod[0]);
		bank_argf(b, "b.a%u MOD = %llu THEN 3", b->to,
			  (unsigned long long)b->mod[1]);
	}
	bank_argf(b, "3 SET b.a%u %lld", b->from,
		  (long long)(b->val[0] - amount));
	bank_argf(b, "3 SET b.a%u %lld", b->to,
		  (long long)(b->val[1] + amount));
	bank_argf(b, "3 APPEND b.l %llu,", (unsigned long long)b->xfer);
	bank_step(s, b, b->mode == SIM_BANK_WATCH  ? BK_EXEC
			: b->mode == SIM_BANK_TXN ? BK_TXN
						  : BK_RUN);
}

/* A reply tape, flattened: every value in order, arrays as their count. */
struct btok {
	char kind; /* 's' 'e' 'i' 'b' 'n' 'a' */
	int64_t num;
	const uint8_t *p;
	size_t len;
};
struct bcollect {
	struct btok t[SIM_BANK_ARGS];
	uint32_t n;
	bool over;
};

static void bc_add(void *ctx, char kind, int64_t num, const uint8_t *p,
		   size_t len)
{
	struct bcollect *bc = ctx;
	if (bc->n == SIM_BANK_ARGS) {
		bc->over = true;
		return;
	}
	bc->t[bc->n++] = (struct btok){kind, num, p, len};
}
static void bc_status(void *ctx, const char *str)
{
	bc_add(ctx, 's', 0, (const uint8_t *)str, strlen(str));
}
static void bc_error(void *ctx, const char *str)
{
	bc_add(ctx, 'e', 0, (const uint8_t *)str, strlen(str));
}
static void bc_integer(void *ctx, int64_t v)
{
	bc_add(ctx, 'i', v, NULL, 0);
}
static void bc_bulk(void *ctx, const uint8_t *p, size_t len)
{
	bc_add(ctx, 'b', 0, p, len);
}
static void bc_null(void *ctx)
{
	bc_add(ctx, 'n', 0, NULL, 0);
}
static void bc_array(void *ctx, size_t n)
{
	bc_add(ctx, 'a', (int64_t)n, NULL, 0);
}
static const struct kv_reply_ops bcollect_ops = {bc_status, bc_error,
						 bc_integer, bc_bulk,
						 bc_null, bc_array};

/* A balance: a bulk holding a decimal integer. */
static bool bank_num(const struct btok *t, int64_t *out)
{
	if (t->kind != 'b' || t->len == 0 || t->len > 19)
		return false;
	int64_t v = 0;
	size_t i = 0;
	bool neg = t->p[0] == '-';
	if (neg)
		i++;
	if (i == t->len)
		return false;
	for (; i < t->len; i++) {
		if (t->p[i] < '0' || t->p[i] > '9')
			return false;
		v = v * 10 + (t->p[i] - '0');
	}
	*out = neg ? -v : v;
	return true;
}

static void bank_bad_reply(struct sim *s, struct sim_bankc *b,
			   const struct bcollect *bc, const char *why)
{
	char d[240];
	int k = snprintf(d, sizeof(d), "seed %llu bank client %u step %u: %s",
			 (unsigned long long)s->opt.seed, b->idx, b->step, why);
	if (bc->n && bc->t[0].kind == 'e' && k > 0 && (size_t)k < sizeof(d))
		snprintf(d + k, sizeof(d) - (size_t)k, ": -%.*s",
			 (int)KEEL_MIN(bc->t[0].len, 120), bc->t[0].p);
	sim_checker_fail(&s->chk, "bank-reply", d);
}

/* A transfer's transaction answered: [flag, [OK, OK, len]] (KEEL.TXN) or
 * [OK, OK, len] / nil (KEEL.EXEC). */
static void bank_xfer_answer(struct sim *s, struct sim_bankc *b,
			     const struct bcollect *bc)
{
	struct sim_xfer *x = sim_bank_get(&s->bank, b->xfer);
	KEEL_ASSERT(x != NULL);
	const struct btok *t = bc->t;
	bool ran;
	uint32_t sub;
	if (b->step == BK_EXEC) {
		ran = bc->n >= 1 && t[0].kind == 'a';
		sub = 0;
		if (!ran && !(bc->n == 1 && t[0].kind == 'n')) {
			bank_bad_reply(s, b, bc, "KEEL.EXEC: not an array or nil");
			return;
		}
	} else {
		if (bc->n < 3 || t[0].kind != 'a' || t[0].num != 2 ||
		    t[1].kind != 'i' || (t[1].num != 0 && t[1].num != 1) ||
		    t[2].kind != 'a') {
			bank_bad_reply(s, b, bc, "KEEL.TXN: not [flag, [..]]");
			return;
		}
		ran = t[1].num == 1;
		sub = 2;
	}
	if (ran) {
		/* The APPEND's reply is the third: the ledger's length. A
		 * reply that carries no length leaves 0, which no ledger
		 * position matches. */
		x->len = 0;
		if (t[sub].num == 3 && bc->n == sub + 4 &&
		    t[sub + 3].kind == 'i' && t[sub + 3].num > 0)
			x->len = (uint64_t)t[sub + 3].num;
		x->state = SIM_XFER_OK;
		s->res->bank_ok[b->mode]++;
	} else {
		x->state = SIM_XFER_FAILED;
		s->res->bank_failed[b->mode]++;
	}
	x->retries = b->retries;
	x->retry_answered = b->retries > 0;
	if (b->retries)
		s->res->bank_retry_definite++;
	if (tracing(s))
		trace(s, "bank %u transfer %llu %s len=%llu retries=%u", b->idx,
		      (unsigned long long)b->xfer,
		      sim_xfer_state_name(x->state),
		      (unsigned long long)x->len, b->retries);
	bank_end(s, b);
}

static void bank_ok(struct sim *s, struct sim_bankc *b,
		    const struct bcollect *bc)
{
	struct sim_bank *bk = &s->bank;
	const struct btok *t = bc->t;
	if (bc->over) {
		bank_bad_reply(s, b, bc, "reply too long");
		return;
	}
	if (bc->n && t[0].kind == 'e') {
		bank_bad_reply(s, b, bc, "error reply");
		return;
	}
	switch (b->step) {
	case BK_INIT:
		if (bc->n < 2 || t[0].kind != 'a' || t[1].kind != 'i') {
			bank_bad_reply(s, b, bc, "seeding: not [flag, [..]]");
			return;
		}
		bk->init_acked = true;
		bank_end(s, b);
		return;
	case BK_REGISTER:
		if (bc->n != 1 || t[0].kind != 'i' || t[0].num <= 0) {
			bank_bad_reply(s, b, bc, "REGISTER: not an id");
			return;
		}
		b->sid = (uint64_t)t[0].num;
		b->sseq = 0;
		bank_end(s, b);
		return;
	case BK_READ_TXN:
	case BK_READ_EXEC: {
		uint32_t at = b->step == BK_READ_TXN ? 3 : 1;
		if (b->step == BK_READ_TXN &&
		    (bc->n < 3 || t[0].kind != 'a' || t[1].kind != 'i' ||
		     t[1].num != 1)) {
			bank_bad_reply(s, b, bc, "read: not [1, [..]]");
			return;
		}
		if (bc->n != at + bk->n_accts || t[at - 1].kind != 'a' ||
		    t[at - 1].num != (int64_t)bk->n_accts) {
			bank_bad_reply(s, b, bc, "read: not one value per "
						 "account");
			return;
		}
		int64_t bal[SIM_BANK_MAX_ACCTS] = {0};
		uint32_t absent = 0;
		for (uint32_t i = 0; i < bk->n_accts; i++) {
			if (t[at + i].kind == 'n')
				absent |= 1u << i;
			else if (!bank_num(&t[at + i], &bal[i])) {
				bank_bad_reply(s, b, bc, "read: a balance "
							 "is not a number");
				return;
			}
		}
		sim_bank_read(bk, b->idx, b->step == BK_READ_EXEC, bal, absent);
		s->res->bank_reads++;
		bank_end(s, b);
		return;
	}
	case BK_WREVS:
		if (bc->n != 4 || t[0].kind != 'a' || t[1].kind != 'i' ||
		    t[2].kind != 'i' || t[3].kind != 'i') {
			bank_bad_reply(s, b, bc, "WATCH-REVS: not [R, m, m]");
			return;
		}
		b->rev = (uint64_t)t[1].num;
		b->mod[0] = (uint64_t)t[2].num;
		b->mod[1] = (uint64_t)t[3].num;
		if (!b->mod[0] || !b->mod[1]) { /* an account absent */
			bank_end(s, b);
			return;
		}
		b->msg.argc = b->msg.used = 0;
		bank_argf(b, "MGET b.a%u b.a%u", b->from, b->to);
		bank_step(s, b, BK_MGET);
		return;
	case BK_MGET:
		if (bc->n != 3 || t[0].kind != 'a') {
			bank_bad_reply(s, b, bc, "MGET: not two values");
			return;
		}
		if (t[1].kind == 'n' || t[2].kind == 'n') {
			bank_end(s, b);
			return;
		}
		if (!bank_num(&t[1], &b->val[0]) ||
		    !bank_num(&t[2], &b->val[1])) {
			bank_bad_reply(s, b, bc, "MGET: not numbers");
			return;
		}
		bank_transfer(s, b);
		return;
	case BK_GETREV0:
	case BK_GETREV1: {
		if (bc->n == 1 && t[0].kind == 'n') {
			bank_end(s, b);
			return;
		}
		uint32_t w = b->step == BK_GETREV1;
		if (bc->n != 5 || t[0].kind != 'a' || t[3].kind != 'i' ||
		    !bank_num(&t[1], &b->val[w])) {
			bank_bad_reply(s, b, bc, "GETREV: not [value, c, m, v]");
			return;
		}
		b->mod[w] = (uint64_t)t[3].num;
		if (!w) {
			b->msg.argc = b->msg.used = 0;
			bank_argf(b, "KEEL.GETREV b.a%u", b->to);
			bank_step(s, b, BK_GETREV1);
			return;
		}
		bank_transfer(s, b);
		return;
	}
	default:
		bank_xfer_answer(s, b, bc);
		return;
	}
}

/* The current request ended without an answer to play: not executed
 * (NODE_DROPPED), uncertain (NODE_UNKNOWN) or no answer in time. */
static void bank_no_answer(struct sim *s, struct sim_bankc *b, bool not_run)
{
	struct sim_xfer *x = b->xfer ? sim_bank_get(&s->bank, b->xfer) : NULL;
	switch (b->step) {
	case BK_EXEC:
	case BK_TXN:
		x->state = not_run ? SIM_XFER_NOT_EXECUTED : SIM_XFER_UNKNOWN;
		if (not_run)
			s->res->bank_not_executed[b->mode]++;
		else
			s->res->bank_unknown[b->mode]++;
		break;
	case BK_RUN:
		if (!not_run)
			b->ambiguous = true;
		if (not_run && !b->ambiguous) {
			x->state = SIM_XFER_NOT_EXECUTED;
			s->res->bank_not_executed[b->mode]++;
			break;
		}
		/* It may have run: ask again at the same (sid, seq), at
		 * any node; the answer must be the one run's. */
		if (b->retries < SIM_BANK_RETRIES) {
			b->retries++;
			s->res->bank_retries++;
			b->deadline = s->now + s->client_timeout;
			bank_send(s, b,
				  1 + keel_rand_below(&s->bank_rand,
						      s->n_nodes));
			return;
		}
		x->state = SIM_XFER_UNKNOWN;
		x->retries = b->retries;
		s->res->bank_unknown[b->mode]++;
		break;
	case BK_READ_TXN:
	case BK_READ_EXEC:
		s->res->bank_reads_failed++;
		break;
	default:
		break; /* a transfer's read, seeding, registering: try anew */
	}
	if (x && tracing(s))
		trace(s, "bank %u transfer %llu %s", b->idx,
		      (unsigned long long)b->xfer,
		      sim_xfer_state_name(x->state));
	bank_end(s, b);
}

static void bank_reply(struct sim *s, struct sim_bankc *b,
		       const struct sim_reply *rp)
{
	if (!b->busy || rp->cookie != b->cookie)
		return; /* an attempt given up */
	if (tracing(s))
		trace(s, "bank %u reply %s idx=%llu", b->idx,
		      node_status_name(rp->status),
		      (unsigned long long)rp->index);
	switch (rp->status) {
	case NODE_NOT_LEADER:
		/* Not executed: the same request at the hint (or any). */
		b->guess = rp->hint ? rp->hint
				    : 1 + keel_rand_below(&s->bank_rand,
							  s->n_nodes);
		bank_send(s, b, b->guess);
		return;
	case NODE_DROPPED:
		bank_no_answer(s, b, true);
		return;
	case NODE_UNKNOWN:
		bank_no_answer(s, b, false);
		return;
	case NODE_OK:
		break;
	default: {
		struct bcollect none = {0};
		bank_bad_reply(s, b, &none, "unknown status");
		return;
	}
	}
	struct bcollect bc;
	bc.n = 0;
	bc.over = false;
	if (kv_tape_play(rp->tape, rp->tape_len, &bcollect_ops, &bc)) {
		bank_bad_reply(s, b, &bc, "malformed reply tape");
		return;
	}
	bank_ok(s, b, &bc);
}

static void bank_timeout(struct sim *s, struct sim_bankc *b)
{
	b->timeout_armed = false;
	if (!b->busy)
		return;
	if (b->deadline > s->now) { /* armed for an earlier request */
		bank_arm_timeout(s, b);
		return;
	}
	if (tracing(s))
		trace(s, "bank %u timeout step %u", b->idx, b->step);
	s->res->bank_timeouts++;
	b->cookie = 0; /* a late answer is for an attempt given up */
	bank_no_answer(s, b, false);
}

static void bank_request(struct sim *s, struct sim_node *n,
			 struct sim_event *ev)
{
	struct sim_bank_msg *m = ev->p;
	if (!n->node) {
		/* Connection refused: nothing was sent. */
		struct node_reply rep = {.cookie = m->cookie,
					 .status = NODE_NOT_LEADER};
		on_reply(n, &rep);
		free(m);
		return;
	}
	if (deferred(s, n, ev))
		return;
	const uint8_t *argv[SIM_BANK_ARGS];
	size_t lens[SIM_BANK_ARGS];
	uint32_t off = 0;
	for (uint32_t i = 0; i < m->argc; i++) {
		argv[i] = m->data + off;
		lens[i] = m->lens[i];
		off += m->lens[i];
	}
	struct node_request req = {.cookie = m->cookie,
				   .argc = m->argc,
				   .argv = argv,
				   .lens = lens};
	if (tracing(s))
		trace(s, "request node %u bank %llu %.*s", n->idx + 1,
		      (unsigned long long)((m->cookie & ~SIM_BANK_COOKIE) >>
					   48),
		      (int)m->lens[0], (const char *)m->data);
	int rv = node_request(n->node, &req);
	KEEL_ASSERT(rv == 0);
	free(m);
	check_node(s, n);
}

/* ---- faults ---------------------------------------------------------------------- */

static struct sim_node *leader_node(struct sim *s)
{
	struct sim_node *best = NULL;
	uint64_t best_term = 0;
	for (uint32_t i = 0; i < s->n_nodes; i++) {
		struct sim_node *n = &s->nodes[i];
		if (!n->node)
			continue;
		struct raft_status st;
		raft_status(node_raft(n->node), &st);
		if (st.role == RAFT_LEADER && st.term >= best_term) {
			best = n;
			best_term = st.term;
		}
	}
	return best;
}

static void make_partition(struct sim *s)
{
	struct keel_rand *r = &s->fault_rand;
	uint32_t n = s->n_nodes;
	uint64_t kind = keel_rand_below(r, 4);
	const char *what = "?";
	if (kind == 0) {
		/* Symmetric split into two non-empty sides. */
		uint32_t side = (uint32_t)rnd_range(r, 1, (1u << n) - 2);
		for (uint32_t a = 0; a < n; a++)
			for (uint32_t b = 0; b < n; b++)
				s->block[a][b] = ((side >> a) & 1) !=
						 ((side >> b) & 1);
		what = "split";
	} else if (kind == 1) {
		/* One node can hear but not speak, or speak but not hear. */
		uint32_t a = (uint32_t)keel_rand_below(r, n);
		bool deaf = keel_rand_below(r, 2);
		for (uint32_t b = 0; b < n; b++) {
			if (b == a)
				continue;
			if (deaf)
				s->block[b][a] = true;
			else
				s->block[a][b] = true;
		}
		what = deaf ? "deaf" : "mute";
	} else if (kind == 2) {
		struct sim_node *l = leader_node(s);
		uint32_t a = l ? l->idx : (uint32_t)keel_rand_below(r, n);
		for (uint32_t b = 0; b < n; b++)
			if (b != a)
				s->block[a][b] = s->block[b][a] = true;
		what = "isolate-leader";
	} else {
		uint32_t a = (uint32_t)keel_rand_below(r, n);
		uint32_t b = (uint32_t)((a + 1 + keel_rand_below(r, n - 1)) % n);
		s->block[a][b] = true;
		what = "one-way";
	}
	s->partitioned = true;
	s->res->partitions++;
	uint64_t heal = rnd_range(r, 200 * MS, 3 * SEC);
	if (tracing(s)) {
		char m[64];
		uint32_t k = 0;
		for (uint32_t a = 0; a < n; a++)
			for (uint32_t b = 0; b < n; b++)
				if (k + 5 < sizeof(m) && s->block[a][b])
					k += (uint32_t)snprintf(m + k,
								sizeof(m) - k,
								"%u>%u ", a + 1,
								b + 1);
		m[k] = 0;
		trace(s, "partition %s cut=%s heal_in=%llu", what, m,
		      (unsigned long long)heal);
	}
	push(s, (struct sim_event){.time = s->now + heal, .type = EV_HEAL});
}

static struct sim_node *pick_up_node(struct sim *s)
{
	struct keel_rand *r = &s->fault_rand;
	if (keel_rand_below(r, 3) == 0) {
		struct sim_node *l = leader_node(s);
		if (l && !l->paused && !l->doomed)
			return l;
	}
	uint32_t start = (uint32_t)keel_rand_below(r, s->n_nodes);
	for (uint32_t k = 0; k < s->n_nodes; k++) {
		struct sim_node *n = &s->nodes[(start + k) % s->n_nodes];
		if (n->node && !n->paused && !n->doomed)
			return n;
	}
	return NULL;
}

static void fault_tick(struct sim *s)
{
	if (s->liveness)
		return;
	struct keel_rand *r = &s->fault_rand;
	uint32_t max_down = (s->n_nodes - 1) / 2;
	if (s->partition_pm && !s->partitioned &&
	    keel_rand_below(r, 1000) < s->partition_pm)
		make_partition(s);
	if (s->crash_pm && s->n_down < max_down &&
	    keel_rand_below(r, 1000) < s->crash_pm) {
		struct sim_node *n = pick_up_node(s);
		/* Half the crashes strike at once, half in the middle of the
		 * node's next write. */
		if (n && keel_rand_below(r, 2)) {
			n->crash_armed = true;
			if (tracing(s))
				trace(s, "crash armed node %u", n->idx + 1);
		} else if (n) {
			crash_node(s, n);
			push(s, (struct sim_event){
					.time = s->now + rnd_range(r, 50 * MS,
								   2 * SEC),
					.type = EV_RESTART,
					.node = (uint8_t)n->idx});
		}
	}
	if (s->pause_pm && s->n_down < max_down &&
	    keel_rand_below(r, 1000) < s->pause_pm) {
		struct sim_node *n = pick_up_node(s);
		if (n) {
			n->paused = true;
			n->pauses++;
			s->res->pauses++;
			n->pause_until = s->now + rnd_range(r, 50 * MS,
							    1500 * MS);
			s->n_down++;
			if (tracing(s))
				trace(s, "pause node %u until %llu", n->idx + 1,
				      (unsigned long long)n->pause_until);
			push(s, (struct sim_event){.time = n->pause_until,
						   .type = EV_RESUME,
						   .node = (uint8_t)n->idx});
		}
	}
	/* Disk errors: armed to strike after a few more operations, then
	 * every later one (a failing or full disk stays so). */
	for (int k = 0; k < 2; k++) {
		uint32_t pm = k ? s->enospc_pm : s->eio_pm;
		if (!pm || s->n_down >= max_down ||
		    keel_rand_below(&s->dfault_rand, 1000) >= pm)
			continue;
		struct sim_node *n = pick_up_node(s);
		if (!n)
			continue;
		uint64_t after = keel_rand_below(&s->dfault_rand, 40);
		if (k)
			memdisk_fail(n->store.disk, MEMDISK_OP_WRITE, after,
				     KEEL_ERR_NOSPACE, true);
		else
			memdisk_fail(n->store.disk,
				     keel_rand_below(&s->dfault_rand, 2)
					     ? MEMDISK_OP_WRITE | MEMDISK_OP_SYNC
					     : MEMDISK_OP_SYNC,
				     after, KEEL_ERR_IO, true);
		n->doomed = true;
		s->n_down++;
		if (tracing(s))
			trace(s, "disk fault armed node %u %s after %llu ops",
			      n->idx + 1, k ? "ENOSPC" : "EIO",
			      (unsigned long long)after);
	}
	push(s, (struct sim_event){.time = s->now + SIM_FAULT_PERIOD,
				   .type = EV_FAULT});
}

static void restart_node(struct sim *s, struct sim_node *n)
{
	if (n->refused)
		return; /* corruption: an operator must rebuild it */
	if (n->node) {
		if (!n->doomed)
			return;
		/* The operator restarts a node whose disk failed: the
		 * process dies (what the kernel held unsynced may be gone:
		 * treated as a power loss) and recovers from what is
		 * durable. */
		if (tracing(s))
			trace(s, "operator restart node %u", n->idx + 1);
		crash_node(s, n);
		if (n->refused || s->chk.violated)
			return;
	}
	if (s->read_err_pm && !s->liveness &&
	    keel_rand_below(&s->dfault_rand, 1000) < s->read_err_pm) {
		/* A read error during recovery: the node cannot start yet;
		 * the operator tries again later. */
		memdisk_fail(n->store.disk, MEMDISK_OP_READ,
			     keel_rand_below(&s->dfault_rand, 4), KEEL_ERR_IO,
			     false);
		int rv = sim_store_recover(&n->store);
		memdisk_fail_clear(n->store.disk);
		check_recovered(s, n);
		if (rv) {
			if (rv != KEEL_ERR_IO) {
				char d[320];
				snprintf(d, sizeof(d), "node %u: %s",
					 n->idx + 1, n->store.msg);
				sim_checker_fail(&s->chk, "recovery", d);
				return;
			}
			s->res->disk_errors++;
			if (tracing(s))
				trace(s, "restart node %u failed: %s",
				      n->idx + 1, n->store.msg);
			rv = sim_store_recover(&n->store);
			check_recovered(s, n);
			if (rv) {
				char d[320];
				snprintf(d, sizeof(d), "node %u: %s",
					 n->idx + 1, n->store.msg);
				sim_checker_fail(&s->chk, "recovery", d);
				return;
			}
			push(s, (struct sim_event){
					.time = s->now + rnd_range(&s->fault_rand,
								   50 * MS,
								   SEC),
					.type = EV_RESTART,
					.node = (uint8_t)n->idx});
			return;
		}
	}
	s->n_down--;
	if (tracing(s))
		trace(s, "restart node %u log=%llu term=%llu", n->idx + 1,
		      (unsigned long long)n->store.n_log,
		      (unsigned long long)n->store.hs.term);
	if (start_node(s, n) == 0)
		check_node(s, n);
}

static void resume_node(struct sim *s, struct sim_node *n)
{
	if (!n->paused)
		return;
	n->paused = false;
	s->n_down--;
	if (tracing(s))
		trace(s, "resume node %u", n->idx + 1);
}

/* A store error reached the node. Expected only on a disk with an armed
 * fault; the operator restarts the node later. */
static void disk_error(struct sim *s, struct sim_node *n, int status)
{
	n->disk_failed = true;
	if (!n->doomed) {
		char d[320];
		snprintf(d, sizeof(d), "node %u store failed with no disk "
			 "fault: %s", n->idx + 1, n->store.msg);
		sim_checker_fail(&s->chk, "store-error", d);
		return;
	}
	if (status == KEEL_ERR_NOSPACE)
		s->res->enospc++;
	else
		s->res->disk_errors++;
	if (tracing(s))
		trace(s, "node %u store failed: %s", n->idx + 1, n->store.msg);
	/* The server logs the error and exits soon after (as etcd does on a
	 * failed fsync); until then it stays up, poisoned and silent. The
	 * operator restarts it later. */
	push(s, (struct sim_event){.time = s->now + rnd_range(&s->fault_rand,
							      1 * MS, 20 * MS),
				   .type = EV_CRASH,
				   .node = (uint8_t)n->idx,
				   .inc = n->inc,
				   .a = 1});
}

/* ---- dispatch ---------------------------------------------------------------------- */

/* Events for a paused node wait until it resumes. */
static bool deferred(struct sim *s, struct sim_node *n, struct sim_event *ev)
{
	if (!n->paused)
		return false;
	ev->time = KEEL_MAX(n->pause_until, s->now);
	push(s, *ev);
	return true;
}

static void dispatch(struct sim *s, struct sim_event *ev)
{
	struct sim_node *n = &s->nodes[ev->node];
	switch (ev->type) {
	case EV_DELIVER:
		if (!n->node) {
			free(ev->p);
			return;
		}
		if (deferred(s, n, ev))
			return;
		if (tracing(s))
			trace(s, "deliver %u->%u len=%u", ev->from + 1,
			      n->idx + 1, ev->len);
		{
			struct node_stats before;
			node_stats(n->node, &before);
			node_receive(n->node, ev->p, ev->len);
			struct node_stats after;
			node_stats(n->node, &after);
			if (after.frames_bad != before.frames_bad) {
				s->res->frames_bad++;
				if (tracing(s))
					trace(s, "node %u dropped a bad frame",
					      n->idx + 1);
			}
		}
		free(ev->p);
		check_node(s, n);
		return;
	case EV_TIMER:
		if (ev->inc != n->inc || !n->node)
			return;
		if (deferred(s, n, ev))
			return;
		if (!take_timer(n, ev->a))
			return;
		if (tracing(s))
			trace(s, "timer node %u", n->idx + 1);
		ev->cb(ev->p);
		check_node(s, n);
		return;
	case EV_DISK: {
		if (ev->inc != n->inc || !n->node)
			return;
		if (deferred(s, n, ev))
			return;
		/* The oldest write's sync; the writes it covered (group
		 * commit) are reported with it. Their own events then find
		 * nothing left to do. */
		env_store_cb cb;
		void *arg;
		int status;
		uint32_t done = 0;
		while (!n->disk_failed &&
		       sim_store_complete(&n->store, &cb, &arg, &status)) {
			done++;
			if (status)
				disk_error(s, n, status);
			if (tracing(s))
				trace(s, "disk done node %u status=%s",
				      n->idx + 1, keel_strerror(status));
			cb(arg, status);
			if (status || !sim_store_next_ready(&n->store))
				break;
		}
		if (done)
			check_node(s, n);
		return;
	}
	case EV_CLIENT_REQ: {
		struct sim_req *rq = ev->p;
		if (!n->node) {
			/* Connection refused: the client learns at once that
			 * nothing was sent, a definite "not here". */
			struct node_reply rep = {.cookie = rq->cookie,
						 .status = NODE_NOT_LEADER};
			if (tracing(s))
				trace(s, "request node %u client %llu refused: "
					 "node down",
				      n->idx + 1,
				      (unsigned long long)(rq->cookie >> 40));
			on_reply(n, &rep);
			free(rq);
			return;
		}
		if (deferred(s, n, ev))
			return;
		char key[8];
		int kl = snprintf(key, sizeof(key), "%c%u",
				  rq->ttl ? 't' : 'k', rq->key);
		const uint8_t *argv[5];
		size_t lens[5];
		uint32_t argc = 0;
#define ARG(p, l) (argv[argc] = (const uint8_t *)(p), lens[argc++] = (l))
		static const char *const cmd[] = {"?",    "GET",    "SET",
						  "KEEL.CAS", "INCR", "APPEND",
						  "DEL"};
		ARG(cmd[rq->op], strlen(cmd[rq->op]));
		ARG(key, (size_t)kl);
		if (rq->op == SIM_OP_PUT || rq->op == SIM_OP_APPEND ||
		    rq->op == SIM_OP_CAS)
			ARG(rq->a, rq->a_len);
		if (rq->op == SIM_OP_CAS)
			ARG(rq->b, rq->b_len);
		if (rq->ttl) {
			ARG("PX", 2);
			ARG(rq->b, rq->b_len);
		}
#undef ARG
		struct node_request req = {.cookie = rq->cookie,
					   .argc = argc,
					   .argv = argv,
					   .lens = lens};
		/* The node takes the client's current attempt: from now on
		 * it owes an answer (set first: node_request may answer
		 * inside the call). */
		struct sim_client *rc = &s->clients[rq->cookie >> 40];
		if (rc->busy && rc->req.cookie == rq->cookie) {
			rc->held_node = n->idx + 1;
			rc->held_inc = n->inc;
			rc->held_pauses = n->pauses;
			rc->held_cookie = rq->cookie;
			rc->held_local = env_now(n);
		}
		if (tracing(s))
			trace(s, "request node %u client %llu %s",
			      n->idx + 1,
			      (unsigned long long)(rq->cookie >> 40),
			      cmd[rq->op]);
		int rv = node_request(n->node, &req);
		KEEL_ASSERT(rv == 0);
		free(rq);
		check_node(s, n);
		return;
	}
	case EV_CLIENT_REPLY:
		client_reply(s, &s->clients[ev->a], ev->p);
		free(ev->p);
		return;
	case EV_CLIENT_TIMEOUT: {
		struct sim_client *c = &s->clients[ev->a];
		c->timeout_armed = false;
		if (!c->busy)
			return;
		if (c->deadline > s->now) { /* armed for an earlier op */
			c->timeout_armed = true;
			ev->time = c->deadline;
			push(s, *ev);
			return;
		}
		if (tracing(s))
			trace(s, "client %u p=%u timeout", c->idx, c->process);
		s->res->client_timeouts++;
		check_hold(s, c, false);
		if (!c->req.ttl)
			hist(s, c, SIM_INFO, false, NULL, 0, NULL, 0);
		client_finish(s, c, SIM_INFO);
		return;
	}
	case EV_CLIENT_NEXT: {
		struct sim_client *c = &s->clients[ev->a];
		bool live = c->idx == s->n_clients;
		if (live && (!s->liveness || s->live_ok))
			return;
		client_next(s, c);
		return;
	}
	case EV_PIPE_REQ:
		pipe_request(s, n, ev);
		return;
	case EV_PIPE_REPLY:
		pipe_reply(s, &s->pipes[ev->a], ev->p);
		free(ev->p);
		return;
	case EV_PIPE_TIMEOUT:
		pipe_timeout(s, &s->pipes[ev->a]);
		return;
	case EV_PIPE_CONNECT:
		pipe_connect(s, &s->pipes[ev->a], n);
		return;
	case EV_BANK_REQ:
		bank_request(s, n, ev);
		return;
	case EV_BANK_REPLY:
		bank_reply(s, &s->banks[ev->a], ev->p);
		free(ev->p);
		return;
	case EV_BANK_TIMEOUT:
		bank_timeout(s, &s->banks[ev->a]);
		return;
	case EV_BANK_NEXT:
		bank_next(s, &s->banks[ev->a]);
		return;
	case EV_FAULT:
		fault_tick(s);
		return;
	case EV_HEAL:
		memset(s->block, 0, sizeof(s->block));
		s->partitioned = false;
		if (tracing(s))
			trace(s, "heal partition");
		return;
	case EV_RESTART:
		restart_node(s, n);
		return;
	case EV_RESUME:
		resume_node(s, n);
		return;
	case EV_CRASH:
		if (ev->a == 1) { /* exit after a disk error */
			if (ev->inc != n->inc || !n->node || !n->doomed)
				return;
			if (tracing(s))
				trace(s, "node %u exits after its disk error",
				      n->idx + 1);
			crash_node(s, n);
			push(s, (struct sim_event){
					.time = s->now + rnd_range(&s->fault_rand,
								   50 * MS,
								   2 * SEC),
					.type = EV_RESTART,
					.node = (uint8_t)n->idx});
			return;
		}
		if (ev->inc != n->inc || !n->node || n->paused || s->liveness ||
		    s->n_down >= (s->n_nodes - 1) / 2)
			return;
		crash_node(s, n);
		push(s, (struct sim_event){
				.time = s->now + rnd_range(&s->fault_rand,
							   50 * MS, 2 * SEC),
				.type = EV_RESTART,
				.node = (uint8_t)n->idx});
		return;
	default:
		KEEL_ASSERT(0 && "bad event");
	}
}

static void free_event(struct sim_event *ev)
{
	if (ev->type == EV_DELIVER || ev->type == EV_CLIENT_REQ ||
	    ev->type == EV_CLIENT_REPLY || ev->type == EV_PIPE_REQ ||
	    ev->type == EV_PIPE_REPLY || ev->type == EV_BANK_REQ ||
	    ev->type == EV_BANK_REPLY)
		free(ev->p);
}

/* Runs events until done(s), a violation, an empty queue or time > bound.
 * Returns true when done(s) held. */
static bool run_until(struct sim *s, bool (*done)(struct sim *), uint64_t bound)
{
	while (!s->chk.violated) {
		if (done(s))
			return true;
		if (s->n_heap == 0 || s->heap[0].time > bound)
			return false;
		if (s->steps >= SIM_MAX_STEPS) {
			sim_checker_fail(&s->chk, "step-bound",
					 "the run did not finish");
			return false;
		}
		struct sim_event ev = pop(s);
		KEEL_ASSERT(ev.time >= s->now);
		s->now = ev.time;
		s->steps++;
		s->chk.step = s->steps;
		dispatch(s, &ev);
	}
	return false;
}

static bool fault_phase_done(struct sim *s)
{
	return s->ops_left == 0 && s->busy_clients == 0 && s->pipe_busy == 0 &&
	       s->bank_busy == 0;
}

static bool converged(struct sim *s)
{
	if (!s->live_ok || s->clients[s->n_clients].busy)
		return false;
	uint64_t digest = 0;
	bool have = false;
	for (uint32_t i = 0; i < s->n_nodes; i++) {
		struct sim_node *n = &s->nodes[i];
		if (n->refused)
			continue; /* down for good; the others must converge */
		if (!n->node || node_applied(n->node) < s->live_index)
			return false;
		struct raft_status st;
		raft_status(node_raft(n->node), &st);
		if (st.commit != node_applied(n->node))
			return false;
		uint64_t d = kv_digest(node_kv(n->node));
		if (have && d != digest)
			return false;
		digest = d;
		have = true;
	}
	return true;
}

/* ---- parameters ---------------------------------------------------------------- */

static const char *const fault_names[] = {
	"loss",  "dup",  "delay", "corrupt", "partition", "crash",
	"pause", "clock", "disk", "eio",     "enospc",    "bitflip"};

int sim_faults_parse(const char *list, uint32_t *mask)
{
	if (!strcmp(list, "all")) {
		*mask = SIM_FAULTS_ALL;
		return 0;
	}
	*mask = 0;
	if (!strcmp(list, "none"))
		return 0;
	const char *p = list;
	for (int guard = 0; guard < 64 && *p; guard++) {
		const char *e = strchr(p, ',');
		size_t len = e ? (size_t)(e - p) : strlen(p);
		bool found = false;
		for (size_t i = 0; i < KEEL_ARRAY_LEN(fault_names); i++) {
			if (strlen(fault_names[i]) == len &&
			    !strncmp(p, fault_names[i], len)) {
				*mask |= 1u << i;
				found = true;
			}
		}
		if (!found)
			return KEEL_ERR_INVAL;
		if (!e)
			return 0;
		p = e + 1;
	}
	return KEEL_ERR_INVAL;
}

void sim_faults_format(uint32_t mask, char *buf, size_t cap)
{
	if ((mask & SIM_FAULTS_ALL) == SIM_FAULTS_ALL) {
		snprintf(buf, cap, "all");
		return;
	}
	if (!mask) {
		snprintf(buf, cap, "none");
		return;
	}
	size_t k = 0;
	buf[0] = 0;
	for (size_t i = 0; i < KEEL_ARRAY_LEN(fault_names); i++)
		if ((mask >> i) & 1u && k < cap)
			k += (size_t)snprintf(buf + k, cap - k, "%s%s",
					      k ? "," : "", fault_names[i]);
}

/* Storage mutants live in the store and the WAL, not in the node. */
enum {
	SIM_MUTANT_ACK_BEFORE_FSYNC = 200,
	SIM_MUTANT_SKIP_CHECKSUM = 201,
	SIM_MUTANT_NO_TRUNCATE = 202,
};

struct mutant_name {
	const char *name;
	int value;
};

#ifdef KEEL_MUTANTS
static const struct mutant_name mutants[] = {
	{"vote-no-log-check", RAFT_MUTANT_VOTE_NO_LOG_CHECK},
	{"commit-old-term", RAFT_MUTANT_COMMIT_OLD_TERM},
	{"read-no-confirm", RAFT_MUTANT_READ_NO_CONFIRM},
	{"ack-before-persist", RAFT_MUTANT_ACK_BEFORE_PERSIST},
	{"send-before-persist", NODE_MUTANT_SEND_BEFORE_PERSIST},
	{"apply-uncommitted", NODE_MUTANT_APPLY_UNCOMMITTED},
	{"accept-bad-checksum", NODE_MUTANT_ACCEPT_BAD_CRC},
	{"no-dedup", NODE_MUTANT_NO_DEDUP},
	{"snap-live-writer", NODE_MUTANT_SNAP_LIVE_WRITER},
	{"snap-skip-crc", NODE_MUTANT_SNAP_SKIP_CRC},
	{"snap-compact-early", NODE_MUTANT_SNAP_COMPACT_EARLY},
	{"snap-no-dedup", NODE_MUTANT_SNAP_NO_DEDUP},
	{"snap-ack-early", NODE_MUTANT_SNAP_ACK_EARLY},
	{"no-write-timeout", NODE_MUTANT_NO_WRITE_TIMEOUT},
	{"no-order", NODE_MUTANT_NO_ORDER},
	{"txn-partial", NODE_MUTANT_TXN_PARTIAL},
	{"watch-blind", NODE_MUTANT_WATCH_BLIND},
	{"session-wrong-reply", NODE_MUTANT_SESSION_WRONG_REPLY},
	{"ack-before-fsync", SIM_MUTANT_ACK_BEFORE_FSYNC},
	{"skip-checksum", SIM_MUTANT_SKIP_CHECKSUM},
	{"no-truncate", SIM_MUTANT_NO_TRUNCATE},
};
#else
static const struct mutant_name mutants[1] = {{NULL, 0}};
#endif

int sim_mutant_parse(const char *name)
{
	for (size_t i = 0; i < KEEL_ARRAY_LEN(mutants); i++)
		if (mutants[i].name && !strcmp(mutants[i].name, name))
			return mutants[i].value;
	return -1;
}

const char *sim_mutant_name(int i)
{
	if (i < 0 || (size_t)i >= KEEL_ARRAY_LEN(mutants))
		return NULL;
	return mutants[i].name;
}

static void draw_params(struct sim *s, struct keel_rand *m)
{
	uint32_t f = s->opt.faults;
	/* Everything is drawn whatever the mask, so one fault's switch does
	 * not shift the others' values. */
	s->loss_pm = (uint32_t)rnd_range(m, 1, 100);
	s->dup_pm = (uint32_t)rnd_range(m, 1, 50);
	s->corrupt_pm = (uint32_t)rnd_range(m, 1, 30);
	s->lat_min = rnd_range(m, 20, 200) * US;
	s->lat_jitter = rnd_range(m, 10, 500) * US;
	s->delay_pm = (uint32_t)rnd_range(m, 5, 100);
	s->delay_max = rnd_range(m, 5, 80) * MS;
	s->disk_min = rnd_range(m, 10, 300) * US;
	s->disk_jitter = rnd_range(m, 10, 300) * US;
	s->disk_spike_pm = (uint32_t)rnd_range(m, 5, 50);
	s->disk_spike = rnd_range(m, 5, 100) * MS;
	s->partition_pm = (uint32_t)rnd_range(m, 20, 200);
	s->crash_pm = (uint32_t)rnd_range(m, 20, 150);
	s->pause_pm = (uint32_t)rnd_range(m, 20, 150);
	s->n_clients = (uint32_t)rnd_range(m, 3, SIM_MAX_CLIENTS);
	s->n_keys = (uint32_t)rnd_range(m, 1, SIM_MAX_KEYS);
	s->client_timeout = rnd_range(m, 1000, 5000) * MS;
	/* Flow control shapes which interleavings happen at all (a batch of
	 * one entry lets an acknowledgement cover an old-term entry without
	 * the new leader's no-op, Figure 3.7): drawn too. */
	static const uint32_t batch[] = {1, 2, 8, 64, 256};
	static const uint32_t infl[] = {1, 4, 16, 64};
	s->ncfg.max_msg_entries = batch[keel_rand_below(m, 5)];
	s->ncfg.max_inflight_msgs = infl[keel_rand_below(m, 4)];
	uint64_t drift[SIM_MAX_NODES], skew[SIM_MAX_NODES];
	for (uint32_t i = 0; i < SIM_MAX_NODES; i++) {
		drift[i] = rnd_range(m, 970000, 1030000);
		skew[i] = rnd_range(m, 0, 10 * SEC);
	}
	if (!(f & SIM_FAULT_LOSS))
		s->loss_pm = 0;
	if (!(f & SIM_FAULT_DUP))
		s->dup_pm = 0;
	if (!(f & SIM_FAULT_CORRUPT))
		s->corrupt_pm = 0;
	if (!(f & SIM_FAULT_DELAY))
		s->delay_pm = 0;
	if (!(f & SIM_FAULT_DISK))
		s->disk_spike_pm = 0;
	if (!(f & SIM_FAULT_PARTITION))
		s->partition_pm = 0;
	if (!(f & SIM_FAULT_CRASH))
		s->crash_pm = 0;
	if (!(f & SIM_FAULT_PAUSE))
		s->pause_pm = 0;
	for (uint32_t i = 0; i < s->n_nodes; i++) {
		s->nodes[i].rate_ppm = (f & SIM_FAULT_CLOCK) ? drift[i] : 1000000;
		s->nodes[i].skew_ns = (f & SIM_FAULT_CLOCK) ? skew[i] : 0;
	}
	/* Disk faults draw from a stream of their own, seeded last, so the
	 * parameters above keep their values. */
	struct keel_rand *d = &s->dfault_rand;
	keel_rand_seed(d, keel_rand_next(m));
	s->eio_pm = (uint32_t)rnd_range(d, 5, 40);
	s->enospc_pm = (uint32_t)rnd_range(d, 3, 25);
	s->read_err_pm = (uint32_t)rnd_range(d, 50, 300);
	s->bitflip_pm = (uint32_t)rnd_range(d, 50, 300);
	static const uint64_t seg[] = {16384, 65536, 262144};
	s->segment_bytes = seg[keel_rand_below(d, 3)];
	uint32_t n_damage = (uint32_t)rnd_range(d, 1, (s->n_nodes - 1) / 2);
	uint32_t first = (uint32_t)keel_rand_below(d, s->n_nodes);
	for (uint32_t i = 0; i < n_damage && s->n_nodes > 1; i++)
		s->nodes[(first + i) % s->n_nodes].damageable = true;
	if (!(f & SIM_FAULT_EIO))
		s->eio_pm = s->read_err_pm = 0;
	if (!(f & SIM_FAULT_ENOSPC))
		s->enospc_pm = 0;
	if (!(f & SIM_FAULT_BITFLIP) || s->n_nodes < 3)
		s->bitflip_pm = 0;
	/* Snapshots every few hundred entries at most, in small steps, so
	 * every run takes many and a follower partitioned or down for a
	 * while falls behind the leader's log base (docs/snapshots.md §4).
	 * Drawn last, from the disk stream, so nothing above shifts. */
	s->ncfg.snapshot_entries = (uint32_t)rnd_range(d, 20, 200);
	s->ncfg.snapshot_step_bytes = (uint32_t)rnd_range(d, 64, 4096);
	/* Per 10,000 chunk reads: a transfer is tens to hundreds of chunks
	 * here, and most must still get through. */
	s->rot_pm = (uint32_t)rnd_range(d, 2, 30);
	if (!(f & SIM_FAULT_BITFLIP))
		s->rot_pm = 0;
	char *p = s->res->params;
	size_t cap = sizeof(s->res->params);
	int k = snprintf(p, cap,
			 "clients=%u keys=%u timeout_ms=%llu loss=%u/1000 "
			 "dup=%u/1000 corrupt=%u/1000 lat_us=%llu+%llu "
			 "delay=%u/1000:%llums disk_us=%llu+%llu "
			 "disk_spike=%u/1000:%llums partition=%u/1000 "
			 "crash=%u/1000 pause=%u/1000 batch=%u inflight=%u "
			 "clock_ppm=",
			 s->n_clients, s->n_keys,
			 (unsigned long long)(s->client_timeout / MS),
			 s->loss_pm, s->dup_pm, s->corrupt_pm,
			 (unsigned long long)(s->lat_min / US),
			 (unsigned long long)(s->lat_jitter / US), s->delay_pm,
			 (unsigned long long)(s->delay_max / MS),
			 (unsigned long long)(s->disk_min / US),
			 (unsigned long long)(s->disk_jitter / US),
			 s->disk_spike_pm,
			 (unsigned long long)(s->disk_spike / MS),
			 s->partition_pm, s->crash_pm, s->pause_pm,
			 s->ncfg.max_msg_entries, s->ncfg.max_inflight_msgs);
	for (uint32_t i = 0; i < s->n_nodes && k > 0 && (size_t)k < cap; i++)
		k += snprintf(p + k, cap - (size_t)k, "%s%llu", i ? "," : "",
			      (unsigned long long)s->nodes[i].rate_ppm);
	if (k > 0 && (size_t)k < cap)
		k += snprintf(p + k, cap - (size_t)k, " skew_ms=%llu",
			      (unsigned long long)(s->nodes[s->n_nodes - 1].skew_ns /
						   MS));
	if (k > 0 && (size_t)k < cap)
		snprintf(p + k, cap - (size_t)k,
			 " disk_faults=eio:%u,enospc:%u,read:%u,bitflip:%u/1000"
			 " seg=%llu snap_entries=%u snap_step=%u"
			 " snap_rot=%u/10000",
			 s->eio_pm, s->enospc_pm, s->read_err_pm, s->bitflip_pm,
			 (unsigned long long)s->segment_bytes,
			 s->ncfg.snapshot_entries, s->ncfg.snapshot_step_bytes,
			 s->rot_pm);
}

/* ---- the run ---------------------------------------------------------------------- */

static void heal_all(struct sim *s)
{
	s->liveness = true;
	s->loss_pm = s->dup_pm = s->corrupt_pm = s->delay_pm = 0;
	s->disk_spike_pm = 0;
	s->eio_pm = s->enospc_pm = s->read_err_pm = s->bitflip_pm = 0;
	memset(s->block, 0, sizeof(s->block));
	s->partitioned = false;
	for (uint32_t i = 0; i < s->n_nodes; i++) {
		struct sim_node *n = &s->nodes[i];
		n->crash_armed = false;
		resume_node(s, n);
		restart_node(s, n);
	}
	if (tracing(s))
		trace(s, "heal all: liveness phase");
}

/* Full pairwise Log Matching over the final logs: the incremental check's
 * cross-check. */
static void check_final_logs(struct sim *s)
{
	for (uint32_t a = 0; a < s->n_nodes; a++) {
		for (uint32_t b = a + 1; b < s->n_nodes; b++) {
			if (!s->nodes[a].node || !s->nodes[b].node)
				continue; /* refused to start */
			const struct raft *ra = node_raft(s->nodes[a].node);
			const struct raft *rb = node_raft(s->nodes[b].node);
			struct raft_status sa, sb;
			raft_status(ra, &sa);
			raft_status(rb, &sb);
			uint64_t last = KEEL_MIN(sa.last_index, sb.last_index);
			uint64_t base = KEEL_MAX(sa.snap_index, sb.snap_index);
			bool match = false;
			for (uint64_t i = last; i > base; i--) {
				const struct raft_entry *ea = raft_entry_at(ra, i);
				const struct raft_entry *eb = raft_entry_at(rb, i);
				if (ea->term == eb->term)
					match = true;
				if (match && (ea->term != eb->term ||
					      sim_entry_hash(ea) !=
						      sim_entry_hash(eb))) {
					char d[128];
					snprintf(d, sizeof(d),
						 "nodes %u and %u differ at "
						 "index %llu below a match",
						 a + 1, b + 1,
						 (unsigned long long)i);
					sim_checker_fail(&s->chk,
							 "log-matching", d);
					return;
				}
			}
		}
	}
}

static void check_acks(struct sim *s)
{
	for (uint64_t i = 0; i < s->n_acks && !s->chk.violated; i++) {
		const struct sim_ack *a = &s->acks[i];
		if (a->index <= s->chk.n_committed &&
		    s->chk.committed[a->index - 1].hash == a->hash)
			continue;
		char d[128];
		snprintf(d, sizeof(d),
			 "acknowledged write at index %llu is not committed",
			 (unsigned long long)a->index);
		sim_checker_fail(&s->chk, "acknowledged-write-lost", d);
	}
}

static void liveness_fail(struct sim *s)
{
	char d[300];
	size_t k = (size_t)snprintf(
		d, sizeof(d),
		"no leader committed a new write and converged within 60 s "
		"after healing (write %s at %llu;",
		s->live_ok ? "ok" : "not done",
		(unsigned long long)s->live_index);
	for (uint32_t i = 0; i < s->n_nodes && k < sizeof(d); i++) {
		struct sim_node *n = &s->nodes[i];
		if (!n->node) {
			k += (size_t)snprintf(d + k, sizeof(d) - k, " n%u down",
					      i + 1);
			continue;
		}
		struct raft_status st;
		raft_status(node_raft(n->node), &st);
		k += (size_t)snprintf(
			d + k, sizeof(d) - k, " n%u %s t%llu c%llu a%llu d%04llx",
			i + 1, raft_role_name(st.role),
			(unsigned long long)st.term,
			(unsigned long long)st.commit,
			(unsigned long long)node_applied(n->node),
			(unsigned long long)(kv_digest(node_kv(n->node)) &
					     0xffff));
		for (uint32_t p = 0; p < st.n_peers && st.role == RAFT_LEADER &&
				     k < sizeof(d);
		     p++)
			k += (size_t)snprintf(
				d + k, sizeof(d) - k, " [p%llu m%llu n%llu %s i%u]",
				(unsigned long long)st.peers[p].id,
				(unsigned long long)st.peers[p].match,
				(unsigned long long)st.peers[p].next,
				st.peers[p].state == RAFT_PROGRESS_PROBE
					? "probe"
					: "repl",
				st.peers[p].inflight_msgs);
	}
	if (k < sizeof(d))
		snprintf(d + k, sizeof(d) - k, ")");
	sim_checker_fail(&s->chk, "liveness", d);
}

static void history_line(void *ctx, const char *line)
{
	struct sim *s = ctx;
	s->opt.history(s->opt.history_ctx, line);
}

/* The up node that has applied the most, when it has applied everything
 * known committed (NULL otherwise). */
static struct sim_node *most_applied(struct sim *s)
{
	struct sim_node *best = NULL;
	for (uint32_t i = 0; i < s->n_nodes; i++) {
		struct sim_node *n = &s->nodes[i];
		if (n->node && (!best || node_applied(n->node) >
						 node_applied(best->node)))
			best = n;
	}
	if (!best || node_applied(best->node) < s->chk.n_committed)
		return NULL;
	return best;
}

/*
 * Ends a history window at a quiescent point: no client operation is in
 * flight and none was ever indeterminate, so every acknowledged write is
 * applied at the node that has applied the most and nothing else can still
 * take effect. Its value of every key is recorded as a read by a fresh
 * process (a real observation, written to --history too), the window is
 * checked for linearizability, and the next window starts from those
 * values (synthetic writes, checked but not written). Real time orders
 * every op of one window before every op of the next, so the whole
 * history is linearizable if every window is.
 */
static void cut_window(struct sim *s, struct sim_node *n, bool last)
{
	/* The model keys never carry a TTL, so "now" does not matter. */
	const struct kv *kv = node_kv(n->node);
	uint32_t proc = s->next_process++;
	for (uint32_t k = 0; k < s->n_keys; k++) {
		char key[8];
		int kl = snprintf(key, sizeof(key), "k%u", k);
		const uint8_t *val = NULL;
		size_t vl = 0;
		bool found = kv_get(kv, (const uint8_t *)key, (size_t)kl, 0,
				    &val, &vl, NULL);
		KEEL_ASSERT(vl <= SIM_MAX_VALUE);
		sim_history_add(&s->hist, s->now, proc, SIM_INVOKE,
				SIM_OP_GET, (int)k, false, NULL, 0, NULL, 0);
		sim_history_add(&s->hist, s->now, proc, SIM_OK, SIM_OP_GET,
				(int)k, found, val, (uint32_t)vl, NULL, 0);
	}
	if (s->opt.history)
		sim_history_write_jsonl(&s->hist, history_line, s);
	char d[200] = "";
	int rv = sim_history_check(&s->hist, d, sizeof(d));
	if (rv == 1)
		sim_checker_fail(&s->chk, "linearizability", d);
	else if (rv)
		sim_checker_fail(&s->chk, "linearizability-undecided", d);
	if (tracing(s))
		trace(s, "history window checked: %s", rv ? d : "linearizable");
	if (last)
		return;
	sim_history_reset(&s->hist);
	uint32_t init = s->next_process++;
	for (uint32_t k = 0; k < s->n_keys; k++) {
		char key[8];
		int kl = snprintf(key, sizeof(key), "k%u", k);
		const uint8_t *val = NULL;
		size_t vl = 0;
		if (kv_get(kv, (const uint8_t *)key, (size_t)kl, 0, &val, &vl,
			   NULL))
			sim_history_add_initial(&s->hist, s->now, init, (int)k,
						val, (uint32_t)vl);
	}
}

/* Program order (order.c), once everything converged: every stream's key
 * as the node holds it. */
static void check_order(struct sim *s, struct sim_node *n)
{
	const struct kv *kv = node_kv(n->node);
	for (uint32_t k = 0; k < s->order.n && !s->chk.violated; k++) {
		const char *name = s->order.keys[k].name;
		const uint8_t *val = NULL;
		size_t vl = 0;
		bool found = kv_get(kv, (const uint8_t *)name, strlen(name), 0,
				    &val, &vl, NULL);
		sim_check_order(&s->chk, &s->order, k, s->opt.seed, found, val,
				vl);
	}
	s->res->pipe_uncertain_present = s->order.uncertain_present;
	s->res->pipe_uncertain_absent = s->order.uncertain_absent;
	if (tracing(s))
		trace(s, "program order checked: %u streams, %s", s->order.n,
		      s->chk.violated ? s->chk.what : "ok");
}

/* The bank (bank.c), once everything converged: the ledger and every
 * balance as the node holds them. */
static void check_bank(struct sim *s, struct sim_node *n)
{
	if (s->chk.violated)
		return;
	const struct kv *kv = node_kv(n->node);
	struct sim_bank *b = &s->bank;
	int64_t bal[SIM_BANK_MAX_ACCTS] = {0};
	uint32_t absent = 0;
	for (uint32_t i = 0; i < b->n_accts; i++) {
		char key[16];
		int kl = snprintf(key, sizeof(key), "b.a%u", i);
		const uint8_t *val = NULL;
		size_t vl = 0;
		struct btok t = {'b', 0, NULL, 0};
		if (!kv_get(kv, (const uint8_t *)key, (size_t)kl, 0, &val, &vl,
			    NULL)) {
			absent |= 1u << i;
			continue;
		}
		t.p = val;
		t.len = vl;
		if (!bank_num(&t, &bal[i]))
			bal[i] = INT64_MIN; /* not a number: no replay gives it */
	}
	const uint8_t *led = NULL;
	size_t ll = 0;
	bool found = kv_get(kv, (const uint8_t *)"b.l", 3, 0, &led, &ll, NULL);
	sim_check_bank(&s->chk, b, s->opt.seed, found, led, ll, bal, absent);
	s->res->bank_uncertain_present = b->uncertain_present;
	s->res->bank_uncertain_absent = b->uncertain_absent;
	if (tracing(s))
		trace(s, "bank checked: %u transfers, %u reads, ledger %zu bytes, "
			 "%s",
		      b->n_x, b->n_r, ll, s->chk.violated ? s->chk.what : "ok");
}

static void maybe_cut(struct sim *s)
{
	if (!s->barrier || s->busy_clients > 0)
		return;
	/* An operation that timed out while the clients drained may still
	 * take effect later: from then on the history is one window. */
	struct sim_node *n = s->any_info ? NULL : most_applied(s);
	if (n)
		cut_window(s, n, false);
	s->barrier = false;
	s->window_done = 0;
	for (uint32_t i = 0; i < s->n_clients; i++) {
		if (!s->waiting[i])
			continue;
		s->waiting[i] = false;
		push(s, (struct sim_event){.time = s->now,
					   .type = EV_CLIENT_NEXT,
					   .a = i});
	}
}

static void sim_close(struct sim *s)
{
	for (uint32_t i = 0; i < s->n_nodes; i++) {
		if (s->nodes[i].node) {
			struct node_stats ns;
			node_stats(s->nodes[i].node, &ns);
			add_node_stats(s, &ns, false);
		}
		node_destroy(s->nodes[i].node);
		sim_store_close(&s->nodes[i].store);
	}
	for (uint64_t i = 0; i < s->n_heap; i++)
		free_event(&s->heap[i]);
	free(s->heap);
	free(s->acks);
	sim_order_close(&s->order);
	sim_bank_close(&s->bank);
	sim_checker_close(&s->chk);
	sim_history_close(&s->hist);
}

int sim_run(const struct sim_options *o, struct sim_result *r)
{
	struct sim *s = calloc(1, sizeof(*s));
	if (!s)
		return KEEL_ERR_NOMEM;
	memset(r, 0, sizeof(*r));
	s->opt = *o;
	s->res = r;
	struct keel_rand master;
	keel_rand_seed(&master, o->seed);
	s->n_nodes = o->nodes ? o->nodes : (keel_rand_below(&master, 2) ? 5 : 3);
	r->nodes = s->n_nodes;
	if (s->n_nodes != 3 && s->n_nodes != 5 && s->n_nodes != 1) {
		free(s);
		return KEEL_ERR_INVAL;
	}
	draw_params(s, &master);
	keel_rand_seed(&s->net_rand, keel_rand_next(&master));
	keel_rand_seed(&s->disk_rand, keel_rand_next(&master));
	keel_rand_seed(&s->client_rand, keel_rand_next(&master));
	keel_rand_seed(&s->fault_rand, keel_rand_next(&master));
	keel_rand_seed(&s->crash_rand, keel_rand_next(&master));
	int rv = sim_checker_init(&s->chk, s->n_nodes);
	if (rv) {
		free(s);
		return rv;
	}
	sim_history_init(&s->hist);
	sim_order_init(&s->order);
	s->window_ops = 2000;

	struct node_config *c = &s->ncfg;
	c->members.n_voters = s->n_nodes;
	for (uint32_t i = 0; i < s->n_nodes; i++)
		c->members.voters[i] = i + 1;
	c->cluster_id = 0x6b65656c00000000ull | (o->seed & 0xffffffff);
	c->tick_ns = 10 * MS;
	c->election_ticks = 10;
	c->heartbeat_ticks = 2;
	c->max_pending = 64;
	/* The node gives up on a request before the client does, so its
	 * answer (NOT_LEADER: retry elsewhere; UNKNOWN) reaches the client. */
	c->request_timeout_ns = s->client_timeout / 4 * 3;
	c->reply = on_reply;
	c->observer = (struct node_observer){s, obs_update, obs_apply};
	c->mutant = o->mutant < 200 ? o->mutant : 0;

	for (uint32_t i = 0; i < s->n_nodes; i++) {
		struct sim_node *n = &s->nodes[i];
		n->sim = s;
		n->idx = i;
		n->id = i + 1;
		keel_rand_seed(&n->rand, keel_rand_next(&master));
		struct sim_store_config sc = {
			.seed = keel_rand_next(&s->crash_rand),
			.cluster_id = c->cluster_id,
			.segment_bytes = s->segment_bytes};
#ifdef KEEL_MUTANTS
		sc.mutant = o->mutant == SIM_MUTANT_ACK_BEFORE_FSYNC
				    ? SIM_STORE_MUTANT_ACK_BEFORE_FSYNC
				    : 0;
		sc.wal_mutant = o->mutant == SIM_MUTANT_SKIP_CHECKSUM
					? WAL_MUTANT_SKIP_CHECKSUM
				: o->mutant == SIM_MUTANT_NO_TRUNCATE
					? WAL_MUTANT_NO_TRUNCATE
					: 0;
#endif
		if (sim_store_init(&n->store, &sc)) {
			sim_close(s);
			free(s);
			return KEEL_ERR_NOMEM;
		}
		n->env = (struct env){.clock = {n, &clock_ops},
				      .net = {n, &net_ops},
				      .rand = {n, &rand_ops},
				      .log = {n, &log_ops},
				      .store = {n, &store_ops}};
		if (start_node(s, n)) {
			sim_close(s);
			free(s);
			return KEEL_ERR_INVAL;
		}
	}
	for (uint32_t i = 0; i <= s->n_clients; i++) {
		struct sim_client *cl = &s->clients[i];
		cl->idx = i;
		cl->process = s->next_process++;
	}
	/* Pipelining clients: drawn from a stream of their own, seeded after
	 * all the others. Together they may send about as many writes as
	 * half the operations the plain clients run. */
	keel_rand_seed(&s->pipe_rand, keel_rand_next(&master));
	s->n_pipes = (uint32_t)rnd_range(&s->pipe_rand, 1, SIM_MAX_PIPES);
	s->pipe_budget = o->ops / 2 / s->n_pipes + 1;
	r->pipes = s->n_pipes;
	{
		size_t pl = strlen(r->params);
		int k = snprintf(r->params + pl, sizeof(r->params) - pl,
				 " pipes=%u depth=", s->n_pipes);
		for (uint32_t i = 0; i < s->n_pipes; i++) {
			struct sim_pipe *p = &s->pipes[i];
			p->idx = i;
			p->depth = (uint32_t)rnd_range(&s->pipe_rand, 2,
						       SIM_PIPE_DEPTH);
			if (k > 0 && pl + (size_t)k < sizeof(r->params))
				k += snprintf(r->params + pl + k,
					      sizeof(r->params) - pl - (size_t)k,
					      "%s%u", i ? "," : "", p->depth);
			pipe_schedule_connect(s, p, 0);
		}
	}
	/* Bank clients: from a stream of their own, seeded after all the
	 * others (the pipes' included). Together they may start about a
	 * tenth as many operations as the plain clients run. */
	keel_rand_seed(&s->bank_rand, keel_rand_next(&master));
	{
		struct keel_rand *br = &s->bank_rand;
		s->n_banks = (uint32_t)rnd_range(br, 1, SIM_MAX_BANKS);
		uint32_t na = (uint32_t)rnd_range(br, 3, SIM_BANK_MAX_ACCTS);
		int64_t init[SIM_BANK_MAX_ACCTS];
		for (uint32_t i = 0; i < na; i++)
			init[i] = (int64_t)rnd_range(br, 0, 100);
		sim_bank_init(&s->bank, na, init);
		s->bank_budget = o->ops / 10 / s->n_banks + 1;
		r->banks = s->n_banks;
		r->bank_accts = na;
		for (uint32_t i = 0; i < s->n_banks; i++)
			s->banks[i].idx = i;
		size_t pl = strlen(r->params);
		snprintf(r->params + pl, sizeof(r->params) - pl,
			 " banks=%u accounts=%u total=%lld", s->n_banks, na,
			 (long long)s->bank.total);
	}
	s->ops_left = o->ops;
	for (uint32_t i = 0; i < s->n_clients; i++)
		push(s, (struct sim_event){
				.time = keel_rand_below(&s->client_rand, MS),
				.type = EV_CLIENT_NEXT,
				.a = i});
	push(s, (struct sim_event){.time = SIM_FAULT_PERIOD, .type = EV_FAULT});
	if (tracing(s))
		trace(s, "start seed=%llu nodes=%u %s",
		      (unsigned long long)o->seed, s->n_nodes, r->params);

	/* Phase 1: faults, clients, per-step safety checks. */
	run_until(s, fault_phase_done, UINT64_MAX);
	/* Phase 2: heal everything; the cluster must come back. */
	if (!s->chk.violated) {
		heal_all(s);
		push(s, (struct sim_event){.time = s->now,
					   .type = EV_CLIENT_NEXT,
					   .a = s->n_clients});
		uint64_t bound = s->now + SIM_LIVENESS_BOUND;
		if (!run_until(s, converged, bound) && !s->chk.violated)
			liveness_fail(s);
	}
	if (!s->chk.violated) {
		check_final_logs(s);
		check_acks(s);
		/* Converged: every up node applied everything, any will do. */
		struct sim_node *up = &s->nodes[0];
		for (uint32_t i = 0; i < s->n_nodes && !up->node; i++)
			up = &s->nodes[i];
		cut_window(s, up, true);
		check_order(s, up);
		check_bank(s, up);
	} else if (o->history) {
		sim_history_write_jsonl(&s->hist, history_line, s);
	}
	r->ok = !s->chk.violated;
	if (s->chk.violated)
		snprintf(r->violation, sizeof(r->violation), "%s", s->chk.what);
	r->steps = s->steps;
	r->sim_ns = s->now;
	if (tracing(s))
		trace(s, "end result=%s %s", r->ok ? "ok" : "VIOLATION",
		      r->violation);
	r->digest_checks = s->chk.digest_checks;
	sim_close(s);
	r->forwarded = s->forwarded;
	r->expiries = s->expiries;
	free(s);
	return 0;
}
