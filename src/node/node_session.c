/*
 * node_session.c -- exactly-once client sessions at the node (docs/kv.md
 * "Sessions", docs/architecture.md decision 19): the two node-level
 * commands, their log entries and their apply.
 *
 *   KEEL.SESSION REGISTER [TTL ms]   -> session id (an integer)
 *   KEEL.SESSION KEEPALIVE id        -> OK
 *   KEEL.SESSION CLOSE id            -> OK
 *   KEEL.RUN id seq command [arg ...] -> the command's reply, run once
 *
 * Entries (after the node header, fwd.h):
 *   type 3 (SESSION):     u8 op (1 register, 2 keepalive, 3 close),
 *                         u64 now_ms (the leader's stamp), u64 arg (TTL
 *                         for register, else the session id); 17 bytes
 *   type 4 (SESSION_CMD): u64 session, u64 seq, then the command as a kv
 *                         command entry (stamped, relative TTLs absolute)
 *
 * The table (session.c) is replicated state: every replica applies these
 * entries alike and records every session command's reply, so a retry
 * reaching any node after any leader change is answered from the table.
 */
#include <string.h>

#include "node/node_internal.h"


static bool ieq(const uint8_t *p, size_t len, const char *s)
{
	size_t k = strlen(s);
	if (len != k)
		return false;
	for (size_t i = 0; i < k; i++) {
		uint8_t c = p[i];
		if (c >= 'A' && c <= 'Z')
			c = (uint8_t)(c - 'A' + 'a');
		if (c != (uint8_t)s[i])
			return false;
	}
	return true;
}

int node_session_cmd(const uint8_t *name, size_t len)
{
	if (ieq(name, len, "keel.session"))
		return NODE_ENTRY_SESSION;
	if (ieq(name, len, "keel.run"))
		return NODE_ENTRY_SESSION_CMD;
	return 0;
}

static const char *const usage =
	"ERR syntax: KEEL.SESSION REGISTER [TTL ms] | KEEPALIVE id | CLOSE id";

/* KEEL.SESSION's op and argument, or an error text. */
static const char *parse_op(uint32_t argc, const uint8_t *const *argv,
			    const size_t *lens, uint8_t *op, uint64_t *arg)
{
	if (argc < 2)
		return usage;
	if (ieq(argv[1], lens[1], "register")) {
		*op = SOP_REGISTER;
		*arg = SESSION_TTL_DEFAULT_MS;
		if (argc == 2)
			return NULL;
		if (argc != 4 || !ieq(argv[2], lens[2], "ttl"))
			return usage;
		if (!keel_parse_u64_bytes(argv[3], lens[3], SESSION_TTL_MIN_MS,
			       SESSION_TTL_MAX_MS, arg))
			return "ERR session TTL must be 1000..86400000 ms";
		return NULL;
	}
	if (ieq(argv[1], lens[1], "keepalive"))
		*op = SOP_KEEPALIVE;
	else if (ieq(argv[1], lens[1], "close"))
		*op = SOP_CLOSE;
	else
		return usage;
	if (argc != 3)
		return usage;
	if (!keel_parse_u64_bytes(argv[2], lens[2], 1, UINT64_MAX, arg))
		return "ERR session id must be a positive integer";
	return NULL;
}

const char *node_session_validate(uint32_t argc, const uint8_t *const *argv,
				  const size_t *lens)
{
	int sc = node_session_cmd(argv[0], lens[0]);
	if (sc == NODE_ENTRY_SESSION) {
		uint8_t op;
		uint64_t arg;
		return parse_op(argc, argv, lens, &op, &arg);
	}
	KEEL_ASSERT(sc == NODE_ENTRY_SESSION_CMD);
	if (argc < 4)
		return "ERR syntax: KEEL.RUN session seq command [arg ...]";
	uint64_t v;
	if (!keel_parse_u64_bytes(argv[1], lens[1], 1, UINT64_MAX, &v) ||
	    !keel_parse_u64_bytes(argv[2], lens[2], 1, UINT64_MAX, &v))
		return "ERR KEEL.RUN: session and seq must be positive "
		       "integers";
	const struct kv_command *kc = kv_command_lookup(argv[3], lens[3]);
	if (!kc || !(kc->flags & KV_CMD_WRITE) ||
	    (kc->flags & KV_CMD_INTERNAL))
		return "ERR KEEL.RUN runs one write command (reads need no "
		       "session: send them as they are)";
	return NULL;
}

int node_session_build(struct node *n, size_t off, uint64_t now, uint8_t type,
		       uint32_t argc, const uint8_t *const *argv,
		       const size_t *lens, size_t *len)
{
	if (type == NODE_ENTRY_SESSION) {
		uint8_t op = 0;
		uint64_t arg = 0;
		if (parse_op(argc, argv, lens, &op, &arg))
			return KEEL_ERR_INVAL; /* validated before */
		int rv = grow(n, &n->buf, &n->buf_cap, off + SESSION_OP_BYTES);
		if (rv)
			return rv;
		n->buf[off] = op;
		keel_put_u64(n->buf + off + 1, now);
		keel_put_u64(n->buf + off + 9, arg);
		*len = SESSION_OP_BYTES;
		return 0;
	}
	uint64_t sid = 0, seq = 0;
	if (argc < 4 || !keel_parse_u64_bytes(argv[1], lens[1], 1, UINT64_MAX, &sid) ||
	    !keel_parse_u64_bytes(argv[2], lens[2], 1, UINT64_MAX, &seq))
		return KEEL_ERR_INVAL;
	size_t kl = 0;
	int rv = node_build_kv_at(n, off + SESSION_CMD_FIXED, now, argc - 3,
				  argv + 3, lens + 3, &kl);
	if (rv)
		return rv;
	keel_put_u64(n->buf + off, sid);
	keel_put_u64(n->buf + off + 8, seq);
	*len = SESSION_CMD_FIXED + kl;
	return 0;
}
