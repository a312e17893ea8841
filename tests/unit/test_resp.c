/*
 * test_resp.c -- tests of the RESP codec (src/resp/): the request parser
 * against tables of valid forms and of every protocol error with its exact
 * Redis text; split-independence (every two-piece split and one byte at a
 * time give the same transcript as the whole buffer, with each piece freed
 * right after use so a parser that kept a pointer into it trips ASan);
 * limits enforced before allocation (a counting allocator that refuses any
 * large block); allocation failures at every point; the reply encoder
 * byte-exact in RESP2 and RESP3; double formatting against libc; and the
 * reply parser on random trees from a printed seed and on malformed input.
 */
#include <float.h>
#include <math.h>

#include "keel/resp.h"
#include "test.h"

/* ---- a counting, failing allocator --------------------------------------- */

struct count_alloc {
	size_t calls;	   /* allocations and reallocations attempted */
	size_t fail_over;  /* refuse any single block larger than this */
	size_t fail_at;	   /* refuse the fail_at-th call (1-based), 0: never */
	size_t max_single; /* largest block handed out */
	size_t live;	   /* bytes currently allocated */
	size_t refused;
};

static void *ca_realloc(void *ctx, void *ptr, size_t size)
{
	struct count_alloc *a = ctx;
	a->calls++;
	if ((a->fail_over && size > a->fail_over) ||
	    (a->fail_at && a->calls == a->fail_at)) {
		a->refused++;
		return NULL;
	}
	size_t old = 0;
	uint8_t *base = NULL;
	if (ptr) {
		base = (uint8_t *)ptr - 16;
		memcpy(&old, base, sizeof(old));
	}
	uint8_t *nb = realloc(base, size + 16);
	if (!nb)
		return NULL;
	memcpy(nb, &size, sizeof(size));
	a->live = a->live - old + size;
	if (size > a->max_single)
		a->max_single = size;
	return nb + 16;
}

static void *ca_malloc(void *ctx, size_t size)
{
	return ca_realloc(ctx, NULL, size);
}

static void ca_free(void *ctx, void *ptr)
{
	struct count_alloc *a = ctx;
	if (!ptr)
		return;
	uint8_t *base = (uint8_t *)ptr - 16;
	size_t old;
	memcpy(&old, base, sizeof(old));
	a->live -= old;
	free(base);
}

static struct keel_alloc ca_make(struct count_alloc *a)
{
	struct keel_alloc k = {a, ca_malloc, ca_realloc, ca_free};
	return k;
}

/* ---- transcripts ----------------------------------------------------------
 */

/* What a parser produced from some input: each command as
 * "[arg][arg]\n" ("I" in front for inline), then "E:<message>" if it
 * failed. Comparing transcripts compares everything observable. */
struct transcript {
	char d[1 << 17];
	size_t n;
	int last; /* last return code */
};

static void t_add(struct transcript *t, const void *s, size_t n)
{
	if (t->n + n > sizeof(t->d))
		n = sizeof(t->d) - t->n;
	memcpy(t->d + t->n, s, n);
	t->n += n;
}

static void t_cmd(struct transcript *t, const struct resp_command *c)
{
	if (c->is_inline)
		t_add(t, "I", 1);
	for (size_t i = 0; i < c->argc; i++) {
		t_add(t, "[", 1);
		t_add(t, c->argv[i], c->argv_len[i]);
		t_add(t, "]", 1);
	}
	t_add(t, "\n", 1);
}

/* Feeds data cut at cuts[0..ncuts) (ascending) into a fresh parser, each
 * piece in its own heap copy that is poisoned and freed as soon as the
 * parser asks for more. */
static void run_pieces(const void *data, size_t len, const size_t *cuts,
		       size_t ncuts, const struct resp_limits *lim,
		       const struct resp_limits *unauth,
		       const struct keel_alloc *alloc, struct transcript *t)
{
	struct resp_parser p;
	resp_parser_init(&p, alloc ? alloc : &keel_alloc_libc, lim);
	if (unauth)
		resp_parser_set_unauth(&p, unauth);
	t->n = 0;
	t->last = RESP_NEED_MORE;
	size_t start = 0;
	for (size_t k = 0; k <= ncuts; k++) {
		size_t end = k < ncuts ? cuts[k] : len;
		size_t n = end - start;
		uint8_t *piece = malloc(n ? n : 1);
		memcpy(piece, (const uint8_t *)data + start, n);
		size_t off = 0;
		for (;;) {
			size_t used;
			struct resp_command cmd;
			int rc =
			    resp_parse(&p, piece + off, n - off, &used, &cmd);
			t->last = rc;
			if (rc == RESP_OK) {
				EXPECT(used > 0);
				t_cmd(t, &cmd);
				off += used;
				continue;
			}
			if (rc == RESP_NEED_MORE) {
				EXPECT(used == n - off);
				break;
			}
			t_add(t, "E:", 2);
			t_add(t, resp_parser_error(&p),
			      strlen(resp_parser_error(&p)));
			/* Sticky: the same error, nothing consumed. */
			EXPECT(resp_parse(&p, piece, n, &used, &cmd) == rc);
			EXPECT(used == 0);
			break;
		}
		memset(piece, 0xAA, n);
		free(piece);
		if (t->last != RESP_OK && t->last != RESP_NEED_MORE)
			break;
		start = end;
	}
	resp_parser_close(&p);
}

static void run_whole(const void *data, size_t len,
		      const struct resp_limits *lim, struct transcript *t)
{
	run_pieces(data, len, NULL, 0, lim, NULL, NULL, t);
}

static struct transcript t_whole, t_split;

/* Every two-piece split and the one-byte-at-a-time feed must give the
 * transcript of the whole buffer. Returns false on the first mismatch. */
static bool check_splits(const void *data, size_t len,
			 const struct resp_limits *lim,
			 const struct resp_limits *unauth)
{
	run_pieces(data, len, NULL, 0, lim, unauth, NULL, &t_whole);
	for (size_t cut = 0; cut <= len; cut++) {
		run_pieces(data, len, &cut, 1, lim, unauth, NULL, &t_split);
		if (t_split.n != t_whole.n ||
		    memcmp(t_split.d, t_whole.d, t_whole.n)) {
			fprintf(stderr, "  split at %zu differs\n", cut);
			return false;
		}
	}
	size_t *cuts = malloc((len + 1) * sizeof(size_t));
	for (size_t i = 0; i < len; i++)
		cuts[i] = i + 1;
	run_pieces(data, len, cuts, len ? len - 1 : 0, lim, unauth, NULL,
		   &t_split);
	free(cuts);
	if (t_split.n != t_whole.n || memcmp(t_split.d, t_whole.d, t_whole.n)) {
		fprintf(stderr, "  byte-at-a-time differs\n");
		return false;
	}
	return true;
}

