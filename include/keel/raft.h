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
 * Ownership: everything passed into raft_step stays the caller's; the core
 * copies what it keeps (proposal data, received entries). Everything in a
 * struct raft_update is borrowed from the core and stays valid until the
 * next call of raft_step, raft_ready or raft_advance on the same instance;
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
	RAFT_MSG_TYPE_COUNT = 10,
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
 */
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
};

struct raft_peer_status {
	raft_id id;
	uint64_t match;
	uint64_t next;
	int state; /* enum raft_progress_state */
	uint32_t inflight_msgs;
	uint64_t inflight_bytes;
	bool recent_active;
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
	uint64_t first_index;
	uint64_t last_index;
	uint64_t last_term;
	raft_id transferee;
	uint64_t uncommitted_bytes;
	uint32_t n_peers;
	struct raft_peer_status peers[RAFT_MAX_VOTERS]; /* leader only */
};

void raft_status(const struct raft *r, struct raft_status *st);

/* Term of the entry at index (0 for index 0), or KEEL_ERR_COMPACTED /
 * KEEL_ERR_UNAVAILABLE through *err. */
uint64_t raft_term_at(const struct raft *r, uint64_t index, int *err);

/* Borrowed pointer to the entry at index, or NULL. Valid until the next
 * step. */
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
