/*
 * test_wal.c -- the WAL against its contract (docs/disk-format.md) on the
 * in-memory disk that loses and tears unsynced writes:
 *  - at every sync boundary of a workload (appends, overwrites, hard state
 *    changes, segment rollovers), a crash keeps exactly what was synced
 *    (plus, when the crash keeps some unsynced bytes, only whole records
 *    that continue the log -- never a torn one);
 *  - a bad record followed by good data is corruption, named by file and
 *    byte offset; a bad final record is a torn tail, cut with a warning;
 *  - I/O errors poison the WAL; hard-state slots survive a torn write;
 *  - snapshots compact the log and recovery refuses a gap.
 */
#include "test.h"

#include "keel/memdisk.h"
#include "keel/wal.h"
#include "sim/sim_internal.h"

#define SEG_BYTES 4096

/* A model of the log: what a correct WAL must give back. */
struct model {
	uint64_t n;
	uint64_t term[4096];
	uint8_t data[4096][24];
	uint32_t len[4096];
};

static void model_apply(struct model *m, const struct raft_entry *e,
			uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		uint64_t idx = e[i].index;
		KEEL_ASSERT(idx >= 1 && idx <= m->n + 1 && idx < 4096);
		m->n = idx;
		m->term[idx] = e[i].term;
		m->len[idx] = e[i].len;
		if (e[i].len)
			memcpy(m->data[idx], e[i].data, e[i].len);
	}
}

/* Whether e is the model's entry at e's index (term, length and bytes). */
static bool model_has(const struct model *m, const struct raft_entry *e)
{
	uint64_t idx = e->index;
	return idx <= m->n && e->term == m->term[idx] && e->len == m->len[idx] &&
	       (!e->len || !memcmp(e->data, m->data[idx], e->len));
}

static struct wal *open_wal(struct memdisk *d, struct wal_recovered *rec,
			    int *err_out, char *err, size_t err_len)
{
	struct wal_config cfg = {.disk = memdisk_disk(d),
				 .cluster_id = 77,
				 .segment_bytes = SEG_BYTES};
	struct wal *w = NULL;
	int rv = wal_open(&cfg, &w, rec, err, err_len);
	if (err_out)
		*err_out = rv;
	return rv ? NULL : w;
}

/* A new WAL on an empty disk (its recovery is empty and dropped). */
static struct wal *empty_wal(struct memdisk *d)
{
	struct wal_recovered rec;
	char err[256];
	struct wal *w = open_wal(d, &rec, NULL, err, sizeof(err));
	KEEL_ASSERT(w);
	wal_recovered_free(w, &rec);
	return w;
}

/* Compares recovered entries with a model; returns true when equal. */
static bool same_log(const struct wal_recovered *rec, const struct model *m,
		     uint64_t upto)
{
	if (rec->n_entries != upto - rec->snap_index)
		return false;
	for (uint32_t i = 0; i < rec->n_entries; i++) {
		const struct raft_entry *e = &rec->entries[i];
		if (e->index != rec->snap_index + 1 + i || !model_has(m, e))
			return false;
	}
	return true;
}

/* One step of the deterministic workload: a batch of entries, sometimes
 * overwriting a suffix with a newer term, sometimes a hard state change. */
struct workload {
	struct keel_rand rand;
	uint64_t last, term;
	struct raft_entry ents[8];
	uint8_t bytes[8][24];
};

static uint32_t next_batch(struct workload *wl)
{
	uint64_t start = wl->last + 1;
	if (wl->last > 3 && keel_rand_chance(&wl->rand, 1, 5)) {
		/* A new leader overwrites the last few entries. */
		start = wl->last - keel_rand_below(&wl->rand, 3);
		wl->term++;
	}
	uint32_t n = 1 + (uint32_t)keel_rand_below(&wl->rand, 6);
	for (uint32_t i = 0; i < n; i++) {
		uint32_t len = (uint32_t)keel_rand_below(&wl->rand, 24);
		for (uint32_t k = 0; k < len; k++)
			wl->bytes[i][k] = (uint8_t)keel_rand_next(&wl->rand);
		wl->ents[i] = (struct raft_entry){.term = wl->term,
						  .index = start + i,
						  .type = RAFT_ENTRY_NORMAL,
						  .len = len,
						  .data = wl->bytes[i]};
	}
	wl->last = start + n - 1;
	return n;
}

/* Runs the workload for `syncs` sync points, then stages one more batch
 * without syncing, crashes in `mode`, recovers and checks. */
static bool crash_at(uint64_t seed, int syncs, int mode, uint64_t *records)
{
	struct memdisk *d = memdisk_create(NULL, seed);
	struct wal_recovered rec;
	char err[256];
	struct wal *w = empty_wal(d);
	static struct model synced, staged;
	memset(&synced, 0, sizeof(synced));
	memset(&staged, 0, sizeof(staged));
	struct workload wl = {.term = 1};
	keel_rand_seed(&wl.rand, seed);
	struct raft_hard_state hs = {0}, hs_synced = {0};
	for (int s = 0; s < syncs; s++) {
		int batches = 1 + (int)keel_rand_below(&wl.rand, 3);
		for (int b = 0; b < batches; b++) {
			uint32_t n = next_batch(&wl);
			KEEL_ASSERT(wal_append(w, wl.ents, n) == 0);
			model_apply(&staged, wl.ents, n);
		}
		hs.term = wl.term;
		hs.vote = (uint64_t)(s % 3) + 1;
		hs.commit = wl.last / 2;
		KEEL_ASSERT(wal_save_hard_state(w, &hs) == 0);
		KEEL_ASSERT(wal_sync(w) == 0);
		synced = staged;
		hs_synced = hs;
	}
	/* (Unsynced writes that reach the disk are torn_unsynced_writes';
	 * here the crash comes right at the sync boundary.) */
	wal_close(w);
	memdisk_crash(d, mode);
	int rv;
	w = open_wal(d, &rec, &rv, err, sizeof(err));
	bool ok = w != NULL;
	if (!ok) {
		fprintf(stderr, "  seed %" PRIu64 " syncs %d mode %d: open: %s\n",
			seed, syncs, mode, err);
	} else {
		*records += rec.n_entries;
		/* Exactly the synced log: the staged batch never reached
		 * the disk (it was only buffered), whatever the mode. */
		ok = same_log(&rec, &synced, synced.n);
		if (!ok)
			fprintf(stderr,
				"  seed %" PRIu64 " syncs %d mode %d: recovered %u entries, synced %" PRIu64 "\n",
				seed, syncs, mode, rec.n_entries, synced.n);
		if (rec.hs.term != hs_synced.term ||
		    rec.hs.vote != hs_synced.vote) {
			fprintf(stderr, "  hard state lost\n");
			ok = false;
		}
		wal_recovered_free(w, &rec);
		wal_close(w);
	}
	memdisk_destroy(d);
	return ok;
}

TEST(crash_at_every_sync_boundary_keeps_exactly_the_synced_log)
{
	uint64_t seed = test_seed(11);
	uint64_t records = 0;
	int bad = 0;
	for (int syncs = 0; syncs <= 40; syncs++)
		for (int mode = 0; mode < 3; mode++)
			for (uint64_t k = 0; k < 3; k++)
				if (!crash_at(seed + k, syncs, mode, &records))
					bad++;
	fprintf(stderr, "  %" PRIu64 " records recovered in total\n", records);
	EXPECT(bad == 0);
	EXPECT(records > 1000); /* the workload must cross segment rollovers */
}

/* Writes reach the disk unsynced and then a crash tears them: the WAL
 * must recover the synced prefix plus only whole, valid records. */
TEST(torn_unsynced_writes_never_surface_a_torn_record)
{
	uint64_t seed = test_seed(21);
	int bad = 0, torn_seen = 0;
	for (uint64_t k = 0; k < 300; k++) {
		struct memdisk *d = memdisk_create(NULL, seed + k);
		struct wal_recovered rec;
		char err[256];
		struct wal *w = empty_wal(d);
		static struct model synced, written;
		memset(&synced, 0, sizeof(synced));
		memset(&written, 0, sizeof(written));
		struct workload wl = {.term = 1};
		keel_rand_seed(&wl.rand, seed + k);
		int syncs = (int)keel_rand_below(&wl.rand, 10);
		for (int s = 0; s < syncs; s++) {
			uint32_t n = next_batch(&wl);
			ASSERT(wal_append(w, wl.ents, n) == 0);
			model_apply(&written, wl.ents, n);
			ASSERT(wal_sync(w) == 0);
			synced = written;
		}
		/* A batch written to the file but not synced: make the WAL
		 * write it by failing the sync (the bytes were pwritten). */
		uint32_t n = next_batch(&wl);
		ASSERT(wal_append(w, wl.ents, n) == 0);
		model_apply(&written, wl.ents, n);
		memdisk_fail(d, MEMDISK_OP_SYNC, 0, KEEL_ERR_IO, true);
		EXPECT(wal_sync(w) == KEEL_ERR_IO);
		EXPECT(wal_poisoned(w) == KEEL_ERR_IO);
		wal_close(w);
		memdisk_crash(d, MEMDISK_TORN);
		memdisk_fail_clear(d); /* the machine comes back healthy */
		int rv;
		w = open_wal(d, &rec, &rv, err, sizeof(err));
		if (!w) {
			fprintf(stderr, "  seed %" PRIu64 ": %s\n", seed + k, err);
			bad++;
			memdisk_destroy(d);
			continue;
		}
		if (rec.torn_tail)
			torn_seen++;
		/* Every recovered entry must equal the written model, and
		 * the synced prefix must be complete. An overwrite in the
		 * unsynced batch may have landed or not. */
		bool ok = rec.n_entries >= 1 || synced.n == 0;
		uint64_t upto = rec.snap_index + rec.n_entries;
		for (uint32_t i = 0; ok && i < rec.n_entries; i++) {
			const struct raft_entry *e = &rec.entries[i];
			ok = model_has(&written, e) || model_has(&synced, e);
		}
		/* Nothing synced may be missing unless overwritten by a
		 * newer (written) entry. */
		if (ok && upto < synced.n && upto < wl.ents[0].index - 1)
			ok = false;
		if (!ok) {
			fprintf(stderr, "  seed %" PRIu64 ": bad recovery (%u entries)\n",
				seed + k, rec.n_entries);
			bad++;
		}
		wal_recovered_free(w, &rec);
		wal_close(w);
		memdisk_destroy(d);
	}
	fprintf(stderr, "  torn tails cut: %d of 300\n", torn_seen);
	EXPECT(bad == 0);
	EXPECT(torn_seen > 10);
}

