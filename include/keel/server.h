/*
 * server.h -- `keel server`: the real process around one node. A libuv
 * loop thread runs the node over the posix env (posix_env.h) with the WAL
 * on the disk thread (wal_worker.h); a client listener speaks RESP2/RESP3
 * (resp.h) to any Redis client. docs/server.md describes the process, the
 * flags, the commands and every deviation from Redis.
 *
 * The pure parts are exposed here so unit tests can reach them without
 * sockets: configuration parsing (flags and the equivalent config file),
 * the command table, and the per-connection reply queue that puts
 * out-of-order completions back in request order.
 */
#ifndef KEEL_SERVER_H
#define KEEL_SERVER_H

#include "keel/common.h"
#include "keel/posix_env.h"
#include "keel/raft.h"

/* ---- configuration --------------------------------------------------------- */

#define SERVER_PATH_MAX 1024
#define SERVER_DEFAULT_CLIENT_ADDR "127.0.0.1:6379"

/* Per-connection bounds (a client that never reads cannot exhaust memory):
 * beyond SERVER_MAX_PENDING unanswered commands or SERVER_OUT_SOFT_BYTES of
 * unsent replies the server stops reading from that client until it
 * catches up, so its memory stays below about SOFT + PENDING x (largest
 * reply); output past SERVER_OUT_HARD_BYTES closes it. 128 in flight is
 * ample for pipelining (one batch of 128 shares a sync and a read round). */
#define SERVER_MAX_PENDING 128
#define SERVER_OUT_SOFT_BYTES (4u << 20)
#define SERVER_OUT_HARD_BYTES ((size_t)256 << 20)
/* Request caps, tighter than Redis's 512 MiB: a command must fit in one
 * peer frame when a follower forwards it (docs/server.md). */
#define SERVER_MAX_BULK_LEN (16u << 20)
#define SERVER_MAX_COMMAND_BYTES (32u << 20)
#define SERVER_MAX_ARGS (1u << 20)
/* MULTI/EXEC per connection (docs/server.md "Transactions"): queued
 * commands, their arguments and argument bytes, and watched keys (count
 * and bytes). Past a cap the command is refused and EXEC aborts; the whole
 * EXEC then still fits one peer frame when a follower forwards it. */
#define SERVER_MULTI_MAX_CMDS 10000u
#define SERVER_MULTI_MAX_ARGS (512u << 10)
#define SERVER_MULTI_MAX_BYTES (16u << 20)
#define SERVER_MAX_WATCHES 1024u
#define SERVER_MAX_WATCH_BYTES (1u << 20)

struct server_config {
	raft_id id;
	uint64_t cluster_id;
	char data_dir[SERVER_PATH_MAX];
	char client_addr[POSIX_ENV_ADDR_MAX];
	char peer_addr[POSIX_ENV_ADDR_MAX]; /* "" = this node's --cluster entry */
	uint32_t n_members;
	struct posix_env_peer members[RAFT_MAX_VOTERS];
	bool test_faults;  /* KEEL.DEBUG admin commands (tests only) */
	int test_bug;      /* enum server_test_bug; only with test_faults */
	int log_level;     /* enum env_log_level */
	uint32_t tick_ms;  /* one Raft tick */
	uint32_t election_ticks;
	uint32_t heartbeat_ticks;
	uint64_t request_timeout_ms; /* 0 = the node's default (5 s) */
	uint32_t max_clients;
	uint32_t snapshot_entries; /* 0 = the node's default (100,000) */
	uint64_t snapshot_log_bytes; /* 0 = the node's default (64 MiB) */
	/* Which keys were given, so a flag can override the config file and
	 * the check can name what is missing. */
	bool have_id, have_data_dir, have_cluster;
};

/* Planted bugs for the Jepsen-style tests (tests/jepsen, docs/testing.md):
 * evidence that the harness catches what it claims to. Server layer only,
 * accepted only together with --test-faults. */
