/*
 * node_route.c -- client requests on their way to the log: the pending
 * writes (kept in request order) and reads, the turn's proposal queue
 * (batching, docs/architecture.md decision 15), forwarding a follower's
 * requests to the leader (FWD_* frames, docs/peer-protocol.md §8) and the
 * leader's side of them, resends and request timeouts.
 *
 * Requests. Every client request gets a seq (per boot). A write's log
 * entry carries (origin, boot, seq) in a node header (fwd.h) in front of
 * the kv command entry; every replica applies it and the origin, finding
 * its own pending write by seq, answers from the reply tape it recorded.
 * A write is in one of three modes:
 *   WAIT  no leader known yet: waits (up to the timeout) for one;
 *   LOCAL proposed once by this node as leader at a known index: if
 *         another entry is applied at that index the write lost its slot
 *         and is definitely not executed (NODE_DROPPED);
 *   FWD   sent to a leader as FWD_WRITE, resent every retry_ns until an
 *         ACK: copies may reach the log more than once (retries, duplicated
 *         frames, a new leader), so it can only end executed (the first
 *         copy applied) or unknown (timeout).
 * The dedup window (node_apply.c) makes every copy after the first a
 * no-op, and refuses a copy a later write of its stream overtook.
 */
#include <string.h>

#include "node/node_internal.h"

/* ---- command bytes ---------------------------------------------------------- */

/* Decodes a kv command entry into n->argv / n->lens (grown as needed; the
 * pointers go into buf). 0, or the decoder's error / KEEL_ERR_NOMEM. */
static int decode_cmd(struct node *n, const uint8_t *buf, size_t len,
		      uint64_t *now, uint32_t *argc)
{
	for (int pass = 0; pass < 2; pass++) {
		int rv = kv_cmd_decode(buf, len, now, argc, n->argv, n->lens,
				       n->argv_cap);
		if (rv != KEEL_ERR_NOSPACE)
			return rv;
		/* Every argument costs at least its 4-byte length, so a valid
		 * argc is capped by the bytes before we allocate for it. */
		if (*argc > len / 4 || pass)
			return KEEL_ERR_MALFORMED;
		const uint8_t **na = n->alloc->realloc(
			n->alloc->ctx, n->argv, *argc * sizeof(*na));
		if (!na)
			return KEEL_ERR_NOMEM;
		n->argv = na;
		size_t *nl = n->alloc->realloc(n->alloc->ctx, n->lens,
					       *argc * sizeof(*nl));
		if (!nl)
			return KEEL_ERR_NOMEM;
		n->lens = nl;
		n->argv_cap = *argc;
	}
	return KEEL_ERR_MALFORMED;
}

/* argv as an unstamped kv command entry, in a new allocation. */
static int copy_cmd(struct node *n, const struct node_request *req,
		    uint8_t **out, size_t *out_len)
{
	size_t sz = kv_cmd_encoded_size((int)req->argc, req->lens);
	if (!sz)
		return KEEL_ERR_TOO_BIG;
	uint8_t *b = xmalloc(n, sz);
	if (!b)
		return KEEL_ERR_NOMEM;
	int rv = kv_cmd_encode(0, (int)req->argc, req->argv, req->lens, b, sz,
			       out_len);
	if (rv) {
		xfree(n, b);
		return rv;
	}
	*out = b;
	return 0;
}

/*
 * argv as a kv command entry stamped now, relative TTLs made absolute,
 * written at n->buf + off (grown); *len its bytes. 0, KEEL_ERR_TOO_BIG or
 * KEEL_ERR_NOMEM.
 */
int node_build_kv_at(struct node *n, size_t off, uint64_t now, uint32_t argc,
		     const uint8_t *const *argv, const size_t *lens,
		     size_t *len)
{
	const struct kv_command *kc = kv_command_lookup(argv[0], lens[0]);
	uint8_t *rewritten = NULL;
	int rv;
	if (kc && (kc->flags & KV_CMD_REWRITE)) {
		rv = kv_rewrite_relative(n->alloc, now, (int)argc, argv, lens,
					 &rewritten, len);
		if (rv)
			return rv;
		rv = grow(n, &n->buf, &n->buf_cap, off + *len);
		if (!rv)
			memcpy(n->buf + off, rewritten, *len);
		xfree(n, rewritten);
		return rv;
	}
	size_t sz = kv_cmd_encoded_size((int)argc, lens);
	if (!sz)
		return KEEL_ERR_TOO_BIG;
	rv = grow(n, &n->buf, &n->buf_cap, off + sz);
	if (!rv)
		rv = kv_cmd_encode(now, (int)argc, argv, lens, n->buf + off, sz,
				   len);
	return rv;
}

