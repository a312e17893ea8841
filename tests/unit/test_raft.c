/*
 * test_raft.c -- the Raft safety claims the rest of keel relies on, each
 * checked over many randomized runs of the real core (thesis §3.6.3,
 * Figure 3.2): Election Safety, Log Matching, Leader Completeness and State
 * Machine Safety; plus unit checks of the API contracts (allocation
 * failure, input validation, restore).
 *
 * The cluster here is deliberately hostile: messages are delayed,
 * reordered, duplicated and dropped, links are partitioned, persistence
 * completes late, and nodes crash (losing whatever was not yet durable) and
 * restart from what was. Every run prints its seed; KEEL_SEED replays one.
 *
 * Nodes also compact (chapter 5): each node's "state machine" is the list
 * of terms it applied, and a snapshot is a durable copy of a prefix of it.
 * A leader whose follower needs a compacted entry sends RAFT_MSG_SNAPSHOT;
 * the harness plays the application's part of the contract (raft.h): it
 * hands the receiver the sender's snapshot content only if the sender
 * still holds a snapshot at exactly that index, and reports a failed
 * transfer (RAFT_EV_SNAPSHOT_STATUS) when the message is lost or the
 * snapshot is gone. Installed snapshots are checked against what every
 * other node applied (State Machine Safety covers them too).
 */
#include "test.h"

#include "keel/raft.h"

#define MAXN 5
#define MAX_LOG 4096
#define MAX_NET 4096
#define MAX_PENDING 64

/* A message in flight: a deep copy, since update contents are borrowed. */
struct net_msg {
	struct raft_msg m;
	struct raft_entry ents[64];
	uint8_t data[64][8];
	struct raft_config_members conf; /* SNAPSHOT */
	uint64_t deliver_at;
};

/* What a node has made durable, and what it handed out but not synced.
 * The snapshot: (snap_index, snap_term) and the state machine up to it
 * (sm[i] = term of the entry applied at i); log[k] is entry
 * snap_index + 1 + k. */
struct disk {
	struct raft_hard_state hs;
	uint64_t snap_index, snap_term;
	uint64_t sm[MAX_LOG];
	struct raft_entry log[MAX_LOG];
	uint8_t data[MAX_LOG][8];
	uint64_t n;
};

struct pending_persist {
	struct raft_hard_state hs;
	bool has_hs;
	bool has_snap; /* install incoming[] up to snap.index first */
	struct raft_snapshot_meta snap;
	uint64_t first, n; /* entries [first, first+n) copied in ents */
	struct raft_entry ents[256];
	uint8_t data[256][8];
	/* messages to release once durable */
	uint32_t n_msgs;
	struct net_msg *msgs;
	uint64_t done_at;
};

struct cluster {
	int n;
	struct keel_rand rand;
	struct raft *node[MAXN + 1];
	bool down[MAXN + 1];
	bool cut[MAXN + 1][MAXN + 1];
	struct disk disk[MAXN + 1];
	struct pending_persist pend[MAXN + 1][MAX_PENDING];
	int n_pend[MAXN + 1];
	struct net_msg *net;
	int n_net;
	uint64_t now;
	/* Observed facts for the checks. */
	raft_id leader_of_term[1024];
	uint64_t committed_term[MAX_LOG]; /* by index; 0 = not yet */
	/* An upper bound on the term in which each index was committed: the
	 * smallest current term of a node seen holding it committed. */
	uint64_t committed_in[MAX_LOG];
	uint64_t committed_max;
	uint64_t applied_term[MAXN + 1][MAX_LOG];
	uint64_t applied_n[MAXN + 1];
	/* Snapshot content handed to a node with a RAFT_MSG_SNAPSHOT (the
	 * bytes the application streamed beside it). */
	uint64_t incoming[MAXN + 1][MAX_LOG];
	uint64_t incoming_index[MAXN + 1];
	bool compaction; /* nodes compact and snapshots flow */
	uint64_t compactions, snapshots_sent, snapshots_installed;
	char violation[256];
	uint64_t proposals;
	uint64_t elections;
	/* Breaks the persistence rule on purpose, to prove the checks can
	 * fail: msgs_after_persist go out before the write is durable. */
	bool no_persist_before_ack;
	unsigned checks; /* CHECK_* bits: which claims this run asserts */
};

enum {
	CHECK_ELECTION = 1u << 0,     /* §3.6.3 Election Safety */
	CHECK_LOG_MATCHING = 1u << 1, /* Log Matching */
	CHECK_COMPLETENESS = 1u << 2, /* Leader Completeness */
	CHECK_SM_SAFETY = 1u << 3,    /* State Machine Safety */
	CHECK_ALL = 15u,
};

static void fail_check(struct cluster *c, const char *what)
{
	if (!c->violation[0])
		snprintf(c->violation, sizeof(c->violation), "%s (t=%" PRIu64 ")",
			 what, c->now);
}

static struct raft *make_node(struct cluster *c, raft_id id)
{
	struct raft_config cfg;
	raft_config_default(&cfg, id);
	cfg.members.n_voters = (uint32_t)c->n;
	for (int k = 0; k < c->n; k++)
		cfg.members.voters[k] = (raft_id)(k + 1);
	cfg.seed = keel_rand_next(&c->rand);
	cfg.max_inflight_msgs = 4;
	cfg.max_msg_entries = 64;
	cfg.pre_vote = keel_rand_chance(&c->rand, 1, 2);
	cfg.check_quorum = keel_rand_chance(&c->rand, 1, 2);
	struct raft *r = raft_create(&cfg);
	KEEL_ASSERT(r);
	struct disk *d = &c->disk[id];
	if (d->hs.term || d->n || d->snap_index) {
		static struct raft_entry ents[MAX_LOG];
		for (uint64_t i = 0; i < d->n; i++) {
			ents[i] = d->log[i];
			ents[i].data = d->data[i];
		}
		int rv = raft_restore_snapshot(r, &d->hs, d->snap_index,
					       d->snap_term, NULL, ents,
					       (uint32_t)d->n);
		KEEL_ASSERT(rv == 0);
	}
	return r;
}

