/*
 * sm.c -- the replicated state machine (sm.h): every piece of state that
 * replicas derive from the applied log -- the kv keyspace, the dedup
 * window with its stream tables, the session table -- behind one applier,
 * one digest and the sections of the snapshot payload. Pure: no env, no
 * clock (time is the leader's, in the entries), no I/O; memory through the
 * allocator it was given. Everything it decides is a function of the
 * entries applied, so every replica decides alike.
 */
#include <string.h>

#include "keel/node.h" /* enum node_mutant */
#include "node/sm.h"

#ifdef KEEL_MUTANTS
#define SM_MUTANT(sm, m) ((sm)->mutant == (int)(m))
#else
#define SM_MUTANT(sm, m) false
#endif

int node_sm_init(struct node_sm *sm, const struct keel_alloc *a,
		 size_t max_tape_bytes)
{
	memset(sm, 0, sizeof(*sm));
	sm->alloc = a;
	kv_tape_init(&sm->stape, a, max_tape_bytes);
	sm->kv = kv_create(a);
	sm->sessions = session_table_create(a);
	return sm->kv && sm->sessions ? 0 : KEEL_ERR_NOMEM;
}

void node_sm_fini(struct node_sm *sm)
{
	if (sm->kv)
		kv_destroy(sm->kv);
	session_table_destroy(sm->sessions);
	kv_tape_close(&sm->stape);
	sm->kv = NULL;
	sm->sessions = NULL;
}

/* Hands the replicated-state mutants (KEEL_MUTANTS builds) to kv and the
 * session table: whenever either is (re)placed. */
static void set_mutants(struct node_sm *sm)
{
#ifdef KEEL_MUTANTS
	if (sm->kv)
		kv_set_mutant(sm->kv,
			      SM_MUTANT(sm, NODE_MUTANT_TXN_PARTIAL)
				      ? KV_MUTANT_TXN_PARTIAL
			      : SM_MUTANT(sm, NODE_MUTANT_WATCH_BLIND)
				      ? KV_MUTANT_WATCH_BLIND
				      : 0);
	if (sm->sessions)
		session_set_mutant(sm->sessions,
				   SM_MUTANT(sm, NODE_MUTANT_SESSION_WRONG_REPLY)
					   ? SESSION_MUTANT_WRONG_REPLY
					   : 0);
#else
	(void)sm;
#endif
}

void node_sm_set_mutant(struct node_sm *sm, int mutant, bool no_order)
{
	sm->mutant = mutant;
	sm->no_order = no_order;
	set_mutants(sm);
}

void node_sm_replace(struct node_sm *sm, struct kv *kv,
		     const struct node_dedup_rec *dedup,
		     struct session_table *sessions)
{
	kv_destroy(sm->kv);
	sm->kv = kv;
	memcpy(sm->dedup, dedup, sizeof(sm->dedup));
	session_table_destroy(sm->sessions);
	sm->sessions = sessions;
	set_mutants(sm);
}

/* ---- the dedup window (replicated state) ---------------------------------- */


bool node_sm_dedup_bit(const struct node_dedup_rec *r, uint64_t seq)
{
	uint64_t b = seq % NODE_DEDUP_WINDOW;
	return (r->bits[b / 64] >> (b % 64)) & 1u;
}

static void dedup_set(struct node_dedup_rec *r, uint64_t seq)
{
	uint64_t b = seq % NODE_DEDUP_WINDOW;
	r->bits[b / 64] |= (uint64_t)1 << (b % 64);
}

static void dedup_clear(struct node_dedup_rec *r, uint64_t seq)
{
	uint64_t b = seq % NODE_DEDUP_WINDOW;
	r->bits[b / 64] &= ~((uint64_t)1 << (b % 64));
}

static struct node_dedup_stream *stream_find(struct node_dedup_rec *r,
					     uint64_t id)
{
	for (uint32_t k = 0; k < NODE_DEDUP_STREAMS; k++)
		if (r->streams[k].id == id)
			return &r->streams[k];
	return NULL;
}

