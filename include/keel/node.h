/*
 * node.h -- one replica: the Raft core, the kv state machine (kv.h) and the
 * storage, network and clocks reached only through the environment (env.h).
 *
 * The node turns inputs (a tick, a peer frame, a client request, a store
 * completion) into Raft events and handles every update the core produces
 * in one fixed order (thesis §10.2.1, etcd's Ready rules):
 *
 *   1. persist: hand entries and hard state to the log store (async);
 *   2. send:    msgs now; msgs_after_persist are held until the store
 *               reports every write issued so far as durable;
 *   3. apply:   committed entries to kv, in index order;
 *   4. answer:  clients waiting for those entries or for read points.
 *
 * Batching per loop turn: a client request, a peer frame or a store
 * completion only steps the core; the update loop runs once for all the
 * inputs of a loop turn, from a 0-delay env timer the first of them arms
 * (or earlier, from a tick). So N requests that arrive together become one
 * store write and one append message per peer (docs/architecture.md).
 *
 * Requests are Redis argv; replies are kv reply tapes (kv.h), played by the
 * caller into RESP2/RESP3 (the server) or into a collector (the simulator).
 * Any node accepts any command:
 *
 *   - writes (KV_CMD_WRITE) go through the log. The leader proposes; a
 *     follower forwards the command to the leader it knows (a FWD_WRITE peer
 *     frame) and the leader proposes it with the follower as its origin.
 *     Every replica applies the entry with kv_apply; the origin replica
 *     records the reply into a tape and answers its own waiting client: no
 *     reply bytes travel between nodes.
 *   - reads (KV_CMD_READ) are linearizable: ReadIndex on the leader (§6.4);
 *     a follower asks the leader for a read point (FWD_READ) and serves the
 *     read locally once it has applied up to it. With NODE_REQ_LOCAL a read
 *     is served at once from this node's applied state (possibly stale).
 *
 * Exactly-once: each request gets (origin id, boot nonce, seq); a forwarded
 * write may be retransmitted and frames may be duplicated, so the same
 * command can reach the log twice. Apply executes each (origin, boot, seq)
 * at most once, deterministically on every replica (a per-origin dedup
 * window in the node's replicated state; docs/architecture.md has the
 * design and its bound).
 *
 * Time: now_ns (monotonic) drives ticks and request timeouts; wall_ms
 * stamps command entries on the leader (relative TTLs become absolute) and
 * is the "now" of reads. Only the leader's wall clock decides expiry: it
 * proposes KEEL.EXPIRE-DELETE for expired keys, a bounded batch per tick.
 *
 * Ownership: everything passed in stays the caller's (the node copies what
 * it keeps); everything passed to a callback is borrowed for that call.
 */
#ifndef KEEL_NODE_H
#define KEEL_NODE_H

#include "keel/common.h"
#include "keel/env.h"
#include "keel/kv.h"
#include "keel/raft.h"

/* ---- requests and replies ------------------------------------------------- */

enum node_status {
	NODE_OK = 0,     /* executed (write applied / read served): tape holds the Redis
	                    reply, which may itself be an error reply such as WRONGTYPE */
	NODE_NOT_LEADER, /* not executed: no leader known or reachable within the request
	                    timeout (the server answers -TRYAGAIN ...); leader_hint if known */
	NODE_DROPPED,    /* definitely not executed: busy, proposal lost its log slot, a
	                    read lost leadership, the store is poisoned */
	NODE_UNKNOWN,    /* may or may not have executed: timed out after it was proposed or
	                    handed to the leader (the server answers an error that says the
	                    outcome is unknown; never "failed") */
	NODE_STATUS_COUNT,
};
/* "OK", "NOT_LEADER", "DROPPED", "UNKNOWN" or "?"; static strings. */
const char *node_status_name(int status);

#define NODE_REQ_LOCAL 0x1u /* READONLY connection: serve reads from this node's applied
                               state at once (possibly stale); writes still go to the leader */