/* memcpy with a NULL source is undefined even for 0 bytes. */
static void copy_bytes(uint8_t *dst, const uint8_t *src, uint32_t len)
{
	if (len)
		memcpy(dst, src, len);
}

static void copy_msg(struct net_msg *dst, const struct raft_msg *m)
{
	dst->m = *m;
	KEEL_ASSERT(m->n_entries <= 64);
	for (uint32_t i = 0; i < m->n_entries; i++) {
		dst->ents[i] = m->entries[i];
		KEEL_ASSERT(m->entries[i].len <= 8);
		copy_bytes(dst->data[i], m->entries[i].data, m->entries[i].len);
		dst->ents[i].data = dst->data[i];
	}
	dst->m.entries = m->n_entries ? dst->ents : NULL;
	if (m->conf) {
		dst->conf = *m->conf;
		dst->m.conf = &dst->conf;
	}
}

static void net_push(struct cluster *c, const struct raft_msg *m)
{
	if (c->n_net >= MAX_NET)
		return; /* a full network drops */
	struct net_msg *nm = &c->net[c->n_net++];
	copy_msg(nm, m);
	nm->deliver_at = c->now + 1 + keel_rand_below(&c->rand, 6);
}

static void crash(struct cluster *c, raft_id id)
{
	raft_destroy(c->node[id]);
	c->node[id] = NULL;
	c->down[id] = true;
	for (int k = 0; k < c->n_pend[id]; k++)
		free(c->pend[id][k].msgs);
	c->n_pend[id] = 0; /* unsynced writes are lost */
}

/* The state machine restarts from the durable snapshot; the core hands
 * out what follows it again. */
static void restart(struct cluster *c, raft_id id)
{
	c->node[id] = make_node(c, id);
	c->down[id] = false;
	const struct disk *d = &c->disk[id];
	for (uint64_t i = 1; i <= d->snap_index; i++)
		c->applied_term[id][i] = d->sm[i];
	c->applied_n[id] = d->snap_index;
}

static void disk_write(struct cluster *c, raft_id id,
		       const struct pending_persist *p)
{
	struct disk *d = &c->disk[id];
	if (p->has_hs)
		d->hs = p->hs;
	if (p->has_snap) {
		/* The snapshot replaces the state machine and the whole log. */
		d->snap_index = p->snap.index;
		d->snap_term = p->snap.term;
		for (uint64_t i = 1; i <= d->snap_index; i++)
			d->sm[i] = c->incoming[id][i];
		d->n = 0;
	}
	if (p->n) {
		KEEL_ASSERT(p->first > d->snap_index &&
			    p->first <= d->snap_index + d->n + 1);
		d->n = p->first - 1 - d->snap_index;
		for (uint64_t i = 0; i < p->n; i++) {
			d->log[d->n] = p->ents[i];
			copy_bytes(d->data[d->n], p->data[i], p->ents[i].len);
			d->log[d->n].data = d->data[d->n];
			d->n++;
		}
	}
}

/* Completes the oldest pending persistence of a node (FIFO, as a disk
 * thread would), releases its held messages, reports PERSISTED. */
static void complete_persist(struct cluster *c, raft_id id)
{
	struct pending_persist *p = &c->pend[id][0];
	disk_write(c, id, p);
	for (uint32_t k = 0; k < p->n_msgs; k++)
		if (c->n_net < MAX_NET)
			c->net[c->n_net++] = p->msgs[k];
	free(p->msgs);
	uint64_t idx = p->n ? p->first + p->n - 1 : 0;
	uint64_t term = p->n ? p->ents[p->n - 1].term : 0;
	memmove(&c->pend[id][0], &c->pend[id][1],
		(size_t)(c->n_pend[id] - 1) * sizeof(c->pend[id][0]));
	c->n_pend[id]--;
	if (idx) {
		struct raft_event ev = {.type = RAFT_EV_PERSISTED,
					.persisted = {.index = idx, .term = term}};
		raft_step(c->node[id], &ev);
	}
}

static void check_applied(struct cluster *c, raft_id id,
			  const struct raft_entry *e)
{
	if (e->index >= MAX_LOG)
		return;
	/* State Machine Safety: the same index applies the same entry. */
	for (int k = 1; k <= c->n && (c->checks & CHECK_SM_SAFETY); k++) {
		if (c->applied_n[k] >= e->index &&
		    c->applied_term[k][e->index] != e->term)
			fail_check(c, "state machine safety: two entries applied at one index");
	}
	c->applied_term[id][e->index] = e->term;
	c->applied_n[id] = e->index;
}

/* u.snapshot: the application replaces its state machine with the bytes
 * that came with the message (incoming[]), which must be the state every
 * other node applied up to that index, and must end in the entry the core
 * names. */
static void install_snapshot(struct cluster *c, raft_id id,
			     const struct raft_snapshot_meta *sm)
{
	c->snapshots_installed++;
	if (sm->index >= MAX_LOG)
		return;
	KEEL_ASSERT(sm->index == c->incoming_index[id]);
	if (c->incoming[id][sm->index] != sm->term)
		fail_check(c, "snapshot content does not end in the named entry");
	for (uint64_t i = 1; i <= sm->index; i++) {
		uint64_t t = c->incoming[id][i];
		for (int k = 1; k <= c->n && (c->checks & CHECK_SM_SAFETY); k++)
			if (c->applied_n[k] >= i && c->applied_term[k][i] != t)
				fail_check(c, "state machine safety: a snapshot differs from what a node applied");
		c->applied_term[id][i] = t;
	}
	c->applied_n[id] = sm->index;
}

