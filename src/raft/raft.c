/*
 * raft.c -- keel's Raft core: election (with PreVote and CheckQuorum), log
 * replication with per-peer flow control, the commit rule, ReadIndex and
 * leadership transfer, as a pure event-driven state machine.
 *
 * Shape: raft_step() applies one event to the state and queues outgoing
 * messages; raft_ready() collects what the application must do; the
 * application persists, sends, applies and calls raft_advance(). Nothing
 * here does I/O, reads a clock or calls the system allocator directly. The
 * rules and their thesis sections are listed in docs/raft.md; the comments
 * below cite them (Ongaro, "Consensus: Bridging Theory and Practice", 2014).
 *
 * Log compaction and InstallSnapshot (thesis chapter 5): the application
 * compacts with raft_compact(); a peer that needs a compacted entry gets a
 * metadata-only RAFT_MSG_SNAPSHOT while the application moves the bytes
 * (the contract is in raft.h).
 *
 * Known limits: no membership changes (the configuration is fixed at
 * creation, so a snapshot's membership is always that configuration), and
 * reads on a follower are refused (the node forwards them to the leader).
 */
#include <string.h>

#include "keel/raft.h"
#include "raft/log.h"

#define MAX_PENDING_READS 65536

enum vote_state { VOTE_UNKNOWN = 0, VOTE_GRANTED, VOTE_REJECTED };

struct progress {
	raft_id id;
	bool voter;
	/* Invariant: match < next. match is the highest index known to be
	 * replicated on the peer; next the next index to send. */
	uint64_t match;
	uint64_t next;
	int state;          /* enum raft_progress_state */
	bool probe_sent;    /* probe state: one probe outstanding, pause */
	bool recent_active; /* heard from it this election timeout (§6.2) */
	int vote;           /* enum vote_state, current election */
	uint64_t read_ack;  /* highest read round it confirmed this term */
	uint64_t sent_commit; /* highest commit index told to it */
	/* Snapshot state: the log base named in the RAFT_MSG_SNAPSHOT sent;
	 * 0 in the other states. */
	uint64_t pending_snapshot;
	/* In-flight appends (replicate state): a ring of the last index and
	 * entry bytes of each, freed as acknowledgements arrive. */
	uint64_t *infl_last;
	uint64_t *infl_bytes;
	uint32_t infl_head;
	uint32_t infl_count;
	uint64_t infl_total_bytes;
};

struct pending_read {
	uint64_t id;
	uint64_t index; /* commit index when the round was started */
	uint64_t round; /* 0 = waiting for a round */
};

struct msg_vec {
	struct raft_msg *v;
	uint32_t n, cap;
};

struct raft {
	struct raft_config cfg;
	const struct keel_alloc *alloc;
	struct keel_rand rand;
#ifdef KEEL_MUTANTS
	int mutant;
#endif

	/* Persistent state (§3.8, Figure 3.1). */
	uint64_t term;
	raft_id vote;
	uint64_t commit;

	/* Volatile state. */
	int role;
	raft_id leader;
	struct raft_log log;
	/* The membership a snapshot at the log base covers. Configuration is
	 * fixed, so this is cfg.members; outgoing RAFT_MSG_SNAPSHOTs point
	 * here. */
	struct raft_config_members snap_conf;
	/* A received snapshot the application must install (u.snapshot),
	 * pending until raft_advance. */
	struct raft_snapshot_meta install;
	bool install_pending;
	/* Invariant: snap_index <= applied <= commit, applied <= persisted. */
	uint64_t applied;   /* handed to the application */
	uint64_t persisted; /* durable here, reported by RAFT_EV_PERSISTED */
	uint64_t persist_sent; /* handed out for persistence */

	uint32_t election_elapsed;
	uint32_t heartbeat_elapsed;
	uint32_t randomized_election_ticks;

	/* Members other than this node; self is tracked by the fields above. */
	uint32_t n_peers;
	struct progress peers[RAFT_MAX_VOTERS];
	bool self_voter;
	uint32_t n_voters; /* including self when a voter */

	/* Leader state. */
	raft_id transferee;
	uint64_t uncommitted_bytes;
	uint64_t read_round; /* last read round started this term */
	struct pending_read *reads;
	uint32_t n_reads, cap_reads;

	/* Outputs, drained by raft_advance. */
	struct msg_vec msgs;
	struct msg_vec msgs_ap;
	struct raft_read *reads_out;
	uint32_t n_reads_out, cap_reads_out;
	struct raft_hard_state prev_hs;
	struct raft_soft_state prev_ss;
	/* What the last raft_ready handed out, checked by raft_advance. */
	uint64_t ready_entries_last;
	uint64_t ready_committed_last;
	bool ready_pending;
};

/* ---- names ------------------------------------------------------------- */

const char *raft_role_name(enum raft_role role)
{
	switch (role) {
	case RAFT_FOLLOWER:
		return "follower";
	case RAFT_PRE_CANDIDATE:
		return "pre-candidate";
	case RAFT_CANDIDATE:
		return "candidate";
	case RAFT_LEADER:
		return "leader";
	}
	return "?";
}

const char *raft_msg_type_name(int type)
{
	static const char *const names[RAFT_MSG_TYPE_COUNT] = {
		"None",      "PreVote",       "PreVoteResp", "Vote",
		"VoteResp",  "App",           "AppResp",     "Heartbeat",
		"HeartbeatResp", "TimeoutNow",  "Snapshot",
	};
	if (type < 0 || type >= RAFT_MSG_TYPE_COUNT)
		return "?";
	return names[type];
}

/* ---- configuration ----------------------------------------------------- */

void raft_config_default(struct raft_config *c, raft_id id)
{
	memset(c, 0, sizeof(*c));
	c->id = id;
	c->election_ticks = 10;
	c->heartbeat_ticks = 1;
	c->seed = id;
	c->pre_vote = true;
	c->check_quorum = true;
	c->max_inflight_msgs = 64;
	c->max_inflight_bytes = 0;
	c->max_msg_bytes = 1u << 20;
	c->max_msg_entries = 4096;
	c->max_uncommitted_bytes = 64u << 20;
	c->alloc = NULL;
}

static bool members_contain(const raft_id *ids, uint32_t n, raft_id id)
{
	for (uint32_t i = 0; i < n; i++)
		if (ids[i] == id)
			return true;
	return false;
}

int raft_config_validate(const struct raft_config *c)
{
	const struct raft_config_members *m = &c->members;
	if (c->id == RAFT_NONE)
		return KEEL_ERR_INVAL;
	if (m->n_voters == 0 || m->n_voters + m->n_learners > RAFT_MAX_VOTERS)
		return KEEL_ERR_INVAL;
	if (c->election_ticks < 2 || c->heartbeat_ticks == 0 ||
	    c->heartbeat_ticks >= c->election_ticks)
		return KEEL_ERR_INVAL;
	if (c->max_inflight_msgs == 0 || c->max_msg_entries == 0 ||
	    c->max_msg_bytes == 0)
		return KEEL_ERR_INVAL;
	for (uint32_t i = 0; i < m->n_voters; i++) {
		if (m->voters[i] == RAFT_NONE ||
		    members_contain(m->voters, i, m->voters[i]))
			return KEEL_ERR_INVAL;
	}
	for (uint32_t i = 0; i < m->n_learners; i++) {
		if (m->learners[i] == RAFT_NONE ||
		    members_contain(m->voters, m->n_voters, m->learners[i]) ||
		    members_contain(m->learners, i, m->learners[i]))
			return KEEL_ERR_INVAL;
	}
	if (!members_contain(m->voters, m->n_voters, c->id) &&
	    !members_contain(m->learners, m->n_learners, c->id))
		return KEEL_ERR_INVAL;
	return 0;
}

/* ---- small helpers ----------------------------------------------------- */

static uint32_t quorum(const struct raft *r)
{
	return r->n_voters / 2 + 1;
}

static struct progress *peer(struct raft *r, raft_id id)
{
	for (uint32_t i = 0; i < r->n_peers; i++)
		if (r->peers[i].id == id)
			return &r->peers[i];
	return NULL;
}

static uint64_t last_index(const struct raft *r)
{
	return raft_log_last(&r->log);
}

static uint64_t last_term(const struct raft *r)
{
	return raft_log_last_term(&r->log);
}