/* The entry type of a write by its command: transactions and the session
 * commands are their own types (docs/architecture.md decision 17). */
static uint8_t write_type(const uint8_t *name, size_t len)
{
	int sc = node_session_cmd(name, len);
	if (sc)
		return (uint8_t)sc;
	const struct kv_command *kc = kv_command_lookup(name, len);
	if (kc && (kc->flags & KV_CMD_TXN))
		return NODE_ENTRY_TXN;
	return NODE_ENTRY_KV;
}

/*
 * A leader's log entry for a write: its body by type (a kv command
 * stamped with this node's wall clock, relative TTLs made absolute; a
 * session op or command, node_session.c) behind the node header with the
 * type filled in, built into n->buf (*out_len bytes). Returns 0,
 * KEEL_ERR_TOO_BIG or KEEL_ERR_NOMEM.
 */
static int build_entry(struct node *n, const struct node_entry_hdr *hdr,
		       uint32_t argc, const uint8_t *const *argv,
		       const size_t *lens, size_t *out_len)
{
	uint64_t now = wall_ms(n);
	struct node_entry_hdr h = *hdr;
	h.type = write_type(argv[0], lens[0]);
	size_t len = 0;
	int rv;
	if (h.type == NODE_ENTRY_SESSION || h.type == NODE_ENTRY_SESSION_CMD)
		rv = node_session_build(n, NODE_ENTRY_HEADER, now, h.type, argc,
					argv, lens, &len);
	else
		rv = node_build_kv_at(n, NODE_ENTRY_HEADER, now, argc, argv,
				      lens, &len);
	if (rv)
		return rv;
	if (NODE_ENTRY_HEADER + len > UINT32_MAX)
		return KEEL_ERR_TOO_BIG;
	rv = grow(n, &n->buf, &n->buf_cap, NODE_ENTRY_HEADER);
	if (rv)
		return rv;
	node_entry_hdr_put(n->buf, &h);
	*out_len = NODE_ENTRY_HEADER + len;
	return 0;
}

/* Steps one entry into the core at once. Returns 0 and *index (where it
 * went), or the core's error (KEEL_ERR_NOT_LEADER, KEEL_ERR_TRANSFER,
 * KEEL_ERR_BUSY, KEEL_ERR_NOMEM). */
static int propose_one(struct node *n, const uint8_t *data, size_t len,
		       uint64_t *index)
{
	struct raft_entry e = {.type = RAFT_ENTRY_NORMAL,
			       .len = (uint32_t)len,
			       .data = data};
	struct raft_event ev = {.type = RAFT_EV_PROPOSE,
				.propose = {.n = 1, .entries = &e}};
	int rv = raft_step(n->raft, &ev);
	if (rv)
		return rv;
	struct raft_status st;
	raft_status(n->raft, &st);
	*index = st.last_index;
	return 0;
}

/* The leader's proposal step for argv, at once (expiry deletes). */
int node_propose_argv(struct node *n, const struct node_entry_hdr *h,
		      uint32_t argc, const uint8_t *const *argv,
		      const size_t *lens, uint64_t *index)
{
	size_t len = 0;
	int rv = build_entry(n, h, argc, argv, lens, &len);
	if (rv)
		return rv;
	return propose_one(n, n->buf, len, index);
}

void node_free_pw(struct node *n, uint32_t i)
{
	KEEL_ASSERT(i >= n->pw_lo && i < n->pw_hi && !n->pw[i].dead);
	xfree(n, n->pw[i].cmd);
	n->pw[i].cmd = NULL;
	n->pw[i].dead = true;
	n->n_pw--;
	/* the oldest may have gone: a write held for the window may go */
	if (n->window_blocked && i == n->pw_lo)
		n->want_dispatch = true;
	while (n->pw_lo < n->pw_hi && n->pw[n->pw_lo].dead)
		n->pw_lo++;
	if (n->pw_lo == n->pw_hi)
		n->pw_lo = n->pw_hi = 0;
}

/* Appends p (its seq above every pending one). The array holds twice
 * max_pending, so compaction runs at most once per max_pending appends. */
