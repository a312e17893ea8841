/*
 * bank.c -- the bank workload's model and checker (issue 12 §6: Jepsen's
 * bank test in the simulator). sim.c's bank clients move money between
 * N accounts by transactions (KEEL.WATCH-REVS + KEEL.EXEC, KEEL.GETREV +
 * KEEL.TXN, and KEEL.TXN inside KEEL.RUN sessions with retries) and read
 * every balance in one transaction. Each transfer also appends "<id>," to
 * a ledger key inside the same transaction, and the APPEND's reply (the
 * ledger's new length) says where its id must stand.
 *
 * What the clients learned is recorded here; sim_check_bank judges it
 * against the final state of a converged node: every read sums to the
 * total with no negative balance; the ledger holds known ids, each at most
 * once; every acknowledged transfer exactly once, ending where its reply
 * said; no transfer the cluster said it did not run (DROPPED, NOT_LEADER,
 * a failed compare) present; and the final balances equal the initial
 * ones with the ledger's transfers applied in order.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim/sim_internal.h"

const char *sim_bank_mode_name(int mode)
{
	static const char *const names[] = {"watch", "txn", "session"};
	if (mode < 0 || mode >= SIM_BANK_MODES)
		return "?";
	return names[mode];
}

const char *sim_xfer_state_name(int state)
{
	static const char *const names[] = {"sent",         "ok",
					    "compare-failed", "not-executed",
					    "unknown"};
	if (state < 0 || state >= SIM_XFER_STATES)
		return "?";
	return names[state];
}

void sim_bank_init(struct sim_bank *b, uint32_t n_accts, const int64_t *init)
{
	memset(b, 0, sizeof(*b));
	KEEL_ASSERT(n_accts >= 2 && n_accts <= SIM_BANK_MAX_ACCTS);
	b->n_accts = n_accts;
	for (uint32_t i = 0; i < n_accts; i++) {
		b->init[i] = init[i];
		b->total += init[i];
	}
}

void sim_bank_close(struct sim_bank *b)
{
	free(b->x);
	free(b->r);
	memset(b, 0, sizeof(*b));
}

uint64_t sim_bank_xfer(struct sim_bank *b, uint32_t client, int mode,
		       uint32_t from, uint32_t to, int64_t amount)
{
	KEEL_ASSERT(from < b->n_accts && to < b->n_accts && from != to);
	if (b->n_x == b->cap_x) {
		uint32_t ncap = b->cap_x ? b->cap_x * 2 : 64;
		struct sim_xfer *nx = realloc(b->x, ncap * sizeof(*nx));
		KEEL_ASSERT(nx != NULL);
		b->x = nx;
		b->cap_x = ncap;
	}
	struct sim_xfer *x = &b->x[b->n_x++];
	memset(x, 0, sizeof(*x));
	x->client = client;
	x->mode = (uint8_t)mode;
	x->from = (uint8_t)from;
	x->to = (uint8_t)to;
	x->amount = amount;
	return b->n_x; /* ids are 1, 2, 3, ... */
}

struct sim_xfer *sim_bank_get(struct sim_bank *b, uint64_t id)
{
	if (id < 1 || id > b->n_x)
		return NULL;
	return &b->x[id - 1];
}

void sim_bank_read(struct sim_bank *b, uint32_t client, int mode,
		   const int64_t *bal, uint32_t absent)
{
	if (b->n_r == b->cap_r) {
		uint32_t ncap = b->cap_r ? b->cap_r * 2 : 64;
		struct sim_bank_read *nr = realloc(b->r, ncap * sizeof(*nr));
		KEEL_ASSERT(nr != NULL);
		b->r = nr;
		b->cap_r = ncap;
	}
	struct sim_bank_read *r = &b->r[b->n_r++];
	memset(r, 0, sizeof(*r));
	r->client = client;
	r->mode = (uint8_t)mode;
	r->absent = absent;
	memcpy(r->bal, bal, b->n_accts * sizeof(bal[0]));
}

/* "a0=v a1=v ..." into out. */
static void fmt_bal(const struct sim_bank *b, const int64_t *bal,
		    uint32_t absent, char *out, size_t cap)
{
	size_t k = 0;
	out[0] = 0;
	for (uint32_t i = 0; i < b->n_accts && k < cap; i++) {
		if (absent & (1u << i))
			k += (size_t)snprintf(out + k, cap - k, "%sa%u=nil",
					      i ? " " : "", i);
		else
			k += (size_t)snprintf(out + k, cap - k,
					      "%sa%u=%" PRId64, i ? " " : "",
					      i, bal[i]);
	}
}

