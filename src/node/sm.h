/*
 * sm.h -- the replicated state machine behind one interface
 * (docs/architecture.md decision 23): everything replicas derive from the
 * applied log -- the kv keyspace, the dedup window with its per-stream
 * program order, the session table. One applier takes a decoded entry and
 * writes exactly one reply; one digest covers all of it; the snapshot
 * payload carries each piece in its own section (nodesnap.h).
 *
 * Pure: no env, no clock, no I/O, no global state. The node owns one and
 * is the only caller; the simulator compares digests across replicas.
 */
#ifndef KEEL_NODE_SM_H
#define KEEL_NODE_SM_H

#include "keel/common.h"
#include "keel/kv.h"
#include "node/fwd.h"
#include "node/nodesnap.h"
#include "node/session.h"

struct node_sm {
	const struct keel_alloc *alloc;
	struct kv *kv;
	struct node_dedup_rec dedup[NODE_DEDUP_RECS];
	struct session_table *sessions;
	/* The newest leader stamp applied, kept monotone: the time the
	 * state is the leader's state at (READONLY reads on a non-leader).
	 * Not in snapshots: 0 after a restore until the next entry. */
	uint64_t stamp_ms;
	struct kv_tape stape;  /* a session command's reply, every replica */
	uint64_t session_runs; /* session commands run */
	uint64_t session_dups; /* ... answered from the table */
	int mutant;            /* KEEL_MUTANTS builds: enum node_mutant */
	bool no_order;         /* planted: program order not kept */
};

/* Whether an entry ran, and if not why (the same on every replica). */
enum node_sm_verdict {
	SM_RAN = 0,
	SM_DUP,   /* its (origin, boot, seq) ran before */
	SM_STALE, /* below its origin's dedup window: refused */
	SM_ORDER, /* a later write of its stream ran: refused */
};

/* 0 or KEEL_ERR_NOMEM (then fini it). */
int node_sm_init(struct node_sm *sm, const struct keel_alloc *a,
		 size_t max_tape_bytes);
void node_sm_fini(struct node_sm *sm);

/* Applies one decoded entry (its node header and body) at index: the
 * dedup window and program order decide whether it runs (*verdict); if it
 * runs, exactly one reply goes to r (an error reply for a body that does
 * not decode or a type this build does not know). 0, or KEEL_ERR_NOMEM:
 * the caller must stop the replica (its state may be part-changed). */
int node_sm_apply(struct node_sm *sm, const struct node_entry_hdr *h,
		  uint64_t index, const uint8_t *body, size_t len,
		  const struct kv_reply_ops *r, void *rc, int *verdict);

/* Runs a read-only command against the state at now_ms (the leader's
 * time the read is judged at): exactly one reply to r, nothing changed. */
int node_sm_read(struct node_sm *sm, uint32_t argc, const uint8_t *const *argv,
		 const size_t *lens, uint64_t now_ms,
		 const struct kv_reply_ops *r, void *rc);

/* A digest of the whole replicated state: replicas that applied the
 * same log prefix have equal digests. */
uint64_t node_sm_digest(const struct node_sm *sm);

/* The planted bugs it plays (KEEL_MUTANTS builds: enum node_mutant; the
 * server's --test-bug no-order sets no_order in any build). */
void node_sm_set_mutant(struct node_sm *sm, int mutant, bool no_order);

/* Installs a snapshot's state (taking kv and sessions, copying dedup). */
void node_sm_replace(struct node_sm *sm, struct kv *kv,
		     const struct node_dedup_rec *dedup,
		     struct session_table *sessions);

/* Whether seq is marked applied in r's window (r->high - seq < window). */
bool node_sm_dedup_bit(const struct node_dedup_rec *r, uint64_t seq);

#endif /* KEEL_NODE_SM_H */
