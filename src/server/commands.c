/*
 * commands.c -- the server's command table as data, Redis's error texts
 * for unknown commands and wrong arity, and the per-connection reply queue.
 *
 * The table has two parts: the server-local commands below (PING, HELLO,
 * INFO, ...: answered without the node) and one row per client command in
 * kv_commands[] (kv.h), all routed to node_request. Building the kv rows
 * from kv's own table means a command added to kv shows up in COMMAND and
 * gets its arity checked here without a second list to keep in sync.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "keel/kv.h"
#include "keel/server.h"

#define L SERVER_CMD_LOCAL
#define F SERVER_CMD_FAST

static const struct server_command local_commands[] = {
	{"ping", -1, L | F, SERVER_H_PING, 0, 0, 0, "connection",
	 "Returns PONG, or the argument", "@fast @connection"},
	{"echo", 2, L | F, SERVER_H_ECHO, 0, 0, 0, "connection",
	 "Returns the given string", "@fast @connection"},
	{"hello", -1, L | F, SERVER_H_HELLO, 0, 0, 0, "connection",
	 "Handshakes with the server, optionally switching to RESP3",
	 "@fast @connection"},
	{"select", 2, L | F, SERVER_H_SELECT, 0, 0, 0, "connection",
	 "Selects the database (keel has only database 0)",
	 "@fast @connection"},
	{"quit", -1, L | F, SERVER_H_QUIT, 0, 0, 0, "connection",
	 "Closes the connection", "@fast @connection"},
	{"client", -2, L, SERVER_H_CLIENT, 0, 0, 0, "connection",
	 "CLIENT ID | SETNAME name | GETNAME", "@slow @connection"},
	{"command", -1, L, SERVER_H_COMMAND, 0, 0, 0, "server",
	 "COMMAND [COUNT | DOCS [name ...] | INFO [name ...]]",
	 "@slow @connection"},
	{"info", -1, L, SERVER_H_INFO, 0, 0, 0, "server",
	 "Server, clients, stats, keyspace and raft information",
	 "@slow @dangerous"},
	{"readonly", 1, L | F, SERVER_H_READONLY, 0, 0, 0, "connection",
	 "Serves reads on this connection from this node's state (may be stale)",
	 "@fast @connection"},
	{"readwrite", 1, L | F, SERVER_H_READWRITE, 0, 0, 0, "connection",
	 "Returns this connection to linearizable reads", "@fast @connection"},
	{"config", -2, L, SERVER_H_CONFIG, 0, 0, 0, "server",
	 "CONFIG GET pattern (read-only; a few keys for client tools)",
	 "@admin @slow @dangerous"},
	/* Exactly-once sessions: node-level writes (docs/kv.md "Sessions"). */
	{"keel.session", -2, SERVER_CMD_WRITE, SERVER_H_NODE, 0, 0, 0,
	 "keel", "KEEL.SESSION REGISTER [TTL ms] | KEEPALIVE id | CLOSE id",
	 "@write @fast"},
	{"keel.run", -4, SERVER_CMD_WRITE, SERVER_H_NODE, 0, 0, 0, "keel",
	 "KEEL.RUN session seq command [arg ...]: the write runs exactly once",
	 "@write @slow"},
	{"multi", 1, L | F, SERVER_H_MULTI, 0, 0, 0, "transactions",
	 "Starts a transaction: commands are queued until EXEC",
	 "@fast @transaction"},
	{"exec", 1, L, SERVER_H_EXEC, 0, 0, 0, "transactions",
	 "Runs the queued commands as one log entry, atomically",
	 "@slow @transaction"},
	{"discard", 1, L | F, SERVER_H_DISCARD, 0, 0, 0, "transactions",
	 "Drops the queued commands and the watched keys",
	 "@fast @transaction"},
	{"watch", -2, L, SERVER_H_WATCH, 1, -1, 1, "transactions",
	 "EXEC runs only if none of these keys changed since (linearizable)",
	 "@fast @transaction"},
	{"unwatch", 1, L | F, SERVER_H_UNWATCH, 0, 0, 0, "transactions",
	 "Forgets the watched keys", "@fast @transaction"},
	{"keel.debug", -2, L | SERVER_CMD_ADMIN | SERVER_CMD_FAULTS,
	 SERVER_H_DEBUG, 0, 0, 0, "server",
	 "Fault injection for tests (needs --test-faults)",
	 "@admin @slow @dangerous"},
};

#undef L
#undef F

