/*
 * kv.h -- keel's replicated state machine: a Redis string keyspace with
 * etcd-style revisions, absolute TTLs, an ordered index, an expiry index and
 * deterministic snapshots.
 *
 * kv is pure: no I/O, no clock, no printing, no global state. Every replica
 * applies the same command entries in log order and reaches byte-identical
 * state and identical replies. Time enters only as arguments: the leader's
 * timestamp inside each command entry (kv_apply) and the caller's "now" for
 * reads (kv_read). A key whose expire_at_ms <= now is logically absent
 * everywhere; it is physically removed when the leader proposes
 * KEEL.EXPIRE-DELETE (see kv_next_expired) or when a write overwrites it.
 *
 * Replies go out through struct kv_reply_ops, so kv knows nothing of RESP.
 * See docs/kv.md for the data model, the entry and snapshot byte formats,
 * the SCAN cursor and the deviations from Redis.
 */
#ifndef KEEL_KV_H
#define KEEL_KV_H

#include "keel/common.h"

/* ---- limits -------------------------------------------------------------- */

/* Caps on what a command entry, a key or a value may hold. The argument cap
 * is Redis's proto-max-bulk-len default; entries larger than KV_MAX_CMD_BYTES
 * are refused at decode time (the server should refuse them far earlier). */
#define KV_MAX_ARGC (1u << 20)
#define KV_MAX_ARG_BYTES (512u << 20)
#define KV_MAX_VALUE_BYTES KV_MAX_ARG_BYTES
#define KV_MAX_KEY_BYTES KV_MAX_ARG_BYTES
#define KV_MAX_CMD_BYTES ((size_t)1 << 30)

/* ---- replies ------------------------------------------------------------- */

/* The reply builder. kv calls these in RESP order: array(n) is followed by
 * exactly n elements. Strings passed to status/error are NUL-terminated and
 * borrowed for the duration of the call; error strings carry their Redis
 * prefix ("ERR ...", "WRONGTYPE ..."). bulk pointers are borrowed too. */
struct kv_reply_ops {
	void (*status)(void *ctx, const char *s);
	void (*error)(void *ctx, const char *s);
	void (*integer)(void *ctx, int64_t v);
	void (*bulk)(void *ctx, const uint8_t *p, size_t len);
	void (*null)(void *ctx); /* nil bulk / RESP3 null */
	void (*array)(void *ctx, size_t n);
};

/* ---- reply tapes --------------------------------------------------------- */

/* A tape records reply-builder calls as bytes so a reply computed now (at
 * apply time) can be played later into whatever encoder the client's
 * connection uses (RESP2 or RESP3). Format: a sequence of
 *   's' u32 len bytes   status      'e' u32 len bytes   error
 *   'i' i64             integer     'b' u32 len bytes   bulk
 *   'n'                 null        'a' u32 n           array of n
 * little-endian. kv_tape_play validates everything (lengths, that arrays
 * are complete, nesting <= KV_TAPE_MAX_DEPTH) and plays exactly one reply. */
#define KV_TAPE_MAX_DEPTH 16

struct kv_tape {
	const struct keel_alloc *alloc;
	uint8_t *buf;
	size_t len, cap;
	size_t max_bytes; /* beyond it the tape fails (not silently cut) */
	bool failed;      /* out of memory or over max_bytes */
};

extern const struct kv_reply_ops kv_tape_ops; /* ctx = struct kv_tape * */

void kv_tape_init(struct kv_tape *t, const struct keel_alloc *a,
		  size_t max_bytes);
void kv_tape_reset(struct kv_tape *t);
void kv_tape_close(struct kv_tape *t);

/* Plays one reply from tape into ops. Returns 0, or KEEL_ERR_MALFORMED
 * (nothing is trusted: a truncated or nonsensical tape is refused, though
 * calls made before the error have happened). */
int kv_tape_play(const uint8_t *tape, size_t len,
		 const struct kv_reply_ops *ops, void *ctx);

/* ---- command table ------------------------------------------------------- */

