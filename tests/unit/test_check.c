/*
 * test_check.c -- tests of the linearizability checker (src/check/):
 * hand-written histories with known verdicts (each names the behaviour it
 * guards: stale reads, lost writes, cas semantics, indeterminate ops that
 * must be allowed to take effect late or never, fail ops), the parsers'
 * error paths with exact codes and line numbers, the explanation of a
 * failure, the stop callback and step budget, allocation failures, and a
 * randomized test: histories produced by a simulated linearizable store
 * must pass, and the same history with one read corrupted to a value
 * nobody wrote must fail.
 *
 * Histories are written in a compact line language turned into keel's JSON
 * lines by to_jsonl(): "PROC TYPE F [k=KEY] [VALUE-JSON]", e.g.
 *   "0 invoke cas k=a [1,2]"   "0 ok read 1"   "1 info write"
 */
#include "keel/check.h"
#include "test.h"

/* ---- helpers ----------------------------------------------------------- */

#define BUF_MAX (1 << 16)

/* Turns compact lines (separated by ';' or '\n') into JSON lines. */
static void to_jsonl(const char *src, char *out, size_t cap)
{
	size_t o = 0;
	const char *p = src;
	while (*p) {
		while (*p == ' ' || *p == ';' || *p == '\n')
			p++;
		if (!*p)
			break;
		const char *end = p;
		while (*end && *end != ';' && *end != '\n')
			end++;
		char line[512];
		size_t n = (size_t)(end - p);
		if (n >= sizeof(line))
			abort();
		memcpy(line, p, n);
		line[n] = '\0';
		char proc[32], type[32], f[32], rest[400];
		rest[0] = '\0';
		int got = sscanf(line, "%31s %31s %31s %399[^\n]", proc, type, f,
				 rest);
		if (got < 3)
			abort();
		char key[64] = "";
		char *val = rest;
		if (!strncmp(rest, "k=", 2)) {
			char *sp = strchr(rest, ' ');
			size_t kl = sp ? (size_t)(sp - rest - 2) : strlen(rest) - 2;
			snprintf(key, sizeof(key), ",\"key\":\"%.*s\"", (int)kl,
				 rest + 2);
			val = sp ? sp + 1 : rest + strlen(rest);
		}
		char value[420] = "";
		if (*val)
			snprintf(value, sizeof(value), ",\"value\":%s", val);
		int w = snprintf(out + o, cap - o,
				 "{\"process\":%s,\"type\":\"%s\",\"f\":\"%s\""
				 "%s%s,\"time\":%zu}\n",
				 proc, type, f, key, value, o);
		if (w < 0 || (size_t)w >= cap - o)
			abort();
		o += (size_t)w;
		p = end;
	}
	out[o] = '\0';
}

struct outcome {
	int parse_rv;
	int run_rv;
	struct check_result res;
};

static struct outcome run_text(enum check_format format, const char *text,
			       const struct check_options *opts_in)
{
	struct outcome oc;
	memset(&oc, 0, sizeof(oc));
	struct check_history h;
	struct check_parse_error err;
	check_history_init(&h, &keel_alloc_libc);
	oc.parse_rv = check_parse(format, text, strlen(text), &h, &err);
	if (oc.parse_rv) {
		fprintf(stderr, "  parse error line %u: %s\n", err.line,
			err.msg);
	} else {
		struct check_options opts;
		memset(&opts, 0, sizeof(opts));
		if (opts_in)
			opts = *opts_in;
		oc.run_rv = check_history_run(&h, &opts, &keel_alloc_libc,
					      &oc.res);
	}
	check_history_close(&h);
	return oc;
}

static enum check_verdict verdict_of(enum check_format format,
				     const char *compact_or_raw)
{
	static char buf[BUF_MAX];
	const char *text = compact_or_raw;
	if (format == CHECK_FORMAT_JSONL) {
		to_jsonl(compact_or_raw, buf, sizeof(buf));
		text = buf;
	}
	struct outcome oc = run_text(format, text, NULL);
	if (oc.parse_rv || oc.run_rv)
		return (enum check_verdict)99;
	return oc.res.verdict;
}

#define LIN CHECK_LINEARIZABLE
#define BAD CHECK_NOT_LINEARIZABLE

/* ---- verdicts on hand-written histories -------------------------------- */

struct verdict_case {
	const char *name;
	enum check_format format;
	const char *history;
	enum check_verdict want;
};