static struct wal *fresh_with_entries(struct memdisk *d, int batches,
				      struct model *m)
{
	struct wal *w = empty_wal(d);
	struct workload wl = {.term = 1};
	keel_rand_seed(&wl.rand, 99);
	for (int b = 0; b < batches; b++) {
		uint32_t n = next_batch(&wl);
		KEEL_ASSERT(wal_append(w, wl.ents, n) == 0);
		if (m)
			model_apply(m, wl.ents, n);
		KEEL_ASSERT(wal_sync(w) == 0);
	}
	return w;
}

TEST(corruption_in_the_middle_is_refused_with_file_and_offset)
{
	struct memdisk *d = memdisk_create(NULL, 1);
	struct wal *w = fresh_with_entries(d, 5, NULL);
	wal_close(w);
	/* Flip a bit in the first record's term field. */
	ASSERT(memdisk_flip_bit(d, "wal/0000000000000001.wal",
				(64 + 20) * 8 + 3) == 0);
	struct wal_recovered rec;
	char err[256];
	int rv;
	w = open_wal(d, &rec, &rv, err, sizeof(err));
	EXPECT(w == NULL);
	EXPECT(rv == KEEL_ERR_CORRUPT);
	EXPECT(strstr(err, "wal/0000000000000001.wal") != NULL);
	EXPECT(strstr(err, "at byte 64") != NULL);
	fprintf(stderr, "  refused: %s\n", err);
	memdisk_destroy(d);
}

/* Walks a segment's records by their length fields (test helper). */
static uint64_t last_record_offset(struct memdisk *d, const char *path)
{
	struct keel_disk disk = memdisk_disk(d);
	struct keel_file *f;
	KEEL_ASSERT(disk.ops->open(disk.ctx, path, 0, &f) == 0);
	uint64_t off = 64, last = 0;
	for (;;) {
		uint8_t h[8];
		size_t got;
		KEEL_ASSERT(disk.ops->pread(disk.ctx, f, h, 8, off, &got) == 0);
		if (got < 8 || (keel_get_u32(h) == 0 && keel_get_u32(h + 4) == 0))
			break;
		last = off;
		off += 32 + ((keel_get_u32(h + 4) + 7) & ~7u);
	}
	disk.ops->close(disk.ctx, f);
	return last;
}

TEST(bad_final_record_is_a_torn_tail)
{
	struct memdisk *d = memdisk_create(NULL, 1);
	struct wal_recovered rec;
	char err[256];
	struct wal *w = empty_wal(d);
	uint8_t x[5] = {1, 2, 3, 4, 5};
	uint64_t n = 12;
	for (uint64_t i = 1; i <= n; i++) {
		struct raft_entry e = {.term = 1, .index = i, .len = 5, .data = x};
		ASSERT(wal_append(w, &e, 1) == 0);
		if (i % 4 == 0)
			ASSERT(wal_sync(w) == 0);
	}
	wal_close(w);
	uint64_t off = last_record_offset(d, "wal/0000000000000001.wal");
	ASSERT(memdisk_flip_bit(d, "wal/0000000000000001.wal", (off + 20) * 8) == 0);
	w = open_wal(d, &rec, NULL, err, sizeof(err));
	ASSERT(w);
	EXPECT(rec.torn_tail);
	EXPECT(rec.n_warnings == 1);
	EXPECT_EQ_U64(rec.n_entries, n - 1);
	fprintf(stderr, "  warning: %s\n", rec.warning[0]);
	wal_recovered_free(w, &rec);
	/* Appends continue where the tail was cut; a reopen is clean. */
	struct raft_entry e = {.term = 1, .index = n, .len = 1, .data = x};
	EXPECT(wal_append(w, &e, 1) == 0);
	EXPECT(wal_sync(w) == 0);
	wal_close(w);
	w = open_wal(d, &rec, NULL, err, sizeof(err));
	ASSERT(w);
	EXPECT(!rec.torn_tail);
	EXPECT_EQ_U64(rec.n_entries, n);
	wal_recovered_free(w, &rec);
	wal_close(w);
	memdisk_destroy(d);
}

/* Offset of the k-th record (0-based) of a segment, walking the lengths. */
static uint64_t record_offset(struct memdisk *d, const char *path, int k)
{
	struct keel_disk disk = memdisk_disk(d);
	struct keel_file *f;
	KEEL_ASSERT(disk.ops->open(disk.ctx, path, 0, &f) == 0);
	uint64_t off = 64;
	for (int i = 0; i < k; i++) {
		uint8_t h[8];
		size_t got;
		KEEL_ASSERT(disk.ops->pread(disk.ctx, f, h, 8, off, &got) == 0);
		KEEL_ASSERT(got == 8 && keel_get_u32(h + 4) < 4096);
		off += 32 + ((keel_get_u32(h + 4) + 7) & ~7u);
	}
	disk.ops->close(disk.ctx, f);
	return off;
}

TEST(flipped_length_reaching_over_good_records_is_corruption)
{
	/* Rot in the length field of the next-to-last record makes it claim
	 * the last record as its payload and end in the zeros behind it: a
	 * "bad record followed only by zeros". Cutting it as a torn tail
	 * would silently drop two synced records; a valid record inside the
	 * claimed extent proves it is not torn. */
	struct memdisk *d = memdisk_create(NULL, 1);
	struct wal_recovered rec;
	char err[256];
	struct wal *w = empty_wal(d);
	uint8_t x[5] = {1, 2, 3, 4, 5};
	for (uint64_t i = 1; i <= 6; i++) {
		struct raft_entry e = {.term = 1, .index = i, .len = 5, .data = x};
		ASSERT(wal_append(w, &e, 1) == 0);
	}
	ASSERT(wal_sync(w) == 0);
	wal_close(w);
	const char *path = "wal/0000000000000001.wal";
	uint64_t off = record_offset(d, path, 4);
	/* Length 5 -> 5 + 512: well inside the 4 KiB segment. */
	ASSERT(memdisk_flip_bit(d, path, (off + 5) * 8 + 1) == 0);
	int rv;
	w = open_wal(d, &rec, &rv, err, sizeof(err));
	if (w) {
		fprintf(stderr, "  recovered %u entries, torn=%d\n",
			rec.n_entries, rec.torn_tail);
		wal_recovered_free(w, &rec);
		wal_close(w);
	}
	EXPECT(w == NULL);
	EXPECT(rv == KEEL_ERR_CORRUPT);
	EXPECT(strstr(err, path) != NULL);
	fprintf(stderr, "  refused: %s\n", err);
	memdisk_destroy(d);
}

TEST(flush_is_not_durable_and_the_next_sync_makes_it_so)
{
	for (int synced = 0; synced < 2; synced++) {
		struct memdisk *d = memdisk_create(NULL, 1);
		struct wal_recovered rec;
		char err[256];
		struct wal *w = empty_wal(d);
		uint8_t x[3] = {7, 8, 9};
		struct raft_entry e = {.term = 1, .index = 1, .len = 3, .data = x};
		ASSERT(wal_append(w, &e, 1) == 0);
		ASSERT(wal_flush(w) == 0);
		EXPECT(memdisk_file_size(d, "wal/0000000000000001.wal") > 0);
		/* The flushed bytes wait in the page cache; only a sync
		 * (which must see them though nothing is staged any more)
		 * makes them durable. */
		if (synced)
			ASSERT(wal_sync(w) == 0);
		wal_close(w);
		memdisk_crash(d, MEMDISK_LOSE_UNSYNCED);
		w = open_wal(d, &rec, NULL, err, sizeof(err));
		ASSERT(w);
		EXPECT_EQ_U64(rec.n_entries, synced ? 1 : 0);
		wal_recovered_free(w, &rec);
		wal_close(w);
		memdisk_destroy(d);
	}
}

