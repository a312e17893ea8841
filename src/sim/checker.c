/*
 * checker.c -- the simulator's cluster-wide safety checkers: the Raft
 * properties of thesis §3.6.3 (Figure 3.2) checked against what the nodes
 * actually do, step by step.
 *
 * Each check is incremental so that it can run after every simulated
 * step: the simulator feeds it what changed (a new leader, newly logged
 * entries, a node's commit index moving, an applied entry) and the
 * checker compares it with everything seen before in the run. Log
 * Matching is checked inductively: if every (index, term) anywhere names
 * the same entry with the same predecessor term, any two logs that share
 * an (index, term) are equal up to it.
 */
#include <stdio.h>
#include <string.h>

#include "sim/sim_internal.h"

static uint64_t mix64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	x ^= x >> 33;
	return x;
}

uint64_t sim_entry_hash(const struct raft_entry *e)
{
	/* Eight bytes at a time: this runs for every entry logged and
	 * applied, on every node. */
	uint64_t h = 0xcbf29ce484222325ull ^ e->type ^ ((uint64_t)e->len << 8);
	uint32_t i = 0;
	for (; i + 8 <= e->len; i += 8) {
		h = (h ^ keel_get_u64(e->data + i)) * 0x9e3779b97f4a7c15ull;
		h ^= h >> 32;
	}
	uint64_t tail = 0;
	for (uint32_t k = 0; i + k < e->len; k++)
		tail |= (uint64_t)e->data[i + k] << (8 * k);
	return mix64(h ^ tail ^ 0x5bd1e995ull);
}

static void fail(struct sim_checker *c, const char *fmt_check,
		 const char *detail)
{
	if (c->violated)
		return;
	c->violated = true;
	snprintf(c->what, sizeof(c->what), "%s at step %llu: %s", fmt_check,
		 (unsigned long long)c->step, detail);
}

void sim_checker_fail(struct sim_checker *c, const char *check,
		      const char *detail)
{
	fail(c, check, detail);
}

static int grow(void **p, uint64_t *cap, uint64_t need, size_t size)
{
	if (need <= *cap)
		return 0;
	uint64_t ncap = *cap ? *cap : 256;
	while (ncap < need)
		ncap *= 2;
	void *np = keel_alloc_libc.realloc(NULL, *p, ncap * size);
	if (!np)
		return KEEL_ERR_NOMEM;
	memset((char *)np + *cap * size, 0, (ncap - *cap) * size);
	*p = np;
	*cap = ncap;
	return 0;
}

int sim_checker_init(struct sim_checker *c, uint32_t n_nodes)
{
	memset(c, 0, sizeof(*c));
	KEEL_ASSERT(n_nodes >= 1 && n_nodes <= SIM_MAX_NODES);
	c->n_nodes = n_nodes;
	c->cap_logged = 1024;
	c->logged = keel_alloc_libc.malloc(NULL, c->cap_logged *
						       sizeof(*c->logged));
	if (!c->logged)
		return KEEL_ERR_NOMEM;
	memset(c->logged, 0, c->cap_logged * sizeof(*c->logged));
	return 0;
}

void sim_checker_close(struct sim_checker *c)
{
	keel_alloc_libc.free(NULL, c->leader_of_term);
	keel_alloc_libc.free(NULL, c->logged);
	keel_alloc_libc.free(NULL, c->committed);
	keel_alloc_libc.free(NULL, c->applied);
	keel_alloc_libc.free(NULL, c->digests);
	memset(c, 0, sizeof(*c));
}

bool sim_check_leader(struct sim_checker *c, raft_id id, uint64_t term)
{
	if (grow((void **)&c->leader_of_term, &c->cap_terms, term + 1,
		 sizeof(raft_id)))
		return true; /* out of memory: cannot check, not a verdict */
	raft_id prev = c->leader_of_term[term];
	if (prev == RAFT_NONE) {
		c->leader_of_term[term] = id;
		return true;
	}
	if (prev == id)
		return true;
	char d[128];
	snprintf(d, sizeof(d), "nodes %llu and %llu both lead term %llu",
		 (unsigned long long)prev, (unsigned long long)id,
		 (unsigned long long)term);
	fail(c, "election-safety", d);
	return false;
}

static uint64_t slot_of(uint64_t index, uint64_t term, uint64_t cap)
{
	return mix64(index * 0x9e3779b97f4a7c15ull ^ term) & (cap - 1);
}

