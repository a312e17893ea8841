/*
 * check.h -- the linearizability checker: histories of client operations
 * (parsed from Jepsen etcd logs, the kv lab's EDN lines or keel's own JSON
 * lines), and a Wing-Gong/Lowe search that decides whether some total order
 * of the operations respects real time and a sequential model (a
 * compare-and-set register or a per-key key-value map).
 *
 * Everything here is pure: parsers work over byte buffers, the search reads
 * no clock (the caller passes a should_stop callback and/or a step budget),
 * nothing prints, and memory comes from a struct keel_alloc. `keel check`
 * (src/cli/cmd_check.c) is the adapter that reads files and the clock.
 * docs/checker.md describes the algorithm and the formats.
 */
#ifndef KEEL_CHECK_H
#define KEEL_CHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keel/common.h"

/* ---- limits ------------------------------------------------------------ */

/* Every count and length read from input is capped before it allocates. */
#define CHECK_MAX_OPS (1u << 22)       /* operations in one history */
#define CHECK_MAX_STR (1u << 20)       /* bytes in one string value or key */
#define CHECK_MAX_LINE (4u << 20)      /* bytes in one input line */
#define CHECK_MAX_DEPTH 32             /* nesting of skipped JSON/EDN values */
#define CHECK_SEQ_INF UINT64_MAX       /* return position of an open op */

/* ---- histories --------------------------------------------------------- */

enum check_format {
	CHECK_FORMAT_AUTO = 0,
	CHECK_FORMAT_ETCD,  /* Jepsen etcd log: one CAS register */
	CHECK_FORMAT_KV,    /* EDN lines {:process 0, :type :ok, ...} */
	CHECK_FORMAT_JSONL, /* keel's JSON lines */
};

enum check_f {
	CHECK_F_READ = 0, /* also "get" */
	CHECK_F_WRITE,    /* also "put" */
	CHECK_F_CAS,
	CHECK_F_INCR,
	CHECK_F_APPEND,
	CHECK_F_DEL,
};

enum check_value_kind {
	CHECK_VAL_NIL = 0,
	CHECK_VAL_INT,
	CHECK_VAL_STR,
};

/* A value as read from the history. str (when kind is CHECK_VAL_STR) points
 * into storage owned by the history (or by the caller for values passed in)
 * and is not NUL-terminated. */
struct check_value {
	enum check_value_kind kind;
	int64_t num;
	const char *str;
	uint32_t len;
};

/* What the client learned about an operation. */
enum check_outcome {
	CHECK_OUT_OK = 0,       /* took effect; out holds the result if any */
	CHECK_OUT_CAS_MISMATCH, /* cas ran and its compare did not match */
	CHECK_OUT_INFO,         /* indeterminate: may or may not take effect */
};

/* One operation: an invocation matched with its completion. Operations
 * that definitely did not take effect (fail) are dropped by the parsers;
 * reads whose result is unknown are dropped too (they constrain nothing). */
struct check_op {
	uint32_t key; /* index into check_history.keys */
	enum check_f f;
	enum check_outcome outcome;
	int64_t process;
	struct check_value arg;  /* write/append/incr argument; cas expected */
	struct check_value arg2; /* cas: the new value */
	struct check_value out;  /* read: value read; incr: new value */
	bool has_out;            /* out is meaningful */
	/* Positions in the event sequence (line order). Invariant:
	 * call_seq < ret_seq; ret_seq == CHECK_SEQ_INF iff outcome is INFO. */
	uint64_t call_seq, ret_seq;
	bool has_time; /* jsonl only: the recorded times below */
	int64_t call_time, ret_time;
	uint32_t call_line, ret_line; /* 1-based; ret_line 0: no completion */
};

struct check_arena_block;

/* A parsed history. Owns ops, keys and every string they point to. */
struct check_history {
	const struct keel_alloc *alloc;
	enum check_format format;
	struct check_op *ops;
	size_t n_ops, cap_ops;
	struct check_value *keys; /* key names (strings) */
	size_t n_keys, cap_keys;
	/* The value of a key nobody wrote: nil for etcd and jsonl, the empty
	 * string for the kv lab (its absent keys read as ""). */
	struct check_value initial;
	size_t n_dropped; /* fail ops and unknown reads left out */
	struct check_arena_block *arena;
};

/* Where and why parsing stopped. */
struct check_parse_error {
	uint32_t line; /* 1-based; 0 when not tied to a line */
	char msg[160];
};