enum kv_command_flags {
	KV_CMD_WRITE = 1u << 0,    /* must go through the log (kv_apply) */
	KV_CMD_READ = 1u << 1,     /* may be served by kv_read */
	KV_CMD_ADMIN = 1u << 2,    /* FLUSHDB/FLUSHALL: dangerous */
	KV_CMD_INTERNAL = 1u << 3, /* proposed by the leader only, never by a client */
	KV_CMD_REWRITE = 1u << 4,  /* has relative TTLs: run kv_rewrite_relative */
	KV_CMD_FAST = 1u << 5,     /* O(1) or O(log n) */
	/* The server's own building blocks (KEEL.EXEC, KEEL.WATCH-REVS):
	 * routed by the node like any write or read, but not client
	 * commands (the server builds them for EXEC and WATCH). */
	KV_CMD_SERVER = 1u << 6,
	/* Runs other commands (KEEL.EXEC, KEEL.TXN): never inside another
	 * transaction; kv_rewrite_relative rewrites its sub-commands. */
	KV_CMD_TXN = 1u << 7,
};


/* One row per command, as data the server's command table can use for
 * COMMAND, arity errors and routing. name is lowercase; arity uses Redis's
 * convention (the command name counts; negative = at least -arity).
 * first_key/last_key/step are 1-based argv positions (last_key -1 = last
 * argument); 0 = no keys. */
struct kv_ctx; /* kv_internal.h */
typedef int (*kv_cmd_fn)(struct kv_ctx *c);

struct kv_command {
	const char *name;
	int arity;
	uint32_t flags;
	int first_key;
	int last_key;
	int step;
	const char *group; /* COMMAND DOCS: "string", "generic", ... */
	const char *acl;   /* Redis ACL categories: "@write @string @fast" */
	kv_cmd_fn proc;    /* runs it (kv_internal.h's struct kv_ctx) */
};

extern const struct kv_command kv_commands[];
extern const size_t kv_commands_count;

/* Case-insensitive lookup; NULL when kv does not implement the command. */
const struct kv_command *kv_command_lookup(const uint8_t *name, size_t len);

/* May cmd run inside a transaction (MULTI/EXEC, KEEL.TXN)? Not the
 * internal, admin (FLUSHDB/FLUSHALL), server-only or transaction
 * commands. */
bool kv_command_txn_allowed(const struct kv_command *cmd);

/* ---- command entries ----------------------------------------------------- */

/* The bytes of a write command in a Raft log entry (little-endian):
 *   u8  version (KV_CMD_VERSION)
 *   u64 now_ms     the leader's wall clock when it proposed
 *   u32 argc       1..KV_MAX_ARGC
 *   argc times: u32 len (<= KV_MAX_ARG_BYTES), len bytes
 * and nothing after. docs/kv.md has the table. */
#define KV_CMD_VERSION 1
#define KV_CMD_HEADER_BYTES 13

/* Bytes needed to encode argv; 0 if it breaks a cap (argc, an arg length,
 * or the total exceeds KV_MAX_CMD_BYTES). */
size_t kv_cmd_encoded_size(int argc, const size_t *lens);

/* Encodes into buf (cap bytes). Returns 0 and sets *out_len, KEEL_ERR_INVAL
 * for argc < 1, KEEL_ERR_TOO_BIG if a cap is broken or cap is too small. */
int kv_cmd_encode(uint64_t now_ms, int argc, const uint8_t *const *argv,
		  const size_t *lens, uint8_t *buf, size_t cap, size_t *out_len);

/* Decodes an entry. argv[i] point into buf (borrowed: valid while buf is).
 * argv/lens have room for max_args. Returns 0; KEEL_ERR_VERSION,
 * KEEL_ERR_TRUNCATED, KEEL_ERR_TOO_BIG (a cap) or KEEL_ERR_MALFORMED (argc
 * 0, trailing bytes); or KEEL_ERR_NOSPACE with *argc set when the entry is
 * valid but has more than max_args arguments (call again with more room).
 * Never reads outside buf[0..len). */
int kv_cmd_decode(const uint8_t *buf, size_t len, uint64_t *now_ms,
		  uint32_t *argc, const uint8_t **argv, size_t *lens,
		  size_t max_args);

/* The leader's proposal step: encodes argv as an entry stamped now_ms with
 * relative TTLs made absolute, so the log says when a key expires, not
 * "in 10 seconds from some clock":
 *   SET .. EX s / PX ms     -> SET .. PXAT now+ms
 *   SETEX k s v / PSETEX    -> SET k v PXAT now+ms
 *   GETEX .. EX s / PX ms   -> GETEX .. PXAT now+ms
 *   EXPIRE k s / PEXPIRE    -> PEXPIREAT k now+ms [NX|XX|GT|LT]
 * A form that does not parse (bad number, overflow, wrong arity) is encoded
 * unchanged: kv_apply then gives Redis's error, computed against the same
 * now_ms, so rewriting never changes a reply or the resulting state.
 * *out is allocated through a and owned by the caller (a->free). */