static uint32_t push_pw(struct node *n, const struct pending_write *p)
{
	KEEL_ASSERT(n->n_pw < n->cfg.max_pending);
	if (n->pw_hi == n->pw_cap) {
		uint32_t k = 0;
		for (uint32_t i = n->pw_lo; i < n->pw_hi; i++)
			if (!n->pw[i].dead)
				n->pw[k++] = n->pw[i];
		n->pw_lo = 0;
		n->pw_hi = k;
	}
	KEEL_ASSERT(n->pw_hi == n->pw_lo ||
		    n->pw[n->pw_hi - 1].seq < p->seq);
	n->pw[n->pw_hi] = *p;
	n->n_pw++;
	return n->pw_hi++;
}

void node_free_pr(struct node *n, uint32_t i)
{
	xfree(n, n->pr[i].cmd);
	n->pr[i] = n->pr[--n->n_pr];
}

int node_pw_find(struct node *n, uint64_t seq)
{
	uint32_t lo = n->pw_lo, hi = n->pw_hi;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (n->pw[mid].seq < seq)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < n->pw_hi && n->pw[lo].seq == seq && !n->pw[lo].dead
		       ? (int)lo : -1;
}

static int pr_find(struct node *n, uint64_t seq)
{
	for (uint32_t i = 0; i < n->n_pr; i++)
		if (n->pr[i].seq == seq)
			return (int)i;
	return -1;
}

/* Serves read i (its point is applied) and removes it. Its time is the
 * leader's, taken when the read point was confirmed (p.at_ms): on a
 * follower its own clock would show a key the leader already counts as
 * expired (clock behind) or hide one the leader still serves (ahead). */
static void serve_read(struct node *n, uint32_t i)
{
	struct pending_read p = n->pr[i];
	n->pr[i] = n->pr[--n->n_pr];
	uint64_t ignored;
	uint32_t argc = 0;
	int rv = decode_cmd(n, p.cmd, p.cmd_len, &ignored, &argc);
	if (rv) {
		node_answer(n, p.cookie, NODE_DROPPED, 0, NULL, 0);
	} else {
		kv_tape_reset(&n->tape);
		node_sm_read(&n->sm, argc, n->argv, n->lens, p.at_ms,
			&kv_tape_ops, &n->tape);
		if (n->tape.failed)
			node_answer(n, p.cookie, NODE_DROPPED, 0, NULL, 0);
		else
			node_answer(n, p.cookie, NODE_OK, p.index, n->tape.buf,
			       n->tape.len);
	}
	xfree(n, p.cmd);
}

void node_answer_reads(struct node *n)
{
	for (uint32_t i = 0; i < n->n_pr;) {
		struct pending_read *p = &n->pr[i];
		if (p->state == R_READY && n->applied >= p->index)
			serve_read(n, i);
		else
			i++;
	}
}

void node_take_reads(struct node *n, const struct raft_update *u)
{
	for (uint32_t k = 0; k < u->n_reads; k++) {
		const struct raft_read *rd = &u->reads[k];
		bool found = false;
		for (uint32_t i = 0; i < n->n_pr; i++) {
			struct pending_read *p = &n->pr[i];
			if (p->state != R_LOCAL || p->id != rd->id)
				continue;
			found = true;
			if (rd->status == RAFT_READ_OK) {
				p->state = R_READY;
				p->index = rd->index;
				p->at_ms = wall_ms(n); /* ours: we lead */
			} else {
				uint64_t cookie = p->cookie;
				node_free_pr(n, i);
				node_answer(n, cookie, NODE_DROPPED, 0, NULL, 0);
			}
			break;
		}
		for (uint32_t i = 0; !found && i < n->n_fr; i++) {
			struct fwd_read *f = &n->fr[i];
			if (f->id != rd->id)
				continue;
			struct fwd_read fr = *f;
			n->fr[i] = n->fr[--n->n_fr];
			if (rd->status == RAFT_READ_OK) {
				struct node_fwd m = {.type = PEER_TYPE_FWD_READ_OK,
						     .boot = fr.boot,
						     .seq = fr.seq,
						     .index = rd->index,
						     .ms = wall_ms(n)};
				node_send_fwd(n, fr.from, &m);
			} else {
				node_send_nack(n, fr.from, NODE_FWD_KIND_READ,
					  fr.boot, fr.seq, NODE_FWD_NOT_LEADER);
			}
			break;
		}
	}
}

/* Proposing is allowed now? 0, KEEL_ERR_NOT_LEADER or KEEL_ERR_TRANSFER
 * (the checks the core's propose step makes first). */