static const struct verdict_case verdict_cases[] = {
	{"empty history", CHECK_FORMAT_JSONL, "", LIN},
	{"read of absent key is null", CHECK_FORMAT_JSONL,
	 "0 invoke read; 0 ok read null", LIN},
	{"read of absent key is not 0", CHECK_FORMAT_JSONL,
	 "0 invoke read; 0 ok read 0", BAD},
	{"write then read", CHECK_FORMAT_JSONL,
	 "0 invoke write 1; 0 ok write 1; 1 invoke read; 1 ok read 1", LIN},
	{"stale read after a completed overwrite", CHECK_FORMAT_JSONL,
	 "0 invoke write 1; 0 ok write 1; 0 invoke write 2; 0 ok write 2;"
	 "1 invoke read; 1 ok read 1",
	 BAD},
	{"concurrent read may see the old value", CHECK_FORMAT_JSONL,
	 "0 invoke write 1; 0 ok write 1; 0 invoke write 2; 1 invoke read;"
	 "1 ok read 1; 0 ok write 2",
	 LIN},
	{"concurrent read may see the new value", CHECK_FORMAT_JSONL,
	 "0 invoke write 1; 0 ok write 1; 0 invoke write 2; 1 invoke read;"
	 "1 ok read 2; 0 ok write 2",
	 LIN},
	{"reads may not go back in time", CHECK_FORMAT_JSONL,
	 "0 invoke write 1; 0 ok write 1; 0 invoke write 2; 1 invoke read;"
	 "1 ok read 2; 2 invoke read; 2 ok read 1; 0 ok write 2",
	 BAD},
	{"lost write: a completed write is never seen", CHECK_FORMAT_JSONL,
	 "0 invoke write 1; 0 ok write 1; 1 invoke read; 1 ok read null", BAD},
	{"cas ok needs a matching compare", CHECK_FORMAT_JSONL,
	 "0 invoke write 1; 0 ok write 1; 0 invoke cas [5,6]; 0 ok cas [5,6]",
	 BAD},
	{"cas ok writes the new value", CHECK_FORMAT_JSONL,
	 "0 invoke write 1; 0 ok write 1; 0 invoke cas [1,2]; 0 ok cas [1,2];"
	 "1 invoke read; 1 ok read 2",
	 LIN},
	{"cas ok then stale read", CHECK_FORMAT_JSONL,
	 "0 invoke write 1; 0 ok write 1; 0 invoke cas [1,2]; 0 ok cas [1,2];"
	 "1 invoke read; 1 ok read 1",
	 BAD},
	{"two cas from the same value cannot both succeed", CHECK_FORMAT_JSONL,
	 "0 invoke write 1; 0 ok write 1; 1 invoke cas [1,2]; 2 invoke cas "
	 "[1,3]; 1 ok cas [1,2]; 2 ok cas [1,3]",
	 BAD},
	{"jsonl fail is dropped: a failed write never happened",
	 CHECK_FORMAT_JSONL,
	 "0 invoke write 1; 0 fail write 1; 1 invoke read; 1 ok read null",
	 LIN},
	{"jsonl fail is dropped even for cas", CHECK_FORMAT_JSONL,
	 "0 invoke write 1; 0 ok write 1; 0 invoke cas [1,2]; 0 fail cas "
	 "[1,2]; 1 invoke read; 1 ok read 1",
	 LIN},
	{"info write may take effect after its info line", CHECK_FORMAT_JSONL,
	 "0 invoke write 1; 0 info write; 1 invoke read; 1 ok read null;"
	 "1 invoke read; 1 ok read 1",
	 LIN},
	{"info write may take effect and be seen", CHECK_FORMAT_JSONL,
	 "0 invoke write 1; 0 info write; 1 invoke read; 1 ok read 1", LIN},
	{"info write may never take effect", CHECK_FORMAT_JSONL,
	 "0 invoke write 1; 0 info write; 1 invoke write 2; 1 ok write 2;"
	 "1 invoke read; 1 ok read 2",
	 LIN},
	{"info write cannot take effect before its invoke",
	 CHECK_FORMAT_JSONL,
	 "1 invoke read; 1 ok read 1; 0 invoke write 1; 0 info write", BAD},
	{"info write takes effect at most once", CHECK_FORMAT_JSONL,
	 "0 invoke write 1; 0 info write; 1 invoke read; 1 ok read 1;"
	 "1 invoke write 2; 1 ok write 2; 1 invoke read; 1 ok read 1",
	 BAD},
	{"an invoke with no completion may take effect", CHECK_FORMAT_JSONL,
	 "0 invoke write 7; 1 invoke read; 1 ok read 7", LIN},
	{"an info read is ignored", CHECK_FORMAT_JSONL,
	 "0 invoke read; 0 info read; 1 invoke read; 1 ok read null", LIN},
	{"info cas applies only if it matches", CHECK_FORMAT_JSONL,
	 "0 invoke write 1; 0 ok write 1; 0 invoke cas [5,6]; 0 info cas;"
	 "1 invoke read; 1 ok read 6",
	 BAD},
	{"info cas may apply", CHECK_FORMAT_JSONL,
	 "0 invoke write 1; 0 ok write 1; 0 invoke cas [1,6]; 0 info cas;"
	 "1 invoke read; 1 ok read 6",
	 LIN},
	{"incr from absent", CHECK_FORMAT_JSONL,
	 "0 invoke incr; 0 ok incr 1; 0 invoke incr 5; 0 ok incr 6;"
	 "1 invoke read; 1 ok read 6",
	 LIN},
	{"incr result must match", CHECK_FORMAT_JSONL,
	 "0 invoke incr; 0 ok incr 1; 0 invoke incr; 0 ok incr 3", BAD},
	{"incr value reads back as a string", CHECK_FORMAT_JSONL,
	 "0 invoke incr 41; 0 ok incr 41; 0 invoke incr; 0 ok incr 42;"
	 "1 invoke read; 1 ok read \"42\"",
	 LIN},
	{"append concatenates", CHECK_FORMAT_JSONL,
	 "0 invoke append \"ab\"; 0 ok append \"ab\"; 0 invoke append \"c\";"
	 "0 ok append \"c\"; 1 invoke read; 1 ok read \"abc\"",
	 LIN},
	{"appends apply in real-time order", CHECK_FORMAT_JSONL,
	 "0 invoke append \"ab\"; 0 ok append \"ab\"; 0 invoke append \"c\";"
	 "0 ok append \"c\"; 1 invoke read; 1 ok read \"cab\"",
	 BAD},
	{"concurrent appends in either order", CHECK_FORMAT_JSONL,
	 "0 invoke append \"ab\"; 1 invoke append \"c\"; 0 ok append \"ab\";"
	 "1 ok append \"c\"; 2 invoke read; 2 ok read \"cab\"",
	 LIN},
	{"del makes the key absent", CHECK_FORMAT_JSONL,
	 "0 invoke write 1; 0 ok write 1; 0 invoke del; 0 ok del;"
	 "1 invoke read; 1 ok read null",
	 LIN},
	{"read after del is not the old value", CHECK_FORMAT_JSONL,
	 "0 invoke write 1; 0 ok write 1; 0 invoke del; 0 ok del;"
	 "1 invoke read; 1 ok read 1",
	 BAD},
	{"keys are independent", CHECK_FORMAT_JSONL,
	 "0 invoke write k=a 1; 0 ok write k=a 1; 1 invoke read k=b;"
	 "1 ok read k=b null; 1 invoke read k=a; 1 ok read k=a 1",
	 LIN},
	{"a violation on one key of several", CHECK_FORMAT_JSONL,
	 "0 invoke write k=a 1; 0 ok write k=a 1; 1 invoke read k=b;"
	 "1 ok read k=b 1",
	 BAD},
	{"get and put are aliases", CHECK_FORMAT_JSONL,
	 "0 invoke put k=a \"x\"; 0 ok put k=a \"x\"; 1 invoke get k=a;"
	 "1 ok get k=a \"x\"",
	 LIN},

	/* Jepsen etcd: a failed cas ran and its compare did not match. */
	{"etcd: fail cas when the value differed", CHECK_FORMAT_ETCD,
	 "INFO  jepsen.util - 0\t:invoke\t:write\t1\n"
	 "INFO  jepsen.util - 0\t:ok\t:write\t1\n"
	 "INFO  jepsen.util - 0\t:invoke\t:cas\t[2 3]\n"
	 "INFO  jepsen.util - 0\t:fail\t:cas\t[2 3]\n",
	 LIN},
	{"etcd: fail cas when the value matched", CHECK_FORMAT_ETCD,
	 "INFO  jepsen.util - 0\t:invoke\t:write\t1\n"
	 "INFO  jepsen.util - 0\t:ok\t:write\t1\n"
	 "INFO  jepsen.util - 0\t:invoke\t:cas\t[1 3]\n"
	 "INFO  jepsen.util - 0\t:fail\t:cas\t[1 3]\n",
	 BAD},
	{"etcd: noise, nemesis and timed-out info lines", CHECK_FORMAT_ETCD,
	 "2016-01-01 noise line\n"
	 "INFO  jepsen.util - :nemesis\t:info\t:start\tnil\n"
	 "INFO  jepsen.util - 4\t:invoke\t:write\t3\n"
	 "INFO  jepsen.util - 4\t:info\t:write\t:timed-out\n"
	 "INFO  jepsen.util - 9\t:invoke\t:read\tnil\n"
	 "INFO  jepsen.util - 9\t:ok\t:read\t3\n"
	 "INFO  jepsen.util - 1\t:invoke\t:read\tnil\n"
	 "INFO  jepsen.util - 1\t:fail\t:read\t:timed-out\n",
	 LIN},
	{"etcd: register starts absent", CHECK_FORMAT_ETCD,
	 "INFO  jepsen.util - 0\t:invoke\t:read\tnil\n"
	 "INFO  jepsen.util - 0\t:ok\t:read\t0\n",
	 BAD},

	/* The kv lab: an absent key reads as "". */
	{"kv: absent key reads empty", CHECK_FORMAT_KV,
	 "{:process 0, :type :invoke, :f :get, :key \"1\", :value nil}\n"
	 "{:process 0, :type :ok, :f :get, :key \"1\", :value \"\"}\n",
	 LIN},
	{"kv: append then get", CHECK_FORMAT_KV,
	 "{:process 0, :type :invoke, :f :append, :key \"1\", :value \"x 0\"}\n"
	 "{:process 0, :type :ok, :f :append, :key \"1\", :value \"x 0\"}\n"
	 "{:process 1, :type :invoke, :f :get, :key \"1\", :value nil}\n"
	 "{:process 1, :type :ok, :f :get, :key \"1\", :value \"x 0\"}\n",
	 LIN},
	{"kv: put lost", CHECK_FORMAT_KV,
	 "{:process 0, :type :invoke, :f :put, :key \"1\", :value \"y\"}\n"
	 "{:process 0, :type :ok, :f :put, :key \"1\", :value \"y\"}\n"
	 "{:process 1, :type :invoke, :f :get, :key \"1\", :value nil}\n"
	 "{:process 1, :type :ok, :f :get, :key \"1\", :value \"\"}\n",
	 BAD},
};

