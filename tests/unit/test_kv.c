/*
 * test_kv.c -- tests of the replicated state machine (src/kv/).
 *
 * Command semantics are checked as scripts: rows of (now, command,
 * expected reply), the reply rendered as text from the reply-builder calls
 * ("+OK", "-ERR ...", ":1", "$value", "(nil)", "*2 $a $b"). Each script runs
 * three ways -- writes through kv_apply as sent, writes through the leader's
 * kv_rewrite_relative, and everything (reads too) through kv_apply -- and
 * all three must give the expected replies and the same final digest.
 *
 * Randomized tests print their seed (KEEL_SEED replays): determinism of two
 * replicas, snapshot round trips, every single-byte corruption and every
 * truncation of a snapshot, the SCAN guarantee under concurrent writes, and
 * a model test of ordering, ranges, prefixes and the expiry index against a
 * plain sorted array. Tree invariants are checked from kv_internal.h.
 */
#include "keel/kv.h"
#include "kv/kv_internal.h"
#include "test.h"

/* ---- reply recorder -------------------------------------------------------- */

#define REC_CAP 65536
#define REC_ITEMS 4096

struct rec_item {
	char kind; /* + - : $ n * */
	int64_t num;
	size_t off, len; /* into text for strings */
};

struct rec {
	char text[REC_CAP]; /* the rendering */
	size_t n;
	struct rec_item items[REC_ITEMS];
	size_t nitems;
	char strs[REC_CAP];
	size_t slen;
};

static void rec_reset(struct rec *r)
{
	r->n = 0;
	r->text[0] = '\0';
	r->nitems = 0;
	r->slen = 0;
}

static void rec_put(struct rec *r, const char *s, size_t len)
{
	if (r->n && r->n + 1 < REC_CAP)
		r->text[r->n++] = ' ';
	for (size_t i = 0; i < len && r->n + 5 < REC_CAP; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch >= 0x20 && ch < 0x7f) {
			r->text[r->n++] = (char)ch;
		} else {
			r->n += (size_t)snprintf(r->text + r->n, 5, "\\x%02x",
						 ch);
		}
	}
	r->text[r->n] = '\0';
}

static void rec_item(struct rec *r, char kind, int64_t num, const void *p,
		     size_t len)
{
	if (r->nitems >= REC_ITEMS || r->slen + len > REC_CAP)
		return;
	struct rec_item *it = &r->items[r->nitems++];
	it->kind = kind;
	it->num = num;
	it->off = r->slen;
	it->len = len;
	if (len)
		memcpy(r->strs + r->slen, p, len);
	r->slen += len;
}

static void rec_status(void *ctx, const char *s)
{
	struct rec *r = ctx;
	char buf[600];
	int n = snprintf(buf, sizeof(buf), "+%s", s);
	rec_put(r, buf, (size_t)n);
	rec_item(r, '+', 0, s, strlen(s));
}

static void rec_error(void *ctx, const char *s)
{
	struct rec *r = ctx;
	char buf[600];
	int n = snprintf(buf, sizeof(buf), "-%s", s);
	rec_put(r, buf, (size_t)n);
	rec_item(r, '-', 0, s, strlen(s));
}

static void rec_integer(void *ctx, int64_t v)
{
	struct rec *r = ctx;
	char buf[32];
	int n = snprintf(buf, sizeof(buf), ":%" PRId64, v);
	rec_put(r, buf, (size_t)n);
	rec_item(r, ':', v, NULL, 0);
}

static void rec_bulk(void *ctx, const uint8_t *p, size_t len)
{
	struct rec *r = ctx;
	char buf[1024];
	buf[0] = '$';
	size_t n = len < sizeof(buf) - 1 ? len : sizeof(buf) - 1;
	if (n)
		memcpy(buf + 1, p, n);
	rec_put(r, buf, n + 1);
	rec_item(r, '$', 0, p, len);
}

static void rec_null(void *ctx)
{
	struct rec *r = ctx;
	rec_put(r, "(nil)", 5);
	rec_item(r, 'n', 0, NULL, 0);
}

static void rec_array(void *ctx, size_t n)
{
	struct rec *r = ctx;
	char buf[32];
	int k = snprintf(buf, sizeof(buf), "*%zu", n);
	rec_put(r, buf, (size_t)k);
	rec_item(r, '*', (int64_t)n, NULL, 0);
}

static const struct kv_reply_ops rec_ops = {
	rec_status, rec_error, rec_integer, rec_bulk, rec_null, rec_array,
};

/* ---- a harness around one kv ----------------------------------------------- */

enum mode {
	MODE_RAW,     /* writes applied as sent, reads through kv_read */
	MODE_REWRITE, /* writes through kv_rewrite_relative first */
	MODE_ALL,     /* every command through kv_apply */
};

struct h {
	struct kv *kv;
	uint64_t index;
	enum mode mode;
	struct rec rec;
};

#define MAX_ARGS 64

/* Splits a command line on spaces; "..." quotes a token (no escapes), so
 * "" is the empty string. Returns argc. Storage is static per call. */
static int tokenize(const char *line, const uint8_t **argv, size_t *lens,
		    char *store)
{
	int argc = 0;
	size_t o = 0;
	const char *p = line;
	while (*p) {
		while (*p == ' ')
			p++;
		if (!*p)
			break;
		char *start = store + o;
		if (*p == '"') {
			p++;
			while (*p && *p != '"')
				store[o++] = *p++;
			if (*p == '"')
				p++;
		} else {
			while (*p && *p != ' ')
				store[o++] = *p++;
		}
		argv[argc] = (const uint8_t *)start;
		lens[argc] = (size_t)(store + o - start);
		argc++;
		store[o++] = '\0';
	}
	return argc;
}

static void h_init(struct h *h, enum mode mode)
{
	memset(h, 0, sizeof(*h));
	h->kv = kv_create(&keel_alloc_libc);
	h->mode = mode;
}

/* Applies argv as one entry at now (the leader's clock). */
static int h_apply_argv(struct h *h, uint64_t now, int argc,
			const uint8_t *const *argv, const size_t *lens)
{
	uint8_t *buf;
	size_t len;
	int rc;
	if (h->mode == MODE_REWRITE) {
		rc = kv_rewrite_relative(&keel_alloc_libc, now, argc, argv, lens,
					 &buf, &len);
		if (rc)
			return rc;
	} else {
		len = kv_cmd_encoded_size(argc, lens);
		if (!len)
			return KEEL_ERR_TOO_BIG;
		buf = malloc(len);
		rc = kv_cmd_encode(now, argc, argv, lens, buf, len, &len);
		if (rc) {
			free(buf);
			return rc;
		}
	}
	rc = kv_apply(h->kv, ++h->index, buf, len, &rec_ops, &h->rec);
	free(buf);
	return rc;
}

static const char *h_run(struct h *h, uint64_t now, const char *line)
{
	const uint8_t *argv[MAX_ARGS];
	size_t lens[MAX_ARGS];
	char store[1024];
	int argc = tokenize(line, argv, lens, store);
	rec_reset(&h->rec);
	const struct kv_command *cmd = kv_command_lookup(argv[0], lens[0]);
	bool read = cmd && (cmd->flags & KV_CMD_READ);
	if (read && h->mode != MODE_ALL) {
		kv_read(h->kv, argc, argv, lens, now, &rec_ops, &h->rec);
	} else {
		int rc = h_apply_argv(h, now, argc, argv, lens);
		if (rc)
			return "apply failed";
	}
	return h->rec.text;
}

static void h_fini(struct h *h)
{
	kv_destroy(h->kv);
	h->kv = NULL;
}

/* ---- tree invariants --------------------------------------------------------- */

static int check_avl(const struct kv_avl *n, kv_avl_cmp_fn cmp,
		     struct kv_avl *(*entry_node)(const struct kv_avl *),
		     uint64_t *size, int *bad)
{
	(void)cmp;
	(void)entry_node;
	if (!n) {
		*size = 0;
		return 0;
	}
	uint64_t ls, rs;
	int hl = check_avl(n->left, cmp, entry_node, &ls, bad);
	int hr = check_avl(n->right, cmp, entry_node, &rs, bad);
	if (hl - hr > 1 || hr - hl > 1)
		*bad = 1;
	int hgt = 1 + (hl > hr ? hl : hr);
	if ((int)n->height != hgt)
		*bad = 1;
	*size = 1 + ls + rs;
	if (n->size != *size)
		*bad = 1;
	return hgt;
}

static void expect_in_order(struct kv_avl *root, kv_avl_cmp_fn cmp,
			    size_t field_off, uint64_t want, int *bad)
{
	struct kv_avl_iter it;
	kv_avl_seek(&it, root, NULL, cmp);
	const struct kv_entry *prev = NULL;
	uint64_t n = 0;
	for (struct kv_avl *a; (a = kv_avl_cur(&it)); kv_avl_next(&it)) {
		const struct kv_entry *e =
			(const struct kv_entry *)(const void *)((const char *)a -
								field_off);
		if (prev) {
			struct kv_probe p = {prev->key, prev->key_len,
					     prev->hash,
					     prev->meta.expire_at_ms};
			if (cmp(&p, a) >= 0)
				*bad = 1;
		}
		prev = e;
		n++;
	}
	if (n != want)
		*bad = 1;
}

/* Every index balanced, sized, ordered and agreeing with the counters. */
static bool kv_invariants(const struct kv *kv)
{
	int bad = 0;
	uint64_t sz;
	check_avl(kv->by_key, kv_cmp_key, NULL, &sz, &bad);
	check_avl(kv->by_hash, kv_cmp_hash, NULL, &sz, &bad);
	check_avl(kv->by_exp, kv_cmp_exp, NULL, &sz, &bad);
	expect_in_order(kv->by_key, kv_cmp_key,
			offsetof(struct kv_entry, by_key), kv->count, &bad);
	expect_in_order(kv->by_hash, kv_cmp_hash,
			offsetof(struct kv_entry, by_hash), kv->count, &bad);
	expect_in_order(kv->by_exp, kv_cmp_exp,
			offsetof(struct kv_entry, by_exp), kv->expires, &bad);
	struct kv_avl_iter it;
	uint64_t kb = 0, vb = 0, ex = 0;
	kv_avl_seek(&it, kv->by_key, NULL, kv_cmp_key);
	for (struct kv_avl *a; (a = kv_avl_cur(&it)); kv_avl_next(&it)) {
		const struct kv_entry *e = KV_CONTAINER(a, by_key);
		kb += e->key_len;
		vb += e->val_len;
		ex += e->meta.expire_at_ms != 0;
		if (e->meta.create_revision < 1 ||
		    e->meta.create_revision > e->meta.mod_revision ||
		    e->meta.mod_revision > kv->revision ||
		    e->meta.version < 1)
			bad = 1;
	}
	if (kb != kv->key_bytes || vb != kv->val_bytes || ex != kv->expires)
		bad = 1;
	return !bad;
}

/* ---- scripts ---------------------------------------------------------------- */

struct row {
	uint64_t now;
	const char *cmd;
	const char *want;
};

#define I64MAX "9223372036854775807"
#define I64MIN "-9223372036854775808"

/* Runs rows in all three modes; the final digests must agree. */
static void run_script(const char *name, const struct row *rows, size_t n)
{
	uint64_t digests[3];
	for (int m = 0; m < 3; m++) {
		struct h h;
		h_init(&h, (enum mode)m);
		for (size_t i = 0; i < n; i++) {
			const char *got = h_run(&h, rows[i].now, rows[i].cmd);
			if (strcmp(got, rows[i].want) != 0) {
				fprintf(stderr,
					"  %s row %zu mode %d: %s\n    want: "
					"%s\n    got:  %s\n",
					name, i, m, rows[i].cmd, rows[i].want,
					got);
				test_failed_now_ = 1;
			}
		}
		EXPECT(kv_invariants(h.kv));
		digests[m] = kv_digest(h.kv);
		h_fini(&h);
	}
	/* MODE_ALL applies reads as entries, so its index differs; compare
	 * the raw and rewritten runs, which apply the same writes. */
	EXPECT_EQ_U64(digests[0], digests[1]);
}

#define RUN(rows) run_script(#rows, rows, KEEL_ARRAY_LEN(rows))

TEST(kv_set_options)
{
	static const struct row rows[] = {
		{1000, "SET k v", "+OK"},
		{1000, "GET k", "$v"},
		{1000, "SET k v2 NX", "(nil)"},
		{1000, "GET k", "$v"},
		{1000, "SET k v2 XX", "+OK"},
		{1000, "GET k", "$v2"},
		{1000, "SET n v XX", "(nil)"},
		{1000, "GET n", "(nil)"},
		{1000, "SET k v3 GET", "$v2"},
		{1000, "GET k", "$v3"},
		{1000, "SET n v GET", "(nil)"},
		{1000, "GET n", "$v"},
		{1000, "SET k x GET NX", "$v3"},
		{1000, "GET k", "$v3"},
		{1000, "SET k x nx nx", "(nil)"},
		{1000, "set k v4 xx get", "$v3"},
		{1000, "SET k v NX XX", "-ERR syntax error"},
		{1000, "SET k v XX NX", "-ERR syntax error"},
		{1000, "SET k v EX 10 PX 100", "-ERR syntax error"},
		{1000, "SET k v PX 10 EX 100", "-ERR syntax error"},
		{1000, "SET k v EXAT 10 PXAT 100", "-ERR syntax error"},
		{1000, "SET k v KEEPTTL EX 10", "-ERR syntax error"},
		{1000, "SET k v EX 10 KEEPTTL", "-ERR syntax error"},
		{1000, "SET k v PERSIST", "-ERR syntax error"},
		{1000, "SET k v EX", "-ERR syntax error"},
		{1000, "SET k v FOO", "-ERR syntax error"},
		{1000, "SET k v EX abc", "-ERR value is not an integer or out of range"},
		{1000, "SET k v EX 0", "-ERR invalid expire time in 'set' command"},
		{1000, "SET k v EX -5", "-ERR invalid expire time in 'set' command"},
		{1000, "SET k v PXAT 0", "-ERR invalid expire time in 'set' command"},
		{1000, "SET k v PX " I64MAX, "-ERR invalid expire time in 'set' command"},
		{1000, "SET k v EX " I64MAX, "-ERR invalid expire time in 'set' command"},
		{1000, "SET k v EX 9223372036854775 ", "-ERR invalid expire time in 'set' command"},
		{1000, "GET k", "$v4"},
		{1000, "SET k v EX 10", "+OK"},
		{1000, "TTL k", ":10"},
		{1000, "PTTL k", ":10000"},
		{2000, "PTTL k", ":9000"},
		{2400, "TTL k", ":9"},
		{2600, "TTL k", ":8"},
		{2000, "SET k v2 KEEPTTL", "+OK"},
		{2000, "PTTL k", ":9000"},
		{2000, "SET k v EX 1 EX 5", "+OK"},
		{2000, "PTTL k", ":5000"},
		{2000, "SET k v3", "+OK"},
		{2000, "TTL k", ":-1"},
		{2000, "SET k v EXAT 100", "+OK"},
		{2000, "PTTL k", ":98000"},
		{2000, "SET k v PXAT 5000 GET", "$v"},
		{2000, "PTTL k", ":3000"},
		{2000, "SET k v PXAT 1500", "+OK"},
		{2000, "GET k", "(nil)"},
		{2000, "EXISTS k", ":0"},
		{2000, "SET k v PXAT 2000", "+OK"},
		{2000, "EXISTS k", ":0"},
		{2000, "SET", "-ERR wrong number of arguments for 'set' command"},
		{2000, "SET k", "-ERR wrong number of arguments for 'set' command"},
		{2000, "SET \"\" empty", "+OK"},
		{2000, "GET \"\"", "$empty"},
		{2000, "SET e \"\"", "+OK"},
		{2000, "GET e", "$"},
		{2000, "STRLEN e", ":0"},
	};
	RUN(rows);
}

