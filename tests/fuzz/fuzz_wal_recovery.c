/*
 * fuzz_wal_recovery.c -- WAL recovery from arbitrary bytes: the input is
 * cut into a hard-state file, up to three segments, two snapshots and a
 * leftover snapshot temp file on an in-memory disk, then wal_open must
 * either recover or refuse with an error -- never crash, read out of
 * bounds or leak. When it recovers, the entries it returns must be
 * contiguous, the snapshot it names must read back (in ranges) with the
 * length and CRC it reported, the temp file must be gone, and it must
 * accept an append and a streamed snapshot.
 *
 * Layout of the input: [u8 flags][u16 len][bytes] repeated; the k-th chunk
 * becomes the k-th file. A valid segment header is planted when a flag bit
 * asks for it, so the fuzzer reaches the record parser without having to
 * guess a CRC; for a snapshot file the bit plants a header whose length
 * and CRCs match the chunk's bytes (bit 2 then spoils one of them).
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "keel/memdisk.h"
#include "keel/wal.h"

static void put_file(struct keel_disk *d, const char *path, const uint8_t *b,
		     size_t n)
{
	struct keel_file *f;
	if (d->ops->open(d->ctx, path, KEEL_DISK_CREATE, &f))
		return;
	d->ops->pwrite(d->ctx, f, b, n, 0);
	d->ops->sync(d->ctx, f);
	d->ops->close(d->ctx, f);
}

static void segment_header(uint8_t *h, uint64_t seq)
{
	memset(h, 0, 64);
	memcpy(h, "KEELWAL\0", 8);
	keel_put_u32(h + 8, WAL_VERSION);
	keel_put_u64(h + 16, seq);
	keel_put_u64(h + 24, 1);
	keel_put_u64(h + 32, 1);
	keel_put_u32(h + 60, keel_crc32c(0, h, 60));
}

/* A snapshot header for payload p[0..n) at (index, 1); spoil (0..3)
 * breaks nothing, the header CRC, the length or the payload CRC. */
static void snapshot_header(uint8_t *h, uint64_t index, const uint8_t *p,
			    size_t n, int spoil)
{
	memset(h, 0, 64);
	memcpy(h, "KEELSNP\0", 8);
	keel_put_u32(h + 8, WAL_VERSION);
	keel_put_u64(h + 16, 1);
	keel_put_u64(h + 24, index);
	keel_put_u64(h + 32, 1);
	keel_put_u64(h + 40, n + (spoil == 2));
	keel_put_u32(h + 48, keel_crc32c(0, p, n) ^ (spoil == 3));
	keel_put_u32(h + 60, keel_crc32c(0, h, 60) ^ (spoil == 1));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct memdisk *md = memdisk_create(NULL, 1);
	if (!md)
		return 0;
	struct keel_disk d = memdisk_disk(md);
	d.ops->mkdir(d.ctx, "wal");
	d.ops->mkdir(d.ctx, "snap");
	static const char *names[] = {
		"hardstate", "wal/0000000000000001.wal",
		"wal/0000000000000002.wal", "wal/0000000000000003.wal",
		"snap/0000000000000002-0000000000000001.snap",
		"snap/0000000000000005-0000000000000001.snap",
		"snap/0000000000000009-0000000000000001.snap.tmp"};
	static const uint64_t snap_at[] = {0, 0, 0, 0, 2, 5, 9};
	size_t off = 0;
	static uint8_t buf[8192];
	for (size_t k = 0; k < 7 && off + 3 <= size; k++) {
		uint8_t flags = data[off];
		size_t len = (size_t)data[off + 1] | ((size_t)data[off + 2] << 8);
		off += 3;
		if (len > size - off)
			len = size - off;
		if (len > sizeof(buf) - 64)
			len = sizeof(buf) - 64;
		size_t n = 0;
		if (k >= 1 && k <= 3 && (flags & 1)) {
			segment_header(buf, k);
			n = 64;
		}
		if (k >= 4 && (flags & 1)) {
			n = 64; /* header planted below, over the payload */
		}
		memcpy(buf + n, data + off, len);
		n += len;
		if (k >= 4 && (flags & 1))
			snapshot_header(buf, snap_at[k], buf + 64, n - 64,
					(flags >> 2) & 3);
		/* Records need 8-byte alignment and a CRC; let a flag fix the
		 * CRC of a first record so deeper paths are reachable. */
		if (k >= 1 && k <= 3 && (flags & 2) && n >= 64 + 32) {
			uint32_t rl = keel_get_u32(buf + 68) % 64;
			keel_put_u32(buf + 68, rl);
			if (64 + 32 + rl <= n)
				keel_put_u32(buf + 64,
					     keel_crc32c(0, buf + 68, 28 + rl));
		}
		put_file(&d, names[k], buf, n);
		off += len;
	}
	struct wal_config cfg = {.disk = d, .cluster_id = 1,
				 .segment_bytes = 8192};
	struct wal *w = NULL;
	struct wal_recovered rec;
	char err[256];
	if (wal_open(&cfg, &w, &rec, err, sizeof(err)) == 0) {
		for (uint32_t i = 1; i < rec.n_entries; i++)
			if (rec.entries[i].index != rec.entries[i - 1].index + 1)
				__builtin_trap();
		if (rec.n_entries &&
		    rec.entries[0].index != rec.snap_index + 1)
			__builtin_trap();
		if (memdisk_file_size(md, names[6]) >= 0)
			__builtin_trap(); /* leftover temp files are removed */
		if (rec.snap_index) {
			/* Reads back in ranges, with the reported CRC. */
			uint32_t crc = 0;
			for (uint64_t o = 0; o < rec.snap_len;) {
				size_t n = (size_t)(rec.snap_len - o);
				if (n > 1000)
					n = 1000;
				if (wal_snapshot_read(w, rec.snap_index,
						      rec.snap_term, o, buf,
						      n) != 0)
					__builtin_trap();
				crc = keel_crc32c(crc, buf, n);
				o += n;
			}
			if (crc != rec.snap_crc)
				__builtin_trap();
		}
		uint64_t next = rec.snap_index + rec.n_entries + 1;
		uint64_t term = rec.n_entries
					? rec.entries[rec.n_entries - 1].term
					: rec.snap_term;
		if (!term)
			term = 1;
		wal_recovered_free(w, &rec);
		struct raft_entry e = {.term = term, .index = next};
		if (wal_append(w, &e, 1) == 0 && wal_sync(w) == 0) {
			uint64_t h;
			if (wal_snapshot_begin(w, next, term, 3, WAL_SNAP_LOCAL,
					       &h) == 0 &&
			    wal_snapshot_write(w, h, 0, data, size < 3 ? 0 : 3) == 0)
				(void)wal_snapshot_finish(
					w, h, keel_crc32c(0, data, size < 3 ? 0 : 3));
		}
		wal_close(w);
	}
	memdisk_destroy(md);
	return 0;
}