/* kv rows: converted once into this table. Sized at compile time with a
 * margin; a kv table larger than it is a build-time bug caught below. */
#define KV_ROWS_MAX 96

struct kv_rows {
	uint32_t n;
	struct server_command rows[KV_ROWS_MAX];
};

/* The kv rows are derived from kv_commands[] (read-only static data); the
 * table is built by a constructor before main, like the CRC tables, and
 * never written again. */
static struct kv_rows kv_rows_;

__attribute__((constructor(101))) static void kv_rows_build(void)
{
	for (size_t i = 0; i < kv_commands_count; i++) {
		const struct kv_command *k = &kv_commands[i];
		/* Internal (leader-only) and server-built commands
		 * (KEEL.EXEC, KEEL.WATCH-REVS) are not client commands. */
		if (k->flags & (KV_CMD_INTERNAL | KV_CMD_SERVER))
			continue;
		KEEL_ASSERT(kv_rows_.n < KV_ROWS_MAX);
		struct server_command *c = &kv_rows_.rows[kv_rows_.n++];
		c->name = k->name;
		c->arity = k->arity;
		c->flags = 0;
		if (k->flags & KV_CMD_WRITE)
			c->flags |= SERVER_CMD_WRITE;
		if (k->flags & KV_CMD_READ)
			c->flags |= SERVER_CMD_READ;
		if (k->flags & KV_CMD_ADMIN)
			c->flags |= SERVER_CMD_ADMIN;
		if (k->flags & KV_CMD_FAST)
			c->flags |= SERVER_CMD_FAST;
		c->handler = SERVER_H_NODE;
		c->first_key = k->first_key;
		c->last_key = k->last_key;
		c->step = k->step;
		c->group = k->group;
		c->acl = k->acl;
		c->summary = (k->flags & KV_CMD_TXN)
				     ? "Compare, then one list of commands or another, atomically (docs/kv.md)"
			     : (k->flags & KV_CMD_WRITE)
				     ? "Redis-compatible write, through the Raft log"
				     : "Redis-compatible read, linearizable by default";
	}
}

/* One index over both tables, by a hash of the lowercase name (open
 * addressing, at most half full); built before main after the kv rows,
 * read-only afterwards. */
#define SERVER_INDEX_SLOTS 256
#define SERVER_NAME_MAX 32
static uint16_t server_index_[SERVER_INDEX_SLOTS]; /* row + 1; 0 = empty */

/* Row r of the two tables, local rows first (r < server_command_count). */
static const struct server_command *row_at(uint32_t r)
{
	uint32_t nl = (uint32_t)KEEL_ARRAY_LEN(local_commands);
	return r < nl ? &local_commands[r] : &kv_rows_.rows[r - nl];
}

__attribute__((constructor(200))) static void server_index_build(void)
{
	uint32_t n = server_command_count();
	KEEL_ASSERT(n * 2 <= SERVER_INDEX_SLOTS);
	for (uint32_t r = 0; r < n; r++) {
		const char *nm = row_at(r)->name;
		size_t len = strlen(nm);
		KEEL_ASSERT(len <= SERVER_NAME_MAX);
		uint32_t i = keel_lower_hash((const uint8_t *)nm, len) &
			     (SERVER_INDEX_SLOTS - 1);
		while (server_index_[i])
			i = (i + 1) & (SERVER_INDEX_SLOTS - 1);
		server_index_[i] = (uint16_t)(r + 1);
	}
}

static bool name_eq(const char *lower, const uint8_t *name, size_t len)
{
	return strlen(lower) == len && !strncasecmp(lower, (const char *)name, len);
}

const struct server_command *server_command_lookup(const uint8_t *name,
						   size_t len)
{
	if (len > SERVER_NAME_MAX)
		return NULL;
	uint32_t i = keel_lower_hash(name, len) & (SERVER_INDEX_SLOTS - 1);
	for (uint32_t probes = 0; probes < SERVER_INDEX_SLOTS; probes++) {
		uint16_t r = server_index_[i];
		if (!r)
			return NULL;
		const struct server_command *c = row_at(r - 1u);
		if (name_eq(c->name, name, len))
			return c;
		i = (i + 1) & (SERVER_INDEX_SLOTS - 1);
	}
	return NULL;
}

bool server_command_arity_ok(const struct server_command *c, size_t argc)
{
	if (c->arity >= 0)
		return argc == (size_t)c->arity;
	return argc >= (size_t)-c->arity;
}

