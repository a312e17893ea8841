/*
 * store.c -- the simulator's log store: the real WAL (src/wal/wal.c) over
 * the in-memory disk with power-loss semantics (src/env/memdisk.c), as one
 * node's env_store, with the simulator deciding when each sync completes.
 *
 * A write is staged in the WAL and handed to the disk at once (wal_flush:
 * the bytes sit in the page cache, unsynced), then queued. The simulator
 * completes writes in issue order after a latency it draws from the seed;
 * completing the oldest write that is not yet durable runs one wal_sync,
 * which covers every write issued before it (group commit), so the writes
 * behind it complete without another sync. A crash is a memdisk power
 * loss: the unsynced bytes are kept, lost or torn at a point drawn from
 * the seed; recovery is wal_open, and the node restarts from what it
 * returns.
 *
 * Beside the WAL the store keeps a shadow of what is durable: the writes
 * covered by a successful sync, applied in order, replaced after each
 * recovery by exactly what wal_open returned. The checkers count durable
 * copies from it (sim_store_durable_term), so "durable" means synced to
 * the simulated platter, never merely "reported complete".
 *
 * Snapshot operations (env.h, docs/snapshots.md §2) run on the WAL when
 * issued, in issue order with the appends, and wait in the same queue for
 * their completion; they need no sync at completion (a chunk is never
 * synced on its own; a finish syncs inside the WAL). An install's finish
 * syncs everything staged before it and restarts the shadow log at the
 * snapshot. Power loss tears or loses a snapshot's unsynced temp file like
 * any other unsynced write; EIO/ENOSPC faults hit its writes too.
 *
 * Errors: the first failed flush or sync poisons the store (the WAL
 * poisons itself too); that write and every later one complete with the
 * error, and nothing is ever reported durable again until a crash and a
 * new recovery (an operator restart). Recovery failures are reported, a
 * KEEL_ERR_CORRUPT one makes the store refuse for good.
 */
#include <assert.h>
#include <stdio.h>
#include <string.h>

#include "keel/memdisk.h"
#include "sim/sim_internal.h"

static void free_entries(struct sim_store *s, struct raft_entry *e,
			 uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		s->alloc->free(s->alloc->ctx, (void *)e[i].data);
}

static void free_write(struct sim_store *s, struct sim_write *w)
{
	if (w->entries) {
		free_entries(s, w->entries, w->n_entries);
		s->alloc->free(s->alloc->ctx, w->entries);
	}
	w->entries = NULL;
	s->alloc->free(s->alloc->ctx, w->rbuf);
	w->rbuf = NULL;
}

static void drop_pending(struct sim_store *s)
{
	for (uint32_t i = 0; i < s->n_pending; i++)
		free_write(s, &s->pending[(s->head + i) % s->cap_pending]);
	s->n_pending = 0;
	s->n_completed = 0;
	s->head = 0;
	s->queued_write_bytes = s->queued_read_bytes = 0;
}

static void drop_log(struct sim_store *s)
{
	free_entries(s, s->log, (uint32_t)s->n_log);
	s->n_log = 0;
}

/* The shadow log restarts after a durable snapshot (an install). */
static void rebase_log(struct sim_store *s, uint64_t index, uint64_t term)
{
	drop_log(s);
	s->base_index = index;
	s->base_term = term;
}

static void close_wal(struct sim_store *s)
{
	if (!s->wal)
		return;
	if (s->have_rec)
		wal_recovered_free(s->wal, &s->rec);
	s->have_rec = false;
	wal_close(s->wal);
	s->wal = NULL;
	memset(s->snap_open, 0, sizeof(s->snap_open)); /* handles died too */
}

/* Durable truncation: drops every stored entry with index >= from. */
static void durable_truncate(struct sim_store *s, uint64_t from)
{
	if (from == 0 || from > s->base_index + s->n_log)
		return;
	/* Nothing at or below a durable snapshot is ever overwritten. */
	KEEL_ASSERT(from > s->base_index);
	uint64_t keep = from - s->base_index - 1;
	free_entries(s, s->log + keep, (uint32_t)(s->n_log - keep));
	s->n_log = keep;
}

/* Takes ownership of e's data. */
static int durable_append(struct sim_store *s, const struct raft_entry *e)
{
	KEEL_ASSERT(e->index == s->base_index + s->n_log + 1);
	if (s->n_log == s->cap_log) {
		uint64_t ncap = s->cap_log ? s->cap_log * 2 : 64;
		struct raft_entry *nl = s->alloc->realloc(
			s->alloc->ctx, s->log, ncap * sizeof(*nl));
		if (!nl)
			return KEEL_ERR_NOMEM;
		s->log = nl;
		s->cap_log = ncap;
	}
	s->log[s->n_log++] = *e;
	return 0;
}