static int can_propose(struct node *n, uint64_t *term)
{
	struct raft_status st;
	raft_status(n->raft, &st);
	*term = st.term;
	if (st.role != RAFT_LEADER)
		return KEEL_ERR_NOT_LEADER;
	if (st.transferee != RAFT_NONE)
		return KEEL_ERR_TRANSFER;
	return 0;
}

/*
 * Queues argv as a proposal of this turn (from: 0 for this node's own
 * write, else the FWD_WRITE's sender). The entry is built (stamped) now
 * and stepped into the core by propose_turn when the turn ends; a full
 * queue is proposed first, so it stays bounded. Returns 0, or
 * KEEL_ERR_NOT_LEADER / KEEL_ERR_TRANSFER (not leader now: nothing
 * queued), KEEL_ERR_TOO_BIG, KEEL_ERR_NOMEM.
 */
static int queue_argv(struct node *n, raft_id from,
		      const struct node_entry_hdr *h, uint32_t argc,
		      const uint8_t *const *argv, const size_t *lens)
{
	uint64_t term;
	int rv = can_propose(n, &term);
	if (rv)
		return rv;
	if (n->n_turn >= NODE_TURN_MAX || n->turn_len >= NODE_TURN_MAX_BYTES) {
		node_propose_turn(n);
		rv = can_propose(n, &term);
		if (rv)
			return rv;
	}
	size_t len = 0;
	rv = build_entry(n, h, argc, argv, lens, &len);
	if (rv)
		return rv;
	size_t need = n->turn_len + len;
	if (need > n->turn_cap) {
		size_t ncap = KEEL_MAX(need, n->turn_cap * 2);
		rv = grow(n, &n->turn_buf, &n->turn_cap, ncap);
		if (rv)
			return rv;
	}
	memcpy(n->turn_buf + n->turn_len, n->buf, len);
	n->turn[n->n_turn++] = (struct turn_prop){.from = from,
						  .boot = h->boot,
						  .seq = h->seq,
						  .off = n->turn_len,
						  .len = (uint32_t)len};
	n->turn_len += len;
	return 0;
}

/* One queued proposal went into the log at index, in term. */
static void turn_proposed(struct node *n, const struct turn_prop *t,
			  uint64_t index, uint64_t term)
{
	if (t->from) {
		n->stats.fwd_proposed++;
		struct node_fwd ack = {.type = PEER_TYPE_FWD_ACK,
				       .boot = t->boot,
				       .seq = t->seq,
				       .term = term,
				       .index = index};
		node_send_fwd(n, t->from, &ack);
		return;
	}
	int i = node_pw_find(n, t->seq);
	if (i < 0)
		return;
	struct pending_write *p = &n->pw[i];
	p->queued = false;
	if (p->mode == W_WAIT) {
		p->mode = W_LOCAL;
		p->index = index;
	}
	p->handed = true;
	p->acked = true; /* nothing to resend while we lead */
	p->ack_leader = n->cfg.id;
	p->ack_term = term;
}

/* One queued proposal the core refused with rv. */
static void turn_refused(struct node *n, const struct turn_prop *t, int rv)
{
	bool nl = rv == KEEL_ERR_NOT_LEADER || rv == KEEL_ERR_TRANSFER;
	if (t->from) {
		node_send_nack(n, t->from, NODE_FWD_KIND_WRITE, t->boot, t->seq,
			  nl ? NODE_FWD_NOT_LEADER : NODE_FWD_BUSY);
		return;
	}
	int i = node_pw_find(n, t->seq);
	if (i < 0)
		return;
	struct pending_write *p = &n->pw[i];
	p->queued = false;
	if (nl) {
		/* wait: a leader will be known again */
		if (p->mode == W_WAIT)
			n->want_dispatch = true;
		return;
	}
	if (p->handed) {
		/* An earlier copy may be in a log: only the timeout tells. */
		p->next_try = now_ns(n) + n->cfg.retry_ns;
		return;
	}
	uint64_t cookie = p->cookie;
	node_free_pw(n, (uint32_t)i);
	node_answer(n, cookie, NODE_DROPPED, 0, NULL, 0); /* busy, nomem */
}

/* Steps the turn's queued proposals into the core as one propose event
 * (one append per peer); if the core refuses the batch for a reason other
 * than leadership (the uncommitted-bytes cap, memory), each is tried on
 * its own, as it would have been without batching. */