enum server_test_bug {
	SERVER_BUG_NONE = 0,
	SERVER_BUG_STALE_READ, /* "stale-read": every read served locally, as READONLY */
	SERVER_BUG_EARLY_ACK,  /* "early-ack": SET k v answered +OK when handed to the node */
	SERVER_BUG_REORDER,    /* "reorder": of the first two writes in one read of a
	                        * connection's input, the 2nd is handed to the node
	                        * before the 1st (replies still in request order) */
	SERVER_BUG_NO_ORDER,   /* "no-order": the node's program-order fix undone
	                        * (node_config.test_no_order, the simulator's
	                        * no-order mutant) */
	SERVER_BUG_WATCH_BLIND, /* "watch-blind": EXEC is built without the WATCH
	                         * conditions, so it always runs (lost updates) */
};

void server_config_default(struct server_config *c);

/* Sets one option by its name without the leading "--" ("id", "data-dir",
 * "client-addr", "peer-addr", "cluster", "cluster-id", "test-faults",
 * "log-level", "tick-ms", "election-ticks", "heartbeat-ticks",
 * "request-timeout-ms", "max-clients", "snapshot-entries", "snapshot-log-bytes", "test-bug"). val may be NULL only for
 * "test-faults". Returns 0 or KEEL_ERR_INVAL with a message in err that
 * names the option and the bad value. */
int server_config_set(struct server_config *c, const char *key,
		      const char *val, char *err, size_t err_len);

/* Parses a config file's text: one `key = value` per line, '#' starts a
 * comment, blank lines are skipped, keys as server_config_set. name is
 * used in messages ("FILE:LINE: ..."). text need not be NUL-terminated. */
int server_config_parse_text(struct server_config *c, const char *text,
			     size_t len, const char *name, char *err,
			     size_t err_len);

/* Parses "1=127.0.0.1:7101,2=127.0.0.1:7102,...": ids 1.. unique, at most
 * RAFT_MAX_VOTERS members, addresses as posix_env_parse_addr. */
int server_parse_cluster(const char *s, struct posix_env_peer *out,
			 uint32_t *n_out, char *err, size_t err_len);

/* Parses argv (argv[0] = "server"): --key value or --key=value, and
 * --config FILE (read at once: later flags override it, earlier flags are
 * overridden by it). Returns 0, 1 when --help was asked for (usage
 * printed by the caller), or KEEL_ERR_INVAL / KEEL_ERR_IO with a message. */
int server_config_parse_args(struct server_config *c, int argc, char **argv,
			     char *err, size_t err_len);

/* The final check: required options present, this node in the cluster,
 * addresses parse, tick and election settings consistent. */
int server_config_check(struct server_config *c, char *err, size_t err_len);

/* The option list for --help. */
void server_config_usage(char *buf, size_t len);

/* ---- KEEL-ID --------------------------------------------------------------- */

#define SERVER_KEEL_ID_BYTES 64

/* Encodes / decodes the 64-byte KEEL-ID file (docs/disk-format.md).
 * decode returns 0, KEEL_ERR_TRUNCATED, KEEL_ERR_MAGIC, KEEL_ERR_VERSION or
 * KEEL_ERR_CORRUPT. */
void server_keel_id_encode(uint64_t cluster_id, raft_id node_id,
			   uint8_t out[SERVER_KEEL_ID_BYTES]);
int server_keel_id_decode(const uint8_t *buf, size_t len,
			  uint64_t *cluster_id, raft_id *node_id);

/* Creates dir if missing; writes KEEL-ID on first use (temp, fsync,
 * rename, dir fsync); refuses a dir of another cluster or node, naming
 * both ids. 0, KEEL_ERR_CLUSTER, KEEL_ERR_IO or KEEL_ERR_CORRUPT. */
int server_keel_id_check(const char *dir, uint64_t cluster_id, raft_id id,
			 char *err, size_t err_len);

/* ---- the command table ----------------------------------------------------- */

enum server_cmd_flags {
	SERVER_CMD_LOCAL = 1u << 0,  /* answered by the server itself */
	SERVER_CMD_WRITE = 1u << 1,  /* kv write: through the log */
	SERVER_CMD_READ = 1u << 2,   /* kv read: ReadIndex or local */
	SERVER_CMD_ADMIN = 1u << 3,  /* FLUSHALL, KEEL.DEBUG */
	SERVER_CMD_FAULTS = 1u << 4, /* refused without --test-faults */
	SERVER_CMD_FAST = 1u << 5,
};