/* Applies a synced write to the shadow; frees its copies. */
static void shadow_apply(struct sim_store *s, struct sim_write *w)
{
	if (w->n_entries)
		durable_truncate(s, w->truncate_from);
	for (uint32_t i = 0; i < w->n_entries; i++) {
		if (durable_append(s, &w->entries[i]) == 0)
			continue;
		KEEL_ASSERT(!"sim store: out of memory");
	}
	s->alloc->free(s->alloc->ctx, w->entries);
	w->entries = NULL;
	if (w->has_hard_state)
		s->hs = w->hard_state;
	w->durable = true;
}

int sim_store_init(struct sim_store *s, const struct sim_store_config *cfg)
{
	memset(s, 0, sizeof(*s));
	s->alloc = cfg->alloc ? cfg->alloc : &keel_alloc_libc;
	s->check_upto = UINT64_MAX;
	s->mutant = cfg->mutant;
	s->disk = memdisk_create(s->alloc, cfg->seed);
	if (!s->disk)
		return KEEL_ERR_NOMEM;
	s->wcfg = (struct wal_config){.disk = memdisk_disk(s->disk),
				      .alloc = s->alloc,
				      .cluster_id = cfg->cluster_id,
				      .segment_bytes = cfg->segment_bytes};
#ifdef KEEL_MUTANTS
	s->wcfg.mutant = cfg->wal_mutant;
#endif
	int rv = sim_store_recover(s);
	if (rv) {
		sim_store_close(s);
		return rv;
	}
	return 0;
}

void sim_store_close(struct sim_store *s)
{
	close_wal(s);
	drop_pending(s);
	s->alloc->free(s->alloc->ctx, s->pending);
	drop_log(s);
	s->alloc->free(s->alloc->ctx, s->log);
	memdisk_destroy(s->disk);
	memset(s, 0, sizeof(*s));
}

/* Room for one more queued operation. */
static int ring_reserve(struct sim_store *s)
{
	if (s->n_pending < s->cap_pending)
		return 0;
	uint32_t ncap = s->cap_pending ? s->cap_pending * 2 : 16;
	struct sim_write *np =
		s->alloc->malloc(s->alloc->ctx, ncap * sizeof(*np));
	if (!np)
		return KEEL_ERR_NOMEM;
	for (uint32_t i = 0; i < s->n_pending; i++)
		np[i] = s->pending[(s->head + i) % s->cap_pending];
	s->alloc->free(s->alloc->ctx, s->pending);
	s->pending = np;
	s->cap_pending = ncap;
	s->head = 0;
	return 0;
}

int sim_store_submit(struct sim_store *s, const struct env_store_write *w,
		     env_store_cb cb, void *arg)
{
	if (w->n_entries)
		KEEL_ASSERT(w->truncate_from == w->entries[0].index);
	if (!s->wal)
		return KEEL_ERR_IO; /* not recovered: the node cannot run */
	int grv = ring_reserve(s);
	if (grv)
		return grv;
	struct sim_write nw = {.truncate_from = w->truncate_from,
			       .n_entries = w->n_entries,
			       .has_hard_state = w->has_hard_state,
			       .hard_state = w->hard_state,
			       .cb = cb,
			       .arg = arg};
	if (w->n_entries) {
		nw.entries = s->alloc->malloc(
			s->alloc->ctx, w->n_entries * sizeof(*nw.entries));
		if (!nw.entries)
			return KEEL_ERR_NOMEM;
		for (uint32_t i = 0; i < w->n_entries; i++) {
			nw.entries[i] = w->entries[i];
			uint8_t *d = NULL;
			if (w->entries[i].len) {
				d = s->alloc->malloc(s->alloc->ctx,
						     w->entries[i].len);
				if (!d) {
					free_entries(s, nw.entries, i);
					s->alloc->free(s->alloc->ctx,
						       nw.entries);
					return KEEL_ERR_NOMEM;
				}
				memcpy(d, w->entries[i].data, w->entries[i].len);
			}
			nw.entries[i].data = d;
		}
	}
	/* Stage in the WAL and hand the bytes to the disk. An error is not
	 * returned here but through the completion (as a disk thread would
	 * report it): the node must learn it before it acts on the write. */
	/* Remember the lowest index this unsynced write may overwrite on
	 * disk (a failed write's earlier bytes may still land). */
	if (w->n_entries && (!s->unsynced_from ||
			     w->truncate_from < s->unsynced_from))
		s->unsynced_from = w->truncate_from;
	if (!s->error) {
		int rv = 0;
		if (w->n_entries)
			rv = wal_append(s->wal, w->entries, w->n_entries);
		if (!rv && w->has_hard_state)
			rv = wal_save_hard_state(s->wal, &w->hard_state);
		if (!rv)
			rv = wal_flush(s->wal);
		if (rv) {
			s->error = rv;
			snprintf(s->msg, sizeof(s->msg), "%s",
				 wal_poisoned(s->wal) ? wal_errmsg(s->wal)
						      : keel_strerror(rv));
		}
	}
	s->pending[(s->head + s->n_pending) % s->cap_pending] = nw;
	s->n_pending++;
	s->submitted++;
	return 0;
}

