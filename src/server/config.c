/*
 * config.c -- `keel server` options: flags and the equivalent config file
 * (one `key = value` per line), checked into a struct server_config.
 *
 * Every option has one name, used both as a flag (--name value or
 * --name=value) and as a config-file key, so the two can never drift
 * apart. Options are applied in the order they are seen; --config FILE
 * applies the file at that point, so a flag after it overrides the file.
 * Every error names the option and the offending value.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/server.h"

#define CONFIG_MAX_FILE (1u << 20)

void server_config_default(struct server_config *c)
{
	memset(c, 0, sizeof(*c));
	c->cluster_id = 1;
	snprintf(c->client_addr, sizeof(c->client_addr), "%s",
		 SERVER_DEFAULT_CLIENT_ADDR);
	c->log_level = ENV_LOG_INFO;
	c->tick_ms = 10;
	c->election_ticks = 30;  /* 300-600 ms: loopback and a busy 2-core box */
	c->heartbeat_ticks = 3;
	c->request_timeout_ms = 0;
	c->max_clients = 10000;
}

/* Strict unsigned decimal in [min, max]: 0 or KEEL_ERR_INVAL. */
static int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	return keel_parse_u64(s, min, max, out) ? 0 : KEEL_ERR_INVAL;
}

static int check_addr(const char *s)
{
	struct sockaddr_storage ss;
	return posix_env_parse_addr(s, &ss);
}

int server_parse_cluster(const char *s, struct posix_env_peer *out,
			 uint32_t *n_out, char *err, size_t err_len)
{
	uint32_t n = 0;
	const char *p = s;
	if (!s || !*s) {
		snprintf(err, err_len, "--cluster: empty member list");
		return KEEL_ERR_INVAL;
	}
	while (*p) {
		const char *comma = strchr(p, ',');
		size_t len = comma ? (size_t)(comma - p) : strlen(p);
		char item[POSIX_ENV_ADDR_MAX + 32];
		if (len == 0 || len >= sizeof(item)) {
			snprintf(err, err_len,
				 "--cluster: bad member '%.*s' (want ID=HOST:PORT)",
				 (int)KEEL_MIN(len, 64), p);
			return KEEL_ERR_INVAL;
		}
		memcpy(item, p, len);
		item[len] = 0;
		char *eq = strchr(item, '=');
		uint64_t id;
		if (!eq) {
			snprintf(err, err_len,
				 "--cluster: bad member '%s' (want ID=HOST:PORT)",
				 item);
			return KEEL_ERR_INVAL;
		}
		*eq = 0;
		if (parse_u64(item, 1, UINT32_MAX, &id)) {
			snprintf(err, err_len,
				 "--cluster: bad node id '%s' (want 1..%u)", item,
				 UINT32_MAX);
			return KEEL_ERR_INVAL;
		}
		const char *addr = eq + 1;
		if (strlen(addr) >= POSIX_ENV_ADDR_MAX || check_addr(addr)) {
			snprintf(err, err_len,
				 "--cluster: bad address '%s' for node %" PRIu64
				 " (want HOST:PORT, HOST an IP literal or localhost)",
				 addr, id);
			return KEEL_ERR_INVAL;
		}
		for (uint32_t i = 0; i < n; i++) {
			if (out[i].id == id) {
				snprintf(err, err_len,
					 "--cluster: node %" PRIu64 " listed twice",
					 id);
				return KEEL_ERR_INVAL;
			}
		}
		if (n == RAFT_MAX_VOTERS) {
			snprintf(err, err_len, "--cluster: more than %d members",
				 RAFT_MAX_VOTERS);
			return KEEL_ERR_INVAL;
		}
		out[n].id = id;
		snprintf(out[n].addr, sizeof(out[n].addr), "%s", addr);
		n++;
		if (!comma)
			break;
		p = comma + 1;
		if (!*p) {
			snprintf(err, err_len, "--cluster: trailing ','");
			return KEEL_ERR_INVAL;
		}
	}
	*n_out = n;
	return 0;
}

static const char *const level_names[] = {"debug", "info", "warn", "error"};

