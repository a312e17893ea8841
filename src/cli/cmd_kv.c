/*
 * cmd_kv.c -- `keel kv get|put|del|scan` and `keel status`: RESP clients of
 * a running cluster (any member; writes and linearizable reads are
 * forwarded to the leader by the server itself).
 *
 * A command goes to the first address that answers. A -TRYAGAIN reply
 * (no leader yet: an election) or a refused connection moves on to the
 * next address, for a few rounds; an UNCERTAIN reply (the outcome is not
 * known) is never retried, since the write may have happened.
 *
 * Exit codes: 0 ok; 1 the server answered with an error, or get found no
 * key; 2 bad usage; 3 no member reachable, no leader, or outcome unknown.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "cli/client.h"

#define DEFAULT_ADDRS "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003"
#define MAX_ADDRS 16
#define ROUNDS 10

struct kv_opts {
	char addr_buf[1024];
	char *addrs[MAX_ADDRS];
	int n_addrs;
	int timeout_ms;
};

static void kv_usage(FILE *f)
{
	fprintf(f,
		"usage: keel kv [--addr H:P[,H:P...]] [--timeout-ms N] COMMAND\n"
		"  get KEY            print the value (exit 1 if there is none)\n"
		"  put KEY VALUE      set KEY to VALUE\n"
		"  del KEY [KEY...]   delete keys; prints how many existed\n"
		"  scan [PREFIX] [--limit N]\n"
		"                     print 'key value' lines in key order\n"
		"--addr defaults to %s (any member; the first that answers is used).\n"
		"exit: 0 ok, 1 error reply or key not found, 2 usage, 3 unavailable\n"
		"      or outcome unknown\n",
		DEFAULT_ADDRS);
}

static void status_usage(FILE *f)
{
	fprintf(f,
		"usage: keel status [--addr H:P[,H:P...]] [--timeout-ms N]\n"
		"Asks every member (its client address) for INFO server, raft and\n"
		"keyspace and prints one line per member:\n"
		"  id role term leader  raft_node_id, raft_role, raft_term, raft_leader\n"
		"  last                 raft_last_index (the newest entry in its log)\n"
		"  commit applied       raft_commit_index, raft_applied_index\n"
		"  lag                  the leader's commit index minus this applied index\n"
		"  snap                 raft_snapshot_index (newest durable snapshot, 0 none)\n"
		"  snapping             raft_snapshot_in_progress (yes while one is written)\n"
		"  keys                 live keys (INFO keyspace db0:keys)\n"
		"  version              keel_version\n"
		"--addr defaults to %s.\n"
		"exit: 0 every member answered and they agree on one leader, 1 some\n"
		"member is unreachable or poisoned (a failed WAL write: it accepts no\n"
		"writes) or there is no leader, 2 usage\n",
		DEFAULT_ADDRS);
}

/* Parses the common options; returns the index of the first other
 * argument, or -1 (usage error printed), -2 (help printed). */
static int parse_common(int argc, char **argv, struct kv_opts *o,
			void (*usage)(FILE *))
{
	snprintf(o->addr_buf, sizeof(o->addr_buf), "%s", DEFAULT_ADDRS);
	o->timeout_ms = 3000;
	int i = 1;
	for (; i < argc; i++) {
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			usage(stdout);
			return -2;
		} else if (!strcmp(argv[i], "--addr") && i + 1 < argc) {
			if (strlen(argv[i + 1]) >= sizeof(o->addr_buf)) {
				fprintf(stderr, "keel: --addr list too long\n");
				return -1;
			}
			snprintf(o->addr_buf, sizeof(o->addr_buf), "%s", argv[++i]);
		} else if (!strcmp(argv[i], "--timeout-ms") && i + 1 < argc) {
			uint64_t v;
			if (!cli_parse_u64("keel", "--timeout-ms", argv[++i], 1,
					   3600000, &v))
				return -1;
			o->timeout_ms = (int)v;
		} else if (!strncmp(argv[i], "--", 2)) {
			fprintf(stderr, "keel: unknown option '%s'\n", argv[i]);
			usage(stderr);
			return -1;
		} else {
			break;
		}
	}
	o->n_addrs = cli_split_addrs(o->addr_buf, o->addrs, MAX_ADDRS);
	if (o->n_addrs == 0) {
		fprintf(stderr, "keel: empty --addr\n");
		return -1;
	}
	return i;
}

