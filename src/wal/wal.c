/*
 * wal.c -- segmented write-ahead log, hard state and snapshots.
 *
 * Summary of docs/disk-format.md (the byte-by-byte reference):
 *   hardstate           two 64-byte slots {"KHS1", seq, term, vote, commit,
 *                       crc}; writes alternate; the valid slot with the
 *                       highest seq wins.
 *   wal/<seq>.wal       preallocated segments: a 64-byte header {"KEELWAL",
 *                       version, seq, cluster, first index, crc}, then
 *                       8-aligned records {crc, len, type, entry type,
 *                       term, index, payload}; the tail is zeros.
 *   snap/<i>-<t>.snap   {"KEELSNP", version, cluster, index, term, len,
 *                       payload crc, header crc} + payload. Streamed into
 *                       <name>.tmp (the WAL keeps its own CRC), header
 *                       last, fdatasync, rename, fsync snap/. Two kept:
 *                       a LOCAL finish removes segments only up to the
 *                       previous snapshot; a RECEIVED one writes a reset
 *                       record and removes everything older.
 * Overwriting a conflicting suffix is an append of a lower index: replay
 * truncates like the Raft log does, so synced bytes are never rewritten.
 * A reset record (after InstallSnapshot) empties the log above a snapshot.
 * Recovery: zeros end the data; a bad record followed only by zeros is a
 * torn tail (cut, warn); a bad record followed by anything else (or with
 * a valid record anywhere behind it: a flipped length), a gap,
 * or a term going backwards is corruption (refuse, naming file and byte).
 * The newest snapshot that verifies (CRC streamed in <= 1 MiB chunks)
 * wins; a damaged newer one is skipped only if the log covers it.
 * Any write or sync error poisons the WAL; a sync is never retried.
 */
#include <assert.h>
#include <stdio.h> /* snprintf for messages only; no stream I/O */
#include <string.h>

#include "keel/wal.h"

#define SEG_MAGIC "KEELWAL\0"
#define SNAP_MAGIC "KEELSNP\0"
#define HS_MAGIC "KHS1"
#define HS_SLOT 64
#define SNAP_HEADER 64
#define REC_ENTRY 1
#define REC_RESET 2
#define MAX_SEGMENTS 100000

static_assert(WAL_SEGMENT_HEADER == 64, "segment header is 64 bytes");
static_assert(WAL_RECORD_HEADER == 32, "record header is 32 bytes");

struct segment {
	uint64_t seq;
	uint64_t max_index; /* highest index recorded in it (entry or reset) */
	bool has_records;
};

/* A durable snapshot the WAL keeps: its rename and directory fsync
 * completed, or recovery verified it. index 0 = none. */
struct snap_kept {
	uint64_t index, term, len;
	uint32_t crc;
};

/* A snapshot being streamed into its temp file. handle 0 = free slot. */
struct snap_open {
	uint64_t handle;
	uint64_t index, term;
	uint64_t total, written; /* Invariant: written <= total */
	uint32_t crc;            /* CRC32C of the bytes written so far */
	int kind;
	struct keel_file *f;
};

/* The first damaged snapshot recovery skipped (for the refusal message). */
struct snap_damage {
	uint64_t index; /* 0 = none */
	char what[200];
};

struct wal {
	struct wal_config cfg;
	const struct keel_alloc *a;
	struct keel_disk disk;
#ifdef KEEL_MUTANTS
	int mutant;
#endif

	struct segment *segs; /* ascending seq; the last is active */
	uint32_t n_segs, cap_segs;
	struct keel_file *active;
	uint64_t active_off; /* end of data, including staged bytes */
	uint8_t *buf;        /* staged records for the active segment */
	size_t buf_len, buf_cap;
	uint64_t buf_off; /* file offset where buf starts */
	bool dir_dirty;   /* a segment was created since the last sync */
	bool seg_dirty;   /* bytes written to the active segment, unsynced */

	uint64_t last_index, last_term;
	/* Invariant: snap_index == kept[0].index (the newest snapshot). */
	uint64_t snap_index, snap_term;
	/* [0] the newest durable snapshot, [1] the one before it (two kept,
	 * docs/snapshots.md §1.4); after a restart only [0] is known. */
	struct snap_kept kept[2];
	struct snap_open open[2]; /* by kind - 1 */
	uint64_t next_handle;

	struct keel_file *hs_file;
	struct raft_hard_state hs_staged, hs_written, hs_synced;
	uint64_t hs_seq;

	int poison;
	char errmsg[256];
	struct wal_stats stats;

	/* Recovery output, freed by wal_recovered_free. */
	struct raft_entry *rec_entries;
	uint64_t rec_n, rec_cap;
};

/* ---- small helpers ------------------------------------------------------ */

static uint64_t pad8(uint64_t n)
{
	return (n + 7) & ~(uint64_t)7;
}

static void seg_path(char *out, size_t n, uint64_t seq)
{
	snprintf(out, n, "wal/%016llx.wal", (unsigned long long)seq);
}

static void snap_path(char *out, size_t n, uint64_t index, uint64_t term,
		      bool tmp)
{
	snprintf(out, n, "snap/%016llx-%016llx.snap%s",
		 (unsigned long long)index, (unsigned long long)term,
		 tmp ? ".tmp" : "");
}

static int fail(struct wal *w, int err, const char *what, const char *path)
{
	if (!w->poison) {
		w->poison = err;
		snprintf(w->errmsg, sizeof(w->errmsg), "%s %s: %s", what, path,
			 keel_strerror(err));
	}
	return w->poison;
}

