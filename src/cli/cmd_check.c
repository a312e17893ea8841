/*
 * cmd_check.c -- `keel check`: reads a history file, parses it, runs the
 * linearizability checker and prints the verdict. This is the adapter
 * around src/check: it owns the file I/O, the clock (a deadline the search
 * polls through should_stop) and the printing.
 *
 * Exit codes: 0 linearizable, 1 not linearizable, 2 undecided within the
 * timeout, bad input or bad usage. With --model bank (or a file whose
 * first line is a bank config) it runs the bank checks instead: 0 valid,
 * 1 violations found, 2 bad input or usage.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "keel/check.h"

#define CHECK_MAX_FILE ((size_t)512 << 20)

static void usage(FILE *f)
{
	fprintf(f,
		"usage: keel check [--format jepsen-etcd|kv|jsonl] "
		"[--model register|kv|bank]\n"
		"                  [--timeout SECONDS] FILE\n"
		"\n"
		"Checks a history of client operations for linearizability.\n"
		"Prints `linearizable` or `not-linearizable` (then the smallest\n"
		"failing key and where the search got stuck).\n"
		"  --format   input format (default: detected from the file)\n"
		"  --model    register (read/write/cas) or kv (also incr,\n"
		"             append, del); default register for jepsen-etcd\n"
		"             bank: Jepsen's bank workload in JSON lines (total\n"
		"             constant, ledger exactly-once, reads of ledger\n"
		"             prefixes in real-time order); picked by itself\n"
		"             when the first line is {\"type\":\"bank\",...}\n"
		"  --timeout  give up after this many seconds (default 30)\n"
		"exit: 0 linearizable, 1 not linearizable, 2 undecided or bad "
		"input\n"
		"      (bank: 0 valid, 1 violations, 2 bad input)\n");
}

struct deadline {
	double at;
};

static bool deadline_passed(void *ctx)
{
	const struct deadline *d = ctx;
	return cli_now_s() >= d->at;
}

/* Reads the whole file, refusing more than CHECK_MAX_FILE bytes. */
static int read_file(const char *path, char **out, size_t *out_len)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		fprintf(stderr, "keel check: %s: %s\n", path, strerror(errno));
		return -1;
	}
	size_t cap = 1 << 16, len = 0;
	char *buf = malloc(cap);
	if (!buf)
		goto nomem;
	for (;;) {
		if (len == cap) {
			if (cap >= CHECK_MAX_FILE + 1) {
				fprintf(stderr,
					"keel check: %s: larger than %zu MiB\n",
					path, CHECK_MAX_FILE >> 20);
				goto fail;
			}
			size_t ncap = KEEL_MIN(cap * 2, CHECK_MAX_FILE + 1);
			char *nb = realloc(buf, ncap);
			if (!nb)
				goto nomem;
			buf = nb;
			cap = ncap;
		}
		size_t got = fread(buf + len, 1, cap - len, f);
		len += got;
		if (got == 0)
			break;
	}
	if (ferror(f)) {
		fprintf(stderr, "keel check: %s: read error\n", path);
		goto fail;
	}
	if (len > CHECK_MAX_FILE) {
		fprintf(stderr, "keel check: %s: larger than %zu MiB\n", path,
			CHECK_MAX_FILE >> 20);
		goto fail;
	}
	fclose(f);
	*out = buf;
	*out_len = len;
	return 0;
nomem:
	fprintf(stderr, "keel check: %s: out of memory\n", path);
fail:
	free(buf);
	fclose(f);
	return -1;
}

