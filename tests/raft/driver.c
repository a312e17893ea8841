/*
 * driver.c -- scripted Raft scenario tests in the manner of etcd-io/raft's
 * datadriven interaction tests (raft/testdata, one .txt file per scenario).
 *
 * Each .txt file in tests/raft/testdata is a list of blocks
 *
 *     command arg arg key=value key=(1,2,3)
 *     ----
 *     expected output lines
 *     (a blank line ends the block)
 *
 * run in order against a fresh in-memory cluster of real struct raft
 * instances (one cluster per file). The actual output of each command is
 * compared with the expected lines; a mismatch prints file:line and a diff.
 * The closing line counts blocks: "N passed, M failed". With KEEL_REWRITE=1
 * (or --rewrite) the files are rewritten with the actual output, for a human
 * to review with `git diff`.
 *
 * The cluster is honest about Raft's I/O rules: process-ready sends msgs at
 * once but msgs_after_persist only after the update's entries and hard state
 * are in the node's simulated storage, and RAFT_EV_PERSISTED is stepped only
 * then. A node in manual persist mode holds its writes until `persist`.
 *
 * After every step and every command the driver checks cluster-wide safety:
 * at most one leader per term, log matching between every pair of nodes,
 * and that an entry seen committed anywhere never changes. A broken property
 * prints "VIOLATION: ..." into the block's output, which fails the block.
 *
 * The command reference is in docs/testing-raft.md.
 */
#include <ctype.h>
#include <dirent.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/raft.h"

#define MAX_NODES RAFT_MAX_VOTERS
#define MAX_ARGS 32
#define MAX_LIST 64
#define STABILIZE_ROUNDS 200

/* ---- small utilities ------------------------------------------------------ */

static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p) {
		fprintf(stderr, "driver: out of memory\n");
		exit(2);
	}
	return p;
}

static void *xrealloc(void *p, size_t n)
{
	void *np = realloc(p, n ? n : 1);
	if (!np) {
		fprintf(stderr, "driver: out of memory\n");
		exit(2);
	}
	return np;
}

static char *xstrdup(const char *s)
{
	size_t n = strlen(s);
	char *d = xmalloc(n + 1);
	memcpy(d, s, n + 1);
	return d;
}

/* A growing string: the output of one command. */
struct sbuf {
	char *s;
	size_t n, cap;
};

static struct sbuf out_buf;