TEST(hand_written_verdicts)
{
	for (size_t i = 0; i < KEEL_ARRAY_LEN(verdict_cases); i++) {
		const struct verdict_case *c = &verdict_cases[i];
		enum check_verdict got = verdict_of(c->format, c->history);
		if (got != c->want) {
			fprintf(stderr, "  case \"%s\": got %d, want %d\n",
				c->name, (int)got, (int)c->want);
			test_failed_now_ = 1;
		}
	}
}

/* ---- the explanation --------------------------------------------------- */

TEST(explanation_names_smallest_key_and_stuck_op)
{
	char buf[BUF_MAX];
	/* Key a fails with 4 ops, key b with 2: b is reported. The stale
	 * read on b is the op that cannot be placed. */
	to_jsonl("0 invoke write k=a 1; 0 ok write k=a 1; 0 invoke write k=a 2;"
		 "0 ok write k=a 2; 1 invoke read k=a; 1 ok read k=a 1;"
		 "0 invoke read k=a; 0 ok read k=a 2;"
		 "2 invoke write k=b 5; 2 ok write k=b 5; 3 invoke read k=b;"
		 "3 ok read k=b 6",
		 buf, sizeof(buf));
	struct check_history h;
	struct check_parse_error err;
	check_history_init(&h, &keel_alloc_libc);
	ASSERT(check_parse_jsonl(buf, strlen(buf), &h, &err) == 0);
	struct check_options opts;
	memset(&opts, 0, sizeof(opts));
	struct check_result res;
	ASSERT(check_history_run(&h, &opts, &keel_alloc_libc, &res) == 0);
	EXPECT(res.verdict == CHECK_NOT_LINEARIZABLE);
	EXPECT_EQ_U64(res.bad_key_ops, 2);
	EXPECT(h.keys[res.bad_key].len == 1 && h.keys[res.bad_key].str[0] == 'b');
	EXPECT_EQ_U64(res.prefix_len, 1);
	EXPECT_EQ_U64(res.n_prefix_tail, 1);
	EXPECT(h.ops[res.prefix_tail[0]].f == CHECK_F_WRITE);
	EXPECT(!strcmp(res.state_after_prefix, "5"));
	EXPECT_EQ_U64(res.n_stuck, 1);
	EXPECT(h.ops[res.stuck[0]].f == CHECK_F_READ);
	EXPECT(h.ops[res.stuck[0]].out.num == 6);
	EXPECT(res.stuck_why[0] == CHECK_STUCK_MODEL);
	EXPECT_EQ_U64(h.ops[res.stuck[0]].call_line, 11);
	check_history_close(&h);
}

