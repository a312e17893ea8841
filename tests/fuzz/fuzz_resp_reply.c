/*
 * fuzz_resp_reply.c -- libFuzzer harness for the RESP2/RESP3 reply parser
 * (src/resp/reply_parse.c), which the client library and CLI run on bytes
 * a server (or anything pretending to be one) sent.
 *
 * Input: byte 0 picks a cut point, the rest is the reply stream. Limits
 * are small (depth 8, 256 elements, 64 per aggregate, 256-byte strings) so
 * the fuzzer reaches them. Beyond "no crash, no leak, no overread" it
 * checks:
 *   - a parsed reply re-encoded in RESP3 parses back to the same tree, and
 *     encoding that again gives the same bytes (the encoding is stable);
 *   - re-encoding in RESP2 also parses;
 *   - any strict prefix of a parsed reply is RESP_NEED_MORE, never an
 *     error or a different reply (so a client reading in pieces behaves
 *     like one reading all at once);
 *   - errors come with a message and allocate nothing visible.
 * Any violation aborts.
 */
#include "keel/resp.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct resp_reply_limits fuzz_limits = {
    .max_depth = 8,
    .max_elements = 256,
    .max_aggregate_len = 64,
    .max_string_len = 256,
};

static void check(bool ok)
{
	if (!ok)
		abort();
}

static bool same(const struct resp_value *a, const struct resp_value *b)
{
	if (a->type != b->type || a->n != b->n)
		return false;
	switch (a->type) {
	case RESP_T_INTEGER:
	case RESP_T_BOOL:
		return a->integer == b->integer;
	case RESP_T_DOUBLE:
		return (isnan(a->dbl) && isnan(b->dbl)) || a->dbl == b->dbl;
	case RESP_T_NULL:
		return true;
	case RESP_T_VERBATIM:
		if (memcmp(a->format, b->format, 4))
			return false;
		/* fall through */
	case RESP_T_STRING:
	case RESP_T_ERROR:
	case RESP_T_BULK:
	case RESP_T_BIGNUM:
	case RESP_T_BLOB_ERROR:
		return a->len == b->len && !memcmp(a->str, b->str, a->len) &&
		       a->str[a->len] == 0 && b->str[b->len] == 0;
	default:
		for (size_t i = 0; i < a->n; i++)
			if (!same(&a->elem[i], &b->elem[i]))
				return false;
		return true;
	}
}

static struct resp_value *parse_exact(const uint8_t *buf, size_t len,
				      size_t *used, int *rc)
{
	/* Exact-size heap copy: ASan sees any read past the end. */
	uint8_t *copy = malloc(len ? len : 1);
	check(copy != NULL);
	if (len)
		memcpy(copy, buf, len);
	struct resp_value *v = NULL;
	const char *err = NULL;
	*rc = resp_reply_parse(&fuzz_limits, &keel_alloc_libc, copy, len, used,
			       &v, &err);
	if (*rc == RESP_ERR_PROTOCOL)
		check(err != NULL && !strncmp(err, "Protocol error: ", 16));
	if (*rc != RESP_OK)
		check(v == NULL && *used == 0);
	else
		check(v != NULL && *used > 0 && *used <= len);
	free(copy);
	return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	uint8_t cut_sel = data[0];
	data++;
	size--;
	size_t used;
	int rc;
	struct resp_value *v = parse_exact(data, size, &used, &rc);
	if (rc != RESP_OK)
		return 0;

	size_t cut = (size_t)cut_sel * used / 256; /* < used */
	size_t u2;
	int rc2;
	struct resp_value *w = parse_exact(data, cut, &u2, &rc2);
	check(rc2 == RESP_NEED_MORE);
	check(w == NULL);

	struct resp_buf b3, b3b, b2;
	resp_buf_init(&b3, &keel_alloc_libc, 1 << 20, 3);
	resp_write_value(&b3, v);
	check(!b3.failed);
	struct resp_value *back = parse_exact(b3.data, b3.len, &u2, &rc2);
	check(rc2 == RESP_OK && u2 == b3.len);
	check(same(v, back));
	resp_buf_init(&b3b, &keel_alloc_libc, 1 << 20, 3);
	resp_write_value(&b3b, back);
	check(b3b.len == b3.len && !memcmp(b3b.data, b3.data, b3.len));

	resp_buf_init(&b2, &keel_alloc_libc, 1 << 20, 2);
	resp_write_value(&b2, v);
	check(!b2.failed);
	struct resp_value *back2 = parse_exact(b2.data, b2.len, &u2, &rc2);
	check(rc2 == RESP_OK && u2 == b2.len);

	resp_value_free(&keel_alloc_libc, back2);
	resp_value_free(&keel_alloc_libc, back);
	resp_value_free(&keel_alloc_libc, v);
	resp_buf_close(&b2);
	resp_buf_close(&b3b);
	resp_buf_close(&b3);
	return 0;
}
