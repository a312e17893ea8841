/*
 * raft.h -- keel's Raft core: a pure, deterministic state machine.
 *
 * The core does no I/O, reads no clock, starts no thread, prints nothing and
 * holds no global state. The application drives it with events and collects
 * what the core wants done as an update (etcd-io/raft's Step/Ready/Advance,
 * cowsql/raft's raft_step):
 *
 *     raft_step(r, &event);            many times: ticks, messages, proposals
 *     if (raft_ready(r, &u)) {         what to do now
 *             install u.snapshot (if set) first, see the contract below;
 *             persist u.hard_state (if u.hard_state_changed) and u.entries;
 *             send u.msgs right away;
 *             send u.msgs_after_persist once that persistence is durable;
 *             apply u.committed in order;
 *             serve u.reads once applied >= read.index;
 *             raft_advance(r, &u);
 *     }
 *     later: raft_step(r, RAFT_EV_PERSISTED{index, term}) when the entries
 *            up to index are durable.
 *
 * Snapshots (docs/raft.md "Log compaction and InstallSnapshot"): once the
 * application's state machine holds a durable snapshot of every entry up to
 * an applied index i, raft_compact(r, i) lets the core drop those entries.
 * A follower whose next entry is gone gets RAFT_MSG_SNAPSHOT, which names
 * the snapshot (index, term, membership) but never carries its bytes: see
 * "The snapshot contract" below.
 *
 * Ownership: everything passed into raft_step stays the caller's; the core
 * copies what it keeps (proposal data, received entries). Everything in a
 * struct raft_update is borrowed from the core and stays valid until the
 * next call of raft_step, raft_ready, raft_advance or raft_compact on the
 * same instance;
 * a caller that persists asynchronously copies (or encodes) what it needs.
 *
 * Time is counted in ticks carried by RAFT_EV_TICK; randomness comes from a
 * per-instance generator seeded from the config. The same seed and the same
 * events always give the same updates.
 */
#ifndef KEEL_RAFT_H
#define KEEL_RAFT_H

#include "keel/common.h"

#define RAFT_MAX_VOTERS 16 /* voters + learners in one configuration */
#define RAFT_NONE 0        /* "no node": node ids start at 1 */

typedef uint64_t raft_id;

enum raft_role {
	RAFT_FOLLOWER = 0,
	RAFT_PRE_CANDIDATE,
	RAFT_CANDIDATE,
	RAFT_LEADER,
};
const char *raft_role_name(enum raft_role role);

enum raft_entry_type {
	RAFT_ENTRY_NORMAL = 0, /* application command */
	RAFT_ENTRY_NOOP = 1,   /* appended by a new leader, §5.4.2 / §6.4 */
	RAFT_ENTRY_CONF = 2,   /* configuration change (reserved, wave 2) */
};

struct raft_entry {
	uint64_t term;
	uint64_t index;
	uint8_t type; /* enum raft_entry_type */
	uint32_t len;
	const uint8_t *data; /* len bytes; owned as the surrounding call says */
};

enum raft_msg_type {
	RAFT_MSG_NONE = 0,
	RAFT_MSG_PREVOTE = 1,       /* §9.6 */
	RAFT_MSG_PREVOTE_RESP = 2,
	RAFT_MSG_VOTE = 3,          /* RequestVote, §3.4 */
	RAFT_MSG_VOTE_RESP = 4,
	RAFT_MSG_APPEND = 5,        /* AppendEntries, §3.5 */
	RAFT_MSG_APPEND_RESP = 6,
	RAFT_MSG_HEARTBEAT = 7,     /* empty AppendEntries + read context, §6.4 */
	RAFT_MSG_HEARTBEAT_RESP = 8,
	RAFT_MSG_TIMEOUT_NOW = 9,   /* leadership transfer, §3.10 */
	RAFT_MSG_SNAPSHOT = 10,     /* InstallSnapshot metadata, Fig. 5.3 */
	RAFT_MSG_TYPE_COUNT = 11,
};
const char *raft_msg_type_name(int type);

