/*
 * memdisk.c -- the in-memory env disk with honest power-loss semantics
 * (see memdisk.h). Files are inodes with a current image, a durable image
 * and the list of writes since the last sync; the namespace exists twice,
 * current and durable, and sync_dir copies one directory of it across.
 *
 * Costs: a sync replays the pending writes onto the durable image (cost
 * proportional to the bytes written, not the file size); a crash copies
 * each file once. Files are stored densely, so callers that preallocate
 * should use small sizes in simulation.
 */
#include <stdlib.h>
#include <string.h>

#include "keel/memdisk.h"

enum { W_WRITE = 0, W_TRUNCATE = 1 };

struct mwrite {
	int kind;
	uint64_t off; /* W_TRUNCATE: the new size */
	uint64_t len;
	uint8_t *data;
};

struct inode {
	bool used;
	uint8_t *cur;
	uint64_t cur_len, cur_cap;
	uint8_t *dur;
	uint64_t dur_len, dur_cap;
	struct mwrite *pending;
	uint32_t n_pending, cap_pending;
};

struct dentry {
	char name[KEEL_DISK_PATH_MAX + 1];
	int ino; /* -1 for a directory */
};

struct nspace {
	struct dentry *v;
	uint32_t n, cap;
};

struct keel_file {
	struct memdisk *d;
	int ino;
	uint64_t generation;
};

struct memdisk {
	const struct keel_alloc *a;
	struct keel_rand rand;
	struct inode *inodes;
	uint32_t n_inodes, cap_inodes;
	struct nspace cur, dur;
	uint64_t generation; /* bumped by each crash: stale handles fail */
	unsigned fail_mask;
	uint64_t fail_after;
	int fail_err;
	bool fail_sticky;
	bool failing;
	struct memdisk_stats stats;
};

/* ---- helpers -------------------------------------------------------------- */

static int grow(const struct keel_alloc *a, void **p, uint32_t *cap,
		uint32_t need, size_t elem)
{
	if (need <= *cap)
		return 0;
	uint32_t c = *cap ? *cap : 8;
	while (c < need)
		c *= 2;
	void *np = a->realloc(a->ctx, *p, (size_t)c * elem);
	if (!np)
		return KEEL_ERR_NOMEM;
	*p = np;
	*cap = c;
	return 0;
}

static int reserve_bytes(const struct keel_alloc *a, uint8_t **p,
			 uint64_t *cap, uint64_t need)
{
	if (need <= *cap)
		return 0;
	uint64_t c = *cap ? *cap : 256;
	while (c < need)
		c *= 2;
	uint8_t *np = a->realloc(a->ctx, *p, (size_t)c);
	if (!np)
		return KEEL_ERR_NOMEM;
	*p = np;
	*cap = c;
	return 0;
}

/* Writes into an image, zero-filling any gap. */
static int image_write(const struct keel_alloc *a, uint8_t **buf,
		       uint64_t *len, uint64_t *cap, uint64_t off,
		       const uint8_t *src, uint64_t n)
{
	int rv = reserve_bytes(a, buf, cap, off + n);
	if (rv)
		return rv;
	if (off > *len)
		memset(*buf + *len, 0, (size_t)(off - *len));
	if (n)
		memcpy(*buf + off, src, (size_t)n);
	if (off + n > *len)
		*len = off + n;
	return 0;
}

static int image_truncate(const struct keel_alloc *a, uint8_t **buf,
			  uint64_t *len, uint64_t *cap, uint64_t size)
{
	if (size > *len) {
		int rv = reserve_bytes(a, buf, cap, size);
		if (rv)
			return rv;
		memset(*buf + *len, 0, (size_t)(size - *len));
	}
	*len = size;
	return 0;
}

static bool path_ok(const char *p)
{
	size_t n = strlen(p);
	if (n == 0 || n > KEEL_DISK_PATH_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = p[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '.' || c == '_' ||
		      c == '-' || c == '/'))
			return false;
	}
	return true;
}

static struct dentry *ns_find(struct nspace *ns, const char *name)
{
	for (uint32_t i = 0; i < ns->n; i++)
		if (!strcmp(ns->v[i].name, name))
			return &ns->v[i];
	return NULL;
}