/* ---- parsers ----------------------------------------------------------- */

struct parse_case {
	const char *name;
	enum check_format format;
	const char *text;
	int want_rv;
	uint32_t want_line;
};

#define J1 "{\"process\":0,\"type\":\"invoke\",\"f\":\"write\",\"value\":1}\n"

static const struct parse_case parse_cases[] = {
	{"jsonl ok", CHECK_FORMAT_JSONL, J1, 0, 0},
	{"jsonl unterminated object", CHECK_FORMAT_JSONL,
	 J1 "{\"process\":1,\"type\":\"invoke\"", KEEL_ERR_MALFORMED, 2},
	{"jsonl process too big", CHECK_FORMAT_JSONL,
	 "{\"process\":99999999999999999999,\"type\":\"invoke\",\"f\":\"read\"}",
	 KEEL_ERR_TOO_BIG, 1},
	{"jsonl value too big", CHECK_FORMAT_JSONL,
	 "{\"process\":1,\"type\":\"invoke\",\"f\":\"write\",\"value\":"
	 "-9223372036854775809}",
	 KEEL_ERR_TOO_BIG, 1},
	{"jsonl int64 min fits", CHECK_FORMAT_JSONL,
	 "{\"process\":1,\"type\":\"invoke\",\"f\":\"write\",\"value\":"
	 "-9223372036854775808}",
	 0, 0},
	{"jsonl float value", CHECK_FORMAT_JSONL,
	 "{\"process\":1,\"type\":\"invoke\",\"f\":\"write\",\"value\":1.5}",
	 KEEL_ERR_MALFORMED, 1},
	{"jsonl leading zero", CHECK_FORMAT_JSONL,
	 "{\"process\":01,\"type\":\"invoke\",\"f\":\"read\"}",
	 KEEL_ERR_MALFORMED, 1},
	{"jsonl bad escape", CHECK_FORMAT_JSONL,
	 "{\"process\":1,\"type\":\"invoke\",\"f\":\"write\",\"value\":\"\\x\"}",
	 KEEL_ERR_MALFORMED, 1},
	{"jsonl lone surrogate", CHECK_FORMAT_JSONL,
	 "{\"process\":1,\"type\":\"invoke\",\"f\":\"write\",\"value\":"
	 "\"\\ud800\"}",
	 KEEL_ERR_MALFORMED, 1},
	{"jsonl raw control char in string", CHECK_FORMAT_JSONL,
	 "{\"process\":1,\"type\":\"invoke\",\"f\":\"write\",\"value\":\"a\tb\"}",
	 KEEL_ERR_MALFORMED, 1},
	{"jsonl trailing text", CHECK_FORMAT_JSONL, J1 "{\"process\":1} x",
	 KEEL_ERR_MALFORMED, 2},
	{"jsonl not an object", CHECK_FORMAT_JSONL, J1 "[1,2]",
	 KEEL_ERR_MALFORMED, 2},
	{"jsonl unknown type", CHECK_FORMAT_JSONL,
	 "{\"process\":1,\"type\":\"done\",\"f\":\"read\"}", KEEL_ERR_MALFORMED,
	 1},
	{"jsonl unknown f", CHECK_FORMAT_JSONL,
	 "{\"process\":1,\"type\":\"invoke\",\"f\":\"frob\"}",
	 KEEL_ERR_MALFORMED, 1},
	{"jsonl missing f", CHECK_FORMAT_JSONL,
	 "{\"process\":1,\"type\":\"invoke\"}", KEEL_ERR_MALFORMED, 1},
	{"jsonl duplicate field", CHECK_FORMAT_JSONL,
	 "{\"process\":1,\"process\":2,\"type\":\"invoke\",\"f\":\"read\"}",
	 KEEL_ERR_MALFORMED, 1},
	{"jsonl array of three", CHECK_FORMAT_JSONL,
	 "{\"process\":1,\"type\":\"invoke\",\"f\":\"cas\",\"value\":[1,2,3]}",
	 KEEL_ERR_MALFORMED, 1},
	{"jsonl cas needs a pair", CHECK_FORMAT_JSONL,
	 "{\"process\":1,\"type\":\"invoke\",\"f\":\"cas\",\"value\":1}",
	 KEEL_ERR_MALFORMED, 1},
	{"jsonl write needs a value", CHECK_FORMAT_JSONL,
	 "{\"process\":1,\"type\":\"invoke\",\"f\":\"write\"}",
	 KEEL_ERR_MALFORMED, 1},
	{"jsonl completion without invoke", CHECK_FORMAT_JSONL,
	 J1 "{\"process\":5,\"type\":\"ok\",\"f\":\"write\",\"value\":1}",
	 KEEL_ERR_MALFORMED, 2},
	{"jsonl second invoke while open", CHECK_FORMAT_JSONL, J1 J1,
	 KEEL_ERR_MALFORMED, 2},
	{"jsonl completion of another f", CHECK_FORMAT_JSONL,
	 J1 "{\"process\":0,\"type\":\"ok\",\"f\":\"read\",\"value\":1}",
	 KEEL_ERR_MALFORMED, 2},
	{"jsonl read ok without value", CHECK_FORMAT_JSONL,
	 "{\"process\":0,\"type\":\"invoke\",\"f\":\"read\"}\n"
	 "{\"process\":0,\"type\":\"ok\",\"f\":\"read\"}",
	 KEEL_ERR_MALFORMED, 2},
	{"jsonl unknown fields of any shape are skipped", CHECK_FORMAT_JSONL,
	 "{\"x\":{\"a\":[1,2.5e3,{\"b\":null}],\"c\":true},\"process\":0,"
	 "\"type\":\"invoke\",\"f\":\"read\",\"node\":\"n1\\u00e9\"}",
	 0, 0},
	{"jsonl too deep", CHECK_FORMAT_JSONL,
	 "{\"x\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]"
	 "]]]]]]]]]]]]]]]],\"process\":0,\"type\":\"invoke\",\"f\":\"read\"}",
	 KEEL_ERR_TOO_BIG, 1},
	{"jsonl null key", CHECK_FORMAT_JSONL,
	 "{\"process\":0,\"type\":\"invoke\",\"f\":\"read\",\"key\":null}",
	 KEEL_ERR_MALFORMED, 1},
	{"jsonl blank lines and CRLF", CHECK_FORMAT_JSONL,
	 "\r\n\n{\"process\":0,\"type\":\"invoke\",\"f\":\"read\"}\r\n\n", 0,
	 0},
	{"kv unterminated map", CHECK_FORMAT_KV,
	 "{:process 0, :type :invoke, :f :get, :key \"1\", :value nil",
	 KEEL_ERR_MALFORMED, 1},
	{"kv process not a number", CHECK_FORMAT_KV,
	 "{:process 0, :type :invoke, :f :get, :key \"1\", :value nil}\n"
	 "{:process x, :type :invoke, :f :get, :key \"1\", :value nil}",
	 KEEL_ERR_MALFORMED, 2},
	{"kv unknown f", CHECK_FORMAT_KV,
	 "{:process 0, :type :invoke, :f :frob, :key \"1\", :value nil}",
	 KEEL_ERR_MALFORMED, 1},
	{"kv huge integer", CHECK_FORMAT_KV,
	 "{:process 123456789012345678901234, :type :invoke, :f :get}",
	 KEEL_ERR_TOO_BIG, 1},
	{"kv skips unknown nested fields", CHECK_FORMAT_KV,
	 "{:process 0, :extra {:a [1 (2 3)] :b \"s\\\"q\"}, :type :invoke, "
	 ":f :get, :key \"1\"}",
	 0, 0},
	{"kv control byte", CHECK_FORMAT_KV, "{:process 0, :x a\x01 b}",
	 KEEL_ERR_MALFORMED, 1},
	{"etcd unknown op", CHECK_FORMAT_ETCD,
	 "noise\nINFO  jepsen.util - 3\t:invoke\t:frob\tnil\n",
	 KEEL_ERR_MALFORMED, 2},
	{"etcd unknown type", CHECK_FORMAT_ETCD,
	 "INFO  jepsen.util - 3\t:maybe\t:read\tnil\n", KEEL_ERR_MALFORMED, 1},
	{"etcd value too big", CHECK_FORMAT_ETCD,
	 "INFO  jepsen.util - 3\t:invoke\t:write\t123456789012345678901234\n",
	 KEEL_ERR_TOO_BIG, 1},
	{"etcd cas with three elements", CHECK_FORMAT_ETCD,
	 "INFO  jepsen.util - 3\t:invoke\t:cas\t[1 2 3]\n", KEEL_ERR_MALFORMED,
	 1},
	{"etcd cas unterminated", CHECK_FORMAT_ETCD,
	 "INFO  jepsen.util - 3\t:invoke\t:cas\t[1 2\n", KEEL_ERR_MALFORMED, 1},
	{"etcd garbage value", CHECK_FORMAT_ETCD,
	 "INFO  jepsen.util - 3\t:invoke\t:write\t12ab\n", KEEL_ERR_MALFORMED,
	 1},
	{"etcd truncated event", CHECK_FORMAT_ETCD,
	 "INFO  jepsen.util - 3\t:invoke\n", KEEL_ERR_MALFORMED, 1},
	{"autodetect failure", CHECK_FORMAT_AUTO, "hello\nworld\n",
	 KEEL_ERR_MALFORMED, 0},
};