uint32_t server_command_count(void)
{
	return (uint32_t)KEEL_ARRAY_LEN(local_commands) + kv_rows_.n;
}

const struct server_command *server_command_at(uint32_t i)
{
	if (i < KEEL_ARRAY_LEN(local_commands))
		return &local_commands[i];
	i -= (uint32_t)KEEL_ARRAY_LEN(local_commands);
	return i < kv_rows_.n ? &kv_rows_.rows[i] : NULL;
}

/* Appends at most max bytes of s (NUL-free view) to buf at *off. */
static void put(char *buf, size_t len, size_t *off, const char *s, size_t n)
{
	if (*off + 1 >= len)
		return;
	size_t room = len - 1 - *off;
	if (n > room)
		n = room;
	memcpy(buf + *off, s, n);
	*off += n;
	buf[*off] = 0;
}

/* Redis 7: "unknown command '%.128s', with args beginning with: " then
 * "'%.*s' " per argument while the list is under 128 bytes. */
void server_err_unknown_command(char *buf, size_t len, size_t argc,
				const uint8_t *const *argv, const size_t *lens)
{
	size_t off = 0;
	if (!len)
		return;
	buf[0] = 0;
	put(buf, len, &off, "ERR unknown command '", 21);
	put(buf, len, &off, (const char *)argv[0], KEEL_MIN(lens[0], 128));
	put(buf, len, &off, "', with args beginning with: ", 29);
	size_t args = 0;
	for (size_t i = 1; i < argc && args < 128; i++) {
		size_t n = KEEL_MIN(lens[i], 128 - args);
		put(buf, len, &off, "'", 1);
		put(buf, len, &off, (const char *)argv[i], n);
		put(buf, len, &off, "' ", 2);
		args += n + 3;
	}
}

void server_err_arity(char *buf, size_t len, const uint8_t *name,
		      size_t name_len)
{
	size_t off = 0;
	if (!len)
		return;
	buf[0] = 0;
	put(buf, len, &off, "ERR wrong number of arguments for '", 35);
	/* Redis prints the command's own (lowercase) name. */
	for (size_t i = 0; i < KEEL_MIN(name_len, 128); i++) {
		char ch = (char)name[i];
		if (ch >= 'A' && ch <= 'Z')
			ch = (char)(ch - 'A' + 'a');
		put(buf, len, &off, &ch, 1);
	}
	put(buf, len, &off, "' command", 9);
}

/* ---- the reply queue ----------------------------------------------------- */

void server_replyq_init(struct server_replyq *q, const struct keel_alloc *a,
			uint32_t max)
{
	memset(q, 0, sizeof(*q));
	q->alloc = a;
	q->max = max;
}

static void slot_free(struct server_replyq *q, struct server_reply_slot *s)
{
	q->alloc->free(q->alloc->ctx, s->bytes);
	q->alloc->free(q->alloc->ctx, s);
}

void server_replyq_close(struct server_replyq *q)
{
	while (q->head) {
		struct server_reply_slot *s = q->head;
		q->head = s->next;
		slot_free(q, s);
	}
	q->tail = NULL;
	q->n = 0;
}

struct server_reply_slot *server_replyq_push(struct server_replyq *q)
{
	if (q->n >= q->max)
		return NULL;
	struct server_reply_slot *s = q->alloc->malloc(q->alloc->ctx, sizeof(*s));
	if (!s)
		return NULL;
	memset(s, 0, sizeof(*s));
	s->seq = q->next_seq++;
	if (q->tail)
		q->tail->next = s;
	else
		q->head = s;
	q->tail = s;
	q->n++;
	return s;
}

int server_replyq_complete(struct server_replyq *q,
			   struct server_reply_slot *s, const uint8_t *bytes,
			   size_t len)
{
	KEEL_ASSERT(!s->done);
	uint8_t *copy = NULL;
	if (len) {
		copy = q->alloc->malloc(q->alloc->ctx, len);
		if (!copy)
			return KEEL_ERR_NOMEM;
		memcpy(copy, bytes, len);
	}
	s->bytes = copy;
	s->len = len;
	s->done = true;
	return 0;
}

struct server_reply_slot *server_replyq_ready(struct server_replyq *q)
{
	return q->head && q->head->done ? q->head : NULL;
}

void server_replyq_drop_head(struct server_replyq *q)
{
	struct server_reply_slot *s = q->head;
	KEEL_ASSERT(s);
	q->head = s->next;
	if (!q->head)
		q->tail = NULL;
	q->n--;
	slot_free(q, s);
}