static uint64_t term_at(const struct raft *r, uint64_t index)
{
	bool ok;
	uint64_t t = raft_log_term(&r->log, index, &ok);
	return ok ? t : 0;
}

static void reset_randomized_timeout(struct raft *r)
{
	r->randomized_election_ticks =
		r->cfg.election_ticks +
		(uint32_t)keel_rand_below(&r->rand, r->cfg.election_ticks);
}

static int grow(const struct keel_alloc *a, void **p, uint32_t *cap,
		uint32_t need, size_t elem)
{
	if (need <= *cap)
		return 0;
	uint32_t c = *cap ? *cap : 16;
	while (c < need)
		c *= 2;
	void *np = a->realloc(a->ctx, *p, (size_t)c * elem);
	if (!np)
		return KEEL_ERR_NOMEM;
	*p = np;
	*cap = c;
	return 0;
}

/* ---- outgoing messages ------------------------------------------------- */

/* Queues a message. Leader replication traffic goes out at once (§10.2.1:
 * the leader may send before its own write is durable); everything else --
 * votes, acknowledgements, rejections -- speaks for state that must be
 * durable first, so it waits for this update's persistence. Out of memory
 * drops the message: the network may lose messages anyway, and Raft
 * retries. */
static void send(struct raft *r, struct raft_msg m)
{
	m.from = r->cfg.id;
	if (m.term == 0)
		m.term = r->term;
	bool now = r->role == RAFT_LEADER &&
		   (m.type == RAFT_MSG_APPEND || m.type == RAFT_MSG_HEARTBEAT ||
		    m.type == RAFT_MSG_TIMEOUT_NOW ||
		    m.type == RAFT_MSG_SNAPSHOT);
	struct msg_vec *q = now ? &r->msgs : &r->msgs_ap;
	if (grow(r->alloc, (void **)&q->v, &q->cap, q->n + 1, sizeof(m)))
		return;
	q->v[q->n++] = m;
}

/* Queued appends reference log entries by index (raft_ready points them
 * at the log); dropping entries lo..hi from the log -- a truncated suffix,
 * a compacted prefix, the whole log under a snapshot -- would leave them
 * describing entries that no longer exist, so they go too: to the peer
 * it looks like a lost message, which Raft retries. */
static void drop_queued_appends(struct raft *r, uint64_t lo, uint64_t hi)
{
	struct msg_vec *q = &r->msgs;
	uint32_t w = 0;
	for (uint32_t i = 0; i < q->n; i++) {
		const struct raft_msg *m = &q->v[i];
		if (m->type == RAFT_MSG_APPEND && m->n_entries > 0 &&
		    m->index + 1 <= hi && m->index + m->n_entries >= lo)
			continue;
		q->v[w++] = q->v[i];
	}
	q->n = w;
}

/* ---- flow control (per-peer in-flight window) --------------------------- */

static bool infl_full(const struct raft *r, const struct progress *p)
{
	if (p->infl_count >= r->cfg.max_inflight_msgs)
		return true;
	if (r->cfg.max_inflight_bytes &&
	    p->infl_total_bytes >= r->cfg.max_inflight_bytes)
		return true;
	return false;
}

static void infl_add(struct raft *r, struct progress *p, uint64_t last,
		     uint64_t bytes)
{
	KEEL_ASSERT(p->infl_count < r->cfg.max_inflight_msgs);
	uint32_t slot = (p->infl_head + p->infl_count) % r->cfg.max_inflight_msgs;
	p->infl_last[slot] = last;
	p->infl_bytes[slot] = bytes;
	p->infl_count++;
	p->infl_total_bytes += bytes;
}

/* Frees every in-flight append whose last index is <= index. */
static void infl_free_to(struct raft *r, struct progress *p, uint64_t index)
{
	while (p->infl_count > 0 && p->infl_last[p->infl_head] <= index) {
		p->infl_total_bytes -= p->infl_bytes[p->infl_head];
		p->infl_head = (p->infl_head + 1) % r->cfg.max_inflight_msgs;
		p->infl_count--;
	}
	if (p->infl_count == 0)
		p->infl_head = 0;
}

/* Frees the oldest in-flight append (etcd's FreeFirstOne). */
static void infl_free_first(struct raft *r, struct progress *p)
{
	KEEL_ASSERT(p->infl_count > 0);
	p->infl_total_bytes -= p->infl_bytes[p->infl_head];
	p->infl_head = (p->infl_head + 1) % r->cfg.max_inflight_msgs;
	p->infl_count--;
	if (p->infl_count == 0)
		p->infl_head = 0;
}

static void infl_reset(struct progress *p)
{
	p->infl_head = 0;
	p->infl_count = 0;
	p->infl_total_bytes = 0;
}

static void become_probe(struct progress *p)
{
	p->state = RAFT_PROGRESS_PROBE;
	p->probe_sent = false;
	p->pending_snapshot = 0;
	infl_reset(p);
	p->next = p->match + 1;
}

static void become_replicate(struct progress *p)
{
	p->state = RAFT_PROGRESS_REPLICATE;
	p->probe_sent = false;
	p->pending_snapshot = 0;
	infl_reset(p);
	p->next = p->match + 1;
}

/* The peer needs entries up to index that the log no longer has. Nothing
 * else goes to it until it acknowledges or the application reports the
 * transfer's outcome (etcd's StateSnapshot). next is optimistic, as in
 * replicate state. */
static void become_snapshot(struct progress *p, uint64_t index)
{
	KEEL_ASSERT(index > p->match);
	p->state = RAFT_PROGRESS_SNAPSHOT;
	p->probe_sent = false;
	p->pending_snapshot = index;
	infl_reset(p);
	p->next = index + 1;
}

static bool progress_paused(const struct raft *r, const struct progress *p)
{
	if (p->state == RAFT_PROGRESS_PROBE)
		return p->probe_sent;
	if (p->state == RAFT_PROGRESS_SNAPSHOT)
		return true;
	return infl_full(r, p);
}

/* ---- replication -------------------------------------------------------- */

/* Sends the next batch to p if flow control allows (§10.2 pipelining).
 * With send_empty, an append without entries still goes out (to probe or
 * to carry a new commit index). Returns true when a message was sent. */
static bool maybe_send_append(struct raft *r, struct progress *p,
			      bool send_empty)
{
	if (progress_paused(r, p))
		return false;
	uint64_t last = last_index(r);
	KEEL_ASSERT(p->next <= last + 1);
	if (p->next <= r->log.snap_index) {
		/* Chapter 5 (§5.1, Figure 5.3): the entry before next is compacted, so
		 * no append can prove where the logs match. Name the log
		 * base; the application streams its snapshot there. */
		struct raft_msg m = {
			.type = RAFT_MSG_SNAPSHOT,
			.to = p->id,
			.index = r->log.snap_index,
			.log_term = r->log.snap_term,
			.commit = r->commit,
			.conf = &r->snap_conf,
		};
		send(r, m);
		become_snapshot(p, r->log.snap_index);
		return true;
	}
	uint64_t n = 0, bytes = 0;
	while (p->next + n <= last && n < r->cfg.max_msg_entries) {
		uint64_t len = raft_log_get(&r->log, p->next + n)->len;
		if (n > 0 && bytes + len > r->cfg.max_msg_bytes)
			break;
		bytes += len;
		n++;
	}
	if (n == 0 && !send_empty)
		return false;
	struct raft_msg m = {
		.type = RAFT_MSG_APPEND,
		.to = p->id,
		.index = p->next - 1,
		.log_term = term_at(r, p->next - 1),
		.commit = r->commit,
		.n_entries = (uint32_t)n,
	};
	send(r, m);
	p->sent_commit = KEEL_MAX(p->sent_commit, r->commit);
	if (p->state == RAFT_PROGRESS_REPLICATE) {
		if (n > 0) {
			/* Optimistic: assume it arrives, keep the pipe full. */
			p->next += n;
			infl_add(r, p, p->next - 1, bytes);
		}
	} else {
		p->probe_sent = true;
	}
	return true;
}

static void bcast_append(struct raft *r)
{
	for (uint32_t i = 0; i < r->n_peers; i++)
		maybe_send_append(r, &r->peers[i], true);
}

