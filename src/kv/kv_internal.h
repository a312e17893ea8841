/*
 * kv_internal.h -- what the files of src/kv/ share: the intrusive AVL tree,
 * the key entry, struct kv itself, the mutation helpers every command uses,
 * and the apply/read context the command implementations receive.
 *
 * Each key entry sits in three trees at once (intrusive links, one
 * allocation per key): by key bytes (ordered keyspace: point lookups,
 * ranges, prefixes, snapshots), by (hash, key) (the SCAN cursor order) and,
 * when it has a TTL, by (expire_at_ms, key) (the expiry index, with subtree
 * sizes so DBSIZE is O(log n)).
 */
#ifndef KEEL_KV_INTERNAL_H
#define KEEL_KV_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "keel/common.h"
#include "keel/kv.h"

/* ---- intrusive AVL tree (tree.c) ----------------------------------------- */

struct kv_avl {
	struct kv_avl *left;
	struct kv_avl *right;
	uint32_t height; /* Invariant: 1 + max(child heights); leaf = 1 */
	uint64_t size;   /* Invariant: 1 + child sizes */
};

/* What the comparators compare a node against. Each tree reads the fields
 * its order needs. */
struct kv_probe {
	const uint8_t *key;
	size_t len;
	uint64_t hash;
	uint64_t exp;
};

/* < 0 when probe orders before node, 0 equal, > 0 after. */
typedef int (*kv_avl_cmp_fn)(const struct kv_probe *probe,
			     const struct kv_avl *node);

/* An AVL tree of n nodes is at most 1.44 log2(n + 2) high: 96 covers any n
 * that fits in memory. */
#define KV_AVL_MAX_DEPTH 96

/* In-order cursor: the stack of ancestors still to visit. Invalidated by
 * any insert or remove on its tree. */
struct kv_avl_iter {
	struct kv_avl *stack[KV_AVL_MAX_DEPTH];
	int depth;
};

/* Insert node (must not be present; probe describes it). Returns the new
 * root. */
struct kv_avl *kv_avl_insert(struct kv_avl *root, struct kv_avl *node,
			     const struct kv_probe *probe, kv_avl_cmp_fn cmp);
/* Remove the node equal to probe (must be present). Returns the new root. */
struct kv_avl *kv_avl_remove(struct kv_avl *root, const struct kv_probe *probe,
			     kv_avl_cmp_fn cmp);
struct kv_avl *kv_avl_find(struct kv_avl *root, const struct kv_probe *probe,
			   kv_avl_cmp_fn cmp);
/* Number of nodes ordering strictly before probe. O(log n). */
uint64_t kv_avl_rank(const struct kv_avl *root, const struct kv_probe *probe,
		     kv_avl_cmp_fn cmp);
/* Positions it at the first node >= probe (probe NULL: the first node). */
void kv_avl_seek(struct kv_avl_iter *it, struct kv_avl *root,
		 const struct kv_probe *probe, kv_avl_cmp_fn cmp);
static inline struct kv_avl *kv_avl_cur(const struct kv_avl_iter *it)
{
	return it->depth > 0 ? it->stack[it->depth - 1] : NULL;
}
void kv_avl_next(struct kv_avl_iter *it);
/* Hands every node of the tree to visit(arg, node) in key order, taking
 * the tree apart as it goes (rotated into a right spine: no recursion, no
 * rebalancing); visit may free the node. The tree is gone afterwards. */
void kv_avl_drain(struct kv_avl *root, void (*visit)(void *arg, struct kv_avl *n),
		  void *arg);

/* ---- entries and struct kv (kv.c) ---------------------------------------- */

struct kv_entry {
	struct kv_avl by_key;
	struct kv_avl by_hash;
	struct kv_avl by_exp; /* linked only when expire_at_ms != 0 */
	uint64_t hash;        /* kv_key_hash(key) */
	struct kv_meta meta;
	uint8_t *val; /* NULL when val_len == 0 */
	size_t val_len;
	size_t val_cap;
	size_t key_len;
	uint8_t key[]; /* key_len bytes */
};

#define KV_CONTAINER(ptr, field)                                              \
	((struct kv_entry *)(void *)((char *)(ptr)-offsetof(struct kv_entry,  \
							      field)))

#define KV_ERRBUF 512