int server_config_set(struct server_config *c, const char *key,
		      const char *val, char *err, size_t err_len)
{
	uint64_t v;
	if (!strcmp(key, "test-faults")) {
		if (!val || !strcmp(val, "true") || !strcmp(val, "yes") ||
		    !strcmp(val, "1"))
			c->test_faults = true;
		else if (!strcmp(val, "false") || !strcmp(val, "no") ||
			 !strcmp(val, "0"))
			c->test_faults = false;
		else
			goto bad;
		return 0;
	}
	if (!val) {
		snprintf(err, err_len, "--%s needs a value", key);
		return KEEL_ERR_INVAL;
	}
	if (!strcmp(key, "id")) {
		if (parse_u64(val, 1, UINT32_MAX, &v))
			goto bad;
		c->id = v;
		c->have_id = true;
	} else if (!strcmp(key, "cluster-id")) {
		if (parse_u64(val, 1, UINT64_MAX, &v))
			goto bad;
		c->cluster_id = v;
	} else if (!strcmp(key, "data-dir")) {
		if (!*val || strlen(val) >= sizeof(c->data_dir))
			goto bad;
		snprintf(c->data_dir, sizeof(c->data_dir), "%s", val);
		c->have_data_dir = true;
	} else if (!strcmp(key, "client-addr") || !strcmp(key, "peer-addr")) {
		if (strlen(val) >= POSIX_ENV_ADDR_MAX || check_addr(val)) {
			snprintf(err, err_len,
				 "--%s: bad address '%s' (want HOST:PORT, HOST an "
				 "IP literal or localhost)",
				 key, val);
			return KEEL_ERR_INVAL;
		}
		char *dst = key[0] == 'c' ? c->client_addr : c->peer_addr;
		snprintf(dst, POSIX_ENV_ADDR_MAX, "%s", val);
	} else if (!strcmp(key, "cluster")) {
		int rv = server_parse_cluster(val, c->members, &c->n_members, err,
					      err_len);
		if (rv)
			return rv;
		c->have_cluster = true;
	} else if (!strcmp(key, "log-level")) {
		int lv = -1;
		for (int i = 0; i < 4; i++)
			if (!strcmp(val, level_names[i]))
				lv = i;
		if (lv < 0) {
			snprintf(err, err_len,
				 "--log-level: bad value '%s' (want debug, info, "
				 "warn or error)",
				 val);
			return KEEL_ERR_INVAL;
		}
		c->log_level = lv;
	} else if (!strcmp(key, "tick-ms")) {
		if (parse_u64(val, 1, 1000, &v))
			goto bad;
		c->tick_ms = (uint32_t)v;
	} else if (!strcmp(key, "election-ticks")) {
		if (parse_u64(val, 2, 100000, &v))
			goto bad;
		c->election_ticks = (uint32_t)v;
	} else if (!strcmp(key, "heartbeat-ticks")) {
		if (parse_u64(val, 1, 100000, &v))
			goto bad;
		c->heartbeat_ticks = (uint32_t)v;
	} else if (!strcmp(key, "request-timeout-ms")) {
		if (parse_u64(val, 1, 3600 * 1000, &v))
			goto bad;
		c->request_timeout_ms = v;
	} else if (!strcmp(key, "max-clients")) {
		if (parse_u64(val, 1, 1000000, &v))
			goto bad;
		c->max_clients = (uint32_t)v;
	} else if (!strcmp(key, "snapshot-entries")) {
		/* UINT32_MAX: never snapshot (docs/snapshots.md §1.1). */
		if (parse_u64(val, 1, UINT32_MAX, &v))
			goto bad;
		c->snapshot_entries = (uint32_t)v;
	} else if (!strcmp(key, "snapshot-log-bytes")) {
		/* 4 KiB .. 1 TiB of applied entry bytes between snapshots. */
		if (parse_u64(val, 4096, (uint64_t)1 << 40, &v))
			goto bad;
		c->snapshot_log_bytes = v;
	} else if (!strcmp(key, "test-bug")) {
		if (!strcmp(val, "none"))
			c->test_bug = SERVER_BUG_NONE;
		else if (!strcmp(val, "stale-read"))
			c->test_bug = SERVER_BUG_STALE_READ;
		else if (!strcmp(val, "early-ack"))
			c->test_bug = SERVER_BUG_EARLY_ACK;
		else if (!strcmp(val, "reorder"))
			c->test_bug = SERVER_BUG_REORDER;
		else if (!strcmp(val, "no-order"))
			c->test_bug = SERVER_BUG_NO_ORDER;
		else if (!strcmp(val, "watch-blind"))
			c->test_bug = SERVER_BUG_WATCH_BLIND;
		else {
			snprintf(err, err_len,
				 "--test-bug: bad value '%s' (want stale-read, "
				 "early-ack, reorder, no-order, watch-blind or none)",
				 val);
			return KEEL_ERR_INVAL;
		}
	} else {
		snprintf(err, err_len, "unknown option '%s' (see keel server --help)",
			 key);
		return KEEL_ERR_INVAL;
	}
	return 0;
bad:
	snprintf(err, err_len, "--%s: bad value '%s'", key, val ? val : "");
	return KEEL_ERR_INVAL;
}