static bool is_err(const struct resp_value *v, const char *code)
{
	if (v->type != RESP_T_ERROR && v->type != RESP_T_BLOB_ERROR)
		return false;
	size_t n = strlen(code);
	return v->len >= n && !strncmp(v->str, code, n);
}

static void sleep_ms(int ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/* Runs one command against the cluster with the retry rules above. Returns
 * 0 with *out set, or 3 with the reason printed. */
static int call_cluster(struct kv_opts *o, int argc, const char *const *argv,
			struct resp_value **out)
{
	char err[256] = "";
	for (int round = 0; round < ROUNDS; round++) {
		for (int k = 0; k < o->n_addrs; k++) {
			struct cli_conn c;
			if (cli_connect(&c, o->addrs[k], o->timeout_ms, err,
					sizeof(err))) {
				cli_close(&c);
				continue;
			}
			struct resp_value *v = NULL;
			int rv = cli_call(&c, argc, argv, &v, err, sizeof(err));
			cli_close(&c);
			if (rv) {
				/* Sent, then lost: a write may have happened. */
				fprintf(stderr,
					"keel: %s: %s (the command's outcome is "
					"unknown)\n",
					o->addrs[k], err);
				return 3;
			}
			if (is_err(v, "TRYAGAIN")) {
				snprintf(err, sizeof(err), "%s: %s", o->addrs[k], v->str);
				resp_value_free(&keel_alloc_libc, v);
				continue;
			}
			*out = v;
			return 0;
		}
		sleep_ms(200 + 100 * round);
	}
	fprintf(stderr, "keel: no member could run the command: %s\n", err);
	return 3;
}

/* Prints an error reply and returns its exit code, or -1 if v is none. */
static int report_error(const struct resp_value *v)
{
	if (v->type != RESP_T_ERROR && v->type != RESP_T_BLOB_ERROR)
		return -1;
	fprintf(stderr, "keel: server error: %s\n", v->str);
	return is_err(v, "UNCERTAIN") ? 3 : 1;
}

static void print_bytes(const char *p, size_t n)
{
	fwrite(p, 1, n, stdout);
}

static int kv_scan(struct kv_opts *o, const char *prefix, uint64_t limit)
{
	char cursor[32] = "0";
	char pattern[1024];
	/* Escape glob characters in the prefix, then match everything after. */
	size_t w = 0;
	for (const char *p = prefix; *p && w + 3 < sizeof(pattern); p++) {
		if (strchr("*?[]\\", *p))
			pattern[w++] = '\\';
		pattern[w++] = *p;
	}
	pattern[w++] = '*';
	pattern[w] = 0;
	uint64_t printed = 0;
	for (int iter = 0; iter < 1000000; iter++) {
		const char *argv[] = {"SCAN", cursor, "MATCH", pattern, "COUNT", "1000"};
		struct resp_value *v = NULL;
		int rv = call_cluster(o, 6, argv, &v);
		if (rv)
			return rv;
		int e = report_error(v);
		if (e >= 0) {
			resp_value_free(&keel_alloc_libc, v);
			return e;
		}
		if (v->type != RESP_T_ARRAY || v->n != 2 ||
		    v->elem[0].type != RESP_T_BULK || v->elem[1].type != RESP_T_ARRAY) {
			fprintf(stderr, "keel: unexpected SCAN reply\n");
			resp_value_free(&keel_alloc_libc, v);
			return 1;
		}
		snprintf(cursor, sizeof(cursor), "%.*s", (int)v->elem[0].len,
			 v->elem[0].str);
		const struct resp_value *keys = &v->elem[1];
		for (size_t i = 0; i < keys->n && (!limit || printed < limit); i++) {
			const struct resp_value *k = &keys->elem[i];
			const char *gargv[] = {"GET", k->str};
			struct resp_value *gv = NULL;
			if (call_cluster(o, 2, gargv, &gv) == 0) {
				if (gv->type == RESP_T_BULK) {
					print_bytes(k->str, k->len);
					fputc(' ', stdout);
					print_bytes(gv->str, gv->len);
					fputc('\n', stdout);
					printed++;
				}
				resp_value_free(&keel_alloc_libc, gv);
			}
		}
		resp_value_free(&keel_alloc_libc, v);
		if (!strcmp(cursor, "0") || (limit && printed >= limit))
			return 0;
	}
	return 0;
}

int cmd_kv(int argc, char **argv)
{
	struct kv_opts o;
	int i = parse_common(argc, argv, &o, kv_usage);
	if (i == -2)
		return 0;
	if (i < 0)
		return 2;
	if (i >= argc) {
		kv_usage(stderr);
		return 2;
	}
	const char *sub = argv[i];
	int nargs = argc - i - 1;
	char **args = argv + i + 1;
	struct resp_value *v = NULL;
	int rv;
	if (!strcmp(sub, "get") && nargs == 1) {
		const char *a[] = {"GET", args[0]};
		rv = call_cluster(&o, 2, a, &v);
	} else if (!strcmp(sub, "put") && nargs == 2) {
		const char *a[] = {"SET", args[0], args[1]};
		rv = call_cluster(&o, 3, a, &v);
	} else if (!strcmp(sub, "del") && nargs >= 1 && nargs < 60) {
		const char *a[64] = {"DEL"};
		for (int k = 0; k < nargs; k++)
			a[k + 1] = args[k];
		rv = call_cluster(&o, nargs + 1, a, &v);
	} else if (!strcmp(sub, "scan")) {
		const char *prefix = "";
		uint64_t limit = 0;
		for (int k = 0; k < nargs; k++) {
			if (!strcmp(args[k], "--limit") && k + 1 < nargs) {
				if (!cli_parse_u64("keel kv scan", "--limit",
						   args[++k], 1, UINT64_MAX, &limit))
					return 2;
			} else if (!prefix[0] && strncmp(args[k], "--", 2)) {
				prefix = args[k];
			} else {
				kv_usage(stderr);
				return 2;
			}
		}
		return kv_scan(&o, prefix, limit);
	} else {
		fprintf(stderr, "keel kv: bad command '%s' or wrong number of "
			"arguments\n", sub);
		kv_usage(stderr);
		return 2;
	}
	if (rv)
		return rv;
	int code = report_error(v);
	if (code < 0) {
		code = 0;
		if (v->type == RESP_T_NULL) {
			fprintf(stderr, "keel kv get: %s: not found\n", args[0]);
			code = 1;
		} else if (v->type == RESP_T_BULK || v->type == RESP_T_STRING) {
			print_bytes(v->str, v->len);
			fputc('\n', stdout);
		} else if (v->type == RESP_T_INTEGER) {
			printf("%" PRId64 "\n", v->integer);
		}
	}
	resp_value_free(&keel_alloc_libc, v);
	return code;
}

/* ---- keel status ---------------------------------------------------------- */

struct member {
	bool up;
	char err[200];
	uint64_t id, term, leader, last, commit, applied, snap, snapping, keys,
		poisoned;
	char role[32];
	char version[32];
};

/* The value after "name" at the start of a line of INFO text (name carries
 * its own ':' or '='), or NULL. At a line start only: "raft_term:" must not
 * match inside "raft_last_term:". */
static const char *field(const char *text, const char *name)
{
	size_t n = strlen(name);
	for (const char *p = text; *p;) {
		if (!strncmp(p, name, n))
			return p + n;
		const char *nl = strchr(p, '\n');
		if (!nl)
			break;
		p = nl + 1;
	}
	return NULL;
}

static uint64_t field_u64(const char *text, const char *name)
{
	const char *p = field(text, name);
	return p ? strtoull(p, NULL, 10) : 0;
}

static void field_str(const char *text, const char *name, char *out, size_t len)
{
	const char *p = field(text, name);
	out[0] = 0;
	if (!p)
		return;
	size_t n = strcspn(p, "\r\n");
	snprintf(out, len, "%.*s", (int)n, p);
}

int cmd_status(int argc, char **argv)
{
	struct kv_opts o;
	int i = parse_common(argc, argv, &o, status_usage);
	if (i == -2)
		return 0;
	if (i < 0)
		return 2;
	if (i < argc) {
		fprintf(stderr, "keel status: unexpected argument '%s'\n", argv[i]);
		status_usage(stderr);
		return 2;
	}
	struct member m[MAX_ADDRS];
	memset(m, 0, sizeof(m));
	uint64_t leader_commit = 0, leader = 0;
	bool split = false;
	for (int k = 0; k < o.n_addrs; k++) {
		struct cli_conn c;
		const char *a[] = {"INFO", "server", "raft", "keyspace"};
		struct resp_value *v = NULL;
		if (cli_connect(&c, o.addrs[k], o.timeout_ms, m[k].err,
				sizeof(m[k].err)) ||
		    cli_call(&c, 4, a, &v, m[k].err, sizeof(m[k].err))) {
			cli_close(&c);
			continue;
		}
		cli_close(&c);
		if (v->type != RESP_T_BULK && v->type != RESP_T_VERBATIM) {
			snprintf(m[k].err, sizeof(m[k].err), "unexpected reply: %s",
				 v->str ? v->str : "?");
			resp_value_free(&keel_alloc_libc, v);
			continue;
		}
		m[k].up = true;
		m[k].id = field_u64(v->str, "raft_node_id:");
		m[k].term = field_u64(v->str, "raft_term:");
		m[k].leader = field_u64(v->str, "raft_leader:");
		m[k].last = field_u64(v->str, "raft_last_index:");
		m[k].commit = field_u64(v->str, "raft_commit_index:");
		m[k].applied = field_u64(v->str, "raft_applied_index:");
		m[k].snap = field_u64(v->str, "raft_snapshot_index:");
		m[k].snapping = field_u64(v->str, "raft_snapshot_in_progress:");
		m[k].poisoned = field_u64(v->str, "raft_poisoned:");
		/* No db0 line at all when the keyspace is empty. */
		m[k].keys = field_u64(v->str, "db0:keys=");
		field_str(v->str, "raft_role:", m[k].role, sizeof(m[k].role));
		field_str(v->str, "keel_version:", m[k].version, sizeof(m[k].version));
		resp_value_free(&keel_alloc_libc, v);
		if (!strcmp(m[k].role, "leader")) {
			if (leader && leader != m[k].id)
				split = true;
			leader = m[k].id;
			leader_commit = m[k].commit;
		}
	}
	printf("%-22s %4s %-13s %6s %6s %10s %10s %10s %8s %10s %8s %10s %s\n",
	       "member", "id", "role", "term", "leader", "last", "commit",
	       "applied", "lag", "snap", "snapping", "keys", "version");
	bool all_up = true, poisoned = false;
	for (int k = 0; k < o.n_addrs; k++) {
		if (!m[k].up) {
			all_up = false;
			printf("%-22s unreachable: %s\n", o.addrs[k], m[k].err);
			continue;
		}
		uint64_t lag = leader_commit > m[k].applied ? leader_commit - m[k].applied : 0;
		printf("%-22s %4" PRIu64 " %-13s %6" PRIu64 " %6" PRIu64 " %10" PRIu64
		       " %10" PRIu64 " %10" PRIu64 " %8" PRIu64 " %10" PRIu64
		       " %8s %10" PRIu64 " %s\n",
		       o.addrs[k], m[k].id, m[k].role, m[k].term, m[k].leader,
		       m[k].last, m[k].commit, m[k].applied, lag, m[k].snap,
		       m[k].snapping ? "yes" : "no", m[k].keys,
		       m[k].version[0] ? m[k].version : "?");
		if (m[k].poisoned) {
			poisoned = true;
			fprintf(stderr, "keel status: %s is poisoned (a WAL write "
				"failed: it accepts no writes until restarted)\n",
				o.addrs[k]);
		}
	}
	if (!leader) {
		fprintf(stderr, "keel status: no member reports itself leader\n");
		return 1;
	}
	if (split)
		fprintf(stderr, "keel status: more than one member says leader "
			"(different terms: one is stale)\n");
	return all_up && !poisoned ? 0 : 1;
}