TEST(recovery_makes_what_it_returns_durable)
{
	/* A process crash without power loss: the restarted WAL sees the
	 * page cache -- unsynced bytes, and a segment whose name was never
	 * made durable. What recovery returns, the node treats as durable
	 * at once (it may vote and acknowledge on it), so a power loss
	 * right after must not take it away. */
	for (int k = 0; k < 2; k++) {
		struct memdisk *d = memdisk_create(NULL, 3);
		struct wal_recovered rec;
		char err[256];
		struct wal *w = empty_wal(d);
		uint8_t x[3] = {1, 2, 3};
		struct raft_entry e = {.term = 1, .index = 1, .len = 3, .data = x};
		if (k == 0) {
			/* Unsynced bytes in the page cache. */
			ASSERT(wal_append(w, &e, 1) == 0);
			ASSERT(wal_flush(w) == 0);
		}
		wal_close(w); /* the process dies; the page cache stays */
		w = open_wal(d, &rec, NULL, err, sizeof(err));
		ASSERT(w);
		EXPECT_EQ_U64(rec.n_entries, k == 0 ? 1 : 0);
		wal_recovered_free(w, &rec);
		if (k == 1) {
			/* The segment created by the first run, never synced,
			 * now takes a synced append. */
			ASSERT(wal_append(w, &e, 1) == 0);
			ASSERT(wal_sync(w) == 0);
		}
		wal_close(w);
		memdisk_crash(d, MEMDISK_LOSE_UNSYNCED);
		w = open_wal(d, &rec, NULL, err, sizeof(err));
		ASSERT(w);
		EXPECT_EQ_U64(rec.n_entries, 1);
		wal_recovered_free(w, &rec);
		wal_close(w);
		memdisk_destroy(d);
	}
}

/* Appends entry `index` (term 1, a payload derived from the index). */
static int append_numbered(struct wal *w, uint64_t index)
{
	uint8_t x[100];
	for (size_t k = 0; k < sizeof(x); k++)
		x[k] = (uint8_t)(index * 31 + k);
	struct raft_entry e = {.term = 1, .index = index,
			       .type = RAFT_ENTRY_NORMAL, .len = sizeof(x),
			       .data = x};
	return wal_append(w, &e, 1);
}

static bool numbered_log(const struct wal_recovered *rec, uint64_t first,
			 uint64_t last)
{
	if (rec->n_entries != last - first + 1)
		return false;
	for (uint32_t i = 0; i < rec->n_entries; i++) {
		const struct raft_entry *e = &rec->entries[i];
		if (e->index != first + i || e->term != 1 || e->len != 100 ||
		    e->data[7] != (uint8_t)(e->index * 31 + 7))
			return false;
	}
	return true;
}

TEST(appends_after_removing_a_headerless_last_segment_go_to_the_previous_end)
{
	/* The simulator's seeds 84 and 281: a rollover creates segment 3
	 * (header written, not synced), a snapshot's compaction syncs wal/
	 * and so makes the name durable, power is lost. Recovery rightly
	 * removes the empty segment 3 -- and then must append at the end of
	 * segment 2's data. It appended at offset 0 (the removed segment's
	 * end), overwriting segment 2's header with a record, so the next
	 * start-up refused: "bad segment header in ...0002.wal at byte 0". */
	struct memdisk *d = memdisk_create(NULL, 1);
	struct wal_recovered rec;
	char err[256];
	struct wal *w = empty_wal(d);
	struct wal_stats st;
	uint64_t index = 0, seg1_last = 0;
	for (int i = 0; i < 200; i++) {
		ASSERT(append_numbered(w, ++index) == 0);
		wal_stats(w, &st);
		if (st.segments == 2 && !seg1_last)
			seg1_last = index - 1;
		if (st.segments == 3)
			break; /* staged in segment 3 only: never synced */
		ASSERT(wal_sync(w) == 0);
	}
	ASSERT(st.segments == 3 && seg1_last > 0);
	uint64_t synced = index - 1;
	/* Two snapshots (two are kept): the second one's compaction goes up
	 * to the first, which covers segment 1 only: it is removed and wal/
	 * synced. */
	const uint8_t snap[] = "state at the end of segment 1";
	ASSERT(wal_snapshot_save(w, seg1_last, 1, snap, sizeof(snap)) == 0);
	ASSERT(wal_snapshot_save(w, seg1_last + 1, 1, snap, sizeof(snap)) == 0);
	wal_close(w);
	memdisk_crash(d, MEMDISK_LOSE_UNSYNCED);
	EXPECT(memdisk_file_size(d, "wal/0000000000000003.wal") == 0);

	w = open_wal(d, &rec, NULL, err, sizeof(err));
	ASSERT(w);
	bool removed = false;
	for (uint32_t i = 0; i < rec.n_warnings; i++)
		removed |= strstr(rec.warning[i], "0003.wal: torn before") != NULL;
	EXPECT(removed);
	EXPECT(numbered_log(&rec, seg1_last + 2, synced));
	wal_recovered_free(w, &rec);
	/* Synced appends after the removal, crossing a rollover again. */
	uint64_t more = index - 1 + 40;
	for (index = synced + 1; index <= more; index++) {
		ASSERT(append_numbered(w, index) == 0);
		ASSERT(wal_sync(w) == 0);
	}
	wal_close(w);
	memdisk_crash(d, MEMDISK_LOSE_UNSYNCED);
	int rv = 0;
	w = open_wal(d, &rec, &rv, err, sizeof(err));
	if (!w)
		fprintf(stderr, "  refused: %s\n", err);
	ASSERT(w);
	EXPECT_EQ_U64(rec.snap_index, seg1_last + 1);
	EXPECT(numbered_log(&rec, seg1_last + 2, more));
	wal_recovered_free(w, &rec);
	wal_close(w);
	memdisk_destroy(d);
}

TEST(crash_during_the_first_hard_state_write_never_refuses_start)
{
	/* Stop the disk at each sync of the very first hard-state write in
	 * turn, then lose power with the unsynced bytes torn: start-up must
	 * always succeed (a torn first slot is not two damaged slots), and a
	 * hard state whose sync succeeded must survive. */
	uint32_t cases = 0;
	for (uint64_t after = 0; after < 5; after++) {
		for (uint64_t seed = 1; seed <= 40; seed++) {
			struct memdisk *d = memdisk_create(NULL, seed);
			struct wal_recovered rec;
			char err[256];
			struct wal *w = empty_wal(d);
			memdisk_fail(d, MEMDISK_OP_SYNC, after, KEEL_ERR_IO, true);
			struct raft_hard_state hs = {.term = 5, .vote = 2};
			ASSERT(wal_save_hard_state(w, &hs) == 0);
			int srv = wal_sync(w);
			wal_close(w);
			memdisk_crash(d, MEMDISK_TORN);
			memdisk_fail_clear(d); /* the disk is replaced */
			int rv;
			w = open_wal(d, &rec, &rv, err, sizeof(err));
			if (!w)
				fprintf(stderr, "  after=%llu seed=%llu: %s\n",
					(unsigned long long)after,
					(unsigned long long)seed, err);
			EXPECT(w != NULL);
			if (w) {
				if (srv == 0)
					EXPECT(rec.hs.term == 5 && rec.hs.vote == 2);
				else
					EXPECT(rec.hs.term == 0 || rec.hs.term == 5);
				wal_recovered_free(w, &rec);
				wal_close(w);
			}
			cases++;
			memdisk_destroy(d);
		}
	}
	EXPECT(cases == 200);
}

TEST(io_errors_poison_and_are_never_retried)
{
	for (int kind = 0; kind < 2; kind++) {
		struct memdisk *d = memdisk_create(NULL, 1);
		struct wal *w = fresh_with_entries(d, 2, NULL);
		int err = kind ? KEEL_ERR_NOSPACE : KEEL_ERR_IO;
		memdisk_fail(d, kind ? MEMDISK_OP_WRITE : MEMDISK_OP_SYNC, 0,
			     err, false);
		struct wal_stats st;
		wal_stats(w, &st);
		uint8_t x = 1;
		struct raft_entry e = {.term = 1, .index = st.last_index + 1,
				       .len = 1, .data = &x};
		EXPECT(wal_append(w, &e, 1) == 0);
		EXPECT(wal_sync(w) == err);
		/* The fault was one-shot: a retry would now "succeed" and
		 * lie. The WAL must refuse instead. */
		e.index++;
		EXPECT(wal_append(w, &e, 1) == err);
		EXPECT(wal_sync(w) == err);
		EXPECT(wal_poisoned(w) == err);
		EXPECT(strstr(wal_errmsg(w), "wal/") != NULL);
		wal_close(w);
		memdisk_destroy(d);
	}
}

TEST(hard_state_survives_a_torn_slot_and_refuses_two_bad_slots)
{
	struct memdisk *d = memdisk_create(NULL, 1);
	struct wal *w = fresh_with_entries(d, 1, NULL);
	struct raft_hard_state hs = {.term = 5, .vote = 2, .commit = 1};
	EXPECT(wal_save_hard_state(w, &hs) == 0);
	EXPECT(wal_sync(w) == 0);
	hs.term = 6;
	hs.vote = 3;
	EXPECT(wal_save_hard_state(w, &hs) == 0);
	EXPECT(wal_sync(w) == 0);
	wal_close(w);
	/* Damage the newest slot (seq 2 lives in slot 0): the older wins. */
	ASSERT(memdisk_flip_bit(d, "hardstate", 17 * 8) == 0);
	struct wal_recovered rec;
	char err[256];
	int rv;
	w = open_wal(d, &rec, &rv, err, sizeof(err));
	ASSERT(w);
	EXPECT_EQ_U64(rec.hs.term, 5);
	EXPECT_EQ_U64(rec.hs.vote, 2);
	wal_recovered_free(w, &rec);
	wal_close(w);
	ASSERT(memdisk_flip_bit(d, "hardstate", (64 + 17) * 8) == 0);
	w = open_wal(d, &rec, &rv, err, sizeof(err));
	EXPECT(w == NULL);
	EXPECT(rv == KEEL_ERR_CORRUPT);
	EXPECT(strstr(err, "hardstate") != NULL);
	memdisk_destroy(d);
}

