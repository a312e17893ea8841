/*
 * test_server.c -- the pure parts of `keel server`: option parsing (flags
 * and the config file give the same result; every bad value is refused
 * with a message naming it), the command table (every kv client command is
 * routed to the node with kv's arity; internal commands are hidden; Redis's
 * error texts), the reply queue (replies leave in request order whatever
 * order they complete in) and the KEEL-ID file codec and directory check.
 */
#include <sys/stat.h>
#include <unistd.h>

#include "test.h"

#include "keel/kv.h"
#include "keel/server.h"

static char err[512];

static int parse_argv(struct server_config *c, const char *const *args)
{
	char *argv[32];
	int argc = 0;
	argv[argc++] = (char *)"server";
	for (; *args; args++)
		argv[argc++] = (char *)*args;
	server_config_default(c);
	int rv = server_config_parse_args(c, argc, argv, err, sizeof(err));
	if (rv == 0)
		rv = server_config_check(c, err, sizeof(err));
	return rv;
}

TEST(config_flags_full)
{
	struct server_config c;
	const char *a[] = {"--id", "2", "--data-dir", "/tmp/d2",
			   "--cluster=1=127.0.0.1:7101,2=127.0.0.1:7102,3=[::1]:7103",
			   "--cluster-id", "42", "--client-addr", "127.0.0.1:7002",
			   "--test-faults", "--log-level", "warn", NULL};
	ASSERT(parse_argv(&c, a) == 0);
	EXPECT_EQ_U64(c.id, 2);
	EXPECT_EQ_U64(c.cluster_id, 42);
	EXPECT_EQ_U64(c.n_members, 3);
	EXPECT(!strcmp(c.members[2].addr, "[::1]:7103"));
	EXPECT_EQ_U64(c.members[2].id, 3);
	EXPECT(!strcmp(c.peer_addr, "127.0.0.1:7102")); /* from --cluster */
	EXPECT(!strcmp(c.client_addr, "127.0.0.1:7002"));
	EXPECT(!strcmp(c.data_dir, "/tmp/d2"));
	EXPECT(c.test_faults);
	EXPECT_EQ_U64(c.log_level, ENV_LOG_WARN);
}

TEST(config_peer_addr_overrides_cluster_entry)
{
	struct server_config c;
	const char *a[] = {"--id", "1", "--data-dir", "d", "--cluster",
			   "1=127.0.0.1:7101,2=127.0.0.1:7102", "--peer-addr",
			   "0.0.0.0:7101", NULL};
	ASSERT(parse_argv(&c, a) == 0);
	EXPECT(!strcmp(c.members[0].addr, "0.0.0.0:7101"));
}

TEST(config_file_equals_flags)
{
	const char text[] = "# a node\n"
			    "id = 3\n"
			    "  data-dir=/var/keel/3   \n"
			    "\n"
			    "cluster = 1=127.0.0.1:7101,2=127.0.0.1:7102,3=127.0.0.1:7103 # all\n"
			    "cluster-id = 7\r\n"
			    "client-addr = 127.0.0.1:7003\n"
			    "test-faults = true\n";
	struct server_config f, g;
	server_config_default(&f);
	ASSERT(server_config_parse_text(&f, text, sizeof(text) - 1, "x.conf", err,
					sizeof(err)) == 0);
	ASSERT(server_config_check(&f, err, sizeof(err)) == 0);
	const char *a[] = {"--id", "3", "--data-dir", "/var/keel/3", "--cluster",
			   "1=127.0.0.1:7101,2=127.0.0.1:7102,3=127.0.0.1:7103",
			   "--cluster-id", "7", "--client-addr", "127.0.0.1:7003",
			   "--test-faults", NULL};
	ASSERT(parse_argv(&g, a) == 0);
	EXPECT(memcmp(&f, &g, sizeof(f)) == 0);
}