/* One wal_sync: on success every write issued so far is durable. */
static int sync_all(struct sim_store *s)
{
	int rv = wal_sync(s->wal);
	if (rv) {
		s->error = rv;
		snprintf(s->msg, sizeof(s->msg), "%s", wal_errmsg(s->wal));
		return rv;
	}
	s->syncs++;
	s->unsynced_from = 0;
	for (uint32_t i = 0; i < s->n_pending; i++) {
		struct sim_write *w =
			&s->pending[(s->head + i) % s->cap_pending];
		if (!w->durable)
			shadow_apply(s, w);
	}
	return 0;
}

/* A completed snap_read on its way to the node's read callback. */
struct sim_read_done {
	const struct keel_alloc *alloc;
	env_store_read_cb cb;
	void *arg;
	int status;
	uint8_t *buf; /* owned; freed after the callback */
	size_t len;
};

static void deliver_read(void *arg, int status)
{
	struct sim_read_done *rd = arg;
	(void)status; /* rd->status: the store's error, or the read's own */
	rd->cb(rd->arg, rd->status, rd->buf, rd->len);
	rd->alloc->free(rd->alloc->ctx, rd->buf);
	rd->alloc->free(rd->alloc->ctx, rd);
}

bool sim_store_complete(struct sim_store *s, env_store_cb *cb, void **arg,
			int *status)
{
	if (s->n_completed == s->n_pending)
		return false;
	struct sim_write *w =
		&s->pending[(s->head + s->n_completed) % s->cap_pending];
	*status = 0;
	if (w->op == SIM_STORE_SNAP_WRITE)
		s->queued_write_bytes -= w->queued;
	if (w->op == SIM_STORE_SNAP_READ)
		s->queued_read_bytes -= w->queued;
	w->queued = 0;
	if (w->op == SIM_STORE_SNAP_READ) {
		/* The read callback runs through deliver_read, which owns
		 * the bytes from here on. */
		struct sim_read_done *rd = s->alloc->malloc(s->alloc->ctx,
							    sizeof(*rd));
		KEEL_ASSERT(rd != NULL);
		*rd = (struct sim_read_done){
			.alloc = s->alloc,
			.cb = w->rcb,
			.arg = w->arg,
			.status = s->error ? s->error : w->status,
			.buf = w->rbuf,
			.len = w->rlen};
		if (rd->status) {
			s->alloc->free(s->alloc->ctx, w->rbuf);
			rd->buf = NULL;
			rd->len = 0;
		}
		w->rbuf = NULL;
		*status = s->error;
		*cb = deliver_read;
		*arg = rd;
		goto reported;
	}
	if (s->error) {
		*status = s->error;
	} else if (w->op != SIM_STORE_APPEND) {
		*status = w->status;
	} else if (!w->durable) {
#ifdef KEEL_MUTANTS
		/* ack-before-fsync: every other completion is reported
		 * without its sync, which the next one runs. */
		if (s->mutant == SIM_STORE_MUTANT_ACK_BEFORE_FSYNC &&
		    !s->sync_owed) {
			s->sync_owed = true;
		} else {
			s->sync_owed = false;
			*status = sync_all(s);
		}
#else
		*status = sync_all(s);
#endif
	}
	*cb = w->cb;
	*arg = w->arg;
reported:
	s->n_completed++;
	s->completed++;
	/* Forget the writes that are both reported and durable (or failed:
	 * those never become durable). */
	while (s->n_completed > 0) {
		struct sim_write *h = &s->pending[s->head];
		if (!h->durable && !s->error)
			break;
		free_write(s, h);
		s->head = (s->head + 1) % s->cap_pending;
		s->n_pending--;
		s->n_completed--;
	}
	return true;
}