static bool t_is(const struct transcript *t, const char *want, size_t wn)
{
	if (t->n == wn && !memcmp(t->d, want, wn))
		return true;
	fprintf(stderr, "  got  \"%.*s\"\n  want \"%.*s\"\n", (int)t->n, t->d,
		(int)wn, want);
	return false;
}

#define S(lit) lit, sizeof(lit) - 1

/* ---- request parser: valid forms ----------------------------------------- */

struct form {
	const char *in;
	size_t in_len;
	const char *want;
	size_t want_len;
};

static const struct form valid_forms[] = {
    {S("*1\r\n$4\r\nPING\r\n"), S("[PING]\n")},
    {S("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n"), S("[SET][k][]\n")},
    {S("*2\r\n$3\r\nGET\r\n$4\r\na\r\nb\r\n"), S("[GET][a\r\nb]\n")},
    {S("*1\r\n$3\r\n\0\xff*\r\n"), S("[\0\xff*]\n")},
    {S("*0\r\n*1\r\n$4\r\nPING\r\n"), S("[PING]\n")},
    {S("*-1\r\n*-10\r\n*1\r\n$1\r\nx\r\n"), S("[x]\n")},
    {S("PING\r\n"), S("I[PING]\n")},
    {S("PING\n"), S("I[PING]\n")},
    {S("  set  a   b  \r\n"), S("I[set][a][b]\n")},
    {S("\r\n\r\n\nPING\r\n"), S("I[PING]\n")},
    {S("\tPING\t\r\n"), S("I[PING]\n")},
    {S("\vPING\r\n"), S("I[PING]\n")},
    {S("A\vB\r\n"), S("I[A\vB]\n")},
    {S("PING\r\n*1\r\n$4\r\nPING\r\n"), S("I[PING]\n[PING]\n")},
    {S("set a \"b c\"\r\n"), S("I[set][a][b c]\n")},
    {S("echo \"\\x41\\x4a\\n\\t\\r\\b\\a\\\\\\\"\\q\"\r\n"),
     S("I[echo][AJ\n\t\r\b\a\\\"q]\n")},
    {S("echo \"\\xZZ\"\r\n"), S("I[echo][xZZ]\n")},
    {S("echo 'it\\'s'\r\n"), S("I[echo][it's]\n")},
    {S("echo 'a\\nb'\r\n"), S("I[echo][a\\nb]\n")},
    {S("echo \"\" ''\r\n"), S("I[echo][][]\n")},
    {S("a\"b c\"\r\n"), S("I[ab c]\n")},
    {S("x'y z' \"q\"\r\n"), S("I[xy z][q]\n")},
    {S("a\0b\r\n"), S("I[a\0b]\n")},
    {S("*2\r\n$1\r\na\r\n$2\r\nbc\r\nPING\r\n\r\n*1\r\n$1\r\nz\r\n"),
     S("[a][bc]\nI[PING]\n[z]\n")},
    /* Incomplete: nothing yet. */
    {S("*2\r\n$1\r\na\r\n$2\r\nb"), S("")},
    {S("PING"), S("")},
};

TEST(parse_valid_forms)
{
	for (size_t i = 0; i < KEEL_ARRAY_LEN(valid_forms); i++) {
		const struct form *f = &valid_forms[i];
		run_whole(f->in, f->in_len, NULL, &t_whole);
		if (!t_is(&t_whole, f->want, f->want_len))
			fprintf(stderr, "  (form %zu)\n", i);
		EXPECT(t_is(&t_whole, f->want, f->want_len));
		EXPECT(check_splits(f->in, f->in_len, NULL, NULL));
	}
}

/* ---- request parser: errors ---------------------------------------------- */

/* Small limits so that every cap is reachable in a short input. */
static const struct resp_limits small = {
    .max_bulk_len = 16,
    .max_array_len = 4,
    .max_inline_len = 32,
    .max_command_bytes = 40,
};

struct err_case {
	const char *in;
	size_t in_len;
	const struct resp_limits *lim;
	const struct resp_limits *unauth;
	const char *msg; /* NULL: no error, only commands / need more */
};

#define A32 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define D16 "0123456789abcdef"