/* Local handlers, by id (the handler bodies live with the connection in
 * src/server/server.c; the table is data). */
enum server_handler {
	SERVER_H_NODE = 0, /* kv command: node_request */
	SERVER_H_PING,
	SERVER_H_ECHO,
	SERVER_H_HELLO,
	SERVER_H_SELECT,
	SERVER_H_QUIT,
	SERVER_H_CLIENT,
	SERVER_H_COMMAND,
	SERVER_H_INFO,
	SERVER_H_READONLY,
	SERVER_H_READWRITE,
	SERVER_H_DEBUG,
	SERVER_H_CONFIG,
	SERVER_H_MULTI,
	SERVER_H_EXEC,
	SERVER_H_DISCARD,
	SERVER_H_WATCH,
	SERVER_H_UNWATCH,
	SERVER_H_COUNT,
};

struct server_command {
	const char *name; /* lowercase */
	int arity;        /* Redis's: negative = at least -arity */
	uint32_t flags;   /* enum server_cmd_flags */
	int handler;      /* enum server_handler */
	int first_key, last_key, step;
	const char *group;   /* COMMAND DOCS */
	const char *summary; /* COMMAND DOCS */
	const char *acl;     /* ACL categories, "@read @fast" (COMMAND INFO) */
};

/* Case-insensitive lookup over the server's commands and kv_commands[]
 * (KV_CMD_INTERNAL ones are not client commands: NULL), by a hash of the
 * name. The result points into static tables (read-only). */
const struct server_command *server_command_lookup(const uint8_t *name,
						   size_t len);
bool server_command_arity_ok(const struct server_command *c, size_t argc);
/* The i-th client-visible command (i < server_command_count()). */
uint32_t server_command_count(void);
const struct server_command *server_command_at(uint32_t i);

/* Redis's error texts, written into buf (NUL-terminated, truncated to
 * len): "ERR unknown command 'x', with args beginning with: 'a' 'b' " and
 * "ERR wrong number of arguments for 'get' command". */
void server_err_unknown_command(char *buf, size_t len, size_t argc,
				const uint8_t *const *argv, const size_t *lens);
void server_err_arity(char *buf, size_t len, const uint8_t *name,
		      size_t name_len);

/* ---- the reply queue --------------------------------------------------------- */

/*
 * Replies leave a connection in request order even though node replies
 * complete out of order (a local PING after a pipelined SET must wait for
 * the SET). Each command takes a slot at the tail; a slot is completed with
 * its encoded bytes (copied) in any order; server_replyq_pop hands out the
 * head's bytes only once the head is complete. Bounded by max slots.
 */
struct server_reply_slot {
	struct server_reply_slot *next;
	uint64_t seq;
	void *ctx; /* the caller's (the server: its connection) */
	int proto; /* the caller's (the server: RESP version when it was asked) */
	void *aux; /* the caller's (the server: a WATCH's keys); never freed
		      by the queue */
	bool done;
	size_t len;
	uint8_t *bytes; /* owned, len bytes once done */
};

struct server_replyq {
	const struct keel_alloc *alloc;
	struct server_reply_slot *head, *tail;
	uint32_t n, max;
	uint64_t next_seq;
};

void server_replyq_init(struct server_replyq *q, const struct keel_alloc *a,
			uint32_t max);
void server_replyq_close(struct server_replyq *q);
/* A new slot at the tail, or NULL when full (n == max) or out of memory. */
struct server_reply_slot *server_replyq_push(struct server_replyq *q);
/* Completes a slot with a copy of bytes; KEEL_ERR_NOMEM leaves it open. */
int server_replyq_complete(struct server_replyq *q,
			   struct server_reply_slot *s, const uint8_t *bytes,
			   size_t len);
/* The head if it is complete (the caller sends head->bytes, then calls
 * server_replyq_drop_head), else NULL. */
struct server_reply_slot *server_replyq_ready(struct server_replyq *q);
void server_replyq_drop_head(struct server_replyq *q);

/* ---- the process ---------------------------------------------------------- */

/* Runs the server until SIGTERM/SIGINT; returns the process exit code
 * (0 after a clean shutdown, 1 on a start-up error, printed to stderr). */
int server_run(const struct server_config *c);

#endif /* KEEL_SERVER_H */
