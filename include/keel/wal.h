/*
 * wal.h -- keel's durable storage: a segmented write-ahead log of Raft
 * entries, the hard state (term, vote, commit) in two alternating slots,
 * and snapshots. Byte layout and recovery rules: docs/disk-format.md.
 *
 * All I/O goes through the env disk (disk.h), synchronously: in the server
 * the WAL lives on the disk thread; in the simulator it runs over memdisk.
 * Not thread-safe: one owner at a time.
 *
 * Durability contract: wal_append and wal_save_hard_state only stage;
 * nothing is durable until wal_sync returns 0, and then everything staged
 * before it is (group commit: one fdatasync per batch). After any I/O error
 * the WAL is poisoned: every later call that writes returns the first
 * error and nothing more is ever acknowledged (never retry an fsync).
 */
#ifndef KEEL_WAL_H
#define KEEL_WAL_H

#include "keel/disk.h"
#include "keel/raft.h"

#define WAL_VERSION 1
#define WAL_SEGMENT_HEADER 64
#define WAL_RECORD_HEADER 32
#define WAL_DEFAULT_SEGMENT_BYTES (64u << 20)
#define WAL_MIN_SEGMENT_BYTES (4u << 10)

struct wal_config {
	struct keel_disk disk;
	const struct keel_alloc *alloc; /* NULL = libc */
	uint64_t cluster_id;
	uint64_t segment_bytes;    /* 0 = WAL_DEFAULT_SEGMENT_BYTES */
	uint32_t max_record_bytes; /* 0 = segment_bytes - 96 */
#ifdef KEEL_MUTANTS
	int mutant; /* enum wal_mutant, in force from recovery on */
#endif
};

/* What recovery found. Entries are owned by the WAL until
 * wal_recovered_free (copy what you keep: raft_restore does). The newest
 * valid snapshot is named, not loaded: its payload never sits in RAM
 * whole (recovery verified its CRC by streaming over it); read it with
 * wal_snapshot_read. */
struct wal_recovered {
	struct raft_hard_state hs;
	uint64_t snap_index; /* 0 = no snapshot */
	uint64_t snap_term;
	uint64_t snap_len;  /* payload bytes */
	uint32_t snap_crc;  /* CRC32C of the payload */
	const struct raft_entry *entries; /* snap_index+1 .. */
	uint32_t n_entries;
	/* A torn tail was cut (a warning, not an error). */
	bool torn_tail;
	uint32_t n_warnings;
	char warning[4][256];
};

struct wal;

/* Opens (creating wal/ and snap/ if missing) and recovers. On failure
 * returns an error with a message in err naming the file and the byte
 * offset: KEEL_ERR_CORRUPT (a bad record followed by good data, a gap, a
 * damaged hard state), KEEL_ERR_CLUSTER (a segment of another cluster),
 * KEEL_ERR_IO, KEEL_ERR_NOMEM, KEEL_ERR_INVAL (bad config). */
int wal_open(const struct wal_config *cfg, struct wal **out,
	     struct wal_recovered *rec, char *err, size_t err_len);

/* Releases what recovery handed out. */
void wal_recovered_free(struct wal *w, struct wal_recovered *rec);

/* Closes without syncing; staged data may be lost (as in a crash). */
void wal_close(struct wal *w);

/* Stages entries. ents[0].index may be <= the last index (a new leader
 * overwrote a conflicting suffix): the overwrite is itself an append
 * (docs/disk-format.md). Entries must be contiguous, above the snapshot.
 * Returns 0, KEEL_ERR_TOO_BIG, KEEL_ERR_INVAL, the poison error. */
int wal_append(struct wal *w, const struct raft_entry *ents, uint32_t n);

/* Stages the hard state; made durable by the next wal_sync (the slot file
 * is synced only when term or vote changed: §3.8 lets commit be volatile,
 * so a commit-only change is written but not forced). */
int wal_save_hard_state(struct wal *w, const struct raft_hard_state *hs);

/* Writes everything staged and makes it durable. */
int wal_sync(struct wal *w);

/* Writes the staged records to the disk without syncing them (they sit in
 * the page cache: a crash may keep, lose or tear them). The next wal_sync
 * syncs them. Lets a caller hand bytes to the disk early (the simulator
 * does, so crashes find unsynced data to tear); never needed for
 * durability. 0 or the poison error. */
int wal_flush(struct wal *w);