struct node_request {
	uint64_t cookie;             /* the caller's, echoed in the reply */
	uint32_t flags;              /* NODE_REQ_* */
	/* Program order: writes with the same nonzero stream (the server uses
	 * its connection id) take effect in the order they were requested.
	 * A write that would take effect after a later-requested write of
	 * its stream already did is not executed (NODE_DROPPED). 0 = no
	 * order promised. */
	uint64_t stream;
	uint32_t argc;               /* >= 1: argv[0] is the command name (any case) */
	const uint8_t *const *argv;  /* borrowed for the call: the node copies what it keeps */
	const size_t *lens;
};

struct node_reply {
	uint64_t cookie;
	int status;                  /* enum node_status */
	raft_id leader_hint;         /* a leader this node knows of, or 0 */
	uint64_t index;              /* writes: the log index it ran at; reads: read point */
	const uint8_t *tape;         /* NODE_OK: one kv reply tape; borrowed for the call */
	size_t tape_len;
};

/* Called once per request with its final answer. It must not call back
 * into the node (queue the answer and act on it later). */
typedef void (*node_reply_cb)(void *ctx, const struct node_reply *reply);

/* Test and simulator hooks: see every update and every applied entry of a
 * node as it happens (borrowed for the call). Both may be NULL. */
struct node_observer {
	void *ctx;
	void (*update)(void *ctx, raft_id id, const struct raft_update *u);
	void (*apply)(void *ctx, raft_id id, const struct raft_entry *e);
};

#ifdef KEEL_MUTANTS
/* Planted node-level bugs for the simulator's mutation runs. Raft core
 * mutants (enum raft_mutant) pass through to the core. */
enum node_mutant {
	NODE_MUTANT_SEND_BEFORE_PERSIST = 100, /* msgs_after_persist at once */
	NODE_MUTANT_APPLY_UNCOMMITTED = 101,   /* apply entries before commit */
	NODE_MUTANT_ACCEPT_BAD_CRC = 102,      /* decode frames failing CRC */
	NODE_MUTANT_NO_DEDUP = 103,            /* apply duplicates of a request */
	/* Snapshots (docs/snapshots.md §4, "Planted bugs"). */
	NODE_MUTANT_SNAP_LIVE_WRITER = 104,   /* the writer reads the live kv */
	NODE_MUTANT_SNAP_SKIP_CRC = 105,      /* install without snap_crc and
	                                         trailer checks */
	NODE_MUTANT_SNAP_COMPACT_EARLY = 106, /* compact when snap_finish is
	                                         issued, not completed */
	NODE_MUTANT_SNAP_NO_DEDUP = 107,      /* payload's dedup window empty */
	NODE_MUTANT_SNAP_ACK_EARLY = 108,     /* DONE and the install's acks
	                                         before snap_finish completes */
	NODE_MUTANT_NO_WRITE_TIMEOUT = 109,   /* expire_timeouts skips writes:
	                                         a write nobody commits is
	                                         never answered */
	NODE_MUTANT_NO_ORDER = 110,           /* apply ignores the stream order
	                                         and resends go newest first */
	/* Replicated-state mutants: the node hands them to its kv and its
	 * session table (kv_set_mutant, session_set_mutant). */
	NODE_MUTANT_TXN_PARTIAL = 111,        /* a transaction stops after its
	                                         first write command */
	NODE_MUTANT_WATCH_BLIND = 112,        /* KEEL.EXEC ignores WATCH */
	NODE_MUTANT_SESSION_WRONG_REPLY = 113, /* a session seq gets its slot's
	                                          reply, whatever seq it was */
};
#endif