/*
 * One message type for every RPC, as in etcd-io/raft: fields a type does not
 * use are zero. Meaning of the shared fields per type:
 *
 *   PREVOTE/VOTE        term = candidate's (next) term; log_term/index =
 *                       candidate's last log term/index; transfer = true
 *                       when caused by TimeoutNow (voters skip the lease).
 *   *_RESP of votes     reject = vote refused; term = term of the request
 *                       for a pre-vote, the voter's term otherwise.
 *   APPEND              log_term/index = term/index of the entry before
 *                       entries[0]; commit = leader's commit index.
 *   APPEND_RESP         index = last index now matching (accept) or the
 *                       rejected probe index (reject); on reject hint_index
 *                       and hint_term let the leader skip a whole term.
 *   HEARTBEAT           commit = min(leader commit, follower match);
 *                       context = read round the leader is confirming.
 *   HEARTBEAT_RESP      context echoed back.
 *   SNAPSHOT            index/log_term = the snapshot's last included
 *                       index and term; commit = leader's commit index;
 *                       conf = the membership the snapshot covers (must
 *                       be non-NULL; for every other type it is NULL).
 *                       Answered with an APPEND_RESP (accept, index = the
 *                       index now matching).
 */
struct raft_config_members;
struct raft_msg {
	uint8_t type; /* enum raft_msg_type */
	bool reject;
	bool transfer;
	raft_id from;
	raft_id to;
	uint64_t term;
	uint64_t log_term;
	uint64_t index;
	uint64_t commit;
	uint64_t hint_index;
	uint64_t hint_term;
	uint64_t context;
	uint32_t n_entries;
	struct raft_entry *entries; /* borrowed: see the ownership rules */
	const struct raft_config_members *conf; /* SNAPSHOT only; borrowed */
};

/* Persistent state, §3.8 Figure 3.1 ("updated on stable storage before
 * responding to RPCs"). commit is kept too so a restart replays less. */
struct raft_hard_state {
	uint64_t term;
	raft_id vote;
	uint64_t commit;
};

/* Cluster configuration as data: voters decide, learners (wave 2) only
 * receive the log. Membership changes replace it without reshaping the
 * core. */
struct raft_config_members {
	uint32_t n_voters;
	raft_id voters[RAFT_MAX_VOTERS];
	uint32_t n_learners;
	raft_id learners[RAFT_MAX_VOTERS];
};

struct raft_config {
	raft_id id;                      /* this node, > 0 */
	struct raft_config_members members;
	uint32_t election_ticks;         /* base election timeout; the random
	                                    timeout is in [e, 2e) */
	uint32_t heartbeat_ticks;        /* < election_ticks */
	uint64_t seed;                   /* per-instance randomness */
	bool pre_vote;                   /* §9.6 */
	bool check_quorum;               /* §6.2 */
	uint32_t max_inflight_msgs;      /* appends in flight per peer */
	uint64_t max_inflight_bytes;     /* entry bytes in flight per peer; 0 = no cap */
	uint64_t max_msg_bytes;          /* entry bytes per append message */
	uint32_t max_msg_entries;        /* entries per append message */
	uint64_t max_uncommitted_bytes;  /* leader refuses proposals above; 0 = no cap */
	const struct keel_alloc *alloc;  /* NULL = keel_alloc_libc */
};

/* Defaults a caller can start from. */
void raft_config_default(struct raft_config *c, raft_id id);

enum raft_event_type {
	RAFT_EV_TICK = 1,      /* one tick of logical time */
	RAFT_EV_RECEIVE,       /* a message from a peer */
	RAFT_EV_PROPOSE,       /* append commands (leader only) */
	RAFT_EV_READ_INDEX,    /* ask for a linearizable read point */
	RAFT_EV_PERSISTED,     /* entries up to (index, term) are durable */
	RAFT_EV_CAMPAIGN,      /* start an election now (tests, bootstrap) */
	RAFT_EV_TRANSFER,      /* hand leadership to a voter, §3.10 */
	RAFT_EV_SNAPSHOT_STATUS, /* the bytes for a RAFT_MSG_SNAPSHOT to peer
	                            were delivered (ok) or not (leader only) */
};

struct raft_event {
	int type; /* enum raft_event_type */
	union {
		struct raft_msg receive; /* borrowed for the call */
		struct {
			uint32_t n;
			const struct raft_entry *entries; /* type, len, data used */
		} propose;
		struct {
			uint64_t id; /* caller's request id, echoed in raft_read */
		} read_index;
		struct {
			uint64_t index;
			uint64_t term;
		} persisted;
		struct {
			raft_id target;
		} transfer;
		struct {
			raft_id peer;
			bool ok;
		} snapshot_status;
	};
};

enum raft_read_status {
	RAFT_READ_OK = 0,  /* serve once applied index >= index */
	RAFT_READ_LOST,    /* leadership lost before confirmation: retry */
};

struct raft_read {
	uint64_t id;
	uint64_t index;
	int status; /* enum raft_read_status */
};

