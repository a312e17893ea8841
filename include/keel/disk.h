/*
 * disk.h -- the env's disk: synchronous file operations on paths relative
 * to one data directory, as a {ctx, vtable} pair.
 *
 * The WAL and the snapshot store reach the disk only through this, so the
 * same storage code runs on the posix env (a real directory; called from
 * the disk thread, never from the event loop) and on the simulator's
 * in-memory disk (src/env/memdisk.c), which can lose or tear every write
 * that was not synced, fail any operation with EIO or ENOSPC, and flip bits
 * at rest.
 *
 * Every function returns 0 or a KEEL_ERR_* code: KEEL_ERR_NOT_FOUND,
 * KEEL_ERR_EXISTS, KEEL_ERR_IO, KEEL_ERR_NOSPACE, KEEL_ERR_NOMEM,
 * KEEL_ERR_INVAL. Paths are relative ("wal/0000000000000001.wal"), made of
 * [A-Za-z0-9._-] and '/', at most KEEL_DISK_PATH_MAX bytes.
 */
#ifndef KEEL_DISK_H
#define KEEL_DISK_H

#include "keel/common.h"

#define KEEL_DISK_PATH_MAX 255

enum keel_disk_open_flags {
	KEEL_DISK_CREATE = 1 << 0, /* create if missing */
	KEEL_DISK_EXCL = 1 << 1,   /* with CREATE: fail with EXISTS if present */
};

struct keel_file; /* opaque, owned by the disk implementation */

struct keel_disk_ops {
	int (*open)(void *ctx, const char *path, int flags,
		    struct keel_file **out);
	void (*close)(void *ctx, struct keel_file *f);
	/* Reads up to len bytes at off; *got < len only at end of file. */
	int (*pread)(void *ctx, struct keel_file *f, void *buf, size_t len,
		     uint64_t off, size_t *got);
	int (*pwrite)(void *ctx, struct keel_file *f, const void *buf,
		      size_t len, uint64_t off);
	/* fdatasync: every write to f before it is durable once it returns
	 * 0. A failure is final for the caller (never retried). */
	int (*sync)(void *ctx, struct keel_file *f);
	int (*size)(void *ctx, struct keel_file *f, uint64_t *size);
	int (*truncate)(void *ctx, struct keel_file *f, uint64_t size);
	/* Reserves [0, size) so later writes in it need no metadata sync
	 * (fallocate); the new bytes read as zero. */
	int (*allocate)(void *ctx, struct keel_file *f, uint64_t size);
	int (*rename)(void *ctx, const char *from, const char *to);
	int (*remove)(void *ctx, const char *path);
	int (*mkdir)(void *ctx, const char *dir);
	/* Makes creations, renames and removals in dir durable. */
	int (*sync_dir)(void *ctx, const char *dir);
	/* Calls cb for every entry name in dir (order unspecified); a non-zero
	 * return from cb stops the listing and is returned. */
	int (*list)(void *ctx, const char *dir,
		    int (*cb)(void *arg, const char *name), void *arg);
};

struct keel_disk {
	void *ctx;
	const struct keel_disk_ops *ops;
};

#endif /* KEEL_DISK_H */
