/*
 * fuzz_history.c -- libFuzzer harness for the checker's three history
 * parsers (src/check/), which read files produced by other programs.
 *
 * The first byte picks the parser (jepsen-etcd, kv, jsonl, or detection);
 * the rest is the input, copied into a buffer of exactly its size so ASan
 * catches a read one byte past the end. Beyond "no crash, no leak", it
 * checks what the parsers promise: an error always has a message; a
 * parsed history's ops name existing keys, their calls come before their
 * returns, and an op is indeterminate exactly when its return is infinite.
 * Small parsed histories (<= 12 ops) also go through the search with a
 * step budget, which must answer without error and explain any failure.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(bool ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "fuzz_history: property failed: %s\n", what);
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	static const enum check_format formats[] = {
		CHECK_FORMAT_ETCD, CHECK_FORMAT_KV, CHECK_FORMAT_JSONL,
		CHECK_FORMAT_AUTO};
	enum check_format format = formats[data[0] % 4];
	size_t len = size - 1;
	char *buf = malloc(len ? len : 1);
	if (!buf)
		return 0;
	if (len)
		memcpy(buf, data + 1, len);

	struct check_history h;
	struct check_parse_error err;
	check_history_init(&h, &keel_alloc_libc);
	int rv = check_parse(format, buf, len, &h, &err);
	if (rv) {
		check(rv == KEEL_ERR_MALFORMED || rv == KEEL_ERR_TOO_BIG ||
			      rv == KEEL_ERR_NOMEM,
		      "parse error code");
		check(err.msg[0] != '\0', "parse error has a message");
		check(strlen(err.msg) < sizeof(err.msg), "message terminated");
	} else {
		for (size_t i = 0; i < h.n_ops; i++) {
			const struct check_op *o = &h.ops[i];
			check(o->key < h.n_keys, "op key in range");
			check(o->call_seq < o->ret_seq, "call before return");
			check((o->outcome == CHECK_OUT_INFO) ==
				      (o->ret_seq == CHECK_SEQ_INF),
			      "info iff open-ended");
			check(o->call_line >= 1, "call line set");
			if (o->f == CHECK_F_READ)
				check(o->outcome == CHECK_OUT_OK && o->has_out,
				      "kept reads have results");
		}
		if (h.n_ops <= 12) {
			struct check_options opts;
			memset(&opts, 0, sizeof(opts));
			opts.model = CHECK_MODEL_KV;
			opts.step_budget = 20000;
			struct check_result res;
			rv = check_history_run(&h, &opts, &keel_alloc_libc,
					       &res);
			check(rv == 0 || rv == KEEL_ERR_TOO_BIG,
			      "run succeeds");
			if (!rv && res.verdict == CHECK_NOT_LINEARIZABLE) {
				check(res.bad_key < h.n_keys, "bad key");
				check(res.prefix_len < res.bad_key_ops,
				      "prefix shorter than the key");
				check(res.n_stuck >= 1, "something is stuck");
				for (size_t i = 0; i < res.n_stuck; i++)
					check(res.stuck[i] < h.n_ops &&
						      h.ops[res.stuck[i]].key ==
							      res.bad_key,
					      "stuck op on the bad key");
			}
		}
	}
	check_history_close(&h);
	free(buf);
	return 0;
}