struct raft_soft_state {
	raft_id leader;
	int role; /* enum raft_role */
	uint64_t term;
};

/*
 * The snapshot contract (metadata-only InstallSnapshot, docs/raft.md).
 *
 * The snapshot's bytes are the application's: the core never sees them.
 *
 * Sender (leader). When a peer needs entries the leader has compacted, the
 * core emits one RAFT_MSG_SNAPSHOT naming (index, term, conf) of its log
 * base and puts the peer in RAFT_PROGRESS_SNAPSHOT, where nothing else is
 * sent to it. The application sends the message's metadata and streams the
 * bytes of its snapshot AT EXACTLY that index beside it (node-level chunk
 * frames). If it no longer has that snapshot, or the transfer fails (peer
 * unreachable, bytes rejected), it steps RAFT_EV_SNAPSHOT_STATUS{peer,
 * ok=false}; the core then probes again and, if the peer still lags behind
 * the log base, names the newest snapshot. When the transfer succeeded it
 * may step ok=true (that also frees the peer should the acknowledgement be
 * lost). Either way the peer goes back to RAFT_PROGRESS_PROBE.
 *
 * Receiver (follower). The application buffers the chunks and hands the
 * core the RAFT_MSG_SNAPSHOT (RAFT_EV_RECEIVE) only once every byte has
 * arrived and been verified. If the core accepts it, the next update has
 * u.snapshot set: the application must install those bytes as its state
 * machine and make snapshot + metadata durable, discarding every stored log
 * entry, BEFORE it persists u.entries of the same update (which then start
 * at snapshot->index + 1), before it sends u.msgs_after_persist (the
 * acknowledgement is there), and before it applies any later committed
 * entry. If u.snapshot is NULL after handing the message in, the core
 * ignored it (stale, or the log already held that point) and the bytes are
 * dropped.
 */
struct raft_snapshot_meta {
	uint64_t index; /* last entry the snapshot covers */
	uint64_t term;  /* its term */
	struct raft_config_members conf; /* membership as of index */
};

struct raft_update {
	bool hard_state_changed;
	struct raft_hard_state hard_state;
	bool soft_state_changed;
	struct raft_soft_state soft_state;

	/* Entries to append to stable storage. Storage must first drop every
	 * stored entry with index >= entries[0].index (a conflicting suffix a
	 * new leader overwrote, §3.5), then append these in order. */
	uint32_t n_entries;
	const struct raft_entry *entries;

	/* Send now: they do not depend on anything unpersisted (§10.2.1 lets
	 * the leader replicate before its own write completes). */
	uint32_t n_msgs;
	const struct raft_msg *msgs;
	/* Send only after hard_state and entries of this update (and of every
	 * earlier update) are durable: votes, append acknowledgements. */
	uint32_t n_msgs_after_persist;
	const struct raft_msg *msgs_after_persist;

	/* Committed and durable here: apply in order. */
	uint32_t n_committed;
	const struct raft_entry *committed;

	/* Read requests whose read point is now known. */
	uint32_t n_reads;
	const struct raft_read *reads;

	/* Install this snapshot first (see "The snapshot contract"); NULL
	 * when there is none. committed never holds entries it covers. */
	const struct raft_snapshot_meta *snapshot;
};

struct raft; /* opaque */

/* Creates a node at term 0 with an empty log. Returns NULL on allocation
 * failure or a config that fails validation (see raft_config_validate). */
struct raft *raft_create(const struct raft_config *cfg);

/* Checks a config; 0 or KEEL_ERR_INVAL. */
int raft_config_validate(const struct raft_config *cfg);

/* Restores state recovered from storage before the first step: the hard
 * state and the durable log (entries copied; indexes must be contiguous
 * and start at 1). Every restored entry counts as persisted. */
int raft_restore(struct raft *r, const struct raft_hard_state *hs,
		 const struct raft_entry *entries, uint32_t n);

/* Like raft_restore, for storage that holds a snapshot: the log's base is
 * (snap_index, snap_term) and entries (copied) start at snap_index + 1.
 * conf is the snapshot's membership, or NULL; membership changes do not
 * exist yet, so a conf other than the configured members (as a set) is
 * KEEL_ERR_INVAL. commit and applied start at snap_index (commit at
 * hs->commit when that is later and held). snap_index 0 needs snap_term 0
 * and is raft_restore. Returns 0, KEEL_ERR_INVAL or KEEL_ERR_NOMEM. */
int raft_restore_snapshot(struct raft *r, const struct raft_hard_state *hs,
			  uint64_t snap_index, uint64_t snap_term,
			  const struct raft_config_members *conf,
			  const struct raft_entry *entries, uint32_t n);

