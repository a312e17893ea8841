/*
 * memdisk.h -- an in-memory implementation of the env disk (disk.h) that
 * models power loss honestly, for the simulator and storage tests.
 *
 * Each file keeps its durable bytes (as of its last sync) and the writes
 * made since, in order. Directory changes (create, rename, remove) become
 * durable only through sync_dir. A crash keeps the durable state plus a
 * prefix of the unsynced writes drawn from the seed -- the last kept write
 * possibly torn (only a prefix of its bytes arrives) -- and undoes
 * directory changes that were not synced. Faults: any operation can be made
 * to fail with EIO or ENOSPC after a countdown, and bits can be flipped in
 * data at rest.
 *
 * Deterministic: the same seed and the same calls give the same disk.
 */
#ifndef KEEL_MEMDISK_H
#define KEEL_MEMDISK_H

#include "keel/disk.h"

struct memdisk;

/* NULL on allocation failure. */
struct memdisk *memdisk_create(const struct keel_alloc *alloc, uint64_t seed);
void memdisk_destroy(struct memdisk *d);

/* The disk interface over d (d must outlive its use). */
struct keel_disk memdisk_disk(struct memdisk *d);

enum memdisk_crash_mode {
	MEMDISK_LOSE_UNSYNCED = 0, /* every unsynced write is lost */
	MEMDISK_TORN = 1,          /* a random prefix survives, the last torn */
	MEMDISK_KEEP_UNSYNCED = 2, /* everything written survives (a clean
				      power loss after the page cache was
				      flushed by chance) */
};

/* Power loss. Open handles become invalid: close them first. Returns the
 * number of unsynced writes that were lost or torn. */
uint64_t memdisk_crash(struct memdisk *d, int mode);

enum memdisk_op {
	MEMDISK_OP_WRITE = 1 << 0, /* pwrite, truncate, allocate */
	MEMDISK_OP_SYNC = 1 << 1,  /* sync, sync_dir */
	MEMDISK_OP_READ = 1 << 2,
	MEMDISK_OP_META = 1 << 3,  /* open with create, rename, remove, mkdir */
};

/* After `after` more operations of the kinds in mask succeed, the next one
 * fails with err (KEEL_ERR_IO or KEEL_ERR_NOSPACE), and so does every later
 * one if sticky. A failed write writes nothing. */
void memdisk_fail(struct memdisk *d, unsigned mask, uint64_t after, int err,
		  bool sticky);
void memdisk_fail_clear(struct memdisk *d);

/* Flips one bit of a file's durable and current content (rot at rest).
 * Returns KEEL_ERR_NOT_FOUND or KEEL_ERR_INVAL when out of range. */
int memdisk_flip_bit(struct memdisk *d, const char *path, uint64_t bit);

/* Counters for tests. */
struct memdisk_stats {
	uint64_t writes;
	uint64_t syncs;
	uint64_t dir_syncs;
	uint64_t bytes_written;
	uint64_t files;
};
void memdisk_stats(const struct memdisk *d, struct memdisk_stats *st);

/* Size of a file's current content, or -1 if it does not exist. */
int64_t memdisk_file_size(const struct memdisk *d, const char *path);

#endif