static void out(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void out(const char *fmt, ...)
{
	va_list ap;
	for (;;) {
		size_t room = out_buf.cap - out_buf.n;
		va_start(ap, fmt);
		int k = vsnprintf(out_buf.s ? out_buf.s + out_buf.n : NULL, room,
				  fmt, ap);
		va_end(ap);
		if (k < 0)
			return;
		if ((size_t)k < room) {
			out_buf.n += (size_t)k;
			return;
		}
		out_buf.cap = (out_buf.cap + (size_t)k + 1) * 2;
		out_buf.s = xrealloc(out_buf.s, out_buf.cap);
	}
}

static const char *err_name(int err)
{
	switch (err) {
#define ERR_NAME_(name, value, text)                                          \
	case value:                                                           \
		return #name;
		KEEL_ERRORS(ERR_NAME_)
#undef ERR_NAME_
	default:
		return "KEEL_ERR_?";
	}
}

/* ---- deep copies of entries and messages ---------------------------------- */

static void entry_copy(struct raft_entry *d, const struct raft_entry *s)
{
	*d = *s;
	if (s->len) {
		uint8_t *p = xmalloc(s->len);
		memcpy(p, s->data, s->len);
		d->data = p;
	} else {
		d->data = NULL;
	}
}

static void entry_free(struct raft_entry *e)
{
	free((void *)(uintptr_t)e->data);
	e->data = NULL;
}

static struct raft_entry *entries_copy(const struct raft_entry *s, uint32_t n)
{
	if (n == 0)
		return NULL;
	struct raft_entry *d = xmalloc(n * sizeof(*d));
	for (uint32_t i = 0; i < n; i++)
		entry_copy(&d[i], &s[i]);
	return d;
}

static void entries_free(struct raft_entry *e, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		entry_free(&e[i]);
	free(e);
}

static void msg_copy(struct raft_msg *d, const struct raft_msg *s)
{
	*d = *s;
	d->entries = entries_copy(s->entries, s->n_entries);
	if (s->conf) {
		/* A SNAPSHOT's membership is borrowed from the sender's core,
		 * which a restart destroys while the message is in flight. */
		struct raft_config_members *c = xmalloc(sizeof(*c));
		*c = *s->conf;
		d->conf = c;
	}
}

static void msg_free(struct raft_msg *m)
{
	entries_free(m->entries, m->n_entries);
	m->entries = NULL;
	m->n_entries = 0;
	free((void *)(uintptr_t)m->conf);
	m->conf = NULL;
}

/* ---- formatting ----------------------------------------------------------- */

static const char *entry_type_name(int t)
{
	switch (t) {
	case RAFT_ENTRY_NORMAL:
		return "EntryNormal";
	case RAFT_ENTRY_NOOP:
		return "EntryNoop";
	case RAFT_ENTRY_CONF:
		return "EntryConf";
	}
	return "Entry?";
}

static void fmt_entry(const struct raft_entry *e)
{
	out("%" PRIu64 "/%" PRIu64 " %s", e->term, e->index,
	    entry_type_name(e->type));
	if (e->type == RAFT_ENTRY_NORMAL) {
		out(" \"");
		for (uint32_t i = 0; i < e->len; i++) {
			int c = e->data[i];
			if (isprint(c) && c != '"' && c != '\\')
				out("%c", c);
			else
				out("\\x%02x", c);
		}
		out("\"");
	}
}

static const char *role_name(int role)
{
	switch (role) {
	case RAFT_FOLLOWER:
		return "StateFollower";
	case RAFT_PRE_CANDIDATE:
		return "StatePreCandidate";
	case RAFT_CANDIDATE:
		return "StateCandidate";
	case RAFT_LEADER:
		return "StateLeader";
	}
	return "State?";
}

static void fmt_msg(const struct raft_msg *m)
{
	out("%" PRIu64 "->%" PRIu64 " Msg%s Term:%" PRIu64, m->from, m->to,
	    raft_msg_type_name(m->type), m->term);
	switch (m->type) {
	case RAFT_MSG_PREVOTE:
	case RAFT_MSG_VOTE:
		out(" Log:%" PRIu64 "/%" PRIu64, m->log_term, m->index);
		if (m->transfer)
			out(" Transfer");
		break;
	case RAFT_MSG_PREVOTE_RESP:
	case RAFT_MSG_VOTE_RESP:
		if (m->reject)
			out(" Rejected");
		break;
	case RAFT_MSG_APPEND:
		out(" Log:%" PRIu64 "/%" PRIu64 " Commit:%" PRIu64, m->log_term,
		    m->index, m->commit);
		if (m->n_entries) {
			out(" Entries:[");
			for (uint32_t i = 0; i < m->n_entries; i++) {
				if (i)
					out(", ");
				fmt_entry(&m->entries[i]);
			}
			out("]");
		}
		break;
	case RAFT_MSG_APPEND_RESP:
		out(" Index:%" PRIu64, m->index);
		if (m->reject)
			out(" Rejected (Hint: %" PRIu64 "/%" PRIu64 ")",
			    m->hint_term, m->hint_index);
		break;
	case RAFT_MSG_HEARTBEAT:
		out(" Commit:%" PRIu64, m->commit);
		if (m->context)
			out(" Context:%" PRIu64, m->context);
		break;
	case RAFT_MSG_HEARTBEAT_RESP:
		if (m->context)
			out(" Context:%" PRIu64, m->context);
		break;
	case RAFT_MSG_SNAPSHOT:
		out(" Snapshot:%" PRIu64 "/%" PRIu64 " Commit:%" PRIu64,
		    m->log_term, m->index, m->commit);
		if (m->conf) {
			out(" Voters:(");
			for (uint32_t i = 0; i < m->conf->n_voters; i++)
				out("%s%" PRIu64, i ? " " : "",
				    m->conf->voters[i]);
			out(")");
		}
		break;
	default:
		break;
	}
}

/* ---- the cluster ---------------------------------------------------------- */

struct pending_write {
	bool hs_changed;
	struct raft_hard_state hs;
	bool has_snap; /* install snap first: the log is replaced */
	struct raft_snapshot_meta snap;
	struct raft_entry *entries;
	uint32_t n_entries;
	struct raft_msg *msgs; /* msgs_after_persist, sent once durable */
	uint32_t n_msgs;
};

struct node {
	raft_id id;
	struct raft *r;
	struct raft_config cfg;
	bool manual_persist;
	struct pending_write *pw;
	uint32_t n_pw, cap_pw;
	/* Simulated stable storage: a snapshot (index, term) and the log
	 * after it; log[k] is entry snap_index + 1 + k. */
	struct raft_hard_state hs;
	uint64_t snap_index, snap_term;
	struct raft_entry *log;
	uint64_t n_log, cap_log;
	/* The simulated state machine: entries applied (or covered by the
	 * installed snapshot). */
	uint64_t applied;
	/* Last role/term printed, for "INFO ... became" lines. */
	int seen_role;
	uint64_t seen_term;
};

struct committed_rec {
	bool set;
	struct raft_entry e; /* data owned */
};

struct leader_rec {
	uint64_t term;
	raft_id id;
};

static struct {
	struct node nodes[MAX_NODES];
	uint32_t n;
	struct raft_msg *net; /* in flight, in send order; entries owned */
	uint32_t n_net, cap_net;
	int group[MAX_NODES + 1]; /* partition group per id; 0 = healed */
	struct committed_rec *committed;
	uint64_t n_committed;
	struct leader_rec *leaders;
	uint32_t n_leaders;
	bool violation;
} C;

static struct node *node_get(raft_id id)
{
	if (id == 0 || id > C.n)
		return NULL;
	return &C.nodes[id - 1];
}

static void violation(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void violation(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	out("VIOLATION: %s\n", buf);
	C.violation = true;
}

static void cluster_reset(void)
{
	for (uint32_t i = 0; i < C.n; i++) {
		struct node *n = &C.nodes[i];
		raft_destroy(n->r);
		for (uint32_t k = 0; k < n->n_pw; k++) {
			entries_free(n->pw[k].entries, n->pw[k].n_entries);
			for (uint32_t j = 0; j < n->pw[k].n_msgs; j++)
				msg_free(&n->pw[k].msgs[j]);
			free(n->pw[k].msgs);
		}
		free(n->pw);
		for (uint64_t k = 0; k < n->n_log; k++)
			entry_free(&n->log[k]);
		free(n->log);
	}
	for (uint32_t i = 0; i < C.n_net; i++)
		msg_free(&C.net[i]);
	free(C.net);
	for (uint64_t i = 0; i < C.n_committed; i++)
		if (C.committed[i].set)
			entry_free(&C.committed[i].e);
	free(C.committed);
	free(C.leaders);
	memset(&C, 0, sizeof(C));
}

/* Election safety (§3.6.3 Figure 3.2): at most one leader per term, over
 * the whole run. Checked after every step. */
static void check_leaders(void)
{
	for (uint32_t i = 0; i < C.n; i++) {
		struct raft_status st;
		raft_status(C.nodes[i].r, &st);
		if (st.role != RAFT_LEADER)
			continue;
		bool found = false;
		for (uint32_t k = 0; k < C.n_leaders; k++) {
			if (C.leaders[k].term != st.term)
				continue;
			found = true;
			if (C.leaders[k].id != st.id)
				violation("two leaders in term %" PRIu64
					  ": %" PRIu64 " and %" PRIu64,
					  st.term, C.leaders[k].id, st.id);
		}
		if (!found) {
			C.leaders = xrealloc(C.leaders, (C.n_leaders + 1) *
								sizeof(*C.leaders));
			C.leaders[C.n_leaders++] =
				(struct leader_rec){.term = st.term, .id = st.id};
		}
	}
}

static bool entries_equal(const struct raft_entry *a, const struct raft_entry *b)
{
	return a->term == b->term && a->index == b->index &&
	       a->type == b->type && a->len == b->len &&
	       (a->len == 0 || memcmp(a->data, b->data, a->len) == 0);
}

/* State machine safety: an entry seen committed on any node is the entry
 * at that index forever, on every node that commits it. */
static void record_committed(raft_id who, const struct raft_entry *e)
{
	if (e->index >= C.n_committed) {
		uint64_t n = (e->index + 1) * 2;
		C.committed = xrealloc(C.committed, n * sizeof(*C.committed));
		memset(C.committed + C.n_committed, 0,
		       (n - C.n_committed) * sizeof(*C.committed));
		C.n_committed = n;
	}
	struct committed_rec *rec = &C.committed[e->index];
	if (!rec->set) {
		rec->set = true;
		entry_copy(&rec->e, e);
		return;
	}
	if (!entries_equal(&rec->e, e))
		violation("committed entry %" PRIu64 " changed on node %" PRIu64
			  ": was term %" PRIu64 ", now term %" PRIu64,
			  e->index, who, rec->e.term, e->term);
}

/* Log matching (§3.5): if two logs hold an entry with the same index and
 * term, the logs are identical up to it. The highest such index decides. */
static void check_log_matching(const struct node *a, const struct node *b)
{
	struct raft_status sa, sb;
	raft_status(a->r, &sa);
	raft_status(b->r, &sb);
	uint64_t hi = KEEL_MIN(sa.last_index, sb.last_index);
	for (uint64_t i = hi; i >= 1; i--) {
		const struct raft_entry *ea = raft_entry_at(a->r, i);
		const struct raft_entry *eb = raft_entry_at(b->r, i);
		if (!ea || !eb || ea->term != eb->term)
			continue;
		for (uint64_t k = 1; k <= i; k++) {
			ea = raft_entry_at(a->r, k);
			eb = raft_entry_at(b->r, k);
			/* Compacted on either side: nothing to compare (the
			 * state machine check covers what was applied). */
			if (!ea || !eb)
				continue;
			if (!entries_equal(ea, eb)) {
				violation("log matching: nodes %" PRIu64
					  " and %" PRIu64 " agree at %" PRIu64
					  " but differ at %" PRIu64,
					  a->id, b->id, i, k);
				return;
			}
		}
		return;
	}
}

static void check_cluster(void)
{
	check_leaders();
	for (uint32_t i = 0; i < C.n; i++) {
		struct node *n = &C.nodes[i];
		struct raft_status st;
		raft_status(n->r, &st);
		for (uint64_t k = 1; k <= st.commit; k++) {
			const struct raft_entry *e = raft_entry_at(n->r, k);
			if (e)
				record_committed(n->id, e);
		}
		for (uint32_t j = i + 1; j < C.n; j++)
			check_log_matching(n, &C.nodes[j]);
	}
}

/* Prints role/term changes since the last look, like etcd's INFO lines. */
static void note_transitions(struct node *n)
{
	struct raft_status st;
	raft_status(n->r, &st);
	if (st.role != n->seen_role || st.term != n->seen_term) {
		out("  INFO %" PRIu64 " became %s at term %" PRIu64 "\n", n->id,
		    role_name(st.role), st.term);
		n->seen_role = st.role;
		n->seen_term = st.term;
	}
}

static int node_step(struct node *n, const struct raft_event *ev)
{
	int rv = raft_step(n->r, ev);
	check_leaders();
	return rv;
}

static void net_push(const struct raft_msg *m)
{
	if (C.n_net == C.cap_net) {
		C.cap_net = C.cap_net ? C.cap_net * 2 : 64;
		C.net = xrealloc(C.net, C.cap_net * sizeof(*C.net));
	}
	msg_copy(&C.net[C.n_net++], m);
}

/* Completes a node's oldest pending write: storage first, then the
 * messages that waited for it, then the PERSISTED event. */
static void complete_write(struct node *n)
{
	KEEL_ASSERT(n->n_pw > 0);
	struct pending_write w = n->pw[0];
	memmove(n->pw, n->pw + 1, (n->n_pw - 1) * sizeof(*n->pw));
	n->n_pw--;
	if (w.hs_changed)
		n->hs = w.hs;
	if (w.has_snap) {
		/* Installing a snapshot replaces the whole stored log. */
		while (n->n_log > 0)
			entry_free(&n->log[--n->n_log]);
		n->snap_index = w.snap.index;
		n->snap_term = w.snap.term;
	}
	if (w.n_entries) {
		uint64_t from = w.entries[0].index;
		KEEL_ASSERT(from > n->snap_index &&
			    from <= n->snap_index + n->n_log + 1);
		while (n->snap_index + n->n_log >= from)
			entry_free(&n->log[--n->n_log]);
		if (n->n_log + w.n_entries > n->cap_log) {
			n->cap_log = (n->n_log + w.n_entries) * 2;
			n->log = xrealloc(n->log, n->cap_log * sizeof(*n->log));
		}
		for (uint32_t i = 0; i < w.n_entries; i++)
			n->log[n->n_log++] = w.entries[i]; /* takes the data */
	}
	for (uint32_t i = 0; i < w.n_msgs; i++) {
		net_push(&w.msgs[i]);
		msg_free(&w.msgs[i]);
	}
	free(w.msgs);
	if (w.n_entries) {
		struct raft_event ev = {.type = RAFT_EV_PERSISTED};
		ev.persisted.index = w.entries[w.n_entries - 1].index;
		ev.persisted.term = w.entries[w.n_entries - 1].term;
		int rv = node_step(n, &ev);
		if (rv)
			out("  error: persisted: %s\n", err_name(rv));
	}
	free(w.entries);
}

static void print_pending_write(const struct pending_write *w)
{
	if (w->hs_changed)
		out("  HardState Term:%" PRIu64 " Vote:%" PRIu64
		    " Commit:%" PRIu64 "\n",
		    w->hs.term, w->hs.vote, w->hs.commit);
	if (w->has_snap)
		out("  Snapshot: %" PRIu64 "/%" PRIu64 "\n", w->snap.term,
		    w->snap.index);
	if (w->n_entries)
		out("  Entries: %" PRIu64 "/%" PRIu64 "..%" PRIu64 "/%" PRIu64
		    "\n",
		    w->entries[0].term, w->entries[0].index,
		    w->entries[w->n_entries - 1].term,
		    w->entries[w->n_entries - 1].index);
	for (uint32_t i = 0; i < w->n_msgs; i++) {
		out("  send: ");
		fmt_msg(&w->msgs[i]);
		out("\n");
	}
}

/* raft_ready, print, persist (now or later), send, apply, advance. */
static bool process_ready(struct node *n, bool quiet_if_idle)
{
	struct raft_update u;
	if (!raft_ready(n->r, &u)) {
		if (!quiet_if_idle)
			out("> %" PRIu64 " no Ready\n", n->id);
		return false;
	}
	out("> %" PRIu64 " handling Ready\n", n->id);
	if (u.soft_state_changed)
		out("  SoftState %s Term:%" PRIu64 " Lead:%" PRIu64 "\n",
		    role_name(u.soft_state.role), u.soft_state.term,
		    u.soft_state.leader);
	if (u.hard_state_changed)
		out("  HardState Term:%" PRIu64 " Vote:%" PRIu64
		    " Commit:%" PRIu64 "\n",
		    u.hard_state.term, u.hard_state.vote, u.hard_state.commit);
	if (u.snapshot) {
		const struct raft_snapshot_meta *sm = u.snapshot;
		out("  Snapshot Index:%" PRIu64 " Term:%" PRIu64 " Voters:(",
		    sm->index, sm->term);
		for (uint32_t i = 0; i < sm->conf.n_voters; i++)
			out("%s%" PRIu64, i ? " " : "", sm->conf.voters[i]);
		out(")\n");
		/* The application installs the snapshot as its state
		 * machine before anything after it is applied. It must be
		 * the state every other node applied up to that index. */
		if (sm->index < C.n_committed &&
		    C.committed[sm->index].set &&
		    C.committed[sm->index].e.term != sm->term)
			violation("node %" PRIu64 " installs snapshot %" PRIu64
				  "/%" PRIu64 " but entry %" PRIu64
				  " was committed with term %" PRIu64,
				  n->id, sm->term, sm->index, sm->index,
				  C.committed[sm->index].e.term);
		if (sm->index <= n->applied)
			violation("node %" PRIu64 " installs snapshot %" PRIu64
				  " at or below applied %" PRIu64,
				  n->id, sm->index, n->applied);
		n->applied = sm->index;
	}
	if (u.n_entries) {
		out("  Entries:\n");
		for (uint32_t i = 0; i < u.n_entries; i++) {
			out("  ");
			fmt_entry(&u.entries[i]);
			out("\n");
		}
	}
	if (u.n_msgs) {
		out("  Messages:\n");
		for (uint32_t i = 0; i < u.n_msgs; i++) {
			out("  ");
			fmt_msg(&u.msgs[i]);
			out("\n");
		}
	}
	if (u.n_msgs_after_persist) {
		out("  MessagesAfterPersist:\n");
		for (uint32_t i = 0; i < u.n_msgs_after_persist; i++) {
			out("  ");
			fmt_msg(&u.msgs_after_persist[i]);
			out("\n");
		}
	}
	if (u.n_committed) {
		out("  Committed:\n");
		for (uint32_t i = 0; i < u.n_committed; i++) {
			const struct raft_entry *e = &u.committed[i];
			out("  ");
			fmt_entry(e);
			out("\n");
			if (e->index != n->applied + 1)
				violation("node %" PRIu64 " applies %" PRIu64
					  " after %" PRIu64,
					  n->id, e->index, n->applied);
			n->applied = e->index;
			record_committed(n->id, e);
		}
	}
	if (u.n_reads) {
		out("  Reads:\n");
		for (uint32_t i = 0; i < u.n_reads; i++)
			out("  id:%" PRIu64 " index:%" PRIu64 " %s\n",
			    u.reads[i].id, u.reads[i].index,
			    u.reads[i].status == RAFT_READ_OK ? "OK" : "LOST");
	}
	/* Copy everything the update lends us before it goes away. */
	for (uint32_t i = 0; i < u.n_msgs; i++)
		net_push(&u.msgs[i]);
	if (n->n_pw == n->cap_pw) {
		n->cap_pw = n->cap_pw ? n->cap_pw * 2 : 8;
		n->pw = xrealloc(n->pw, n->cap_pw * sizeof(*n->pw));
	}
	struct pending_write *w = &n->pw[n->n_pw++];
	memset(w, 0, sizeof(*w));
	w->hs_changed = u.hard_state_changed;
	w->hs = u.hard_state;
	if (u.snapshot) {
		w->has_snap = true;
		w->snap = *u.snapshot;
	}
	w->entries = entries_copy(u.entries, u.n_entries);
	w->n_entries = u.n_entries;
	w->n_msgs = u.n_msgs_after_persist;
	if (w->n_msgs) {
		w->msgs = xmalloc(w->n_msgs * sizeof(*w->msgs));
		for (uint32_t i = 0; i < w->n_msgs; i++)
			msg_copy(&w->msgs[i], &u.msgs_after_persist[i]);
	}
	raft_advance(n->r, &u);
	if (n->manual_persist) {
		if (w->hs_changed || w->has_snap || w->n_entries || w->n_msgs)
			out("  (persistence pending: %" PRIu32
			    " write(s) queued)\n",
			    n->n_pw);
		else
			n->n_pw--; /* nothing to write */
	} else {
		complete_write(n);
	}
	note_transitions(n);
	return true;
}

/* True when messages to `to` from `from` cross a partition. */
static bool partitioned(raft_id from, raft_id to)
{
	return C.group[from] != C.group[to];
}

static bool type_matches(const struct raft_msg *m, const char *type)
{
	if (!type)
		return true;
	if (!strncmp(type, "Msg", 3))
		type += 3;
	return !strcmp(raft_msg_type_name(m->type), type);
}

/* Delivers (or drops) every queued message addressed to n. */
static bool deliver_to(struct node *n, bool drop, const char *type)
{
	bool any = false, header = false;
	uint32_t i = 0;
	while (i < C.n_net) {
		if (C.net[i].to != n->id || !type_matches(&C.net[i], type)) {
			i++;
			continue;
		}
		struct raft_msg m = C.net[i];
		memmove(C.net + i, C.net + i + 1,
			(C.n_net - i - 1) * sizeof(*C.net));
		C.n_net--;
		any = true;
		if (!header) {
			out("> %" PRIu64 " %s messages\n", n->id,
			    drop ? "dropping" : "receiving");
			header = true;
		}
		out("  ");
		fmt_msg(&m);
		if (drop) {
			out("\n");
		} else if (partitioned(m.from, m.to)) {
			out(" (dropped: partition)\n");
		} else {
			out("\n");
			struct raft_event ev = {.type = RAFT_EV_RECEIVE};
			ev.receive = m;
			int rv = node_step(n, &ev);
			if (rv)
				out("  error: %s\n", err_name(rv));
			note_transitions(n);
		}
		msg_free(&m);
	}
	return any;
}

/* ---- command parsing ------------------------------------------------------ */

struct arg {
	char *key; /* NULL for positional */
	char *val;
};

struct cmd {
	char *name;
	struct arg a[MAX_ARGS];
	int n;
};

static int parse_cmd(const char *line, struct cmd *c)
{
	memset(c, 0, sizeof(*c));
	const char *p = line;
	bool first = true;
	while (*p) {
		while (*p == ' ' || *p == '\t')
			p++;
		if (!*p)
			break;
		char tok[256];
		size_t n = 0;
		int depth = 0;
		bool quoted = false;
		while (*p && (quoted || depth > 0 || (*p != ' ' && *p != '\t'))) {
			if (*p == '"')
				quoted = !quoted;
			else if (!quoted && *p == '(')
				depth++;
			else if (!quoted && *p == ')')
				depth--;
			if (n + 1 < sizeof(tok))
				tok[n++] = *p;
			p++;
		}
		tok[n] = 0;
		if (first) {
			c->name = xstrdup(tok);
			first = false;
			continue;
		}
		if (c->n >= MAX_ARGS)
			return -1;
		char *eq = tok[0] != '"' ? strchr(tok, '=') : NULL;
		if (eq) {
			*eq = 0;
			c->a[c->n].key = xstrdup(tok);
			c->a[c->n].val = xstrdup(eq + 1);
		} else {
			c->a[c->n].val = xstrdup(tok);
		}
		c->n++;
	}
	return c->name ? 0 : -1;
}

static void cmd_free(struct cmd *c)
{
	free(c->name);
	for (int i = 0; i < c->n; i++) {
		free(c->a[i].key);
		free(c->a[i].val);
	}
}

static const char *kv(const struct cmd *c, const char *key)
{
	for (int i = 0; i < c->n; i++)
		if (c->a[i].key && !strcmp(c->a[i].key, key))
			return c->a[i].val;
	return NULL;
}

/* Parses "(1,2,3)" or "1" into ids; returns the count or -1. */
static int parse_list(const char *s, uint64_t *v, int max)
{
	int n = 0;
	if (*s == '(')
		s++;
	while (*s && *s != ')') {
		char *end;
		unsigned long long x = strtoull(s, &end, 10);
		if (end == s || n >= max)
			return -1;
		v[n++] = x;
		s = end;
		if (*s == ',')
			s++;
	}
	return n;
}

static bool parse_u64(const char *s, uint64_t *v)
{
	char *end;
	if (!s || !*s)
		return false;
	*v = strtoull(s, &end, 10);
	return *end == 0;
}

static bool parse_bool(const char *s, bool dflt)
{
	if (!s)
		return dflt;
	return !strcmp(s, "true") || !strcmp(s, "1");
}

/* Positional node ids; returns the count (0 = none given). */
static int positional_ids(const struct cmd *c, raft_id *ids, int max, int skip)
{
	int n = 0;
	for (int i = 0; i < c->n; i++) {
		if (c->a[i].key)
			continue;
		if (skip > 0) {
			skip--;
			continue;
		}
		uint64_t v;
		if (!parse_u64(c->a[i].val, &v) || !node_get(v) || n >= max)
			return -1;
		ids[n++] = v;
	}
	return n;
}

static struct node *positional_node(const struct cmd *c, int at)
{
	int k = 0;
	for (int i = 0; i < c->n; i++) {
		if (c->a[i].key)
			continue;
		if (k++ == at) {
			uint64_t v;
			if (!parse_u64(c->a[i].val, &v))
				return NULL;
			return node_get(v);
		}
	}
	return NULL;
}

static const char *positional(const struct cmd *c, int at)
{
	int k = 0;
	for (int i = 0; i < c->n; i++)
		if (!c->a[i].key && k++ == at)
			return c->a[i].val;
	return NULL;
}

/* ---- commands ------------------------------------------------------------- */

static int cmd_add_nodes(const struct cmd *c)
{
	uint64_t count;
	if (!parse_u64(positional(c, 0), &count) || count == 0 ||
	    C.n + count > MAX_NODES) {
		out("error: add-nodes N\n");
		return -1;
	}
	uint64_t voters[MAX_LIST];
	int nv;
	if (kv(c, "voters")) {
		nv = parse_list(kv(c, "voters"), voters, MAX_LIST);
		if (nv <= 0) {
			out("error: voters=(...)\n");
			return -1;
		}
	} else {
		nv = (int)(C.n + count);
		for (int i = 0; i < nv; i++)
			voters[i] = (uint64_t)i + 1;
	}
	for (uint64_t k = 0; k < count; k++) {
		struct node *n = &C.nodes[C.n];
		memset(n, 0, sizeof(*n));
		n->id = C.n + 1;
		raft_config_default(&n->cfg, n->id);
		n->cfg.members.n_voters = (uint32_t)nv;
		for (int i = 0; i < nv; i++)
			n->cfg.members.voters[i] = voters[i];
		n->cfg.pre_vote = parse_bool(kv(c, "pre-vote"), true);
		n->cfg.check_quorum = parse_bool(kv(c, "check-quorum"), true);
		uint64_t v;
		if (parse_u64(kv(c, "election"), &v))
			n->cfg.election_ticks = (uint32_t)v;
		if (parse_u64(kv(c, "heartbeat"), &v))
			n->cfg.heartbeat_ticks = (uint32_t)v;
		if (parse_u64(kv(c, "max-inflight"), &v))
			n->cfg.max_inflight_msgs = (uint32_t)v;
		if (parse_u64(kv(c, "max-msg-entries"), &v))
			n->cfg.max_msg_entries = (uint32_t)v;
		if (parse_u64(kv(c, "max-uncommitted"), &v))
			n->cfg.max_uncommitted_bytes = v;
		if (parse_u64(kv(c, "seed"), &v))
			n->cfg.seed = v + k;
		n->r = raft_create(&n->cfg);
		if (!n->r) {
			out("error: raft_create failed for node %" PRIu64 "\n",
			    n->id);
			return -1;
		}
		n->seen_role = RAFT_FOLLOWER;
		C.n++;
		out("INFO %" PRIu64 " switched to configuration voters=(", n->id);
		for (int i = 0; i < nv; i++)
			out("%s%" PRIu64, i ? " " : "", voters[i]);
		out(") pre-vote=%s check-quorum=%s election=%u heartbeat=%u\n",
		    n->cfg.pre_vote ? "true" : "false",
		    n->cfg.check_quorum ? "true" : "false",
		    n->cfg.election_ticks, n->cfg.heartbeat_ticks);
	}
	return 0;
}

/* log ID terms=(1,1,2) [term=T] [vote=V] [commit=C]: preloads a durable
 * log through raft_restore, before the node's first step. Entry i gets
 * data "t<term>i<index>" so conflicting entries are told apart. */
static int cmd_log(const struct cmd *c)
{
	struct node *n = positional_node(c, 0);
	uint64_t terms[MAX_LIST];
	int nt = kv(c, "terms") ? parse_list(kv(c, "terms"), terms, MAX_LIST) : 0;
	if (!n || nt < 0) {
		out("error: log ID terms=(...)\n");
		return -1;
	}
	struct raft_hard_state hs = {0};
	hs.term = nt ? terms[nt - 1] : 0;
	uint64_t v;
	if (parse_u64(kv(c, "term"), &v))
		hs.term = v;
	if (parse_u64(kv(c, "vote"), &v))
		hs.vote = v;
	if (parse_u64(kv(c, "commit"), &v))
		hs.commit = v;
	struct raft_entry ents[MAX_LIST];
	char data[MAX_LIST][32];
	for (int i = 0; i < nt; i++) {
		int len = snprintf(data[i], sizeof(data[i]), "t%" PRIu64 "i%d",
				   terms[i], i + 1);
		ents[i] = (struct raft_entry){.term = terms[i],
					      .index = (uint64_t)i + 1,
					      .type = RAFT_ENTRY_NORMAL,
					      .len = (uint32_t)len,
					      .data = (const uint8_t *)data[i]};
	}
	int rv = raft_restore(n->r, &hs, ents, (uint32_t)nt);
	if (rv) {
		out("error: %s\n", err_name(rv));
		return 0;
	}
	n->hs = hs;
	n->log = entries_copy(ents, (uint32_t)nt);
	n->n_log = n->cap_log = (uint64_t)nt;
	n->applied = 0;
	struct raft_status st;
	raft_status(n->r, &st);
	n->seen_term = st.term;
	out("%" PRIu64 ": restored term=%" PRIu64 " vote=%" PRIu64
	    " commit=%" PRIu64 " last=%" PRIu64 "/%" PRIu64 "\n",
	    n->id, st.term, st.vote, st.commit, st.last_term, st.last_index);
	return 0;
}

static void print_step_result(struct node *n, int rv)
{
	if (rv)
		out("error: %s\n", err_name(rv));
	size_t before = out_buf.n;
	note_transitions(n);
	if (!rv && out_buf.n == before)
		out("ok\n");
}

static int cmd_simple_event(const struct cmd *c, int type)
{
	struct node *n = positional_node(c, 0);
	if (!n) {
		out("error: %s ID\n", c->name);
		return -1;
	}
	struct raft_event ev = {.type = type};
	print_step_result(n, node_step(n, &ev));
	return 0;
}

static int cmd_tick(const struct cmd *c, uint64_t count_override)
{
	struct node *n = positional_node(c, 0);
	if (!n) {
		out("error: %s ID [N]\n", c->name);
		return -1;
	}
	uint64_t count = 1;
	if (count_override)
		count = count_override;
	else if (positional(c, 1) && !parse_u64(positional(c, 1), &count))
		return -1;
	for (uint64_t i = 0; i < count; i++) {
		struct raft_event ev = {.type = RAFT_EV_TICK};
		int rv = node_step(n, &ev);
		if (rv)
			out("error: %s\n", err_name(rv));
	}
	print_step_result(n, 0);
	return 0;
}

/* tick-election ID: a leader ticks election_ticks times (one CheckQuorum
 * and transfer-timeout check); any other node ticks until its election
 * timer fires -- its role or term changes -- or 2*election_ticks-1 ticks
 * (the randomized timeout is in [e, 2e)) have passed. */
static int cmd_tick_election(const struct cmd *c)
{
	struct node *n = positional_node(c, 0);
	if (!n) {
		out("error: tick-election ID\n");
		return -1;
	}
	struct raft_status st;
	raft_status(n->r, &st);
	int role = st.role;
	uint64_t term = st.term;
	uint64_t max = role == RAFT_LEADER ? n->cfg.election_ticks
					   : 2 * (uint64_t)n->cfg.election_ticks - 1;
	for (uint64_t i = 0; i < max; i++) {
		struct raft_event ev = {.type = RAFT_EV_TICK};
		int rv = node_step(n, &ev);
		if (rv)
			out("error: %s\n", err_name(rv));
		raft_status(n->r, &st);
		if (role != RAFT_LEADER && (st.role != role || st.term != term))
			break;
	}
	print_step_result(n, 0);
	return 0;
}

static int cmd_propose(const struct cmd *c, bool batch)
{
	struct node *n = positional_node(c, 0);
	const char *arg = positional(c, 1);
	if (!n || !arg) {
		out("error: %s ID %s\n", c->name, batch ? "N" : "DATA");
		return -1;
	}
	struct raft_entry ents[MAX_LIST];
	char data[MAX_LIST][64];
	uint64_t count = 1;
	if (batch && (!parse_u64(arg, &count) || count == 0 ||
		      count > MAX_LIST)) {
		out("error: propose-batch ID N (N <= %d)\n", MAX_LIST);
		return -1;
	}
	for (uint64_t i = 0; i < count; i++) {
		if (batch) {
			snprintf(data[i], sizeof(data[i]), "b%" PRIu64, i + 1);
		} else {
			size_t len = strlen(arg);
			if (len >= 2 && arg[0] == '"' && arg[len - 1] == '"') {
				arg++;
				len -= 2;
			}
			if (len >= sizeof(data[i]))
				len = sizeof(data[i]) - 1;
			memcpy(data[i], arg, len);
			data[i][len] = 0;
		}
		ents[i] = (struct raft_entry){.type = RAFT_ENTRY_NORMAL,
					      .len = (uint32_t)strlen(data[i]),
					      .data = (const uint8_t *)data[i]};
	}
	struct raft_event ev = {.type = RAFT_EV_PROPOSE};
	ev.propose.n = (uint32_t)count;
	ev.propose.entries = ents;
	print_step_result(n, node_step(n, &ev));
	return 0;
}

static int cmd_read_index(const struct cmd *c)
{
	struct node *n = positional_node(c, 0);
	uint64_t id;
	if (!n || !parse_u64(positional(c, 1), &id)) {
		out("error: read-index ID REQID\n");
		return -1;
	}
	struct raft_event ev = {.type = RAFT_EV_READ_INDEX};
	ev.read_index.id = id;
	print_step_result(n, node_step(n, &ev));
	return 0;
}

static int cmd_transfer(const struct cmd *c)
{
	uint64_t from, to;
	if (!parse_u64(kv(c, "from"), &from) || !node_get(from) ||
	    !parse_u64(kv(c, "to"), &to)) {
		out("error: transfer-leadership from=ID to=ID\n");
		return -1;
	}
	struct node *n = node_get(from);
	struct raft_event ev = {.type = RAFT_EV_TRANSFER};
	ev.transfer.target = to;
	print_step_result(n, node_step(n, &ev));
	return 0;
}

/* Node ids from positional args, or every node when none is given. */
static int ids_or_all(const struct cmd *c, raft_id *ids, int skip)
{
	int n = positional_ids(c, ids, MAX_NODES, skip);
	if (n == 0) {
		for (uint32_t i = 0; i < C.n; i++)
			ids[i] = i + 1;
		n = (int)C.n;
	}
	return n;
}

static int cmd_process_ready(const struct cmd *c)
{
	raft_id ids[MAX_NODES];
	int n = ids_or_all(c, ids, 0);
	if (n < 0) {
		out("error: process-ready ID...\n");
		return -1;
	}
	for (int i = 0; i < n; i++)
		process_ready(node_get(ids[i]), false);
	return 0;
}

static int cmd_deliver(const struct cmd *c)
{
	raft_id ids[MAX_NODES];
	int n = ids_or_all(c, ids, 0);
	if (n < 0) {
		out("error: deliver-msgs ID... [drop=(ID,...)] [type=T]\n");
		return -1;
	}
	const char *type = kv(c, "type");
	if (kv(c, "drop")) {
		uint64_t drop[MAX_LIST];
		int nd = parse_list(kv(c, "drop"), drop, MAX_LIST);
		for (int i = 0; i < nd; i++)
			if (node_get(drop[i]))
				deliver_to(node_get(drop[i]), true, type);
		if (positional(c, 0) == NULL)
			n = 0; /* "deliver-msgs drop=3" drops only */
	}
	bool any = false;
	for (int i = 0; i < n; i++)
		any |= deliver_to(node_get(ids[i]), false, type);
	if (!any && !kv(c, "drop"))
		out("no messages\n");
	return 0;
}

static int cmd_drop(const struct cmd *c)
{
	raft_id ids[MAX_NODES];
	int n = ids_or_all(c, ids, 0);
	if (n < 0)
		return -1;
	bool any = false;
	for (int i = 0; i < n; i++)
		any |= deliver_to(node_get(ids[i]), true, kv(c, "type"));
	if (!any)
		out("no messages\n");
	return 0;
}

static int cmd_persist(const struct cmd *c)
{
	struct node *n = positional_node(c, 0);
	if (!n) {
		out("error: persist ID [N]\n");
		return -1;
	}
	uint64_t count = n->n_pw;
	if (positional(c, 1) && !parse_u64(positional(c, 1), &count))
		return -1;
	if (count > n->n_pw)
		count = n->n_pw;
	if (count == 0) {
		out("> %" PRIu64 " nothing to persist\n", n->id);
		return 0;
	}
	for (uint64_t i = 0; i < count; i++) {
		out("> %" PRIu64 " persisting\n", n->id);
		print_pending_write(&n->pw[0]);
		complete_write(n);
		note_transitions(n);
	}
	return 0;
}

static int cmd_persist_mode(const struct cmd *c)
{
	struct node *n = positional_node(c, 0);
	const char *mode = positional(c, 1);
	if (!n || !mode || (strcmp(mode, "manual") && strcmp(mode, "auto"))) {
		out("error: persist-mode ID manual|auto\n");
		return -1;
	}
	n->manual_persist = !strcmp(mode, "manual");
	if (!n->manual_persist)
		while (n->n_pw)
			complete_write(n);
	out("ok\n");
	return 0;
}

static int cmd_partition(const struct cmd *c)
{
	memset(C.group, 0, sizeof(C.group));
	int g = 1;
	for (int i = 0; i < c->n; i++) {
		if (c->a[i].key)
			return -1;
		if (!strcmp(c->a[i].val, "/")) {
			g++;
			continue;
		}
		uint64_t id;
		if (!parse_u64(c->a[i].val, &id) || !node_get(id)) {
			out("error: partition ID... / ID...\n");
			return -1;
		}
		C.group[id] = g;
	}
	/* Nodes not named stand alone. */
	for (uint32_t id = 1; id <= C.n; id++)
		if (C.group[id] == 0)
			C.group[id] = ++g;
	out("ok\n");
	return 0;
}

static int cmd_heal(void)
{
	memset(C.group, 0, sizeof(C.group));
	out("ok\n");
	return 0;
}

static int cmd_stabilize(const struct cmd *c)
{
	raft_id ids[MAX_NODES];
	int n = ids_or_all(c, ids, 0);
	if (n < 0)
		return -1;
	for (int round = 0; round < STABILIZE_ROUNDS; round++) {
		bool busy = false;
		for (int i = 0; i < n; i++)
			busy |= process_ready(node_get(ids[i]), true);
		for (int i = 0; i < n; i++)
			busy |= deliver_to(node_get(ids[i]), false, NULL);
		if (!busy)
			return 0;
	}
	out("error: not stable after %d rounds\n", STABILIZE_ROUNDS);
	return 0;
}

static const char *progress_name(int s)
{
	switch (s) {
	case RAFT_PROGRESS_REPLICATE:
		return "StateReplicate";
	case RAFT_PROGRESS_SNAPSHOT:
		return "StateSnapshot";
	default:
		return "StateProbe";
	}
}

static int cmd_status(const struct cmd *c)
{
	struct node *n = positional_node(c, 0);
	if (!n) {
		out("error: status ID\n");
		return -1;
	}
	struct raft_status st;
	raft_status(n->r, &st);
	out("%" PRIu64 ": %s Term:%" PRIu64 " Vote:%" PRIu64 " Lead:%" PRIu64
	    " Commit:%" PRIu64 " Applied:%" PRIu64 " Persisted:%" PRIu64
	    " Last:%" PRIu64 "/%" PRIu64 "\n",
	    st.id, role_name(st.role), st.term, st.vote, st.leader, st.commit,
	    st.applied, st.persisted, st.last_term, st.last_index);
	if (st.snap_index)
		out("  log base %" PRIu64 "/%" PRIu64 " (first index %" PRIu64
		    ")\n",
		    st.snap_term, st.snap_index, st.first_index);
	if (st.role == RAFT_LEADER) {
		if (st.transferee)
			out("  transferring to %" PRIu64 "\n", st.transferee);
		for (uint32_t i = 0; i < st.n_peers; i++) {
			const struct raft_peer_status *p = &st.peers[i];
			out("  %" PRIu64 ": %s match=%" PRIu64 " next=%" PRIu64
			    " inflight=%" PRIu32 "%s",
			    p->id, progress_name(p->state), p->match, p->next,
			    p->inflight_msgs, p->recent_active ? " active" : "");
			if (p->state == RAFT_PROGRESS_SNAPSHOT)
				out(" pending-snapshot=%" PRIu64,
				    p->pending_snapshot);
			out("\n");
		}
	}
	return 0;
}

static int cmd_raft_log(const struct cmd *c)
{
	struct node *n = positional_node(c, 0);
	if (!n) {
		out("error: raft-log ID\n");
		return -1;
	}
	struct raft_status st;
	raft_status(n->r, &st);
	if (st.snap_index)
		out("snapshot %" PRIu64 "/%" PRIu64 "\n", st.snap_term,
		    st.snap_index);
	if (st.last_index == st.snap_index)
		out("log is empty\n");
	for (uint64_t i = st.first_index; i <= st.last_index; i++) {
		fmt_entry(raft_entry_at(n->r, i));
		out("%s\n", i <= st.commit ? " (committed)" : "");
	}
	return 0;
}

static int cmd_raft_state(void)
{
	for (uint32_t i = 0; i < C.n; i++) {
		struct raft_status st;
		raft_status(C.nodes[i].r, &st);
		out("%" PRIu64 ": %s Term:%" PRIu64 " Lead:%" PRIu64
		    " Commit:%" PRIu64 " Last:%" PRIu64 "/%" PRIu64 "\n",
		    st.id, role_name(st.role), st.term, st.leader, st.commit,
		    st.last_term, st.last_index);
	}
	return 0;
}

/* Counts queued messages, optionally of one type: "count-msgs [type=T]". */
static int cmd_count_msgs(const struct cmd *c)
{
	const char *type = kv(c, "type");
	uint32_t k = 0;
	for (uint32_t i = 0; i < C.n_net; i++)
		if (type_matches(&C.net[i], type))
			k++;
	out("%" PRIu32 " message(s) in flight%s%s\n", k, type ? " of type " : "",
	    type ? type : "");
	return 0;
}

/* compact ID INDEX: the node's state machine has a snapshot up to INDEX;
 * the core drops the entries (raft_compact) and so does storage. */
static int cmd_compact(const struct cmd *c)
{
	struct node *n = positional_node(c, 0);
	uint64_t index;
	if (!n || !parse_u64(positional(c, 1), &index)) {
		out("error: compact ID INDEX\n");
		return -1;
	}
	struct raft_status st;
	raft_status(n->r, &st);
	int rv = raft_compact(n->r, index);
	if (rv) {
		out("error: %s\n", err_name(rv));
		return 0;
	}
	if (index > n->snap_index) {
		/* Stored entries up to index are durable (index <= persisted)
		 * and now covered by the snapshot. */
		uint64_t drop = KEEL_MIN(index - n->snap_index, n->n_log);
		n->snap_term = raft_term_at(n->r, index, NULL);
		for (uint64_t k = 0; k < drop; k++)
			entry_free(&n->log[k]);
		memmove(n->log, n->log + drop,
			(n->n_log - drop) * sizeof(*n->log));
		n->n_log -= drop;
		n->snap_index = index;
	}
	raft_status(n->r, &st);
	out("%" PRIu64 ": log base %" PRIu64 "/%" PRIu64 ", first index %" PRIu64
	    ", last %" PRIu64 "/%" PRIu64 "\n",
	    n->id, st.snap_term, st.snap_index, st.first_index, st.last_term,
	    st.last_index);
	return 0;
}

/* snapshot-status ID to=PEER ok=B: the leader's application reports how
 * streaming the snapshot's bytes to PEER went. */
static int cmd_snapshot_status(const struct cmd *c)
{
	struct node *n = positional_node(c, 0);
	uint64_t to;
	if (!n || !parse_u64(kv(c, "to"), &to) || !kv(c, "ok")) {
		out("error: snapshot-status ID to=PEER ok=true|false\n");
		return -1;
	}
	struct raft_event ev = {.type = RAFT_EV_SNAPSHOT_STATUS};
	ev.snapshot_status.peer = to;
	ev.snapshot_status.ok = parse_bool(kv(c, "ok"), false);
	print_step_result(n, node_step(n, &ev));
	return 0;
}

/* send-snapshot from=ID to=ID: queue the RAFT_MSG_SNAPSHOT the leader ID
 * would send for its current log base, as a node does when it retries a
 * snapshot transfer on its own or delivers a late copy of one. */
static int cmd_send_snapshot(const struct cmd *c)
{
	uint64_t from, to;
	if (!parse_u64(kv(c, "from"), &from) || !node_get(from) ||
	    !parse_u64(kv(c, "to"), &to) || !node_get(to)) {
		out("error: send-snapshot from=ID to=ID\n");
		return -1;
	}
	struct node *n = node_get(from);
	struct raft_status st;
	raft_status(n->r, &st);
	struct raft_msg m = {.type = RAFT_MSG_SNAPSHOT, .from = from,
			     .to = to, .term = st.term, .index = st.snap_index,
			     .log_term = st.snap_term, .commit = st.commit,
			     .conf = &n->cfg.members};
	out("queued ");
	fmt_msg(&m);
	out("\n");
	net_push(&m);
	return 0;
}

/* restart ID: the node crashes (unpersisted writes are lost) and comes
 * back from its storage: snapshot base, log and hard state, through
 * raft_restore_snapshot. Its state machine restarts from the snapshot. */
static int cmd_restart(const struct cmd *c)
{
	struct node *n = positional_node(c, 0);
	if (!n) {
		out("error: restart ID\n");
		return -1;
	}
	for (uint32_t k = 0; k < n->n_pw; k++) {
		entries_free(n->pw[k].entries, n->pw[k].n_entries);
		for (uint32_t j = 0; j < n->pw[k].n_msgs; j++)
			msg_free(&n->pw[k].msgs[j]);
		free(n->pw[k].msgs);
	}
	n->n_pw = 0;
	raft_destroy(n->r);
	n->r = raft_create(&n->cfg);
	if (!n->r) {
		out("error: raft_create failed\n");
		return -1;
	}
	int rv = raft_restore_snapshot(n->r, &n->hs, n->snap_index,
				       n->snap_term, &n->cfg.members, n->log,
				       (uint32_t)n->n_log);
	if (rv) {
		out("error: %s\n", err_name(rv));
		return 0;
	}
	n->applied = n->snap_index;
	struct raft_status st;
	raft_status(n->r, &st);
	n->seen_role = st.role;
	n->seen_term = st.term;
	out("%" PRIu64 ": restarted term=%" PRIu64 " vote=%" PRIu64
	    " commit=%" PRIu64 " applied=%" PRIu64 " base=%" PRIu64 "/%" PRIu64
	    " last=%" PRIu64 "/%" PRIu64 "\n",
	    n->id, st.term, st.vote, st.commit, st.applied, st.snap_term,
	    st.snap_index, st.last_term, st.last_index);
	return 0;
}

static void run_command(const char *line)
{
	struct cmd c;
	out_buf.n = 0;
	if (out_buf.s)
		out_buf.s[0] = 0;
	C.violation = false;
	if (parse_cmd(line, &c) != 0) {
		out("error: cannot parse command\n");
		cmd_free(&c);
		return;
	}
	if (!strcmp(c.name, "reset")) {
		cluster_reset();
		out("ok\n");
		cmd_free(&c);
		return;
	}
	bool nodes_needed = strcmp(c.name, "add-nodes") != 0;
	if (nodes_needed && C.n == 0) {
		out("error: no nodes (add-nodes first)\n");
		cmd_free(&c);
		return;
	}
	int rv = 0;
	if (!strcmp(c.name, "add-nodes"))
		rv = cmd_add_nodes(&c);
	else if (!strcmp(c.name, "log"))
		rv = cmd_log(&c);
	else if (!strcmp(c.name, "campaign"))
		rv = cmd_simple_event(&c, RAFT_EV_CAMPAIGN);
	else if (!strcmp(c.name, "propose"))
		rv = cmd_propose(&c, false);
	else if (!strcmp(c.name, "propose-batch"))
		rv = cmd_propose(&c, true);
	else if (!strcmp(c.name, "read-index"))
		rv = cmd_read_index(&c);
	else if (!strcmp(c.name, "transfer-leadership"))
		rv = cmd_transfer(&c);
	else if (!strcmp(c.name, "tick"))
		rv = cmd_tick(&c, 0);
	else if (!strcmp(c.name, "tick-election"))
		rv = cmd_tick_election(&c); else if (!strcmp(c.name, "tick-heartbeat")) {
		struct node *n = positional_node(&c, 0);
		rv = n ? cmd_tick(&c, n->cfg.heartbeat_ticks) : -1;
	} else if (!strcmp(c.name, "process-ready"))
		rv = cmd_process_ready(&c);
	else if (!strcmp(c.name, "deliver-msgs"))
		rv = cmd_deliver(&c);
	else if (!strcmp(c.name, "drop"))
		rv = cmd_drop(&c);
	else if (!strcmp(c.name, "persist"))
		rv = cmd_persist(&c);
	else if (!strcmp(c.name, "persist-mode"))
		rv = cmd_persist_mode(&c);
	else if (!strcmp(c.name, "partition"))
		rv = cmd_partition(&c);
	else if (!strcmp(c.name, "heal"))
		rv = cmd_heal();
	else if (!strcmp(c.name, "stabilize"))
		rv = cmd_stabilize(&c);
	else if (!strcmp(c.name, "status"))
		rv = cmd_status(&c);
	else if (!strcmp(c.name, "raft-log"))
		rv = cmd_raft_log(&c);
	else if (!strcmp(c.name, "raft-state"))
		rv = cmd_raft_state();
	else if (!strcmp(c.name, "count-msgs"))
		rv = cmd_count_msgs(&c);
	else if (!strcmp(c.name, "compact"))
		rv = cmd_compact(&c);
	else if (!strcmp(c.name, "snapshot-status"))
		rv = cmd_snapshot_status(&c);
	else if (!strcmp(c.name, "send-snapshot"))
		rv = cmd_send_snapshot(&c);
	else if (!strcmp(c.name, "restart"))
		rv = cmd_restart(&c);
	else
		out("error: unknown command %s\n", c.name);
	if (rv)
		out("error: bad arguments to %s\n", c.name);
	check_cluster();
	cmd_free(&c);
}

/* ---- files, blocks, diffs --------------------------------------------------- */

struct lines {
	char **v;
	size_t n, cap;
};

static void lines_push(struct lines *l, const char *s, size_t len)
{
	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 64;
		l->v = xrealloc(l->v, l->cap * sizeof(*l->v));
	}
	char *d = xmalloc(len + 1);
	memcpy(d, s, len);
	d[len] = 0;
	while (len > 0 && (d[len - 1] == '\r' || d[len - 1] == ' ' ||
			   d[len - 1] == '\t'))
		d[--len] = 0;
	l->v[l->n++] = d;
}

static void lines_free(struct lines *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	memset(l, 0, sizeof(*l));
}

static void split_lines(struct lines *l, const char *s, size_t n)
{
	size_t start = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '\n') {
			lines_push(l, s + start, i - start);
			start = i + 1;
		}
	}
	if (start < n)
		lines_push(l, s + start, n - start);
}

