/*
 * posix_env.h -- the real environment on libuv: monotonic clock and timers
 * on the loop, the peer transport over TCP, OS randomness and structured
 * log lines on stderr. (The store is the disk thread: wal_worker.h.)
 *
 * Peer transport: one TCP connection per pair of nodes; the node with the
 * lower id dials, the other accepts and learns who called from the first
 * frame's header. Frames are length-checked with peer_frame_peek before
 * the body is buffered, and fully verified (CRC32C, cluster id, sender)
 * before delivery: a bad frame is counted and its connection closed.
 * Reconnects back off exponentially with jitter. Each peer's send queue
 * is bounded in bytes: beyond it frames are dropped and counted (Raft
 * retransmits), so a slow or dead peer cannot exhaust memory.
 *
 * Single-threaded: every call and callback runs on the loop thread.
 */
#ifndef KEEL_POSIX_ENV_H
#define KEEL_POSIX_ENV_H

#include <uv.h>

#include "keel/env.h"

#define POSIX_ENV_ADDR_MAX 128

struct posix_env_peer {
	raft_id id;
	char addr[POSIX_ENV_ADDR_MAX]; /* "host:port"; IPv6 as "[::1]:7101" */
};

struct posix_env_config {
	raft_id id;
	uint64_t cluster_id;
	uint32_t n_peers; /* every member, this node included */
	struct posix_env_peer peers[RAFT_MAX_VOTERS];
	uint64_t max_queue_bytes; /* per peer; 0 = 64 MiB */
	uint64_t max_frame_bytes; /* 0 = 64 MiB */
	uint64_t backoff_min_ms;  /* 0 = 50 */
	uint64_t backoff_max_ms;  /* 0 = 2000 */
	/* TCP_USER_TIMEOUT on every peer connection: data unacknowledged for
	 * this long aborts the connection, which is then redialed with
	 * backoff. Without it a connection cut at the IP level (a partition)
	 * stays open and resumes only at TCP's next, exponentially backed-off
	 * retransmission, up to minutes after the network healed. Idle
	 * connections are unaffected (no data in flight). 0 = 1000. */
	uint64_t user_timeout_ms;
	int log_level;            /* enum env_log_level: lines below are dropped */
	/* A complete, verified frame from a peer (borrowed for the call). */
	void (*on_frame)(void *ctx, const uint8_t *frame, size_t len);
	void *ctx;
	/* Optional: fills "term=.. role=.." context for log lines. */
	void (*log_context)(void *ctx, char *buf, size_t len);
};

struct posix_env_peer_stats {
	raft_id id;
	bool connected;
	uint64_t frames_out, frames_in, bytes_out, bytes_in;
	uint64_t dropped_full; /* send queue over its cap */
	uint64_t bad_frames;   /* checksum, cluster, sender: connection closed */
	uint64_t reconnects;
	uint64_t queued_bytes;
	/* TCP_USER_TIMEOUT the kernel holds for the current connection
	 * (getsockopt), 0 when not connected. */
	uint64_t user_timeout_ms;
};

struct posix_env;

/* Parses "host:port" (host: IPv4 literal, [IPv6] literal or localhost). */
int posix_env_parse_addr(const char *s, struct sockaddr_storage *out);

/* Binds the peer listener (this node's address in peers) and starts
 * dialing. Returns 0, KEEL_ERR_INVAL (bad address, unknown id) or
 * KEEL_ERR_IO with a message in err. */
int posix_env_create(uv_loop_t *loop, const struct posix_env_config *cfg,
		     struct posix_env **out, char *err, size_t err_len);

/* Closes every connection and timer; the loop must run once more for the
 * handles to close, then call posix_env_free. */
void posix_env_close(struct posix_env *e);
void posix_env_free(struct posix_env *e);

/* Fills the clock, net, rand and log parts of *env (store: the caller's). */
void posix_env_fill(struct posix_env *e, struct env *env);

/* Fault injection for tests (enabled by the server only under a test
 * flag): drop frames to / from a peer, and offset this node's clock. */
void posix_env_set_drop(struct posix_env *e, raft_id peer, bool out, bool in);
void posix_env_set_clock_offset(struct posix_env *e, int64_t offset_ns);

uint32_t posix_env_peer_stats(struct posix_env *e,
			      struct posix_env_peer_stats *st, uint32_t max);

/* Writes one log line now (used by the server for its own events). */
void posix_env_log(struct posix_env *e, int level, const char *msg);

#endif
