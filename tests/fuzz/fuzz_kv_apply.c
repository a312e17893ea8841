/*
 * fuzz_kv_apply.c -- libFuzzer harness for kv_apply: arbitrary command
 * entries must give a reply and never crash, and two replicas fed the same
 * entries must agree byte for byte.
 *
 * The input is a list of entries, one per line. A line starting with '!'
 * is a raw entry (the bytes after it, fed to kv_apply as they are, so the
 * decoder sees garbage); any other line is a command: its first byte moves
 * the clock forward, the rest is split on spaces into argv and encoded
 * properly, so the fuzzer reaches deep into command semantics. Every entry
 * goes to replica A as is, to replica B through the leader's
 * kv_rewrite_relative; their replies (hashed from the reply-builder calls)
 * and digests must agree after each entry. At the end A is snapshotted and
 * restored, and the copy must have A's digest. Read commands also run
 * through kv_read, which must not change the digest.
 *
 * A line starting with '|' is a transaction: its second byte moves the
 * clock and sets an allocation countdown, the rest is commands separated
 * by ";" tokens, sent as KEEL.EXEC 0 <n> (<argc> <arg>...)... . Replica A
 * allocates through a failing allocator armed with that countdown: when
 * the apply fails with KEEL_ERR_NOMEM the digest must be what it was
 * (the undo journal), and the entry is applied again without failure.
 *
 * Replica A also carries frozen versions (kv_freeze): one is taken at a
 * line starting with '#' or every 16th entry when none is live, the
 * expected bytes being kv_snapshot_encode at that moment; after every
 * later entry it streams a step of a size taken from the line, and when
 * it is done (or at the end of the input) the streamed bytes must equal
 * the expected ones. So the fuzzer drives every mutation path past a
 * snapshot cursor, and B, without a frozen version, must still agree.
 */
#include "keel/kv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_ARGS 32

static void check(bool ok)
{
	if (!ok)
		abort();
}

static void h_mix(void *ctx, uint64_t tag, const void *p, size_t len)
{
	uint64_t *h = ctx;
	const uint8_t *b = p;
	*h = (*h ^ tag) * 0x100000001b3ull;
	for (size_t i = 0; i < len; i++)
		*h = (*h ^ b[i]) * 0x100000001b3ull;
}
static void r_status(void *ctx, const char *s)
{
	h_mix(ctx, 1, s, strlen(s));
}
static void r_error(void *ctx, const char *s)
{
	h_mix(ctx, 2, s, strlen(s));
}
static void r_integer(void *ctx, int64_t v)
{
	h_mix(ctx, 3, &v, sizeof(v));
}
static void r_bulk(void *ctx, const uint8_t *p, size_t len)
{
	h_mix(ctx, 4, p, len);
}
static void r_null(void *ctx)
{
	h_mix(ctx, 5, NULL, 0);
}
static void r_array(void *ctx, size_t n)
{
	h_mix(ctx, 6, &n, sizeof(n));
}
static const struct kv_reply_ops ops = {r_status, r_error, r_integer,
					r_bulk,   r_null,  r_array};

/* Replica A's allocator: fails every allocation once countdown hits 0
 * (< 0: never). One per process; the fuzzer runs one input at a time. */
static long fail_countdown = -1;

static void *fa_malloc(void *ctx, size_t n)
{
	(void)ctx;
	if (fail_countdown == 0)
		return NULL;
	if (fail_countdown > 0)
		fail_countdown--;
	return malloc(n ? n : 1);
}
static void *fa_realloc(void *ctx, void *p, size_t n)
{
	(void)ctx;
	if (fail_countdown == 0)
		return NULL;
	if (fail_countdown > 0)
		fail_countdown--;
	return realloc(p, n ? n : 1);
}
static void fa_free(void *ctx, void *p)
{
	(void)ctx;
	free(p);
}
static const struct keel_alloc fail_alloc = {NULL, fa_malloc, fa_realloc,
					     fa_free};

/* Builds KEEL.EXEC 0 <n> (<argc> <arg>...)... from tokens split by ";".
 * counts holds the numbers. Returns argc (0: nothing to run). */
#define TXN_MAX_ARGS (3 + 2 * MAX_ARGS)
static int txn_argv(const uint8_t *const *tok, const size_t *tl, int nt,
		    const uint8_t **argv, size_t *lens, char (*counts)[8])
{
	int argc = 3, n = 0, start = 0;
	argv[0] = (const uint8_t *)"KEEL.EXEC";
	lens[0] = 9;
	argv[1] = (const uint8_t *)"0";
	lens[1] = 1;
	for (int i = 0; i <= nt; i++) {
		if (i < nt && !(tl[i] == 1 && tok[i][0] == ';'))
			continue;
		int k = i - start;
		if (k > 0) {
			int c = snprintf(counts[n + 1], 8, "%d", k);
			argv[argc] = (const uint8_t *)counts[n + 1];
			lens[argc++] = (size_t)c;
			for (int j = start; j < i; j++) {
				argv[argc] = tok[j];
				lens[argc++] = tl[j];
			}
			n++;
		}
		start = i + 1;
	}
	if (n == 0)
		return 0;
	int c = snprintf(counts[0], 8, "%d", n);
	argv[2] = (const uint8_t *)counts[0];
	lens[2] = (size_t)c;
	return argc;
}

struct fz {
	struct kv_frozen *f;
	uint8_t *want, *got;
	size_t len, off;
};

static void fz_start(struct fz *z, struct kv *kv)
{
	check(kv_snapshot_encode(kv, &keel_alloc_libc, &z->want, &z->len) == 0);
	z->f = kv_freeze(kv, &keel_alloc_libc);
	check(z->f != NULL && kv_frozen_size(z->f) == z->len);
	z->got = malloc(z->len);
	check(z->got != NULL);
	z->off = 0;
}

