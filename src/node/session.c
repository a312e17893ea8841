/*
 * session.c -- the exactly-once session table (session.h).
 *
 * Sessions sit in an array of pointers sorted by id (bisect to find; a
 * register or close moves pointers, and both are rare next to commands),
 * so iteration -- digest, encoding, the purge -- is in id order on every
 * replica. Each session keeps SESSION_WINDOW reply slots indexed by
 * seq % SESSION_WINDOW; a slot whose seq is at or below high - WINDOW is
 * stale and never consulted (check answers OLD first).
 */
#include <string.h>

#include "node/session.h"

struct sess_slot {
	uint64_t seq;   /* 0 = empty */
	uint32_t len;   /* reply bytes when kept */
	uint8_t kept;   /* 1: reply holds the tape; 0: ran, reply dropped */
	uint8_t *reply; /* owned */
};

struct session {
	uint64_t id;
	uint64_t ttl_ms;
	uint64_t last_ms; /* table clock at its last activity */
	uint64_t high;    /* highest seq recorded, 0 = none */
	uint64_t bytes;   /* Invariant: sum of kept slot lengths <= budget */
	struct sess_slot slots[SESSION_WINDOW];
};

struct session_table {
	const struct keel_alloc *a;
	uint64_t clock;
	struct session **s; /* sorted by id */
	uint32_t n, cap;
#ifdef KEEL_MUTANTS
	int mutant;
#endif
};

#ifdef KEEL_MUTANTS
void session_set_mutant(struct session_table *t, int mutant)
{
	t->mutant = mutant;
}
#define WRONG_REPLY(t) ((t)->mutant == SESSION_MUTANT_WRONG_REPLY)
#else
#define WRONG_REPLY(t) false
#endif

struct session_table *session_table_create(const struct keel_alloc *a)
{
	struct session_table *t = a->malloc(a->ctx, sizeof(*t));
	if (!t)
		return NULL;
	memset(t, 0, sizeof(*t));
	t->a = a;
	return t;
}

static void free_session(struct session_table *t, struct session *s)
{
	for (uint32_t k = 0; k < SESSION_WINDOW; k++)
		t->a->free(t->a->ctx, s->slots[k].reply);
	t->a->free(t->a->ctx, s);
}

void session_table_destroy(struct session_table *t)
{
	if (!t)
		return;
	for (uint32_t i = 0; i < t->n; i++)
		free_session(t, t->s[i]);
	t->a->free(t->a->ctx, t->s);
	t->a->free(t->a->ctx, t);
}

uint64_t session_clock(const struct session_table *t)
{
	return t->clock;
}

uint32_t session_count(const struct session_table *t)
{
	return t->n;
}

static void tick(struct session_table *t, uint64_t stamp_ms)
{
	if (stamp_ms > t->clock)
		t->clock = stamp_ms;
}