bool sim_store_idle(const struct sim_store *s)
{
	return s->n_completed == s->n_pending;
}

bool sim_store_next_ready(const struct sim_store *s)
{
	if (s->n_completed == s->n_pending)
		return false;
	const struct sim_write *w =
		&s->pending[(s->head + s->n_completed) % s->cap_pending];
	return w->durable || s->error;
}

uint64_t sim_store_crash(struct sim_store *s, int mode)
{
	/* Open handles go first (memdisk_crash invalidates them); staged
	 * bytes never handed to the disk are simply gone. */
	close_wal(s);
	/* Recovery must give back the synced log up to the first index an
	 * unsynced write may have overwritten (a kept part of it is fine). */
	s->check_upto = s->base_index + s->n_log;
	if (s->unsynced_from)
		s->check_upto = KEEL_MIN(s->check_upto, s->unsynced_from - 1);
	s->unsynced_from = 0;
	drop_pending(s);
	memdisk_fail_clear(s->disk);
	s->error = 0;
	s->sync_owed = false;
	s->msg[0] = 0;
	return memdisk_crash(s->disk, mode);
}

int sim_store_recover(struct sim_store *s)
{
	KEEL_ASSERT(s->n_pending == 0);
	if (s->refused)
		return KEEL_ERR_CORRUPT;
	close_wal(s);
	s->error = 0;
	s->msg[0] = 0;
	int rv = wal_open(&s->wcfg, &s->wal, &s->rec, s->msg, sizeof(s->msg));
	if (rv) {
		s->wal = NULL;
		if (rv == KEEL_ERR_CORRUPT)
			s->refused = true;
		return rv;
	}
	s->have_rec = true;
	s->recoveries++;
	if (s->rec.torn_tail)
		s->torn_tails++;
	uint64_t rsi = s->rec.snap_index, rst = s->rec.snap_term;
	/* A durable snapshot must come back (an older one stands in only
	 * when rot hit the newer: disk-format.md, "Snapshots"). */
	if (rsi < s->snap_index && !s->snap_flipped && !s->synced_lost) {
		s->synced_lost = true;
		snprintf(s->lost_msg, sizeof(s->lost_msg),
			 "durable snapshot %llu (term %llu) lost after recovery "
			 "(snapshot %llu recovered)",
			 (unsigned long long)s->snap_index,
			 (unsigned long long)s->snap_term,
			 (unsigned long long)rsi);
	}
	/* Nothing synced may be missing or changed: the entries above the
	 * recovered snapshot one by one, the snapshot's own entry by term. */
	uint64_t top = s->base_index + s->n_log;
	uint64_t upto = KEEL_MIN(s->check_upto, top);
	if (rsi > s->base_index && rsi <= upto && !s->synced_lost &&
	    s->log[rsi - s->base_index - 1].term != rst) {
		s->synced_lost = true;
		snprintf(s->lost_msg, sizeof(s->lost_msg),
			 "synced entry %llu (term %llu) changed: the recovered "
			 "snapshot there has term %llu",
			 (unsigned long long)rsi,
			 (unsigned long long)s->log[rsi - s->base_index - 1].term,
			 (unsigned long long)rst);
	}
	uint64_t from = KEEL_MAX(s->base_index, rsi) + 1;
	for (uint64_t i = from; i <= upto && !s->synced_lost; i++) {
		const struct raft_entry *d = &s->log[i - s->base_index - 1];
		const struct raft_entry *r =
			i - rsi <= s->rec.n_entries ? &s->rec.entries[i - rsi - 1]
						    : NULL;
		if (!r || r->term != d->term || r->len != d->len ||
		    r->type != d->type ||
		    (d->len && memcmp(r->data, d->data, d->len))) {
			s->synced_lost = true;
			snprintf(s->lost_msg, sizeof(s->lost_msg),
				 "synced entry %llu (term %llu) %s after "
				 "recovery (%u entries recovered)",
				 (unsigned long long)i,
				 (unsigned long long)d->term,
				 r ? "changed" : "missing", s->rec.n_entries);
		}
	}
	s->check_upto = UINT64_MAX;
	/* The shadow becomes exactly what recovery found. It keeps its
	 * prefix up to the recovered snapshot when it holds that snapshot's
	 * entry (log matching: the same prefix, all committed), so durable
	 * copies of old entries stay countable; otherwise it restarts at the
	 * snapshot. */
	s->hs = s->rec.hs;
	bool holds = rsi > s->base_index && rsi <= top &&
		     s->log[rsi - s->base_index - 1].term == rst;
	if (holds || (rsi == s->base_index && rst == s->base_term))
		durable_truncate(s, rsi + 1);
	else
		rebase_log(s, rsi, rst);
	s->snap_index = rsi;
	s->snap_term = rst;
	s->snap_flipped = false;
	for (uint32_t i = 0; i < s->rec.n_entries; i++) {
		struct raft_entry e = s->rec.entries[i];
		KEEL_ASSERT(e.index == rsi + 1 + i);
		uint8_t *d = NULL;
		if (e.len) {
			d = s->alloc->malloc(s->alloc->ctx, e.len);
			KEEL_ASSERT(d != NULL);
			memcpy(d, e.data, e.len);
		}
		e.data = d;
		rv = durable_append(s, &e);
		KEEL_ASSERT(rv == 0);
	}
	return 0;
}