static void process_ready(struct cluster *c, raft_id id)
{
	struct raft *r = c->node[id];
	struct raft_update u;
	while (raft_ready(r, &u)) {
		if (u.soft_state_changed && u.soft_state.role == RAFT_LEADER) {
			uint64_t t = u.soft_state.term;
			c->elections++;
			if (t < 1024 && (c->checks & CHECK_ELECTION)) {
				/* Election Safety: one leader per term. */
				if (c->leader_of_term[t] &&
				    c->leader_of_term[t] != id)
					fail_check(c, "election safety: two leaders in one term");
				c->leader_of_term[t] = id;
			}
		}
		if (u.snapshot)
			install_snapshot(c, id, u.snapshot);
		/* msgs_after_persist wait for this update's write and every
		 * earlier one: an update with nothing to write still queues
		 * (empty) behind the writes in flight. */
		bool persist = u.hard_state_changed || u.n_entries ||
			       u.snapshot ||
			       (u.n_msgs_after_persist && c->n_pend[id] > 0);
		struct pending_persist *p = NULL;
		if (persist) {
			KEEL_ASSERT(c->n_pend[id] < MAX_PENDING);
			p = &c->pend[id][c->n_pend[id]++];
			memset(p, 0, sizeof(*p));
			p->has_hs = u.hard_state_changed;
			p->hs = u.hard_state;
			if (u.snapshot) {
				p->has_snap = true;
				p->snap = *u.snapshot;
			}
			KEEL_ASSERT(u.n_entries <= 256);
			if (u.n_entries)
				p->first = u.entries[0].index;
			p->n = u.n_entries;
			for (uint32_t i = 0; i < u.n_entries; i++) {
				p->ents[i] = u.entries[i];
				copy_bytes(p->data[i], u.entries[i].data,
					   u.entries[i].len);
				p->ents[i].data = p->data[i];
			}
			p->done_at = c->now + keel_rand_below(&c->rand, 4);
		}
		for (uint32_t i = 0; i < u.n_msgs; i++) {
			if (u.msgs[i].type == RAFT_MSG_SNAPSHOT)
				c->snapshots_sent++;
			net_push(c, &u.msgs[i]);
		}
		if (u.n_msgs_after_persist) {
			if (!p || c->no_persist_before_ack) {
				for (uint32_t i = 0; i < u.n_msgs_after_persist; i++)
					net_push(c, &u.msgs_after_persist[i]);
			} else {
				p->msgs = calloc(u.n_msgs_after_persist,
						 sizeof(*p->msgs));
				KEEL_ASSERT(p->msgs);
				for (uint32_t i = 0; i < u.n_msgs_after_persist;
				     i++) {
					copy_msg(&p->msgs[i],
						 &u.msgs_after_persist[i]);
					p->msgs[i].deliver_at =
						c->now + 1 +
						keel_rand_below(&c->rand, 6);
				}
				p->n_msgs = u.n_msgs_after_persist;
			}
		}
		for (uint32_t i = 0; i < u.n_committed; i++)
			check_applied(c, id, &u.committed[i]);
		raft_advance(r, &u);
		/* With nothing to wait for, persistence is immediate. */
		while (c->n_pend[id] > 0 && c->pend[id][0].done_at <= c->now)
			complete_persist(c, id);
	}
}

/* Records what is now committed: an entry is committed once a node's
 * commit index covers it; Log Matching then pins its term forever. */
static void observe_commits(struct cluster *c)
{
	for (int id = 1; id <= c->n; id++) {
		if (c->down[id])
			continue;
		struct raft_status st;
		raft_status(c->node[id], &st);
		for (uint64_t i = 1; i <= st.commit && i < MAX_LOG; i++) {
			int err;
			uint64_t t = raft_term_at(c->node[id], i, &err);
			if (err)
				continue; /* compacted: applied, checked there */
			if (c->committed_term[i] == 0) {
				c->committed_term[i] = t;
				c->committed_in[i] = st.term;
			} else if (c->committed_term[i] != t) {
				fail_check(c, "committed entry changed term");
			}
			c->committed_in[i] = KEEL_MIN(c->committed_in[i], st.term);
		}
		if (st.commit > c->committed_max)
			c->committed_max = KEEL_MIN(st.commit, MAX_LOG - 1);
	}
}

/* Leader Completeness (§3.6.3): an entry committed in term T is in the log
 * of every leader of a term after T. (A deposed leader of an older term
 * that has not heard the news may lack it, and that is allowed.) */
static void check_leader_completeness(struct cluster *c)
{
	for (int id = 1; id <= c->n; id++) {
		if (c->down[id])
			continue;
		struct raft_status st;
		raft_status(c->node[id], &st);
		if (st.role != RAFT_LEADER)
			continue;
		for (uint64_t i = 1; i <= c->committed_max; i++) {
			if (c->committed_in[i] >= st.term)
				continue;
			int err;
			uint64_t t = raft_term_at(c->node[id], i, &err);
			/* A compacted entry lives on in the leader's state
			 * machine (its snapshot). */
			if (err == KEEL_ERR_COMPACTED && i <= c->applied_n[id])
				t = c->applied_term[id][i], err = 0;
			if (err || t != c->committed_term[i]) {
				fail_check(c, "leader completeness: leader lacks a committed entry");
				return;
			}
		}
	}
}

/* Log Matching (§3.5): same index and term means same prefix. */
static void check_log_matching(struct cluster *c)
{
	for (int a = 1; a <= c->n; a++) {
		for (int b = a + 1; b <= c->n; b++) {
			if (c->down[a] || c->down[b])
				continue;
			struct raft_status sa, sb;
			raft_status(c->node[a], &sa);
			raft_status(c->node[b], &sb);
			uint64_t hi = KEEL_MIN(sa.last_index, sb.last_index);
			/* Find the highest index where terms agree. */
			uint64_t i = hi;
			while (i > 0 && raft_term_at(c->node[a], i, NULL) !=
						raft_term_at(c->node[b], i, NULL))
				i--;
			for (uint64_t k = 1; k <= i; k++) {
				const struct raft_entry *x =
					raft_entry_at(c->node[a], k);
				const struct raft_entry *y =
					raft_entry_at(c->node[b], k);
				if (!x || !y)
					continue; /* compacted on one side */
				if (x->term != y->term || x->len != y->len ||
				    (x->len && memcmp(x->data, y->data, x->len))) {
					fail_check(c, "log matching: equal (index, term) but different prefixes");
					return;
				}
			}
		}
	}
}