static void print_op(const struct check_history *h, uint32_t i,
		     const char *prefix, const char *suffix)
{
	const struct check_op *o = &h->ops[i];
	char a[64], b[64];
	a[0] = b[0] = '\0';
	switch (o->f) {
	case CHECK_F_READ:
		check_value_format(&o->out, a, sizeof(a));
		break;
	case CHECK_F_CAS:
		check_value_format(&o->arg, a, sizeof(a));
		check_value_format(&o->arg2, b, sizeof(b));
		break;
	case CHECK_F_INCR:
		check_value_format(&o->arg, a, sizeof(a));
		if (o->has_out)
			check_value_format(&o->out, b, sizeof(b));
		break;
	case CHECK_F_WRITE:
	case CHECK_F_APPEND:
		check_value_format(&o->arg, a, sizeof(a));
		break;
	case CHECK_F_DEL:
		break;
	}
	const char *outcome = o->outcome == CHECK_OUT_OK ? "ok"
			      : o->outcome == CHECK_OUT_CAS_MISMATCH
				      ? "fail (compare did not match)"
				      : "info (indeterminate)";
	printf("%sprocess %" PRId64 " %s", prefix, o->process,
	       check_f_name(o->f));
	if (o->f == CHECK_F_CAS)
		printf(" [%s %s]", a, b);
	else if (o->f == CHECK_F_INCR && b[0])
		printf(" %s -> %s", a, b);
	else if (a[0])
		printf(" %s", a);
	printf(" %s; invoked line %u", outcome, o->call_line);
	if (o->ret_line)
		printf(", completed line %u", o->ret_line);
	else
		printf(", never completed");
	if (o->has_time && o->ret_line)
		printf(" (t=%" PRId64 "..%" PRId64 ")", o->call_time,
		       o->ret_time);
	else if (o->has_time)
		printf(" (t=%" PRId64 "..)", o->call_time);
	printf("%s\n", suffix);
}

static void explain(const struct check_history *h,
		    const struct check_result *r)
{
	char key[96];
	check_value_format(&h->keys[r->bad_key], key, sizeof(key));
	printf("key %s: %zu ops (the smallest failing key; %zu keys in all)\n",
	       key, r->bad_key_ops, r->n_keys);
	printf("longest linearizable prefix: %zu of %zu ops", r->prefix_len,
	       r->bad_key_ops);
	if (r->n_prefix_tail) {
		printf(", ending with:\n");
		for (size_t i = 0; i < r->n_prefix_tail; i++)
			print_op(h, r->prefix_tail[i], "  ", "");
	} else {
		printf("\n");
	}
	printf("state after it: %s\n", r->state_after_prefix);
	printf("no op can come next (%zu candidates, called before the "
	       "earliest pending completion):\n",
	       r->n_stuck_total);
	for (size_t i = 0; i < r->n_stuck; i++)
		print_op(h, r->stuck[i], "  ",
			 r->stuck_why[i] == CHECK_STUCK_MODEL
				 ? "  <- the model rejects it here"
				 : "  <- allowed, but every order after it "
				   "fails");
	if (r->n_stuck < r->n_stuck_total)
		printf("  ... and %zu more\n", r->n_stuck_total - r->n_stuck);
}

/* ---- the bank model ---------------------------------------------------- */

static void print_name(const struct check_value *v)
{
	char s[96];
	check_value_format(v, s, sizeof(s));
	printf("%s", s);
}

static void print_account(const struct check_bank_history *h, uint32_t a)
{
	print_name(&h->accounts[a]);
}

/* "transfer "t17" a0->a3 5 (process 2, ok; invoked line 10, completed
 * line 12)" or "read (process 1, ok; ...)". */
static void print_bank_op(const struct check_bank_history *h, uint32_t i)
{
	const struct check_bank_op *o = &h->ops[i];
	static const char *const outcome[] = {"ok", "fail", "info"};
	if (o->f == CHECK_BANK_TRANSFER) {
		struct check_value id = {.kind = CHECK_VAL_STR,
					 .str = o->id,
					 .len = o->id_len};
		printf("transfer ");
		print_name(&id);
		printf(" ");
		print_account(h, o->from);
		printf("->");
		print_account(h, o->to);
		printf(" %" PRId64, o->amount);
	} else {
		printf("read");
	}
	printf(" (process %" PRId64 ", %s; invoked line %u", o->process,
	       outcome[o->outcome], o->call_line);
	if (o->ret_line)
		printf(", completed line %u", o->ret_line);
	else
		printf(", never completed");
	if (o->has_time && o->ret_line)
		printf(", t=%" PRId64 "..%" PRId64, o->call_time, o->ret_time);
	printf(")");
}

/* The read's balances, config order, the first 16. */
static void print_balances(const struct check_bank_history *h, uint32_t i)
{
	const struct check_bank_op *o = &h->ops[i];
	const int64_t *b = h->cells + o->cells_at;
	printf("{");
	for (uint32_t a = 0; a < h->n_accounts && a < 16; a++) {
		printf("%s", a ? ", " : "");
		print_account(h, a);
		printf(": %" PRId64, b[a]);
	}
	printf("%s}", h->n_accounts > 16 ? ", ..." : "");
	if (o->n_missing)
		printf(" (accounts it did not name shown as 0)");
}