static const struct err_case err_cases[] = {
    {S("*abc\r\n"), NULL, NULL, "Protocol error: invalid multibulk length"},
    {S("*\r\n"), NULL, NULL, "Protocol error: invalid multibulk length"},
    {S("*1x\r\n"), NULL, NULL, "Protocol error: invalid multibulk length"},
    {S("*01\r\n"), NULL, NULL, "Protocol error: invalid multibulk length"},
    {S("*+1\r\n"), NULL, NULL, "Protocol error: invalid multibulk length"},
    {S("*1\n"), NULL, NULL, "Protocol error: invalid multibulk length"},
    {S("*1 \r\n"), NULL, NULL, "Protocol error: invalid multibulk length"},
    {S("*2000000000\r\n"), NULL, NULL,
     "Protocol error: invalid multibulk length"},
    {S("*1048577\r\n"), NULL, NULL, "Protocol error: invalid multibulk length"},
    {S("*1048576\r\n$1\r\n"), NULL, NULL, NULL},
    {S("*99999999999999999999999\r\n"), NULL, NULL,
     "Protocol error: invalid multibulk length"},
    {S("*3\r\n$3\r\nSET\r\n$1\r\nx\r\nfooz\r\n"), NULL, NULL,
     "Protocol error: expected '$', got 'f'"},
    {S("*1\r\n\x01"), NULL, NULL, "Protocol error: expected '$', got '?'"},
    {S("*1\r\n\r\n"), NULL, NULL, "Protocol error: expected '$', got '?'"},
    {S("*1\r\n$-1\r\n"), NULL, NULL, "Protocol error: invalid bulk length"},
    {S("*1\r\n$abc\r\n"), NULL, NULL, "Protocol error: invalid bulk length"},
    {S("*1\r\n$\r\n"), NULL, NULL, "Protocol error: invalid bulk length"},
    {S("*1\r\n$1\n"), NULL, NULL, "Protocol error: invalid bulk length"},
    {S("*1\r\n$536870913\r\n"), NULL, NULL,
     "Protocol error: invalid bulk length"},
    {S("*1\r\n$536870912\r\n"), NULL, NULL, NULL},
    {S("*1\r\n$999999999999\r\n"), NULL, NULL,
     "Protocol error: invalid bulk length"},
    {S("*1\r\n$99999999999999999999999\r\n"), NULL, NULL,
     "Protocol error: invalid bulk length"},
    {S("*1\r\n$3\r\nabcd\r\n"), NULL, NULL,
     "Protocol error: bulk data not followed by CRLF"},
    {S("*1\r\n$3\r\nabc\rX"), NULL, NULL,
     "Protocol error: bulk data not followed by CRLF"},
    {S("*1\r\n$3\r\nabc\n\r"), NULL, NULL,
     "Protocol error: bulk data not followed by CRLF"},
    {S("set \"abc\r\n"), NULL, NULL,
     "Protocol error: unbalanced quotes in request"},
    {S("set 'abc\r\n"), NULL, NULL,
     "Protocol error: unbalanced quotes in request"},
    {S("set \"a\"b\r\n"), NULL, NULL,
     "Protocol error: unbalanced quotes in request"},
    {S("a b c d\r\n"), &small, NULL, NULL},
    {S("a b c d e\r\n"), &small, NULL,
     "Protocol error: too many arguments in inline request"},
    {S("a b c d e f g h i j k\r\n"), NULL, &resp_limits_unauth,
     "Protocol error: too many arguments in inline request"},
    {S("set 'a'b\r\n"), NULL, NULL,
     "Protocol error: unbalanced quotes in request"},
    {S("set \"a\\\"\r\n"), NULL, NULL,
     "Protocol error: unbalanced quotes in request"},
    /* Small limits: each cap at its boundary. */
    {S(A32 "\r\n"), &small, NULL, "Protocol error: too big inline request"},
    {S("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n"), &small, NULL, NULL},
    {S(A32 "a"), &small, NULL, "Protocol error: too big inline request"},
    {S("*" A32), &small, NULL, "Protocol error: too big mbulk count string"},
    {S("*1\r\n$" A32), &small, NULL,
     "Protocol error: too big bulk count string"},
    {S("*5\r\n"), &small, NULL, "Protocol error: invalid multibulk length"},
    {S("*4\r\n"), &small, NULL, NULL},
    {S("*1\r\n$17\r\n"), &small, NULL, "Protocol error: invalid bulk length"},
    {S("*1\r\n$16\r\n" D16 "\r\n"), &small, NULL, NULL},
    {S("*3\r\n$16\r\n" D16 "\r\n$16\r\n" D16 "\r\n$16\r\n"), &small, NULL,
     "Protocol error: too big command"},
    /* Before AUTH. */
    {S("*11\r\n"), NULL, &resp_limits_unauth,
     "Protocol error: unauthenticated multibulk length"},
    {S("*10\r\n"), NULL, &resp_limits_unauth, NULL},
    {S("*1048577\r\n"), NULL, &resp_limits_unauth,
     "Protocol error: invalid multibulk length"},
    {S("*1\r\n$16385\r\n"), NULL, &resp_limits_unauth,
     "Protocol error: unauthenticated bulk length"},
    {S("*1\r\n$536870913\r\n"), NULL, &resp_limits_unauth,
     "Protocol error: invalid bulk length"},
    {S("*1\r\n$16384\r\n"), NULL, &resp_limits_unauth, NULL},
};

TEST(parse_errors_exact_text_at_every_split)
{
	for (size_t i = 0; i < KEEL_ARRAY_LEN(err_cases); i++) {
		const struct err_case *e = &err_cases[i];
		run_pieces(e->in, e->in_len, NULL, 0, e->lim, e->unauth, NULL,
			   &t_whole);
		bool ok;
		if (e->msg) {
			char want[256];
			size_t wn = (size_t)snprintf(want, sizeof(want), "E:%s",
						     e->msg);
			/* The error comes after any complete commands. */
			ok = t_whole.n >= wn &&
			     !memcmp(t_whole.d + t_whole.n - wn, want, wn) &&
			     t_whole.last == RESP_ERR_PROTOCOL;
			if (!ok)
				t_is(&t_whole, want, wn);
		} else {
			ok = t_whole.last == RESP_NEED_MORE ||
			     t_whole.last == RESP_OK;
			if (!ok)
				t_is(&t_whole, "", 0);
		}
		if (!ok)
			fprintf(stderr, "  (error case %zu)\n", i);
		EXPECT(ok);
		/* The verdict must not depend on how the bytes arrived. */
		EXPECT(check_splits(e->in, e->in_len, e->lim, e->unauth));
	}
}

TEST(unauth_limits_switch_off)
{
	struct resp_parser p;
	struct resp_command c;
	size_t used;
	resp_parser_init(&p, &keel_alloc_libc, NULL);
	resp_parser_set_unauth(&p, &resp_limits_unauth);
	const char ok10[] = "*1\r\n$5\r\nhello\r\n";
	EXPECT(resp_parse(&p, (const uint8_t *)ok10, sizeof(ok10) - 1, &used,
			  &c) == RESP_OK);
	resp_parser_set_unauth(&p, NULL);
	const char big[] = "*11\r\n";
	EXPECT(resp_parse(&p, (const uint8_t *)big, sizeof(big) - 1, &used,
			  &c) == RESP_NEED_MORE);
	resp_parser_close(&p);

	/* Tightened in the middle of a long inline line: refused, no
	 * assertion, whatever was buffered. */
	static uint8_t line[20000];
	memset(line, 'a', sizeof(line));
	resp_parser_init(&p, &keel_alloc_libc, NULL);
	EXPECT(resp_parse(&p, line, sizeof(line), &used, &c) == RESP_NEED_MORE);
	resp_parser_set_unauth(&p, &resp_limits_unauth);
	EXPECT(resp_parse(&p, line, 1, &used, &c) == RESP_ERR_PROTOCOL);
	EXPECT(!strcmp(resp_parser_error(&p),
		       "Protocol error: too big inline request"));
	resp_parser_close(&p);
}

/* ---- request parser: pipelines and splits -------------------------------- */

TEST(pipeline_every_split_point)
{
	/* Every form, back to back, then a long argument, then an error. */
	static uint8_t buf[4096];
	size_t n = 0;
	for (size_t i = 0; i < KEEL_ARRAY_LEN(valid_forms) - 2; i++) {
		memcpy(buf + n, valid_forms[i].in, valid_forms[i].in_len);
		n += valid_forms[i].in_len;
	}
	const char tail[] = "*2\r\n$3\r\nGET\r\n$300\r\n";
	memcpy(buf + n, tail, sizeof(tail) - 1);
	n += sizeof(tail) - 1;
	for (int i = 0; i < 300; i++)
		buf[n++] = (uint8_t)('A' + i % 26);
	memcpy(buf + n, "\r\n*1\r\n$2\r\nabc\r\n", 15);
	n += 15;

	run_whole(buf, n, NULL, &t_whole);
	size_t cmds = 0;
	for (size_t i = 0; i < t_whole.n; i++)
		cmds += t_whole.d[i] == '\n' && i + 1 < t_whole.n &&
			(t_whole.d[i + 1] == '[' || t_whole.d[i + 1] == 'I' ||
			 t_whole.d[i + 1] == 'E');
	EXPECT(cmds >= KEEL_ARRAY_LEN(valid_forms) - 2);
	EXPECT(t_whole.last == RESP_ERR_PROTOCOL);
	EXPECT(check_splits(buf, n, NULL, NULL));

	/* Random three- to eight-piece splits from a printed seed. */
	struct keel_rand r;
	keel_rand_seed(&r, test_seed(20261122));
	for (int iter = 0; iter < 300; iter++) {
		size_t cuts[8];
		size_t k = 2 + keel_rand_below(&r, 7);
		for (size_t j = 0; j < k; j++)
			cuts[j] = keel_rand_below(&r, n + 1);
		for (size_t a = 0; a < k; a++) /* sort */
			for (size_t b = a + 1; b < k; b++)
				if (cuts[b] < cuts[a]) {
					size_t tmp = cuts[a];
					cuts[a] = cuts[b];
					cuts[b] = tmp;
				}
		run_pieces(buf, n, cuts, k, NULL, NULL, NULL, &t_split);
		EXPECT(t_split.n == t_whole.n &&
		       !memcmp(t_split.d, t_whole.d, t_whole.n));
	}
}