static void bcast_heartbeat(struct raft *r)
{
	for (uint32_t i = 0; i < r->n_peers; i++) {
		struct progress *p = &r->peers[i];
		/* §3.5 commit safety: never tell a follower to commit past
		 * what it is known to hold. */
		struct raft_msg m = {
			.type = RAFT_MSG_HEARTBEAT,
			.to = p->id,
			.commit = KEEL_MIN(p->match, r->commit),
			.context = r->read_round,
		};
		send(r, m);
		p->sent_commit = KEEL_MAX(p->sent_commit, m.commit);
	}
}

/* The index a majority of voters has durably: the leader counts itself
 * only up to its own persisted index (§10.2.1). */
static uint64_t quorum_match(const struct raft *r)
{
	uint64_t v[RAFT_MAX_VOTERS];
	uint32_t n = 0;
	if (r->self_voter) {
		uint64_t self = r->persisted;
#ifdef KEEL_MUTANTS
		if (r->mutant == RAFT_MUTANT_ACK_BEFORE_PERSIST)
			self = last_index(r);
#endif
		v[n++] = self;
	}
	for (uint32_t i = 0; i < r->n_peers; i++)
		if (r->peers[i].voter)
			v[n++] = r->peers[i].match;
	KEEL_ASSERT(n == r->n_voters);
	/* Partial selection sort: the quorum()-th largest. */
	for (uint32_t i = 0; i < quorum(r); i++)
		for (uint32_t j = i + 1; j < n; j++)
			if (v[j] > v[i]) {
				uint64_t t = v[i];
				v[i] = v[j];
				v[j] = t;
			}
	return v[quorum(r) - 1];
}

static void release_reads(struct raft *r);

/* Advances the commit index if a majority holds an entry of the current
 * term. §3.6.2 / Figure 3.7 (Figure 8 of the paper): an entry of an older
 * term is never committed by counting replicas, only indirectly. */
static bool maybe_commit(struct raft *r)
{
	uint64_t mci = quorum_match(r);
	if (mci <= r->commit)
		return false;
	bool current_term = term_at(r, mci) == r->term;
#ifdef KEEL_MUTANTS
	if (r->mutant == RAFT_MUTANT_COMMIT_OLD_TERM)
		current_term = true;
#endif
	if (!current_term)
		return false;
	for (uint64_t i = r->commit + 1; i <= mci; i++) {
		uint64_t len = raft_log_get(&r->log, i)->len;
		r->uncommitted_bytes -= KEEL_MIN(len, r->uncommitted_bytes);
	}
	r->commit = mci;
	return true;
}

/* ---- reads (§6.4 ReadIndex) -------------------------------------------- */

static int push_read_out(struct raft *r, uint64_t id, uint64_t index,
			 int status)
{
	int rv = grow(r->alloc, (void **)&r->reads_out, &r->cap_reads_out,
		      r->n_reads_out + 1, sizeof(*r->reads_out));
	if (rv)
		return rv;
	r->reads_out[r->n_reads_out++] =
		(struct raft_read){.id = id, .index = index, .status = status};
	return 0;
}

/* Leadership lost: every pending read fails so its client can retry. */
static void fail_reads(struct raft *r)
{
	for (uint32_t i = 0; i < r->n_reads; i++)
		push_read_out(r, r->reads[i].id, 0, RAFT_READ_LOST);
	r->n_reads = 0;
	r->read_round = 0;
}

static bool committed_in_term(const struct raft *r)
{
	return term_at(r, r->commit) == r->term;
}

/* Starts one heartbeat round for every read waiting for one. §6.4: the
 * read index is the commit index at this point, valid only once the
 * leader has committed an entry of its own term. */
static void start_read_round(struct raft *r)
{
	if (r->role != RAFT_LEADER || !committed_in_term(r))
		return;
	bool any = false;
	for (uint32_t i = 0; i < r->n_reads; i++)
		if (r->reads[i].round == 0)
			any = true;
	if (!any)
		return;
	r->read_round++;
	for (uint32_t i = 0; i < r->n_reads; i++) {
		if (r->reads[i].round == 0) {
			r->reads[i].round = r->read_round;
			r->reads[i].index = r->commit;
		}
	}
	bool confirm = true;
#ifdef KEEL_MUTANTS
	if (r->mutant == RAFT_MUTANT_READ_NO_CONFIRM)
		confirm = false;
#endif
	if (confirm && r->n_voters > 1)
		bcast_heartbeat(r);
	release_reads(r);
}

/* Releases every read whose round a majority has confirmed. */
static void release_reads(struct raft *r)
{
	uint64_t v[RAFT_MAX_VOTERS];
	uint32_t n = 0;
	if (r->self_voter)
		v[n++] = r->read_round;
	for (uint32_t i = 0; i < r->n_peers; i++)
		if (r->peers[i].voter)
			v[n++] = r->peers[i].read_ack;
	for (uint32_t i = 0; i < quorum(r); i++)
		for (uint32_t j = i + 1; j < n; j++)
			if (v[j] > v[i]) {
				uint64_t t = v[i];
				v[i] = v[j];
				v[j] = t;
			}
	uint64_t confirmed = v[quorum(r) - 1];
#ifdef KEEL_MUTANTS
	if (r->mutant == RAFT_MUTANT_READ_NO_CONFIRM)
		confirmed = r->read_round;
#endif
	uint32_t w = 0;
	for (uint32_t i = 0; i < r->n_reads; i++) {
		struct pending_read *pr = &r->reads[i];
		if (pr->round != 0 && pr->round <= confirmed &&
		    push_read_out(r, pr->id, pr->index, RAFT_READ_OK) == 0)
			continue;
		r->reads[w++] = *pr;
	}
	r->n_reads = w;
}

/* ---- role changes -------------------------------------------------------- */

static void reset(struct raft *r, uint64_t term)
{
	if (r->term != term) {
		r->term = term;
		r->vote = RAFT_NONE;
	}
	r->leader = RAFT_NONE;
	r->election_elapsed = 0;
	r->heartbeat_elapsed = 0;
	reset_randomized_timeout(r);
	r->transferee = RAFT_NONE;
	if (r->n_reads)
		fail_reads(r);
	r->read_round = 0;
	for (uint32_t i = 0; i < r->n_peers; i++) {
		struct progress *p = &r->peers[i];
		p->match = 0;
		p->next = last_index(r) + 1;
		p->vote = VOTE_UNKNOWN;
		p->read_ack = 0;
		p->sent_commit = 0;
		p->recent_active = false;
		become_probe(p);
		p->next = last_index(r) + 1;
	}
	r->uncommitted_bytes = 0;
}

static void become_follower(struct raft *r, uint64_t term, raft_id leader)
{
	reset(r, term);
	r->role = RAFT_FOLLOWER;
	r->leader = leader;
}

static void become_pre_candidate(struct raft *r)
{
	KEEL_ASSERT(r->role != RAFT_LEADER);
	/* §9.6: a pre-vote changes neither term nor vote. */
	uint64_t term = r->term;
	raft_id vote = r->vote;
	reset(r, term);
	r->vote = vote;
	r->role = RAFT_PRE_CANDIDATE;
}

static void become_candidate(struct raft *r)
{
	KEEL_ASSERT(r->role != RAFT_LEADER);
	reset(r, r->term + 1);
	r->vote = r->cfg.id;
	r->role = RAFT_CANDIDATE;
}

static void become_leader(struct raft *r)
{
	KEEL_ASSERT(r->role == RAFT_CANDIDATE);
	reset(r, r->term);
	r->role = RAFT_LEADER;
	r->leader = r->cfg.id;
	for (uint32_t i = 0; i < r->n_peers; i++)
		r->peers[i].recent_active = true;
	/* §6.4 / §5.4.2: a no-op of the new term lets the leader commit (and
	 * learn the commit index of) everything before it, and serve reads. */
	struct raft_entry noop = {
		.term = r->term,
		.index = last_index(r) + 1,
		.type = RAFT_ENTRY_NOOP,
	};
	if (raft_log_append(&r->log, &noop, 1) != 0) {
		/* Without the no-op this term could never serve a read or
		 * commit safely; give the election back instead. */
		become_follower(r, r->term, RAFT_NONE);
		return;
	}
	bcast_append(r);
	/* A single voter commits on its own persistence. */
	maybe_commit(r);
}

/* ---- elections ----------------------------------------------------------- */

