/*
 * peer_codec.c -- encoder and validating decoder for peer protocol frames
 * (docs/peer-protocol.md is the specification; keep the two in step).
 *
 * Frames come from the network, so the decoder treats every byte as
 * hostile: it reads nothing it has not bounds-checked against len, trusts
 * no body field before the CRC has matched, and checks every count and
 * length against the bytes that actually remain, in 64-bit arithmetic so
 * no sum can wrap. It allocates nothing: decoded entries point into the
 * caller's buffer. The format is canonical (reserved bits zero, exact
 * lengths), so re-encoding a decoded frame reproduces it byte for byte;
 * the fuzz harness relies on that.
 */
#include <string.h>

#include "keel/peer.h"

/* Header field offsets (docs/peer-protocol.md §2.1). */
enum {
	OFF_MAGIC = 0,
	OFF_VERSION = 4,
	OFF_TYPE = 5,
	OFF_FLAGS = 6,
	OFF_CLUSTER = 8,
	OFF_SENDER = 16,
	OFF_BODY_LEN = 24,
};

/* Raft body offsets, relative to the body (§4.1). */
enum {
	B_TO = 0,
	B_TERM = 8,
	B_LOG_TERM = 16,
	B_INDEX = 24,
	B_COMMIT = 32,
	B_HINT_INDEX = 40,
	B_HINT_TERM = 48,
	B_CONTEXT = 56,
	B_MSG_FLAGS = 64,
	B_N_ENTRIES = 68,
};

/* Entry offsets, relative to the entry (§4.2). */
enum {
	E_TERM = 0,
	E_INDEX = 8,
	E_TYPE = 16,
	E_LEN = 17,
};

_Static_assert(OFF_BODY_LEN + 4 == PEER_HEADER_SIZE, "header layout");
_Static_assert(B_N_ENTRIES + 4 == PEER_MSG_FIXED_SIZE, "body layout");
_Static_assert(E_LEN + 4 == PEER_ENTRY_HEADER_SIZE, "entry layout");
_Static_assert(RAFT_MSG_PREVOTE == 1 && RAFT_MSG_TIMEOUT_NOW == 9 &&
		       RAFT_MSG_SNAPSHOT == 10 && RAFT_MSG_TYPE_COUNT == 11,
	       "frame types 1..10 are enum raft_msg_type, unchanged");
_Static_assert(PEER_CONF_HEADER_SIZE == 8, "membership layout");
_Static_assert(RAFT_MSG_TYPE_COUNT <= PEER_TYPE_NODE_FIRST,
	       "raft types must stay below the node-level range");

static const uint8_t magic[4] = {PEER_MAGIC_0, PEER_MAGIC_1, PEER_MAGIC_2,
				 PEER_MAGIC_3};

static bool is_raft_type(unsigned type)
{
	return type > RAFT_MSG_NONE && type < RAFT_MSG_TYPE_COUNT;
}

static bool is_entry_type(unsigned type)
{
	return type <= RAFT_ENTRY_CONF;
}

void peer_limits_default(struct peer_limits *lim, uint64_t cluster_id)
{
	KEEL_ASSERT(lim != NULL);
	lim->cluster_id = cluster_id;
	lim->max_frame_bytes = PEER_MAX_FRAME_DEFAULT;
}

/* The membership a SNAPSHOT carries is one the core could hold. */
static bool conf_encodable(const struct raft_config_members *c)
{
	return c != NULL && c->n_voters > 0 &&
	       c->n_voters <= RAFT_MAX_VOTERS &&
	       c->n_learners <= RAFT_MAX_VOTERS - c->n_voters;
}

static uint64_t conf_size(const struct raft_config_members *c)
{
	return PEER_CONF_HEADER_SIZE +
	       8 * ((uint64_t)c->n_voters + c->n_learners);
}