TEST(zero_copy_when_whole_owned_when_split)
{
	const char in[] = "*2\r\n$3\r\nGET\r\n$3\r\nkey\r\nPING\r\n";
	const uint8_t *b = (const uint8_t *)in;
	struct resp_parser p;
	struct resp_command c;
	size_t used;
	resp_parser_init(&p, &keel_alloc_libc, NULL);
	ASSERT(resp_parse(&p, b, sizeof(in) - 1, &used, &c) == RESP_OK);
	EXPECT(c.argc == 2);
	EXPECT(c.argv[0] == b + 8);
	EXPECT(c.argv[1] == b + 17);
	EXPECT(used == 22);
	EXPECT(!c.is_inline);
	ASSERT(resp_parse(&p, b + used, sizeof(in) - 1 - used, &used, &c) ==
	       RESP_OK);
	EXPECT(c.is_inline && c.argc == 1 && c.argv_len[0] == 4);

	/* Split inside the second argument: the first is copied. */
	ASSERT(resp_parse(&p, b, 19, &used, &c) == RESP_NEED_MORE);
	EXPECT(used == 19);
	ASSERT(resp_parse(&p, b + 19, 3, &used, &c) == RESP_OK);
	EXPECT(used == 3);
	EXPECT(c.argc == 2);
	EXPECT(!(c.argv[0] >= b && c.argv[0] < b + sizeof(in)));
	EXPECT(c.argv_len[0] == 3 && !memcmp(c.argv[0], "GET", 3));
	EXPECT(c.argv_len[1] == 3 && !memcmp(c.argv[1], "key", 3));
	resp_parser_close(&p);
}

/* ---- request parser: caps before allocation ------------------------------ */

TEST(caps_reject_before_allocating)
{
	struct count_alloc ca = {.fail_over = 4096};
	struct keel_alloc a = ca_make(&ca);
	static const struct {
		const char *in;
		size_t len;
		const char *msg;
	} huge[] = {
	    {S("*2000000000\r\n"), "Protocol error: invalid multibulk length"},
	    {S("*1\r\n$999999999999\r\n"),
	     "Protocol error: invalid bulk length"},
	    {S("*1\r\n$536870913\r\n"), "Protocol error: invalid bulk length"},
	};
	for (size_t i = 0; i < KEEL_ARRAY_LEN(huge); i++) {
		/* In one piece nothing at all is allocated. */
		ca.calls = ca.max_single = 0;
		run_pieces(huge[i].in, huge[i].len, NULL, 0, NULL, NULL, &a,
			   &t_whole);
		EXPECT(t_whole.last == RESP_ERR_PROTOCOL);
		EXPECT(ca.calls == 0);
		char want[128];
		size_t wn =
		    (size_t)snprintf(want, sizeof(want), "E:%s", huge[i].msg);
		EXPECT(t_is(&t_whole, want, wn));
		/* One byte at a time only the small line buffer is used. */
		size_t cuts[64];
		for (size_t j = 0; j + 1 < huge[i].len; j++)
			cuts[j] = j + 1;
		run_pieces(huge[i].in, huge[i].len, cuts, huge[i].len - 1, NULL,
			   NULL, &a, &t_split);
		EXPECT(t_is(&t_split, want, wn));
		EXPECT(ca.max_single <= 128);
		EXPECT(ca.refused == 0);
	}

	/* Declared but not sent: memory follows the bytes that arrived,
	 * never the declared size (which the allocator would refuse). */
	struct resp_parser p;
	struct resp_command c;
	size_t used;
	resp_parser_init(&p, &a, NULL);
	const char hdr[] = "*1000000\r\n$1\r\nx\r\n$500000000\r\n";
	ASSERT(resp_parse(&p, (const uint8_t *)hdr, sizeof(hdr) - 1, &used,
			  &c) == RESP_NEED_MORE);
	static uint8_t chunk[1000];
	memset(chunk, 'z', sizeof(chunk));
	ASSERT(resp_parse(&p, chunk, sizeof(chunk), &used, &c) ==
	       RESP_NEED_MORE);
	EXPECT(ca.refused == 0);
	EXPECT(ca.max_single <= 4096);
	EXPECT(ca.live <= 8192);
	resp_parser_close(&p);
	EXPECT(ca.live == 0);
}

TEST(allocation_failure_at_every_point)
{
	/* A pipeline fed one byte at a time needs the line buffer, the
	 * argument slots and the arena; fail each allocation in turn. */
	const char in[] = "*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n"
			  "set \"a b\" c\r\n*1\r\n$4\r\nPING\r\n";
	size_t len = sizeof(in) - 1;
	size_t cuts[sizeof(in)];
	for (size_t j = 0; j + 1 < len; j++)
		cuts[j] = j + 1;
	struct count_alloc ca = {0};
	struct keel_alloc a = ca_make(&ca);
	run_pieces(in, len, cuts, len - 1, NULL, NULL, &a, &t_whole);
	size_t total_calls = ca.calls;
	EXPECT(t_whole.last == RESP_NEED_MORE);
	EXPECT(total_calls > 3);
	for (size_t k = 1; k <= total_calls; k++) {
		ca = (struct count_alloc){.fail_at = k};
		run_pieces(in, len, cuts, len - 1, NULL, NULL, &a, &t_split);
		EXPECT(t_split.last == RESP_ERR_NOMEM);
		/* What came before the failure is a prefix of the truth. */
		size_t pre = t_split.n - strlen("E:ERR out of memory");
		EXPECT(pre <= t_whole.n && !memcmp(t_split.d, t_whole.d, pre));
		EXPECT(ca.live == 0);
	}
}

