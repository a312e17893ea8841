/*
 * fuzz_kv_snap_reader.c -- libFuzzer harness for the streaming snapshot
 * reader (kv_snap_reader_*): the bytes of each input are fed in pieces
 * whose sizes are drawn from a generator seeded by the input itself (so a
 * crash replays), and the verdict must be kv_snapshot_decode's for the same
 * bytes; when both accept, the two kvs must encode to the input. Each input
 * is tried as given and with its total length and trailer CRC re-sealed, so
 * the field checks behind the CRC are reached. Any disagreement aborts.
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

static int feed_split(const uint8_t *buf, size_t size, uint64_t seed,
		      struct kv **out)
{
	struct keel_rand rnd;
	keel_rand_seed(&rnd, seed);
	struct kv_snap_reader *r = kv_snap_reader_create(&keel_alloc_libc, 0);
	check(r != NULL);
	/* Mostly tiny pieces (every boundary inside a record), sometimes big. */
	uint64_t most = keel_rand_chance(&rnd, 1, 4) ? 4096 : 9;
	size_t off = 0;
	int rc = 0;
	while (off < size && rc == 0) {
		size_t n = 1 + (size_t)keel_rand_below(&rnd, most);
		if (n > size - off)
			n = size - off;
		rc = kv_snap_reader_feed(r, buf + off, n);
		off += n;
	}
	if (rc == 0)
		rc = kv_snap_reader_finish(r, out);
	else
		check(kv_snap_reader_finish(r, out) == rc);
	kv_snap_reader_destroy(r);
	return rc;
}

static void compare(const uint8_t *buf, size_t size, uint64_t seed)
{
	struct kv *d = NULL, *s = NULL;
	int want = kv_snapshot_decode(&keel_alloc_libc, buf, size, &d);
	int got = feed_split(buf, size, seed, &s);
	check(want == got);
	check((d != NULL) == (want == 0) && (s != NULL) == (got == 0));
	if (want == 0) {
		uint8_t *e;
		size_t len;
		check(kv_snapshot_encode(s, &keel_alloc_libc, &e, &len) == 0);
		check(len == size && memcmp(e, buf, size) == 0);
		free(e);
	}
	kv_destroy(d);
	kv_destroy(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *buf = malloc(size ? size : 1);
	if (!buf)
		return 0;
	if (size)
		memcpy(buf, data, size);
	uint32_t seed = keel_crc32c(0, buf, size);
	compare(buf, size, seed);
	if (size >= KV_SNAP_HEADER_BYTES + 4) {
		keel_put_u64(buf + 16, size);
		keel_put_u32(buf + size - 4, keel_crc32c(0, buf, size - 4));
		compare(buf, size, seed + 1);
	}
	free(buf);
	return 0;
}