static bool promotable(const struct raft *r)
{
	return r->self_voter;
}

/* Tallies a vote; returns VOTE_GRANTED / VOTE_REJECTED once decided. */
static int tally(struct raft *r, raft_id from, bool granted)
{
	struct progress *p = peer(r, from);
	if (p && p->voter && p->vote == VOTE_UNKNOWN)
		p->vote = granted ? VOTE_GRANTED : VOTE_REJECTED;
	uint32_t yes = r->self_voter ? 1 : 0, no = 0;
	for (uint32_t i = 0; i < r->n_peers; i++) {
		if (!r->peers[i].voter)
			continue;
		if (r->peers[i].vote == VOTE_GRANTED)
			yes++;
		else if (r->peers[i].vote == VOTE_REJECTED)
			no++;
	}
	if (yes >= quorum(r))
		return VOTE_GRANTED;
	if (no > r->n_voters - quorum(r))
		return VOTE_REJECTED;
	return VOTE_UNKNOWN;
}

static void campaign(struct raft *r, bool pre, bool transfer)
{
	if (!promotable(r))
		return;
	uint64_t term;
	int type;
	if (pre) {
		become_pre_candidate(r);
		term = r->term + 1; /* the term it would run in */
		type = RAFT_MSG_PREVOTE;
	} else {
		become_candidate(r);
		term = r->term;
		type = RAFT_MSG_VOTE;
	}
	if (tally(r, r->cfg.id, true) == VOTE_GRANTED) {
		/* A single voter wins at once. */
		if (pre)
			campaign(r, false, transfer);
		else
			become_leader(r);
		return;
	}
	for (uint32_t i = 0; i < r->n_peers; i++) {
		if (!r->peers[i].voter)
			continue;
		struct raft_msg m = {
			.type = (uint8_t)type,
			.to = r->peers[i].id,
			.term = term,
			.log_term = last_term(r),
			.index = last_index(r),
			.transfer = transfer,
		};
		send(r, m);
	}
}

/* §5.4.1: grant only to a candidate whose log is at least as up to date. */
static bool log_up_to_date(const struct raft *r, uint64_t lterm, uint64_t lidx)
{
#ifdef KEEL_MUTANTS
	if (r->mutant == RAFT_MUTANT_VOTE_NO_LOG_CHECK)
		return true;
#endif
	if (lterm != last_term(r))
		return lterm > last_term(r);
	return lidx >= last_index(r);
}

static void handle_vote(struct raft *r, const struct raft_msg *m)
{
	bool pre = m->type == RAFT_MSG_PREVOTE;
	/* May vote: already voted for it (a retransmission), or not voted
	 * and no leader known this term, or a pre-vote for a later term. */
	bool can = r->vote == m->from ||
		   (r->vote == RAFT_NONE && r->leader == RAFT_NONE) ||
		   (pre && m->term > r->term);
	struct raft_msg resp = {
		.type = pre ? RAFT_MSG_PREVOTE_RESP : RAFT_MSG_VOTE_RESP,
		.to = m->from,
	};
	if (can && log_up_to_date(r, m->log_term, m->index)) {
		/* A granted pre-vote answers in the asked term so the
		 * pre-candidate can count it; it changes nothing here. */
		resp.term = m->term;
		if (!pre) {
			r->election_elapsed = 0;
			r->vote = m->from;
		}
	} else {
		resp.term = r->term;
		resp.reject = true;
	}
	send(r, resp);
}

/* ---- follower side of replication ------------------------------------- */

/* Largest index <= index whose term is <= term: where the logs may agree.
 * Used on both sides for fast backtracking (etcd's findConflictByTerm). */
static uint64_t find_conflict_by_term(const struct raft *r, uint64_t index,
				      uint64_t term)
{
	if (index > last_index(r))
		index = last_index(r);
	while (index > r->log.snap_index && term_at(r, index) > term)
		index--;
	return index;
}

static void commit_to(struct raft *r, uint64_t commit)
{
	if (commit > r->commit) {
		KEEL_ASSERT(commit <= last_index(r));
		r->commit = commit;
	}
}

static void handle_append(struct raft *r, const struct raft_msg *m)
{
	struct raft_msg resp = {.type = RAFT_MSG_APPEND_RESP, .to = m->from};
	if (m->index < r->commit) {
		/* Already committed here: tell the leader where we are. */
		resp.index = r->commit;
		send(r, resp);
		return;
	}
	bool ok;
	uint64_t t = raft_log_term(&r->log, m->index, &ok);
	if (!ok || t != m->log_term) {
		/* §3.5 log matching failed. Hint: the last index that could
		 * match, and its term, so the leader can skip a whole term. */
		uint64_t hint = find_conflict_by_term(
			r, KEEL_MIN(m->index, last_index(r)), m->log_term);
		resp.reject = true;
		resp.index = m->index;
		resp.hint_index = hint;
		resp.hint_term = term_at(r, hint);
		send(r, resp);
		return;
	}
	/* Find the first new entry that is not already in the log. */
	uint32_t skip = 0;
	while (skip < m->n_entries) {
		const struct raft_entry *e = &m->entries[skip];
		bool have;
		uint64_t et = raft_log_term(&r->log, e->index, &have);
		if (!have || et != e->term)
			break;
		skip++;
	}
	if (skip < m->n_entries) {
		uint64_t from = m->entries[skip].index;
		if (from <= last_index(r)) {
			/* §3.5: a conflicting suffix is deleted. A committed
			 * entry can never conflict (Leader Completeness). */
			KEEL_ASSERT(from > r->commit);
			raft_log_truncate(&r->log, from);
			drop_queued_appends(r, from, UINT64_MAX);
			if (r->persisted >= from)
				r->persisted = from - 1;
			if (r->persist_sent >= from)
				r->persist_sent = from - 1;
		}
		if (raft_log_append(&r->log, &m->entries[skip],
				    m->n_entries - skip) != 0) {
			/* Out of memory: answer nothing; the leader
			 * retransmits. */
			return;
		}
	}
	uint64_t last_new = m->index + m->n_entries;
	commit_to(r, KEEL_MIN(m->commit, last_new));
	resp.index = last_new;
	send(r, resp);
}

static bool ids_subset(const raft_id *a, uint32_t na, const raft_id *b,
		       uint32_t nb)
{
	for (uint32_t i = 0; i < na; i++)
		if (!members_contain(b, nb, a[i]))
			return false;
	return true;
}

/* The same voters and learners, in any order. */
static bool members_equal(const struct raft_config_members *a,
			  const struct raft_config_members *b)
{
	return a->n_voters == b->n_voters && a->n_learners == b->n_learners &&
	       ids_subset(a->voters, a->n_voters, b->voters, b->n_voters) &&
	       ids_subset(a->learners, a->n_learners, b->learners,
			  b->n_learners);
}

/* InstallSnapshot, receiver side (§5.1, Figure 5.3; the bytes arrived
 * beside the message and were verified before it was handed in). */
static void handle_snapshot(struct raft *r, const struct raft_msg *m)
{
	struct raft_msg resp = {.type = RAFT_MSG_APPEND_RESP, .to = m->from};
	if (m->index <= r->commit) {
		/* Stale: everything it covers is committed here already.
		 * Tell the leader where we are, change nothing. */
		resp.index = r->commit;
		send(r, resp);
		return;
	}
	/* Membership changes do not exist yet: a snapshot of another
	 * membership cannot come from this cluster's leader. */
	if (!members_equal(m->conf, &r->snap_conf))
		return;
	bool ok;
	uint64_t t = raft_log_term(&r->log, m->index, &ok);
	if (ok && t == m->log_term) {
		/* Log matching: the log already holds every entry the
		 * snapshot covers, and they are committed (the leader only
		 * snapshots applied state). Keep the log and its suffix,
		 * just commit (etcd's rule); the bytes are not needed. */
		commit_to(r, m->index);
		resp.index = m->index;
		send(r, resp);
		return;
	}
	/* The log does not hold the snapshot point, so nothing in it can be
	 * trusted to follow the snapshot: drop it all and rebase. The state
	 * machine is replaced by the snapshot, so applied jumps too; the
	 * acknowledgement waits in msgs_after_persist for the install. */
	raft_log_reset(&r->log, m->index, m->log_term);
	drop_queued_appends(r, 0, UINT64_MAX);
	r->commit = m->index;
	r->applied = m->index;
	r->persisted = m->index;
	r->persist_sent = m->index;
	r->install = (struct raft_snapshot_meta){
		.index = m->index, .term = m->log_term, .conf = *m->conf};
	r->install_pending = true;
	resp.index = m->index;
	send(r, resp);
}