/* ---- bit flips at rest --------------------------------------------------- */

struct seg_names {
	char v[64][32];
	uint32_t n;
};

static int collect_seg(void *arg, const char *name)
{
	struct seg_names *l = arg;
	if (strlen(name) != 20 || strcmp(name + 16, ".wal") || l->n >= 64)
		return 0;
	memcpy(l->v[l->n++], name, 21);
	return 0;
}

/* Walks one segment's records by their length fields; cb(ctx, off, len)
 * for each (checksums are the WAL's business, not the injector's). */
static void walk_records(const uint8_t *buf, uint64_t size,
			 void (*cb)(void *ctx, uint64_t off, uint64_t bytes),
			 void *ctx)
{
	uint64_t off = WAL_SEGMENT_HEADER;
	while (off + WAL_RECORD_HEADER <= size) {
		uint32_t crc = keel_get_u32(buf + off);
		uint32_t len = keel_get_u32(buf + off + 4);
		if (crc == 0 && len == 0)
			break;
		uint64_t total = WAL_RECORD_HEADER + ((len + 7ull) & ~7ull);
		if (off + total > size)
			break;
		/* The bytes the checksum covers: header and payload. */
		cb(ctx, off, WAL_RECORD_HEADER + (uint64_t)len);
		off += total;
	}
}

struct flip_pick {
	uint64_t n_records; /* counting pass */
	uint64_t target;    /* choosing pass: the record wanted */
	uint64_t seen;
	uint64_t off, bytes;
	bool found;
};

static void count_rec(void *ctx, uint64_t off, uint64_t bytes)
{
	struct flip_pick *p = ctx;
	(void)off;
	(void)bytes;
	p->n_records++;
}

static void pick_rec(void *ctx, uint64_t off, uint64_t bytes)
{
	struct flip_pick *p = ctx;
	if (p->seen++ == p->target) {
		p->off = off;
		p->bytes = bytes;
		p->found = true;
	}
}

static int read_whole(struct sim_store *s, const char *path, uint8_t **out,
		      uint64_t *size)
{
	struct keel_disk d = memdisk_disk(s->disk);
	struct keel_file *f;
	int rv = d.ops->open(d.ctx, path, 0, &f);
	if (rv)
		return rv;
	rv = d.ops->size(d.ctx, f, size);
	uint8_t *buf = NULL;
	if (!rv && *size > (64ull << 20))
		rv = KEEL_ERR_TOO_BIG;
	if (!rv) {
		buf = s->alloc->malloc(s->alloc->ctx, *size ? (size_t)*size : 1);
		rv = buf ? 0 : KEEL_ERR_NOMEM;
	}
	size_t got = 0;
	if (!rv && *size)
		rv = d.ops->pread(d.ctx, f, buf, (size_t)*size, 0, &got);
	d.ops->close(d.ctx, f);
	if (rv) {
		s->alloc->free(s->alloc->ctx, buf);
		return rv;
	}
	*out = buf;
	return 0;
}