TEST(snapshot_compacts_and_recovery_refuses_a_gap)
{
	struct memdisk *d = memdisk_create(NULL, 1);
	static struct model m;
	memset(&m, 0, sizeof(m));
	struct wal *w = fresh_with_entries(d, 200, &m);
	struct wal_stats st;
	wal_stats(w, &st);
	uint64_t before = st.segments;
	EXPECT(before > 3);
	/* Two kept: the first snapshot removes nothing, the second removes
	 * the segments wholly at or below the first. */
	uint64_t s1 = st.last_index / 2, si = st.last_index - 5;
	const uint8_t payload[] = "state machine at si";
	EXPECT(wal_snapshot_save(w, s1, m.term[s1], payload, 7) == 0);
	wal_stats(w, &st);
	EXPECT_EQ_U64(st.segments, before);
	EXPECT(wal_snapshot_save(w, si, m.term[si], payload, sizeof(payload)) == 0);
	wal_stats(w, &st);
	EXPECT(st.segments < before);
	EXPECT_EQ_U64(st.snaps_kept, 2);
	wal_close(w);
	struct wal_recovered rec;
	char err[256];
	int rv;
	w = open_wal(d, &rec, &rv, err, sizeof(err));
	ASSERT(w);
	EXPECT_EQ_U64(rec.snap_index, si);
	EXPECT(rec.snap_len == sizeof(payload));
	EXPECT(rec.snap_crc == keel_crc32c(0, payload, sizeof(payload)));
	uint8_t back[sizeof(payload)];
	EXPECT(wal_snapshot_read(w, si, m.term[si], 0, back, sizeof(back)) == 0);
	EXPECT(!memcmp(back, payload, sizeof(payload)));
	EXPECT(same_log(&rec, &m, m.n));
	wal_recovered_free(w, &rec);
	wal_close(w);
	/* Rot both snapshots: they are ignored, and the log no longer
	 * reaches back to index 1, so start-up refuses rather than serve a
	 * gap, naming the damaged newest snapshot and the byte. */
	char name[96];
	snprintf(name, sizeof(name), "snap/%016llx-%016llx.snap",
		 (unsigned long long)si, (unsigned long long)m.term[si]);
	ASSERT(memdisk_flip_bit(d, name, 70 * 8) == 0);
	snprintf(name, sizeof(name), "snap/%016llx-%016llx.snap",
		 (unsigned long long)s1, (unsigned long long)m.term[s1]);
	ASSERT(memdisk_flip_bit(d, name, 66 * 8) == 0);
	w = open_wal(d, &rec, &rv, err, sizeof(err));
	EXPECT(w == NULL);
	EXPECT(rv == KEEL_ERR_CORRUPT);
	EXPECT(strstr(err, "corrupt snapshot snap/") != NULL);
	EXPECT(strstr(err, "at byte 64") != NULL);
	fprintf(stderr, "  refused: %s\n", err);
	memdisk_destroy(d);
}

TEST(install_snapshot_resets_the_log)
{
	struct memdisk *d = memdisk_create(NULL, 1);
	struct wal *w = fresh_with_entries(d, 10, NULL);
	const uint8_t payload[] = "leader's state";
	EXPECT(wal_snapshot_install(w, 500, 9, payload, sizeof(payload)) == 0);
	uint8_t x = 3;
	struct raft_entry e = {.term = 9, .index = 501, .len = 1, .data = &x};
	EXPECT(wal_append(w, &e, 1) == 0);
	EXPECT(wal_sync(w) == 0);
	wal_close(w);
	struct wal_recovered rec;
	char err[256];
	w = open_wal(d, &rec, NULL, err, sizeof(err));
	ASSERT(w);
	EXPECT_EQ_U64(rec.snap_index, 500);
	EXPECT_EQ_U64(rec.n_entries, 1);
	if (rec.n_entries)
		EXPECT_EQ_U64(rec.entries[0].index, 501);
	wal_recovered_free(w, &rec);
	wal_close(w);
	memdisk_destroy(d);
}

TEST(segment_of_another_cluster_is_refused)
{
	struct memdisk *d = memdisk_create(NULL, 1);
	struct wal *w = fresh_with_entries(d, 2, NULL);
	wal_close(w);
	struct wal_config cfg = {.disk = memdisk_disk(d),
				 .cluster_id = 78,
				 .segment_bytes = SEG_BYTES};
	struct wal_recovered rec;
	char err[256];
	EXPECT(wal_open(&cfg, &w, &rec, err, sizeof(err)) == KEEL_ERR_CLUSTER);
	EXPECT(strstr(err, "cluster 77") != NULL);
	memdisk_destroy(d);
}

/* ---- streamed snapshots (docs/snapshots.md §2, disk-format.md) ----------- */

/* A fresh WAL holding entries 1..n (append_numbered), synced in batches. */
static struct wal *numbered_wal(struct memdisk *d, uint64_t n)
{
	struct wal *w = empty_wal(d);
	for (uint64_t i = 1; i <= n; i++) {
		KEEL_ASSERT(append_numbered(w, i) == 0);
		if (i % 5 == 0 || i == n)
			KEEL_ASSERT(wal_sync(w) == 0);
	}
	return w;
}

static void fill(uint8_t *p, size_t n, uint64_t seed)
{
	struct keel_rand r;
	keel_rand_seed(&r, seed);
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)keel_rand_next(&r);
}

static void snap_name(char *out, size_t n, uint64_t index, uint64_t term,
		      bool tmp)
{
	snprintf(out, n, "snap/%016llx-%016llx.snap%s",
		 (unsigned long long)index, (unsigned long long)term,
		 tmp ? ".tmp" : "");
}

/* Begins a snapshot and streams the first `upto` bytes of p in random
 * chunk sizes (1..max_chunk). Returns the handle, 0 on failure. */
static uint64_t stream(struct wal *w, uint64_t index, uint64_t term, int kind,
		       const uint8_t *p, size_t n, size_t upto,
		       struct keel_rand *r, size_t max_chunk)
{
	uint64_t h = 0;
	if (wal_snapshot_begin(w, index, term, n, kind, &h))
		return 0;
	for (size_t off = 0; off < upto;) {
		size_t c = 1 + (size_t)keel_rand_below(r, max_chunk);
		if (c > upto - off)
			c = upto - off;
		if (wal_snapshot_write(w, h, off, p + off, c))
			return 0;
		off += c;
	}
	return h;
}

/* Reads the payload back in 40 random ranges and once whole (n <= 1 MiB). */
static bool reads_back(struct wal *w, uint64_t index, uint64_t term,
		       const uint8_t *p, size_t n, struct keel_rand *r)
{
	static uint8_t buf[WAL_SNAP_READ_MAX];
	for (int i = 0; i <= 40; i++) {
		uint64_t off = i == 40 ? 0 : keel_rand_below(r, n);
		size_t len = i == 40 ? n : 1 + (size_t)keel_rand_below(r, n - off);
		if (wal_snapshot_read(w, index, term, off, buf, len) != 0 ||
		    memcmp(buf, p + off, len) != 0) {
			fprintf(stderr, "  range [%llu, +%zu) differs\n",
				(unsigned long long)off, len);
			return false;
		}
	}
	return true;
}

/* A large snapshot is synced as it streams (WAL_SNAP_SYNC_BYTES), so its
 * finish -- which appends queued behind it on the disk thread wait for --
 * has little left to flush: after 2.5 thresholds two syncs happened, and
 * the finish still makes the whole snapshot durable and readable. */
TEST(large_snapshot_is_synced_while_it_streams)
{
	uint64_t seed = test_seed(6);
	struct keel_rand r;
	keel_rand_seed(&r, seed);
	struct memdisk *d = memdisk_create(NULL, seed);
	struct wal *w = numbered_wal(d, 60);
	size_t n = WAL_SNAP_SYNC_BYTES * 5 / 2;
	uint8_t *p = malloc(n);
	ASSERT(p);
	fill(p, n, seed);
	struct memdisk_stats before, after;
	memdisk_stats(d, &before);
	uint64_t h = stream(w, 50, 1, WAL_SNAP_LOCAL, p, n + 1000, n, &r,
			    70000);
	ASSERT(h);
	memdisk_stats(d, &after);
	EXPECT_EQ_U64(after.syncs - before.syncs, 2);
	uint8_t *q = malloc(n + 1000);
	ASSERT(q);
	memcpy(q, p, n);
	fill(q + n, 1000, seed + 1);
	ASSERT(wal_snapshot_write(w, h, n, q + n, 1000) == 0);
	ASSERT(wal_snapshot_finish(w, h, keel_crc32c(0, q, n + 1000)) == 0);
	wal_close(w);
	memdisk_crash(d, MEMDISK_LOSE_UNSYNCED);
	struct wal_recovered rec;
	char err[256];
	w = open_wal(d, &rec, NULL, err, sizeof(err));
	ASSERT(w);
	EXPECT_EQ_U64(rec.snap_index, 50);
	EXPECT(reads_back(w, 50, 1, q, WAL_SNAP_READ_MAX, &r));
	wal_recovered_free(w, &rec);
	wal_close(w);
	free(q);
	free(p);
	memdisk_destroy(d);
}