TEST(big_buffers_given_back_between_commands)
{
	struct count_alloc ca = {0};
	struct keel_alloc a = ca_make(&ca);
	struct resp_parser p;
	struct resp_command c;
	size_t used;
	resp_parser_init(&p, &a, NULL);
	static uint8_t big[300000];
	size_t n = (size_t)snprintf((char *)big, 64, "*1\r\n$%d\r\n", 200000);
	memset(big + n, 'v', 200000);
	memcpy(big + n + 200000, "\r\n", 2);
	size_t total = n + 200002;
	/* In two pieces, so the argument is copied into the arena. */
	ASSERT(resp_parse(&p, big, 100, &used, &c) == RESP_NEED_MORE);
	ASSERT(resp_parse(&p, big + 100, total - 100, &used, &c) == RESP_OK);
	EXPECT(c.argv_len[0] == 200000);
	EXPECT(ca.live >= 200000);
	ASSERT(resp_parse(&p, (const uint8_t *)"PI", 2, &used, &c) ==
	       RESP_NEED_MORE);
	EXPECT(ca.live < 4096);
	resp_parser_close(&p);
}

/* ---- request encoder round trip ------------------------------------------ */

TEST(request_encode_parse_roundtrip)
{
	struct keel_rand r;
	keel_rand_seed(&r, test_seed(7));
	struct resp_buf b;
	resp_buf_init(&b, &keel_alloc_libc, 1 << 20, 2);
	for (int iter = 0; iter < 500; iter++) {
		uint8_t store[16][40];
		const uint8_t *argv[16];
		size_t argv_len[16];
		size_t argc = 1 + keel_rand_below(&r, 16);
		for (size_t i = 0; i < argc; i++) {
			argv_len[i] = keel_rand_below(&r, 40);
			for (size_t j = 0; j < argv_len[i]; j++)
				store[i][j] = (uint8_t)keel_rand_below(&r, 256);
			argv[i] = store[i];
		}
		resp_buf_reset(&b);
		resp_write_command(&b, argc, argv, argv_len);
		ASSERT(!b.failed);
		size_t cut = keel_rand_below(&r, b.len + 1);
		struct resp_parser p;
		struct resp_command c;
		size_t used;
		resp_parser_init(&p, &keel_alloc_libc, NULL);
		int rc = resp_parse(&p, b.data, cut, &used, &c);
		if (rc == RESP_NEED_MORE)
			rc = resp_parse(&p, b.data + cut, b.len - cut, &used,
					&c);
		EXPECT(rc == RESP_OK);
		if (rc == RESP_OK) {
			EXPECT(c.argc == argc);
			for (size_t i = 0; i < argc && i < c.argc; i++)
				EXPECT(
				    c.argv_len[i] == argv_len[i] &&
				    !memcmp(c.argv[i], argv[i], argv_len[i]));
		}
		resp_parser_close(&p);
	}
	resp_buf_close(&b);
}

/* ---- reply encoder ----------------------------------------------------------
 */

struct enc_case {
	int op;
	const char *v2;
	const char *v3;
};

static void write_op(struct resp_buf *b, int op)
{
	switch (op) {
	case 0:
		resp_write_simple(b, "OK", 2);
		break;
	case 1:
		resp_write_error(b, "ERR bad\r\nthing", 14);
		break;
	case 2:
		resp_write_integer(b, -42);
		break;
	case 3:
		resp_write_integer(b, INT64_MIN);
		break;
	case 4:
		resp_write_bulk(b, "a\r\nb", 4);
		break;
	case 5:
		resp_write_bulk(b, "", 0);
		break;
	case 6:
		resp_write_null(b);
		break;
	case 7:
		resp_write_null_array(b);
		break;
	case 8:
		resp_write_array(b, 2);
		break;
	case 9:
		resp_write_map(b, 3);
		break;
	case 10:
		resp_write_set(b, 4);
		break;
	case 11:
		resp_write_push(b, 3);
		break;
	case 12:
		resp_write_double(b, 1.5);
		break;
	case 13:
		resp_write_double(b, -INFINITY);
		break;
	case 14:
		resp_write_bool(b, true);
		break;
	case 15:
		resp_write_bool(b, false);
		break;
	case 16:
		resp_write_verbatim(b, "txt", "Some string", 11);
		break;
	case 17:
		resp_write_bignum(b, "-123456789012345678901234567890", 31);
		break;
	case 18:
		resp_write_integer(b, INT64_MAX);
		break;
	case 19:
		resp_write_double(b, 0.1);
		break;
	case 20:
		resp_write_array(b, 0);
		break;
	case 21:
		resp_write_map(b, 0);
		break;
	default:
		break;
	}
}

static const struct enc_case enc_cases[] = {
    {0, "+OK\r\n", "+OK\r\n"},
    {1, "-ERR bad  thing\r\n", "-ERR bad  thing\r\n"},
    {2, ":-42\r\n", ":-42\r\n"},
    {3, ":-9223372036854775808\r\n", ":-9223372036854775808\r\n"},
    {4, "$4\r\na\r\nb\r\n", "$4\r\na\r\nb\r\n"},
    {5, "$0\r\n\r\n", "$0\r\n\r\n"},
    {6, "$-1\r\n", "_\r\n"},
    {7, "*-1\r\n", "_\r\n"},
    {8, "*2\r\n", "*2\r\n"},
    {9, "*6\r\n", "%3\r\n"},
    {10, "*4\r\n", "~4\r\n"},
    {11, "*3\r\n", ">3\r\n"},
    {12, "$3\r\n1.5\r\n", ",1.5\r\n"},
    {13, "$4\r\n-inf\r\n", ",-inf\r\n"},
    {14, ":1\r\n", "#t\r\n"},
    {15, ":0\r\n", "#f\r\n"},
    {16, "$11\r\nSome string\r\n", "=15\r\ntxt:Some string\r\n"},
    {17, "$31\r\n-123456789012345678901234567890\r\n",
     "(-123456789012345678901234567890\r\n"},
    {18, ":9223372036854775807\r\n", ":9223372036854775807\r\n"},
    {19, "$3\r\n0.1\r\n", ",0.1\r\n"},
    {20, "*0\r\n", "*0\r\n"},
    {21, "*0\r\n", "%0\r\n"},
};

TEST(encode_resp2_resp3_byte_exact)
{
	for (size_t i = 0; i < KEEL_ARRAY_LEN(enc_cases); i++) {
		for (int proto = 2; proto <= 3; proto++) {
			struct resp_buf b;
			resp_buf_init(&b, &keel_alloc_libc, 1024, proto);
			write_op(&b, enc_cases[i].op);
			const char *want =
			    proto == 2 ? enc_cases[i].v2 : enc_cases[i].v3;
			bool ok = !b.failed && b.len == strlen(want) &&
				  !memcmp(b.data, want, b.len);
			if (!ok)
				fprintf(stderr, "  op %d RESP%d: got %.*s\n",
					enc_cases[i].op, proto, (int)b.len,
					(const char *)b.data);
			EXPECT(ok);
			resp_buf_close(&b);
		}
	}
}