static int ns_put(const struct keel_alloc *a, struct nspace *ns,
		  const char *name, int ino)
{
	struct dentry *e = ns_find(ns, name);
	if (e) {
		e->ino = ino;
		return 0;
	}
	int rv = grow(a, (void **)&ns->v, &ns->cap, ns->n + 1, sizeof(*ns->v));
	if (rv)
		return rv;
	e = &ns->v[ns->n++];
	memset(e, 0, sizeof(*e));
	memcpy(e->name, name, strlen(name) + 1);
	e->ino = ino;
	return 0;
}

static void ns_del(struct nspace *ns, const char *name)
{
	struct dentry *e = ns_find(ns, name);
	if (e)
		*e = ns->v[--ns->n];
}

/* True when name sits directly in dir ("" = the root). */
static bool in_dir(const char *name, const char *dir)
{
	size_t dl = strlen(dir);
	if (dl == 0 || (dl == 1 && dir[0] == '.'))
		return strchr(name, '/') == NULL;
	if (strncmp(name, dir, dl) != 0 || name[dl] != '/')
		return false;
	return strchr(name + dl + 1, '/') == NULL;
}

/* Counts down the fault schedule; returns the error to inject or 0. */
static int fault(struct memdisk *d, unsigned kind)
{
	if (!(d->fail_mask & kind))
		return 0;
	if (d->failing)
		return d->fail_err;
	if (d->fail_after > 0) {
		d->fail_after--;
		return 0;
	}
	if (d->fail_sticky)
		d->failing = true;
	else
		d->fail_mask = 0;
	return d->fail_err;
}

static struct inode *file_inode(struct keel_file *f)
{
	if (f->generation != f->d->generation || f->ino < 0)
		return NULL;
	return &f->d->inodes[f->ino];
}

static void inode_free(const struct keel_alloc *a, struct inode *in)
{
	a->free(a->ctx, in->cur);
	a->free(a->ctx, in->dur);
	for (uint32_t i = 0; i < in->n_pending; i++)
		a->free(a->ctx, in->pending[i].data);
	a->free(a->ctx, in->pending);
	memset(in, 0, sizeof(*in));
}

static int inode_new(struct memdisk *d)
{
	for (uint32_t i = 0; i < d->n_inodes; i++)
		if (!d->inodes[i].used) {
			d->inodes[i].used = true;
			return (int)i;
		}
	if (grow(d->a, (void **)&d->inodes, &d->cap_inodes, d->n_inodes + 1,
		 sizeof(*d->inodes)))
		return -1;
	memset(&d->inodes[d->n_inodes], 0, sizeof(*d->inodes));
	d->inodes[d->n_inodes].used = true;
	return (int)d->n_inodes++;
}

static int pending_add(struct memdisk *d, struct inode *in, int kind,
		       uint64_t off, const void *buf, uint64_t len)
{
	int rv = grow(d->a, (void **)&in->pending, &in->cap_pending,
		      in->n_pending + 1, sizeof(*in->pending));
	if (rv)
		return rv;
	struct mwrite w = {.kind = kind, .off = off, .len = len};
	if (kind == W_WRITE && len) {
		w.data = d->a->malloc(d->a->ctx, (size_t)len);
		if (!w.data)
			return KEEL_ERR_NOMEM;
		memcpy(w.data, buf, (size_t)len);
	}
	in->pending[in->n_pending++] = w;
	return 0;
}

/* Replays the first n pending writes onto the durable image; with torn,
 * the n-th one (index n) lands only as a prefix of torn_len bytes. */
static void replay(struct memdisk *d, struct inode *in, uint32_t n,
		   bool torn, uint64_t torn_len)
{
	for (uint32_t i = 0; i < n + (torn ? 1 : 0) && i < in->n_pending;
	     i++) {
		struct mwrite *w = &in->pending[i];
		int rv;
		if (w->kind == W_TRUNCATE) {
			if (i == n)
				break; /* metadata changes are atomic */
			rv = image_truncate(d->a, &in->dur, &in->dur_len,
					    &in->dur_cap, w->off);
		} else {
			uint64_t len = i == n ? torn_len : w->len;
			rv = image_write(d->a, &in->dur, &in->dur_len,
					 &in->dur_cap, w->off, w->data, len);
		}
		KEEL_ASSERT(rv == 0); /* test infrastructure: OOM is fatal */
	}
	for (uint32_t i = 0; i < in->n_pending; i++)
		d->a->free(d->a->ctx, in->pending[i].data);
	in->n_pending = 0;
}