TEST(snapshot_streams_in_random_chunks_and_reads_back_by_ranges)
{
	uint64_t seed = test_seed(5);
	struct keel_rand r;
	keel_rand_seed(&r, seed);
	struct memdisk *d = memdisk_create(NULL, seed);
	struct wal *w = numbered_wal(d, 60);
	static uint8_t p[300000];
	fill(p, sizeof(p), seed);
	uint64_t h = 0, h2 = 0;
	ASSERT(wal_snapshot_begin(w, 50, 1, sizeof(p), WAL_SNAP_LOCAL, &h) == 0);
	EXPECT(h > 0);
	/* One of each kind; lengths capped; a LOCAL one is of logged state. */
	EXPECT(wal_snapshot_begin(w, 55, 1, 10, WAL_SNAP_LOCAL, &h2) ==
	       KEEL_ERR_BUSY);
	EXPECT(wal_snapshot_begin(w, 90, 1, WAL_SNAP_MAX_BYTES + 1,
				  WAL_SNAP_RECEIVED, &h2) == KEEL_ERR_TOO_BIG);
	wal_snapshot_abort(w, 12345); /* unknown handle: a no-op */
	EXPECT(wal_snapshot_write(w, h, 1, p, 1) == KEEL_ERR_INVAL);
	size_t off = 0;
	int chunks = 0;
	while (off < sizeof(p)) {
		size_t c = 1 + (size_t)keel_rand_below(&r, 70000);
		if (c > sizeof(p) - off)
			c = sizeof(p) - off;
		ASSERT(wal_snapshot_write(w, h, off, p + off, c) == 0);
		off += c;
		chunks++;
	}
	fprintf(stderr, "  %d chunks\n", chunks);
	EXPECT(wal_snapshot_write(w, h, off, p, 1) == KEEL_ERR_INVAL);
	uint8_t small[16];
	EXPECT(wal_snapshot_read(w, 50, 1, 0, small, 10) == KEEL_ERR_NOT_FOUND);
	ASSERT(wal_snapshot_finish(w, h, keel_crc32c(0, p, sizeof(p))) == 0);
	EXPECT(wal_snapshot_write(w, h, off, p, 0) == KEEL_ERR_INVAL);
	EXPECT(reads_back(w, 50, 1, p, sizeof(p), &r));
	EXPECT(wal_snapshot_read(w, 50, 1, sizeof(p) - 5, small, 6) ==
	       KEEL_ERR_INVAL);
	EXPECT(wal_snapshot_read(w, 50, 2, 0, small, 6) == KEEL_ERR_NOT_FOUND);
	static uint8_t big[WAL_SNAP_READ_MAX + 1];
	EXPECT(wal_snapshot_read(w, 50, 1, 0, big, sizeof(big)) ==
	       KEEL_ERR_INVAL);
	wal_close(w);
	struct wal_recovered rec;
	char err[256];
	w = open_wal(d, &rec, NULL, err, sizeof(err));
	ASSERT(w);
	EXPECT_EQ_U64(rec.snap_index, 50);
	EXPECT_EQ_U64(rec.snap_term, 1);
	EXPECT_EQ_U64(rec.snap_len, sizeof(p));
	EXPECT(rec.snap_crc == keel_crc32c(0, p, sizeof(p)));
	EXPECT(numbered_log(&rec, 51, 60));
	EXPECT(reads_back(w, 50, 1, p, sizeof(p), &r));
	wal_recovered_free(w, &rec);
	wal_close(w);
	memdisk_destroy(d);
}

TEST(finish_with_a_wrong_crc_or_length_is_corrupt_and_drops_the_snapshot)
{
	for (int c = 0; c < 2; c++) {
		struct memdisk *d = memdisk_create(NULL, 3);
		struct wal *w = numbered_wal(d, 60);
		struct keel_rand r;
		keel_rand_seed(&r, 3);
		uint8_t p[5000];
		fill(p, sizeof(p), 4);
		/* c = 0: every byte, a wrong CRC; c = 1: 100 bytes short,
		 * the right CRC of what was written. */
		size_t upto = c ? sizeof(p) - 100 : sizeof(p);
		uint64_t h = stream(w, 50, 1, WAL_SNAP_LOCAL, p, sizeof(p),
				    upto, &r, 700);
		ASSERT(h);
		uint32_t crc = keel_crc32c(0, p, upto) ^ (c ? 0u : 1u);
		EXPECT(wal_snapshot_finish(w, h, crc) == KEEL_ERR_CORRUPT);
		char tmp[96];
		snap_name(tmp, sizeof(tmp), 50, 1, true);
		EXPECT(memdisk_file_size(d, tmp) == -1);
		uint8_t b[4];
		EXPECT(wal_snapshot_read(w, 50, 1, 0, b, 4) == KEEL_ERR_NOT_FOUND);
		/* The log is intact: not poisoned, and the slot is free. */
		EXPECT(wal_poisoned(w) == 0);
		EXPECT(append_numbered(w, 61) == 0);
		EXPECT(wal_sync(w) == 0);
		EXPECT(wal_snapshot_write(w, h, upto, p, 1) == KEEL_ERR_INVAL);
		h = stream(w, 50, 1, WAL_SNAP_LOCAL, p, sizeof(p), sizeof(p),
			   &r, 700);
		ASSERT(h);
		EXPECT(wal_snapshot_finish(w, h, keel_crc32c(0, p, sizeof(p))) ==
		       0);
		wal_close(w);
		memdisk_destroy(d);
	}
}

/* The crash table rows (docs/snapshots.md §2.3) share one set-up: a log
 * 1..120 with a snapshot at (40, 1) (`prev`), `extra` more synced entries
 * after it, a snapshot of `kind` streamed at (index, term) (`p`); then the
 * disk fails for good at the k-th write/sync/rename/remove of the finish
 * (nothing after it reaches the disk, as if power went there), power is
 * lost in `mode`, and the WAL is opened again (w NULL if it refused, err
 * says why). */
struct snap_crash {
	struct memdisk *d;
	struct wal *w;
	struct wal_recovered rec;
	char err[256];
	int finish_rv;
	struct keel_rand r; /* reads_back continues the stream's chunking */
	uint8_t prev[700], p[5000];
};

static void snap_crash_run(struct snap_crash *c, uint64_t disk_seed,
			   uint64_t extra, uint64_t index, uint64_t term,
			   int kind, int k, int mode)
{
	c->d = memdisk_create(NULL, disk_seed);
	struct wal *w = numbered_wal(c->d, 120);
	fill(c->prev, sizeof(c->prev), 1);
	fill(c->p, sizeof(c->p), 2);
	KEEL_ASSERT(wal_snapshot_save(w, 40, 1, c->prev, sizeof(c->prev)) == 0);
	if (extra) {
		for (uint64_t i = 121; i <= 120 + extra; i++)
			KEEL_ASSERT(append_numbered(w, i) == 0);
		KEEL_ASSERT(wal_sync(w) == 0);
	}
	keel_rand_seed(&c->r, (uint64_t)k);
	uint64_t h = stream(w, index, term, kind, c->p, sizeof(c->p),
			    sizeof(c->p), &c->r, 2000);
	KEEL_ASSERT(h);
	memdisk_fail(c->d, MEMDISK_OP_WRITE | MEMDISK_OP_SYNC | MEMDISK_OP_META,
		     (uint64_t)k, KEEL_ERR_IO, true);
	c->finish_rv = wal_snapshot_finish(w, h, keel_crc32c(0, c->p, sizeof(c->p)));
	memdisk_fail_clear(c->d);
	wal_close(w);
	memdisk_crash(c->d, mode);
	c->w = open_wal(c->d, &c->rec, NULL, c->err, sizeof(c->err));
}

/* One crash case: the finish's result, *got the snapshot recovered, *ok
 * whether the recovery was one the table allows. */
typedef int (*snap_crash_case)(uint64_t s_index, int k, int mode,
			       uint64_t *got, bool *ok);

struct crash_tally {
	int points, seen_old, seen_new, bad;
};

/* Every crash point of a finish at (s_index) in every power-loss mode: k
 * counts up until the fault comes after the finish's last step (it then
 * succeeds). Recovery finds the old snapshot (40) or the new one. */
static struct crash_tally snap_crash_sweep(snap_crash_case run, uint64_t s_index)
{
	struct crash_tally t = {0};
	for (int mode = 0; mode < 3; mode++) {
		for (int k = 0; k < 64; k++) {
			uint64_t got = 0;
			bool ok = false;
			int rv = run(s_index, k, mode, &got, &ok);
			t.bad += !ok;
			t.seen_old += got == 40;
			t.seen_new += got == s_index;
			t.points++;
			if (rv == 0)
				break; /* the fault came after the last step */
		}
	}
	return t;
}

/* The LOCAL rows: a snapshot at (s_index = 100, 1) over a log to 125.
 * Recovery must never refuse; it finds the previous snapshot (40) or the
 * new one (100), the log from there to 125, no temp file; and with the
 * new one, the log still reaches back past the previous one (the new one
 * is damaged on purpose: recovery falls back to 40). */
static int local_crash_case(uint64_t s_index, int k, int mode, uint64_t *got,
			    bool *ok)
{
	struct snap_crash c;
	snap_crash_run(&c, 100 + (uint64_t)k * 3 + (uint64_t)mode, 5, s_index,
		       1, WAL_SNAP_LOCAL, k, mode);
	int rv = c.finish_rv;
	struct wal *w = c.w;
	*ok = w != NULL;
	if (!w) {
		fprintf(stderr, "  k=%d mode=%d: refused: %s\n", k, mode, c.err);
		memdisk_destroy(c.d);
		return rv;
	}
	*got = c.rec.snap_index;
	char tmp[96], name[96];
	snap_name(tmp, sizeof(tmp), s_index, 1, true);
	snap_name(name, sizeof(name), s_index, 1, false);
	bool good = (c.rec.snap_index == 40 || c.rec.snap_index == s_index) &&
		    (rv != 0 || c.rec.snap_index == s_index) &&
		    numbered_log(&c.rec, c.rec.snap_index + 1, 125) &&
		    memdisk_file_size(c.d, tmp) == -1;
	if (good && c.rec.snap_index == s_index)
		good = reads_back(w, s_index, 1, c.p, sizeof(c.p), &c.r);
	if (good && c.rec.snap_index == 40)
		good = reads_back(w, 40, 1, c.prev, sizeof(c.prev), &c.r);
	wal_recovered_free(w, &c.rec);
	wal_close(w);
	if (good && *got == s_index) {
		KEEL_ASSERT(memdisk_flip_bit(c.d, name, 64 * 8 + 9) == 0);
		w = open_wal(c.d, &c.rec, NULL, c.err, sizeof(c.err));
		good = w && c.rec.snap_index == 40 &&
		       numbered_log(&c.rec, 41, 125);
		if (!w)
			fprintf(stderr, "  k=%d mode=%d: fallback refused: %s\n",
				k, mode, c.err);
		if (w) {
			wal_recovered_free(w, &c.rec);
			wal_close(w);
		}
	}
	if (!good)
		fprintf(stderr, "  k=%d mode=%d rv=%d: recovered snapshot %llu\n",
			k, mode, rv, (unsigned long long)*got);
	*ok = good;
	memdisk_destroy(c.d);
	return rv;
}

