/*
 * history.c -- the simulated clients' history: every invocation and
 * completion, in simulated-time order, written as the project's JSON lines
 * (shared/testdata/linearizability/README.md, "Histories the project
 * records itself") and checked for linearizability with the src/check
 * library (key-value model), by parsing exactly those lines: what is
 * checked is what --history writes.
 *
 * Vocabulary: ok = took effect (reads and incr carry the value); fail =
 * definitely had no effect (not leader, proposal lost its slot, read lost
 * leadership, cas compare mismatch, incr on a non-integer); info = the
 * client timed out and never learned the outcome.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/check.h"
#include "sim/sim_internal.h"

void sim_history_init(struct sim_history *h)
{
	memset(h, 0, sizeof(*h));
}

void sim_history_close(struct sim_history *h)
{
	free(h->ev);
	free(h->bytes);
	memset(h, 0, sizeof(*h));
}

void sim_history_reset(struct sim_history *h)
{
	h->n = 0;
	h->n_bytes = 0;
}

static int add_bytes(struct sim_history *h, const uint8_t *p, uint32_t n,
		     uint32_t *off)
{
	if (h->n_bytes + n > UINT32_MAX)
		return KEEL_ERR_TOO_BIG;
	if (h->n_bytes + n > h->cap_bytes) {
		uint64_t cap = h->cap_bytes ? h->cap_bytes : 4096;
		while (cap < h->n_bytes + n)
			cap *= 2;
		uint8_t *nb = realloc(h->bytes, cap);
		if (!nb)
			return KEEL_ERR_NOMEM;
		h->bytes = nb;
		h->cap_bytes = cap;
	}
	*off = (uint32_t)h->n_bytes;
	if (n)
		memcpy(h->bytes + h->n_bytes, p, n);
	h->n_bytes += n;
	return 0;
}

int sim_history_add(struct sim_history *h, uint64_t time_ns, uint32_t process,
		    int type, int op, int key, bool has_value,
		    const uint8_t *v1, uint32_t v1_len, const uint8_t *v2,
		    uint32_t v2_len)
{
	if (h->n == h->cap) {
		uint64_t cap = h->cap ? h->cap * 2 : 1024;
		struct sim_hist_event *ne = realloc(h->ev, cap * sizeof(*ne));
		if (!ne)
			return KEEL_ERR_NOMEM;
		h->ev = ne;
		h->cap = cap;
	}
	struct sim_hist_event e = {.time_ns = time_ns,
				   .process = process,
				   .type = (uint8_t)type,
				   .op = (uint8_t)op,
				   .key = (uint8_t)key,
				   .has_value = has_value,
				   .v1_len = v1_len,
				   .v2_len = v2_len};
	int rv = add_bytes(h, v1, v1_len, &e.v1_off);
	if (!rv)
		rv = add_bytes(h, v2, v2_len, &e.v2_off);
	if (rv)
		return rv;
	h->ev[h->n++] = e;
	return 0;
}

int sim_history_add_initial(struct sim_history *h, uint64_t time_ns,
			    uint32_t process, int key, const uint8_t *value,
			    uint32_t len)
{
	int rv = sim_history_add(h, time_ns, process, SIM_INVOKE, SIM_OP_PUT,
				 key, false, value, len, NULL, 0);
	if (rv)
		return rv;
	h->ev[h->n - 1].synthetic = true;
	rv = sim_history_add(h, time_ns, process, SIM_OK, SIM_OP_PUT, key,
			     false, NULL, 0, NULL, 0);
	if (rv)
		return rv;
	h->ev[h->n - 1].synthetic = true;
	return 0;
}

/* Appends a JSON string (escaped) at out[*k], within cap. */
static void json_str(char *out, size_t cap, size_t *k, const uint8_t *p,
		     uint32_t n)
{
	if (*k + 1 < cap)
		out[(*k)++] = '"';
	for (uint32_t i = 0; i < n && *k + 8 < cap; i++) {
		uint8_t c = p[i];
		if (c == '"' || c == '\\') {
			out[(*k)++] = '\\';
			out[(*k)++] = (char)c;
		} else if (c < 0x20 || c >= 0x7f) {
			*k += (size_t)snprintf(out + *k, cap - *k, "\\u%04x", c);
		} else {
			out[(*k)++] = (char)c;
		}
	}
	if (*k + 1 < cap)
		out[(*k)++] = '"';
	out[*k < cap ? *k : cap - 1] = 0;
}

static const char *const type_names[] = {"invoke", "ok", "fail", "info"};
static const char *const f_names[] = {"?",    "read",   "write", "cas",
				      "incr", "append", "del"};

const char *sim_op_name(int op)
{
	static const char *const names[] = {"?",    "get",    "put", "cas",
					    "incr", "append", "del"};
	return op > 0 && op < SIM_OP_COUNT ? names[op] : "?";
}