TEST(encode_cap_and_oom_are_all_or_nothing)
{
	struct resp_buf b;
	resp_buf_init(&b, &keel_alloc_libc, 16, 3);
	resp_write_simple(&b, "OK", 2); /* 5 bytes */
	EXPECT(b.len == 5 && !b.failed);
	resp_write_bulk(&b, "0123456", 7); /* 13 more: over 16 */
	EXPECT(b.failed == RESP_ERR_TOO_BIG);
	EXPECT(b.len == 5 && !memcmp(b.data, "+OK\r\n", 5));
	resp_write_integer(&b, 1); /* would fit, but failed is sticky */
	EXPECT(b.len == 5);
	resp_buf_consume(&b, 2);
	EXPECT(b.len == 3 && !memcmp(b.data, "K\r\n", 3));
	resp_buf_reset(&b);
	EXPECT(b.len == 0 && !b.failed);
	resp_write_bulk(&b, "0123456789", 10); /* exactly 17: over */
	EXPECT(b.failed == RESP_ERR_TOO_BIG && b.len == 0);
	resp_buf_reset(&b);
	resp_write_simple(&b, "0123456789abc", 13); /* exactly 16 */
	EXPECT(!b.failed && b.len == 16);
	resp_buf_close(&b);

	struct count_alloc ca = {.fail_at = 1};
	struct keel_alloc a = ca_make(&ca);
	resp_buf_init(&b, &a, 1 << 20, 2);
	resp_write_simple(&b, "OK", 2);
	EXPECT(b.failed == RESP_ERR_NOMEM && b.len == 0);
	resp_buf_close(&b);
	EXPECT(ca.live == 0);
}

/* ---- doubles ------------------------------------------------------------ */

static const struct {
	double v;
	const char *s;
} double_cases[] = {
    {1.5, "1.5"},
    {0.1, "0.1"},
    {-2.5, "-2.5"},
    {100, "100"},
    {1e16, "10000000000000000"},
    {1e17, "1e+17"},
    {1e300, "1e+300"},
    {0.0001, "0.0001"},
    {0.00001, "1e-05"},
    {1.0 / 3, "0.3333333333333333"},
    {5e-324, "5e-324"},
    {DBL_MAX, "1.7976931348623157e+308"},
    {DBL_MIN, "2.2250738585072014e-308"},
    {123456789012345678.0, "1.2345678901234568e+17"},
    {0.0, "0"},
    {-0.0, "-0"},
    {INFINITY, "inf"},
    {-INFINITY, "-inf"},
    {NAN, "nan"},
    {9007199254740993.0, "9007199254740992"},
};

/* Significant digits of a formatted double. */
static size_t sig_digits(const char *s)
{
	char m[64];
	size_t n = 0;
	for (; *s && *s != 'e'; s++)
		if (*s >= '0' && *s <= '9')
			m[n++] = *s;
	size_t a = 0;
	while (a < n && m[a] == '0')
		a++;
	while (n > a && m[n - 1] == '0')
		n--;
	return n - a;
}

TEST(double_format_shortest_roundtrip)
{
	for (size_t i = 0; i < KEEL_ARRAY_LEN(double_cases); i++) {
		char out[RESP_DOUBLE_MAX_CHARS + 1];
		size_t n = resp_format_double(double_cases[i].v, out);
		out[n] = 0;
		if (strcmp(out, double_cases[i].s))
			fprintf(stderr, "  %s != %s\n", out, double_cases[i].s);
		EXPECT(!strcmp(out, double_cases[i].s));
	}
	/* Random bit patterns: reads back exactly, and uses no more digits
	 * than the shortest %.{p}g that libc can round-trip. */
	struct keel_rand r;
	keel_rand_seed(&r, test_seed(99));
	for (int iter = 0; iter < 20000; iter++) {
		uint64_t bits = keel_rand_next(&r);
		double v;
		memcpy(&v, &bits, sizeof(v));
		if (isnan(v) || isinf(v))
			continue;
		char out[RESP_DOUBLE_MAX_CHARS + 1];
		size_t n = resp_format_double(v, out);
		ASSERT(n < sizeof(out));
		out[n] = 0;
		EXPECT(strtod(out, NULL) == v);
		int p;
		char ref[64];
		for (p = 1; p <= 17; p++) {
			snprintf(ref, sizeof(ref), "%.*g", p, v);
			if (strtod(ref, NULL) == v)
				break;
		}
		if (sig_digits(out) != sig_digits(ref) ||
		    strtod(out, NULL) != v) {
			fprintf(stderr, "  %s vs %s\n", out, ref);
			EXPECT(0);
			return;
		}
	}
}

/* ---- reply parser ------------------------------------------------------- */

static int parse_reply(const char *in, size_t len, struct resp_value **v,
		       const char **err)
{
	size_t used = 0;
	int rc = resp_reply_parse(NULL, &keel_alloc_libc, (const uint8_t *)in,
				  len, &used, v, err);
	if (rc == RESP_OK)
		EXPECT(used == len);
	return rc;
}