TEST(crash_at_every_boundary_of_a_local_snapshot_follows_the_crash_table)
{
	struct crash_tally t = snap_crash_sweep(local_crash_case, 100);
	fprintf(stderr, "  %d crash points: %d old snapshot, %d new\n", t.points,
		t.seen_old, t.seen_new);
	EXPECT(t.bad == 0);
	EXPECT(t.points >= 3 * 6);
	EXPECT(t.seen_old > 0 && t.seen_new > 0);
}

/* The RECEIVED rows: as above for an install at (s_index, 2) over a log
 * 1..120 with a snapshot at 40. Recovery never refuses; it finds either
 * the state before (40, the log to 120) or the installed snapshot with an
 * empty log (the reset, or the fit rule when the reset record was lost),
 * and then the log continues after it. */
static int received_crash_case(uint64_t s_index, int k, int mode,
			       uint64_t *got, bool *ok)
{
	struct snap_crash c;
	snap_crash_run(&c, 300 + (uint64_t)k * 3 + (uint64_t)mode, 0, s_index,
		       2, WAL_SNAP_RECEIVED, k, mode);
	int rv = c.finish_rv;
	struct wal *w = c.w;
	*ok = false;
	if (!w) {
		fprintf(stderr, "  s=%llu k=%d mode=%d: refused: %s\n",
			(unsigned long long)s_index, k, mode, c.err);
		memdisk_destroy(c.d);
		return rv;
	}
	*got = c.rec.snap_index;
	char tmp[96];
	snap_name(tmp, sizeof(tmp), s_index, 2, true);
	bool good = memdisk_file_size(c.d, tmp) == -1;
	if (c.rec.snap_index == s_index)
		good = good && c.rec.snap_term == 2 && c.rec.n_entries == 0 &&
		       reads_back(w, s_index, 2, c.p, sizeof(c.p), &c.r);
	else
		good = good && rv != 0 && c.rec.snap_index == 40 &&
		       numbered_log(&c.rec, 41, 120);
	wal_recovered_free(w, &c.rec);
	if (good && *got == s_index) {
		/* The log goes on after the installed snapshot. */
		uint8_t x = 5;
		struct raft_entry e = {.term = 2, .index = s_index + 1,
				       .len = 1, .data = &x};
		good = wal_append(w, &e, 1) == 0 && wal_sync(w) == 0;
		wal_close(w);
		memdisk_crash(c.d, MEMDISK_LOSE_UNSYNCED);
		w = open_wal(c.d, &c.rec, NULL, c.err, sizeof(c.err));
		good = good && w && c.rec.snap_index == s_index &&
		       c.rec.n_entries == 1 && c.rec.entries[0].index == s_index + 1;
		if (w)
			wal_recovered_free(w, &c.rec);
	}
	if (w)
		wal_close(w);
	if (!good)
		fprintf(stderr, "  s=%llu k=%d mode=%d rv=%d: recovered snapshot %llu\n",
			(unsigned long long)s_index, k, mode, rv,
			(unsigned long long)*got);
	*ok = good;
	memdisk_destroy(c.d);
	return rv;
}

TEST(crash_at_every_boundary_of_an_install_follows_the_crash_table)
{
	/* 300: the leader's snapshot is past our log; 110: our log holds
	 * 110 with another term (the fit rule must drop it). */
	static const uint64_t at[] = {300, 110};
	for (int i = 0; i < 2; i++) {
		struct crash_tally t = snap_crash_sweep(received_crash_case, at[i]);
		fprintf(stderr, "  install at %llu: %d crash points: %d before, %d installed\n",
			(unsigned long long)at[i], t.points, t.seen_old, t.seen_new);
		EXPECT(t.bad == 0);
		EXPECT(t.points >= 3 * 8);
		EXPECT(t.seen_old > 0 && t.seen_new > 0);
	}
}

TEST(crash_while_streaming_leaves_the_old_state_and_no_temp_file)
{
	for (int kind = WAL_SNAP_LOCAL; kind <= WAL_SNAP_RECEIVED; kind++) {
		for (int mode = 0; mode < 3; mode++) {
			struct memdisk *d = memdisk_create(NULL, (uint64_t)mode);
			struct wal *w = numbered_wal(d, 120);
			uint8_t p[5000];
			fill(p, sizeof(p), 9);
			ASSERT(wal_snapshot_save(w, 40, 1, p, 100) == 0);
			struct keel_rand r;
			keel_rand_seed(&r, 1);
			uint64_t idx = kind == WAL_SNAP_LOCAL ? 100 : 300;
			ASSERT(stream(w, idx, 1, kind, p, sizeof(p), 3000, &r,
				      900));
			wal_close(w);
			memdisk_crash(d, mode);
			char tmp[96];
			snap_name(tmp, sizeof(tmp), idx, 1, true);
			struct wal_recovered rec;
			char err[256];
			w = open_wal(d, &rec, NULL, err, sizeof(err));
			ASSERT(w);
			EXPECT_EQ_U64(rec.snap_index, 40);
			EXPECT(numbered_log(&rec, 41, 120));
			EXPECT(memdisk_file_size(d, tmp) == -1);
			wal_recovered_free(w, &rec);
			wal_close(w);
			memdisk_destroy(d);
		}
	}
}

TEST(two_snapshots_are_kept_and_segments_go_up_to_the_previous_one)
{
	struct memdisk *d = memdisk_create(NULL, 1);
	struct wal *w = numbered_wal(d, 200);
	struct wal_stats st;
	wal_stats(w, &st);
	uint64_t segs = st.segments;
	uint8_t p[3][600];
	for (int i = 0; i < 3; i++)
		fill(p[i], sizeof(p[i]), (uint64_t)i + 20);
	struct keel_rand r;
	keel_rand_seed(&r, 2);
	char n30[96], n90[96], n150[96];
	snap_name(n30, sizeof(n30), 30, 1, false);
	snap_name(n90, sizeof(n90), 90, 1, false);
	snap_name(n150, sizeof(n150), 150, 1, false);
	ASSERT(wal_snapshot_save(w, 30, 1, p[0], sizeof(p[0])) == 0);
	wal_stats(w, &st);
	EXPECT_EQ_U64(st.segments, segs); /* the first removes nothing */
	ASSERT(wal_snapshot_save(w, 90, 1, p[1], sizeof(p[1])) == 0);
	wal_stats(w, &st);
	/* 30 records fit a 4 KiB segment: segment 1 holds 1..30, all <= 30. */
	EXPECT_EQ_U64(st.segments, segs - 1);
	EXPECT(memdisk_file_size(d, n30) > 0);
	EXPECT(reads_back(w, 30, 1, p[0], sizeof(p[0]), &r));
	ASSERT(wal_snapshot_save(w, 150, 1, p[2], sizeof(p[2])) == 0);
	wal_stats(w, &st);
	EXPECT_EQ_U64(st.segments, segs - 3); /* 31..60 and 61..90 went */
	EXPECT_EQ_U64(st.snaps_kept, 2);
	/* The snapshot before the previous one is gone, and says so. */
	EXPECT(memdisk_file_size(d, n30) == -1);
	uint8_t b[8];
	EXPECT(wal_snapshot_read(w, 30, 1, 0, b, 8) == KEEL_ERR_NOT_FOUND);
	EXPECT(reads_back(w, 90, 1, p[1], sizeof(p[1]), &r));
	EXPECT(reads_back(w, 150, 1, p[2], sizeof(p[2]), &r));
	wal_close(w);
	struct wal_recovered rec;
	char err[256];
	w = open_wal(d, &rec, NULL, err, sizeof(err));
	ASSERT(w);
	EXPECT_EQ_U64(rec.snap_index, 150);
	EXPECT(numbered_log(&rec, 151, 200));
	wal_recovered_free(w, &rec);
	wal_close(w);
	/* Damaged newest: the log reaches back past it (it starts at 91),
	 * so the previous one stands in, with a warning. */
	ASSERT(memdisk_flip_bit(d, n150, 64 * 8 + 100) == 0);
	w = open_wal(d, &rec, NULL, err, sizeof(err));
	ASSERT(w);
	EXPECT_EQ_U64(rec.snap_index, 90);
	EXPECT(numbered_log(&rec, 91, 200));
	bool warned = false;
	for (uint32_t i = 0; i < rec.n_warnings; i++)
		warned |= strstr(rec.warning[i], n150) != NULL;
	EXPECT(warned);
	EXPECT(wal_snapshot_read(w, 150, 1, 0, b, 8) == KEEL_ERR_NOT_FOUND);
	EXPECT(reads_back(w, 90, 1, p[1], sizeof(p[1]), &r));
	wal_recovered_free(w, &rec);
	wal_close(w);
	memdisk_destroy(d);
}

