/*
 * fuzz_session.c -- the session table's snapshot decoder
 * (src/node/session.c): any bytes decode or are refused, never read out
 * of bounds; what decodes re-encodes to the same bytes (one meaning per
 * byte string) and behaves: a check on every session it holds answers.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/common.h"
#include "node/session.h"

static void check(int ok)
{
	if (!ok)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > (1u << 20))
		return 0;
	struct session_table *t = NULL;
	int rv = session_decode(&keel_alloc_libc, data, size, &t);
	if (rv) {
		check(t == NULL);
		return 0;
	}
	uint64_t n = session_encoded_size(t);
	check(n == size);
	uint8_t *again = malloc(n ? n : 1);
	check(again != NULL);
	session_encode(t, again);
	check(memcmp(again, data, n) == 0);
	free(again);
	uint64_t d = session_digest(t);
	(void)d;
	/* use it: a keepalive far in the future expires everything */
	session_keepalive(t, 1, UINT64_MAX / 2);
	check(session_count(t) <= SESSION_MAX);
	session_table_destroy(t);
	return 0;
}
