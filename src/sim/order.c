/*
 * order.c -- program order of pipelined writes (issue 12 §1): what the
 * simulator's pipelining clients sent on each stream, what they were told
 * of each token, and the check of a key's final value against it.
 *
 * A stream writes one key of its own with `APPEND key "<token>,"`,
 * tokens 1, 2, 3, ... in the order requested, several in flight at once.
 * Writes of one stream take effect in the order they were requested (a
 * write that would break it is answered NODE_DROPPED instead), so the
 * final value is a strictly increasing subsequence of the tokens sent that
 * holds every acknowledged one and none the node said it did not execute.
 * Tokens without a definite answer (unknown, timed out, cut by a
 * connection reset) may be present or not, but only in their place.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim/sim_internal.h"

const char *sim_tok_state_name(int state)
{
	static const char *const names[] = {"sent",       "ok",
					    "dropped",    "not-leader",
					    "unknown",    "lost"};
	if (state < 0 || state >= SIM_TOK_STATES)
		return "?";
	return names[state];
}

void sim_order_init(struct sim_order *o)
{
	memset(o, 0, sizeof(*o));
}

void sim_order_close(struct sim_order *o)
{
	for (uint32_t i = 0; i < o->n; i++)
		free(o->keys[i].tok);
	free(o->keys);
	memset(o, 0, sizeof(*o));
}

int sim_order_key(struct sim_order *o, const char *name, raft_id node,
		  uint64_t stream)
{
	if (o->n == o->cap) {
		uint32_t ncap = o->cap ? o->cap * 2 : 16;
		struct sim_order_key *nk = realloc(o->keys, ncap * sizeof(*nk));
		if (!nk)
			return KEEL_ERR_NOMEM;
		o->keys = nk;
		o->cap = ncap;
	}
	struct sim_order_key *k = &o->keys[o->n];
	memset(k, 0, sizeof(*k));
	snprintf(k->name, sizeof(k->name), "%s", name);
	k->node = node;
	k->stream = stream;
	return (int)o->n++;
}

int sim_order_sent(struct sim_order *o, uint32_t key, uint64_t token)
{
	KEEL_ASSERT(key < o->n);
	struct sim_order_key *k = &o->keys[key];
	if (k->n && token <= k->tok[k->n - 1].token)
		return KEEL_ERR_INVAL;
	if (k->n == k->cap) {
		uint32_t ncap = k->cap ? k->cap * 2 : 64;
		struct sim_order_tok *nt = realloc(k->tok, ncap * sizeof(*nt));
		if (!nt)
			return KEEL_ERR_NOMEM;
		k->tok = nt;
		k->cap = ncap;
	}
	k->tok[k->n++] = (struct sim_order_tok){.token = token,
						.state = SIM_TOK_SENT};
	return 0;
}

/* Index of token in k's sent tokens (sorted), or -1. */
static int64_t find_tok(const struct sim_order_key *k, uint64_t token)
{
	uint32_t lo = 0, hi = k->n;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (k->tok[mid].token < token)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < k->n && k->tok[lo].token == token ? (int64_t)lo : -1;
}

bool sim_order_answer(struct sim_order *o, uint32_t key, uint64_t token,
		      int state, uint64_t len)
{
	KEEL_ASSERT(key < o->n);
	struct sim_order_key *k = &o->keys[key];
	int64_t j = find_tok(k, token);
	if (j < 0)
		return false;
	k->tok[j].state = (uint8_t)state;
	k->tok[j].len = len;
	return true;
}

/* One token of the final value and where it ends (the value's length
 * once it was appended). */
struct item {
	uint64_t token;
	uint64_t end;
};

/* Splits "t1,t2,...," into items; false when it is not of that form (then
 * *bad is the offset of the first byte that does not fit). */
static bool parse_value(const uint8_t *v, size_t len, struct item *out,
			size_t *n, size_t *bad)
{
	size_t k = 0, i = 0;
	while (i < len) {
		uint64_t t = 0;
		size_t start = i;
		while (i < len && v[i] >= '0' && v[i] <= '9' && i - start < 19)
			t = t * 10 + (uint64_t)(v[i++] - '0');
		if (i == start || i == len || v[i] != ',') {
			*bad = i;
			*n = k;
			return false;
		}
		i++;
		out[k++] = (struct item){t, i};
	}
	*n = k;
	return true;
}

/* The tokens around position at (marked [t]), or with a missing token
 * shown before position at ([missing t]): "...,12,13,[28],14,15,...". */
static void excerpt(char *out, size_t cap, const struct item *it, size_t n,
		    size_t at, bool missing, uint64_t missing_tok)
{
	size_t lo = at > 3 ? at - 3 : 0;
	size_t hi = at + 4 < n ? at + 4 : n;
	size_t k = 0;
	out[0] = 0;
#define PUT(...)                                                              \
	do {                                                                  \
		if (k < cap)                                                  \
			k += (size_t)snprintf(out + k, cap - k, __VA_ARGS__); \
	} while (0)
	if (lo > 0)
		PUT("...,");
	for (size_t i = lo; i < hi; i++) {
		if (missing && i == at)
			PUT("[missing %llu],", (unsigned long long)missing_tok);
		if (!missing && i == at)
			PUT("[%llu],", (unsigned long long)it[i].token);
		else
			PUT("%llu,", (unsigned long long)it[i].token);
	}
	if (missing && at >= n)
		PUT("[missing %llu],", (unsigned long long)missing_tok);
	if (hi < n)
		PUT("...");
	else if (k > 0 && k < cap && out[k - 1] == ',')
		out[--k] = 0;
#undef PUT
}