/* Program order (decision 16): a seq of a stream below that stream's
 * highest applied seq came after a later write of it ran. A stream pushed
 * out of the table is judged by the floor its push raised. */
static bool stream_overtaken(struct node_dedup_rec *r, uint64_t stream,
			     uint64_t seq)
{
	struct node_dedup_stream *st = stream_find(r, stream);
	return st ? seq < st->hw : seq < r->stream_floor;
}

/* Records seq as the stream's newest applied write. A full table pushes
 * out the stream with the oldest hw (ties: the smaller id), whose hw
 * becomes the floor: deterministic, a function of the applied log. */
static void stream_note(struct node_dedup_rec *r, uint64_t stream, uint64_t seq)
{
	struct node_dedup_stream *st = stream_find(r, stream);
	if (!st) {
		st = stream_find(r, 0);
		if (!st) {
			st = &r->streams[0];
			for (uint32_t k = 1; k < NODE_DEDUP_STREAMS; k++) {
				struct node_dedup_stream *c = &r->streams[k];
				if (c->hw < st->hw ||
				    (c->hw == st->hw && c->id < st->id))
					st = c;
			}
			if (st->hw > r->stream_floor)
				r->stream_floor = st->hw;
		}
		st->id = stream;
		st->hw = 0;
	}
	if (seq > st->hw)
		st->hw = seq;
}

/* Decides whether entry (origin, boot, seq, stream) at index executes,
 * and records it. Deterministic: depends only on the entries applied
 * before it. */
static int dedup_admit(struct node_sm *sm, const struct node_entry_hdr *h,
		       uint64_t index)
{
	struct node_dedup_rec *rec = NULL, *victim = NULL, *oldest_own = NULL;
	uint32_t own = 0;
	for (uint32_t i = 0; i < NODE_DEDUP_RECS; i++) {
		struct node_dedup_rec *r = &sm->dedup[i];
		if (r->origin == h->origin && r->boot == h->boot) {
			rec = r;
			break;
		}
		if (r->origin == h->origin) {
			own++;
			if (!oldest_own || r->last_index < oldest_own->last_index)
				oldest_own = r;
		}
		if (!victim || !r->origin ||
		    (victim->origin && r->last_index < victim->last_index))
			victim = r;
	}
	if (!rec) {
		rec = own >= NODE_DEDUP_BOOTS ? oldest_own : victim;
		memset(rec, 0, sizeof(*rec));
		rec->origin = h->origin;
		rec->boot = h->boot;
		rec->high = h->seq;
		rec->last_index = index;
		dedup_set(rec, h->seq);
		if (h->stream)
			stream_note(rec, h->stream, h->seq);
		return SM_RAN;
	}
	rec->last_index = index;
	if (h->seq <= rec->high) {
		if (rec->high - h->seq >= NODE_DEDUP_WINDOW)
			return SM_STALE;
		if (node_sm_dedup_bit(rec, h->seq) &&
		    !SM_MUTANT(sm, NODE_MUTANT_NO_DEDUP))
			return SM_DUP;
		if (h->stream && stream_overtaken(rec, h->stream, h->seq) &&
		    !sm->no_order)
			return SM_ORDER;
	} else {
		if (h->seq - rec->high >= NODE_DEDUP_WINDOW)
			memset(rec->bits, 0, sizeof(rec->bits));
		else
			for (uint64_t s = rec->high + 1; s < h->seq; s++)
				dedup_clear(rec, s);
		rec->high = h->seq;
	}
	dedup_set(rec, h->seq);
	if (h->stream)
		stream_note(rec, h->stream, h->seq);
	return SM_RAN;
}

/* ---- sessions (docs/kv.md "Sessions"; the entries: node_session.c) ------- */

static void stamp(struct node_sm *sm, uint64_t ms)
{
	if (ms > sm->stamp_ms)
		sm->stamp_ms = ms;
}