int sim_store_flip(struct sim_store *s, struct keel_rand *rand, char *what,
		   size_t what_len)
{
	KEEL_ASSERT(s->wal == NULL); /* at rest: between crash and recovery */
	struct seg_names l = {.n = 0};
	struct keel_disk d = memdisk_disk(s->disk);
	if (d.ops->list(d.ctx, "wal", collect_seg, &l))
		return KEEL_ERR_NOT_FOUND;
	/* Names are 16 hex digits: byte order is sequence order. */
	for (uint32_t i = 1; i < l.n; i++)
		for (uint32_t j = i; j > 0 && strcmp(l.v[j - 1], l.v[j]) > 0; j--) {
			char t[32];
			memcpy(t, l.v[j], 32);
			memcpy(l.v[j], l.v[j - 1], 32);
			memcpy(l.v[j - 1], t, 32);
		}
	/* Count every record; the very last one of the log is not a
	 * candidate (the safe rule, docs/testing.md: rot there cannot be
	 * told from a torn write). */
	uint64_t per[64] = {0}, total = 0;
	for (uint32_t i = 0; i < l.n; i++) {
		char path[64];
		snprintf(path, sizeof(path), "wal/%s", l.v[i]);
		uint8_t *buf;
		uint64_t size;
		if (read_whole(s, path, &buf, &size))
			continue;
		struct flip_pick p = {0};
		walk_records(buf, size, count_rec, &p);
		s->alloc->free(s->alloc->ctx, buf);
		per[i] = p.n_records;
		total += p.n_records;
	}
	if (total < 2)
		return KEEL_ERR_NOT_FOUND;
	uint64_t target = keel_rand_below(rand, total - 1);
	for (uint32_t i = 0; i < l.n; i++) {
		if (target >= per[i]) {
			target -= per[i];
			continue;
		}
		char path[64];
		snprintf(path, sizeof(path), "wal/%s", l.v[i]);
		uint8_t *buf;
		uint64_t size;
		if (read_whole(s, path, &buf, &size))
			return KEEL_ERR_NOT_FOUND;
		struct flip_pick p = {.target = target};
		walk_records(buf, size, pick_rec, &p);
		s->alloc->free(s->alloc->ctx, buf);
		KEEL_ASSERT(p.found);
		uint64_t bit = p.off * 8 + keel_rand_below(rand, p.bytes * 8);
		int rv = memdisk_flip_bit(s->disk, path, bit);
		KEEL_ASSERT(rv == 0);
		if (what_len)
			snprintf(what, what_len, "%s byte %llu bit %llu (record at %llu)",
				 path, (unsigned long long)(bit / 8),
				 (unsigned long long)(bit % 8),
				 (unsigned long long)p.off);
		s->bitflips++;
		return 0;
	}
	return KEEL_ERR_NOT_FOUND;
}

/* ---- views ---------------------------------------------------------------- */

uint64_t sim_store_unsynced_records(const struct sim_store *s)
{
	uint64_t total = 0;
	for (uint32_t i = 0; i < s->n_pending; i++) {
		const struct sim_write *w =
			&s->pending[(s->head + i) % s->cap_pending];
		if (!w->durable)
			total += w->n_entries + (w->has_hard_state ? 1 : 0);
	}
	return total;
}

uint64_t sim_store_durable_term(const struct sim_store *s, uint64_t index)
{
	if (index && index == s->base_index)
		return s->base_term;
	if (index <= s->base_index || index > s->base_index + s->n_log)
		return 0;
	return s->log[index - s->base_index - 1].term;
}

const struct raft_entry *sim_store_durable_entry(const struct sim_store *s,
						 uint64_t index)
{
	if (index <= s->base_index || index > s->base_index + s->n_log)
		return NULL;
	return &s->log[index - s->base_index - 1];
}

uint64_t sim_store_durable_snap(const struct sim_store *s)
{
	return s->snap_index;
}

int sim_store_load(const struct sim_store *s, struct env_store_state *out)
{
	if (!s->wal || !s->have_rec)
		return KEEL_ERR_IO;
	out->hard_state = s->rec.hs;
	out->n_entries = s->rec.n_entries;
	out->entries = s->rec.entries;
	out->snap_index = s->rec.snap_index;
	out->snap_term = s->rec.snap_term;
	out->snap_len = s->rec.snap_len;
	out->snap_crc = s->rec.snap_crc;
	return 0;
}

/* ---- streamed snapshots ---------------------------------------------------- */

static_assert(ENV_SNAP_LOCAL == WAL_SNAP_LOCAL, "snapshot kinds agree");
static_assert(ENV_SNAP_RECEIVED == WAL_SNAP_RECEIVED, "snapshot kinds agree");
static_assert(ENV_SNAP_READ_MAX == WAL_SNAP_READ_MAX, "read caps agree");