/* ---- snapshots (docs/disk-format.md "Snapshots", docs/snapshots.md §2) --
 *
 * Streamed: begin opens snap/<index>-<term>.snap.tmp; writes put payload
 * bytes at consecutive offsets (unsynced; the WAL keeps its own CRC32C of
 * them); finish checks length and CRC, writes the 64-byte header,
 * fdatasyncs, renames, fsyncs snap/ and then compacts:
 *   LOCAL     (this node's own state at index, which must be in the log):
 *             removes segments wholly <= the PREVIOUS snapshot's index and
 *             every snapshot older than that previous one (two are kept,
 *             docs/snapshots.md §1.4);
 *   RECEIVED  (InstallSnapshot): a reset record (index, term) in a fresh
 *             segment, synced, then every older segment and snapshot goes.
 * At most one snapshot of each kind is open at a time. A segment is only
 * ever removed when every record in it is <= the index of a snapshot whose
 * rename and directory fsync completed (asserted). */
#define WAL_SNAP_LOCAL 1
#define WAL_SNAP_RECEIVED 2
#define WAL_SNAP_MAX_BYTES ((uint64_t)1 << 40) /* largest payload */
#define WAL_SNAP_READ_MAX (1u << 20)           /* largest wal_snapshot_read */

/* *handle > 0 names the open snapshot. index > the newest snapshot's, and
 * for LOCAL <= the last logged index. Returns 0, KEEL_ERR_BUSY (one of
 * that kind is open), KEEL_ERR_TOO_BIG (total_len > WAL_SNAP_MAX_BYTES),
 * KEEL_ERR_INVAL, the poison error (an I/O error poisons). */
int wal_snapshot_begin(struct wal *w, uint64_t index, uint64_t term,
		       uint64_t total_len, int kind, uint64_t *handle);

/* Writes data[0..len) (borrowed for the call) at payload offset `offset`,
 * which must be the number of bytes written so far; the end must stay <=
 * total_len. Not synced. 0, KEEL_ERR_INVAL (unknown handle, offset out of
 * order or past the end), the poison error. */
int wal_snapshot_write(struct wal *w, uint64_t handle, uint64_t offset,
		       const uint8_t *data, size_t len);

/* Makes the snapshot durable and compacts (above). crc is the caller's
 * CRC32C of the whole payload. KEEL_ERR_CORRUPT when fewer than total_len
 * bytes were written or crc differs from the WAL's own (the snapshot is
 * dropped, its temp file removed; the WAL is not poisoned: the log is
 * intact). KEEL_ERR_INVAL for an unknown handle, or for a LOCAL snapshot
 * overtaken meanwhile (a newer snapshot was installed, or its index left
 * the log): dropped likewise. Any I/O error poisons. The handle is closed
 * in every case. */
int wal_snapshot_finish(struct wal *w, uint64_t handle, uint32_t crc);

/* Drops an open snapshot and its temp file (an unknown handle is a
 * no-op). Errors while removing are ignored: start-up removes *.tmp. */
void wal_snapshot_abort(struct wal *w, uint64_t handle);

/* Reads exactly len <= WAL_SNAP_READ_MAX payload bytes at offset of the
 * durable snapshot (index, term) into buf. 0; KEEL_ERR_NOT_FOUND when that
 * snapshot is not one the WAL keeps (removed, never finished, damaged);
 * KEEL_ERR_INVAL past the payload's end or len too big; KEEL_ERR_IO.
 * Reads never poison. */
int wal_snapshot_read(struct wal *w, uint64_t index, uint64_t term,
		      uint64_t offset, void *buf, size_t len);

/* One-buffer wrappers (bench, tests): begin + one write + finish. */
int wal_snapshot_save(struct wal *w, uint64_t index, uint64_t term,
		      const uint8_t *data, size_t len);
int wal_snapshot_install(struct wal *w, uint64_t index, uint64_t term,
			 const uint8_t *data, size_t len);

/* The first error that poisoned the WAL, or 0; and a message. */
int wal_poisoned(const struct wal *w);
const char *wal_errmsg(const struct wal *w);

struct wal_stats {
	uint64_t first_index; /* snap_index + 1 */
	uint64_t last_index;
	uint64_t segments;
	uint64_t syncs;
	uint64_t appended_bytes;
	uint64_t snap_index;
	uint64_t snaps_kept; /* durable snapshots the WAL keeps (<= 2) */
};
void wal_stats(const struct wal *w, struct wal_stats *st);

#ifdef KEEL_MUTANTS
enum wal_mutant {
	WAL_MUTANT_NONE = 0,
	WAL_MUTANT_SKIP_CHECKSUM = 1, /* accept records with a bad CRC */
	WAL_MUTANT_NO_TRUNCATE = 2,   /* replay ignores overwrites */
};
void wal_set_mutant(struct wal *w, int mutant);
#endif

#endif /* KEEL_WAL_H */