TEST(parser_errors_have_codes_and_lines)
{
	for (size_t i = 0; i < KEEL_ARRAY_LEN(parse_cases); i++) {
		const struct parse_case *c = &parse_cases[i];
		struct check_history h;
		struct check_parse_error err;
		check_history_init(&h, &keel_alloc_libc);
		int rv = check_parse(c->format, c->text, strlen(c->text), &h,
				     &err);
		if (rv != c->want_rv || (rv && err.line != c->want_line) ||
		    (rv && !err.msg[0])) {
			fprintf(stderr,
				"  case \"%s\": rv %d line %u (%s), want rv %d "
				"line %u\n",
				c->name, rv, err.line, err.msg, c->want_rv,
				c->want_line);
			test_failed_now_ = 1;
		}
		check_history_close(&h);
	}
}

TEST(parser_values_decode)
{
	const char *text =
		"{\"process\":7,\"type\":\"invoke\",\"f\":\"cas\",\"key\":12,"
		"\"value\":[\"a\\u00e9\\ud83d\\ude00\\n\",null],\"time\":-5}\n"
		"{\"process\":7,\"type\":\"ok\",\"f\":\"cas\",\"time\":9}\n";
	struct check_history h;
	struct check_parse_error err;
	check_history_init(&h, &keel_alloc_libc);
	ASSERT(check_parse(CHECK_FORMAT_AUTO, text, strlen(text), &h, &err) ==
	       0);
	EXPECT(h.format == CHECK_FORMAT_JSONL);
	ASSERT(h.n_ops == 1);
	const struct check_op *o = &h.ops[0];
	EXPECT(o->process == 7);
	EXPECT(o->f == CHECK_F_CAS);
	EXPECT(o->outcome == CHECK_OUT_OK);
	EXPECT(o->arg.kind == CHECK_VAL_STR);
	EXPECT(o->arg.len == 8 &&
	       !memcmp(o->arg.str, "a\xc3\xa9\xf0\x9f\x98\x80\n", 8));
	EXPECT(o->arg2.kind == CHECK_VAL_NIL);
	EXPECT(o->has_time && o->call_time == -5 && o->ret_time == 9);
	EXPECT(h.keys[o->key].len == 2 && !memcmp(h.keys[o->key].str, "12", 2));
	EXPECT(o->call_line == 1 && o->ret_line == 2);
	check_history_close(&h);

	/* Formats detect from the first line. */
	EXPECT(check_detect_format("\n{:process 1}", 13) == CHECK_FORMAT_KV);
	EXPECT(check_detect_format("x\nINFO jepsen.util - 1", 22) ==
	       CHECK_FORMAT_ETCD);
	EXPECT(check_detect_format(" { \"a\"", 6) == CHECK_FORMAT_JSONL);
}

