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

/* Compares recovered entries with a model; returns true when equal. */
static bool same_log(const struct wal_recovered *rec, const struct model *m,
		     uint64_t upto)
{
	if (rec->n_entries != upto - rec->snap_index)
		return false;
	for (uint32_t i = 0; i < rec->n_entries; i++) {
		const struct raft_entry *e = &rec->entries[i];
		uint64_t idx = rec->snap_index + 1 + i;
		if (e->index != idx || e->term != m->term[idx] ||
		    e->len != m->len[idx] ||
		    (e->len && memcmp(e->data, m->data[idx], e->len)))
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
	struct wal *w = open_wal(d, &rec, NULL, err, sizeof(err));
	KEEL_ASSERT(w);
	wal_recovered_free(w, &rec);
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
		struct wal *w = open_wal(d, &rec, NULL, err, sizeof(err));
		ASSERT(w);
		wal_recovered_free(w, &rec);
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
			uint64_t idx = e->index;
			bool as_written = idx <= written.n &&
					  e->term == written.term[idx] &&
					  e->len == written.len[idx] &&
					  (!e->len ||
					   !memcmp(e->data, written.data[idx], e->len));
			bool as_synced = idx <= synced.n &&
					 e->term == synced.term[idx] &&
					 e->len == synced.len[idx] &&
					 (!e->len ||
					  !memcmp(e->data, synced.data[idx], e->len));
			ok = as_written || as_synced;
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
	struct wal_recovered rec;
	char err[256];
	struct wal *w = open_wal(d, &rec, NULL, err, sizeof(err));
	KEEL_ASSERT(w);
	wal_recovered_free(w, &rec);
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
	struct wal *w = open_wal(d, &rec, NULL, err, sizeof(err));
	ASSERT(w);
	wal_recovered_free(w, &rec);
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
	struct wal *w = open_wal(d, &rec, NULL, err, sizeof(err));
	ASSERT(w);
	wal_recovered_free(w, &rec);
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
		struct wal *w = open_wal(d, &rec, NULL, err, sizeof(err));
		ASSERT(w);
		wal_recovered_free(w, &rec);
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
		struct wal *w = open_wal(d, &rec, NULL, err, sizeof(err));
		ASSERT(w);
		wal_recovered_free(w, &rec);
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
	struct wal *w = open_wal(d, &rec, NULL, err, sizeof(err));
	ASSERT(w);
	wal_recovered_free(w, &rec);
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
	/* Covers segment 1 only: it is removed and wal/ synced. */
	const uint8_t snap[] = "state at the end of segment 1";
	ASSERT(wal_snapshot_save(w, seg1_last, 1, snap, sizeof(snap)) == 0);
	wal_close(w);
	memdisk_crash(d, MEMDISK_LOSE_UNSYNCED);
	EXPECT(memdisk_file_size(d, "wal/0000000000000003.wal") == 0);

	w = open_wal(d, &rec, NULL, err, sizeof(err));
	ASSERT(w);
	bool removed = false;
	for (uint32_t i = 0; i < rec.n_warnings; i++)
		removed |= strstr(rec.warning[i], "0003.wal: torn before") != NULL;
	EXPECT(removed);
	EXPECT(numbered_log(&rec, seg1_last + 1, synced));
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
	EXPECT_EQ_U64(rec.snap_index, seg1_last);
	EXPECT(numbered_log(&rec, seg1_last + 1, more));
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
			struct wal *w = open_wal(d, &rec, NULL, err, sizeof(err));
			ASSERT(w);
			wal_recovered_free(w, &rec);
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
	uint64_t si = st.last_index - 5;
	const uint8_t payload[] = "state machine at si";
	EXPECT(wal_snapshot_save(w, si, m.term[si], payload, sizeof(payload)) == 0);
	wal_stats(w, &st);
	EXPECT(st.segments < before);
	wal_close(w);
	struct wal_recovered rec;
	char err[256];
	int rv;
	w = open_wal(d, &rec, &rv, err, sizeof(err));
	ASSERT(w);
	EXPECT_EQ_U64(rec.snap_index, si);
	EXPECT(rec.snap_len == sizeof(payload));
	EXPECT(!memcmp(rec.snap_data, payload, sizeof(payload)));
	EXPECT(same_log(&rec, &m, m.n));
	wal_recovered_free(w, &rec);
	wal_close(w);
	/* Rot the snapshot: it is ignored, and the log no longer reaches
	 * back to index 1, so start-up refuses rather than serve a gap. */
	char name[96];
	snprintf(name, sizeof(name), "snap/%016llx-%016llx.snap",
		 (unsigned long long)si, (unsigned long long)m.term[si]);
	ASSERT(memdisk_flip_bit(d, name, 70 * 8) == 0);
	w = open_wal(d, &rec, &rv, err, sizeof(err));
	EXPECT(w == NULL);
	EXPECT(rv == KEEL_ERR_CORRUPT);
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
