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

/* ---- the bank model: multi-key transfers and whole-state reads ---------- */

/* Jepsen's bank workload (docs/checker.md, "The bank model"): a fixed set
 * of accounts holding a constant total; transfers move an amount between
 * two accounts in one transaction and append their id to a ledger key in
 * the same transaction; reads return every balance in one transaction. The
 * history is JSON lines: a config line, invocations and completions, and
 * optionally the final ledger. Not a search: every check is (near) linear. */

#define CHECK_BANK_MAX_ACCOUNTS 1024u
#define CHECK_BANK_MAX_CELLS (1u << 25) /* balances kept over all ok reads */
#define CHECK_BANK_MAX_FIELDS 4096u     /* members of one "value" object */
#define CHECK_BANK_SHOW 8               /* violations kept per kind */

enum check_bank_f {
	CHECK_BANK_TRANSFER = 0,
	CHECK_BANK_READ,
};

enum check_bank_outcome {
	CHECK_BANK_OK = 0, /* took effect; an ok read carries the balances */
	CHECK_BANK_FAIL,   /* definitely did not take effect */
	CHECK_BANK_INFO,   /* unknown: info, or never completed */
};

/* One operation: an invocation matched with its completion. */
struct check_bank_op {
	enum check_bank_f f;
	enum check_bank_outcome outcome;
	int64_t process;
	/* transfer: account indices, amount (>= 0) and id (arena, unique
	 * among the history's transfers, non-empty, no ','). */
	uint32_t from, to;
	int64_t amount;
	const char *id;
	uint32_t id_len;
	/* ok read: n_accounts balances at cells[cells_at], in config order;
	 * an account the read did not name holds 0 there and is counted in
	 * n_missing (the first is first_missing). n_unknown names were not
	 * configured accounts; the first is unknown (arena). */
	size_t cells_at;
	uint32_t n_missing, first_missing;
	uint32_t n_unknown;
	const char *unknown;
	uint32_t unknown_len;
	/* Event positions (line order). Invariant: call_seq < ret_seq;
	 * ret_seq == CHECK_SEQ_INF iff outcome is INFO. */
	uint64_t call_seq, ret_seq;
	bool has_time;
	int64_t call_time, ret_time;
	uint32_t call_line, ret_line; /* ret_line 0: never completed */
};

/* One id of the final ledger, in the order the store applied them. */
struct check_bank_entry {
	uint32_t op; /* the transfer with this id; UINT32_MAX: never invoked */
	const char *id; /* arena */
	uint32_t id_len;
};

/* A parsed bank history. Owns everything it points to. */
struct check_bank_history {
	const struct keel_alloc *alloc;
	uint32_t n_accounts;
	struct check_value *accounts; /* names, config order */
	int64_t total;
	bool has_initial;
	int64_t *initial; /* n_accounts balances when has_initial */
	struct check_bank_op *ops; /* in invocation order */
	size_t n_ops, cap_ops;
	int64_t *cells;
	size_t n_cells, cap_cells;
	bool has_ledger;
	uint32_t ledger_line;
	struct check_bank_entry *ledger;
	size_t n_ledger;
	uint64_t n_events; /* invocations and completions */
	size_t n_transfers[3], n_reads[3]; /* by outcome */
	struct check_arena_block *arena;
};

void check_bank_init(struct check_bank_history *h,
		     const struct keel_alloc *alloc);
void check_bank_close(struct check_bank_history *h);

/* True when the first non-blank line looks like a bank config
 * ({"type":"bank",...}): how `keel check` picks the model by itself. */
bool check_bank_detect(const char *buf, size_t len);

/* Parses a bank history (buf need not be NUL-terminated, is not kept) into
 * h (freshly init'ed). Returns 0, or KEEL_ERR_MALFORMED / KEEL_ERR_TOO_BIG /
 * KEEL_ERR_NOMEM with err filled in (line and message); h must be closed
 * either way. Anomalies of the store (bad reads, odd ledgers) are not
 * parse errors: check_bank_run reports them. */
int check_bank_parse(const char *buf, size_t len,
		     struct check_bank_history *h,
		     struct check_parse_error *err);