void node_propose_turn(struct node *n)
{
	uint32_t k = n->n_turn;
	if (!k || n->poisoned)
		return;
	for (uint32_t i = 0; i < k; i++)
		n->turn_ents[i] = (struct raft_entry){
			.type = RAFT_ENTRY_NORMAL,
			.len = n->turn[i].len,
			.data = n->turn_buf + n->turn[i].off};
	struct raft_event ev = {.type = RAFT_EV_PROPOSE,
				.propose = {.n = k, .entries = n->turn_ents}};
	int rv = raft_step(n->raft, &ev);
	struct raft_status st;
	raft_status(n->raft, &st);
	if (rv == 0) {
		KEEL_ASSERT(st.last_index >= k);
		uint64_t first = st.last_index - k + 1;
		for (uint32_t i = 0; i < k; i++)
			turn_proposed(n, &n->turn[i], first + i, st.term);
	} else if (rv == KEEL_ERR_NOT_LEADER || rv == KEEL_ERR_TRANSFER) {
		for (uint32_t i = 0; i < k; i++)
			turn_refused(n, &n->turn[i], rv);
	} else {
		for (uint32_t i = 0; i < k; i++) {
			uint64_t index = 0;
			int r1 = propose_one(n, n->turn_ents[i].data,
					     n->turn_ents[i].len, &index);
			if (r1)
				turn_refused(n, &n->turn[i], r1);
			else
				turn_proposed(n, &n->turn[i], index, st.term);
		}
	}
	n->n_turn = 0;
	n->turn_len = 0;
}

/* ---- routing requests ---------------------------------------------------------- */

static void forward_write(struct node *n, struct pending_write *p, raft_id to)
{
	struct node_fwd f = {.type = PEER_TYPE_FWD_WRITE,
			     .boot = n->boot,
			     .seq = p->seq,
			     .stream = p->stream,
			     .cmd = p->cmd,
			     .cmd_len = p->cmd_len};
	if (p->mode != W_FWD)
		n->stats.fwd_requests++;
	p->mode = W_FWD;
	p->handed = true;
	p->acked = false;
	p->sent_to = to;
	p->next_try = now_ns(n) + n->cfg.retry_ns;
	n->stats.fwd_writes_sent++;
	node_send_fwd(n, to, &f);
}

static void forward_read(struct node *n, struct pending_read *p, raft_id to)
{
	struct node_fwd f = {.type = PEER_TYPE_FWD_READ,
			     .boot = n->boot,
			     .seq = p->seq};
	if (p->state != R_FWD)
		n->stats.fwd_requests++;
	p->state = R_FWD;
	p->handed = true;
	p->next_try = now_ns(n) + n->cfg.retry_ns;
	n->stats.fwd_reads_sent++;
	node_send_fwd(n, to, &f);
}

/* Moves write i on: proposes it (leader) or forwards it (follower with a
 * known leader). Returns true when it was answered and removed. */
static bool route_write(struct node *n, uint32_t i, raft_id leader)
{
	struct pending_write *p = &n->pw[i];
	if (leader == RAFT_NONE)
		return false;
	/* The bound of the dedup window (decision 9): never hand on a write
	 * while one max_inflight_writes seqs older is unanswered, so a late
	 * copy of that one can never be below the window. It waits here. */
	if (!p->handed &&
	    p->seq - n->pw[n->pw_lo].seq >= n->cfg.max_inflight_writes) {
		if (!p->held)
			n->stats.window_waits++;
		p->held = true;
		n->window_blocked = true;
		return false;
	}
	if (leader != n->cfg.id) {
		forward_write(n, p, leader);
		return false;
	}
	if (p->queued)
		return false; /* proposed when the turn ends */
	struct node_entry_hdr h = {NODE_ENTRY_KV, n->cfg.id, n->boot, p->seq,
				   p->stream}; /* type: build_entry's */
	uint64_t ignored;
	uint32_t argc = 0;
	int rv = decode_cmd(n, p->cmd, p->cmd_len, &ignored, &argc);
	if (!rv)
		rv = queue_argv(n, 0, &h, argc, n->argv, n->lens);
	/* A full queue is flushed first, which can answer (and so move)
	 * other writes; this one was not queued, so it is still here. */
	int j = node_pw_find(n, h.seq);
	KEEL_ASSERT(j >= 0);
	i = (uint32_t)j;
	p = &n->pw[i];
	if (rv == KEEL_ERR_NOT_LEADER || rv == KEEL_ERR_TRANSFER)
		return false; /* wait: a leader will be known again */
	if (rv == 0) {
		p->queued = true; /* proposed when the turn ends */
		return false;
	}
	if (p->handed) {
		/* An earlier copy may be in a log: only the timeout tells. */
		p->next_try = now_ns(n) + n->cfg.retry_ns;
		return false;
	}
	uint64_t cookie = p->cookie;
	node_free_pw(n, i);
	node_answer(n, cookie, NODE_DROPPED, 0, NULL, 0); /* busy, too big, nomem */
	return true;
}