/* Body size in 64 bits: n_entries * (21 + 2^32-1) cannot wrap a u64. */
static uint64_t body_size(const struct raft_msg *m)
{
	uint64_t n = PEER_MSG_FIXED_SIZE;
	if (m->type == RAFT_MSG_SNAPSHOT && conf_encodable(m->conf))
		n += conf_size(m->conf);
	if (m->n_entries > 0)
		KEEL_ASSERT(m->entries != NULL);
	for (uint32_t i = 0; i < m->n_entries; i++)
		n += (uint64_t)PEER_ENTRY_HEADER_SIZE + m->entries[i].len;
	return n;
}

size_t peer_frame_size(const struct raft_msg *m)
{
	KEEL_ASSERT(m != NULL);
	uint64_t n = body_size(m) + PEER_HEADER_SIZE + PEER_TRAILER_SIZE;
	return n > SIZE_MAX ? SIZE_MAX : (size_t)n;
}

int peer_encode(const struct raft_msg *m, uint64_t cluster_id, uint8_t *buf,
		size_t cap, size_t *written)
{
	KEEL_ASSERT(m != NULL);
	KEEL_ASSERT(written != NULL);
	if (cap > 0)
		KEEL_ASSERT(buf != NULL);
	if (!is_raft_type(m->type))
		return KEEL_ERR_TYPE;
	if (m->from == RAFT_NONE)
		return KEEL_ERR_INVAL;
	/* A snapshot names its membership and carries no entries (§4.4). */
	if (m->type == RAFT_MSG_SNAPSHOT &&
	    (!conf_encodable(m->conf) || m->n_entries != 0))
		return KEEL_ERR_INVAL;
	uint64_t body = body_size(m);
	if (body > UINT32_MAX)
		return KEEL_ERR_TOO_BIG;
	uint64_t total = body + PEER_HEADER_SIZE + PEER_TRAILER_SIZE;
	if (total > cap)
		return KEEL_ERR_TOO_BIG;

	uint8_t *p = buf;
	for (int i = 0; i < 4; i++)
		p[OFF_MAGIC + i] = magic[i];
	p[OFF_VERSION] = PEER_VERSION;
	p[OFF_TYPE] = m->type;
	keel_put_u16(p + OFF_FLAGS, 0);
	keel_put_u64(p + OFF_CLUSTER, cluster_id);
	keel_put_u64(p + OFF_SENDER, m->from);
	keel_put_u32(p + OFF_BODY_LEN, (uint32_t)body);

	uint8_t *b = p + PEER_HEADER_SIZE;
	keel_put_u64(b + B_TO, m->to);
	keel_put_u64(b + B_TERM, m->term);
	keel_put_u64(b + B_LOG_TERM, m->log_term);
	keel_put_u64(b + B_INDEX, m->index);
	keel_put_u64(b + B_COMMIT, m->commit);
	keel_put_u64(b + B_HINT_INDEX, m->hint_index);
	keel_put_u64(b + B_HINT_TERM, m->hint_term);
	keel_put_u64(b + B_CONTEXT, m->context);
	uint32_t flags = (m->reject ? PEER_MSG_FLAG_REJECT : 0) |
			 (m->transfer ? PEER_MSG_FLAG_TRANSFER : 0);
	keel_put_u32(b + B_MSG_FLAGS, flags);
	keel_put_u32(b + B_N_ENTRIES, m->n_entries);

	uint8_t *e = b + PEER_MSG_FIXED_SIZE;
	for (uint32_t i = 0; i < m->n_entries; i++) {
		const struct raft_entry *en = &m->entries[i];
		keel_put_u64(e + E_TERM, en->term);
		keel_put_u64(e + E_INDEX, en->index);
		e[E_TYPE] = en->type;
		keel_put_u32(e + E_LEN, en->len);
		e += PEER_ENTRY_HEADER_SIZE;
		if (en->len > 0) {
			KEEL_ASSERT(en->data != NULL);
			memcpy(e, en->data, en->len);
			e += en->len;
		}
	}
	if (m->type == RAFT_MSG_SNAPSHOT) {
		const struct raft_config_members *c = m->conf;
		keel_put_u32(e, c->n_voters);
		keel_put_u32(e + 4, c->n_learners);
		e += PEER_CONF_HEADER_SIZE;
		for (uint32_t i = 0; i < c->n_voters; i++, e += 8)
			keel_put_u64(e, c->voters[i]);
		for (uint32_t i = 0; i < c->n_learners; i++, e += 8)
			keel_put_u64(e, c->learners[i]);
	}
	KEEL_ASSERT((uint64_t)(e - p) == PEER_HEADER_SIZE + body);

	uint32_t crc = keel_crc32c(0, p, (size_t)(e - p));
	keel_put_u32(e, crc);
	*written = (size_t)total;
	return 0;
}