bool sim_check_order(struct sim_checker *c, struct sim_order *o, uint32_t key,
		     uint64_t seed, bool found, const uint8_t *val, size_t len)
{
	KEEL_ASSERT(key < o->n);
	const struct sim_order_key *k = &o->keys[key];
	/* Every item takes at least two bytes ("1,"). */
	size_t max_items = found ? len / 2 + 1 : 1;
	struct item *it = malloc(max_items * sizeof(*it));
	uint8_t *seen = calloc(k->n ? k->n : 1, 1);
	KEEL_ASSERT(it != NULL && seen != NULL);
	size_t n = 0, bad = 0;
	char head[96], ex[224], d[400];
	snprintf(head, sizeof(head), "seed %llu key %s (stream %llu on node %llu, "
		 "%u tokens sent)",
		 (unsigned long long)seed, k->name,
		 (unsigned long long)k->stream, (unsigned long long)k->node,
		 k->n);
	const char *check = NULL;
	if (found && !parse_value(val, len, it, &n, &bad)) {
		size_t from = bad > 24 ? bad - 24 : 0;
		size_t to = bad + 8 < len ? bad + 8 : len;
		snprintf(d, sizeof(d), "%s: not a list of \"<token>,\" at byte %zu: "
			 "\"%.*s\"", head, bad, (int)(to - from),
			 (const char *)val + from);
		check = "pipe-garbage";
	}
	for (size_t i = 0; i < n && !check; i++) {
		uint64_t t = it[i].token;
		int64_t j = find_tok(k, t);
		if (j < 0) {
			excerpt(ex, sizeof(ex), it, n, i, false, 0);
			snprintf(d, sizeof(d), "%s: token %llu was never sent: %s",
				 head, (unsigned long long)t, ex);
			check = "pipe-garbage";
			break;
		}
		const struct sim_order_tok *tk = &k->tok[j];
		if (seen[j]) {
			excerpt(ex, sizeof(ex), it, n, i, false, 0);
			snprintf(d, sizeof(d), "%s: token %llu (%s) applied twice: %s",
				 head, (unsigned long long)t,
				 sim_tok_state_name(tk->state), ex);
			check = "pipe-duplicate";
			break;
		}
		if (i > 0 && t < it[i - 1].token) {
			const struct sim_order_tok *pk =
				&k->tok[find_tok(k, it[i - 1].token)];
			excerpt(ex, sizeof(ex), it, n, i, false, 0);
			snprintf(d, sizeof(d),
				 "%s: token %llu (%s) applied after token %llu "
				 "(%s): %s",
				 head, (unsigned long long)t,
				 sim_tok_state_name(tk->state),
				 (unsigned long long)pk->token,
				 sim_tok_state_name(pk->state), ex);
			check = "pipe-order";
			break;
		}
		if (tk->state == SIM_TOK_DROPPED ||
		    tk->state == SIM_TOK_NOT_LEADER) {
			excerpt(ex, sizeof(ex), it, n, i, false, 0);
			snprintf(d, sizeof(d),
				 "%s: token %llu was answered %s (not executed) "
				 "but is present: %s",
				 head, (unsigned long long)t,
				 tk->state == SIM_TOK_DROPPED ? "DROPPED"
							      : "NOT_LEADER",
				 ex);
			check = "pipe-not-executed-present";
			break;
		}
		seen[j] = 1;
	}
	for (uint32_t j = 0; j < k->n && !check; j++) {
		if (k->tok[j].state != SIM_TOK_OK || seen[j])
			continue;
		size_t at = 0;
		while (at < n && it[at].token < k->tok[j].token)
			at++;
		excerpt(ex, sizeof(ex), it, n, at, true, k->tok[j].token);
		snprintf(d, sizeof(d),
			 "%s: token %llu was acknowledged (length %llu) but is "
			 "missing: %s",
			 head, (unsigned long long)k->tok[j].token,
			 (unsigned long long)k->tok[j].len,
			 found ? ex : "(no such key)");
		check = "pipe-ack-lost";
	}
	/* Last, as a missing token shifts every later one: an acknowledged
	 * token ends where its APPEND's reply said the value did. */
	for (size_t i = 0; i < n && !check; i++) {
		const struct sim_order_tok *tk = &k->tok[find_tok(k, it[i].token)];
		if (tk->state != SIM_TOK_OK || tk->len == it[i].end)
			continue;
		excerpt(ex, sizeof(ex), it, n, i, false, 0);
		snprintf(d, sizeof(d),
			 "%s: token %llu was acknowledged with length %llu but "
			 "ends at byte %llu: %s",
			 head, (unsigned long long)tk->token,
			 (unsigned long long)tk->len,
			 (unsigned long long)it[i].end, ex);
		check = "pipe-reply-mismatch";
	}
	if (!check) {
		for (uint32_t j = 0; j < k->n; j++) {
			int st = k->tok[j].state;
			if (st == SIM_TOK_SENT || st == SIM_TOK_UNKNOWN ||
			    st == SIM_TOK_LOST) {
				if (seen[j])
					o->uncertain_present++;
				else
					o->uncertain_absent++;
			}
		}
	}
	free(it);
	free(seen);
	if (check)
		sim_checker_fail(c, check, d);
	return check == NULL;
}