TEST(config_flag_after_file_overrides_it)
{
	char path[] = "/tmp/keel-test-server-XXXXXX";
	int fd = mkstemp(path);
	ASSERT(fd >= 0);
	const char text[] = "id = 1\ndata-dir = a\ncluster = 1=127.0.0.1:7101\n"
			    "client-addr = 127.0.0.1:7001\n";
	ASSERT(write(fd, text, sizeof(text) - 1) == (ssize_t)(sizeof(text) - 1));
	close(fd);
	struct server_config c;
	const char *a[] = {"--client-addr", "127.0.0.1:9999", "--config", path,
			   "--data-dir", "b", NULL};
	ASSERT(parse_argv(&c, a) == 0);
	EXPECT(!strcmp(c.data_dir, "b"));                  /* flag after */
	EXPECT(!strcmp(c.client_addr, "127.0.0.1:7001")); /* file after flag */
	unlink(path);
	const char *m[] = {"--config", "/nonexistent/keel.conf", NULL};
	EXPECT(parse_argv(&c, m) == KEEL_ERR_IO);
	EXPECT(strstr(err, "/nonexistent/keel.conf") != NULL);
}

struct bad_case {
	const char *args[12];
	const char *needle; /* must appear in the message */
};

TEST(config_bad_values_are_refused_by_name)
{
	static const struct bad_case cases[] = {
		{{"--id", "0", NULL}, "--id: bad value '0'"},
		{{"--id", "x1", NULL}, "--id: bad value 'x1'"},
		{{"--id", "-3", NULL}, "--id: bad value '-3'"},
		{{"--bogus", "1", NULL}, "unknown option 'bogus'"},
		{{"--data-dir", "", NULL}, "--data-dir: bad value ''"},
		{{"--client-addr", "127.0.0.1", NULL}, "--client-addr: bad address '127.0.0.1'"},
		{{"--client-addr", "127.0.0.1:70000", NULL}, "bad address '127.0.0.1:70000'"},
		{{"--client-addr", "example.com:80", NULL}, "bad address 'example.com:80'"},
		{{"--cluster", "1=127.0.0.1:1,1=127.0.0.1:2", NULL}, "node 1 listed twice"},
		{{"--cluster", "1:127.0.0.1:1", NULL}, "bad member '1:127.0.0.1:1'"},
		{{"--cluster", "x=127.0.0.1:1", NULL}, "bad node id 'x'"},
		{{"--cluster", "1=127.0.0.1:1,", NULL}, "trailing ','"},
		{{"--cluster", "1=nohost", NULL}, "bad address 'nohost' for node 1"},
		{{"--log-level", "loud", NULL}, "--log-level: bad value 'loud'"},
		{{"--tick-ms", "0", NULL}, "--tick-ms: bad value '0'"},
		{{"--snapshot-entries", "0", NULL}, "--snapshot-entries: bad value '0'"},
		{{"--snapshot-entries", "4294967296", NULL},
		 "--snapshot-entries: bad value '4294967296'"},
		{{"--test-faults=maybe", NULL}, "--test-faults: bad value 'maybe'"},
		{{"--id", NULL}, "--id needs a value"},
		{{"stray", NULL}, "unexpected argument 'stray'"},
		{{"--data-dir", "d", "--cluster", "1=127.0.0.1:1", NULL}, "missing --id"},
		{{"--id", "1", "--cluster", "1=127.0.0.1:1", NULL}, "missing --data-dir"},
		{{"--id", "1", "--data-dir", "d", NULL}, "missing --cluster"},
		{{"--id", "4", "--data-dir", "d", "--cluster", "1=127.0.0.1:1", NULL},
		 "node 4 is not in --cluster"},
		{{"--id", "1", "--data-dir", "d", "--cluster", "1=127.0.0.1:1",
		  "--client-addr", "127.0.0.1:1", NULL},
		 "both 127.0.0.1:1"},
		{{"--id", "1", "--data-dir", "d", "--cluster", "1=127.0.0.1:1",
		  "--heartbeat-ticks", "40", NULL},
		 "must be below --election-ticks"},
	};
	for (size_t i = 0; i < KEEL_ARRAY_LEN(cases); i++) {
		struct server_config c;
		err[0] = 0;
		int rv = parse_argv(&c, cases[i].args);
		if (rv == 0 || !strstr(err, cases[i].needle)) {
			fprintf(stderr, "  case %zu: rv=%d err='%s' want '%s'\n", i, rv,
				err, cases[i].needle);
			test_failed_now_ = 1;
		}
	}
}