/* An excerpt of the ledger around [at, at + len), the token bracketed. */
static void excerpt(const uint8_t *v, size_t vl, size_t at, size_t len,
		    char *out, size_t cap)
{
	size_t from = at > 40 ? at - 40 : 0;
	while (from > 0 && v[from - 1] != ',')
		from++;
	size_t to = at + len + 40 < vl ? at + len + 40 : vl;
	size_t k = (size_t)snprintf(out, cap, "%s", from ? "..." : "");
	for (size_t i = from; i < to && k + 4 < cap; i++) {
		if (i == at && len)
			out[k++] = '[';
		out[k++] = (char)v[i];
		if (len && i + 1 == at + len)
			out[k++] = ']';
	}
	if (to < vl && k + 4 < cap)
		k += (size_t)snprintf(out + k, cap - k, "...");
	out[k < cap ? k : cap - 1] = 0;
}

__attribute__((format(printf, 4, 5))) static void
fail(struct sim_checker *c, const char *check, uint64_t seed, const char *fmt,
     ...);

static void fail(struct sim_checker *c, const char *check, uint64_t seed,
		 const char *fmt, ...)
{
	char d[360];
	size_t k = (size_t)snprintf(d, sizeof(d), "seed %" PRIu64 " ", seed);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(d + k, sizeof(d) - k, fmt, ap);
	va_end(ap);
	sim_checker_fail(c, check, d);
}

/* Describes transfer id for a message. */
static void fmt_xfer(const struct sim_bank *b, uint64_t id, char *out,
		     size_t cap)
{
	const struct sim_xfer *x = &b->x[id - 1];
	int k = snprintf(out, cap,
			 "client %u transfer %" PRIu64 " (%s, a%u->a%u %" PRId64
			 ", %s",
			 x->client, id, sim_bank_mode_name(x->mode), x->from,
			 x->to, x->amount, sim_xfer_state_name(x->state));
	if (k > 0 && (size_t)k < cap && x->state == SIM_XFER_OK)
		k += snprintf(out + k, cap - (size_t)k, " len %" PRIu64,
			      x->len);
	if (k > 0 && (size_t)k < cap && x->mode == SIM_BANK_SESSION)
		k += snprintf(out + k, cap - (size_t)k,
			      ", %u retries%s", x->retries,
			      x->retry_answered ? ", answered on a retry" : "");
	if (k > 0 && (size_t)k < cap)
		snprintf(out + k, cap - (size_t)k, ")");
}