/* The first position whose id is >= id. */
static uint32_t lower(const struct session_table *t, uint64_t id)
{
	uint32_t lo = 0, hi = t->n;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (t->s[mid]->id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static int find(const struct session_table *t, uint64_t id)
{
	uint32_t i = lower(t, id);
	return i < t->n && t->s[i]->id == id ? (int)i : -1;
}

static bool expired(const struct session_table *t, const struct session *s)
{
	return t->clock - s->last_ms > s->ttl_ms; /* last_ms <= clock */
}

static void remove_at(struct session_table *t, uint32_t i)
{
	free_session(t, t->s[i]);
	memmove(&t->s[i], &t->s[i + 1], (t->n - i - 1) * sizeof(t->s[0]));
	t->n--;
}

/* A live session at the table's clock, refreshed; or -1 (an expired one
 * is removed). */
static int touch(struct session_table *t, uint64_t id)
{
	int i = find(t, id);
	if (i < 0)
		return -1;
	if (expired(t, t->s[i])) {
		remove_at(t, (uint32_t)i);
		return -1;
	}
	t->s[i]->last_ms = t->clock;
	return i;
}

static void purge_expired(struct session_table *t)
{
	for (uint32_t i = 0; i < t->n;) {
		if (expired(t, t->s[i]))
			remove_at(t, i);
		else
			i++;
	}
}

int session_register(struct session_table *t, uint64_t id, uint64_t ttl_ms,
		     uint64_t stamp_ms)
{
	tick(t, stamp_ms);
	if (find(t, id) >= 0)
		return KEEL_ERR_EXISTS;
	if (t->n >= SESSION_MAX)
		purge_expired(t);
	if (t->n >= SESSION_MAX)
		return KEEL_ERR_BUSY;
	if (t->n == t->cap) {
		uint32_t ncap = t->cap ? t->cap * 2 : 16;
		if (ncap > SESSION_MAX)
			ncap = SESSION_MAX;
		struct session **ns = t->a->realloc(t->a->ctx, t->s,
						    ncap * sizeof(*ns));
		if (!ns)
			return KEEL_ERR_NOMEM;
		t->s = ns;
		t->cap = ncap;
	}
	struct session *s = t->a->malloc(t->a->ctx, sizeof(*s));
	if (!s)
		return KEEL_ERR_NOMEM;
	memset(s, 0, sizeof(*s));
	s->id = id;
	s->ttl_ms = ttl_ms;
	s->last_ms = t->clock;
	uint32_t i = lower(t, id);
	memmove(&t->s[i + 1], &t->s[i], (t->n - i) * sizeof(t->s[0]));
	t->s[i] = s;
	t->n++;
	return 0;
}

int session_keepalive(struct session_table *t, uint64_t id,
		      uint64_t stamp_ms)
{
	tick(t, stamp_ms);
	return touch(t, id) < 0 ? KEEL_ERR_NOT_FOUND : 0;
}

int session_close(struct session_table *t, uint64_t id)
{
	int i = find(t, id);
	if (i < 0)
		return KEEL_ERR_NOT_FOUND;
	remove_at(t, (uint32_t)i);
	return 0;
}

int session_check(struct session_table *t, uint64_t id, uint64_t seq,
		  uint64_t stamp_ms, const uint8_t **reply, size_t *len,
		  uint64_t *high)
{
	KEEL_ASSERT(seq >= 1);
	tick(t, stamp_ms);
	int i = touch(t, id);
	if (i < 0)
		return SESSION_NONE;
	struct session *s = t->s[i];
	*high = s->high;
	if (s->high >= SESSION_WINDOW && seq <= s->high - SESSION_WINDOW)
		return SESSION_OLD;
	struct sess_slot *sl = &s->slots[seq % SESSION_WINDOW];
	if (sl->seq != seq && !(WRONG_REPLY(t) && sl->seq != 0))
		return SESSION_RUN;
	*reply = sl->kept ? sl->reply : NULL;
	*len = sl->kept ? sl->len : 0;
	return SESSION_DUP;
}

static void drop_reply(struct session_table *t, struct session *s,
		       struct sess_slot *sl)
{
	if (sl->kept)
		s->bytes -= sl->len;
	t->a->free(t->a->ctx, sl->reply);
	sl->reply = NULL;
	sl->kept = 0;
	sl->len = 0;
}

int session_record(struct session_table *t, uint64_t id, uint64_t seq,
		   const uint8_t *tape, size_t len)
{
	int i = find(t, id);
	KEEL_ASSERT(i >= 0);
	struct session *s = t->s[i];
	struct sess_slot *sl = &s->slots[seq % SESSION_WINDOW];
	drop_reply(t, s, sl);
	sl->seq = seq;
	if (seq > s->high)
		s->high = seq;
	if (len > SESSION_REPLY_BUDGET)
		return 0; /* ran; too large to keep */
	uint8_t *copy = t->a->malloc(t->a->ctx, len ? len : 1);
	if (!copy)
		return KEEL_ERR_NOMEM;
	if (len)
		memcpy(copy, tape, len);
	sl->reply = copy;
	sl->len = (uint32_t)len;
	sl->kept = 1;
	s->bytes += len;
	/* Over the budget: drop the oldest kept replies (by seq), never
	 * this one (it alone fits). */
	while (s->bytes > SESSION_REPLY_BUDGET) {
		struct sess_slot *old = NULL;
		for (uint32_t k = 0; k < SESSION_WINDOW; k++) {
			struct sess_slot *c = &s->slots[k];
			if (c->kept && c != sl && (!old || c->seq < old->seq))
				old = c;
		}
		KEEL_ASSERT(old);
		drop_reply(t, s, old);
	}
	return 0;
}

/* ---- digest and encoding ---------------------------------------------------- */

static uint64_t mix(uint64_t h, uint64_t w)
{
	h = (h ^ w) * 0x9e3779b97f4a7c15ull;
	return h ^ (h >> 29);
}

static uint64_t mix_bytes(uint64_t h, const uint8_t *p, size_t len)
{
	size_t k = 0;
	for (; k + 8 <= len; k += 8)
		h = mix(h, keel_get_u64(p + k));
	uint64_t w = 0;
	for (size_t j = 0; k + j < len; j++)
		w |= (uint64_t)p[k + j] << (8 * j);
	return mix(h, w ^ len);
}

uint64_t session_digest(const struct session_table *t)
{
	uint64_t h = mix(0x5e55, t->clock);
	h = mix(h, t->n);
	for (uint32_t i = 0; i < t->n; i++) {
		const struct session *s = t->s[i];
		h = mix(mix(mix(mix(h, s->id), s->ttl_ms), s->last_ms),
			s->high);
		for (uint32_t k = 0; k < SESSION_WINDOW; k++) {
			const struct sess_slot *sl = &s->slots[k];
			if (!sl->seq)
				continue;
			h = mix(mix(h, sl->seq), sl->kept);
			if (sl->kept)
				h = mix_bytes(h, sl->reply, sl->len);
		}
	}
	return h;
}

/*
 * Encoding (little-endian):
 *   u32 version 1, u32 count, u64 clock
 *   count times, ids strictly increasing:
 *     u64 id, u64 ttl_ms, u64 last_ms, u64 high, u32 n_slots
 *     n_slots times, slot index (seq % WINDOW) strictly increasing:
 *       u64 seq, u8 kept, u32 len, len bytes (0 unless kept)
 */
#define SESSION_CODEC_VERSION 1u

uint64_t session_encoded_size(const struct session_table *t)
{
	uint64_t sz = 16;
	for (uint32_t i = 0; i < t->n; i++) {
		const struct session *s = t->s[i];
		sz += 36;
		for (uint32_t k = 0; k < SESSION_WINDOW; k++)
			if (s->slots[k].seq)
				sz += 13u + s->slots[k].len;
	}
	return sz;
}

void session_encode(const struct session_table *t, uint8_t *buf)
{
	uint8_t *p = buf;
	keel_put_u32(p, SESSION_CODEC_VERSION);
	keel_put_u32(p + 4, t->n);
	keel_put_u64(p + 8, t->clock);
	p += 16;
	for (uint32_t i = 0; i < t->n; i++) {
		const struct session *s = t->s[i];
		keel_put_u64(p, s->id);
		keel_put_u64(p + 8, s->ttl_ms);
		keel_put_u64(p + 16, s->last_ms);
		keel_put_u64(p + 24, s->high);
		uint32_t used = 0;
		for (uint32_t k = 0; k < SESSION_WINDOW; k++)
			used += s->slots[k].seq != 0;
		keel_put_u32(p + 32, used);
		p += 36;
		for (uint32_t k = 0; k < SESSION_WINDOW; k++) {
			const struct sess_slot *sl = &s->slots[k];
			if (!sl->seq)
				continue;
			keel_put_u64(p, sl->seq);
			p[8] = sl->kept;
			keel_put_u32(p + 9, sl->len);
			if (sl->len)
				memcpy(p + 13, sl->reply, sl->len);
			p += 13u + sl->len;
		}
	}
}

int session_decode(const struct keel_alloc *a, const uint8_t *buf,
		   size_t len, struct session_table **out)
{
	if (len > SESSION_ENCODED_MAX)
		return KEEL_ERR_TOO_BIG;
	if (len < 16)
		return KEEL_ERR_MALFORMED;
	if (keel_get_u32(buf) != SESSION_CODEC_VERSION)
		return KEEL_ERR_VERSION;
	uint32_t count = keel_get_u32(buf + 4);
	if (count > SESSION_MAX || count > (len - 16) / 36)
		return KEEL_ERR_MALFORMED;
	struct session_table *t = session_table_create(a);
	if (!t)
		return KEEL_ERR_NOMEM;
	t->clock = keel_get_u64(buf + 8);
	int rv = 0;
	if (count) {
		t->s = a->malloc(a->ctx, count * sizeof(*t->s));
		if (!t->s)
			rv = KEEL_ERR_NOMEM;
		t->cap = count;
	}
	size_t off = 16;
	for (uint32_t i = 0; !rv && i < count; i++) {
		if (len - off < 36) {
			rv = KEEL_ERR_MALFORMED;
			break;
		}
		const uint8_t *p = buf + off;
		struct session *s = a->malloc(a->ctx, sizeof(*s));
		if (!s) {
			rv = KEEL_ERR_NOMEM;
			break;
		}
		memset(s, 0, sizeof(*s));
		t->s[t->n++] = s;
		s->id = keel_get_u64(p);
		s->ttl_ms = keel_get_u64(p + 8);
		s->last_ms = keel_get_u64(p + 16);
		s->high = keel_get_u64(p + 24);
		uint32_t used = keel_get_u32(p + 32);
		off += 36;
		if (s->id == 0 || (i > 0 && s->id <= t->s[i - 1]->id) ||
		    s->ttl_ms < SESSION_TTL_MIN_MS ||
		    s->ttl_ms > SESSION_TTL_MAX_MS || s->last_ms > t->clock ||
		    used > SESSION_WINDOW) {
			rv = KEEL_ERR_MALFORMED;
			break;
		}
		int64_t prev = -1;
		for (uint32_t k = 0; k < used; k++) {
			if (len - off < 13) {
				rv = KEEL_ERR_MALFORMED;
				break;
			}
			const uint8_t *q = buf + off;
			uint64_t seq = keel_get_u64(q);
			uint8_t kept = q[8];
			uint32_t l = keel_get_u32(q + 9);
			off += 13;
			int64_t slot = (int64_t)(seq % SESSION_WINDOW);
			if (seq == 0 || seq > s->high || slot <= prev ||
			    kept > 1 || (!kept && l) ||
			    l > SESSION_REPLY_BUDGET - s->bytes ||
			    l > len - off) {
				rv = KEEL_ERR_MALFORMED;
				break;
			}
			prev = slot;
			struct sess_slot *sl = &s->slots[slot];
			sl->seq = seq;
			sl->kept = kept;
			if (kept) {
				sl->reply = a->malloc(a->ctx, l ? l : 1);
				if (!sl->reply) {
					rv = KEEL_ERR_NOMEM;
					break;
				}
				if (l)
					memcpy(sl->reply, q + 13, l);
				sl->len = l;
				s->bytes += l;
			}
			off += l;
		}
	}
	if (!rv && off != len)
		rv = KEEL_ERR_MALFORMED;
	if (rv) {
		session_table_destroy(t);
		return rv;
	}
	*out = t;
	return 0;
}