static void deliver_due(struct cluster *c)
{
	/* Deliver one due message chosen at random: reordering. */
	int due[MAX_NET], n = 0;
	for (int i = 0; i < c->n_net; i++)
		if (c->net[i].deliver_at <= c->now)
			due[n++] = i;
	if (n == 0)
		return;
	int pick = due[keel_rand_below(&c->rand, (uint64_t)n)];
	struct net_msg msg = c->net[pick];
	bool dup = keel_rand_chance(&c->rand, 1, 20);
	if (!dup)
		c->net[pick] = c->net[--c->n_net];
	else
		c->net[pick].deliver_at = c->now + 3;
	raft_id to = msg.m.to, from = msg.m.from;
	bool lost = c->down[to] || c->cut[from][to] ||
		    keel_rand_chance(&c->rand, 1, 20);
	if (msg.m.type == RAFT_MSG_SNAPSHOT) {
		/* The application streams the sender's snapshot at exactly
		 * that index; if it is gone (compacted further, or a crash
		 * lost an install) or the stream breaks, the transfer fails
		 * and the sender's application says so. */
		const struct disk *sd = &c->disk[from];
		bool have = !c->down[from] && sd->snap_index == msg.m.index &&
			    msg.m.index < MAX_LOG;
		if (lost || !have || keel_rand_chance(&c->rand, 1, 10)) {
			if (!c->down[from]) {
				struct raft_event st = {
					.type = RAFT_EV_SNAPSHOT_STATUS,
					.snapshot_status = {.peer = to,
							    .ok = false}};
				raft_step(c->node[from], &st);
				process_ready(c, from);
			}
			return;
		}
		memcpy(c->incoming[to], sd->sm,
		       (msg.m.index + 1) * sizeof(sd->sm[0]));
		c->incoming_index[to] = msg.m.index;
		msg.m.conf = &msg.conf;
	} else if (lost) {
		return;
	}
	if (msg.m.n_entries) {
		/* Re-point at this copy's storage. */
		for (uint32_t i = 0; i < msg.m.n_entries; i++)
			msg.ents[i].data = msg.data[i];
		msg.m.entries = msg.ents;
	}
	struct raft_event ev = {.type = RAFT_EV_RECEIVE};
	ev.receive = msg.m;
	raft_step(c->node[to], &ev);
	process_ready(c, to);
	if (msg.m.type == RAFT_MSG_SNAPSHOT && !c->down[from] &&
	    keel_rand_chance(&c->rand, 1, 3)) {
		/* Sometimes the sender's application also reports the
		 * delivery; the acknowledgement may be lost. */
		struct raft_event st = {
			.type = RAFT_EV_SNAPSHOT_STATUS,
			.snapshot_status = {.peer = to, .ok = true}};
		raft_step(c->node[from], &st);
		process_ready(c, from);
	}
}

/* The application snapshots its state machine up to some applied index
 * (durably: the disk gets the snapshot, the log before it goes) and lets
 * the core compact. */
static void compact(struct cluster *c, raft_id id)
{
	struct raft_status st;
	raft_status(c->node[id], &st);
	if (st.applied <= st.snap_index || st.applied >= MAX_LOG)
		return;
	uint64_t index = st.snap_index + 1 +
			 keel_rand_below(&c->rand, st.applied - st.snap_index);
	int rv = raft_compact(c->node[id], index);
	if (rv != 0) {
		fail_check(c, "raft_compact refused an applied index");
		return;
	}
	c->compactions++;
	struct disk *d = &c->disk[id];
	KEEL_ASSERT(index > d->snap_index && index <= d->snap_index + d->n);
	uint64_t drop = index - d->snap_index;
	d->snap_term = d->log[drop - 1].term;
	KEEL_ASSERT(d->snap_term == raft_term_at(c->node[id], index, NULL));
	for (uint64_t i = d->snap_index + 1; i <= index; i++)
		d->sm[i] = c->applied_term[id][i];
	memmove(d->log, d->log + drop, (d->n - drop) * sizeof(d->log[0]));
	memmove(d->data, d->data + drop, (d->n - drop) * sizeof(d->data[0]));
	for (uint64_t k = 0; k < d->n - drop; k++)
		d->log[k].data = d->data[k];
	d->n -= drop;
	d->snap_index = index;
}

static void cluster_run(struct cluster *c, uint64_t seed, int n, int steps,
			unsigned checks, bool no_persist_before_ack,
			bool compaction)
{
	memset(c, 0, sizeof(*c));
	c->checks = checks;
	c->compaction = compaction;
	c->no_persist_before_ack = no_persist_before_ack;
	c->net = calloc(MAX_NET, sizeof(*c->net));
	KEEL_ASSERT(c->net);
	c->n = n;
	keel_rand_seed(&c->rand, seed);
	for (int id = 1; id <= n; id++)
		c->node[id] = make_node(c, (raft_id)id);
	for (int s = 0; s < steps && !c->violation[0]; s++) {
		c->now++;
		uint64_t what = keel_rand_below(&c->rand, 100);
		raft_id id = (raft_id)(1 + keel_rand_below(&c->rand, (uint64_t)n));
		if (what < 30) {
			if (!c->down[id]) {
				struct raft_event ev = {.type = RAFT_EV_TICK};
				raft_step(c->node[id], &ev);
				process_ready(c, id);
			}
		} else if (what < 40) {
			if (!c->down[id]) {
				uint8_t data[8];
				uint64_t v = c->proposals++;
				memcpy(data, &v, sizeof(v));
				struct raft_entry e = {.type = RAFT_ENTRY_NORMAL,
						       .len = 8,
						       .data = data};
				struct raft_event ev = {
					.type = RAFT_EV_PROPOSE,
					.propose = {.n = 1, .entries = &e}};
				raft_step(c->node[id], &ev);
				process_ready(c, id);
			}
		} else if (what < 41) {
			/* Partition a random link, or heal all. */
			if (keel_rand_chance(&c->rand, 1, 3))
				memset(c->cut, 0, sizeof(c->cut));
			else {
				raft_id o = (raft_id)(1 + keel_rand_below(
								  &c->rand, (uint64_t)n));
				c->cut[id][o] = true;
				if (keel_rand_chance(&c->rand, 1, 2))
					c->cut[o][id] = true; /* else asymmetric */
			}
		} else if (what < 42) {
			if (c->down[id])
				restart(c, id);
			else if (keel_rand_chance(&c->rand, 1, 2))
				crash(c, id);
		} else if (what < 44) {
			if (c->compaction && !c->down[id])
				compact(c, id);
		} else if (what < 50) {
			if (!c->down[id] && c->n_pend[id] > 0) {
				complete_persist(c, id);
				process_ready(c, id);
			}
		} else {
			deliver_due(c);
		}
		observe_commits(c);
		if (c->checks & CHECK_COMPLETENESS)
			check_leader_completeness(c);
		if ((c->checks & CHECK_LOG_MATCHING) && s % 16 == 0)
			check_log_matching(c);
	}
	for (int id = 1; id <= n; id++) {
		if (!c->down[id])
			crash(c, id);
	}
	free(c->net);
}