/* Sets up an empty history; alloc must outlive it. */
void check_history_init(struct check_history *h, const struct keel_alloc *alloc);
/* Frees everything the history owns. Safe on an init'ed, empty history. */
void check_history_close(struct check_history *h);

/* Guesses the format from the first non-blank line: `{"` jsonl, `{:` kv,
 * a "jepsen.util" line etcd. Returns CHECK_FORMAT_AUTO if none fits. */
enum check_format check_detect_format(const char *buf, size_t len);

/* Parse buf[0..len) into h (freshly init'ed, empty). buf need not be
 * NUL-terminated and is not kept. Returns 0, or KEEL_ERR_MALFORMED /
 * KEEL_ERR_TOO_BIG / KEEL_ERR_NOMEM with err filled in; on error h holds
 * whatever was parsed so far and must still be closed. */
int check_parse_etcd(const char *buf, size_t len, struct check_history *h,
		     struct check_parse_error *err);
int check_parse_kv(const char *buf, size_t len, struct check_history *h,
		   struct check_parse_error *err);
int check_parse_jsonl(const char *buf, size_t len, struct check_history *h,
		      struct check_parse_error *err);
/* Dispatches on format; CHECK_FORMAT_AUTO detects it first. */
int check_parse(enum check_format format, const char *buf, size_t len,
		struct check_history *h, struct check_parse_error *err);

const char *check_f_name(enum check_f f);
const char *check_format_name(enum check_format format);
/* Formats v into out (always NUL-terminated, truncated with "..."). */
void check_value_format(const struct check_value *v, char *out, size_t size);

/* ---- checking ---------------------------------------------------------- */

enum check_model {
	CHECK_MODEL_AUTO = 0, /* register for etcd, kv otherwise */
	CHECK_MODEL_REGISTER, /* read, write, cas */
	CHECK_MODEL_KV,       /* + incr, append, del */
};

enum check_verdict {
	CHECK_LINEARIZABLE = 0,
	CHECK_NOT_LINEARIZABLE,
	CHECK_UNDECIDED, /* stopped, out of budget or out of cache memory */
};

struct check_options {
	enum check_model model;
	/* Asked every stop_every search steps (0: 4096); true stops the search
	 * with CHECK_UNDECIDED. May be NULL. The checker never reads a clock:
	 * this is how the caller imposes a deadline. */
	bool (*should_stop)(void *ctx);
	void *stop_ctx;
	uint32_t stop_every;
	uint64_t step_budget;     /* 0: unlimited */
	size_t max_cache_bytes;   /* memo cache cap per key; 0: 1 GiB */
};

#define CHECK_SHOW_PREFIX 8
#define CHECK_SHOW_STUCK 16

/* Why an operation could not be placed next at the stuck point. */
enum check_stuck_why {
	CHECK_STUCK_MODEL = 0, /* the model rejects it in that state */
	CHECK_STUCK_DEAD_END,  /* accepted, but nothing completes after it */
};

struct check_result {
	enum check_verdict verdict;
	size_t n_keys;          /* keys in the history */
	size_t n_keys_failed;   /* keys proven not linearizable */
	size_t n_keys_undecided;
	uint64_t steps;         /* search steps over all keys */
	char reason[128];       /* for CHECK_UNDECIDED */
	/* When not linearizable: the failing key with the fewest ops. */
	uint32_t bad_key;
	size_t bad_key_ops;     /* ops on that key (after dropping fails) */
	/* The longest linearizable prefix the search found on bad_key: its
	 * length, its last few ops (history indices, oldest first) and the
	 * model state after it. */
	size_t prefix_len;
	uint32_t prefix_tail[CHECK_SHOW_PREFIX];
	size_t n_prefix_tail;
	char state_after_prefix[96];
	/* The ops that could have come next there (called before the earliest
	 * pending completion), none of which leads to a full linearization. */
	uint32_t stuck[CHECK_SHOW_STUCK];
	enum check_stuck_why stuck_why[CHECK_SHOW_STUCK];
	size_t n_stuck, n_stuck_total;
};

/* Decides whether h is linearizable under the model, key by key. Returns 0
 * with res filled in, KEEL_ERR_INVAL (res->reason says why: e.g. an op the
 * register model does not know) or KEEL_ERR_NOMEM. h is only read. */
int check_history_run(const struct check_history *h,
		      const struct check_options *opts,
		      const struct keel_alloc *alloc, struct check_result *res);

#endif /* KEEL_CHECK_H */