TEST(config_snapshot_entries_reaches_the_config)
{
	struct server_config c;
	const char *a[] = {"--id", "1", "--data-dir", "d", "--cluster",
			   "1=127.0.0.1:1", NULL};
	ASSERT(parse_argv(&c, a) == 0);
	EXPECT_EQ_U64(c.snapshot_entries, 0); /* the node's default */
	const char *b[] = {"--id", "1", "--data-dir", "d", "--cluster",
			   "1=127.0.0.1:1", "--snapshot-entries", "500", NULL};
	ASSERT(parse_argv(&c, b) == 0);
	EXPECT_EQ_U64(c.snapshot_entries, 500);
	EXPECT_EQ_U64(c.snapshot_log_bytes, 0);
	const char *d[] = {"--id", "1", "--data-dir", "d", "--cluster",
			   "1=127.0.0.1:1", "--snapshot-log-bytes", "1048576", NULL};
	ASSERT(parse_argv(&c, d) == 0);
	EXPECT_EQ_U64(c.snapshot_log_bytes, 1048576);
	const char *e[] = {"--id", "1", "--data-dir", "d", "--cluster",
			   "1=127.0.0.1:1", "--snapshot-log-bytes", "100", NULL};
	EXPECT(parse_argv(&c, e) != 0); /* below 4 KiB: refused */
}

TEST(config_file_errors_name_file_and_line)
{
	struct server_config c;
	server_config_default(&c);
	const char t1[] = "id = 1\nnot a pair\n";
	EXPECT(server_config_parse_text(&c, t1, sizeof(t1) - 1, "k.conf", err,
					sizeof(err)) != 0);
	EXPECT(strstr(err, "k.conf:2:") != NULL);
	const char t2[] = "\n\nid = zero\n";
	EXPECT(server_config_parse_text(&c, t2, sizeof(t2) - 1, "k.conf", err,
					sizeof(err)) != 0);
	EXPECT(strstr(err, "k.conf:3: --id: bad value 'zero'") != NULL);
	const char t3[] = "config = other.conf\n";
	EXPECT(server_config_parse_text(&c, t3, sizeof(t3) - 1, "k.conf", err,
					sizeof(err)) != 0);
	EXPECT(strstr(err, "cannot be nested") != NULL);
}

/* ---- command table -------------------------------------------------------- */

TEST(commands_every_kv_client_command_routes_to_node)
{
	for (size_t i = 0; i < kv_commands_count; i++) {
		const struct kv_command *k = &kv_commands[i];
		const struct server_command *c = server_command_lookup(
			(const uint8_t *)k->name, strlen(k->name));
		if (k->flags & (KV_CMD_INTERNAL | KV_CMD_SERVER)) {
			/* a client may never propose these: the leader's
			 * own, or what the server builds for EXEC/WATCH */
			EXPECT(c == NULL);
			continue;
		}
		ASSERT(c != NULL);
		EXPECT(c->handler == SERVER_H_NODE);
		EXPECT(c->arity == k->arity);
		EXPECT(!!(c->flags & SERVER_CMD_WRITE) == !!(k->flags & KV_CMD_WRITE));
		EXPECT(!!(c->flags & SERVER_CMD_READ) == !!(k->flags & KV_CMD_READ));
	}
	const char *local[] = {"ping", "echo", "hello", "select", "quit", "client",
			       "command", "info", "readonly", "readwrite"};
	for (size_t i = 0; i < KEEL_ARRAY_LEN(local); i++) {
		const struct server_command *c = server_command_lookup(
			(const uint8_t *)local[i], strlen(local[i]));
		ASSERT(c != NULL);
		EXPECT(c->flags & SERVER_CMD_LOCAL);
		EXPECT(c->handler != SERVER_H_NODE);
	}
	/* Transactions: local rows (EXEC is one KEEL.EXEC write, WATCH a
	 * KEEL.WATCH-REVS read, both built by the server), Redis's arity. */
	static const struct { const char *name; int arity; int h; } txn[] = {
		{"multi", 1, SERVER_H_MULTI},     {"exec", 1, SERVER_H_EXEC},
		{"discard", 1, SERVER_H_DISCARD}, {"watch", -2, SERVER_H_WATCH},
		{"unwatch", 1, SERVER_H_UNWATCH},
	};
	for (size_t i = 0; i < KEEL_ARRAY_LEN(txn); i++) {
		const struct server_command *c = server_command_lookup(
			(const uint8_t *)txn[i].name, strlen(txn[i].name));
		ASSERT(c != NULL);
		EXPECT(c->handler == txn[i].h);
		EXPECT(c->arity == txn[i].arity);
		EXPECT(c->flags & SERVER_CMD_LOCAL);
	}
	EXPECT(server_command_lookup((const uint8_t *)"KEEL.EXEC", 9) == NULL);
	EXPECT(server_command_lookup((const uint8_t *)"keel.watch-revs", 15) ==
	       NULL);
	const struct server_command *t =
		server_command_lookup((const uint8_t *)"KEEL.TXN", 8);
	ASSERT(t != NULL);
	EXPECT(t->handler == SERVER_H_NODE && (t->flags & SERVER_CMD_WRITE));
	const struct server_command *d =
		server_command_lookup((const uint8_t *)"KEEL.DEBUG", 10);
	ASSERT(d != NULL);
	EXPECT(d->flags & SERVER_CMD_FAULTS);
}