/* ---- the disk operations ------------------------------------------------ */

static int md_open(void *ctx, const char *path, int flags,
		   struct keel_file **out)
{
	struct memdisk *d = ctx;
	if (!path_ok(path))
		return KEEL_ERR_INVAL;
	struct dentry *e = ns_find(&d->cur, path);
	if (e && e->ino < 0)
		return KEEL_ERR_INVAL; /* a directory */
	if (e && (flags & KEEL_DISK_CREATE) && (flags & KEEL_DISK_EXCL))
		return KEEL_ERR_EXISTS;
	if (!e && !(flags & KEEL_DISK_CREATE))
		return KEEL_ERR_NOT_FOUND;
	int ino;
	if (!e) {
		int rv = fault(d, MEMDISK_OP_META);
		if (rv)
			return rv;
		ino = inode_new(d);
		if (ino < 0)
			return KEEL_ERR_NOMEM;
		if (ns_put(d->a, &d->cur, path, ino)) {
			d->inodes[ino].used = false;
			return KEEL_ERR_NOMEM;
		}
		d->stats.files++;
	} else {
		ino = e->ino;
	}
	struct keel_file *f = d->a->malloc(d->a->ctx, sizeof(*f));
	if (!f)
		return KEEL_ERR_NOMEM;
	f->d = d;
	f->ino = ino;
	f->generation = d->generation;
	*out = f;
	return 0;
}

static void md_close(void *ctx, struct keel_file *f)
{
	struct memdisk *d = ctx;
	d->a->free(d->a->ctx, f);
}

static int md_pread(void *ctx, struct keel_file *f, void *buf, size_t len,
		    uint64_t off, size_t *got)
{
	struct memdisk *d = ctx;
	struct inode *in = file_inode(f);
	*got = 0;
	if (!in)
		return KEEL_ERR_IO;
	int rv = fault(d, MEMDISK_OP_READ);
	if (rv)
		return rv;
	if (off >= in->cur_len)
		return 0;
	size_t n = (size_t)KEEL_MIN((uint64_t)len, in->cur_len - off);
	memcpy(buf, in->cur + off, n);
	*got = n;
	return 0;
}

static int md_pwrite(void *ctx, struct keel_file *f, const void *buf,
		     size_t len, uint64_t off)
{
	struct memdisk *d = ctx;
	struct inode *in = file_inode(f);
	if (!in)
		return KEEL_ERR_IO;
	int rv = fault(d, MEMDISK_OP_WRITE);
	if (rv)
		return rv;
	rv = pending_add(d, in, W_WRITE, off, buf, len);
	if (rv)
		return rv;
	rv = image_write(d->a, &in->cur, &in->cur_len, &in->cur_cap, off, buf,
			 len);
	if (rv)
		return rv;
	d->stats.writes++;
	d->stats.bytes_written += len;
	return 0;
}

static int md_sync(void *ctx, struct keel_file *f)
{
	struct memdisk *d = ctx;
	struct inode *in = file_inode(f);
	if (!in)
		return KEEL_ERR_IO;
	int rv = fault(d, MEMDISK_OP_SYNC);
	if (rv) {
		/* fsyncgate: a failed sync may have lost the dirty data. */
		return rv;
	}
	replay(d, in, in->n_pending, false, 0);
	d->stats.syncs++;
	return 0;
}

static int md_size(void *ctx, struct keel_file *f, uint64_t *size)
{
	(void)ctx;
	struct inode *in = file_inode(f);
	if (!in)
		return KEEL_ERR_IO;
	*size = in->cur_len;
	return 0;
}

static int md_truncate(void *ctx, struct keel_file *f, uint64_t size)
{
	struct memdisk *d = ctx;
	struct inode *in = file_inode(f);
	if (!in)
		return KEEL_ERR_IO;
	int rv = fault(d, MEMDISK_OP_WRITE);
	if (rv)
		return rv;
	rv = pending_add(d, in, W_TRUNCATE, size, NULL, 0);
	if (rv)
		return rv;
	return image_truncate(d->a, &in->cur, &in->cur_len, &in->cur_cap,
			      size);
}