struct kv {
	const struct keel_alloc *a;
	struct kv_avl *by_key;
	struct kv_avl *by_hash;
	struct kv_avl *by_exp;
	uint64_t revision;      /* Invariant: >= every key's mod_revision */
	uint64_t applied_index; /* Invariant: increases with every kv_apply */
	uint64_t count;         /* stored entries */
	uint64_t expires;       /* entries linked in by_exp */
	uint64_t key_bytes;
	uint64_t val_bytes;
	uint64_t val_cap_bytes;
	/* Per-apply state: the revision this entry gets if it changes anything,
	 * and whether it did. */
	uint64_t pending_rev;
	bool changed;
	/* The live frozen version (frozen.c) or NULL. While set, every change
	 * to a key it has not passed keeps a pre-image first. */
	struct kv_frozen *frozen;
	/* Longest key ever linked (never shrinks): sizes the frozen writer's
	 * cursor, since every key at a freeze is at most this long. */
	size_t max_key_len;
	/* Creation marks: create_marks[h(key) % KV_CREATE_MARKS] is the
	 * newest revision that created a key of that bucket. A WATCH of an
	 * absent key at revision R fails if its bucket's mark is above R
	 * (docs/kv.md, "Transactions"). Replicated state: in the snapshot
	 * header and the digest. Invariant: every mark <= revision. */
	uint64_t create_marks[KV_CREATE_MARKS];
	char errbuf[KV_ERRBUF]; /* formatted error replies */
#ifdef KEEL_MUTANTS
	int mutant; /* enum kv_mutant (kv_set_mutant), 0 = none */
#endif
};

/* A planted bug in force (KEEL_MUTANTS builds only; false otherwise). */
#ifdef KEEL_MUTANTS
#define KV_MUTANT(kv, m) ((kv)->mutant == (int)(m))
#else
#define KV_MUTANT(kv, m) false
#endif

static inline unsigned kv_mark_bucket(uint64_t hash)
{
	return (unsigned)(hash % KV_CREATE_MARKS);
}

/* Key order: memcmp, shorter first. <0, 0, >0. */
int kv_keycmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen);
int kv_cmp_key(const struct kv_probe *p, const struct kv_avl *n);
int kv_cmp_hash(const struct kv_probe *p, const struct kv_avl *n);
int kv_cmp_exp(const struct kv_probe *p, const struct kv_avl *n);

uint64_t kv_hash64(const void *data, size_t len, uint64_t seed);
/* The SCAN order: a fixed, unseeded hash so every replica (and a cursor
 * handed from one node to another) agrees. */
uint64_t kv_key_hash(const uint8_t *key, size_t len);

static inline bool kv_entry_expired(const struct kv_entry *e, uint64_t now_ms)
{
	return e->meta.expire_at_ms != 0 && now_ms >= e->meta.expire_at_ms;
}

/* Stored entry (expired or not) or NULL. */
struct kv_entry *kv_lookup(const struct kv *kv, const uint8_t *key,
			   size_t len);
/* Live entry at now_ms or NULL. */
struct kv_entry *kv_lookup_live(const struct kv *kv, const uint8_t *key,
				size_t len, uint64_t now_ms);

/* Mutations, only during kv_apply (they use kv->pending_rev). */
/* Sets key to val. keep_ttl keeps a live key's expiry; otherwise the
 * expiry becomes expire_at (0 = none). Overwriting an expired entry is a
 * creation. 0 or KEEL_ERR_NOMEM (nothing changed then). */
int kv_set_value(struct kv *kv, const uint8_t *key, size_t klen,
		 const uint8_t *val, size_t vlen, bool keep_ttl,
		 uint64_t expire_at, uint64_t now_ms);
/* Appends to a live entry. 0 or KEEL_ERR_NOMEM (nothing changed). */
int kv_append_value(struct kv *kv, struct kv_entry *e, const uint8_t *p,
		    size_t len);
void kv_delete_entry(struct kv *kv, struct kv_entry *e);
/* Changes the expiry alone; for helpers that have kept the key's
 * pre-image already (commands use kv_change_expire). */
void kv_set_expire(struct kv *kv, struct kv_entry *e, uint64_t expire_at);
/* A command's TTL change of a live entry: keeps the pre-image a frozen
 * version needs, then sets the expiry and touches e. 0 or KEEL_ERR_NOMEM
 * (nothing changed). */
int kv_change_expire(struct kv *kv, struct kv_entry *e, uint64_t expire_at);
/* Marks e written by this entry: mod_revision and, once per entry, version. */
void kv_touch(struct kv *kv, struct kv_entry *e);
void kv_clear(struct kv *kv);
/* Inserts a fully built entry (snapshot decode). e must be absent. */
void kv_link_entry(struct kv *kv, struct kv_entry *e);
/* key NULL: the key bytes (and e->hash) are the caller's to fill. */
struct kv_entry *kv_entry_alloc(struct kv *kv, const uint8_t *key,
				size_t klen);
void kv_entry_free(struct kv *kv, struct kv_entry *e);

/* ---- snapshots (snapshot.c, frozen.c, reader.c) ---------------------------- */

void kv_snap_header(const struct kv *kv, uint8_t *h);
void kv_snap_record(const struct kv_entry *e, uint8_t *r);
/* Takes the creation marks from header h into kv; false if one is above
 * revision (malformed). */