static int read_file(const char *path, struct lines *l)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return -1;
	char *buf = NULL;
	size_t n = 0, cap = 0;
	for (;;) {
		if (n == cap) {
			cap = cap ? cap * 2 : 4096;
			buf = xrealloc(buf, cap);
		}
		size_t k = fread(buf + n, 1, cap - n, f);
		if (k == 0)
			break;
		n += k;
	}
	fclose(f);
	split_lines(l, buf, n);
	free(buf);
	return 0;
}

/* A line diff (LCS): "-" expected only, "+" actual only, " " both. */
static void print_diff(char **a, size_t na, char **b, size_t nb)
{
	size_t *t = xmalloc((na + 1) * (nb + 1) * sizeof(*t));
#define T(i, j) t[(i) * (nb + 1) + (j)]
	for (size_t i = na + 1; i-- > 0;)
		for (size_t j = nb + 1; j-- > 0;) {
			if (i == na || j == nb)
				T(i, j) = 0;
			else if (!strcmp(a[i], b[j]))
				T(i, j) = T(i + 1, j + 1) + 1;
			else
				T(i, j) = KEEL_MAX(T(i + 1, j), T(i, j + 1));
		}
	size_t i = 0, j = 0;
	while (i < na || j < nb) {
		if (i < na && j < nb && !strcmp(a[i], b[j])) {
			printf("     %s\n", a[i]);
			i++;
			j++;
		} else if (i < na && (j == nb || T(i + 1, j) >= T(i, j + 1))) {
			printf("   - %s\n", a[i++]);
		} else {
			printf("   + %s\n", b[j++]);
		}
	}
#undef T
	free(t);
}