/* Runs many seeds; returns how many ended in a violation and the first. */
static int sweep(uint64_t base, int runs, int steps, unsigned checks,
		 uint64_t *bad_seed, char *why, size_t why_len)
{
	static struct cluster c;
	int bad = 0;
	uint64_t committed = 0, elections = 0, compactions = 0, sent = 0,
		 installed = 0;
	for (int i = 0; i < runs; i++) {
		cluster_run(&c, base + (uint64_t)i, i % 2 ? 5 : 3, steps, checks,
			    false, true);
		committed += c.committed_max;
		elections += c.elections;
		compactions += c.compactions;
		sent += c.snapshots_sent;
		installed += c.snapshots_installed;
		if (c.violation[0]) {
			if (!bad) {
				*bad_seed = base + (uint64_t)i;
				snprintf(why, why_len, "%s", c.violation);
			}
			bad++;
		}
	}
	fprintf(stderr, "  %d runs: %" PRIu64 " entries committed, %" PRIu64
			" elections, %" PRIu64 " compactions, %" PRIu64
			" snapshots sent, %" PRIu64 " installed\n",
		runs, committed, elections, compactions, sent, installed);
	/* The runs must do real work or the claims are vacuous: commit,
	 * elect, compact, and move snapshots. */
	if (committed < (uint64_t)runs * 5 || elections < (uint64_t)runs ||
	    compactions < (uint64_t)runs || installed < (uint64_t)runs / 4)
		return -1;
	return bad;
}

static void claim_holds(unsigned check, uint64_t default_seed)
{
	uint64_t seed = test_seed(default_seed);
	uint64_t bad_seed = 0;
	char why[256] = "";
	int bad = sweep(seed, 60, 6000, check, &bad_seed, why, sizeof(why));
	if (bad != 0)
		fprintf(stderr, "  seed %" PRIu64 ": %s\n", bad_seed, why);
	EXPECT(bad == 0);
}

/* One test per claim of §3.6.3 (Figure 3.2), each over 60 hostile runs. */
TEST(election_safety)
{
	claim_holds(CHECK_ELECTION, 1000);
}

TEST(log_matching)
{
	claim_holds(CHECK_LOG_MATCHING, 2000);
}

TEST(leader_completeness)
{
	claim_holds(CHECK_COMPLETENESS, 3000);
}

TEST(state_machine_safety)
{
	claim_holds(CHECK_SM_SAFETY, 4000);
}

/* The checks above must be able to fail: with acknowledgements and votes
 * sent before they are durable, crashes lose promised state and some check
 * must notice. */
TEST(safety_checks_catch_ack_before_persist)
{
	static struct cluster c;
	uint64_t seed = test_seed(7);
	int caught = 0;
	for (int i = 0; i < 300 && !caught; i++) {
		cluster_run(&c, seed + (uint64_t)i, 3, 6000, CHECK_ALL, true,
			    true);
		if (c.violation[0]) {
			fprintf(stderr, "  caught at seed %" PRIu64 ": %s\n",
				seed + (uint64_t)i, c.violation);
			caught = 1;
		}
	}
	EXPECT(caught);
}

/* ---- API contracts ------------------------------------------------------ */

struct failing_alloc {
	int budget; /* allocations left before failing; <0 = never fail */
	int live;
};

static void *fa_malloc(void *ctx, size_t n)
{
	struct failing_alloc *f = ctx;
	if (f->budget == 0)
		return NULL;
	if (f->budget > 0)
		f->budget--;
	void *p = malloc(n);
	if (p)
		f->live++;
	return p;
}

static void *fa_realloc(void *ctx, void *ptr, size_t n)
{
	struct failing_alloc *f = ctx;
	if (f->budget == 0)
		return NULL;
	if (f->budget > 0)
		f->budget--;
	void *p = realloc(ptr, n);
	if (p && !ptr)
		f->live++;
	return p;
}

static void fa_free(void *ctx, void *ptr)
{
	struct failing_alloc *f = ctx;
	if (ptr)
		f->live--;
	free(ptr);
}

/* A single-voter node under an allocator that fails at every possible
 * point: each failure is reported as an error or absorbed, never a crash
 * or a leak, and once memory returns the node makes progress. */
TEST(allocation_failures_are_clean)
{
	for (int budget = 0; budget < 60; budget++) {
		struct failing_alloc fa = {.budget = budget};
		struct keel_alloc a = {&fa, fa_malloc, fa_realloc, fa_free};
		struct raft_config cfg;
		raft_config_default(&cfg, 1);
		cfg.members.n_voters = 1;
		cfg.members.voters[0] = 1;
		cfg.alloc = &a;
		struct raft *r = raft_create(&cfg);
		if (!r) {
			EXPECT(fa.live == 0);
			continue;
		}
		struct raft_event camp = {.type = RAFT_EV_CAMPAIGN};
		raft_step(r, &camp);
		uint8_t data[3] = {'a', 'b', 'c'};
		struct raft_entry e = {.len = 3, .data = data};
		int errors = 0;
		for (int i = 0; i < 20; i++) {
			struct raft_event ev = {.type = RAFT_EV_PROPOSE,
						.propose = {.n = 1, .entries = &e}};
			int rv = raft_step(r, &ev);
			if (rv)
				errors++;
			EXPECT(rv == 0 || rv == KEEL_ERR_NOMEM ||
			       rv == KEEL_ERR_NOT_LEADER);
			struct raft_update u;
			if (raft_ready(r, &u)) {
				uint64_t idx = u.n_entries
						       ? u.entries[u.n_entries - 1].index
						       : 0;
				uint64_t term = u.n_entries
							? u.entries[u.n_entries - 1].term
							: 0;
				raft_advance(r, &u);
				if (idx) {
					struct raft_event pe = {
						.type = RAFT_EV_PERSISTED,
						.persisted = {idx, term}};
					raft_step(r, &pe);
				}
			}
			if (i == 10)
				fa.budget = -1; /* memory comes back */
		}
		struct raft_status st;
		raft_status(r, &st);
		if (st.role == RAFT_LEADER)
			EXPECT(st.commit > 0);
		raft_destroy(r);
		EXPECT(fa.live == 0);
	}
}