/* ---- leader side of acknowledgements ----------------------------------- */

static void maybe_send_timeout_now(struct raft *r, struct progress *p)
{
	if (r->transferee == p->id && p->match == last_index(r)) {
		struct raft_msg m = {.type = RAFT_MSG_TIMEOUT_NOW, .to = p->id};
		send(r, m);
	}
}

static void leader_append_resp(struct raft *r, struct progress *p,
			       const struct raft_msg *m)
{
	p->recent_active = true;
	if (p->state == RAFT_PROGRESS_SNAPSHOT) {
		/* Only an acceptance means anything here: a rejection
		 * answers an append sent before the snapshot. */
		if (m->reject)
			return;
		uint64_t match = KEEL_MAX(p->match, m->index);
		if (match < p->pending_snapshot &&
		    match + 1 < raft_log_first(&r->log)) {
			/* Still short of anything the log can serve. */
			if (m->index > p->match) {
				p->match = m->index;
				if (maybe_commit(r)) {
					bcast_append(r);
					start_read_round(r);
				}
			}
			return;
		}
		/* Installed (or the peer turned out to hold the point, or an
		 * acceptance the log can serve from, etcd's Match+1 >=
		 * firstIndex): back to probe. The acceptance below proves
		 * the match at once, so it moves straight on to replicate. */
		become_probe(p);
	}
	if (m->reject) {
		/* Stale rejections (for an index we no longer probe) are
		 * ignored. */
		if (p->state == RAFT_PROGRESS_REPLICATE) {
			if (m->index <= p->match)
				return;
		} else if (m->index != p->next - 1) {
			return;
		}
		uint64_t next = m->index;
		if (m->hint_term > 0)
			next = find_conflict_by_term(r, m->hint_index,
						     m->hint_term);
		else
			next = KEEL_MIN(next, m->hint_index);
		next = KEEL_MIN(next + 1, m->index);
		if (next < p->match + 1)
			next = p->match + 1;
		if (p->state == RAFT_PROGRESS_REPLICATE)
			become_probe(p);
		p->next = next;
		p->probe_sent = false;
		maybe_send_append(r, p, true);
		return;
	}
	bool advanced = false;
	if (m->index > p->match) {
		p->match = m->index;
		advanced = true;
	}
	if (p->next < m->index + 1)
		p->next = m->index + 1;
	if (p->state == RAFT_PROGRESS_PROBE) {
		/* Any acknowledgement that reaches the probe point proves
		 * where the logs match: start streaming. */
		if (advanced || m->index + 1 >= p->next) {
			become_replicate(p);
		} else {
			p->probe_sent = false;
		}
	} else {
		infl_free_to(r, p, m->index);
	}
	if (advanced && maybe_commit(r)) {
		bcast_append(r);
		start_read_round(r);
	} else {
		while (maybe_send_append(r, p, false)) {
		}
		/* A peer that was paused (probing) when the commit index
		 * moved has not heard it: tell it now rather than at the
		 * next heartbeat (etcd's CanBumpCommit). */
		if (r->commit > p->sent_commit)
			maybe_send_append(r, p, true);
	}
	maybe_send_timeout_now(r, p);
}

/* ---- step ---------------------------------------------------------------- */

static void step_leader(struct raft *r, const struct raft_msg *m)
{
	struct progress *p = peer(r, m->from);
	if (!p)
		return;
	switch (m->type) {
	case RAFT_MSG_APPEND_RESP:
		leader_append_resp(r, p, m);
		break;
	case RAFT_MSG_HEARTBEAT_RESP:
		p->recent_active = true;
		p->probe_sent = false;
		if (m->context > p->read_ack && m->context <= r->read_round) {
			p->read_ack = m->context;
			release_reads(r);
		}
		/* A window full of appends that were all lost would pause
		 * this peer for good: nothing else frees it. The heartbeat
		 * proves the peer is reachable, so free one slot and let one
		 * append through; if there is a gap the follower rejects it
		 * and the leader falls back to probing (§10.2 pipelining). */
		if (p->state == RAFT_PROGRESS_REPLICATE && infl_full(r, p) &&
		    p->infl_count > 0)
			infl_free_first(r, p);
		if (p->match < last_index(r))
			maybe_send_append(r, p, true);
		break;
	default:
		break;
	}
}

static void step_candidate(struct raft *r, const struct raft_msg *m)
{
	int want = r->role == RAFT_PRE_CANDIDATE ? RAFT_MSG_PREVOTE_RESP
						 : RAFT_MSG_VOTE_RESP;
	switch (m->type) {
	case RAFT_MSG_APPEND:
	case RAFT_MSG_HEARTBEAT:
	case RAFT_MSG_SNAPSHOT:
		/* A leader exists in this term (§3.4). */
		become_follower(r, m->term, m->from);
		if (m->type == RAFT_MSG_APPEND)
			handle_append(r, m);
		else if (m->type == RAFT_MSG_SNAPSHOT)
			handle_snapshot(r, m);
		else {
			/* As in step_follower: a commit index beyond our log
			 * (a leader that believes more of it than survived
			 * here) must not be taken. */
			if (m->commit <= last_index(r))
				commit_to(r, m->commit);
			struct raft_msg resp = {.type = RAFT_MSG_HEARTBEAT_RESP,
						.to = m->from,
						.context = m->context};
			send(r, resp);
		}
		break;
	case RAFT_MSG_PREVOTE_RESP:
	case RAFT_MSG_VOTE_RESP:
		if (m->type != want)
			break;
		switch (tally(r, m->from, !m->reject)) {
		case VOTE_GRANTED:
			if (r->role == RAFT_PRE_CANDIDATE)
				campaign(r, false, false);
			else
				become_leader(r);
			break;
		case VOTE_REJECTED:
			become_follower(r, r->term, RAFT_NONE);
			break;
		default:
			break;
		}
		break;
	default:
		break;
	}
}

static void step_follower(struct raft *r, const struct raft_msg *m)
{
	switch (m->type) {
	case RAFT_MSG_APPEND:
		r->election_elapsed = 0;
		r->leader = m->from;
		handle_append(r, m);
		break;
	case RAFT_MSG_HEARTBEAT: {
		r->election_elapsed = 0;
		r->leader = m->from;
		if (m->commit <= last_index(r))
			commit_to(r, m->commit);
		struct raft_msg resp = {.type = RAFT_MSG_HEARTBEAT_RESP,
					.to = m->from,
					.context = m->context};
		send(r, resp);
		break;
	}
	case RAFT_MSG_SNAPSHOT:
		r->election_elapsed = 0;
		r->leader = m->from;
		handle_snapshot(r, m);
		break;
	case RAFT_MSG_TIMEOUT_NOW:
		/* §3.10: the leader asks us to start an election at once,
		 * skipping PreVote; voters will not hold the lease against
		 * it. */
		campaign(r, false, true);
		break;
	default:
		break;
	}
}