TEST(parser_drops_fail_and_keeps_info)
{
	struct check_history h;
	struct check_parse_error err;
	char buf[BUF_MAX];
	to_jsonl("0 invoke write 1; 0 fail write; 1 invoke write 2; 1 info write;"
		 "2 invoke read; 2 info read; 3 invoke cas [1,2]; 4 invoke read",
		 buf, sizeof(buf));
	check_history_init(&h, &keel_alloc_libc);
	ASSERT(check_parse_jsonl(buf, strlen(buf), &h, &err) == 0);
	/* Left: the info write and the open cas; dropped: the failed write
	 * and both reads with no result. */
	EXPECT_EQ_U64(h.n_ops, 2);
	EXPECT_EQ_U64(h.n_dropped, 3);
	for (size_t i = 0; i < h.n_ops; i++) {
		EXPECT(h.ops[i].outcome == CHECK_OUT_INFO);
		EXPECT(h.ops[i].ret_seq == CHECK_SEQ_INF);
	}
	check_history_close(&h);
}

TEST(register_model_refuses_kv_ops)
{
	char buf[BUF_MAX];
	to_jsonl("0 invoke append \"a\"; 0 ok append \"a\"", buf, sizeof(buf));
	struct check_options opts;
	memset(&opts, 0, sizeof(opts));
	opts.model = CHECK_MODEL_REGISTER;
	struct outcome oc = run_text(CHECK_FORMAT_JSONL, buf, &opts);
	EXPECT(oc.parse_rv == 0);
	EXPECT(oc.run_rv == KEEL_ERR_INVAL);
	EXPECT(strstr(oc.res.reason, "append") != NULL);
	opts.model = CHECK_MODEL_KV;
	oc = run_text(CHECK_FORMAT_JSONL, buf, &opts);
	EXPECT(oc.run_rv == 0 && oc.res.verdict == CHECK_LINEARIZABLE);
}

/* ---- memoisation, budget and stop -------------------------------------- */

/* n concurrent writes of the same value then a read of another: without
 * the memo cache the search tries all n! orders; with it, 2^n sets. */
static void many_same_writes(char *buf, size_t cap, int n)
{
	char compact[8192];
	size_t o = 0;
	for (int i = 0; i < n; i++)
		o += (size_t)snprintf(compact + o, sizeof(compact) - o,
				      "%d invoke write 1;", i);
	for (int i = 0; i < n; i++)
		o += (size_t)snprintf(compact + o, sizeof(compact) - o,
				      "%d ok write 1;", i);
	snprintf(compact + o, sizeof(compact) - o,
		 "99 invoke read; 99 ok read 2");
	to_jsonl(compact, buf, cap);
}

TEST(memo_cache_makes_symmetric_histories_cheap)
{
	char buf[BUF_MAX];
	many_same_writes(buf, sizeof(buf), 13);
	struct check_options opts;
	memset(&opts, 0, sizeof(opts));
	opts.step_budget = 2000000; /* 13! would be 6e9 */
	struct outcome oc = run_text(CHECK_FORMAT_JSONL, buf, &opts);
	EXPECT(oc.run_rv == 0);
	EXPECT(oc.res.verdict == CHECK_NOT_LINEARIZABLE);
	EXPECT(oc.res.prefix_len == 13);
}

static int stop_calls;
static bool stop_after_two(void *ctx)
{
	(void)ctx;
	return ++stop_calls >= 2;
}

TEST(step_budget_and_stop_callback_give_undecided)
{
	char buf[BUF_MAX];
	many_same_writes(buf, sizeof(buf), 13);
	struct check_options opts;
	memset(&opts, 0, sizeof(opts));
	opts.step_budget = 50;
	struct outcome oc = run_text(CHECK_FORMAT_JSONL, buf, &opts);
	EXPECT(oc.run_rv == 0);
	EXPECT(oc.res.verdict == CHECK_UNDECIDED);
	EXPECT(oc.res.steps <= 51);

	memset(&opts, 0, sizeof(opts));
	opts.should_stop = stop_after_two;
	opts.stop_every = 10;
	stop_calls = 0;
	oc = run_text(CHECK_FORMAT_JSONL, buf, &opts);
	EXPECT(oc.res.verdict == CHECK_UNDECIDED);
	EXPECT(stop_calls == 2);
	EXPECT(oc.res.steps == 20);

	/* A cache cap also ends in undecided, not a crash or a wrong
	 * verdict. */
	memset(&opts, 0, sizeof(opts));
	opts.max_cache_bytes = 60000;
	oc = run_text(CHECK_FORMAT_JSONL, buf, &opts);
	EXPECT(oc.run_rv == 0);
	EXPECT(oc.res.verdict == CHECK_UNDECIDED);
	EXPECT(strstr(oc.res.reason, "memo") != NULL);
}