int kv_rewrite_relative(const struct keel_alloc *a, uint64_t now_ms, int argc,
			const uint8_t *const *argv, const size_t *lens,
			uint8_t **out, size_t *out_len);

/* ---- the state machine --------------------------------------------------- */

struct kv;

/* Per-key metadata. Invariant: 1 <= create_revision <= mod_revision <= the
 * global revision; version >= 1 counts the write entries that changed the
 * key since it was created. */
struct kv_meta {
	uint64_t create_revision;
	uint64_t mod_revision;
	uint64_t version;
	uint64_t expire_at_ms; /* 0 = no expiry */
};

struct kv_stats {
	uint64_t keys;          /* stored, including expired-not-yet-deleted */
	uint64_t expires;       /* stored keys with a TTL */
	uint64_t bytes;         /* keys + value buffers + per-key overhead */
	uint64_t key_bytes;     /* sum of key lengths */
	uint64_t value_bytes;   /* sum of value lengths */
	uint64_t revision;      /* global revision */
	uint64_t applied_index; /* last log index applied */
};

/* Creates an empty kv (revision 0, applied index 0). a must outlive it.
 * NULL on allocation failure. */
struct kv *kv_create(const struct keel_alloc *a);
void kv_destroy(struct kv *kv);

#ifdef KEEL_MUTANTS
/* Planted bugs for the simulator's mutation runs (keel sim --mutant; the
 * node sets them on every kv it applies to). */
enum kv_mutant {
	KV_MUTANT_NONE = 0,
	/* A transaction with more than one write command stops after its
	 * first one (as if it returned half way, without undo). */
	KV_MUTANT_TXN_PARTIAL = 1,
	/* KEEL.EXEC ignores its WATCH conditions. */
	KV_MUTANT_WATCH_BLIND = 2,
};
void kv_set_mutant(struct kv *kv, int mutant);
#endif

/* Applies the command entry at log index (> the last applied index) and
 * writes its reply through reply/reply_ctx. Total: any bytes give a reply
 * (an error reply for a malformed entry, an unknown command, wrong arity).
 * Bumps the global revision by one if the entry changed anything.
 * Returns 0, or KEEL_ERR_NOMEM: then the reply may be missing or partial.
 * Single-key commands allocate before they change anything, and a
 * transaction (KEEL.EXEC, KEEL.TXN) undoes what it did from its undo
 * journal, so the state and the applied index are unchanged and the entry
 * may be applied again; a multi-key command (MSET) outside a transaction
 * may have changed part of the state -- then the replica must stop and
 * recover from a snapshot and the log. */
int kv_apply(struct kv *kv, uint64_t index, const uint8_t *cmd, size_t len,
	     const struct kv_reply_ops *reply, void *reply_ctx);

/* Runs a read-only command against the current state at now_ms (expired
 * keys are invisible; nothing is modified). argv is borrowed. Write
 * commands get an error reply. Returns 0 (reads never allocate). */
int kv_read(struct kv *kv, int argc, const uint8_t *const *argv,
	    const size_t *lens, uint64_t now_ms,
	    const struct kv_reply_ops *reply, void *reply_ctx);

/* Point lookup at now_ms. Returns true and fills *val (borrowed until the
 * next kv_apply), *len and *meta (if non-NULL) when the key is live. */
bool kv_get(const struct kv *kv, const uint8_t *key, size_t klen,
	    uint64_t now_ms, const uint8_t **val, size_t *len,
	    struct kv_meta *meta);

/* Visitor for kv_range and friends; return non-zero to stop. Everything
 * passed is borrowed for the call. */
struct kv_visit {
	int (*cb)(void *ctx, const uint8_t *key, size_t klen,
		  const uint8_t *val, size_t vlen, const struct kv_meta *meta);
	void *ctx;
};

/* Live keys in [start, end) in key order (memcmp, shorter first), at most
 * limit (0 = no limit). end == NULL means unbounded. O(log n + k) plus the
 * expired keys skipped. Returns the number visited. */