struct node_config {
	raft_id id;
	struct raft_config_members members;
	uint64_t cluster_id;      /* on every peer frame */
	uint64_t tick_ns;         /* one Raft tick on this node's clock */
	uint32_t election_ticks;
	uint32_t heartbeat_ticks;
	uint32_t max_pending;     /* client writes, and client reads, waiting at once
	                             (each); beyond it: NODE_DROPPED (busy);
	                             1 .. 2^24 */
	uint32_t max_msg_entries; /* per append message; 0 = default */
	/* Writes this node hands on (proposes or forwards) while an older
	 * write of it is still unanswered: at most this many seqs apart;
	 * newer ones wait here (not refused). 0 = the dedup window (4096),
	 * which is also the most allowed: so every copy that reaches the log
	 * is inside its origin's window and is never refused as stale. */
	uint32_t max_inflight_writes;
	uint32_t max_inflight_msgs; /* appends in flight per peer; 0 = default */
	/* How long a request may wait for a leader and for its result; 0 =
	 * 5 s. After it: NODE_NOT_LEADER if it was never handed on (proposed
	 * or forwarded), NODE_UNKNOWN for a write that was, NODE_DROPPED for a
	 * read that was. */
	uint64_t request_timeout_ns;
	/* A forwarded request without an answer from the leader is sent
	 * again after this long; 0 = election_ticks * tick_ns. */
	uint64_t retry_ns;
	uint32_t expire_batch;    /* KEEL.EXPIRE-DELETE proposals per tick; 0 = 64 */
	uint32_t max_tape_bytes;  /* cap on one reply tape; 0 = 512 MiB + 1 KiB */
	node_reply_cb reply;      /* required */
	void *reply_ctx;
	struct node_observer observer;
	int mutant;               /* 0; see enum node_mutant (KEEL_MUTANTS) */
	/* Planted bug for fault tests of real processes: behave as the
	 * NODE_MUTANT_NO_ORDER mutant (program order per stream not kept).
	 * Only `keel server --test-faults --test-bug no-order` sets it. */
	bool test_no_order;
	/* Snapshots and their transfer (docs/snapshots.md §1.1, §3.3); 0 =
	 * the default in brackets. A store without the snapshot operations
	 * (ops->snap_begin NULL) never snapshots. */
	uint32_t snapshot_entries;        /* applied entries between two
	                                     snapshots [100,000];
	                                     UINT32_MAX = never */
	uint64_t snapshot_log_bytes;      /* ... or applied entry bytes [64 MiB] */
	uint32_t snapshot_step_bytes;     /* one writer step, one chunk
	                                     [64 KiB]; <= 1 MiB */
	uint32_t snapshot_steps_per_turn; /* writer steps per loop turn [4] */
	uint64_t snapshot_preimage_bytes; /* pre-image cap of a live writer
	                                     [64 MiB] */
	uint64_t snapshot_max_bytes;      /* largest payload written or
	                                     accepted [4 GiB] */
	uint32_t snap_window;             /* chunks in flight per transfer [4] */
	uint32_t snap_max_sends;          /* transfers at once [2] */
	uint64_t snap_retry_ns;           /* resend without progress [retry_ns] */
	uint64_t snap_timeout_ns;         /* give up without progress
	                                     [10 election timeouts] */
};

struct node;

/* Starts a replica: loads the store, restores the core through
 * raft_restore (raft_restore_snapshot when the store holds a snapshot:
 * then the kv state streams in through snap_read and the node serves
 * nothing until it is in), arms the tick timer. *out is set on success. Returns 0,
 * KEEL_ERR_NOMEM, KEEL_ERR_INVAL or the store's load error. env is
 * borrowed for the node's life. */
int node_create(const struct node_config *cfg, const struct env *env,
		struct node **out);

/* Stops the node at once, as a crash would: nothing is flushed, pending
 * clients get no answer. Stops its timer; the caller makes sure no store
 * completion reaches it afterwards. */
void node_destroy(struct node *n);

/* A peer frame arrived (borrowed). Raft frames (types 1..9) go to the
 * core; node-level frames (types >= PEER_TYPE_NODE_FIRST: forwarding) are
 * handled by the node itself after peer_frame_verify. Frames that fail to
 * decode are dropped and counted. */
void node_receive(struct node *n, const uint8_t *frame, size_t len);

