/*
 * resp.h -- keel's pure RESP2/RESP3 codec: an incremental request parser
 * (multibulk and inline commands, as Redis clients send them), a reply
 * encoder that speaks RESP2 or RESP3 per connection, a request encoder for
 * the client library and CLI, and a reply parser that builds a value tree.
 *
 * Nothing here does I/O or keeps global state: bytes go in, bytes or values
 * come out, memory comes from a caller-supplied struct keel_alloc. Every
 * length read from the network is checked against a limit before anything
 * is allocated or waited for (docs/resp.md lists the limits and the exact
 * error texts, which mirror Redis's networking.c).
 */
#ifndef KEEL_RESP_H
#define KEEL_RESP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keel/common.h"

/* ---- return codes ------------------------------------------------------- */

enum resp_status {
	RESP_OK = 0,	       /* one complete command / value is ready */
	RESP_NEED_MORE = 1,    /* input ended inside a command / value */
	RESP_ERR_PROTOCOL = 2, /* malformed input or a limit was exceeded */
	RESP_ERR_NOMEM = 3,    /* the allocator failed */
	RESP_ERR_TOO_BIG = 4,  /* resp_buf: a write would pass max_bytes */
};

/* ---- limits ---------------------------------------------------------------
 */

/* Caps on what a peer may make the parser hold. Each is checked as soon as
 * the length is read, before any allocation or wait for the bytes. */
struct resp_limits {
	/* Longest bulk string argument ($<len>), bytes. */
	uint64_t max_bulk_len;
	/* Most arguments in one multibulk command (*<n>). */
	uint64_t max_array_len;
	/* Longest inline command line, and longest *<n> / $<len> header line,
	 * counted up to (not including) the '\n', so a trailing '\r' counts. */
	uint64_t max_inline_len;
	/* Most bulk payload bytes declared by one command (sum of its $<len>).
	 * Redis's client-query-buffer-limit plays this role. */
	uint64_t max_command_bytes;
};

/* Redis's defaults: proto-max-bulk-len 512 MiB, inline 64 KiB. Redis 7
 * allows up to INT_MAX arguments; keel picks 1 Mi (Redis < 6 used that),
 * since a 1 Mi-argument MSET is already a 16 MiB argv. Command bytes 1 GiB
 * as Redis's client-query-buffer-limit. */
#define RESP_DEFAULT_MAX_BULK_LEN (512ull * 1024 * 1024)
#define RESP_DEFAULT_MAX_ARRAY_LEN (1024ull * 1024)
#define RESP_DEFAULT_MAX_INLINE_LEN (64ull * 1024)
#define RESP_DEFAULT_MAX_COMMAND_BYTES (1024ull * 1024 * 1024)

/* Before AUTH (Redis 7 authRequired()): at most 10 arguments of at most
 * 16 KiB each, inline lines of at most 16 KiB. */
#define RESP_UNAUTH_MAX_BULK_LEN (16ull * 1024)
#define RESP_UNAUTH_MAX_ARRAY_LEN 10ull
#define RESP_UNAUTH_MAX_INLINE_LEN (16ull * 1024)
#define RESP_UNAUTH_MAX_COMMAND_BYTES (64ull * 1024)

extern const struct resp_limits resp_limits_default;
extern const struct resp_limits resp_limits_unauth;

/* ---- request parser --------------------------------------------------- */

/* One parsed command. argv[i] is argv_len[i] bytes, not NUL-terminated,
 * possibly containing any byte.
 *
 * Ownership: everything here is borrowed from the parser and stays valid
 * until the next resp_parse(), resp_parser_close() on the same parser.
 * An argument may point INTO THE BUFFER passed to the resp_parse() call that
 * returned it (zero-copy, when its bytes lay entirely in that buffer) or
 * into the parser's own memory (when it arrived across calls, or when it was
 * an inline argument that needed unquoting). So the caller must neither
 * modify nor free nor compact that buffer while it still uses the command;
 * once it is done with the command it may drop the consumed bytes. */
struct resp_command {
	size_t argc;
	const uint8_t *const *argv;
	const size_t *argv_len;
	bool is_inline; /* came as an inline (telnet-style) command */
};

/* The parser. The caller owns the struct's memory (init/close); the
 * fields are private. Invariant: between calls, no argument slot points
 * into a caller buffer unless the last return was RESP_OK. */