TEST(reply_parse_valid_forms)
{
	struct resp_value *v;
	const char *err;
#define REPLY(lit) ASSERT(parse_reply(S(lit), &v, &err) == RESP_OK)
	REPLY("$-1\r\n");
	EXPECT(v->type == RESP_T_NULL);
	resp_value_free(&keel_alloc_libc, v);
	REPLY("*-1\r\n");
	EXPECT(v->type == RESP_T_NULL);
	resp_value_free(&keel_alloc_libc, v);
	REPLY("_\r\n");
	EXPECT(v->type == RESP_T_NULL);
	resp_value_free(&keel_alloc_libc, v);
	REPLY("=15\r\ntxt:Some string\r\n");
	EXPECT(v->type == RESP_T_VERBATIM && !strcmp(v->format, "txt") &&
	       v->len == 11 && !strcmp(v->str, "Some string"));
	resp_value_free(&keel_alloc_libc, v);
	REPLY("%1\r\n+a\r\n:-7\r\n");
	EXPECT(v->type == RESP_T_MAP && v->n == 2);
	EXPECT(v->elem[0].type == RESP_T_STRING &&
	       !strcmp(v->elem[0].str, "a"));
	EXPECT(v->elem[1].type == RESP_T_INTEGER && v->elem[1].integer == -7);
	resp_value_free(&keel_alloc_libc, v);
	REPLY("(3492890328409238509324850943850943825024385\r\n");
	EXPECT(v->type == RESP_T_BIGNUM && v->len == 43);
	resp_value_free(&keel_alloc_libc, v);
	REPLY(",-inf\r\n");
	EXPECT(v->type == RESP_T_DOUBLE && isinf(v->dbl) && v->dbl < 0);
	resp_value_free(&keel_alloc_libc, v);
	REPLY(",1.25e2\r\n");
	EXPECT(v->type == RESP_T_DOUBLE && v->dbl == 125.0);
	resp_value_free(&keel_alloc_libc, v);
	REPLY("#t\r\n");
	EXPECT(v->type == RESP_T_BOOL && v->integer == 1);
	resp_value_free(&keel_alloc_libc, v);
	REPLY("!21\r\nSYNTAX invalid syntax\r\n");
	EXPECT(v->type == RESP_T_BLOB_ERROR && v->len == 21);
	resp_value_free(&keel_alloc_libc, v);
	REPLY(">2\r\n+a\r\n~1\r\n$0\r\n\r\n");
	EXPECT(v->type == RESP_T_PUSH && v->n == 2 &&
	       v->elem[1].type == RESP_T_SET && v->elem[1].n == 1 &&
	       v->elem[1].elem[0].type == RESP_T_BULK &&
	       v->elem[1].elem[0].len == 0);
	resp_value_free(&keel_alloc_libc, v);
	REPLY("-ERR unknown command\r\n");
	EXPECT(v->type == RESP_T_ERROR && v->len == 19);
	resp_value_free(&keel_alloc_libc, v);
	/* Pipelined replies: one at a time. */
	size_t used;
	ASSERT(resp_reply_parse(NULL, &keel_alloc_libc,
				(const uint8_t *)":1\r\n:2\r\n", 8, &used, &v,
				NULL) == RESP_OK);
	EXPECT(used == 4 && v->integer == 1);
	resp_value_free(&keel_alloc_libc, v);
#undef REPLY
}

static const struct {
	const char *in;
	size_t len;
	const char *msg;
} bad_replies[] = {
    {S("?\r\n"), "Protocol error: invalid reply type byte"},
    {S("$-2\r\n"), "Protocol error: invalid bulk length"},
    {S("*-2\r\n"), "Protocol error: invalid aggregate length"},
    {S("%-1\r\n"), "Protocol error: invalid aggregate length"},
    {S("$abc\r\n"), "Protocol error: invalid length"},
    {S("$0123456789012345678901234567\r\n"), "Protocol error: invalid length"},
    {S(":12a\r\n"), "Protocol error: invalid integer"},
    {S(":\r\n"), "Protocol error: invalid integer"},
    {S("+OK\n"), "Protocol error: LF without CR in line"},
    {S("+OK\rX"), "Protocol error: CR not followed by LF"},
    {S("$3\r\nabcX\r\n"), "Protocol error: bulk not followed by CRLF"},
    {S("$3\r\nabc\nX"), "Protocol error: bulk not followed by CRLF"},
    {S("#x\r\n"), "Protocol error: invalid boolean"},
    {S(",1.2.3\r\n"), "Protocol error: invalid double"},
    {S(",.5\r\n"), "Protocol error: invalid double"},
    {S("=3\r\nabc\r\n"), "Protocol error: invalid verbatim string"},
    {S("_x\r\n"), "Protocol error: invalid null"},
    {S("(12a\r\n"), "Protocol error: invalid big number"},
    {S("*2000000000\r\n"), "Protocol error: aggregate length over limit"},
    {S("%10000000\r\n"), "Protocol error: too many elements"},
    {S("$999999999999\r\n"), "Protocol error: bulk length over limit"},
    {S("*2\r\n:1\r\n!\r\n"), "Protocol error: invalid length"},
};

TEST(reply_parse_rejects_malformed)
{
	struct count_alloc ca = {.fail_over = 1};
	struct keel_alloc a = ca_make(&ca);
	for (size_t i = 0; i < KEEL_ARRAY_LEN(bad_replies); i++) {
		struct resp_value *v = NULL;
		const char *err = NULL;
		size_t used = 99;
		int rc = resp_reply_parse(NULL, &a,
					  (const uint8_t *)bad_replies[i].in,
					  bad_replies[i].len, &used, &v, &err);
		EXPECT(rc == RESP_ERR_PROTOCOL);
		EXPECT(v == NULL && used == 0);
		if (!err || strcmp(err, bad_replies[i].msg))
			fprintf(stderr, "  case %zu: %s\n", i, err ? err : "-");
		EXPECT(err && !strcmp(err, bad_replies[i].msg));
	}
	EXPECT(ca.calls == 0);

	/* Depth bomb: 33 nested arrays against the default depth of 32, and
	 * the same at 32 is fine. */
	char bomb[400];
	size_t n = 0;
	for (int d = 0; d < 33; d++)
		n += (size_t)snprintf(bomb + n, sizeof(bomb) - n, "*1\r\n");
	n += (size_t)snprintf(bomb + n, sizeof(bomb) - n, ":1\r\n");
	struct resp_value *v;
	const char *err = NULL;
	EXPECT(parse_reply(bomb, n, &v, &err) == RESP_ERR_PROTOCOL);
	EXPECT(err && !strcmp(err, "Protocol error: reply nested too deeply"));
	EXPECT(parse_reply(bomb + 4, n - 4, &v, &err) == RESP_OK);
	resp_value_free(&keel_alloc_libc, v);

	/* A valid reply's every strict prefix needs more, and allocates
	 * nothing. */
	const char ok[] = "*3\r\n$5\r\nhello\r\n%1\r\n+k\r\n,1.5\r\n_\r\n";
	ca = (struct count_alloc){0};
	for (size_t k = 0; k + 1 < sizeof(ok); k++) {
		size_t used;
		EXPECT(resp_reply_parse(NULL, &a, (const uint8_t *)ok, k, &used,
					&v, &err) == RESP_NEED_MORE);
	}
	EXPECT(ca.calls == 0);
}

/* Random reply trees, encoded and parsed back. */
struct tree_pool {
	struct resp_value nodes[4096];
	size_t used;
	char strs[1 << 16];
	size_t sused;
};

static char *pool_str(struct tree_pool *tp, size_t n)
{
	if (tp->sused + n + 1 > sizeof(tp->strs))
		return NULL;
	char *s = tp->strs + tp->sused;
	tp->sused += n + 1;
	s[n] = 0;
	return s;
}