/* One step of cap bytes; at the end, the bytes must be the expected. */
static void fz_step(struct fz *z, size_t cap)
{
	size_t n;
	bool more = kv_frozen_next(z->f, z->got + z->off,
				   cap < z->len - z->off ? cap : z->len - z->off,
				   &n);
	z->off += n;
	check(z->off <= z->len);
	if (more)
		return;
	check(z->off == z->len && memcmp(z->got, z->want, z->len) == 0);
	check(kv_frozen_preimage_bytes(z->f) == 0);
	kv_frozen_destroy(z->f);
	free(z->want);
	free(z->got);
	memset(z, 0, sizeof(*z));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fail_countdown = -1;
	struct kv *a = kv_create(&fail_alloc);
	struct kv *b = kv_create(&keel_alloc_libc);
	check(a && b);
	uint64_t index = 0, now = 1000;
	size_t pos = 0;
	struct fz z = {0};
	while (pos < size) {
		size_t end = pos;
		while (end < size && data[end] != '\n')
			end++;
		const uint8_t *line = data + pos;
		size_t len = end - pos;
		pos = end + 1;
		if (len == 0)
			continue;
		uint64_t ha = 0, hb = 0;
		index++;
		if (!z.f && (line[0] == '#' || index % 16 == 8))
			fz_start(&z, a);
		if (line[0] == '!') {
			/* Raw bytes, copied so ASan sees their exact end. */
			uint8_t *raw = malloc(len);
			check(raw != NULL);
			memcpy(raw, line + 1, len - 1);
			check(kv_apply(a, index, raw, len - 1, &ops, &ha) == 0);
			check(kv_apply(b, index, raw, len - 1, &ops, &hb) == 0);
			free(raw);
		} else if (line[0] == '|') {
			if (len < 2) {
				index--;
				continue;
			}
			now += line[1] % 64;
			const uint8_t *tok[MAX_ARGS];
			size_t tl[MAX_ARGS];
			int nt = 0;
			size_t i = 2;
			while (i < len && nt < MAX_ARGS) {
				size_t s = i;
				while (i < len && line[i] != ' ')
					i++;
				tok[nt] = line + s;
				tl[nt] = i - s;
				nt++;
				i++;
			}
			const uint8_t *argv[TXN_MAX_ARGS];
			size_t lens[TXN_MAX_ARGS];
			char counts[MAX_ARGS + 1][8];
			int argc = txn_argv(tok, tl, nt, argv, lens, counts);
			if (argc == 0) {
				index--;
				continue;
			}
			size_t need = kv_cmd_encoded_size(argc, lens), n;
			check(need > 0);
			uint8_t *buf = malloc(need);
			check(buf != NULL);
			check(kv_cmd_encode(now, argc, argv, lens, buf, need,
					    &n) == 0);
			uint64_t before = kv_digest(a);
			fail_countdown = line[1] / 64 ? (long)(line[1] % 23) : -1;
			int rc = kv_apply(a, index, buf, n, &ops, &ha);
			fail_countdown = -1;
			if (rc == KEEL_ERR_NOMEM) {
				/* All or nothing: as before, and it may run
				 * again. */
				check(kv_digest(a) == before);
				ha = 0;
				rc = kv_apply(a, index, buf, n, &ops, &ha);
			}
			check(rc == 0);
			free(buf);
			uint8_t *rw;
			check(kv_rewrite_relative(&keel_alloc_libc, now, argc,
						  argv, lens, &rw, &n) == 0);
			check(kv_apply(b, index, rw, n, &ops, &hb) == 0);
			free(rw);
		} else {
			now += line[0];
			const uint8_t *argv[MAX_ARGS];
			size_t lens[MAX_ARGS];
			int argc = 0;
			size_t i = 1;
			while (i < len && argc < MAX_ARGS) {
				size_t s = i;
				while (i < len && line[i] != ' ')
					i++;
				argv[argc] = line + s;
				lens[argc] = i - s;
				argc++;
				i++;
			}
			if (argc == 0) {
				index--;
				continue;
			}
			size_t need = kv_cmd_encoded_size(argc, lens);
			check(need > 0);
			uint8_t *buf = malloc(need);
			size_t n;
			check(buf != NULL);
			check(kv_cmd_encode(now, argc, argv, lens, buf, need,
					    &n) == 0);
			check(kv_apply(a, index, buf, n, &ops, &ha) == 0);
			free(buf);
			uint8_t *rw;
			check(kv_rewrite_relative(&keel_alloc_libc, now, argc,
						  argv, lens, &rw, &n) == 0);
			check(kv_apply(b, index, rw, n, &ops, &hb) == 0);
			free(rw);
			const struct kv_command *cmd =
				kv_command_lookup(argv[0], lens[0]);
			if (cmd && (cmd->flags & KV_CMD_READ)) {
				uint64_t before = kv_digest(a), hr = 0;
				kv_read(a, argc, argv, lens, now, &ops, &hr);
				check(kv_digest(a) == before);
			}
		}
		check(ha == hb);
		check(kv_digest(a) == kv_digest(b));
		if (z.f)
			fz_step(&z, 1 + line[len - 1] % 97);
	}
	while (z.f)
		fz_step(&z, 4096);
	uint8_t *snap;
	size_t slen;
	check(kv_snapshot_encode(a, &keel_alloc_libc, &snap, &slen) == 0);
	struct kv *c = NULL;
	check(kv_snapshot_decode(&keel_alloc_libc, snap, slen, &c) == 0);
	check(kv_digest(c) == kv_digest(a));
	free(snap);
	kv_destroy(c);
	kv_destroy(a);
	kv_destroy(b);
	return 0;
}