TEST(commands_lookup_is_case_insensitive_and_exact)
{
	EXPECT(server_command_lookup((const uint8_t *)"GeT", 3) ==
	       server_command_lookup((const uint8_t *)"get", 3));
	EXPECT(server_command_lookup((const uint8_t *)"ge", 2) == NULL);
	EXPECT(server_command_lookup((const uint8_t *)"gets", 4) == NULL);
	EXPECT(server_command_lookup((const uint8_t *)"pingx", 5) == NULL);
	EXPECT(server_command_lookup((const uint8_t *)"", 0) == NULL);
	/* every listed command finds itself, and names are unique */
	for (uint32_t i = 0; i < server_command_count(); i++) {
		const struct server_command *c = server_command_at(i);
		EXPECT(server_command_lookup((const uint8_t *)c->name,
					     strlen(c->name)) == c);
	}
	EXPECT(server_command_at(server_command_count()) == NULL);
	/* every row is whole: group, summary, ACL categories ("@x ...") */
	for (uint32_t i = 0; i < server_command_count(); i++) {
		const struct server_command *c = server_command_at(i);
		EXPECT(c->group && *c->group && c->summary && *c->summary);
		EXPECT(c->acl && c->acl[0] == '@');
		/* and found in any case: upper */
		char up[40];
		size_t n = strlen(c->name);
		ASSERT(n < sizeof(up));
		for (size_t k = 0; k < n; k++)
			up[k] = (char)((c->name[k] >= 'a' && c->name[k] <= 'z')
					       ? c->name[k] - 32
					       : c->name[k]);
		EXPECT(server_command_lookup((const uint8_t *)up, n) == c);
	}
	/* a name longer than any command, and one of 1000 bytes */
	static char longname[1000];
	memset(longname, 'g', sizeof(longname));
	EXPECT(server_command_lookup((const uint8_t *)longname, 33) == NULL);
	EXPECT(server_command_lookup((const uint8_t *)longname,
				     sizeof(longname)) == NULL);
}

TEST(commands_arity)
{
	const struct server_command *get =
		server_command_lookup((const uint8_t *)"get", 3);
	const struct server_command *del =
		server_command_lookup((const uint8_t *)"del", 3);
	const struct server_command *ping =
		server_command_lookup((const uint8_t *)"ping", 4);
	EXPECT(server_command_arity_ok(get, 2));
	EXPECT(!server_command_arity_ok(get, 1));
	EXPECT(!server_command_arity_ok(get, 3));
	EXPECT(!server_command_arity_ok(del, 1));
	EXPECT(server_command_arity_ok(del, 2));
	EXPECT(server_command_arity_ok(del, 100));
	EXPECT(server_command_arity_ok(ping, 1));
}