struct resp_parser {
	const struct keel_alloc *alloc;
	struct resp_limits limits;
	struct resp_limits unauth;
	bool unauth_on;
	int state;
	int err; /* sticky: RESP_ERR_* once an error was returned */
	char errmsg[96];
	/* A header or inline line that arrived across calls. */
	uint8_t *line;
	size_t line_len, line_cap;
	/* The command being assembled. */
	uint64_t want_args;
	uint64_t cmd_bytes;
	size_t nargs, args_cap;
	const uint8_t **argv;
	size_t *argv_len;
	size_t *arg_off; /* offset into arena, or SIZE_MAX: argv[i] borrowed */
	bool is_inline;
	/* Owned argument bytes; offsets, not pointers, while it may move. */
	uint8_t *arena;
	size_t arena_len, arena_cap;
	/* The bulk being received: its arena offset, length, bytes so far. */
	size_t bulk_off;
	uint64_t bulk_len, bulk_got;
};

/* Prepares p. limits NULL means resp_limits_default; the struct is copied.
 * Allocates nothing (memory is taken lazily, in proportion to the bytes
 * actually received). alloc must outlive p. */
void resp_parser_init(struct resp_parser *p, const struct keel_alloc *alloc,
		      const struct resp_limits *limits);

/* Frees what p holds. Any command it returned becomes invalid. */
void resp_parser_close(struct resp_parser *p);

/* Switches the tighter pre-AUTH limits on (tight non-NULL, copied) or off
 * (NULL). A length within the normal limits but above the tight ones gets
 * Redis's "unauthenticated ..." error. Takes effect from the next header
 * parsed; call it between commands. */
void resp_parser_set_unauth(struct resp_parser *p,
			    const struct resp_limits *tight);

/* Parses at most one command from buf[0..len).
 *
 * RESP_OK: *out holds one complete command (ownership: see struct
 *   resp_command); *consumed says how many bytes of buf it used. Bytes
 *   after that are the next command: call again with buf + *consumed.
 * RESP_NEED_MORE: every byte of buf was consumed (*consumed == len) and
 *   remembered, however it was split -- one byte per call works. The caller
 *   may discard buf and call again with the bytes that follow.
 * RESP_ERR_PROTOCOL: resp_parser_error() gives the message for the client
 *   (send it as "-ERR <message>", then close: Redis's setProtocolError).
 * RESP_ERR_NOMEM: the allocator failed.
 * Errors are sticky: later calls return the same code and consume nothing.
 * Empty commands ("*0", "*-1", blank inline lines) are skipped, as Redis
 * does. buf may be NULL when len is 0. */
int resp_parse(struct resp_parser *p, const uint8_t *buf, size_t len,
	       size_t *consumed, struct resp_command *out);

/* The message of the last error ("Protocol error: ..."), "" if none.
 * Borrowed from p. */
const char *resp_parser_error(const struct resp_parser *p);

/* ---- reply / request encoder ---------------------------------------- */

/* A growable output buffer with a hard cap. Writers never fail loudly: a
 * write that would pass max_bytes or that the allocator refuses sets
 * `failed` (sticky until reset) and leaves data untouched, so each item
 * is either fully written or not at all. The caller owns the struct and
 * data (init/close); data[0..len) is the encoded output. */
struct resp_buf {
	const struct keel_alloc *alloc;
	uint8_t *data;
	size_t len, cap;
	size_t max_bytes;
	int proto;  /* 2 or 3 */
	int failed; /* 0, RESP_ERR_NOMEM or RESP_ERR_TOO_BIG */
};

void resp_buf_init(struct resp_buf *b, const struct keel_alloc *alloc,
		   size_t max_bytes, int proto);
void resp_buf_close(struct resp_buf *b);
/* Empties the buffer and clears `failed`; keeps the memory. */
void resp_buf_reset(struct resp_buf *b);
/* Drops the first n bytes (n <= len), e.g. after they were sent. */
void resp_buf_consume(struct resp_buf *b, size_t n);
/* Switches protocol (HELLO 2 / HELLO 3); proto is 2 or 3. */
void resp_buf_set_proto(struct resp_buf *b, int proto);

/* Each writer appends one item in b->proto's encoding (docs/resp.md has
 * the RESP2/RESP3 table). Aggregate headers are followed by the caller's
 * writes of the elements (a map of n pairs by 2n elements). */
void resp_write_simple(struct resp_buf *b, const char *s, size_t len);
/* s is the full error text, code first ("ERR unknown command"). CR and LF
 * in s (and in simple strings) become spaces, as in Redis. */
void resp_write_error(struct resp_buf *b, const char *s, size_t len);
void resp_write_integer(struct resp_buf *b, int64_t v);
void resp_write_bulk(struct resp_buf *b, const void *data, size_t len);
void resp_write_null(struct resp_buf *b);	/* $-1 | _ */
void resp_write_null_array(struct resp_buf *b); /* *-1 | _ */
void resp_write_array(struct resp_buf *b, size_t n);
void resp_write_map(struct resp_buf *b, size_t pairs); /* %n | *2n */
void resp_write_set(struct resp_buf *b, size_t n);     /* ~n | *n */
void resp_write_push(struct resp_buf *b, size_t n);    /* >n | *n */
void resp_write_double(struct resp_buf *b, double v);  /* ,v | $ bulk */
void resp_write_bool(struct resp_buf *b, bool v);      /* #t | :1 */
/* fmt is 3 bytes ("txt", "mkd"). RESP2: a bulk of data only. */
void resp_write_verbatim(struct resp_buf *b, const char fmt[3],
			 const void *data, size_t len);