TEST(damaged_installed_snapshot_without_the_log_behind_it_is_refused)
{
	struct memdisk *d = memdisk_create(NULL, 1);
	struct wal *w = numbered_wal(d, 50);
	uint8_t p[900];
	fill(p, sizeof(p), 5);
	ASSERT(wal_snapshot_save(w, 20, 1, p, 100) == 0);
	ASSERT(wal_snapshot_install(w, 100, 3, p, sizeof(p)) == 0);
	uint8_t b[8];
	EXPECT(wal_snapshot_read(w, 20, 1, 0, b, 8) == KEEL_ERR_NOT_FOUND);
	for (uint64_t i = 101; i <= 110; i++) {
		uint8_t x = (uint8_t)i;
		struct raft_entry e = {.term = 3, .index = i, .len = 1,
				       .data = &x};
		ASSERT(wal_append(w, &e, 1) == 0);
	}
	ASSERT(wal_sync(w) == 0);
	wal_close(w);
	char name[96];
	snap_name(name, sizeof(name), 100, 3, false);
	ASSERT(memdisk_flip_bit(d, name, 30 * 8) == 0);
	struct wal_recovered rec;
	char err[256];
	int rv = 0;
	w = open_wal(d, &rec, &rv, err, sizeof(err));
	EXPECT(w == NULL);
	EXPECT(rv == KEEL_ERR_CORRUPT);
	EXPECT(strstr(err, name) != NULL);
	EXPECT(strstr(err, "at byte 60") != NULL);
	fprintf(stderr, "  refused: %s\n", err);
	memdisk_destroy(d);
}

TEST(io_errors_during_snapshot_writes_poison)
{
	for (int c = 0; c < 3; c++) {
		/* c = 0, 1: EIO / ENOSPC on a chunk write; 2: EIO on the
		 * finish's fdatasync. */
		int e = c == 1 ? KEEL_ERR_NOSPACE : KEEL_ERR_IO;
		struct memdisk *d = memdisk_create(NULL, 1);
		struct wal *w = numbered_wal(d, 20);
		uint8_t p[3000];
		fill(p, sizeof(p), 6);
		uint64_t h = 0;
		ASSERT(wal_snapshot_begin(w, 10, 1, sizeof(p), WAL_SNAP_LOCAL,
					  &h) == 0);
		if (c < 2) {
			memdisk_fail(d, MEMDISK_OP_WRITE, 1, e, false);
			EXPECT(wal_snapshot_write(w, h, 0, p, 1000) == 0);
			EXPECT(wal_snapshot_write(w, h, 1000, p + 1000, 1000) == e);
			/* One-shot fault: a retry would succeed and lie. */
			EXPECT(wal_snapshot_write(w, h, 2000, p + 2000, 1000) == e);
			EXPECT(wal_snapshot_finish(w, h, keel_crc32c(0, p, sizeof(p))) == e);
		} else {
			EXPECT(wal_snapshot_write(w, h, 0, p, sizeof(p)) == 0);
			memdisk_fail(d, MEMDISK_OP_SYNC, 0, e, false);
			EXPECT(wal_snapshot_finish(w, h, keel_crc32c(0, p, sizeof(p))) == e);
		}
		/* Nothing is acknowledged after it. */
		EXPECT(wal_poisoned(w) == e);
		EXPECT(strstr(wal_errmsg(w), "snap/") != NULL);
		EXPECT(append_numbered(w, 21) == e);
		EXPECT(wal_sync(w) == e);
		EXPECT(wal_snapshot_begin(w, 15, 1, 10, WAL_SNAP_LOCAL, &h) == e);
		wal_close(w);
		memdisk_crash(d, MEMDISK_TORN);
		struct wal_recovered rec;
		char err[256];
		w = open_wal(d, &rec, NULL, err, sizeof(err));
		ASSERT(w);
		EXPECT_EQ_U64(rec.snap_index, 0);
		EXPECT(numbered_log(&rec, 1, 20));
		wal_recovered_free(w, &rec);
		wal_close(w);
		memdisk_destroy(d);
	}
}

/* ---- the simulator's store: snapshot operations in the one queue ---------- */

struct order {
	int seq[64];
	int status[64];
	int n;
	uint8_t read[600];
	size_t read_len;
};

struct tag {
	struct order *o;
	int id;
};

static void order_cb(void *arg, int status)
{
	struct tag *t = arg;
	t->o->status[t->o->n] = status;
	t->o->seq[t->o->n++] = t->id;
}

static void order_read_cb(void *arg, int status, const uint8_t *data,
			  size_t len)
{
	struct tag *t = arg;
	if (!status && len <= sizeof(t->o->read)) {
		memcpy(t->o->read, data, len);
		t->o->read_len = len;
	}
	t->o->status[t->o->n] = status;
	t->o->seq[t->o->n++] = t->id;
}

static int sim_append(struct sim_store *s, uint64_t index, uint64_t term,
		      struct tag *t)
{
	uint8_t x = (uint8_t)index;
	struct raft_entry e = {.term = term, .index = index, .len = 1,
			       .data = &x};
	struct env_store_write w = {.truncate_from = index, .n_entries = 1,
				    .entries = &e};
	return sim_store_submit(s, &w, order_cb, t);
}

static void sim_complete_all(struct sim_store *s)
{
	env_store_cb cb;
	void *arg;
	int st;
	for (int i = 0; i < 1000 && sim_store_complete(s, &cb, &arg, &st); i++)
		cb(arg, st);
}

TEST(sim_store_completes_snapshot_operations_in_issue_order)
{
	struct sim_store s;
	struct sim_store_config cfg = {.seed = 4, .cluster_id = 9,
				       .segment_bytes = 4096};
	ASSERT(sim_store_init(&s, &cfg) == 0);
	struct order o = {.n = 0};
	struct tag t[20];
	for (int i = 0; i < 20; i++)
		t[i] = (struct tag){.o = &o, .id = i};
	uint8_t p[600];
	fill(p, sizeof(p), 8);
	/* append 1..3, a LOCAL snapshot at 2 in two chunks with an append
	 * between them, finish, a read, then a RECEIVED one at 50 whose
	 * finish is issued before the append of 51. */
	ASSERT(sim_append(&s, 1, 1, &t[0]) == 0);
	ASSERT(sim_append(&s, 2, 1, &t[1]) == 0);
	struct env_store_snap sn = {.index = 2, .term = 1, .total_len = 600,
				    .kind = ENV_SNAP_LOCAL};
	uint64_t h = 0;
	ASSERT(sim_store_snap_begin(&s, &sn, &h) == 0 && h > 0);
	ASSERT(sim_store_snap_write(&s, h, 0, p, 300, order_cb, &t[2]) == 0);
	ASSERT(sim_append(&s, 3, 1, &t[3]) == 0);
	ASSERT(sim_store_snap_write(&s, h, 300, p + 300, 300, order_cb, &t[4]) == 0);
	ASSERT(sim_store_snap_finish(&s, h, keel_crc32c(0, p, 600), order_cb,
				     &t[5]) == 0);
	ASSERT(sim_store_snap_read(&s, 2, 1, 100, 250, order_read_cb, &t[6]) == 0);
	/* The first append still waits for its sync: nothing behind it can
	 * be reported before it. */
	EXPECT(!sim_store_next_ready(&s));
	sim_complete_all(&s);
	EXPECT_EQ_U64(o.n, 7);
	for (int i = 0; i < o.n; i++) {
		EXPECT_EQ_U64(o.seq[i], i);
		EXPECT_EQ_U64(o.status[i], 0);
	}
	EXPECT(o.read_len == 250 && !memcmp(o.read, p + 100, 250));
	EXPECT_EQ_U64(sim_store_durable_snap(&s), 2);
	EXPECT_EQ_U64(sim_store_durable_term(&s, 3), 1);
	sn = (struct env_store_snap){.index = 50, .term = 2, .total_len = 600,
				     .kind = ENV_SNAP_RECEIVED};
	ASSERT(sim_store_snap_begin(&s, &sn, &h) == 0);
	ASSERT(sim_store_snap_write(&s, h, 0, p, 600, order_cb, &t[7]) == 0);
	ASSERT(sim_store_snap_finish(&s, h, keel_crc32c(0, p, 600), order_cb,
				     &t[8]) == 0);
	ASSERT(sim_append(&s, 51, 2, &t[9]) == 0);
	/* A read of a snapshot the install removed. */
	ASSERT(sim_store_snap_read(&s, 2, 1, 0, 10, order_read_cb, &t[10]) == 0);
	sim_complete_all(&s);
	EXPECT_EQ_U64(o.n, 11);
	for (int i = 7; i < o.n; i++)
		EXPECT_EQ_U64(o.seq[i], i);
	EXPECT_EQ_U64(o.status[9], 0);
	EXPECT_EQ_U64(o.status[10], KEEL_ERR_NOT_FOUND);
	/* The shadow restarted at the installed snapshot. */
	EXPECT_EQ_U64(sim_store_durable_term(&s, 50), 2);
	EXPECT_EQ_U64(sim_store_durable_term(&s, 51), 2);
	EXPECT_EQ_U64(sim_store_durable_term(&s, 3), 0);
	/* Crash and recover: load names the snapshot, entries follow it. */
	sim_store_crash(&s, MEMDISK_TORN);
	ASSERT(sim_store_recover(&s) == 0);
	EXPECT(!s.synced_lost);
	struct env_store_state st;
	ASSERT(sim_store_load(&s, &st) == 0);
	EXPECT_EQ_U64(st.snap_index, 50);
	EXPECT_EQ_U64(st.snap_term, 2);
	EXPECT_EQ_U64(st.snap_len, 600);
	EXPECT(st.snap_crc == keel_crc32c(0, p, 600));
	EXPECT_EQ_U64(st.n_entries, 1);
	if (st.n_entries)
		EXPECT_EQ_U64(st.entries[0].index, 51);
	sim_store_close(&s);
}