int peer_frame_peek(const uint8_t *buf, size_t len,
		    const struct peer_limits *lim, size_t *frame_len)
{
	KEEL_ASSERT(lim != NULL);
	KEEL_ASSERT(frame_len != NULL);
	KEEL_ASSERT(lim->max_frame_bytes >= PEER_MIN_FRAME_SIZE);
	if (len > 0)
		KEEL_ASSERT(buf != NULL);

	/* Refuse garbage as soon as it is visible: a reader talking to
	 * something that is not a keel node should not wait for 28 bytes. */
	size_t have_magic = KEEL_MIN(len, (size_t)4);
	for (size_t i = 0; i < have_magic; i++)
		if (buf[OFF_MAGIC + i] != magic[i])
			return KEEL_ERR_MAGIC;
	/* The version names the layout of everything after it (§7), so it
	 * is checked before the length is interpreted. */
	if (len > OFF_VERSION && buf[OFF_VERSION] != PEER_VERSION)
		return KEEL_ERR_VERSION;
	if (len < PEER_HEADER_SIZE)
		return KEEL_ERR_TRUNCATED;

	uint64_t total = (uint64_t)keel_get_u32(buf + OFF_BODY_LEN) +
			 PEER_HEADER_SIZE + PEER_TRAILER_SIZE;
	/* Before the body arrives: a reader never buffers past the limit. */
	if (total > lim->max_frame_bytes)
		return KEEL_ERR_TOO_BIG;
	*frame_len = (size_t)total;
	return 0;
}

static bool ids_have(const raft_id *ids, uint32_t n, raft_id id)
{
	for (uint32_t i = 0; i < n; i++)
		if (ids[i] == id)
			return true;
	return false;
}

/* The membership section of a SNAPSHOT body (§4.4): exactly rest bytes,
 * counts within RAFT_MAX_VOTERS, at least one voter, ids non-zero and
 * each listed once. */
static int decode_conf(const uint8_t *c, uint64_t rest,
		       struct raft_config_members *conf)
{
	if (rest < PEER_CONF_HEADER_SIZE)
		return KEEL_ERR_MALFORMED;
	uint32_t nv = keel_get_u32(c);
	uint32_t nl = keel_get_u32(c + 4);
	/* Each count is checked alone first so their sum cannot wrap. */
	if (nv == 0 || nv > RAFT_MAX_VOTERS || nl > RAFT_MAX_VOTERS - nv)
		return KEEL_ERR_MALFORMED;
	if (rest != PEER_CONF_HEADER_SIZE + 8 * (uint64_t)(nv + nl))
		return KEEL_ERR_MALFORMED;
	memset(conf, 0, sizeof(*conf));
	c += PEER_CONF_HEADER_SIZE;
	for (uint32_t i = 0; i < nv + nl; i++, c += 8) {
		raft_id id = keel_get_u64(c);
		if (id == RAFT_NONE ||
		    ids_have(conf->voters, conf->n_voters, id) ||
		    ids_have(conf->learners, conf->n_learners, id))
			return KEEL_ERR_MALFORMED;
		if (i < nv)
			conf->voters[conf->n_voters++] = id;
		else
			conf->learners[conf->n_learners++] = id;
	}
	return 0;
}