TEST(commands_redis_error_texts)
{
	char buf[512];
	const uint8_t *argv[] = {(const uint8_t *)"FOO", (const uint8_t *)"a",
				 (const uint8_t *)"bc"};
	size_t lens[] = {3, 1, 2};
	server_err_unknown_command(buf, sizeof(buf), 3, argv, lens);
	EXPECT(!strcmp(buf, "ERR unknown command 'FOO', with args beginning with: "
			    "'a' 'bc' "));
	server_err_unknown_command(buf, sizeof(buf), 1, argv, lens);
	EXPECT(!strcmp(buf, "ERR unknown command 'FOO', with args beginning with: "));
	server_err_arity(buf, sizeof(buf), (const uint8_t *)"GET", 3);
	EXPECT(!strcmp(buf, "ERR wrong number of arguments for 'get' command"));
	/* long arguments stop the list near 128 bytes; small buffers truncate */
	char big[300];
	memset(big, 'x', sizeof(big));
	const uint8_t *av2[] = {(const uint8_t *)"foo", (const uint8_t *)big,
				(const uint8_t *)big};
	size_t l2[] = {3, sizeof(big), sizeof(big)};
	server_err_unknown_command(buf, sizeof(buf), 3, av2, l2);
	EXPECT(strlen(buf) < 64 + 128 + 8);
	char tiny[8];
	server_err_unknown_command(tiny, sizeof(tiny), 3, argv, lens);
	EXPECT(!strcmp(tiny, "ERR unk"));
}

/* ---- reply queue -------------------------------------------------------- */

static void drain(struct server_replyq *q, char *out, size_t *n)
{
	struct server_reply_slot *s;
	while ((s = server_replyq_ready(q))) {
		memcpy(out + *n, s->bytes, s->len);
		*n += s->len;
		server_replyq_drop_head(q);
	}
	out[*n] = 0;
}

TEST(replyq_restores_request_order)
{
	struct server_replyq q;
	server_replyq_init(&q, &keel_alloc_libc, 8);
	struct server_reply_slot *s[5];
	for (int i = 0; i < 5; i++)
		ASSERT((s[i] = server_replyq_push(&q)) != NULL);
	char out[64];
	size_t n = 0;
	/* complete 3, 1, 4, 0, 2: nothing leaves until 0 is done */
	ASSERT(server_replyq_complete(&q, s[3], (const uint8_t *)"d", 1) == 0);
	ASSERT(server_replyq_complete(&q, s[1], (const uint8_t *)"b", 1) == 0);
	drain(&q, out, &n);
	EXPECT_EQ_U64(n, 0);
	ASSERT(server_replyq_complete(&q, s[4], (const uint8_t *)"e", 1) == 0);
	ASSERT(server_replyq_complete(&q, s[0], (const uint8_t *)"a", 1) == 0);
	drain(&q, out, &n);
	EXPECT(!strcmp(out, "ab"));
	ASSERT(server_replyq_complete(&q, s[2], (const uint8_t *)"c", 1) == 0);
	drain(&q, out, &n);
	EXPECT(!strcmp(out, "abcde"));
	EXPECT_EQ_U64(q.n, 0);
	server_replyq_close(&q);
}

TEST(replyq_random_completion_orders)
{
	uint64_t seed = test_seed(5);
	struct keel_rand r;
	keel_rand_seed(&r, seed);
	for (int round = 0; round < 200; round++) {
		struct server_replyq q;
		server_replyq_init(&q, &keel_alloc_libc, 64);
		enum { N = 40 };
		struct server_reply_slot *s[N];
		int order[N];
		for (int i = 0; i < N; i++) {
			s[i] = server_replyq_push(&q);
			order[i] = i;
		}
		for (int i = N - 1; i > 0; i--) {
			int j = (int)keel_rand_below(&r, (uint64_t)i + 1);
			int t = order[i];
			order[i] = order[j];
			order[j] = t;
		}
		char out[N * 3 + 1];
		size_t n = 0;
		for (int i = 0; i < N; i++) {
			char b[3] = {(char)('A' + order[i] / 26), (char)('a' + order[i] % 26), 0};
			server_replyq_complete(&q, s[order[i]], (const uint8_t *)b, 2);
			drain(&q, out, &n);
		}
		char want[N * 3 + 1];
		for (int i = 0; i < N; i++) {
			want[2 * i] = (char)('A' + i / 26);
			want[2 * i + 1] = (char)('a' + i % 26);
		}
		want[2 * N] = 0;
		if (strcmp(out, want)) {
			fprintf(stderr, "  seed %" PRIu64 " round %d: %s\n", seed, round, out);
			test_failed_now_ = 1;
		}
		server_replyq_close(&q);
	}
}