/* Records the first error that poisons the WAL as the store's. */
static void note_error(struct sim_store *s, int rv)
{
	if (!rv || s->error || !wal_poisoned(s->wal))
		return;
	s->error = wal_poisoned(s->wal);
	snprintf(s->msg, sizeof(s->msg), "%s", wal_errmsg(s->wal));
}

/* Queues a snapshot operation that already ran on the WAL (room was
 * reserved before it ran, so an operation is never run and then lost). */
static void queue_done(struct sim_store *s, struct sim_write nw)
{
	KEEL_ASSERT(s->n_pending < s->cap_pending);
	nw.durable = true; /* needs no sync at completion */
	s->pending[(s->head + s->n_pending) % s->cap_pending] = nw;
	s->n_pending++;
	s->submitted++;
}

static struct sim_snap_open *open_find(struct sim_store *s, uint64_t handle)
{
	for (int i = 0; i < 2; i++)
		if (handle && s->snap_open[i].handle == handle)
			return &s->snap_open[i];
	return NULL;
}

int sim_store_snap_begin(struct sim_store *s, const struct env_store_snap *sn,
			 uint64_t *handle)
{
	*handle = 0;
	if (!s->wal)
		return KEEL_ERR_IO;
	if (s->error)
		return s->error;
	int rv = wal_snapshot_begin(s->wal, sn->index, sn->term, sn->total_len,
				    sn->kind, handle);
	note_error(s, rv);
	if (rv)
		return rv;
	struct sim_snap_open *o = NULL;
	for (int i = 0; i < 2 && !o; i++)
		if (!s->snap_open[i].handle)
			o = &s->snap_open[i];
	KEEL_ASSERT(o != NULL); /* the WAL allows one of each kind */
	*o = (struct sim_snap_open){.handle = *handle,
				    .index = sn->index,
				    .term = sn->term,
				    .kind = sn->kind};
	return 0;
}

int sim_store_snap_write(struct sim_store *s, uint64_t handle, uint64_t offset,
			 const uint8_t *data, size_t len, env_store_cb cb,
			 void *arg)
{
	if (!s->wal)
		return KEEL_ERR_IO;
	if (len > ENV_SNAP_QUEUE_MAX ||
	    s->queued_write_bytes > ENV_SNAP_QUEUE_MAX - len)
		return KEEL_ERR_BUSY;
	int rv = ring_reserve(s);
	if (rv)
		return rv;
	/* Written at once, unsynced: a crash may keep, lose or tear it. */
	rv = s->error ? s->error
		      : wal_snapshot_write(s->wal, handle, offset, data, len);
	note_error(s, rv);
	s->queued_write_bytes += len;
	queue_done(s, (struct sim_write){.op = SIM_STORE_SNAP_WRITE,
					 .status = rv,
					 .queued = len,
					 .cb = cb,
					 .arg = arg});
	return 0;
}

int sim_store_snap_finish(struct sim_store *s, uint64_t handle, uint32_t crc,
			  env_store_cb cb, void *arg)
{
	if (!s->wal)
		return KEEL_ERR_IO;
	int rv = ring_reserve(s);
	if (rv)
		return rv;
	struct sim_snap_open *o = open_find(s, handle);
	struct sim_snap_open sn = o ? *o : (struct sim_snap_open){0};
	if (o)
		memset(o, 0, sizeof(*o));
	rv = s->error ? s->error : wal_snapshot_finish(s->wal, handle, crc);
	note_error(s, rv);
	if (!rv) {
		KEEL_ASSERT(sn.handle != 0);
		if (sn.kind == ENV_SNAP_RECEIVED) {
			/* The reset record's sync covered every write staged
			 * before it; then the log restarts at the snapshot. */
			s->syncs++;
			s->unsynced_from = 0;
			for (uint32_t i = 0; i < s->n_pending; i++) {
				struct sim_write *w =
					&s->pending[(s->head + i) %
						    s->cap_pending];
				if (!w->durable)
					shadow_apply(s, w);
			}
			rebase_log(s, sn.index, sn.term);
		}
		s->snap_index = sn.index;
		s->snap_term = sn.term;
	}
	queue_done(s, (struct sim_write){.op = SIM_STORE_SNAP_FINISH,
					 .status = rv,
					 .cb = cb,
					 .arg = arg});
	return 0;
}

void sim_store_snap_abort(struct sim_store *s, uint64_t handle)
{
	struct sim_snap_open *o = open_find(s, handle);
	if (o)
		memset(o, 0, sizeof(*o));
	if (s->wal)
		wal_snapshot_abort(s->wal, handle);
}