static int step_msg(struct raft *r, const struct raft_msg *m)
{
	if (m->type <= RAFT_MSG_NONE || m->type >= RAFT_MSG_TYPE_COUNT)
		return KEEL_ERR_INVAL;
	if (m->from == r->cfg.id || !peer(r, m->from))
		return 0; /* not a member: drop */
	if (m->n_entries > 0 && m->type != RAFT_MSG_APPEND)
		return KEEL_ERR_INVAL;
	if (m->n_entries > 0 && !m->entries)
		return KEEL_ERR_INVAL;
	if (m->type == RAFT_MSG_SNAPSHOT) {
		/* A snapshot names a real point of a leader's log. */
		const struct raft_config_members *c = m->conf;
		if (!c || m->index == 0 || m->log_term == 0 ||
		    m->log_term > m->term || c->n_voters == 0 ||
		    c->n_voters + c->n_learners > RAFT_MAX_VOTERS)
			return KEEL_ERR_INVAL;
	}
	for (uint32_t i = 0; i < m->n_entries; i++) {
		/* Entries must continue from the probe point contiguously
		 * with non-decreasing terms no newer than the message. */
		const struct raft_entry *e = &m->entries[i];
		uint64_t prev_term = i ? m->entries[i - 1].term : m->log_term;
		if (e->index != m->index + 1 + i || e->term < prev_term ||
		    e->term > m->term || (e->len && !e->data))
			return KEEL_ERR_INVAL;
	}

	bool vote_req = m->type == RAFT_MSG_VOTE || m->type == RAFT_MSG_PREVOTE;
	if (m->term > r->term) {
		if (vote_req && !m->transfer && r->cfg.check_quorum &&
		    r->leader != RAFT_NONE &&
		    r->election_elapsed < r->cfg.election_ticks) {
			/* §4.2.3 / §9.6: with a live leader, ignore
			 * disruptive vote requests. */
			return 0;
		}
		if (m->type == RAFT_MSG_PREVOTE) {
			/* Never changes our term (§9.6). */
		} else if (m->type == RAFT_MSG_PREVOTE_RESP && !m->reject) {
			/* A granted pre-vote carries the future term. */
		} else if (m->type == RAFT_MSG_APPEND ||
			   m->type == RAFT_MSG_HEARTBEAT ||
			   m->type == RAFT_MSG_SNAPSHOT) {
			become_follower(r, m->term, m->from);
		} else {
			become_follower(r, m->term, RAFT_NONE);
		}
	} else if (m->term < r->term) {
		if ((r->cfg.check_quorum || r->cfg.pre_vote) &&
		    (m->type == RAFT_MSG_APPEND ||
		     m->type == RAFT_MSG_HEARTBEAT ||
		     m->type == RAFT_MSG_SNAPSHOT)) {
			/* A deposed leader, maybe cut off long enough that
			 * it never saw the new term: tell it, or with
			 * CheckQuorum/PreVote it would never learn (§9.6). */
			struct raft_msg resp = {.type = RAFT_MSG_APPEND_RESP,
						.to = m->from};
			send(r, resp);
		} else if (m->type == RAFT_MSG_PREVOTE) {
			struct raft_msg resp = {.type = RAFT_MSG_PREVOTE_RESP,
						.to = m->from,
						.reject = true};
			send(r, resp);
		}
		return 0;
	}

	if (vote_req) {
		handle_vote(r, m);
		return 0;
	}
	switch (r->role) {
	case RAFT_LEADER:
		step_leader(r, m);
		break;
	case RAFT_CANDIDATE:
	case RAFT_PRE_CANDIDATE:
		step_candidate(r, m);
		break;
	default:
		step_follower(r, m);
		break;
	}
	return 0;
}

static void tick(struct raft *r)
{
	r->election_elapsed++;
	if (r->role != RAFT_LEADER) {
		if (promotable(r) &&
		    r->election_elapsed >= r->randomized_election_ticks) {
			r->election_elapsed = 0;
			campaign(r, r->cfg.pre_vote, false);
		}
		return;
	}
	r->heartbeat_elapsed++;
	if (r->election_elapsed >= r->cfg.election_ticks) {
		r->election_elapsed = 0;
		if (r->cfg.check_quorum) {
			/* §6.2: step down without a majority in contact. */
			uint32_t active = r->self_voter ? 1 : 0;
			for (uint32_t i = 0; i < r->n_peers; i++) {
				struct progress *p = &r->peers[i];
				if (p->voter && p->recent_active)
					active++;
				p->recent_active = false;
			}
			if (active < quorum(r)) {
				become_follower(r, r->term, RAFT_NONE);
				return;
			}
		}
		/* A transfer that did not finish in one election timeout
		 * is abandoned (§3.10). */
		r->transferee = RAFT_NONE;
	}
	if (r->heartbeat_elapsed >= r->cfg.heartbeat_ticks) {
		r->heartbeat_elapsed = 0;
		bcast_heartbeat(r);
	}
}

static int propose(struct raft *r, const struct raft_entry *ents, uint32_t n)
{
	if (r->role != RAFT_LEADER)
		return KEEL_ERR_NOT_LEADER;
	if (r->transferee != RAFT_NONE)
		return KEEL_ERR_TRANSFER;
	if (n == 0 || !ents)
		return KEEL_ERR_INVAL;
	uint64_t bytes = 0;
	for (uint32_t i = 0; i < n; i++) {
		if (ents[i].len && !ents[i].data)
			return KEEL_ERR_INVAL;
		if (ents[i].type != RAFT_ENTRY_NORMAL &&
		    ents[i].type != RAFT_ENTRY_NOOP)
			return KEEL_ERR_INVAL;
		bytes += ents[i].len;
	}
	/* Bound the uncommitted tail; always admit something into an empty
	 * one so an oversized command cannot wedge the leader. */
	if (r->cfg.max_uncommitted_bytes && r->uncommitted_bytes > 0 &&
	    r->uncommitted_bytes + bytes > r->cfg.max_uncommitted_bytes)
		return KEEL_ERR_BUSY;
	/* Stamp this term's indexes on a stack copy (raft_log_append copies
	 * the data). All or nothing: on failure the appended part goes. */
	uint64_t orig_last = last_index(r);
	struct raft_entry batch[64];
	uint32_t done = 0;
	while (done < n) {
		uint32_t k = KEEL_MIN(n - done, (uint32_t)KEEL_ARRAY_LEN(batch));
		for (uint32_t i = 0; i < k; i++) {
			batch[i] = ents[done + i];
			batch[i].term = r->term;
			batch[i].index = last_index(r) + 1 + i;
		}
		int rv = raft_log_append(&r->log, batch, k);
		if (rv) {
			raft_log_truncate(&r->log, orig_last + 1);
			return rv;
		}
		done += k;
	}
	r->uncommitted_bytes += bytes;
	/* A single voter commits once it has persisted (see persisted()). */
	bcast_append(r);
	return 0;
}

static int read_index(struct raft *r, uint64_t id)
{
	if (r->role != RAFT_LEADER)
		return KEEL_ERR_NOT_LEADER;
	if (r->n_reads >= MAX_PENDING_READS)
		return KEEL_ERR_BUSY;
	int rv = grow(r->alloc, (void **)&r->reads, &r->cap_reads,
		      r->n_reads + 1, sizeof(*r->reads));
	if (rv)
		return rv;
	/* The round starts at raft_ready so that every read requested
	 * since the last update shares one heartbeat (§6.4 batching). */
	r->reads[r->n_reads++] = (struct pending_read){.id = id};
	return 0;
}

static int transfer(struct raft *r, raft_id target)
{
	if (r->role != RAFT_LEADER)
		return KEEL_ERR_NOT_LEADER;
	if (target == r->cfg.id)
		return 0;
	struct progress *p = peer(r, target);
	if (!p || !p->voter)
		return KEEL_ERR_UNKNOWN_NODE;
	if (r->transferee == target)
		return 0;
	/* §3.10: stop accepting proposals, bring the target up to date,
	 * then tell it to time out now. Bounded by one election timeout. */
	r->transferee = target;
	r->election_elapsed = 0;
	if (p->match == last_index(r))
		maybe_send_timeout_now(r, p);
	else
		maybe_send_append(r, p, true);
	return 0;
}

/* The application's report on the bytes of a RAFT_MSG_SNAPSHOT (raft.h,
 * "The snapshot contract"). Either way the peer goes back to probe, paused
 * until the next heartbeat response or acknowledgement (etcd's
 * ReportSnapshot), so a failing transfer is retried once per heartbeat, not
 * in a tight loop. After a success the probe starts past the snapshot. */
static int snapshot_status(struct raft *r, raft_id id, bool ok)
{
	struct progress *p = peer(r, id);
	if (!p)
		return KEEL_ERR_UNKNOWN_NODE;
	/* Leadership (or the peer's state) may have changed while the bytes
	 * were moving: a late report says nothing about the present. */
	if (r->role != RAFT_LEADER || p->state != RAFT_PROGRESS_SNAPSHOT)
		return 0;
	uint64_t pending = p->pending_snapshot;
	become_probe(p);
	if (ok)
		p->next = KEEL_MAX(p->match + 1, pending + 1);
	p->probe_sent = true;
	return 0;
}