static int md_allocate(void *ctx, struct keel_file *f, uint64_t size)
{
	struct inode *in = file_inode(f);
	if (!in)
		return KEEL_ERR_IO;
	if (size <= in->cur_len)
		return 0;
	return md_truncate(ctx, f, size);
}

static int md_rename(void *ctx, const char *from, const char *to)
{
	struct memdisk *d = ctx;
	if (!path_ok(from) || !path_ok(to))
		return KEEL_ERR_INVAL;
	struct dentry *e = ns_find(&d->cur, from);
	if (!e)
		return KEEL_ERR_NOT_FOUND;
	int rv = fault(d, MEMDISK_OP_META);
	if (rv)
		return rv;
	int ino = e->ino;
	ns_del(&d->cur, from);
	return ns_put(d->a, &d->cur, to, ino);
}

static int md_remove(void *ctx, const char *path)
{
	struct memdisk *d = ctx;
	if (!path_ok(path))
		return KEEL_ERR_INVAL;
	if (!ns_find(&d->cur, path))
		return KEEL_ERR_NOT_FOUND;
	int rv = fault(d, MEMDISK_OP_META);
	if (rv)
		return rv;
	ns_del(&d->cur, path);
	return 0;
}

static int md_mkdir(void *ctx, const char *dir)
{
	struct memdisk *d = ctx;
	if (!path_ok(dir))
		return KEEL_ERR_INVAL;
	if (ns_find(&d->cur, dir))
		return KEEL_ERR_EXISTS;
	int rv = fault(d, MEMDISK_OP_META);
	if (rv)
		return rv;
	/* Directories are durable at once: a simplification that only
	 * makes the model kinder, never the code under test riskier. */
	rv = ns_put(d->a, &d->cur, dir, -1);
	if (!rv)
		rv = ns_put(d->a, &d->dur, dir, -1);
	return rv;
}

static int md_sync_dir(void *ctx, const char *dir)
{
	struct memdisk *d = ctx;
	int rv = fault(d, MEMDISK_OP_SYNC);
	if (rv)
		return rv;
	/* The durable view of dir becomes the current one. */
	for (uint32_t i = 0; i < d->dur.n;) {
		if (d->dur.v[i].ino >= 0 && in_dir(d->dur.v[i].name, dir))
			d->dur.v[i] = d->dur.v[--d->dur.n];
		else
			i++;
	}
	/* Every file of dir was just removed from the durable view and the
	 * current names are unique, so append without searching (a search
	 * per name made each directory sync quadratic in the file count). */
	for (uint32_t i = 0; i < d->cur.n; i++) {
		const struct dentry *e = &d->cur.v[i];
		if (e->ino < 0 || !in_dir(e->name, dir))
			continue;
		rv = grow(d->a, (void **)&d->dur.v, &d->dur.cap, d->dur.n + 1,
			  sizeof(*d->dur.v));
		if (rv)
			return rv;
		d->dur.v[d->dur.n++] = *e;
	}
	d->stats.dir_syncs++;
	return 0;
}

static int md_list(void *ctx, const char *dir,
		   int (*cb)(void *arg, const char *name), void *arg)
{
	struct memdisk *d = ctx;
	if (!ns_find(&d->cur, dir))
		return KEEL_ERR_NOT_FOUND;
	size_t dl = strlen(dir);
	for (uint32_t i = 0; i < d->cur.n; i++) {
		if (!in_dir(d->cur.v[i].name, dir))
			continue;
		int rv = cb(arg, d->cur.v[i].name + dl + 1);
		if (rv)
			return rv;
	}
	return 0;
}

static const struct keel_disk_ops memdisk_ops = {
	.open = md_open,
	.close = md_close,
	.pread = md_pread,
	.pwrite = md_pwrite,
	.sync = md_sync,
	.size = md_size,
	.truncate = md_truncate,
	.allocate = md_allocate,
	.rename = md_rename,
	.remove = md_remove,
	.mkdir = md_mkdir,
	.sync_dir = md_sync_dir,
	.list = md_list,
};

/* ---- lifecycle, crash and faults ------------------------------------- */

struct memdisk *memdisk_create(const struct keel_alloc *alloc, uint64_t seed)
{
	const struct keel_alloc *a = alloc ? alloc : &keel_alloc_libc;
	struct memdisk *d = a->malloc(a->ctx, sizeof(*d));
	if (!d)
		return NULL;
	memset(d, 0, sizeof(*d));
	d->a = a;
	keel_rand_seed(&d->rand, seed);
	return d;
}