TEST(sim_store_snapshot_write_errors_poison_and_crash_loses_the_temp_file)
{
	struct sim_store s;
	struct sim_store_config cfg = {.seed = 5, .cluster_id = 9,
				       .segment_bytes = 4096};
	ASSERT(sim_store_init(&s, &cfg) == 0);
	struct order o = {.n = 0};
	struct tag t[8];
	for (int i = 0; i < 8; i++)
		t[i] = (struct tag){.o = &o, .id = i};
	uint8_t p[600];
	fill(p, sizeof(p), 8);
	ASSERT(sim_append(&s, 1, 1, &t[0]) == 0);
	sim_complete_all(&s);
	struct env_store_snap sn = {.index = 1, .term = 1, .total_len = 600,
				    .kind = ENV_SNAP_LOCAL};
	uint64_t h = 0;
	ASSERT(sim_store_snap_begin(&s, &sn, &h) == 0);
	ASSERT(sim_store_snap_write(&s, h, 0, p, 300, order_cb, &t[1]) == 0);
	memdisk_fail(s.disk, MEMDISK_OP_WRITE, 0, KEEL_ERR_NOSPACE, false);
	ASSERT(sim_store_snap_write(&s, h, 300, p + 300, 300, order_cb, &t[2]) == 0);
	ASSERT(sim_append(&s, 2, 1, &t[3]) == 0);
	ASSERT(sim_store_snap_finish(&s, h, keel_crc32c(0, p, 600), order_cb,
				     &t[4]) == 0);
	sim_complete_all(&s);
	EXPECT_EQ_U64(o.n, 5);
	/* Every completion from the failure on carries it (and the one
	 * before it too, as for appends: nothing is reported after). */
	for (int i = 2; i < o.n; i++)
		EXPECT_EQ_U64(o.status[i], KEEL_ERR_NOSPACE);
	EXPECT(s.error == KEEL_ERR_NOSPACE);
	sim_store_crash(&s, MEMDISK_KEEP_UNSYNCED);
	ASSERT(sim_store_recover(&s) == 0);
	EXPECT(memdisk_file_size(s.disk,
				 "snap/0000000000000001-0000000000000001.snap.tmp") == -1);
	struct env_store_state st;
	ASSERT(sim_store_load(&s, &st) == 0);
	EXPECT_EQ_U64(st.snap_index, 0);
	EXPECT_EQ_U64(st.n_entries, 1);
	sim_store_close(&s);
}

TEST(damaged_newest_snapshot_with_a_log_that_stops_short_of_it_is_refused)
{
	/* The older snapshot may stand in only if the log covers every
	 * entry up to the damaged one: those were durable here (the node
	 * may have acknowledged them), so recovering at the older one with
	 * a shorter log would lose them silently. */
	struct memdisk *d = memdisk_create(NULL, 1);
	struct wal *w = numbered_wal(d, 125);
	uint8_t p[400];
	fill(p, sizeof(p), 7);
	ASSERT(wal_snapshot_save(w, 40, 1, p, sizeof(p)) == 0);
	ASSERT(wal_snapshot_save(w, 100, 1, p, sizeof(p)) == 0);
	wal_close(w);
	/* Lose the segments after the second (entries from about 60 on): rot that
	 * took whole files, as far as the WAL can tell. */
	struct keel_disk kd = memdisk_disk(d);
	for (int seq = 3; seq <= 5; seq++) {
		char path[64];
		snprintf(path, sizeof(path), "wal/%016x.wal", seq);
		ASSERT(kd.ops->remove(kd.ctx, path) == 0);
	}
	ASSERT(kd.ops->sync_dir(kd.ctx, "wal") == 0);
	char name[96];
	snap_name(name, sizeof(name), 100, 1, false);
	ASSERT(memdisk_flip_bit(d, name, 64 * 8 + 3) == 0);
	struct wal_recovered rec;
	char err[256];
	int rv = 0;
	w = open_wal(d, &rec, &rv, err, sizeof(err));
	EXPECT(w == NULL);
	EXPECT(rv == KEEL_ERR_CORRUPT);
	EXPECT(strstr(err, name) != NULL);
	EXPECT(strstr(err, "log ends at ") != NULL);
	fprintf(stderr, "  refused: %s\n", err);
	if (w) {
		wal_recovered_free(w, &rec);
		wal_close(w);
	}
	memdisk_destroy(d);
}

/* Streams one LOCAL snapshot of p through the sim store and completes. */
static void sim_local_snapshot(struct sim_store *s, uint64_t index,
			       const uint8_t *p, size_t n, struct order *o)
{
	static struct tag t = {.id = 99};
	t.o = o;
	struct env_store_snap sn = {.index = index, .term = 1,
				    .total_len = n, .kind = ENV_SNAP_LOCAL};
	uint64_t h = 0;
	KEEL_ASSERT(sim_store_snap_begin(s, &sn, &h) == 0);
	KEEL_ASSERT(sim_store_snap_write(s, h, 0, p, n, order_cb, &t) == 0);
	KEEL_ASSERT(sim_store_snap_finish(s, h, keel_crc32c(0, p, n), order_cb,
					  &t) == 0);
	sim_complete_all(s);
}

TEST(sim_store_snapshot_rot_falls_back_to_the_older_snapshot)
{
	struct sim_store s;
	struct sim_store_config cfg = {.seed = 6, .cluster_id = 9,
				       .segment_bytes = 4096};
	ASSERT(sim_store_init(&s, &cfg) == 0);
	struct order o = {.n = 0};
	struct tag t = {.o = &o, .id = 0};
	uint8_t p[300];
	fill(p, sizeof(p), 3);
	for (uint64_t i = 1; i <= 40; i++)
		ASSERT(sim_append(&s, i, 1, &t) == 0);
	sim_complete_all(&s);
	sim_local_snapshot(&s, 10, p, sizeof(p), &o);
	struct keel_rand r;
	keel_rand_seed(&r, 1);
	char what[160];
	/* One snapshot: nothing to fall back to, so no flip. */
	sim_store_crash(&s, MEMDISK_KEEP_UNSYNCED);
	EXPECT(sim_store_flip_snapshot(&s, &r, what, sizeof(what)) ==
	       KEEL_ERR_NOT_FOUND);
	ASSERT(sim_store_recover(&s) == 0);
	sim_local_snapshot(&s, 30, p, sizeof(p), &o);
	EXPECT_EQ_U64(sim_store_durable_snap(&s), 30);
	sim_store_crash(&s, MEMDISK_KEEP_UNSYNCED);
	ASSERT(sim_store_flip_snapshot(&s, &r, what, sizeof(what)) == 0);
	fprintf(stderr, "  flipped %s\n", what);
	EXPECT(strstr(what, "snap/000000000000001e-") != NULL); /* the newest */
	ASSERT(sim_store_recover(&s) == 0);
	EXPECT(!s.synced_lost);
	struct env_store_state st;
	ASSERT(sim_store_load(&s, &st) == 0);
	EXPECT_EQ_U64(st.snap_index, 10);
	EXPECT_EQ_U64(st.n_entries, 30);
	/* The newest file is damaged now: no second flip until a newer
	 * snapshot replaces it. */
	sim_store_crash(&s, MEMDISK_KEEP_UNSYNCED);
	EXPECT(sim_store_flip_snapshot(&s, &r, what, sizeof(what)) ==
	       KEEL_ERR_NOT_FOUND);
	ASSERT(sim_store_recover(&s) == 0);
	sim_store_close(&s);
}

TEST(sim_store_caps_queued_snapshot_bytes_like_the_disk_thread)
{
	struct sim_store s;
	struct sim_store_config cfg = {.seed = 7, .cluster_id = 9,
				       .segment_bytes = 4096};
	ASSERT(sim_store_init(&s, &cfg) == 0);
	struct order o = {.n = 0};
	struct tag t = {.o = &o, .id = 0};
	ASSERT(sim_append(&s, 1, 1, &t) == 0);
	sim_complete_all(&s);
	static uint8_t chunk[1 << 16];
	struct env_store_snap sn = {.index = 1, .term = 1,
				    .total_len = 40 << 16,
				    .kind = ENV_SNAP_LOCAL};
	uint64_t h = 0;
	ASSERT(sim_store_snap_begin(&s, &sn, &h) == 0);
	uint64_t off = 0;
	for (int i = 0; i < 16; i++, off += sizeof(chunk))
		ASSERT(sim_store_snap_write(&s, h, off, chunk, sizeof(chunk),
					    order_cb, &t) == 0);
	/* ENV_SNAP_QUEUE_MAX reached: not queued, no callback. */
	EXPECT(sim_store_snap_write(&s, h, off, chunk, sizeof(chunk),
				    order_cb, &t) == KEEL_ERR_BUSY);
	sim_complete_all(&s);
	EXPECT_EQ_U64(o.n, 17);
	EXPECT(sim_store_snap_write(&s, h, off, chunk, sizeof(chunk), order_cb,
				    &t) == 0);
	sim_store_snap_abort(&s, h);
	sim_complete_all(&s);
	EXPECT_EQ_U64(o.n, 18);
	sim_store_close(&s);
}