static bool route_read(struct node *n, uint32_t i, raft_id leader)
{
	struct pending_read *p = &n->pr[i];
	if (leader == RAFT_NONE)
		return false;
	if (leader != n->cfg.id) {
		forward_read(n, p, leader);
		return false;
	}
	uint64_t id = ++n->next_read;
	struct raft_event ev = {.type = RAFT_EV_READ_INDEX,
				.read_index = {.id = id}};
	int rv = raft_step(n->raft, &ev);
	if (rv == KEEL_ERR_NOT_LEADER || rv == KEEL_ERR_TRANSFER)
		return false;
	if (rv) {
		uint64_t cookie = p->cookie;
		node_free_pr(n, i);
		node_answer(n, cookie, NODE_DROPPED, 0, NULL, 0);
		return true;
	}
	p->state = R_LOCAL;
	p->handed = true;
	p->id = id;
	return false;
}

/* Requests waiting for a leader, and forwarded ones due for a resend. */
void node_dispatch_waiting(struct node *n)
{
	n->want_dispatch = false;
	n->window_blocked = false;
	raft_id leader = known_leader(n);
	struct raft_status st;
	raft_status(n->raft, &st);
	uint64_t now = now_ns(n);
	n->route_leader = leader;
	/* Oldest first: a stream's writes reach a (new) leader in request
	 * order, so none is refused for having been overtaken. */
	bool rev = NO_ORDER(n);
	uint32_t lo = n->pw_lo, hi = n->pw_hi;
	for (uint32_t k = lo; k < hi; k++) {
		uint32_t i = rev ? hi - 1 - (k - lo) : k;
		if (i >= n->pw_hi)
			continue; /* emptied (and reset) meanwhile */
		struct pending_write *p = &n->pw[i];
		if (p->dead)
			continue;
		bool due = p->mode == W_WAIT && !p->queued;
		if (p->mode == W_FWD) {
			/* An ACK holds while its leader still leads its term. */
			bool ack_holds = p->acked && p->ack_leader == leader &&
					 p->ack_term == st.term;
			/* A copy that went to another node is resent to the
			 * leader now, before any newer write goes there. */
			due = !ack_holds && (now >= p->next_try ||
					     (leader != RAFT_NONE &&
					      p->sent_to != leader));
		}
		if (due && leader == RAFT_NONE)
			n->want_dispatch = true;
		if (due)
			(void)route_write(n, i, leader);
	}
	for (uint32_t i = 0; i < n->n_pr;) {
		struct pending_read *p = &n->pr[i];
		bool due = p->state == R_WAIT ||
			   (p->state == R_FWD && now >= p->next_try);
		if (due && leader == RAFT_NONE)
			n->want_dispatch = true;
		if (due && route_read(n, i, leader))
			continue;
		i++;
	}
}

void node_expire_timeouts(struct node *n)
{
	uint64_t now = now_ns(n);
	for (uint32_t i = n->pw_lo; i < n->pw_hi; i++) {
		struct pending_write *p = &n->pw[i];
		if (p->dead || now < p->deadline ||
		    MUTANT(n, NODE_MUTANT_NO_WRITE_TIMEOUT))
			continue;
		uint64_t cookie = p->cookie;
		/* never handed on: waited for a leader, or for the window */
		int status = p->handed ? NODE_UNKNOWN
			     : p->held ? NODE_DROPPED
				       : NODE_NOT_LEADER;
		node_free_pw(n, i);
		node_answer(n, cookie, status, 0, NULL, 0);
	}
	for (uint32_t i = 0; i < n->n_pr;) {
		struct pending_read *p = &n->pr[i];
		if (now < p->deadline) {
			i++;
			continue;
		}
		uint64_t cookie = p->cookie;
		int status = p->handed ? NODE_DROPPED : NODE_NOT_LEADER;
		node_free_pr(n, i);
		node_answer(n, cookie, status, 0, NULL, 0);
	}
}

/* ---- inputs ------------------------------------------------------------------ */

bool node_is_member(const struct node *n, raft_id id)
{
	for (uint32_t i = 0; i < n->cfg.members.n_voters; i++)
		if (n->cfg.members.voters[i] == id)
			return true;
	return false;
}