bool sim_check_bank(struct sim_checker *c, struct sim_bank *b, uint64_t seed,
		    bool ledger_found, const uint8_t *v, size_t vl,
		    const int64_t *bal, uint32_t absent)
{
	char d1[200], d2[200];
	/* 1. Every read: all accounts, the total, none negative. */
	for (uint32_t i = 0; i < b->n_r; i++) {
		const struct sim_bank_read *r = &b->r[i];
		int64_t sum = 0;
		bool neg = false;
		for (uint32_t a = 0; a < b->n_accts; a++) {
			sum += r->bal[a];
			neg |= r->bal[a] < 0;
		}
		if (r->absent || sum != b->total || neg) {
			fmt_bal(b, r->bal, r->absent, d1, sizeof(d1));
			snprintf(d2, sizeof(d2), "%" PRId64 " (total %" PRId64
				 ")", r->absent ? 0 : sum, b->total);
			char who[48];
			snprintf(who, sizeof(who), "client %u read %u (%s)",
				 r->client, i + 1,
				 r->mode ? "KEEL.EXEC" : "KEEL.TXN");
			char msg[300];
			snprintf(msg, sizeof(msg), "%s: %s", who, d1);
			fail(c,
			     r->absent ? "bank-read-absent"
			     : neg     ? "bank-read-negative"
				       : "bank-read-total",
			     seed, "%s sums to %s", msg, d2);
			return false;
		}
	}
	/* Nothing acknowledged the seeding: no transfer ran (none was
	 * sent); the accounts are absent or as seeded (it may have run). */
	if (!b->init_acked && b->n_x == 0 && !ledger_found) {
		bool none = absent == (1u << b->n_accts) - 1;
		bool seeded = absent == 0;
		for (uint32_t a = 0; a < b->n_accts && seeded; a++)
			seeded = bal[a] == b->init[a];
		if (none || seeded)
			return true;
	}
	/* 2. The ledger: "<id>," tokens of known ids, each at most once. */
	uint32_t *count = calloc(b->n_x + 1, sizeof(*count));
	uint64_t *end = calloc(b->n_x + 1, sizeof(*end));
	KEEL_ASSERT(count != NULL && end != NULL);
	int64_t run[SIM_BANK_MAX_ACCTS];
	memcpy(run, b->init, sizeof(run));
	bool ok = true;
	size_t i = 0;
	while (ok && ledger_found && i < vl) {
		size_t j = i;
		uint64_t id = 0;
		while (j < vl && v[j] >= '0' && v[j] <= '9' && j - i < 12)
			id = id * 10 + (uint64_t)(v[j++] - '0');
		if (j == i || j >= vl || v[j] != ',' || id < 1 || id > b->n_x) {
			excerpt(v, vl, i, j < vl ? j - i + 1 : j - i, d1,
				sizeof(d1));
			fail(c, "bank-ledger-garbage", seed,
			     "ledger: not a list of transfer ids: %s%s", d1,
			     "");
			ok = false;
			break;
		}
		if (count[id]++) {
			excerpt(v, vl, i, j - i + 1, d1, sizeof(d1));
			fmt_xfer(b, id, d2, sizeof(d2));
			fail(c,
			     b->x[id - 1].mode == SIM_BANK_SESSION
				     ? "bank-session-reply"
				     : "bank-duplicate",
			     seed, "%s applied twice: %s", d2, d1);
			ok = false;
			break;
		}
		end[id] = j + 1;
		/* Replay: a transfer the client made only from a balance that
		 * covered it; one that overdraws was run on a stale read. */
		const struct sim_xfer *x = &b->x[id - 1];
		run[x->from] -= x->amount;
		run[x->to] += x->amount;
		if (run[x->from] < 0) {
			excerpt(v, vl, i, j - i + 1, d1, sizeof(d1));
			fmt_xfer(b, id, d2, sizeof(d2));
			fail(c, "bank-negative", seed,
			     "%s overdraws its account in the ledger's "
			     "order: %s",
			     d2, d1);
			ok = false;
			break;
		}
		i = j + 1;
	}
	/* 3. What the clients were told. */
	for (uint64_t id = 1; ok && id <= b->n_x; id++) {
		const struct sim_xfer *x = &b->x[id - 1];
		bool sess = x->mode == SIM_BANK_SESSION;
		const char *check = NULL, *what = NULL;
		if (x->state == SIM_XFER_OK && !count[id]) {
			check = sess ? "bank-session-reply" : "bank-ack-lost";
			what = "acknowledged as run, absent from the ledger";
		} else if (x->state == SIM_XFER_OK && end[id] != x->len) {
			check = sess ? "bank-session-reply"
				     : "bank-reply-mismatch";
			what = "not where its APPEND reply put it";
		} else if ((x->state == SIM_XFER_FAILED ||
			    x->state == SIM_XFER_NOT_EXECUTED) &&
			   count[id]) {
			check = sess ? "bank-session-reply"
				     : "bank-not-executed-present";
			what = x->state == SIM_XFER_FAILED
				       ? "answered compare-failed (not run), "
					 "present in the ledger"
				       : "answered not executed, present in "
					 "the ledger";
		}
		if (!check)
			continue;
		fmt_xfer(b, id, d2, sizeof(d2));
		if (count[id]) {
			size_t at = end[id];
			size_t st = at >= 2 ? at - 2 : 0;
			while (st > 0 && v[st - 1] != ',')
				st--;
			excerpt(v, vl, st, at - st, d1, sizeof(d1));
		} else {
			excerpt(v, vl, vl, 0, d1,
				sizeof(d1));
		}
		char msg[300];
		snprintf(msg, sizeof(msg), "%s %s", d2, what);
		fail(c, check, seed, "%s: ledger %s", msg, d1);
		ok = false;
	}
	/* 4. The final balances are the ledger replayed. */
	if (ok) {
		bool same = absent == 0;
		for (uint32_t a = 0; a < b->n_accts && same; a++)
			same = bal[a] == run[a];
		if (!same) {
			fmt_bal(b, bal, absent, d1, sizeof(d1));
			char msg[300];
			snprintf(msg, sizeof(msg), "final %s", d1);
			fmt_bal(b, run, 0, d2, sizeof(d2));
			fail(c, "bank-balance", seed,
			     "%s, but the ledger's transfers give %s", msg,
			     d2);
			ok = false;
		}
	}
	for (uint64_t id = 1; id <= b->n_x; id++)
		if (b->x[id - 1].state == SIM_XFER_UNKNOWN ||
		    b->x[id - 1].state == SIM_XFER_SENT) {
			if (count[id])
				b->uncertain_present++;
			else
				b->uncertain_absent++;
		}
	free(count);
	free(end);
	return ok;
}