bool kv_snap_marks(struct kv *kv, const uint8_t *h, uint64_t revision);
extern const uint8_t kv_snap_magic[8];

/* The frozen version's side of the mutation helpers (kv.c). A pre-image is
 * a struct kv_entry linked by its by_key node into the frozen version's
 * own tree; create_revision 0 marks ABSENT (the key did not exist at the
 * freeze). */
static inline bool kv_entry_is_absent(const struct kv_entry *e)
{
	return e->meta.create_revision == 0;
}
/* Does a change to key need a pre-image now: the writer has not passed the
 * key and it has none yet? */
bool kv_frozen_wants(const struct kv_frozen *f, const uint8_t *key,
		     size_t klen);
/* Room in the cursor for a key of klen bytes (an ABSENT pre-image's key
 * may be longer than any key at the freeze). 0 or KEEL_ERR_NOMEM. */
int kv_frozen_reserve(struct kv_frozen *f, size_t klen);
/* Takes pre (allocated through the kv's allocator) as the pre-image of
 * its key. Requires kv_frozen_wants(pre's key). */
void kv_frozen_keep(struct kv_frozen *f, struct kv_entry *pre);

/* ---- commands (commands.c, ops.c) ---------------------------------------- */

struct kv_ctx {
	struct kv *kv;
	uint64_t now_ms;
	int argc;
	const uint8_t *const *argv;
	const size_t *lens;
	const struct kv_command *cmd;
	const struct kv_reply_ops *r;
	void *rc;
	bool in_apply; /* false in kv_read: mutation is a bug */
};

/* The transaction commands (txn.c). */
int kv_cmd_keel_exec(struct kv_ctx *c);
int kv_cmd_keel_txn(struct kv_ctx *c);
int kv_cmd_keel_watch_revs(struct kv_ctx *c);

/* Where the parts of a KEEL.EXEC / KEEL.TXN argv are (txn.c). Sub-command
 * lists start at *_pos: each sub-command is a decimal count n >= 1 and
 * then its n arguments. */
struct kv_txn_layout {
	bool exec;    /* KEEL.EXEC: watch triples; KEEL.TXN: compares */
	int ncond;    /* watch triples or compares */
	int cond_pos; /* argv index of the first one */
	int nthen, then_pos;
	int nelse, else_pos; /* nelse 0 and else_pos = argc without ELSE */
};
/* Parses the layout (counts, bounds, sub-command counts) without looking
 * at the sub-commands' names. false = malformed; then *err says why (a
 * static string, no "ERR " prefix). */
bool kv_txn_parse_layout(int argc, const uint8_t *const *argv,
			 const size_t *lens, struct kv_txn_layout *l,
			 const char **err);


/* Reply helpers. */
void kv_reply_ok(struct kv_ctx *c);
void kv_reply_err(struct kv_ctx *c, const char *s);
/* "ERR <a><arg sanitised><b>" into kv->errbuf. */
void kv_reply_errf(struct kv_ctx *c, const char *a, const uint8_t *arg,
		   size_t arglen, const char *b);
void kv_reply_bulk_entry(struct kv_ctx *c, const struct kv_entry *e);

bool kv_parse_i64(const uint8_t *p, size_t len, int64_t *out);
bool kv_parse_u64(const uint8_t *p, size_t len, uint64_t *out);
/* Decimal into buf (>= 21 bytes); returns the length. */
size_t kv_fmt_i64(int64_t v, char *buf);
bool kv_arg_is(const struct kv_ctx *c, int i, const char *word);
bool kv_bytes_ieq(const uint8_t *p, size_t len, const char *word);

/* SET / GETEX option flags (Redis's OBJ_* of t_string.c). */
enum {
	KV_SETF_NX = 1u << 0,
	KV_SETF_XX = 1u << 1,
	KV_SETF_GET = 1u << 2,
	KV_SETF_KEEPTTL = 1u << 3,
	KV_SETF_PERSIST = 1u << 4,
	KV_SETF_EX = 1u << 5,
	KV_SETF_PX = 1u << 6,
	KV_SETF_EXAT = 1u << 7,
	KV_SETF_PXAT = 1u << 8,
};
#define KV_SETF_ANY_EXP (KV_SETF_EX | KV_SETF_PX | KV_SETF_EXAT | KV_SETF_PXAT)

/* Parses SET (is_set) or GETEX options from argv[start..argc) with Redis
 * 7's conflict rules. On success *flags and *exp_idx (the argv index of the
 * effective expiry value, or -1). false = syntax error. */
bool kv_parse_ext_options(const uint8_t *const *argv, const size_t *lens,
			  int argc, int start, bool is_set, unsigned *flags,
			  int *exp_idx);

#define KV_ERR_SYNTAX "ERR syntax error"
#define KV_ERR_NOT_INT "ERR value is not an integer or out of range"

#endif /* KEEL_KV_INTERNAL_H */