static void persisted(struct raft *r, uint64_t index, uint64_t term)
{
	bool ok;
	uint64_t t = raft_log_term(&r->log, index, &ok);
	/* A completion for entries a newer leader has since overwritten
	 * (same index, older term) is stale and says nothing. */
	if (!ok || t != term || index <= r->persisted)
		return;
	if (index > r->persist_sent)
		return;
	r->persisted = index;
	if (r->role == RAFT_LEADER && maybe_commit(r)) {
		bcast_append(r);
		start_read_round(r);
	}
}

int raft_step(struct raft *r, const struct raft_event *ev)
{
	int rv = 0;
	KEEL_ASSERT(!r->ready_pending);
	switch (ev->type) {
	case RAFT_EV_TICK:
		tick(r);
		break;
	case RAFT_EV_RECEIVE:
		rv = step_msg(r, &ev->receive);
		break;
	case RAFT_EV_PROPOSE:
		rv = propose(r, ev->propose.entries, ev->propose.n);
		break;
	case RAFT_EV_READ_INDEX:
		rv = read_index(r, ev->read_index.id);
		break;
	case RAFT_EV_PERSISTED:
		persisted(r, ev->persisted.index, ev->persisted.term);
		break;
	case RAFT_EV_CAMPAIGN:
		if (r->role != RAFT_LEADER)
			campaign(r, r->cfg.pre_vote, false);
		break;
	case RAFT_EV_TRANSFER:
		rv = transfer(r, ev->transfer.target);
		break;
	case RAFT_EV_SNAPSHOT_STATUS:
		rv = snapshot_status(r, ev->snapshot_status.peer,
				     ev->snapshot_status.ok);
		break;
	default:
		rv = KEEL_ERR_INVAL;
		break;
	}
#ifdef KEEL_DEBUG
	raft_check_invariants(r);
#endif
	return rv;
}

/* ---- ready / advance ------------------------------------------------------ */

static struct raft_hard_state hard_state(const struct raft *r)
{
	return (struct raft_hard_state){
		.term = r->term, .vote = r->vote, .commit = r->commit};
}

static struct raft_soft_state soft_state(const struct raft *r)
{
	return (struct raft_soft_state){
		.leader = r->leader, .role = r->role, .term = r->term};
}

/* Points queued appends at the log entries they carry. */
static void resolve_entries(struct raft *r, struct msg_vec *q)
{
	for (uint32_t i = 0; i < q->n; i++) {
		struct raft_msg *m = &q->v[i];
		if (m->type == RAFT_MSG_APPEND && m->n_entries > 0) {
			KEEL_ASSERT(m->index + m->n_entries <= last_index(r));
			m->entries = raft_log_get(&r->log, m->index + 1);
		}
	}
}

bool raft_ready(struct raft *r, struct raft_update *u)
{
	KEEL_ASSERT(!r->ready_pending);
	start_read_round(r);
	memset(u, 0, sizeof(*u));
	struct raft_hard_state hs = hard_state(r);
	u->hard_state_changed = hs.term != r->prev_hs.term ||
				hs.vote != r->prev_hs.vote ||
				hs.commit != r->prev_hs.commit;
	struct raft_soft_state ss = soft_state(r);
	u->soft_state_changed = ss.leader != r->prev_ss.leader ||
				ss.role != r->prev_ss.role ||
				ss.term != r->prev_ss.term;
	u->hard_state = hs;
	u->soft_state = ss;
	if (r->persist_sent < last_index(r)) {
		u->n_entries = (uint32_t)KEEL_MIN(last_index(r) - r->persist_sent,
						  (uint64_t)UINT32_MAX);
		u->entries = raft_log_get(&r->log, r->persist_sent + 1);
	}
	resolve_entries(r, &r->msgs);
	u->n_msgs = r->msgs.n;
	u->msgs = r->msgs.v;
	u->n_msgs_after_persist = r->msgs_ap.n;
	u->msgs_after_persist = r->msgs_ap.v;
	uint64_t apply_to = KEEL_MIN(r->commit, r->persisted);
	if (apply_to > r->applied) {
		u->n_committed = (uint32_t)KEEL_MIN(apply_to - r->applied,
						    (uint64_t)UINT32_MAX);
		u->committed = raft_log_get(&r->log, r->applied + 1);
	}
	u->n_reads = r->n_reads_out;
	u->reads = r->reads_out;
	u->snapshot = r->install_pending ? &r->install : NULL;
	bool any = u->hard_state_changed || u->soft_state_changed ||
		   u->n_entries || u->n_msgs || u->n_msgs_after_persist ||
		   u->n_committed || u->n_reads || u->snapshot;
	if (any) {
		r->ready_pending = true;
		r->ready_entries_last =
			u->n_entries ? u->entries[u->n_entries - 1].index : 0;
		r->ready_committed_last =
			u->n_committed ? u->committed[u->n_committed - 1].index
				       : 0;
	}
	return any;
}

void raft_advance(struct raft *r, const struct raft_update *u)
{
	KEEL_ASSERT(r->ready_pending);
	r->ready_pending = false;
	r->prev_hs = u->hard_state;
	r->prev_ss = u->soft_state;
	if (u->n_entries) {
		KEEL_ASSERT(r->ready_entries_last > r->persist_sent);
		r->persist_sent = r->ready_entries_last;
	}
	if (u->n_committed) {
		KEEL_ASSERT(r->ready_committed_last > r->applied);
		r->applied = r->ready_committed_last;
	}
	if (u->snapshot)
		r->install_pending = false;
	r->msgs.n = 0;
	r->msgs_ap.n = 0;
	r->n_reads_out = 0;
}

/* ---- lifecycle ------------------------------------------------------------ */

struct raft *raft_create(const struct raft_config *cfg)
{
	if (raft_config_validate(cfg) != 0)
		return NULL;
	const struct keel_alloc *a = cfg->alloc ? cfg->alloc : &keel_alloc_libc;
	struct raft *r = a->malloc(a->ctx, sizeof(*r));
	if (!r)
		return NULL;
	memset(r, 0, sizeof(*r));
	r->cfg = *cfg;
	r->alloc = a;
	keel_rand_seed(&r->rand, cfg->seed);
	raft_log_init(&r->log, a);
	r->snap_conf = cfg->members;
	const struct raft_config_members *m = &cfg->members;
	for (uint32_t i = 0; i < m->n_voters + m->n_learners; i++) {
		bool voter = i < m->n_voters;
		raft_id id = voter ? m->voters[i] : m->learners[i - m->n_voters];
		if (voter)
			r->n_voters++;
		if (id == cfg->id) {
			r->self_voter = voter;
			continue;
		}
		struct progress *p = &r->peers[r->n_peers++];
		p->id = id;
		p->voter = voter;
		p->next = 1;
		size_t sz = cfg->max_inflight_msgs * sizeof(uint64_t);
		p->infl_last = a->malloc(a->ctx, sz);
		p->infl_bytes = a->malloc(a->ctx, sz);
		if (!p->infl_last || !p->infl_bytes)
			goto fail;
	}
	r->role = RAFT_FOLLOWER;
	reset_randomized_timeout(r);
	r->prev_ss = soft_state(r);
	r->prev_hs = hard_state(r);
	return r;
fail:
	raft_destroy(r);
	return NULL;
}

int raft_restore(struct raft *r, const struct raft_hard_state *hs,
		 const struct raft_entry *entries, uint32_t n)
{
	return raft_restore_snapshot(r, hs, 0, 0, NULL, entries, n);
}