/* The raft message body, checked against body_len at every step. Runs only
 * after the CRC matched, but still trusts nothing: a peer can compute a
 * valid CRC over nonsense. */
static int decode_raft_body(uint8_t type, const uint8_t *b, uint32_t body_len,
			    struct raft_msg *out, struct raft_entry *entries,
			    uint32_t max_entries,
			    struct raft_config_members *conf)
{
	if (body_len < PEER_MSG_FIXED_SIZE)
		return KEEL_ERR_MALFORMED;
	uint32_t flags = keel_get_u32(b + B_MSG_FLAGS);
	if (flags & ~PEER_MSG_FLAGS_KNOWN)
		return KEEL_ERR_MALFORMED;
	uint32_t n = keel_get_u32(b + B_N_ENTRIES);
	uint64_t rest = (uint64_t)body_len - PEER_MSG_FIXED_SIZE;
	if (type == RAFT_MSG_SNAPSHOT) {
		/* No entries; the membership fills the rest exactly. */
		if (n != 0)
			return KEEL_ERR_MALFORMED;
		int rc = decode_conf(b + PEER_MSG_FIXED_SIZE, rest, conf);
		if (rc != 0)
			return rc;
		rest = 0;
	}
	/* A lying count is malformed whatever our capacity; checked first so
	 * the error says so. */
	if (n > rest / PEER_ENTRY_HEADER_SIZE)
		return KEEL_ERR_MALFORMED;
	if (n > max_entries)
		return KEEL_ERR_TOO_BIG;

	const uint8_t *e = b + PEER_MSG_FIXED_SIZE;
	for (uint32_t i = 0; i < n; i++) {
		if (rest < PEER_ENTRY_HEADER_SIZE)
			return KEEL_ERR_MALFORMED;
		rest -= PEER_ENTRY_HEADER_SIZE;
		uint32_t dlen = keel_get_u32(e + E_LEN);
		if (dlen > rest)
			return KEEL_ERR_MALFORMED;
		if (!is_entry_type(e[E_TYPE]))
			return KEEL_ERR_MALFORMED;
		entries[i].term = keel_get_u64(e + E_TERM);
		entries[i].index = keel_get_u64(e + E_INDEX);
		entries[i].type = e[E_TYPE];
		entries[i].len = dlen;
		/* Zero copy: data lives in the caller's buffer. */
		entries[i].data = e + PEER_ENTRY_HEADER_SIZE;
		e += PEER_ENTRY_HEADER_SIZE + dlen;
		rest -= dlen;
	}
	/* Exact: trailing bytes would make the encoding non-canonical and
	 * could smuggle data past every other check. */
	if (rest != 0)
		return KEEL_ERR_MALFORMED;

	out->to = keel_get_u64(b + B_TO);
	out->term = keel_get_u64(b + B_TERM);
	out->log_term = keel_get_u64(b + B_LOG_TERM);
	out->index = keel_get_u64(b + B_INDEX);
	out->commit = keel_get_u64(b + B_COMMIT);
	out->hint_index = keel_get_u64(b + B_HINT_INDEX);
	out->hint_term = keel_get_u64(b + B_HINT_TERM);
	out->context = keel_get_u64(b + B_CONTEXT);
	out->reject = (flags & PEER_MSG_FLAG_REJECT) != 0;
	out->transfer = (flags & PEER_MSG_FLAG_TRANSFER) != 0;
	out->n_entries = n;
	out->entries = entries;
	out->conf = type == RAFT_MSG_SNAPSHOT ? conf : NULL;
	return 0;
}