/* Formats event e as one JSON line into out (NUL-terminated). */
static size_t format_event(const struct sim_history *h,
			   const struct sim_hist_event *e, char *out,
			   size_t cap)
{
	size_t k = (size_t)snprintf(
		out, cap, "{\"process\": %u, \"type\": \"%s\", \"f\": \"%s\", "
			  "\"key\": \"k%u\", \"value\": ",
		e->process, type_names[e->type], f_names[e->op], e->key);
	const uint8_t *v1 = h->bytes + e->v1_off;
	const uint8_t *v2 = h->bytes + e->v2_off;
	if (e->type == SIM_INVOKE) {
		switch (e->op) {
		case SIM_OP_PUT:
		case SIM_OP_APPEND:
			json_str(out, cap, &k, v1, e->v1_len);
			break;
		case SIM_OP_CAS:
			if (k + 1 < cap)
				out[k++] = '[';
			json_str(out, cap, &k, v1, e->v1_len);
			if (k + 2 < cap) {
				out[k++] = ',';
				out[k++] = ' ';
			}
			json_str(out, cap, &k, v2, e->v2_len);
			if (k + 1 < cap)
				out[k++] = ']';
			break;
		case SIM_OP_INCR:
			k += (size_t)snprintf(out + k, cap - k, "1");
			break;
		default:
			k += (size_t)snprintf(out + k, cap - k, "null");
			break;
		}
	} else if (e->type == SIM_OK &&
		   (e->op == SIM_OP_GET || e->op == SIM_OP_INCR)) {
		if (e->has_value)
			json_str(out, cap, &k, v1, e->v1_len);
		else
			k += (size_t)snprintf(out + k, cap - k, "null");
	} else {
		k += (size_t)snprintf(out + k, cap - k, "null");
	}
	if (k < cap)
		k += (size_t)snprintf(out + k, cap - k, ", \"time\": %llu}",
				      (unsigned long long)e->time_ns);
	return k < cap ? k : cap - 1;
}

#define LINE_CAP (3 * SIM_MAX_VALUE + 256)

void sim_history_write_jsonl(const struct sim_history *h,
			     void (*out)(void *ctx, const char *line),
			     void *ctx)
{
	char *line = malloc(LINE_CAP);
	KEEL_ASSERT(line != NULL);
	for (uint64_t i = 0; i < h->n; i++) {
		if (h->ev[i].synthetic)
			continue;
		format_event(h, &h->ev[i], line, LINE_CAP);
		out(ctx, line);
	}
	free(line);
}

int sim_history_check(const struct sim_history *h, char *detail,
		      size_t detail_cap)
{
	/* The JSON lines in one buffer, then the checker's own parser. */
	size_t cap = 1 << 16, len = 0;
	char *buf = malloc(cap);
	char *line = malloc(LINE_CAP);
	if (!buf || !line) {
		free(buf);
		free(line);
		return KEEL_ERR_NOMEM;
	}
	for (uint64_t i = 0; i < h->n; i++) {
		size_t n = format_event(h, &h->ev[i], line, LINE_CAP);
		if (len + n + 1 > cap) {
			while (len + n + 1 > cap)
				cap *= 2;
			char *nb = realloc(buf, cap);
			if (!nb) {
				free(buf);
				free(line);
				return KEEL_ERR_NOMEM;
			}
			buf = nb;
		}
		memcpy(buf + len, line, n);
		len += n;
		buf[len++] = '\n';
	}
	free(line);
	struct check_history hist;
	check_history_init(&hist, &keel_alloc_libc);
	struct check_parse_error perr;
	memset(&perr, 0, sizeof(perr));
	int rv = check_parse_jsonl(buf, len, &hist, &perr);
	free(buf);
	if (rv) {
		snprintf(detail, detail_cap, "history does not parse: line %u: %s",
			 perr.line, perr.msg);
		check_history_close(&hist);
		return rv;
	}
	struct check_options opts = {.model = CHECK_MODEL_KV,
				     .step_budget = 200000000ull,
				     .max_cache_bytes = 2048ull << 20};
	struct check_result res;
	memset(&res, 0, sizeof(res));
	rv = check_history_run(&hist, &opts, &keel_alloc_libc, &res);
	if (rv) {
		snprintf(detail, detail_cap, "checker error: %s", res.reason);
		check_history_close(&hist);
		return rv;
	}
	int verdict = 0;
	if (res.verdict == CHECK_NOT_LINEARIZABLE) {
		char key[32] = "?";
		if (res.bad_key < hist.n_keys)
			check_value_format(&hist.keys[res.bad_key], key,
					   sizeof(key));
		snprintf(detail, detail_cap,
			 "key %s not linearizable (%zu ops, longest "
			 "linearizable prefix %zu, state after it %s)",
			 key, res.bad_key_ops, res.prefix_len,
			 res.state_after_prefix);
		verdict = 1;
	} else if (res.verdict == CHECK_UNDECIDED) {
		snprintf(detail, detail_cap, "undecided: %s", res.reason);
		verdict = KEEL_ERR_BUSY;
	}
	check_history_close(&hist);
	return verdict;
}