static void print_entry(const struct check_bank_history *h, size_t pos)
{
	struct check_value id = {.kind = CHECK_VAL_STR,
				 .str = h->ledger[pos].id,
				 .len = h->ledger[pos].id_len};
	printf("ledger position %zu (", pos + 1);
	print_name(&id);
	printf(")");
}

static void print_violation(const struct check_bank_history *h,
			    const struct check_bank_violation *v)
{
	printf("%s: ", check_bank_kind_name(v->kind));
	switch (v->kind) {
	case CHECK_BANK_READ_TOTAL:
		print_bank_op(h, v->op);
		if (v->overflow)
			printf(": the balances' sum overflows int64, total %" PRId64 ": ",
			       h->total);
		else
			printf(": balances sum to %" PRId64 ", not %" PRId64 ": ",
			       v->value, h->total);
		print_balances(h, v->op);
		break;
	case CHECK_BANK_READ_NEGATIVE:
		print_bank_op(h, v->op);
		printf(": ");
		print_account(h, v->account);
		printf(" = %" PRId64 ": ", v->value);
		print_balances(h, v->op);
		break;
	case CHECK_BANK_READ_MISSING:
		print_bank_op(h, v->op);
		printf(": no balance for ");
		print_account(h, v->account);
		printf(" (%" PRId64 " account%s missing)", v->value,
		       v->value == 1 ? "" : "s");
		break;
	case CHECK_BANK_READ_UNKNOWN: {
		const struct check_bank_op *o = &h->ops[v->op];
		struct check_value name = {.kind = CHECK_VAL_STR,
					   .str = o->unknown,
					   .len = o->unknown_len};
		print_bank_op(h, v->op);
		printf(": names ");
		print_name(&name);
		printf(", not a configured account (%" PRId64 " such)",
		       v->value);
		break;
	}
	case CHECK_BANK_LOST:
		print_bank_op(h, v->op);
		printf(": acknowledged, but not in the final ledger");
		break;
	case CHECK_BANK_FAILED_APPLIED:
		print_bank_op(h, v->op);
		printf(": failed, but the ledger applies it at ");
		print_entry(h, v->pos);
		break;
	case CHECK_BANK_DUPLICATE:
		print_bank_op(h, v->op);
		printf(": applied %" PRId64 " times (ledger positions %zu and "
		       "%zu%s)",
		       v->value, v->pos + 1, v->pos2 + 1,
		       v->value > 2 ? ", ..." : "");
		break;
	case CHECK_BANK_NEVER_INVOKED:
		print_entry(h, v->pos);
		printf(" names a transfer nobody invoked");
		break;
	case CHECK_BANK_LEDGER_ORDER:
		print_bank_op(h, v->op);
		printf(" is applied at ledger position %zu, before ", v->pos + 1);
		print_bank_op(h, v->other);
		printf(" at position %zu, which completed before the first "
		       "was invoked",
		       v->pos2 + 1);
		break;
	case CHECK_BANK_REPLAY_NEGATIVE:
		printf("replaying the ledger from the initial balances, ");
		print_bank_op(h, v->op);
		printf(" at position %zu takes ", v->pos + 1);
		print_account(h, v->account);
		printf(" to %" PRId64, v->value);
		break;
	case CHECK_BANK_NO_PREFIX:
		print_bank_op(h, v->op);
		printf(" saw ");
		print_balances(h, v->op);
		printf(", the state after no prefix of the ledger");
		printf("\n    real time allows prefixes %zu..%zu", v->lo,
		       v->hi);
		if (v->floor > v->lo)
			printf(" (%zu.. by an earlier read)", v->floor);
		printf("; nearest: after %zu transfers, %u account%s differ%s",
		       v->nearest, v->n_diff, v->n_diff == 1 ? "" : "s",
		       v->n_diff == 1 ? "s" : "");
		for (uint32_t d = 0; d < v->n_diff_shown; d++) {
			uint32_t a = v->diff_account[d];
			printf("%s ", d ? "," : ":");
			print_account(h, a);
			printf(" read %" PRId64 " state %" PRId64,
			       h->cells[h->ops[v->op].cells_at + a],
			       v->diff_state[d]);
		}
		if (v->n_diff == 1)
			printf(" (one side of a transfer applied?)");
		break;
	case CHECK_BANK_REAL_TIME: {
		print_bank_op(h, v->op);
		printf(" saw the state after %zu prefix%s of the ledger",
		       v->n_matches, v->n_matches == 1 ? "" : "es");
		if (v->has_below)
			printf(" (the longest shorter than allowed: %zu)",
			       v->below);
		if (v->has_above)
			printf(" (the shortest longer than allowed: %zu)",
			       v->above);
		size_t lo = KEEL_MAX(v->lo, v->floor);
		printf(", but real time allows only %zu..%zu:", lo, v->hi);
		if (v->floor > v->lo && v->floor_read != UINT32_MAX) {
			printf("\n    at least %zu: the earlier ", v->floor);
			print_bank_op(h, v->floor_read);
			printf(" completed before it was invoked and saw no "
			       "shorter prefix");
		} else if (v->lo_op != UINT32_MAX) {
			printf("\n    at least %zu: ", v->lo);
			print_bank_op(h, v->lo_op);
			printf(" completed before it was invoked");
		}
		if (v->hi_op != UINT32_MAX) {
			printf("\n    at most %zu: ", v->hi);
			print_bank_op(h, v->hi_op);
			printf(" was invoked after it completed");
		}
		break;
	}
	case CHECK_BANK_KINDS:
		break;
	}
	printf("\n");
}