int peer_decode(const uint8_t *buf, size_t len, const struct peer_limits *lim,
		struct peer_frame_info *info, struct raft_msg *m,
		struct raft_entry *entries, uint32_t max_entries)
{
	return peer_decode_msg(buf, len, lim, info, m, entries, max_entries,
			       NULL);
}

int peer_decode_msg(const uint8_t *buf, size_t len,
		    const struct peer_limits *lim, struct peer_frame_info *info,
		    struct raft_msg *m, struct raft_entry *entries,
		    uint32_t max_entries, struct raft_config_members *conf)
{
	KEEL_ASSERT(lim != NULL);
	KEEL_ASSERT(m != NULL);
	if (max_entries > 0)
		KEEL_ASSERT(entries != NULL);

	size_t frame_len = 0;
	int r = peer_frame_peek(buf, len, lim, &frame_len);
	if (r != 0)
		return r;
	KEEL_ASSERT(frame_len >= PEER_MIN_FRAME_SIZE);
	uint32_t body_len = keel_get_u32(buf + OFF_BODY_LEN);
	if (info != NULL) {
		info->version = buf[OFF_VERSION];
		info->type = buf[OFF_TYPE];
		info->flags = keel_get_u16(buf + OFF_FLAGS);
		info->cluster_id = keel_get_u64(buf + OFF_CLUSTER);
		info->sender = keel_get_u64(buf + OFF_SENDER);
		info->body_len = body_len;
		info->frame_len = frame_len;
	}
	if (len < frame_len)
		return KEEL_ERR_TRUNCATED;

	/* The CRC before anything else is believed: a flipped bit in the
	 * cluster id, type or a count must read as corruption, not as a
	 * misconfigured peer or a malformed message. */
	size_t covered = frame_len - PEER_TRAILER_SIZE;
	if (keel_crc32c(0, buf, covered) != keel_get_u32(buf + covered)
#ifdef KEEL_MUTANTS
	    && !lim->mutant_accept_bad_crc
#endif
	)
		return KEEL_ERR_CORRUPT;

	if (keel_get_u64(buf + OFF_CLUSTER) != lim->cluster_id)
		return KEEL_ERR_CLUSTER;
	uint8_t type = buf[OFF_TYPE];
	/* Node-level types (>= PEER_TYPE_NODE_FIRST) are reserved and refused
	 * until a revision of the protocol defines them. */
	if (!is_raft_type(type))
		return KEEL_ERR_TYPE;
	/* A caller without room for a membership takes no snapshots: to it
	 * a SNAPSHOT is a type it does not speak (see peer.h). */
	if (type == RAFT_MSG_SNAPSHOT && conf == NULL)
		return KEEL_ERR_TYPE;
	if (keel_get_u16(buf + OFF_FLAGS) != 0)
		return KEEL_ERR_MALFORMED;
	uint64_t sender = keel_get_u64(buf + OFF_SENDER);
	if (sender == RAFT_NONE)
		return KEEL_ERR_MALFORMED;

	struct raft_msg out = {0};
	r = decode_raft_body(type, buf + PEER_HEADER_SIZE, body_len, &out,
			     entries, max_entries, conf);
	if (r != 0)
		return r;
	out.type = type;
	/* from comes only from the header, so the two cannot disagree. */
	out.from = sender;
	KEEL_ASSERT(out.n_entries <= max_entries);
	*m = out;
	return 0;
}

const char *peer_frame_type_name(int type)
{
	static const char *const names[RAFT_MSG_TYPE_COUNT] = {
		[RAFT_MSG_PREVOTE] = "PREVOTE",
		[RAFT_MSG_PREVOTE_RESP] = "PREVOTE_RESP",
		[RAFT_MSG_VOTE] = "VOTE",
		[RAFT_MSG_VOTE_RESP] = "VOTE_RESP",
		[RAFT_MSG_APPEND] = "APPEND",
		[RAFT_MSG_APPEND_RESP] = "APPEND_RESP",
		[RAFT_MSG_HEARTBEAT] = "HEARTBEAT",
		[RAFT_MSG_HEARTBEAT_RESP] = "HEARTBEAT_RESP",
		[RAFT_MSG_TIMEOUT_NOW] = "TIMEOUT_NOW",
		[RAFT_MSG_SNAPSHOT] = "SNAPSHOT",
	};
	if (type > RAFT_MSG_NONE && type < RAFT_MSG_TYPE_COUNT)
		return names[type];
	return "UNKNOWN";
}

