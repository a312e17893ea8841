/*
 * keelid.c -- the KEEL-ID file: which cluster and node a data directory
 * belongs to (docs/disk-format.md, 64 bytes). Checked before the WAL is
 * opened, so a server pointed at another node's directory (a copy-paste
 * slip in a deploy script) refuses to start instead of voting with that
 * node's log and term.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keel/server.h"

#define ID_MAGIC "KEELDIR\0"
#define ID_VERSION 1

void server_keel_id_encode(uint64_t cluster_id, raft_id node_id,
			   uint8_t out[SERVER_KEEL_ID_BYTES])
{
	memset(out, 0, SERVER_KEEL_ID_BYTES);
	memcpy(out, ID_MAGIC, 8);
	keel_put_u32(out + 8, ID_VERSION);
	keel_put_u64(out + 16, cluster_id);
	keel_put_u64(out + 24, node_id);
	keel_put_u32(out + 60, keel_crc32c(0, out, 60));
}

int server_keel_id_decode(const uint8_t *buf, size_t len,
			  uint64_t *cluster_id, raft_id *node_id)
{
	if (len < SERVER_KEEL_ID_BYTES)
		return KEEL_ERR_TRUNCATED;
	if (memcmp(buf, ID_MAGIC, 8))
		return KEEL_ERR_MAGIC;
	if (keel_get_u32(buf + 60) != keel_crc32c(0, buf, 60))
		return KEEL_ERR_CORRUPT;
	if (keel_get_u32(buf + 8) != ID_VERSION)
		return KEEL_ERR_VERSION;
	*cluster_id = keel_get_u64(buf + 16);
	*node_id = keel_get_u64(buf + 24);
	return 0;
}

static int fsync_path(const char *path, int flags)
{
	int fd = open(path, flags | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int rv = fsync(fd);
	close(fd);
	return rv;
}

static int write_new(const char *dir, uint64_t cluster_id, raft_id id,
		     char *err, size_t err_len)
{
	char tmp[SERVER_PATH_MAX + 32], dst[SERVER_PATH_MAX + 32];
	snprintf(tmp, sizeof(tmp), "%s/KEEL-ID.tmp", dir);
	snprintf(dst, sizeof(dst), "%s/KEEL-ID", dir);
	uint8_t buf[SERVER_KEEL_ID_BYTES];
	server_keel_id_encode(cluster_id, id, buf);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		goto fail;
	if (write(fd, buf, sizeof(buf)) != (ssize_t)sizeof(buf) || fsync(fd)) {
		close(fd);
		goto fail;
	}
	close(fd);
	if (rename(tmp, dst) || fsync_path(dir, O_RDONLY | O_DIRECTORY))
		goto fail;
	return 0;
fail:
	snprintf(err, err_len, "cannot write %s: %s", dst, strerror(errno));
	return KEEL_ERR_IO;
}

int server_keel_id_check(const char *dir, uint64_t cluster_id, raft_id id,
			 char *err, size_t err_len)
{
	struct stat st;
	if (stat(dir, &st) != 0) {
		if (errno != ENOENT || mkdir(dir, 0755) != 0) {
			snprintf(err, err_len, "cannot create data dir %s: %s", dir,
				 strerror(errno));
			return KEEL_ERR_IO;
		}
	} else if (!S_ISDIR(st.st_mode)) {
		snprintf(err, err_len, "data dir %s is not a directory", dir);
		return KEEL_ERR_IO;
	}
	char path[SERVER_PATH_MAX + 32];
	snprintf(path, sizeof(path), "%s/KEEL-ID", dir);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno != ENOENT) {
			snprintf(err, err_len, "cannot open %s: %s", path,
				 strerror(errno));
			return KEEL_ERR_IO;
		}
		/* A directory with a WAL but no KEEL-ID was not made by this
		 * server (or lost its id): do not adopt it silently. */
		char hs[SERVER_PATH_MAX + 32];
		snprintf(hs, sizeof(hs), "%s/hardstate", dir);
		if (access(hs, F_OK) == 0) {
			snprintf(err, err_len,
				 "data dir %s has a hardstate file but no KEEL-ID: "
				 "refusing to adopt it (it may belong to another "
				 "node)",
				 dir);
			return KEEL_ERR_CLUSTER;
		}
		return write_new(dir, cluster_id, id, err, err_len);
	}
	uint8_t buf[SERVER_KEEL_ID_BYTES];
	ssize_t n = read(fd, buf, sizeof(buf));
	close(fd);
	uint64_t have_cluster = 0;
	raft_id have_id = 0;
	int rv = n < 0 ? KEEL_ERR_IO
		       : server_keel_id_decode(buf, (size_t)n, &have_cluster,
					       &have_id);
	if (rv) {
		snprintf(err, err_len, "%s is damaged (%s): refusing to start",
			 path, keel_strerror(rv));
		return KEEL_ERR_CORRUPT;
	}
	if (have_cluster != cluster_id || have_id != id) {
		snprintf(err, err_len,
			 "data dir %s belongs to cluster %" PRIu64 " node %" PRIu64
			 ", not cluster %" PRIu64 " node %" PRIu64
			 ": refusing to start",
			 dir, have_cluster, have_id, cluster_id, id);
		return KEEL_ERR_CLUSTER;
	}
	return 0;
}