/* The leader side of FWD_WRITE: propose with the sender as origin. */
static void on_fwd_write(struct node *n, raft_id from, const struct node_fwd *f)
{
	uint64_t ignored;
	uint32_t argc = 0;
	int rv = decode_cmd(n, f->cmd, f->cmd_len, &ignored, &argc);
	if (rv == KEEL_ERR_NOMEM) {
		node_send_nack(n, from, NODE_FWD_KIND_WRITE, f->boot, f->seq,
			  NODE_FWD_BUSY);
		return;
	}
	const struct kv_command *kc =
		rv ? NULL : kv_command_lookup(n->argv[0], n->lens[0]);
	bool session = !rv && node_session_cmd(n->argv[0], n->lens[0]);
	if (session ? node_session_validate(argc, n->argv, n->lens) != NULL
		    : (!kc || !(kc->flags & KV_CMD_WRITE) ||
		       (kc->flags & KV_CMD_INTERNAL))) {
		n->stats.fwd_bad++;
		node_send_nack(n, from, NODE_FWD_KIND_WRITE, f->boot, f->seq,
			  NODE_FWD_REFUSED);
		return;
	}
	struct node_entry_hdr h = {NODE_ENTRY_KV, from, f->boot, f->seq,
				   f->stream}; /* type: build_entry's */
	rv = queue_argv(n, from, &h, argc, n->argv, n->lens);
	if (rv) {
		bool nl = rv == KEEL_ERR_NOT_LEADER || rv == KEEL_ERR_TRANSFER;
		node_send_nack(n, from, NODE_FWD_KIND_WRITE, f->boot, f->seq,
			  nl ? NODE_FWD_NOT_LEADER : NODE_FWD_BUSY);
		return;
	}
	/* Proposed, counted and ACKed (with its index) when the turn ends. */
	n->batch_requests++;
}

static void on_fwd_read(struct node *n, raft_id from, const struct node_fwd *f)
{
	if (n->n_fr >= n->cfg.max_pending) {
		node_send_nack(n, from, NODE_FWD_KIND_READ, f->boot, f->seq,
			  NODE_FWD_BUSY);
		return;
	}
	uint64_t id = ++n->next_read;
	struct raft_event ev = {.type = RAFT_EV_READ_INDEX,
				.read_index = {.id = id}};
	int rv = raft_step(n->raft, &ev);
	if (rv) {
		bool nl = rv == KEEL_ERR_NOT_LEADER || rv == KEEL_ERR_TRANSFER;
		node_send_nack(n, from, NODE_FWD_KIND_READ, f->boot, f->seq,
			  nl ? NODE_FWD_NOT_LEADER : NODE_FWD_BUSY);
		return;
	}
	n->fr[n->n_fr++] = (struct fwd_read){id, from, f->boot, f->seq};
	n->batch_requests++;
}

/* A NACK for one of our forwarded requests: try the hinted leader (a few
 * times per retry period), else wait for the next resend. */
static void on_fwd_nack(struct node *n, raft_id from, const struct node_fwd *f)
{
	raft_id hint = f->hint;
	bool redirect = f->reason == NODE_FWD_NOT_LEADER && hint != RAFT_NONE &&
			hint != from && node_is_member(n, hint);
	if (f->kind == NODE_FWD_KIND_WRITE) {
		int i = node_pw_find(n, f->seq);
		if (i < 0 || n->pw[i].mode != W_FWD)
			return;
		struct pending_write *p = &n->pw[i];
		if (f->reason == NODE_FWD_REFUSED) {
			/* This node checked the command before forwarding it,
			 * so a refusal means the leader's kv differs (a mixed
			 * version cluster). Another leader may have taken an
			 * earlier copy: only the apply or the timeout (then
			 * NODE_UNKNOWN) may answer. */
			return;
		}
		if (redirect && hint != n->cfg.id &&
		    p->redirects < NODE_MAX_REDIRECTS) {
			p->redirects++;
			forward_write(n, p, hint);
		}
		return;
	}
	int i = pr_find(n, f->seq);
	if (i < 0 || n->pr[i].state != R_FWD)
		return;
	struct pending_read *p = &n->pr[i];
	if (redirect && hint != n->cfg.id && p->redirects < NODE_MAX_REDIRECTS) {
		p->redirects++;
		forward_read(n, p, hint);
	}
}