int peer_frame_verify(const uint8_t *buf, size_t len,
		      const struct peer_limits *lim, uint64_t *sender,
		      int *type)
{
	KEEL_ASSERT(lim != NULL);
	size_t frame_len = 0;
	int r = peer_frame_peek(buf, len, lim, &frame_len);
	if (r != 0)
		return r;
	if (len < frame_len)
		return KEEL_ERR_TRUNCATED;
	/* Same order as peer_decode: nothing is believed before the CRC. */
	size_t covered = frame_len - PEER_TRAILER_SIZE;
	if (keel_crc32c(0, buf, covered) != keel_get_u32(buf + covered))
		return KEEL_ERR_CORRUPT;
	if (keel_get_u64(buf + OFF_CLUSTER) != lim->cluster_id)
		return KEEL_ERR_CLUSTER;
	if (keel_get_u16(buf + OFF_FLAGS) != 0 ||
	    keel_get_u64(buf + OFF_SENDER) == RAFT_NONE)
		return KEEL_ERR_MALFORMED;
	if (sender)
		*sender = keel_get_u64(buf + OFF_SENDER);
	if (type)
		*type = buf[OFF_TYPE];
	return 0;
}

void peer_encode_hello(uint64_t cluster_id, uint64_t sender, uint8_t *buf)
{
	KEEL_ASSERT(sender != RAFT_NONE);
	for (size_t i = 0; i < 4; i++)
		buf[OFF_MAGIC + i] = magic[i];
	buf[OFF_VERSION] = PEER_VERSION;
	buf[OFF_TYPE] = PEER_TYPE_HELLO;
	keel_put_u16(buf + OFF_FLAGS, 0);
	keel_put_u64(buf + OFF_CLUSTER, cluster_id);
	keel_put_u64(buf + OFF_SENDER, sender);
	keel_put_u32(buf + OFF_BODY_LEN, 0);
	keel_put_u32(buf + PEER_HEADER_SIZE,
		     keel_crc32c(0, buf, PEER_HEADER_SIZE));
}

int peer_encode_frame(int type, uint64_t cluster_id, uint64_t sender,
		      const uint8_t *body, size_t body_len, uint8_t *buf,
		      size_t cap, size_t *written)
{
	KEEL_ASSERT(type > 0 && type < 256);
	KEEL_ASSERT(sender != RAFT_NONE);
	if (body_len > UINT32_MAX - PEER_MIN_FRAME_SIZE ||
	    cap < body_len + PEER_MIN_FRAME_SIZE)
		return KEEL_ERR_TOO_BIG;
	for (size_t i = 0; i < 4; i++)
		buf[OFF_MAGIC + i] = magic[i];
	buf[OFF_VERSION] = PEER_VERSION;
	buf[OFF_TYPE] = (uint8_t)type;
	keel_put_u16(buf + OFF_FLAGS, 0);
	keel_put_u64(buf + OFF_CLUSTER, cluster_id);
	keel_put_u64(buf + OFF_SENDER, sender);
	keel_put_u32(buf + OFF_BODY_LEN, (uint32_t)body_len);
	if (body_len)
		memcpy(buf + PEER_HEADER_SIZE, body, body_len);
	size_t covered = PEER_HEADER_SIZE + body_len;
	keel_put_u32(buf + covered, keel_crc32c(0, buf, covered));
	*written = covered + PEER_TRAILER_SIZE;
	return 0;
}