enum check_bank_kind {
	CHECK_BANK_READ_TOTAL = 0,  /* ok read: sum != total (value: sum) */
	CHECK_BANK_READ_NEGATIVE,   /* ok read: account < 0 (value) */
	CHECK_BANK_READ_MISSING,    /* ok read: a configured account absent */
	CHECK_BANK_READ_UNKNOWN,    /* ok read: names an unknown account */
	CHECK_BANK_LOST,            /* ok transfer not in the ledger */
	CHECK_BANK_FAILED_APPLIED,  /* fail transfer in the ledger (pos) */
	CHECK_BANK_DUPLICATE,       /* id in the ledger twice (pos, pos2) */
	CHECK_BANK_NEVER_INVOKED,   /* ledger id nobody invoked (pos) */
	CHECK_BANK_LEDGER_ORDER,    /* op applied (pos) before other (pos2),
				     * which completed before op was invoked */
	CHECK_BANK_REPLAY_NEGATIVE, /* replaying the ledger: op at pos takes
				     * account to value < 0 */
	CHECK_BANK_NO_PREFIX,       /* ok read equals no ledger prefix state */
	CHECK_BANK_REAL_TIME,       /* ok read matches prefixes, none of which
				     * real time allows */
	CHECK_BANK_KINDS
};

#define CHECK_BANK_DIFF 4

struct check_bank_violation {
	enum check_bank_kind kind;
	uint32_t op;    /* the read or transfer; UINT32_MAX: none */
	uint32_t other; /* LEDGER_ORDER: the transfer applied later */
	uint32_t account;
	int64_t value;
	bool overflow; /* READ_TOTAL: the sum does not fit int64 */
	size_t pos, pos2;
	/* NO_PREFIX, REAL_TIME: real time allows prefix lengths [lo, hi]
	 * (lo > hi: none). lo is forced by transfer lo_op (completed ok
	 * before the read was invoked) or, if floor_read != UINT32_MAX and
	 * floor > that, by the read floor_read (completed before this read
	 * was invoked, and could see no prefix shorter than floor); hi by
	 * transfer hi_op (invoked after the read completed); UINT32_MAX:
	 * no such op (lo 0, hi the ledger's length). */
	size_t lo, hi, floor;
	uint32_t lo_op, hi_op, floor_read;
	/* REAL_TIME: how many prefixes the read's state equals, and the
	 * nearest ones below the allowed window (below, if has_below) and
	 * above it (above, if has_above). */
	size_t n_matches, below, above;
	bool has_below, has_above;
	/* NO_PREFIX: the prefix in the allowed window (or around it) whose
	 * state differs from the read in the fewest accounts, and up to
	 * CHECK_BANK_DIFF of them (account, the state's balance there). */
	size_t nearest;
	uint32_t n_diff, n_diff_shown;
	uint32_t diff_account[CHECK_BANK_DIFF];
	int64_t diff_state[CHECK_BANK_DIFF];
};

struct check_bank_result {
	size_t n_violations;
	size_t n_by_kind[CHECK_BANK_KINDS];
	/* Up to CHECK_BANK_SHOW per kind, in the order found (reads and
	 * transfers in invocation order, ledger entries in ledger order). */
	struct check_bank_violation shown[CHECK_BANK_SHOW * CHECK_BANK_KINDS];
	size_t n_shown;
	bool ledger_checked;      /* check 2 ran (a ledger was given) */
	bool consistency_checked; /* check 3 ran */
	char skipped[128];        /* why check 3 did not run */
	size_t n_reads_placed;    /* ok reads given a prefix by check 3 */
};

/* Runs the three checks of docs/checker.md on h, which a successful
 * check_bank_parse filled (at least one account). Returns 0 with res filled
 * in, or KEEL_ERR_NOMEM. h is only read; memory comes from alloc; res is
 * about 20 KiB, so callers may prefer it off the stack. */
int check_bank_run(const struct check_bank_history *h,
		   const struct keel_alloc *alloc,
		   struct check_bank_result *res);

/* A short tag for a kind ("read-total", "lost-transfer", ...). */
const char *check_bank_kind_name(enum check_bank_kind kind);

#endif /* KEEL_CHECK_H */