TEST(config_validation)
{
	struct raft_config cfg;
	raft_config_default(&cfg, 1);
	EXPECT(raft_config_validate(&cfg) == KEEL_ERR_INVAL); /* no voters */
	cfg.members.n_voters = 3;
	cfg.members.voters[0] = 1;
	cfg.members.voters[1] = 2;
	cfg.members.voters[2] = 3;
	EXPECT(raft_config_validate(&cfg) == 0);
	cfg.members.voters[2] = 2; /* duplicate */
	EXPECT(raft_config_validate(&cfg) == KEEL_ERR_INVAL);
	cfg.members.voters[2] = 3;
	cfg.id = 4; /* not a member */
	EXPECT(raft_config_validate(&cfg) == KEEL_ERR_INVAL);
	EXPECT(raft_create(&cfg) == NULL);
	cfg.id = 1;
	cfg.heartbeat_ticks = cfg.election_ticks;
	EXPECT(raft_config_validate(&cfg) == KEEL_ERR_INVAL);
}

/* Malformed messages are refused without touching state. */
TEST(malformed_messages_rejected)
{
	struct raft_config cfg;
	raft_config_default(&cfg, 1);
	cfg.members.n_voters = 3;
	for (int i = 0; i < 3; i++)
		cfg.members.voters[i] = (raft_id)(i + 1);
	struct raft *r = raft_create(&cfg);
	ASSERT(r);
	struct raft_entry e = {.term = 5, .index = 7, .len = 0};
	struct raft_event ev = {.type = RAFT_EV_RECEIVE};
	/* Entries that do not follow the probe point. */
	ev.receive = (struct raft_msg){.type = RAFT_MSG_APPEND, .from = 2, .to = 1,
				       .term = 5, .index = 0, .log_term = 0,
				       .n_entries = 1, .entries = &e};
	EXPECT(raft_step(r, &ev) == KEEL_ERR_INVAL);
	/* An entry from a term newer than the message. */
	e.index = 1;
	e.term = 6;
	EXPECT(raft_step(r, &ev) == KEEL_ERR_INVAL);
	/* Entries on a message type that carries none. */
	e.term = 5;
	ev.receive.type = RAFT_MSG_HEARTBEAT;
	EXPECT(raft_step(r, &ev) == KEEL_ERR_INVAL);
	ev.receive.type = 42;
	EXPECT(raft_step(r, &ev) == KEEL_ERR_INVAL);
	struct raft_status st;
	raft_status(r, &st);
	EXPECT_EQ_U64(st.term, 0);
	EXPECT_EQ_U64(st.last_index, 0);
	/* A message from a non-member is dropped. */
	ev.receive = (struct raft_msg){.type = RAFT_MSG_HEARTBEAT, .from = 9,
				       .to = 1, .term = 9};
	EXPECT(raft_step(r, &ev) == 0);
	raft_status(r, &st);
	EXPECT_EQ_U64(st.term, 0);
	raft_destroy(r);
}

/* Restart: the restored log and vote hold; commit is clamped to the log. */
TEST(restore_keeps_state)
{
	struct raft_config cfg;
	raft_config_default(&cfg, 2);
	cfg.members.n_voters = 3;
	for (int i = 0; i < 3; i++)
		cfg.members.voters[i] = (raft_id)(i + 1);
	struct raft *r = raft_create(&cfg);
	ASSERT(r);
	struct raft_entry ents[2] = {{.term = 1, .index = 1},
				     {.term = 2, .index = 2}};
	struct raft_hard_state hs = {.term = 3, .vote = 1, .commit = 9};
	EXPECT(raft_restore(r, &hs, ents, 2) == 0);
	struct raft_status st;
	raft_status(r, &st);
	EXPECT_EQ_U64(st.term, 3);
	EXPECT_EQ_U64(st.vote, 1);
	EXPECT_EQ_U64(st.commit, 2);
	EXPECT_EQ_U64(st.last_index, 2);
	EXPECT_EQ_U64(st.last_term, 2);
	/* A vote request from another candidate in term 3 is refused: the
	 * restored vote stands (§3.4: at most one vote per term). */
	struct raft_event ev = {.type = RAFT_EV_RECEIVE};
	ev.receive = (struct raft_msg){.type = RAFT_MSG_VOTE, .from = 3, .to = 2,
				       .term = 3, .log_term = 2, .index = 2};
	EXPECT(raft_step(r, &ev) == 0);
	struct raft_update u;
	ASSERT(raft_ready(r, &u));
	ASSERT(u.n_msgs_after_persist == 1);
	EXPECT(u.msgs_after_persist[0].type == RAFT_MSG_VOTE_RESP);
	EXPECT(u.msgs_after_persist[0].reject);
	raft_advance(r, &u);
	raft_destroy(r);
}

/* ---- compaction and snapshots: API contracts ------------------------------ */

static struct raft *single_voter_leader(void)
{
	struct raft_config cfg;
	raft_config_default(&cfg, 1);
	cfg.members.n_voters = 1;
	cfg.members.voters[0] = 1;
	struct raft *r = raft_create(&cfg);
	KEEL_ASSERT(r);
	struct raft_event camp = {.type = RAFT_EV_CAMPAIGN};
	KEEL_ASSERT(raft_step(r, &camp) == 0);
	return r;
}