void memdisk_destroy(struct memdisk *d)
{
	if (!d)
		return;
	for (uint32_t i = 0; i < d->n_inodes; i++)
		if (d->inodes[i].used)
			inode_free(d->a, &d->inodes[i]);
	d->a->free(d->a->ctx, d->inodes);
	d->a->free(d->a->ctx, d->cur.v);
	d->a->free(d->a->ctx, d->dur.v);
	d->a->free(d->a->ctx, d);
}

struct keel_disk memdisk_disk(struct memdisk *d)
{
	return (struct keel_disk){.ctx = d, .ops = &memdisk_ops};
}

uint64_t memdisk_crash(struct memdisk *d, int mode)
{
	uint64_t lost = 0;
	for (uint32_t i = 0; i < d->n_inodes; i++) {
		struct inode *in = &d->inodes[i];
		if (!in->used)
			continue;
		uint32_t n = in->n_pending;
		if (mode == MEMDISK_KEEP_UNSYNCED) {
			replay(d, in, n, false, 0);
		} else if (mode == MEMDISK_TORN && n > 0) {
			uint32_t keep = (uint32_t)keel_rand_below(&d->rand, n + 1);
			bool torn = keep < n;
			uint64_t torn_len = 0;
			if (torn && in->pending[keep].len > 0)
				torn_len = keel_rand_below(
					&d->rand, in->pending[keep].len);
			lost += n - keep;
			replay(d, in, keep, torn, torn_len);
		} else {
			lost += n;
			replay(d, in, 0, false, 0);
		}
		/* The current image restarts from the durable one. */
		in->cur_len = 0;
		int rv = image_write(d->a, &in->cur, &in->cur_len, &in->cur_cap,
				     0, in->dur, in->dur_len);
		KEEL_ASSERT(rv == 0);
	}
	/* The namespace falls back to what sync_dir made durable. */
	struct nspace *from = mode == MEMDISK_KEEP_UNSYNCED ? &d->cur : &d->dur;
	struct nspace *to = mode == MEMDISK_KEEP_UNSYNCED ? &d->dur : &d->cur;
	to->n = 0;
	for (uint32_t i = 0; i < from->n; i++) {
		int rv = ns_put(d->a, to, from->v[i].name, from->v[i].ino);
		KEEL_ASSERT(rv == 0);
	}
	/* Free inodes no name refers to any more. */
	for (uint32_t i = 0; i < d->n_inodes; i++) {
		if (!d->inodes[i].used)
			continue;
		bool ref = false;
		for (uint32_t k = 0; k < d->cur.n && !ref; k++)
			ref = d->cur.v[k].ino == (int)i;
		if (!ref)
			inode_free(d->a, &d->inodes[i]);
	}
	d->generation++;
	d->failing = false;
	return lost;
}

void memdisk_fail(struct memdisk *d, unsigned mask, uint64_t after, int err,
		  bool sticky)
{
	d->fail_mask = mask;
	d->fail_after = after;
	d->fail_err = err;
	d->fail_sticky = sticky;
	d->failing = false;
}

void memdisk_fail_clear(struct memdisk *d)
{
	d->fail_mask = 0;
	d->failing = false;
}

int memdisk_flip_bit(struct memdisk *d, const char *path, uint64_t bit)
{
	struct dentry *e = ns_find(&d->cur, path);
	if (!e || e->ino < 0)
		return KEEL_ERR_NOT_FOUND;
	struct inode *in = &d->inodes[e->ino];
	if (bit / 8 >= in->cur_len)
		return KEEL_ERR_INVAL;
	in->cur[bit / 8] ^= (uint8_t)(1u << (bit % 8));
	if (bit / 8 < in->dur_len)
		in->dur[bit / 8] ^= (uint8_t)(1u << (bit % 8));
	return 0;
}

void memdisk_stats(const struct memdisk *d, struct memdisk_stats *st)
{
	*st = d->stats;
}

int64_t memdisk_file_size(const struct memdisk *d, const char *path)
{
	for (uint32_t i = 0; i < d->cur.n; i++)
		if (!strcmp(d->cur.v[i].name, path) && d->cur.v[i].ino >= 0)
			return (int64_t)d->inodes[d->cur.v[i].ino].cur_len;
	return -1;
}