static int logged_grow(struct sim_checker *c)
{
	uint64_t ncap = c->cap_logged * 2;
	struct sim_logged *nl =
		keel_alloc_libc.malloc(NULL, ncap * sizeof(*nl));
	if (!nl)
		return KEEL_ERR_NOMEM;
	memset(nl, 0, ncap * sizeof(*nl));
	for (uint64_t i = 0; i < c->cap_logged; i++) {
		struct sim_logged *o = &c->logged[i];
		if (!o->index)
			continue;
		uint64_t s = slot_of(o->index, o->term, ncap);
		for (uint64_t k = 0; k < ncap && nl[s].index; k++)
			s = (s + 1) & (ncap - 1);
		nl[s] = *o;
	}
	keel_alloc_libc.free(NULL, c->logged);
	c->logged = nl;
	c->cap_logged = ncap;
	return 0;
}

bool sim_check_logged(struct sim_checker *c, raft_id id, uint64_t index,
		      uint64_t term, uint64_t hash, uint64_t prev_term)
{
	KEEL_ASSERT(index > 0);
	if ((c->n_logged + 1) * 2 > c->cap_logged && logged_grow(c))
		return true;
	uint64_t s = slot_of(index, term, c->cap_logged);
	for (uint64_t k = 0; k < c->cap_logged; k++) {
		struct sim_logged *l = &c->logged[s];
		if (!l->index) {
			*l = (struct sim_logged){.index = index,
						 .term = term,
						 .hash = hash,
						 .prev_term = prev_term};
			c->n_logged++;
			return true;
		}
		if (l->index == index && l->term == term) {
			if (l->hash == hash && l->prev_term == prev_term)
				return true;
			char d[160];
			snprintf(d, sizeof(d),
				 "node %llu logs a different entry at index "
				 "%llu term %llu (%s differs)",
				 (unsigned long long)id,
				 (unsigned long long)index,
				 (unsigned long long)term,
				 l->hash != hash ? "content"
						 : "previous term");
			fail(c, "log-matching", d);
			return false;
		}
		s = (s + 1) & (c->cap_logged - 1);
	}
	KEEL_ASSERT(0 && "logged table full");
	return true;
}

bool sim_check_committed(struct sim_checker *c, raft_id id, uint64_t index,
			 uint64_t term, uint64_t hash, uint64_t node_term,
			 bool *fresh)
{
	*fresh = false;
	KEEL_ASSERT(index > 0);
	if (index <= c->n_committed) {
		struct sim_entry_id *e = &c->committed[index - 1];
		if (e->term == term && e->hash == hash)
			return true;
		char d[160];
		snprintf(d, sizeof(d),
			 "node %llu has index %llu committed as term %llu, "
			 "earlier committed as term %llu%s",
			 (unsigned long long)id, (unsigned long long)index,
			 (unsigned long long)term,
			 (unsigned long long)e->term,
			 e->term == term ? " with other content" : "");
		fail(c, "committed-entry-lost", d);
		return false;
	}
	/* Commit indexes advance one node at a time, but a node may report
	 * past the known prefix only contiguously. */
	if (index != c->n_committed + 1) {
		char d[128];
		snprintf(d, sizeof(d), "node %llu commits index %llu past a gap",
			 (unsigned long long)id, (unsigned long long)index);
		fail(c, "committed-entry-lost", d);
		return false;
	}
	if (grow((void **)&c->committed, &c->cap_committed, index,
		 sizeof(*c->committed)))
		return true;
	c->committed[index - 1] = (struct sim_entry_id){term, hash, node_term};
	c->n_committed = index;
	*fresh = true;
	return true;
}

bool sim_check_leader_log(struct sim_checker *c, raft_id id, uint64_t term,
			  uint64_t (*term_at)(const void *ctx, uint64_t index),
			  const void *ctx)
{
	/* Newest first: a missing entry is usually at the end. */
	for (uint64_t i = c->n_committed; i >= 1; i--) {
		const struct sim_entry_id *e = &c->committed[i - 1];
		if (e->commit_term >= term)
			continue;
		uint64_t t = term_at(ctx, i);
		if (t == e->term || t == SIM_TERM_COMPACTED)
			continue; /* compacted: held by its snapshot */
		char d[160];
		snprintf(d, sizeof(d),
			 "leader %llu of term %llu lacks index %llu (term "
			 "%llu) committed in term %llu (has term %llu)",
			 (unsigned long long)id, (unsigned long long)term,
			 (unsigned long long)i, (unsigned long long)e->term,
			 (unsigned long long)e->commit_term,
			 (unsigned long long)t);
		fail(c, "leader-completeness", d);
		return false;
	}
	return true;
}