static int run_bank(const char *path, const char *buf, size_t len)
{
	struct check_bank_history h;
	struct check_parse_error err;
	check_bank_init(&h, &keel_alloc_libc);
	int rv = check_bank_parse(buf, len, &h, &err);
	if (rv) {
		if (err.line)
			fprintf(stderr, "keel check: %s:%u: %s\n", path,
				err.line, err.msg);
		else
			fprintf(stderr, "keel check: %s: %s\n", path, err.msg);
		check_bank_close(&h);
		return 2;
	}
	double start = cli_now_s();
	struct check_bank_result *res = malloc(sizeof(*res));
	if (!res) {
		fprintf(stderr, "keel check: out of memory\n");
		check_bank_close(&h);
		return 2;
	}
	rv = check_bank_run(&h, &keel_alloc_libc, res);
	double took = cli_now_s() - start;
	if (rv) {
		fprintf(stderr, "keel check: %s: %s\n", path,
			keel_strerror(rv));
		free(res);
		check_bank_close(&h);
		return 2;
	}
	bool valid = res->n_violations == 0;
	printf("%s\n", valid ? "valid" : "invalid");
	/* Grouped by kind, up to CHECK_BANK_SHOW of each. */
	for (int k = 0; k < CHECK_BANK_KINDS; k++) {
		for (size_t i = 0; i < res->n_shown; i++)
			if ((int)res->shown[i].kind == k)
				print_violation(&h, &res->shown[i]);
		if (res->n_by_kind[k] > CHECK_BANK_SHOW)
			printf("%s: ... and %zu more\n",
			       check_bank_kind_name((enum check_bank_kind)k),
			       res->n_by_kind[k] - CHECK_BANK_SHOW);
	}
	if (!res->consistency_checked)
		printf("consistency check skipped: %s\n", res->skipped);
	printf("(bank: %s; %u accounts, total %" PRId64 "; transfers %zu ok, "
	       "%zu fail, %zu info; reads %zu ok, %zu fail, %zu info; ",
	       valid ? "valid" : "invalid", h.n_accounts, h.total,
	       h.n_transfers[CHECK_BANK_OK], h.n_transfers[CHECK_BANK_FAIL],
	       h.n_transfers[CHECK_BANK_INFO], h.n_reads[CHECK_BANK_OK],
	       h.n_reads[CHECK_BANK_FAIL], h.n_reads[CHECK_BANK_INFO]);
	if (h.has_ledger)
		printf("ledger %zu", h.n_ledger);
	else
		printf("no ledger");
	if (res->consistency_checked)
		printf(", %zu reads placed on prefixes", res->n_reads_placed);
	printf("; %zu violations; %.3f s)\n", res->n_violations, took);
	free(res);
	check_bank_close(&h);
	return valid ? 0 : 1;
}

static int parse_format(const char *s, enum check_format *f)
{
	if (!strcmp(s, "jepsen-etcd") || !strcmp(s, "etcd"))
		*f = CHECK_FORMAT_ETCD;
	else if (!strcmp(s, "kv"))
		*f = CHECK_FORMAT_KV;
	else if (!strcmp(s, "jsonl") || !strcmp(s, "json"))
		*f = CHECK_FORMAT_JSONL;
	else if (!strcmp(s, "auto"))
		*f = CHECK_FORMAT_AUTO;
	else
		return -1;
	return 0;
}