uint64_t kv_range(const struct kv *kv, const uint8_t *start, size_t slen,
		  const uint8_t *end, size_t elen, uint64_t now_ms,
		  uint64_t limit, const struct kv_visit *v);

/* Live keys starting with prefix, in key order, at most limit (0 = all). */
uint64_t kv_prefix(const struct kv *kv, const uint8_t *prefix, size_t plen,
		   uint64_t now_ms, uint64_t limit, const struct kv_visit *v);

/* The leader's expiry sweep: visits up to max stored keys with
 * expire_at_ms <= now_ms, soonest first, in O(log n + k). For each, the
 * leader proposes KEEL.EXPIRE-DELETE key mod_revision. Returns the count. */
uint64_t kv_next_expired(const struct kv *kv, uint64_t now_ms, uint64_t max,
			 const struct kv_visit *v);

/* Number of live keys at now_ms: O(log n) (order-statistic expiry index). */
uint64_t kv_dbsize(const struct kv *kv, uint64_t now_ms);

void kv_stats(const struct kv *kv, struct kv_stats *st);

/* A 64-bit digest of the full state (every key, value and metadata field,
 * the revision and the applied index), in key order: O(total bytes).
 * Equal states give equal digests on every platform. */
uint64_t kv_digest(const struct kv *kv);

/* Matches str against a Redis glob pattern (*, ?, [abc], [^a], [a-z], \x). */
bool kv_glob_match(const uint8_t *pat, size_t plen, const uint8_t *str,
		   size_t slen);

/* ---- transactions (docs/kv.md, "Transactions") ------------------------------ */

/* Limits of one transaction command: sub-commands and compares. */
#define KV_TXN_MAX_CMDS 65536
#define KV_TXN_MAX_COMPARES 4096

/* Writes v in decimal with a NUL into buf (room for 21 bytes) and returns
 * the digit count: the form kv's commands and replies use for numbers. */
size_t kv_fmt_u64(uint64_t v, char *buf);

/* ---- snapshots ----------------------------------------------------------- */

/* A snapshot is: a 56-byte header, one record per key in key order, and a
 * CRC32C trailer (docs/kv.md). The writer yields it in chunks of any size,
 * so a large keyspace can be streamed. The kv must not change while a plain
 * writer (kv_snapshot_writer_*) is live; a frozen version (kv_freeze, below)
 * streams the state at its freeze while applies go on. */
#define KV_SNAP_VERSION 2
/* 56 fixed bytes, then KV_CREATE_MARKS u64 creation marks (docs/kv.md,
 * "Transactions"). */
#define KV_CREATE_MARKS 16
#define KV_SNAP_HEADER_BYTES (56 + 8 * KV_CREATE_MARKS)
#define KV_SNAP_RECORD_BYTES 40

struct kv_snap_writer;

/* Exact size of the snapshot kv would produce now. */
uint64_t kv_snapshot_size(const struct kv *kv);

/* NULL on allocation failure. The writer borrows kv. */
struct kv_snap_writer *kv_snapshot_writer_create(const struct kv *kv,
						 const struct keel_alloc *a);
/* Fills buf with up to cap (> 0) next bytes; *n is how many. Returns true
 * while more bytes follow, false once the last byte was produced. */
bool kv_snapshot_writer_next(struct kv_snap_writer *w, uint8_t *buf,
			     size_t cap, size_t *n);
void kv_snapshot_writer_destroy(struct kv_snap_writer *w);

/* Whole snapshot into one allocation (*out owned by the caller, freed with
 * a->free). 0 or KEEL_ERR_NOMEM / KEEL_ERR_TOO_BIG. */
int kv_snapshot_encode(const struct kv *kv, const struct keel_alloc *a,
		       uint8_t **out, size_t *out_len);

/* Builds a new kv from snapshot bytes (borrowed). Returns 0 and *out;
 * KEEL_ERR_MAGIC, KEEL_ERR_VERSION, KEEL_ERR_TRUNCATED, KEEL_ERR_CORRUPT
 * (CRC), KEEL_ERR_TOO_BIG (a cap), KEEL_ERR_MALFORMED (bad order or
 * metadata) or KEEL_ERR_NOMEM. Never crashes on any input. */