TEST(kv_setnx_setex_getset_getdel_getex)
{
	static const struct row rows[] = {
		{1000, "SETNX a 1", ":1"},
		{1000, "SETNX a 2", ":0"},
		{1000, "GET a", "$1"},
		{1000, "SETEX s 10 v", "+OK"},
		{1000, "TTL s", ":10"},
		{1000, "SETEX s 0 v", "-ERR invalid expire time in 'setex' command"},
		{1000, "SETEX s -1 v", "-ERR invalid expire time in 'setex' command"},
		{1000, "SETEX s abc v", "-ERR value is not an integer or out of range"},
		{1000, "SETEX s " I64MAX " v", "-ERR invalid expire time in 'setex' command"},
		{1000, "SETEX s 10", "-ERR wrong number of arguments for 'setex' command"},
		{1000, "PSETEX s 100 w", "+OK"},
		{1000, "PTTL s", ":100"},
		{1000, "GET s", "$w"},
		{1000, "PSETEX s 0 v", "-ERR invalid expire time in 'psetex' command"},
		{1100, "GET s", "(nil)"},
		{1100, "GETSET g 1", "(nil)"},
		{1100, "GETSET g 2", "$1"},
		{1100, "SETEX g 100 x", "+OK"},
		{1100, "GETSET g y", "$x"},
		{1100, "TTL g", ":-1"},
		{1100, "GETDEL g", "$y"},
		{1100, "GETDEL g", "(nil)"},
		{1100, "EXISTS g", ":0"},
		{1000, "SET e v", "+OK"},
		{1000, "GETEX e", "$v"},
		{1000, "TTL e", ":-1"},
		{1000, "GETEX e EX 100", "$v"},
		{1000, "TTL e", ":100"},
		{1000, "GETEX e PX 500", "$v"},
		{1000, "PTTL e", ":500"},
		{1000, "GETEX e EXAT 10", "$v"},
		{1000, "PTTL e", ":9000"},
		{1000, "GETEX e PERSIST", "$v"},
		{1000, "TTL e", ":-1"},
		{1000, "GETEX e NX", "-ERR syntax error"},
		{1000, "GETEX e KEEPTTL", "-ERR syntax error"},
		{1000, "GETEX e GET", "-ERR syntax error"},
		{1000, "GETEX e EX 10 PERSIST", "-ERR syntax error"},
		{1000, "GETEX e PERSIST EX 10", "-ERR syntax error"},
		{1000, "GETEX e EX 0", "-ERR invalid expire time in 'getex' command"},
		{1000, "GETEX nope EX 0", "-ERR invalid expire time in 'getex' command"},
		{1000, "GETEX nope EX 10", "(nil)"},
		{1000, "GETEX e PXAT 999", "$v"},
		{1000, "GET e", "(nil)"},
		{1000, "GETEX", "-ERR wrong number of arguments for 'getex' command"},
	};
	RUN(rows);
}

TEST(kv_multi_key)
{
	static const struct row rows[] = {
		{1000, "MSET a 1 b 2", "+OK"},
		{1000, "MGET a b c", "*3 $1 $2 (nil)"},
		{1000, "MSET a 1 b", "-ERR wrong number of arguments for 'mset' command"},
		{1000, "MSET a", "-ERR wrong number of arguments for 'mset' command"},
		{1000, "MSETNX a 1 z 2", ":0"},
		{1000, "EXISTS z", ":0"},
		{1000, "MSETNX y 1 z 2", ":1"},
		{1000, "MSETNX y", "-ERR wrong number of arguments for 'msetnx' command"},
		{1000, "MSET d 1 d 2", "+OK"},
		{1000, "GET d", "$2"},
		{1000, "EXISTS y y z nope", ":3"},
		{1000, "DEL a b c", ":2"},
		{1000, "DEL y y", ":1"},
		{1000, "UNLINK z nope", ":1"},
		{1000, "DEL", "-ERR wrong number of arguments for 'del' command"},
		{1000, "MGET a", "*1 (nil)"},
		{1000, "SETEX t 1 v", "+OK"},
		{1000, "MSET t 2", "+OK"},
		{1000, "TTL t", ":-1"},
		{1000, "DBSIZE", ":2"},
		{1000, "FLUSHDB", "+OK"},
		{1000, "DBSIZE", ":0"},
		{1000, "SET a 1", "+OK"},
		{1000, "FLUSHALL ASYNC", "+OK"},
		{1000, "FLUSHALL sync", "+OK"},
		{1000, "FLUSHDB now", "-ERR syntax error"},
		{1000, "FLUSHDB SYNC ASYNC", "-ERR syntax error"},
		{1000, "DBSIZE x", "-ERR wrong number of arguments for 'dbsize' command"},
	};
	RUN(rows);
}

TEST(kv_counters_and_append)
{
	static const struct row rows[] = {
		{1000, "INCR c", ":1"},
		{1000, "INCRBY c 10", ":11"},
		{1000, "DECR c", ":10"},
		{1000, "DECRBY c 20", ":-10"},
		{1000, "GET c", "$-10"},
		{1000, "INCRBY c -5", ":-15"},
		{1000, "INCRBY c abc", "-ERR value is not an integer or out of range"},
		{1000, "INCRBY c 1.5", "-ERR value is not an integer or out of range"},
		{1000, "SET c abc", "+OK"},
		{1000, "INCR c", "-ERR value is not an integer or out of range"},
		{1000, "SET c 01", "+OK"},
		{1000, "INCR c", "-ERR value is not an integer or out of range"},
		{1000, "SET c +1", "+OK"},
		{1000, "INCR c", "-ERR value is not an integer or out of range"},
		{1000, "SET c -0", "+OK"},
		{1000, "INCR c", "-ERR value is not an integer or out of range"},
		{1000, "SET c \"\"", "+OK"},
		{1000, "INCR c", "-ERR value is not an integer or out of range"},
		{1000, "SET c " I64MAX, "+OK"},
		{1000, "INCR c", "-ERR increment or decrement would overflow"},
		{1000, "INCRBY c 0", ":" I64MAX},
		{1000, "SET c " I64MIN, "+OK"},
		{1000, "DECR c", "-ERR increment or decrement would overflow"},
		{1000, "INCR c", ":-9223372036854775807"},
		{1000, "DECRBY c " I64MIN, "-ERR decrement would overflow"},
		{1000, "INCRBY c " I64MIN, "-ERR increment or decrement would overflow"},
		{1000, "SET c 9223372036854775808", "+OK"},
		{1000, "INCR c", "-ERR value is not an integer or out of range"},
		{1000, "SET t 5 EX 100", "+OK"},
		{1000, "INCR t", ":6"},
		{1000, "TTL t", ":100"},
		{1000, "INCR", "-ERR wrong number of arguments for 'incr' command"},
		{1000, "APPEND ap hello", ":5"},
		{1000, "APPEND ap _world", ":11"},
		{1000, "GET ap", "$hello_world"},
		{1000, "APPEND ap \"\"", ":11"},
		{1000, "STRLEN ap", ":11"},
		{1000, "STRLEN nope", ":0"},
		{1000, "TYPE ap", "+string"},
		{1000, "TYPE nope", "+none"},
		{1000, "SETEX ap 10 x", "+OK"},
		{1000, "APPEND ap y", ":2"},
		{1000, "TTL ap", ":10"},
		{20000, "APPEND ap z", ":1"},
		{20000, "GET ap", "$z"},
	};
	RUN(rows);
}

TEST(kv_expire_family)
{
	static const struct row rows[] = {
		{1000, "SET x v", "+OK"},
		{1000, "EXPIRE x 100", ":1"},
		{1000, "TTL x", ":100"},
		{1000, "EXPIRE x 50 NX", ":0"},
		{1000, "EXPIRE x 200 GT", ":1"},
		{1000, "TTL x", ":200"},
		{1000, "EXPIRE x 100 GT", ":0"},
		{1000, "EXPIRE x 100 LT", ":1"},
		{1000, "TTL x", ":100"},
		{1000, "EXPIRE x 300 XX GT", ":1"},
		{1000, "PERSIST x", ":1"},
		{1000, "PERSIST x", ":0"},
		{1000, "PERSIST nope", ":0"},
		{1000, "EXPIRE x 100 XX", ":0"},
		{1000, "EXPIRE x 100 GT", ":0"},
		{1000, "EXPIRE x 100 LT", ":1"},
		{1000, "EXPIRE x 100 nx", ":0"},
		{1000, "EXPIRE x 100 NX XX", "-ERR NX and XX, GT or LT options at the same time are not compatible"},
		{1000, "EXPIRE x 100 GT NX", "-ERR NX and XX, GT or LT options at the same time are not compatible"},
		{1000, "EXPIRE x 100 GT LT", "-ERR GT and LT options at the same time are not compatible"},
		{1000, "EXPIRE x 100 FOO", "-ERR Unsupported option FOO"},
		{1000, "EXPIRE x abc FOO", "-ERR Unsupported option FOO"},
		{1000, "EXPIRE x abc", "-ERR value is not an integer or out of range"},
		{1000, "EXPIRE nope 100", ":0"},
		{1000, "EXPIRE x " I64MAX, "-ERR invalid expire time in 'expire' command"},
		{1000, "EXPIRE x -9223372036854776", "-ERR invalid expire time in 'expire' command"},
		{1000, "PEXPIRE x " I64MAX, "-ERR invalid expire time in 'pexpire' command"},
		{1000, "EXPIREAT x " I64MAX, "-ERR invalid expire time in 'expireat' command"},
		{1000, "PEXPIREAT x " I64MAX, ":1"},
		{1000, "PTTL x", ":9223372036854774807"},
		{1000, "PEXPIRE x 1500", ":1"},
		{1000, "PTTL x", ":1500"},
		{1000, "EXPIREAT x 3", ":1"},
		{1000, "PTTL x", ":2000"},
		{1000, "PEXPIREAT x 4000", ":1"},
		{1000, "PTTL x", ":3000"},
		{1000, "EXPIRE x -1", ":1"},
		{1000, "EXISTS x", ":0"},
		{1000, "TTL x", ":-2"},
		{1000, "PTTL x", ":-2"},
		{1000, "SET y v", "+OK"},
		{1000, "PEXPIREAT y 1000", ":1"},
		{1000, "GET y", "(nil)"},
		{1000, "SET y v", "+OK"},
		{1000, "EXPIRE y 0", ":1"},
		{1000, "GET y", "(nil)"},
		{1000, "EXPIRE y", "-ERR wrong number of arguments for 'expire' command"},
		{1000, "TTL", "-ERR wrong number of arguments for 'ttl' command"},
	};
	RUN(rows);
}

TEST(kv_keel_cas_compares_values)
{
	static const struct row rows[] = {
		{1000, "KEEL.CAS k a b", ":0"},
		{1000, "GET k", "(nil)"},
		{1000, "SET k a PX 5000", "+OK"},
		{1000, "KEEL.CAS k x b", ":0"},
		{1000, "GET k", "$a"},
		{1000, "KEEL.CAS k a b", ":1"},
		{1000, "GET k", "$b"},
		{1000, "TTL k", ":-1"},
		{1000, "KEEL.CAS k \"\" c", ":0"},
		{1000, "SET e \"\"", "+OK"},
		{1000, "KEEL.CAS e \"\" c", ":1"},
		{1000, "GET e", "$c"},
		{1000, "SET t v PX 10", "+OK"},
		{2000, "KEEL.CAS t v w", ":0"},
		{1000, "KEEL.CAS k b", "-ERR wrong number of arguments for 'keel.cas' command"},
	};
	RUN(rows);
}

TEST(kv_unknown_and_revisions)
{
	static const struct row rows[] = {
		{1000, "NOPE a b", "-ERR unknown command 'NOPE', with args beginning with: 'a' 'b' "},
		{1000, "HSET h f v", "-ERR unknown command 'HSET', with args beginning with: 'h' 'f' 'v' "},
		{1000, "SET a 1", "+OK"},
		{1000, "KEEL.GET a", "*4 $1 :1 :1 :1"},
		{1000, "SET b 1", "+OK"},
		{1000, "SET a 2", "+OK"},
		{1000, "KEEL.GET a", "*4 $2 :1 :3 :2"},
		{1000, "DEL nope", ":0"},
		{1000, "SET a 9 NX", "(nil)"},
		{1000, "MSET a 3 a 4", "+OK"},
		{1000, "KEEL.GET a", "*4 $4 :1 :4 :3"},
		{1000, "DEL a", ":1"},
		{1000, "KEEL.GET a", "(nil)"},
		{1000, "SET a x", "+OK"},
		{1000, "KEEL.GET a", "*4 $x :6 :6 :1"},
		{1000, "EXPIRE a 100", ":1"},
		{1000, "KEEL.GET a", "*4 $x :6 :7 :2"},
		{1000, "PERSIST a", ":1"},
		{1000, "INCR n", ":1"},
		{1000, "INCR n", ":2"},
		{1000, "KEEL.GET n", "*4 $2 :9 :10 :2"},
		{1000, "APPEND n 0", ":2"},
		{1000, "KEEL.GET n", "*4 $20 :9 :11 :3"},
		{1000, "KEEL.GET b", "*4 $1 :2 :2 :1"},
		{1000, "KEEL.EXPIRE-DELETE b 2", ":0"},
		{1000, "KEEL.EXPIRE-DELETE b x", "-ERR value is not an integer or out of range"},
		{1000, "GET b", "$1"},
		{1000, "FLUSHDB", "+OK"},
		{1000, "FLUSHDB", "+OK"},
		{1000, "KEEL.GET", "-ERR wrong number of arguments for 'keel.get' command"},
	};
	RUN(rows);
	/* The revision moved once per changing entry: 11 above, then one
	 * FLUSHDB of a non-empty keyspace; the empty FLUSHDB changed nothing. */
	struct h h;
	h_init(&h, MODE_RAW);
	for (size_t i = 0; i < KEEL_ARRAY_LEN(rows); i++)
		h_run(&h, rows[i].now, rows[i].cmd);
	struct kv_stats st;
	kv_stats(h.kv, &st);
	EXPECT_EQ_U64(st.revision, 12);
	EXPECT_EQ_U64(st.keys, 0);
	h_fini(&h);
}

TEST(kv_expiry_at_entry_time)
{
	static const struct row rows[] = {
		{1000, "SET k v PXAT 2000", "+OK"},
		{1999, "GET k", "$v"},
		{1999, "DBSIZE", ":1"},
		{2000, "GET k", "(nil)"},
		{2000, "MGET k", "*1 (nil)"},
		{2000, "EXISTS k", ":0"},
		{2000, "STRLEN k", ":0"},
		{2000, "TYPE k", "+none"},
		{2000, "TTL k", ":-2"},
		{2000, "KEEL.GET k", "(nil)"},
		{2000, "DBSIZE", ":0"},
		{2000, "KEYS *", "*0"},
		{2000, "SCAN 0", "*2 $0 *0"},
		/* A write at an entry time past the expiry sees no key. */
		{2500, "SET k w NX", "+OK"},
		{2500, "KEEL.GET k", "*4 $w :2 :2 :1"},
		{2500, "SET j 5 PXAT 3000", "+OK"},
		{3000, "INCR j", ":1"},
		{3000, "TTL j", ":-1"},
		{3000, "SET i v PXAT 4000", "+OK"},
		{4000, "DEL i", ":0"},
		{4000, "PERSIST i", ":0"},
		{4000, "EXPIRE i 100", ":0"},
		{4000, "GETDEL i", "(nil)"},
		{4000, "SET i v KEEPTTL", "+OK"},
		{4000, "TTL i", ":-1"},
	};
	RUN(rows);
}

TEST(kv_expire_delete_is_conditional)
{
	struct h h;
	h_init(&h, MODE_RAW);
	EXPECT(strcmp(h_run(&h, 1000, "SET k v PXAT 2000"), "+OK") == 0);
	/* The leader's sweep at 2000 finds k with its mod revision. */
	struct kv_meta m;
	EXPECT(!kv_get(h.kv, (const uint8_t *)"k", 1, 2000, NULL, NULL, &m));
	EXPECT(kv_get(h.kv, (const uint8_t *)"k", 1, 1999, NULL, NULL, &m));
	char cmd[64];
	snprintf(cmd, sizeof(cmd), "KEEL.EXPIRE-DELETE k %" PRIu64,
		 m.mod_revision);
	/* Not yet expired at this entry's time: kept. */
	EXPECT(strcmp(h_run(&h, 1500, cmd), ":0") == 0);
	/* Rewritten after the leader decided: kept. */
	EXPECT(strcmp(h_run(&h, 2001, "SET k v2"), "+OK") == 0);
	EXPECT(strcmp(h_run(&h, 2002, cmd), ":0") == 0);
	EXPECT(strcmp(h_run(&h, 2003, "GET k"), "$v2") == 0);
	/* TTL renewed (same key, new mod revision) after the decision: kept. */
	EXPECT(strcmp(h_run(&h, 2003, "SET k v3 PXAT 3000"), "+OK") == 0);
	EXPECT(kv_get(h.kv, (const uint8_t *)"k", 1, 2003, NULL, NULL, &m));
	snprintf(cmd, sizeof(cmd), "KEEL.EXPIRE-DELETE k %" PRIu64,
		 m.mod_revision);
	EXPECT(strcmp(h_run(&h, 2004, "PEXPIREAT k 9000"), ":1") == 0);
	EXPECT(strcmp(h_run(&h, 3500, cmd), ":0") == 0);
	EXPECT(strcmp(h_run(&h, 3500, "GET k"), "$v3") == 0);
	/* Unchanged and expired: deleted, and the revision moves. */
	EXPECT(kv_get(h.kv, (const uint8_t *)"k", 1, 3500, NULL, NULL, &m));
	snprintf(cmd, sizeof(cmd), "KEEL.EXPIRE-DELETE k %" PRIu64,
		 m.mod_revision);
	struct kv_stats st;
	kv_stats(h.kv, &st);
	uint64_t rev = st.revision;
	EXPECT(strcmp(h_run(&h, 9000, cmd), ":1") == 0);
	kv_stats(h.kv, &st);
	EXPECT_EQ_U64(st.revision, rev + 1);
	EXPECT_EQ_U64(st.keys, 0);
	EXPECT(strcmp(h_run(&h, 9001, cmd), ":0") == 0);
	/* Rewritten with a TTL that has also passed by the time the stale
	 * delete applies: that is a different version, kept (the leader's
	 * next sweep proposes a delete for the version it then sees). */
	EXPECT(strcmp(h_run(&h, 10000, "SET j v PXAT 11000"), "+OK") == 0);
	EXPECT(kv_get(h.kv, (const uint8_t *)"j", 1, 10000, NULL, NULL, &m));
	snprintf(cmd, sizeof(cmd), "KEEL.EXPIRE-DELETE j %" PRIu64,
		 m.mod_revision);
	EXPECT(strcmp(h_run(&h, 11001, "SET j w PXAT 12000"), "+OK") == 0);
	EXPECT(strcmp(h_run(&h, 12500, cmd), ":0") == 0);
	kv_stats(h.kv, &st);
	EXPECT_EQ_U64(st.keys, 1);
	EXPECT(kv_get(h.kv, (const uint8_t *)"j", 1, 11500, NULL, NULL, &m));
	snprintf(cmd, sizeof(cmd), "KEEL.EXPIRE-DELETE j %" PRIu64,
		 m.mod_revision);
	EXPECT(strcmp(h_run(&h, 12500, cmd), ":1") == 0);
	kv_stats(h.kv, &st);
	EXPECT_EQ_U64(st.keys, 0);
	h_fini(&h);
}

