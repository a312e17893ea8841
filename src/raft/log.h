/*
 * log.h -- the core's in-memory Raft log (internal to src/raft).
 *
 * The core keeps every entry since the last snapshot in memory; stable
 * storage is a write-through copy that the application maintains from the
 * updates. Entries live in one array e[head .. head+n); the entry before the
 * first (the snapshot point, index 0 at the start) is remembered as
 * (snap_index, snap_term) so the log-matching check works at the boundary.
 *
 * Invariant: e[head+i].index == snap_index + 1 + i.
 * Invariant: terms never decrease along the log.
 * Entry data is owned by the log (allocated through its allocator).
 */
#ifndef KEEL_RAFT_LOG_H
#define KEEL_RAFT_LOG_H

#include "keel/raft.h"

struct raft_log {
	const struct keel_alloc *alloc;
	struct raft_entry *e;
	uint64_t cap;
	uint64_t head;
	uint64_t n;
	uint64_t snap_index;
	uint64_t snap_term;
};

void raft_log_init(struct raft_log *l, const struct keel_alloc *alloc);
void raft_log_close(struct raft_log *l);

static inline uint64_t raft_log_first(const struct raft_log *l)
{
	return l->snap_index + 1;
}

static inline uint64_t raft_log_last(const struct raft_log *l)
{
	return l->snap_index + l->n;
}

/* Entry at index; index must be in [first, last]. */
static inline struct raft_entry *raft_log_get(const struct raft_log *l,
					      uint64_t index)
{
	KEEL_ASSERT(index > l->snap_index);
	KEEL_ASSERT(index <= raft_log_last(l));
	return &l->e[l->head + (index - l->snap_index - 1)];
}

/* Term at index: snap_term at the snapshot point, 0 when unknown (beyond
 * the last entry or compacted); *ok says which. */
uint64_t raft_log_term(const struct raft_log *l, uint64_t index, bool *ok);

static inline uint64_t raft_log_last_term(const struct raft_log *l)
{
	return l->n ? l->e[l->head + l->n - 1].term : l->snap_term;
}

/* Appends copies of n entries (data copied); their indexes must continue
 * the log. All or nothing: KEEL_ERR_NOMEM leaves the log unchanged. */
int raft_log_append(struct raft_log *l, const struct raft_entry *src,
		    uint64_t n);

/* Drops every entry with index >= from (from > snap_index). */
void raft_log_truncate(struct raft_log *l, uint64_t from);

/* Drops every entry with index <= index (snap_index < index <= last) and
 * makes (index, its term) the base. Frees memory only; cannot fail. */
void raft_log_compact(struct raft_log *l, uint64_t index);

/* Drops the whole log and rebases it at (index, term): a follower that
 * installs a snapshot its log does not hold (thesis
 * Figure 5.3, InstallSnapshot receiver). */
void raft_log_reset(struct raft_log *l, uint64_t index, uint64_t term);

#endif