/* digits: an optional '-' then decimal digits (not checked). */
void resp_write_bignum(struct resp_buf *b, const char *digits, size_t len);

/* A request as clients send it: *argc then argc bulk strings (the same in
 * both protocol versions). */
void resp_write_command(struct resp_buf *b, size_t argc,
			const uint8_t *const *argv, const size_t *argv_len);

/* Formats v as the shortest decimal that strtod() reads back as exactly v
 * ("1.5", "0.1", "1e+300", "inf", "-inf", "nan"); out must hold
 * RESP_DOUBLE_MAX_CHARS bytes. Returns the length (no NUL is written). */
#define RESP_DOUBLE_MAX_CHARS 32
size_t resp_format_double(double v, char *out);

/* ---- reply parser ------------------------------------------------------ */

enum resp_type {
	RESP_T_STRING = 1, /* +simple */
	RESP_T_ERROR,	   /* -simple error */
	RESP_T_INTEGER,	   /* :n */
	RESP_T_BULK,	   /* $len */
	RESP_T_NULL,	   /* _ , $-1 , *-1 */
	RESP_T_ARRAY,	   /* * */
	RESP_T_MAP,	   /* % */
	RESP_T_SET,	   /* ~ */
	RESP_T_PUSH,	   /* > */
	RESP_T_DOUBLE,	   /* , */
	RESP_T_BOOL,	   /* # */
	RESP_T_VERBATIM,   /* = */
	RESP_T_BIGNUM,	   /* ( */
	RESP_T_BLOB_ERROR, /* ! */
};

/* One node of a parsed reply.
 *  - STRING, ERROR, BULK, BLOB_ERROR, BIGNUM, DOUBLE: str/len (DOUBLE: its
 *    text as sent, plus dbl); VERBATIM: str/len is the payload after
 *    "fmt:", format the 3-byte format (NUL-terminated).
 *  - INTEGER: integer. BOOL: integer 0 or 1.
 *  - ARRAY, SET, PUSH: n elements in elem[]; MAP: n == 2 * pairs, keys at
 *    even and values at odd indexes.
 * For the string types str is NUL-terminated (str[len] == 0) for
 * convenience, though it may also contain NULs; other types have str NULL.
 * The whole tree is one allocation: free only the root. */
struct resp_value {
	int type;
	int64_t integer;
	double dbl;
	const char *str;
	size_t len;
	char format[4];
	size_t n;
	struct resp_value *elem;
};

struct resp_reply_limits {
	uint32_t max_depth;	    /* nesting of aggregates; at most 64 */
	uint64_t max_elements;	    /* nodes in one reply, total */
	uint64_t max_aggregate_len; /* elements in one aggregate */
	uint64_t max_string_len;    /* bytes of one string / line */
};

#define RESP_REPLY_MAX_DEPTH 64
extern const struct resp_reply_limits resp_reply_limits_default;

/* Parses one complete reply from buf[0..len) into a tree.
 * limits NULL means resp_reply_limits_default (depth 32, 16 Mi elements,
 * 16 Mi per aggregate, 512 MiB strings).
 *
 * RESP_OK: *out is one allocation from alloc holding the whole tree and a
 *   copy of every string (so it does not borrow buf); the caller owns it
 *   and frees it with resp_value_free(alloc, *out). *consumed is its size.
 * RESP_NEED_MORE: buf holds a valid prefix of a reply; nothing was
 *   consumed or allocated; call again with more bytes appended (the scan
 *   restarts, costing O(elements), not O(bytes), for bulk payloads).
 * RESP_ERR_PROTOCOL: malformed or over a limit; *errmsg (if non-NULL) gets
 *   a static message. RESP_ERR_NOMEM: the allocator failed. */
int resp_reply_parse(const struct resp_reply_limits *limits,
		     const struct keel_alloc *alloc, const uint8_t *buf,
		     size_t len, size_t *consumed, struct resp_value **out,
		     const char **errmsg);

void resp_value_free(const struct keel_alloc *alloc, struct resp_value *v);

/* Writes v back out in b->proto's encoding (the client library's tests and
 * fuzzers round-trip through this). */
void resp_write_value(struct resp_buf *b, const struct resp_value *v);

#endif /* KEEL_RESP_H */
