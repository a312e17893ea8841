/*
 * cmd_check.c -- `keel check`: reads a history file, parses it, runs the
 * linearizability checker and prints the verdict. This is the adapter
 * around src/check: it owns the file I/O, the clock (a deadline the search
 * polls through should_stop) and the printing.
 *
 * Exit codes: 0 linearizable, 1 not linearizable, 2 undecided within the
 * timeout, bad input or bad usage.
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
		"[--model register|kv]\n"
		"                  [--timeout SECONDS] FILE\n"
		"\n"
		"Checks a history of client operations for linearizability.\n"
		"Prints `linearizable` or `not-linearizable` (then the smallest\n"
		"failing key and where the search got stuck).\n"
		"  --format   input format (default: detected from the file)\n"
		"  --model    register (read/write/cas) or kv (also incr,\n"
		"             append, del); default register for jepsen-etcd\n"
		"  --timeout  give up after this many seconds (default 30)\n"
		"exit: 0 linearizable, 1 not linearizable, 2 undecided or bad "
		"input\n");
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
	if (read_file(path, &buf, &len))
		return 2;
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