static void reply_fmt(const struct kv_reply_ops *r, void *rc, const char *a,
		      uint64_t x, const char *b, uint64_t y, const char *c)
{
	char msg[200], nx[24], ny[24];
	kv_fmt_u64(x, nx);
	kv_fmt_u64(y, ny);
	size_t k = 0;
	const char *parts[5] = {a, nx, b, ny, c};
	for (int i = 0; i < 5 && parts[i]; i++) {
		if (i == 3 && !c)
			break;
		size_t l = strlen(parts[i]);
		if (k + l >= sizeof(msg))
			l = sizeof(msg) - 1 - k;
		memcpy(msg + k, parts[i], l);
		k += l;
	}
	msg[k] = '\0';
	r->error(rc, msg);
}

static int apply_op(struct node_sm *sm, uint64_t index, const uint8_t *body,
		    size_t len, const struct kv_reply_ops *r, void *rc)
{
	if (len != SESSION_OP_BYTES || body[0] < SOP_REGISTER ||
	    body[0] > SOP_CLOSE) {
		r->error(rc, "ERR malformed session entry; not executed");
		return 0;
	}
	uint64_t now = keel_get_u64(body + 1), arg = keel_get_u64(body + 9);
	stamp(sm, now);
	struct session_table *t = sm->sessions;
	int rv;
	switch (body[0]) {
	case SOP_REGISTER:
		if (arg < SESSION_TTL_MIN_MS || arg > SESSION_TTL_MAX_MS) {
			r->error(rc, "ERR session TTL must be 1000..86400000 ms");
			return 0;
		}
		rv = session_register(t, index, arg, now);
		if (rv == KEEL_ERR_NOMEM)
			return rv;
		if (rv == KEEL_ERR_BUSY)
			reply_fmt(r, rc, "ERR too many sessions (",
				  SESSION_MAX,
				  " live): close some or let them expire; "
				  "not registered", 0, NULL);
		else if (rv)
			r->error(rc, "ERR session id in use; not registered");
		else
			r->integer(rc, (int64_t)index);
		return 0;
	case SOP_KEEPALIVE:
		rv = session_keepalive(t, arg, now);
		break;
	default:
		rv = session_close(t, arg);
		break;
	}
	if (rv)
		reply_fmt(r, rc, "NOSESSION unknown or expired session ", arg,
			  NULL, 0, NULL);
	else
		r->status(rc, "OK");
	return 0;
}

static int apply_cmd(struct node_sm *sm, uint64_t index, const uint8_t *body,
		     size_t len, const struct kv_reply_ops *r, void *rc)
{
	if (len < SESSION_CMD_FIXED + KV_CMD_HEADER_BYTES ||
	    body[SESSION_CMD_FIXED] != KV_CMD_VERSION) {
		r->error(rc, "ERR malformed session entry; not executed");
		return 0;
	}
	uint64_t sid = keel_get_u64(body), seq = keel_get_u64(body + 8);
	const uint8_t *cmd = body + SESSION_CMD_FIXED;
	size_t cmd_len = len - SESSION_CMD_FIXED;
	uint64_t now = keel_get_u64(cmd + 1);
	stamp(sm, now);
	if (seq == 0) {
		r->error(rc, "ERR malformed session entry; not executed");
		return 0;
	}
	const uint8_t *rep = NULL;
	size_t rep_len = 0;
	uint64_t high = 0;
	int v = session_check(sm->sessions, sid, seq, now, &rep, &rep_len,
			      &high);
	switch (v) {
	case SESSION_NONE:
		reply_fmt(r, rc, "NOSESSION unknown or expired session ", sid,
			  "; not executed", 0, NULL);
		return 0;
	case SESSION_OLD:
		reply_fmt(r, rc, "SESSIONOLD seq below the kept window of "
				 "session ", sid, " (newest seq ", high,
			  "): not run again; its reply is gone");
		return 0;
	case SESSION_DUP:
		sm->session_dups++;
		if (!rep) {
			r->error(rc, "SESSIONREPLY this seq already ran once; "
				     "its reply was too large to keep");
			return 0;
		}
		if (kv_tape_play(rep, rep_len, r, rc))
			r->error(rc, "ERR internal error: a kept reply does not "
				     "play");
		return 0;
	default:
		break;
	}
	/* Every replica records the reply: a retry may reach any of them. */
	kv_tape_reset(&sm->stape);
	int rv = kv_apply(sm->kv, index, cmd, cmd_len, &kv_tape_ops, &sm->stape);
	if (rv)
		return rv;
	sm->session_runs++;
	size_t keep = sm->stape.failed ? SIZE_MAX : sm->stape.len;
	rv = session_record(sm->sessions, sid, seq, sm->stape.buf, keep);
	if (rv)
		return rv;
	if (sm->stape.failed)
		r->error(rc, "SESSIONREPLY the command ran once; its reply was "
			     "too large to deliver");
	else if (kv_tape_play(sm->stape.buf, sm->stape.len, r, rc))
		r->error(rc, "ERR internal error: a reply does not play");
	return 0;
}