static void gen_value(struct keel_rand *r, struct tree_pool *tp,
		      struct resp_value *v, int depth)
{
	memset(v, 0, sizeof(*v));
	int t = 1 + (int)keel_rand_below(r, RESP_T_BLOB_ERROR);
	bool agg = t == RESP_T_ARRAY || t == RESP_T_MAP || t == RESP_T_SET ||
		   t == RESP_T_PUSH;
	if (agg && (depth >= 4 || tp->used + 16 > KEEL_ARRAY_LEN(tp->nodes)))
		t = RESP_T_BULK;
	v->type = t;
	size_t n = keel_rand_below(r, 12);
	char *s = NULL;
	switch (t) {
	case RESP_T_STRING:
	case RESP_T_ERROR:
		s = pool_str(tp, n);
		if (!s)
			n = 0, s = pool_str(tp, 0);
		for (size_t i = 0; i < n; i++) /* no CR or LF */
			s[i] = (char)(' ' + keel_rand_below(r, 95));
		break;
	case RESP_T_BULK:
	case RESP_T_BLOB_ERROR:
	case RESP_T_VERBATIM:
		s = pool_str(tp, n);
		if (!s)
			n = 0, s = pool_str(tp, 0);
		for (size_t i = 0; i < n; i++)
			s[i] = (char)keel_rand_below(r, 256);
		memcpy(v->format, "txt", 4);
		break;
	case RESP_T_BIGNUM:
		s = pool_str(tp, n + 1);
		if (!s)
			n = 0, s = pool_str(tp, 1);
		s[0] = n && keel_rand_chance(r, 1, 2) ? '-' : '1';
		for (size_t i = 1; i <= n; i++)
			s[i] = (char)('0' + keel_rand_below(r, 10));
		n++;
		break;
	case RESP_T_INTEGER:
		v->integer = (int64_t)keel_rand_next(r);
		break;
	case RESP_T_BOOL:
		v->integer = keel_rand_chance(r, 1, 2);
		break;
	case RESP_T_DOUBLE: {
		uint64_t bits = keel_rand_next(r);
		memcpy(&v->dbl, &bits, sizeof(v->dbl));
		if (keel_rand_chance(r, 1, 4))
			v->dbl = (double)(int64_t)keel_rand_below(r, 1000) / 8;
		break;
	}
	case RESP_T_NULL:
		break;
	default: { /* aggregates */
		size_t k = keel_rand_below(r, 5);
		if (t == RESP_T_MAP)
			k *= 2;
		v->n = k;
		v->elem = &tp->nodes[tp->used];
		tp->used += k;
		for (size_t i = 0; i < k; i++)
			gen_value(r, tp, &v->elem[i], depth + 1);
		return;
	}
	}
	v->str = s;
	v->len = s ? n : 0;
}

/* Does parsed b equal what original a should read back as in proto? */
static bool same_value(const struct resp_value *a, const struct resp_value *b,
		       int proto)
{
	int want = a->type;
	if (proto == 2) {
		switch (a->type) {
		case RESP_T_MAP:
		case RESP_T_SET:
		case RESP_T_PUSH:
			want = RESP_T_ARRAY;
			break;
		case RESP_T_DOUBLE:
		case RESP_T_VERBATIM:
		case RESP_T_BIGNUM:
			want = RESP_T_BULK;
			break;
		case RESP_T_BOOL:
			want = RESP_T_INTEGER;
			break;
		case RESP_T_BLOB_ERROR:
			want = RESP_T_ERROR;
			break;
		default:
			break;
		}
	}
	if (b->type != want)
		return false;
	switch (a->type) {
	case RESP_T_INTEGER:
	case RESP_T_BOOL:
		return a->integer == b->integer;
	case RESP_T_NULL:
		return true;
	case RESP_T_DOUBLE:
		if (proto == 3)
			return (isnan(a->dbl) && isnan(b->dbl)) ||
			       (a->dbl == b->dbl &&
				signbit(a->dbl) == signbit(b->dbl));
		else {
			char txt[RESP_DOUBLE_MAX_CHARS];
			size_t n = resp_format_double(a->dbl, txt);
			return b->len == n && !memcmp(b->str, txt, n);
		}
	case RESP_T_BLOB_ERROR:
		if (proto == 2) { /* CR and LF become spaces */
			if (b->len != a->len)
				return false;
			for (size_t i = 0; i < a->len; i++) {
				char c = a->str[i];
				if (c == '\r' || c == '\n')
					c = ' ';
				if (b->str[i] != c)
					return false;
			}
			return true;
		}
		/* fall through */
	case RESP_T_STRING:
	case RESP_T_ERROR:
	case RESP_T_BULK:
	case RESP_T_BIGNUM:
		return a->len == b->len && !memcmp(a->str, b->str, a->len) &&
		       b->str[b->len] == 0;
	case RESP_T_VERBATIM:
		return a->len == b->len && !memcmp(a->str, b->str, a->len) &&
		       (proto == 2 || !strcmp(b->format, "txt"));
	default:
		if (a->n != b->n)
			return false;
		for (size_t i = 0; i < a->n; i++)
			if (!same_value(&a->elem[i], &b->elem[i], proto))
				return false;
		return true;
	}
}

TEST(reply_encode_parse_roundtrip_random)
{
	struct keel_rand r;
	uint64_t seed = test_seed(424242);
	keel_rand_seed(&r, seed);
	static struct tree_pool tp;
	for (int iter = 0; iter < 2000; iter++) {
		tp.used = 0;
		tp.sused = 0;
		struct resp_value root;
		gen_value(&r, &tp, &root, 0);
		for (int proto = 2; proto <= 3; proto++) {
			struct resp_buf b;
			resp_buf_init(&b, &keel_alloc_libc, 1 << 22, proto);
			resp_write_value(&b, &root);
			ASSERT(!b.failed);
			struct resp_value *v = NULL;
			size_t used;
			const char *err = "";
			int rc =
			    resp_reply_parse(NULL, &keel_alloc_libc, b.data,
					     b.len, &used, &v, &err);
			if (rc != RESP_OK || used != b.len ||
			    !same_value(&root, v, proto)) {
				fprintf(stderr,
					"  iter %d RESP%d rc=%d %s: %.*s\n",
					iter, proto, rc, err, (int)b.len,
					(const char *)b.data);
				EXPECT(0);
				resp_value_free(&keel_alloc_libc, v);
				resp_buf_close(&b);
				return;
			}
			/* A prefix is never a complete reply. */
			size_t cut = keel_rand_below(&r, b.len);
			struct resp_value *w = NULL;
			EXPECT(resp_reply_parse(NULL, &keel_alloc_libc, b.data,
						cut, &used, &w,
						&err) == RESP_NEED_MORE);
			/* Re-encoding what was parsed is byte-identical. */
			struct resp_buf b2;
			resp_buf_init(&b2, &keel_alloc_libc, 1 << 22, proto);
			resp_write_value(&b2, v);
			if (proto == 3)
				EXPECT(b2.len == b.len &&
				       !memcmp(b2.data, b.data, b.len));
			resp_buf_close(&b2);
			resp_value_free(&keel_alloc_libc, v);
			resp_buf_close(&b);
		}
	}
}