int cmd_check(int argc, char **argv)
{
	enum check_format format = CHECK_FORMAT_AUTO;
	bool bank = false;
	struct check_options opts;
	memset(&opts, 0, sizeof(opts));
	double timeout_s = 30;
	const char *path = NULL;
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i];
		if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
			usage(stdout);
			return 0;
		}
		bool takes = !strcmp(arg, "--format") ||
			     !strcmp(arg, "--timeout") ||
			     !strcmp(arg, "--model");
		if (takes && i + 1 >= argc) {
			fprintf(stderr, "keel check: %s needs a value\n", arg);
			return 2;
		}
		if (!strcmp(arg, "--format")) {
			if (parse_format(argv[++i], &format)) {
				fprintf(stderr,
					"keel check: unknown format '%s'\n",
					argv[i]);
				return 2;
			}
		} else if (!strcmp(arg, "--model")) {
			const char *m = argv[++i];
			if (!strcmp(m, "register"))
				opts.model = CHECK_MODEL_REGISTER;
			else if (!strcmp(m, "kv"))
				opts.model = CHECK_MODEL_KV;
			else if (!strcmp(m, "bank"))
				bank = true;
			else {
				fprintf(stderr,
					"keel check: unknown model '%s'\n", m);
				return 2;
			}
		} else if (!strcmp(arg, "--timeout")) {
			char *end;
			timeout_s = strtod(argv[++i], &end);
			if (*end || !(timeout_s > 0) || timeout_s > 1e9) {
				fprintf(stderr,
					"keel check: bad --timeout '%s'\n",
					argv[i]);
				return 2;
			}
		} else if (arg[0] == '-' && arg[1]) {
			fprintf(stderr, "keel check: unknown option '%s'\n",
				arg);
			usage(stderr);
			return 2;
		} else if (path) {
			fprintf(stderr, "keel check: one FILE only\n");
			return 2;
		} else {
			path = arg;
		}
	}
	if (!path) {
		usage(stderr);
		return 2;
	}

	char *buf;
	size_t len;
	if (bank && format != CHECK_FORMAT_AUTO &&
	    format != CHECK_FORMAT_JSONL) {
		fprintf(stderr, "keel check: --model bank reads JSON lines\n");
		return 2;
	}
	if (read_file(path, &buf, &len))
		return 2;
	if (bank || (opts.model == CHECK_MODEL_AUTO &&
		     (format == CHECK_FORMAT_AUTO ||
		      format == CHECK_FORMAT_JSONL) &&
		     check_bank_detect(buf, len))) {
		int code = run_bank(path, buf, len);
		free(buf);
		return code;
	}
	struct check_history h;
	struct check_parse_error err;
	check_history_init(&h, &keel_alloc_libc);
	int rv = check_parse(format, buf, len, &h, &err);
	free(buf);
	if (rv) {
		if (err.line)
			fprintf(stderr, "keel check: %s:%u: %s\n", path,
				err.line, err.msg);
		else
			fprintf(stderr, "keel check: %s: %s\n", path, err.msg);
		check_history_close(&h);
		return 2;
	}

	struct deadline dl = {.at = cli_now_s() + timeout_s};
	opts.should_stop = deadline_passed;
	opts.stop_ctx = &dl;
	opts.stop_every = 1024;
	double start = cli_now_s();
	struct check_result res;
	rv = check_history_run(&h, &opts, &keel_alloc_libc, &res);
	double took = cli_now_s() - start;
	int code = 2;
	if (rv) {
		fprintf(stderr, "keel check: %s: %s%s%s\n", path,
			keel_strerror(rv), res.reason[0] ? ": " : "",
			res.reason);
	} else if (res.verdict == CHECK_LINEARIZABLE) {
		printf("linearizable\n");
		code = 0;
	} else if (res.verdict == CHECK_NOT_LINEARIZABLE) {
		printf("not-linearizable\n");
		explain(&h, &res);
		code = 1;
	} else {
		printf("undecided\n%s\n", res.reason);
	}
	if (!rv)
		printf("(%s, %zu ops, %zu keys, %zu fail/unknown ops dropped, "
		       "%" PRIu64 " search steps, %.3f s)\n",
		       check_format_name(h.format), h.n_ops, h.n_keys,
		       h.n_dropped, res.steps, took);
	check_history_close(&h);
	return code;
}