static int apply_session(struct node_sm *sm, uint8_t type, uint64_t index,
		       const uint8_t *body, size_t len,
		       const struct kv_reply_ops *r, void *rc)
{
	if (type == NODE_ENTRY_SESSION)
		return apply_op(sm, index, body, len, r, rc);
	return apply_cmd(sm, index, body, len, r, rc);
}

/* ---- the applier -------------------------------------------------------------- */

int node_sm_apply(struct node_sm *sm, const struct node_entry_hdr *h,
		  uint64_t index, const uint8_t *body, size_t len,
		  const struct kv_reply_ops *r, void *rc, int *verdict)
{
	/* The leader's stamp (kv.h: u8 version, u64 now_ms, ...); a
	 * malformed command has none and kv_apply answers it an error. */
	if ((h->type == NODE_ENTRY_KV || h->type == NODE_ENTRY_TXN) &&
	    len >= KV_CMD_HEADER_BYTES && body[0] == KV_CMD_VERSION)
		stamp(sm, keel_get_u64(body + 1));
	*verdict = h->origin ? dedup_admit(sm, h, index) : SM_RAN;
	if (*verdict != SM_RAN)
		return 0;
	switch (h->type) {
	case NODE_ENTRY_KV:
	case NODE_ENTRY_TXN:
		return kv_apply(sm->kv, index, body, len, r, rc);
	case NODE_ENTRY_SESSION:
	case NODE_ENTRY_SESSION_CMD:
		return apply_session(sm, h->type, index, body, len, r, rc);
	default:
		/* Written by a newer node: skipped alike everywhere. */
		r->error(rc, "ERR this node does not know the log entry's "
			     "type (a newer version wrote it); not executed");
		return 0;
	}
}

int node_sm_read(struct node_sm *sm, uint32_t argc, const uint8_t *const *argv,
		 const size_t *lens, uint64_t now_ms,
		 const struct kv_reply_ops *r, void *rc)
{
	return kv_read(sm->kv, (int)argc, argv, lens, now_ms, r, rc);
}

static uint64_t mix(uint64_t h, uint64_t w)
{
	h = (h ^ w) * 0x9e3779b97f4a7c15ull;
	return h ^ (h >> 29);
}

uint64_t node_sm_digest(const struct node_sm *sm)
{
	uint64_t h = kv_digest(sm->kv) ^ session_digest(sm->sessions);
	for (uint32_t i = 0; i < NODE_DEDUP_RECS; i++) {
		const struct node_dedup_rec *r = &sm->dedup[i];
		if (!r->origin)
			continue;
		h = mix(mix(mix(mix(mix(h, i), r->origin), r->boot), r->high),
			r->last_index);
		for (uint32_t k = 0; k < NODE_DEDUP_WORDS; k++)
			h = mix(h, r->bits[k]);
		h = mix(h, r->stream_floor);
		for (uint32_t k = 0; k < NODE_DEDUP_STREAMS; k++)
			h = mix(mix(h, r->streams[k].id), r->streams[k].hw);
	}
	return h;
}