int kv_snapshot_decode(const struct keel_alloc *a, const uint8_t *buf,
		       size_t len, struct kv **out);

/* ---- the frozen version (docs/snapshots.md §1.2) -------------------------- */

/* A frozen version streams the snapshot of the state at the moment of the
 * freeze while kv_apply goes on changing the kv: until it is destroyed,
 * every apply that changes a key the writer has not passed yet first keeps
 * that key's old record (a pre-image) for the writer. The index is the kv's
 * own applied index at the freeze (the last kv_apply index, or the index of
 * the snapshot the kv was decoded from); nothing is passed in.
 *
 * At most one is live per kv; kv_destroy of a kv with a live frozen version
 * is a programmer error (asserted): destroy the frozen version first.
 * NULL on allocation failure or when one is live. The frozen version
 * borrows kv (it must outlive it); a owns the struct itself; pre-images are
 * allocated through the kv's own allocator. Applies may fail with
 * KEEL_ERR_NOMEM when a pre-image cannot be allocated (state unchanged, as
 * for any single-key command). */
struct kv_frozen;
struct kv_frozen *kv_freeze(struct kv *kv, const struct keel_alloc *a);
/* Exact byte count of the snapshot (= kv_snapshot_size at the freeze). */
uint64_t kv_frozen_size(const struct kv_frozen *f);
/* The applied index at the freeze (the snapshot header's). */
uint64_t kv_frozen_index(const struct kv_frozen *f);
/* Same contract as kv_snapshot_writer_next: up to cap (> 0) next bytes of
 * the snapshot of the state AT THE FREEZE into buf, *n how many; true
 * while more follow. Applies to the kv may run between calls (not during
 * one). The bytes equal kv_snapshot_encode of the state at the freeze. */
bool kv_frozen_next(struct kv_frozen *f, uint8_t *buf, size_t cap, size_t *n);
/* Memory held now by pre-images (entries, keys, values), in bytes. Goes
 * down as the writer passes their keys; 0 once the last record is out. */
size_t kv_frozen_preimage_bytes(const struct kv_frozen *f);
/* Frees every pre-image and the frozen version; applies stop keeping
 * pre-images. NULL is a no-op. */
void kv_frozen_destroy(struct kv_frozen *f);

/* ---- the streaming reader (docs/snapshots.md §3.5) -------------------------- */

/* Decodes snapshot bytes as they arrive, in any split, into a new kv, with
 * the verdict kv_snapshot_decode would give for the concatenated bytes.
 * max_bytes caps the snapshot's total-length field (0 = no cap): a larger
 * snapshot is refused with KEEL_ERR_TOO_BIG as soon as the header is in
 * (the one verdict kv_snapshot_decode, which has no such cap, does not
 * give). Every other length is capped before anything is allocated. NULL
 * on allocation failure. a must outlive the reader and the kv it makes. */
struct kv_snap_reader;
struct kv_snap_reader *kv_snap_reader_create(const struct keel_alloc *a,
					     uint64_t max_bytes);
/* buf is borrowed for the call. Returns 0, or the error kv_snapshot_decode
 * would give for these bytes as soon as it is certain whatever follows
 * (then every later call returns it): KEEL_ERR_MAGIC after 8 bytes,
 * KEEL_ERR_VERSION / KEEL_ERR_TOO_BIG after 60, KEEL_ERR_MALFORMED as soon
 * as more bytes than the total length arrive. KEEL_ERR_NOMEM when an
 * allocation fails (as early as it happens). KEEL_ERR_INVAL after a
 * successful finish. A bad CRC or field is judged as its bytes arrive but
 * reported by finish: until then one more byte would still make the
 * verdict KEEL_ERR_MALFORMED. */
int kv_snap_reader_feed(struct kv_snap_reader *r, const uint8_t *buf,
			size_t len);
/* All bytes fed: checks the length (KEEL_ERR_TRUNCATED if bytes are
 * missing), then the trailer CRC (KEEL_ERR_CORRUPT), then the first field
 * error, in kv_snapshot_decode's order. 0 and *out (a new kv, owned by the
 * caller) or the error (*out untouched). */
int kv_snap_reader_finish(struct kv_snap_reader *r, struct kv **out);
/* Frees the reader and an unfinished kv. NULL is a no-op. */
void kv_snap_reader_destroy(struct kv_snap_reader *r);

#endif /* KEEL_KV_H */
