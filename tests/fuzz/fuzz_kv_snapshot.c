/*
 * fuzz_kv_snapshot.c -- libFuzzer harness for kv_snapshot_decode, the code
 * that turns bytes from disk or from another node into a state machine.
 *
 * Each input is tried twice: as given (the CRC should reject almost all of
 * it) and with its trailer CRC and total length re-sealed, so the field
 * checks behind the CRC get fuzzed too. Beyond "no crash, no overread"
 * (ASan/UBSan, the input copied to a buffer of exactly its size) it checks
 * what the format promises: a snapshot that decodes is canonical --
 * re-encoding it gives the same bytes -- and the decoded kv's indexes agree
 * with its counters. Any violation aborts.
 */
#include "keel/kv.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(bool ok)
{
	if (!ok)
		abort();
}

static void decode_and_check(const uint8_t *buf, size_t size)
{
	struct kv *kv = NULL;
	int rc = kv_snapshot_decode(&keel_alloc_libc, buf, size, &kv);
	if (rc != 0) {
		check(kv == NULL);
		return;
	}
	check(kv != NULL);
	uint8_t *out = NULL;
	size_t len = 0;
	check(kv_snapshot_encode(kv, &keel_alloc_libc, &out, &len) == 0);
	check(len == size && memcmp(out, buf, size) == 0);
	struct kv_stats st;
	kv_stats(kv, &st);
	check(kv_dbsize(kv, 0) <= st.keys);
	check(kv_dbsize(kv, UINT64_MAX) == st.keys - st.expires);
	free(out);
	kv_destroy(kv);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *buf = malloc(size ? size : 1);
	if (!buf)
		return 0;
	if (size)
		memcpy(buf, data, size);
	decode_and_check(buf, size);
	if (size >= KV_SNAP_HEADER_BYTES + 4) {
		keel_put_u64(buf + 16, size);
		keel_put_u32(buf + size - 4, keel_crc32c(0, buf, size - 4));
		decode_and_check(buf, size);
	}
	free(buf);
	return 0;
}