/* ---- the expiry sweep ------------------------------------------------------- */

struct collect {
	char keys[64][16];
	uint64_t exp[64];
	int n;
};

static int collect_cb(void *ctx, const uint8_t *key, size_t klen,
		      const uint8_t *val, size_t vlen,
		      const struct kv_meta *meta)
{
	(void)val;
	(void)vlen;
	struct collect *c = ctx;
	if (c->n < 64 && klen < 16) {
		memcpy(c->keys[c->n], key, klen);
		c->keys[c->n][klen] = '\0';
		c->exp[c->n] = meta->expire_at_ms;
		c->n++;
	}
	return 0;
}

/* Like collect_cb but records the mod revision (for EXPIRE-DELETE). */
static int collect_mod_cb(void *ctx, const uint8_t *key, size_t klen,
			  const uint8_t *val, size_t vlen,
			  const struct kv_meta *meta)
{
	struct kv_meta m = *meta;
	m.expire_at_ms = meta->mod_revision;
	return collect_cb(ctx, key, klen, val, vlen, &m);
}

TEST(kv_next_expired_order)
{
	struct h h;
	h_init(&h, MODE_RAW);
	h_run(&h, 1000, "SET c v PXAT 3000");
	h_run(&h, 1000, "SET a v PXAT 3000");
	h_run(&h, 1000, "SET b v PXAT 2000");
	h_run(&h, 1000, "SET d v PXAT 5000");
	h_run(&h, 1000, "SET e v");
	struct collect c = {.n = 0};
	struct kv_visit v = {collect_cb, &c};
	EXPECT_EQ_U64(kv_next_expired(h.kv, 1999, 10, &v), 0);
	EXPECT_EQ_U64(kv_next_expired(h.kv, 3000, 10, &v), 3);
	EXPECT(c.n == 3 && strcmp(c.keys[0], "b") == 0 &&
	       strcmp(c.keys[1], "a") == 0 && strcmp(c.keys[2], "c") == 0);
	c.n = 0;
	EXPECT_EQ_U64(kv_next_expired(h.kv, UINT64_MAX, 2, &v), 2);
	EXPECT(c.n == 2 && strcmp(c.keys[1], "a") == 0);
	EXPECT_EQ_U64(kv_dbsize(h.kv, 2999), 4);
	EXPECT_EQ_U64(kv_dbsize(h.kv, 3000), 2);
	EXPECT_EQ_U64(kv_dbsize(h.kv, UINT64_MAX), 1);
	h_fini(&h);
}

/* ---- KEYS, SCAN, glob ------------------------------------------------------ */

TEST(kv_keys_and_scan_basics)
{
	static const struct row rows[] = {
		{1000, "MSET user:1 a user:2 b user:10 c other x", "+OK"},
		{1000, "KEYS user:*", "*3 $user:1 $user:10 $user:2"},
		{1000, "KEYS user:?", "*2 $user:1 $user:2"},
		{1000, "KEYS user:1", "*1 $user:1"},
		{1000, "KEYS user:[12]", "*2 $user:1 $user:2"},
		{1000, "KEYS *", "*4 $other $user:1 $user:10 $user:2"},
		{1000, "KEYS nope", "*0"},
		{1000, "KEYS", "-ERR wrong number of arguments for 'keys' command"},
		{1000, "SCAN 0 COUNT 1000 MATCH user:1*", "*2 $0 *2 $user:10 $user:1"},
		{1000, "SCAN 0 COUNT 1000 TYPE hash", "*2 $0 *0"},
		{1000, "SCAN 0 COUNT 0", "-ERR syntax error"},
		{1000, "SCAN 0 COUNT x", "-ERR value is not an integer or out of range"},
		{1000, "SCAN 0 MATCH", "-ERR syntax error"},
		{1000, "SCAN 0 FOO bar", "-ERR syntax error"},
		{1000, "SCAN x", "-ERR invalid cursor"},
		{1000, "SCAN -1", "-ERR invalid cursor"},
		{1000, "SCAN 18446744073709551616", "-ERR invalid cursor"},
		{1000, "SCAN 18446744073709551615 COUNT 1000", "*2 $0 *0"},
	};
	RUN(rows);
}

struct glob_case {
	const char *pat, *str;
	bool want;
};