TEST(replyq_is_bounded_and_close_frees_open_slots)
{
	struct server_replyq q;
	server_replyq_init(&q, &keel_alloc_libc, 3);
	struct server_reply_slot *a = server_replyq_push(&q);
	EXPECT(server_replyq_push(&q) != NULL);
	EXPECT(server_replyq_push(&q) != NULL);
	EXPECT(server_replyq_push(&q) == NULL); /* full */
	server_replyq_complete(&q, a, (const uint8_t *)"x", 1);
	server_replyq_drop_head(&q);
	EXPECT(server_replyq_push(&q) != NULL); /* room again */
	server_replyq_close(&q); /* open slots freed (ASan checks) */
	EXPECT_EQ_U64(q.n, 0);
}

/* ---- KEEL-ID ---------------------------------------------------------------- */

TEST(keel_id_roundtrip_and_damage)
{
	uint8_t b[SERVER_KEEL_ID_BYTES];
	server_keel_id_encode(0x1122334455667788ull, 3, b);
	uint64_t cid = 0;
	raft_id id = 0;
	ASSERT(server_keel_id_decode(b, sizeof(b), &cid, &id) == 0);
	EXPECT_EQ_U64(cid, 0x1122334455667788ull);
	EXPECT_EQ_U64(id, 3);
	EXPECT(server_keel_id_decode(b, 63, &cid, &id) == KEEL_ERR_TRUNCATED);
	b[20] ^= 1;
	EXPECT(server_keel_id_decode(b, sizeof(b), &cid, &id) == KEEL_ERR_CORRUPT);
	b[20] ^= 1;
	b[0] = 'X';
	EXPECT(server_keel_id_decode(b, sizeof(b), &cid, &id) == KEEL_ERR_MAGIC);
}

TEST(keel_id_dir_check_refuses_other_cluster_or_node)
{
	char dir[] = "/tmp/keel-test-id-XXXXXX";
	ASSERT(mkdtemp(dir) != NULL);
	char sub[128];
	snprintf(sub, sizeof(sub), "%s/data", dir);
	ASSERT(server_keel_id_check(sub, 5, 2, err, sizeof(err)) == 0); /* created */
	ASSERT(server_keel_id_check(sub, 5, 2, err, sizeof(err)) == 0); /* same */
	EXPECT(server_keel_id_check(sub, 6, 2, err, sizeof(err)) == KEEL_ERR_CLUSTER);
	EXPECT(strstr(err, "belongs to cluster 5 node 2, not cluster 6 node 2") != NULL);
	EXPECT(server_keel_id_check(sub, 5, 3, err, sizeof(err)) == KEEL_ERR_CLUSTER);
	EXPECT(strstr(err, "not cluster 5 node 3") != NULL);
	/* a damaged id file is refused, not rewritten */
	char path[192];
	snprintf(path, sizeof(path), "%s/KEEL-ID", sub);
	FILE *f = fopen(path, "r+b");
	ASSERT(f != NULL);
	fseek(f, 30, SEEK_SET);
	fputc(0x55, f);
	fclose(f);
	EXPECT(server_keel_id_check(sub, 5, 2, err, sizeof(err)) == KEEL_ERR_CORRUPT);
	unlink(path);
	/* a hard state without an id is not adopted */
	char hs[192];
	snprintf(hs, sizeof(hs), "%s/hardstate", sub);
	f = fopen(hs, "wb");
	ASSERT(f != NULL);
	fclose(f);
	EXPECT(server_keel_id_check(sub, 5, 2, err, sizeof(err)) == KEEL_ERR_CLUSTER);
	unlink(hs);
	rmdir(sub);
	rmdir(dir);
}