/* Takes one update the way an application would: persist, apply. */
static void take_update(struct raft *r)
{
	struct raft_update u;
	while (raft_ready(r, &u)) {
		uint64_t idx = u.n_entries ? u.entries[u.n_entries - 1].index : 0;
		uint64_t term = u.n_entries ? u.entries[u.n_entries - 1].term : 0;
		raft_advance(r, &u);
		if (idx) {
			struct raft_event pe = {.type = RAFT_EV_PERSISTED,
						.persisted = {idx, term}};
			raft_step(r, &pe);
		}
	}
}

/* Only applied entries may be compacted; below the base is an error of its
 * own; the base and what follows stay readable, what is below it is gone. */
TEST(compact_only_applied_entries)
{
	struct raft *r = single_voter_leader();
	take_update(r); /* the no-op: 1/1 applied */
	uint8_t d[2] = {'o', 'k'};
	struct raft_entry e = {.len = 2, .data = d};
	struct raft_event ev = {.type = RAFT_EV_PROPOSE,
				.propose = {.n = 1, .entries = &e}};
	for (int i = 0; i < 4; i++)
		ASSERT(raft_step(r, &ev) == 0);
	take_update(r); /* 2..5 persisted, committed, applied */
	ASSERT(raft_step(r, &ev) == 0); /* 6: in the log only */
	struct raft_status st;
	raft_status(r, &st);
	ASSERT(st.applied == 5 && st.last_index == 6);

	EXPECT(raft_compact(r, 6) == KEEL_ERR_INVAL); /* not applied */
	EXPECT(raft_compact(r, 7) == KEEL_ERR_INVAL); /* not even there */
	EXPECT(raft_compact(r, 3) == 0);
	EXPECT(raft_compact(r, 3) == 0); /* the base again: nothing to do */
	EXPECT(raft_compact(r, 2) == KEEL_ERR_COMPACTED);
	raft_status(r, &st);
	EXPECT_EQ_U64(st.snap_index, 3);
	EXPECT_EQ_U64(st.snap_term, 1);
	EXPECT_EQ_U64(st.first_index, 4);
	int err = -1;
	EXPECT_EQ_U64(raft_term_at(r, 3, &err), 1); /* the base */
	EXPECT(err == 0);
	EXPECT_EQ_U64(raft_term_at(r, 2, &err), 0);
	EXPECT(err == KEEL_ERR_COMPACTED);
	EXPECT(raft_entry_at(r, 3) == NULL);
	EXPECT(raft_entry_at(r, 4) != NULL);
	EXPECT_EQ_U64(raft_term_at(r, 7, &err), 0);
	EXPECT(err == KEEL_ERR_UNAVAILABLE);

	/* Not while an update is outstanding: it borrows the log. */
	struct raft_update u;
	ASSERT(raft_ready(r, &u));
	EXPECT(raft_compact(r, 5) == KEEL_ERR_INVAL);
	ASSERT(u.n_entries == 1);
	struct raft_event pe = {.type = RAFT_EV_PERSISTED,
				.persisted = {u.entries[0].index,
					      u.entries[0].term}};
	raft_advance(r, &u);
	ASSERT(raft_step(r, &pe) == 0);
	EXPECT(raft_compact(r, 5) == 0);
	/* The leader keeps working from its new base. */
	take_update(r);
	raft_status(r, &st);
	EXPECT_EQ_U64(st.commit, 6);
	raft_destroy(r);
}

static struct raft *three_voter_node(raft_id id)
{
	struct raft_config cfg;
	raft_config_default(&cfg, id);
	cfg.members.n_voters = 3;
	for (int i = 0; i < 3; i++)
		cfg.members.voters[i] = (raft_id)(i + 1);
	struct raft *r = raft_create(&cfg);
	KEEL_ASSERT(r);
	return r;
}

TEST(restore_from_snapshot_base)
{
	struct raft_entry ents[2] = {{.term = 3, .index = 11},
				     {.term = 4, .index = 12}};
	struct raft_hard_state hs = {.term = 4, .vote = 1, .commit = 5};
	struct raft_config_members conf = {.n_voters = 3, .voters = {3, 1, 2}};
	struct raft *r = three_voter_node(2);
	/* Refused: entries not starting after the base, terms older than
	 * the base's, a base newer than the stored term, a base index
	 * without a term, a membership that is not the configured one. */
	EXPECT(raft_restore_snapshot(r, &hs, 9, 3, NULL, ents, 2) ==
	       KEEL_ERR_INVAL);
	EXPECT(raft_restore_snapshot(r, &hs, 10, 4, NULL, ents, 2) ==
	       KEEL_ERR_INVAL);
	EXPECT(raft_restore_snapshot(r, &hs, 10, 5, NULL, NULL, 0) ==
	       KEEL_ERR_INVAL);
	EXPECT(raft_restore_snapshot(r, &hs, 10, 0, NULL, ents, 2) ==
	       KEEL_ERR_INVAL);
	struct raft_config_members other = {.n_voters = 3, .voters = {1, 2, 4}};
	EXPECT(raft_restore_snapshot(r, &hs, 10, 3, &other, ents, 2) ==
	       KEEL_ERR_INVAL);
	EXPECT(raft_restore_snapshot(r, &hs, UINT64_MAX, 3, NULL, ents, 2) ==
	       KEEL_ERR_INVAL);
	struct raft_status st;
	raft_status(r, &st);
	EXPECT_EQ_U64(st.last_index, 0); /* refusals changed nothing */

	/* Accepted (the membership in another order is the same set). The
	 * stored commit (5) is older than the base: commit and applied start
	 * at the base, and only what follows is handed out again. */
	ASSERT(raft_restore_snapshot(r, &hs, 10, 3, &conf, ents, 2) == 0);
	raft_status(r, &st);
	EXPECT_EQ_U64(st.snap_index, 10);
	EXPECT_EQ_U64(st.first_index, 11);
	EXPECT_EQ_U64(st.last_index, 12);
	EXPECT_EQ_U64(st.commit, 10);
	EXPECT_EQ_U64(st.applied, 10);
	EXPECT_EQ_U64(st.persisted, 12);
	EXPECT_EQ_U64(st.term, 4);
	struct raft_update u;
	EXPECT(!raft_ready(r, &u) || (u.n_committed == 0 && !u.snapshot));
	raft_destroy(r);

	/* A stored commit inside the log is kept. */
	r = three_voter_node(2);
	hs.commit = 11;
	ASSERT(raft_restore_snapshot(r, &hs, 10, 3, NULL, ents, 2) == 0);
	raft_status(r, &st);
	EXPECT_EQ_U64(st.commit, 11);
	ASSERT(raft_ready(r, &u));
	ASSERT(u.n_committed == 1);
	EXPECT_EQ_U64(u.committed[0].index, 11);
	raft_advance(r, &u);
	raft_destroy(r);
}