TEST(kv_glob_table)
{
	static const struct glob_case cases[] = {
		{"*", "", true},
		{"*", "abc", true},
		{"", "", true},
		{"", "a", false},
		{"a*", "abc", true},
		{"a*", "ba", false},
		{"*c", "abc", true},
		{"*b*", "abc", true},
		{"a**c", "abc", true},
		{"a*b*c", "axxbyyc", true},
		{"a*b*c", "axxbyy", false},
		{"?", "a", true},
		{"?", "", false},
		{"??", "a", false},
		{"a?c", "abc", true},
		{"[abc]", "b", true},
		{"[abc]", "d", false},
		{"[^abc]", "d", true},
		{"[^abc]", "a", false},
		{"[a-c]", "b", true},
		{"[a-c]", "d", false},
		{"[c-a]", "b", true},
		{"[^a-c]x", "dx", true},
		{"[\\]]", "]", true},
		{"[\\-]", "-", true},
		{"[a-]", "-", false},
		{"[a-]", "]", true},
		{"[a-]", "a", true},
		{"[abc", "b", true},
		{"[abc", "d", false},
		{"[", "[", false},
		{"[^", "x", true},
		{"\\*", "*", true},
		{"\\*", "a", false},
		{"\\?x", "?x", true},
		{"a\\", "a\\", true},
		{"\\", "\\", true},
		{"h[ae]llo", "hello", true},
		{"h[ae]llo", "hallo", true},
		{"h[ae]llo", "hillo", false},
		{"h*llo", "hllo", true},
		{"*a*a*a*a*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false},
		{"user:[0-9]*", "user:7abc", true},
		{"user:[0-9]*", "user:abc", false},
	};
	for (size_t i = 0; i < KEEL_ARRAY_LEN(cases); i++) {
		const struct glob_case *g = &cases[i];
		bool got = kv_glob_match((const uint8_t *)g->pat, strlen(g->pat),
					 (const uint8_t *)g->str,
					 strlen(g->str));
		if (got != g->want) {
			fprintf(stderr, "  glob %s vs %s: got %d\n", g->pat,
				g->str, got);
			test_failed_now_ = 1;
		}
	}
}

/* Runs SCAN with cursor/count; returns the next cursor, adds keys to seen. */
static uint64_t scan_once(struct kv *kv, uint64_t cursor, int count,
			  bool *seen, int nkeys, struct rec *r)
{
	char cur[32], cnt[32];
	snprintf(cur, sizeof(cur), "%" PRIu64, cursor);
	snprintf(cnt, sizeof(cnt), "%d", count);
	const uint8_t *argv[4] = {(const uint8_t *)"SCAN", (const uint8_t *)cur,
				  (const uint8_t *)"COUNT",
				  (const uint8_t *)cnt};
	size_t lens[4] = {4, strlen(cur), 5, strlen(cnt)};
	rec_reset(r);
	kv_read(kv, 4, argv, lens, 1000, &rec_ops, r);
	if (r->nitems < 3 || r->items[0].kind != '*' || r->items[1].kind != '$')
		return 0;
	char buf[32] = {0};
	memcpy(buf, r->strs + r->items[1].off,
	       r->items[1].len < 31 ? r->items[1].len : 31);
	for (size_t i = 3; i < r->nitems; i++) {
		char key[32] = {0};
		int k = -1;
		memcpy(key, r->strs + r->items[i].off,
		       r->items[i].len < 31 ? r->items[i].len : 31);
		if (sscanf(key, "k%d", &k) == 1 && k >= 0 && k < nkeys)
			seen[k] = true;
	}
	return strtoull(buf, NULL, 10);
}

TEST(kv_scan_guarantee_under_writes)
{
	uint64_t seed = test_seed(7);
	struct keel_rand rnd;
	keel_rand_seed(&rnd, seed);
	enum { NKEYS = 600 };
	for (int round = 0; round < 20; round++) {
		struct h h;
		h_init(&h, MODE_RAW);
		bool stable[NKEYS], present[NKEYS], seen[NKEYS];
		for (int i = 0; i < NKEYS; i++) {
			stable[i] = keel_rand_chance(&rnd, 1, 2);
			present[i] = stable[i] || keel_rand_chance(&rnd, 1, 2);
			seen[i] = false;
			if (present[i]) {
				char cmd[64];
				snprintf(cmd, sizeof(cmd), "SET k%d v", i);
				h_run(&h, 1000, cmd);
			}
		}
		uint64_t cursor = 0;
		int calls = 0;
		do {
			int count = 1 + (int)keel_rand_below(&rnd, 40);
			cursor = scan_once(h.kv, cursor, count, seen, NKEYS, &h.rec);
			calls++;
			/* Churn the keys that are not stable. */
			for (int w = 0; w < 20; w++) {
				int k = (int)keel_rand_below(&rnd, NKEYS);
				if (stable[k])
					continue;
				char cmd[64];
				if (present[k])
					snprintf(cmd, sizeof(cmd), "DEL k%d", k);
				else
					snprintf(cmd, sizeof(cmd), "SET k%d v", k);
				h_run(&h, 1000, cmd);
				present[k] = !present[k];
			}
		} while (cursor != 0 && calls < 100000);
		for (int i = 0; i < NKEYS; i++) {
			if (stable[i] && !seen[i]) {
				fprintf(stderr, "  round %d: k%d never returned\n",
					round, i);
				test_failed_now_ = 1;
				break;
			}
		}
		EXPECT(kv_invariants(h.kv));
		h_fini(&h);
	}
}

/* ---- model test: ordering, ranges, prefixes, expiry index ------------------- */

#define MODEL_MAX 512

struct model_key {
	uint8_t k[8];
	size_t len;
	uint64_t exp;
};

static int model_cmp(const struct model_key *a, const struct model_key *b)
{
	size_t n = a->len < b->len ? a->len : b->len;
	int c = n ? memcmp(a->k, b->k, n) : 0;
	if (c)
		return c;
	return a->len < b->len ? -1 : a->len > b->len;
}

struct range_out {
	struct model_key got[MODEL_MAX];
	int n;
};

static int range_cb(void *ctx, const uint8_t *key, size_t klen,
		    const uint8_t *val, size_t vlen, const struct kv_meta *meta)
{
	(void)val;
	(void)vlen;
	struct range_out *o = ctx;
	if (o->n < MODEL_MAX && klen <= 8) {
		memcpy(o->got[o->n].k, key, klen);
		o->got[o->n].len = klen;
		o->got[o->n].exp = meta->expire_at_ms;
		o->n++;
	}
	return 0;
}

static void rand_key(struct keel_rand *r, struct model_key *k)
{
	static const uint8_t alpha[] = {0x00, 'a', 'b', 'c', 0xff};
	k->len = (size_t)keel_rand_below(r, 5);
	for (size_t i = 0; i < k->len; i++)
		k->k[i] = alpha[keel_rand_below(r, sizeof(alpha))];
}

TEST(kv_model_ordering_ranges)
{
	uint64_t seed = test_seed(11);
	struct keel_rand rnd;
	keel_rand_seed(&rnd, seed);
	static struct model_key model[MODEL_MAX];
	static struct range_out out;
	int n = 0;
	struct h h;
	h_init(&h, MODE_RAW);
	const uint64_t now = 5000;
	for (int step = 0; step < 6000; step++) {
		struct model_key k;
		rand_key(&rnd, &k);
		int pos = 0;
		while (pos < n && model_cmp(&model[pos], &k) < 0)
			pos++;
		bool found = pos < n && model_cmp(&model[pos], &k) == 0;
		const uint8_t *argv[5];
		size_t lens[5];
		char num[32];
		uint64_t choice = keel_rand_below(&rnd, 3);
		if (choice < 2) {
			/* SET k v, with an expiry a third of the time (some
			 * already past: those keys are absent). */
			uint64_t exp = 0;
			int argc = 3;
			argv[0] = (const uint8_t *)"SET";
			lens[0] = 3;
			argv[1] = k.k;
			lens[1] = k.len;
			argv[2] = (const uint8_t *)"v";
			lens[2] = 1;
			if (keel_rand_chance(&rnd, 1, 3)) {
				exp = 4000 + keel_rand_below(&rnd, 4000);
				snprintf(num, sizeof(num), "%" PRIu64, exp);
				argv[3] = (const uint8_t *)"PXAT";
				lens[3] = 4;
				argv[4] = (const uint8_t *)num;
				lens[4] = strlen(num);
				argc = 5;
			}
			ASSERT(h_apply_argv(&h, now, argc, argv, lens) == 0);
			bool live = exp == 0 || exp > now;
			if (live && !found && n < MODEL_MAX) {
				memmove(&model[pos + 1], &model[pos],
					(size_t)(n - pos) * sizeof(model[0]));
				model[pos] = k;
				model[pos].exp = exp;
				n++;
			} else if (live && found) {
				model[pos].exp = exp;
			} else if (!live && found) {
				memmove(&model[pos], &model[pos + 1],
					(size_t)(n - pos - 1) * sizeof(model[0]));
				n--;
			}
			if (live && !found && n >= MODEL_MAX) {
				/* keep kv and model equal: undo */
				argv[0] = (const uint8_t *)"DEL";
				lens[0] = 3;
				ASSERT(h_apply_argv(&h, now, 2, argv, lens) == 0);
			}
		} else {
			argv[0] = (const uint8_t *)"DEL";
			lens[0] = 3;
			argv[1] = k.k;
			lens[1] = k.len;
			ASSERT(h_apply_argv(&h, now, 2, argv, lens) == 0);
			if (found) {
				memmove(&model[pos], &model[pos + 1],
					(size_t)(n - pos - 1) * sizeof(model[0]));
				n--;
			}
		}
		if (step % 50 != 0)
			continue;
		ASSERT(kv_invariants(h.kv));
		EXPECT_EQ_U64(kv_dbsize(h.kv, now), (uint64_t)n);
		/* A random range with a random limit. */
		struct model_key a, b;
		rand_key(&rnd, &a);
		rand_key(&rnd, &b);
		bool unbounded = keel_rand_chance(&rnd, 1, 4);
		uint64_t limit = keel_rand_below(&rnd, 8);
		out.n = 0;
		struct kv_visit v = {range_cb, &out};
		kv_range(h.kv, a.k, a.len, unbounded ? NULL : b.k, b.len, now,
			 limit, &v);
		int want = 0;
		for (int i = 0; i < n; i++) {
			if (model_cmp(&model[i], &a) < 0)
				continue;
			if (!unbounded && model_cmp(&model[i], &b) >= 0)
				break;
			if (limit && (uint64_t)want >= limit)
				break;
			if (want >= out.n ||
			    model_cmp(&out.got[want], &model[i]) != 0) {
				test_failed_now_ = 1;
				fprintf(stderr, "  range mismatch at %d\n", want);
				break;
			}
			want++;
		}
		EXPECT(want == out.n);
		/* A prefix scan. */
		struct model_key p;
		rand_key(&rnd, &p);
		if (p.len > 2)
			p.len = 2;
		out.n = 0;
		kv_prefix(h.kv, p.k, p.len, now, 0, &v);
		want = 0;
		for (int i = 0; i < n; i++) {
			if (model[i].len < p.len ||
			    (p.len && memcmp(model[i].k, p.k, p.len)))
				continue;
			if (want >= out.n ||
			    model_cmp(&out.got[want], &model[i]) != 0) {
				test_failed_now_ = 1;
				break;
			}
			want++;
		}
		EXPECT(want == out.n);
		/* The expiry index in (expire_at, key) order. */
		out.n = 0;
		kv_next_expired(h.kv, UINT64_MAX, MODEL_MAX, &v);
		int with_exp = 0;
		for (int i = 0; i < n; i++)
			with_exp += model[i].exp != 0;
		EXPECT(out.n == with_exp);
		for (int i = 1; i < out.n; i++) {
			if (out.got[i - 1].exp > out.got[i].exp ||
			    (out.got[i - 1].exp == out.got[i].exp &&
			     model_cmp(&out.got[i - 1], &out.got[i]) >= 0)) {
				test_failed_now_ = 1;
				break;
			}
		}
	}
	h_fini(&h);
}

/* ---- random command streams --------------------------------------------------- */

static const char *const rand_cmds[] = {
	"SET", "SET", "SET", "GET", "SETNX", "SETEX", "PSETEX", "GETSET",
	"GETDEL", "GETEX", "MSET", "MSETNX", "DEL", "UNLINK", "EXISTS", "INCR",
	"INCRBY", "DECR", "DECRBY", "APPEND", "EXPIRE", "PEXPIRE", "EXPIREAT",
	"PEXPIREAT", "PERSIST", "TTL", "FLUSHDB", "KEEL.EXPIRE-DELETE", "NOPE",
	"MGET", "STRLEN",
};
static const char *const rand_words[] = {
	"NX", "XX", "GET", "KEEPTTL", "EX", "PX", "EXAT", "PXAT", "PERSIST",
	"GT", "LT", "10", "0", "-1", "1", "5000", "abc", "99999999999999999999",
	"9223372036854775807",
};

struct stream {
	const uint8_t *argv[12];
	size_t lens[12];
	char store[12][24];
	int argc;
};

static void rand_arg(struct keel_rand *r, struct stream *s, int i)
{
	uint64_t c = keel_rand_below(r, 4);
	if (c == 0) {
		snprintf(s->store[i], 24, "k%d", (int)keel_rand_below(r, 12));
	} else if (c == 1) {
		snprintf(s->store[i], 24, "%s",
			 rand_words[keel_rand_below(r, KEEL_ARRAY_LEN(rand_words))]);
	} else if (c == 2) {
		snprintf(s->store[i], 24, "%" PRId64,
			 (int64_t)keel_rand_below(r, 20000) - 100);
	} else {
		size_t n = (size_t)keel_rand_below(r, 6);
		for (size_t k = 0; k < n; k++)
			s->store[i][k] = (char)('a' + keel_rand_below(r, 3));
		s->store[i][n] = '\0';
	}
	s->argv[i] = (const uint8_t *)s->store[i];
	s->lens[i] = strlen(s->store[i]);
}

static void rand_command(struct keel_rand *r, struct stream *s)
{
	snprintf(s->store[0], 24, "%s",
		 rand_cmds[keel_rand_below(r, KEEL_ARRAY_LEN(rand_cmds))]);
	s->argv[0] = (const uint8_t *)s->store[0];
	s->lens[0] = strlen(s->store[0]);
	s->argc = 1 + (int)keel_rand_below(r, 6);
	for (int i = 1; i < s->argc; i++)
		rand_arg(r, s, i);
	/* Keys usually come first. */
	if (s->argc > 1 && keel_rand_chance(r, 4, 5)) {
		snprintf(s->store[1], 24, "k%d", (int)keel_rand_below(r, 12));
		s->lens[1] = strlen(s->store[1]);
	}
}

static bool snapshots_equal(const struct kv *a, const struct kv *b)
{
	uint8_t *sa, *sb;
	size_t la, lb;
	if (kv_snapshot_encode(a, &keel_alloc_libc, &sa, &la) ||
	    kv_snapshot_encode(b, &keel_alloc_libc, &sb, &lb))
		return false;
	bool eq = la == lb && memcmp(sa, sb, la) == 0;
	free(sa);
	free(sb);
	return eq;
}

TEST(kv_determinism_random_stream)
{
	uint64_t seed = test_seed(42);
	struct keel_rand rnd;
	keel_rand_seed(&rnd, seed);
	static struct h a, b, c;
	h_init(&a, MODE_RAW);
	h_init(&b, MODE_RAW);
	h_init(&c, MODE_REWRITE);
	uint64_t now = 1000;
	for (int i = 0; i < 20000; i++) {
		struct stream s;
		rand_command(&rnd, &s);
		now += keel_rand_below(&rnd, 300);
		rec_reset(&a.rec);
		rec_reset(&b.rec);
		rec_reset(&c.rec);
		ASSERT(h_apply_argv(&a, now, s.argc, s.argv, s.lens) == 0);
		ASSERT(h_apply_argv(&b, now, s.argc, s.argv, s.lens) == 0);
		ASSERT(h_apply_argv(&c, now, s.argc, s.argv, s.lens) == 0);
		if (strcmp(a.rec.text, b.rec.text) != 0 ||
		    strcmp(a.rec.text, c.rec.text) != 0) {
			fprintf(stderr, "  step %d %s: raw '%s' rewritten '%s'\n",
				i, s.store[0], a.rec.text, c.rec.text);
			test_failed_now_ = 1;
			break;
		}
		if (i % 1000 == 0) {
			ASSERT(kv_invariants(a.kv));
			EXPECT_EQ_U64(kv_digest(a.kv), kv_digest(b.kv));
			EXPECT_EQ_U64(kv_digest(a.kv), kv_digest(c.kv));
			EXPECT(snapshots_equal(a.kv, b.kv));
		}
		/* Sometimes the leader sweeps: it reads due keys from its own
		 * replica and proposes conditional deletes a little later. */
		if (keel_rand_chance(&rnd, 1, 20)) {
			static struct collect due;
			due.n = 0;
			struct kv_visit v = {collect_mod_cb, &due};
			kv_next_expired(a.kv, now, 16, &v);
			now += keel_rand_below(&rnd, 50);
			for (int d = 0; d < due.n; d++) {
				struct stream x;
				x.argc = 3;
				snprintf(x.store[0], 24, "KEEL.EXPIRE-DELETE");
				snprintf(x.store[1], 24, "%s", due.keys[d]);
				snprintf(x.store[2], 24, "%" PRIu64, due.exp[d]);
				for (int k = 0; k < 3; k++) {
					x.argv[k] = (const uint8_t *)x.store[k];
					x.lens[k] = strlen(x.store[k]);
				}
				ASSERT(h_apply_argv(&a, now, 3, x.argv, x.lens) == 0);
				ASSERT(h_apply_argv(&b, now, 3, x.argv, x.lens) == 0);
				ASSERT(h_apply_argv(&c, now, 3, x.argv, x.lens) == 0);
			}
		}
	}
	EXPECT_EQ_U64(kv_digest(a.kv), kv_digest(b.kv));
	EXPECT_EQ_U64(kv_digest(a.kv), kv_digest(c.kv));
	EXPECT(snapshots_equal(a.kv, b.kv));
	EXPECT(snapshots_equal(a.kv, c.kv));
	h_fini(&a);
	h_fini(&b);
	h_fini(&c);
}

/* ---- snapshots ------------------------------------------------------------------ */

static void fill_random(struct h *h, struct keel_rand *rnd, int n)
{
	uint64_t now = 1000;
	for (int i = 0; i < n; i++) {
		struct stream s;
		rand_command(rnd, &s);
		now += keel_rand_below(rnd, 100);
		rec_reset(&h->rec);
		h_apply_argv(h, now, s.argc, s.argv, s.lens);
	}
}

TEST(kv_snapshot_round_trip)
{
	uint64_t seed = test_seed(5);
	struct keel_rand rnd;
	keel_rand_seed(&rnd, seed);
	for (int round = 0; round < 20; round++) {
		static struct h a, b;
		h_init(&a, MODE_RAW);
		fill_random(&a, &rnd, 50 + (int)keel_rand_below(&rnd, 2000));
		uint8_t *snap;
		size_t len;
		ASSERT(kv_snapshot_encode(a.kv, &keel_alloc_libc, &snap, &len) == 0);
		EXPECT_EQ_U64(len, kv_snapshot_size(a.kv));
		/* Chunked writing gives the same bytes for any chunk size. */
		size_t chunk = 1 + (size_t)keel_rand_below(&rnd, 97);
		uint8_t *copy = malloc(len);
		struct kv_snap_writer *w =
			kv_snapshot_writer_create(a.kv, &keel_alloc_libc);
		ASSERT(w != NULL);
		size_t off = 0, n;
		bool more = true;
		while (more && off <= len) {
			uint8_t tmp[128];
			more = kv_snapshot_writer_next(w, tmp, chunk, &n);
			ASSERT(off + n <= len);
			memcpy(copy + off, tmp, n);
			off += n;
		}
		kv_snapshot_writer_destroy(w);
		EXPECT(off == len && memcmp(copy, snap, len) == 0);
		free(copy);

		h_init(&b, MODE_RAW);
		kv_destroy(b.kv);
		b.kv = NULL;
		ASSERT(kv_snapshot_decode(&keel_alloc_libc, snap, len, &b.kv) == 0);
		b.index = a.index;
		EXPECT_EQ_U64(kv_digest(a.kv), kv_digest(b.kv));
		EXPECT(kv_invariants(b.kv));
		struct kv_stats sa, sb;
		kv_stats(a.kv, &sa);
		kv_stats(b.kv, &sb);
		EXPECT_EQ_U64(sa.revision, sb.revision);
		EXPECT_EQ_U64(sa.applied_index, sb.applied_index);
		EXPECT_EQ_U64(sa.keys, sb.keys);
		EXPECT_EQ_U64(sa.expires, sb.expires);
		/* Both continue identically. */
		uint64_t now = 300000;
		for (int i = 0; i < 500; i++) {
			struct stream s;
			rand_command(&rnd, &s);
			now += keel_rand_below(&rnd, 100);
			rec_reset(&a.rec);
			rec_reset(&b.rec);
			h_apply_argv(&a, now, s.argc, s.argv, s.lens);
			h_apply_argv(&b, now, s.argc, s.argv, s.lens);
			if (strcmp(a.rec.text, b.rec.text) != 0) {
				test_failed_now_ = 1;
				break;
			}
		}
		EXPECT_EQ_U64(kv_digest(a.kv), kv_digest(b.kv));
		free(snap);
		h_fini(&a);
		h_fini(&b);
	}
}

TEST(kv_snapshot_rejects_corruption_and_truncation)
{
	uint64_t seed = test_seed(9);
	struct keel_rand rnd;
	keel_rand_seed(&rnd, seed);
	struct h a;
	h_init(&a, MODE_RAW);
	fill_random(&a, &rnd, 300);
	uint8_t *snap;
	size_t len;
	ASSERT(kv_snapshot_encode(a.kv, &keel_alloc_libc, &snap, &len) == 0);
	ASSERT(len > KV_SNAP_HEADER_BYTES + 4);
	struct kv_stats st;
	kv_stats(a.kv, &st);
	ASSERT(st.keys > 0);
	uint8_t *buf = malloc(len);
	int accepted = 0;
	for (size_t i = 0; i < len; i++) {
		for (int t = 0; t < 2; t++) {
			memcpy(buf, snap, len);
			uint8_t x = t == 0 ? 0x01
					   : (uint8_t)(1 + keel_rand_below(&rnd, 255));
			buf[i] ^= x;
			struct kv *out = NULL;
			int rc = kv_snapshot_decode(&keel_alloc_libc, buf, len,
						    &out);
			if (rc == 0) {
				accepted++;
				kv_destroy(out);
			}
		}
	}
	EXPECT(accepted == 0);
	for (size_t cut = 0; cut < len; cut++) {
		uint8_t *t = malloc(cut ? cut : 1);
		memcpy(t, snap, cut);
		struct kv *out = NULL;
		int rc = kv_snapshot_decode(&keel_alloc_libc, t, cut, &out);
		if (rc == 0) {
			accepted++;
			kv_destroy(out);
		}
		free(t);
	}
	EXPECT(accepted == 0);
	/* Re-sealed edits must be caught by the field checks themselves. */
	struct kv *out = NULL;
	memcpy(buf, snap, len);
	keel_put_u32(buf + 8, KV_SNAP_VERSION + 1);
	keel_put_u32(buf + len - 4, keel_crc32c(0, buf, len - 4));
	EXPECT(kv_snapshot_decode(&keel_alloc_libc, buf, len, &out) ==
	       KEEL_ERR_VERSION);
	memcpy(buf, snap, len);
	keel_put_u64(buf + 40, st.keys + 1); /* key count */
	keel_put_u32(buf + len - 4, keel_crc32c(0, buf, len - 4));
	EXPECT(kv_snapshot_decode(&keel_alloc_libc, buf, len, &out) != 0);
	memcpy(buf, snap, len);
	keel_put_u64(buf + 32, 0); /* revision below every mod revision */
	keel_put_u32(buf + len - 4, keel_crc32c(0, buf, len - 4));
	EXPECT(kv_snapshot_decode(&keel_alloc_libc, buf, len, &out) ==
	       KEEL_ERR_MALFORMED);
	memcpy(buf, snap, len);
	buf[0] = 'X';
	EXPECT(kv_snapshot_decode(&keel_alloc_libc, buf, len, &out) ==
	       KEEL_ERR_MAGIC);
	free(buf);
	free(snap);
	h_fini(&a);
}

TEST(kv_snapshot_empty_and_golden_header)
{
	struct kv *kv = kv_create(&keel_alloc_libc);
	uint8_t *snap;
	size_t len;
	ASSERT(kv_snapshot_encode(kv, &keel_alloc_libc, &snap, &len) == 0);
	EXPECT_EQ_U64(len, KV_SNAP_HEADER_BYTES + 4);
	EXPECT(memcmp(snap, "KEELKVSN", 8) == 0);
	EXPECT_EQ_U64(keel_get_u32(snap + 8), 2);
	EXPECT_EQ_U64(keel_get_u64(snap + 16), len);
	EXPECT_EQ_U64(keel_get_u32(snap + len - 4),
		      keel_crc32c(0, snap, len - 4));
	struct kv *back = NULL;
	EXPECT(kv_snapshot_decode(&keel_alloc_libc, snap, len, &back) == 0);
	EXPECT_EQ_U64(kv_digest(back), kv_digest(kv));
	kv_destroy(back);
	free(snap);
	kv_destroy(kv);
}

/* ---- the frozen version and the streaming reader ------------------------------ */

/* A random write (or read) over a key space of nkeys short keys and a few
 * long ones, with values of 0..300 bytes: every command kind that changes
 * keys or the TTL index, overwrites of one key inside one entry, and rare
 * FLUSHALL / FLUSHDB. */
struct fz_cmd {
	const uint8_t *argv[16];
	size_t lens[16];
	char store[16][320];
	int argc;
};

static void fz_key(struct keel_rand *r, struct fz_cmd *c, int i, int nkeys)
{
	if (keel_rand_chance(r, 1, 40)) /* longer than any key so far */
		snprintf(c->store[i], 320, "k%04d-long-%0*d",
			 (int)keel_rand_below(r, (uint64_t)nkeys),
			 (int)(10 + keel_rand_below(r, 200)), 7);
	else
		snprintf(c->store[i], 320, "k%04d",
			 (int)keel_rand_below(r, (uint64_t)nkeys));
}

static void fz_val(struct keel_rand *r, struct fz_cmd *c, int i)
{
	if (keel_rand_chance(r, 1, 4)) {
		snprintf(c->store[i], 320, "%d", (int)keel_rand_below(r, 1000));
		return;
	}
	size_t n = (size_t)keel_rand_below(r, 300);
	for (size_t k = 0; k < n; k++)
		c->store[i][k] = (char)('a' + keel_rand_below(r, 26));
	c->store[i][n] = '\0';
}

static void fz_command(struct keel_rand *r, struct fz_cmd *c, int nkeys,
		       uint64_t now)
{
	static const char *const names[] = {
		"SET", "SET", "SET", "SET", "SETNX", "SETEX", "PSETEX",
		"GETSET", "GETDEL", "GETEX", "MSET", "MSETNX", "DEL", "UNLINK",
		"INCR", "INCRBY", "DECR", "APPEND", "APPEND", "EXPIRE",
		"PEXPIRE", "PEXPIREAT", "PERSIST", "KEEL.CAS", "GET", "FLUSH",
	};
	const char *name = names[keel_rand_below(r, KEEL_ARRAY_LEN(names))];
	int k = 1;
	if (!strcmp(name, "FLUSH")) {
		/* Rare: most streams should keep a live tree to merge. */
		if (!keel_rand_chance(r, 1, 30))
			name = "DEL";
		else
			name = keel_rand_chance(r, 1, 2) ? "FLUSHALL" : "FLUSHDB";
	}
	snprintf(c->store[0], 320, "%s", name);
	if (!strcmp(name, "FLUSHALL") || !strcmp(name, "FLUSHDB")) {
		c->argc = 1;
	} else if (!strcmp(name, "SET")) {
		fz_key(r, c, k++, nkeys);
		fz_val(r, c, k++);
		uint64_t o = keel_rand_below(r, 8);
		if (o == 0) {
			snprintf(c->store[k++], 320, "PX");
			snprintf(c->store[k++], 320, "%d",
				 (int)(1 + keel_rand_below(r, 3000)));
		} else if (o == 1) {
			snprintf(c->store[k++], 320, "KEEPTTL");
		} else if (o == 2) {
			snprintf(c->store[k++], 320, "%s",
				 keel_rand_chance(r, 1, 2) ? "NX" : "XX");
		} else if (o == 3) {
			snprintf(c->store[k++], 320, "GET");
		} else if (o == 4) { /* already expired: a delete */
			snprintf(c->store[k++], 320, "PXAT");
			snprintf(c->store[k++], 320, "%" PRIu64, now - 1);
		}
	} else if (!strcmp(name, "SETEX") || !strcmp(name, "PSETEX")) {
		fz_key(r, c, k++, nkeys);
		snprintf(c->store[k++], 320, "%d",
			 (int)(1 + keel_rand_below(r, 3000)));
		fz_val(r, c, k++);
	} else if (!strcmp(name, "GETSET") || !strcmp(name, "APPEND") ||
		   !strcmp(name, "SETNX")) {
		fz_key(r, c, k++, nkeys);
		fz_val(r, c, k++);
	} else if (!strcmp(name, "GETEX")) {
		fz_key(r, c, k++, nkeys);
		if (keel_rand_chance(r, 1, 2)) {
			snprintf(c->store[k++], 320, "PERSIST");
		} else {
			snprintf(c->store[k++], 320, "PX");
			snprintf(c->store[k++], 320, "%d",
				 (int)(1 + keel_rand_below(r, 3000)));
		}
	} else if (!strcmp(name, "MSET") || !strcmp(name, "MSETNX")) {
		int pairs = 1 + (int)keel_rand_below(r, 4);
		for (int p = 0; p < pairs; p++) {
			fz_key(r, c, k++, nkeys);
			fz_val(r, c, k++);
		}
		if (keel_rand_chance(r, 1, 3)) { /* the same key twice */
			snprintf(c->store[k], 320, "%s", c->store[1]);
			k++;
			fz_val(r, c, k++);
		}
	} else if (!strcmp(name, "DEL") || !strcmp(name, "UNLINK")) {
		int n = 1 + (int)keel_rand_below(r, 4);
		for (int p = 0; p < n; p++)
			fz_key(r, c, k++, nkeys);
	} else if (!strcmp(name, "INCRBY")) {
		fz_key(r, c, k++, nkeys);
		snprintf(c->store[k++], 320, "%d", (int)keel_rand_below(r, 100));
	} else if (!strcmp(name, "EXPIRE") || !strcmp(name, "PEXPIRE")) {
		fz_key(r, c, k++, nkeys);
		snprintf(c->store[k++], 320, "%d",
			 (int)keel_rand_below(r, 3000) - 5);
	} else if (!strcmp(name, "PEXPIREAT")) {
		fz_key(r, c, k++, nkeys);
		snprintf(c->store[k++], 320, "%" PRIu64,
			 now - 10 + keel_rand_below(r, 3000));
	} else if (!strcmp(name, "KEEL.CAS")) {
		fz_key(r, c, k++, nkeys);
		snprintf(c->store[k++], 320, "%d", (int)keel_rand_below(r, 10));
		fz_val(r, c, k++);
	} else { /* INCR DECR PERSIST GETDEL GET */
		fz_key(r, c, k++, nkeys);
	}
	c->argc = k;
	for (int i = 0; i < k; i++) {
		c->argv[i] = (const uint8_t *)c->store[i];
		c->lens[i] = strlen(c->store[i]);
	}
}

/* Applies one command to both replicas; false if their replies differ. */
static bool fz_apply2(struct h *a, struct h *b, uint64_t now,
		      const struct fz_cmd *c)
{
	rec_reset(&a->rec);
	rec_reset(&b->rec);
	if (h_apply_argv(a, now, c->argc, c->argv, c->lens) ||
	    h_apply_argv(b, now, c->argc, c->argv, c->lens))
		return false;
	return strcmp(a->rec.text, b->rec.text) == 0;
}

/* The leader's sweep, on both replicas: EXPIRE-DELETE of due keys. */
static bool fz_sweep(struct h *a, struct h *b, uint64_t now)
{
	static struct collect due;
	due.n = 0;
	struct kv_visit v = {collect_mod_cb, &due};
	kv_next_expired(a->kv, now, 16, &v);
	for (int d = 0; d < due.n; d++) {
		struct fz_cmd x;
		x.argc = 3;
		snprintf(x.store[0], 320, "KEEL.EXPIRE-DELETE");
		snprintf(x.store[1], 320, "%s", due.keys[d]);
		snprintf(x.store[2], 320, "%" PRIu64, due.exp[d]);
		for (int k = 0; k < 3; k++) {
			x.argv[k] = (const uint8_t *)x.store[k];
			x.lens[k] = strlen(x.store[k]);
		}
		if (!fz_apply2(a, b, now, &x))
			return false;
	}
	return true;
}

/* n random commands (and sometimes a sweep) on both replicas. */
static bool fz_fill(struct h *a, struct h *b, struct keel_rand *rnd, int n,
		    int nkeys, uint64_t *now)
{
	for (int i = 0; i < n; i++) {
		struct fz_cmd c;
		*now += keel_rand_below(rnd, 20);
		fz_command(rnd, &c, nkeys, *now);
		if (!fz_apply2(a, b, *now, &c))
			return false;
		if (keel_rand_chance(rnd, 1, 30) && !fz_sweep(a, b, *now))
			return false;
	}
	return true;
}

/* Property: whatever is applied between the steps, the streamed bytes are
 * kv_snapshot_encode of the state at the freeze, for step sizes from one
 * byte to 64 KiB; the live kv behaves exactly like a replica without a
 * frozen version (same replies, same digest); pre-images are all gone when
 * the last record is out. */
TEST(kv_frozen_stream_equals_encode_at_freeze)
{
	uint64_t seed = test_seed(77);
	struct keel_rand rnd;
	keel_rand_seed(&rnd, seed);
	static const size_t steps[] = {1,  2,   3,   7,    39,   40,
				       41, 56,  57,  100,  1000, 4096,
				       65536, 0, 0, 0};
	static struct h a, b;
	size_t peak_pre = 0;
	uint8_t *tmp = malloc(65536);
	ASSERT(tmp != NULL);
	for (size_t round = 0; round < 2 * KEEL_ARRAY_LEN(steps); round++) {
		size_t step = steps[round % KEEL_ARRAY_LEN(steps)];
		if (!step)
			step = 1 + (size_t)keel_rand_below(&rnd, 65536);
		int nkeys = 1 + (int)keel_rand_below(&rnd, 400);
		int nfill = step < 8 ? (int)keel_rand_below(&rnd, 150)
				     : (int)keel_rand_below(&rnd, 1500);
		h_init(&a, MODE_RAW);
		h_init(&b, MODE_RAW);
		uint64_t now = 1000;
		ASSERT(fz_fill(&a, &b, &rnd, nfill, nkeys, &now));
		uint8_t *want;
		size_t len;
		ASSERT(kv_snapshot_encode(a.kv, &keel_alloc_libc, &want, &len) == 0);
		struct kv_frozen *f = kv_freeze(a.kv, &keel_alloc_libc);
		ASSERT(f != NULL);
		EXPECT(kv_freeze(a.kv, &keel_alloc_libc) == NULL);
		EXPECT_EQ_U64(kv_frozen_size(f), len);
		EXPECT_EQ_U64(kv_frozen_index(f), a.index);
		uint8_t *got = malloc(len);
		ASSERT(got != NULL);
		size_t off = 0, n = 0, max_pre = 0;
		bool more = true, same = true;
		for (size_t guard = 0; more && guard <= len + 1; guard++) {
			/* Between steps: none, a few, or a burst of writes. */
			int k = keel_rand_chance(&rnd, 1, 20)
					? 30
					: (int)keel_rand_below(&rnd, 4);
			if (!fz_fill(&a, &b, &rnd, k, nkeys, &now)) {
				same = false;
				break;
			}
			if (kv_frozen_preimage_bytes(f) > max_pre)
				max_pre = kv_frozen_preimage_bytes(f);
			more = kv_frozen_next(f, tmp, step, &n);
			if (n > len - off || n == 0) {
				same = false;
				break;
			}
			memcpy(got + off, tmp, n);
			off += n;
		}
		EXPECT(same);
		EXPECT(!more);
		EXPECT_EQ_U64(off, len);
		if (off == len && memcmp(got, want, len) != 0) {
			size_t i = 0;
			while (got[i] == want[i])
				i++;
			fprintf(stderr, "  round %zu step %zu: first difference "
					"at byte %zu of %zu\n",
				round, step, i, len);
			test_failed_now_ = 1;
		}
		EXPECT_EQ_U64(kv_frozen_preimage_bytes(f), 0);
		/* Done: writes keep no more pre-images. */
		ASSERT(fz_fill(&a, &b, &rnd, 50, nkeys, &now));
		EXPECT_EQ_U64(kv_frozen_preimage_bytes(f), 0);
		EXPECT(!kv_frozen_next(f, tmp, step, &n) && n == 0);
		kv_frozen_destroy(f);
		EXPECT(kv_invariants(a.kv));
		EXPECT_EQ_U64(kv_digest(a.kv), kv_digest(b.kv));
		EXPECT(snapshots_equal(a.kv, b.kv));
		free(got);
		free(want);
		h_fini(&a);
		h_fini(&b);
		if (test_failed_now_) {
			fprintf(stderr, "  failed in round %zu (step %zu, %d keys)\n",
				round, step, nkeys);
			break;
		}
		if (max_pre > peak_pre)
			peak_pre = max_pre;
	}
	/* The applies really did keep pre-images (else this proves little). */
	EXPECT(peak_pre > 0);
	fprintf(stderr, "  peak pre-image bytes in a round: %zu\n", peak_pre);
	free(tmp);
}

/* Pre-images are freed as the cursor passes their keys (the counter falls
 * to 0 with no apply in between), and kv_frozen_destroy part-way frees the
 * rest (LeakSanitizer checks at exit). A kv can be frozen again after. */
TEST(kv_frozen_preimages_go_as_the_cursor_passes)
{
	static struct h a;
	h_init(&a, MODE_RAW);
	char line[128];
	for (int i = 0; i < 200; i++) {
		snprintf(line, sizeof(line), "SET k%04d %0100d", i, i);
		h_run(&a, 1000, line);
	}
	for (int pass = 0; pass < 2; pass++) {
		struct kv_frozen *f = kv_freeze(a.kv, &keel_alloc_libc);
		ASSERT(f != NULL);
		EXPECT_EQ_U64(kv_frozen_preimage_bytes(f), 0);
		/* Touch every key: overwrite, delete, TTL, and new keys. */
		for (int i = 0; i < 200; i++) {
			switch (i % 5) {
			case 0: snprintf(line, sizeof(line), "SET k%04d v", i); break;
			case 1: snprintf(line, sizeof(line), "DEL k%04d", i); break;
			case 2: snprintf(line, sizeof(line), "PEXPIRE k%04d 50000", i); break;
			case 3: snprintf(line, sizeof(line), "SET k%04d-new x", i); break;
			default: snprintf(line, sizeof(line), "APPEND k%04d tail", i); break;
			}
			h_run(&a, 1000, line);
		}
		/* Pass 1 deletes nothing (the keys are gone already). */
		size_t held = kv_frozen_preimage_bytes(f);
		EXPECT(held >= 160 * (sizeof(struct kv_entry) + 5));
		uint8_t buf[1000];
		size_t n, last = held;
		bool more = true, fell = false, mid_nonzero = false;
		int step = 0;
		while (more && step < 100000) {
			more = kv_frozen_next(f, buf, sizeof(buf), &n);
			size_t now_held = kv_frozen_preimage_bytes(f);
			EXPECT(now_held <= last);
			fell |= now_held < last;
			if (step == 10)
				mid_nonzero = now_held > 0 && now_held < held;
			last = now_held;
			step++;
			if (pass == 1 && step == 10)
				break; /* destroy part-way */
		}
		EXPECT(fell);
		EXPECT(mid_nonzero || pass == 1);
		if (pass == 0)
			EXPECT_EQ_U64(kv_frozen_preimage_bytes(f), 0);
		else
			EXPECT(kv_frozen_preimage_bytes(f) > 0);
		kv_frozen_destroy(f);
		/* Writes without a frozen version keep nothing. */
		h_run(&a, 1000, "SET k0001 again");
	}
	EXPECT(kv_invariants(a.kv));
	h_fini(&a);
}

/* Feeds buf to a new reader in random pieces, one of them ending at cut
 * (if 0 < cut < len: e.g. the total-length field, where the verdict is
 * judged but not yet certain); returns its verdict (and *out on success).
 * Checks the sticky-error contract on the way. */
static int rd_split(const uint8_t *buf, size_t len, struct keel_rand *rnd,
		    uint64_t max_bytes, uint64_t cut, struct kv **out)
{
	struct kv_snap_reader *r =
		kv_snap_reader_create(&keel_alloc_libc, max_bytes);
	if (!r)
		return KEEL_ERR_NOMEM;
	static const size_t maxes[] = {1, 3, 40, 200, 4096, SIZE_MAX};
	size_t most = maxes[keel_rand_below(rnd, KEEL_ARRAY_LEN(maxes))];
	size_t off = 0;
	int rc = 0;
	while (off < len) {
		size_t n = 1 + (size_t)keel_rand_below(
				       rnd, most < len - off ? most : len - off);
		if (off < cut && cut - off < n)
			n = (size_t)(cut - off);
		if (keel_rand_chance(rnd, 1, 10))
			kv_snap_reader_feed(r, buf + off, 0); /* empty feeds */
		rc = kv_snap_reader_feed(r, buf + off, n);
		off += n;
		if (rc)
			break;
	}
	if (rc) {
		/* Sticky: every later call says the same. */
		if (off < len && kv_snap_reader_feed(r, buf + off, len - off) != rc)
			rc = -1000;
		struct kv *dummy = NULL;
		if (kv_snap_reader_finish(r, &dummy) != rc || dummy)
			rc = -1001;
	} else {
		rc = kv_snap_reader_finish(r, out);
	}
	kv_snap_reader_destroy(r);
	return rc;
}

/* The reader's verdict on bytes equals kv_snapshot_decode's; on success both
 * kvs encode to the same bytes. */
static bool rd_agrees(const uint8_t *buf, size_t len, struct keel_rand *rnd)
{
	struct kv *d = NULL, *s = NULL;
	int want = kv_snapshot_decode(&keel_alloc_libc, buf, len, &d);
	uint64_t cut = len >= 24 && keel_rand_chance(rnd, 1, 2)
			       ? keel_get_u64(buf + 16)
			       : 0;
	int got = rd_split(buf, len, rnd, 0, cut, &s);
	bool ok = want == got;
	if (ok && want == 0) {
		ok = snapshots_equal(d, s) && kv_invariants(s);
		EXPECT_EQ_U64(kv_digest(d), kv_digest(s));
	}
	if (!ok)
		fprintf(stderr, "  decode says %d, reader says %d (len %zu)\n",
			want, got, len);
	kv_destroy(d);
	kv_destroy(s);
	return ok;
}

TEST(kv_snap_reader_decodes_any_split)
{
	uint64_t seed = test_seed(31);
	struct keel_rand rnd;
	keel_rand_seed(&rnd, seed);
	static struct h a, b;
	for (int round = 0; round < 40; round++) {
		h_init(&a, MODE_RAW);
		h_init(&b, MODE_RAW);
		uint64_t now = 1000;
		ASSERT(fz_fill(&a, &b, &rnd, (int)keel_rand_below(&rnd, 1500),
			       1 + (int)keel_rand_below(&rnd, 400), &now));
		uint8_t *snap;
		size_t len;
		ASSERT(kv_snapshot_encode(a.kv, &keel_alloc_libc, &snap, &len) == 0);
		for (int split = 0; split < 4; split++) {
			struct kv *out = NULL;
			ASSERT(rd_split(snap, len, &rnd, len, 0, &out) == 0);
			uint8_t *again;
			size_t alen;
			ASSERT(kv_snapshot_encode(out, &keel_alloc_libc, &again,
						  &alen) == 0);
			EXPECT(alen == len && memcmp(again, snap, len) == 0);
			EXPECT(kv_invariants(out));
			free(again);
			kv_destroy(out);
		}
		/* The reader's own cap. */
		struct kv *out = NULL;
		EXPECT(rd_split(snap, len, &rnd, len - 1, 0, &out) ==
		       KEEL_ERR_TOO_BIG);
		free(snap);
		h_fini(&a);
		h_fini(&b);
	}
}

TEST(kv_snap_reader_gives_the_decoders_verdict)
{
	uint64_t seed = test_seed(13);
	struct keel_rand rnd;
	keel_rand_seed(&rnd, seed);
	static struct h a;
	h_init(&a, MODE_RAW);
	fill_random(&a, &rnd, 300);
	uint8_t *snap;
	size_t len;
	ASSERT(kv_snapshot_encode(a.kv, &keel_alloc_libc, &snap, &len) == 0);
	ASSERT(len > KV_SNAP_HEADER_BYTES + 4);
	uint8_t *buf = malloc(len + 64);
	ASSERT(buf != NULL);
	int bad = 0;
	/* Every single-byte change, as is (the CRC catches it) and re-sealed
	 * (new CRC: the field checks must agree too). */
	for (size_t i = 0; i < len && bad < 5; i++) {
		for (int t = 0; t < 3; t++) {
			memcpy(buf, snap, len);
			buf[i] ^= t == 0 ? 0x01
					 : (uint8_t)(1 + keel_rand_below(&rnd, 255));
			if (t == 2)
				keel_put_u32(buf + len - 4,
					     keel_crc32c(0, buf, len - 4));
			bad += !rd_agrees(buf, len, &rnd);
		}
	}
	/* Every truncation. */
	for (size_t cut = 0; cut < len && bad < 10; cut++)
		bad += !rd_agrees(snap, cut, &rnd);
	/* Oversized: bytes past the total, as is (also with a bad CRC: the
	 * length verdict comes first) and with the total and the CRC re-sealed
	 * over the extra bytes (then they are left-over bytes after the last
	 * record). */
	for (size_t extra = 1; extra < 64 && bad < 15; extra++) {
		memcpy(buf, snap, len);
		for (size_t k = 0; k < extra; k++)
			buf[len + k] = (uint8_t)keel_rand_below(&rnd, 256);
		bad += !rd_agrees(buf, len + extra, &rnd);
		buf[len - 1] ^= 0x40;
		bad += !rd_agrees(buf, len + extra, &rnd);
		buf[len - 1] ^= 0x40;
		keel_put_u64(buf + 16, len + extra);
		memmove(buf + len + extra - 4, buf + len - 4, 4);
		keel_put_u32(buf + len + extra - 4,
			     keel_crc32c(0, buf, len + extra - 4));
		bad += !rd_agrees(buf, len + extra, &rnd);
	}
	/* Re-sealed field edits of the header. */
	static const size_t fields[] = {12, 32, 40, 48};
	for (size_t fi = 0; fi < KEEL_ARRAY_LEN(fields); fi++) {
		for (int t = 0; t < 8; t++) {
			memcpy(buf, snap, len);
			keel_put_u64(buf + fields[fi], keel_rand_next(&rnd) >>
							       (keel_rand_below(&rnd, 64)));
			keel_put_u64(buf + 16, len); /* the flags edit spills here */
			keel_put_u32(buf + len - 4, keel_crc32c(0, buf, len - 4));
			bad += !rd_agrees(buf, len, &rnd);
		}
	}
	EXPECT(bad == 0);
	free(buf);
	free(snap);
	h_fini(&a);
}

/* Certain errors come at once, not at finish. */
TEST(kv_snap_reader_reports_certain_errors_early)
{
	struct h a;
	h_init(&a, MODE_RAW);
	h_run(&a, 1000, "SET a 1");
	uint8_t *snap;
	size_t len;
	ASSERT(kv_snapshot_encode(a.kv, &keel_alloc_libc, &snap, &len) == 0);
	uint8_t *buf = malloc(len + 1);
	ASSERT(buf != NULL);
	struct { size_t at; uint8_t val; size_t first_bad; int rc; } cases[] = {
		{0, 'X', 8, KEEL_ERR_MAGIC},
		{8, KV_SNAP_VERSION + 1, KV_SNAP_HEADER_BYTES + 4,
		 KEEL_ERR_VERSION},
	};
	for (size_t c = 0; c < KEEL_ARRAY_LEN(cases); c++) {
		memcpy(buf, snap, len);
		buf[cases[c].at] = cases[c].val;
		struct kv_snap_reader *r =
			kv_snap_reader_create(&keel_alloc_libc, 0);
		ASSERT(r != NULL);
		for (size_t i = 0; i < len; i++) {
			int rc = kv_snap_reader_feed(r, buf + i, 1);
			if (i + 1 < cases[c].first_bad)
				EXPECT(rc == 0);
			else
				EXPECT(rc == cases[c].rc);
		}
		kv_snap_reader_destroy(r);
	}
	/* One byte more than the total: refused by that very feed -- even
	 * with a bad CRC, which is not the verdict until finish (the found-by-
	 * fuzzing case: the decoder checks the length before the CRC). */
	for (int bad_crc = 0; bad_crc < 2; bad_crc++) {
		memcpy(buf, snap, len);
		buf[len] = 0;
		buf[len - 1] ^= (uint8_t)bad_crc;
		struct kv_snap_reader *r =
			kv_snap_reader_create(&keel_alloc_libc, 0);
		ASSERT(r != NULL);
		EXPECT(kv_snap_reader_feed(r, buf, len) == 0);
		EXPECT(kv_snap_reader_feed(r, buf + len, 1) == KEEL_ERR_MALFORMED);
		struct kv *out = NULL;
		EXPECT(kv_snap_reader_finish(r, &out) == KEEL_ERR_MALFORMED);
		EXPECT(out == NULL);
		kv_snap_reader_destroy(r);
		r = kv_snap_reader_create(&keel_alloc_libc, 0);
		ASSERT(r != NULL);
		EXPECT(kv_snap_reader_feed(r, buf, len) == 0);
		EXPECT(kv_snap_reader_finish(r, &out) ==
		       (bad_crc ? KEEL_ERR_CORRUPT : 0));
		kv_destroy(out);
		kv_snap_reader_destroy(r);
	}
	memcpy(buf, snap, len);
	struct kv *out = NULL;
	struct kv_snap_reader *r;
	/* Finish hands the kv over once. */
	r = kv_snap_reader_create(&keel_alloc_libc, 0);
	ASSERT(r != NULL);
	EXPECT(kv_snap_reader_feed(r, buf, len) == 0);
	EXPECT(kv_snap_reader_finish(r, &out) == 0 && out != NULL);
	EXPECT_EQ_U64(kv_digest(out), kv_digest(a.kv));
	EXPECT(kv_snap_reader_finish(r, &out) == KEEL_ERR_INVAL);
	EXPECT(kv_snap_reader_feed(r, buf, 1) == KEEL_ERR_INVAL);
	kv_snap_reader_destroy(r);
	kv_destroy(out);
	/* An unfinished reader frees its partial kv (LeakSanitizer). */
	r = kv_snap_reader_create(&keel_alloc_libc, 0);
	ASSERT(r != NULL);
	EXPECT(kv_snap_reader_feed(r, buf, len - 1) == 0);
	EXPECT(kv_snap_reader_finish(r, &out) == KEEL_ERR_TRUNCATED);
	kv_snap_reader_destroy(r);
	free(buf);
	free(snap);
	h_fini(&a);
}

/* ---- the entry codec and the rewrite ---------------------------------------------- */

struct rw_case {
	const char *in, *out;
};

TEST(kv_rewrite_relative_table)
{
	static const struct rw_case cases[] = {
		{"SET k v EX 10", "SET k v PXAT 11000"},
		{"SET k v PX 10", "SET k v PXAT 1010"},
		{"set k v nx ex 10 get", "set k v nx get PXAT 11000"},
		{"SET k v EX 1 EX 2", "SET k v PXAT 3000"},
		{"SET k v EX 1 PX 2", "SET k v EX 1 PX 2"},
		{"SET k v EX abc", "SET k v EX abc"},
		{"SET k v EX 0", "SET k v EX 0"},
		{"SET k v EXAT 10", "SET k v EXAT 10"},
		{"SET k EX EX 5", "SET k EX PXAT 6000"},
		{"SETEX k 10 v", "SET k v PXAT 11000"},
		{"PSETEX k 10 v", "SET k v PXAT 1010"},
		{"SETEX k 0 v", "SETEX k 0 v"},
		{"SETEX k 10", "SETEX k 10"},
		{"GETEX k EX 5", "GETEX k PXAT 6000"},
		{"GETEX k PERSIST", "GETEX k PERSIST"},
		{"EXPIRE k 10 NX", "PEXPIREAT k 11000 NX"},
		{"PEXPIRE k -5", "PEXPIREAT k 995"},
		{"EXPIRE k " I64MAX, "EXPIRE k " I64MAX},
		{"GET k", "GET k"},
	};
	for (size_t i = 0; i < KEEL_ARRAY_LEN(cases); i++) {
		const uint8_t *argv[MAX_ARGS];
		size_t lens[MAX_ARGS];
		char store[512];
		int argc = tokenize(cases[i].in, argv, lens, store);
		uint8_t *buf;
		size_t len;
		ASSERT(kv_rewrite_relative(&keel_alloc_libc, 1000, argc, argv,
					   lens, &buf, &len) == 0);
		const uint8_t *dargv[MAX_ARGS];
		size_t dlens[MAX_ARGS];
		uint64_t now;
		uint32_t dargc;
		ASSERT(kv_cmd_decode(buf, len, &now, &dargc, dargv, dlens,
				     MAX_ARGS) == 0);
		EXPECT_EQ_U64(now, 1000);
		char got[512];
		size_t o = 0;
		for (uint32_t k = 0; k < dargc; k++) {
			if (k)
				got[o++] = ' ';
			memcpy(got + o, dargv[k], dlens[k]);
			o += dlens[k];
		}
		got[o] = '\0';
		if (strcmp(got, cases[i].out) != 0) {
			fprintf(stderr, "  rewrite %s: got %s\n", cases[i].in,
				got);
			test_failed_now_ = 1;
		}
		free(buf);
	}
}

TEST(kv_cmd_codec_rejects)
{
	const uint8_t *argv[2] = {(const uint8_t *)"GET", (const uint8_t *)"k"};
	size_t lens[2] = {3, 1};
	uint8_t buf[64];
	size_t len;
	ASSERT(kv_cmd_encode(77, 2, argv, lens, buf, sizeof(buf), &len) == 0);
	EXPECT_EQ_U64(len, KV_CMD_HEADER_BYTES + 4 + 3 + 4 + 1);
	EXPECT(buf[0] == KV_CMD_VERSION);
	EXPECT_EQ_U64(keel_get_u64(buf + 1), 77);
	EXPECT_EQ_U64(keel_get_u32(buf + 9), 2);
	EXPECT(kv_cmd_encode(77, 2, argv, lens, buf, len - 1, &len) ==
	       KEEL_ERR_TOO_BIG);
	EXPECT(kv_cmd_encode(77, 0, argv, lens, buf, sizeof(buf), &len) ==
	       KEEL_ERR_INVAL);
	ASSERT(kv_cmd_encode(77, 2, argv, lens, buf, sizeof(buf), &len) == 0);
	const uint8_t *dargv[2];
	size_t dlens[2];
	uint64_t now;
	uint32_t argc;
	for (size_t cut = 0; cut < len; cut++)
		EXPECT(kv_cmd_decode(buf, cut, &now, &argc, dargv, dlens, 2) != 0);
	EXPECT(kv_cmd_decode(buf, len, &now, &argc, dargv, dlens, 1) ==
	       KEEL_ERR_NOSPACE);
	EXPECT_EQ_U64(argc, 2);
	uint8_t big[80];
	memcpy(big, buf, len);
	big[len] = 0;
	EXPECT(kv_cmd_decode(big, len + 1, &now, &argc, dargv, dlens, 2) ==
	       KEEL_ERR_MALFORMED);
	memcpy(big, buf, len);
	big[0] = 9;
	EXPECT(kv_cmd_decode(big, len, &now, &argc, dargv, dlens, 2) ==
	       KEEL_ERR_VERSION);
	memcpy(big, buf, len);
	keel_put_u32(big + 9, 0);
	EXPECT(kv_cmd_decode(big, len, &now, &argc, dargv, dlens, 2) ==
	       KEEL_ERR_MALFORMED);
	memcpy(big, buf, len);
	keel_put_u32(big + 13, 0xffffffffu);
	EXPECT(kv_cmd_decode(big, len, &now, &argc, dargv, dlens, 2) ==
	       KEEL_ERR_TOO_BIG);
	/* kv_apply answers garbage with an error reply, never a crash. */
	struct h h;
	h_init(&h, MODE_RAW);
	rec_reset(&h.rec);
	EXPECT(kv_apply(h.kv, 1, big, len, &rec_ops, &h.rec) == 0);
	EXPECT(strcmp(h.rec.text, "-ERR keel: malformed command entry") == 0);
	rec_reset(&h.rec);
	EXPECT(kv_apply(h.kv, 2, big, 0, &rec_ops, &h.rec) == 0);
	EXPECT(strcmp(h.rec.text, "-ERR keel: malformed command entry") == 0);
	struct kv_stats st;
	kv_stats(h.kv, &st);
	EXPECT_EQ_U64(st.applied_index, 2);
	EXPECT_EQ_U64(st.revision, 0);
	/* A write command on the read path is refused. */
	rec_reset(&h.rec);
	const uint8_t *wargv[3] = {(const uint8_t *)"SET", (const uint8_t *)"k",
				   (const uint8_t *)"v"};
	size_t wlens[3] = {3, 1, 1};
	kv_read(h.kv, 3, wargv, wlens, 0, &rec_ops, &h.rec);
	EXPECT(strcmp(h.rec.text, "-ERR keel: write command on the read path") == 0);
	h_fini(&h);
}

TEST(kv_many_args_apply)
{
	/* More arguments than kv_apply's on-stack arrays hold. */
	struct h h;
	h_init(&h, MODE_RAW);
	enum { N = 201 };
	const uint8_t *argv[N];
	size_t lens[N];
	char store[N][16];
	argv[0] = (const uint8_t *)"MSET";
	lens[0] = 4;
	for (int i = 1; i < N; i++) {
		snprintf(store[i], 16, "%c%d", i % 2 ? 'k' : 'v', i / 2);
		argv[i] = (const uint8_t *)store[i];
		lens[i] = strlen(store[i]);
	}
	ASSERT(h_apply_argv(&h, 1000, N, argv, lens) == 0);
	EXPECT(strcmp(h.rec.text, "+OK") == 0);
	EXPECT_EQ_U64(kv_dbsize(h.kv, 1000), 100);
	h_fini(&h);
}

/* ---- allocation failure ------------------------------------------------------------ */

struct fail_alloc {
	long countdown; /* fail when it reaches 0; < 0 never */
	long live;
};

static void *fa_malloc(void *ctx, size_t n)
{
	struct fail_alloc *f = ctx;
	if (f->countdown == 0)
		return NULL;
	if (f->countdown > 0)
		f->countdown--;
	void *p = malloc(n ? n : 1);
	if (p)
		f->live++;
	return p;
}

static void *fa_realloc(void *ctx, void *p, size_t n)
{
	struct fail_alloc *f = ctx;
	if (f->countdown == 0)
		return NULL;
	if (f->countdown > 0)
		f->countdown--;
	void *q = realloc(p, n ? n : 1);
	if (q && !p)
		f->live++;
	return q;
}

static void fa_free(void *ctx, void *p)
{
	struct fail_alloc *f = ctx;
	if (p)
		f->live--;
	free(p);
}

TEST(kv_nomem_leaves_single_key_state_unchanged)
{
	static const char *const cmds[] = {
		"SET a hello", "SET b x EX 100", "APPEND a world", "APPEND n z",
		"INCR c", "SETNX d 1", "GETSET a v", "MSET e 1",
	};
	struct fail_alloc fa = {-1, 0};
	const struct keel_alloc alloc = {&fa, fa_malloc, fa_realloc, fa_free};
	for (size_t ci = 0; ci < KEEL_ARRAY_LEN(cmds); ci++) {
		for (long fail_at = 0; fail_at < 6; fail_at++) {
			fa.countdown = -1;
			struct kv *kv = kv_create(&alloc);
			ASSERT(kv != NULL);
			struct h h;
			memset(&h, 0, sizeof(h));
			h.kv = kv;
			h_run(&h, 1000, "SET a 1");
			uint64_t before = kv_digest(kv);
			const uint8_t *argv[MAX_ARGS];
			size_t lens[MAX_ARGS];
			char store[256];
			int argc = tokenize(cmds[ci], argv, lens, store);
			uint8_t buf[256];
			size_t len;
			ASSERT(kv_cmd_encode(1000, argc, argv, lens, buf,
					     sizeof(buf), &len) == 0);
			fa.countdown = fail_at;
			rec_reset(&h.rec);
			int rc = kv_apply(kv, 2, buf, len, &rec_ops, &h.rec);
			fa.countdown = -1;
			if (rc == KEEL_ERR_NOMEM) {
				EXPECT_EQ_U64(kv_digest(kv), before);
				EXPECT(kv_invariants(kv));
				/* A retry of the same entry succeeds. */
				EXPECT(kv_apply(kv, 2, buf, len, &rec_ops,
						&h.rec) == 0);
			} else {
				EXPECT(rc == 0);
			}
			EXPECT(kv_invariants(kv));
			kv_destroy(kv);
			EXPECT(fa.live == 0);
		}
	}
}

/* With a frozen version live, a failed pre-image allocation is still
 * "nothing changed": the state, the retry, and the frozen bytes (equal to
 * the encode at the freeze) all come out as without the failure. */
TEST(kv_nomem_with_a_frozen_version)
{
	static const char *const cmds[] = {
		"SET a hello", "SET b x EX 100", "APPEND a world", "APPEND n z",
		"INCR c", "SETNX d 1", "GETSET a v", "SET a-much-longer-key v",
		"EXPIRE b 500", "PERSIST b", "GETEX b PX 900", "DEL a",
		"FLUSHALL",
	};
	struct fail_alloc fa = {-1, 0};
	const struct keel_alloc alloc = {&fa, fa_malloc, fa_realloc, fa_free};
	for (size_t ci = 0; ci < KEEL_ARRAY_LEN(cmds); ci++) {
		for (long fail_at = 0; fail_at < 6; fail_at++) {
			fa.countdown = -1;
			struct kv *kv = kv_create(&alloc);
			ASSERT(kv != NULL);
			static struct h h;
			memset(&h, 0, sizeof(h));
			h.kv = kv;
			h_run(&h, 1000, "SET a 1");
			h_run(&h, 1000, "SET b 2 EX 100");
			h_run(&h, 1000, "SET c 3");
			uint64_t before = kv_digest(kv);
			uint8_t *want;
			size_t wlen;
			ASSERT(kv_snapshot_encode(kv, &keel_alloc_libc, &want, &wlen) == 0);
			struct kv_frozen *f = kv_freeze(kv, &keel_alloc_libc);
			ASSERT(f != NULL);
			/* Part-way: the cursor sits after "a". */
			uint8_t out[4096];
			size_t n, off = 0;
			kv_frozen_next(f, out, KV_SNAP_HEADER_BYTES +
					       KV_SNAP_RECORD_BYTES + 2, &n);
			off = n;
			const uint8_t *argv[MAX_ARGS];
			size_t lens[MAX_ARGS];
			char store[256];
			int argc = tokenize(cmds[ci], argv, lens, store);
			uint8_t buf[256];
			size_t len;
			ASSERT(kv_cmd_encode(1000, argc, argv, lens, buf,
					     sizeof(buf), &len) == 0);
			fa.countdown = fail_at;
			rec_reset(&h.rec);
			int rc = kv_apply(kv, 4, buf, len, &rec_ops, &h.rec);
			fa.countdown = -1;
			if (rc == KEEL_ERR_NOMEM) {
				EXPECT_EQ_U64(kv_digest(kv), before);
				EXPECT(kv_invariants(kv));
				EXPECT(kv_apply(kv, 4, buf, len, &rec_ops,
						&h.rec) == 0);
			} else {
				EXPECT(rc == 0);
			}
			bool more = true;
			while (more && off < sizeof(out)) {
				more = kv_frozen_next(f, out + off, 7, &n);
				off += n;
			}
			EXPECT(off == wlen && memcmp(out, want, wlen) == 0);
			EXPECT_EQ_U64(kv_frozen_preimage_bytes(f), 0);
			kv_frozen_destroy(f);
			EXPECT(kv_invariants(kv));
			kv_destroy(kv);
			free(want);
			EXPECT(fa.live == 0);
		}
	}
}

/* ---- transactions (txn.c) ---------------------------------------------------- */

/* KEEL.EXEC: Redis's EXEC semantics (runtime errors do not roll back the
 * others; a changed watched key gives nil and runs nothing) and the WATCH
 * conditions: modified, deleted and re-created, expired, created and
 * deleted in between; a stale key expired before WATCH may be deleted. */
TEST(kv_txn_exec_semantics)
{
	static const struct row rows[] = {
		{1000, "SET a 1", "+OK"},
		{1000, "KEEL.EXEC 0 3 3 SET b x 2 INCR b 2 GET a",
		 "*3 +OK -ERR value is not an integer or out of range $1"},
		{1000, "GET b", "$x"},
		{1000, "KEEL.GETREV b", "*4 $x :2 :2 :1"},
		{1000, "KEEL.EXEC 1 a 1 2 1 3 SET a 2", "*1 +OK"},
		{1000, "KEEL.EXEC 1 a 1 3 1 3 SET a 3", "(nil)"},
		{1000, "GET a", "$2"},
		{1000, "KEEL.EXEC 1 zz 0 3 1 3 SET a 4", "*1 +OK"},
		{1000, "SET zz 1", "+OK"},
		{1000, "DEL zz", ":1"},
		/* Absent at WATCH (rev 4), absent now, created in between. */
		{1000, "KEEL.EXEC 1 zz 0 4 1 3 SET a 5", "(nil)"},
		{1000, "KEEL.EXEC 1 zz 0 6 1 2 GET a", "*1 $4"},
		{1000, "KEEL.EXEC 0 1 1 FLUSHALL",
		 "-ERR 'flushall' is not allowed in a transaction"},
		{1000, "KEEL.EXEC 0 1 3 KEEL.TXN THEN 0",
		 "-ERR 'keel.txn' is not allowed in a transaction"},
		{1000, "KEEL.EXEC 0 1 3 KEEL.EXPIRE-DELETE a 1",
		 "-ERR 'keel.expire-delete' is not allowed in a transaction"},
		{1000, "KEEL.EXEC 0 1 2 NOPE x",
		 "-ERR unknown command 'NOPE' in a transaction"},
		{1000, "KEEL.EXEC 0 1 1 GET",
		 "-ERR wrong number of arguments for 'get' command in a transaction"},
		{1000, "KEEL.EXEC 0 2 1 GET", "-ERR KEEL.EXEC: malformed command list"},
		{1000, "KEEL.EXEC 1 a x 1 0", "-ERR KEEL.EXEC: bad watch condition"},
		{1000, "KEEL.EXEC 0 0", "*0"},
		{1000, "SET t v PXAT 2000", "+OK"},
		{1000, "KEEL.GETREV t", "*4 $v :7 :7 :1"},
		/* Expired between WATCH and EXEC. */
		{2500, "KEEL.EXEC 1 t 7 7 1 2 GET a", "(nil)"},
		/* Already expired at WATCH (read as absent at rev 7): its
		 * deletion is not a change (Redis 7: stale keys). */
		{2500, "KEEL.WATCH-REVS a t zz", "*4 :7 :4 :0 :0"},
		{2500, "KEEL.EXPIRE-DELETE t 7", ":1"},
		{2500, "KEEL.EXEC 1 t 0 7 1 2 GET a", "*1 $4"},
		{2500, "KEEL.WATCH-REVS a t zz", "*4 :8 :4 :0 :0"},
		/* A relative TTL inside a transaction, rewritten or not. */
		{3000, "KEEL.EXEC 0 2 5 SET k v EX 10 4 SETEX k2 5 w",
		 "*2 +OK +OK"},
		{3000, "PTTL k", ":10000"},
		{3000, "PTTL k2", ":5000"},
	};
	RUN(rows);
}

/* KEEL.TXN: compares, branches, errors before anything runs. */
TEST(kv_txn_conditional)
{
	static const struct row rows[] = {
		{1000, "SET acct:a 100", "+OK"},
		{1000, "SET acct:b 50", "+OK"},
		{1000, "KEEL.TXN IF 2 acct:a VALUE = 100 acct:b MOD = 2 THEN 2 "
		       "3 SET acct:a 70 3 SET acct:b 80 ELSE 1 2 GET acct:a",
		 "*2 :1 *2 +OK +OK"},
		{1000, "KEEL.TXN IF 2 acct:a VALUE = 100 acct:b MOD = 2 THEN 2 "
		       "3 SET acct:a 70 3 SET acct:b 80 ELSE 1 2 GET acct:a",
		 "*2 :0 *1 $70"},
		/* One revision for everything the entry wrote. */
		{1000, "KEEL.GETREV acct:a", "*4 $70 :1 :3 :2"},
		{1000, "KEEL.GETREV acct:b", "*4 $80 :2 :3 :2"},
		{1000, "KEEL.TXN IF 1 nokey EXISTS = 0 THEN 1 3 SET nokey 1",
		 "*2 :1 *1 +OK"},
		{1000, "KEEL.TXN IF 1 nokey CREATE = 4 THEN 0", "*2 :1 *0"},
		{1000, "KEEL.TXN IF 1 nokey VERSION > 0 THEN 0 ELSE 0", "*2 :1 *0"},
		{1000, "KEEL.TXN IF 1 absent VALUE != x THEN 0 ELSE 0", "*2 :0 *0"},
		{1000, "KEEL.TXN IF 1 absent MOD < 1 THEN 0 ELSE 0", "*2 :1 *0"},
		{1000, "KEEL.TXN IF 1 acct:a VALUE < 8 THEN 0 ELSE 0", "*2 :1 *0"},
		{1000, "KEEL.TXN IF 1 acct:a VERSION != 2 THEN 0 ELSE 0", "*2 :0 *0"},
		{1000, "KEEL.TXN THEN 1 2 INCR acct:a", "*2 :1 *1 :71"},
		{1000, "keel.txn if 1 acct:a mod > 4 then 1 2 get acct:a",
		 "*2 :1 *1 $71"},
		{1000, "KEEL.TXN IF 1 a BAD = 1 THEN 0",
		 "-ERR KEEL.TXN: compare field must be MOD, CREATE, VERSION, "
		 "VALUE or EXISTS"},
		{1000, "KEEL.TXN IF 1 a MOD >= 1 THEN 0",
		 "-ERR KEEL.TXN: compare operator must be =, !=, < or >"},
		{1000, "KEEL.TXN IF 1 a MOD = x THEN 0",
		 "-ERR KEEL.TXN: compare value of MOD, CREATE, VERSION or "
		 "EXISTS must be a non-negative integer"},
		{1000, "KEEL.TXN IF 1 a EXISTS = 2 THEN 0",
		 "-ERR KEEL.TXN: EXISTS compares with 0 or 1"},
		{1000, "KEEL.TXN IF 2 a MOD = 1 THEN 0",
		 "-ERR KEEL.TXN: IF needs a compare count and that many <key> "
		 "<field> <op> <value> compares"},
		{1000, "KEEL.TXN THEN 1 2 SET a",
		 "-ERR wrong number of arguments for 'set' command in a "
		 "transaction"},
		{1000, "KEEL.TXN THEN 1 5 SET a",
		 "-ERR KEEL.TXN: malformed THEN list (each command is <argc> "
		 "<arg>...)"},
		/* The branch not taken is checked too. */
		{1000, "KEEL.TXN IF 1 x MOD = 0 THEN 0 ELSE 1 1 FLUSHDB",
		 "-ERR 'flushdb' is not allowed in a transaction"},
		{1000, "KEEL.TXN ELSE 0",
		 "-ERR KEEL.TXN: expected THEN <count> after the compares"},
		{1000, "KEEL.TXN THEN 0 junk",
		 "-ERR KEEL.TXN: expected ELSE <count> or the end after THEN"},
		{1000, "KEEL.TXN THEN 0 ELSE 0 x",
		 "-ERR KEEL.TXN: malformed ELSE list (each command is <argc> "
		 "<arg>...)"},
		{1000, "KEEL.GETREV nope", "(nil)"},
		{1000, "KEEL.GETREV", "-ERR wrong number of arguments for "
				      "'keel.getrev' command"},
	};
	RUN(rows);
}

static void meta_of(struct h *h, const char *key, struct kv_meta *m)
{
	ASSERT(kv_get(h->kv, (const uint8_t *)key, strlen(key), 1000, NULL,
		      NULL, m));
}

/* Every key written by one transaction gets its revision; the global
 * revision moves by exactly one; a read-only or failed one moves nothing. */
TEST(kv_txn_one_revision)
{
	struct h h;
	h_init(&h, MODE_RAW);
	h_run(&h, 1000, "SET x 1");
	struct kv_stats st;
	kv_stats(h.kv, &st);
	uint64_t rev = st.revision;
	h_run(&h, 1000, "KEEL.EXEC 0 5 3 SET a 1 5 MSET b 2 c 3 2 INCR x "
			"3 APPEND a z 2 GET a");
	EXPECT(strcmp(h.rec.text, "*5 +OK +OK :2 :2 $1z") == 0);
	kv_stats(h.kv, &st);
	EXPECT_EQ_U64(st.revision, rev + 1);
	const char *keys[] = {"a", "b", "c", "x"};
	for (size_t i = 0; i < KEEL_ARRAY_LEN(keys); i++) {
		struct kv_meta m;
		meta_of(&h, keys[i], &m);
		EXPECT_EQ_U64(m.mod_revision, rev + 1);
	}
	struct kv_meta ma;
	meta_of(&h, "a", &ma);
	EXPECT_EQ_U64(ma.version, 1); /* SET then APPEND: one entry */
	h_run(&h, 1000, "KEEL.EXEC 0 2 2 GET a 3 MGET b c");
	EXPECT(strcmp(h.rec.text, "*2 $1z *2 $2 $3") == 0);
	h_run(&h, 1000, "KEEL.EXEC 1 a 1 1 1 3 SET a q");
	EXPECT(strcmp(h.rec.text, "(nil)") == 0);
	h_run(&h, 1000, "KEEL.TXN IF 1 a EXISTS = 0 THEN 1 3 SET a q");
	EXPECT(strcmp(h.rec.text, "*2 :0 *0") == 0);
	kv_stats(h.kv, &st);
	EXPECT_EQ_U64(st.revision, rev + 1);
	EXPECT(kv_invariants(h.kv));
	h_fini(&h);
}

static int decode_args(const uint8_t *buf, size_t len, char out[][24],
		       int max)
{
	const uint8_t *argv[64];
	size_t lens[64];
	uint64_t now;
	uint32_t argc;
	if (kv_cmd_decode(buf, len, &now, &argc, argv, lens, 64) ||
	    (int)argc > max)
		return -1;
	for (uint32_t i = 0; i < argc; i++) {
		size_t n = lens[i] < 23 ? lens[i] : 23;
		memcpy(out[i], argv[i], n);
		out[i][n] = 0;
	}
	return (int)argc;
}

static void expect_rewrite(uint64_t now, const char *in, const char *want)
{
	const uint8_t *argv[MAX_ARGS];
	size_t lens[MAX_ARGS];
	char store[1024];
	int argc = tokenize(in, argv, lens, store);
	uint8_t *buf;
	size_t len;
	ASSERT(kv_rewrite_relative(&keel_alloc_libc, now, argc, argv, lens,
				   &buf, &len) == 0);
	char args[64][24];
	int n = decode_args(buf, len, args, 64);
	free(buf);
	char got[1024] = "";
	for (int i = 0; i < n; i++) {
		if (i)
			strcat(got, " ");
		strcat(got, args[i]);
	}
	if (strcmp(got, want) != 0) {
		fprintf(stderr, "  rewrite %s\n    want: %s\n    got:  %s\n", in,
			want, got);
		test_failed_now_ = 1;
	}
}

/* The leader rewrites relative TTLs inside transactions too, each
 * sub-command as if proposed alone, with its count fixed. */
TEST(kv_txn_rewrite_relative)
{
	expect_rewrite(1000, "KEEL.EXEC 1 w 3 4 2 5 SET k v EX 10 4 SETEX k2 5 v",
		       "KEEL.EXEC 1 w 3 4 2 5 SET k v PXAT 11000 5 SET k2 v "
		       "PXAT 6000");
	expect_rewrite(1000, "KEEL.TXN IF 1 k EXISTS = 1 THEN 2 3 EXPIRE k 5 "
			     "2 GET k ELSE 1 4 PSETEX k 100 v",
		       "KEEL.TXN IF 1 k EXISTS = 1 THEN 2 3 PEXPIREAT k 6000 "
		       "2 GET k ELSE 1 5 SET k v PXAT 1100");
	expect_rewrite(1000, "KEEL.TXN THEN 1 7 SET k v EX 1 PX 5",
		       "KEEL.TXN THEN 1 7 SET k v EX 1 PX 5"); /* invalid: kept */
	expect_rewrite(1000, "KEEL.TXN THEN 1 7 SET k v PX 1 PX 5",
		       "KEEL.TXN THEN 1 5 SET k v PXAT 1005");
	expect_rewrite(1000, "KEEL.TXN THEN 1 9 SET k", "KEEL.TXN THEN 1 9 SET k");
	expect_rewrite(1000, "KEEL.EXEC 0 1 4 GETEX k EX 2",
		       "KEEL.EXEC 0 1 4 GETEX k PXAT 3000");
}

/* Creation marks are replicated state: a snapshot carries them, so a
 * replica restored from it judges WATCH of an absent key alike. */
TEST(kv_txn_marks_survive_snapshots)
{
	struct h h;
	h_init(&h, MODE_RAW);
	h_run(&h, 1000, "SET gone 1");
	h_run(&h, 1000, "DEL gone");
	h_run(&h, 1000, "SET other 1");
	uint8_t *snap;
	size_t len;
	ASSERT(kv_snapshot_encode(h.kv, &keel_alloc_libc, &snap, &len) == 0);
	struct kv *back = NULL;
	ASSERT(kv_snapshot_decode(&keel_alloc_libc, snap, len, &back) == 0);
	EXPECT_EQ_U64(kv_digest(back), kv_digest(h.kv));
	struct h h2;
	memset(&h2, 0, sizeof(h2));
	h2.kv = back;
	h2.index = h.index;
	/* Watched absent at revision 0: "gone" was created since. */
	h_run(&h2, 1000, "KEEL.EXEC 1 gone 0 0 1 2 GET other");
	EXPECT(strcmp(h2.rec.text, "(nil)") == 0);
	h_run(&h2, 1000, "KEEL.EXEC 1 gone 0 3 1 2 GET other");
	EXPECT(strcmp(h2.rec.text, "*1 $1") == 0);
	/* A mark above the revision is malformed (re-sealed). */
	keel_put_u64(snap + 56, 99);
	keel_put_u32(snap + len - 4, keel_crc32c(0, snap, len - 4));
	struct kv *bad = NULL;
	EXPECT(kv_snapshot_decode(&keel_alloc_libc, snap, len, &bad) ==
	       KEEL_ERR_MALFORMED);
	struct kv_snap_reader *r = kv_snap_reader_create(&keel_alloc_libc, 0);
	EXPECT(kv_snap_reader_feed(r, snap, len) == 0);
	EXPECT(kv_snap_reader_finish(r, &bad) == KEEL_ERR_MALFORMED);
	kv_snap_reader_destroy(r);
	free(snap);
	h_fini(&h2);
	h_fini(&h);
}

/* All or nothing when memory runs out midway: for every allocation a
 * transaction makes, failing it leaves the state and the digest as
 * before, the retry succeeds, nothing leaks; with a frozen version live
 * too, whose bytes stay the state at the freeze. */
TEST(kv_txn_nomem_midway_changes_nothing)
{
	static const char *const txns[] = {
		"KEEL.EXEC 1 a 1 9 7 3 SET a x 3 APPEND c zzz 2 DEL d "
		"3 SET new 1 2 INCR b 3 EXPIRE a 50 5 MSET c 1 e 2",
		"KEEL.TXN IF 1 a MOD = 1 THEN 6 4 SETEX z 5 v 3 APPEND new yy "
		"2 GETDEL c 4 SET a 9 KEEPTTL 2 INCR n 3 APPEND n 0",
	};
	struct fail_alloc fa = {-1, 0};
	const struct keel_alloc alloc = {&fa, fa_malloc, fa_realloc, fa_free};
	for (int frozen = 0; frozen < 2; frozen++) {
		for (size_t ti = 0; ti < KEEL_ARRAY_LEN(txns); ti++) {
			int undone = 0, ok = 0;
			for (long fail_at = 0; fail_at < 40; fail_at++) {
				fa.countdown = -1;
				struct kv *kv = kv_create(&alloc);
				ASSERT(kv != NULL);
				static struct h h;
				memset(&h, 0, sizeof(h));
				h.kv = kv;
				h_run(&h, 1000, "SET a hello");
				h_run(&h, 1000, "SET b 2 EX 100");
				h_run(&h, 1000, "SET c 3");
				h_run(&h, 1000, "SET d 7");
				uint64_t before = kv_digest(kv);
				uint8_t *want = NULL;
				size_t wlen = 0;
				struct kv_frozen *f = NULL;
				uint8_t out[8192];
				size_t n = 0, off = 0;
				if (frozen) {
					ASSERT(kv_snapshot_encode(kv, &keel_alloc_libc,
								  &want, &wlen) == 0);
					f = kv_freeze(kv, &keel_alloc_libc);
					ASSERT(f != NULL);
					kv_frozen_next(f, out, KV_SNAP_HEADER_BYTES +
							       KV_SNAP_RECORD_BYTES + 2,
						       &n);
					off = n;
				}
				const uint8_t *argv[MAX_ARGS];
				size_t lens[MAX_ARGS];
				char store[1024];
				int argc = tokenize(txns[ti], argv, lens, store);
				uint8_t buf[1024];
				size_t len;
				ASSERT(kv_cmd_encode(1000, argc, argv, lens, buf,
						     sizeof(buf), &len) == 0);
				fa.countdown = fail_at;
				rec_reset(&h.rec);
				int rc = kv_apply(kv, 5, buf, len, &rec_ops, &h.rec);
				fa.countdown = -1;
				if (rc == KEEL_ERR_NOMEM) {
					undone++;
					EXPECT_EQ_U64(kv_digest(kv), before);
					EXPECT(kv_invariants(kv));
					struct kv_stats st;
					kv_stats(kv, &st);
					EXPECT_EQ_U64(st.applied_index, 4);
					rec_reset(&h.rec);
					EXPECT(kv_apply(kv, 5, buf, len, &rec_ops,
							&h.rec) == 0);
				} else {
					EXPECT(rc == 0);
					ok++;
				}
				/* Complete either way: every write happened. */
				if (h.rec.text[0] != '*')
					fprintf(stderr, "  reply: %s\n", h.rec.text);
				EXPECT(h.rec.text[0] == '*');
				EXPECT(kv_digest(kv) != before);
				if (frozen) {
					bool more = true;
					while (more && off < sizeof(out)) {
						more = kv_frozen_next(f, out + off, 7,
								      &n);
						off += n;
					}
					EXPECT(off == wlen &&
					       memcmp(out, want, wlen) == 0);
					kv_frozen_destroy(f);
					free(want);
				}
				EXPECT(kv_invariants(kv));
				kv_destroy(kv);
				EXPECT(fa.live == 0);
			}
			/* Failures at many points, including after earlier
			 * sub-commands had changed keys, and success once
			 * the countdown outlasts the transaction. */
			EXPECT(undone >= 8);
			EXPECT(ok >= 1);
		}
	}
}

/* The visible state as text: key, value, expiry of every live key. */
struct vis {
	char text[16384];
	size_t n;
};

static int vis_cb(void *ctx, const uint8_t *key, size_t klen,
		  const uint8_t *val, size_t vlen, const struct kv_meta *meta)
{
	struct vis *v = ctx;
	int k = snprintf(v->text + v->n, sizeof(v->text) - v->n,
			 "%.*s=%.*s@%" PRIu64 " ", (int)klen, (const char *)key,
			 (int)(vlen > 64 ? 64 : vlen), (const char *)val,
			 meta->expire_at_ms);
	if (k > 0 && (size_t)k < sizeof(v->text) - v->n)
		v->n += (size_t)k;
	return 0;
}

static void visible(struct kv *kv, uint64_t now, struct vis *v)
{
	v->n = 0;
	v->text[0] = 0;
	struct kv_visit vi = {vis_cb, v};
	kv_range(kv, NULL, 0, NULL, 0, now, 0, &vi);
}

static void sweep_one(struct h *h, uint64_t now)
{
	static struct collect due;
	due.n = 0;
	struct kv_visit v = {collect_mod_cb, &due};
	kv_next_expired(h->kv, now, 16, &v);
	for (int d = 0; d < due.n; d++) {
		char line[96];
		snprintf(line, sizeof(line), "KEEL.EXPIRE-DELETE %s %" PRIu64,
			 due.keys[d], due.exp[d]);
		h_run(h, now, line);
	}
}

/* A transaction behaves like its commands run one after the other with
 * nothing in between (Redis's EXEC): random transactions of the random
 * stream's commands give the same sub-replies and the same visible state
 * as the commands applied alone; rewritten through the leader's step they
 * give the same bytes; each moves the revision by at most one. */
TEST(kv_txn_random_equals_commands_in_sequence)
{
	uint64_t seed = test_seed(23);
	struct keel_rand rnd;
	keel_rand_seed(&rnd, seed);
	static struct h a, b, c;
	h_init(&a, MODE_RAW);
	h_init(&b, MODE_RAW);
	h_init(&c, MODE_REWRITE);
	uint64_t now = 1000;
	static struct rec seq;
	static struct vis va, vb;
	for (int i = 0; i < 3000 && !test_failed_now_; i++) {
		const uint8_t *argv[128];
		size_t lens[128];
		static struct stream cmds[8];
		char counts[8][8];
		int n = 1 + (int)keel_rand_below(&rnd, 6), argc = 0;
		argv[argc] = (const uint8_t *)"KEEL.EXEC";
		lens[argc++] = 9;
		argv[argc] = (const uint8_t *)"0";
		lens[argc++] = 1;
		snprintf(counts[7], 8, "%d", n);
		argv[argc] = (const uint8_t *)counts[7];
		lens[argc++] = strlen(counts[7]);
		for (int j = 0; j < n; j++) {
			struct stream *s = &cmds[j];
			for (;;) {
				rand_command(&rnd, s);
				const struct kv_command *k =
					kv_command_lookup(s->argv[0], s->lens[0]);
				int ar = k ? k->arity : 0;
				if (k && kv_command_txn_allowed(k) &&
				    ((ar > 0 && s->argc == ar) ||
				     (ar < 0 && s->argc >= -ar)))
					break;
			}
			snprintf(counts[j], 8, "%d", s->argc);
			argv[argc] = (const uint8_t *)counts[j];
			lens[argc++] = strlen(counts[j]);
			for (int k = 0; k < s->argc; k++) {
				argv[argc] = s->argv[k];
				lens[argc++] = s->lens[k];
			}
		}
		now += keel_rand_below(&rnd, 300);
		struct kv_stats st0, st1;
		kv_stats(a.kv, &st0);
		rec_reset(&a.rec);
		rec_reset(&c.rec);
		ASSERT(h_apply_argv(&a, now, argc, argv, lens) == 0);
		ASSERT(h_apply_argv(&c, now, argc, argv, lens) == 0);
		kv_stats(a.kv, &st1);
		EXPECT(st1.revision - st0.revision <= 1);
		/* The same commands one by one on b. */
		rec_reset(&seq);
		char hdr[16];
		snprintf(hdr, sizeof(hdr), "*%d", n);
		rec_put(&seq, hdr, strlen(hdr));
		for (int j = 0; j < n; j++) {
			rec_reset(&b.rec);
			ASSERT(h_apply_argv(&b, now, cmds[j].argc, cmds[j].argv,
					    cmds[j].lens) == 0);
			rec_put(&seq, b.rec.text, strlen(b.rec.text));
		}
		if (strcmp(a.rec.text, seq.text) != 0 ||
		    strcmp(a.rec.text, c.rec.text) != 0) {
			fprintf(stderr, "  step %d: txn '%s'\n    alone '%s'\n    "
				"rewritten '%s'\n", i, a.rec.text, seq.text,
				c.rec.text);
			test_failed_now_ = 1;
			break;
		}
		visible(a.kv, now, &va);
		visible(b.kv, now, &vb);
		if (strcmp(va.text, vb.text) != 0) {
			fprintf(stderr, "  step %d: state differs\n    txn   %s\n"
				"    alone %s\n", i, va.text, vb.text);
			test_failed_now_ = 1;
			break;
		}
		if (i % 500 == 0) {
			EXPECT(kv_invariants(a.kv));
			EXPECT_EQ_U64(kv_digest(a.kv), kv_digest(c.kv));
		}
		if (keel_rand_chance(&rnd, 1, 10)) {
			sweep_one(&a, now);
			sweep_one(&b, now);
			sweep_one(&c, now);
		}
	}
	EXPECT_EQ_U64(kv_digest(a.kv), kv_digest(c.kv));
	h_fini(&a);
	h_fini(&b);
	h_fini(&c);
}

/* ---- reply tapes ------------------------------------------------------------ */

/* A reply recorded on a tape and played back renders exactly like the
 * reply given directly; a damaged tape is refused, not half-trusted. */
TEST(tape_replays_replies_exactly_and_refuses_damage)
{
	static struct rec direct, played;
	struct kv_tape tape;
	kv_tape_init(&tape, NULL, 1 << 20);
	static const uint8_t *argv[] = {(const uint8_t *)"MSET",
					(const uint8_t *)"a",
					(const uint8_t *)"1",
					(const uint8_t *)"b",
					(const uint8_t *)"two"};
	static const size_t lens[] = {4, 1, 1, 1, 3};
	struct kv *kv = kv_create(&keel_alloc_libc);
	ASSERT(kv);
	uint8_t cmd[256];
	size_t n = 0;
	ASSERT(kv_cmd_encode(1000, 5, argv, lens, cmd, sizeof(cmd), &n) == 0);
	ASSERT(kv_apply(kv, 1, cmd, n, &kv_tape_ops, &tape) == 0);
	rec_reset(&played);
	EXPECT(kv_tape_play(tape.buf, tape.len, &rec_ops, &played) == 0);
	EXPECT(strcmp(played.text, "+OK") == 0);
	static const uint8_t *margv[] = {(const uint8_t *)"MGET",
					 (const uint8_t *)"a",
					 (const uint8_t *)"zz",
					 (const uint8_t *)"b"};
	static const size_t mlens[] = {4, 1, 2, 1};
	rec_reset(&direct);
	kv_read(kv, 4, margv, mlens, 1000, &rec_ops, &direct);
	kv_tape_reset(&tape);
	kv_read(kv, 4, margv, mlens, 1000, &kv_tape_ops, &tape);
	rec_reset(&played);
	EXPECT(kv_tape_play(tape.buf, tape.len, &rec_ops, &played) == 0);
	EXPECT(strcmp(direct.text, played.text) == 0);
	EXPECT(!tape.failed);
	/* Every truncation and a lying array count are refused. */
	for (size_t cut = 0; cut < tape.len; cut++) {
		rec_reset(&played);
		EXPECT(kv_tape_play(tape.buf, cut, &rec_ops, &played) ==
		       KEEL_ERR_MALFORMED);
	}
	uint8_t lie[16] = {'a', 0xff, 0xff, 0xff, 0x0f, 'n'};
	EXPECT(kv_tape_play(lie, 6, &rec_ops, &played) == KEEL_ERR_MALFORMED);
	uint8_t bad_status[] = {'s', 3, 0, 0, 0, 'O', '\r', 'K'};
	EXPECT(kv_tape_play(bad_status, sizeof(bad_status), &rec_ops, &played) ==
	       KEEL_ERR_MALFORMED);
	/* A tape over its cap fails instead of cutting the reply short. */
	struct kv_tape small;
	kv_tape_init(&small, NULL, 8);
	kv_read(kv, 4, margv, mlens, 1000, &kv_tape_ops, &small);
	EXPECT(small.failed);
	kv_tape_close(&small);
	kv_tape_close(&tape);
	kv_destroy(kv);
}

/* One row per command: every row is whole (a handler, a group, ACL
 * categories) and the hashed lookup finds each row by its name in any
 * case, and nothing else. */
TEST(command_table_rows_are_whole_and_lookup_finds_each)
{
	for (size_t i = 0; i < kv_commands_count; i++) {
		const struct kv_command *c = &kv_commands[i];
		EXPECT(c->proc != NULL);
		EXPECT(c->group && *c->group && c->acl && c->acl[0] == '@');
		EXPECT(c->flags & (KV_CMD_WRITE | KV_CMD_READ));
		size_t n = strlen(c->name);
		EXPECT(kv_command_lookup((const uint8_t *)c->name, n) == c);
		char up[40];
		ASSERT(n < sizeof(up));
		for (size_t k = 0; k < n; k++)
			up[k] = (char)((c->name[k] >= 'a' && c->name[k] <= 'z')
					       ? c->name[k] - 32
					       : c->name[k]);
		EXPECT(kv_command_lookup((const uint8_t *)up, n) == c);
		/* a name one byte shorter or longer is another name */
		EXPECT(kv_command_lookup((const uint8_t *)c->name, n - 1) == NULL ||
		       kv_command_lookup((const uint8_t *)c->name, n - 1) != c);
		for (size_t j = 0; j < i; j++)
			EXPECT(strcmp(kv_commands[j].name, c->name) != 0);
	}
	EXPECT(kv_command_lookup((const uint8_t *)"getx", 4) == NULL);
	EXPECT(kv_command_lookup((const uint8_t *)"", 0) == NULL);
	static uint8_t big[4096];
	memset(big, 'a', sizeof(big));
	EXPECT(kv_command_lookup(big, sizeof(big)) == NULL);
}