static bool all_zero(const uint8_t *p, uint64_t n)
{
	for (uint64_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

static int read_file(struct wal *w, const char *path, uint8_t **out,
		     uint64_t *len, uint64_t cap)
{
	struct keel_file *f;
	int rv = w->disk.ops->open(w->disk.ctx, path, 0, &f);
	if (rv)
		return rv;
	uint64_t size;
	rv = w->disk.ops->size(w->disk.ctx, f, &size);
	if (!rv && size > cap)
		rv = KEEL_ERR_TOO_BIG;
	uint8_t *buf = NULL;
	if (!rv) {
		buf = w->a->malloc(w->a->ctx, size ? (size_t)size : 1);
		if (!buf)
			rv = KEEL_ERR_NOMEM;
	}
	size_t got = 0;
	if (!rv && size)
		rv = w->disk.ops->pread(w->disk.ctx, f, buf, (size_t)size, 0,
					&got);
	if (!rv && got != size)
		rv = KEEL_ERR_IO;
	w->disk.ops->close(w->disk.ctx, f);
	if (rv) {
		w->a->free(w->a->ctx, buf);
		return rv;
	}
	*out = buf;
	*len = size;
	return 0;
}

static int grow_segs(struct wal *w)
{
	if (w->n_segs < w->cap_segs)
		return 0;
	uint32_t c = w->cap_segs ? w->cap_segs * 2 : 8;
	struct segment *s = w->a->realloc(w->a->ctx, w->segs, c * sizeof(*s));
	if (!s)
		return KEEL_ERR_NOMEM;
	w->segs = s;
	w->cap_segs = c;
	return 0;
}

/* ---- hard state --------------------------------------------------------- */

static void hs_encode(uint8_t *p, uint64_t seq, const struct raft_hard_state *hs)
{
	memset(p, 0, HS_SLOT);
	memcpy(p, HS_MAGIC, 4);
	keel_put_u64(p + 8, seq);
	keel_put_u64(p + 16, hs->term);
	keel_put_u64(p + 24, hs->vote);
	keel_put_u64(p + 32, hs->commit);
	keel_put_u32(p + 60, keel_crc32c(0, p, 60));
}

static bool hs_decode(const uint8_t *p, uint64_t *seq,
		      struct raft_hard_state *hs)
{
	if (memcmp(p, HS_MAGIC, 4) != 0)
		return false;
	if (keel_get_u32(p + 60) != keel_crc32c(0, p, 60))
		return false;
	*seq = keel_get_u64(p + 8);
	hs->term = keel_get_u64(p + 16);
	hs->vote = keel_get_u64(p + 24);
	hs->commit = keel_get_u64(p + 32);
	return true;
}

static int hs_load(struct wal *w, struct raft_hard_state *hs, char *err,
		   size_t err_len)
{
	memset(hs, 0, sizeof(*hs));
	w->hs_seq = 0;
	uint8_t *buf;
	uint64_t len;
	int rv = read_file(w, "hardstate", &buf, &len, 1u << 20);
	if (rv == KEEL_ERR_NOT_FOUND)
		return 0;
	if (rv) {
		snprintf(err, err_len, "reading hardstate: %s", keel_strerror(rv));
		return rv;
	}
	bool found = false;
	for (int slot = 0; slot < 2; slot++) {
		if (len < (uint64_t)(slot + 1) * HS_SLOT)
			break;
		uint64_t seq;
		struct raft_hard_state s;
		if (hs_decode(buf + slot * HS_SLOT, &seq, &s) &&
		    (!found || seq > w->hs_seq)) {
			found = true;
			w->hs_seq = seq;
			*hs = s;
		}
	}
	bool zero = all_zero(buf, len);
	w->a->free(w->a->ctx, buf);
	if (!found && !zero) {
		/* Both slots damaged: the vote may be lost, and voting
		 * twice in one term is worse than not starting. */
		snprintf(err, err_len,
			 "corrupt hardstate: no valid slot in %llu bytes",
			 (unsigned long long)len);
		return KEEL_ERR_CORRUPT;
	}
	return 0;
}

static int hs_write(struct wal *w, bool force)
{
	if (!w->hs_file) {
		int rv = w->disk.ops->open(w->disk.ctx, "hardstate",
					   KEEL_DISK_CREATE, &w->hs_file);
		if (rv)
			return fail(w, rv, "open", "hardstate");
		uint64_t size = 0;
		rv = w->disk.ops->size(w->disk.ctx, w->hs_file, &size);
		if (rv)
			return fail(w, rv, "size of", "hardstate");
		if (size == 0 && w->hs_seq == 0) {
			/* A new file starts with a valid empty slot (seq 0),
			 * synced before its name: otherwise a torn first
			 * write (slot 1 damaged, slot 0 all zeros) would look
			 * like two damaged slots and the node could never
			 * start again after an innocent power loss. */
			uint8_t init[HS_SLOT];
			struct raft_hard_state zero = {0};
			hs_encode(init, 0, &zero);
			rv = w->disk.ops->pwrite(w->disk.ctx, w->hs_file, init,
						 HS_SLOT, 0);
			if (!rv)
				rv = w->disk.ops->sync(w->disk.ctx, w->hs_file);
			if (rv)
				return fail(w, rv, "initialise", "hardstate");
		}
		/* A new file's name must be durable too. */
		rv = w->disk.ops->sync_dir(w->disk.ctx, ".");
		if (rv)
			return fail(w, rv, "sync dir for", "hardstate");
	}
	uint8_t slot[HS_SLOT];
	uint64_t seq = w->hs_seq + 1;
	hs_encode(slot, seq, &w->hs_staged);
	int rv = w->disk.ops->pwrite(w->disk.ctx, w->hs_file, slot, HS_SLOT,
				     (seq % 2) * HS_SLOT);
	if (rv)
		return fail(w, rv, "write", "hardstate");
	w->hs_seq = seq;
	w->hs_written = w->hs_staged;
	if (force) {
		rv = w->disk.ops->sync(w->disk.ctx, w->hs_file);
		if (rv)
			return fail(w, rv, "fdatasync", "hardstate");
		w->stats.syncs++;
		w->hs_synced = w->hs_staged;
	}
	return 0;
}

/* ---- segments: writing ---------------------------------------------------- */

static int flush_buf(struct wal *w)
{
	if (w->buf_len == 0)
		return 0;
	int rv = w->disk.ops->pwrite(w->disk.ctx, w->active, w->buf,
				     w->buf_len, w->buf_off);
	if (rv) {
		char path[64]; /* named only on failure: this is the hot path */
		seg_path(path, sizeof(path), w->segs[w->n_segs - 1].seq);
		return fail(w, rv, "write", path);
	}
	w->buf_off += w->buf_len;
	w->buf_len = 0;
	w->seg_dirty = true;
	return 0;
}

static int sync_active(struct wal *w)
{
	int rv = w->disk.ops->sync(w->disk.ctx, w->active);
	if (rv) {
		char path[64];
		seg_path(path, sizeof(path), w->segs[w->n_segs - 1].seq);
		return fail(w, rv, "fdatasync", path);
	}
	w->stats.syncs++;
	w->seg_dirty = false;
	return 0;
}

/* Opens segment seq as the new active one: create, preallocate, header.
 * The previous active segment is flushed and synced first, so a sync of
 * the new one never leaves a hole behind it. */
static int new_segment(struct wal *w, uint64_t seq)
{
	int rv;
	if (w->active) {
		if ((rv = flush_buf(w)) || (rv = sync_active(w)))
			return rv;
		w->disk.ops->close(w->disk.ctx, w->active);
		w->active = NULL;
	}
	if ((rv = grow_segs(w)))
		return fail(w, rv, "grow", "segment table");
	char path[64];
	seg_path(path, sizeof(path), seq);
	struct keel_file *f;
	rv = w->disk.ops->open(w->disk.ctx, path,
			       KEEL_DISK_CREATE | KEEL_DISK_EXCL, &f);
	if (rv)
		return fail(w, rv, "create", path);
	rv = w->disk.ops->allocate(w->disk.ctx, f, w->cfg.segment_bytes);
	if (rv) {
		w->disk.ops->close(w->disk.ctx, f);
		return fail(w, rv, "preallocate", path);
	}
	uint8_t h[WAL_SEGMENT_HEADER] = {0};
	memcpy(h, SEG_MAGIC, 8);
	keel_put_u32(h + 8, WAL_VERSION);
	keel_put_u64(h + 16, seq);
	keel_put_u64(h + 24, w->cfg.cluster_id);
	keel_put_u64(h + 32, w->last_index + 1);
	keel_put_u32(h + 60, keel_crc32c(0, h, 60));
	rv = w->disk.ops->pwrite(w->disk.ctx, f, h, sizeof(h), 0);
	if (rv) {
		w->disk.ops->close(w->disk.ctx, f);
		return fail(w, rv, "write header of", path);
	}
	w->segs[w->n_segs++] = (struct segment){.seq = seq};
	w->active = f;
	w->active_off = WAL_SEGMENT_HEADER;
	w->buf_off = WAL_SEGMENT_HEADER;
	w->buf_len = 0;
	w->dir_dirty = true;
	w->seg_dirty = true; /* the header */
	w->stats.segments = w->n_segs;
	return 0;
}

static int stage_record(struct wal *w, uint8_t rtype, uint8_t etype,
			uint64_t term, uint64_t index, const uint8_t *data,
			uint32_t len)
{
	uint64_t size = WAL_RECORD_HEADER + pad8(len);
	if (w->active_off + size > w->cfg.segment_bytes) {
		int rv = new_segment(w, w->segs[w->n_segs - 1].seq + 1);
		if (rv)
			return rv;
	}
	if (w->buf_len + size > w->buf_cap) {
		size_t c = w->buf_cap ? w->buf_cap : 4096;
		while (c < w->buf_len + size)
			c *= 2;
		uint8_t *b = w->a->realloc(w->a->ctx, w->buf, c);
		if (!b)
			return KEEL_ERR_NOMEM;
		w->buf = b;
		w->buf_cap = c;
	}
	uint8_t *p = w->buf + w->buf_len;
	memset(p, 0, (size_t)size);
	keel_put_u32(p + 4, len);
	p[8] = rtype;
	p[9] = etype;
	keel_put_u64(p + 16, term);
	keel_put_u64(p + 24, index);
	if (len)
		memcpy(p + WAL_RECORD_HEADER, data, len);
	keel_put_u32(p, keel_crc32c(0, p + 4, WAL_RECORD_HEADER - 4 + len));
	w->buf_len += (size_t)size;
	w->active_off += size;
	struct segment *s = &w->segs[w->n_segs - 1];
	s->has_records = true;
	if (index > s->max_index)
		s->max_index = index;
	w->stats.appended_bytes += size;
	return 0;
}

int wal_append(struct wal *w, const struct raft_entry *ents, uint32_t n)
{
	if (w->poison)
		return w->poison;
	if (n == 0)
		return 0;
	if (ents[0].index <= w->snap_index || ents[0].index > w->last_index + 1)
		return KEEL_ERR_INVAL;
	for (uint32_t i = 0; i < n; i++) {
		if (i && (ents[i].index != ents[i - 1].index + 1 ||
			  ents[i].term < ents[i - 1].term))
			return KEEL_ERR_INVAL;
		if (ents[i].len > w->cfg.max_record_bytes)
			return KEEL_ERR_TOO_BIG;
		if (ents[i].len && !ents[i].data)
			return KEEL_ERR_INVAL;
	}
	for (uint32_t i = 0; i < n; i++) {
		int rv = stage_record(w, REC_ENTRY, ents[i].type, ents[i].term,
				      ents[i].index, ents[i].data, ents[i].len);
		if (rv)
			return rv;
	}
	w->last_index = ents[n - 1].index;
	w->last_term = ents[n - 1].term;
	return 0;
}

int wal_save_hard_state(struct wal *w, const struct raft_hard_state *hs)
{
	if (w->poison)
		return w->poison;
	w->hs_staged = *hs;
	return 0;
}

int wal_sync(struct wal *w)
{
	if (w->poison)
		return w->poison;
	int rv;
	/* seg_dirty: wal_flush may have written bytes that are not synced. */
	if (w->buf_len || w->seg_dirty) {
		if ((rv = flush_buf(w)) || (rv = sync_active(w)))
			return rv;
	}
	if (w->dir_dirty) {
		rv = w->disk.ops->sync_dir(w->disk.ctx, "wal");
		if (rv)
			return fail(w, rv, "sync dir", "wal");
		w->dir_dirty = false;
	}
	struct raft_hard_state *s = &w->hs_staged;
	bool must = s->term != w->hs_synced.term || s->vote != w->hs_synced.vote;
	bool changed = must || s->commit != w->hs_written.commit;
	if (changed && (rv = hs_write(w, must)))
		return rv;
	return 0;
}

int wal_flush(struct wal *w)
{
	if (w->poison)
		return w->poison;
	return flush_buf(w);
}

/* ---- snapshots ------------------------------------------------------------ */

struct name_list {
	const struct keel_alloc *a;
	char (*v)[64];
	uint32_t n, cap;
};

static int collect_name(void *arg, const char *name)
{
	struct name_list *l = arg;
	if (strlen(name) >= 64)
		return 0; /* not one of ours */
	if (l->n == l->cap) {
		uint32_t c = l->cap ? l->cap * 2 : 16;
		void *p = l->a->realloc(l->a->ctx, l->v, c * sizeof(*l->v));
		if (!p)
			return KEEL_ERR_NOMEM;
		l->v = p;
		l->cap = c;
	}
	memcpy(l->v[l->n++], name, strlen(name) + 1);
	return 0;
}

static bool parse_hex(const char *s, size_t n, uint64_t *out)
{
	uint64_t v = 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		int d;
		if (c >= '0' && c <= '9')
			d = c - '0';
		else if (c >= 'a' && c <= 'f')
			d = c - 'a' + 10;
		else
			return false;
		v = (v << 4) | (uint64_t)d;
	}
	*out = v;
	return true;
}

/* Parses "<16 hex>-<16 hex>.snap"; false for anything else. */
static bool parse_snap_name(const char *name, uint64_t *index, uint64_t *term)
{
	return strlen(name) == 38 && name[16] == '-' &&
	       !strcmp(name + 33, ".snap") && parse_hex(name, 16, index) &&
	       parse_hex(name + 17, 16, term);
}

/* Is (index) one of the durable snapshots the WAL keeps? Their rename and
 * directory fsync completed (or recovery verified them). */
static const struct snap_kept *kept_find(const struct wal *w, uint64_t index,
					 uint64_t term)
{
	for (int i = 0; i < 2; i++)
		if (w->kept[i].index && w->kept[i].index == index &&
		    w->kept[i].term == term)
			return &w->kept[i];
	return NULL;
}

static bool kept_index(const struct wal *w, uint64_t index)
{
	return index && (w->kept[0].index == index || w->kept[1].index == index);
}

/* Removes the oldest segments, keeping the active one, while every record
 * in them is <= upto (the index of a kept durable snapshot) or superseded
 * by a durable reset record in segment reset_seq (0 = none). Only a prefix
 * can go: a later segment may overwrite part of an earlier one. */
static int remove_segments(struct wal *w, uint64_t upto, uint64_t reset_seq)
{
	uint32_t drop = 0;
	while (drop + 1 < w->n_segs) {
		const struct segment *s = &w->segs[drop];
		bool covered = !s->has_records ||
			       (upto && s->max_index <= upto);
		bool superseded = reset_seq && s->seq < reset_seq;
		if (!covered && !superseded)
			break;
		/* The disk rule (docs/snapshots.md §2.2): never remove a
		 * record that no durable snapshot or reset covers. */
		if (!superseded && s->has_records)
			KEEL_ASSERT(kept_index(w, upto));
		drop++;
	}
	for (uint32_t i = 0; i < drop; i++) {
		char path[64];
		seg_path(path, sizeof(path), w->segs[i].seq);
		int rv = w->disk.ops->remove(w->disk.ctx, path);
		if (rv)
			return fail(w, rv, "remove", path);
	}
	if (drop) {
		memmove(w->segs, w->segs + drop,
			(w->n_segs - drop) * sizeof(*w->segs));
		w->n_segs -= drop;
		w->stats.segments = w->n_segs;
		int rv = w->disk.ops->sync_dir(w->disk.ctx, "wal");
		if (rv)
			return fail(w, rv, "sync dir", "wal");
	}
	KEEL_ASSERT(w->n_segs >= 1);
	return 0;
}

/* Removes every snapshot file that is neither of the kept ones and is
 * older than the newest (a damaged or superseded leftover). Temp files
 * are not touched: another snapshot may be streaming into one. Not
 * followed by a directory sync: an old snapshot that comes back after a
 * power loss is harmless (recovery takes the newest that verifies). */
static int remove_snapshots(struct wal *w)
{
	struct name_list l = {.a = w->a};
	int rv = w->disk.ops->list(w->disk.ctx, "snap", collect_name, &l);
	for (uint32_t i = 0; !rv && i < l.n; i++) {
		uint64_t idx, term;
		if (!parse_snap_name(l.v[i], &idx, &term) ||
		    idx >= w->kept[0].index || kept_find(w, idx, term))
			continue;
		char path[96];
		snprintf(path, sizeof(path), "snap/%s", l.v[i]);
		rv = w->disk.ops->remove(w->disk.ctx, path);
	}
	w->a->free(w->a->ctx, l.v);
	if (rv)
		return fail(w, rv, "remove old snapshots in", "snap");
	return 0;
}

static struct snap_open *snap_find(struct wal *w, uint64_t handle)
{
	for (int i = 0; i < 2; i++)
		if (handle && w->open[i].handle == handle)
			return &w->open[i];
	return NULL;
}

/* Closes an open snapshot's file and frees its slot; remove_tmp drops
 * the temp file too (best effort: start-up removes leftovers). */
static void snap_close(struct wal *w, struct snap_open *o, bool remove_tmp)
{
	if (o->f)
		w->disk.ops->close(w->disk.ctx, o->f);
	if (remove_tmp) {
		char tmp[96];
		snap_path(tmp, sizeof(tmp), o->index, o->term, true);
		(void)w->disk.ops->remove(w->disk.ctx, tmp);
	}
	memset(o, 0, sizeof(*o));
}

int wal_snapshot_begin(struct wal *w, uint64_t index, uint64_t term,
		       uint64_t total_len, int kind, uint64_t *handle)
{
	KEEL_ASSERT(handle != NULL);
	*handle = 0;
	if (w->poison)
		return w->poison;
	if ((kind != WAL_SNAP_LOCAL && kind != WAL_SNAP_RECEIVED) ||
	    index == 0 || term == 0)
		return KEEL_ERR_INVAL;
	if (total_len > WAL_SNAP_MAX_BYTES)
		return KEEL_ERR_TOO_BIG;
	if (index <= w->snap_index)
		return KEEL_ERR_INVAL;
	/* A LOCAL snapshot is of applied, hence logged, entries. */
	if (kind == WAL_SNAP_LOCAL && index > w->last_index)
		return KEEL_ERR_INVAL;
	struct snap_open *o = &w->open[kind - 1];
	const struct snap_open *other = &w->open[2 - kind];
	if (o->handle)
		return KEEL_ERR_BUSY;
	if (other->handle && other->index == index && other->term == term)
		return KEEL_ERR_BUSY; /* the same temp file name */
	char tmp[96];
	snap_path(tmp, sizeof(tmp), index, term, true);
	struct keel_file *f;
	int rv = w->disk.ops->open(w->disk.ctx, tmp, KEEL_DISK_CREATE, &f);
	if (rv)
		return fail(w, rv, "create", tmp);
	if ((rv = w->disk.ops->truncate(w->disk.ctx, f, 0))) {
		w->disk.ops->close(w->disk.ctx, f);
		return fail(w, rv, "truncate", tmp);
	}
	*o = (struct snap_open){.handle = ++w->next_handle,
				.index = index,
				.term = term,
				.total = total_len,
				.kind = kind,
				.f = f};
	*handle = o->handle;
	KEEL_ASSERT(*handle > 0);
	return 0;
}

int wal_snapshot_write(struct wal *w, uint64_t handle, uint64_t offset,
		       const uint8_t *data, size_t len)
{
	if (w->poison)
		return w->poison;
	struct snap_open *o = snap_find(w, handle);
	if (!o || offset != o->written || len > o->total - o->written ||
	    (len && !data))
		return KEEL_ERR_INVAL;
	if (len == 0)
		return 0;
	int rv = w->disk.ops->pwrite(w->disk.ctx, o->f, data, len,
				     SNAP_HEADER + offset);
	if (rv) {
		char tmp[96];
		snap_path(tmp, sizeof(tmp), o->index, o->term, true);
		return fail(w, rv, "write", tmp);
	}
	o->crc = keel_crc32c(o->crc, data, len);
	o->written += len;
	KEEL_ASSERT(o->written <= o->total);
	return 0;
}

/* Header, fdatasync, rename, directory fsync: after it returns 0 the
 * snapshot survives any crash. Closes o's file (the slot stays). */
static int snap_make_durable(struct wal *w, struct snap_open *o)
{
	char tmp[96], final[96];
	snap_path(tmp, sizeof(tmp), o->index, o->term, true);
	snap_path(final, sizeof(final), o->index, o->term, false);
	uint8_t h[SNAP_HEADER] = {0};
	memcpy(h, SNAP_MAGIC, 8);
	keel_put_u32(h + 8, WAL_VERSION);
	keel_put_u64(h + 16, w->cfg.cluster_id);
	keel_put_u64(h + 24, o->index);
	keel_put_u64(h + 32, o->term);
	keel_put_u64(h + 40, o->total);
	keel_put_u32(h + 48, o->crc);
	keel_put_u32(h + 60, keel_crc32c(0, h, 60));
	int rv = w->disk.ops->pwrite(w->disk.ctx, o->f, h, sizeof(h), 0);
	if (!rv)
		rv = w->disk.ops->sync(w->disk.ctx, o->f);
	w->disk.ops->close(w->disk.ctx, o->f);
	o->f = NULL;
	if (rv)
		return fail(w, rv, "write", tmp);
	w->stats.syncs++;
	if ((rv = w->disk.ops->rename(w->disk.ctx, tmp, final)))
		return fail(w, rv, "rename", tmp);
	if ((rv = w->disk.ops->sync_dir(w->disk.ctx, "snap")))
		return fail(w, rv, "sync dir", "snap");
	return 0;
}

int wal_snapshot_finish(struct wal *w, uint64_t handle, uint32_t crc)
{
	struct snap_open *o = snap_find(w, handle);
	if (!o)
		return w->poison ? w->poison : KEEL_ERR_INVAL;
	if (w->poison) {
		snap_close(w, o, false);
		return w->poison;
	}
	/* The caller's CRC and length against the WAL's own: a second,
	 * independent check of what was streamed. */
	if (o->written != o->total || o->crc != crc) {
		snap_close(w, o, true);
		return KEEL_ERR_CORRUPT;
	}
	/* Overtaken while streaming (an install moved the base past it). */
	if (o->index <= w->snap_index ||
	    (o->kind == WAL_SNAP_LOCAL && o->index > w->last_index)) {
		snap_close(w, o, true);
		return KEEL_ERR_INVAL;
	}
	struct snap_kept made = {.index = o->index,
				 .term = o->term,
				 .len = o->total,
				 .crc = o->crc};
	int kind = o->kind;
	int rv = snap_make_durable(w, o);
	memset(o, 0, sizeof(*o));
	if (rv)
		return rv;
	if (kind == WAL_SNAP_LOCAL) {
		/* Two kept (docs/snapshots.md §1.4): the log keeps everything
		 * after the PREVIOUS snapshot, so segments go only up to it. */
		uint64_t prev = w->kept[0].index;
		w->kept[1] = w->kept[0];
		w->kept[0] = made;
		w->snap_index = made.index;
		w->snap_term = made.term;
		w->stats.snap_index = made.index;
		if ((rv = remove_segments(w, prev, 0)))
			return rv;
		return remove_snapshots(w);
	}
	/* RECEIVED: a reset record in a fresh segment empties the log above
	 * the snapshot; once it is durable every older segment is obsolete. */
	w->last_index = made.index;
	w->last_term = made.term;
	if ((rv = new_segment(w, w->segs[w->n_segs - 1].seq + 1)))
		return rv;
	if ((rv = stage_record(w, REC_RESET, 0, made.term, made.index, NULL,
			       0)))
		return fail(w, rv, "stage reset record in", "wal");
	if ((rv = wal_sync(w)))
		return rv;
	w->kept[0] = made;
	w->kept[1] = (struct snap_kept){0};
	w->snap_index = made.index;
	w->snap_term = made.term;
	w->stats.snap_index = made.index;
	if ((rv = remove_segments(w, made.index, w->segs[w->n_segs - 1].seq)))
		return rv;
	return remove_snapshots(w);
}

void wal_snapshot_abort(struct wal *w, uint64_t handle)
{
	struct snap_open *o = snap_find(w, handle);
	if (o)
		snap_close(w, o, true);
}

int wal_snapshot_read(struct wal *w, uint64_t index, uint64_t term,
		      uint64_t offset, void *buf, size_t len)
{
	if (len > WAL_SNAP_READ_MAX || (len && !buf))
		return KEEL_ERR_INVAL;
	const struct snap_kept *k = kept_find(w, index, term);
	if (!k)
		return KEEL_ERR_NOT_FOUND;
	if (offset > k->len || len > k->len - offset)
		return KEEL_ERR_INVAL;
	if (len == 0)
		return 0;
	char path[96];
	snap_path(path, sizeof(path), index, term, false);
	struct keel_file *f;
	int rv = w->disk.ops->open(w->disk.ctx, path, 0, &f);
	if (rv)
		return rv;
	size_t got = 0;
	rv = w->disk.ops->pread(w->disk.ctx, f, buf, len, SNAP_HEADER + offset,
				&got);
	w->disk.ops->close(w->disk.ctx, f);
	if (!rv && got != len)
		rv = KEEL_ERR_IO; /* shorter than its verified header says */
	return rv;
}

static int snapshot_one_buffer(struct wal *w, uint64_t index, uint64_t term,
			       const uint8_t *data, size_t len, int kind)
{
	uint64_t h;
	int rv = wal_snapshot_begin(w, index, term, len, kind, &h);
	if (rv)
		return rv;
	if ((rv = wal_snapshot_write(w, h, 0, data, len))) {
		wal_snapshot_abort(w, h);
		return rv;
	}
	return wal_snapshot_finish(w, h, keel_crc32c(0, data, len));
}

int wal_snapshot_save(struct wal *w, uint64_t index, uint64_t term,
		      const uint8_t *data, size_t len)
{
	return snapshot_one_buffer(w, index, term, data, len, WAL_SNAP_LOCAL);
}

int wal_snapshot_install(struct wal *w, uint64_t index, uint64_t term,
			 const uint8_t *data, size_t len)
{
	return snapshot_one_buffer(w, index, term, data, len,
				   WAL_SNAP_RECEIVED);
}

/* ---- recovery -------------------------------------------------------------- */

struct replay {
	struct wal *w;
	uint64_t base; /* index of rec_entries[0] */
	char *err;
	size_t err_len;
};

static void replay_truncate(struct wal *w, uint64_t keep)
{
	while (w->rec_n > keep) {
		w->rec_n--;
		w->a->free(w->a->ctx, (void *)w->rec_entries[w->rec_n].data);
	}
}

/* Applies one entry record with the Raft log's own rule: an index at or
 * below the last one drops everything from it on. */
static int replay_entry(struct replay *r, const char *path, uint64_t off,
			uint8_t etype, uint64_t term, uint64_t index,
			const uint8_t *data, uint32_t len)
{
	struct wal *w = r->w;
	if (w->rec_n == 0) {
		r->base = index;
	} else {
		uint64_t last = r->base + w->rec_n - 1;
		if (index > last + 1) {
			snprintf(r->err, r->err_len,
				 "corrupt WAL: gap in %s at byte %llu (index %llu after %llu)",
				 path, (unsigned long long)off,
				 (unsigned long long)index,
				 (unsigned long long)last);
			return KEEL_ERR_CORRUPT;
		}
		if (index <= last) {
#ifdef KEEL_MUTANTS
			if (w->mutant == WAL_MUTANT_NO_TRUNCATE)
				return 0;
#endif
			if (index < r->base) {
				replay_truncate(w, 0);
				r->base = index;
			} else {
				replay_truncate(w, index - r->base);
			}
		}
		if (w->rec_n && term < w->rec_entries[w->rec_n - 1].term) {
			snprintf(r->err, r->err_len,
				 "corrupt WAL: term goes back in %s at byte %llu",
				 path, (unsigned long long)off);
			return KEEL_ERR_CORRUPT;
		}
	}
	if (w->rec_n == w->rec_cap) {
		uint64_t c = w->rec_cap ? w->rec_cap * 2 : 256;
		void *p = w->a->realloc(w->a->ctx, w->rec_entries,
					(size_t)c * sizeof(*w->rec_entries));
		if (!p)
			return KEEL_ERR_NOMEM;
		w->rec_entries = p;
		w->rec_cap = c;
	}
	uint8_t *copy = NULL;
	if (len) {
		copy = w->a->malloc(w->a->ctx, len);
		if (!copy)
			return KEEL_ERR_NOMEM;
		memcpy(copy, data, len);
	}
	w->rec_entries[w->rec_n++] = (struct raft_entry){
		.term = term, .index = index, .type = etype, .len = len,
		.data = copy};
	return 0;
}

/* True when a well-formed record with a matching checksum starts at off. */
static bool valid_record_at(const struct wal *w, const uint8_t *buf,
			    uint64_t size, uint64_t off)
{
	if (off + WAL_RECORD_HEADER > size)
		return false;
	uint32_t len = keel_get_u32(buf + off + 4);
	if (len > w->cfg.max_record_bytes ||
	    off + WAL_RECORD_HEADER + pad8(len) > size)
		return false;
	uint8_t rtype = buf[off + 8];
	if ((rtype != REC_ENTRY && rtype != REC_RESET) ||
	    !all_zero(buf + off + 10, 6))
		return false;
	return keel_get_u32(buf + off) ==
	       keel_crc32c(0, buf + off + 4, WAL_RECORD_HEADER - 4 + len);
}

/* True when a valid record starts anywhere in (from, size), 8-aligned.
 * A torn write leaves only a prefix of the data, so nothing valid can
 * follow a torn record; a bad record that does have one behind it was
 * damaged at rest -- even when a flipped length field makes the record
 * seem to reach over its successors into the zeros (a length-swallow),
 * which the plain "zeros after it" test would take for a torn tail. */
static bool valid_record_after(const struct wal *w, const uint8_t *buf,
			       uint64_t size, uint64_t from)
{
	for (uint64_t off = from + 8; off + WAL_RECORD_HEADER <= size; off += 8)
		if (valid_record_at(w, buf, size, off))
			return true;
	return false;
}

/* Checks a segment; *end receives where appends continue. A torn tail is
 * cut in place (zeroed and synced) when this is the last segment. */
static int replay_segment(struct replay *r, struct segment *s, bool last_seg,
			  uint64_t *end, struct wal_recovered *rec)
{
	struct wal *w = r->w;
	char path[64];
	seg_path(path, sizeof(path), s->seq);
	uint8_t *buf;
	uint64_t size;
	int rv = read_file(w, path, &buf, &size, w->cfg.segment_bytes + 4096);
	if (rv) {
		snprintf(r->err, r->err_len, "reading %s: %s", path,
			 keel_strerror(rv));
		return rv;
	}
	bool header_ok = size >= WAL_SEGMENT_HEADER &&
			 !memcmp(buf, SEG_MAGIC, 8) &&
			 keel_get_u32(buf + 60) == keel_crc32c(0, buf, 60) &&
			 keel_get_u32(buf + 8) == WAL_VERSION &&
			 keel_get_u64(buf + 16) == s->seq;
	if (!header_ok) {
		if (last_seg && size <= WAL_SEGMENT_HEADER + 8 + w->cfg.segment_bytes &&
		    all_zero(buf + KEEL_MIN(size, (uint64_t)WAL_SEGMENT_HEADER),
			     size - KEEL_MIN(size, (uint64_t)WAL_SEGMENT_HEADER))) {
			/* A rollover torn before its header was synced: it
			 * never held an acknowledged record. */
			w->a->free(w->a->ctx, buf);
			*end = 0;
			return 1; /* caller removes it */
		}
		snprintf(r->err, r->err_len,
			 "corrupt WAL: bad segment header in %s at byte 0", path);
		w->a->free(w->a->ctx, buf);
		return KEEL_ERR_CORRUPT;
	}
	if (keel_get_u64(buf + 24) != w->cfg.cluster_id) {
		snprintf(r->err, r->err_len,
			 "%s belongs to cluster %llu, not %llu", path,
			 (unsigned long long)keel_get_u64(buf + 24),
			 (unsigned long long)w->cfg.cluster_id);
		w->a->free(w->a->ctx, buf);
		return KEEL_ERR_CLUSTER;
	}
	uint64_t off = WAL_SEGMENT_HEADER;
	rv = 0;
	while (off + 8 <= size) {
		uint32_t crc = keel_get_u32(buf + off);
		uint32_t len = keel_get_u32(buf + off + 4);
		if (crc == 0 && len == 0)
			break; /* end of data */
		bool plausible = len <= w->cfg.max_record_bytes &&
				 off + WAL_RECORD_HEADER + pad8(len) <= size;
		bool good = plausible &&
			    crc == keel_crc32c(0, buf + off + 4,
					       WAL_RECORD_HEADER - 4 + len);
#ifdef KEEL_MUTANTS
		if (w->mutant == WAL_MUTANT_SKIP_CHECKSUM && plausible)
			good = true;
#endif
		uint8_t rtype = plausible ? buf[off + 8] : 0;
		if (good && ((rtype != REC_ENTRY && rtype != REC_RESET) ||
			     !all_zero(buf + off + 10, 6)))
			good = false;
		if (!good) {
			uint64_t after = plausible ? off + WAL_RECORD_HEADER +
							     pad8(len)
						   : off + 8;
			if (!last_seg || !all_zero(buf + after, size - after) ||
			    valid_record_after(w, buf, size, off)) {
				snprintf(r->err, r->err_len,
					 "corrupt WAL record in %s at byte %llu: %s",
					 path, (unsigned long long)off,
					 plausible ? "checksum mismatch"
						   : "impossible length");
				rv = KEEL_ERR_CORRUPT;
				break;
			}
			/* Torn tail: cut it so appends continue here. */
			rec->torn_tail = true;
			if (rec->n_warnings < 4)
				snprintf(rec->warning[rec->n_warnings++], 256,
					 "torn tail in %s at byte %llu: %llu bytes cut",
					 path, (unsigned long long)off,
					 (unsigned long long)(after - off));
			struct keel_file *f;
			rv = w->disk.ops->open(w->disk.ctx, path, 0, &f);
			if (!rv) {
				memset(buf + off, 0, (size_t)(after - off));
				rv = w->disk.ops->pwrite(w->disk.ctx, f,
							 buf + off,
							 (size_t)(after - off),
							 off);
				if (!rv)
					rv = w->disk.ops->sync(w->disk.ctx, f);
				w->disk.ops->close(w->disk.ctx, f);
			}
			if (rv)
				snprintf(r->err, r->err_len,
					 "cutting torn tail of %s: %s", path,
					 keel_strerror(rv));
			break;
		}
		uint64_t term = keel_get_u64(buf + off + 16);
		uint64_t index = keel_get_u64(buf + off + 24);
		if (index == 0) {
			/* Entries start at 1 and a reset names a snapshot:
			 * a valid record at 0 was never written by us. */
			snprintf(r->err, r->err_len,
				 "corrupt WAL record in %s at byte %llu: index 0",
				 path, (unsigned long long)off);
			rv = KEEL_ERR_CORRUPT;
			break;
		}
		if (rtype == REC_RESET) {
			replay_truncate(w, 0);
			r->base = index + 1;
			/* The snapshot at (index, term) must exist: checked
			 * by the caller against the loaded snapshot. */
			w->last_index = index;
			w->last_term = term;
			if (index > s->max_index)
				s->max_index = index;
		} else {
			rv = replay_entry(r, path, off, buf[off + 9], term,
					  index, buf + off + WAL_RECORD_HEADER,
					  len);
			if (rv)
				break;
			if (index > s->max_index)
				s->max_index = index;
		}
		s->has_records = true;
		off += WAL_RECORD_HEADER + pad8(len);
	}
	w->a->free(w->a->ctx, buf);
	*end = off;
	return rv;
}

/* Verifies a snapshot file by streaming over it (the payload never sits in
 * RAM whole): header magic, version, CRC, cluster, the (index, term) of
 * its name, the length against the file size, then the payload CRC in
 * chunks of at most WAL_SNAP_READ_MAX bytes. 0 and *k filled; 1 when it
 * is damaged (*bad_off and *why say where and what); or an I/O error. */
static int verify_snapshot(struct wal *w, const char *path, uint64_t index,
			   uint64_t term, struct snap_kept *k,
			   uint64_t *bad_off, const char **why)
{
	struct keel_file *f;
	int rv = w->disk.ops->open(w->disk.ctx, path, 0, &f);
	if (rv)
		return rv;
	uint64_t size = 0;
	uint8_t h[SNAP_HEADER];
	size_t got = 0;
	uint8_t *chunk = NULL;
	*bad_off = 0;
	*why = NULL;
	if ((rv = w->disk.ops->size(w->disk.ctx, f, &size)))
		goto out;
	if (size < SNAP_HEADER) {
		*why = "shorter than its 64-byte header";
		goto out;
	}
	if ((rv = w->disk.ops->pread(w->disk.ctx, f, h, sizeof(h), 0, &got)))
		goto out;
	if (got != sizeof(h)) {
		rv = KEEL_ERR_IO;
		goto out;
	}
	if (memcmp(h, SNAP_MAGIC, 8)) {
		*why = "bad magic";
	} else if (keel_get_u32(h + 60) != keel_crc32c(0, h, 60)) {
		*bad_off = 60;
		*why = "header checksum mismatch";
	} else if (keel_get_u32(h + 8) != WAL_VERSION) {
		*bad_off = 8;
		*why = "unsupported version";
	} else if (keel_get_u64(h + 16) != w->cfg.cluster_id) {
		*bad_off = 16;
		*why = "belongs to another cluster";
	} else if (keel_get_u64(h + 24) != index || keel_get_u64(h + 32) != term) {
		*bad_off = 24;
		*why = "index or term differs from its name";
	} else if (keel_get_u64(h + 40) != size - SNAP_HEADER) {
		*bad_off = 40;
		*why = "payload length differs from the file size";
	}
	if (*why)
		goto out;
	uint64_t len = size - SNAP_HEADER;
	size_t cap = (size_t)KEEL_MIN(len, (uint64_t)WAL_SNAP_READ_MAX);
	chunk = w->a->malloc(w->a->ctx, cap ? cap : 1);
	if (!chunk) {
		rv = KEEL_ERR_NOMEM;
		goto out;
	}
	uint32_t crc = 0;
	for (uint64_t off = 0; off < len;) {
		size_t n = (size_t)KEEL_MIN(len - off, (uint64_t)cap);
		rv = w->disk.ops->pread(w->disk.ctx, f, chunk, n,
					SNAP_HEADER + off, &got);
		if (!rv && got != n)
			rv = KEEL_ERR_IO;
		if (rv)
			goto out;
		crc = keel_crc32c(crc, chunk, n);
		off += n;
	}
	if (crc != keel_get_u32(h + 48)) {
		*bad_off = SNAP_HEADER;
		*why = "payload checksum mismatch";
		goto out;
	}
	*k = (struct snap_kept){.index = index, .term = term, .len = len,
				.crc = crc};
out:
	w->a->free(w->a->ctx, chunk);
	w->disk.ops->close(w->disk.ctx, f);
	if (rv)
		return rv;
	return *why ? 1 : 0;
}

/* Picks the newest snapshot that verifies; a damaged newer one is skipped
 * with a warning and remembered (the log check then decides whether the
 * older one can stand in: disk-format.md, "Snapshots"). Removes leftover
 * temp files (snapshots that never finished). */
static int load_snapshot(struct wal *w, struct wal_recovered *rec,
			 struct snap_damage *dmg, char *err, size_t err_len)
{
	struct name_list l = {.a = w->a};
	int rv = w->disk.ops->list(w->disk.ctx, "snap", collect_name, &l);
	if (rv) {
		w->a->free(w->a->ctx, l.v);
		snprintf(err, err_len, "listing snap: %s", keel_strerror(rv));
		return rv;
	}
	/* Temp names first: they are never candidates. */
	for (uint32_t i = 0; !rv && i < l.n; i++) {
		size_t n = strlen(l.v[i]);
		if (n > 4 && !strcmp(l.v[i] + n - 4, ".tmp")) {
			char path[96];
			snprintf(path, sizeof(path), "snap/%s", l.v[i]);
			rv = w->disk.ops->remove(w->disk.ctx, path);
			if (rv)
				snprintf(err, err_len, "removing %s: %s", path,
					 keel_strerror(rv));
			l.v[i][0] = 0;
		}
	}
	while (!rv) {
		int best = -1;
		uint64_t bi = 0, bt = 0;
		for (uint32_t i = 0; i < l.n; i++) {
			uint64_t idx, term;
			if (l.v[i][0] && parse_snap_name(l.v[i], &idx, &term) &&
			    (best < 0 || idx > bi || (idx == bi && term > bt))) {
				best = (int)i;
				bi = idx;
				bt = term;
			}
		}
		if (best < 0)
			break;
		char path[96];
		snprintf(path, sizeof(path), "snap/%s", l.v[best]);
		l.v[best][0] = 0;
		struct snap_kept k = {0};
		uint64_t bad_off = 0;
		const char *why = "";
		rv = verify_snapshot(w, path, bi, bt, &k, &bad_off, &why);
		if (rv == 1) {
			rv = 0;
			if (rec->n_warnings < 4)
				snprintf(rec->warning[rec->n_warnings++], 256,
					 "damaged snapshot %s ignored: %s at byte %llu",
					 path, why, (unsigned long long)bad_off);
			if (!dmg->index) {
				dmg->index = bi;
				snprintf(dmg->what, sizeof(dmg->what),
					 "corrupt snapshot %s at byte %llu: %s",
					 path, (unsigned long long)bad_off, why);
			}
			continue;
		}
		if (rv) {
			snprintf(err, err_len, "reading %s: %s", path,
				 keel_strerror(rv));
			break;
		}
		w->kept[0] = k;
		rec->snap_index = k.index;
		rec->snap_term = k.term;
		rec->snap_len = k.len;
		rec->snap_crc = k.crc;
		break;
	}
	w->a->free(w->a->ctx, l.v);
	return rv;
}

static int cmp_seq(const void *a, const void *b)
{
	const struct segment *x = a, *y = b;
	return (x->seq > y->seq) - (x->seq < y->seq);
}

static void sort_segs(struct segment *s, uint32_t n)
{
	/* Insertion sort: segment counts are small and this stays pure. */
	for (uint32_t i = 1; i < n; i++)
		for (uint32_t j = i; j > 0 && cmp_seq(&s[j - 1], &s[j]) > 0; j--) {
			struct segment t = s[j];
			s[j] = s[j - 1];
			s[j - 1] = t;
		}
}

/* Syncs what recovery returns: the active segment and the wal/
 * directory (their names), the hard state and its directory, snap/. */
static int make_recovered_durable(struct wal *w)
{
	int rv;
	if (w->seg_dirty && (rv = sync_active(w)))
		return rv;
	if (w->dir_dirty) {
		if ((rv = w->disk.ops->sync_dir(w->disk.ctx, "wal")))
			return fail(w, rv, "sync dir", "wal");
		w->dir_dirty = false;
	}
	struct keel_file *f;
	rv = w->disk.ops->open(w->disk.ctx, "hardstate", 0, &f);
	if (rv == 0) {
		rv = w->disk.ops->sync(w->disk.ctx, f);
		w->disk.ops->close(w->disk.ctx, f);
		if (rv)
			return fail(w, rv, "fdatasync", "hardstate");
		if ((rv = w->disk.ops->sync_dir(w->disk.ctx, ".")))
			return fail(w, rv, "sync dir for", "hardstate");
	} else if (rv != KEEL_ERR_NOT_FOUND) {
		return fail(w, rv, "open", "hardstate");
	}
	if ((rv = w->disk.ops->sync_dir(w->disk.ctx, "snap")))
		return fail(w, rv, "sync dir", "snap");
	return 0;
}

static int recover(struct wal *w, struct wal_recovered *rec, char *err,
		   size_t err_len)
{
	int rv = hs_load(w, &rec->hs, err, err_len);
	if (rv)
		return rv;
	w->hs_staged = w->hs_written = w->hs_synced = rec->hs;
	struct snap_damage dmg = {0};
	if ((rv = load_snapshot(w, rec, &dmg, err, err_len)))
		return rv;

	struct name_list l = {.a = w->a};
	rv = w->disk.ops->list(w->disk.ctx, "wal", collect_name, &l);
	for (uint32_t i = 0; !rv && i < l.n; i++) {
		uint64_t seq;
		if (strlen(l.v[i]) != 20 || strcmp(l.v[i] + 16, ".wal") ||
		    !parse_hex(l.v[i], 16, &seq))
			continue;
		if (w->n_segs >= MAX_SEGMENTS || (rv = grow_segs(w)))
			break;
		w->segs[w->n_segs++] = (struct segment){.seq = seq};
	}
	w->a->free(w->a->ctx, l.v);
	if (rv) {
		snprintf(err, err_len, "listing wal: %s", keel_strerror(rv));
		return rv;
	}
	sort_segs(w->segs, w->n_segs);

	struct replay r = {.w = w, .err = err, .err_len = err_len};
	uint64_t end = 0;
	for (uint32_t i = 0; i < w->n_segs; i++) {
		bool last = i + 1 == w->n_segs;
		/* end must stay the previous segment's when this one is
		 * removed: appends then continue there, and taking the
		 * removed segment's 0 made them overwrite its header. */
		uint64_t seg_end = 0;
		rv = replay_segment(&r, &w->segs[i], last, &seg_end, rec);
		if (rv == 0)
			end = seg_end;
		if (rv == 1) {
			char path[64];
			seg_path(path, sizeof(path), w->segs[i].seq);
			rv = w->disk.ops->remove(w->disk.ctx, path);
			if (!rv)
				rv = w->disk.ops->sync_dir(w->disk.ctx, "wal");
			if (rv) {
				snprintf(err, err_len, "removing %s: %s", path,
					 keel_strerror(rv));
				return rv;
			}
			if (rec->n_warnings < 4)
				snprintf(rec->warning[rec->n_warnings++], 256,
					 "removed %s: torn before its header", path);
			w->n_segs--;
			break;
		}
		if (rv)
			return rv;
	}

	/* Fit the log to the snapshot (§5.3 of the thesis: InstallSnapshot
	 * keeps a suffix only if it follows the snapshot's entry). */
	uint64_t si = rec->snap_index, st = rec->snap_term;
	uint64_t first = r.base, last = r.base + w->rec_n - 1;
	char gap[200];
	gap[0] = 0;
	bool dropped = false;
	if (w->rec_n == 0) {
		/* Nothing logged (or a reset record): the log starts after
		 * the snapshot. A reset must point at the loaded snapshot. */
		if (r.base > 1 && r.base != si + 1)
			snprintf(gap, sizeof(gap),
				 "log restarts at %llu but the snapshot is at %llu",
				 (unsigned long long)r.base,
				 (unsigned long long)si);
	} else if (si == 0) {
		if (first != 1)
			snprintf(gap, sizeof(gap),
				 "log starts at index %llu with no snapshot before it",
				 (unsigned long long)first);
	} else if (first > si + 1) {
		snprintf(gap, sizeof(gap),
			 "gap between snapshot %llu and log start %llu",
			 (unsigned long long)si, (unsigned long long)first);
	} else if (last < si || (si >= first &&
				 w->rec_entries[si - first].term != st)) {
		/* The log is behind or diverges from the snapshot: it holds
		 * nothing the snapshot does not supersede. */
		replay_truncate(w, 0);
		r.base = si + 1;
		dropped = true;
	}
	/* A damaged newer snapshot: the older one stands in only if the log
	 * covers everything up to the damaged one's index (it was durable,
	 * so acknowledged entries up to it may exist nowhere else). */
	uint64_t top = w->rec_n ? r.base + w->rec_n - 1 : si;
	if (!gap[0] && dmg.index && top < dmg.index)
		snprintf(gap, sizeof(gap), "log ends at %llu",
			 (unsigned long long)top);
	if (gap[0]) {
		if (dmg.index)
			snprintf(err, err_len,
				 "%s, and the log does not reach back past it (%s)",
				 dmg.what, gap);
		else
			snprintf(err, err_len, "corrupt WAL: %s", gap);
		return KEEL_ERR_CORRUPT;
	}
	uint64_t skip = 0;
	if (w->rec_n && si >= r.base)
		skip = si - r.base + 1;
	rec->entries = w->rec_entries ? w->rec_entries + skip : NULL;
	rec->n_entries = (uint32_t)(w->rec_n - skip);
	w->snap_index = si;
	w->snap_term = st;
	w->stats.snap_index = si;
	if (rec->n_entries) {
		w->last_index = rec->entries[rec->n_entries - 1].index;
		w->last_term = rec->entries[rec->n_entries - 1].term;
	} else {
		w->last_index = si;
		w->last_term = st;
	}
	if (rec->hs.commit > w->last_index)
		rec->hs.commit = w->last_index;

	/* Continue appending in the last segment, or start the first. */
	if (w->n_segs == 0) {
		rv = new_segment(w, 1);
	} else {
		char path[64];
		seg_path(path, sizeof(path), w->segs[w->n_segs - 1].seq);
		rv = w->disk.ops->open(w->disk.ctx, path, 0, &w->active);
		if (rv) {
			snprintf(err, err_len, "opening %s: %s", path,
				 keel_strerror(rv));
			return rv;
		}
		/* Never below the header: an append there would destroy
		 * the segment (stop rather than write). */
		KEEL_ASSERT(end >= WAL_SEGMENT_HEADER);
		w->active_off = end;
		w->buf_off = end;
		w->stats.segments = w->n_segs;
		/* What we read may sit only in the page cache: after a
		 * process crash (no power loss) the bytes and names of the
		 * last run's unsynced writes are visible. The caller treats
		 * everything recovered as durable (it may vote and
		 * acknowledge on it at once), so make it so first. */
		w->seg_dirty = true;
		w->dir_dirty = true;
	}
	if (!rv && dropped) {
		/* The fit rule dropped records that are still in the
		 * segments (an install whose reset record was lost). Write
		 * the reset now: appends after the snapshot must not land
		 * behind them, or the next replay would see a gap (or keep
		 * the stale entry at the snapshot's index and drop the new
		 * ones). */
		rv = stage_record(w, REC_RESET, 0, st, si, NULL, 0);
		if (rv)
			rv = fail(w, rv, "stage reset record in", "wal");
		else
			rv = wal_sync(w);
		if (!rv && rec->n_warnings < 4)
			snprintf(rec->warning[rec->n_warnings++], 256,
				 "log dropped: snapshot %llu (term %llu) supersedes it; reset record written",
				 (unsigned long long)si, (unsigned long long)st);
	}
	if (!rv)
		rv = make_recovered_durable(w);
	if (rv)
		snprintf(err, err_len, "%s", w->errmsg);
	return rv;
}

/* ---- lifecycle --------------------------------------------------------- */

int wal_open(const struct wal_config *cfg, struct wal **out,
	     struct wal_recovered *rec, char *err, size_t err_len)
{
	memset(rec, 0, sizeof(*rec));
	if (err_len)
		err[0] = 0;
	struct wal_config c = *cfg;
	if (!c.segment_bytes)
		c.segment_bytes = WAL_DEFAULT_SEGMENT_BYTES;
	if (!c.max_record_bytes)
		c.max_record_bytes = (uint32_t)KEEL_MIN(
			c.segment_bytes - 2 * WAL_SEGMENT_HEADER,
			(uint64_t)UINT32_MAX);
	if (c.segment_bytes < WAL_MIN_SEGMENT_BYTES ||
	    c.max_record_bytes + WAL_RECORD_HEADER + 8 + WAL_SEGMENT_HEADER >
		    c.segment_bytes || !c.disk.ops) {
		snprintf(err, err_len, "bad WAL configuration");
		return KEEL_ERR_INVAL;
	}
	const struct keel_alloc *a = c.alloc ? c.alloc : &keel_alloc_libc;
	c.alloc = a;
	struct wal *w = a->malloc(a->ctx, sizeof(*w));
	if (!w)
		return KEEL_ERR_NOMEM;
	memset(w, 0, sizeof(*w));
	w->cfg = c;
	w->a = a;
	w->disk = c.disk;
#ifdef KEEL_MUTANTS
	w->mutant = c.mutant; /* before recovery: the replay mutants act there */
#endif
	int rv = 0;
	for (int i = 0; i < 2 && !rv; i++) {
		const char *dir = i ? "snap" : "wal";
		rv = w->disk.ops->mkdir(w->disk.ctx, dir);
		if (rv == KEEL_ERR_EXISTS)
			rv = 0;
		if (rv)
			snprintf(err, err_len, "mkdir %s: %s", dir,
				 keel_strerror(rv));
	}
	if (!rv)
		rv = recover(w, rec, err, err_len);
	if (!rv && w->poison) {
		rv = w->poison;
		snprintf(err, err_len, "%s", w->errmsg);
	}
	if (rv) {
		wal_recovered_free(w, rec);
		wal_close(w);
		return rv;
	}
	*out = w;
	return 0;
}

void wal_recovered_free(struct wal *w, struct wal_recovered *rec)
{
	replay_truncate(w, 0);
	w->a->free(w->a->ctx, w->rec_entries);
	w->rec_entries = NULL;
	w->rec_cap = 0;
	rec->entries = NULL;
	rec->n_entries = 0;
}

void wal_close(struct wal *w)
{
	if (!w)
		return;
	replay_truncate(w, 0);
	w->a->free(w->a->ctx, w->rec_entries);
	/* Open snapshots are left as a crash leaves them: start-up removes
	 * their temp files. */
	for (int i = 0; i < 2; i++)
		if (w->open[i].f)
			w->disk.ops->close(w->disk.ctx, w->open[i].f);
	if (w->active)
		w->disk.ops->close(w->disk.ctx, w->active);
	if (w->hs_file)
		w->disk.ops->close(w->disk.ctx, w->hs_file);
	w->a->free(w->a->ctx, w->segs);
	w->a->free(w->a->ctx, w->buf);
	w->a->free(w->a->ctx, w);
}

int wal_poisoned(const struct wal *w)
{
	return w->poison;
}

const char *wal_errmsg(const struct wal *w)
{
	return w->errmsg;
}

void wal_stats(const struct wal *w, struct wal_stats *st)
{
	*st = w->stats;
	st->first_index = w->snap_index + 1;
	st->snaps_kept = (w->kept[0].index != 0) + (w->kept[1].index != 0);
	st->last_index = w->last_index;
}

#ifdef KEEL_MUTANTS
void wal_set_mutant(struct wal *w, int mutant)
{
	w->mutant = mutant;
}
#endif