static char *trim(char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	size_t n = strlen(s);
	while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
		s[--n] = 0;
	return s;
}

int server_config_parse_text(struct server_config *c, const char *text,
			     size_t len, const char *name, char *err,
			     size_t err_len)
{
	size_t off = 0;
	unsigned lineno = 0;
	while (off < len) {
		size_t end = off;
		while (end < len && text[end] != '\n')
			end++;
		lineno++;
		char line[2048];
		size_t ll = end - off;
		if (ll >= sizeof(line)) {
			snprintf(err, err_len, "%s:%u: line too long", name, lineno);
			return KEEL_ERR_INVAL;
		}
		memcpy(line, text + off, ll);
		line[ll] = 0;
		off = end + 1;
		if (memchr(line, 0, ll)) {
			snprintf(err, err_len, "%s:%u: NUL byte", name, lineno);
			return KEEL_ERR_INVAL;
		}
		char *hash = strchr(line, '#');
		if (hash)
			*hash = 0;
		char *s = trim(line);
		if (!*s)
			continue;
		char *eq = strchr(s, '=');
		if (!eq) {
			snprintf(err, err_len, "%s:%u: expected 'key = value', got '%.64s'",
				 name, lineno, s);
			return KEEL_ERR_INVAL;
		}
		*eq = 0;
		char *key = trim(s), *val = trim(eq + 1);
		if (!strcmp(key, "config")) {
			snprintf(err, err_len, "%s:%u: 'config' cannot be nested",
				 name, lineno);
			return KEEL_ERR_INVAL;
		}
		char sub[384];
		int rv = server_config_set(c, key, val, sub, sizeof(sub));
		if (rv) {
			snprintf(err, err_len, "%s:%u: %s", name, lineno, sub);
			return rv;
		}
	}
	return 0;
}

static int parse_file(struct server_config *c, const char *path, char *err,
		      size_t err_len)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		snprintf(err, err_len, "--config: cannot open '%s': %s", path,
			 strerror(errno));
		return KEEL_ERR_IO;
	}
	char *buf = malloc(CONFIG_MAX_FILE + 1);
	if (!buf) {
		fclose(f);
		return KEEL_ERR_NOMEM;
	}
	size_t n = fread(buf, 1, CONFIG_MAX_FILE + 1, f);
	int rerr = ferror(f);
	fclose(f);
	int rv;
	if (rerr) {
		snprintf(err, err_len, "--config: cannot read '%s'", path);
		rv = KEEL_ERR_IO;
	} else if (n > CONFIG_MAX_FILE) {
		snprintf(err, err_len, "--config: '%s' is larger than %u bytes",
			 path, CONFIG_MAX_FILE);
		rv = KEEL_ERR_INVAL;
	} else {
		rv = server_config_parse_text(c, buf, n, path, err, err_len);
	}
	free(buf);
	return rv;
}

int server_config_parse_args(struct server_config *c, int argc, char **argv,
			     char *err, size_t err_len)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--help") || !strcmp(a, "-h"))
			return 1;
		if (strncmp(a, "--", 2) || !a[2]) {
			snprintf(err, err_len,
				 "unexpected argument '%s' (options start with --)",
				 a);
			return KEEL_ERR_INVAL;
		}
		char key[64];
		const char *val = NULL;
		const char *eq = strchr(a + 2, '=');
		size_t kl = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
		if (kl >= sizeof(key)) {
			snprintf(err, err_len, "unknown option '%.80s'", a);
			return KEEL_ERR_INVAL;
		}
		memcpy(key, a + 2, kl);
		key[kl] = 0;
		if (eq)
			val = eq + 1;
		else if (strcmp(key, "test-faults") && i + 1 < argc)
			val = argv[++i];
		int rv;
		if (!strcmp(key, "config")) {
			if (!val) {
				snprintf(err, err_len, "--config needs a file name");
				return KEEL_ERR_INVAL;
			}
			rv = parse_file(c, val, err, err_len);
		} else {
			rv = server_config_set(c, key, val, err, err_len);
		}
		if (rv)
			return rv;
	}
	return 0;
}