static int passed, failed;

static bool is_blank(const char *s)
{
	return s[0] == 0;
}

/* Runs one file; with rewrite, writes the actual output back. */
static void run_file(const char *path, bool rewrite)
{
	struct lines in = {0};
	if (read_file(path, &in) != 0) {
		printf("FAIL %s: cannot read\n", path);
		failed++;
		return;
	}
	cluster_reset();
	struct lines res = {0};
	int file_failed = 0, file_passed = 0;
	size_t i = 0;
	while (i < in.n) {
		if (is_blank(in.v[i]) || in.v[i][0] == '#') {
			lines_push(&res, in.v[i], strlen(in.v[i]));
			i++;
			continue;
		}
		size_t cmd_line = i;
		lines_push(&res, in.v[i], strlen(in.v[i]));
		i++;
		if (i >= in.n || strcmp(in.v[i], "----") != 0) {
			printf("  %s:%zu: expected ---- after the command\n",
			       path, cmd_line + 1);
			file_failed++;
			failed++;
			lines_push(&res, "----", 4);
		} else {
			lines_push(&res, in.v[i], strlen(in.v[i]));
			i++;
		}
		size_t exp_start = i;
		while (i < in.n && !is_blank(in.v[i]))
			i++;
		size_t exp_end = i;
		run_command(in.v[cmd_line]);
		struct lines act = {0};
		split_lines(&act, out_buf.s ? out_buf.s : "", out_buf.n);
		bool same = act.n == exp_end - exp_start;
		for (size_t k = 0; same && k < act.n; k++)
			same = !strcmp(act.v[k], in.v[exp_start + k]);
		if (same && !C.violation) {
			passed++;
			file_passed++;
		} else {
			failed++;
			file_failed++;
			if (!rewrite || C.violation) {
				printf("  %s:%zu: %s\n", path, cmd_line + 1,
				       in.v[cmd_line]);
				if (!same) {
					printf("   (- expected, + actual)\n");
					print_diff(in.v + exp_start,
						   exp_end - exp_start, act.v,
						   act.n);
				} else {
					printf("   output matches but reports a "
					       "violation\n");
				}
			}
		}
		for (size_t k = 0; k < act.n; k++)
			lines_push(&res, act.v[k], strlen(act.v[k]));
		lines_free(&act);
	}
	if (rewrite) {
		FILE *f = fopen(path, "wb");
		if (!f) {
			printf("FAIL %s: cannot write\n", path);
		} else {
			for (size_t k = 0; k < res.n; k++)
				fprintf(f, "%s\n", res.v[k]);
			fclose(f);
		}
		printf("%s %s (rewritten)\n", file_failed ? "diff" : "same",
		       path);
	} else {
		printf("%s %s: %d blocks passed, %d failed\n",
		       file_failed ? "FAIL" : "ok  ", path, file_passed,
		       file_failed);
	}
	fflush(stdout);
	lines_free(&res);
	lines_free(&in);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool ends_with(const char *s, const char *suf)
{
	size_t n = strlen(s), k = strlen(suf);
	return n >= k && !strcmp(s + n - k, suf);
}

static void run_path(const char *path, bool rewrite)
{
	if (ends_with(path, ".txt")) {
		run_file(path, rewrite);
		return;
	}
	DIR *d = opendir(path);
	if (!d) {
		printf("FAIL %s: cannot open\n", path);
		failed++;
		return;
	}
	char **names = NULL;
	size_t n = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (!ends_with(de->d_name, ".txt"))
			continue;
		names = xrealloc(names, (n + 1) * sizeof(*names));
		size_t len = strlen(path) + strlen(de->d_name) + 2;
		names[n] = xmalloc(len);
		snprintf(names[n], len, "%s/%s", path, de->d_name);
		n++;
	}
	closedir(d);
	qsort(names, n, sizeof(*names), cmp_str);
	for (size_t i = 0; i < n; i++) {
		run_file(names[i], rewrite);
		free(names[i]);
	}
	free(names);
}

int main(int argc, char **argv)
{
	bool rewrite = getenv("KEEL_REWRITE") &&
		       strcmp(getenv("KEEL_REWRITE"), "0") != 0;
	int npaths = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--rewrite"))
			rewrite = true;
		else
			npaths++;
	}
	if (npaths == 0) {
		run_path("tests/raft/testdata", rewrite);
	} else {
		for (int i = 1; i < argc; i++)
			if (strcmp(argv[i], "--rewrite"))
				run_path(argv[i], rewrite);
	}
	cluster_reset();
	free(out_buf.s);
	printf("%d passed, %d failed (blocks)\n", passed, failed);
	return failed ? 1 : 0;
}
