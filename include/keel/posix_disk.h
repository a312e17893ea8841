/*
 * posix_disk.h -- the env disk over a real directory (src/env/posix_disk.c).
 * Every operation may block: use it from the disk thread only.
 */
#ifndef KEEL_POSIX_DISK_H
#define KEEL_POSIX_DISK_H

#include "keel/disk.h"

struct posix_disk;

/* Opens (creating if missing) the data directory. */
int posix_disk_open(const char *dir, struct posix_disk **out, char *err,
		    size_t err_len);
void posix_disk_close(struct posix_disk *d);
struct keel_disk posix_disk_get(struct posix_disk *d);
/* errno of the last failed call, for messages. */
int posix_disk_errno(const struct posix_disk *d);

#endif