void node_on_fwd_frame(struct node *n, raft_id from, int type,
		       const uint8_t *body, size_t body_len)
{
	struct node_fwd f;
	if (node_fwd_decode(type, body, body_len, &f) || !node_is_member(n, from) ||
	    from == n->cfg.id) {
		n->stats.frames_bad++;
		n->stats.fwd_bad++;
		return;
	}
	switch (type) {
	case PEER_TYPE_FWD_WRITE:
		on_fwd_write(n, from, &f);
		break;
	case PEER_TYPE_FWD_READ:
		on_fwd_read(n, from, &f);
		break;
	case PEER_TYPE_FWD_NACK:
		if (f.boot == n->boot)
			on_fwd_nack(n, from, &f);
		break;
	case PEER_TYPE_FWD_ACK: {
		if (f.boot != n->boot)
			break;
		int i = node_pw_find(n, f.seq);
		if (i >= 0 && n->pw[i].mode == W_FWD) {
			n->pw[i].acked = true;
			n->pw[i].ack_leader = from;
			n->pw[i].ack_term = f.term;
		}
		break;
	}
	case PEER_TYPE_FWD_READ_OK: {
		if (f.boot != n->boot)
			break;
		int i = pr_find(n, f.seq);
		if (i >= 0 && n->pr[i].state == R_FWD) {
			n->pr[i].state = R_READY;
			n->pr[i].index = f.index;
			n->pr[i].at_ms = f.ms; /* the leader's time */
		}
		break;
	}
	default:
		break;
	}
}

int node_request_write(struct node *n, const struct node_request *req)
{
	if (n->n_pw >= n->cfg.max_pending) {
		node_answer(n, req->cookie, NODE_DROPPED, 0, NULL, 0); /* busy */
		return 0;
	}
	struct pending_write p = {.cookie = req->cookie,
				  .seq = ++n->next_seq,
				  .stream = req->stream,
				  .deadline = now_ns(n) +
					      n->cfg.request_timeout_ns,
				  .mode = W_WAIT};
	int rv = copy_cmd(n, req, &p.cmd, &p.cmd_len);
	if (!rv && p.cmd_len > NODE_MAX_FWD_CMD)
		rv = KEEL_ERR_TOO_BIG; /* could never be forwarded */
	if (rv) {
		xfree(n, p.cmd);
		node_answer(n, req->cookie, NODE_DROPPED, 0, NULL, 0);
		return 0;
	}
	raft_id leader = known_leader(n);
	/* The leader changed since the last pass: older writes go there
	 * first (oldest first), so this one cannot overtake them. */
	if (leader != n->route_leader && n->n_pw)
		node_dispatch_waiting(n);
	uint32_t at = push_pw(n, &p);
	n->batch_requests++;
	route_write(n, at, leader);
	int i = node_pw_find(n, p.seq);
	if (i >= 0 && n->pw[i].mode == W_WAIT && !n->pw[i].queued)
		n->want_dispatch = true;
	return 0;
}

int node_request_read(struct node *n, const struct node_request *req)
{
	if (req->flags & NODE_REQ_LOCAL) {
		/* Stale but never judged by a follower's clock: a leader
		 * reads at its own time (it decides expiry); any other node
		 * at the newest leader stamp it applied, where its state is
		 * a state the leader had (docs/kv.md, TTL design, 5). */
		uint64_t at = known_leader(n) == n->cfg.id ? wall_ms(n)
							   : n->sm.stamp_ms;
		kv_tape_reset(&n->tape);
		node_sm_read(&n->sm, req->argc, req->argv, req->lens, at,
			&kv_tape_ops, &n->tape);
		if (n->tape.failed)
			node_answer(n, req->cookie, NODE_DROPPED, 0, NULL, 0);
		else
			node_answer(n, req->cookie, NODE_OK, n->applied,
			       n->tape.buf, n->tape.len);
		return 0;
	}
	if (n->n_pr >= n->cfg.max_pending) {
		node_answer(n, req->cookie, NODE_DROPPED, 0, NULL, 0); /* busy */
		return 0;
	}
	struct pending_read p = {.cookie = req->cookie,
				 .seq = ++n->next_rseq,
				 .deadline = now_ns(n) +
					     n->cfg.request_timeout_ns,
				 .state = R_WAIT};
	if (copy_cmd(n, req, &p.cmd, &p.cmd_len)) {
		node_answer(n, req->cookie, NODE_DROPPED, 0, NULL, 0);
		return 0;
	}
	n->pr[n->n_pr++] = p;
	n->batch_requests++;
	route_read(n, n->n_pr - 1, known_leader(n));
	int i = pr_find(n, p.seq);
	if (i >= 0 && n->pr[i].state == R_WAIT)
		n->want_dispatch = true;
	return 0;
}