int server_config_check(struct server_config *c, char *err, size_t err_len)
{
	if (!c->have_id) {
		snprintf(err, err_len, "missing --id (this node's id, 1..)");
		return KEEL_ERR_INVAL;
	}
	if (!c->have_data_dir) {
		snprintf(err, err_len, "missing --data-dir");
		return KEEL_ERR_INVAL;
	}
	if (!c->have_cluster) {
		snprintf(err, err_len,
			 "missing --cluster (ID=HOST:PORT,... of every member, "
			 "peer addresses)");
		return KEEL_ERR_INVAL;
	}
	struct posix_env_peer *self = NULL;
	for (uint32_t i = 0; i < c->n_members; i++)
		if (c->members[i].id == c->id)
			self = &c->members[i];
	if (!self) {
		snprintf(err, err_len, "node %" PRIu64 " is not in --cluster", c->id);
		return KEEL_ERR_INVAL;
	}
	if (c->peer_addr[0])
		snprintf(self->addr, sizeof(self->addr), "%s", c->peer_addr);
	else
		snprintf(c->peer_addr, sizeof(c->peer_addr), "%s", self->addr);
	if (!strcmp(c->peer_addr, c->client_addr)) {
		snprintf(err, err_len,
			 "--client-addr and the peer address are both %s",
			 c->client_addr);
		return KEEL_ERR_INVAL;
	}
	if (c->test_bug != SERVER_BUG_NONE && !c->test_faults) {
		snprintf(err, err_len,
			 "--test-bug plants a bug for tests: it needs --test-faults");
		return KEEL_ERR_INVAL;
	}
	if (c->heartbeat_ticks >= c->election_ticks) {
		snprintf(err, err_len,
			 "--heartbeat-ticks (%u) must be below --election-ticks (%u)",
			 c->heartbeat_ticks, c->election_ticks);
		return KEEL_ERR_INVAL;
	}
	return 0;
}

void server_config_usage(char *buf, size_t len)
{
	snprintf(buf, len,
		 "usage: keel server --id N --data-dir DIR --cluster ID=HOST:PORT,...\n"
		 "                   [--client-addr HOST:PORT] [--peer-addr HOST:PORT]\n"
		 "                   [--cluster-id N] [--config FILE] [options]\n"
		 "\n"
		 "Runs one member of a keel cluster; any Redis client can talk to it.\n"
		 "  --id N                 this node's id (must be in --cluster)\n"
		 "  --data-dir DIR         WAL, hard state and KEEL-ID (created if missing;\n"
		 "                         a directory of another cluster or node is refused)\n"
		 "  --cluster LIST         every member's peer address: 1=127.0.0.1:7101,2=...\n"
		 "  --cluster-id N         written to KEEL-ID and every peer frame (default 1)\n"
		 "  --client-addr H:P      RESP listener (default %s)\n"
		 "  --peer-addr H:P        peer listener (default: this node's --cluster entry)\n"
		 "  --config FILE          the same options as `key = value` lines; flags\n"
		 "                         after --config override the file\n"
		 "  --log-level L          debug, info, warn or error (default info)\n"
		 "  --tick-ms N            one Raft tick (default 10)\n"
		 "  --election-ticks N     election timeout in ticks, randomised to [N,2N) (30)\n"
		 "  --heartbeat-ticks N    heartbeat interval in ticks (3)\n"
		 "  --request-timeout-ms N how long a request may wait (default 5000)\n"
		 "  --max-clients N        client connections at once (default 10000)\n"
		 "  --snapshot-entries N   snapshot every N applied entries (100000;\n"
		 "                         4294967295 = never)\n"
		 "  --snapshot-log-bytes N ... or after N bytes of applied entries\n"
		 "                         (default 67108864 = 64 MiB)\n"
		 "  --test-faults          enable KEEL.DEBUG fault injection (tests only)\n"
		 "  --test-bug NAME        plant a bug (stale-read, early-ack, reorder,\n"
		 "                         no-order, watch-blind) to show the Jepsen-style\n"
		 "                         tests catch it; needs --test-faults\n"
		 "Stops cleanly on SIGTERM or SIGINT. docs/server.md has the details.\n",
		 SERVER_DEFAULT_CLIENT_ADDR);
}
