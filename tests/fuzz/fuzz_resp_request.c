/*
 * fuzz_resp_request.c -- libFuzzer harness for the RESP request parser
 * (src/resp/parse.c), the first code that reads bytes a client sent.
 *
 * Input layout: byte 0 picks where to split, byte 1 picks options (the
 * pre-AUTH limits on or off, one-byte-at-a-time feeding), the rest is what
 * the client sends. Limits are small so the fuzzer reaches every cap.
 * Beyond "no crash, no leak, no out-of-bounds read" (ASan/UBSan) it checks:
 *   - split independence: the whole buffer and the same bytes split in
 *     two (or fed one byte at a time) give the same commands and the same
 *     final verdict, error text included;
 *   - every piece is a heap copy freed as soon as the parser asks for more,
 *     so a parser that kept a pointer into it reads freed memory;
 *   - each parsed command, re-encoded with resp_write_command, parses
 *     back to the same argv in one call, consuming exactly the encoding.
 * Any violation aborts.
 */
#include "keel/resp.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct resp_limits fuzz_limits = {
    .max_bulk_len = 64,
    .max_array_len = 8,
    .max_inline_len = 128,
    .max_command_bytes = 256,
};

static const struct resp_limits fuzz_unauth = {
    .max_bulk_len = 16,
    .max_array_len = 3,
    .max_inline_len = 32,
    .max_command_bytes = 32,
};

/* For re-parsing: inline arguments may be as long as an inline line. */
static const struct resp_limits roundtrip_limits = {
    .max_bulk_len = 128,
    .max_array_len = 8,
    .max_inline_len = 128,
    .max_command_bytes = 1024,
};

static void check(bool ok)
{
	if (!ok)
		abort();
}

/* Everything observable: commands as (argc, len, bytes...) records, then
 * the final return code and, for errors, the message. */
struct log {
	uint8_t *d;
	size_t n, cap;
};

static void log_add(struct log *l, const void *s, size_t n)
{
	if (l->n + n > l->cap) {
		size_t nc = (l->cap ? l->cap * 2 : 256) + n;
		l->d = realloc(l->d, nc);
		check(l->d != NULL);
		l->cap = nc;
	}
	if (n)
		memcpy(l->d + l->n, s, n);
	l->n += n;
}

static void roundtrip(const struct resp_command *c)
{
	struct resp_buf b;
	resp_buf_init(&b, &keel_alloc_libc, 1 << 20, 2);
	resp_write_command(&b, c->argc, c->argv, c->argv_len);
	check(!b.failed);
	/* Exact-size copy so an overread is caught. */
	uint8_t *copy = malloc(b.len);
	check(copy != NULL);
	memcpy(copy, b.data, b.len);
	struct resp_parser p;
	resp_parser_init(&p, &keel_alloc_libc, &roundtrip_limits);
	struct resp_command back;
	size_t used = 0;
	check(resp_parse(&p, copy, b.len, &used, &back) == RESP_OK);
	check(used == b.len);
	check(back.argc == c->argc && !back.is_inline);
	for (size_t i = 0; i < c->argc; i++) {
		check(back.argv_len[i] == c->argv_len[i]);
		check(!c->argv_len[i] ||
		      !memcmp(back.argv[i], c->argv[i], c->argv_len[i]));
		/* Whole in the buffer: zero-copy. */
		check(back.argv[i] >= copy && back.argv[i] <= copy + b.len);
	}
	resp_parser_close(&p);
	free(copy);
	resp_buf_close(&b);
}

/* Feeds data[0..size) in pieces ending at the given cuts; logs into l. */
static void run(const uint8_t *data, size_t size, const size_t *cuts,
		size_t ncuts, bool unauth, bool do_roundtrip, struct log *l)
{
	struct resp_parser p;
	resp_parser_init(&p, &keel_alloc_libc, &fuzz_limits);
	if (unauth)
		resp_parser_set_unauth(&p, &fuzz_unauth);
	int rc = RESP_NEED_MORE;
	size_t start = 0;
	for (size_t k = 0; k <= ncuts; k++) {
		size_t end = k < ncuts ? cuts[k] : size;
		size_t n = end - start;
		uint8_t *piece = malloc(n ? n : 1);
		check(piece != NULL);
		if (n)
			memcpy(piece, data + start, n);
		size_t off = 0;
		for (;;) {
			size_t used;
			struct resp_command c;
			rc = resp_parse(&p, piece + off, n - off, &used, &c);
			if (rc != RESP_OK) {
				check(rc != RESP_NEED_MORE || used == n - off);
				break;
			}
			check(used > 0 && used <= n - off);
			check(c.argc > 0 &&
			      c.argc <= fuzz_limits.max_array_len);
			uint64_t argc = c.argc;
			log_add(l, &argc, sizeof(argc));
			for (size_t i = 0; i < c.argc; i++) {
				uint64_t len = c.argv_len[i];
				check(len <= (c.is_inline
						  ? fuzz_limits.max_inline_len
						  : fuzz_limits.max_bulk_len));
				log_add(l, &len, sizeof(len));
				log_add(l, c.argv[i], c.argv_len[i]);
			}
			if (do_roundtrip)
				roundtrip(&c);
			off += used;
		}
		memset(piece, 0xAA, n);
		free(piece);
		if (rc != RESP_OK && rc != RESP_NEED_MORE)
			break;
		start = end;
	}
	int32_t code = rc;
	log_add(l, &code, sizeof(code));
	if (rc == RESP_ERR_PROTOCOL) {
		const char *m = resp_parser_error(&p);
		check(strncmp(m, "Protocol error: ", 16) == 0);
		log_add(l, m, strlen(m));
	}
	resp_parser_close(&p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	uint8_t split_sel = data[0], opts = data[1];
	data += 2;
	size -= 2;
	bool unauth = opts & 1;

	struct log whole = {0}, split = {0};
	run(data, size, NULL, 0, unauth, true, &whole);
	if (opts & 2) {
		size_t *cuts = malloc((size + 1) * sizeof(size_t));
		check(cuts != NULL);
		for (size_t i = 0; i + 1 < size; i++)
			cuts[i] = i + 1;
		run(data, size, cuts, size > 0 ? size - 1 : 0, unauth, false,
		    &split);
		free(cuts);
	} else {
		size_t cut = size ? (size_t)split_sel * size / 255 : 0;
		run(data, size, &cut, 1, unauth, false, &split);
	}
	check(whole.n == split.n);
	check(whole.n == 0 || !memcmp(whole.d, split.d, whole.n));
	free(whole.d);
	free(split.d);
	return 0;
}