int sim_store_snap_read(struct sim_store *s, uint64_t index, uint64_t term,
			uint64_t offset, size_t len, env_store_read_cb cb,
			void *arg)
{
	if (!s->wal)
		return KEEL_ERR_IO;
	if (len > ENV_SNAP_READ_MAX)
		return KEEL_ERR_INVAL;
	if (s->queued_read_bytes > ENV_SNAP_QUEUE_MAX - len)
		return KEEL_ERR_BUSY;
	int rv = ring_reserve(s);
	if (rv)
		return rv;
	uint8_t *buf = s->alloc->malloc(s->alloc->ctx, len ? len : 1);
	if (!buf)
		return KEEL_ERR_NOMEM;
	/* Read now: every earlier operation already ran on the WAL, so this
	 * sees the disk as issue order says it is. */
	rv = wal_snapshot_read(s->wal, index, term, offset, buf, len);
	if (rv) {
		s->alloc->free(s->alloc->ctx, buf);
		buf = NULL;
	}
	s->queued_read_bytes += len;
	queue_done(s, (struct sim_write){.op = SIM_STORE_SNAP_READ,
					 .status = rv,
					 .queued = len,
					 .rbuf = buf,
					 .rlen = rv ? 0 : len,
					 .rcb = cb,
					 .arg = arg});
	return 0;
}

/* ---- bit flips in snapshot files --------------------------------------------- */

struct snap_names {
	char v[16][40];
	uint32_t n;
};

static int collect_snap(void *arg, const char *name)
{
	struct snap_names *l = arg;
	size_t n = strlen(name);
	if (n != 38 || strcmp(name + 33, ".snap") || l->n >= 16)
		return 0;
	memcpy(l->v[l->n++], name, n + 1);
	return 0;
}

/* True when a snapshot file's header and payload CRCs verify. */
static bool snap_file_ok(const uint8_t *b, uint64_t size)
{
	if (size < 64 || memcmp(b, "KEELSNP\0", 8) ||
	    keel_get_u32(b + 60) != keel_crc32c(0, b, 60))
		return false;
	return keel_get_u64(b + 40) == size - 64 &&
	       keel_get_u32(b + 48) == keel_crc32c(0, b + 64, size - 64);
}

int sim_store_flip_snapshot(struct sim_store *s, struct keel_rand *rand,
			    char *what, size_t what_len)
{
	KEEL_ASSERT(s->wal == NULL); /* at rest */
	struct snap_names l = {.n = 0};
	struct keel_disk d = memdisk_disk(s->disk);
	if (d.ops->list(d.ctx, "snap", collect_snap, &l) || l.n < 2)
		return KEEL_ERR_NOT_FOUND;
	/* Hex names: byte order is (index, term) order; newest first. */
	for (uint32_t i = 1; i < l.n; i++)
		for (uint32_t j = i; j > 0 && strcmp(l.v[j - 1], l.v[j]) < 0; j--) {
			char t[40];
			memcpy(t, l.v[j], 40);
			memcpy(l.v[j], l.v[j - 1], 40);
			memcpy(l.v[j - 1], t, 40);
		}
	/* Only the newest file, and only when the next one verifies too:
	 * the two-kept rule then guarantees the log reaches back past it,
	 * so the node restarts from the older one instead of refusing. */
	uint8_t *buf[2] = {NULL, NULL};
	uint64_t size[2] = {0, 0};
	bool ok = true;
	for (int k = 0; k < 2 && ok; k++) {
		char path[64];
		snprintf(path, sizeof(path), "snap/%s", l.v[k]);
		ok = read_whole(s, path, &buf[k], &size[k]) == 0 &&
		     snap_file_ok(buf[k], size[k]);
	}
	for (int k = 0; k < 2; k++)
		s->alloc->free(s->alloc->ctx, buf[k]);
	if (!ok)
		return KEEL_ERR_NOT_FOUND;
	char path[64];
	snprintf(path, sizeof(path), "snap/%s", l.v[0]);
	uint64_t bit = keel_rand_below(rand, size[0] * 8);
	int rv = memdisk_flip_bit(s->disk, path, bit);
	KEEL_ASSERT(rv == 0);
	if (what_len)
		snprintf(what, what_len, "%s byte %llu bit %llu", path,
			 (unsigned long long)(bit / 8),
			 (unsigned long long)(bit % 8));
	s->snap_flipped = true;
	s->bitflips++;
	return 0;
}