/* A follower handed a snapshot its log does not hold: rebased, told to
 * install, acknowledgement after persistence; the same message again is
 * stale; bad snapshot messages are refused or ignored without effect. */
TEST(follower_installs_snapshot)
{
	struct raft *r = three_voter_node(2);
	struct raft_config_members conf = {.n_voters = 3, .voters = {1, 2, 3}};
	struct raft_event ev = {.type = RAFT_EV_RECEIVE};
	struct raft_msg snap = {.type = RAFT_MSG_SNAPSHOT, .from = 1, .to = 2,
				.term = 3, .index = 20, .log_term = 2,
				.commit = 25, .conf = &conf};
	struct raft_status st;

	/* Malformed: no membership, index 0, a term newer than the
	 * message's, a membership with no voter. */
	ev.receive = snap;
	ev.receive.conf = NULL;
	EXPECT(raft_step(r, &ev) == KEEL_ERR_INVAL);
	ev.receive = snap;
	ev.receive.index = 0;
	EXPECT(raft_step(r, &ev) == KEEL_ERR_INVAL);
	ev.receive = snap;
	ev.receive.log_term = 4;
	EXPECT(raft_step(r, &ev) == KEEL_ERR_INVAL);
	struct raft_config_members empty = {0};
	ev.receive = snap;
	ev.receive.conf = &empty;
	EXPECT(raft_step(r, &ev) == KEEL_ERR_INVAL);
	raft_status(r, &st);
	EXPECT_EQ_U64(st.term, 0);
	/* Another membership cannot come from this cluster: ignored. */
	struct raft_config_members other = {.n_voters = 3, .voters = {1, 2, 4}};
	ev.receive = snap;
	ev.receive.conf = &other;
	EXPECT(raft_step(r, &ev) == 0);
	raft_status(r, &st);
	EXPECT_EQ_U64(st.snap_index, 0);
	EXPECT_EQ_U64(st.commit, 0);
	struct raft_update u;
	if (raft_ready(r, &u)) {
		EXPECT(u.snapshot == NULL);
		EXPECT(u.n_msgs_after_persist == 0);
		raft_advance(r, &u);
	}

	ev.receive = snap;
	ASSERT(raft_step(r, &ev) == 0);
	raft_status(r, &st);
	EXPECT_EQ_U64(st.snap_index, 20);
	EXPECT_EQ_U64(st.snap_term, 2);
	EXPECT_EQ_U64(st.last_index, 20);
	EXPECT_EQ_U64(st.commit, 20);
	EXPECT_EQ_U64(st.applied, 20);
	ASSERT(raft_ready(r, &u));
	ASSERT(u.snapshot != NULL);
	EXPECT_EQ_U64(u.snapshot->index, 20);
	EXPECT_EQ_U64(u.snapshot->term, 2);
	EXPECT_EQ_U64(u.snapshot->conf.n_voters, 3);
	EXPECT(u.n_committed == 0);
	EXPECT(u.n_msgs == 0); /* the ack waits for the install */
	ASSERT(u.n_msgs_after_persist == 1);
	EXPECT(u.msgs_after_persist[0].type == RAFT_MSG_APPEND_RESP);
	EXPECT(!u.msgs_after_persist[0].reject);
	EXPECT_EQ_U64(u.msgs_after_persist[0].index, 20);
	EXPECT(u.hard_state_changed);
	EXPECT_EQ_U64(u.hard_state.commit, 20);
	raft_advance(r, &u);

	/* Again: stale, answered with the commit index, nothing to install. */
	ASSERT(raft_step(r, &ev) == 0);
	ASSERT(raft_ready(r, &u));
	EXPECT(u.snapshot == NULL);
	ASSERT(u.n_msgs_after_persist == 1);
	EXPECT_EQ_U64(u.msgs_after_persist[0].index, 20);
	raft_advance(r, &u);

	/* Appends continue from the base. */
	struct raft_entry e = {.term = 3, .index = 21};
	ev.receive = (struct raft_msg){.type = RAFT_MSG_APPEND, .from = 1,
				       .to = 2, .term = 3, .index = 20,
				       .log_term = 2, .commit = 21,
				       .n_entries = 1, .entries = &e};
	ASSERT(raft_step(r, &ev) == 0);
	ASSERT(raft_ready(r, &u));
	ASSERT(u.n_entries == 1);
	EXPECT_EQ_U64(u.entries[0].index, 21);
	ASSERT(u.n_msgs_after_persist == 1);
	EXPECT(!u.msgs_after_persist[0].reject);
	EXPECT_EQ_U64(u.msgs_after_persist[0].index, 21);
	raft_advance(r, &u);
	raft_destroy(r);
}

TEST(snapshot_status_contract)
{
	struct raft *r = three_voter_node(1);
	struct raft_event ev = {.type = RAFT_EV_SNAPSHOT_STATUS,
				.snapshot_status = {.peer = 2, .ok = false}};
	/* Not the leader (any more): a late report is ignored. */
	EXPECT(raft_step(r, &ev) == 0);
	ev.snapshot_status.peer = 9;
	EXPECT(raft_step(r, &ev) == KEEL_ERR_UNKNOWN_NODE);
	raft_destroy(r);
}
