/*
 * check_internal.h -- pieces the checker's files share but nobody else
 * needs: a block arena with stable pointers, a bytes->u32 hash map, and the
 * parse context every format's parser feeds (invoke/complete/finish), so
 * the three parsers differ only in how they read a line.
 */
#ifndef KEEL_CHECK_INTERNAL_H
#define KEEL_CHECK_INTERNAL_H

#include "keel/check.h"

/* ---- arena ------------------------------------------------------------- */

/* Copies len bytes into the history-style arena *head and returns a stable
 * pointer (never moved: blocks are chained, not reallocated), NULL on
 * NOMEM. len 0 returns a valid non-NULL pointer. */
const char *check_arena_dup(struct check_arena_block **head,
			    const struct keel_alloc *a, const char *s,
			    size_t len);
void check_arena_free(struct check_arena_block **head,
		      const struct keel_alloc *a);

/* ---- bytes -> u32 map -------------------------------------------------- */

struct check_map_slot {
	uint64_t hash;
	const char *key; /* NULL: empty slot; borrowed, must outlive the map */
	uint32_t len;
	uint32_t val;
};

struct check_map {
	struct check_map_slot *slots;
	size_t cap; /* power of two, or 0 */
	size_t n;
};

uint64_t check_hash_bytes(const void *p, size_t len);
uint64_t check_mix64(uint64_t x);
/* Returns true and *val if present. */
bool check_map_get(const struct check_map *m, const char *key, uint32_t len,
		   uint32_t *val);
/* Inserts (key must not be present; key memory is borrowed). 0 or NOMEM. */
int check_map_put(struct check_map *m, const struct keel_alloc *a,
		  const char *key, uint32_t len, uint32_t val);
void check_map_free(struct check_map *m, const struct keel_alloc *a);

/* ---- parse context ----------------------------------------------------- */

struct check_proc_slot {
	int64_t process;
	uint32_t op; /* open op index, or UINT32_MAX when none */
	bool used;
};

struct check_parse_ctx {
	struct check_history *h;
	struct check_parse_error *err;
	struct check_map keys;
	struct check_proc_slot *procs;
	size_t procs_cap, procs_n;
	uint64_t seq;
	uint32_t line;
	/* etcd: fail on cas means "compare did not match" (kept, as a
	 * constraint); elsewhere fail means "did not take effect" (dropped). */
	bool fail_cas_is_mismatch;
	bool *dropped; /* per op: to be removed at finish */
	size_t dropped_cap;
	/* Scratch for decoding escaped strings of one line, grown up to
	 * CHECK_MAX_LINE; strings decoded from one line stay valid until the
	 * next line starts. */
	char *scratch;
	size_t scratch_cap;
	size_t scratch_used;
};

enum check_event_type {
	CHECK_EV_INVOKE = 0,
	CHECK_EV_OK,
	CHECK_EV_FAIL,
	CHECK_EV_INFO,
};

/* A decoded value before it is copied into the history (may point into the
 * input or the scratch buffer) plus the cas pair form. */
struct check_raw_value {
	bool is_pair;
	bool present;
	struct check_value v, v2;
};

void check_ctx_init(struct check_parse_ctx *c, struct check_history *h,
		    struct check_parse_error *err, enum check_format format);
void check_ctx_close(struct check_parse_ctx *c);
/* Records an error at the current line; returns code. */
int check_ctx_fail(struct check_parse_ctx *c, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Ensures the scratch buffer holds n bytes. */
int check_ctx_scratch(struct check_parse_ctx *c, size_t n);
/* The pairing slot of process (created empty if new), NULL on NOMEM. */
struct check_proc_slot *check_ctx_proc(struct check_parse_ctx *c,
				       int64_t process);
/* One event of the history in line order. key may be NULL (single
 * register). */
int check_ctx_event(struct check_parse_ctx *c, enum check_event_type type,
		    int64_t process, enum check_f f, const struct check_value *key,
		    const struct check_raw_value *value, bool has_time,
		    int64_t time);
/* Closes the history: open invocations become indeterminate, dropped ops
 * are removed. */
int check_ctx_finish(struct check_parse_ctx *c);

/* ---- the JSON reader (json.c), shared with the bank parser ------------ */

/* A cursor over one line. Strings with escapes decode into c's scratch,
 * which must hold the line (check_ctx_scratch) before reading starts. */
struct check_json {
	const char *s;
	size_t i, n;
	struct check_parse_ctx *c;
	size_t max_str; /* longest string accepted; 0: CHECK_MAX_STR */
};

void check_json_ws(struct check_json *j);
/* Records "bad JSON at column N: what" on c; returns KEEL_ERR_MALFORMED. */
int check_json_bad(struct check_json *j, const char *what);
/* A string; j is at its opening quote. v points into the line or the
 * scratch: valid until the next line. */
int check_json_string(struct check_json *j, struct check_value *v);
/* A number; integer_only: it must be an int64 (v filled in), otherwise it
 * is only skipped. */
int check_json_number(struct check_json *j, struct check_value *v,
		      bool integer_only);
/* Consumes word if the input continues with it. */
bool check_json_literal(struct check_json *j, const char *word);
/* After an object member: past its ',' (0, *done false) or the object's
 * closing '}' (0, *done true); anything else is bad JSON. */
int check_json_member_end(struct check_json *j, bool *done);
/* The object was the whole line: only white space may follow it. */
int check_json_line_end(struct check_json *j);
/* Skips any value, at most CHECK_MAX_DEPTH deep. */
int check_json_skip(struct check_json *j, int depth);

/* Names shared by all formats: read/get, write/put, cas, incr, append, del.
 * Returns -1 if unknown. */
int check_f_parse(const char *s, size_t len);
int check_type_parse(const char *s, size_t len);

/* Strict decimal int64: optional '-', digits, no overflow. Returns 0, or
 * KEEL_ERR_TOO_BIG on overflow, KEEL_ERR_MALFORMED otherwise. */
int check_parse_i64(const char *s, size_t len, int64_t *out);

/* Splits the next line off buf: returns false at end. Strips "\r". */
bool check_next_line(const char *buf, size_t len, size_t *pos,
		     const char **line, size_t *line_len);

#endif