/* ---- allocation failures ----------------------------------------------- */

struct fail_alloc {
	long countdown; /* fail when it reaches 0 */
	long live;
};

static void *fa_malloc(void *ctx, size_t n)
{
	struct fail_alloc *f = ctx;
	if (f->countdown-- == 0)
		return NULL;
	void *p = malloc(n);
	if (p)
		f->live++;
	return p;
}
static void *fa_realloc(void *ctx, void *p, size_t n)
{
	struct fail_alloc *f = ctx;
	if (f->countdown-- == 0)
		return NULL;
	void *q = realloc(p, n);
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

TEST(allocation_failures_are_reported_and_leak_nothing)
{
	char buf[BUF_MAX];
	to_jsonl("0 invoke write k=a \"x\\ny\"; 0 ok write k=a \"x\\ny\";"
		 "1 invoke append k=b \"q\"; 2 invoke read k=a;"
		 "2 ok read k=a \"x\\ny\"; 1 info append; 3 invoke incr k=c;"
		 "3 ok incr k=c 1",
		 buf, sizeof(buf));
	int completed = 0;
	for (long n = 0; n < 400 && !completed; n++) {
		struct fail_alloc fa = {.countdown = n, .live = 0};
		struct keel_alloc a = {&fa, fa_malloc, fa_realloc, fa_free};
		struct check_history h;
		struct check_parse_error err;
		check_history_init(&h, &a);
		int rv = check_parse_jsonl(buf, strlen(buf), &h, &err);
		if (rv) {
			EXPECT(rv == KEEL_ERR_NOMEM);
		} else {
			struct check_options opts;
			memset(&opts, 0, sizeof(opts));
			struct check_result res;
			rv = check_history_run(&h, &opts, &a, &res);
			EXPECT(rv == 0 || rv == KEEL_ERR_NOMEM);
			if (rv == 0) {
				EXPECT(res.verdict == CHECK_LINEARIZABLE);
				completed = fa.countdown >= 0;
			}
		}
		check_history_close(&h);
		EXPECT(fa.live == 0);
	}
	EXPECT(completed);
}

/* ---- randomized: a simulated linearizable store ------------------------ */

#define SIM_PROCS 5
#define SIM_KEYS 3

struct sim_val {
	bool is_str, present;
	int64_t num;
	char s[128];
};

struct sim_op {
	bool open, applied;
	int f, key;
	char invoke_value[160];
	char ok_value[160];
};

static void sim_val_json(const struct sim_val *v, char *out, size_t cap)
{
	if (!v->present)
		snprintf(out, cap, "null");
	else if (v->is_str)
		snprintf(out, cap, "\"%s\"", v->s);
	else
		snprintf(out, cap, "%lld", (long long)v->num);
}

/* Applies the op to the store at its linearization point and records what
 * its completion will report. */
static void sim_apply(struct keel_rand *r, struct sim_val *store,
		      struct sim_op *op)
{
	(void)r;
	struct sim_val *v = &store[op->key];
	op->applied = true;
	op->ok_value[0] = '\0';
	switch (op->f) {
	case CHECK_F_READ:
		sim_val_json(v, op->ok_value, sizeof(op->ok_value));
		break;
	case CHECK_F_WRITE:
		v->present = true;
		v->is_str = false;
		v->num = strtoll(op->invoke_value, NULL, 10);
		break;
	case CHECK_F_CAS: {
		long long e, n;
		sscanf(op->invoke_value, "[%lld,%lld]", &e, &n);
		if (v->present && !v->is_str && v->num == e) {
			v->num = n;
		} else {
			op->applied = false; /* compare failed: reported fail */
		}
		break;
	}
	case CHECK_F_INCR:
		if (v->present && v->is_str) {
			op->applied = false; /* Redis would refuse */
			break;
		}
		v->num = (v->present ? v->num : 0) + 1;
		v->present = true;
		v->is_str = false;
		snprintf(op->ok_value, sizeof(op->ok_value), "%lld",
			 (long long)v->num);
		break;
	case CHECK_F_APPEND: {
		char add[8];
		sscanf(op->invoke_value, "\"%7[a-e]\"", add);
		char cur[128] = "";
		if (v->present && v->is_str)
			snprintf(cur, sizeof(cur), "%s", v->s);
		else if (v->present)
			snprintf(cur, sizeof(cur), "%lld", (long long)v->num);
		if (strlen(cur) + strlen(add) >= sizeof(v->s) - 1) {
			op->applied = false;
			break;
		}
		v->present = true;
		v->is_str = true;
		size_t cl = strlen(cur);
		memcpy(v->s, cur, cl);
		memcpy(v->s + cl, add, strlen(add) + 1);
		break;
	}
	case CHECK_F_DEL:
		v->present = false;
		break;
	}
}

static size_t emit(char *out, size_t cap, size_t o, int proc,
		   const char *type, const struct sim_op *op,
		   const char *value)
{
	static const char *const names[] = {"read", "write", "cas",
					    "incr", "append", "del"};
	char key[32];
	snprintf(key, sizeof(key), "k%d", op->key);
	int w = snprintf(out + o, cap - o,
			 "{\"process\":%d,\"type\":\"%s\",\"f\":\"%s\","
			 "\"key\":\"%s\"%s%s,\"time\":%zu}\n",
			 proc, type, names[op->f], key, value[0] ? ",\"value\":" : "",
			 value, o);
	if (w < 0 || (size_t)w >= cap - o)
		abort();
	return o + (size_t)w;
}

/* Generates a linearizable history; records the byte offset of every read
 * ok line's value so one can be corrupted. */
static size_t sim_history(struct keel_rand *r, char *out, size_t cap,
			  size_t *read_offs, size_t *n_reads, int n_events)
{
	struct sim_val store[SIM_KEYS];
	struct sim_op ops[SIM_PROCS];
	int proc_id[SIM_PROCS];
	memset(store, 0, sizeof(store));
	memset(ops, 0, sizeof(ops));
	for (int p = 0; p < SIM_PROCS; p++)
		proc_id[p] = p;
	int next_proc = SIM_PROCS;
	size_t o = 0;
	*n_reads = 0;
	for (int ev = 0; ev < n_events; ev++) {
		int p = (int)keel_rand_below(r, SIM_PROCS);
		struct sim_op *op = &ops[p];
		if (!op->open) {
			memset(op, 0, sizeof(*op));
			op->open = true;
			op->f = (int)keel_rand_below(r, 6);
			op->key = (int)keel_rand_below(r, SIM_KEYS);
			switch (op->f) {
			case CHECK_F_WRITE:
				snprintf(op->invoke_value,
					 sizeof(op->invoke_value), "%d",
					 (int)keel_rand_below(r, 4));
				break;
			case CHECK_F_CAS:
				snprintf(op->invoke_value,
					 sizeof(op->invoke_value), "[%d,%d]",
					 (int)keel_rand_below(r, 4),
					 (int)keel_rand_below(r, 4));
				break;
			case CHECK_F_APPEND:
				snprintf(op->invoke_value,
					 sizeof(op->invoke_value), "\"%c\"",
					 'a' + (int)keel_rand_below(r, 5));
				break;
			default:
				break;
			}
			o = emit(out, cap, o, proc_id[p], "invoke", op,
				 op->invoke_value);
			continue;
		}
		if (!op->applied && keel_rand_chance(r, 2, 3)) {
			/* The linearization point, between invoke and
			 * completion, while other ops overlap. */
			sim_apply(r, store, op);
			if (!op->applied) { /* a refused cas/incr/append */
				op->open = false;
				o = emit(out, cap, o, proc_id[p], "fail", op,
					 "");
			}
			continue;
		}
		uint64_t roll = keel_rand_below(r, 10);
		if (roll == 0) {
			/* Indeterminate, applied or not; the process gets a
			 * new number, as in Jepsen. */
			o = emit(out, cap, o, proc_id[p], "info", op, "");
			op->open = false;
			proc_id[p] = next_proc++;
			continue;
		}
		if (!op->applied) {
			if (roll == 1) { /* failed before taking effect */
				o = emit(out, cap, o, proc_id[p], "fail", op,
					 "");
				op->open = false;
			}
			continue;
		}
		if (op->f == CHECK_F_READ) {
			read_offs[(*n_reads)++] = o;
		}
		o = emit(out, cap, o, proc_id[p], "ok", op,
			 op->f == CHECK_F_READ || op->f == CHECK_F_INCR
				 ? op->ok_value
				 : "");
		op->open = false;
	}
	out[o] = '\0';
	return o;
}

/* Replaces the value of the read ok line at off with a string nobody
 * writes (appends use only a-e; incr and write produce integers). */
static void corrupt_read(char *buf, size_t off, char *out, size_t cap)
{
	const char *line_end = strchr(buf + off, '\n');
	const char *val = strstr(buf + off, "\"value\":");
	if (!line_end || !val || val > line_end)
		abort();
	const char *val_end = strstr(val, ",\"time\"");
	snprintf(out, cap, "%.*s\"value\":\"zz-never\"%s", (int)(val - buf), buf,
		 val_end);
}

TEST(random_linearizable_histories_pass_and_corruptions_fail)
{
	uint64_t seed = test_seed(20261122);
	struct keel_rand r;
	keel_rand_seed(&r, seed);
	static char buf[BUF_MAX], bad[BUF_MAX];
	size_t read_offs[512];
	int corrupted = 0;
	for (int iter = 0; iter < 300; iter++) {
		size_t n_reads;
		int n_events = 20 + (int)keel_rand_below(&r, 260);
		sim_history(&r, buf, sizeof(buf), read_offs, &n_reads,
			    n_events);
		struct check_options opts;
		memset(&opts, 0, sizeof(opts));
		opts.step_budget = 50000000;
		struct outcome oc = run_text(CHECK_FORMAT_JSONL, buf, &opts);
		if (oc.parse_rv || oc.run_rv ||
		    oc.res.verdict != CHECK_LINEARIZABLE) {
			fprintf(stderr,
				"  iter %d: linearizable history judged %d "
				"(parse %d run %d):\n%s",
				iter, (int)oc.res.verdict, oc.parse_rv,
				oc.run_rv, buf);
			test_failed_now_ = 1;
			return;
		}
		if (!n_reads)
			continue;
		size_t pick = keel_rand_below(&r, n_reads);
		corrupt_read(buf, read_offs[pick], bad, sizeof(bad));
		oc = run_text(CHECK_FORMAT_JSONL, bad, &opts);
		corrupted++;
		if (oc.parse_rv || oc.run_rv ||
		    oc.res.verdict != CHECK_NOT_LINEARIZABLE) {
			fprintf(stderr,
				"  iter %d: corrupted history judged %d:\n%s",
				iter, (int)oc.res.verdict, bad);
			test_failed_now_ = 1;
			return;
		}
	}
	EXPECT(corrupted > 200);
}