int raft_restore_snapshot(struct raft *r, const struct raft_hard_state *hs,
			  uint64_t snap_index, uint64_t snap_term,
			  const struct raft_config_members *conf,
			  const struct raft_entry *entries, uint32_t n)
{
	if (!hs || (n > 0 && !entries))
		return KEEL_ERR_INVAL;
	if (last_index(r) != 0 || r->term != 0 || r->ready_pending)
		return KEEL_ERR_INVAL;
	/* A base is a real entry (term >= 1) or nothing at all; it cannot
	 * be newer than the term storage recorded. */
	if ((snap_index == 0) != (snap_term == 0) || snap_term > hs->term)
		return KEEL_ERR_INVAL;
	if (snap_index > UINT64_MAX - 1 - n)
		return KEEL_ERR_INVAL;
	if (conf && !members_equal(conf, &r->cfg.members))
		return KEEL_ERR_INVAL;
	for (uint32_t i = 0; i < n; i++) {
		uint64_t prev_term = i ? entries[i - 1].term : snap_term;
		if (entries[i].index != snap_index + 1 + i ||
		    entries[i].term > hs->term || entries[i].term < prev_term ||
		    (entries[i].len && !entries[i].data))
			return KEEL_ERR_INVAL;
	}
	raft_log_reset(&r->log, snap_index, snap_term);
	int rv = raft_log_append(&r->log, entries, n);
	if (rv) {
		raft_log_reset(&r->log, 0, 0);
		return rv;
	}
	r->term = hs->term;
	r->vote = hs->vote;
	/* A commit index ahead of the durable log cannot be trusted; the
	 * snapshot itself is committed state. */
	r->commit = KEEL_MAX(snap_index, KEEL_MIN(hs->commit, last_index(r)));
	/* The application restored its state machine from the snapshot. */
	r->applied = snap_index;
	r->persisted = last_index(r);
	r->persist_sent = last_index(r);
	for (uint32_t i = 0; i < r->n_peers; i++)
		r->peers[i].next = last_index(r) + 1;
	r->prev_hs = hard_state(r);
	r->prev_ss = soft_state(r);
	return 0;
}

int raft_compact(struct raft *r, uint64_t index)
{
	/* u.committed and the queued appends point into the log. */
	if (r->ready_pending)
		return KEEL_ERR_INVAL;
	if (index < r->log.snap_index)
		return KEEL_ERR_COMPACTED;
	if (index == r->log.snap_index)
		return 0;
	/* Only what the state machine holds may go: an entry not yet
	 * applied exists nowhere but the log, and one not yet durable could
	 * not be recovered from the snapshot's storage either. */
	if (index > r->applied || index > r->persisted)
		return KEEL_ERR_INVAL;
	drop_queued_appends(r, 0, index);
	raft_log_compact(&r->log, index);
#ifdef KEEL_DEBUG
	raft_check_invariants(r);
#endif
	return 0;
}

void raft_destroy(struct raft *r)
{
	if (!r)
		return;
	const struct keel_alloc *a = r->alloc;
	for (uint32_t i = 0; i < r->n_peers; i++) {
		a->free(a->ctx, r->peers[i].infl_last);
		a->free(a->ctx, r->peers[i].infl_bytes);
	}
	raft_log_close(&r->log);
	a->free(a->ctx, r->msgs.v);
	a->free(a->ctx, r->msgs_ap.v);
	a->free(a->ctx, r->reads);
	a->free(a->ctx, r->reads_out);
	a->free(a->ctx, r);
}

#ifdef KEEL_MUTANTS
void raft_set_mutant(struct raft *r, int mutant)
{
	r->mutant = mutant;
}
#endif

/* ---- inspection -------------------------------------------------------- */

void raft_status(const struct raft *r, struct raft_status *st)
{
	memset(st, 0, sizeof(*st));
	st->id = r->cfg.id;
	st->role = r->role;
	st->term = r->term;
	st->vote = r->vote;
	st->leader = r->leader;
	st->commit = r->commit;
	st->applied = r->applied;
	st->persisted = r->persisted;
	st->snap_index = r->log.snap_index;
	st->snap_term = r->log.snap_term;
	st->first_index = raft_log_first(&r->log);
	st->last_index = last_index(r);
	st->last_term = last_term(r);
	st->transferee = r->transferee;
	st->uncommitted_bytes = r->uncommitted_bytes;
	if (r->role != RAFT_LEADER)
		return;
	st->n_peers = r->n_peers;
	for (uint32_t i = 0; i < r->n_peers; i++) {
		const struct progress *p = &r->peers[i];
		st->peers[i] = (struct raft_peer_status){
			.id = p->id,
			.match = p->match,
			.next = p->next,
			.state = p->state,
			.inflight_msgs = p->infl_count,
			.inflight_bytes = p->infl_total_bytes,
			.recent_active = p->recent_active,
			.pending_snapshot = p->pending_snapshot,
		};
	}
}

uint64_t raft_term_at(const struct raft *r, uint64_t index, int *err)
{
	bool ok;
	uint64_t t = raft_log_term(&r->log, index, &ok);
	if (err)
		*err = ok ? 0
			  : (index < r->log.snap_index ? KEEL_ERR_COMPACTED
						       : KEEL_ERR_UNAVAILABLE);
	return t;
}

const struct raft_entry *raft_entry_at(const struct raft *r, uint64_t index)
{
	if (index <= r->log.snap_index || index > last_index(r))
		return NULL;
	return raft_log_get(&r->log, index);
}

void raft_check_invariants(const struct raft *r)
{
	uint64_t last = last_index(r);
	KEEL_ASSERT(r->commit <= last);
	KEEL_ASSERT(r->applied <= r->commit);
	KEEL_ASSERT(r->applied <= r->persisted);
	KEEL_ASSERT(r->persisted <= r->persist_sent);
	KEEL_ASSERT(r->persist_sent <= last);
	KEEL_ASSERT(last_term(r) <= r->term);
	/* The log base: compacted entries were applied (so committed and
	 * durable); a base is a real entry or none. */
	KEEL_ASSERT(r->log.snap_index <= r->applied);
	KEEL_ASSERT(r->log.snap_term <= r->term);
	KEEL_ASSERT((r->log.snap_index == 0) == (r->log.snap_term == 0));
	KEEL_ASSERT(r->log.n == 0 ||
		    r->log.e[r->log.head].index == r->log.snap_index + 1);
	KEEL_ASSERT(r->log.n == 0 ||
		    r->log.e[r->log.head].term >= r->log.snap_term);
	if (r->install_pending) {
		/* The snapshot to install is the base, and nothing after it
		 * has been applied yet. */
		KEEL_ASSERT(r->install.index == r->log.snap_index);
		KEEL_ASSERT(r->install.term == r->log.snap_term);
		KEEL_ASSERT(r->applied == r->log.snap_index);
	}
	if (r->role == RAFT_LEADER) {
		KEEL_ASSERT(r->leader == r->cfg.id);
		KEEL_ASSERT(r->vote == r->cfg.id);
		KEEL_ASSERT(r->self_voter);
	}
	if (r->role == RAFT_CANDIDATE)
		KEEL_ASSERT(r->vote == r->cfg.id);
	if (r->leader == r->cfg.id)
		KEEL_ASSERT(r->role == RAFT_LEADER);
	for (uint32_t i = 0; i < r->n_peers; i++) {
		const struct progress *p = &r->peers[i];
		KEEL_ASSERT(p->id != r->cfg.id);
		if (r->role != RAFT_LEADER)
			continue;
		KEEL_ASSERT(p->match < p->next);
		KEEL_ASSERT(p->next <= last + 1);
		KEEL_ASSERT(p->infl_count <= r->cfg.max_inflight_msgs);
		if (p->state == RAFT_PROGRESS_PROBE)
			KEEL_ASSERT(p->infl_count == 0);
		KEEL_ASSERT(p->state == RAFT_PROGRESS_PROBE ||
			    p->state == RAFT_PROGRESS_REPLICATE ||
			    p->state == RAFT_PROGRESS_SNAPSHOT);
		if (p->state == RAFT_PROGRESS_SNAPSHOT) {
			/* Waiting on a snapshot of this log's base (or an
			 * older one): nothing in flight, nothing matched
			 * there yet. */
			KEEL_ASSERT(p->infl_count == 0);
			KEEL_ASSERT(p->pending_snapshot > p->match);
			KEEL_ASSERT(p->pending_snapshot <= r->log.snap_index);
			KEEL_ASSERT(p->next == p->pending_snapshot + 1);
		} else {
			KEEL_ASSERT(p->pending_snapshot == 0);
		}
		KEEL_ASSERT(p->read_ack <= r->read_round);
	}
	for (uint32_t i = 0; i < r->n_reads; i++)
		KEEL_ASSERT(r->reads[i].round <= r->read_round);
#ifdef KEEL_DEBUG
	/* O(n): the log's indexes are contiguous and its terms ordered. */
	uint64_t prev = r->log.snap_term;
	for (uint64_t i = raft_log_first(&r->log); i <= last; i++) {
		const struct raft_entry *e = raft_log_get(&r->log, i);
		KEEL_DASSERT(e->index == i);
		KEEL_DASSERT(e->term >= prev);
		prev = e->term;
	}
#endif
}