/* Routes by kv_command_lookup(argv[0]): KV_CMD_WRITE commands go through the log (the
 * leader proposes; a follower forwards to the leader over a node-level peer frame);
 * KV_CMD_READ commands are linearizable by default (ReadIndex on the leader; a follower
 * forwards a read-index request and serves locally once applied) or local with
 * NODE_REQ_LOCAL. Commands kv does not know, and KV_CMD_INTERNAL ones, return
 * KEEL_ERR_INVAL: the server handles (or refuses) those itself. Otherwise returns 0 and the
 * answer comes through cfg.reply, possibly from inside this call. */
int node_request(struct node *n, const struct node_request *req);

/* Asks this node to start an election now (tests; bootstrap). */
void node_campaign(struct node *n);

struct node_stats {
	uint64_t frames_in, frames_out, frames_bad;
	uint64_t writes_issued, writes_done;
	uint64_t applied;
	uint64_t fwd_requests;     /* client requests this node forwarded */
	uint64_t fwd_writes_sent;  /* FWD_WRITE frames sent (retries included) */
	uint64_t fwd_reads_sent;   /* FWD_READ frames sent */
	uint64_t fwd_proposed;     /* forwarded writes this node proposed as leader */
	uint64_t fwd_nacks_sent;
	uint64_t fwd_bad;          /* node-level frames with a bad body: dropped */
	uint64_t dedup_skipped;    /* applied entries skipped as duplicates */
	uint64_t order_refused;    /* applied entries skipped: a later write of
	                              their stream had run (program order) */
	uint64_t window_waits;     /* writes held back: max_inflight_writes */
	uint64_t session_runs;     /* session commands run (KEEL.RUN) */
	uint64_t session_dups;     /* ... answered from the session table */
	uint64_t expire_proposed;  /* KEEL.EXPIRE-DELETE entries proposed */
	uint64_t stall_transfers;  /* leadership handed on: own disk stalled */
	/* Snapshots (docs/snapshots.md). */
	uint64_t snap_index;          /* newest durable snapshot (0: none) */
	uint64_t snap_taken;          /* local snapshots started */
	uint64_t snap_finished;       /* ... durable */
	uint64_t snap_aborted;        /* ... dropped (an install replaced the
	                                 state) */
	uint64_t snap_compactions;    /* raft_compact calls that dropped entries */
	uint64_t snap_catchup_steps;  /* writer steps over the per-turn limit */
	uint64_t snap_sends_started;  /* transfers this leader began */
	uint64_t snap_sent_ok, snap_sent_failed; /* reports to the core */
	uint64_t snap_chunks_sent, snap_chunks_resent;
	uint64_t snap_bad;            /* bad chunk/ack bodies, stray frames */
	uint64_t snap_verify_failed;  /* received snapshots refused (CRC, decode) */
	uint64_t snap_installs;       /* received snapshots installed */
	uint64_t snap_restored;       /* 1: this boot started from a snapshot */
	/* Batching per loop turn: update-loop runs (process) that took
	 * requests -- client writes and linearizable reads, forwarded writes
	 * and reads at the leader -- queued since the run before, how many
	 * they took in all, and the most one run took. */
	uint64_t batch_runs;
	uint64_t batched_requests;
	uint64_t batch_max;
	/* 1 while a local snapshot is being written or finished (its
	 * snap_finish not yet complete): Jepsen's kill-snapshotting waits
	 * for it to kill a node mid-snapshot. */
	uint64_t snap_writing;
};

void node_stats(const struct node *n, struct node_stats *st);
const struct raft *node_raft(const struct node *n);
/* The state machine (borrowed; changes as entries apply): INFO keyspace,
 * stats, digests, tests. */
const struct kv *node_kv(const struct node *n);
/* Highest log index applied to the state machine. */
uint64_t node_applied(const struct node *n);
/* A digest of the whole replicated state: kv (kv_digest) and the dedup
 * window. Replicas that applied the same log prefix have equal digests
 * (the simulator's state agreement check). */
uint64_t node_state_digest(const struct node *n);
/* True once the node stopped for good (a store write failed, or kv could
 * not apply an entry): it answers NODE_DROPPED and applies nothing more. */
bool node_poisoned(const struct node *n);

#endif /* KEEL_NODE_H */