bool sim_check_applied(struct sim_checker *c, raft_id id, uint64_t index,
		       uint64_t term, uint64_t hash)
{
	KEEL_ASSERT(id >= 1 && id <= SIM_MAX_NODES);
	char d[160];
	if (index != c->last_applied[id] + 1) {
		snprintf(d, sizeof(d),
			 "node %llu applies index %llu after %llu",
			 (unsigned long long)id, (unsigned long long)index,
			 (unsigned long long)c->last_applied[id]);
		fail(c, "state-machine-safety", d);
		return false;
	}
	c->last_applied[id] = index;
	if (index <= c->n_applied) {
		struct sim_entry_id *e = &c->applied[index - 1];
		if (e->term == term && e->hash == hash)
			return true;
		snprintf(d, sizeof(d),
			 "node %llu applies term %llu at index %llu, another "
			 "node applied term %llu%s",
			 (unsigned long long)id, (unsigned long long)term,
			 (unsigned long long)index,
			 (unsigned long long)e->term,
			 e->term == term ? " with other content" : "");
		fail(c, "state-machine-safety", d);
		return false;
	}
	KEEL_ASSERT(index == c->n_applied + 1);
	if (grow((void **)&c->applied, &c->cap_applied, index,
		 sizeof(*c->applied)))
		return true;
	c->applied[index - 1] = (struct sim_entry_id){term, hash, 0};
	c->n_applied = index;
	return true;
}

void sim_checker_restart(struct sim_checker *c, raft_id id)
{
	KEEL_ASSERT(id >= 1 && id <= SIM_MAX_NODES);
	c->last_applied[id] = 0;
}

void sim_checker_jump(struct sim_checker *c, raft_id id, uint64_t index)
{
	KEEL_ASSERT(id >= 1 && id <= SIM_MAX_NODES);
	if (index > c->n_applied) {
		/* A snapshot covers more than any node was seen to apply:
		 * only possible if it holds entries nobody applied. */
		char d[160];
		snprintf(d, sizeof(d),
			 "node %llu installs a snapshot at %llu, beyond every "
			 "applied index (%llu)",
			 (unsigned long long)id, (unsigned long long)index,
			 (unsigned long long)c->n_applied);
		fail(c, "state-machine-safety", d);
		return;
	}
	c->last_applied[id] = index;
}

bool sim_check_digest(struct sim_checker *c, raft_id id, uint64_t index,
		      uint64_t digest)
{
	if (index == 0)
		return true;
	if (grow((void **)&c->digests, &c->cap_digests, index,
		 sizeof(*c->digests)))
		return true; /* out of memory: cannot check, not a verdict */
	struct sim_digest *d = &c->digests[index - 1];
	c->digest_checks++;
	if (!d->node) {
		d->node = id;
		d->digest = digest;
		return true;
	}
	if (d->digest == digest)
		return true;
	char m[160];
	snprintf(m, sizeof(m),
		 "nodes %llu and %llu hold different states after applying "
		 "index %llu (digest %016llx vs %016llx)",
		 (unsigned long long)d->node, (unsigned long long)id,
		 (unsigned long long)index, (unsigned long long)d->digest,
		 (unsigned long long)digest);
	fail(c, "state-agreement", m);
	return false;
}

bool sim_check_commit_rule(struct sim_checker *c, raft_id id,
			   uint64_t leader_term, uint64_t index,
			   uint64_t entry_term)
{
	if (entry_term == leader_term)
		return true;
	char d[160];
	snprintf(d, sizeof(d),
		 "leader %llu of term %llu committed up to index %llu, an "
		 "entry of term %llu, by counting replicas",
		 (unsigned long long)id, (unsigned long long)leader_term,
		 (unsigned long long)index, (unsigned long long)entry_term);
	fail(c, "commit-rule", d);
	return false;
}

bool sim_check_durable(struct sim_checker *c, uint64_t index,
		       uint32_t durable_votes)
{
	if (durable_votes >= c->n_nodes / 2 + 1)
		return true;
	char d[128];
	snprintf(d, sizeof(d),
		 "committed index %llu is durable on %u of %u nodes",
		 (unsigned long long)index, durable_votes, c->n_nodes);
	fail(c, "committed-not-durable", d);
	return false;
}

bool sim_check_hold(struct sim_checker *c, const struct sim_hold *h)
{
	if (h->excused || h->now_local < h->taken_local)
		return true;
	uint64_t held = h->now_local - h->taken_local;
	/* The bound, 1.2 x the timeout (to the nanosecond below), saturated
	 * instead of wrapping. */
	uint64_t rt = h->request_timeout, extra = rt / SIM_HOLD_SLACK_DIV;
	uint64_t bound = rt > UINT64_MAX - extra ? UINT64_MAX : rt + extra;
	if (held <= bound)
		return true;
	char d[200];
	snprintf(d, sizeof(d),
		 "node %llu held client %u's %s for %llu ms (request timeout "
		 "%llu ms) and %s, without pausing or crashing",
		 (unsigned long long)h->node, h->client, h->op,
		 (unsigned long long)(held / 1000000),
		 (unsigned long long)(h->request_timeout / 1000000),
		 h->answered ? "only then answered" : "had not answered at the "
						      "client's timeout");
	fail(c, "request-held-silently", d);
	return false;
}
