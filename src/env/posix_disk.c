/*
 * posix_disk.c -- the env disk (disk.h) over a real directory: open,
 * pread/pwrite, fdatasync, fallocate, rename, unlink, directory fsync.
 *
 * Called only from the disk thread (or from start-up code before the
 * loop runs), never from the event loop: every call may block. Errors map
 * to KEEL_ERR_*: ENOSPC/EDQUOT -> NOSPACE, ENOENT -> NOT_FOUND, EEXIST ->
 * EXISTS, everything else -> IO (with errno kept for the message).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keel/posix_disk.h"

struct keel_file {
	int fd;
};

struct posix_disk {
	int dirfd;
	int last_errno;
	bool no_fallocate; /* the file system refused it once: write zeros */
};

static int map_errno(struct posix_disk *d, int e)
{
	d->last_errno = e;
	switch (e) {
	case ENOSPC:
#ifdef EDQUOT
	case EDQUOT:
#endif
		return KEEL_ERR_NOSPACE;
	case ENOENT:
		return KEEL_ERR_NOT_FOUND;
	case EEXIST:
		return KEEL_ERR_EXISTS;
	case ENOMEM:
		return KEEL_ERR_NOMEM;
	case EINVAL:
	case ENAMETOOLONG:
		return KEEL_ERR_INVAL;
	default:
		return KEEL_ERR_IO;
	}
}

static int pd_open(void *ctx, const char *path, int flags,
		   struct keel_file **out)
{
	struct posix_disk *d = ctx;
	int of = O_RDWR | O_CLOEXEC;
	if (flags & KEEL_DISK_CREATE)
		of |= O_CREAT;
	if (flags & KEEL_DISK_EXCL)
		of |= O_EXCL;
	int fd = openat(d->dirfd, path, of, 0644);
	if (fd < 0)
		return map_errno(d, errno);
	struct keel_file *f = malloc(sizeof(*f));
	if (!f) {
		close(fd);
		return KEEL_ERR_NOMEM;
	}
	f->fd = fd;
	*out = f;
	return 0;
}

static void pd_close(void *ctx, struct keel_file *f)
{
	(void)ctx;
	close(f->fd);
	free(f);
}

static int pd_pread(void *ctx, struct keel_file *f, void *buf, size_t len,
		    uint64_t off, size_t *got)
{
	struct posix_disk *d = ctx;
	size_t done = 0;
	while (done < len) {
		ssize_t n = pread(f->fd, (char *)buf + done, len - done,
				  (off_t)(off + done));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			*got = done;
			return map_errno(d, errno);
		}
		if (n == 0)
			break;
		done += (size_t)n;
	}
	*got = done;
	return 0;
}

static int pd_pwrite(void *ctx, struct keel_file *f, const void *buf,
		     size_t len, uint64_t off)
{
	struct posix_disk *d = ctx;
	size_t done = 0;
	while (done < len) {
		ssize_t n = pwrite(f->fd, (const char *)buf + done, len - done,
				   (off_t)(off + done));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return map_errno(d, errno);
		}
		done += (size_t)n;
	}
	return 0;
}

static int pd_sync(void *ctx, struct keel_file *f)
{
	struct posix_disk *d = ctx;
	/* No EINTR retry: a failed fdatasync is final (fsyncgate). */
	if (fdatasync(f->fd) != 0)
		return map_errno(d, errno);
	return 0;
}

static int pd_size(void *ctx, struct keel_file *f, uint64_t *size)
{
	struct posix_disk *d = ctx;
	struct stat st;
	if (fstat(f->fd, &st) != 0)
		return map_errno(d, errno);
	*size = (uint64_t)st.st_size;
	return 0;
}

static int pd_truncate(void *ctx, struct keel_file *f, uint64_t size)
{
	struct posix_disk *d = ctx;
	if (ftruncate(f->fd, (off_t)size) != 0)
		return map_errno(d, errno);
	return 0;
}

static int pd_allocate(void *ctx, struct keel_file *f, uint64_t size)
{
	struct posix_disk *d = ctx;
	if (!d->no_fallocate) {
		int rv = posix_fallocate(f->fd, 0, (off_t)size);
		if (rv == 0)
			return 0;
		if (rv != EOPNOTSUPP && rv != EINVAL)
			return map_errno(d, rv);
		d->no_fallocate = true;
	}
	/* No fallocate here (tmpfs on old kernels, some overlays): grow the
	 * file; the tail reads as zeros either way. */
	if (ftruncate(f->fd, (off_t)size) != 0)
		return map_errno(d, errno);
	return 0;
}

static int pd_rename(void *ctx, const char *from, const char *to)
{
	struct posix_disk *d = ctx;
	if (renameat(d->dirfd, from, d->dirfd, to) != 0)
		return map_errno(d, errno);
	return 0;
}

static int pd_remove(void *ctx, const char *path)
{
	struct posix_disk *d = ctx;
	if (unlinkat(d->dirfd, path, 0) != 0)
		return map_errno(d, errno);
	return 0;
}

static int pd_mkdir(void *ctx, const char *dir)
{
	struct posix_disk *d = ctx;
	if (mkdirat(d->dirfd, dir, 0755) != 0)
		return map_errno(d, errno);
	return 0;
}

static int pd_sync_dir(void *ctx, const char *dir)
{
	struct posix_disk *d = ctx;
	int fd = openat(d->dirfd, dir[0] ? dir : ".",
			O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return map_errno(d, errno);
	int rv = 0;
	if (fsync(fd) != 0)
		rv = map_errno(d, errno);
	close(fd);
	return rv;
}

static int pd_list(void *ctx, const char *dir,
		   int (*cb)(void *arg, const char *name), void *arg)
{
	struct posix_disk *d = ctx;
	int fd = openat(d->dirfd, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return map_errno(d, errno);
	DIR *dp = fdopendir(fd);
	if (!dp) {
		int rv = map_errno(d, errno);
		close(fd);
		return rv;
	}
	int rv = 0;
	struct dirent *de;
	while (!rv && (de = readdir(dp)) != NULL) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		rv = cb(arg, de->d_name);
	}
	closedir(dp);
	return rv;
}

static const struct keel_disk_ops posix_disk_ops = {
	.open = pd_open,
	.close = pd_close,
	.pread = pd_pread,
	.pwrite = pd_pwrite,
	.sync = pd_sync,
	.size = pd_size,
	.truncate = pd_truncate,
	.allocate = pd_allocate,
	.rename = pd_rename,
	.remove = pd_remove,
	.mkdir = pd_mkdir,
	.sync_dir = pd_sync_dir,
	.list = pd_list,
};

int posix_disk_open(const char *dir, struct posix_disk **out, char *err,
		    size_t err_len)
{
	if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
		snprintf(err, err_len, "cannot create data dir %s: %s", dir,
			 strerror(errno));
		return KEEL_ERR_IO;
	}
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(err, err_len, "cannot open data dir %s: %s", dir,
			 strerror(errno));
		return KEEL_ERR_IO;
	}
	struct posix_disk *d = calloc(1, sizeof(*d));
	if (!d) {
		close(fd);
		return KEEL_ERR_NOMEM;
	}
	d->dirfd = fd;
	*out = d;
	return 0;
}

void posix_disk_close(struct posix_disk *d)
{
	if (!d)
		return;
	close(d->dirfd);
	free(d);
}

struct keel_disk posix_disk_get(struct posix_disk *d)
{
	return (struct keel_disk){.ctx = d, .ops = &posix_disk_ops};
}

int posix_disk_errno(const struct posix_disk *d)
{
	return d->last_errno;
}