/* Log compaction (§5.1 of the thesis, chapter 5): the application's state
 * machine has a durable snapshot of every entry up to index, so the core
 * may drop them; (index, term of index) becomes the log's base, and
 * raft_term_at / raft_entry_at answer KEEL_ERR_COMPACTED below it. Only
 * applied entries (handed out in u.committed and advanced past; those are
 * persisted too) may go. Not between raft_ready and raft_advance. Returns
 *   0                    done (also when index is the base already)
 *   KEEL_ERR_COMPACTED   index is below the base
 *   KEEL_ERR_INVAL       index beyond the applied index, or an update is
 *                        outstanding */
int raft_compact(struct raft *r, uint64_t index);

void raft_destroy(struct raft *r);

/* Feeds one event. Returns 0, or:
 *   KEEL_ERR_NOT_LEADER  propose/read on a non-leader (soft state says who)
 *   KEEL_ERR_TRANSFER    propose while handing leadership over
 *   KEEL_ERR_BUSY        propose above max_uncommitted_bytes
 *   KEEL_ERR_NOMEM       allocation failed; the node's state is unchanged
 *                        for the failed event
 *   KEEL_ERR_INVAL       malformed event
 * Messages with a stale term or from unknown nodes are dropped (0). */
int raft_step(struct raft *r, const struct raft_event *ev);

/* True when there is work; fills *u (borrowed, see above). */
bool raft_ready(struct raft *r, struct raft_update *u);

/* Tells the core that u (from the last raft_ready) was taken: messages are
 * handed off, committed entries and reads handed to the application. */
void raft_advance(struct raft *r, const struct raft_update *u);

/* ---- inspection (tests, status, INFO) ------------------------------------ */

enum raft_progress_state {
	RAFT_PROGRESS_PROBE = 0,
	RAFT_PROGRESS_REPLICATE,
	RAFT_PROGRESS_SNAPSHOT, /* waiting for a snapshot to be installed */
};

struct raft_peer_status {
	raft_id id;
	uint64_t match;
	uint64_t next;
	int state; /* enum raft_progress_state */
	uint32_t inflight_msgs;
	uint64_t inflight_bytes;
	bool recent_active;
	uint64_t pending_snapshot; /* snapshot state: index sent */
};

struct raft_status {
	raft_id id;
	int role;
	uint64_t term;
	raft_id vote;
	raft_id leader;
	uint64_t commit;
	uint64_t applied;   /* handed out through committed */
	uint64_t persisted;
	uint64_t snap_index; /* log base: first_index - 1 */
	uint64_t snap_term;
	uint64_t first_index;
	uint64_t last_index;
	uint64_t last_term;
	raft_id transferee;
	uint64_t uncommitted_bytes;
	uint32_t n_peers;
	struct raft_peer_status peers[RAFT_MAX_VOTERS]; /* leader only */
};

void raft_status(const struct raft *r, struct raft_status *st);

/* Term of the entry at index (0 for index 0; the base's term at the log
 * base), or 0 with KEEL_ERR_COMPACTED (below the base) / KEEL_ERR_UNAVAILABLE
 * (beyond the last entry) through *err. */
uint64_t raft_term_at(const struct raft *r, uint64_t index, int *err);

/* Borrowed pointer to the entry at index, or NULL (compacted, the base
 * itself, or beyond the last entry). Valid until the next step. */
const struct raft_entry *raft_entry_at(const struct raft *r, uint64_t index);

/* Checks the core's local invariants; aborts with a message on a
 * violation. Called after every step in test and simulator builds. */
void raft_check_invariants(const struct raft *r);

/* Test-only: planted bugs for the simulator's mutation runs. Compiled in
 * only with -DKEEL_MUTANTS; otherwise these flags do not exist. */
#ifdef KEEL_MUTANTS
enum raft_mutant {
	RAFT_MUTANT_NONE = 0,
	RAFT_MUTANT_VOTE_NO_LOG_CHECK = 1,  /* grant votes ignoring §5.4.1 */
	RAFT_MUTANT_COMMIT_OLD_TERM = 2,    /* count old-term entries, Fig 8 */
	RAFT_MUTANT_READ_NO_CONFIRM = 3,    /* ReadIndex without heartbeat */
	RAFT_MUTANT_ACK_BEFORE_PERSIST = 4, /* leader counts itself early */
};
void raft_set_mutant(struct raft *r, int mutant);
#endif

#endif /* KEEL_RAFT_H */
